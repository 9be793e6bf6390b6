/*
 * loadgen: an HTTP load generator for bearhook's POST /v1/events, on the libcurl multi
 * interface with keep-alive connections.
 *
 * It keeps up to --connections requests in flight, started either as fast as possible or at a
 * steady --rate per second, until --duration seconds have passed or --count requests were
 * started. Each body is a ~1 kB event whose lead id is "<prefix>-<n>", so every request
 * upserts a new lead. With --records FILE it writes, for each 202, the time the response
 * arrived (CLOCK_REALTIME, microseconds) and the eventId it returned, one "time event" line each.
 *
 * Its summary on stdout is "key value" lines: started, accepted, errors, late (requests that
 * started over 10 ms after their time in --rate mode), elapsed_s, accepted_per_s, and the
 * 202 latency p50_us, p99_us and max_us.
 *
 * With --status 200 it counts 200 responses as accepted instead, so that it can POST the same
 * bodies to bench/sink and measure what libcurl alone sends, with no bearhook in the way.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define CONNECTIONS_MAX 1024
#define BODY_MAX 2048
#define RESPONSE_MAX 1024
#define EVENT_ID_MAX 63
#define ERRORS_SHOWN 3

/* One event: the lead carries most fields a real platform sends, to make a ~1 kB body. */
static const char body_format[] =
    "{\"type\":\"connection_request_accepted\",\"campaignId\":\"%s\","
    "\"lead\":{\"id\":\"%s-%llu\",\"firstName\":\"Jane\",\"lastName\":\"Smith\","
    "\"email\":\"jane.smith.%llu@example.com\",\"phone\":\"+1-555-0100\","
    "\"profileUrl\":\"https://www.linkedin.com/in/jane-smith-%llu\","
    "\"profileHeadline\":\"VP of Sales at Example Corp | Building revenue teams across EMEA "
    "and North America | Speaker and advisor on sales enablement, pipeline reviews and "
    "outbound playbooks | Previously at two B2B software companies\","
    "\"profileImageUrl\":\"https://media.example.com/profile-displayphoto/jane-smith.jpg\","
    "\"position\":\"VP of Sales\",\"companyName\":\"Example Corp\","
    "\"location\":\"San Francisco Bay Area, California, United States\","
    "\"website\":\"https://www.example.com\","
    "\"education\":\"Stanford University\",\"publicIdentifier\":\"jane-smith-%llu\","
    "\"connectionCount\":500,\"followerCount\":1200,\"isPremium\":true,"
    "\"memberUrn\":\"urn:li:member:%llu\",\"stage\":\"contacted\","
    "\"createdAt\":\"2026-02-13T10:30:00.000Z\"},"
    "\"linkedInAccount\":{\"id\":\"acct-1\",\"name\":\"Sales Team Account\","
    "\"email\":\"sales@example.com\"}}";

struct settings {
    const char *url;
    const char *key;
    const char *campaign;
    const char *lead_prefix;
    const char *records_path;
    int connections;
    double rate;     /* requests per second, or 0 to send as fast as possible */
    double duration; /* seconds, or 0 for no time limit */
    uint64_t count;  /* requests, or 0 for no count limit */
    uint64_t first;  /* number of the first lead */
    long status;     /* the HTTP status of an accepted request: 202, or 200 for bench/sink */
    bool print_body;
};

/* One request slot: an easy handle reused for request after request. */
struct slot {
    CURL *easy;
    bool busy;
    int64_t started_us;
    int64_t responded_us; /* when the last response bytes arrived */
    char body[BODY_MAX];
    char response[RESPONSE_MAX + 1];
    size_t response_len;
};

struct accepted_log {
    int64_t *times_us;
    char (*event_ids)[EVENT_ID_MAX + 1];
    int64_t *latencies_us;
    size_t count;
    size_t capacity;
};

struct run {
    struct settings settings;
    CURLM *multi;
    struct curl_slist *headers;
    struct slot *slots;
    int in_flight;
    uint64_t started;
    uint64_t errors;
    uint64_t late;
    int64_t begin_us;
    struct accepted_log log;
};

