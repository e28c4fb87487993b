/* prober: one run of an application probe (see mtlsd/prober.h).
 *
 * A run is a small state machine on one non-blocking socket watched with uv_poll, like a
 * relayed connection: resolve (when the host is a name), connect address after address,
 * the TLS handshake for HTTPS, then the exchange through a transport, plain or TLS. One
 * timer serves first as a zero-delay start (so that |done| never runs inside
 * prober_start) and then as the probe's timeout. HTTP/2 for gRPC is libnghttp2's: it
 * frames what the prober writes and parses what it reads, in memory, so the socket stays
 * the prober's. */
#include "mtlsd/prober.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mtlsd/dial.h"
#include "mtlsd/log.h"
#include "mtlsd/netaddr.h"
#include "mtlsd/tls.h"
#include "mtlsd/transport.h"

/* A probe response's head must fit: the kubelet reads no more than a little either. */
enum { RESPONSE_HEAD_MAX = 16384 };
/* The kubelet's HTTP client stops after ten redirects, and the probe fails. */
enum { REDIRECTS_MAX = 10 };
/* A HealthCheckResponse is a few bytes; anything much longer is not one. */
enum { GRPC_MESSAGE_MAX = 1024 };
enum { PATH_MAX_LEN = 2048 };
/* A grpc-status that is no number: a failure whatever it says (the codes end at 16). */
enum { GRPC_STATUS_UNREADABLE = 1000 };
enum { READ_CHUNK = 16384 };
/* A fetch's body buffer starts this large and doubles up to its cap. */
enum { BODY_FIRST_ALLOC = 65536 };
/* A chunk-size line (with its extensions) or a trailer line longer than this is not one. */
enum { CHUNK_LINE_MAX = 1024 };

/* What the kubelet sends as User-Agent (it adds its version; the probe's own httpHeaders
 * replace it). */
static const char kUserAgent[] = "kube-probe/mtlsd";

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

static void on_poll(uv_poll_t *handle, int status, int events);
static void begin(struct prober *p);
static void on_attempt_closed(uv_handle_t *handle);

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
static void close_socket(struct prober *p, uv_close_cb cb) {
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
  close_socket(p, on_handle_closed);
  uv_close((uv_handle_t *)&p->timer, on_handle_closed);
  free(p->grpc_request);
  p->grpc_request = NULL;
  free(p->body.data);
  p->body.data = NULL;
  if (p->dial.gai_pending) {
    uv_cancel((uv_req_t *)&p->dial.gai);
  }
}

static void finish(struct prober *p, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void finish(struct prober *p, bool ok, const char *fmt, ...) {
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

static void want(struct prober *p, int events) {
  if (p->poll_open && p->events != events) {
    p->events = events;
    if (uv_poll_start(&p->poll, events, on_poll) != 0) {
      finish(p, false, "cannot watch the probe's socket");
    }
  }
}

/* ---- Writing ---- */

static bool queue(struct prober *p, const void *data, size_t len) {
  uint8_t *grown = realloc(p->out, p->out_len + len);
  if (grown == NULL) {
    return false;
  }
  memcpy(grown + p->out_len, data, len);
  p->out = grown;
  p->out_len += len;
  return true;
}

/* Writes what is queued; returns false after finish() on an error. */
static bool flush_out(struct prober *p) {
  while (p->out_off < p->out_len) {
    ssize_t n = transport_write(&p->xprt, p->out + p->out_off, p->out_len - p->out_off);
    if (n > 0) {
      p->out_off += (size_t)n;
      continue;
    }
    if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
      return true;
    }
    finish(p, false, "writing to %s:%u failed", p->host, p->port);
    return false;
  }
  if (transport_flush(&p->xprt) == IO_ERROR) {
    finish(p, false, "writing to %s:%u failed", p->host, p->port);
    return false;
  }
  free(p->out);
  p->out = NULL;
  p->out_len = p->out_off = 0;
  return true;
}

/* Reads what the peer sent into |buf|: a positive count, or 0 once the run waits for the
 * socket or has finished (the peer closed before |answer|). */
static ssize_t read_some(struct prober *p, void *buf, size_t cap, const char *answer) {
  int next;
  ssize_t n = transport_read(&p->xprt, buf, cap, &next);
  if (n > 0) {
    return n;
  }
  if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
    want(p, io_wait_for(n));
  } else {
    finish(p, false, "%s:%u closed the connection before %s", p->host, p->port, answer);
  }
  return 0;
}

