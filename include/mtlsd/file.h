/* file: reading small files whole (configuration, certificates, keys). */
#ifndef MTLSD_FILE_H
#define MTLSD_FILE_H

#include <stddef.h>
#include <stdint.h>

/* file_read_all reads all of |path| into a new buffer of |*out_len| bytes followed by a
 * NUL (so text can be parsed in place), which the caller frees with free(); buffers that
 * held keys should be cleansed first. It reads until end of file rather than trusting
 * st_size, so a file that changes size while read is read consistently. Returns 0, or a
 * negative errno: -EFBIG when the file is larger than |max| bytes, -EISDIR for a
 * directory. */
int file_read_all(const char *path, size_t max, uint8_t **out, size_t *out_len);

#endif
