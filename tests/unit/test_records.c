/*
 * record_normalize: canonical key order, defaults, merging over a stored record, and one check
 * per validation rule with the status, the field path and the part of the message that names
 * the fix. Also record_merge and record_fetch_text on a store in memory: the stored text they
 * return for a record that a merge leaves unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/api.h"
#include "core/ids.h"
#include "core/records.h"
#include "store/store.h"

static const char *const lead_keys[] = {
    "id",        "firstName",        "lastName",        "email",
    "phone",     "profileUrl",       "profileHeadline", "profileImageUrl",
    "position",  "companyName",      "location",        "website",
    "education", "publicIdentifier", "connectionCount", "followerCount",
    "isPremium", "memberUrn",        "stage",           "createdAt",
};

/* The documented example lead, with its keys out of order. */
static const char example_lead[] =
    "{\"createdAt\":\"2026-01-15T08:00:00.000Z\",\"firstName\":\"Jane\",\"lastName\":\"Smith\","
    "\"id\":\"65abc123def4567890ghij01\",\"email\":\"jane.smith@example.com\","
    "\"phone\":\"+1-555-0123\",\"profileUrl\":\"https://www.linkedin.com/in/janesmith\","
    "\"profileHeadline\":\"VP of Sales at Acme Corp\","
    "\"profileImageUrl\":\"https://media.licdn.com/...\",\"position\":\"VP of Sales\","
    "\"companyName\":\"Acme Corp\",\"location\":\"San Francisco, CA\","
    "\"website\":\"https://acme.com\",\"education\":\"Stanford University\","
    "\"publicIdentifier\":\"janesmith\",\"connectionCount\":500,\"followerCount\":1200,"
    "\"isPremium\":true,\"memberUrn\":\"urn:li:member:123456789\",\"stage\":\"connected\"}";

static json_t *load(const char *text)
{
    json_error_t parse_error;
    json_t *value = json_loads(text, JSON_DECODE_ANY, &parse_error);

    if (!value)
        fail_msg("test input is not JSON: %s in %s", parse_error.text, text);
    return value;
}

static json_t *normalize_value(enum record_kind kind, json_t *input, const json_t *base)
{
    struct bh_error err;
    json_t *record;

    bh_error_clear(&err);
    record = record_normalize(kind, input, base, NULL, &err);
    if (!record)
        fail_msg("rejected: %s: %s", err.field, err.message);
    return record;
}

static json_t *normalize_text(enum record_kind kind, const char *text, const json_t *base)
{
    json_t *input = load(text);
    json_t *record = normalize_value(kind, input, base);

    json_decref(input);
    return record;
}

/* Checks a rejection: NULL result, then status, field and a part of the message, each alone. */
static void check_rejected(int line, enum record_kind kind, json_t *input, const json_t *base,
                           int status, const char *field, const char *message_part)
{
    struct bh_error err;
    json_t *record;

    bh_error_clear(&err);
    record = record_normalize(kind, input, base, NULL, &err);
    if (record) {
        char *text = json_dumps(record, JSON_COMPACT);

        print_error("line %d: accepted, result %s\n", line, text ? text : "?");
        free(text);
        json_decref(record);
        fail();
    }
    if (err.status != status)
        fail_msg("line %d: status %d (%s), expected %d", line, err.status, err.message, status);
    if (strcmp(err.field, field) != 0)
        fail_msg("line %d: field \"%s\", expected \"%s\"", line, err.field, field);
    if (!strstr(err.message, message_part))
        fail_msg("line %d: message \"%s\" lacks \"%s\"", line, err.message, message_part);
}

#define REJECT_VALUE(kind, input, base, status, field, part)                                       \
    check_rejected(__LINE__, kind, input, base, status, field, part)

static void reject_text(int line, enum record_kind kind, const char *text, const json_t *base,
                        int status, const char *field, const char *message_part)
{
    json_t *input = load(text);

    check_rejected(line, kind, input, base, status, field, message_part);
    json_decref(input);
}

#define REJECT(kind, text, base, status, field, part)                                              \
    reject_text(__LINE__, kind, text, base, status, field, part)

static const char *string_field(const json_t *record, const char *key)
{
    const json_t *value = json_object_get(record, key);

    assert_non_null(value);
    assert_true(json_is_string(value));
    return json_string_value(value);
}

static void assert_field_null(const json_t *record, const char *key)
{
    const json_t *value = json_object_get(record, key);

    if (!value)
        fail_msg("%s is absent, expected null", key);
    if (!json_is_null(value))
        fail_msg("%s is not null", key);
}

static void assert_integer_field(const json_t *record, const char *key, json_int_t expected)
{
    const json_t *value = json_object_get(record, key);

    assert_non_null(value);
    assert_true(json_is_integer(value));
    assert_int_equal(json_integer_value(value), expected);
}

