/*
 * One thread owns the store connection, the curl multi handle and every attempt in flight, so
 * none of them needs a lock. Other threads touch only two atomic flags and curl_multi_wakeup.
 *
 * The loop claims due deliveries while slots are free, then waits in curl_multi_poll until a
 * transfer needs attention, the next delivery falls due, dispatcher_notify wakes it, or the
 * idle cap passes. The time of the next due delivery is queried only after something changed
 * (a claim, a finished attempt, a notification) or once per idle cap, so an idle dispatcher
 * makes about one store query per second. The idle cap also picks up work that another
 * process committed without notifying this one, and leases that expired.
 *
 * Each claimed job moves into an attempt_run that lives until its transfer ends: curl reads
 * the body, the header list and the error buffer from it while the transfer runs.
 */
#include "delivery/dispatcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/integration.h"
#include "core/signature.h"
#include "delivery/target.h"
#include "store/store.h"
#include "util/alloc.h"
#include "util/log.h"

#define MODULE "dispatcher"
#define IDLE_CAP_MS 1000
#define ERROR_TEXT_MAX 300     /* bytes of an attempt's error text, with its NUL */
#define LOCATION_SHOWN_MAX 200 /* bytes of a redirect target quoted in an error */
#define RETRY_AFTER_SECONDS_MAX (366 * 24 * 3600)
#define USER_AGENT "Bearconnect-Webhook/1.0"

struct attempt_run {
    struct dispatcher *dispatcher;
    struct delivery_job job; /* owned; curl reads job.body until the transfer ends */
    CURL *easy;
    struct curl_slist *headers;
    struct target_guard guard;
    int64_t started_ms; /* Unix time, stored with the attempt */
    char error_buffer[CURL_ERROR_SIZE];
    char excerpt[RESPONSE_EXCERPT_MAX]; /* the first bytes of the response body */
    size_t excerpt_len;
    bool linked; /* in the dispatcher's list and counted in in_flight */
    struct attempt_run *prev;
    struct attempt_run *next;
};

struct dispatcher {
    struct dispatcher_options options; /* strings point at the copies below */
    char *store_location;
    char *ca_file;
    char owner[LEASE_OWNER_MAX + 1];
    bool curl_ready;
    struct store *store;
    CURLM *multi;
    pthread_t thread;
    atomic_bool stopping;
    atomic_bool notified;

    /* Touched only by the dispatcher thread. */
    struct attempt_run *runs;
    int in_flight;
    int64_t next_due_ms;         /* from the last query; -1 when nothing was pending */
    bool next_due_stale;         /* a claim or an attempt changed the queue since then */
    int64_t next_due_checked_ms; /* monotonic time of that query */
    int64_t short_claim_ms;      /* Unix time of the last claim that got fewer jobs than slots */
};

static void make_lease_owner(char owner[LEASE_OWNER_MAX + 1])
{
    char host[256] = "localhost";
    uint32_t nonce;

    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    random_bytes(&nonce, sizeof(nonce));

    /* The host name is cut to 40 bytes so "host:pid:nonce" fits LEASE_OWNER_MAX. */
    snprintf(owner, LEASE_OWNER_MAX + 1, "%.40s:%ld:%08x", host, (long)getpid(), (unsigned)nonce);
}

static double unit_random(void)
{
    uint64_t bits;

    random_bytes(&bits, sizeof(bits));
    /* The top 53 bits make a double uniform in [0, 1). */
    return (double)(bits >> 11) / 9007199254740992.0;
}

/* Replaces bytes that are not printable ASCII, so an error text is valid UTF-8 and one line. */
static void make_printable(char *text)
{
    for (unsigned char *p = (unsigned char *)text; *p != '\0'; p++) {
        if (*p < 0x20 || *p >= 0x7f)
            *p = '?';
    }
}

static struct curl_slist *header_append(struct curl_slist *list, const char *line)
{
    struct curl_slist *longer = curl_slist_append(list, line);

    if (longer == NULL) {
        fprintf(stderr, "bearhook: out of memory building request headers\n");
        abort();
    }
    return longer;
}

