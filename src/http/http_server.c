/* http_server: a bounded HTTP/1.1 server on a libuv loop (see mtlsd/http_server.h).
 *
 * Every process in the pod (and, for the health port and the webhook, every pod in the
 * cluster) can reach the ports it serves, so it defends itself before it serves. No
 * client can hold the port: at most limits.max_per_source connections from one address
 * and limits.max_connections in all, and when either is reached a newcomer takes the
 * place of the oldest idle connection (of that address, or of all) rather than being
 * turned away; only when none is idle is it answered 503 and closed. No client can hold
 * the memory: request heads are parsed by the strict http_parser (16 KiB at most),
 * bodies of at most limits.max_body bytes are collected as they arrive (so memory
 * follows what a client really sends, not what it announces) within a budget shared by
 * all connections, and each connection answers one request at a time, the next only
 * once the previous answer is written, its large answers within another shared budget.
 * limits.timeout_ms bounds the TLS handshake and each request's arrival and answer. A bad
 * request gets its 4xx and the connection is closed; the server goes on.
 *
 * The socket is non-blocking and watched with uv_poll, and every byte goes through a
 * struct transport, plain or TLS, so HTTPS is the same server: only the handshake at
 * the start differs. Connections are kept alive and pipelined requests are answered in
 * order, one after the other. After a final response the connection is shut down for writing
 * (close_notify and FIN) and the client's remaining bytes are read and dropped for a moment
 * ("lingering close"), so that the kernel does not reset the connection and destroy the
 * response before the client has read it.
 *
 * Each connection owns its socket, its poll and timer handles, its TLS connection and
 * its buffers, and is freed when both close callbacks have run; struct http_server
 * itself is freed once its listener and every connection are closed. */
#include "mtlsd/http/http_server.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "http_internal.h"
#include "mtlsd/base/list.h"
#include "mtlsd/base/log.h"
#include "mtlsd/base/textbuf.h"
#include "mtlsd/net/acceptor.h"
#include "mtlsd/net/transport.h"
#include "mtlsd/tls/tls.h"

/* Reads per wake-up while lingering: a client that floods a closing connection must not
 * hold the loop; the linger timer ends it. */
enum { LINGER_READS = 16 };

static void on_poll(uv_poll_t *handle, int status, int events);

void hserver_release(struct http_server *server) {
  if (--server->open_handles == 0 && server->closing) {
    free(server);
  }
}

/* ---- Connections ---- */
/* ---- Connections ---- */

/* What a body of |cap| bytes takes from limits.max_body_in_flight. */
static uint64_t body_charge(size_t cap) {
  return cap > HTTP_MAX_BODY ? cap - HTTP_MAX_BODY : 0;
}

/* Frees the current request's body and gives its memory back to the server's budget. */
static void body_release(struct http_conn *c) {
  c->server->body_bytes -= body_charge(c->body.cap);
  free(c->body.data);
  c->body = (struct textbuf){0};
}

static void on_conn_closed(uv_handle_t *handle) {
  struct http_conn *c = handle->data;
  if (--c->pending_closes > 0) {
    return;
  }
  struct http_server *server = c->server;
  tls_conn_free(c->tls);
  close(c->fd);
  hconn_output_release(c);
  body_release(c);
  free(c);
  hserver_release(server);
}

/* Stops counting one connection of |src|, which goes with its last. */
void hsource_put(struct http_source *src) {
  if (--src->count == 0) {
    list_remove(&src->link);
    free(src);
  }
}

