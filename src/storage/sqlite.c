/* storage_sqlite.c - the SQLite storage driver (the embedded default).
 *
 * One sqlite3 connection per pool thread (and per concurrent sync caller),
 * opened in multi-thread mode (no per-connection mutex: a connection is
 * used by one thread at a time). The database is in WAL mode so readers
 * never block the writer; synchronous=FULL makes every commit durable
 * across power loss (NORMAL in WAL mode is not). Writers wait up to
 * busy_timeout for each other; explicit transactions are BEGIN IMMEDIATE so
 * they never fail half way on a lock upgrade.
 *
 * Statements are prepared once per connection and cached; every value is a
 * bound parameter. Keys are TEXT with the default BINARY collation, so
 * ORDER BY sorts in byte order, like VARBINARY on MariaDB. */
#include "base/base.h"
#include "conf/config.h"
#include "storage/storage_driver.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUSY_TIMEOUT_MS 10000

/* ---- schema migrations: index i brings the schema to version i + 1 ---- */
static const char *const migrations[] = {
    /* 1: the three stores */
    "CREATE TABLE keyval ("
    " host TEXT NOT NULL, store TEXT NOT NULL, \"key\" TEXT NOT NULL,"
    " value BLOB NOT NULL,"
    " PRIMARY KEY (host, store, \"key\")) WITHOUT ROWID;"
    "CREATE TABLE map ("
    " host TEXT NOT NULL, store TEXT NOT NULL, \"key\" TEXT NOT NULL,"
    " field TEXT NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY (host, store, \"key\", field)) WITHOUT ROWID;"
    "CREATE TABLE archive ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " host TEXT NOT NULL, store TEXT NOT NULL, \"key\" TEXT NOT NULL,"
    " ts INTEGER NOT NULL, with_jid TEXT, value BLOB NOT NULL);"
    "CREATE INDEX archive_hsk ON archive (host, store, \"key\", id);",
    /* 2: items found by their time (MUC stanza ids are times) */
    "CREATE INDEX archive_hskt ON archive (host, store, \"key\", ts);",
};
#define N_MIGRATIONS (sizeof migrations / sizeof migrations[0])

enum {
    S_KV_GET,
    S_KV_SET,
    S_KV_DEL,
    S_KV_KEYS,
    S_KV_SCAN,
    S_MAP_GET,
    S_MAP_SET,
    S_MAP_DEL,
    S_MAP_DEL_ALL,
    S_MAP_ALL,
    S_AR_APPEND,
    S_AR_QUERY,
    S_AR_QUERY_REV,
    S_AR_COUNT,
    S_AR_REPLACE,
    S_AR_DELETE,
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    N_STMT
};

#define AR_WHERE                                                                                   \
    " WHERE host = ?1 AND store = ?2 AND \"key\" = ?3 AND id > ?4 AND id < ?5"                     \
    " AND (?6 IS NULL OR with_jid = ?6) AND ts >= ?8 AND ts <= ?9"                                 \
    " AND (?10 IS NULL OR instr(with_jid, ?10) > 0)"

