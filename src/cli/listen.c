/*
 * bearhook listen: a local webhook receiver for people building an integration. It prints each
 * request (headers, body, signature verdict) to stdout and responds with a chosen status after
 * a chosen delay.
 *
 * libmicrohttpd runs one thread per connection, so a --delay-ms wait in one request does not
 * hold up the others. The main thread blocks SIGINT and SIGTERM before the daemon starts (so
 * every daemon thread inherits the mask) and waits for them with sigwait. On a signal it stops
 * accepting connections, wakes the delayed requests through a condition variable, waits a
 * bounded time for the responses to the requests in progress, stops the daemon and prints the
 * summary.
 *
 * The receiver has no authentication and prints everything it receives, so it binds only to
 * loopback addresses.
 */
#include "cli/commands.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "cli/config.h"
#include "core/signature.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/log.h"

#define LOG_MODULE "listen"

/*
 * Body bytes read and thrown away after --max-body-bytes is reached, so that a client that
 * sends its whole body before reading the response still reads the 413. A request that
 * announces more than this gets the 413 at once, and one that sends more is disconnected.
 */
#define DISCARD_MAX_BYTES (16ULL * 1024 * 1024)

/* Seconds a connection may stay idle before libmicrohttpd closes it. */
#define IDLE_TIMEOUT_SECONDS 60

/* On a stop signal, the longest wait for the responses to requests in progress. */
#define DRAIN_TIMEOUT_MS 2000

struct listen_settings {
    long long port; /* -1 until --port is given */
    char *host;
    char *secret; /* empty: signatures are not checked */
    long long status;
    long long delay_ms;
    bool quiet;
    long long max_body_bytes;
    char *save_dir; /* empty: bodies are not saved */
};

static const struct option_spec listen_options[] = {
    {"port", OPTION_INT, offsetof(struct listen_settings, port), NULL, 0, 65535, NULL,
     "TCP port to listen on, required; 0 picks a free port"},
    {"host", OPTION_STRING, offsetof(struct listen_settings, host), "127.0.0.1", 0, 0, NULL,
     "Address to bind: a loopback address (127.0.0.0/8, ::1 or localhost)"},
    {"secret", OPTION_STRING, offsetof(struct listen_settings, secret), NULL, 0, 0, NULL,
     "Signing secret, whsec_ prefix included; signatures are not checked without it"},
    {"status", OPTION_INT, offsetof(struct listen_settings, status), "200", 100, 599, NULL,
     "HTTP status code of the response to each request"},
    {"delay-ms", OPTION_INT, offsetof(struct listen_settings, delay_ms), "0", 0, 120000, "ms",
     "Time to wait before responding to each request"},
    {"quiet", OPTION_BOOL, offsetof(struct listen_settings, quiet), "false", 0, 0, NULL,
     "Print only the start line and, on exit, the summary"},
    {"max-body-bytes", OPTION_INT, offsetof(struct listen_settings, max_body_bytes), "1048576", 1,
     67108864, "bytes", "Largest request body accepted; larger bodies get a 413 response"},
    {"save-dir", OPTION_STRING, offsetof(struct listen_settings, save_dir), NULL, 0, 0, NULL,
     "Folder to save each raw body in, as NUMBER.body, for 'bearhook verify'; created if missing"},
};

#define LISTEN_OPTION_COUNT (sizeof(listen_options) / sizeof(listen_options[0]))

static const char listen_usage[] =
    "Usage: bearhook listen --port PORT [--host ADDRESS] [--secret SECRET] [--status CODE]\n"
    "                       [--delay-ms N] [--quiet] [--max-body-bytes N] [--save-dir DIR]\n"
    "\n"
    "Receives webhooks on a loopback address, prints each request with its headers, its body\n"
    "and whether its X-Bearconnect-Signature matches --secret, and responds with --status.";

enum verdict { VERDICT_NOT_CHECKED, VERDICT_MISSING, VERDICT_VALID, VERDICT_INVALID };