void hconn_close(struct http_conn *c) {
  if (c->closing) {
    return;
  }
  c->closing = true;
  hconn_abort_deferred(c);
  struct http_server *server = c->server;
  list_remove(&c->link);
  server->conn_count--;
  hsource_put(c->source);
  c->source = NULL;
  c->pending_closes = 2;
  uv_close((uv_handle_t *)&c->poll, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

void hconn_restart_timer(struct http_conn *c, uint64_t ms) {
  uv_timer_start(&c->timer, hconn_on_timer, ms, 0);
}

void hconn_on_timer(uv_timer_t *timer) {
  struct http_conn *c = timer->data;
  if (c->deferred) {
    hconn_abort_deferred(c);
    http_respond_text(c, 503, "no answer in time");
    return;
  }
  if (c->handshaking || c->lingering || c->close_after_write || hconn_answering(c)) {
    /* No hconn_handshake in time, the client stopped reading, or lingering is over. */
    hconn_close(c);
    return;
  }
  if (c->len > 0 || c->head_done) {
    LOG_DEBUGF(c->server->cfg.name, "%s: request not received within %llu ms", c->peer,
               (unsigned long long)c->server->cfg.limits.timeout_ms);
    hconn_respond_error(c, 408, "request not received in time");
    /* Bounds the wait for a client that does not read the 408 either. */
    hconn_restart_timer(c, c->server->cfg.limits.linger_ms);
    hconn_pump(c);
    return;
  }
  hconn_close(c);
}

static bool want_reading(const struct http_conn *c) {
  return !c->closing && !c->eof && !c->handshaking &&
         (c->lingering || (!c->paused && !c->close_after_write && !c->deferred));
}

/* Watches the socket for what the connection waits for now. */
static void update_events(struct http_conn *c) {
  int events = 0;
  if (c->handshaking) {
    events = c->read_wait;
  } else {
    if (want_reading(c)) {
      events |= c->read_wait != 0 ? c->read_wait : IO_WAIT_READ;
    }
    /* Paused with the answer written: more requests wait in the buffer, and the socket's
     * writability brings the connection back for them after the loop's other work. */
    if (hconn_answering(c) || c->shutdown_pending || c->paused) {
      events |= c->write_wait != 0 ? c->write_wait : IO_WAIT_WRITE;
    }
  }
  if (events == c->events) {
    return;
  }
  c->events = events;
  if (events == 0) {
    uv_poll_stop(&c->poll);
  } else if (uv_poll_start(&c->poll, events, on_poll) != 0) {
    hconn_close(c);
  }
}

/* Whether the client's first byte starts an HTTP method rather than a TLS record (0x16):
 * someone's curl without https://, who is better served by a plain answer saying so
 * than by a TLS alert it cannot read. IO_WANT_READ while nothing has arrived. */
static int speaks_plain_http(struct http_conn *c) {
  unsigned char first;
  ssize_t n = recv(c->fd, &first, 1, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    return IO_WANT_READ;
  }
  return n == 1 && first >= 'A' && first <= 'Z';
}

/* Advances the TLS hconn_handshake; returns whether it has completed. */
bool hconn_handshake(struct http_conn *c) {
  if (!c->hello_seen) {
    int plain = speaks_plain_http(c);
    if (plain == IO_WANT_READ) {
      c->read_wait = IO_WAIT_READ;
      return false;
    }
    c->hello_seen = true;
    if (plain == 1) {
      LOG_DEBUGF(c->server->cfg.name, "%s: plain HTTP on the HTTPS port", c->peer);
      c->handshaking = false;
      c->read_wait = 0;
      hconn_respond_error(c, 400, "this port speaks HTTPS: use https://");
      return true;
    }
  }
  int r = tls_conn_handshake(c->tls);
  if (r == IO_OK) {
    c->handshaking = false;
    c->read_wait = 0;
    transport_init_tls(&c->xprt, c->fd, c->tls);
    return true;
  }
  if (r == IO_WANT_READ || r == IO_WANT_WRITE) {
    c->read_wait = io_wait_for(r);
    return false;
  }
  const char *detail = NULL;
  tls_conn_failure(c->tls, &detail);
  LOG_DEBUGF(c->server->cfg.name, "%s: TLS hconn_handshake failed: %s", c->peer,
             detail != NULL ? detail : "?");
  hconn_close(c);
  return false;
}

/* Reads what the client sent and answers every request that is complete. */
static void read_in(struct http_conn *c) {
  for (int reads = 0; want_reading(c); reads++) {
    char drop[4096];
    bool dropping = c->lingering;
    if (dropping && reads >= LINGER_READS) {
      return;
    }
    char *into = dropping ? drop : c->buf + c->len;
    /* hconn_process keeps at most one partial head (HTTP_MAX_HEAD) here, so there is room. */
    size_t room = dropping ? sizeof(drop) : sizeof(c->buf) - c->len;
    int next = IO_OK;
    ssize_t n = transport_read(&c->xprt, into, room, &next);
    if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
      c->read_wait = io_wait_for(n);
      return;
    }
    if (n == IO_EOF) {
      c->eof = true;
      if (c->lingering) {
        hconn_close(c);
      }
      return;
    }
    if (n < 0) {
      LOG_DEBUGF(c->server->cfg.name, "%s: read failed", c->peer);
      hconn_close(c);
      return;
    }
    c->read_wait = next == IO_WANT_READ || next == IO_WANT_WRITE ? io_wait_for(next) : 0;
    if (!dropping) {
      if (c->len == 0 && !c->head_done) {
        /* The first byte of a request starts its deadline. */
        hconn_restart_timer(c, c->server->cfg.limits.timeout_ms);
        c->since = uv_now(c->server->loop);
      }
      c->len += (size_t)n;
      hconn_process(c);
    }
    if (next == IO_EOF) {
      c->eof = true;
    }
    if (next == IO_ERROR) {
      hconn_close(c);
      return;
    }
    if (c->read_wait != 0) {
      return;
    }
  }
}

/* Hands the hconn_queued responses to the transport. */
static void flush_out(struct http_conn *c) {
  while (hconn_queued(c) > 0) {
    ssize_t n = transport_write(&c->xprt, c->out.data + c->out_off, hconn_queued(c));
    if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
      c->write_wait = io_wait_for(n);
      return;
    }
    if (n < 0) {
      LOG_DEBUGF(c->server->cfg.name, "%s: write failed", c->peer);
      hconn_close(c);
      return;
    }
    c->out_off += (size_t)n;
  }
  /* The transport may keep what it was handed (TLS records gathered for one send): the
   * answer is written only once it lets go of them, and until then the socket is
   * watched for writability. */
  int r = transport_flush(&c->xprt);
  c->flush_pending = r == IO_WANT_READ || r == IO_WANT_WRITE;
  if (c->flush_pending) {
    c->write_wait = io_wait_for(r);
    return;
  }
  if (r != IO_OK) {
    hconn_close(c);
    return;
  }
  c->write_wait = 0;
  /* An idle connection holds no output buffer. */
  hconn_output_release(c);
}

