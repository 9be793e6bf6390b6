/*
 * Address parsing and classification for the target policy.
 *
 * The special-purpose ranges come from the IANA IPv4 and IPv6 Special-Purpose Address
 * Registries (RFC 6890 and its updates). Addresses that carry an IPv4 address inside an IPv6
 * one (mapped, NAT64, 6to4) are classified by the IPv4 address they carry, because a
 * connection to them may end at that IPv4 address.
 */
#include "core/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"

/* Maximum length of a literal: a full IPv6 address with an IPv4 tail, brackets and slack. */
#define LITERAL_MAX 64
#define CIDR_LIST_MAX 256
#define CIDR_ITEM_MAX 128

struct special_range {
    unsigned char prefix[16];
    int prefix_len;
    const char *name;
};

/* Checked in order, so a narrower range comes before the wider one that contains it. */
/* clang-format off */
static const struct special_range ipv4_ranges[] = {
    {{0, 0, 0, 0}, 32, "unspecified"},
    {{0, 0, 0, 0}, 8, "this network"},
    {{10, 0, 0, 0}, 8, "private"},
    {{100, 64, 0, 0}, 10, "shared address space"},
    {{127, 0, 0, 0}, 8, "loopback"},
    {{169, 254, 0, 0}, 16, "link-local"},
    {{172, 16, 0, 0}, 12, "private"},
    {{192, 0, 0, 0}, 24, "IETF protocol assignments"},
    {{192, 0, 2, 0}, 24, "documentation"},
    {{192, 168, 0, 0}, 16, "private"},
    {{198, 18, 0, 0}, 15, "benchmarking"},
    {{198, 51, 100, 0}, 24, "documentation"},
    {{203, 0, 113, 0}, 24, "documentation"},
    {{224, 0, 0, 0}, 4, "multicast"},
    {{255, 255, 255, 255}, 32, "broadcast"},
    {{240, 0, 0, 0}, 4, "reserved"},
};
/* clang-format on */

/* IPv6 ranges with no IPv4 address inside; the embedding ranges are handled in code. */
static const struct special_range ipv6_ranges[] = {
    {{0}, 128, "unspecified"},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback"},
    {{0}, 96, "IPv4-compatible"},
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, "local-use IPv4/IPv6 translation"},
    /* The rest of ::/8 is reserved by the IETF and contains forms such as ::ffff:0:a.b.c.d. */
    {{0}, 8, "reserved"},
    {{0x01, 0x00}, 64, "discard"},
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation"},
    {{0x20, 0x01}, 23, "IETF protocol assignments"},
    {{0x3f, 0xff}, 20, "documentation"},
    {{0x5f, 0x00}, 16, "segment routing (SRv6)"},
    {{0xfc}, 7, "unique local"},
    {{0xfe, 0x80}, 10, "link-local"},
    {{0xfe, 0xc0}, 10, "site-local"},
    {{0xff}, 8, "multicast"},
};

static const unsigned char mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
static const unsigned char nat64_prefix[12] = {0x00, 0x64, 0xff, 0x9b};

static bool prefix_matches(const unsigned char *bytes, const unsigned char *prefix, int len)
{
    int whole = len / 8;
    int rest = len % 8;
    unsigned char mask;

    if (memcmp(bytes, prefix, (size_t)whole) != 0)
        return false;
    if (rest == 0)
        return true;
    mask = (unsigned char)(0xff << (8 - rest));
    return (bytes[whole] & mask) == (prefix[whole] & mask);
}