static void assert_key_order(const json_t *record, const char *const *keys, size_t count)
{
    void *iter = json_object_iter((json_t *)record);

    for (size_t i = 0; i < count; i++) {
        if (!iter)
            fail_msg("record ends before key %zu, %s", i, keys[i]);
        assert_string_equal(json_object_iter_key(iter), keys[i]);
        iter = json_object_iter_next((json_t *)record, iter);
    }
    assert_null(iter);
}

static void records_kind_names(void **state)
{
    assert_string_equal(record_kind_name(RECORD_LEAD), "lead");
    assert_string_equal(record_kind_name(RECORD_CAMPAIGN), "campaign");
    assert_string_equal(record_kind_name(RECORD_ACCOUNT), "linkedInAccount");
}

static void records_lead_key_order(void **state)
{
    json_t *full = normalize_text(RECORD_LEAD, example_lead, NULL);
    json_t *minimal = normalize_text(RECORD_LEAD, "{\"firstName\":\"Jane\",\"id\":\"l1\"}", NULL);

    assert_key_order(full, lead_keys, sizeof(lead_keys) / sizeof(lead_keys[0]));
    assert_key_order(minimal, lead_keys, sizeof(lead_keys) / sizeof(lead_keys[0]));

    json_decref(full);
    json_decref(minimal);
}

static void records_lead_values_kept(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD, example_lead, NULL);

    assert_string_equal(string_field(lead, "id"), "65abc123def4567890ghij01");
    assert_string_equal(string_field(lead, "firstName"), "Jane");
    assert_string_equal(string_field(lead, "profileUrl"), "https://www.linkedin.com/in/janesmith");
    assert_string_equal(string_field(lead, "memberUrn"), "urn:li:member:123456789");
    assert_integer_field(lead, "connectionCount", 500);
    assert_integer_field(lead, "followerCount", 1200);
    assert_true(json_is_true(json_object_get(lead, "isPremium")));
    assert_string_equal(string_field(lead, "createdAt"), "2026-01-15T08:00:00.000Z");

    json_decref(lead);
}

static void records_lead_minimal_defaults(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"Jane\"}", NULL);
    static const char *const nullable[] = {
        "lastName",        "email",           "phone",     "profileUrl",
        "profileHeadline", "profileImageUrl", "position",  "companyName",
        "location",        "website",         "education", "publicIdentifier",
        "followerCount",   "memberUrn",       "stage",     "createdAt",
    };

    for (size_t i = 0; i < sizeof(nullable) / sizeof(nullable[0]); i++)
        assert_field_null(lead, nullable[i]);
    assert_integer_field(lead, "connectionCount", 0);
    assert_true(json_is_false(json_object_get(lead, "isPremium")));
    assert_int_equal(json_object_size(lead), 20);

    json_decref(lead);
}

static void records_merge_keeps_absent(void **state)
{
    json_t *base = normalize_text(RECORD_LEAD, example_lead, NULL);
    json_t *merged = normalize_text(RECORD_LEAD, "{\"email\":\"jane@acme.com\"}", base);

    assert_string_equal(string_field(merged, "email"), "jane@acme.com");
    for (size_t i = 0; i < sizeof(lead_keys) / sizeof(lead_keys[0]); i++) {
        if (strcmp(lead_keys[i], "email") == 0)
            continue;
        if (!json_equal(json_object_get(merged, lead_keys[i]), json_object_get(base, lead_keys[i])))
            fail_msg("%s changed in a merge that did not send it", lead_keys[i]);
    }
    assert_key_order(merged, lead_keys, sizeof(lead_keys) / sizeof(lead_keys[0]));

    json_decref(base);
    json_decref(merged);
}

static void records_merge_null_clears(void **state)
{
    json_t *base = normalize_text(RECORD_LEAD, example_lead, NULL);
    json_t *merged = normalize_text(RECORD_LEAD,
                                    "{\"lastName\":null,\"connectionCount\":null,"
                                    "\"followerCount\":null,\"isPremium\":null,"
                                    "\"createdAt\":null}",
                                    base);

    assert_field_null(merged, "lastName");
    assert_integer_field(merged, "connectionCount", 0);
    assert_field_null(merged, "followerCount");
    assert_true(json_is_false(json_object_get(merged, "isPremium")));
    assert_field_null(merged, "createdAt");
    assert_string_equal(string_field(merged, "email"), "jane.smith@example.com");

    json_decref(base);
    json_decref(merged);
}

