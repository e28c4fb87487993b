/* jsonread: reads a JSON document strictly, for the schemas that mtlsd loads (the
 * sidecar's configuration, MTLSD_APP_PROBES and MTLSD_APP_METRICS, the injector's file).
 *
 * The text is parsed by cJSON and then walked by hand, object by object: each object's
 * keys are first checked against the keys it may hold (jr_check_keys: a typo or a
 * duplicate is reported before any value is looked at), then each value is read by a
 * typed getter that checks its type and range. The walk keeps the JSON path of the value
 * it is on ("listeners[1].listen"), so that every message says where the problem is:
 *   FILE: JSON.PATH: problem
 * The first problem ends the read: every function returns false after writing its
 * message (so that callers can "return jr_fail(...)"), and the caller throws away what it
 * has read so far.
 *
 * Ownership: struct jsonread owns nothing (|file|, |err| and |hints| are the caller's).
 * jr_parse_document returns a cJSON tree that the caller deletes. The getters copy what
 * they read into memory from jr_calloc or jr_strdup, which the caller frees with free()
 * (jr_free_strings for a list); a getter that replaces a value frees the old one. No
 * libuv, no BoringSSL: logic on libc, cJSON and netaddr. */
#ifndef MTLSD_JSONREAD_H
#define MTLSD_JSONREAD_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mtlsd/base/duration.h"
#include "mtlsd/base/netaddr.h"

enum {
  JSONREAD_FILE_MAX = 16 << 20, /* Far beyond any real configuration file. */
  JSONREAD_PATH_MAX = 256,
};

/* The longest duration a getter accepts: deadlines are computed as now + duration in
 * milliseconds, and a bound keeps that sum far from overflowing. */
#define JSONREAD_DURATION_MAX ((duration_ms)8760 * DURATION_HOUR)

/* Where a key that is unknown where it stands belongs instead, for the "unknown key (it
 * belongs in \"limits\")" hint: the keys of the object |where| names. A table of them
 * ends with a NULL |keys|. */
struct jr_hint {
  const char *where; /* "in \"limits\"", "at the top level". */
  const char *const *keys;
};

/* The state of one read. Set |file|, |err|, |err_len| and optionally |hints|; the path
 * starts empty (zero-initialize the rest). */
struct jsonread {
  const char *file; /* Names the input in messages. */
  char *err;        /* Receives the message; may be NULL. */
  size_t err_len;
  const struct jr_hint *hints;  /* NULL: no "it belongs" hints. */
  char path[JSONREAD_PATH_MAX]; /* The JSON path of the value being read; "" at the top. */
  size_t path_len;
};

/* jr_parse_document parses the |len| bytes of |json| as cJSON does, but refuses what
 * cJSON would accept and silently mangle (a NUL byte, "\u0000") and reports a syntax
 * error with its line and column: "FILE: line L, column C: JSON syntax error: ...". An
 * empty or blank text is refused too. Returns the tree, which the caller deletes with
 * cJSON_Delete, or NULL after writing the message. */
cJSON *jr_parse_document(struct jsonread *p, const char *json, size_t len);

/* --- messages: each writes "FILE: JSON.PATH: problem" and returns false ------------- */