/* Characters that inet_aton reads in a number: digits, hex digits and the 0x prefix. */
static bool is_ipv4_number_text(const char *text)
{
    for (const char *p = text; *p; p++) {
        bool hex_digit =
            (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F');

        if (!hex_digit && *p != 'x' && *p != 'X' && *p != '.')
            return false;
    }
    return true;
}

static bool parse_ipv4(const char *text, struct netaddr *out)
{
    struct in_addr addr;

    /*
     * inet_aton reads every numeric spelling a resolver accepts, but it also accepts anything
     * after a space ("1.2.3.4 junk"), so the characters are checked first.
     */
    if (!is_ipv4_number_text(text))
        return false;
    if (inet_aton(text, &addr) == 0)
        return false;

    memset(out, 0, sizeof(*out));
    out->family = AF_INET;
    memcpy(out->bytes, &addr.s_addr, 4);
    return true;
}

static bool parse_ipv6(const char *text, size_t len, struct netaddr *out)
{
    char copy[LITERAL_MAX];
    struct in6_addr addr;

    if (len == 0 || len >= sizeof(copy))
        return false;
    memcpy(copy, text, len);
    copy[len] = '\0';

    /* A zone id ("%eth0") picks an interface on this host, which a target never needs. */
    if (strchr(copy, '%'))
        return false;
    if (inet_pton(AF_INET6, copy, &addr) != 1)
        return false;

    memset(out, 0, sizeof(*out));
    out->family = AF_INET6;
    memcpy(out->bytes, addr.s6_addr, 16);
    return true;
}

bool netaddr_parse(const char *text, struct netaddr *out)
{
    size_t len;

    if (!text)
        return false;
    len = strnlen(text, LITERAL_MAX);
    if (len == 0 || len >= LITERAL_MAX)
        return false;

    if (text[0] == '[') {
        if (len < 2 || text[len - 1] != ']')
            return false;
        return parse_ipv6(text + 1, len - 2, out);
    }
    if (strchr(text, ':'))
        return parse_ipv6(text, len, out);
    return parse_ipv4(text, out);
}

bool netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out)
{
    if (!sa)
        return false;

    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

        out->family = AF_INET;
        memcpy(out->bytes, &in->sin_addr.s_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

        out->family = AF_INET6;
        memcpy(out->bytes, in6->sin6_addr.s6_addr, 16);
        return true;
    }
    return false;
}

void netaddr_format(const struct netaddr *addr, char out[NETADDR_TEXT_MAX])
{
    if (!inet_ntop(addr->family, addr->bytes, out, NETADDR_TEXT_MAX))
        snprintf(out, NETADDR_TEXT_MAX, "(invalid address)");
}

static const char *find_range(const struct special_range *ranges, size_t count,
                              const unsigned char *bytes)
{
    for (size_t i = 0; i < count; i++) {
        if (prefix_matches(bytes, ranges[i].prefix, ranges[i].prefix_len))
            return ranges[i].name;
    }
    return NULL;
}

static const char *ipv4_special_range(const unsigned char *bytes)
{
    return find_range(ipv4_ranges, sizeof(ipv4_ranges) / sizeof(ipv4_ranges[0]), bytes);
}

const char *netaddr_special_range(const struct netaddr *addr)
{
    const unsigned char *bytes = addr->bytes;
    const char *range;

    if (addr->family == AF_INET)
        return ipv4_special_range(bytes);
    if (addr->family != AF_INET6)
        return "reserved";

    /* ::ffff:a.b.c.d and 64:ff9b::a.b.c.d carry the IPv4 address in the last 4 bytes. */
    if (memcmp(bytes, mapped_prefix, 12) == 0 || memcmp(bytes, nat64_prefix, 12) == 0)
        return ipv4_special_range(bytes + 12);
    /* 2002:AABB:CCDD::/48 is the 6to4 prefix of the IPv4 address AA.BB.CC.DD. */
    if (bytes[0] == 0x20 && bytes[1] == 0x02)
        return ipv4_special_range(bytes + 2);

    range = find_range(ipv6_ranges, sizeof(ipv6_ranges) / sizeof(ipv6_ranges[0]), bytes);
    if (range)
        return range;
    /* Global unicast is allocated from 2000::/3 only; the rest of the space is reserved. */
    if ((bytes[0] & 0xe0) != 0x20)
        return "reserved";
    return NULL;
}

static int parse_prefix_len(const char *text, int max, int *out)
{
    int value = 0;

    if (*text == '\0' || strlen(text) > 3)
        return -1;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        value = value * 10 + (*p - '0');
    }
    if (value > max)
        return -2;
    *out = value;
    return 0;
}

/* True when addr has no bits set past prefix_len. */
static bool host_bits_clear(const struct netaddr *addr, int prefix_len)
{
    int total = addr->family == AF_INET ? 32 : 128;

    for (int bit = prefix_len; bit < total; bit++) {
        if (addr->bytes[bit / 8] & (0x80 >> (bit % 8)))
            return false;
    }
    return true;
}

static void mask_host_bits(struct netaddr *addr, int prefix_len)
{
    int total = addr->family == AF_INET ? 32 : 128;

    for (int bit = prefix_len; bit < total; bit++)
        addr->bytes[bit / 8] &= (unsigned char)~(0x80 >> (bit % 8));
}

