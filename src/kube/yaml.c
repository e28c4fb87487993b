/* yaml: reading Kubernetes manifests, YAML or JSON, into cJSON documents (see
 * mtlsd/yaml.h; writing them is yaml_write.c's). */
#include "mtlsd/kube/yaml.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "yaml_internal.h"

/* Nesting bound: a manifest is a few levels deep; a hostile one must not exhaust the
 * stack. A mapping's keys are found by a scan up to KEYSET_FROM of them, by a hash set
 * beyond (a ConfigMap may have thousands). */
enum { DEPTH_MAX = 64, ANCHORS_MAX = 256, KEYSET_FROM = 16 };

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

/* ---- Positions ---- */

void yaml_text_position(const char *text, size_t offset, size_t *line, size_t *column) {
  *line = 1;
  *column = 1;
  /* A byte order mark is no character of the first line, for libyaml either. */
  size_t i = offset >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
  for (; i < offset; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c == '\n' || (c == '\r' && (i + 1 >= offset || text[i + 1] != '\n'))) {
      ++*line;
      *column = 1;
    } else if ((c & 0xc0) != 0x80) {
      ++*column; /* UTF-8 continuation bytes are part of the character before. */
    }
  }
}

/* ---- Key sets: a mapping's keys, to find duplicates and merge in linear time ---- */

struct keyset {
  const char **slots; /* The keys of the mapping's members, which own them. */
  size_t cap;         /* A power of two, at least twice the count. */
  size_t count;
};

static size_t hash_key(const char *s) {
  uint64_t h = 14695981039346656037u; /* FNV-1a */
  for (; *s != '\0'; s++) {
    h = (h ^ (unsigned char)*s) * 1099511628211u;
  }
  return (size_t)h;
}

static const char **keyset_slot(const struct keyset *k, const char *key) {
  size_t i = hash_key(key) & (k->cap - 1);
  while (k->slots[i] != NULL && strcmp(k->slots[i], key) != 0) {
    i = (i + 1) & (k->cap - 1);
  }
  return &k->slots[i];
}

/* Adds |key| (absent); false when out of memory. */
static bool keyset_add(struct keyset *k, const char *key) {
  if (2 * (k->count + 1) > k->cap) {
    struct keyset bigger = {.cap = k->cap > 0 ? 2 * k->cap : (size_t)4 * KEYSET_FROM};
    bigger.slots = calloc(bigger.cap, sizeof(*bigger.slots));
    if (bigger.slots == NULL) {
      return false;
    }
    for (size_t i = 0; i < k->cap; i++) {
      if (k->slots[i] != NULL) {
        *keyset_slot(&bigger, k->slots[i]) = k->slots[i];
      }
    }
    bigger.count = k->count;
    free(k->slots);
    *k = bigger;
  }
  *keyset_slot(k, key) = key;
  k->count++;
  return true;
}

/* ---- Reading ---- */

struct anchor {
  char *name;
  cJSON *node;  /* A copy of its own: the anchored node may be a key or a merge source,
                 * gone by the time an alias names it. */
  size_t nodes; /* What an alias to it adds to the document's nodes. */
};

struct yaml_reader {
  yaml_parser_t parser;
  const char *text;
  size_t len;
  char *err;
  size_t err_len;
  bool failed;
  bool done;
  bool in_document;
  struct yaml_doc_place place; /* Of the document being read, or the last one. */
  /* The document's nodes, the copies made for its aliases included, and how many of them
   * are such copies: what kubectl's bound on aliasing counts (excessive_aliasing). */
  size_t nodes;
  size_t aliased;
  struct anchor anchors[ANCHORS_MAX];
  size_t anchor_count;
};

static void fail_at(struct yaml_reader *r, const yaml_mark_t *mark, const char *what) {
  if (r->failed) {
    return;
  }
  r->failed = true;
  if (r->in_document) {
    snprintf(r->err, r->err_len, "line %zu, column %zu: %s (document %zu, from line %zu)",
             mark->line + 1, mark->column + 1, what, r->place.number, r->place.line);
  } else {
    snprintf(r->err, r->err_len, "line %zu, column %zu: %s", mark->line + 1, mark->column + 1,
             what);
  }
}

