/*
 * A growable byte buffer. `data` is NUL-terminated whenever it is not NULL, so text built here
 * can be used as a C string; binary content may contain NUL bytes, and `len` is authoritative.
 *
 * Lifecycle: buf_init (or BUF_INIT), appends, then buf_release, or buf_detach to take the bytes.
 * Not thread-safe. Callers bound what input can append before appending it.
 */
#ifndef BEARHOOK_UTIL_BUF_H
#define BEARHOOK_UTIL_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void buf_init(struct buf *buf);
void buf_release(struct buf *buf);
/* Empties the buffer and keeps its memory. */
void buf_reset(struct buf *buf);
void buf_append(struct buf *buf, const void *bytes, size_t len);
void buf_append_str(struct buf *buf, const char *s);
void buf_appendf(struct buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Returns the bytes, NUL-terminated, for the caller to free; the buffer is left empty. */
char *buf_detach(struct buf *buf, size_t *len);

#endif