bool jr_fail(struct jsonread *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool jr_fail_oom(struct jsonread *p);
/* jr_fail_value is jr_fail with the offending value quoted first ("\"x\": problem"),
 * escaped so that a hostile value cannot forge a log line, and cut when long. */
bool jr_fail_value(struct jsonread *p, const char *value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- the path ------------------------------------------------------------------------ */

/* jr_push_key appends ".key" (or ["odd key"]) to the path, jr_push_index "[i]"; both
 * return the length to hand back to jr_pop. A message written before the pop names the
 * pushed value, which is why failures return without popping. */
size_t jr_push_key(struct jsonread *p, const char *key);
size_t jr_push_index(struct jsonread *p, size_t index);
void jr_pop(struct jsonread *p, size_t saved);

/* --- objects ------------------------------------------------------------------------- */

/* jr_type_name names the JSON type of |v| for messages ("string", "object", ...). */
const char *jr_type_name(const cJSON *v);
/* jr_key_in tells whether |key| is one of |keys| (NULL-terminated). */
bool jr_key_in(const char *key, const char *const *keys);
bool jr_has_key(const cJSON *obj, const char *key);
/* jr_check_keys refuses, in document order, the first key of |obj| that is a duplicate
 * of an earlier one (cJSON keeps both, and which one wins would be an accident) or is not
 * in |known| (NULL-terminated), with a "did you mean" or an "it belongs" hint. */
bool jr_check_keys(struct jsonread *p, const cJSON *obj, const char *const *known);
bool jr_expect_object(struct jsonread *p, const cJSON *v);
/* jr_expect_text refuses what no string read here may hold: anything but a string, an
 * empty one, and control characters, which would end up raw in log lines and file names. */
bool jr_expect_text(struct jsonread *p, const cJSON *v);

/* jr_section calls |parse| on |obj|'s member |key|, with the path pointing at it, when
 * that member is present. */
typedef bool (*jr_parse_fn)(struct jsonread *p, const cJSON *v, void *ctx);
bool jr_section(struct jsonread *p, const cJSON *obj, const char *key, jr_parse_fn parse,
                void *ctx);

/* --- typed getters: each reads |obj|'s member |key|, and all but jr_get_string_or_empty
 * leave |*out| alone when the key is absent ---------------------------------------------- */

/* A string: jr_expect_text's rules. */
bool jr_get_string(struct jsonread *p, const cJSON *obj, const char *key, char **out);
/* jr_get_string_or_empty is jr_get_string for values the Kubernetes API writes as "" when
 * unset (a gRPC probe's service, a header's value): absent, "" and null read as "". */
bool jr_get_string_or_empty(struct jsonread *p, const cJSON *obj, const char *key, char **out);
bool jr_get_bool(struct jsonread *p, const cJSON *obj, const char *key, bool *out);
/* An integer from |min| to |max|. */
bool jr_get_uint(struct jsonread *p, const cJSON *obj, const char *key, uint32_t min, uint32_t max,
                 uint32_t *out);
/* A duration string ("5s"), greater than 0, at least |min|, at most
 * JSONREAD_DURATION_MAX. */
bool jr_get_duration(struct jsonread *p, const cJSON *obj, const char *key, duration_ms min,
                     duration_ms *out);
/* A "HOST:PORT" value; |need_ip| is for addresses that are bound, which cannot wait for a
 * name to resolve. */
bool jr_get_hostport(struct jsonread *p, const cJSON *obj, const char *key, bool need_ip,
                     struct hostport *out);
/* A list element validator: |s| is the element, the path points at it. */
typedef bool (*jr_element_check)(struct jsonread *p, const char *s);
/* jr_get_string_list reads a non-empty array of strings, each checked by |check| (and,
 * with |unique|, none listed twice), into |*out| and |*out_count|, replacing the list
 * there. An empty array is refused with |empty_hint|: every list of a schema has a default
 * that omitting the key keeps, while an empty one would silently mean "nothing at all". */
bool jr_get_string_list(struct jsonread *p, const cJSON *obj, const char *key,
                        jr_element_check check, bool unique, const char *empty_hint, char ***out,
                        size_t *out_count);
/* jr_get_choice reads a string that must be one of |names| (NULL-terminated) and stores
 * its index. |what| and |expected| word the message. */
bool jr_get_choice(struct jsonread *p, const cJSON *obj, const char *key, const char *const *names,
                   const char *what, const char *expected, int *out);

/* --- memory -------------------------------------------------------------------------- */

/* calloc and strdup for what a read keeps. A unit test can make them fail on purpose
 * (curl's "torture" tests), so that every failure path of a schema gets run. */
void *jr_calloc(size_t n, size_t size);
char *jr_strdup(const char *s);
/* jr_replace_string frees |*out| and replaces it with a copy of |s|. */
bool jr_replace_string(struct jsonread *p, char **out, const char *s);
/* jr_free_strings frees the |count| strings of |list| and |list| itself; NULL is a no-op. */
void jr_free_strings(char **list, size_t count);

#endif
