/* Unit tests for file: whole-file reads that refuse, without blocking, what a hostile
 * certificate volume could hold in place of a file, and path joins that never truncate. */
#include "mtlsd/base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

static char g_dir[64];

static const char *path_in(char *buf, size_t len, const char *name) {
  CHECK(file_path_join(buf, len, g_dir, name));
  return buf;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (f != NULL) {
    fputs(text, f);
    fclose(f);
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(setup) {
  snprintf(g_dir, sizeof(g_dir), "/tmp/mtlsd-test-file-XXXXXX");
  CHECK(mkdtemp(g_dir) != NULL);
}

TEST(regular_file) {
  char path[256];
  write_file(path_in(path, sizeof(path), "a.txt"), "hello");
  uint8_t *data = NULL;
  size_t len = 0;
  CHECK_INTEQ(file_read_all(path, 1024, FILE_REGULAR_ONLY, &data, &len), 0);
  CHECK_INTEQ(len, 5);
  CHECK_STREQ((const char *)data, "hello");
  free(data);
  /* A symlink to a regular file is followed: Kubernetes volumes are made of them. */
  char link[256];
  CHECK_INTEQ(symlink(path, path_in(link, sizeof(link), "link.txt")), 0);
  CHECK_INTEQ(file_read_all(link, 1024, FILE_REGULAR_ONLY, &data, &len), 0);
  free(data);
}

TEST(fifo_is_refused_at_once) {
  char path[256];
  CHECK_INTEQ(mkfifo(path_in(path, sizeof(path), "fifo"), 0600), 0);
  uint8_t *data = NULL;
  size_t len = 0;
  double start = now_s();
  CHECK_INTEQ(file_read_all(path, 1024, FILE_REGULAR_ONLY, &data, &len), -EINVAL);
  CHECK(now_s() - start < 0.5);
  CHECK_STREQ(file_error_string(-EINVAL), "not a regular file");
}

TEST(device_and_directory_are_refused) {
  uint8_t *data = NULL;
  size_t len = 0;
  CHECK_INTEQ(file_read_all("/dev/zero", 1024, FILE_REGULAR_ONLY, &data, &len), -EINVAL);
  CHECK_INTEQ(file_read_all(g_dir, 1024, FILE_REGULAR_ONLY, &data, &len), -EISDIR);
  CHECK_INTEQ(file_read_all(g_dir, 1024, 0, &data, &len), -EISDIR);
  /* Without the flag a character device is read, up to the bound. */
  CHECK_INTEQ(file_read_all("/dev/zero", 1024, 0, &data, &len), -EFBIG);
}

TEST(size_is_bounded) {
  char path[256];
  path_in(path, sizeof(path), "big");
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0);
  CHECK_INTEQ(ftruncate(fd, 50 << 20), 0);
  close(fd);
  uint8_t *data = NULL;
  size_t len = 0;
  CHECK_INTEQ(file_read_all(path, 1 << 20, FILE_REGULAR_ONLY, &data, &len), -EFBIG);
  /* Exactly the bound is fine. */
  fd = open(path, O_WRONLY | O_TRUNC);
  CHECK(fd >= 0);
  CHECK_INTEQ(ftruncate(fd, 4096), 0);
  close(fd);
  CHECK_INTEQ(file_read_all(path, 4096, FILE_REGULAR_ONLY, &data, &len), 0);
  CHECK_INTEQ(len, 4096);
  free(data);
}

TEST(missing_file) {
  uint8_t *data = NULL;
  size_t len = 0;
  CHECK_INTEQ(file_read_all("/nonexistent/x", 1024, FILE_REGULAR_ONLY, &data, &len), -ENOENT);
}

TEST(path_join) {
  char out[8];
  CHECK(file_path_join(out, sizeof(out), "ab", "cd"));
  CHECK_STREQ(out, "ab/cd");
  CHECK(file_path_join(out, sizeof(out), "abc", "def")); /* 7 bytes and the NUL. */
  CHECK(!file_path_join(out, sizeof(out), "abcd", "efg"));
}

TEST(teardown) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
  CHECK_INTEQ(system(cmd), 0);
}

TEST_MAIN(TEST_ENTRY(setup), TEST_ENTRY(regular_file), TEST_ENTRY(fifo_is_refused_at_once),
          TEST_ENTRY(device_and_directory_are_refused), TEST_ENTRY(size_is_bounded),
          TEST_ENTRY(missing_file), TEST_ENTRY(path_join), TEST_ENTRY(teardown))
