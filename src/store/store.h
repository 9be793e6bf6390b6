/*
 * The storage interface: every read and write that bearhook makes, behind one table of
 * function pointers per back end (SQLite now; PostgreSQL shares this interface).
 *
 * A struct store is one connection. It is not thread-safe: each thread that needs the
 * database opens its own, or callers serialize access with their own lock. Functions return
 * 0 or a negative BH_ERR_* code; BH_ERR_NOT_FOUND when a row that was asked for by id does
 * not exist or belongs to another user, BH_ERR_STORE (with err's message) when the database
 * fails. Every lookup is scoped to a user id.
 *
 * Ownership: structs filled by the store own their strings; release them with the matching
 * _release function. Arrays returned through pointer arguments are the caller's to free with
 * the matching _free function.
 *
 * Deliveries move through states: pending -> succeeded | failed | cancelled. A pending
 * delivery is due when next_attempt_ms <= now and it has no live lease. A worker claims due
 * deliveries, which sets lease_owner and lease_until_ms; it then reports each attempt with
 * store_delivery_finish or store_delivery_finish_batch, which apply only while the lease is
 * still the worker's.
 */
#ifndef BEARHOOK_STORE_STORE_H
#define BEARHOOK_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/ids.h"
#include "core/integration.h"
#include "core/records.h"

#define LEASE_OWNER_MAX 64
#define RESPONSE_EXCERPT_MAX 1024 /* bytes of a response body kept with an attempt */

struct user {
    char id[ID_LEN + 1];
    char name[128];
    int64_t created_ms;
};

struct mapping {
    char campaign_id[EXTERNAL_ID_MAX + 1];
    char integration_id[ID_LEN + 1];
    uint32_t events;
    bool active;
    int64_t created_ms;
    int64_t updated_ms;
};

struct event_record {
    char id[EVENT_ID_LEN + 1];
    char user_id[ID_LEN + 1];
    int type; /* enum event_type */
    char *lead_id;
    char *campaign_id; /* NULL when the event has no campaign */
    char *account_id;  /* NULL when there is no LinkedIn account */
    int64_t occurred_ms;
    int64_t created_ms;
    /* The bodies of the event's deliveries up to the integration id (payload_prefix_build), or
     * NULL. Stored once, for deliveries inserted with shared_body. */
    const char *payload_prefix;
    size_t payload_prefix_len;
};

enum delivery_state {
    DELIVERY_PENDING,
    DELIVERY_SUCCEEDED,
    DELIVERY_FAILED,
    DELIVERY_CANCELLED,
};

struct delivery {
    char id[DELIVERY_ID_LEN + 1];
    char event_id[EVENT_ID_LEN + 1];
    char integration_id[ID_LEN + 1];
    char user_id[ID_LEN + 1];
    int event_type;
    char *body; /* the exact bytes sent on every attempt */
    size_t body_len;
    enum delivery_state state;
    int attempts;            /* attempts made so far */
    int64_t next_attempt_ms; /* when a pending delivery is next due */
    int64_t created_ms;
    int64_t updated_ms;
    int last_http_status; /* 0 when the last attempt got no HTTP response */
    char *last_error;     /* NULL after a success or before any attempt */
    bool test;            /* a test delivery: one attempt, counted in no statistics */
    /* On insert: body is NULL, and the body is the event's payload_prefix finished with this
     * integration's id (payload_finish). Reads always return the whole body. */
    bool shared_body;
};

struct attempt {
    int number; /* 1 for the first attempt */
    int64_t started_ms;
    int duration_ms;
    int http_status;        /* 0 when no HTTP response arrived */
    char *error;            /* NULL for a 2xx */
    char *response_excerpt; /* at most RESPONSE_EXCERPT_MAX bytes of the body, may be NULL */
    size_t response_excerpt_len;
};

/* The data a worker needs to make one attempt, read from the delivery and its integration. */
struct delivery_job {
    char delivery_id[DELIVERY_ID_LEN + 1];
    char event_id[EVENT_ID_LEN + 1];
    char integration_id[ID_LEN + 1];
    char user_id[ID_LEN + 1];
    char *url;
    bool signing;
    char *secret; /* the integration's current secret; NULL when signing is off */
    struct custom_header *headers;
    size_t header_count;
    int timeout_ms;
    int max_retries;
    char *body;
    size_t body_len;
    int attempts_before; /* attempts made before this claim, since the delivery was
                          * created or last sent again (store_delivery_redeliver) */
    int64_t row_ref;     /* the back end's handle on the delivery's row, for attempt_outcome */
    bool test;           /* a test delivery: max_retries is 0 and statistics stay unchanged */
};

