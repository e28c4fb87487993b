/* log: one line per event on stderr, text or JSON (see mtlsd/log.h). */
#include "mtlsd/base/log.h"
#include "mtlsd/base/timefmt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

static const char kHex[] = "0123456789abcdef";

/* utf8_sequence_len returns the length of the valid UTF-8 sequence at |p| (1 to 4), or 0
 * when the bytes there are not one: overlong forms, surrogates and values past U+10FFFF
 * are refused, as RFC 3629 says. */
static size_t utf8_sequence_len(const unsigned char *p) {
  unsigned char c = p[0];
  if (c < 0x80) {
    return 1;
  }
  size_t len;
  unsigned char lo = 0x80, hi = 0xbf; /* The range of the second byte. */
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    lo = c == 0xe0 ? 0xa0 : 0x80;
    hi = c == 0xed ? 0x9f : 0xbf;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    lo = c == 0xf0 ? 0x90 : 0x80;
    hi = c == 0xf4 ? 0x8f : 0xbf;
  } else {
    return 0;
  }
  if (p[1] < lo || p[1] > hi) {
    return 0;
  }
  for (size_t i = 2; i < len; i++) {
    if (p[i] < 0x80 || p[i] > 0xbf) {
      return 0;
    }
  }
  return len;
}

void log_escape_json(struct textbuf *out, const char *src) {
  const unsigned char *p = (const unsigned char *)src;
  while (*p != '\0') {
    const unsigned char *run = p;
    /* Plain bytes are copied in runs, not one call each. */
    while (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') {
      p++;
    }
    textbuf_append(out, (const char *)run, (size_t)(p - run));
    if (*p == '\0') {
      break;
    }
    if (*p == '"' || *p == '\\') {
      char esc[2] = {'\\', (char)*p};
      textbuf_append(out, esc, 2);
      p++;
    } else if (*p == '\n') {
      textbuf_str(out, "\\n");
      p++;
    } else if (*p < 0x20 || *p == 0x7f) {
      char esc[6] = {'\\', 'u', '0', '0', kHex[*p >> 4], kHex[*p & 0xf]};
      textbuf_append(out, esc, sizeof(esc));
      p++;
    } else {
      size_t n = utf8_sequence_len(p);
      if (n == 0) {
        textbuf_str(out, "\\ufffd");
        p++;
      } else {
        textbuf_append(out, (const char *)p, n);
        p += n;
      }
    }
  }
}

void log_escape_text(struct textbuf *out, const char *src, bool keep_spaces) {
  const unsigned char *p = (const unsigned char *)src;
  while (*p != '\0') {
    const unsigned char *run = p;
    while ((*p > 0x20 && *p < 0x7f && *p != '\\') || (keep_spaces && *p == ' ')) {
      p++;
    }
    textbuf_append(out, (const char *)run, (size_t)(p - run));
    if (*p == '\0') {
      break;
    }
    if (*p == '\\') {
      textbuf_str(out, "\\\\");
    } else {
      char esc[4] = {'\\', 'x', kHex[*p >> 4], kHex[*p & 0xf]};
      textbuf_append(out, esc, sizeof(esc));
    }
    p++;
  }
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
  timefmt_now(when, sizeof(when));

  struct textbuf line = {0};
  if (g_format == LOG_FORMAT_JSON) {
    textbuf_printf(&line, "{\"time\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"", when,
                   level_names[level], module);
    log_escape_json(&line, msg);
    textbuf_str(&line, "\"}\n");
  } else {
    textbuf_printf(&line, "%s %-5s %s: ", when, level_names[level], module);
    log_escape_text(&line, msg, true);
    textbuf_str(&line, "\n");
  }
  size_t len = line.len;
  char *text = textbuf_finish(&line);
  if (text == NULL) {
    return;
  }
  /* One write(2) per line keeps lines whole across threads; a short write to a full pipe
   * is not retried, as losing the tail of a log line beats blocking a worker. */
  ssize_t ignored = write(STDERR_FILENO, text, len);
  (void)ignored;
  free(text);
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
