#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/events.h"
#include "core/integration.h"
#include "util/alloc.h"

#define VALID_FIELDS                                                                               \
    "\"name\": \"CRM Sync\", \"url\": \"https://example.com/hook\", \"events\": "                  \
    "[\"message_sent\"]"

static const struct target_policy https_only = {false, {NULL, 0}};

/* Parses text as JSON for a test; a syntax error in a test fails it. */
static json_t *json_from(const char *text)
{
    json_error_t error;
    json_t *value = json_loads(text, 0, &error);

    if (!value)
        fail_msg("bad test JSON at %d: %s in %s", error.position, error.text, text);
    return value;
}

/* Runs integration_from_json on text; returns its status and fills err. */
static int create_from(const char *text, struct integration *out, struct bh_error *err)
{
    json_t *input = json_from(text);
    int result;

    bh_error_clear(err);
    result = integration_from_json(input, &https_only, out, err);
    json_decref(input);
    return result;
}

/* Asserts that text is rejected with status, naming field, with a message containing part. */
static void assert_create_fails(const char *text, int status, const char *field, const char *part)
{
    struct integration integration;
    struct bh_error err;
    int result;

    integration_init(&integration);
    result = create_from(text, &integration, &err);
    if (result == 0)
        fail_msg("accepted %s", text);
    assert_int_equal(result, status);
    assert_string_equal(err.field, field);
    if (!strstr(err.message, part))
        fail_msg("message for %s was \"%s\", expected it to contain \"%s\"", text, err.message,
                 part);
    /* A failed create leaves nothing allocated. */
    assert_null(integration.name);
    assert_null(integration.url);
    assert_null(integration.headers);
    integration_release(&integration);
}

/* Asserts that the extra fields, added to the valid ones, are accepted. */
static void assert_create_ok(const char *extra, struct integration *out)
{
    char text[8192];
    struct bh_error err;

    snprintf(text, sizeof(text), "{" VALID_FIELDS "%s%s}", extra[0] ? ", " : "", extra);
    if (create_from(text, out, &err) != 0)
        fail_msg("rejected %s: %s", text, err.message);
}

static void assert_extra_fails(const char *extra, int status, const char *field, const char *part)
{
    char text[8192];

    snprintf(text, sizeof(text), "{" VALID_FIELDS ", %s}", extra);
    assert_create_fails(text, status, field, part);
}

static void integration_defaults_applied(void **state)
{
    struct integration integration;

    integration_init(&integration);
    assert_create_ok("", &integration);
    assert_string_equal(integration.name, "CRM Sync");
    assert_string_equal(integration.url, "https://example.com/hook");
    assert_string_equal(integration.provider, "webhook");
    assert_true(integration.signing);
    assert_null(integration.secret);
    assert_int_equal(integration.events, EVENT_MASK(EVENT_MESSAGE_SENT));
    assert_int_equal(integration.header_count, 0);
    assert_int_equal(integration.max_retries, 3);
    assert_int_equal(integration.timeout_ms, 30000);
    assert_int_equal(integration.status, INTEGRATION_ACTIVE);
    integration_release(&integration);

    /* null counts as absent, so the defaults apply. */
    assert_create_ok("\"maxRetries\": null, \"timeoutMs\": null, \"provider\": null", &integration);
    assert_int_equal(integration.max_retries, 3);
    assert_int_equal(integration.timeout_ms, 30000);
    assert_string_equal(integration.provider, "webhook");
    integration_release(&integration);
}

