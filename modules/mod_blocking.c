/* mod_blocking - XEP-0191 Blocking Command.
 *
 * The blocklist of a user is kept in the map store "blocklist" (key =
 * username, field = blocked JID, value "1"), and in memory while the
 * user has a session: one table behind a mutex, shared by the workers
 * (a user's sessions may be on several), loaded when the first session
 * starts; until it is loaded the session's input is held
 * (mp_session_hold), so nothing the client sends escapes the list.
 *
 *   IQ get <blocklist/>, set <block/> and <unblock/> (account scope): the
 *     answer, and a push of each change to every resource that asked for
 *     the blocklist. Blocking a JID also sends it unavailable presence
 *     from the user's available resources (§3.3).
 *   inbound filter: a message or IQ request the user sends to a blocked
 *     JID gets not-acceptable with <blocked/> (§3.6); presence is dropped.
 *   outbound filter: a stanza from a blocked JID is not written to the
 *     user (an IQ request gets service-unavailable, §3.5), and nothing but
 *     unavailable presence is written from a user to a JID that user
 *     blocked (the roster module's broadcast, for instance).
 *   hooks message-account, presence-subscription, presence-probe and
 *     iq-account (run before mod_mam's, mod_push's, mod_offline's and
 *     mod_roster's: 10 > 5 > 0): a message, subscription stanza, probe or
 *     IQ request to a user's bare JID (one the server answers for the
 *     user: vCard, PEP, disco, last activity) from a JID the user blocked
 *     is refused before it is archived, stored, notified, delivered or
 *     answered: a message or IQ request gets service-unavailable (§3.5;
 *     error and headline messages silently), presence is dropped. This
 *     holds whether or not the user has a session: when the user's list
 *     is not in memory it is read from the store, and the user's stanzas
 *     wait meanwhile in a per-user FIFO (at most max_held; their senders'
 *     XEP-0198 acknowledgements deferred), then are judged and routed
 *     again in their order. The lists of users with no session stay in a cache of
 *     at most offline_cache users (least recently used dropped first), so
 *     a user with a cached list costs no store read; the cache is the same
 *     entry the user's sessions use, so a blocking command changes it, and
 *     an account deletion drops it. The message-offline hook also drops
 *     what a blocked JID sends (in memory already by then).
 *
 * A blocklist item matches a JID as in XEP-0016 §2.1: the full JID, the
 * bare JID, the domain, or domain/resource. */
#include <magpie/magpie.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_BLOCKING "urn:xmpp:blocking"
#define NS_ERRORS   "urn:xmpp:blocking:errors"
#define STORE       "blocklist"

static const struct mp_option options[] = {
    {"max_items", MP_OPT_INT, "1000", "Most JIDs one user may block", 1, 100000},
    {"offline_cache", MP_OPT_INT, "1000",
     "Blocklists of users with no session kept in memory (least recently used dropped)", 0,
     10000000},
    {"max_held", MP_OPT_INT, "1000",
     "Most stanzas held for one user while the blocklist loads (beyond: refused)", 1, 1000000},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;
static mp_counter *c_reads, *c_held, *c_refused;

struct strv {
    char **v;
    size_t n;
};

/* A stanza for a user whose blocklist is loading, with the deferred
 * acknowledgement of its sender (mp_stanza_defer_ack). */
struct hq {
    mp_stanza *st; /* referenced */
    mp_ack *ack;   /* NULL: none to defer */
    struct hq *next;
};

/* A user's blocklist. It is in the table while the user has a bound
 * session, while it loads, and while it is cached (no session: on the LRU
 * list, dropped when the cache is full; never while draining). */
struct blist {
    char *bare, *host, *local;
    int sessions; /* bound sessions of the user */
    int loaded;
    unsigned draining : 1;    /* held stanzas being routed (outside the lock) */
    unsigned stale : 1;       /* account deleted while loading: the answer is not the list */
    unsigned failed : 1;      /* the store could not be read: not cached */
    unsigned cached : 1;      /* on the LRU list */
    struct hq *hq, **hq_tail; /* stanzas held until the list is known, in order */
    size_t n_hq;
    struct blist *lru_prev, *lru_next;
    struct strv items;
    struct strv interested; /* full JIDs that asked for the blocklist */
    mp_stanza **pending;    /* IQs waiting for the load (referenced) */
    size_t n_pending;
    struct held *held; /* sessions whose input waits for the load */
    struct blist *next;
};

/* A session held until its user's blocklist is loaded: released on its
 * own worker. */
struct held {
    uint64_t sid;
    mp_loop *loop;
    struct held *next;
};

/* The users with a bound session, hashed by bare JID (every stanza to or
 * from a client looks its user up: a list scan cost O(online users)). */
static struct blist **buckets;
static size_t n_buckets, n_lists;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* The cached lists of users with no session: most recently used first. */
static struct blist *lru_head, *lru_tail;
static size_t n_cached;

static void strv_add(struct strv *s, const char *x)
{
    s->v = mp_realloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n++] = mp_strdup(x);
}

