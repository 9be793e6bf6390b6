/*
 * POST /v1/events: the platform reports an event about a lead.
 *
 * The request thread checks what it can without the store (JSON, type, time, field names) and
 * hands the event to the group committer (ingest.h), which calls event_accept inside a
 * transaction shared with other events. Each delivery's body is built there, once, and sent
 * byte for byte on every attempt.
 *
 * A request may carry the client's own "eventId". The first request with it stores its 202
 * response with the hash of its canonical body: compact JSON with sorted keys, so whitespace
 * and key order do not count. A repeat with the same hash gets that response again and writes
 * nothing, and one with another hash gets 409. The committer runs a batch's events in order
 * in one transaction, so a repeat in the same batch finds the first.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "api/api.h"
#include "api/ingest.h"
#include "core/clock.h"
#include "core/events.h"
#include "core/ids.h"
#include "core/payload.h"
#include "util/alloc.h"
#include "util/log.h"

/* The records an event refers to, each given inline or by id. */
struct event_records {
    json_t *record[RECORD_KIND_COUNT]; /* NULL when the event has none of that kind */
    char *text[RECORD_KIND_COUNT];     /* each record as compact JSON, written once */
    bool save[RECORD_KIND_COUNT];      /* given inline and different from what is stored */
};

static const struct {
    const char *object_field;
    const char *id_field;
} record_fields[RECORD_KIND_COUNT] = {
    [RECORD_LEAD] = {"lead", "leadId"},
    [RECORD_CAMPAIGN] = {"campaign", "campaignId"},
    [RECORD_ACCOUNT] = {"linkedInAccount", "linkedInAccountId"},
};

static void event_records_release(struct event_records *records)
{
    for (int kind = 0; kind < RECORD_KIND_COUNT; kind++) {
        json_decref(records->record[kind]);
        free(records->text[kind]);
    }
}

/*
 * Resolves one record given inline (merged, not yet written) or by id (read). Its text is the
 * stored one when the event leaves it unchanged, so only a changed record is serialized.
 */
static int resolve_record(struct store *store, const char *user_id, json_t *input,
                          enum record_kind kind, struct event_records *records,
                          struct bh_error *err)
{
    const char *object_field = record_fields[kind].object_field;
    const char *id_field = record_fields[kind].id_field;
    json_t *inline_record = json_object_get(input, object_field);
    json_t *id = json_object_get(input, id_field);
    bool created;

    if (inline_record && id)
        return bh_error_set(err, BH_ERR_INVALID, id_field, "send %s or %s, not both", object_field,
                            id_field);
    if (inline_record) {
        if (!json_is_object(inline_record))
            return bh_error_set(err, BH_ERR_MALFORMED, object_field,
                                "%s must be an object with at least an \"id\"", object_field);
        return record_merge(store, kind, user_id, inline_record, object_field,
                            &records->record[kind], &created, &records->save[kind],
                            &records->text[kind], err);
    }
    if (id) {
        if (!json_is_string(id))
            return bh_error_set(err, BH_ERR_MALFORMED, id_field, "%s must be a string", id_field);
        return record_fetch_text(store, kind, user_id, json_string_value(id), id_field,
                                 &records->record[kind], &records->text[kind], err);
    }
    return BH_OK;
}

static int resolve_records(struct store *store, const char *user_id, json_t *input,
                           struct event_records *records, struct bh_error *err)
{
    int result = resolve_record(store, user_id, input, RECORD_LEAD, records, err);

    if (result == BH_OK && !records->record[RECORD_LEAD])
        result = bh_error_set(err, BH_ERR_INVALID, "lead",
                              "lead is required: send \"lead\" with at least id and firstName, "
                              "or \"leadId\" of a stored lead");
    if (result == BH_OK)
        result = resolve_record(store, user_id, input, RECORD_CAMPAIGN, records, err);
    if (result == BH_OK)
        result = resolve_record(store, user_id, input, RECORD_ACCOUNT, records, err);
    return result;
}

static const char *record_id(const json_t *record)
{
    return record ? json_string_value(json_object_get(record, "id")) : NULL;
}

/*
 * Inserts one delivery per routed integration and lists them in `created`. Their bodies
 * share the event's payload prefix, which the event row stores once.
 */
