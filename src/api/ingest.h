/*
 * Event ingest with group commit.
 *
 * POST /v1/events must not respond 202 before its event and deliveries are durable, and one
 * fsync per event would bound ingest at the disk's sync rate. So request threads hand each
 * validated event to a committer and suspend their connection. The committer takes every
 * queued event, accepts them all in one transaction, commits it durably with one sync, and
 * resumes the connections with their responses. Under load the batches grow by themselves.
 *
 * In a process that also delivers, the committer is the dispatcher's store thread (see struct
 * dispatcher_rider). A batch of events shares its transaction with the dispatcher's attempt
 * results and claims, so one connection writes every hot row and keeps its pages cached. That
 * connection commits without a sync, and store_sync then confirms the batch before its 202s
 * and before its claimed attempts start. A batch there stops taking events once they have
 * created 64 deliveries (RIDER_DELIVERIES_MAX in ingest.c), and the rest wait for the next
 * transaction, so the dispatcher's work comes around often. Without a dispatcher, ingest runs a
 * committer thread with a connection of its own, whose commits sync, since another process may
 * deliver.
 *
 * An event that fails validation inside the batch (a lead id that does not exist, say) writes
 * nothing and gets its own error, without failing the others. If the store fails, the batch
 * is rolled back and its events are retried one transaction each, so one bad event cannot
 * fail its neighbours. If the sync fails, the events stay written and are delivered, and each
 * request gets an error that explains this.
 *
 * Calling order: ingest_start, ingest_submit from any thread, ingest_stop (accepts what was
 * queued, then refuses new jobs), and with a dispatcher, ingest_stop before dispatcher_stop.
 * ingest_free comes last, once no thread can call ingest_submit any more.
 */
#ifndef BEARHOOK_API_INGEST_H
#define BEARHOOK_API_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "core/error.h"
#include "store/store.h"

struct dispatcher;

struct ingest_job {
    /* Set by the request thread. */
    json_t *input; /* the request body, owned */
    struct user user;
    int type; /* enum event_type */
    int64_t occurred_ms;
    struct MHD_Connection *connection; /* suspended until the job is done */

    /* Set by the committer before it resumes the connection. */
    int result;
    struct bh_error err;
    json_t *answer; /* the 202 body, owned */
    bool replayed;  /* a repeated client eventId: the stored response, nothing new accepted */

    struct ingest_job *next;
};

struct ingest;

struct ingest *ingest_start(const char *store_location, struct dispatcher *dispatcher,
                            struct bh_error *err);
/*
 * Queues a job; the committer fills its result and resumes job->connection. When ingest is
 * stopping, the job gets a 503-style error and is resumed at once, the same way.
 */
void ingest_submit(struct ingest *ingest, struct ingest_job *job);
void ingest_stop(struct ingest *ingest);
/* Frees a stopped ingest; NULL is ignored. */
void ingest_free(struct ingest *ingest);
void ingest_job_free(struct ingest_job *job);

/*
 * Accepts one event inside the caller's transaction (events.c): resolves its records, then
 * writes them, the event and one delivery per routed integration. Validation errors write
 * nothing. Adds the number of deliveries to *deliveries.
 */
int event_accept(struct store *store, struct ingest_job *job, size_t *deliveries);

#endif
