/* mod_roster - RFC 6121 rosters, presence subscriptions and presence
 * broadcast to contacts; XEP-0237 roster versioning.
 *
 * What it registers:
 *   IQ get/set jabber:iq:roster (account scope): roster get (with 'ver'),
 *     roster set and remove, pushes to every resource that asked for the
 *     roster ("interested" resources).
 *   an inbound filter: subscription presences a client sends (outbound
 *     processing, RFC 6121 §3, stamped with the user's bare JID and routed
 *     by this module) and directed presence (tracked per session, §4.6).
 *   the "presence-subscription" and "presence-probe" hooks: the contact's
 *     side of a subscription stanza and probe addressed to a local account.
 *   notifications: session started/ended (a session that ends while
 *     available, a dropped connection included, sends unavailable to its
 *     contacts and to whoever got directed presence), presence changed
 *     (broadcast to contacts with a 'from' subscription; the first
 *     available presence also probes contacts with a 'to' subscription and
 *     delivers subscription requests that waited while the user was
 *     offline), account deleted (the roster goes).
 *   stream features: roster versioning and subscription pre-approval.
 *   the roster provider (mp_roster_contacts): other modules (PEP) read an
 *     account's contacts and subscription states.
 *
 * The core still sends a presence to the user's own resources and keeps
 * the availability the router uses (router.c, client_presence); everything
 * that concerns contacts is here.
 *
 * State: one `struct user` per account that has a session or is being
 * worked on, in a table behind one mutex: its roster (loaded from the map
 * store "roster", key = username, field = contact bare JID, value = the
 * item as XML; field "" holds the roster version) and its resources (last
 * available presence, interested flag). Sessions of one user live on
 * several workers, so the table is shared; every operation runs with the
 * user's roster loaded and the lock held, collects the stanzas it wants to
 * send in an outbox, and routes them after unlocking (routing may come back
 * into this module on the same thread). Operations that arrive while a
 * roster loads wait in a queue and run on the loop they came from, in
 * order. Store writes are issued under the lock, so they reach the store
 * (one pool thread per key) in the order of the changes. An entry is
 * dropped when its user has no session and nothing waits for it. */
#include <magpie/magpie.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ROSTER      "jabber:iq:roster"
#define NS_ROSTERVER   "urn:xmpp:features:rosterver"
#define NS_PREAPPROVAL "urn:xmpp:features:pre-approval"
#define STORE          "roster"
#define VER_FIELD      ""

static const struct mp_option options[] = {
    {"max_items", MP_OPT_INT, "1000",
     "Most items a roster may hold (a roster set beyond gets not-allowed)", 1, 100000},
    {"pre_approval", MP_OPT_BOOL, "true", "Allow subscription pre-approval (RFC 6121 section 3.4)",
     0, 0},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;
static mp_counter *c_pushes, *c_broadcasts, *c_probes;

/* ---- state ---- */

enum { SUB_TO = 1, SUB_FROM = 2 }; /* subscription bits: none 0, both 3 */

struct item {
    char *jid; /* contact's bare JID (normalised) */
    char *name;
    char **groups;
    size_t n_groups;
    unsigned sub : 2;
    unsigned ask : 1;        /* pending out: we asked the contact */
    unsigned pending_in : 1; /* the contact asked us */
    unsigned approved : 1;   /* pre-approved */
    unsigned hidden : 1;     /* only a waiting request, not in the roster */
    mp_stanza *request;      /* the waiting subscribe stanza (pending_in) */
};

struct resource {
    char *full;
    uint64_t sid;
    int available;
    int interested;
    mp_stanza *last; /* last available presence (referenced) */
    struct resource *next;
};

struct outbox {
    mp_stanza **v;
    size_t n, cap;
};

struct user;
typedef void (*user_fn)(struct user *u, void *arg, struct outbox *out);

struct waiter {
    user_fn fn;
    void *arg;
    mp_loop *loop;
    struct waiter *next;
};

struct user {
    char *bare, *host, *local;
    int loaded;
    int drains; /* drain jobs posted and not yet run */
    uint64_t ver;
    struct item **items;
    size_t n_items;
    struct resource *res;
    struct waiter *wq, **wq_tail;
    struct user *next; /* hash chain */
};

#define NBUCKETS 4096
static struct user *buckets[NBUCKETS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % NBUCKETS;
}

static void out_add(struct outbox *o, mp_stanza *st)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 8;
        o->v = mp_realloc(o->v, o->cap * sizeof *o->v);
    }
    o->v[o->n++] = st;
}

/* Routes everything the outbox holds, in order; call without the lock. */
static void out_flush(struct outbox *o)
{
    for (size_t i = 0; i < o->n; i++)
        mp_route(o->v[i]);
    free(o->v);
    o->v = NULL;
    o->n = o->cap = 0;
}

static void item_free(struct item *it)
{
    free(it->jid);
    free(it->name);
    for (size_t i = 0; i < it->n_groups; i++)
        free(it->groups[i]);
    free(it->groups);
    if (it->request)
        mp_stanza_unref(it->request);
    free(it);
}

static struct item *item_find(struct user *u, const char *jid)
{
    for (size_t i = 0; i < u->n_items; i++)
        if (strcmp(u->items[i]->jid, jid) == 0)
            return u->items[i];
    return NULL;
}

static struct item *item_add(struct user *u, const char *jid)
{
    struct item *it = mp_calloc(1, sizeof *it);
    it->jid = mp_strdup(jid);
    u->items = mp_realloc(u->items, (u->n_items + 1) * sizeof *u->items);
    u->items[u->n_items++] = it;
    return it;
}

static void item_remove(struct user *u, struct item *it)
{
    for (size_t i = 0; i < u->n_items; i++)
        if (u->items[i] == it) {
            u->items[i] = u->items[--u->n_items];
            break;
        }
    item_free(it);
}

