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
#include "mtlsd/http_server.h"

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

#include "mtlsd/acceptor.h"
#include "mtlsd/list.h"
#include "mtlsd/log.h"
#include "mtlsd/textbuf.h"
#include "mtlsd/tls.h"
#include "mtlsd/transport.h"

/* The buffer holds one request head (HTTP_MAX_HEAD) and some of what follows it. */
#define BUF_SIZE (HTTP_MAX_HEAD + 4096)
/* An answer up to this size is never refused for limits.max_output_in_flight: health
 * checks and admission answers always go out; large ones (metrics) share the budget. */
#define OUTPUT_FREE ((size_t)16 * 1024)
/* Reads per wake-up while lingering: a client that floods a closing connection must not
 * hold the loop; the linger timer ends it. */
enum { LINGER_READS = 16 };

/* A client address and how many connections it has open: what max_per_source counts,
 * and how much of the port a client holds when the port is full. */
struct http_source {
  struct sockaddr_storage addr;
  size_t count;
  struct list_node link; /* In server->sources while it has connections. */
};

struct http_server {
  uv_loop_t *loop;
  struct http_server_config cfg;
  struct acceptor acceptor;
  struct list_node conns;   /* Open connections, not yet closing, newest first. */
  struct list_node sources; /* The addresses of |conns|. */
  size_t conn_count;
  size_t open_handles;   /* The listener and every connection whose close has not ended. */
  uint64_t body_bytes;   /* What the bodies being received hold, for max_body_in_flight. */
  uint64_t output_bytes; /* What the answers being written hold, for max_output_in_flight. */
  bool closing;
};

/* One client connection and its current request. */
struct http_exchange {
  uv_poll_t poll;
  uv_timer_t timer;
  struct http_server *server;
  struct list_node link; /* In server->conns until it starts closing. */
  struct transport xprt;
  struct tls_conn *tls; /* HTTPS only; NULL on plain HTTP. */
  struct http_parser parser;
  uint64_t body_left;  /* Body bytes of the current request not received yet. */
  struct textbuf body; /* The current request's body, as it arrives. */
  struct textbuf out;  /* The answer being written; bytes before |out_off| are written. */
  size_t out_off;
  uint64_t out_charge; /* What |out| takes from limits.max_output_in_flight. */
  /* Loop time at which the connection became idle (accepted, or its last answer
   * written) or its current request began (its first byte): which one gives way first. */
  uint64_t since;
  void (*abort)(void *arg); /* Tells the deferring route that |x| is gone. */
  void *abort_arg;
  int fd;
  int events;                 /* What |poll| waits for now (enum io_wait bits). */
  int read_wait;              /* What the last read (or handshake step) waits for; 0: go on. */
  int write_wait;             /* The readiness the last write, flush or shutdown waits for. */
  int pending_closes;         /* Handles whose close callback has not run yet. */
  struct http_source *source; /* Its address's entry, counting it until it starts closing. */
  char peer[NETADDR_STR_MAX];

  bool handshaking;       /* The TLS handshake has not completed. */
  bool hello_seen;        /* The client's first byte has been looked at. */
  bool head_done;         /* |parser| has the current request's head. */
  bool sent_continue;     /* "100 Continue" went out for the current request. */
  bool closing;           /* uv_close was called. */
  bool close_after_write; /* The last queued response is final. */
  bool lingering;         /* Shut down for writing; dropping the client's bytes. */
  bool shutdown_pending;  /* The shutdown waits for the socket. */
  bool flush_pending;     /* The transport holds answer bytes that wait for the socket. */
  bool paused;            /* The next request waits until the answer is written. */
  bool eof;               /* The client will send nothing more. */
  bool head_only;         /* The current request is a HEAD: answers carry no body. */
  bool deferred; /* The route answers later (http_defer); nothing more is read until then. */
  bool served;   /* An answer has been written: silence now is a kept-alive connection's. */
  bool in_route; /* A route is running: an answer now is not a late one. */

  size_t len; /* Bytes in |buf|: the current request's head, then what followed. */
  char buf[BUF_SIZE];
};

static void conn_close(struct http_exchange *c);
static void conn_process(struct http_exchange *c);
static void conn_pump(struct http_exchange *c);
static void on_timer(uv_timer_t *timer);
static void on_poll(uv_poll_t *handle, int status, int events);

static void server_release(struct http_server *server) {
  if (--server->open_handles == 0 && server->closing) {
    free(server);
  }
}

