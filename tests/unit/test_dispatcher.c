/*
 * Dispatcher tests against a real SQLite store in a temporary folder and real HTTP receivers
 * (libmicrohttpd on 127.0.0.1, an ephemeral port each). Each receiver responds as its
 * test scripts it and records every request's method, path, headers and body.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "core/clock.h"
#include "core/events.h"
#include "core/ids.h"
#include "core/integration.h"
#include "core/netaddr.h"
#include "core/signature.h"
#include "core/url.h"
#include "delivery/dispatcher.h"
#include "store/store.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/metrics.h"

#define WAIT_MS 10000 /* maximum wait for a delivery to settle */
#define POLL_MS 10
#define REQUESTS_MAX 512
#define HEADERS_MAX 32
#define BODY_MAX 65536
#define SECRET "whsec_dGVzdC1zZWNyZXQtZm9yLWRpc3BhdGNoZXItdGVzdHM="

struct received_header {
    char *name;
    char *value;
};

struct received_request {
    char *method;
    char *path;
    struct received_header headers[HEADERS_MAX];
    size_t header_count;
    char *body;
    size_t body_len;
    int64_t received_ms;
};

struct receiver {
    struct MHD_Daemon *daemon;
    int port;

    /* The script: request n (from 0) gets statuses[n], or the last status once past the end. */
    int statuses[8];
    size_t status_count;
    int delay_ms;            /* slept before responding */
    const char *retry_after; /* Retry-After value, or NULL */
    const char *location;    /* Location value, or NULL */

    pthread_mutex_t lock;
    struct received_request requests[REQUESTS_MAX];
    size_t request_count;
    atomic_int connections;
    atomic_int active;     /* requests in the handler now */
    atomic_int max_active; /* the maximum of active so far */
};

struct fixture {
    char dir[64];
    char path[128];
    struct store *store;
    struct user user;
    struct receiver receiver;
    struct target_policy policy;
    struct dispatcher *dispatcher;
    char url[128];
};

static void sleep_ms(int ms)
{
    struct timespec pause = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&pause, NULL);
}

/* Receiver */

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    struct received_request *request = cls;

    if (request->header_count == HEADERS_MAX)
        return MHD_NO;
    request->headers[request->header_count].name = xstrdup(key);
    request->headers[request->header_count].value = xstrdup(value != NULL ? value : "");
    request->header_count++;
    return MHD_YES;
}

/* Records the request and returns its index, or -1 once REQUESTS_MAX requests are recorded. */
static int record_request(struct receiver *receiver, struct MHD_Connection *connection,
                          const char *method, const char *path, const struct buf *body)
{
    struct received_request *request;
    int index;

    pthread_mutex_lock(&receiver->lock);
    if (receiver->request_count == REQUESTS_MAX) {
        pthread_mutex_unlock(&receiver->lock);
        return -1;
    }
    index = (int)receiver->request_count++;
    request = &receiver->requests[index];
    request->method = xstrdup(method);
    request->path = xstrdup(path);
    request->body = xmalloc(body->len + 1);
    memcpy(request->body, body->len > 0 ? body->data : "", body->len);
    request->body[body->len] = '\0';
    request->body_len = body->len;
    request->received_ms = clock_now_ms();
    MHD_get_connection_values(connection, MHD_HEADER_KIND, collect_header, request);
    pthread_mutex_unlock(&receiver->lock);
    return index;
}

static enum MHD_Result respond(struct receiver *receiver, struct MHD_Connection *connection,
                               int index)
{
    struct MHD_Response *response;
    size_t step =
        (size_t)index < receiver->status_count ? (size_t)index : receiver->status_count - 1;
    enum MHD_Result result;

    response = MHD_create_response_from_buffer(strlen("received"), (void *)"received",
                                               MHD_RESPMEM_PERSISTENT);
    if (receiver->retry_after != NULL)
        MHD_add_response_header(response, "Retry-After", receiver->retry_after);
    if (receiver->location != NULL)
        MHD_add_response_header(response, "Location", receiver->location);
    result = MHD_queue_response(connection, (unsigned)receiver->statuses[step], response);
    MHD_destroy_response(response);
    return result;
}

/* Counts the requests in the handler, and keeps the maximum in max_active. */
static void track_active(struct receiver *receiver, int change)
{
    int now = atomic_fetch_add(&receiver->active, change) + change;
    int seen = atomic_load(&receiver->max_active);

    while (now > seen && !atomic_compare_exchange_weak(&receiver->max_active, &seen, now))
        ;
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *connection, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct receiver *receiver = cls;
    struct buf *body = *con_cls;
    int index;

    if (body == NULL) {
        body = xcalloc(1, sizeof(*body));
        *con_cls = body;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (body->len + *upload_data_size <= BODY_MAX)
            buf_append(body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }

    index = record_request(receiver, connection, method, url, body);
    if (index < 0)
        return MHD_NO;
    track_active(receiver, 1);
    if (receiver->delay_ms > 0)
        sleep_ms(receiver->delay_ms);
    track_active(receiver, -1);
    return respond(receiver, connection, index);
}

static void request_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                              enum MHD_RequestTerminationCode code)
{
    struct buf *body = *con_cls;

    if (body != NULL) {
        buf_release(body);
        free(body);
        *con_cls = NULL;
    }
}

static void connection_changed(void *cls, struct MHD_Connection *connection, void **socket_context,
                               enum MHD_ConnectionNotificationCode code)
{
    struct receiver *receiver = cls;

    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&receiver->connections, 1);
}

