/*
 * /v1/integrations: create, list, read, edit and delete webhooks, and reveal or rotate their
 * signing secrets.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/ids.h"
#include "delivery/dispatcher.h"
#include "util/alloc.h"
#include "util/log.h"

static int not_found(const char *id, struct bh_error *err)
{
    return bh_error_set(err, BH_ERR_NOT_FOUND, "id",
                        "integration \"%.64s\" not found; list yours with GET /v1/integrations",
                        id);
}

int handle_integration_create(struct api_context *api, struct request *request,
                              struct response *response, struct bh_error *err)
{
    struct integration integration;
    json_t *input = NULL;
    int result;

    integration_init(&integration);
    result = request_json_object(request, &input, err);
    if (result != BH_OK)
        goto release;
    result = integration_from_json(input, api->targets, &integration, err);
    if (result != BH_OK)
        goto release;

    id_generate(integration.id);
    memcpy(integration.user_id, request->user.id, sizeof(integration.user_id));
    if (integration.signing)
        integration.secret = secret_generate();
    integration.created_ms = clock_now_ms();
    integration.updated_ms = integration.created_ms;
    integration.status = INTEGRATION_ACTIVE;

    result = store_integration_insert(api->store, &integration, err);
    if (result != BH_OK)
        goto release;

    log_info("api", "integration created integration=%s user=%s provider=%s signing=%s",
             integration.id, integration.user_id, integration.provider,
             integration.signing ? "on" : "off");
    response->status = MHD_HTTP_CREATED;
    /* The only response that shows the secret. */
    response->body = integration_to_json(&integration, true);

release:
    json_decref(input);
    integration_release(&integration);
    return result;
}

int handle_integration_list(struct api_context *api, struct request *request,
                            struct response *response, struct bh_error *err)
{
    struct integration *items = NULL;
    size_t count = 0;
    json_t *data;
    int result;

    result = store_integration_list(api->store, request->user.id, &items, &count, err);
    if (result != BH_OK)
        return result;

    data = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(data, integration_to_json(&items[i], false));
    integration_list_free(items, count);
    response->body = json_pack("{s:o}", "data", data);
    return BH_OK;
}

int handle_integration_get(struct api_context *api, struct request *request,
                           struct response *response, struct bh_error *err)
{
    struct integration integration;
    int result;

    integration_init(&integration);
    result =
        store_integration_get(api->store, request->user.id, request->params[0], &integration, err);
    if (result == BH_ERR_NOT_FOUND)
        result = not_found(request->params[0], err);
    if (result == BH_OK)
        response->body = integration_to_json(&integration, false);
    integration_release(&integration);
    return result;
}

int handle_integration_delete(struct api_context *api, struct request *request,
                              struct response *response, struct bh_error *err)
{
    int result;

    result = store_integration_delete(api->store, request->user.id, request->params[0], err);
    if (result == BH_ERR_NOT_FOUND)
        return not_found(request->params[0], err);
    if (result != BH_OK)
        return result;

    log_info("api", "integration deleted integration=%s user=%s", request->params[0],
             request->user.id);
    response->status = MHD_HTTP_NO_CONTENT;
    return BH_OK;
}

/* A time for updatedAt that is later than the stored one, even within one millisecond. */
static int64_t next_updated_ms(int64_t stored_ms)
{
    int64_t now_ms = clock_now_ms();

    return now_ms > stored_ms ? now_ms : stored_ms + 1;
}

static json_t *mapping_changes_to_json(const struct mapping *changed, size_t count)
{
    json_t *array = json_array();

    for (size_t i = 0; i < count; i++)
        json_array_append_new(array, json_pack("{s:s, s:o}", "campaignId", changed[i].campaign_id,
                                               "events", event_mask_to_json(changed[i].events)));
    return array;
}

/*
 * Edits an integration (PATCH /v1/integrations/{id}) with the fields and rules of create, all
 * optional. The response shows the secret only when this update turned signing on, and lists
 * the campaign mappings that lost events because the integration's events shrank.
 */
int handle_integration_update(struct api_context *api, struct request *request,
                              struct response *response, struct bh_error *err)
{
    struct integration integration;
    struct mapping *changed = NULL;
    size_t changed_count = 0;
    bool secret_created = false;
    json_t *input = NULL;
    int result;

