/*
 * Integration input rules and JSON form.
 *
 * A request is read field by field through one table (key, parser). Each parser checks one
 * JSON value and stores it in a staged struct integration, so create and update share every
 * rule: create requires name, url and events and takes defaults for the rest, while update
 * moves only the fields present into the existing integration.
 */
#include "core/integration.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/events.h"
#include "util/alloc.h"
#include "util/buf.h"

#define SIGNATURE_DISABLED_TEXT "Signature verification is disabled."

/* Maximum bytes of a header name or JSON key that an error message repeats. */
#define ECHO_MAX 128

enum field_bit {
    FIELD_NAME = 1u << 0,
    FIELD_URL = 1u << 1,
    FIELD_PROVIDER = 1u << 2,
    FIELD_SIGNING = 1u << 3,
    FIELD_EVENTS = 1u << 4,
    FIELD_HEADERS = 1u << 5,
    FIELD_MAX_RETRIES = 1u << 6,
    FIELD_TIMEOUT = 1u << 7,
};

static const char *const providers[] = {"webhook", "zapier", "make", "n8n"};

/*
 * Headers that bearhook sets on every delivery, and connection-level headers that libcurl
 * manages. A custom header with one of these names could break the request or its signature.
 */
static const char *const reserved_names[] = {
    "content-type", "content-length", "user-agent",       "host", "transfer-encoding",
    "connection",   "expect",         "x-webhook-id",     "te",   "trailer",
    "upgrade",      "keep-alive",     "proxy-connection",
};
/* X-Bearconnect-* are bearhook's own; Webhook-* are the Standard Webhooks headers. */
static const char *const reserved_prefixes[] = {"x-bearconnect-", "webhook-"};

void integration_init(struct integration *integration)
{
    memset(integration, 0, sizeof(*integration));
    snprintf(integration->provider, sizeof(integration->provider), "webhook");
    integration->signing = true;
    integration->max_retries = MAX_RETRIES_DEFAULT;
    integration->timeout_ms = TIMEOUT_MS_DEFAULT;
    integration->status = INTEGRATION_ACTIVE;
}

void custom_headers_free(struct custom_header *headers, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(headers[i].name);
        free(headers[i].value);
    }
    free(headers);
}

void integration_release(struct integration *integration)
{
    free(integration->name);
    free(integration->url);
    free(integration->secret);
    custom_headers_free(integration->headers, integration->header_count);
    free(integration->last_error);
    integration_init(integration);
}

/* Reads a JSON string that has no NUL inside; a wrong type is BH_ERR_MALFORMED. */
static int get_string(json_t *value, const char *key, const char *expected, const char **text,
                      struct bh_error *err)
{
    if (!json_is_string(value))
        return bh_error_set(err, BH_ERR_MALFORMED, key, "%s must be %s", key, expected);
    *text = json_string_value(value);
    if (strlen(*text) != json_string_length(value))
        return bh_error_set(err, BH_ERR_INVALID, key, "%s contains a NUL character; remove it",
                            key);
    return 0;
}

/* Reads a JSON integer within [min, max]. */
static int get_int_in_range(json_t *value, const char *key, int min, int max, int *out,
                            struct bh_error *err)
{
    json_int_t number;

    if (!json_is_integer(value))
        return bh_error_set(err, BH_ERR_MALFORMED, key, "%s must be a whole number from %d to %d",
                            key, min, max);
    number = json_integer_value(value);
    if (number < min || number > max)
        return bh_error_set(err, BH_ERR_INVALID, key,
                            "%s %" JSON_INTEGER_FORMAT
                            " is out of range; use a whole number from %d to %d",
                            key, number, min, max);
    *out = (int)number;
    return 0;
}

/*
 * Counts the code points of valid UTF-8 text. Returns false when the text contains a control
 * character: C0 (U+0000 to U+001F), DEL, or C1 (U+0080 to U+009F, encoded as C2 80 to C2 9F).
 */
static bool count_printable_code_points(const char *text, size_t len, size_t *count)
{
    const unsigned char *bytes = (const unsigned char *)text;

    *count = 0;
    for (size_t i = 0; i < len; i++) {
        if (bytes[i] < 0x20 || bytes[i] == 0x7f)
            return false;
        if (bytes[i] == 0xc2 && i + 1 < len && bytes[i + 1] >= 0x80 && bytes[i + 1] <= 0x9f)
            return false;
        if ((bytes[i] & 0xc0) != 0x80)
            (*count)++;
    }
    return true;
}

