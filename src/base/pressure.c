/* pressure.c - backpressure: queues that say "full", and who waits on them.
 *
 * A bounded queue (a worker's cross-thread queue, the storage job queue, a
 * client's output buffer) owns a struct mp_waitq and marks it congested
 * while it is over its bound. Code that adds to such a queue on behalf of
 * a peer calls mp_pressure_note(q) after adding; the stream layer, once it
 * has handled the peer's stanza, collects the noted queues
 * (mp_pressure_take) and stops reading that peer, registering a waiter on
 * each queue that is still congested. When the queue's owner clears the
 * mark, every waiter's wake function runs, once. Nothing is ever dropped:
 * the queue still takes what is added, and the senders who filled it stop
 * adding until it drains, so what they cost stays bounded by what each of
 * them had already sent.
 *
 * Waitqs may be touched from any thread: the mark is atomic, the waiter
 * list is under a mutex, and wake functions run outside it on the thread
 * that cleared the mark. A waitq is reference counted, because a note may
 * outlive the queue's owner (a client that disconnects meanwhile): a note
 * holds a reference until it is taken and released. An owner that goes
 * away clears its mark first, so nobody waits on it for ever. */
#include "base/base.h"

#include <stdlib.h>

struct waiter {
    void (*wake)(void *);
    void *arg;
    struct waiter *next;
};

struct mp_waitq {
    atomic_int refs;
    atomic_int congested;
    pthread_mutex_t lock;
    struct waiter *waiters;
};

struct mp_waitq *mp_waitq_new(void)
{
    struct mp_waitq *q = mp_malloc(sizeof *q);
    atomic_init(&q->refs, 1);
    atomic_init(&q->congested, 0);
    pthread_mutex_init(&q->lock, NULL);
    q->waiters = NULL;
    return q;
}

struct mp_waitq *mp_waitq_ref(struct mp_waitq *q)
{
    atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
    return q;
}

void mp_waitq_unref(struct mp_waitq *q)
{
    if (!q || atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
        return;
    mp_waitq_set(q, 0);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

void mp_waitq_set(struct mp_waitq *q, int congested)
{
    if (congested) {
        atomic_store_explicit(&q->congested, 1, memory_order_release);
        return;
    }
    if (!atomic_load_explicit(&q->congested, memory_order_acquire))
        return;
    pthread_mutex_lock(&q->lock);
    atomic_store_explicit(&q->congested, 0, memory_order_release);
    struct waiter *w = q->waiters;
    q->waiters = NULL;
    pthread_mutex_unlock(&q->lock);
    while (w) {
        struct waiter *next = w->next;
        w->wake(w->arg);
        free(w);
        w = next;
    }
}

int mp_waitq_congested(const struct mp_waitq *q)
{
    return atomic_load_explicit(&q->congested, memory_order_acquire);
}

int mp_waitq_wait(struct mp_waitq *q, void (*wake)(void *), void *arg)
{
    pthread_mutex_lock(&q->lock);
    if (!atomic_load_explicit(&q->congested, memory_order_acquire)) {
        pthread_mutex_unlock(&q->lock);
        return MAGPIE_AGAIN;
    }
    struct waiter *w = mp_malloc(sizeof *w);
    w->wake = wake;
    w->arg = arg;
    w->next = q->waiters;
    q->waiters = w;
    pthread_mutex_unlock(&q->lock);
    return MAGPIE_OK;
}

/* ---- per-thread notes ---- */

#define MAX_NOTES 8

static _Thread_local struct mp_waitq *notes[MAX_NOTES];
static _Thread_local size_t n_notes;
static _Thread_local int collecting;

void mp_pressure_begin(void)
{
    mp_pressure_take(NULL, 0);
    collecting = 1;
}

void mp_pressure_note(struct mp_waitq *q)
{
    if (!collecting || !q || !mp_waitq_congested(q))
        return;
    for (size_t i = 0; i < n_notes; i++)
        if (notes[i] == q)
            return;
    if (n_notes < MAX_NOTES)
        notes[n_notes++] = mp_waitq_ref(q);
}

size_t mp_pressure_take(struct mp_waitq **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < n_notes; i++) {
        if (n < max)
            out[n++] = notes[i];
        else
            mp_waitq_unref(notes[i]);
    }
    n_notes = 0;
    collecting = 0;
    return n;
}
