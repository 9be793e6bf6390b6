/*
 * bearhook serve: the REST API and the dispatcher in one process.
 *
 * Start-up order: options, target policy, store (migrations), dispatcher, ingest, HTTP server,
 * and the first user once the port is bound; then wait for SIGINT or SIGTERM and stop in
 * reverse order. With SQLite, one dispatcher at a time may use a database file: it holds an
 * exclusive lock on "<database>.dispatcher.lock", and because no other dispatcher can hold a
 * lease, it ends every lease at start, so work that a killed process had claimed is sent again
 * at once.
 *
 * The process that delivers also runs the retention purge on a thread and store connection
 * of its own: finished deliveries with their attempts, and idempotency keys, older than the
 * retention, in small transactions with a pause between them so claims and results are not
 * held up behind a long delete.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/ingest.h"
#include "api/server.h"
#include "cli/commands.h"
#include "cli/config.h"
#include "cli/setup.h"
#include "core/clock.h"
#include "delivery/dispatcher.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/metrics.h"

struct serve_settings {
    char *listen;
    long long port;
    char *db;
    char *role;
    long long api_threads;
    bool allow_http;
    char *allow_networks;
    char *tls_ca_file;
    long long max_in_flight;
    long long max_in_flight_per_endpoint;
    long long retry_base_ms;
    long long retry_max_ms;
    long long retry_after_max_ms;
    long long lease_margin_ms;
    long long max_request_bytes;
    char *log_level;
    long long retention_days;
    long long retention_ms;
    long long retention_interval_ms;
};

#define FIELD(name) offsetof(struct serve_settings, name)

static const struct option_spec serve_options[] = {
    {"listen", OPTION_STRING, FIELD(listen), "127.0.0.1", 0, 0, NULL,
     "Address the REST API listens on."},
    {"port", OPTION_INT, FIELD(port), "8080", 0, 65535, NULL,
     "TCP port of the REST API; 0 picks a free port."},
    {"db", OPTION_STRING, FIELD(db), "var/bearhook.db", 0, 0, NULL,
     "Database: a SQLite file path (created on first start)."},
    {"role", OPTION_STRING, FIELD(role), "all", 0, 0, NULL,
     "What this process runs: all, api (no deliveries) or worker (no REST API)."},
    {"api-threads", OPTION_INT, FIELD(api_threads), "4", 1, 256, "threads",
     "Threads serving API requests."},
    {"allow-http", OPTION_BOOL, FIELD(allow_http), "false", 0, 0, NULL,
     "Allow plain http:// targets; for local development and tests only."},
    {"allow-networks", OPTION_STRING, FIELD(allow_networks), "", 0, 0, "comma-separated CIDR",
     "Special-purpose networks that targets may use anyway, e.g. 127.0.0.0/8,::1/128 for "
     "local development."},
    {"tls-ca-file", OPTION_STRING, FIELD(tls_ca_file), "", 0, 0, "PEM file",
     "CA certificates to trust for HTTPS targets instead of the system's."},
    {"max-in-flight", OPTION_INT, FIELD(max_in_flight), "256", 1, 10000, "attempts",
     "Delivery attempts running at once."},
    {"max-in-flight-per-endpoint", OPTION_INT, FIELD(max_in_flight_per_endpoint), "64", 1, 10000,
     "attempts",
     "Delivery attempts running at once to one integration, so a slow endpoint cannot take "
     "every slot."},
    {"retry-base-ms", OPTION_INT, FIELD(retry_base_ms), "30000", 1, 3600000, "ms",
     "Wait after the first failed attempt; each later wait is 4 times longer."},
    {"retry-max-ms", OPTION_INT, FIELD(retry_max_ms), "14400000", 1, 86400000, "ms",
     "Longest wait between two attempts."},
    {"retry-after-max-ms", OPTION_INT, FIELD(retry_after_max_ms), "3600000", 0, 86400000, "ms",
     "Longest Retry-After of a 429 or 503 answer that is honoured."},
    {"lease-margin-ms", OPTION_INT, FIELD(lease_margin_ms), "30000", 1000, 3600000, "ms",
     "Time past the longest attempt before claimed work may be taken over."},
    {"max-request-bytes", OPTION_INT, FIELD(max_request_bytes), "1048576", 1024, 67108864, "bytes",
     "Largest request body the API accepts."},
    {"log-level", OPTION_STRING, FIELD(log_level), "info", 0, 0, NULL,
     "Lowest level logged: debug, info, warn or error."},
    {"retention-days", OPTION_INT, FIELD(retention_days), "30", 0, 36500, "days",
     "Age after which finished deliveries, their attempts and client eventIds are deleted; 0 "
     "keeps them forever. Pending deliveries are never deleted."},
    {"retention-ms", OPTION_INT, FIELD(retention_ms), "0", 0, 3153600000000LL, "ms",
     "For tests: the retention in milliseconds, in place of --retention-days when above 0."},
    {"retention-interval-ms", OPTION_INT, FIELD(retention_interval_ms), "60000", 10, 86400000, "ms",
     "Time between two retention purges."},
};

#define SERVE_OPTION_COUNT (sizeof(serve_options) / sizeof(serve_options[0]))

static const char serve_usage[] =
    "Usage: bearhook serve [OPTIONS]\n\n"
    "Runs the REST API and the delivery workers. On first start with no user, creates the\n"
    "user \"admin\", prints its API key once and writes it to a file beside the database.";

/* Holds the lock file for as long as the process runs; the kernel drops it at exit. */
static int lock_dispatcher(const char *db_path, struct bh_error *err)
{
    char *lock_path = xasprintf("%s.dispatcher.lock", db_path);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int result = BH_OK;

    if (fd < 0)
        result =
            bh_error_set(err, BH_ERR_IO, "db", "cannot open %s: %s", lock_path, strerror(errno));
    else if (flock(fd, LOCK_EX | LOCK_NB) != 0)
        result = bh_error_set(err, BH_ERR_CONFLICT, "db",
                              "another bearhook process delivers from %s; run one worker per "
                              "SQLite database",
                              db_path);
    if (result != BH_OK && fd >= 0)
        close(fd);
    free(lock_path);
    return result;
}