static size_t visible_items(const struct user *u)
{
    size_t n = 0;
    for (size_t i = 0; i < u->n_items; i++)
        n += !u->items[i]->hidden;
    return n;
}

static struct resource *res_find(struct user *u, uint64_t sid)
{
    for (struct resource *r = u->res; r; r = r->next)
        if (r->sid == sid)
            return r;
    return NULL;
}

static struct resource *res_find_full(struct user *u, const char *full)
{
    for (struct resource *r = u->res; r; r = r->next)
        if (strcmp(r->full, full) == 0)
            return r;
    return NULL;
}

static void user_free(struct user *u)
{
    for (size_t i = 0; i < u->n_items; i++)
        item_free(u->items[i]);
    free(u->items);
    while (u->res) {
        struct resource *r = u->res;
        u->res = r->next;
        if (r->last)
            mp_stanza_unref(r->last);
        free(r->full);
        free(r);
    }
    free(u->bare);
    free(u->host);
    free(u->local);
    free(u);
}

/* Drops u from the table when nothing needs it any more. Lock held. */
static void maybe_evict(struct user *u)
{
    if (!u->loaded || u->res || u->wq || u->drains)
        return;
    struct user **pp = &buckets[hash(u->bare)];
    while (*pp && *pp != u)
        pp = &(*pp)->next;
    if (*pp)
        *pp = u->next;
    user_free(u);
}

/* ---- storage form of an item ----
 * <item xmlns='jabber:iq:roster' jid= name= subscription= [ask=subscribe]
 *  [approved=true] [pending-in=1] [hidden=1]><group/>...[<presence/>]</item>
 * (pending-in and hidden are ours; the presence child is the waiting
 * request). */

static const char *sub_name(unsigned sub)
{
    static const char *const names[] = {"none", "to", "from", "both"};
    return names[sub & 3];
}

/* Adds the client form of it to parent of st. */
static mp_xml *item_xml(mp_stanza *st, mp_xml *parent, const struct item *it, int remove)
{
    mp_xml *x = mp_xml_add_child(st, parent, "item", NS_ROSTER);
    mp_xml_set_attr(st, x, "jid", it->jid);
    if (it->name && !remove)
        mp_xml_set_attr(st, x, "name", it->name);
    mp_xml_set_attr(st, x, "subscription", remove ? "remove" : sub_name(it->sub));
    if (remove)
        return x;
    if (it->ask)
        mp_xml_set_attr(st, x, "ask", "subscribe");
    if (it->approved)
        mp_xml_set_attr(st, x, "approved", "true");
    for (size_t i = 0; i < it->n_groups; i++) {
        mp_xml *g = mp_xml_add_child(st, x, "group", NS_ROSTER);
        mp_xml_add_text(st, g, it->groups[i], strlen(it->groups[i]));
    }
    return x;
}

static void store_version(struct user *u)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)u->ver);
    mp_map_set(u->host, STORE, u->local, VER_FIELD, buf, (size_t)n, NULL, NULL);
}

/* Writes it (or deletes it when gone) and the new version. Lock held. */
static void item_save(struct user *u, struct item *it, int gone)
{
    u->ver++;
    if (gone) {
        mp_map_del(u->host, STORE, u->local, it->jid, NULL, NULL);
    } else {
        mp_stanza *st = mp_stanza_new("roster", NS_ROSTER);
        mp_xml *x = item_xml(st, mp_stanza_root(st), it, 0);
        if (it->pending_in)
            mp_xml_set_attr(st, x, "pending-in", "1");
        if (it->hidden)
            mp_xml_set_attr(st, x, "hidden", "1");
        if (it->request)
            mp_xml_add_copy(st, x, mp_stanza_root(it->request));
        char *s = mp_xml_to_string(x, NULL);
        mp_map_set(u->host, STORE, u->local, it->jid, s, strlen(s), NULL, NULL);
        free(s);
        mp_stanza_unref(st);
    }
    store_version(u);
}

static void item_load(struct user *u, const char *field, const void *data, size_t len)
{
    mp_stanza *st = mp_stanza_parse(data, len);
    if (!st) {
        mp_log(MP_LOG_WARN, "roster: unreadable item %s of %s", field, u->bare);
        return;
    }
    mp_xml *x = mp_stanza_root(st);
    struct item *it = item_add(u, field);
    const char *v;
    it->name = mp_strdup(mp_xml_get_attr(x, "name"));
    v = mp_xml_get_attr(x, "subscription");
    it->sub = !v                   ? 0
              : !strcmp(v, "to")   ? SUB_TO
              : !strcmp(v, "from") ? SUB_FROM
              : !strcmp(v, "both") ? (SUB_TO | SUB_FROM)
                                   : 0;
    it->ask = (v = mp_xml_get_attr(x, "ask")) && !strcmp(v, "subscribe");
    it->approved = (v = mp_xml_get_attr(x, "approved")) && !strcmp(v, "true");
    it->pending_in = mp_xml_get_attr(x, "pending-in") != NULL;
    it->hidden = mp_xml_get_attr(x, "hidden") != NULL;
    for (mp_xml *g = mp_xml_find(x, "group", NULL); g; g = mp_xml_find_next(g, "group", NULL)) {
        it->groups = mp_realloc(it->groups, (it->n_groups + 1) * sizeof *it->groups);
        it->groups[it->n_groups++] = mp_strdup(mp_xml_text(st, g));
    }
    mp_xml *p = mp_xml_find(x, "presence", NULL);
    if (p && it->pending_in) {
        char *s = mp_xml_to_string(p, NULL);
        it->request = mp_stanza_parse(s, strlen(s));
        free(s);
    }
    mp_stanza_unref(st);
}

/* ---- running operations with a user's roster loaded ---- */

static void run_waiters(struct user *u, mp_loop *loop, struct outbox *out)
{
    struct waiter **pp = &u->wq;
    while (*pp) {
        struct waiter *w = *pp;
        if (w->loop != loop) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (u->wq_tail == &w->next)
            u->wq_tail = pp;
        w->fn(u, w->arg, out);
        free(w);
        /* an operation may have queued more for this loop: scan again */
        pp = &u->wq;
    }
}

