/* test_authguard.c - failed-login throttling (delays, window, eviction,
 * addresses, thread safety) and the work pool behind PBKDF2 (completions on
 * the submitter's loop, bounded queue, cancellation). Whether a failure
 * counts at all (a channel-binding mismatch does not) is mp_sasl's call:
 * see test_sasl.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/base.h"
#include "auth/authguard.h"

/* ---- delay arithmetic ---- */

static void test_delay(void **state)
{
    (void)state;
    /* 3 free failures, then 1, 2, 4, ... capped at 30 */
    for (unsigned n = 0; n <= 3; n++)
        assert_true(mp_authguard_delay(n, 3, 30) == 0);
    assert_true(mp_authguard_delay(4, 3, 30) == 1);
    assert_true(mp_authguard_delay(5, 3, 30) == 2);
    assert_true(mp_authguard_delay(6, 3, 30) == 4);
    assert_true(mp_authguard_delay(8, 3, 30) == 16);
    assert_true(mp_authguard_delay(9, 3, 30) == 30);
    assert_true(mp_authguard_delay(1000, 3, 30) == 30);
    assert_true(mp_authguard_delay(4000000000u, 3, 30) == 30); /* no shift overflow */
    /* no free failures */
    assert_true(mp_authguard_delay(1, 0, 30) == 1);
    /* a cap below 1 s, and delays turned off */
    assert_true(mp_authguard_delay(4, 3, 0.5) == 0.5);
    assert_true(mp_authguard_delay(10, 3, 0) == 0);
}

/* ---- addresses ---- */

static void addr_key_of(const char *ip, int port, char *key, size_t len)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    }
    mp_addr_key((struct sockaddr *)&ss, key, len);
}

static void test_addr_key(void **state)
{
    (void)state;
    char a[64], b[64];
    addr_key_of("192.0.2.7", 5222, a, sizeof a);
    assert_string_equal(a, "192.0.2.7");
    /* IPv4-mapped IPv6 is the IPv4 address; the port never matters */
    addr_key_of("::ffff:192.0.2.7", 40000, b, sizeof b);
    assert_string_equal(a, b);
    /* IPv6: the /64 */
    addr_key_of("2001:db8:1:2:aaaa::1", 5222, a, sizeof a);
    addr_key_of("2001:db8:1:2:bbbb::9", 1, b, sizeof b);
    assert_string_equal(a, "2001:db8:1:2::/64");
    assert_string_equal(a, b);
    addr_key_of("2001:db8:1:3::1", 5222, b, sizeof b);
    assert_string_not_equal(a, b);
}

/* ---- the guard ---- */

static void test_progressive(void **state)
{
    (void)state;
    mp_authguard *g = mp_authguard_new(3, 30, 600, 100);
    double t = 1000;
    /* one address guessing one account */
    for (int i = 1; i <= 3; i++)
        assert_true(mp_authguard_failure(g, "198.51.100.1", "alice@x", t += 1) == 0);
    assert_true(mp_authguard_failure(g, "198.51.100.1", "alice@x", t += 1) == 1);
    assert_true(mp_authguard_failure(g, "198.51.100.1", "alice@x", t += 1) == 2);
    assert_true(mp_authguard_failure(g, "198.51.100.1", "alice@x", t += 1) == 4);
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ADDRESS, "198.51.100.1", t), 6);
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ACCOUNT, "alice@x", t), 6);
    size_t thr[MP_AUTHGUARD_KINDS], n[MP_AUTHGUARD_KINDS];
    mp_authguard_stats(g, t, thr, n);
    assert_int_equal(thr[MP_AUTHGUARD_ADDRESS], 1);
    assert_int_equal(thr[MP_AUTHGUARD_ACCOUNT], 1);
    assert_int_equal(n[MP_AUTHGUARD_ADDRESS], 1);

    /* the account is throttled from another address too */
    assert_true(mp_authguard_failure(g, "203.0.113.5", "alice@x", t += 1) == 8);
    /* the address is throttled for other accounts too */
    assert_true(mp_authguard_failure(g, "198.51.100.1", "bob@x", t += 1) == 8);
    /* a fresh address and account: free */
    assert_true(mp_authguard_failure(g, "203.0.113.6", "carol@x", t += 1) == 0);

    /* success resets the account, not the address */
    mp_authguard_success(g, "alice@x");
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ACCOUNT, "alice@x", t), 0);
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ADDRESS, "198.51.100.1", t), 7);
    assert_true(mp_authguard_failure(g, "203.0.113.5", "alice@x", t += 1) == 0);
    assert_true(mp_authguard_failure(g, "198.51.100.1", "alice@x", t += 1) == 16);
    assert_true(mp_authguard_failure(g, "198.51.100.1", "alice@x", t += 1) == 30); /* cap */

    /* no account (impossible username): the address still counts */
    assert_true(mp_authguard_failure(g, "198.51.100.1", NULL, t += 1) == 30);
    /* no address: the account still counts */
    assert_true(mp_authguard_failure(g, "", "dave@x", t += 1) == 0);
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ACCOUNT, "dave@x", t), 1);
    mp_authguard_free(g);
}

