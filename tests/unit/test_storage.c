/* test_storage.c - one storage suite, run against every driver.
 *
 * SQLite always runs (a temporary file). MariaDB/MySQL runs when
 * MAGPIE_TEST_MYSQL is set, as "host:port:user:password:database" or
 * "/path/to/socket:user:password:database" (tests/mariadb.sh start prints
 * one); otherwise every test of that group is skipped with a message.
 * Each MySQL run uses a fresh virtual host name, so old rows never matter. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/base.h"
#include "conf/config.h"
#include "storage/storage_driver.h"

#include <event2/event.h>
#include <mysql.h>
#include <sqlite3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct drv {
    const char *name;
    int available;
    struct mp_config cfg;
    char host[64];
    char dir[64]; /* sqlite temp dir */
    char path[128];
    char env[512]; /* mysql: copy of MAGPIE_TEST_MYSQL, split in place */
};

#define NEED(st)                                                                                   \
    struct drv *d = *(st);                                                                         \
    if (!d->available) {                                                                           \
        print_message("[  SKIP    ] %s: set MAGPIE_TEST_MYSQL (see tests/mariadb.sh)\n", d->name); \
        skip();                                                                                    \
    }

/* ---- helpers ---- */

static void open_or_fail(struct drv *d)
{
    char err[256] = "";
    int rc = mp_storage_open(&d->cfg, err, sizeof err);
    if (rc != MAGPIE_OK)
        fail_msg("mp_storage_open(%s): %s", d->name, err);
}

struct collect {
    char *keys[64];
    size_t n;
};

static void collect_key(void *ud, const char *key)
{
    struct collect *c = ud;
    if (c->n < 64)
        c->keys[c->n] = strdup(key);
    c->n++;
}

static void collect_free(struct collect *c)
{
    for (size_t i = 0; i < c->n && i < 64; i++)
        free(c->keys[i]);
    c->n = 0;
}

static void count_key(void *ud, const char *key)
{
    (void)key;
    (*(size_t *)ud)++;
}

struct items {
    int64_t id[256];
    int64_t ts[256];
    char data[256][32];
    char with[256][32];
    int with_null[256];
    size_t n;
};

static void collect_item(void *ud, const mp_archive_item *it)
{
    struct items *r = ud;
    if (r->n >= 256)
        return;
    r->id[r->n] = it->id;
    r->ts[r->n] = it->ts;
    snprintf(r->data[r->n], sizeof r->data[0], "%.*s", (int)it->len, (const char *)it->data);
    r->with_null[r->n] = it->with == NULL;
    snprintf(r->with[r->n], sizeof r->with[0], "%s", it->with ? it->with : "");
    r->n++;
}

static void query(struct drv *d, const char *store, const char *key, int64_t after, int64_t before,
                  const char *with, size_t limit, int reverse, struct items *r)
{
    mp_archive_filter q = {
        .after_id = after, .before_id = before, .with = with, .limit = limit, .reverse = reverse};
    memset(r, 0, sizeof *r);
    assert_int_equal(mp_archive_query_sync(d->host, store, key, &q, collect_item, r), MAGPIE_OK);
}

/* An mp_loop driven by the test thread until `pending` callbacks ran. */
struct aloop {
    mp_loop *loop;
    struct event *timeout;
    pthread_t thread;
    int pending;
    int wrong_thread;
    int timed_out;
};

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct aloop *a = arg;
    (void)fd;
    (void)what;
    a->timed_out = 1;
    mp_loop_stop(a->loop);
}

static void aloop_init(struct aloop *a)
{
    memset(a, 0, sizeof *a);
    a->loop = mp_loop_new();
    assert_non_null(a->loop);
    mp_loop_bind_thread(a->loop);
    a->thread = pthread_self();
    struct timeval tv = {60, 0};
    a->timeout = event_new(mp_loop_base(a->loop), -1, 0, on_timeout, a);
    event_add(a->timeout, &tv);
}

/* Every callback calls this once: checks it runs on the issuing loop. */
static void aloop_done(struct aloop *a)
{
    if (!pthread_equal(pthread_self(), a->thread) || mp_loop_current() != a->loop)
        a->wrong_thread++;
    if (--a->pending == 0)
        mp_loop_stop(a->loop);
}

static void aloop_run(struct aloop *a)
{
    if (a->pending > 0)
        mp_loop_run(a->loop);
    event_free(a->timeout);
    mp_loop_free(a->loop);
    mp_loop_bind_thread(NULL);
    assert_int_equal(a->timed_out, 0);
    assert_int_equal(a->pending, 0);
    assert_int_equal(a->wrong_thread, 0);
}

/* ---- group setup ---- */

static int setup_sqlite(void **state)
{
    struct drv *d = calloc(1, sizeof *d);
    d->name = "sqlite";
    snprintf(d->dir, sizeof d->dir, "/tmp/magpie-storage-XXXXXX");
    if (!mkdtemp(d->dir))
        return -1;
    snprintf(d->path, sizeof d->path, "%s/test.db", d->dir);
    d->cfg.storage_driver = "sqlite";
    d->cfg.sqlite_path = d->path;
    d->cfg.storage_threads = 3;
    snprintf(d->host, sizeof d->host, "test.example");
    char err[256] = "";
    if (mp_storage_open(&d->cfg, err, sizeof err) != MAGPIE_OK) {
        fprintf(stderr, "sqlite open: %s\n", err);
        return -1;
    }
    d->available = 1;
    *state = d;
    return 0;
}

static int teardown_sqlite(void **state)
{
    struct drv *d = *state;
    mp_storage_close();
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s%s", d->path, suffix[i]);
        unlink(p);
    }
    rmdir(d->dir);
    free(d);
    return 0;
}

static int setup_mysql(void **state)
{
    struct drv *d = calloc(1, sizeof *d);
    d->name = "mysql";
    *state = d;
    const char *env = getenv("MAGPIE_TEST_MYSQL");
    if (!env || !*env)
        return 0;
    snprintf(d->env, sizeof d->env, "%s", env);
    char *f[5] = {0};
    int n = 0;
    char *p = d->env;
    while (n < 5) {
        f[n++] = p;
        p = strchr(p, ':');
        if (!p)
            break;
        *p++ = '\0';
    }
    d->cfg.storage_driver = "mysql";
    d->cfg.storage_threads = 3;
    if (f[0] && f[0][0] == '/' && n == 4) {
        d->cfg.mysql_socket = f[0];
        d->cfg.mysql_user = f[1];
        d->cfg.mysql_password = f[2];
        d->cfg.mysql_database = f[3];
    } else if (n == 5) {
        d->cfg.mysql_host = f[0];
        d->cfg.mysql_port = atoi(f[1]);
        d->cfg.mysql_user = f[2];
        d->cfg.mysql_password = f[3];
        d->cfg.mysql_database = f[4];
    } else {
        fprintf(stderr, "MAGPIE_TEST_MYSQL: want host:port:user:password:database "
                        "or /socket:user:password:database\n");
        return -1;
    }
    snprintf(d->host, sizeof d->host, "t%ld-%ld.example", (long)getpid(), (long)time(NULL));
    char err[256] = "";
    if (mp_storage_open(&d->cfg, err, sizeof err) != MAGPIE_OK) {
        fprintf(stderr, "mysql open: %s\n", err);
        return -1;
    }
    d->available = 1;
    return 0;
}

static int teardown_mysql(void **state)
{
    struct drv *d = *state;
    if (d->available)
        mp_storage_close();
    free(d);
    return 0;
}

/* ---- keyval ---- */

