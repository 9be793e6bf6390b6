/*
 * Request plumbing between libmicrohttpd and the handlers.
 *
 * libmicrohttpd calls on_request several times per request: once when the headers are in,
 * once per piece of the body, and once more when the body is complete. The body is collected
 * into a bounded buffer kept in the connection's slot; the handler runs on the last call.
 */
#include "api/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/ingest.h"
#include "core/clock.h"
#include "core/ids.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/log.h"

/*
 * Memory for one connection's request line and headers. Bodies are collected in a buffer of
 * our own, so this bounds only the headers. libmicrohttpd clears the whole pool for every
 * request, so a larger pool costs time on each one.
 */
#define CONNECTION_MEMORY_LIMIT ((size_t)16 * 1024)

struct api_server {
    struct MHD_Daemon *daemon;
    struct api_context *api;
    int port;
};

/* One request in progress, kept in libmicrohttpd's per-request slot. */
struct pending_request {
    struct buf body;
    bool too_large;
    int64_t started_ms;
    struct ingest_job *job; /* queued to the committer; the connection is suspended */
};

/*
 * Recently authenticated keys, so that a request does not need a store query and the store
 * lock before its real work. Entries expire after AUTH_CACHE_TTL_MS; no endpoint deletes
 * keys today, and the expiry bounds how long a deleted key would keep working.
 */
#define AUTH_CACHE_SLOTS 64
#define AUTH_CACHE_TTL_MS 30000

struct auth_entry {
    char key_hash[SHA256_HEX_LEN + 1];
    struct user user;
    int64_t expires_ms;
};

static struct auth_entry auth_cache[AUTH_CACHE_SLOTS];
static pthread_mutex_t auth_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static struct auth_entry *auth_slot(const char *key_hash)
{
    unsigned int spread = 0;

    /* SHA-256 output is uniformly distributed, so any of its bytes picks a slot well. */
    for (int i = 0; i < 4; i++)
        spread = spread * 31u + (unsigned char)key_hash[i];
    return &auth_cache[spread % AUTH_CACHE_SLOTS];
}

static bool auth_cache_find(const char *key_hash, struct user *user)
{
    struct auth_entry *entry = auth_slot(key_hash);
    bool found;

    pthread_mutex_lock(&auth_cache_lock);
    found = entry->expires_ms > clock_monotonic_ms() && strcmp(entry->key_hash, key_hash) == 0;
    if (found)
        *user = entry->user;
    pthread_mutex_unlock(&auth_cache_lock);
    return found;
}

static void auth_cache_put(const char *key_hash, const struct user *user)
{
    struct auth_entry *entry = auth_slot(key_hash);

    pthread_mutex_lock(&auth_cache_lock);
    memcpy(entry->key_hash, key_hash, sizeof(entry->key_hash));
    entry->user = *user;
    entry->expires_ms = clock_monotonic_ms() + AUTH_CACHE_TTL_MS;
    pthread_mutex_unlock(&auth_cache_lock);
}

static int authenticate(struct api_context *api, struct request *request, struct bh_error *err)
{
    const char *header;
    char key_hash[SHA256_HEX_LEN + 1];
    int result;

    header = MHD_lookup_connection_value(request->connection, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_AUTHORIZATION);
    if (!header)
        return bh_error_set(err, BH_ERR_UNAUTHORIZED, "",
                            "missing API key; send the header Authorization: Bearer <API key>");
    if (strncasecmp(header, "Bearer ", 7) != 0 || header[7] == '\0')
        return bh_error_set(err, BH_ERR_UNAUTHORIZED, "",
                            "the Authorization header must read \"Bearer <API key>\"");

    api_key_hash(header + 7, key_hash);
    if (auth_cache_find(key_hash, &request->user))
        return BH_OK;

    pthread_mutex_lock(&api->store_lock);
    result = store_user_by_key(api->store, key_hash, &request->user, err);
    pthread_mutex_unlock(&api->store_lock);
    if (result == BH_ERR_NOT_FOUND)
        return bh_error_set(err, BH_ERR_UNAUTHORIZED, "",
                            "invalid API key; use a key printed by 'bearhook user create' or "
                            "written at first start");
    if (result == BH_OK)
        auth_cache_put(key_hash, &request->user);
    return result;
}

