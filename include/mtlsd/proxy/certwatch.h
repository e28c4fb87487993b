/* certwatch: watches the certificate directory (docs/configuration.md, certs) with libuv's fs
 * events and a poll_interval fallback, debounces bursts of writes, and asks its owner to reload
 * when the files' contents change. It knows nothing of who loads the files: it calls
 * back through struct certwatch_ops.
 *
 * Owns struct certwatch and its handles, on the loop it was started on. */
#ifndef MTLSD_CERTWATCH_H
#define MTLSD_CERTWATCH_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "mtlsd/config/config.h"
#include "mtlsd/proxy/certload.h"
#include "mtlsd/tls/tls.h"

struct certwatch;

struct certwatch_ops {
  /* reload is certload_reload on the owner's runtime (certwatch uses CERTLOAD_TRY and
   * CERTLOAD_APPLY, always with |expect|); the owner tells its connections of a new
   * generation. */
  enum certload_result (*reload)(void *arg, enum certload_mode mode, const uint8_t *expect,
                                 char *msg, size_t msg_len);
  /* current returns a new reference to the contexts in use (NULL: none yet), for the
   * expiry warnings. */
  struct tls_contexts *(*current)(void *arg);
};

/* certwatch_start begins watching |certs->dir| on |loop|; |certs| and |ops| must outlive
 * the watch. The owner has just loaded the directory (or failed to). Returns NULL on
 * allocation failure; a directory that does not exist yet is not an error (it is
 * polled). */
struct certwatch *certwatch_start(uv_loop_t *loop, const struct certs_config *certs,
                                  const struct certwatch_ops *ops, void *arg);

/* certwatch_close stops watching; memory is released from the close callbacks. NULL is a
 * no-op. */
void certwatch_close(struct certwatch *watch);

#endif
