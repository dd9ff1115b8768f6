/* mod_pep - XEP-0163 Personal Eventing Protocol: every account is a
 * publish-subscribe service (the XEP-0060 subset PEP needs), with
 * notifications filtered by the XEP-0115 entity capabilities of clients.
 *
 * What it registers:
 *   IQ set/get http://jabber.org/protocol/pubsub (account scope): publish
 *     (the node is created on first publish, XEP-0060 §7.1 with
 *     publish-options preconditions §7.1.5), retract (notify='true' sends
 *     a retraction event), items (all, max_items, by id).
 *   IQ set/get http://jabber.org/protocol/pubsub#owner (account scope):
 *     delete, purge, configure (get the node_config form, submit it),
 *     affiliations (get; set member or none: the whitelist).
 *   an inbound filter: disco#items addressed to an account's bare JID
 *     (without node: the nodes the requester may read; with a node: the
 *     ids of its items, plus the account items modules registered);
 *     mod_disco answers every other disco#items. disco#info with a node
 *     on an account: that node (identity pubsub/leaf, access model).
 *   the same filter: XEP-0049 private storage of storage:bookmarks, mapped
 *     to the XEP-0402 node (see the compatibility section).
 *   the account disco identity pubsub/pep and the pubsub features.
 *   presence_changed / session_ended: the caps (<c xmlns=
 *     'http://jabber.org/protocol/caps' hash='sha-1' node= ver=/>) of every
 *     available resource. An unknown ver is asked once with a disco#info
 *     to node#ver from the host, the answer's SHA-1 verification string
 *     (XEP-0115 §5.1) checked against ver, and the "+notify" features kept
 *     in a cache shared by all users (bounded by caps_cache). When a
 *     resource's caps are known, it gets the last item of every node it
 *     is interested in of its own account and of each contact whose
 *     presence it receives.
 *   the iq_result routing hook: the answers to those disco#info queries.
 *
 * Notifications (<message type='headline'><event
 * xmlns='http://jabber.org/protocol/pubsub#event'>) go to the full JIDs
 * of available resources with a non-negative priority whose caps carry
 * <node>+notify (XEP-0163 §4: the owner's own resources too), of the
 * owner and of contacts with a 'from' subscription (asked of the roster
 * module with mp_roster_contacts); whitelist nodes notify the owner and
 * the node's members.
 *
 * Access models: open (anyone), presence (the owner and contacts with a
 * 'from' subscription; others get not-authorized with
 * <presence-subscription-required/>, XEP-0060 §6.5.9.3), whitelist (the
 * owner and members; others get not-allowed with <closed-node/>,
 * §6.5.9.4). Members read a node whatever its model.
 *
 * State: one `struct owner` per account being worked on, in a table
 * behind one mutex, loaded from the map store "pep" (key = username,
 * field = node name, value = the node as XML: <node access= persist=
 * max= [sendlast=never]><member jid=/>...<item id=>payload</item>...
 * </node>). Every operation runs with the owner's nodes loaded and the
 * lock held; stanzas are routed after the lock is released. Store writes
 * are issued under the lock, so they reach the store in order, and an
 * answer that changed a node goes once its write is committed. An owner
 * none of whose resources is available and for whom nothing waits is
 * idle: idle owners stay in memory, least recently used dropped first,
 * while they fit in cache_bytes.
 *
 * Limits: max_nodes and max_bytes per account (policy-violation),
 * max_items per node, max_payload per item, MAX_NAME per node name or
 * item id (not-acceptable). The caps lock and the owner lock are never
 * held together. */
#include <magpie/magpie.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PUBSUB      "http://jabber.org/protocol/pubsub"
#define NS_OWNER       "http://jabber.org/protocol/pubsub#owner"
#define NS_EVENT       "http://jabber.org/protocol/pubsub#event"
#define NS_ERRORS      "http://jabber.org/protocol/pubsub#errors"
#define NS_PUBOPTS     "http://jabber.org/protocol/pubsub#publish-options"
#define NS_NODE_CONFIG "http://jabber.org/protocol/pubsub#node_config"
#define NS_CAPS        "http://jabber.org/protocol/caps"
#define NS_DISCO_INFO  "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_STORE       "urn:magpie:pep"
#define NS_PRIVATE     "jabber:iq:private"
#define NS_BOOKMARKS   "urn:xmpp:bookmarks:1"
#define NS_BM_LEGACY   "storage:bookmarks"
#define STORE          "pep"
#define CAPS_RETRY_US  (30 * 1000000LL) /* a caps query unanswered this long is asked again */
#define MAX_NAME       512              /* bytes of a node name or an item id */
#define MAX_MEMBERS    1000             /* member affiliations per node */
#define CAPS_ID_PREFIX "pepcaps-"

static const struct mp_option options[] = {
    {"max_nodes", MP_OPT_INT, "64",
     "Most nodes one account may have (creating one more gets policy-violation)", 1, 10000},
    {"max_items", MP_OPT_INT, "256",
     "Most items one node keeps (pubsub#max_items 'max'); asking for more gets not-acceptable", 1,
     100000},
    {"default_max_items", MP_OPT_INT, "1", "Items a new node keeps unless configured otherwise", 1,
     100000},
    {"max_payload", MP_OPT_INT, "262144",
     "Largest item payload in bytes, serialised (beyond: not-acceptable)", 64, 16777216},
    {"max_bytes", MP_OPT_INT, "4194304",
     "Item payload bytes one account may keep, all nodes together (beyond: policy-violation)", 1024,
     1073741824},
    {"cache_bytes", MP_OPT_INT, "16777216",
     "Memory kept for the nodes of accounts with no client online (bytes, least recently used "
     "dropped first; 0: none)",
     0, 4294967296LL},
    {"caps_cache", MP_OPT_INT, "4096",
     "Entity capabilities (XEP-0115 ver hashes) remembered, shared by all users", 16, 1000000},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;
static mp_counter *c_published, *c_notified, *c_caps_queries;

static unsigned hash_str(const char *s, unsigned n)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % n;
}

/* ---- outbox: stanzas routed once the lock is released ---- */

struct outbox {
    mp_stanza **v;
    size_t n, cap;
};

static void out_add(struct outbox *o, mp_stanza *st)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 8;
        o->v = mp_realloc(o->v, o->cap * sizeof *o->v);
    }
    o->v[o->n++] = st;
}

static void out_flush(struct outbox *o)
{
    for (size_t i = 0; i < o->n; i++)
        mp_route(o->v[i]);
    free(o->v);
    *o = (struct outbox){0};
}

/* ---- nodes and owners ---- */

enum access { ACC_OPEN = 0, ACC_PRESENCE, ACC_WHITELIST };
static const char *const access_names[] = {"open", "presence", "whitelist"};

struct item {
    char *id;
    char *payload; /* serialised payload element */
    int64_t ts;    /* published (unix microseconds) */
};

struct node {
    char *name;
    int access;
    int persist;
    int never;      /* pubsub#send_last_published_item = never */
    char **members; /* bare JIDs with the member affiliation */
    size_t n_members;
    int max_items;      /* 0: "max" (the max_items option) */
    struct item *items; /* oldest first */
    size_t n;
};

struct owner;
typedef void (*owner_fn)(struct owner *o, void *arg, struct outbox *out);

struct waiter {
    owner_fn fn;
    void *arg;
    struct waiter *next;
};

struct owner {
    char *bare, *host, *local;
    int loaded;
    struct node **nodes;
    size_t n;
    struct waiter *wq, **wq_tail;
    struct owner *next;
    /* idle: no available resource, nothing waiting; kept in an LRU list
     * (newest first) while the idle owners' bytes fit in cache_bytes */
    int idle;
    int forget; /* the account was deleted while its nodes loaded */
    size_t idle_bytes;
    struct owner *lru_prev, *lru_next;
};

#define NBUCKETS 1024
static struct owner *owners[NBUCKETS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void node_clear_items(struct node *nd)
{
    for (size_t i = 0; i < nd->n; i++) {
        free(nd->items[i].id);
        free(nd->items[i].payload);
    }
    free(nd->items);
    nd->items = NULL;
    nd->n = 0;
}

static void node_free(struct node *nd)
{
    for (size_t i = 0; i < nd->n_members; i++)
        free(nd->members[i]);
    free(nd->members);
    node_clear_items(nd);
    free(nd->name);
    free(nd);
}

static void owner_free(struct owner *o)
{
    for (size_t i = 0; i < o->n; i++)
        node_free(o->nodes[i]);
    free(o->nodes);
    free(o->bare);
    free(o->host);
    free(o->local);
    free(o);
}

static int member_find(const struct node *nd, const char *bare)
{
    for (size_t i = 0; i < nd->n_members; i++)
        if (strcmp(nd->members[i], bare) == 0)
            return (int)i;
    return -1;
}

/* Adds (on != 0) or removes bare from nd's members. */
static void member_set(struct node *nd, const char *bare, int on)
{
    int k = member_find(nd, bare);
    if (on && k < 0) {
        nd->members = mp_realloc(nd->members, (nd->n_members + 1) * sizeof *nd->members);
        nd->members[nd->n_members++] = mp_strdup(bare);
    } else if (!on && k >= 0) {
        free(nd->members[k]);
        nd->members[k] = nd->members[--nd->n_members];
    }
}

static struct node *node_find(struct owner *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->nodes[i]->name, name) == 0)
            return o->nodes[i];
    return NULL;
}

static struct node *node_add(struct owner *o, const char *name)
{
    struct node *nd = mp_calloc(1, sizeof *nd);
    nd->name = mp_strdup(name);
    nd->access = ACC_PRESENCE;
    nd->persist = 1;
    nd->max_items = (int)mp_module_opt_int(self, "default_max_items");
    o->nodes = mp_realloc(o->nodes, (o->n + 1) * sizeof *o->nodes);
    o->nodes[o->n++] = nd;
    return nd;
}

static void node_remove(struct owner *o, struct node *nd)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->nodes[i] == nd) {
            memmove(&o->nodes[i], &o->nodes[i + 1], (o->n - i - 1) * sizeof *o->nodes);
            o->n--;
            break;
        }
    node_free(nd);
}

static int node_limit(const struct node *nd)
{
    int cap = (int)mp_module_opt_int(self, "max_items");
    return nd->max_items == 0 || nd->max_items > cap ? cap : nd->max_items;
}

static struct item *item_find(struct node *nd, const char *id)
{
    for (size_t i = 0; i < nd->n; i++)
        if (strcmp(nd->items[i].id, id) == 0)
            return &nd->items[i];
    return NULL;
}

static void item_remove(struct node *nd, struct item *it)
{
    size_t i = (size_t)(it - nd->items);
    free(it->id);
    free(it->payload);
    memmove(&nd->items[i], &nd->items[i + 1], (nd->n - i - 1) * sizeof *nd->items);
    nd->n--;
}

