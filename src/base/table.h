/* hash.h - a small string-keyed hash map (core-internal, not thread-safe:
 * callers lock or confine it to one thread). Keys are copied; values are
 * the caller's. */
#ifndef MAGPIE_TABLE_H
#define MAGPIE_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct mp_table mp_table;

mp_table *mp_table_new(size_t initial);
/* Frees the map; calls free_value on each value if not NULL. */
void mp_table_free(mp_table *h, void (*free_value)(void *));
void *mp_table_get(const mp_table *h, const char *key);
/* Inserts or replaces; returns the previous value or NULL. */
void *mp_table_put(mp_table *h, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *mp_table_del(mp_table *h, const char *key);
size_t mp_table_count(const mp_table *h);
/* Calls fn for each entry; fn must not modify the map. */
void mp_table_foreach(const mp_table *h, void (*fn)(void *ud, const char *key, void *value),
                      void *ud);

/* A map from nonzero 64-bit ids (server-chosen, e.g. session ids) to
 * pointers: open addressing, confined to one thread. */
typedef struct mp_idmap mp_idmap;
mp_idmap *mp_idmap_new(void);
void mp_idmap_free(mp_idmap *m);
void *mp_idmap_get(const mp_idmap *m, uint64_t id);
/* Inserts or replaces; returns the previous value or NULL. */
void *mp_idmap_put(mp_idmap *m, uint64_t id, void *value);
/* Removes id; returns its value or NULL. */
void *mp_idmap_del(mp_idmap *m, uint64_t id);
size_t mp_idmap_count(const mp_idmap *m);
/* Calls fn for each entry; fn must not modify the map. */
void mp_idmap_foreach(const mp_idmap *m, void (*fn)(void *ud, uint64_t id, void *value), void *ud);

#endif
