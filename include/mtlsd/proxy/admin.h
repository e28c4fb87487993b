/* admin: the local admin port and the health port (docs/admin.md): the routes of
 * admin.listen and of health.listen, each port its own http_server (its own connection
 * budget and timeouts, so that neither a flood on one nor a full other ever blocks it),
 * on the main thread's loop, so that a heavy scrape never delays a worker. The routes
 * read the runtime and change the process only through struct admin_control_ops; the
 * health port is read-only, and serves the application probes (app_health).
 *
 * Owns struct admin, its two http_servers and the app_health behind the health port. */
#ifndef MTLSD_ADMIN_H
#define MTLSD_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "mtlsd/http/http_server.h"
#include "mtlsd/proxy/certload.h"
#include "mtlsd/proxy/runtime.h"

struct admin;

/* What the lifecycle routes (POST /reload, /drain, /quitquitquit) ask of the process. */
struct admin_control_ops {
  /* reload: as certwatch_ops.reload. */
  enum certload_result (*reload)(void *arg, enum certload_mode mode, const uint8_t *expect,
                                 char *msg, size_t msg_len);
  /* drain starts a graceful drain (docs/admin.md, POST /drain), and exits afterwards when
   * |then_exit|. */
  void (*drain)(void *arg, bool then_exit);
};

/* admin_start binds admin.listen (and health.listen, when set) of |rt->cfg| on |loop|
 * and starts serving; |rt| and |ops| must outlive it. On failure it returns NULL and
 * writes the reason, naming the key and the address, into |err|. */
struct admin *admin_start(uv_loop_t *loop, struct runtime *rt, const struct admin_control_ops *ops,
                          void *arg, char *err, size_t err_len);

/* The answers of GET /healthz (200 while alive), /ready (200, or 503 with the reason)
 * and /metrics (Prometheus text) over |rt|, which the webhook's port gives too. */
void admin_answer_alive(struct http_conn *x);
void admin_answer_ready(struct http_conn *x, struct runtime *rt);
void admin_answer_metrics(struct http_conn *x, struct runtime *rt);

/* admin_close stops serving and closes every admin connection; the memory is released
 * from the close callbacks, so the loop must run until they finish. NULL is a no-op. */
void admin_close(struct admin *admin);

#endif
