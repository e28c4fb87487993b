/* http_parser: the admin port's request-head parser (see mtlsd/http_parser.h).
 *
 * A byte-at-a-time state machine, so that an error is found at the first bad byte (a
 * TLS ClientHello or a line of garbage gets its 400 at once, not after the idle
 * timeout) and a request that trickles in is never rescanned. The rules it enforces are
 * listed in the header; RFC 9110 and RFC 9112 give the grammar. */
#include "mtlsd/http/http_parser.h"

#include <string.h>

enum {
  S_START,        /* Before the request line; empty lines are skipped. */
  S_START_LF,     /* Saw CR of an empty line before the request line. */
  S_METHOD,       /* In the method token. */
  S_TARGET_START, /* After the method's SP. */
  S_TARGET,       /* In the request target. */
  S_VERSION,      /* In "HTTP/1.1". */
  S_REQLINE_LF,   /* Saw the request line's CR. */
  S_FIELD_START,  /* At the start of a header line, or of the final empty line. */
  S_NAME,         /* In a header name. */
  S_OWS,          /* After the colon, before the value. */
  S_VALUE,        /* In a header value. */
  S_FIELD_LF,     /* Saw a header line's CR. */
  S_HEAD_END_LF,  /* Saw the final empty line's CR. */
  S_DONE,
  S_ERROR
};

/* Longer methods than any registered one are refused before the target is read. */
#define METHOD_MAX 32
#define VERSION_LEN 8 /* "HTTP/1.1" */

/* tchar from RFC 9110 section 5.6.2. */
static bool is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
    return true;
  }
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A byte that may appear in a field value other than SP and HTAB: VCHAR or obs-text. */
static bool is_field_vchar(unsigned char c) {
  return (c >= 0x21 && c <= 0x7e) || c >= 0x80;
}

static char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool mem_equal_nocase(const char *a, const char *b, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) {
      return false;
    }
  }
  return true;
}

bool http_span_equal(const char *buf, struct http_span s, const char *str) {
  return strlen(str) == s.len && memcmp(buf + s.off, str, s.len) == 0;
}

bool http_span_equal_nocase(const char *buf, struct http_span s, const char *str) {
  return strlen(str) == s.len && mem_equal_nocase(buf + s.off, str, s.len);
}

const char *http_status_text(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 202:
      return "Accepted";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

bool http_query_param(struct http_span *out, const char *buf, struct http_span query,
                      const char *name) {
  size_t name_len = strlen(name);
  size_t i = query.off;
  size_t end = query.off + query.len;
  while (i < end) {
    size_t pair_end = i;
    while (pair_end < end && buf[pair_end] != '&') {
      pair_end++;
    }
    size_t key_end = i;
    while (key_end < pair_end && buf[key_end] != '=') {
      key_end++;
    }
    if (key_end - i == name_len && memcmp(buf + i, name, name_len) == 0) {
      size_t value_off = key_end < pair_end ? key_end + 1 : pair_end;
      out->off = value_off;
      out->len = pair_end - value_off;
      return true;
    }
    i = pair_end + 1;
  }
  return false;
}

void http_parser_init(struct http_parser *p, uint64_t max_body) {
  memset(p, 0, sizeof(*p));
  p->state = S_START;
  p->max_body = max_body < HTTP_BODY_LIMIT_MAX ? max_body : HTTP_BODY_LIMIT_MAX;
}

static enum http_parse_result fail(struct http_parser *p, int status, const char *reason) {
  p->state = S_ERROR;
  p->error_status = status;
  p->error_reason = reason;
  return HTTP_PARSE_ERROR;
}

/* Parses a Content-Length value: one or more digits. A value beyond HTTP_BODY_LIMIT_MAX
 * is kept as HTTP_BODY_LIMIT_MAX + 1, which is enough to refuse it and cannot overflow. */
static bool parse_content_length(uint64_t *out, const char *s, size_t len) {
  if (len == 0) {
    return false;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') {
      return false;
    }
    v = v * 10 + (uint64_t)(s[i] - '0');
    if (v > HTTP_BODY_LIMIT_MAX) {
      v = HTTP_BODY_LIMIT_MAX + 1;
    }
  }
  *out = v;
  return true;
}

/* Calls |fn| on each comma-separated element of a field value, trimmed of OWS; empty
 * elements (RFC 9110 section 5.6.1 allows them) are skipped. */
static void for_each_element(struct http_parser *p, const char *v, size_t len,
                             void (*fn)(struct http_parser *p, const char *e, size_t n)) {
  size_t i = 0;
  while (i < len) {
    size_t start = i;
    while (i < len && v[i] != ',') {
      i++;
    }
    size_t end = i;
    while (start < end && (v[start] == ' ' || v[start] == '\t')) {
      start++;
    }
    while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t')) {
      end--;
    }
    if (end > start) {
      fn(p, v + start, end - start);
    }
    i++;
  }
}

static void connection_option(struct http_parser *p, const char *e, size_t n) {
  if (n == 5 && mem_equal_nocase(e, "close", 5)) {
    p->conn_close = true;
  } else if (n == 10 && mem_equal_nocase(e, "keep-alive", 10)) {
    p->conn_keep_alive = true;
  }
}

