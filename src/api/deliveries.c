/*
 * The delivery log: one delivery with its payload and attempts, an integration's deliveries
 * page by page, and sending deliveries again (one, or every failed one since a time).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/events.h"
#include "delivery/dispatcher.h"
#include "util/alloc.h"
#include "util/log.h"

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
    return json_pack(
        "{s:i, s:o, s:i, s:o, s:o, s:o}", "number", attempt->number, "startedAt",
        json_time_or_null(attempt->started_ms), "durationMs", attempt->duration_ms, "httpStatus",
        attempt->http_status ? json_integer(attempt->http_status) : json_null(), "error",
        attempt->error ? json_string(attempt->error) : json_null(), "responseExcerpt",
        excerpt_to_json(attempt->response_excerpt, attempt->response_excerpt_len));
}

/* Returns the fields of a delivery that the log lists: everything but payload and attempts. */
static json_t *delivery_summary(const struct delivery *delivery)
{
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:o, s:o, s:o, s:o, s:o, s:b}", "id", delivery->id, "eventId",
        delivery->event_id, "eventType",
        event_type_info((enum event_type)delivery->event_type)->name, "status",
        state_names[delivery->state], "attemptCount", delivery->attempts, "nextAttemptAt",
        delivery->state == DELIVERY_PENDING ? json_time_or_null(delivery->next_attempt_ms)
                                            : json_null(),
        "lastHttpStatus",
        delivery->last_http_status ? json_integer(delivery->last_http_status) : json_null(),
        "lastError", delivery->last_error ? json_string(delivery->last_error) : json_null(),
        "createdAt", json_time_or_null(delivery->created_ms), "updatedAt",
        json_time_or_null(delivery->updated_ms), "test", delivery->test);
}

/* Builds the detail form of a delivery: its fields, payload and attempts. */
static int delivery_detail(struct api_context *api, const struct delivery *delivery, json_t **out,
                           struct bh_error *err)
{
    struct attempt *attempts = NULL;
    size_t attempt_count = 0;
    json_t *attempt_list;
    json_t *payload;
    int result;

    result = store_attempt_list(api->store, delivery->id, &attempts, &attempt_count, err);
    if (result != BH_OK)
        return result;
    attempt_list = json_array();
    for (size_t i = 0; i < attempt_count; i++)
        json_array_append_new(attempt_list, attempt_to_json(&attempts[i]));
    attempt_list_free(attempts, attempt_count);
    payload = json_loadb(delivery->body, delivery->body_len, 0, NULL);

    *out = delivery_summary(delivery);
    json_object_set_new(*out, "integrationId", json_string(delivery->integration_id));
    json_object_set_new(*out, "payload", payload ? payload : json_null());
    json_object_set_new(*out, "attempts", attempt_list);
    return BH_OK;
}

int handle_delivery_get(struct api_context *api, struct request *request, struct response *response,
                        struct bh_error *err)
{
    struct delivery delivery;
    int result;

    memset(&delivery, 0, sizeof(delivery));
    result = store_delivery_get(api->store, request->user.id, request->params[0], &delivery, err);
    if (result == BH_ERR_NOT_FOUND)
        return bh_error_set(err, BH_ERR_NOT_FOUND, "id", "delivery \"%.64s\" not found",
                            request->params[0]);
    if (result == BH_OK)
        result = delivery_detail(api, &delivery, &response->body, err);
    delivery_release(&delivery);
    return result;
}

/* ---- GET /v1/integrations/{id}/deliveries ---- */

#define LOG_LIMIT_DEFAULT 20
#define LOG_LIMIT_MAX 100
#define CURSOR_TEXT_MAX 64 /* "<created_ms>:<delivery id>" and room to spare */

static const char *const log_parameters[] = {"status", "eventType", "since", "until",
                                             "limit",  "cursor",    NULL};

/* The query parameters of a log request, as sent; NULL when absent. */
struct log_query {
    const char *values[sizeof(log_parameters) / sizeof(log_parameters[0]) - 1];
    const char *unknown; /* the first parameter that is not in log_parameters */
    bool empty;          /* a known parameter came without a value */
    const char *empty_name;
};

