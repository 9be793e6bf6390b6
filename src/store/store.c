/*
 * The storage interface: store_open picks the back end from the location, and every other
 * store_* function forwards to the back end's table of operations (see store/backend.h).
 * The free and release helpers for what the store returns live here too, since they do not
 * depend on the back end.
 */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

#include "store/backend.h"
#include "store/sqlite.h"
#include "util/metrics.h"

#define SQLITE_PREFIX "sqlite:"

static bool starts_with(const char *text, const char *prefix)
{
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

struct store *store_open(const char *location, struct bh_error *err)
{
    if (!location || location[0] == '\0') {
        bh_error_set(err, BH_ERR_INVALID, "",
                     "the database location is empty; give a file path "
                     "or sqlite:PATH");
        return NULL;
    }
    if (starts_with(location, "postgres://") || starts_with(location, "postgresql://")) {
        bh_error_set(err, BH_ERR_INVALID, "",
                     "PostgreSQL support is not built yet; use a SQLite file path or "
                     "sqlite:PATH for the database");
        return NULL;
    }
    if (starts_with(location, SQLITE_PREFIX))
        location += strlen(SQLITE_PREFIX);
    return sqlite_store_open(location, err);
}

void store_close(struct store *store)
{
    if (store)
        store->ops->close(store);
}

int store_begin(struct store *store, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->begin(store, err);
}

int store_commit(struct store *store, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->commit(store, err);
}

void store_rollback(struct store *store)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    store->ops->rollback(store);
}

int store_user_create(struct store *store, const struct user *user, const char *key_hash,
                      struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->user_create(store, user, key_hash, err);
}

int store_user_count(struct store *store, int64_t *count, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->user_count(store, count, err);
}

int store_user_by_key(struct store *store, const char *key_hash, struct user *out,
                      struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->user_by_key(store, key_hash, out, err);
}

int store_integration_insert(struct store *store, const struct integration *integration,
                             struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->integration_insert(store, integration, err);
}

int store_integration_get(struct store *store, const char *user_id, const char *id,
                          struct integration *out, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->integration_get(store, user_id, id, out, err);
}

int store_integration_list(struct store *store, const char *user_id, struct integration **out,
                           size_t *count, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->integration_list(store, user_id, out, count, err);
}

int store_integration_delete(struct store *store, const char *user_id, const char *id,
                             struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->integration_delete(store, user_id, id, err);
}

int store_integration_update(struct store *store, const struct integration *integration,
                             struct mapping **changed, size_t *changed_count, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->integration_update(store, integration, changed, changed_count, err);
}

int store_record_get(struct store *store, enum record_kind kind, const char *user_id,
                     const char *id, char **json_text, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->record_get(store, kind, user_id, id, json_text, err);
}

int store_record_put(struct store *store, enum record_kind kind, const char *user_id,
                     const char *id, const char *json_text, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->record_put(store, kind, user_id, id, json_text, err);
}

int store_record_list(struct store *store, enum record_kind kind, const char *user_id,
                      const char *after_id, size_t limit, char ***json_texts, size_t *count,
                      struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->record_list(store, kind, user_id, after_id, limit, json_texts, count, err);
}

int store_mapping_put(struct store *store, const char *user_id, const struct mapping *mapping,
                      struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->mapping_put(store, user_id, mapping, err);
}

int store_mapping_list(struct store *store, const char *user_id, const char *campaign_id,
                       struct mapping **out, size_t *count, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->mapping_list(store, user_id, campaign_id, out, count, err);
}

int store_routes(struct store *store, const char *user_id, const char *campaign_id, int type,
                 char (**ids)[ID_LEN + 1], size_t *count, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->routes(store, user_id, campaign_id, type, ids, count, err);
}

int store_mapping_get(struct store *store, const char *user_id, const char *campaign_id,
                      const char *integration_id, struct mapping *out, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->mapping_get(store, user_id, campaign_id, integration_id, out, err);
}

int store_mapping_delete(struct store *store, const char *user_id, const char *campaign_id,
                         const char *integration_id, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->mapping_delete(store, user_id, campaign_id, integration_id, err);
}

int store_lead_latest_campaign(struct store *store, const char *user_id, const char *lead_id,
                               char campaign_id[EXTERNAL_ID_MAX + 1], struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->lead_latest_campaign(store, user_id, lead_id, campaign_id, err);
}

int store_event_insert(struct store *store, const struct event_record *event, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->event_insert(store, event, err);
}

int store_delivery_insert(struct store *store, const struct delivery *delivery,
                          struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_insert(store, delivery, err);
}

int store_delivery_get(struct store *store, const char *user_id, const char *id,
                       struct delivery *out, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_get(store, user_id, id, out, err);
}

