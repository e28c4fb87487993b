/* textbuf: a growable text buffer for building documents (metrics, iptables rules).
 *
 * An allocation failure makes the buffer "failed": later appends do nothing and
 * textbuf_finish returns NULL, so a builder checks once, at the end. The text is always
 * NUL-terminated. */
#ifndef MTLSD_TEXTBUF_H
#define MTLSD_TEXTBUF_H

#include <stdbool.h>
#include <stddef.h>

struct textbuf {
  char *data;
  size_t len;
  size_t cap;
  bool failed;
};

/* textbuf_append appends |n| bytes of |s|. */
void textbuf_append(struct textbuf *b, const char *s, size_t n);

/* textbuf_str appends the string |s|. */
void textbuf_str(struct textbuf *b, const char *s);

/* textbuf_printf appends printf-formatted text. */
void textbuf_printf(struct textbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* textbuf_finish returns the text, which the caller frees with free(), or NULL when an
 * allocation failed (the buffer is then released). An empty buffer gives "". */
char *textbuf_finish(struct textbuf *b);

#endif
