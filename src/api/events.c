/*
 * POST /v1/events: the platform reports an event about a lead.
 *
 * The event, the records given inline and one delivery per routed integration commit in one
 * transaction before the 202 answer, so nothing accepted can be lost. Each delivery's body is
 * built here, once, and sent byte for byte on every attempt.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/events.h"
#include "core/ids.h"
#include "core/payload.h"
#include "delivery/dispatcher.h"
#include "util/log.h"
#include "util/metrics.h"

/* The records an event refers to, each given inline or by id. */
struct event_records {
    json_t *lead;
    json_t *campaign; /* NULL when the event has none */
    json_t *account;  /* NULL when there is none */
};

static void event_records_release(struct event_records *records)
{
    json_decref(records->lead);
    json_decref(records->campaign);
    json_decref(records->account);
}

/*
 * Resolves one record given as `object_field` (inline, upserted) or `id_field` (stored).
 * *out stays NULL when neither is given.
 */
static int resolve_record(struct api_context *api, const char *user_id, json_t *input,
                          enum record_kind kind, const char *object_field, const char *id_field,
                          json_t **out, struct bh_error *err)
{
    json_t *inline_record = json_object_get(input, object_field);
    json_t *id = json_object_get(input, id_field);
    bool created;

    *out = NULL;
    if (inline_record && id)
        return bh_error_set(err, BH_ERR_INVALID, id_field, "send %s or %s, not both",
                            object_field, id_field);
    if (inline_record) {
        if (!json_is_object(inline_record))
            return bh_error_set(err, BH_ERR_MALFORMED, object_field,
                                "%s must be an object with at least an \"id\"", object_field);
        return record_upsert(api, kind, user_id, inline_record, out, &created, err);
    }
    if (id) {
        if (!json_is_string(id))
            return bh_error_set(err, BH_ERR_MALFORMED, id_field, "%s must be a string",
                                id_field);
        return record_fetch(api, kind, user_id, json_string_value(id), id_field, out, err);
    }
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

static int resolve_records(struct api_context *api, const char *user_id, json_t *input,
                           struct event_records *records, struct bh_error *err)
{
    int result;

    result = resolve_record(api, user_id, input, RECORD_LEAD, "lead", "leadId", &records->lead,
                            err);
    if (result == BH_OK && !records->lead)
        result = bh_error_set(err, BH_ERR_INVALID, "lead",
                              "lead is required: send \"lead\" with at least id and firstName, "
                              "or \"leadId\" of a stored lead");
    if (result == BH_OK)
        result = resolve_record(api, user_id, input, RECORD_CAMPAIGN, "campaign", "campaignId",
                                &records->campaign, err);
    if (result == BH_OK)
        result = resolve_record(api, user_id, input, RECORD_ACCOUNT, "linkedInAccount",
                                "linkedInAccountId", &records->account, err);
    return result;
}

static const char *record_id(const json_t *record)
{
    return record ? json_string_value(json_object_get(record, "id")) : NULL;
}

/* Builds and inserts one delivery per routed integration, and lists them in `created`. */
static int insert_deliveries(struct api_context *api, const struct event_record *event,
                             const struct event_records *records, json_t *created,
                             struct bh_error *err)
{
    char (*routes)[ID_LEN + 1] = NULL;
    size_t route_count = 0;
    int result = BH_OK;

    if (!event->campaign_id)
        return BH_OK;
    result = store_routes(api->store, event->user_id, event->campaign_id, event->type, &routes,
                          &route_count, err);
    if (result != BH_OK)
        return result;

    for (size_t i = 0; i < route_count && result == BH_OK; i++) {
        struct payload_input payload = {
            .event = event_type_info((enum event_type)event->type)->name,
            .timestamp_ms = event->occurred_ms,
            .lead = records->lead,
            .campaign = records->campaign,
            .linkedin_account = records->account,
            .event_id = event->id,
            .user_id = event->user_id,
            .integration_id = routes[i],
        };
        struct delivery delivery = {0};

        delivery_id_generate(delivery.id);
        memcpy(delivery.event_id, event->id, sizeof(delivery.event_id));
        memcpy(delivery.integration_id, routes[i], sizeof(delivery.integration_id));
        memcpy(delivery.user_id, event->user_id, sizeof(delivery.user_id));
        delivery.event_type = event->type;
        delivery.body = payload_build(&payload, &delivery.body_len);
        delivery.state = DELIVERY_PENDING;
        delivery.next_attempt_ms = event->created_ms;
        delivery.created_ms = event->created_ms;
        delivery.updated_ms = event->created_ms;

        result = store_delivery_insert(api->store, &delivery, err);
        if (result == BH_OK)
            json_array_append_new(created, json_pack("{s:s, s:s}", "id", delivery.id,
                                                     "integrationId", delivery.integration_id));
        free(delivery.body);
    }
    free(routes);
    return result;
}

static int accept_event(struct api_context *api, const char *user_id, json_t *input,
                        struct event_record *event, json_t *created, struct bh_error *err)
{
    struct event_records records = {NULL, NULL, NULL};
    int result;

    result = resolve_records(api, user_id, input, &records, err);
    if (result != BH_OK)
        goto release;

    event->lead_id = (char *)record_id(records.lead);
    event->campaign_id = (char *)record_id(records.campaign);
    event->account_id = (char *)record_id(records.account);
    result = store_event_insert(api->store, event, err);
    if (result == BH_OK)
        result = insert_deliveries(api, event, &records, created, err);

release:
    event->lead_id = event->campaign_id = event->account_id = NULL;
    event_records_release(&records);
    return result;
}

int handle_event_create(struct api_context *api, struct request *request,
                        struct response *response, struct bh_error *err)
{
    static const char *const allowed[] = {
        "type", "occurredAt", "lead", "leadId", "campaign", "campaignId", "linkedInAccount",
        "linkedInAccountId", NULL};
    struct event_record event = {0};
    json_t *input = NULL;
    json_t *created = json_array();
    int result;

    result = request_json_object(request, &input, err);
    if (result == BH_OK)
        result = json_reject_unknown_fields(input, allowed, NULL, err);
    if (result == BH_OK)
        result = read_event_type(input, &event.type, err);
    if (result == BH_OK)
        result = read_occurred_at(input, &event.occurred_ms, err);
    if (result != BH_OK)
        goto release;

    event_id_generate(event.id);
    memcpy(event.user_id, request->user.id, sizeof(event.user_id));
    event.created_ms = clock_now_ms();

    result = store_begin(api->store, err);
    if (result != BH_OK)
        goto release;
    result = accept_event(api, request->user.id, input, &event, created, err);
    if (result == BH_OK)
        result = store_commit(api->store, err);
    if (result != BH_OK) {
        store_rollback(api->store);
        goto release;
    }

    metrics_add(METRIC_EVENTS_ACCEPTED, 1);
    metrics_add(METRIC_DELIVERIES_CREATED, json_array_size(created));
    if (json_array_size(created) > 0 && api->dispatcher)
        dispatcher_notify(api->dispatcher);
    log_info("api", "event accepted event=%s type=%s user=%s deliveries=%zu", event.id,
             event_type_info((enum event_type)event.type)->name, event.user_id,
             json_array_size(created));
    response->status = MHD_HTTP_ACCEPTED;
    response->body = json_pack("{s:s, s:O}", "eventId", event.id, "deliveries", created);

release:
    json_decref(created);
    json_decref(input);
    return result;
}