/* Starts the receiver on 127.0.0.1 with an ephemeral port; the script is set beforehand. */
static void receiver_start(struct receiver *receiver)
{
    struct sockaddr_in address;
    const union MHD_DaemonInfo *info;

    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;

    receiver->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
        handle_request, receiver, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, receiver, MHD_OPTION_NOTIFY_CONNECTION,
        connection_changed, receiver, MHD_OPTION_END);
    assert_non_null(receiver->daemon);

    info = MHD_get_daemon_info(receiver->daemon, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    receiver->port = info->port;
    assert_true(receiver->port > 0);
}

static void receiver_stop(struct receiver *receiver)
{
    if (receiver->daemon != NULL)
        MHD_stop_daemon(receiver->daemon);
    receiver->daemon = NULL;

    for (size_t i = 0; i < receiver->request_count; i++) {
        struct received_request *request = &receiver->requests[i];

        for (size_t h = 0; h < request->header_count; h++) {
            free(request->headers[h].name);
            free(request->headers[h].value);
        }
        free(request->method);
        free(request->path);
        free(request->body);
    }
    receiver->request_count = 0;
}

static size_t receiver_count(struct receiver *receiver)
{
    size_t count;

    pthread_mutex_lock(&receiver->lock);
    count = receiver->request_count;
    pthread_mutex_unlock(&receiver->lock);
    return count;
}

/* Waits until the receiver has recorded count requests; false when WAIT_MS passes first. */
static bool receiver_wait(struct receiver *receiver, size_t count)
{
    int64_t deadline = clock_monotonic_ms() + WAIT_MS;

    while (receiver_count(receiver) < count) {
        if (clock_monotonic_ms() > deadline)
            return false;
        sleep_ms(2);
    }
    return true;
}

/* Returns the first header named name, compared without case, or NULL. */
static const char *header_value(const struct received_request *request, const char *name)
{
    for (size_t i = 0; i < request->header_count; i++) {
        if (strcasecmp(request->headers[i].name, name) == 0)
            return request->headers[i].value;
    }
    return NULL;
}

/* Copies the headers that bearhook chooses, skipping the transport's Host and Content-Length. */
static size_t chosen_headers(const struct received_request *request,
                             const struct received_header **out)
{
    size_t count = 0;

    for (size_t i = 0; i < request->header_count; i++) {
        const char *name = request->headers[i].name;

        if (strcasecmp(name, "Host") == 0 || strcasecmp(name, "Content-Length") == 0)
            continue;
        out[count++] = &request->headers[i];
    }
    return count;
}

/* Store setup */

static void insert_integration(struct fixture *f, const char *url, const char *secret,
                               const struct custom_header *headers, size_t header_count,
                               int max_retries, int timeout_ms, char id[ID_LEN + 1])
{
    struct integration integration;
    struct bh_error err;
    int64_t now_ms = clock_now_ms();

    integration_init(&integration);
    id_generate(integration.id);
    memcpy(integration.user_id, f->user.id, sizeof(integration.user_id));
    integration.name = xstrdup("Test receiver");
    integration.url = xstrdup(url);
    snprintf(integration.provider, sizeof(integration.provider), "webhook");
    integration.signing = secret != NULL;
    integration.secret = secret != NULL ? xstrdup(secret) : NULL;
    integration.events = EVENT_SELECTABLE_MASK;
    integration.headers = xcalloc(header_count, sizeof(*integration.headers));
    for (size_t i = 0; i < header_count; i++) {
        integration.headers[i].name = xstrdup(headers[i].name);
        integration.headers[i].value = xstrdup(headers[i].value);
    }
    integration.header_count = header_count;
    integration.max_retries = max_retries;
    /* Below the product's 5000 ms minimum on purpose: the store does not check ranges. */
    integration.timeout_ms = timeout_ms;
    integration.created_ms = now_ms;
    integration.updated_ms = now_ms;
    integration.status = INTEGRATION_ACTIVE;

    assert_int_equal(store_integration_insert(f->store, &integration, &err), 0);
    memcpy(id, integration.id, ID_LEN + 1);
    integration_release(&integration);
}

/* Writes an event and its delivery of body to the integration, due now, in store's transaction. */
static int write_delivery(struct store *store, const struct user *user, const char *integration_id,
                          const char *body, char id[DELIVERY_ID_LEN + 1])
{
    struct event_record event = {0};
    struct delivery delivery = {0};
    struct bh_error err;
    int64_t now_ms = clock_now_ms();
    int result;

    event_id_generate(event.id);
    memcpy(event.user_id, user->id, sizeof(event.user_id));
    event.type = EVENT_MESSAGE_REPLIED;
    event.lead_id = "lead-1";
    event.campaign_id = "campaign-1";
    event.occurred_ms = now_ms;
    event.created_ms = now_ms;

    delivery_id_generate(delivery.id);
    memcpy(delivery.event_id, event.id, sizeof(delivery.event_id));
    memcpy(delivery.integration_id, integration_id, sizeof(delivery.integration_id));
    memcpy(delivery.user_id, user->id, sizeof(delivery.user_id));
    delivery.event_type = EVENT_MESSAGE_REPLIED;
    delivery.body = (char *)body;
    delivery.body_len = strlen(body);
    delivery.state = DELIVERY_PENDING;
    delivery.next_attempt_ms = now_ms;
    delivery.created_ms = now_ms;
    delivery.updated_ms = now_ms;

    result = store_event_insert(store, &event, &err);
    if (result == 0)
        result = store_delivery_insert(store, &delivery, &err);
    memcpy(id, delivery.id, DELIVERY_ID_LEN + 1);
    return result;
}