/* The result of one attempt, and what the delivery becomes. */
struct attempt_outcome {
    const char *delivery_id;
    int64_t row_ref; /* the job's row_ref, which spares a lookup by id; 0 when unknown */
    const char *integration_id;
    const char *lease_owner;
    int64_t started_ms;
    int duration_ms;
    int http_status;
    const char *error;            /* NULL on success */
    const char *response_excerpt; /* may be NULL */
    size_t response_excerpt_len;
    enum delivery_state new_state; /* PENDING to retry, SUCCEEDED, or FAILED for good */
    int64_t next_attempt_ms;       /* when new_state is PENDING */
    bool test;                     /* the job's test flag: statistics stay unchanged */
};

/* An integration's claimed jobs that a worker has not finished, running or waiting to run. */
struct integration_load {
    char integration_id[ID_LEN + 1];
    size_t claimed;
};

/* The owner, lease and limits of a call to store_delivery_claim_capped. */
struct claim_request {
    const char *owner;
    int64_t now_ms;
    int64_t lease_ms;
    size_t limit;                 /* jobs in all */
    size_t per_integration_limit; /* jobs per integration, the claimed ones included; 0: no cap */
    const struct integration_load *loads; /* each integration at most once; may be NULL */
    size_t load_count;
};

struct store;

/*
 * Opens the store named by location: a file path or "sqlite:PATH" for SQLite. Creates the
 * database and its folder if missing and applies pending schema migrations.
 */
struct store *store_open(const char *location, struct bh_error *err);
void store_close(struct store *store);

/* Transactions. begin takes the write lock at once, so a transaction never fails half way
 * because another connection wrote first. */
int store_begin(struct store *store, struct bh_error *err);
int store_commit(struct store *store, struct bh_error *err);
void store_rollback(struct store *store);

/* Users and API keys. */
int store_user_create(struct store *store, const struct user *user, const char *key_hash,
                      struct bh_error *err);
int store_user_count(struct store *store, int64_t *count, struct bh_error *err);
int store_user_by_key(struct store *store, const char *key_hash, struct user *out,
                      struct bh_error *err);

/* Integrations. */
int store_integration_insert(struct store *store, const struct integration *integration,
                             struct bh_error *err);
int store_integration_get(struct store *store, const char *user_id, const char *id,
                          struct integration *out, struct bh_error *err);
int store_integration_list(struct store *store, const char *user_id, struct integration **out,
                           size_t *count, struct bh_error *err);
void integration_list_free(struct integration *items, size_t count);
/* Deletes the integration, its mappings, its deliveries and their attempts. */
int store_integration_delete(struct store *store, const char *user_id, const char *id,
                             struct bh_error *err);
/*
 * Writes the settings of an existing integration, found by integration->id and ->user_id:
 * name, url, provider, signing, secret (stored only while signing is on), events, headers,
 * max_retries, timeout_ms and updated_ms. Statistics and created_ms are left as stored. In the
 * same transaction, each campaign mapping of the integration that enables an event outside its
 * new events loses those events; a mapping left with none stays, and delivers nothing until it
 * is edited. *changed (when changed is not NULL) receives the mappings that lost events, as
 * they are after the change, in campaign id order; the caller frees it with free(). Returns
 * BH_ERR_NOT_FOUND, with nothing written, when the integration is missing or another user's.
 */
int store_integration_update(struct store *store, const struct integration *integration,
                             struct mapping **changed, size_t *changed_count, struct bh_error *err);

/* Leads, campaigns and LinkedIn accounts, stored as canonical JSON text. */
int store_record_get(struct store *store, enum record_kind kind, const char *user_id,
                     const char *id, char **json_text, struct bh_error *err);
int store_record_put(struct store *store, enum record_kind kind, const char *user_id,
                     const char *id, const char *json_text, struct bh_error *err);
/* Lists up to limit records with ids greater than after_id (NULL for the start), by id. */
int store_record_list(struct store *store, enum record_kind kind, const char *user_id,
                      const char *after_id, size_t limit, char ***json_texts, size_t *count,
                      struct bh_error *err);
void record_list_free(char **json_texts, size_t count);

/* Campaign mappings. put inserts or replaces the mapping of one integration on one campaign. */
int store_mapping_put(struct store *store, const char *user_id, const struct mapping *mapping,
                      struct bh_error *err);
