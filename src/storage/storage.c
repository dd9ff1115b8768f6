/* storage.c - the asynchronous storage API on a thread pool.
 *
 * Every asynchronous call copies its arguments into one job allocation and
 * queues it to one pool thread, chosen by hashing (host, store, key): all
 * jobs on one key run on one thread, in issue order, so their completions
 * are posted to the calling loop in issue order too (mp_loop_post is FIFO
 * per poster). Each pool thread owns one driver connection.
 *
 * A pool thread takes its whole queue at once and runs it in order; runs of
 * consecutive writes (keyval/map set and delete, archive append and delete,
 * transactions: mp_storage_txn) are group-committed in one transaction (one
 * fsync for the lot). Completions are posted only after the commit, so a
 * write's callback always sees it durable. If the shared transaction
 * fails, it is rolled back and each write runs again on its own (a
 * transaction's fn in a transaction of its own), so one bad write cannot
 * fail the others.
 *
 * Single-writer engines (SQLite: one writer at a time, each commit an
 * fsync) route instead of hashing: a key with jobs in flight keeps the
 * thread it has (so the per-key order above holds); an idle key's write
 * goes to thread 0, the writer, and its read to one of the others. Writes
 * of every module then share the writer's group commits instead of taking
 * turns on the lock with a commit each, and a read (a MAM query, a
 * roster) does not wait behind an fsync. With one thread,
 * or a driver whose engine commits concurrently (MariaDB), keys are hashed.
 *
 * The *_sync calls borrow a connection from a small free list (opening a
 * new one when it is empty) and run the driver on the caller's thread.
 *
 * The job queue is bounded softly (limits.storage_queue): a submit always
 * succeeds, but while more jobs wait than the bound, the storage waitq is
 * congested and the sessions whose stanzas keep adding jobs are paused by
 * the stream layer (pressure.c) until the pool has worked it down to half.
 *
 * Locking: `st_lock` (rwlock) guards the `st` pointer. Calls take it for
 * reading; mp_storage_close takes it for writing only to detach `st`, so it
 * waits for running sync calls, then drains and joins the pool. */
#include "base/base.h"
#include "conf/config.h"
#include "storage/storage_driver.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITE_BATCH_MAX 128
#define ROUTE_SLOTS 4096 /* single-writer routing: slots of key hashes */

enum job_op {
    OP_KV_GET,
    OP_KV_SET,
    OP_KV_DEL,
    OP_KV_SCAN,
    OP_MAP_GET,
    OP_MAP_SET,
    OP_MAP_DEL,
    OP_MAP_ALL,
    OP_AR_APPEND,
    OP_AR_QUERY,
    OP_AR_COUNT,
    OP_AR_REPLACE,
    OP_AR_DELETE,
    OP_TXN
};

union job_cb {
    mp_kv_get_cb get;
    mp_store_done_cb done;
    mp_map_all_cb all;
    mp_archive_append_cb append;
    mp_archive_query_cb query;
    mp_archive_count_cb count;
};

/* One queued call. The strings and input data live in the same allocation,
 * after the struct. Results are owned by the job and freed with it. */
struct job {
    struct job *next;
    enum job_op op;
    uint32_t route; /* its slot in storage.routes (single-writer routing) */
    mp_loop *loop; /* where to call back; NULL: pool thread */
    union job_cb cb;
    void *ud;
    const char *host, *store, *key, *field, *with;
    const void *data;
    size_t len;
    mp_archive_filter q; /* q.with, q.with_has point into the allocation */
    int64_t ts;

    mp_txn_fn txn; /* OP_TXN */

    int rc;
    int64_t id; /* archive append result */
    void *out;  /* get result (malloc'd) */
    size_t outlen;
    void *items; /* mp_map_item[] or mp_archive_item[] */
    size_t n, cap;
};

/* What a transaction's fn reads and writes through: the pool thread's
 * connection, inside its transaction. */
struct mp_txn {
    const struct mp_storage_driver *drv;
    void *conn;
    const char *host;
};

struct storage;

struct worker {
    struct storage *s;
    pthread_t tid;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail;
    int stopping;
    void *conn; /* NULL after a failed reconnect */
};

struct storage {
    const struct mp_storage_driver *drv;
    void *engine;
    struct worker *workers;
    size_t nworkers;
    pthread_mutex_t conns_lock;
    void **free_conns; /* connections for *_sync calls */
    size_t nfree, capfree;
    atomic_size_t queued; /* async jobs submitted, not yet completed */
    /* single-writer routing: per slot of key hashes, the thread of the keys
     * with jobs in flight and how many (routes_lock) */
    int routed;
    pthread_mutex_t routes_lock;
    struct {
        uint32_t pending;
        uint32_t worker;
    } *routes;
    size_t bound;         /* limits.storage_queue (0: none) */
    struct mp_waitq *full;
};

static pthread_rwlock_t st_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct storage *st;

