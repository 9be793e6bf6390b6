/*
 * One static field table per record kind drives validation, merging and key order. The
 * canonical object is built by walking the table, so its keys come out in the payload's order
 * whatever order the client used. Every value in a canonical record is a fresh copy, so
 * the result shares nothing with the input or the base.
 */
#include "core/records.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"

#define COUNT_MAX INT64_C(9007199254740991) /* 2^53 - 1, JavaScript's Number.MAX_SAFE_INTEGER */
#define EXCERPT_MAX 64                      /* bytes of a client's value quoted in a message */
#define FIELD_LIST_MAX 320                  /* bytes of the longest kind's field list */

enum field_type {
    FIELD_ID,        /* string accepted by id_is_valid_external() */
    FIELD_STRING,    /* string of at most RECORD_STRING_MAX bytes */
    FIELD_COUNT,     /* integer from 0 to COUNT_MAX */
    FIELD_BOOL,      /* true or false */
    FIELD_TIMESTAMP, /* ISO-8601 date-time, rewritten in UTC with milliseconds */
};

struct field_spec {
    const char *name;
    enum field_type type;
    /* Present in every record, never null and, for strings, never empty. */
    bool required;
    /* When true, absent (in a new record) or null becomes the default rather than null. */
    bool has_default;
    int64_t default_number;   /* default of a FIELD_COUNT or FIELD_BOOL field */
    const char *default_text; /* default of a FIELD_STRING field, which also replaces "" */
};

struct record_schema {
    const char *name;
    const struct field_spec *fields;
    size_t count;
};

/* Lead fields in payload order. Only id and firstName are always known. */
static const struct field_spec lead_fields[] = {
    {"id", FIELD_ID, true, false, 0, NULL},
    {"firstName", FIELD_STRING, true, false, 0, NULL},
    {"lastName", FIELD_STRING, false, false, 0, NULL},
    {"email", FIELD_STRING, false, false, 0, NULL},
    {"phone", FIELD_STRING, false, false, 0, NULL},
    {"profileUrl", FIELD_STRING, false, false, 0, NULL},
    {"profileHeadline", FIELD_STRING, false, false, 0, NULL},
    {"profileImageUrl", FIELD_STRING, false, false, 0, NULL},
    {"position", FIELD_STRING, false, false, 0, NULL},
    {"companyName", FIELD_STRING, false, false, 0, NULL},
    {"location", FIELD_STRING, false, false, 0, NULL},
    {"website", FIELD_STRING, false, false, 0, NULL},
    {"education", FIELD_STRING, false, false, 0, NULL},
    {"publicIdentifier", FIELD_STRING, false, false, 0, NULL},
    {"connectionCount", FIELD_COUNT, false, true, 0, NULL},
    {"followerCount", FIELD_COUNT, false, false, 0, NULL},
    {"isPremium", FIELD_BOOL, false, true, false, NULL},
    {"memberUrn", FIELD_STRING, false, false, 0, NULL},
    {"stage", FIELD_STRING, false, false, 0, NULL},
    {"createdAt", FIELD_TIMESTAMP, false, false, 0, NULL},
};

static const struct field_spec campaign_fields[] = {
    {"id", FIELD_ID, true, false, 0, NULL},
    {"name", FIELD_STRING, true, false, 0, NULL},
    {"status", FIELD_STRING, false, false, 0, NULL},
};

static const struct field_spec account_fields[] = {
    {"id", FIELD_ID, true, false, 0, NULL},
    {"name", FIELD_STRING, false, true, 0, ACCOUNT_NAME_FALLBACK},
    {"email", FIELD_STRING, true, false, 0, NULL},
};

#define ARRAY_LEN(array) (sizeof(array) / sizeof((array)[0]))

static const struct record_schema schemas[RECORD_KIND_COUNT] = {
    [RECORD_LEAD] = {"lead", lead_fields, ARRAY_LEN(lead_fields)},
    [RECORD_CAMPAIGN] = {"campaign", campaign_fields, ARRAY_LEN(campaign_fields)},
    [RECORD_ACCOUNT] = {"linkedInAccount", account_fields, ARRAY_LEN(account_fields)},
};

const char *record_kind_name(enum record_kind kind)
{
    if ((unsigned)kind >= RECORD_KIND_COUNT)
        return "record";
    return schemas[kind].name;
}