/* libyaml's reader decodes the text ahead of the parser (so no document can be named)
 * and places what it refuses (a NUL or another control character, bad UTF-8) only by
 * its byte offset. */
static void fail_reading(struct yaml_reader *r) {
  const yaml_parser_t *p = &r->parser;
  size_t offset = p->problem_offset < r->len ? p->problem_offset : r->len;
  size_t line;
  size_t column;
  yaml_text_position(r->text, offset, &line, &column);
  char value[16] = "";
  if (p->problem_value >= 0) {
    snprintf(value, sizeof(value), " (#x%02X)", (unsigned)p->problem_value);
  }
  r->failed = true;
  snprintf(r->err, r->err_len, "line %zu, column %zu (byte %zu): %s%s", line, column, offset,
           p->problem != NULL ? p->problem : "unreadable text", value);
}

static bool next_event(struct yaml_reader *r, yaml_event_t *ev) {
  if (yaml_parser_parse(&r->parser, ev)) {
    return true;
  }
  const yaml_parser_t *p = &r->parser;
  if (p->error == YAML_READER_ERROR) {
    fail_reading(r);
  } else if (p->error == YAML_MEMORY_ERROR) {
    fail_at(r, &p->mark, "out of memory");
  } else {
    char what[200];
    snprintf(what, sizeof(what), "%s%s%s", p->problem != NULL ? p->problem : "bad YAML",
             p->context != NULL ? " " : "", p->context != NULL ? p->context : "");
    fail_at(r, &p->problem_mark, what);
  }
  return false;
}

static bool remember(struct yaml_reader *r, const yaml_char_t *anchor, const cJSON *node,
                     size_t nodes, const yaml_mark_t *mark) {
  if (r->anchor_count >= ANCHORS_MAX) {
    fail_at(r, mark, "too many anchors");
    return false;
  }
  struct anchor *a = &r->anchors[r->anchor_count];
  a->name = strdup((const char *)anchor);
  a->node = cJSON_Duplicate(node, true);
  a->nodes = nodes;
  if (a->name == NULL || a->node == NULL) {
    free(a->name);
    cJSON_Delete(a->node);
    fail_at(r, mark, "out of memory");
    return false;
  }
  r->anchor_count++;
  return true;
}

static void forget_anchors(struct yaml_reader *r) {
  for (size_t i = 0; i < r->anchor_count; i++) {
    free(r->anchors[i].name);
    cJSON_Delete(r->anchors[i].node);
  }
  r->anchor_count = 0;
}

static const struct anchor *find_anchor(const struct yaml_reader *r, const char *name) {
  /* The latest definition wins, as an anchor may be redefined. */
  for (size_t i = r->anchor_count; i > 0; i--) {
    if (strcmp(r->anchors[i - 1].name, name) == 0) {
      return &r->anchors[i - 1];
    }
  }
  return NULL;
}

/* kubectl's bound on aliasing (go-yaml's, which refuses "excessive aliasing"), applied
 * the same way so that what kubectl reads is read here too: once a document has over
 * 1,000 nodes and over 100 of them are copies made for aliases, the copies may be 99% of
 * its nodes up to 400,000 nodes, a share that falls to 10% at 4,000,000. A document's
 * expansion is so bounded by its own size: an alias bomb stops near 400,000 nodes (some
 * 40 MB), a large manifest with a few aliases is never refused. */
static bool excessive_aliasing(size_t nodes, size_t aliased) {
  if (aliased <= 100 || nodes <= 1000) {
    return false;
  }
  double allowed = nodes <= 400000    ? 0.99
                   : nodes >= 4000000 ? 0.10
                                      : 0.99 - 0.89 * (double)(nodes - 400000) / 3600000.0;
  return (double)aliased / (double)nodes > allowed;
}