static enum MHD_Result send_response(struct request *request, int result, struct response *response,
                                     const struct bh_error *err)
{
    enum MHD_Result sent;
    unsigned int status = result == BH_OK ? response->status : http_status_for(result);
    long long duration_ms = (long long)(clock_monotonic_ms() - request->started_ms);

    if (status >= 500)
        log_error("api", "%s %s status=%u user=%s duration_ms=%lld error=%s", request->method,
                  request->path, status, request->user.id, duration_ms, err->message);
    else
        log_info("api", "%s %s status=%u user=%s duration_ms=%lld", request->method, request->path,
                 status, request->user.id, duration_ms);

    if (result != BH_OK)
        return respond_error(request->connection, err);
    if (response->text)
        sent = respond_text(request->connection, response->status, response->content_type,
                            response->text);
    else
        sent = respond_json(request->connection, response->status, response->body);
    json_decref(response->body);
    return sent;
}

/* Sends 405 with the Allow header that RFC 9110 requires. */
static enum MHD_Result reject_method(struct request *request)
{
    struct MHD_Response *response;
    enum MHD_Result result;
    char allowed[64];
    char *text;
    json_t *body;

    router_allowed_methods(request->path, allowed, sizeof(allowed));
    body = json_pack("{s:{s:s, s:s+++, s:n}}", "error", "code", "method_not_allowed", "message",
                     "method ", request->method, " is not allowed here; use ", allowed, "field");
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    response = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allowed);
    result = MHD_queue_response(request->connection, MHD_HTTP_METHOD_NOT_ALLOWED, response);
    MHD_destroy_response(response);
    log_info("api", "%s %s status=405", request->method, request->path);
    return result;
}

static enum MHD_Result dispatch(struct api_context *api, struct request *request,
                                struct pending_request *pending)
{
    struct response response = {MHD_HTTP_OK, NULL, NULL, NULL};
    struct bh_error err;
    const struct route *route;
    bool path_matched;
    int result;

    bh_error_clear(&err);
    route = router_match(request->method, request->path, request->params, &path_matched);
    if (!route && path_matched)
        return reject_method(request);
    if (!route) {
        bh_error_set(&err, BH_ERR_NOT_FOUND, "", "no such endpoint: %s %.200s", request->method,
                     request->path);
        return send_response(request, err.status, &response, &err);
    }

    if (!(route->flags & ROUTE_PUBLIC)) {
        result = authenticate(api, request, &err);
        if (result != BH_OK)
            return send_response(request, result, &response, &err);
    }

    if (route->flags & (ROUTE_PUBLIC | ROUTE_UNLOCKED)) {
        result = route->handler(api, request, &response, &err);
    } else {
        pthread_mutex_lock(&api->store_lock);
        result = route->handler(api, request, &response, &err);
        pthread_mutex_unlock(&api->store_lock);
    }
    if (result == BH_PENDING) {
        /* Suspend before queueing, so the committer cannot resume a running connection. */
        pending->job = request->job;
        MHD_suspend_connection(request->connection);
        ingest_submit(api->ingest, pending->job);
        return MHD_YES;
    }
    return send_response(request, result, &response, &err);
}

/* Sends the response of a request whose queued job the committer finished. */
static enum MHD_Result send_job_response(struct request *request, struct ingest_job *job)
{
    struct response response = {MHD_HTTP_ACCEPTED, job->answer, NULL, NULL};

    request->user = job->user;
    job->answer = NULL;
    return send_response(request, job->result, &response, &job->err);
}

static enum MHD_Result reject_too_large(struct api_context *api, struct MHD_Connection *connection)
{
    struct bh_error err;