static void records_merge_same_id(void **state)
{
    json_t *base = normalize_text(RECORD_LEAD, example_lead, NULL);
    json_t *merged = normalize_text(
        RECORD_LEAD, "{\"id\":\"65abc123def4567890ghij01\",\"stage\":\"replied\"}", base);

    assert_string_equal(string_field(merged, "id"), "65abc123def4567890ghij01");
    assert_string_equal(string_field(merged, "stage"), "replied");

    json_decref(base);
    json_decref(merged);
}

static void records_merge_other_id(void **state)
{
    json_t *base = normalize_text(RECORD_LEAD, example_lead, NULL);

    REJECT(RECORD_LEAD, "{\"id\":\"65abc123def4567890ghij99\"}", base, BH_ERR_INVALID, "lead.id",
           "does not match the stored id \"65abc123def4567890ghij01\"");
    REJECT(RECORD_LEAD, "{\"id\":null}", base, BH_ERR_INVALID, "lead.id", "cannot be null");

    json_decref(base);
}

static void records_merge_required_null(void **state)
{
    json_t *base = normalize_text(RECORD_LEAD, example_lead, NULL);

    REJECT(RECORD_LEAD, "{\"firstName\":null}", base, BH_ERR_INVALID, "lead.firstName",
           "cannot be null; send a non-empty string");
    REJECT(RECORD_LEAD, "{\"firstName\":\"\"}", base, BH_ERR_INVALID, "lead.firstName", "is empty");

    json_decref(base);
}

static void records_merge_base_untouched(void **state)
{
    json_t *base = normalize_text(RECORD_LEAD, example_lead, NULL);
    char *before = json_dumps(base, JSON_COMPACT);
    json_t *merged = normalize_text(RECORD_LEAD, "{\"stage\":\"replied\"}", base);
    char *after;

    /* Changing the result must not reach the base, so no value is shared. */
    json_string_set(json_object_get(merged, "firstName"), "Changed");
    json_integer_set(json_object_get(merged, "connectionCount"), 1);
    after = json_dumps(base, JSON_COMPACT);
    assert_string_equal(before, after);
    assert_int_equal(base->refcount, 1);

    free(before);
    free(after);
    json_decref(base);
    json_decref(merged);
}

static void records_unknown_key(void **state)
{
    char long_key[256];
    char input[400];

    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"Jane\",\"nickname\":\"JJ\"}", NULL,
           BH_ERR_INVALID, "lead.nickname", "lead.nickname is not a lead field");
    REJECT(RECORD_LEAD, "{\"nickname\":\"JJ\"}", NULL, BH_ERR_INVALID, "lead.nickname",
           "allowed fields are id, firstName, lastName, email, phone, profileUrl, "
           "profileHeadline, profileImageUrl, position, companyName, location, website, "
           "education, publicIdentifier, connectionCount, followerCount, isPremium, memberUrn, "
           "stage, createdAt");
    REJECT(RECORD_LEAD, "{\"FirstName\":\"Jane\"}", NULL, BH_ERR_INVALID, "lead.FirstName",
           "is not a lead field");
    REJECT(RECORD_CAMPAIGN, "{\"id\":\"c1\",\"name\":\"Q1\",\"owner\":\"x\"}", NULL, BH_ERR_INVALID,
           "campaign.owner", "allowed fields are id, name, status");
    REJECT(RECORD_ACCOUNT, "{\"id\":\"a1\",\"email\":\"a@b.c\",\"phone\":\"1\"}", NULL,
           BH_ERR_INVALID, "linkedInAccount.phone", "allowed fields are id, name, email");

    /* A long key is cut to an excerpt so the field path still fits. */
    memset(long_key, 'k', 200);
    long_key[200] = '\0';
    snprintf(input, sizeof(input), "{\"%s\":1}", long_key);
    REJECT(RECORD_LEAD, input, NULL, BH_ERR_INVALID,
           "lead.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...",
           "is not a lead field");
}

static void records_not_object(void **state)
{
    json_t *null_value = json_null();

    REJECT(RECORD_LEAD, "[\"l1\",\"Jane\"]", NULL, BH_ERR_MALFORMED, "lead",
           "lead must be a JSON object of lead fields; got an array");
    REJECT(RECORD_CAMPAIGN, "\"c1\"", NULL, BH_ERR_MALFORMED, "campaign", "got a string");
    REJECT_VALUE(RECORD_ACCOUNT, null_value, NULL, BH_ERR_MALFORMED, "linkedInAccount", "got null");
    REJECT_VALUE(RECORD_LEAD, NULL, NULL, BH_ERR_MALFORMED, "lead", "must be a JSON object");

    json_decref(null_value);
}

