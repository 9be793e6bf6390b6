/*
 * The failure kinds that POST /v1/integrations/{id}/test reports, from the error texts that
 * the dispatcher writes for each kind of failed attempt.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "api/api.h"

static void test_kind_per_error_text(void **state)
{
    static const struct {
        const char *error;
        int http_status;
        const char *kind;
    } cases[] = {
        {"timed out after 5000 ms", 0, "timeout"},
        {"connection refused", 0, "connection_refused"},
        {"could not resolve host hooks.example.invalid", 0, "dns_failure"},
        {"could not resolve host: Could not resolve host: x", 0, "dns_failure"},
        {"TLS handshake failed: SSL certificate problem: self-signed certificate", 0,
         "tls_failure"},
        {"address 127.0.0.1 is loopback; refused by the target policy", 0, "target_refused"},
        {"HTTP 302 redirect to https://elsewhere.example/ not followed", 302, "redirect"},
        {"HTTP 500", 500, "http_status"},
        {"host unreachable", 0, "connection_failed"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *kind = test_failure_kind(cases[i].error, cases[i].http_status);

        assert_non_null(kind);
        if (strcmp(kind, cases[i].kind) != 0)
            fail_msg("\"%s\" gave %s, expected %s", cases[i].error, kind, cases[i].kind);
    }
}

static void test_success_has_no_kind(void **state)
{
    assert_null(test_failure_kind(NULL, 200));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_per_error_text),
        cmocka_unit_test(test_success_has_no_kind),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