struct listener {
    const struct listen_settings *settings;
    pthread_mutex_t lock; /* guards stopping, the counters and the writes to stdout */
    /* Signalled when stopping becomes true and when in_progress drops, timed on CLOCK_MONOTONIC. */
    pthread_cond_t stop_cond;
    bool stopping;
    unsigned int in_progress;    /* requests created and not yet completed */
    unsigned long long received; /* requests responded to with --status */
    unsigned long long valid;    /* of those, requests whose signature matched */
    unsigned long long saved;    /* bodies written to --save-dir, which numbers the files */
};

/* One request, created by the URI callback and freed when libmicrohttpd completes it. */
struct request {
    char *uri;                     /* the raw request target, query string included */
    bool started;                  /* the access handler has seen the headers */
    struct buf body;               /* at most max_body_bytes */
    unsigned long long body_bytes; /* every body byte received, kept or discarded */
    bool too_large;
};

#define URL_HOST_MAX (INET6_ADDRSTRLEN + 2)

struct loopback_address {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char url_host[URL_HOST_MAX]; /* "127.0.0.1" or "[::1]" */
};

/* ---- address check ---- */

static int reject_host(const char *host, bool is_address, struct bh_error *err)
{
    if (!is_address)
        return bh_error_set(err, BH_ERR_INVALID, "host",
                            "--host \"%s\" is not an IP address; use a loopback address such as "
                            "127.0.0.1 or ::1",
                            host);
    return bh_error_set(err, BH_ERR_INVALID, "host",
                        "--host %s is not a loopback address. bearhook listen has no "
                        "authentication and prints every request it receives, so it binds only "
                        "to 127.0.0.0/8 or ::1. Use --host 127.0.0.1, and a tunnel or reverse "
                        "proxy to receive deliveries from another machine",
                        host);
}

/*
 * Parses --host into a socket address for port. Accepts a literal loopback address, IPv6 with
 * or without brackets, and "localhost", which is taken as 127.0.0.1 without a resolver lookup.
 */
static int parse_loopback_host(const char *host, unsigned short port, struct loopback_address *out,
                               struct bh_error *err)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->addr;
    char text[INET6_ADDRSTRLEN];
    size_t len = strlen(host);

    memset(out, 0, sizeof(*out));
    if (strcmp(host, "localhost") == 0) {
        inet_pton(AF_INET, "127.0.0.1", &v4->sin_addr);
    } else if (inet_pton(AF_INET, host, &v4->sin_addr) != 1) {
        goto try_ipv6;
    }
    if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127)
        return reject_host(host, true, err);
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out->addr_len = sizeof(*v4);
    inet_ntop(AF_INET, &v4->sin_addr, out->url_host, sizeof(out->url_host));
    return 0;

try_ipv6:
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    if (len >= sizeof(text))
        return reject_host(host, false, err);
    memcpy(text, host, len);
    text[len] = '\0';
    if (inet_pton(AF_INET6, text, &v6->sin6_addr) != 1)
        return reject_host(text, false, err);
    if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr))
        return reject_host(text, true, err);
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    out->addr_len = sizeof(*v6);
    snprintf(out->url_host, sizeof(out->url_host), "[::1]");
    return 0;
}

/* ---- printing ---- */

/*
 * Appends text with control characters shown as \xNN, so a header or body cannot move the
 * terminal's cursor or forge lines. Newlines and tabs are kept when keep_newlines is set.
 * Bytes from 0x80 up are copied as they are, so UTF-8 prints as itself.
 */
static void append_printable(struct buf *out, const char *text, size_t len, bool keep_newlines)
{
    size_t start = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        bool control = c < 0x20 || c == 0x7f;

        if (!control || (keep_newlines && (c == '\n' || c == '\t')))
            continue;
        buf_append(out, text + start, i - start);
        buf_appendf(out, "\\x%02x", c);
        start = i + 1;
    }
    buf_append(out, text + start, len - start);
}