/* ---- Responses ---- */

static size_t queued(const struct http_exchange *c) {
  return c->out.len - c->out_off;
}

/* Whether an answer is still being written: queued, or held by the transport. */
static bool answering(const struct http_exchange *c) {
  return queued(c) > 0 || c->flush_pending;
}

/* Queues |len| bytes of |data| (copied) for the client; conn_pump writes them. */
static void conn_write(struct http_exchange *c, const char *data, size_t len) {
  textbuf_append(&c->out, data, len);
  if (c->out.failed) {
    conn_close(c);
  }
}

/* What an answer of |len| bytes takes from limits.max_output_in_flight. */
static uint64_t output_charge(size_t len) {
  return len > OUTPUT_FREE ? len - OUTPUT_FREE : 0;
}

/* The answer is written (or the connection gone): its memory and its charge go. */
static void output_release(struct http_exchange *c) {
  c->server->output_bytes -= c->out_charge;
  c->out_charge = 0;
  c->since = uv_now(c->server->loop);
  c->served = true;
  free(c->out.data);
  c->out = (struct textbuf){0};
  c->out_off = 0;
}

/* Writes the response |r| to the current request; |head_only| leaves the body out (for
 * HEAD) while keeping its Content-Length; |allow| is the Allow header of a 405. */
static void conn_respond(struct http_exchange *c, const struct http_response *r, bool head_only,
                         const char *allow) {
  const struct http_request *req = &c->parser.req;
  bool close = r->close || c->server->closing || !c->head_done || !req->keep_alive;
  /* A text body ends with a newline, so that curl's output ends with one too. */
  bool newline = r->body_len > 0 && r->body[r->body_len - 1] != '\n';
  size_t body_len = r->body_len + (newline ? 1 : 0);

  char head[512];
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s%s\r\n",
                   r->status, http_status_text(r->status), r->content_type, body_len,
                   allow != NULL ? "Allow: " : "", allow != NULL ? allow : "",
                   allow != NULL ? "\r\n" : "",
                   close                                     ? "Connection: close\r\n"
                   : c->head_done && req->minor_version == 0 ? "Connection: keep-alive\r\n"
                                                             : "");
  if (n < 0 || (size_t)n >= sizeof(head)) {
    conn_close(c);
    return;
  }
  size_t total = (size_t)n + (head_only ? 0 : body_len);
  struct http_server *server = c->server;
  uint64_t charge = output_charge(total);
  uint64_t budget = server->cfg.limits.max_output_in_flight;
  if (charge > 0 && budget != 0 && server->output_bytes + charge > budget) {
    LOG_DEBUGF(server->cfg.name, "%s: answers being written hold %" PRIu64 " bytes, over %" PRIu64,
               c->peer, server->output_bytes, budget);
    static const char kBusy[] = "too many large answers being written: retry\n";
    struct http_response busy = {503, HTTP_CT_TEXT, kBusy, sizeof(kBusy) - 1, true};
    conn_respond(c, &busy, head_only, NULL);
    return;
  }
  char *out = malloc(total);
  if (out == NULL) {
    conn_close(c);
    return;
  }
  memcpy(out, head, (size_t)n);
  if (!head_only) {
    if (r->body_len > 0) {
      memcpy(out + n, r->body, r->body_len);
    }
    if (newline) {
      out[total - 1] = '\n';
    }
  }
  if (close) {
    c->close_after_write = true;
  }
  server->output_bytes += charge;
  c->out_charge += charge;
  if (c->out.data == NULL) {
    /* The usual case (one answer at a time): the buffer is the answer, no copy. */
    c->out = (struct textbuf){.data = out, .len = total, .cap = total};
    return;
  }
  conn_write(c, out, total);
  free(out);
}

static void finish_request(struct http_exchange *c);

void http_respond(struct http_exchange *x, const struct http_response *r) {
  /* The wait ends before anything is written: a write that fails closes the connection,
   * and that must not tell the route about an exchange it has just answered. */
  bool deferred = x->deferred;
  x->deferred = false;
  x->abort = NULL;
  conn_respond(x, r, x->head_only, NULL);
  if (!deferred) {
    return;
  }
  /* A deferred answer: the request ends now, and the connection goes on from there
   * (unless the route is still running: the loop that called it goes on itself). */
  if (!x->closing && !x->in_route) {
    finish_request(x);
    conn_process(x);
    conn_pump(x);
  }
}