int store_mapping_list(struct store *store, const char *user_id, const char *campaign_id,
                       struct mapping **out, size_t *count, struct bh_error *err);
/* Lists the integrations that an event of `type` on the campaign goes to: active mappings
 * with the type enabled. ids is an array of ID_LEN + 1 strings. */
int store_routes(struct store *store, const char *user_id, const char *campaign_id, int type,
                 char (**ids)[ID_LEN + 1], size_t *count, struct bh_error *err);
/* Reads the mapping of one integration on one campaign; BH_ERR_NOT_FOUND when there is none. */
int store_mapping_get(struct store *store, const char *user_id, const char *campaign_id,
                      const char *integration_id, struct mapping *out, struct bh_error *err);
/* Deletes one mapping, and nothing else; BH_ERR_NOT_FOUND when there is none. */
int store_mapping_delete(struct store *store, const char *user_id, const char *campaign_id,
                         const char *integration_id, struct bh_error *err);
/*
 * Copies into campaign_id the campaign of the lead's most recent event that has one, or sets
 * it to "" when no event of the lead names a campaign. Events are ordered by when they were
 * accepted. Scans the user's events.
 */
int store_lead_latest_campaign(struct store *store, const char *user_id, const char *lead_id,
                               char campaign_id[EXTERNAL_ID_MAX + 1], struct bh_error *err);

/* Events and deliveries. Call inside one transaction so both commit together. */
int store_event_insert(struct store *store, const struct event_record *event, struct bh_error *err);
int store_delivery_insert(struct store *store, const struct delivery *delivery,
                          struct bh_error *err);
int store_delivery_get(struct store *store, const char *user_id, const char *id,
                       struct delivery *out, struct bh_error *err);
int store_attempt_list(struct store *store, const char *delivery_id, struct attempt **out,
                       size_t *count, struct bh_error *err);
void delivery_release(struct delivery *delivery);
void attempt_list_free(struct attempt *items, size_t count);

/*
 * Claims up to limit due deliveries for owner until now_ms + lease_ms and fills jobs (the
 * caller frees them with delivery_job_list_free). Deliveries whose lease expired come first.
 * The rest of the limit is shared among the integrations with due deliveries, in id order,
 * each taking its oldest due first. The same as store_delivery_claim_capped with no cap and
 * an empty cursor.
 */
int store_delivery_claim(struct store *store, const char *owner, int64_t now_ms, int64_t lease_ms,
                         size_t limit, struct delivery_job **jobs, size_t *count,
                         struct bh_error *err);
/*
 * Claims like store_delivery_claim, but an integration gets at most
 * request->per_integration_limit jobs less those claimed for it in request->loads, so one slow
 * receiver cannot take every slot of a worker. Each pass over the integrations with due
 * deliveries gives each at most an equal part of what is left of the limit. Integrations take
 * turns across calls. A pass starts with the first integration whose id sorts after cursor
 * ("" for the first of all) and wraps around. cursor receives the last integration that got a
 * job, and stays unchanged when none did. Runs in one transaction, or in a savepoint
 * inside the caller's transaction. Costs one index lookup per integration with pending
 * deliveries, plus the jobs it claims.
 */
int store_delivery_claim_capped(struct store *store, const struct claim_request *request,
                                char cursor[ID_LEN + 1], struct delivery_job **jobs, size_t *count,
                                struct bh_error *err);
void delivery_job_list_free(struct delivery_job *jobs, size_t count);
/* Sets *due_ms to the earliest time a pending delivery becomes claimable, or -1 for none. */
int store_delivery_next_due(struct store *store, int64_t *due_ms, struct bh_error *err);
/*
 * Records an attempt and moves its delivery, in one transaction: inserts the attempt, updates
 * the delivery if its lease is still owner's, and updates the integration's statistics:
 * last delivery time and last error on every attempt, then delivered/failed counts and status
 * when the delivery succeeds or fails for good. Returns BH_ERR_NOT_FOUND when the delivery is
 * gone or its lease was lost; nothing is written then.
 */
int store_delivery_finish(struct store *store, const struct attempt_outcome *outcome,
                          struct bh_error *err);
/*
 * Records count attempts in one transaction, or in a savepoint inside the caller's, with the
 * same rows as store_delivery_finish called for each in order. Each integration's statistics
 * are written once per batch. results[i] receives outcome i's status: 0, BH_ERR_NOT_FOUND when
 * its delivery is gone or its lease was lost (nothing is written for that outcome), or the
 * error of an outcome that failed on its own, in which case only that outcome is undone.
 * Returns 0 when the batch committed, or the error that undid all of it (results are then
 * meaningless).
 */
