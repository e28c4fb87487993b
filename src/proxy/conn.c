/* conn: one relayed connection's state machine (see mtlsd/conn.h).
 *
 * Both sockets are non-blocking and watched with uv_poll, and the relay reads and writes
 * them itself through their transports: BoringSSL reads TLS records straight from the
 * socket and writes them straight to it, so no memory BIO copy sits between the kernel
 * and the cipher. */
#include "mtlsd/proxy/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mtlsd/base/log.h"
#include "mtlsd/base/netaddr.h"
#include "mtlsd/base/timefmt.h"
#include "mtlsd/net/dial.h"
#include "mtlsd/net/proxy_header.h"
#include "mtlsd/net/relay.h"
#include "mtlsd/net/transport.h"
#include "mtlsd/proxy/access_log.h"

_Static_assert((int)IO_WAIT_READ == (int)UV_READABLE && (int)IO_WAIT_WRITE == (int)UV_WRITABLE,
               "io_wait bits are libuv's poll events");

enum conn_state {
  CONN_DETECTING, /* Permissive inbound: waiting for the first byte to say TLS or not. */
  CONN_RESOLVING,
  CONN_CONNECTING,
  CONN_HANDSHAKING,
  CONN_RELAYING,
  CONN_CLOSING
};

/* The first byte of every TLS connection: a handshake record (RFC 8446 section 5.1). */
enum { TLS_RECORD_HANDSHAKE = 0x16 };

/* One socket of the connection and its watcher. */
struct side {
  uv_poll_t poll;
  bool poll_open;
  int events;           /* What poll is started with now. */
  struct tls_conn *tls; /* NULL on the plaintext side. */
  struct transport xprt;
};

struct conn {
  struct list_node link; /* In the host's list, from opened to closed. */
  struct conn_host *host;
  struct conn_listener *l;
  struct list_node handshake_link; /* In l->silent or l->spoken while |handshaking|. */
  enum conn_state state;
  struct side down; /* The accepted socket. */
  struct side up;   /* The socket mtlsd opened. */
  struct side *tls_side;
  struct relay relay;
  struct dialer dial;
  uv_timer_t timer;
  int open_handles;

  struct sockaddr_storage peer;  /* The downstream's address. */
  struct sockaddr_storage local; /* The address the downstream connected to. */
  uint64_t start_ms;
  uint64_t handshake_start_ns; /* Handshakes take well under the loop clock's 1 ms tick. */
  uint64_t last_io_ms;
  int64_t peer_expiry_ms; /* Loop time at which the peer's certificate expires. */
  struct tls_conn_info info;
  bool have_info;
  bool handshaking;    /* Holds one of its listener's limits.max_handshaking slots. */
  bool awaiting_hello; /* Strict inbound: the peer has not sent a byte yet. */
  uint64_t handshake_deadline_ms;
  bool plaintext; /* A permissive listener took it for plaintext: no TLS at all. */
  const char *result;
};

static void start_connect(struct conn *c);
static void start_handshake(struct conn *c);
static void start_plaintext(struct conn *c);
static void start_relay(struct conn *c);
static void handshake_step(struct conn *c);
static bool detect(struct conn *c);
static void on_poll(uv_poll_t *handle, int status, int events);

struct list_node *conn_link(struct conn *c) {
  return &c->link;
}

struct conn *conn_from_link(struct list_node *link) {
  return LIST_ENTRY(link, struct conn, link);
}

static uint64_t now_ms(const struct conn *c) {
  return uv_now(c->host->loop);
}

static const struct config *cfg_of(const struct conn *c) {
  return c->host->rt->cfg;
}

/* ---- Handles and closing ---- */

static void maybe_free(struct conn *c) {
  if (c->open_handles > 0 || c->dial.gai_pending) {
    return;
  }
  dialer_release(&c->dial);
  free(c);
}

static void on_handle_closed(uv_handle_t *handle) {
  struct conn *c = handle->data;
  c->open_handles--;
  maybe_free(c);
}

