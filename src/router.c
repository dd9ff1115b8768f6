/* router.c - the session table and RFC 6121 §8 delivery rules.
 *
 * The table maps a bare JID to its bound resources: (resource, session,
 * owning worker, availability, priority, last available presence). It is
 * shared by all workers behind a read-write lock held only for lookups and
 * updates, never while delivering: delivery references each target session
 * and hands the stanza to the session's worker (directly when it is the
 * calling worker, else through that worker's FIFO queue), so what one
 * sender sends to one recipient keeps its order.
 *
 * A stanza is immutable once routed: every recipient gets a reference to
 * the same tree (and a per-recipient change is a copy of the envelope,
 * mp_stanza_copy_envelope). The sessions one stanza is handed to form a
 * fan-out; if none of them can take it (they went away meanwhile), the
 * stanza is undeliverable, and that is handled once, by the last attempt.
 * Delivery notes the recipient's output queue and the worker queue for
 * backpressure (pressure.c), so a sender that floods a slow recipient is
 * paused instead of the recipient being cut off.
 *
 * Stanzas for domains this server does not host go to the "route-remote"
 * hook (federation will take them) and otherwise bounce with
 * remote-server-not-found. */
#include "core.h"
#include "accounts.h"

#include <stdlib.h>
#include <string.h>

struct res_entry {
    char *resource;
    mp_session *s; /* referenced */
    struct mp_worker *w;
    int available;
    int priority;
    mp_stanza *presence; /* last available presence, referenced */
};

struct user_entry {
    struct res_entry *v;
    size_t n;
};

static mp_table *users;
static pthread_rwlock_t table_lock = PTHREAD_RWLOCK_INITIALIZER;
static atomic_size_t bound_count;

/* A referenced target collected under the lock, delivered after it. */
struct target {
    mp_session *s;
    struct mp_worker *w;
};

struct delivery {
    mp_session *s;
    mp_stanza *st;
    struct mp_fanout *fo;
};

int mp_router_init(void)
{
    users = mp_table_new(1024);
    return MAGPIE_OK;
}

static void free_user(void *v)
{
    struct user_entry *u = v;
    for (size_t i = 0; i < u->n; i++) {
        free(u->v[i].resource);
        mp_session_unref(u->v[i].s);
        if (u->v[i].presence)
            mp_stanza_unref(u->v[i].presence);
    }
    free(u->v);
    free(u);
}

void mp_router_free(void)
{
    mp_table_free(users, free_user);
    users = NULL;
}

size_t mp_router_count(void)
{
    return atomic_load(&bound_count);
}

int mp_host_is_local(const char *domain)
{
    const struct mp_config *cfg = mp_server.cfg;
    for (size_t i = 0; i < cfg->n_hosts; i++)
        if (strcmp(cfg->hosts[i].domain, domain) == 0)
            return 1;
    return 0;
}

/* ---- delivery ---- */

/* Hands st (taken) to s on its own worker and records the attempt. */
static void deliver_here(mp_session *s, mp_stanza *st, struct mp_fanout *fo)
{
    int ok = mp_c2s_deliver(s, st) == MAGPIE_OK;
    if (!ok)
        mp_stanza_unref(st);
    mp_fanout_done(fo, ok);
    mp_session_unref(s);
}

static void delivery_run(void *arg)
{
    struct delivery *d = arg;
    deliver_here(d->s, d->st, d->fo);
    free(d);
}

/* Hands st (taken) to session s (reference taken) on worker w, as one
 * attempt of fo. */
static void deliver(mp_session *s, struct mp_worker *w, mp_stanza *st, struct mp_fanout *fo)
{
    if (w->loop == mp_loop_current()) {
        deliver_here(s, st, fo);
        return;
    }
    /* a recipient that is not reading pauses whoever keeps sending to it */
    mp_pressure_note(mp_session_outq(s));
    struct delivery *d = mp_malloc(sizeof *d);
    d->s = s;
    d->st = st;
    d->fo = fo;
    if (mp_loop_post(w->loop, delivery_run, d) != MAGPIE_OK) {
        mp_stanza_unref(st);
        mp_fanout_done(fo, 0);
        mp_session_unref(s);
        free(d);
    }
}

