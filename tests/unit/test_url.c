/*
 * Target URLs and the target policy, at save time (url_validate_target) and at connect time
 * (target_guard_install, exercised with real libcurl connections to a loopback listener).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "core/url.h"
#include "delivery/target.h"

enum policy_kind {
    POLICY_DEFAULT,     /* https only, no networks allowed */
    POLICY_HTTP,        /* plain http allowed, no networks allowed */
    POLICY_HTTP_LOCAL,  /* plain http, 127.0.0.0/8 and ::1 allowed */
    POLICY_PRIVATE_NET, /* https only, 10.0.0.0/24 allowed */
    POLICY_IPV6_LOOP,   /* https only, ::1 allowed but not 127.0.0.1 */
};

static void policy_make(enum policy_kind kind, struct target_policy *policy)
{
    static const char *const networks[] = {
        [POLICY_DEFAULT] = "",
        [POLICY_HTTP] = "",
        [POLICY_HTTP_LOCAL] = "127.0.0.0/8,::1",
        [POLICY_PRIVATE_NET] = "10.0.0.0/24",
        [POLICY_IPV6_LOOP] = "::1",
    };
    struct bh_error err;

    policy->allow_http = kind == POLICY_HTTP || kind == POLICY_HTTP_LOCAL;
    if (cidr_list_parse(networks[kind], &policy->allowed_networks, &err) != 0)
        fail_msg("cidr_list_parse failed: %s", err.message);
}

static void url_parse_accepts(void **state)
{
    static const struct {
        const char *url;
        const char *scheme;
        const char *host;
        int port;
    } cases[] = {
        {"https://example.com/webhook", "https", "example.com", 443},
        {"HTTPS://Hooks.Example.COM:8443/a?b=c#d", "https", "hooks.example.com", 8443},
        {"http://example.com", "http", "example.com", 80},
        {"HtTp://example.com:65535?x=1", "http", "example.com", 65535},
        {"https://example.com:/x", "https", "example.com", 443},
        {"https://example.com:000000000000080/x", "https", "example.com", 80},
        {"https://example.com.:1/", "https", "example.com.", 1},
        {"https://[2606:4700::1111]:8443/x", "https", "2606:4700::1111", 8443},
        {"https://[2001:DB8::1]/", "https", "2001:db8::1", 443},
        {"https://8.8.8.8/hook", "https", "8.8.8.8", 443},
        {"https://a_b-c.example.com#frag", "https", "a_b-c.example.com", 443},
        {"https://example.com/path%20with%20spaces", "https", "example.com", 443},
    };
    struct url_parts parts;
    struct bh_error err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bh_error_clear(&err);
        if (url_parse(cases[i].url, &parts, "url", &err) != 0)
            fail_msg("url_parse rejected \"%s\": %s", cases[i].url, err.message);
        assert_string_equal(parts.scheme, cases[i].scheme);
        assert_string_equal(parts.host, cases[i].host);
        assert_int_equal(parts.port, cases[i].port);
        url_parts_release(&parts);
        assert_null(parts.host);
    }
}

struct reject_case {
    const char *url;
    enum policy_kind policy;
    const char *message; /* a part of the expected message */
};

static void assert_rejected(const struct reject_case *c, const char *field)
{
    struct target_policy policy;
    struct bh_error err;
    int result;

    policy_make(c->policy, &policy);
    bh_error_clear(&err);
    result = url_validate_target(c->url, &policy, field, &err);
    cidr_list_release(&policy.allowed_networks);

    if (result == 0)
        fail_msg("url_validate_target accepted \"%s\"", c->url ? c->url : "(null)");
    assert_int_equal(result, BH_ERR_INVALID);
    assert_int_equal(err.status, BH_ERR_INVALID);
    assert_string_equal(err.field, field);
    if (!strstr(err.message, c->message))
        fail_msg("message for \"%s\" was \"%s\", expected it to contain \"%s\"", c->url,
                 err.message, c->message);
}

