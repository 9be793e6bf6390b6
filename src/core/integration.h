/*
 * Integrations (webhooks): their settings, the rules for valid input, and their JSON form.
 *
 * Settings and their rules, from the product contract:
 *   name         1 to 100 characters, required
 *   url          required; see url_validate_target
 *   provider     "webhook" (default), "zapier", "make" or "n8n"; all receive the same payload
 *   signing      true (default) or false; a signing secret exists only while signing is on
 *   events       at least one selectable event type, by wire name; no duplicates
 *   headers      custom headers, an object {"Name": "value"}; at most 20, names are HTTP tokens
 *                of at most 128 bytes, values at most 2048 bytes with no CR, LF or NUL, and
 *                none may replace a header that bearhook sets itself
 *   maxRetries   1 to 5, default 3: retries after the first attempt
 *   timeoutMs    5000 to 60000, default 30000
 */
#ifndef BEARHOOK_CORE_INTEGRATION_H
#define BEARHOOK_CORE_INTEGRATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/error.h"
#include "core/ids.h"
#include "core/url.h"

#define INTEGRATION_NAME_MAX 100 /* characters */
#define CUSTOM_HEADERS_MAX 20
#define CUSTOM_HEADER_NAME_MAX 128
#define CUSTOM_HEADER_VALUE_MAX 2048
#define MAX_RETRIES_MIN 1
#define MAX_RETRIES_MAX 5
#define MAX_RETRIES_DEFAULT 3
#define TIMEOUT_MS_MIN 5000
#define TIMEOUT_MS_MAX 60000
#define TIMEOUT_MS_DEFAULT 30000

enum integration_status { INTEGRATION_ACTIVE, INTEGRATION_ERROR };

struct custom_header {
    char *name;
    char *value;
};

struct integration {
    char id[ID_LEN + 1];
    char user_id[ID_LEN + 1];
    char *name;
    char *url;
    char provider[16];
    bool signing;
    char *secret; /* NULL while signing is off */
    uint32_t events;
    struct custom_header *headers;
    size_t header_count;
    int max_retries;
    int timeout_ms;
    int64_t created_ms;
    int64_t updated_ms;

    /* Statistics of real deliveries; test deliveries do not count. */
    enum integration_status status;
    int64_t delivered;
    int64_t failed;
    int64_t last_delivery_ms; /* the most recent attempt of any delivery, 0 for never */
    char *last_error;         /* the most recent failed attempt's error, or NULL */
    int64_t last_error_ms;
};

/* Sets the defaults: provider "webhook", signing on, maxRetries 3, timeoutMs 30000, active. */
void integration_init(struct integration *integration);
/* Frees what the integration owns and leaves it as integration_init does. */
void integration_release(struct integration *integration);

/*
 * Validates a create request and fills out with its values and the defaults; id, user_id,
 * secret and the times are left for the caller. Unknown fields are rejected by name, and a
 * field whose value is null counts as absent. out is initialized here, so it must not hold
 * allocations; on error it is left released. Wrong JSON types are BH_ERR_MALFORMED, values
 * out of range BH_ERR_INVALID; err->field is the JSON key.
 */
int integration_from_json(json_t *input, const struct target_policy *policy,
                          struct integration *out, struct bh_error *err);
/*
 * Validates an update request with the same fields and rules as a create request, all of
 * them optional, and moves the fields present into target. On error target is unchanged.
 * Turning signing off frees target->secret; turning it on leaves a NULL secret for the
 * caller to generate. The caller sets updated_ms.
 */
int integration_update_from_json(json_t *input, const struct target_policy *policy,
                                 struct integration *target, struct bh_error *err);

/*
 * Returns the integration's JSON form for the API, with statistics. The secret is included
 * only when include_secret is true (the create response).
 */
json_t *integration_to_json(const struct integration *integration, bool include_secret);

/*
 * Parses a JSON array of event names into a mask. Every name must be a selectable event type
 * and inside `allowed`; the array must not be empty. Errors name field and the allowed names.
 */
int event_names_to_mask(json_t *names, uint32_t allowed, const char *field, uint32_t *mask,
                        struct bh_error *err);
/* Returns a JSON array of the wire names in mask, in catalog order. */
json_t *event_mask_to_json(uint32_t mask);

/* Custom headers as stored: a JSON object text, which the caller frees with free(). */
char *custom_headers_to_text(const struct custom_header *headers, size_t count);
/*
 * Parses stored headers, applying the same checks as a request; NULL or empty text is no
 * headers. Returns BH_ERR_INVALID for text that fails them. The caller frees *headers with
 * custom_headers_free.
 */
int custom_headers_from_text(const char *text, struct custom_header **headers, size_t *count);
void custom_headers_free(struct custom_header *headers, size_t count);
/* True for a header that bearhook sets itself and that a custom header cannot replace. */
bool header_name_is_reserved(const char *name);

#endif