static void side_want(struct conn *c, struct side *s, int events) {
  if (!s->poll_open || s->events == events) {
    return;
  }
  s->events = events;
  if (events == 0) {
    uv_poll_stop(&s->poll);
  } else if (uv_poll_start(&s->poll, events, on_poll) != 0) {
    conn_close(c, "error");
  }
}

static int side_open_poll(struct conn *c, struct side *s, int fd) {
  s->xprt.fd = fd;
  s->events = 0;
  int r = uv_poll_init(c->host->loop, &s->poll, fd);
  if (r != 0) {
    return r;
  }
  s->poll.data = c;
  s->poll_open = true;
  c->open_handles++;
  return 0;
}

static void side_close(struct side *s, uv_close_cb cb) {
  if (s->poll_open) {
    s->poll_open = false;
    /* uv_close stops the watcher at once, so the descriptor may be closed right away. */
    uv_close((uv_handle_t *)&s->poll, cb);
  }
  tls_conn_free(s->tls);
  s->tls = NULL;
  if (s->xprt.fd >= 0) {
    close(s->xprt.fd);
    s->xprt.fd = -1;
  }
}

static void format_addr(char *out, size_t cap, const struct sockaddr_storage *ss) {
  char buf[NETADDR_STR_MAX];
  snprintf(out, cap, "%s",
           ss->ss_family == AF_UNSPEC ? "-" : netaddr_format(buf, (const struct sockaddr *)ss));
}

static void write_access_log(struct conn *c) {
  if (!log_access_enabled()) {
    return;
  }
  char when[40], down[NETADDR_STR_MAX + 8];
  timefmt_now(when, sizeof(when));
  format_addr(down, sizeof(down), &c->peer);
  struct access_record r = {
      .time = when,
      .listener = c->l->cfg->name,
      .downstream = down,
      .upstream = c->dial.upstream,
      .identity = c->plaintext   ? "-"
                  : c->have_info ? c->info.peer_identity
                                 : "",
      .tls_version = c->have_info ? c->info.version : "",
      .cipher = c->have_info ? c->info.cipher : "",
      .resumed = c->have_info && c->info.resumed,
      .bytes_from_downstream = c->relay.d2u.bytes,
      .bytes_from_upstream = c->relay.u2d.bytes,
      .duration_ms = now_ms(c) - c->start_ms,
      .result = c->result,
  };
  size_t len;
  char *line = access_log_format(&r, log_current_format() == LOG_FORMAT_JSON, &len);
  if (line == NULL) {
    log_write(LOG_WARN, "conn", "%s: out of memory for an access log line", c->l->cfg->name);
    return;
  }
  log_access_write(line, len);
  free(line);
}

/* Gives back the connection's limits.max_handshaking slot, once. */
static void release_handshake_slot(struct conn *c) {
  if (c->handshaking) {
    c->handshaking = false;
    list_remove(&c->handshake_link);
    c->l->handshaking--;
  }
}

/* Gives |c| one of its listener's handshake slots; when this host's share is taken, the
 * oldest connection still handshaking is closed for it, a silent one first (docs/configuration.md):
 * a flood of idle or slow handshakes then only ever delays itself, and a peer whose ClientHello has
 * come is not closed for connections that have sent nothing. Inbound connections start silent; the
 * pod's own outbound ones have spoken. */
static void take_handshake_slot(struct conn *c) {
  struct conn_listener *l = c->l;
  struct list_node *victims = !list_empty(&l->silent) ? &l->silent : &l->spoken;
  if (l->handshaking >= l->handshake_slots && !list_empty(victims)) {
    struct conn *oldest = LIST_ENTRY(victims->prev, struct conn, handshake_link);
    if (log_enabled(LOG_DEBUG)) {
      char peer[NETADDR_STR_MAX];
      log_write(LOG_DEBUG, "conn", "%s: handshake slots full: closing the oldest, from %s",
                l->cfg->name, netaddr_format(peer, (const struct sockaddr *)&oldest->peer));
    }
    stats_add(l->stats, LC_REFUSED_FIRST + REFUSED_LIMIT, 1);
    conn_close(oldest, refusal_name(REFUSED_LIMIT));
  }
  list_insert_head(l->cfg->mode == LISTENER_INBOUND ? &l->silent : &l->spoken, &c->handshake_link);
  l->handshaking++;
  c->handshaking = true;
}

