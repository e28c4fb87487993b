/* exposition: checking and merging Prometheus text (see mtlsd/exposition.h).
 *
 * One pass over the application's text, family by family: a family is a run of lines
 * that its HELP, TYPE and samples keep together (a histogram's _bucket, _sum and _count,
 * a summary's _sum and _count), with the comments and blank lines among them. Each is
 * checked line by line, then kept or left out whole. The grammar is the one Prometheus'
 * and client_golang's parsers accept (blanks are spaces and tabs, a HELP text escapes only
 * backslash and newline, a label value also the double quote). */
#include "mtlsd/base/exposition.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsd/base/textbuf.h"

enum family_type { FT_UNTYPED, FT_COUNTER, FT_GAUGE, FT_HISTOGRAM, FT_SUMMARY };
enum line_kind { LINE_OTHER, LINE_HELP, LINE_TYPE, LINE_SAMPLE };

struct span {
  const char *p;
  size_t len;
};

struct line {
  enum line_kind kind;
  struct span name; /* The metric name of a HELP, TYPE or sample line. */
  enum family_type type;
  size_t next; /* Where the next line starts. */
};

/* A line being read: |s[at..end)|. */
struct cursor {
  const char *s;
  size_t at;
  size_t end;
};

/* The names mtlsd's own text holds: each family (with its type, for the series names a
 * histogram or summary derives from it) and each series name. */
struct names {
  struct span *name;
  enum family_type *type;
  size_t count;
  size_t cap;
};

/* What mtlsd keeps for itself whatever it exports today. */
static const char kOwnPrefix[] = "mtlsd_";

static bool span_is(struct span a, const char *p, size_t len) {
  return a.len == len && memcmp(a.p, p, len) == 0;
}

/* ---- Lines ---- */

static void skip_blanks(struct cursor *c) {
  while (c->at < c->end && (c->s[c->at] == ' ' || c->s[c->at] == '\t')) {
    c->at++;
  }
}

