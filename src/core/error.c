#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *bh_status_name(int status)
{
    switch (status) {
    case BH_OK:
        return "ok";
    case BH_ERR_MALFORMED:
        return "malformed_request";
    case BH_ERR_INVALID:
        return "validation_failed";
    case BH_ERR_NOT_FOUND:
        return "not_found";
    case BH_ERR_CONFLICT:
        return "conflict";
    case BH_ERR_TOO_LARGE:
        return "payload_too_large";
    case BH_ERR_UNAUTHORIZED:
        return "unauthorized";
    case BH_ERR_STORE:
        return "store_error";
    case BH_ERR_IO:
        return "io_error";
    case BH_ERR_UNAVAILABLE:
        return "unavailable";
    default:
        return "internal_error";
    }
}

void bh_error_clear(struct bh_error *err)
{
    if (!err)
        return;
    err->status = BH_OK;
    err->field[0] = '\0';
    err->message[0] = '\0';
}

int bh_error_set(struct bh_error *err, int status, const char *field, const char *fmt, ...)
{
    va_list args;

    if (!err)
        return status;
    err->status = status;
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    va_start(args, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, args);
    va_end(args);
    return status;
}