static int parse_name(json_t *value, const struct target_policy *policy, struct integration *staged,
                      struct bh_error *err)
{
    const char *text = NULL;
    const char *end;
    size_t count;
    int result;

    result = get_string(value, "name", "a string of 1 to 100 characters", &text, err);
    if (result != 0)
        return result;

    while (*text == ' ')
        text++;
    end = text + strlen(text);
    while (end > text && end[-1] == ' ')
        end--;
    if (end == text)
        return bh_error_set(err, BH_ERR_INVALID, "name",
                            "name is empty; give the webhook a label such as \"CRM Sync\"");
    if (!count_printable_code_points(text, (size_t)(end - text), &count))
        return bh_error_set(err, BH_ERR_INVALID, "name",
                            "name contains a control character such as a line break or tab; "
                            "remove it");
    if (count > INTEGRATION_NAME_MAX)
        return bh_error_set(err, BH_ERR_INVALID, "name",
                            "name has %zu characters; use 1 to %d characters", count,
                            INTEGRATION_NAME_MAX);

    free(staged->name);
    staged->name = xstrndup(text, (size_t)(end - text));
    return 0;
}

static int parse_url(json_t *value, const struct target_policy *policy, struct integration *staged,
                     struct bh_error *err)
{
    const char *text = NULL;
    int result;

    result =
        get_string(value, "url", "a string with the https:// URL of your endpoint", &text, err);
    if (result != 0)
        return result;
    result = url_validate_target(text, policy, "url", err);
    if (result != 0)
        return result;

    free(staged->url);
    staged->url = xstrdup(text);
    return 0;
}

static int parse_provider(json_t *value, const struct target_policy *policy,
                          struct integration *staged, struct bh_error *err)
{
    const char *text = NULL;
    int result;

    result = get_string(value, "provider", "one of webhook, zapier, make or n8n", &text, err);
    if (result != 0)
        return result;
    for (size_t i = 0; i < sizeof(providers) / sizeof(providers[0]); i++) {
        if (strcmp(text, providers[i]) == 0) {
            snprintf(staged->provider, sizeof(staged->provider), "%s", providers[i]);
            return 0;
        }
    }
    return bh_error_set(err, BH_ERR_INVALID, "provider",
                        "provider \"%.*s\" is not supported; use webhook, zapier, make or n8n",
                        ECHO_MAX, text);
}

static int parse_signing(json_t *value, const struct target_policy *policy,
                         struct integration *staged, struct bh_error *err)
{
    if (!json_is_boolean(value))
        return bh_error_set(err, BH_ERR_MALFORMED, "signing", "signing must be true or false");
    staged->signing = json_is_true(value);
    return 0;
}

static int parse_events(json_t *value, const struct target_policy *policy,
                        struct integration *staged, struct bh_error *err)
{
    return event_names_to_mask(value, EVENT_SELECTABLE_MASK, "events", &staged->events, err);
}

static bool is_token_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* True for an RFC 9110 token: one or more tchar. */
static bool is_token(const char *name)
{
    if (name[0] == '\0')
        return false;
    for (const char *p = name; *p; p++) {
        if (!is_token_char((unsigned char)*p))
            return false;
    }
    return true;
}

bool header_name_is_reserved(const char *name)
{
    for (size_t i = 0; i < sizeof(reserved_names) / sizeof(reserved_names[0]); i++) {
        if (strcasecmp(name, reserved_names[i]) == 0)
            return true;
    }
    for (size_t i = 0; i < sizeof(reserved_prefixes) / sizeof(reserved_prefixes[0]); i++) {
        if (strncasecmp(name, reserved_prefixes[i], strlen(reserved_prefixes[i])) == 0)
            return true;
    }
    return false;
}

