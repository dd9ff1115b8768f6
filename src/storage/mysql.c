/* storage_mysql.c - the MariaDB/MySQL storage driver (MariaDB Connector/C).
 *
 * One MYSQL connection per pool thread (and per concurrent sync caller),
 * utf8mb4, strict SQL mode, InnoDB tables. Every value goes through a
 * prepared statement; statements are prepared once per connection and
 * cached. Names (host, store, key, field, with) are VARBINARY so they
 * compare and sort as bytes, exactly like the SQLite driver, and fit the
 * 3072-byte InnoDB index limit (storage_driver.h has the lengths).
 *
 * Lost connections (server restart, wait_timeout, KILL) are handled here:
 * the failed operation reconnects and is retried once. An operation inside
 * an explicit transaction is not retried (the transaction is gone); the
 * caller rolls back and the next operation reconnects. Note that a
 * connection lost after the server committed an append but before the
 * reply arrived makes the retry insert the item a second time: appends are
 * at-least-once in that (rare) case. */
#include "base/base.h"
#include "conf/config.h"
#include "storage/storage_driver.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MY_LOST  (-100) /* internal: connection lost, may retry */
#define MAX_COLS 4

/* ---- schema migrations: entry i brings the schema to version i + 1; each
 * is a NULL-terminated list of statements (DDL cannot be batched). ---- */
static const char *const migration_1[] = {
    "CREATE TABLE IF NOT EXISTS keyval ("
    " host VARBINARY(255) NOT NULL, store VARBINARY(64) NOT NULL,"
    " `key` VARBINARY(1024) NOT NULL, value LONGBLOB NOT NULL,"
    " PRIMARY KEY (host, store, `key`)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS map ("
    " host VARBINARY(255) NOT NULL, store VARBINARY(64) NOT NULL,"
    " `key` VARBINARY(1024) NOT NULL, field VARBINARY(1024) NOT NULL,"
    " value LONGBLOB NOT NULL,"
    " PRIMARY KEY (host, store, `key`, field)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS archive ("
    " id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " host VARBINARY(255) NOT NULL, store VARBINARY(64) NOT NULL,"
    " `key` VARBINARY(1024) NOT NULL, ts BIGINT NOT NULL,"
    " with_jid VARBINARY(3071) NULL, value LONGBLOB NOT NULL,"
    " KEY archive_hsk (host, store, `key`, id)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    NULL,
};
/* 2: items found by their time (MUC stanza ids are times) */
static const char *const migration_2[] = {
    "CREATE INDEX archive_hskt ON archive (host, store, `key`, ts)",
    NULL,
};
static const char *const *const migrations[] = {migration_1, migration_2};
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
    N_STMT
};

#define AR_WHERE                                                                                   \
    " WHERE host = ? AND store = ? AND `key` = ? AND id > ? AND id < ?"                            \
    " AND (? IS NULL OR with_jid = ?) AND ts >= ? AND ts <= ?"                                     \
    " AND (? IS NULL OR LOCATE(?, with_jid) > 0)"

static const char *const stmt_sql[N_STMT] = {
    [S_KV_GET] = "SELECT value FROM keyval WHERE host = ? AND store = ? AND `key` = ?",
    [S_KV_SET] = "INSERT INTO keyval (host, store, `key`, value) VALUES (?, ?, ?, ?)"
                 " ON DUPLICATE KEY UPDATE value = VALUES(value)",
    [S_KV_DEL] = "DELETE FROM keyval WHERE host = ? AND store = ? AND `key` = ?",
    [S_KV_KEYS] = "SELECT `key` FROM keyval WHERE host = ? AND store = ? ORDER BY `key`",
    [S_KV_SCAN] = "SELECT `key`, value FROM keyval WHERE host = ? AND store = ? AND `key` > ?"
                  " ORDER BY `key` LIMIT ?",
    [S_MAP_GET] = "SELECT value FROM map WHERE host = ? AND store = ? AND `key` = ?"
                  " AND field = ?",
    [S_MAP_SET] = "INSERT INTO map (host, store, `key`, field, value) VALUES (?, ?, ?, ?, ?)"
                  " ON DUPLICATE KEY UPDATE value = VALUES(value)",
    [S_MAP_DEL] = "DELETE FROM map WHERE host = ? AND store = ? AND `key` = ? AND field = ?",
    [S_MAP_DEL_ALL] = "DELETE FROM map WHERE host = ? AND store = ? AND `key` = ?",
    [S_MAP_ALL] = "SELECT field, value FROM map WHERE host = ? AND store = ? AND `key` = ?"
                  " ORDER BY field",
    [S_AR_APPEND] = "INSERT INTO archive (host, store, `key`, ts, with_jid, value)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
    [S_AR_QUERY] =
        "SELECT id, ts, with_jid, value FROM archive" AR_WHERE " ORDER BY id ASC LIMIT ?",
    [S_AR_QUERY_REV] =
        "SELECT id, ts, with_jid, value FROM archive" AR_WHERE " ORDER BY id DESC LIMIT ?",
    [S_AR_COUNT] = "SELECT COUNT(*) FROM archive" AR_WHERE,
    [S_AR_REPLACE] = "UPDATE archive SET value = ? WHERE host = ? AND store = ? AND `key` = ?"
                     " AND id = ?",
    [S_AR_DELETE] = "DELETE FROM archive WHERE host = ? AND store = ? AND `key` = ?"
                    " AND id <= ?",
};

