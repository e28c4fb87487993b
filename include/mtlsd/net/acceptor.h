/* acceptor: one listening TCP socket and the accepting of its connections on a libuv
 * loop, for the proxy's listeners and the HTTP servers alike. It accepts in batches, so
 * that a flood of connections does not starve the loop's other work. When the process
 * runs out of file descriptors, the callers waiting are refused at once (docs/configuration.md,
 * limits) rather than left in the backlog to time out: a descriptor held back for this (libuv's
 * "EMFILE trick") is let go for one accept, the caller is handed to on_refuse (or closed),
 * and the descriptor is taken back. Should even that fail (or the kernel be out of
 * memory) it pauses for a moment instead of spinning on the pending connection
 * (level-triggered polling would wake it again at once).
 *
 * Owns its socket, the descriptor held back and its two handles. The struct is embedded
 * by its user, which must keep it alive until acceptor_close's callback has run. */
#ifndef MTLSD_ACCEPTOR_H
#define MTLSD_ACCEPTOR_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "mtlsd/base/netaddr.h"

struct acceptor;

/* on_accept receives each accepted socket (non-blocking, close-on-exec), which it owns. */
typedef void (*acceptor_cb)(struct acceptor *a, int fd);

struct acceptor {
  int fd;         /* The listening socket; -1 when none. */
  int reserve_fd; /* Held back for refusing callers when out of descriptors; -1: none. */
  char where[NETADDR_HOSTPORT_MAX]; /* The address, for log lines. */
  uv_poll_t poll;
  uv_timer_t retry; /* Re-arms accepting after the process ran out of descriptors. */
  acceptor_cb on_accept;
  /* Receives each caller refused for want of descriptors, to count and close; NULL: it is
   * closed. Set by the user after acceptor_open. */
  acceptor_cb on_refuse;
  void (*on_closed)(struct acceptor *a);
  void *data; /* The user's. */
  int open_handles;
  bool started;
  bool paused;
  bool refusing; /* Out of descriptors since the last successful accept (logged once). */
};

/* acceptor_open binds and listens on |address| (with SO_REUSEPORT when |reuseport|, so
 * that several sockets share the address; an IPv6 address is IPv6 only), before any loop
 * runs, so that a bind error surfaces before serving. On failure it writes the reason
 * ("cannot listen on ADDR: ...") into |err| and returns a negative errno. */
int acceptor_open(struct acceptor *a, const struct hostport *address, bool reuseport, int backlog,
                  char *err, size_t err_len);

/* acceptor_start starts accepting on |loop|; 0 or a libuv error (the socket stays open:
 * close it with acceptor_close). */
int acceptor_start(struct acceptor *a, uv_loop_t *loop, acceptor_cb on_accept);

/* acceptor_close stops accepting and closes the socket; |on_closed| (may be NULL) runs
 * once the handles are closed (at once, from this call, when it was never started). */
void acceptor_close(struct acceptor *a, void (*on_closed)(struct acceptor *a));

#endif