/* The peer of an inbound connection has sent its first byte. */
static void handshake_spoke(struct conn *c) {
  if (c->handshaking) {
    list_remove(&c->handshake_link);
    list_insert_head(&c->l->spoken, &c->handshake_link);
  }
}

void conn_close(struct conn *c, const char *result) {
  if (c->state == CONN_CLOSING) {
    return;
  }
  bool established = c->state == CONN_RELAYING;
  c->state = CONN_CLOSING;
  c->result = result;
  write_access_log(c);
  if (log_enabled(LOG_DEBUG)) {
    char down[NETADDR_STR_MAX];
    log_write(LOG_DEBUG, "conn", "%s: %s -> %s closed: %s", c->l->cfg->name,
              netaddr_format(down, (const struct sockaddr *)&c->peer), c->dial.upstream, result);
  }

  struct listener_stats *stats = c->l->stats;
  stats_add(stats, LC_CONNECTIONS_ACTIVE, (uint64_t)-1);
  if (established) {
    stats_observe(stats, HIST_CONNECTION, (double)(now_ms(c) - c->start_ms) / 1000.0);
  }
  atomic_fetch_sub_explicit(&c->host->rt->active_connections, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&c->l->load->active, 1, memory_order_relaxed);
  release_handshake_slot(c);

  relay_release(&c->relay);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  side_close(&c->down, on_handle_closed);
  side_close(&c->up, on_handle_closed);
  if (c->dial.gai_pending) {
    /* The callback still runs (with UV_ECANCELED, or with a result if it was too late to
     * cancel) and frees the connection then. */
    uv_cancel((uv_req_t *)&c->dial.gai);
  }
  c->host->ops->closed(c->host->arg, c);
  maybe_free(c);
}

/* ---- Timer: one deadline per phase ---- */

static void on_timer(uv_timer_t *timer);

static void arm_timer(struct conn *c, uint64_t deadline_ms) {
  uint64_t now = now_ms(c);
  uv_timer_start(&c->timer, on_timer, deadline_ms > now ? deadline_ms - now : 0, 0);
}

/* In the relay phase the timer fires at the earlier of the idle deadline and the peer
 * certificate's expiry; activity only moves last_io_ms, so a busy connection costs no
 * timer operations per read. */
static void arm_relay_timer(struct conn *c) {
  const struct config *cfg = cfg_of(c);
  uint64_t deadline = c->last_io_ms + cfg->limits.idle_timeout;
  if (cfg->tls.close_on_peer_expiry && c->peer_expiry_ms >= 0 &&
      (uint64_t)c->peer_expiry_ms < deadline) {
    deadline = (uint64_t)c->peer_expiry_ms;
  }
  arm_timer(c, deadline);
}

static void upstream_failed(struct conn *c, enum upstream_failure failure) {
  stats_add(c->l->stats, LC_UPSTREAM_FAILURE_FIRST + failure, 1);
  log_write(LOG_WARN, "conn", "%s: upstream %s: %s", c->l->cfg->name, c->dial.upstream,
            upstream_failure_name(failure));
  conn_close(c, upstream_failure_name(failure));
}

