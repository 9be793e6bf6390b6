#include "core/clock.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/error.h"

int64_t clock_now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

int64_t clock_monotonic_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Days from 1970-01-01 to the given civil date (proleptic Gregorian), after H. Hinnant. */
static int64_t days_from_civil(int64_t year, unsigned month, unsigned day)
{
    int64_t era;
    unsigned year_of_era;
    unsigned day_of_year;
    unsigned day_of_era;

    year -= month <= 2;
    era = (year >= 0 ? year : year - 399) / 400;
    year_of_era = (unsigned)(year - era * 400);
    day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + (int64_t)day_of_era - 719468;
}

void clock_format_iso8601(int64_t unix_ms, char out[ISO8601_MS_LEN + 1])
{
    time_t seconds = (time_t)(unix_ms / 1000);
    int millis = (int)(unix_ms % 1000);
    struct tm utc;

    if (millis < 0) {
        millis += 1000;
        seconds -= 1;
    }
    gmtime_r(&seconds, &utc);
    strftime(out, ISO8601_MS_LEN + 1, "%Y-%m-%dT%H:%M:%S", &utc);
    out[19] = '.';
    out[20] = (char)('0' + millis / 100);
    out[21] = (char)('0' + millis / 10 % 10);
    out[22] = (char)('0' + millis % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

static bool read_digits(const char **p, int count, int *value)
{
    *value = 0;
    for (int i = 0; i < count; i++) {
        if (**p < '0' || **p > '9')
            return false;
        *value = *value * 10 + (**p - '0');
        (*p)++;
    }
    return true;
}

static bool is_leap_year(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (month == 2 && is_leap_year(year))
        return 29;
    return days[month - 1];
}

int clock_parse_iso8601(const char *text, int64_t *unix_ms)
{
    const char *p = text;
    int year, month, day, hour, minute, second;
    int millis = 0;
    int offset_minutes = 0;

    if (!read_digits(&p, 4, &year) || *p++ != '-' || !read_digits(&p, 2, &month) || *p++ != '-' ||
        !read_digits(&p, 2, &day) || (*p != 'T' && *p != 't'))
        return BH_ERR_INVALID;
    p++;
    if (!read_digits(&p, 2, &hour) || *p++ != ':' || !read_digits(&p, 2, &minute) || *p++ != ':' ||
        !read_digits(&p, 2, &second))
        return BH_ERR_INVALID;

    if (*p == '.') {
        int digits = 0;

        p++;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3)
                millis = millis * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0 || digits > 9)
            return BH_ERR_INVALID;
        for (int i = digits; i < 3; i++)
            millis *= 10;
    }

    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int offset_hours, offset_mins;

        p++;
        if (!read_digits(&p, 2, &offset_hours) || *p++ != ':' ||
            !read_digits(&p, 2, &offset_mins) || offset_hours > 23 || offset_mins > 59)
            return BH_ERR_INVALID;
        offset_minutes = sign * (offset_hours * 60 + offset_mins);
    } else {
        return BH_ERR_INVALID;
    }
    if (*p != '\0')
        return BH_ERR_INVALID;

    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) ||
        hour > 23 || minute > 59 || second > 59)
        return BH_ERR_INVALID;

    *unix_ms = ((days_from_civil(year, (unsigned)month, (unsigned)day) * 86400 + hour * 3600 +
                 minute * 60 + second - (int64_t)offset_minutes * 60) *
                1000) +
               millis;
    if (*unix_ms < 0)
        return BH_ERR_INVALID;
    return BH_OK;
}
