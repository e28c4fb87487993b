/* jsonread: a strict JSON reader with messages that name the file, the JSON path and the
 * problem (see mtlsd/jsonread.h). */
#include "mtlsd/base/jsonread.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsd/base/json_syntax.h"

enum {
  PROBLEM_MAX = 768,
  QUOTED_MAX = 160, /* A value quoted in a message is cut beyond this many bytes. */
  KEY_SUGGEST_MAX = 64,
};

/* --- allocation ------------------------------------------------------------------- */

/* Allocation failure is an error path like any other. The unit test sets
 * |jr_alloc_budget| to fail the Nth allocation (curl's "torture" tests); -1, the
 * only value outside tests, never fails. */
static long jr_alloc_budget = -1;

static bool jr_alloc_ok(void) {
  if (jr_alloc_budget == 0) {
    return false;
  }
  if (jr_alloc_budget > 0) {
    jr_alloc_budget--;
  }
  return true;
}

void *jr_calloc(size_t n, size_t size) {
  return jr_alloc_ok() ? calloc(n, size) : NULL;
}

char *jr_strdup(const char *s) {
  return jr_alloc_ok() ? strdup(s) : NULL;
}

void jr_free_strings(char **list, size_t count) {
  if (list == NULL) {
    return;
  }
  for (size_t i = 0; i < count; i++) {
    free(list[i]);
  }
  free(list);
}

/* --- messages ----------------------------------------------------------------------- */

bool jr_fail(struct jsonread *p, const char *fmt, ...) {
  char problem[PROBLEM_MAX];
  va_list ap;
  va_start(ap, fmt);
  (void)vsnprintf(problem, sizeof(problem), fmt, ap);
  va_end(ap);
  if (p->err != NULL && p->err_len > 0) {
    (void)snprintf(p->err, p->err_len, "%s: %s: %s", p->file,
                   p->path_len > 0 ? p->path : "top level", problem);
  }
  return false;
}

bool jr_fail_oom(struct jsonread *p) {
  return jr_fail(p, "out of memory");
}

/* quote writes |s| as a JSON-like quoted string for a message: quotes, backslashes and
 * control bytes are escaped so that a hostile value cannot forge a log line, and a long
 * value is cut with "...". */
static const char *quote(char *out, size_t out_len, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
  out[n++] = '"';
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (n + 8 >= out_len || n > QUOTED_MAX) {
      memcpy(out + n, "...", 3);
      n += 3;
      break;
    }
    if (*c == '"' || *c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)*c;
    } else if (*c < 0x20 || *c == 0x7f) {
      out[n++] = '\\';
      out[n++] = 'x';
      out[n++] = hex[*c >> 4];
      out[n++] = hex[*c & 0xf];
    } else {
      out[n++] = (char)*c;
    }
  }
  out[n++] = '"';
  out[n] = '\0';
  return out;
}

enum { QUOTE_BUF = QUOTED_MAX + 16 };

bool jr_fail_value(struct jsonread *p, const char *value, const char *fmt, ...) {
  char problem[PROBLEM_MAX];
  char quoted[QUOTE_BUF];
  va_list ap;
  va_start(ap, fmt);
  (void)vsnprintf(problem, sizeof(problem), fmt, ap);
  va_end(ap);
  return jr_fail(p, "%s: %s", quote(quoted, sizeof(quoted), value), problem);
}