static int strv_find(const struct strv *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0)
            return (int)i;
    return -1;
}

static void strv_del(struct strv *s, const char *x)
{
    int i = strv_find(s, x);
    if (i >= 0) {
        free(s->v[i]);
        s->v[i] = s->v[--s->n];
    }
}

static void strv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static size_t bucket_of(const char *bare, size_t nb)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)bare; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h % nb);
}

static struct blist *find(const char *bare)
{
    if (!n_buckets)
        return NULL;
    for (struct blist *b = buckets[bucket_of(bare, n_buckets)]; b; b = b->next)
        if (strcmp(b->bare, bare) == 0)
            return b;
    return NULL;
}

/* Adds b to the table, doubling it when it holds as many lists as buckets. */
static void blist_insert(struct blist *b)
{
    if (n_lists >= n_buckets) {
        size_t nb = n_buckets ? 2 * n_buckets : 256;
        struct blist **nv = mp_calloc(nb, sizeof *nv);
        for (size_t i = 0; i < n_buckets; i++)
            while (buckets[i]) {
                struct blist *x = buckets[i];
                buckets[i] = x->next;
                size_t k = bucket_of(x->bare, nb);
                x->next = nv[k];
                nv[k] = x;
            }
        free(buckets);
        buckets = nv;
        n_buckets = nb;
    }
    size_t k = bucket_of(b->bare, n_buckets);
    b->next = buckets[k];
    buckets[k] = b;
    n_lists++;
}

static void lru_unlink(struct blist *b)
{
    if (!b->cached)
        return;
    if (b->lru_prev)
        b->lru_prev->lru_next = b->lru_next;
    else
        lru_head = b->lru_next;
    if (b->lru_next)
        b->lru_next->lru_prev = b->lru_prev;
    else
        lru_tail = b->lru_prev;
    b->lru_prev = b->lru_next = NULL;
    b->cached = 0;
    n_cached--;
}

static void lru_push(struct blist *b)
{
    b->lru_prev = NULL;
    b->lru_next = lru_head;
    if (lru_head)
        lru_head->lru_prev = b;
    else
        lru_tail = b;
    lru_head = b;
    b->cached = 1;
    n_cached++;
}

