#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "core/netaddr.h"

/* Asserts that text parses and that its range name is expected (NULL for global unicast). */
static void assert_range(const char *text, const char *expected)
{
    struct netaddr addr;
    const char *range;

    if (!netaddr_parse(text, &addr))
        fail_msg("netaddr_parse rejected \"%s\"", text);
    range = netaddr_special_range(&addr);
    if (expected == NULL && range != NULL)
        fail_msg("\"%s\" is in range \"%s\", expected a global address", text, range);
    if (expected != NULL && (range == NULL || strcmp(range, expected) != 0))
        fail_msg("\"%s\" is in range \"%s\", expected \"%s\"", text, range ? range : "(none)",
                 expected);
}

static void netaddr_loopback_spellings(void **state)
{
    static const char *const ipv4_spellings[] = {
        "127.0.0.1",  "2130706433",      "0177.0.0.1",       "0x7f.1",
        "127.1",      "0x7f000001",      "017700000001",     "127.0.1",
        "0X7F.0.0.1", "127.000.000.001", "0x7f.0x0.0x0.0x1", "00000177.1",
    };
    static const char *const ipv6_spellings[] = {
        "::ffff:127.0.0.1",   "[::ffff:127.0.0.1]", "::ffff:7f00:1", "0:0:0:0:0:ffff:7f00:0001",
        "64:ff9b::127.0.0.1", "2002:7f00:1::",      "::1",           "[0:0:0:0:0:0:0:1]",
    };
    struct netaddr addr;
    char text[NETADDR_TEXT_MAX];

    for (size_t i = 0; i < sizeof(ipv4_spellings) / sizeof(ipv4_spellings[0]); i++) {
        assert_range(ipv4_spellings[i], "loopback");
        assert_true(netaddr_parse(ipv4_spellings[i], &addr));
        assert_int_equal(addr.family, AF_INET);
        netaddr_format(&addr, text);
        assert_string_equal(text, "127.0.0.1");
    }
    for (size_t i = 0; i < sizeof(ipv6_spellings) / sizeof(ipv6_spellings[0]); i++) {
        assert_range(ipv6_spellings[i], "loopback");
        assert_true(netaddr_parse(ipv6_spellings[i], &addr));
        assert_int_equal(addr.family, AF_INET6);
    }
}

static void netaddr_rejects_non_literals(void **state)
{
    static const char *const inputs[] = {
        "",
        "example.com",
        "127.0.0.1 junk",
        "127.0.0.1x",
        " 127.0.0.1",
        "127.0.0.1.",
        "1.2.3.256",
        "4294967296",
        "1.16777216",
        "1..2",
        "0x",
        "08",
        "-1",
        "+127.0.0.1",
        "fe80::1%eth0",
        "[fe80::1%25eth0]",
        "[127.0.0.1]",
        "[::1",
        "::1]",
        "::g",
        "1:2:3:4:5:6:7:8:9",
        "[]",
        "127.0.0.1/8",
        "localhost",
    };
    struct netaddr addr;

    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        if (netaddr_parse(inputs[i], &addr))
            fail_msg("netaddr_parse accepted \"%s\"", inputs[i]);
    }
    assert_false(netaddr_parse(NULL, &addr));
}

static void netaddr_format_normalizes(void **state)
{
    struct netaddr addr;
    char text[NETADDR_TEXT_MAX];

    assert_true(netaddr_parse("[2001:DB8:0:0::1]", &addr));
    netaddr_format(&addr, text);
    assert_string_equal(text, "2001:db8::1");

    assert_true(netaddr_parse("0xa.0xfffffe", &addr));
    netaddr_format(&addr, text);
    assert_string_equal(text, "10.255.255.254");
}

struct range_case {
    const char *address;
    const char *range; /* NULL for a globally reachable address */
};

