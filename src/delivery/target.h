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

/* Installs the check on an easy handle. guard must outlive the transfer. */
void target_guard_install(CURL *easy, struct target_guard *guard);

#endif
