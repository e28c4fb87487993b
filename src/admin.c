/* admin: the admin port (SPEC section 5), an HTTP/1.1 server on the main thread's loop.
 *
 * Every process in the pod can reach this port, so it defends itself before it serves:
 * at most ADMIN_MAX_CONNECTIONS connections (more are answered 503 and closed), request
 * heads parsed by the strict http_parser (16 KiB at most), bodies of at most 64 KiB that
 * are read and thrown away (no endpoint takes one), 10 seconds for each request to
 * arrive and be answered, and no more than ADMIN_WRITE_HIGH bytes of responses queued
 * for a client that pipelines requests but does not read the answers. A bad request gets
 * its 4xx and the connection is closed; the server goes on.
 *
 * Connections are kept alive and pipelined requests are answered in order: every
 * endpoint answers at once, on this thread, so responses are queued in request order.
 * After a final response the connection is shut down for writing and the client's
 * remaining bytes are read and dropped for a moment ("lingering close"), so that the
 * kernel does not reset the connection and destroy the response before the client has
 * read it.
 *
 * Each connection embeds its TCP handle and its timer and is freed when both close
 * callbacks have run; struct admin itself is freed once its listener and every
 * connection are closed. */
#include "mtlsd/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "mtlsd/config.h"
#include "mtlsd/http_parser.h"
#include "mtlsd/log.h"
#include "mtlsd/netaddr.h"
#include "mtlsd/server.h"
#include "mtlsd/stats.h"
#include "mtlsd/tls.h"

/* A pod has a kubelet, a Prometheus and an operator's curl; 64 is plenty for them and
 * bounds what a misbehaving neighbour can hold. */
#define ADMIN_MAX_CONNECTIONS 64
/* Time for a request to arrive in full and for its answer to be written, and the time
 * an idle keep-alive connection is kept. */
#define ADMIN_TIMEOUT_MS 10000
/* How long the client's bytes are drained after a final response. */
#define ADMIN_LINGER_MS 2000
/* The buffer holds one request head (HTTP_MAX_HEAD) and some of what follows it. */
#define ADMIN_BUF_SIZE (HTTP_MAX_HEAD + 4096)
/* Stop reading pipelined requests while this much response data waits to be written;
 * start again below ADMIN_WRITE_LOW. */
#define ADMIN_WRITE_HIGH (1024 * 1024)
#define ADMIN_WRITE_LOW (256 * 1024)

#define CT_TEXT "text/plain; charset=utf-8"
#define CT_JSON "application/json"
#define CT_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"

struct admin_conn;

struct admin {
  struct server *srv;
  uv_tcp_t listener;
  struct admin_conn *conns; /* Open connections, not yet closing. */
  size_t conn_count;
  size_t open_handles; /* The listener and every connection whose close has not ended. */
  bool closing;
};

struct admin_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown;
  struct admin *admin;
  struct admin_conn *prev, *next;
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

  size_t len; /* Bytes in |buf|: the current request's head, then what followed. */
  char buf[ADMIN_BUF_SIZE];
};

/* One response being written; freed in its write callback. */
struct admin_write {
  uv_write_t req;
  struct admin_conn *conn;
  size_t len;
  char data[];
};

/* What a handler answers. |body| is borrowed for the duration of the call. */
struct response {
  int status;
  const char *content_type;
  const char *body;
  size_t body_len;
  const char *allow; /* For 405. */
  bool close;        /* Close the connection after this response. */
};

static void conn_close(struct admin_conn *c);
static void conn_process(struct admin_conn *c);
static void conn_settle(struct admin_conn *c);

static void admin_release(struct admin *admin) {
  if (--admin->open_handles == 0 && admin->closing) {
    free(admin);
  }
}

/* ---- Responses ---- */

static void on_write(uv_write_t *req, int status) {
  struct admin_write *w = req->data;
  struct admin_conn *c = w->conn;
  c->write_queued -= w->len;
  free(w);
  if (c->closing) {
    return;
  }
  if (status < 0) {
    LOG_DEBUGF("admin", "%s: write failed: %s", c->peer, uv_strerror(status));
    conn_close(c);
    return;
  }
  conn_settle(c);
}