static void test_kv_basic(void **state)
{
    NEED(state);
    void *v;
    size_t n;
    assert_int_equal(mp_kv_get_sync(d->host, "kv", "alice", &v, &n), MAGPIE_NOTFOUND);
    assert_int_equal(mp_kv_set_sync(d->host, "kv", "alice", "one", 3), MAGPIE_OK);
    assert_int_equal(mp_kv_get_sync(d->host, "kv", "alice", &v, &n), MAGPIE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(v, "one"); /* NUL-terminated for convenience */
    free(v);

    /* overwrite, longer then shorter */
    assert_int_equal(mp_kv_set_sync(d->host, "kv", "alice", "three", 5), MAGPIE_OK);
    assert_int_equal(mp_kv_set_sync(d->host, "kv", "alice", "2", 1), MAGPIE_OK);
    assert_int_equal(mp_kv_get_sync(d->host, "kv", "alice", &v, &n), MAGPIE_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(v, "2", 1);
    free(v);

    /* scoping: other store, other host, case-sensitive key */
    assert_int_equal(mp_kv_get_sync(d->host, "kv2", "alice", &v, &n), MAGPIE_NOTFOUND);
    assert_int_equal(mp_kv_get_sync("other.example", "kv", "alice", &v, &n), MAGPIE_NOTFOUND);
    assert_int_equal(mp_kv_get_sync(d->host, "kv", "Alice", &v, &n), MAGPIE_NOTFOUND);
    assert_int_equal(mp_kv_get_sync(d->host, "kv", "alice ", &v, &n), MAGPIE_NOTFOUND);

    /* empty value is a value, not absence */
    assert_int_equal(mp_kv_set_sync(d->host, "kv", "empty", "", 0), MAGPIE_OK);
    assert_int_equal(mp_kv_get_sync(d->host, "kv", "empty", &v, &n), MAGPIE_OK);
    assert_int_equal(n, 0);
    free(v);

    assert_int_equal(mp_kv_del_sync(d->host, "kv", "alice"), MAGPIE_OK);
    assert_int_equal(mp_kv_get_sync(d->host, "kv", "alice", &v, &n), MAGPIE_NOTFOUND);
    assert_int_equal(mp_kv_del_sync(d->host, "kv", "alice"), MAGPIE_NOTFOUND);
    assert_int_equal(mp_kv_del_sync(d->host, "kv", "empty"), MAGPIE_OK);
}

static void test_kv_binary(void **state)
{
    NEED(state);
    unsigned char small[] = {'a', 0, 'b', 0, 0, 0xff, 0x80, '\'', '"', '\\', 0};
    void *v;
    size_t n;
    assert_int_equal(mp_kv_set_sync(d->host, "bin", "k", small, sizeof small), MAGPIE_OK);
    assert_int_equal(mp_kv_get_sync(d->host, "bin", "k", &v, &n), MAGPIE_OK);
    assert_int_equal(n, sizeof small);
    assert_memory_equal(v, small, sizeof small);
    free(v);

    size_t big_len = 300 * 1024;
    unsigned char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char)(i * 7 + (i >> 8));
    assert_int_equal(mp_kv_set_sync(d->host, "bin", "big", big, big_len), MAGPIE_OK);
    assert_int_equal(mp_kv_get_sync(d->host, "bin", "big", &v, &n), MAGPIE_OK);
    assert_int_equal(n, big_len);
    assert_memory_equal(v, big, big_len);
    free(v);
    free(big);

    /* non-ASCII names */
    assert_int_equal(mp_kv_set_sync(d->host, "bin", "j\xc3\xbcrgen@\xe4\xbe\x8b.cn", "x", 1),
                     MAGPIE_OK);
    assert_int_equal(mp_kv_get_sync(d->host, "bin", "j\xc3\xbcrgen@\xe4\xbe\x8b.cn", &v, &n),
                     MAGPIE_OK);
    free(v);
    /* and a different code point with the same letters is a different key */
    assert_int_equal(mp_kv_get_sync(d->host, "bin", "jurgen@\xe4\xbe\x8b.cn", &v, &n),
                     MAGPIE_NOTFOUND);
}

static void test_kv_keys_order(void **state)
{
    NEED(state);
    const char *in[] = {"b", "a", "B", "a b", "\xc3\xa9", "z", "ab", "A"};
    const char *want[] = {"A", "B", "a", "a b", "ab", "b", "z", "\xc3\xa9"};
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(mp_kv_set_sync(d->host, "order", in[i], "v", 1), MAGPIE_OK);
    assert_int_equal(mp_kv_set_sync(d->host, "order2", "zz", "v", 1), MAGPIE_OK);
    assert_int_equal(mp_kv_set_sync("other.example", "order", "0", "v", 1), MAGPIE_OK);
    struct collect c = {0};
    assert_int_equal(mp_kv_keys_sync(d->host, "order", collect_key, &c), MAGPIE_OK);
    assert_int_equal(c.n, 8);
    for (size_t i = 0; i < 8; i++)
        assert_string_equal(c.keys[i], want[i]);
    collect_free(&c);
    assert_int_equal(mp_kv_keys_sync(d->host, "nothing-here", collect_key, &c), MAGPIE_OK);
    assert_int_equal(c.n, 0);
    assert_int_equal(mp_kv_del_sync("other.example", "order", "0"), MAGPIE_OK);
}

/* ---- map ---- */

static void test_map_sync(void **state)
{
    NEED(state);
    void *v;
    size_t n;
    assert_int_equal(mp_map_get_sync(d->host, "roster", "alice", "bob@x", &v, &n), MAGPIE_NOTFOUND);
    assert_int_equal(mp_map_set_sync(d->host, "roster", "alice", "bob@x", "B", 1), MAGPIE_OK);
    assert_int_equal(mp_map_set_sync(d->host, "roster", "alice", "carol@x", "C\0c", 3), MAGPIE_OK);
    assert_int_equal(mp_map_set_sync(d->host, "roster", "dave", "bob@x", "D", 1), MAGPIE_OK);
    assert_int_equal(mp_map_get_sync(d->host, "roster", "alice", "carol@x", &v, &n), MAGPIE_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "C\0c", 3);
    free(v);
    assert_int_equal(mp_map_set_sync(d->host, "roster", "alice", "bob@x", "BB", 2), MAGPIE_OK);
    assert_int_equal(mp_map_get_sync(d->host, "roster", "alice", "bob@x", &v, &n), MAGPIE_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(v, "BB", 2);
    free(v);
    /* field delete */
    assert_int_equal(mp_map_del_sync(d->host, "roster", "alice", "bob@x"), MAGPIE_OK);
    assert_int_equal(mp_map_get_sync(d->host, "roster", "alice", "bob@x", &v, &n), MAGPIE_NOTFOUND);
    assert_int_equal(mp_map_get_sync(d->host, "roster", "dave", "bob@x", &v, &n), MAGPIE_OK);
    free(v);
    /* deleting nothing is fine */
    assert_int_equal(mp_map_del_sync(d->host, "roster", "alice", "nobody"), MAGPIE_OK);
    /* whole key */
    assert_int_equal(mp_map_set_sync(d->host, "roster", "alice", "eve@x", "E", 1), MAGPIE_OK);
    assert_int_equal(mp_map_del_sync(d->host, "roster", "alice", NULL), MAGPIE_OK);
    assert_int_equal(mp_map_get_sync(d->host, "roster", "alice", "carol@x", &v, &n),
                     MAGPIE_NOTFOUND);
    assert_int_equal(mp_map_get_sync(d->host, "roster", "alice", "eve@x", &v, &n), MAGPIE_NOTFOUND);
    assert_int_equal(mp_map_get_sync(d->host, "roster", "dave", "bob@x", &v, &n), MAGPIE_OK);
    free(v);
}

/* ---- archive ---- */

static void test_archive_sync(void **state)
{
    NEED(state);
    int64_t ids[10], prev = 0;
    struct timespec t0;
    clock_gettime(CLOCK_REALTIME, &t0);
    for (int i = 0; i < 10; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "m%d", i);
        const char *with = i % 3 == 0 ? "a@x" : i % 3 == 1 ? "b@x" : NULL;
        assert_int_equal(
            mp_archive_append_sync(d->host, "mam", "alice", with, buf, strlen(buf), &ids[i]),
            MAGPIE_OK);
        assert_true(ids[i] > prev);
        prev = ids[i];
    }
    /* another key's items interleave in the id space but never show up */
    int64_t other;
    assert_int_equal(mp_archive_append_sync(d->host, "mam", "bob", NULL, "x", 1, &other),
                     MAGPIE_OK);
    assert_true(other > ids[9]);

    struct items r;
    query(d, "mam", "alice", 0, 0, NULL, 0, 0, &r);
    assert_int_equal(r.n, 10);
    int64_t us0 = (int64_t)t0.tv_sec * 1000000 + t0.tv_nsec / 1000;
    for (int i = 0; i < 10; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "m%d", i);
        assert_int_equal(r.id[i], ids[i]);
        assert_string_equal(r.data[i], buf);
        assert_true(r.ts[i] >= us0 - 1000000 && r.ts[i] <= us0 + 60 * 1000000LL);
        assert_int_equal(r.with_null[i], i % 3 == 2);
    }
    /* after / before */
    query(d, "mam", "alice", ids[2], 0, NULL, 0, 0, &r);
    assert_int_equal(r.n, 7);
    assert_int_equal(r.id[0], ids[3]);
    query(d, "mam", "alice", 0, ids[2], NULL, 0, 0, &r);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.id[1], ids[1]);
    query(d, "mam", "alice", ids[2], ids[6], NULL, 0, 0, &r);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.id[0], ids[3]);
    assert_int_equal(r.id[2], ids[5]);
    /* limit, and limit + reverse = the newest n, newest first (RSM "last page") */
    query(d, "mam", "alice", 0, 0, NULL, 4, 0, &r);
    assert_int_equal(r.n, 4);
    assert_int_equal(r.id[3], ids[3]);
    query(d, "mam", "alice", 0, 0, NULL, 3, 1, &r);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.id[0], ids[9]);
    assert_int_equal(r.id[2], ids[7]);
    query(d, "mam", "alice", 0, ids[5], NULL, 2, 1, &r);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.id[0], ids[4]);
    assert_int_equal(r.id[1], ids[3]);
    /* with */
    query(d, "mam", "alice", 0, 0, "a@x", 0, 0, &r);
    assert_int_equal(r.n, 4);
    for (size_t i = 0; i < r.n; i++) {
        assert_string_equal(r.with[i], "a@x");
        assert_int_equal(r.id[i], ids[3 * i]);
    }
    query(d, "mam", "alice", ids[0], 0, "a@x", 2, 1, &r);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.id[0], ids[9]);
    assert_int_equal(r.id[1], ids[6]);
    query(d, "mam", "alice", 0, 0, "A@x", 0, 0, &r);
    assert_int_equal(r.n, 0);
    query(d, "mam", "nobody", 0, 0, NULL, 0, 0, &r);
    assert_int_equal(r.n, 0);

    /* delete up to an id, then everything */
    assert_int_equal(mp_archive_delete_sync(d->host, "mam", "alice", ids[4]), MAGPIE_OK);
    query(d, "mam", "alice", 0, 0, NULL, 0, 0, &r);
    assert_int_equal(r.n, 5);
    assert_int_equal(r.id[0], ids[5]);
    assert_int_equal(mp_archive_delete_sync(d->host, "mam", "alice", 0), MAGPIE_OK);
    query(d, "mam", "alice", 0, 0, NULL, 0, 0, &r);
    assert_int_equal(r.n, 0);
    query(d, "mam", "bob", 0, 0, NULL, 0, 0, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(mp_archive_delete_sync(d->host, "mam", "alice", 0), MAGPIE_OK);

    /* empty and binary payloads */
    int64_t id;
    assert_int_equal(mp_archive_append_sync(d->host, "mam", "carol", NULL, "", 0, &id), MAGPIE_OK);
    assert_int_equal(mp_archive_append_sync(d->host, "mam", "carol", NULL, "a\0b", 3, &id),
                     MAGPIE_OK);
    query(d, "mam", "carol", 0, 0, NULL, 0, 0, &r);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.data[0], "");
}

