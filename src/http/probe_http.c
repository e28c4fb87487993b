/* probe_http: an httpGet probe and a fetch over a prober's connection (see
 * prober_internal.h): the request as the kubelet sends it, the answer's head, redirects as
 * the kubelet follows them, and a fetch's bounded body (Content-Length, chunked, or to the
 * close). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "prober_internal.h"

/* The kubelet's HTTP client stops after ten redirects, and the probe fails. */
enum { REDIRECTS_MAX = 10 };
/* A fetch's body buffer starts this large and doubles up to its cap. */
enum { BODY_FIRST_ALLOC = 65536 };
/* A chunk-size line (with its extensions) or a trailer line longer than this is not one. */
enum { CHUNK_LINE_MAX = 1024 };

/* ---- HTTP ---- */

static bool has_header(const struct app_probe *probe, const char *name) {
  for (size_t i = 0; i < probe->header_count; i++) {
    if (strcasecmp(probe->headers[i].name, name) == 0) {
      return true;
    }
  }
  return false;
}

bool probe_http_start(struct prober *p) {
  const struct app_probe *probe = p->probe;
  char head[PATH_MAX_LEN + 512];
  bool v6 = strchr(p->host, ':') != NULL;
  int n = snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\n", p->path);
  bool ok = n > 0 && (size_t)n < sizeof(head) && prober_queue(p, head, (size_t)n);
  if (ok && !has_header(probe, "Host")) {
    n = snprintf(head, sizeof(head), "Host: %s%s%s:%u\r\n", v6 ? "[" : "", p->host, v6 ? "]" : "",
                 p->port);
    ok = prober_queue(p, head, (size_t)n);
  }
  if (ok && !has_header(probe, "User-Agent")) {
    n = snprintf(head, sizeof(head), "User-Agent: %s\r\n", PROBER_USER_AGENT);
    ok = prober_queue(p, head, (size_t)n);
  }
  if (ok && !has_header(probe, "Accept")) {
    ok = prober_queue(p, "Accept: */*\r\n", 13);
  }
  for (size_t i = 0; ok && i < probe->header_count; i++) {
    const struct app_probe_header *h = &probe->headers[i];
    ok = prober_queue(p, h->name, strlen(h->name)) && prober_queue(p, ": ", 2) &&
         prober_queue(p, h->value, strlen(h->value)) && prober_queue(p, "\r\n", 2);
  }
  return ok && prober_queue(p, "Connection: close\r\n\r\n", 21);
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
    prober_finish(p, false, "HTTP %d to a malformed location", status);
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
      prober_finish(p, false, "HTTP %d to a malformed location", status);
      return;
    }
    rest = auth + auth_len;
    if (strcasecmp(host, p->host) != 0) {
      /* A probe passes (the kubelet's rule); a fetch has no answer to show. */
      prober_finish(p, p->fetched == NULL, "HTTP %d, a redirect to another host (%s), not followed",
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
    prober_finish(p, false, "HTTP %d to a location over %d bytes", status, PATH_MAX_LEN);
    return;
  }
  if (++p->redirects > REDIRECTS_MAX) {
    prober_finish(p, false, "stopped after %d redirects", REDIRECTS_MAX);
    return;
  }
  snprintf(p->host, sizeof(p->host), "%s", host);
  p->port = port;
  p->https = https;
  snprintf(p->path, sizeof(p->path), "%s", path);
  /* The watcher's memory is reused by the next attempt once its close has ended. */
  p->state = ST_REDIRECTING;
  prober_close_socket(p, prober_on_attempt_closed);
}

/* Reads the decimal number that is all of |s| (|len| bytes, at most |max|); -1 when it is
 * anything else (a sign, a space, another character, nothing, too large). */
