#include "util/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die_out_of_memory(size_t size)
{
    fprintf(stderr, "bearhook: out of memory allocating %zu bytes\n", size);
    abort();
}

void *xmalloc(size_t size)
{
    void *ptr = malloc(size ? size : 1);

    if (!ptr)
        die_out_of_memory(size);
    return ptr;
}

void *xcalloc(size_t count, size_t size)
{
    void *ptr = calloc(count ? count : 1, size ? size : 1);

    if (!ptr)
        die_out_of_memory(count * size);
    return ptr;
}

void *xrealloc(void *ptr, size_t size)
{
    void *grown = realloc(ptr, size ? size : 1);

    if (!grown)
        die_out_of_memory(size);
    return grown;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t max_len)
{
    size_t len = strnlen(s, max_len);
    char *copy = xmalloc(len + 1);

    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *xasprintf(const char *fmt, ...)
{
    va_list args;
    char *out = NULL;
    int len;

    va_start(args, fmt);
    len = vasprintf(&out, fmt, args);
    va_end(args);
    if (len < 0)
        die_out_of_memory(0);
    return out;
}
