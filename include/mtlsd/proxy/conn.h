/* conn: one relayed connection, from accept to close (the README and docs/configuration.md): the
 * refusals before any work (limits, loop, no certificate), the TLS handshake on the mTLS
 * side, dialing the upstream, the PROXY protocol header, the relay, the deadlines, and
 * the access log line and metrics at the end.
 *
 * Outbound connections dial, then do the TLS client handshake; inbound ones do the TLS
 * server handshake, then dial the application. One timer per connection serves the
 * connect, handshake, idle and peer-expiry deadlines.
 *
 * Owns struct conn, which frees itself in its last handle's close callback. A
 * connection lives on its host's loop and tells its host when it starts and when it
 * closes (struct conn_host_ops), so the host (a worker) keeps the list of its
 * connections. */
#ifndef MTLSD_CONN_H
#define MTLSD_CONN_H

#include <stddef.h>

#include <uv.h>

#include "mtlsd/base/bufpool.h"
#include "mtlsd/base/list.h"
#include "mtlsd/net/stats.h"
#include "mtlsd/proxy/runtime.h"
#include "mtlsd/tls/tls.h"

struct conn;

/* A listener as its connections see it; owned by the host, one per host and listener. */
struct conn_listener {
  const struct listener_config *cfg;
  struct listener_load *load; /* Shared by every host's copy of this listener. */
  struct tls_peer_policy policy;
  struct listener_stats *stats; /* This host's block. */
  /* This host's share of limits.max_handshaking (set by the host, at least 1), and the
   * connections holding one, newest first, apart by whether their peer has sent a byte
   * yet: when all are taken, a new connection takes the slot of the oldest silent one,
   * or of the oldest if none is silent (docs/configuration.md). Per host, so no lock and no
   * other thread's connection is ever closed. The host initialises both lists. */
  unsigned handshake_slots;
  unsigned handshaking;
  struct list_node silent;
  struct list_node spoken;
};

struct conn_host_ops {
  /* opened: |c| exists and will report closed exactly once. */
  void (*opened)(void *arg, struct conn *c);
  /* closed: |c| has begun to close (its memory goes once its handles have closed, on
   * the same loop); it must not be closed again. */
  void (*closed)(void *arg, struct conn *c);
};

/* What the connections of one loop share; owned by the host (a worker). */
struct conn_host {
  uv_loop_t *loop;
  struct runtime *rt;
  struct tls_contexts *tls; /* The contexts new handshakes use; NULL before a valid set. */
  struct tls_session_cache *sessions;
  struct bufpool *pool;
  const struct conn_host_ops *ops;
  void *arg;
};

/* conn_host_refresh_tls takes the runtime's current TLS contexts into |host| when they
 * are of another generation (one atomic load when they are not). */
void conn_host_refresh_tls(struct conn_host *host);

/* conn_accept takes over the accepted socket |fd| of listener |l|; it always consumes
 * |fd| (closing it on any failure). */
void conn_accept(struct conn_host *host, struct conn_listener *l, int fd);

/* conn_refuse closes |fd|, a caller of |l| that the process has no descriptors left to
 * serve, counted as a connection refused at once (reason limit), as one over
 * max_connections is. */
void conn_refuse(struct conn_listener *l, int fd);

/* conn_close closes |c| at once with the access-log result |result|. */
void conn_close(struct conn *c, const char *result);

/* conn_link returns where |c|'s host links it into its list; conn_from_link is the
 * inverse. */
struct list_node *conn_link(struct conn *c);
struct conn *conn_from_link(struct list_node *link);

#endif
