/* GET /v1/deliveries/{id}: one delivery, its payload and every attempt. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/events.h"
#include "util/alloc.h"

static const char *const state_names[] = {
    [DELIVERY_PENDING] = "pending",
    [DELIVERY_SUCCEEDED] = "succeeded",
    [DELIVERY_FAILED] = "failed",
    [DELIVERY_CANCELLED] = "cancelled",
};

/* Returns the excerpt as a JSON string; bytes that are not UTF-8 become U+FFFD. */
static json_t *excerpt_to_json(const char *bytes, size_t len)
{
    json_t *text;
    char *copy;
    size_t out = 0;

    if (!bytes)
        return json_null();
    text = json_stringn(bytes, len);
    if (text)
        return text;

    copy = xmalloc(len * 3 + 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)bytes[i];

        if (c < 0x80) {
            copy[out++] = (char)c;
        } else {
            memcpy(copy + out, "\xef\xbf\xbd", 3);
            out += 3;
        }
    }
    text = json_stringn(copy, out);
    free(copy);
    return text ? text : json_null();
}

static json_t *attempt_to_json(const struct attempt *attempt)
{
    return json_pack("{s:i, s:o, s:i, s:o, s:o, s:o}", "number", attempt->number, "startedAt",
                     json_time_or_null(attempt->started_ms), "durationMs", attempt->duration_ms,
                     "httpStatus",
                     attempt->http_status ? json_integer(attempt->http_status) : json_null(),
                     "error", attempt->error ? json_string(attempt->error) : json_null(),
                     "responseExcerpt",
                     excerpt_to_json(attempt->response_excerpt, attempt->response_excerpt_len));
}

int handle_delivery_get(struct api_context *api, struct request *request,
                        struct response *response, struct bh_error *err)
{
    struct delivery delivery;
    struct attempt *attempts = NULL;
    size_t attempt_count = 0;
    json_t *attempt_list;
    json_t *payload;
    int result;

    memset(&delivery, 0, sizeof(delivery));
    result = store_delivery_get(api->store, request->user.id, request->params[0], &delivery, err);
    if (result == BH_ERR_NOT_FOUND)
        return bh_error_set(err, BH_ERR_NOT_FOUND, "id", "delivery \"%.64s\" not found",
                            request->params[0]);
    if (result != BH_OK)
        return result;
    result = store_attempt_list(api->store, delivery.id, &attempts, &attempt_count, err);
    if (result != BH_OK)
        goto release;

    attempt_list = json_array();
    for (size_t i = 0; i < attempt_count; i++)
        json_array_append_new(attempt_list, attempt_to_json(&attempts[i]));
    payload = json_loadb(delivery.body, delivery.body_len, 0, NULL);

    response->body = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", delivery.id,
        "eventId", delivery.event_id, "integrationId", delivery.integration_id, "eventType",
        event_type_info((enum event_type)delivery.event_type)->name, "status",
        state_names[delivery.state], "attemptCount", delivery.attempts, "nextAttemptAt",
        delivery.state == DELIVERY_PENDING ? json_time_or_null(delivery.next_attempt_ms)
                                           : json_null(),
        "lastHttpStatus",
        delivery.last_http_status ? json_integer(delivery.last_http_status) : json_null(),
        "lastError", delivery.last_error ? json_string(delivery.last_error) : json_null(),
        "createdAt", json_time_or_null(delivery.created_ms), "updatedAt",
        json_time_or_null(delivery.updated_ms), "payload", payload ? payload : json_null(),
        "attempts", attempt_list);

release:
    attempt_list_free(attempts, attempt_count);
    delivery_release(&delivery);
    return result;
}
