#include "core/payload.h"

#include <stdlib.h>

#include "core/clock.h"
#include "util/buf.h"

static int append_to_buf(const char *bytes, size_t size, void *data)
{
    buf_append(data, bytes, size);
    return 0;
}

/* Appends text as a JSON string; -1 when it is NULL or not valid UTF-8. */
static int append_string(struct buf *out, const char *text)
{
    json_t *value = text ? json_string(text) : NULL;
    int result;

    if (!value)
        return -1;
    result = json_dump_callback(value, append_to_buf, out, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(value);
    return result;
}

/* Appends "key": and the record, as text when given; -1 when it is not an object. */
static int append_record(struct buf *out, const char *key, const json_t *record, const char *text)
{
    if (!json_is_object(record))
        return -1;
    buf_appendf(out, "\"%s\":", key);
    if (text) {
        buf_append_str(out, text);
        return 0;
    }
    /* Compact, in insertion order, and without JSON_ENSURE_ASCII so UTF-8 stays raw bytes. */
    return json_dump_callback(record, append_to_buf, out, JSON_COMPACT);
}

char *payload_prefix_build(const struct payload_input *input, size_t *len)
{
    char timestamp[ISO8601_MS_LEN + 1];
    struct buf body = BUF_INIT;
    int failed = 0;

    clock_format_iso8601(input->timestamp_ms, timestamp);
    buf_append_str(&body, "{\"event\":");
    failed |= append_string(&body, input->event);
    buf_appendf(&body, ",\"timestamp\":\"%s\",\"data\":{", timestamp);
    failed |= append_record(&body, "lead", input->lead, input->lead_text);
    if (input->campaign) {
        buf_append_str(&body, ",");
        failed |= append_record(&body, "campaign", input->campaign, input->campaign_text);
    }
    if (input->linkedin_account) {
        buf_append_str(&body, ",");
        failed |= append_record(&body, "linkedInAccount", input->linkedin_account,
                                input->linkedin_account_text);
    }
    buf_append_str(&body, "},\"metadata\":{\"eventId\":");
    failed |= append_string(&body, input->event_id);
    buf_append_str(&body, ",\"userId\":");
    failed |= append_string(&body, input->user_id);
    buf_append_str(&body, ",\"integrationId\":");

    if (failed) {
        buf_release(&body);
        return NULL;
    }
    return buf_detach(&body, len);
}

char *payload_finish(const char *prefix, size_t prefix_len, const char *integration_id, size_t *len)
{
    struct buf body = BUF_INIT;

    buf_append(&body, prefix, prefix_len);
    if (append_string(&body, integration_id) != 0) {
        buf_release(&body);
        return NULL;
    }
    buf_append_str(&body, "}}");
    return buf_detach(&body, len);
}

char *payload_build(const struct payload_input *input, size_t *len)
{
    size_t prefix_len = 0;
    char *prefix = payload_prefix_build(input, &prefix_len);
    char *body;

    if (!prefix)
        return NULL;
    body = payload_finish(prefix, prefix_len, input->integration_id, len);
    free(prefix);
    return body;
}
