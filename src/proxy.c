/* proxy: one relayed connection (see mtlsd/proxy.h).
 *
 * Both sockets are non-blocking and watched with uv_poll, and the relay reads and writes
 * them itself: BoringSSL reads TLS records straight from the socket and writes them
 * straight to it, so no memory BIO copy sits between the kernel and the cipher. Each
 * direction is a "flow" with at most one buffer in flight, taken from the worker's pool
 * only while bytes are in it; a flow whose destination is full stops reading its source
 * (backpressure), and an end of stream on a source becomes a shutdown of the destination
 * (half-close) while the other flow goes on.
 *
 * States: outbound connections resolve, connect, then do the TLS client handshake;
 * inbound ones do the TLS server handshake, then connect to the application. One timer
 * per connection serves the connect, handshake, idle and peer-expiry deadlines. */
#include "mtlsd/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "mtlsd/identity.h"
#include "mtlsd/log.h"
#include "mtlsd/netaddr.h"
#include "mtlsd/server.h"
#include "mtlsd/stats.h"
#include "mtlsd/textbuf.h"
#include "mtlsd/tls.h"
#include "mtlsd/worker.h"

/* From linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h, whose headers clash
 * with glibc's. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

/* The largest plaintext a TLS record carries. */
enum { TLS_RECORD_MAX = 16384 };

enum conn_state { CONN_RESOLVING, CONN_CONNECTING, CONN_HANDSHAKING, CONN_RELAYING, CONN_CLOSING };

struct side {
  int fd;
  uv_poll_t poll;
  bool poll_open;
  int events;           /* What poll is started with now. */
  struct tls_conn *tls; /* NULL on the plaintext side. */
};

/* Bytes moving from |src| to |dst|. */
struct flow {
  struct side *src;
  struct side *dst;
  uint8_t *buf;
  uint32_t off;
  uint32_t len;
  bool src_eof;    /* The source's stream ended. */
  bool src_failed; /* A gathering read failed: the connection ends once the data is out. */
  int src_waits;   /* What the source is known to wait for, learnt while gathering. */
  bool done;       /* ...and the end was passed on to the destination. */
  int want_src;    /* Poll events the flow waits for on src, or 0. */
  int want_dst;    /* Poll events the flow waits for on dst, or 0. */
  uint64_t bytes;
  enum listener_counter rx_counter;
  enum listener_counter tx_counter;
};

struct conn {
  struct conn *prev;
  struct conn *next;
  struct worker *w;
  struct worker_listener *l;
  struct listener_stats *stats;
  enum conn_state state;
  struct side down; /* The accepted socket. */
  struct side up;   /* The socket mtlsd opened. */
  struct side *tls_side;
  struct flow d2u;
  struct flow u2d;
  uv_timer_t timer;
  int open_handles;

  /* Where the upstream is: a resolved list, or a single address. */
  bool gai_pending;
  uv_getaddrinfo_t gai;
  struct addrinfo *addrs;
  const struct addrinfo *next_addr;
  struct sockaddr_storage target;
  socklen_t target_len;
  bool target_tried;
  char target_host[NETADDR_HOST_MAX]; /* For SNI, when it is a name. */
  char upstream_str[NETADDR_HOST_MAX + 8];
  enum upstream_failure connect_failure;

  struct sockaddr_storage peer;  /* The downstream's address. */
  struct sockaddr_storage local; /* The address the downstream connected to. */
  uint64_t start_ms;
  uint64_t phase_start_ms;
  uint64_t handshake_start_ns; /* Handshakes take well under the loop clock's 1 ms tick. */
  uint64_t last_io_ms;
  int64_t peer_expiry_ms; /* Loop time at which the peer's certificate expires. */
  struct tls_conn_info info;
  bool have_info;
  bool handshaking; /* Holds one of its listener's limits.max_handshaking slots. */
  const char *result;
};

static void conn_close(struct conn *c, const char *result);
static void start_connect(struct conn *c);
static void start_handshake(struct conn *c);
static void start_relay(struct conn *c);
static void on_poll(uv_poll_t *handle, int status, int events);

static uint64_t now_ms(const struct conn *c) {
  return uv_now(&c->w->loop);
}

/* ---- Handles and closing ---- */

static void maybe_free(struct conn *c) {
  if (c->open_handles > 0 || c->gai_pending) {
    return;
  }
  struct worker *w = c->w;
  if (c->addrs != NULL) {
    uv_freeaddrinfo(c->addrs);
  }
  free(c);
  worker_conn_closed(w);
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
  s->fd = fd;
  s->events = 0;
  int r = uv_poll_init(&c->w->loop, &s->poll, fd);
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
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
}

