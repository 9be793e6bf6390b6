/*
 * Two threads share the work. The transfer thread owns the curl multi handle and every
 * attempt_run; the store thread owns the store connection. They meet only in struct
 * store_work, under work_lock. The transfer thread fills it with results to write and a claim
 * to make, and the store thread runs both in one transaction. The transfer thread then takes
 * the reply and starts the claimed attempts. Transfers keep running meanwhile, so the HTTP work
 * and the database work can use a core each. Other threads touch only the atomic flags and
 * curl_multi_wakeup.
 *
 * Each integration runs at most max_in_flight_per_endpoint transfers (its cap). Behind them
 * wait up to twice cap claimed jobs, twice what the integration finished between two claims
 * (see slot_loads), so an integration whose transfers hang gets no queue. A finished transfer
 * starts the next queued job of its integration at once, so transfers need not wait for the
 * store thread. A slot of
 * max_in_flight is taken from the claim until the attempt's result is written: queued jobs,
 * running transfers and results waiting to be written all count, so a crash resends at most
 * max_in_flight attempts.
 *
 * A rider (struct dispatcher_rider) may add its own writes to the store thread's transactions:
 * the ingest of events does, so one connection writes the process's hot rows.
 *
 * Results are handed over when the store thread is free and the batch is due (see
 * batch_due). Every write comes with a claim, since it frees slots. The time of the next due
 * delivery is queried only when nothing runs that would wake the loop, or once per idle cap,
 * so an idle dispatcher makes about one store query per second. The idle cap also picks up
 * work that another process committed without notifying this one, and leases that expired.
 *
 * An attempt_run lives as long as the dispatcher once created: after its result is written
 * it waits in the idle list, keeping its curl handle and header buffer for the next attempt.
 */
#include "delivery/dispatcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/integration.h"
#include "core/signature.h"
#include "delivery/target.h"
#include "store/store.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/metrics.h"

#define MODULE "dispatcher"
/*
 * The maximum sleep of an idle dispatcher, between two queries of the next due time. It is a
 * bit over a second, so that an idle process stays under one store call per second even with
 * a client's own store call now and then (an authenticated GET /metrics).
 */
#define IDLE_CAP_MS 1200
#define BATCH_MAX 256          /* results written in one transaction at most */
#define FLUSH_MS 5             /* maximum wait of a result before its hand-over */
#define RIDER_WAIT_US 1000     /* how long the rider's work waits for the next claim */
#define CLAIM_WAIT_US 300      /* how long new deliveries wait for a claim in their transaction */
#define ERROR_TEXT_MAX 300     /* bytes of an attempt's error text, with its NUL */
#define LOCATION_SHOWN_MAX 200 /* bytes of a redirect target quoted in an error */
#define RETRY_AFTER_SECONDS_MAX (366 * 24 * 3600)
#define USER_AGENT "Bearconnect-Webhook/1.0"
/* Header lines besides the custom ones: 8 of the documented headers, Expect and Accept. */
#define FIXED_HEADER_LINES 10

enum run_state { RUN_IDLE, RUN_QUEUED, RUN_RUNNING, RUN_FINISHED };

struct attempt_run {
    struct dispatcher *dispatcher;
    enum run_state state;
    struct delivery_job job; /* owned; curl reads job.body until the transfer ends */
    CURL *easy;              /* kept across attempts, with its options that never change */
    struct target_guard guard;
    struct buf header_text;          /* the header lines, each ended by a NUL */
    struct curl_slist *header_nodes; /* over header_text; not for curl_slist_free_all */
    size_t header_node_capacity;
    int64_t claimed_ms; /* Unix time of the claim that leased the job */
    int64_t started_ms; /* Unix time, stored with the attempt */
    char error_buffer[CURL_ERROR_SIZE];
    char excerpt[RESPONSE_EXCERPT_MAX]; /* the first bytes of the response body */
    size_t excerpt_len;

    /* Filled when the transfer ends; error and excerpt point into this run. */
    struct attempt_outcome outcome;
    char error[ERROR_TEXT_MAX];

    struct attempt_run *prev; /* in the running list */
    struct attempt_run *next; /* in the running list, an integration's queue or the idle list */
};

/* The claimed jobs of one integration that are running or queued to run. */
struct integration_slot {
    char integration_id[ID_LEN + 1];
    size_t running;
    size_t queued;
    size_t finished;                /* transfers that ended since the last claim was submitted */
    int timeout_ms;                 /* the integration's timeout, from its latest claimed job */
    int slowest_ms;                 /* the longest of the transfers counted in finished */
    struct attempt_run *queue_head; /* queued runs, oldest claim first */
    struct attempt_run *queue_tail;
};

/* The integrations with claimed jobs: an open-addressing hash table with linear probing. */
struct slot_table {
    struct integration_slot *entries; /* running + queued == 0 marks an empty entry */
    size_t capacity;                  /* a power of two, more than twice max_in_flight */
};

enum work_state { WORK_IDLE, WORK_SUBMITTED, WORK_DONE };

/*
 * One request from the transfer thread to the store thread, and its reply. The transfer
 * thread fills it while idle, the store thread uses it while submitted, and the transfer
 * thread reads the reply once done.
 */
struct store_work {
    /* The request. */
    struct attempt_run **batch; /* results to write, max_in_flight entries */
    size_t batch_count;
    size_t claim_limit;             /* 0 for no claim */
    struct integration_load *loads; /* claimed jobs per integration at submission */
    size_t load_count;
    int64_t now_ms;
    bool refresh_next_due;

    /* The reply. */
    struct attempt_outcome *outcomes; /* copies of the batch's outcomes, for the store */
    int *results;                     /* each outcome's status from the store */
    int batch_status;                 /* 0 when the batch was committed */
    int claim_status;                 /* 0 when the claim was committed */
    struct delivery_job *jobs;
    size_t job_count;
    int next_due_status;
    int64_t next_due_ms;
};

/* An integration's signing settings as changed at changed_ms, for jobs claimed before then. */
struct signing_change {
    char integration_id[ID_LEN + 1];
    bool signing;
    char *secret; /* owned; NULL when signing is off */
    int64_t changed_ms;
};

struct dispatcher {
    struct dispatcher_options options; /* strings point at the copies below */
    char *store_location;
    char *ca_file;
    char owner[LEASE_OWNER_MAX + 1];
    bool curl_ready;
    struct store *store;
    CURLM *multi;
    pthread_t thread;             /* the transfer thread */
    pthread_mutex_t signing_lock; /* guards signing_changes */
    struct signing_change *signing_changes;
    size_t signing_change_count;
    size_t signing_change_capacity;
    atomic_size_t signing_changes_live; /* signing_change_count, read without the lock */
    pthread_t store_thread;
    bool thread_started;
    bool store_thread_started;
    atomic_bool stopping;
    atomic_bool notified;

    pthread_mutex_t work_lock;
    pthread_cond_t work_changed;   /* signalled on submission, on completion and on exit */
    enum work_state work_state;    /* under work_lock */
    bool store_exit;               /* under work_lock */
    struct dispatcher_rider rider; /* under work_lock, with rider.take NULL when none */
    bool rider_waiting;            /* under work_lock: the rider has work */
    bool rider_busy;               /* under work_lock: the store thread is in the rider's calls */
    struct store_work work;
    char cursor[ID_LEN + 1]; /* store thread: where the next claim's round starts */