static const char *const stmt_sql[N_STMT] = {
    [S_KV_GET] = "SELECT value FROM keyval WHERE host = ? AND store = ? AND \"key\" = ?",
    [S_KV_SET] = "INSERT INTO keyval (host, store, \"key\", value) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (host, store, \"key\") DO UPDATE SET value = excluded.value",
    [S_KV_DEL] = "DELETE FROM keyval WHERE host = ? AND store = ? AND \"key\" = ?",
    [S_KV_KEYS] = "SELECT \"key\" FROM keyval WHERE host = ? AND store = ? ORDER BY \"key\"",
    [S_KV_SCAN] = "SELECT \"key\", value FROM keyval WHERE host = ? AND store = ? AND \"key\" > ?"
                  " ORDER BY \"key\" LIMIT ?",
    [S_MAP_GET] = "SELECT value FROM map WHERE host = ? AND store = ? AND \"key\" = ?"
                  " AND field = ?",
    [S_MAP_SET] = "INSERT INTO map (host, store, \"key\", field, value) VALUES (?, ?, ?, ?, ?)"
                  " ON CONFLICT (host, store, \"key\", field) DO UPDATE SET value = excluded.value",
    [S_MAP_DEL] = "DELETE FROM map WHERE host = ? AND store = ? AND \"key\" = ? AND field = ?",
    [S_MAP_DEL_ALL] = "DELETE FROM map WHERE host = ? AND store = ? AND \"key\" = ?",
    [S_MAP_ALL] = "SELECT field, value FROM map WHERE host = ? AND store = ? AND \"key\" = ?"
                  " ORDER BY field",
    [S_AR_APPEND] = "INSERT INTO archive (host, store, \"key\", ts, with_jid, value)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
    [S_AR_QUERY] =
        "SELECT id, ts, with_jid, value FROM archive" AR_WHERE " ORDER BY id ASC LIMIT ?7",
    [S_AR_QUERY_REV] =
        "SELECT id, ts, with_jid, value FROM archive" AR_WHERE " ORDER BY id DESC LIMIT ?7",
    /* ?7 (the limit) is bound and unused */
    [S_AR_COUNT] = "SELECT count(*) FROM archive" AR_WHERE " AND ?7 = ?7",
    [S_AR_REPLACE] = "UPDATE archive SET value = ? WHERE host = ? AND store = ? AND \"key\" = ?"
                     " AND id = ?",
    [S_AR_DELETE] = "DELETE FROM archive WHERE host = ? AND store = ? AND \"key\" = ?"
                    " AND id <= ?",
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
};

/* Writers of this process take turns on the engine's wlock instead of in
 * SQLite's busy handler, which sleeps in steps of up to 100 ms: with two
 * pool threads writing at once those sleeps were the tail of every write's
 * latency (bench/gateway.sh: p99 340 ms at 1000 commands/s with 2 pool
 * threads, 7 ms with one). A transaction holds wlock from BEGIN to COMMIT or
 * ROLLBACK, a single write for its statement. The busy timeout still covers
 * other processes (magpiectl); readers never take wlock (WAL). */
struct sq_engine {
    char *path;
    pthread_mutex_t wlock;
    int cache_kib; /* page cache per connection */
};

struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *stmt[N_STMT];
    struct sq_engine *e;
    int held; /* this connection holds e->wlock for a transaction */
};

static void w_lock(struct sq_conn *c)
{
    if (!c->held)
        pthread_mutex_lock(&c->e->wlock);
}

static void w_unlock(struct sq_conn *c)
{
    if (!c->held)
        pthread_mutex_unlock(&c->e->wlock);
}

static void *sq_init(const struct mp_config *cfg, char *err, size_t errlen)
{
    struct sq_engine *e = mp_calloc(1, sizeof *e);
    pthread_mutex_init(&e->wlock, NULL);
    /* SQLite's own default is 2000 KiB per connection; the file's pages are
     * in the kernel's page cache anyway, so a smaller private cache costs
     * little read speed and saves memory (storage.sqlite.cache_kib) */
    e->cache_kib = cfg->sqlite_cache_kib > 0 ? cfg->sqlite_cache_kib : 512;
    if (cfg->sqlite_path && *cfg->sqlite_path) {
        e->path = mp_strdup(cfg->sqlite_path);
    } else if (cfg->state_dir && *cfg->state_dir) {
        size_t n = strlen(cfg->state_dir) + sizeof "/magpie.db";
        e->path = mp_malloc(n);
        snprintf(e->path, n, "%s/magpie.db", cfg->state_dir);
    } else {
        snprintf(err, errlen, "sqlite: no sqlite_path and no state_dir");
        pthread_mutex_destroy(&e->wlock);
        free(e);
        return NULL;
    }
    return e;
}

static void sq_fini(void *engine)
{
    struct sq_engine *e = engine;
    pthread_mutex_destroy(&e->wlock);
    free(e->path);
    free(e);
}

