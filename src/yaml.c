/* yaml: Kubernetes YAML to cJSON and back (see mtlsd/yaml.h). */
#include "mtlsd/yaml.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "mtlsd/textbuf.h"

/* Nesting bound: a manifest is a few levels deep; a hostile one must not exhaust the
 * stack. */
enum { DEPTH_MAX = 64, ANCHORS_MAX = 256 };

/* ---- Resolving plain scalars (go-yaml v2's YAML 1.1 rules) ---- */

static bool in_list(const char *s, const char *const *list) {
  for (size_t i = 0; list[i] != NULL; i++) {
    if (strcmp(s, list[i]) == 0) {
      return true;
    }
  }
  return false;
}

static const char *const kNulls[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const kTrue[] = {"y",  "Y",  "yes",  "Yes",  "YES",  "on",
                                    "On", "ON", "true", "True", "TRUE", NULL};
static const char *const kFalse[] = {"n",   "N",   "no",    "No",    "NO",    "off",
                                     "Off", "OFF", "false", "False", "FALSE", NULL};

/* Reads an integer in |s| (sign, then decimal, 0octal, 0x hex or 0b binary, underscores
 * allowed between digits) into |*out|. */
static bool parse_int(const char *s, double *out) {
  const char *p = s;
  bool negative = *p == '-';
  p += *p == '-' || *p == '+';
  int base = 10;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    base = 16;
    p += 2;
  } else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B')) {
    base = 2;
    p += 2;
  } else if (p[0] == '0' && p[1] != '\0') {
    base = 8;
    p++;
  }
  if (*p == '\0' || *p == '_') {
    return false;
  }
  double v = 0;
  for (; *p != '\0'; p++) {
    if (*p == '_') {
      continue;
    }
    int d = *p >= '0' && *p <= '9'   ? *p - '0'
            : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
            : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10
                                     : 99;
    if (d >= base) {
      return false;
    }
    v = v * base + d;
  }
  *out = negative ? -v : v;
  return true;
}

/* ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$, go-yaml v2's float. */
static bool parse_float(const char *s, double *out) {
  const char *p = s + (*s == '-' || *s == '+');
  size_t digits = strspn(p, "0123456789");
  if (digits == 0 && !(p[0] == '.' && p[1] >= '0' && p[1] <= '9')) {
    return false;
  }
  p += digits;
  if (*p == '.') {
    p++;
    p += strspn(p, "0123456789");
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    p += *p == '-' || *p == '+';
    size_t exp = strspn(p, "0123456789");
    if (exp == 0) {
      return false;
    }
    p += exp;
  }
  if (*p != '\0') {
    return false;
  }
  *out = strtod(s, NULL);
  return isfinite(*out);
}

bool yaml_plain_is_string(const char *s) {
  double ignored;
  static const char *const kSpecial[] = {".inf",  ".Inf",  ".INF",  "-.inf", "-.Inf",
                                         "-.INF", "+.inf", "+.Inf", "+.INF", ".nan",
                                         ".NaN",  ".NAN",  NULL};
  return !in_list(s, kNulls) && !in_list(s, kTrue) && !in_list(s, kFalse) &&
         !in_list(s, kSpecial) && !parse_int(s, &ignored) && !parse_float(s, &ignored);
}

static cJSON *resolve_plain(const char *s) {
  double v;
  if (in_list(s, kNulls)) {
    return cJSON_CreateNull();
  }
  if (in_list(s, kTrue) || in_list(s, kFalse)) {
    return cJSON_CreateBool(in_list(s, kTrue));
  }
  if (parse_int(s, &v) || parse_float(s, &v)) {
    return cJSON_CreateNumber(v);
  }
  return cJSON_CreateString(s);
}

/* ---- Parsing ---- */

struct anchor {
  char *name;
  cJSON *node; /* A copy of its own: the anchored node may be a key or a merge source,
                * gone by the time an alias names it. */
};

struct reader {
  yaml_parser_t parser;
  char *err;
  size_t err_len;
  bool failed;
  struct anchor anchors[ANCHORS_MAX];
  size_t anchor_count;
};

static void fail_at(struct reader *r, const yaml_mark_t *mark, const char *what) {
  if (!r->failed) {
    snprintf(r->err, r->err_len, "line %zu, column %zu: %s", mark->line + 1, mark->column + 1,
             what);
    r->failed = true;
  }
}

static bool next_event(struct reader *r, yaml_event_t *ev) {
  if (!yaml_parser_parse(&r->parser, ev)) {
    char what[200];
    snprintf(what, sizeof(what), "%s%s%s", r->parser.problem ? r->parser.problem : "bad YAML",
             r->parser.context ? " " : "", r->parser.context ? r->parser.context : "");
    fail_at(r, &r->parser.problem_mark, what);
    return false;
  }
  return true;
}

