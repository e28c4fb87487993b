/* textbuf: a growable text buffer (see mtlsd/textbuf.h). */
#include "mtlsd/base/textbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void reserve(struct textbuf *b, size_t more) {
  if (b->failed || b->len + more < b->cap) {
    return;
  }
  size_t cap = b->cap > 0 ? b->cap : 4096;
  while (b->len + more >= cap) {
    cap *= 2;
  }
  char *data = realloc(b->data, cap);
  if (data == NULL) {
    b->failed = true;
    return;
  }
  b->data = data;
  b->cap = cap;
}

void textbuf_append(struct textbuf *b, const char *s, size_t n) {
  reserve(b, n + 1);
  if (b->failed) {
    return;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void textbuf_str(struct textbuf *b, const char *s) {
  textbuf_append(b, s, strlen(s));
}

void textbuf_printf(struct textbuf *b, const char *fmt, ...) {
  char small[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->failed = true;
    return;
  }
  if ((size_t)n < sizeof(small)) {
    textbuf_append(b, small, (size_t)n);
    return;
  }
  reserve(b, (size_t)n + 1);
  if (b->failed) {
    return;
  }
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

char *textbuf_finish(struct textbuf *b) {
  if (b->failed) {
    free(b->data);
    return NULL;
  }
  if (b->data == NULL) {
    return calloc(1, 1);
  }
  return b->data;
}