static void sq_disconnect(void *conn)
{
    struct sq_conn *c = conn;
    for (int i = 0; i < N_STMT; i++)
        sqlite3_finalize(c->stmt[i]);
    sqlite3_close(c->db);
    if (c->held)
        pthread_mutex_unlock(&c->e->wlock);
    free(c);
}

/* Opens a connection with WAL, synchronous=FULL, the configured page
 * cache and a busy timeout. */
static void *sq_connect(void *engine, char *err, size_t errlen)
{
    struct sq_engine *e = engine;
    struct sq_conn *c = mp_calloc(1, sizeof *c);
    c->e = e;
    int rc = sqlite3_open_v2(
        e->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s: %s", e->path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sq_disconnect(c);
        return NULL;
    }
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(c->db, 1);
    char *msg = NULL, pragmas[128];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-%d;",
             e->cache_kib);
    if (sqlite3_exec(c->db, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s: %s", e->path, msg ? msg : "pragma failed");
        sqlite3_free(msg);
        sq_disconnect(c);
        return NULL;
    }
    return c;
}

/* The cached statement i, prepared on first use; NULL on error (logged). */
static sqlite3_stmt *st_get(struct sq_conn *c, int i)
{
    if (!c->stmt[i] && sqlite3_prepare_v3(c->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                          &c->stmt[i], NULL) != SQLITE_OK) {
        mp_log(MP_LOG_ERROR, "sqlite: prepare: %s", sqlite3_errmsg(c->db));
        return NULL;
    }
    return c->stmt[i];
}

static void st_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static int bind_scope(sqlite3_stmt *s, const char *host, const char *store, const char *key)
{
    int rc = sqlite3_bind_text(s, 1, host, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, store, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && key)
        rc = sqlite3_bind_text(s, 3, key, -1, SQLITE_STATIC);
    return rc;
}

static int bind_blob(sqlite3_stmt *s, int i, const void *data, size_t len)
{
    /* a NULL pointer would bind SQL NULL; an empty value is a zero blob */
    if (!len)
        return sqlite3_bind_zeroblob(s, i, 0);
    return sqlite3_bind_blob64(s, i, data, len, SQLITE_STATIC);
}

static int fail(struct sq_conn *c, sqlite3_stmt *s, const char *what)
{
    mp_log(MP_LOG_ERROR, "sqlite: %s: %s", what, sqlite3_errmsg(c->db));
    if (s)
        st_done(s);
    return MAGPIE_ERR;
}

/* Runs a statement that returns no rows. Returns MAGPIE_OK, or
 * MAGPIE_NOTFOUND when want_change and no row changed. */
static int exec_write(struct sq_conn *c, sqlite3_stmt *s, int want_change, const char *what)
{
    w_lock(c);
    int rc = sqlite3_step(s);
    w_unlock(c);
    if (rc != SQLITE_DONE)
        return fail(c, s, what);
    st_done(s);
    if (want_change && sqlite3_changes(c->db) == 0)
        return MAGPIE_NOTFOUND;
    return MAGPIE_OK;
}

/* Reads column 0 of the single row of s as a malloc'd, NUL-terminated copy. */
static int read_value(struct sq_conn *c, sqlite3_stmt *s, void **data, size_t *len)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        st_done(s);
        return MAGPIE_NOTFOUND;
    }
    if (rc != SQLITE_ROW)
        return fail(c, s, "read");
    const void *b = sqlite3_column_blob(s, 0);
    size_t n = (size_t)sqlite3_column_bytes(s, 0);
    char *out = mp_memdup0(b, n);
    st_done(s);
    *data = out;
    *len = n;
    return MAGPIE_OK;
}

