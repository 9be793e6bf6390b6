/*
 * The records that payloads are built from: leads, campaigns and LinkedIn accounts.
 *
 * A record is kept as a canonical JSON object: every field of its kind, in the order of the
 * payload, with unknown values null or defaulted. Clients send partial objects; normalizing
 * one merges it over the stored record, so a field that is absent keeps its stored value and
 * a field sent as null clears it. The canonical object is stored as JSON text and copied into
 * each payload unchanged.
 *
 * Field rules (from the payload contract):
 *   lead: id and firstName always present; connectionCount defaults to 0, isPremium to false;
 *         every other field is null when unknown; createdAt is normalized to UTC milliseconds.
 *   campaign: id and name always present; status may be null.
 *   linkedInAccount: id and email always present; name falls back to "LinkedIn Account".
 */
#ifndef BEARHOOK_CORE_RECORDS_H
#define BEARHOOK_CORE_RECORDS_H

#include <jansson.h>

#include "core/error.h"

enum record_kind { RECORD_LEAD, RECORD_CAMPAIGN, RECORD_ACCOUNT, RECORD_KIND_COUNT };

#define RECORD_STRING_MAX 2048 /* bytes in any one string field */
#define ACCOUNT_NAME_FALLBACK "LinkedIn Account"

/* Returns the kind's JSON name: "lead", "campaign" or "linkedInAccount". */
const char *record_kind_name(enum record_kind kind);

/*
 * Validates `input`, a client's JSON object for a record of `kind`, and merges it over `base`,
 * the stored canonical record or NULL for a new one. Returns a new canonical object (the
 * caller's reference), or NULL with err filled: the field named as `path.field` (for example
 * "lead.email"), the value's problem and the fix. Unknown fields are rejected by name.
 * When base is not NULL, input's "id" may be absent or must equal base's id. A NULL path
 * means the kind's name.
 *
 * Errors: BH_ERR_MALFORMED when input is not an object or a value has the wrong JSON type.
 * BH_ERR_INVALID for an unknown field, a missing or null required field, or a value outside
 * its rules. A count written as a real, such as 5.0, is BH_ERR_INVALID. An optional string
 * sent as "" is kept as "", except the account name, which falls back like null.
 */
json_t *record_normalize(enum record_kind kind, json_t *input, const json_t *base, const char *path,
                         struct bh_error *err);

#endif