static void records_new_missing_required(void **state)
{
    REJECT(RECORD_LEAD, "{\"id\":\"l1\"}", NULL, BH_ERR_INVALID, "lead.firstName",
           "lead.firstName is missing; every new lead needs id and firstName");
    REJECT(RECORD_LEAD, "{\"firstName\":\"Jane\"}", NULL, BH_ERR_INVALID, "lead.id", "is missing");
    REJECT(RECORD_LEAD, "{}", NULL, BH_ERR_INVALID, "lead.id", "is missing");
    REJECT(RECORD_CAMPAIGN, "{\"id\":\"c1\",\"status\":\"running\"}", NULL, BH_ERR_INVALID,
           "campaign.name", "every new campaign needs id and name");
    REJECT(RECORD_ACCOUNT, "{\"id\":\"a1\",\"name\":\"Sales\"}", NULL, BH_ERR_INVALID,
           "linkedInAccount.email", "every new linkedInAccount needs id and email");
    REJECT(RECORD_ACCOUNT, "{\"email\":\"a@b.c\"}", NULL, BH_ERR_INVALID, "linkedInAccount.id",
           "is missing");
}

static void records_id_valid(void **state)
{
    static const char *const ids[] = {
        "65abc123def4567890ghij01",
        "l",
        "urn:li:member:123456789",
        "A.b_c-d:9",
        "0123456789012345678901234567890123456789012345678901234567890123", /* 64 */
    };

    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        json_t *input = json_pack("{s:s, s:s}", "id", ids[i], "firstName", "Jane");
        json_t *lead = normalize_value(RECORD_LEAD, input, NULL);

        assert_string_equal(string_field(lead, "id"), ids[i]);
        json_decref(lead);
        json_decref(input);
    }
}

static void records_id_invalid(void **state)
{
    REJECT(RECORD_LEAD, "{\"id\":\"\",\"firstName\":\"Jane\"}", NULL, BH_ERR_INVALID, "lead.id",
           "is not a valid id; use 1 to 64 characters");
    REJECT(RECORD_LEAD, "{\"id\":\"a b\",\"firstName\":\"Jane\"}", NULL, BH_ERR_INVALID, "lead.id",
           "lead.id \"a b\" is not a valid id");
    REJECT(RECORD_LEAD, "{\"id\":\"a/b\",\"firstName\":\"Jane\"}", NULL, BH_ERR_INVALID, "lead.id",
           "is not a valid id");
    REJECT(RECORD_CAMPAIGN, "{\"id\":\"caf\u00e9\",\"name\":\"Q1\"}", NULL, BH_ERR_INVALID,
           "campaign.id", "is not a valid id");
    REJECT(RECORD_ACCOUNT,
           "{\"id\":\"01234567890123456789012345678901234567890123456789012345678901234\","
           "\"email\":\"a@b.c\"}",
           NULL, BH_ERR_INVALID, "linkedInAccount.id", "is not a valid id");
    REJECT(RECORD_LEAD, "{\"id\":42,\"firstName\":\"Jane\"}", NULL, BH_ERR_MALFORMED, "lead.id",
           "must be a string id of 1 to 64 letters, digits, '.', '_', ':' or '-'; got a number");
    REJECT(RECORD_LEAD, "{\"id\":null,\"firstName\":\"Jane\"}", NULL, BH_ERR_INVALID, "lead.id",
           "cannot be null");
}

static void records_string_max(void **state)
{
    char text[RECORD_STRING_MAX + 2];
    json_t *input;
    json_t *lead;

    memset(text, 'a', RECORD_STRING_MAX);
    text[RECORD_STRING_MAX] = '\0';
    input = json_pack("{s:s, s:s, s:s}", "id", "l1", "firstName", "Jane", "profileHeadline", text);
    lead = normalize_value(RECORD_LEAD, input, NULL);
    assert_int_equal(strlen(string_field(lead, "profileHeadline")), RECORD_STRING_MAX);
    json_decref(lead);
    json_decref(input);

    text[RECORD_STRING_MAX] = 'a';
    text[RECORD_STRING_MAX + 1] = '\0';
    input = json_pack("{s:s, s:s, s:s}", "id", "l1", "firstName", "Jane", "profileHeadline", text);
    REJECT_VALUE(RECORD_LEAD, input, NULL, BH_ERR_INVALID, "lead.profileHeadline",
                 "is 2049 bytes long; the maximum is 2048 bytes");
    json_decref(input);
}

