/* http_internal: what the modules of the HTTP server share: http_server.c (a connection's
 * life: reading, the parser, writing, lingering close, timers; start and stop),
 * http_respond.c (answers and the routes' API) and http_admit.c (who gets a place when
 * the port is full). The server and its connections are http_server.c's: see its top
 * comment for who frees what. */
#ifndef MTLSD_HTTP_INTERNAL_H
#define MTLSD_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "mtlsd/base/list.h"
#include "mtlsd/base/netaddr.h"
#include "mtlsd/base/textbuf.h"
#include "mtlsd/http/http_parser.h"
#include "mtlsd/http/http_server.h"
#include "mtlsd/net/acceptor.h"
#include "mtlsd/net/transport.h"

/* The buffer holds one request head (HTTP_MAX_HEAD) and some of what follows it. */
#define BUF_SIZE (HTTP_MAX_HEAD + 4096)

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
struct http_conn {
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

/* ---- http_server.c ---- */

/* hserver_release drops one of |server|'s open handles; the last frees a closing server. */
void hserver_release(struct http_server *server);
/* hsource_put drops one connection from its address's count (freeing the entry at 0). */
void hsource_put(struct http_source *src);
/* hconn_close starts closing |c| (idempotent); it is freed by its close callbacks. */
void hconn_close(struct http_conn *c);
/* hconn_restart_timer (re)arms |c|'s timer for |ms|; hconn_on_timer is its callback. */
void hconn_restart_timer(struct http_conn *c, uint64_t ms);
void hconn_on_timer(uv_timer_t *timer);
/* hconn_handshake moves |c|'s TLS handshake on; false when |c| was closed. */
bool hconn_handshake(struct http_conn *c);
/* hconn_pump moves |c|'s bytes both ways as far as the socket lets it. */
void hconn_pump(struct http_conn *c);
/* hconn_process parses what |c| has read and dispatches the next request. */
void hconn_process(struct http_conn *c);
/* hconn_finish_request ends |c|'s current request once its answer is queued. */
void hconn_finish_request(struct http_conn *c);

/* ---- http_respond.c ---- */

/* hconn_queued is what |c| still has to write; hconn_answering whether an answer is
 * being written or awaited. */
size_t hconn_queued(const struct http_conn *c);
bool hconn_answering(const struct http_conn *c);
/* hconn_write queues |len| bytes of answer. */
void hconn_write(struct http_conn *c, const char *data, size_t len);
/* hconn_output_release gives back what |c|'s answer took of max_output_in_flight. */
void hconn_output_release(struct http_conn *c);
/* hconn_abort_deferred tells a deferring route that |c| is gone. */
void hconn_abort_deferred(struct http_conn *c);
/* hconn_respond_error answers |status| with |reason| and closes after it. */
void hconn_respond_error(struct http_conn *c, int status, const char *reason);
/* hconn_dispatch runs the route of |c|'s request. */
void hconn_dispatch(struct http_conn *c);

/* ---- http_admit.c ---- */

/* hserver_on_accept is the listener's callback: a place for the newcomer |fd|, made by
 * closing the connection that gives way first, or a 503. */
void hserver_on_accept(struct acceptor *a, int fd);

#endif
