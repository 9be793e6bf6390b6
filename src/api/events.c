/*
 * POST /v1/events: the platform reports an event about a lead.
 *
 * The request thread checks what it can without the store (JSON, type, time, field names) and
 * hands the event to the group committer (ingest.h), which calls event_accept inside a
 * transaction shared with other events. Each delivery's body is built there, once, and sent
 * byte for byte on every attempt.
 */
#include <stdlib.h>
#include <string.h>

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

/* Resolves one record given inline (merged, not yet written) or by id (read). */
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
        return bh_error_set(err, BH_ERR_INVALID, id_field, "send %s or %s, not both",
                            object_field, id_field);
    if (inline_record) {
        if (!json_is_object(inline_record))
            return bh_error_set(err, BH_ERR_MALFORMED, object_field,
                                "%s must be an object with at least an \"id\"", object_field);
        return record_merge(store, kind, user_id, inline_record, object_field,
                            &records->record[kind], &created, &records->save[kind], err);
    }
    if (id) {
        if (!json_is_string(id))
            return bh_error_set(err, BH_ERR_MALFORMED, id_field, "%s must be a string",
                                id_field);
        return record_fetch(store, kind, user_id, json_string_value(id), id_field,
                            &records->record[kind], err);
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

/* Builds and inserts one delivery per routed integration, and lists them in `created`. */
static int insert_deliveries(struct store *store, const struct event_record *event,
                             const struct event_records *records, json_t *created,
                             struct bh_error *err)
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
    char(*routes)[ID_LEN + 1] = NULL;
    size_t route_count = 0;
    char *prefix = NULL;
    size_t prefix_len = 0;
    int result;

    if (!event->campaign_id)
        return BH_OK;
    result = store_routes(store, event->user_id, event->campaign_id, event->type, &routes,
                          &route_count, err);
    if (result == BH_OK && route_count > 0) {
        /* The bodies differ only in their last value, the integration id. */
        prefix = payload_prefix_build(&payload, &prefix_len);
        if (!prefix)
            result = bh_error_set(err, BH_ERR_INTERNAL, "", "could not build the payload");
    }

    for (size_t i = 0; i < route_count && result == BH_OK; i++) {
        struct delivery delivery = {0};

        delivery_id_generate(delivery.id);
        memcpy(delivery.event_id, event->id, sizeof(delivery.event_id));
        memcpy(delivery.integration_id, routes[i], sizeof(delivery.integration_id));
        memcpy(delivery.user_id, event->user_id, sizeof(delivery.user_id));
        delivery.event_type = event->type;
        delivery.body = payload_finish(prefix, prefix_len, routes[i], &delivery.body_len);
        delivery.state = DELIVERY_PENDING;
        delivery.next_attempt_ms = event->created_ms;
        delivery.created_ms = event->created_ms;
        delivery.updated_ms = event->created_ms;

        result = store_delivery_insert(store, &delivery, err);
        if (result == BH_OK)
            json_array_append_new(created, json_pack("{s:s, s:s}", "id", delivery.id,
                                                     "integrationId", delivery.integration_id));
        free(delivery.body);
    }
    free(prefix);
    free(routes);
    return result;
}

static int write_event(struct store *store, struct event_records *records,
                       struct event_record *event, json_t *created, struct bh_error *err)
{
    int result = BH_OK;

    for (int kind = 0; kind < RECORD_KIND_COUNT && result == BH_OK; kind++) {
        if (!records->record[kind])
            continue;
        records->text[kind] = json_dumps(records->record[kind], JSON_COMPACT);
        if (records->save[kind])
            result = record_save(store, (enum record_kind)kind, event->user_id,
                                 records->record[kind], records->text[kind], err);
    }
    event->lead_id = (char *)record_id(records->record[RECORD_LEAD]);
    event->campaign_id = (char *)record_id(records->record[RECORD_CAMPAIGN]);
    event->account_id = (char *)record_id(records->record[RECORD_ACCOUNT]);
    if (result == BH_OK)
        result = store_event_insert(store, event, err);
    if (result == BH_OK)
        result = insert_deliveries(store, event, records, created, err);
    event->lead_id = event->campaign_id = event->account_id = NULL;
    return result;
}

int event_accept(struct store *store, struct ingest_job *job, size_t *deliveries)
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

static int read_event_type(json_t *input, int *type, struct bh_error *err)
{
    json_t *value = json_object_get(input, "type");
    const struct event_type_info *info;

    if (!json_is_string(value))
        return bh_error_set(err, BH_ERR_INVALID, "type",
                            "type is required: one of connection_request_sent, "
                            "connection_request_accepted, message_sent, message_replied");
    *type = event_type_from_name(json_string_value(value));
    info = *type >= 0 ? event_type_info((enum event_type)*type) : NULL;
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

int handle_event_create(struct api_context *api, struct request *request,
                        struct response *response, struct bh_error *err)
{
    static const char *const allowed[] = {
        "type", "occurredAt", "lead", "leadId", "campaign", "campaignId", "linkedInAccount",
        "linkedInAccountId", NULL};
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
