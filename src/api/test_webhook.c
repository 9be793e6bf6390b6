/*
 * POST /v1/integrations/{id}/test: sends a sample payload to the webhook now and returns the
 * outcome.
 *
 * The test goes through the dispatcher as a delivery marked as a test, so it is signed and
 * sent exactly like a real one and appears in the delivery log. A test delivery makes one
 * attempt and changes no statistics. The handler waits for that attempt, polling the store
 * without holding the store lock in between, for at most the integration's timeout and a
 * margin. A test still running then gets a 202 response with its delivery id to follow.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/events.h"
#include "core/ids.h"
#include "core/payload.h"
#include "delivery/dispatcher.h"
#include "util/log.h"

#define POLL_INTERVAL_MS 20
#define WAIT_MARGIN_MS 10000 /* past the integration's timeout, for the claim and the write */

/* The sample records: the example lead, campaign and account of the payload documentation. */
static json_t *sample_record(enum record_kind kind)
{
    json_t *input;
    json_t *record;

    if (kind == RECORD_LEAD)
        input = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, "
            "s:b, s:s, s:s, s:s}",
            "id", "65abc123def4567890ghij01", "firstName", "Jane", "lastName", "Smith", "email",
            "jane.smith@example.com", "phone", "+1-555-0123", "profileUrl",
            "https://www.linkedin.com/in/janesmith", "profileHeadline", "VP of Sales at Acme Corp",
            "profileImageUrl", "https://media.licdn.com/...", "position", "VP of Sales",
            "companyName", "Acme Corp", "location", "San Francisco, CA", "website",
            "https://acme.com", "education", "Stanford University", "publicIdentifier", "janesmith",
            "connectionCount", 500, "followerCount", 1200, "isPremium", 1, "memberUrn",
            "urn:li:member:123456789", "stage", "connected", "createdAt",
            "2026-01-15T08:00:00.000Z");
    else if (kind == RECORD_CAMPAIGN)
        input = json_pack("{s:s, s:s, s:s}", "id", "65abc123def4567890ghij02", "name",
                          "Q1 Outreach", "status", "running");
    else
        input = json_pack("{s:s, s:s, s:s}", "id", "65abc123def4567890ghij03", "name",
                          "Sales Team Account", "email", "john.smith@example.com");

    record = record_normalize(kind, input, NULL, NULL, NULL);
    json_decref(input);
    return record;
}

/* The sample's event type: the guide's example type when the webhook allows it. */
static int sample_event_type(uint32_t allowed)
{
    if (allowed & EVENT_MASK(EVENT_CONNECTION_REQUEST_ACCEPTED))
        return EVENT_CONNECTION_REQUEST_ACCEPTED;
    for (int type = 0; type < EVENT_TYPE_COUNT; type++) {
        if (allowed & EVENT_MASK(type))
            return type;
    }
    return EVENT_CONNECTION_REQUEST_ACCEPTED;
}

/* Inserts the sample event and its test delivery in one transaction. */
static int queue_test(struct api_context *api, const struct integration *integration,
                      struct delivery *delivery, struct bh_error *err)
{
    json_t *lead = sample_record(RECORD_LEAD);
    json_t *campaign = sample_record(RECORD_CAMPAIGN);
    json_t *account = sample_record(RECORD_ACCOUNT);
    struct event_record event = {0};
    struct payload_input payload = {0};
    int result;

    event_id_generate(event.id);
    memcpy(event.user_id, integration->user_id, sizeof(event.user_id));
    event.type = sample_event_type(integration->events);
    event.lead_id = (char *)json_string_value(json_object_get(lead, "id"));
    event.campaign_id = (char *)json_string_value(json_object_get(campaign, "id"));
    event.account_id = (char *)json_string_value(json_object_get(account, "id"));
    event.created_ms = clock_now_ms();
    event.occurred_ms = event.created_ms;

    payload.event = event_type_info((enum event_type)event.type)->name;
    payload.timestamp_ms = event.occurred_ms;
    payload.lead = lead;
    payload.campaign = campaign;
    payload.linkedin_account = account;
    payload.event_id = event.id;
    payload.user_id = event.user_id;
    payload.integration_id = integration->id;

    delivery_id_generate(delivery->id);
    memcpy(delivery->event_id, event.id, sizeof(delivery->event_id));
    memcpy(delivery->integration_id, integration->id, sizeof(delivery->integration_id));
    memcpy(delivery->user_id, integration->user_id, sizeof(delivery->user_id));
    delivery->event_type = event.type;
    delivery->body = payload_build(&payload, &delivery->body_len);
    delivery->state = DELIVERY_PENDING;
    delivery->next_attempt_ms = event.created_ms;
    delivery->created_ms = event.created_ms;
    delivery->updated_ms = event.created_ms;
    delivery->test = true;

    result = store_begin(api->store, err);
    if (result == BH_OK)
        result = store_event_insert(api->store, &event, err);
    if (result == BH_OK)
        result = store_delivery_insert(api->store, delivery, err);
    if (result == BH_OK)
        result = store_commit(api->store, err);
    if (result != BH_OK)
        store_rollback(api->store);

