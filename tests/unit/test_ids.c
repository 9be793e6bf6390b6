/*
 * Generated ids, signing secrets and API keys, and the check on ids that the platform sends.
 * API key hashes are compared with `openssl dgst -sha256` run on the key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/clock.h"
#include "core/ids.h"

#define ID_COUNT 1000

static bool is_lowercase_hex(const char *text)
{
    for (; *text; text++) {
        if (!((*text >= '0' && *text <= '9') || (*text >= 'a' && *text <= 'f')))
            return false;
    }
    return true;
}

static bool is_base64url(const char *text)
{
    for (; *text; text++) {
        bool ok = (*text >= 'A' && *text <= 'Z') || (*text >= 'a' && *text <= 'z') ||
                  (*text >= '0' && *text <= '9') || *text == '-' || *text == '_';
        if (!ok)
            return false;
    }
    return true;
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void ids_generate_format(void **state)
{
    char id[ID_LEN + 1];

    memset(id, 'x', sizeof(id));
    id_generate(id);
    assert_int_equal(strlen(id), ID_LEN);
    assert_true(is_lowercase_hex(id));
}

static void ids_generate_distinct(void **state)
{
    char(*ids)[ID_LEN + 1] = calloc(ID_COUNT, sizeof(*ids));

    assert_non_null(ids);
    for (size_t i = 0; i < ID_COUNT; i++) {
        id_generate(ids[i]);
        assert_int_equal(strlen(ids[i]), ID_LEN);
        assert_true(is_lowercase_hex(ids[i]));
    }

    qsort(ids, ID_COUNT, sizeof(*ids), compare_ids);
    for (size_t i = 1; i < ID_COUNT; i++) {
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("id %s was generated twice", ids[i]);
    }
    free(ids);
}

static void ids_generate_time_prefix(void **state)
{
    char id[ID_LEN + 1];
    char ms_hex[13];
    unsigned long long ms;
    int64_t before = clock_now_ms();
    int64_t after;

    id_generate(id);
    after = clock_now_ms();

    /* The first 12 hex digits are the Unix milliseconds of creation. */
    memcpy(ms_hex, id, 12);
    ms_hex[12] = '\0';
    ms = strtoull(ms_hex, NULL, 16);
    assert_true(ms >= (unsigned long long)before);
    assert_true(ms <= (unsigned long long)after);
}

/* Ids made one after the other sort in that order, also within one millisecond. */
static void ids_sort_in_creation_order(void **state)
{
    char previous[ID_LEN + 1];
    char id[ID_LEN + 1];
    int same_ms = 0;

    id_generate(previous);
    for (int i = 0; i < 100000; i++) {
        id_generate(id);
        assert_true(strcmp(previous, id) < 0);
        if (memcmp(previous, id, 12) == 0)
            same_ms++;
        memcpy(previous, id, sizeof(id));
    }
    /* 100,000 ids take far less than 100,000 milliseconds, so many shared one. */
    assert_true(same_ms > 0);
}

static void ids_event_and_delivery(void **state)
{
    char event_id[EVENT_ID_LEN + 1];
    char delivery_id[DELIVERY_ID_LEN + 1];

    event_id_generate(event_id);
    delivery_id_generate(delivery_id);

    assert_int_equal(strlen(event_id), EVENT_ID_LEN);
    assert_memory_equal(event_id, "evt_", 4);
    assert_true(is_lowercase_hex(event_id + 4));
    assert_int_equal(strlen(delivery_id), DELIVERY_ID_LEN);
    assert_memory_equal(delivery_id, "dlv_", 4);
    assert_true(is_lowercase_hex(delivery_id + 4));
    assert_true(id_is_valid_external(event_id));
}

static void ids_external_accepted(void **state)
{
    static const char *const accepted[] = {
        "65abc123def4567890ghij01",
        "a",
        "Z",
        "0",
        "urn:li:member:123456789",
        "lead_1.2-3",
        "0123456789012345678901234567890123456789012345678901234567890123", /* 64 */
    };

    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        if (!id_is_valid_external(accepted[i]))
            fail_msg("\"%s\" was rejected", accepted[i]);
    }
}

static void ids_external_rejected(void **state)
{
    static const char *const rejected[] = {
        "",       "01234567890123456789012345678901234567890123456789012345678901234", /* 65 */
        "a b",    "a/b",
        "a+b",    "a\"b",
        "a\nb",   "caf\xc3\xa9",
        "lead#1", "../etc",
    };

    for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++) {
        if (id_is_valid_external(rejected[i]))
            fail_msg("\"%s\" was accepted", rejected[i]);
    }
}

