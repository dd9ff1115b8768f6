/* router.c - RFC 6121 §8 delivery rules over the session directory.
 *
 * Routing reads the stanza's envelope (kind, type, prepared 'to'/'from',
 * computed once when the stanza entered: xml.h), asks the directory
 * (directory.h) where the recipients are, and hands the stanza to each
 * recipient's worker by session id (directly when it is the calling
 * worker, else through that worker's FIFO queue), so what one sender sends
 * to one recipient keeps its order. The directory never hands out session
 * pointers: a worker finds its own sessions by id in a per-worker registry
 * (mp_session_find), and a session gone meanwhile is a failed attempt.
 *
 * A stanza is immutable once routed: every recipient gets a reference to
 * the same tree (and a per-recipient change is a copy of the envelope,
 * mp_stanza_copy_envelope). The sessions one stanza is handed to form a
 * fan-out; if none of them can take it (they went away meanwhile), the
 * stanza is undeliverable, and that is handled once, by the last attempt.
 * Delivery notes the recipient's output queue (returned by the directory
 * only while congested) and the worker queue for backpressure
 * (pressure.c), so a sender that floods a slow recipient is paused instead
 * of the recipient being cut off.
 *
 * Stanzas for domains this server does not host go to the "route-remote"
 * hook (federation will take them) and otherwise bounce with
 * remote-server-not-found. */
#include "base/base.h"
#include "core/router.h"
#include "xml/xmlstream.h"
#include "base/table.h"
#include "core/session.h"
#include "core/fanout.h"
#include "core/presence.h"
#include "core/modules.h"
#include "auth/accounts.h"
#include "core/directory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A session this worker owns, by id: the only way the router reaches a
 * session. Entries are added at bind and removed at unbind (or when a
 * newer bind replaces the session), always on the owning worker. */
static __thread mp_idmap *local_sessions;

struct delivery {
    uint64_t id;
    mp_stanza *st;
    struct mp_fanout *fo;
    mp_ack *ack; /* the sender's acknowledgement waits for this hop */
};

int mp_router_init(void)
{
    return mp_directory_local_init();
}

void mp_router_free(void)
{
    if (mp_directory)
        mp_directory->free();
    mp_directory = NULL;
}

void mp_router_thread_exit(void)
{
    mp_idmap_free(local_sessions);
    local_sessions = NULL;
    mp_presence_thread_exit();
}

static mp_idmap *sessions_here(void)
{
    if (!local_sessions)
        local_sessions = mp_idmap_new();
    return local_sessions;
}

mp_session *mp_session_find(uint64_t id)
{
    return local_sessions ? mp_idmap_get(local_sessions, id) : NULL;
}

size_t mp_router_count(void)
{
    return mp_directory->count();
}

/* ---- delivery ---- */

/* Hands st to s on its own worker: its outbound filters, then the
 * session. MAGPIE_OK: st taken (delivered, or a filter took it: blocked,
 * or sent in another form); MAGPIE_ERR: s refuses it, st stays the
 * caller's. */
static int deliver_session(mp_session *s, mp_stanza *st)
{
    if (mp_filters_run(MP_FILTER_OUT, s, st) == MP_FILTER_STOP) {
        mp_stanza_unref(st);
        return MAGPIE_OK;
    }
    return mp_session_deliver(s, st);
}

struct forward {
    mp_session *s; /* referenced */
    mp_stanza *st;
};

/* On the worker s moved to: a stanza that reached its old worker first.
 * It is older than anything held there, so it goes straight in. */
static void forward_run(void *arg)
{
    struct forward *f = arg;
    mp_session *s = f->s;
    struct mp_worker *w = mp_session_worker(s);
    if (w->loop != mp_loop_current() && mp_loop_post(w->loop, forward_run, f) == MAGPIE_OK)
        return; /* moved again */
    if (deliver_session(s, f->st) != MAGPIE_OK)
        mp_router_undeliverable(f->st);
    mp_session_unref(s);
    free(f);
}

/* Hands st to session id found on the calling worker. A session that is
 * moving to another worker (a resume) is followed: what reached the old
 * worker is forwarded, and on the new one direct deliveries wait until
 * the old worker has forwarded everything it had (the barrier of
 * mp_router_session_arrive), so per-sender order holds across the move.
 * MAGPIE_OK: st taken; MAGPIE_ERR: the session is gone or refuses it, st
 * stays the caller's. */