/* ---- async ---- */

struct basic {
    struct aloop a;
    int step_get1, step_get2, step_all, step_mapget, step_app, step_query, step_del;
    int64_t app_id;
    int order; /* sequence of completions on the kv key */
    int seq_set, seq_get1, seq_del, seq_get2;
};

static void b_set(void *ud, int rc)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_OK);
    b->seq_set = ++b->order;
    aloop_done(&b->a);
}

static void b_get1(void *ud, int rc, const void *data, size_t len)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_OK);
    assert_int_equal(len, 4);
    assert_memory_equal(data, "v\0v2", 4);
    b->seq_get1 = ++b->order;
    aloop_done(&b->a);
}

static void b_del(void *ud, int rc)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_OK);
    b->seq_del = ++b->order;
    aloop_done(&b->a);
}

static void b_get2(void *ud, int rc, const void *data, size_t len)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_NOTFOUND);
    assert_null(data);
    assert_int_equal(len, 0);
    b->seq_get2 = ++b->order;
    aloop_done(&b->a);
}

static void b_mapset(void *ud, int rc)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_OK);
    aloop_done(&b->a);
}

static void b_all(void *ud, int rc, const mp_map_item *items, size_t n)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(items[0].field, "f1");
    assert_string_equal(items[1].field, "f2");
    assert_string_equal(items[2].field, "f3");
    assert_int_equal(items[1].len, 3);
    assert_memory_equal(items[1].data,
                        "2\0"
                        "2",
                        3);
    b->step_all = 1;
    aloop_done(&b->a);
}

static void b_all_empty(void *ud, int rc, const mp_map_item *items, size_t n)
{
    struct basic *b = ud;
    (void)items;
    assert_int_equal(rc, MAGPIE_OK);
    assert_int_equal(n, 0);
    aloop_done(&b->a);
}

static void b_mapget(void *ud, int rc, const void *data, size_t len)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_OK);
    assert_int_equal(len, 1);
    assert_memory_equal(data, "3", 1);
    b->step_mapget = 1;
    aloop_done(&b->a);
}

static void b_append(void *ud, int rc, int64_t id)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_OK);
    assert_true(id > 0);
    b->app_id = id;
    aloop_done(&b->a);
}

static void b_query(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(items[0].id, b->app_id);
    assert_string_equal(items[0].with, "bob@x");
    assert_int_equal(items[0].len, 5);
    assert_memory_equal(items[0].data, "hello", 5);
    b->step_query = 1;
    aloop_done(&b->a);
}

static void b_ardel(void *ud, int rc)
{
    struct basic *b = ud;
    assert_int_equal(rc, MAGPIE_OK);
    b->step_del = 1;
    aloop_done(&b->a);
}

static void b_query_empty(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct basic *b = ud;
    (void)items;
    assert_int_equal(rc, MAGPIE_OK);
    assert_int_equal(n, 0);
    aloop_done(&b->a);
}