/* ---- helpers ---- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int name_ok(const char *s, size_t max)
{
    return s && strnlen(s, max + 1) <= max;
}

/* Validates the scope names shared by every call. */
static int scope_ok(const char *host, const char *store, const char *key)
{
    if (!name_ok(host, MP_STORAGE_MAX_HOST) || !name_ok(store, MP_STORAGE_MAX_STORE) ||
        !name_ok(key, MP_STORAGE_MAX_KEY)) {
        mp_log(MP_LOG_WARN, "storage: missing or over-long host/store/key");
        return 0;
    }
    return 1;
}

static const struct mp_storage_driver *driver_find(const char *name)
{
    if (!name || !strcmp(name, "sqlite") || !strcmp(name, "sqlite3"))
        return &mp_storage_sqlite;
    if (!strcmp(name, "mysql") || !strcmp(name, "mariadb"))
        return &mp_storage_mysql;
    return NULL;
}

static uint64_t key_hash(const char *host, const char *store, const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    const char *parts[3] = {host, store, key};
    for (int i = 0; i < 3; i++) {
        for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL; /* separator */
    }
    return h;
}

/* ---- sync connection free list (caller holds st_lock for reading) ---- */

static void *conn_get(struct storage *s)
{
    void *c = NULL;
    pthread_mutex_lock(&s->conns_lock);
    if (s->nfree)
        c = s->free_conns[--s->nfree];
    pthread_mutex_unlock(&s->conns_lock);
    if (!c) {
        char err[256] = "";
        c = s->drv->connect(s->engine, err, sizeof err);
        if (!c)
            mp_log(MP_LOG_ERROR, "storage: connect: %s", err);
    }
    return c;
}

static void conn_put(struct storage *s, void *c)
{
    pthread_mutex_lock(&s->conns_lock);
    if (s->nfree == s->capfree) {
        s->capfree = s->capfree ? 2 * s->capfree : 4;
        s->free_conns = mp_realloc(s->free_conns, s->capfree * sizeof *s->free_conns);
    }
    s->free_conns[s->nfree++] = c;
    pthread_mutex_unlock(&s->conns_lock);
}

/* ---- jobs ---- */

/* Allocates a job holding copies of the strings and data. Returns NULL
 * when an argument is invalid. The caller queues or frees it. */
static struct job *job_new(enum job_op op, const char *host, const char *store, const char *key,
                           const char *field, const char *with, const void *data, size_t len)
{
    if (!scope_ok(host, store, key))
        return NULL;
    if (field && !name_ok(field, MP_STORAGE_MAX_FIELD))
        return NULL;
    if (with && !name_ok(with, MP_STORAGE_MAX_WITH))
        return NULL;
    if (!data && len)
        return NULL;
    size_t lh = strlen(host) + 1, ls = strlen(store) + 1, lk = strlen(key) + 1;
    size_t lf = field ? strlen(field) + 1 : 0, lw = with ? strlen(with) + 1 : 0;
    struct job *j = mp_calloc(1, sizeof *j + lh + ls + lk + lf + lw + len);
    char *p = (char *)(j + 1);
    j->op = op;
    j->host = memcpy(p, host, lh), p += lh;
    j->store = memcpy(p, store, ls), p += ls;
    j->key = memcpy(p, key, lk), p += lk;
    if (field)
        j->field = memcpy(p, field, lf), p += lf;
    if (with)
        j->with = memcpy(p, with, lw), p += lw;
    if (len)
        memcpy(p, data, len);
    j->data = len ? p : "";
    j->len = len;
    j->loop = mp_loop_current();
    return j;
}

static void job_free(struct job *j)
{
    free(j->out);
    if (j->op == OP_MAP_ALL || j->op == OP_KV_SCAN) {
        mp_map_item *it = j->items;
        for (size_t i = 0; i < j->n; i++)
            free((void *)it[i].field);
    } else if (j->op == OP_AR_QUERY) {
        mp_archive_item *it = j->items;
        for (size_t i = 0; i < j->n; i++)
            free((void *)it[i].data);
    }
    free(j->items);
    free(j);
}

static int job_is_write(const struct job *j);

/* The pool thread for j: its key's hash, or with single-writer routing the
 * thread its key's slot is on while it has jobs in flight, else the writer
 * (thread 0) for a write and a reader for a read. Counts j in its slot. */
static struct worker *job_route(struct storage *s, struct job *j)
{
    uint64_t h = key_hash(j->host, j->store, j->key);
    if (!s->routed)
        return &s->workers[h % s->nworkers];
    j->route = (uint32_t)(h % ROUTE_SLOTS);
    pthread_mutex_lock(&s->routes_lock);
    if (!s->routes[j->route].pending++) {
        int write = job_is_write(j) || j->op == OP_AR_REPLACE;
        s->routes[j->route].worker =
            write ? 0 : 1 + (uint32_t)(h / ROUTE_SLOTS % (s->nworkers - 1));
    }
    size_t w = s->routes[j->route].worker;
    pthread_mutex_unlock(&s->routes_lock);
    return &s->workers[w];
}

