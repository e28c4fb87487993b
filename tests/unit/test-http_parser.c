/* Unit tests for http_parser: tables of good and bad request heads, each also fed one
 * byte at a time (the parse must not depend on how the bytes arrive), plus pipelining,
 * the size limits, the body-length rules and the query helper. */
#include "mtlsd/http/http_parser.h"

#include <string.h>

#include "test.h"

/* Parses |len| bytes of |in| in one call. */
static enum http_parse_result parse_all(struct http_parser *p, const char *in, size_t len) {
  http_parser_init(p, HTTP_MAX_BODY);
  return http_parser_execute(p, in, len);
}

/* Parses |in| growing one byte per call, from a fresh copy each time so that a parser
 * that keeps a pointer into an old buffer is caught by ASan. */
static enum http_parse_result parse_bytewise(struct http_parser *p, const char *in, size_t len) {
  http_parser_init(p, HTTP_MAX_BODY);
  enum http_parse_result res = HTTP_PARSE_INCOMPLETE;
  for (size_t n = 1; n <= len && res == HTTP_PARSE_INCOMPLETE; n++) {
    char *copy = malloc(n);
    memcpy(copy, in, n);
    res = http_parser_execute(p, copy, n);
    free(copy);
  }
  return res;
}

static bool span_is(const char *buf, struct http_span s, const char *want) {
  return want == NULL || http_span_equal(buf, s, want);
}

struct good_case {
  const char *in;
  const char *method, *path, *query;
  int minor;
  bool keep_alive;
  uint64_t content_length;
  size_t trailing; /* Bytes after the head (a body, or the next request). */
};