/* True when value is RFC 9110 field content: visible bytes, spaces and tabs, nothing else. */
static bool is_field_value(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];

        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static int check_header_name(const char *name, struct bh_error *err)
{
    size_t len = strlen(name);

    if (len == 0)
        return bh_error_set(err, BH_ERR_INVALID, "headers",
                            "headers has an empty header name; remove it or name the header");
    if (len > CUSTOM_HEADER_NAME_MAX)
        return bh_error_set(err, BH_ERR_INVALID, "headers",
                            "headers: the name \"%.32s...\" is longer than %d bytes; use a "
                            "shorter name",
                            name, CUSTOM_HEADER_NAME_MAX);
    if (!is_token(name))
        return bh_error_set(err, BH_ERR_INVALID, "headers",
                            "headers: \"%s\" is not a valid header name; use only letters, "
                            "digits and !#$%%&'*+-.^_`|~",
                            name);
    if (header_name_is_reserved(name))
        return bh_error_set(err, BH_ERR_INVALID, "headers",
                            "headers: \"%s\" cannot be set, because bearhook sets it itself or "
                            "it controls the connection; choose another name",
                            name);
    return 0;
}

static int check_header_value(const char *name, json_t *value, struct bh_error *err)
{
    const char *text = NULL;
    size_t len;

    if (!json_is_string(value))
        return bh_error_set(err, BH_ERR_MALFORMED, "headers",
                            "headers: the value of \"%s\" must be a string", name);
    text = json_string_value(value);
    len = json_string_length(value);
    if (len == 0)
        return bh_error_set(err, BH_ERR_INVALID, "headers",
                            "headers: the value of \"%s\" is empty; give a value or remove the "
                            "header",
                            name);
    if (len > CUSTOM_HEADER_VALUE_MAX)
        return bh_error_set(err, BH_ERR_INVALID, "headers",
                            "headers: the value of \"%s\" has %zu bytes; use at most %d", name, len,
                            CUSTOM_HEADER_VALUE_MAX);
    if (!is_field_value(text, len))
        return bh_error_set(err, BH_ERR_INVALID, "headers",
                            "headers: the value of \"%s\" contains CR, LF, NUL or another "
                            "control character; remove it",
                            name);
    return 0;
}

/* Checks one header against the ones before it; names are case-insensitive in HTTP. */
static int check_header_unique(const struct custom_header *headers, size_t count, const char *name,
                               struct bh_error *err)
{
    for (size_t i = 0; i < count; i++) {
        if (strcasecmp(headers[i].name, name) == 0)
            return bh_error_set(err, BH_ERR_INVALID, "headers",
                                "headers: \"%s\" and \"%s\" name the same header; keep one",
                                headers[i].name, name);
    }
    return 0;
}

static int parse_headers_object(json_t *object, struct custom_header **out, size_t *out_count,
                                struct bh_error *err)
{
    struct custom_header *headers = NULL;
    size_t count = 0;
    const char *name;
    json_t *value;
    int result = 0;

    if (!json_is_object(object))
        return bh_error_set(err, BH_ERR_MALFORMED, "headers",
                            "headers must be an object of names and values, like "
                            "{\"Authorization\": \"Bearer your-token\"}");
    if (json_object_size(object) > CUSTOM_HEADERS_MAX)
        return bh_error_set(err, BH_ERR_INVALID, "headers",
                            "headers has %zu entries; at most %d custom headers are allowed",
                            json_object_size(object), CUSTOM_HEADERS_MAX);

    headers = xcalloc(json_object_size(object), sizeof(*headers));
    json_object_foreach(object, name, value)
    {
        result = check_header_name(name, err);
        if (result == 0)
            result = check_header_value(name, value, err);
        if (result == 0)
            result = check_header_unique(headers, count, name, err);
        if (result != 0)
            goto fail;
        headers[count].name = xstrdup(name);
        headers[count].value = xstrdup(json_string_value(value));
        count++;
    }

    *out = headers;
    *out_count = count;
    return 0;

fail:
    custom_headers_free(headers, count);
    return result;
}

static int parse_headers(json_t *value, const struct target_policy *policy,
                         struct integration *staged, struct bh_error *err)
{
    struct custom_header *headers;
    size_t count;
    int result;

    result = parse_headers_object(value, &headers, &count, err);
    if (result != 0)
        return result;
    custom_headers_free(staged->headers, staged->header_count);
    staged->headers = headers;
    staged->header_count = count;
    return 0;
}

static int parse_max_retries(json_t *value, const struct target_policy *policy,
                             struct integration *staged, struct bh_error *err)
{
    return get_int_in_range(value, "maxRetries", MAX_RETRIES_MIN, MAX_RETRIES_MAX,
                            &staged->max_retries, err);
}