/* Appends (id, payload) as the newest item (ownership of both taken),
 * replacing an item with the same id and dropping the oldest beyond the
 * node's limit. */
static void item_push(struct node *nd, char *id, char *payload, int64_t ts)
{
    struct item *old = item_find(nd, id);
    if (old)
        item_remove(nd, old);
    nd->items = mp_realloc(nd->items, (nd->n + 1) * sizeof *nd->items);
    nd->items[nd->n++] = (struct item){id, payload, ts};
    size_t lim = (size_t)node_limit(nd);
    while (nd->n > lim)
        item_remove(nd, &nd->items[0]);
}

/* ---- storage form ---- */

static void answered(void *ud, int rc);

/* Writes nd to the store; reply (taken, may be NULL) is routed once the
 * write is committed. */
static void node_save(struct owner *o, struct node *nd, mp_stanza *reply)
{
    mp_stanza *st = mp_stanza_new("node", NS_STORE);
    mp_xml *root = mp_stanza_root(st);
    char buf[24];
    mp_xml_set_attr(st, root, "access", access_names[nd->access]);
    mp_xml_set_attr(st, root, "persist", nd->persist ? "1" : "0");
    if (nd->never)
        mp_xml_set_attr(st, root, "sendlast", "never");
    snprintf(buf, sizeof buf, "%d", nd->max_items);
    mp_xml_set_attr(st, root, "max", buf);
    for (size_t i = 0; i < nd->n_members; i++)
        mp_xml_set_attr(st, mp_xml_add_child(st, root, "member", NULL), "jid", nd->members[i]);
    for (size_t i = 0; nd->persist && i < nd->n; i++) {
        mp_stanza *p = mp_stanza_parse(nd->items[i].payload, strlen(nd->items[i].payload));
        if (!p)
            continue;
        mp_xml *it = mp_xml_add_child(st, root, "item", NULL);
        mp_xml_set_attr(st, it, "id", nd->items[i].id);
        char ts[24];
        snprintf(ts, sizeof ts, "%lld", (long long)nd->items[i].ts);
        mp_xml_set_attr(st, it, "ts", ts);
        mp_xml_add_copy(st, it, mp_stanza_root(p));
        mp_stanza_unref(p);
    }
    char *s = mp_xml_to_string(root, NULL);
    if (mp_map_set(o->host, STORE, o->local, nd->name, s, strlen(s), reply ? answered : NULL,
                   reply) != MAGPIE_OK &&
        reply)
        answered(reply, MAGPIE_ERR);
    free(s);
    mp_stanza_unref(st);
}

static void node_load(struct owner *o, const char *name, const void *data, size_t len)
{
    mp_stanza *st = mp_stanza_parse(data, len);
    if (!st) {
        mp_log(MP_LOG_WARN, "pep: node %s of %s is not readable; skipped", name, o->bare);
        return;
    }
    mp_xml *root = mp_stanza_root(st);
    struct node *nd = node_add(o, name);
    const char *a = mp_xml_get_attr(root, "access");
    for (int k = 0; a && k < 3; k++)
        if (strcmp(a, access_names[k]) == 0)
            nd->access = k;
    const char *sl = mp_xml_get_attr(root, "sendlast");
    nd->never = sl && strcmp(sl, "never") == 0;
    const char *p = mp_xml_get_attr(root, "persist");
    nd->persist = !p || strcmp(p, "0") != 0;
    const char *m = mp_xml_get_attr(root, "max");
    if (m)
        nd->max_items = atoi(m);
    for (mp_xml *mb = mp_xml_find(root, "member", NULL); mb;
         mb = mp_xml_find_next(mb, "member", NULL)) {
        const char *jid = mp_xml_get_attr(mb, "jid");
        if (jid)
            member_set(nd, jid, 1);
    }
    for (mp_xml *it = mp_xml_find(root, "item", NULL); it;
         it = mp_xml_find_next(it, "item", NULL)) {
        const char *id = mp_xml_get_attr(it, "id");
        mp_xml *pl = mp_xml_first_element(it);
        const char *ts = mp_xml_get_attr(it, "ts");
        if (id && pl)
            item_push(nd, mp_strdup(id), mp_xml_to_string(pl, NULL), ts ? atoll(ts) : 0);
    }
    mp_stanza_unref(st);
}

/* ---- the owner table ---- */

static void count_res(void *ud, const char *full, int priority)
{
    (void)full;
    (void)priority;
    (*(int *)ud)++;
}

static struct owner *lru_head, *lru_tail;
static size_t lru_bytes;

static void lru_unlink(struct owner *o)
{
    if (!o->idle)
        return;
    if (o->lru_prev)
        o->lru_prev->lru_next = o->lru_next;
    else
        lru_head = o->lru_next;
    if (o->lru_next)
        o->lru_next->lru_prev = o->lru_prev;
    else
        lru_tail = o->lru_prev;
    o->lru_prev = o->lru_next = NULL;
    lru_bytes -= o->idle_bytes;
    o->idle = 0;
}

static void owner_drop(struct owner *o)
{
    lru_unlink(o);
    struct owner **pp = &owners[hash_str(o->bare, NBUCKETS)];
    while (*pp && *pp != o)
        pp = &(*pp)->next;
    if (*pp)
        *pp = o->next;
    owner_free(o);
}

static size_t owner_bytes(const struct owner *o);

/* After an operation on o (lock held): an owner with an available
 * resource or waiting operations stays; an idle one goes to the head of
 * the LRU list, and the least recently used idle owners are dropped
 * while their bytes exceed cache_bytes. Contacts' logins (last items)
 * then seldom read the store again. */
static void maybe_evict(struct owner *o)
{
    if (!o->loaded)
        return;
    int n = 0;
    if (!o->wq)
        mp_sessions_foreach(o->bare, count_res, &n);
    lru_unlink(o);
    if (o->wq || n > 0)
        return;
    o->idle = 1;
    o->idle_bytes = 512 + strlen(o->bare) + owner_bytes(o);
    o->lru_next = lru_head;
    if (lru_head)
        lru_head->lru_prev = o;
    lru_head = o;
    if (!lru_tail)
        lru_tail = o;
    lru_bytes += o->idle_bytes;
    size_t budget = (size_t)mp_module_opt_int(self, "cache_bytes");
    while (lru_tail && lru_bytes > budget)
        owner_drop(lru_tail);
}

static void loaded(void *ud, int rc, const mp_map_item *items, size_t n)
{
    struct owner *o = ud;
    struct outbox out = {0};
    pthread_mutex_lock(&lock);
    if (rc != MAGPIE_OK)
        mp_log(MP_LOG_ERROR, "pep: cannot read the nodes of %s; serving none", o->bare);
    for (size_t i = 0; i < n && !o->forget; i++)
        node_load(o, items[i].field, items[i].data, items[i].len);
    o->loaded = 1;
    /* the operations that waited run here, in order (they only route) */
    while (o->wq) {
        struct waiter *w = o->wq;
        o->wq = w->next;
        w->fn(o, w->arg, &out);
        free(w);
    }
    o->wq_tail = &o->wq;
    maybe_evict(o);
    pthread_mutex_unlock(&lock);
    out_flush(&out);
}

/* Runs fn(o, arg, out) for the account (host, local) with its nodes
 * loaded and the lock held, now or once they are loaded; then routes the
 * outbox. fn owns arg. */
static void with_owner(const char *host, const char *local, owner_fn fn, void *arg)
{
    struct outbox out = {0};
    size_t bl = strlen(local) + strlen(host) + 2;
    char *bare = mp_calloc(1, bl);
    snprintf(bare, bl, "%s@%s", local, host);
    pthread_mutex_lock(&lock);
    unsigned h = hash_str(bare, NBUCKETS);
    struct owner *o = owners[h];
    while (o && strcmp(o->bare, bare) != 0)
        o = o->next;
    if (!o) {
        o = mp_calloc(1, sizeof *o);
        o->bare = bare;
        bare = NULL;
        o->host = mp_strdup(host);
        o->local = mp_strdup(local);
        o->wq_tail = &o->wq;
        o->next = owners[h];
        owners[h] = o;
        struct waiter *w = mp_calloc(1, sizeof *w);
        w->fn = fn;
        w->arg = arg;
        *o->wq_tail = w;
        o->wq_tail = &w->next;
        pthread_mutex_unlock(&lock);
        if (mp_map_all(host, STORE, local, loaded, o) != MAGPIE_OK)
            loaded(o, MAGPIE_ERR, NULL, 0);
        return;
    }
    free(bare);
    if (!o->loaded) {
        struct waiter *w = mp_calloc(1, sizeof *w);
        w->fn = fn;
        w->arg = arg;
        *o->wq_tail = w;
        o->wq_tail = &w->next;
        pthread_mutex_unlock(&lock);
        return;
    }
    fn(o, arg, &out);
    maybe_evict(o);
    pthread_mutex_unlock(&lock);
    out_flush(&out);
}

/* ---- entity capabilities (XEP-0115) ---- */

struct caps {
    char *ver;
    int known;        /* 0: asked, answer pending */
    int64_t asked_at; /* when (mp_now_us), while pending */
    char qid[40];     /* id of the disco#info we sent */
    char *asked;      /* full JID asked */
    char **notify;    /* node names with +notify */
    size_t n;
    uint64_t used;
    struct caps *next;
};

struct res {
    char *full;
    char *ver;    /* NULL: no usable caps */
    int initial;  /* last items sent for this ver */
    int negative; /* presence priority < 0: no notifications (§4.3.2) */
    struct res *next;
};

#define CBUCKETS 1024
static struct caps *caps_tab[CBUCKETS];
static size_t n_caps;
static uint64_t caps_clock;
static struct res *res_tab[CBUCKETS];
static pthread_mutex_t caps_lock = PTHREAD_MUTEX_INITIALIZER;

static void caps_free(struct caps *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->notify[i]);
    free(c->notify);
    free(c->ver);
    free(c->asked);
    free(c);
}

static struct caps *caps_find(const char *ver)
{
    for (struct caps *c = caps_tab[hash_str(ver, CBUCKETS)]; c; c = c->next)
        if (strcmp(c->ver, ver) == 0)
            return c;
    return NULL;
}

static void caps_unlink(struct caps *c)
{
    struct caps **pp = &caps_tab[hash_str(c->ver, CBUCKETS)];
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    n_caps--;
}