static void blist_free(struct blist *b)
{
    lru_unlink(b);
    while (b->hq) { /* only at unload */
        struct hq *q = b->hq;
        b->hq = q->next;
        mp_stanza_unref(q->st);
        mp_ack_done(q->ack);
        free(q);
    }
    n_lists--;
    for (struct blist **pp = &buckets[bucket_of(b->bare, n_buckets)]; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    strv_free(&b->items);
    strv_free(&b->interested);
    for (size_t i = 0; i < b->n_pending; i++)
        mp_stanza_unref(b->pending[i]);
    free(b->pending);
    while (b->held) {
        struct held *h = b->held;
        b->held = h->next;
        free(h);
    }
    free(b->bare);
    free(b->host);
    free(b->local);
    free(b);
}

/* Drops the least recently used cached lists beyond offline_cache (never
 * one whose stanzas are being routed). Lock held. */
static void cache_trim(void)
{
    size_t cap = (size_t)mp_module_opt_int(self, "offline_cache");
    struct blist *b = lru_tail;
    while (n_cached > cap && b) {
        struct blist *prev = b->lru_prev;
        if (!b->draining && !b->hq)
            blist_free(b);
        b = prev;
    }
}

/* b's last session ended, or its load or drain finished with no session:
 * b is cached, or freed when it cannot be (a failed read, a deleted
 * account). Lock held; b must not be used afterwards. */
static void blist_idle(struct blist *b)
{
    if (b->sessions > 0 || !b->loaded || b->draining || b->hq)
        return;
    if (b->failed || b->stale) {
        blist_free(b);
        return;
    }
    strv_free(&b->interested);
    if (!b->cached)
        lru_push(b);
    cache_trim();
}

/* XEP-0016 §2.1 matching of j against the items of b. Lock held. */
static int matches(const struct blist *b, const mp_jid *j)
{
    if (!b || !b->loaded || !j->domain)
        return 0;
    for (size_t i = 0; i < b->items.n; i++) {
        const char *it = b->items.v[i];
        if (strcmp(it, j->full) == 0 || strcmp(it, j->bare) == 0 || strcmp(it, j->domain) == 0)
            return 1;
        if (j->resource) {
            size_t dl = strlen(j->domain);
            if (strncmp(it, j->domain, dl) == 0 && it[dl] == '/' &&
                strcmp(it + dl + 1, j->resource) == 0)
                return 1;
        }
    }
    return 0;
}

/* True if the user `owner` (bare) has blocked j. */
static int blocked_by(const char *owner, const mp_jid *j)
{
    pthread_mutex_lock(&lock);
    int r = matches(find(owner), j);
    pthread_mutex_unlock(&lock);
    return r;
}

/* ---- IQs ---- */

struct outbox {
    mp_stanza **v;
    size_t n;
};

static void out_add(struct outbox *o, mp_stanza *st)
{
    o->v = mp_realloc(o->v, (o->n + 1) * sizeof *o->v);
    o->v[o->n++] = st;
}

static void out_flush(struct outbox *o)
{
    for (size_t i = 0; i < o->n; i++)
        mp_route(o->v[i]);
    free(o->v);
}

static mp_stanza *iq_error(mp_stanza *iq, const char *type, const char *cond)
{
    return mp_stanza_make_error(mp_stanza_copy(iq), type, cond, NULL);
}

/* A push of <what> with jids (none: an empty element) to every
 * interested resource. */
static void push(struct blist *b, const char *what, const struct strv *jids, struct outbox *out)
{
    char id[24] = "block-";
    for (size_t i = 0; i < b->interested.n; i++) {
        mp_stanza *st = mp_stanza_new("iq", MP_NS_CLIENT);
        mp_xml *root = mp_stanza_root(st);
        mp_random_id(id + 6, sizeof id - 6);
        mp_xml_set_attr(st, root, "type", "set");
        mp_xml_set_attr(st, root, "id", id);
        mp_xml_set_attr(st, root, "from", b->bare);
        mp_xml_set_attr(st, root, "to", b->interested.v[i]);
        mp_xml *w = mp_xml_add_child(st, root, what, NS_BLOCKING);
        for (size_t k = 0; k < jids->n; k++)
            mp_xml_set_attr(st, mp_xml_add_child(st, w, "item", NS_BLOCKING), "jid", jids->v[k]);
        out_add(out, st);
    }
}

struct avail {
    struct outbox *out;
    const char *to;
};

static void unavailable_to(void *ud, const char *full, int priority)
{
    (void)priority;
    struct avail *a = ud;
    mp_stanza *p = mp_stanza_new("presence", MP_NS_CLIENT);
    mp_xml_set_attr(p, mp_stanza_root(p), "from", full);
    mp_xml_set_attr(p, mp_stanza_root(p), "to", a->to);
    mp_xml_set_attr(p, mp_stanza_root(p), "type", "unavailable");
    out_add(a->out, p);
}

/* Reads the items of <block/> or <unblock/> into jids (normalised).
 * Returns NULL, or the error condition. */
static const char *read_items(mp_xml *w, struct strv *jids)
{
    for (mp_xml *i = mp_xml_find(w, "item", NS_BLOCKING); i;
         i = mp_xml_find_next(i, "item", NS_BLOCKING)) {
        mp_jid j;
        const char *s = mp_xml_get_attr(i, "jid");
        if (!s || mp_jid_parse(&j, s) != MAGPIE_OK)
            return "jid-malformed";
        if (strv_find(jids, j.full) < 0)
            strv_add(jids, j.full);
        mp_jid_free(&j);
    }
    return NULL;
}

/* Handles one blocklist IQ for b (loaded). Lock held. */
static void handle(struct blist *b, mp_stanza *iq, struct outbox *out)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *w = mp_xml_first_element(mp_stanza_root(iq));
    if (env->type == MP_TYPE_GET) {
        if (strcmp(w->name, "blocklist") != 0) {
            out_add(out, iq_error(iq, "modify", "bad-request"));
            return;
        }
        if (strv_find(&b->interested, env->from.full) < 0)
            strv_add(&b->interested, env->from.full);
        mp_stanza *r = mp_iq_result(iq);
        mp_xml *l = mp_xml_add_child(r, mp_stanza_root(r), "blocklist", NS_BLOCKING);
        for (size_t i = 0; i < b->items.n; i++)
            mp_xml_set_attr(r, mp_xml_add_child(r, l, "item", NS_BLOCKING), "jid", b->items.v[i]);
        out_add(out, r);
        return;
    }
    int block = strcmp(w->name, "block") == 0;
    if (!block && strcmp(w->name, "unblock") != 0) {
        out_add(out, iq_error(iq, "modify", "bad-request"));
        return;
    }
    struct strv jids = {NULL, 0};
    const char *err = read_items(w, &jids);
    if (!err && block && jids.n == 0)
        err = "bad-request"; /* §3.3: at least one item */
    if (!err && block && b->items.n + jids.n > (size_t)mp_module_opt_int(self, "max_items"))
        err = "not-allowed";
    if (err) {
        out_add(out, iq_error(iq, "modify", err));
        strv_free(&jids);
        return;
    }
    struct strv changed = {NULL, 0};
    if (block) {
        for (size_t i = 0; i < jids.n; i++) {
            if (strv_find(&b->items, jids.v[i]) >= 0)
                continue;
            /* §3.3: the newly blocked entity sees the user go offline */
            struct avail a = {out, jids.v[i]};
            mp_sessions_foreach(b->bare, unavailable_to, &a);
            strv_add(&b->items, jids.v[i]);
            strv_add(&changed, jids.v[i]);
            mp_map_set(b->host, STORE, b->local, jids.v[i], "1", 1, NULL, NULL);
        }
    } else if (jids.n == 0) {
        strv_free(&b->items); /* §3.4: unblock everything */
        mp_map_del(b->host, STORE, b->local, NULL, NULL, NULL);
    } else {
        for (size_t i = 0; i < jids.n; i++) {
            if (strv_find(&b->items, jids.v[i]) < 0)
                continue;
            strv_del(&b->items, jids.v[i]);
            strv_add(&changed, jids.v[i]);
            mp_map_del(b->host, STORE, b->local, jids.v[i], NULL, NULL);
        }
    }
    out_add(out, mp_iq_result(iq));
    if (changed.n > 0 || (!block && jids.n == 0))
        push(b, w->name, &changed, out);
    strv_free(&jids);
    strv_free(&changed);
}