static void records_string_max_in_bytes(void **state)
{
    char text[RECORD_STRING_MAX + 2];
    json_t *input;
    json_t *lead;

    /* 1024 two-byte characters are exactly the limit in bytes. */
    for (size_t i = 0; i < RECORD_STRING_MAX / 2; i++)
        memcpy(text + 2 * i, "\xc3\xa9", 2);
    text[RECORD_STRING_MAX] = '\0';
    input = json_pack("{s:s, s:s}", "id", "l1", "firstName", text);
    lead = normalize_value(RECORD_LEAD, input, NULL);
    assert_string_equal(string_field(lead, "firstName"), text);
    json_decref(lead);
    json_decref(input);

    text[RECORD_STRING_MAX] = 'x';
    text[RECORD_STRING_MAX + 1] = '\0';
    input = json_pack("{s:s, s:s}", "id", "l1", "firstName", text);
    REJECT_VALUE(RECORD_LEAD, input, NULL, BH_ERR_INVALID, "lead.firstName", "is 2049 bytes long");
    json_decref(input);
}

static void records_string_wrong_type(void **state)
{
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"Jane\",\"email\":5}", NULL,
           BH_ERR_MALFORMED, "lead.email",
           "lead.email must be a string of at most 2048 bytes, or null; got a number");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"Jane\",\"stage\":true}", NULL,
           BH_ERR_MALFORMED, "lead.stage", "got a boolean");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"Jane\",\"phone\":[\"1\"]}", NULL,
           BH_ERR_MALFORMED, "lead.phone", "got an array");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":{\"given\":\"Jane\"}}", NULL,
           BH_ERR_MALFORMED, "lead.firstName", "must be a non-empty string of at most 2048 bytes;");
    REJECT(RECORD_CAMPAIGN, "{\"id\":\"c1\",\"name\":\"Q1\",\"status\":1}", NULL, BH_ERR_MALFORMED,
           "campaign.status", "got a number");
}

static void records_string_nul_rejected(void **state)
{
    json_t *input = json_pack("{s:s, s:s}", "id", "l1", "firstName", "Jane");

    json_object_set_new(input, "lastName", json_stringn("Smi\0th", 6));
    REJECT_VALUE(RECORD_LEAD, input, NULL, BH_ERR_INVALID, "lead.lastName", "NUL character");
    json_decref(input);
}

static void records_string_bad_utf8(void **state)
{
    json_t *input = json_pack("{s:s, s:s}", "id", "l1", "firstName", "Jane");

    json_object_set_new(input, "lastName", json_string_nocheck("Sm\xffth"));
    REJECT_VALUE(RECORD_LEAD, input, NULL, BH_ERR_INVALID, "lead.lastName", "not valid UTF-8");
    json_decref(input);
}

static void records_required_empty(void **state)
{
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"\"}", NULL, BH_ERR_INVALID,
           "lead.firstName", "lead.firstName is empty; send a non-empty string");
    REJECT(RECORD_CAMPAIGN, "{\"id\":\"c1\",\"name\":\"\"}", NULL, BH_ERR_INVALID, "campaign.name",
           "is empty");
    REJECT(RECORD_ACCOUNT, "{\"id\":\"a1\",\"email\":\"\"}", NULL, BH_ERR_INVALID,
           "linkedInAccount.email", "is empty");
}

static void records_optional_empty_kept(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD,
                                  "{\"id\":\"l1\",\"firstName\":\"Jane\",\"lastName\":\"\"}", NULL);

    assert_string_equal(string_field(lead, "lastName"), "");
    json_decref(lead);
}

static void records_count_bounds(void **state)
{
    json_t *low = normalize_text(RECORD_LEAD,
                                 "{\"id\":\"l1\",\"firstName\":\"J\",\"connectionCount\":0}", NULL);
    json_t *high = normalize_text(
        RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"followerCount\":9007199254740991}",
        NULL);

    assert_integer_field(low, "connectionCount", 0);
    assert_integer_field(high, "followerCount", INT64_C(9007199254740991));
    json_decref(low);
    json_decref(high);

    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"followerCount\":9007199254740992}",
           NULL, BH_ERR_INVALID, "lead.followerCount",
           "is 9007199254740992; send a whole number from 0 to 9007199254740991");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"connectionCount\":-1}", NULL,
           BH_ERR_INVALID, "lead.connectionCount", "is -1; send a whole number");
}

static void records_count_wrong_type(void **state)
{
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"connectionCount\":5.0}", NULL,
           BH_ERR_INVALID, "lead.connectionCount",
           "is 5.0, which is not written as a whole number");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"followerCount\":1e3}", NULL,
           BH_ERR_INVALID, "lead.followerCount", "without a decimal point or exponent");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"connectionCount\":\"5\"}", NULL,
           BH_ERR_MALFORMED, "lead.connectionCount",
           "must be a whole number from 0 to 9007199254740991, or null; got a string");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"followerCount\":true}", NULL,
           BH_ERR_MALFORMED, "lead.followerCount", "got a boolean");
}

