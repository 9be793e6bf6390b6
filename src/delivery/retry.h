/*
 * The retry schedule: exponential backoff with jitter, and Retry-After within bounds.
 *
 * After failed attempt n (1 for the first), the next attempt waits base * 4^(n-1), capped at
 * max, then multiplied by a jitter factor in [0.8, 1.2) so that many deliveries that failed
 * together do not retry together. With the default base of 30 s: about 30 s, 2 min, 8 min,
 * 32 min and 2 h 8 min. A 429 or 503 response with Retry-After waits what it asks instead,
 * at most retry_after_max.
 *
 * Pure functions; the caller supplies the random number, so tests are repeatable.
 */
#ifndef BEARHOOK_DELIVERY_RETRY_H
#define BEARHOOK_DELIVERY_RETRY_H

#include <stdbool.h>
#include <stdint.h>

struct retry_policy {
    int64_t base_ms;
    int64_t max_ms;
    int64_t retry_after_max_ms;
};

/* True when a delivery that has made attempts_made attempts may make another. */
bool retry_allowed(int attempts_made, int max_retries);
/*
 * Returns the wait in milliseconds before the next attempt, after attempts_made failed
 * attempts. retry_after_ms is the server's Retry-After in milliseconds, or -1 for none; it
 * counts only with http_status 429 or 503. unit_random is uniform in [0, 1).
 */
int64_t retry_delay_ms(const struct retry_policy *policy, int attempts_made, int http_status,
                       int64_t retry_after_ms, double unit_random);

#endif
