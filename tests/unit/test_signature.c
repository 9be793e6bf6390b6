/*
 * signature_compute checked against the openssl command-line tool, which computes the same
 * HMAC-SHA256 independently. Each body goes to a temporary file and through
 * `openssl dgst -sha256 -hmac SECRET -r`.
 *
 * standard_signature_compute is checked the same way: openssl decodes the secret's base64 to
 * the key, and `openssl dgst -sha256 -mac HMAC -macopt hexkey:KEY -binary` signs
 * "<id>.<timestamp>.<body>", which a test writes to a temporary file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ids.h"
#include "core/signature.h"

#define LARGE_BODY_LEN (100 * 1024)

static const char real_secret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8gYtq0FhM5A=";

static void assert_lowercase_hex(const char *text, size_t len)
{
    assert_int_equal(strlen(text), len);
    for (size_t i = 0; i < len; i++) {
        if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
            fail_msg("character %zu of \"%s\" is not lowercase hex", i, text);
    }
}

/* Runs openssl on body with the secret and writes its hex digest into out. */
static void openssl_hmac(const char *secret, const void *body, size_t body_len,
                         char out[SIGNATURE_HEX_LEN + 1])
{
    char path[] = "/tmp/bearhook-signature-XXXXXX";
    char command[1024];
    char line[256];
    FILE *file;
    FILE *pipe;
    int fd;

    /* The secret goes inside single quotes, so it must not contain one. */
    assert_null(strchr(secret, '\''));

    fd = mkstemp(path);
    assert_true(fd >= 0);
    file = fdopen(fd, "wb");
    assert_non_null(file);
    assert_int_equal(fwrite(body, 1, body_len, file), body_len);
    assert_int_equal(fclose(file), 0);

    snprintf(command, sizeof(command), "openssl dgst -sha256 -hmac '%s' -r < %s", secret, path);
    pipe = popen(command, "r");
    assert_non_null(pipe);
    if (!fgets(line, sizeof(line), pipe))
        line[0] = '\0';
    assert_int_equal(pclose(pipe), 0);
    unlink(path);

    /* Output is "<hex> *stdin". */
    if (strlen(line) < SIGNATURE_HEX_LEN || line[SIGNATURE_HEX_LEN] != ' ')
        fail_msg("unexpected openssl output \"%s\"", line);
    memcpy(out, line, SIGNATURE_HEX_LEN);
    out[SIGNATURE_HEX_LEN] = '\0';
}

static void check_against_openssl(const char *secret, const void *body, size_t body_len)
{
    char computed[SIGNATURE_HEX_LEN + 1];
    char expected[SIGNATURE_HEX_LEN + 1];

    signature_compute(secret, body, body_len, computed);
    openssl_hmac(secret, body, body_len, expected);

    assert_lowercase_hex(computed, SIGNATURE_HEX_LEN);
    assert_string_equal(computed, expected);
}

static void check_all_secrets(const void *body, size_t body_len)
{
    static const char *const secrets[] = {
        real_secret,
        "k",
        "clé-🔑",
        /* Longer than SHA-256's 64-byte block, so HMAC hashes the key first. */
        "whsec_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
    };
    char *generated = secret_generate();

    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        check_against_openssl(secrets[i], body, body_len);
    check_against_openssl(generated, body, body_len);
    free(generated);
}

static void signature_empty_body(void **state)
{
    check_all_secrets("", 0);
}

static void signature_ascii_body(void **state)
{
    static const char body[] = "{\"event\":\"connection_request_accepted\",\"timestamp\":"
                               "\"2026-02-13T10:30:00.000Z\"}";

    check_all_secrets(body, strlen(body));
}

static void signature_utf8_body(void **state)
{
    static const char body[] = "{\"firstName\":\"Zoë\",\"lastName\":\"Núñez 🐻\","
                               "\"position\":\"מנהלת מכירות\",\"headline\":\"مديرة المبيعات\"}";

    check_all_secrets(body, strlen(body));
}

