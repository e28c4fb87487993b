/* json_syntax: where a JSON text stops being JSON (see mtlsd/json_syntax.h). */
#include "mtlsd/base/json_syntax.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* cJSON says only that parsing failed and roughly where (often one character past the
 * culprit). When it fails, this scanner walks the text again to find the exact place
 * and say what was expected. It accepts everything cJSON accepts (whitespace is any byte
 * up to ' ', numbers are whatever strtod reads, raw control bytes may sit in strings),
 * so it never blames a place before cJSON's real failure; when it finds nothing (a
 * failed allocation), cJSON's own position is used. */

enum { JSON_NESTING_MAX = CJSON_NESTING_LIMIT };

struct jscan {
  const char *s;
  size_t len;
  unsigned flags;
  size_t values; /* Counted for JSON_SYNTAX_BOUNDED. */
  size_t pos;
  size_t err_pos;
  const char *err;
  unsigned depth;
};

/* char_in is strchr for a character set, without strchr's match of the terminator. */
static bool char_in(char c, const char *set) {
  return c != '\0' && strchr(set, c) != NULL;
}

static bool js_fail(struct jscan *j, size_t pos, const char *err) {
  j->err_pos = pos;
  j->err = err;
  return false;
}

static void js_skip_space(struct jscan *j) {
  while (j->pos < j->len && (unsigned char)j->s[j->pos] <= ' ') {
    j->pos++;
  }
}

static int js_hex4(const struct jscan *j, size_t at) {
  if (j->len < 4 || at > j->len - 4) {
    return -1;
  }
  int v = 0;
  for (size_t i = at; i < at + 4; i++) {
    char c = j->s[i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0) {
      return -1;
    }
    v = v * 16 + d;
  }
  return v;
}

/* cJSON ends a string at a NUL, so a value that holds one would be read short. */
static const char kNulInString[] =
    "a NUL character (\\u0000) in a string: its value would be read only up to it";

static bool js_string(struct jscan *j) {
  size_t start = j->pos++;
  for (;;) {
    if (j->pos >= j->len) {
      return js_fail(j, start, "unterminated string");
    }
    char c = j->s[j->pos];
    if (c == '\0' && (j->flags & JSON_SYNTAX_NO_NUL) != 0) {
      return js_fail(j, j->pos, kNulInString);
    }
    if (c == '"') {
      j->pos++;
      return true;
    }
    if (c != '\\') {
      j->pos++;
      continue;
    }
    if (j->pos + 1 >= j->len) {
      return js_fail(j, start, "unterminated string");
    }
    char e = j->s[j->pos + 1];
    if (char_in(e, "bfnrt\"\\/")) {
      j->pos += 2;
      continue;
    }
    if (e != 'u') {
      return js_fail(j, j->pos, "invalid escape in string");
    }
    int cp = js_hex4(j, j->pos + 2);
    if (cp < 0) {
      return js_fail(j, j->pos, "invalid \\u escape (expected four hex digits)");
    }
    if (cp == 0 && (j->flags & JSON_SYNTAX_NO_NUL) != 0) {
      return js_fail(j, j->pos, kNulInString);
    }
    if (cp >= 0xdc00 && cp <= 0xdfff) {
      return js_fail(j, j->pos, "invalid \\u escape (unpaired UTF-16 surrogate)");
    }
    if (cp >= 0xd800 && cp <= 0xdbff) {
      int low = j->pos + 7 < j->len && j->s[j->pos + 6] == '\\' && j->s[j->pos + 7] == 'u'
                    ? js_hex4(j, j->pos + 8)
                    : -1;
      if (low < 0xdc00 || low > 0xdfff) {
        return js_fail(j, j->pos, "invalid \\u escape (unpaired UTF-16 surrogate)");
      }
      j->pos += 6;
    }
    j->pos += 6;
  }
}

