/* file: reading small files whole (configuration, certificates, keys) and replacing
 * them atomically. */
#ifndef MTLSD_FILE_H
#define MTLSD_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Flags of file_read_all. */
enum {
  /* Refuse anything but a regular file (after following symlinks), without blocking: a
   * FIFO, a device or a socket planted in a shared volume must never stall the caller's
   * loop. Certificate files are read this way; a configuration may come from a pipe. */
  FILE_REGULAR_ONLY = 1 << 0,
};

/* How often file_read_all reads a regular file that keeps changing under it. */
enum { FILE_READ_ATTEMPTS = 5 };

/* file_read_all reads all of |path| into a new buffer of |*out_len| bytes followed by a
 * NUL (so text can be parsed in place), which the caller frees with free(); buffers that
 * held keys should be cleansed first. It reads until end of file rather than trusting
 * st_size, and it never reads more than |max| + 1 bytes. A regular file written to while
 * it is read (its size, mtime or ctime moved, or its size is not what was read) is a torn
 * read and is read again, up to FILE_READ_ATTEMPTS times. Returns 0, or a negative errno:
 * -EFBIG when the file is larger than |max| bytes, -EISDIR for a directory, -EAGAIN when
 * it kept changing, and with FILE_REGULAR_ONLY -EINVAL for any other file that is not a
 * regular one. */
int file_read_all(const char *path, size_t max, unsigned flags, uint8_t **out, size_t *out_len);

/* file_error_string describes a negative result of file_read_all for a message ("not a
 * regular file" for -EINVAL, strerror otherwise. */
const char *file_error_string(int result);

/* file_path_join writes "|dir|/|name|" into |out| (|out_len| bytes); returns false, with
 * |out| unusable, when it does not fit. */
bool file_path_join(char *out, size_t out_len, const char *dir, const char *name);

/* file_write_atomic replaces |dir|/|name| with the |len| bytes of |data|: they go to a
 * temporary file in the same directory, created with |mode| from the start (a key is
 * never readable by others, not even briefly), synced, then renamed over the old file,
 * so a reader sees the old file or the new one and never a part. Returns 0, or a
 * negative errno with |*failed_step| naming the step that failed ("create", "write",
 * "rename", ...). */
int file_write_atomic(const char *dir, const char *name, const uint8_t *data, size_t len,
                      mode_t mode, const char **failed_step);

#endif
