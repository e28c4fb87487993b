/* server: start-up, certificate (re)loading, readiness and the drain (see
 * mtlsd/server.h). Everything here runs on the main thread's loop, except the functions
 * documented as thread-safe. */
#include "mtlsd/server.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "mtlsd/admin.h"
#include "mtlsd/certwatch.h"
#include "mtlsd/file.h"
#include "mtlsd/log.h"
#include "mtlsd/worker.h"

static void wake_workers(struct server *srv) {
  for (unsigned i = 0; i < srv->worker_count; i++) {
    worker_wake(&srv->workers[i]);
  }
}

void server_publish_tls(struct server *srv, struct tls_contexts *ctxs) {
  pthread_mutex_lock(&srv->tls_lock);
  struct tls_contexts *old = srv->tls;
  srv->tls = ctxs;
  atomic_store(&srv->tls_generation, tls_contexts_generation(ctxs));
  pthread_mutex_unlock(&srv->tls_lock);
  /* Connections that started on the old contexts hold their own references. */
  tls_contexts_free(old);
  wake_workers(srv);
}

struct tls_contexts *server_acquire_tls(struct server *srv) {
  pthread_mutex_lock(&srv->tls_lock);
  struct tls_contexts *ctxs = srv->tls;
  if (ctxs != NULL) {
    tls_contexts_up_ref(ctxs);
  }
  pthread_mutex_unlock(&srv->tls_lock);
  return ctxs;
}

/* Records a reload's outcome for /certs; |counted| reloads also move
 * mtlsd_cert_reloads_total (a set identical to the one serving is not a reload). */
static void record_reload(struct server *srv, bool ok, const char *error, bool counted) {
  pthread_mutex_lock(&srv->tls_lock);
  srv->last_reload_ok = ok;
  srv->last_reload_time = time(NULL);
  snprintf(srv->last_reload_error, sizeof(srv->last_reload_error), "%s", error);
  pthread_mutex_unlock(&srv->tls_lock);
  if (counted) {
    atomic_fetch_add(
        ok ? &srv->stats->global.cert_reloads_ok : &srv->stats->global.cert_reloads_failed, 1);
  }
}

bool server_reload_certs(struct server *srv, bool dry_run, char *msg, size_t msg_len) {
  char err[512];
  struct tls_certset *set = tls_certset_load(srv->cfg, err, sizeof(err));
  if (set == NULL) {
    snprintf(msg, msg_len, "%s", err);
    if (!dry_run) {
      log_write(LOG_WARN, "certs", "refused the certificate set in %s: %s", srv->cfg->certs.dir,
                err);
      record_reload(srv, false, err, true);
    }
    return false;
  }
  if (dry_run) {
    snprintf(msg, msg_len, "valid: %s, expires in %lld s", tls_certset_primary_identity(set),
             (long long)(tls_certset_not_after(set) - time(NULL)));
    tls_certset_free(set);
    return true;
  }
  struct tls_contexts *current = server_acquire_tls(srv);
  bool unchanged = current != NULL && tls_certset_same(tls_contexts_certset(current), set);
  tls_contexts_free(current);
  if (unchanged) {
    /* The files are good again (a refused set may have been put back): say so. */
    record_reload(srv, true, "", false);
    tls_certset_free(set);
    snprintf(msg, msg_len, "unchanged");
    return true;
  }
  uint64_t generation = atomic_load(&srv->tls_generation) + 1;
  int64_t not_after = tls_certset_not_after(set);
  char identity[256];
  snprintf(identity, sizeof(identity), "%.200s", tls_certset_primary_identity(set));
  struct tls_contexts *ctxs = tls_contexts_new(srv->cfg, set, generation, err, sizeof(err));
  if (ctxs == NULL) {
    tls_certset_free(set);
    snprintf(msg, msg_len, "%s", err);
    log_write(LOG_WARN, "certs", "refused the certificate set in %s: %s", srv->cfg->certs.dir, err);
    record_reload(srv, false, err, true);
    return false;
  }
  server_publish_tls(srv, ctxs);
  record_reload(srv, true, "", true);
  atomic_store(&srv->stats->global.cert_generation, generation);
  atomic_store(&srv->stats->global.cert_expiry, not_after);
  log_write(LOG_INFO, "certs", "loaded generation %llu: %s, expires in %lld s",
            (unsigned long long)generation, identity, (long long)(not_after - time(NULL)));
  snprintf(msg, msg_len, "loaded generation %llu", (unsigned long long)generation);
  return true;
}