static int build_policy(const struct serve_settings *settings, struct target_policy *policy,
                        struct bh_error *err)
{
    memset(policy, 0, sizeof(*policy));
    policy->allow_http = settings->allow_http;
    return cidr_list_parse(settings->allow_networks, &policy->allowed_networks, err);
}

static void wait_for_signal(void)
{
    sigset_t signals;
    int received = 0;

    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigwait(&signals, &received);
    log_info("serve", "stopping on signal %d", received);
}

static void block_signals(void)
{
    sigset_t signals;

    /* Every thread started after this inherits the mask, so only sigwait receives them. */
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
}

#define PURGE_BATCH 500          /* rows per purge transaction */
#define PURGE_PAUSE_MS 20        /* between two purge transactions */
#define PURGE_BATCHES_MAX 100000 /* per pass; bounds a pass at 50 million rows */

struct retention {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC */
    bool stopping;
    struct store *store;
    int64_t keep_ms;     /* finished rows older than this are deleted */
    int64_t interval_ms; /* between passes */
};

/* Sleeps up to ms. Returns false when the thread must stop. */
static bool retention_sleep(struct retention *retention, int64_t ms)
{
    struct timespec until;
    bool stopping;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&retention->lock);
    while (!retention->stopping &&
           pthread_cond_timedwait(&retention->wake, &retention->lock, &until) == 0)
        ;
    stopping = retention->stopping;
    pthread_mutex_unlock(&retention->lock);
    return !stopping;
}

/* One purge transaction of finished deliveries; false once nothing older is left or on error. */
static bool purge_deliveries(struct retention *retention, int64_t before_ms, size_t *deliveries,
                             size_t *attempts)
{
    struct bh_error err;
    size_t purged = 0, purged_attempts = 0;
    int result;

    bh_error_clear(&err);
    result = store_begin(retention->store, &err);
    if (result == BH_OK)
        result = store_purge_finished(retention->store, before_ms, PURGE_BATCH, &purged,
                                      &purged_attempts, &err);
    if (result == BH_OK)
        result = store_commit(retention->store, &err);
    if (result != BH_OK) {
        store_rollback(retention->store);
        log_warn("retention", "purge of finished deliveries failed: %s", err.message);
        return false;
    }
    *deliveries += purged;
    *attempts += purged_attempts;
    metrics_add(METRIC_DELIVERIES_PURGED, purged);
    return purged == PURGE_BATCH;
}

/* One purge transaction of idempotency keys; false once nothing older is left or on error. */
static bool purge_keys(struct retention *retention, int64_t before_ms, size_t *keys)
{
    struct bh_error err;
    size_t purged = 0;
    int result;

    bh_error_clear(&err);
    result = store_begin(retention->store, &err);
    if (result == BH_OK)
        result = store_purge_idempotency(retention->store, before_ms, PURGE_BATCH, &purged, &err);
    if (result == BH_OK)
        result = store_commit(retention->store, &err);
    if (result != BH_OK) {
        store_rollback(retention->store);
        log_warn("retention", "purge of idempotency keys failed: %s", err.message);
        return false;
    }
    *keys += purged;
    return purged == PURGE_BATCH;
}

