/* access_log: the access log line of one closed connection (the README, Logs), in the
 * JSON or the text log format. A pure formatter: the caller writes the line
 * (log_access_write). */
#ifndef MTLSD_ACCESS_LOG_H
#define MTLSD_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What one line holds. Strings are borrowed; "" (or NULL) prints as "-" in text. */
struct access_record {
  const char *time; /* RFC 3339. */
  const char *listener;
  const char *downstream;
  const char *upstream;
  const char *identity;
  const char *tls_version;
  const char *cipher;
  bool resumed;
  uint64_t bytes_from_downstream;
  uint64_t bytes_from_upstream;
  uint64_t duration_ms;
  const char *result;
};

/* access_log_format returns the line for |r| (ending in a newline) as a new string the
 * caller frees, and its length in |*len|; NULL when out of memory. Every value is
 * escaped, so that none can end the line or forge a field; the line grows as needed, so
 * a 2048-byte identity never pushes the result off its end. */
char *access_log_format(const struct access_record *r, bool json, size_t *len);

#endif