static int insert_deliveries(struct store *store, const struct event_record *event,
                             char (*routes)[ID_LEN + 1], size_t route_count, json_t *created,
                             struct bh_error *err)
{
    int result = BH_OK;

    for (size_t i = 0; i < route_count && result == BH_OK; i++) {
        struct delivery delivery = {0};

        delivery_id_generate(delivery.id);
        memcpy(delivery.event_id, event->id, sizeof(delivery.event_id));
        memcpy(delivery.integration_id, routes[i], sizeof(delivery.integration_id));
        memcpy(delivery.user_id, event->user_id, sizeof(delivery.user_id));
        delivery.event_type = event->type;
        delivery.shared_body = true;
        delivery.state = DELIVERY_PENDING;
        delivery.next_attempt_ms = event->created_ms;
        delivery.created_ms = event->created_ms;
        delivery.updated_ms = event->created_ms;

        result = store_delivery_insert(store, &delivery, err);
        if (result == BH_OK)
            json_array_append_new(created, json_pack("{s:s, s:s}", "id", delivery.id,
                                                     "integrationId", delivery.integration_id));
    }
    return result;
}

/* Builds the payload that the event's deliveries share, up to the integration id. */
static char *build_payload_prefix(const struct event_record *event,
                                  const struct event_records *records, size_t *len)
{
    struct payload_input payload = {
        .event = event_type_info((enum event_type)event->type)->name,
        .timestamp_ms = event->occurred_ms,
        .lead = records->record[RECORD_LEAD],
        .campaign = records->record[RECORD_CAMPAIGN],
        .linkedin_account = records->record[RECORD_ACCOUNT],
        .lead_text = records->text[RECORD_LEAD],
        .campaign_text = records->text[RECORD_CAMPAIGN],
        .linkedin_account_text = records->text[RECORD_ACCOUNT],
        .event_id = event->id,
        .user_id = event->user_id,
    };

    return payload_prefix_build(&payload, len);
}

static int write_event(struct store *store, struct event_records *records,
                       struct event_record *event, json_t *created, struct bh_error *err)
{
    char(*routes)[ID_LEN + 1] = NULL;
    size_t route_count = 0;
    char *prefix = NULL;
    int result = BH_OK;

    for (int kind = 0; kind < RECORD_KIND_COUNT && result == BH_OK; kind++) {
        if (!records->record[kind])
            continue;
        if (!records->text[kind])
            records->text[kind] = json_dumps(records->record[kind], JSON_COMPACT);
        if (records->save[kind])
            result = record_save(store, (enum record_kind)kind, event->user_id,
                                 records->record[kind], records->text[kind], err);
    }
    event->lead_id = (char *)record_id(records->record[RECORD_LEAD]);
    event->campaign_id = (char *)record_id(records->record[RECORD_CAMPAIGN]);
    event->account_id = (char *)record_id(records->record[RECORD_ACCOUNT]);
    if (result == BH_OK && event->campaign_id)
        result = store_routes(store, event->user_id, event->campaign_id, event->type, &routes,
                              &route_count, err);
    if (result == BH_OK && route_count > 0) {
        prefix = build_payload_prefix(event, records, &event->payload_prefix_len);
        event->payload_prefix = prefix;
        if (!prefix)
            result = bh_error_set(err, BH_ERR_INTERNAL, "", "could not build the payload");
    }
    if (result == BH_OK)
        result = store_event_insert(store, event, err);
    if (result == BH_OK)
        result = insert_deliveries(store, event, routes, route_count, created, err);
    event->lead_id = event->campaign_id = event->account_id = NULL;
    event->payload_prefix = NULL;
    free(prefix);
    free(routes);
    return result;
}

