/* certload: loading the certificate directory into a runtime (SPEC section 4), for the
 * sidecar and the webhook alike. A valid set that differs from the one serving becomes
 * the next generation (published, counted, logged); an invalid one is refused, logged
 * and recorded for /certs and /ready while the serving set stays.
 *
 * Owns nothing: the contexts it builds are handed to the runtime. Call it from one
 * thread at a time (the main loop's). */
#ifndef MTLSD_CERTLOAD_H
#define MTLSD_CERTLOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "mtlsd/runtime.h"

enum certload_result {
  CERTLOAD_REFUSED,   /* The files are not a valid set; the serving set stays. */
  CERTLOAD_VALID,     /* A dry run found a valid set; nothing changed. */
  CERTLOAD_UNCHANGED, /* The files hold the set that is serving already. */
  CERTLOAD_LOADED,    /* A new generation serves every new handshake. */
};

/* certload_reload loads |rt->cfg->certs| now (with |dry_run|, only validates it) and
 * writes the outcome into |msg|. The caller tells its connections after CERTLOAD_LOADED. */
enum certload_result certload_reload(struct runtime *rt, bool dry_run, char *msg, size_t msg_len);

#endif
