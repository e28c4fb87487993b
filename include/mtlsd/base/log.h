/* log: the process's event log on stderr, as text or JSON lines.
 *
 * Owns the global log level and format. Every call writes one whole line with a single
 * write(2), so lines from different worker threads never interleave. Callers must never
 * pass key material or certificate bodies; identities, addresses and reasons are fine. */
#ifndef MTLSD_LOG_H
#define MTLSD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mtlsd/base/textbuf.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* log_parse_level sets |*out| from "debug", "info", "warn" or "error"; returns false on
 * anything else. */
bool log_parse_level(enum log_level *out, const char *name);

/* log_parse_format sets |*out| from "text" or "json"; returns false on anything else. */
bool log_parse_format(enum log_format *out, const char *name);

/* log_configure sets the level below which lines are dropped, and the line format. It is
 * called once at start-up, before any worker thread exists. */
void log_configure(enum log_level level, enum log_format format);

/* log_enabled returns whether a line at |level| would be written, so that callers can
 * skip building expensive arguments. */
bool log_enabled(enum log_level level);

/* log_escape_json appends |src| to |out| as the inside of a JSON string: quotes,
 * backslashes, control characters and DEL are escaped, and a byte that is not part of
 * valid UTF-8 becomes U+FFFD, so that any bytes make valid JSON. */
void log_escape_json(struct textbuf *out, const char *src);

/* log_escape_text appends |src| to |out| for a text log line: printable ASCII passes, a
 * backslash is doubled, and every other byte (CR, LF, other controls, DEL, non-ASCII,
 * and spaces unless |keep_spaces|) becomes "\xHH", so that a value can neither end the
 * line nor, without spaces, forge another "key=value" field. */
void log_escape_text(struct textbuf *out, const char *src, bool keep_spaces);

/* log_write writes one event line: |module| names the module ("proxy", "tls", ...), the
 * rest is a printf format. The message is escaped as its format requires (see
 * log_escape_json and log_escape_text), so a value from a peer cannot forge a line. A
 * message longer than 4 KiB is truncated, never split. */
void log_write(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* log_access_open directs the access log (the README, Logs) to |target|: stdout, stderr, the
 * file |path| (opened for appending), or nowhere. Returns a negative errno on failure. */
enum log_access_target {
  ACCESS_LOG_TARGET_OFF,
  ACCESS_LOG_TARGET_STDOUT,
  ACCESS_LOG_TARGET_STDERR,
  ACCESS_LOG_TARGET_FILE
};
int log_access_open(enum log_access_target target, const char *path);

/* log_access_enabled returns whether access log lines are written at all. */
bool log_access_enabled(void);

/* log_current_format returns the configured log format, which access lines follow too. */
enum log_format log_current_format(void);

/* log_access_write writes one access log line of |len| bytes (ending in a newline) with a
 * single write(2). */
void log_access_write(const char *line, size_t len);

#define LOG_DEBUGF(module, ...)                  \
  do {                                           \
    if (log_enabled(LOG_DEBUG)) {                \
      log_write(LOG_DEBUG, module, __VA_ARGS__); \
    }                                            \
  } while (0)

#endif
