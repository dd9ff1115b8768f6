/* storage.h - typed stores behind one asynchronous API.
 *
 * Three kinds of store, opened by name, all scoped by virtual host:
 *   keyval  - one document (opaque bytes) per key (e.g. per user: vCard,
 *             account credentials);
 *   map     - many fields per key (e.g. roster items per user);
 *   archive - an ordered, paged log per key (offline messages, MAM, device
 *             command queues); ids are increasing 64-bit integers.
 *
 * Asynchronous calls run on the storage thread pool and call back on the
 * caller's loop (mp_loop_current() at call time), never blocking it. The
 * data pointers given to a callback are valid only during the callback.
 * The *_sync variants block; they are for magpiectl, start-up and tests,
 * never for code running on a worker loop.
 *
 * Drivers: "sqlite" (embedded default, WAL) and "mysql" (MariaDB/MySQL). */
#ifndef MAGPIE_STORAGE_H
#define MAGPIE_STORAGE_H

#include <stddef.h>
#include <stdint.h>

/* ---- keyval ---- */
/* rc: MAGPIE_OK (data/len set), MAGPIE_NOTFOUND, MAGPIE_ERR. */
typedef void (*mp_kv_get_cb)(void *ud, int rc, const void *data, size_t len);
/* rc: MAGPIE_OK or MAGPIE_ERR. */
typedef void (*mp_store_done_cb)(void *ud, int rc);

int mp_kv_get(const char *host, const char *store, const char *key, mp_kv_get_cb cb, void *ud);
int mp_kv_set(const char *host, const char *store, const char *key, const void *data, size_t len,
              mp_store_done_cb cb, void *ud);
int mp_kv_del(const char *host, const char *store, const char *key, mp_store_done_cb cb, void *ud);

/* Sync: *data is malloc'd, caller frees. Returns MAGPIE_OK, MAGPIE_NOTFOUND
 * or MAGPIE_ERR. */
int mp_kv_get_sync(const char *host, const char *store, const char *key, void **data, size_t *len);
int mp_kv_set_sync(const char *host, const char *store, const char *key, const void *data,
                   size_t len);
/* Returns MAGPIE_OK, MAGPIE_NOTFOUND (no such key) or MAGPIE_ERR. */
int mp_kv_del_sync(const char *host, const char *store, const char *key);
/* Calls fn for every key of (host, store) in ascending byte order. */
int mp_kv_keys_sync(const char *host, const char *store, void (*fn)(void *ud, const char *key),
                    void *ud);

/* ---- map ---- */
int mp_map_get(const char *host, const char *store, const char *key, const char *field,
               mp_kv_get_cb cb, void *ud);
int mp_map_set(const char *host, const char *store, const char *key, const char *field,
               const void *data, size_t len, mp_store_done_cb cb, void *ud);
/* field NULL deletes every field of key. */
int mp_map_del(const char *host, const char *store, const char *key, const char *field,
               mp_store_done_cb cb, void *ud);

typedef struct mp_map_item {
    const char *field;
    const void *data;
    size_t len;
} mp_map_item;
/* rc MAGPIE_OK with n items (possibly 0) or MAGPIE_ERR. */
typedef void (*mp_map_all_cb)(void *ud, int rc, const mp_map_item *items, size_t n);
int mp_map_all(const char *host, const char *store, const char *key, mp_map_all_cb cb, void *ud);

/* Pages through a keyval store: up to limit (1..1000) keys of (host,
 * store) greater than after ("" : from the first) in ascending byte order,
 * with their values, as items whose field is the key. rc MAGPIE_OK with n
 * items (fewer than limit: the end was reached) or MAGPIE_ERR. For
 * background clean-up in small batches (the next page starts after the
 * last key seen). */
int mp_kv_scan(const char *host, const char *store, const char *after, size_t limit,
               mp_map_all_cb cb, void *ud);

int mp_map_get_sync(const char *host, const char *store, const char *key, const char *field,
                    void **data, size_t *len);
int mp_map_set_sync(const char *host, const char *store, const char *key, const char *field,
                    const void *data, size_t len);
int mp_map_del_sync(const char *host, const char *store, const char *key, const char *field);

/* ---- archive ---- */
typedef struct mp_archive_item {
    int64_t id;       /* increasing within (host, store, key) */
    int64_t ts;       /* unix time, microseconds */
    const char *with; /* free-form filter column (a JID), may be NULL */
    const void *data;
    size_t len;
} mp_archive_item;

/* rc MAGPIE_OK with the new id, or MAGPIE_ERR (id 0). The item is durable
 * (committed) when the callback runs. */
typedef void (*mp_archive_append_cb)(void *ud, int rc, int64_t id);
int mp_archive_append(const char *host, const char *store, const char *key, const char *with,
                      const void *data, size_t len, mp_archive_append_cb cb, void *ud);