/* Inserts an event and its delivery of body to the integration, due now. */
static void insert_delivery(struct fixture *f, const char *integration_id, const char *body,
                            char id[DELIVERY_ID_LEN + 1])
{
    struct bh_error err;

    assert_int_equal(store_begin(f->store, &err), 0);
    assert_int_equal(write_delivery(f->store, &f->user, integration_id, body, id), 0);
    assert_int_equal(store_commit(f->store, &err), 0);
}

/* Waits until the counter reaches at least value; false when WAIT_MS passes first. */
static bool wait_metric(enum metric metric, uint64_t value)
{
    int64_t deadline = clock_monotonic_ms() + WAIT_MS;

    while (metrics_get(metric) < value) {
        if (clock_monotonic_ms() > deadline)
            return false;
        sleep_ms(2);
    }
    return true;
}

/* Waits until the delivery leaves the pending state and fills out; false on time out. */
static bool wait_settled(struct fixture *f, const char *id, struct delivery *out)
{
    int64_t deadline = clock_monotonic_ms() + WAIT_MS;
    struct bh_error err;

    for (;;) {
        assert_int_equal(store_delivery_get(f->store, f->user.id, id, out, &err), 0);
        if (out->state != DELIVERY_PENDING)
            return true;
        delivery_release(out);
        if (clock_monotonic_ms() > deadline)
            return false;
        sleep_ms(POLL_MS);
    }
}

static void start_dispatcher_capped(struct fixture *f, int max_in_flight, int per_endpoint)
{
    struct dispatcher_options options = {0};
    struct bh_error err;

    options.store_location = f->path;
    options.max_in_flight = max_in_flight;
    options.max_in_flight_per_endpoint = per_endpoint;
    options.retry.base_ms = 20;
    options.retry.max_ms = 200;
    options.retry.retry_after_max_ms = 2000;
    options.targets = &f->policy;
    options.lease_margin_ms = 1000;

    f->dispatcher = dispatcher_start(&options, &err);
    if (f->dispatcher == NULL)
        fail_msg("dispatcher_start failed: %s", err.message);
}

static void start_dispatcher(struct fixture *f, int max_in_flight)
{
    start_dispatcher_capped(f, max_in_flight, 0);
}

/* Sets up the receiver with a script of statuses and the integration that targets it. */
static void receiver_script(struct fixture *f, const int *statuses, size_t count)
{
    assert_true(count > 0 && count <= 8);
    memcpy(f->receiver.statuses, statuses, count * sizeof(*statuses));
    f->receiver.status_count = count;
    receiver_start(&f->receiver);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/hook", f->receiver.port);
}

static void get_integration(struct fixture *f, const char *id, struct integration *out)
{
    struct bh_error err;

    assert_int_equal(store_integration_get(f->store, f->user.id, id, out, &err), 0);
}