/* Makes room for one more entry: drops the least recently used. caps_lock held. */
static void caps_evict(void)
{
    size_t cap = (size_t)mp_module_opt_int(self, "caps_cache");
    while (n_caps >= cap) {
        struct caps *lru = NULL;
        for (size_t b = 0; b < CBUCKETS; b++)
            for (struct caps *c = caps_tab[b]; c; c = c->next)
                if (!lru || c->used < lru->used)
                    lru = c;
        if (!lru)
            return;
        caps_unlink(lru);
        caps_free(lru);
    }
}

static struct res *res_find(const char *full, struct res ***where)
{
    struct res **pp = &res_tab[hash_str(full, CBUCKETS)];
    while (*pp && strcmp((*pp)->full, full) != 0)
        pp = &(*pp)->next;
    if (where)
        *where = pp;
    return *pp;
}

static void res_drop(const char *full)
{
    pthread_mutex_lock(&caps_lock);
    struct res **pp;
    struct res *r = res_find(full, &pp);
    if (r) {
        *pp = r->next;
        free(r->full);
        free(r->ver);
        free(r);
    }
    pthread_mutex_unlock(&caps_lock);
}

/* A copy of the +notify node names of full's caps (NULL, 0 when unknown).
 * Caller frees with strv_free. */
struct strv {
    char **v;
    size_t n;
};

static void strv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    *s = (struct strv){0};
}

static void strv_add(struct strv *s, const char *x)
{
    s->v = mp_realloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n++] = mp_strdup(x);
}

static int strv_has(const struct strv *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0)
            return 1;
    return 0;
}

/* Whether full's caps say it wants notifications of node. */
static int wants(const char *full, const char *node)
{
    int yes = 0;
    pthread_mutex_lock(&caps_lock);
    struct res *r = res_find(full, NULL);
    struct caps *c = r && r->ver ? caps_find(r->ver) : NULL;
    if (c && c->known) {
        c->used = ++caps_clock;
        for (size_t i = 0; i < c->n && !yes; i++)
            yes = strcmp(c->notify[i], node) == 0;
    }
    pthread_mutex_unlock(&caps_lock);
    return yes;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Orders "category/type/lang/name" strings field by field (XEP-0115 §5.1
 * step 2: by category, then type, then xml:lang; the name last), which a
 * plain strcmp does not when a field is a prefix of the other ("en" and
 * "en-GB"). */
static int cmp_ident(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    for (int f = 0; f < 4; f++) {
        const char *xe = f < 3 ? strchr(x, '/') : NULL, *ye = f < 3 ? strchr(y, '/') : NULL;
        size_t xl = xe ? (size_t)(xe - x) : strlen(x), yl = ye ? (size_t)(ye - y) : strlen(y);
        int c = memcmp(x, y, xl < yl ? xl : yl);
        if (c || xl != yl)
            return c ? c : (xl < yl ? -1 : 1);
        if (!xe || !ye)
            return 0;
        x = xe + 1;
        y = ye + 1;
    }
    return 0;
}

struct sbuf {
    char *s;
    size_t n, cap;
};

static void sb_add(struct sbuf *b, const char *s)
{
    size_t l = strlen(s);
    if (b->n + l + 1 > b->cap) {
        b->cap = (b->n + l + 1) * 2;
        b->s = mp_realloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, l + 1);
    b->n += l;
}

struct cfield {
    const char *var;
    const char **values;
    size_t n;
};

static int cmp_field(const void *a, const void *b)
{
    return strcmp(((const struct cfield *)a)->var, ((const struct cfield *)b)->var);
}

struct cform {
    const char *type;
    const mp_xml *x;
};

static int cmp_form(const void *a, const void *b)
{
    return strcmp(((const struct cform *)a)->type, ((const struct cform *)b)->type);
}

/* Appends the XEP-0115 §5.4 string of one extended form. */
static void caps_form_string(mp_stanza *st, const struct cform *f, struct sbuf *sb)
{
    sb_add(sb, f->type);
    sb_add(sb, "<");
    size_t nf = 0;
    for (mp_xml *fl = mp_xml_find(f->x, "field", NULL); fl;
         fl = mp_xml_find_next(fl, "field", NULL))
        nf++;
    struct cfield *fields = mp_calloc(1, nf * sizeof *fields);
    size_t k = 0;
    for (mp_xml *fl = mp_xml_find(f->x, "field", NULL); fl;
         fl = mp_xml_find_next(fl, "field", NULL)) {
        const char *var = mp_xml_get_attr(fl, "var");
        if (!var || strcmp(var, "FORM_TYPE") == 0)
            continue;
        struct cfield *cf = &fields[k++];
        cf->var = var;
        for (mp_xml *v = mp_xml_find(fl, "value", NULL); v; v = mp_xml_find_next(v, "value", NULL))
            cf->n++;
        cf->values = mp_calloc(1, cf->n * sizeof *cf->values);
        size_t j = 0;
        for (mp_xml *v = mp_xml_find(fl, "value", NULL); v; v = mp_xml_find_next(v, "value", NULL))
            cf->values[j++] = mp_xml_text(st, v);
        qsort(cf->values, cf->n, sizeof *cf->values, cmp_str);
    }
    qsort(fields, k, sizeof *fields, cmp_field);
    for (size_t i = 0; i < k; i++) {
        sb_add(sb, fields[i].var);
        sb_add(sb, "<");
        for (size_t j = 0; j < fields[i].n; j++) {
            sb_add(sb, fields[i].values[j]);
            sb_add(sb, "<");
        }
        free(fields[i].values);
    }
    free(fields);
}

/* Computes the XEP-0115 §5.1 verification string of a disco#info query
 * and its SHA-1, base64-encoded, into out (>= 32 bytes). Returns 0, or -1
 * when the query is ill-formed (§5.4: duplicate identities or features,
 * several forms of one FORM_TYPE). */
static int caps_hash(mp_stanza *st, const mp_xml *q, char *out, size_t outlen)
{
    size_t ni = 0, nf = 0, nx = 0;
    for (mp_xml *e = mp_xml_first_element(q); e; e = mp_xml_find_next(e, NULL, NULL)) {
        if (strcmp(e->name, "identity") == 0)
            ni++;
        else if (strcmp(e->name, "feature") == 0)
            nf++;
        else if (strcmp(e->name, "x") == 0 && strcmp(e->ns, MP_NS_DATA) == 0)
            nx++;
    }
    char **ids = mp_calloc(1, ni * sizeof *ids);
    const char **feats = mp_calloc(1, nf * sizeof *feats);
    struct cform *forms = mp_calloc(1, nx * sizeof *forms);
    size_t i = 0, f = 0, x = 0;
    int bad = 0;
    for (mp_xml *e = mp_xml_first_element(q); e; e = mp_xml_find_next(e, NULL, NULL)) {
        if (strcmp(e->name, "identity") == 0) {
            const char *c = mp_xml_get_attr(e, "category"), *t = mp_xml_get_attr(e, "type");
            const char *l = mp_xml_get_attr(e, "xml:lang"), *n = mp_xml_get_attr(e, "name");
            if (!l)
                l = mp_xml_get_attr(e, MP_NS_XML "|lang");
            struct sbuf sb = {0};
            sb_add(&sb, c ? c : "");
            sb_add(&sb, "/");
            sb_add(&sb, t ? t : "");
            sb_add(&sb, "/");
            sb_add(&sb, l ? l : "");
            sb_add(&sb, "/");
            sb_add(&sb, n ? n : "");
            ids[i++] = sb.s ? sb.s : mp_strdup("");
        } else if (strcmp(e->name, "feature") == 0) {
            const char *v = mp_xml_get_attr(e, "var");
            feats[f++] = v ? v : "";
        } else if (strcmp(e->name, "x") == 0 && strcmp(e->ns, MP_NS_DATA) == 0) {
            const char *ft = mp_form_form_type(st, e);
            if (!ft)
                continue; /* §5.4 3.6: forms without FORM_TYPE are ignored */
            forms[x].type = ft;
            forms[x++].x = e;
        }
    }
    qsort(ids, i, sizeof *ids, cmp_ident);
    qsort(feats, f, sizeof *feats, cmp_str);
    qsort(forms, x, sizeof *forms, cmp_form);
    struct sbuf sb = {0};
    sb_add(&sb, "");
    for (size_t k = 0; k < i; k++) {
        if (k && strcmp(ids[k], ids[k - 1]) == 0)
            bad = 1;
        sb_add(&sb, ids[k]);
        sb_add(&sb, "<");
    }
    for (size_t k = 0; k < f; k++) {
        if (k && strcmp(feats[k], feats[k - 1]) == 0)
            bad = 1;
        sb_add(&sb, feats[k]);
        sb_add(&sb, "<");
    }
    for (size_t k = 0; k < x; k++) {
        if (k && strcmp(forms[k].type, forms[k - 1].type) == 0)
            bad = 1;
        caps_form_string(st, &forms[k], &sb);
    }
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)sb.s, sb.n, md);
    unsigned char b64[64];
    EVP_EncodeBlock(b64, md, SHA_DIGEST_LENGTH);
    snprintf(out, outlen, "%s", (const char *)b64);
    for (size_t k = 0; k < i; k++)
        free(ids[k]);
    free(ids);
    free(feats);
    free(forms);
    free(sb.s);
    return bad ? -1 : 0;
}

/* ---- sending last items to a resource ---- */

struct last_op {
    char *full;         /* the resource */
    char *bare;         /* its account */
    struct strv notify; /* node names it wants */
};

static void last_op_free(struct last_op *op)
{
    free(op->full);
    free(op->bare);
    strv_free(&op->notify);
    free(op);
}

static mp_stanza *event_new(const char *from, mp_xml **event)
{
    mp_stanza *m = mp_stanza_new_client("message", "headline", from, NULL);
    *event = mp_xml_add_child(m, mp_stanza_root(m), "event", NS_EVENT);
    return m;
}

/* Adds <item id=>payload</item> to parent. */
static void add_item(mp_stanza *st, mp_xml *parent, const struct item *it, int with_payload)
{
    mp_xml *x = mp_xml_add_child(st, parent, "item", NULL);
    mp_xml_set_attr(st, x, "id", it->id);
    if (!with_payload)
        return;
    mp_stanza *p = mp_stanza_parse(it->payload, strlen(it->payload));
    if (p) {
        mp_xml_add_copy(st, x, mp_stanza_root(p));
        mp_stanza_unref(p);
    }
}

/* Whether bare may read a node of o; sub_from: bare receives o's
 * presence. Members (affiliation member) read whatever the model. */
static int may_read(const struct owner *o, const struct node *nd, const char *bare, int sub_from)
{
    if (strcmp(bare, o->bare) == 0 || member_find(nd, bare) >= 0)
        return 1;
    switch (nd->access) {
    case ACC_OPEN:
        return 1;
    case ACC_PRESENCE:
        return sub_from;
    default:
        return 0;
    }
}

