/* file: reading small files whole (see mtlsd/file.h). */
#include "mtlsd/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int file_read_all(const char *path, size_t max, uint8_t **out, size_t *out_len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return -errno;
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    return -EISDIR;
  }
  uint8_t *buf = NULL;
  size_t len = 0;
  size_t cap = 0;
  int result = 0;
  for (;;) {
    if (len == cap) {
      if (cap > max) {
        result = -EFBIG;
        break;
      }
      size_t new_cap = cap == 0 ? 4096 : cap * 2;
      /* One byte more than |max| tells a file of exactly |max| bytes from a larger one. */
      if (new_cap > max + 1) {
        new_cap = max + 1;
      }
      uint8_t *grown = realloc(buf, new_cap + 1);
      if (grown == NULL) {
        result = -ENOMEM;
        break;
      }
      buf = grown;
      cap = new_cap;
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      result = -errno;
      break;
    }
    if (n == 0) {
      break;
    }
    len += (size_t)n;
  }
  close(fd);
  if (result == 0 && len > max) {
    result = -EFBIG;
  }
  if (result != 0) {
    free(buf);
    return result;
  }
  if (buf == NULL) {
    buf = malloc(1);
    if (buf == NULL) {
      return -ENOMEM;
    }
  }
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  return 0;
}
