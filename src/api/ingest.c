#include "api/ingest.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "delivery/dispatcher.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/metrics.h"

#define BATCH_MAX 1024 /* events in one transaction */
/*
 * Deliveries that the events of one transaction on the dispatcher's store thread may create,
 * past which the rest of the batch waits for the next transaction. An event is never split,
 * and a transaction accepts at least one. The store thread writes the dispatcher's results
 * and claims in the same transactions, so a limit keeps the deliveries already waiting from
 * being crowded out by new ones when events come faster than they can be delivered. In the
 * benchmark, with 10 deliveries per event at full speed, 15,100 to 16,600 deliveries/s went out
 * with none left queued, against 13,900 to 14,500/s with 27,000 left queued after 3 s, while
 * accepted events fell from 2,300 to 1,600/s. A limit of 128 left 7,000 queued.
 */
#define RIDER_DELIVERIES_MAX 64

/* Jobs taken from the queue to be accepted in one transaction. */
struct ingest_batch {
    struct ingest_job *jobs;
    size_t deliveries; /* created by the jobs accepted */
};

struct ingest {
    pthread_t thread; /* the committer, when no dispatcher carries the batches */
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* own thread: jobs queued, or stopping */
    pthread_cond_t drained;  /* a batch finished, which ingest_stop waits for */
    struct ingest_job *head; /* queued jobs, oldest first */
    struct ingest_job *tail;
    size_t batches_out; /* batches taken and not yet finished */
    bool stopping;
    struct store *store;           /* the own thread's connection, or NULL with a dispatcher */
    struct dispatcher *dispatcher; /* carries the batches, or NULL when `thread` does */
};

void ingest_job_free(struct ingest_job *job)
{
    if (!job)
        return;
    json_decref(job->input);
    json_decref(job->answer);
    free(job);
}

static void reset_outcome(struct ingest_job *job)
{
    job->result = BH_OK;
    job->replayed = false;
    bh_error_clear(&job->err);
    json_decref(job->answer);
    job->answer = NULL;
}

static bool is_store_failure(int result)
{
    return result == BH_ERR_STORE || result == BH_ERR_IO || result == BH_ERR_INTERNAL;
}

/* Puts jobs, a list in queue order, back at the head of the queue. */
static void requeue_jobs(struct ingest *ingest, struct ingest_job *jobs)
{
    struct ingest_job *last = jobs;

    while (last->next)
        last = last->next;
    pthread_mutex_lock(&ingest->lock);
    last->next = ingest->head;
    ingest->head = jobs;
    if (!ingest->tail)
        ingest->tail = last;
    pthread_mutex_unlock(&ingest->lock);
}

/*
 * Accepts the batch's jobs inside the caller's open transaction, in order. Once they have
 * created delivery_limit deliveries (0 for no limit), the jobs left go back to the queue and
 * leave the batch. Returns 0, or the store failure that must undo the transaction.
 */
static int accept_jobs(struct ingest *ingest, struct store *store, struct ingest_batch *batch,
                       size_t delivery_limit)
{
    batch->deliveries = 0;
    for (struct ingest_job *job = batch->jobs; job; job = job->next) {
        job->result = event_accept(store, job, &batch->deliveries);
        if (is_store_failure(job->result))
            return job->result;
        if (delivery_limit > 0 && batch->deliveries >= delivery_limit && job->next) {
            requeue_jobs(ingest, job->next);
            job->next = NULL;
        }
    }
    return 0;
}

/* After a failed batch: each job alone, so only the events that fail get an error. */
static void accept_one_by_one(struct store *store, struct ingest_batch *batch)
{
    batch->deliveries = 0;
    for (struct ingest_job *job = batch->jobs; job; job = job->next) {
        size_t created = 0;

        reset_outcome(job);
        job->result = store_begin(store, &job->err);
        if (job->result == BH_OK)
            job->result = event_accept(store, job, &created);
        if (job->result == BH_OK)
            job->result = store_commit(store, &job->err);
        if (job->result != BH_OK) {
            store_rollback(store);
            json_decref(job->answer);
            job->answer = NULL;
            if (is_store_failure(job->result))
                log_error("ingest", "event not accepted user=%s error=\"%s\"", job->user.id,
                          job->err.message);
            continue;
        }
        batch->deliveries += created;
    }
}