/* The last item of every node of o that op->full wants. The contact
 * receives o's presence (its roster says so), which is the presence
 * model's rule. */
static void op_last(struct owner *o, void *arg, struct outbox *out)
{
    struct last_op *op = arg;
    for (size_t i = 0; i < o->n; i++) {
        struct node *nd = o->nodes[i];
        if (!nd->n || nd->never || !strv_has(&op->notify, nd->name) ||
            !may_read(o, nd, op->bare, 1))
            continue;
        mp_xml *ev;
        mp_stanza *m = event_new(o->bare, &ev);
        mp_xml_set_attr(m, mp_stanza_root(m), "to", op->full);
        mp_xml *items = mp_xml_add_child(m, ev, "items", NULL);
        mp_xml_set_attr(m, items, "node", nd->name);
        add_item(m, items, &nd->items[nd->n - 1], 1);
        if (nd->items[nd->n - 1].ts) /* XEP-0163 4.3.4: when it was published */
            mp_delay_add(m, mp_stanza_root(m), NULL, nd->items[nd->n - 1].ts, NULL);
        out_add(out, m);
        mp_counter_add(c_notified, 1);
    }
    last_op_free(op);
}

static struct last_op *last_op_new(const char *full, const char *bare, const struct strv *notify)
{
    struct last_op *op = mp_calloc(1, sizeof *op);
    op->full = mp_strdup(full);
    op->bare = mp_strdup(bare);
    for (size_t i = 0; i < notify->n; i++)
        strv_add(&op->notify, notify->v[i]);
    return op;
}

struct initial {
    char *full;
    mp_jid jid;
    struct strv notify;
};

static void initial_free(struct initial *in)
{
    free(in->full);
    mp_jid_free(&in->jid);
    strv_free(&in->notify);
    free(in);
}

/* The contacts whose presence the resource receives are the owners of
 * the nodes it may get: its own account and every 'to' subscription. */
static void initial_contacts(void *ud, int rc, const struct mp_roster_contact *c, size_t n)
{
    struct initial *in = ud;
    for (size_t i = 0; rc == MAGPIE_OK && i < n; i++) {
        if (!(c[i].subscription & MP_SUB_TO))
            continue;
        mp_jid j;
        if (mp_jid_parse(&j, c[i].jid) != MAGPIE_OK)
            continue;
        if (j.local && mp_host_is_local(j.domain))
            with_owner(j.domain, j.local, op_last,
                       last_op_new(in->full, in->jid.bare, &in->notify));
        mp_jid_free(&j);
    }
    initial_free(in);
}

/* Sends full the last items it is interested in (caps known). */
static void send_initial(const char *full, const struct strv *notify)
{
    if (!notify->n)
        return;
    struct initial *in = mp_calloc(1, sizeof *in);
    if (mp_jid_parse(&in->jid, full) != MAGPIE_OK || !in->jid.local) {
        mp_jid_free(&in->jid);
        free(in);
        return;
    }
    in->full = mp_strdup(full);
    for (size_t i = 0; i < notify->n; i++)
        strv_add(&in->notify, notify->v[i]);
    with_owner(in->jid.domain, in->jid.local, op_last, last_op_new(full, in->jid.bare, notify));
    if (mp_roster_contacts(in->jid.domain, in->jid.local, initial_contacts, in) != MAGPIE_OK)
        initial_free(in);
}

/* Collects, under caps_lock, the resources with ver whose last items are
 * due, marking them sent. */
struct due {
    char **full;
    size_t n;
    struct strv notify;
};

static void due_collect(struct caps *c, struct due *d)
{
    for (size_t i = 0; i < c->n; i++)
        strv_add(&d->notify, c->notify[i]);
    for (size_t b = 0; b < CBUCKETS; b++)
        for (struct res *r = res_tab[b]; r; r = r->next)
            if (!r->initial && !r->negative && r->ver && strcmp(r->ver, c->ver) == 0) {
                r->initial = 1;
                d->full = mp_realloc(d->full, (d->n + 1) * sizeof *d->full);
                d->full[d->n++] = mp_strdup(r->full);
            }
}

static void due_run(struct due *d)
{
    for (size_t i = 0; i < d->n; i++) {
        send_initial(d->full[i], &d->notify);
        free(d->full[i]);
    }
    free(d->full);
    strv_free(&d->notify);
}

/* The answer to one of our disco#info queries. */
static int iq_result_in(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->id || strncmp(env->id, CAPS_ID_PREFIX, strlen(CAPS_ID_PREFIX)) != 0 ||
        env->to.local || !env->from.full)
        return HOOK_PASS;
    struct due d = {0};
    pthread_mutex_lock(&caps_lock);
    struct caps *c = NULL;
    for (size_t b = 0; b < CBUCKETS && !c; b++)
        for (struct caps *x = caps_tab[b]; x && !c; x = x->next)
            if (!x->known && strcmp(x->qid, env->id) == 0 && x->asked &&
                strcmp(x->asked, env->from.full) == 0)
                c = x;
    if (!c) {
        pthread_mutex_unlock(&caps_lock);
        return HOOK_HANDLED;
    }
    mp_xml *q = env->type == MP_TYPE_RESULT
                    ? mp_xml_find(mp_stanza_root(st), "query", NS_DISCO_INFO)
                    : NULL;
    char h[64];
    if (!q || caps_hash(st, q, h, sizeof h) != 0 || strcmp(h, c->ver) != 0) {
        mp_log(MP_LOG_INFO, "pep: caps %s of %s not verified; ignored", c->ver, env->from.full);
        caps_unlink(c); /* asked again at the next presence with it */
        caps_free(c);
        pthread_mutex_unlock(&caps_lock);
        return HOOK_HANDLED;
    }
    for (mp_xml *f = mp_xml_find(q, "feature", NULL); f; f = mp_xml_find_next(f, "feature", NULL)) {
        const char *var = mp_xml_get_attr(f, "var");
        size_t l = var ? strlen(var) : 0;
        if (l > 7 && strcmp(var + l - 7, "+notify") == 0) {
            c->notify = mp_realloc(c->notify, (c->n + 1) * sizeof *c->notify);
            c->notify[c->n] = mp_calloc(1, l - 6);
            memcpy(c->notify[c->n], var, l - 7);
            c->n++;
        }
    }
    c->known = 1;
    c->used = ++caps_clock;
    free(c->asked);
    c->asked = NULL;
    due_collect(c, &d);
    pthread_mutex_unlock(&caps_lock);
    due_run(&d);
    return HOOK_HANDLED;
}

static void presence_changed(mp_session *s, mp_stanza *pres, int available, void *ud)
{
    (void)ud;
    const mp_jid *me = mp_session_jid(s);
    if (!me || !me->full)
        return;
    if (!available) {
        res_drop(me->full);
        return;
    }
    mp_xml *c = mp_xml_find(mp_stanza_root(pres), "c", NS_CAPS);
    const char *hash = c ? mp_xml_get_attr(c, "hash") : NULL;
    const char *ver = c ? mp_xml_get_attr(c, "ver") : NULL;
    const char *node = c ? mp_xml_get_attr(c, "node") : NULL;
    if (!hash || strcmp(hash, "sha-1") != 0 || !ver || !node || !ver[0])
        ver = NULL; /* legacy or unsupported caps: no notifications */
    mp_xml *prio = mp_xml_find(mp_stanza_root(pres), "priority", NULL);
    int negative = prio && atoi(mp_xml_text(pres, prio)) < 0;
    mp_stanza *query = NULL;
    struct due d = {0};
    pthread_mutex_lock(&caps_lock);
    struct res **pp;
    struct res *r = res_find(me->full, &pp);
    if (!r) {
        r = mp_calloc(1, sizeof *r);
        r->full = mp_strdup(me->full);
        *pp = r;
    }
    if (!(r->ver && ver && strcmp(r->ver, ver) == 0)) {
        free(r->ver);
        r->ver = mp_strdup(ver);
        r->initial = 0;
    }
    r->negative = negative;
    if (ver && !r->initial) {
        struct caps *e = caps_find(ver);
        if (e && !e->known && mp_now_us() - e->asked_at > CAPS_RETRY_US) {
            caps_unlink(e); /* never answered: ask this client */
            caps_free(e);
            e = NULL;
        }
        if (!e) {
            caps_evict();
            e = mp_calloc(1, sizeof *e);
            e->ver = mp_strdup(ver);
            e->used = ++caps_clock;
            memcpy(e->qid, CAPS_ID_PREFIX, strlen(CAPS_ID_PREFIX));
            mp_random_id(e->qid + strlen(CAPS_ID_PREFIX), sizeof e->qid - strlen(CAPS_ID_PREFIX));
            e->asked = mp_strdup(me->full);
            e->asked_at = mp_now_us();
            unsigned b = hash_str(ver, CBUCKETS);
            e->next = caps_tab[b];
            caps_tab[b] = e;
            n_caps++;
            query = mp_stanza_new("iq", MP_NS_CLIENT);
            mp_xml *root = mp_stanza_root(query);
            mp_xml_set_attr(query, root, "type", "get");
            mp_xml_set_attr(query, root, "id", e->qid);
            mp_xml_set_attr(query, root, "to", me->full);
            mp_xml_set_attr(query, root, "from", me->domain);
            mp_xml *q = mp_xml_add_child(query, root, "query", NS_DISCO_INFO);
            size_t nl = strlen(node) + strlen(ver) + 2;
            char *nv = mp_calloc(1, nl);
            snprintf(nv, nl, "%s#%s", node, ver);
            mp_xml_set_attr(query, q, "node", nv);
            free(nv);
        } else if (e->known) {
            due_collect(e, &d);
        }
    }
    pthread_mutex_unlock(&caps_lock);
    if (query) {
        mp_counter_add(c_caps_queries, 1);
        mp_route(query);
    }
    due_run(&d);
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    const mp_jid *me = mp_session_jid(s);
    if (me && me->full)
        res_drop(me->full);
}

/* ---- notifications of a change ---- */

struct fanout {
    char *owner_bare;
    char *node;
    int access;
    mp_stanza *event;    /* from = owner, no to */
    struct strv members; /* whitelist: who besides the owner is told */
};

static void fanout_free(struct fanout *f)
{
    strv_free(&f->members);
    free(f->owner_bare);
    free(f->node);
    mp_stanza_unref(f->event);
    free(f);
}

struct fan_ctx {
    struct fanout *f;
};

/* XEP-0163 §4.3.2: one notification per available resource with a
 * non-negative priority whose caps ask for the node, the owner's own
 * resources included (§4 item 3: subject to notification filtering). */