static void test_window(void **state)
{
    (void)state;
    mp_authguard *g = mp_authguard_new(2, 30, 600, 100);
    double t = 50;
    for (int i = 0; i < 4; i++)
        mp_authguard_failure(g, "192.0.2.1", "u@h", t);
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ADDRESS, "192.0.2.1", t), 4);
    /* the window runs from the last failure: 599 s later it still counts */
    assert_true(mp_authguard_failure(g, "192.0.2.1", "u@h", t += 599) == 4);
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ACCOUNT, "u@h", t + 600), 5);
    /* 601 s of quiet: both start over */
    t += 601;
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ADDRESS, "192.0.2.1", t), 0);
    size_t thr[MP_AUTHGUARD_KINDS], n[MP_AUTHGUARD_KINDS];
    mp_authguard_stats(g, t, thr, n); /* expired entries are dropped */
    assert_int_equal(n[MP_AUTHGUARD_ADDRESS], 0);
    assert_int_equal(n[MP_AUTHGUARD_ACCOUNT], 0);
    assert_int_equal(thr[MP_AUTHGUARD_ACCOUNT], 0);
    assert_true(mp_authguard_failure(g, "192.0.2.1", "u@h", t) == 0);
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ACCOUNT, "u@h", t), 1);
    mp_authguard_free(g);
}

static void test_eviction(void **state)
{
    (void)state;
    enum { MAX = 64 };
    mp_authguard *g = mp_authguard_new(1, 30, 600, MAX);
    char addr[64], acct[64];
    double t = 10;
    /* an old, throttled entry */
    for (int i = 0; i < 5; i++)
        mp_authguard_failure(g, "10.0.0.1", "victim@h", t);
    /* a spray of new addresses and accounts: the table stays bounded */
    for (int i = 0; i < 10 * MAX; i++) {
        snprintf(addr, sizeof addr, "10.1.%d.%d:1", i / 256, i % 256);
        snprintf(acct, sizeof acct, "user%d@h", i);
        mp_authguard_failure(g, addr, acct, t += 0.001);
        size_t n[MP_AUTHGUARD_KINDS];
        mp_authguard_stats(g, t, NULL, n);
        assert_true(n[MP_AUTHGUARD_ADDRESS] <= MAX);
        assert_true(n[MP_AUTHGUARD_ACCOUNT] <= MAX);
    }
    size_t n[MP_AUTHGUARD_KINDS];
    mp_authguard_stats(g, t, NULL, n);
    assert_int_equal(n[MP_AUTHGUARD_ADDRESS], MAX);
    /* the oldest went first */
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ADDRESS, "10.0.0.1", t), 0);
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ACCOUNT, "victim@h", t), 0);
    /* the newest are kept */
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ADDRESS, addr, t), 1);
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ACCOUNT, acct, t), 1);
    /* an entry that keeps failing stays (it moves to the new end) */
    for (int i = 0; i < 4 * MAX; i++) {
        mp_authguard_failure(g, "10.9.9.9", NULL, t += 0.001);
        snprintf(addr, sizeof addr, "10.2.%d.%d:1", i / 256, i % 256);
        mp_authguard_failure(g, addr, NULL, t += 0.001);
    }
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ADDRESS, "10.9.9.9", t), 4 * MAX);
    mp_authguard_free(g);
}

