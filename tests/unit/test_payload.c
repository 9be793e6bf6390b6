/*
 * Payload bodies compared byte for byte with golden files in tests/unit/golden/. The golden
 * files are the documented example payload written out by hand in compact form, so a change in
 * key order, spacing, escaping or defaults fails here. Records go through record_normalize
 * first, as they do in the service.
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

#include "core/payload.h"
#include "core/records.h"

#define GOLDEN_MAX (64 * 1024) /* bytes, far more than any golden file needs */

/* 2026-02-13T10:30:00.000Z, the timestamp of the documented example. */
#define EXAMPLE_TIMESTAMP_MS INT64_C(1770978600000)

/* The documented example lead in another key order, with createdAt given at +01:00. */
static const char example_lead[] =
    "{\"stage\":\"connected\",\"isPremium\":true,\"id\":\"65abc123def4567890ghij01\","
    "\"lastName\":\"Smith\",\"firstName\":\"Jane\",\"email\":\"jane.smith@example.com\","
    "\"phone\":\"+1-555-0123\",\"profileUrl\":\"https://www.linkedin.com/in/janesmith\","
    "\"profileHeadline\":\"VP of Sales at Acme Corp\","
    "\"profileImageUrl\":\"https://media.licdn.com/...\",\"position\":\"VP of Sales\","
    "\"companyName\":\"Acme Corp\",\"location\":\"San Francisco, CA\","
    "\"website\":\"https://acme.com\",\"education\":\"Stanford University\","
    "\"publicIdentifier\":\"janesmith\",\"connectionCount\":500,\"followerCount\":1200,"
    "\"memberUrn\":\"urn:li:member:123456789\",\"createdAt\":\"2026-01-15T09:00:00+01:00\"}";

static const char example_campaign[] =
    "{\"id\":\"65abc123def4567890ghij02\",\"name\":\"Q1 Outreach\",\"status\":\"running\"}";

static const char example_account[] = "{\"id\":\"65abc123def4567890ghij03\","
                                      "\"name\":\"Sales Team Account\","
                                      "\"email\":\"john.smith@example.com\"}";

static json_t *normalize_text(enum record_kind kind, const char *text)
{
    struct bh_error err;
    json_error_t parse_error;
    json_t *input;
    json_t *record;

    input = json_loads(text, 0, &parse_error);
    if (!input)
        fail_msg("test input is not JSON: %s", parse_error.text);

    bh_error_clear(&err);
    record = record_normalize(kind, input, NULL, NULL, &err);
    if (!record)
        fail_msg("record_normalize failed on %s: %s", err.field, err.message);
    json_decref(input);
    return record;
}

/* Reads a golden file from the folder beside this source file, dropping one final newline. */
static char *read_golden(const char *name, size_t *len)
{
    const char *source = __FILE__;
    const char *slash = strrchr(source, '/');
    int dir_len = slash ? (int)(slash - source) : 1;
    char path[1024];
    char *text = malloc(GOLDEN_MAX + 1);
    FILE *file;

    assert_non_null(text);
    snprintf(path, sizeof(path), "%.*s/golden/%s", dir_len, slash ? source : ".", name);
    file = fopen(path, "rb");
    if (!file)
        fail_msg("cannot open golden file %s", path);
    *len = fread(text, 1, GOLDEN_MAX, file);
    assert_true(feof(file));
    fclose(file);

    if (*len > 0 && text[*len - 1] == '\n')
        (*len)--;
    text[*len] = '\0';
    return text;
}

static void assert_body_matches(const struct payload_input *input, const char *golden_name)
{
    size_t expected_len = 0;
    size_t len = 0;
    char *expected = read_golden(golden_name, &expected_len);
    char *body = payload_build(input, &len);

    assert_non_null(body);
    assert_int_equal(len, strlen(body));
    assert_string_equal(body, expected);
    assert_int_equal(len, expected_len);
    assert_memory_equal(body, expected, len);

    free(body);
    free(expected);
}

static struct payload_input example_input(const char *event, json_t *lead, json_t *campaign,
                                          json_t *account)
{
    struct payload_input input = {
        .event = event,
        .timestamp_ms = EXAMPLE_TIMESTAMP_MS,
        .lead = lead,
        .campaign = campaign,
        .linkedin_account = account,
        .event_id = "evt_abc123def456",
        .user_id = "65abc123def4567890ghij04",
        .integration_id = "65abc123def4567890ghij05",
    };
    return input;
}

static void payload_full_lead(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD, example_lead);
    json_t *campaign = normalize_text(RECORD_CAMPAIGN, example_campaign);
    json_t *account = normalize_text(RECORD_ACCOUNT, example_account);
    struct payload_input input =
        example_input("connection_request_accepted", lead, campaign, account);

    assert_body_matches(&input, "full_lead.json");

    json_decref(lead);
    json_decref(campaign);
    json_decref(account);
}

static void payload_minimal_lead(void **state)
{
    json_t *lead =
        normalize_text(RECORD_LEAD, "{\"id\":\"65abc123def4567890ghij01\",\"firstName\":\"Jane\"}");
    json_t *campaign = normalize_text(RECORD_CAMPAIGN, example_campaign);
    json_t *account = normalize_text(RECORD_ACCOUNT, example_account);
    struct payload_input input = example_input("connection_request_sent", lead, campaign, account);

    assert_body_matches(&input, "minimal_lead.json");

    json_decref(lead);
    json_decref(campaign);
    json_decref(account);
}

static void payload_without_campaign(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD, example_lead);
    json_t *account = normalize_text(RECORD_ACCOUNT, example_account);
    struct payload_input input = example_input("lead_added_to_campaign", lead, NULL, account);

    assert_body_matches(&input, "no_campaign.json");

    json_decref(lead);
    json_decref(account);
}