static void signature_trailing_newline(void **state)
{
    static const char body[] = "{\"event\":\"message_sent\"}\n";
    char with_newline[SIGNATURE_HEX_LEN + 1];
    char without_newline[SIGNATURE_HEX_LEN + 1];

    check_all_secrets(body, strlen(body));

    signature_compute(real_secret, body, strlen(body), with_newline);
    signature_compute(real_secret, body, strlen(body) - 1, without_newline);
    assert_string_not_equal(with_newline, without_newline);
}

static void signature_large_body(void **state)
{
    unsigned char *body = malloc(LARGE_BODY_LEN);

    /* Every byte value, NUL included, so the length and not strlen() bounds the body. */
    assert_non_null(body);
    for (size_t i = 0; i < LARGE_BODY_LEN; i++)
        body[i] = (unsigned char)(i * 7 + 3);
    check_all_secrets(body, LARGE_BODY_LEN);
    free(body);
}

static void signature_depends_on_inputs(void **state)
{
    char first[SIGNATURE_HEX_LEN + 1];
    char again[SIGNATURE_HEX_LEN + 1];
    char other_body[SIGNATURE_HEX_LEN + 1];
    char other_secret[SIGNATURE_HEX_LEN + 1];

    signature_compute(real_secret, "{\"a\":1}", 7, first);
    signature_compute(real_secret, "{\"a\":1}", 7, again);
    signature_compute(real_secret, "{\"a\":2}", 7, other_body);
    signature_compute("whsec_other", "{\"a\":1}", 7, other_secret);

    assert_string_equal(first, again);
    assert_string_not_equal(first, other_body);
    assert_string_not_equal(first, other_secret);
}

static void signature_equal_cases(void **state)
{
    char signature[SIGNATURE_HEX_LEN + 1];
    char changed[SIGNATURE_HEX_LEN + 1];
    char upper[SIGNATURE_HEX_LEN + 1];

    signature_compute(real_secret, "body", 4, signature);

    assert_true(signature_equal(signature, signature));
    memcpy(changed, signature, sizeof(changed));
    assert_true(signature_equal(signature, changed));

    changed[0] = changed[0] == '0' ? '1' : '0';
    assert_false(signature_equal(signature, changed));

    memcpy(changed, signature, sizeof(changed));
    changed[SIGNATURE_HEX_LEN - 1] = changed[SIGNATURE_HEX_LEN - 1] == '0' ? '1' : '0';
    assert_false(signature_equal(signature, changed));

    /* A receiver must send the lowercase hex it was given. */
    for (size_t i = 0; i <= SIGNATURE_HEX_LEN; i++)
        upper[i] = (signature[i] >= 'a' && signature[i] <= 'f') ? signature[i] - 32 : signature[i];
    assert_string_not_equal(upper, signature);
    assert_false(signature_equal(signature, upper));
}

static void signature_equal_lengths(void **state)
{
    char signature[SIGNATURE_HEX_LEN + 1];
    char longer[SIGNATURE_HEX_LEN + 2];
    char prefix[11];

    signature_compute(real_secret, "body", 4, signature);
    snprintf(longer, sizeof(longer), "%s0", signature);

    assert_false(signature_equal(signature, longer));
    assert_false(signature_equal(longer, signature));
    assert_false(signature_equal(signature, ""));
    assert_false(signature_equal("", signature));

    /* A prefix matches byte for byte as far as it goes, so only the length can reject it. */
    memcpy(prefix, signature, 10);
    prefix[10] = '\0';
    assert_false(signature_equal(signature, prefix));
    assert_false(signature_equal(prefix, signature));
}

/* Writes the first output line of command, without its newline, and fails on a nonzero exit. */
static void run_command(const char *command, char *out, size_t out_size)
{
    FILE *pipe = popen(command, "r");
    size_t len;

    assert_non_null(pipe);
    if (!fgets(out, (int)out_size, pipe))
        out[0] = '\0';
    assert_int_equal(pclose(pipe), 0);
    len = strlen(out);
    if (len > 0 && out[len - 1] == '\n')
        out[len - 1] = '\0';
}