static int accept_new_event(struct store *store, struct ingest_job *job, size_t *deliveries)
{
    struct event_records records;
    struct event_record event = {0};
    json_t *created;
    int result;

    memset(&records, 0, sizeof(records));
    bh_error_clear(&job->err);
    result = resolve_records(store, job->user.id, job->input, &records, &job->err);
    if (result != BH_OK) {
        event_records_release(&records);
        return result;
    }

    event_id_generate(event.id);
    memcpy(event.user_id, job->user.id, sizeof(event.user_id));
    event.type = job->type;
    event.occurred_ms = job->occurred_ms;
    event.created_ms = clock_now_ms();
    created = json_array();
    result = write_event(store, &records, &event, created, &job->err);
    event_records_release(&records);
    if (result != BH_OK) {
        json_decref(created);
        return result;
    }

    log_info("api", "event accepted event=%s type=%s user=%s deliveries=%zu", event.id,
             event_type_info((enum event_type)event.type)->name, event.user_id,
             json_array_size(created));
    *deliveries += json_array_size(created);
    job->answer = json_pack("{s:s, s:o}", "eventId", event.id, "deliveries", created);
    return BH_OK;
}

#define CLIENT_EVENT_ID_MAX 128

/* The client's eventId, or NULL; handle_event_create checked its form. */
static const char *client_event_id(const struct ingest_job *job)
{
    return json_string_value(json_object_get(job->input, "eventId"));
}

/* Writes the lowercase hex SHA-256 of the body as compact JSON with sorted keys. */
static int hash_request(json_t *input, char out[2 * SHA256_DIGEST_LENGTH + 1], struct bh_error *err)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char digest[SHA256_DIGEST_LENGTH];
    char *canonical = json_dumps(input, JSON_COMPACT | JSON_SORT_KEYS);

    if (!canonical)
        return bh_error_set(err, BH_ERR_INTERNAL, "", "could not serialize the event");
    SHA256((const unsigned char *)canonical, strlen(canonical), digest);
    free(canonical);
    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0x0f];
    }
    out[2 * SHA256_DIGEST_LENGTH] = '\0';
    return BH_OK;
}

/*
 * Looks up the client's eventId. *replayed is true when the job got the stored response. A
 * different body with the same eventId is BH_ERR_CONFLICT. BH_OK with *replayed false means
 * the event is new.
 */
static int replay_answer(struct store *store, struct ingest_job *job, const char *hash,
                         bool *replayed)
{
    const char *id = client_event_id(job);
    char *stored_hash = NULL;
    char *answer = NULL;
    int result;

    *replayed = false;
    result = store_idempotency_get(store, job->user.id, id, &stored_hash, &answer, &job->err);
    if (result == BH_ERR_NOT_FOUND) {
        bh_error_clear(&job->err);
        return BH_OK;
    }
    if (result == BH_OK && strcmp(stored_hash, hash) != 0)
        result = bh_error_set(&job->err, BH_ERR_CONFLICT, "eventId",
                              "eventId %s was already reported with a different body; send "
                              "the same body to repeat it, or use a new eventId",
                              id);
    if (result == BH_OK) {
        job->answer = json_loads(answer, 0, NULL);
        if (!job->answer)
            result = bh_error_set(&job->err, BH_ERR_INTERNAL, "eventId",
                                  "the stored answer for eventId %s is not JSON", id);
        *replayed = job->answer != NULL;
    }
    free(stored_hash);
    free(answer);
    return result;
}

/* Stores the response under the client's eventId, in the transaction of the event. */
static int save_answer(struct store *store, struct ingest_job *job, const char *hash,
                       int64_t created_ms)
{
    char *answer = json_dumps(job->answer, JSON_COMPACT);
    int result;

    if (!answer)
        return bh_error_set(&job->err, BH_ERR_INTERNAL, "", "could not serialize the answer");
    result = store_idempotency_put(store, job->user.id, client_event_id(job), hash, answer,
                                   created_ms, &job->err);
    free(answer);
    /*
     * The event and its deliveries are written already, and only a store failure rolls them
     * back. So a key that another process saved meanwhile is reported as one: the committer
     * rolls back, accepts this event alone, and then finds the key.
     */
    if (result == BH_ERR_CONFLICT)
        result =
            bh_error_set(&job->err, BH_ERR_STORE, "eventId",
                         "eventId %s was saved meanwhile by another writer", client_event_id(job));
    return result;
}