/* Queues |len| bytes of |data| (copied) for the client. */
static void conn_write(struct admin_conn *c, const char *data, size_t len) {
  struct admin_write *w = malloc(sizeof(*w) + len);
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
 * HEAD) while keeping its Content-Length. */
static void conn_respond(struct admin_conn *c, const struct response *r, bool head_only) {
  const struct http_request *req = &c->parser.req;
  bool close = r->close || c->admin->closing || !c->head_done || !req->keep_alive;
  /* A text body ends with a newline, so that curl's output ends with one too. */
  bool newline = r->body_len > 0 && r->body[r->body_len - 1] != '\n';
  size_t body_len = r->body_len + (newline ? 1 : 0);

  char head[512];
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s%s\r\n",
                   r->status, http_status_text(r->status), r->content_type, body_len,
                   r->allow != NULL ? "Allow: " : "", r->allow != NULL ? r->allow : "",
                   r->allow != NULL ? "\r\n" : "",
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

static void respond_text(struct admin_conn *c, int status, const char *text, bool head_only) {
  struct response r = {status, CT_TEXT, text, strlen(text), NULL, false};
  conn_respond(c, &r, head_only);
}

/* Answers a request that cannot be parsed, then closes: after a framing error nothing
 * that follows can be trusted to start a request. */
static void respond_error(struct admin_conn *c, int status, const char *reason) {
  char body[256];
  snprintf(body, sizeof(body), "%s\n", reason);
  struct response r = {status, CT_TEXT, body, strlen(body), NULL, true};
  conn_respond(c, &r, false);
}

/* Answers |json| (which it deletes) with |status|. */
static void respond_json(struct admin_conn *c, int status, cJSON *json, bool head_only) {
  char *text = json != NULL ? cJSON_PrintUnformatted(json) : NULL;
  cJSON_Delete(json);
  if (text == NULL) {
    respond_text(c, 500, "out of memory", head_only);
    return;
  }
  struct response r = {status, CT_JSON, text, strlen(text), NULL, false};
  conn_respond(c, &r, head_only);
  free(text);
}

/* Answers |body| (which it frees), or 500 when it is NULL. */
static void respond_owned(struct admin_conn *c, const char *content_type, char *body,
                          bool head_only) {
  if (body == NULL) {
    respond_text(c, 500, "out of memory", head_only);
    return;
  }
  struct response r = {200, content_type, body, strlen(body), NULL, false};
  conn_respond(c, &r, head_only);
  free(body);
}

/* ---- Endpoints ---- */

static void handle_healthz(struct admin_conn *c, bool head_only) {
  respond_text(c, 200, "ok\n", head_only);
}

static void handle_ready(struct admin_conn *c, bool head_only) {
  char reason[600];
  if (server_ready(c->admin->srv, reason, sizeof(reason))) {
    respond_text(c, 200, "ready\n", head_only);
    return;
  }
  respond_text(c, 503, reason, head_only);
}

static void handle_stats(struct admin_conn *c, bool head_only) {
  respond_owned(c, CT_JSON, stats_render_json(c->admin->srv->stats), head_only);
}

static void handle_prometheus(struct admin_conn *c, bool head_only) {
  respond_owned(c, CT_PROMETHEUS, stats_render_prometheus(c->admin->srv->stats), head_only);
}

static void handle_config(struct admin_conn *c, bool head_only) {
  respond_owned(c, CT_JSON, config_to_json(c->admin->srv->cfg), head_only);
}

/* Moves the members "leaf" and "bundle" of tls_certset_info_json's text into |root|. */
static bool add_certset_info(cJSON *root, const struct tls_certset *set) {
  char *text = tls_certset_info_json(set);
  cJSON *info = text != NULL ? cJSON_Parse(text) : NULL;
  free(text);
  cJSON *leaf = cJSON_DetachItemFromObjectCaseSensitive(info, "leaf");
  cJSON *bundle = cJSON_DetachItemFromObjectCaseSensitive(info, "bundle");
  cJSON_Delete(info);
  if (leaf == NULL || bundle == NULL) {
    cJSON_Delete(leaf);
    cJSON_Delete(bundle);
    return false;
  }
  cJSON_AddItemToObject(root, "leaf", leaf);
  cJSON_AddItemToObject(root, "bundle", bundle);
  return true;
}

static void handle_certs(struct admin_conn *c, bool head_only) {
  struct server *srv = c->admin->srv;
  cJSON *root = cJSON_CreateObject();
  cJSON_AddNumberToObject(root, "generation", (double)atomic_load(&srv->tls_generation));

  pthread_mutex_lock(&srv->tls_lock);
  int64_t when = srv->last_reload_time;
  bool ok = srv->last_reload_ok;
  char error[sizeof(srv->last_reload_error)];
  snprintf(error, sizeof(error), "%s", srv->last_reload_error);
  pthread_mutex_unlock(&srv->tls_lock);
  if (when == 0) {
    cJSON_AddNullToObject(root, "last_reload");
  } else {
    cJSON *last = cJSON_AddObjectToObject(root, "last_reload");
    char stamp[32];
    log_time_rfc3339(stamp, sizeof(stamp), when);
    cJSON_AddStringToObject(last, "time", stamp);
    cJSON_AddStringToObject(last, "result", ok ? "ok" : "failed");
    if (ok) {
      cJSON_AddNullToObject(last, "error");
    } else {
      cJSON_AddStringToObject(last, "error", error);
    }
  }

  struct tls_contexts *ctxs = server_acquire_tls(srv);
  bool have_info = ctxs != NULL && add_certset_info(root, tls_contexts_certset(ctxs));
  tls_contexts_free(ctxs);
  if (!have_info) {
    cJSON_AddNullToObject(root, "leaf");
    cJSON_AddArrayToObject(root, "bundle");
  }
  respond_json(c, 200, root, head_only);
}

static void handle_server_info(struct admin_conn *c, bool head_only) {
  struct server *srv = c->admin->srv;
  int state = atomic_load(&srv->state);
  bool draining = state == SERVER_DRAINING || state == SERVER_STOPPED;
  char started[32];
  log_time_rfc3339(started, sizeof(started), srv->start_time);
  int64_t uptime = (int64_t)time(NULL) - srv->start_time;

  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "version", MTLSD_VERSION);
  cJSON_AddStringToObject(root, "boringssl", tls_library_version());
  cJSON_AddStringToObject(root, "libuv", uv_version_string());
  cJSON_AddStringToObject(root, "cjson", cJSON_Version());
  cJSON_AddNumberToObject(root, "uptime_seconds", (double)(uptime > 0 ? uptime : 0));
  cJSON_AddStringToObject(root, "start_time", started);
  cJSON_AddNumberToObject(root, "workers", (double)srv->cfg->workers);
  cJSON_AddStringToObject(root, "state", draining ? "draining" : "live");
  respond_json(c, 200, root, head_only);
}