static void path_append(struct jsonread *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void path_append(struct jsonread *p, const char *fmt, ...) {
  size_t room = sizeof(p->path) - p->path_len;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(p->path + p->path_len, room, fmt, ap);
  va_end(ap);
  if (n > 0) {
    p->path_len += (size_t)n < room ? (size_t)n : room - 1;
  }
}

static bool is_plain_key(const char *key) {
  size_t len = strlen(key);
  return len > 0 && len <= KEY_SUGGEST_MAX &&
         strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == len;
}

/* --- the path ----------------------------------------------------------------------- */

size_t jr_push_key(struct jsonread *p, const char *key) {
  size_t saved = p->path_len;
  if (is_plain_key(key)) {
    path_append(p, "%s%s", p->path_len > 0 ? "." : "", key);
  } else {
    char quoted[QUOTE_BUF];
    path_append(p, "[%s]", quote(quoted, sizeof(quoted), key));
  }
  return saved;
}

size_t jr_push_index(struct jsonread *p, size_t index) {
  size_t saved = p->path_len;
  path_append(p, "[%zu]", index);
  return saved;
}

void jr_pop(struct jsonread *p, size_t saved) {
  p->path_len = saved;
  p->path[saved] = '\0';
}

/* --- objects ------------------------------------------------------------------------ */

const char *jr_type_name(const cJSON *v) {
  if (cJSON_IsString(v)) {
    return "string";
  }
  if (cJSON_IsNumber(v)) {
    return "number";
  }
  if (cJSON_IsBool(v)) {
    return "boolean";
  }
  if (cJSON_IsNull(v)) {
    return "null";
  }
  if (cJSON_IsArray(v)) {
    return "array";
  }
  if (cJSON_IsObject(v)) {
    return "object";
  }
  return "invalid value";
}

/* edit_distance is the optimal string alignment distance (Levenshtein plus adjacent
 * transpositions), the usual measure of a typo. Both strings are short. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a);
  size_t lb = strlen(b);
  if (la > KEY_SUGGEST_MAX || lb > KEY_SUGGEST_MAX) {
    return SIZE_MAX;
  }
  size_t rows[3][KEY_SUGGEST_MAX + 1];
  size_t *prev2 = rows[0];
  size_t *prev = rows[1];
  size_t *cur = rows[2];
  for (size_t j = 0; j <= lb; j++) {
    prev[j] = j;
  }
  for (size_t i = 1; i <= la; i++) {
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      size_t best = prev[j] + 1;
      if (cur[j - 1] + 1 < best) {
        best = cur[j - 1] + 1;
      }
      if (prev[j - 1] + cost < best) {
        best = prev[j - 1] + cost;
      }
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          prev2[j - 2] + 1 < best) {
        best = prev2[j - 2] + 1;
      }
      cur[j] = best;
    }
    size_t *tmp = prev2;
    prev2 = prev;
    prev = cur;
    cur = tmp;
  }
  return prev[lb];
}

bool jr_key_in(const char *key, const char *const *keys) {
  for (size_t i = 0; keys[i] != NULL; i++) {
    if (strcmp(key, keys[i]) == 0) {
      return true;
    }
  }
  return false;
}

static bool fail_unknown_key(struct jsonread *p, const char *key, const char *const *known) {
  const char *best = NULL;
  size_t best_distance = SIZE_MAX;
  for (size_t i = 0; known[i] != NULL; i++) {
    size_t d = edit_distance(key, known[i]);
    if (d < best_distance) {
      best_distance = d;
      best = known[i];
    }
  }
  /* Two edits is a typo; more on a short key is a different word. */
  if (best != NULL && best_distance <= 2 && best_distance * 3 <= strlen(best)) {
    return jr_fail(p, "unknown key (did you mean \"%s\"?)", best);
  }
  for (const struct jr_hint *h = p->hints; h != NULL && h->keys != NULL; h++) {
    if (h->keys != known && jr_key_in(key, h->keys)) {
      return jr_fail(p, "unknown key (it belongs %s)", h->where);
    }
  }
  return jr_fail(p, "unknown key");
}

/* Since |known| is short, a long object fails within its first few keys, so the quadratic
 * duplicate search stays cheap. */
bool jr_check_keys(struct jsonread *p, const cJSON *obj, const char *const *known) {
  for (const cJSON *c = obj->child; c != NULL; c = c->next) {
    size_t saved = jr_push_key(p, c->string);
    for (const cJSON *d = obj->child; d != c; d = d->next) {
      if (strcmp(d->string, c->string) == 0) {
        return jr_fail(p, "duplicate key");
      }
    }
    if (!jr_key_in(c->string, known)) {
      return fail_unknown_key(p, c->string, known);
    }
    jr_pop(p, saved);
  }
  return true;
}

bool jr_expect_object(struct jsonread *p, const cJSON *v) {
  if (!cJSON_IsObject(v)) {
    return jr_fail(p, "expected an object, got %s", jr_type_name(v));
  }
  return true;
}

/* check_chars refuses control characters in |s|. */
static bool check_chars(struct jsonread *p, const char *s) {
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (*c < 0x20 || *c == 0x7f) {
      return jr_fail_value(p, s, "control characters are not allowed");
    }
  }
  return true;
}

/* check_text refuses what no string read here may hold: nothing at all, and control
 * characters, which would end up raw in log lines and file names. */
static bool check_text(struct jsonread *p, const char *s) {
  return *s != '\0' ? check_chars(p, s) : jr_fail(p, "must not be empty");
}

bool jr_expect_text(struct jsonread *p, const cJSON *v) {
  if (!cJSON_IsString(v)) {
    return jr_fail(p, "expected a string, got %s", jr_type_name(v));
  }
  return check_text(p, v->valuestring);
}