/* j has completed: one job less in flight in its slot. */
static void job_unroute(struct storage *s, uint32_t route)
{
    pthread_mutex_lock(&s->routes_lock);
    s->routes[route].pending--;
    pthread_mutex_unlock(&s->routes_lock);
}

/* Queues j to the pool thread of its key. On MAGPIE_ERR (storage closed or
 * sync-only) j is freed and its callback will not run. */
static int job_submit(struct job *j)
{
    if (!j)
        return MAGPIE_ERR;
    pthread_rwlock_rdlock(&st_lock);
    if (!st || !st->nworkers) {
        pthread_rwlock_unlock(&st_lock);
        free(j);
        return MAGPIE_ERR;
    }
    struct worker *w = job_route(st, j);
    pthread_mutex_lock(&w->lock);
    int stopping = w->stopping;
    if (!stopping) {
        if (w->tail)
            w->tail->next = j;
        else
            w->head = j;
        w->tail = j;
        pthread_cond_signal(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    if (!stopping && atomic_fetch_add(&st->queued, 1) + 1 > st->bound && st->bound) {
        mp_waitq_set(st->full, 1);
        mp_pressure_note(st->full);
    }
    if (stopping && st->routed)
        job_unroute(st, j->route);
    pthread_rwlock_unlock(&st_lock);
    if (stopping) {
        free(j);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

/* Visitor for map_all: copies one field (field and data in one block). */
static void collect_field(void *ud, const char *field, const void *data, size_t len)
{
    struct job *j = ud;
    if (j->n == j->cap) {
        j->cap = j->cap ? 2 * j->cap : 8;
        j->items = mp_realloc(j->items, j->cap * sizeof(mp_map_item));
    }
    size_t lf = strlen(field) + 1;
    char *b = mp_malloc(lf + len + 1);
    memcpy(b, field, lf);
    if (len)
        memcpy(b + lf, data, len);
    b[lf + len] = '\0';
    mp_map_item *it = &((mp_map_item *)j->items)[j->n++];
    it->field = b;
    it->data = b + lf;
    it->len = len;
}

/* Visitor for archive_query: copies one item (data, then `with`, in one
 * block owned through item.data). */
static void collect_item(void *ud, const mp_archive_item *src)
{
    struct job *j = ud;
    if (j->n == j->cap) {
        j->cap = j->cap ? 2 * j->cap : 16;
        j->items = mp_realloc(j->items, j->cap * sizeof(mp_archive_item));
    }
    size_t lw = src->with ? strlen(src->with) + 1 : 0;
    char *b = mp_malloc(src->len + 1 + lw);
    if (src->len)
        memcpy(b, src->data, src->len);
    b[src->len] = '\0';
    if (lw)
        memcpy(b + src->len + 1, src->with, lw);
    mp_archive_item *it = &((mp_archive_item *)j->items)[j->n++];
    *it = *src;
    it->data = b;
    it->with = lw ? b + src->len + 1 : NULL;
}

/* Runs one job on conn (NULL: no connection, the job fails). */
static void job_run(const struct mp_storage_driver *drv, void *conn, struct job *j)
{
    if (!conn) {
        j->rc = MAGPIE_ERR;
        return;
    }
    switch (j->op) {
    case OP_KV_GET:
        j->rc = drv->kv_get(conn, j->host, j->store, j->key, &j->out, &j->outlen);
        break;
    case OP_KV_SET:
        j->rc = drv->kv_set(conn, j->host, j->store, j->key, j->data, j->len);
        break;
    case OP_KV_DEL:
        j->rc = drv->kv_del(conn, j->host, j->store, j->key);
        break;
    case OP_KV_SCAN:
        j->rc = drv->kv_scan(conn, j->host, j->store, j->key, j->q.limit, collect_field, j);
        break;
    case OP_MAP_GET:
        j->rc = drv->map_get(conn, j->host, j->store, j->key, j->field, &j->out, &j->outlen);
        break;
    case OP_MAP_SET:
        j->rc = drv->map_set(conn, j->host, j->store, j->key, j->field, j->data, j->len);
        break;
    case OP_MAP_DEL:
        j->rc = drv->map_del(conn, j->host, j->store, j->key, j->field);
        break;
    case OP_MAP_ALL:
        j->rc = drv->map_all(conn, j->host, j->store, j->key, collect_field, j);
        break;
    case OP_AR_APPEND:
        j->rc = drv->archive_append(conn, j->host, j->store, j->key, j->ts, j->with, j->data,
                                    j->len, &j->id);
        break;
    case OP_AR_QUERY:
        j->rc = drv->archive_query(conn, j->host, j->store, j->key, &j->q, collect_item, j);
        break;
    case OP_AR_COUNT:
        j->rc = drv->archive_count(conn, j->host, j->store, j->key, &j->q, &j->id);
        break;
    case OP_AR_REPLACE:
        j->rc = drv->archive_replace(conn, j->host, j->store, j->key, j->id, j->data, j->len);
        break;
    case OP_AR_DELETE:
        j->rc = drv->archive_delete(conn, j->host, j->store, j->key, j->id);
        break;
    case OP_TXN: {
        struct mp_txn t = {drv, conn, j->host};
        j->rc = j->txn(&t, j->ud) == MAGPIE_ERR ? MAGPIE_ERR : MAGPIE_OK;
        break;
    }
    }
}

/* Runs j on its own: a transaction's fn in a transaction of its own, any
 * other job as one statement. */
static void job_run_alone(const struct mp_storage_driver *drv, void *conn, struct job *j)
{
    if (j->op != OP_TXN) {
        job_run(drv, conn, j);
        return;
    }
    if (!conn || drv->begin(conn) != MAGPIE_OK) {
        j->rc = MAGPIE_ERR;
        return;
    }
    job_run(drv, conn, j);
    if (j->rc == MAGPIE_OK && drv->commit(conn) == MAGPIE_OK)
        return;
    j->rc = MAGPIE_ERR;
    drv->rollback(conn);
}

/* Resets the results of a job so it can be run again. */
static void job_reset(struct job *j)
{
    free(j->out);
    j->out = NULL;
    j->outlen = 0;
    j->rc = MAGPIE_ERR;
    j->id = 0;
}

/* Calls the job's callback with its results, then frees the job. Runs on
 * the caller's loop (posted) or on the pool thread. */
static void job_deliver(void *arg)
{
    struct job *j = arg;
    int rc = j->rc;
    switch (j->op) {
    case OP_KV_GET:
    case OP_MAP_GET:
        if (j->cb.get)
            j->cb.get(j->ud, rc, rc == MAGPIE_OK ? j->out : NULL, rc == MAGPIE_OK ? j->outlen : 0);
        break;
    case OP_KV_SET:
    case OP_KV_DEL:
    case OP_MAP_SET:
    case OP_MAP_DEL:
    case OP_AR_DELETE:
    case OP_TXN:
        /* deleting nothing is not an error for the async API */
        if (j->cb.done)
            j->cb.done(j->ud, rc == MAGPIE_ERR ? MAGPIE_ERR : MAGPIE_OK);
        break;
    case OP_AR_REPLACE:
        /* replacing nothing is the caller's business: NOTFOUND is passed on */
        if (j->cb.done)
            j->cb.done(j->ud, rc);
        break;
    case OP_MAP_ALL:
    case OP_KV_SCAN:
        if (j->cb.all)
            j->cb.all(j->ud, rc, rc == MAGPIE_OK ? j->items : NULL, rc == MAGPIE_OK ? j->n : 0);
        break;
    case OP_AR_APPEND:
        if (j->cb.append)
            j->cb.append(j->ud, rc, rc == MAGPIE_OK ? j->id : 0);
        break;
    case OP_AR_QUERY:
        if (j->cb.query)
            j->cb.query(j->ud, rc, rc == MAGPIE_OK ? j->items : NULL, rc == MAGPIE_OK ? j->n : 0);
        break;
    case OP_AR_COUNT:
        if (j->cb.count)
            j->cb.count(j->ud, rc, rc == MAGPIE_OK ? j->id : 0);
        break;
    }
    job_free(j);
}

static int job_has_cb(const struct job *j)
{
    switch (j->op) {
    case OP_KV_GET:
    case OP_MAP_GET:
        return j->cb.get != NULL;
    case OP_MAP_ALL:
    case OP_KV_SCAN:
        return j->cb.all != NULL;
    case OP_AR_APPEND:
        return j->cb.append != NULL;
    case OP_AR_QUERY:
        return j->cb.query != NULL;
    case OP_AR_COUNT:
        return j->cb.count != NULL;
    default:
        return j->cb.done != NULL;
    }
}

/* Hands a finished job to its caller: posted to the caller's loop, or
 * delivered here when the caller had no loop. A job without a callback is
 * freed here and never touches the loop. */
static void job_complete(struct job *j)
{
    if (!job_has_cb(j)) {
        job_free(j);
        return;
    }
    if (j->loop && mp_loop_post(j->loop, job_deliver, j) == MAGPIE_OK)
        return;
    if (j->loop)
        mp_log(MP_LOG_ERROR, "storage: cannot post completion, calling back on the pool thread");
    job_deliver(j);
}

/* 1 for the jobs that only write (and so may share a transaction). */
static int job_is_write(const struct job *j)
{
    switch (j->op) {
    case OP_KV_SET:
    case OP_KV_DEL:
    case OP_MAP_SET:
    case OP_MAP_DEL:
    case OP_AR_APPEND:
    case OP_AR_DELETE:
    case OP_TXN:
        return 1;
    default:
        return 0;
    }
}

/* Runs a run of n >= 2 writes in one transaction. If anything in it fails,
 * the transaction is rolled back and each write runs alone, so one bad
 * item cannot fail the others. */
static void run_write_batch(const struct mp_storage_driver *drv, void *conn, struct job *first,
                             size_t n)
{
    struct job *j = first;
    int ok = conn && drv->begin(conn) == MAGPIE_OK;
    for (size_t i = 0; ok && i < n; i++, j = j->next) {
        job_run(drv, conn, j);
        ok = j->rc != MAGPIE_ERR; /* deleting nothing is no failure */
    }
    if (ok && drv->commit(conn) == MAGPIE_OK) {
        mp_log(MP_LOG_DEBUG, "storage: group commit of %zu writes", n);
        return;
    }
    mp_log(MP_LOG_WARN, "storage: group commit of %zu writes failed, retrying one by one", n);
    if (conn)
        drv->rollback(conn);
    j = first;
    for (size_t i = 0; i < n; i++, j = j->next) {
        job_reset(j);
        job_run_alone(drv, conn, j);
    }
}

/* Pool thread: takes the whole queue and runs it in order, grouping runs
 * of writes into one transaction; each job or group is completed as soon
 * as it is done, in queue order. Exits when stopping and the queue is
 * empty. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    const struct mp_storage_driver *drv = w->s->drv;
    void *engine = w->s->engine;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        struct job *list = w->head;
        w->head = w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        if (!list)
            break; /* stopping and drained */

        if (!w->conn) {
            char err[256] = "";
            w->conn = drv->connect(engine, err, sizeof err);
            if (!w->conn)
                mp_log(MP_LOG_ERROR, "storage: connect: %s", err);
        }
        struct job *j = list;
        while (j) {
            size_t n = 1;
            struct job *e = j->next;
            if (job_is_write(j)) {
                while (e && job_is_write(e) && n < WRITE_BATCH_MAX)
                    e = e->next, n++;
            }
            if (n > 1)
                run_write_batch(drv, w->conn, j, n);
            else
                job_run_alone(drv, w->conn, j);
            /* complete this unit now (in order), not after the whole list;
             * a key leaves its routing slot only once its completion is
             * posted, so a later job on it cannot overtake it elsewhere */
            while (j != e) {
                struct job *next = j->next;
                uint32_t route = j->route;
                job_complete(j);
                if (w->s->routed)
                    job_unroute(w->s, route);
                atomic_fetch_sub(&w->s->queued, 1);
                j = next;
            }
            if (w->s->bound && atomic_load(&w->s->queued) <= w->s->bound / 2)
                mp_waitq_set(w->s->full, 0);
        }
    }
    return NULL;
}

/* ---- open / close ---- */

static void storage_free(struct storage *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nfree; i++)
        s->drv->disconnect(s->free_conns[i]);
    free(s->free_conns);
    if (s->engine)
        s->drv->fini(s->engine);
    pthread_mutex_destroy(&s->conns_lock);
    pthread_mutex_destroy(&s->routes_lock);
    free(s->routes);
    mp_waitq_unref(s->full);
    free(s->workers);
    free(s);
}

/* Stops and joins the first n workers of s, running what they still have
 * queued; closes their connections. */
static void workers_stop(struct storage *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct worker *w = &s->workers[i];
        pthread_mutex_lock(&w->lock);
        w->stopping = 1;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
    }
    for (size_t i = 0; i < n; i++) {
        struct worker *w = &s->workers[i];
        pthread_join(w->tid, NULL);
        if (w->conn)
            s->drv->disconnect(w->conn);
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
    }
}

