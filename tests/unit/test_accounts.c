/* test_accounts.c - user accounts on a temporary SQLite store: add, exists,
 * passwd, del, list, and the asynchronous credential lookup used by SASL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "conf/config.h"
#include "auth/accounts.h"
#include "storage/storage_driver.h"

#define HOST "example.org"

static char dir[64];
static char db[128];

static int setup(void **state)
{
    (void)state;
    struct mp_config cfg;
    char err[256];
    snprintf(dir, sizeof dir, "/tmp/magpie-accounts-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(db, sizeof db, "%s/test.db", dir);
    memset(&cfg, 0, sizeof cfg);
    cfg.storage_driver = "sqlite";
    cfg.sqlite_path = db;
    cfg.state_dir = dir;
    cfg.storage_threads = 2;
    if (mp_storage_open(&cfg, err, sizeof err) != MAGPIE_OK) {
        fprintf(stderr, "storage: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[160];
    mp_storage_close();
    const char *sfx[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", db, sfx[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

/* Checks that password verifies against stored credentials through PLAIN. */
static int password_ok(const struct mp_credentials *c, const char *user, const char *password)
{
    struct mp_sasl_cb cb = {.tls = 1};
    char msg[256];
    size_t ul = strlen(user), pl = strlen(password);
    msg[0] = '\0';
    memcpy(msg + 1, user, ul);
    msg[1 + ul] = '\0';
    memcpy(msg + 2 + ul, password, pl);
    unsigned char *out;
    size_t out_len;
    mp_sasl *s = mp_sasl_new("PLAIN", &cb);
    assert_int_equal(mp_sasl_step(s, (unsigned char *)msg, 2 + ul + pl, &out, &out_len),
                     MP_SASL_NEED_CREDS);
    enum mp_sasl_status st = mp_sasl_set_credentials(s, c, &out, &out_len);
    free(out);
    if (st == MP_SASL_NEED_DERIVE) { /* the key derivation, inline */
        struct mp_sasl_derive *d = mp_sasl_take_derive(s);
        mp_sasl_derive_run(d);
        st = mp_sasl_derived(s, d, &out, &out_len);
        mp_sasl_derive_free(d);
    }
    mp_sasl_free(s);
    return st == MP_SASL_SUCCESS;
}

static void collect(void *ud, const char *user)
{
    char *buf = ud;
    strcat(buf, user);
    strcat(buf, ";");
}

static void test_sync_lifecycle(void **state)
{
    (void)state;
    struct mp_credentials c;
    char list[256] = "";

    assert_int_equal(mp_account_exists_sync(HOST, "alice"), MAGPIE_NOTFOUND);
    assert_int_equal(mp_account_add_sync(HOST, "Alice", "wonderland", 0), MAGPIE_OK);
    assert_int_equal(mp_account_exists_sync(HOST, "alice"), MAGPIE_OK);
    assert_int_equal(mp_account_exists_sync(HOST, "ALICE"), MAGPIE_OK);
    assert_int_equal(mp_account_exists_sync("other.org", "alice"), MAGPIE_NOTFOUND);
    assert_int_equal(mp_account_add_sync(HOST, "alice", "other", 0), MAGPIE_AGAIN);

    assert_int_equal(mp_account_get_credentials_sync(HOST, "alice", &c), MAGPIE_OK);
    assert_int_equal(c.iterations, MP_SCRAM_DEFAULT_ITERATIONS);
    assert_true(password_ok(&c, "alice", "wonderland")); /* AGAIN left it unchanged */
    assert_false(password_ok(&c, "alice", "other"));

    /* stored value is the text encoding, keyed by the nodeprep'd name */
    void *data;
    size_t len;
    assert_int_equal(mp_kv_get_sync(HOST, MP_ACCOUNTS_STORE, "alice", &data, &len), MAGPIE_OK);
    assert_memory_equal(data, "v1 4096 ", 8);
    assert_null(strstr(data, "wonderland"));
    free(data);

    assert_int_equal(mp_account_passwd_sync(HOST, "alice", "looking-glass", 5000), MAGPIE_OK);
    assert_int_equal(mp_account_get_credentials_sync(HOST, "alice", &c), MAGPIE_OK);
    assert_int_equal(c.iterations, 5000);
    assert_true(password_ok(&c, "alice", "looking-glass"));
    assert_false(password_ok(&c, "alice", "wonderland"));
    assert_int_equal(mp_account_passwd_sync(HOST, "nobody", "x", 0), MAGPIE_NOTFOUND);

    assert_int_equal(mp_account_add_sync(HOST, "bob", "builder", 4096), MAGPIE_OK);
    assert_int_equal(mp_account_list_sync(HOST, collect, list), MAGPIE_OK);
    assert_string_equal(list, "alice;bob;");

    /* invalid names and passwords */
    assert_int_equal(mp_account_add_sync(HOST, "bad@name", "x", 0), MAGPIE_ERR);
    assert_int_equal(mp_account_add_sync(HOST, "", "x", 0), MAGPIE_ERR);
    assert_int_equal(mp_account_add_sync(HOST, "carol", "", 0), MAGPIE_ERR);
    assert_int_equal(mp_account_add_sync(HOST, "carol", "a\x01", 0), MAGPIE_ERR);
    assert_int_equal(mp_account_exists_sync(HOST, "carol"), MAGPIE_NOTFOUND);
    assert_int_equal(mp_account_exists_sync(HOST, "bad name"), MAGPIE_ERR);

    assert_int_equal(mp_account_del_sync(HOST, "BOB"), MAGPIE_OK);
    assert_int_equal(mp_account_del_sync(HOST, "bob"), MAGPIE_NOTFOUND);
    assert_int_equal(mp_account_exists_sync(HOST, "bob"), MAGPIE_NOTFOUND);

    /* a corrupt stored value is an error, not a crash */
    assert_int_equal(mp_kv_set_sync(HOST, MP_ACCOUNTS_STORE, "broken", "v1 junk", 7), MAGPIE_OK);
    assert_int_equal(mp_account_get_credentials_sync(HOST, "broken", &c), MAGPIE_ERR);
}