static void receiver_init(struct receiver *receiver)
{
    pthread_mutex_init(&receiver->lock, NULL);
    atomic_init(&receiver->connections, 0);
    atomic_init(&receiver->active, 0);
    atomic_init(&receiver->max_active, 0);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    struct bh_error err;
    char key_hash[SHA256_HEX_LEN + 1];

    snprintf(f->dir, sizeof(f->dir), "/tmp/bearhook-dispatcher-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/bearhook.db", f->dir);
    f->store = store_open(f->path, &err);
    assert_non_null(f->store);

    id_generate(f->user.id);
    snprintf(f->user.name, sizeof(f->user.name), "dispatcher test");
    f->user.created_ms = clock_now_ms();
    api_key_hash("bh_dispatcher_test_key", key_hash);
    assert_int_equal(store_user_create(f->store, &f->user, key_hash, &err), 0);

    f->policy.allow_http = true;
    assert_int_equal(cidr_list_parse("127.0.0.0/8", &f->policy.allowed_networks, &err), 0);
    receiver_init(&f->receiver);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char file[160];

    dispatcher_stop(f->dispatcher);
    receiver_stop(&f->receiver);
    pthread_mutex_destroy(&f->receiver.lock);
    store_close(f->store);
    cidr_list_release(&f->policy.allowed_networks);

    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(file, sizeof(file), "%s%s", f->path, suffixes[i]);
        unlink(file);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Tests */

static void dispatcher_success(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {200};
    static const char body[] = "{\"event\": \"message_replied\",\n  \"text\": \"Gr\xc3\xbc\xc3\x9f"
                               "e \\\"quoted\\\" \\u00e9\", \"n\": 1.50}\n";
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    char expected_signature[SIGNATURE_HEX_LEN + 1];
    char expected_standard[STANDARD_SIGNATURE_LEN + 1];
    char host[64];
    char length[32];
    const struct received_header *headers[HEADERS_MAX];
    const struct received_request *request;
    struct delivery delivery;
    struct integration integration;
    size_t header_count;
    long long timestamp;

    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 3, 2000, integration_id);
    insert_delivery(f, integration_id, body, delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
    assert_int_equal(delivery.attempts, 1);
    assert_int_equal(receiver_count(&f->receiver), 1);
    request = &f->receiver.requests[0];
    assert_string_equal(request->method, "POST");
    assert_string_equal(request->path, "/hook");
    assert_int_equal(request->body_len, strlen(body));
    assert_memory_equal(request->body, body, strlen(body));

    snprintf(host, sizeof(host), "127.0.0.1:%d", f->receiver.port);
    assert_string_equal(header_value(request, "Host"), host);
    snprintf(length, sizeof(length), "%zu", strlen(body));
    assert_string_equal(header_value(request, "Content-Length"), length);

    header_count = chosen_headers(request, headers);
    assert_int_equal(header_count, 8);
    assert_string_equal(headers[0]->name, "Content-Type");
    assert_string_equal(headers[0]->value, "application/json");
    assert_string_equal(headers[1]->name, "User-Agent");
    assert_string_equal(headers[1]->value, "Bearconnect-Webhook/1.0");
    assert_string_equal(headers[2]->name, "X-Webhook-Id");
    assert_string_equal(headers[2]->value, integration_id);
    assert_string_equal(headers[3]->name, "X-Bearconnect-Timestamp");
    assert_string_equal(headers[4]->name, "X-Bearconnect-Signature");
    assert_string_equal(headers[5]->name, "webhook-id");
    assert_string_equal(headers[5]->value, delivery_id);
    assert_string_equal(headers[6]->name, "webhook-timestamp");
    assert_string_equal(headers[6]->value, headers[3]->value);
    assert_string_equal(headers[7]->name, "webhook-signature");

    timestamp = strtoll(headers[3]->value, NULL, 10);
    assert_true(llabs(timestamp - (long long)(clock_now_ms() / 1000)) <= 5);
    signature_compute(SECRET, body, strlen(body), expected_signature);
    assert_string_equal(headers[4]->value, expected_signature);
    assert_int_equal(standard_signature_compute(SECRET, delivery_id, timestamp, body, strlen(body),
                                                expected_standard, NULL),
                     0);
    assert_string_equal(headers[7]->value, expected_standard);

    get_integration(f, integration_id, &integration);
    assert_int_equal(integration.delivered, 1);
    assert_int_equal(integration.failed, 0);
    assert_int_equal(integration.status, INTEGRATION_ACTIVE);
    integration_release(&integration);
    delivery_release(&delivery);
}

static void dispatcher_unsigned(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {204};
    static const struct custom_header custom[] = {
        {"Authorization", "Bearer token-123"},
        {"X-Campaign", "spring launch"},
    };
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    const struct received_header *headers[HEADERS_MAX];
    const struct received_request *request;
    struct delivery delivery;
    size_t header_count;

    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, NULL, custom, 2, 3, 2000, integration_id);
    insert_delivery(f, integration_id, "{\"event\":\"message_sent\"}", delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
    assert_int_equal(receiver_count(&f->receiver), 1);
    request = &f->receiver.requests[0];
    for (size_t i = 0; i < request->header_count; i++)
        assert_int_not_equal(strncasecmp(request->headers[i].name, "X-Bearconnect-", 14), 0);

    header_count = chosen_headers(request, headers);
    assert_int_equal(header_count, 7);
    assert_string_equal(headers[2]->name, "X-Webhook-Id");
    assert_string_equal(headers[3]->name, "webhook-id");
    assert_string_equal(headers[3]->value, delivery_id);
    assert_string_equal(headers[4]->name, "webhook-timestamp");
    assert_true(llabs(strtoll(headers[4]->value, NULL, 10) - (long long)(clock_now_ms() / 1000)) <=
                5);
    assert_string_equal(headers[5]->name, "Authorization");
    assert_string_equal(headers[5]->value, "Bearer token-123");
    assert_string_equal(headers[6]->name, "X-Campaign");
    assert_string_equal(headers[6]->value, "spring launch");
    assert_null(header_value(request, "webhook-signature"));
    delivery_release(&delivery);
}

/* A secret that is not "whsec_" and base64 still signs X-Bearconnect-Signature. */
static void dispatcher_nonstandard_secret(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {200};
    static const char secret[] = "legacy-secret-without-prefix";
    static const char body[] = "{\"event\":\"message_sent\"}";
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    char expected_signature[SIGNATURE_HEX_LEN + 1];
    const struct received_header *headers[HEADERS_MAX];
    const struct received_request *request;
    struct delivery delivery;
    size_t header_count;

    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, secret, NULL, 0, 3, 2000, integration_id);
    insert_delivery(f, integration_id, body, delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
    assert_int_equal(receiver_count(&f->receiver), 1);
    request = &f->receiver.requests[0];
    header_count = chosen_headers(request, headers);
    assert_int_equal(header_count, 7);
    assert_string_equal(headers[4]->name, "X-Bearconnect-Signature");
    signature_compute(secret, body, strlen(body), expected_signature);
    assert_string_equal(headers[4]->value, expected_signature);
    assert_string_equal(headers[5]->name, "webhook-id");
    assert_string_equal(headers[5]->value, delivery_id);
    assert_string_equal(headers[6]->name, "webhook-timestamp");
    assert_string_equal(headers[6]->value, headers[3]->value);
    assert_null(header_value(request, "webhook-signature"));
    delivery_release(&delivery);
}

static void dispatcher_retry_success(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {500, 500, 200};
    static const char body[] = "{\"event\":\"connection_request_accepted\"}";
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    char expected_signature[SIGNATURE_HEX_LEN + 1];
    struct delivery delivery;
    struct integration integration;
    struct attempt *attempts = NULL;
    size_t attempt_count = 0;
    struct bh_error err;

    uint64_t attempts_before = metrics_get(METRIC_ATTEMPTS);
    uint64_t succeeded_before = metrics_get(METRIC_DELIVERIES_SUCCEEDED);

    receiver_script(f, statuses, 3);
    insert_integration(f, f->url, SECRET, NULL, 0, 3, 2000, integration_id);
    insert_delivery(f, integration_id, body, delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
    assert_int_equal(delivery.attempts, 3);
    assert_true(wait_metric(METRIC_DELIVERIES_SUCCEEDED, succeeded_before + 1));
    assert_int_equal(metrics_get(METRIC_ATTEMPTS) - attempts_before, 3);
    assert_int_equal(store_attempt_list(f->store, delivery_id, &attempts, &attempt_count, &err), 0);
    assert_int_equal(attempt_count, 3);
    assert_int_equal(attempts[0].http_status, 500);
    assert_string_equal(attempts[0].error, "HTTP 500");
    assert_int_equal(attempts[1].http_status, 500);
    assert_string_equal(attempts[1].error, "HTTP 500");
    assert_int_equal(attempts[2].http_status, 200);
    assert_null(attempts[2].error);
    assert_int_equal(attempts[2].response_excerpt_len, strlen("received"));
    assert_memory_equal(attempts[2].response_excerpt, "received", strlen("received"));

    /* Every attempt sends the same bytes with a valid signature, and the same webhook-id. */
    assert_int_equal(receiver_count(&f->receiver), 3);
    signature_compute(SECRET, body, strlen(body), expected_signature);
    for (size_t i = 0; i < 3; i++) {
        const struct received_request *request = &f->receiver.requests[i];
        const char *timestamp = header_value(request, "webhook-timestamp");
        char expected_standard[STANDARD_SIGNATURE_LEN + 1];

        assert_memory_equal(request->body, body, strlen(body));
        assert_string_equal(header_value(request, "X-Bearconnect-Signature"), expected_signature);
        assert_string_equal(header_value(request, "webhook-id"), delivery_id);
        assert_non_null(timestamp);
        assert_int_equal(standard_signature_compute(SECRET, delivery_id,
                                                    strtoll(timestamp, NULL, 10), body,
                                                    strlen(body), expected_standard, NULL),
                         0);
        assert_string_equal(header_value(request, "webhook-signature"), expected_standard);
    }

    get_integration(f, integration_id, &integration);
    assert_int_equal(integration.delivered, 1);
    assert_int_equal(integration.failed, 0);
    integration_release(&integration);
    attempt_list_free(attempts, attempt_count);
    delivery_release(&delivery);
}

static void dispatcher_retries_exhausted(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {500};
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    struct delivery delivery;
    struct integration integration;
    struct attempt *attempts = NULL;
    size_t attempt_count = 0;
    struct bh_error err;

    uint64_t failed_before = metrics_get(METRIC_DELIVERIES_FAILED);

    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 2, 2000, integration_id);
    insert_delivery(f, integration_id, "{\"event\":\"message_sent\"}", delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_FAILED);
    assert_int_equal(delivery.attempts, 3);
    assert_true(wait_metric(METRIC_DELIVERIES_FAILED, failed_before + 1));
    assert_string_equal(delivery.last_error, "HTTP 500");
    assert_int_equal(store_attempt_list(f->store, delivery_id, &attempts, &attempt_count, &err), 0);
    assert_int_equal(attempt_count, 3);
    assert_int_equal(receiver_count(&f->receiver), 3);

    get_integration(f, integration_id, &integration);
    assert_int_equal(integration.failed, 1);
    assert_int_equal(integration.delivered, 0);
    assert_int_equal(integration.status, INTEGRATION_ERROR);
    assert_string_equal(integration.last_error, "HTTP 500");
    integration_release(&integration);
    attempt_list_free(attempts, attempt_count);
    delivery_release(&delivery);
}

static void dispatcher_timeout(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {200};
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    struct delivery delivery;
    struct attempt *attempts = NULL;
    size_t attempt_count = 0;
    struct bh_error err;

    f->receiver.delay_ms = 800;
    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 1, 300, integration_id);
    insert_delivery(f, integration_id, "{\"event\":\"message_sent\"}", delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_FAILED);
    assert_int_equal(store_attempt_list(f->store, delivery_id, &attempts, &attempt_count, &err), 0);
    assert_int_equal(attempt_count, 2);
    assert_string_equal(attempts[0].error, "timed out after 300 ms");
    assert_true(attempts[0].duration_ms >= 250);
    assert_true(attempts[0].duration_ms < 800);
    attempt_list_free(attempts, attempt_count);
    delivery_release(&delivery);
}

