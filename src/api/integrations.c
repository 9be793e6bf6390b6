/* /v1/integrations: create, list, get and delete webhooks. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/ids.h"
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
    result = store_integration_get(api->store, request->user.id, request->params[0],
                                   &integration, err);
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
