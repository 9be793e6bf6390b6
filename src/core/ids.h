/*
 * Identifiers, random bytes, signing secrets and API keys.
 *
 * Ids that bearhook assigns are 24 lowercase hex digits, like the guide's examples: 6 bytes of
 * Unix milliseconds, then 6 bytes that start at a random value in each millisecond and count
 * up within it. So a process's ids sort in the order it made them, and rows inserted together
 * land next to each other in an index, which keeps the pages that a commit writes few. Ids
 * are not secrets, because every lookup is also scoped by its owner. Event ids add
 * the prefix "evt_", delivery ids "dlv_". Ids that the platform supplies for leads, campaigns
 * and LinkedIn accounts are checked with id_is_valid_external().
 *
 * Randomness comes from OpenSSL's RAND_bytes; a failure of the CSPRNG aborts the process,
 * since no secret may be made from weaker bytes.
 */
#ifndef BEARHOOK_CORE_IDS_H
#define BEARHOOK_CORE_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define ID_LEN 24
#define EVENT_ID_LEN (4 + ID_LEN)
#define DELIVERY_ID_LEN (4 + ID_LEN)
#define EXTERNAL_ID_MAX 64
#define SECRET_PREFIX "whsec_"
#define API_KEY_PREFIX "bh_"
#define SHA256_HEX_LEN 64

void random_bytes(void *out, size_t len);
/* Writes a new 24-hex-digit id and a NUL. */
void id_generate(char out[ID_LEN + 1]);
void event_id_generate(char out[EVENT_ID_LEN + 1]);
void delivery_id_generate(char out[DELIVERY_ID_LEN + 1]);
/* True for 1 to 64 characters of [A-Za-z0-9._:-]. */
bool id_is_valid_external(const char *id);

/* Returns a new signing secret: "whsec_" and the standard base64 of 32 random bytes. */
char *secret_generate(void);
/* Returns a new API key: "bh_" and the unpadded base64url of 32 random bytes. */
char *api_key_generate(void);
/* Writes the lowercase hex SHA-256 of the key and a NUL; keys are stored only as this hash. */
void api_key_hash(const char *key, char out[SHA256_HEX_LEN + 1]);

#endif