static int parse_timeout(json_t *value, const struct target_policy *policy,
                         struct integration *staged, struct bh_error *err)
{
    return get_int_in_range(value, "timeoutMs", TIMEOUT_MS_MIN, TIMEOUT_MS_MAX, &staged->timeout_ms,
                            err);
}

typedef int field_parser(json_t *value, const struct target_policy *policy,
                         struct integration *staged, struct bh_error *err);

static const struct {
    const char *key;
    enum field_bit bit;
    field_parser *parse;
} fields[] = {
    {"name", FIELD_NAME, parse_name},
    {"url", FIELD_URL, parse_url},
    {"provider", FIELD_PROVIDER, parse_provider},
    {"signing", FIELD_SIGNING, parse_signing},
    {"events", FIELD_EVENTS, parse_events},
    {"headers", FIELD_HEADERS, parse_headers},
    {"maxRetries", FIELD_MAX_RETRIES, parse_max_retries},
    {"timeoutMs", FIELD_TIMEOUT, parse_timeout},
};

#define FIELD_COUNT (sizeof(fields) / sizeof(fields[0]))
#define FIELD_LIST "name, url, provider, signing, events, headers, maxRetries and timeoutMs"

/*
 * Parses every field of input into staged and sets a bit in *present for each. A null value
 * counts as absent, so clients may send every key with nulls for the defaults.
 */
static int parse_fields(json_t *input, const struct target_policy *policy,
                        struct integration *staged, unsigned *present, struct bh_error *err)
{
    const char *key;
    json_t *value;

    *present = 0;
    if (!json_is_object(input))
        return bh_error_set(err, BH_ERR_MALFORMED, "",
                            "the request body must be a JSON object with the fields " FIELD_LIST);

    json_object_foreach(input, key, value)
    {
        size_t i = 0;
        int result;

        while (i < FIELD_COUNT && strcmp(key, fields[i].key) != 0)
            i++;
        if (i == FIELD_COUNT)
            return bh_error_set(err, BH_ERR_INVALID, key,
                                "unknown field \"%.*s\"; the fields are " FIELD_LIST, ECHO_MAX,
                                key);
        if (json_is_null(value))
            continue;
        result = fields[i].parse(value, policy, staged, err);
        if (result != 0)
            return result;
        *present |= fields[i].bit;
    }
    return 0;
}

static void append_allowed_names(struct buf *out, uint32_t allowed)
{
    bool first = true;

    for (int type = 0; type < EVENT_TYPE_COUNT; type++) {
        const struct event_type_info *info = event_type_info((enum event_type)type);

        if (!info->selectable || !(allowed & EVENT_MASK(type)))
            continue;
        buf_appendf(out, "%s%s", first ? "" : ", ", info->name);
        first = false;
    }
    if (first)
        buf_append_str(out, "(none)");
}

int integration_from_json(json_t *input, const struct target_policy *policy,
                          struct integration *out, struct bh_error *err)
{
    struct buf names = BUF_INIT;
    unsigned present = 0;
    int result;

    integration_init(out);
    result = parse_fields(input, policy, out, &present, err);
    if (result != 0)
        goto fail;

    if (!(present & FIELD_NAME)) {
        result = bh_error_set(err, BH_ERR_INVALID, "name",
                              "name is required; give the webhook a label such as \"CRM Sync\"");
    } else if (!(present & FIELD_URL)) {
        result = bh_error_set(err, BH_ERR_INVALID, "url",
                              "url is required; give the https:// URL of your endpoint");
    } else if (!(present & FIELD_EVENTS)) {
        append_allowed_names(&names, EVENT_SELECTABLE_MASK);
        result = bh_error_set(err, BH_ERR_INVALID, "events",
                              "events is required; list at least one of: %s", names.data);
    }
    buf_release(&names);
    if (result != 0)
        goto fail;
    return 0;

fail:
    integration_release(out);
    return result;
}

int integration_update_from_json(json_t *input, const struct target_policy *policy,
                                 struct integration *target, struct bh_error *err)
{
    struct integration staged;
    unsigned present = 0;
    int result;

