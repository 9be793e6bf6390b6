#include "util/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"

void buf_init(struct buf *buf)
{
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
}

void buf_release(struct buf *buf)
{
    free(buf->data);
    buf_init(buf);
}

void buf_reset(struct buf *buf)
{
    buf->len = 0;
    if (buf->data)
        buf->data[0] = '\0';
}

static void reserve(struct buf *buf, size_t extra)
{
    size_t needed = buf->len + extra + 1;
    size_t cap = buf->cap ? buf->cap : 64;

    if (needed <= buf->cap)
        return;
    while (cap < needed)
        cap *= 2;
    buf->data = xrealloc(buf->data, cap);
    buf->cap = cap;
}

void buf_append(struct buf *buf, const void *bytes, size_t len)
{
    reserve(buf, len);
    if (len)
        memcpy(buf->data + buf->len, bytes, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
}

void buf_append_str(struct buf *buf, const char *s)
{
    buf_append(buf, s, strlen(s));
}

void buf_appendf(struct buf *buf, const char *fmt, ...)
{
    va_list args;
    va_list again;
    int len;

    va_start(args, fmt);
    va_copy(again, args);
    len = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    if (len < 0)
        abort();

    reserve(buf, (size_t)len);
    vsnprintf(buf->data + buf->len, (size_t)len + 1, fmt, again);
    va_end(again);
    buf->len += (size_t)len;
}

char *buf_detach(struct buf *buf, size_t *len)
{
    char *data = buf->data ? buf->data : xstrdup("");

    if (len)
        *len = buf->len;
    buf_init(buf);
    return data;
}
