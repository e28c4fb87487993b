/* timefmt: RFC 3339 times, written and read (see mtlsd/timefmt.h). */
#include "mtlsd/base/timefmt.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

char *timefmt_rfc3339(char *out, size_t out_len, int64_t unix_seconds) {
  time_t tt = (time_t)unix_seconds;
  struct tm tm;
  if (gmtime_r(&tt, &tm) == NULL || strftime(out, out_len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    snprintf(out, out_len, "%lld", (long long)unix_seconds);
  }
  return out;
}

char *timefmt_now(char *out, size_t out_len) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(out, out_len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, out_len - n, ".%03ldZ", ts.tv_nsec / 1000000);
  return out;
}

/* parse_digits reads exactly |n| ASCII digits. */
static bool parse_digits(const char *s, size_t n, int *out) {
  int v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') {
      return false;
    }
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

/* days_from_civil counts days from 1970-01-01 to a proleptic Gregorian date (Howard
 * Hinnant's algorithm): timegm is not in C17, and mktime would apply the local zone. */
static int64_t days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m) {
  static const int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : kDays[m - 1];
}

bool timefmt_parse_rfc3339(const char *s, int64_t *out) {
  int year, mon, day, hour, min, sec;
  size_t len = strnlen(s, 64);
  if (len < 20 || !parse_digits(s, 4, &year) || s[4] != '-' || !parse_digits(s + 5, 2, &mon) ||
      s[7] != '-' || !parse_digits(s + 8, 2, &day) ||
      (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !parse_digits(s + 11, 2, &hour) ||
      s[13] != ':' || !parse_digits(s + 14, 2, &min) || s[16] != ':' ||
      !parse_digits(s + 17, 2, &sec)) {
    return false;
  }
  if (year < 1950 || mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) ||
      hour > 23 || min > 59 || sec > 60) {
    return false;
  }
  const char *p = s + 19;
  if (*p == '.') {
    p++;
    if (*p < '0' || *p > '9') {
      return false;
    }
    while (*p >= '0' && *p <= '9') {
      p++;
    }
  }
  int64_t offset = 0;
  if ((p[0] == 'Z' || p[0] == 'z') && p[1] == '\0') {
    offset = 0;
  } else if (p[0] == '+' || p[0] == '-') {
    int oh, om;
    if (strlen(p) != 6 || !parse_digits(p + 1, 2, &oh) || p[3] != ':' ||
        !parse_digits(p + 4, 2, &om) || oh > 23 || om > 59) {
      return false;
    }
    offset = (int64_t)(oh * 3600 + om * 60) * (p[0] == '-' ? -1 : 1);
  } else {
    return false;
  }
  *out = days_from_civil(year, mon, day) * 86400 + (int64_t)hour * 3600 + (int64_t)min * 60 + sec -
         offset;
  /* A local time late on 9999-12-31 can still land past GeneralizedTime's range. */
  return *out < TIMEFMT_YEAR_10000;
}
