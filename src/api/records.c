/*
 * /v1/leads, /v1/campaigns and /v1/linkedin-accounts: upsert by id, get, and list in id order.
 *
 * PUT merges the body over the stored record (see core/records.h), so the platform can send
 * only what changed. The id comes from the path; a body "id" must match it.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/ids.h"
#include "util/log.h"

#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000

static const char *const collection_paths[RECORD_KIND_COUNT] = {
    [RECORD_LEAD] = "/v1/leads",
    [RECORD_CAMPAIGN] = "/v1/campaigns",
    [RECORD_ACCOUNT] = "/v1/linkedin-accounts",
};

static int check_path_id(enum record_kind kind, const char *id, struct bh_error *err)
{
    if (id_is_valid_external(id))
        return BH_OK;
    return bh_error_set(err, BH_ERR_INVALID, "id",
                        "%s id \"%.64s\" is invalid; use 1 to %d characters of letters, digits, "
                        "'.', '_', ':' or '-'",
                        record_kind_name(kind), id, EXTERNAL_ID_MAX);
}

/* Reads a record as record_load does, and its stored JSON text into *text when text is set. */
static int load_record(struct store *store, enum record_kind kind, const char *user_id,
                       const char *id, json_t **out, char **text, struct bh_error *err)
{
    char *stored = NULL;
    int result;

    *out = NULL;
    if (text)
        *text = NULL;
    result = store_record_get(store, kind, user_id, id, &stored, err);
    if (result == BH_ERR_NOT_FOUND)
        return BH_OK;
    if (result != BH_OK)
        return result;

    *out = json_loads(stored, 0, NULL);
    if (!*out) {
        free(stored);
        return bh_error_set(err, BH_ERR_STORE, "", "stored %s \"%s\" is not valid JSON",
                            record_kind_name(kind), id);
    }
    if (text)
        *text = stored;
    else
        free(stored);
    return BH_OK;
}

int record_load(struct store *store, enum record_kind kind, const char *user_id, const char *id,
                json_t **out, struct bh_error *err)
{
    return load_record(store, kind, user_id, id, out, NULL, err);
}

int record_merge(struct store *store, enum record_kind kind, const char *user_id, json_t *input,
                 const char *path, json_t **normalized, bool *created, bool *changed, char **text,
                 struct bh_error *err)
{
    json_t *id_value = json_object_get(input, "id");
    json_t *base = NULL;
    char *stored = NULL;
    bool same;
    int result;

    *normalized = NULL;
    if (text)
        *text = NULL;
    if (!json_is_string(id_value))
        return bh_error_set(err, BH_ERR_INVALID, path ? path : "id", "%s needs an \"id\" string",
                            record_kind_name(kind));
    if (!id_is_valid_external(json_string_value(id_value)))
        return check_path_id(kind, json_string_value(id_value), err);
    result = load_record(store, kind, user_id, json_string_value(id_value), &base,
                         text ? &stored : NULL, err);
    if (result != BH_OK)
        return result;

    *created = base == NULL;
    *normalized = record_normalize(kind, input, base, path ? path : record_kind_name(kind), err);
    same = base && *normalized && json_equal(base, *normalized);
    if (changed)
        *changed = !same;
    if (text && same)
        *text = stored;
    else
        free(stored);
    json_decref(base);
    if (!*normalized)
        return err->status ? err->status : BH_ERR_INVALID;
    return BH_OK;
}

int record_save(struct store *store, enum record_kind kind, const char *user_id,
                const json_t *normalized, const char *text, struct bh_error *err)
{
    const char *id = json_string_value(json_object_get(normalized, "id"));
    char *own_text = text ? NULL : json_dumps(normalized, JSON_COMPACT);
    int result = store_record_put(store, kind, user_id, id, text ? text : own_text, err);

    free(own_text);
    return result;
}

int record_fetch(struct store *store, enum record_kind kind, const char *user_id, const char *id,
                 const char *field, json_t **out, struct bh_error *err)
{
    return record_fetch_text(store, kind, user_id, id, field, out, NULL, err);
}

int record_fetch_text(struct store *store, enum record_kind kind, const char *user_id,
                      const char *id, const char *field, json_t **out, char **text,
                      struct bh_error *err)
{
    int result = load_record(store, kind, user_id, id, out, text, err);

    if (result == BH_OK && !*out)
        return bh_error_set(err, BH_ERR_NOT_FOUND, field,
                            "%s \"%.64s\" not found; create it with PUT %s/%.64s",
                            record_kind_name(kind), id, collection_paths[kind], id);
    return result;
}