static void append_timestamp(struct buf *out)
{
    struct timespec now;
    struct tm utc;
    char stamp[32];

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &utc);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
    buf_appendf(out, "%s.%03ldZ", stamp, now.tv_nsec / 1000000L);
}

static enum MHD_Result append_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct buf *out = cls;

    append_printable(out, key, strlen(key), false);
    buf_append_str(out, ": ");
    if (value)
        append_printable(out, value, strlen(value), false);
    buf_append_str(out, "\n");
    return MHD_YES;
}

/* Returns the fewest significant digits, 1 to 17, that print value so it reads back equal. */
static int digits_for_double(double value)
{
    char text[40];

    for (int digits = 1; digits < 17; digits++) {
        snprintf(text, sizeof(text), "%.*g", digits, value);
        if (strtod(text, NULL) == value)
            return digits;
    }
    return 17;
}

/*
 * Returns the precision for json_dumps that prints every real in json so it reads back as the
 * same double. jansson's default of 17 digits prints 0.1 as 0.10000000000000001, which would
 * show a body different from the one received. One precision applies to the whole document,
 * so a real may still print with extra digits when another real needs more.
 */
static int real_precision(json_t *json)
{
    const char *key;
    json_t *value;
    size_t index;
    int precision = 1;
    int needed;

    switch (json_typeof(json)) {
    case JSON_REAL:
        return digits_for_double(json_real_value(json));
    case JSON_OBJECT:
        json_object_foreach(json, key, value)
        {
            needed = real_precision(value);
            precision = needed > precision ? needed : precision;
        }
        return precision;
    case JSON_ARRAY:
        json_array_foreach(json, index, value)
        {
            needed = real_precision(value);
            precision = needed > precision ? needed : precision;
        }
        return precision;
    default:
        return precision;
    }
}

/*
 * Appends the body as JSON indented by two spaces, keys in the order received, or as text
 * when it is not JSON. Bodies with duplicate keys or integers beyond 64 bits are shown as
 * text, since re-encoding them would change what was received.
 */
static void append_body(struct buf *out, const char *body, size_t len)
{
    json_error_t error;
    json_t *json;
    char *pretty = NULL;

    if (len == 0) {
        buf_append_str(out, "(empty body)\n");
        return;
    }

    json = json_loadb(body, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &error);
    if (json) {
        pretty = json_dumps(json, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY |
                                      JSON_REAL_PRECISION(real_precision(json)));
        json_decref(json);
    }
    if (pretty) {
        buf_append_str(out, pretty);
        buf_append_str(out, "\n");
        free(pretty);
        return;
    }

    buf_append_str(out, "(not JSON: ");
    if (json)
        buf_append_str(out, "it could not be re-encoded");
    else
        append_printable(out, error.text, strlen(error.text), false);
    buf_append_str(out, "; shown as text)\n");
    append_printable(out, body, len, true);
    if (body[len - 1] != '\n')
        buf_append_str(out, "\n");
}

static void append_verdict(struct buf *out, enum verdict verdict, const char *expected)
{
    switch (verdict) {
    case VERDICT_VALID:
        buf_append_str(out, "Signature: valid\n");
        break;
    case VERDICT_INVALID:
        buf_appendf(out, "Signature: INVALID (expected %s)\n", expected);
        break;
    case VERDICT_MISSING:
        buf_append_str(out, "Signature: missing (no X-Bearconnect-Signature header)\n");
        break;
    case VERDICT_NOT_CHECKED:
        buf_append_str(out, "Signature: not checked (start with --secret to check)\n");
        break;
    }
}

/* Writes text to stdout in one piece and flushes it. The caller holds listener->lock. */
static void write_stdout_locked(const struct buf *text)
{
    fwrite(text->data, 1, text->len, stdout);
    fflush(stdout);
}

/* ---- requests ---- */