static int storage_open(const struct mp_config *cfg, int with_pool, char *err, size_t errlen)
{
    const struct mp_storage_driver *drv = driver_find(cfg->storage_driver);
    if (!drv) {
        snprintf(err, errlen, "unknown storage driver \"%s\" (sqlite or mysql)",
                 cfg->storage_driver);
        return MAGPIE_ERR;
    }
    pthread_rwlock_wrlock(&st_lock);
    if (st) {
        pthread_rwlock_unlock(&st_lock);
        snprintf(err, errlen, "storage already open");
        return MAGPIE_ERR;
    }
    struct storage *s = mp_calloc(1, sizeof *s);
    s->drv = drv;
    s->full = mp_waitq_new();
    s->bound = cfg->storage_queue > 0 ? (size_t)cfg->storage_queue : 0;
    pthread_mutex_init(&s->conns_lock, NULL);
    pthread_mutex_init(&s->routes_lock, NULL);
    s->engine = drv->init(cfg, err, errlen);
    if (!s->engine)
        goto fail;
    void *conn = drv->connect(s->engine, err, errlen);
    if (!conn)
        goto fail;
    conn_put(s, conn);
    if (drv->migrate(conn, err, errlen) != MAGPIE_OK)
        goto fail;

    if (with_pool) {
        size_t n = cfg->storage_threads > 0 ? (size_t)cfg->storage_threads : 2;
        s->workers = mp_calloc(n, sizeof *s->workers);
        for (size_t i = 0; i < n; i++) {
            s->workers[i].conn = drv->connect(s->engine, err, errlen);
            if (!s->workers[i].conn) {
                for (size_t k = 0; k < i; k++)
                    drv->disconnect(s->workers[k].conn);
                goto fail;
            }
        }
        for (size_t i = 0; i < n; i++) {
            struct worker *w = &s->workers[i];
            w->s = s;
            pthread_mutex_init(&w->lock, NULL);
            pthread_cond_init(&w->cond, NULL);
            int e = pthread_create(&w->tid, NULL, worker_main, w);
            if (e) {
                snprintf(err, errlen, "pthread_create: %s", strerror(e));
                pthread_mutex_destroy(&w->lock);
                pthread_cond_destroy(&w->cond);
                for (size_t k = i; k < n; k++)
                    drv->disconnect(s->workers[k].conn);
                workers_stop(s, i);
                goto fail;
            }
        }
        s->nworkers = n;
        if (drv->single_writer && n > 1) {
            s->routes = mp_calloc(ROUTE_SLOTS, sizeof *s->routes);
            s->routed = 1;
        }
    }
    st = s;
    pthread_rwlock_unlock(&st_lock);
    mp_log(MP_LOG_INFO, "storage: %s open, %zu pool thread(s)", drv->name, s->nworkers);
    return MAGPIE_OK;

fail:
    storage_free(s);
    pthread_rwlock_unlock(&st_lock);
    return MAGPIE_ERR;
}