static void integration_all_fields(void **state)
{
    static const char *const providers[] = {"webhook", "zapier", "make", "n8n"};
    struct integration integration;

    assert_create_ok("\"provider\": \"n8n\", \"signing\": false, \"maxRetries\": 5, "
                     "\"timeoutMs\": 60000, \"headers\": {\"Authorization\": \"Bearer t\"}",
                     &integration);
    assert_string_equal(integration.provider, "n8n");
    assert_false(integration.signing);
    assert_int_equal(integration.max_retries, 5);
    assert_int_equal(integration.timeout_ms, 60000);
    assert_int_equal(integration.header_count, 1);
    assert_string_equal(integration.headers[0].name, "Authorization");
    assert_string_equal(integration.headers[0].value, "Bearer t");
    integration_release(&integration);

    for (size_t i = 0; i < sizeof(providers) / sizeof(providers[0]); i++) {
        char extra[64];

        snprintf(extra, sizeof(extra), "\"provider\": \"%s\"", providers[i]);
        assert_create_ok(extra, &integration);
        assert_string_equal(integration.provider, providers[i]);
        integration_release(&integration);
    }
}

static void integration_range_edges(void **state)
{
    struct integration integration;

    assert_create_ok("\"maxRetries\": 1, \"timeoutMs\": 5000", &integration);
    assert_int_equal(integration.max_retries, 1);
    assert_int_equal(integration.timeout_ms, 5000);
    integration_release(&integration);

    assert_extra_fails("\"maxRetries\": 0", BH_ERR_INVALID, "maxRetries",
                       "maxRetries 0 is out of range; use a whole number from 1 to 5");
    assert_extra_fails("\"maxRetries\": 6", BH_ERR_INVALID, "maxRetries",
                       "maxRetries 6 is out of range; use a whole number from 1 to 5");
    assert_extra_fails("\"maxRetries\": -1", BH_ERR_INVALID, "maxRetries", "from 1 to 5");
    assert_extra_fails("\"maxRetries\": 4294967299", BH_ERR_INVALID, "maxRetries",
                       "maxRetries 4294967299 is out of range");
    assert_extra_fails("\"maxRetries\": \"3\"", BH_ERR_MALFORMED, "maxRetries",
                       "maxRetries must be a whole number from 1 to 5");
    assert_extra_fails("\"maxRetries\": 3.0", BH_ERR_MALFORMED, "maxRetries",
                       "must be a whole number");
    assert_extra_fails("\"timeoutMs\": 4999", BH_ERR_INVALID, "timeoutMs",
                       "timeoutMs 4999 is out of range; use a whole number from 5000 to 60000");
    assert_extra_fails("\"timeoutMs\": 60001", BH_ERR_INVALID, "timeoutMs",
                       "timeoutMs 60001 is out of range; use a whole number from 5000 to 60000");
    assert_extra_fails("\"timeoutMs\": true", BH_ERR_MALFORMED, "timeoutMs", "from 5000 to 60000");
    assert_extra_fails("\"provider\": \"Zapier\"", BH_ERR_INVALID, "provider",
                       "provider \"Zapier\" is not supported; use webhook, zapier, make or n8n");
    assert_extra_fails("\"provider\": 1", BH_ERR_MALFORMED, "provider", "provider must be");
    assert_extra_fails("\"signing\": \"yes\"", BH_ERR_MALFORMED, "signing",
                       "signing must be true or false");
}

static void integration_rejects_unknown_field(void **state)
{
    assert_extra_fails("\"colour\": \"blue\"", BH_ERR_INVALID, "colour",
                       "unknown field \"colour\"; the fields are name, url, provider, signing, "
                       "events, headers, maxRetries and timeoutMs");
    assert_extra_fails("\"MaxRetries\": 3", BH_ERR_INVALID, "MaxRetries",
                       "unknown field \"MaxRetries\"");
    assert_create_fails("[1, 2]", BH_ERR_MALFORMED, "", "must be a JSON object");
}