/* Runs a fixed SQL script (no values) on c. */
static int exec_script(struct sq_conn *c, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s", msg ? msg : sqlite3_errmsg(c->db));
        sqlite3_free(msg);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

/* Applies the migrations newer than the stored version, all in one
 * IMMEDIATE transaction (a concurrent migrator waits, then sees them). */
static int sq_migrate(void *conn, char *err, size_t errlen)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = NULL;
    if (exec_script(c,
                    "CREATE TABLE IF NOT EXISTS magpie_schema"
                    " (version INTEGER NOT NULL PRIMARY KEY)",
                    err, errlen) != MAGPIE_OK ||
        exec_script(c, "BEGIN IMMEDIATE", err, errlen) != MAGPIE_OK)
        return MAGPIE_ERR;
    int64_t version = 0;
    if (sqlite3_prepare_v2(c->db, "SELECT COALESCE(MAX(version), 0) FROM magpie_schema", -1, &s,
                           NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW) {
        snprintf(err, errlen, "sqlite: reading schema version: %s", sqlite3_errmsg(c->db));
        goto fail;
    }
    version = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    s = NULL;
    if (version > (int64_t)N_MIGRATIONS) {
        snprintf(err, errlen,
                 "sqlite: database schema version %lld is newer than this "
                 "magpie supports (%zu)",
                 (long long)version, N_MIGRATIONS);
        goto fail;
    }
    if (sqlite3_prepare_v2(c->db, "INSERT INTO magpie_schema (version) VALUES (?)", -1, &s, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(c->db));
        goto fail;
    }
    for (int64_t v = version + 1; v <= (int64_t)N_MIGRATIONS; v++) {
        if (exec_script(c, migrations[v - 1], err, errlen) != MAGPIE_OK)
            goto fail;
        sqlite3_bind_int64(s, 1, v);
        if (sqlite3_step(s) != SQLITE_DONE) {
            snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(c->db));
            goto fail;
        }
        sqlite3_reset(s);
        mp_log(MP_LOG_INFO, "sqlite: schema migrated to version %lld", (long long)v);
    }
    sqlite3_finalize(s);
    return exec_script(c, "COMMIT", err, errlen);

fail:
    sqlite3_finalize(s);
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return MAGPIE_ERR;
}

static int tx(struct sq_conn *c, int i)
{
    sqlite3_stmt *s = st_get(c, i);
    if (!s)
        return MAGPIE_ERR;
    return exec_write(c, s, 0, stmt_sql[i]);
}

static int sq_begin(void *conn)
{
    struct sq_conn *c = conn;
    w_lock(c);
    c->held = 1;
    int rc = tx(c, S_BEGIN);
    if (rc != MAGPIE_OK) {
        c->held = 0;
        w_unlock(c);
    }
    return rc;
}

static int sq_commit(void *conn)
{
    struct sq_conn *c = conn;
    int rc = tx(c, S_COMMIT);
    if (rc == MAGPIE_OK && c->held) { /* a failed commit is rolled back next */
        c->held = 0;
        w_unlock(c);
    }
    return rc;
}

static void sq_rollback(void *conn)
{
    struct sq_conn *c = conn;
    if (!sqlite3_get_autocommit(c->db))
        tx(c, S_ROLLBACK);
    if (c->held) {
        c->held = 0;
        w_unlock(c);
    }
}

/* ---- keyval ---- */

static int sq_kv_get(void *conn, const char *host, const char *store, const char *key, void **data,
                     size_t *len)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_KV_GET);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK)
        return fail(c, s, "kv_get");
    return read_value(c, s, data, len);
}

static int sq_kv_set(void *conn, const char *host, const char *store, const char *key,
                     const void *data, size_t len)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_KV_SET);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK || bind_blob(s, 4, data, len) != SQLITE_OK)
        return fail(c, s, "kv_set");
    return exec_write(c, s, 0, "kv_set");
}

static int sq_kv_del(void *conn, const char *host, const char *store, const char *key)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_KV_DEL);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK)
        return fail(c, s, "kv_del");
    return exec_write(c, s, 1, "kv_del");
}

static int sq_kv_keys(void *conn, const char *host, const char *store, mp_sd_key_fn fn, void *ud)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_KV_KEYS);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, NULL) != SQLITE_OK)
        return fail(c, s, "kv_keys");
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        fn(ud, (const char *)sqlite3_column_text(s, 0));
    if (rc != SQLITE_DONE)
        return fail(c, s, "kv_keys");
    st_done(s);
    return MAGPIE_OK;
}