int mp_storage_open(const struct mp_config *cfg, char *err, size_t errlen)
{
    return storage_open(cfg, 1, err, errlen);
}

int mp_storage_open_sync_only(const struct mp_config *cfg, char *err, size_t errlen)
{
    return storage_open(cfg, 0, err, errlen);
}

void mp_storage_close(void)
{
    pthread_rwlock_wrlock(&st_lock);
    struct storage *s = st;
    st = NULL;
    pthread_rwlock_unlock(&st_lock);
    if (!s)
        return;
    workers_stop(s, s->nworkers);
    storage_free(s);
}

/* ---- asynchronous API ---- */

int mp_kv_get(const char *host, const char *store, const char *key, mp_kv_get_cb cb, void *ud)
{
    struct job *j = job_new(OP_KV_GET, host, store, key, NULL, NULL, NULL, 0);
    if (!j)
        return MAGPIE_ERR;
    j->cb.get = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_kv_set(const char *host, const char *store, const char *key, const void *data, size_t len,
              mp_store_done_cb cb, void *ud)
{
    struct job *j = job_new(OP_KV_SET, host, store, key, NULL, NULL, data, len);
    if (!j)
        return MAGPIE_ERR;
    j->cb.done = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_kv_del(const char *host, const char *store, const char *key, mp_store_done_cb cb, void *ud)
{
    struct job *j = job_new(OP_KV_DEL, host, store, key, NULL, NULL, NULL, 0);
    if (!j)
        return MAGPIE_ERR;
    j->cb.done = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_kv_scan(const char *host, const char *store, const char *after, size_t limit,
               mp_map_all_cb cb, void *ud)
{
    if (!after || limit < 1 || limit > 1000)
        return MAGPIE_ERR;
    struct job *j = job_new(OP_KV_SCAN, host, store, after, NULL, NULL, NULL, 0);
    if (!j)
        return MAGPIE_ERR;
    j->q.limit = limit;
    j->cb.all = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_map_get(const char *host, const char *store, const char *key, const char *field,
               mp_kv_get_cb cb, void *ud)
{
    if (!field)
        return MAGPIE_ERR;
    struct job *j = job_new(OP_MAP_GET, host, store, key, field, NULL, NULL, 0);
    if (!j)
        return MAGPIE_ERR;
    j->cb.get = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_map_set(const char *host, const char *store, const char *key, const char *field,
               const void *data, size_t len, mp_store_done_cb cb, void *ud)
{
    if (!field)
        return MAGPIE_ERR;
    struct job *j = job_new(OP_MAP_SET, host, store, key, field, NULL, data, len);
    if (!j)
        return MAGPIE_ERR;
    j->cb.done = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_map_del(const char *host, const char *store, const char *key, const char *field,
               mp_store_done_cb cb, void *ud)
{
    struct job *j = job_new(OP_MAP_DEL, host, store, key, field, NULL, NULL, 0);
    if (!j)
        return MAGPIE_ERR;
    j->cb.done = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_map_all(const char *host, const char *store, const char *key, mp_map_all_cb cb, void *ud)
{
    struct job *j = job_new(OP_MAP_ALL, host, store, key, NULL, NULL, NULL, 0);
    if (!j)
        return MAGPIE_ERR;
    j->cb.all = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_archive_append(const char *host, const char *store, const char *key, const char *with,
                      const void *data, size_t len, mp_archive_append_cb cb, void *ud)
{
    return mp_archive_append_at(host, store, key, now_us(), with, data, len, cb, ud);
}

int mp_archive_append_at(const char *host, const char *store, const char *key, int64_t ts,
                         const char *with, const void *data, size_t len, mp_archive_append_cb cb,
                         void *ud)
{
    struct job *j = job_new(OP_AR_APPEND, host, store, key, NULL, with, data, len);
    if (!j)
        return MAGPIE_ERR;
    j->ts = ts;
    j->cb.append = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_archive_replace(const char *host, const char *store, const char *key, int64_t id,
                       const void *data, size_t len, mp_store_done_cb cb, void *ud)
{
    if (id <= 0)
        return MAGPIE_ERR;
    struct job *j = job_new(OP_AR_REPLACE, host, store, key, NULL, NULL, data, len);
    if (!j)
        return MAGPIE_ERR;
    j->id = id;
    j->cb.done = cb;
    j->ud = ud;
    return job_submit(j);
}

/* A job for a call with a filter (q may be NULL: everything); the filter's
 * strings are copied into it (with_has in the field slot, unused by
 * archive calls). */
static struct job *filter_job(enum job_op op, const char *host, const char *store, const char *key,
                              const mp_archive_filter *q)
{
    mp_archive_filter none = {0};
    if (!q)
        q = &none;
    struct job *j = job_new(op, host, store, key, q->with_has, q->with, NULL, 0);
    if (!j)
        return NULL;
    j->q = *q;
    j->q.with = j->with;
    j->q.with_has = j->field;
    return j;
}

int mp_archive_query(const char *host, const char *store, const char *key,
                     const mp_archive_filter *q, mp_archive_query_cb cb, void *ud)
{
    struct job *j = filter_job(OP_AR_QUERY, host, store, key, q);
    if (!j)
        return MAGPIE_ERR;
    j->cb.query = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_archive_count(const char *host, const char *store, const char *key,
                     const mp_archive_filter *q, mp_archive_count_cb cb, void *ud)
{
    struct job *j = filter_job(OP_AR_COUNT, host, store, key, q);
    if (!j)
        return MAGPIE_ERR;
    j->cb.count = cb;
    j->ud = ud;
    return job_submit(j);
}

int mp_archive_delete(const char *host, const char *store, const char *key, int64_t up_to_id,
                      mp_store_done_cb cb, void *ud)
{
    struct job *j = job_new(OP_AR_DELETE, host, store, key, NULL, NULL, NULL, 0);
    if (!j)
        return MAGPIE_ERR;
    j->id = up_to_id;
    j->cb.done = cb;
    j->ud = ud;
    return job_submit(j);
}

/* ---- transactions ---- */

int mp_storage_txn(const char *host, const char *store, const char *key, mp_txn_fn fn,
                   mp_store_done_cb done, void *ud)
{
    if (!fn)
        return MAGPIE_ERR;
    struct job *j = job_new(OP_TXN, host, store, key, NULL, NULL, NULL, 0);
    if (!j)
        return MAGPIE_ERR;
    j->txn = fn;
    j->cb.done = done;
    j->ud = ud;
    return job_submit(j);
}

int mp_txn_kv_get(mp_txn *t, const char *store, const char *key, void **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    if (!scope_ok(t->host, store, key))
        return MAGPIE_ERR;
    return t->drv->kv_get(t->conn, t->host, store, key, data, len);
}

int mp_txn_kv_set(mp_txn *t, const char *store, const char *key, const void *data, size_t len)
{
    if (!scope_ok(t->host, store, key) || (!data && len))
        return MAGPIE_ERR;
    return t->drv->kv_set(t->conn, t->host, store, key, len ? data : "", len);
}

int mp_txn_archive_append(mp_txn *t, const char *store, const char *key, const char *with,
                          const void *data, size_t len, int64_t *id)
{
    *id = 0;
    if (!scope_ok(t->host, store, key) || (with && !name_ok(with, MP_STORAGE_MAX_WITH)) ||
        (!data && len))
        return MAGPIE_ERR;
    return t->drv->archive_append(t->conn, t->host, store, key, now_us(), with, len ? data : "",
                                  len, id);
}

/* ---- synchronous API ---- */

/* Takes the read lock and a connection for a sync call. Returns the open
 * storage (lock held, *conn set) or NULL (lock released). */
static struct storage *sync_enter(void **conn)
{
    pthread_rwlock_rdlock(&st_lock);
    if (st && (*conn = conn_get(st)) != NULL)
        return st;
    if (!st) /* only before the server opened it: magpied --check-config loading modules */
        mp_log(MP_LOG_DEBUG, "storage: not open");
    pthread_rwlock_unlock(&st_lock);
    return NULL;
}

static void sync_leave(struct storage *s, void *conn)
{
    conn_put(s, conn);
    pthread_rwlock_unlock(&st_lock);
}

int mp_kv_get_sync(const char *host, const char *store, const char *key, void **data, size_t *len)
{
    void *c;
    struct storage *s;
    if (!scope_ok(host, store, key) || !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->kv_get(c, host, store, key, data, len);
    sync_leave(s, c);
    return rc;
}

int mp_kv_set_sync(const char *host, const char *store, const char *key, const void *data,
                   size_t len)
{
    void *c;
    struct storage *s;
    if ((!data && len) || !scope_ok(host, store, key) || !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->kv_set(c, host, store, key, data ? data : "", len);
    sync_leave(s, c);
    return rc;
}

int mp_kv_del_sync(const char *host, const char *store, const char *key)
{
    void *c;
    struct storage *s;
    if (!scope_ok(host, store, key) || !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->kv_del(c, host, store, key);
    sync_leave(s, c);
    return rc;
}

int mp_kv_keys_sync(const char *host, const char *store, void (*fn)(void *ud, const char *key),
                    void *ud)
{
    void *c;
    struct storage *s;
    if (!fn || !scope_ok(host, store, "") || !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->kv_keys(c, host, store, fn, ud);
    sync_leave(s, c);
    return rc;
}

int mp_map_get_sync(const char *host, const char *store, const char *key, const char *field,
                    void **data, size_t *len)
{
    void *c;
    struct storage *s;
    if (!name_ok(field, MP_STORAGE_MAX_FIELD) || !scope_ok(host, store, key) ||
        !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->map_get(c, host, store, key, field, data, len);
    sync_leave(s, c);
    return rc;
}

int mp_map_set_sync(const char *host, const char *store, const char *key, const char *field,
                    const void *data, size_t len)
{
    void *c;
    struct storage *s;
    if ((!data && len) || !name_ok(field, MP_STORAGE_MAX_FIELD) || !scope_ok(host, store, key) ||
        !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->map_set(c, host, store, key, field, data ? data : "", len);
    sync_leave(s, c);
    return rc;
}

/* Returns MAGPIE_OK (also when nothing matched) or MAGPIE_ERR. */
int mp_map_del_sync(const char *host, const char *store, const char *key, const char *field)
{
    void *c;
    struct storage *s;
    if ((field && !name_ok(field, MP_STORAGE_MAX_FIELD)) || !scope_ok(host, store, key) ||
        !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->map_del(c, host, store, key, field);
    sync_leave(s, c);
    return rc == MAGPIE_ERR ? MAGPIE_ERR : MAGPIE_OK;
}

int mp_archive_append_sync(const char *host, const char *store, const char *key, const char *with,
                           const void *data, size_t len, int64_t *id)
{
    void *c;
    struct storage *s;
    int64_t dummy;
    if (!id)
        id = &dummy;
    *id = 0;
    if ((!data && len) || (with && !name_ok(with, MP_STORAGE_MAX_WITH)) ||
        !scope_ok(host, store, key) || !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->archive_append(c, host, store, key, now_us(), with, data ? data : "", len, id);
    sync_leave(s, c);
    return rc;
}

int mp_archive_query_sync(const char *host, const char *store, const char *key,
                          const mp_archive_filter *q,
                          void (*fn)(void *ud, const mp_archive_item *item), void *ud)
{
    void *c;
    struct storage *s;
    mp_archive_filter none = {0};
    if (!q)
        q = &none;
    if (!fn || (q->with && !name_ok(q->with, MP_STORAGE_MAX_WITH)) || !scope_ok(host, store, key) ||
        !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->archive_query(c, host, store, key, q, fn, ud);
    sync_leave(s, c);
    return rc;
}

int mp_archive_replace_sync(const char *host, const char *store, const char *key, int64_t id,
                            const void *data, size_t len)
{
    void *c;
    struct storage *s;
    if (id <= 0 || (!data && len) || !scope_ok(host, store, key) || !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->archive_replace(c, host, store, key, id, data ? data : "", len);
    sync_leave(s, c);
    return rc;
}

/* Returns MAGPIE_OK (also when nothing matched) or MAGPIE_ERR. */
int mp_archive_delete_sync(const char *host, const char *store, const char *key, int64_t up_to_id)
{
    void *c;
    struct storage *s;
    if (!scope_ok(host, store, key) || !(s = sync_enter(&c)))
        return MAGPIE_ERR;
    int rc = s->drv->archive_delete(c, host, store, key, up_to_id);
    sync_leave(s, c);
    return rc == MAGPIE_ERR ? MAGPIE_ERR : MAGPIE_OK;
}