static int deliver_now(uint64_t id, mp_stanza *st)
{
    mp_session *s = mp_session_find(id);
    if (!s)
        return MAGPIE_ERR;
    struct mp_session_base *b = MP_SESSION_BASE(s);
    if (b->w->loop != mp_loop_current()) {
        struct forward *f = mp_malloc(sizeof *f);
        f->s = s;
        f->st = st;
        mp_session_ref(s);
        if (mp_loop_post(b->w->loop, forward_run, f) != MAGPIE_OK) {
            mp_session_unref(s);
            free(f);
            return MAGPIE_ERR;
        }
        return MAGPIE_OK;
    }
    if (b->moving) {
        if (b->n_held == b->cap_held) {
            b->cap_held = b->cap_held ? 2 * b->cap_held : 8;
            b->held = mp_realloc(b->held, b->cap_held * sizeof *b->held);
        }
        b->held[b->n_held++] = st;
        return MAGPIE_OK;
    }
    return deliver_session(s, st);
}

/* Hands st (taken) to session id on the calling (its owning) worker and
 * records the attempt; a session gone meanwhile is a failed attempt. */
static void deliver_here(uint64_t id, mp_stanza *st, struct mp_fanout *fo)
{
    int ok = deliver_now(id, st) == MAGPIE_OK;
    if (!ok)
        mp_stanza_unref(st);
    mp_fanout_done(fo, ok);
}

static void delivery_run(void *arg)
{
    struct delivery *d = arg;
    mp_ack *a = d->ack;
    deliver_here(d->id, d->st, d->fo);
    /* delivered, or (the last failed attempt) through the undeliverable
     * rules: an offline store deferred it again meanwhile */
    mp_ack_done(a);
    free(d);
}

/* Hands st (taken) to the session at `to` (its outq reference taken), as
 * one attempt of fo. */
static void deliver(struct mp_sref to, mp_stanza *st, struct mp_fanout *fo)
{
    struct mp_worker *w = &mp_server.workers[to.worker];
    if (w->loop == mp_loop_current()) {
        if (to.outq)
            mp_waitq_unref(to.outq);
        deliver_here(to.id, st, fo);
        return;
    }
    /* a recipient that is not reading pauses whoever keeps sending to it */
    if (to.outq) {
        mp_pressure_note(to.outq);
        mp_waitq_unref(to.outq);
    }
    struct delivery *d = mp_malloc(sizeof *d);
    d->id = to.id;
    d->st = st;
    d->fo = fo;
    d->ack = mp_stanza_defer_ack(st);
    if (mp_loop_post(w->loop, delivery_run, d) != MAGPIE_OK) {
        mp_stanza_unref(st);
        mp_fanout_done(fo, 0);
        mp_ack_done(d->ack);
        free(d);
    }
}

/* Delivers st (taken) to every target as one fan-out (the targets' outq
 * references are taken); with no target, st is simply released. */
static void deliver_all(struct mp_dir_res *t, size_t n, mp_stanza *st)
{
    if (n > 1)
        mp_stanza_mark_fanout(st); /* one serialised body for all of them */
    if (n > 0) {
        struct mp_fanout *fo = mp_fanout_new(st, (int)n, mp_router_undeliverable);
        for (size_t i = 0; i < n; i++) {
            deliver(t[i].who, mp_stanza_ref(st), fo);
            t[i].who.outq = NULL;
        }
    }
    mp_stanza_unref(st);
}

/* Delivers st (taken) to one session. On the session's own worker (the
 * usual one-to-one message) without a fan-out record: the outcome is known
 * at once. */
static void deliver_one(struct mp_sref to, mp_stanza *st)
{
    if (mp_server.workers[to.worker].loop == mp_loop_current()) {
        if (to.outq)
            mp_waitq_unref(to.outq);
        if (deliver_now(to.id, st) != MAGPIE_OK)
            mp_router_undeliverable(st);
        return;
    }
    struct mp_fanout *fo = mp_fanout_new(st, 1, mp_router_undeliverable);
    deliver(to, st, fo);
}

enum select_rule {
    SELECT_AVAILABLE,   /* every available resource */
    SELECT_NONNEGATIVE, /* available, priority >= 0 */
    SELECT_HIGHEST,     /* available, priority >= 0, highest only */
};

#define TARGETS_INLINE 16

/* The resources of bare chosen by rule. A lookup fills buf (room for
 * TARGETS_INLINE) or, for a user with more resources, a heap array
 * returned in *heap for the caller to free; *out points at whichever holds
 * the targets. Returns their count. No allocation for the usual user. */
