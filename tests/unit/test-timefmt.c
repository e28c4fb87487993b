/* RFC 3339: writing, reading, and the round trip between them. */
#include "mtlsd/base/timefmt.h"

#include "test.h"

TEST(writes_utc) {
  char buf[32];
  CHECK_STREQ(timefmt_rfc3339(buf, sizeof(buf), 0), "1970-01-01T00:00:00Z");
  CHECK_STREQ(timefmt_rfc3339(buf, sizeof(buf), 1795770000), "2026-11-27T09:00:00Z");
  char now[32];
  timefmt_now(now, sizeof(now));
  CHECK(strlen(now) == 24 && now[19] == '.' && now[23] == 'Z');
}

TEST(reads_what_it_writes_and_offsets) {
  static const struct {
    const char *text;
    int64_t want;
  } cases[] = {
      {"2026-11-27T09:00:00Z", 1795770000},
      {"2026-11-27t09:00:00z", 1795770000},
      {"2026-11-27 09:00:00Z", 1795770000},
      {"2026-11-27T10:30:00+01:30", 1795770000},
      {"2026-11-27T08:00:00-01:00", 1795770000},
      {"2026-11-27T09:00:00.999Z", 1795770000},
      {"2024-02-29T00:00:00Z", 1709164800},
      {"1950-01-01T00:00:00Z", -631152000},
      {"9999-12-31T23:59:59Z", TIMEFMT_YEAR_10000 - 1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int64_t got = 0;
    CHECK(timefmt_parse_rfc3339(cases[i].text, &got));
    CHECK_INTEQ(got, cases[i].want);
  }
  char buf[32];
  int64_t back = 0;
  CHECK(timefmt_parse_rfc3339(timefmt_rfc3339(buf, sizeof(buf), 1234567890), &back));
  CHECK_INTEQ(back, 1234567890);
}

TEST(refuses_what_is_not_rfc3339) {
  static const char *const bad[] = {
      "",
      "2026-11-27",
      "2026-11-27T09:00:00",       /* no zone */
      "2026-11-27T09:00:00+0100",  /* offset without a colon */
      "2026-13-01T00:00:00Z",      /* month */
      "2025-02-29T00:00:00Z",      /* not a leap year */
      "2026-11-27T24:00:00Z",      /* hour */
      "2026-11-27T09:00:00.Z",     /* empty fraction */
      "1949-12-31T23:59:59Z",      /* before UTCTime */
      "9999-12-31T23:59:59-01:00", /* past GeneralizedTime */
      "2026-11-27T09:00:00Zjunk",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int64_t got;
    if (timefmt_parse_rfc3339(bad[i], &got)) {
      fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
      test_failed_checks++;
    }
  }
}

TEST_MAIN(TEST_ENTRY(writes_utc), TEST_ENTRY(reads_what_it_writes_and_offsets),
          TEST_ENTRY(refuses_what_is_not_rfc3339))