static void drain_run(void *arg)
{
    struct user *u = arg;
    struct outbox out = {0};
    pthread_mutex_lock(&lock);
    u->drains--;
    run_waiters(u, mp_loop_current(), &out);
    maybe_evict(u);
    pthread_mutex_unlock(&lock);
    out_flush(&out);
}

static void loaded(void *ud, int rc, const mp_map_item *items, size_t n)
{
    struct user *u = ud;
    struct outbox out = {0};
    pthread_mutex_lock(&lock);
    if (rc != MAGPIE_OK)
        mp_log(MP_LOG_ERROR, "roster: cannot read the roster of %s; serving it empty", u->bare);
    for (size_t i = 0; i < n; i++) {
        if (items[i].field[0] == '\0') {
            char buf[24];
            size_t l = items[i].len < sizeof buf - 1 ? items[i].len : sizeof buf - 1;
            memcpy(buf, items[i].data, l);
            buf[l] = '\0';
            u->ver = strtoull(buf, NULL, 10);
        } else {
            item_load(u, items[i].field, items[i].data, items[i].len);
        }
    }
    u->loaded = 1;
    /* waiters run on the loop they came from, in order */
    mp_loop *here = mp_loop_current();
    mp_loop *posted[64];
    size_t np = 0;
    for (struct waiter *w = u->wq; w; w = w->next) {
        if (w->loop == here)
            continue;
        size_t k;
        for (k = 0; k < np && posted[k] != w->loop; k++)
            ;
        if (k < np)
            continue;
        if (np < sizeof posted / sizeof posted[0])
            posted[np++] = w->loop;
        u->drains++;
        if (mp_loop_post(w->loop, drain_run, u) != MAGPIE_OK)
            u->drains--; /* shutting down */
    }
    run_waiters(u, here, &out);
    maybe_evict(u);
    pthread_mutex_unlock(&lock);
    out_flush(&out);
}

/* Runs fn(u, arg, outbox) for the account bare (host, local) with its
 * roster loaded, under the lock, now or (while it loads) later on the
 * calling loop; then routes what fn put in the outbox. fn owns arg. */
static void with_user(const char *host, const char *local, const char *bare, user_fn fn, void *arg)
{
    struct outbox out = {0};
    mp_loop *here = mp_loop_current();
    pthread_mutex_lock(&lock);
    unsigned h = hash(bare);
    struct user *u = buckets[h];
    while (u && strcmp(u->bare, bare) != 0)
        u = u->next;
    int start_load = 0;
    if (!u) {
        u = mp_calloc(1, sizeof *u);
        u->bare = mp_strdup(bare);
        u->host = mp_strdup(host);
        u->local = mp_strdup(local);
        u->wq_tail = &u->wq;
        u->next = buckets[h];
        buckets[h] = u;
        start_load = 1;
    }
    int wait = !u->loaded;
    for (struct waiter *w = u->wq; w && !wait; w = w->next)
        wait = w->loop == here;
    if (wait) {
        struct waiter *w = mp_calloc(1, sizeof *w);
        w->fn = fn;
        w->arg = arg;
        w->loop = here;
        *u->wq_tail = w;
        u->wq_tail = &w->next;
        if (start_load && mp_map_all(host, STORE, local, loaded, u) != MAGPIE_OK) {
            pthread_mutex_unlock(&lock);
            loaded(u, MAGPIE_ERR, NULL, 0);
            return;
        }
        pthread_mutex_unlock(&lock);
        return;
    }
    fn(u, arg, &out);
    maybe_evict(u);
    pthread_mutex_unlock(&lock);
    out_flush(&out);
}

static void with_jid(const mp_jid *j, user_fn fn, void *arg)
{
    with_user(j->domain, j->local, j->bare, fn, arg);
}

/* ---- stanza builders ---- */

static mp_stanza *presence_new(const char *from, const char *to, const char *type)
{
    mp_stanza *p = mp_stanza_new("presence", MP_NS_CLIENT);
    mp_xml *r = mp_stanza_root(p);
    mp_xml_set_attr(p, r, "from", from);
    mp_xml_set_attr(p, r, "to", to);
    if (type)
        mp_xml_set_attr(p, r, "type", type);
    return p;
}

/* A copy of the shared stanza st addressed from/to (NULL keeps). */
static mp_stanza *readdress(mp_stanza *st, const char *from, const char *to)
{
    mp_stanza *c = mp_stanza_copy_envelope(st);
    if (from)
        mp_xml_set_attr(c, mp_stanza_root(c), "from", from);
    if (to)
        mp_xml_set_attr(c, mp_stanza_root(c), "to", to);
    return c;
}

/* Roster push of it (remove: subscription='remove') to every interested
 * resource of u. */
static void push(struct user *u, struct item *it, int remove, struct outbox *out)
{
    if (it->hidden && !remove)
        return;
    char ver[24], id[24] = "push-";
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)u->ver);
    for (struct resource *r = u->res; r; r = r->next) {
        if (!r->interested)
            continue;
        mp_stanza *st = mp_stanza_new("iq", MP_NS_CLIENT);
        mp_xml *root = mp_stanza_root(st);
        mp_random_id(id + 5, sizeof id - 5);
        mp_xml_set_attr(st, root, "type", "set");
        mp_xml_set_attr(st, root, "id", id);
        mp_xml_set_attr(st, root, "from", u->bare);
        mp_xml_set_attr(st, root, "to", r->full);
        mp_xml *q = mp_xml_add_child(st, root, "query", NS_ROSTER);
        mp_xml_set_attr(st, q, "ver", ver);
        item_xml(st, q, it, remove);
        out_add(out, st);
        mp_counter_add(c_pushes, 1);
    }
}