static void test_async_basic(void **state)
{
    NEED(state);
    struct basic b;
    memset(&b, 0, sizeof b);
    aloop_init(&b.a);
    /* everything issued at once: per-key ordering makes the results exact */
    assert_int_equal(mp_kv_set(d->host, "akv", "k", "v\0v2", 4, b_set, &b), MAGPIE_OK);
    assert_int_equal(mp_kv_get(d->host, "akv", "k", b_get1, &b), MAGPIE_OK);
    assert_int_equal(mp_kv_del(d->host, "akv", "k", b_del, &b), MAGPIE_OK);
    assert_int_equal(mp_kv_get(d->host, "akv", "k", b_get2, &b), MAGPIE_OK);
    assert_int_equal(mp_map_set(d->host, "amap", "k", "f2",
                                "2\0"
                                "2",
                                3, b_mapset, &b),
                     MAGPIE_OK);
    assert_int_equal(mp_map_set(d->host, "amap", "k", "f3", "3", 1, b_mapset, &b), MAGPIE_OK);
    assert_int_equal(mp_map_set(d->host, "amap", "k", "f1", "1", 1, b_mapset, &b), MAGPIE_OK);
    assert_int_equal(mp_map_all(d->host, "amap", "k", b_all, &b), MAGPIE_OK);
    assert_int_equal(mp_map_get(d->host, "amap", "k", "f3", b_mapget, &b), MAGPIE_OK);
    assert_int_equal(mp_map_del(d->host, "amap", "k", NULL, b_mapset, &b), MAGPIE_OK);
    assert_int_equal(mp_map_all(d->host, "amap", "k", b_all_empty, &b), MAGPIE_OK);
    assert_int_equal(mp_archive_append(d->host, "aar", "k", "bob@x", "hello", 5, b_append, &b),
                     MAGPIE_OK);
    assert_int_equal(mp_archive_query(d->host, "aar", "k", NULL, b_query, &b), MAGPIE_OK);
    assert_int_equal(mp_archive_delete(d->host, "aar", "k", 0, b_ardel, &b), MAGPIE_OK);
    assert_int_equal(mp_archive_query(d->host, "aar", "k", NULL, b_query_empty, &b), MAGPIE_OK);
    /* a set with no callback still runs */
    assert_int_equal(mp_kv_set(d->host, "akv", "nocb", "z", 1, NULL, NULL), MAGPIE_OK);
    b.a.pending = 15;
    aloop_run(&b.a);
    assert_int_equal(b.seq_set, 1);
    assert_int_equal(b.seq_get1, 2);
    assert_int_equal(b.seq_del, 3);
    assert_int_equal(b.seq_get2, 4);
    assert_true(b.step_all && b.step_mapget && b.step_query && b.step_del);
    /* the callback-less set ran before close/next calls on its key */
    void *v;
    size_t n;
    for (int i = 0; i < 100; i++) {
        if (mp_kv_get_sync(d->host, "akv", "nocb", &v, &n) == MAGPIE_OK) {
            free(v);
            break;
        }
        usleep(10000);
    }
    assert_int_equal(mp_kv_get_sync(d->host, "akv", "nocb", &v, &n), MAGPIE_OK);
    free(v);
}

/* mp_kv_scan: pages of a keyval store in byte order, from after a key,
 * with their values; other stores and hosts not included. */
struct scan {
    struct aloop a;
    char keys[16][8];
    char vals[16][8];
    size_t n, pages, last;
};

static void s_page(void *ud, int rc, const mp_map_item *items, size_t n)
{
    struct scan *sc = ud;
    assert_int_equal(rc, MAGPIE_OK);
    sc->pages++;
    sc->last = n;
    for (size_t i = 0; i < n && sc->n < 16; i++, sc->n++) {
        snprintf(sc->keys[sc->n], sizeof sc->keys[0], "%s", items[i].field);
        assert_true(items[i].len < sizeof sc->vals[0]);
        memcpy(sc->vals[sc->n], items[i].data, items[i].len);
        sc->vals[sc->n][items[i].len] = '\0';
    }
    aloop_done(&sc->a);
}

static void test_kv_scan(void **state)
{
    NEED(state);
    const char *in[] = {"9", "10", "b", "a", "100", "B", "ab"};
    const char *want[] = {"10", "100", "9", "B", "a", "ab", "b"};
    for (size_t i = 0; i < 7; i++) {
        char v[8];
        snprintf(v, sizeof v, "v%s", in[i]);
        assert_int_equal(mp_kv_set_sync(d->host, "scan", in[i], v, strlen(v)), MAGPIE_OK);
    }
    assert_int_equal(mp_kv_set_sync(d->host, "scan2", "0", "x", 1), MAGPIE_OK);
    assert_int_equal(mp_kv_set_sync("other.example", "scan", "0", "x", 1), MAGPIE_OK);
    struct scan sc;
    memset(&sc, 0, sizeof sc);
    /* pages of 3 until a short one */
    const char *after = "";
    do {
        aloop_init(&sc.a);
        sc.a.pending = 1;
        assert_int_equal(mp_kv_scan(d->host, "scan", after, 3, s_page, &sc), MAGPIE_OK);
        aloop_run(&sc.a);
        after = sc.n ? sc.keys[sc.n - 1] : "";
    } while (sc.last == 3);
    assert_int_equal(sc.n, 7);
    assert_int_equal(sc.pages, 3);
    for (size_t i = 0; i < 7; i++) {
        char v[8];
        snprintf(v, sizeof v, "v%s", want[i]);
        assert_string_equal(sc.keys[i], want[i]);
        assert_string_equal(sc.vals[i], v);
    }
    /* from after a key that is not there; past the end */
    memset(&sc, 0, sizeof sc);
    aloop_init(&sc.a);
    sc.a.pending = 2;
    assert_int_equal(mp_kv_scan(d->host, "scan", "A", 100, s_page, &sc), MAGPIE_OK);
    assert_int_equal(mp_kv_scan(d->host, "scan", "b", 100, s_page, &sc), MAGPIE_OK);
    aloop_run(&sc.a);
    assert_int_equal(sc.n, 4); /* B a ab b, then nothing */
    assert_string_equal(sc.keys[0], "B");
    assert_int_equal(mp_kv_scan(d->host, "scan", "", 0, s_page, &sc), MAGPIE_ERR);
    assert_int_equal(mp_kv_scan(d->host, "scan", "", 1001, s_page, &sc), MAGPIE_ERR);
    assert_int_equal(mp_kv_scan(d->host, "scan", NULL, 10, s_page, &sc), MAGPIE_ERR);
    assert_int_equal(mp_kv_del_sync("other.example", "scan", "0"), MAGPIE_OK);
}

/* Time bounds (ts_from / ts_to, inclusive), mp_archive_append_at's own
 * timestamps, and replacing an item's data in place (a tombstone). */
struct tsr {
    struct aloop a;
    int64_t ids[3];
    int n_app, replaced, missing;
    int64_t count;
};

static void t_count(void *ud, int rc, int64_t n)
{
    struct tsr *t = ud;
    assert_int_equal(rc, MAGPIE_OK);
    t->count = n;
    aloop_done(&t->a);
}

static void t_append(void *ud, int rc, int64_t id)
{
    struct tsr *t = ud;
    assert_int_equal(rc, MAGPIE_OK);
    t->ids[t->n_app++] = id;
    aloop_done(&t->a);
}

static void t_replaced(void *ud, int rc)
{
    struct tsr *t = ud;
    assert_int_equal(rc, MAGPIE_OK);
    t->replaced = 1;
    aloop_done(&t->a);
}

static void t_missing(void *ud, int rc)
{
    struct tsr *t = ud;
    assert_int_equal(rc, MAGPIE_NOTFOUND);
    t->missing = 1;
    aloop_done(&t->a);
}