static void integration_required_fields(void **state)
{
    assert_create_fails("{\"url\": \"https://example.com/\", \"events\": [\"message_sent\"]}",
                        BH_ERR_INVALID, "name", "name is required");
    assert_create_fails("{\"name\": \"A\", \"events\": [\"message_sent\"]}", BH_ERR_INVALID, "url",
                        "url is required");
    assert_create_fails("{\"name\": \"A\", \"url\": \"https://example.com/\"}", BH_ERR_INVALID,
                        "events",
                        "events is required; list at least one of: connection_request_sent, "
                        "connection_request_accepted, message_sent, message_replied");
    assert_create_fails("{\"name\": null, \"url\": \"https://example.com/\", \"events\": "
                        "[\"message_sent\"]}",
                        BH_ERR_INVALID, "name", "name is required");
    assert_create_fails("{\"name\": \"A\", \"url\": \"http://example.com/\", \"events\": "
                        "[\"message_sent\"]}",
                        BH_ERR_INVALID, "url", "must start with https://");
    assert_create_fails("{\"name\": \"A\", \"url\": \"https://192.168.1.10/\", \"events\": "
                        "[\"message_sent\"]}",
                        BH_ERR_INVALID, "url", "url host 192.168.1.10 is a private address");
    assert_create_fails("{\"name\": \"A\", \"url\": 5, \"events\": [\"message_sent\"]}",
                        BH_ERR_MALFORMED, "url", "url must be a string");
}

/* Builds {"name": <name>, ...valid rest} for the name tests. */
static void name_json(const char *name_literal, char *out, size_t size)
{
    snprintf(out, size,
             "{\"name\": %s, \"url\": \"https://example.com/\", \"events\": [\"message_sent\"]}",
             name_literal);
}

static void integration_name_rules(void **state)
{
    struct integration integration;
    struct bh_error err;
    char text[4096];
    char name[1024];

    name_json("\"  CRM  Sync \"", text, sizeof(text));
    assert_int_equal(create_from(text, &integration, &err), 0);
    assert_string_equal(integration.name, "CRM  Sync");
    integration_release(&integration);

    /* 100 two-byte characters are 100 characters, not 200. */
    strcpy(name, "\"");
    for (int i = 0; i < 100; i++)
        strcat(name, "\xc3\xa9");
    strcat(name, "\"");
    name_json(name, text, sizeof(text));
    assert_int_equal(create_from(text, &integration, &err), 0);
    assert_int_equal(strlen(integration.name), 200);
    integration_release(&integration);

    strcpy(name + strlen(name) - 1, "x\"");
    name_json(name, text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "name",
                        "name has 101 characters; use 1 to 100 characters");

    name_json("\"x\"", text, sizeof(text));
    assert_int_equal(create_from(text, &integration, &err), 0);
    integration_release(&integration);

    name_json("\"\"", text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "name", "name is empty");
    name_json("\"   \"", text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "name", "name is empty");
    name_json("\"a\\nb\"", text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "name", "name contains a control character");
    name_json("\"a\\tb\"", text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "name", "control character");
    name_json("\"a\\u0085b\"", text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "name", "control character");
    name_json("\"a\\u007fb\"", text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "name", "control character");
    name_json("\"a\\u0000b\"", text, sizeof(text));
    {
        json_error_t error;
        json_t *input = json_loads(text, JSON_ALLOW_NUL, &error);

        assert_non_null(input);
        integration_init(&integration);
        assert_int_equal(integration_from_json(input, &https_only, &integration, &err),
                         BH_ERR_INVALID);
        assert_string_equal(err.field, "name");
        assert_non_null(strstr(err.message, "NUL"));
        json_decref(input);
    }
    name_json("42", text, sizeof(text));
    assert_create_fails(text, BH_ERR_MALFORMED, "name", "name must be a string");
}

/* Builds the valid request with headers set to the given object text. */
static void headers_json(const char *object, char *out, size_t size)
{
    snprintf(out, size, "{" VALID_FIELDS ", \"headers\": %s}", object);
}