/* Saves it and pushes it (both as removed when gone); frees it if gone. */
static void changed(struct user *u, struct item *it, int gone, struct outbox *out)
{
    item_save(u, it, gone);
    push(u, it, gone, out);
    if (gone)
        item_remove(u, it);
}

/* The last presence of each available resource of u, to `to`; with
 * none, if unavailable_if_none, an unavailable presence from u's bare
 * JID. */
static void send_current(struct user *u, const char *to, int unavailable_if_none,
                         struct outbox *out)
{
    int any = 0;
    for (struct resource *r = u->res; r; r = r->next)
        if (r->available && r->last) {
            out_add(out, readdress(r->last, r->full, to));
            any = 1;
        }
    if (!any && unavailable_if_none)
        out_add(out, presence_new(u->bare, to, "unavailable"));
}

static void send_unavailable(struct user *u, const char *to, struct outbox *out)
{
    for (struct resource *r = u->res; r; r = r->next)
        if (r->available)
            out_add(out, presence_new(r->full, to, "unavailable"));
}

/* ---- sessions ---- */

struct directed {
    char **v;
    size_t n;
};

struct sess {
    int available;
    struct directed directed;
};

struct res_op {
    uint64_t sid;
    char *full;
    mp_stanza *presence; /* referenced, available only */
    int available;
    struct directed directed; /* owned */
};

static void res_op_free(struct res_op *op)
{
    free(op->full);
    if (op->presence)
        mp_stanza_unref(op->presence);
    for (size_t i = 0; i < op->directed.n; i++)
        free(op->directed.v[i]);
    free(op->directed.v);
    free(op);
}

static void op_session_start(struct user *u, void *arg, struct outbox *out)
{
    (void)out;
    struct res_op *op = arg;
    if (!res_find(u, op->sid)) {
        struct resource *r = mp_calloc(1, sizeof *r);
        r->full = op->full;
        op->full = NULL;
        r->sid = op->sid;
        r->next = u->res;
        u->res = r;
    }
    res_op_free(op);
}

/* Bare JID part of a JID string into buf; returns buf. */
static const char *bare_of(const char *jid, char *buf, size_t len)
{
    snprintf(buf, len, "%s", jid);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    return buf;
}

/* Unavailable from r to contacts with 'from' and to the directed list
 * (those not already covered). */
static void broadcast_unavailable(struct user *u, struct resource *r, mp_stanza *st,
                                  struct directed *d, struct outbox *out)
{
    for (size_t i = 0; i < u->n_items; i++)
        if (u->items[i]->sub & SUB_FROM) {
            out_add(out, st ? readdress(st, r->full, u->items[i]->jid)
                            : presence_new(r->full, u->items[i]->jid, "unavailable"));
            mp_counter_add(c_broadcasts, 1);
        }
    for (size_t i = 0; d && i < d->n; i++) {
        char b[3072];
        struct item *it = item_find(u, bare_of(d->v[i], b, sizeof b));
        if (it && (it->sub & SUB_FROM))
            continue;
        out_add(out, st ? readdress(st, r->full, d->v[i])
                        : presence_new(r->full, d->v[i], "unavailable"));
    }
}

static void op_session_end(struct user *u, void *arg, struct outbox *out)
{
    struct res_op *op = arg;
    struct resource **pp = &u->res;
    while (*pp && (*pp)->sid != op->sid)
        pp = &(*pp)->next;
    struct resource *r = *pp;
    if (r) {
        if (r->available)
            broadcast_unavailable(u, r, NULL, &op->directed, out);
        *pp = r->next;
        if (r->last)
            mp_stanza_unref(r->last);
        free(r->full);
        free(r);
    }
    res_op_free(op);
}

static void op_presence(struct user *u, void *arg, struct outbox *out)
{
    struct res_op *op = arg;
    struct resource *r = res_find(u, op->sid);
    if (!r) {
        res_op_free(op);
        return;
    }
    int initial = op->available && !r->available;
    if (!op->available) {
        if (r->available)
            broadcast_unavailable(u, r, op->presence, &op->directed, out);
        r->available = 0;
        if (r->last)
            mp_stanza_unref(r->last);
        r->last = NULL;
        res_op_free(op);
        return;
    }
    r->available = 1;
    if (r->last)
        mp_stanza_unref(r->last);
    r->last = mp_stanza_ref(op->presence);
    for (size_t i = 0; i < u->n_items; i++) {
        struct item *it = u->items[i];
        if (it->sub & SUB_FROM) {
            out_add(out, readdress(op->presence, r->full, it->jid));
            mp_counter_add(c_broadcasts, 1);
        }
        if (initial && (it->sub & SUB_TO)) {
            out_add(out, presence_new(u->bare, it->jid, "probe"));
            mp_counter_add(c_probes, 1);
        }
        if (initial && it->pending_in && it->request)
            out_add(out, readdress(it->request, NULL, r->full));
    }
    res_op_free(op);
}

static struct sess *sess_of(mp_session *s)
{
    struct sess *ss = mp_session_data(s, self);
    if (!ss) {
        ss = mp_calloc(1, sizeof *ss);
        mp_session_set_data(s, self, ss);
    }
    return ss;
}

static struct res_op *res_op_new(mp_session *s)
{
    struct res_op *op = mp_calloc(1, sizeof *op);
    op->sid = mp_session_id(s);
    op->full = mp_strdup(mp_session_jid(s)->full);
    return op;
}

static void session_started(mp_session *s, void *ud)
{
    (void)ud;
    sess_of(s);
    with_jid(mp_session_jid(s), op_session_start, res_op_new(s));
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    struct sess *ss = mp_session_data(s, self);
    struct res_op *op = res_op_new(s);
    if (ss) {
        op->directed = ss->directed;
        free(ss);
        mp_session_set_data(s, self, NULL);
    }
    with_jid(mp_session_jid(s), op_session_end, op);
}

