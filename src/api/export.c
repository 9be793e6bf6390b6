/*
 * POST /v1/leads/{id}/export: sends a stored lead now to one integration, as the event
 * lead_added_to_campaign.
 *
 * An export is a manual choice of one integration, so it goes there whatever the campaign
 * mappings and the integration's allowed events. It is a real delivery, durable and
 * retried like any other: the event and its delivery commit in one transaction before the
 * response, and the caller follows the outcome with GET /v1/deliveries/{id}. The handler runs
 * under the store lock, on the API's own store connection.
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

/* The records of one export, and the integration it goes to. */
struct lead_export {
    struct integration integration;
    json_t *lead;
    json_t *campaign; /* NULL to send the lead without a campaign */
};

static void lead_export_release(struct lead_export *export)
{
    integration_release(&export->integration);
    json_decref(export->lead);
    json_decref(export->campaign);
}

static int check_has_integrations(struct api_context *api, const char *user_id,
                                  struct bh_error *err)
{
    struct integration *integrations = NULL;
    size_t count = 0;
    int result;

    result = store_integration_list(api->store, user_id, &integrations, &count, err);
    integration_list_free(integrations, count);
    if (result == BH_OK && count == 0)
        result = bh_error_set(err, BH_ERR_NOT_FOUND, "integrationId",
                              "No connected integrations found; create a webhook with POST "
                              "/v1/integrations first, then export the lead to it");
    return result;
}

static int read_integration(struct api_context *api, const char *user_id, json_t *input,
                            struct integration *integration, struct bh_error *err)
{
    json_t *id = json_object_get(input, "integrationId");
    int result;

    if (!id)
        return bh_error_set(err, BH_ERR_INVALID, "integrationId",
                            "integrationId is required: the id of the webhook to export to");
    if (!json_is_string(id))
        return bh_error_set(err, BH_ERR_MALFORMED, "integrationId",
                            "integrationId must be a string");
    result = store_integration_get(api->store, user_id, json_string_value(id), integration, err);
    if (result == BH_ERR_NOT_FOUND)
        result = bh_error_set(err, BH_ERR_NOT_FOUND, "integrationId",
                              "integration \"%.64s\" not found; list yours with GET "
                              "/v1/integrations",
                              json_string_value(id));
    return result;
}

/*
 * Finds the campaign to send: the one named in the request, which must exist, or else the
 * campaign of the lead's latest event that had one, when that campaign is still stored.
 */
static int read_campaign(struct api_context *api, const char *user_id, const char *lead_id,
                         json_t *input, json_t **campaign, struct bh_error *err)
{
    json_t *id = json_object_get(input, "campaignId");
    char latest[EXTERNAL_ID_MAX + 1];
    int result;

    *campaign = NULL;
    if (id && !json_is_null(id)) {
        if (!json_is_string(id))
            return bh_error_set(err, BH_ERR_MALFORMED, "campaignId", "campaignId must be a string");
        return record_fetch(api->store, RECORD_CAMPAIGN, user_id, json_string_value(id),
                            "campaignId", campaign, err);
    }
    result = store_lead_latest_campaign(api->store, user_id, lead_id, latest, err);
    if (result != BH_OK || latest[0] == '\0')
        return result;
    return record_load(api->store, RECORD_CAMPAIGN, user_id, latest, campaign, err);
}

static int read_export(struct api_context *api, const struct request *request,
                       struct lead_export *export, struct bh_error *err)
{
    static const char *const allowed[] = {"integrationId", "campaignId", NULL};
    const char *user_id = request->user.id;
    const char *lead_id = request->params[0];
    json_t *input = NULL;
    int result;

    result = request_json_object(request, &input, err);
    if (result == BH_OK)
        result = json_reject_unknown_fields(input, allowed, NULL, err);
    if (result == BH_OK)
        result = check_has_integrations(api, user_id, err);
    if (result == BH_OK)
        result = record_fetch(api->store, RECORD_LEAD, user_id, lead_id, "id", &export->lead, err);
    if (result == BH_OK)
        result = read_integration(api, user_id, input, &export->integration, err);
    if (result == BH_OK)
        result = read_campaign(api, user_id, lead_id, input, &export->campaign, err);
    json_decref(input);
    return result;
}