static void fan_one(void *ud, const char *full, int priority)
{
    struct fan_ctx *x = ud;
    if (priority < 0 || !wants(full, x->f->node))
        return;
    mp_stanza *m = mp_stanza_copy_envelope(x->f->event);
    mp_xml_set_attr(m, mp_stanza_root(m), "to", full);
    mp_route(m);
    mp_counter_add(c_notified, 1);
}

static void fanout_contacts(void *ud, int rc, const struct mp_roster_contact *c, size_t n)
{
    struct fanout *f = ud;
    for (size_t i = 0; rc == MAGPIE_OK && i < n; i++) {
        if (!(c[i].subscription & MP_SUB_FROM) || strcmp(c[i].jid, f->owner_bare) == 0)
            continue;
        struct fan_ctx x = {f};
        mp_sessions_foreach(c[i].jid, fan_one, &x);
    }
    fanout_free(f);
}

/* Sends f's event to the interested resources of the owner and of
 * contacts with a 'from' subscription (whitelist: of the node's members).
 * Takes f.
 * Call without the lock. */
static void fanout_run(struct fanout *f, const char *host, const char *local)
{
    mp_stanza_mark_fanout(f->event);
    struct fan_ctx x = {f};
    mp_sessions_foreach(f->owner_bare, fan_one, &x);
    if (f->access == ACC_WHITELIST) {
        for (size_t i = 0; i < f->members.n; i++)
            mp_sessions_foreach(f->members.v[i], fan_one, &x);
        fanout_free(f);
    } else if (mp_roster_contacts(host, local, fanout_contacts, f) != MAGPIE_OK) {
        fanout_free(f);
    }
}

static struct fanout *fanout_new(const struct owner *o, const struct node *nd, mp_xml **event)
{
    struct fanout *f = mp_calloc(1, sizeof *f);
    f->owner_bare = mp_strdup(o->bare);
    f->node = mp_strdup(nd->name);
    f->access = nd->access;
    for (size_t i = 0; nd->access == ACC_WHITELIST && i < nd->n_members; i++)
        strv_add(&f->members, nd->members[i]);
    f->event = event_new(o->bare, event);
    return f;
}

/* ---- requests ---- */

static void reply_error(mp_stanza *iq, const char *type, const char *cond, const char *app)
{
    mp_stanza *r = mp_stanza_copy(iq);
    mp_stanza_make_error(r, type, cond, NULL);
    if (app) {
        mp_xml *err = mp_xml_find(mp_stanza_root(r), "error", NULL);
        if (err)
            mp_xml_add_child(r, err, app, NS_ERRORS);
    }
    mp_iq_reply(r);
}

/* One request being worked on. */
struct req {
    mp_stanza *iq;   /* referenced */
    mp_xml *op;      /* the <publish/>, <items/>, ... element in iq */
    mp_xml *options; /* publish-options form, or NULL */
    int sub_from;    /* the requester receives the owner's presence */
    /* for after the lock: */
    struct fanout *fan;
    int write_pending;
};

static void req_free(struct req *r)
{
    mp_stanza_unref(r->iq);
    free(r);
}

static int is_owner(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    return env->from.local && (!env->to.domain || strcmp(env->to.bare, env->from.bare) == 0);
}

/* The owner's account of iq: 'to', or the sender when there is none. */
static const mp_jid *target(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    return env->to.domain ? &env->to : &env->from;
}

/* Sends the answer once the node's write is committed. */
static void answered(void *ud, int rc)
{
    mp_stanza *reply = ud;
    if (rc != MAGPIE_OK)
        mp_log(MP_LOG_ERROR, "pep: a node could not be stored; the change may not last");
    mp_iq_reply(reply);
}

/* Reads the node configuration fields of form into cfg's access,
 * persist, max_items and never (left as they are when absent; other
 * fields are ignored). Returns NULL, or the error condition. */
static const char *read_config(mp_stanza *st, const mp_xml *form, struct node *cfg)
{
    const char *a = mp_form_value(st, form, "pubsub#access_model");
    if (a) {
        int k;
        for (k = 0; k < 3 && strcmp(a, access_names[k]) != 0; k++)
            ;
        if (k == 3)
            return "not-acceptable";
        cfg->access = k;
    }
    int p = mp_form_bool(st, form, "pubsub#persist_items", cfg->persist);
    if (p < 0)
        return "not-acceptable";
    cfg->persist = p;
    const char *m = mp_form_value(st, form, "pubsub#max_items");
    if (m) {
        if (strcmp(m, "max") == 0) {
            cfg->max_items = 0;
        } else {
            char *end;
            long v = strtol(m, &end, 10);
            if (*end || v < 1 || v > mp_module_opt_int(self, "max_items"))
                return "not-acceptable";
            cfg->max_items = (int)v;
        }
    }
    const char *sl = mp_form_value(st, form, "pubsub#send_last_published_item");
    if (sl) {
        if (strcmp(sl, "never") == 0)
            cfg->never = 1;
        else if (strcmp(sl, "on_sub") == 0 || strcmp(sl, "on_sub_and_presence") == 0)
            cfg->never = 0;
        else
            return "not-acceptable";
    }
    return NULL;
}

static void config_apply(struct node *nd, const struct node *cfg)
{
    nd->access = cfg->access;
    nd->persist = cfg->persist;
    nd->max_items = cfg->max_items;
    nd->never = cfg->never;
    size_t lim = (size_t)node_limit(nd);
    while (nd->n > lim)
        item_remove(nd, &nd->items[0]);
}

/* XEP-0060 §7.1.5: 0 when every precondition of form holds for nd. */
static int preconditions_hold(mp_stanza *st, const mp_xml *form, const struct node *nd)
{
    const char *a = mp_form_value(st, form, "pubsub#access_model");
    if (a && strcmp(a, access_names[nd->access]) != 0)
        return -1;
    int p = mp_form_bool(st, form, "pubsub#persist_items", nd->persist);
    if (p != nd->persist)
        return -1;
    const char *sl = mp_form_value(st, form, "pubsub#send_last_published_item");
    if (sl && (strcmp(sl, "never") == 0) != nd->never)
        return -1;
    const char *m = mp_form_value(st, form, "pubsub#max_items");
    if (m) {
        if (strcmp(m, "max") == 0)
            return nd->max_items == 0 ? 0 : -1;
        char *end;
        long v = strtol(m, &end, 10);
        if (*end || v != nd->max_items)
            return -1;
    }
    return 0;
}

/* Payload bytes o keeps, all nodes together (the max_bytes quota). */
static size_t owner_bytes(const struct owner *o)
{
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++)
        for (size_t k = 0; k < o->nodes[i]->n; k++)
            n += strlen(o->nodes[i]->items[k].payload);
    return n;
}

static void op_publish(struct owner *o, void *arg, struct outbox *out)
{
    struct req *r = arg;
    mp_stanza *iq = r->iq;
    const char *name = mp_xml_get_attr(r->op, "node");
    mp_xml *it = mp_xml_find(r->op, "item", NULL);
    mp_xml *payload = it ? mp_xml_first_element(it) : NULL;
    struct node *nd = node_find(o, name);
    if (nd && r->options && preconditions_hold(iq, r->options, nd) != 0) {
        reply_error(iq, "cancel", "conflict", "precondition-not-met");
        return;
    }
    const char *id = mp_xml_get_attr(it, "id");
    char *data = mp_xml_to_string(payload, NULL);
    /* the item this one replaces, or the oldest one it pushes out */
    struct item *old = nd && id ? item_find(nd, id) : NULL;
    if (!old && nd && nd->n && nd->n >= (size_t)node_limit(nd))
        old = &nd->items[0];
    if (owner_bytes(o) - (old ? strlen(old->payload) : 0) + strlen(data) >
        (size_t)mp_module_opt_int(self, "max_bytes")) {
        free(data);
        reply_error(iq, "wait", "policy-violation", NULL);
        return;
    }
    if (!nd) {
        if (o->n >= (size_t)mp_module_opt_int(self, "max_nodes")) {
            free(data);
            reply_error(iq, "cancel", "policy-violation", "max-nodes-exceeded");
            return;
        }
        struct node cfg = {.access = ACC_PRESENCE,
                           .persist = 1,
                           .max_items = (int)mp_module_opt_int(self, "default_max_items")};
        const char *err = r->options ? read_config(iq, r->options, &cfg) : NULL;
        if (err) {
            free(data);
            reply_error(iq, "modify", err, NULL);
            return;
        }
        nd = node_add(o, name);
        config_apply(nd, &cfg);
    }
    char gen[20];
    if (!id || !id[0]) {
        mp_random_id(gen, sizeof gen);
        id = gen;
    }
    item_push(nd, mp_strdup(id), data, mp_now_us());
    mp_counter_add(c_published, 1);
    /* the event */
    mp_xml *ev;
    struct fanout *f = fanout_new(o, nd, &ev);
    mp_xml *items = mp_xml_add_child(f->event, ev, "items", NULL);
    mp_xml_set_attr(f->event, items, "node", nd->name);
    add_item(f->event, items, &nd->items[nd->n - 1], 1);
    r->fan = f;
    /* the answer */
    mp_stanza *res = mp_iq_result(iq);
    mp_xml *ps = mp_xml_add_child(res, mp_stanza_root(res), "pubsub", NS_PUBSUB);
    mp_xml *pub = mp_xml_add_child(res, ps, "publish", NULL);
    mp_xml_set_attr(res, pub, "node", nd->name);
    mp_xml_set_attr(res, mp_xml_add_child(res, pub, "item", NULL), "id", id);
    node_save(o, nd, res);
    (void)out;
}

/* XEP-0060 §8.1: <create node=/> with an optional <configure><x/></configure>
 * (r->options: the node_config form). */
static void op_create(struct owner *o, void *arg, struct outbox *out)
{
    struct req *r = arg;
    mp_stanza *iq = r->iq;
    const char *name = mp_xml_get_attr(r->op, "node");
    if (node_find(o, name)) {
        reply_error(iq, "cancel", "conflict", NULL);
        return;
    }
    if (o->n >= (size_t)mp_module_opt_int(self, "max_nodes")) {
        reply_error(iq, "cancel", "policy-violation", "max-nodes-exceeded");
        return;
    }
    struct node cfg = {.access = ACC_PRESENCE,
                       .persist = 1,
                       .max_items = (int)mp_module_opt_int(self, "default_max_items")};
    const char *err = r->options ? read_config(iq, r->options, &cfg) : NULL;
    if (err) {
        reply_error(iq, "modify", err, NULL);
        return;
    }
    struct node *nd = node_add(o, name);
    config_apply(nd, &cfg);
    node_save(o, nd, mp_iq_result(iq));
    (void)out;
}