/* A pass logs at info when it deleted anything, and at debug otherwise. */
static void retention_pass(struct retention *retention)
{
    int64_t before_ms = clock_now_ms() - retention->keep_ms;
    size_t deliveries = 0, attempts = 0, keys = 0;
    bool more = true;

    for (int batch = 0; more && batch < PURGE_BATCHES_MAX; batch++) {
        more = purge_deliveries(retention, before_ms, &deliveries, &attempts);
        if (more)
            more = retention_sleep(retention, PURGE_PAUSE_MS);
    }
    more = retention_sleep(retention, 0); /* false once the thread must stop */
    for (int batch = 0; more && batch < PURGE_BATCHES_MAX; batch++) {
        more = purge_keys(retention, before_ms, &keys);
        if (more)
            more = retention_sleep(retention, PURGE_PAUSE_MS);
    }
    if (deliveries + attempts + keys > 0)
        log_info("retention",
                 "purged deliveries=%zu attempts=%zu idempotency_keys=%zu "
                 "older_than_ms=%lld",
                 deliveries, attempts, keys, (long long)retention->keep_ms);
    else
        log_debug("retention", "purged nothing older_than_ms=%lld", (long long)retention->keep_ms);
}

static void *run_retention(void *arg)
{
    struct retention *retention = arg;

    while (retention_sleep(retention, retention->interval_ms))
        retention_pass(retention);
    return NULL;
}

static void retention_stop(struct retention *retention)
{
    if (!retention)
        return;
    pthread_mutex_lock(&retention->lock);
    retention->stopping = true;
    pthread_cond_signal(&retention->wake);
    pthread_mutex_unlock(&retention->lock);
    pthread_join(retention->thread, NULL);
    store_close(retention->store);
    pthread_mutex_destroy(&retention->lock);
    pthread_cond_destroy(&retention->wake);
    free(retention);
}

/* Returns NULL with err unset when retention is off. */
static struct retention *retention_start(const struct serve_settings *settings,
                                         struct bh_error *err)
{
    struct retention *retention;
    pthread_condattr_t attributes;

    if (settings->retention_ms == 0 && settings->retention_days == 0)
        return NULL;
    retention = xcalloc(1, sizeof(*retention));
    retention->keep_ms =
        settings->retention_ms > 0 ? settings->retention_ms : settings->retention_days * 86400000LL;
    retention->interval_ms = settings->retention_interval_ms;
    retention->store = store_open(settings->db, err);
    if (!retention->store) {
        free(retention);
        return NULL;
    }
    /* A purge undone by a power loss runs again on the next pass. */
    store_set_sync_commits(retention->store, false, NULL);
    pthread_mutex_init(&retention->lock, NULL);
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&retention->wake, &attributes);
    pthread_condattr_destroy(&attributes);
    if (pthread_create(&retention->thread, NULL, run_retention, retention) != 0) {
        store_close(retention->store);
        pthread_mutex_destroy(&retention->lock);
        pthread_cond_destroy(&retention->wake);
        free(retention);
        bh_error_set(err, BH_ERR_INTERNAL, "", "could not start the retention thread");
        return NULL;
    }
    pthread_setname_np(retention->thread, "bh-retention");
    return retention;
}

static int check_role(const char *role, bool *run_api, bool *run_worker, struct bh_error *err)
{
    *run_api = strcmp(role, "all") == 0 || strcmp(role, "api") == 0;
    *run_worker = strcmp(role, "all") == 0 || strcmp(role, "worker") == 0;
    if (!*run_api && !*run_worker)
        return bh_error_set(err, BH_ERR_INVALID, "role",
                            "invalid --role \"%s\"; use all, api or worker", role);
    return BH_OK;
}