/*
 * Copies at most EXCERPT_MAX bytes of text into out, which has room for EXCERPT_MAX + 4 bytes.
 * A longer text is cut before a UTF-8 continuation byte and marked with "...", so the message
 * stays valid UTF-8 for the JSON error body.
 */
static void copy_excerpt(const char *text, char out[EXCERPT_MAX + 4])
{
    size_t len = strlen(text);

    if (len <= EXCERPT_MAX) {
        memcpy(out, text, len + 1);
        return;
    }

    len = EXCERPT_MAX;
    while (len > 0 && ((unsigned char)text[len] & 0xc0) == 0x80)
        len--;
    memcpy(out, text, len);
    memcpy(out + len, "...", 4);
}

static void format_field_path(char *out, size_t size, const char *path, const char *key)
{
    char key_excerpt[EXCERPT_MAX + 4];

    copy_excerpt(key, key_excerpt);
    snprintf(out, size, "%s.%s", path, key_excerpt);
}

/* Writes the names of the schema's fields, or of its required fields only, joined by sep. */
static void format_field_list(const struct record_schema *schema, bool required_only,
                              const char *sep, char out[FIELD_LIST_MAX])
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < schema->count; i++) {
        if (required_only && !schema->fields[i].required)
            continue;
        used += (size_t)snprintf(out + used, FIELD_LIST_MAX - used, "%s%s", used ? sep : "",
                                 schema->fields[i].name);
        if (used >= FIELD_LIST_MAX)
            break;
    }
}

static const char *json_type_phrase(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "an unknown JSON value";
}

/* Describes what a field accepts, for messages: "<field> must be <phrase>". */
static const char *expected_phrase(const struct field_spec *spec)
{
    switch (spec->type) {
    case FIELD_ID:
        return "a string id of 1 to 64 letters, digits, '.', '_', ':' or '-'";
    case FIELD_STRING:
        return spec->required ? "a non-empty string of at most 2048 bytes"
                              : "a string of at most 2048 bytes";
    case FIELD_COUNT:
        return "a whole number from 0 to 9007199254740991";
    case FIELD_BOOL:
        return "true or false";
    case FIELD_TIMESTAMP:
        return "an ISO-8601 date-time string with a zone, such as \"2026-01-15T08:00:00.000Z\"";
    }
    return "a valid value";
}

static json_t *default_value(const struct field_spec *spec)
{
    if (!spec->has_default)
        return json_null();

    switch (spec->type) {
    case FIELD_COUNT:
        return json_integer(spec->default_number);
    case FIELD_BOOL:
        return json_boolean(spec->default_number);
    case FIELD_STRING:
        return json_string(spec->default_text);
    case FIELD_ID:
    case FIELD_TIMESTAMP:
        break;
    }
    return json_null();
}

static int reject_type(const struct field_spec *spec, const json_t *value, const char *field,
                       struct bh_error *err)
{
    return bh_error_set(err, BH_ERR_MALFORMED, field, "%s must be %s%s; got %s", field,
                        expected_phrase(spec), spec->required ? "" : ", or null",
                        json_type_phrase(value));
}

/* Checks what every string field shares: the JSON type, no NUL byte, the size bound. */
static int check_string(const struct field_spec *spec, const json_t *value, const char *field,
                        struct bh_error *err)
{
    size_t len;

    if (!json_is_string(value))
        return reject_type(spec, value, field, err);

    len = json_string_length(value);
    if (strlen(json_string_value(value)) != len)
        return bh_error_set(err, BH_ERR_INVALID, field,
                            "%s contains a NUL character (\\u0000); remove it", field);
    if (len > RECORD_STRING_MAX)
        return bh_error_set(err, BH_ERR_INVALID, field,
                            "%s is %zu bytes long; the maximum is %d bytes, so shorten it", field,
                            len, RECORD_STRING_MAX);
    return BH_OK;
}

/* Stores a copy of the string in *out, or rejects text that is not valid UTF-8. */
static int copy_string(const json_t *value, const char *field, json_t **out, struct bh_error *err)
{
    *out = json_stringn(json_string_value(value), json_string_length(value));
    if (!*out)
        return bh_error_set(err, BH_ERR_INVALID, field,
                            "%s is not valid UTF-8; send the text encoded as UTF-8", field);
    return BH_OK;
}

