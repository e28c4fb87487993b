/* exposition: the Prometheus text exposition format 0.0.4, as far as the health port
 * needs it to serve an application's metrics after mtlsd's own (docs/admin.md): a check
 * that a text is one (so that the application's cannot make a scraper refuse the whole
 * answer, mtlsd's included), and the application's families that can follow mtlsd's
 * without making the whole invalid.
 *
 * Pure functions over memory; the caller owns every buffer. */
#ifndef MTLSD_EXPOSITION_H
#define MTLSD_EXPOSITION_H

#include <stdbool.h>
#include <stddef.h>

/* What exposition_filter made. */
struct exposition_filter {
  char *text; /* The application's families kept, ending in a newline unless empty,
               * NUL-terminated; the caller frees it. NULL when the filter failed. */
  size_t len;
  /* Families of the application left out because mtlsd exports a family of the same
   * name, or a series of one of their names (Go's process_* families), or because they
   * are in mtlsd's own namespace (mtlsd_*): two families of one name make the whole
   * scrape invalid, and the application must not pass for mtlsd. */
  size_t dropped;
  char first_dropped[128]; /* The name of the first left out, for a log line; "" if none. */
  char why[256];           /* Why the filter failed. */
};

/* exposition_filter returns in |out| the families of |app| (the application's text,
 * |app_len| bytes) that do not clash with |own| (mtlsd's own text, |own_len| bytes,
 * valid), each whole, in their order: appended to a text with the same names as |own|,
 * they keep it valid. It fails (false, the reason in |out->why|, no text) when |app| is
 * not valid text format 0.0.4 (not UTF-8, a NUL, a line that is neither a comment nor a
 * sample, a bad metric or label name, value or timestamp, an unknown TYPE) or when out of
 * memory. */
bool exposition_filter(const char *own, size_t own_len, const char *app, size_t app_len,
                       struct exposition_filter *out);

#endif
