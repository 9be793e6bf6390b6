#include "core/ids.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "core/clock.h"
#include "util/alloc.h"

#define TAIL_MASK 0xffffffffffffULL /* the 48 bits after the milliseconds */

/* The last id's two halves, so the next one sorts after it. */
static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_ms;
static uint64_t last_tail;

void random_bytes(void *out, size_t len)
{
    if (RAND_bytes(out, (int)len) != 1) {
        fprintf(stderr, "bearhook: the CSPRNG failed; stopping\n");
        abort();
    }
}

static void hex_encode(const unsigned char *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

/*
 * In a new millisecond the tail starts at a random value below 2^47, so it can count up
 * 2^47 times without reaching the next millisecond's digits. A clock that steps back reuses
 * the last millisecond, so ids never go backwards within the process.
 */
void id_generate(char out[ID_LEN + 1])
{
    unsigned char bytes[ID_LEN / 2];
    uint64_t now_ms = (uint64_t)clock_now_ms() & TAIL_MASK;
    uint64_t ms;
    uint64_t tail;

    pthread_mutex_lock(&id_lock);
    if (now_ms > last_ms) {
        random_bytes(&tail, sizeof(tail));
        last_ms = now_ms;
        last_tail = tail & (TAIL_MASK >> 1);
    } else if (last_tail < TAIL_MASK) {
        last_tail++;
    } else {
        random_bytes(&tail, sizeof(tail));
        last_ms++;
        last_tail = tail & (TAIL_MASK >> 1);
    }
    ms = last_ms;
    tail = last_tail;
    pthread_mutex_unlock(&id_lock);

    for (int i = 0; i < 6; i++) {
        bytes[i] = (unsigned char)(ms >> (40 - 8 * i));
        bytes[6 + i] = (unsigned char)(tail >> (40 - 8 * i));
    }
    hex_encode(bytes, sizeof(bytes), out);
}

void event_id_generate(char out[EVENT_ID_LEN + 1])
{
    memcpy(out, "evt_", 4);
    id_generate(out + 4);
}

void delivery_id_generate(char out[DELIVERY_ID_LEN + 1])
{
    memcpy(out, "dlv_", 4);
    id_generate(out + 4);
}

bool id_is_valid_external(const char *id)
{
    size_t len = strlen(id);

    if (len == 0 || len > EXTERNAL_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

char *secret_generate(void)
{
    unsigned char key[32];
    char encoded[45]; /* 4 * ceil(32 / 3) and a NUL */

    random_bytes(key, sizeof(key));
    EVP_EncodeBlock((unsigned char *)encoded, key, sizeof(key));
    OPENSSL_cleanse(key, sizeof(key));
    return xasprintf(SECRET_PREFIX "%s", encoded);
}

char *api_key_generate(void)
{
    unsigned char key[32];
    char encoded[45];
    size_t len;

    random_bytes(key, sizeof(key));
    EVP_EncodeBlock((unsigned char *)encoded, key, sizeof(key));
    OPENSSL_cleanse(key, sizeof(key));

    /* base64url without padding: safe in headers, shells and URLs. */
    len = strlen(encoded);
    while (len > 0 && encoded[len - 1] == '=')
        encoded[--len] = '\0';
    for (size_t i = 0; i < len; i++) {
        if (encoded[i] == '+')
            encoded[i] = '-';
        else if (encoded[i] == '/')
            encoded[i] = '_';
    }
    return xasprintf(API_KEY_PREFIX "%s", encoded);
}

void api_key_hash(const char *key, char out[SHA256_HEX_LEN + 1])
{
    unsigned char digest[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)key, strlen(key), digest);
    hex_encode(digest, sizeof(digest), out);
}
