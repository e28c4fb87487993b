/* yaml_write: cJSON documents written back as Kubernetes manifests, block YAML that every
 * reader takes for the same values, or JSON as kubectl writes it (see mtlsd/yaml.h). */
#include "mtlsd/kube/yaml.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mtlsd/base/textbuf.h"
#include "yaml_internal.h"

/* The shortest text that reads back as the finite |d|: an integer when it is one, else
 * the first of 15, 16 and 17 significant digits that strtod turns back into |d| (0.1,
 * not 0.10000000000000001). An exponent always has a '.' before it: PyYAML (YAML 1.1)
 * reads 1e-07 as a string, 1.0e-07 as the float. */
void yaml_format_number(double d, char *out, size_t len) {
  if (d == floor(d) && fabs(d) < 9007199254740992.0) {
    snprintf(out, len, "%.0f", d);
    return;
  }
  for (int digits = 15; digits <= 17; digits++) {
    snprintf(out, len, "%.*g", digits, d);
    if (strtod(out, NULL) == d) {
      break;
    }
  }
  char *e = strchr(out, 'e');
  if (e != NULL && memchr(out, '.', (size_t)(e - out)) == NULL) {
    char exponent[8];
    snprintf(exponent, sizeof(exponent), "%s", e);
    snprintf(e, len - (size_t)(e - out), ".0%s", exponent);
  }
}

/* ---- Writing YAML ---- */

/* The escape of the character at |c| when YAML must not have it raw: a control
 * character, a line break other than \n (NEL, U+2028, U+2029), a byte order mark, or
 * U+FFFE/U+FFFF (which libyaml refuses); NULL for any other. |*n| is its length in
 * bytes; |buf| holds an escape made up. */
static const char *special_char(const unsigned char *c, size_t *n, char buf[8]) {
  *n = 1;
  if (*c == '\n' || *c == '\t' || *c == '\r') {
    return *c == '\n' ? "\\n" : *c == '\t' ? "\\t" : "\\r";
  }
  if (*c < 0x20 || *c == 0x7f) {
    snprintf(buf, 8, "\\x%02x", *c);
    return buf;
  }
  if (c[0] == 0xc2 && c[1] >= 0x80 && c[1] <= 0x9f) {
    *n = 2;
    if (c[1] == 0x85) {
      return "\\N";
    }
    snprintf(buf, 8, "\\x%02x", c[1]);
    return buf;
  }
  if (c[0] == 0xe2 && c[1] == 0x80 && (c[2] == 0xa8 || c[2] == 0xa9)) {
    *n = 3;
    return c[2] == 0xa8 ? "\\L" : "\\P";
  }
  if (c[0] == 0xef && ((c[1] == 0xbb && c[2] == 0xbf) || (c[1] == 0xbf && c[2] >= 0xbe))) {
    *n = 3;
    return c[1] == 0xbb ? "\\uFEFF" : c[2] == 0xbe ? "\\uFFFE" : "\\uFFFF";
  }
  return NULL;
}

/* Whether some YAML 1.1 or 1.2 reader could take the plain scalar |s| for anything but
 * a string. Deliberately broad, since a quoted string is the same string: the YAML 1.1
 * booleans and nulls in any case, the merge and value keys, the infinities and NaN, the
 * empty string, and whatever starts with a digit (after an optional sign, or a '.') and
 * has only characters that some reader's number takes (digits, hex digits, the 0x, 0o,
 * 0b prefixes, '_' that go-yaml strips, '.', ':' of base 60, signs and exponents: 0o17,
 * 0x_1F, 1_000.5, 1:20, 1e3) or starts as a date does (2024-01-01). 100m and 128Mi stay
 * plain, as kubectl writes them: no reader has a number with an m or an i. */
static bool maybe_typed(const char *s) {
  static const char *const kWords[] = {"y",     "n",    "yes", "no", "on", "off", "true",
                                       "false", "null", "~",   "<<", "=",  NULL};
  size_t len = strlen(s); /* No word is longer than "false". */
  for (size_t i = 0; len <= 5 && kWords[i] != NULL; i++) {
    if (strcasecmp(s, kWords[i]) == 0) {
      return true;
    }
  }
  const char *p = s + (*s == '-' || *s == '+');
  if ((p[0] >= '0' && p[0] <= '9') || (p[0] == '.' && p[1] >= '0' && p[1] <= '9')) {
    bool date = strspn(p, "0123456789") == 4 && p[4] == '-';
    return date || p[strspn(p, "0123456789abcdefABCDEFxXoObBpP_.:+-")] == '\0';
  }
  return s[0] == '\0' ||
         (p[0] == '.' && (strcasecmp(p + 1, "inf") == 0 || strcasecmp(p + 1, "nan") == 0));
}

