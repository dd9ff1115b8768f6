/* directory.c - the in-process session directory (directory.h).
 *
 * Bare JIDs are spread over SHARDS shards by a hash of the bare JID; each
 * shard is a hash table (bare -> resources) behind its own read-write
 * lock. Routing a stanza takes one shard's read lock for the length of a
 * copy, so workers routing to different users do not meet on one lock,
 * and binds, unbinds and presence changes lock one shard only. */
#include "base/base.h"
#include "base/table.h"
#include "core/directory.h"

#include <stdlib.h>
#include <string.h>

#define SHARDS 64 /* power of two */

struct res_entry {
    char *resource;
    struct mp_sref who;
    int available;
    int priority;
};

struct user_entry {
    struct res_entry *v;
    size_t n;
};

struct shard {
    pthread_rwlock_t lock;
    mp_table *users; /* bare -> struct user_entry */
} __attribute__((aligned(64)));

static struct shard shards[SHARDS];
static atomic_size_t bound_count;

const struct mp_directory_ops *mp_directory;

/* FNV-1a of the bare JID: picks the shard only (the shard's table is keyed
 * with SipHash, so colliding names cost contention, never a slow table). */
static struct shard *shard_of(const char *bare)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)bare; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &shards[h & (SHARDS - 1)];
}

/* The address as a lookup returns it: outq referenced only if congested. */
static struct mp_sref sref_out(const struct mp_sref *in)
{
    struct mp_sref o = *in;
    o.outq = in->outq && mp_waitq_congested(in->outq) ? mp_waitq_ref(in->outq) : NULL;
    return o;
}

static void res_release(struct res_entry *r)
{
    free(r->resource);
    if (r->who.outq)
        mp_waitq_unref(r->who.outq);
}

static void free_user(void *v)
{
    struct user_entry *u = v;
    for (size_t i = 0; i < u->n; i++)
        res_release(&u->v[i]);
    free(u->v);
    free(u);
}

/* The index of session id among u's resources, or -1 (u may be NULL). */
static long find_id(const struct user_entry *u, uint64_t id)
{
    for (size_t i = 0; u && i < u->n; i++)
        if (u->v[i].who.id == id)
            return (long)i;
    return -1;
}

static int local_bind(const mp_jid *full, struct mp_sref who, struct mp_sref *replaced)
{
    struct shard *sh = shard_of(full->bare);
    if (who.outq)
        mp_waitq_ref(who.outq);
    pthread_rwlock_wrlock(&sh->lock);
    struct user_entry *u = mp_table_get(sh->users, full->bare);
    if (!u) {
        u = mp_calloc(1, sizeof *u);
        mp_table_put(sh->users, full->bare, u);
    }
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->v[i].resource, full->resource) == 0) {
            struct res_entry *r = &u->v[i];
            *replaced = r->who;
            replaced->outq = NULL;
            if (r->who.outq)
                mp_waitq_unref(r->who.outq);
            *r = (struct res_entry){r->resource, who, 0, 0};
            pthread_rwlock_unlock(&sh->lock);
            return MAGPIE_AGAIN;
        }
    u->v = mp_realloc(u->v, (u->n + 1) * sizeof *u->v);
    u->v[u->n++] = (struct res_entry){mp_strdup(full->resource), who, 0, 0};
    atomic_fetch_add(&bound_count, 1);
    pthread_rwlock_unlock(&sh->lock);
    return MAGPIE_OK;
}

static int local_unbind(const mp_jid *full, uint64_t id, int *was_available)
{
    struct shard *sh = shard_of(full->bare);
    int rc = MAGPIE_NOTFOUND;
    pthread_rwlock_wrlock(&sh->lock);
    struct user_entry *u = mp_table_get(sh->users, full->bare);
    long i = find_id(u, id);
    if (i >= 0) {
        *was_available = u->v[i].available;
        res_release(&u->v[i]);
        u->v[i] = u->v[--u->n];
        rc = MAGPIE_OK;
    }
    if (u && u->n == 0) {
        mp_table_del(sh->users, full->bare);
        free_user(u);
    }
    if (rc == MAGPIE_OK)
        atomic_fetch_sub(&bound_count, 1);
    pthread_rwlock_unlock(&sh->lock);
    return rc;
}