static void presence_changed(mp_session *s, mp_stanza *presence, int available, void *ud)
{
    (void)ud;
    struct sess *ss = sess_of(s);
    struct res_op *op = res_op_new(s);
    op->available = available;
    op->presence = mp_stanza_ref(presence);
    ss->available = available;
    if (!available) {
        /* directed presence ends with this unavailable (RFC 6121 §4.6.3) */
        op->directed = ss->directed;
        ss->directed = (struct directed){NULL, 0};
    }
    with_jid(mp_session_jid(s), op_presence, op);
}

static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    mp_map_del(domain, STORE, user, NULL, NULL, NULL);
}

static const struct mp_notify notify = {
    .session_started = session_started,
    .session_ended = session_ended,
    .presence_changed = presence_changed,
    .account_deleted = account_deleted,
};

/* ---- roster get / set (RFC 6121 §2) ---- */

struct iq_op {
    mp_stanza *iq; /* referenced */
};

static void op_get(struct user *u, void *arg, struct outbox *out)
{
    struct iq_op *op = arg;
    mp_stanza *iq = op->iq;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    struct resource *r = res_find_full(u, env->from.full);
    if (r)
        r->interested = 1;
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    const char *want = mp_xml_get_attr(q, "ver");
    char ver[24];
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)u->ver);
    mp_stanza *res = mp_iq_result(iq);
    if (!want || strcmp(want, ver) != 0) {
        mp_xml *rq = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_ROSTER);
        mp_xml_set_attr(res, rq, "ver", ver);
        for (size_t i = 0; i < u->n_items; i++)
            if (!u->items[i]->hidden)
                item_xml(res, rq, u->items[i], 0);
    } /* else unchanged: an empty result (XEP-0237 §2.3) */
    out_add(out, res);
    mp_stanza_unref(iq);
    free(op);
}

static mp_stanza *iq_error(mp_stanza *iq, const char *type, const char *cond)
{
    mp_stanza *e = mp_stanza_copy(iq);
    return mp_stanza_make_error(e, type, cond, NULL);
}

/* Sends the subscription stanza `type` from u to contact (bare JIDs). */
static void send_sub(struct user *u, const char *contact, const char *type, struct outbox *out)
{
    out_add(out, presence_new(u->bare, contact, type));
}

static void op_set(struct user *u, void *arg, struct outbox *out)
{
    struct iq_op *op = arg;
    mp_stanza *iq = op->iq;
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    mp_xml *x = mp_xml_find(q, "item", NS_ROSTER);
    const char *jid = mp_xml_get_attr(x, "jid");
    const char *sub = mp_xml_get_attr(x, "subscription");
    mp_jid j;
    if (mp_jid_parse(&j, jid) != MAGPIE_OK) {
        out_add(out, iq_error(iq, "modify", "bad-request"));
        goto done;
    }
    struct item *it = item_find(u, j.bare);
    if (sub && strcmp(sub, "remove") == 0) {
        if (!it || it->hidden) {
            out_add(out, iq_error(iq, "cancel", "item-not-found"));
            goto done_jid;
        }
        /* RFC 6121 §2.5.2: cancel both directions first */
        if ((it->sub & SUB_TO) || it->ask)
            send_sub(u, it->jid, "unsubscribe", out);
        if ((it->sub & SUB_FROM) || it->pending_in)
            send_sub(u, it->jid, "unsubscribed", out);
        if (it->sub & SUB_FROM)
            send_unavailable(u, it->jid, out);
        out_add(out, mp_iq_result(iq));
        changed(u, it, 1, out);
        goto done_jid;
    }
    /* groups: no empty name, no duplicates (RFC 6121 §2.3.3) */
    size_t ng = 0;
    for (mp_xml *g = mp_xml_find(x, "group", NS_ROSTER); g;
         g = mp_xml_find_next(g, "group", NS_ROSTER)) {
        const char *name = mp_xml_text(iq, g);
        if (!*name) {
            out_add(out, iq_error(iq, "modify", "not-acceptable"));
            goto done_jid;
        }
        for (mp_xml *h = mp_xml_find(x, "group", NS_ROSTER); h != g;
             h = mp_xml_find_next(h, "group", NS_ROSTER))
            if (strcmp(mp_xml_text(iq, h), name) == 0) {
                out_add(out, iq_error(iq, "modify", "bad-request"));
                goto done_jid;
            }
        ng++;
    }
    if (!it && visible_items(u) >= (size_t)mp_module_opt_int(self, "max_items")) {
        out_add(out, iq_error(iq, "cancel", "not-allowed"));
        goto done_jid;
    }
    if (!it)
        it = item_add(u, j.bare);
    it->hidden = 0;
    free(it->name);
    const char *name = mp_xml_get_attr(x, "name");
    it->name = name && *name ? mp_strdup(name) : NULL;
    for (size_t i = 0; i < it->n_groups; i++)
        free(it->groups[i]);
    free(it->groups);
    it->groups = ng ? mp_calloc(1, ng * sizeof *it->groups) : NULL;
    it->n_groups = 0;
    for (mp_xml *g = mp_xml_find(x, "group", NS_ROSTER); g;
         g = mp_xml_find_next(g, "group", NS_ROSTER))
        it->groups[it->n_groups++] = mp_strdup(mp_xml_text(iq, g));
    out_add(out, mp_iq_result(iq));
    changed(u, it, 0, out);
done_jid:
    mp_jid_free(&j);
done:
    mp_stanza_unref(iq);
    free(op);
}

/* Only the account itself may read or change its roster. */
static int own_roster(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    if (!env->from.domain || !env->from.local)
        return 0;
    return !env->to.domain || strcmp(env->to.bare, env->from.bare) == 0;
}

static void roster_get(mp_stanza *iq, void *ud)
{
    (void)ud;
    if (!own_roster(iq)) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        return;
    }
    struct iq_op *op = mp_calloc(1, sizeof *op);
    op->iq = mp_stanza_ref(iq);
    with_jid(&mp_stanza_envelope(iq)->from, op_get, op);
}