void http_defer(struct http_exchange *x, uint64_t timeout_ms, void (*abort)(void *arg), void *arg) {
  x->deferred = true;
  x->abort = abort;
  x->abort_arg = arg;
  uv_timer_start(&x->timer, on_timer, timeout_ms, 0);
}

/* Tells a deferring route, once, that its exchange is going. */
static void abort_deferred(struct http_exchange *c) {
  void (*abort)(void *arg) = c->abort;
  c->abort = NULL;
  if (abort != NULL) {
    abort(c->abort_arg);
  }
}

void http_respond_text(struct http_exchange *x, int status, const char *text) {
  struct http_response r = {status, HTTP_CT_TEXT, text, strlen(text), false};
  http_respond(x, &r);
}

/* Answers a request that cannot be parsed, then closes: after a framing error nothing
 * that follows can be trusted to start a request. */
static void respond_error(struct http_exchange *c, int status, const char *reason) {
  char body[256];
  snprintf(body, sizeof(body), "%s\n", reason);
  struct http_response r = {status, HTTP_CT_TEXT, body, strlen(body), true};
  conn_respond(c, &r, false, NULL);
}

char *http_json_text(cJSON *json) {
  char *text = json != NULL ? cJSON_PrintUnformatted(json) : NULL;
  cJSON_Delete(json);
  return text;
}

void http_respond_json(struct http_exchange *x, int status, cJSON *json) {
  char *text = http_json_text(json);
  if (text == NULL) {
    http_respond_text(x, 500, "out of memory");
    return;
  }
  struct http_response r = {status, HTTP_CT_JSON, text, strlen(text), false};
  http_respond(x, &r);
  free(text);
}

void http_respond_owned(struct http_exchange *x, const char *content_type, char *body) {
  if (body == NULL) {
    http_respond_text(x, 500, "out of memory");
    return;
  }
  struct http_response r = {200, content_type, body, strlen(body), false};
  http_respond(x, &r);
  free(body);
}

const char *http_exchange_peer(const struct http_exchange *x) {
  return x->peer;
}

const struct http_request *http_exchange_request(const struct http_exchange *x) {
  return &x->parser.req;
}

const char *http_exchange_buf(const struct http_exchange *x) {
  return x->buf;
}

const char *http_exchange_body(const struct http_exchange *x, size_t *len) {
  *len = x->body.len;
  return x->body.data != NULL ? x->body.data : "";
}

/* Answers the request whose head is at the start of c->buf. */
static void dispatch(struct http_exchange *c) {
  const struct http_request *req = &c->parser.req;
  const struct http_server_config *cfg = &c->server->cfg;
  const char *buf = c->buf;
  const struct http_route *route = NULL;
  for (size_t i = 0; i < cfg->route_count; i++) {
    const struct http_route *r = &cfg->routes[i];
    size_t n = strlen(r->path);
    if (r->prefix ? req->path.len > n && memcmp(buf + req->path.off, r->path, n) == 0
                  : http_span_equal(buf, req->path, r->path)) {
      route = &cfg->routes[i];
      break;
    }
  }
  c->head_only = http_span_equal(buf, req->method, "HEAD");
  if (route == NULL) {
    http_respond_text(c, 404, "not found");
    return;
  }
  bool get = route->method == HTTP_ROUTE_GET;
  bool allowed = get ? c->head_only || http_span_equal(buf, req->method, "GET")
                     : http_span_equal(buf, req->method, "POST");
  if (!allowed) {
    static const char kBody[] = "method not allowed\n";
    struct http_response r = {405, HTTP_CT_TEXT, kBody, sizeof(kBody) - 1, false};
    conn_respond(c, &r, c->head_only, get ? "GET, HEAD" : "POST");
    return;
  }
  c->in_route = true;
  route->handle(c, cfg->arg);
  c->in_route = false;
}

/* ---- Connections ---- */

/* What a body of |cap| bytes takes from limits.max_body_in_flight. */
static uint64_t body_charge(size_t cap) {
  return cap > HTTP_MAX_BODY ? cap - HTTP_MAX_BODY : 0;
}

/* Frees the current request's body and gives its memory back to the server's budget. */
static void body_release(struct http_exchange *c) {
  c->server->body_bytes -= body_charge(c->body.cap);
  free(c->body.data);
  c->body = (struct textbuf){0};
}