    /* Touched only by the transfer thread. */
    struct attempt_run *running_runs; /* transfers in the multi handle */
    struct attempt_run *idle_runs;    /* free for the next attempt */
    int running;
    struct slot_table slots;
    int queued;                 /* claimed jobs waiting in the integrations' queues */
    struct attempt_run **batch; /* finished, not yet handed over; max_in_flight entries */
    size_t batch_count;
    int64_t batch_started_ms; /* monotonic time of the batch's first result */

    EVP_MAC_CTX *mac; /* HMAC-SHA256, keyed with mac_key; NULL when it could not be made */
    char *mac_key;
    bool standard_signature_warned; /* a webhook-signature was omitted and logged */

    int64_t next_due_ms;         /* from the last query or a retry written since; -1 for none */
    bool next_due_stale;         /* a claim or a result changed the queue since the query */
    int64_t next_due_checked_ms; /* monotonic time that query was requested */
    int64_t short_claim_ms;      /* Unix time of the last claim that got fewer jobs than slots */
    bool more_ready;             /* the last claim filled every slot, so more may be due */
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

/* ---- Claimed jobs per integration ---- */

static size_t slot_hash(const char *integration_id)
{
    uint64_t hash = 1469598103934665603ULL; /* FNV-1a */

    for (const unsigned char *p = (const unsigned char *)integration_id; *p != '\0'; p++) {
        hash ^= *p;
        hash *= 1099511628211ULL;
    }
    return (size_t)hash;
}

static bool slot_empty(const struct integration_slot *slot)
{
    return slot->running == 0 && slot->queued == 0;
}

static void slot_table_init(struct slot_table *table, int max_in_flight)
{
    size_t capacity = 16;

    while (capacity < 2 * (size_t)max_in_flight + 1)
        capacity *= 2;
    table->entries = xcalloc(capacity, sizeof(*table->entries));
    table->capacity = capacity;
}

/*
 * Returns the slot of integration_id, or the empty entry where it would go. Each slot has
 * at least one claimed job, so the table is never more than half full and an empty entry
 * ends every probe.
 */
static struct integration_slot *slot_find(struct slot_table *table, const char *integration_id)
{
    size_t mask = table->capacity - 1;
    size_t i = slot_hash(integration_id) & mask;

    while (!slot_empty(&table->entries[i]) &&
           strcmp(table->entries[i].integration_id, integration_id) != 0)
        i = (i + 1) & mask;
    return &table->entries[i];
}

/* Returns the slot of integration_id, made ready for a first job when it is new. */
static struct integration_slot *slot_get(struct slot_table *table, const char *integration_id)
{
    struct integration_slot *slot = slot_find(table, integration_id);