static void roster_set(mp_stanza *iq, void *ud)
{
    (void)ud;
    if (!own_roster(iq)) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        return;
    }
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    mp_xml *x = mp_xml_find(q, "item", NS_ROSTER);
    if (!x || mp_xml_find_next(x, "item", NS_ROSTER) || !mp_xml_get_attr(x, "jid")) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    struct iq_op *op = mp_calloc(1, sizeof *op);
    op->iq = mp_stanza_ref(iq);
    with_jid(&mp_stanza_envelope(iq)->from, op_set, op);
}

/* ---- subscriptions (RFC 6121 §3, Appendix A) ---- */

struct sub_op {
    char *contact; /* the other party's bare JID */
    enum mp_stanza_type type;
    mp_stanza *st; /* the stanza (referenced) */
};

static void sub_op_free(struct sub_op *op)
{
    free(op->contact);
    mp_stanza_unref(op->st);
    free(op);
}

/* The user u sent a subscription stanza to op->contact (Appendix A.2). */
static void op_outbound(struct user *u, void *arg, struct outbox *out)
{
    struct sub_op *op = arg;
    struct item *it = item_find(u, op->contact);
    int route = 1, save = 0;
    switch (op->type) {
    case MP_TYPE_SUBSCRIBE:
        if (!it) {
            if (visible_items(u) >= (size_t)mp_module_opt_int(self, "max_items"))
                break;
            it = item_add(u, op->contact);
            save = 1;
        }
        if (it->hidden) {
            it->hidden = 0;
            save = 1;
        }
        if (!(it->sub & SUB_TO) && !it->ask) {
            it->ask = 1;
            save = 1;
        }
        break;
    case MP_TYPE_SUBSCRIBED:
        if (it && it->pending_in && !(it->sub & SUB_FROM)) {
            it->sub |= SUB_FROM;
            it->pending_in = 0;
            it->approved = 0;
            if (it->request)
                mp_stanza_unref(it->request);
            it->request = NULL;
            if (it->hidden) {
                it->hidden = 0; /* RFC 6121 §3.1.5: the contact is added */
            }
            save = 1;
            out_add(out, readdress(op->st, u->bare, op->contact));
            /* §3.1.5: the new subscriber gets our current presence */
            send_current(u, op->contact, 0, out);
            route = 0;
        } else if (!it || !(it->sub & SUB_FROM)) {
            route = 0;
            if (mp_module_opt_bool(self, "pre_approval")) {
                /* §3.4: pre-approval, not routed */
                if (!it) {
                    if (visible_items(u) >= (size_t)mp_module_opt_int(self, "max_items"))
                        break;
                    it = item_add(u, op->contact);
                }
                if (!it->approved) {
                    it->approved = 1;
                    save = 1;
                }
            }
        }
        break;
    case MP_TYPE_UNSUBSCRIBE:
        if (it && ((it->sub & SUB_TO) || it->ask)) {
            it->sub &= ~SUB_TO;
            it->ask = 0;
            save = 1;
        }
        break;
    case MP_TYPE_UNSUBSCRIBED:
        if (it && ((it->sub & SUB_FROM) || it->pending_in || it->approved)) {
            if (it->sub & SUB_FROM)
                send_unavailable(u, op->contact, out); /* §3.2.2 */
            it->sub &= ~SUB_FROM;
            it->pending_in = 0;
            it->approved = 0;
            if (it->request)
                mp_stanza_unref(it->request);
            it->request = NULL;
            save = 1;
            if (it->hidden) {
                /* a declined request that never made it into the roster */
                item_save(u, it, 1);
                item_remove(u, it);
                save = 0;
            }
        }
        break;
    default:
        break;
    }
    if (route)
        out_add(out, readdress(op->st, u->bare, op->contact));
    if (save)
        changed(u, it, 0, out);
    sub_op_free(op);
}

/* Delivers st (copies, 'to' each resource) to u's available resources. */
static void deliver_to_resources(struct user *u, mp_stanza *st, struct outbox *out)
{
    for (struct resource *r = u->res; r; r = r->next)
        if (r->available)
            out_add(out, readdress(st, NULL, r->full));
}

/* op->contact sent a subscription stanza to the user u (Appendix A.3). */
static void op_inbound(struct user *u, void *arg, struct outbox *out)
{
    struct sub_op *op = arg;
    struct item *it = item_find(u, op->contact);
    switch (op->type) {
    case MP_TYPE_SUBSCRIBE:
        if (it && (it->sub & SUB_FROM)) {
            /* already subscribed: answer for the user (§3.1.3) */
            send_sub(u, op->contact, "subscribed", out);
            break;
        }
        if (it && it->approved) {
            it->sub |= SUB_FROM;
            it->approved = 0;
            send_sub(u, op->contact, "subscribed", out);
            send_current(u, op->contact, 0, out);
            changed(u, it, 0, out);
            break;
        }
        if (!it) {
            it = item_add(u, op->contact);
            it->hidden = 1;
        }
        it->pending_in = 1;
        if (it->request)
            mp_stanza_unref(it->request);
        /* kept (with its status) until answered; delivered now to the
         * available resources, and again at each login until answered */
        it->request = mp_stanza_copy(op->st);
        mp_xml_set_attr(it->request, mp_stanza_root(it->request), "from", op->contact);
        mp_xml_set_attr(it->request, mp_stanza_root(it->request), "to", u->bare);
        mp_stanza_envelope(it->request);
        item_save(u, it, 0);
        deliver_to_resources(u, it->request, out);
        break;
    case MP_TYPE_SUBSCRIBED:
        if (it && it->ask) {
            it->sub |= SUB_TO;
            it->ask = 0;
            changed(u, it, 0, out);
            deliver_to_resources(u, op->st, out);
        }
        break;
    case MP_TYPE_UNSUBSCRIBE:
        if (it && ((it->sub & SUB_FROM) || it->pending_in)) {
            int had = it->sub & SUB_FROM;
            it->sub &= ~SUB_FROM;
            it->pending_in = 0;
            if (it->request)
                mp_stanza_unref(it->request);
            it->request = NULL;
            if (had)
                send_unavailable(u, op->contact, out); /* §3.3.3 */
            deliver_to_resources(u, op->st, out);
            if (it->hidden) {
                item_save(u, it, 1);
                item_remove(u, it);
            } else {
                changed(u, it, 0, out);
            }
        }
        break;
    case MP_TYPE_UNSUBSCRIBED:
        if (it && ((it->sub & SUB_TO) || it->ask)) {
            it->sub &= ~SUB_TO;
            it->ask = 0;
            changed(u, it, 0, out);
            deliver_to_resources(u, op->st, out);
        }
        break;
    default:
        break;
    }
    sub_op_free(op);
}