static struct curl_slist *header_append_owned(struct curl_slist *list, char *line)
{
    list = header_append(list, line);
    free(line);
    return list;
}

/*
 * Builds the request headers in their documented order. The timestamp and the signature are
 * made now, with the secret the claim read, so every attempt signs afresh.
 */
static struct curl_slist *build_headers(const struct delivery_job *job)
{
    struct curl_slist *list = NULL;

    list = header_append(list, "Content-Type: application/json");
    list = header_append(list, "User-Agent: " USER_AGENT);
    list = header_append_owned(list, xasprintf("X-Webhook-Id: %s", job->integration_id));

    if (job->signing && job->secret != NULL) {
        char signature[SIGNATURE_HEX_LEN + 1];

        list = header_append_owned(
            list, xasprintf("X-Bearconnect-Timestamp: %lld", (long long)(clock_now_ms() / 1000)));
        signature_compute(job->secret, job->body, job->body_len, signature);
        list = header_append_owned(list, xasprintf("X-Bearconnect-Signature: %s", signature));
    }

    for (size_t i = 0; i < job->header_count; i++) {
        const struct custom_header *header = &job->headers[i];

        /* curl drops a header written "Name:" with no value; "Name;" sends it empty. */
        if (header->value[0] == '\0')
            list = header_append_owned(list, xasprintf("%s;", header->name));
        else
            list = header_append_owned(list, xasprintf("%s: %s", header->name, header->value));
    }

    /* An empty value makes curl omit its own Expect and Accept headers. */
    list = header_append(list, "Expect:");
    list = header_append(list, "Accept:");
    return list;
}

static size_t keep_excerpt(char *data, size_t size, size_t count, void *userdata)
{
    struct attempt_run *run = userdata;
    size_t len = size * count;
    size_t room = RESPONSE_EXCERPT_MAX - run->excerpt_len;
    size_t copied = len < room ? len : room;

    memcpy(run->excerpt + run->excerpt_len, data, copied);
    run->excerpt_len += copied;
    return len;
}

/*
 * Sets the transfer's options. The unchecked ones take pointers or constant flags, which
 * libcurl 7.88 accepts without condition; the timeout and the strings can fail.
 */
static CURLcode configure_transfer(struct attempt_run *run)
{
    const struct dispatcher_options *options = &run->dispatcher->options;
    CURL *easy = run->easy;
    CURLcode result;

    curl_easy_setopt(easy, CURLOPT_PRIVATE, run);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, run->error_buffer);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)run->job.body_len);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, run->job.body != NULL ? run->job.body : "");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, run->headers);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, keep_excerpt);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, run);

    /* The guard also limits schemes to what the policy allows and turns off proxies. */
    run->guard.policy = options->targets;
    run->guard.refused[0] = '\0';
    target_guard_install(easy, &run->guard);

    result = curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)run->job.timeout_ms);
    if (result == CURLE_OK)
        result = curl_easy_setopt(easy, CURLOPT_URL, run->job.url);
    if (result == CURLE_OK && options->ca_file != NULL)
        result = curl_easy_setopt(easy, CURLOPT_CAINFO, options->ca_file);
    return result;
}

static void run_link(struct dispatcher *dispatcher, struct attempt_run *run)
{
    run->next = dispatcher->runs;
    if (dispatcher->runs != NULL)
        dispatcher->runs->prev = run;
    dispatcher->runs = run;
    run->linked = true;
    dispatcher->in_flight++;
}

/* Unlinks the run if it was linked, ends its transfer and frees it. */
static void run_free(struct dispatcher *dispatcher, struct attempt_run *run)
{
    if (run->linked) {
        if (run->prev != NULL)
            run->prev->next = run->next;
        else
            dispatcher->runs = run->next;
        if (run->next != NULL)
            run->next->prev = run->prev;
        dispatcher->in_flight--;
    }

    if (run->easy != NULL) {
        curl_multi_remove_handle(dispatcher->multi, run->easy);
        curl_easy_cleanup(run->easy);
    }
    curl_slist_free_all(run->headers);
    delivery_job_release(&run->job);
    free(run);
}