static void records_bool_type(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD,
                                  "{\"id\":\"l1\",\"firstName\":\"J\",\"isPremium\":false}", NULL);

    assert_true(json_is_false(json_object_get(lead, "isPremium")));
    json_decref(lead);

    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"isPremium\":\"true\"}", NULL,
           BH_ERR_MALFORMED, "lead.isPremium", "must be true or false, or null; got a string");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"isPremium\":1}", NULL,
           BH_ERR_MALFORMED, "lead.isPremium", "got a number");
}

static void check_created_at(const char *given, const char *expected)
{
    json_t *input = json_pack("{s:s, s:s, s:s}", "id", "l1", "firstName", "J", "createdAt", given);
    json_t *lead = normalize_value(RECORD_LEAD, input, NULL);

    assert_string_equal(string_field(lead, "createdAt"), expected);
    json_decref(lead);
    json_decref(input);
}

static void records_timestamp_normalized(void **state)
{
    check_created_at("2026-01-15T09:00:00+01:00", "2026-01-15T08:00:00.000Z");
    check_created_at("2026-01-15T08:00:00Z", "2026-01-15T08:00:00.000Z");
    check_created_at("2026-01-15T02:30:00.5-05:30", "2026-01-15T08:00:00.500Z");
    check_created_at("2026-01-15T08:00:00.123456789Z", "2026-01-15T08:00:00.123Z");
    check_created_at("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00.000Z");
}

static void records_timestamp_invalid(void **state)
{
    REJECT(RECORD_LEAD,
           "{\"id\":\"l1\",\"firstName\":\"J\",\"createdAt\":\"2026-02-30T08:00:00Z\"}", NULL,
           BH_ERR_INVALID, "lead.createdAt",
           "lead.createdAt \"2026-02-30T08:00:00Z\" is not a valid date-time; send an ISO-8601");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"createdAt\":\"2026-01-15T08:00:00\"}",
           NULL, BH_ERR_INVALID, "lead.createdAt", "with a zone");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"createdAt\":\"2026-01-15\"}", NULL,
           BH_ERR_INVALID, "lead.createdAt", "is not a valid date-time");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"createdAt\":\"\"}", NULL,
           BH_ERR_INVALID, "lead.createdAt", "is not a valid date-time");
    REJECT(RECORD_LEAD,
           "{\"id\":\"l1\",\"firstName\":\"J\",\"createdAt\":\"1969-12-31T23:59:59Z\"}", NULL,
           BH_ERR_INVALID, "lead.createdAt", "from 1970 to 9999");
    REJECT(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"J\",\"createdAt\":1768464000000}", NULL,
           BH_ERR_MALFORMED, "lead.createdAt", "must be an ISO-8601 date-time string");
}

static void records_campaign_fields(void **state)
{
    static const char *const keys[] = {"id", "name", "status"};
    json_t *minimal = normalize_text(RECORD_CAMPAIGN, "{\"name\":\"Q1\",\"id\":\"c1\"}", NULL);
    json_t *full = normalize_text(RECORD_CAMPAIGN,
                                  "{\"status\":\"running\",\"name\":\"Q1\",\"id\":\"c1\"}", NULL);
    json_t *cleared = normalize_text(RECORD_CAMPAIGN, "{\"status\":null}", full);

    assert_key_order(minimal, keys, 3);
    assert_field_null(minimal, "status");
    assert_key_order(full, keys, 3);
    assert_string_equal(string_field(full, "status"), "running");
    assert_field_null(cleared, "status");
    assert_string_equal(string_field(cleared, "name"), "Q1");

    REJECT(RECORD_CAMPAIGN, "{\"id\":\"c1\",\"name\":null}", NULL, BH_ERR_INVALID, "campaign.name",
           "cannot be null");

    json_decref(minimal);
    json_decref(full);
    json_decref(cleared);
}

static void records_account_name_fallback(void **state)
{
    static const char *const keys[] = {"id", "name", "email"};
    json_t *absent = normalize_text(RECORD_ACCOUNT, "{\"email\":\"a@b.c\",\"id\":\"a1\"}", NULL);
    json_t *null_name =
        normalize_text(RECORD_ACCOUNT, "{\"id\":\"a1\",\"name\":null,\"email\":\"a@b.c\"}", NULL);
    json_t *empty =
        normalize_text(RECORD_ACCOUNT, "{\"id\":\"a1\",\"name\":\"\",\"email\":\"a@b.c\"}", NULL);
    json_t *named =
        normalize_text(RECORD_ACCOUNT,
                       "{\"id\":\"a1\",\"name\":\"Sales Team Account\",\"email\":\"a@b.c\"}", NULL);
    json_t *cleared = normalize_text(RECORD_ACCOUNT, "{\"name\":null}", named);

    assert_key_order(absent, keys, 3);
    assert_string_equal(string_field(absent, "name"), "LinkedIn Account");
    assert_string_equal(string_field(null_name, "name"), "LinkedIn Account");
    assert_string_equal(string_field(empty, "name"), "LinkedIn Account");
    assert_string_equal(string_field(named, "name"), "Sales Team Account");
    assert_string_equal(string_field(cleared, "name"), "LinkedIn Account");
    assert_string_equal(string_field(cleared, "email"), "a@b.c");

    json_decref(absent);
    json_decref(null_name);
    json_decref(empty);
    json_decref(named);
    json_decref(cleared);
}

