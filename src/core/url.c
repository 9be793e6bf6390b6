/*
 * Target URL syntax and the save-time target check.
 *
 * The parser accepts a deliberately narrow subset of RFC 3986: an http or https scheme, a
 * host that is a name of [A-Za-z0-9._-], an IPv4 literal in any inet_aton spelling or a
 * bracketed IPv6 literal, and an optional port. Everything a resolver or libcurl might read
 * differently (user info, percent-encoded or non-ASCII hosts, backslashes, spaces) is
 * rejected, so the host checked here is the host that libcurl connects to.
 */
#include "core/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/alloc.h"

#define HOST_NAME_MAX_LEN 253 /* DNS limit for a name in text form, without the final dot */
#define HOST_LABEL_MAX 63

/* Maximum bytes of a URL that an error message repeats, so the message stays readable. */
#define URL_ECHO_MAX 160

static bool is_host_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

static int url_error(struct bh_error *err, const char *field, const char *url, const char *fix)
{
    return bh_error_set(err, BH_ERR_INVALID, field, "%s \"%.*s%s\" %s", field, URL_ECHO_MAX, url,
                        strlen(url) > URL_ECHO_MAX ? "..." : "", fix);
}

static int check_characters(const char *url, size_t len, const char *field, struct bh_error *err)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];

        if (c == ' ')
            return url_error(err, field, url, "contains a space; write spaces in the path as %20");
        if (c < 0x20 || c == 0x7f)
            return url_error(err, field, url,
                             "contains a control character; remove it or percent-encode it");
        if (c == '\\')
            return url_error(err, field, url,
                             "contains a backslash; use / in paths, or percent-encode it as %5C");
    }
    return 0;
}

/* Reads "http://" or "https://" in any case into out->scheme; returns the rest, or NULL. */
static const char *parse_scheme(const char *url, struct url_parts *out, const char *field,
                                struct bh_error *err)
{
    const char *separator = strstr(url, "://");
    size_t len = separator ? (size_t)(separator - url) : 0;

    if (!separator || len == 0 || strcspn(url, "/?#") < len) {
        url_error(err, field, url,
                  "is not an absolute URL; write it with its scheme, like "
                  "https://example.com/webhook");
        return NULL;
    }
    if (len == 5 && strncasecmp(url, "https", 5) == 0) {
        snprintf(out->scheme, sizeof(out->scheme), "https");
        out->port = 443;
    } else if (len == 4 && strncasecmp(url, "http", 4) == 0) {
        snprintf(out->scheme, sizeof(out->scheme), "http");
        out->port = 80;
    } else {
        url_error(err, field, url, "has an unsupported scheme; use https://");
        return NULL;
    }
    return separator + 3;
}

static int parse_port(const char *text, size_t len, const char *url, struct url_parts *out,
                      const char *field, struct bh_error *err)
{
    long value = 0;

    /* "host:" with no digits means the scheme's default port (RFC 3986, section 3.2.3). */
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return url_error(err, field, url, "has an invalid port; use a number from 1 to 65535");
        /* Digits past the range only need to stay past it, so value cannot overflow. */
        if (value <= 65535)
            value = value * 10 + (text[i] - '0');
    }
    if (value < 1 || value > 65535)
        return url_error(err, field, url, "has a port out of range; use a number from 1 to 65535");
    out->port = (int)value;
    return 0;
}

static int check_host_name(const char *host, const char *url, const char *field,
                           struct bh_error *err)
{
    size_t len = strlen(host);
    size_t label_len = 0;

    if (len > 0 && host[len - 1] == '.')
        len--;
    if (len > HOST_NAME_MAX_LEN)
        return url_error(err, field, url, "has a host name longer than 253 characters");

