/* duration: "250ms", "1.5s", "5m", "1h" to milliseconds and back (see mtlsd/duration.h). */
#include "mtlsd/base/duration.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* parse_duration is duration_parse with the reason as its result: NULL on success, else a
 * static message. A fraction is accepted when it comes to a whole number of milliseconds
 * ("1.5s", "0.25s"), as Go's and Envoy's operators are used to writing them. */
static const char *parse_duration(duration_ms *out, const char *text) {
  static const char kInvalid[] =
      "invalid duration (expected a number and a unit: ms, s, m or h, e.g. \"250ms\", "
      "\"1.5s\", \"1h\")";
  const char *p = text;
  if (!is_digit(*p)) {
    return kInvalid;
  }
  uint64_t whole = 0;
  bool overflow = false;
  for (; is_digit(*p); p++) {
    unsigned digit = (unsigned)(*p - '0');
    if (whole > (UINT64_MAX - digit) / 10) {
      overflow = true;
    } else {
      whole = whole * 10 + digit;
    }
  }
  /* Nine fraction digits are more than any unit needs: an hour has 3.6e6 ms, so a
   * fraction with six or more significant digits can never be a whole number of ms. */
  uint64_t frac = 0;
  uint64_t frac_div = 1;
  bool inexact = false;
  if (*p == '.') {
    p++;
    if (!is_digit(*p)) {
      return kInvalid;
    }
    for (; is_digit(*p); p++) {
      if (frac_div < 1000000000) {
        frac = frac * 10 + (uint64_t)(*p - '0');
        frac_div *= 10;
      } else if (*p != '0') {
        inexact = true;
      }
    }
  }
  duration_ms unit;
  if (strcmp(p, "ms") == 0) {
    unit = 1;
  } else if (strcmp(p, "s") == 0) {
    unit = DURATION_SECOND;
  } else if (strcmp(p, "m") == 0) {
    unit = DURATION_MINUTE;
  } else if (strcmp(p, "h") == 0) {
    unit = DURATION_HOUR;
  } else {
    return kInvalid;
  }
  if (inexact || (frac * unit) % frac_div != 0) {
    return "not a whole number of milliseconds";
  }
  uint64_t frac_ms = frac * unit / frac_div;
  if (overflow || whole > (UINT64_MAX - frac_ms) / unit) {
    return "duration too large";
  }
  *out = whole * unit + frac_ms;
  return NULL;
}

bool duration_parse(duration_ms *out, const char **problem, const char *text) {
  const char *why = text != NULL ? parse_duration(out, text) : "no duration";
  if (why != NULL && problem != NULL) {
    *problem = why;
  }
  return why == NULL;
}

/* The largest unit that divides |ms| exactly, so that config_to_json's output reads as a
 * person would write it and parses back the same. */
void duration_format(char *out, size_t out_len, duration_ms ms) {
  if (ms != 0 && ms % DURATION_HOUR == 0) {
    (void)snprintf(out, out_len, "%" PRIu64 "h", ms / DURATION_HOUR);
  } else if (ms != 0 && ms % DURATION_MINUTE == 0) {
    (void)snprintf(out, out_len, "%" PRIu64 "m", ms / DURATION_MINUTE);
  } else if (ms != 0 && ms % DURATION_SECOND == 0) {
    (void)snprintf(out, out_len, "%" PRIu64 "s", ms / DURATION_SECOND);
  } else {
    (void)snprintf(out, out_len, "%" PRIu64 "ms", ms);
  }
}
