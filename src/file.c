/* file: reading files whole and replacing them atomically (see mtlsd/file.h). */
#include "mtlsd/file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool file_path_join(char *out, size_t out_len, const char *dir, const char *name) {
  int n = snprintf(out, out_len, "%s/%s", dir, name);
  return n > 0 && (size_t)n < out_len;
}

const char *file_error_string(int result) {
  return result == -EINVAL ? "not a regular file" : strerror(-result);
}

int file_read_all(const char *path, size_t max, unsigned flags, uint8_t **out, size_t *out_len) {
  bool regular_only = (flags & FILE_REGULAR_ONLY) != 0;
  /* O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; it is
   * left out otherwise, so that a configuration can still be read from a pipe. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | (regular_only ? O_NONBLOCK : 0));
  if (fd < 0) {
    int e = errno;
    /* A sandbox that does not let the process open what the name leads to (a device, a
     * file elsewhere) says only "permission denied"; what it is says more. */
    struct stat named;
    if (e == EACCES && regular_only && stat(path, &named) == 0 && !S_ISREG(named.st_mode)) {
      return S_ISDIR(named.st_mode) ? -EISDIR : -EINVAL;
    }
    return -e;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return -EISDIR;
  }
  if (regular_only && !S_ISREG(st.st_mode)) {
    close(fd);
    return -EINVAL;
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

int file_write_atomic(const char *dir, const char *name, const uint8_t *data, size_t len,
                      mode_t mode, const char **failed_step) {
  char path[PATH_MAX], tmp[PATH_MAX];
  *failed_step = "path";
  if (!file_path_join(path, sizeof(path), dir, name) ||
      snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, name) >= (int)sizeof(tmp)) {
    return -ENAMETOOLONG;
  }
  *failed_step = "create";
  int fd = mkstemp(tmp); /* Created 0600. */
  if (fd < 0) {
    return -errno;
  }
  *failed_step = "chmod";
  if (fchmod(fd, mode) != 0) {
    goto err;
  }
  *failed_step = "write";
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      goto err;
    }
    done += (size_t)n;
  }
  *failed_step = "fsync";
  if (fsync(fd) != 0) {
    goto err;
  }
  *failed_step = "close";
  int rc = close(fd);
  fd = -1;
  if (rc != 0) {
    goto err;
  }
  *failed_step = "rename";
  if (rename(tmp, path) != 0) {
    goto err;
  }
  /* Make the rename itself durable; a failure here loses nothing already written. */
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  *failed_step = NULL;
  return 0;

err:;
  int saved_errno = errno;
  if (fd >= 0) {
    close(fd);
  }
  unlink(tmp);
  return -saved_errno;
}