    integration_init(&staged);
    result = parse_fields(input, policy, &staged, &present, err);
    if (result != 0)
        goto release;

    /* Each present field moves from staged to target; staged then frees what target had. */
    if (present & FIELD_NAME) {
        char *old = target->name;

        target->name = staged.name;
        staged.name = old;
    }
    if (present & FIELD_URL) {
        char *old = target->url;

        target->url = staged.url;
        staged.url = old;
    }
    if (present & FIELD_PROVIDER)
        memcpy(target->provider, staged.provider, sizeof(target->provider));
    if (present & FIELD_SIGNING) {
        target->signing = staged.signing;
        if (!target->signing) {
            free(target->secret);
            target->secret = NULL;
        }
    }
    if (present & FIELD_EVENTS)
        target->events = staged.events;
    if (present & FIELD_HEADERS) {
        struct custom_header *old = target->headers;
        size_t old_count = target->header_count;

        target->headers = staged.headers;
        target->header_count = staged.header_count;
        staged.headers = old;
        staged.header_count = old_count;
    }
    if (present & FIELD_MAX_RETRIES)
        target->max_retries = staged.max_retries;
    if (present & FIELD_TIMEOUT)
        target->timeout_ms = staged.timeout_ms;

release:
    integration_release(&staged);
    return result;
}

/* Returns an ISO-8601 string for a Unix time in milliseconds, or JSON null for 0 (never). */
static json_t *time_or_null(int64_t unix_ms)
{
    char text[ISO8601_MS_LEN + 1];

    if (unix_ms == 0)
        return json_null();
    clock_format_iso8601(unix_ms, text);
    return json_string(text);
}

static json_t *string_or_null(const char *text)
{
    return text ? json_string(text) : json_null();
}

static json_t *headers_to_json(const struct custom_header *headers, size_t count)
{
    json_t *object = json_object();

    for (size_t i = 0; i < count; i++)
        json_object_set_new(object, headers[i].name, json_string(headers[i].value));
    return object;
}

static json_t *stats_to_json(const struct integration *integration)
{
    json_t *stats = json_object();

    json_object_set_new(stats, "delivered", json_integer(integration->delivered));
    json_object_set_new(stats, "failed", json_integer(integration->failed));
    json_object_set_new(stats, "lastDeliveryAt", time_or_null(integration->last_delivery_ms));
    json_object_set_new(stats, "lastError", string_or_null(integration->last_error));
    json_object_set_new(stats, "lastErrorAt", time_or_null(integration->last_error_ms));
    return stats;
}

/*
 * Returns the events in mask grouped by category, in catalog order:
 * [{"category", "events": [{"type", "label"}]}]. The catalog lists each category's types
 * together, so a new group starts whenever the category changes.
 */
static json_t *events_by_category(uint32_t mask)
{
    json_t *groups = json_array();
    json_t *events = NULL;
    const char *category = NULL;

    for (int type = 0; type < EVENT_TYPE_COUNT; type++) {
        const struct event_type_info *info = event_type_info((enum event_type)type);

        if (!(mask & EVENT_MASK(type)))
            continue;
        if (!category || strcmp(category, info->category) != 0) {
            events = json_array();
            json_array_append_new(
                groups, json_pack("{s:s, s:o}", "category", info->category, "events", events));
            category = info->category;
        }
        json_array_append_new(events,
                              json_pack("{s:s, s:s}", "type", info->name, "label", info->label));
    }
    return groups;
}

json_t *integration_to_json(const struct integration *integration, bool include_secret)
{
    json_t *object = json_object();

    json_object_set_new(object, "id", json_string(integration->id));
    json_object_set_new(object, "name", string_or_null(integration->name));
    json_object_set_new(object, "url", string_or_null(integration->url));
    json_object_set_new(object, "provider", json_string(integration->provider));
    json_object_set_new(object, "signing", json_boolean(integration->signing));
    if (include_secret)
        json_object_set_new(object, "secret", string_or_null(integration->secret));
    json_object_set_new(object, "signatureVerification",
                        integration->signing ? json_null() : json_string(SIGNATURE_DISABLED_TEXT));
    json_object_set_new(object, "events", event_mask_to_json(integration->events));
    json_object_set_new(object, "eventsByCategory", events_by_category(integration->events));
    json_object_set_new(object, "headers",
                        headers_to_json(integration->headers, integration->header_count));
    json_object_set_new(object, "maxRetries", json_integer(integration->max_retries));
    json_object_set_new(object, "timeoutMs", json_integer(integration->timeout_ms));
    json_object_set_new(object, "status",
                        json_string(integration->status == INTEGRATION_ERROR ? "error" : "active"));
    json_object_set_new(object, "stats", stats_to_json(integration));
    json_object_set_new(object, "createdAt", time_or_null(integration->created_ms));
    json_object_set_new(object, "updatedAt", time_or_null(integration->updated_ms));
    return object;
}