static void blocklist_iq(mp_stanza *iq, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    if (!env->from.local || (env->to.domain && strcmp(env->to.bare, env->from.bare) != 0)) {
        mp_iq_reply_error(iq, "cancel", "service-unavailable");
        return;
    }
    struct outbox out = {NULL, 0};
    pthread_mutex_lock(&lock);
    struct blist *b = find(env->from.bare);
    if (!b) {
        out_add(&out, iq_error(iq, "wait", "internal-server-error"));
    } else if (!b->loaded) {
        b->pending = mp_realloc(b->pending, (b->n_pending + 1) * sizeof *b->pending);
        b->pending[b->n_pending++] = mp_stanza_ref(iq);
    } else {
        handle(b, iq, &out);
    }
    pthread_mutex_unlock(&lock);
    out_flush(&out);
}

/* ---- sessions ---- */

static void release_run(void *arg)
{
    struct held *h = arg;
    mp_session *s = mp_session_find(h->sid);
    if (s)
        mp_session_release(s);
    free(h);
}

/* Releases the sessions held for b's load, each on its worker, always
 * through a posted call: releasing parses what the client sent meanwhile,
 * whose filters take the lock held here. Lock held. */
static void release_held(struct blist *b)
{
    while (b->held) {
        struct held *h = b->held;
        b->held = h->next;
        if (mp_loop_post(h->loop, release_run, h) != MAGPIE_OK)
            free(h); /* shutting down */
    }
}

static void drain(struct blist *b);

/* The store's answer for b: pending IQs are handled, held sessions
 * released and held stanzas judged and routed again (drain). */