static void ids_secret_format(void **state)
{
    char *secret = secret_generate();
    const char *encoded = secret + strlen(SECRET_PREFIX);
    unsigned char decoded[64];
    unsigned char reencoded[64];
    int decoded_len;

    assert_memory_equal(secret, "whsec_", 6);
    /* Standard base64 of 32 bytes is 44 characters ending in one '=' of padding. */
    assert_int_equal(strlen(encoded), 44);
    assert_int_equal(encoded[43], '=');
    assert_int_not_equal(encoded[42], '=');

    /* EVP_DecodeBlock counts the padding as a zero byte, so 32 bytes decode as 33. */
    decoded_len = EVP_DecodeBlock(decoded, (const unsigned char *)encoded, (int)strlen(encoded));
    assert_int_equal(decoded_len, 33);
    assert_int_equal(decoded[32], 0);

    /* The 32 key bytes encode back to the same text. */
    assert_int_equal(EVP_EncodeBlock(reencoded, decoded, 32), 44);
    assert_string_equal((const char *)reencoded, encoded);
    free(secret);
}

static void ids_secret_distinct(void **state)
{
    char *first = secret_generate();
    char *second = secret_generate();

    assert_string_not_equal(first, second);
    free(first);
    free(second);
}

static void ids_api_key_format(void **state)
{
    char *key = api_key_generate();
    const char *encoded = key + strlen(API_KEY_PREFIX);

    assert_memory_equal(key, "bh_", 3);
    /* Unpadded base64url of 32 bytes: ceil(32 * 4 / 3) = 43 characters. */
    assert_int_equal(strlen(encoded), 43);
    assert_true(is_base64url(encoded));
    free(key);
}

static void ids_api_key_distinct(void **state)
{
    char *first = api_key_generate();
    char *second = api_key_generate();

    assert_string_not_equal(first, second);
    free(first);
    free(second);
}

/* Writes the hex SHA-256 that `openssl dgst -sha256` computes over text. */
static void openssl_sha256(const char *text, char out[SHA256_HEX_LEN + 1])
{
    char path[] = "/tmp/bearhook-ids-XXXXXX";
    char command[256];
    char line[256];
    FILE *file;
    FILE *pipe;
    int fd;

    fd = mkstemp(path);
    assert_true(fd >= 0);
    file = fdopen(fd, "wb");
    assert_non_null(file);
    assert_int_equal(fwrite(text, 1, strlen(text), file), strlen(text));
    assert_int_equal(fclose(file), 0);

    snprintf(command, sizeof(command), "openssl dgst -sha256 -r < %s", path);
    pipe = popen(command, "r");
    assert_non_null(pipe);
    if (!fgets(line, sizeof(line), pipe))
        line[0] = '\0';
    assert_int_equal(pclose(pipe), 0);
    unlink(path);

    /* Output is "<hex> *stdin". */
    if (strlen(line) < SHA256_HEX_LEN || line[SHA256_HEX_LEN] != ' ')
        fail_msg("unexpected openssl output \"%s\"", line);
    memcpy(out, line, SHA256_HEX_LEN);
    out[SHA256_HEX_LEN] = '\0';
}

static void ids_api_key_hash(void **state)
{
    char *key = api_key_generate();
    char hash[SHA256_HEX_LEN + 1];
    char expected[SHA256_HEX_LEN + 1];

    api_key_hash(key, hash);
    openssl_sha256(key, expected);

    assert_int_equal(strlen(hash), SHA256_HEX_LEN);
    assert_true(is_lowercase_hex(hash));
    assert_string_equal(hash, expected);
    free(key);
}

static void ids_api_key_hash_differs(void **state)
{
    char first[SHA256_HEX_LEN + 1];
    char second[SHA256_HEX_LEN + 1];

    api_key_hash("bh_a", first);
    api_key_hash("bh_b", second);
    assert_string_not_equal(first, second);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ids_generate_format),      cmocka_unit_test(ids_generate_distinct),
        cmocka_unit_test(ids_generate_time_prefix), cmocka_unit_test(ids_sort_in_creation_order),
        cmocka_unit_test(ids_event_and_delivery),   cmocka_unit_test(ids_external_accepted),
        cmocka_unit_test(ids_external_rejected),    cmocka_unit_test(ids_secret_format),
        cmocka_unit_test(ids_secret_distinct),      cmocka_unit_test(ids_api_key_format),
        cmocka_unit_test(ids_api_key_distinct),     cmocka_unit_test(ids_api_key_hash),
        cmocka_unit_test(ids_api_key_hash_differs),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
