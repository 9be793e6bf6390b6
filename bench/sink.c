/*
 * sink: a fast HTTP/1.1 keep-alive receiver for the bearhook benchmarks.
 *
 * It binds 127.0.0.1, responds to every request with 200 and a two-byte body, and counts the
 * requests. With --records FILE it also keeps, per request, the receive time (CLOCK_REALTIME,
 * microseconds), the X-Webhook-Id header and the body's metadata eventId (found by substring,
 * no JSON parse), and writes them to FILE on SIGTERM or SIGINT, one "time event webhook" line
 * each. Requests whose X-Webhook-Id equals --id are counted apart as "selected"; with --hang
 * they never get a response, so the client waits until its own timeout.
 *
 * GET /stats returns "requests N\nselected M\n" and is not counted.
 *
 * Each of --threads workers runs its own epoll loop on its own listening socket
 * (SO_REUSEPORT), so the kernel spreads connections across them and workers share nothing
 * but two atomic counters each. The main thread only waits for the signal.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define THREADS_MAX 8
#define ID_MAX 31
#define HEADER_BYTES_MAX (64 * 1024)
#define BODY_BYTES_MAX (16 * 1024 * 1024)
#define EVENTS_PER_WAIT 128
#define READ_CHUNK 65536

static const char response_ok[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                  "Content-Length: 2\r\n\r\nok";
static const char response_continue[] = "HTTP/1.1 100 Continue\r\n\r\n";

enum handle_kind { HANDLE_LISTENER, HANDLE_WAKE, HANDLE_CONNECTION };

/* One request as recorded. Ids longer than ID_MAX bytes are truncated. */
struct record {
    int64_t received_us;
    char event_id[ID_MAX + 1];
    char webhook_id[ID_MAX + 1];
};

struct record_log {
    struct record *items;
    size_t count;
    size_t capacity;
};

/* A growable byte buffer whose unconsumed bytes begin at `start`. */
struct bytes {
    char *data;
    size_t start;
    size_t len;
    size_t capacity;
};

struct connection {
    enum handle_kind kind; /* first, so every epoll handle starts with its kind */
    int fd;
    struct bytes in;
    struct bytes out;
    bool continue_sent;      /* 100 Continue already sent for the request being read */
    bool hung;               /* a selected request arrived with --hang, so never respond again */
    bool close_after;        /* the client sent Connection: close */
    bool want_write;         /* registered for EPOLLOUT because the socket was full */
    struct connection *prev; /* the worker's open connections, to close them at exit */
    struct connection *next;
};

struct handle {
    enum handle_kind kind;
    int fd;
};

struct worker {
    int epoll_fd;
    struct handle listener;
    struct handle wake;
    pthread_t thread;
    struct connection *connections; /* open connections, most recent first */
    struct record_log log;
    _Atomic uint64_t requests;
    _Atomic uint64_t selected;
};

/* The parts of one request that the sink uses. */
struct request {
    size_t header_len; /* up to and including the blank line */
    size_t body_len;
    bool is_stats;
    bool expects_continue;
    bool close_after;
    char webhook_id[ID_MAX + 1];
};

struct settings {
    int port;
    int threads;
    const char *records_path;
    const char *select_id;
    bool hang;
};

static struct settings settings = {0, 1, NULL, NULL, false};
static struct worker workers[THREADS_MAX];

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
        fprintf(stderr, "sink: out of memory (%zu bytes)\n", size);
        exit(1);
    }
    return grown;
}

/* Makes room for `extra` more bytes after the unconsumed ones, moving them to the front. */
static void bytes_reserve(struct bytes *bytes, size_t extra)
{
    if (bytes->start > 0) {
        memmove(bytes->data, bytes->data + bytes->start, bytes->len);
        bytes->start = 0;
    }
    if (bytes->len + extra <= bytes->capacity)
        return;
    while (bytes->capacity < bytes->len + extra)
        bytes->capacity = bytes->capacity ? bytes->capacity * 2 : 4096;
    bytes->data = xrealloc(bytes->data, bytes->capacity);
}

static void bytes_append(struct bytes *bytes, const char *data, size_t len)
{
    if (bytes->start + bytes->len + len > bytes->capacity)
        bytes_reserve(bytes, len);
    memcpy(bytes->data + bytes->start + bytes->len, data, len);
    bytes->len += len;
}