/* Checks one array element and returns its event type; mask contains the ones seen before it. */
static int event_name_to_type(json_t *element, size_t index, uint32_t allowed, uint32_t mask,
                              const char *field, int *type, struct bh_error *err)
{
    struct buf names = BUF_INIT;
    const char *name;
    int result = 0;

    if (!json_is_string(element))
        return bh_error_set(err, BH_ERR_MALFORMED, field,
                            "%s[%zu] must be a string with an event type name", field, index);
    name = json_string_value(element);
    *type = event_type_from_name(name);

    append_allowed_names(&names, allowed);
    if (*type < 0)
        result = bh_error_set(err, BH_ERR_INVALID, field,
                              "%s: \"%.*s\" is not an event type; use one of: %s", field, ECHO_MAX,
                              name, names.data);
    else if (!event_type_info((enum event_type) * type)->selectable)
        result = bh_error_set(err, BH_ERR_INVALID, field,
                              "%s: \"%s\" is sent only by a manual lead export and cannot be "
                              "selected; use one of: %s",
                              field, name, names.data);
    else if (!(allowed & EVENT_MASK(*type)))
        result =
            bh_error_set(err, BH_ERR_INVALID, field,
                         "%s: \"%s\" is not allowed here; use one of: %s", field, name, names.data);
    else if (mask & EVENT_MASK(*type))
        result =
            bh_error_set(err, BH_ERR_INVALID, field,
                         "%s lists \"%s\" more than once; list each event type once", field, name);
    buf_release(&names);
    return result;
}

int event_names_to_mask(json_t *names, uint32_t allowed, const char *field, uint32_t *mask,
                        struct bh_error *err)
{
    struct buf allowed_names = BUF_INIT;
    uint32_t seen = 0;
    size_t index;
    json_t *element;
    int result;

    if (!json_is_array(names))
        return bh_error_set(err, BH_ERR_MALFORMED, field, "%s must be an array of event type names",
                            field);
    if (json_array_size(names) == 0) {
        append_allowed_names(&allowed_names, allowed);
        result = bh_error_set(err, BH_ERR_INVALID, field, "%s is empty; list at least one of: %s",
                              field, allowed_names.data);
        buf_release(&allowed_names);
        return result;
    }

    json_array_foreach(names, index, element)
    {
        int type = -1;

        result = event_name_to_type(element, index, allowed, seen, field, &type, err);
        if (result != 0)
            return result;
        seen |= EVENT_MASK(type);
    }
    *mask = seen;
    return 0;
}

json_t *event_mask_to_json(uint32_t mask)
{
    json_t *array = json_array();

    for (int type = 0; type < EVENT_TYPE_COUNT; type++) {
        if (mask & EVENT_MASK(type))
            json_array_append_new(array, json_string(event_type_info((enum event_type)type)->name));
    }
    return array;
}

char *custom_headers_to_text(const struct custom_header *headers, size_t count)
{
    json_t *object = headers_to_json(headers, count);
    char *text = json_dumps(object, JSON_COMPACT);

    json_decref(object);
    /* For an object of strings, json_dumps returns NULL only when an allocation fails. */
    if (!text)
        abort();
    return text;
}

int custom_headers_from_text(const char *text, struct custom_header **headers, size_t *count)
{
    json_t *object;
    int result;

    *headers = NULL;
    *count = 0;
    if (!text || text[0] == '\0')
        return 0;

    object = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    if (!object)
        return BH_ERR_INVALID;
    /* Stored headers passed these checks when saved; checking again keeps a damaged row out. */
    result = parse_headers_object(object, headers, count, NULL);
    json_decref(object);
    return result == 0 ? 0 : BH_ERR_INVALID;
}