static void loaded(void *ud, int rc, const mp_map_item *items, size_t n)
{
    struct blist *b = ud;
    struct outbox out = {NULL, 0};
    pthread_mutex_lock(&lock);
    if (rc != MAGPIE_OK) {
        mp_log(MP_LOG_ERROR, "blocking: cannot read the blocklist of %s", b->bare);
        b->failed = 1;
    }
    for (size_t i = 0; i < n && !b->stale; i++)
        if (strv_find(&b->items, items[i].field) < 0)
            strv_add(&b->items, items[i].field);
    b->loaded = 1;
    for (size_t i = 0; i < b->n_pending; i++) {
        handle(b, b->pending[i], &out);
        mp_stanza_unref(b->pending[i]);
    }
    b->n_pending = 0;
    release_held(b);
    int held = b->hq != NULL;
    if (held)
        b->draining = 1;
    else
        blist_idle(b);
    pthread_mutex_unlock(&lock);
    out_flush(&out);
    if (held)
        drain(b);
}

/* A new entry for bare (not loaded, no session), in the table. Lock held. */
static struct blist *blist_new(const char *bare, const char *host, const char *local)
{
    struct blist *b = mp_calloc(1, sizeof *b);
    b->bare = mp_strdup(bare);
    b->host = mp_strdup(host);
    b->local = mp_strdup(local);
    b->hq_tail = &b->hq;
    blist_insert(b);
    return b;
}

static void session_started(mp_session *s, void *ud)
{
    (void)ud;
    const mp_jid *j = mp_session_jid(s);
    pthread_mutex_lock(&lock);
    struct blist *b = find(j->bare);
    int load = 0;
    if (!b) {
        b = blist_new(j->bare, j->domain, j->local);
        load = 1;
    }
    lru_unlink(b); /* a cached list is the user's again */
    b->sessions++;
    if (!b->loaded) {
        /* nothing the client sends is judged before its list is known */
        struct held *h = mp_calloc(1, sizeof *h);
        h->sid = mp_session_id(s);
        h->loop = mp_loop_current();
        h->next = b->held;
        b->held = h;
        mp_session_hold(s);
    }
    if (load && mp_map_all(b->host, STORE, b->local, loaded, b) != MAGPIE_OK) {
        b->loaded = 1; /* storage closed: an empty list */
        b->failed = 1;
        release_held(b);
    }
    pthread_mutex_unlock(&lock);
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    const mp_jid *j = mp_session_jid(s);
    pthread_mutex_lock(&lock);
    struct blist *b = find(j->bare);
    if (b) {
        strv_del(&b->interested, j->full);
        if (--b->sessions == 0)
            blist_idle(b); /* cached (when loaded and nothing waits) */
    }
    pthread_mutex_unlock(&lock);
}

/* The list goes with the account: from the store, and from memory (the
 * cache must not answer for a new account of the same name). */
static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    mp_map_del(domain, STORE, user, NULL, NULL, NULL);
    size_t n = strlen(user) + strlen(domain) + 2;
    char *bare = mp_malloc(n);
    snprintf(bare, n, "%s@%s", user, domain);
    pthread_mutex_lock(&lock);
    struct blist *b = find(bare);
    if (b) {
        strv_free(&b->items);
        if (!b->loaded)
            b->stale = 1; /* the read under way may predate the deletion */
        else if (b->cached && !b->draining && !b->hq)
            blist_free(b);
    }
    pthread_mutex_unlock(&lock);
    free(bare);
}

static const struct mp_notify notify = {
    .session_started = session_started,
    .session_ended = session_ended,
    .account_deleted = account_deleted,
};

/* ---- enforcement ---- */

static int is_request(const struct mp_envelope *env)
{
    return env->kind == MP_KIND_IQ && (env->type == MP_TYPE_GET || env->type == MP_TYPE_SET);
}

/* What the user sends to a JID it blocked (§3.6). */
static int from_client(mp_session *s, mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->to.domain || !blocked_by(mp_session_jid(s)->bare, &env->to))
        return MP_FILTER_PASS;
    if (env->kind == MP_KIND_PRESENCE)
        return env->type == MP_TYPE_UNAVAILABLE ? MP_FILTER_PASS : MP_FILTER_STOP;
    if (env->type == MP_TYPE_ERROR || (env->kind == MP_KIND_IQ && !is_request(env)))
        return MP_FILTER_STOP;
    mp_stanza *e = mp_stanza_make_error(mp_stanza_copy(st), "cancel", "not-acceptable", NULL);
    mp_xml *err = mp_xml_find(mp_stanza_root(e), "error", NULL);
    if (err)
        mp_xml_add_child(e, err, "blocked", NS_ERRORS);
    mp_xml_set_attr(e, mp_stanza_root(e), "from", NULL);
    mp_session_send(s, e);
    return MP_FILTER_STOP;
}

