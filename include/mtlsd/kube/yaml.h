/* yaml: Kubernetes manifests as text, for `mtlsd inject` (docs/injection.md): libyaml reads
 * YAML and the documents become cJSON values, which are written back as block YAML or as
 * indented JSON, the way kubectl writes them.
 *
 * Plain scalars resolve the way kubectl's YAML reader (go-yaml v2, YAML 1.1) does, so
 * that a manifest means the same here as in the cluster: `true`, `yes`, `on` are
 * booleans, `0644` is the octal 420, `1e3` a number, `~` null. A quoted or block scalar
 * is always a string. On the way out a string is quoted whenever any YAML 1.1 or 1.2
 * reader (go-yaml v2 and v3, PyYAML included) could take it for something else: so, more
 * often than needed, as quoting a string never changes it. A string of several lines is
 * written as a literal block (`|`) when one can hold it exactly. Numbers are written in
 * the shortest form that reads back as the same double. Key order is kept; anchors and
 * aliases are expanded (within kubectl's bound on aliasing); comments are lost.
 *
 * A reader (yaml_reader_new) owns a copy of nothing: the text it reads must outlive it.
 * Every document and string returned belongs to the caller; the writers append to the
 * caller's buffer, whose failure (out of memory) says that the text is incomplete. */
#ifndef MTLSD_YAML_H
#define MTLSD_YAML_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "mtlsd/base/textbuf.h"

/* A stream of YAML documents, read one at a time. */
struct yaml_reader;

/* yaml_reader_new starts reading the |len| bytes of |text|; NULL when out of memory. */
struct yaml_reader *yaml_reader_new(const char *text, size_t len);

/* Where a document starts: its number in the stream (1 for the first; empty documents
 * count) and its line. */
struct yaml_doc_place {
  size_t number;
  size_t line;
};

/* yaml_reader_next returns 1 with the next non-empty document in |*doc| and its place in
 * |*place|, 0 at the end of the stream, and -1 on a syntax error, an unsupported
 * construct, excessive aliasing or an allocation failure, with "line L, column C: problem
 * (document N, from line S)" in |err|; the reader is then done. */
int yaml_reader_next(struct yaml_reader *r, cJSON **doc, struct yaml_doc_place *place, char *err,
                     size_t err_len);

/* yaml_reader_free ends the reader (NULL is fine). */
void yaml_reader_free(struct yaml_reader *r);

/* yaml_parse returns every non-empty document of the |len| bytes of |text| as a cJSON
 * array, which the caller deletes; NULL with the reader's message in |err| on error. */
cJSON *yaml_parse(const char *text, size_t len, char *err, size_t err_len);

/* yaml_write appends |doc| to |b| as one YAML document (block style, 2-space indents). */
void yaml_write(struct textbuf *b, const cJSON *doc);

/* yaml_emit is yaml_write into a new string the caller frees; NULL when out of memory. */
char *yaml_emit(const cJSON *doc);

/* yaml_write_json appends |doc| to |b| as JSON indented as kubectl's `-o json` (4 spaces,
 * one member a line, `{}` and `[]` when empty) for a value that starts |level| spaces
 * in: its lines after the first are indented |level| more. No final newline. */
void yaml_write_json(struct textbuf *b, const cJSON *doc, int level);

/* yaml_text_position turns byte |offset| of |text| into a line and a column (both from 1;
 * columns count characters, not the bytes of UTF-8 sequences). */
void yaml_text_position(const char *text, size_t offset, size_t *line, size_t *column);

#endif