static void dispatcher_redirect(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {302};
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    char location[128];
    char expected[192];
    struct delivery delivery;

    receiver_script(f, statuses, 1);
    /* The Location points back at the receiver, so a followed redirect would show there. */
    snprintf(location, sizeof(location), "http://127.0.0.1:%d/moved", f->receiver.port);
    f->receiver.location = location;
    insert_integration(f, f->url, SECRET, NULL, 0, 1, 2000, integration_id);
    insert_delivery(f, integration_id, "{\"event\":\"message_sent\"}", delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_FAILED);
    assert_int_equal(delivery.last_http_status, 302);
    snprintf(expected, sizeof(expected), "HTTP 302 redirect to %s not followed", location);
    assert_string_equal(delivery.last_error, expected);
    assert_int_equal(receiver_count(&f->receiver), 2);
    assert_string_equal(f->receiver.requests[0].path, "/hook");
    assert_string_equal(f->receiver.requests[1].path, "/hook");
    delivery_release(&delivery);
}

static void dispatcher_retry_after(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {503, 200};
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    struct delivery delivery;
    struct attempt *attempts = NULL;
    size_t attempt_count = 0;
    struct bh_error err;

    f->receiver.retry_after = "1";
    receiver_script(f, statuses, 2);
    insert_integration(f, f->url, SECRET, NULL, 0, 1, 2000, integration_id);
    insert_delivery(f, integration_id, "{\"event\":\"message_sent\"}", delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
    assert_int_equal(store_attempt_list(f->store, delivery_id, &attempts, &attempt_count, &err), 0);
    assert_int_equal(attempt_count, 2);
    assert_int_equal(attempts[0].http_status, 503);
    /* Without Retry-After the schedule would wait about 20 ms. */
    assert_true(attempts[1].started_ms - attempts[0].started_ms >= 950);
    assert_int_equal(receiver_count(&f->receiver), 2);
    assert_true(f->receiver.requests[1].received_ms - f->receiver.requests[0].received_ms >= 950);
    attempt_list_free(attempts, attempt_count);
    delivery_release(&delivery);
}

/* Returns a loopback port that nothing listens on: bound once, then closed. */
static int closed_port(void)
{
    struct sockaddr_in address;
    socklen_t length = sizeof(address);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&address, &length), 0);
    close(fd);
    return ntohs(address.sin_port);
}