static void handshake_failed(struct conn *c, enum tls_failure failure, const char *detail) {
  if (c->tls_side != NULL && c->tls_side->tls != NULL) {
    c->info = (struct tls_conn_info){
        .peer_identity = tls_conn_peer_identity(c->tls_side->tls),
        .version = "",
        .cipher = "",
        .peer_root = "",
        .peer_not_after = INT64_MAX,
    };
    c->have_info = true;
  }
  stats_add(c->l->stats, LC_HANDSHAKES_FAILED, 1);
  stats_add(c->l->stats, LC_HANDSHAKE_FAILURE_FIRST + failure, 1);
  char peer[NETADDR_STR_MAX];
  log_write(LOG_INFO, "conn", "%s: handshake with %s failed (%s): %s", c->l->cfg->name,
            c->l->cfg->mode == LISTENER_INBOUND ? netaddr_format(peer, (struct sockaddr *)&c->peer)
                                                : c->dial.upstream,
            tls_failure_name(failure), detail);
  conn_close(c, tls_failure_name(failure));
}

/* Whether the downstream socket holds a byte (or its end) that the loop has not read. */
static bool peer_has_spoken(const struct conn *c) {
  uint8_t first;
  return recv(c->down.xprt.fd, &first, 1, MSG_PEEK | MSG_DONTWAIT) >= 0;
}

static void on_timer(uv_timer_t *timer) {
  struct conn *c = timer->data;
  switch (c->state) {
    case CONN_DETECTING:
      /* A loop that was held up runs its timers before it looks at the sockets: a first
       * byte that came in time is read before the silence is judged. */
      if (!detect(c)) {
        /* Nothing came: a server-first protocol, which speaks plaintext. */
        start_plaintext(c);
      }
      return;
    case CONN_RESOLVING:
    case CONN_CONNECTING:
      upstream_failed(c, UPSTREAM_FAIL_TIMEOUT);
      return;
    case CONN_HANDSHAKING:
      if (c->awaiting_hello && peer_has_spoken(c)) {
        /* As for detection: a ClientHello that came in time is read, not judged late. */
        handshake_step(c);
        return;
      }
      handshake_failed(
          c, TLS_FAIL_TIMEOUT,
          c->awaiting_hello ? "no ClientHello within limits.hello_timeout" : "handshake timed out");
      return;
    case CONN_RELAYING: {
      uint64_t now = now_ms(c);
      const struct config *cfg = cfg_of(c);
      if (cfg->tls.close_on_peer_expiry && c->peer_expiry_ms >= 0 &&
          now >= (uint64_t)c->peer_expiry_ms) {
        log_write(LOG_INFO, "conn", "%s: closing connection of %s: its certificate expired",
                  c->l->cfg->name, c->have_info ? c->info.peer_identity : "?");
        conn_close(c, "peer_expired");
      } else if (now >= c->last_io_ms + cfg->limits.idle_timeout) {
        conn_close(c, "idle_timeout");
      } else {
        arm_relay_timer(c);
      }
      return;
    }
    case CONN_CLOSING:
      return;
  }
}

/* ---- Relay ---- */

static void relay_update(struct conn *c) {
  if (relay_finished(&c->relay)) {
    conn_close(c, "ok");
    return;
  }
  side_want(c, &c->down, relay_wants(&c->relay, &c->down.xprt));
  side_want(c, &c->up, relay_wants(&c->relay, &c->up.xprt));
}

/* Pumps |f|; returns false when that closed the connection. */
static bool pump(struct conn *c, struct relay_flow *f) {
  uint64_t before = f->bytes;
  bool ok = relay_pump(&c->relay, f);
  if (f->bytes != before) {
    c->last_io_ms = now_ms(c);
  }
  if (!ok) {
    conn_close(c, relay_error(f));
  }
  return ok;
}

static void relay_event(struct conn *c, struct side *s, int events) {
  struct relay_flow *flows[2] = {&c->relay.d2u, &c->relay.u2d};
  for (int i = 0; i < 2; i++) {
    if (relay_flow_waits(flows[i], &s->xprt, events) && !pump(c, flows[i])) {
      return;
    }
  }
  relay_update(c);
}