static void bytes_consume(struct bytes *bytes, size_t len)
{
    bytes->start += len;
    bytes->len -= len;
    if (bytes->len == 0)
        bytes->start = 0;
}

static void record_log_add(struct record_log *log, const struct record *record)
{
    if (log->count == log->capacity) {
        log->capacity = log->capacity ? log->capacity * 2 : 65536;
        log->items = xrealloc(log->items, log->capacity * sizeof(*log->items));
    }
    log->items[log->count++] = *record;
}

/* Copies a token of at most ID_MAX bytes that ends at `end` or at a byte in `stops`. */
static void copy_token(char out[ID_MAX + 1], const char *text, const char *end, const char *stops)
{
    size_t len = 0;

    while (text + len < end && len < ID_MAX && !strchr(stops, text[len]))
        len++;
    memcpy(out, text, len);
    out[len] = '\0';
}

/* Returns the value of header `name` (with its colon) in `line`, or NULL. */
static const char *header_value(const char *line, const char *line_end, const char *name)
{
    size_t name_len = strlen(name);

    if ((size_t)(line_end - line) < name_len || strncasecmp(line, name, name_len) != 0)
        return NULL;
    line += name_len;
    while (line < line_end && (*line == ' ' || *line == '\t'))
        line++;
    return line;
}

static void parse_header_line(struct request *request, const char *line, const char *end)
{
    const char *value;

    if ((value = header_value(line, end, "content-length:")))
        request->body_len = strtoull(value, NULL, 10);
    else if ((value = header_value(line, end, "x-webhook-id:")))
        copy_token(request->webhook_id, value, end, " \t\r");
    else if ((value = header_value(line, end, "expect:")))
        request->expects_continue = strncasecmp(value, "100-continue", 12) == 0;
    else if ((value = header_value(line, end, "connection:")))
        request->close_after = strncasecmp(value, "close", 5) == 0;
}

/* Parses the head of the request at `data`. Returns false while the head is incomplete. */
static bool parse_head(const char *data, size_t len, struct request *request)
{
    const char *head_end = memmem(data, len, "\r\n\r\n", 4);
    const char *line;

    memset(request, 0, sizeof(*request));
    if (!head_end)
        return false;
    request->header_len = (size_t)(head_end - data) + 4;
    request->is_stats = len >= 11 && memcmp(data, "GET /stats ", 11) == 0;

    line = (const char *)memchr(data, '\n', request->header_len) + 1;
    while (line < head_end) {
        const char *line_end = memchr(line, '\r', (size_t)(head_end + 2 - line));

        parse_header_line(request, line, line_end);
        line = line_end + 2;
    }
    return true;
}

static void connection_close(struct worker *worker, struct connection *connection)
{
    if (connection->prev)
        connection->prev->next = connection->next;
    else
        worker->connections = connection->next;
    if (connection->next)
        connection->next->prev = connection->prev;
    epoll_ctl(worker->epoll_fd, EPOLL_CTL_DEL, connection->fd, NULL);
    close(connection->fd);
    free(connection->in.data);
    free(connection->out.data);
    free(connection);
}

static void queue_stats_response(struct connection *connection)
{
    uint64_t requests = 0;
    uint64_t selected = 0;
    char body[128];
    char head[128];
    int body_len;
    int head_len;

    for (int i = 0; i < settings.threads; i++) {
        requests += atomic_load(&workers[i].requests);
        selected += atomic_load(&workers[i].selected);
    }
    body_len = snprintf(body, sizeof(body), "requests %llu\nselected %llu\n",
                        (unsigned long long)requests, (unsigned long long)selected);
    head_len = snprintf(head, sizeof(head),
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        "Content-Length: %d\r\n\r\n",
                        body_len);
    bytes_append(&connection->out, head, (size_t)head_len);
    bytes_append(&connection->out, body, (size_t)body_len);
}