static void integration_reserved_headers(void **state)
{
    static const char *const reserved[] = {
        "Content-Type",
        "content-length",
        "USER-AGENT",
        "Host",
        "Transfer-Encoding",
        "connection",
        "Expect",
        "X-Webhook-Id",
        "x-webhook-id",
        "X-Bearconnect-Signature",
        "x-bearconnect-timestamp",
        "X-BEARCONNECT-Anything",
        "Webhook-Signature",
        "webhook-id",
        "WEBHOOK-TIMESTAMP",
        "TE",
        "Upgrade",
        "Keep-Alive",
    };
    static const char *const allowed[] = {
        "Authorization", "X-Webhook", "X-Webhook-Ids", "X-Bearconnect",
        "Webhooks-Id",   "X-Api-Key", "Accept",
    };
    char text[512];
    char object[256];

    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        assert_true(header_name_is_reserved(reserved[i]));
        snprintf(object, sizeof(object), "{\"%s\": \"v\"}", reserved[i]);
        headers_json(object, text, sizeof(text));
        assert_create_fails(text, BH_ERR_INVALID, "headers", "cannot be set");
    }
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        struct integration integration;

        assert_false(header_name_is_reserved(allowed[i]));
        snprintf(object, sizeof(object), "\"headers\": {\"%s\": \"v\"}", allowed[i]);
        assert_create_ok(object, &integration);
        assert_int_equal(integration.header_count, 1);
        integration_release(&integration);
    }
}

static void integration_header_values(void **state)
{
    static const char *const bad_values[] = {
        "\"a\\r\\nX-Injected: 1\"",
        "\"a\\nb\"",
        "\"a\\rb\"",
        "\"a\\u0001b\"",
        "\"\\u007f\"",
        "\"a\\u001bb\"",
    };
    struct integration integration;
    struct bh_error err;
    char text[8192];
    char object[4096];

    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        snprintf(object, sizeof(object), "{\"X-Token\": %s}", bad_values[i]);
        headers_json(object, text, sizeof(text));
        assert_create_fails(text, BH_ERR_INVALID, "headers",
                            "headers: the value of \"X-Token\" contains CR, LF, NUL or another "
                            "control character");
    }

    /* NUL needs JSON_ALLOW_NUL to reach the check at all. */
    headers_json("{\"X-Token\": \"a\\u0000b\"}", text, sizeof(text));
    {
        json_t *input = json_loads(text, JSON_ALLOW_NUL, NULL);

        assert_non_null(input);
        integration_init(&integration);
        assert_int_equal(integration_from_json(input, &https_only, &integration, &err),
                         BH_ERR_INVALID);
        assert_non_null(strstr(err.message, "contains CR, LF, NUL"));
        json_decref(input);
    }

    /* Tabs and non-ASCII bytes are field content. */
    assert_create_ok("\"headers\": {\"X-Token\": \"a\\tb caf\\u00e9\"}", &integration);
    assert_string_equal(integration.headers[0].value, "a\tb caf\xc3\xa9");
    integration_release(&integration);

    headers_json("{\"X-Token\": \"\"}", text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "headers", "the value of \"X-Token\" is empty");
    headers_json("{\"X-Token\": 5}", text, sizeof(text));
    assert_create_fails(text, BH_ERR_MALFORMED, "headers",
                        "the value of \"X-Token\" must be a string");
    headers_json("[\"X-Token\"]", text, sizeof(text));
    assert_create_fails(text, BH_ERR_MALFORMED, "headers", "headers must be an object");

    /* 2048 bytes pass; 2049 fail. */
    strcpy(object, "\"headers\": {\"X-Long\": \"");
    memset(object + strlen(object), 'v', CUSTOM_HEADER_VALUE_MAX);
    strcpy(object + strlen("\"headers\": {\"X-Long\": \"") + CUSTOM_HEADER_VALUE_MAX, "\"}");
    assert_create_ok(object, &integration);
    assert_int_equal(strlen(integration.headers[0].value), CUSTOM_HEADER_VALUE_MAX);
    integration_release(&integration);
    strcpy(object + strlen(object) - 2, "v\"}");
    snprintf(text, sizeof(text), "{" VALID_FIELDS ", %s}", object);
    assert_create_fails(text, BH_ERR_INVALID, "headers", "has 2049 bytes; use at most 2048");
}