/* Ends the stream in our direction (close_notify, then FIN), once it can. */
static void shut_down(struct http_conn *c) {
  int r = transport_shutdown(&c->xprt);
  c->shutdown_pending = r == IO_WANT_READ || r == IO_WANT_WRITE;
  if (c->shutdown_pending) {
    c->write_wait = io_wait_for(r);
  } else if (r != IO_OK) {
    hconn_close(c);
  }
}

/* The final response is written: send FIN, then drop what the client still sends until
 * it closes or limits.linger_ms pass. */
static void start_linger(struct http_conn *c) {
  c->lingering = true;
  c->len = 0;
  if (c->eof) {
    hconn_close(c);
    return;
  }
  hconn_restart_timer(c, c->server->cfg.limits.linger_ms);
  shut_down(c);
}

/* Moves the connection as far as it can go now: hconn_handshake, reads and the requests they
 * complete, writes, and the close after a final response; then waits for the socket. */
void hconn_pump(struct http_conn *c) {
  if (c->closing) {
    return;
  }
  if (c->handshaking && !hconn_handshake(c)) {
    if (!c->closing) {
      update_events(c);
    }
    return;
  }
  /* A pipelining client whose answer is written may have more complete requests
   * waiting; a few rounds, then the socket's readiness brings the connection back. */
  for (int round = 0; round < 4 && !c->closing; round++) {
    if (c->paused && !hconn_answering(c)) {
      c->paused = false;
      hconn_process(c);
    }
    if (!c->closing) {
      read_in(c);
    }
    if (!c->closing && hconn_answering(c)) {
      flush_out(c);
    }
    if (c->closing || !c->paused || hconn_answering(c)) {
      break;
    }
  }
  if (c->closing) {
    return;
  }
  if (c->shutdown_pending) {
    shut_down(c);
  } else if (!hconn_answering(c) && !c->lingering) {
    if (c->close_after_write) {
      start_linger(c);
    } else if (c->eof && !c->paused) {
      hconn_close(c);
    }
  }
  if (!c->closing) {
    update_events(c);
  }
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)events;
  struct http_conn *c = handle->data;
  if (status < 0) {
    LOG_DEBUGF(c->server->cfg.name, "%s: socket error: %s", c->peer, uv_strerror(status));
    hconn_close(c);
    return;
  }
  hconn_pump(c);
}

/* Drops |n| bytes at offset |off| of the buffer. */
static void buf_drop(struct http_conn *c, size_t off, size_t n) {
  memmove(c->buf + off, c->buf + off + n, c->len - off - n);
  c->len -= n;
}

/* Answers the complete requests in the buffer, in order, one at a time: the next only
 * once the previous answer is written, so a client that pipelines requests and reads no
 * answer holds one answer's memory, not a queue. */