/* Only the last coding matters: a body is chunked exactly when chunked is applied last. */
static void transfer_coding(struct http_parser *p, const char *e, size_t n) {
  p->chunked = n == 7 && mem_equal_nocase(e, "chunked", 7);
}

/* Records the header that just ended and interprets the ones that decide where the
 * request ends or how the connection goes on. */
static enum http_parse_result end_field(struct http_parser *p, const char *buf) {
  struct http_request *r = &p->req;
  if (r->header_count == HTTP_MAX_HEADERS) {
    return fail(p, 431, "too many header fields");
  }
  struct http_header *h = &r->headers[r->header_count++];
  const char *value = buf + h->value.off;
  size_t value_len = h->value.len;

  if (http_span_equal_nocase(buf, h->name, "content-length")) {
    uint64_t n;
    if (!parse_content_length(&n, value, value_len)) {
      return fail(p, 400, "invalid Content-Length");
    }
    if (p->has_content_length && n != r->content_length) {
      return fail(p, 400, "conflicting Content-Length headers");
    }
    p->has_content_length = true;
    r->content_length = n;
  } else if (http_span_equal_nocase(buf, h->name, "transfer-encoding")) {
    p->has_transfer_encoding = true;
    for_each_element(p, value, value_len, transfer_coding);
  } else if (http_span_equal_nocase(buf, h->name, "host")) {
    p->host_count++;
  } else if (http_span_equal_nocase(buf, h->name, "connection")) {
    for_each_element(p, value, value_len, connection_option);
  } else if (http_span_equal_nocase(buf, h->name, "expect")) {
    if (value_len == 12 && mem_equal_nocase(value, "100-continue", 12)) {
      r->expect_continue = true;
    } else {
      p->bad_expect = true;
    }
  }
  return HTTP_PARSE_INCOMPLETE;
}

/* Checks "HTTP/<digit>.<digit>" and sets the minor version. */
static enum http_parse_result end_version(struct http_parser *p, const char *buf) {
  const char *v = buf + p->mark;
  size_t len = p->pos - p->mark;
  if (len != VERSION_LEN || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
      v[7] < '0' || v[7] > '9') {
    return fail(p, 400, "malformed HTTP version");
  }
  if (v[5] != '1') {
    return fail(p, 505, "only HTTP/1.x is supported");
  }
  p->req.minor_version = v[7] == '0' ? 0 : 1;
  return HTTP_PARSE_INCOMPLETE;
}

/* Splits the target into path and query, and checks its form. */
static enum http_parse_result end_target(struct http_parser *p, const char *buf) {
  struct http_request *r = &p->req;
  const char *t = buf + r->target.off;
  size_t len = r->target.len;
  size_t path_start;
  if (t[0] == '/') {
    path_start = 0;
  } else if (len == 1 && t[0] == '*') {
    if (!http_span_equal(buf, r->method, "OPTIONS")) {
      return fail(p, 400, "'*' is only a target for OPTIONS");
    }
    path_start = len;
  } else {
    size_t scheme = 0;
    if (len > 7 && mem_equal_nocase(t, "http://", 7)) {
      scheme = 7;
    } else if (len > 8 && mem_equal_nocase(t, "https://", 8)) {
      scheme = 8;
    } else {
      return fail(p, 400, "invalid request target");
    }
    path_start = scheme;
    while (path_start < len && t[path_start] != '/' && t[path_start] != '?') {
      path_start++;
    }
    if (path_start == scheme) {
      return fail(p, 400, "invalid request target");
    }
  }
  size_t q = path_start;
  while (q < len && t[q] != '?') {
    q++;
  }
  for (size_t i = 0; i < len; i++) {
    if (t[i] == '#') {
      return fail(p, 400, "a request target has no fragment");
    }
  }
  r->path.off = r->target.off + path_start;
  r->path.len = q - path_start;
  r->query.off = r->target.off + (q < len ? q + 1 : len);
  r->query.len = q < len ? len - q - 1 : 0;
  return HTTP_PARSE_INCOMPLETE;
}

/* The head is complete: the checks that need every header at once. */
static enum http_parse_result end_head(struct http_parser *p) {
  struct http_request *r = &p->req;
  if (p->host_count > 1) {
    return fail(p, 400, "more than one Host header");
  }
  if (r->minor_version == 1 && p->host_count == 0) {
    return fail(p, 400, "HTTP/1.1 needs a Host header");
  }
  if (p->has_transfer_encoding) {
    if (p->has_content_length) {
      return fail(p, 400, "both Content-Length and Transfer-Encoding");
    }
    if (p->chunked) {
      return fail(p, 411, "chunked bodies are not supported: send a Content-Length");
    }
    return fail(p, 501, "unsupported Transfer-Encoding");
  }
  if (p->bad_expect) {
    return fail(p, 417, "only Expect: 100-continue is supported");
  }
  if (r->content_length > p->max_body) {
    return fail(p, 413, "request body too large");
  }
  r->head_len = p->pos;
  r->keep_alive = !p->conn_close && (r->minor_version == 1 || p->conn_keep_alive);
  p->state = S_DONE;
  return HTTP_PARSE_DONE;
}