/* ---- async, on a loop ---- */

struct async_res {
    mp_loop *loop;
    int calls, rc;
    int pw_ok;
};

static void on_creds(void *ud, int rc, const struct mp_credentials *c)
{
    struct async_res *r = ud;
    r->calls++;
    r->rc = rc;
    assert_true(mp_loop_current() == r->loop); /* called back on our loop */
    if (rc == MAGPIE_OK) {
        assert_non_null(c);
        r->pw_ok = password_ok(c, "dave", "secret");
    } else {
        assert_null(c);
    }
    mp_loop_stop(r->loop);
}

static void on_exists(void *ud, int rc)
{
    struct async_res *r = ud;
    r->calls++;
    r->rc = rc;
    mp_loop_stop(r->loop);
}

/* Starts one lookup (credentials, or existence if exists) on a fresh loop, runs
 * the loop until the callback stops it, and returns the callback's result. */
static struct async_res run_async(const char *user, int exists)
{
    struct async_res r;
    memset(&r, 0, sizeof r);
    r.loop = mp_loop_new();
    mp_loop_bind_thread(r.loop);
    int rc = exists ? mp_account_exists(HOST, user, on_exists, &r)
                    : mp_account_get_credentials(HOST, user, on_creds, &r);
    assert_int_equal(rc, MAGPIE_OK);
    mp_loop_run(r.loop);
    mp_loop_bind_thread(NULL);
    mp_loop_free(r.loop);
    r.loop = NULL;
    return r;
}

static void test_async(void **state)
{
    (void)state;
    struct async_res r;
    assert_int_equal(mp_account_add_sync(HOST, "dave", "secret", 0), MAGPIE_OK);

    r = run_async("Dave", 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, MAGPIE_OK);
    assert_true(r.pw_ok);
    r = run_async("erin", 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, MAGPIE_NOTFOUND);
    r = run_async("broken", 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, MAGPIE_ERR);
    r = run_async("dave", 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, MAGPIE_OK);
    r = run_async("erin", 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, MAGPIE_NOTFOUND);

    /* invalid username: refused at once, no callback */
    memset(&r, 0, sizeof r);
    assert_int_equal(mp_account_get_credentials(HOST, "a b", on_creds, &r), MAGPIE_ERR);
    assert_int_equal(mp_account_exists(HOST, "x@y", on_exists, &r), MAGPIE_ERR);
    assert_int_equal(r.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_lifecycle),
        cmocka_unit_test(test_async),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
