/* worker: a thread, its loop, its accept sockets and its connections (see
 * mtlsd/worker.h). */
#include "mtlsd/proxy/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsd/base/log.h"

enum { LISTEN_BACKLOG = 4096 };
/* Client sessions kept per worker, one per listener and upstream: far more upstreams
 * than a sidecar talks to. */
enum { SESSION_CACHE_ENTRIES = 256 };

static void worker_conn_add(void *arg, struct conn *c) {
  struct worker *w = arg;
  list_insert_head(&w->conns, conn_link(c));
  w->conn_count++;
}

static void report_drained(struct worker *w);

static void worker_conn_remove(void *arg, struct conn *c) {
  struct worker *w = arg;
  list_remove(conn_link(c));
  w->conn_count--;
  if (w->draining && !w->stopping && w->conn_count == 0) {
    uv_timer_stop(&w->drain_timer);
    report_drained(w);
  }
}

static const struct conn_host_ops kConnHostOps = {
    .opened = worker_conn_add,
    .closed = worker_conn_remove,
};

static void on_accept(struct acceptor *a, int fd) {
  struct worker_listener *l = a->data;
  conn_accept(&l->worker->host, &l->conn, fd);
}

static void on_refuse(struct acceptor *a, int fd) {
  struct worker_listener *l = a->data;
  conn_refuse(&l->conn, fd);
}

/* Worker |id|'s part of |total| handshake slots split over |workers|: the kernel spreads
 * connections evenly over the workers' sockets, and so are the slots. At least one, so
 * that no worker refuses every handshake. */
static unsigned handshake_share(unsigned total, unsigned workers, unsigned id) {
  unsigned share = total / workers + (id < total % workers ? 1 : 0);
  return share > 0 ? share : 1;
}

int worker_bind(struct worker *w, struct runtime *rt, unsigned id, const struct worker_ops *ops,
                void *arg, char *err, size_t err_len) {
  const struct config *cfg = rt->cfg;
  memset(w, 0, sizeof(*w));
  w->id = id;
  w->rt = rt;
  w->ops = ops;
  w->arg = arg;
  list_init(&w->conns);
  w->listeners = calloc(cfg->listener_count, sizeof(*w->listeners));
  if (w->listeners == NULL) {
    snprintf(err, err_len, "out of memory");
    return -ENOMEM;
  }
  for (size_t i = 0; i < cfg->listener_count; i++) {
    struct worker_listener *l = &w->listeners[i];
    const struct listener_config *lc = &cfg->listeners[i];
    l->worker = w;
    l->acceptor.fd = -1;
    l->conn = (struct conn_listener){
        .cfg = lc,
        .load = &rt->listener_load[i],
        .stats = stats_for(rt->stats, id, i),
        .policy =
            {
                .trust_domain = cfg->trust_domain,
                .allow = (const char *const *)lc->allow,
                .allow_count = lc->allow_count,
                .server_identity = lc->server_identity,
                .session_context = lc->name,
            },
        .handshake_slots = handshake_share(cfg->limits.max_handshaking, cfg->workers, id),
    };
    list_init(&l->conn.silent);
    list_init(&l->conn.spoken);
    w->listener_count = i + 1;
    /* Every worker binds its own socket to the same address; the kernel spreads new
     * connections across them, so no accept lock or thundering herd. */
    char why[300];
    int r = acceptor_open(&l->acceptor, &lc->listen, true, LISTEN_BACKLOG, why, sizeof(why));
    l->acceptor.data = l;
    l->acceptor.on_refuse = on_refuse;
    if (r != 0) {
      snprintf(err, err_len, "listener %s: %s", lc->name, why);
      return r;
    }
  }
  return 0;
}

void worker_close_fds(struct worker *w) {
  for (size_t i = 0; i < w->listener_count; i++) {
    acceptor_close(&w->listeners[i].acceptor, NULL);
  }
  free(w->listeners);
  w->listeners = NULL;
  w->listener_count = 0;
}

static void close_listeners(struct worker *w) {
  for (size_t i = 0; i < w->listener_count; i++) {
    acceptor_close(&w->listeners[i].acceptor, NULL);
  }
}

/* Tells the owner, once, that this worker has no connections left while draining. */
static void report_drained(struct worker *w) {
  if (w->drain_reported) {
    return;
  }
  w->drain_reported = true;
  atomic_fetch_add(&w->rt->workers_drained, 1);
  w->ops->drained(w->arg);
}