    if (slot_empty(slot)) {
        memset(slot, 0, sizeof(*slot));
        snprintf(slot->integration_id, sizeof(slot->integration_id), "%s", integration_id);
    }
    return slot;
}

/* Deletes a slot whose last job ended, shifting later entries of its probe run back. */
static void slot_delete_if_empty(struct slot_table *table, struct integration_slot *slot)
{
    size_t mask = table->capacity - 1;
    size_t hole;

    if (!slot_empty(slot))
        return;
    hole = (size_t)(slot - table->entries);
    for (size_t i = (hole + 1) & mask; !slot_empty(&table->entries[i]); i = (i + 1) & mask) {
        size_t home = slot_hash(table->entries[i].integration_id) & mask;

        /* An entry may fill the hole only if its home is not between the hole and itself. */
        if (((i - home) & mask) >= ((i - hole) & mask)) {
            table->entries[hole] = table->entries[i];
            memset(&table->entries[i], 0, sizeof(table->entries[i]));
            hole = i;
        }
    }
}

/*
 * Lists the integrations with claimed jobs for a claim whose per-integration limit is three
 * times cap: cap running and up to twice cap queued. The queue may grow to twice the transfers
 * that ended since the last claim, which is about what the integration uses until the next
 * claim, and the transfers keep going while the store thread writes a long batch. So an
 * integration whose transfers hang gets no queue. A job at the end of a queue of twice cap
 * waits for about two rounds of transfers, and it must then start within its lease
 * (start_queued). So the queue stays within cap unless two of the slowest recent transfers
 * and the integration's timeout fit in TIMEOUT_MS_MAX. Counting starts over for the next
 * claim.
 */
static size_t slot_loads(struct slot_table *table, size_t cap, struct integration_load *out)
{
    size_t n = 0;

    for (size_t i = 0; i < table->capacity; i++) {
        struct integration_slot *slot = &table->entries[i];
        bool deep;
        size_t queue_limit;
        size_t queue_max;

        if (slot_empty(slot))
            continue;
        /* A job queued two rounds deep must still start within its claim's lease. */
        deep = 2 * (int64_t)slot->slowest_ms + slot->timeout_ms <= TIMEOUT_MS_MAX;
        queue_limit = deep ? 2 * cap : cap;
        queue_max = 2 * slot->finished < queue_limit ? 2 * slot->finished : queue_limit;
        memcpy(out[n].integration_id, slot->integration_id, sizeof(out[n].integration_id));
        out[n].claimed = slot->running + slot->queued + (2 * cap - queue_max);
        slot->finished = 0;
        slot->slowest_ms = 0;
        n++;
    }
    return n;
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

/* ---- Signatures and request headers ---- */

/*
 * Makes the reusable HMAC-SHA256 context. One-shot HMAC() looks the algorithm up again on
 * every call in OpenSSL 3, which costs more than hashing a small body.
 */
static void open_mac(struct dispatcher *dispatcher)
{
    EVP_MAC *algorithm = EVP_MAC_fetch(NULL, "HMAC", NULL);
    OSSL_PARAM params[2];

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (algorithm != NULL)
        dispatcher->mac = EVP_MAC_CTX_new(algorithm);
    if (dispatcher->mac != NULL && EVP_MAC_CTX_set_params(dispatcher->mac, params) != 1) {
        EVP_MAC_CTX_free(dispatcher->mac);
        dispatcher->mac = NULL;
    }
    /* The context holds its own reference to the algorithm. */
    EVP_MAC_free(algorithm);
    if (dispatcher->mac == NULL)
        log_warn(MODULE, "could not set up a reusable HMAC context; signing each attempt anew");
}

/*
 * Writes the lowercase hex HMAC-SHA256 of the body keyed with secret, as signature_compute
 * does. The key is set only when it differs from the previous attempt's.
 */
static void sign_body(struct dispatcher *dispatcher, const char *secret, const void *body,
                      size_t body_len, char out[SIGNATURE_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char digest[EVP_MAX_MD_SIZE];
    size_t digest_len = 0;
    bool same_key = dispatcher->mac_key != NULL && strcmp(dispatcher->mac_key, secret) == 0;
    int ok;

    if (dispatcher->mac == NULL) {
        signature_compute(secret, body, body_len, out);
        return;
    }
    if (same_key)
        ok = EVP_MAC_init(dispatcher->mac, NULL, 0, NULL);
    else
        ok = EVP_MAC_init(dispatcher->mac, (const unsigned char *)secret, strlen(secret), NULL);
    if (ok == 1 && !same_key) {
        free(dispatcher->mac_key);
        dispatcher->mac_key = xstrdup(secret);
    }
    if (ok == 1)
        ok = EVP_MAC_update(dispatcher->mac, body, body_len);
    if (ok == 1)
        ok = EVP_MAC_final(dispatcher->mac, digest, &digest_len, sizeof(digest));
    if (ok != 1 || digest_len * 2 != SIGNATURE_HEX_LEN) {
        /* The context is in an unknown state; the next attempt sets its key again. */
        free(dispatcher->mac_key);
        dispatcher->mac_key = NULL;
        signature_compute(secret, body, body_len, out);
        return;
    }

    for (size_t i = 0; i < digest_len; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 0x0f];
    }
    out[2 * digest_len] = '\0';
}

/* Appends one header line and its NUL to the run's header text. */
static void header_line(struct attempt_run *run, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void header_line(struct attempt_run *run, const char *fmt, ...)
{
    char line[256];
    va_list args;
    int len;

    va_start(args, fmt);
    len = vsnprintf(line, sizeof(line), fmt, args);
    va_end(args);
    if (len >= 0 && (size_t)len < sizeof(line)) {
        buf_append(&run->header_text, line, (size_t)len + 1);
        return;
    }

    /* Custom headers may be longer than the stack buffer. */
    va_start(args, fmt);
    {
        char *long_line = NULL;

        if (vasprintf(&long_line, fmt, args) < 0) {
            fprintf(stderr, "bearhook: out of memory building request headers\n");
            abort();
        }
        buf_append(&run->header_text, long_line, strlen(long_line) + 1);
        free(long_line);
    }
    va_end(args);
}

/*
 * Appends the webhook-signature line, or returns false without it when the secret is not
 * "whsec_" and base64, which is logged once per dispatcher since every attempt would repeat it.
 */
static bool standard_sign(struct attempt_run *run, int64_t timestamp)
{
    const struct delivery_job *job = &run->job;
    char signature[STANDARD_SIGNATURE_LEN + 1];
    struct bh_error err;

    bh_error_clear(&err);
    if (standard_signature_compute(job->secret, job->delivery_id, timestamp, job->body,
                                   job->body_len, signature, &err) == 0) {
        header_line(run, "webhook-signature: %s", signature);
        return true;
    }

    if (!run->dispatcher->standard_signature_warned) {
        run->dispatcher->standard_signature_warned = true;
        log_warn(MODULE,
                 "sending without webhook-signature integration=%s delivery=%s error=\"%s\"; "
                 "later deliveries with such a secret are not logged",
                 job->integration_id, job->delivery_id, err.message);
    }
    return false;
}

/* Links the run's header nodes to the lines in header_text, in order. */
static struct curl_slist *link_header_nodes(struct attempt_run *run, size_t line_count)
{
    const char *line = run->header_text.data;

    if (line_count > run->header_node_capacity) {
        run->header_nodes = xrealloc(run->header_nodes, line_count * sizeof(*run->header_nodes));
        run->header_node_capacity = line_count;
    }
    for (size_t i = 0; i < line_count; i++) {
        run->header_nodes[i].data = (char *)line;
        run->header_nodes[i].next = i + 1 < line_count ? &run->header_nodes[i + 1] : NULL;
        line += strlen(line) + 1;
    }
    return &run->header_nodes[0];
}

/*
 * Builds the request headers in their documented order. The timestamp and the signature are
 * made now, with the secret the claim read, so every attempt signs afresh. libcurl only reads
 * a header list, so the list is the run's own nodes over its own text, reused across attempts.
 */
static struct curl_slist *build_headers(struct attempt_run *run)
{
    const struct delivery_job *job = &run->job;
    size_t line_count = FIXED_HEADER_LINES + job->header_count;
    bool signing = job->signing && job->secret != NULL;
    int64_t timestamp = clock_now_ms() / 1000; /* Unix seconds, shared by both header sets */

    buf_reset(&run->header_text);
    header_line(run, "Content-Type: application/json");
    header_line(run, "User-Agent: " USER_AGENT);
    header_line(run, "X-Webhook-Id: %s", job->integration_id);

    if (signing) {
        char signature[SIGNATURE_HEX_LEN + 1];

        header_line(run, "X-Bearconnect-Timestamp: %lld", (long long)timestamp);
        sign_body(run->dispatcher, job->secret, job->body, job->body_len, signature);
        header_line(run, "X-Bearconnect-Signature: %s", signature);
    } else {
        line_count -= 2;
    }

    /* Standard Webhooks: the delivery id stays the same on every retry, for deduplication. */
    header_line(run, "webhook-id: %s", job->delivery_id);
    header_line(run, "webhook-timestamp: %lld", (long long)timestamp);
    if (!signing || !standard_sign(run, timestamp))
        line_count -= 1;

    for (size_t i = 0; i < job->header_count; i++) {
        const struct custom_header *header = &job->headers[i];

        /* curl drops a header written "Name:" with no value; "Name;" sends it empty. */
        if (header->value[0] == '\0')
            header_line(run, "%s;", header->name);
        else
            header_line(run, "%s: %s", header->name, header->value);
    }

    /* An empty value makes curl omit its own Expect and Accept headers. */
    header_line(run, "Expect:");
    header_line(run, "Accept:");
    return link_header_nodes(run, line_count);
}

/* ---- Transfers ---- */

/* Creates a run with a curl handle and the options that stay the same for every attempt. */
static struct attempt_run *run_create(struct dispatcher *dispatcher)
{
    const struct dispatcher_options *options = &dispatcher->options;
    struct attempt_run *run = xcalloc(1, sizeof(*run));
    CURL *easy = curl_easy_init();
    CURLcode result = CURLE_OK;

    run->dispatcher = dispatcher;
    buf_init(&run->header_text);
    if (easy == NULL) {
        free(run);
        return NULL;
    }
    run->easy = easy;

    /* These take pointers or constant flags, which libcurl 7.88 accepts without condition. */
    curl_easy_setopt(easy, CURLOPT_PRIVATE, run);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, run->error_buffer);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, keep_excerpt);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, run);

    /* The guard also limits schemes to what the policy allows and turns off proxies. */
    run->guard.policy = options->targets;
    target_guard_install(easy, &run->guard);
    if (options->ca_file != NULL)
        result = curl_easy_setopt(easy, CURLOPT_CAINFO, options->ca_file);
    if (result != CURLE_OK) {
        log_error(MODULE, "could not set the CA file %s error=\"%s\"", options->ca_file,
                  curl_easy_strerror(result));
        curl_easy_cleanup(easy);
        free(run);
        return NULL;
    }
    return run;
}

static void run_destroy(struct attempt_run *run)
{
    curl_easy_cleanup(run->easy);
    buf_release(&run->header_text);
    free(run->header_nodes);
    delivery_job_release(&run->job);
    free(run);
}

/* Takes an idle run, or creates one; NULL when curl cannot make a handle. */
static struct attempt_run *run_take(struct dispatcher *dispatcher)
{
    struct attempt_run *run = dispatcher->idle_runs;

    if (run == NULL)
        return run_create(dispatcher);
    dispatcher->idle_runs = run->next;
    run->next = NULL;
    return run;
}

/* Returns a run whose transfer is out of the multi handle to the idle list. */
static void run_give_back(struct dispatcher *dispatcher, struct attempt_run *run)
{
    delivery_job_release(&run->job);
    run->state = RUN_IDLE;
    run->prev = NULL;
    run->next = dispatcher->idle_runs;
    dispatcher->idle_runs = run;
}

static void running_link(struct dispatcher *dispatcher, struct attempt_run *run)
{
    run->state = RUN_RUNNING;
    run->prev = NULL;
    run->next = dispatcher->running_runs;
    if (dispatcher->running_runs != NULL)
        dispatcher->running_runs->prev = run;
    dispatcher->running_runs = run;
    dispatcher->running++;
    slot_get(&dispatcher->slots, run->job.integration_id)->running++;
}

/*
 * Takes the run out of the running list and its transfer out of the multi handle. Returns its
 * integration's slot, or NULL when that slot has no jobs left.
 */