static size_t select_targets(const char *bare, enum select_rule rule, struct mp_dir_res *buf,
                             struct mp_dir_res **heap, struct mp_dir_res **out)
{
    struct mp_dir_res *v = buf;
    size_t cap = TARGETS_INLINE;
    *heap = NULL;
    size_t n = mp_directory->lookup_bare(bare, v, cap);
    while (n > cap) {
        for (size_t i = 0; i < cap; i++)
            if (v[i].who.outq)
                mp_waitq_unref(v[i].who.outq);
        cap = n;
        v = *heap = mp_realloc(*heap, cap * sizeof *v);
        n = mp_directory->lookup_bare(bare, v, cap);
    }
    int best = -129;
    if (rule == SELECT_HIGHEST)
        for (size_t i = 0; i < n; i++)
            if (v[i].available && v[i].priority >= 0 && v[i].priority > best)
                best = v[i].priority;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int ok = v[i].available && (rule == SELECT_AVAILABLE || v[i].priority >= 0) &&
                 (rule != SELECT_HIGHEST || v[i].priority == best);
        if (ok)
            v[k++] = v[i];
        else if (v[i].who.outq)
            mp_waitq_unref(v[i].who.outq);
    }
    *out = v;
    return k;
}

/* ---- bounces ---- */

void mp_route_bounce(mp_stanza *st, const char *type, const char *condition, const char *text)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->type == MP_TYPE_ERROR || (!env->from.domain && !env->from_bad) ||
        (env->kind == MP_KIND_IQ && env->type == MP_TYPE_RESULT)) {
        mp_stanza_unref(st);
        return;
    }
    mp_stanza *e = mp_stanza_copy(st);
    mp_stanza_unref(st);
    mp_stanza_make_error(e, type, condition, text);
    mp_stat_inc(MP_STAT_BOUNCES);
    mp_route(e);
}

/* ---- rules ---- */

static int is_subscription(enum mp_stanza_type type)
{
    return type == MP_TYPE_SUBSCRIBE || type == MP_TYPE_SUBSCRIBED || type == MP_TYPE_UNSUBSCRIBE ||
           type == MP_TYPE_UNSUBSCRIBED;
}

static int is_request(enum mp_stanza_type type)
{
    return type == MP_TYPE_GET || type == MP_TYPE_SET;
}

/* Stanza addressed to a hosted domain itself (or domain/resource). */
static void to_server(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind == MP_KIND_IQ) {
        if (is_request(env->type)) {
            if (mp_iq_dispatch(st, MP_IQ_SERVER) != MAGPIE_OK) {
                mp_route_bounce(st, "cancel", "service-unavailable", NULL);
                return;
            }
        } else {
            mp_route_hooks_run(MP_ROUTE_IQ_RESULT, NULL, st);
        }
    } else {
        mp_route_hooks_run(MP_ROUTE_TO_HOST, NULL, st);
    }
    mp_stanza_unref(st);
}

static void account_iq_checked(void *ud, int rc)
{
    mp_stanza *st = ud;
    if (rc == MAGPIE_OK && mp_iq_dispatch(st, MP_IQ_ACCOUNT) == MAGPIE_OK) {
        mp_stanza_unref(st);
        return;
    }
    mp_route_bounce(st, "cancel", "service-unavailable", NULL);
}

/* Stanza addressed to a local account's bare JID (RFC 6121 §8.5.2). */
static void to_bare(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    const mp_jid *to = &env->to;
    enum mp_stanza_type type = env->type;
    struct mp_dir_res buf[TARGETS_INLINE], *heap, *t;
    size_t n;

    if (env->kind == MP_KIND_MESSAGE) {
        if (type == MP_TYPE_ERROR) {
            mp_stanza_unref(st);
            return;
        }
        if (type == MP_TYPE_GROUPCHAT) {
            mp_route_bounce(st, "cancel", "service-unavailable", NULL);
            return;
        }
        n = select_targets(to->bare, type == MP_TYPE_HEADLINE ? SELECT_NONNEGATIVE : SELECT_HIGHEST,
                           buf, &heap, &t);
        if (n > 0) {
            deliver_all(t, n, st);
        } else if (type == MP_TYPE_HEADLINE) {
            mp_stanza_unref(st);
        } else if (mp_route_hooks_run(MP_ROUTE_MESSAGE_OFFLINE, NULL, st) == HOOK_HANDLED) {
            mp_stanza_unref(st);
        } else {
            mp_route_bounce(st, "cancel", "service-unavailable", NULL);
        }
        free(heap);
        return;
    }

    if (env->kind == MP_KIND_PRESENCE) {
        if (type == MP_TYPE_ERROR ||
            (type == MP_TYPE_PROBE &&
             mp_route_hooks_run(MP_ROUTE_PRESENCE_PROBE, NULL, st) == HOOK_HANDLED) ||
            type == MP_TYPE_PROBE ||
            (is_subscription(type) &&
             mp_route_hooks_run(MP_ROUTE_PRESENCE_SUBSCRIPTION, NULL, st) == HOOK_HANDLED)) {
            mp_stanza_unref(st);
            return;
        }
        n = select_targets(to->bare, is_subscription(type) ? SELECT_NONNEGATIVE : SELECT_AVAILABLE,
                           buf, &heap, &t);
        deliver_all(t, n, st);
        free(heap);
        return;
    }

    /* iq: the server answers on the account's behalf */
    if (is_request(type)) {
        if (env->from.domain && strcmp(env->from.bare, to->bare) != 0 &&
            mp_route_hooks_run(MP_ROUTE_IQ_ACCOUNT, NULL, st) == HOOK_HANDLED) {
            mp_stanza_unref(st);
            return;
        }
        if (mp_account_exists(to->domain, to->local, account_iq_checked, st) != MAGPIE_OK)
            mp_route_bounce(st, "wait", "internal-server-error", NULL);
        return;
    }
    mp_route_hooks_run(MP_ROUTE_IQ_RESULT, NULL, st);
    mp_stanza_unref(st);
}

