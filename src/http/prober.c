/* prober: one run of an application probe (see mtlsd/prober.h).
 *
 * A run is a small state machine on one non-blocking socket watched with uv_poll, like a
 * relayed connection: resolve (when the host is a name), connect address after address,
 * the TLS handshake for HTTPS, then the exchange through a transport, plain or TLS. One
 * timer serves first as a zero-delay start (so that |done| never runs inside
 * prober_start) and then as the probe's timeout. HTTP/2 for gRPC is libnghttp2's: it
 * frames what the prober writes and parses what it reads, in memory, so the socket stays
 * the prober's. */
#include "mtlsd/http/prober.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mtlsd/base/log.h"
#include "mtlsd/tls/tls.h"
#include "prober_internal.h"

static void on_poll(uv_poll_t *handle, int status, int events);
static void begin(struct prober *p);

/* ---- Ending ---- */

static void maybe_free(struct prober *p) {
  if (p->open_handles > 0 || p->dial.gai_pending) {
    return;
  }
  dialer_release(&p->dial);
  free(p);
}

static void on_handle_closed(uv_handle_t *handle) {
  struct prober *p = handle->data;
  p->open_handles--;
  maybe_free(p);
}

/* Closes the socket of the current attempt; |cb| runs when its watcher has closed. */
void prober_close_socket(struct prober *p, uv_close_cb cb) {
  if (p->poll_open) {
    p->poll_open = false;
    uv_close((uv_handle_t *)&p->poll, cb);
  }
  tls_conn_free(p->tls);
  p->tls = NULL;
  if (p->fd >= 0) {
    close(p->fd);
    p->fd = -1;
  }
  if (p->h2 != NULL) {
    nghttp2_session_del(p->h2);
    p->h2 = NULL;
  }
  free(p->out);
  p->out = NULL;
  p->out_len = p->out_off = 0;
  p->in_len = 0;
}

static void release(struct prober *p) {
  p->state = ST_DONE;
  prober_close_socket(p, on_handle_closed);
  uv_close((uv_handle_t *)&p->timer, on_handle_closed);
  free(p->grpc_request);
  p->grpc_request = NULL;
  free(p->body.data);
  p->body.data = NULL;
  if (p->dial.gai_pending) {
    uv_cancel((uv_req_t *)&p->dial.gai);
  }
}

void prober_finish(struct prober *p, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void prober_finish(struct prober *p, bool ok, const char *fmt, ...) {
  if (p->state == ST_DONE) {
    return;
  }
  char reason[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);
  if (p->fetched != NULL) {
    /* The body goes to the callback, which owns it from there. */
    char *body = ok ? p->body.data : NULL;
    size_t len = ok ? p->body.len : 0;
    if (ok) {
      p->body.data = NULL;
    }
    release(p);
    p->fetched(p->arg, ok, reason, body, len, p->body.content_type);
  } else {
    release(p);
    p->done(p->arg, ok, reason);
  }
  maybe_free(p);
}

void prober_cancel(struct prober *p) {
  if (p->state != ST_DONE) {
    release(p);
    maybe_free(p);
  }
}

void prober_want(struct prober *p, int events) {
  if (p->poll_open && p->events != events) {
    p->events = events;
    if (uv_poll_start(&p->poll, events, on_poll) != 0) {
      prober_finish(p, false, "cannot watch the probe's socket");
    }
  }
}

/* ---- Writing ---- */

bool prober_queue(struct prober *p, const void *data, size_t len) {
  uint8_t *grown = realloc(p->out, p->out_len + len);
  if (grown == NULL) {
    return false;
  }
  memcpy(grown + p->out_len, data, len);
  p->out = grown;
  p->out_len += len;
  return true;
}

bool prober_flush_out(struct prober *p) {
  while (p->out_off < p->out_len) {
    ssize_t n = transport_write(&p->xprt, p->out + p->out_off, p->out_len - p->out_off);
    if (n > 0) {
      p->out_off += (size_t)n;
      continue;
    }
    if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
      prober_want(p, IO_WAIT_WRITE);
      return false;
    }
    prober_finish(p, false, "writing to %s:%u failed", p->host, p->port);
    return false;
  }
  if (transport_flush(&p->xprt) == IO_ERROR) {
    prober_finish(p, false, "writing to %s:%u failed", p->host, p->port);
    return false;
  }
  free(p->out);
  p->out = NULL;
  p->out_len = p->out_off = 0;
  return true;
}