static int sq_kv_scan(void *conn, const char *host, const char *store, const char *after,
                      size_t limit, mp_sd_field_fn fn, void *ud)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_KV_SCAN);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, after) != SQLITE_OK ||
        sqlite3_bind_int64(s, 4, (sqlite3_int64)limit) != SQLITE_OK)
        return fail(c, s, "kv_scan");
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const void *b = sqlite3_column_blob(s, 1);
        fn(ud, (const char *)sqlite3_column_text(s, 0), b ? b : "",
           (size_t)sqlite3_column_bytes(s, 1));
    }
    if (rc != SQLITE_DONE)
        return fail(c, s, "kv_scan");
    st_done(s);
    return MAGPIE_OK;
}

/* ---- map ---- */

static int sq_map_get(void *conn, const char *host, const char *store, const char *key,
                      const char *field, void **data, size_t *len)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_MAP_GET);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK ||
        sqlite3_bind_text(s, 4, field, -1, SQLITE_STATIC) != SQLITE_OK)
        return fail(c, s, "map_get");
    return read_value(c, s, data, len);
}

static int sq_map_set(void *conn, const char *host, const char *store, const char *key,
                      const char *field, const void *data, size_t len)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_MAP_SET);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK ||
        sqlite3_bind_text(s, 4, field, -1, SQLITE_STATIC) != SQLITE_OK ||
        bind_blob(s, 5, data, len) != SQLITE_OK)
        return fail(c, s, "map_set");
    return exec_write(c, s, 0, "map_set");
}

static int sq_map_del(void *conn, const char *host, const char *store, const char *key,
                      const char *field)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, field ? S_MAP_DEL : S_MAP_DEL_ALL);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK ||
        (field && sqlite3_bind_text(s, 4, field, -1, SQLITE_STATIC) != SQLITE_OK))
        return fail(c, s, "map_del");
    return exec_write(c, s, 1, "map_del");
}

static int sq_map_all(void *conn, const char *host, const char *store, const char *key,
                      mp_sd_field_fn fn, void *ud)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_MAP_ALL);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK)
        return fail(c, s, "map_all");
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *field = (const char *)sqlite3_column_text(s, 0);
        const void *b = sqlite3_column_blob(s, 1);
        size_t n = (size_t)sqlite3_column_bytes(s, 1);
        fn(ud, field, b ? b : "", n);
    }
    if (rc != SQLITE_DONE)
        return fail(c, s, "map_all");
    st_done(s);
    return MAGPIE_OK;
}

/* ---- archive ---- */

static int sq_archive_append(void *conn, const char *host, const char *store, const char *key,
                             int64_t ts, const char *with, const void *data, size_t len,
                             int64_t *id)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_AR_APPEND);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK || sqlite3_bind_int64(s, 4, ts) != SQLITE_OK ||
        (with ? sqlite3_bind_text(s, 5, with, -1, SQLITE_STATIC) : sqlite3_bind_null(s, 5)) !=
            SQLITE_OK ||
        bind_blob(s, 6, data, len) != SQLITE_OK)
        return fail(c, s, "archive_append");
    w_lock(c);
    int rc = sqlite3_step(s);
    w_unlock(c);
    if (rc != SQLITE_DONE)
        return fail(c, s, "archive_append");
    *id = sqlite3_last_insert_rowid(c->db);
    st_done(s);
    return MAGPIE_OK;
}

