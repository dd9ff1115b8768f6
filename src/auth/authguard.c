/* authguard.c - throttling of failed logins, per remote address (the
 * per-address key of mp_addr_key: an IPv4 address or an IPv6 /64) and per
 * account (username@host).
 *
 * Each kind has a bounded table of failure counts. A count starts over
 * after `window` seconds without a failure; past `failures_free` failures
 * every further failure answer is delayed 1 s, doubling per failure up to
 * `delay_max`. A success clears the account's count (not the address's:
 * one good password must not launder an address guessing others).
 *
 * Keys are HMAC-SHA-256 digests (truncated to 16 bytes) under a random
 * per-process key, so the hash buckets cannot be aimed at from outside and
 * no username or address is kept in clear. Each table keeps its entries on
 * a list ordered by their last failure: expired entries are dropped from
 * its old end, and when the table is full the oldest entry is evicted. One
 * mutex guards both tables; it is taken only on failures, successes and
 * for the status counters. */
#include "base/base.h"
#include "auth/authguard.h"
#include "auth/sasl.h"

#include <stdlib.h>
#include <string.h>

#define KEY_LEN 16

struct entry {
    unsigned char key[KEY_LEN];
    struct entry *hnext;         /* bucket chain */
    struct entry *older, *newer; /* by last failure */
    double last;                 /* time of the last failure */
    unsigned failures;
};

struct table {
    struct entry **buckets;
    size_t nbuckets, count, max;
    struct entry *oldest, *newest;
};

struct mp_authguard {
    pthread_mutex_t lock;
    unsigned failures_free;
    double delay_max, window;
    unsigned char secret[32];
    struct table t[MP_AUTHGUARD_KINDS];
};

double mp_authguard_delay(unsigned failures, unsigned failures_free, double delay_max)
{
    if (failures <= failures_free || delay_max <= 0)
        return 0;
    unsigned over = failures - failures_free - 1; /* 0 for the first delayed one */
    if (over >= 31)
        return delay_max;
    double d = (double)(1u << over);
    return d < delay_max ? d : delay_max;
}

mp_authguard *mp_authguard_new(unsigned failures_free, double delay_max, double window,
                               size_t max_entries)
{
    mp_authguard *g = mp_calloc(1, sizeof *g);
    pthread_mutex_init(&g->lock, NULL);
    g->failures_free = failures_free;
    g->delay_max = delay_max;
    g->window = window;
    mp_random_bytes(g->secret, sizeof g->secret);
    if (max_entries < 1)
        max_entries = 1;
    size_t nb = 16;
    while (nb < max_entries && nb < ((size_t)1 << 20))
        nb <<= 1;
    for (int k = 0; k < MP_AUTHGUARD_KINDS; k++) {
        g->t[k].max = max_entries;
        g->t[k].nbuckets = nb;
        g->t[k].buckets = mp_calloc(nb, sizeof *g->t[k].buckets);
    }
    return g;
}

void mp_authguard_free(mp_authguard *g)
{
    if (!g)
        return;
    for (int k = 0; k < MP_AUTHGUARD_KINDS; k++) {
        struct entry *e = g->t[k].oldest;
        while (e) {
            struct entry *next = e->newer;
            free(e);
            e = next;
        }
        free(g->t[k].buckets);
    }
    pthread_mutex_destroy(&g->lock);
    free(g);
}

/* The table key of (kind, data): a keyed digest. */
static void make_key(const mp_authguard *g, int kind, const void *data, size_t len,
                     unsigned char *key)
{
    unsigned char mac[32];
    unsigned char *buf = mp_malloc(len + 1);
    buf[0] = (unsigned char)kind;
    memcpy(buf + 1, data, len);
    mp_scram_hmac(MP_HASH_SHA256, g->secret, sizeof g->secret, buf, len + 1, mac);
    free(buf);
    memcpy(key, mac, KEY_LEN);
}

static size_t bucket_of(const struct table *t, const unsigned char *key)
{
    size_t h;
    memcpy(&h, key, sizeof h);
    return h & (t->nbuckets - 1);
}

static struct entry *find(const struct table *t, const unsigned char *key)
{
    for (struct entry *e = t->buckets[bucket_of(t, key)]; e; e = e->hnext)
        if (memcmp(e->key, key, KEY_LEN) == 0)
            return e;
    return NULL;
}