bool jr_replace_string(struct jsonread *p, char **out, const char *s) {
  char *copy = jr_strdup(s);
  if (copy == NULL) {
    return jr_fail_oom(p);
  }
  free(*out);
  *out = copy;
  return true;
}

bool jr_has_key(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key) != NULL;
}

bool jr_section(struct jsonread *p, const cJSON *obj, const char *key, jr_parse_fn parse,
                void *ctx) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!parse(p, v, ctx)) {
    return false;
  }
  jr_pop(p, saved);
  return true;
}

/* --- typed getters ------------------------------------------------------------------ */

bool jr_get_string(struct jsonread *p, const cJSON *obj, const char *key, char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!jr_expect_text(p, v) || !jr_replace_string(p, out, v->valuestring)) {
    return false;
  }
  jr_pop(p, saved);
  return true;
}

bool jr_get_string_or_empty(struct jsonread *p, const cJSON *obj, const char *key, char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  const char *s = v == NULL || cJSON_IsNull(v) ? "" : NULL;
  size_t saved = jr_push_key(p, key);
  if (s == NULL) {
    if (!cJSON_IsString(v)) {
      return jr_fail(p, "expected a string, got %s", jr_type_name(v));
    }
    if (!check_chars(p, v->valuestring)) {
      return false;
    }
    s = v->valuestring;
  }
  jr_pop(p, saved);
  return jr_replace_string(p, out, s);
}

bool jr_get_bool(struct jsonread *p, const cJSON *obj, const char *key, bool *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!cJSON_IsBool(v)) {
    return jr_fail(p, "expected a boolean, got %s", jr_type_name(v));
  }
  *out = cJSON_IsTrue(v);
  jr_pop(p, saved);
  return true;
}

/* format_number writes a JSON number for a message: integers as written, the rest in the
 * shortest usual form. */
static const char *format_number(char *out, size_t out_len, double d) {
  if (d == floor(d) && fabs(d) < 1e15) {
    (void)snprintf(out, out_len, "%.0f", d);
  } else {
    (void)snprintf(out, out_len, "%g", d);
  }
  return out;
}

bool jr_get_uint(struct jsonread *p, const cJSON *obj, const char *key, uint32_t min, uint32_t max,
                 uint32_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!cJSON_IsNumber(v)) {
    return jr_fail(p, "expected an integer, got %s", jr_type_name(v));
  }
  char num[64];
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d)) {
    return jr_fail(p, "%s: expected an integer", format_number(num, sizeof(num), d));
  }
  if (d < (double)min || d > (double)max) {
    return jr_fail(p, "%s: out of range (%" PRIu32 " to %" PRIu32 ")",
                   format_number(num, sizeof(num), d), min, max);
  }
  *out = (uint32_t)d;
  jr_pop(p, saved);
  return true;
}

bool jr_get_duration(struct jsonread *p, const cJSON *obj, const char *key, duration_ms min,
                     duration_ms *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!cJSON_IsString(v)) {
    return jr_fail(p, "expected a string with a unit such as \"5s\", got %s", jr_type_name(v));
  }
  if (!check_text(p, v->valuestring)) {
    return false;
  }
  duration_ms ms = 0;
  const char *problem = NULL;
  if (!duration_parse(&ms, &problem, v->valuestring)) {
    return jr_fail_value(p, v->valuestring, "%s", problem);
  }
  if (ms == 0) {
    return jr_fail_value(p, v->valuestring, "must be greater than 0");
  }
  if (ms < min) {
    char text[32];
    duration_format(text, sizeof(text), min);
    return jr_fail_value(p, v->valuestring, "must be at least %s", text);
  }
  /* No timeout of a sidecar needs more than a year. */
  if (ms > JSONREAD_DURATION_MAX) {
    return jr_fail_value(p, v->valuestring, "must be at most 8760h");
  }
  *out = ms;
  jr_pop(p, saved);
  return true;
}

bool jr_get_hostport(struct jsonread *p, const cJSON *obj, const char *key, bool need_ip,
                     struct hostport *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!jr_expect_text(p, v)) {
    return false;
  }
  const char *problem = NULL;
  if (!netaddr_parse_hostport(out, &problem, v->valuestring)) {
    return jr_fail_value(p, v->valuestring, "%s", problem);
  }
  if (need_ip && !out->host_is_ip) {
    return jr_fail_value(p, v->valuestring,
                         "host must be an IP address (a listening address is "
                         "bound, not resolved)");
  }
  jr_pop(p, saved);
  return true;
}