struct my_engine {
    char *host, *user, *password, *database, *socket;
    unsigned port;
};

/* One fetched result column: an integer or a NUL-terminated byte string
 * in a buffer reused across rows. */
struct my_col {
    long long i;
    char *buf;
    size_t cap;
    unsigned long len;
    my_bool is_null, error;
};

struct my_conn {
    struct my_engine *e;
    MYSQL *db; /* NULL after a failed reconnect */
    MYSQL_STMT *stmt[N_STMT];
    int in_tx;
    struct my_col col[MAX_COLS];
    MYSQL_BIND rb[MAX_COLS];
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;

static void lib_init(void)
{
    lib_rc = mysql_library_init(0, NULL, NULL);
}

static char *dup_or_null(const char *s)
{
    return s && *s ? mp_strdup(s) : NULL;
}

static void *my_init(const struct mp_config *cfg, char *err, size_t errlen)
{
    pthread_once(&lib_once, lib_init);
    if (lib_rc) {
        snprintf(err, errlen, "mysql: client library initialisation failed");
        return NULL;
    }
    if (!cfg->mysql_database || !*cfg->mysql_database) {
        snprintf(err, errlen, "mysql: mysql_database is required");
        return NULL;
    }
    struct my_engine *e = mp_calloc(1, sizeof *e);
    e->host = dup_or_null(cfg->mysql_host);
    e->user = dup_or_null(cfg->mysql_user);
    e->password = dup_or_null(cfg->mysql_password);
    e->database = dup_or_null(cfg->mysql_database);
    e->socket = dup_or_null(cfg->mysql_socket);
    e->port = cfg->mysql_port > 0 ? (unsigned)cfg->mysql_port : 0;
    return e;
}

static void my_fini(void *engine)
{
    struct my_engine *e = engine;
    free(e->host);
    free(e->user);
    free(e->password);
    free(e->database);
    free(e->socket);
    free(e);
}

static void drop_link(struct my_conn *c)
{
    for (int i = 0; i < N_STMT; i++) {
        if (c->stmt[i])
            mysql_stmt_close(c->stmt[i]);
        c->stmt[i] = NULL;
    }
    if (c->db)
        mysql_close(c->db);
    c->db = NULL;
    /* in_tx stays set until rollback: nothing may run until then */
}

/* Opens the server connection of c. Returns MAGPIE_OK or MAGPIE_ERR with
 * a message in err. */
static int link_open(struct my_conn *c, char *err, size_t errlen)
{
    struct my_engine *e = c->e;
    MYSQL *db = mysql_init(NULL);
    if (!db) {
        snprintf(err, errlen, "mysql: out of memory");
        return MAGPIE_ERR;
    }
    unsigned timeout = 10;
    my_bool no = 0;
    mysql_options(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(db, MYSQL_OPT_RECONNECT, &no);
    mysql_options(db, MYSQL_INIT_COMMAND,
                  "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'");
    /* with a socket, host NULL makes the library use it */
    const char *host = e->socket ? NULL : (e->host ? e->host : "127.0.0.1");
    if (!mysql_real_connect(db, host, e->user, e->password, e->database, e->port, e->socket,
                            CLIENT_FOUND_ROWS)) {
        snprintf(err, errlen, "mysql: connect to %s: %s", e->socket ? e->socket : host,
                 mysql_error(db));
        mysql_close(db);
        return MAGPIE_ERR;
    }
    c->db = db;
    return MAGPIE_OK;
}

static void my_disconnect(void *conn)
{
    struct my_conn *c = conn;
    drop_link(c);
    for (int i = 0; i < MAX_COLS; i++)
        free(c->col[i].buf);
    free(c);
}

static void *my_connect(void *engine, char *err, size_t errlen)
{
    struct my_conn *c = mp_calloc(1, sizeof *c);
    c->e = engine;
    if (link_open(c, err, errlen) != MAGPIE_OK) {
        free(c);
        return NULL;
    }
    return c;
}

static int is_lost(unsigned e)
{
    return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST || e == CR_SERVER_LOST_EXTENDED ||
           e == CR_CONNECTION_ERROR || e == CR_CONN_HOST_ERROR || e == ER_CONNECTION_KILLED ||
           e == ER_SERVER_SHUTDOWN;
}

/* Classifies a failure: logs it and returns MY_LOST (connection dropped,
 * marked for reconnect) or MAGPIE_ERR. */
static int failure(struct my_conn *c, unsigned code, const char *msg, const char *what)
{
    if (is_lost(code)) {
        mp_log(MP_LOG_WARN, "mysql: %s: connection lost (%u %s)", what, code, msg);
        drop_link(c);
        return MY_LOST;
    }
    mp_log(MP_LOG_ERROR, "mysql: %s: %u %s", what, code, msg);
    return MAGPIE_ERR;
}

/* Makes sure c has a live link (reconnecting after a loss). */
static int ensure_link(struct my_conn *c)
{
    if (c->db)
        return MAGPIE_OK;
    char err[256] = "";
    if (link_open(c, err, sizeof err) != MAGPIE_OK) {
        mp_log(MP_LOG_ERROR, "%s", err);
        return MAGPIE_ERR;
    }
    mp_log(MP_LOG_INFO, "mysql: reconnected");
    return MAGPIE_OK;
}

/* Prepares (once) and executes statement i with params, storing the whole
 * result client-side. Returns MAGPIE_OK (*out set), MY_LOST or MAGPIE_ERR. */
static int run(struct my_conn *c, int i, MYSQL_BIND *params, MYSQL_STMT **out)
{
    if (!c->db) {
        if (c->in_tx)
            return MAGPIE_ERR;
        if (ensure_link(c) != MAGPIE_OK)
            return MAGPIE_ERR;
    }
    MYSQL_STMT *s = c->stmt[i];
    if (!s) {
        s = mysql_stmt_init(c->db);
        if (!s)
            return failure(c, mysql_errno(c->db), mysql_error(c->db), "stmt_init");
        if (mysql_stmt_prepare(s, stmt_sql[i], (unsigned long)strlen(stmt_sql[i]))) {
            unsigned code = mysql_stmt_errno(s);
            char msg[256];
            snprintf(msg, sizeof msg, "%s", mysql_stmt_error(s));
            mysql_stmt_close(s);
            return failure(c, code, msg, "prepare");
        }
        c->stmt[i] = s;
    }
    if (mysql_stmt_bind_param(s, params) || mysql_stmt_execute(s) ||
        (mysql_stmt_field_count(s) && mysql_stmt_store_result(s))) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", mysql_stmt_error(s));
        return failure(c, mysql_stmt_errno(s), msg, stmt_sql[i]);
    }
    *out = s;
    return MAGPIE_OK;
}

/* Binds result columns described by spec ('i' int64, 's' bytes). */
static int res_bind(struct my_conn *c, MYSQL_STMT *s, const char *spec)
{
    memset(c->rb, 0, sizeof c->rb);
    for (int k = 0; spec[k]; k++) {
        MYSQL_BIND *b = &c->rb[k];
        struct my_col *col = &c->col[k];
        b->is_null = &col->is_null;
        b->error = &col->error;
        b->length = &col->len;
        if (spec[k] == 'i') {
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &col->i;
        } else {
            b->buffer_type = MYSQL_TYPE_BLOB; /* length only; fetched below */
        }
    }
    if (mysql_stmt_bind_result(s, c->rb)) {
        mp_log(MP_LOG_ERROR, "mysql: bind_result: %s", mysql_stmt_error(s));
        mysql_stmt_free_result(s);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

/* Fetches the next row into c->col. Returns 1 (row), 0 (end; the result is
 * freed) or MAGPIE_ERR (result freed). */
static int res_next(struct my_conn *c, MYSQL_STMT *s, const char *spec)
{
    int rc = mysql_stmt_fetch(s);
    if (rc == MYSQL_NO_DATA) {
        mysql_stmt_free_result(s);
        return 0;
    }
    if (rc != 0 && rc != MYSQL_DATA_TRUNCATED) {
        mp_log(MP_LOG_ERROR, "mysql: fetch: %s", mysql_stmt_error(s));
        mysql_stmt_free_result(s);
        return MAGPIE_ERR;
    }
    for (int k = 0; spec[k]; k++) {
        struct my_col *col = &c->col[k];
        if (spec[k] == 'i')
            continue;
        if (col->cap < col->len + 1) {
            col->cap = col->len + 1 > 256 ? col->len + 1 : 256;
            free(col->buf);
            col->buf = mp_malloc(col->cap);
        }
        col->buf[0] = '\0';
        if (col->is_null || col->len == 0)
            continue;
        MYSQL_BIND b;
        memset(&b, 0, sizeof b);
        b.buffer_type = MYSQL_TYPE_BLOB;
        b.buffer = col->buf;
        b.buffer_length = col->len;
        if (mysql_stmt_fetch_column(s, &b, (unsigned)k, 0)) {
            mp_log(MP_LOG_ERROR, "mysql: fetch_column: %s", mysql_stmt_error(s));
            mysql_stmt_free_result(s);
            return MAGPIE_ERR;
        }
        col->buf[col->len] = '\0';
    }
    return 1;
}

/* ---- parameter binding ---- */

static void b_str(MYSQL_BIND *b, unsigned long *len, const char *s)
{
    memset(b, 0, sizeof *b);
    if (!s) {
        b->buffer_type = MYSQL_TYPE_NULL;
        return;
    }
    *len = (unsigned long)strlen(s);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)s;
    b->buffer_length = *len;
    b->length = len;
}

static void b_blob(MYSQL_BIND *b, unsigned long *len, const void *data, size_t n)
{
    memset(b, 0, sizeof *b);
    *len = (unsigned long)n;
    b->buffer_type = MYSQL_TYPE_BLOB;
    b->buffer = (void *)(n ? data : "");
    b->buffer_length = *len;
    b->length = len;
}

static void b_i64(MYSQL_BIND *b, long long *v)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
}

/* Binds host, store and (if key) key as parameters 0..2. */
static void b_scope(MYSQL_BIND *p, unsigned long *l, const char *host, const char *store,
                    const char *key)
{
    b_str(&p[0], &l[0], host);
    b_str(&p[1], &l[1], store);
    if (key)
        b_str(&p[2], &l[2], key);
}

/* Runs op once, and once more after a reconnect if the link was lost
 * outside a transaction. */
#define WITH_RETRY(c, call)                                                                        \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ == MY_LOST && !(c)->in_tx)                                                         \
            rc_ = (call);                                                                          \
        return rc_ == MY_LOST ? MAGPIE_ERR : rc_;                                                  \
    } while (0)