static void op_retract(struct owner *o, void *arg, struct outbox *out)
{
    struct req *r = arg;
    mp_stanza *iq = r->iq;
    struct node *nd = node_find(o, mp_xml_get_attr(r->op, "node"));
    mp_xml *it = mp_xml_find(r->op, "item", NULL);
    const char *id = it ? mp_xml_get_attr(it, "id") : NULL;
    struct item *x = nd && id ? item_find(nd, id) : NULL;
    if (!x) {
        reply_error(iq, "cancel", "item-not-found", NULL);
        return;
    }
    item_remove(nd, x);
    const char *notify = mp_xml_get_attr(r->op, "notify");
    if (notify && (strcmp(notify, "true") == 0 || strcmp(notify, "1") == 0)) {
        mp_xml *ev;
        struct fanout *f = fanout_new(o, nd, &ev);
        mp_xml *items = mp_xml_add_child(f->event, ev, "items", NULL);
        mp_xml_set_attr(f->event, items, "node", nd->name);
        mp_xml_set_attr(f->event, mp_xml_add_child(f->event, items, "retract", NULL), "id", id);
        r->fan = f;
    }
    node_save(o, nd, mp_iq_result(iq));
    (void)out;
}

static void op_items(struct owner *o, void *arg, struct outbox *out)
{
    struct req *r = arg;
    mp_stanza *iq = r->iq;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    struct node *nd = node_find(o, mp_xml_get_attr(r->op, "node"));
    if (!nd) {
        reply_error(iq, "cancel", "item-not-found", NULL);
        return;
    }
    if (!may_read(o, nd, env->from.bare, r->sub_from)) {
        if (nd->access == ACC_PRESENCE)
            reply_error(iq, "auth", "not-authorized", "presence-subscription-required");
        else
            reply_error(iq, "cancel", "not-allowed", "closed-node");
        return;
    }
    mp_stanza *res = mp_iq_result(iq);
    mp_xml *ps = mp_xml_add_child(res, mp_stanza_root(res), "pubsub", NS_PUBSUB);
    mp_xml *items = mp_xml_add_child(res, ps, "items", NULL);
    mp_xml_set_attr(res, items, "node", nd->name);
    mp_xml *want = mp_xml_find(r->op, "item", NULL);
    if (want) {
        for (; want; want = mp_xml_find_next(want, "item", NULL)) {
            const char *id = mp_xml_get_attr(want, "id");
            struct item *x = id ? item_find(nd, id) : NULL;
            if (x)
                add_item(res, items, x, 1);
        }
    } else {
        const char *mi = mp_xml_get_attr(r->op, "max_items");
        size_t first = 0;
        if (mi) {
            long m = strtol(mi, NULL, 10);
            if (m >= 0 && (size_t)m < nd->n)
                first = nd->n - (size_t)m;
        }
        /* newest first, as XEP-0060 §6.5.7 suggests for max_items */
        for (size_t i = nd->n; i > first; i--)
            add_item(res, items, &nd->items[i - 1], 1);
    }
    out_add(out, res);
}

static void op_owner(struct owner *o, void *arg, struct outbox *out)
{
    struct req *r = arg;
    mp_stanza *iq = r->iq;
    const char *what = r->op->name;
    const char *name = mp_xml_get_attr(r->op, "node");
    struct node *nd = name ? node_find(o, name) : NULL;
    if (!nd) {
        reply_error(iq, "cancel", "item-not-found", NULL);
        return;
    }
    int is_set = mp_stanza_envelope(iq)->type == MP_TYPE_SET;
    if (strcmp(what, "affiliations") == 0 && !is_set) {
        mp_stanza *res = mp_iq_result(iq);
        mp_xml *ps = mp_xml_add_child(res, mp_stanza_root(res), "pubsub", NS_OWNER);
        mp_xml *af = mp_xml_add_child(res, ps, "affiliations", NULL);
        mp_xml_set_attr(res, af, "node", nd->name);
        mp_xml *e = mp_xml_add_child(res, af, "affiliation", NULL);
        mp_xml_set_attr(res, e, "jid", o->bare);
        mp_xml_set_attr(res, e, "affiliation", "owner");
        for (size_t i = 0; i < nd->n_members; i++) {
            e = mp_xml_add_child(res, af, "affiliation", NULL);
            mp_xml_set_attr(res, e, "jid", nd->members[i]);
            mp_xml_set_attr(res, e, "affiliation", "member");
        }
        out_add(out, res);
        return;
    }
    if (strcmp(what, "affiliations") == 0) {
        /* XEP-0060 8.9.2: member or none; everything checked first */
        size_t adds = 0;
        for (mp_xml *e = mp_xml_find(r->op, "affiliation", NULL); e;
             e = mp_xml_find_next(e, "affiliation", NULL)) {
            const char *jid = mp_xml_get_attr(e, "jid"), *a = mp_xml_get_attr(e, "affiliation");
            mp_jid j;
            if (!jid || !a || mp_jid_parse(&j, jid) != MAGPIE_OK) {
                reply_error(iq, "modify", "bad-request", NULL);
                return;
            }
            int ok = (strcmp(a, "member") == 0 || strcmp(a, "none") == 0) &&
                     strcmp(j.bare, o->bare) != 0;
            adds += strcmp(a, "member") == 0 && member_find(nd, j.bare) < 0;
            mp_jid_free(&j);
            if (!ok) {
                reply_error(iq, "modify", "not-acceptable", NULL);
                return;
            }
        }
        if (nd->n_members + adds > MAX_MEMBERS) {
            reply_error(iq, "modify", "policy-violation", NULL);
            return;
        }
        for (mp_xml *e = mp_xml_find(r->op, "affiliation", NULL); e;
             e = mp_xml_find_next(e, "affiliation", NULL)) {
            mp_jid j;
            if (mp_jid_parse(&j, mp_xml_get_attr(e, "jid")) != MAGPIE_OK)
                continue;
            member_set(nd, j.bare, strcmp(mp_xml_get_attr(e, "affiliation"), "member") == 0);
            mp_jid_free(&j);
        }
        node_save(o, nd, mp_iq_result(iq));
        return;
    }
    if (strcmp(what, "configure") == 0 && !is_set) {
        mp_stanza *res = mp_iq_result(iq);
        mp_xml *ps = mp_xml_add_child(res, mp_stanza_root(res), "pubsub", NS_OWNER);
        mp_xml *cf = mp_xml_add_child(res, ps, "configure", NULL);
        mp_xml_set_attr(res, cf, "node", nd->name);
        mp_xml *x = mp_form_add(res, cf, "form", NS_NODE_CONFIG, NULL);
        mp_xml *fa =
            mp_form_field_add(res, x, "pubsub#access_model", "list-single",
                              "Who may subscribe and retrieve items", access_names[nd->access]);
        for (int k = 0; k < 3; k++)
            mp_form_option_add(res, fa, NULL, access_names[k]);
        mp_form_field_add(res, x, "pubsub#persist_items", "boolean", "Persist items to storage",
                          nd->persist ? "1" : "0");
        char buf[24];
        if (nd->max_items)
            snprintf(buf, sizeof buf, "%d", nd->max_items);
        else
            snprintf(buf, sizeof buf, "max");
        mp_form_field_add(res, x, "pubsub#max_items", "text-single",
                          "Max number of items to persist", buf);
        mp_xml *fs = mp_form_field_add(res, x, "pubsub#send_last_published_item", "list-single",
                                       "When to send the last published item",
                                       nd->never ? "never" : "on_sub_and_presence");
        mp_form_option_add(res, fs, NULL, "never");
        mp_form_option_add(res, fs, NULL, "on_sub_and_presence");
        out_add(out, res);
        return;
    }
    if (strcmp(what, "configure") == 0) {
        mp_xml *form = mp_form_find(r->op);
        if (!form || strcmp(mp_form_type(form), "cancel") == 0) {
            out_add(out, mp_iq_result(iq));
            return;
        }
        struct node cfg = *nd;
        const char *err = read_config(iq, form, &cfg);
        if (err) {
            reply_error(iq, "modify", err, NULL);
            return;
        }
        config_apply(nd, &cfg);
        node_save(o, nd, mp_iq_result(iq));
        return;
    }
    mp_xml *ev;
    struct fanout *f = fanout_new(o, nd, &ev);
    if (strcmp(what, "purge") == 0) {
        mp_xml_set_attr(f->event, mp_xml_add_child(f->event, ev, "purge", NULL), "node", nd->name);
        node_clear_items(nd);
        node_save(o, nd, mp_iq_result(iq));
    } else { /* delete */
        mp_xml_set_attr(f->event, mp_xml_add_child(f->event, ev, "delete", NULL), "node", nd->name);
        mp_stanza *res = mp_iq_result(iq);
        if (mp_map_del(o->host, STORE, o->local, nd->name, answered, res) != MAGPIE_OK)
            answered(res, MAGPIE_ERR);
        node_remove(o, nd);
    }
    r->fan = f;
}

/* The items other modules registered for accounts (mod_disco's answer,
 * which this one replaces). */
struct disco_add {
    mp_stanza *st;
    mp_xml *q;
};

static void disco_add_item(void *ud, const char *jid, const char *name)
{
    struct disco_add *d = ud;
    mp_xml *x = mp_xml_add_child(d->st, d->q, "item", NULL);
    mp_xml_set_attr(d->st, x, "jid", jid);
    if (name)
        mp_xml_set_attr(d->st, x, "name", name);
}

/* Lists the nodes the requester may read, or the item ids of one node
 * (disco#items on the account). */
static void op_disco_items(struct owner *o, void *arg, struct outbox *out)
{
    struct req *r = arg;
    mp_stanza *iq = r->iq;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    const char *name = mp_xml_get_attr(r->op, "node");
    mp_stanza *res = mp_iq_result(iq);
    mp_xml *q = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_DISCO_ITEMS);
    if (name) {
        struct node *nd = node_find(o, name);
        if (!nd || !may_read(o, nd, env->from.bare, r->sub_from)) {
            mp_stanza_unref(res);
            reply_error(iq, "cancel", "item-not-found", NULL);
            return;
        }
        mp_xml_set_attr(res, q, "node", name);
        for (size_t i = 0; i < nd->n; i++) {
            mp_xml *x = mp_xml_add_child(res, q, "item", NULL);
            mp_xml_set_attr(res, x, "jid", o->bare);
            mp_xml_set_attr(res, x, "name", nd->items[i].id);
        }
    } else {
        for (size_t i = 0; i < o->n; i++) {
            if (!may_read(o, o->nodes[i], env->from.bare, r->sub_from))
                continue;
            mp_xml *x = mp_xml_add_child(res, q, "item", NULL);
            mp_xml_set_attr(res, x, "jid", o->bare);
            mp_xml_set_attr(res, x, "node", o->nodes[i]->name);
        }
        struct disco_add da = {res, q};
        mp_disco_items_foreach(MP_DISCO_ACCOUNT, disco_add_item, &da);
    }
    out_add(out, res);
}