/* Computes the Standard Webhooks signature with the openssl tool alone, "v1," included. */
static void openssl_standard(const char *secret, const char *msg_id, int64_t timestamp,
                             const void *body, size_t body_len,
                             char out[STANDARD_SIGNATURE_LEN + 1])
{
    char path[] = "/tmp/bearhook-standard-XXXXXX";
    char command[1024];
    char key_hex[2 * STANDARD_KEY_MAX + 2];
    char digest[128];
    FILE *file;
    int fd;

    /* The base64 goes inside single quotes, which it cannot contain. */
    assert_int_equal(strncmp(secret, SECRET_PREFIX, strlen(SECRET_PREFIX)), 0);
    assert_null(strchr(secret, '\''));
    snprintf(command, sizeof(command),
             "printf %%s '%s' | openssl base64 -d -A | od -An -v -tx1 | tr -d ' \\n'",
             secret + strlen(SECRET_PREFIX));
    run_command(command, key_hex, sizeof(key_hex));
    assert_true(strlen(key_hex) > 0);

    fd = mkstemp(path);
    assert_true(fd >= 0);
    file = fdopen(fd, "wb");
    assert_non_null(file);
    assert_true(fprintf(file, "%s.%" PRId64 ".", msg_id, timestamp) > 0);
    assert_int_equal(fwrite(body, 1, body_len, file), body_len);
    assert_int_equal(fclose(file), 0);

    snprintf(command, sizeof(command),
             "openssl dgst -sha256 -mac HMAC -macopt hexkey:%s -binary < %s | openssl base64 -A",
             key_hex, path);
    run_command(command, digest, sizeof(digest));
    unlink(path);

    assert_int_equal(strlen(digest), STANDARD_SIGNATURE_LEN - 3);
    memcpy(out, "v1,", 3);
    memcpy(out + 3, digest, STANDARD_SIGNATURE_LEN - 3);
    out[STANDARD_SIGNATURE_LEN] = '\0';
}

static void check_standard(const char *secret, const char *msg_id, int64_t timestamp,
                           const void *body, size_t body_len)
{
    char computed[STANDARD_SIGNATURE_LEN + 1];
    char expected[STANDARD_SIGNATURE_LEN + 1];
    struct bh_error err;

    bh_error_clear(&err);
    assert_int_equal(
        standard_signature_compute(secret, msg_id, timestamp, body, body_len, computed, &err), 0);
    openssl_standard(secret, msg_id, timestamp, body, body_len, expected);
    assert_int_equal(strlen(computed), STANDARD_SIGNATURE_LEN);
    assert_string_equal(computed, expected);
}

static void standard_matches_openssl(void **state)
{
    static const char ascii[] = "{\"event\":\"message_sent\",\"timestamp\":"
                                "\"2026-02-13T10:30:00.000Z\"}";
    static const char utf8[] = "{\"firstName\":\"Zoë\",\"lastName\":\"Núñez 🐻\"}";
    /* 1 and 2 bytes of padding in the base64, and a 64-byte key. */
    static const char *const secrets[] = {
        real_secret,
        "whsec_YWJjZA==",
        "whsec_YWJjZGU=",
        "whsec_"
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZg==",
    };
    unsigned char *large = malloc(LARGE_BODY_LEN);
    char *generated = secret_generate();

    assert_non_null(large);
    for (size_t i = 0; i < LARGE_BODY_LEN; i++)
        large[i] = (unsigned char)(i * 7 + 3);

    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        check_standard(secrets[i], "dlv_65f1a2b3c4d5e6f708192a3b", 1771000000, ascii,
                       strlen(ascii));
    check_standard(generated, "dlv_65f1a2b3c4d5e6f708192a3b", 1771000000, ascii, strlen(ascii));
    check_standard(generated, "dlv_65f1a2b3c4d5e6f708192a3b", 0, "", 0);
    check_standard(generated, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, utf8, strlen(utf8));
    /* Every byte value, NUL included, so the length and not strlen() bounds the body. */
    check_standard(generated, "dlv_65f1a2b3c4d5e6f708192a3b", 1771000000, large, LARGE_BODY_LEN);

    free(generated);
    free(large);
}