struct first {
    const char *first;
    char buf[3072];
    int best;
};

static void first_of(void *ud, const char *full, int priority)
{
    struct first *f = ud;
    if (priority < 0 || priority < f->best)
        return;
    if (priority > f->best || strcmp(full, f->buf) < 0) {
        f->best = priority;
        snprintf(f->buf, sizeof f->buf, "%s", full);
    }
}

/* A message to a bare JID reaches every resource of the highest
 * non-negative priority: true for the first of them (by full JID), so one
 * error goes back for all. */
static int first_recipient(const mp_jid *me)
{
    struct first f = {NULL, "", -129};
    mp_sessions_foreach(me->bare, first_of, &f);
    return strcmp(f.buf, me->full) == 0;
}

/* What reaches the user from a JID it blocked (§3.5), and what a user
 * who blocked the recipient sends through a module. */
static int to_client(mp_session *s, mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->from.domain)
        return MP_FILTER_PASS;
    const mp_jid *me = mp_session_jid(s);
    if (strcmp(env->from.bare, me->bare) != 0 && blocked_by(me->bare, &env->from)) {
        /* presence: silently; IQ requests: an error; messages: an error
         * (SHOULD), once even when the message went to several resources */
        if (is_request(env) ||
            (env->kind == MP_KIND_MESSAGE && env->type != MP_TYPE_ERROR &&
             env->type != MP_TYPE_HEADLINE && (env->to.resource || first_recipient(me))))
            mp_iq_reply_error(st, "cancel", "service-unavailable");
        return MP_FILTER_STOP;
    }
    if (env->from.local && mp_host_is_local(env->from.domain) &&
        strcmp(env->from.bare, me->bare) != 0 &&
        env->type != MP_TYPE_ERROR && /* the server's answers for the user */
        !(env->kind == MP_KIND_PRESENCE && env->type == MP_TYPE_UNAVAILABLE) &&
        blocked_by(env->from.bare, me))
        return MP_FILTER_STOP;
    return MP_FILTER_PASS;
}

/* An offline message from a blocked JID: screen (message_account) has
 * refused those already and left the list in memory; this second look
 * costs one lookup and needs no store. */
static int drop_blocked(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->to.local && env->from.domain && blocked_by(env->to.bare, &env->from))
        return HOOK_HANDLED;
    return HOOK_PASS;
}

/* What a stanza from a JID the recipient blocked gets (§3.5): a message or
 * an IQ request an error, once (error and headline messages: nothing);
 * presence nothing. Does not take st. */
static void refuse(mp_stanza *st, const char *type, const char *condition)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if ((env->kind == MP_KIND_MESSAGE && env->type != MP_TYPE_ERROR &&
         env->type != MP_TYPE_HEADLINE) ||
        is_request(env))
        mp_iq_reply_error(st, type, condition);
}

/* The user whose held stanza this thread's drain is routing again: the
 * first hook run for that user on this thread is the stanza's own (the
 * router runs these hooks first, and ours before the other modules'), and
 * passes it: it was judged already. */
static _Thread_local const char *rerouting;

/* Routes b's held stanzas again in their order, or refuses those from a
 * JID b blocked (b loaded, b->draining set: b stays in the table). What
 * arrives for b meanwhile is held behind them, so the order holds. Each
 * sender's acknowledgement is done once the stanza is routed (and made
 * durable by whoever defers it again: mod_offline). Runs unlocked. */
static void drain(struct blist *b)
{
    pthread_mutex_lock(&lock);
    while (b->hq) {
        struct hq *q = b->hq;
        b->hq = q->next;
        if (!b->hq)
            b->hq_tail = &b->hq;
        b->n_hq--;
        int blocked = matches(b, &mp_stanza_envelope(q->st)->from);
        pthread_mutex_unlock(&lock);
        if (blocked) {
            mp_counter_add(c_refused, 1);
            refuse(q->st, "cancel", "service-unavailable");
            mp_stanza_unref(q->st);
        } else {
            rerouting = b->bare;
            mp_route(q->st);
            rerouting = NULL;
        }
        mp_ack_done(q->ack);
        free(q);
        pthread_mutex_lock(&lock);
    }
    b->draining = 0;
    blist_idle(b);
    pthread_mutex_unlock(&lock);
}