static void dispatcher_connection_refused(void **state)
{
    struct fixture *f = *state;
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    struct delivery delivery;

    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/hook", closed_port());
    insert_integration(f, f->url, SECRET, NULL, 0, 1, 2000, integration_id);
    insert_delivery(f, integration_id, "{\"event\":\"message_sent\"}", delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_FAILED);
    assert_int_equal(delivery.attempts, 2);
    assert_int_equal(delivery.last_http_status, 0);
    assert_string_equal(delivery.last_error, "connection refused");
    delivery_release(&delivery);
}

static void dispatcher_loopback_refused(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {200};
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    struct delivery delivery;

    /* The same policy as production for loopback: plain http allowed, no networks listed. */
    cidr_list_release(&f->policy.allowed_networks);
    memset(&f->policy.allowed_networks, 0, sizeof(f->policy.allowed_networks));
    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 1, 2000, integration_id);
    insert_delivery(f, integration_id, "{\"event\":\"message_sent\"}", delivery_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, delivery_id, &delivery));

    assert_int_equal(delivery.state, DELIVERY_FAILED);
    assert_non_null(strstr(delivery.last_error, "127.0.0.1"));
    assert_non_null(strstr(delivery.last_error, "loopback"));
    assert_int_equal(receiver_count(&f->receiver), 0);
    delivery_release(&delivery);
}

static void dispatcher_many(void **state)
{
    struct fixture *f = *state;
    enum { DELIVERY_COUNT = 200, IN_FLIGHT = 16 };
    static const int statuses[] = {200};
    static char ids[DELIVERY_COUNT][DELIVERY_ID_LEN + 1];
    char integration_id[ID_LEN + 1];
    char body[96];
    struct integration integration;

    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 3, 2000, integration_id);
    for (int i = 0; i < DELIVERY_COUNT; i++) {
        snprintf(body, sizeof(body), "{\"sequence\":%d}", i);
        insert_delivery(f, integration_id, body, ids[i]);
    }
    start_dispatcher(f, IN_FLIGHT);

    for (int i = 0; i < DELIVERY_COUNT; i++) {
        struct delivery delivery;

        assert_true(wait_settled(f, ids[i], &delivery));
        assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
        assert_int_equal(delivery.attempts, 1);
        delivery_release(&delivery);
    }

    /* Each delivery's body, which contains its sequence number, arrived exactly once. */
    assert_int_equal(receiver_count(&f->receiver), DELIVERY_COUNT);
    for (int i = 0; i < DELIVERY_COUNT; i++) {
        int seen = 0;

        snprintf(body, sizeof(body), "{\"sequence\":%d}", i);
        for (size_t r = 0; r < DELIVERY_COUNT; r++)
            seen += strcmp(f->receiver.requests[r].body, body) == 0;
        assert_int_equal(seen, 1);
    }
    /* Keep-alive: connections are reused instead of opened per attempt. */
    assert_true(atomic_load(&f->receiver.connections) <= 2 * IN_FLIGHT);

    get_integration(f, integration_id, &integration);
    assert_int_equal(integration.delivered, DELIVERY_COUNT);
    integration_release(&integration);
}

static void dispatcher_notify_wakes(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {200};
    char integration_id[ID_LEN + 1];
    char first_id[DELIVERY_ID_LEN + 1];
    char second_id[DELIVERY_ID_LEN + 1];
    struct delivery delivery;
    int64_t notified_ms;
    int64_t latency_ms;

    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 3, 2000, integration_id);
    insert_delivery(f, integration_id, "{\"event\":\"message_sent\"}", first_id);
    start_dispatcher(f, 4);
    assert_true(wait_settled(f, first_id, &delivery));
    delivery_release(&delivery);

    /*
     * The dispatcher now sleeps up to its 1.2 s idle cap. Without the notification the second
     * delivery would wait most of that time, so 500 ms is the bound.
     */
    sleep_ms(100);
    insert_delivery(f, integration_id, "{\"event\":\"message_replied\"}", second_id);
    notified_ms = clock_monotonic_ms();
    dispatcher_notify(f->dispatcher);
    assert_true(receiver_wait(&f->receiver, 2));
    latency_ms = clock_monotonic_ms() - notified_ms;
    assert_true(latency_ms < 500);

    assert_true(wait_settled(f, second_id, &delivery));
    assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
    delivery_release(&delivery);
}