static enum verdict check_signature(const char *secret, const char *header, const struct buf *body,
                                    char expected[SIGNATURE_HEX_LEN + 1])
{
    expected[0] = '\0';
    if (secret[0] == '\0')
        return VERDICT_NOT_CHECKED;
    if (!header)
        return VERDICT_MISSING;
    signature_compute(secret, body->data ? body->data : "", body->len, expected);
    return signature_equal(expected, header) ? VERDICT_VALID : VERDICT_INVALID;
}

static const char *verdict_name(enum verdict verdict)
{
    static const char *const names[] = {"not_checked", "missing", "valid", "invalid"};

    return names[verdict];
}

static enum MHD_Result send_json(struct MHD_Connection *connection, unsigned int status,
                                 const char *json)
{
    struct MHD_Response *response;
    enum MHD_Result result;

    response = MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_MUST_COPY);
    if (!response)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static struct timespec deadline_after(long long ms)
{
    struct timespec deadline;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(ms / 1000);
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    return deadline;
}

/* Waits delay_ms, or less when the listener is stopping. */
static void wait_delay(struct listener *listener, long long delay_ms)
{
    struct timespec deadline;

    if (delay_ms <= 0)
        return;
    deadline = deadline_after(delay_ms);

    pthread_mutex_lock(&listener->lock);
    while (!listener->stopping) {
        if (pthread_cond_timedwait(&listener->stop_cond, &listener->lock, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&listener->lock);
}

/* Prints one line for a request whose body is too large, then responds 413. */
static enum MHD_Result reject_too_large(struct listener *listener,
                                        struct MHD_Connection *connection, const char *method,
                                        const struct request *req, const char *size_text)
{
    long long max = listener->settings->max_body_bytes;
    struct buf line = BUF_INIT;
    char json[160];

    if (!listener->settings->quiet) {
        append_timestamp(&line);
        buf_appendf(&line, " %s ", method);
        append_printable(&line, req->uri, strlen(req->uri), false);
        buf_appendf(&line, " %s: over --max-body-bytes %lld, responded 413\n\n", size_text, max);
        pthread_mutex_lock(&listener->lock);
        write_stdout_locked(&line);
        pthread_mutex_unlock(&listener->lock);
        buf_release(&line);
    }

    snprintf(json, sizeof(json),
             "{\"error\":\"the request body is larger than the %lld bytes allowed by "
             "--max-body-bytes\"}",
             max);
    return send_json(connection, MHD_HTTP_CONTENT_TOO_LARGE, json);
}

/*
 * Returns the Content-Length when it is over the limit and the body should not be read:
 * when it is too large even to discard, or when the client waits for "100 Continue" before
 * sending it. Returns 0 otherwise.
 */
static unsigned long long announced_too_large(const struct listen_settings *settings,
                                              struct MHD_Connection *connection)
{
    const char *text;
    const char *expect;
    char *end = NULL;
    unsigned long long length;
    unsigned long long max = (unsigned long long)settings->max_body_bytes;

    text = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!text)
        return 0;
    errno = 0;
    length = strtoull(text, &end, 10);
    if (errno != 0 || end == text || length <= max)
        return 0;

    expect = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    if (length > max + DISCARD_MAX_BYTES || (expect && strcasecmp(expect, "100-continue") == 0))
        return length;
    return 0;
}

static void receive_body(const struct listen_settings *settings, struct request *req,
                         const char *data, size_t size)
{
    size_t max = (size_t)settings->max_body_bytes;

    req->body_bytes += size;
    if (req->too_large)
        return;
    if (req->body_bytes > max) {
        req->too_large = true;
        buf_release(&req->body);
        return;
    }
    buf_append(&req->body, data, size);
}

/*
 * Writes the raw body to --save-dir as NUMBER.body and, when block is not NULL, appends a line
 * naming the file. The printed body is indented, so this file is what 'bearhook verify' needs.
 */
static void save_body(struct listener *listener, const struct buf *body, struct buf *block)
{
    const char *folder = listener->settings->save_dir;
    unsigned long long number;
    char path[4096];
    FILE *file;
    bool written;

    pthread_mutex_lock(&listener->lock);
    number = ++listener->saved;
    pthread_mutex_unlock(&listener->lock);

    snprintf(path, sizeof(path), "%s/%06llu.body", folder, number);
    file = fopen(path, "wbx");
    written = file && fwrite(body->data ? body->data : "", 1, body->len, file) == body->len;
    if (file && fclose(file) != 0)
        written = false;
    if (!written)
        log_warn(LOG_MODULE, "could not save the raw body to %s: %s", path, strerror(errno));
    else if (block)
        buf_appendf(block, "Saved the raw body to %s\n", path);
}

/* Prints the request's block, waits --delay-ms and responds with --status. */
static enum MHD_Result respond_to_request(struct listener *listener,
                                          struct MHD_Connection *connection, const char *method,
                                          const struct request *req)
{
    const struct listen_settings *settings = listener->settings;
    char expected[SIGNATURE_HEX_LEN + 1];
    const char *header;
    enum verdict verdict;
    struct buf block = BUF_INIT;
    char json[96];

    header = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "X-Bearconnect-Signature");
    verdict = check_signature(settings->secret, header, &req->body, expected);

    if (!settings->quiet) {
        append_timestamp(&block);
        buf_appendf(&block, " %s ", method);
        append_printable(&block, req->uri, strlen(req->uri), false);
        buf_appendf(&block, " %zu bytes\n", req->body.len);
        MHD_get_connection_values(connection, MHD_HEADER_KIND, append_header, &block);
        buf_append_str(&block, "\n");
        append_body(&block, req->body.data, req->body.len);
        buf_append_str(&block, "\n");
        append_verdict(&block, verdict, expected);
    }
    if (settings->save_dir[0])
        save_body(listener, &req->body, settings->quiet ? NULL : &block);
    if (!settings->quiet)
        buf_append_str(&block, "\n");

    pthread_mutex_lock(&listener->lock);
    listener->received++;
    if (verdict == VERDICT_VALID)
        listener->valid++;
    if (block.len > 0)
        write_stdout_locked(&block);
    pthread_mutex_unlock(&listener->lock);
    buf_release(&block);

    wait_delay(listener, settings->delay_ms);
    snprintf(json, sizeof(json), "{\"received\":true,\"signature\":\"%s\"}", verdict_name(verdict));
    return send_json(connection, (unsigned int)settings->status, json);
}