/*
 * Makes the accepted jobs durable with one sync, when the connection commits without one.
 * When the sync fails, every job that was accepted gets an error instead of its 202: its event
 * is saved, and will be delivered, but may not survive a power loss.
 */
static void confirm_jobs(struct ingest *ingest, struct store *store, struct ingest_batch *batch)
{
    struct bh_error err;
    bool wrote = false;

    for (struct ingest_job *job = batch->jobs; job; job = job->next)
        wrote = wrote || job->result == BH_OK;
    /* The own thread's commits sync, but the dispatcher's connection commits without one. */
    if (!wrote || !ingest->dispatcher || store_sync(store, &err) == BH_OK)
        return;

    log_error("ingest", "disk sync of committed events failed error=\"%s\"", err.message);
    for (struct ingest_job *job = batch->jobs; job; job = job->next) {
        if (job->result != BH_OK)
            continue;
        reset_outcome(job);
        job->result = bh_error_set(&job->err, BH_ERR_IO, "",
                                   "the event was saved, but the disk sync failed (%s), so it "
                                   "may not survive a power loss. Check the server's disk; "
                                   "sending the event again with the same eventId returns the "
                                   "saved response and creates no duplicate",
                                   err.message);
    }
}

/*
 * Ends a batch whose transaction committed or not: redoes the jobs one by one when it did
 * not, confirms them on disk, resumes their connections and frees the batch.
 */
static void finish_batch(struct ingest *ingest, struct store *store, struct ingest_batch *batch,
                         bool committed)
{
    size_t accepted = 0;
    struct ingest_job *next;

    if (!committed)
        accept_one_by_one(store, batch);
    confirm_jobs(ingest, store, batch);
    for (struct ingest_job *job = batch->jobs; job; job = next) {
        next = job->next;
        job->next = NULL;
        if (job->result == BH_OK && !job->replayed)
            accepted++;
        /* From here the request thread owns the job again. */
        MHD_resume_connection(job->connection);
    }
    metrics_add(METRIC_EVENTS_ACCEPTED, accepted);
    metrics_add(METRIC_DELIVERIES_CREATED, batch->deliveries);
    if (batch->deliveries > 0 && ingest->dispatcher)
        dispatcher_notify(ingest->dispatcher);
    free(batch);

    pthread_mutex_lock(&ingest->lock);
    ingest->batches_out--;
    pthread_cond_broadcast(&ingest->drained);
    pthread_mutex_unlock(&ingest->lock);
}

/* Takes up to BATCH_MAX queued jobs, waiting for some when wait is true. */
static struct ingest_batch *take_batch(struct ingest *ingest, bool wait)
{
    struct ingest_batch *batch = NULL;
    struct ingest_job *last;
    size_t count = 1;

    pthread_mutex_lock(&ingest->lock);
    while (wait && !ingest->head && !ingest->stopping)
        pthread_cond_wait(&ingest->wake, &ingest->lock);
    if (ingest->head) {
        batch = xcalloc(1, sizeof(*batch));
        batch->jobs = ingest->head;
        last = batch->jobs;
        while (last->next && count < BATCH_MAX) {
            last = last->next;
            count++;
        }
        ingest->head = last->next;
        if (!ingest->head)
            ingest->tail = NULL;
        last->next = NULL;
        ingest->batches_out++;
    }
    pthread_mutex_unlock(&ingest->lock);
    return batch;
}

/* ---- On the dispatcher's store thread ---- */

static void *rider_take(void *arg)
{
    return take_batch(arg, false);
}

static int rider_run(void *arg, void *work, struct store *store)
{
    struct ingest_batch *batch = work;
    int result = accept_jobs(arg, store, batch, RIDER_DELIVERIES_MAX);

    if (result != 0)
        return result;
    return batch->deliveries > 0 ? 1 : 0;
}

static void rider_finish(void *arg, void *work, struct store *store, bool committed)
{
    finish_batch(arg, store, work, committed);
}

/* ---- On a thread of its own ---- */

