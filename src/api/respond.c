/* Request parsing and JSON responses shared by every handler. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "util/alloc.h"
#include "util/buf.h"

unsigned int http_status_for(int status)
{
    switch (status) {
    case BH_OK:
        return MHD_HTTP_OK;
    case BH_ERR_MALFORMED:
        return MHD_HTTP_BAD_REQUEST;
    case BH_ERR_INVALID:
        return MHD_HTTP_UNPROCESSABLE_CONTENT;
    case BH_ERR_NOT_FOUND:
        return MHD_HTTP_NOT_FOUND;
    case BH_ERR_CONFLICT:
        return MHD_HTTP_CONFLICT;
    case BH_ERR_TOO_LARGE:
        return MHD_HTTP_CONTENT_TOO_LARGE;
    case BH_ERR_UNAUTHORIZED:
        return MHD_HTTP_UNAUTHORIZED;
    case BH_ERR_UNAVAILABLE:
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    default:
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

enum MHD_Result respond_json(struct MHD_Connection *connection, unsigned int status, json_t *body)
{
    struct MHD_Response *response;
    enum MHD_Result result;
    char *text = NULL;
    size_t len = 0;

    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        len = strlen(text);
    }
    response = MHD_create_response_from_buffer(
        len, text ? text : (char *)"", text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (body)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

enum MHD_Result respond_text(struct MHD_Connection *connection, unsigned int status,
                             const char *content_type, char *text)
{
    struct MHD_Response *response;
    enum MHD_Result result;

    response = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

enum MHD_Result respond_error(struct MHD_Connection *connection, const struct bh_error *err)
{
    json_t *body;
    enum MHD_Result result;
    int status = err->status ? err->status : BH_ERR_INTERNAL;

    body = json_pack("{s:{s:s, s:s, s:o}}", "error", "code", bh_status_name(status), "message",
                     err->message[0] ? err->message : "internal error", "field",
                     err->field[0] ? json_string(err->field) : json_null());
    result = respond_json(connection, http_status_for(status), body);
    json_decref(body);
    return result;
}

int request_json_object(const struct request *request, json_t **out, struct bh_error *err)
{
    json_error_t parse_error;
    json_t *value;

    *out = NULL;
    if (request->body_len == 0)
        return bh_error_set(err, BH_ERR_MALFORMED, "",
                            "request body is empty; send a JSON object with "
                            "Content-Type: application/json");

    value = json_loadb(request->body, request->body_len, JSON_REJECT_DUPLICATES, &parse_error);
    if (!value)
        return bh_error_set(err, BH_ERR_MALFORMED, "",
                            "request body is not valid JSON: %s at line %d, column %d (byte %d)",
                            parse_error.text, parse_error.line, parse_error.column,
                            parse_error.position);
    if (!json_is_object(value)) {
        json_decref(value);
        return bh_error_set(err, BH_ERR_MALFORMED, "", "request body must be a JSON object");
    }
    *out = value;
    return BH_OK;
}

const char *request_query(const struct request *request, const char *name)
{
    return MHD_lookup_connection_value(request->connection, MHD_GET_ARGUMENT_KIND, name);
}

int json_reject_unknown_fields(json_t *object, const char *const *allowed, const char *path,
                               struct bh_error *err)
{
    const char *key;
    json_t *value;

    json_object_foreach(object, key, value)
    {
        bool known = false;
        struct buf names = BUF_INIT;
        int result;

        for (size_t i = 0; allowed[i]; i++)
            known = known || strcmp(key, allowed[i]) == 0;
        if (known)
            continue;

        for (size_t i = 0; allowed[i]; i++)
            buf_appendf(&names, "%s%s", i ? ", " : "", allowed[i]);
        result = bh_error_set(err, BH_ERR_INVALID, key,
                              "unknown field \"%s%s%.64s\"; allowed fields are %s",
                              path ? path : "", path ? "." : "", key, names.data);
        if (path && err)
            snprintf(err->field, sizeof(err->field), "%s.%s", path, key);
        buf_release(&names);
        return result;
    }
    return BH_OK;
}

int request_limit(const struct request *request, size_t default_limit, size_t max_limit,
                  size_t *limit, struct bh_error *err)
{
    const char *text = request_query(request, "limit");
    char *end = NULL;
    long value;

    *limit = default_limit;
    if (!text)
        return BH_OK;
    value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < 1 || (size_t)value > max_limit)
        return bh_error_set(err, BH_ERR_INVALID, "limit",
                            "limit \"%.32s\" is invalid; use a whole number from 1 to %zu", text,
                            max_limit);
    *limit = (size_t)value;
    return BH_OK;
}

json_t *json_time_or_null(int64_t unix_ms)
{
    char text[ISO8601_MS_LEN + 1];

    if (unix_ms <= 0)
        return json_null();
    clock_format_iso8601(unix_ms, text);
    return json_string(text);
}