static void on_conn_closed(uv_handle_t *handle) {
  struct http_exchange *c = handle->data;
  if (--c->pending_closes > 0) {
    return;
  }
  struct http_server *server = c->server;
  tls_conn_free(c->tls);
  close(c->fd);
  output_release(c);
  body_release(c);
  free(c);
  server_release(server);
}

/* Stops counting one connection of |src|, which goes with its last. */
static void source_put(struct http_source *src) {
  if (--src->count == 0) {
    list_remove(&src->link);
    free(src);
  }
}

static void conn_close(struct http_exchange *c) {
  if (c->closing) {
    return;
  }
  c->closing = true;
  abort_deferred(c);
  struct http_server *server = c->server;
  list_remove(&c->link);
  server->conn_count--;
  source_put(c->source);
  c->source = NULL;
  c->pending_closes = 2;
  uv_close((uv_handle_t *)&c->poll, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void restart_timer(struct http_exchange *c, uint64_t ms) {
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *timer) {
  struct http_exchange *c = timer->data;
  if (c->deferred) {
    abort_deferred(c);
    http_respond_text(c, 503, "no answer in time");
    return;
  }
  if (c->handshaking || c->lingering || c->close_after_write || answering(c)) {
    /* No handshake in time, the client stopped reading, or lingering is over. */
    conn_close(c);
    return;
  }
  if (c->len > 0 || c->head_done) {
    LOG_DEBUGF(c->server->cfg.name, "%s: request not received within %llu ms", c->peer,
               (unsigned long long)c->server->cfg.limits.timeout_ms);
    respond_error(c, 408, "request not received in time");
    /* Bounds the wait for a client that does not read the 408 either. */
    restart_timer(c, c->server->cfg.limits.linger_ms);
    conn_pump(c);
    return;
  }
  conn_close(c);
}

static bool want_reading(const struct http_exchange *c) {
  return !c->closing && !c->eof && !c->handshaking &&
         (c->lingering || (!c->paused && !c->close_after_write && !c->deferred));
}

/* Watches the socket for what the connection waits for now. */
static void update_events(struct http_exchange *c) {
  int events = 0;
  if (c->handshaking) {
    events = c->read_wait;
  } else {
    if (want_reading(c)) {
      events |= c->read_wait != 0 ? c->read_wait : IO_WAIT_READ;
    }
    /* Paused with the answer written: more requests wait in the buffer, and the socket's
     * writability brings the connection back for them after the loop's other work. */
    if (answering(c) || c->shutdown_pending || c->paused) {
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
    conn_close(c);
  }
}

/* Whether the client's first byte starts an HTTP method rather than a TLS record (0x16):
 * someone's curl without https://, who is better served by a plain answer saying so
 * than by a TLS alert it cannot read. IO_WANT_READ while nothing has arrived. */
static int speaks_plain_http(struct http_exchange *c) {
  unsigned char first;
  ssize_t n = recv(c->fd, &first, 1, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    return IO_WANT_READ;
  }
  return n == 1 && first >= 'A' && first <= 'Z';
}

/* Advances the TLS handshake; returns whether it has completed. */
static bool handshake(struct http_exchange *c) {
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
      respond_error(c, 400, "this port speaks HTTPS: use https://");
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
  LOG_DEBUGF(c->server->cfg.name, "%s: TLS handshake failed: %s", c->peer,
             detail != NULL ? detail : "?");
  conn_close(c);
  return false;
}

/* Reads what the client sent and answers every request that is complete. */
static void read_in(struct http_exchange *c) {
  for (int reads = 0; want_reading(c); reads++) {
    char drop[4096];
    bool dropping = c->lingering;
    if (dropping && reads >= LINGER_READS) {
      return;
    }
    char *into = dropping ? drop : c->buf + c->len;
    /* conn_process keeps at most one partial head (HTTP_MAX_HEAD) here, so there is room. */
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
        conn_close(c);
      }
      return;
    }
    if (n < 0) {
      LOG_DEBUGF(c->server->cfg.name, "%s: read failed", c->peer);
      conn_close(c);
      return;
    }
    c->read_wait = next == IO_WANT_READ || next == IO_WANT_WRITE ? io_wait_for(next) : 0;
    if (!dropping) {
      if (c->len == 0 && !c->head_done) {
        /* The first byte of a request starts its deadline. */
        restart_timer(c, c->server->cfg.limits.timeout_ms);
        c->since = uv_now(c->server->loop);
      }
      c->len += (size_t)n;
      conn_process(c);
    }
    if (next == IO_EOF) {
      c->eof = true;
    }
    if (next == IO_ERROR) {
      conn_close(c);
      return;
    }
    if (c->read_wait != 0) {
      return;
    }
  }
}

/* Hands the queued responses to the transport. */
static void flush_out(struct http_exchange *c) {
  while (queued(c) > 0) {
    ssize_t n = transport_write(&c->xprt, c->out.data + c->out_off, queued(c));
    if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
      c->write_wait = io_wait_for(n);
      return;
    }
    if (n < 0) {
      LOG_DEBUGF(c->server->cfg.name, "%s: write failed", c->peer);
      conn_close(c);
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
    conn_close(c);
    return;
  }
  c->write_wait = 0;
  /* An idle connection holds no output buffer. */
  output_release(c);
}

/* Ends the stream in our direction (close_notify, then FIN), once it can. */
static void shut_down(struct http_exchange *c) {
  int r = transport_shutdown(&c->xprt);
  c->shutdown_pending = r == IO_WANT_READ || r == IO_WANT_WRITE;
  if (c->shutdown_pending) {
    c->write_wait = io_wait_for(r);
  } else if (r != IO_OK) {
    conn_close(c);
  }
}

/* The final response is written: send FIN, then drop what the client still sends until
 * it closes or limits.linger_ms pass. */
static void start_linger(struct http_exchange *c) {
  c->lingering = true;
  c->len = 0;
  if (c->eof) {
    conn_close(c);
    return;
  }
  restart_timer(c, c->server->cfg.limits.linger_ms);
  shut_down(c);
}

/* Moves the connection as far as it can go now: handshake, reads and the requests they
 * complete, writes, and the close after a final response; then waits for the socket. */
static void conn_pump(struct http_exchange *c) {
  if (c->closing) {
    return;
  }
  if (c->handshaking && !handshake(c)) {
    if (!c->closing) {
      update_events(c);
    }
    return;
  }
  /* A pipelining client whose answer is written may have more complete requests
   * waiting; a few rounds, then the socket's readiness brings the connection back. */
  for (int round = 0; round < 4 && !c->closing; round++) {
    if (c->paused && !answering(c)) {
      c->paused = false;
      conn_process(c);
    }
    if (!c->closing) {
      read_in(c);
    }
    if (!c->closing && answering(c)) {
      flush_out(c);
    }
    if (c->closing || !c->paused || answering(c)) {
      break;
    }
  }
  if (c->closing) {
    return;
  }
  if (c->shutdown_pending) {
    shut_down(c);
  } else if (!answering(c) && !c->lingering) {
    if (c->close_after_write) {
      start_linger(c);
    } else if (c->eof && !c->paused) {
      conn_close(c);
    }
  }
  if (!c->closing) {
    update_events(c);
  }
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)events;
  struct http_exchange *c = handle->data;
  if (status < 0) {
    LOG_DEBUGF(c->server->cfg.name, "%s: socket error: %s", c->peer, uv_strerror(status));
    conn_close(c);
    return;
  }
  conn_pump(c);
}