/* Stanza addressed to a full JID. */
static void to_full(mp_stanza *st)
{
    const mp_jid *to = &mp_stanza_envelope(st)->to;
    struct mp_sref who;
    if (mp_directory->lookup_full(to, &who) == MAGPIE_OK) {
        deliver_one(who, st);
        return;
    }
    mp_router_undeliverable(st);
}

void mp_router_undeliverable(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    enum mp_stanza_type type = env->type;
    if (!env->to.domain) {
        mp_stanza_unref(st);
        return;
    }
    /* RFC 6121 §8.5.3.2: no such resource */
    if (env->kind == MP_KIND_MESSAGE) {
        if (type == MP_TYPE_GROUPCHAT)
            mp_route_bounce(st, "cancel", "service-unavailable", NULL);
        else if (type == MP_TYPE_HEADLINE || type == MP_TYPE_ERROR)
            mp_stanza_unref(st);
        else
            to_bare(st);
    } else if (env->kind == MP_KIND_PRESENCE) {
        if (is_subscription(type))
            to_bare(st);
        else
            mp_stanza_unref(st);
    } else if (is_request(type)) {
        mp_route_bounce(st, "cancel", "service-unavailable", NULL);
    } else {
        mp_stanza_unref(st);
    }
}

/* Hands st (taken) to service domain d on the calling worker; a request
 * nobody answered bounces with service-unavailable. */
static void domain_deliver(mp_domain *d, mp_stanza *st)
{
    mp_stanza *reply;
    if (mp_domain_dispatch(d, st, &reply) == HOOK_HANDLED) {
        if (reply)
            mp_route(reply);
        mp_stanza_unref(st);
        return;
    }
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind == MP_KIND_IQ && (env->type == MP_TYPE_GET || env->type == MP_TYPE_SET))
        mp_route_bounce(st, "cancel", "service-unavailable", NULL);
    else
        mp_stanza_unref(st);
}

void mp_iq_reply(mp_stanza *reply)
{
    mp_route(reply);
}

void mp_iq_reply_error(const mp_stanza *iq, const char *type, const char *condition)
{
    mp_stanza *e = mp_stanza_copy(iq);
    mp_stanza_make_error(e, type, condition, NULL);
    mp_route(e);
}

/* ---- entities ----
 * A 'to' names one of these kinds of destination. */
enum entity_kind {
    ENTITY_SESSION, /* an account on a virtual host: its client sessions */
    ENTITY_HOST,    /* a virtual host itself (the server answers) */
    ENTITY_DOMAIN,  /* a service domain a module serves (MUC, upload, ...) */
    ENTITY_REMOTE,  /* a domain not served here: the route-remote hook (s2s) */
    /* devices will be entities of a service domain (the gateway module's) */
};

static enum entity_kind entity_of(const mp_jid *to, mp_domain **d)
{
    if (mp_host_is_local(to->domain))
        return to->local ? ENTITY_SESSION : ENTITY_HOST;
    if ((*d = mp_domain_find(to->domain)))
        return ENTITY_DOMAIN;
    return ENTITY_REMOTE;
}

struct domain_job {
    mp_domain *d;
    mp_stanza *st;
};

static void domain_run(void *arg)
{
    struct domain_job *j = arg;
    domain_deliver(j->d, j->st);
    free(j);
}

/* Hands st (taken) to service domain d on the worker that owns its bare
 * 'to' JID (one room, one device: always the same worker, so the module
 * needs no locks for per-entity state and order is kept). */
static void to_domain(mp_domain *d, mp_stanza *st)
{
    const char *bare = mp_stanza_envelope(st)->to.bare;
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)bare; *p; p++)
        h = (h ^ *p) * 16777619u;
    struct mp_worker *w = &mp_server.workers[h % (uint32_t)mp_server.n_workers];
    if (w->loop == mp_loop_current()) {
        domain_deliver(d, st);
        return;
    }
    struct domain_job *j = mp_malloc(sizeof *j);
    j->d = d;
    j->st = st;
    if (mp_loop_post(w->loop, domain_run, j) != MAGPIE_OK) {
        free(j);
        mp_route_bounce(st, "wait", "resource-constraint", NULL);
    }
}