static void remember(struct reader *r, const yaml_char_t *anchor, const cJSON *node,
                     const yaml_mark_t *mark) {
  if (anchor == NULL || node == NULL) {
    return;
  }
  if (r->anchor_count >= ANCHORS_MAX) {
    fail_at(r, mark, "too many anchors");
    return;
  }
  r->anchors[r->anchor_count].name = strdup((const char *)anchor);
  r->anchors[r->anchor_count].node = cJSON_Duplicate(node, true);
  if (r->anchors[r->anchor_count].name == NULL || r->anchors[r->anchor_count].node == NULL) {
    free(r->anchors[r->anchor_count].name);
    cJSON_Delete(r->anchors[r->anchor_count].node);
    fail_at(r, mark, "out of memory");
    return;
  }
  r->anchor_count++;
}

static void forget_anchors(struct reader *r) {
  for (size_t i = 0; i < r->anchor_count; i++) {
    free(r->anchors[i].name);
    cJSON_Delete(r->anchors[i].node);
  }
  r->anchor_count = 0;
}

static const cJSON *find_anchor(const struct reader *r, const char *name) {
  /* The latest definition wins, as an anchor may be redefined. */
  for (size_t i = r->anchor_count; i > 0; i--) {
    if (strcmp(r->anchors[i - 1].name, name) == 0) {
      return r->anchors[i - 1].node;
    }
  }
  return NULL;
}

static cJSON *parse_node(struct reader *r, yaml_event_t *ev, int depth);

static cJSON *parse_scalar(struct reader *r, const yaml_event_t *ev) {
  const char *value = (const char *)ev->data.scalar.value;
  const char *tag = (const char *)ev->data.scalar.tag;
  if (strlen(value) != ev->data.scalar.length) {
    fail_at(r, &ev->start_mark, "a NUL byte in a scalar");
    return NULL;
  }
  bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ||
               ev->data.scalar.style == YAML_ANY_SCALAR_STYLE;
  if (tag != NULL && strcmp(tag, YAML_STR_TAG) == 0) {
    return cJSON_CreateString(value);
  }
  return plain && (tag == NULL || strcmp(tag, "!") != 0) ? resolve_plain(value)
                                                         : cJSON_CreateString(value);
}

/* Merges the members of |from| (a mapping, or a list of them: YAML's "<<") into |into|
 * where |into| does not have them yet. */
static bool merge_into(struct reader *r, cJSON *into, const cJSON *from, const yaml_mark_t *mark) {
  if (cJSON_IsArray(from)) {
    const cJSON *item;
    cJSON_ArrayForEach(item, from) {
      if (!merge_into(r, into, item, mark)) {
        return false;
      }
    }
    return true;
  }
  if (!cJSON_IsObject(from)) {
    fail_at(r, mark, "\"<<\" must merge a mapping");
    return false;
  }
  const cJSON *m;
  cJSON_ArrayForEach(m, from) {
    if (cJSON_GetObjectItemCaseSensitive(into, m->string) == NULL) {
      cJSON_AddItemToObject(into, m->string, cJSON_Duplicate(m, true));
    }
  }
  return true;
}

/* A mapping's "<<" members are merged in at its end, so that its own keys win whatever
 * their place. */
static cJSON *parse_mapping(struct reader *r, int depth) {
  cJSON *obj = cJSON_CreateObject();
  cJSON *merges = cJSON_CreateObject();
  yaml_event_t key;
  while (obj != NULL && merges != NULL && next_event(r, &key)) {
    if (key.type == YAML_MAPPING_END_EVENT) {
      yaml_mark_t end = key.start_mark;
      yaml_event_delete(&key);
      merge_into(r, obj, merges, &end);
      cJSON_Delete(merges);
      return obj;
    }
    cJSON *k = parse_node(r, &key, depth + 1);
    yaml_mark_t mark = key.start_mark;
    yaml_event_delete(&key);
    if (k == NULL) {
      break;
    }
    bool merge = cJSON_IsString(k) && strcmp(k->valuestring, "<<") == 0;
    if (!cJSON_IsString(k) && !cJSON_IsNumber(k) && !cJSON_IsBool(k)) {
      fail_at(r, &mark, "a key must be a scalar");
      cJSON_Delete(k);
      break;
    }
    char name[64];
    const char *key_text = k->valuestring;
    if (!cJSON_IsString(k)) {
      /* JSON keys are strings: 8080: x becomes "8080". */
      if (cJSON_IsBool(k)) {
        key_text = cJSON_IsTrue(k) ? "true" : "false";
      } else {
        snprintf(name, sizeof(name), "%.17g", k->valuedouble);
        key_text = name;
      }
    }
    yaml_event_t value;
    if (!next_event(r, &value)) {
      cJSON_Delete(k);
      break;
    }
    cJSON *v = parse_node(r, &value, depth + 1);
    yaml_event_delete(&value);
    if (v == NULL) {
      cJSON_Delete(k);
      break;
    }
    if (merge) {
      bool ok = merge_into(r, merges, v, &mark);
      cJSON_Delete(v);
      cJSON_Delete(k);
      if (!ok) {
        break;
      }
      continue;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, key_text) != NULL) {
      char what[120];
      snprintf(what, sizeof(what), "duplicate key \"%.60s\"", key_text);
      fail_at(r, &mark, what);
      cJSON_Delete(v);
      cJSON_Delete(k);
      break;
    }
    cJSON_AddItemToObject(obj, key_text, v);
    cJSON_Delete(k);
  }
  cJSON_Delete(merges);
  cJSON_Delete(obj);
  return NULL;
}