static int local_move(const mp_jid *full, uint64_t id, int worker)
{
    struct shard *sh = shard_of(full->bare);
    int rc = MAGPIE_NOTFOUND;
    pthread_rwlock_wrlock(&sh->lock);
    struct user_entry *u = mp_table_get(sh->users, full->bare);
    long i = find_id(u, id);
    if (i >= 0) {
        u->v[i].who.worker = worker;
        rc = MAGPIE_OK;
    }
    pthread_rwlock_unlock(&sh->lock);
    return rc;
}

static int local_set_presence(const mp_jid *full, uint64_t id, int available, int priority,
                              int *was_available)
{
    struct shard *sh = shard_of(full->bare);
    int rc = MAGPIE_NOTFOUND;
    pthread_rwlock_wrlock(&sh->lock);
    struct user_entry *u = mp_table_get(sh->users, full->bare);
    long i = find_id(u, id);
    if (i >= 0) {
        *was_available = u->v[i].available;
        u->v[i].available = available;
        u->v[i].priority = priority;
        rc = MAGPIE_OK;
    }
    pthread_rwlock_unlock(&sh->lock);
    return rc;
}

static size_t local_lookup_bare(const char *bare, struct mp_dir_res *out, size_t max)
{
    struct shard *sh = shard_of(bare);
    size_t n = 0;
    pthread_rwlock_rdlock(&sh->lock);
    struct user_entry *u = mp_table_get(sh->users, bare);
    if (u) {
        n = u->n;
        for (size_t i = 0; i < n && i < max; i++) {
            const struct res_entry *r = &u->v[i];
            out[i].who = sref_out(&r->who);
            out[i].available = r->available;
            out[i].priority = r->priority;
        }
    }
    pthread_rwlock_unlock(&sh->lock);
    return n;
}

static void local_resources(const char *bare,
                            void (*fn)(void *, const struct mp_dir_res *, const char *), void *ud)
{
    struct shard *sh = shard_of(bare);
    pthread_rwlock_rdlock(&sh->lock);
    struct user_entry *u = mp_table_get(sh->users, bare);
    for (size_t i = 0; u && i < u->n; i++) {
        const struct res_entry *r = &u->v[i];
        struct mp_dir_res d = {{r->who.id, r->who.worker, NULL}, r->available, r->priority};
        fn(ud, &d, r->resource);
    }
    pthread_rwlock_unlock(&sh->lock);
}

static int local_lookup_full(const mp_jid *full, struct mp_sref *out)
{
    struct shard *sh = shard_of(full->bare);
    int rc = MAGPIE_NOTFOUND;
    pthread_rwlock_rdlock(&sh->lock);
    struct user_entry *u = mp_table_get(sh->users, full->bare);
    for (size_t i = 0; u && i < u->n; i++)
        if (strcmp(u->v[i].resource, full->resource) == 0) {
            *out = sref_out(&u->v[i].who);
            rc = MAGPIE_OK;
            break;
        }
    pthread_rwlock_unlock(&sh->lock);
    return rc;
}

static size_t local_count(void)
{
    return atomic_load(&bound_count);
}

static void local_free(void)
{
    for (size_t i = 0; i < SHARDS; i++) {
        mp_table_free(shards[i].users, free_user);
        shards[i].users = NULL;
        pthread_rwlock_destroy(&shards[i].lock);
    }
}

static const struct mp_directory_ops local_ops = {
    .bind = local_bind,
    .unbind = local_unbind,
    .move = local_move,
    .set_presence = local_set_presence,
    .lookup_bare = local_lookup_bare,
    .resources = local_resources,
    .lookup_full = local_lookup_full,
    .count = local_count,
    .free = local_free,
};

int mp_directory_local_init(void)
{
    for (size_t i = 0; i < SHARDS; i++) {
        pthread_rwlock_init(&shards[i].lock, NULL);
        shards[i].users = mp_table_new(64);
    }
    atomic_init(&bound_count, 0);
    mp_directory = &local_ops;
    return MAGPIE_OK;
}