/* ---- HTTP ---- */

static bool has_header(const struct app_probe *probe, const char *name) {
  for (size_t i = 0; i < probe->header_count; i++) {
    if (strcasecmp(probe->headers[i].name, name) == 0) {
      return true;
    }
  }
  return false;
}

static bool queue_http_request(struct prober *p) {
  const struct app_probe *probe = p->probe;
  char head[PATH_MAX_LEN + 512];
  bool v6 = strchr(p->host, ':') != NULL;
  int n = snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\n", p->path);
  bool ok = n > 0 && (size_t)n < sizeof(head) && queue(p, head, (size_t)n);
  if (ok && !has_header(probe, "Host")) {
    n = snprintf(head, sizeof(head), "Host: %s%s%s:%u\r\n", v6 ? "[" : "", p->host, v6 ? "]" : "",
                 p->port);
    ok = queue(p, head, (size_t)n);
  }
  if (ok && !has_header(probe, "User-Agent")) {
    n = snprintf(head, sizeof(head), "User-Agent: %s\r\n", kUserAgent);
    ok = queue(p, head, (size_t)n);
  }
  if (ok && !has_header(probe, "Accept")) {
    ok = queue(p, "Accept: */*\r\n", 13);
  }
  for (size_t i = 0; ok && i < probe->header_count; i++) {
    const struct app_probe_header *h = &probe->headers[i];
    ok = queue(p, h->name, strlen(h->name)) && queue(p, ": ", 2) &&
         queue(p, h->value, strlen(h->value)) && queue(p, "\r\n", 2);
  }
  return ok && queue(p, "Connection: close\r\n\r\n", 21);
}

/* Finds header |name| in the response head (never in the body bytes read with it);
 * copies its value into |out|. */
static bool response_header(const struct prober *p, const char *name, char *out, size_t out_len) {
  size_t name_len = strlen(name);
  const char *line = memchr(p->in, '\n', p->in_len);
  const char *head_end = memmem(p->in, p->in_len, "\r\n\r\n", 4);
  const char *end = head_end != NULL ? head_end + 2 : p->in + p->in_len;
  while (line != NULL && line + 1 < end) {
    line++;
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    if (eol == NULL) {
      break;
    }
    size_t len = (size_t)(eol - line);
    if (len > name_len && line[name_len] == ':' && strncasecmp(line, name, name_len) == 0) {
      const char *v = line + name_len + 1;
      while (v < eol && (*v == ' ' || *v == '\t')) {
        v++;
      }
      const char *ve = eol;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) {
        ve--;
      }
      snprintf(out, out_len, "%.*s", (int)(ve - v), v);
      return true;
    }
    line = eol;
  }
  return false;
}

/* Splits the authority of an absolute URL ("user@host:port", "[v6]:port") into its
 * host (brackets and user info removed) and port (the scheme's when absent). */
static bool parse_authority(const char *auth, size_t len, bool https, char *host, size_t host_len,
                            uint16_t *port) {
  const char *end = auth + len;
  const char *at = memchr(auth, '@', len);
  const char *h = at != NULL ? at + 1 : auth;
  const char *host_end;
  const char *colon;
  if (h < end && *h == '[') {
    const char *close = memchr(h, ']', (size_t)(end - h));
    if (close == NULL) {
      return false;
    }
    h++;
    host_end = close;
    colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
  } else {
    colon = memchr(h, ':', (size_t)(end - h));
    host_end = colon != NULL ? colon : end;
  }
  *port = https ? 443 : 80;
  if (colon != NULL) {
    long v = 0;
    const char *d = colon + 1;
    for (; d < end && *d >= '0' && *d <= '9' && v <= 65535; d++) {
      v = v * 10 + (*d - '0');
    }
    if (d != end || d == colon + 1 || v < 1 || v > 65535) {
      return false;
    }
    *port = (uint16_t)v;
  }
  size_t host_n = (size_t)(host_end - h);
  if (host_n == 0 || host_n >= host_len) {
    return false;
  }
  memcpy(host, h, host_n);
  host[host_n] = '\0';
  return true;
}