static void netaddr_ipv4_ranges(void **state)
{
    /* For each range: its first and last address, and the neighbours just outside. */
    static const struct range_case cases[] = {
        {"0.0.0.0", "unspecified"},
        {"0.0.0.1", "this network"},
        {"0.255.255.255", "this network"},
        {"1.0.0.0", NULL},
        {"9.255.255.255", NULL},
        {"10.0.0.0", "private"},
        {"10.255.255.255", "private"},
        {"11.0.0.0", NULL},
        {"100.63.255.255", NULL},
        {"100.64.0.0", "shared address space"},
        {"100.127.255.255", "shared address space"},
        {"100.128.0.0", NULL},
        {"126.255.255.255", NULL},
        {"127.0.0.0", "loopback"},
        {"127.255.255.255", "loopback"},
        {"128.0.0.0", NULL},
        {"169.253.255.255", NULL},
        {"169.254.0.0", "link-local"},
        {"169.254.169.254", "link-local"},
        {"169.255.0.0", NULL},
        {"172.15.255.255", NULL},
        {"172.16.0.0", "private"},
        {"172.31.255.255", "private"},
        {"172.32.0.0", NULL},
        {"191.255.255.255", NULL},
        {"192.0.0.0", "IETF protocol assignments"},
        {"192.0.0.255", "IETF protocol assignments"},
        {"192.0.1.0", NULL},
        {"192.0.2.0", "documentation"},
        {"192.0.2.255", "documentation"},
        {"192.0.3.0", NULL},
        {"192.167.255.255", NULL},
        {"192.168.0.0", "private"},
        {"192.168.255.255", "private"},
        {"192.169.0.0", NULL},
        {"198.17.255.255", NULL},
        {"198.18.0.0", "benchmarking"},
        {"198.19.255.255", "benchmarking"},
        {"198.20.0.0", NULL},
        {"198.51.99.255", NULL},
        {"198.51.100.0", "documentation"},
        {"198.51.100.255", "documentation"},
        {"198.51.101.0", NULL},
        {"203.0.112.255", NULL},
        {"203.0.113.0", "documentation"},
        {"203.0.113.255", "documentation"},
        {"203.0.114.0", NULL},
        {"223.255.255.255", NULL},
        {"224.0.0.0", "multicast"},
        {"239.255.255.255", "multicast"},
        {"240.0.0.0", "reserved"},
        {"255.255.255.254", "reserved"},
        {"255.255.255.255", "broadcast"},
        {"8.8.8.8", NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_range(cases[i].address, cases[i].range);
}

static void netaddr_ipv6_ranges(void **state)
{
    static const struct range_case cases[] = {
        {"::", "unspecified"},
        {"::1", "loopback"},
        {"::2", "IPv4-compatible"},
        {"::8.8.8.8", "IPv4-compatible"},
        {"::ffff:ffff", "IPv4-compatible"},
        {"::1:0:0", "reserved"},
        {"::fffe:0:0", "reserved"},
        {"::ffff:0:0:0", "reserved"},
        {"64:ff9b:1::1", "local-use IPv4/IPv6 translation"},
        {"100::", "discard"},
        {"100::ffff:ffff:ffff:ffff", "discard"},
        {"100:0:0:1::", "reserved"},
        {"1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"},
        {"2000::", NULL},
        {"2001::", "IETF protocol assignments"},
        {"2001:1ff:ffff::", "IETF protocol assignments"},
        {"2001:200::", NULL},
        {"2001:db7:ffff:ffff::", NULL},
        {"2001:db8::", "documentation"},
        {"2001:db8:ffff:ffff::1", "documentation"},
        {"2001:db9::", NULL},
        {"3ffe:ffff::", NULL},
        {"3fff::", "documentation"},
        {"3fff:fff:ffff::", "documentation"},
        {"3fff:1000::", NULL},
        {"5f00::1", "segment routing (SRv6)"},
        {"fbff:ffff::", "reserved"},
        {"fc00::", "unique local"},
        {"fdff:ffff::1", "unique local"},
        {"fe00::", "reserved"},
        {"fe80::", "link-local"},
        {"febf:ffff::", "link-local"},
        {"fec0::", "site-local"},
        {"feff:ffff::", "site-local"},
        {"ff00::", "multicast"},
        {"ff02::1", "multicast"},
        {"2606:4700:4700::1111", NULL},
        {"2a00:1450:4001::1", NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_range(cases[i].address, cases[i].range);
}

static void netaddr_embedded_ipv4(void **state)
{
    static const struct range_case cases[] = {
        {"::ffff:10.0.0.1", "private"},
        {"::ffff:169.254.169.254", "link-local"},
        {"[::ffff:a9fe:a9fe]", "link-local"},
        {"::ffff:0.0.0.0", "unspecified"},
        {"::ffff:8.8.8.8", NULL},
        {"64:ff9b::10.1.2.3", "private"},
        {"64:ff9b::c0a8:101", "private"},
        {"64:ff9b::8.8.8.8", NULL},
        {"2002:a9fe:a9fe::1", "link-local"},
        {"2002:c0a8:0101:1::", "private"},
        {"2002:0808:0808::", NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_range(cases[i].address, cases[i].range);
}

static void netaddr_from_sockaddr_families(void **state)
{
    struct sockaddr_in in = {0};
    struct sockaddr_in6 in6 = {0};
    struct sockaddr_un un = {0};
    struct netaddr addr;
    char text[NETADDR_TEXT_MAX];

    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(netaddr_from_sockaddr((struct sockaddr *)&in, &addr));
    netaddr_format(&addr, text);
    assert_string_equal(text, "127.0.0.1");
    assert_string_equal(netaddr_special_range(&addr), "loopback");

    in6.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "::ffff:192.168.1.1", &in6.sin6_addr), 1);
    assert_true(netaddr_from_sockaddr((struct sockaddr *)&in6, &addr));
    assert_int_equal(addr.family, AF_INET6);
    assert_string_equal(netaddr_special_range(&addr), "private");

    un.sun_family = AF_UNIX;
    assert_false(netaddr_from_sockaddr((struct sockaddr *)&un, &addr));
    assert_false(netaddr_from_sockaddr(NULL, &addr));
}

static void cidr_parse_valid(void **state)
{
    struct cidr_list list;
    struct bh_error err;

    bh_error_clear(&err);
    assert_int_equal(cidr_list_parse(" 10.0.0.0/8 , ::1 ,127.0.0.1,[fd00::]/8", &list, &err), 0);
    assert_int_equal(list.count, 4);
    assert_int_equal(list.items[0].prefix_len, 8);
    assert_int_equal(list.items[0].addr.family, AF_INET);
    assert_int_equal(list.items[1].prefix_len, 128);
    assert_int_equal(list.items[1].addr.family, AF_INET6);
    assert_int_equal(list.items[2].prefix_len, 32);
    assert_int_equal(list.items[3].prefix_len, 8);
    cidr_list_release(&list);
    assert_null(list.items);
    assert_int_equal(list.count, 0);

    assert_int_equal(cidr_list_parse("", &list, &err), 0);
    assert_int_equal(list.count, 0);
    assert_int_equal(cidr_list_parse("  ", &list, &err), 0);
    assert_int_equal(list.count, 0);
    assert_int_equal(cidr_list_parse(NULL, &list, &err), 0);
    assert_int_equal(list.count, 0);
    assert_int_equal(cidr_list_parse("0.0.0.0/0,::/0", &list, &err), 0);
    assert_int_equal(list.count, 2);
    cidr_list_release(&list);
}

static void cidr_parse_errors(void **state)
{
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        {"10.0.0.0/33", "allow-networks: \"10.0.0.0/33\" has a prefix length over 32"},
        {"127.0.0.0/8,::/129", "allow-networks: \"::/129\" has a prefix length over 128"},
        {"10.0.0.0/x", "allow-networks: \"10.0.0.0/x\" has an invalid prefix length"},
        {"10.0.0.0/", "allow-networks: \"10.0.0.0/\" has an invalid prefix length"},
        {"10.0.0.0/-1", "allow-networks: \"10.0.0.0/-1\" has an invalid prefix length"},
        {"10.0.0.0/8/8", "allow-networks: \"10.0.0.0/8/8\" has an invalid prefix length"},
        {"intranet/8", "allow-networks: \"intranet/8\" is not an IP address or CIDR range"},
        {"10.0.0.0/8,,::1", "allow-networks: \"10.0.0.0/8,,::1\" has an empty item"},
        {"10.0.0.0/8,", "allow-networks: \"10.0.0.0/8,\" has an empty item"},
        {"10.0.0.1/8", "write the network as 10.0.0.0/8"},
        {"fd00::1/8", "write the network as fd00::/8"},
    };
    struct cidr_list list;
    struct bh_error err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bh_error_clear(&err);
        assert_int_equal(cidr_list_parse(cases[i].text, &list, &err), BH_ERR_INVALID);
        assert_string_equal(err.field, "allow-networks");
        if (!strstr(err.message, cases[i].message))
            fail_msg("message for \"%s\" was \"%s\"", cases[i].text, err.message);
        assert_null(list.items);
        assert_int_equal(list.count, 0);
    }
}

static void cidr_list_membership(void **state)
{
    static const struct {
        const char *address;
        bool contained;
    } cases[] = {
        {"10.1.2.3", true},         {"10.255.255.255", true}, {"11.0.0.0", false},
        {"9.255.255.255", false},   {"192.168.1.5", true},    {"192.168.1.6", false},
        {"fd12:3456::1", true},     {"fe00::1", false},       {"::ffff:10.1.1.1", true},
        {"::ffff:11.0.0.1", false}, {"::a01:101", false},     {"172.16.0.1", true},
        {"172.15.255.255", false},
    };
    struct cidr_list list;
    struct netaddr addr;
    struct bh_error err;

    assert_int_equal(cidr_list_parse("10.0.0.0/8,fd00::/8,192.168.1.5,172.16.0.0/12", &list, &err),
                     0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_true(netaddr_parse(cases[i].address, &addr));
        if (cidr_list_contains(&list, &addr) != cases[i].contained)
            fail_msg("cidr_list_contains(\"%s\") should be %s", cases[i].address,
                     cases[i].contained ? "true" : "false");
    }
    cidr_list_release(&list);

    /* An empty list contains nothing. A /0 range contains its whole family and no other. */
    assert_true(netaddr_parse("10.0.0.1", &addr));
    assert_false(cidr_list_contains(&list, &addr));
    assert_int_equal(cidr_list_parse("::/0", &list, &err), 0);
    assert_false(cidr_list_contains(&list, &addr));
    cidr_list_release(&list);
    assert_int_equal(cidr_list_parse("0.0.0.0/0", &list, &err), 0);
    assert_true(cidr_list_contains(&list, &addr));
    cidr_list_release(&list);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(netaddr_loopback_spellings),
        cmocka_unit_test(netaddr_rejects_non_literals),
        cmocka_unit_test(netaddr_format_normalizes),
        cmocka_unit_test(netaddr_ipv4_ranges),
        cmocka_unit_test(netaddr_ipv6_ranges),
        cmocka_unit_test(netaddr_embedded_ipv4),
        cmocka_unit_test(netaddr_from_sockaddr_families),
        cmocka_unit_test(cidr_parse_valid),
        cmocka_unit_test(cidr_parse_errors),
        cmocka_unit_test(cidr_list_membership),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
