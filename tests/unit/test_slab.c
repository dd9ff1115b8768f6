/* test_slab.c - the per-thread slab pool (base/slab.c) that keeps expat
 * parsers out of the main heap: size classes, reuse, slabs given back when
 * they empty, frees from another thread. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "base/base.h"

static void sizes_cover_requests(void **state)
{
    (void)state;
    assert_int_equal(mp_slab_size(1), 16);
    assert_int_equal(mp_slab_size(16), 16);
    assert_int_equal(mp_slab_size(17), 32);
    assert_int_equal(mp_slab_size(128), 128);
    assert_int_equal(mp_slab_size(129), 160);
    assert_int_equal(mp_slab_size(1040), 1280);
    assert_int_equal(mp_slab_size(MP_SLAB_MAX), MP_SLAB_MAX);
    for (size_t n = 1; n <= MP_SLAB_MAX; n += 7) {
        size_t c = mp_slab_size(n);
        assert_true(c >= n);
        assert_true(c - n <= n / 4 + 16); /* at most a quarter wasted */
    }
    assert_null(mp_slab_alloc(MP_SLAB_MAX + 1));
}

static void blocks_are_distinct_aligned_and_writable(void **state)
{
    (void)state;
    enum { N = 300 };
    static unsigned char *b[N];
    for (int i = 0; i < N; i++) {
        size_t n = 1 + (size_t)(i * 53) % 5000;
        b[i] = mp_slab_alloc(n);
        assert_non_null(b[i]);
        assert_int_equal((uintptr_t)b[i] % 16, 0);
        memset(b[i], i & 0xff, n);
    }
    for (int i = 0; i < N; i++) {
        size_t n = 1 + (size_t)(i * 53) % 5000;
        for (size_t k = 0; k < n; k++)
            assert_int_equal(b[i][k], i & 0xff); /* no overlap */
        mp_slab_free(b[i]);
    }
}

/* Emptied slabs go back (one spare per class is kept): what idle streams
 * rely on for their memory to leave the process. */
static void empty_slabs_are_unmapped(void **state)
{
    (void)state;
    size_t base = mp_slab_mapped();
    enum { N = 2000 };
    static void *b[N];
    for (int i = 0; i < N; i++)
        b[i] = mp_slab_alloc(1000); /* ~2 MB: about 30 slabs of one class */
    assert_true(mp_slab_mapped() >= base + (size_t)N * 1000);
    for (int i = 0; i < N; i++)
        mp_slab_free(b[i]);
    assert_true(mp_slab_mapped() <= base + 64 * 1024);
    /* and the freed blocks are reused */
    void *again = mp_slab_alloc(1000);
    assert_true(mp_slab_mapped() <= base + 64 * 1024);
    mp_slab_free(again);
}

static void *alloc_in_thread(void *arg)
{
    void **out = arg;
    for (int i = 0; i < 100; i++)
        out[i] = mp_slab_alloc(200);
    return NULL;
}

static void free_from_another_thread(void **state)
{
    (void)state;
    void *b[100];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, alloc_in_thread, b), 0);
    pthread_join(t, NULL);
    size_t before = mp_slab_mapped();
    for (int i = 0; i < 100; i++) {
        assert_non_null(b[i]);
        mp_slab_free(b[i]); /* into the other thread's pool */
    }
    assert_true(mp_slab_mapped() <= before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sizes_cover_requests),
        cmocka_unit_test(blocks_are_distinct_aligned_and_writable),
        cmocka_unit_test(empty_slabs_are_unmapped),
        cmocka_unit_test(free_from_another_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