/* Sends a PROXY protocol v2 header as the first bytes to the app. */
static bool queue_proxy_header(struct conn *c) {
  uint8_t *buf = bufpool_get(c->host->pool);
  if (buf == NULL) {
    return false;
  }
  size_t len =
      proxy_header_encode(buf, &c->peer, &c->local, c->have_info ? c->info.peer_identity : NULL);
  relay_queue(&c->relay, &c->relay.d2u, buf, (uint32_t)len);
  return true;
}

static void start_relay(struct conn *c) {
  c->state = CONN_RELAYING;
  c->last_io_ms = now_ms(c);
  relay_init(&c->relay, &c->down.xprt, &c->up.xprt, c->host->pool, c->l->stats);
  if (c->l->cfg->mode == LISTENER_INBOUND && c->l->cfg->proxy_protocol && !queue_proxy_header(c)) {
    conn_close(c, "error");
    return;
  }
  arm_relay_timer(c);
  if (pump(c, &c->relay.d2u) && pump(c, &c->relay.u2d)) {
    relay_update(c);
  }
}

/* ---- Handshake ---- */

static void handshake_done(struct conn *c) {
  struct side *s = c->tls_side;
  struct listener_stats *stats = c->l->stats;
  release_handshake_slot(c);
  tls_conn_get_info(s->tls, &c->info);
  c->have_info = true;
  transport_init_tls(&s->xprt, s->xprt.fd, s->tls);
  stats_add(stats, LC_HANDSHAKES_OK, 1);
  stats_observe(stats, HIST_HANDSHAKE, (double)(uv_hrtime() - c->handshake_start_ns) / 1e9);
  if (c->info.resumed) {
    stats_add(stats, LC_RESUMPTIONS, 1);
  } else if (c->info.peer_root[0] != '\0') {
    stats_count_root(stats, c->info.peer_root);
  }
  c->peer_expiry_ms = -1;
  if (c->info.peer_not_after != INT64_MAX) {
    int64_t left_ms = (c->info.peer_not_after - (int64_t)time(NULL)) * 1000;
    c->peer_expiry_ms = (int64_t)now_ms(c) + (left_ms > 0 ? left_ms : 0);
  }
  side_want(c, s, 0);
  if (c->l->cfg->mode == LISTENER_INBOUND) {
    start_connect(c);
  } else {
    start_relay(c);
  }
}

static void handshake_step(struct conn *c) {
  int r = tls_conn_handshake(c->tls_side->tls);
  if (c->awaiting_hello && tls_conn_peer_spoke(c->tls_side->tls)) {
    /* The ClientHello has begun: the rest of handshake_timeout is the peer's. */
    c->awaiting_hello = false;
    handshake_spoke(c);
    arm_timer(c, c->handshake_deadline_ms);
  }
  if (r == IO_OK) {
    handshake_done(c);
  } else if (r == IO_WANT_READ || r == IO_WANT_WRITE) {
    side_want(c, c->tls_side, io_wait_for(r));
  } else {
    const char *detail;
    enum tls_failure failure = tls_conn_failure(c->tls_side->tls, &detail);
    handshake_failed(c, failure, detail);
  }
}

static void start_handshake(struct conn *c) {
  struct conn_host *host = c->host;
  struct conn_listener *l = c->l;
  const struct config *cfg = cfg_of(c);
  c->state = CONN_HANDSHAKING;
  c->handshake_start_ns = uv_hrtime();
  c->handshake_deadline_ms = now_ms(c) + cfg->limits.handshake_timeout;
  /* A strict listener's caller must start its ClientHello promptly: an idle connection
   * holds a handshake slot for limits.hello_timeout at most. A permissive listener has
   * seen the first byte already. */
  c->awaiting_hello = l->cfg->mode == LISTENER_INBOUND && !l->cfg->permissive &&
                      cfg->limits.hello_timeout < cfg->limits.handshake_timeout;
  arm_timer(c,
            c->awaiting_hello ? now_ms(c) + cfg->limits.hello_timeout : c->handshake_deadline_ms);
  if (l->cfg->mode == LISTENER_INBOUND) {
    c->tls_side = &c->down;
    c->down.tls = tls_conn_new_server(host->tls, c->down.xprt.fd, &l->policy);
  } else {
    c->tls_side = &c->up;
    char key[NETADDR_HOSTPORT_MAX + 80];
    snprintf(key, sizeof(key), "%s|%s", l->cfg->name, c->dial.upstream);
    c->up.tls =
        tls_conn_new_client(host->tls, c->up.xprt.fd, &l->policy,
                            c->dial.host[0] != '\0' ? c->dial.host : NULL, host->sessions, key);
  }
  if (c->tls_side->tls == NULL) {
    conn_close(c, "error");
    return;
  }
  handshake_step(c);
}

