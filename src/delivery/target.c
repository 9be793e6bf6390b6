#include "delivery/target.h"

#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#include "core/netaddr.h"

static curl_socket_t open_checked_socket(void *clientp, curlsocktype purpose,
                                         struct curl_sockaddr *address)
{
    struct target_guard *guard = clientp;
    struct netaddr addr;
    const char *range = NULL;
    char text[NETADDR_TEXT_MAX];

    if (!netaddr_from_sockaddr(&address->addr, &addr)) {
        snprintf(guard->refused, sizeof(guard->refused),
                 "address family %d is not IPv4 or IPv6; refused by the target policy",
                 address->family);
        return CURL_SOCKET_BAD;
    }
    if (!target_policy_allows(guard->policy, &addr, &range)) {
        netaddr_format(&addr, text);
        snprintf(guard->refused, sizeof(guard->refused),
                 "address %s is %s; refused by the target policy", text, range);
        return CURL_SOCKET_BAD;
    }

    /* Close-on-exec, so a child process never inherits a delivery's connection. */
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

void target_guard_install(CURL *easy, struct target_guard *guard)
{
    bool https_only = !(guard->policy && guard->policy->allow_http);

    guard->refused[0] = '\0';
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_checked_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, guard);

    /*
     * A proxy from the environment (http_proxy, https_proxy) would make the check apply to the
     * proxy's address while the proxy reaches the target, so no proxy is used.
     */
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);

#if CURL_AT_LEAST_VERSION(7, 85, 0)
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, https_only ? "https" : "http,https");
    /* No scheme at all is not accepted by libcurl 7.88, so redirects get the same list. */
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, https_only ? "https" : "http,https");
#else
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS,
                     https_only ? CURLPROTO_HTTPS : (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS,
                     https_only ? CURLPROTO_HTTPS : (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}