void mp_route(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->to_bad) {
        mp_route_bounce(st, "modify", "jid-malformed", NULL);
        return;
    }
    const mp_jid *to = &env->to;
    if (!to->domain) {
        mp_log(MP_LOG_DEBUG, "dropping server stanza <%s/> without 'to'", mp_stanza_root(st)->name);
        mp_stanza_unref(st);
        return;
    }
    mp_domain *d = NULL;
    switch (entity_of(to, &d)) {
    case ENTITY_REMOTE:
        if (mp_route_hooks_run(MP_ROUTE_REMOTE, NULL, st) == HOOK_HANDLED)
            mp_stanza_unref(st);
        else
            mp_route_bounce(st, "cancel", "remote-server-not-found", NULL);
        break;
    case ENTITY_DOMAIN:
        to_domain(d, st);
        break;
    case ENTITY_HOST:
        to_server(st);
        break;
    case ENTITY_SESSION:
        if (env->kind == MP_KIND_MESSAGE && mp_route_hooks_any(MP_ROUTE_MESSAGE_ACCOUNT)) {
            /* the handlers may modify it: give them a stanza of their own
             * (the children are copied only if one adds to the root) */
            if (mp_stanza_is_shared(st)) {
                mp_stanza *own = mp_stanza_copy_envelope(st);
                mp_stanza_set_ack(own, mp_stanza_get_ack(st)); /* same sender's stanza */
                mp_stanza_unref(st);
                st = own;
            }
            if (mp_route_hooks_run(MP_ROUTE_MESSAGE_ACCOUNT, NULL, st) == HOOK_HANDLED) {
                mp_stanza_unref(st);
                break;
            }
            env = mp_stanza_envelope(st);
            to = &env->to;
        }
        if (to->resource)
            to_full(st);
        else
            to_bare(st);
        break;
    }
}

/* ---- sessions ---- */

/* Kicks the session `id` (posted to its worker): a newer bind of its full
 * JID took its directory entry. */
static void kick_run(void *arg)
{
    uint64_t *id = arg;
    mp_session *old = local_sessions ? mp_idmap_del(local_sessions, *id) : NULL;
    if (old) {
        mp_presence_forget(*id);
        mp_session_replaced(old);
    }
    free(id);
}

int mp_router_bind(mp_session *s, mp_session **replaced)
{
    const mp_jid *j = mp_session_jid(s);
    *replaced = NULL;
    struct mp_sref who = {mp_session_id(s), mp_session_worker(s)->id, mp_session_outq(s)};
    mp_idmap_put(sessions_here(), who.id, s);
    struct mp_sref old;
    if (mp_directory->bind(j, who, &old) != MAGPIE_AGAIN)
        return MAGPIE_OK;
    if (old.worker == who.worker) {
        mp_session *o = mp_idmap_del(sessions_here(), old.id);
        if (o) {
            mp_presence_forget(old.id);
            mp_session_ref(o);
            *replaced = o;
        }
        return MAGPIE_OK;
    }
    uint64_t *id = mp_malloc(sizeof *id);
    *id = old.id;
    if (mp_loop_post(mp_server.workers[old.worker].loop, kick_run, id) != MAGPIE_OK)
        free(id);
    return MAGPIE_OK;
}

/* A session to end, posted to its worker. */
struct end_job {
    uint64_t id;
    char *condition; /* NULL: clean close */
    char *text;
};

static void end_run(void *arg)
{
    struct end_job *j = arg;
    mp_session *s = local_sessions ? mp_idmap_get(local_sessions, j->id) : NULL;
    if (s)
        MP_SESSION_BASE(s)->ops->close(s, j->condition, j->text);
    free(j->condition);
    free(j->text);
    free(j);
}

static int post_end(struct mp_sref who, const char *condition, const char *text)
{
    struct end_job *j = mp_malloc(sizeof *j);
    j->id = who.id;
    j->condition = condition ? mp_strdup(condition) : NULL;
    j->text = text ? mp_strdup(text) : NULL;
    if (mp_loop_post(mp_server.workers[who.worker].loop, end_run, j) != MAGPIE_OK) {
        free(j->condition);
        free(j->text);
        free(j);
        return 0;
    }
    return 1;
}

struct sref_list {
    struct mp_sref *v;
    size_t n, cap;
};

static void collect_res(void *ud, const struct mp_dir_res *r, const char *resource)
{
    (void)resource;
    struct sref_list *l = ud;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->v = mp_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = r->who;
}