/* A presence probe from op->contact to u (RFC 6121 §4.3.2). */
static void op_probe(struct user *u, void *arg, struct outbox *out)
{
    struct sub_op *op = arg;
    const char *to = mp_stanza_envelope(op->st)->from.full;
    struct item *it = item_find(u, op->contact);
    if (strcmp(op->contact, u->bare) == 0 || (it && (it->sub & SUB_FROM)))
        send_current(u, to, 1, out);
    else
        out_add(out, presence_new(u->bare, op->contact, "unsubscribed"));
    sub_op_free(op);
}

static struct sub_op *sub_op_new(mp_stanza *st, const mp_jid *other)
{
    struct sub_op *op = mp_calloc(1, sizeof *op);
    op->contact = mp_strdup(other->bare);
    op->type = mp_stanza_envelope(st)->type;
    op->st = mp_stanza_ref(st);
    return op;
}

static int is_subscription(enum mp_stanza_type t)
{
    return t == MP_TYPE_SUBSCRIBE || t == MP_TYPE_SUBSCRIBED || t == MP_TYPE_UNSUBSCRIBE ||
           t == MP_TYPE_UNSUBSCRIBED;
}

/* Inbound filter: subscription stanzas and directed presence from clients. */
static int from_client(mp_session *s, mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind != MP_KIND_PRESENCE || !env->to.domain)
        return MP_FILTER_PASS;
    const mp_jid *me = mp_session_jid(s);
    if (is_subscription(env->type)) {
        if (strcmp(env->to.bare, me->bare) == 0)
            return MP_FILTER_PASS;
        with_jid(me, op_outbound, sub_op_new(st, &env->to));
        return MP_FILTER_STOP;
    }
    if (env->type != MP_TYPE_NONE && env->type != MP_TYPE_UNAVAILABLE)
        return MP_FILTER_PASS;
    if (strcmp(env->to.bare, me->bare) == 0)
        return MP_FILTER_PASS;
    /* directed presence (RFC 6121 §4.6) */
    struct sess *ss = sess_of(s);
    struct directed *d = &ss->directed;
    size_t i;
    for (i = 0; i < d->n && strcmp(d->v[i], env->to.full) != 0; i++)
        ;
    if (env->type == MP_TYPE_UNAVAILABLE) {
        if (i < d->n) {
            free(d->v[i]);
            d->v[i] = d->v[--d->n];
        }
    } else if (i == d->n && ss->available && d->n < 1000) {
        d->v = mp_realloc(d->v, (d->n + 1) * sizeof *d->v);
        d->v[d->n++] = mp_strdup(env->to.full);
    }
    return MP_FILTER_PASS;
}

struct exists_op {
    struct sub_op *op;
    char *host, *local, *bare;
};

static void contact_checked(void *ud, int rc)
{
    struct exists_op *e = ud;
    if (rc == MAGPIE_OK) {
        with_user(e->host, e->local, e->bare, op_inbound, e->op);
    } else {
        /* RFC 6121 §3.1.3: no such account: the request is declined */
        if (rc == MAGPIE_NOTFOUND)
            mp_route(presence_new(e->bare, e->op->contact, "unsubscribed"));
        sub_op_free(e->op);
    }
    free(e->host);
    free(e->local);
    free(e->bare);
    free(e);
}

/* The contact's side: a subscription stanza for a local account. */
static int subscription_in(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->from.domain || !env->to.local)
        return HOOK_HANDLED; /* nothing to subscribe from or to */
    struct sub_op *op = sub_op_new(st, &env->from);
    if (env->type != MP_TYPE_SUBSCRIBE) {
        with_jid(&env->to, op_inbound, op);
        return HOOK_HANDLED;
    }
    struct exists_op *e = mp_calloc(1, sizeof *e);
    e->op = op;
    e->host = mp_strdup(env->to.domain);
    e->local = mp_strdup(env->to.local);
    e->bare = mp_strdup(env->to.bare);
    if (mp_account_exists(e->host, e->local, contact_checked, e) != MAGPIE_OK)
        contact_checked(e, MAGPIE_ERR);
    return HOOK_HANDLED;
}

static int probe_in(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->from.domain || !env->to.local)
        return HOOK_HANDLED;
    with_jid(&env->to, op_probe, sub_op_new(st, &env->from));
    return HOOK_HANDLED;
}

/* ---- stream features ---- */

static void features(mp_session *s, mp_stanza *st, mp_xml *f, void *ud)
{
    (void)s;
    (void)ud;
    mp_xml_add_child(st, f, "ver", NS_ROSTERVER);
    if (mp_module_opt_bool(self, "pre_approval"))
        mp_xml_add_child(st, f, "sub", NS_PREAPPROVAL);
}

/* ---- module ---- */

/* ---- roster queries for other modules (mp_roster_contacts) ---- */

struct contacts_op {
    mp_roster_contacts_cb cb;
    void *ud;
    struct mp_roster_contact *v;
    size_t n;
};