static cJSON *parse_sequence(struct reader *r, int depth) {
  cJSON *arr = cJSON_CreateArray();
  yaml_event_t ev;
  while (arr != NULL && next_event(r, &ev)) {
    if (ev.type == YAML_SEQUENCE_END_EVENT) {
      yaml_event_delete(&ev);
      return arr;
    }
    cJSON *item = parse_node(r, &ev, depth + 1);
    yaml_event_delete(&ev);
    if (item == NULL) {
      break;
    }
    cJSON_AddItemToArray(arr, item);
  }
  cJSON_Delete(arr);
  return NULL;
}

/* Builds the node that starts with |ev| (which the caller deletes). */
static cJSON *parse_node(struct reader *r, yaml_event_t *ev, int depth) {
  if (depth > DEPTH_MAX) {
    fail_at(r, &ev->start_mark, "nested too deep");
    return NULL;
  }
  cJSON *node = NULL;
  switch (ev->type) {
    case YAML_SCALAR_EVENT:
      node = parse_scalar(r, ev);
      remember(r, ev->data.scalar.anchor, node, &ev->start_mark);
      return node;
    case YAML_SEQUENCE_START_EVENT:
      node = parse_sequence(r, depth);
      remember(r, ev->data.sequence_start.anchor, node, &ev->start_mark);
      return node;
    case YAML_MAPPING_START_EVENT:
      node = parse_mapping(r, depth);
      remember(r, ev->data.mapping_start.anchor, node, &ev->start_mark);
      return node;
    case YAML_ALIAS_EVENT: {
      const cJSON *target = find_anchor(r, (const char *)ev->data.alias.anchor);
      if (target == NULL) {
        fail_at(r, &ev->start_mark, "an alias to an unknown anchor");
        return NULL;
      }
      return cJSON_Duplicate(target, true);
    }
    default:
      fail_at(r, &ev->start_mark, "unexpected YAML event");
      return NULL;
  }
}

cJSON *yaml_parse(const char *text, size_t len, char *err, size_t err_len) {
  struct reader r = {.err = err, .err_len = err_len};
  if (err_len > 0) {
    err[0] = '\0';
  }
  cJSON *docs = cJSON_CreateArray();
  if (docs == NULL || !yaml_parser_initialize(&r.parser)) {
    cJSON_Delete(docs);
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  yaml_parser_set_input_string(&r.parser, (const unsigned char *)text, len);
  yaml_event_t ev;
  bool done = false;
  while (!done && next_event(&r, &ev)) {
    switch (ev.type) {
      case YAML_STREAM_END_EVENT:
        done = true;
        break;
      case YAML_DOCUMENT_START_EVENT: {
        yaml_event_t root;
        if (!next_event(&r, &root)) {
          break;
        }
        cJSON *doc = root.type == YAML_DOCUMENT_END_EVENT ? NULL : parse_node(&r, &root, 0);
        bool empty = root.type == YAML_DOCUMENT_END_EVENT;
        yaml_event_delete(&root);
        if (!empty) {
          yaml_event_t end;
          if (doc != NULL && next_event(&r, &end)) {
            yaml_event_delete(&end);
          }
          /* An empty document (a lone "---", or one that is only "~") is left out. */
          if (doc != NULL && !cJSON_IsNull(doc)) {
            cJSON_AddItemToArray(docs, doc);
          } else {
            cJSON_Delete(doc);
          }
        }
        /* Anchors do not cross documents. */
        forget_anchors(&r);
        break;
      }
      default:
        break;
    }
    yaml_event_delete(&ev);
    if (r.failed) {
      break;
    }
  }
  forget_anchors(&r);
  yaml_parser_delete(&r.parser);
  if (r.failed) {
    cJSON_Delete(docs);
    return NULL;
  }
  return docs;
}

/* ---- Emitting ---- */

/* Whether |s| can be written without quotes and read back as the same string: not
 * empty, no surrounding space, no leading indicator, nothing a reader would take for a
 * comment, a key or another type, and no control character. Anything else is quoted. */
static bool plain_safe(const char *s) {
  size_t len = strlen(s);
  if (len == 0 || s[0] == ' ' || s[len - 1] == ' ' || s[len - 1] == ':' ||
      strchr("-?:,[]{}#&*!|>'\"%@`", s[0]) != NULL || strstr(s, ": ") != NULL ||
      strstr(s, " #") != NULL || strncmp(s, "---", 3) == 0 || strncmp(s, "...", 3) == 0 ||
      !yaml_plain_is_string(s)) {
    return false;
  }
  /* Printable ASCII only: YAML reads some other characters (NEL, U+2028, U+2029) as
   * line breaks. */
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (*c < 0x20 || *c >= 0x7f) {
      return false;
    }
  }
  return true;
}

