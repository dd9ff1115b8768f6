/* table.c - separate chaining, power-of-two buckets, grows at load 1.
 *
 * Keys are hashed with SipHash-1-3 under a random per-process key, so a
 * peer that chooses keys (JIDs, addresses) cannot precompute collisions
 * and turn a lookup into a walk of one long chain. */
#include "base/base.h"
#include "base/table.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *next;
    void *value;
    unsigned hash;
    char key[];
};

struct mp_table {
    struct entry **buckets;
    size_t nbuckets, count;
};

static uint64_t sip_k0, sip_k1;
static pthread_once_t sip_once = PTHREAD_ONCE_INIT;

static void sip_init(void)
{
    uint64_t k[2];
    mp_random_bytes(k, sizeof k);
    sip_k0 = k[0];
    sip_k1 = k[1];
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

/* SipHash-1-3 (one compression round, three finalisation rounds) of the
 * NUL-terminated string s under the process key. */
static unsigned key_hash(const char *s)
{
    pthread_once(&sip_once, sip_init);
    size_t len = strlen(s);
    uint64_t v0 = 0x736f6d6570736575ULL ^ sip_k0, v1 = 0x646f72616e646f6dULL ^ sip_k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ sip_k0, v3 = 0x7465646279746573ULL ^ sip_k1;
    const unsigned char *p = (const unsigned char *)s;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = 0;
        for (int b = 7; b >= 0; b--)
            m = (m << 8) | p[i + (size_t)b];
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = full; i < len; i++)
        last |= (uint64_t)p[i] << (8 * (i - full));
    v3 ^= last;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    uint64_t h = v0 ^ v1 ^ v2 ^ v3;
    return (unsigned)(h ^ (h >> 32));
}

mp_table *mp_table_new(size_t initial)
{
    mp_table *h = mp_calloc(1, sizeof *h);
    size_t n = 8;
    while (n < initial)
        n <<= 1;
    h->nbuckets = n;
    h->buckets = mp_calloc(n, sizeof *h->buckets);
    return h;
}

void mp_table_free(mp_table *h, void (*free_value)(void *))
{
    if (!h)
        return;
    for (size_t i = 0; i < h->nbuckets; i++) {
        struct entry *e = h->buckets[i];
        while (e) {
            struct entry *next = e->next;
            if (free_value)
                free_value(e->value);
            free(e);
            e = next;
        }
    }
    free(h->buckets);
    free(h);
}

static struct entry **find(const mp_table *h, const char *key, unsigned hv)
{
    struct entry **pp = &h->buckets[hv & (h->nbuckets - 1)];
    while (*pp && ((*pp)->hash != hv || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->next;
    return pp;
}

void *mp_table_get(const mp_table *h, const char *key)
{
    struct entry *e = *find(h, key, key_hash(key));
    return e ? e->value : NULL;
}

static void grow(mp_table *h)
{
    size_t n = h->nbuckets * 2;
    struct entry **b = mp_calloc(n, sizeof *b);
    for (size_t i = 0; i < h->nbuckets; i++) {
        struct entry *e = h->buckets[i];
        while (e) {
            struct entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(h->buckets);
    h->buckets = b;
    h->nbuckets = n;
}

void *mp_table_put(mp_table *h, const char *key, void *value)
{
    unsigned hv = key_hash(key);
    struct entry **pp = find(h, key, hv);
    if (*pp) {
        void *old = (*pp)->value;
        (*pp)->value = value;
        return old;
    }
    size_t klen = strlen(key);
    struct entry *e = mp_malloc(sizeof *e + klen + 1);
    memcpy(e->key, key, klen + 1);
    e->hash = hv;
    e->value = value;
    e->next = NULL;
    *pp = e;
    if (++h->count > h->nbuckets)
        grow(h);
    return NULL;
}

void *mp_table_del(mp_table *h, const char *key)
{
    struct entry **pp = find(h, key, key_hash(key));
    struct entry *e = *pp;
    if (!e)
        return NULL;
    void *v = e->value;
    *pp = e->next;
    free(e);
    h->count--;
    return v;
}

size_t mp_table_count(const mp_table *h)
{
    return h->count;
}

void mp_table_foreach(const mp_table *h, void (*fn)(void *, const char *, void *), void *ud)
{
    for (size_t i = 0; i < h->nbuckets; i++)
        for (struct entry *e = h->buckets[i]; e; e = e->next)
            fn(ud, e->key, e->value);
}

/* ---- id map ---- */

struct idslot {
    uint64_t id; /* 0: empty */
    void *value;
};

struct mp_idmap {
    struct idslot *v;
    size_t cap, n; /* cap: power of two */
};

static size_t id_hash(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 17) & (cap - 1);
}

mp_idmap *mp_idmap_new(void)
{
    mp_idmap *m = mp_calloc(1, sizeof *m);
    m->cap = 64;
    m->v = mp_calloc(m->cap, sizeof *m->v);
    return m;
}

void mp_idmap_free(mp_idmap *m)
{
    if (!m)
        return;
    free(m->v);
    free(m);
}

size_t mp_idmap_count(const mp_idmap *m)
{
    return m->n;
}

void *mp_idmap_get(const mp_idmap *m, uint64_t id)
{
    for (size_t i = id_hash(id, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->v[i].id == id)
            return m->v[i].value;
        if (m->v[i].id == 0)
            return NULL;
    }
}

static void idmap_grow(mp_idmap *m)
{
    struct idslot *old = m->v;
    size_t oc = m->cap;
    m->cap *= 2;
    m->v = mp_calloc(m->cap, sizeof *m->v);
    for (size_t j = 0; j < oc; j++)
        if (old[j].id) {
            size_t i = id_hash(old[j].id, m->cap);
            while (m->v[i].id)
                i = (i + 1) & (m->cap - 1);
            m->v[i] = old[j];
        }
    free(old);
}

void *mp_idmap_put(mp_idmap *m, uint64_t id, void *value)
{
    if ((m->n + 1) * 4 > m->cap * 3)
        idmap_grow(m);
    size_t i = id_hash(id, m->cap);
    for (; m->v[i].id; i = (i + 1) & (m->cap - 1))
        if (m->v[i].id == id) {
            void *prev = m->v[i].value;
            m->v[i].value = value;
            return prev;
        }
    m->v[i] = (struct idslot){id, value};
    m->n++;
    return NULL;
}

void mp_idmap_foreach(const mp_idmap *m, void (*fn)(void *, uint64_t, void *), void *ud)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->v[i].id)
            fn(ud, m->v[i].id, m->v[i].value);
}

void *mp_idmap_del(mp_idmap *m, uint64_t id)
{
    size_t mask = m->cap - 1, i = id_hash(id, m->cap);
    while (m->v[i].id != id) {
        if (m->v[i].id == 0)
            return NULL;
        i = (i + 1) & mask;
    }
    void *value = m->v[i].value;
    m->n--;
    /* backward-shift deletion: no tombstones */
    for (size_t j = (i + 1) & mask; m->v[j].id; j = (j + 1) & mask) {
        size_t home = id_hash(m->v[j].id, m->cap);
        /* move j into the hole at i if its home is not in (i, j] */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->v[i] = m->v[j];
            i = j;
        }
    }
    m->v[i] = (struct idslot){0, NULL};
    return value;
}
