/*
 * IP addresses and CIDR ranges, for deciding which delivery targets may be reached.
 *
 * netaddr_parse accepts every spelling a resolver or libcurl would accept for a literal
 * address, so a check at save time cannot be bypassed by notation: dotted decimal, a single
 * 32-bit number ("2130706433"), octal and hexadecimal parts ("0177.0.0.1", "0x7f.1"),
 * shortened forms ("127.1"), IPv6 in any compression, with or without brackets, and
 * IPv4-mapped IPv6 ("::ffff:127.0.0.1"), which is classified as the IPv4 address it holds.
 * Text after the address ("1.2.3.4 x") and IPv6 zone ids ("fe80::1%eth0") are rejected.
 */
#ifndef BEARHOOK_CORE_NETADDR_H
#define BEARHOOK_CORE_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/error.h"

#define NETADDR_TEXT_MAX 46 /* INET6_ADDRSTRLEN */

struct netaddr {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char bytes[16]; /* network order; the first 4 for AF_INET */
};

struct cidr {
    struct netaddr addr;
    int prefix_len;
};

struct cidr_list {
    struct cidr *items;
    size_t count;
};

/* Parses a literal address; false when text is not one (a host name, say). */
bool netaddr_parse(const char *text, struct netaddr *out);
bool netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out);
void netaddr_format(const struct netaddr *addr, char out[NETADDR_TEXT_MAX]);
/*
 * Returns the name of the special-purpose range that contains addr: "loopback", "private",
 * "link-local", "shared address space", "multicast", "reserved", "unspecified", "broadcast",
 * "documentation", "benchmarking", "unique local", "IPv4-compatible" and so on; NULL for a
 * globally reachable unicast address. IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
 * addresses get the name of the IPv4 address they carry. IPv6 addresses outside 2000::/3
 * that no narrower range names are "reserved".
 */
const char *netaddr_special_range(const struct netaddr *addr);

/*
 * Parses "10.0.0.0/8,::1/128" (a bare address means a single host); NULL or blank text is an
 * empty list. Items are separated by commas, with optional spaces around them. A range with
 * bits set after the prefix ("10.0.0.1/8") is rejected rather than widened. Errors are
 * BH_ERR_INVALID and name the --allow-networks option, which is where these lists come from,
 * and the bad item. out is the caller's to release with cidr_list_release.
 */
int cidr_list_parse(const char *text, struct cidr_list *out, struct bh_error *err);
void cidr_list_release(struct cidr_list *list);
/* True when a range in list contains addr; IPv4 ranges also contain ::ffff:a.b.c.d. */
bool cidr_list_contains(const struct cidr_list *list, const struct netaddr *addr);

#endif
