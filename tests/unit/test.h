/* A small unit-test runner in the spirit of libuv's test/: each tests/unit/test-<topic>.c
 * defines TEST(name) functions and lists them in TEST_MAIN; the runner runs each in turn
 * (or only the one named on the command line) with a timeout, keeps going after a
 * failure, and ends with the line "N passed, N failed" that ctest's output and CI read.
 *
 * Tests may #include the module's .c file to reach its static functions (as h2o's
 * t/00unit does), so the module's API need not widen for testing. */
#ifndef MTLSD_TEST_H
#define MTLSD_TEST_H

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Each test gets this long before the runner gives up on it (libuv's test runner does
 * the same), so that a hang names its test instead of running into ctest's timeout. */
#define TEST_TIMEOUT_S 20

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
  static const char *test_current;                                                    \
  static void test_on_alarm(int sig) {                                                \
    (void)sig;                                                                        \
    static const char kMsg[] = "TIMEOUT: a test ran longer than its limit\n";         \
    (void)write(2, kMsg, sizeof(kMsg) - 1);                                           \
    (void)write(2, test_current, strlen(test_current));                               \
    _exit(1);                                                                         \
  }                                                                                   \
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
      test_current = tests[i].name;                                                   \
      signal(SIGALRM, test_on_alarm);                                                 \
      alarm(TEST_TIMEOUT_S);                                                          \
      tests[i].fn();                                                                  \
      alarm(0);                                                                       \
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