int store_delivery_finish_batch(struct store *store, const struct attempt_outcome *outcomes,
                                size_t count, int *results, struct bh_error *err);
/*
 * Chooses whether a commit on this connection returns only once it is on disk (sync true, the
 * default) or once the operating system has it (false). Either way a crash of the process
 * loses no commit; with false, a power loss can undo this connection's latest commits. Workers
 * use false: an undone attempt outcome means the attempt is made again, and an undone lease
 * is taken again. Accepted events need true.
 */
int store_set_sync_commits(struct store *store, bool sync, struct bh_error *err);
/*
 * Makes every commit of this connection durable, as if it had been made with sync commits on.
 * Group commit uses it: commit a group without sync, then call this once before answering for
 * the group. Counted in METRIC_STORE_SYNCS too.
 */
int store_sync(struct store *store, struct bh_error *err);
/* Ends every lease; for startup when this process is the database's only user. */
int store_release_all_leases(struct store *store, struct bh_error *err);

void delivery_job_release(struct delivery_job *job);

/*
 * Idempotency keys: the response that POST /v1/events gave to the first request with a client
 * event id, and the hash of that request's canonical body. get copies both (the caller frees
 * them with free()) or returns BH_ERR_NOT_FOUND; put returns BH_ERR_CONFLICT when the user
 * already has the key. Call put in the transaction that accepts the event.
 */
int store_idempotency_get(struct store *store, const char *user_id, const char *client_event_id,
                          char **request_hash, char **answer, struct bh_error *err);
int store_idempotency_put(struct store *store, const char *user_id, const char *client_event_id,
                          const char *request_hash, const char *answer, int64_t created_ms,
                          struct bh_error *err);

/*
 * Retention. purge_finished deletes up to limit deliveries that are succeeded, failed or
 * cancelled and were last updated before before_ms, oldest first, with their attempts, in one
 * transaction (or a savepoint inside the caller's). Pending deliveries are never deleted,
 * whatever their age. *deliveries and *attempts receive the rows deleted; fewer than limit
 * deliveries means nothing older is left. purge_idempotency deletes up to limit idempotency
 * keys created before before_ms and sets *purged.
 */
int store_purge_finished(struct store *store, int64_t before_ms, size_t limit, size_t *deliveries,
                         size_t *attempts, struct bh_error *err);
int store_purge_idempotency(struct store *store, int64_t before_ms, size_t limit, size_t *purged,
                            struct bh_error *err);

/*
 * The delivery log. A filter selects one integration's deliveries; list returns them newest
 * first, by created_ms then id, without their bodies (body is NULL). The caller frees the
 * array with delivery_list_free.
 */
struct delivery_filter {
    const char *integration_id;
    int state;             /* enum delivery_state, or -1 for every state */
    int event_type;        /* enum event_type, or -1 for every type */
    int64_t since_ms;      /* created at or after; INT64_MIN for no bound */
    int64_t until_ms;      /* created at or before; INT64_MAX for no bound */
    const char *before_id; /* with before_ms: only deliveries that sort after this one (older);
                            * NULL for the first page */
    int64_t before_ms;
    size_t limit;
};

int store_delivery_list(struct store *store, const char *user_id,
                        const struct delivery_filter *filter, struct delivery **out, size_t *count,
                        struct bh_error *err);
void delivery_list_free(struct delivery *items, size_t count);
/*
 * Sends a finished (succeeded or failed) delivery again: it becomes pending and due at now_ms,
 * keeps its attempts and its count, and gets a fresh retry budget (delivery_job.attempts_before
 * counts from here). The integration's delivered or failed count drops by one, since the
 * delivery is no longer finished. out receives the delivery as it now is. Returns
 * BH_ERR_NOT_FOUND when the delivery is missing or another user's, BH_ERR_CONFLICT when it is
 * pending or cancelled or a test delivery; nothing is written then.
 */
int store_delivery_redeliver(struct store *store, const char *user_id, const char *id,
                             int64_t now_ms, struct delivery *out, struct bh_error *err);
/*
 * Sends again, as store_delivery_redeliver does, every failed delivery of the integration
 * created at or after since_ms, in one transaction; *recovered receives their number. An
 * integration that is missing or another user's recovers nothing.
 */
int store_delivery_recover(struct store *store, const char *user_id, const char *integration_id,
                           int64_t since_ms, int64_t now_ms, int64_t *recovered,
                           struct bh_error *err);

#endif