static void standard_depends_on_inputs(void **state)
{
    char first[STANDARD_SIGNATURE_LEN + 1];
    char again[STANDARD_SIGNATURE_LEN + 1];
    char other_id[STANDARD_SIGNATURE_LEN + 1];
    char other_time[STANDARD_SIGNATURE_LEN + 1];
    char other_body[STANDARD_SIGNATURE_LEN + 1];
    char other_secret[STANDARD_SIGNATURE_LEN + 1];
    const char *id = "dlv_000000000000000000000001";

    assert_int_equal(standard_signature_compute(real_secret, id, 100, "{}", 2, first, NULL), 0);
    assert_int_equal(standard_signature_compute(real_secret, id, 100, "{}", 2, again, NULL), 0);
    assert_int_equal(standard_signature_compute(real_secret, "dlv_000000000000000000000002", 100,
                                                "{}", 2, other_id, NULL),
                     0);
    assert_int_equal(standard_signature_compute(real_secret, id, 101, "{}", 2, other_time, NULL),
                     0);
    assert_int_equal(standard_signature_compute(real_secret, id, 100, "[]", 2, other_body, NULL),
                     0);
    assert_int_equal(
        standard_signature_compute("whsec_YWJjZA==", id, 100, "{}", 2, other_secret, NULL), 0);

    assert_int_equal(strncmp(first, "v1,", 3), 0);
    assert_string_equal(first, again);
    assert_string_not_equal(first, other_id);
    assert_string_not_equal(first, other_time);
    assert_string_not_equal(first, other_body);
    assert_string_not_equal(first, other_secret);
}

static void standard_invalid_secrets(void **state)
{
    static const char *const secrets[] = {
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8gYtq0FhM5A=",        /* no prefix */
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8gYtq0FhM5A=",  /* prefix in capitals */
        "whsec_",                                              /* no key */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8gYtq0FhM5A",   /* padding missing */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8gYtq0FhM5A==", /* length not a multiple of 4 */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8gYtq0FhM5A!",  /* character outside base64 */
        "whsec_MfKQ9r8G-YqrTwjUPD8ILPZIo2LaLaSw8gYtq0FhM5A=",  /* base64url digit */
        "whsec_Mf=Q9r8GKYqrTwjUPD8ILPZIo2LaLaSw8gYtq0FhM5A=",  /* padding inside */
        "whsec_MfKQ 9r8GKYqrTwjUPD8ILPZIo2LaLaSw8gYtq0FhM5A",  /* space */
        "whsec_====",                                          /* padding only */
        /* 66 bytes, over the maximum key length */
        "whsec_"
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjAx",
    };

    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        char out[STANDARD_SIGNATURE_LEN + 1];
        struct bh_error err;

        memset(out, 'x', sizeof(out));
        bh_error_clear(&err);
        if (standard_signature_compute(secrets[i], "dlv_1", 100, "{}", 2, out, &err) !=
            BH_ERR_INVALID)
            fail_msg("secret %zu \"%s\" was not rejected", i, secrets[i]);
        assert_int_equal(err.status, BH_ERR_INVALID);
        assert_string_equal(err.field, "secret");
        assert_string_equal(out, "");
        /* The message must not contain the secret. */
        if (strlen(secrets[i]) > 12)
            assert_null(strstr(err.message, secrets[i] + 6));
    }

    /* NULL err is allowed. */
    {
        char out[STANDARD_SIGNATURE_LEN + 1];

        assert_int_equal(standard_signature_compute("nope", "dlv_1", 1, "", 0, out, NULL),
                         BH_ERR_INVALID);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(signature_empty_body),     cmocka_unit_test(signature_ascii_body),
        cmocka_unit_test(signature_utf8_body),      cmocka_unit_test(signature_trailing_newline),
        cmocka_unit_test(signature_large_body),     cmocka_unit_test(signature_depends_on_inputs),
        cmocka_unit_test(signature_equal_cases),    cmocka_unit_test(signature_equal_lengths),
        cmocka_unit_test(standard_matches_openssl), cmocka_unit_test(standard_depends_on_inputs),
        cmocka_unit_test(standard_invalid_secrets),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