/* Takes the job's contents (leaving it empty) and starts its transfer. */
static void start_attempt(struct dispatcher *dispatcher, struct delivery_job *job)
{
    struct attempt_run *run = xcalloc(1, sizeof(*run));
    CURLcode result;
    CURLMcode multi_result;

    run->dispatcher = dispatcher;
    run->job = *job;
    memset(job, 0, sizeof(*job));

    run->easy = curl_easy_init();
    if (run->easy == NULL) {
        log_error(MODULE,
                  "could not create a transfer; the delivery is retried when its "
                  "lease ends delivery=%s",
                  run->job.delivery_id);
        goto abandon;
    }
    run->headers = build_headers(&run->job);
    result = configure_transfer(run);
    if (result != CURLE_OK) {
        log_error(MODULE,
                  "could not configure a transfer; the delivery is retried when its "
                  "lease ends delivery=%s error=\"%s\"",
                  run->job.delivery_id, curl_easy_strerror(result));
        goto abandon;
    }

    run->started_ms = clock_now_ms();
    multi_result = curl_multi_add_handle(dispatcher->multi, run->easy);
    if (multi_result != CURLM_OK) {
        log_error(MODULE,
                  "could not start a transfer; the delivery is retried when its "
                  "lease ends delivery=%s error=\"%s\"",
                  run->job.delivery_id, curl_multi_strerror(multi_result));
        curl_easy_cleanup(run->easy);
        run->easy = NULL;
        goto abandon;
    }
    run_link(dispatcher, run);
    return;

abandon:
    run_free(dispatcher, run);
}

static void describe_redirect(const struct attempt_run *run, long status, char *out, size_t size)
{
    char *location = NULL;

    /* With redirects off, curl still resolves the Location header into an absolute URL. */
    curl_easy_getinfo(run->easy, CURLINFO_REDIRECT_URL, &location);
    if (location != NULL)
        snprintf(out, size, "HTTP %ld redirect to %.*s not followed", status, LOCATION_SHOWN_MAX,
                 location);
    else
        snprintf(out, size, "HTTP %ld redirect without a Location header, not followed", status);
}

static void describe_connect_failure(const struct attempt_run *run, char *out, size_t size)
{
    long os_errno = 0;

    /* The target guard makes curl fail with CURLE_COULDNT_CONNECT when it rejects an address. */
    if (run->guard.refused[0] != '\0') {
        snprintf(out, size, "%s", run->guard.refused);
        return;
    }

    curl_easy_getinfo(run->easy, CURLINFO_OS_ERRNO, &os_errno);
    if (os_errno == ECONNREFUSED)
        snprintf(out, size, "connection refused");
    else if (os_errno == EHOSTUNREACH)
        snprintf(out, size, "host unreachable");
    else if (os_errno == ENETUNREACH)
        snprintf(out, size, "network unreachable");
    else
        snprintf(out, size, "could not connect: %s", run->error_buffer);
}

static void describe_resolve_failure(const struct attempt_run *run, char *out, size_t size)
{
    CURLU *url = curl_url();
    char *host = NULL;

    if (url != NULL && curl_url_set(url, CURLUPART_URL, run->job.url, 0) == CURLUE_OK &&
        curl_url_get(url, CURLUPART_HOST, &host, 0) == CURLUE_OK)
        snprintf(out, size, "could not resolve host %.*s", LOCATION_SHOWN_MAX, host);
    else
        snprintf(out, size, "could not resolve host: %s", run->error_buffer);

    curl_free(host);
    curl_url_cleanup(url);
}

static bool is_tls_failure(CURLcode result)
{
    return result == CURLE_SSL_CONNECT_ERROR || result == CURLE_PEER_FAILED_VERIFICATION ||
           result == CURLE_SSL_CERTPROBLEM || result == CURLE_SSL_CIPHER ||
           result == CURLE_SSL_CACERT_BADFILE || result == CURLE_SSL_ISSUER_ERROR ||
           result == CURLE_SSL_PINNEDPUBKEYNOTMATCH;
}

