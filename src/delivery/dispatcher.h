/*
 * The dispatcher: a transfer thread that runs attempts concurrently on the libcurl multi
 * interface, with keep-alive connection reuse, and a store thread that claims due deliveries
 * and records the attempts.
 *
 * Each attempt sends the stored body byte for byte, signs it with the integration's current
 * secret and a fresh timestamp, and ends within the integration's timeoutMs. Redirects are
 * not followed. Any 2xx is a success; anything else is retried on the retry schedule until
 * 1 + maxRetries attempts have failed.
 *
 * No integration runs more than max_in_flight_per_endpoint attempts at once, so a receiver
 * that hangs until its timeout keeps at most that many attempts waiting, and the other
 * integrations keep the remaining slots. Finished attempts are recorded in batches, one
 * transaction each, and a slot frees only once its attempt is recorded. A crash therefore
 * resends at most max_in_flight attempts.
 *
 * The store thread opens its own store connection, whose commits skip the disk sync (see
 * store_set_sync_commits). dispatcher_notify may be called from any thread to say that new
 * work was committed. dispatcher_stop stops claiming, records the attempts that finished,
 * abandons attempts in flight (their leases expire and the work is claimed again) and joins.
 *
 * Calling order: dispatcher_start, any number of dispatcher_notify from any thread, then one
 * dispatcher_stop, after which no thread may call dispatcher_notify on it.
 */
#ifndef BEARHOOK_DELIVERY_DISPATCHER_H
#define BEARHOOK_DELIVERY_DISPATCHER_H

#include <stdint.h>

#include <stdbool.h>

#include "core/error.h"
#include "core/url.h"
#include "delivery/retry.h"

struct dispatcher_options {
    const char *store_location;
    int max_in_flight;              /* attempts running at once, at least 1 */
    int max_in_flight_per_endpoint; /* per integration; 0 means max_in_flight */
    struct retry_policy retry;
    const struct target_policy *targets; /* required; must outlive the dispatcher */
    const char *ca_file;                 /* extra CA bundle for HTTPS targets, or NULL */
    int64_t lease_margin_ms;             /* lease = TIMEOUT_MS_MAX + this margin */
};

struct dispatcher;

/*
 * Opens a store connection at options->store_location and starts the dispatcher's threads.
 * The strings in options are copied. Returns NULL and fills err with BH_ERR_INVALID for
 * max_in_flight < 1, max_in_flight_per_endpoint < 0 or no target policy, with the store's error
 * when the store does not open, and with BH_ERR_INTERNAL when libcurl or a thread cannot be
 * started.
 */
struct dispatcher *dispatcher_start(const struct dispatcher_options *options, struct bh_error *err);
/* Wakes the dispatcher to claim due deliveries at once; safe from any thread. */
void dispatcher_notify(struct dispatcher *dispatcher);
/*
 * Records that an integration's signing settings changed (a rotated secret, signing turned on
 * or off), so that jobs claimed before the change, and still waiting to start, sign with the
 * new settings. secret is NULL when signing is off. Call after the change is committed; any
 * thread. Only this process's dispatcher learns of it: a dispatcher in another process reads
 * the new settings with its next claim.
 */
void dispatcher_signing_changed(struct dispatcher *dispatcher, const char *integration_id,
                                bool signing, const char *secret);
/*
 * Other writes that share the store thread's transactions, so that one connection writes all
 * of a process's hot rows: its pages stay in that connection's cache, and the writes take no
 * turns with another connection's. The ingest of events uses it when the process delivers too.
 *
 * When woken, the store thread calls take, which returns the rider's waiting work or NULL.
 * With work, it begins a transaction, calls run, which writes that work and returns 1 when it
 * wrote deliveries, 0 when it wrote none, or the store error that must undo the transaction.
 * Then it adds its own results and claims, which see those deliveries, and commits.
 * Then it calls finish, saying whether the commit happened. finish may use the connection
 * (outside any transaction) to confirm the commit or redo the work, and it ends the rider's use
 * of the work. Claimed attempts start only after finish returns. All three run on the store
 * thread, one call at a time.
 */
struct store;
struct dispatcher_rider {
    void *arg;
    void *(*take)(void *arg);
    int (*run)(void *arg, void *work, struct store *store);
    void (*finish)(void *arg, void *work, struct store *store, bool committed);
};

/* Attaches the rider. A dispatcher has at most one. */
void dispatcher_attach_rider(struct dispatcher *dispatcher, const struct dispatcher_rider *rider);
/* Tells the store thread that the rider has work. Safe from any thread. */
void dispatcher_wake_for_rider(struct dispatcher *dispatcher);
/* Detaches the rider once the store thread is out of its calls, which then stop. */
void dispatcher_detach_rider(struct dispatcher *dispatcher);
/* Stops and frees the dispatcher; NULL is ignored. Detach any rider first. */
void dispatcher_stop(struct dispatcher *dispatcher);

#endif