bool jr_get_string_list(struct jsonread *p, const cJSON *obj, const char *key,
                        jr_element_check check, bool unique, const char *empty_hint, char ***out,
                        size_t *out_count) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!cJSON_IsArray(v)) {
    return jr_fail(p, "expected an array of strings, got %s", jr_type_name(v));
  }
  size_t count = (size_t)cJSON_GetArraySize(v);
  if (count == 0) {
    return jr_fail(p, "must not be empty (%s)", empty_hint);
  }
  char **list = jr_calloc(count, sizeof(*list));
  if (list == NULL) {
    return jr_fail_oom(p);
  }
  size_t i = 0;
  for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
    size_t saved_elem = jr_push_index(p, i);
    if (!jr_expect_text(p, e) || !check(p, e->valuestring)) {
      goto err;
    }
    for (size_t j = 0; unique && j < i; j++) {
      if (strcmp(list[j], e->valuestring) == 0) {
        jr_fail_value(p, e->valuestring, "listed twice");
        goto err;
      }
    }
    list[i] = jr_strdup(e->valuestring);
    if (list[i] == NULL) {
      jr_fail_oom(p);
      goto err;
    }
    jr_pop(p, saved_elem);
  }
  jr_free_strings(*out, *out_count);
  *out = list;
  *out_count = count;
  jr_pop(p, saved);
  return true;

err:
  jr_free_strings(list, count);
  return false;
}

bool jr_get_choice(struct jsonread *p, const cJSON *obj, const char *key, const char *const *names,
                   const char *what, const char *expected, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!jr_expect_text(p, v)) {
    return false;
  }
  for (int i = 0; names[i] != NULL; i++) {
    if (strcmp(v->valuestring, names[i]) == 0) {
      *out = i;
      jr_pop(p, saved);
      return true;
    }
  }
  return jr_fail_value(p, v->valuestring, "%s (expected %s)", what, expected);
}

/* --- documents ----------------------------------------------------------------- */

/* fail_at reports a problem at byte |offset| of |text| as "line L, column C", counting
 * columns in characters (UTF-8 continuation bytes do not count). */
static bool fail_at(struct jsonread *p, const char *text, size_t offset, const char *problem) {
  unsigned long line = 1;
  unsigned long column = 1;
  for (size_t i = 0; i < offset; i++) {
    if (text[i] == '\n') {
      line++;
      column = 1;
    } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
      column++;
    }
  }
  if (p->err != NULL && p->err_len > 0) {
    (void)snprintf(p->err, p->err_len, "%s: line %lu, column %lu: %s", p->file, line, column,
                   problem);
  }
  return false;
}

static bool is_blank(const char *text, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n') {
      return false;
    }
  }
  return true;
}

/* check_raw_text refuses what cJSON would accept but silently mangle: a NUL byte (the
 * text would end there) and a "\u0000" escape (the string would be cut there, so
 * "a\u0000b" would read as "a"). */
static bool check_raw_text(struct jsonread *p, const char *text, size_t len) {
  bool in_string = false;
  for (size_t i = 0; i < len; i++) {
    char c = text[i];
    if (c == '\0') {
      return fail_at(p, text, i, "NUL byte in the file");
    }
    if (!in_string) {
      in_string = c == '"';
    } else if (c == '"') {
      in_string = false;
    } else if (c == '\\' && i + 1 < len) {
      if (len - i >= 6 && text[i + 1] == 'u' && memcmp(text + i + 2, "0000", 4) == 0) {
        return fail_at(p, text, i, "\"\\u0000\" is not allowed in strings");
      }
      i++; /* The escaped character cannot end the string. */
    }
  }
  return true;
}

cJSON *jr_parse_document(struct jsonread *p, const char *json, size_t json_len) {
  if (p->err != NULL && p->err_len > 0) {
    p->err[0] = '\0';
  }
  if (!check_raw_text(p, json, json_len)) {
    return NULL;
  }
  if (is_blank(json, json_len)) {
    jr_fail(p, "the file is empty (expected a JSON object)");
    return NULL;
  }
  /* cJSON wants the terminator inside the length to accept the end of the text. */
  char *text = jr_calloc(1, json_len + 1);
  if (text == NULL) {
    jr_fail_oom(p);
    return NULL;
  }
  memcpy(text, json, json_len);
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, json_len + 1, &end, true);
  if (root == NULL) {
    size_t offset = end != NULL && end >= text ? (size_t)(end - text) : 0;
    const char *what = NULL;
    char problem[128];
    if (!json_syntax_locate(text, json_len, 0, &offset, &what)) {
      what = "cannot parse it (or out of memory)";
    }
    (void)snprintf(problem, sizeof(problem), "JSON syntax error: %s", what);
    fail_at(p, text, offset < json_len ? offset : json_len, problem);
  }
  free(text);
  return root;
}