static void records_account_email_required(void **state)
{
    json_t *base = normalize_text(RECORD_ACCOUNT, "{\"id\":\"a1\",\"email\":\"a@b.c\"}", NULL);

    REJECT(RECORD_ACCOUNT, "{\"id\":\"a1\",\"email\":null}", NULL, BH_ERR_INVALID,
           "linkedInAccount.email", "cannot be null");
    REJECT(RECORD_ACCOUNT, "{\"email\":null}", base, BH_ERR_INVALID, "linkedInAccount.email",
           "cannot be null");
    REJECT(RECORD_ACCOUNT, "{\"id\":\"a1\",\"email\":7}", NULL, BH_ERR_MALFORMED,
           "linkedInAccount.email", "got a number");

    json_decref(base);
}

static void records_custom_path(void **state)
{
    json_t *input = load("{\"id\":\"l1\",\"firstName\":\"J\",\"email\":5}");
    struct bh_error err;
    json_t *record;

    bh_error_clear(&err);
    record = record_normalize(RECORD_LEAD, input, NULL, "data.lead", &err);
    assert_null(record);
    assert_string_equal(err.field, "data.lead.email");
    assert_non_null(strstr(err.message, "data.lead.email must be"));

    json_decref(input);
}

static void records_message_excerpt_utf8(void **state)
{
    char id[1 + 2 * 100 + 1];
    json_t *input;
    json_t *message;
    struct bh_error err;

    /* One ASCII byte then two-byte characters, so byte 64 falls inside a character. */
    id[0] = 'a';
    for (size_t i = 0; i < 100; i++)
        memcpy(id + 1 + 2 * i, "\xc3\xa9", 2);
    id[sizeof(id) - 1] = '\0';
    input = json_pack("{s:s, s:s}", "id", id, "firstName", "J");

    bh_error_clear(&err);
    assert_null(record_normalize(RECORD_LEAD, input, NULL, NULL, &err));
    assert_int_equal(err.status, BH_ERR_INVALID);
    assert_non_null(strstr(err.message, "...\" is not a valid id"));
    message = json_string(err.message);
    assert_non_null(message);

    json_decref(message);
    json_decref(input);
}

static void records_unknown_kind(void **state)
{
    json_t *input = load("{\"id\":\"l1\"}");
    struct bh_error err;

    bh_error_clear(&err);
    assert_null(record_normalize(RECORD_KIND_COUNT, input, NULL, NULL, &err));
    assert_int_equal(err.status, BH_ERR_INTERNAL);
    json_decref(input);
}

/* ---- The stored text from record_merge and record_fetch_text ---- */

static struct store *open_store_with_user(struct user *user)
{
    struct store *store;
    struct bh_error err;

    store = store_open(":memory:", &err);
    assert_non_null(store);
    memset(user, 0, sizeof(*user));
    id_generate(user->id);
    snprintf(user->name, sizeof(user->name), "records test");
    user->created_ms = 1770000000000;
    assert_int_equal(store_user_create(store, user, "hash-of-an-unused-key", &err), 0);
    return store;
}

/* Merges text over lead l1 and returns the merge's status, with the outputs in the pointers. */
static int merge_lead(struct store *store, const struct user *user, const char *text,
                      json_t **normalized, bool *changed, char **stored_text)
{
    json_t *input = json_loads(text, 0, NULL);
    struct bh_error err;
    bool created = false;
    int result;

    assert_non_null(input);
    bh_error_clear(&err);
    result = record_merge(store, RECORD_LEAD, user->id, input, "lead", normalized, &created,
                          changed, stored_text, &err);
    json_decref(input);
    return result;
}

