/* webhook: the `mtlsd webhook` process (docs/injection.md): the mutating admission webhook
 * that injects pods as the API server creates them. One HTTPS port: POST /inject answers
 * AdmissionReviews (the admission module, over the inject module's mutation), and GET
 * /healthz, /ready and /metrics. Its serving certificate is loaded and hot-reloaded
 * like the sidecar's (certload, certwatch); until one is valid, /ready says why and
 * connections are turned away.
 *
 * On SIGTERM or SIGINT /ready turns 503 and the port keeps answering for
 * WEBHOOK_DRAIN_MS, the time the endpoints take to drop this replica (a port that closed
 * at once would fail the API server's calls, and with failurePolicy: Fail, the pods'
 * creation); a second signal ends it at once. SIGHUP reloads the certificate. */
#ifndef MTLSD_WEBHOOK_H
#define MTLSD_WEBHOOK_H

#include "mtlsd/base/netaddr.h"

#define WEBHOOK_DRAIN_MS 5000

struct webhook_options {
  struct hostport listen;
  const char *certs_dir;
  const char *config; /* The injector configuration file; NULL: built-in defaults. */
};

/* webhook_run serves until a signal ends it; returns the exit code (0 after a signal, 1
 * when the port cannot be served, 2 for a bad configuration). */
int webhook_run(const struct webhook_options *opts);

#endif