static void test_archive_ts_replace(void **state)
{
    NEED(state);
    struct tsr t;
    memset(&t, 0, sizeof t);
    aloop_init(&t.a);
    /* the caller's timestamps, in µs */
    assert_int_equal(
        mp_archive_append_at(d->host, "tsr", "room", 1000, "n1", "one", 3, t_append, &t),
        MAGPIE_OK);
    assert_int_equal(
        mp_archive_append_at(d->host, "tsr", "room", 2000, "n2", "two", 3, t_append, &t),
        MAGPIE_OK);
    assert_int_equal(
        mp_archive_append_at(d->host, "tsr", "room", 3000, "n1", "three", 5, t_append, &t),
        MAGPIE_OK);
    t.a.pending = 3;
    aloop_run(&t.a);
    assert_int_equal(t.n_app, 3);
    struct items r;
    mp_archive_filter q = {.ts_from = 2000};
    memset(&r, 0, sizeof r);
    assert_int_equal(mp_archive_query_sync(d->host, "tsr", "room", &q, collect_item, &r),
                     MAGPIE_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.ts[0], 2000);
    assert_string_equal(r.data[1], "three");
    q = (mp_archive_filter){.ts_to = 2000};
    memset(&r, 0, sizeof r);
    assert_int_equal(mp_archive_query_sync(d->host, "tsr", "room", &q, collect_item, &r),
                     MAGPIE_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.id[1], t.ids[1]);
    /* exact time: one item */
    q = (mp_archive_filter){.ts_from = 3000, .ts_to = 3000};
    memset(&r, 0, sizeof r);
    assert_int_equal(mp_archive_query_sync(d->host, "tsr", "room", &q, collect_item, &r),
                     MAGPIE_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.id[0], t.ids[2]);
    /* with and time together */
    q = (mp_archive_filter){.with = "n1", .ts_from = 1500};
    memset(&r, 0, sizeof r);
    assert_int_equal(mp_archive_query_sync(d->host, "tsr", "room", &q, collect_item, &r),
                     MAGPIE_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.data[0], "three");
    /* with_has: with contains the string (binary, case-sensitive) */
    q = (mp_archive_filter){.with_has = "1"};
    memset(&r, 0, sizeof r);
    assert_int_equal(mp_archive_query_sync(d->host, "tsr", "room", &q, collect_item, &r),
                     MAGPIE_OK);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.data[1], "three");
    q = (mp_archive_filter){.with_has = "N"};
    memset(&r, 0, sizeof r);
    assert_int_equal(mp_archive_query_sync(d->host, "tsr", "room", &q, collect_item, &r),
                     MAGPIE_OK);
    assert_int_equal(r.n, 0);
    /* counts: what a filter selects, limit ignored */
    t.count = -1;
    aloop_init(&t.a);
    assert_int_equal(mp_archive_count(d->host, "tsr", "room", NULL, t_count, &t), MAGPIE_OK);
    t.a.pending = 1;
    aloop_run(&t.a);
    assert_int_equal(t.count, 3);
    q = (mp_archive_filter){.with_has = "n", .after_id = t.ids[0], .limit = 1};
    aloop_init(&t.a);
    assert_int_equal(mp_archive_count(d->host, "tsr", "room", &q, t_count, &t), MAGPIE_OK);
    t.a.pending = 1;
    aloop_run(&t.a);
    assert_int_equal(t.count, 2);
    /* replace: data changes, id, ts and with stay; another key's id is not found */
    aloop_init(&t.a);
    assert_int_equal(
        mp_archive_replace(d->host, "tsr", "room", t.ids[1], "gone", 4, t_replaced, &t), MAGPIE_OK);
    assert_int_equal(mp_archive_replace(d->host, "tsr", "other", t.ids[1], "x", 1, t_missing, &t),
                     MAGPIE_OK);
    t.a.pending = 2;
    aloop_run(&t.a);
    assert_true(t.replaced && t.missing);
    query(d, "tsr", "room", 0, 0, NULL, 0, 0, &r);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.data[1], "gone");
    assert_int_equal(r.id[1], t.ids[1]);
    assert_int_equal(r.ts[1], 2000);
    assert_string_equal(r.with[1], "n2");
    assert_int_equal(mp_archive_replace_sync(d->host, "tsr", "room", t.ids[2], "3", 1), MAGPIE_OK);
    assert_int_equal(mp_archive_replace_sync(d->host, "tsr", "room", t.ids[2], "3", 1), MAGPIE_OK);
    assert_int_equal(mp_archive_replace_sync(d->host, "tsr", "room", t.ids[2] + 1000000, "3", 1),
                     MAGPIE_NOTFOUND);
    query(d, "tsr", "room", 0, 0, NULL, 0, 0, &r);
    assert_string_equal(r.data[2], "3");
    assert_int_equal(mp_archive_delete_sync(d->host, "tsr", "room", 0), MAGPIE_OK);
}

/* Many appends and interleaved set/get on one key from one loop: the
 * callbacks come back in issue order and the archive holds them in order. */
#define N_ORDER 500

struct order {
    struct aloop a;
    const char *host;
    int next_cb; /* index expected by the next append callback */
    int64_t last_id;
    int bad;
    int get_seen;
    int set_seen;
};

struct order_arg {
    struct order *o;
    int i;
};

static void o_append(void *ud, int rc, int64_t id)
{
    struct order_arg *oa = ud;
    struct order *o = oa->o;
    if (rc != MAGPIE_OK || oa->i != o->next_cb || id <= o->last_id)
        o->bad++;
    if (oa->i % 50 == 0) {
        /* committed when the callback runs: another connection sees it */
        struct items r;
        mp_archive_filter q = {.after_id = id - 1, .limit = 1};
        memset(&r, 0, sizeof r);
        if (mp_archive_query_sync(o->host, "ord", "q", &q, collect_item, &r) != MAGPIE_OK ||
            r.n != 1 || r.id[0] != id)
            o->bad++;
    }
    o->next_cb++;
    o->last_id = id;
    aloop_done(&o->a);
}

static void o_set(void *ud, int rc)
{
    struct order_arg *oa = ud;
    if (rc != MAGPIE_OK || oa->i + 1 <= oa->o->set_seen)
        oa->o->bad++;
    oa->o->set_seen = oa->i + 1;
    aloop_done(&oa->o->a);
}

static void o_get(void *ud, int rc, const void *data, size_t len)
{
    struct order_arg *oa = ud;
    char want[16];
    snprintf(want, sizeof want, "%d", oa->i);
    /* the get issued after set i sees value i, never an older or newer one */
    if (rc != MAGPIE_OK || len != strlen(want) || memcmp(data, want, len))
        oa->o->bad++;
    if (oa->o->set_seen != oa->i + 1)
        oa->o->bad++;
    oa->o->get_seen++;
    aloop_done(&oa->o->a);
}

static void test_async_ordering(void **state)
{
    NEED(state);
    struct order o;
    memset(&o, 0, sizeof o);
    o.host = d->host;
    struct order_arg *args = calloc(N_ORDER, sizeof *args);
    aloop_init(&o.a);
    for (int i = 0; i < N_ORDER; i++) {
        char buf[16];
        args[i].o = &o;
        args[i].i = i;
        snprintf(buf, sizeof buf, "%d", i);
        assert_int_equal(mp_archive_append(d->host, "ord", "q", i % 2 ? "w@x" : NULL, buf,
                                           strlen(buf), o_append, &args[i]),
                         MAGPIE_OK);
        if (i % 5 == 0) {
            assert_int_equal(mp_kv_set(d->host, "ordkv", "k", buf, strlen(buf), o_set, &args[i]),
                             MAGPIE_OK);
            assert_int_equal(mp_kv_get(d->host, "ordkv", "k", o_get, &args[i]), MAGPIE_OK);
            o.a.pending += 2;
        }
    }
    o.a.pending += N_ORDER;
    /* the loop's real work starts only now, so appends queue up and batch */
    aloop_run(&o.a);
    assert_int_equal(o.bad, 0);
    assert_int_equal(o.next_cb, N_ORDER);
    assert_int_equal(o.get_seen, N_ORDER / 5);

    /* stored in issue order */
    int idx = 0;
    int64_t after = 0;
    struct items r;
    do {
        query(d, "ord", "q", after, 0, NULL, 200, 0, &r);
        for (size_t k = 0; k < r.n; k++, idx++) {
            char buf[16];
            snprintf(buf, sizeof buf, "%d", idx);
            assert_string_equal(r.data[k], buf);
            assert_int_equal(r.with_null[k], idx % 2 == 0);
            after = r.id[k];
        }
    } while (r.n == 200);
    assert_int_equal(idx, N_ORDER);
    free(args);
}

