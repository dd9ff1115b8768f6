/* loop.c - one event loop per thread, with a thread-safe FIFO of posted
 * calls (the cross-worker queue of the architecture).
 *
 * Posting appends to a mutex-protected list and activates a libevent user
 * event; the owning thread drains the whole list in one callback. The lock
 * is held only to splice the list, so posters never wait on the consumer's
 * work.
 *
 * The queue is bounded softly: a post always succeeds (a stanza in flight
 * is never dropped), but while more than `bound` calls wait, the loop's
 * waitq is congested and the senders who keep adding are paused by the
 * stream layer (see pressure.c) until the loop has worked the queue down
 * to half the bound. */
#include "base/base.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdlib.h>

struct post {
    void (*fn)(void *);
    void *arg;
    struct post *next;
};

struct mp_loop {
    struct event_base *base;
    struct event *wake;
    pthread_mutex_t lock;
    struct post *head, *tail;
    int stopping;
    atomic_size_t pending; /* posted, not yet run */
    size_t bound;          /* 0: unbounded */
    struct mp_waitq *full;
    struct event *turn_end;     /* runs the hooks at the end of a turn */
    struct mp_turn_hook hooks;  /* sentinel of the circular hook list */
};

static _Thread_local mp_loop *current_loop;
static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;

static void init_evthread(void)
{
    evthread_use_pthreads();
}

static void drain(evutil_socket_t fd, short what, void *arg)
{
    mp_loop *loop = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&loop->lock);
    struct post *p = loop->head;
    loop->head = loop->tail = NULL;
    int stopping = loop->stopping;
    pthread_mutex_unlock(&loop->lock);
    while (p) {
        struct post *next = p->next;
        p->fn(p->arg);
        free(p);
        atomic_fetch_sub_explicit(&loop->pending, 1, memory_order_relaxed);
        p = next;
    }
    if (loop->bound &&
        atomic_load_explicit(&loop->pending, memory_order_relaxed) <= loop->bound / 2)
        mp_waitq_set(loop->full, 0);
    if (stopping)
        event_base_loopbreak(loop->base);
}

/* ---- end-of-turn hooks ----
 * libevent runs the callbacks made active during a turn after those that
 * were active before them (one priority queue), so activating turn_end on
 * the first queued hook runs it after every callback already due: the I/O
 * batch of this turn, posted calls, and what they activate before it. */

static void hook_unlink(struct mp_turn_hook *h)
{
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->next = h->prev = NULL;
}

static void run_turn_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mp_loop *loop = arg;
    if (loop->hooks.next == &loop->hooks)
        return;
    /* run the hooks queued so far; those queued meanwhile (again) go to
     * the loop's list, which activates turn_end once more this turn */
    struct mp_turn_hook now;
    now.next = loop->hooks.next;
    now.prev = loop->hooks.prev;
    now.next->prev = &now;
    now.prev->next = &now;
    loop->hooks.next = loop->hooks.prev = &loop->hooks;
    while (now.next != &now) {
        struct mp_turn_hook *h = now.next;
        hook_unlink(h);
        h->fn(h);
    }
}

void mp_loop_at_turn_end(mp_loop *loop, struct mp_turn_hook *h)
{
    if (h->next)
        return;
    if (loop->hooks.next == &loop->hooks)
        event_active(loop->turn_end, 0, 0);
    h->prev = loop->hooks.prev;
    h->next = &loop->hooks;
    loop->hooks.prev->next = h;
    loop->hooks.prev = h;
}

void mp_turn_hook_cancel(struct mp_turn_hook *h)
{
    if (h->next)
        hook_unlink(h);
}

mp_loop *mp_loop_new(void)
{
    pthread_once(&evthread_once, init_evthread);
    mp_loop *loop = mp_calloc(1, sizeof *loop);
    struct event_config *cfg = event_config_new();
    loop->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!loop->base) {
        free(loop);
        return NULL;
    }
    pthread_mutex_init(&loop->lock, NULL);
    loop->wake = event_new(loop->base, -1, 0, drain, loop);
    loop->turn_end = event_new(loop->base, -1, 0, run_turn_end, loop);
    loop->hooks.next = loop->hooks.prev = &loop->hooks;
    loop->full = mp_waitq_new();
    return loop;
}

void mp_loop_free(mp_loop *loop)
{
    if (!loop)
        return;
    /* run what is still queued so posted resources are released */
    drain(-1, 0, loop);
    run_turn_end(-1, 0, loop);
    event_free(loop->turn_end);
    event_free(loop->wake);
    event_base_free(loop->base);
    pthread_mutex_destroy(&loop->lock);
    mp_waitq_unref(loop->full);
    if (current_loop == loop)
        current_loop = NULL;
    free(loop);
}

void mp_loop_bind_thread(mp_loop *loop)
{
    current_loop = loop;
}

mp_loop *mp_loop_current(void)
{
    return current_loop;
}

struct event_base *mp_loop_base(mp_loop *loop)
{
    return loop->base;
}

int mp_loop_post(mp_loop *loop, void (*fn)(void *), void *arg)
{
    struct post *p = malloc(sizeof *p);
    if (!p)
        return MAGPIE_ERR;
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    pthread_mutex_lock(&loop->lock);
    if (loop->tail)
        loop->tail->next = p;
    else
        loop->head = p;
    loop->tail = p;
    size_t n = atomic_fetch_add_explicit(&loop->pending, 1, memory_order_relaxed) + 1;
    struct mp_waitq *full = loop->bound && n > loop->bound ? mp_waitq_ref(loop->full) : NULL;
    /* woken under the lock: the owner sees the call only once this returns,
     * so it cannot run it, finish and free the loop under event_active;
     * after the unlock the loop may be gone (hence the reference above) */
    event_active(loop->wake, 0, 0);
    pthread_mutex_unlock(&loop->lock);
    if (full) {
        mp_waitq_set(full, 1);
        mp_pressure_note(full);
        mp_waitq_unref(full);
    }
    return MAGPIE_OK;
}

void mp_loop_set_bound(mp_loop *loop, size_t bound)
{
    loop->bound = bound;
}

size_t mp_loop_pending(mp_loop *loop)
{
    return atomic_load_explicit(&loop->pending, memory_order_relaxed);
}

void mp_loop_run(mp_loop *loop)
{
    mp_loop_bind_thread(loop);
    event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
}

void mp_loop_stop(mp_loop *loop)
{
    pthread_mutex_lock(&loop->lock);
    loop->stopping = 1;
    pthread_mutex_unlock(&loop->lock);
    event_active(loop->wake, 0, 0);
}