/* Worker threads share one guard. */
struct hammer {
    mp_authguard *g;
    int id;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    char addr[64], acct[64];
    for (int i = 0; i < 2000; i++) {
        snprintf(addr, sizeof addr, "10.%d.%d.%d:1", h->id, (i / 256) % 4, i % 256);
        snprintf(acct, sizeof acct, "u%d@h", i % 50);
        mp_authguard_failure(h->g, addr, acct, 100.0 + i * 0.001);
        if (i % 7 == 0)
            mp_authguard_success(h->g, acct);
        mp_authguard_failure(h->g, "192.0.2.99", NULL, 100.0 + i * 0.001);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    mp_authguard *g = mp_authguard_new(3, 30, 600, 512);
    pthread_t th[4];
    struct hammer h[4];
    for (int i = 0; i < 4; i++) {
        h[i].g = g;
        h[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    /* every thread's failures from the shared address were counted */
    assert_int_equal(mp_authguard_failures(g, MP_AUTHGUARD_ADDRESS, "192.0.2.99", 102), 8000);
    size_t n[MP_AUTHGUARD_KINDS];
    mp_authguard_stats(g, 102, NULL, n);
    assert_true(n[MP_AUTHGUARD_ADDRESS] <= 512);
    mp_authguard_free(g);
}

/* ---- the work pool ---- */

struct job {
    int ran;           /* set on the pool thread */
    int done, rc;      /* set by the completion */
    pthread_t done_on; /* thread the completion ran on */
    int *remaining;
    mp_loop *loop;
    useconds_t sleep;
};

static void job_work(void *arg)
{
    struct job *j = arg;
    if (j->sleep)
        usleep(j->sleep);
    j->ran = 1;
}

static void job_done(void *arg, int rc)
{
    struct job *j = arg;
    j->done++;
    j->rc = rc;
    j->done_on = pthread_self();
    if (--*j->remaining == 0 && j->loop)
        mp_loop_stop(j->loop);
}

static void test_workpool(void **state)
{
    (void)state;
    enum { N = 20 };
    mp_loop *loop = mp_loop_new();
    mp_loop_bind_thread(loop);
    mp_workpool *p = mp_workpool_new("test", 3, 100);
    assert_non_null(p);
    struct job jobs[N];
    int remaining = N;
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < N; i++) {
        jobs[i].remaining = &remaining;
        jobs[i].loop = loop;
        jobs[i].sleep = 1000;
        assert_int_equal(mp_workpool_submit(p, job_work, job_done, &jobs[i]), MAGPIE_OK);
    }
    mp_loop_run(loop); /* until the last completion stops it */
    for (int i = 0; i < N; i++) {
        assert_true(jobs[i].ran);
        assert_int_equal(jobs[i].done, 1);
        assert_int_equal(jobs[i].rc, MAGPIE_OK);
        /* completions run on the submitter's loop thread */
        assert_true(pthread_equal(jobs[i].done_on, pthread_self()));
    }
    assert_int_equal(mp_workpool_queued(p), 0);
    mp_workpool_free(p);
    mp_loop_free(loop);
    mp_loop_bind_thread(NULL);
}

static void test_workpool_bounded(void **state)
{
    (void)state;
    mp_loop *loop = mp_loop_new();
    mp_loop_bind_thread(loop);
    mp_workpool *p = mp_workpool_new("test", 1, 2);
    struct job slow, q1, q2, over;
    int remaining = 100; /* never stops the loop: drained by mp_loop_free */
    memset(&slow, 0, sizeof slow);
    slow.remaining = &remaining;
    slow.sleep = 200000; /* keeps the one thread busy */
    q1 = q2 = over = slow;
    q1.sleep = q2.sleep = over.sleep = 0;
    assert_int_equal(mp_workpool_submit(p, job_work, job_done, &slow), MAGPIE_OK);
    /* wait until the thread has taken it */
    for (int i = 0; i < 200 && mp_workpool_queued(p) != 0; i++)
        usleep(1000);
    assert_int_equal(mp_workpool_queued(p), 0);
    assert_int_equal(mp_workpool_submit(p, job_work, job_done, &q1), MAGPIE_OK);
    assert_int_equal(mp_workpool_submit(p, job_work, job_done, &q2), MAGPIE_OK);
    assert_int_equal(mp_workpool_queued(p), 2);
    /* full: refused at once, its completion never runs */
    assert_int_equal(mp_workpool_submit(p, job_work, job_done, &over), MAGPIE_AGAIN);
    /* stopping cancels what waits and lets the running job finish */
    mp_workpool_free(p);
    mp_loop_free(loop); /* runs the posted completions */
    mp_loop_bind_thread(NULL);
    assert_true(slow.ran);
    assert_int_equal(slow.done, 1);
    assert_int_equal(slow.rc, MAGPIE_OK);
    assert_false(q1.ran);
    assert_int_equal(q1.done, 1);
    assert_int_equal(q1.rc, MAGPIE_ERR);
    assert_int_equal(q2.done, 1);
    assert_int_equal(q2.rc, MAGPIE_ERR);
    assert_int_equal(over.done, 0);
    assert_false(over.ran);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delay),       cmocka_unit_test(test_addr_key),
        cmocka_unit_test(test_progressive), cmocka_unit_test(test_window),
        cmocka_unit_test(test_eviction),    cmocka_unit_test(test_threads),
        cmocka_unit_test(test_workpool),    cmocka_unit_test(test_workpool_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
