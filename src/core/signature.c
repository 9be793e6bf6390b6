#include "core/signature.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include "core/ids.h"

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

/* Returns the value of a standard base64 digit, or -1 for any other character. */
static int base64_digit_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Decodes padded standard base64 into out, at most out_max bytes, and sets *out_len. Returns
 * false for a length that is not a multiple of 4, a character outside the alphabet, padding
 * anywhere but in the last one or two places, or a result longer than out_max. Whitespace is
 * not skipped, since a secret never contains it.
 */
static bool base64_decode_strict(const char *text, unsigned char *out, size_t out_max,
                                 size_t *out_len)
{
    size_t text_len = strlen(text);
    size_t padding = 0;
    size_t len = 0;

    if (text_len % 4 != 0)
        return false;
    if (text_len > 0 && text[text_len - 1] == '=')
        padding++;
    if (text_len > 1 && text[text_len - 2] == '=')
        padding++;
    if (text_len / 4 * 3 - padding > out_max)
        return false;

    for (size_t i = 0; i < text_len; i += 4) {
        uint32_t group = 0;
        size_t digits = i + 4 == text_len ? 4 - padding : 4;

        for (size_t j = 0; j < 4; j++) {
            int value = j < digits ? base64_digit_value(text[i + j]) : 0;

            if (value < 0)
                return false;
            group = group << 6 | (uint32_t)value;
        }
        out[len++] = (unsigned char)(group >> 16);
        if (digits > 2)
            out[len++] = (unsigned char)(group >> 8);
        if (digits > 3)
            out[len++] = (unsigned char)group;
    }
    *out_len = len;
    return true;
}

/* Writes the HMAC-SHA256 of "<msg_id>.<timestamp>.<body>" keyed with key into digest. */
/*
 * The HMAC algorithm, fetched once per process: EVP_MAC_fetch searches OpenSSL's providers on
 * every call, which costs more than hashing a small body. A fetched algorithm may be shared by
 * threads. NULL when the fetch failed.
 */
static EVP_MAC *hmac_algorithm;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void fetch_hmac(void)
{
    hmac_algorithm = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static bool standard_hmac(const unsigned char *key, size_t key_len, const char *msg_id,
                          int64_t timestamp_seconds, const void *body, size_t body_len,
                          unsigned char digest[EVP_MAX_MD_SIZE], size_t *digest_len)
{
    char prefix[64];
    OSSL_PARAM params[2];
    EVP_MAC_CTX *context = NULL;
    bool ok = false;
    int prefix_len;

    pthread_once(&hmac_once, fetch_hmac);
    if (hmac_algorithm == NULL)
        goto release;
    context = EVP_MAC_CTX_new(hmac_algorithm);
    if (context == NULL)
        goto release;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(context, key, key_len, params) != 1)
        goto release;

    /* The id goes in as is, so that no length limit applies to it. */
    prefix_len = snprintf(prefix, sizeof(prefix), ".%" PRId64 ".", timestamp_seconds);
    if (EVP_MAC_update(context, (const unsigned char *)msg_id, strlen(msg_id)) != 1 ||
        EVP_MAC_update(context, (const unsigned char *)prefix, (size_t)prefix_len) != 1 ||
        EVP_MAC_update(context, body, body_len) != 1 ||
        EVP_MAC_final(context, digest, digest_len, EVP_MAX_MD_SIZE) != 1)
        goto release;
    ok = true;

release:
    EVP_MAC_CTX_free(context);
    return ok;
}

int standard_signature_compute(const char *secret, const char *msg_id, int64_t timestamp_seconds,
                               const void *body, size_t body_len,
                               char out[STANDARD_SIGNATURE_LEN + 1], struct bh_error *err)
{
    static const size_t prefix_len = sizeof(SECRET_PREFIX) - 1;
    unsigned char key[STANDARD_KEY_MAX];
    unsigned char digest[EVP_MAX_MD_SIZE];
    size_t key_len = 0;
    size_t digest_len = 0;
    int status = 0;

    out[0] = '\0';
    if (strncmp(secret, SECRET_PREFIX, prefix_len) != 0) {
        status = bh_error_set(err, BH_ERR_INVALID, "secret",
                              "the signing secret does not start with " SECRET_PREFIX
                              "; regenerate the secret");
        goto cleanse;
    }
    if (!base64_decode_strict(secret + prefix_len, key, sizeof(key), &key_len) || key_len == 0) {
        status = bh_error_set(err, BH_ERR_INVALID, "secret",
                              "the signing secret after " SECRET_PREFIX
                              " is not padded standard base64 of 1 to %d bytes; regenerate "
                              "the secret",
                              STANDARD_KEY_MAX);
        goto cleanse;
    }

    if (!standard_hmac(key, key_len, msg_id, timestamp_seconds, body, body_len, digest,
                       &digest_len) ||
        digest_len != 32) {
        status = bh_error_set(err, BH_ERR_INTERNAL, "", "OpenSSL could not compute HMAC-SHA256");
        goto cleanse;
    }
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, digest, (int)digest_len);

cleanse:
    OPENSSL_cleanse(key, sizeof(key));
    return status;
}