static int64_t now_us(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

static void *xrealloc(void *pointer, size_t size)
{
    void *grown = realloc(pointer, size);

    if (!grown) {
        fprintf(stderr, "loadgen: out of memory (%zu bytes)\n", size);
        exit(1);
    }
    return grown;
}

static int format_body(char *out, const struct settings *settings, uint64_t number)
{
    unsigned long long n = (unsigned long long)number;

    return snprintf(out, BODY_MAX, body_format, settings->campaign, settings->lead_prefix, n, n, n,
                    n, n);
}

static void accepted_log_add(struct accepted_log *log, int64_t time_us, const char *event_id,
                             int64_t latency_us)
{
    if (log->count == log->capacity) {
        log->capacity = log->capacity ? log->capacity * 2 : 65536;
        log->times_us = xrealloc(log->times_us, log->capacity * sizeof(*log->times_us));
        log->event_ids = xrealloc(log->event_ids, log->capacity * sizeof(*log->event_ids));
        log->latencies_us = xrealloc(log->latencies_us, log->capacity * sizeof(*log->latencies_us));
    }
    log->times_us[log->count] = time_us;
    snprintf(log->event_ids[log->count], EVENT_ID_MAX + 1, "%s", event_id);
    log->latencies_us[log->count] = latency_us;
    log->count++;
}

/* Keeps the first RESPONSE_MAX bytes of the response and the time its last bytes arrived. */
static size_t keep_response(char *data, size_t size, size_t count, void *userdata)
{
    struct slot *slot = userdata;
    size_t len = size * count;
    size_t room = RESPONSE_MAX - slot->response_len;
    size_t kept = len < room ? len : room;

    memcpy(slot->response + slot->response_len, data, kept);
    slot->response_len += kept;
    slot->response[slot->response_len] = '\0';
    slot->responded_us = now_us();
    return len;
}

static void start_request(struct run *run, struct slot *slot)
{
    const struct settings *settings = &run->settings;
    int len = format_body(slot->body, settings, settings->first + run->started);

    curl_easy_setopt(slot->easy, CURLOPT_POSTFIELDSIZE, (long)len);
    slot->response_len = 0;
    slot->response[0] = '\0';
    slot->started_us = now_us();
    slot->responded_us = 0;
    slot->busy = true;
    curl_multi_add_handle(run->multi, slot->easy);
    run->started++;
    run->in_flight++;
}

static int slot_open(struct run *run, struct slot *slot)
{
    slot->easy = curl_easy_init();
    if (!slot->easy)
        return -1;
    curl_easy_setopt(slot->easy, CURLOPT_URL, run->settings.url);
    curl_easy_setopt(slot->easy, CURLOPT_HTTPHEADER, run->headers);
    curl_easy_setopt(slot->easy, CURLOPT_POSTFIELDS, slot->body);
    curl_easy_setopt(slot->easy, CURLOPT_WRITEFUNCTION, keep_response);
    curl_easy_setopt(slot->easy, CURLOPT_WRITEDATA, slot);
    curl_easy_setopt(slot->easy, CURLOPT_PRIVATE, slot);
    curl_easy_setopt(slot->easy, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(slot->easy, CURLOPT_NOSIGNAL, 1L);
    return 0;
}

/* Extracts the "eventId" string of a compact JSON response, or an empty string. */
static void find_event_id(const char *response, char out[EVENT_ID_MAX + 1])
{
    static const char key[] = "\"eventId\":\"";
    const char *found = strstr(response, key);
    size_t len = 0;

    out[0] = '\0';
    if (!found)
        return;
    found += sizeof(key) - 1;
    while (found[len] && found[len] != '"' && len < EVENT_ID_MAX)
        len++;
    memcpy(out, found, len);
    out[len] = '\0';
}

static void finish_request(struct run *run, CURL *easy, CURLcode result)
{
    struct slot *slot = NULL;
    char event_id[EVENT_ID_MAX + 1];
    long status = 0;

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&slot);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(run->multi, easy);
    slot->busy = false;
    run->in_flight--;

    if (result == CURLE_OK && status == run->settings.status) {
        int64_t responded_us = slot->responded_us ? slot->responded_us : now_us();

        find_event_id(slot->response, event_id);
        accepted_log_add(&run->log, responded_us, event_id, responded_us - slot->started_us);
        return;
    }
    if (run->errors++ < ERRORS_SHOWN)
        fprintf(stderr, "loadgen: request failed: %s, HTTP %ld: %.200s\n",
                curl_easy_strerror(result), status, slot->response);
}

/* Ends every finished request and returns how many there were. */
static int collect_finished(struct run *run)
{
    CURLMsg *message;
    int remaining;
    int finished = 0;

    while ((message = curl_multi_info_read(run->multi, &remaining))) {
        if (message->msg == CURLMSG_DONE) {
            finish_request(run, message->easy_handle, message->data.result);
            finished++;
        }
    }
    return finished;
}

static bool may_start_more(const struct run *run, int64_t now)
{
    const struct settings *settings = &run->settings;

    if (settings->count && run->started >= settings->count)
        return false;
    if (settings->duration > 0 && now - run->begin_us >= (int64_t)(settings->duration * 1e6))
        return false;
    return true;
}

/* Returns when the next request is due in --rate mode, in microseconds since the start. */
static int64_t next_due_us(const struct run *run)
{
    return (int64_t)((double)run->started * 1e6 / run->settings.rate);
}

static struct slot *free_slot(struct run *run)
{
    for (int i = 0; i < run->settings.connections; i++) {
        if (!run->slots[i].busy)
            return &run->slots[i];
    }
    return NULL;
}

/* Starts every request that is due and has a free slot; returns the poll timeout in ms. */
static int start_due(struct run *run)
{
    int64_t now = now_us();

    while (run->in_flight < run->settings.connections && may_start_more(run, now)) {
        if (run->settings.rate > 0) {
            int64_t due = next_due_us(run);

            /* Rounded up: a wait under 1 ms rounded down to 0 would spin on poll. */
            if (due > now - run->begin_us)
                return (int)((due - (now - run->begin_us) + 999) / 1000);
            if (now - run->begin_us - due > 10000)
                run->late++;
        }
        start_request(run, free_slot(run));
    }
    return 100;
}

static int drive(struct run *run)
{
    int running = 0;

    run->begin_us = now_us();
    for (;;) {
        int timeout_ms = start_due(run);
        int finished = 0;
        CURLMcode code;

        if (run->in_flight == 0 && !may_start_more(run, now_us()))
            return 0;
        code = curl_multi_perform(run->multi, &running);
        if (code == CURLM_OK)
            finished = collect_finished(run);
        if (run->errors > 1000 && run->log.count == 0) {
            fprintf(stderr, "loadgen: stopping after %llu errors and no accepted request\n",
                    (unsigned long long)run->errors);
            return -1;
        }
        /* Slots that responses freed take their next requests now, not after the next poll. */
        if (code == CURLM_OK && finished == 0)
            code = curl_multi_poll(run->multi, NULL, 0, timeout_ms, NULL);
        if (code != CURLM_OK) {
            fprintf(stderr, "loadgen: %s\n", curl_multi_strerror(code));
            return -1;
        }
    }
}

static int compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static int64_t percentile(const int64_t *sorted, size_t count, double fraction)
{
    size_t index = (size_t)(fraction * (double)(count - 1) + 0.5);

    return count ? sorted[index] : 0;
}

static void print_summary(struct run *run, int64_t elapsed_us)
{
    struct accepted_log *log = &run->log;
    double elapsed_s = (double)elapsed_us / 1e6;

    qsort(log->latencies_us, log->count, sizeof(*log->latencies_us), compare_int64);
    printf("started %llu\naccepted %zu\nerrors %llu\nlate %llu\n", (unsigned long long)run->started,
           log->count, (unsigned long long)run->errors, (unsigned long long)run->late);
    printf("elapsed_s %.3f\naccepted_per_s %.1f\n", elapsed_s,
           elapsed_s > 0 ? (double)log->count / elapsed_s : 0.0);
    printf("p50_us %lld\np99_us %lld\nmax_us %lld\n",
           (long long)percentile(log->latencies_us, log->count, 0.50),
           (long long)percentile(log->latencies_us, log->count, 0.99),
           (long long)(log->count ? log->latencies_us[log->count - 1] : 0));
}

static int write_records(const struct accepted_log *log, const char *path)
{
    FILE *file = fopen(path, "w");

    if (!file) {
        fprintf(stderr, "loadgen: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < log->count; i++)
        fprintf(file, "%lld %s\n", (long long)log->times_us[i],
                log->event_ids[i][0] ? log->event_ids[i] : "-");
    return fclose(file) == 0 ? 0 : -1;
}

static void usage(void)
{
    fprintf(stderr,
            "Usage: loadgen --url URL --key API_KEY --campaign ID [--connections N]\n"
            "               [--rate PER_SECOND] [--duration SECONDS] [--count N]\n"
            "               [--lead-prefix TEXT] [--first N] [--records FILE] [--status 200]\n"
            "       loadgen --print-body [--campaign ID]\n"
            "Stops at --duration or --count, whichever comes first; one of them is required.\n");
    exit(2);
}

static bool parse_option(struct settings *settings, const char *name, const char *value)
{
    if (strcmp(name, "--url") == 0)
        settings->url = value;
    else if (strcmp(name, "--key") == 0)
        settings->key = value;
    else if (strcmp(name, "--campaign") == 0)
        settings->campaign = value;
    else if (strcmp(name, "--lead-prefix") == 0)
        settings->lead_prefix = value;
    else if (strcmp(name, "--records") == 0)
        settings->records_path = value;
    else if (strcmp(name, "--connections") == 0)
        settings->connections = atoi(value);
    else if (strcmp(name, "--rate") == 0)
        settings->rate = atof(value);
    else if (strcmp(name, "--duration") == 0)
        settings->duration = atof(value);
    else if (strcmp(name, "--count") == 0)
        settings->count = strtoull(value, NULL, 10);
    else if (strcmp(name, "--first") == 0)
        settings->first = strtoull(value, NULL, 10);
    else if (strcmp(name, "--status") == 0)
        settings->status = strtol(value, NULL, 10);
    else
        return false;
    return true;
}

static void parse_arguments(struct settings *settings, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--print-body") == 0)
            settings->print_body = true;
        else if (i + 1 >= argc || !parse_option(settings, argv[i], argv[i + 1]))
            usage();
        else
            i++;
    }
    if (settings->print_body)
        return;
    if (!settings->url || !settings->key || settings->connections < 1 ||
        settings->connections > CONNECTIONS_MAX || settings->rate < 0 ||
        (settings->status != 200 && settings->status != 202) ||
        (settings->duration <= 0 && settings->count == 0))
        usage();
}

static int run_open(struct run *run)
{
    char *authorization = NULL;

    if (asprintf(&authorization, "Authorization: Bearer %s", run->settings.key) < 0)
        return -1;
    run->headers = curl_slist_append(NULL, authorization);
    run->headers = curl_slist_append(run->headers, "Content-Type: application/json");
    run->headers = curl_slist_append(run->headers, "Expect:"); /* no 100-continue round trip */
    free(authorization);

    run->multi = curl_multi_init();
    if (!run->multi || !run->headers)
        return -1;
    curl_multi_setopt(run->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)run->settings.connections);
    curl_multi_setopt(run->multi, CURLMOPT_MAXCONNECTS, (long)run->settings.connections);
    run->slots = calloc((size_t)run->settings.connections, sizeof(*run->slots));
    if (!run->slots)
        return -1;
    for (int i = 0; i < run->settings.connections; i++) {
        if (slot_open(run, &run->slots[i]) != 0)
            return -1;
    }
    return 0;
}

static void run_close(struct run *run)
{
    for (int i = 0; run->slots && i < run->settings.connections; i++) {
        if (run->slots[i].busy)
            curl_multi_remove_handle(run->multi, run->slots[i].easy);
        curl_easy_cleanup(run->slots[i].easy);
    }
    free(run->slots);
    curl_multi_cleanup(run->multi);
    curl_slist_free_all(run->headers);
    free(run->log.times_us);
    free(run->log.event_ids);
    free(run->log.latencies_us);
}

int main(int argc, char **argv)
{
    struct run run;
    int result;

    memset(&run, 0, sizeof(run));
    run.settings.campaign = "bench";
    run.settings.lead_prefix = "lead";
    run.settings.connections = 16;
    run.settings.status = 202;
    parse_arguments(&run.settings, argc, argv);
    if (run.settings.print_body) {
        char body[BODY_MAX];

        format_body(body, &run.settings, 0);
        fputs(body, stdout);
        return 0;
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    result = run_open(&run);
    if (result != 0) {
        fprintf(stderr, "loadgen: cannot set up libcurl\n");
        goto release;
    }
    result = drive(&run);
    print_summary(&run, now_us() - run.begin_us);
    if (run.settings.records_path && write_records(&run.log, run.settings.records_path) != 0)
        result = -1;

release:
    run_close(&run);
    curl_global_cleanup();
    return result == 0 ? 0 : 1;
}