/* Reads what the peer sent into |buf|: a positive count, or 0 once the run waits for the
 * socket or has finished (the peer closed before |answer|). */
ssize_t prober_read_some(struct prober *p, void *buf, size_t cap, const char *answer) {
  int next;
  ssize_t n = transport_read(&p->xprt, buf, cap, &next);
  if (n > 0) {
    return n;
  }
  if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
    prober_want(p, io_wait_for(n));
  } else {
    prober_finish(p, false, "%s:%u closed the connection before %s", p->host, p->port, answer);
  }
  return 0;
}

/* ---- Connecting ---- */

static void exchange(struct prober *p) {
  if (p->probe->type == APP_PROBE_GRPC) {
    probe_grpc_exchange(p);
    return;
  }
  if (!prober_flush_out(p)) {
    return;
  }
  if (p->in_body) {
    probe_http_body_read(p);
  } else {
    probe_http_read(p);
  }
}

static void start_exchange(struct prober *p) {
  p->state = ST_EXCHANGING;
  bool ok = p->probe->type == APP_PROBE_GRPC ? probe_grpc_start(p) : probe_http_start(p);
  if (!ok) {
    prober_finish(p, false, "cannot start the request (out of memory)");
    return;
  }
  exchange(p);
}

static void handshake_step(struct prober *p) {
  int r = tls_conn_handshake(p->tls);
  if (r == IO_OK) {
    transport_init_tls(&p->xprt, p->fd, p->tls);
    start_exchange(p);
  } else if (r == IO_WANT_READ || r == IO_WANT_WRITE) {
    prober_want(p, io_wait_for(r));
  } else {
    const char *detail;
    tls_conn_failure(p->tls, &detail);
    prober_finish(p, false, "TLS handshake with %s:%u failed: %s", p->host, p->port, detail);
  }
}

static void connected(struct prober *p, bool peer_reset) {
  const struct app_probe *probe = p->probe;
  if (probe->type == APP_PROBE_TCP) {
    prober_finish(p, true, "connected to %s:%u", p->host, p->port);
    return;
  }
  transport_init_plain(&p->xprt, p->fd);
  p->xprt.peer_reset = peer_reset;
  if (!p->https) {
    start_exchange(p);
    return;
  }
  struct in6_addr ignored;
  bool is_ip = inet_pton(AF_INET, p->host, &ignored) == 1 || strchr(p->host, ':') != NULL;
  p->tls = tls_conn_new_unverified_client(p->fd, is_ip ? NULL : p->host);
  if (p->tls == NULL) {
    prober_finish(p, false, "cannot start TLS (out of memory)");
    return;
  }
  p->state = ST_HANDSHAKING;
  handshake_step(p);
}

static void connect_next(struct prober *p);

/* The socket of an attempt has closed: a failed connect tries the next address, a
 * redirect starts over at its target. */
void prober_on_attempt_closed(uv_handle_t *handle) {
  struct prober *p = handle->data;
  p->open_handles--;
  if (p->state == ST_CONNECTING) {
    connect_next(p);
  } else if (p->state == ST_REDIRECTING) {
    begin(p);
  } else {
    maybe_free(p);
  }
}

static void connect_next(struct prober *p) {
  int fd = dialer_next(&p->dial);
  if (fd < 0) {
    prober_finish(p, false, "connect to %s: %s", p->dial.upstream,
                  upstream_failure_name(p->dial.failure));
    return;
  }
  p->fd = fd;
  p->events = 0;
  if (uv_poll_init(p->loop, &p->poll, fd) != 0) {
    prober_finish(p, false, "cannot watch the probe's socket");
    return;
  }
  p->poll.data = p;
  p->poll_open = true;
  p->open_handles++;
  p->state = ST_CONNECTING;
  prober_want(p, IO_WAIT_WRITE);
}

