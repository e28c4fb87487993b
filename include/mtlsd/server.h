/* server: the process's lifecycle (SPEC section 6) for `mtlsd run`: validate, load
 * certificates, bind everything, start the admin port and the workers, then serve until
 * a drain ends.
 *
 * Owns struct server, the state shared by the main thread, the admin port and the
 * workers: the immutable config, the stats, the current TLS contexts (published under a
 * mutex and taken by each worker when told), the global connection count and the
 * lifecycle state. */
#ifndef MTLSD_SERVER_H
#define MTLSD_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "mtlsd/config.h"
#include "mtlsd/stats.h"
#include "mtlsd/tls.h"

struct worker;
struct certwatch;
struct admin;

enum server_state { SERVER_STARTING, SERVER_LIVE, SERVER_DRAINING, SERVER_STOPPED };

/* One listener's connections on all workers, for listeners[].max_connections and
 * limits.max_handshaking; a cache line each, as every accept touches it. */
struct listener_load {
  _Atomic unsigned active;
  _Atomic unsigned handshaking;
} __attribute__((aligned(64)));

struct server {
  const struct config *cfg;
  struct stats *stats;
  uv_loop_t loop; /* The main thread's loop: signals, certificate watching, admin. */

  pthread_mutex_t tls_lock;
  struct tls_contexts *tls; /* Current contexts, or NULL before a valid set; tls_lock. */
  _Atomic uint64_t tls_generation;
  char last_reload_error[512]; /* tls_lock. */
  int64_t last_reload_time;    /* tls_lock. */
  bool last_reload_ok;         /* tls_lock. */

  _Atomic unsigned active_connections; /* Across workers, for limits.max_connections. */
  struct listener_load *listener_load; /* [listener] */
  _Atomic int state;                   /* enum server_state */
  _Atomic unsigned listeners_bound;    /* Workers whose listeners are all serving. */
  _Atomic unsigned workers_failed;     /* Workers that could not start serving. */
  _Atomic unsigned workers_drained;    /* Workers with no connection left in a drain. */
  /* Transparent listeners: whether the last attempt to read an original destination
   * failed (iptables or conntrack missing), which /ready reports until one succeeds. */
  _Atomic int original_dst_broken;
  int64_t start_time;

  struct worker *workers;
  unsigned worker_count;
  struct certwatch *certwatch;
  struct admin *admin;

  uv_signal_t sig_term, sig_int, sig_hup;
  uv_async_t wakeup; /* Other threads ask the main loop to drain or reload. */
  _Atomic int requested_drain;
  _Atomic int requested_exit;
  _Atomic int requested_reload;
  uv_timer_t drain_timer;
};

/* server_run runs mtlsd with |cfg| until a drain completes; returns the exit code. */
int server_run(const struct config *cfg);

/* server_publish_tls makes |ctxs| (whose reference the server takes) the contexts for
 * every new handshake, on every worker. Called on the main thread. */
void server_publish_tls(struct server *srv, struct tls_contexts *ctxs);

/* server_acquire_tls returns a new reference to the current contexts, or NULL before a
 * valid set exists. Thread-safe. */
struct tls_contexts *server_acquire_tls(struct server *srv);

/* server_reload_certs reloads the certificate directory now; with |dry_run| it only
 * validates. Writes the result into |msg|; returns whether the set is valid. Called on
 * the main thread. */
bool server_reload_certs(struct server *srv, bool dry_run, char *msg, size_t msg_len);

/* server_request_drain starts a graceful drain (SPEC section 6), and exits afterwards
 * when |then_exit|. Thread-safe. */
void server_request_drain(struct server *srv, bool then_exit);

/* server_request_reload asks the main loop to reload certificates. Thread-safe. */
void server_request_reload(struct server *srv);

/* server_ready tells whether the process is ready (every listener bound, a valid and
 * unexpired certificate loaded, not draining); when not, |reason| says why. */
bool server_ready(struct server *srv, char *reason, size_t reason_len);

#endif