/* ---- Upstream connection ---- */

static void connected(struct conn *c) {
  side_want(c, &c->up, 0);
  if (c->l->cfg->mode == LISTENER_OUTBOUND) {
    start_handshake(c);
  } else {
    start_relay(c);
  }
}

static void try_next_address(struct conn *c) {
  int fd = dialer_next(&c->dial);
  if (fd < 0) {
    upstream_failed(c, c->dial.failure);
    return;
  }
  if (side_open_poll(c, &c->up, fd) != 0) {
    conn_close(c, "error");
    return;
  }
  side_want(c, &c->up, IO_WAIT_WRITE);
}

static void on_attempt_closed(uv_handle_t *handle) {
  struct conn *c = handle->data;
  c->open_handles--;
  if (c->state == CONN_CONNECTING) {
    try_next_address(c);
  } else {
    maybe_free(c);
  }
}

static void connect_check(struct conn *c) {
  enum connect_outcome outcome = dialer_connect_result(&c->dial, c->up.xprt.fd);
  if (outcome != CONNECT_FAILED) {
    c->up.xprt.peer_reset = outcome == CONNECT_OK_THEN_RESET;
    connected(c);
    return;
  }
  /* The handle must finish closing before the next attempt can reuse it. */
  side_close(&c->up, on_attempt_closed);
}

static void on_resolved(struct dialer *d, int status) {
  struct conn *c = LIST_ENTRY(d, struct conn, dial);
  if (c->state == CONN_CLOSING) {
    maybe_free(c);
    return;
  }
  if (status != 0) {
    LOG_DEBUGF("conn", "%s: resolving %s: %s", c->l->cfg->name, d->upstream, uv_strerror(status));
    upstream_failed(c, UPSTREAM_FAIL_DNS);
    return;
  }
  c->state = CONN_CONNECTING;
  try_next_address(c);
}

/* Finds the destination and starts connecting to it within connect_timeout. */
static void start_connect(struct conn *c) {
  arm_timer(c, now_ms(c) + cfg_of(c)->limits.connect_timeout);
  c->state = CONN_CONNECTING;
  switch (dialer_plan(&c->dial, c->l->cfg)) {
    case DIAL_CONNECT:
      try_next_address(c);
      return;
    case DIAL_UNREACHABLE:
      upstream_failed(c, UPSTREAM_FAIL_UNREACHABLE);
      return;
    case DIAL_RESOLVE:
      c->state = CONN_RESOLVING;
      if (dialer_resolve(&c->dial, c->host->loop, on_resolved) != 0) {
        upstream_failed(c, UPSTREAM_FAIL_DNS);
      }
      return;
  }
}

/* ---- Permissive inbound ---- */

/* Relays the connection as plaintext, with no identity (docs/configuration.md, permissive). */
static void start_plaintext(struct conn *c) {
  c->plaintext = true;
  release_handshake_slot(c);
  stats_add(c->l->stats, LC_PLAINTEXT, 1);
  if (log_enabled(LOG_DEBUG)) {
    char peer[NETADDR_STR_MAX];
    log_write(LOG_DEBUG, "conn", "%s: %s speaks plaintext: relayed without TLS", c->l->cfg->name,
              netaddr_format(peer, (const struct sockaddr *)&c->peer));
  }
  side_want(c, &c->down, 0);
  start_connect(c);
}

