/* worker: one thread with its own libuv loop, its own accept socket per listener
 * (SO_REUSEPORT) and the connections it accepted. Workers share nothing on the data path
 * but the runtime's immutable config, the reference-counted TLS contexts and their own
 * stats blocks.
 *
 * Owns struct worker, its listeners, its connection list and its buffer pool; its owner
 * (the server) allocates the struct, binds, starts, wakes and joins it. A worker reads
 * the runtime when woken (new contexts, drain, stop) and reports upward only through
 * struct worker_ops. */
#ifndef MTLSD_WORKER_H
#define MTLSD_WORKER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "mtlsd/base/bufpool.h"
#include "mtlsd/base/list.h"
#include "mtlsd/net/acceptor.h"
#include "mtlsd/proxy/conn.h"
#include "mtlsd/proxy/runtime.h"

struct worker;

struct worker_listener {
  struct conn_listener conn; /* What its connections see. */
  struct worker *worker;
  struct acceptor acceptor;
};

struct worker_ops {
  /* drained: in a drain, the worker has no connection left (reported once). Runs on the
   * worker's thread. */
  void (*drained)(void *arg);
};

struct worker {
  unsigned id;
  struct runtime *rt;
  const struct worker_ops *ops;
  void *arg;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wakeup;
  uv_timer_t drain_timer;
  struct worker_listener *listeners;
  size_t listener_count;
  struct conn_host host; /* Its loop, contexts, session cache and pool, for connections. */
  struct bufpool pool;
  struct list_node conns; /* Live connections (worker_conn_add / worker_conn_remove). */
  size_t conn_count;
  bool draining;
  bool drain_reported; /* |ops->drained| was called: once only. */
  bool stopping;
};

/* worker_bind creates |w|'s listening sockets (SO_REUSEPORT) for every listener of
 * |rt->cfg|; on failure writes the reason into |err| and returns a negative errno. Called
 * on the main thread before the worker starts, so bind errors surface before serving. */
int worker_bind(struct worker *w, struct runtime *rt, unsigned id, const struct worker_ops *ops,
                void *arg, char *err, size_t err_len);

/* worker_start starts |w|'s thread. */
int worker_start(struct worker *w);

/* worker_wake tells |w| to look at the runtime (new TLS contexts, drain, stop).
 * Thread-safe. */
void worker_wake(struct worker *w);

/* worker_join waits for |w|'s thread to end and releases what it owns. */
void worker_join(struct worker *w);

/* worker_close_fds releases the sockets of a worker that never started. */
void worker_close_fds(struct worker *w);

#endif