static void integration_header_names(void **state)
{
    static const char *const bad_names[] = {"X Token", "X:Token", "X-T\\u00e9",
                                            "X(1)",    "X/1",     "X\\\"1"};
    struct integration integration;
    char text[8192];
    char object[4096];
    char name[CUSTOM_HEADER_NAME_MAX + 2];

    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        snprintf(object, sizeof(object), "{\"%s\": \"v\"}", bad_names[i]);
        headers_json(object, text, sizeof(text));
        assert_create_fails(text, BH_ERR_INVALID, "headers", "is not a valid header name");
    }
    headers_json("{\"\": \"v\"}", text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "headers", "headers has an empty header name");

    assert_create_ok("\"headers\": {\"!#$%&'*+-.^_`|~09az\": \"v\"}", &integration);
    integration_release(&integration);

    memset(name, 'X', CUSTOM_HEADER_NAME_MAX);
    name[CUSTOM_HEADER_NAME_MAX] = '\0';
    snprintf(object, sizeof(object), "\"headers\": {\"%s\": \"v\"}", name);
    assert_create_ok(object, &integration);
    integration_release(&integration);
    strcat(name, "X");
    snprintf(object, sizeof(object), "{\"%s\": \"v\"}", name);
    headers_json(object, text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "headers", "is longer than 128 bytes");

    headers_json("{\"X-Token\": \"1\", \"x-token\": \"2\"}", text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "headers",
                        "headers: \"X-Token\" and \"x-token\" name the same header; keep one");
}

static void integration_header_count(void **state)
{
    struct integration integration;
    char object[2048];
    char text[4096];
    size_t len;

    /* 20 headers pass; 21 fail. */
    len = (size_t)snprintf(object, sizeof(object), "\"headers\": {");
    for (int i = 0; i < CUSTOM_HEADERS_MAX; i++)
        len += (size_t)snprintf(object + len, sizeof(object) - len, "%s\"X-H%d\": \"%d\"",
                                i ? ", " : "", i, i);
    snprintf(object + len, sizeof(object) - len, "}");
    assert_create_ok(object, &integration);
    assert_int_equal(integration.header_count, CUSTOM_HEADERS_MAX);
    assert_string_equal(integration.headers[19].name, "X-H19");
    integration_release(&integration);

    len = (size_t)snprintf(object, sizeof(object), "{");
    for (int i = 0; i <= CUSTOM_HEADERS_MAX; i++)
        len += (size_t)snprintf(object + len, sizeof(object) - len, "%s\"X-H%d\": \"%d\"",
                                i ? ", " : "", i, i);
    snprintf(object + len, sizeof(object) - len, "}");
    headers_json(object, text, sizeof(text));
    assert_create_fails(text, BH_ERR_INVALID, "headers",
                        "headers has 21 entries; at most 20 custom headers are allowed");
}