static int put_record(enum record_kind kind, struct api_context *api, struct request *request,
                      struct response *response, struct bh_error *err)
{
    const char *id = request->params[0];
    json_t *input = NULL;
    json_t *body_id;
    json_t *normalized = NULL;
    bool created = false;
    int result;

    result = check_path_id(kind, id, err);
    if (result != BH_OK)
        return result;
    result = request_json_object(request, &input, err);
    if (result != BH_OK)
        return result;

    body_id = json_object_get(input, "id");
    if (body_id && (!json_is_string(body_id) || strcmp(json_string_value(body_id), id) != 0)) {
        json_decref(input);
        return bh_error_set(err, BH_ERR_INVALID, "id",
                            "body id does not match the id in the path \"%.64s\"; omit it or "
                            "send the same id",
                            id);
    }
    json_object_set_new(input, "id", json_string(id));

    result = record_merge(api->store, kind, request->user.id, input, NULL, &normalized, &created,
                          NULL, NULL, err);
    json_decref(input);
    if (result == BH_OK)
        result = record_save(api->store, kind, request->user.id, normalized, NULL, err);
    if (result != BH_OK) {
        json_decref(normalized);
        return result;
    }

    log_info("api", "%s %s %s=%s user=%s", record_kind_name(kind), created ? "created" : "updated",
             record_kind_name(kind), id, request->user.id);
    response->status = created ? MHD_HTTP_CREATED : MHD_HTTP_OK;
    response->body = normalized;
    return BH_OK;
}

static int get_record(enum record_kind kind, struct api_context *api, struct request *request,
                      struct response *response, struct bh_error *err)
{
    return record_fetch(api->store, kind, request->user.id, request->params[0], "id",
                        &response->body, err);
}

static int list_records(enum record_kind kind, struct api_context *api, struct request *request,
                        struct response *response, struct bh_error *err)
{
    const char *after = request_query(request, "after");
    char **texts = NULL;
    size_t count = 0;
    size_t limit;
    json_t *data;
    json_t *last = NULL;
    int result;

    result = request_limit(request, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, &limit, err);
    if (result != BH_OK)
        return result;
    /* One more than the page, to know whether another page follows. */
    result = store_record_list(api->store, kind, request->user.id, after, limit + 1, &texts, &count,
                               err);
    if (result != BH_OK)
        return result;

    data = json_array();
    for (size_t i = 0; i < count && i < limit; i++) {
        json_t *record = json_loads(texts[i], 0, NULL);

        if (record) {
            json_array_append_new(data, record);
            last = record;
        }
    }
    record_list_free(texts, count);
    response->body = json_pack("{s:o, s:O}", "data", data, "nextAfter",
                               count > limit && last ? json_object_get(last, "id") : json_null());
    return BH_OK;
}

int handle_lead_put(struct api_context *api, struct request *request, struct response *response,
                    struct bh_error *err)
{
    return put_record(RECORD_LEAD, api, request, response, err);
}

int handle_lead_get(struct api_context *api, struct request *request, struct response *response,
                    struct bh_error *err)
{
    return get_record(RECORD_LEAD, api, request, response, err);
}

int handle_lead_list(struct api_context *api, struct request *request, struct response *response,
                     struct bh_error *err)
{
    return list_records(RECORD_LEAD, api, request, response, err);
}

int handle_campaign_put(struct api_context *api, struct request *request, struct response *response,
                        struct bh_error *err)
{
    return put_record(RECORD_CAMPAIGN, api, request, response, err);
}

int handle_campaign_get(struct api_context *api, struct request *request, struct response *response,
                        struct bh_error *err)
{
    return get_record(RECORD_CAMPAIGN, api, request, response, err);
}

int handle_campaign_list(struct api_context *api, struct request *request,
                         struct response *response, struct bh_error *err)
{
    return list_records(RECORD_CAMPAIGN, api, request, response, err);
}

int handle_account_put(struct api_context *api, struct request *request, struct response *response,
                       struct bh_error *err)
{
    return put_record(RECORD_ACCOUNT, api, request, response, err);
}

int handle_account_get(struct api_context *api, struct request *request, struct response *response,
                       struct bh_error *err)
{
    return get_record(RECORD_ACCOUNT, api, request, response, err);
}

int handle_account_list(struct api_context *api, struct request *request, struct response *response,
                        struct bh_error *err)
{
    return list_records(RECORD_ACCOUNT, api, request, response, err);
}