/* Whether |location| can go into a request line: no control character, space or DEL,
 * which would end the line early or smuggle another into it (Go's url.Parse refuses
 * control characters too). */
static bool location_is_clean(const char *location) {
  for (const unsigned char *c = (const unsigned char *)location; *c != '\0'; c++) {
    if (*c <= ' ' || *c == 0x7f) {
      return false;
    }
  }
  return true;
}

/* Follows a redirect as the kubelet does (Go's client): 301, 302, 303, 307 and 308 with a
 * Location are followed to the same host (any port or scheme), up to REDIRECTS_MAX; to
 * another host they are not, and the probe passes. */
static void follow_redirect(struct prober *p, int status, const char *location) {
  if (!location_is_clean(location)) {
    finish(p, false, "HTTP %d to a malformed location", status);
    return;
  }
  char host[NETADDR_HOST_MAX];
  snprintf(host, sizeof(host), "%s", p->host);
  uint16_t port = p->port;
  bool https = p->https;
  char path[PATH_MAX_LEN];
  const char *rest = location;
  bool absolute =
      strncasecmp(location, "http://", 7) == 0 || strncasecmp(location, "https://", 8) == 0;
  if (absolute || strncmp(location, "//", 2) == 0) {
    if (absolute) {
      https = location[4] == 's' || location[4] == 'S';
    }
    const char *auth = location + (absolute ? (https ? 8 : 7) : 2);
    size_t auth_len = strcspn(auth, "/?#");
    if (!parse_authority(auth, auth_len, https, host, sizeof(host), &port)) {
      finish(p, false, "HTTP %d to a malformed location", status);
      return;
    }
    rest = auth + auth_len;
    if (strcasecmp(host, p->host) != 0) {
      /* A probe passes (the kubelet's rule); a fetch has no answer to show. */
      finish(p, p->fetched == NULL, "HTTP %d, a redirect to another host (%s), not followed",
             status, host);
      return;
    }
  }
  int n;
  if (rest[0] == '/' || rest[0] == '\0') {
    n = snprintf(path, sizeof(path), "%s", rest[0] == '/' ? rest : "/");
  } else {
    /* Relative to the current path's directory. */
    const char *slash = strrchr(p->path, '/');
    n = snprintf(path, sizeof(path), "%.*s/%s", slash != NULL ? (int)(slash - p->path) : 0, p->path,
                 rest);
  }
  if (n < 0 || (size_t)n >= sizeof(path)) {
    finish(p, false, "HTTP %d to a location over %d bytes", status, PATH_MAX_LEN);
    return;
  }
  if (++p->redirects > REDIRECTS_MAX) {
    finish(p, false, "stopped after %d redirects", REDIRECTS_MAX);
    return;
  }
  snprintf(p->host, sizeof(p->host), "%s", host);
  p->port = port;
  p->https = https;
  snprintf(p->path, sizeof(p->path), "%s", path);
  /* The watcher's memory is reused by the next attempt once its close has ended. */
  p->state = ST_REDIRECTING;
  close_socket(p, on_attempt_closed);
}

/* Reads the decimal number that is all of |s| (|len| bytes, at most |max|); -1 when it is
 * anything else (a sign, a space, another character, nothing, too large). */
static int parse_status(const char *s, size_t len, int max) {
  int v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9' || v > (max - (s[i] - '0')) / 10) {
      return -1;
    }
    v = v * 10 + (s[i] - '0');
  }
  return len > 0 ? v : -1;
}

/* ---- A fetch's body ---- */

