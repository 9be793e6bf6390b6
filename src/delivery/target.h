/*
 * The connect-time target check. libcurl resolves the host and calls the opensocket callback
 * with each address it is about to connect to; the callback refuses any address the target
 * policy does not allow. The check is therefore made on the very address the connection
 * uses, which defeats DNS answers that change between a check and the connect.
 */
#ifndef BEARHOOK_DELIVERY_TARGET_H
#define BEARHOOK_DELIVERY_TARGET_H

#include <curl/curl.h>

#include "core/url.h"

struct target_guard {
    const struct target_policy *policy;
    char refused[160]; /* why the last address was refused; empty when none was */
};

/*
 * Installs the check on an easy handle and clears guard->refused. guard must outlive the
 * transfer, and guard->policy must be set before the call. Besides the opensocket callback
 * it sets these options, which the caller must not override:
 *   - protocols: https only, or http and https when the policy allows http;
 *   - redirects: not followed, and limited to the same protocols;
 *   - proxy: none, not even from http_proxy or https_proxy, because with a proxy the check
 *     would apply to the proxy's address instead of the target's.
 * A refused address makes libcurl fail the transfer with CURLE_COULDNT_CONNECT once no
 * other address of the host is left to try.
 */
void target_guard_install(CURL *easy, struct target_guard *guard);

#endif