static void flow_release(struct conn *c, struct flow *f) {
  if (f->buf != NULL) {
    worker_buffer_put(c->w, f->buf);
    f->buf = NULL;
  }
  f->len = 0;
  f->off = 0;
}

static void format_addr(char *out, size_t cap, const struct sockaddr_storage *ss) {
  char buf[NETADDR_STR_MAX];
  if (ss->ss_family == AF_UNSPEC) {
    snprintf(out, cap, "-");
  } else {
    snprintf(out, cap, "%s", netaddr_format(buf, (const struct sockaddr *)ss));
  }
}

/* Appends one access-log field: a JSON member, or a text "key=value" token. Values are
 * escaped in both forms (identities are validated, but addresses and reasons need not
 * be trusted either), so that no value can end a line or forge a field. */
static void append_field(struct textbuf *line, bool json, const char *key, const char *value,
                         bool quote) {
  if (json) {
    textbuf_printf(line, "%s\"%s\":%s", line->len > 1 ? "," : "", key, quote ? "\"" : "");
    log_escape_json(line, value);
    if (quote) {
      textbuf_str(line, "\"");
    }
    return;
  }
  textbuf_printf(line, "%s%s=", line->len > 0 ? " " : "", key);
  if (value[0] == '\0') {
    textbuf_str(line, "-");
  } else {
    log_escape_text(line, value, false);
  }
}

/* Writes the access-log line of |c|. The line grows as needed, so a 2048-byte identity
 * never pushes the result, the byte counts or the duration off its end. */
static void write_access_log(struct conn *c) {
  if (!log_access_enabled()) {
    return;
  }
  bool json = log_current_format() == LOG_FORMAT_JSON;
  struct textbuf line = {0};
  if (json) {
    textbuf_str(&line, "{");
  }
  char when[40];
  log_time_now(when, sizeof(when));

  char down[NETADDR_STR_MAX + 8], rx[24], tx[24], dur[24];
  format_addr(down, sizeof(down), &c->peer);
  snprintf(rx, sizeof(rx), "%llu", (unsigned long long)c->d2u.bytes);
  snprintf(tx, sizeof(tx), "%llu", (unsigned long long)c->u2d.bytes);
  snprintf(dur, sizeof(dur), "%.3f", (double)(now_ms(c) - c->start_ms) / 1000.0);

  append_field(&line, json, "time", when, true);
  append_field(&line, json, "listener", c->l->cfg->name, true);
  append_field(&line, json, "downstream", down, true);
  append_field(&line, json, "upstream", c->upstream_str, true);
  append_field(&line, json, "identity", c->have_info ? c->info.peer_identity : "", true);
  append_field(&line, json, "tls_version", c->have_info ? c->info.version : "", true);
  append_field(&line, json, "cipher", c->have_info ? c->info.cipher : "", true);
  append_field(&line, json, "resumed", c->have_info && c->info.resumed ? "true" : "false", false);
  append_field(&line, json, "bytes_from_downstream", rx, false);
  append_field(&line, json, "bytes_from_upstream", tx, false);
  append_field(&line, json, "duration_s", dur, false);
  append_field(&line, json, "result", c->result, true);
  textbuf_str(&line, json ? "}\n" : "\n");
  size_t len = line.len;
  char *text = textbuf_finish(&line);
  if (text == NULL) {
    log_write(LOG_WARN, "proxy", "%s: out of memory for an access log line", c->l->cfg->name);
    return;
  }
  log_access_write(text, len);
  free(text);
}

/* Gives back the connection's limits.max_handshaking slot, once. */
static void release_handshake_slot(struct conn *c) {
  if (c->handshaking) {
    c->handshaking = false;
    atomic_fetch_sub_explicit(&c->l->load->handshaking, 1, memory_order_relaxed);
  }
}

static void conn_close(struct conn *c, const char *result) {
  if (c->state == CONN_CLOSING) {
    return;
  }
  bool established = c->state == CONN_RELAYING;
  c->state = CONN_CLOSING;
  c->result = result;
  write_access_log(c);
  if (log_enabled(LOG_DEBUG)) {
    char down[NETADDR_STR_MAX];
    log_write(LOG_DEBUG, "proxy", "%s: %s -> %s closed: %s", c->l->cfg->name,
              netaddr_format(down, (const struct sockaddr *)&c->peer), c->upstream_str, result);
  }

  stats_add(c->stats, LC_CONNECTIONS_ACTIVE, (uint64_t)-1);
  if (established) {
    stats_observe(c->stats, HIST_CONNECTION, (double)(now_ms(c) - c->start_ms) / 1000.0);
  }
  atomic_fetch_sub_explicit(&c->w->server->active_connections, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&c->l->load->active, 1, memory_order_relaxed);
  release_handshake_slot(c);

  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    c->w->conns = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  c->w->conn_count--;

  flow_release(c, &c->d2u);
  flow_release(c, &c->u2d);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  side_close(&c->down, on_handle_closed);
  side_close(&c->up, on_handle_closed);
  if (c->gai_pending) {
    /* The callback still runs (with UV_ECANCELED, or with a result if it was too late to
     * cancel) and frees the connection then. */
    uv_cancel((uv_req_t *)&c->gai);
  }
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
  const struct config *cfg = c->w->server->cfg;
  uint64_t deadline = c->last_io_ms + cfg->limits.idle_timeout;
  if (cfg->tls.close_on_peer_expiry && c->peer_expiry_ms >= 0 &&
      (uint64_t)c->peer_expiry_ms < deadline) {
    deadline = (uint64_t)c->peer_expiry_ms;
  }
  arm_timer(c, deadline);
}