/* Makes room for |n| more bytes after what the body holds; false after finish() when the
 * body would go over its cap. A chunked body's buffer also holds the framing of one read
 * not decoded yet (dechunk checks the decoded length itself). */
static bool body_reserve(struct prober *p, size_t n) {
  struct fetch_body *b = &p->body;
  size_t need = b->len + b->raw + n;
  size_t limit = b->max + (b->framing == BODY_CHUNKED ? READ_CHUNK + CHUNK_LINE_MAX : 0);
  if (need > limit) {
    finish(p, false, "the body from %s:%u is over %zu bytes", p->host, p->port, b->max);
    return false;
  }
  if (b->data != NULL && need <= b->cap) {
    return true;
  }
  size_t cap = b->cap > 0 ? b->cap : BODY_FIRST_ALLOC;
  while (cap < need) {
    cap *= 2;
  }
  cap = cap < limit ? cap : limit;
  char *grown = realloc(b->data, cap + 1);
  if (grown == NULL) {
    finish(p, false, "out of memory");
    return false;
  }
  b->data = grown;
  b->cap = cap;
  return true;
}

/* Finds the line (ending in LF) of chunked framing at |at|, before |end|: its length
 * without the line end, with |*next| just after it; -1 when it has not fully arrived
 * yet, -2 when it is too long. */
static long chunk_line(const char *data, size_t at, size_t end, size_t *next) {
  const char *nl = memchr(data + at, '\n', end - at);
  if (nl == NULL) {
    return end - at > CHUNK_LINE_MAX ? -2 : -1;
  }
  size_t len = (size_t)(nl - (data + at));
  if (len > CHUNK_LINE_MAX) {
    return -2;
  }
  *next = at + len + 1;
  return (long)(len > 0 && data[at + len - 1] == '\r' ? len - 1 : len);
}