static cJSON *expand_alias(struct yaml_reader *r, const yaml_event_t *ev) {
  const char *name = (const char *)ev->data.alias.anchor;
  const struct anchor *a = find_anchor(r, name);
  if (a == NULL) {
    fail_at(r, &ev->start_mark, "an alias to an unknown anchor");
    return NULL;
  }
  r->nodes += a->nodes;
  r->aliased += a->nodes;
  if (excessive_aliasing(r->nodes, r->aliased)) {
    char what[200];
    snprintf(what, sizeof(what),
             "excessive aliasing (kubectl refuses it too): with *%.40s, %zu of the "
             "document's %zu nodes would be copies",
             name, r->aliased, r->nodes);
    fail_at(r, &ev->start_mark, what);
    return NULL;
  }
  cJSON *copy = cJSON_Duplicate(a->node, true);
  if (copy == NULL) {
    fail_at(r, &ev->start_mark, "out of memory");
  }
  return copy;
}

static cJSON *parse_node(struct yaml_reader *r, yaml_event_t *ev, int depth);

static cJSON *parse_scalar(struct yaml_reader *r, const yaml_event_t *ev) {
  const char *value = (const char *)ev->data.scalar.value;
  const char *tag = (const char *)ev->data.scalar.tag;
  if (strlen(value) != ev->data.scalar.length) {
    fail_at(r, &ev->start_mark, "a NUL byte in a scalar");
    return NULL;
  }
  bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ||
               ev->data.scalar.style == YAML_ANY_SCALAR_STYLE;
  bool resolve = plain && (tag == NULL || strcmp(tag, "!") != 0) &&
                 (tag == NULL || strcmp(tag, YAML_STR_TAG) != 0);
  cJSON *node = resolve ? resolve_plain(value) : cJSON_CreateString(value);
  if (node == NULL) {
    fail_at(r, &ev->start_mark, "out of memory");
  }
  return node;
}

/* A mapping being read: its members, a set of their keys once it has many, and the
 * mappings its "<<" merges, added at its end so that its own keys win whatever their
 * place. */
struct mapping {
  cJSON *obj;
  cJSON *merges;
  size_t count;
  struct keyset keys;
};

static bool mapping_has(const struct mapping *m, const char *key) {
  if (m->keys.cap > 0) {
    return *keyset_slot(&m->keys, key) != NULL;
  }
  for (const cJSON *c = m->obj->child; c != NULL; c = c->next) {
    if (strcmp(c->string, key) == 0) {
      return true;
    }
  }
  return false;
}

/* Adds |member|, whose key (its ->string) the mapping does not have; false when out of
 * memory (the member is the mapping's all the same). */
static bool mapping_add(struct mapping *m, cJSON *member) {
  cJSON_AddItemToArray(m->obj, member);
  if (m->keys.cap > 0) {
    return keyset_add(&m->keys, member->string);
  }
  if (++m->count < KEYSET_FROM) {
    return true;
  }
  for (const cJSON *c = m->obj->child; c != NULL; c = c->next) {
    if (!keyset_add(&m->keys, c->string)) {
      return false;
    }
  }
  return true;
}

/* The key of a member as JSON has it, a string ("8080" for 8080: x), in cJSON's memory
 * for the member's ->string; NULL when it is no scalar or out of memory. */
static char *key_name(struct yaml_reader *r, cJSON *k, const yaml_mark_t *mark) {
  if (cJSON_IsString(k)) {
    char *name = k->valuestring;
    k->valuestring = NULL;
    return name;
  }
  char text[40];
  if (cJSON_IsBool(k)) {
    snprintf(text, sizeof(text), "%s", cJSON_IsTrue(k) ? "true" : "false");
  } else if (cJSON_IsNumber(k)) {
    yaml_format_number(k->valuedouble, text, sizeof(text));
  } else {
    fail_at(r, mark, "a key must be a scalar");
    return NULL;
  }
  char *name = cJSON_malloc(strlen(text) + 1);
  if (name == NULL) {
    fail_at(r, mark, "out of memory");
    return NULL;
  }
  memcpy(name, text, strlen(text) + 1);
  return name;
}

