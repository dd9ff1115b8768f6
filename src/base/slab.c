/* slab.c - a per-thread pool for short-lived, connection-sized memory kept
 * apart from the main heap (base.h: mp_slab_alloc).
 *
 * Why: an idle stream's expat parser (about 10 KB in some twenty blocks) is
 * freed after a few seconds of silence, long after the session's
 * long-lived objects (TLS state, transport, session) were allocated around
 * it at login. In glibc's heap that leaves a parser-sized hole between
 * live objects in every idle session, and only the pages wholly inside a
 * hole can be given back. Allocated from here instead, parser memory lives
 * in 64 KiB slabs of its own: when the parsers of idle sessions are
 * released their slabs empty and are unmapped, and the main heap holds the
 * long-lived objects densely.
 *
 * Layout: a slab is a 64 KiB-aligned mapping serving one size class (16-byte
 * steps to 128, then four classes per power of two to 16 KiB), so a block's
 * slab is found by masking its address. Blocks are carved from a bump
 * pointer first (pages never used stay untouched) and reused from a free
 * list. Each thread has its own pool (a worker's parsers stay together);
 * a block may be freed by any thread: the pool has a mutex, uncontended in
 * practice. A pool keeps at most one empty slab per class; other empty
 * slabs are unmapped at once. */
#include "base/base.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define SLAB_SIZE ((size_t)64 * 1024)
#define N_CLASSES 36 /* 8 classes of 16..128, then 4 per doubling to 16 KiB */

struct pool;

struct slab {
    struct pool *pool;
    struct slab *prev, *next; /* the class's list of slabs with room */
    void *free;               /* freed blocks (first word: next) */
    char *bump, *end;         /* never used blocks */
    unsigned used;            /* blocks handed out */
    unsigned cls;
    unsigned listed;          /* on the class list */
};

/* Blocks start SLAB_HDR bytes into the slab: 16-aligned. */
#define SLAB_HDR 64
_Static_assert(sizeof(struct slab) <= SLAB_HDR, "slab header");

struct pool {
    pthread_mutex_t lock;
    struct slab *avail[N_CLASSES]; /* slabs with room, per class */
    struct slab *spare[N_CLASSES]; /* one empty slab kept per class */
    size_t mapped;                 /* bytes in slabs, for mp_slab_mapped */
    struct pool *next_pool;        /* all pools (reachable for leak checkers) */
};

static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool *pools;
static _Thread_local struct pool *my_pool;

static size_t class_size(unsigned c)
{
    if (c < 8)
        return (size_t)(c + 1) * 16;
    unsigned j = c - 8, k = 7 + j / 4;
    size_t base = (size_t)1 << k;
    return base + (j % 4 + 1) * (base / 4);
}

static unsigned size_class(size_t n)
{
    if (n <= 128)
        return n == 0 ? 0 : (unsigned)((n + 15) / 16 - 1);
    size_t m = n - 1;
    unsigned k = 63u - (unsigned)__builtin_clzll((unsigned long long)m);
    size_t base = (size_t)1 << k;
    return 8 + (k - 7) * 4 + (unsigned)((m - base) / (base / 4));
}

static struct pool *thread_pool(void)
{
    if (my_pool)
        return my_pool;
    struct pool *p = mp_calloc(1, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_lock(&pools_lock);
    p->next_pool = pools;
    pools = p;
    pthread_mutex_unlock(&pools_lock);
    return my_pool = p;
}

static void list_add(struct slab **head, struct slab *s)
{
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
    s->listed = 1;
}

static void list_del(struct slab **head, struct slab *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->listed = 0;
}

/* A new empty slab of class c, aligned to SLAB_SIZE, or NULL. */
static struct slab *slab_map(struct pool *p, unsigned c)
{
    char *m = mmap(NULL, 2 * SLAB_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *a = (char *)(((uintptr_t)m + SLAB_SIZE - 1) & ~(uintptr_t)(SLAB_SIZE - 1));
    if (a > m)
        munmap(m, (size_t)(a - m));
    if (a + SLAB_SIZE < m + 2 * SLAB_SIZE)
        munmap(a + SLAB_SIZE, (size_t)(m + 2 * SLAB_SIZE - (a + SLAB_SIZE)));
    struct slab *s = (struct slab *)(void *)a;
    memset(s, 0, sizeof *s);
    s->pool = p;
    s->cls = c;
    s->bump = a + SLAB_HDR;
    size_t bs = class_size(c), n = (SLAB_SIZE - SLAB_HDR) / bs;
    s->end = s->bump + n * bs;
    POISON(s->bump, (size_t)(a + SLAB_SIZE - s->bump));
    p->mapped += SLAB_SIZE;
    return s;
}

void *mp_slab_alloc(size_t n)
{
    if (n > MP_SLAB_MAX)
        return NULL;
    unsigned c = size_class(n);
    size_t bs = class_size(c);
    struct pool *p = thread_pool();
    pthread_mutex_lock(&p->lock);
    struct slab *s = p->avail[c];
    if (!s) {
        s = p->spare[c];
        p->spare[c] = NULL;
        if (!s)
            s = slab_map(p, c);
        if (!s) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        list_add(&p->avail[c], s);
    }
    void *b;
    if (s->free) {
        b = s->free;
        UNPOISON(b, sizeof(void *));
        memcpy(&s->free, b, sizeof(void *));
    } else {
        b = s->bump;
        s->bump += bs;
    }
    s->used++;
    if (!s->free && s->bump >= s->end)
        list_del(&p->avail[c], s);
    pthread_mutex_unlock(&p->lock);
    UNPOISON(b, bs);
    return b;
}

void mp_slab_free(void *b)
{
    if (!b)
        return;
    struct slab *s = (struct slab *)(void *)((uintptr_t)b & ~(uintptr_t)(SLAB_SIZE - 1));
    struct pool *p = s->pool;
    unsigned c = s->cls;
    pthread_mutex_lock(&p->lock);
    memcpy(b, &s->free, sizeof(void *));
    POISON(b, class_size(c));
    s->free = b;
    s->used--;
    if (s->used == 0) {
        if (s->listed)
            list_del(&p->avail[c], s);
        if (!p->spare[c]) {
            /* reset to untouched, and give the pages back */
            s->free = NULL;
            s->bump = (char *)s + SLAB_HDR;
            /* (the first page holds the header) */
            madvise((char *)s + 4096, SLAB_SIZE - 4096, MADV_DONTNEED);
            p->spare[c] = s;
        } else {
            p->mapped -= SLAB_SIZE;
            munmap(s, SLAB_SIZE);
        }
    } else if (!s->listed) {
        list_add(&p->avail[c], s);
    }
    pthread_mutex_unlock(&p->lock);
}

size_t mp_slab_size(size_t n)
{
    return n > MP_SLAB_MAX ? n : class_size(size_class(n));
}

size_t mp_slab_mapped(void)
{
    size_t total = 0;
    pthread_mutex_lock(&pools_lock);
    for (struct pool *p = pools; p; p = p->next_pool) {
        pthread_mutex_lock(&p->lock);
        total += p->mapped;
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&pools_lock);
    return total;
}