static void dispatcher_delivery_deleted(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {200};
    char deleted_integration[ID_LEN + 1];
    char kept_integration[ID_LEN + 1];
    char deleted_delivery[DELIVERY_ID_LEN + 1];
    char kept_delivery[DELIVERY_ID_LEN + 1];
    struct delivery delivery;
    struct bh_error err;

    f->receiver.delay_ms = 300;
    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 3, 2000, deleted_integration);
    insert_integration(f, f->url, SECRET, NULL, 0, 3, 2000, kept_integration);
    insert_delivery(f, deleted_integration, "{\"event\":\"message_sent\"}", deleted_delivery);
    start_dispatcher(f, 4);

    /* The integration goes while its attempt is in flight; the outcome has nowhere to go. */
    assert_true(receiver_wait(&f->receiver, 1));
    assert_int_equal(store_integration_delete(f->store, f->user.id, deleted_integration, &err), 0);
    insert_delivery(f, kept_integration, "{\"event\":\"message_replied\"}", kept_delivery);
    dispatcher_notify(f->dispatcher);

    assert_true(wait_settled(f, kept_delivery, &delivery));
    assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
    delivery_release(&delivery);
    assert_int_equal(store_delivery_get(f->store, f->user.id, deleted_delivery, &delivery, &err),
                     BH_ERR_NOT_FOUND);
}

static void dispatcher_stop_in_flight(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {200};
    char integration_id[ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];
    struct delivery delivery;
    struct bh_error err;
    int64_t stop_started_ms;

    f->receiver.delay_ms = 600;
    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 3, 2000, integration_id);
    insert_delivery(f, integration_id, "{\"event\":\"message_sent\"}", delivery_id);
    start_dispatcher(f, 4);
    assert_true(receiver_wait(&f->receiver, 1));

    /* Stopping abandons the attempt instead of waiting for the receiver's response. */
    stop_started_ms = clock_monotonic_ms();
    dispatcher_stop(f->dispatcher);
    f->dispatcher = NULL;
    assert_true(clock_monotonic_ms() - stop_started_ms < 300);

    assert_int_equal(store_delivery_get(f->store, f->user.id, delivery_id, &delivery, &err), 0);
    assert_int_equal(delivery.state, DELIVERY_PENDING);
    assert_int_equal(delivery.attempts, 0);
    delivery_release(&delivery);
}

static void dispatcher_endpoint_cap(void **state)
{
    struct fixture *f = *state;
    enum { HEALTHY_COUNT = 30, HANGING_COUNT = 6, CAP = 2 };
    static const int statuses[] = {200};
    static char healthy_ids[HEALTHY_COUNT][DELIVERY_ID_LEN + 1];
    struct receiver hanging = {0};
    char hanging_url[128];
    char healthy_integration[ID_LEN + 1];
    char hanging_integration[ID_LEN + 1];
    char id[DELIVERY_ID_LEN + 1];
    int64_t started_ms;

    /* The hanging receiver responds after the 3 s timeout, so its attempts end only then. */
    receiver_script(f, statuses, 1);
    receiver_init(&hanging);
    hanging.statuses[0] = 200;
    hanging.status_count = 1;
    hanging.delay_ms = 4000;
    receiver_start(&hanging);
    snprintf(hanging_url, sizeof(hanging_url), "http://127.0.0.1:%d/hook", hanging.port);

    insert_integration(f, hanging_url, SECRET, NULL, 0, 1, 3000, hanging_integration);
    insert_integration(f, f->url, SECRET, NULL, 0, 1, 3000, healthy_integration);
    for (int i = 0; i < HANGING_COUNT; i++)
        insert_delivery(f, hanging_integration, "{\"event\":\"message_sent\"}", id);
    for (int i = 0; i < HEALTHY_COUNT; i++)
        insert_delivery(f, healthy_integration, "{\"event\":\"message_replied\"}", healthy_ids[i]);
    started_ms = clock_monotonic_ms();
    start_dispatcher_capped(f, 8, CAP);

    /* Every healthy delivery completes while the hanging receiver keeps its attempts waiting. */
    for (int i = 0; i < HEALTHY_COUNT; i++) {
        struct delivery delivery;

        assert_true(wait_settled(f, healthy_ids[i], &delivery));
        assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
        delivery_release(&delivery);
    }
    assert_true(clock_monotonic_ms() - started_ms < 3000);
    assert_int_equal(receiver_count(&f->receiver), HEALTHY_COUNT);

    /* The hanging receiver never saw more than the cap at once, nor more requests. */
    assert_true(receiver_wait(&hanging, CAP));
    assert_int_equal(atomic_load(&hanging.max_active), CAP);
    assert_int_equal(receiver_count(&hanging), CAP);

    dispatcher_stop(f->dispatcher);
    f->dispatcher = NULL;
    receiver_stop(&hanging);
    pthread_mutex_destroy(&hanging.lock);
}

/*
 * A job claimed before its secret was rotated, and waiting behind the per-endpoint cap while
 * the rotation commits, signs with the new secret when it starts.
 */
