/* util.c - small helpers: clock, randomness, allocation that aborts on OOM. */
#include "base/base.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double mp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void mp_random_bytes(void *buf, size_t len)
{
    if (RAND_bytes(buf, (int)len) != 1) {
        fprintf(stderr, "magpie: RAND_bytes failed\n");
        abort();
    }
}

void mp_random_id(char *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[16];
    size_t n = len > 0 ? len - 1 : 0;
    if (n > 2 * sizeof raw)
        n = 2 * sizeof raw;
    mp_random_bytes(raw, (n + 1) / 2);
    for (size_t i = 0; i < n; i++)
        buf[i] = hex[(raw[i / 2] >> ((i % 2) ? 0 : 4)) & 0xf];
    if (len > 0)
        buf[n] = '\0';
}

static void oom(void)
{
    fprintf(stderr, "magpie: out of memory\n");
    abort();
}

void *mp_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *mp_calloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p)
        oom();
    return p;
}

void *mp_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        oom();
    return p;
}

char *mp_memdup0(const void *p, size_t n)
{
    char *d = mp_malloc(n + 1);
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

char *mp_strdup(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        oom();
    return d;
}

void mp_addr_key(const struct sockaddr *sa, char *key, size_t len)
{
    if (sa->sa_family == AF_INET6) {
        struct in6_addr a = ((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&a)) {
            inet_ntop(AF_INET, &a.s6_addr[12], key, (socklen_t)len);
            return;
        }
        memset(&a.s6_addr[8], 0, 8);
        char buf[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &a, buf, sizeof buf);
        snprintf(key, len, "%s/64", buf);
    } else if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, key, (socklen_t)len);
    } else {
        snprintf(key, len, "local");
    }
}