/* Writes why a failed attempt failed, in at most size - 1 printable ASCII bytes. */
static void describe_failure(const struct attempt_run *run, CURLcode result, long status, char *out,
                             size_t size)
{
    if (result == CURLE_OK && status >= 300 && status < 400)
        describe_redirect(run, status, out, size);
    else if (result == CURLE_OK)
        snprintf(out, size, "HTTP %ld", status);
    else if (result == CURLE_OPERATION_TIMEDOUT)
        snprintf(out, size, "timed out after %d ms", run->job.timeout_ms);
    else if (result == CURLE_COULDNT_CONNECT)
        describe_connect_failure(run, out, size);
    else if (result == CURLE_COULDNT_RESOLVE_HOST)
        describe_resolve_failure(run, out, size);
    else if (result == CURLE_UNSUPPORTED_PROTOCOL)
        snprintf(out, size, "plain http targets are not allowed by the target policy");
    else if (is_tls_failure(result))
        snprintf(out, size, "TLS handshake failed: %s", run->error_buffer);
    else if (run->error_buffer[0] != '\0')
        snprintf(out, size, "%s: %s", curl_easy_strerror(result), run->error_buffer);
    else
        snprintf(out, size, "%s", curl_easy_strerror(result));

    make_printable(out);
}

/* Returns the server's Retry-After in milliseconds, or -1 when it sent none. */
static int64_t retry_after_ms(const struct attempt_run *run)
{
    curl_off_t seconds = 0;

    curl_easy_getinfo(run->easy, CURLINFO_RETRY_AFTER, &seconds);
    if (seconds <= 0)
        return -1;
    if (seconds > RETRY_AFTER_SECONDS_MAX)
        seconds = RETRY_AFTER_SECONDS_MAX;
    return (int64_t)seconds * 1000;
}

/* Decides what the delivery becomes after this attempt. */
static void decide_next_state(const struct attempt_run *run, struct attempt_outcome *outcome,
                              int attempts_made)
{
    const struct retry_policy *policy = &run->dispatcher->options.retry;
    int64_t delay_ms;

    if (outcome->error == NULL) {
        outcome->new_state = DELIVERY_SUCCEEDED;
        return;
    }
    if (!retry_allowed(attempts_made, run->job.max_retries)) {
        outcome->new_state = DELIVERY_FAILED;
        return;
    }

    delay_ms = retry_delay_ms(policy, attempts_made, outcome->http_status, retry_after_ms(run),
                              unit_random());
    outcome->new_state = DELIVERY_PENDING;
    outcome->next_attempt_ms = clock_now_ms() + delay_ms;
}

static void log_attempt(const struct attempt_run *run, const struct attempt_outcome *outcome,
                        int attempt)
{
    const struct delivery_job *job = &run->job;
    char next[ISO8601_MS_LEN + 1];

    if (outcome->new_state == DELIVERY_SUCCEEDED) {
        log_info(MODULE,
                 "delivered delivery=%s integration=%s event=%s attempt=%d status=%d "
                 "duration_ms=%d",
                 job->delivery_id, job->integration_id, job->event_id, attempt,
                 outcome->http_status, outcome->duration_ms);
    } else if (outcome->new_state == DELIVERY_PENDING) {
        clock_format_iso8601(outcome->next_attempt_ms, next);
        log_warn(MODULE,
                 "attempt failed, will retry delivery=%s integration=%s event=%s attempt=%d "
                 "error=\"%s\" duration_ms=%d next_attempt=%s",
                 job->delivery_id, job->integration_id, job->event_id, attempt, outcome->error,
                 outcome->duration_ms, next);
    } else {
        log_warn(MODULE,
                 "delivery failed, no retries left delivery=%s integration=%s event=%s "
                 "attempt=%d error=\"%s\" duration_ms=%d",
                 job->delivery_id, job->integration_id, job->event_id, attempt, outcome->error,
                 outcome->duration_ms);
    }
}