static const struct good_case kGood[] = {
    {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/healthz", "", 1, true, 0, 0},
    {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/", "", 1, true, 0, 0},
    {"GET /stats?x=1&y HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/stats", "x=1&y", 1, true, 0, 0},
    {"GET /a? HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/a", "", 1, true, 0, 0},
    {"GET /a?b?c HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/a", "b?c", 1, true, 0, 0},
    {"POST /reload?dry_run=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "POST", "/reload",
     "dry_run=1", 1, true, 0, 0},
    {"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "POST", "/drain", "", 1,
     true, 5, 5},
    {"GET / HTTP/1.0\r\n\r\n", "GET", "/", "", 0, false, 0, 0},
    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET", "/", "", 0, true, 0, 0},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive, close\r\n\r\n", "GET", "/", "", 0, false, 0, 0},
    {"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "GET", "/", "", 1, false, 0, 0},
    {"GET / HTTP/1.1\r\nHost: x\r\nconnection: foo, ,CLOSE\r\n\r\n", "GET", "/", "", 1, false, 0,
     0},
    {"GET / HTTP/1.2\r\nHost: x\r\n\r\n", "GET", "/", "", 1, true, 0, 0},
    {"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/", "", 1, true, 0, 0},
    {"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD", "/metrics", "", 1, true, 0, 0},
    {"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "OPTIONS", "", "", 1, true, 0, 0},
    {"GET http://127.0.0.1:15000/ready?v HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/ready", "v", 1,
     true, 0, 0},
    {"GET HTTP://h HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "", "", 1, true, 0, 0},
    {"GET https://h?q HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "", "q", 1, true, 0, 0},
    {"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", "BREW", "/pot", "", 1, true, 0, 0},
    {"GET / HTTP/1.1\r\nHost:\r\n\r\n", "GET", "/", "", 1, true, 0, 0},
    {"GET / HTTP/1.1\r\nHost:    x   \t\r\nX-Empty:\r\nX-Sp: \t \r\n\r\n", "GET", "/", "", 1, true,
     0, 0},
    {"GET / HTTP/1.1\r\nHost: x\r\nX-Obs: caf\xc3\xa9\r\n\r\n", "GET", "/", "", 1, true, 0, 0},
    {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc", "GET", "/",
     "", 1, true, 3, 3},
    {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\n1234567", "GET", "/", "", 1, true, 7,
     7},
    {"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nz", "GET", "/",
     "", 1, true, 1, 1},
    {"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\n", "GET", "/", "", 1, true, 0, 20},
    {"GET /%41~!$&'()*+,;=:@-._ HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/%41~!$&'()*+,;=:@-._", "", 1,
     true, 0, 0},
};

TEST(good_requests) {
  for (size_t i = 0; i < sizeof(kGood) / sizeof(kGood[0]); i++) {
    const struct good_case *c = &kGood[i];
    size_t len = strlen(c->in);
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      struct http_parser p;
      enum http_parse_result res =
          bytewise ? parse_bytewise(&p, c->in, len) : parse_all(&p, c->in, len);
      if (res != HTTP_PARSE_DONE) {
        fprintf(stderr, "  case %zu (%s): result %d, status %d (%s)\n", i,
                bytewise ? "bytewise" : "whole", res, p.error_status,
                p.error_reason ? p.error_reason : "");
        test_failed_checks++;
        continue;
      }
      const struct http_request *r = &p.req;
      CHECK(span_is(c->in, r->method, c->method));
      CHECK(span_is(c->in, r->path, c->path));
      CHECK(span_is(c->in, r->query, c->query));
      CHECK_INTEQ(r->minor_version, c->minor);
      CHECK_INTEQ(r->keep_alive, c->keep_alive);
      CHECK_INTEQ(r->content_length, c->content_length);
      CHECK_INTEQ(r->head_len, len - c->trailing);
    }
  }
}

TEST(headers_are_reported) {
  static const char in[] = "GET / HTTP/1.1\r\nHost: example\r\nX-A:  1 2  \r\nX-B:\r\n\r\n";
  struct http_parser p;
  CHECK_INTEQ(parse_all(&p, in, strlen(in)), HTTP_PARSE_DONE);
  CHECK_INTEQ(p.req.header_count, 3);
  CHECK(http_span_equal(in, p.req.headers[0].name, "Host"));
  CHECK(http_span_equal(in, p.req.headers[0].value, "example"));
  CHECK(http_span_equal(in, p.req.headers[1].name, "X-A"));
  CHECK(http_span_equal(in, p.req.headers[1].value, "1 2"));
  CHECK(http_span_equal(in, p.req.headers[2].name, "X-B"));
  CHECK_INTEQ(p.req.headers[2].value.len, 0);
  CHECK(http_span_equal(in, p.req.target, "/"));
  CHECK(!p.req.expect_continue);
}

struct bad_case {
  const char *in;
  int status;
  size_t len; /* The literal's length: some hold NUL bytes. */
};

#define BAD(in, status) \
  { in, status, sizeof(in) - 1 }

static const struct bad_case kBad[] = {
    /* Not HTTP at all. */
    BAD("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    BAD("\x00\x00\x00", 400),
    BAD(" GET / HTTP/1.1\r\n", 400),
    BAD("\nGET / HTTP/1.1\r\n", 400),
    BAD("\rGET / HTTP/1.1\r\n", 400),
    /* Request line. */
    BAD("GET  / HTTP/1.1\r\n", 400),
    BAD("GET /  HTTP/1.1\r\n", 400),
    BAD("GET / HTTP/1.1 \r\n", 400),
    BAD("GET\t/ HTTP/1.1\r\n", 400),
    BAD("GET / HTTP/1.1\n", 400),
    BAD("GET / HTTP/1.1\rX", 400),
    BAD("GET /\r\n", 400),
    BAD("GET / \r\n", 400),
    BAD("GET / http/1.1\r\n", 400),
    BAD("GET / HTTP/1\r\n", 400),
    BAD("GET / HTTP/1.1x\r\n", 400),
    BAD("GET / HTTP/11.1\r\n", 400),
    BAD("GET / HTTP/a.b\r\n", 400),
    BAD("GET / HTTP/2.0\r\n", 505),
    BAD("GET / HTTP/0.9\r\n", 505),
    BAD("G(T / HTTP/1.1\r\n", 400),
    BAD("GET a HTTP/1.1\r\n", 400),
    BAD("GET * HTTP/1.1\r\n", 400),
    BAD("GET /a#frag HTTP/1.1\r\n", 400),
    BAD("GET /a\x7f HTTP/1.1\r\n", 400),
    BAD("GET /caf\xc3\xa9 HTTP/1.1\r\n", 400),
    BAD("GET /\x01 HTTP/1.1\r\n", 400),
    BAD("GET http:// HTTP/1.1\r\n", 400),
    BAD("GET http:///x HTTP/1.1\r\n", 400),
    BAD("GET ftp://h/x HTTP/1.1\r\n", 400),
    BAD("CONNECT h:443 HTTP/1.1\r\n", 400),
    BAD("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\n", 501),
    /* Header lines. */
    BAD("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nX-B: b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX-A: \x7f\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHo\"st: x\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: x\r\n\r\r", 400),
    BAD("GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
    /* Host. */
    BAD("GET / HTTP/1.1\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400),
    /* Body length. */
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n", 413),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999999999\r\n\r\n", 413),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n", 411),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        400),
    BAD("POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417),
};

TEST(bad_requests) {
  for (size_t i = 0; i < sizeof(kBad) / sizeof(kBad[0]); i++) {
    const struct bad_case *c = &kBad[i];
    size_t len = c->len;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      struct http_parser p;
      enum http_parse_result res =
          bytewise ? parse_bytewise(&p, c->in, len) : parse_all(&p, c->in, len);
      if (res != HTTP_PARSE_ERROR || p.error_status != c->status) {
        fprintf(stderr, "  case %zu (%s): result %d, status %d, want error %d\n", i,
                bytewise ? "bytewise" : "whole", res, p.error_status, c->status);
        test_failed_checks++;
        continue;
      }
      CHECK(p.error_reason != NULL && p.error_reason[0] != '\0');
    }
  }
}

/* A bad byte is reported as soon as it arrives, not when the head ends. */
TEST(errors_are_found_early) {
  static const char in[] = "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01";
  struct http_parser p;
  http_parser_init(&p, HTTP_MAX_BODY);
  CHECK_INTEQ(http_parser_execute(&p, in, 5), HTTP_PARSE_INCOMPLETE);
  CHECK_INTEQ(http_parser_execute(&p, in, sizeof(in) - 1), HTTP_PARSE_ERROR);
  CHECK_INTEQ(p.error_status, 400);
  CHECK_INTEQ(parse_all(&p, "\x16\x03", 1), HTTP_PARSE_ERROR);
}

TEST(nul_in_value_and_garbage) {
  static const char nul[] = "GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n";
  struct http_parser p;
  CHECK_INTEQ(parse_all(&p, nul, sizeof(nul) - 1), HTTP_PARSE_ERROR);
  CHECK_INTEQ(p.error_status, 400);
  static const char zeros[16] = {0};
  CHECK_INTEQ(parse_all(&p, zeros, sizeof(zeros)), HTTP_PARSE_ERROR);
  CHECK_INTEQ(p.error_status, 400);
}

TEST(incomplete_stays_incomplete) {
  static const char *const prefixes[] = {
      "",
      "G",
      "GET",
      "GET ",
      "GET /",
      "GET / ",
      "GET / HTTP/1.",
      "GET / HTTP/1.1",
      "GET / HTTP/1.1\r",
      "GET / HTTP/1.1\r\n",
      "GET / HTTP/1.1\r\nHost",
      "GET / HTTP/1.1\r\nHost:",
      "GET / HTTP/1.1\r\nHost: x",
      "GET / HTTP/1.1\r\nHost: x\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\n\r",
      "\r\n\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
    struct http_parser p;
    CHECK_INTEQ(parse_all(&p, prefixes[i], strlen(prefixes[i])), HTTP_PARSE_INCOMPLETE);
  }
}

/* Three requests back to back, as a pipelining client sends them. */
TEST(pipelining) {
  static const char in[] =
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
      "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      "GET /partial HTTP/1.1\r\n";
  static const char *const paths[] = {"/healthz", "/drain", "/ready"};
  size_t off = 0;
  size_t total = sizeof(in) - 1;
  for (size_t i = 0; i < 3; i++) {
    struct http_parser p;
    CHECK_INTEQ(parse_all(&p, in + off, total - off), HTTP_PARSE_DONE);
    CHECK(http_span_equal(in + off, p.req.path, paths[i]));
    CHECK_INTEQ(p.req.keep_alive, i < 2);
    off += p.req.head_len + p.req.content_length;
  }
  struct http_parser p;
  CHECK_INTEQ(parse_all(&p, in + off, total - off), HTTP_PARSE_INCOMPLETE);
}

/* Every split point of a pipelined stream gives the same requests. */
TEST(split_at_every_byte) {
  static const char in[] =
      "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /b?dry_run=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nxy"
      "GET /c HTTP/1.0\r\n\r\n";
  size_t total = sizeof(in) - 1;
  for (size_t split = 0; split <= total; split++) {
    size_t off = 0;
    size_t got = 0;
    while (off < total) {
      struct http_parser p;
      http_parser_init(&p, HTTP_MAX_BODY);
      size_t avail = split > off ? split - off : 0;
      enum http_parse_result res = http_parser_execute(&p, in + off, avail);
      if (res == HTTP_PARSE_INCOMPLETE) {
        res = http_parser_execute(&p, in + off, total - off);
      }
      if (res != HTTP_PARSE_DONE) {
        break;
      }
      got++;
      off += p.req.head_len + p.req.content_length;
    }
    CHECK_INTEQ(got, 3);
    CHECK_INTEQ(off, total);
  }
}

TEST(result_is_sticky) {
  static const char in[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE";
  struct http_parser p;
  CHECK_INTEQ(parse_all(&p, in, sizeof(in) - 1), HTTP_PARSE_DONE);
  CHECK_INTEQ(http_parser_execute(&p, NULL, 0), HTTP_PARSE_DONE);
  CHECK_INTEQ(parse_all(&p, "\x01", 1), HTTP_PARSE_ERROR);
  CHECK_INTEQ(http_parser_execute(&p, NULL, 0), HTTP_PARSE_ERROR);
  CHECK_INTEQ(p.error_status, 400);
}

/* Builds "GET / HTTP/1.1\r\nHost: x\r\nX: aaa...\r\n\r\n" of exactly |total| bytes. */
static char *head_of_size(size_t total) {
  static const char start[] = "GET / HTTP/1.1\r\nHost: x\r\nX: ";
  static const char end[] = "\r\n\r\n";
  char *buf = malloc(total + 1);
  size_t fill = total - (sizeof(start) - 1) - (sizeof(end) - 1);
  memcpy(buf, start, sizeof(start) - 1);
  memset(buf + sizeof(start) - 1, 'a', fill);
  memcpy(buf + total - (sizeof(end) - 1), end, sizeof(end));
  return buf;
}

TEST(head_size_limit) {
  struct http_parser p;
  char *ok = head_of_size(HTTP_MAX_HEAD);
  CHECK_INTEQ(parse_all(&p, ok, HTTP_MAX_HEAD), HTTP_PARSE_DONE);
  CHECK_INTEQ(p.req.head_len, HTTP_MAX_HEAD);
  free(ok);

  char *big = head_of_size(HTTP_MAX_HEAD + 1);
  CHECK_INTEQ(parse_all(&p, big, HTTP_MAX_HEAD), HTTP_PARSE_INCOMPLETE);
  CHECK_INTEQ(http_parser_execute(&p, big, HTTP_MAX_HEAD + 1), HTTP_PARSE_ERROR);
  CHECK_INTEQ(p.error_status, 431);
  free(big);

  /* A huge head is refused once HTTP_MAX_HEAD + 1 bytes are in, however many follow. */
  char *huge = head_of_size(1 << 20);
  CHECK_INTEQ(parse_all(&p, huge, 1 << 20), HTTP_PARSE_ERROR);
  CHECK_INTEQ(p.error_status, 431);
  free(huge);

  /* In the request line the same limit reads as 414. */
  char *line = malloc(HTTP_MAX_HEAD + 10);
  memcpy(line, "GET /", 5);
  memset(line + 5, 'a', HTTP_MAX_HEAD + 5);
  CHECK_INTEQ(parse_all(&p, line, HTTP_MAX_HEAD + 10), HTTP_PARSE_ERROR);
  CHECK_INTEQ(p.error_status, 414);
  free(line);

  /* Endless empty lines before a request are bounded too. */
  char *crlf = malloc(HTTP_MAX_HEAD + 2);
  for (size_t i = 0; i < HTTP_MAX_HEAD + 2; i += 2) {
    memcpy(crlf + i, "\r\n", 2);
  }
  CHECK_INTEQ(parse_all(&p, crlf, HTTP_MAX_HEAD + 2), HTTP_PARSE_ERROR);
  free(crlf);
}

TEST(header_count_limit) {
  char buf[4096];
  for (size_t n = HTTP_MAX_HEADERS - 1; n <= HTTP_MAX_HEADERS + 1; n++) {
    size_t len = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: x\r\n");
    for (size_t i = 1; i < n; i++) {
      len += (size_t)snprintf(buf + len, sizeof(buf) - len, "X%zu: v\r\n", i);
    }
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "\r\n");
    struct http_parser p;
    enum http_parse_result res = parse_all(&p, buf, len);
    if (n <= HTTP_MAX_HEADERS) {
      CHECK_INTEQ(res, HTTP_PARSE_DONE);
      CHECK_INTEQ(p.req.header_count, n);
    } else {
      CHECK_INTEQ(res, HTTP_PARSE_ERROR);
      CHECK_INTEQ(p.error_status, 431);
    }
  }
}

TEST(content_length_limit) {
  char buf[256];
  struct http_parser p;
  snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
           HTTP_MAX_BODY);
  CHECK_INTEQ(parse_all(&p, buf, strlen(buf)), HTTP_PARSE_DONE);
  CHECK_INTEQ(p.req.content_length, HTTP_MAX_BODY);
  snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
           HTTP_MAX_BODY + 1);
  CHECK_INTEQ(parse_all(&p, buf, strlen(buf)), HTTP_PARSE_ERROR);
  CHECK_INTEQ(p.error_status, 413);
  /* 2^64 + 1 must not wrap around to a small number. */
  snprintf(buf, sizeof(buf),
           "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551617\r\n\r\n");
  CHECK_INTEQ(parse_all(&p, buf, strlen(buf)), HTTP_PARSE_ERROR);
  CHECK_INTEQ(p.error_status, 413);
}

TEST(expect_continue) {
  static const char in[] =
      "POST /reload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n";
  struct http_parser p;
  CHECK_INTEQ(parse_all(&p, in, sizeof(in) - 1), HTTP_PARSE_DONE);
  CHECK(p.req.expect_continue);
  CHECK_INTEQ(p.req.content_length, 10);
}

/* Every byte value at every position of a good request: never a crash, and whatever is
 * accepted still satisfies the invariants. */
TEST(single_byte_mutations) {
  static const char good[] = "POST /r?q HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n";
  size_t len = sizeof(good) - 1;
  char buf[sizeof(good)];
  for (size_t i = 0; i < len; i++) {
    for (int b = 0; b < 256; b++) {
      memcpy(buf, good, len);
      buf[i] = (char)b;
      struct http_parser whole, bytewise;
      enum http_parse_result r1 = parse_all(&whole, buf, len);
      enum http_parse_result r2 = parse_bytewise(&bytewise, buf, len);
      CHECK_INTEQ(r1, r2);
      if (r1 == HTTP_PARSE_DONE) {
        CHECK(whole.req.head_len <= len);
        CHECK(whole.req.method.len > 0);
        CHECK(whole.req.path.off + whole.req.path.len <= whole.req.head_len);
        CHECK_INTEQ(whole.req.head_len, bytewise.req.head_len);
      } else if (r1 == HTTP_PARSE_ERROR) {
        CHECK_INTEQ(whole.error_status, bytewise.error_status);
      }
    }
  }
}

TEST(query_param) {
  static const char q[] = "a=1&dry_run=1&flag&empty=&dry_run=2";
  struct http_span query = {0, sizeof(q) - 1};
  struct http_span v;
  CHECK(http_query_param(&v, q, query, "dry_run"));
  CHECK(http_span_equal(q, v, "1"));
  CHECK(http_query_param(&v, q, query, "a"));
  CHECK(http_span_equal(q, v, "1"));
  CHECK(http_query_param(&v, q, query, "flag"));
  CHECK_INTEQ(v.len, 0);
  CHECK(http_query_param(&v, q, query, "empty"));
  CHECK_INTEQ(v.len, 0);
  CHECK(!http_query_param(&v, q, query, "dry"));
  CHECK(!http_query_param(&v, q, query, "run"));
  struct http_span none = {0, 0};
  CHECK(!http_query_param(&v, q, none, "a"));
}

TEST(status_text) {
  CHECK_STREQ(http_status_text(200), "OK");
  CHECK_STREQ(http_status_text(404), "Not Found");
  CHECK_STREQ(http_status_text(431), "Request Header Fields Too Large");
  CHECK_STREQ(http_status_text(599), "Unknown");
}

TEST(span_compare) {
  static const char buf[] = "GETpost";
  struct http_span get = {0, 3};
  struct http_span post = {3, 4};
  CHECK(http_span_equal(buf, get, "GET"));
  CHECK(!http_span_equal(buf, get, "get"));
  CHECK(!http_span_equal(buf, get, "GE"));
  CHECK(http_span_equal_nocase(buf, post, "POST"));
  CHECK(!http_span_equal_nocase(buf, post, "POSTS"));
}

TEST_MAIN(TEST_ENTRY(good_requests), TEST_ENTRY(headers_are_reported), TEST_ENTRY(bad_requests),
          TEST_ENTRY(errors_are_found_early), TEST_ENTRY(nul_in_value_and_garbage),
          TEST_ENTRY(incomplete_stays_incomplete), TEST_ENTRY(pipelining),
          TEST_ENTRY(split_at_every_byte), TEST_ENTRY(result_is_sticky),
          TEST_ENTRY(head_size_limit), TEST_ENTRY(header_count_limit),
          TEST_ENTRY(content_length_limit), TEST_ENTRY(expect_continue),
          TEST_ENTRY(single_byte_mutations), TEST_ENTRY(query_param), TEST_ENTRY(status_text),
          TEST_ENTRY(span_compare))
