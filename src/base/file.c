/* file: reading files whole and replacing them atomically (see mtlsd/file.h). */
#include "mtlsd/base/file.h"

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
  switch (result) {
    case -EINVAL:
      return "not a regular file";
    case -EAGAIN:
      return "it kept changing while it was read";
    default:
      return strerror(-result);
  }
}

/* Reads |fd| from its current offset to end of file into a new NUL-terminated buffer,
 * never more than |max| + 1 bytes. Returns 0 or a negative errno. */
static int read_to_end(int fd, size_t max, uint8_t **out, size_t *out_len) {
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

/* Whether a regular file was written to between two fstat calls: a write moves mtime
 * and ctime, a truncation the size. */
static bool changed_between(const struct stat *a, const struct stat *b) {
  return a->st_size != b->st_size || a->st_mtim.tv_sec != b->st_mtim.tv_sec ||
         a->st_mtim.tv_nsec != b->st_mtim.tv_nsec || a->st_ctim.tv_sec != b->st_ctim.tv_sec ||
         a->st_ctim.tv_nsec != b->st_ctim.tv_nsec;
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
  struct stat before;
  int result = fstat(fd, &before) != 0 ? -errno : 0;
  if (result == 0 && S_ISDIR(before.st_mode)) {
    result = -EISDIR;
  } else if (result == 0 && regular_only && !S_ISREG(before.st_mode)) {
    result = -EINVAL;
  }
  /* A regular file rewritten in place while it is read yields a mix of two versions, or
   * a part of one: what was read is kept only if the file did not change meanwhile and
   * its size is what was read; otherwise it is read again. Pipes and devices have no such
   * signature and are read once. */
  for (int attempt = 1; result == 0; attempt++) {
    result = read_to_end(fd, max, out, out_len);
    if (result != 0 || !S_ISREG(before.st_mode)) {
      break;
    }
    struct stat after;
    bool whole = fstat(fd, &after) == 0 && !changed_between(&before, &after) &&
                 (off_t)*out_len == after.st_size;
    if (whole) {
      break;
    }
    free(*out);
    *out = NULL;
    if (attempt == FILE_READ_ATTEMPTS) {
      result = -EAGAIN;
    } else if (fstat(fd, &before) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
      result = -errno;
    }
  }
  close(fd);
  return result;
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