/* Rounds that each start on an idle key, with a read first (even rounds:
 * single-writer routing sends it to a reader thread, and the write after it
 * must follow it there) or a write first (odd rounds: the writer thread,
 * and the reads after it too): every call completes in issue order and
 * each read sees exactly the writes issued before it. */
struct rw {
    struct aloop a;
    int seq, bad, round;
};

struct rw_arg {
    struct rw *r;
    int seq;  /* its place in the round's issue order */
    int want; /* the value a read must see; -1: none yet */
};

static void rw_check(struct rw_arg *x)
{
    if (x->seq != ++x->r->seq)
        x->r->bad++;
    aloop_done(&x->r->a);
}

static void rw_get(void *ud, int rc, const void *data, size_t len)
{
    struct rw_arg *x = ud;
    char want[16];
    snprintf(want, sizeof want, "%d", x->want);
    if (x->want < 0 ? rc != MAGPIE_NOTFOUND
                    : rc != MAGPIE_OK || len != strlen(want) || memcmp(data, want, len))
        x->r->bad++;
    rw_check(x);
}

static void rw_set(void *ud, int rc)
{
    struct rw_arg *x = ud;
    if (rc != MAGPIE_OK)
        x->r->bad++;
    rw_check(x);
}

static void test_async_read_write_rounds(void **state)
{
    NEED(state);
    for (int i = 0; i < 100; i++) {
        struct rw r;
        memset(&r, 0, sizeof r);
        aloop_init(&r.a);
        struct rw_arg x[4];
        char buf[16];
        snprintf(buf, sizeof buf, "%d", i);
        int n = 0;
        if (i % 2 == 0) {
            x[n] = (struct rw_arg){&r, n + 1, i - 1};
            assert_int_equal(mp_kv_get(d->host, "rw", "k", rw_get, &x[n]), MAGPIE_OK);
            n++;
        }
        x[n] = (struct rw_arg){&r, n + 1, 0};
        assert_int_equal(mp_kv_set(d->host, "rw", "k", buf, strlen(buf), rw_set, &x[n]), MAGPIE_OK);
        n++;
        x[n] = (struct rw_arg){&r, n + 1, i};
        assert_int_equal(mp_kv_get(d->host, "rw", "k", rw_get, &x[n]), MAGPIE_OK);
        n++;
        if (i % 2 == 1) {
            x[n] = (struct rw_arg){&r, n + 1, i};
            assert_int_equal(mp_kv_get(d->host, "rw", "k", rw_get, &x[n]), MAGPIE_OK);
            n++;
        }
        r.a.pending = n;
        aloop_run(&r.a);
        assert_int_equal(r.bad, 0);
        assert_int_equal(r.seq, n);
    }
    assert_int_equal(mp_kv_del_sync(d->host, "rw", "k"), MAGPIE_OK);
}

/* mp_storage_txn: reads and writes in one transaction, committed together
 * or not at all, alone or inside a group commit with other writes. */
struct tx {
    struct aloop *a;    /* the issuing loop, shared by a round's calls */
    const char *kv_key; /* the "idempotency key" */
    int fail;           /* fn writes, then returns MAGPIE_ERR */
    int found;          /* fn found kv_key already set */
    int64_t id;         /* the appended item, or the one kv_key names */
    int rc;             /* done's rc */
};

/* On a pool thread: the item kv_key names, or a new item and kv_key -> it. */
static int tx_fn(mp_txn *t, void *ud)
{
    struct tx *x = ud;
    x->found = 0;
    x->id = 0;
    void *v;
    size_t n;
    int rc = mp_txn_kv_get(t, "txkv", x->kv_key, &v, &n);
    if (rc == MAGPIE_OK) {
        x->found = 1;
        x->id = strtoll(v, NULL, 10);
        free(v);
        return MAGPIE_OK;
    }
    if (rc != MAGPIE_NOTFOUND)
        return MAGPIE_ERR;
    if (mp_txn_archive_append(t, "txar", "q", "with@x", "cmd", 3, &x->id) != MAGPIE_OK)
        return MAGPIE_ERR;
    char buf[32];
    int bl = snprintf(buf, sizeof buf, "%lld", (long long)x->id);
    if (mp_txn_kv_set(t, "txkv", x->kv_key, buf, (size_t)bl) != MAGPIE_OK)
        return MAGPIE_ERR;
    return x->fail ? MAGPIE_ERR : MAGPIE_OK;
}

static void tx_done(void *ud, int rc)
{
    struct tx *x = ud;
    x->rc = rc;
    aloop_done(x->a);
}

static void tx_count_item(void *ud, const mp_archive_item *it)
{
    (void)it;
    (*(size_t *)ud)++;
}

static size_t tx_count(const struct drv *d)
{
    size_t n = 0;
    assert_int_equal(mp_archive_query_sync(d->host, "txar", "q", NULL, tx_count_item, &n),
                     MAGPIE_OK);
    return n;
}

/* Issues a transaction per x[i] (in order, on the key every call shares)
 * and waits for them all. */
static void tx_run(const struct drv *d, struct tx *x, int n)
{
    struct aloop a;
    aloop_init(&a);
    for (int i = 0; i < n; i++) {
        x[i].a = &a;
        assert_int_equal(mp_storage_txn(d->host, "txar", "q", tx_fn, tx_done, &x[i]), MAGPIE_OK);
    }
    a.pending = n;
    aloop_run(&a);
}

static void test_txn(void **state)
{
    NEED(state);
    /* the same "submit" twice at once: one item, the second finds it */
    struct tx x[2] = {{.kv_key = "key1"}, {.kv_key = "key1"}};
    tx_run(d, x, 2);
    assert_int_equal(x[0].rc, MAGPIE_OK);
    assert_int_equal(x[1].rc, MAGPIE_OK);
    assert_int_equal(x[0].found, 0);
    assert_int_equal(x[1].found, 1);
    assert_true(x[0].id > 0);
    assert_int_equal(x[1].id, x[0].id);
    assert_int_equal(tx_count(d), 1);

    /* fn fails after writing: nothing of it stays, done gets MAGPIE_ERR */
    struct tx f = {.kv_key = "key2", .fail = 1};
    tx_run(d, &f, 1);
    assert_int_equal(f.rc, MAGPIE_ERR);
    void *v;
    size_t n;
    assert_int_equal(mp_kv_get_sync(d->host, "txkv", "key2", &v, &n), MAGPIE_NOTFOUND);
    assert_int_equal(tx_count(d), 1);

    /* a failing transaction between others, issued at once so that they
     * share group commits: the others commit once each (a transaction of
     * a failed group runs again alone), the failing one leaves nothing */
    for (int round = 0; round < 20; round++) {
        struct tx g[5];
        char k[5][16];
        memset(g, 0, sizeof g);
        for (int i = 0; i < 5; i++) {
            snprintf(k[i], sizeof k[i], "r%d-%d", round, i);
            g[i].kv_key = k[i];
        }
        g[2].fail = 1;
        tx_run(d, g, 5);
        for (int i = 0; i < 5; i++) {
            int rc = mp_kv_get_sync(d->host, "txkv", k[i], &v, &n);
            if (i == 2) {
                assert_int_equal(g[i].rc, MAGPIE_ERR);
                assert_int_equal(rc, MAGPIE_NOTFOUND);
                continue;
            }
            assert_int_equal(g[i].rc, MAGPIE_OK);
            assert_int_equal(g[i].found, 0);
            assert_int_equal(rc, MAGPIE_OK);
            assert_int_equal(strtoll(v, NULL, 10), g[i].id);
            free(v);
        }
        assert_int_equal(tx_count(d), 1 + 4 * (size_t)(round + 1));
    }
    assert_int_equal(mp_storage_txn(d->host, "txar", "q", NULL, tx_done, &f), MAGPIE_ERR);
    assert_int_equal(mp_archive_delete_sync(d->host, "txar", "q", 0), MAGPIE_OK);
}

