/* hash.c - separate chaining, power-of-two buckets, FNV-1a, grows at load 1. */
#include "core.h"
#include "table.h"

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

static unsigned fnv1a(const char *s)
{
    unsigned h = 2166136261u;
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 16777619u;
    }
    return h;
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
    struct entry *e = *find(h, key, fnv1a(key));
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
    unsigned hv = fnv1a(key);
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
    struct entry **pp = find(h, key, fnv1a(key));
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
