/*
 * The OpenAPI document and the router agree: every route is documented, every documented
 * operation is routed, and the document is well-formed OpenAPI 3.1 JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/api.h"

extern const unsigned char openapi_json[];
extern const size_t openapi_json_len;

/* Replaces every "{name}" with "{}" so that parameter names do not matter. */
static void normalize_template(const char *path, char *out, size_t size)
{
    size_t used = 0;

    for (const char *p = path; *p && used + 3 < size; p++) {
        if (*p == '{') {
            const char *end = strchr(p, '}');

            if (!end)
                break;
            out[used++] = '{';
            out[used++] = '}';
            p = end;
            continue;
        }
        out[used++] = *p;
    }
    out[used] = '\0';
}

static json_t *load_document(void)
{
    json_error_t error;
    json_t *document = json_loadb((const char *)openapi_json, openapi_json_len, 0, &error);

    if (!document)
        fail_msg("docs/openapi.json is not valid JSON: %s at line %d", error.text, error.line);
    return document;
}

/* Returns the document's operation object for method and a router pattern, or NULL. */
static json_t *find_operation(json_t *paths, const char *method, const char *pattern)
{
    char wanted[256];
    char candidate[256];
    char lower[16];
    const char *path;
    json_t *item;

    normalize_template(pattern, wanted, sizeof(wanted));
    for (size_t i = 0; method[i] && i < sizeof(lower) - 1; i++)
        lower[i] = (char)(method[i] - 'A' + 'a');
    lower[strlen(method) < sizeof(lower) ? strlen(method) : sizeof(lower) - 1] = '\0';

    json_object_foreach(paths, path, item)
    {
        normalize_template(path, candidate, sizeof(candidate));
        if (strcmp(candidate, wanted) == 0)
            return json_object_get(item, lower);
    }
    return NULL;
}

static void test_document_is_openapi_31(void **state)
{
    json_t *document = load_document();

    assert_string_equal(json_string_value(json_object_get(document, "openapi")), "3.1.0");
    assert_non_null(json_object_get(json_object_get(document, "info"), "title"));
    assert_true(json_is_object(json_object_get(document, "paths")));
    json_decref(document);
}

static void test_every_route_documented(void **state)
{
    json_t *document = load_document();
    json_t *paths = json_object_get(document, "paths");
    size_t count;
    const struct route *routes = router_routes(&count);

    for (size_t i = 0; i < count; i++) {
        if (!find_operation(paths, routes[i].method, routes[i].pattern))
            fail_msg("route %s %s is missing from docs/openapi.json", routes[i].method,
                     routes[i].pattern);
    }
    json_decref(document);
}

static void test_every_operation_routed(void **state)
{
    static const char *const methods[] = {"get", "put", "post", "delete", "patch"};
    json_t *document = load_document();
    json_t *paths = json_object_get(document, "paths");
    size_t count;
    const struct route *routes = router_routes(&count);
    const char *path;
    json_t *item;

    json_object_foreach(paths, path, item)
    {
        for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
            char documented[256];
            char routed[256];
            bool found = false;

            if (!json_object_get(item, methods[m]))
                continue;
            normalize_template(path, documented, sizeof(documented));
            for (size_t i = 0; i < count && !found; i++) {
                normalize_template(routes[i].pattern, routed, sizeof(routed));
                found = strcasecmp(routes[i].method, methods[m]) == 0 &&
                        strcmp(routed, documented) == 0;
            }
            if (!found)
                fail_msg("docs/openapi.json documents %s %s, which no route serves", methods[m],
                         path);
        }
    }
    json_decref(document);
}

static void test_operations_describe_responses(void **state)
{
    json_t *document = load_document();
    json_t *paths = json_object_get(document, "paths");
    const char *path;
    const char *method;
    json_t *item;
    json_t *operation;

    json_object_foreach(paths, path, item)
    {
        json_object_foreach(item, method, operation)
        {
            json_t *responses = json_object_get(operation, "responses");

            if (!json_is_object(responses) || json_object_size(responses) == 0)
                fail_msg("%s %s has no responses", method, path);
            if (!json_is_string(json_object_get(operation, "summary")))
                fail_msg("%s %s has no summary", method, path);
        }
    }
    json_decref(document);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_document_is_openapi_31),
        cmocka_unit_test(test_every_route_documented),
        cmocka_unit_test(test_every_operation_routed),
        cmocka_unit_test(test_operations_describe_responses),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
