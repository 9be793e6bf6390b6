#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <math.h>

#include "delivery/retry.h"

#define SECOND_MS 1000
#define MINUTE_MS (60 * SECOND_MS)
#define HOUR_MS (60 * MINUTE_MS)

/* The documented default: 30 s base, waits capped at 6 h, Retry-After at most 1 h. */
static const struct retry_policy default_policy = {
    .base_ms = 30 * SECOND_MS,
    .max_ms = 6 * HOUR_MS,
    .retry_after_max_ms = HOUR_MS,
};

static void retry_allowed_counts_first_attempt(void **state)
{
    for (int max_retries = 1; max_retries <= 5; max_retries++) {
        for (int attempts = 0; attempts <= max_retries; attempts++)
            assert_true(retry_allowed(attempts, max_retries));
        assert_false(retry_allowed(max_retries + 1, max_retries));
        assert_false(retry_allowed(max_retries + 2, max_retries));
    }
    assert_true(retry_allowed(0, 0));
    assert_false(retry_allowed(1, 0));
    assert_false(retry_allowed(1, -3));
}

static void retry_schedule_without_jitter(void **state)
{
    /* unit_random 0.5 gives the factor 1.0: 30 s, 2 min, 8 min, 32 min, 2 h 8 min. */
    static const int64_t expected[] = {
        30 * SECOND_MS, 2 * MINUTE_MS, 8 * MINUTE_MS, 32 * MINUTE_MS, 2 * HOUR_MS + 8 * MINUTE_MS,
    };

    for (int attempt = 1; attempt <= 5; attempt++)
        assert_int_equal(retry_delay_ms(&default_policy, attempt, 500, -1, 0.5),
                         expected[attempt - 1]);
    /* Attempt 0 has not failed yet; it waits like the first. */
    assert_int_equal(retry_delay_ms(&default_policy, 0, 0, -1, 0.5), 30 * SECOND_MS);
}

static void retry_schedule_capped(void **state)
{
    struct retry_policy policy = {
        .base_ms = 30 * SECOND_MS, .max_ms = 10 * MINUTE_MS, .retry_after_max_ms = HOUR_MS};
    struct retry_policy huge = {.base_ms = 1, .max_ms = INT64_MAX, .retry_after_max_ms = 0};

    assert_int_equal(retry_delay_ms(&policy, 3, 500, -1, 0.5), 8 * MINUTE_MS);
    assert_int_equal(retry_delay_ms(&policy, 4, 500, -1, 0.5), 10 * MINUTE_MS);
    assert_int_equal(retry_delay_ms(&policy, 60, 500, -1, 0.5), 10 * MINUTE_MS);
    assert_int_equal(retry_delay_ms(&policy, INT_MAX, 500, -1, 0.5), 10 * MINUTE_MS);

    /* 4^40 does not fit in 64 bits; the cap must stop the growth before it overflows. */
    assert_int_equal(retry_delay_ms(&huge, 10, 500, -1, 0.5), 262144);
    assert_true(retry_delay_ms(&huge, 40, 500, -1, 0.5) > 0);
    assert_true(retry_delay_ms(&huge, INT_MAX, 500, -1, 0.999) > 0);

    /* A base above the cap is capped on the first retry too. */
    policy.base_ms = HOUR_MS;
    assert_int_equal(retry_delay_ms(&policy, 1, 500, -1, 0.5), 10 * MINUTE_MS);
}

static void retry_jitter_bounds(void **state)
{
    static const double randoms[] = {0.0, 0.1, 0.25, 0.5, 0.75, 0.999999};
    int64_t previous = -1;

    for (int attempt = 1; attempt <= 5; attempt++) {
        int64_t plain = retry_delay_ms(&default_policy, attempt, 500, -1, 0.5);

        for (size_t i = 0; i < sizeof(randoms) / sizeof(randoms[0]); i++) {
            int64_t delay = retry_delay_ms(&default_policy, attempt, 500, -1, randoms[i]);

            assert_true(delay >= plain * 8 / 10);
            assert_true(delay < plain * 12 / 10);
        }
        assert_int_equal(retry_delay_ms(&default_policy, attempt, 500, -1, 0.0), plain * 8 / 10);
    }

    /* The delay grows with unit_random, so the jitter actually spreads retries. */
    for (size_t i = 0; i < sizeof(randoms) / sizeof(randoms[0]); i++) {
        int64_t delay = retry_delay_ms(&default_policy, 2, 500, -1, randoms[i]);

        assert_true(delay > previous);
        previous = delay;
    }

    /* Values outside [0, 1) are clamped into the same bounds. */
    assert_int_equal(retry_delay_ms(&default_policy, 1, 500, -1, -1.0), 24 * SECOND_MS);
    assert_int_equal(retry_delay_ms(&default_policy, 1, 500, -1, NAN), 24 * SECOND_MS);
    assert_true(retry_delay_ms(&default_policy, 1, 500, -1, 7.0) < 36 * SECOND_MS);
    assert_true(retry_delay_ms(&default_policy, 1, 500, -1, 1.0) >= 35 * SECOND_MS);
}

static void retry_after_honoured_and_capped(void **state)
{
    assert_int_equal(retry_delay_ms(&default_policy, 1, 429, 5 * SECOND_MS, 0.5), 5 * SECOND_MS);
    assert_int_equal(retry_delay_ms(&default_policy, 3, 503, 90 * SECOND_MS, 0.9), 90 * SECOND_MS);
    assert_int_equal(retry_delay_ms(&default_policy, 1, 429, 0, 0.5), 0);

    /* Longer than retry_after_max: capped, whatever the backoff would be. */
    assert_int_equal(retry_delay_ms(&default_policy, 1, 429, 5 * HOUR_MS, 0.5), HOUR_MS);
    assert_int_equal(retry_delay_ms(&default_policy, 5, 503, INT64_MAX, 0.5), HOUR_MS);
}

static void retry_after_ignored_elsewhere(void **state)
{
    /* Only 429 and 503 give Retry-After its meaning; other statuses keep the backoff. */
    static const int statuses[] = {0, 500, 502, 504, 408, 400, 301};

    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        assert_int_equal(retry_delay_ms(&default_policy, 2, statuses[i], 5 * SECOND_MS, 0.5),
                         2 * MINUTE_MS);
    /* 429 without Retry-After uses the backoff. */
    assert_int_equal(retry_delay_ms(&default_policy, 2, 429, -1, 0.5), 2 * MINUTE_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(retry_allowed_counts_first_attempt),
        cmocka_unit_test(retry_schedule_without_jitter),
        cmocka_unit_test(retry_schedule_capped),
        cmocka_unit_test(retry_jitter_bounds),
        cmocka_unit_test(retry_after_honoured_and_capped),
        cmocka_unit_test(retry_after_ignored_elsewhere),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