static void url_rejects_syntax(void **state)
{
    static const struct reject_case cases[] = {
        {"", POLICY_DEFAULT, "url is missing"},
        {NULL, POLICY_DEFAULT, "url is missing"},
        {"example.com/hook", POLICY_DEFAULT,
         "url \"example.com/hook\" is not an absolute URL; write it with its scheme"},
        {"//example.com/hook", POLICY_DEFAULT, "is not an absolute URL"},
        {"ftp://example.com/", POLICY_DEFAULT,
         "url \"ftp://example.com/\" has an unsupported scheme; use https://"},
        {"httpss://example.com/", POLICY_DEFAULT, "has an unsupported scheme"},
        {"https://user@example.com/", POLICY_DEFAULT,
         "url \"https://user@example.com/\" contains user info before @; send credentials in "
         "a custom header such as Authorization instead"},
        {"https://user:secret@example.com/", POLICY_DEFAULT, "contains user info"},
        {"https://example.com:0/", POLICY_DEFAULT,
         "has a port out of range; use a number from 1 to 65535"},
        {"https://example.com:65536/", POLICY_DEFAULT, "has a port out of range"},
        {"https://example.com:4294967297/", POLICY_DEFAULT, "has a port out of range"},
        {"https://example.com:8a/", POLICY_DEFAULT, "has an invalid port"},
        {"https://example.com:-1/", POLICY_DEFAULT, "has an invalid port"},
        {"https://example.com:abcdefg/", POLICY_DEFAULT, "has an invalid port"},
        {"https://example.com:99999999999999999999/", POLICY_DEFAULT, "has a port out of range"},
        {"https://", POLICY_DEFAULT, "has no host"},
        {"https:///hook", POLICY_DEFAULT, "has no host"},
        {"https://:443/", POLICY_DEFAULT, "has no host"},
        {"https://exa mple.com/", POLICY_DEFAULT, "contains a space"},
        {"https://example.com/a b", POLICY_DEFAULT, "contains a space"},
        {"https://example.com/\r\nX-Injected: 1", POLICY_DEFAULT, "contains a control character"},
        {"https://example.com/\t", POLICY_DEFAULT, "contains a control character"},
        {"https://example.com/\x7f", POLICY_DEFAULT, "contains a control character"},
        {"https://example.com\\@attacker.example/", POLICY_DEFAULT, "contains a backslash"},
        {"https://[::1/", POLICY_DEFAULT, "has an IPv6 host without its closing ]"},
        {"https://[fe80::1%25eth0]/", POLICY_DEFAULT, "has an invalid IPv6 host"},
        {"https://[127.0.0.1]/", POLICY_DEFAULT, "has an invalid IPv6 host"},
        {"https://[2606:4700::1111]x/", POLICY_DEFAULT, "has characters after its IPv6 host"},
        {"https://::1/", POLICY_DEFAULT, "has no host"},
        {"https://exa%6dple.com/", POLICY_DEFAULT, "has a host with characters outside"},
        {"https://ex\xc3\xa4mple.com/", POLICY_DEFAULT, "write an international name in its xn--"},
        {"https://a..b/", POLICY_DEFAULT, "has an empty label in its host name"},
        {"https://.example.com/", POLICY_DEFAULT, "has an empty label"},
        {"https://example.com../", POLICY_DEFAULT, "has an empty label"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_rejected(&cases[i], "url");
}

static void url_length_limits(void **state)
{
    struct target_policy policy;
    struct bh_error err;
    char *url = malloc(URL_MAX + 2);
    char host[300];
    const char *prefix = "https://example.com/";
    size_t prefix_len = strlen(prefix);

    policy_make(POLICY_DEFAULT, &policy);

    /* Exactly URL_MAX characters pass; one more fails. */
    memcpy(url, prefix, prefix_len);
    memset(url + prefix_len, 'a', URL_MAX - prefix_len);
    url[URL_MAX] = '\0';
    assert_int_equal(url_validate_target(url, &policy, "url", &err), 0);
    url[URL_MAX] = 'a';
    url[URL_MAX + 1] = '\0';
    assert_int_equal(url_validate_target(url, &policy, "url", &err), BH_ERR_INVALID);
    assert_non_null(strstr(err.message, "is longer than 2048 characters"));
    assert_non_null(strstr(err.message, "...\""));

    /* A 63-character label passes; 64 fail. */
    snprintf(host, sizeof(host), "https://%063d.example.com/", 0);
    assert_int_equal(url_validate_target(host, &policy, "url", &err), 0);
    snprintf(host, sizeof(host), "https://%064d.example.com/", 0);
    assert_int_equal(url_validate_target(host, &policy, "url", &err), BH_ERR_INVALID);
    assert_non_null(strstr(err.message, "label longer than 63 characters"));

    /* Host names of 253 characters pass, 254 fail: labels of 49 characters and dots. */
    snprintf(host, sizeof(host), "https://%049d.%049d.%049d.%049d.%049d.abc/", 1, 2, 3, 4, 5);
    assert_int_equal(url_validate_target(host, &policy, "url", &err), 0);
    snprintf(host, sizeof(host), "https://%049d.%049d.%049d.%049d.%049d.abcd/", 1, 2, 3, 4, 5);
    assert_int_equal(url_validate_target(host, &policy, "url", &err), BH_ERR_INVALID);
    assert_non_null(strstr(err.message, "host name longer than 253 characters"));

    cidr_list_release(&policy.allowed_networks);
    free(url);
}

static void url_requires_https(void **state)
{
    struct target_policy policy;
    struct bh_error err;

    policy_make(POLICY_DEFAULT, &policy);
    assert_int_equal(url_validate_target("http://x", &policy, "url", &err), BH_ERR_INVALID);
    assert_string_equal(err.field, "url");
    assert_string_equal(err.message, "url \"http://x\" must start with https://; plain http is "
                                     "allowed only when the server runs with --allow-http");
    assert_int_equal(url_validate_target("HTTP://example.com/", &policy, "url", &err),
                     BH_ERR_INVALID);
    assert_int_equal(url_validate_target("https://example.com/", &policy, "url", &err), 0);
    assert_int_equal(url_validate_target("http://example.com/", NULL, "url", &err), BH_ERR_INVALID);
    cidr_list_release(&policy.allowed_networks);

    policy_make(POLICY_HTTP, &policy);
    assert_int_equal(url_validate_target("http://example.com/", &policy, "url", &err), 0);
    assert_int_equal(url_validate_target("http://x", &policy, "url", &err), 0);
    cidr_list_release(&policy.allowed_networks);
}

static void url_rejects_special_hosts(void **state)
{
    static const struct reject_case cases[] = {
        {"https://10.0.0.5/", POLICY_DEFAULT,
         "url host 10.0.0.5 is a private address; such targets are refused unless the server "
         "allows the network with --allow-networks"},
        {"https://127.0.0.1/", POLICY_DEFAULT, "url host 127.0.0.1 is a loopback address"},
        {"https://2130706433/", POLICY_DEFAULT,
         "url host 2130706433 (127.0.0.1) is a loopback address"},
        {"https://0177.0.0.1/", POLICY_DEFAULT, "(127.0.0.1) is a loopback address"},
        {"https://0x7f.1/", POLICY_DEFAULT, "url host 0x7f.1 (127.0.0.1) is a loopback address"},
        {"https://127.1:8443/", POLICY_DEFAULT, "(127.0.0.1) is a loopback address"},
        {"https://127.0.0.1./", POLICY_DEFAULT, "(127.0.0.1) is a loopback address"},
        {"https://[::1]/", POLICY_DEFAULT, "url host ::1 is a loopback address"},
        {"https://[::ffff:127.0.0.1]/", POLICY_DEFAULT, "is a loopback address"},
        {"https://[::ffff:7f00:1]/", POLICY_DEFAULT, "is a loopback address"},
        {"https://169.254.169.254/latest/meta-data/", POLICY_DEFAULT,
         "url host 169.254.169.254 is a link-local address"},
        {"https://100.64.0.1/", POLICY_DEFAULT,
         "url host 100.64.0.1 is in the shared address space 100.64.0.0/10"},
        {"https://0.0.0.0/", POLICY_DEFAULT, "url host 0.0.0.0 is an unspecified address"},
        {"https://0/", POLICY_DEFAULT, "url host 0 (0.0.0.0) is an unspecified address"},
        {"https://0.1.2.3/", POLICY_DEFAULT, "is in the \"this network\" range 0.0.0.0/8"},
        {"https://192.0.0.8/", POLICY_DEFAULT, "is in a range reserved for IETF protocol"},
        {"https://[fd00::1]/", POLICY_DEFAULT, "url host fd00::1 is a unique local address"},
        {"https://[fe80::1]/", POLICY_DEFAULT, "is a link-local address"},
        {"https://[64:ff9b::a00:1]/", POLICY_DEFAULT, "is a private address"},
        {"https://[::127.0.0.1]/", POLICY_DEFAULT, "is an IPv4-compatible address"},
        {"https://224.0.0.1/", POLICY_DEFAULT, "is a multicast address"},
        {"https://255.255.255.255/", POLICY_DEFAULT, "is a broadcast address"},
        {"https://192.0.2.10/", POLICY_DEFAULT, "is a documentation address"},
        {"https://10.0.1.5/", POLICY_PRIVATE_NET, "url host 10.0.1.5 is a private address"},
        {"https://localhost/", POLICY_DEFAULT,
         "url host localhost is a loopback name; such targets are refused unless the server "
         "allows 127.0.0.1 with --allow-networks"},
        {"https://LOCALHOST:8443/", POLICY_DEFAULT, "url host localhost is a loopback name"},
        {"https://localhost./", POLICY_DEFAULT, "is a loopback name"},
        {"https://api.localhost/", POLICY_DEFAULT, "url host api.localhost is a loopback name"},
        {"https://localhost/", POLICY_IPV6_LOOP, "is a loopback name"},
        {"http://127.0.0.1:8080/", POLICY_HTTP, "is a loopback address"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_rejected(&cases[i], "url");
}

static void url_accepts_allowed_hosts(void **state)
{
    static const struct {
        const char *url;
        enum policy_kind policy;
    } cases[] = {
        {"https://8.8.8.8/", POLICY_DEFAULT},
        {"https://[2606:4700::1111]/", POLICY_DEFAULT},
        {"https://notlocalhost.com/", POLICY_DEFAULT},
        {"https://localhost.example.com/", POLICY_DEFAULT},
        {"https://10.0.0.5/", POLICY_PRIVATE_NET},
        {"https://[::ffff:10.0.0.9]/", POLICY_PRIVATE_NET},
        {"http://127.0.0.1:8080/", POLICY_HTTP_LOCAL},
        {"http://2130706433:8080/", POLICY_HTTP_LOCAL},
        {"http://[::1]:8080/", POLICY_HTTP_LOCAL},
        {"http://localhost:8080/", POLICY_HTTP_LOCAL},
        {"http://hooks.localhost:8080/", POLICY_HTTP_LOCAL},
        {"https://[::1]/", POLICY_IPV6_LOOP},
    };
    struct target_policy policy;
    struct bh_error err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        policy_make(cases[i].policy, &policy);
        bh_error_clear(&err);
        if (url_validate_target(cases[i].url, &policy, "url", &err) != 0)
            fail_msg("url_validate_target rejected \"%s\": %s", cases[i].url, err.message);
        cidr_list_release(&policy.allowed_networks);
    }
}

static void url_errors_name_field(void **state)
{
    static const struct reject_case cases[] = {
        {"http://example.com/", POLICY_DEFAULT, "target \"http://example.com/\" must start with"},
        {"https://10.0.0.1/", POLICY_DEFAULT, "target host 10.0.0.1 is a private address"},
        {"https://a@b/", POLICY_DEFAULT, "target \"https://a@b/\" contains user info"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_rejected(&cases[i], "target");
}

static void target_policy_reasons(void **state)
{
    struct target_policy policy;
    struct netaddr addr;
    const char *reason = "unset";

    policy_make(POLICY_PRIVATE_NET, &policy);

    assert_true(netaddr_parse("8.8.8.8", &addr));
    assert_true(target_policy_allows(&policy, &addr, &reason));
    assert_null(reason);

    assert_true(netaddr_parse("10.0.0.200", &addr));
    assert_true(target_policy_allows(&policy, &addr, &reason));
    assert_null(reason);

    assert_true(netaddr_parse("10.0.1.1", &addr));
    assert_false(target_policy_allows(&policy, &addr, &reason));
    assert_string_equal(reason, "private");

    assert_true(netaddr_parse("[fe80::1]", &addr));
    assert_false(target_policy_allows(&policy, &addr, &reason));
    assert_string_equal(reason, "link-local");
    assert_false(target_policy_allows(&policy, &addr, NULL));

    /* Without a policy every special range is rejected. */
    assert_true(netaddr_parse("10.0.0.200", &addr));
    assert_false(target_policy_allows(NULL, &addr, &reason));
    assert_string_equal(reason, "private");

    cidr_list_release(&policy.allowed_networks);
}

/* A listening TCP socket on 127.0.0.1 with an ephemeral port. */
struct listener {
    int fd;
    int port;
};

static void listener_open(struct listener *listener)
{
    struct sockaddr_in addr = {0};
    socklen_t len = sizeof(addr);

    listener->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(listener->fd >= 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(listener->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(listener->fd, 8), 0);
    assert_int_equal(getsockname(listener->fd, (struct sockaddr *)&addr, &len), 0);
    listener->port = ntohs(addr.sin_port);
}

/* Accepts one pending connection within timeout_ms; true when there was one. */
static bool listener_accept(struct listener *listener, int timeout_ms)
{
    struct pollfd pfd = {.fd = listener->fd, .events = POLLIN};
    int client;

    if (poll(&pfd, 1, timeout_ms) != 1)
        return false;
    client = accept(listener->fd, NULL, NULL);
    if (client < 0)
        return false;
    close(client);
    return true;
}

/* Connects (and only connects) to url with the guard installed; returns libcurl's result. */
static CURLcode guarded_connect(const char *url, const struct target_policy *policy,
                                struct target_guard *guard)
{
    CURL *easy = curl_easy_init();
    CURLcode result;

    assert_non_null(easy);
    guard->policy = policy;
    target_guard_install(easy, guard);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    result = curl_easy_perform(easy);
    curl_easy_cleanup(easy);
    return result;
}

static void target_guard_rejects_loopback(void **state)
{
    struct listener listener;
    struct target_policy policy;
    struct target_guard guard;
    char url[64];
    CURLcode result;

    listener_open(&listener);
    policy_make(POLICY_HTTP, &policy);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", listener.port);

    result = guarded_connect(url, &policy, &guard);
    assert_int_equal(result, CURLE_COULDNT_CONNECT);
    assert_string_equal(guard.refused,
                        "address 127.0.0.1 is loopback; refused by the target policy");
    assert_false(listener_accept(&listener, 200));

    /* A host name is checked on the address it resolves to. */
    snprintf(url, sizeof(url), "http://localhost:%d/", listener.port);
    result = guarded_connect(url, &policy, &guard);
    assert_int_equal(result, CURLE_COULDNT_CONNECT);
    assert_non_null(strstr(guard.refused, "is loopback; refused by the target policy"));
    assert_false(listener_accept(&listener, 200));

    cidr_list_release(&policy.allowed_networks);
    close(listener.fd);
}

static void target_guard_allows_listed(void **state)
{
    struct listener listener;
    struct target_policy policy;
    struct target_guard guard;
    char url[64];
    CURLcode result;

    listener_open(&listener);
    policy_make(POLICY_HTTP_LOCAL, &policy);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", listener.port);

    result = guarded_connect(url, &policy, &guard);
    assert_int_equal(result, CURLE_OK);
    assert_string_equal(guard.refused, "");
    assert_true(listener_accept(&listener, 2000));

    cidr_list_release(&policy.allowed_networks);
    close(listener.fd);
}

static void target_guard_restricts_protocols(void **state)
{
    struct listener listener;
    struct target_policy policy;
    struct target_guard guard;
    char url[64];

    listener_open(&listener);

    /* Plain http is rejected by libcurl itself when the policy requires https. */
    policy_make(POLICY_HTTP_LOCAL, &policy);
    policy.allow_http = false;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", listener.port);
    assert_int_equal(guarded_connect(url, &policy, &guard), CURLE_UNSUPPORTED_PROTOCOL);
    assert_false(listener_accept(&listener, 200));

    policy.allow_http = true;
    snprintf(url, sizeof(url), "ftp://127.0.0.1:%d/", listener.port);
    assert_int_equal(guarded_connect(url, &policy, &guard), CURLE_UNSUPPORTED_PROTOCOL);
    assert_false(listener_accept(&listener, 200));

    cidr_list_release(&policy.allowed_networks);
    close(listener.fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(url_parse_accepts),
        cmocka_unit_test(url_rejects_syntax),
        cmocka_unit_test(url_length_limits),
        cmocka_unit_test(url_requires_https),
        cmocka_unit_test(url_rejects_special_hosts),
        cmocka_unit_test(url_accepts_allowed_hosts),
        cmocka_unit_test(url_errors_name_field),
        cmocka_unit_test(target_policy_reasons),
        cmocka_unit_test(target_guard_rejects_loopback),
        cmocka_unit_test(target_guard_allows_listed),
        cmocka_unit_test(target_guard_restricts_protocols),
    };
    int failures;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    failures = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failures;
}
