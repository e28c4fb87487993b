/* certload: loading the certificate directory into a runtime (docs/configuration.md, certs), for
 * the sidecar and the webhook alike. A valid set that differs from the one serving becomes the next
 * generation (published, counted, logged); an invalid one is refused, logged and recorded for
 * /certs and /ready while the serving set stays.
 *
 * Owns nothing: the contexts it builds are handed to the runtime. Call it from one
 * thread at a time (the main loop's). */
#ifndef MTLSD_CERTLOAD_H
#define MTLSD_CERTLOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "mtlsd/proxy/runtime.h"

enum certload_result {
  CERTLOAD_REFUSED,   /* The files are not a valid set; the serving set stays. */
  CERTLOAD_VALID,     /* A dry run found a valid set; nothing changed. */
  CERTLOAD_UNCHANGED, /* The files hold the set that is serving already. */
  CERTLOAD_LOADED,    /* A new generation serves every new handshake. */
  CERTLOAD_CHANGED,   /* The files were not those expected; nothing was done. */
};

/* What a reload may do. The files are read once per call: a set that is found valid is
 * the set that is loaded, never a second read of files that may have changed since. */
enum certload_mode {
  CERTLOAD_DRY_RUN, /* Only validate; change and record nothing. */
  /* Load a valid set; an invalid one is only described in the message, not logged,
   * counted or recorded (it may be a rotation caught half-written). */
  CERTLOAD_TRY,
  CERTLOAD_APPLY, /* Load a valid set; an invalid one is logged, counted and recorded. */
};

/* certload_reload loads |rt->cfg->certs| now as |mode| says and writes the outcome into
 * |msg|. With |expect| (a tls_certfiles_digest; NULL: any files), files that are no
 * longer those are left alone: CERTLOAD_CHANGED, nothing recorded. The caller tells its
 * connections after CERTLOAD_LOADED. */
enum certload_result certload_reload(struct runtime *rt, enum certload_mode mode,
                                     const uint8_t *expect, char *msg, size_t msg_len);

#endif
