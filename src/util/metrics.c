#include "util/metrics.h"

#include <stdatomic.h>

static _Atomic uint64_t counters[METRIC_COUNT];

static const struct {
    const char *name;
    const char *help;
} descriptions[METRIC_COUNT] = {
    [METRIC_STORE_CALLS] = {"bearhook_store_calls_total", "Store operations run."},
    [METRIC_EVENTS_ACCEPTED] = {"bearhook_events_accepted_total", "Events committed."},
    [METRIC_DELIVERIES_CREATED] = {"bearhook_deliveries_created_total",
                                   "Deliveries committed with their events."},
    [METRIC_ATTEMPTS] = {"bearhook_attempts_total", "Delivery attempts finished."},
    [METRIC_DELIVERIES_SUCCEEDED] = {"bearhook_deliveries_succeeded_total",
                                     "Deliveries that ended in a 2xx answer."},
    [METRIC_DELIVERIES_FAILED] = {"bearhook_deliveries_failed_total",
                                  "Deliveries whose every attempt failed."},
    [METRIC_DELIVERIES_PURGED] = {"bearhook_deliveries_purged_total",
                                  "Finished deliveries deleted by the retention purge."},
    [METRIC_STORE_SYNCS] = {"bearhook_store_syncs_total",
                            "Disk syncs that confirm group-committed events."},
};

void metrics_add(enum metric metric, uint64_t amount)
{
    atomic_fetch_add_explicit(&counters[metric], amount, memory_order_relaxed);
}

uint64_t metrics_get(enum metric metric)
{
    return atomic_load_explicit(&counters[metric], memory_order_relaxed);
}

void metrics_format(struct buf *out)
{
    for (int i = 0; i < METRIC_COUNT; i++) {
        buf_appendf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", descriptions[i].name,
                    descriptions[i].help, descriptions[i].name, descriptions[i].name,
                    (unsigned long long)metrics_get((enum metric)i));
    }
}