/* ---- migrations ---- */

/* Runs a fixed statement (no values) and discards any result. */
static int simple(struct my_conn *c, const char *sql, char *err, size_t errlen)
{
    if (mysql_query(c->db, sql)) {
        snprintf(err, errlen, "mysql: %s: %s", sql, mysql_error(c->db));
        return MAGPIE_ERR;
    }
    MYSQL_RES *r = mysql_store_result(c->db);
    if (r)
        mysql_free_result(r);
    return MAGPIE_OK;
}

/* Applies pending migrations under a named server lock, so several nodes
 * starting at once migrate one after the other. */
static int my_migrate(void *conn, char *err, size_t errlen)
{
    struct my_conn *c = conn;
    if (ensure_link(c) != MAGPIE_OK) {
        snprintf(err, errlen, "mysql: not connected");
        return MAGPIE_ERR;
    }
    if (mysql_query(c->db, "SELECT GET_LOCK(CONCAT('magpie_migrate.', DATABASE()), 60)")) {
        snprintf(err, errlen, "mysql: GET_LOCK: %s", mysql_error(c->db));
        return MAGPIE_ERR;
    }
    MYSQL_RES *r = mysql_store_result(c->db);
    MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
    int locked = row && row[0] && !strcmp(row[0], "1");
    if (r)
        mysql_free_result(r);
    if (!locked) {
        snprintf(err, errlen, "mysql: could not take the migration lock");
        return MAGPIE_ERR;
    }

    int rc = MAGPIE_ERR;
    long long version = 0;
    MYSQL_STMT *s = NULL;
    if (simple(c,
               "CREATE TABLE IF NOT EXISTS magpie_schema (version INT NOT NULL PRIMARY KEY)"
               " ENGINE=InnoDB",
               err, errlen) != MAGPIE_OK)
        goto out;
    if (mysql_query(c->db, "SELECT COALESCE(MAX(version), 0) FROM magpie_schema") ||
        !(r = mysql_store_result(c->db))) {
        snprintf(err, errlen, "mysql: reading schema version: %s", mysql_error(c->db));
        goto out;
    }
    row = mysql_fetch_row(r);
    version = row && row[0] ? strtoll(row[0], NULL, 10) : 0;
    mysql_free_result(r);
    if (version > (long long)N_MIGRATIONS) {
        snprintf(err, errlen,
                 "mysql: database schema version %lld is newer than this "
                 "magpie supports (%zu)",
                 version, N_MIGRATIONS);
        goto out;
    }
    static const char ins[] = "INSERT INTO magpie_schema (version) VALUES (?)";
    s = mysql_stmt_init(c->db);
    if (!s || mysql_stmt_prepare(s, ins, sizeof ins - 1)) {
        snprintf(err, errlen, "mysql: %s", s ? mysql_stmt_error(s) : mysql_error(c->db));
        goto out;
    }
    for (long long v = version + 1; v <= (long long)N_MIGRATIONS; v++) {
        for (const char *const *q = migrations[v - 1]; *q; q++)
            if (simple(c, *q, err, errlen) != MAGPIE_OK)
                goto out;
        MYSQL_BIND p;
        b_i64(&p, &v);
        if (mysql_stmt_bind_param(s, &p) || mysql_stmt_execute(s)) {
            snprintf(err, errlen, "mysql: %s", mysql_stmt_error(s));
            goto out;
        }
        mp_log(MP_LOG_INFO, "mysql: schema migrated to version %lld", v);
    }
    rc = MAGPIE_OK;
out:
    if (s)
        mysql_stmt_close(s);
    char ignore[64];
    simple(c, "SELECT RELEASE_LOCK(CONCAT('magpie_migrate.', DATABASE()))", ignore, sizeof ignore);
    return rc;
}

