/* test_pressure.c - delivery mechanisms: backpressure primitives
 * (pressure.c), the bounded cross-thread loop queue (loop.c) and the
 * accounting of one stanza handed to several recipients (fanout.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "core/fanout.h"
#include "conf/config.h"

static int woken;

static void wake(void *arg)
{
    (*(int *)arg)++;
}

static void wait_refused_when_not_congested(void **state)
{
    (void)state;
    struct mp_waitq *q = mp_waitq_new();
    int n = 0;
    assert_int_equal(mp_waitq_wait(q, wake, &n), MAGPIE_AGAIN);
    mp_waitq_set(q, 0);
    assert_int_equal(n, 0);
    mp_waitq_unref(q);
}

static void clearing_wakes_every_waiter_once(void **state)
{
    (void)state;
    struct mp_waitq *q = mp_waitq_new();
    int a = 0, b = 0;
    mp_waitq_set(q, 1);
    assert_true(mp_waitq_congested(q));
    assert_int_equal(mp_waitq_wait(q, wake, &a), MAGPIE_OK);
    assert_int_equal(mp_waitq_wait(q, wake, &b), MAGPIE_OK);
    mp_waitq_set(q, 1); /* marking again wakes nobody */
    assert_int_equal(a + b, 0);
    mp_waitq_set(q, 0);
    assert_int_equal(a, 1);
    assert_int_equal(b, 1);
    mp_waitq_set(q, 0); /* already clear: nobody is woken twice */
    assert_int_equal(a + b, 2);
    mp_waitq_unref(q);
}

static void last_reference_wakes_waiters(void **state)
{
    (void)state;
    struct mp_waitq *q = mp_waitq_new();
    int a = 0;
    mp_waitq_set(q, 1);
    assert_int_equal(mp_waitq_wait(q, wake, &a), MAGPIE_OK);
    mp_waitq_unref(q); /* the owner went away: the waiter must not hang */
    assert_int_equal(a, 1);
}

static void notes_only_while_collecting_and_only_congested(void **state)
{
    (void)state;
    struct mp_waitq *q = mp_waitq_new(), *r = mp_waitq_new(), *out[8];
    mp_waitq_set(q, 1);
    mp_pressure_note(q); /* not collecting: ignored */
    mp_pressure_begin();
    assert_int_equal(mp_pressure_take(out, 8), 0);
    mp_pressure_begin();
    mp_pressure_note(r); /* not congested: ignored */
    mp_pressure_note(q);
    mp_pressure_note(q); /* once per queue */
    size_t n = mp_pressure_take(out, 8);
    assert_int_equal(n, 1);
    assert_ptr_equal(out[0], q);
    /* the note holds a reference: q survives its owner's unref */
    mp_waitq_unref(q);
    assert_true(mp_waitq_congested(out[0]));
    mp_waitq_unref(out[0]);
    mp_waitq_unref(r);
}

/* ---- the loop queue ---- */

struct ctx {
    mp_loop *loop;
    int ran;
};

static void job(void *arg)
{
    ((struct ctx *)arg)->ran++;
}

static void stop_job(void *arg)
{
    mp_loop_stop(((struct ctx *)arg)->loop);
}

static void *run_loop(void *arg)
{
    mp_loop_run(((struct ctx *)arg)->loop);
    return NULL;
}

static void loop_queue_over_bound_pauses_then_releases(void **state)
{
    (void)state;
    struct ctx c = {mp_loop_new(), 0};
    mp_loop_set_bound(c.loop, 64);
    struct mp_waitq *out[8];
    /* a sender posts 100 calls to a loop that is not running yet */
    mp_pressure_begin();
    for (int i = 0; i < 100; i++)
        assert_int_equal(mp_loop_post(c.loop, job, &c), MAGPIE_OK);
    assert_int_equal(mp_loop_pending(c.loop), 100);
    size_t n = mp_pressure_take(out, 8);
    assert_int_equal(n, 1); /* the loop's queue was noted as full */
    woken = 0;
    assert_int_equal(mp_waitq_wait(out[0], wake, &woken), MAGPIE_OK);
    /* nothing was dropped: every call runs, and the sender is woken */
    mp_loop_post(c.loop, stop_job, &c);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_loop, &c), 0);
    pthread_join(t, NULL);
    assert_int_equal(c.ran, 100);
    assert_int_equal(woken, 1);
    assert_false(mp_waitq_congested(out[0]));
    mp_waitq_unref(out[0]);
    mp_loop_free(c.loop);
}

static void loop_queue_under_bound_notes_nothing(void **state)
{
    (void)state;
    struct ctx c = {mp_loop_new(), 0};
    mp_loop_set_bound(c.loop, 64);
    struct mp_waitq *out[8];
    mp_pressure_begin();
    for (int i = 0; i < 64; i++)
        mp_loop_post(c.loop, job, &c);
    assert_int_equal(mp_pressure_take(out, 8), 0);
    mp_loop_free(c.loop); /* runs what is queued */
    assert_int_equal(c.ran, 64);
}

/* ---- fan-out ---- */

static int undeliverable_runs;
static mp_stanza *undeliverable_got;

static void undeliverable(mp_stanza *st)
{
    undeliverable_runs++;
    undeliverable_got = st;
    mp_stanza_unref(st);
}