static void list_unlink(struct table *t, struct entry *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        t->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        t->newest = e->older;
    e->older = e->newer = NULL;
}

static void list_push_newest(struct table *t, struct entry *e)
{
    e->older = t->newest;
    e->newer = NULL;
    if (t->newest)
        t->newest->newer = e;
    else
        t->oldest = e;
    t->newest = e;
}

static void remove_entry(struct table *t, struct entry *e)
{
    struct entry **pp = &t->buckets[bucket_of(t, e->key)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    list_unlink(t, e);
    t->count--;
    free(e);
}

/* Drops the entries whose last failure is older than the window. */
static void expire(mp_authguard *g, struct table *t, double now)
{
    while (t->oldest && now - t->oldest->last > g->window)
        remove_entry(t, t->oldest);
}

/* Counts one failure for key; returns the new count. */
static unsigned count_failure(mp_authguard *g, struct table *t, const unsigned char *key,
                              double now)
{
    expire(g, t, now);
    struct entry *e = find(t, key);
    if (e) {
        list_unlink(t, e);
    } else {
        if (t->count >= t->max)
            remove_entry(t, t->oldest);
        e = mp_calloc(1, sizeof *e);
        memcpy(e->key, key, KEY_LEN);
        size_t b = bucket_of(t, key);
        e->hnext = t->buckets[b];
        t->buckets[b] = e;
        t->count++;
    }
    if (e->failures < 1000000u)
        e->failures++;
    e->last = now;
    list_push_newest(t, e);
    return e->failures;
}

double mp_authguard_failure(mp_authguard *g, const char *addr, const char *account, double now)
{
    unsigned char key[KEY_LEN];
    double delay = 0;
    if (!g)
        return 0;
    pthread_mutex_lock(&g->lock);
    if (addr && *addr) {
        make_key(g, MP_AUTHGUARD_ADDRESS, addr, strlen(addr), key);
        unsigned n = count_failure(g, &g->t[MP_AUTHGUARD_ADDRESS], key, now);
        delay = mp_authguard_delay(n, g->failures_free, g->delay_max);
    }
    if (account) {
        make_key(g, MP_AUTHGUARD_ACCOUNT, account, strlen(account), key);
        unsigned n = count_failure(g, &g->t[MP_AUTHGUARD_ACCOUNT], key, now);
        double d = mp_authguard_delay(n, g->failures_free, g->delay_max);
        if (d > delay)
            delay = d;
    }
    pthread_mutex_unlock(&g->lock);
    return delay;
}

void mp_authguard_success(mp_authguard *g, const char *account)
{
    unsigned char key[KEY_LEN];
    if (!g || !account)
        return;
    make_key(g, MP_AUTHGUARD_ACCOUNT, account, strlen(account), key);
    pthread_mutex_lock(&g->lock);
    struct table *t = &g->t[MP_AUTHGUARD_ACCOUNT];
    struct entry *e = find(t, key);
    if (e)
        remove_entry(t, e);
    pthread_mutex_unlock(&g->lock);
}

unsigned mp_authguard_failures(mp_authguard *g, int kind, const char *what, double now)
{
    unsigned char key[KEY_LEN];
    if (!g || !what || kind < 0 || kind >= MP_AUTHGUARD_KINDS)
        return 0;
    make_key(g, kind, what, strlen(what), key);
    pthread_mutex_lock(&g->lock);
    struct entry *e = find(&g->t[kind], key);
    unsigned n = e && now - e->last <= g->window ? e->failures : 0;
    pthread_mutex_unlock(&g->lock);
    return n;
}

void mp_authguard_stats(mp_authguard *g, double now, size_t *throttled, size_t *entries)
{
    for (int k = 0; k < MP_AUTHGUARD_KINDS; k++) {
        if (throttled)
            throttled[k] = 0;
        if (entries)
            entries[k] = 0;
    }
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    for (int k = 0; k < MP_AUTHGUARD_KINDS; k++) {
        struct table *t = &g->t[k];
        expire(g, t, now);
        if (entries)
            entries[k] = t->count;
        if (throttled)
            for (struct entry *e = t->newest; e; e = e->older)
                if (e->failures > g->failures_free)
                    throttled[k]++;
    }
    pthread_mutex_unlock(&g->lock);
}
