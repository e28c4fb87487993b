/* libFuzzer driver for http_parser: every byte a process in the pod sends to the admin
 * port goes through it.
 *
 * The first input byte picks how the stream is cut into reads (1 to 64 bytes each); the
 * rest is the byte stream, parsed as pipelined requests the way admin.c does. Each
 * request is parsed twice, in one call and read by read, and both must agree exactly;
 * every accepted request must satisfy the header's promises (spans inside the head, a
 * token method, limits respected). A disagreement aborts. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "mtlsd/http/http_parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* At most this many requests per input: enough to cover pipelining. */
#define MAX_REQUESTS 64

static void check_span(struct http_span s, size_t limit, const char *what) {
  require(s.off <= limit && s.len <= limit - s.off, what, NULL);
}

static void check_request(const struct http_request *r, const char *buf) {
  size_t head = r->head_len;
  require(head >= 4 && head <= HTTP_MAX_HEAD, "the head length is within the limit", NULL);
  require(memcmp(buf + head - 4, "\r\n\r\n", 4) == 0, "a head ends with an empty line", NULL);
  require(r->content_length <= HTTP_MAX_BODY, "the body length is within the limit", NULL);
  require(r->header_count <= HTTP_MAX_HEADERS, "the header count is within the limit", NULL);
  require(r->minor_version == 0 || r->minor_version == 1, "HTTP/1.0 or HTTP/1.1", NULL);
  require(r->method.len > 0, "a method is not empty", NULL);
  check_span(r->method, head, "the method is inside the head");
  check_span(r->target, head, "the target is inside the head");
  check_span(r->path, head, "the path is inside the head");
  check_span(r->query, head, "the query is inside the head");
  require(
      r->path.off >= r->target.off && r->path.off + r->path.len <= r->target.off + r->target.len,
      "the path is inside the target", NULL);
  require(
      r->query.off >= r->target.off && r->query.off + r->query.len <= r->target.off + r->target.len,
      "the query is inside the target", NULL);
  for (size_t i = 0; i < r->method.len; i++) {
    char c = buf[r->method.off + i];
    require(c > ' ' && c < 0x7f && c != '(' && c != '"', "a method is a token", NULL);
  }
  for (size_t i = 0; i < r->target.len; i++) {
    unsigned char c = (unsigned char)buf[r->target.off + i];
    require(c > ' ' && c < 0x7f && c != '#', "a target is printable ASCII", NULL);
  }
  for (size_t i = 0; i < r->header_count; i++) {
    const struct http_header *h = &r->headers[i];
    check_span(h->name, head, "a header name is inside the head");
    check_span(h->value, head, "a header value is inside the head");
    require(h->name.len > 0, "a header name is not empty", NULL);
    if (h->value.len > 0) {
      char first = buf[h->value.off];
      char last = buf[h->value.off + h->value.len - 1];
      require(first != ' ' && first != '\t' && last != ' ' && last != '\t',
              "a header value is trimmed", NULL);
    }
    for (size_t j = 0; j < h->value.len; j++) {
      char c = buf[h->value.off + j];
      require(c != '\r' && c != '\n' && c != '\0', "a header value holds no CR, LF or NUL", NULL);
    }
  }
  struct http_span v;
  if (http_query_param(&v, buf, r->query, "dry_run")) {
    require(v.off >= r->query.off && v.off + v.len <= r->query.off + r->query.len,
            "a query parameter is inside the query", NULL);
  }
}

/* Parses the stream's next request read by read; |chunk| bytes arrive at a time, each
 * read into a fresh buffer of exactly the bytes so far, so that any read past them or
 * any pointer kept into an old buffer shows up under ASan. */
static enum http_parse_result parse_in_reads(struct http_parser *p, const uint8_t *in, size_t len,
                                             size_t chunk) {
  http_parser_init(p, HTTP_MAX_BODY);
  enum http_parse_result res = HTTP_PARSE_INCOMPLETE;
  size_t have = 0;
  while (res == HTTP_PARSE_INCOMPLETE && have < len) {
    have = len - have > chunk ? have + chunk : len;
    char *buf = malloc(have);
    if (buf == NULL) {
      abort();
    }
    memcpy(buf, in, have);
    res = http_parser_execute(p, buf, have);
    free(buf);
  }
  return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) {
    return 0;
  }
  size_t chunk = (size_t)(data[0] % 64) + 1;
  const uint8_t *stream = data + 1;
  size_t len = size - 1;
  char *buf = malloc(len > 0 ? len : 1);
  if (buf == NULL) {
    return 0;
  }
  if (len > 0) {
    memcpy(buf, stream, len);
  }

  size_t off = 0;
  for (int n = 0; n < MAX_REQUESTS && off < len; n++) {
    struct http_parser whole;
    http_parser_init(&whole, HTTP_MAX_BODY);
    enum http_parse_result res = http_parser_execute(&whole, buf + off, len - off);
    struct http_parser reads;
    enum http_parse_result res2 = parse_in_reads(&reads, stream + off, len - off, chunk);
    require(res == res2, "the result does not depend on how the bytes arrive", NULL);
    require(http_parser_execute(&whole, NULL, 0) == res || res == HTTP_PARSE_INCOMPLETE,
            "a final result is sticky", NULL);
    if (res == HTTP_PARSE_ERROR) {
      require(whole.error_status == reads.error_status, "the same error either way", NULL);
      require(whole.error_status >= 400 && whole.error_status < 600, "an error is a 4xx or 5xx",
              NULL);
      require(whole.error_reason != NULL && whole.error_reason[0] != '\0', "an error has a reason",
              NULL);
      require(strcmp(http_status_text(whole.error_status), "Unknown") != 0,
              "an error status has a reason phrase", NULL);
      break;
    }
    if (res == HTTP_PARSE_INCOMPLETE) {
      require(len - off <= HTTP_MAX_HEAD, "more than a full head is never incomplete", NULL);
      break;
    }
    require(whole.req.head_len == reads.req.head_len, "the same head length either way", NULL);
    require(whole.req.content_length == reads.req.content_length, "the same body either way", NULL);
    require(whole.req.keep_alive == reads.req.keep_alive, "the same keep-alive either way", NULL);
    require(whole.req.header_count == reads.req.header_count, "the same headers either way", NULL);
    check_request(&whole.req, buf + off);
    size_t used = whole.req.head_len + (size_t)whole.req.content_length;
    if (used > len - off) {
      break;
    }
    off += used;
  }
  free(buf);
  return 0;
}
