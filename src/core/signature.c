#include "core/signature.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

void signature_compute(const char *secret, const void *body, size_t body_len,
                       char out[SIGNATURE_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;

    HMAC(EVP_sha256(), secret, (int)strlen(secret), body, body_len, digest, &digest_len);
    for (unsigned int i = 0; i < digest_len; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 0x0f];
    }
    out[2 * digest_len] = '\0';
}

bool signature_equal(const char *expected, const char *actual)
{
    size_t len = strlen(expected);

    if (strlen(actual) != len)
        return false;
    return CRYPTO_memcmp(expected, actual, len) == 0;
}