/* Keeps what a "<<" merges (|v|: a mapping, or a list of them) for the mapping's end. */
static bool add_merge_sources(struct yaml_reader *r, struct mapping *m, cJSON *v,
                              const yaml_mark_t *mark) {
  bool ok = cJSON_IsObject(v) || cJSON_IsArray(v);
  for (const cJSON *c = cJSON_IsArray(v) ? v->child : NULL; c != NULL; c = c->next) {
    ok = ok && cJSON_IsObject(c);
  }
  if (!ok) {
    fail_at(r, mark, "\"<<\" must merge a mapping or a list of them");
    cJSON_Delete(v);
    return false;
  }
  if (cJSON_IsObject(v)) {
    cJSON_AddItemToArray(m->merges, v);
    return true;
  }
  while (v->child != NULL) {
    cJSON_AddItemToArray(m->merges, cJSON_DetachItemViaPointer(v, v->child));
  }
  cJSON_Delete(v);
  return true;
}

/* Adds the merged members that the mapping does not have; the first source wins. */
static bool apply_merges(struct yaml_reader *r, struct mapping *m, const yaml_mark_t *mark) {
  for (cJSON *source = m->merges->child; source != NULL; source = source->next) {
    while (source->child != NULL) {
      cJSON *member = cJSON_DetachItemViaPointer(source, source->child);
      if (mapping_has(m, member->string)) {
        cJSON_Delete(member);
      } else if (!mapping_add(m, member)) {
        fail_at(r, mark, "out of memory");
        return false;
      }
    }
  }
  return true;
}

/* Reads one member of a mapping, whose key starts with |key|. */
static bool parse_member(struct yaml_reader *r, struct mapping *m, yaml_event_t *key, int depth) {
  /* Only a plain << merges: a quoted "<<" is a key like any other. */
  bool merge = key->type == YAML_SCALAR_EVENT && key->data.scalar.tag == NULL &&
               key->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
               strcmp((const char *)key->data.scalar.value, "<<") == 0;
  yaml_mark_t mark = key->start_mark;
  cJSON *k = parse_node(r, key, depth + 1);
  char *name = k != NULL ? key_name(r, k, &mark) : NULL;
  cJSON_Delete(k);
  yaml_event_t value;
  if (name == NULL || !next_event(r, &value)) {
    cJSON_free(name);
    return false;
  }
  cJSON *v = parse_node(r, &value, depth + 1);
  yaml_event_delete(&value);
  if (v == NULL || merge) {
    cJSON_free(name);
    return v != NULL && add_merge_sources(r, m, v, &mark);
  }
  if (mapping_has(m, name)) {
    char what[120];
    snprintf(what, sizeof(what), "duplicate key \"%.60s\"", name);
    fail_at(r, &mark, what);
    cJSON_free(name);
    cJSON_Delete(v);
    return false;
  }
  v->string = name;
  if (!mapping_add(m, v)) {
    fail_at(r, &mark, "out of memory");
    return false;
  }
  return true;
}

static cJSON *parse_mapping(struct yaml_reader *r, const yaml_mark_t *start, int depth) {
  struct mapping m = {.obj = cJSON_CreateObject(), .merges = cJSON_CreateArray()};
  bool ok = m.obj != NULL && m.merges != NULL;
  if (!ok) {
    fail_at(r, start, "out of memory");
  }
  bool ended = false;
  yaml_event_t ev;
  while (ok && !ended && next_event(r, &ev)) {
    ended = ev.type == YAML_MAPPING_END_EVENT;
    ok = ended ? apply_merges(r, &m, &ev.start_mark) : parse_member(r, &m, &ev, depth);
    yaml_event_delete(&ev);
  }
  free(m.keys.slots);
  cJSON_Delete(m.merges);
  if (ok && ended) {
    return m.obj;
  }
  cJSON_Delete(m.obj);
  return NULL;
}