int event_accept(struct store *store, struct ingest_job *job, size_t *deliveries)
{
    char hash[2 * SHA256_DIGEST_LENGTH + 1];
    bool replayed = false;
    int result;

    bh_error_clear(&job->err);
    if (!client_event_id(job))
        return accept_new_event(store, job, deliveries);

    result = hash_request(job->input, hash, &job->err);
    if (result == BH_OK)
        result = replay_answer(store, job, hash, &replayed);
    job->replayed = replayed;
    if (result != BH_OK || replayed)
        return result;
    result = accept_new_event(store, job, deliveries);
    if (result == BH_OK)
        result = save_answer(store, job, hash, clock_now_ms());
    return result;
}

static int read_event_type(json_t *input, int *type, struct bh_error *err)
{
    json_t *value = json_object_get(input, "type");
    const struct event_type_info *info;

    if (!json_is_string(value))
        return bh_error_set(err, BH_ERR_INVALID, "type",
                            "type is required: one of connection_request_sent, "
                            "connection_request_accepted, message_sent, message_replied");
    *type = event_type_from_name(json_string_value(value));
    info = *type >= 0 ? event_type_info((enum event_type)(*type)) : NULL;
    if (!info || !info->selectable)
        return bh_error_set(err, BH_ERR_INVALID, "type",
                            "unknown event type \"%.64s\"; use one of connection_request_sent, "
                            "connection_request_accepted, message_sent, message_replied",
                            json_string_value(value));
    return BH_OK;
}

static int read_occurred_at(json_t *input, int64_t *occurred_ms, struct bh_error *err)
{
    json_t *value = json_object_get(input, "occurredAt");

    *occurred_ms = clock_now_ms();
    if (!value || json_is_null(value))
        return BH_OK;
    if (!json_is_string(value) || clock_parse_iso8601(json_string_value(value), occurred_ms) != 0)
        return bh_error_set(err, BH_ERR_INVALID, "occurredAt",
                            "occurredAt must be an ISO-8601 time with a zone, such as "
                            "2026-02-13T10:30:00.000Z");
    return BH_OK;
}

static bool is_client_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

/* eventId is optional: 1 to CLIENT_EVENT_ID_MAX characters of [A-Za-z0-9._:-]. */
static int check_client_event_id(json_t *input, struct bh_error *err)
{
    json_t *value = json_object_get(input, "eventId");
    const char *text;
    size_t len;
    bool valid;

    if (!value)
        return BH_OK;
    if (!json_is_string(value))
        return bh_error_set(err, BH_ERR_MALFORMED, "eventId", "eventId must be a string");
    text = json_string_value(value);
    len = strlen(text);
    valid = len > 0 && len <= CLIENT_EVENT_ID_MAX && len == json_string_length(value);
    for (size_t i = 0; i < len && valid; i++)
        valid = is_client_id_char(text[i]);
    if (!valid)
        return bh_error_set(err, BH_ERR_INVALID, "eventId",
                            "eventId must be 1 to %d characters of letters, digits, ., _, : "
                            "or -",
                            CLIENT_EVENT_ID_MAX);
    return BH_OK;
}

int handle_event_create(struct api_context *api, struct request *request, struct response *response,
                        struct bh_error *err)
{
    static const char *const allowed[] = {"type",
                                          "occurredAt",
                                          "lead",
                                          "leadId",
                                          "campaign",
                                          "campaignId",
                                          "linkedInAccount",
                                          "linkedInAccountId",
                                          "eventId",
                                          NULL};
    struct ingest_job *job;
    json_t *input = NULL;
    int type = -1;
    int64_t occurred_ms = 0;
    int result;

    result = request_json_object(request, &input, err);
    if (result == BH_OK)
        result = json_reject_unknown_fields(input, allowed, NULL, err);
    if (result == BH_OK)
        result = read_event_type(input, &type, err);
    if (result == BH_OK)
        result = read_occurred_at(input, &occurred_ms, err);
    if (result == BH_OK)
        result = check_client_event_id(input, err);
    if (result != BH_OK) {
        json_decref(input);
        return result;
    }

    job = xcalloc(1, sizeof(*job));
    job->input = input;
    job->user = request->user;
    job->type = type;
    job->occurred_ms = occurred_ms;
    job->connection = request->connection;
    request->job = job;
    return BH_PENDING;
}
