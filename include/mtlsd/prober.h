/* prober: one run of an application container's original Kubernetes probe (SPEC section
 * 5), from the sidecar, the way the kubelet runs it: httpGet (HTTP, or HTTPS without
 * verifying the certificate; 200-399 passes; redirects followed on the same host, a
 * redirect elsewhere passes), tcpSocket (a connect), or grpc (grpc.health.v1.Health/Check
 * over h2c, SERVING passes), each within the probe's timeoutSeconds.
 *
 * Owns struct prober, its socket and its handles on the loop it was started on; it frees
 * itself once it has finished (or was cancelled) and its handles have closed. */
#ifndef MTLSD_PROBER_H
#define MTLSD_PROBER_H

#include <stdbool.h>

#include <uv.h>

#include "mtlsd/config.h"

struct prober;

/* prober_done_cb reports the outcome: |reason| says what passed or failed ("HTTP 503",
 * "connect to 10.0.0.5:8080: refused", "timed out after 1 s"); it lives for the call. */
typedef void (*prober_done_cb)(void *arg, bool ok, const char *reason);

/* prober_start runs |probe| (which must outlive the run) against its own host, else
 * |default_host|; |done| runs exactly once, later, from the loop (never from inside
 * prober_start), unless the run is cancelled first. Returns NULL when out of memory. */
struct prober *prober_start(uv_loop_t *loop, const struct app_probe *probe,
                            const char *default_host, prober_done_cb done, void *arg);

/* prober_cancel stops |p|; |done| will not run. */
void prober_cancel(struct prober *p);

#endif
