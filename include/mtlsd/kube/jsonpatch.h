/* jsonpatch: JSON Pointers (RFC 6901) and the "add" operation of JSON Patch (RFC 6902),
 * as far as the injection needs them: the webhook answers with the operations, and
 * `mtlsd inject` applies them, so that both give the same pod by construction.
 *
 * Pointers live in caller buffers of JSONPATCH_POINTER_MAX bytes; jsonpatch_apply returns
 * a new tree the caller deletes. */
#ifndef MTLSD_JSONPATCH_H
#define MTLSD_JSONPATCH_H

#include <stdbool.h>

#include <cjson/cJSON.h>

enum { JSONPATCH_POINTER_MAX = 512 };

/* jsonpatch_pointer_push appends "/|token|" to the pointer |ptr|, escaping "~" and "/";
 * false (|ptr| unchanged in meaning but cut) when it does not fit. */
bool jsonpatch_pointer_push(char *ptr, const char *token);

/* jsonpatch_pointer_join writes |base| + "/|token|" into |out|; "" when it does not fit,
 * which no operation accepts. */
void jsonpatch_pointer_join(char *out, const char *base, const char *token);

/* jsonpatch_apply returns a copy of |doc| with the "add" operations of |patch| applied,
 * or NULL when one does not apply (a missing parent, an index out of range, another
 * operation) or memory runs out. */
cJSON *jsonpatch_apply(const cJSON *doc, const cJSON *patch);

#endif
