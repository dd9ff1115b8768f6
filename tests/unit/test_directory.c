/* test_directory.c - the local session directory (directory.c) and the
 * per-worker id map (table.c) the router finds sessions in. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "base/table.h"
#include "conf/config.h"
#include "core/directory.h"

static mp_jid jid(const char *s)
{
    mp_jid j;
    assert_int_equal(mp_jid_parse(&j, s), MAGPIE_OK);
    return j;
}

static int setup(void **state)
{
    (void)state;
    return mp_directory_local_init();
}

static int teardown(void **state)
{
    (void)state;
    mp_directory->free();
    return 0;
}

static void bind_lookup_unbind(void **state)
{
    (void)state;
    mp_jid a = jid("alice@example.org/phone"), b = jid("alice@example.org/laptop");
    struct mp_sref old;
    assert_int_equal(mp_directory->bind(&a, (struct mp_sref){1, 0, NULL}, &old), MAGPIE_OK);
    assert_int_equal(mp_directory->bind(&b, (struct mp_sref){2, 1, NULL}, &old), MAGPIE_OK);
    assert_int_equal(mp_directory->count(), 2);

    struct mp_sref who;
    assert_int_equal(mp_directory->lookup_full(&b, &who), MAGPIE_OK);
    assert_true(who.id == 2 && who.worker == 1 && who.outq == NULL);

    /* bound resources are unavailable until presence */
    struct mp_dir_res r[4];
    assert_int_equal(mp_directory->lookup_bare("alice@example.org", r, 4), 2);
    assert_false(r[0].available || r[1].available);
    int was = -1;
    assert_int_equal(mp_directory->set_presence(&a, 1, 1, 5, &was), MAGPIE_OK);
    assert_int_equal(was, 0);
    assert_int_equal(mp_directory->set_presence(&a, 99, 1, 5, &was), MAGPIE_NOTFOUND);
    /* a lookup with too little room says how much it needs */
    assert_int_equal(mp_directory->lookup_bare("alice@example.org", r, 1), 2);
    assert_int_equal(mp_directory->lookup_bare("alice@example.org", r, 4), 2);
    int seen = 0;
    for (int i = 0; i < 2; i++)
        if (r[i].who.id == 1) {
            assert_true(r[i].available && r[i].priority == 5);
            seen++;
        }
    assert_int_equal(seen, 1);

    /* a second bind of the same full JID replaces the first */
    assert_int_equal(mp_directory->bind(&a, (struct mp_sref){3, 1, NULL}, &old), MAGPIE_AGAIN);
    assert_true(old.id == 1 && old.worker == 0);
    assert_int_equal(mp_directory->count(), 2);
    /* ... and the replaced session's late unbind leaves its successor */
    assert_int_equal(mp_directory->unbind(&a, 1, &was), MAGPIE_NOTFOUND);
    assert_int_equal(mp_directory->lookup_full(&a, &who), MAGPIE_OK);
    assert_int_equal(who.id, 3);
    assert_int_equal(mp_directory->unbind(&a, 3, &was), MAGPIE_OK);
    assert_int_equal(was, 0); /* the new entry started unavailable */
    assert_int_equal(mp_directory->unbind(&b, 2, &was), MAGPIE_OK);
    assert_int_equal(mp_directory->count(), 0);
    assert_int_equal(mp_directory->lookup_bare("alice@example.org", r, 4), 0);
    assert_int_equal(mp_directory->lookup_full(&b, &who), MAGPIE_NOTFOUND);
    mp_jid_free(&a);
    mp_jid_free(&b);
}

/* The output waitq is kept by the directory and handed out, referenced,
 * only while it is congested. */
static void congested_outq_is_returned(void **state)
{
    (void)state;
    mp_jid a = jid("bob@example.org/x");
    struct mp_waitq *q = mp_waitq_new();
    struct mp_sref old, who;
    assert_int_equal(mp_directory->bind(&a, (struct mp_sref){7, 0, q}, &old), MAGPIE_OK);
    assert_int_equal(mp_directory->lookup_full(&a, &who), MAGPIE_OK);
    assert_null(who.outq);
    mp_waitq_set(q, 1);
    assert_int_equal(mp_directory->lookup_full(&a, &who), MAGPIE_OK);
    assert_ptr_equal(who.outq, q);
    mp_waitq_unref(who.outq);
    mp_waitq_set(q, 0);
    mp_waitq_unref(q); /* the directory still holds one */
    int was;
    assert_int_equal(mp_directory->unbind(&a, 7, &was), MAGPIE_OK);
    mp_jid_free(&a);
}

struct thr {
    int n;
};

/* Binds, looks up and unbinds from several threads at once (shards). */
static void *churn(void *arg)
{
    struct thr *t = arg;
    char s[64];
    for (int i = 0; i < 2000; i++) {
        snprintf(s, sizeof s, "u%d@example.org/r%d", i % 50, t->n);
        mp_jid j;
        if (mp_jid_parse(&j, s) != MAGPIE_OK)
            abort();
        uint64_t id = (uint64_t)t->n * 100000 + (uint64_t)i + 1;
        struct mp_sref old, who;
        mp_directory->bind(&j, (struct mp_sref){id, t->n, NULL}, &old);
        if (mp_directory->lookup_full(&j, &who) != MAGPIE_OK || who.id != id)
            abort();
        int was;
        if (mp_directory->unbind(&j, id, &was) != MAGPIE_OK)
            abort();
        mp_jid_free(&j);
    }
    return NULL;
}

static void concurrent_binds(void **state)
{
    (void)state;
    pthread_t th[4];
    struct thr t[4];
    for (int i = 0; i < 4; i++) {
        t[i].n = i;
        pthread_create(&th[i], NULL, churn, &t[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(mp_directory->count(), 0);
}

static void idmap_put_get_del(void **state)
{
    (void)state;
    mp_idmap *m = mp_idmap_new();
    enum { N = 5000 };
    static int vals[N];
    for (uint64_t i = 1; i <= N; i++)
        assert_null(mp_idmap_put(m, i * 7, &vals[i - 1]));
    assert_int_equal(mp_idmap_count(m), N);
    for (uint64_t i = 1; i <= N; i++)
        assert_ptr_equal(mp_idmap_get(m, i * 7), &vals[i - 1]);
    assert_null(mp_idmap_get(m, 3));
    /* delete every other one; the rest stay reachable (backward shift) */
    for (uint64_t i = 1; i <= N; i += 2)
        assert_ptr_equal(mp_idmap_del(m, i * 7), &vals[i - 1]);
    assert_null(mp_idmap_del(m, 7));
    for (uint64_t i = 1; i <= N; i++)
        assert_true(mp_idmap_get(m, i * 7) == (i % 2 ? NULL : (void *)&vals[i - 1]));
    assert_int_equal(mp_idmap_count(m), N / 2);
    mp_idmap_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(bind_lookup_unbind, setup, teardown),
        cmocka_unit_test_setup_teardown(congested_outq_is_returned, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_binds, setup, teardown),
        cmocka_unit_test(idmap_put_get_del),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
