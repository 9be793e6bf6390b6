/*
 * Webhook target URLs and the policy that decides which targets may be reached.
 *
 * By default a target must be https:// and must not be, or resolve to, a special-purpose
 * address (loopback, private, link-local and the others that netaddr_special_range names).
 * For local development and tests the server can allow plain http:// and list CIDR ranges
 * that are allowed despite being special. The URL is checked when it is saved; the dispatcher
 * checks every resolved address again when it connects (see delivery/target.h).
 */
#ifndef BEARHOOK_CORE_URL_H
#define BEARHOOK_CORE_URL_H

#include <stdbool.h>

#include "core/error.h"
#include "core/netaddr.h"

#define URL_MAX 2048

struct target_policy {
    bool allow_http;
    struct cidr_list allowed_networks;
};

struct url_parts {
    char scheme[8]; /* "http" or "https", lowercase */
    char *host;     /* without brackets; the caller frees it with url_parts_release */
    int port;       /* explicit port, or the scheme's default */
};

/* Splits an absolute http(s) URL; BH_ERR_INVALID names what is wrong with it. */
int url_parse(const char *url, struct url_parts *out, const char *field, struct bh_error *err);
void url_parts_release(struct url_parts *parts);
/*
 * Checks that url may be saved as a target under policy: syntax, scheme, no user info,
 * length, and, when the host is a literal address, its range. Host names are checked when the
 * dispatcher resolves them. Errors name `field`.
 */
int url_validate_target(const char *url, const struct target_policy *policy, const char *field,
                        struct bh_error *err);
/* True when policy allows a connection to addr; otherwise *reason names the range. */
bool target_policy_allows(const struct target_policy *policy, const struct netaddr *addr,
                          const char **reason);

#endif