static int run(struct serve_settings *settings, struct bh_error *err)
{
    struct api_context api;
    struct target_policy policy;
    struct dispatcher *dispatcher = NULL;
    struct retention *retention = NULL;
    struct api_server *server = NULL;
    bool run_api, run_worker;
    int result;

    memset(&api, 0, sizeof(api));
    memset(&policy, 0, sizeof(policy));
    result = check_role(settings->role, &run_api, &run_worker, err);
    if (result != BH_OK)
        return result;
    result = build_policy(settings, &policy, err);
    if (result != BH_OK)
        return result;

    api.store = store_open(settings->db, err);
    if (!api.store) {
        result = err->status;
        goto release;
    }
    pthread_mutex_init(&api.store_lock, NULL);
    api.targets = &policy;
    api.max_body_bytes = (size_t)settings->max_request_bytes;

    if (run_worker) {
        struct dispatcher_options options = {
            .store_location = settings->db,
            .max_in_flight = (int)settings->max_in_flight,
            .max_in_flight_per_endpoint = (int)settings->max_in_flight_per_endpoint,
            .retry = {settings->retry_base_ms, settings->retry_max_ms,
                      settings->retry_after_max_ms},
            .targets = &policy,
            .ca_file = settings->tls_ca_file[0] ? settings->tls_ca_file : NULL,
            .lease_margin_ms = settings->lease_margin_ms,
        };

        result = lock_dispatcher(settings->db, err);
        if (result == BH_OK)
            result = store_release_all_leases(api.store, err);
        if (result != BH_OK)
            goto release;
        dispatcher = dispatcher_start(&options, err);
        if (!dispatcher) {
            result = err->status ? err->status : BH_ERR_INTERNAL;
            goto release;
        }
        api.dispatcher = dispatcher;

        bh_error_clear(err);
        retention = retention_start(settings, err);
        if (!retention && err->status != BH_OK) {
            result = err->status;
            goto release;
        }
    }

    if (run_api) {
        api.ingest = ingest_start(settings->db, dispatcher, err);
        if (!api.ingest) {
            result = err->status;
            goto release;
        }
        server = api_server_start(&api, settings->listen, (int)settings->port,
                                  (unsigned int)settings->api_threads, err);
        if (!server) {
            result = err->status;
            goto release;
        }
        /* After the port is bound, so a failed start does not print a key for nothing. */
        result = setup_first_user(api.store, settings->db, err);
        if (result != BH_OK)
            goto release;
        log_info("serve",
                 "listening on http://%s:%d/ role=%s db=%s allow_http=%s "
                 "allow_networks=%s",
                 settings->listen, api_server_port(server), settings->role, settings->db,
                 settings->allow_http ? "true" : "false",
                 settings->allow_networks[0] ? settings->allow_networks : "none");
    } else {
        log_info("serve", "delivering role=%s db=%s", settings->role, settings->db);
    }

    wait_for_signal();

release:
    /* Queued events are committed and their responses sent before the connections close. */
    api_server_quiesce(server);
    ingest_stop(api.ingest);
    api_server_stop(server);
    /* Only now can no request thread reach ingest_submit, which responds 503 while stopped. */
    ingest_free(api.ingest);
    retention_stop(retention);
    if (dispatcher)
        dispatcher_stop(dispatcher);
    if (api.store) {
        store_close(api.store);
        pthread_mutex_destroy(&api.store_lock);
    }
    cidr_list_release(&policy.allowed_networks);
    return result;
}

int cmd_serve(int argc, char **argv)
{
    struct serve_settings settings;
    struct option_args args;
    struct bh_error err;
    int level;
    int result;

    memset(&settings, 0, sizeof(settings));
    bh_error_clear(&err);
    result = options_parse(serve_options, SERVE_OPTION_COUNT, &settings, "BEARHOOK_", argc, argv,
                           &args, &err);
    if (result == BH_OK && args.help) {
        options_print_help(stdout, serve_usage, serve_options, SERVE_OPTION_COUNT, "BEARHOOK_");
        options_release(serve_options, SERVE_OPTION_COUNT, &settings);
        return 0;
    }
    if (result == BH_OK && args.positional_count > 0)
        result = bh_error_set(&err, BH_ERR_INVALID, "", "unexpected argument \"%s\"",
                              args.positional[0]);
    level = result == BH_OK ? log_level_from_name(settings.log_level) : 0;
    if (result == BH_OK && level < 0)
        result = bh_error_set(&err, BH_ERR_INVALID, "log-level",
                              "invalid --log-level \"%s\"; use debug, info, warn or error",
                              settings.log_level);
    if (result != BH_OK) {
        fprintf(stderr, "bearhook serve: %s\n", err.message);
        options_release(serve_options, SERVE_OPTION_COUNT, &settings);
        return EXIT_USAGE;
    }

    log_set_level((enum log_level)level);
    block_signals();
    result = run(&settings, &err);
    if (result != BH_OK)
        log_error("serve", "%s", err.message);
    options_release(serve_options, SERVE_OPTION_COUNT, &settings);
    return result == BH_OK ? 0 : 1;
}
