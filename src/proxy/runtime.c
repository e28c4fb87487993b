/* runtime: the shared state of a running mtlsd (see mtlsd/runtime.h). */
#include "mtlsd/proxy/runtime.h"

#include <stdatomic.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "mtlsd/base/log.h"

struct runtime *runtime_new(const struct config *cfg) {
  struct runtime *rt = calloc(1, sizeof(*rt));
  if (rt == NULL) {
    return NULL;
  }
  rt->cfg = cfg;
  rt->max_connections = cfg->limits.max_connections;
  rt->start_time = time(NULL);
  pthread_mutex_init(&rt->tls_lock, NULL);
  rt->stats = stats_new(cfg);
  /* Each on its own cache line: aligned_alloc, as calloc only aligns to 16 bytes. */
  size_t load_size = cfg->listener_count * sizeof(*rt->listener_load);
  rt->listener_load = aligned_alloc(64, load_size > 0 ? load_size : 64);
  if (rt->stats == NULL || rt->listener_load == NULL) {
    runtime_free(rt);
    return NULL;
  }
  memset(rt->listener_load, 0, load_size);
  rt->stats->global.start_time = rt->start_time;
  return rt;
}

void runtime_free(struct runtime *rt) {
  if (rt == NULL) {
    return;
  }
  tls_contexts_free(rt->tls);
  free(rt->listener_load);
  stats_free(rt->stats);
  pthread_mutex_destroy(&rt->tls_lock);
  free(rt);
}

void runtime_tls_publish(struct runtime *rt, struct tls_contexts *ctxs) {
  pthread_mutex_lock(&rt->tls_lock);
  struct tls_contexts *old = rt->tls;
  rt->tls = ctxs;
  atomic_store(&rt->tls_generation, tls_contexts_generation(ctxs));
  pthread_mutex_unlock(&rt->tls_lock);
  tls_contexts_free(old);
}

struct tls_contexts *runtime_tls_acquire(struct runtime *rt) {
  pthread_mutex_lock(&rt->tls_lock);
  struct tls_contexts *ctxs = rt->tls;
  if (ctxs != NULL) {
    tls_contexts_up_ref(ctxs);
  }
  pthread_mutex_unlock(&rt->tls_lock);
  return ctxs;
}

void runtime_record_reload(struct runtime *rt, bool ok, const char *error, bool counted) {
  pthread_mutex_lock(&rt->tls_lock);
  rt->last_reload.ok = ok;
  rt->last_reload.time = time(NULL);
  snprintf(rt->last_reload.error, sizeof(rt->last_reload.error), "%s", error);
  pthread_mutex_unlock(&rt->tls_lock);
  if (counted) {
    struct stats_global *g = &rt->stats->global;
    atomic_fetch_add(ok ? &g->cert_reloads_ok : &g->cert_reloads_failed, 1);
  }
}

void runtime_last_reload(struct runtime *rt, struct runtime_reload *out) {
  pthread_mutex_lock(&rt->tls_lock);
  *out = rt->last_reload;
  pthread_mutex_unlock(&rt->tls_lock);
}

/* Descriptors kept for what is not a proxied connection and not open yet: some of the
 * admin and health ports' callers (those servers have caps of their own, and refuse at
 * once beyond what is left), application probes, DNS, certificate and log files... */
enum { RESERVED_DESCRIPTORS = 64 };
/* ...and each worker's loop (epoll, its wakeups), created after this count. */
enum { DESCRIPTORS_PER_WORKER = 4 };

static unsigned open_descriptors(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) {
    return 0;
  }
  unsigned n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    n += e->d_name[0] != '.';
  }
  closedir(d);
  return n > 0 ? n - 1 : 0; /* Not the directory's own. */
}

void runtime_fit_descriptors(struct runtime *rt) {
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return;
  }
  if (lim.rlim_cur < lim.rlim_max) {
    struct rlimit raised = {lim.rlim_max, lim.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      lim = raised;
    }
  }
  rlim_t used = (rlim_t)open_descriptors() + RESERVED_DESCRIPTORS +
                (rlim_t)rt->cfg->workers * DESCRIPTORS_PER_WORKER;
  rlim_t fit = lim.rlim_cur > used ? (lim.rlim_cur - used) / 2 : 0;
  if (lim.rlim_cur == RLIM_INFINITY || fit >= rt->max_connections) {
    return;
  }
  unsigned wanted = rt->max_connections;
  if (fit == 0) {
    /* One connection is still tried: the reserve is an estimate, not a count. */
    rt->max_connections = 1;
    log_write(LOG_ERROR, "runtime",
              "the open files limit (ulimit -n %llu) leaves no descriptors for connections "
              "(about %llu are needed before the first); raise it (the container runtime's "
              "nofile)",
              (unsigned long long)lim.rlim_cur, (unsigned long long)used);
    return;
  }
  rt->max_connections = (unsigned)fit;
  log_write(LOG_WARN, "runtime",
            "the open files limit (ulimit -n %llu) holds %u connections, fewer than "
            "limits.max_connections (%u): more are refused; raise the limit (the container "
            "runtime's nofile) to serve them",
            (unsigned long long)lim.rlim_cur, rt->max_connections, wanted);
}

bool runtime_confine(struct runtime *rt) {
  const struct config *cfg = rt->cfg;
  if (!cfg->sandbox) {
    log_write(LOG_WARN, "sandbox", "off (\"sandbox\": false): the process is not confined");
    return true;
  }
  struct sandbox_paths paths = {
      .certs_dir = cfg->certs.dir,
      .access_log = cfg->access_log == ACCESS_LOG_TARGET_FILE ? cfg->access_log_path : NULL,
  };
  char err[300];
  if (!sandbox_enter(&paths, &rt->sandbox, err, sizeof(err))) {
    log_write(LOG_ERROR, "sandbox",
              "cannot confine the process: %s (\"sandbox\": false turns "
              "it off)",
              err);
    return false;
  }
  atomic_store(&rt->stats->global.sandbox_active, 1);
  if (rt->sandbox.landlock_abi > 0) {
    log_write(LOG_INFO, "sandbox", "confined: no_new_privs, seccomp, Landlock ABI %d",
              rt->sandbox.landlock_abi);
  } else {
    log_write(LOG_WARN, "sandbox", "confined: no_new_privs, seccomp; no Landlock: %s",
              rt->sandbox.landlock_detail);
  }
  return true;
}

bool runtime_ready(struct runtime *rt, char *reason, size_t reason_len) {
  int state = atomic_load(&rt->state);
  if (runtime_draining(rt)) {
    snprintf(reason, reason_len, "draining");
    return false;
  }
  unsigned failed = atomic_load(&rt->workers_failed);
  if (failed > 0) {
    snprintf(reason, reason_len, "%u of %u workers could not watch their listeners", failed,
             rt->worker_count);
    return false;
  }
  if (state != RUNTIME_LIVE || atomic_load(&rt->workers_serving) < rt->worker_count) {
    snprintf(reason, reason_len, "listeners are not all bound yet");
    return false;
  }
  if (atomic_load_explicit(&rt->original_dst_broken, memory_order_relaxed)) {
    snprintf(reason, reason_len,
             "a transparent listener cannot read original destinations (are the iptables "
             "rules and conntrack in place?)");
    return false;
  }
  struct tls_contexts *ctxs = runtime_tls_acquire(rt);
  if (ctxs == NULL) {
    struct runtime_reload last;
    runtime_last_reload(rt, &last);
    snprintf(reason, reason_len, "no valid certificate loaded%s%s",
             last.error[0] != '\0' ? ": " : "", last.error);
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
