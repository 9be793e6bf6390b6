/*
 * The contract between the storage interface and its back ends.
 *
 * A back end defines its own connection struct with a struct store as its first member, so a
 * struct store pointer converts to the back end's struct and back. store.ops points at a
 * static table that the back end fills with one function per store_* operation; store.c
 * only forwards each call through that table. Every function has the meaning, arguments,
 * ownership and errors of the store_* function of the same name in store/store.h.
 */
#ifndef BEARHOOK_STORE_BACKEND_H
#define BEARHOOK_STORE_BACKEND_H

#include "store/store.h"

struct store_ops {
    void (*close)(struct store *store);

    int (*begin)(struct store *store, struct bh_error *err);
    int (*commit)(struct store *store, struct bh_error *err);
    void (*rollback)(struct store *store);

    int (*user_create)(struct store *store, const struct user *user, const char *key_hash,
                       struct bh_error *err);
    int (*user_count)(struct store *store, int64_t *count, struct bh_error *err);
    int (*user_by_key)(struct store *store, const char *key_hash, struct user *out,
                       struct bh_error *err);

    int (*integration_insert)(struct store *store, const struct integration *integration,
                              struct bh_error *err);
    int (*integration_get)(struct store *store, const char *user_id, const char *id,
                           struct integration *out, struct bh_error *err);
    int (*integration_list)(struct store *store, const char *user_id, struct integration **out,
                            size_t *count, struct bh_error *err);
    int (*integration_delete)(struct store *store, const char *user_id, const char *id,
                              struct bh_error *err);
    int (*integration_update)(struct store *store, const struct integration *integration,
                              struct mapping **changed, size_t *changed_count,
                              struct bh_error *err);

    int (*record_get)(struct store *store, enum record_kind kind, const char *user_id,
                      const char *id, char **json_text, struct bh_error *err);
    int (*record_put)(struct store *store, enum record_kind kind, const char *user_id,
                      const char *id, const char *json_text, struct bh_error *err);
    int (*record_list)(struct store *store, enum record_kind kind, const char *user_id,
                       const char *after_id, size_t limit, char ***json_texts, size_t *count,
                       struct bh_error *err);

    int (*mapping_put)(struct store *store, const char *user_id, const struct mapping *mapping,
                       struct bh_error *err);
    int (*mapping_list)(struct store *store, const char *user_id, const char *campaign_id,
                        struct mapping **out, size_t *count, struct bh_error *err);
    int (*routes)(struct store *store, const char *user_id, const char *campaign_id, int type,
                  char (**ids)[ID_LEN + 1], size_t *count, struct bh_error *err);
    int (*mapping_get)(struct store *store, const char *user_id, const char *campaign_id,
                       const char *integration_id, struct mapping *out, struct bh_error *err);
    int (*mapping_delete)(struct store *store, const char *user_id, const char *campaign_id,
                          const char *integration_id, struct bh_error *err);
    int (*lead_latest_campaign)(struct store *store, const char *user_id, const char *lead_id,
                                char campaign_id[EXTERNAL_ID_MAX + 1], struct bh_error *err);

    int (*event_insert)(struct store *store, const struct event_record *event,
                        struct bh_error *err);
    int (*delivery_insert)(struct store *store, const struct delivery *delivery,
                           struct bh_error *err);
    int (*delivery_get)(struct store *store, const char *user_id, const char *id,
                        struct delivery *out, struct bh_error *err);
    int (*attempt_list)(struct store *store, const char *delivery_id, struct attempt **out,
                        size_t *count, struct bh_error *err);

    int (*delivery_claim)(struct store *store, const char *owner, int64_t now_ms, int64_t lease_ms,
                          size_t limit, struct delivery_job **jobs, size_t *count,
                          struct bh_error *err);
    int (*delivery_claim_capped)(struct store *store, const struct claim_request *request,
                                 char cursor[ID_LEN + 1], struct delivery_job **jobs, size_t *count,
                                 struct bh_error *err);
    int (*delivery_next_due)(struct store *store, int64_t *due_ms, struct bh_error *err);
    int (*delivery_finish)(struct store *store, const struct attempt_outcome *outcome,
                           struct bh_error *err);
    int (*delivery_finish_batch)(struct store *store, const struct attempt_outcome *outcomes,
                                 size_t count, int *results, struct bh_error *err);
    int (*set_sync_commits)(struct store *store, bool sync, struct bh_error *err);
    int (*sync)(struct store *store, struct bh_error *err);
    int (*release_all_leases)(struct store *store, struct bh_error *err);

    int (*idempotency_get)(struct store *store, const char *user_id, const char *client_event_id,
                           char **request_hash, char **answer, struct bh_error *err);
    int (*idempotency_put)(struct store *store, const char *user_id, const char *client_event_id,
                           const char *request_hash, const char *answer, int64_t created_ms,
                           struct bh_error *err);
    int (*purge_finished)(struct store *store, int64_t before_ms, size_t limit, size_t *deliveries,
                          size_t *attempts, struct bh_error *err);
    int (*purge_idempotency)(struct store *store, int64_t before_ms, size_t limit, size_t *purged,
                             struct bh_error *err);

    int (*delivery_list)(struct store *store, const char *user_id,
                         const struct delivery_filter *filter, struct delivery **out, size_t *count,
                         struct bh_error *err);
    int (*delivery_redeliver)(struct store *store, const char *user_id, const char *id,
                              int64_t now_ms, struct delivery *out, struct bh_error *err);
    int (*delivery_recover)(struct store *store, const char *user_id, const char *integration_id,
                            int64_t since_ms, int64_t now_ms, int64_t *recovered,
                            struct bh_error *err);
};

/* The part of every back end's connection that store.c uses. */
struct store {
    const struct store_ops *ops;
};

#endif