static void integration_event_lists(void **state)
{
    static const char *const prefix =
        "{\"name\": \"A\", \"url\": \"https://example.com/\", \"events\": ";
    struct integration integration;
    struct bh_error err;
    char text[512];

    snprintf(text, sizeof(text), "%s[]}", prefix);
    assert_create_fails(text, BH_ERR_INVALID, "events",
                        "events is empty; list at least one of: connection_request_sent, "
                        "connection_request_accepted, message_sent, message_replied");
    snprintf(text, sizeof(text), "%s[\"message_sent\", \"message_sent\"]}", prefix);
    assert_create_fails(text, BH_ERR_INVALID, "events",
                        "events lists \"message_sent\" more than once");
    snprintf(text, sizeof(text), "%s[\"lead_replied\"]}", prefix);
    assert_create_fails(text, BH_ERR_INVALID, "events",
                        "events: \"lead_replied\" is not an event type; use one of: "
                        "connection_request_sent, connection_request_accepted, message_sent, "
                        "message_replied");
    snprintf(text, sizeof(text), "%s[\"lead_added_to_campaign\"]}", prefix);
    assert_create_fails(text, BH_ERR_INVALID, "events",
                        "is sent only by a manual lead export and cannot be selected");
    snprintf(text, sizeof(text), "%s[\"Message_Sent\"]}", prefix);
    assert_create_fails(text, BH_ERR_INVALID, "events", "is not an event type");
    snprintf(text, sizeof(text), "%s\"message_sent\"}", prefix);
    assert_create_fails(text, BH_ERR_MALFORMED, "events", "events must be an array");
    snprintf(text, sizeof(text), "%s[\"message_sent\", 3]}", prefix);
    assert_create_fails(text, BH_ERR_MALFORMED, "events", "events[1] must be a string");

    snprintf(text, sizeof(text),
             "%s[\"message_replied\", \"connection_request_sent\", \"message_sent\", "
             "\"connection_request_accepted\"]}",
             prefix);
    assert_int_equal(create_from(text, &integration, &err), 0);
    assert_int_equal(integration.events, EVENT_SELECTABLE_MASK);
    integration_release(&integration);
}

static void event_mask_subset_of_allowed(void **state)
{
    uint32_t allowed = EVENT_MASK(EVENT_MESSAGE_SENT) | EVENT_MASK(EVENT_MESSAGE_REPLIED);
    uint32_t mask = 0;
    struct bh_error err;
    json_t *names;
    json_t *back;
    char *text;

    names = json_from("[\"message_replied\"]");
    assert_int_equal(event_names_to_mask(names, allowed, "enabledEvents", &mask, &err), 0);
    assert_int_equal(mask, EVENT_MASK(EVENT_MESSAGE_REPLIED));
    json_decref(names);

    names = json_from("[\"connection_request_sent\"]");
    bh_error_clear(&err);
    assert_int_equal(event_names_to_mask(names, allowed, "enabledEvents", &mask, &err),
                     BH_ERR_INVALID);
    assert_string_equal(err.field, "enabledEvents");
    assert_string_equal(err.message, "enabledEvents: \"connection_request_sent\" is not allowed "
                                     "here; use one of: message_sent, message_replied");
    json_decref(names);

    /* Catalog order, whatever order the bits were set in. */
    back = event_mask_to_json(EVENT_MASK(EVENT_MESSAGE_REPLIED) |
                              EVENT_MASK(EVENT_CONNECTION_REQUEST_SENT));
    text = json_dumps(back, JSON_COMPACT);
    assert_string_equal(text, "[\"connection_request_sent\",\"message_replied\"]");
    free(text);
    json_decref(back);
}

static const char *const output_keys[] = {
    "id",        "name",
    "url",       "provider",
    "signing",   "signatureVerification",
    "events",    "eventsByCategory",
    "headers",   "maxRetries",
    "timeoutMs", "status",
    "stats",     "createdAt",
    "updatedAt",
};

static void fill_sample(struct integration *integration)
{
    assert_create_ok("\"headers\": {\"Authorization\": \"Bearer t\", \"X-Team\": \"sales\"}",
                     integration);
    strcpy(integration->id, "65abc123def4567890ab0005");
    strcpy(integration->user_id, "65abc123def4567890ab0004");
    integration->secret = xstrdup("whsec_c2VjcmV0");
    integration->created_ms = 1770978600000; /* 2026-02-13T10:30:00.000Z */
    integration->updated_ms = 1770978601234;
}