/*
 * The access handler. libmicrohttpd calls it once with the headers, once per piece of body,
 * and once more with *upload_data_size == 0 when the body is complete.
 */
static enum MHD_Result handle_request(void *cls, struct MHD_Connection *connection, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct listener *listener = cls;
    const struct listen_settings *settings = listener->settings;
    struct request *req = *con_cls;
    unsigned long long announced;
    char size_text[64];

    if (!req)
        return MHD_NO;

    if (!req->started) {
        req->started = true;
        announced = announced_too_large(settings, connection);
        if (announced == 0)
            return MHD_YES;
        snprintf(size_text, sizeof(size_text), "%llu bytes announced", announced);
        return reject_too_large(listener, connection, method, req, size_text);
    }

    if (*upload_data_size > 0) {
        receive_body(settings, req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        /* Closing the connection bounds what a client can make us read and discard. */
        if (req->body_bytes > (unsigned long long)settings->max_body_bytes + DISCARD_MAX_BYTES)
            return MHD_NO;
        return MHD_YES;
    }

    if (req->too_large) {
        snprintf(size_text, sizeof(size_text), "%llu bytes", req->body_bytes);
        return reject_too_large(listener, connection, method, req, size_text);
    }
    return respond_to_request(listener, connection, method, req);
}

/* Creates the request state; libmicrohttpd passes the result to the handler as *con_cls. */
static void *create_request(void *cls, const char *uri, struct MHD_Connection *connection)
{
    struct listener *listener = cls;
    struct request *req = xcalloc(1, sizeof(*req));

    req->uri = xstrdup(uri ? uri : "");
    buf_init(&req->body);

    pthread_mutex_lock(&listener->lock);
    listener->in_progress++;
    pthread_mutex_unlock(&listener->lock);
    return req;
}

/* Called once the response is sent or the request is abandoned. */
static void free_request(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct listener *listener = cls;
    struct request *req = *con_cls;

    if (!req)
        return;
    buf_release(&req->body);
    free(req->uri);
    free(req);
    *con_cls = NULL;

    pthread_mutex_lock(&listener->lock);
    listener->in_progress--;
    pthread_cond_broadcast(&listener->stop_cond);
    pthread_mutex_unlock(&listener->lock);
}

__attribute__((format(printf, 2, 0))) static void log_mhd(void *cls, const char *fmt, va_list args)
{
    char message[512];
    size_t len;

    vsnprintf(message, sizeof(message), fmt, args);
    len = strlen(message);
    while (len > 0 && message[len - 1] == '\n')
        message[--len] = '\0';
    log_warn(LOG_MODULE, "%s", message);
}

/* ---- the command ---- */

static int listener_init(struct listener *listener, const struct listen_settings *settings)
{
    pthread_condattr_t attr;
    int result;

    memset(listener, 0, sizeof(*listener));
    listener->settings = settings;
    pthread_mutex_init(&listener->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    result = pthread_cond_init(&listener->stop_cond, &attr);
    pthread_condattr_destroy(&attr);
    if (result != 0) {
        pthread_mutex_destroy(&listener->lock);
        return -1;
    }
    return 0;
}

static void listener_release(struct listener *listener)
{
    pthread_cond_destroy(&listener->stop_cond);
    pthread_mutex_destroy(&listener->lock);
}

static uint16_t address_port(const struct loopback_address *address)
{
    if (address->addr.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&address->addr)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&address->addr)->sin_port);
}