int store_attempt_list(struct store *store, const char *delivery_id, struct attempt **out,
                       size_t *count, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->attempt_list(store, delivery_id, out, count, err);
}

int store_delivery_claim(struct store *store, const char *owner, int64_t now_ms, int64_t lease_ms,
                         size_t limit, struct delivery_job **jobs, size_t *count,
                         struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_claim(store, owner, now_ms, lease_ms, limit, jobs, count, err);
}

int store_delivery_claim_capped(struct store *store, const struct claim_request *request,
                                char cursor[ID_LEN + 1], struct delivery_job **jobs, size_t *count,
                                struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_claim_capped(store, request, cursor, jobs, count, err);
}

int store_delivery_next_due(struct store *store, int64_t *due_ms, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_next_due(store, due_ms, err);
}

int store_delivery_finish(struct store *store, const struct attempt_outcome *outcome,
                          struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_finish(store, outcome, err);
}

int store_delivery_finish_batch(struct store *store, const struct attempt_outcome *outcomes,
                                size_t count, int *results, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_finish_batch(store, outcomes, count, results, err);
}

int store_set_sync_commits(struct store *store, bool sync, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->set_sync_commits(store, sync, err);
}

int store_sync(struct store *store, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    metrics_add(METRIC_STORE_SYNCS, 1);
    return store->ops->sync(store, err);
}

int store_release_all_leases(struct store *store, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->release_all_leases(store, err);
}

int store_idempotency_get(struct store *store, const char *user_id, const char *client_event_id,
                          char **request_hash, char **answer, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->idempotency_get(store, user_id, client_event_id, request_hash, answer, err);
}

int store_idempotency_put(struct store *store, const char *user_id, const char *client_event_id,
                          const char *request_hash, const char *answer, int64_t created_ms,
                          struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->idempotency_put(store, user_id, client_event_id, request_hash, answer,
                                       created_ms, err);
}

int store_purge_finished(struct store *store, int64_t before_ms, size_t limit, size_t *deliveries,
                         size_t *attempts, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->purge_finished(store, before_ms, limit, deliveries, attempts, err);
}

int store_purge_idempotency(struct store *store, int64_t before_ms, size_t limit, size_t *purged,
                            struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->purge_idempotency(store, before_ms, limit, purged, err);
}

int store_delivery_list(struct store *store, const char *user_id,
                        const struct delivery_filter *filter, struct delivery **out, size_t *count,
                        struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_list(store, user_id, filter, out, count, err);
}

int store_delivery_redeliver(struct store *store, const char *user_id, const char *id,
                             int64_t now_ms, struct delivery *out, struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_redeliver(store, user_id, id, now_ms, out, err);
}

int store_delivery_recover(struct store *store, const char *user_id, const char *integration_id,
                           int64_t since_ms, int64_t now_ms, int64_t *recovered,
                           struct bh_error *err)
{
    metrics_add(METRIC_STORE_CALLS, 1);
    return store->ops->delivery_recover(store, user_id, integration_id, since_ms, now_ms, recovered,
                                        err);
}

void delivery_list_free(struct delivery *items, size_t count)
{
    if (!items)
        return;
    for (size_t i = 0; i < count; i++)
        delivery_release(&items[i]);
    free(items);
}

void integration_list_free(struct integration *items, size_t count)
{
    if (!items)
        return;
    for (size_t i = 0; i < count; i++)
        integration_release(&items[i]);
    free(items);
}

void record_list_free(char **json_texts, size_t count)
{
    if (!json_texts)
        return;
    for (size_t i = 0; i < count; i++)
        free(json_texts[i]);
    free(json_texts);
}

void delivery_release(struct delivery *delivery)
{
    free(delivery->body);
    free(delivery->last_error);
    delivery->body = NULL;
    delivery->body_len = 0;
    delivery->last_error = NULL;
}

void attempt_list_free(struct attempt *items, size_t count)
{
    if (!items)
        return;
    for (size_t i = 0; i < count; i++) {
        free(items[i].error);
        free(items[i].response_excerpt);
    }
    free(items);
}

void delivery_job_release(struct delivery_job *job)
{
    free(job->url);
    free(job->secret);
    custom_headers_free(job->headers, job->header_count);
    free(job->body);
    job->url = NULL;
    job->secret = NULL;
    job->headers = NULL;
    job->header_count = 0;
    job->body = NULL;
    job->body_len = 0;
}

void delivery_job_list_free(struct delivery_job *jobs, size_t count)
{
    if (!jobs)
        return;
    for (size_t i = 0; i < count; i++)
        delivery_job_release(&jobs[i]);
    free(jobs);
}