static bool js_number(struct jscan *j) {
  char buf[64];
  size_t n = 0;
  while (n < sizeof(buf) - 1 && j->pos + n < j->len &&
         char_in(j->s[j->pos + n], "0123456789+-eE.")) {
    buf[n] = j->s[j->pos + n];
    n++;
  }
  buf[n] = '\0';
  char *end = NULL;
  (void)strtod(buf, &end);
  if (end == buf) {
    return js_fail(j, j->pos, "invalid number");
  }
  j->pos += (size_t)(end - buf);
  return true;
}

static bool js_value(struct jscan *j);

/* js_members scans the inside of an object (|close| '}') or an array (']'). */
static bool js_members(struct jscan *j, char close) {
  bool object = close == '}';
  if (j->depth >= JSON_NESTING_MAX) {
    return js_fail(j, j->pos, "nesting too deep");
  }
  j->depth++;
  j->pos++;
  js_skip_space(j);
  if (j->pos < j->len && j->s[j->pos] == close) {
    j->pos++;
    j->depth--;
    return true;
  }
  size_t comma = SIZE_MAX;
  for (;;) {
    js_skip_space(j);
    if (comma != SIZE_MAX && j->pos < j->len && j->s[j->pos] == close) {
      return js_fail(j, comma, "trailing comma");
    }
    if (object) {
      if (j->pos >= j->len) {
        return js_fail(j, j->pos, "unexpected end of file (expected a key)");
      }
      if (j->s[j->pos] != '"') {
        return js_fail(j, j->pos, "expected a key in double quotes");
      }
      if (!js_string(j)) {
        return false;
      }
      js_skip_space(j);
      if (j->pos >= j->len || j->s[j->pos] != ':') {
        return js_fail(j, j->pos, "expected ':' after the key");
      }
      j->pos++;
    }
    if (!js_value(j)) {
      return false;
    }
    js_skip_space(j);
    if (j->pos >= j->len) {
      return js_fail(j, j->pos,
                     object ? "unexpected end of file (expected ',' or '}')"
                            : "unexpected end of file (expected ',' or ']')");
    }
    if (j->s[j->pos] == close) {
      j->pos++;
      j->depth--;
      return true;
    }
    if (j->s[j->pos] != ',') {
      return js_fail(j, j->pos, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    comma = j->pos++;
  }
}

static bool js_value(struct jscan *j) {
  static const char *const kLiterals[] = {"null", "false", "true"};
  if ((j->flags & JSON_SYNTAX_BOUNDED) != 0 && ++j->values > JSON_SYNTAX_VALUES_MAX) {
    return js_fail(j, j->pos, "more JSON values than " JSON_SYNTAX_VALUES_MAX_TEXT);
  }
  js_skip_space(j);
  if (j->pos >= j->len) {
    return js_fail(j, j->pos, "unexpected end of file (expected a value)");
  }
  char c = j->s[j->pos];
  if (c == '{') {
    return js_members(j, '}');
  }
  if (c == '[') {
    return js_members(j, ']');
  }
  if (c == '"') {
    return js_string(j);
  }
  if (c == '-' || is_digit(c)) {
    return js_number(j);
  }
  for (size_t i = 0; i < ARRAY_LEN(kLiterals); i++) {
    size_t n = strlen(kLiterals[i]);
    if (j->len - j->pos >= n && memcmp(j->s + j->pos, kLiterals[i], n) == 0) {
      j->pos += n;
      return true;
    }
  }
  return js_fail(j, j->pos,
                 c == '\'' ? "expected a value (strings take double quotes)" : "expected a value");
}

bool json_syntax_locate(const char *text, size_t len, unsigned flags, size_t *offset,
                        const char **what) {
  struct jscan j = {.s = text, .len = len, .flags = flags};
  if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
    j.pos = 3; /* cJSON skips a UTF-8 byte order mark. */
  }
  if (js_value(&j)) {
    js_skip_space(&j);
    if (j.pos >= len) {
      return false;
    }
    js_fail(&j, j.pos, "unexpected text after the JSON value");
  }
  *offset = j.err_pos;
  *what = j.err;
  return true;
}