/* Reads ?dry_run: absent, "0" or "false" is a real reload; "1", "true" or a bare
 * "dry_run" only validates. Returns false on any other value. */
static bool parse_dry_run(bool *out, const struct admin_conn *c) {
  struct http_span v;
  *out = false;
  if (!http_query_param(&v, c->buf, c->parser.req.query, "dry_run")) {
    return true;
  }
  if (v.len == 0 || http_span_equal(c->buf, v, "1") || http_span_equal(c->buf, v, "true")) {
    *out = true;
    return true;
  }
  return http_span_equal(c->buf, v, "0") || http_span_equal(c->buf, v, "false");
}

/* POST /reload: 200 when the set is valid (and, unless a dry run, loaded), 422 when the
 * files are invalid: the request was fine, what it asked to load was not. */
static void handle_reload(struct admin_conn *c, bool head_only) {
  struct server *srv = c->admin->srv;
  bool dry_run;
  if (!parse_dry_run(&dry_run, c)) {
    respond_text(c, 400, "dry_run must be 1, true, 0 or false", head_only);
    return;
  }
  log_write(LOG_INFO, "admin", "%s: POST /reload%s", c->peer, dry_run ? " (dry run)" : "");
  char msg[600];
  bool ok = server_reload_certs(srv, dry_run, msg, sizeof(msg));
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "result", ok ? "ok" : "failed");
  cJSON_AddBoolToObject(root, "dry_run", dry_run);
  cJSON_AddStringToObject(root, ok ? "message" : "error", msg);
  cJSON_AddNumberToObject(root, "generation", (double)atomic_load(&srv->tls_generation));
  respond_json(c, ok ? 200 : 422, root, head_only);
}

