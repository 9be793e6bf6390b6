/*
 * bearhook verify: checks a saved body against a signature and, when they do not match,
 * explains the most likely reason.
 *
 * The explanation comes from trying the mistakes people make most, in order: a signature in
 * the wrong format, then variants of the body (trailing newlines removed, JSON re-serialized
 * compactly) with variants of the secret (surrounding whitespace removed, whsec_ prefix
 * added). The first variant whose signature matches names what went wrong.
 */
#include "cli/commands.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cli/config.h"
#include "core/ids.h"
#include "core/signature.h"
#include "util/alloc.h"
#include "util/buf.h"

/* Largest file read. The request bodies that bearhook sends are far smaller. */
#define VERIFY_FILE_MAX (16 * 1024 * 1024)

struct verify_settings {
    char *secret;
    char *signature;
};

static const struct option_spec verify_options[] = {
    {"secret", OPTION_STRING, offsetof(struct verify_settings, secret), NULL, 0, 0, NULL,
     "Signing secret of the integration, whsec_ prefix included (required)"},
    {"signature", OPTION_STRING, offsetof(struct verify_settings, signature), NULL, 0, 0, NULL,
     "Value of the X-Bearconnect-Signature header: 64 lowercase hex digits (required)"},
};

#define VERIFY_OPTION_COUNT (sizeof(verify_options) / sizeof(verify_options[0]))

static const char verify_usage[] =
    "Usage: bearhook verify --secret SECRET --signature HEX FILE\n"
    "\n"
    "Checks that HEX is the signature of FILE's bytes with SECRET, and explains the most likely\n"
    "reason when it is not. FILE is the raw request body; \"-\" reads standard input.\n"
    "Exits 0 when the signature is valid, 1 when it is not, and 2 on a usage error or when\n"
    "FILE cannot be read.";

/* Prefixes that other webhook providers put before their digests. */
static const char *const foreign_prefixes[] = {"sha256=", "v1,"};

/* A signature as given, reduced to the digest it carries. */
struct parsed_signature {
    char hex[SIGNATURE_HEX_LEN + 1]; /* lowercase */
    const char *prefix;              /* one of foreign_prefixes found before the digest, or NULL */
    bool uppercase;                  /* the digest had uppercase hex digits */
};

/* Candidate bodies and secrets, in the order they are tried. */
enum body_variant { BODY_AS_GIVEN, BODY_WITHOUT_NEWLINES, BODY_COMPACT, BODY_VARIANT_COUNT };
enum secret_variant { SECRET_AS_GIVEN, SECRET_TRIMMED, SECRET_WITH_PREFIX, SECRET_VARIANT_COUNT };

static const char *const body_reasons[] = {
    [BODY_WITHOUT_NEWLINES] = "the file ends with a newline that is not part of the signed "
                              "body; save the raw request body exactly as received",
    [BODY_COMPACT] = "the body was reformatted; verify against the raw bytes, not re-serialized "
                     "JSON",
};

static const char *const secret_reasons[] = {
    [SECRET_TRIMMED] = "the secret has whitespace around it, probably from copying it; remove "
                       "the surrounding spaces and newlines",
    [SECRET_WITH_PREFIX] = "use the whole secret, including its " SECRET_PREFIX " prefix",
};

/* ---- input ---- */

static int read_body(const char *path, struct buf *out)
{
    FILE *file = stdin;
    char chunk[65536];
    size_t count;
    int status = EXIT_USAGE;

    if (strcmp(path, "-") != 0) {
        file = fopen(path, "rb");
        if (!file) {
            fprintf(stderr, "bearhook verify: cannot open %s: %s\n", path, strerror(errno));
            return EXIT_USAGE;
        }
    }

    while ((count = fread(chunk, 1, sizeof(chunk), file)) > 0) {
        if (out->len + count > VERIFY_FILE_MAX) {
            fprintf(stderr,
                    "bearhook verify: %s is larger than %d bytes (16 MiB), the most this command "
                    "reads; a webhook body is much smaller, so check that this is the body "
                    "file\n",
                    strcmp(path, "-") == 0 ? "standard input" : path, VERIFY_FILE_MAX);
            goto close;
        }
        buf_append(out, chunk, count);
    }
    if (ferror(file)) {
        fprintf(stderr, "bearhook verify: failed to read %s: %s\n", path, strerror(errno));
        goto close;
    }
    status = 0;

close:
    if (file != stdin)
        fclose(file);
    return status;
}

