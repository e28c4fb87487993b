/* prober: one run of an application container's original Kubernetes probe (docs/admin.md), from the
 * sidecar, the way the kubelet runs it: httpGet (HTTP, or HTTPS without verifying the certificate;
 * 200-399 passes; redirects followed on the same host, a redirect elsewhere passes), tcpSocket (a
 * connect), or grpc (grpc.health.v1.Health/Check over h2c, SERVING passes), each within the probe's
 * timeoutSeconds. The same HTTP client also fetches a bounded body (prober_fetch: the application's
 * metrics).
 *
 * Owns struct prober, its socket and its handles on the loop it was started on; it frees
 * itself once it has finished (or was cancelled) and its handles have closed. */
#ifndef MTLSD_PROBER_H
#define MTLSD_PROBER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "mtlsd/config/config.h"

struct prober;

/* prober_default_host writes the host that a probe without its own goes to: the pod's
 * address, which the kubelet probes and the downward API puts in POD_IP, else
 * 127.0.0.1. */
void prober_default_host(char *out, size_t out_len);

/* prober_done_cb reports the outcome: |reason| says what passed or failed ("HTTP 503",
 * "connect to 10.0.0.5:8080: refused", "timed out after 1 s"); it lives for the call. */
typedef void (*prober_done_cb)(void *arg, bool ok, const char *reason);

/* prober_start runs |probe| (which must outlive the run) against its own host, else
 * |default_host|; |done| runs exactly once, later, from the loop (never from inside
 * prober_start), unless the run is cancelled first. Returns NULL when out of memory. */
struct prober *prober_start(uv_loop_t *loop, const struct app_probe *probe,
                            const char *default_host, prober_done_cb done, void *arg);

/* prober_fetch_cb reports a fetch's outcome: when |ok|, |body| (|len| bytes, followed by
 * a NUL that |len| does not count) is the 2xx answer's body, which the callee owns and
 * frees; NULL otherwise. |reason| says what happened ("HTTP 200, 5120 bytes", "HTTP 404",
 * "the body from 10.0.0.5:9090 is over 2097152 bytes") and |content_type| is the answer's
 * Content-Type ("" when none); both live for the call. */
typedef void (*prober_fetch_cb)(void *arg, bool ok, const char *reason, char *body, size_t len,
                                const char *content_type);

/* prober_fetch runs the httpGet |probe| like prober_start, but to get the answer's body:
 * only a 2xx passes (a redirect to the same host is followed, elsewhere fails), and its
 * body (Content-Length, chunked, or up to the close) is read within the probe's timeout
 * and |body_max| bytes (a body beyond them fails; the memory follows what arrives, in
 * doubling steps). */
struct prober *prober_fetch(uv_loop_t *loop, const struct app_probe *probe,
                            const char *default_host, size_t body_max, prober_fetch_cb done,
                            void *arg);

/* prober_cancel stops |p|; its callback will not run. */
void prober_cancel(struct prober *p);

#endif
