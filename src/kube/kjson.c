/* kjson: cJSON trees of Kubernetes objects (see mtlsd/kjson.h). */
#include "mtlsd/kube/kjson.h"

cJSON *kjson_field(const cJSON *obj, const char *key) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsNull(v) ? NULL : v;
}

const char *kjson_string(const cJSON *obj, const char *key) {
  const cJSON *v = kjson_field(obj, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

void kjson_attach(cJSON *obj, const char *key, cJSON *item) {
  if (!cJSON_AddItemToObject(obj, key, item)) {
    cJSON_Delete(item);
  }
}

void kjson_append(cJSON *array, cJSON *item) {
  if (!cJSON_AddItemToArray(array, item)) {
    cJSON_Delete(item);
  }
}

void kjson_set(cJSON *obj, const char *key, cJSON *value) {
  if (cJSON_GetObjectItemCaseSensitive(obj, key) == NULL) {
    kjson_attach(obj, key, value);
  } else if (!cJSON_ReplaceItemInObjectCaseSensitive(obj, key, value)) {
    cJSON_Delete(value);
  }
}

cJSON *kjson_object(cJSON *obj, const char *key) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsObject(v) ? v : cJSON_AddObjectToObject(obj, key);
}

cJSON *kjson_strings(const char *const *items, size_t count) {
  cJSON *a = cJSON_CreateArray();
  for (size_t i = 0; a != NULL && i < count; i++) {
    kjson_append(a, cJSON_CreateString(items[i]));
  }
  return a;
}