size_t mp_sessions_end(const mp_jid *jid, const char *condition, const char *text)
{
    if (!jid || !jid->domain)
        return 0;
    if (jid->resource) {
        struct mp_sref who;
        if (mp_directory->lookup_full(jid, &who) != MAGPIE_OK)
            return 0;
        return (size_t)post_end(who, condition, text);
    }
    struct sref_list l = {NULL, 0, 0};
    mp_directory->resources(jid->bare, collect_res, &l);
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++)
        n += (size_t)post_end(l.v[i], condition, text);
    free(l.v);
    return n;
}

void mp_account_deleted(const char *domain, const char *user)
{
    mp_notify_account_deleted(domain, user);
    mp_jid j;
    if (mp_jid_set(&j, user, domain, NULL) == MAGPIE_OK)
        mp_sessions_end(&j, "not-authorized", "Account deleted");
    mp_jid_free(&j);
}

int mp_is_admin(const mp_jid *jid)
{
    const struct mp_config *cfg = mp_server.cfg;
    if (!jid || !jid->bare)
        return 0;
    for (size_t i = 0; i < cfg->n_admins; i++)
        if (strcmp(cfg->admins[i], jid->bare) == 0)
            return 1;
    return 0;
}

/* ---- listing every bound session (mp_sessions_list) ----
 * One job per worker collects the full JIDs of its sessions into a shared
 * list; the last one posts the answer to the caller's loop. */
struct list_job {
    pthread_mutex_t mu;
    int pending; /* workers still to answer */
    char *host;  /* NULL: all */
    char **jids;
    size_t n, cap;
    mp_loop *caller;
    void (*cb)(void *ud, const char *const *jids, size_t n);
    void *ud;
};