static enum MHD_Result collect_parameter(void *context, enum MHD_ValueKind kind, const char *key,
                                         const char *value)
{
    struct log_query *query = context;

    (void)kind;
    for (size_t i = 0; log_parameters[i]; i++) {
        if (strcmp(key, log_parameters[i]) != 0)
            continue;
        if (!value || value[0] == '\0') {
            query->empty = true;
            query->empty_name = log_parameters[i];
            return MHD_NO;
        }
        if (!query->values[i])
            query->values[i] = value;
        return MHD_YES;
    }
    query->unknown = key;
    return MHD_NO;
}

static const char base64url_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Writes the unpadded base64url of len bytes and a NUL; out has room for 4 * ceil(len / 3) + 1
 * bytes. */
static void base64url_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t block = (uint32_t)in[i] << 16;
        size_t take = len - i < 3 ? len - i : 3;

        if (take > 1)
            block |= (uint32_t)in[i + 1] << 8;
        if (take > 2)
            block |= in[i + 2];
        for (size_t k = 0; k < take + 1; k++)
            out[o++] = base64url_digits[(block >> (18 - 6 * k)) & 63];
    }
    out[o] = '\0';
}

/* Decodes unpadded base64url into out (NUL-terminated). Returns false on any other input. */
static bool base64url_decode(const char *in, char *out, size_t size)
{
    size_t len = strlen(in);
    size_t o = 0;
    uint32_t block = 0;
    int bits = 0;

    if (len % 4 == 1 || (len / 4 + 1) * 3 >= size)
        return false;
    for (size_t i = 0; i < len; i++) {
        const char *digit = strchr(base64url_digits, in[i]);

        if (!digit)
            return false;
        block = (block << 6) | (uint32_t)(digit - base64url_digits);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((block >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    return strlen(out) == o;
}

static bool is_delivery_id(const char *id)
{
    if (strlen(id) != DELIVERY_ID_LEN || strncmp(id, "dlv_", 4) != 0)
        return false;
    for (const char *c = id + 4; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

/* The cursor of the page after delivery: base64url of "<created_ms>:<id>". */
static json_t *cursor_to_json(const struct delivery *delivery)
{
    char text[CURSOR_TEXT_MAX];
    char encoded[CURSOR_TEXT_MAX * 2];
    int len = snprintf(text, sizeof(text), "%" PRId64 ":%s", delivery->created_ms, delivery->id);

    base64url_encode((const unsigned char *)text, (size_t)len, encoded);
    return json_string(encoded);
}

static int parse_cursor(const char *cursor, struct delivery_filter *filter,
                        char id[DELIVERY_ID_LEN + 1], struct bh_error *err)
{
    char text[CURSOR_TEXT_MAX];
    char *colon;
    char *end = NULL;
    long long created_ms;

    if (!base64url_decode(cursor, text, sizeof(text)) || !(colon = strchr(text, ':')))
        goto invalid;
    *colon = '\0';
    created_ms = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || created_ms < 0 || !is_delivery_id(colon + 1))
        goto invalid;
    memcpy(id, colon + 1, DELIVERY_ID_LEN + 1);
    filter->before_ms = created_ms;
    filter->before_id = id;
    return BH_OK;

invalid:
    return bh_error_set(err, BH_ERR_INVALID, "cursor",
                        "cursor \"%.64s\" is not one this API gave; use the nextCursor of a "
                        "previous page, or leave cursor out for the first page",
                        cursor);
}

static int parse_state(const char *text, struct delivery_filter *filter, struct bh_error *err)
{
    static const enum delivery_state listed[] = {DELIVERY_PENDING, DELIVERY_SUCCEEDED,
                                                 DELIVERY_FAILED};

    for (size_t i = 0; i < sizeof(listed) / sizeof(listed[0]); i++) {
        if (strcmp(text, state_names[listed[i]]) == 0) {
            filter->state = (int)listed[i];
            return BH_OK;
        }
    }
    return bh_error_set(err, BH_ERR_INVALID, "status",
                        "status \"%.64s\" is unknown; use pending, succeeded or failed", text);
}

static int parse_event_type(const char *text, struct delivery_filter *filter, struct bh_error *err)
{
    char names[256] = "";
    size_t used = 0;
    int type = event_type_from_name(text);

    if (type >= 0) {
        filter->event_type = type;
        return BH_OK;
    }
    for (int i = 0; i < EVENT_TYPE_COUNT; i++)
        used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
                                 event_type_info((enum event_type)i)->name);
    return bh_error_set(err, BH_ERR_INVALID, "eventType",
                        "eventType \"%.64s\" is not in the catalog; use one of %s", text, names);
}

static int parse_time(const char *name, const char *text, int64_t *unix_ms, struct bh_error *err)
{
    if (clock_parse_iso8601(text, unix_ms) == 0)
        return BH_OK;
    return bh_error_set(err, BH_ERR_INVALID, name,
                        "%s \"%.64s\" is not an ISO-8601 time with a zone; use one such as "
                        "2026-02-13T10:30:00.000Z",
                        name, text);
}

/* Reads the log's query parameters into filter; id receives the cursor's delivery id. */
static int parse_log_query(const struct request *request, struct delivery_filter *filter,
                           char id[DELIVERY_ID_LEN + 1], struct bh_error *err)
{
    struct log_query query;
    const char **v = query.values;
    int result = BH_OK;

    memset(&query, 0, sizeof(query));
    MHD_get_connection_values(request->connection, MHD_GET_ARGUMENT_KIND, collect_parameter,
                              &query);
    if (query.unknown)
        return bh_error_set(err, BH_ERR_INVALID, query.unknown,
                            "query parameter \"%.64s\" is unknown; use status, eventType, "
                            "since, until, limit or cursor",
                            query.unknown);
    if (query.empty)
        return bh_error_set(err, BH_ERR_INVALID, query.empty_name,
                            "%s has no value; give one or leave the parameter out",
                            query.empty_name);

    filter->state = -1;
    filter->event_type = -1;
    filter->since_ms = INT64_MIN;
    filter->until_ms = INT64_MAX;
    if (v[0])
        result = parse_state(v[0], filter, err);
    if (result == BH_OK && v[1])
        result = parse_event_type(v[1], filter, err);
    if (result == BH_OK && v[2])
        result = parse_time("since", v[2], &filter->since_ms, err);
    if (result == BH_OK && v[3])
        result = parse_time("until", v[3], &filter->until_ms, err);
    if (result == BH_OK && filter->since_ms > filter->until_ms)
        result = bh_error_set(err, BH_ERR_INVALID, "until",
                              "until \"%.64s\" is before since \"%.64s\"; give a range that "
                              "ends after it starts",
                              v[3], v[2]);
    if (result == BH_OK)
        result = request_limit(request, LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX, &filter->limit, err);
    if (result == BH_OK && v[5])
        result = parse_cursor(v[5], filter, id, err);
    return result;
}

/* Fails with a 404 naming the integration unless it exists and is the caller's. */
static int require_integration(struct api_context *api, const struct request *request,
                               struct bh_error *err)
{
    struct integration integration;
    int result;

    integration_init(&integration);
    result =
        store_integration_get(api->store, request->user.id, request->params[0], &integration, err);
    integration_release(&integration);
    if (result == BH_ERR_NOT_FOUND)
        return bh_error_set(err, BH_ERR_NOT_FOUND, "id", "integration \"%.64s\" not found",
                            request->params[0]);
    return result;
}

int handle_delivery_list(struct api_context *api, struct request *request,
                         struct response *response, struct bh_error *err)
{
    struct delivery_filter filter;
    char cursor_id[DELIVERY_ID_LEN + 1];
    struct delivery *items = NULL;
    size_t count = 0;
    json_t *data;
    int result;

    memset(&filter, 0, sizeof(filter));
    filter.integration_id = request->params[0];
    result = parse_log_query(request, &filter, cursor_id, err);
    if (result == BH_OK)
        result = require_integration(api, request, err);
    if (result != BH_OK)
        return result;

    /* One more than the page, to know whether another page follows. */
    filter.limit++;
    result = store_delivery_list(api->store, request->user.id, &filter, &items, &count, err);
    if (result != BH_OK)
        return result;
    filter.limit--;

    data = json_array();
    for (size_t i = 0; i < count && i < filter.limit; i++)
        json_array_append_new(data, delivery_summary(&items[i]));
    response->body =
        json_pack("{s:o, s:o}", "data", data, "nextCursor",
                  count > filter.limit ? cursor_to_json(&items[filter.limit - 1]) : json_null());
    delivery_list_free(items, count);
    return BH_OK;
}

/* ---- POST /v1/deliveries/{id}/redeliver ---- */

int handle_delivery_redeliver(struct api_context *api, struct request *request,
                              struct response *response, struct bh_error *err)
{
    const char *id = request->params[0];
    struct delivery delivery;
    int result;

    result =
        store_delivery_redeliver(api->store, request->user.id, id, clock_now_ms(), &delivery, err);
    if (result == BH_ERR_NOT_FOUND)
        return bh_error_set(err, BH_ERR_NOT_FOUND, "id", "delivery \"%.64s\" not found", id);
    /* The store's message gives the reason: not finished yet, or a test. */
    if (result == BH_ERR_CONFLICT)
        return result;
    if (result != BH_OK)
        return result;
    if (api->dispatcher)
        dispatcher_notify(api->dispatcher);
    log_info("api", "delivery sent again delivery=%s integration=%s attempts=%d user=%s",
             delivery.id, delivery.integration_id, delivery.attempts, request->user.id);

    result = delivery_detail(api, &delivery, &response->body, err);
    response->status = MHD_HTTP_ACCEPTED;
    delivery_release(&delivery);
    return result;
}

/* ---- POST /v1/integrations/{id}/recover ---- */

static int parse_recover_since(const struct request *request, int64_t now_ms, int64_t *since_ms,
                               struct bh_error *err)
{
    static const char *const allowed[] = {"since", NULL};
    json_t *input = NULL;
    json_t *since;
    int result;

    result = request_json_object(request, &input, err);
    if (result == BH_OK)
        result = json_reject_unknown_fields(input, allowed, NULL, err);
    if (result != BH_OK)
        goto release;

    since = json_object_get(input, "since");
    if (!since || json_is_null(since)) {
        result = bh_error_set(err, BH_ERR_INVALID, "since",
                              "since is required: the ISO-8601 time from which failed "
                              "deliveries are sent again");
    } else if (!json_is_string(since)) {
        result = bh_error_set(err, BH_ERR_MALFORMED, "since", "since must be a string");
    } else {
        result = parse_time("since", json_string_value(since), since_ms, err);
        if (result == BH_OK && *since_ms > now_ms)
            result = bh_error_set(err, BH_ERR_INVALID, "since",
                                  "since \"%.64s\" is in the future; give a time up to now",
                                  json_string_value(since));
    }

release:
    json_decref(input);
    return result;
}

int handle_delivery_recover(struct api_context *api, struct request *request,
                            struct response *response, struct bh_error *err)
{
    int64_t now_ms = clock_now_ms();
    int64_t since_ms = 0;
    int64_t recovered = 0;
    int result;

    result = parse_recover_since(request, now_ms, &since_ms, err);
    if (result == BH_OK)
        result = require_integration(api, request, err);
    if (result == BH_OK)
        result = store_delivery_recover(api->store, request->user.id, request->params[0], since_ms,
                                        now_ms, &recovered, err);
    if (result != BH_OK)
        return result;
    if (recovered > 0 && api->dispatcher)
        dispatcher_notify(api->dispatcher);
    log_info("api", "failed deliveries sent again integration=%s recovered=%" PRId64 " user=%s",
             request->params[0], recovered, request->user.id);
    response->status = MHD_HTTP_ACCEPTED;
    response->body = json_pack("{s:I}", "recovered", (json_int_t)recovered);
    return BH_OK;
}
