/* dial: where a connection's upstream is and how to reach it: the original destination
 * of an intercepted socket, the loop check (docs/configuration.md), and struct dialer, which
 * turns a listener's upstream (an explicit HOST:PORT, forward_host, or the original
 * destination) into connecting sockets, one address after another.
 *
 * A dialer is embedded by its connection and owns the resolver's result list (released
 * by dialer_release); each socket dialer_next returns belongs to the caller. */
#ifndef MTLSD_DIAL_H
#define MTLSD_DIAL_H

#include <stdbool.h>
#include <sys/socket.h>

#include <uv.h>

#include "mtlsd/base/netaddr.h"
#include "mtlsd/config/config.h"
#include "mtlsd/net/stats.h"

/* dial_original_destination reads the address the intercepted connection |fd| was meant
 * for (iptables REDIRECT) into |out|; |local| is the address it was accepted on. */
bool dial_original_destination(int fd, const struct sockaddr_storage *local,
                               struct sockaddr_storage *out, socklen_t *out_len);

/* dial_is_loop tells whether the original destination |target| of a transparent
 * connection on a listener of |mode| is one of mtlsd's own ports (docs/configuration.md). */
bool dial_is_loop(const struct config *cfg, enum listener_mode mode,
                  const struct sockaddr_storage *target);

struct dialer;
typedef void (*dialer_resolved_cb)(struct dialer *d, int status);

struct dialer {
  /* A single address (an IP literal, or the original destination)... */
  struct sockaddr_storage target;
  socklen_t target_len;
  bool target_tried;
  /* ...or the resolver's list for a host name. */
  uv_getaddrinfo_t gai;
  bool gai_pending; /* The resolver's callback has not run yet. */
  struct addrinfo *addrs;
  const struct addrinfo *next_addr;
  dialer_resolved_cb on_resolved;

  char host[NETADDR_HOST_MAX];         /* The name to resolve, also for SNI; "" for an address. */
  uint16_t port;                       /* The port that goes with |host|. */
  char upstream[NETADDR_HOSTPORT_MAX]; /* What logs call the upstream. */
  enum upstream_failure failure;       /* Why the last attempt failed. */
};

enum dial_plan { DIAL_CONNECT, DIAL_RESOLVE, DIAL_UNREACHABLE };

/* dialer_plan chooses where a connection of listener |lc| goes: its upstream or
 * forward, or for a transparent one the original destination already in |d->target|
 * (on forward_host's address, when set). DIAL_CONNECT: call dialer_next;
 * DIAL_RESOLVE: call dialer_resolve first; DIAL_UNREACHABLE: there is nowhere to go. */
enum dial_plan dialer_plan(struct dialer *d, const struct listener_config *lc);

/* dialer_plan_hostport is dialer_plan for a given |hp|: an IP literal, or a name to
 * resolve. */
enum dial_plan dialer_plan_hostport(struct dialer *d, const struct hostport *hp);

/* dialer_resolve resolves the host chosen by dialer_plan on |loop|; |cb| runs once with
 * the resolver's status (also after uv_cancel, with UV_ECANCELED), unless this returns a
 * negative error. */
int dialer_resolve(struct dialer *d, uv_loop_t *loop, dialer_resolved_cb cb);

/* dialer_next starts a non-blocking connect to the next address and returns its socket,
 * or -1 when none is left (|d->failure| says why the last one failed). */
int dialer_next(struct dialer *d);

/* The outcome of a non-blocking connect. */
enum connect_outcome {
  CONNECT_FAILED, /* |d->failure| says why. */
  CONNECT_OK,
  /* Connected, and reset by the peer before anyone looked: what it sent first is still
   * there to read, but SO_ERROR, which told of the reset, has forgotten it, so the end of
   * those bytes must be taken as a reset by whoever reads them (transport.peer_reset). */
  CONNECT_OK_THEN_RESET,
};

/* dialer_connect_result classifies the outcome of the connect on |fd| (SO_ERROR); on
 * CONNECT_FAILED it records why in |d->failure|. */
enum connect_outcome dialer_connect_result(struct dialer *d, int fd);

/* dialer_release frees the resolver's list; the resolver must not be pending. */
void dialer_release(struct dialer *d);

#endif
