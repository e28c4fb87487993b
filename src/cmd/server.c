/* server: start-up, certificate (re)loading, readiness and the drain (see
 * mtlsd/server.h). Everything here runs on the main thread's loop, except the functions
 * documented as thread-safe. */
#include "mtlsd/cmd/server.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <uv.h>

#include "mtlsd/base/exit.h"
#include "mtlsd/base/file.h"
#include "mtlsd/base/log.h"
#include "mtlsd/proxy/admin.h"
#include "mtlsd/proxy/certload.h"
#include "mtlsd/proxy/certwatch.h"
#include "mtlsd/proxy/runtime.h"
#include "mtlsd/proxy/worker.h"

struct server {
  struct runtime *rt;
  const struct config *cfg;
  uv_loop_t loop; /* The main thread's loop: signals, certificate watching, admin. */
  struct worker *workers;
  unsigned worker_count; /* Started. */
  struct certwatch *certwatch;
  struct admin *admin;

  uv_signal_t sig_term, sig_int, sig_hup;
  uv_async_t wakeup; /* Other threads ask the main loop to drain or reload. */
  _Atomic int requested_drain;
  _Atomic int requested_exit;
  _Atomic int requested_reload;
};

static void wake_workers(struct server *srv) {
  for (unsigned i = 0; i < srv->worker_count; i++) {
    worker_wake(&srv->workers[i]);
  }
}

/* certload_reload, and the workers told of a new generation. */
static enum certload_result reload_certs(struct server *srv, enum certload_mode mode,
                                         const uint8_t *expect, char *msg, size_t msg_len) {
  enum certload_result r = certload_reload(srv->rt, mode, expect, msg, msg_len);
  if (r == CERTLOAD_LOADED) {
    wake_workers(srv);
  }
  return r;
}

static enum certload_result reload_op(void *arg, enum certload_mode mode, const uint8_t *expect,
                                      char *msg, size_t msg_len) {
  return reload_certs(arg, mode, expect, msg, msg_len);
}

static struct tls_contexts *current_op(void *arg) {
  struct server *srv = arg;
  return runtime_tls_acquire(srv->rt);
}

/* Starts a graceful drain (docs/admin.md, POST /drain), and exits afterwards when |then_exit|.
 * Thread-safe. */
static void request_drain(struct server *srv, bool then_exit) {
  if (then_exit) {
    atomic_store(&srv->requested_exit, 1);
  }
  /* The state turns at once, so a /ready right after POST /drain already says 503; the
   * main loop tells the workers. */
  int live = RUNTIME_LIVE;
  if (atomic_compare_exchange_strong(&srv->rt->state, &live, RUNTIME_DRAINING)) {
    atomic_store(&srv->rt->stats->global.draining, 1);
    atomic_store(&srv->requested_drain, 1);
  }
  uv_async_send(&srv->wakeup);
}

static void drain_op(void *arg, bool then_exit) {
  request_drain(arg, then_exit);
}

/* A worker emptied in a drain: the main loop looks whether it was the last. Runs on the
 * worker's thread. */
static void drained_op(void *arg) {
  struct server *srv = arg;
  uv_async_send(&srv->wakeup);
}

static const struct certwatch_ops kCertwatchOps = {.reload = reload_op, .current = current_op};
static const struct admin_control_ops kControlOps = {.reload = reload_op, .drain = drain_op};
static const struct worker_ops kWorkerOps = {.drained = drained_op};

static void close_main_handles(struct server *srv) {
  uv_close((uv_handle_t *)&srv->sig_term, NULL);
  uv_close((uv_handle_t *)&srv->sig_int, NULL);
  uv_close((uv_handle_t *)&srv->sig_hup, NULL);
  uv_close((uv_handle_t *)&srv->wakeup, NULL);
  certwatch_close(srv->certwatch);
  srv->certwatch = NULL;
  admin_close(srv->admin);
  srv->admin = NULL;
}

static void on_wakeup(uv_async_t *async) {
  struct server *srv = async->data;
  struct runtime *rt = srv->rt;
  if (atomic_exchange(&srv->requested_reload, 0)) {
    char msg[512];
    reload_certs(srv, CERTLOAD_APPLY, NULL, msg, sizeof(msg));
  }
  if (atomic_exchange(&srv->requested_drain, 0)) {
    log_write(LOG_INFO, "server", "draining: no new connections; open ones have %llu ms to finish",
              (unsigned long long)srv->cfg->limits.drain_timeout);
    wake_workers(srv);
  }
  if (atomic_load(&rt->state) == RUNTIME_DRAINING && atomic_load(&srv->requested_exit) &&
      atomic_load(&rt->workers_drained) >= srv->worker_count) {
    log_write(LOG_INFO, "server", "drained; exiting");
    atomic_store(&rt->state, RUNTIME_STOPPED);
    wake_workers(srv);
    close_main_handles(srv);
  }
}

static void on_signal(uv_signal_t *handle, int signum) {
  struct server *srv = handle->data;
  if (signum == SIGHUP) {
    log_write(LOG_INFO, "server", "SIGHUP: reloading certificates");
    atomic_store(&srv->requested_reload, 1);
    uv_async_send(&srv->wakeup);
    return;
  }
  log_write(LOG_INFO, "server", "%s: starting a graceful drain", strsignal(signum));
  request_drain(srv, true);
}

static void start_signal(struct server *srv, uv_signal_t *handle, int signum) {
  uv_signal_init(&srv->loop, handle);
  handle->data = srv;
  uv_signal_start(handle, on_signal, signum);
}

/* Each relayed connection holds two descriptors; the default soft limit of 1024 would
 * cap a sidecar at about 500 connections. The hard limit is the operator's to set. */
