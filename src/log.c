/* log: one line per event on stderr, text or JSON (see mtlsd/log.h). */
#include "mtlsd/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { LOG_LINE_MAX = 4096 };

static enum log_level g_level = LOG_INFO;
static enum log_format g_format = LOG_FORMAT_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

bool log_parse_level(enum log_level *out, const char *name) {
  for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
    if (strcmp(name, level_names[i]) == 0) {
      *out = (enum log_level)i;
      return true;
    }
  }
  return false;
}

bool log_parse_format(enum log_format *out, const char *name) {
  if (strcmp(name, "text") == 0) {
    *out = LOG_FORMAT_TEXT;
  } else if (strcmp(name, "json") == 0) {
    *out = LOG_FORMAT_JSON;
  } else {
    return false;
  }
  return true;
}

void log_configure(enum log_level level, enum log_format format) {
  g_level = level;
  g_format = format;
}

bool log_enabled(enum log_level level) {
  return level >= g_level;
}

void log_append_json_escaped(char *buf, size_t cap, size_t *pos, const char *src) {
  static const char hex[] = "0123456789abcdef";
  for (const unsigned char *p = (const unsigned char *)src; *p != '\0'; p++) {
    char esc[7];
    size_t n;
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*p;
      n = 2;
    } else if (*p == '\n') {
      memcpy(esc, "\\n", 2);
      n = 2;
    } else if (*p < 0x20) {
      memcpy(esc, "\\u00", 4);
      esc[4] = hex[*p >> 4];
      esc[5] = hex[*p & 0xf];
      n = 6;
    } else {
      esc[0] = (char)*p;
      n = 1;
    }
    if (*pos + n + 1 >= cap) {
      return;
    }
    memcpy(buf + *pos, esc, n);
    *pos += n;
  }
}

char *log_time_rfc3339(char *out, size_t out_len, int64_t unix_seconds) {
  time_t tt = (time_t)unix_seconds;
  struct tm tm;
  if (gmtime_r(&tt, &tm) == NULL || strftime(out, out_len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    snprintf(out, out_len, "%lld", (long long)unix_seconds);
  }
  return out;
}

char *log_time_now(char *out, size_t out_len) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(out, out_len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, out_len - n, ".%03ldZ", ts.tv_nsec / 1000000);
  return out;
}

void log_write(enum log_level level, const char *module, const char *fmt, ...) {
  if (!log_enabled(level)) {
    return;
  }
  char msg[LOG_LINE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);

  char when[40];
  log_time_now(when, sizeof(when));

  char line[LOG_LINE_MAX + 256];
  size_t pos = 0;
  if (g_format == LOG_FORMAT_JSON) {
    int n = snprintf(line, sizeof(line),
                     "{\"time\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"", when,
                     level_names[level], module);
    pos = n > 0 ? (size_t)n : 0;
    log_append_json_escaped(line, sizeof(line) - 3, &pos, msg);
    memcpy(line + pos, "\"}", 2);
    pos += 2;
  } else {
    int n =
        snprintf(line, sizeof(line) - 1, "%s %-5s %s: %s", when, level_names[level], module, msg);
    pos = n < 0 ? 0 : ((size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2);
  }
  line[pos++] = '\n';
  /* One write(2) per line keeps lines whole across threads; a short write to a full pipe
   * is not retried, as losing the tail of a log line beats blocking a worker. */
  ssize_t ignored = write(STDERR_FILENO, line, pos);
  (void)ignored;
}

static int g_access_fd = -1;

int log_access_open(enum log_access_target target, const char *path) {
  switch (target) {
    case ACCESS_LOG_TARGET_STDOUT:
      g_access_fd = STDOUT_FILENO;
      return 0;
    case ACCESS_LOG_TARGET_STDERR:
      g_access_fd = STDERR_FILENO;
      return 0;
    case ACCESS_LOG_TARGET_FILE: {
      int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
      if (fd < 0) {
        return -errno;
      }
      g_access_fd = fd;
      return 0;
    }
    default:
      g_access_fd = -1;
      return 0;
  }
}

bool log_access_enabled(void) {
  return g_access_fd >= 0;
}

enum log_format log_current_format(void) {
  return g_format;
}

void log_access_write(const char *line, size_t len) {
  if (g_access_fd >= 0) {
    ssize_t ignored = write(g_access_fd, line, len);
    (void)ignored;
  }
}