    integration_init(&integration);
    result = request_json_object(request, &input, err);
    if (result != BH_OK)
        goto release;
    result =
        store_integration_get(api->store, request->user.id, request->params[0], &integration, err);
    if (result == BH_ERR_NOT_FOUND)
        result = not_found(request->params[0], err);
    if (result != BH_OK)
        goto release;
    result = integration_update_from_json(input, api->targets, &integration, err);
    if (result != BH_OK)
        goto release;

    if (integration.signing && !integration.secret) {
        integration.secret = secret_generate();
        secret_created = true;
    }
    integration.updated_ms = next_updated_ms(integration.updated_ms);
    result = store_integration_update(api->store, &integration, &changed, &changed_count, err);
    if (result == BH_ERR_NOT_FOUND)
        result = not_found(request->params[0], err);
    if (result != BH_OK)
        goto release;
    if (api->dispatcher)
        dispatcher_signing_changed(api->dispatcher, integration.id, integration.signing,
                                   integration.secret);

    log_info("api", "integration updated integration=%s user=%s signing=%s mappings_changed=%zu",
             integration.id, integration.user_id, integration.signing ? "on" : "off",
             changed_count);
    response->body = integration_to_json(&integration, secret_created);
    json_object_set_new(response->body, "mappingsChanged",
                        mapping_changes_to_json(changed, changed_count));

release:
    free(changed);
    json_decref(input);
    integration_release(&integration);
    return result;
}

/* Reads the caller's integration and checks that it signs, so that it has a secret. */
static int load_signing_integration(struct api_context *api, struct request *request,
                                    struct integration *integration, struct bh_error *err)
{
    int result;

    result =
        store_integration_get(api->store, request->user.id, request->params[0], integration, err);
    if (result == BH_ERR_NOT_FOUND)
        return not_found(request->params[0], err);
    if (result != BH_OK)
        return result;
    if (!integration->signing || !integration->secret)
        return bh_error_set(err, BH_ERR_CONFLICT, "signing",
                            "integration \"%s\" has signing turned off, so it has no secret; "
                            "turn it on with PATCH /v1/integrations/%s and {\"signing\": true}",
                            integration->id, integration->id);
    return BH_OK;
}

int handle_integration_secret_get(struct api_context *api, struct request *request,
                                  struct response *response, struct bh_error *err)
{
    struct integration integration;
    int result;

    integration_init(&integration);
    result = load_signing_integration(api, request, &integration, err);
    if (result == BH_OK) {
        log_info("api", "integration secret revealed integration=%s user=%s", integration.id,
                 integration.user_id);
        response->body = json_pack("{s:s}", "secret", integration.secret);
    }
    integration_release(&integration);
    return result;
}

/*
 * Replaces the signing secret (POST /v1/integrations/{id}/secret/rotate). Workers read the
 * secret when they claim a delivery, and this process's dispatcher is notified of the change, so
 * every attempt that starts after this commit, retries and queued jobs included, signs with
 * the new secret. A dispatcher in another process (--role worker) uses it from its next claim.
 */
int handle_integration_secret_rotate(struct api_context *api, struct request *request,
                                     struct response *response, struct bh_error *err)
{
    struct integration integration;
    int result;

    integration_init(&integration);
    result = load_signing_integration(api, request, &integration, err);
    if (result != BH_OK)
        goto release;

    free(integration.secret);
    integration.secret = secret_generate();
    integration.updated_ms = next_updated_ms(integration.updated_ms);
    result = store_integration_update(api->store, &integration, NULL, NULL, err);
    if (result == BH_ERR_NOT_FOUND)
        result = not_found(request->params[0], err);
    if (result != BH_OK)
        goto release;
    if (api->dispatcher)
        dispatcher_signing_changed(api->dispatcher, integration.id, true, integration.secret);

    log_info("api", "integration secret rotated integration=%s user=%s", integration.id,
             integration.user_id);
    /* Besides GET .../secret, the only response that shows the new secret. */
    response->body = json_pack("{s:s}", "secret", integration.secret);

release:
    integration_release(&integration);
    return result;
}