/* Whether |s| can be written without quotes and read back as the same string: not
 * empty, no surrounding space, no leading indicator (but a '-' that starts no list
 * item: --port), nothing a reader would take for a comment, a key or another type, and
 * printable ASCII only (YAML reads some other characters, NEL, U+2028, U+2029, as line
 * breaks). Anything else is quoted. */
static bool plain_safe(const char *s) {
  size_t len = strlen(s);
  if (len == 0 || s[0] == ' ' || s[len - 1] == ' ' || s[len - 1] == ':' ||
      strchr("?:,[]{}#&*!|>'\"%@`", s[0]) != NULL ||
      (s[0] == '-' && (s[1] == '\0' || s[1] == ' ')) || strstr(s, ": ") != NULL ||
      strstr(s, " #") != NULL || strncmp(s, "---", 3) == 0 || strncmp(s, "...", 3) == 0 ||
      maybe_typed(s)) {
    return false;
  }
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (*c < 0x20 || *c >= 0x7f) {
      return false;
    }
  }
  return true;
}

/* Whether the string |s| of several lines can be a literal block scalar that reads back
 * the same: no character that needs an escape but \n and \t, no space or tab at the end
 * of a line (a reader keeps them, an editor does not), and a first line that does not
 * start with one (it would be taken for indentation: that would need an indentation
 * indicator, which some readers get wrong). */
static bool block_safe(const char *s) {
  if (strchr(s, '\n') == NULL) {
    return false;
  }
  bool content = false; /* A line with a character has been seen. */
  char buf[8];
  size_t n;
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c += n) {
    n = 1;
    if (*c == '\n') {
      if (c > (const unsigned char *)s && (c[-1] == ' ' || c[-1] == '\t')) {
        return false;
      }
      continue;
    }
    if (!content && (*c == ' ' || *c == '\t')) {
      return false;
    }
    content = true;
    if (*c != '\t' && special_char(c, &n, buf) != NULL) {
      return false;
    }
  }
  size_t len = strlen(s);
  return content && s[len - 1] != ' ' && s[len - 1] != '\t';
}

static void indent(struct textbuf *b, int n) {
  static const char kSpaces[] = "                                ";
  for (; n > 0; n -= (int)sizeof(kSpaces) - 1) {
    textbuf_append(b, kSpaces, n < (int)sizeof(kSpaces) - 1 ? (size_t)n : sizeof(kSpaces) - 1);
  }
}

/* Writes |s| as a literal block scalar whose lines are indented by |level|, with the
 * chomping indicator that keeps its final line breaks: |- for none, | for one, |+ for
 * more. */
static void emit_block(struct textbuf *b, const char *s, int level) {
  size_t len = strlen(s);
  size_t breaks = 0;
  while (breaks < len && s[len - 1 - breaks] == '\n') {
    breaks++;
  }
  textbuf_str(b, breaks == 0 ? "|-\n" : breaks == 1 ? "|\n" : "|+\n");
  const char *end = s + len - (breaks > 0);
  for (const char *line = s; line <= end && *line != '\0';) {
    const char *eol = strchr(line, '\n');
    if (eol == NULL) {
      eol = s + len;
    }
    if (eol > line) {
      indent(b, level);
      textbuf_append(b, line, (size_t)(eol - line));
    }
    textbuf_str(b, "\n");
    line = eol + 1;
  }
}

static void emit_quoted(struct textbuf *b, const char *s) {
  textbuf_str(b, "\"");
  const char *run = s;
  char buf[8];
  size_t n;
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c += n) {
    const char *escape;
    if (*c == '"' || *c == '\\') {
      escape = *c == '"' ? "\\\"" : "\\\\";
      n = 1;
    } else {
      escape = special_char(c, &n, buf);
    }
    if (escape != NULL) {
      textbuf_append(b, run, (size_t)((const char *)c - run));
      textbuf_str(b, escape);
      run = (const char *)c + n;
    }
  }
  textbuf_str(b, run);
  textbuf_str(b, "\"");
}

static void emit_string(struct textbuf *b, const char *s) {
  if (plain_safe(s)) {
    textbuf_str(b, s);
  } else {
    emit_quoted(b, s);
  }
}

/* Writes the scalar (or empty container) |v| and the end of its line; a string of
 * several lines becomes a block whose lines are indented by |level| + 2. */