static void integration_json_form(void **state)
{
    struct integration integration;
    json_t *object;
    json_t *stats;
    const char *key;
    json_t *value;
    size_t index = 0;

    fill_sample(&integration);
    object = integration_to_json(&integration, false);

    json_object_foreach(object, key, value)
    {
        assert_true(index < sizeof(output_keys) / sizeof(output_keys[0]));
        assert_string_equal(key, output_keys[index]);
        index++;
    }
    assert_int_equal(index, sizeof(output_keys) / sizeof(output_keys[0]));

    assert_null(json_object_get(object, "secret"));
    assert_string_equal(json_string_value(json_object_get(object, "id")),
                        "65abc123def4567890ab0005");
    assert_true(json_is_null(json_object_get(object, "signatureVerification")));
    assert_string_equal(json_string_value(json_object_get(object, "status")), "active");
    assert_int_equal(json_integer_value(json_object_get(object, "maxRetries")), 3);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(object, "headers"), "X-Team")), "sales");
    assert_string_equal(json_string_value(json_object_get(object, "createdAt")),
                        "2026-02-13T10:30:00.000Z");
    assert_string_equal(json_string_value(json_object_get(object, "updatedAt")),
                        "2026-02-13T10:30:01.234Z");
    assert_string_equal(json_string_value(json_array_get(json_object_get(object, "events"), 0)),
                        "message_sent");

    stats = json_object_get(object, "stats");
    assert_int_equal(json_integer_value(json_object_get(stats, "delivered")), 0);
    assert_int_equal(json_integer_value(json_object_get(stats, "failed")), 0);
    assert_true(json_is_null(json_object_get(stats, "lastDeliveryAt")));
    assert_true(json_is_null(json_object_get(stats, "lastError")));
    assert_true(json_is_null(json_object_get(stats, "lastErrorAt")));
    json_decref(object);
    integration_release(&integration);
}

static void integration_json_secret_and_stats(void **state)
{
    struct integration integration;
    json_t *object;
    json_t *stats;

    fill_sample(&integration);
    object = integration_to_json(&integration, true);
    assert_string_equal(json_string_value(json_object_get(object, "secret")), "whsec_c2VjcmV0");
    json_decref(object);

    integration.signing = false;
    free(integration.secret);
    integration.secret = NULL;
    integration.status = INTEGRATION_ERROR;
    integration.delivered = 7;
    integration.failed = 2;
    integration.last_delivery_ms = 1770978600000;
    integration.last_error = xstrdup("HTTP 500 from the endpoint");
    integration.last_error_ms = 1770978600500;

    object = integration_to_json(&integration, false);
    assert_null(json_object_get(object, "secret"));
    assert_string_equal(json_string_value(json_object_get(object, "signatureVerification")),
                        "Signature verification is disabled.");
    assert_false(json_is_true(json_object_get(object, "signing")));
    assert_string_equal(json_string_value(json_object_get(object, "status")), "error");
    stats = json_object_get(object, "stats");
    assert_int_equal(json_integer_value(json_object_get(stats, "delivered")), 7);
    assert_int_equal(json_integer_value(json_object_get(stats, "failed")), 2);
    assert_string_equal(json_string_value(json_object_get(stats, "lastDeliveryAt")),
                        "2026-02-13T10:30:00.000Z");
    assert_string_equal(json_string_value(json_object_get(stats, "lastError")),
                        "HTTP 500 from the endpoint");
    assert_string_equal(json_string_value(json_object_get(stats, "lastErrorAt")),
                        "2026-02-13T10:30:00.500Z");
    json_decref(object);
    integration_release(&integration);
}