    bh_error_set(&err, BH_ERR_TOO_LARGE, "",
                 "request body is larger than %zu bytes; send a smaller body", api->max_body_bytes);
    return respond_error(connection, &err);
}

static bool declared_too_large(struct api_context *api, struct MHD_Connection *connection)
{
    const char *length =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long declared;
    char *end = NULL;

    if (!length)
        return false;
    errno = 0;
    declared = strtoull(length, &end, 10);
    return errno != 0 || declared > api->max_body_bytes;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **slot)
{
    struct api_server *server = cls;
    struct api_context *api = server->api;
    struct pending_request *pending = *slot;
    struct request request;

    if (!pending) {
        pending = xcalloc(1, sizeof(*pending));
        pending->started_ms = clock_monotonic_ms();
        *slot = pending;
        if (declared_too_large(api, connection))
            return reject_too_large(api, connection);
        return MHD_YES;
    }

    if (*upload_data_size != 0) {
        if (pending->body.len + *upload_data_size > api->max_body_bytes) {
            pending->too_large = true;
            buf_release(&pending->body);
        }
        if (!pending->too_large)
            buf_append(&pending->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (pending->too_large)
        return reject_too_large(api, connection);

    memset(&request, 0, sizeof(request));
    request.method = method;
    request.path = url;
    request.connection = connection;
    request.body = pending->body.data ? pending->body.data : "";
    request.body_len = pending->body.len;
    request.started_ms = pending->started_ms;
    if (pending->job)
        return send_job_response(&request, pending->job);
    return dispatch(api, &request, pending);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **slot,
                         enum MHD_RequestTerminationCode code)
{
    struct pending_request *pending = *slot;

    if (!pending)
        return;
    buf_release(&pending->body);
    ingest_job_free(pending->job);
    free(pending);
    *slot = NULL;
}

static void log_mhd_error(void *cls, const char *fmt, va_list args)
{
    char message[512];

    vsnprintf(message, sizeof(message), fmt, args);
    log_warn("http", "%s", message);
}

struct api_server *api_server_start(struct api_context *api, const char *address, int port,
                                    unsigned int threads, struct bh_error *err)
{
    struct api_server *server = xcalloc(1, sizeof(*server));
    struct sockaddr_storage bind_addr;
    socklen_t bind_len;
    const union MHD_DaemonInfo *info;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                         MHD_ALLOW_SUSPEND_RESUME;

    memset(&bind_addr, 0, sizeof(bind_addr));
    if (inet_pton(AF_INET, address, &((struct sockaddr_in *)&bind_addr)->sin_addr) == 1) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&bind_addr;

        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        bind_len = sizeof(*in4);
    } else if (inet_pton(AF_INET6, address, &((struct sockaddr_in6 *)&bind_addr)->sin6_addr) == 1) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&bind_addr;

        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        bind_len = sizeof(*in6);
        flags |= MHD_USE_IPv6;
    } else {
        free(server);
        bh_error_set(err, BH_ERR_INVALID, "listen",
                     "invalid listen address \"%s\"; use an IPv4 or IPv6 address such as "
                     "127.0.0.1",
                     address);
        return NULL;
    }
    (void)bind_len;

    server->api = api;
    server->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, server, MHD_OPTION_EXTERNAL_LOGGER,
        log_mhd_error, NULL, MHD_OPTION_SOCK_ADDR, &bind_addr, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, server, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)60, MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONNECTION_MEMORY_LIMIT,
        MHD_OPTION_END);
    if (!server->daemon) {
        free(server);
        bh_error_set(err, BH_ERR_IO, "port",
                     "could not listen on %s port %d; is another process using it?", address, port);
        return NULL;
    }

    info = MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    server->port = info ? info->port : port;
    return server;
}

int api_server_port(const struct api_server *server)
{
    return server->port;
}

void api_server_quiesce(struct api_server *server)
{
    if (server)
        MHD_quiesce_daemon(server->daemon);
}

void api_server_stop(struct api_server *server)
{
    if (!server)
        return;
    MHD_stop_daemon(server->daemon);
    free(server);
}