/* Parses a chunk-size line: hex digits, then nothing or extensions after ';'. */
static bool chunk_size(const char *line, size_t len, uint64_t *out) {
  uint64_t v = 0;
  size_t i = 0;
  for (; i < len && isxdigit((unsigned char)line[i]); i++) {
    if (v >> 60 != 0) {
      return false;
    }
    int c = (unsigned char)line[i];
    v = v * 16 + (uint64_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  while (i < len && (line[i] == ' ' || line[i] == '\t')) {
    i++;
  }
  *out = v;
  return i > 0 && (i == len || line[i] == ';');
}

/* Decodes the chunked framing received so far in place, the data moving down over the
 * framing; returns false after finish() on a framing error. */
static bool dechunk(struct prober *p) {
  struct fetch_body *b = &p->body;
  size_t at = b->len;
  size_t end = b->len + b->raw;
  while (b->chunk != CHUNK_DONE) {
    if (b->chunk == CHUNK_DATA) {
      size_t take = end - at < b->chunk_left ? end - at : (size_t)b->chunk_left;
      memmove(b->data + b->len, b->data + at, take);
      b->len += take;
      at += take;
      b->chunk_left -= take;
      if (b->chunk_left > 0) {
        break;
      }
      b->chunk = CHUNK_DATA_END;
      continue;
    }
    size_t next = at;
    long line = chunk_line(b->data, at, end, &next);
    if (line == -1) {
      break;
    }
    uint64_t size = 0;
    if (line == -2 || (b->chunk == CHUNK_DATA_END && line != 0) ||
        (b->chunk == CHUNK_SIZE && !chunk_size(b->data + at, (size_t)line, &size))) {
      finish(p, false, "malformed chunked body from %s:%u", p->host, p->port);
      return false;
    }
    at = next;
    if (b->chunk == CHUNK_SIZE) {
      b->chunk = size == 0 ? CHUNK_TRAILER : CHUNK_DATA;
      b->chunk_left = size;
    } else if (b->chunk == CHUNK_DATA_END) {
      b->chunk = CHUNK_SIZE;
    } else if (line == 0) {
      b->chunk = CHUNK_DONE;
    }
  }
  memmove(b->data + b->len, b->data + at, end - at);
  b->raw = end - at;
  if (b->len > b->max) {
    finish(p, false, "the body from %s:%u is over %zu bytes", p->host, p->port, b->max);
    return false;
  }
  return true;
}

/* Adds |n| received bytes to the body; false once the run has finished (the body is
 * complete, or wrong). */
static bool body_feed(struct prober *p, const char *data, size_t n) {
  struct fetch_body *b = &p->body;
  if (b->framing == BODY_LENGTH && n > b->expected - b->len) {
    n = (size_t)(b->expected - b->len); /* What follows the body is not the answer's. */
  }
  if (!body_reserve(p, n)) {
    return false;
  }
  memcpy(b->data + b->len + b->raw, data, n);
  if (b->framing != BODY_CHUNKED) {
    b->len += n;
  } else {
    b->raw += n;
    if (!dechunk(p)) {
      return false;
    }
  }
  bool complete = (b->framing == BODY_LENGTH && b->len == b->expected) ||
                  (b->framing == BODY_CHUNKED && b->chunk == CHUNK_DONE);
  if (complete) {
    b->data[b->len] = '\0';
    finish(p, true, "HTTP %d, %zu bytes", p->http_status, b->len);
    return false;
  }
  return true;
}

static void body_read(struct prober *p) {
  for (;;) {
    char buf[READ_CHUNK];
    int next;
    ssize_t n = transport_read(&p->xprt, buf, sizeof(buf), &next);
    if (n > 0) {
      if (!body_feed(p, buf, (size_t)n)) {
        return;
      }
    } else if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
      want(p, io_wait_for(n));
      return;
    } else if (n == IO_EOF && p->body.framing == BODY_TO_CLOSE && body_reserve(p, 0)) {
      p->body.data[p->body.len] = '\0';
      finish(p, true, "HTTP %d, %zu bytes", p->http_status, p->body.len);
      return;
    } else {
      finish(p, false, "%s:%u closed the connection before the end of the body", p->host, p->port);
      return;
    }
  }
}

/* A fetch's 2xx answer: reads its framing from the head, then the body, starting with
 * the bytes read with the head. */
static void start_body(struct prober *p) {
  struct fetch_body *b = &p->body;
  char value[128];
  if (response_header(p, "Content-Encoding", value, sizeof(value)) &&
      strcasecmp(value, "identity") != 0) {
    finish(p, false, "a body with Content-Encoding %s (none was asked for)", value);
    return;
  }
  if (response_header(p, "Transfer-Encoding", value, sizeof(value))) {
    if (strcasecmp(value, "chunked") != 0) {
      finish(p, false, "Transfer-Encoding %s is not supported", value);
      return;
    }
    b->framing = BODY_CHUNKED;
  } else if (response_header(p, "Content-Length", value, sizeof(value))) {
    char *end;
    unsigned long long v = strtoull(value, &end, 10);
    if (value[0] < '0' || value[0] > '9' || *end != '\0') {
      finish(p, false, "Content-Length %s is not a number", value);
      return;
    }
    if (v > b->max) {
      finish(p, false, "the body from %s:%u is over %zu bytes (%llu)", p->host, p->port, b->max, v);
      return;
    }
    b->framing = BODY_LENGTH;
    b->expected = v;
  }
  if (!response_header(p, "Content-Type", b->content_type, sizeof(b->content_type))) {
    b->content_type[0] = '\0';
  }
  p->in_body = true;
  const char *head_end = memmem(p->in, p->in_len, "\r\n\r\n", 4) + 4;
  size_t rest = p->in_len - (size_t)(head_end - p->in);
  if (body_feed(p, head_end, rest)) {
    body_read(p);
  }
}

/* Judges a complete response head. */
static void http_response(struct prober *p) {
  /* "HTTP/1.x SSS" then a space or the end of the line: "2009" is not 200. */
  int status = p->in_len >= 13 && memcmp(p->in, "HTTP/1.", 7) == 0 && p->in[8] == ' ' &&
                       (p->in[12] == ' ' || p->in[12] == '\r')
                   ? parse_status(p->in + 9, 3, 999)
                   : -1;
  if (status < 100) {
    finish(p, false, "not an HTTP response from %s:%u", p->host, p->port);
    return;
  }
  char location[PATH_MAX_LEN];
  bool followed = status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
  if (followed && response_header(p, "Location", location, sizeof(location)) &&
      location[0] != '\0') {
    follow_redirect(p, status, location);
    return;
  }
  if (p->fetched != NULL) {
    p->http_status = status;
    if (status >= 200 && status < 300) {
      start_body(p);
    } else {
      finish(p, false, "HTTP %d", status);
    }
  } else if (status >= 200 && status < 400) {
    finish(p, true, "HTTP %d", status);
  } else {
    finish(p, false, "HTTP probe failed with status %d", status);
  }
}

static void http_read(struct prober *p) {
  for (;;) {
    size_t room = sizeof(p->in) - p->in_len;
    if (room == 0) {
      finish(p, false, "the response head from %s:%u is over %d bytes", p->host, p->port,
             RESPONSE_HEAD_MAX);
      return;
    }
    ssize_t n = read_some(p, p->in + p->in_len, room, "a response");
    if (n <= 0) {
      return;
    }
    size_t from = p->in_len >= 3 ? p->in_len - 3 : 0;
    p->in_len += (size_t)n;
    if (memmem(p->in + from, p->in_len - from, "\r\n\r\n", 4) != NULL) {
      http_response(p);
      return;
    }
  }
}

/* ---- gRPC over h2c ---- */

static int h2_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                        void *user_data) {
  (void)session;
  (void)flags;
  struct prober *p = user_data;
  if (frame->hd.stream_id != p->stream_id) {
    return 0;
  }
  const char *v = (const char *)value;
  if (name_len == 7 && memcmp(name, ":status", 7) == 0) {
    p->http_status = parse_status(v, value_len, 999);
  } else if (name_len == 11 && memcmp(name, "grpc-status", 11) == 0) {
    /* Not a status code (say "0x"): an error of its own, never OK. */
    int code = parse_status(v, value_len, 1000);
    p->grpc_status = code >= 0 ? code : GRPC_STATUS_UNREADABLE;
  } else if (name_len == 12 && memcmp(name, "grpc-message", 12) == 0) {
    snprintf(
        p->grpc_message, sizeof(p->grpc_message), "%.*s",
        (int)(value_len < sizeof(p->grpc_message) - 1 ? value_len : sizeof(p->grpc_message) - 1),
        v);
  }
  return 0;
}

