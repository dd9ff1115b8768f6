/* alloc.h - memory that is never NULL: the core's allocation functions, for
 * modules too. Each aborts the server (after one line on stderr) when the
 * system has no memory left, so callers need no NULL check. Everything they
 * return is freed with free(). */
#ifndef MAGPIE_ALLOC_H
#define MAGPIE_ALLOC_H

#include <stddef.h>

/* malloc; a request of 0 bytes gets a block of 1. */
void *mp_malloc(size_t n);
/* calloc (zeroed); a count or size of 0 counts as 1. */
void *mp_calloc(size_t n, size_t m);
/* realloc; p may be NULL, a size of 0 keeps a block of 1 (p is not freed). */
void *mp_realloc(void *p, size_t n);
/* strdup; NULL gives NULL. */
char *mp_strdup(const char *s);
/* Copies n bytes (p may be NULL when n is 0) into a new buffer with a NUL
 * after them. */
char *mp_memdup0(const void *p, size_t n);

#endif