static void records_merge_text_unchanged(void **state)
{
    struct user user;
    struct store *store = open_store_with_user(&user);
    json_t *normalized = NULL;
    char *text = NULL;
    char *stored = NULL;
    char *dumped;
    bool changed = false;
    struct bh_error err;

    (void)state;
    /* New: nothing stored yet, so no text. */
    assert_int_equal(merge_lead(store, &user, "{\"id\":\"l1\",\"firstName\":\"Ana\"}", &normalized,
                                &changed, &text),
                     BH_OK);
    assert_true(changed);
    assert_null(text);
    assert_int_equal(record_save(store, RECORD_LEAD, user.id, normalized, NULL, &err), BH_OK);
    json_decref(normalized);

    /* The same fields again: the stored text, byte for byte what serializing gives. */
    assert_int_equal(store_record_get(store, RECORD_LEAD, user.id, "l1", &stored, &err), BH_OK);
    assert_int_equal(merge_lead(store, &user, "{\"id\":\"l1\",\"firstName\":\"Ana\"}", &normalized,
                                &changed, &text),
                     BH_OK);
    assert_false(changed);
    assert_non_null(text);
    assert_string_equal(text, stored);
    dumped = json_dumps(normalized, JSON_COMPACT);
    assert_string_equal(text, dumped);
    free(dumped);
    free(text);
    json_decref(normalized);

    /* A changed field: no stored text, since it no longer matches. */
    assert_int_equal(merge_lead(store, &user, "{\"id\":\"l1\",\"lastName\":\"Lima\"}", &normalized,
                                &changed, &text),
                     BH_OK);
    assert_true(changed);
    assert_null(text);
    json_decref(normalized);

    /* Rejected input: no record and no text. */
    assert_int_equal(
        merge_lead(store, &user, "{\"id\":\"l1\",\"age\":3}", &normalized, &changed, &text),
        BH_ERR_INVALID);
    assert_null(normalized);
    assert_null(text);

    free(stored);
    store_close(store);
}

static void records_fetch_text_stored(void **state)
{
    struct user user;
    struct store *store = open_store_with_user(&user);
    json_t *input = json_loads("{\"id\":\"c1\",\"name\":\"Q1\"}", 0, NULL);
    json_t *normalized;
    json_t *fetched = NULL;
    char *text = NULL;
    char *stored = NULL;
    struct bh_error err;

    (void)state;
    normalized = record_normalize(RECORD_CAMPAIGN, input, NULL, NULL, &err);
    assert_non_null(normalized);
    assert_int_equal(record_save(store, RECORD_CAMPAIGN, user.id, normalized, NULL, &err), BH_OK);
    assert_int_equal(store_record_get(store, RECORD_CAMPAIGN, user.id, "c1", &stored, &err), BH_OK);

    assert_int_equal(record_fetch_text(store, RECORD_CAMPAIGN, user.id, "c1", "campaignId",
                                       &fetched, &text, &err),
                     BH_OK);
    assert_string_equal(text, stored);
    assert_true(json_equal(fetched, normalized));
    free(text);
    json_decref(fetched);

    text = NULL;
    fetched = NULL;
    assert_int_equal(record_fetch_text(store, RECORD_CAMPAIGN, user.id, "c2", "campaignId",
                                       &fetched, &text, &err),
                     BH_ERR_NOT_FOUND);
    assert_string_equal(err.field, "campaignId");
    assert_null(fetched);
    assert_null(text);

    free(stored);
    json_decref(normalized);
    json_decref(input);
    store_close(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(records_kind_names),
        cmocka_unit_test(records_lead_key_order),
        cmocka_unit_test(records_lead_values_kept),
        cmocka_unit_test(records_lead_minimal_defaults),
        cmocka_unit_test(records_merge_keeps_absent),
        cmocka_unit_test(records_merge_null_clears),
        cmocka_unit_test(records_merge_same_id),
        cmocka_unit_test(records_merge_other_id),
        cmocka_unit_test(records_merge_required_null),
        cmocka_unit_test(records_merge_base_untouched),
        cmocka_unit_test(records_unknown_key),
        cmocka_unit_test(records_not_object),
        cmocka_unit_test(records_new_missing_required),
        cmocka_unit_test(records_id_valid),
        cmocka_unit_test(records_id_invalid),
        cmocka_unit_test(records_string_max),
        cmocka_unit_test(records_string_max_in_bytes),
        cmocka_unit_test(records_string_wrong_type),
        cmocka_unit_test(records_string_nul_rejected),
        cmocka_unit_test(records_string_bad_utf8),
        cmocka_unit_test(records_required_empty),
        cmocka_unit_test(records_optional_empty_kept),
        cmocka_unit_test(records_count_bounds),
        cmocka_unit_test(records_count_wrong_type),
        cmocka_unit_test(records_bool_type),
        cmocka_unit_test(records_timestamp_normalized),
        cmocka_unit_test(records_timestamp_invalid),
        cmocka_unit_test(records_campaign_fields),
        cmocka_unit_test(records_account_name_fallback),
        cmocka_unit_test(records_account_email_required),
        cmocka_unit_test(records_custom_path),
        cmocka_unit_test(records_message_excerpt_utf8),
        cmocka_unit_test(records_unknown_kind),
        cmocka_unit_test(records_merge_text_unchanged),
        cmocka_unit_test(records_fetch_text_stored),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