static void *run_committer(void *arg)
{
    struct ingest *ingest = arg;
    struct ingest_batch *batch;

    while ((batch = take_batch(ingest, true)) != NULL) {
        struct bh_error err;
        bool committed = store_begin(ingest->store, &err) == BH_OK &&
                         accept_jobs(ingest, ingest->store, batch, 0) == 0 &&
                         store_commit(ingest->store, &err) == BH_OK;

        if (!committed)
            store_rollback(ingest->store);
        finish_batch(ingest, ingest->store, batch, committed);
    }
    return NULL;
}

static int start_own_thread(struct ingest *ingest, const char *store_location, struct bh_error *err)
{
    /*
     * Commits stay synced: another process may deliver from this database, and it must not
     * see an event before the event is on disk.
     */
    ingest->store = store_open(store_location, err);
    if (!ingest->store)
        return err->status != BH_OK ? err->status : BH_ERR_STORE;
    if (pthread_create(&ingest->thread, NULL, run_committer, ingest) != 0) {
        store_close(ingest->store);
        return bh_error_set(err, BH_ERR_INTERNAL, "", "could not start the ingest thread");
    }
    pthread_setname_np(ingest->thread, "bh-ingest");
    return BH_OK;
}

struct ingest *ingest_start(const char *store_location, struct dispatcher *dispatcher,
                            struct bh_error *err)
{
    struct ingest *ingest = xcalloc(1, sizeof(*ingest));

    ingest->dispatcher = dispatcher;
    pthread_mutex_init(&ingest->lock, NULL);
    pthread_cond_init(&ingest->wake, NULL);
    pthread_cond_init(&ingest->drained, NULL);
    if (dispatcher) {
        struct dispatcher_rider rider = {
            .arg = ingest,
            .take = rider_take,
            .run = rider_run,
            .finish = rider_finish,
        };

        /* The dispatcher's connection commits without a sync, and its claims wait for ours. */
        dispatcher_attach_rider(dispatcher, &rider);
        return ingest;
    }
    if (start_own_thread(ingest, store_location, err) != BH_OK) {
        pthread_mutex_destroy(&ingest->lock);
        pthread_cond_destroy(&ingest->wake);
        pthread_cond_destroy(&ingest->drained);
        free(ingest);
        return NULL;
    }
    return ingest;
}

void ingest_submit(struct ingest *ingest, struct ingest_job *job)
{
    bool refused;

    job->next = NULL;
    pthread_mutex_lock(&ingest->lock);
    refused = ingest->stopping;
    if (!refused) {
        if (ingest->tail)
            ingest->tail->next = job;
        else
            ingest->head = job;
        ingest->tail = job;
        pthread_cond_signal(&ingest->wake);
        /* Under the lock, so the wake cannot come after ingest_stop detached the rider. */
        if (ingest->dispatcher)
            dispatcher_wake_for_rider(ingest->dispatcher);
    }
    pthread_mutex_unlock(&ingest->lock);

    if (refused) {
        job->result = bh_error_set(&job->err, BH_ERR_UNAVAILABLE, "",
                                   "the server is stopping; send the event again");
        MHD_resume_connection(job->connection);
    }
}

void ingest_stop(struct ingest *ingest)
{
    if (!ingest)
        return;
    pthread_mutex_lock(&ingest->lock);
    ingest->stopping = true;
    pthread_cond_signal(&ingest->wake);
    pthread_mutex_unlock(&ingest->lock);

    if (!ingest->dispatcher) {
        /* The committer accepts what was queued, then ends. */
        pthread_join(ingest->thread, NULL);
        store_close(ingest->store);
        ingest->store = NULL;
    } else {
        /* The dispatcher's store thread accepts what was queued. */
        dispatcher_wake_for_rider(ingest->dispatcher);
        pthread_mutex_lock(&ingest->lock);
        while (ingest->head || ingest->batches_out > 0)
            pthread_cond_wait(&ingest->drained, &ingest->lock);
        pthread_mutex_unlock(&ingest->lock);
        dispatcher_detach_rider(ingest->dispatcher);
    }
}

void ingest_free(struct ingest *ingest)
{
    if (!ingest)
        return;
    pthread_mutex_destroy(&ingest->lock);
    pthread_cond_destroy(&ingest->wake);
    pthread_cond_destroy(&ingest->drained);
    free(ingest);
}
