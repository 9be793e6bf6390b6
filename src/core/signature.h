/*
 * Webhook signatures: the lowercase hex HMAC-SHA256 of the raw body, keyed with the secret
 * string's UTF-8 bytes (the whole string, prefix included), exactly what the receivers in the
 * Node.js and Python verification examples compute.
 */
#ifndef BEARHOOK_CORE_SIGNATURE_H
#define BEARHOOK_CORE_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>

#define SIGNATURE_HEX_LEN 64

void signature_compute(const char *secret, const void *body, size_t body_len,
                       char out[SIGNATURE_HEX_LEN + 1]);
/* Compares two signatures in time that does not depend on where they differ. */
bool signature_equal(const char *expected, const char *actual);

#endif
