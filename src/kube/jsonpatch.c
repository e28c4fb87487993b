/* jsonpatch: JSON Pointers and JSON Patch "add" (see mtlsd/jsonpatch.h). */
#include "mtlsd/kube/jsonpatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsd/kube/kjson.h"

bool jsonpatch_pointer_push(char *ptr, const char *token) {
  size_t n = strlen(ptr);
  if (n + 1 >= JSONPATCH_POINTER_MAX) {
    return false;
  }
  ptr[n++] = '/';
  for (const char *c = token; *c != '\0'; c++) {
    const char *esc = *c == '~' ? "~0" : *c == '/' ? "~1" : NULL;
    size_t len = esc != NULL ? 2 : 1;
    if (n + len >= JSONPATCH_POINTER_MAX) {
      return false;
    }
    memcpy(ptr + n, esc != NULL ? esc : c, len);
    n += len;
  }
  ptr[n] = '\0';
  return true;
}

void jsonpatch_pointer_join(char *out, const char *base, const char *token) {
  snprintf(out, JSONPATCH_POINTER_MAX, "%s", base);
  if (!jsonpatch_pointer_push(out, token)) {
    out[0] = '\0';
  }
}

/* Decodes the next token of |*ptr| into |out|; false at the end. */
static bool next_token(const char **ptr, char *out, size_t cap) {
  if (**ptr != '/') {
    return false;
  }
  const char *p = *ptr + 1;
  size_t n = 0;
  for (; *p != '\0' && *p != '/' && n + 1 < cap; p++) {
    if (*p == '~' && (p[1] == '0' || p[1] == '1')) {
      out[n++] = p[1] == '0' ? '~' : '/';
      p++;
    } else {
      out[n++] = *p;
    }
  }
  out[n] = '\0';
  *ptr = p;
  return true;
}

/* Inserts |item| at |index| of |array| (at most its size), linking it in place: cJSON
 * 1.7.15's own cJSON_InsertItemInArray leaves the first element's back link (to the last)
 * stale after an insertion at 0, and detaching by index is quadratic. */
static void array_insert(cJSON *array, int index, cJSON *item) {
  cJSON *at = array->child;
  for (int i = 0; at != NULL && i < index; i++) {
    at = at->next;
  }
  if (at == NULL) {
    kjson_append(array, item);
    return;
  }
  item->next = at;
  item->prev = at->prev; /* The first element's prev is the last one. */
  if (at == array->child) {
    array->child = item;
  } else {
    at->prev->next = item;
  }
  at->prev = item;
}

/* The array index |token| names: digits only (RFC 6901), below INT_MAX; -1 otherwise. */
static int array_index(const char *token) {
  size_t len = strspn(token, "0123456789");
  if (len == 0 || len > 9 || token[len] != '\0' || (token[0] == '0' && len > 1)) {
    return -1;
  }
  return (int)strtol(token, NULL, 10);
}

static bool apply_add(cJSON *doc, const char *path, const cJSON *value) {
  char token[JSONPATCH_POINTER_MAX];
  cJSON *parent = doc;
  const char *p = path;
  if (!next_token(&p, token, sizeof(token))) {
    return false;
  }
  while (*p != '\0') {
    cJSON *child = cJSON_IsArray(parent) ? cJSON_GetArrayItem(parent, array_index(token))
                                         : cJSON_GetObjectItemCaseSensitive(parent, token);
    if (child == NULL) {
      return false;
    }
    parent = child;
    next_token(&p, token, sizeof(token));
  }
  cJSON *copy = cJSON_Duplicate(value, true);
  if (copy == NULL) {
    return false;
  }
  if (cJSON_IsArray(parent)) {
    int size = cJSON_GetArraySize(parent);
    int index = strcmp(token, "-") == 0 ? size : array_index(token);
    if (index < 0 || index > size) {
      cJSON_Delete(copy);
      return false;
    }
    array_insert(parent, index, copy);
    return true;
  }
  if (!cJSON_IsObject(parent)) {
    cJSON_Delete(copy);
    return false;
  }
  kjson_set(parent, token, copy);
  return true;
}

cJSON *jsonpatch_apply(const cJSON *object, const cJSON *patch) {
  cJSON *doc = cJSON_Duplicate(object, true);
  const cJSON *op;
  cJSON_ArrayForEach(op, patch) {
    const char *kind = kjson_string(op, "op");
    const char *path = kjson_string(op, "path");
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(op, "value");
    if (doc == NULL || kind == NULL || strcmp(kind, "add") != 0 || path == NULL || value == NULL ||
        !apply_add(doc, path, value)) {
      cJSON_Delete(doc);
      return NULL;
    }
  }
  return doc;
}
