/* kjson: reading and building the cJSON trees of Kubernetes objects, for the injection,
 * its JSON Patch, the webhook's reviews and `mtlsd inject`.
 *
 * Reading: a member that is null is absent, as Kubernetes reads it (a YAML null is what
 * Helm renders for an empty value: "annotations:" with nothing under it).
 *
 * Building: cJSON leaves an item it could not attach (its key could not be copied, or the
 * parent itself failed to be made) to the caller; these free it then, so that an
 * allocation failure loses that item only, which json_alloc's count reports to the
 * caller, who refuses the whole. The parent owns what is attached. */
#ifndef MTLSD_KJSON_H
#define MTLSD_KJSON_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* kjson_field returns |obj|'s member |key|, or NULL when it is absent or null. */
cJSON *kjson_field(const cJSON *obj, const char *key);

/* kjson_string returns the string of |obj|'s member |key|, or NULL when it is no string. */
const char *kjson_string(const cJSON *obj, const char *key);

/* kjson_attach adds |item| to |obj| as |key|, kjson_append to the end of |array|; either
 * takes |item| (NULL does nothing). */
void kjson_attach(cJSON *obj, const char *key, cJSON *item);
void kjson_append(cJSON *array, cJSON *item);

/* kjson_set sets |obj|'s member |key| to |value|, replacing one that is there. */
void kjson_set(cJSON *obj, const char *key, cJSON *value);

/* kjson_object returns |obj|'s object member |key|, added when missing. */
cJSON *kjson_object(cJSON *obj, const char *key);

/* kjson_strings returns a new array of the |count| strings |items|. */
cJSON *kjson_strings(const char *const *items, size_t count);

#endif
