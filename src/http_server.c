/* http_server: a bounded HTTP/1.1 server on a libuv loop (see mtlsd/http_server.h).
 *
 * Every process in the pod can reach the ports it serves, so it defends itself before it
 * serves: at most limits.max_connections connections (more are answered 503 and
 * closed), request heads parsed by the strict http_parser (16 KiB at most), bodies of
 * at most 64 KiB that are read and thrown away (no route takes one), limits.timeout_ms
 * for each request to arrive and be answered, and no more than WRITE_HIGH bytes of
 * responses queued for a client that pipelines requests but does not read the answers.
 * A bad request gets its 4xx and the connection is closed; the server goes on.
 *
 * Connections are kept alive and pipelined requests are answered in order: every route
 * answers at once, on this thread, so responses are queued in request order. After a
 * final response the connection is shut down for writing and the client's remaining
 * bytes are read and dropped for a moment ("lingering close"), so that the kernel does
 * not reset the connection and destroy the response before the client has read it.
 *
 * Each connection embeds its TCP handle and its timer and is freed when both close
 * callbacks have run; struct http_server itself is freed once its listener and every
 * connection are closed. */
#include "mtlsd/http_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "mtlsd/log.h"

/* The buffer holds one request head (HTTP_MAX_HEAD) and some of what follows it. */
#define BUF_SIZE (HTTP_MAX_HEAD + 4096)
/* Stop reading pipelined requests while this much response data waits to be written;
 * start again below WRITE_LOW. */
#define WRITE_HIGH ((size_t)1024 * 1024)
#define WRITE_LOW ((size_t)256 * 1024)

struct http_server {
  uv_loop_t *loop;
  struct http_server_config cfg;
  uv_tcp_t listener;
  struct http_exchange *conns; /* Open connections, not yet closing. */
  size_t conn_count;
  size_t open_handles; /* The listener and every connection whose close has not ended. */
  bool closing;
};

/* One client connection and its current request. */
struct http_exchange {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown;
  struct http_server *server;
  struct http_exchange *prev, *next;
  char peer[NETADDR_STR_MAX];

  struct http_parser parser;
  bool head_done;     /* |parser| has the current request's head. */
  uint64_t body_left; /* Body bytes of the current request not received yet. */
  bool sent_continue; /* "100 Continue" went out for the current request. */

  size_t write_queued;    /* Bytes of responses not yet written. */
  int pending_closes;     /* Handles whose close callback has not run yet. */
  bool closing;           /* uv_close was called. */
  bool close_after_write; /* The last queued response is final. */
  bool lingering;         /* Shut down for writing; dropping the client's bytes. */
  bool paused;            /* Requests wait until the queued responses drain. */
  bool eof;               /* The client will send nothing more. */
  bool reading;
  bool head_only; /* The current request is a HEAD: answers carry no body. */
  bool deferred;  /* The route answers later (http_defer); nothing more is read until then. */
  void (*abort)(void *arg); /* Tells the deferring route that |x| is gone. */
  void *abort_arg;
  bool in_route; /* A route is running: an answer now is not a late one. */

  size_t len; /* Bytes in |buf|: the current request's head, then what followed. */
  char buf[BUF_SIZE];
};

/* One response being written; freed in its write callback. */
struct pending_write {
  uv_write_t req;
  struct http_exchange *conn;
  size_t len;
  char data[];
};

static void conn_close(struct http_exchange *c);
static void conn_process(struct http_exchange *c);
static void conn_settle(struct http_exchange *c);
static void on_timer(uv_timer_t *timer);

static void server_release(struct http_server *server) {
  if (--server->open_handles == 0 && server->closing) {
    free(server);
  }
}

/* ---- Responses ---- */

static void on_write(uv_write_t *req, int status) {
  struct pending_write *w = req->data;
  struct http_exchange *c = w->conn;
  c->write_queued -= w->len;
  free(w);
  if (c->closing) {
    return;
  }
  if (status < 0) {
    LOG_DEBUGF(c->server->cfg.name, "%s: write failed: %s", c->peer, uv_strerror(status));
    conn_close(c);
    return;
  }
  conn_settle(c);
}

