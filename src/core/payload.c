#include "core/payload.h"

#include "core/clock.h"
#include "util/buf.h"

static int append_to_buf(const char *bytes, size_t size, void *data)
{
    buf_append(data, bytes, size);
    return 0;
}

/* Sets key to a copy of the string; returns -1 when text is NULL or not valid UTF-8. */
static int set_string(json_t *object, const char *key, const char *text)
{
    if (!text)
        return -1;
    return json_object_set_new(object, key, json_string(text));
}

/* Sets key to a deep copy of the record, so the payload never shares the caller's objects. */
static int set_record(json_t *object, const char *key, const json_t *record)
{
    if (!json_is_object(record))
        return -1;
    return json_object_set_new(object, key, json_deep_copy(record));
}

static json_t *build_data(const struct payload_input *input)
{
    json_t *data = json_object();
    int failed = 0;

    failed |= set_record(data, "lead", input->lead);
    if (input->campaign)
        failed |= set_record(data, "campaign", input->campaign);
    if (input->linkedin_account)
        failed |= set_record(data, "linkedInAccount", input->linkedin_account);

    if (failed) {
        json_decref(data);
        return NULL;
    }
    return data;
}

static json_t *build_metadata(const struct payload_input *input)
{
    json_t *metadata = json_object();
    int failed = 0;

    failed |= set_string(metadata, "eventId", input->event_id);
    failed |= set_string(metadata, "userId", input->user_id);
    failed |= set_string(metadata, "integrationId", input->integration_id);

    if (failed) {
        json_decref(metadata);
        return NULL;
    }
    return metadata;
}

char *payload_build(const struct payload_input *input, size_t *len)
{
    char timestamp[ISO8601_MS_LEN + 1];
    struct buf body = BUF_INIT;
    json_t *root = json_object();
    char *result = NULL;
    int failed = 0;

    /* json_object_set_new takes the reference even when it fails, so NULL parts leak nothing. */
    clock_format_iso8601(input->timestamp_ms, timestamp);
    failed |= set_string(root, "event", input->event);
    failed |= set_string(root, "timestamp", timestamp);
    failed |= json_object_set_new(root, "data", build_data(input));
    failed |= json_object_set_new(root, "metadata", build_metadata(input));
    if (failed)
        goto release_root;

    /* Compact, in insertion order, and without JSON_ENSURE_ASCII so UTF-8 stays as raw bytes. */
    if (json_dump_callback(root, append_to_buf, &body, JSON_COMPACT) != 0) {
        buf_release(&body);
        goto release_root;
    }
    result = buf_detach(&body, len);

release_root:
    json_decref(root);
    return result;
}
