/*
 * Status codes and error details shared by every module.
 *
 * Actions return 0 or a negative BH_ERR_* code and, when the caller passes one, fill a
 * struct bh_error with the field at fault (a JSON path such as "lead.email", or empty) and a
 * message that names the value and the fix. The API turns these into its JSON error body.
 */
#ifndef BEARHOOK_CORE_ERROR_H
#define BEARHOOK_CORE_ERROR_H

enum bh_status {
    BH_OK = 0,
    BH_ERR_MALFORMED = -1, /* the request cannot be parsed: bad JSON, wrong type */
    BH_ERR_INVALID = -2,   /* parsed, but a value is out of range or not allowed */
    BH_ERR_NOT_FOUND = -3,
    BH_ERR_CONFLICT = -4,
    BH_ERR_TOO_LARGE = -5,
    BH_ERR_UNAUTHORIZED = -6,
    BH_ERR_STORE = -7, /* the database failed */
    BH_ERR_IO = -8,    /* a file or socket operation failed */
    BH_ERR_INTERNAL = -9,
    BH_ERR_UNAVAILABLE = -10, /* the server is stopping or overloaded; try again */
};

struct bh_error {
    int status;
    char field[128];
    char message[512];
};

/* Returns a short lowercase name for a status, such as "not_found". */
const char *bh_status_name(int status);
void bh_error_clear(struct bh_error *err);
/* Fills err (when not NULL) and returns status, so callers can `return bh_error_set(...)`. */
int bh_error_set(struct bh_error *err, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
