/* health_metrics: GET /metrics (and /stats/prometheus) on the health port (docs/admin.md): mtlsd's
 * own metrics, and, when MTLSD_APP_METRICS says where, the application's after them, so that one
 * scrape target serves both.
 *
 * Every pod can reach the health port, as often as it likes, so a scrape costs the pod
 * little: the answer is rendered at most once a second and shared; the application is
 * asked by one fetch at a time (scrapes that arrive meanwhile wait for its result), with
 * a short timeout and a cap on its body; a failed fetch serves mtlsd's own alone. Fetches
 * are counted in mtlsd_app_metrics_scrapes_total.
 *
 * Owns struct health_metrics, its cached answer, its fetch and the requests waiting for
 * it, on the main loop. */
#ifndef MTLSD_HEALTH_METRICS_H
#define MTLSD_HEALTH_METRICS_H

#include <uv.h>

#include "mtlsd/http/http_server.h"
#include "mtlsd/proxy/runtime.h"

/* How long the application may take to answer, its body included: well under
 * Prometheus' default scrape timeout (10 s), so that a hung application still leaves
 * time to serve mtlsd's own metrics, and far more than a healthy one takes. */
#define HEALTH_METRICS_FETCH_TIMEOUT_MS 3000
/* The largest body of the application's metrics served: beyond it the fetch fails. Big
 * enough for thousands of series, and small enough that a few answers being written at
 * once stay within the health port's output budget. */
#define HEALTH_METRICS_APP_BODY_MAX ((size_t)2 << 20)

struct health_metrics;

/* health_metrics_new prepares the /metrics of |rt| (and its cfg->app_metrics), which
 * must outlive it. NULL when out of memory. */
struct health_metrics *health_metrics_new(uv_loop_t *loop, struct runtime *rt);

/* health_metrics_serve answers |x|: at once from the answer rendered within the last
 * second, else after the fetch of the application's metrics (when configured) ends. */
void health_metrics_serve(struct health_metrics *m, struct http_conn *x);

/* health_metrics_free cancels the fetch in flight; requests still waiting must have been
 * aborted already (their http_server closed first). NULL is a no-op. */
void health_metrics_free(struct health_metrics *m);

#endif