static cJSON *parse_sequence(struct yaml_reader *r, const yaml_mark_t *start, int depth) {
  cJSON *arr = cJSON_CreateArray();
  if (arr == NULL) {
    fail_at(r, start, "out of memory");
    return NULL;
  }
  yaml_event_t ev;
  while (next_event(r, &ev)) {
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
static cJSON *parse_node(struct yaml_reader *r, yaml_event_t *ev, int depth) {
  if (depth > DEPTH_MAX) {
    fail_at(r, &ev->start_mark, "nested too deep");
    return NULL;
  }
  size_t before = r->nodes++;
  cJSON *node = NULL;
  const yaml_char_t *anchor = NULL;
  switch (ev->type) {
    case YAML_SCALAR_EVENT:
      node = parse_scalar(r, ev);
      anchor = ev->data.scalar.anchor;
      break;
    case YAML_SEQUENCE_START_EVENT:
      node = parse_sequence(r, &ev->start_mark, depth);
      anchor = ev->data.sequence_start.anchor;
      break;
    case YAML_MAPPING_START_EVENT:
      node = parse_mapping(r, &ev->start_mark, depth);
      anchor = ev->data.mapping_start.anchor;
      break;
    case YAML_ALIAS_EVENT:
      return expand_alias(r, ev);
    default:
      fail_at(r, &ev->start_mark, "unexpected YAML event");
      return NULL;
  }
  if (node != NULL && anchor != NULL &&
      !remember(r, anchor, node, r->nodes - before, &ev->start_mark)) {
    cJSON_Delete(node);
    return NULL;
  }
  return node;
}

/* Reads the document whose start event came: NULL when it is empty or on failure. */
static cJSON *read_document(struct yaml_reader *r) {
  yaml_event_t root;
  if (!next_event(r, &root)) {
    return NULL;
  }
  cJSON *doc = NULL;
  if (root.type != YAML_DOCUMENT_END_EVENT) {
    doc = parse_node(r, &root, 0);
    yaml_event_t end;
    if (doc != NULL && next_event(r, &end)) {
      yaml_event_delete(&end);
    } else {
      cJSON_Delete(doc);
      doc = NULL;
    }
  }
  yaml_event_delete(&root);
  /* Anchors, and the count of aliasing, do not cross documents. */
  forget_anchors(r);
  r->nodes = 0;
  r->aliased = 0;
  r->in_document = false;
  return doc;
}

struct yaml_reader *yaml_reader_new(const char *text, size_t len) {
  struct yaml_reader *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return NULL;
  }
  if (!yaml_parser_initialize(&r->parser)) {
    free(r);
    return NULL;
  }
  yaml_parser_set_input_string(&r->parser, (const unsigned char *)text, len);
  r->text = text;
  r->len = len;
  return r;
}

int yaml_reader_next(struct yaml_reader *r, cJSON **doc, struct yaml_doc_place *place, char *err,
                     size_t err_len) {
  *doc = NULL;
  r->err = err;
  r->err_len = err_len;
  if (err_len > 0) {
    err[0] = '\0';
  }
  yaml_event_t ev;
  while (!r->done && next_event(r, &ev)) {
    yaml_event_type_t type = ev.type;
    size_t line = ev.start_mark.line + 1;
    yaml_event_delete(&ev);
    if (type == YAML_STREAM_END_EVENT) {
      r->done = true;
      return 0;
    }
    if (type != YAML_DOCUMENT_START_EVENT) {
      continue;
    }
    r->place.number++;
    r->place.line = line;
    r->in_document = true;
    cJSON *value = read_document(r);
    if (r->failed) {
      cJSON_Delete(value);
      break;
    }
    if (value != NULL && !cJSON_IsNull(value)) {
      *doc = value;
      *place = r->place;
      return 1;
    }
    /* An empty document (a lone "---", or one that is only "~") is left out. */
    cJSON_Delete(value);
  }
  r->done = true;
  return r->failed ? -1 : 0;
}

void yaml_reader_free(struct yaml_reader *r) {
  if (r == NULL) {
    return;
  }
  forget_anchors(r);
  yaml_parser_delete(&r->parser);
  free(r);
}

cJSON *yaml_parse(const char *text, size_t len, char *err, size_t err_len) {
  struct yaml_reader *r = yaml_reader_new(text, len);
  cJSON *docs = cJSON_CreateArray();
  if (r == NULL || docs == NULL) {
    yaml_reader_free(r);
    cJSON_Delete(docs);
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  cJSON *doc;
  struct yaml_doc_place place;
  int got;
  while ((got = yaml_reader_next(r, &doc, &place, err, err_len)) == 1) {
    cJSON_AddItemToArray(docs, doc);
  }
  yaml_reader_free(r);
  if (got < 0) {
    cJSON_Delete(docs);
    return NULL;
  }
  return docs;
}