static struct integration_slot *running_unlink(struct dispatcher *dispatcher,
                                               struct attempt_run *run)
{
    struct integration_slot *slot = slot_find(&dispatcher->slots, run->job.integration_id);

    if (run->prev != NULL)
        run->prev->next = run->next;
    else
        dispatcher->running_runs = run->next;
    if (run->next != NULL)
        run->next->prev = run->prev;
    run->prev = NULL;
    run->next = NULL;
    dispatcher->running--;
    curl_multi_remove_handle(dispatcher->multi, run->easy);

    slot->running--;
    slot->finished++;
    /* collect_finished sets the outcome, and its duration, before it unlinks the run. */
    if (run->outcome.duration_ms > slot->slowest_ms)
        slot->slowest_ms = run->outcome.duration_ms;
    if (slot_empty(slot)) {
        slot_delete_if_empty(&dispatcher->slots, slot);
        return NULL;
    }
    return slot;
}

static size_t per_endpoint_cap(const struct dispatcher *dispatcher)
{
    int cap = dispatcher->options.max_in_flight_per_endpoint;

    if (cap <= 0 || cap > dispatcher->options.max_in_flight)
        cap = dispatcher->options.max_in_flight;
    return (size_t)cap;
}

/* Sets the options that change with each attempt. */
static CURLcode configure_attempt(struct attempt_run *run)
{
    CURL *easy = run->easy;
    CURLcode result;

    run->error_buffer[0] = '\0';
    run->excerpt_len = 0;
    run->guard.refused[0] = '\0';
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)run->job.body_len);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, run->job.body != NULL ? run->job.body : "");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, build_headers(run));

    result = curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)run->job.timeout_ms);
    if (result == CURLE_OK)
        result = curl_easy_setopt(easy, CURLOPT_URL, run->job.url);
    return result;
}

/*
 * Replaces the signing settings of a job that was claimed before its integration's signing
 * settings changed, so an attempt never signs with a secret that was already replaced.
 */
static void apply_signing_change(struct dispatcher *dispatcher, struct attempt_run *run)
{
    struct delivery_job *job = &run->job;

    if (atomic_load(&dispatcher->signing_changes_live) == 0)
        return;
    pthread_mutex_lock(&dispatcher->signing_lock);
    for (size_t i = 0; i < dispatcher->signing_change_count; i++) {
        const struct signing_change *change = &dispatcher->signing_changes[i];

        if (strcmp(change->integration_id, job->integration_id) != 0 ||
            change->changed_ms < run->claimed_ms)
            continue;
        free(job->secret);
        job->secret = change->secret ? xstrdup(change->secret) : NULL;
        job->signing = change->signing;
        break;
    }
    pthread_mutex_unlock(&dispatcher->signing_lock);
}

/* Starts the transfer of a run's job. On failure the run goes back to the idle list. */
static void start_transfer(struct dispatcher *dispatcher, struct attempt_run *run)
{
    CURLcode result;
    CURLMcode multi_result;

    apply_signing_change(dispatcher, run);
    result = configure_attempt(run);
    if (result != CURLE_OK) {
        log_error(MODULE,
                  "could not configure a transfer; the delivery is retried when its "
                  "lease ends delivery=%s error=\"%s\"",
                  run->job.delivery_id, curl_easy_strerror(result));
        run_give_back(dispatcher, run);
        return;
    }

    run->started_ms = clock_now_ms();
    multi_result = curl_multi_add_handle(dispatcher->multi, run->easy);
    if (multi_result != CURLM_OK) {
        log_error(MODULE,
                  "could not start a transfer; the delivery is retried when its "
                  "lease ends delivery=%s error=\"%s\"",
                  run->job.delivery_id, curl_multi_strerror(multi_result));
        run_give_back(dispatcher, run);
        return;
    }
    running_link(dispatcher, run);
}

/*
 * Takes the job's contents (leaving it empty) and starts its transfer, or queues it behind
 * its integration's running transfers when the integration is at its cap.
 */
static void accept_job(struct dispatcher *dispatcher, struct delivery_job *job, int64_t claimed_ms)
{
    struct attempt_run *run = run_take(dispatcher);
    struct integration_slot *slot;

    if (run == NULL) {
        log_error(MODULE,
                  "could not create a transfer; the delivery is retried when its "
                  "lease ends delivery=%s",
                  job->delivery_id);
        delivery_job_release(job);
        return;
    }
    run->job = *job;
    run->claimed_ms = claimed_ms;
    memset(job, 0, sizeof(*job));

    slot = slot_get(&dispatcher->slots, run->job.integration_id);
    slot->timeout_ms = run->job.timeout_ms;
    if (slot->running < per_endpoint_cap(dispatcher) && slot->queued == 0) {
        start_transfer(dispatcher, run);
        return;
    }
    run->state = RUN_QUEUED;
    run->next = NULL;
    if (slot->queue_tail != NULL)
        slot->queue_tail->next = run;
    else
        slot->queue_head = run;
    slot->queue_tail = run;
    slot->queued++;
    dispatcher->queued++;
}

/* Removes the first queued run of the slot, deleting the slot when it ends up empty. */
static struct attempt_run *dequeue(struct dispatcher *dispatcher, struct integration_slot **slot)
{
    struct attempt_run *run = (*slot)->queue_head;

    (*slot)->queue_head = run->next;
    if ((*slot)->queue_head == NULL)
        (*slot)->queue_tail = NULL;
    run->next = NULL;
    (*slot)->queued--;
    dispatcher->queued--;
    if (slot_empty(*slot)) {
        slot_delete_if_empty(&dispatcher->slots, *slot);
        *slot = NULL;
    }
    return run;
}

/*
 * Starts queued jobs of the slot while it is below its cap. A job starts only if its attempt
 * can end within the lease of its claim, which covers one attempt of TIMEOUT_MS_MAX. A job
 * that waited too long behind a slow receiver is dropped and claimed again when its lease
 * ends.
 */