static void close_all(struct worker *w, const char *reason) {
  while (!list_empty(&w->conns)) {
    conn_close(conn_from_link(w->conns.next), reason);
  }
}

static void on_drain_timeout(uv_timer_t *timer) {
  struct worker *w = timer->data;
  if (w->conn_count > 0) {
    log_write(LOG_INFO, "worker", "worker %u: drain timeout: closing %zu connections", w->id,
              w->conn_count);
  }
  close_all(w, "drained");
}

static void stop(struct worker *w) {
  w->stopping = true;
  close_listeners(w);
  close_all(w, "stopped");
  uv_close((uv_handle_t *)&w->wakeup, NULL);
  uv_close((uv_handle_t *)&w->drain_timer, NULL);
}

static void on_wakeup(uv_async_t *async) {
  struct worker *w = async->data;
  struct runtime *rt = w->rt;
  if (w->stopping) {
    return;
  }
  conn_host_refresh_tls(&w->host);
  int state = atomic_load(&rt->state);
  if (state == RUNTIME_STOPPED) {
    stop(w);
    return;
  }
  if (state == RUNTIME_DRAINING && !w->draining) {
    w->draining = true;
    close_listeners(w);
    if (w->conn_count == 0) {
      report_drained(w);
    } else {
      uv_timer_start(&w->drain_timer, on_drain_timeout, rt->cfg->limits.drain_timeout, 0);
    }
  }
}

/* Watches every listener socket. A worker that cannot watch one of them serves none: a
 * SO_REUSEPORT socket nobody accepts on would swallow its share of connections. */
static bool watch_listeners(struct worker *w) {
  for (size_t i = 0; i < w->listener_count; i++) {
    struct worker_listener *l = &w->listeners[i];
    int r = acceptor_start(&l->acceptor, &w->loop, on_accept);
    if (r != 0) {
      log_write(LOG_ERROR, "worker", "worker %u: cannot watch listener %s: %s", w->id,
                l->conn.cfg->name, uv_strerror(r));
      return false;
    }
  }
  return true;
}

static void worker_main(void *arg) {
  struct worker *w = arg;
  w->host.tls = runtime_tls_acquire(w->rt);
  if (!watch_listeners(w)) {
    /* Its sockets close, so the kernel sends their connections to the other workers;
     * /ready says why the process is not fully serving. */
    close_listeners(w);
    atomic_fetch_add(&w->rt->workers_failed, 1);
  } else {
    atomic_fetch_add(&w->rt->workers_serving, 1);
  }
  /* A drain or a new certificate may have been published before the loop ran. */
  on_wakeup(&w->wakeup);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  tls_thread_release();
}

int worker_start(struct worker *w) {
  int r = uv_loop_init(&w->loop);
  if (r != 0) {
    return r;
  }
  w->host = (struct conn_host){
      .loop = &w->loop,
      .rt = w->rt,
      .sessions = tls_session_cache_new(SESSION_CACHE_ENTRIES),
      .pool = &w->pool,
      .ops = &kConnHostOps,
      .arg = w,
  };
  if (w->host.sessions == NULL) {
    r = UV_ENOMEM;
    goto err_loop;
  }
  /* Handles initialised on a loop must be closed through it: the loop runs once to let
   * their close callbacks go before it is closed. */
  r = uv_async_init(&w->loop, &w->wakeup, on_wakeup);
  if (r != 0) {
    goto err_sessions;
  }
  w->wakeup.data = w;
  uv_timer_init(&w->loop, &w->drain_timer);
  w->drain_timer.data = w;
  r = uv_thread_create(&w->thread, worker_main, w);
  if (r != 0) {
    uv_close((uv_handle_t *)&w->wakeup, NULL);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    goto err_sessions;
  }
  return 0;
err_sessions:
  tls_session_cache_free(w->host.sessions);
  w->host.sessions = NULL;
err_loop:
  uv_loop_close(&w->loop);
  return r;
}

void worker_wake(struct worker *w) {
  uv_async_send(&w->wakeup);
}

void worker_join(struct worker *w) {
  uv_thread_join(&w->thread);
  uv_loop_close(&w->loop);
  tls_contexts_free(w->host.tls);
  w->host.tls = NULL;
  tls_session_cache_free(w->host.sessions);
  w->host.sessions = NULL;
  bufpool_clear(&w->pool);
  worker_close_fds(w);
}