/* With no loop on the calling thread, callbacks run on a pool thread. */
struct noloop {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    int on_caller;
    pthread_t caller;
    int rc;
};

static void nl_done(void *ud, int rc)
{
    struct noloop *n = ud;
    pthread_mutex_lock(&n->m);
    n->on_caller = pthread_equal(pthread_self(), n->caller);
    n->rc = rc;
    n->done = 1;
    pthread_cond_signal(&n->c);
    pthread_mutex_unlock(&n->m);
}

static void test_async_no_loop(void **state)
{
    NEED(state);
    mp_loop_bind_thread(NULL);
    struct noloop n = {
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 1, pthread_self(), -5};
    assert_int_equal(mp_kv_set(d->host, "noloop", "k", "v", 1, nl_done, &n), MAGPIE_OK);
    pthread_mutex_lock(&n.m);
    while (!n.done)
        pthread_cond_wait(&n.c, &n.m);
    pthread_mutex_unlock(&n.m);
    assert_int_equal(n.rc, MAGPIE_OK);
    assert_int_equal(n.on_caller, 0);
    void *v;
    size_t len;
    assert_int_equal(mp_kv_get_sync(d->host, "noloop", "k", &v, &len), MAGPIE_OK);
    free(v);
}

/* Several threads, each with its own loop, hammer the store at once; all
 * append to one shared key too. Each thread's items keep their order. */
#define N_THREADS    4
#define N_PER_THREAD 150

struct hammer {
    struct drv *d;
    int t;
    struct aloop a;
    atomic_int *errors;
    int next_append;
};

struct hammer_arg {
    struct hammer *h;
    int i;
};

static void h_done(void *ud, int rc)
{
    struct hammer_arg *ha = ud;
    if (rc != MAGPIE_OK)
        atomic_fetch_add(ha->h->errors, 1);
    ha->h->a.pending--;
    if (!pthread_equal(pthread_self(), ha->h->a.thread))
        atomic_fetch_add(ha->h->errors, 1);
    if (ha->h->a.pending == 0)
        mp_loop_stop(ha->h->a.loop);
}

static void h_append(void *ud, int rc, int64_t id)
{
    struct hammer_arg *ha = ud;
    (void)id;
    if (ha->i != ha->h->next_append++)
        atomic_fetch_add(ha->h->errors, 1);
    h_done(ud, rc);
}

static void h_get(void *ud, int rc, const void *data, size_t len)
{
    struct hammer_arg *ha = ud;
    char want[32];
    snprintf(want, sizeof want, "t%d-%d", ha->h->t, ha->i);
    if (rc != MAGPIE_OK || len != strlen(want) || memcmp(data, want, len))
        atomic_fetch_add(ha->h->errors, 1);
    h_done(ud, MAGPIE_OK);
}

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    struct hammer_arg *args = calloc(N_PER_THREAD, sizeof *args);
    h->a.loop = mp_loop_new();
    mp_loop_bind_thread(h->a.loop);
    h->a.thread = pthread_self();
    for (int i = 0; i < N_PER_THREAD; i++) {
        char key[32], val[32];
        args[i].h = h;
        args[i].i = i;
        snprintf(key, sizeof key, "t%d-k%d", h->t, i);
        snprintf(val, sizeof val, "t%d-%d", h->t, i);
        int rc = mp_kv_set(h->d->host, "hammer", key, val, strlen(val), h_done, &args[i]);
        rc |= mp_kv_get(h->d->host, "hammer", key, h_get, &args[i]);
        rc |= mp_map_set(h->d->host, "hammer", "shared", key, val, strlen(val), h_done, &args[i]);
        rc |= mp_archive_append(h->d->host, "hammer", "shared", NULL, val, strlen(val), h_append,
                                &args[i]);
        if (rc != MAGPIE_OK)
            atomic_fetch_add(h->errors, 1);
        h->a.pending += 4;
    }
    mp_loop_run(h->a.loop);
    mp_loop_free(h->a.loop);
    free(args);
    return NULL;
}