/* ---- signature format ---- */

/*
 * Returns true when text contains 64 hex digits, or prints why it does not and returns false.
 * lead starts each printed line.
 */
static bool check_hex_digest(const char *text, size_t len, const char *lead)
{
    if (len != SIGNATURE_HEX_LEN) {
        printf("%sit is %zu character%s long, but a bearhook signature is 64 hex digits (the "
               "HMAC-SHA256 of the body).\n",
               lead, len, len == 1 ? "" : "s");
        if (len == 44 && text[43] == '=')
            printf("It looks like base64; bearhook sends the digest in hex.\n");
        return false;
    }

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];

        if (isxdigit(c))
            continue;
        if (isprint(c))
            printf("%scharacter %zu ('%c') is not a hex digit; a signature contains only 0-9 "
                   "and a-f.\n",
                   lead, i + 1, c);
        else
            printf("%scharacter %zu (byte 0x%02x) is not a hex digit; a signature contains "
                   "only 0-9 and a-f.\n",
                   lead, i + 1, c);
        return false;
    }
    return true;
}

/*
 * Reduces text to the lowercase digest it carries, or prints why it is not a signature and
 * returns false. Surrounding whitespace is ignored, because HTTP servers strip it from
 * header values before a receiver reads them.
 */
static bool parse_signature(const char *text, struct parsed_signature *out)
{
    const char *lead = "Signature invalid: ";
    size_t len;

    memset(out, 0, sizeof(*out));
    while (isspace((unsigned char)*text))
        text++;
    len = strlen(text);
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;

    for (size_t i = 0; i < sizeof(foreign_prefixes) / sizeof(foreign_prefixes[0]); i++) {
        size_t prefix_len = strlen(foreign_prefixes[i]);

        if (len >= prefix_len && strncasecmp(text, foreign_prefixes[i], prefix_len) == 0) {
            out->prefix = foreign_prefixes[i];
            text += prefix_len;
            len -= prefix_len;
            break;
        }
    }
    if (out->prefix) {
        printf("Signature invalid: it starts with \"%s\", a prefix other webhook providers "
               "use; bearhook sends only the 64 hex digits.\n",
               out->prefix);
        lead = "After the prefix, ";
    }

    if (!check_hex_digest(text, len, lead))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (isupper((unsigned char)text[i]))
            out->uppercase = true;
        out->hex[i] = (char)tolower((unsigned char)text[i]);
    }
    out->hex[len] = '\0';
    return true;
}

/* ---- variants ---- */

/* Fills the body variant, or returns false when it would equal the body as given. */
static bool make_body_variant(enum body_variant variant, const struct buf *body, struct buf *out)
{
    json_t *json;
    char *compact;
    size_t len = body->len;

    buf_reset(out);
    switch (variant) {
    case BODY_AS_GIVEN:
        buf_append(out, body->data, body->len);
        return true;
    case BODY_WITHOUT_NEWLINES:
        while (len > 0 && (body->data[len - 1] == '\n' || body->data[len - 1] == '\r'))
            len--;
        buf_append(out, body->data, len);
        return len != body->len;
    case BODY_COMPACT:
        json = json_loadb(body->data, body->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!json)
            return false;
        compact = json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
        json_decref(json);
        if (!compact)
            return false;
        buf_append_str(out, compact);
        free(compact);
        return out->len != body->len || memcmp(out->data, body->data, body->len) != 0;
    case BODY_VARIANT_COUNT:
        break;
    }
    return false;
}

/* Returns the secret variant for the caller to free, or NULL when it equals an earlier one. */
static char *make_secret_variant(enum secret_variant variant, const char *secret)
{
    const char *start = secret;
    size_t len = strlen(secret);

    while (isspace((unsigned char)*start)) {
        start++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)start[len - 1]))
        len--;

    switch (variant) {
    case SECRET_AS_GIVEN:
        return xstrdup(secret);
    case SECRET_TRIMMED:
        return len != strlen(secret) ? xstrndup(start, len) : NULL;
    case SECRET_WITH_PREFIX:
        if (strncmp(start, SECRET_PREFIX, strlen(SECRET_PREFIX)) == 0)
            return NULL;
        return xasprintf("%s%.*s", SECRET_PREFIX, (int)len, start);
    case SECRET_VARIANT_COUNT:
        break;
    }
    return NULL;
}

/*
 * Tries every secret variant with every body variant and stores the first pair whose
 * signature is hex. Returns false when none matches.
 */