static int h2_on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                      const uint8_t *data, size_t len, void *user_data) {
  (void)session;
  (void)flags;
  struct prober *p = user_data;
  if (stream_id == p->stream_id) {
    size_t room = sizeof(p->grpc_response) - p->grpc_response_len;
    size_t take = len < room ? len : room;
    memcpy(p->grpc_response + p->grpc_response_len, data, take);
    p->grpc_response_len += take;
  }
  return 0;
}

static int h2_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                              void *user_data) {
  (void)session;
  (void)error_code;
  struct prober *p = user_data;
  if (stream_id == p->stream_id) {
    p->stream_closed = true;
  }
  return 0;
}

static ssize_t h2_read_request(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                               size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                               void *user_data) {
  (void)session;
  (void)stream_id;
  (void)source;
  struct prober *p = user_data;
  size_t left = p->grpc_request_len - p->grpc_request_off;
  size_t n = left < length ? left : length;
  memcpy(buf, p->grpc_request + p->grpc_request_off, n);
  p->grpc_request_off += n;
  if (p->grpc_request_off == p->grpc_request_len) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

static size_t put_varint(uint8_t *out, uint64_t v) {
  size_t n = 0;
  do {
    out[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    out[n] |= v != 0 ? 0x80 : 0;
    n++;
  } while (v != 0);
  return n;
}

/* The gRPC message of grpc.health.v1.HealthCheckRequest{service}: a 5-byte prefix (not
 * compressed, then the length), and the protobuf: field 1, length-delimited. */
static bool make_grpc_request(struct prober *p) {
  const char *service = p->probe->service;
  size_t len = strlen(service);
  p->grpc_request = malloc(5 + 1 + 10 + len);
  if (p->grpc_request == NULL) {
    return false;
  }
  size_t body = 0;
  uint8_t *b = p->grpc_request + 5;
  if (len > 0) {
    b[body++] = 0x0a;
    body += put_varint(b + body, len);
    /* Protobuf bytes, not a C string: no terminator belongs here. */
    memcpy(b + body, service, len);  // NOLINT(bugprone-not-null-terminated-result)
    body += len;
  }
  p->grpc_request[0] = 0;
  p->grpc_request[1] = (uint8_t)(body >> 24);
  p->grpc_request[2] = (uint8_t)(body >> 16);
  p->grpc_request[3] = (uint8_t)(body >> 8);
  p->grpc_request[4] = (uint8_t)body;
  p->grpc_request_len = 5 + body;
  return true;
}

#define NV(name, value)                                                     \
  {                                                                         \
    (uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, strlen(value), \
        NGHTTP2_NV_FLAG_NO_COPY_NAME                                        \
  }

static bool start_grpc(struct prober *p) {
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    return false;
  }
  nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
  int r = nghttp2_session_client_new(&p->h2, cbs, p);
  nghttp2_session_callbacks_del(cbs);
  if (r != 0 || !make_grpc_request(p)) {
    return false;
  }
  char authority[NETADDR_HOSTPORT_MAX];
  bool v6 = strchr(p->host, ':') != NULL;
  snprintf(authority, sizeof(authority), "%s%s%s:%u", v6 ? "[" : "", p->host, v6 ? "]" : "",
           p->port);
  const nghttp2_nv headers[] = {
      NV(":method", "POST"),
      NV(":scheme", "http"),
      NV(":path", "/grpc.health.v1.Health/Check"),
      NV(":authority", authority),
      NV("content-type", "application/grpc"),
      NV("te", "trailers"),
      NV("user-agent", kUserAgent),
  };
  nghttp2_data_provider body = {.source.ptr = p, .read_callback = h2_read_request};
  if (nghttp2_submit_settings(p->h2, NGHTTP2_FLAG_NONE, NULL, 0) != 0) {
    return false;
  }
  p->stream_id =
      nghttp2_submit_request(p->h2, NULL, headers, sizeof(headers) / sizeof(headers[0]), &body, p);
  return p->stream_id > 0;
}

static const char *serving_status_name(uint64_t status) {
  static const char *const kNames[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  return status < 4 ? kNames[status] : "an unknown status";
}

/* Judges the ended stream: grpc-status first, then the HealthCheckResponse's status. */
static void grpc_result(struct prober *p) {
  if (p->grpc_status < 0) {
    finish(p, false, "no gRPC status from %s:%u (HTTP status %d)", p->host, p->port,
           p->http_status);
    return;
  }
  if (p->grpc_status != 0) {
    finish(p, false, "gRPC status %d%s%s", p->grpc_status, p->grpc_message[0] != '\0' ? ": " : "",
           p->grpc_message);
    return;
  }
  const uint8_t *m = p->grpc_response;
  size_t len = p->grpc_response_len;
  uint32_t body =
      len >= 5 ? (uint32_t)m[1] << 24 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 8 | m[4] : 0;
  if (len < 5 || m[0] != 0 || body > len - 5) {
    finish(p, false, "not a HealthCheckResponse from %s:%u", p->host, p->port);
    return;
  }
  /* HealthCheckResponse{status = 1 (varint)}; an absent field is UNKNOWN (0). */
  uint64_t status = 0;
  for (size_t i = 5; i < 5 + body;) {
    uint8_t tag = m[i++];
    if (tag != 0x08) {
      break;
    }
    uint64_t v = 0;
    for (unsigned shift = 0; i < 5 + body && shift < 64; shift += 7) {
      uint8_t byte = m[i++];
      v |= (uint64_t)(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        break;
      }
    }
    status = v;
  }
  if (status == 1) {
    finish(p, true, "SERVING");
  } else {
    finish(p, false, "the service is %s", serving_status_name(status));
  }
}

static void grpc_exchange(struct prober *p) {
  for (;;) {
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(p->h2, &data)) > 0) {
      if (!queue(p, data, (size_t)n)) {
        finish(p, false, "out of memory");
        return;
      }
    }
    if (n < 0) {
      finish(p, false, "HTTP/2: %s", nghttp2_strerror((int)n));
      return;
    }
    if (!flush_out(p)) {
      return;
    }
    if (p->out_len > 0) {
      want(p, IO_WAIT_WRITE);
      return;
    }
    if (p->stream_closed) {
      grpc_result(p);
      return;
    }
    uint8_t buf[READ_CHUNK];
    n = read_some(p, buf, sizeof(buf), "a gRPC answer");
    if (n <= 0) {
      return;
    }
    ssize_t used = nghttp2_session_mem_recv(p->h2, buf, (size_t)n);
    if (used < 0) {
      finish(p, false, "HTTP/2 from %s:%u: %s", p->host, p->port, nghttp2_strerror((int)used));
      return;
    }
  }
}

/* ---- Connecting ---- */

static void exchange(struct prober *p) {
  if (p->probe->type == APP_PROBE_GRPC) {
    grpc_exchange(p);
    return;
  }
  if (!flush_out(p)) {
    return;
  }
  if (p->out_len > 0) {
    want(p, IO_WAIT_WRITE);
    return;
  }
  if (p->in_body) {
    body_read(p);
  } else {
    http_read(p);
  }
}

static void start_exchange(struct prober *p) {
  p->state = ST_EXCHANGING;
  bool ok = p->probe->type == APP_PROBE_GRPC ? start_grpc(p) : queue_http_request(p);
  if (!ok) {
    finish(p, false, "cannot start the request (out of memory)");
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
    want(p, io_wait_for(r));
  } else {
    const char *detail;
    tls_conn_failure(p->tls, &detail);
    finish(p, false, "TLS handshake with %s:%u failed: %s", p->host, p->port, detail);
  }
}

static void connected(struct prober *p, bool peer_reset) {
  const struct app_probe *probe = p->probe;
  if (probe->type == APP_PROBE_TCP) {
    finish(p, true, "connected to %s:%u", p->host, p->port);
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
    finish(p, false, "cannot start TLS (out of memory)");
    return;
  }
  p->state = ST_HANDSHAKING;
  handshake_step(p);
}

static void connect_next(struct prober *p);

/* The socket of an attempt has closed: a failed connect tries the next address, a
 * redirect starts over at its target. */
static void on_attempt_closed(uv_handle_t *handle) {
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
    finish(p, false, "connect to %s: %s", p->dial.upstream, upstream_failure_name(p->dial.failure));
    return;
  }
  p->fd = fd;
  p->events = 0;
  if (uv_poll_init(p->loop, &p->poll, fd) != 0) {
    finish(p, false, "cannot watch the probe's socket");
    return;
  }
  p->poll.data = p;
  p->poll_open = true;
  p->open_handles++;
  p->state = ST_CONNECTING;
  want(p, IO_WAIT_WRITE);
}

static void on_resolved(struct dialer *d, int status) {
  struct prober *p = (struct prober *)((char *)d - offsetof(struct prober, dial));
  if (p->state == ST_DONE) {
    maybe_free(p);
    return;
  }
  if (status != 0) {
    finish(p, false, "cannot resolve %s: %s", p->host, uv_strerror(status));
    return;
  }
  connect_next(p);
}

static void connect_check(struct prober *p) {
  enum connect_outcome outcome = dialer_connect_result(&p->dial, p->fd);
  if (outcome != CONNECT_FAILED) {
    connected(p, outcome == CONNECT_OK_THEN_RESET);
  } else {
    close_socket(p, on_attempt_closed);
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
        finish(p, false, "cannot resolve %s", p->host);
      }
      return;
    case DIAL_UNREACHABLE:
      finish(p, false, "%s is not an address", p->host);
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
  finish(p, false, "timed out after %llu ms", (unsigned long long)p->probe->timeout);
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
