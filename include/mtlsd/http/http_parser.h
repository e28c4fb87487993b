/* http_parser: a small, strict HTTP/1.1 request-head parser for the admin port.
 *
 * Pure logic, no I/O and no allocation, so that it can be unit-tested byte by byte and
 * fuzzed. The caller keeps the bytes of the request in its own buffer and hands the
 * parser that buffer again each time more bytes arrive; the parser resumes where it
 * stopped (each byte is examined once), so a request written one byte at a time costs
 * no more than one written at once. Everything it reports is an offset into that
 * buffer, so the caller may move the buffer between calls.
 *
 * Strict on purpose: the admin port is reachable by every process in the pod, so any
 * doubt about where a request ends is answered with an error, never a guess.
 *   - Lines end in CRLF; a bare CR or LF is an error. Empty lines before the request
 *     line are skipped (RFC 9112 section 2.2).
 *   - Request line: METHOD SP TARGET SP HTTP/1.x, single spaces. The target is in
 *     origin form ("/path?query"), absolute form ("http://host/path"), or "*" (OPTIONS
 *     only); '#' and non-printable bytes are refused.
 *   - Header names are tokens with the colon right after them; values are printable
 *     bytes, tabs and spaces (obs-text allowed), trimmed. Line folding is refused.
 *   - HTTP/1.1 needs exactly one Host header; two Host headers are refused in any
 *     version.
 *   - Content-Length is digits only; repeated with different values, or together with
 *     Transfer-Encoding, it is an error (request smuggling). Transfer-Encoding is not
 *     supported: chunked gets 411 (send a Content-Length instead), any other coding 501.
 *   - The head (request line and headers) is at most HTTP_MAX_HEAD bytes (431, or 414
 *     while still in the request line), at most HTTP_MAX_HEADERS fields (431), and the
 *     body at most the caller's limit, HTTP_MAX_BODY unless it needs more (413). Only the head is
 * parsed; the body is the caller's, |content_length| bytes right after |head_len|. */
#ifndef MTLSD_HTTP_PARSER_H
#define MTLSD_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEAD 16384
#define HTTP_MAX_BODY 65536
/* The largest body limit a caller may set (the webhook's AdmissionReview is 10 MiB). */
#define HTTP_BODY_LIMIT_MAX ((uint64_t)64 << 20)
#define HTTP_MAX_HEADERS 100

/* A piece of the caller's buffer: |len| bytes at offset |off|. */
struct http_span {
  size_t off;
  size_t len;
};

struct http_header {
  struct http_span name;
  struct http_span value; /* Without leading or trailing whitespace. */
};

struct http_request {
  struct http_span method;
  struct http_span target; /* As sent. */
  struct http_span path;   /* The target's path: empty for "*" and for "http://host". */
  struct http_span query;  /* After '?', without it; empty when there is none. */
  int minor_version;       /* 0 or 1 (HTTP/1.2 and later minors read as 1). */
  struct http_header headers[HTTP_MAX_HEADERS];
  size_t header_count;
  uint64_t content_length; /* 0 when absent. */
  size_t head_len;         /* Bytes from the request's start through the blank line. */
  bool keep_alive;         /* HTTP/1.1 unless "Connection: close"; 1.0 only if asked. */
  bool expect_continue;    /* "Expect: 100-continue" was sent. */
};

enum http_parse_result {
  HTTP_PARSE_INCOMPLETE, /* Every byte so far is valid; more are needed. */
  HTTP_PARSE_DONE,       /* The head is complete: see http_parser.req. */
  HTTP_PARSE_ERROR       /* See http_parser.error_status and error_reason. */
};

/* The parser's state. Callers read |req| after HTTP_PARSE_DONE and |error_status| and
 * |error_reason| after HTTP_PARSE_ERROR; the other fields are private. */
struct http_parser {
  struct http_request req;
  int error_status;         /* 400, 411, 413, 414, 417, 431, 501 or 505. */
  const char *error_reason; /* Static, one line, for the response body. */

  int state;
  size_t pos;  /* Bytes examined so far. */
  size_t mark; /* Start of the token being read. */
  size_t value_end;
  size_t host_count;
  bool has_content_length;
  bool has_transfer_encoding;
  bool chunked;
  bool conn_close;
  bool conn_keep_alive;
  bool bad_expect;
  uint64_t max_body;
};

/* http_parser_init readies |p| for a new request whose body may have at most |max_body|
 * bytes (at most HTTP_BODY_LIMIT_MAX). The parser allocates nothing, so there is nothing
 * to free; the caller owns |p| and the buffer it parses. */
void http_parser_init(struct http_parser *p, uint64_t max_body);

/* http_parser_execute parses the request whose first byte is |buf[0]|. |len| is the
 * number of bytes received so far; on each call |buf| must start with the same bytes as
 * on the previous one (it may have moved, and grown). Once the result is DONE or ERROR
 * it stays so: later calls return it again without reading |buf|. The parser never
 * examines more than the first HTTP_MAX_HEAD bytes: a longer head is reported (414 or
 * 431) as soon as a byte beyond them is available, so the caller's buffer must hold at
 * least HTTP_MAX_HEAD + 1 bytes. */
enum http_parse_result http_parser_execute(struct http_parser *p, const char *buf, size_t len);

/* http_status_text returns the reason phrase of |status| ("Not Found"), or "Unknown". */
const char *http_status_text(int status);

/* http_span_equal returns whether the span |s| of |buf| is exactly |str|. */
bool http_span_equal(const char *buf, struct http_span s, const char *str);

/* http_span_equal_nocase is http_span_equal with ASCII letters compared without case. */
bool http_span_equal_nocase(const char *buf, struct http_span s, const char *str);

/* http_query_param finds the parameter |name| in the query |query| of |buf| (pairs
 * separated by '&', "name=value" or a bare "name"). It sets |*out| to the value (empty
 * for a bare name) and returns true, or returns false when absent. No percent-decoding:
 * the admin port's parameters are plain words. */
bool http_query_param(struct http_span *out, const char *buf, struct http_span query,
                      const char *name);

#endif