/* Binds the filter of AR_WHERE (?4..?10) to s. */
static int bind_filter(sqlite3_stmt *s, const mp_archive_filter *q)
{
    int64_t after = q->after_id > 0 ? q->after_id : 0;
    int64_t before = q->before_id > 0 ? q->before_id : INT64_MAX;
    int64_t limit = q->limit > 0 && q->limit < (size_t)INT64_MAX ? (int64_t)q->limit : -1;
    if (sqlite3_bind_int64(s, 4, after) != SQLITE_OK ||
        sqlite3_bind_int64(s, 5, before) != SQLITE_OK ||
        (q->with ? sqlite3_bind_text(s, 6, q->with, -1, SQLITE_STATIC) : sqlite3_bind_null(s, 6)) !=
            SQLITE_OK ||
        sqlite3_bind_int64(s, 7, limit) != SQLITE_OK ||
        sqlite3_bind_int64(s, 8, q->ts_from > 0 ? q->ts_from : INT64_MIN) != SQLITE_OK ||
        sqlite3_bind_int64(s, 9, q->ts_to > 0 ? q->ts_to : INT64_MAX) != SQLITE_OK ||
        (q->with_has ? sqlite3_bind_text(s, 10, q->with_has, -1, SQLITE_STATIC)
                     : sqlite3_bind_null(s, 10)) != SQLITE_OK)
        return SQLITE_ERROR;
    return SQLITE_OK;
}

static int sq_archive_query(void *conn, const char *host, const char *store, const char *key,
                            const mp_archive_filter *q, mp_sd_item_fn fn, void *ud)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, q->reverse ? S_AR_QUERY_REV : S_AR_QUERY);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK || bind_filter(s, q) != SQLITE_OK)
        return fail(c, s, "archive_query");
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        mp_archive_item it;
        it.id = sqlite3_column_int64(s, 0);
        it.ts = sqlite3_column_int64(s, 1);
        it.with = (const char *)sqlite3_column_text(s, 2);
        it.data = sqlite3_column_blob(s, 3);
        it.len = (size_t)sqlite3_column_bytes(s, 3);
        if (!it.data)
            it.data = "";
        fn(ud, &it);
    }
    if (rc != SQLITE_DONE)
        return fail(c, s, "archive_query");
    st_done(s);
    return MAGPIE_OK;
}

static int sq_archive_count(void *conn, const char *host, const char *store, const char *key,
                            const mp_archive_filter *q, int64_t *n)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_AR_COUNT);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK || bind_filter(s, q) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW)
        return fail(c, s, "archive_count");
    *n = sqlite3_column_int64(s, 0);
    st_done(s);
    return MAGPIE_OK;
}

static int sq_archive_replace(void *conn, const char *host, const char *store, const char *key,
                              int64_t id, const void *data, size_t len)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_AR_REPLACE);
    if (!s)
        return MAGPIE_ERR;
    if (bind_blob(s, 1, data, len) != SQLITE_OK ||
        sqlite3_bind_text(s, 2, host, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(s, 3, store, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(s, 4, key, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(s, 5, id) != SQLITE_OK)
        return fail(c, s, "archive_replace");
    return exec_write(c, s, 1, "archive_replace");
}

static int sq_archive_delete(void *conn, const char *host, const char *store, const char *key,
                             int64_t up_to_id)
{
    struct sq_conn *c = conn;
    sqlite3_stmt *s = st_get(c, S_AR_DELETE);
    if (!s)
        return MAGPIE_ERR;
    if (bind_scope(s, host, store, key) != SQLITE_OK ||
        sqlite3_bind_int64(s, 4, up_to_id > 0 ? up_to_id : INT64_MAX) != SQLITE_OK)
        return fail(c, s, "archive_delete");
    return exec_write(c, s, 1, "archive_delete");
}

const struct mp_storage_driver mp_storage_sqlite = {
    .name = "sqlite",
    .single_writer = 1,
    .init = sq_init,
    .fini = sq_fini,
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .migrate = sq_migrate,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .kv_get = sq_kv_get,
    .kv_set = sq_kv_set,
    .kv_del = sq_kv_del,
    .kv_keys = sq_kv_keys,
    .kv_scan = sq_kv_scan,
    .map_get = sq_map_get,
    .map_set = sq_map_set,
    .map_del = sq_map_del,
    .map_all = sq_map_all,
    .archive_append = sq_archive_append,
    .archive_query = sq_archive_query,
    .archive_count = sq_archive_count,
    .archive_replace = sq_archive_replace,
    .archive_delete = sq_archive_delete,
};