typedef struct mp_archive_filter {
    int64_t after_id;  /* only ids > after_id (0: from the start) */
    int64_t before_id; /* only ids < before_id (0: no bound) */
    const char *with;  /* NULL: any */
    size_t limit;      /* 0: no limit */
    int reverse;       /* newest first */
    int64_t ts_from;   /* only ts >= ts_from (microseconds; 0: no bound) */
    int64_t ts_to;     /* only ts <= ts_to (microseconds; 0: no bound) */
    /* NULL: any; only items whose with contains this byte string (a module
     * that files several names in one with, e.g. MUC's nick and real JID) */
    const char *with_has;
} mp_archive_filter;
/* Like mp_archive_append, with the item's timestamp given by the caller
 * (unix microseconds) instead of the time of the call: a module that names
 * its items by time (MUC stanza ids) keeps ts unique and increasing per key
 * itself. Results are ordered by id, not ts. */
int mp_archive_append_at(const char *host, const char *store, const char *key, int64_t ts,
                         const char *with, const void *data, size_t len, mp_archive_append_cb cb,
                         void *ud);

typedef void (*mp_archive_query_cb)(void *ud, int rc, const mp_archive_item *items, size_t n);
int mp_archive_query(const char *host, const char *store, const char *key,
                     const mp_archive_filter *q, mp_archive_query_cb cb, void *ud);
/* The number of items of key matching q (its limit and reverse are
 * ignored): rc MAGPIE_OK with n, or MAGPIE_ERR (n 0). For XEP-0059 counts
 * and trimming an archive to a size. */
typedef void (*mp_archive_count_cb)(void *ud, int rc, int64_t n);
int mp_archive_count(const char *host, const char *store, const char *key,
                     const mp_archive_filter *q, mp_archive_count_cb cb, void *ud);
/* Replaces the data of item id of key (its id, ts and with stay), e.g.
 * by a tombstone. The callback gets MAGPIE_OK, MAGPIE_NOTFOUND (no such
 * item) or MAGPIE_ERR. */
int mp_archive_replace(const char *host, const char *store, const char *key, int64_t id,
                       const void *data, size_t len, mp_store_done_cb cb, void *ud);
/* Deletes ids <= up_to_id (0: all) of key. */
int mp_archive_delete(const char *host, const char *store, const char *key, int64_t up_to_id,
                      mp_store_done_cb cb, void *ud);

int mp_archive_append_sync(const char *host, const char *store, const char *key, const char *with,
                           const void *data, size_t len, int64_t *id);
/* Sync query: fn is called per item, in order. */
int mp_archive_query_sync(const char *host, const char *store, const char *key,
                          const mp_archive_filter *q,
                          void (*fn)(void *ud, const mp_archive_item *item), void *ud);
/* Returns MAGPIE_OK, MAGPIE_NOTFOUND or MAGPIE_ERR. */
int mp_archive_replace_sync(const char *host, const char *store, const char *key, int64_t id,
                            const void *data, size_t len);
int mp_archive_delete_sync(const char *host, const char *store, const char *key, int64_t up_to_id);

/* ---- transactions ----
 *
 * A few reads and writes that must commit together, or that decide what to
 * write from what they read (e.g. "append a command unless this
 * idempotency key already names one, and record the key"), in one call:
 * fn runs on a storage thread inside a write transaction, reading and
 * writing through t only; done(ud, rc) then runs on the caller's loop, as
 * for the other asynchronous calls, once the transaction is committed
 * (rc MAGPIE_OK) or rolled back (rc MAGPIE_ERR: fn returned MAGPIE_ERR, a
 * call through t failed and fn passed that on, or the commit failed).
 *
 * The transaction may be shared with other writes (a group commit); if the
 * shared one fails, fn runs again in a transaction of its own, so fn must
 * keep its results in ud and set them afresh on each run, and must not
 * touch anything a loop thread uses meanwhile. fn must not block on
 * anything but t. (host, store, key) orders the call with the other calls
 * on that key, like theirs; t's calls are scoped to host. */
typedef struct mp_txn mp_txn;
typedef int (*mp_txn_fn)(mp_txn *t, void *ud);
int mp_storage_txn(const char *host, const char *store, const char *key, mp_txn_fn fn,
                   mp_store_done_cb done, void *ud);
/* As mp_kv_get_sync: *data is malloc'd (NUL-terminated), the caller frees;
 * MAGPIE_OK, MAGPIE_NOTFOUND or MAGPIE_ERR. */
int mp_txn_kv_get(mp_txn *t, const char *store, const char *key, void **data, size_t *len);
int mp_txn_kv_set(mp_txn *t, const char *store, const char *key, const void *data, size_t len);
/* Appends with the current time; sets *id. */
int mp_txn_archive_append(mp_txn *t, const char *store, const char *key, const char *with,
                          const void *data, size_t len, int64_t *id);

#endif
