/*
 * The REST API: shared context, the request and response that handlers see, and the route
 * table.
 *
 * libmicrohttpd calls the server from its thread pool. The server collects the body (bounded
 * by max_body_bytes), authenticates the caller, finds the route and calls its handler. A
 * handler reads the request, does its work under the store lock and fills the response; on
 * failure it returns a negative BH_ERR_* with err filled, and the server sends the JSON error
 * body {"error": {"code", "message", "field"}} with the matching HTTP status.
 */
#ifndef BEARHOOK_API_API_H
#define BEARHOOK_API_API_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "core/error.h"
#include "core/url.h"
#include "store/store.h"

/* A handler's status for "the response comes later": request->job is the queued work. */
#define BH_PENDING 1

#define ROUTE_PARAMS_MAX 3
#define ROUTE_PARAM_MAX 128 /* bytes of one path parameter; longer paths do not match */

struct dispatcher;
struct ingest;
struct ingest_job;

struct api_context {
    struct store *store; /* shared by all request threads; hold store_lock to use it */
    pthread_mutex_t store_lock;
    struct ingest *ingest;               /* commits events in groups */
    struct dispatcher *dispatcher;       /* notified of new deliveries; NULL when not running */
    const struct target_policy *targets; /* checks URLs when integrations are saved */
    size_t max_body_bytes;
};

struct request {
    const char *method;
    const char *path;
    struct MHD_Connection *connection;
    char params[ROUTE_PARAMS_MAX][ROUTE_PARAM_MAX + 1]; /* path parameters, in pattern order */
    struct user user;                                   /* the authenticated caller */
    const char *body;
    size_t body_len;
    int64_t started_ms;     /* monotonic clock, for the access log */
    struct ingest_job *job; /* set by a handler that returns BH_PENDING */
};

struct response {
    unsigned int status;      /* HTTP status; 200 unless the handler sets it */
    json_t *body;             /* owned; NULL for no body */
    char *text;               /* owned; a non-JSON body sent instead of body, or NULL */
    const char *content_type; /* of text */
};

typedef int route_handler(struct api_context *api, struct request *request,
                          struct response *response, struct bh_error *err);

struct route {
    const char *method;
    const char *pattern; /* segments, with "{name}" for a parameter */
    route_handler *handler;
    unsigned int flags; /* ROUTE_* */
};

#define ROUTE_PUBLIC 1u   /* served without an API key */
#define ROUTE_UNLOCKED 2u /* the handler does not use api->store, so runs without store_lock */

/*
 * Finds the route for method and path and fills params. Returns the route, or NULL; on NULL,
 * *path_matched is true when the path exists with another method (405) or not at all (404).
 */
const struct route *router_match(const char *method, const char *path,
                                 char params[ROUTE_PARAMS_MAX][ROUTE_PARAM_MAX + 1],
                                 bool *path_matched);

/* Returns the route table, for checks that every route is documented. */
const struct route *router_routes(size_t *count);
/* Writes the methods that path accepts, such as "GET, PUT", for the Allow header. */
void router_allowed_methods(const char *path, char *out, size_t size);

/* Request helpers (respond.c). */
/* Parses the body as a JSON object; errors name the line and column of malformed JSON. */
int request_json_object(const struct request *request, json_t **out, struct bh_error *err);
/* Returns the query parameter's value, or NULL. */
const char *request_query(const struct request *request, const char *name);
/* Reads ?limit=N: default_limit when absent, else 1 to max_limit; errors name "limit". */
int request_limit(const struct request *request, size_t default_limit, size_t max_limit,
                  size_t *limit, struct bh_error *err);
/* Sends an error body for err, mapping its status to the HTTP status. */
enum MHD_Result respond_error(struct MHD_Connection *connection, const struct bh_error *err);
enum MHD_Result respond_json(struct MHD_Connection *connection, unsigned int status, json_t *body);
/* Sends text (taken: freed by libmicrohttpd) with the given content type. */
enum MHD_Result respond_text(struct MHD_Connection *connection, unsigned int status,
                             const char *content_type, char *text);
unsigned int http_status_for(int status);

/* Input field helpers shared by the handlers. */
int json_reject_unknown_fields(json_t *object, const char *const *allowed, const char *path,
                               struct bh_error *err);
json_t *json_time_or_null(int64_t unix_ms);
/* Returns a campaign mapping's JSON form (campaigns.c). */
json_t *mapping_to_json(const struct mapping *mapping);
/*
 * Applies "events" and "active" from input over mapping, rejecting fields not in allowed (a
 * NULL-terminated list). Events must be among the integration's (campaigns.c).
 */
int mapping_apply_json(json_t *input, const char *const *allowed,
                       const struct integration *integration, struct mapping *mapping,
                       struct bh_error *err);