/* Queues |len| bytes of |data| (copied) for the client. */
static void conn_write(struct http_exchange *c, const char *data, size_t len) {
  struct pending_write *w = malloc(sizeof(*w) + len);
  if (w == NULL) {
    conn_close(c);
    return;
  }
  memcpy(w->data, data, len);
  w->conn = c;
  w->len = len;
  w->req.data = w;
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
  if (r != 0) {
    /* The callback never runs for a write that failed to start. */
    free(w);
    conn_close(c);
    return;
  }
  c->write_queued += len;
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
    conn_settle(x);
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

static void on_conn_closed(uv_handle_t *handle) {
  struct http_exchange *c = handle->data;
  if (--c->pending_closes > 0) {
    return;
  }
  struct http_server *server = c->server;
  free(c);
  server_release(server);
}

static void conn_close(struct http_exchange *c) {
  if (c->closing) {
    return;
  }
  c->closing = true;
  abort_deferred(c);
  struct http_server *server = c->server;
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    server->conns = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  server->conn_count--;
  c->pending_closes = 2;
  /* Pending writes and the shutdown are cancelled; their callbacks run before these. */
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_timer(uv_timer_t *timer) {
  struct http_exchange *c = timer->data;
  if (c->deferred) {
    abort_deferred(c);
    http_respond_text(c, 503, "no answer in time");
    return;
  }
  if (c->lingering || c->close_after_write || c->write_queued > 0) {
    /* The client stopped reading, or lingering is over. */
    conn_close(c);
    return;
  }
  if (c->len > 0 || c->head_done) {
    LOG_DEBUGF(c->server->cfg.name, "%s: request not received within %llu ms", c->peer,
               (unsigned long long)c->server->cfg.limits.timeout_ms);
    respond_error(c, 408, "request not received in time");
    /* Bounds the wait for a client that does not read the 408 either. */
    uv_timer_start(&c->timer, on_timer, c->server->cfg.limits.linger_ms, 0);
    conn_settle(c);
    return;
  }
  conn_close(c);
}

static void restart_timer(struct http_exchange *c, uint64_t ms) {
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  struct http_exchange *c = handle->data;
  /* conn_process keeps at most one partial head (HTTP_MAX_HEAD) here, so there is room. */
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  struct http_exchange *c = stream->data;
  if (nread == 0 || c->closing) {
    return;
  }
  if (nread < 0) {
    if (nread != UV_EOF) {
      LOG_DEBUGF(c->server->cfg.name, "%s: read failed: %s", c->peer, uv_strerror((int)nread));
      conn_close(c);
      return;
    }
    c->eof = true;
    if (c->lingering) {
      conn_close(c);
      return;
    }
    conn_settle(c);
    return;
  }
  if (c->lingering || c->close_after_write) {
    /* Dropped: nothing after a final response is a request. */
    return;
  }
  if (c->len == 0 && !c->head_done) {
    /* The first byte of a request starts its deadline. */
    restart_timer(c, c->server->cfg.limits.timeout_ms);
  }
  c->len += (size_t)nread;
  conn_process(c);
  conn_settle(c);
}

static void update_reading(struct http_exchange *c) {
  bool want = !c->closing && !c->eof &&
              (c->lingering || (!c->paused && !c->close_after_write && !c->deferred));
  if (want == c->reading) {
    return;
  }
  if (want) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
      conn_close(c);
      return;
    }
  } else {
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
  c->reading = want;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct http_exchange *c = req->data;
  if (status < 0 && !c->closing) {
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
  c->shutdown.data = c;
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  restart_timer(c, c->server->cfg.limits.linger_ms);
  update_reading(c);
}

/* Decides what the connection does next once a read or a write has completed. */
static void conn_settle(struct http_exchange *c) {
  if (c->closing || c->lingering) {
    return;
  }
  if (c->paused && c->write_queued < WRITE_LOW) {
    c->paused = false;
    conn_process(c);
    if (c->closing) {
      return;
    }
  }
  if (c->write_queued == 0) {
    if (c->close_after_write) {
      start_linger(c);
      return;
    }
    if (c->eof) {
      conn_close(c);
      return;
    }
  }
  update_reading(c);
}

/* Drops |n| bytes at offset |off| of the buffer. */
static void buf_drop(struct http_exchange *c, size_t off, size_t n) {
  memmove(c->buf + off, c->buf + off + n, c->len - off - n);
  c->len -= n;
}

/* Answers every complete request in the buffer, in order, until one is incomplete, the
 * connection is to close, or too much output is queued. */
static void conn_process(struct http_exchange *c) {
  while (!c->closing && !c->close_after_write && !c->deferred) {
    if (c->write_queued >= WRITE_HIGH) {
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

/* Drops the answered request's head; the next request, or the wait for it, gets a fresh
 * deadline. */
static void finish_request(struct http_exchange *c) {
  buf_drop(c, 0, c->parser.req.head_len);
  c->head_done = false;
  http_parser_init(&c->parser);
  restart_timer(c, c->server->cfg.limits.timeout_ms);
}

static void on_refused_closed(uv_handle_t *handle) {
  free(handle);
}

/* Over the connection limit: accept, answer 503 if the socket takes it at once, close. */
static void refuse_connection(struct http_server *server) {
  uv_tcp_t *tcp = malloc(sizeof(*tcp));
  if (tcp == NULL || uv_tcp_init(server->loop, tcp) != 0) {
    free(tcp);
    return;
  }
  if (uv_accept((uv_stream_t *)&server->listener, (uv_stream_t *)tcp) == 0) {
    char body[64], msg[256];
    int body_len = snprintf(body, sizeof(body), "too many %s connections\n", server->cfg.name);
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: " HTTP_CT_TEXT
                     "\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                     body_len, body);
    uv_buf_t buf = uv_buf_init(msg, (unsigned)n);
    (void)uv_try_write((uv_stream_t *)tcp, &buf, 1);
  }
  uv_close((uv_handle_t *)tcp, on_refused_closed);
}

static void on_connection(uv_stream_t *listener, int status) {
  struct http_server *server = listener->data;
  if (status < 0) {
    /* Out of descriptors, most likely: libuv has already dropped the connection. */
    LOG_DEBUGF(server->cfg.name, "accept failed: %s", uv_strerror(status));
    return;
  }
  if (server->closing) {
    return;
  }
  if (server->conn_count >= server->cfg.limits.max_connections) {
    LOG_DEBUGF(server->cfg.name, "refusing a connection: %zu open", server->conn_count);
    refuse_connection(server);
    return;
  }
  struct http_exchange *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    refuse_connection(server);
    return;
  }
  c->server = server;
  uv_tcp_init(server->loop, &c->tcp);
  uv_timer_init(server->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  http_parser_init(&c->parser);
  server->open_handles++;
  server->conn_count++;
  c->next = server->conns;
  if (server->conns != NULL) {
    server->conns->prev = c;
  }
  server->conns = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  struct sockaddr_storage peer;
  int peer_len = sizeof(peer);
  snprintf(c->peer, sizeof(c->peer), "?");
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &peer_len) == 0) {
    netaddr_format(c->peer, (struct sockaddr *)&peer);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  restart_timer(c, server->cfg.limits.timeout_ms);
  update_reading(c);
}

/* ---- Start and stop ---- */

static void on_listener_closed(uv_handle_t *handle) {
  server_release(handle->data);
}

struct http_server *http_server_start(uv_loop_t *loop, const struct hostport *listen,
                                      const struct http_server_config *cfg, char *err,
                                      size_t err_len) {
  char where[NETADDR_HOSTPORT_MAX];
  netaddr_format_hostport(where, sizeof(where), listen);
  struct sockaddr_storage addr;
  socklen_t addr_len;
  if (!netaddr_to_sockaddr(&addr, &addr_len, listen)) {
    snprintf(err, err_len, "%s: not an IP address", where);
    return NULL;
  }
  struct http_server *server = calloc(1, sizeof(*server));
  if (server == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  server->loop = loop;
  server->cfg = *cfg;
  int r = uv_tcp_init(loop, &server->listener);
  if (r != 0) {
    free(server);
    snprintf(err, err_len, "%s: %s", where, uv_strerror(r));
    return NULL;
  }
  server->listener.data = server;
  server->open_handles = 1;
  r = uv_tcp_bind(&server->listener, (const struct sockaddr *)&addr, 0);
  if (r == 0) {
    r = uv_listen((uv_stream_t *)&server->listener, HTTP_SERVER_BACKLOG, on_connection);
  }
  if (r != 0) {
    snprintf(err, err_len, "%s: %s", where, uv_strerror(r));
    /* The handle is initialised: it is freed through its close callback. */
    server->closing = true;
    uv_close((uv_handle_t *)&server->listener, on_listener_closed);
    return NULL;
  }
  return server;
}

void http_server_close(struct http_server *server) {
  if (server == NULL || server->closing) {
    return;
  }
  server->closing = true;
  uv_close((uv_handle_t *)&server->listener, on_listener_closed);
  while (server->conns != NULL) {
    conn_close(server->conns);
  }
}