static void record_outcome(struct dispatcher *dispatcher, const struct attempt_run *run,
                           const struct attempt_outcome *outcome)
{
    struct bh_error err;
    int result;

    bh_error_clear(&err);
    result = store_delivery_finish(dispatcher->store, outcome, &err);
    if (result == BH_ERR_NOT_FOUND) {
        log_info(MODULE,
                 "attempt not recorded: the delivery was deleted or its lease was lost "
                 "delivery=%s integration=%s",
                 run->job.delivery_id, run->job.integration_id);
    } else if (result != 0) {
        /* The lease stays, so the delivery is claimed again once it expires. */
        log_error(MODULE,
                  "could not record an attempt; the delivery is retried when its lease ends "
                  "delivery=%s integration=%s error=\"%s\"",
                  run->job.delivery_id, run->job.integration_id, err.message);
    }
}

/* Records a finished transfer and decides whether and when to try again. */
static void finish_attempt(struct dispatcher *dispatcher, const struct attempt_run *run,
                           CURLcode result)
{
    struct attempt_outcome outcome = {0};
    char error[ERROR_TEXT_MAX];
    long status = 0;
    curl_off_t total_us = 0;
    int attempts_made = run->job.attempts_before + 1;

    curl_easy_getinfo(run->easy, CURLINFO_RESPONSE_CODE, &status);
    /* curl's own transfer time leaves out the time this loop took to notice the end. */
    curl_easy_getinfo(run->easy, CURLINFO_TOTAL_TIME_T, &total_us);
    if (result != CURLE_OK || status < 200 || status > 299) {
        describe_failure(run, result, status, error, sizeof(error));
        outcome.error = error;
    }

    outcome.delivery_id = run->job.delivery_id;
    outcome.integration_id = run->job.integration_id;
    outcome.lease_owner = dispatcher->owner;
    outcome.started_ms = run->started_ms;
    outcome.duration_ms = (int)(total_us / 1000);
    outcome.http_status = (int)status;
    outcome.response_excerpt = run->excerpt_len > 0 ? run->excerpt : NULL;
    outcome.response_excerpt_len = run->excerpt_len;
    decide_next_state(run, &outcome, attempts_made);

    log_attempt(run, &outcome, attempts_made);
    record_outcome(dispatcher, run, &outcome);
    dispatcher->next_due_stale = true;
}

static void collect_finished(struct dispatcher *dispatcher)
{
    CURLMsg *message;
    int queued = 0;

    while ((message = curl_multi_info_read(dispatcher->multi, &queued)) != NULL) {
        struct attempt_run *run;
        char *private_data = NULL;
        CURLcode result = message->data.result;

        if (message->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &private_data);
        run = (struct attempt_run *)private_data;
        finish_attempt(dispatcher, run, result);
        run_free(dispatcher, run);
    }
}

/* Claims up to limit due deliveries and starts an attempt for each. */
static void claim(struct dispatcher *dispatcher, int64_t now_ms, size_t limit)
{
    struct delivery_job *jobs = NULL;
    size_t count = 0;
    struct bh_error err;
    /* One lease covers the whole batch, so it lasts for the longest timeout any job can have. */
    int64_t lease_ms = TIMEOUT_MS_MAX + dispatcher->options.lease_margin_ms;
    int result;

    bh_error_clear(&err);
    dispatcher->next_due_stale = true;
    result = store_delivery_claim(dispatcher->store, dispatcher->owner, now_ms, lease_ms, limit,
                                  &jobs, &count, &err);
    if (result != 0) {
        log_error(MODULE, "could not claim due deliveries error=\"%s\"", err.message);
        dispatcher->short_claim_ms = now_ms;
        return;
    }

    if (count < limit)
        dispatcher->short_claim_ms = now_ms;
    for (size_t i = 0; i < count; i++)
        start_attempt(dispatcher, &jobs[i]);
    delivery_job_list_free(jobs, count);
}