static void handle_drain(struct admin_conn *c, bool head_only) {
  log_write(LOG_INFO, "admin", "%s: POST /drain", c->peer);
  server_request_drain(c->admin->srv, false);
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "result", "draining");
  cJSON_AddBoolToObject(root, "exit", false);
  respond_json(c, 202, root, head_only);
}

static void handle_quit(struct admin_conn *c, bool head_only) {
  log_write(LOG_INFO, "admin", "%s: POST /quitquitquit", c->peer);
  server_request_drain(c->admin->srv, true);
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "result", "draining");
  cJSON_AddBoolToObject(root, "exit", true);
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  /* The process is about to go: say so, rather than invite another request. */
  struct response r = {202,  CT_JSON, text != NULL ? text : "{}", text != NULL ? strlen(text) : 2,
                       NULL, true};
  conn_respond(c, &r, head_only);
  free(text);
}

enum route_method { ROUTE_GET, ROUTE_POST };

struct route {
  const char *path;
  enum route_method method;
  bool lifecycle; /* Turned off (404) by admin.lifecycle: false. */
  void (*handle)(struct admin_conn *c, bool head_only);
};

static const struct route kRoutes[] = {
    {"/healthz", ROUTE_GET, false, handle_healthz},
    {"/ready", ROUTE_GET, false, handle_ready},
    {"/stats", ROUTE_GET, false, handle_stats},
    {"/stats/prometheus", ROUTE_GET, false, handle_prometheus},
    {"/metrics", ROUTE_GET, false, handle_prometheus},
    {"/certs", ROUTE_GET, false, handle_certs},
    {"/config", ROUTE_GET, false, handle_config},
    {"/server_info", ROUTE_GET, false, handle_server_info},
    {"/reload", ROUTE_POST, true, handle_reload},
    {"/drain", ROUTE_POST, true, handle_drain},
    {"/quitquitquit", ROUTE_POST, true, handle_quit},
};

/* Answers the request whose head is at the start of c->buf. */
static void dispatch(struct admin_conn *c) {
  const struct http_request *req = &c->parser.req;
  const char *buf = c->buf;
  const struct route *route = NULL;
  for (size_t i = 0; i < sizeof(kRoutes) / sizeof(kRoutes[0]); i++) {
    if (http_span_equal(buf, req->path, kRoutes[i].path)) {
      route = &kRoutes[i];
      break;
    }
  }
  if (route != NULL && route->lifecycle && !c->admin->srv->cfg->admin.lifecycle) {
    route = NULL;
  }
  bool is_head = http_span_equal(buf, req->method, "HEAD");
  if (route == NULL) {
    respond_text(c, 404, "not found", is_head);
    return;
  }
  bool allowed = route->method == ROUTE_GET ? is_head || http_span_equal(buf, req->method, "GET")
                                            : http_span_equal(buf, req->method, "POST");
  if (!allowed) {
    static const char kBody[] = "method not allowed\n";
    struct response r = {
        405,  CT_TEXT, kBody, sizeof(kBody) - 1, route->method == ROUTE_GET ? "GET, HEAD" : "POST",
        false};
    conn_respond(c, &r, is_head);
    return;
  }
  route->handle(c, is_head);
}