static void upstream_failed(struct conn *c, enum upstream_failure failure) {
  stats_add(c->stats, LC_UPSTREAM_FAILURE_FIRST + failure, 1);
  log_write(LOG_WARN, "proxy", "%s: upstream %s: %s", c->l->cfg->name, c->upstream_str,
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
  stats_add(c->stats, LC_HANDSHAKES_FAILED, 1);
  stats_add(c->stats, LC_HANDSHAKE_FAILURE_FIRST + failure, 1);
  char peer[NETADDR_STR_MAX];
  log_write(LOG_INFO, "proxy", "%s: handshake with %s failed (%s): %s", c->l->cfg->name,
            c->l->cfg->mode == LISTENER_INBOUND ? netaddr_format(peer, (struct sockaddr *)&c->peer)
                                                : c->upstream_str,
            tls_failure_name(failure), detail);
  conn_close(c, tls_failure_name(failure));
}

static void on_timer(uv_timer_t *timer) {
  struct conn *c = timer->data;
  switch (c->state) {
    case CONN_RESOLVING:
    case CONN_CONNECTING:
      upstream_failed(c, UPSTREAM_FAIL_TIMEOUT);
      return;
    case CONN_HANDSHAKING:
      handshake_failed(c, TLS_FAIL_TIMEOUT, "handshake timed out");
      return;
    case CONN_RELAYING: {
      uint64_t now = now_ms(c);
      const struct config *cfg = c->w->server->cfg;
      if (cfg->tls.close_on_peer_expiry && c->peer_expiry_ms >= 0 &&
          now >= (uint64_t)c->peer_expiry_ms) {
        log_write(LOG_INFO, "proxy", "%s: closing connection of %s: its certificate expired",
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

static ssize_t side_read(struct side *s, void *buf, size_t len) {
  if (s->tls != NULL) {
    return tls_conn_read(s->tls, buf, len);
  }
  for (;;) {
    ssize_t n = recv(s->fd, buf, len, 0);
    if (n > 0) {
      return n;
    }
    if (n == 0) {
      return TLS_EOF;
    }
    if (errno == EINTR) {
      continue;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK ? TLS_WANT_READ : TLS_ERROR;
  }
}

static ssize_t side_write(struct side *s, const void *buf, size_t len) {
  if (s->tls != NULL) {
    return tls_conn_write(s->tls, buf, len);
  }
  for (;;) {
    ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0) {
      return n;
    }
    if (errno == EINTR) {
      continue;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK ? TLS_WANT_WRITE : TLS_ERROR;
  }
}

/* Passes an end of stream on: close_notify and then a FIN on the TLS side, a FIN on the
 * plaintext side. */
static int side_shutdown(struct side *s) {
  if (s->tls != NULL) {
    int r = tls_conn_shutdown(s->tls);
    if (r != TLS_OK) {
      return r;
    }
  }
  if (shutdown(s->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
    return TLS_ERROR;
  }
  return TLS_OK;
}

static int want_event(ssize_t r) {
  return r == TLS_WANT_READ ? UV_READABLE : UV_WRITABLE;
}

/* Moves bytes through |f| until it must wait for a socket; returns false on an error that
 * ends the connection. Reads are gathered up to the buffer's size (several TLS records,
 * or a large plaintext read) so that each write hands the kernel as much as possible,
 * and a read that says the source is drained saves the read that would only say EAGAIN. */
static bool pump(struct conn *c, struct flow *f) {
  for (;;) {
    if (f->len > 0) {
      ssize_t n = side_write(f->dst, f->buf + f->off, f->len);
      if (n > 0) {
        f->off += (uint32_t)n;
        f->len -= (uint32_t)n;
        stats_add(c->stats, f->tx_counter, (uint64_t)n);
        if (f->len == 0) {
          flow_release(c, f);
        }
        continue;
      }
      if (n == TLS_WANT_READ || n == TLS_WANT_WRITE) {
        f->want_dst = want_event(n);
        f->want_src = 0;
        return true;
      }
      return false;
    }
    if (f->dst->tls != NULL) {
      /* Records the socket did not take yet go out before anything more is read. */
      int r = tls_conn_flush(f->dst->tls);
      if (r == TLS_WANT_WRITE) {
        f->want_dst = UV_WRITABLE;
        f->want_src = 0;
        return true;
      }
      if (r != TLS_OK) {
        return false;
      }
    }
    if (f->src_failed) {
      return false;
    }
    if (f->src_waits != 0 && !f->src_eof) {
      f->want_src = f->src_waits;
      f->want_dst = 0;
      f->src_waits = 0;
      return true;
    }
    if (f->src_eof) {
      if (!f->done) {
        int r = side_shutdown(f->dst);
        if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
          f->want_dst = want_event(r);
          f->want_src = 0;
          return true;
        }
        if (r != TLS_OK) {
          return false;
        }
        f->done = true;
      }
      f->want_src = 0;
      f->want_dst = 0;
      return true;
    }
    if (f->buf == NULL) {
      f->buf = worker_buffer_get(c->w);
      if (f->buf == NULL) {
        return false;
      }
    }
    ssize_t n = side_read(f->src, f->buf, WORKER_BUFFER_SIZE);
    if (n > 0) {
      size_t len = (size_t)n;
      if (f->src->tls != NULL) {
        /* TLS hands out one record per read: gather several for one write. */
        while (len + TLS_RECORD_MAX <= WORKER_BUFFER_SIZE) {
          ssize_t m = side_read(f->src, f->buf + len, WORKER_BUFFER_SIZE - len);
          if (m > 0) {
            len += (size_t)m;
            continue;
          }
          if (m == TLS_WANT_READ || m == TLS_WANT_WRITE) {
            f->src_waits = want_event(m);
          } else if (m == TLS_EOF) {
            f->src_eof = true;
          } else {
            f->src_failed = true;
          }
          break;
        }
        /* Reading can make TLS answer (a KeyUpdate, an alert): best effort, as the flow
         * that writes this socket flushes it too. */
        if (tls_conn_flush(f->src->tls) == TLS_ERROR) {
          f->src_failed = true;
        }
      } else if (len < WORKER_BUFFER_SIZE) {
        /* A short read emptied the socket's queue. */
        f->src_waits = UV_READABLE;
      }
      f->off = 0;
      f->len = (uint32_t)len;
      f->bytes += len;
      c->last_io_ms = now_ms(c);
      stats_add(c->stats, f->rx_counter, len);
      continue;
    }
    flow_release(c, f);
    if (n == TLS_WANT_READ || n == TLS_WANT_WRITE) {
      f->want_src = want_event(n);
      f->want_dst = 0;
      return true;
    }
    if (n == TLS_EOF) {
      f->src_eof = true;
      continue;
    }
    return false;
  }
}

static int wants_of(const struct flow *f, const struct side *s) {
  return (f->src == s ? f->want_src : 0) | (f->dst == s ? f->want_dst : 0);
}

static void relay_update(struct conn *c) {
  if (c->d2u.done && c->u2d.done) {
    conn_close(c, "ok");
    return;
  }
  side_want(c, &c->down, wants_of(&c->d2u, &c->down) | wants_of(&c->u2d, &c->down));
  side_want(c, &c->up, wants_of(&c->d2u, &c->up) | wants_of(&c->u2d, &c->up));
}

static const char *relay_error(const struct flow *f) {
  return f->src->tls != NULL || f->dst->tls != NULL ? "tls_error" : "reset";
}

static void relay_event(struct conn *c, struct side *s, int events) {
  struct flow *flows[2] = {&c->d2u, &c->u2d};
  for (int i = 0; i < 2; i++) {
    struct flow *f = flows[i];
    if ((wants_of(f, s) & events) == 0 || f->done) {
      continue;
    }
    if (!pump(c, f)) {
      conn_close(c, relay_error(f));
      return;
    }
  }
  relay_update(c);
}

static void start_relay(struct conn *c) {
  c->state = CONN_RELAYING;
  c->last_io_ms = now_ms(c);
  c->d2u.src = &c->down;
  c->d2u.dst = &c->up;
  c->d2u.rx_counter = LC_BYTES_RECEIVED_DOWNSTREAM;
  c->d2u.tx_counter = LC_BYTES_SENT_UPSTREAM;
  c->u2d.src = &c->up;
  c->u2d.dst = &c->down;
  c->u2d.rx_counter = LC_BYTES_RECEIVED_UPSTREAM;
  c->u2d.tx_counter = LC_BYTES_SENT_DOWNSTREAM;
  arm_relay_timer(c);
  if (!pump(c, &c->d2u)) {
    conn_close(c, relay_error(&c->d2u));
    return;
  }
  if (!pump(c, &c->u2d)) {
    conn_close(c, relay_error(&c->u2d));
    return;
  }
  relay_update(c);
}

/* ---- PROXY protocol v2 ---- */

/* Queues a PROXY protocol v2 header (RFC-like spec by HAProxy) carrying the caller's
 * address and, in TLV 0xE0, its verified identity, as the first bytes to the app. */
static bool queue_proxy_header(struct conn *c) {
  static const uint8_t signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                        0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  uint8_t *buf = worker_buffer_get(c->w);
  if (buf == NULL) {
    return false;
  }
  size_t pos = 0;
  memcpy(buf, signature, sizeof(signature));
  pos += sizeof(signature);
  buf[pos++] = 0x21; /* Version 2, PROXY command. */
  size_t len_at = pos + 1;
  size_t addr_len;
  if (c->peer.ss_family == AF_INET && c->local.ss_family == AF_INET) {
    const struct sockaddr_in *src = (const struct sockaddr_in *)&c->peer;
    const struct sockaddr_in *dst = (const struct sockaddr_in *)&c->local;
    buf[pos++] = 0x11; /* TCP over IPv4. */
    pos += 2;
    memcpy(buf + pos, &src->sin_addr, 4);
    memcpy(buf + pos + 4, &dst->sin_addr, 4);
    memcpy(buf + pos + 8, &src->sin_port, 2);
    memcpy(buf + pos + 10, &dst->sin_port, 2);
    addr_len = 12;
  } else if (c->peer.ss_family == AF_INET6 && c->local.ss_family == AF_INET6) {
    const struct sockaddr_in6 *src = (const struct sockaddr_in6 *)&c->peer;
    const struct sockaddr_in6 *dst = (const struct sockaddr_in6 *)&c->local;
    buf[pos++] = 0x21; /* TCP over IPv6. */
    pos += 2;
    memcpy(buf + pos, &src->sin6_addr, 16);
    memcpy(buf + pos + 16, &dst->sin6_addr, 16);
    memcpy(buf + pos + 32, &src->sin6_port, 2);
    memcpy(buf + pos + 34, &dst->sin6_port, 2);
    addr_len = 36;
  } else {
    buf[pos++] = 0x00; /* UNSPEC: no addresses. */
    pos += 2;
    addr_len = 0;
  }
  pos += addr_len;
  const char *id = c->have_info ? c->info.peer_identity : "";
  /* Identities are validated at extraction (identity_san_acceptable): at most 2048
   * bytes, which with the addresses fits any relay buffer. */
  size_t id_len = strnlen(id, IDENTITY_MAX - 1);
  buf[pos++] = 0xE0;
  buf[pos++] = (uint8_t)(id_len >> 8);
  buf[pos++] = (uint8_t)id_len;
  memcpy(buf + pos, id, id_len);
  pos += id_len;
  size_t payload = addr_len + 3 + id_len;
  buf[len_at] = (uint8_t)(payload >> 8);
  buf[len_at + 1] = (uint8_t)payload;
  c->d2u.buf = buf;
  c->d2u.off = 0;
  c->d2u.len = (uint32_t)pos;
  return true;
}

/* ---- Handshake ---- */

static void handshake_done(struct conn *c) {
  struct tls_conn *tls = c->tls_side->tls;
  release_handshake_slot(c);
  tls_conn_get_info(tls, &c->info);
  c->have_info = true;
  stats_add(c->stats, LC_HANDSHAKES_OK, 1);
  stats_observe(c->stats, HIST_HANDSHAKE, (double)(uv_hrtime() - c->handshake_start_ns) / 1e9);
  if (c->info.resumed) {
    stats_add(c->stats, LC_RESUMPTIONS, 1);
  } else if (c->info.peer_root[0] != '\0') {
    stats_count_root(c->stats, c->info.peer_root);
  }
  c->peer_expiry_ms = -1;
  if (c->info.peer_not_after != INT64_MAX) {
    int64_t left_ms = (c->info.peer_not_after - (int64_t)time(NULL)) * 1000;
    c->peer_expiry_ms = (int64_t)now_ms(c) + (left_ms > 0 ? left_ms : 0);
  }
  side_want(c, c->tls_side, 0);
  if (c->l->cfg->mode == LISTENER_INBOUND) {
    start_connect(c);
  } else {
    start_relay(c);
  }
}

static void handshake_step(struct conn *c) {
  int r = tls_conn_handshake(c->tls_side->tls);
  if (r == TLS_OK) {
    handshake_done(c);
  } else if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
    side_want(c, c->tls_side, want_event(r));
  } else {
    const char *detail;
    enum tls_failure failure = tls_conn_failure(c->tls_side->tls, &detail);
    handshake_failed(c, failure, detail);
  }
}

static void start_handshake(struct conn *c) {
  struct worker *w = c->w;
  struct worker_listener *l = c->l;
  c->state = CONN_HANDSHAKING;
  c->phase_start_ms = now_ms(c);
  c->handshake_start_ns = uv_hrtime();
  arm_timer(c, c->phase_start_ms + w->server->cfg->limits.handshake_timeout);
  if (l->cfg->mode == LISTENER_INBOUND) {
    c->tls_side = &c->down;
    c->down.tls = tls_conn_new_server(w->tls, c->down.fd, &l->policy);
  } else {
    c->tls_side = &c->up;
    char key[NETADDR_HOST_MAX + 80];
    snprintf(key, sizeof(key), "%s|%s", l->cfg->name, c->upstream_str);
    c->up.tls =
        tls_conn_new_client(w->tls, c->up.fd, &l->policy,
                            c->target_host[0] != '\0' ? c->target_host : NULL, w->sessions, key);
  }
  if (c->tls_side->tls == NULL) {
    conn_close(c, "error");
    return;
  }
  handshake_step(c);
}

/* ---- Upstream connection ---- */

static enum upstream_failure classify_connect_error(int err) {
  switch (err) {
    case ECONNREFUSED:
      return UPSTREAM_FAIL_REFUSED;
    case ETIMEDOUT:
      return UPSTREAM_FAIL_TIMEOUT;
    default:
      return UPSTREAM_FAIL_UNREACHABLE;
  }
}

static void connected(struct conn *c) {
  side_want(c, &c->up, 0);
  if (c->l->cfg->mode == LISTENER_OUTBOUND) {
    start_handshake(c);
    return;
  }
  if (c->l->cfg->proxy_protocol && !queue_proxy_header(c)) {
    conn_close(c, "error");
    return;
  }
  start_relay(c);
}

static void try_next_address(struct conn *c);

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
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(c->up.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err == 0) {
    connected(c);
    return;
  }
  c->connect_failure = classify_connect_error(err);
  LOG_DEBUGF("proxy", "%s: connect to %s: %s", c->l->cfg->name, c->upstream_str, strerror(err));
  /* The handle must finish closing before the next attempt can reuse it. */
  side_close(&c->up, on_attempt_closed);
}

static bool next_sockaddr(struct conn *c, const struct sockaddr **sa, socklen_t *len) {
  if (c->addrs != NULL) {
    while (c->next_addr != NULL) {
      const struct addrinfo *ai = c->next_addr;
      c->next_addr = ai->ai_next;
      if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
        *sa = ai->ai_addr;
        *len = ai->ai_addrlen;
        return true;
      }
    }
    return false;
  }
  if (c->target_tried) {
    return false;
  }
  c->target_tried = true;
  *sa = (const struct sockaddr *)&c->target;
  *len = c->target_len;
  return true;
}

static void try_next_address(struct conn *c) {
  const struct sockaddr *sa;
  socklen_t len;
  while (next_sockaddr(c, &sa, &len)) {
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      log_write(LOG_WARN, "proxy", "%s: cannot open a socket: %s", c->l->cfg->name,
                strerror(errno));
      c->connect_failure = UPSTREAM_FAIL_UNREACHABLE;
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
      c->connect_failure = classify_connect_error(errno);
      close(fd);
      continue;
    }
    if (side_open_poll(c, &c->up, fd) != 0) {
      conn_close(c, "error");
      return;
    }
    side_want(c, &c->up, UV_WRITABLE);
    return;
  }
  upstream_failed(c, c->connect_failure);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  struct conn *c = req->data;
  c->gai_pending = false;
  c->addrs = res;
  if (c->state == CONN_CLOSING) {
    maybe_free(c);
    return;
  }
  if (status != 0 || res == NULL) {
    LOG_DEBUGF("proxy", "%s: resolving %s: %s", c->l->cfg->name, c->upstream_str,
               uv_strerror(status));
    upstream_failed(c, UPSTREAM_FAIL_DNS);
    return;
  }
  c->next_addr = res;
  c->state = CONN_CONNECTING;
  try_next_address(c);
}

/* Resolves the destination (explicit upstream or forward, original destination for
 * transparent listeners) and starts connecting to it within connect_timeout. */
static void start_connect(struct conn *c) {
  const struct listener_config *lc = c->l->cfg;
  const struct hostport *hp = NULL;
  c->phase_start_ms = now_ms(c);
  arm_timer(c, c->phase_start_ms + c->w->server->cfg->limits.connect_timeout);
  c->state = CONN_CONNECTING;
  c->connect_failure = UPSTREAM_FAIL_UNREACHABLE;

  struct hostport overridden;
  if (lc->mode == LISTENER_OUTBOUND && lc->has_upstream) {
    hp = &lc->upstream;
  } else if (lc->mode == LISTENER_INBOUND && lc->has_forward) {
    hp = &lc->forward;
  } else if (lc->forward_host != NULL) {
    /* Transparent inbound with forward_host: the operator chose another host (such as
     * loopback) for the port the caller meant to reach. */
    memset(&overridden, 0, sizeof(overridden));
    snprintf(overridden.host, sizeof(overridden.host), "%s", lc->forward_host);
    overridden.port = netaddr_port((const struct sockaddr *)&c->target);
    overridden.host_is_ip = lc->forward_host_is_ip;
    hp = &overridden;
  }

  if (hp == NULL) {
    /* Transparent: c->target holds the original destination, which for inbound is the
     * pod's own address, so a port the app bound to loopback only is not reachable. */
    format_addr(c->upstream_str, sizeof(c->upstream_str), &c->target);
    try_next_address(c);
    return;
  }
  if (hp->host_is_ip) {
    if (!netaddr_to_sockaddr(&c->target, &c->target_len, hp)) {
      upstream_failed(c, UPSTREAM_FAIL_UNREACHABLE);
      return;
    }
    format_addr(c->upstream_str, sizeof(c->upstream_str), &c->target);
    c->target_tried = false;
    try_next_address(c);
    return;
  }
  snprintf(c->upstream_str, sizeof(c->upstream_str), "%s:%u", hp->host, hp->port);
  snprintf(c->target_host, sizeof(c->target_host), "%s", hp->host);
  char port[8];
  snprintf(port, sizeof(port), "%u", hp->port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  c->gai.data = c;
  c->state = CONN_RESOLVING;
  int r = uv_getaddrinfo(&c->w->loop, &c->gai, on_resolved, hp->host, port, &hints);
  if (r != 0) {
    upstream_failed(c, UPSTREAM_FAIL_DNS);
    return;
  }
  c->gai_pending = true;
}

/* ---- Events ---- */

static void on_poll(uv_poll_t *handle, int status, int events) {
  struct conn *c = handle->data;
  struct side *s = handle == &c->down.poll ? &c->down : &c->up;
  if (status < 0) {
    /* An error on the socket (e.g. a reset): let the next read or write report it, as
     * a failed connect must be classified from SO_ERROR. */
    events = s->events;
  }
  switch (c->state) {
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

/* Reads the address the intercepted connection was meant for (iptables REDIRECT). */
static bool original_destination(struct conn *c) {
  socklen_t len = sizeof(c->target);
  /* An IPv4 connection on a dual-stack socket was tracked, and NATed, as IPv4. */
  bool v6 = c->local.ss_family == AF_INET6 &&
            !IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)&c->local)->sin6_addr);
  int level = v6 ? SOL_IPV6 : SOL_IP;
  int name = v6 ? IP6T_SO_ORIGINAL_DST : SO_ORIGINAL_DST;
  bool ok = getsockopt(c->down.fd, level, name, &c->target, &len) == 0;
  /* Written only on a change: a store per accept would bounce the line between cores. */
  _Atomic int *broken = &c->w->server->original_dst_broken;
  if (atomic_load_explicit(broken, memory_order_relaxed) != !ok) {
    atomic_store_explicit(broken, !ok, memory_order_relaxed);
  }
  c->target_len = len;
  return ok;
}

static void refuse(struct worker_listener *l, int fd, enum refusal why) {
  stats_add(l->stats, LC_REFUSED_FIRST + why, 1);
  close(fd);
}

/* Takes the slots a new connection on |l| needs: one of limits.max_connections, one of
 * the listener's max_connections, and one of its limits.max_handshaking until its
 * handshake completes. Takes nothing and returns false when any is used up. */
static bool take_slots(struct worker_listener *l) {
  struct server *srv = l->worker->server;
  const struct config *cfg = srv->cfg;
  unsigned active = atomic_fetch_add_explicit(&srv->active_connections, 1, memory_order_relaxed);
  if (active >= cfg->limits.max_connections) {
    goto undo_global;
  }
  unsigned mine = atomic_fetch_add_explicit(&l->load->active, 1, memory_order_relaxed);
  if (l->cfg->max_connections != 0 && mine >= l->cfg->max_connections) {
    goto undo_listener;
  }
  unsigned pending = atomic_fetch_add_explicit(&l->load->handshaking, 1, memory_order_relaxed);
  if (pending >= cfg->limits.max_handshaking) {
    atomic_fetch_sub_explicit(&l->load->handshaking, 1, memory_order_relaxed);
    goto undo_listener;
  }
  return true;
undo_listener:
  atomic_fetch_sub_explicit(&l->load->active, 1, memory_order_relaxed);
undo_global:
  atomic_fetch_sub_explicit(&srv->active_connections, 1, memory_order_relaxed);
  return false;
}

static void give_slots(struct worker_listener *l) {
  atomic_fetch_sub_explicit(&l->load->handshaking, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&l->load->active, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&l->worker->server->active_connections, 1, memory_order_relaxed);
}

/* is_local_address tells whether |sa| is one of this network namespace's own addresses:
 * binding to it succeeds exactly then. */
static bool is_local_address(const struct sockaddr_storage *sa) {
  struct sockaddr_storage probe = *sa;
  socklen_t len;
  if (probe.ss_family == AF_INET) {
    ((struct sockaddr_in *)&probe)->sin_port = 0;
    len = sizeof(struct sockaddr_in);
  } else {
    ((struct sockaddr_in6 *)&probe)->sin6_port = 0;
    len = sizeof(struct sockaddr_in6);
  }
  int fd = socket(probe.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return true; /* Cannot tell: refusing is the safe side. */
  }
  bool local = bind(fd, (struct sockaddr *)&probe, len) == 0 || errno != EADDRNOTAVAIL;
  close(fd);
  return local;
}

/* is_loop tells whether the original destination of a transparent connection is one of
 * mtlsd's own ports. Coming in, whatever the address: relaying it would let a peer use
 * an outbound listener (and so the pod's identity) or the admin port. Going out, when
 * the destination is this pod itself (without a redirect, the listener's own address):
 * another pod's port of the same number is no loop, and its sidecar guards it. */
static bool is_loop(const struct conn *c) {
  const struct sockaddr *target = (const struct sockaddr *)&c->target;
  if (!config_is_own_port(c->w->server->cfg, netaddr_port(target))) {
    return false;
  }
  return c->l->cfg->mode == LISTENER_INBOUND || netaddr_is_loopback(target) ||
         is_local_address(&c->target);
}

void proxy_accept(struct worker_listener *l, int fd) {
  struct worker *w = l->worker;
  stats_add(l->stats, LC_CONNECTIONS_TOTAL, 1);
  if (!take_slots(l)) {
    refuse(l, fd, REFUSED_LIMIT);
    return;
  }
  if (w->tls == NULL) {
    give_slots(l);
    refuse(l, fd, REFUSED_NO_CERT);
    return;
  }
  struct conn *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    give_slots(l);
    close(fd);
    return;
  }
  c->w = w;
  c->l = l;
  c->stats = l->stats;
  c->handshaking = true;
  c->down.fd = -1;
  c->up.fd = -1;
  c->start_ms = uv_now(&w->loop);
  c->peer_expiry_ms = -1;
  c->result = "ok";
  snprintf(c->upstream_str, sizeof(c->upstream_str), "-");
  socklen_t len = sizeof(c->peer);
  getpeername(fd, (struct sockaddr *)&c->peer, &len);
  len = sizeof(c->local);
  getsockname(fd, (struct sockaddr *)&c->local, &len);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  uv_timer_init(&w->loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 1;
  c->next = w->conns;
  if (w->conns != NULL) {
    w->conns->prev = c;
  }
  w->conns = c;
  w->conn_count++;
  stats_add(l->stats, LC_CONNECTIONS_ACTIVE, 1);
  c->state = CONN_CONNECTING;

  if (side_open_poll(c, &c->down, fd) != 0) {
    conn_close(c, "error");
    return;
  }
  if (l->cfg->transparent) {
    if (!original_destination(c)) {
      log_write(LOG_WARN, "proxy", "%s: cannot read the original destination: %s", l->cfg->name,
                strerror(errno));
      stats_add(l->stats, LC_REFUSED_FIRST + REFUSED_NO_DESTINATION, 1);
      conn_close(c, "no_destination");
      return;
    }
    if (is_loop(c)) {
      char target[NETADDR_STR_MAX];
      log_write(LOG_INFO, "proxy", "%s: refused a connection to %s, a port of mtlsd itself",
                l->cfg->name, netaddr_format(target, (const struct sockaddr *)&c->target));
      stats_add(l->stats, LC_REFUSED_FIRST + REFUSED_LOOP, 1);
      conn_close(c, "loop");
      return;
    }
  }
  if (l->cfg->mode == LISTENER_INBOUND) {
    start_handshake(c);
  } else {
    start_connect(c);
  }
}

void proxy_close_all(struct worker *w, const char *reason) {
  while (w->conns != NULL) {
    conn_close(w->conns, reason);
  }
}