/* Drops |n| bytes at offset |off| of the buffer. */
static void buf_drop(struct http_exchange *c, size_t off, size_t n) {
  memmove(c->buf + off, c->buf + off + n, c->len - off - n);
  c->len -= n;
}

/* Answers the complete requests in the buffer, in order, one at a time: the next only
 * once the previous answer is written, so a client that pipelines requests and reads no
 * answer holds one answer's memory, not a queue. */
static void conn_process(struct http_exchange *c) {
  while (!c->closing && !c->close_after_write && !c->deferred) {
    if (answering(c)) {
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
        respond_error(c, c->parser.error_status, c->parser.error_reason);
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
      respond_error(
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
        conn_write(c, kContinue, sizeof(kContinue) - 1);
      }
      return;
    }
    LOG_DEBUGF(c->server->cfg.name, "%s: %.*s %.*s", c->peer, (int)req->method.len,
               c->buf + req->method.off, (int)req->target.len, c->buf + req->target.off);
    dispatch(c);
    if (c->closing || c->deferred) {
      return;
    }
    finish_request(c);
  }
}

/* Drops the answered request's head and body; the next request, or the wait for it, gets
 * a fresh deadline. */
static void finish_request(struct http_exchange *c) {
  buf_drop(c, 0, c->parser.req.head_len);
  body_release(c);
  c->head_done = false;
  http_parser_init(&c->parser, c->server->cfg.limits.max_body);
  restart_timer(c, c->server->cfg.limits.timeout_ms);
}