/* ---- Connections ---- */

static void on_conn_closed(uv_handle_t *handle) {
  struct admin_conn *c = handle->data;
  if (--c->pending_closes > 0) {
    return;
  }
  struct admin *admin = c->admin;
  free(c);
  admin_release(admin);
}

static void conn_close(struct admin_conn *c) {
  if (c->closing) {
    return;
  }
  c->closing = true;
  struct admin *admin = c->admin;
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    admin->conns = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  admin->conn_count--;
  c->pending_closes = 2;
  /* Pending writes and the shutdown are cancelled; their callbacks run before these. */
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_timer(uv_timer_t *timer) {
  struct admin_conn *c = timer->data;
  if (c->lingering || c->close_after_write || c->write_queued > 0) {
    /* The client stopped reading, or lingering is over. */
    conn_close(c);
    return;
  }
  if (c->len > 0 || c->head_done) {
    LOG_DEBUGF("admin", "%s: request not received within %d s", c->peer, ADMIN_TIMEOUT_MS / 1000);
    respond_error(c, 408, "request not received in time");
    /* Bounds the wait for a client that does not read the 408 either. */
    uv_timer_start(&c->timer, on_timer, ADMIN_LINGER_MS, 0);
    conn_settle(c);
    return;
  }
  conn_close(c);
}

static void restart_timer(struct admin_conn *c, uint64_t ms) {
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  struct admin_conn *c = handle->data;
  /* conn_process keeps at most one partial head (HTTP_MAX_HEAD) here, so there is room. */
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  struct admin_conn *c = stream->data;
  if (nread == 0 || c->closing) {
    return;
  }
  if (nread < 0) {
    if (nread != UV_EOF) {
      LOG_DEBUGF("admin", "%s: read failed: %s", c->peer, uv_strerror((int)nread));
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
    restart_timer(c, ADMIN_TIMEOUT_MS);
  }
  c->len += (size_t)nread;
  conn_process(c);
  conn_settle(c);
}

static void update_reading(struct admin_conn *c) {
  bool want = !c->closing && !c->eof && (c->lingering || (!c->paused && !c->close_after_write));
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
  struct admin_conn *c = req->data;
  if (status < 0 && !c->closing) {
    conn_close(c);
  }
}

/* The final response is written: send FIN, then drop what the client still sends until
 * it closes or ADMIN_LINGER_MS pass. */
static void start_linger(struct admin_conn *c) {
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
  restart_timer(c, ADMIN_LINGER_MS);
  update_reading(c);
}

/* Decides what the connection does next once a read or a write has completed. */
static void conn_settle(struct admin_conn *c) {
  if (c->closing || c->lingering) {
    return;
  }
  if (c->paused && c->write_queued < ADMIN_WRITE_LOW) {
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
static void buf_drop(struct admin_conn *c, size_t off, size_t n) {
  memmove(c->buf + off, c->buf + off + n, c->len - off - n);
  c->len -= n;
}

/* Answers every complete request in the buffer, in order, until one is incomplete, the
 * connection is to close, or too much output is queued. */
static void conn_process(struct admin_conn *c) {
  while (!c->closing && !c->close_after_write) {
    if (c->write_queued >= ADMIN_WRITE_HIGH) {
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
        LOG_DEBUGF("admin", "%s: bad request: %d %s", c->peer, c->parser.error_status,
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
    LOG_DEBUGF("admin", "%s: %.*s %.*s", c->peer, (int)req->method.len, c->buf + req->method.off,
               (int)req->target.len, c->buf + req->target.off);
    dispatch(c);
    if (c->closing) {
      return;
    }
    buf_drop(c, 0, req->head_len);
    c->head_done = false;
    http_parser_init(&c->parser);
    /* The next request, or the wait for it, gets a fresh deadline. */
    restart_timer(c, ADMIN_TIMEOUT_MS);
  }
}

static void on_refused_closed(uv_handle_t *handle) {
  free(handle);
}

/* Over the connection limit: accept, answer 503 if the socket takes it at once, close. */
static void refuse_connection(struct admin *admin) {
  uv_tcp_t *tcp = malloc(sizeof(*tcp));
  if (tcp == NULL || uv_tcp_init(&admin->srv->loop, tcp) != 0) {
    free(tcp);
    return;
  }
  if (uv_accept((uv_stream_t *)&admin->listener, (uv_stream_t *)tcp) == 0) {
    static const char kBody[] = "too many admin connections\n";
    char msg[256];
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: " CT_TEXT
                     "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof(kBody) - 1, kBody);
    uv_buf_t buf = uv_buf_init(msg, (unsigned)n);
    (void)uv_try_write((uv_stream_t *)tcp, &buf, 1);
  }
  uv_close((uv_handle_t *)tcp, on_refused_closed);
}

static void on_connection(uv_stream_t *server, int status) {
  struct admin *admin = server->data;
  if (status < 0) {
    /* Out of descriptors, most likely: libuv has already dropped the connection. */
    LOG_DEBUGF("admin", "accept failed: %s", uv_strerror(status));
    return;
  }
  if (admin->closing) {
    return;
  }
  if (admin->conn_count >= ADMIN_MAX_CONNECTIONS) {
    LOG_DEBUGF("admin", "refusing a connection: %d open", ADMIN_MAX_CONNECTIONS);
    refuse_connection(admin);
    return;
  }
  struct admin_conn *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    refuse_connection(admin);
    return;
  }
  c->admin = admin;
  uv_tcp_init(&admin->srv->loop, &c->tcp);
  uv_timer_init(&admin->srv->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  http_parser_init(&c->parser);
  admin->open_handles++;
  admin->conn_count++;
  c->next = admin->conns;
  if (admin->conns != NULL) {
    admin->conns->prev = c;
  }
  admin->conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
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
  restart_timer(c, ADMIN_TIMEOUT_MS);
  update_reading(c);
}

/* ---- Start and stop ---- */

static void on_listener_closed(uv_handle_t *handle) {
  admin_release(handle->data);
}

struct admin *admin_start(struct server *srv, char *err, size_t err_len) {
  const struct hostport *listen = &srv->cfg->admin.listen;
  char where[NETADDR_HOSTPORT_MAX];
  netaddr_format_hostport(where, sizeof(where), listen);
  struct sockaddr_storage addr;
  socklen_t addr_len;
  if (!netaddr_to_sockaddr(&addr, &addr_len, listen)) {
    snprintf(err, err_len, "admin.listen %s: not an IP address", where);
    return NULL;
  }
  struct admin *admin = calloc(1, sizeof(*admin));
  if (admin == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  admin->srv = srv;
  int r = uv_tcp_init(&srv->loop, &admin->listener);
  if (r != 0) {
    free(admin);
    snprintf(err, err_len, "admin.listen %s: %s", where, uv_strerror(r));
    return NULL;
  }
  admin->listener.data = admin;
  admin->open_handles = 1;
  r = uv_tcp_bind(&admin->listener, (const struct sockaddr *)&addr, 0);
  if (r == 0) {
    r = uv_listen((uv_stream_t *)&admin->listener, 128, on_connection);
  }
  if (r != 0) {
    snprintf(err, err_len, "admin.listen %s: %s", where, uv_strerror(r));
    /* The handle is initialised: it is freed through its close callback. */
    admin->closing = true;
    uv_close((uv_handle_t *)&admin->listener, on_listener_closed);
    return NULL;
  }
  log_write(LOG_INFO, "admin", "listening on %s%s", where,
            srv->cfg->admin.lifecycle ? "" : " (lifecycle endpoints off)");
  return admin;
}

void admin_close(struct admin *admin) {
  if (admin == NULL || admin->closing) {
    return;
  }
  admin->closing = true;
  uv_close((uv_handle_t *)&admin->listener, on_listener_closed);
  while (admin->conns != NULL) {
    conn_close(admin->conns);
  }
}