/* Counts and records one complete request, and queues its response unless it must hang. */
static void handle_request(struct worker *worker, struct connection *connection,
                           const struct request *request, const char *body)
{
    static const char event_key[] = "\"eventId\":\"";
    bool selected = settings.select_id && strcmp(request->webhook_id, settings.select_id) == 0;
    struct record record;
    const char *found;

    if (request->is_stats) {
        queue_stats_response(connection);
        return;
    }
    record.received_us = now_us();
    atomic_fetch_add_explicit(&worker->requests, 1, memory_order_relaxed);
    if (selected)
        atomic_fetch_add_explicit(&worker->selected, 1, memory_order_relaxed);

    if (settings.records_path) {
        found = memmem(body, request->body_len, event_key, sizeof(event_key) - 1);
        record.event_id[0] = '\0';
        if (found)
            copy_token(record.event_id, found + sizeof(event_key) - 1, body + request->body_len,
                       "\"");
        memcpy(record.webhook_id, request->webhook_id, sizeof(record.webhook_id));
        record_log_add(&worker->log, &record);
    }
    if (selected && settings.hang)
        connection->hung = true;
    else
        bytes_append(&connection->out, response_ok, sizeof(response_ok) - 1);
}

/* Handles every complete request in the input buffer. Returns false to close. */
static bool process_input(struct worker *worker, struct connection *connection)
{
    struct request request;

    while (!connection->hung && connection->in.len > 0) {
        const char *data = connection->in.data + connection->in.start;

        if (!parse_head(data, connection->in.len, &request))
            return connection->in.len <= HEADER_BYTES_MAX;
        if (request.body_len > BODY_BYTES_MAX)
            return false;
        if (connection->in.len < request.header_len + request.body_len) {
            if (request.expects_continue && !connection->continue_sent) {
                bytes_append(&connection->out, response_continue, sizeof(response_continue) - 1);
                connection->continue_sent = true;
            }
            return true;
        }
        handle_request(worker, connection, &request, data + request.header_len);
        bytes_consume(&connection->in, request.header_len + request.body_len);
        connection->continue_sent = false;
        connection->close_after = request.close_after;
        if (request.close_after)
            break;
    }
    return true;
}

/* Registers for EPOLLOUT only while output waits, to save a syscall per response. */
static void watch_writable(struct worker *worker, struct connection *connection, bool want)
{
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = connection};

    if (connection->want_write == want)
        return;
    if (want)
        event.events |= EPOLLOUT;
    epoll_ctl(worker->epoll_fd, EPOLL_CTL_MOD, connection->fd, &event);
    connection->want_write = want;
}

/* Sends queued output. Returns false on a write error. */
static bool flush_output(struct worker *worker, struct connection *connection)
{
    while (connection->out.len > 0) {
        ssize_t sent = send(connection->fd, connection->out.data + connection->out.start,
                            connection->out.len, MSG_NOSIGNAL);

        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            watch_writable(worker, connection, true);
            return true;
        }
        if (sent <= 0)
            return false;
        bytes_consume(&connection->out, (size_t)sent);
    }
    watch_writable(worker, connection, false);
    return true;
}

