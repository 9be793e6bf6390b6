/*
 * Webhook signatures: the lowercase hex HMAC-SHA256 of the raw body, keyed with the secret
 * string's UTF-8 bytes (the whole string, prefix included), exactly what the receivers in the
 * Node.js and Python verification examples compute.
 *
 * Standard Webhooks signatures (the webhook-signature header) are computed alongside: see
 * standard_signature_compute.
 */
#ifndef BEARHOOK_CORE_SIGNATURE_H
#define BEARHOOK_CORE_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define SIGNATURE_HEX_LEN 64
/* "v1," and the padded standard base64 of a 32-byte HMAC-SHA256 digest. */
#define STANDARD_SIGNATURE_LEN (3 + 44)
/* The longest decoded Standard Webhooks key accepted; bearhook's own secrets decode to 32. */
#define STANDARD_KEY_MAX 64

void signature_compute(const char *secret, const void *body, size_t body_len,
                       char out[SIGNATURE_HEX_LEN + 1]);
/* Compares two signatures in time that does not depend on where they differ. */
bool signature_equal(const char *expected, const char *actual);
/*
 * Writes the Standard Webhooks signature "v1,<base64 of the HMAC-SHA256>" and a NUL. The key is
 * the standard base64 decoding of the secret after its "whsec_" prefix. The signed bytes are
 * msg_id, ".", the decimal timestamp_seconds, "." and the body.
 *
 * Returns BH_ERR_INVALID, and sets out to the empty string, when the secret lacks the prefix,
 * when the rest is not padded standard base64, or when it decodes to 0 or more than
 * STANDARD_KEY_MAX bytes. Returns BH_ERR_INTERNAL when OpenSSL fails. err may be NULL, and its
 * message never contains the secret.
 */
int standard_signature_compute(const char *secret, const char *msg_id, int64_t timestamp_seconds,
                               const void *body, size_t body_len,
                               char out[STANDARD_SIGNATURE_LEN + 1], struct bh_error *err);

#endif
