/* timefmt: the one time format of mtlsd, RFC 3339 in UTC ("2026-11-27T09:00:00Z"), for
 * /certs, /server_info, logs, the access log and `mtlsd cert`, and its parser for the
 * times an operator gives `mtlsd cert`. Pure functions of libc. */
#ifndef MTLSD_TIMEFMT_H
#define MTLSD_TIMEFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 10000-01-01T00:00:00Z: the first second that X.509's GeneralizedTime cannot hold. */
#define TIMEFMT_YEAR_10000 INT64_C(253402300800)

/* timefmt_rfc3339 writes |unix_seconds| as "2026-11-27T09:00:00Z" into |out| (at least
 * 21 bytes) and returns |out|. */
char *timefmt_rfc3339(char *out, size_t out_len, int64_t unix_seconds);

/* timefmt_now writes the current time with milliseconds, "2026-11-27T09:00:00.123Z",
 * into |out| (at least 25 bytes) and returns |out|. */
char *timefmt_now(char *out, size_t out_len);

/* timefmt_parse_rfc3339 parses "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" into
 * seconds since the epoch. Fractions are dropped, as certificates count whole seconds.
 * Years run from 1950, where X.509's UTCTime starts, to 9999, where GeneralizedTime
 * ends. Returns false, leaving |*out| unspecified, on anything else. */
bool timefmt_parse_rfc3339(const char *s, int64_t *out);

#endif
