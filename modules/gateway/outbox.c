/* outbox.c - the database outbox (MariaDB/MySQL): an external application
 * (a payment backend, say) inserts a row into the outbox table; a thread
 * of this module polls it every outbox_interval_ms, enqueues each new row
 * exactly once and writes back the command id and, later, the command's
 * final state. The table's contract is in docs/gateway.md.
 *
 * Exactly once: a row is submitted with the idempotency key
 * "outbox/<row id>" (submit.c), and only then marked 'queued' with its
 * command id. If magpied dies between the two, the next poll submits the
 * row again and gets the same command id back. Final states: the command's
 * end (gw_outbox_ended, on the worker that ended it) is queued in memory
 * and written by the thread; rows still 'queued' at start are reconciled
 * from the commands' stored status.
 *
 * The thread owns one MySQL connection and blocks only itself. This is
 * the one SQL-speaking file of the module: the outbox is a contract with
 * another application's MySQL database, not one of Magpie's stores. */
#include "gateway.h"

#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ended {
    struct ended *next;
    long long row, aid;
    char state[16];
    int result;
};

static struct {
    pthread_t thread;
    int running;
    pthread_mutex_t lock; /* stop, ended, cond */
    pthread_cond_t cond;
    int stop;
    struct ended *ended;
    MYSQL *db;
    char host[256], user[128], password[128], database[128];
    unsigned port;
    char table[65];
    int interval_ms;
} O = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* ---- waiting for asynchronous results on this thread ---- */

struct wait {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done, status, rc;
    int64_t aid;
    struct gw_status st;
};

static void wait_init(struct wait *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
}

static void wait_for(struct wait *w)
{
    pthread_mutex_lock(&w->m);
    while (!w->done)
        pthread_cond_wait(&w->c, &w->m);
    pthread_mutex_unlock(&w->m);
    pthread_mutex_destroy(&w->m);
    pthread_cond_destroy(&w->c);
}