static void raise_fd_limit(void) {
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

/* The key file should be readable by mtlsd alone (and its group, as csi-driver-spiffe's
 * fs-group arranges); a Secret volume's default mode 0644 lets every process in the pod
 * read it. */
static void warn_if_key_readable(const struct config *cfg) {
  char path[PATH_MAX];
  struct stat st;
  if (file_path_join(path, sizeof(path), cfg->certs.dir, cfg->certs.key_file) &&
      stat(path, &st) == 0 && (st.st_mode & S_IROTH) != 0) {
    log_write(LOG_WARN, "certs",
              "%s is readable by every user (mode %04o): give it mode 0400 or 0440 (a "
              "Secret volume's defaultMode)",
              path, (unsigned)(st.st_mode & 07777));
  }
}

/* Admin first, then the listeners of every worker, then the certificate watch, all bound
 * before any other thread runs, and then the process confined: what the workers inherit
 * is the confined process. False (said in the log) when one cannot. */
static bool bind_and_confine(struct server *srv) {
  const struct config *cfg = srv->cfg;
  char err[512];
  srv->admin = admin_start(&srv->loop, srv->rt, &kControlOps, srv, err, sizeof(err));
  if (srv->admin == NULL) {
    log_write(LOG_ERROR, "server", "admin: %s", err);
    return false;
  }
  for (unsigned i = 0; i < cfg->workers; i++) {
    if (worker_bind(&srv->workers[i], srv->rt, i, &kWorkerOps, srv, err, sizeof(err)) != 0) {
      log_write(LOG_ERROR, "server", "%s", err);
      for (unsigned j = 0; j <= i; j++) {
        worker_close_fds(&srv->workers[j]);
      }
      return false;
    }
  }
  srv->certwatch = certwatch_start(&srv->loop, &cfg->certs, &kCertwatchOps, srv);
  runtime_fit_descriptors(srv->rt);
  if (!runtime_confine(srv->rt)) {
    for (unsigned j = 0; j < cfg->workers; j++) {
      worker_close_fds(&srv->workers[j]);
    }
    return false;
  }
  return true;
}

/* Starts every worker's thread; when one cannot start, the others are stopped and false
 * returned. */
static bool start_workers(struct server *srv) {
  const struct config *cfg = srv->cfg;
  for (unsigned i = 0; i < cfg->workers; i++) {
    int r = worker_start(&srv->workers[i]);
    if (r != 0) {
      log_write(LOG_ERROR, "server", "cannot start worker %u: %s; stopping", i, uv_strerror(r));
      for (unsigned j = i; j < cfg->workers; j++) {
        worker_close_fds(&srv->workers[j]);
      }
      atomic_store(&srv->rt->state, RUNTIME_STOPPED);
      wake_workers(srv);
      return false;
    }
    srv->worker_count++;
    srv->rt->worker_count = srv->worker_count;
  }
  return true;
}

int server_run(const struct config *cfg) {
  int exit_code = MTLSD_EXIT_FAILED;
  /* BoringSSL writes to sockets with write(2); a peer's reset must not kill us. */
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();

  struct server *srv = calloc(1, sizeof(*srv));
  if (srv == NULL) {
    log_write(LOG_ERROR, "server", "out of memory");
    return MTLSD_EXIT_FAILED;
  }
  srv->cfg = cfg;
  srv->rt = runtime_new(cfg);
  if (srv->rt == NULL || uv_loop_init(&srv->loop) != 0) {
    log_write(LOG_ERROR, "server", "out of memory");
    goto out;
  }
  struct runtime *rt = srv->rt;

  int r = log_access_open(cfg->access_log, cfg->access_log_path);
  if (r != 0) {
    log_write(LOG_ERROR, "server", "access_log: cannot open %s: %s", cfg->access_log_path,
              strerror(-r));
    goto out_loop;
  }

  warn_if_key_readable(cfg);
  char msg[512];
  if (reload_certs(srv, CERTLOAD_APPLY, NULL, msg, sizeof(msg)) == CERTLOAD_REFUSED) {
    log_write(LOG_WARN, "server",
              "no valid certificate yet (%s): admin is up, connections are refused until one "
              "appears in %s",
              msg, cfg->certs.dir);
  }

  srv->workers = calloc(cfg->workers, sizeof(*srv->workers));
  if (srv->workers == NULL) {
    log_write(LOG_ERROR, "server", "out of memory");
    goto out_loop;
  }
  uv_async_init(&srv->loop, &srv->wakeup, on_wakeup);
  srv->wakeup.data = srv;
  start_signal(srv, &srv->sig_term, SIGTERM);
  start_signal(srv, &srv->sig_int, SIGINT);
  start_signal(srv, &srv->sig_hup, SIGHUP);
  if (!bind_and_confine(srv) || !start_workers(srv)) {
    goto out_handles;
  }
  atomic_store(&rt->state, RUNTIME_LIVE);
  log_write(LOG_INFO, "server", "mtlsd %s serving %zu listeners on %u workers", MTLSD_VERSION,
            cfg->listener_count, cfg->workers);

  uv_run(&srv->loop, UV_RUN_DEFAULT);
  for (unsigned i = 0; i < srv->worker_count; i++) {
    worker_join(&srv->workers[i]);
  }
  exit_code = MTLSD_EXIT_OK;
  goto out_loop;

out_handles:
  close_main_handles(srv);
  uv_run(&srv->loop, UV_RUN_DEFAULT);
  for (unsigned i = 0; i < srv->worker_count; i++) {
    worker_join(&srv->workers[i]);
  }
out_loop:
  uv_loop_close(&srv->loop);
out:
  free(srv->workers);
  runtime_free(srv->rt);
  free(srv);
  return exit_code;
}