static void list_job_free(struct list_job *j)
{
    for (size_t i = 0; i < j->n; i++)
        free(j->jids[i]);
    free(j->jids);
    free(j->host);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

static void list_answer(void *arg)
{
    struct list_job *j = arg;
    j->cb(j->ud, (const char *const *)j->jids, j->n);
    list_job_free(j);
}

static void list_collect_one(void *ud, uint64_t id, void *value)
{
    (void)id;
    struct list_job *j = ud;
    const mp_jid *jid = mp_session_jid(value);
    if (!jid || !jid->full || (j->host && strcmp(jid->domain, j->host) != 0))
        return;
    if (j->n == j->cap) {
        j->cap = j->cap ? 2 * j->cap : 16;
        j->jids = mp_realloc(j->jids, j->cap * sizeof *j->jids);
    }
    j->jids[j->n++] = mp_strdup(jid->full);
}

/* Marks one worker done; the last posts the answer. */
static void list_done_one(struct list_job *j)
{
    pthread_mutex_lock(&j->mu);
    int last = --j->pending == 0;
    pthread_mutex_unlock(&j->mu);
    if (last && mp_loop_post(j->caller, list_answer, j) != MAGPIE_OK)
        list_job_free(j);
}

static void list_run(void *arg)
{
    struct list_job *j = arg;
    if (local_sessions) {
        pthread_mutex_lock(&j->mu);
        mp_idmap_foreach(local_sessions, list_collect_one, j);
        pthread_mutex_unlock(&j->mu);
    }
    list_done_one(j);
}

int mp_sessions_list(const char *host, void (*cb)(void *ud, const char *const *jids, size_t n),
                     void *ud)
{
    mp_loop *caller = mp_loop_current();
    if (!caller || !cb)
        return MAGPIE_ERR;
    struct list_job *j = mp_calloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    j->host = host ? mp_strdup(host) : NULL;
    j->caller = caller;
    j->cb = cb;
    j->ud = ud;
    j->pending = mp_server.n_workers + 1; /* +1: this call, so none finishes early */
    for (int i = 0; i < mp_server.n_workers; i++)
        if (mp_loop_post(mp_server.workers[i].loop, list_run, j) != MAGPIE_OK)
            list_done_one(j);
    list_done_one(j);
    return MAGPIE_OK;
}

struct moved {
    uint64_t id;
    mp_session *s; /* referenced */
    struct mp_worker *to;
};

/* On the new worker, after the barrier: everything routed to the old
 * worker before the directory moved has been forwarded ahead of this job,
 * so what was held here may go now, in order. */
static void release_run(void *arg)
{
    struct moved *m = arg;
    struct mp_session_base *b = MP_SESSION_BASE(m->s);
    b->moving = 0;
    size_t n = b->n_held;
    mp_stanza **v = b->held;
    b->held = NULL;
    b->n_held = b->cap_held = 0;
    for (size_t i = 0; i < n; i++)
        if (deliver_session(m->s, v[i]) != MAGPIE_OK)
            mp_router_undeliverable(v[i]);
    free(v);
    mp_session_unref(m->s);
    free(m);
}

/* On the old worker, behind every delivery routed here before the
 * directory moved (each was forwarded to the new worker): the session is
 * forgotten here, and the new worker may deliver what it held. */
static void barrier_run(void *arg)
{
    struct moved *m = arg;
    if (local_sessions && mp_idmap_get(local_sessions, m->id) == m->s)
        mp_idmap_del(local_sessions, m->id);
    if (mp_loop_post(m->to->loop, release_run, m) != MAGPIE_OK) {
        mp_session_unref(m->s);
        free(m);
    }
}

void mp_router_session_arrive(mp_session *s, struct mp_worker *old, mp_stanza *presence)
{
    uint64_t id = mp_session_id(s);
    mp_idmap_put(sessions_here(), id, s);
    if (presence)
        mp_presence_store(id, presence);
    /* direct deliveries wait here until the old worker's barrier */
    MP_SESSION_BASE(s)->moving = 1;
    mp_directory->move(mp_session_jid(s), id, mp_session_worker(s)->id);
    struct moved *m = mp_malloc(sizeof *m);
    m->id = id;
    m->s = s;
    m->to = mp_session_worker(s);
    mp_session_ref(s);
    if (mp_loop_post(old->loop, barrier_run, m) != MAGPIE_OK) {
        MP_SESSION_BASE(s)->moving = 0;
        mp_session_unref(s);
        free(m);
    }
}

int mp_router_find_full(const char *full, uint64_t id, int *worker)
{
    mp_jid j;
    if (!full || mp_jid_parse(&j, full) != MAGPIE_OK)
        return MAGPIE_NOTFOUND;
    struct mp_sref who;
    int rc = j.resource ? mp_directory->lookup_full(&j, &who) : MAGPIE_NOTFOUND;
    mp_jid_free(&j);
    if (rc != MAGPIE_OK)
        return MAGPIE_NOTFOUND;
    if (who.outq)
        mp_waitq_unref(who.outq);
    if (who.id != id)
        return MAGPIE_NOTFOUND;
    *worker = who.worker;
    return MAGPIE_OK;
}

/* Sends an unavailable presence from s's full JID to the user's other
 * available resources. */
static void broadcast_unavailable(const mp_jid *j)
{
    struct mp_dir_res buf[TARGETS_INLINE], *heap, *t;
    size_t n = select_targets(j->bare, SELECT_AVAILABLE, buf, &heap, &t);
    if (n > 0) {
        mp_stanza *p = mp_stanza_new("presence", MP_NS_CLIENT);
        mp_xml_set_attr(p, mp_stanza_root(p), "from", j->full);
        mp_xml_set_attr(p, mp_stanza_root(p), "to", j->bare);
        mp_xml_set_attr(p, mp_stanza_root(p), "type", "unavailable");
        deliver_all(t, n, p);
    }
    free(heap);
}

void mp_router_unbind(mp_session *s)
{
    const mp_jid *j = mp_session_jid(s);
    uint64_t id = mp_session_id(s);
    if (local_sessions && mp_idmap_get(local_sessions, id) == s)
        mp_idmap_del(local_sessions, id);
    mp_presence_forget(id);
    int was_available = 0;
    if (mp_directory->unbind(j, id, &was_available) != MAGPIE_OK)
        return;
    if (was_available)
        broadcast_unavailable(j);
}

struct snap {
    char *resource;
    int prio;
};

struct snaps {
    struct snap *v;
    size_t n;
};

static void snap_res(void *ud, const struct mp_dir_res *r, const char *resource)
{
    struct snaps *sn = ud;
    if (!r->available)
        return;
    sn->v = mp_realloc(sn->v, (sn->n + 1) * sizeof *sn->v);
    sn->v[sn->n++] = (struct snap){mp_strdup(resource), r->priority};
}

void mp_sessions_foreach(const char *bare, void (*fn)(void *, const char *, int), void *ud)
{
    struct snaps sn = {NULL, 0};
    mp_directory->resources(bare, snap_res, &sn);
    for (size_t i = 0; i < sn.n; i++) {
        size_t bl = strlen(bare), rl = strlen(sn.v[i].resource);
        char *full = mp_malloc(bl + rl + 2);
        memcpy(full, bare, bl);
        full[bl] = '/';
        memcpy(full + bl + 1, sn.v[i].resource, rl + 1);
        fn(ud, full, sn.v[i].prio);
        free(full);
        free(sn.v[i].resource);
    }
    free(sn.v);
}

/* Asks the worker of session `owner` to send owner's last available
 * presence to the newly available session `to` (full JID `full`). */
struct share {
    uint64_t owner;
    struct mp_sref to;
    char full[];
};

static void share_run(void *arg)
{
    struct share *sh = arg;
    mp_stanza *last = mp_presence_last(sh->owner); /* a new stanza, ours */
    if (last) {
        mp_xml_set_attr(last, mp_stanza_root(last), "to", sh->full);
        deliver_one(sh->to, last);
    }
    free(sh);
}

static void share_presence(uint64_t owner, int owner_worker, struct mp_sref to, const char *full)
{
    size_t fl = strlen(full);
    struct share *sh = mp_malloc(sizeof *sh + fl + 1);
    sh->owner = owner;
    sh->to = to;
    memcpy(sh->full, full, fl + 1);
    struct mp_worker *w = &mp_server.workers[owner_worker];
    if (w->loop == mp_loop_current())
        share_run(sh);
    else if (mp_loop_post(w->loop, share_run, sh) != MAGPIE_OK)
        free(sh);
}

/* Presence without 'to' from a client: RFC 6121 §4.2 and §4.5 for the
 * user's own resources; a roster module reaches contacts from the
 * presence_changed notification. */
static void client_presence(mp_session *s, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    enum mp_stanza_type type = mp_stanza_envelope(st)->type;
    const mp_jid *j = mp_session_jid(s);
    if (type != MP_TYPE_NONE && type != MP_TYPE_UNAVAILABLE) {
        /* subscription or probe without 'to': nothing to do */
        mp_stanza_unref(st);
        return;
    }
    int available = type == MP_TYPE_NONE;
    if (available) {
        /* kept for the session's life (here and by a roster module): a
         * copy sized to fit instead of the parser's arena, a third of the
         * bytes for a plain <presence/> */
        mp_stanza *c = mp_stanza_copy_compact(st);
        mp_stanza_unref(st);
        st = c;
        root = mp_stanza_root(st);
    }
    int priority = 0;
    mp_xml *p = mp_xml_find(root, "priority", NULL);
    if (p) {
        priority = atoi(mp_xml_text(st, p));
        if (priority < -128)
            priority = -128;
        if (priority > 127)
            priority = 127;
    }
    uint64_t id = mp_session_id(s);
    int was_available = 0;
    mp_directory->set_presence(j, id, available, priority, &was_available);
    mp_presence_store(id, available ? st : NULL);
    mp_notify_presence_changed(s, st, available);

    /* to every available resource of the user, including the sender */
    struct mp_dir_res buf[TARGETS_INLINE + 1], *heap, *t;
    size_t n = select_targets(j->bare, SELECT_AVAILABLE, buf, &heap, &t);
    struct mp_sref self = {id, mp_session_worker(s)->id, NULL};
    if (!available) {
        /* the sender is no longer available but still gets its own echo */
        if (t == buf && n < TARGETS_INLINE + 1) {
            t[n++] = (struct mp_dir_res){self, 0, 0};
        } else {
            heap = mp_realloc(heap, (n + 1) * sizeof *heap);
            if (t != heap)
                memcpy(heap, t, n * sizeof *t);
            t = heap;
            t[n++] = (struct mp_dir_res){self, 0, 0};
        }
    }
    /* is this the session's first available presence? then it also gets
     * the presence of the user's other available resources, each sent by
     * the worker holding it */
    deliver_all(t, n, st);
    if (available && !was_available)
        for (size_t i = 0; i < n; i++)
            if (t[i].who.id != id)
                share_presence(t[i].who.id, t[i].who.worker, self, j->full);
    free(heap);
}

void mp_router_from_client(mp_session *s, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    const char *to = env->to.domain ? env->to.full : NULL;
    const mp_jid *j = mp_session_jid(s);

    if (env->kind == MP_KIND_PRESENCE && !to) {
        client_presence(s, st);
        return;
    }
    if (env->kind == MP_KIND_IQ && (!to || strcmp(to, j->bare) == 0)) {
        /* RFC 6120 §10.3.3: handled by the server on the account's behalf */
        if (is_request(env->type)) {
            if (mp_iq_dispatch(st, MP_IQ_ACCOUNT) != MAGPIE_OK &&
                (to || mp_iq_dispatch(st, MP_IQ_SERVER) != MAGPIE_OK)) {
                mp_route_bounce(st, "cancel", "service-unavailable", NULL);
                return;
            }
        } else {
            mp_route_hooks_run(MP_ROUTE_IQ_RESULT, s, st);
        }
        mp_stanza_unref(st);
        return;
    }
    if (!to) {
        /* RFC 6120 §10.3.1: a message without 'to' is for the sender's bare JID */
        mp_jid bare = *j;
        bare.resource = NULL;
        bare.full = bare.bare;
        mp_stanza_set_to(st, &bare);
    }
    mp_route(st);
}
