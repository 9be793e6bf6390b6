/*
 * ISO-8601 formatting and parsing. Expected Unix times come from GNU date, for example
 * `date -u -d 2024-02-29T12:34:56Z +%s`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/error.h"

/* 2026-02-13T10:30:00Z, the documented example payload's timestamp, in Unix milliseconds. */
#define EXAMPLE_MS INT64_C(1770978600000)

static void check_format(int64_t unix_ms, const char *expected)
{
    char text[ISO8601_MS_LEN + 1];

    memset(text, 'x', sizeof(text));
    clock_format_iso8601(unix_ms, text);
    assert_string_equal(text, expected);
    assert_int_equal(strlen(text), ISO8601_MS_LEN);
}

static void check_parse(const char *text, int64_t expected)
{
    int64_t unix_ms = -1;
    int status = clock_parse_iso8601(text, &unix_ms);

    if (status != BH_OK)
        fail_msg("\"%s\" was rejected", text);
    if (unix_ms != expected)
        fail_msg("\"%s\" parsed as %lld, expected %lld", text, (long long)unix_ms,
                 (long long)expected);
}

static void check_rejected(const char *text)
{
    int64_t unix_ms = 0;
    int status = clock_parse_iso8601(text, &unix_ms);

    if (status != BH_ERR_INVALID)
        fail_msg("\"%s\" returned %d, expected BH_ERR_INVALID", text, status);
}

static void clock_format_epoch(void **state)
{
    check_format(0, "1970-01-01T00:00:00.000Z");
}

static void clock_format_millis(void **state)
{
    check_format(EXAMPLE_MS, "2026-02-13T10:30:00.000Z");
    check_format(EXAMPLE_MS + 123, "2026-02-13T10:30:00.123Z");
    check_format(1, "1970-01-01T00:00:00.001Z");
    check_format(999, "1970-01-01T00:00:00.999Z");
    check_format(1000, "1970-01-01T00:00:01.000Z");
    check_format(INT64_C(946684799999), "1999-12-31T23:59:59.999Z");
}

static void clock_format_leap_day(void **state)
{
    check_format(INT64_C(1709210096789), "2024-02-29T12:34:56.789Z");
    check_format(INT64_C(951782400000), "2000-02-29T00:00:00.000Z");
    check_format(INT64_C(4107542400000), "2100-03-01T00:00:00.000Z");
}

static void clock_format_max_year(void **state)
{
    check_format(INT64_C(253402300799999), "9999-12-31T23:59:59.999Z");
}

static void clock_parse_utc(void **state)
{
    check_parse("2026-02-13T10:30:00Z", EXAMPLE_MS);
    check_parse("2026-02-13T10:30:00.000Z", EXAMPLE_MS);
    check_parse("1970-01-01T00:00:00Z", 0);
    check_parse("2024-02-29T12:34:56.789Z", INT64_C(1709210096789));
    check_parse("2000-02-29T00:00:00Z", INT64_C(951782400000));
    check_parse("9999-12-31T23:59:59.999Z", INT64_C(253402300799999));
}

static void clock_parse_offsets(void **state)
{
    check_parse("2026-02-13T11:30:00+01:00", EXAMPLE_MS);
    check_parse("2026-02-13T05:00:00-05:30", EXAMPLE_MS);
    check_parse("2026-02-13T10:30:00+00:00", EXAMPLE_MS);
    check_parse("2026-02-13T10:30:00-00:00", EXAMPLE_MS);
    check_parse("2026-02-14T00:29:00+13:59", EXAMPLE_MS);
    /* The offset moves the instant across a day, a month and a year. */
    check_parse("2000-01-01T00:59:59+01:00", INT64_C(946684799000));
    check_parse("2024-02-28T23:34:56-13:00", INT64_C(1709210096000));
}

static void clock_parse_fractions(void **state)
{
    check_parse("2026-02-13T10:30:00Z", EXAMPLE_MS);
    check_parse("2026-02-13T10:30:00.5Z", EXAMPLE_MS + 500);
    check_parse("2026-02-13T10:30:00.12Z", EXAMPLE_MS + 120);
    check_parse("2026-02-13T10:30:00.123Z", EXAMPLE_MS + 123);
    check_parse("2026-02-13T10:30:00.123456789Z", EXAMPLE_MS + 123);
    /* Digits past the millisecond are dropped, not rounded. */
    check_parse("2026-02-13T10:30:00.999999999Z", EXAMPLE_MS + 999);
    check_parse("2026-02-13T11:30:00.250+01:00", EXAMPLE_MS + 250);
    check_rejected("2026-02-13T10:30:00.1234567890Z");
    check_rejected("2026-02-13T10:30:00.Z");
}

