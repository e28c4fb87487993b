/* worker: one thread with its own libuv loop, its own accept socket per listener
 * (SO_REUSEPORT) and the connections it accepted. Workers share nothing on the data path
 * but the immutable config, the reference-counted TLS contexts and their own stats.
 *
 * Owns struct worker and struct worker_listener; the server allocates the array of
 * workers and starts and joins them. */
#ifndef MTLSD_WORKER_H
#define MTLSD_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "mtlsd/config.h"
#include "mtlsd/stats.h"
#include "mtlsd/tls.h"

struct server;
struct conn;

struct worker_listener {
  struct worker *worker;
  const struct listener_config *cfg;
  struct listener_load *load; /* Shared by every worker's copy of this listener. */
  struct tls_peer_policy policy;
  struct listener_stats *stats;
  int fd;
  uv_poll_t poll;
  bool poll_open;
};

/* A free list of relay buffers, so the data path never calls malloc per read. */
struct buffer_pool {
  void *free_list;
  size_t free_count;
};

struct worker {
  unsigned id;
  struct server *server;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wakeup;
  uv_timer_t accept_retry; /* Re-arms accepting after the process ran out of fds. */
  uv_timer_t drain_timer;
  struct worker_listener *listeners;
  size_t listener_count;
  struct tls_contexts *tls; /* This worker's reference to the current contexts. */
  struct tls_session_cache *sessions;
  struct buffer_pool pool;
  struct conn *conns; /* Doubly linked list of live connections. */
  size_t conn_count;
  bool accepting;
  bool draining;
  bool drain_reported; /* The main thread was told this worker is empty: once only. */
  bool stopping;
};

/* worker_bind creates |w|'s listening sockets (SO_REUSEPORT) for every listener of the
 * config; on failure writes the reason into |err| and returns a negative errno. Called on
 * the main thread before the worker starts, so bind errors surface before serving. */
int worker_bind(struct worker *w, struct server *srv, unsigned id, char *err, size_t err_len);

/* worker_start starts |w|'s thread. */
int worker_start(struct worker *w);

/* worker_wake tells |w| to look at the server's state (new TLS contexts, drain, stop). */
void worker_wake(struct worker *w);

/* worker_join waits for |w|'s thread to end and releases what it owns. */
void worker_join(struct worker *w);

/* worker_close_fds releases the sockets of a worker that never started. */
void worker_close_fds(struct worker *w);

/* Relay buffer size: four TLS records of plaintext, so that bulk transfers cost few
 * system calls; a connection holds buffers only while bytes are in flight. */
#define WORKER_BUFFER_SIZE 65536

/* worker_buffer_get returns a WORKER_BUFFER_SIZE buffer, or NULL when out of memory;
 * worker_buffer_put gives it back. */
void *worker_buffer_get(struct worker *w);
void worker_buffer_put(struct worker *w, void *buf);

/* worker_conn_closed tells |w| that one of its connections has been freed. */
void worker_conn_closed(struct worker *w);

#endif