static void refresh_next_due(struct dispatcher *dispatcher)
{
    struct bh_error err;
    int result;

    bh_error_clear(&err);
    dispatcher->next_due_stale = false;
    dispatcher->next_due_checked_ms = clock_monotonic_ms();
    result = store_delivery_next_due(dispatcher->store, &dispatcher->next_due_ms, &err);
    if (result != 0) {
        log_error(MODULE, "could not read the next due delivery error=\"%s\"", err.message);
        dispatcher->next_due_ms = -1;
    }
}

/*
 * Returns the Unix time at which to claim next, or INT64_MAX for none known. A claim that
 * came back short took every delivery claimable then. So a due time no later than that claim
 * belongs to a delivery under a live lease, and it is tried again one idle cap after the
 * claim instead of in a tight loop.
 */
static int64_t next_claim_ms(const struct dispatcher *dispatcher)
{
    if (dispatcher->next_due_ms < 0)
        return INT64_MAX;
    if (dispatcher->next_due_ms <= dispatcher->short_claim_ms)
        return dispatcher->short_claim_ms + IDLE_CAP_MS;
    return dispatcher->next_due_ms;
}

static size_t free_slots(const struct dispatcher *dispatcher)
{
    int free_count = dispatcher->options.max_in_flight - dispatcher->in_flight;

    return free_count > 0 ? (size_t)free_count : 0;
}

static void claim_due(struct dispatcher *dispatcher)
{
    int64_t now_ms = clock_now_ms();
    int64_t idle_ms = clock_monotonic_ms() - dispatcher->next_due_checked_ms;
    bool notified;

    /* With every slot busy, a notification stays pending until a slot frees. */
    if (free_slots(dispatcher) == 0)
        return;
    notified = atomic_exchange(&dispatcher->notified, false);
    if (notified || next_claim_ms(dispatcher) <= now_ms)
        claim(dispatcher, now_ms, free_slots(dispatcher));
    if (free_slots(dispatcher) > 0 && (dispatcher->next_due_stale || idle_ms >= IDLE_CAP_MS))
        refresh_next_due(dispatcher);
}

/*
 * Returns how long to wait for transfers: until the next claim or the next idle check,
 * whichever is first. curl_multi_poll shortens the wait further to curl's own timeout.
 */
static int poll_timeout_ms(const struct dispatcher *dispatcher)
{
    int64_t idle_ms = clock_monotonic_ms() - dispatcher->next_due_checked_ms;
    int64_t timeout_ms = IDLE_CAP_MS - idle_ms;

    if (free_slots(dispatcher) == 0)
        return IDLE_CAP_MS;
    if (next_claim_ms(dispatcher) != INT64_MAX) {
        int64_t until_claim_ms = next_claim_ms(dispatcher) - clock_now_ms();

        if (until_claim_ms < timeout_ms)
            timeout_ms = until_claim_ms;
    }
    if (timeout_ms < 0)
        return 0;
    return (int)timeout_ms;
}

static void wait_for_transfers(struct dispatcher *dispatcher)
{
    CURLMcode result;
    int running = 0;

    result = curl_multi_poll(dispatcher->multi, NULL, 0, poll_timeout_ms(dispatcher), NULL);
    if (result == CURLM_OK)
        result = curl_multi_perform(dispatcher->multi, &running);
    if (result != CURLM_OK) {
        struct timespec pause = {0, 100 * 1000 * 1000};

        /* A multi handle error is not expected; pausing keeps a repeating one from spinning. */
        log_error(MODULE, "transfer loop failed error=\"%s\"", curl_multi_strerror(result));
        nanosleep(&pause, NULL);
    }
}

static void *dispatcher_main(void *arg)
{
    struct dispatcher *dispatcher = arg;

    while (!atomic_load(&dispatcher->stopping)) {
        claim_due(dispatcher);
        wait_for_transfers(dispatcher);
        collect_finished(dispatcher);
    }
    return NULL;
}