static void wake(struct wait *w)
{
    pthread_mutex_lock(&w->m);
    w->done = 1;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void submitted(void *ud, int status, int64_t aid, const char *dev, int dup)
{
    (void)dev;
    (void)dup;
    struct wait *w = ud;
    w->status = status;
    w->aid = aid;
    wake(w);
}

static void status_got(void *ud, int rc, const struct gw_status *st)
{
    struct wait *w = ud;
    w->rc = rc;
    if (st)
        w->st = *st;
    wake(w);
}

/* ---- SQL ---- */

static int db_connect(void)
{
    if (O.db)
        return MAGPIE_OK;
    O.db = mysql_init(NULL);
    unsigned timeout = 5;
    mysql_options(O.db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (!mysql_real_connect(O.db, O.host, O.user, O.password, O.database, O.port, NULL, 0)) {
        mp_log(MP_LOG_WARN, "gateway outbox: cannot connect to %s:%u: %s", O.host, O.port,
               mysql_error(O.db));
        mysql_close(O.db);
        O.db = NULL;
        return MAGPIE_ERR;
    }
    mysql_set_character_set(O.db, "utf8mb4");
    char q[1024];
    snprintf(q, sizeof q,
             "CREATE TABLE IF NOT EXISTS `%s` ("
             " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
             " device VARCHAR(64) NOT NULL,"
             " payload BLOB NOT NULL,"
             " ttl INT NULL,"
             " created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),"
             " state VARCHAR(16) NOT NULL DEFAULT 'new',"
             " command_id BIGINT NULL,"
             " result INT NULL,"
             " error VARCHAR(255) NULL,"
             " updated_at TIMESTAMP(3) NULL,"
             " KEY state_id (state, id)"
             ") ENGINE=InnoDB",
             O.table);
    if (mysql_query(O.db, q) != 0) {
        mp_log(MP_LOG_ERROR, "gateway outbox: cannot create table %s: %s", O.table,
               mysql_error(O.db));
        mysql_close(O.db);
        O.db = NULL;
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

static void db_fail(const char *what)
{
    mp_log(MP_LOG_WARN, "gateway outbox: %s: %s", what, mysql_error(O.db));
    mysql_close(O.db);
    O.db = NULL;
}

/* Runs an UPDATE; MAGPIE_OK or MAGPIE_ERR (connection dropped). */
static int db_exec(const char *q)
{
    if (mysql_query(O.db, q) != 0) {
        db_fail("update");
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

static int mark(long long row, const char *state, long long aid, int result, const char *error)
{
    char q[512], e[300] = "NULL";
    if (error) {
        char esc[256];
        mysql_real_escape_string(O.db, esc, error, strlen(error) < 120 ? strlen(error) : 120);
        snprintf(e, sizeof e, "'%s'", esc);
    }
    char a[32] = "command_id", r[32] = "NULL";
    if (aid > 0)
        snprintf(a, sizeof a, "%lld", aid);
    if (result >= 0)
        snprintf(r, sizeof r, "%d", result);
    snprintf(q, sizeof q,
             "UPDATE `%s` SET state='%s', command_id=%s, result=%s, error=%s,"
             " updated_at=NOW(3) WHERE id=%lld",
             O.table, state, a, r, e, row);
    return db_exec(q);
}

/* One poll: new rows, oldest first. */
static int poll_new(void)
{
    char q[256];
    snprintf(q, sizeof q,
             "SELECT id, device, payload, ttl FROM `%s` WHERE state='new' ORDER BY id LIMIT 100",
             O.table);
    if (mysql_query(O.db, q) != 0) {
        db_fail("poll");
        return MAGPIE_ERR;
    }
    MYSQL_RES *res = mysql_store_result(O.db);
    if (!res) {
        db_fail("poll");
        return MAGPIE_ERR;
    }
    MYSQL_ROW row;
    int rc = MAGPIE_OK;
    while (rc == MAGPIE_OK && (row = mysql_fetch_row(res))) {
        unsigned long *lens = mysql_fetch_lengths(res);
        long long id = strtoll(row[0], NULL, 10);
        const char *dev = row[1];
        long long ttl = row[3] ? strtoll(row[3], NULL, 10) : G.ttl_default;
        if (ttl < 0 || (G.ttl_max && (ttl > G.ttl_max || ttl == 0))) {
            rc = mark(id, "rejected", 0, -1, "ttl out of range");
            continue;
        }
        if (lens[2] + 6 > (unsigned long)G.max_body) {
            rc = mark(id, "rejected", 0, -1, "payload larger than the device's frames");
            continue;
        }
        char key[64];
        snprintf(key, sizeof key, "outbox/%lld", id);
        struct wait w;
        wait_init(&w);
        gw_submit(dev, "!outbox", key, (const uint8_t *)row[2], lens[2], ttl, submitted, &w);
        wait_for(&w);
        mp_counter_add(G.c.outbox_rows, 1);
        switch (w.status) {
        case GW_SUBMIT_CREATED:
        case GW_SUBMIT_EXISTS:
            snprintf(q, sizeof q,
                     "UPDATE `%s` SET state='queued', command_id=%lld, updated_at=NOW(3)"
                     " WHERE id=%lld AND state='new'",
                     O.table, (long long)w.aid, id);
            rc = db_exec(q);
            if (rc == MAGPIE_OK && w.status == GW_SUBMIT_EXISTS) {
                /* submitted before (the mark was lost): it may have ended */
                struct wait ws;
                wait_init(&ws);
                gw_status(w.aid, status_got, &ws);
                wait_for(&ws);
                if (ws.rc == MAGPIE_OK && strcmp(ws.st.state, "queued") &&
                    strcmp(ws.st.state, "sent"))
                    rc = mark(id, ws.st.state, (long long)w.aid, ws.st.result, NULL);
            }
            break;
        case GW_SUBMIT_NODEV:
            rc = mark(id, "rejected", 0, -1, "no such device");
            break;
        case GW_SUBMIT_CONFLICT:
            rc = mark(id, "rejected", 0, -1, "idempotency conflict");
            break;
        default:
            rc = MAGPIE_ERR; /* storage: try again at the next poll */
            break;
        }
    }
    mysql_free_result(res);
    return rc;
}

/* Writes the final states that ended commands left for us. */
static int write_ended(void)
{
    pthread_mutex_lock(&O.lock);
    struct ended *e = O.ended;
    O.ended = NULL;
    pthread_mutex_unlock(&O.lock);
    int rc = MAGPIE_OK;
    while (e) {
        struct ended *nx = e->next;
        if (rc == MAGPIE_OK) {
            char q[320];
            char r[16] = "NULL";
            if (e->result >= 0)
                snprintf(r, sizeof r, "%d", e->result);
            snprintf(q, sizeof q,
                     "UPDATE `%s` SET state='%s', command_id=%lld, result=%s, updated_at=NOW(3)"
                     " WHERE id=%lld",
                     O.table, e->state, e->aid, r, e->row);
            rc = db_exec(q);
        }
        if (rc == MAGPIE_OK) {
            free(e);
        } else { /* keep it for the next round */
            pthread_mutex_lock(&O.lock);
            e->next = O.ended;
            O.ended = e;
            pthread_mutex_unlock(&O.lock);
        }
        e = nx;
    }
    return rc;
}

/* Rows left 'queued' by an earlier run whose command has ended since. */
static int reconcile(void)
{
    char q[256];
    snprintf(q, sizeof q, "SELECT id, command_id FROM `%s` WHERE state='queued'", O.table);
    if (mysql_query(O.db, q) != 0) {
        db_fail("reconcile");
        return MAGPIE_ERR;
    }
    MYSQL_RES *res = mysql_store_result(O.db);
    if (!res) {
        db_fail("reconcile");
        return MAGPIE_ERR;
    }
    MYSQL_ROW row;
    int rc = MAGPIE_OK;
    while (rc == MAGPIE_OK && (row = mysql_fetch_row(res))) {
        if (!row[1])
            continue;
        struct wait w;
        wait_init(&w);
        gw_status(strtoll(row[1], NULL, 10), status_got, &w);
        wait_for(&w);
        if (w.rc == MAGPIE_OK && strcmp(w.st.state, "queued") && strcmp(w.st.state, "sent"))
            rc =
                mark(strtoll(row[0], NULL, 10), w.st.state, (long long)w.st.aid, w.st.result, NULL);
    }
    mysql_free_result(res);
    return rc;
}

static void *outbox_main(void *arg)
{
    (void)arg;
    mysql_thread_init();
    int reconciled = 0;
    pthread_mutex_lock(&O.lock);
    while (!O.stop) {
        pthread_mutex_unlock(&O.lock);
        if (db_connect() == MAGPIE_OK) {
            if (!reconciled && reconcile() == MAGPIE_OK)
                reconciled = 1;
            if (O.db)
                write_ended();
            if (O.db)
                poll_new();
        }
        pthread_mutex_lock(&O.lock);
        if (O.stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = ts.tv_nsec + (long long)(O.db ? O.interval_ms : 2000) * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        if (!O.ended) /* ended commands are written at once */
            pthread_cond_timedwait(&O.cond, &O.lock, &ts);
    }
    pthread_mutex_unlock(&O.lock);
    if (O.db)
        write_ended();
    if (O.db)
        mysql_close(O.db);
    O.db = NULL;
    mysql_thread_end();
    return NULL;
}

void gw_outbox_ended(const struct gw_cmd *c, const char *state, int result)
{
    if (!O.running || !c->sid || strncmp(c->sid, "outbox/", 7) != 0)
        return;
    struct ended *e = calloc(1, sizeof *e);
    e->row = strtoll(c->sid + 7, NULL, 10);
    e->aid = c->aid;
    snprintf(e->state, sizeof e->state, "%s", state);
    e->result = result;
    pthread_mutex_lock(&O.lock);
    e->next = O.ended;
    O.ended = e;
    pthread_cond_signal(&O.cond);
    pthread_mutex_unlock(&O.lock);
}

/* "host:port:user:password:database" */
static int parse_dsn(const char *dsn)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", dsn);
    char *f[5], *save = NULL, *p = buf;
    for (int i = 0; i < 5; i++) {
        f[i] = p;
        p = i < 4 ? strchr(p, ':') : NULL;
        if (i < 4 && !p)
            return MAGPIE_ERR;
        if (p)
            *p++ = '\0';
    }
    (void)save;
    snprintf(O.host, sizeof O.host, "%s", f[0]);
    O.port = (unsigned)strtoul(f[1], NULL, 10);
    snprintf(O.user, sizeof O.user, "%s", f[2]);
    snprintf(O.password, sizeof O.password, "%s", f[3]);
    snprintf(O.database, sizeof O.database, "%s", f[4]);
    return *O.host && *O.database ? MAGPIE_OK : MAGPIE_ERR;
}

int gw_outbox_load(mp_module *m)
{
    G.c.outbox_rows = mp_counter_new(m, "outbox_rows", "outbox rows enqueued (repeats included)");
    const char *dsn = mp_module_opt_str(m, "outbox_dsn");
    if (!dsn || !*dsn)
        return MAGPIE_OK;
    if (parse_dsn(dsn) != MAGPIE_OK) {
        mp_log(MP_LOG_ERROR, "gateway: outbox_dsn must be host:port:user:password:database");
        return MAGPIE_ERR;
    }
    const char *t = mp_module_opt_str(m, "outbox_table");
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_') ||
            p - t >= 64) {
            mp_log(MP_LOG_ERROR, "gateway: outbox_table must be 1-64 of [A-Za-z0-9_]");
            return MAGPIE_ERR;
        }
    if (!*t)
        return MAGPIE_ERR;
    snprintf(O.table, sizeof O.table, "%s", t);
    O.interval_ms = (int)mp_module_opt_int(m, "outbox_interval_ms");
    O.stop = 0;
    if (pthread_create(&O.thread, NULL, outbox_main, NULL) != 0)
        return MAGPIE_ERR;
    O.running = 1;
    G.outbox_on = 1;
    mp_log(MP_LOG_INFO, "gateway: polling outbox table %s on %s:%u every %d ms", O.table, O.host,
           O.port, O.interval_ms);
    return MAGPIE_OK;
}

void gw_outbox_unload(void)
{
    if (!O.running)
        return;
    pthread_mutex_lock(&O.lock);
    O.stop = 1;
    pthread_cond_signal(&O.cond);
    pthread_mutex_unlock(&O.lock);
    pthread_join(O.thread, NULL);
    O.running = 0;
    while (O.ended) {
        struct ended *e = O.ended;
        O.ended = e->next;
        free(e);
    }
}
