/* runtime: the state of a running mtlsd that every part reads: the immutable config,
 * the stats, the TLS contexts in use, the process-wide counters and the lifecycle state.
 * A hub without an event loop: it calls nothing above the base layer (it enters the
 * sandbox when told to) and is told everything (the server publishes certificates and
 * moves the state; workers count their connections in it).
 *
 * Owns struct runtime, its stats, its listener loads and its reference to the current
 * TLS contexts. Thread-safe where a function says so; the atomics below are read and
 * written directly, each by the parties its comment names. */
#ifndef MTLSD_RUNTIME_H
#define MTLSD_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mtlsd/config/config.h"
#include "mtlsd/net/stats.h"
#include "mtlsd/os/sandbox.h"
#include "mtlsd/tls/tls.h"

enum runtime_state { RUNTIME_STARTING, RUNTIME_LIVE, RUNTIME_DRAINING, RUNTIME_STOPPED };

/* One listener's connections on all workers, for listeners[].max_connections; a cache
 * line each, as every accept touches it. */
struct listener_load {
  _Atomic unsigned active;
} __attribute__((aligned(64)));

/* The outcome of the last certificate reload, for /certs and /ready. */
struct runtime_reload {
  int64_t time; /* Unix seconds; 0 before the first attempt. */
  bool ok;
  char error[512];
};

struct runtime {
  const struct config *cfg;
  struct stats *stats;
  int64_t start_time;                  /* Unix seconds. */
  unsigned worker_count;               /* Workers serving; set before the state is LIVE. */
  struct listener_load *listener_load; /* [listener]: workers. */
  _Atomic unsigned active_connections; /* Across workers, for max_connections. */
  /* limits.max_connections, or fewer when the descriptor limit cannot hold that many
   * (runtime_fit_descriptors); set before the state is LIVE. */
  unsigned max_connections;
  _Atomic int state;                /* enum runtime_state: the server. */
  _Atomic unsigned workers_serving; /* Workers whose listeners are all watched. */
  _Atomic unsigned workers_failed;  /* Workers that could not start serving. */
  _Atomic unsigned workers_drained; /* Workers with no connection left in a drain. */
  /* Transparent listeners: whether the last attempt to read an original destination
   * failed (iptables or conntrack missing), which /ready reports until one succeeds. */
  _Atomic int original_dst_broken;

  /* The TLS publisher: read through runtime_tls_acquire and runtime_last_reload. */
  pthread_mutex_t tls_lock;
  struct tls_contexts *tls; /* tls_lock; NULL before a valid set. */
  _Atomic uint64_t tls_generation;
  struct runtime_reload last_reload; /* tls_lock. */

  /* What runtime_confine put in place; written before the state is LIVE. */
  struct sandbox_status sandbox;
};

/* runtime_new returns the runtime of |cfg| (which must outlive it) with zeroed stats,
 * in state RUNTIME_STARTING; NULL when out of memory. Free with runtime_free. */
struct runtime *runtime_new(const struct config *cfg);

/* runtime_free releases |rt| and its reference to the current contexts; NULL is a
 * no-op. */
void runtime_free(struct runtime *rt);

/* runtime_tls_publish makes |ctxs| (whose reference the runtime takes) the contexts for
 * every new handshake, and drops the previous ones (connections that started on them
 * hold their own references). Thread-safe; workers learn of it when told to look. */
void runtime_tls_publish(struct runtime *rt, struct tls_contexts *ctxs);

/* runtime_tls_acquire returns a new reference to the current contexts, or NULL before a
 * valid set exists. Thread-safe. */
struct tls_contexts *runtime_tls_acquire(struct runtime *rt);

/* runtime_tls_generation returns the generation of the current contexts (0: none). */
static inline uint64_t runtime_tls_generation(const struct runtime *rt) {
  return atomic_load(&rt->tls_generation);
}

/* runtime_record_reload records a reload's outcome (|error| "" when |ok|); |counted|
 * reloads also move mtlsd_cert_reloads_total (a set identical to the one serving is not
 * a reload). Thread-safe. */
void runtime_record_reload(struct runtime *rt, bool ok, const char *error, bool counted);

/* runtime_last_reload copies the last reload's outcome into |*out|. Thread-safe. */
void runtime_last_reload(struct runtime *rt, struct runtime_reload *out);

/* runtime_draining tells whether a drain has started (or the process is stopping). */
static inline bool runtime_draining(const struct runtime *rt) {
  int state = atomic_load(&rt->state);
  return state == RUNTIME_DRAINING || state == RUNTIME_STOPPED;
}

/* runtime_fit_descriptors raises the soft limit on open files to the hard one (as Go's
 * runtime does: the soft limit only protects select(), which mtlsd never calls) and
 * lowers |rt->max_connections| to what the descriptors left can hold, two per
 * connection, after those open now, the workers' loops and a reserve for some of the
 * admin and health ports' callers, probes, DNS and certificate reads (an estimate: those
 * refuse at once beyond what is left, as the listeners do). A connection over it is then refused at
 * once and counted (reason limit) instead of being accepted and failing for want of an upstream
 * socket. Logs a warning naming the limit when it is lowered. Call once every socket is bound,
 * before the workers start. */
void runtime_fit_descriptors(struct runtime *rt);

/* runtime_confine enters the sandbox when |rt->cfg| asks for it (call it once, while the
 * process has one thread), records what was put in place for /server_info and
 * mtlsd_sandbox_active, and logs it. Returns false, with the reason logged, when the
 * sandbox was asked for and could not be set up: the process must not serve then. */
bool runtime_confine(struct runtime *rt);

/* runtime_ready tells whether the process is ready (every listener bound, a valid and
 * unexpired certificate loaded, not draining); when not, |reason| says why. Thread-safe. */
bool runtime_ready(struct runtime *rt, char *reason, size_t reason_len);

#endif
