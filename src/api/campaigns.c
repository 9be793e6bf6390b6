/*
 * /v1/campaigns/{id}/integrations: connect an integration to a campaign and list the mappings.
 *
 * A mapping's enabled events must be a subset of its integration's allowed events. Without
 * "events" in the request, all of the integration's events are enabled.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "util/log.h"

json_t *mapping_to_json(const struct mapping *mapping)
{
    return json_pack("{s:s, s:s, s:o, s:b, s:o, s:o}", "campaignId", mapping->campaign_id,
                     "integrationId", mapping->integration_id, "events",
                     event_mask_to_json(mapping->events), "active", mapping->active, "createdAt",
                     json_time_or_null(mapping->created_ms), "updatedAt",
                     json_time_or_null(mapping->updated_ms));
}

static bool mapping_exists(struct api_context *api, const char *user_id, const char *campaign_id,
                           const char *integration_id, struct bh_error *err)
{
    struct mapping *mappings = NULL;
    size_t count = 0;
    bool found = false;

    if (store_mapping_list(api->store, user_id, campaign_id, &mappings, &count, err) != BH_OK)
        return false;
    for (size_t i = 0; i < count; i++)
        found = found || strcmp(mappings[i].integration_id, integration_id) == 0;
    free(mappings);
    return found;
}

int mapping_apply_json(json_t *input, const char *const *allowed,
                       const struct integration *integration, struct mapping *mapping,
                       struct bh_error *err)
{
    json_t *events = json_object_get(input, "events");
    json_t *active = json_object_get(input, "active");
    int result;

    result = json_reject_unknown_fields(input, allowed, NULL, err);
    if (result != BH_OK)
        return result;
    if (events) {
        result = event_names_to_mask(events, integration->events, "events", &mapping->events, err);
        if (result != BH_OK)
            return result;
    }
    if (active) {
        if (!json_is_boolean(active))
            return bh_error_set(err, BH_ERR_MALFORMED, "active", "active must be true or false");
        mapping->active = json_is_true(active);
    }
    return BH_OK;
}

int handle_mapping_create(struct api_context *api, struct request *request,
                          struct response *response, struct bh_error *err)
{
    static const char *const create_fields[] = {"integrationId", "events", "active", NULL};
    const char *campaign_id = request->params[0];
    struct integration integration;
    struct mapping mapping;
    json_t *input = NULL;
    json_t *campaign = NULL;
    json_t *integration_id;
    int result;

    integration_init(&integration);
    memset(&mapping, 0, sizeof(mapping));
    result = record_fetch(api->store, RECORD_CAMPAIGN, request->user.id, campaign_id, "campaignId",
                          &campaign, err);
    if (result != BH_OK)
        goto release;
    result = request_json_object(request, &input, err);
    if (result != BH_OK)
        goto release;

    integration_id = json_object_get(input, "integrationId");
    if (!json_is_string(integration_id)) {
        result = bh_error_set(err, BH_ERR_INVALID, "integrationId",
                              "integrationId is required: the id of the webhook to connect");
        goto release;
    }
    result = store_integration_get(api->store, request->user.id, json_string_value(integration_id),
                                   &integration, err);
    if (result == BH_ERR_NOT_FOUND)
        result = bh_error_set(err, BH_ERR_NOT_FOUND, "integrationId",
                              "integration \"%.64s\" not found; list yours with GET "
                              "/v1/integrations",
                              json_string_value(integration_id));
    if (result != BH_OK)
        goto release;
    /* A new mapping enables all of the integration's events unless the request lists some. */
    mapping.events = integration.events;
    mapping.active = true;
    result = mapping_apply_json(input, create_fields, &integration, &mapping, err);
    if (result != BH_OK)
        goto release;

    if (mapping_exists(api, request->user.id, campaign_id, integration.id, err)) {
        result = bh_error_set(err, BH_ERR_CONFLICT, "integrationId",
                              "integration %s is already connected to campaign \"%.64s\"",
                              integration.id, campaign_id);
        goto release;
    }

    /* The campaign was found, so its id passed id_is_valid_external and fits. */
    memcpy(mapping.campaign_id, campaign_id, strlen(campaign_id) + 1);
    memcpy(mapping.integration_id, integration.id, sizeof(mapping.integration_id));
    mapping.created_ms = clock_now_ms();
    mapping.updated_ms = mapping.created_ms;
    result = store_mapping_put(api->store, request->user.id, &mapping, err);
    if (result != BH_OK)
        goto release;

    log_info("api", "integration connected campaign=%s integration=%s user=%s", campaign_id,
             integration.id, request->user.id);
    response->status = MHD_HTTP_CREATED;
    response->body = mapping_to_json(&mapping);

release:
    json_decref(input);
    json_decref(campaign);
    integration_release(&integration);
    return result;
}

int handle_mapping_list(struct api_context *api, struct request *request, struct response *response,
                        struct bh_error *err)
{
    struct mapping *mappings = NULL;
    json_t *campaign = NULL;
    size_t count = 0;
    json_t *data;
    int result;

    result = record_fetch(api->store, RECORD_CAMPAIGN, request->user.id, request->params[0], "id",
                          &campaign, err);
    json_decref(campaign);
    if (result != BH_OK)
        return result;
    result = store_mapping_list(api->store, request->user.id, request->params[0], &mappings, &count,
                                err);
    if (result != BH_OK)
        return result;

    data = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(data, mapping_to_json(&mappings[i]));
    free(mappings);
    response->body = json_pack("{s:o}", "data", data);
    return BH_OK;
}