static bool find_matching_variant(const char *secret, const struct buf *body, const char *hex,
                                  enum secret_variant *secret_found, enum body_variant *body_found)
{
    char computed[SIGNATURE_HEX_LEN + 1];
    struct buf candidate = BUF_INIT;
    bool found = false;

    for (int s = 0; s < SECRET_VARIANT_COUNT && !found; s++) {
        char *key = make_secret_variant((enum secret_variant)s, secret);

        if (!key)
            continue;
        for (int b = 0; b < BODY_VARIANT_COUNT && !found; b++) {
            if (!make_body_variant((enum body_variant)b, body, &candidate))
                continue;
            signature_compute(key, candidate.data ? candidate.data : "", candidate.len, computed);
            if (signature_equal(computed, hex)) {
                *secret_found = (enum secret_variant)s;
                *body_found = (enum body_variant)b;
                found = true;
            }
        }
        free(key);
    }
    buf_release(&candidate);
    return found;
}

/* ---- the command ---- */

static void print_uppercase_note(const struct parsed_signature *signature)
{
    if (signature->uppercase)
        printf("Note: the signature is in uppercase hex. bearhook sends lowercase, and a "
               "receiver that compares the strings exactly (as crypto.timingSafeEqual and "
               "hmac.compare_digest do) rejects uppercase.\n");
}

/* Prints the verdict for a well-formed signature and returns the exit status. */
static int explain(const char *secret, const struct buf *body,
                   const struct parsed_signature *signature)
{
    char computed[SIGNATURE_HEX_LEN + 1];
    enum secret_variant secret_found = SECRET_AS_GIVEN;
    enum body_variant body_found = BODY_AS_GIVEN;
    bool found;

    found = find_matching_variant(secret, body, signature->hex, &secret_found, &body_found);
    signature_compute(secret, body->data ? body->data : "", body->len, computed);

    if (found && secret_found == SECRET_AS_GIVEN && body_found == BODY_AS_GIVEN) {
        if (signature->prefix) {
            printf("Without the prefix, the signature matches the file and the secret.\n");
            return 1;
        }
        printf("Signature valid.\n");
        print_uppercase_note(signature);
        return 0;
    }

    if (!signature->prefix)
        printf("Signature invalid.\n");
    if (!found) {
        printf("Reason: the body or the secret differs from what was signed: check you are "
               "using the current secret (a regenerated secret invalidates the old one) and the "
               "raw body.\n");
    } else {
        if (body_found != BODY_AS_GIVEN)
            printf("Reason: %s.\n", body_reasons[body_found]);
        if (secret_found != SECRET_AS_GIVEN)
            printf("Reason: %s.\n", secret_reasons[secret_found]);
    }
    print_uppercase_note(signature);
    printf("The signature of the file with the secret as given is %s.\n", computed);
    return 1;
}

int cmd_verify(int argc, char **argv)
{
    struct verify_settings settings = {0};
    struct option_args args;
    struct parsed_signature signature;
    struct buf body = BUF_INIT;
    struct bh_error err;
    int status = EXIT_USAGE;

    bh_error_clear(&err);
    if (options_parse(verify_options, VERIFY_OPTION_COUNT, &settings, NULL, argc, argv, &args,
                      &err) != 0) {
        fprintf(stderr, "bearhook verify: %s\n", err.message);
        goto release;
    }
    if (args.help) {
        options_print_help(stdout, verify_usage, verify_options, VERIFY_OPTION_COUNT, NULL);
        status = 0;
        goto release;
    }
    if (settings.secret[0] == '\0' || settings.signature[0] == '\0') {
        fprintf(stderr,
                "bearhook verify: missing %s; usage: bearhook verify --secret SECRET "
                "--signature HEX FILE\n",
                settings.secret[0] == '\0' ? "--secret" : "--signature");
        goto release;
    }
    if (args.positional_count != 1) {
        fprintf(stderr,
                "bearhook verify: %s; give one FILE with the raw request body, or \"-\" to "
                "read standard input\n",
                args.positional_count == 0 ? "missing FILE" : "too many arguments");
        goto release;
    }

    status = read_body(args.positional[0], &body);
    if (status != 0)
        goto release;
    if (!parse_signature(settings.signature, &signature)) {
        status = 1;
        goto release;
    }
    status = explain(settings.secret, &body, &signature);

release:
    buf_release(&body);
    options_release(verify_options, VERIFY_OPTION_COUNT, &settings);
    return status;
}
