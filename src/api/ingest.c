#include "api/ingest.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "delivery/dispatcher.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/metrics.h"

#define BATCH_MAX 1024 /* events in one transaction */

struct ingest {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct ingest_job *head; /* queued jobs, oldest first */
    struct ingest_job *tail;
    bool stopping;
    struct store *store;
    struct dispatcher *dispatcher;
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

/* Accepts every job in one transaction; false when the store failed and nothing committed. */
static bool accept_batch(struct ingest *ingest, struct ingest_job *jobs, size_t *deliveries)
{
    struct bh_error err;

    *deliveries = 0;
    if (store_begin(ingest->store, &err) != BH_OK)
        return false;
    for (struct ingest_job *job = jobs; job; job = job->next) {
        job->result = event_accept(ingest->store, job, deliveries);
        if (is_store_failure(job->result)) {
            store_rollback(ingest->store);
            return false;
        }
    }
    if (store_commit(ingest->store, &err) != BH_OK) {
        store_rollback(ingest->store);
        return false;
    }
    return true;
}

/* After a failed batch: each job alone, so only the events that fail get an error. */
static void accept_one_by_one(struct ingest *ingest, struct ingest_job *jobs, size_t *deliveries)
{
    *deliveries = 0;
    for (struct ingest_job *job = jobs; job; job = job->next) {
        size_t created = 0;

        reset_outcome(job);
        job->result = store_begin(ingest->store, &job->err);
        if (job->result == BH_OK)
            job->result = event_accept(ingest->store, job, &created);
        if (job->result == BH_OK)
            job->result = store_commit(ingest->store, &job->err);
        if (job->result != BH_OK) {
            store_rollback(ingest->store);
            json_decref(job->answer);
            job->answer = NULL;
            if (is_store_failure(job->result))
                log_error("ingest", "event not accepted user=%s error=\"%s\"", job->user.id,
                          job->err.message);
            continue;
        }
        *deliveries += created;
    }
}

static void finish_batch(struct ingest *ingest, struct ingest_job *jobs, size_t deliveries)
{
    size_t accepted = 0;
    struct ingest_job *next;

    for (struct ingest_job *job = jobs; job; job = next) {
        next = job->next;
        job->next = NULL;
        if (job->result == BH_OK && !job->replayed)
            accepted++;
        /* From here the request thread owns the job again. */
        MHD_resume_connection(job->connection);
    }
    metrics_add(METRIC_EVENTS_ACCEPTED, accepted);
    metrics_add(METRIC_DELIVERIES_CREATED, deliveries);
    if (deliveries > 0 && ingest->dispatcher)
        dispatcher_notify(ingest->dispatcher);
}

/* Takes up to BATCH_MAX queued jobs; NULL once stopping with nothing queued. */
static struct ingest_job *take_batch(struct ingest *ingest)
{
    struct ingest_job *batch;
    struct ingest_job *last;
    size_t count = 1;

    pthread_mutex_lock(&ingest->lock);
    while (!ingest->head && !ingest->stopping)
        pthread_cond_wait(&ingest->wake, &ingest->lock);
    batch = ingest->head;
    if (batch) {
        last = batch;
        while (last->next && count < BATCH_MAX) {
            last = last->next;
            count++;
        }
        ingest->head = last->next;
        if (!ingest->head)
            ingest->tail = NULL;
        last->next = NULL;
    }
    pthread_mutex_unlock(&ingest->lock);
    return batch;
}

static void *run_committer(void *arg)
{
    struct ingest *ingest = arg;
    struct ingest_job *batch;
    size_t deliveries;

    while ((batch = take_batch(ingest)) != NULL) {
        if (!accept_batch(ingest, batch, &deliveries))
            accept_one_by_one(ingest, batch, &deliveries);
        finish_batch(ingest, batch, deliveries);
    }
    return NULL;
}

struct ingest *ingest_start(const char *store_location, struct dispatcher *dispatcher,
                            struct bh_error *err)
{
    struct ingest *ingest = xcalloc(1, sizeof(*ingest));

    ingest->store = store_open(store_location, err);
    if (!ingest->store) {
        free(ingest);
        return NULL;
    }
    ingest->dispatcher = dispatcher;
    pthread_mutex_init(&ingest->lock, NULL);
    pthread_cond_init(&ingest->wake, NULL);
    if (pthread_create(&ingest->thread, NULL, run_committer, ingest) != 0) {
        store_close(ingest->store);
        free(ingest);
        bh_error_set(err, BH_ERR_INTERNAL, "", "could not start the ingest thread");
        return NULL;
    }
    pthread_setname_np(ingest->thread, "bh-ingest");
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
    pthread_join(ingest->thread, NULL);

    store_close(ingest->store);
    pthread_mutex_destroy(&ingest->lock);
    pthread_cond_destroy(&ingest->wake);
    free(ingest);
}
