#include "delivery/retry.h"

bool retry_allowed(int attempts_made, int max_retries)
{
    if (max_retries < 0)
        max_retries = 0;
    return attempts_made < 1 + max_retries;
}

/* Returns base * 4^(exponent), capped at max; the loop stops at the cap, so it cannot overflow. */
static int64_t capped_backoff(int64_t base, int64_t max, int exponent)
{
    int64_t delay = base < max ? base : max;

    for (int i = 0; i < exponent && delay < max; i++) {
        if (delay > max / 4) {
            delay = max;
            break;
        }
        delay *= 4;
    }
    return delay < max ? delay : max;
}

int64_t retry_delay_ms(const struct retry_policy *policy, int attempts_made, int http_status,
                       int64_t retry_after_ms, double unit_random)
{
    int64_t backoff;
    int64_t low;
    int64_t span;
    int64_t offset;

    if (retry_after_ms >= 0 && (http_status == 429 || http_status == 503)) {
        int64_t limit = policy->retry_after_max_ms > 0 ? policy->retry_after_max_ms : 0;

        return retry_after_ms < limit ? retry_after_ms : limit;
    }

    if (policy->base_ms <= 0 || policy->max_ms <= 0)
        return 0;
    if (attempts_made < 1)
        attempts_made = 1;
    backoff = capped_backoff(policy->base_ms, policy->max_ms, attempts_made - 1);

    /*
     * The jitter factor 0.8 + 0.4 * unit_random is applied in integers. low is 0.8 of the
     * backoff and span is 0.4 of it. The offset stays below span, so the wait stays below 1.2
     * times the backoff even where a double rounds up. Out-of-range unit_random is clamped.
     */
    if (!(unit_random >= 0.0))
        unit_random = 0.0;
    if (unit_random > 1.0)
        unit_random = 1.0;
    low = backoff - backoff / 5;
    span = backoff / 5 * 2;
    offset = (int64_t)((double)span * unit_random);
    if (offset >= span)
        offset = span > 0 ? span - 1 : 0;
    if (offset > INT64_MAX - low)
        return INT64_MAX;
    return low + offset;
}