/* disco#info on a node of the account (XEP-0060 5.3): a leaf node, with
 * its access model in a pubsub#meta-data form; item-not-found for a node
 * that does not exist or that the requester may not read. */
static void op_disco_info(struct owner *o, void *arg, struct outbox *out)
{
    struct req *r = arg;
    mp_stanza *iq = r->iq;
    const char *name = mp_xml_get_attr(r->op, "node");
    struct node *nd = node_find(o, name);
    if (!nd || !may_read(o, nd, mp_stanza_envelope(iq)->from.bare, r->sub_from)) {
        reply_error(iq, "cancel", "item-not-found", NULL);
        return;
    }
    mp_stanza *res = mp_iq_result(iq);
    mp_xml *q = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_DISCO_INFO);
    mp_xml_set_attr(res, q, "node", nd->name);
    mp_xml *id = mp_xml_add_child(res, q, "identity", NULL);
    mp_xml_set_attr(res, id, "category", "pubsub");
    mp_xml_set_attr(res, id, "type", "leaf");
    mp_xml_set_attr(res, mp_xml_add_child(res, q, "feature", NULL), "var", NS_PUBSUB);
    mp_xml *x = mp_form_add(res, q, "result", NS_PUBSUB "#meta-data", NULL);
    mp_form_field_add(res, x, "pubsub#access_model", NULL, NULL, access_names[nd->access]);
    out_add(out, res);
}

/* An operation and what follows it once the lock is released. */
struct run {
    owner_fn fn;
    struct req *r;
    char *host, *local;
};

static void run_now(owner_fn fn, struct req *r, const char *host, const char *local);

static void fan_after(void *arg)
{
    struct run *x = arg;
    fanout_run(x->r->fan, x->host, x->local);
    x->r->fan = NULL;
    req_free(x->r);
    free(x->host);
    free(x->local);
    free(x);
}

/* Like with_owner, then runs the request's fan-out (on this loop, after
 * the answer was routed) and frees it. */
static void op_run(struct owner *o, void *arg, struct outbox *out)
{
    struct run *x = arg;
    x->fn(o, x->r, out);
    if (x->r->fan && mp_loop_post(mp_loop_current(), fan_after, x) == MAGPIE_OK)
        return;
    if (x->r->fan)
        fanout_free(x->r->fan);
    req_free(x->r);
    free(x->host);
    free(x->local);
    free(x);
}

static void run_now(owner_fn fn, struct req *r, const char *host, const char *local)
{
    struct run *x = mp_calloc(1, sizeof *x);
    x->fn = fn;
    x->r = r;
    x->host = mp_strdup(host);
    x->local = mp_strdup(local);
    with_owner(host, local, op_run, x);
}

static struct req *req_new(mp_stanza *iq, mp_xml *op)
{
    struct req *r = mp_calloc(1, sizeof *r);
    r->iq = mp_stanza_ref(iq);
    r->op = op;
    return r;
}

/* For a requester other than the owner: learn first whether it receives
 * the owner's presence, then run. */
struct auth {
    owner_fn fn;
    struct req *r;
};

static void auth_done(void *ud, int rc, const struct mp_roster_contact *c, size_t n)
{
    struct auth *a = ud;
    const struct mp_envelope *env = mp_stanza_envelope(a->r->iq);
    for (size_t i = 0; rc == MAGPIE_OK && i < n; i++)
        if (strcmp(c[i].jid, env->from.bare) == 0 && (c[i].subscription & MP_SUB_FROM))
            a->r->sub_from = 1;
    const mp_jid *t = target(a->r->iq);
    run_now(a->fn, a->r, t->domain, t->local);
    free(a);
}

static void run_as_requester(owner_fn fn, struct req *r)
{
    const mp_jid *t = target(r->iq);
    if (is_owner(r->iq)) {
        run_now(fn, r, t->domain, t->local);
        return;
    }
    struct auth *a = mp_calloc(1, sizeof *a);
    a->fn = fn;
    a->r = r;
    if (mp_roster_contacts(t->domain, t->local, auth_done, a) != MAGPIE_OK)
        auth_done(a, MAGPIE_ERR, NULL, 0);
}

static void pubsub_set(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_xml *ps = mp_xml_first_element(mp_stanza_root(iq));
    mp_xml *op = ps ? mp_xml_first_element(ps) : NULL;
    if (!op || strcmp(ps->name, "pubsub") != 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    if (!is_owner(iq)) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        return;
    }
    const char *node = mp_xml_get_attr(op, "node");
    if (strcmp(op->name, "publish") == 0) {
        if (!node || !node[0]) {
            reply_error(iq, "modify", "bad-request", "nodeid-required");
            return;
        }
        mp_xml *it = mp_xml_find(op, "item", NULL);
        const char *iid = it ? mp_xml_get_attr(it, "id") : NULL;
        if (strlen(node) > MAX_NAME || (iid && strlen(iid) > MAX_NAME)) {
            reply_error(iq, "modify", "not-acceptable", NULL);
            return;
        }
        mp_xml *pl = it ? mp_xml_first_element(it) : NULL;
        if (!it || mp_xml_find_next(it, "item", NULL)) {
            reply_error(iq, "modify", "bad-request", it ? "invalid-payload" : "item-required");
            return;
        }
        if (!pl) {
            reply_error(iq, "modify", "bad-request", "payload-required");
            return;
        }
        if (mp_xml_find_next(pl, NULL, NULL)) {
            reply_error(iq, "modify", "bad-request", "invalid-payload");
            return;
        }
        char *s = mp_xml_to_string(pl, NULL);
        size_t len = strlen(s);
        free(s);
        if (len > (size_t)mp_module_opt_int(self, "max_payload")) {
            reply_error(iq, "modify", "not-acceptable", "payload-too-big");
            return;
        }
        struct req *r = req_new(iq, op);
        mp_xml *po = mp_xml_find(ps, "publish-options", NULL);
        if (po) {
            mp_xml *form = mp_form_find(po);
            const char *ft = form ? mp_form_form_type(iq, form) : NULL;
            if (form && (!ft || strcmp(ft, NS_PUBOPTS) != 0)) {
                req_free(r);
                reply_error(iq, "modify", "bad-request", "invalid-options");
                return;
            }
            r->options = form;
        }
        const mp_jid *t = target(iq);
        run_now(op_publish, r, t->domain, t->local);
    } else if (strcmp(op->name, "retract") == 0) {
        if (!node) {
            reply_error(iq, "modify", "bad-request", "nodeid-required");
            return;
        }
        const mp_jid *t = target(iq);
        run_now(op_retract, req_new(iq, op), t->domain, t->local);
    } else if (strcmp(op->name, "create") == 0) {
        if (!node || !node[0]) {
            /* instant nodes make no sense on PEP (XEP-0163 §3) */
            reply_error(iq, "modify", "not-acceptable", "nodeid-required");
            return;
        }
        if (strlen(node) > MAX_NAME) {
            reply_error(iq, "modify", "not-acceptable", NULL);
            return;
        }
        struct req *r = req_new(iq, op);
        mp_xml *cf = mp_xml_find(ps, "configure", NULL);
        mp_xml *form = cf ? mp_form_find(cf) : NULL;
        const char *ft = form ? mp_form_form_type(iq, form) : NULL;
        if (form && (!ft || strcmp(ft, NS_NODE_CONFIG) != 0)) {
            req_free(r);
            reply_error(iq, "modify", "bad-request", "invalid-options");
            return;
        }
        r->options = form;
        const mp_jid *t = target(iq);
        run_now(op_create, r, t->domain, t->local);
    } else {
        mp_iq_reply_error(iq, "cancel", "feature-not-implemented");
    }
}

static void pubsub_get(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_xml *ps = mp_xml_first_element(mp_stanza_root(iq));
    mp_xml *op = ps ? mp_xml_first_element(ps) : NULL;
    if (!op || strcmp(ps->name, "pubsub") != 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    if (strcmp(op->name, "items") != 0) {
        mp_iq_reply_error(iq, "cancel", "feature-not-implemented");
        return;
    }
    if (!mp_xml_get_attr(op, "node")) {
        reply_error(iq, "modify", "bad-request", "nodeid-required");
        return;
    }
    if (!mp_stanza_envelope(iq)->from.local) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        return;
    }
    run_as_requester(op_items, req_new(iq, op));
}

static void owner_iq(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_xml *ps = mp_xml_first_element(mp_stanza_root(iq));
    mp_xml *op = ps ? mp_xml_first_element(ps) : NULL;
    if (!op || strcmp(ps->name, "pubsub") != 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    if (!is_owner(iq)) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        return;
    }
    int is_set = mp_stanza_envelope(iq)->type == MP_TYPE_SET;
    int ok = strcmp(op->name, "configure") == 0 || strcmp(op->name, "affiliations") == 0 ||
             (is_set && (strcmp(op->name, "delete") == 0 || strcmp(op->name, "purge") == 0));
    if (!ok) {
        mp_iq_reply_error(iq, "cancel", "feature-not-implemented");
        return;
    }
    if (!mp_xml_get_attr(op, "node")) {
        reply_error(iq, "modify", "bad-request", "nodeid-required");
        return;
    }
    const mp_jid *t = target(iq);
    run_now(op_owner, req_new(iq, op), t->domain, t->local);
}

static void op_bm_get(struct owner *o, void *arg, struct outbox *out);
static void op_bm_set(struct owner *o, void *arg, struct outbox *out);
static int bookmarks_compat(mp_stanza *st);

/* disco#items to a local account's bare JID: the nodes. */
static int from_client(mp_session *s, mp_stanza *st, void *ud)
{
    (void)s;
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (bookmarks_compat(st) == MP_FILTER_STOP)
        return MP_FILTER_STOP;
    if (env->kind != MP_KIND_IQ || env->type != MP_TYPE_GET || !env->to.local || env->to.resource ||
        !mp_host_is_local(env->to.domain))
        return MP_FILTER_PASS;
    mp_xml *q = mp_xml_first_element(mp_stanza_root(st));
    if (!q || strcmp(q->name, "query") != 0)
        return MP_FILTER_PASS;
    if (strcmp(q->ns, NS_DISCO_ITEMS) == 0) {
        run_as_requester(op_disco_items, req_new(st, q));
        return MP_FILTER_STOP;
    }
    if (strcmp(q->ns, NS_DISCO_INFO) == 0 && mp_xml_get_attr(q, "node")) {
        run_as_requester(op_disco_info, req_new(st, q));
        return MP_FILTER_STOP;
    }
    return MP_FILTER_PASS;
}

/* XEP-0049 private storage of storage:bookmarks, from the account itself:
 * the bookmarks node (see above). Everything else goes to mod_private. */
