/*
 * Verifying a bearhook webhook signature in C with OpenSSL.
 *
 * Build: cc -o verify_signature verify_signature.c -lcrypto
 * Run:   ./verify_signature SECRET SIGNATURE BODY_FILE
 *
 * SIGNATURE is the X-Bearconnect-Signature header and BODY_FILE contains the raw request body,
 * byte for byte. Exits 0 when the signature is valid and 1 when it is not.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/*
 * Returns true when signature_hex is the lowercase hex HMAC-SHA256 of the body, keyed with
 * the secret string's bytes (the whole secret, "whsec_" prefix included).
 */
static bool verify_webhook_signature(const unsigned char *body, size_t body_len,
                                     const char *signature_hex, const char *secret)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    char expected[2 * EVP_MAX_MD_SIZE + 1];

    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), body, body_len, digest, &digest_len))
        return false;
    for (unsigned int i = 0; i < digest_len; i++) {
        expected[2 * i] = digits[digest[i] >> 4];
        expected[2 * i + 1] = digits[digest[i] & 0x0f];
    }
    expected[2 * digest_len] = '\0';

    /* Compare in constant time, as timingSafeEqual and compare_digest do. */
    return strlen(signature_hex) == 2 * digest_len &&
           CRYPTO_memcmp(expected, signature_hex, 2 * digest_len) == 0;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *file = fopen(path, "rb");
    unsigned char *data = NULL;
    long size;

    if (!file)
        return NULL;
    if (fseek(file, 0, SEEK_END) == 0 && (size = ftell(file)) >= 0 &&
        fseek(file, 0, SEEK_SET) == 0) {
        data = malloc((size_t)size + 1);
        if (data && fread(data, 1, (size_t)size, file) != (size_t)size) {
            free(data);
            data = NULL;
        }
        *len = (size_t)size;
    }
    fclose(file);
    return data;
}

int main(int argc, char **argv)
{
    unsigned char *body;
    size_t body_len = 0;
    bool valid;

    if (argc != 4) {
        fprintf(stderr, "usage: %s SECRET SIGNATURE BODY_FILE\n", argv[0]);
        return 2;
    }
    body = read_file(argv[3], &body_len);
    if (!body) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        return 2;
    }
    valid = verify_webhook_signature(body, body_len, argv[2], argv[1]);
    free(body);
    printf("%s\n", valid ? "valid" : "invalid");
    return valid ? 0 : 1;
}
