/* storage_driver.h - core-internal side of the storage API: opening and
 * closing the store, and the vtable every engine implements (one file per
 * engine: storage_sqlite.c, storage_mysql.c).
 *
 * The public, asynchronous API is include/magpie/storage.h; storage.c turns
 * each call into a job run by a pool thread on that thread's own driver
 * connection. */
#ifndef MAGPIE_STORAGE_DRIVER_H
#define MAGPIE_STORAGE_DRIVER_H

#include <magpie/storage.h>
#include <stddef.h>
#include <stdint.h>

struct mp_config;

/* ---- lifecycle (called by the core) ---- */

/* Opens the driver named by cfg->storage_driver ("sqlite" when NULL),
 * connects, runs the schema migrations and starts the storage thread pool
 * (cfg->storage_threads threads, 2 when 0). cfg is not kept: what is needed
 * is copied. Returns MAGPIE_OK, or MAGPIE_ERR with a message in err.
 *
 * Asynchronous calls (mp_kv_get, ...) return MAGPIE_OK when the job was
 * queued - the callback then runs exactly once - and MAGPIE_ERR when it was
 * not (storage not open, closing, bad argument such as an over-long key):
 * the callback is then never called. The callback runs on the loop that
 * was current (mp_loop_current()) when the call was made; when the caller
 * had no loop it runs on the storage pool thread (it must not block long).
 * Calls from one loop on the same (host, store, key) complete in issue
 * order: every key is hashed to one fixed pool thread. */
int mp_storage_open(const struct mp_config *cfg, char *err, size_t errlen);

/* Like mp_storage_open without the thread pool: only the *_sync calls work
 * (asynchronous calls return MAGPIE_ERR). For magpiectl and tools. */
int mp_storage_open_sync_only(const struct mp_config *cfg, char *err, size_t errlen);

/* Runs every queued job to completion (their completions are posted to
 * their loops as usual), joins the pool threads, waits for running *_sync
 * calls and closes all connections. Safe to call when not open. */
void mp_storage_close(void);

/* Limits on names, in bytes, identical for every driver. Longer values are
 * refused with MAGPIE_ERR (keys are compared as bytes, case-sensitively). */
#define MP_STORAGE_MAX_HOST  255
#define MP_STORAGE_MAX_STORE 64
#define MP_STORAGE_MAX_KEY   1024
#define MP_STORAGE_MAX_FIELD 1024
#define MP_STORAGE_MAX_WITH  3071

/* ---- the driver vtable ----
 *
 * An engine handle (from init) holds the copied settings; connections
 * (from connect) are used by one thread at a time but may move between
 * threads. Every operation is synchronous and returns MAGPIE_OK,
 * MAGPIE_NOTFOUND (where noted) or MAGPIE_ERR (logged by the driver).
 * Data handed to the visitor callbacks is valid only during the call. */

typedef void (*mp_sd_key_fn)(void *ud, const char *key);
typedef void (*mp_sd_field_fn)(void *ud, const char *field, const void *data, size_t len);
typedef void (*mp_sd_item_fn)(void *ud, const mp_archive_item *item);

struct mp_storage_driver {
    const char *name;
    /* 1 when the engine lets one writer at a time commit (SQLite): the pool
     * then sends writes to one thread, so concurrent writers share one
     * commit instead of queueing for the lock with a commit each, and reads
     * to the others, so they never wait behind a commit (storage.c). */
    int single_writer;

    /* Copies what it needs from cfg; returns an engine handle or NULL. */
    void *(*init)(const struct mp_config *cfg, char *err, size_t errlen);
    void (*fini)(void *engine);
    /* A new connection, or NULL with a message in err. */
    void *(*connect)(void *engine, char *err, size_t errlen);
    void (*disconnect)(void *conn);
    /* Brings the schema to the newest version (safe to run concurrently
     * from several processes). */
    int (*migrate)(void *conn, char *err, size_t errlen);

    /* Explicit write transaction, used to group-commit consecutive writes. */
    int (*begin)(void *conn);
    int (*commit)(void *conn);
    void (*rollback)(void *conn);

    /* *data is malloc'd (len + 1 bytes, NUL-terminated), caller frees;
     * MAGPIE_NOTFOUND when absent. */
    int (*kv_get)(void *conn, const char *host, const char *store, const char *key, void **data,
                  size_t *len);
    int (*kv_set)(void *conn, const char *host, const char *store, const char *key,
                  const void *data, size_t len);
    /* MAGPIE_NOTFOUND when no row was deleted. */
    int (*kv_del)(void *conn, const char *host, const char *store, const char *key);
    /* Ascending byte order. */
    int (*kv_keys)(void *conn, const char *host, const char *store, mp_sd_key_fn fn, void *ud);
    /* Up to limit keys greater than after, ascending, with their values
     * (fn's field is the key). */
    int (*kv_scan)(void *conn, const char *host, const char *store, const char *after,
                   size_t limit, mp_sd_field_fn fn, void *ud);

    int (*map_get)(void *conn, const char *host, const char *store, const char *key,
                   const char *field, void **data, size_t *len);
    int (*map_set)(void *conn, const char *host, const char *store, const char *key,
                   const char *field, const void *data, size_t len);
    /* field NULL: every field of key. MAGPIE_NOTFOUND when nothing deleted. */
    int (*map_del)(void *conn, const char *host, const char *store, const char *key,
                   const char *field);
    /* Fields in ascending byte order. */
    int (*map_all)(void *conn, const char *host, const char *store, const char *key,
                   mp_sd_field_fn fn, void *ud);

    /* ts in microseconds; with may be NULL. Sets *id. */
    int (*archive_append)(void *conn, const char *host, const char *store, const char *key,
                          int64_t ts, const char *with, const void *data, size_t len, int64_t *id);
    int (*archive_query)(void *conn, const char *host, const char *store, const char *key,
                         const mp_archive_filter *q, mp_sd_item_fn fn, void *ud);
    /* Sets *n to the number of items matching q (limit, reverse ignored). */
    int (*archive_count)(void *conn, const char *host, const char *store, const char *key,
                         const mp_archive_filter *q, int64_t *n);
    /* MAGPIE_NOTFOUND when no item id of key exists. */
    int (*archive_replace)(void *conn, const char *host, const char *store, const char *key,
                           int64_t id, const void *data, size_t len);
    /* up_to_id 0: all. */
    int (*archive_delete)(void *conn, const char *host, const char *store, const char *key,
                          int64_t up_to_id);
};

extern const struct mp_storage_driver mp_storage_sqlite;
extern const struct mp_storage_driver mp_storage_mysql;

#endif
