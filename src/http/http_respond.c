/* http_respond: the answers of the HTTP server and the API its routes answer through
 * (see mtlsd/http_server.h): one request at a time per connection, large answers within
 * the shared max_output_in_flight budget, deferred answers with their abort callback. */
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

/* An answer up to this size is never refused for limits.max_output_in_flight: health
 * checks and admission answers always go out; large ones (metrics) share the budget. */
#define OUTPUT_FREE ((size_t)16 * 1024)
/* ---- Responses ---- */

size_t hconn_queued(const struct http_conn *c) {
  return c->out.len - c->out_off;
}

/* Whether an answer is still being written: hconn_queued, or held by the transport. */
bool hconn_answering(const struct http_conn *c) {
  return hconn_queued(c) > 0 || c->flush_pending;
}

/* Queues |len| bytes of |data| (copied) for the client; hconn_pump writes them. */
void hconn_write(struct http_conn *c, const char *data, size_t len) {
  textbuf_append(&c->out, data, len);
  if (c->out.failed) {
    hconn_close(c);
  }
}

/* What an answer of |len| bytes takes from limits.max_output_in_flight. */
static uint64_t output_charge(size_t len) {
  return len > OUTPUT_FREE ? len - OUTPUT_FREE : 0;
}

/* The answer is written (or the connection gone): its memory and its charge go. */
void hconn_output_release(struct http_conn *c) {
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
static void conn_respond(struct http_conn *c, const struct http_response *r, bool head_only,
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
    hconn_close(c);
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
    hconn_close(c);
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
  hconn_write(c, out, total);
  free(out);
}

void http_respond(struct http_conn *x, const struct http_response *r) {
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
    hconn_finish_request(x);
    hconn_process(x);
    hconn_pump(x);
  }
}

void http_defer(struct http_conn *x, uint64_t timeout_ms, void (*abort)(void *arg), void *arg) {
  x->deferred = true;
  x->abort = abort;
  x->abort_arg = arg;
  uv_timer_start(&x->timer, hconn_on_timer, timeout_ms, 0);
}

/* Tells a deferring route, once, that its exchange is going. */
void hconn_abort_deferred(struct http_conn *c) {
  void (*abort)(void *arg) = c->abort;
  c->abort = NULL;
  if (abort != NULL) {
    abort(c->abort_arg);
  }
}

void http_respond_text(struct http_conn *x, int status, const char *text) {
  struct http_response r = {status, HTTP_CT_TEXT, text, strlen(text), false};
  http_respond(x, &r);
}

/* Answers a request that cannot be parsed, then closes: after a framing error nothing
 * that follows can be trusted to start a request. */
void hconn_respond_error(struct http_conn *c, int status, const char *reason) {
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

void http_respond_json(struct http_conn *x, int status, cJSON *json) {
  char *text = http_json_text(json);
  if (text == NULL) {
    http_respond_text(x, 500, "out of memory");
    return;
  }
  struct http_response r = {status, HTTP_CT_JSON, text, strlen(text), false};
  http_respond(x, &r);
  free(text);
}

void http_respond_owned(struct http_conn *x, const char *content_type, char *body) {
  if (body == NULL) {
    http_respond_text(x, 500, "out of memory");
    return;
  }
  struct http_response r = {200, content_type, body, strlen(body), false};
  http_respond(x, &r);
  free(body);
}

const char *http_conn_peer(const struct http_conn *x) {
  return x->peer;
}

const struct http_request *http_conn_request(const struct http_conn *x) {
  return &x->parser.req;
}

const char *http_conn_buf(const struct http_conn *x) {
  return x->buf;
}

const char *http_conn_body(const struct http_conn *x, size_t *len) {
  *len = x->body.len;
  return x->body.data != NULL ? x->body.data : "";
}

/* Answers the request whose head is at the start of c->buf. */
void hconn_dispatch(struct http_conn *c) {
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