static struct MHD_Daemon *start_daemon(struct listener *listener,
                                       const struct loopback_address *address)
{
    /* MHD_USE_ITC lets MHD_quiesce_daemon stop accepting connections before the stop. */
    unsigned int flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                         MHD_USE_AUTO | MHD_USE_ITC | MHD_USE_ERROR_LOG;

    if (address->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* MHD_OPTION_SOCK_ADDR decides the port; the argument only appears in error messages. */
    return MHD_start_daemon(flags, address_port(address), NULL, NULL, handle_request, listener,
                            MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL, MHD_OPTION_SOCK_ADDR,
                            (const struct sockaddr *)&address->addr, MHD_OPTION_URI_LOG_CALLBACK,
                            create_request, listener, MHD_OPTION_NOTIFY_COMPLETED, free_request,
                            listener, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned int)IDLE_TIMEOUT_SECONDS, MHD_OPTION_END);
}

/* Waits for SIGINT or SIGTERM, which the caller blocked in every thread. */
static int wait_for_stop_signal(const sigset_t *signals)
{
    int signal_number = 0;

    while (sigwait(signals, &signal_number) != 0)
        ;
    return signal_number;
}

/*
 * Stops accepting connections, cuts the delays short and waits, at most DRAIN_TIMEOUT_MS, for
 * the responses to the requests in progress. A request still uploading after that is cut off
 * when the daemon stops. Returns the listening socket, which the caller closes after the stop.
 */