/* A message (any type), subscription stanza, probe or IQ request to a
 * local account's bare JID from someone else, before any other module sees
 * it: refused when the recipient blocked the sender. When the recipient's
 * list is not in memory (no session, not cached) it is read and the stanza
 * held until then, behind any other held for that user. */
static int screen(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->to.local || !env->from.domain || strcmp(env->from.bare, env->to.bare) == 0)
        return HOOK_PASS;
    if (rerouting && strcmp(rerouting, env->to.bare) == 0) {
        rerouting = NULL;
        return HOOK_PASS;
    }
    pthread_mutex_lock(&lock);
    struct blist *b = find(env->to.bare);
    if (!b) {
        b = blist_new(env->to.bare, env->to.domain, env->to.local);
        if (mp_map_all(b->host, STORE, b->local, loaded, b) != MAGPIE_OK) {
            b->loaded = 1; /* storage closed: an empty list */
            b->failed = 1;
            blist_idle(b); /* freed */
            pthread_mutex_unlock(&lock);
            return HOOK_PASS;
        }
        mp_counter_add(c_reads, 1);
    }
    if (b->loaded && !b->draining && !b->hq) {
        int blocked = matches(b, &env->from);
        if (b->cached && b != lru_head) {
            lru_unlink(b);
            lru_push(b);
        }
        pthread_mutex_unlock(&lock);
        if (!blocked)
            return HOOK_PASS;
        mp_counter_add(c_refused, 1);
        refuse(st, "cancel", "service-unavailable");
        return HOOK_HANDLED;
    }
    if (b->n_hq >= (size_t)mp_module_opt_int(self, "max_held")) {
        pthread_mutex_unlock(&lock);
        mp_log(MP_LOG_WARN, "blocking: too many stanzas wait for the blocklist of %s",
               env->to.bare);
        refuse(st, "wait", "resource-constraint");
        return HOOK_HANDLED;
    }
    struct hq *q = mp_calloc(1, sizeof *q);
    q->st = mp_stanza_ref(st);
    q->ack = mp_stanza_defer_ack(st);
    *b->hq_tail = q;
    b->hq_tail = &q->next;
    b->n_hq++;
    pthread_mutex_unlock(&lock);
    mp_counter_add(c_held, 1);
    return HOOK_HANDLED;
}

/* before mod_mam (0), mod_push (5), mod_offline (0) and mod_roster (0) */
static const struct mp_route_hooks route_hooks = {
    .message_account = screen, /* not archived, stored or notified either */
    .message_offline = drop_blocked,
    .presence_subscription = screen,
    .presence_probe = screen,
    .iq_account = screen,
};

static int load(mp_module *m)
{
    self = m;
    c_reads = mp_counter_new(m, "list_reads",
                             "Blocklists read from the store for a recipient with no session");
    c_held =
        mp_counter_new(m, "held", "Stanzas that waited for their recipient's blocklist to be read");
    c_refused = mp_counter_new(m, "refused",
                               "Stanzas to a user from a JID it blocked, refused when routed");
    mp_iq_register(m, MP_IQ_GET, NS_BLOCKING, MP_IQ_ACCOUNT, blocklist_iq, NULL);
    mp_iq_register(m, MP_IQ_SET, NS_BLOCKING, MP_IQ_ACCOUNT, blocklist_iq, NULL);
    mp_filter_add(m, MP_FILTER_IN, 60, from_client, NULL);
    mp_filter_add(m, MP_FILTER_OUT, 60, to_client, NULL);
    mp_route_hooks_add(m, &route_hooks, 10, NULL);
    mp_notify_add(m, &notify, NULL);
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_BLOCKING);
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    for (size_t i = 0; i < n_buckets; i++)
        while (buckets[i])
            blist_free(buckets[i]);
    free(buckets);
    buckets = NULL;
    n_buckets = n_lists = 0;
}

MP_MODULE_DECLARE("blocking", "XEP-0191 Blocking Command", options, load, unload, NULL);