static void start_queued(struct dispatcher *dispatcher, struct integration_slot *slot)
{
    size_t cap = per_endpoint_cap(dispatcher);

    while (slot != NULL && slot->queue_head != NULL && slot->running < cap) {
        char integration_id[ID_LEN + 1];
        struct attempt_run *run = dequeue(dispatcher, &slot);
        int64_t now_ms = clock_now_ms();

        memcpy(integration_id, run->job.integration_id, sizeof(integration_id));

        if (now_ms + run->job.timeout_ms > run->claimed_ms + TIMEOUT_MS_MAX) {
            log_info(MODULE,
                     "queued attempt dropped: it would outlast its lease; the delivery is "
                     "retried when the lease ends delivery=%s integration=%s",
                     run->job.delivery_id, run->job.integration_id);
            run_give_back(dispatcher, run);
            continue;
        }
        start_transfer(dispatcher, run);
        /* start_transfer may have made the slot anew when the dequeue emptied it. */
        slot = slot_find(&dispatcher->slots, integration_id);
        if (slot_empty(slot))
            slot = NULL;
    }
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

/* ---- Results ---- */

/* Logs a failed attempt; successes are logged at debug level, since they can be thousands a
 * second and GET /v1/deliveries/{id} shows each. */
static void log_attempt(const struct attempt_run *run)
{
    const struct delivery_job *job = &run->job;
    const struct attempt_outcome *outcome = &run->outcome;
    int attempt = job->attempts_before + 1;
    char next[ISO8601_MS_LEN + 1];

    if (outcome->new_state == DELIVERY_SUCCEEDED) {
        log_debug(MODULE,
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

/* Fills run->outcome from the ended transfer and decides whether and when to try again. */
static void describe_outcome(struct dispatcher *dispatcher, struct attempt_run *run,
                             CURLcode result)
{
    struct attempt_outcome *outcome = &run->outcome;
    long status = 0;
    curl_off_t total_us = 0;

    memset(outcome, 0, sizeof(*outcome));
    curl_easy_getinfo(run->easy, CURLINFO_RESPONSE_CODE, &status);
    /* curl's own transfer time leaves out the time this loop took to notice the end. */
    curl_easy_getinfo(run->easy, CURLINFO_TOTAL_TIME_T, &total_us);
    if (result != CURLE_OK || status < 200 || status > 299) {
        describe_failure(run, result, status, run->error, sizeof(run->error));
        outcome->error = run->error;
    }

    outcome->delivery_id = run->job.delivery_id;
    outcome->row_ref = run->job.row_ref;
    outcome->test = run->job.test;
    outcome->integration_id = run->job.integration_id;
    outcome->lease_owner = dispatcher->owner;
    outcome->started_ms = run->started_ms;
    outcome->duration_ms = (int)(total_us / 1000);
    outcome->http_status = (int)status;
    outcome->response_excerpt = run->excerpt_len > 0 ? run->excerpt : NULL;
    outcome->response_excerpt_len = run->excerpt_len;
    decide_next_state(run, outcome, run->job.attempts_before + 1);
}

/* Moves every ended transfer into the batch; its slot stays taken until the batch is written. */
static void collect_finished(struct dispatcher *dispatcher)
{
    CURLMsg *message;
    int queued = 0;

    while ((message = curl_multi_info_read(dispatcher->multi, &queued)) != NULL) {
        struct integration_slot *slot;
        struct attempt_run *run;
        char *private_data = NULL;
        CURLcode result = message->data.result;

        if (message->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &private_data);
        run = (struct attempt_run *)private_data;

        describe_outcome(dispatcher, run, result);
        slot = running_unlink(dispatcher, run);
        run->state = RUN_FINISHED;
        metrics_add(METRIC_ATTEMPTS, 1);
        log_attempt(run);

        if (dispatcher->batch_count == 0)
            dispatcher->batch_started_ms = clock_monotonic_ms();
        dispatcher->batch[dispatcher->batch_count++] = run;
        start_queued(dispatcher, slot);
    }
}

/* ---- The store thread ---- */

static int claim_jobs(struct dispatcher *dispatcher, struct store_work *work, struct store *store,
                      struct bh_error *err)
{
    /*
     * One lease covers the whole batch, so it lasts for the longest timeout any job can have.
     * An integration gets up to its cap running and a queue behind them that slot_loads sizes.
     */
    struct claim_request request = {
        .owner = dispatcher->owner,
        .now_ms = work->now_ms,
        .lease_ms = TIMEOUT_MS_MAX + dispatcher->options.lease_margin_ms,
        .limit = work->claim_limit,
        .per_integration_limit = 3 * per_endpoint_cap(dispatcher),
        .loads = work->loads,
        .load_count = work->load_count,
    };

    return store_delivery_claim_capped(store, &request, dispatcher->cursor, &work->jobs,
                                       &work->job_count, err);
}

static void write_batch(struct store_work *work, struct store *store)
{
    struct bh_error err;

    bh_error_clear(&err);
    for (size_t i = 0; i < work->batch_count; i++)
        work->outcomes[i] = work->batch[i]->outcome;
    work->batch_status =
        store_delivery_finish_batch(store, work->outcomes, work->batch_count, work->results, &err);
    if (work->batch_status != 0)
        log_error(MODULE,
                  "could not record %zu attempts; their deliveries are retried when their "
                  "leases end error=\"%s\"",
                  work->batch_count, err.message);
}

/*
 * Writes the batch and claims inside the caller's open transaction. Each store call runs in a
 * savepoint of its own, so a failure undoes only its own rows.
 */
static void do_work_inside(struct dispatcher *dispatcher, struct store_work *work,
                           struct store *store)
{
    struct bh_error err;

    bh_error_clear(&err);
    if (work->batch_count > 0)
        write_batch(work, store);
    if (work->claim_limit > 0 && work->batch_status == 0) {
        work->claim_status = claim_jobs(dispatcher, work, store, &err);
        if (work->claim_status != 0)
            log_error(MODULE, "could not claim due deliveries error=\"%s\"", err.message);
    } else if (work->claim_limit > 0) {
        work->claim_status = work->batch_status;
    }
}

static void reset_reply(struct store_work *work)
{
    work->batch_status = 0;
    work->claim_status = 0;
    work->jobs = NULL;
    work->job_count = 0;
    work->next_due_status = 0;
}

static void drop_claimed_jobs(struct store_work *work)
{
    delivery_job_list_free(work->jobs, work->job_count);
    work->jobs = NULL;
    work->job_count = 0;
}

/* Marks the work as lost with its transaction: its results and claims were not committed. */
static void work_rolled_back(struct store_work *work, int status)
{
    work->batch_status = status;
    work->claim_status = status;
    drop_claimed_jobs(work);
}

static void refresh_next_due(struct store_work *work, struct store *store)
{
    struct bh_error err;

    if (!work->refresh_next_due)
        return;
    bh_error_clear(&err);
    work->next_due_status = store_delivery_next_due(store, &work->next_due_ms, &err);
    if (work->next_due_status != 0)
        log_error(MODULE, "could not read the next due delivery error=\"%s\"", err.message);
}

/* Ends a committed work: drops the jobs of a failed claim and reads the next due time. */
static void end_work(struct store_work *work, struct store *store)
{
    if (work->claim_status != 0)
        drop_claimed_jobs(work);
    refresh_next_due(work, store);
}

/*
 * Writes the batch and claims, in one transaction when there are both. Claimed jobs are
 * returned only once committed, so no transfer ever runs under a lease that was not.
 */
static void do_work(struct dispatcher *dispatcher, struct store_work *work)
{
    struct store *store = dispatcher->store;
    bool transaction = work->batch_count > 0 && work->claim_limit > 0;
    struct bh_error err;

    bh_error_clear(&err);
    reset_reply(work);
    if (transaction && store_begin(store, &err) != 0) {
        log_error(MODULE,
                  "could not begin a transaction; %zu attempts are retried when their leases "
                  "end error=\"%s\"",
                  work->batch_count, err.message);
        work_rolled_back(work, err.status);
        refresh_next_due(work, store);
        return;
    }
    do_work_inside(dispatcher, work, store);
    if (transaction && store_commit(store, &err) != 0) {
        log_error(MODULE,
                  "could not commit %zu attempt results and %zu claims; the deliveries are "
                  "retried when their leases end error=\"%s\"",
                  work->batch_count, work->job_count, err.message);
        store_rollback(store);
        work_rolled_back(work, err.status);
    }
    end_work(work, store);
}

/*
 * Waits, under work_lock, up to wait_us for the transfer thread to submit work, and returns
 * whether it did.
 */
static bool await_submission(struct dispatcher *dispatcher, long wait_us)
{
    struct timespec deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += wait_us * 1000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (dispatcher->work_state != WORK_SUBMITTED && !dispatcher->store_exit &&
           pthread_cond_timedwait(&dispatcher->work_changed, &dispatcher->work_lock, &deadline) !=
               ETIMEDOUT)
        ;
    return dispatcher->work_state == WORK_SUBMITTED;
}

/*
 * Runs the rider's work and the dispatcher's in one transaction. When the rider wrote
 * deliveries and no claim came with the round, the transfer thread is woken and given
 * CLAIM_WAIT_US to submit one. The new deliveries are then claimed in the transaction that
 * creates them, and their attempts start once it is confirmed. When the rider's part fails,
 * everything is undone. The rider then redoes its work its own way, and the dispatcher's work
 * runs alone. The rider finishes before the dispatcher's reply is given, so no claimed attempt
 * starts before the rider's sync of the commit has returned. Returns whether the dispatcher's
 * work ran.
 */
static bool do_work_with_rider(struct dispatcher *dispatcher, const struct dispatcher_rider *rider,
                               void *rider_work, bool has_work)
{
    struct store *store = dispatcher->store;
    struct store_work *work = &dispatcher->work;
    struct bh_error err;
    bool committed = false;
    int ran = -1;

    bh_error_clear(&err);
    if (store_begin(store, &err) == 0) {
        ran = rider->run(rider->arg, rider_work, store);
        if (ran > 0 && !has_work) {
            dispatcher_notify(dispatcher);
            pthread_mutex_lock(&dispatcher->work_lock);
            has_work = await_submission(dispatcher, CLAIM_WAIT_US);
            pthread_mutex_unlock(&dispatcher->work_lock);
        }
        if (ran >= 0) {
            if (has_work) {
                reset_reply(work);
                do_work_inside(dispatcher, work, store);
            }
            committed = store_commit(store, &err) == 0;
            if (!committed)
                log_error(MODULE,
                          "commit of events with attempt results and claims failed, so each "
                          "is written again on its own error=\"%s\"",
                          err.message);
        }
        if (!committed)
            store_rollback(store);
    }
    if (has_work && !committed) {
        /* The rollback undid the work's rows, so it runs again, alone. */
        drop_claimed_jobs(work);
        do_work(dispatcher, work);
    } else if (has_work) {
        end_work(work, store);
    }
    rider->finish(rider->arg, rider_work, store, committed);
    return has_work;
}

static void *store_main(void *arg)
{
    struct dispatcher *dispatcher = arg;
    bool carried_work = false; /* the last transaction had both the rider's work and ours */

    pthread_mutex_lock(&dispatcher->work_lock);
    for (;;) {
        struct dispatcher_rider rider;
        bool has_work;
        bool ask_rider;
        void *rider_work = NULL;

        while (dispatcher->work_state != WORK_SUBMITTED && !dispatcher->rider_waiting &&
               !dispatcher->store_exit)
            pthread_cond_wait(&dispatcher->work_changed, &dispatcher->work_lock);
        /*
         * After a transaction that carried both, the transfer thread gets RIDER_WAIT_US to take
         * the reply and submit its next work, so that a busy rider does not fill transaction
         * after transaction alone while delivery falls behind.
         */
        if (carried_work && dispatcher->work_state != WORK_SUBMITTED)
            await_submission(dispatcher, RIDER_WAIT_US);
        has_work = dispatcher->work_state == WORK_SUBMITTED;
        ask_rider = dispatcher->rider_waiting && dispatcher->rider.take != NULL;
        dispatcher->rider_waiting = false;
        if (!has_work && !ask_rider && dispatcher->store_exit)
            break;
        if (!has_work && !ask_rider)
            continue; /* a wake for a rider that has left */
        rider = dispatcher->rider;
        dispatcher->rider_busy = ask_rider;
        pthread_mutex_unlock(&dispatcher->work_lock);

        if (ask_rider)
            rider_work = rider.take(rider.arg);
        if (rider_work != NULL)
            has_work = do_work_with_rider(dispatcher, &rider, rider_work, has_work);
        else if (has_work)
            do_work(dispatcher, &dispatcher->work);

        pthread_mutex_lock(&dispatcher->work_lock);
        carried_work = rider_work != NULL && has_work;
        /* The rider is asked again until take returns NULL, its queue being empty. */
        if (rider_work != NULL)
            dispatcher->rider_waiting = true;
        dispatcher->rider_busy = false;
        if (has_work)
            dispatcher->work_state = WORK_DONE;
        pthread_cond_broadcast(&dispatcher->work_changed);
        if (has_work)
            curl_multi_wakeup(dispatcher->multi);
    }
    pthread_mutex_unlock(&dispatcher->work_lock);
    return NULL;
}

void dispatcher_attach_rider(struct dispatcher *dispatcher, const struct dispatcher_rider *rider)
{
    pthread_mutex_lock(&dispatcher->work_lock);
    dispatcher->rider = *rider;
    pthread_mutex_unlock(&dispatcher->work_lock);
}

void dispatcher_wake_for_rider(struct dispatcher *dispatcher)
{
    pthread_mutex_lock(&dispatcher->work_lock);
    dispatcher->rider_waiting = true;
    pthread_cond_broadcast(&dispatcher->work_changed);
    pthread_mutex_unlock(&dispatcher->work_lock);
}

void dispatcher_detach_rider(struct dispatcher *dispatcher)
{
    pthread_mutex_lock(&dispatcher->work_lock);
    while (dispatcher->rider_busy)
        pthread_cond_wait(&dispatcher->work_changed, &dispatcher->work_lock);
    memset(&dispatcher->rider, 0, sizeof(dispatcher->rider));
    dispatcher->rider_waiting = false;
    pthread_mutex_unlock(&dispatcher->work_lock);
}

/* ---- The transfer thread ---- */

static enum work_state work_state(struct dispatcher *dispatcher)
{
    enum work_state state;

    pthread_mutex_lock(&dispatcher->work_lock);
    state = dispatcher->work_state;
    pthread_mutex_unlock(&dispatcher->work_lock);
    return state;
}

/* Returns the slots that are free once the batch is written. */
static size_t slots_after_batch(const struct dispatcher *dispatcher)
{
    int free_count = dispatcher->options.max_in_flight - dispatcher->running - dispatcher->queued;

    return free_count > 0 ? (size_t)free_count : 0;
}

/*
 * Tells whether to hand the batch over now. Waiting makes batches larger, which costs the
 * store less per result, while queued jobs keep the transfers going. Once the results
 * outnumber the queued jobs, the claim that comes with the write is needed.
 */
static bool batch_due(const struct dispatcher *dispatcher, int64_t monotonic_ms)
{
    if (dispatcher->batch_count == 0)
        return false;
    return dispatcher->batch_count >= BATCH_MAX || dispatcher->running == 0 ||
           dispatcher->batch_count >= (size_t)dispatcher->queued ||
           monotonic_ms - dispatcher->batch_started_ms >= FLUSH_MS;
}

/*
 * Returns the Unix time at which to claim next, or INT64_MAX for none known. A claim that
 * came back short took everything claimable then, within the caps. So a due time no later
 * than that claim belongs to a delivery under a live lease or of an integration at its cap.
 * It is tried again one idle cap after the claim instead of in a tight loop, or sooner when a
 * written batch frees slots.
 */
static int64_t next_claim_ms(const struct dispatcher *dispatcher)
{
    if (dispatcher->next_due_ms < 0)
        return INT64_MAX;
    if (dispatcher->next_due_ms <= dispatcher->short_claim_ms)
        return dispatcher->short_claim_ms + IDLE_CAP_MS;
    return dispatcher->next_due_ms;
}

/* Counts and logs what the store made of each result, and frees the batch's slots. */
static void settle_batch(struct dispatcher *dispatcher, const struct store_work *work)
{
    bool written = work->batch_status == 0;

    for (size_t i = 0; i < work->batch_count; i++) {
        struct attempt_run *run = work->batch[i];
        const struct attempt_outcome *outcome = &run->outcome;
        int result = written ? work->results[i] : work->batch_status;

        if (result == 0 && outcome->new_state == DELIVERY_SUCCEEDED) {
            metrics_add(METRIC_DELIVERIES_SUCCEEDED, 1);
        } else if (result == 0 && outcome->new_state == DELIVERY_FAILED) {
            metrics_add(METRIC_DELIVERIES_FAILED, 1);
        } else if (result == 0) {
            /* A retry written here may be due before anything the last query saw. */
            if (dispatcher->next_due_ms < 0 || outcome->next_attempt_ms < dispatcher->next_due_ms)
                dispatcher->next_due_ms = outcome->next_attempt_ms;
        } else if (result == BH_ERR_NOT_FOUND) {
            log_info(MODULE,
                     "attempt not recorded: the delivery was deleted or its lease was lost "
                     "delivery=%s integration=%s",
                     run->job.delivery_id, run->job.integration_id);
        } else if (written) {
            /* The lease stays, so the delivery is claimed again once it expires. */
            log_error(MODULE,
                      "could not record an attempt; the delivery is retried when its lease "
                      "ends delivery=%s integration=%s error=%s",
                      run->job.delivery_id, run->job.integration_id, bh_status_name(result));
        }
        run_give_back(dispatcher, run);
    }
}

/*
 * Takes the store thread's reply when there is one: settles the written batch and starts
 * the claimed attempts, or releases them when start_jobs is false.
 */
static void take_work(struct dispatcher *dispatcher, bool start_jobs)
{
    struct store_work *work = &dispatcher->work;

    if (work_state(dispatcher) != WORK_DONE)
        return;

    if (work->refresh_next_due)
        dispatcher->next_due_ms = work->next_due_status == 0 ? work->next_due_ms : -1;
    settle_batch(dispatcher, work);
    if (work->batch_count > 0 || work->claim_limit > 0)
        dispatcher->next_due_stale = true;

    if (work->claim_limit > 0) {
        if (work->claim_status != 0 || work->job_count < work->claim_limit) {
            dispatcher->short_claim_ms = work->now_ms;
            dispatcher->more_ready = false;
        } else {
            dispatcher->more_ready = true;
        }
    }
    for (size_t i = 0; start_jobs && i < work->job_count; i++)
        accept_job(dispatcher, &work->jobs[i], work->now_ms);
    delivery_job_list_free(work->jobs, work->job_count);
    work->jobs = NULL;
    work->job_count = 0;

    pthread_mutex_lock(&dispatcher->work_lock);
    dispatcher->work_state = WORK_IDLE;
    pthread_mutex_unlock(&dispatcher->work_lock);
}

/* Hands the batch, a claim of claim_limit jobs and a due-time query to the store thread. */
static void submit_work(struct dispatcher *dispatcher, size_t claim_limit, bool refresh)
{
    struct store_work *work = &dispatcher->work;
    struct attempt_run **emptied = work->batch;

    work->batch = dispatcher->batch;
    work->batch_count = dispatcher->batch_count;
    dispatcher->batch = emptied;
    dispatcher->batch_count = 0;

    work->claim_limit = claim_limit;
    work->load_count =
        claim_limit > 0 ? slot_loads(&dispatcher->slots, per_endpoint_cap(dispatcher), work->loads)
                        : 0;
    work->now_ms = clock_now_ms();
    work->refresh_next_due = refresh;
    if (refresh) {
        dispatcher->next_due_stale = false;
        dispatcher->next_due_checked_ms = clock_monotonic_ms();
    }

    pthread_mutex_lock(&dispatcher->work_lock);
    dispatcher->work_state = WORK_SUBMITTED;
    pthread_cond_broadcast(&dispatcher->work_changed);
    pthread_mutex_unlock(&dispatcher->work_lock);
}

/*
 * Submits work when the store thread is free and there is reason to: a batch that is due, a
 * notification, a claim that filled every slot, a due time that has come, or a stale or old
 * due time.
 */
static void submit_work_due(struct dispatcher *dispatcher)
{
    int64_t monotonic_ms = clock_monotonic_ms();
    bool write = batch_due(dispatcher, monotonic_ms);
    bool want_claim = false;
    bool refresh = false;
    size_t slots = slots_after_batch(dispatcher);

    if (work_state(dispatcher) != WORK_IDLE)
        return;

    /* With every slot running, a notification stays pending until a slot frees. */
    if (slots > 0) {
        bool notified = atomic_exchange(&dispatcher->notified, false);

        want_claim = write || notified || dispatcher->more_ready ||
                     next_claim_ms(dispatcher) <= clock_now_ms();
        /* While transfers run, their ends wake the loop, so the due time matters when idle. */
        refresh = (dispatcher->next_due_stale && !want_claim && dispatcher->running == 0 &&
                   dispatcher->batch_count == 0) ||
                  monotonic_ms - dispatcher->next_due_checked_ms >= IDLE_CAP_MS;
    }
    if (write || want_claim || refresh)
        submit_work(dispatcher, want_claim ? slots : 0, refresh);
}

/*
 * Returns how long to wait for transfers: until the next claim, the batch's hand-over or the
 * next idle check, whichever is first. While the store thread works, its reply wakes the
 * loop. curl_multi_poll shortens the wait further to curl's own timeout.
 */
static int poll_timeout_ms(struct dispatcher *dispatcher)
{
    int64_t monotonic_ms = clock_monotonic_ms();
    int64_t timeout_ms = IDLE_CAP_MS - (monotonic_ms - dispatcher->next_due_checked_ms);

    if (work_state(dispatcher) != WORK_IDLE)
        return IDLE_CAP_MS;
    if (dispatcher->batch_count > 0) {
        int64_t until_write_ms = dispatcher->batch_started_ms + FLUSH_MS - monotonic_ms;

        if (until_write_ms < timeout_ms)
            timeout_ms = until_write_ms;
    }
    if (slots_after_batch(dispatcher) == 0 && dispatcher->batch_count == 0)
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

static void wait_for_work(struct dispatcher *dispatcher)
{
    pthread_mutex_lock(&dispatcher->work_lock);
    while (dispatcher->work_state == WORK_SUBMITTED)
        pthread_cond_wait(&dispatcher->work_changed, &dispatcher->work_lock);
    pthread_mutex_unlock(&dispatcher->work_lock);
}

/*
 * Ends the store thread's work on stop: its claims are released, since no attempt starts any
 * more, and results already in hand are written, so a clean stop resends nothing that ended.
 */
static void drain_work(struct dispatcher *dispatcher)
{
    wait_for_work(dispatcher);
    take_work(dispatcher, false);
    if (dispatcher->batch_count == 0)
        return;
    submit_work(dispatcher, 0, false);
    wait_for_work(dispatcher);
    take_work(dispatcher, false);
}

static void *transfer_main(void *arg)
{
    struct dispatcher *dispatcher = arg;

    while (!atomic_load(&dispatcher->stopping)) {
        take_work(dispatcher, true);
        submit_work_due(dispatcher);
        wait_for_transfers(dispatcher);
        collect_finished(dispatcher);
    }
    drain_work(dispatcher);
    return NULL;
}

/* ---- Start and stop ---- */

static void stop_store_thread(struct dispatcher *dispatcher)
{
    if (!dispatcher->store_thread_started)
        return;
    pthread_mutex_lock(&dispatcher->work_lock);
    dispatcher->store_exit = true;
    pthread_cond_broadcast(&dispatcher->work_changed);
    pthread_mutex_unlock(&dispatcher->work_lock);
    pthread_join(dispatcher->store_thread, NULL);
    dispatcher->store_thread_started = false;
}

static void dispatcher_free(struct dispatcher *dispatcher)
{
    int abandoned = dispatcher->running;

    stop_store_thread(dispatcher);
    while (dispatcher->running_runs != NULL) {
        struct attempt_run *run = dispatcher->running_runs;

        running_unlink(dispatcher, run);
        run_destroy(run);
    }
    if (abandoned > 0)
        log_info(MODULE, "abandoned %d attempts in flight; their leases will expire", abandoned);
    for (size_t i = 0; dispatcher->slots.entries != NULL && i < dispatcher->slots.capacity; i++) {
        struct attempt_run *run = dispatcher->slots.entries[i].queue_head;

        while (run != NULL) {
            struct attempt_run *next = run->next;

            run_destroy(run);
            run = next;
        }
    }
    for (size_t i = 0; i < dispatcher->batch_count; i++)
        run_destroy(dispatcher->batch[i]);
    while (dispatcher->idle_runs != NULL) {
        struct attempt_run *run = dispatcher->idle_runs;

        dispatcher->idle_runs = run->next;
        run_destroy(run);
    }

    if (dispatcher->multi != NULL)
        curl_multi_cleanup(dispatcher->multi);
    if (dispatcher->store != NULL)
        store_close(dispatcher->store);
    if (dispatcher->curl_ready)
        curl_global_cleanup();
    EVP_MAC_CTX_free(dispatcher->mac);
    free(dispatcher->mac_key);
    free(dispatcher->slots.entries);
    free(dispatcher->batch);
    free(dispatcher->work.batch);
    free(dispatcher->work.loads);
    free(dispatcher->work.outcomes);
    free(dispatcher->work.results);
    pthread_cond_destroy(&dispatcher->work_changed);
    pthread_mutex_destroy(&dispatcher->work_lock);
    for (size_t i = 0; i < dispatcher->signing_change_count; i++)
        free(dispatcher->signing_changes[i].secret);
    free(dispatcher->signing_changes);
    pthread_mutex_destroy(&dispatcher->signing_lock);
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
    if (options->max_in_flight_per_endpoint < 0)
        return bh_error_set(err, BH_ERR_INVALID, "max_in_flight_per_endpoint",
                            "max_in_flight_per_endpoint is %d; it must be 0 (no own cap) or more",
                            options->max_in_flight_per_endpoint);
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

/* Opens the store thread's connection; its commits skip the disk sync. */
static int open_store(struct dispatcher *dispatcher, struct bh_error *err)
{
    struct bh_error sync_err;

    dispatcher->store = store_open(dispatcher->store_location, err);
    if (dispatcher->store == NULL)
        return err->status != 0 ? err->status : BH_ERR_STORE;
    bh_error_clear(&sync_err);
    if (store_set_sync_commits(dispatcher->store, false, &sync_err) != 0)
        log_warn(MODULE, "commits of attempt results stay synced to disk error=\"%s\"",
                 sync_err.message);
    return 0;
}

static int start_threads(struct dispatcher *dispatcher, struct bh_error *err)
{
    int result = pthread_create(&dispatcher->store_thread, NULL, store_main, dispatcher);

    if (result != 0)
        return bh_error_set(err, BH_ERR_INTERNAL, "", "could not start the store thread: %s",
                            strerror(result));
    dispatcher->store_thread_started = true;
    /* Thread names show in top -H and perf; Linux allows 15 characters. */
    pthread_setname_np(dispatcher->store_thread, "bh-results");

    result = pthread_create(&dispatcher->thread, NULL, transfer_main, dispatcher);
    if (result != 0)
        return bh_error_set(err, BH_ERR_INTERNAL, "", "could not start the transfer thread: %s",
                            strerror(result));
    dispatcher->thread_started = true;
    pthread_setname_np(dispatcher->thread, "bh-transfers");
    return 0;
}

struct dispatcher *dispatcher_start(const struct dispatcher_options *options, struct bh_error *err)
{
    struct dispatcher *dispatcher;
    size_t slots;

    if (validate_options(options, err) != 0)
        return NULL;

    slots = (size_t)options->max_in_flight;
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
    pthread_mutex_init(&dispatcher->work_lock, NULL);
    pthread_mutex_init(&dispatcher->signing_lock, NULL);
    pthread_cond_init(&dispatcher->work_changed, NULL);
    dispatcher->work_state = WORK_IDLE;
    make_lease_owner(dispatcher->owner);
    slot_table_init(&dispatcher->slots, options->max_in_flight);
    dispatcher->batch = xcalloc(slots, sizeof(*dispatcher->batch));
    dispatcher->work.batch = xcalloc(slots, sizeof(*dispatcher->work.batch));
    dispatcher->work.loads = xcalloc(slots, sizeof(*dispatcher->work.loads));
    dispatcher->work.outcomes = xcalloc(slots, sizeof(*dispatcher->work.outcomes));
    dispatcher->work.results = xcalloc(slots, sizeof(*dispatcher->work.results));
    open_mac(dispatcher);

    if (open_store(dispatcher, err) != 0 || open_multi(dispatcher, err) != 0 ||
        start_threads(dispatcher, err) != 0)
        goto fail;
    log_info(MODULE, "started owner=%s max_in_flight=%d max_in_flight_per_endpoint=%zu",
             dispatcher->owner, options->max_in_flight, per_endpoint_cap(dispatcher));
    return dispatcher;

fail:
    dispatcher_free(dispatcher);
    return NULL;
}

void dispatcher_signing_changed(struct dispatcher *dispatcher, const char *integration_id,
                                bool signing, const char *secret)
{
    /* A claim older than this has no job left: its lease has ended and it was dropped. */
    int64_t oldest_ms = clock_now_ms() - 2 * (TIMEOUT_MS_MAX + dispatcher->options.lease_margin_ms);
    struct signing_change *change = NULL;
    size_t kept = 0;

    pthread_mutex_lock(&dispatcher->signing_lock);
    for (size_t i = 0; i < dispatcher->signing_change_count; i++) {
        struct signing_change *entry = &dispatcher->signing_changes[i];

        if (entry->changed_ms < oldest_ms || strcmp(entry->integration_id, integration_id) == 0) {
            free(entry->secret);
            continue;
        }
        dispatcher->signing_changes[kept++] = *entry;
    }
    dispatcher->signing_change_count = kept;
    if (kept == dispatcher->signing_change_capacity) {
        dispatcher->signing_change_capacity = kept ? 2 * kept : 8;
        dispatcher->signing_changes =
            xrealloc(dispatcher->signing_changes,
                     dispatcher->signing_change_capacity * sizeof(*dispatcher->signing_changes));
    }
    change = &dispatcher->signing_changes[dispatcher->signing_change_count++];
    snprintf(change->integration_id, sizeof(change->integration_id), "%s", integration_id);
    change->signing = signing;
    change->secret = signing && secret ? xstrdup(secret) : NULL;
    change->changed_ms = clock_now_ms();
    atomic_store(&dispatcher->signing_changes_live, dispatcher->signing_change_count);
    pthread_mutex_unlock(&dispatcher->signing_lock);
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
    if (dispatcher->thread_started)
        pthread_join(dispatcher->thread, NULL);
    log_info(MODULE, "stopped owner=%s", dispatcher->owner);
    dispatcher_free(dispatcher);
}