/* Delivers st (taken) to every target (references taken) as one fan-out;
 * with no target, st is simply released. */
static void deliver_all(struct target *t, size_t n, mp_stanza *st)
{
    if (n > 0) {
        struct mp_fanout *fo = mp_fanout_new(st, (int)n, mp_router_undeliverable);
        for (size_t i = 0; i < n; i++)
            deliver(t[i].s, t[i].w, mp_stanza_ref(st), fo);
    }
    mp_stanza_unref(st);
}

/* Delivers st (taken) to one session (reference taken). */
static void deliver_one(mp_session *s, struct mp_worker *w, mp_stanza *st)
{
    struct mp_fanout *fo = mp_fanout_new(st, 1, mp_router_undeliverable);
    deliver(s, w, st, fo);
}

enum select_rule {
    SELECT_AVAILABLE,   /* every available resource */
    SELECT_NONNEGATIVE, /* available, priority >= 0 */
    SELECT_HIGHEST,     /* available, priority >= 0, highest only */
};

/* Collects referenced targets of bare JID by rule into a new array the
 * caller frees. Returns the count. */
static size_t select_targets(const char *bare, enum select_rule rule, struct target **out)
{
    *out = NULL;
    size_t n = 0;
    pthread_rwlock_rdlock(&table_lock);
    struct user_entry *u = mp_table_get(users, bare);
    if (u) {
        int best = -129;
        if (rule == SELECT_HIGHEST)
            for (size_t i = 0; i < u->n; i++)
                if (u->v[i].available && u->v[i].priority >= 0 && u->v[i].priority > best)
                    best = u->v[i].priority;
        *out = mp_malloc(u->n * sizeof **out);
        for (size_t i = 0; i < u->n; i++) {
            struct res_entry *r = &u->v[i];
            int ok = r->available && (rule == SELECT_AVAILABLE || r->priority >= 0) &&
                     (rule != SELECT_HIGHEST || r->priority == best);
            if (ok) {
                mp_session_ref(r->s);
                (*out)[n++] = (struct target){r->s, r->w};
            }
        }
    }
    pthread_rwlock_unlock(&table_lock);
    return n;
}

/* ---- bounces ---- */

