/* json_syntax: finds the first syntax error of a JSON text and says what was expected
 * there, for messages that point at the exact byte ("line 3, column 7: expected ':'").
 * cJSON says only that parsing failed and roughly where; this scanner accepts exactly
 * what cJSON accepts, so it never blames a place before cJSON's real failure. A pure
 * function. */
#ifndef MTLSD_JSON_SYNTAX_H
#define MTLSD_JSON_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>

/* Flags of json_syntax_locate. */
enum {
  /* A NUL in a string (escaped as \u0000, or raw) is an error too: cJSON would cut the
   * string there, and a Kubernetes object must be read as the API server keeps it. */
  JSON_SYNTAX_NO_NUL = 1 << 0,
  /* More than JSON_SYNTAX_VALUES_MAX values is an error too: checked before cJSON builds
   * its tree (some 80 bytes a value), so that a body of a few MiB of tiny values cannot
   * take gigabytes. A pod of 100 containers with its managedFields has a few tens of
   * thousands. */
  JSON_SYNTAX_BOUNDED = 1 << 1,
};

#define JSON_SYNTAX_VALUES_MAX 100000
#define JSON_SYNTAX_VALUES_MAX_TEXT "100000"

/* json_syntax_locate sets |*offset| and |*what| (a static string) for the first syntax
 * error of the |len| bytes of |text|, or returns false when it finds none. */
bool json_syntax_locate(const char *text, size_t len, unsigned flags, size_t *offset,
                        const char **what);

#endif