static int bookmarks_compat(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind != MP_KIND_IQ || (env->type != MP_TYPE_GET && env->type != MP_TYPE_SET) ||
        !env->from.local || (env->to.domain && strcmp(env->to.full, env->from.bare) != 0))
        return MP_FILTER_PASS;
    mp_xml *q = mp_xml_first_element(mp_stanza_root(st));
    if (!q || strcmp(q->name, "query") != 0 || strcmp(q->ns, NS_PRIVATE) != 0)
        return MP_FILTER_PASS;
    mp_xml *s = mp_xml_first_element(q);
    if (!s || strcmp(s->name, "storage") != 0 || strcmp(s->ns, NS_BM_LEGACY) != 0 ||
        mp_xml_find_next(s, NULL, NULL))
        return MP_FILTER_PASS;
    run_now(env->type == MP_TYPE_GET ? op_bm_get : op_bm_set, req_new(st, s), env->from.domain,
            env->from.local);
    return MP_FILTER_STOP;
}

/* ---- XEP-0402 §5.3 compatibility: XEP-0048 bookmarks in XEP-0049
 * private storage are the PEP node urn:xmpp:bookmarks:1 seen through the
 * old format. A private storage get of storage:bookmarks is answered
 * from the node's items; a set replaces them (published and retracted,
 * with notifications). Nothing of storage:bookmarks reaches mod_private,
 * so the two cannot disagree; <url/> bookmarks, which XEP-0402 does not
 * hold, are not kept. */

static int truthy(const char *v)
{
    return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* Copies <nick/> and <password/> of src (any namespace) under dst. */
static void copy_nick_password(mp_stanza *dst_st, mp_xml *dst, mp_stanza *src_st, const mp_xml *src,
                               const char *ns)
{
    static const char *const names[] = {"nick", "password"};
    for (int k = 0; k < 2; k++) {
        mp_xml *e = mp_xml_find(src, names[k], NULL);
        if (!e)
            continue;
        const char *t = mp_xml_text(src_st, e);
        mp_xml *n = mp_xml_add_child(dst_st, dst, names[k], ns);
        mp_xml_add_text(dst_st, n, t, strlen(t));
    }
}

static void op_bm_get(struct owner *o, void *arg, struct outbox *out)
{
    struct req *r = arg;
    mp_stanza *res = mp_iq_result(r->iq);
    mp_xml *q = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_PRIVATE);
    mp_xml *storage = mp_xml_add_child(res, q, "storage", NS_BM_LEGACY);
    struct node *nd = node_find(o, NS_BOOKMARKS);
    for (size_t i = 0; nd && i < nd->n; i++) {
        mp_stanza *p = mp_stanza_parse(nd->items[i].payload, strlen(nd->items[i].payload));
        if (!p)
            continue;
        mp_xml *src = mp_stanza_root(p);
        if (strcmp(src->name, "conference") == 0 && strcmp(src->ns, NS_BOOKMARKS) == 0) {
            mp_xml *c = mp_xml_add_child(res, storage, "conference", NULL);
            mp_xml_set_attr(res, c, "jid", nd->items[i].id);
            const char *name = mp_xml_get_attr(src, "name");
            if (name)
                mp_xml_set_attr(res, c, "name", name);
            mp_xml_set_attr(res, c, "autojoin",
                            truthy(mp_xml_get_attr(src, "autojoin")) ? "true" : "false");
            copy_nick_password(res, c, p, src, NULL);
        }
        mp_stanza_unref(p);
    }
    out_add(out, res);
}

static void op_bm_set(struct owner *o, void *arg, struct outbox *out)
{
    (void)out;
    struct req *r = arg;
    mp_stanza *iq = r->iq;
    struct node *nd = node_find(o, NS_BOOKMARKS);
    if (!nd) {
        if (o->n >= (size_t)mp_module_opt_int(self, "max_nodes")) {
            reply_error(iq, "cancel", "policy-violation", "max-nodes-exceeded");
            return;
        }
        nd = node_add(o, NS_BOOKMARKS);
        nd->access = ACC_WHITELIST;
        nd->max_items = 0;
        nd->never = 1; /* XEP-0402 §3 node configuration */
    }
    mp_xml *ev;
    struct fanout *f = fanout_new(o, nd, &ev);
    mp_xml *evitems = mp_xml_add_child(f->event, ev, "items", NULL);
    mp_xml_set_attr(f->event, evitems, "node", nd->name);
    /* retract what the new list no longer has */
    for (size_t i = nd->n; i > 0; i--) {
        const char *id = nd->items[i - 1].id;
        int kept = 0;
        for (mp_xml *c = mp_xml_find(r->op, "conference", NULL); c && !kept;
             c = mp_xml_find_next(c, "conference", NULL)) {
            const char *jid = mp_xml_get_attr(c, "jid");
            kept = jid && strcmp(jid, id) == 0;
        }
        if (!kept) {
            mp_xml_set_attr(f->event, mp_xml_add_child(f->event, evitems, "retract", NULL), "id",
                            id);
            item_remove(nd, &nd->items[i - 1]);
        }
    }
    size_t lim = (size_t)node_limit(nd);
    size_t count = 0;
    for (mp_xml *c = mp_xml_find(r->op, "conference", NULL); c && count < lim;
         c = mp_xml_find_next(c, "conference", NULL)) {
        const char *jid = mp_xml_get_attr(c, "jid");
        mp_jid j;
        if (!jid || mp_jid_parse(&j, jid) != MAGPIE_OK)
            continue;
        mp_stanza *p = mp_stanza_new("conference", NS_BOOKMARKS);
        mp_xml *root = mp_stanza_root(p);
        const char *name = mp_xml_get_attr(c, "name");
        if (name)
            mp_xml_set_attr(p, root, "name", name);
        mp_xml_set_attr(p, root, "autojoin",
                        truthy(mp_xml_get_attr(c, "autojoin")) ? "true" : "false");
        copy_nick_password(p, root, iq, c, NS_BOOKMARKS);
        item_push(nd, mp_strdup(j.bare), mp_xml_to_string(root, NULL), mp_now_us());
        add_item(f->event, evitems, &nd->items[nd->n - 1], 1);
        mp_stanza_unref(p);
        mp_jid_free(&j);
        count++;
    }
    r->fan = f;
    node_save(o, nd, mp_iq_result(iq));
}

/* ---- account deletion ---- */

/* Any thread (magpiectl's deletions arrive on the main one): the nodes
 * go from the store and from memory; a load under way is discarded. */
static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    mp_map_del(domain, STORE, user, NULL, NULL, NULL);
    size_t bl = strlen(user) + strlen(domain) + 2;
    char *bare = mp_calloc(1, bl);
    snprintf(bare, bl, "%s@%s", user, domain);
    pthread_mutex_lock(&lock);
    struct owner *o = owners[hash_str(bare, NBUCKETS)];
    while (o && strcmp(o->bare, bare) != 0)
        o = o->next;
    if (o) {
        for (size_t i = 0; i < o->n; i++)
            node_free(o->nodes[i]);
        o->n = 0;
        if (!o->loaded)
            o->forget = 1;
        else if (!o->wq)
            owner_drop(o);
    }
    pthread_mutex_unlock(&lock);
    free(bare);
}

static const struct mp_notify notify = {
    .presence_changed = presence_changed,
    .session_ended = session_ended,
    .account_deleted = account_deleted,
};

static const struct mp_route_hooks route_hooks = {
    .iq_result = iq_result_in,
};

static const char *const features[] = {
    NS_PUBSUB,
    NS_PUBSUB "#publish",
    NS_PUBSUB "#auto-create",
    NS_PUBSUB "#retrieve-items",
    NS_PUBSUB "#retract-items",
    NS_PUBSUB "#delete-nodes",
    NS_PUBSUB "#purge-nodes",
    NS_PUBSUB "#persistent-items",
    NS_PUBSUB "#last-published",
    NS_PUBSUB "#item-ids",
    NS_PUBSUB "#filtered-notifications",
    NS_PUBSUB "#presence-notifications",
    NS_PUBSUB "#access-presence",
    NS_PUBSUB "#access-open",
    NS_PUBSUB "#access-whitelist",
    NS_PUBSUB "#config-node",
    NS_PUBSUB "#create-nodes",
    NS_PUBSUB "#create-and-configure",
    NS_PUBSUB "#modify-affiliations",
    NS_PUBSUB "#retrieve-affiliations",
    NS_PUBOPTS,
    NS_BOOKMARKS "#compat",
    NULL,
};

static int load(mp_module *m)
{
    self = m;
    c_published = mp_counter_new(m, "published", "Items published");
    c_notified = mp_counter_new(m, "notifications", "Event notifications sent");
    c_caps_queries = mp_counter_new(m, "caps_queries", "disco#info queries for unknown caps");
    mp_disco_identity_add(m, MP_DISCO_ACCOUNT, "pubsub", "pep", NULL);
    for (size_t i = 0; features[i]; i++)
        mp_disco_feature_add(m, MP_DISCO_ACCOUNT, features[i]);
    mp_notify_add(m, &notify, NULL);
    mp_route_hooks_add(m, &route_hooks, 10, NULL);
    mp_filter_add(m, MP_FILTER_IN, 40, from_client, NULL);
    if (mp_iq_register(m, MP_IQ_SET, NS_PUBSUB, MP_IQ_ACCOUNT, pubsub_set, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_GET, NS_PUBSUB, MP_IQ_ACCOUNT, pubsub_get, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_SET, NS_OWNER, MP_IQ_ACCOUNT, owner_iq, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_GET, NS_OWNER, MP_IQ_ACCOUNT, owner_iq, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    pthread_mutex_lock(&lock);
    for (size_t b = 0; b < NBUCKETS; b++)
        while (owners[b]) {
            struct owner *o = owners[b];
            owners[b] = o->next;
            while (o->wq) {
                struct waiter *w = o->wq;
                o->wq = w->next;
                free(w); /* the workers are gone; their requests leak with the process */
            }
            owner_free(o);
        }
    pthread_mutex_unlock(&lock);
    pthread_mutex_lock(&caps_lock);
    for (size_t b = 0; b < CBUCKETS; b++) {
        while (caps_tab[b]) {
            struct caps *c = caps_tab[b];
            caps_tab[b] = c->next;
            caps_free(c);
        }
        while (res_tab[b]) {
            struct res *r = res_tab[b];
            res_tab[b] = r->next;
            free(r->full);
            free(r->ver);
            free(r);
        }
    }
    n_caps = 0;
    pthread_mutex_unlock(&caps_lock);
}

MP_MODULE_DECLARE("pep", "XEP-0163 Personal Eventing Protocol", options, load, unload, NULL);
