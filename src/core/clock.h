/*
 * Wall-clock and monotonic time in milliseconds, and ISO-8601 UTC timestamps.
 *
 * Stored times are Unix milliseconds (UTC). Payloads show them as "2026-02-13T10:30:00.000Z":
 * always UTC, always three fractional digits.
 */
#ifndef BEARHOOK_CORE_CLOCK_H
#define BEARHOOK_CORE_CLOCK_H

#include <stdint.h>

#define ISO8601_MS_LEN 24 /* "2026-02-13T10:30:00.000Z" without its NUL */

int64_t clock_now_ms(void);
int64_t clock_monotonic_ms(void);
/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" and a NUL into out. */
void clock_format_iso8601(int64_t unix_ms, char out[ISO8601_MS_LEN + 1]);
/*
 * Parses an ISO-8601 date-time with a zone: "Z" or "+hh:mm"/"-hh:mm", and 0 to 9 fractional
 * digits (kept to the millisecond). Returns 0, or BH_ERR_INVALID for anything else, including
 * dates that do not exist and years outside 1970-9999.
 */
int clock_parse_iso8601(const char *text, int64_t *unix_ms);

#endif
