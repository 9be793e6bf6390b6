/*
 * Allocation wrappers that abort the process when memory runs out.
 *
 * bearhook treats allocation failure as fatal: a service that cannot allocate a few bytes
 * cannot make progress, and checking every small allocation would hide the real error paths.
 * Every size that input controls is bounded before it reaches these functions.
 */
#ifndef BEARHOOK_UTIL_ALLOC_H
#define BEARHOOK_UTIL_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t max_len);
/* Formats into a new string that the caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