static int normalize_id(const struct field_spec *spec, const json_t *value, const char *field,
                        json_t **out, struct bh_error *err)
{
    char excerpt[EXCERPT_MAX + 4];
    int status;

    status = check_string(spec, value, field, err);
    if (status < 0)
        return status;

    if (!id_is_valid_external(json_string_value(value))) {
        copy_excerpt(json_string_value(value), excerpt);
        return bh_error_set(err, BH_ERR_INVALID, field,
                            "%s \"%s\" is not a valid id; use 1 to 64 characters of letters, "
                            "digits, '.', '_', ':' or '-'",
                            field, excerpt);
    }
    return copy_string(value, field, out, err);
}

static int normalize_string(const struct field_spec *spec, const json_t *value, const char *field,
                            json_t **out, struct bh_error *err)
{
    int status;

    status = check_string(spec, value, field, err);
    if (status < 0)
        return status;

    if (json_string_length(value) == 0) {
        if (spec->default_text) {
            *out = default_value(spec);
            return BH_OK;
        }
        if (spec->required)
            return bh_error_set(err, BH_ERR_INVALID, field, "%s is empty; send a non-empty string",
                                field);
    }
    return copy_string(value, field, out, err);
}

static int normalize_count(const struct field_spec *spec, const json_t *value, const char *field,
                           json_t **out, struct bh_error *err)
{
    json_int_t number;

    /* A real such as 5.0 is rejected even when it is whole, because counts are integers. */
    if (json_is_real(value)) {
        char *text = json_dumps(value, JSON_ENCODE_ANY);
        int status = bh_error_set(err, BH_ERR_INVALID, field,
                                  "%s is %s, which is not written as a whole number; send it "
                                  "without a decimal point or exponent, such as 500",
                                  field, text ? text : "a real number");

        free(text);
        return status;
    }
    if (!json_is_integer(value))
        return reject_type(spec, value, field, err);

    number = json_integer_value(value);
    if (number < 0 || number > COUNT_MAX)
        return bh_error_set(err, BH_ERR_INVALID, field, "%s is %" JSON_INTEGER_FORMAT "; send %s",
                            field, number, expected_phrase(spec));
    *out = json_integer(number);
    return BH_OK;
}

static int normalize_bool(const struct field_spec *spec, const json_t *value, const char *field,
                          json_t **out, struct bh_error *err)
{
    if (!json_is_boolean(value))
        return reject_type(spec, value, field, err);
    *out = json_boolean(json_is_true(value));
    return BH_OK;
}

static int normalize_timestamp(const struct field_spec *spec, const json_t *value,
                               const char *field, json_t **out, struct bh_error *err)
{
    char excerpt[EXCERPT_MAX + 4];
    char text[ISO8601_MS_LEN + 1];
    int64_t unix_ms;
    int status;

    status = check_string(spec, value, field, err);
    if (status < 0)
        return status;

    status = clock_parse_iso8601(json_string_value(value), &unix_ms);
    if (status < 0) {
        copy_excerpt(json_string_value(value), excerpt);
        return bh_error_set(err, BH_ERR_INVALID, field,
                            "%s \"%s\" is not a valid date-time; send an ISO-8601 date-time "
                            "from 1970 to 9999 with a zone, such as \"2026-01-15T08:00:00.000Z\"",
                            field, excerpt);
    }

    clock_format_iso8601(unix_ms, text);
    *out = json_string(text);
    return BH_OK;
}

/* Validates a value the client sent and stores its canonical form in *out. */
static int normalize_client_value(const struct field_spec *spec, const json_t *value,
                                  const char *field, json_t **out, struct bh_error *err)
{
    if (json_is_null(value)) {
        if (spec->required)
            return bh_error_set(err, BH_ERR_INVALID, field, "%s cannot be null; send %s", field,
                                expected_phrase(spec));
        *out = default_value(spec);
        return BH_OK;
    }

    switch (spec->type) {
    case FIELD_ID:
        return normalize_id(spec, value, field, out, err);
    case FIELD_STRING:
        return normalize_string(spec, value, field, out, err);
    case FIELD_COUNT:
        return normalize_count(spec, value, field, out, err);
    case FIELD_BOOL:
        return normalize_bool(spec, value, field, out, err);
    case FIELD_TIMESTAMP:
        return normalize_timestamp(spec, value, field, out, err);
    }
    return bh_error_set(err, BH_ERR_INTERNAL, field, "%s has no known field type", field);
}