/* Over the connection limit: answer 503 if the socket takes it at once, and close. On
 * HTTPS the client sees the connection close instead: no handshake is spent on it. */
static void refuse_connection(struct http_server *server, int fd) {
  if (server->cfg.tls == NULL) {
    char body[64], msg[256];
    int body_len = snprintf(body, sizeof(body), "too many %s connections\n", server->cfg.name);
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: " HTTP_CT_TEXT
                     "\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                     body_len, body);
    (void)!send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  close(fd);
}

/* What a connection is doing, for choosing which gives its place to a newcomer
 * (sooner_victim): its last answer written and closing (lingering); nothing (idle:
 * between requests, or silent past FRESH_MS); or something, from the least to the most
 * deserving of its place: a request still arriving (or a handshake under way), an answer
 * the client is slow to read, just accepted and not heard from yet (a kubelet's probe
 * sends its request at once, but the loop may not have read it before the next accept),
 * an answer a route is preparing (http_defer: a probe runs for it). */
enum victim_rank {
  RANK_LINGERING,
  RANK_IDLE,
  RANK_RECEIVING,
  RANK_ANSWERING,
  RANK_FRESH,
  RANK_DEFERRED,
  RANK_NEVER /* A route runs for it right now. */
};

/* How long a new connection may be silent and still count as one about to speak. */
enum { FRESH_MS = 1000 };

static enum victim_rank victim_rank(const struct http_exchange *c, uint64_t now) {
  if (c->lingering) {
    return RANK_LINGERING;
  }
  if (c->in_route) {
    return RANK_NEVER;
  }
  if (c->deferred) {
    return RANK_DEFERRED;
  }
  bool silent = c->handshaking ? !c->hello_seen : !c->served && c->len == 0 && !c->head_done;
  if (silent) {
    return now - c->since < FRESH_MS ? RANK_FRESH : RANK_IDLE;
  }
  if (c->handshaking) {
    return RANK_RECEIVING;
  }
  if (answering(c) || c->close_after_write) {
    return RANK_ANSWERING;
  }
  return c->len == 0 && !c->head_done ? RANK_IDLE : RANK_RECEIVING;
}

/* Finds the entry of |addr| into |*out|; false when it has no connection open. A linear
 * search: a port has a few hundred connections at most, and this runs once per
 * accept. */
static bool source_find(struct http_server *server, const struct sockaddr_storage *addr,
                        struct http_source **out) {
  for (struct list_node *n = server->sources.next; n != &server->sources; n = n->next) {
    struct http_source *src = LIST_ENTRY(n, struct http_source, link);
    if (netaddr_same_host((const struct sockaddr *)&src->addr, (const struct sockaddr *)addr)) {
      *out = src;
      return true;
    }
  }
  *out = NULL;
  return false;
}

/* Whether |a| should give its place before |b| (NULL: none yet). A lingering connection
 * first, then an idle one, then one doing something; within idle and within busy, the
 * one whose address holds the most connections (so that no flood, from one address or
 * many, pushes out a client with a few: the kubelet, the API server's requests in
 * flight), then by victim_rank, then the one longest in its state. Candidates are
 * visited from the oldest on, so of two alike the older one, found first, stays
 * chosen. */
static bool sooner_victim(const struct http_exchange *a, const struct http_exchange *b,
                          uint64_t now) {
  enum victim_rank ra = victim_rank(a, now);
  if (ra == RANK_NEVER) {
    return false;
  }
  if (b == NULL) {
    return true;
  }
  enum victim_rank rb = victim_rank(b, now);
  int tier_a = ra == RANK_LINGERING ? 0 : ra == RANK_IDLE ? 1 : 2;
  int tier_b = rb == RANK_LINGERING ? 0 : rb == RANK_IDLE ? 1 : 2;
  if (tier_a != tier_b) {
    return tier_a < tier_b;
  }
  if (a->source->count != b->source->count) {
    return a->source->count > b->source->count;
  }
  if (ra != rb) {
    return ra < rb;
  }
  return a->since < b->since;
}

/* Makes room for a newcomer from |src| (NULL: an address with no connection yet): past
 * limits.max_per_source connections from that address, one of them is closed; past
 * limits.max_connections, one of all (sooner_victim chooses). Returns false (nothing closed) when
 * the newcomer must be refused because a route runs for every candidate (which cannot happen
 * between two loop callbacks, but costs nothing to respect). */
static bool make_room(struct http_server *server, struct http_source *src) {
  const struct http_server_limits *limits = &server->cfg.limits;
  bool over_source =
      limits->max_per_source != 0 && src != NULL && src->count >= limits->max_per_source;
  if (!over_source && server->conn_count < limits->max_connections) {
    return true;
  }
  struct http_exchange *victim = NULL;
  uint64_t now = uv_now(server->loop);
  for (struct list_node *n = server->conns.prev; n != &server->conns; n = n->prev) {
    struct http_exchange *c = LIST_ENTRY(n, struct http_exchange, link);
    if ((!over_source || c->source == src) && sooner_victim(c, victim, now)) {
      victim = c;
    }
  }
  if (victim == NULL) {
    return false;
  }
  LOG_DEBUGF(server->cfg.name, "%s: closed to make room for a newcomer", victim->peer);
  conn_close(victim);
  return true;
}

/* The entry of |addr|, counting one more connection; made when it has none yet. NULL
 * when out of memory. */
static struct http_source *source_get(struct http_server *server,
                                      const struct sockaddr_storage *addr) {
  struct http_source *src;
  if (!source_find(server, addr, &src)) {
    src = calloc(1, sizeof(*src));
    if (src == NULL) {
      return NULL;
    }
    src->addr = *addr;
    list_insert_head(&server->sources, &src->link);
  }
  src->count++;
  return src;
}

static void on_accept(struct acceptor *a, int fd) {
  struct http_server *server = a->data;
  if (server->closing) {
    close(fd);
    return;
  }
  struct sockaddr_storage peer = {0};
  socklen_t peer_len = sizeof(peer);
  if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) != 0) {
    close(fd); /* Reset before it was accepted. */
    return;
  }
  struct http_source *known;
  source_find(server, &peer, &known);
  if (!make_room(server, known)) {
    LOG_DEBUGF(server->cfg.name, "refusing a connection: %zu open", server->conn_count);
    refuse_connection(server, fd);
    return;
  }
  struct http_source *src = source_get(server, &peer);
  if (src == NULL) {
    refuse_connection(server, fd);
    return;
  }
  struct tls_contexts *ctxs = NULL;
  if (server->cfg.tls != NULL) {
    ctxs = server->cfg.tls(server->cfg.arg);
    if (ctxs == NULL) {
      LOG_DEBUGF(server->cfg.name, "refusing a connection: no certificate loaded");
      source_put(src);
      close(fd);
      return;
    }
  }
  struct http_exchange *c = calloc(1, sizeof(*c));
  /* Sessions resume only on this server: a ticket from the mesh must not resume here. */
  static const struct tls_peer_policy kPolicy = {.session_context = "http_server"};
  struct tls_conn *tls = ctxs != NULL && c != NULL ? tls_conn_new_server(ctxs, fd, &kPolicy) : NULL;
  tls_contexts_free(ctxs);
  if (c == NULL || (ctxs != NULL && tls == NULL) || uv_poll_init(server->loop, &c->poll, fd) != 0) {
    source_put(src);
    tls_conn_free(tls);
    free(c);
    refuse_connection(server, fd);
    return;
  }
  c->fd = fd;
  c->server = server;
  c->source = src;
  c->tls = tls;
  c->since = uv_now(server->loop);
  c->handshaking = tls != NULL;
  transport_init_plain(&c->xprt, fd);
  uv_timer_init(server->loop, &c->timer);
  c->poll.data = c;
  c->timer.data = c;
  http_parser_init(&c->parser, server->cfg.limits.max_body);
  server->open_handles++;
  server->conn_count++;
  list_insert_head(&server->conns, &c->link);
  netaddr_format(c->peer, (struct sockaddr *)&peer);
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (server->cfg.limits.send_buffer > 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &server->cfg.limits.send_buffer,
                     sizeof(server->cfg.limits.send_buffer));
  }
  restart_timer(c, server->cfg.limits.timeout_ms);
  conn_pump(c);
}

/* ---- Start and stop ---- */

static void on_listener_closed(struct acceptor *a) {
  server_release(a->data);
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
  int r = acceptor_start(&server->acceptor, loop, on_accept);
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
    conn_close(LIST_ENTRY(server->conns.next, struct http_exchange, link));
  }
}
