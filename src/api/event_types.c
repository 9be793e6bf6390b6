/* GET /healthz, GET /metrics and GET /v1/event-types. */
#include <string.h>

#include "api/api.h"
#include "core/events.h"
#include "util/buf.h"
#include "util/metrics.h"

int handle_health(struct api_context *api, struct request *request, struct response *response,
                  struct bh_error *err)
{
    response->body = json_pack("{s:s}", "status", "ok");
    return BH_OK;
}

int handle_metrics(struct api_context *api, struct request *request, struct response *response,
                   struct bh_error *err)
{
    struct buf text = BUF_INIT;

    metrics_format(&text);
    response->text = buf_detach(&text, NULL);
    response->content_type = "text/plain; version=0.0.4";
    return BH_OK;
}

/* The catalog of selectable event types, flat and grouped by category in catalog order. */
int handle_event_types(struct api_context *api, struct request *request, struct response *response,
                       struct bh_error *err)
{
    json_t *types = json_array();
    json_t *categories = json_array();
    const char *current_category = NULL;
    json_t *category_types = NULL;

    for (int type = 0; type < EVENT_TYPE_COUNT; type++) {
        const struct event_type_info *info = event_type_info((enum event_type)type);

        if (!info->selectable)
            continue;
        json_array_append_new(types, json_pack("{s:s, s:s, s:s}", "type", info->name, "label",
                                               info->label, "category", info->category));
        if (!current_category || strcmp(current_category, info->category) != 0) {
            category_types = json_array();
            json_array_append_new(categories, json_pack("{s:s, s:o}", "name", info->category,
                                                        "types", category_types));
            current_category = info->category;
        }
        json_array_append_new(category_types, json_string(info->name));
    }
    response->body = json_pack("{s:o, s:o}", "data", types, "categories", categories);
    return BH_OK;
}
