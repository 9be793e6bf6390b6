/*
 * The route table. Patterns are matched segment by segment; "{name}" matches one non-empty
 * segment. Every route of the API is listed here and nowhere else.
 */
#include <stdio.h>
#include <string.h>

#include "api/api.h"

static const struct route routes[] = {
    {"GET", "/healthz", handle_health, ROUTE_PUBLIC},
    {"GET", "/metrics", handle_metrics, ROUTE_PUBLIC},
    {"GET", "/openapi.json", handle_openapi, ROUTE_PUBLIC},
    {"GET", "/v1/event-types", handle_event_types, 0},
    {"POST", "/v1/integrations", handle_integration_create, 0},
    {"GET", "/v1/integrations", handle_integration_list, 0},
    {"GET", "/v1/integrations/{id}", handle_integration_get, 0},
    {"DELETE", "/v1/integrations/{id}", handle_integration_delete, 0},
    {"PATCH", "/v1/integrations/{id}", handle_integration_update, 0},
    {"GET", "/v1/integrations/{id}/secret", handle_integration_secret_get, 0},
    {"POST", "/v1/integrations/{id}/secret/rotate", handle_integration_secret_rotate, 0},
    {"GET", "/v1/campaigns", handle_campaign_list, 0},
    {"GET", "/v1/campaigns/{id}", handle_campaign_get, 0},
    {"PUT", "/v1/campaigns/{id}", handle_campaign_put, 0},
    {"POST", "/v1/campaigns/{id}/integrations", handle_mapping_create, 0},
    {"GET", "/v1/campaigns/{id}/integrations", handle_mapping_list, 0},
    {"PATCH", "/v1/campaigns/{id}/integrations/{integrationId}", handle_mapping_update, 0},
    {"DELETE", "/v1/campaigns/{id}/integrations/{integrationId}", handle_mapping_delete, 0},
    {"GET", "/v1/leads", handle_lead_list, 0},
    {"GET", "/v1/leads/{id}", handle_lead_get, 0},
    {"PUT", "/v1/leads/{id}", handle_lead_put, 0},
    {"POST", "/v1/leads/{id}/export", handle_lead_export, 0},
    {"GET", "/v1/linkedin-accounts", handle_account_list, 0},
    {"GET", "/v1/linkedin-accounts/{id}", handle_account_get, 0},
    {"PUT", "/v1/linkedin-accounts/{id}", handle_account_put, 0},
    {"POST", "/v1/events", handle_event_create, ROUTE_UNLOCKED},
    {"GET", "/v1/deliveries/{id}", handle_delivery_get, 0},
    {"GET", "/v1/integrations/{id}/deliveries", handle_delivery_list, 0},
    {"POST", "/v1/integrations/{id}/recover", handle_delivery_recover, 0},
    {"POST", "/v1/deliveries/{id}/redeliver", handle_delivery_redeliver, 0},
    {"POST", "/v1/integrations/{id}/test", handle_integration_test, ROUTE_UNLOCKED},
};

/* Matches one pattern; fills params only on a match. */
static bool match_pattern(const char *pattern, const char *path,
                          char params[ROUTE_PARAMS_MAX][ROUTE_PARAM_MAX + 1])
{
    const char *found[ROUTE_PARAMS_MAX] = {NULL};
    size_t found_len[ROUTE_PARAMS_MAX] = {0};
    size_t count = 0;

    while (*pattern && *path) {
        const char *pattern_end = strchr(pattern + 1, '/');
        const char *path_end = strchr(path + 1, '/');
        size_t pattern_len;
        size_t path_len;

        if (*pattern != '/' || *path != '/')
            return false;
        pattern_len = pattern_end ? (size_t)(pattern_end - pattern) : strlen(pattern);
        path_len = path_end ? (size_t)(path_end - path) : strlen(path);

        if (pattern[1] == '{') {
            if (path_len < 2 || path_len - 1 > ROUTE_PARAM_MAX || count == ROUTE_PARAMS_MAX)
                return false;
            found[count] = path + 1;
            found_len[count++] = path_len - 1;
        } else if (pattern_len != path_len || strncmp(pattern, path, pattern_len) != 0) {
            return false;
        }
        pattern += pattern_len;
        path += path_len;
    }
    if (*pattern || *path)
        return false;

    for (size_t i = 0; i < count; i++) {
        memcpy(params[i], found[i], found_len[i]);
        params[i][found_len[i]] = '\0';
    }
    return true;
}

const struct route *router_match(const char *method, const char *path,
                                 char params[ROUTE_PARAMS_MAX][ROUTE_PARAM_MAX + 1],
                                 bool *path_matched)
{
    *path_matched = false;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (!match_pattern(routes[i].pattern, path, params))
            continue;
        *path_matched = true;
        if (strcmp(routes[i].method, method) == 0)
            return &routes[i];
    }
    return NULL;
}

void router_allowed_methods(const char *path, char *out, size_t size)
{
    char params[ROUTE_PARAMS_MAX][ROUTE_PARAM_MAX + 1];
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (!match_pattern(routes[i].pattern, path, params))
            continue;
        used += (size_t)snprintf(out + used, size > used ? size - used : 0, "%s%s",
                                 used ? ", " : "", routes[i].method);
    }
}

const struct route *router_routes(size_t *count)
{
    *count = sizeof(routes) / sizeof(routes[0]);
    return routes;
}