bool server_ready(struct server *srv, char *reason, size_t reason_len) {
  int state = atomic_load(&srv->state);
  if (state == SERVER_DRAINING || state == SERVER_STOPPED) {
    snprintf(reason, reason_len, "draining");
    return false;
  }
  unsigned failed = atomic_load(&srv->workers_failed);
  if (failed > 0) {
    snprintf(reason, reason_len, "%u of %u workers could not watch their listeners", failed,
             srv->worker_count);
    return false;
  }
  if (atomic_load(&srv->listeners_bound) < srv->worker_count || state != SERVER_LIVE) {
    snprintf(reason, reason_len, "listeners are not all bound yet");
    return false;
  }
  if (atomic_load_explicit(&srv->original_dst_broken, memory_order_relaxed)) {
    snprintf(reason, reason_len,
             "a transparent listener cannot read original destinations (are the iptables "
             "rules and conntrack in place?)");
    return false;
  }
  struct tls_contexts *ctxs = server_acquire_tls(srv);
  if (ctxs == NULL) {
    pthread_mutex_lock(&srv->tls_lock);
    snprintf(reason, reason_len, "no valid certificate loaded%s%s",
             srv->last_reload_error[0] != '\0' ? ": " : "", srv->last_reload_error);
    pthread_mutex_unlock(&srv->tls_lock);
    return false;
  }
  int64_t not_after = tls_certset_not_after(tls_contexts_certset(ctxs));
  tls_contexts_free(ctxs);
  if (not_after <= time(NULL)) {
    snprintf(reason, reason_len, "the loaded certificate has expired");
    return false;
  }
  snprintf(reason, reason_len, "ready");
  return true;
}

void server_request_drain(struct server *srv, bool then_exit) {
  if (then_exit) {
    atomic_store(&srv->requested_exit, 1);
  }
  /* The state turns at once, so a /ready right after POST /drain already says 503; the
   * main loop tells the workers. */
  int live = SERVER_LIVE;
  if (atomic_compare_exchange_strong(&srv->state, &live, SERVER_DRAINING)) {
    atomic_store(&srv->stats->global.draining, 1);
    atomic_store(&srv->requested_drain, 1);
  }
  uv_async_send(&srv->wakeup);
}

void server_request_reload(struct server *srv) {
  atomic_store(&srv->requested_reload, 1);
  uv_async_send(&srv->wakeup);
}

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
  if (atomic_exchange(&srv->requested_reload, 0)) {
    char msg[512];
    server_reload_certs(srv, false, msg, sizeof(msg));
  }
  if (atomic_exchange(&srv->requested_drain, 0)) {
    log_write(LOG_INFO, "server", "draining: no new connections; open ones have %llu ms to finish",
              (unsigned long long)srv->cfg->limits.drain_timeout);
    wake_workers(srv);
  }
  if (atomic_load(&srv->state) == SERVER_DRAINING && atomic_load(&srv->requested_exit) &&
      atomic_load(&srv->workers_drained) >= srv->worker_count) {
    log_write(LOG_INFO, "server", "drained; exiting");
    atomic_store(&srv->state, SERVER_STOPPED);
    wake_workers(srv);
    close_main_handles(srv);
  }
}

static void on_signal(uv_signal_t *handle, int signum) {
  struct server *srv = handle->data;
  if (signum == SIGHUP) {
    log_write(LOG_INFO, "server", "SIGHUP: reloading certificates");
    server_request_reload(srv);
    return;
  }
  log_write(LOG_INFO, "server", "%s: starting a graceful drain", strsignal(signum));
  server_request_drain(srv, true);
}

static void start_signal(struct server *srv, uv_signal_t *handle, int signum) {
  uv_signal_init(&srv->loop, handle);
  handle->data = srv;
  uv_signal_start(handle, on_signal, signum);
}