static MHD_socket drain_requests(struct listener *listener, struct MHD_Daemon *daemon)
{
    MHD_socket listen_socket = MHD_quiesce_daemon(daemon);
    struct timespec deadline = deadline_after(DRAIN_TIMEOUT_MS);

    pthread_mutex_lock(&listener->lock);
    listener->stopping = true;
    pthread_cond_broadcast(&listener->stop_cond);
    while (listener->in_progress > 0) {
        if (pthread_cond_timedwait(&listener->stop_cond, &listener->lock, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&listener->lock);
    return listen_socket;
}

static int run_listener(const struct listen_settings *settings,
                        const struct loopback_address *address)
{
    struct listener listener;
    struct MHD_Daemon *daemon = NULL;
    const union MHD_DaemonInfo *info;
    MHD_socket listen_socket;
    sigset_t signals;
    int signal_number;

    if (listener_init(&listener, settings) != 0) {
        fprintf(stderr, "bearhook listen: failed to create a condition variable\n");
        return 1;
    }

    /*
     * Blocked before the daemon starts so that its threads inherit the mask. The signals stay
     * blocked after the stop, so a second Ctrl-C cannot cut the summary short.
     */
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    daemon = start_daemon(&listener, address);
    if (!daemon) {
        fprintf(stderr,
                "bearhook listen: failed to start the HTTP server on %s port %lld; the port may "
                "be in use (the message above gives the cause)\n",
                address->url_host, settings->port);
        listener_release(&listener);
        return 1;
    }
    info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    printf("Listening on http://%s:%u/\n", address->url_host,
           info ? (unsigned int)info->port : (unsigned int)settings->port);
    fflush(stdout);

    signal_number = wait_for_stop_signal(&signals);

    listen_socket = drain_requests(&listener, daemon);
    MHD_stop_daemon(daemon);
    if (listen_socket != MHD_INVALID_SOCKET)
        close(listen_socket);

    printf("Received %llu deliveries (%llu with valid signatures)\n", listener.received,
           listener.valid);
    fflush(stdout);
    log_info(LOG_MODULE, "stopped on %s", signal_number == SIGINT ? "SIGINT" : "SIGTERM");
    listener_release(&listener);
    return 0;
}

/*
 * Creates the --save-dir folder and any missing parents (mode 0700), so that a typo shows at
 * start rather than as a warning on every request. Returns 0, or -1 after printing why.
 */
static int prepare_save_dir(const char *folder)
{
    char *path = xstrdup(folder);
    struct stat st;
    int status = 0;

    for (char *p = path + 1; status == 0; p++) {
        bool end = *p == '\0';

        if (*p != '/' && !end)
            continue;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            status = -1;
        if (end)
            break;
        *p = '/';
    }
    if (status == 0 && stat(folder, &st) != 0) {
        status = -1;
    } else if (status == 0 && !S_ISDIR(st.st_mode)) {
        status = -1;
        errno = ENOTDIR;
    }
    if (status == 0 && access(folder, W_OK | X_OK) != 0)
        status = -1;
    if (status != 0)
        fprintf(stderr,
                "bearhook listen: could not use --save-dir \"%s\": %s; give a folder that "
                "can be created or written to\n",
                folder, strerror(errno));
    free(path);
    return status;
}

int cmd_listen(int argc, char **argv)
{
    struct listen_settings settings = {.port = -1};
    struct option_args args;
    struct loopback_address address;
    struct bh_error err;
    int status = EXIT_USAGE;

    bh_error_clear(&err);
    if (options_parse(listen_options, LISTEN_OPTION_COUNT, &settings, NULL, argc, argv, &args,
                      &err) != 0) {
        fprintf(stderr, "bearhook listen: %s\n", err.message);
        goto release;
    }
    if (args.help) {
        options_print_help(stdout, listen_usage, listen_options, LISTEN_OPTION_COUNT, NULL);
        status = 0;
        goto release;
    }
    if (args.positional_count > 0) {
        fprintf(stderr, "bearhook listen: unexpected argument \"%s\"; see --help\n",
                args.positional[0]);
        goto release;
    }
    if (settings.port < 0) {
        fprintf(stderr, "bearhook listen: missing --port; give a port number, or 0 to pick a "
                        "free port\n");
        goto release;
    }
    if (parse_loopback_host(settings.host, (unsigned short)settings.port, &address, &err) != 0) {
        fprintf(stderr, "bearhook listen: %s\n", err.message);
        goto release;
    }
    if (settings.save_dir[0] && prepare_save_dir(settings.save_dir) != 0)
        goto release;

    status = run_listener(&settings, &address);

release:
    options_release(listen_options, LISTEN_OPTION_COUNT, &settings);
    return status;
}