static void on_resolved(struct dialer *d, int status) {
  struct prober *p = (struct prober *)((char *)d - offsetof(struct prober, dial));
  if (p->state == ST_DONE) {
    maybe_free(p);
    return;
  }
  if (status != 0) {
    prober_finish(p, false, "cannot resolve %s: %s", p->host, uv_strerror(status));
    return;
  }
  connect_next(p);
}

static void connect_check(struct prober *p) {
  enum connect_outcome outcome = dialer_connect_result(&p->dial, p->fd);
  if (outcome != CONNECT_FAILED) {
    connected(p, outcome == CONNECT_OK_THEN_RESET);
  } else {
    prober_close_socket(p, prober_on_attempt_closed);
  }
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)events;
  struct prober *p = handle->data;
  if (status < 0) {
    /* libuv has stopped the handle on the socket's error: the next wait re-arms it. */
    p->events = 0;
  }
  switch (p->state) {
    case ST_CONNECTING:
      connect_check(p);
      return;
    case ST_HANDSHAKING:
      handshake_step(p);
      return;
    case ST_EXCHANGING:
      exchange(p);
      return;
    case ST_START:
    case ST_RESOLVING:
    case ST_REDIRECTING:
    case ST_DONE:
      return;
  }
}

/* Starts an attempt at the current host, port and path. */
static void begin(struct prober *p) {
  struct hostport hp;
  memset(&hp, 0, sizeof(hp));
  snprintf(hp.host, sizeof(hp.host), "%s", p->host);
  hp.port = p->port;
  struct in6_addr ignored;
  hp.host_is_ip =
      inet_pton(AF_INET, p->host, &ignored) == 1 || inet_pton(AF_INET6, p->host, &ignored) == 1;
  dialer_release(&p->dial);
  memset(&p->dial, 0, sizeof(p->dial));
  switch (dialer_plan_hostport(&p->dial, &hp)) {
    case DIAL_CONNECT:
      connect_next(p);
      return;
    case DIAL_RESOLVE:
      p->state = ST_RESOLVING;
      if (dialer_resolve(&p->dial, p->loop, on_resolved) != 0) {
        prober_finish(p, false, "cannot resolve %s", p->host);
      }
      return;
    case DIAL_UNREACHABLE:
      prober_finish(p, false, "%s is not an address", p->host);
      return;
  }
}

static void on_timer(uv_timer_t *timer) {
  struct prober *p = timer->data;
  if (p->state == ST_START) {
    uv_timer_start(&p->timer, on_timer, p->probe->timeout, 0);
    begin(p);
    return;
  }
  prober_finish(p, false, "timed out after %llu ms", (unsigned long long)p->probe->timeout);
}

void prober_default_host(char *out, size_t out_len) {
  const char *pod_ip = getenv("POD_IP");
  snprintf(out, out_len, "%s", pod_ip != NULL && pod_ip[0] != '\0' ? pod_ip : "127.0.0.1");
}

static struct prober *prober_new(uv_loop_t *loop, const struct app_probe *probe,
                                 const char *default_host, void *arg) {
  struct prober *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    return NULL;
  }
  p->loop = loop;
  p->probe = probe;
  p->arg = arg;
  p->fd = -1;
  p->grpc_status = -1;
  p->state = ST_START;
  snprintf(p->host, sizeof(p->host), "%s", probe->host != NULL ? probe->host : default_host);
  p->port = probe->port;
  p->https = probe->https;
  snprintf(p->path, sizeof(p->path), "%s", probe->path != NULL ? probe->path : "/");
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  p->open_handles = 1;
  uv_timer_start(&p->timer, on_timer, 0, 0);
  return p;
}

struct prober *prober_start(uv_loop_t *loop, const struct app_probe *probe,
                            const char *default_host, prober_done_cb done, void *arg) {
  struct prober *p = prober_new(loop, probe, default_host, arg);
  if (p != NULL) {
    p->done = done;
  }
  return p;
}

struct prober *prober_fetch(uv_loop_t *loop, const struct app_probe *probe,
                            const char *default_host, size_t body_max, prober_fetch_cb done,
                            void *arg) {
  struct prober *p = prober_new(loop, probe, default_host, arg);
  if (p != NULL) {
    p->fetched = done;
    p->body.max = body_max;
  }
  return p;
}