    for (size_t i = 0; i < len; i++) {
        if (!is_host_name_char(host[i]))
            return url_error(err, field, url,
                             "has a host with characters outside A-Z, a-z, 0-9, '-', '.' and "
                             "'_'; write an international name in its xn-- form");
        if (host[i] != '.') {
            label_len++;
            if (label_len > HOST_LABEL_MAX)
                return url_error(err, field, url,
                                 "has a host name label longer than 63 characters");
            continue;
        }
        if (label_len == 0)
            return url_error(err, field, url, "has an empty label in its host name");
        label_len = 0;
    }
    if (label_len == 0)
        return url_error(err, field, url, "has an empty label in its host name");
    return 0;
}

/* Splits the authority "host[:port]" or "[v6][:port]" into out->host and out->port. */
static int parse_authority(const char *authority, size_t len, const char *url,
                           struct url_parts *out, const char *field, struct bh_error *err)
{
    const char *host = authority;
    size_t host_len;
    const char *after_host;
    struct netaddr addr;
    int result;

    if (memchr(authority, '@', len))
        return url_error(err, field, url,
                         "contains user info before @; send credentials in a custom header "
                         "such as Authorization instead");
    if (len == 0)
        return url_error(err, field, url, "has no host; write it like https://example.com/webhook");

    if (authority[0] == '[') {
        const char *close = memchr(authority, ']', len);

        if (!close)
            return url_error(err, field, url, "has an IPv6 host without its closing ]");
        host = authority + 1;
        host_len = (size_t)(close - host);
        after_host = close + 1;
    } else {
        const char *colon = memchr(authority, ':', len);

        host_len = colon ? (size_t)(colon - authority) : len;
        after_host = authority + host_len;
    }
    if (host_len == 0)
        return url_error(err, field, url, "has no host; write it like https://example.com/webhook");
    out->host = xstrndup(host, host_len);
    for (char *p = out->host; *p; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }

    if (authority[0] == '[') {
        if (!netaddr_parse(out->host, &addr) || addr.family != AF_INET6)
            return url_error(err, field, url,
                             "has an invalid IPv6 host; write it in brackets without a zone "
                             "id, like https://[2001:db8::1]/");
    } else {
        result = check_host_name(out->host, url, field, err);
        if (result != 0)
            return result;
    }

    if (after_host == authority + len)
        return 0;
    if (*after_host != ':')
        return url_error(err, field, url, "has characters after its IPv6 host; expected :port");
    return parse_port(after_host + 1, (size_t)(authority + len - after_host - 1), url, out, field,
                      err);
}

int url_parse(const char *url, struct url_parts *out, const char *field, struct bh_error *err)
{
    const char *authority;
    size_t len;
    int result;

    out->scheme[0] = '\0';
    out->host = NULL;
    out->port = 0;
    if (!url || url[0] == '\0')
        return bh_error_set(err, BH_ERR_INVALID, field,
                            "%s is missing; give the https:// URL that receives the webhooks",
                            field);
    len = strnlen(url, URL_MAX + 1);
    if (len > URL_MAX)
        return url_error(err, field, url, "is longer than 2048 characters; use a shorter URL");

    result = check_characters(url, len, field, err);
    if (result != 0)
        goto fail;
    authority = parse_scheme(url, out, field, err);
    if (!authority) {
        result = BH_ERR_INVALID;
        goto fail;
    }
    result = parse_authority(authority, strcspn(authority, "/?#"), url, out, field, err);
    if (result != 0)
        goto fail;
    return 0;

fail:
    url_parts_release(out);
    return result;
}

void url_parts_release(struct url_parts *parts)
{
    free(parts->host);
    parts->host = NULL;
}

/* Phrases for the range names that do not read as "a <name> address" or "an <name> address". */
static const struct {
    const char *name;
    const char *phrase;
} range_phrases[] = {
    {"this network", "in the \"this network\" range 0.0.0.0/8"},
    {"shared address space", "in the shared address space 100.64.0.0/10"},
    {"IETF protocol assignments", "in a range reserved for IETF protocol assignments"},
    {"local-use IPv4/IPv6 translation", "a local-use IPv4/IPv6 translation address"},
    {"segment routing (SRv6)", "a segment routing (SRv6) address"},
    {"unique local", "a unique local address"},
};

