/*
 * /v1/campaigns/{id}/integrations/{integrationId}: pause, resume or edit one campaign mapping,
 * and remove it.
 *
 * Removing a mapping leaves the integration and its deliveries as they are. Only later events
 * of the campaign stop reaching it.
 */
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "util/log.h"

/*
 * Checks that the campaign and the integration of the path exist for the caller, and reads
 * their mapping. integration may be NULL when the caller needs only the mapping.
 */
static int find_mapping(struct api_context *api, const struct request *request,
                        struct integration *integration, struct mapping *mapping,
                        struct bh_error *err)
{
    const char *campaign_id = request->params[0];
    const char *integration_id = request->params[1];
    struct integration found;
    json_t *campaign = NULL;
    int result;

    result = record_fetch(api->store, RECORD_CAMPAIGN, request->user.id, campaign_id, "id",
                          &campaign, err);
    json_decref(campaign);
    if (result != BH_OK)
        return result;

    integration_init(&found);
    result = store_integration_get(api->store, request->user.id, integration_id, &found, err);
    if (result == BH_ERR_NOT_FOUND)
        return bh_error_set(err, BH_ERR_NOT_FOUND, "integrationId",
                            "integration \"%.64s\" not found; list yours with GET "
                            "/v1/integrations",
                            integration_id);
    if (result != BH_OK)
        return result;

    result =
        store_mapping_get(api->store, request->user.id, campaign_id, integration_id, mapping, err);
    if (result == BH_ERR_NOT_FOUND)
        result = bh_error_set(err, BH_ERR_NOT_FOUND, "integrationId",
                              "integration %s is not connected to campaign \"%.64s\"; connect "
                              "it with POST /v1/campaigns/{id}/integrations",
                              found.id, campaign_id);
    if (result == BH_OK && integration)
        *integration = found;
    else
        integration_release(&found);
    return result;
}

int handle_mapping_update(struct api_context *api, struct request *request,
                          struct response *response, struct bh_error *err)
{
    static const char *const patch_fields[] = {"events", "active", NULL};
    struct integration integration;
    struct mapping mapping;
    json_t *input = NULL;
    int result;

    integration_init(&integration);
    result = find_mapping(api, request, &integration, &mapping, err);
    if (result == BH_OK)
        result = request_json_object(request, &input, err);
    if (result == BH_OK)
        result = mapping_apply_json(input, patch_fields, &integration, &mapping, err);
    if (result != BH_OK)
        goto release;

    mapping.updated_ms = clock_now_ms();
    result = store_mapping_put(api->store, request->user.id, &mapping, err);
    if (result != BH_OK)
        goto release;

    log_info("api", "campaign mapping updated campaign=%s integration=%s active=%d user=%s",
             mapping.campaign_id, mapping.integration_id, mapping.active, request->user.id);
    response->body = mapping_to_json(&mapping);

release:
    json_decref(input);
    integration_release(&integration);
    return result;
}

int handle_mapping_delete(struct api_context *api, struct request *request,
                          struct response *response, struct bh_error *err)
{
    struct mapping mapping;
    int result;

    result = find_mapping(api, request, NULL, &mapping, err);
    if (result == BH_OK)
        result = store_mapping_delete(api->store, request->user.id, mapping.campaign_id,
                                      mapping.integration_id, err);
    if (result != BH_OK)
        return result;

    log_info("api", "integration disconnected campaign=%s integration=%s user=%s",
             mapping.campaign_id, mapping.integration_id, request->user.id);
    response->status = MHD_HTTP_NO_CONTENT;
    return BH_OK;
}