/* Takes one byte, |c|, at offset p->pos (already advanced past it when this returns
 * INCOMPLETE). */
static enum http_parse_result step(struct http_parser *p, const char *buf, unsigned char c) {
  struct http_request *r = &p->req;
  size_t at = p->pos;
  enum http_parse_result res = HTTP_PARSE_INCOMPLETE;
  switch (p->state) {
    case S_START:
      if (c == '\r') {
        p->state = S_START_LF;
      } else if (is_tchar(c)) {
        p->mark = at;
        p->state = S_METHOD;
      } else {
        return fail(p, 400, "malformed request line");
      }
      break;
    case S_START_LF:
      if (c != '\n') {
        return fail(p, 400, "bare CR");
      }
      p->state = S_START;
      break;
    case S_METHOD:
      if (c == ' ') {
        r->method.off = p->mark;
        r->method.len = at - p->mark;
        p->state = S_TARGET_START;
      } else if (!is_tchar(c)) {
        return fail(p, 400, "malformed method");
      } else if (at - p->mark >= METHOD_MAX) {
        return fail(p, 501, "method not implemented");
      }
      break;
    case S_TARGET_START:
    case S_TARGET:
      if (c == ' ' && p->state == S_TARGET) {
        r->target.off = p->mark;
        r->target.len = at - p->mark;
        p->mark = at + 1;
        p->state = S_VERSION;
        res = end_target(p, buf);
      } else if (c < 0x21 || c > 0x7e) {
        return fail(p, 400, "malformed request target");
      } else if (p->state == S_TARGET_START) {
        p->mark = at;
        p->state = S_TARGET;
      }
      break;
    case S_VERSION:
      if (c == '\r') {
        p->state = S_REQLINE_LF;
        res = end_version(p, buf);
      } else if (at - p->mark >= VERSION_LEN) {
        return fail(p, 400, "malformed HTTP version");
      }
      break;
    case S_REQLINE_LF:
      if (c != '\n') {
        return fail(p, 400, "bare CR");
      }
      p->state = S_FIELD_START;
      break;
    case S_FIELD_START:
      if (c == '\r') {
        p->state = S_HEAD_END_LF;
      } else if (is_tchar(c)) {
        p->mark = at;
        p->state = S_NAME;
      } else if (c == ' ' || c == '\t') {
        return fail(p, 400, "folded or indented header line");
      } else {
        return fail(p, 400, "malformed header name");
      }
      break;
    case S_NAME:
      if (c == ':') {
        if (r->header_count == HTTP_MAX_HEADERS) {
          return fail(p, 431, "too many header fields");
        }
        struct http_header *h = &r->headers[r->header_count];
        h->name.off = p->mark;
        h->name.len = at - p->mark;
        p->state = S_OWS;
      } else if (!is_tchar(c)) {
        return fail(p, 400, "malformed header name");
      }
      break;
    case S_OWS:
    case S_VALUE:
      if (c == ' ' || c == '\t') {
        break;
      }
      if (c == '\r') {
        struct http_header *h = &r->headers[r->header_count];
        h->value.off = p->state == S_VALUE ? p->mark : at;
        h->value.len = p->state == S_VALUE ? p->value_end - p->mark : 0;
        p->state = S_FIELD_LF;
      } else if (is_field_vchar(c)) {
        if (p->state == S_OWS) {
          p->mark = at;
          p->state = S_VALUE;
        }
        p->value_end = at + 1;
      } else {
        return fail(p, 400, "invalid byte in a header value");
      }
      break;
    case S_FIELD_LF:
      if (c != '\n') {
        return fail(p, 400, "bare CR");
      }
      p->state = S_FIELD_START;
      res = end_field(p, buf);
      break;
    case S_HEAD_END_LF:
      if (c != '\n') {
        return fail(p, 400, "bare CR");
      }
      p->pos = at + 1;
      return end_head(p);
    default:
      return fail(p, 400, "internal parser state");
  }
  if (res == HTTP_PARSE_INCOMPLETE) {
    p->pos = at + 1;
  }
  return res;
}

enum http_parse_result http_parser_execute(struct http_parser *p, const char *buf, size_t len) {
  if (p->state == S_DONE) {
    return HTTP_PARSE_DONE;
  }
  if (p->state == S_ERROR) {
    return HTTP_PARSE_ERROR;
  }
  while (p->pos < len) {
    if (p->pos >= HTTP_MAX_HEAD) {
      bool in_request_line = p->state <= S_REQLINE_LF;
      return in_request_line ? fail(p, 414, "request line too long")
                             : fail(p, 431, "request header fields too large");
    }
    enum http_parse_result res = step(p, buf, (unsigned char)buf[p->pos]);
    if (res != HTTP_PARSE_INCOMPLETE) {
      return res;
    }
  }
  return HTTP_PARSE_INCOMPLETE;
}