static void emit_value_line(struct textbuf *b, const cJSON *v, int level) {
  char number[40];
  if (cJSON_IsString(v) && !plain_safe(v->valuestring) && block_safe(v->valuestring)) {
    emit_block(b, v->valuestring, level + 2);
    return;
  }
  if (cJSON_IsString(v)) {
    emit_string(b, v->valuestring);
  } else if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
    yaml_format_number(v->valuedouble, number, sizeof(number));
    textbuf_str(b, number);
  } else if (cJSON_IsNumber(v)) {
    textbuf_str(b, isnan(v->valuedouble) ? ".nan" : v->valuedouble > 0 ? ".inf" : "-.inf");
  } else if (cJSON_IsBool(v)) {
    textbuf_str(b, cJSON_IsTrue(v) ? "true" : "false");
  } else if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
    textbuf_str(b, cJSON_IsObject(v) ? "{}" : "[]");
  } else {
    textbuf_str(b, "null");
  }
  textbuf_str(b, "\n");
}

static bool is_container(const cJSON *v) {
  return (cJSON_IsObject(v) || cJSON_IsArray(v)) && v->child != NULL;
}

static void emit_node(struct textbuf *b, const cJSON *v, int level, bool inline_first);

/* Writes the members of a mapping at |level|; the first goes on the current line when
 * |inline_first| (after a list's "- "). */
static void emit_mapping(struct textbuf *b, const cJSON *obj, int level, bool inline_first) {
  bool first = true;
  const cJSON *m;
  cJSON_ArrayForEach(m, obj) {
    if (!(first && inline_first)) {
      indent(b, level);
    }
    first = false;
    emit_string(b, m->string);
    if (is_container(m)) {
      textbuf_str(b, ":\n");
      emit_node(b, m, cJSON_IsArray(m) ? level : level + 2, false);
    } else {
      textbuf_str(b, ": ");
      emit_value_line(b, m, level);
    }
  }
}

static void emit_node(struct textbuf *b, const cJSON *v, int level, bool inline_first) {
  if (cJSON_IsObject(v) && v->child != NULL) {
    emit_mapping(b, v, level, inline_first);
    return;
  }
  if (!cJSON_IsArray(v) || v->child == NULL) {
    indent(b, level);
    emit_value_line(b, v, level);
    return;
  }
  const cJSON *item;
  cJSON_ArrayForEach(item, v) {
    indent(b, level);
    textbuf_str(b, "- ");
    if (cJSON_IsObject(item) && item->child != NULL) {
      emit_mapping(b, item, level + 2, true);
    } else if (is_container(item)) {
      textbuf_str(b, "\n");
      emit_node(b, item, level + 2, false);
    } else {
      emit_value_line(b, item, level);
    }
  }
}

void yaml_write(struct textbuf *b, const cJSON *doc) {
  emit_node(b, doc, 0, false);
}

char *yaml_emit(const cJSON *doc) {
  struct textbuf b = {0};
  yaml_write(&b, doc);
  return textbuf_finish(&b);
}

/* ---- Writing JSON ---- */

static void json_string(struct textbuf *b, const char *s) {
  textbuf_str(b, "\"");
  const char *run = s;
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (*c >= 0x20 && *c != '"' && *c != '\\') {
      continue;
    }
    textbuf_append(b, run, (size_t)((const char *)c - run));
    switch (*c) {
      case '"':
      case '\\':
        textbuf_printf(b, "\\%c", *c);
        break;
      case '\n':
        textbuf_str(b, "\\n");
        break;
      case '\t':
        textbuf_str(b, "\\t");
        break;
      case '\r':
        textbuf_str(b, "\\r");
        break;
      default:
        textbuf_printf(b, "\\u%04x", *c);
    }
    run = (const char *)c + 1;
  }
  textbuf_str(b, run);
  textbuf_str(b, "\"");
}

static void json_node(struct textbuf *b, const cJSON *v, int level) {
  char number[40];
  if (is_container(v)) {
    bool object = cJSON_IsObject(v);
    textbuf_str(b, object ? "{\n" : "[\n");
    for (const cJSON *c = v->child; c != NULL; c = c->next) {
      indent(b, level + 4);
      if (object) {
        json_string(b, c->string);
        textbuf_str(b, ": ");
      }
      json_node(b, c, level + 4);
      textbuf_str(b, c->next != NULL ? ",\n" : "\n");
    }
    indent(b, level);
    textbuf_str(b, object ? "}" : "]");
  } else if (cJSON_IsString(v)) {
    json_string(b, v->valuestring);
  } else if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
    yaml_format_number(v->valuedouble, number, sizeof(number));
    textbuf_str(b, number);
  } else if (cJSON_IsBool(v)) {
    textbuf_str(b, cJSON_IsTrue(v) ? "true" : "false");
  } else if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
    textbuf_str(b, cJSON_IsObject(v) ? "{}" : "[]");
  } else {
    textbuf_str(b, "null"); /* JSON has no infinity or NaN either. */
  }
}

void yaml_write_json(struct textbuf *b, const cJSON *doc, int level) {
  json_node(b, doc, level);
}
