/* prober_internal: what the modules of a probe run share: prober.c (the run: resolve,
 * connect, TLS, the timer, the end), probe_http.c (an httpGet probe and a fetch: request,
 * answer head, redirects, the body) and probe_grpc.c (a grpc probe over h2c).
 *
 * A struct prober is prober.c's: made by prober_start or prober_fetch, freed once its
 * handles have closed after prober_finish or prober_cancel. The exchange modules borrow it
 * for one step at a time and end a run only through prober_finish. */
#ifndef MTLSD_PROBER_INTERNAL_H
#define MTLSD_PROBER_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mtlsd/base/netaddr.h"
#include "mtlsd/http/prober.h"
#include "mtlsd/net/dial.h"
#include "mtlsd/net/transport.h"

/* A probe response's head must fit: the kubelet reads no more than a little either. */
enum { RESPONSE_HEAD_MAX = 16384 };
/* A HealthCheckResponse is a few bytes; anything much longer is not one. */
enum { GRPC_MESSAGE_MAX = 1024 };
enum { PATH_MAX_LEN = 2048 };
enum { READ_CHUNK = 16384 };

/* What the kubelet sends as User-Agent (it adds its version; the probe's own httpHeaders
 * replace it). */
#define PROBER_USER_AGENT "kube-probe/mtlsd"

enum prober_state {
  ST_START,
  ST_RESOLVING,
  ST_CONNECTING,
  ST_HANDSHAKING,
  ST_EXCHANGING,
  ST_REDIRECTING, /* The socket closes; the next attempt starts once it has. */
  ST_DONE
};

/* How a fetched body ends (RFC 9112 section 6.3). */
enum body_framing { BODY_TO_CLOSE, BODY_LENGTH, BODY_CHUNKED };
enum chunk_state { CHUNK_SIZE, CHUNK_DATA, CHUNK_DATA_END, CHUNK_TRAILER, CHUNK_DONE };

/* The body of a fetch's 2xx answer: |len| bytes decoded, then |raw| bytes received and not
 * decoded yet (a chunked body's framing), within |max| decoded bytes. */
struct fetch_body {
  size_t max;
  char *data;
  size_t len;
  size_t raw;
  size_t cap;
  enum body_framing framing;
  uint64_t expected; /* BODY_LENGTH: Content-Length. */
  enum chunk_state chunk;
  uint64_t chunk_left;
  char content_type[128];
};

struct prober {
  uv_loop_t *loop;
  const struct app_probe *probe;
  prober_done_cb done;     /* A probe's; NULL for a fetch. */
  prober_fetch_cb fetched; /* A fetch's; NULL for a probe. */
  struct fetch_body body;  /* A fetch's, once its answer's head said 2xx. */
  bool in_body;
  void *arg;
  enum prober_state state;
  int open_handles; /* The timer, and the poll while a socket is open. */

  /* Where the current request goes; a redirect changes them. */
  char host[NETADDR_HOST_MAX];
  uint16_t port;
  bool https;
  char path[PATH_MAX_LEN];
  int redirects;

  struct dialer dial;
  uv_timer_t timer;
  uv_poll_t poll;
  bool poll_open;
  int events;
  int fd;
  struct tls_conn *tls;
  struct transport xprt;

  uint8_t *out; /* Bytes to write: the HTTP request, or nghttp2's frames. */
  size_t out_len;
  size_t out_off;
  char in[RESPONSE_HEAD_MAX]; /* The HTTP response head. */
  size_t in_len;

  nghttp2_session *h2;
  int32_t stream_id;
  uint8_t *grpc_request;
  size_t grpc_request_len;
  size_t grpc_request_off;
  int http_status;
  int grpc_status; /* -1 until the trailers (or a trailers-only response) say. */
  char grpc_message[128];
  uint8_t grpc_response[GRPC_MESSAGE_MAX];
  size_t grpc_response_len;
  bool stream_closed;
};

/* ---- prober.c: the run ---- */

/* prober_finish ends the run with its outcome (once) and starts closing its handles. */
void prober_finish(struct prober *p, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* prober_want watches the socket for |events| (IO_WAIT_READ, IO_WAIT_WRITE). */
void prober_want(struct prober *p, int events);

/* prober_queue adds |len| bytes to what is to be written; false when out of memory. */
bool prober_queue(struct prober *p, const void *data, size_t len);

/* prober_flush_out writes what is queued: true once all of it is written; false while
 * the socket cannot take more (it is then watched for writing) or after prober_finish on
 * an error. */
bool prober_flush_out(struct prober *p);

/* prober_read_some reads up to |cap| bytes: the count, 0 when nothing is ready yet (the
 * socket is watched again), or -1 after prober_finish (an error, or the peer closed
 * before |answer|). */
ssize_t prober_read_some(struct prober *p, void *buf, size_t cap, const char *answer);

/* prober_close_socket closes the current attempt's socket; |cb| runs once it has. A
 * redirect closes with prober_on_attempt_closed, which starts the next attempt. */
void prober_close_socket(struct prober *p, uv_close_cb cb);
void prober_on_attempt_closed(uv_handle_t *handle);

/* ---- probe_http.c ---- */

/* probe_http_start queues the request of an httpGet probe or a fetch; false when out of
 * memory. probe_http_read reads the answer's head, probe_http_body_read a fetch's body. */
bool probe_http_start(struct prober *p);
void probe_http_read(struct prober *p);
void probe_http_body_read(struct prober *p);

/* probe_parse_status reads a 3-digit status of |len| bytes at |s| (at most |max|); -1
 * when it is none. */
int probe_parse_status(const char *s, size_t len, int max);

/* ---- probe_grpc.c ---- */

/* probe_grpc_start sets up the HTTP/2 session and queues the Check request; false when
 * out of memory. probe_grpc_exchange moves frames both ways until the answer is in. */
bool probe_grpc_start(struct prober *p);
void probe_grpc_exchange(struct prober *p);

#endif
