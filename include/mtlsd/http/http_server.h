/* http_server: a bounded HTTP/1.1 server on a libuv loop, for the admin port and the
 * other small HTTP endpoints of mtlsd: a route table of exact paths, per-server limits
 * (connections in all and per client address, request time, memory, lingering close),
 * keep-alive and pipelining. Routes answer on the loop's thread, at once or, after
 * http_defer, from a later callback; pipelined requests are answered in order, one at a
 * time, either way.
 *
 * Owns struct http_server and its connections (struct http_conn, one per client,
 * which a route sees while it answers the current request). */
#ifndef MTLSD_HTTP_SERVER_H
#define MTLSD_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "mtlsd/base/netaddr.h"
#include "mtlsd/http/http_parser.h"

#define HTTP_CT_TEXT "text/plain; charset=utf-8"
#define HTTP_CT_JSON "application/json"
#define HTTP_CT_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"

/* The listen backlog. The clients of these ports are few (a kubelet, a Prometheus, an
 * operator), but a flood must not fill the queue: a caller the kernel cannot queue waits
 * a second for its SYN to be sent again, while one that is queued is accepted within
 * milliseconds, ahead of the flood's next connections (the port makes room for it). */
#define HTTP_SERVER_BACKLOG 4096

struct http_server;
struct http_conn;
struct tls_contexts;

/* A GET route also answers HEAD (without the body); any other method gets 405. */
enum http_route_method { HTTP_ROUTE_GET, HTTP_ROUTE_POST };

struct http_route {
  const char *path; /* Matched exactly, without the query; or as a prefix: */
  bool prefix;      /* ...the request's path starts with |path| and is longer. */
  enum http_route_method method;
  /* handle answers the request with one http_respond* call; |arg| is the server's. */
  void (*handle)(struct http_conn *x, void *arg);
};

struct http_server_limits {
  /* At most this many connections; a newcomer beyond it takes the place of the oldest
   * idle one (between requests, or silent before its TLS handshake), and is answered 503
   * and closed only when none is idle. */
  size_t max_connections;
  /* The same, per client address, so that no one client can hold the port. 0: none. */
  size_t max_per_source;
  uint64_t max_body; /* Larger request bodies get 413 (at most HTTP_BODY_LIMIT_MAX). */
  /* The memory all connections' request bodies may hold at once beyond the first
   * HTTP_MAX_BODY bytes of each; a request whose body would take more gets 503 and the
   * connection closes, so that many clients sending large bodies together cannot take
   * max_body times max_connections, while requests of the usual size are never refused
   * for it. 0: no such limit. */
  uint64_t max_body_in_flight;
  /* The memory all connections' answers being written may hold at once beyond the first
   * 16 KiB of each; an answer that would take more is replaced by a 503. A connection
   * answers one request at a time, so a client that pipelines requests and reads nothing
   * holds one answer. 0: no such limit. */
  uint64_t max_output_in_flight;
  /* The kernel's send buffer of each connection (SO_SNDBUF; 0: the kernel's default, which
   * grows to megabytes): what a client that pipelines requests and reads no answer can
   * make the server render and the kernel hold (charged to the pod's memory) before its
   * connection stops and gives way. */
  int send_buffer;
  uint64_t timeout_ms; /* For a request to arrive and its answer to be written. */
  uint64_t linger_ms;  /* How long a client's bytes are drained after the last answer. */
};

struct http_server_config {
  const char *name; /* In log lines and the 503 body: "admin". */
  const struct http_route *routes;
  size_t route_count;
  struct http_server_limits limits;
  /* HTTPS: returns a new reference to the contexts to serve with, or NULL while there is
   * no certificate (the client is turned away: never plain HTTP instead). NULL: plain
   * HTTP. */
  struct tls_contexts *(*tls)(void *arg);
  void *arg;
};

/* http_server_start binds |listen| on |loop| and serves |cfg|, whose strings and routes
 * must outlive the server (the struct itself is copied). On failure it returns NULL and
 * writes the reason (naming the address) into |err|. */
struct http_server *http_server_start(uv_loop_t *loop, const struct hostport *listen,
                                      const struct http_server_config *cfg, char *err,
                                      size_t err_len);

/* http_server_close stops serving and closes every connection; the memory is released
 * from the close callbacks, so the loop must run until they finish. NULL is a no-op. */
void http_server_close(struct http_server *server);

/* What a route answers. |body| is borrowed for the duration of the call. */
struct http_response {
  int status;
  const char *content_type;
  const char *body;
  size_t body_len;
  bool close; /* Close the connection after this response. */
};

/* http_respond queues |r| as the answer to |x|'s current request (without the body for
 * a HEAD). */
void http_respond(struct http_conn *x, const struct http_response *r);

/* http_respond_text answers |text| (borrowed) as text/plain. */
void http_respond_text(struct http_conn *x, int status, const char *text);

/* http_respond_json answers |json|, which it deletes; 500 when |json| is NULL. */
void http_respond_json(struct http_conn *x, int status, cJSON *json);

/* http_respond_owned answers 200 with |body| (which it frees), or 500 when it is NULL. */
void http_respond_owned(struct http_conn *x, const char *content_type, char *body);

/* http_defer says that the route will answer |x|'s request later, with one http_respond*
 * call from another callback on the loop (an application probe, say). Until then the
 * connection reads no further request. If no answer has come within |timeout_ms|, |abort|
 * runs and the client gets 503; if the connection closes first, |abort| runs too. After
 * |abort| has run, |x| must not be used; after the answer, |abort| never runs. */
void http_defer(struct http_conn *x, uint64_t timeout_ms, void (*abort)(void *arg), void *arg);

/* http_json_text renders |json| (which it deletes) as compact text the caller frees;
 * NULL when out of memory. */
char *http_json_text(cJSON *json);

/* The current request of |x|: the client's address as text, the parsed head, and the
 * buffer its spans point into. Valid while the route runs. */
const char *http_conn_peer(const struct http_conn *x);
const struct http_request *http_conn_request(const struct http_conn *x);
const char *http_conn_buf(const struct http_conn *x);

/* http_conn_body returns the current request's body (|*len| bytes, not terminated;
 * "" when it has none), valid while the route runs. */
const char *http_conn_body(const struct http_conn *x, size_t *len);

#endif