static void contacts_deliver(void *arg)
{
    struct contacts_op *op = arg;
    op->cb(op->ud, MAGPIE_OK, op->v, op->n);
    for (size_t i = 0; i < op->n; i++)
        free((char *)op->v[i].jid);
    free(op->v);
    free(op);
}

/* Copies the visible items with their subscription bits and hands them to
 * the caller on its loop, after the lock is released. */
static void op_contacts(struct user *u, void *arg, struct outbox *out)
{
    (void)out;
    struct contacts_op *op = arg;
    op->v = mp_calloc(1, u->n_items * sizeof *op->v);
    for (size_t i = 0; i < u->n_items; i++) {
        if (u->items[i]->hidden)
            continue;
        op->v[op->n].jid = mp_strdup(u->items[i]->jid);
        op->v[op->n++].subscription = ((u->items[i]->sub & SUB_TO) ? MP_SUB_TO : 0) |
                                      ((u->items[i]->sub & SUB_FROM) ? MP_SUB_FROM : 0);
    }
    if (mp_loop_post(mp_loop_current(), contacts_deliver, op) != MAGPIE_OK) {
        for (size_t i = 0; i < op->n; i++)
            free((char *)op->v[i].jid);
        free(op->v);
        free(op); /* shutting down */
    }
}

static int contacts_query(const char *host, const char *user, mp_roster_contacts_cb cb, void *ud,
                          void *pud)
{
    (void)pud;
    if (!mp_loop_current())
        return MAGPIE_ERR;
    size_t n = strlen(user) + strlen(host) + 2;
    char *bare = mp_calloc(1, n);
    snprintf(bare, n, "%s@%s", user, host);
    struct contacts_op *op = mp_calloc(1, sizeof *op);
    op->cb = cb;
    op->ud = ud;
    with_user(host, user, bare, op_contacts, op);
    free(bare);
    return MAGPIE_OK;
}

static const struct mp_route_hooks route_hooks = {
    .presence_subscription = subscription_in,
    .presence_probe = probe_in,
};

/* ---- answers to other modules (module.h, struct mp_queries) ---- */

struct item_q {
    mp_roster_item_cb cb;
    void *ud;
};

/* The stored item answers: the store has every change, written in order
 * (one pool thread per key), so a read sees the changes made before it. */
static void item_read(void *ud, int rc, const void *data, size_t len)
{
    struct item_q *q = ud;
    mp_stanza *st = rc == MAGPIE_OK ? mp_stanza_parse(data, len) : NULL;
    if (rc == MAGPIE_OK && !st)
        rc = MAGPIE_ERR;
    if (st && mp_xml_get_attr(mp_stanza_root(st), "hidden"))
        rc = MAGPIE_NOTFOUND; /* only a waiting request, not a roster item */
    if (rc == MAGPIE_OK) {
        const char *sub = mp_xml_get_attr(mp_stanza_root(st), "subscription");
        q->cb(q->ud, MAGPIE_OK, sub ? sub : "none");
    } else {
        q->cb(q->ud, rc, NULL);
    }
    if (st)
        mp_stanza_unref(st);
    free(q);
}

static int roster_item(const char *host, const char *user, const char *contact,
                       mp_roster_item_cb cb, void *cb_ud, void *ud)
{
    (void)ud;
    if (!contact || !*contact)
        return MAGPIE_ERR; /* "" is the version field */
    struct item_q *q = mp_calloc(1, sizeof *q);
    q->cb = cb;
    q->ud = cb_ud;
    if (mp_map_get(host, STORE, user, contact, item_read, q) != MAGPIE_OK) {
        free(q);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

static const struct mp_queries queries = {.roster_item = roster_item};

static int load(mp_module *m)
{
    self = m;
    mp_queries_add(m, &queries, NULL);
    c_pushes = mp_counter_new(m, "pushes", "Roster pushes sent");
    c_broadcasts = mp_counter_new(m, "broadcasts", "Presence stanzas broadcast to contacts");
    c_probes = mp_counter_new(m, "probes", "Presence probes sent on login");
    mp_iq_register(m, MP_IQ_GET, NS_ROSTER, MP_IQ_ACCOUNT, roster_get, NULL);
    mp_iq_register(m, MP_IQ_SET, NS_ROSTER, MP_IQ_ACCOUNT, roster_set, NULL);
    mp_filter_add(m, MP_FILTER_IN, 50, from_client, NULL);
    mp_route_hooks_add(m, &route_hooks, 0, NULL);
    mp_notify_add(m, &notify, NULL);
    mp_stream_feature_add(m, MP_FEATURES_POST_AUTH, features, NULL);
    mp_roster_provider_set(m, contacts_query, NULL);
    return MAGPIE_OK;
}

/* Frees the argument of an operation that will never run (shutdown). */
static void waiter_drop(struct waiter *w)
{
    if (w->fn == op_session_start || w->fn == op_session_end || w->fn == op_presence) {
        res_op_free(w->arg);
    } else if (w->fn == op_contacts) {
        free(w->arg); /* nothing copied yet */
    } else if (w->fn == op_get || w->fn == op_set) {
        struct iq_op *op = w->arg;
        mp_stanza_unref(op->iq);
        free(op);
    } else {
        sub_op_free(w->arg); /* op_outbound, op_inbound, op_probe */
    }
    free(w);
}

static void unload(mp_module *m)
{
    (void)m;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < NBUCKETS; i++)
        while (buckets[i]) {
            struct user *u = buckets[i];
            buckets[i] = u->next;
            while (u->wq) {
                struct waiter *w = u->wq;
                u->wq = w->next;
                waiter_drop(w); /* the workers are gone: their operations with them */
            }
            user_free(u);
        }
    pthread_mutex_unlock(&lock);
}

MP_MODULE_DECLARE("roster", "RFC 6121 rosters, subscriptions and presence; XEP-0237 versioning",
                  options, load, unload, NULL);