static void fanout_all_failed_is_undeliverable_once(void **state)
{
    (void)state;
    undeliverable_runs = 0;
    mp_stanza *st = mp_stanza_new("message", MP_NS_CLIENT);
    struct mp_fanout *fo = mp_fanout_new(st, 3, undeliverable);
    mp_fanout_done(fo, 0);
    mp_fanout_done(fo, 0);
    assert_int_equal(undeliverable_runs, 0); /* not before the last attempt */
    mp_fanout_done(fo, 0);
    assert_int_equal(undeliverable_runs, 1);
    assert_ptr_equal(undeliverable_got, st);
    mp_stanza_unref(st); /* the caller's own reference; ASan checks the count */
}

static void fanout_one_delivered_is_not_undeliverable(void **state)
{
    (void)state;
    undeliverable_runs = 0;
    for (int which = 0; which < 3; which++) {
        mp_stanza *st = mp_stanza_new("message", MP_NS_CLIENT);
        struct mp_fanout *fo = mp_fanout_new(st, 3, undeliverable);
        for (int i = 0; i < 3; i++)
            mp_fanout_done(fo, i == which);
        mp_stanza_unref(st);
    }
    assert_int_equal(undeliverable_runs, 0);
}

struct fanout_race {
    struct mp_fanout *fo;
    int delivered;
};

static void *fanout_thread(void *arg)
{
    struct fanout_race *r = arg;
    mp_fanout_done(r->fo, r->delivered);
    return NULL;
}

static void fanout_attempts_on_many_threads(void **state)
{
    (void)state;
    enum { N = 8 };
    for (int round = 0; round < 200; round++) {
        undeliverable_runs = 0;
        int any = round % 2; /* odd rounds: one attempt succeeds */
        mp_stanza *st = mp_stanza_new("message", MP_NS_CLIENT);
        struct mp_fanout *fo = mp_fanout_new(st, N, undeliverable);
        pthread_t t[N];
        struct fanout_race r[N];
        for (int i = 0; i < N; i++) {
            r[i] = (struct fanout_race){fo, any && i == round % N};
            assert_int_equal(pthread_create(&t[i], NULL, fanout_thread, &r[i]), 0);
        }
        for (int i = 0; i < N; i++)
            pthread_join(t[i], NULL);
        assert_int_equal(undeliverable_runs, any ? 0 : 1);
        mp_stanza_unref(st);
    }
}

/* ---- end-of-turn hooks ---- */

struct turn {
    mp_loop *loop;
    char log[32];
    struct mp_turn_hook a, b, c;
    struct event *other;
    int b_runs;
};
static struct turn *tt;

static void note(char ch)
{
    size_t n = strlen(tt->log);
    assert_true(n + 1 < sizeof tt->log);
    tt->log[n] = ch;
}

static void hook_a(struct mp_turn_hook *h)
{
    assert_ptr_equal(h, &tt->a);
    note('A');
}

static void hook_b(struct mp_turn_hook *h)
{
    note('B');
    if (++tt->b_runs == 1)
        mp_loop_at_turn_end(tt->loop, h); /* once more, same turn */
    else
        mp_loop_stop(tt->loop);
}

static void hook_c(struct mp_turn_hook *h)
{
    (void)h;
    note('C');
}

static void job1(void *arg)
{
    (void)arg;
    note('1');
    mp_loop_at_turn_end(tt->loop, &tt->a);
}

static void job2(void *arg)
{
    (void)arg;
    note('2');
    mp_loop_at_turn_end(tt->loop, &tt->b);
    mp_loop_at_turn_end(tt->loop, &tt->a); /* queued already: no-op */
    mp_loop_at_turn_end(tt->loop, &tt->c);
}

static void job3(void *arg)
{
    (void)arg;
    note('3');
    mp_turn_hook_cancel(&tt->c);
}

static void other_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    note('E');
}

/* Hooks run once each, in queueing order, after the callbacks already due
 * when the first was queued; a hook queued again runs again in the same
 * turn; a cancelled one does not run. */
static void turn_end_hooks_run_after_the_turn(void **state)
{
    (void)state;
    struct turn t;
    memset(&t, 0, sizeof t);
    tt = &t;
    t.loop = mp_loop_new();
    t.a.fn = hook_a;
    t.b.fn = hook_b;
    t.c.fn = hook_c;
    t.other = event_new(mp_loop_base(t.loop), -1, 0, other_cb, NULL);
    mp_loop_post(t.loop, job1, NULL);
    mp_loop_post(t.loop, job2, NULL);
    mp_loop_post(t.loop, job3, NULL);
    event_active(t.other, 0, 0); /* due after the posted calls */
    mp_loop_run(t.loop);
    assert_string_equal(t.log, "123EABB");
    assert_null(t.a.next);
    assert_null(t.c.next);
    event_free(t.other);
    mp_loop_free(t.loop);
    mp_loop_bind_thread(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wait_refused_when_not_congested),
        cmocka_unit_test(clearing_wakes_every_waiter_once),
        cmocka_unit_test(last_reference_wakes_waiters),
        cmocka_unit_test(notes_only_while_collecting_and_only_congested),
        cmocka_unit_test(loop_queue_over_bound_pauses_then_releases),
        cmocka_unit_test(loop_queue_under_bound_notes_nothing),
        cmocka_unit_test(turn_end_hooks_run_after_the_turn),
        cmocka_unit_test(fanout_all_failed_is_undeliverable_once),
        cmocka_unit_test(fanout_one_delivered_is_not_undeliverable),
        cmocka_unit_test(fanout_attempts_on_many_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