/* Writes the event and its one delivery inside the caller's transaction. */
static int write_export(struct store *store, const struct lead_export *export,
                        const struct event_record *event, struct delivery *delivery,
                        struct bh_error *err)
{
    struct payload_input payload = {
        .event = event_type_info(EVENT_LEAD_ADDED_TO_CAMPAIGN)->name,
        .timestamp_ms = event->occurred_ms,
        .lead = export->lead,
        .campaign = export->campaign,
        .event_id = event->id,
        .user_id = event->user_id,
        .integration_id = export->integration.id,
    };
    int result;

    delivery->body = payload_build(&payload, &delivery->body_len);
    if (!delivery->body)
        return bh_error_set(err, BH_ERR_INTERNAL, "", "could not build the payload");
    result = store_event_insert(store, event, err);
    if (result == BH_OK)
        result = store_delivery_insert(store, delivery, err);
    return result;
}

static int commit_export(struct store *store, const struct lead_export *export,
                         const struct event_record *event, struct delivery *delivery,
                         struct bh_error *err)
{
    int result = store_begin(store, err);

    if (result != BH_OK)
        return result;
    result = write_export(store, export, event, delivery, err);
    if (result == BH_OK)
        result = store_commit(store, err);
    if (result != BH_OK)
        store_rollback(store);
    return result;
}

int handle_lead_export(struct api_context *api, struct request *request, struct response *response,
                       struct bh_error *err)
{
    struct lead_export export = {0};
    struct event_record event = {0};
    struct delivery delivery = {0};
    int result;

    integration_init(&export.integration);
    result = read_export(api, request, &export, err);
    if (result != BH_OK)
        goto release;

    event_id_generate(event.id);
    memcpy(event.user_id, request->user.id, sizeof(event.user_id));
    event.type = EVENT_LEAD_ADDED_TO_CAMPAIGN;
    event.lead_id = (char *)json_string_value(json_object_get(export.lead, "id"));
    event.campaign_id =
        export.campaign ? (char *)json_string_value(json_object_get(export.campaign, "id")) : NULL;
    event.created_ms = clock_now_ms();
    event.occurred_ms = event.created_ms;

    delivery_id_generate(delivery.id);
    memcpy(delivery.event_id, event.id, sizeof(delivery.event_id));
    memcpy(delivery.integration_id, export.integration.id, sizeof(delivery.integration_id));
    memcpy(delivery.user_id, event.user_id, sizeof(delivery.user_id));
    delivery.event_type = event.type;
    delivery.state = DELIVERY_PENDING;
    delivery.next_attempt_ms = event.created_ms;
    delivery.created_ms = event.created_ms;
    delivery.updated_ms = event.created_ms;

    result = commit_export(api->store, &export, &event, &delivery, err);
    if (result != BH_OK)
        goto release;
    metrics_add(METRIC_EVENTS_ACCEPTED, 1);
    metrics_add(METRIC_DELIVERIES_CREATED, 1);
    if (api->dispatcher)
        dispatcher_notify(api->dispatcher);

    log_info("api", "lead exported event=%s delivery=%s lead=%s integration=%s campaign=%s user=%s",
             event.id, delivery.id, event.lead_id, delivery.integration_id,
             event.campaign_id ? event.campaign_id : "-", event.user_id);
    response->status = MHD_HTTP_ACCEPTED;
    response->body =
        json_pack("{s:s, s:s, s:s, s:s+}", "eventId", event.id, "deliveryId", delivery.id, "status",
                  "pending", "deliveryUrl", "/v1/deliveries/", delivery.id);

release:
    free(delivery.body);
    lead_export_release(&export);
    return result;
}