static void describe_range(const char *name, char *out, size_t size)
{
    for (size_t i = 0; i < sizeof(range_phrases) / sizeof(range_phrases[0]); i++) {
        if (strcmp(name, range_phrases[i].name) == 0) {
            snprintf(out, size, "%s", range_phrases[i].phrase);
            return;
        }
    }
    snprintf(out, size, "%s %s address", strchr("aeiouAEIOU", name[0]) ? "an" : "a", name);
}

bool target_policy_allows(const struct target_policy *policy, const struct netaddr *addr,
                          const char **reason)
{
    const char *range = netaddr_special_range(addr);

    if (reason)
        *reason = NULL;
    if (!range)
        return true;
    if (policy && cidr_list_contains(&policy->allowed_networks, addr))
        return true;
    if (reason)
        *reason = range;
    return false;
}

/* True for "localhost" and names under it, with or without the final dot (RFC 6761). */
static bool is_localhost_name(const char *host)
{
    size_t len = strlen(host);
    const char *suffix = ".localhost";
    size_t suffix_len = strlen(suffix);

    if (len > 0 && host[len - 1] == '.')
        len--;
    if (len == 9 && strncasecmp(host, "localhost", 9) == 0)
        return true;
    return len > suffix_len && strncasecmp(host + len - suffix_len, suffix, suffix_len) == 0;
}

/* Parses host as a literal address, also with one final dot removed ("127.0.0.1."). */
static bool parse_host_address(const char *host, struct netaddr *addr)
{
    char copy[NETADDR_TEXT_MAX + 2];
    size_t len = strlen(host);

    if (netaddr_parse(host, addr))
        return true;
    if (len < 2 || len >= sizeof(copy) || host[len - 1] != '.')
        return false;
    memcpy(copy, host, len - 1);
    copy[len - 1] = '\0';
    return netaddr_parse(copy, addr);
}

static int check_host_address(const char *host, const struct netaddr *addr,
                              const struct target_policy *policy, const char *field,
                              struct bh_error *err)
{
    const char *range;
    char text[NETADDR_TEXT_MAX];
    char spelled[NETADDR_TEXT_MAX + 16] = "";
    char phrase[96];

    if (target_policy_allows(policy, addr, &range))
        return 0;

    netaddr_format(addr, text);
    if (strcmp(text, host) != 0)
        snprintf(spelled, sizeof(spelled), " (%s)", text);
    describe_range(range, phrase, sizeof(phrase));
    return bh_error_set(err, BH_ERR_INVALID, field,
                        "%s host %s%s is %s; such targets are refused unless the server allows "
                        "the network with --allow-networks",
                        field, host, spelled, phrase);
}

int url_validate_target(const char *url, const struct target_policy *policy, const char *field,
                        struct bh_error *err)
{
    struct url_parts parts;
    struct netaddr addr;
    struct netaddr loopback;
    int result;

    result = url_parse(url, &parts, field, err);
    if (result != 0)
        return result;

    if (strcmp(parts.scheme, "https") != 0 && !(policy && policy->allow_http)) {
        result = url_error(err, field, url,
                           "must start with https://; plain http is allowed only when the "
                           "server runs with --allow-http");
        goto done;
    }

    if (parse_host_address(parts.host, &addr)) {
        result = check_host_address(parts.host, &addr, policy, field, err);
        goto done;
    }

    netaddr_parse("127.0.0.1", &loopback);
    if (is_localhost_name(parts.host) &&
        !(policy && cidr_list_contains(&policy->allowed_networks, &loopback)))
        result = bh_error_set(err, BH_ERR_INVALID, field,
                              "%s host %s is a loopback name; such targets are refused unless "
                              "the server allows 127.0.0.1 with --allow-networks",
                              field, parts.host);

done:
    url_parts_release(&parts);
    return result;
}