void mp_route_bounce(mp_stanza *st, const char *type, const char *condition, const char *text)
{
    mp_xml *root = mp_stanza_root(st);
    const char *t = mp_xml_get_attr(root, "type");
    if ((t && strcmp(t, "error") == 0) || !mp_xml_get_attr(root, "from") ||
        (strcmp(root->name, "iq") == 0 && t && strcmp(t, "result") == 0)) {
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

static int is_type(const char *type, const char *want)
{
    return type && strcmp(type, want) == 0;
}

static int is_subscription(const char *type)
{
    return is_type(type, "subscribe") || is_type(type, "subscribed") ||
           is_type(type, "unsubscribe") || is_type(type, "unsubscribed");
}

/* Stanza addressed to a hosted domain itself (or domain/resource). */
static void to_server(mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    const char *type = mp_xml_get_attr(root, "type");
    if (strcmp(root->name, "iq") == 0) {
        if (is_type(type, "get") || is_type(type, "set")) {
            if (mp_iq_dispatch(st, MP_IQ_SERVER) != MAGPIE_OK) {
                mp_route_bounce(st, "cancel", "service-unavailable", NULL);
                return;
            }
        } else {
            mp_hook_run("iq-result", NULL, st, NULL);
        }
    } else if (strcmp(root->name, "message") == 0) {
        mp_hook_run("message-to-server", NULL, st, NULL);
    } else {
        mp_hook_run("presence-to-server", NULL, st, NULL);
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
static void to_bare(mp_stanza *st, const mp_jid *to)
{
    mp_xml *root = mp_stanza_root(st);
    const char *type = mp_xml_get_attr(root, "type");
    struct target *t = NULL;
    size_t n;

    if (strcmp(root->name, "message") == 0) {
        if (is_type(type, "error")) {
            mp_stanza_unref(st);
            return;
        }
        if (is_type(type, "groupchat")) {
            mp_route_bounce(st, "cancel", "service-unavailable", NULL);
            return;
        }
        n = select_targets(to->bare,
                           is_type(type, "headline") ? SELECT_NONNEGATIVE : SELECT_HIGHEST, &t);
        if (n > 0) {
            deliver_all(t, n, st);
        } else if (is_type(type, "headline")) {
            mp_stanza_unref(st);
        } else if (mp_hook_run("message-offline", NULL, st, NULL) == HOOK_HANDLED) {
            mp_stanza_unref(st);
        } else {
            mp_route_bounce(st, "cancel", "service-unavailable", NULL);
        }
        free(t);
        return;
    }

    if (strcmp(root->name, "presence") == 0) {
        if (is_type(type, "error") ||
            (is_type(type, "probe") &&
             mp_hook_run("presence-probe", NULL, st, NULL) == HOOK_HANDLED) ||
            is_type(type, "probe") ||
            (is_subscription(type) &&
             mp_hook_run("presence-subscription", NULL, st, NULL) == HOOK_HANDLED)) {
            mp_stanza_unref(st);
            return;
        }
        n = select_targets(to->bare, is_subscription(type) ? SELECT_NONNEGATIVE : SELECT_AVAILABLE,
                           &t);
        deliver_all(t, n, st);
        free(t);
        return;
    }

    /* iq: the server answers on the account's behalf */
    if (is_type(type, "get") || is_type(type, "set")) {
        if (mp_account_exists(to->domain, to->local, account_iq_checked, st) != MAGPIE_OK)
            mp_route_bounce(st, "wait", "internal-server-error", NULL);
        return;
    }
    mp_hook_run("iq-result", NULL, st, NULL);
    mp_stanza_unref(st);
}

/* Stanza addressed to a full JID. */
static void to_full(mp_stanza *st, const mp_jid *to)
{
    struct target t = {NULL, NULL};
    pthread_rwlock_rdlock(&table_lock);
    struct user_entry *u = mp_table_get(users, to->bare);
    for (size_t i = 0; u && i < u->n; i++)
        if (strcmp(u->v[i].resource, to->resource) == 0) {
            t = (struct target){u->v[i].s, u->v[i].w};
            mp_session_ref(t.s);
            break;
        }
    pthread_rwlock_unlock(&table_lock);
    if (t.s) {
        deliver_one(t.s, t.w, st);
        return;
    }
    mp_router_undeliverable(st);
}

void mp_router_undeliverable(mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    const char *type = mp_xml_get_attr(root, "type");
    mp_jid to;
    if (mp_jid_parse(&to, mp_xml_get_attr(root, "to")) != MAGPIE_OK) {
        mp_stanza_unref(st);
        return;
    }
    /* RFC 6121 §8.5.3.2: no such resource */
    if (strcmp(root->name, "message") == 0) {
        if (is_type(type, "groupchat"))
            mp_route_bounce(st, "cancel", "service-unavailable", NULL);
        else if (is_type(type, "headline") || is_type(type, "error"))
            mp_stanza_unref(st);
        else
            to_bare(st, &to);
    } else if (strcmp(root->name, "presence") == 0) {
        if (is_subscription(type))
            to_bare(st, &to);
        else
            mp_stanza_unref(st);
    } else if (is_type(type, "get") || is_type(type, "set")) {
        mp_route_bounce(st, "cancel", "service-unavailable", NULL);
    } else {
        mp_stanza_unref(st);
    }
    mp_jid_free(&to);
}

void mp_route(mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    const char *to_s = mp_xml_get_attr(root, "to");
    if (!to_s) {
        mp_log(MP_LOG_DEBUG, "dropping server stanza <%s/> without 'to'", root->name);
        mp_stanza_unref(st);
        return;
    }
    mp_jid to;
    if (mp_jid_parse(&to, to_s) != MAGPIE_OK) {
        mp_route_bounce(st, "modify", "jid-malformed", NULL);
        return;
    }
    if (!mp_host_is_local(to.domain)) {
        if (mp_hook_run("route-remote", NULL, st, NULL) == HOOK_HANDLED)
            mp_stanza_unref(st);
        else
            mp_route_bounce(st, "cancel", "remote-server-not-found", NULL);
    } else if (!to.local) {
        to_server(st);
    } else if (to.resource) {
        to_full(st, &to);
    } else {
        to_bare(st, &to);
    }
    mp_jid_free(&to);
}

/* ---- sessions ---- */

static struct user_entry *user_get(const char *bare, int create)
{
    struct user_entry *u = mp_table_get(users, bare);
    if (!u && create) {
        u = mp_calloc(1, sizeof *u);
        mp_table_put(users, bare, u);
    }
    return u;
}

int mp_router_bind(mp_session *s, mp_session **replaced)
{
    const mp_jid *j = mp_session_jid(s);
    *replaced = NULL;
    mp_session_ref(s);
    pthread_rwlock_wrlock(&table_lock);
    struct user_entry *u = user_get(j->bare, 1);
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->v[i].resource, j->resource) == 0) {
            struct res_entry *r = &u->v[i];
            *replaced = r->s; /* the table's reference passes to the caller */
            if (r->presence)
                mp_stanza_unref(r->presence);
            *r = (struct res_entry){r->resource, s, mp_session_worker(s), 0, 0, NULL};
            pthread_rwlock_unlock(&table_lock);
            return MAGPIE_OK;
        }
    u->v = mp_realloc(u->v, (u->n + 1) * sizeof *u->v);
    u->v[u->n++] = (struct res_entry){mp_strdup(j->resource), s, mp_session_worker(s), 0, 0, NULL};
    atomic_fetch_add(&bound_count, 1);
    pthread_rwlock_unlock(&table_lock);
    return MAGPIE_OK;
}

/* Sends an unavailable presence from s's full JID to the user's other
 * available resources. */
static void broadcast_unavailable(const mp_jid *j)
{
    struct target *t;
    size_t n = select_targets(j->bare, SELECT_AVAILABLE, &t);
    if (n > 0) {
        mp_stanza *p = mp_stanza_new("presence", MP_NS_CLIENT);
        mp_xml_set_attr(p, mp_stanza_root(p), "from", j->full);
        mp_xml_set_attr(p, mp_stanza_root(p), "to", j->bare);
        mp_xml_set_attr(p, mp_stanza_root(p), "type", "unavailable");
        deliver_all(t, n, p);
    }
    free(t);
}

void mp_router_unbind(mp_session *s)
{
    const mp_jid *j = mp_session_jid(s);
    int was_available = 0, found = 0;
    pthread_rwlock_wrlock(&table_lock);
    struct user_entry *u = user_get(j->bare, 0);
    for (size_t i = 0; u && i < u->n; i++)
        if (u->v[i].s == s) {
            struct res_entry *r = &u->v[i];
            was_available = r->available;
            free(r->resource);
            if (r->presence)
                mp_stanza_unref(r->presence);
            u->v[i] = u->v[--u->n];
            found = 1;
            break;
        }
    if (u && u->n == 0) {
        mp_table_del(users, j->bare);
        free(u->v);
        free(u);
    }
    if (found)
        atomic_fetch_sub(&bound_count, 1);
    pthread_rwlock_unlock(&table_lock);
    if (!found)
        return;
    if (was_available)
        broadcast_unavailable(j);
    mp_session_unref(s);
}

void mp_router_set_presence(mp_session *s, int available, int priority, mp_stanza *presence)
{
    const mp_jid *j = mp_session_jid(s);
    pthread_rwlock_wrlock(&table_lock);
    struct user_entry *u = user_get(j->bare, 0);
    for (size_t i = 0; u && i < u->n; i++)
        if (u->v[i].s == s) {
            struct res_entry *r = &u->v[i];
            r->available = available;
            r->priority = priority;
            if (r->presence)
                mp_stanza_unref(r->presence);
            r->presence = presence ? mp_stanza_ref(presence) : NULL;
            break;
        }
    pthread_rwlock_unlock(&table_lock);
}

void mp_sessions_foreach(const char *bare, void (*fn)(void *, const char *, int), void *ud)
{
    struct snap {
        char *full;
        int prio;
    } *v = NULL;
    size_t n = 0;
    pthread_rwlock_rdlock(&table_lock);
    struct user_entry *u = mp_table_get(users, bare);
    if (u && u->n) {
        v = mp_malloc(u->n * sizeof *v);
        for (size_t i = 0; i < u->n; i++)
            if (u->v[i].available)
                v[n++] =
                    (struct snap){mp_strdup(mp_session_jid(u->v[i].s)->full), u->v[i].priority};
    }
    pthread_rwlock_unlock(&table_lock);
    for (size_t i = 0; i < n; i++) {
        fn(ud, v[i].full, v[i].prio);
        free(v[i].full);
    }
    free(v);
}

/* Presence without 'to' from a client: RFC 6121 §4.2 and §4.5, limited to
 * the user's own resources until rosters exist (the "presence-broadcast"
 * hook lets a roster module reach contacts). */
static void client_presence(mp_session *s, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    const char *type = mp_xml_get_attr(root, "type");
    const mp_jid *j = mp_session_jid(s);
    if (type && !is_type(type, "unavailable")) {
        /* subscription or probe without 'to': nothing to do */
        mp_stanza_unref(st);
        return;
    }
    int available = type == NULL;
    int priority = 0;
    mp_xml *p = mp_xml_find(root, "priority", NULL);
    if (p) {
        priority = atoi(mp_xml_text(st, p));
        if (priority < -128)
            priority = -128;
        if (priority > 127)
            priority = 127;
    }
    /* is this the session's first available presence? then it also gets
     * the presence of the user's other available resources */
    struct {
        mp_stanza *st;
    } *others = NULL;
    size_t n_others = 0;
    int was_available = 0;
    pthread_rwlock_wrlock(&table_lock);
    struct user_entry *u = user_get(j->bare, 0);
    for (size_t i = 0; u && i < u->n; i++) {
        struct res_entry *r = &u->v[i];
        if (r->s == s) {
            was_available = r->available;
            r->available = available;
            r->priority = priority;
            if (r->presence)
                mp_stanza_unref(r->presence);
            r->presence = available ? mp_stanza_ref(st) : NULL;
        }
    }
    if (available && !was_available && u) {
        others = mp_malloc(u->n * sizeof *others);
        for (size_t i = 0; i < u->n; i++)
            if (u->v[i].s != s && u->v[i].available && u->v[i].presence)
                others[n_others++].st = mp_stanza_ref(u->v[i].presence);
    }
    pthread_rwlock_unlock(&table_lock);

    mp_hook_run("presence-broadcast", s, st, NULL);
    /* to every available resource of the user, including the sender */
    struct target *t;
    size_t n = select_targets(j->bare, SELECT_AVAILABLE, &t);
    if (!available) {
        /* the sender is no longer available but still gets its own echo */
        t = mp_realloc(t, (n + 1) * sizeof *t);
        mp_session_ref(s);
        t[n++] = (struct target){s, mp_session_worker(s)};
    }
    deliver_all(t, n, st);
    free(t);
    for (size_t i = 0; i < n_others; i++) {
        /* the stored presence is shared: a new envelope carries the 'to' */
        mp_stanza *c = mp_stanza_copy_envelope(others[i].st);
        mp_xml_set_attr(c, mp_stanza_root(c), "to", j->full);
        mp_session_ref(s);
        deliver_one(s, mp_session_worker(s), c);
        mp_stanza_unref(others[i].st);
    }
    free(others);
}

void mp_router_from_client(mp_session *s, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    const char *to = mp_xml_get_attr(root, "to");
    const mp_jid *j = mp_session_jid(s);

    if (strcmp(root->name, "presence") == 0 && !to) {
        client_presence(s, st);
        return;
    }
    if (strcmp(root->name, "iq") == 0 && (!to || strcmp(to, j->bare) == 0)) {
        /* RFC 6120 §10.3.3: handled by the server on the account's behalf */
        const char *type = mp_xml_get_attr(root, "type");
        if (is_type(type, "get") || is_type(type, "set")) {
            if (mp_iq_dispatch(st, MP_IQ_ACCOUNT) != MAGPIE_OK &&
                (to || mp_iq_dispatch(st, MP_IQ_SERVER) != MAGPIE_OK)) {
                mp_route_bounce(st, "cancel", "service-unavailable", NULL);
                return;
            }
        } else {
            mp_hook_run("iq-result", s, st, NULL);
        }
        mp_stanza_unref(st);
        return;
    }
    if (!to) {
        /* RFC 6120 §10.3.1: a message without 'to' is for the sender's bare JID */
        mp_xml_set_attr(st, root, "to", j->bare);
    }
    mp_route(st);
}
