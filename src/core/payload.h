/*
 * The webhook body: the event payload that every provider receives.
 *
 *   {"event": ..., "timestamp": ..., "data": {"lead": ..., "campaign": ...,
 *    "linkedInAccount": ...}, "metadata": {"eventId": ..., "userId": ..., "integrationId": ...}}
 *
 * Keys appear in exactly this order. The JSON is compact (no whitespace between tokens) and
 * UTF-8 is written as is, not escaped, so the body's bytes are what a receiver hashes.
 * "campaign" is absent when the event has none, and "linkedInAccount" when there is none.
 */
#ifndef BEARHOOK_CORE_PAYLOAD_H
#define BEARHOOK_CORE_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct payload_input {
    const char *event;              /* wire name of the event type */
    int64_t timestamp_ms;           /* when the event happened, Unix milliseconds */
    const json_t *lead;             /* canonical lead record */
    const json_t *campaign;         /* canonical campaign record, or NULL */
    const json_t *linkedin_account; /* canonical LinkedIn account record, or NULL */
    /*
     * Optional: the same records already serialized compactly (json_dumps with JSON_COMPACT),
     * used as they are instead of serializing the objects again. NULL to serialize.
     */
    const char *lead_text;
    const char *campaign_text;
    const char *linkedin_account_text;
    const char *event_id;
    const char *user_id;
    const char *integration_id;
};

/*
 * Builds the body and returns it for the caller to free, with its length in bytes in *len.
 * The records are only read, so the caller keeps its references. Returns NULL, a caller's bug,
 * when lead (or a given campaign or account) is not an object, or when a string is NULL or
 * not valid UTF-8.
 */
char *payload_build(const struct payload_input *input, size_t *len);

/*
 * The same body in two steps, for an event that goes to several integrations: the bodies
 * differ only in metadata.integrationId, which comes last. payload_prefix_build serializes
 * everything before that value once (input->integration_id is not read), and payload_finish
 * appends one integration's id and the closing braces. Both return NULL as payload_build does.
 */
char *payload_prefix_build(const struct payload_input *input, size_t *len);
char *payload_finish(const char *prefix, size_t prefix_len, const char *integration_id,
                     size_t *len);

#endif