/* Looks at the first byte without taking it: a TLS handshake record goes the mTLS way,
 * anything else (or the end of the stream) is plaintext. Returns false while nothing has
 * come. */
static bool detect(struct conn *c) {
  uint8_t first;
  ssize_t n = recv(c->down.xprt.fd, &first, 1, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    return false;
  }
  if (n < 0) {
    conn_close(c, "reset");
  } else if (n == 1 && first == TLS_RECORD_HANDSHAKE) {
    handshake_spoke(c);
    side_want(c, &c->down, 0);
    if (c->host->tls == NULL) {
      stats_add(c->l->stats, LC_REFUSED_FIRST + REFUSED_NO_CERT, 1);
      conn_close(c, refusal_name(REFUSED_NO_CERT));
      return true;
    }
    start_handshake(c);
  } else {
    start_plaintext(c);
  }
  return true;
}

static void start_detecting(struct conn *c) {
  c->state = CONN_DETECTING;
  arm_timer(c, now_ms(c) + cfg_of(c)->limits.detect_timeout);
  side_want(c, &c->down, IO_WAIT_READ);
}

/* ---- Events ---- */

static void on_poll(uv_poll_t *handle, int status, int events) {
  struct conn *c = handle->data;
  struct side *s = handle == &c->down.poll ? &c->down : &c->up;
  if (status < 0) {
    /* An error on the socket (e.g. a reset): let the next read or write report it, as
     * a failed connect must be classified from SO_ERROR. libuv has stopped the handle,
     * so what the connection waits for next must be asked for again: data that came
     * before a reset is read first, and the wait after it would otherwise never end. */
    events = s->events;
    s->events = 0;
  }
  switch (c->state) {
    case CONN_DETECTING:
      detect(c);
      return;
    case CONN_CONNECTING:
      if (s == &c->up) {
        connect_check(c);
      }
      return;
    case CONN_HANDSHAKING:
      if (s == c->tls_side) {
        handshake_step(c);
      }
      return;
    case CONN_RELAYING:
      relay_event(c, s, events);
      return;
    case CONN_RESOLVING:
    case CONN_CLOSING:
      return;
  }
}

/* ---- Accept ---- */

static void refuse(struct conn_listener *l, int fd, enum refusal why) {
  stats_add(l->stats, LC_REFUSED_FIRST + why, 1);
  close(fd);
}

/* Takes the slots a new connection on |l| needs: one of the runtime's max_connections (as
 * many as limits.max_connections and the descriptor limit allow) and one of the
 * listener's max_connections. Takes nothing and returns false when either is used up. */
static bool take_slots(struct runtime *rt, struct conn_listener *l) {
  unsigned active = atomic_fetch_add_explicit(&rt->active_connections, 1, memory_order_relaxed);
  if (active >= rt->max_connections) {
    goto undo_global;
  }
  unsigned mine = atomic_fetch_add_explicit(&l->load->active, 1, memory_order_relaxed);
  if (l->cfg->max_connections != 0 && mine >= l->cfg->max_connections) {
    goto undo_listener;
  }
  return true;
undo_listener:
  atomic_fetch_sub_explicit(&l->load->active, 1, memory_order_relaxed);
undo_global:
  atomic_fetch_sub_explicit(&rt->active_connections, 1, memory_order_relaxed);
  return false;
}

static void give_slots(struct runtime *rt, struct conn_listener *l) {
  atomic_fetch_sub_explicit(&l->load->active, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&rt->active_connections, 1, memory_order_relaxed);
}

/* Reads the original destination into the dialer, and records for /ready whether that
 * works at all. */
static bool read_original_destination(struct conn *c) {
  bool ok =
      dial_original_destination(c->down.xprt.fd, &c->local, &c->dial.target, &c->dial.target_len);
  /* Written only on a change: a store per accept would bounce the line between cores. */
  _Atomic int *broken = &c->host->rt->original_dst_broken;
  if (atomic_load_explicit(broken, memory_order_relaxed) != !ok) {
    atomic_store_explicit(broken, !ok, memory_order_relaxed);
  }
  return ok;
}