static void dispatcher_free(struct dispatcher *dispatcher)
{
    int abandoned = dispatcher->in_flight;

    while (dispatcher->runs != NULL)
        run_free(dispatcher, dispatcher->runs);
    if (abandoned > 0)
        log_info(MODULE, "abandoned %d attempts in flight; their leases will expire", abandoned);

    if (dispatcher->multi != NULL)
        curl_multi_cleanup(dispatcher->multi);
    if (dispatcher->store != NULL)
        store_close(dispatcher->store);
    if (dispatcher->curl_ready)
        curl_global_cleanup();
    free(dispatcher->store_location);
    free(dispatcher->ca_file);
    free(dispatcher);
}

static int validate_options(const struct dispatcher_options *options, struct bh_error *err)
{
    if (options->store_location == NULL)
        return bh_error_set(err, BH_ERR_INVALID, "store_location",
                            "the dispatcher needs a store location");
    if (options->max_in_flight < 1)
        return bh_error_set(err, BH_ERR_INVALID, "max_in_flight",
                            "max_in_flight is %d; it must be at least 1", options->max_in_flight);
    if (options->targets == NULL)
        return bh_error_set(err, BH_ERR_INVALID, "targets", "the dispatcher needs a target policy");
    return 0;
}

/* Sets up the multi handle; idle keep-alive connections are kept for reuse, up to a bound. */
static int open_multi(struct dispatcher *dispatcher, struct bh_error *err)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return bh_error_set(err, BH_ERR_INTERNAL, "", "libcurl could not be initialized");
    dispatcher->curl_ready = true;

    dispatcher->multi = curl_multi_init();
    if (dispatcher->multi == NULL)
        return bh_error_set(err, BH_ERR_INTERNAL, "", "could not create a libcurl multi handle");
    curl_multi_setopt(dispatcher->multi, CURLMOPT_MAXCONNECTS,
                      (long)dispatcher->options.max_in_flight * 2);
    return 0;
}

struct dispatcher *dispatcher_start(const struct dispatcher_options *options, struct bh_error *err)
{
    struct dispatcher *dispatcher;
    int result;

    if (validate_options(options, err) != 0)
        return NULL;

    dispatcher = xcalloc(1, sizeof(*dispatcher));
    dispatcher->options = *options;
    dispatcher->store_location = xstrdup(options->store_location);
    dispatcher->options.store_location = dispatcher->store_location;
    dispatcher->ca_file = options->ca_file != NULL ? xstrdup(options->ca_file) : NULL;
    dispatcher->options.ca_file = dispatcher->ca_file;
    dispatcher->next_due_ms = -1;
    dispatcher->next_due_stale = true;
    dispatcher->short_claim_ms = INT64_MIN;
    atomic_init(&dispatcher->stopping, false);
    atomic_init(&dispatcher->notified, true);
    make_lease_owner(dispatcher->owner);

    dispatcher->store = store_open(dispatcher->store_location, err);
    if (dispatcher->store == NULL)
        goto fail;
    if (open_multi(dispatcher, err) != 0)
        goto fail;

    result = pthread_create(&dispatcher->thread, NULL, dispatcher_main, dispatcher);
    if (result != 0) {
        bh_error_set(err, BH_ERR_INTERNAL, "", "could not start the dispatcher thread: %s",
                     strerror(result));
        goto fail;
    }
    log_info(MODULE, "started owner=%s max_in_flight=%d", dispatcher->owner,
             options->max_in_flight);
    return dispatcher;

fail:
    dispatcher_free(dispatcher);
    return NULL;
}

void dispatcher_notify(struct dispatcher *dispatcher)
{
    atomic_store(&dispatcher->notified, true);
    curl_multi_wakeup(dispatcher->multi);
}

void dispatcher_stop(struct dispatcher *dispatcher)
{
    if (dispatcher == NULL)
        return;

    atomic_store(&dispatcher->stopping, true);
    curl_multi_wakeup(dispatcher->multi);
    pthread_join(dispatcher->thread, NULL);
    log_info(MODULE, "stopped owner=%s", dispatcher->owner);
    dispatcher_free(dispatcher);
}
