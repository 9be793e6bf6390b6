/*
 * Process-wide counters for GET /metrics (Prometheus text format) and the benchmarks.
 *
 * Counters only go up. metrics_add may be called from any thread; it is one relaxed atomic
 * add, cheap enough for hot paths.
 */
#ifndef BEARHOOK_UTIL_METRICS_H
#define BEARHOOK_UTIL_METRICS_H

#include <stdint.h>

#include "util/buf.h"

enum metric {
    METRIC_STORE_CALLS,          /* store_* operations run, reads and writes */
    METRIC_EVENTS_ACCEPTED,      /* events committed and responded to with 202 */
    METRIC_DELIVERIES_CREATED,   /* deliveries committed with their events */
    METRIC_ATTEMPTS,             /* delivery attempts finished, whatever the outcome */
    METRIC_DELIVERIES_SUCCEEDED, /* deliveries that ended in a 2xx */
    METRIC_DELIVERIES_FAILED,    /* deliveries that failed for good */
    METRIC_DELIVERIES_PURGED,    /* finished deliveries deleted by the retention purge */
    METRIC_STORE_SYNCS,          /* store_sync calls: disk syncs that confirm group commits */
    METRIC_COUNT
};

void metrics_add(enum metric metric, uint64_t amount);
uint64_t metrics_get(enum metric metric);
/* Appends every counter in the Prometheus text exposition format. */
void metrics_format(struct buf *out);

#endif