/* ---- transactions ---- */

static int my_begin(void *conn)
{
    struct my_conn *c = conn;
    if (ensure_link(c) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (mysql_query(c->db, "START TRANSACTION")) {
        failure(c, mysql_errno(c->db), mysql_error(c->db), "begin");
        return MAGPIE_ERR;
    }
    c->in_tx = 1;
    return MAGPIE_OK;
}

static int my_commit(void *conn)
{
    struct my_conn *c = conn;
    if (!c->db)
        return MAGPIE_ERR;
    if (mysql_commit(c->db)) {
        failure(c, mysql_errno(c->db), mysql_error(c->db), "commit");
        return MAGPIE_ERR;
    }
    c->in_tx = 0;
    return MAGPIE_OK;
}

static void my_rollback(void *conn)
{
    struct my_conn *c = conn;
    if (c->db && c->in_tx && mysql_rollback(c->db))
        failure(c, mysql_errno(c->db), mysql_error(c->db), "rollback");
    c->in_tx = 0;
}

/* ---- keyval ---- */

/* Runs a single-value SELECT prepared as i with p; copies the value. */
static int get_value(struct my_conn *c, int i, MYSQL_BIND *p, void **data, size_t *len)
{
    MYSQL_STMT *s;
    int rc = run(c, i, p, &s);
    if (rc != MAGPIE_OK)
        return rc;
    if (res_bind(c, s, "s") != MAGPIE_OK)
        return MAGPIE_ERR;
    rc = res_next(c, s, "s");
    if (rc <= 0)
        return rc == 0 ? MAGPIE_NOTFOUND : MAGPIE_ERR;
    size_t n = c->col[0].len;
    char *out = mp_malloc(n + 1);
    memcpy(out, c->col[0].buf, n + 1);
    mysql_stmt_free_result(s);
    *data = out;
    *len = n;
    return MAGPIE_OK;
}

/* Runs a write prepared as i; MAGPIE_NOTFOUND if want_change and no row. */
static int write_op(struct my_conn *c, int i, MYSQL_BIND *p, int want_change)
{
    MYSQL_STMT *s;
    int rc = run(c, i, p, &s);
    if (rc != MAGPIE_OK)
        return rc;
    if (want_change && mysql_stmt_affected_rows(s) == 0)
        return MAGPIE_NOTFOUND;
    return MAGPIE_OK;
}

static int kv_get_once(struct my_conn *c, const char *host, const char *store, const char *key,
                       void **data, size_t *len)
{
    MYSQL_BIND p[3];
    unsigned long l[3];
    b_scope(p, l, host, store, key);
    return get_value(c, S_KV_GET, p, data, len);
}

static int my_kv_get(void *conn, const char *host, const char *store, const char *key, void **data,
                     size_t *len)
{
    WITH_RETRY((struct my_conn *)conn, kv_get_once(conn, host, store, key, data, len));
}

static int kv_set_once(struct my_conn *c, const char *host, const char *store, const char *key,
                       const void *data, size_t len)
{
    MYSQL_BIND p[4];
    unsigned long l[4];
    b_scope(p, l, host, store, key);
    b_blob(&p[3], &l[3], data, len);
    return write_op(c, S_KV_SET, p, 0);
}

static int my_kv_set(void *conn, const char *host, const char *store, const char *key,
                     const void *data, size_t len)
{
    WITH_RETRY((struct my_conn *)conn, kv_set_once(conn, host, store, key, data, len));
}

static int kv_del_once(struct my_conn *c, const char *host, const char *store, const char *key)
{
    MYSQL_BIND p[3];
    unsigned long l[3];
    b_scope(p, l, host, store, key);
    return write_op(c, S_KV_DEL, p, 1);
}

static int my_kv_del(void *conn, const char *host, const char *store, const char *key)
{
    WITH_RETRY((struct my_conn *)conn, kv_del_once(conn, host, store, key));
}

static int kv_keys_once(struct my_conn *c, const char *host, const char *store, mp_sd_key_fn fn,
                        void *ud)
{
    MYSQL_BIND p[2];
    unsigned long l[2];
    MYSQL_STMT *s;
    b_scope(p, l, host, store, NULL);
    int rc = run(c, S_KV_KEYS, p, &s);
    if (rc != MAGPIE_OK)
        return rc;
    if (res_bind(c, s, "s") != MAGPIE_OK)
        return MAGPIE_ERR;
    while ((rc = res_next(c, s, "s")) == 1)
        fn(ud, c->col[0].buf);
    return rc == 0 ? MAGPIE_OK : MAGPIE_ERR;
}

static int my_kv_keys(void *conn, const char *host, const char *store, mp_sd_key_fn fn, void *ud)
{
    WITH_RETRY((struct my_conn *)conn, kv_keys_once(conn, host, store, fn, ud));
}

/* Runs statement i and hands each (field, value) row to fn. */
static int visit_fields(struct my_conn *c, int i, MYSQL_BIND *p, mp_sd_field_fn fn, void *ud)
{
    MYSQL_STMT *s;
    int rc = run(c, i, p, &s);
    if (rc != MAGPIE_OK)
        return rc;
    if (res_bind(c, s, "ss") != MAGPIE_OK)
        return MAGPIE_ERR;
    while ((rc = res_next(c, s, "ss")) == 1)
        fn(ud, c->col[0].buf, c->col[1].buf, c->col[1].len);
    return rc == 0 ? MAGPIE_OK : MAGPIE_ERR;
}

static int kv_scan_once(struct my_conn *c, const char *host, const char *store, const char *after,
                        size_t limit, mp_sd_field_fn fn, void *ud)
{
    MYSQL_BIND p[4];
    unsigned long l[4];
    long long lim = (long long)limit;
    b_scope(p, l, host, store, after);
    b_i64(&p[3], &lim);
    return visit_fields(c, S_KV_SCAN, p, fn, ud);
}

static int my_kv_scan(void *conn, const char *host, const char *store, const char *after,
                      size_t limit, mp_sd_field_fn fn, void *ud)
{
    WITH_RETRY((struct my_conn *)conn, kv_scan_once(conn, host, store, after, limit, fn, ud));
}

/* ---- map ---- */

static int map_get_once(struct my_conn *c, const char *host, const char *store, const char *key,
                        const char *field, void **data, size_t *len)
{
    MYSQL_BIND p[4];
    unsigned long l[4];
    b_scope(p, l, host, store, key);
    b_str(&p[3], &l[3], field);
    return get_value(c, S_MAP_GET, p, data, len);
}

static int my_map_get(void *conn, const char *host, const char *store, const char *key,
                      const char *field, void **data, size_t *len)
{
    WITH_RETRY((struct my_conn *)conn, map_get_once(conn, host, store, key, field, data, len));
}

static int map_set_once(struct my_conn *c, const char *host, const char *store, const char *key,
                        const char *field, const void *data, size_t len)
{
    MYSQL_BIND p[5];
    unsigned long l[5];
    b_scope(p, l, host, store, key);
    b_str(&p[3], &l[3], field);
    b_blob(&p[4], &l[4], data, len);
    return write_op(c, S_MAP_SET, p, 0);
}

static int my_map_set(void *conn, const char *host, const char *store, const char *key,
                      const char *field, const void *data, size_t len)
{
    WITH_RETRY((struct my_conn *)conn, map_set_once(conn, host, store, key, field, data, len));
}

static int map_del_once(struct my_conn *c, const char *host, const char *store, const char *key,
                        const char *field)
{
    MYSQL_BIND p[4];
    unsigned long l[4];
    b_scope(p, l, host, store, key);
    if (field)
        b_str(&p[3], &l[3], field);
    return write_op(c, field ? S_MAP_DEL : S_MAP_DEL_ALL, p, 1);
}

static int my_map_del(void *conn, const char *host, const char *store, const char *key,
                      const char *field)
{
    WITH_RETRY((struct my_conn *)conn, map_del_once(conn, host, store, key, field));
}

static int map_all_once(struct my_conn *c, const char *host, const char *store, const char *key,
                        mp_sd_field_fn fn, void *ud)
{
    MYSQL_BIND p[3];
    unsigned long l[3];
    b_scope(p, l, host, store, key);
    return visit_fields(c, S_MAP_ALL, p, fn, ud);
}

static int my_map_all(void *conn, const char *host, const char *store, const char *key,
                      mp_sd_field_fn fn, void *ud)
{
    WITH_RETRY((struct my_conn *)conn, map_all_once(conn, host, store, key, fn, ud));
}

/* ---- archive ---- */

static int append_once(struct my_conn *c, const char *host, const char *store, const char *key,
                       int64_t ts, const char *with, const void *data, size_t len, int64_t *id)
{
    MYSQL_BIND p[6];
    unsigned long l[6];
    long long t = ts;
    MYSQL_STMT *s;
    b_scope(p, l, host, store, key);
    b_i64(&p[3], &t);
    b_str(&p[4], &l[4], with);
    b_blob(&p[5], &l[5], data, len);
    int rc = run(c, S_AR_APPEND, p, &s);
    if (rc != MAGPIE_OK)
        return rc;
    *id = (int64_t)mysql_stmt_insert_id(s);
    return MAGPIE_OK;
}

static int my_archive_append(void *conn, const char *host, const char *store, const char *key,
                             int64_t ts, const char *with, const void *data, size_t len,
                             int64_t *id)
{
    WITH_RETRY((struct my_conn *)conn,
               append_once(conn, host, store, key, ts, with, data, len, id));
}

/* The bound values of AR_WHERE after the scope; they must outlive the run. */
struct ar_where {
    long long after, before, ts_from, ts_to;
};

/* Binds AR_WHERE's filter to p[3..10] (w holds the numbers). */
static void b_filter(MYSQL_BIND *p, unsigned long *l, struct ar_where *w,
                     const mp_archive_filter *q)
{
    w->ts_from = q->ts_from > 0 ? q->ts_from : INT64_MIN;
    w->ts_to = q->ts_to > 0 ? q->ts_to : INT64_MAX;
    w->after = q->after_id > 0 ? q->after_id : 0;
    w->before = q->before_id > 0 ? q->before_id : INT64_MAX;
    b_i64(&p[3], &w->after);
    b_i64(&p[4], &w->before);
    b_str(&p[5], &l[5], q->with);
    b_str(&p[6], &l[6], q->with);
    b_i64(&p[7], &w->ts_from);
    b_i64(&p[8], &w->ts_to);
    b_str(&p[9], &l[9], q->with_has);
    b_str(&p[10], &l[10], q->with_has);
}

static int query_once(struct my_conn *c, const char *host, const char *store, const char *key,
                      const mp_archive_filter *q, mp_sd_item_fn fn, void *ud)
{
    MYSQL_BIND p[12];
    unsigned long l[12];
    struct ar_where w;
    long long limit =
        q->limit > 0 && q->limit < (size_t)INT64_MAX ? (long long)q->limit : INT64_MAX;
    MYSQL_STMT *s;
    b_scope(p, l, host, store, key);
    b_filter(p, l, &w, q);
    b_i64(&p[11], &limit);
    int rc = run(c, q->reverse ? S_AR_QUERY_REV : S_AR_QUERY, p, &s);
    if (rc != MAGPIE_OK)
        return rc;
    if (res_bind(c, s, "iiss") != MAGPIE_OK)
        return MAGPIE_ERR;
    while ((rc = res_next(c, s, "iiss")) == 1) {
        mp_archive_item it;
        it.id = c->col[0].i;
        it.ts = c->col[1].i;
        it.with = c->col[2].is_null ? NULL : c->col[2].buf;
        it.data = c->col[3].buf;
        it.len = c->col[3].len;
        fn(ud, &it);
    }
    return rc == 0 ? MAGPIE_OK : MAGPIE_ERR;
}

static int my_archive_query(void *conn, const char *host, const char *store, const char *key,
                            const mp_archive_filter *q, mp_sd_item_fn fn, void *ud)
{
    WITH_RETRY((struct my_conn *)conn, query_once(conn, host, store, key, q, fn, ud));
}

static int count_once(struct my_conn *c, const char *host, const char *store, const char *key,
                      const mp_archive_filter *q, int64_t *n)
{
    MYSQL_BIND p[11];
    unsigned long l[11];
    struct ar_where w;
    MYSQL_STMT *s;
    b_scope(p, l, host, store, key);
    b_filter(p, l, &w, q);
    int rc = run(c, S_AR_COUNT, p, &s);
    if (rc != MAGPIE_OK)
        return rc;
    if (res_bind(c, s, "i") != MAGPIE_OK)
        return MAGPIE_ERR;
    *n = 0;
    while ((rc = res_next(c, s, "i")) == 1)
        *n = c->col[0].i;
    return rc == 0 ? MAGPIE_OK : MAGPIE_ERR;
}

static int my_archive_count(void *conn, const char *host, const char *store, const char *key,
                            const mp_archive_filter *q, int64_t *n)
{
    WITH_RETRY((struct my_conn *)conn, count_once(conn, host, store, key, q, n));
}

static int replace_once(struct my_conn *c, const char *host, const char *store, const char *key,
                        int64_t id, const void *data, size_t len)
{
    MYSQL_BIND p[5];
    unsigned long l[5];
    long long i = id;
    b_blob(&p[0], &l[0], data, len);
    b_scope(p + 1, l + 1, host, store, key);
    b_i64(&p[4], &i);
    /* the connection counts matched rows (CLIENT_FOUND_ROWS), so replacing
     * an item by the same bytes is not "not found" */
    return write_op(c, S_AR_REPLACE, p, 1);
}

static int my_archive_replace(void *conn, const char *host, const char *store, const char *key,
                              int64_t id, const void *data, size_t len)
{
    WITH_RETRY((struct my_conn *)conn, replace_once(conn, host, store, key, id, data, len));
}

static int delete_once(struct my_conn *c, const char *host, const char *store, const char *key,
                       int64_t up_to_id)
{
    MYSQL_BIND p[4];
    unsigned long l[4];
    long long up = up_to_id > 0 ? up_to_id : INT64_MAX;
    b_scope(p, l, host, store, key);
    b_i64(&p[3], &up);
    return write_op(c, S_AR_DELETE, p, 1);
}

static int my_archive_delete(void *conn, const char *host, const char *store, const char *key,
                             int64_t up_to_id)
{
    WITH_RETRY((struct my_conn *)conn, delete_once(conn, host, store, key, up_to_id));
}

const struct mp_storage_driver mp_storage_mysql = {
    .name = "mysql",
    .init = my_init,
    .fini = my_fini,
    .connect = my_connect,
    .disconnect = my_disconnect,
    .migrate = my_migrate,
    .begin = my_begin,
    .commit = my_commit,
    .rollback = my_rollback,
    .kv_get = my_kv_get,
    .kv_set = my_kv_set,
    .kv_del = my_kv_del,
    .kv_keys = my_kv_keys,
    .kv_scan = my_kv_scan,
    .map_get = my_map_get,
    .map_set = my_map_set,
    .map_del = my_map_del,
    .map_all = my_map_all,
    .archive_append = my_archive_append,
    .archive_query = my_archive_query,
    .archive_count = my_archive_count,
    .archive_replace = my_archive_replace,
    .archive_delete = my_archive_delete,
};
