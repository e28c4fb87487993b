/* app_health: the health port's /app-health/<container>/<kind> and
 * /app-lifecycle/<container>/<hook> (docs/admin.md): each request runs the container's
 * original probe, or postStart/preStop handler, from the sidecar (prober) and is answered
 * when the run ends, 200 when it passed and 503 with the reason when not. At most one run
 * per probe or hook is in flight: requests that arrive meanwhile wait for its result, so a
 * burst of kubelet or operator requests costs one run. Runs are counted in
 * mtlsd_app_probes_total.
 *
 * Owns struct app_health, its runs and its waiting requests, on the main loop. */
#ifndef MTLSD_APP_HEALTH_H
#define MTLSD_APP_HEALTH_H

#include <stddef.h>

#include <uv.h>

#include "mtlsd/http/http_server.h"
#include "mtlsd/proxy/runtime.h"

struct app_health;

/* app_health_new prepares the probes of |rt->cfg|; probes go to their own host, else
 * POD_IP from the environment, else 127.0.0.1. NULL when out of memory. */
struct app_health *app_health_new(uv_loop_t *loop, struct runtime *rt);

/* The path a request came by: /app-health/ serves the probes (livez, readyz,
 * startupz), /app-lifecycle/ the hooks (poststartz, prestopz), each only its own. */
enum app_health_route { APP_HEALTH_PROBES, APP_HEALTH_HOOKS };

/* app_health_serve answers |x| for |key| ("<container>/<kind>", |key_len| bytes): later,
 * when the run ends, or at once with 404 when there is no such entry or |route| does not
 * serve its kind (the body says which path does). A request waits for its answer as long
 * as the entry's timeoutSeconds allows (a hook's is the pod's grace period), whatever the
 * health port's own short timeouts. */
void app_health_serve(struct app_health *h, struct http_conn *x, enum app_health_route route,
                      const char *key, size_t key_len);

/* app_health_free cancels the runs in flight; requests still waiting must have been
 * aborted already (their http_server closed first). NULL is a no-op. */
void app_health_free(struct app_health *h);

#endif