/*
 * Record helpers (records.c), shared by the record endpoints and event ingest.
 * record_load reads a stored record (*out NULL when there is none). record_merge validates
 * input, which must contain "id", and merges it over the stored record without writing. Errors
 * name fields under path (NULL for the kind's name), and *changed (when not NULL) is true when
 * the result differs from what is stored. text, when not NULL, receives the stored compact JSON
 * of a record that the merge left unchanged, and NULL otherwise. record_save writes a merged
 * record, given as its compact JSON text too when the caller has it (NULL to serialize it).
 * record_fetch reads one record or fails with BH_ERR_NOT_FOUND naming field; record_fetch_text also
 * returns the stored JSON text.
 */
int record_load(struct store *store, enum record_kind kind, const char *user_id, const char *id,
                json_t **out, struct bh_error *err);
int record_merge(struct store *store, enum record_kind kind, const char *user_id, json_t *input,
                 const char *path, json_t **normalized, bool *created, bool *changed, char **text,
                 struct bh_error *err);
int record_save(struct store *store, enum record_kind kind, const char *user_id,
                const json_t *normalized, const char *text, struct bh_error *err);
int record_fetch(struct store *store, enum record_kind kind, const char *user_id, const char *id,
                 const char *field, json_t **out, struct bh_error *err);
int record_fetch_text(struct store *store, enum record_kind kind, const char *user_id,
                      const char *id, const char *field, json_t **out, char **text,
                      struct bh_error *err);

/* Handlers, one file per resource. */
int handle_health(struct api_context *, struct request *, struct response *, struct bh_error *);
int handle_openapi(struct api_context *, struct request *, struct response *, struct bh_error *);
int handle_metrics(struct api_context *, struct request *, struct response *, struct bh_error *);
int handle_event_types(struct api_context *, struct request *, struct response *,
                       struct bh_error *);
int handle_integration_create(struct api_context *, struct request *, struct response *,
                              struct bh_error *);
int handle_integration_list(struct api_context *, struct request *, struct response *,
                            struct bh_error *);
int handle_integration_get(struct api_context *, struct request *, struct response *,
                           struct bh_error *);
/*
 * Names the kind of a failed test attempt from the error text that the dispatcher writes:
 * "timeout", "connection_refused", "dns_failure", "tls_failure", "target_refused",
 * "redirect", "http_status" or "connection_failed"; NULL when error is NULL.
 */
const char *test_failure_kind(const char *error, int http_status);
int handle_integration_test(struct api_context *, struct request *, struct response *,
                            struct bh_error *);
int handle_integration_delete(struct api_context *, struct request *, struct response *,
                              struct bh_error *);
int handle_integration_update(struct api_context *, struct request *, struct response *,
                              struct bh_error *);
int handle_integration_secret_get(struct api_context *, struct request *, struct response *,
                                  struct bh_error *);
int handle_integration_secret_rotate(struct api_context *, struct request *, struct response *,
                                     struct bh_error *);
int handle_mapping_create(struct api_context *, struct request *, struct response *,
                          struct bh_error *);
int handle_mapping_list(struct api_context *, struct request *, struct response *,
                        struct bh_error *);
int handle_mapping_update(struct api_context *, struct request *, struct response *,
                          struct bh_error *);
int handle_mapping_delete(struct api_context *, struct request *, struct response *,
                          struct bh_error *);
int handle_lead_export(struct api_context *, struct request *, struct response *,
                       struct bh_error *);
int handle_campaign_put(struct api_context *, struct request *, struct response *,
                        struct bh_error *);
int handle_campaign_get(struct api_context *, struct request *, struct response *,
                        struct bh_error *);
int handle_campaign_list(struct api_context *, struct request *, struct response *,
                         struct bh_error *);
int handle_lead_put(struct api_context *, struct request *, struct response *, struct bh_error *);
int handle_lead_get(struct api_context *, struct request *, struct response *, struct bh_error *);
int handle_lead_list(struct api_context *, struct request *, struct response *, struct bh_error *);
int handle_account_put(struct api_context *, struct request *, struct response *,
                       struct bh_error *);
int handle_account_get(struct api_context *, struct request *, struct response *,
                       struct bh_error *);
int handle_account_list(struct api_context *, struct request *, struct response *,
                        struct bh_error *);
int handle_event_create(struct api_context *, struct request *, struct response *,
                        struct bh_error *);
int handle_delivery_get(struct api_context *, struct request *, struct response *,
                        struct bh_error *);
int handle_delivery_list(struct api_context *, struct request *, struct response *,
                         struct bh_error *);
int handle_delivery_redeliver(struct api_context *, struct request *, struct response *,
                              struct bh_error *);
int handle_delivery_recover(struct api_context *, struct request *, struct response *,
                            struct bh_error *);

#endif