static void dispatcher_rotation_reaches_queued(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {200};
    static const char body[] = "{\"event\":\"message_replied\"}";
    static const char new_secret[] = "whsec_bmV3IHNlY3JldCBhZnRlciByb3RhdGlvbiEhISEhISE=";
    char integration_id[ID_LEN + 1];
    char first_id[DELIVERY_ID_LEN + 1];
    char second_id[DELIVERY_ID_LEN + 1];
    char expected[SIGNATURE_HEX_LEN + 1];
    struct integration integration;
    struct delivery delivery;
    struct bh_error err;

    f->receiver.delay_ms = 600;
    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 3, 5000, integration_id);
    insert_delivery(f, integration_id, body, first_id);
    insert_delivery(f, integration_id, body, second_id);
    start_dispatcher_capped(f, 8, 1);
    assert_true(receiver_wait(&f->receiver, 1));

    /* The first attempt is held by the receiver, so the second job waits in the queue. */
    get_integration(f, integration_id, &integration);
    free(integration.secret);
    integration.secret = xstrdup(new_secret);
    assert_int_equal(store_integration_update(f->store, &integration, NULL, NULL, &err), 0);
    dispatcher_signing_changed(f->dispatcher, integration_id, true, new_secret);
    integration_release(&integration);

    assert_true(wait_settled(f, second_id, &delivery));
    delivery_release(&delivery);
    assert_int_equal(receiver_count(&f->receiver), 2);
    signature_compute(new_secret, body, strlen(body), expected);
    assert_string_equal(header_value(&f->receiver.requests[1], "X-Bearconnect-Signature"),
                        expected);
}

/* A rider that writes one delivery per piece of work, and fails the first run after writing. */
struct test_rider {
    pthread_mutex_t lock;
    struct fixture *fixture;
    struct dispatcher *dispatcher;
    char integration_id[ID_LEN + 1];
    int pending; /* pieces of work that take hands out */
    int runs;
    char written[2][DELIVERY_ID_LEN + 1]; /* the delivery each run wrote */
    int finished;
    bool committed[2];
};

static void *test_rider_take(void *arg)
{
    struct test_rider *rider = arg;
    void *work = NULL;

    pthread_mutex_lock(&rider->lock);
    if (rider->pending > 0) {
        rider->pending--;
        work = rider;
    }
    pthread_mutex_unlock(&rider->lock);
    return work;
}

static int test_rider_run(void *arg, void *work, struct store *store)
{
    struct test_rider *rider = arg;
    int run = rider->runs++;

    assert_ptr_equal(work, rider);
    assert_int_equal(write_delivery(store, &rider->fixture->user, rider->integration_id,
                                    "{\"event\":\"message_replied\"}", rider->written[run]),
                     0);
    return run == 0 ? BH_ERR_STORE : 1;
}

static void test_rider_finish(void *arg, void *work, struct store *store, bool committed)
{
    struct test_rider *rider = arg;

    pthread_mutex_lock(&rider->lock);
    rider->committed[rider->finished++] = committed;
    pthread_mutex_unlock(&rider->lock);
    if (committed)
        dispatcher_notify(rider->dispatcher);
}

static int test_rider_finished(struct test_rider *rider)
{
    int finished;

    pthread_mutex_lock(&rider->lock);
    finished = rider->finished;
    pthread_mutex_unlock(&rider->lock);
    return finished;
}

/*
 * A rider's writes share the store thread's transaction: a failed run undoes what it wrote,
 * and a committed one is delivered.
 */
static void dispatcher_rider_shares_transaction(void **state)
{
    struct fixture *f = *state;
    static const int statuses[] = {200};
    struct test_rider rider = {.fixture = f};
    struct dispatcher_rider hooks = {
        .arg = &rider,
        .take = test_rider_take,
        .run = test_rider_run,
        .finish = test_rider_finish,
    };
    struct delivery delivery;
    struct bh_error err;
    int64_t deadline;

    pthread_mutex_init(&rider.lock, NULL);
    receiver_script(f, statuses, 1);
    insert_integration(f, f->url, SECRET, NULL, 0, 3, 2000, rider.integration_id);
    start_dispatcher(f, 4);
    rider.dispatcher = f->dispatcher;
    dispatcher_attach_rider(f->dispatcher, &hooks);

    pthread_mutex_lock(&rider.lock);
    rider.pending = 2;
    pthread_mutex_unlock(&rider.lock);
    dispatcher_wake_for_rider(f->dispatcher);
    deadline = clock_monotonic_ms() + WAIT_MS;
    while (test_rider_finished(&rider) < 2 && clock_monotonic_ms() < deadline)
        sleep_ms(POLL_MS);
    dispatcher_detach_rider(f->dispatcher);

    assert_int_equal(test_rider_finished(&rider), 2);
    assert_false(rider.committed[0]);
    assert_true(rider.committed[1]);
    assert_int_equal(store_delivery_get(f->store, f->user.id, rider.written[0], &delivery, &err),
                     BH_ERR_NOT_FOUND);
    assert_true(wait_settled(f, rider.written[1], &delivery));
    assert_int_equal(delivery.state, DELIVERY_SUCCEEDED);
    assert_int_equal(receiver_count(&f->receiver), 1);
    delivery_release(&delivery);
    pthread_mutex_destroy(&rider.lock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(dispatcher_success, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_unsigned, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_nonstandard_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_retry_success, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_retries_exhausted, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_redirect, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_loopback_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_many, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_notify_wakes, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_delivery_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_stop_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_endpoint_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_rotation_reaches_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(dispatcher_rider_shares_transaction, setup, teardown),
    };

    log_set_level(LOG_ERROR);
    return cmocka_run_group_tests_name("dispatcher", tests, NULL, NULL);
}