static void payload_without_account(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD, example_lead);
    json_t *campaign = normalize_text(RECORD_CAMPAIGN, example_campaign);
    struct payload_input input = example_input("message_sent", lead, campaign, NULL);

    assert_body_matches(&input, "no_account.json");

    json_decref(lead);
    json_decref(campaign);
}

static void payload_account_without_name(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD, example_lead);
    json_t *campaign = normalize_text(RECORD_CAMPAIGN, example_campaign);
    json_t *account = normalize_text(
        RECORD_ACCOUNT,
        "{\"id\":\"65abc123def4567890ghij03\",\"email\":\"john.smith@example.com\"}");
    struct payload_input input = example_input("message_replied", lead, campaign, account);

    assert_body_matches(&input, "account_without_name.json");

    json_decref(lead);
    json_decref(campaign);
    json_decref(account);
}

static void payload_unicode_raw_bytes(void **state)
{
    json_t *lead =
        normalize_text(RECORD_LEAD, "{\"id\":\"65abc123def4567890ghij11\",\"firstName\":\"Zoë\","
                                    "\"lastName\":\"Núñez-Øster 🐻\","
                                    "\"profileHeadline\":\"مديرة المبيعات\","
                                    "\"position\":\"מנהלת מכירות\","
                                    "\"companyName\":\"Crème Brûlée GmbH\","
                                    "\"location\":\"Zürich 🇨🇭\"}");
    json_t *account = normalize_text(RECORD_ACCOUNT, "{\"id\":\"65abc123def4567890ghij13\","
                                                     "\"name\":\"José 👩🏽‍💻 ليلى\","
                                                     "\"email\":\"jose@example.com\"}");
    struct payload_input input = example_input("message_replied", lead, NULL, account);
    size_t len = 0;
    char *body;

    /* 2028-02-29T23:59:59.999Z: a leap day and the last millisecond of it. */
    input.timestamp_ms = INT64_C(1835481599999);
    assert_body_matches(&input, "unicode_names.json");

    /* The same bytes spelled as escapes, so the check does not depend on the editor. */
    body = payload_build(&input, &len);
    assert_non_null(body);
    assert_non_null(strstr(body, "\"firstName\":\"Zo\xc3\xab\""));
    assert_non_null(strstr(body, "\xf0\x9f\x90\xbb")); /* U+1F43B bear */
    assert_non_null(
        strstr(body, "\xd9\x85\xd8\xaf\xd9\x8a\xd8\xb1")); /* start of the Arabic headline */
    assert_non_null(
        strstr(body, "\xd7\x9e\xd7\xa0\xd7\x94\xd7\x9c")); /* start of the Hebrew position */
    assert_non_null(strstr(body, "\xe2\x80\x8d"));         /* zero-width joiner */
    assert_null(strstr(body, "\\u"));
    free(body);

    json_decref(lead);
    json_decref(account);
}

static void payload_records_untouched(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD, example_lead);
    json_t *campaign = normalize_text(RECORD_CAMPAIGN, example_campaign);
    char *before = json_dumps(lead, JSON_COMPACT);
    struct payload_input input = example_input("message_sent", lead, campaign, NULL);
    size_t len = 0;
    char *body = payload_build(&input, &len);
    char *after = json_dumps(lead, JSON_COMPACT);

    assert_non_null(body);
    assert_int_equal(lead->refcount, 1);
    assert_int_equal(campaign->refcount, 1);
    assert_string_equal(before, after);
    assert_true(len > 0);
    assert_true(body[len - 1] == '}');

    free(before);
    free(after);
    free(body);
    json_decref(lead);
    json_decref(campaign);
}

static void payload_timestamp_utc_ms(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"Ann\"}");
    struct payload_input input = example_input("message_sent", lead, NULL, NULL);
    size_t len = 0;
    char *body;

    input.timestamp_ms = 7;
    body = payload_build(&input, &len);
    assert_non_null(body);
    assert_non_null(strstr(body, "\"timestamp\":\"1970-01-01T00:00:00.007Z\""));

    free(body);
    json_decref(lead);
}

static void payload_rejects_bad_input(void **state)
{
    json_t *lead = normalize_text(RECORD_LEAD, "{\"id\":\"l1\",\"firstName\":\"Ann\"}");
    json_t *not_object = json_string("lead");
    struct payload_input input;
    size_t len = 0;

    input = example_input("message_sent", NULL, NULL, NULL);
    assert_null(payload_build(&input, &len));

    input = example_input("message_sent", not_object, NULL, NULL);
    assert_null(payload_build(&input, &len));

    input = example_input("message_sent", lead, not_object, NULL);
    assert_null(payload_build(&input, &len));

    input = example_input(NULL, lead, NULL, NULL);
    assert_null(payload_build(&input, &len));

    input = example_input("message_sent", lead, NULL, NULL);
    input.event_id = NULL;
    assert_null(payload_build(&input, &len));

    input = example_input("message_sent", lead, NULL, NULL);
    input.integration_id = "bad \xff utf-8";
    assert_null(payload_build(&input, &len));

    json_decref(not_object);
    json_decref(lead);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(payload_full_lead),
        cmocka_unit_test(payload_minimal_lead),
        cmocka_unit_test(payload_without_campaign),
        cmocka_unit_test(payload_without_account),
        cmocka_unit_test(payload_account_without_name),
        cmocka_unit_test(payload_unicode_raw_bytes),
        cmocka_unit_test(payload_records_untouched),
        cmocka_unit_test(payload_timestamp_utc_ms),
        cmocka_unit_test(payload_rejects_bad_input),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