static bool at_blank_or_end(const struct cursor *c) {
  return c->at == c->end || c->s[c->at] == ' ' || c->s[c->at] == '\t';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for a metric; without ':' for a label. */
static bool read_name(struct cursor *c, bool colon, struct span *out) {
  size_t start = c->at;
  while (c->at < c->end) {
    char ch = c->s[c->at];
    bool ok = isalpha((unsigned char)ch) || ch == '_' || (colon && ch == ':') ||
              (c->at > start && isdigit((unsigned char)ch));
    if (!ok) {
      break;
    }
    c->at++;
  }
  *out = (struct span){c->s + start, c->at - start};
  return c->at > start;
}

/* A token up to the next blank: |*out| holds it. */
static struct span read_token(struct cursor *c) {
  size_t start = c->at;
  while (!at_blank_or_end(c)) {
    c->at++;
  }
  return (struct span){c->s + start, c->at - start};
}

/* A backslash escape in a HELP text or label value: \\, \n, and \" in a value. */
static bool read_escaped_to(struct cursor *c, char stop) {
  while (c->at < c->end && c->s[c->at] != stop) {
    if (c->s[c->at++] != '\\') {
      continue;
    }
    char e = c->at < c->end ? c->s[c->at++] : '\0';
    if (e != '\\' && e != 'n' && !(stop == '"' && e == '"')) {
      return false;
    }
  }
  return stop == '\0' || (c->at < c->end && c->s[c->at++] == stop);
}

/* {name="value",...} with an optional trailing comma, blanks allowed around tokens. */
static bool read_labels(struct cursor *c) {
  c->at++; /* The '{'. */
  for (;;) {
    skip_blanks(c);
    if (c->at < c->end && c->s[c->at] == '}') {
      c->at++;
      return true;
    }
    struct span label;
    if (!read_name(c, false, &label)) {
      return false;
    }
    skip_blanks(c);
    if (c->at >= c->end || c->s[c->at++] != '=') {
      return false;
    }
    skip_blanks(c);
    if (c->at >= c->end || c->s[c->at++] != '"' || !read_escaped_to(c, '"')) {
      return false;
    }
    skip_blanks(c);
    if (c->at < c->end && c->s[c->at] == ',') {
      c->at++;
    } else if (c->at >= c->end || c->s[c->at] != '}') {
      return false;
    }
  }
}

/* A sample value: a float as Go's ParseFloat reads it (NaN, +Inf, -Inf included). */
static bool is_value(struct span v) {
  char buf[64];
  if (v.len == 0 || v.len >= sizeof(buf)) {
    return false;
  }
  memcpy(buf, v.p, v.len);
  buf[v.len] = '\0';
  char *end;
  (void)strtod(buf, &end);
  return *end == '\0';
}

/* A timestamp: milliseconds since the epoch, an integer that may be negative. */
static bool is_timestamp(struct span t) {
  size_t i = t.len > 0 && t.p[0] == '-' ? 1 : 0;
  if (i == t.len || t.len - i > 19) {
    return false;
  }
  for (; i < t.len; i++) {
    if (!isdigit((unsigned char)t.p[i])) {
      return false;
    }
  }
  return true;
}

static bool parse_sample(struct cursor *c, struct line *out) {
  out->kind = LINE_SAMPLE;
  if (!read_name(c, true, &out->name)) {
    return false;
  }
  skip_blanks(c);
  if (c->at < c->end && c->s[c->at] == '{' && !read_labels(c)) {
    return false;
  }
  skip_blanks(c);
  if (!is_value(read_token(c))) {
    return false;
  }
  skip_blanks(c);
  if (c->at < c->end && !is_timestamp(read_token(c))) {
    return false;
  }
  skip_blanks(c);
  return c->at == c->end;
}

/* A comment: "# HELP name text", "# TYPE name type", or any other (kept, unchecked). */
static bool parse_comment(struct cursor *c, struct line *out) {
  c->at++; /* The '#'. */
  skip_blanks(c);
  struct span word = read_token(c);
  bool help = span_is(word, "HELP", 4);
  if (!(help || span_is(word, "TYPE", 4)) || c->at == c->end) {
    out->kind = LINE_OTHER;
    return true;
  }
  out->kind = help ? LINE_HELP : LINE_TYPE;
  skip_blanks(c);
  if (!read_name(c, true, &out->name) || !at_blank_or_end(c)) {
    return false;
  }
  skip_blanks(c);
  if (help) {
    return read_escaped_to(c, '\0');
  }
  static const char *const kTypes[] = {"untyped", "counter", "gauge", "histogram", "summary"};
  struct span type = read_token(c);
  skip_blanks(c);
  for (size_t i = 0; i < sizeof(kTypes) / sizeof(kTypes[0]); i++) {
    if (span_is(type, kTypes[i], strlen(kTypes[i]))) {
      out->type = (enum family_type)i;
      return c->at == c->end;
    }
  }
  return false;
}

/* Reads the line at |at| of |text| (|len| bytes) into |out|; false when it is not valid
 * text format. */
static bool parse_line(const char *text, size_t len, size_t at, struct line *out) {
  const char *nl = memchr(text + at, '\n', len - at);
  size_t end = nl != NULL ? (size_t)(nl - text) : len;
  *out = (struct line){.kind = LINE_OTHER, .next = nl != NULL ? end + 1 : len};
  struct cursor c = {text, at, end};
  skip_blanks(&c);
  if (c.at == c.end) {
    return true;
  }
  return c.s[c.at] == '#' ? parse_comment(&c, out) : parse_sample(&c, out);
}

/* ---- Families ---- */

/* Whether series |name| belongs to family |family| of type |type|. */
static bool in_family(struct span name, struct span family, enum family_type type) {
  if (span_is(name, family.p, family.len)) {
    return true;
  }
  if ((type != FT_HISTOGRAM && type != FT_SUMMARY) || name.len <= family.len ||
      memcmp(name.p, family.p, family.len) != 0) {
    return false;
  }
  struct span suffix = {name.p + family.len, name.len - family.len};
  return span_is(suffix, "_sum", 4) || span_is(suffix, "_count", 6) ||
         (type == FT_HISTOGRAM && span_is(suffix, "_bucket", 7));
}

static bool names_add(struct names *n, struct span name, enum family_type type) {
  if (n->count == n->cap) {
    size_t cap = n->cap > 0 ? n->cap * 2 : 64;
    struct span *names = realloc(n->name, cap * sizeof(*names));
    if (names != NULL) {
      n->name = names;
    }
    enum family_type *types = realloc(n->type, cap * sizeof(*types));
    if (types != NULL) {
      n->type = types;
    }
    if (names == NULL || types == NULL) {
      return false;
    }
    n->cap = cap;
  }
  n->name[n->count] = name;
  n->type[n->count++] = type;
  return true;
}

/* Whether series or family |name| is one of mtlsd's. */
static bool names_clash(const struct names *n, struct span name) {
  if (name.len >= sizeof(kOwnPrefix) - 1 &&
      memcmp(name.p, kOwnPrefix, sizeof(kOwnPrefix) - 1) == 0) {
    return true;
  }
  for (size_t i = 0; i < n->count; i++) {
    if (in_family(name, n->name[i], n->type[i])) {
      return true;
    }
  }
  return false;
}

/* Collects the family and series names of mtlsd's own (valid) text. */
static bool own_names(struct names *n, const char *own, size_t own_len) {
  for (size_t at = 0; at < own_len;) {
    struct line l;
    (void)parse_line(own, own_len, at, &l);
    bool family = l.kind == LINE_TYPE || l.kind == LINE_SAMPLE;
    if (family && !names_add(n, l.name, l.kind == LINE_TYPE ? l.type : FT_UNTYPED)) {
      return false;
    }
    at = l.next;
  }
  return true;
}

/* Says which line of |app| is invalid, and returns false. */
static bool bad_line(const char *app, size_t len, size_t at, struct exposition_filter *out) {
  const char *nl = memchr(app + at, '\n', len - at);
  int shown = (int)((nl != NULL ? (size_t)(nl - app) : len) - at);
  snprintf(out->why, sizeof(out->why), "not text format 0.0.4: \"%.*s\"", shown < 80 ? shown : 80,
           app + at);
  return false;
}

/* Reads the family whose first line (not a plain comment) is |first|: |*end| receives
 * where it ends, |*clash| whether mtlsd has its name or one of its series'. False with
 * the reason in |out->why| on an invalid line. */
static bool scan_family(const char *app, size_t len, const struct line *first,
                        const struct names *own, size_t *end, bool *clash,
                        struct exposition_filter *out) {
  struct span family = first->name;
  enum family_type type = first->kind == LINE_TYPE ? first->type : FT_UNTYPED;
  *clash = names_clash(own, family);
  struct line l = *first;
  size_t at;
  for (at = l.next; at < len; at = l.next) {
    if (!parse_line(app, len, at, &l)) {
      return bad_line(app, len, at, out);
    }
    if (l.kind == LINE_OTHER) {
      continue;
    }
    bool meta = l.kind == LINE_HELP || l.kind == LINE_TYPE;
    if (meta ? !span_is(l.name, family.p, family.len) : !in_family(l.name, family, type)) {
      break;
    }
    if (l.kind == LINE_TYPE) {
      type = l.type;
    }
    *clash = *clash || (l.kind == LINE_SAMPLE && names_clash(own, l.name));
  }
  *end = at;
  return true;
}

/* Valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF) and no
 * NUL: what a scraper's parser requires of every name, value and text. */
static bool is_utf8_text(const unsigned char *s, size_t len) {
  for (size_t i = 0; i < len;) {
    unsigned char c = s[i];
    if (c == 0) {
      return false;
    }
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n = c >= 0xc2 && c <= 0xdf   ? 1
               : c >= 0xe0 && c <= 0xef ? 2
               : c >= 0xf0 && c <= 0xf4 ? 3
                                        : 0;
    if (n == 0 || len - i <= n) {
      return false;
    }
    unsigned char c1 = s[i + 1];
    bool first_ok = (c == 0xe0 && c1 >= 0xa0) || (c == 0xed && c1 <= 0x9f) ||
                    (c == 0xf0 && c1 >= 0x90) || (c == 0xf4 && c1 <= 0x8f) ||
                    (c != 0xe0 && c != 0xed && c != 0xf0 && c != 0xf4);
    for (size_t k = 1; k <= n; k++) {
      if ((s[i + k] & 0xc0) != 0x80) {
        return false;
      }
    }
    if (!first_ok) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

static bool keep_families(struct textbuf *b, const char *app, size_t len, const struct names *own,
                          struct exposition_filter *out) {
  for (size_t at = 0; at < len;) {
    struct line l;
    if (!parse_line(app, len, at, &l)) {
      return bad_line(app, len, at, out);
    }
    size_t end = l.next;
    bool clash = false;
    if (l.kind != LINE_OTHER && !scan_family(app, len, &l, own, &end, &clash, out)) {
      return false;
    }
    if (!clash) {
      textbuf_append(b, app + at, end - at);
    } else if (out->dropped++ == 0) {
      snprintf(out->first_dropped, sizeof(out->first_dropped), "%.*s",
               (int)(l.name.len < 100 ? l.name.len : 100), l.name.p);
    }
    at = end;
  }
  return true;
}

bool exposition_filter(const char *own, size_t own_len, const char *app, size_t app_len,
                       struct exposition_filter *out) {
  *out = (struct exposition_filter){0};
  if (!is_utf8_text((const unsigned char *)app, app_len)) {
    snprintf(out->why, sizeof(out->why), "not text format 0.0.4: not UTF-8, or a NUL byte");
    return false;
  }
  struct names names = {0};
  struct textbuf b = {0};
  bool ok = own_names(&names, own, own_len);
  if (!ok) {
    snprintf(out->why, sizeof(out->why), "out of memory");
  } else {
    ok = keep_families(&b, app, app_len, &names, out);
  }
  if (ok && b.len > 0 && b.data[b.len - 1] != '\n') {
    textbuf_append(&b, "\n", 1);
  }
  free(names.name);
  free(names.type);
  out->len = b.len;
  out->text = textbuf_finish(&b);
  if (ok && out->text == NULL) {
    snprintf(out->why, sizeof(out->why), "out of memory");
    ok = false;
  }
  if (!ok) {
    free(out->text);
    out->text = NULL;
    out->len = 0;
  }
  return ok;
}