static void emit_string(struct textbuf *b, const char *s) {
  if (plain_safe(s)) {
    textbuf_str(b, s);
    return;
  }
  textbuf_str(b, "\"");
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    switch (*c) {
      case '"':
        textbuf_str(b, "\\\"");
        break;
      case '\\':
        textbuf_str(b, "\\\\");
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
        if (*c < 0x20 || *c == 0x7f) {
          textbuf_printf(b, "\\x%02x", *c);
        } else if (c[0] == 0xc2 && c[1] == 0x85) {
          textbuf_str(b, "\\N"); /* NEL, a line break to YAML even inside quotes. */
          c++;
        } else if (c[0] == 0xe2 && c[1] == 0x80 && (c[2] == 0xa8 || c[2] == 0xa9)) {
          textbuf_str(b, c[2] == 0xa8 ? "\\L" : "\\P");
          c += 2;
        } else if (c[0] == 0xef && c[1] == 0xbb && c[2] == 0xbf) {
          textbuf_str(b, "\\uFEFF");
          c += 2;
        } else {
          textbuf_append(b, (const char *)c, 1);
        }
    }
  }
  textbuf_str(b, "\"");
}

static void emit_scalar(struct textbuf *b, const cJSON *v) {
  if (cJSON_IsString(v)) {
    emit_string(b, v->valuestring);
  } else if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (d == floor(d) && fabs(d) < 9007199254740992.0) {
      textbuf_printf(b, "%.0f", d);
    } else {
      textbuf_printf(b, "%.17g", d);
    }
  } else if (cJSON_IsBool(v)) {
    textbuf_str(b, cJSON_IsTrue(v) ? "true" : "false");
  } else {
    textbuf_str(b, "null");
  }
}

static bool is_container(const cJSON *v) {
  return (cJSON_IsObject(v) || cJSON_IsArray(v)) && v->child != NULL;
}

static void indent(struct textbuf *b, int n) {
  for (int i = 0; i < n; i++) {
    textbuf_str(b, " ");
  }
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
    textbuf_str(b, ":");
    if (is_container(m)) {
      textbuf_str(b, "\n");
      emit_node(b, m, cJSON_IsArray(m) ? level : level + 2, false);
    } else {
      textbuf_str(b, " ");
      if (cJSON_IsObject(m)) {
        textbuf_str(b, "{}");
      } else if (cJSON_IsArray(m)) {
        textbuf_str(b, "[]");
      } else {
        emit_scalar(b, m);
      }
      textbuf_str(b, "\n");
    }
  }
}

static void emit_node(struct textbuf *b, const cJSON *v, int level, bool inline_first) {
  if (cJSON_IsObject(v) && v->child != NULL) {
    emit_mapping(b, v, level, inline_first);
    return;
  }
  if (cJSON_IsArray(v) && v->child != NULL) {
    const cJSON *item;
    cJSON_ArrayForEach(item, v) {
      indent(b, level);
      textbuf_str(b, "- ");
      if (cJSON_IsObject(item) && item->child != NULL) {
        emit_mapping(b, item, level + 2, true);
      } else if (cJSON_IsArray(item) && item->child != NULL) {
        textbuf_str(b, "\n");
        emit_node(b, item, level + 2, false);
      } else {
        if (cJSON_IsObject(item)) {
          textbuf_str(b, "{}");
        } else if (cJSON_IsArray(item)) {
          textbuf_str(b, "[]");
        } else {
          emit_scalar(b, item);
        }
        textbuf_str(b, "\n");
      }
    }
    return;
  }
  indent(b, level);
  if (cJSON_IsObject(v)) {
    textbuf_str(b, "{}");
  } else if (cJSON_IsArray(v)) {
    textbuf_str(b, "[]");
  } else {
    emit_scalar(b, v);
  }
  textbuf_str(b, "\n");
}

char *yaml_emit(const cJSON *doc) {
  struct textbuf b = {0};
  emit_node(&b, doc, 0, false);
  return textbuf_finish(&b);
}