static int parse_cidr_item(const char *item, struct cidr *out, struct bh_error *err)
{
    char address[CIDR_ITEM_MAX];
    const char *slash = strchr(item, '/');
    size_t address_len = slash ? (size_t)(slash - item) : strlen(item);
    int max_len;
    int result;

    if (address_len >= sizeof(address))
        goto not_an_address;
    memcpy(address, item, address_len);
    address[address_len] = '\0';
    if (!netaddr_parse(address, &out->addr))
        goto not_an_address;

    max_len = out->addr.family == AF_INET ? 32 : 128;
    out->prefix_len = max_len;
    if (!slash)
        return 0;

    result = parse_prefix_len(slash + 1, max_len, &out->prefix_len);
    if (result == -2)
        return bh_error_set(err, BH_ERR_INVALID, "allow-networks",
                            "allow-networks: \"%s\" has a prefix length over %d; use a whole "
                            "number from 0 to %d",
                            item, max_len, max_len);
    if (result != 0)
        return bh_error_set(err, BH_ERR_INVALID, "allow-networks",
                            "allow-networks: \"%s\" has an invalid prefix length; use a whole "
                            "number from 0 to %d",
                            item, max_len);

    if (!host_bits_clear(&out->addr, out->prefix_len)) {
        struct netaddr network = out->addr;
        char text[NETADDR_TEXT_MAX];

        mask_host_bits(&network, out->prefix_len);
        netaddr_format(&network, text);
        return bh_error_set(err, BH_ERR_INVALID, "allow-networks",
                            "allow-networks: \"%s\" has bits set after the prefix; write the "
                            "network as %s/%d",
                            item, text, out->prefix_len);
    }
    return 0;

not_an_address:
    return bh_error_set(err, BH_ERR_INVALID, "allow-networks",
                        "allow-networks: \"%s\" is not an IP address or CIDR range; write "
                        "ranges like 10.0.0.0/8 or fd00::/8, separated by commas",
                        item);
}

/* Copies text[start, end) without surrounding spaces and tabs into a new string. */
static char *trimmed_copy(const char *start, const char *end)
{
    while (start < end && (*start == ' ' || *start == '\t'))
        start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return xstrndup(start, (size_t)(end - start));
}

int cidr_list_parse(const char *text, struct cidr_list *out, struct bh_error *err)
{
    struct cidr_list list = {NULL, 0};
    const char *start = text;
    int result = 0;

    out->items = NULL;
    out->count = 0;
    if (!text || strspn(text, " \t") == strlen(text))
        return 0;

    for (;;) {
        const char *comma = strchr(start, ',');
        const char *end = comma ? comma : start + strlen(start);
        char *item = trimmed_copy(start, end);

        if (item[0] == '\0') {
            result = bh_error_set(err, BH_ERR_INVALID, "allow-networks",
                                  "allow-networks: \"%s\" has an empty item; separate ranges "
                                  "with single commas",
                                  text);
        } else if (list.count == CIDR_LIST_MAX) {
            result = bh_error_set(err, BH_ERR_INVALID, "allow-networks",
                                  "allow-networks: more than %d ranges; merge them into wider "
                                  "ranges",
                                  CIDR_LIST_MAX);
        } else {
            list.items = xrealloc(list.items, (list.count + 1) * sizeof(*list.items));
            result = parse_cidr_item(item, &list.items[list.count], err);
            if (result == 0)
                list.count++;
        }
        free(item);
        if (result != 0)
            goto fail;
        if (!comma)
            break;
        start = comma + 1;
    }

    *out = list;
    return 0;

fail:
    cidr_list_release(&list);
    return result;
}

void cidr_list_release(struct cidr_list *list)
{
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static bool cidr_contains(const struct cidr *cidr, const struct netaddr *addr)
{
    if (cidr->addr.family != addr->family)
        return false;
    return prefix_matches(addr->bytes, cidr->addr.bytes, cidr->prefix_len);
}

bool cidr_list_contains(const struct cidr_list *list, const struct netaddr *addr)
{
    struct netaddr unmapped;
    bool is_mapped = addr->family == AF_INET6 && memcmp(addr->bytes, mapped_prefix, 12) == 0;

    /* ::ffff:a.b.c.d reaches a.b.c.d, so IPv4 ranges decide for it as well. */
    if (is_mapped) {
        memset(&unmapped, 0, sizeof(unmapped));
        unmapped.family = AF_INET;
        memcpy(unmapped.bytes, addr->bytes + 12, 4);
    }

    for (size_t i = 0; i < list->count; i++) {
        if (cidr_contains(&list->items[i], addr))
            return true;
        if (is_mapped && cidr_contains(&list->items[i], &unmapped))
            return true;
    }
    return false;
}
