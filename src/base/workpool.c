/* workpool.c - a small pool of threads for CPU-heavy jobs (PBKDF2 for
 * logins) that must not run on an event loop.
 *
 * A job is a work function, run on a pool thread, and a completion, posted
 * back to the loop of the thread that submitted it (mp_loop_post), so the
 * submitter's state is only ever touched on its own thread. The queue of
 * jobs not yet started is bounded: a full queue refuses the job at once
 * (MAGPIE_AGAIN) instead of building an unbounded backlog. */
#include "base/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job {
    void (*work)(void *);
    void (*done)(void *, int);
    void *arg;
    mp_loop *loop; /* where done runs; NULL: on the pool thread */
    int rc;        /* passed to done: MAGPIE_OK, or MAGPIE_ERR if cancelled */
    struct job *next;
};

struct mp_workpool {
    char name[16];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail; /* waiting jobs */
    size_t queued, max_queued;
    int stopping;
    int nthreads;
    pthread_t *threads;
};

/* Runs on the submitter's loop: the completion of a finished job. */
static void run_done(void *arg)
{
    struct job *j = arg;
    void (*done)(void *, int) = j->done;
    void *ud = j->arg;
    int rc = j->rc;
    free(j);
    done(ud, rc);
}

/* Hands j's completion to its loop (or runs it here if it has none or the
 * post fails); j is freed either way. */
static void complete(struct job *j)
{
    if (j->loop) {
        if (mp_loop_post(j->loop, run_done, j) == MAGPIE_OK)
            return;
        mp_log(MP_LOG_ERROR, "workpool: cannot post a completion, running it on the pool thread");
    }
    run_done(j);
}

static void *pool_main(void *arg)
{
    mp_workpool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        struct job *j = p->head;
        if (!j) { /* stopping and nothing left */
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->lock);
        j->work(j->arg);
        j->rc = MAGPIE_OK;
        complete(j);
    }
}

mp_workpool *mp_workpool_new(const char *name, int threads, size_t max_queued)
{
    if (threads < 1 || max_queued < 1)
        return NULL;
    mp_workpool *p = mp_calloc(1, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name ? name : "pool");
    p->max_queued = max_queued;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->threads = mp_calloc((size_t)threads, sizeof *p->threads);
    for (int i = 0; i < threads; i++) {
        int e = pthread_create(&p->threads[i], NULL, pool_main, p);
        if (e != 0) {
            mp_log(MP_LOG_ERROR, "workpool %s: pthread_create: %s", p->name, strerror(e));
            mp_workpool_free(p);
            return NULL;
        }
        p->nthreads++;
    }
    return p;
}

int mp_workpool_submit(mp_workpool *p, void (*work)(void *), void (*done)(void *, int), void *arg)
{
    if (!p)
        return MAGPIE_ERR;
    struct job *j = mp_calloc(1, sizeof *j);
    j->work = work;
    j->done = done;
    j->arg = arg;
    j->loop = mp_loop_current();
    pthread_mutex_lock(&p->lock);
    int rc = MAGPIE_OK;
    if (p->stopping)
        rc = MAGPIE_ERR;
    else if (p->queued >= p->max_queued)
        rc = MAGPIE_AGAIN;
    if (rc != MAGPIE_OK) {
        pthread_mutex_unlock(&p->lock);
        free(j);
        return rc;
    }
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->queued++;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return MAGPIE_OK;
}

size_t mp_workpool_queued(mp_workpool *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->lock);
    size_t n = p->queued;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void mp_workpool_free(mp_workpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    struct job *j = p->head; /* cancelled: never started */
    p->head = p->tail = NULL;
    p->queued = 0;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    while (j) {
        struct job *next = j->next;
        j->rc = MAGPIE_ERR;
        complete(j);
        j = next;
    }
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}