/* Reads what the socket has received. Returns false at end of stream or on an error. */
static bool read_input(struct connection *connection)
{
    for (;;) {
        ssize_t got;

        bytes_reserve(&connection->in, READ_CHUNK);
        got = recv(connection->fd, connection->in.data + connection->in.len, READ_CHUNK, 0);
        if (got > 0) {
            connection->in.len += (size_t)got;
            if (connection->hung)
                connection->in.len = 0; /* a hung connection only drains its input */
            if (got < READ_CHUNK)
                return true; /* drained: epoll is level-triggered, so later data wakes us again */
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        return got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
}

static void serve_connection(struct worker *worker, struct connection *connection, uint32_t events)
{
    bool open = true;

    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        open = read_input(connection) && process_input(worker, connection);
    if (open && connection->out.len > 0)
        open = flush_output(worker, connection);
    if (!open || (connection->close_after && connection->out.len == 0))
        connection_close(worker, connection);
}

static void accept_connections(struct worker *worker)
{
    for (;;) {
        int fd = accept4(worker->listener.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct connection *connection;
        struct epoll_event event;
        int one = 1;

        if (fd < 0)
            return;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        connection = calloc(1, sizeof(*connection));
        if (!connection) {
            close(fd);
            return;
        }
        connection->kind = HANDLE_CONNECTION;
        connection->fd = fd;
        event.events = EPOLLIN;
        event.data.ptr = connection;
        if (epoll_ctl(worker->epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) {
            close(fd);
            free(connection);
            continue;
        }
        connection->next = worker->connections;
        if (worker->connections)
            worker->connections->prev = connection;
        worker->connections = connection;
    }
}

static void *worker_main(void *arg)
{
    struct worker *worker = arg;
    struct epoll_event events[EVENTS_PER_WAIT];

    for (;;) {
        int count = epoll_wait(worker->epoll_fd, events, EVENTS_PER_WAIT, -1);

        for (int i = 0; i < count; i++) {
            struct handle *handle = events[i].data.ptr;

            if (handle->kind == HANDLE_WAKE)
                return NULL;
            if (handle->kind == HANDLE_LISTENER)
                accept_connections(worker);
            else
                serve_connection(worker, (struct connection *)handle, events[i].events);
        }
    }
}

/* Opens a listening socket on 127.0.0.1:port. SO_REUSEPORT lets every worker bind it. */
static int open_listener(int port)
{
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;

    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) != 0 || listen(fd, 4096) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_in address;
    socklen_t len = sizeof(address);

    if (getsockname(fd, (struct sockaddr *)&address, &len) != 0)
        return -1;
    return ntohs(address.sin_port);
}

static int worker_open(struct worker *worker, int port)
{
    struct epoll_event event = {.events = EPOLLIN};

    worker->listener.kind = HANDLE_LISTENER;
    worker->listener.fd = open_listener(port);
    worker->wake.kind = HANDLE_WAKE;
    worker->wake.fd = eventfd(0, EFD_CLOEXEC);
    worker->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (worker->listener.fd < 0 || worker->wake.fd < 0 || worker->epoll_fd < 0)
        return -1;
    event.data.ptr = &worker->listener;
    if (epoll_ctl(worker->epoll_fd, EPOLL_CTL_ADD, worker->listener.fd, &event) != 0)
        return -1;
    event.data.ptr = &worker->wake;
    return epoll_ctl(worker->epoll_fd, EPOLL_CTL_ADD, worker->wake.fd, &event);
}

static int write_records(const char *path)
{
    FILE *file = fopen(path, "w");
    int result = 0;

    if (!file) {
        fprintf(stderr, "sink: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < settings.threads; i++) {
        const struct record_log *log = &workers[i].log;

        for (size_t j = 0; j < log->count; j++)
            fprintf(file, "%lld %s %s\n", (long long)log->items[j].received_us,
                    log->items[j].event_id[0] ? log->items[j].event_id : "-",
                    log->items[j].webhook_id[0] ? log->items[j].webhook_id : "-");
    }
    if (fclose(file) != 0)
        result = -1;
    return result;
}

static void usage(void)
{
    fprintf(stderr, "Usage: sink [--port N] [--threads N] [--records FILE] [--id WEBHOOK_ID]"
                    " [--hang]\n"
                    "Prints \"port N\" once listening; writes FILE on SIGTERM or SIGINT.\n");
    exit(2);
}

static void parse_arguments(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        bool has_value = i + 1 < argc;

        if (strcmp(argv[i], "--port") == 0 && has_value)
            settings.port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && has_value)
            settings.threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--records") == 0 && has_value)
            settings.records_path = argv[++i];
        else if (strcmp(argv[i], "--id") == 0 && has_value)
            settings.select_id = argv[++i];
        else if (strcmp(argv[i], "--hang") == 0)
            settings.hang = true;
        else
            usage();
    }
    if (settings.threads < 1 || settings.threads > THREADS_MAX || settings.port < 0 ||
        settings.port > 65535 || (settings.hang && !settings.select_id))
        usage();
}

/* Starts the workers on one port. The first bind picks the port when --port is 0. */
static int start_workers(void)
{
    int port = settings.port;

    for (int i = 0; i < settings.threads; i++) {
        if (worker_open(&workers[i], port) != 0) {
            fprintf(stderr, "sink: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
            return -1;
        }
        port = bound_port(workers[i].listener.fd);
    }
    for (int i = 0; i < settings.threads; i++)
        pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
    printf("port %d\n", port);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    sigset_t signals;
    int received = 0;
    uint64_t one = 1;
    int result = 0;

    parse_arguments(argc, argv);
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (start_workers() != 0)
        return 1;

    sigwait(&signals, &received);
    for (int i = 0; i < settings.threads; i++) {
        if (write(workers[i].wake.fd, &one, sizeof(one)) != sizeof(one))
            result = 1;
        pthread_join(workers[i].thread, NULL);
    }
    if (settings.records_path && write_records(settings.records_path) != 0)
        result = 1;
    for (int i = 0; i < settings.threads; i++) {
        while (workers[i].connections)
            connection_close(&workers[i], workers[i].connections);
        free(workers[i].log.items);
    }
    return result;
}
