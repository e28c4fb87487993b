/* A small unit-test runner in the spirit of libuv's test/: each tests/unit/test-<topic>.c
 * defines TEST(name) functions and lists them in TEST_LIST; the runner runs each in turn
 * (or only the one named on the command line), keeps going after a failure, and ends with
 * the line "N passed, N failed" that ctest's output and CI read.
 *
 * Tests may #include the module's .c file to reach its static functions (as h2o's
 * t/00unit does), so the module's API need not widen for testing. */
#ifndef MTLSD_TEST_H
#define MTLSD_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int test_failed_checks;

#define TEST(name) static void test_##name(void)

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      test_failed_checks++;                                                      \
    }                                                                            \
  } while (0)

#define CHECK_STREQ(got, want)                                                               \
  do {                                                                                       \
    const char *got_ = (got), *want_ = (want);                                               \
    if (got_ == NULL || want_ == NULL ? got_ != want_ : strcmp(got_, want_) != 0) {          \
      fprintf(stderr, "  %s:%d: %s\n    got:  %s\n    want: %s\n", __FILE__, __LINE__, #got, \
              got_ ? got_ : "(null)", want_ ? want_ : "(null)");                             \
      test_failed_checks++;                                                                  \
    }                                                                                        \
  } while (0)

#define CHECK_INTEQ(got, want)                                                                    \
  do {                                                                                            \
    long long got_ = (long long)(got), want_ = (long long)(want);                                 \
    if (got_ != want_) {                                                                          \
      fprintf(stderr, "  %s:%d: %s == %lld, want %lld\n", __FILE__, __LINE__, #got, got_, want_); \
      test_failed_checks++;                                                                       \
    }                                                                                             \
  } while (0)

struct test_entry {
  const char *name;
  void (*fn)(void);
};

#define TEST_ENTRY(name) \
  { #name, test_##name }

int test_run(const struct test_entry *tests, size_t count, int argc, char **argv);

#define TEST_MAIN(...)                                                                \
  int test_failed_checks;                                                             \
  int main(int argc, char **argv) {                                                   \
    static const struct test_entry tests[] = {__VA_ARGS__};                           \
    return test_run(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);             \
  }                                                                                   \
  int test_run(const struct test_entry *tests, size_t count, int argc, char **argv) { \
    int passed = 0, failed = 0;                                                       \
    for (size_t i = 0; i < count; i++) {                                              \
      if (argc > 1 && strcmp(argv[1], tests[i].name) != 0) {                          \
        continue;                                                                     \
      }                                                                               \
      int before = test_failed_checks;                                                \
      tests[i].fn();                                                                  \
      if (test_failed_checks == before) {                                             \
        passed++;                                                                     \
        printf("ok      %s\n", tests[i].name);                                        \
      } else {                                                                        \
        failed++;                                                                     \
        printf("FAILED  %s\n", tests[i].name);                                        \
      }                                                                               \
    }                                                                                 \
    printf("%d passed, %d failed\n", passed, failed);                                 \
    return failed == 0 && passed > 0 ? 0 : 1;                                         \
  }

#endif