int probe_parse_status(const char *s, size_t len, int max) {
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

/* Makes room for |n| more bytes after what the body holds; false after prober_finish() when the
 * body would go over its cap. A chunked body's buffer also holds the framing of one read
 * not decoded yet (dechunk checks the decoded length itself). */
static bool body_reserve(struct prober *p, size_t n) {
  struct fetch_body *b = &p->body;
  size_t need = b->len + b->raw + n;
  size_t limit = b->max + (b->framing == BODY_CHUNKED ? READ_CHUNK + CHUNK_LINE_MAX : 0);
  if (need > limit) {
    prober_finish(p, false, "the body from %s:%u is over %zu bytes", p->host, p->port, b->max);
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
    prober_finish(p, false, "out of memory");
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
 * framing; returns false after prober_finish() on a framing error. */
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
      prober_finish(p, false, "malformed chunked body from %s:%u", p->host, p->port);
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
    prober_finish(p, false, "the body from %s:%u is over %zu bytes", p->host, p->port, b->max);
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
    prober_finish(p, true, "HTTP %d, %zu bytes", p->http_status, b->len);
    return false;
  }
  return true;
}

void probe_http_body_read(struct prober *p) {
  for (;;) {
    char buf[READ_CHUNK];
    int next;
    ssize_t n = transport_read(&p->xprt, buf, sizeof(buf), &next);
    if (n > 0) {
      if (!body_feed(p, buf, (size_t)n)) {
        return;
      }
    } else if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
      prober_want(p, io_wait_for(n));
      return;
    } else if (n == IO_EOF && p->body.framing == BODY_TO_CLOSE && body_reserve(p, 0)) {
      p->body.data[p->body.len] = '\0';
      prober_finish(p, true, "HTTP %d, %zu bytes", p->http_status, p->body.len);
      return;
    } else {
      prober_finish(p, false, "%s:%u closed the connection before the end of the body", p->host,
                    p->port);
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
    prober_finish(p, false, "a body with Content-Encoding %s (none was asked for)", value);
    return;
  }
  if (response_header(p, "Transfer-Encoding", value, sizeof(value))) {
    if (strcasecmp(value, "chunked") != 0) {
      prober_finish(p, false, "Transfer-Encoding %s is not supported", value);
      return;
    }
    b->framing = BODY_CHUNKED;
  } else if (response_header(p, "Content-Length", value, sizeof(value))) {
    char *end;
    unsigned long long v = strtoull(value, &end, 10);
    if (value[0] < '0' || value[0] > '9' || *end != '\0') {
      prober_finish(p, false, "Content-Length %s is not a number", value);
      return;
    }
    if (v > b->max) {
      prober_finish(p, false, "the body from %s:%u is over %zu bytes (%llu)", p->host, p->port,
                    b->max, v);
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
    probe_http_body_read(p);
  }
}

/* Judges a complete response head. */
static void http_response(struct prober *p) {
  /* "HTTP/1.x SSS" then a space or the end of the line: "2009" is not 200. */
  int status = p->in_len >= 13 && memcmp(p->in, "HTTP/1.", 7) == 0 && p->in[8] == ' ' &&
                       (p->in[12] == ' ' || p->in[12] == '\r')
                   ? probe_parse_status(p->in + 9, 3, 999)
                   : -1;
  if (status < 100) {
    prober_finish(p, false, "not an HTTP response from %s:%u", p->host, p->port);
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
      prober_finish(p, false, "HTTP %d", status);
    }
  } else if (status >= 200 && status < 400) {
    prober_finish(p, true, "HTTP %d", status);
  } else {
    prober_finish(p, false, "HTTP probe failed with status %d", status);
  }
}

void probe_http_read(struct prober *p) {
  for (;;) {
    size_t room = sizeof(p->in) - p->in_len;
    if (room == 0) {
      prober_finish(p, false, "the response head from %s:%u is over %d bytes", p->host, p->port,
                    RESPONSE_HEAD_MAX);
      return;
    }
    ssize_t n = prober_read_some(p, p->in + p->in_len, room, "a response");
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