static void clock_parse_invalid_dates(void **state)
{
    check_rejected("2026-02-30T10:30:00Z");
    check_rejected("2026-02-29T10:30:00Z");
    check_rejected("2100-02-29T10:30:00Z");
    check_rejected("2026-04-31T10:30:00Z");
    check_rejected("2026-13-01T10:30:00Z");
    check_rejected("2026-00-10T10:30:00Z");
    check_rejected("2026-01-00T10:30:00Z");
    check_rejected("2026-01-32T10:30:00Z");
}

static void clock_parse_invalid_times(void **state)
{
    check_rejected("2026-02-13T24:00:00Z");
    check_rejected("2026-02-13T23:60:00Z");
    check_rejected("2026-02-13T23:59:60Z");
    check_rejected("2026-02-13T10:30:00+24:00");
    check_rejected("2026-02-13T10:30:00+01:60");
}

static void clock_parse_missing_zone(void **state)
{
    check_rejected("2026-02-13T10:30:00");
    check_rejected("2026-02-13T10:30:00.000");
    check_rejected("2026-02-13");
    check_rejected("2026-02-13T10:30");
}

static void clock_parse_trailing_junk(void **state)
{
    check_rejected("2026-02-13T10:30:00Z ");
    check_rejected("2026-02-13T10:30:00Zx");
    check_rejected("2026-02-13T10:30:00ZZ");
    check_rejected("2026-02-13T10:30:00+01:00x");
    check_rejected("2026-02-13T10:30:00+01:00:00");
}

static void clock_parse_malformed(void **state)
{
    check_rejected("");
    check_rejected("2026-2-13T10:30:00Z");
    check_rejected("2026-02-13 10:30:00Z");
    check_rejected("2026/02/13T10:30:00Z");
    check_rejected("2026-02-13T10:30:00+0100");
    check_rejected("2026-02-13T10:30:00+01");
    check_rejected(" 2026-02-13T10:30:00Z");
    check_rejected("1770978600000");
}

static void clock_parse_before_1970(void **state)
{
    check_rejected("1969-12-31T23:59:59Z");
    check_rejected("1969-12-31T23:59:59.999Z");
    check_rejected("0001-01-01T00:00:00Z");
    /* 1970 in local time but 1969 in UTC. */
    check_rejected("1970-01-01T00:30:00+01:00");
    /* 1969 in local time but 1970 in UTC, rejected because the year as written is checked. */
    check_rejected("1969-12-31T23:00:00-01:00");
}

static void clock_round_trip(void **state)
{
    static const int64_t values[] = {
        0,
        1,
        999,
        INT64_C(951782400000),
        INT64_C(1709210096789),
        EXAMPLE_MS + 7,
        INT64_C(4107542400000),
        INT64_C(253402300799999),
    };

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char text[ISO8601_MS_LEN + 1];
        int64_t parsed = -1;

        clock_format_iso8601(values[i], text);
        assert_int_equal(clock_parse_iso8601(text, &parsed), BH_OK);
        assert_int_equal(parsed, values[i]);
    }
}

static void clock_now_is_wall_time(void **state)
{
    int64_t before = (int64_t)time(NULL) * 1000;
    int64_t now = clock_now_ms();
    int64_t after = (int64_t)time(NULL) * 1000 + 1000;

    assert_true(now >= before);
    assert_true(now < after);
}

static void clock_monotonic_advances(void **state)
{
    int64_t first = clock_monotonic_ms();
    struct timespec pause = {0, 20 * 1000 * 1000};
    int64_t second;

    nanosleep(&pause, NULL);
    second = clock_monotonic_ms();
    assert_true(second >= first + 20);
    assert_true(second < first + 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clock_format_epoch),        cmocka_unit_test(clock_format_millis),
        cmocka_unit_test(clock_format_leap_day),     cmocka_unit_test(clock_format_max_year),
        cmocka_unit_test(clock_parse_utc),           cmocka_unit_test(clock_parse_offsets),
        cmocka_unit_test(clock_parse_fractions),     cmocka_unit_test(clock_parse_invalid_dates),
        cmocka_unit_test(clock_parse_invalid_times), cmocka_unit_test(clock_parse_missing_zone),
        cmocka_unit_test(clock_parse_trailing_junk), cmocka_unit_test(clock_parse_malformed),
        cmocka_unit_test(clock_parse_before_1970),   cmocka_unit_test(clock_round_trip),
        cmocka_unit_test(clock_now_is_wall_time),    cmocka_unit_test(clock_monotonic_advances),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