    free(delivery->body);
    delivery->body = NULL;
    json_decref(lead);
    json_decref(campaign);
    json_decref(account);
    return result;
}

static void sleep_ms(long ms)
{
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&pause, NULL);
}

/* Waits until the delivery is no longer pending, or the deadline; fills finished. */
static int wait_for_outcome(struct api_context *api, const char *user_id, const char *id,
                            int64_t deadline_ms, struct delivery *finished, struct bh_error *err)
{
    int result = BH_OK;

    while (clock_monotonic_ms() < deadline_ms) {
        delivery_release(finished);
        pthread_mutex_lock(&api->store_lock);
        result = store_delivery_get(api->store, user_id, id, finished, err);
        pthread_mutex_unlock(&api->store_lock);
        if (result != BH_OK || finished->state != DELIVERY_PENDING)
            return result;
        sleep_ms(POLL_INTERVAL_MS);
    }
    return result;
}

const char *test_failure_kind(const char *error, int http_status)
{
    static const struct {
        const char *needle;
        const char *kind;
    } kinds[] = {
        {"timed out", "timeout"},
        {"connection refused", "connection_refused"},
        {"could not resolve", "dns_failure"},
        {"TLS", "tls_failure"},
        {"certificate", "tls_failure"},
        {"refused by the target policy", "target_refused"},
        {"redirect", "redirect"},
    };

    if (!error)
        return NULL;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strstr(error, kinds[i].needle))
            return kinds[i].kind;
    }
    return http_status ? "http_status" : "connection_failed";
}

static int describe_outcome(struct api_context *api, const struct delivery *finished,
                            struct response *response, struct bh_error *err)
{
    struct attempt *attempts = NULL;
    size_t count = 0;
    const struct attempt *last;
    bool success = finished->state == DELIVERY_SUCCEEDED;
    int result;

    pthread_mutex_lock(&api->store_lock);
    result = store_attempt_list(api->store, finished->id, &attempts, &count, err);
    pthread_mutex_unlock(&api->store_lock);
    if (result != BH_OK)
        return result;
    if (count == 0) {
        attempt_list_free(attempts, count);
        return bh_error_set(err, BH_ERR_INTERNAL, "", "test delivery %s has no attempt",
                            finished->id);
    }

    last = &attempts[count - 1];
    response->body = json_pack(
        "{s:b, s:s, s:o, s:o, s:o, s:i, s:s}", "success", success, "message",
        success ? "Test successful" : (last->error ? last->error : "Test failed"), "httpStatus",
        last->http_status ? json_integer(last->http_status) : json_null(), "failure",
        success ? json_null() : json_string(test_failure_kind(last->error, last->http_status)),
        "error", last->error ? json_string(last->error) : json_null(), "durationMs",
        last->duration_ms, "deliveryId", finished->id);
    attempt_list_free(attempts, count);
    return BH_OK;
}

int handle_integration_test(struct api_context *api, struct request *request,
                            struct response *response, struct bh_error *err)
{
    struct integration integration;
    struct delivery queued = {0};
    struct delivery finished = {0};
    int64_t deadline_ms;
    int result;

    if (!api->dispatcher)
        return bh_error_set(err, BH_ERR_UNAVAILABLE, "",
                            "this server does not deliver (--role api); send the test to a "
                            "server that runs with --role all or worker");

    integration_init(&integration);
    pthread_mutex_lock(&api->store_lock);
    result =
        store_integration_get(api->store, request->user.id, request->params[0], &integration, err);
    if (result == BH_ERR_NOT_FOUND)
        result = bh_error_set(err, BH_ERR_NOT_FOUND, "id",
                              "integration \"%.64s\" not found; list yours with GET "
                              "/v1/integrations",
                              request->params[0]);
    if (result == BH_OK)
        result = queue_test(api, &integration, &queued, err);
    pthread_mutex_unlock(&api->store_lock);
    if (result != BH_OK)
        goto release;

    dispatcher_notify(api->dispatcher);
    log_info("api", "test queued integration=%s delivery=%s user=%s", integration.id, queued.id,
             integration.user_id);
    deadline_ms = clock_monotonic_ms() + integration.timeout_ms + WAIT_MARGIN_MS;
    result = wait_for_outcome(api, request->user.id, queued.id, deadline_ms, &finished, err);
    if (result != BH_OK)
        goto release;

    if (finished.state == DELIVERY_PENDING) {
        response->status = MHD_HTTP_ACCEPTED;
        response->body =
            json_pack("{s:s, s:s, s:s}", "status", "pending", "deliveryId", queued.id, "message",
                      "The test is still running; follow it with GET "
                      "/v1/deliveries/{id}");
    } else {
        result = describe_outcome(api, &finished, response, err);
    }

release:
    delivery_release(&finished);
    integration_release(&integration);
    return result;
}
