/* duration: the spans of time that the configuration and the command line write as
 * "250ms", "15s", "5m" or "1h", held in milliseconds. Pure functions, no allocation:
 * the caller owns every buffer. */
#ifndef MTLSD_DURATION_H
#define MTLSD_DURATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Durations are kept in milliseconds. */
typedef uint64_t duration_ms;

#define DURATION_SECOND ((duration_ms)1000)
#define DURATION_MINUTE ((duration_ms)60 * 1000)
#define DURATION_HOUR ((duration_ms)60 * 60 * 1000)

/* duration_parse parses "250ms", "15s", "5m", "1h" into |*out|: decimal digits, an
 * optional fraction ("1.5s") that must come to a whole number of milliseconds, and a unit
 * among ms, s, m and h. No sign, no spaces. Zero parses ("0s"); the configuration itself
 * refuses it. On anything else, on overflow or on a NULL |text| it returns false, leaves
 * |*out| untouched and, when |problem| is not NULL, sets |*problem| to a static message
 * ("duration too large", ...). */
bool duration_parse(duration_ms *out, const char **problem, const char *text);

/* duration_format writes |ms| in the largest unit that divides it exactly ("1500ms",
 * "15s", "1h"), the form duration_parse reads back. */
void duration_format(char *out, size_t out_len, duration_ms ms);

#endif