/* Chooses a field's value: the client's, else the stored one, else the default. */
static int resolve_field(const struct record_schema *schema, const struct field_spec *spec,
                         const json_t *input, const json_t *base, const char *path, json_t **out,
                         struct bh_error *err)
{
    char field[sizeof(err->field)];
    char required[FIELD_LIST_MAX];
    const json_t *client_value = json_object_get(input, spec->name);
    const json_t *stored = base ? json_object_get(base, spec->name) : NULL;

    format_field_path(field, sizeof(field), path, spec->name);
    if (client_value)
        return normalize_client_value(spec, client_value, field, out, err);

    if (stored) {
        *out = json_deep_copy(stored);
        return BH_OK;
    }

    if (spec->required) {
        format_field_list(schema, true, " and ", required);
        return bh_error_set(err, BH_ERR_INVALID, field, "%s is missing; every new %s needs %s",
                            field, schema->name, required);
    }
    *out = default_value(spec);
    return BH_OK;
}

static const struct field_spec *find_field(const struct record_schema *schema, const char *key)
{
    for (size_t i = 0; i < schema->count; i++) {
        if (strcmp(schema->fields[i].name, key) == 0)
            return &schema->fields[i];
    }
    return NULL;
}

/* Rejects an input that is not an object, or that has a key the kind does not define. */
static int check_keys(const struct record_schema *schema, json_t *input, const char *path,
                      struct bh_error *err)
{
    char field[sizeof(err->field)];
    char allowed[FIELD_LIST_MAX];
    void *iter;

    if (!input || !json_is_object(input))
        return bh_error_set(err, BH_ERR_MALFORMED, path,
                            "%s must be a JSON object of %s fields; got %s", path, schema->name,
                            input ? json_type_phrase(input) : "nothing");

    for (iter = json_object_iter(input); iter; iter = json_object_iter_next(input, iter)) {
        const char *key = json_object_iter_key(iter);

        if (find_field(schema, key))
            continue;
        format_field_path(field, sizeof(field), path, key);
        format_field_list(schema, false, ", ", allowed);
        return bh_error_set(err, BH_ERR_INVALID, field,
                            "%s is not a %s field; allowed fields are %s", field, schema->name,
                            allowed);
    }
    return BH_OK;
}

/* An update may repeat the stored id but never change it. */
static int check_same_id(const json_t *record, const json_t *base, const char *path,
                         struct bh_error *err)
{
    char field[sizeof(err->field)];
    char sent[EXCERPT_MAX + 4];
    const json_t *stored = json_object_get(base, "id");
    const json_t *result = json_object_get(record, "id");

    if (!stored || json_equal(result, stored))
        return BH_OK;

    format_field_path(field, sizeof(field), path, "id");
    copy_excerpt(json_string_value(result), sent);
    return bh_error_set(err, BH_ERR_INVALID, field,
                        "%s \"%s\" does not match the stored id \"%s\"; leave id out of an "
                        "update or send the stored id",
                        field, sent, json_is_string(stored) ? json_string_value(stored) : "");
}

json_t *record_normalize(enum record_kind kind, json_t *input, const json_t *base, const char *path,
                         struct bh_error *err)
{
    const struct record_schema *schema;
    json_t *record;

    if ((unsigned)kind >= RECORD_KIND_COUNT) {
        bh_error_set(err, BH_ERR_INTERNAL, "", "record kind %d does not exist", (int)kind);
        return NULL;
    }
    schema = &schemas[kind];
    if (!path)
        path = schema->name;

    if (check_keys(schema, input, path, err) < 0)
        return NULL;

    record = json_object();
    for (size_t i = 0; i < schema->count; i++) {
        json_t *value = NULL;

        if (resolve_field(schema, &schema->fields[i], input, base, path, &value, err) < 0) {
            json_decref(record);
            return NULL;
        }
        json_object_set_new(record, schema->fields[i].name, value);
    }

    if (base && check_same_id(record, base, path, err) < 0) {
        json_decref(record);
        return NULL;
    }
    return record;
}