/* Refuses a transparent connection that has no original destination or loops back into
 * mtlsd; returns whether it may go on. */
static bool check_destination(struct conn *c) {
  struct conn_listener *l = c->l;
  if (!read_original_destination(c)) {
    log_write(LOG_WARN, "conn", "%s: cannot read the original destination: %s", l->cfg->name,
              strerror(errno));
    stats_add(l->stats, LC_REFUSED_FIRST + REFUSED_NO_DESTINATION, 1);
    conn_close(c, "no_destination");
    return false;
  }
  if (dial_is_loop(cfg_of(c), l->cfg->mode, &c->dial.target)) {
    char target[NETADDR_STR_MAX];
    log_write(LOG_INFO, "conn", "%s: refused a connection to %s, a port of mtlsd itself",
              l->cfg->name, netaddr_format(target, (const struct sockaddr *)&c->dial.target));
    stats_add(l->stats, LC_REFUSED_FIRST + REFUSED_LOOP, 1);
    conn_close(c, "loop");
    return false;
  }
  return true;
}

void conn_refuse(struct conn_listener *l, int fd) {
  stats_add(l->stats, LC_CONNECTIONS_TOTAL, 1);
  refuse(l, fd, REFUSED_LIMIT);
}

void conn_host_refresh_tls(struct conn_host *host) {
  uint64_t have = host->tls != NULL ? tls_contexts_generation(host->tls) : 0;
  if (have != runtime_tls_generation(host->rt)) {
    struct tls_contexts *fresh = runtime_tls_acquire(host->rt);
    tls_contexts_free(host->tls);
    host->tls = fresh;
  }
}

void conn_accept(struct conn_host *host, struct conn_listener *l, int fd) {
  struct runtime *rt = host->rt;
  stats_add(l->stats, LC_CONNECTIONS_TOTAL, 1);
  /* The set published last, even when this worker's wakeup has not run yet: once a
   * reload is logged, every new handshake uses the new set. */
  conn_host_refresh_tls(host);
  if (!take_slots(rt, l)) {
    refuse(l, fd, REFUSED_LIMIT);
    return;
  }
  /* Without certificates nothing can be mTLS; a permissive listener still relays its
   * plaintext callers, and refuses the TLS ones once it has seen they are. */
  if (host->tls == NULL && !l->cfg->permissive) {
    give_slots(rt, l);
    refuse(l, fd, REFUSED_NO_CERT);
    return;
  }
  struct conn *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    give_slots(rt, l);
    close(fd);
    return;
  }
  c->host = host;
  c->l = l;
  c->down.xprt.fd = -1;
  c->up.xprt.fd = -1;
  c->start_ms = uv_now(host->loop);
  c->peer_expiry_ms = -1;
  c->result = "ok";
  snprintf(c->dial.upstream, sizeof(c->dial.upstream), "-");
  socklen_t len = sizeof(c->peer);
  getpeername(fd, (struct sockaddr *)&c->peer, &len);
  len = sizeof(c->local);
  getsockname(fd, (struct sockaddr *)&c->local, &len);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  transport_init_plain(&c->down.xprt, fd);
  transport_init_plain(&c->up.xprt, -1);

  uv_timer_init(host->loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 1;
  list_init(&c->link);
  list_init(&c->handshake_link);
  host->ops->opened(host->arg, c);
  take_handshake_slot(c);
  stats_add(l->stats, LC_CONNECTIONS_ACTIVE, 1);
  c->state = CONN_CONNECTING;

  if (side_open_poll(c, &c->down, fd) != 0) {
    conn_close(c, "error");
    return;
  }
  if (l->cfg->transparent && !check_destination(c)) {
    return;
  }
  if (l->cfg->mode == LISTENER_OUTBOUND) {
    start_connect(c);
  } else if (l->cfg->permissive) {
    start_detecting(c);
  } else {
    start_handshake(c);
  }
}