static enum log_access_target access_target(enum access_log_target t) {
  switch (t) {
    case ACCESS_LOG_STDOUT:
      return ACCESS_LOG_TARGET_STDOUT;
    case ACCESS_LOG_STDERR:
      return ACCESS_LOG_TARGET_STDERR;
    case ACCESS_LOG_FILE:
      return ACCESS_LOG_TARGET_FILE;
    case ACCESS_LOG_OFF:
      break;
  }
  return ACCESS_LOG_TARGET_OFF;
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

int server_run(const struct config *cfg) {
  int exit_code = 1;
  char err[512];
  /* BoringSSL writes to sockets with write(2); a peer's reset must not kill us. */
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();

  struct server *srv = calloc(1, sizeof(*srv));
  if (srv == NULL) {
    log_write(LOG_ERROR, "server", "out of memory");
    return 1;
  }
  srv->cfg = cfg;
  srv->start_time = time(NULL);
  pthread_mutex_init(&srv->tls_lock, NULL);
  srv->stats = stats_new(cfg);
  /* Each on its own cache line: aligned_alloc, as calloc only aligns to 16 bytes. */
  srv->listener_load = aligned_alloc(64, cfg->listener_count * sizeof(*srv->listener_load));
  if (srv->listener_load != NULL) {
    memset(srv->listener_load, 0, cfg->listener_count * sizeof(*srv->listener_load));
  }
  if (srv->stats == NULL || srv->listener_load == NULL || uv_loop_init(&srv->loop) != 0) {
    log_write(LOG_ERROR, "server", "out of memory");
    goto out;
  }
  srv->stats->global.start_time = srv->start_time;

  int r = log_access_open(access_target(cfg->access_log), cfg->access_log_path);
  if (r != 0) {
    log_write(LOG_ERROR, "server", "access_log: cannot open %s: %s", cfg->access_log_path,
              strerror(-r));
    goto out_loop;
  }

  warn_if_key_readable(cfg);
  char msg[512];
  if (!server_reload_certs(srv, false, msg, sizeof(msg))) {
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
  /* Admin first, then listeners (SPEC section 6); all bound before any thread runs. */
  uv_async_init(&srv->loop, &srv->wakeup, on_wakeup);
  srv->wakeup.data = srv;
  start_signal(srv, &srv->sig_term, SIGTERM);
  start_signal(srv, &srv->sig_int, SIGINT);
  start_signal(srv, &srv->sig_hup, SIGHUP);
  srv->admin = admin_start(srv, err, sizeof(err));
  if (srv->admin == NULL) {
    log_write(LOG_ERROR, "server", "admin: %s", err);
    goto out_handles;
  }
  for (unsigned i = 0; i < cfg->workers; i++) {
    if (worker_bind(&srv->workers[i], srv, i, err, sizeof(err)) != 0) {
      log_write(LOG_ERROR, "server", "%s", err);
      for (unsigned j = 0; j <= i; j++) {
        worker_close_fds(&srv->workers[j]);
      }
      goto out_handles;
    }
  }
  srv->certwatch = certwatch_start(srv);
  for (unsigned i = 0; i < cfg->workers; i++) {
    r = worker_start(&srv->workers[i]);
    if (r != 0) {
      log_write(LOG_ERROR, "server", "cannot start worker %u: %s; stopping", i, uv_strerror(r));
      for (unsigned j = i; j < cfg->workers; j++) {
        worker_close_fds(&srv->workers[j]);
      }
      atomic_store(&srv->state, SERVER_STOPPED);
      wake_workers(srv);
      goto out_handles;
    }
    srv->worker_count++;
  }
  atomic_store(&srv->state, SERVER_LIVE);
  log_write(LOG_INFO, "server", "mtlsd %s serving %zu listeners on %u workers", MTLSD_VERSION,
            cfg->listener_count, cfg->workers);

  uv_run(&srv->loop, UV_RUN_DEFAULT);
  for (unsigned i = 0; i < srv->worker_count; i++) {
    worker_join(&srv->workers[i]);
  }
  exit_code = 0;
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
  free(srv->listener_load);
  tls_contexts_free(srv->tls);
  stats_free(srv->stats);
  pthread_mutex_destroy(&srv->tls_lock);
  free(srv);
  return exit_code;
}