void hconn_process(struct http_conn *c) {
  while (!c->closing && !c->close_after_write && !c->deferred) {
    if (hconn_answering(c)) {
      c->paused = true;
      return;
    }
    if (!c->head_done) {
      if (c->len == 0) {
        return;
      }
      enum http_parse_result res = http_parser_execute(&c->parser, c->buf, c->len);
      if (res == HTTP_PARSE_INCOMPLETE) {
        return;
      }
      if (res == HTTP_PARSE_ERROR) {
        LOG_DEBUGF(c->server->cfg.name, "%s: bad request: %d %s", c->peer, c->parser.error_status,
                   c->parser.error_reason);
        hconn_respond_error(c, c->parser.error_status, c->parser.error_reason);
        c->len = 0;
        return;
      }
      c->head_done = true;
      c->sent_continue = false;
      c->body_left = c->parser.req.content_length;
    }
    const struct http_request *req = &c->parser.req;
    size_t body_here = c->len - req->head_len;
    size_t take = body_here < c->body_left ? body_here : (size_t)c->body_left;
    size_t cap_before = c->body.cap;
    textbuf_append(&c->body, c->buf + req->head_len, take);
    c->server->body_bytes += body_charge(c->body.cap) - body_charge(cap_before);
    uint64_t budget = c->server->cfg.limits.max_body_in_flight;
    if (c->body.failed || (budget != 0 && c->server->body_bytes > budget)) {
      bool busy = !c->body.failed;
      LOG_DEBUGF(c->server->cfg.name, "%s: request bodies hold %" PRIu64 " bytes, over %" PRIu64,
                 c->peer, c->server->body_bytes, budget);
      body_release(c);
      hconn_respond_error(
          c, 503,
          busy ? "too many request bodies in flight: retry" : "out of memory for the request body");
      c->len = 0;
      return;
    }
    buf_drop(c, req->head_len, take);
    c->body_left -= take;
    if (c->body_left > 0) {
      if (req->expect_continue && req->minor_version == 1 && !c->sent_continue) {
        static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        c->sent_continue = true;
        hconn_write(c, kContinue, sizeof(kContinue) - 1);
      }
      return;
    }
    LOG_DEBUGF(c->server->cfg.name, "%s: %.*s %.*s", c->peer, (int)req->method.len,
               c->buf + req->method.off, (int)req->target.len, c->buf + req->target.off);
    hconn_dispatch(c);
    if (c->closing || c->deferred) {
      return;
    }
    hconn_finish_request(c);
  }
}

/* Drops the answered request's head and body; the next request, or the wait for it, gets
 * a fresh deadline. */
void hconn_finish_request(struct http_conn *c) {
  buf_drop(c, 0, c->parser.req.head_len);
  body_release(c);
  c->head_done = false;
  http_parser_init(&c->parser, c->server->cfg.limits.max_body);
  hconn_restart_timer(c, c->server->cfg.limits.timeout_ms);
}

/* ---- Start and stop ---- */
/* ---- Start and stop ---- */

static void on_listener_closed(struct acceptor *a) {
  hserver_release(a->data);
}

struct http_server *http_server_start(uv_loop_t *loop, const struct hostport *listen,
                                      const struct http_server_config *cfg, char *err,
                                      size_t err_len) {
  struct http_server *server = calloc(1, sizeof(*server));
  if (server == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  server->loop = loop;
  server->cfg = *cfg;
  list_init(&server->conns);
  list_init(&server->sources);
  if (acceptor_open(&server->acceptor, listen, false, HTTP_SERVER_BACKLOG, err, err_len) != 0) {
    free(server);
    return NULL;
  }
  server->acceptor.data = server;
  server->open_handles = 1;
  int r = acceptor_start(&server->acceptor, loop, hserver_on_accept);
  if (r != 0) {
    char where[NETADDR_HOSTPORT_MAX];
    snprintf(err, err_len, "%s: %s", netaddr_format_hostport(where, sizeof(where), listen),
             uv_strerror(r));
    server->closing = true;
    acceptor_close(&server->acceptor, on_listener_closed);
    return NULL;
  }
  return server;
}

void http_server_close(struct http_server *server) {
  if (server == NULL || server->closing) {
    return;
  }
  server->closing = true;
  acceptor_close(&server->acceptor, on_listener_closed);
  while (!list_empty(&server->conns)) {
    hconn_close(LIST_ENTRY(server->conns.next, struct http_conn, link));
  }
}
