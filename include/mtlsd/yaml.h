/* yaml: Kubernetes YAML to JSON and back, for `mtlsd inject` (SPEC section 9): libyaml
 * reads and the documents become cJSON values, which are written back as block YAML.
 *
 * Plain scalars resolve the way kubectl's YAML reader (go-yaml v2, YAML 1.1) does, so
 * that a manifest means the same here as in the cluster: `true`, `yes`, `on` are
 * booleans, `0644` is the octal 420, `1e3` a number, `~` null. A quoted or block scalar
 * is always a string. On the way out every string that a YAML 1.1 reader would take
 * for anything else ("8080", "true", "0755", "1e3", "on", "") is quoted, so strings
 * stay strings. Key order is kept; anchors and aliases are expanded; comments are lost.
 *
 * Pure functions; the caller owns what they return. */
#ifndef MTLSD_YAML_H
#define MTLSD_YAML_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* yaml_parse returns the documents of the |len| bytes of |text| as a cJSON array (one
 * element per document; empty documents are left out), which the caller deletes. On a
 * syntax error or an unsupported construct it returns NULL with "line L, column C:
 * problem" in |err|. */
cJSON *yaml_parse(const char *text, size_t len, char *err, size_t err_len);

/* yaml_emit writes |doc| as one YAML document (block style, 2-space indents) into a new
 * string the caller frees; NULL when out of memory. */
char *yaml_emit(const cJSON *doc);

/* yaml_plain_is_string tells whether the plain scalar |s| reads back as a string (not
 * null, a boolean or a number) under kubectl's rules. */
bool yaml_plain_is_string(const char *s);

#endif