static void custom_headers_text_round_trip(void **state)
{
    struct custom_header headers[] = {
        {"Authorization", "Bearer \"quoted\" \\ token"},
        {"X-Team", "caf\xc3\xa9\tsales"},
        {"X-Empty-Looking", " "},
    };
    struct custom_header *back = NULL;
    size_t count = 0;
    char *text;

    text = custom_headers_to_text(headers, 3);
    assert_int_equal(custom_headers_from_text(text, &back, &count), 0);
    assert_int_equal(count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(back[i].name, headers[i].name);
        assert_string_equal(back[i].value, headers[i].value);
    }
    custom_headers_free(back, count);
    free(text);

    text = custom_headers_to_text(NULL, 0);
    assert_string_equal(text, "{}");
    assert_int_equal(custom_headers_from_text(text, &back, &count), 0);
    assert_int_equal(count, 0);
    custom_headers_free(back, count);
    free(text);

    assert_int_equal(custom_headers_from_text(NULL, &back, &count), 0);
    assert_int_equal(count, 0);
    assert_null(back);

    /* Damaged or unsafe stored text is rejected, never passed on to a request. */
    assert_int_equal(custom_headers_from_text("[1]", &back, &count), BH_ERR_INVALID);
    assert_int_equal(custom_headers_from_text("{\"X\": ", &back, &count), BH_ERR_INVALID);
    assert_int_equal(custom_headers_from_text("{\"X\": \"a\\r\\nb\"}", &back, &count),
                     BH_ERR_INVALID);
    assert_int_equal(custom_headers_from_text("{\"Host\": \"x\"}", &back, &count), BH_ERR_INVALID);
    assert_null(back);
    assert_int_equal(count, 0);
}

static void integration_update_partial(void **state)
{
    struct integration integration;
    struct bh_error err;
    json_t *input;

    fill_sample(&integration);

    input = json_from("{\"name\": \"Renamed\", \"maxRetries\": 5, \"headers\": {}}");
    assert_int_equal(integration_update_from_json(input, &https_only, &integration, &err), 0);
    json_decref(input);
    assert_string_equal(integration.name, "Renamed");
    assert_int_equal(integration.max_retries, 5);
    assert_int_equal(integration.header_count, 0);
    assert_string_equal(integration.url, "https://example.com/hook");
    assert_int_equal(integration.timeout_ms, 30000);
    assert_string_equal(integration.secret, "whsec_c2VjcmV0");

    /* A bad field leaves every field as it was, including the valid ones before it. */
    input = json_from("{\"name\": \"Other\", \"timeoutMs\": 1}");
    assert_int_equal(integration_update_from_json(input, &https_only, &integration, &err),
                     BH_ERR_INVALID);
    json_decref(input);
    assert_string_equal(err.field, "timeoutMs");
    assert_string_equal(integration.name, "Renamed");
    assert_int_equal(integration.timeout_ms, 30000);

    input = json_from("{\"signing\": false}");
    assert_int_equal(integration_update_from_json(input, &https_only, &integration, &err), 0);
    json_decref(input);
    assert_false(integration.signing);
    assert_null(integration.secret);

    input = json_from("{\"secret\": \"x\"}");
    assert_int_equal(integration_update_from_json(input, &https_only, &integration, &err),
                     BH_ERR_INVALID);
    json_decref(input);
    assert_string_equal(err.field, "secret");

    integration_release(&integration);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(integration_defaults_applied),
        cmocka_unit_test(integration_all_fields),
        cmocka_unit_test(integration_range_edges),
        cmocka_unit_test(integration_rejects_unknown_field),
        cmocka_unit_test(integration_required_fields),
        cmocka_unit_test(integration_name_rules),
        cmocka_unit_test(integration_reserved_headers),
        cmocka_unit_test(integration_header_values),
        cmocka_unit_test(integration_header_names),
        cmocka_unit_test(integration_header_count),
        cmocka_unit_test(integration_event_lists),
        cmocka_unit_test(event_mask_subset_of_allowed),
        cmocka_unit_test(integration_json_form),
        cmocka_unit_test(integration_json_secret_and_stats),
        cmocka_unit_test(custom_headers_text_round_trip),
        cmocka_unit_test(integration_update_partial),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