static void test_async_concurrent(void **state)
{
    NEED(state);
    atomic_int errors = 0;
    struct hammer h[N_THREADS];
    pthread_t tid[N_THREADS];
    memset(h, 0, sizeof h);
    for (int t = 0; t < N_THREADS; t++) {
        h[t].d = d;
        h[t].t = t;
        h[t].errors = &errors;
        assert_int_equal(pthread_create(&tid[t], NULL, hammer_main, &h[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(tid[t], NULL);
    assert_int_equal(atomic_load(&errors), 0);
    for (int t = 0; t < N_THREADS; t++)
        assert_int_equal(h[t].next_append, N_PER_THREAD);

    size_t nkeys = 0;
    assert_int_equal(mp_kv_keys_sync(d->host, "hammer", count_key, &nkeys), MAGPIE_OK);
    assert_int_equal(nkeys, N_THREADS * N_PER_THREAD);

    /* the shared archive: every thread's items, each thread's in order */
    int next[N_THREADS] = {0};
    int64_t after = 0;
    size_t total = 0;
    struct items r;
    do {
        query(d, "hammer", "shared", after, 0, NULL, 256, 0, &r);
        for (size_t k = 0; k < r.n; k++) {
            int t, i;
            assert_int_equal(sscanf(r.data[k], "t%d-%d", &t, &i), 2);
            assert_true(t >= 0 && t < N_THREADS);
            assert_int_equal(i, next[t]);
            next[t]++;
            after = r.id[k];
        }
        total += r.n;
    } while (r.n == 256);
    assert_int_equal(total, N_THREADS * N_PER_THREAD);
}

/* ---- limits, reopen, sync-only ---- */

static void never_called(void *ud, int rc)
{
    (void)ud;
    (void)rc;
    fail_msg("callback of a refused call ran");
}

static void test_limits(void **state)
{
    NEED(state);
    char key[MP_STORAGE_MAX_KEY + 2];
    memset(key, 'k', sizeof key);
    key[MP_STORAGE_MAX_KEY] = '\0';
    char field[MP_STORAGE_MAX_FIELD + 1];
    memset(field, 'f', sizeof field);
    field[MP_STORAGE_MAX_FIELD] = '\0';
    char host[MP_STORAGE_MAX_HOST + 1];
    memset(host, 'h', sizeof host);
    host[MP_STORAGE_MAX_HOST] = '\0';

    /* at the limits: accepted by every driver */
    assert_int_equal(mp_kv_set_sync(d->host, "limits", key, "v", 1), MAGPIE_OK);
    assert_int_equal(mp_map_set_sync(d->host, "limits", key, field, "v", 1), MAGPIE_OK);
    assert_int_equal(mp_kv_set_sync(host, "limits", "k", "v", 1), MAGPIE_OK);
    void *v;
    size_t n;
    assert_int_equal(mp_map_get_sync(d->host, "limits", key, field, &v, &n), MAGPIE_OK);
    free(v);
    assert_int_equal(mp_kv_del_sync(host, "limits", "k"), MAGPIE_OK);

    /* one byte over: refused before reaching the driver */
    key[MP_STORAGE_MAX_KEY] = 'k';
    key[MP_STORAGE_MAX_KEY + 1] = '\0';
    assert_int_equal(mp_kv_set_sync(d->host, "limits", key, "v", 1), MAGPIE_ERR);
    assert_int_equal(mp_kv_set(d->host, "limits", key, "v", 1, never_called, NULL), MAGPIE_ERR);
    assert_int_equal(mp_archive_append_sync(d->host, "limits", key, NULL, "v", 1, NULL),
                     MAGPIE_ERR);
    assert_int_equal(mp_kv_get_sync(NULL, "limits", "k", &v, &n), MAGPIE_ERR);
    assert_int_equal(mp_map_set(d->host, "limits", "k", NULL, "v", 1, never_called, NULL),
                     MAGPIE_ERR);
    assert_int_equal(mp_kv_set_sync(d->host, "limits", "k", NULL, 3), MAGPIE_ERR);
}

static void test_reopen(void **state)
{
    NEED(state);
    int64_t id;
    assert_int_equal(mp_kv_set_sync(d->host, "reopen", "k", "persist", 7), MAGPIE_OK);
    assert_int_equal(mp_map_set_sync(d->host, "reopen", "k", "f", "F", 1), MAGPIE_OK);
    assert_int_equal(mp_archive_append_sync(d->host, "reopen", "k", NULL, "a1", 2, &id), MAGPIE_OK);

    /* an async write still queued at close time is run, not dropped */
    mp_loop_bind_thread(NULL);
    assert_int_equal(mp_kv_set(d->host, "reopen", "late", "L", 1, NULL, NULL), MAGPIE_OK);
    mp_storage_close();
    mp_storage_close(); /* harmless twice */
    assert_int_equal(mp_kv_set_sync(d->host, "reopen", "k", "x", 1), MAGPIE_ERR);
    assert_int_equal(mp_kv_set(d->host, "reopen", "k", "x", 1, never_called, NULL), MAGPIE_ERR);

    open_or_fail(d); /* migrations are a no-op now */
    char err[128];
    assert_int_equal(mp_storage_open(&d->cfg, err, sizeof err), MAGPIE_ERR); /* twice */
    void *v;
    size_t n;
    assert_int_equal(mp_kv_get_sync(d->host, "reopen", "k", &v, &n), MAGPIE_OK);
    assert_int_equal(n, 7);
    assert_memory_equal(v, "persist", 7);
    free(v);
    assert_int_equal(mp_kv_get_sync(d->host, "reopen", "late", &v, &n), MAGPIE_OK);
    free(v);
    assert_int_equal(mp_map_get_sync(d->host, "reopen", "k", "f", &v, &n), MAGPIE_OK);
    free(v);
    struct items r;
    query(d, "reopen", "k", 0, 0, NULL, 0, 0, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.id[0], id);
    /* ids keep increasing across a restart */
    int64_t id2;
    assert_int_equal(mp_archive_append_sync(d->host, "reopen", "k", NULL, "a2", 2, &id2),
                     MAGPIE_OK);
    assert_true(id2 > id);

    if (!strcmp(d->name, "sqlite")) {
        /* WAL is a property of the file: check it from outside */
        sqlite3 *db;
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_open_v2(d->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
        sqlite3_finalize(s);
        sqlite3_close(db);
    }
}

static void test_sync_only(void **state)
{
    NEED(state);
    mp_storage_close();
    char err[256] = "";
    assert_int_equal(mp_storage_open_sync_only(&d->cfg, err, sizeof err), MAGPIE_OK);
    assert_int_equal(mp_kv_set(d->host, "synconly", "k", "x", 1, never_called, NULL), MAGPIE_ERR);
    assert_int_equal(mp_kv_set_sync(d->host, "synconly", "k", "x", 1), MAGPIE_OK);
    void *v;
    size_t n;
    assert_int_equal(mp_kv_get_sync(d->host, "synconly", "k", &v, &n), MAGPIE_OK);
    free(v);
    mp_storage_close();
    open_or_fail(d);
}

static void test_bad_config(void **state)
{
    NEED(state);
    char err[256] = "";
    struct mp_config c = d->cfg;
    c.storage_driver = "oracle";
    assert_int_equal(mp_storage_open(&c, err, sizeof err), MAGPIE_ERR);
    assert_non_null(strstr(err, "oracle"));
}

/* MySQL only: kill every connection the test user holds; the next sync
 * and async calls must reconnect transparently. */
static void kill_own_connections(struct drv *d)
{
    MYSQL *m = mysql_init(NULL);
    const char *host = d->cfg.mysql_socket ? NULL : d->cfg.mysql_host;
    assert_non_null(mysql_real_connect(m, host, d->cfg.mysql_user, d->cfg.mysql_password,
                                       d->cfg.mysql_database, (unsigned)d->cfg.mysql_port,
                                       d->cfg.mysql_socket, 0));
    assert_int_equal(mysql_query(m, "SELECT id FROM information_schema.processlist"
                                    " WHERE user = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"
                                    " AND id <> CONNECTION_ID()"),
                     0);
    MYSQL_RES *res = mysql_store_result(m);
    assert_non_null(res);
    MYSQL_ROW row;
    int killed = 0;
    while ((row = mysql_fetch_row(res))) {
        char q[64];
        snprintf(q, sizeof q, "KILL CONNECTION %s", row[0]);
        if (mysql_query(m, q) == 0)
            killed++;
    }
    mysql_free_result(res);
    mysql_close(m);
    assert_true(killed >= 4); /* 3 pool threads + at least one sync connection */
}

struct reco {
    struct aloop a;
    int ok;
};

static void reco_append(void *ud, int rc, int64_t id)
{
    struct reco *r = ud;
    if (rc == MAGPIE_OK && id > 0)
        r->ok++;
    aloop_done(&r->a);
}

static void test_mysql_reconnect(void **state)
{
    NEED(state);
    if (strcmp(d->name, "mysql")) {
        print_message("[  SKIP    ] reconnect test is MySQL only\n");
        skip();
    }
    assert_int_equal(mp_kv_set_sync(d->host, "reco", "k", "before", 6), MAGPIE_OK);
    kill_own_connections(d);
    usleep(100000);
    void *v;
    size_t n;
    assert_int_equal(mp_kv_get_sync(d->host, "reco", "k", &v, &n), MAGPIE_OK);
    free(v);
    struct reco r;
    memset(&r, 0, sizeof r);
    aloop_init(&r.a);
    for (int i = 0; i < 30; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i); /* spread over all pool threads */
        assert_int_equal(mp_archive_append(d->host, "reco", key, NULL, "x", 1, reco_append, &r),
                         MAGPIE_OK);
    }
    r.a.pending = 30;
    aloop_run(&r.a);
    assert_int_equal(r.ok, 30);
}

#define SUITE                                                                                      \
    cmocka_unit_test(test_kv_basic), cmocka_unit_test(test_kv_binary),                             \
        cmocka_unit_test(test_kv_keys_order), cmocka_unit_test(test_map_sync),                     \
        cmocka_unit_test(test_archive_sync), cmocka_unit_test(test_async_basic),                   \
        cmocka_unit_test(test_archive_ts_replace), cmocka_unit_test(test_kv_scan),                 \
        cmocka_unit_test(test_async_ordering), cmocka_unit_test(test_async_read_write_rounds),     \
        cmocka_unit_test(test_async_no_loop), cmocka_unit_test(test_async_concurrent),             \
        cmocka_unit_test(test_txn), cmocka_unit_test(test_limits), cmocka_unit_test(test_reopen),  \
        cmocka_unit_test(test_sync_only), cmocka_unit_test(test_bad_config),                       \
        cmocka_unit_test(test_mysql_reconnect)

int main(void)
{
    mp_log_setup(getenv("MAGPIE_TEST_LOG") ? getenv("MAGPIE_TEST_LOG") : "error", NULL);
    const struct CMUnitTest tests[] = {SUITE};
    int failed = 0;
    failed += cmocka_run_group_tests_name("storage/sqlite", tests, setup_sqlite, teardown_sqlite);
    failed += cmocka_run_group_tests_name("storage/mysql", tests, setup_mysql, teardown_mysql);
    return failed ? 1 : 0;
}
