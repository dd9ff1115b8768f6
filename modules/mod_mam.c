/* mod_mam - XEP-0313 Message Archive Management for user archives, with
 * XEP-0359 stanza ids.
 *
 * Storage: the archive store "mam" of each host, key = username, 'with'
 * column = the other party's bare JID. Each item is the message as it was
 * routed plus one private child, removed before anything is sent:
 *
 *   <archived xmlns='urn:magpie:mam:0' sid='stanza id' dir='in|out'/>
 *
 * The stanza id is "<timestamp in hex>-<random>": the item's archive
 * timestamp (unix microseconds, unique and increasing across the server:
 * next_ts) is in it, so a client's id is turned into an archive id by one
 * exact-time lookup (indexed), and the id can be put into the delivered
 * message before the write completes. Preferences live in the keyval
 * store "mam_prefs" (key = username, the <prefs/> element as XML).
 *
 * What is archived (XEP-0313 §5.1.1, common practice): messages of type
 * chat or normal with a <body/> (or an OMEMO payload, or a XEP-0334
 * <store/> hint); never errors, groupchat, headlines, carbons, MAM
 * results, server-generated messages from the user's own bare JID, or
 * messages with <no-store/> / <no-permanent-store/>.
 *
 *   Outgoing: an inbound filter on the sender's session. It first strips
 *     any XEP-0359 <stanza-id/> whose 'by' is one of our hosts or
 *     accounts (the client may not forge them), then appends the message
 *     to the sender's archive. "Acknowledged means durable": each archive
 *     write of the message (the sender's here, the recipient's in the
 *     routing hook) defers the message's XEP-0198 acknowledgement
 *     (mp_stanza_defer_ack) until it has committed.
 *   Incoming: the message_account routing hook, which sees every message
 *     to a local account once, before delivery and before offline storage
 *     (so a message to an offline user is archived and stored offline,
 *     both with the same stanza id). It adds <stanza-id by='user@host'/>
 *     and appends. When the answer needs storage (the recipient's
 *     preferences are not cached yet, or the 'roster' default must ask
 *     mod_roster), the message is taken, queued behind the user's other
 *     waiting messages (so order is kept), decided, and routed again; the
 *     hook recognises it (thread-local `reinject`) and lets it pass. A
 *     message that already carries a stanza id by the recipient (offline
 *     delivery, a stream-management resend) is not archived again.
 *
 * Preferences are cached per user (loaded at session start, while the
 * session's input is held). Retention: items older than retention_days
 * are never returned and are deleted when their owner logs in and every
 * hour while online. The account_deleted notification removes the archive
 * and the preferences. */
#include <magpie/magpie.h>
#include <magpie/mam.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE       "mam"
#define PREFS_STORE "mam_prefs"
#define NS_MAM      "urn:xmpp:mam:2"
#define NS_MAM_EXT  "urn:xmpp:mam:2#extended"
#define NS_SID      "urn:xmpp:sid:0"
#define NS_PRIV     "urn:magpie:mam:0"
#define NS_HINTS    "urn:xmpp:hints"
#define NS_CARBONS  "urn:xmpp:carbons:2"
#define NS_OMEMO    "eu.siacs.conversations.axolotl"

static const struct mp_option options[] = {
    {"default_policy", MP_OPT_STRING, "always",
     "Archive policy of users who set none: always, never or roster (contacts only)", 0, 0},
    {"max_page", MP_OPT_INT, "250",
     "Most messages one query page returns (also the page size when the client names none)", 1,
     10000},
    {"retention_days", MP_OPT_INT, "0",
     "Days a message stays in the archive (0: kept until the user deletes the account)", 0,
     36500},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;
static mp_counter *c_archived, *c_queries;

/* ---- stanza ids ---- */

static pthread_mutex_t ts_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t last_ts;

/* A timestamp (unix microseconds) no other item of this server has. */
static int64_t next_ts(void)
{
    int64_t now = mp_now_us();
    pthread_mutex_lock(&ts_lock);
    if (now <= last_ts)
        now = last_ts + 1;
    last_ts = now;
    pthread_mutex_unlock(&ts_lock);
    return now;
}

#define SID_MAX 40
static void sid_make(int64_t ts, char sid[SID_MAX])
{
    char rnd[17];
    mp_random_id(rnd, sizeof rnd);
    rnd[8] = 0;
    snprintf(sid, SID_MAX, "%llx-%s", (unsigned long long)ts, rnd);
}

/* The timestamp in a stanza id, or -1 if it is not one of ours. */
static int64_t sid_ts(const char *sid)
{
    char *end;
    unsigned long long v = strtoull(sid, &end, 16);
    if (end == sid || *end != '-' || strlen(end + 1) != 8 || v == 0 || v > INT64_MAX)
        return -1;
    return (int64_t)v;
}

/* ---- preferences ---- */

enum policy { POL_ALWAYS = 0, POL_NEVER, POL_ROSTER };
enum verdict { V_NO = 0, V_YES, V_ASK_ROSTER };

static const char *policy_name(enum policy p)
{
    return p == POL_NEVER ? "never" : p == POL_ROSTER ? "roster" : "always";
}

static int policy_parse(const char *s, enum policy *p)
{
    if (!s)
        return -1;
    if (strcmp(s, "always") == 0)
        *p = POL_ALWAYS;
    else if (strcmp(s, "never") == 0)
        *p = POL_NEVER;
    else if (strcmp(s, "roster") == 0)
        *p = POL_ROSTER;
    else
        return -1;
    return 0;
}

struct pending {
    mp_stanza *st; /* referenced */
    mp_ack *ack;   /* its sender's acknowledgement, deferred (or NULL) */
    int archivable;
    struct pending *next;
};

/* One user's cached preferences and the incoming messages waiting for a
 * decision. In the table behind `lock`. */
struct user {
    char *bare, *host, *local;
    int loaded;           /* prefs read (or none stored) */
    enum policy def;
    char **always, **never; /* normalised bare JIDs */
    size_t n_always, n_never;
    struct pending *head, *tail; /* waiting incoming messages, in order */
    int busy;                    /* a pump is working on head */
    struct user *next;
};

#define NBUCKETS 1024
static struct user *buckets[NBUCKETS];
static size_t n_users;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned bucket_of(const char *bare)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)bare; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % NBUCKETS;
}

static void lists_free(struct user *u)
{
    for (size_t i = 0; i < u->n_always; i++)
        free(u->always[i]);
    for (size_t i = 0; i < u->n_never; i++)
        free(u->never[i]);
    free(u->always);
    free(u->never);
    u->always = u->never = NULL;
    u->n_always = u->n_never = 0;
}

static void user_free(struct user *u)
{
    lists_free(u);
    free(u->bare);
    free(u->host);
    free(u->local);
    free(u);
}

/* Lock held. */
static struct user *user_find(const char *bare)
{
    for (struct user *u = buckets[bucket_of(bare)]; u; u = u->next)
        if (strcmp(u->bare, bare) == 0)
            return u;
    return NULL;
}

/* Lock held. A cache that grew past its bound loses its idle entries (they
 * are read again when needed). */
static void users_trim(void)
{
    if (n_users < 65536)
        return;
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct user **pp = &buckets[i]; *pp;) {
            struct user *u = *pp;
            if (!u->head && !u->busy) {
                *pp = u->next;
                user_free(u);
                n_users--;
            } else {
                pp = &u->next;
            }
        }
}

/* Lock held. */
static struct user *user_get(const char *host, const char *local, const char *bare)
{
    struct user *u = user_find(bare);
    if (u)
        return u;
    users_trim();
    u = mp_calloc(1, sizeof *u);
    u->bare = mp_strdup(bare);
    u->host = mp_strdup(host);
    u->local = mp_strdup(local);
    u->def = POL_ALWAYS;
    policy_parse(mp_module_opt_str(self, "default_policy"), &u->def);
    unsigned b = bucket_of(bare);
    u->next = buckets[b];
    buckets[b] = u;
    n_users++;
    return u;
}

/* Lock held. Drops the entry if nothing waits on it. */
static void user_forget(const char *bare)
{
    for (struct user **pp = &buckets[bucket_of(bare)]; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->bare, bare) == 0) {
            struct user *u = *pp;
            if (u->head || u->busy) {
                u->loaded = 0;
                return;
            }
            *pp = u->next;
            user_free(u);
            n_users--;
            return;
        }
}

static void list_add(char ***v, size_t *n, const char *jid)
{
    *v = mp_realloc(*v, (*n + 1) * sizeof **v);
    (*v)[(*n)++] = mp_strdup(jid);
}

/* Reads <prefs/> (in st) into u. Lock held. Returns 0, or -1 if invalid
 * (u unchanged). */
static int prefs_read(struct user *u, mp_stanza *st, const mp_xml *prefs)
{
    enum policy def;
    if (policy_parse(mp_xml_get_attr(prefs, "default"), &def) != 0)
        return -1;
    char **al = NULL, **nv = NULL;
    size_t na = 0, nn = 0;
    int bad = 0;
    for (int which = 0; which < 2; which++) {
        mp_xml *l = mp_xml_find(prefs, which ? "never" : "always", NS_MAM);
        for (mp_xml *j = l ? mp_xml_find(l, "jid", NS_MAM) : NULL; j;
             j = mp_xml_find_next(j, "jid", NS_MAM)) {
            mp_jid jid;
            if (mp_jid_parse(&jid, mp_xml_text(st, j)) != MAGPIE_OK) {
                bad = 1;
                continue;
            }
            if (which)
                list_add(&nv, &nn, jid.bare);
            else
                list_add(&al, &na, jid.bare);
            mp_jid_free(&jid);
        }
    }
    if (bad) {
        struct user tmp = {.always = al, .never = nv, .n_always = na, .n_never = nn};
        lists_free(&tmp);
        return -1;
    }
    lists_free(u);
    u->def = def;
    u->always = al;
    u->n_always = na;
    u->never = nv;
    u->n_never = nn;
    u->loaded = 1;
    return 0;
}

/* Adds u's <prefs/> to parent of st. Lock held. */
static void prefs_write(const struct user *u, mp_stanza *st, mp_xml *parent)
{
    mp_xml *p = mp_xml_add_child(st, parent, "prefs", NS_MAM);
    mp_xml_set_attr(st, p, "default", policy_name(u->def));
    mp_xml *a = mp_xml_add_child(st, p, "always", NULL);
    for (size_t i = 0; i < u->n_always; i++)
        mp_xml_add_text(st, mp_xml_add_child(st, a, "jid", NULL), u->always[i],
                        strlen(u->always[i]));
    mp_xml *n = mp_xml_add_child(st, p, "never", NULL);
    for (size_t i = 0; i < u->n_never; i++)
        mp_xml_add_text(st, mp_xml_add_child(st, n, "jid", NULL), u->never[i],
                        strlen(u->never[i]));
}

/* Lock held; u loaded. */
static enum verdict decide(const struct user *u, const char *peer_bare)
{
    for (size_t i = 0; i < u->n_never; i++)
        if (strcmp(u->never[i], peer_bare) == 0)
            return V_NO;
    for (size_t i = 0; i < u->n_always; i++)
        if (strcmp(u->always[i], peer_bare) == 0)
            return V_YES;
    if (strcmp(u->bare, peer_bare) == 0)
        return u->def == POL_NEVER ? V_NO : V_YES; /* oneself is in one's roster */
    return u->def == POL_ALWAYS ? V_YES : u->def == POL_NEVER ? V_NO : V_ASK_ROSTER;
}

/* Applies the stored prefs document (a storage answer) to the cached
 * entry of bare, if it has not been loaded meanwhile; none stored or
 * unreadable: the defaults. */
static void prefs_loaded(const char *bare, int rc, const void *data, size_t len)
{
    mp_stanza *st = rc == MAGPIE_OK ? mp_stanza_parse(data, len) : NULL;
    pthread_mutex_lock(&lock);
    struct user *u = user_find(bare);
    if (u && !u->loaded && (!st || prefs_read(u, st, mp_stanza_root(st)) != 0)) {
        if (rc == MAGPIE_OK)
            mp_log(MP_LOG_WARN, "mam: unreadable preferences of %s", bare);
        u->loaded = 1; /* the defaults */
    }
    pthread_mutex_unlock(&lock);
    if (st)
        mp_stanza_unref(st);
}

/* ---- what is archived ---- */

/* 1 if message st (envelope env) may go into an archive at all. */
static int archivable(mp_stanza *st, const struct mp_envelope *env)
{
    if (env->kind != MP_KIND_MESSAGE ||
        (env->type != MP_TYPE_NONE && env->type != MP_TYPE_NORMAL && env->type != MP_TYPE_CHAT))
        return 0;
    mp_xml *root = mp_stanza_root(st);
    if (mp_xml_find(root, "no-store", NS_HINTS) ||
        mp_xml_find(root, "no-permanent-store", NS_HINTS))
        return 0;
    if (mp_xml_find(root, "received", NS_CARBONS) || mp_xml_find(root, "sent", NS_CARBONS) ||
        mp_xml_find(root, "result", NS_MAM))
        return 0;
    return mp_xml_find(root, "body", NULL) || mp_xml_find(root, "encrypted", NS_OMEMO) ||
           mp_xml_find(root, "store", NS_HINTS);
}

/* The stored document: st with its private child; malloc'd. */
static char *item_doc(mp_stanza *st, const char *sid, const char *dir)
{
    mp_stanza *c = mp_stanza_copy(st);
    mp_xml *a = mp_xml_add_child(c, mp_stanza_root(c), "archived", NS_PRIV);
    mp_xml_set_attr(c, a, "sid", sid);
    mp_xml_set_attr(c, a, "dir", dir);
    char *s = mp_xml_to_string(mp_stanza_root(c), NULL);
    mp_stanza_unref(c);
    return s;
}

/* ---- outgoing: the sender's session ---- */

struct out_op {
    mp_ack *ack; /* the message's acknowledgement, deferred (or NULL) */
    char *doc;   /* the item, made at once: no reference to the stanza is
                    kept (a shared stanza would be copied by the router,
                    without its acknowledgement token) */
    int64_t ts;
    char *host, *user, *with;
};

static void out_op_end(struct out_op *op)
{
    mp_ack_done(op->ack);
    free(op->doc);
    free(op->host);
    free(op->user);
    free(op->with);
    free(op);
}

static void out_appended(void *ud, int rc, int64_t id)
{
    (void)id;
    struct out_op *op = ud;
    if (rc == MAGPIE_OK)
        mp_counter_add(c_archived, 1);
    else
        mp_log(MP_LOG_ERROR, "mam: cannot archive a message of %s@%s", op->user, op->host);
    out_op_end(op);
}

static void out_append(struct out_op *op)
{
    if (mp_archive_append_at(op->host, STORE, op->user, op->ts, op->with, op->doc,
                             strlen(op->doc), out_appended, op) != MAGPIE_OK)
        out_appended(op, MAGPIE_ERR, 0);
}

static void out_roster(void *ud, int rc, const char *sub)
{
    (void)sub;
    struct out_op *op = ud;
    if (rc == MAGPIE_OK)
        out_append(op);
    else
        out_op_end(op);
}

/* Removes <stanza-id/> children whose 'by' is a local host or account
 * (XEP-0359 §5: only we may say what our ids are). st is unshared. */
static void strip_claims(mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    mp_xml *next;
    for (mp_xml *e = mp_xml_find(root, "stanza-id", NS_SID); e; e = next) {
        next = mp_xml_find_next(e, "stanza-id", NS_SID);
        const char *by = mp_xml_get_attr(e, "by");
        mp_jid j;
        int ours = 1; /* unreadable: not trusted either */
        if (by && mp_jid_parse(&j, by) == MAGPIE_OK) {
            ours = mp_host_is_local(j.domain);
            mp_jid_free(&j);
        }
        if (ours)
            mp_xml_remove(st, e);
    }
}

static int from_client(mp_session *s, mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind != MP_KIND_MESSAGE)
        return MP_FILTER_PASS;
    strip_claims(st);
    const mp_jid *me = mp_session_jid(s);
    /* to oneself: archived once, as it arrives */
    if (!env->to.domain || strcmp(env->to.bare, me->bare) == 0 || !archivable(st, env))
        return MP_FILTER_PASS;
    pthread_mutex_lock(&lock);
    struct user *u = user_find(me->bare);
    enum verdict v = u && u->loaded ? decide(u, env->to.bare) : V_YES;
    pthread_mutex_unlock(&lock);
    if (v == V_NO)
        return MP_FILTER_PASS;
    struct out_op *op = mp_calloc(1, sizeof *op);
    char sid[SID_MAX];
    op->ts = next_ts();
    sid_make(op->ts, sid);
    op->doc = item_doc(st, sid, "out");
    op->host = mp_strdup(me->domain);
    op->user = mp_strdup(me->local);
    op->with = mp_strdup(env->to.bare);
    /* the client's <a/> covering it waits until this is durable */
    op->ack = mp_stanza_defer_ack(st);
    if (v == V_ASK_ROSTER) {
        if (mp_query_roster_item(me->domain, me->local, env->to.bare, out_roster, op) !=
            MAGPIE_OK)
            out_op_end(op); /* no roster: nobody is a contact */
    } else {
        out_append(op);
    }
    return MP_FILTER_PASS;
}

/* ---- incoming: the routing hook ---- */

/* The stanza being routed again by this thread after its decision. */
static __thread mp_stanza *reinject;

struct in_op {
    char *who;
    mp_ack *ack; /* the sender's acknowledgement, deferred (or NULL) */
};

static void in_appended(void *ud, int rc, int64_t id)
{
    (void)id;
    struct in_op *op = ud;
    if (rc == MAGPIE_OK)
        mp_counter_add(c_archived, 1);
    else
        mp_log(MP_LOG_ERROR, "mam: cannot archive a message to %s", op->who);
    mp_ack_done(op->ack);
    free(op->who);
    free(op);
}

/* Adds the stanza id to st (unshared) and appends it to the archive of
 * host/local; ack (taken; a deferral of st's acknowledgement, or NULL) is
 * done when the write has committed. */
static void in_archive(mp_stanza *st, const char *host, const char *local, const char *bare,
                       const char *with, mp_ack *ack)
{
    char sid[SID_MAX];
    int64_t ts = next_ts();
    sid_make(ts, sid);
    mp_xml *e = mp_xml_add_child(st, mp_stanza_root(st), "stanza-id", NS_SID);
    mp_xml_set_attr(st, e, "by", bare);
    mp_xml_set_attr(st, e, "id", sid);
    char *doc = item_doc(st, sid, "in");
    struct in_op *op = mp_calloc(1, sizeof *op);
    op->who = mp_strdup(bare);
    op->ack = ack;
    if (mp_archive_append_at(host, STORE, local, ts, with, doc, strlen(doc), in_appended, op) !=
        MAGPIE_OK)
        in_appended(op, MAGPIE_ERR, 0);
    free(doc);
}

static void pump(struct user *u);

/* Routes the head's stanza again (it passes the hook this time) and drops
 * the head. */
static void pop_route(struct user *u)
{
    pthread_mutex_lock(&lock);
    struct pending *p = u->head;
    u->head = p->next;
    if (!u->head)
        u->tail = NULL;
    pthread_mutex_unlock(&lock);
    mp_ack *ack = p->ack;
    reinject = p->st;
    mp_route(p->st);
    reinject = NULL;
    mp_ack_done(ack); /* routed again (an archive write took it: NULL) */
    free(p);
}

static void pump_roster(void *ud, int rc, const char *sub)
{
    (void)sub;
    struct user *u = ud;
    struct pending *p = u->head;
    const struct mp_envelope *env = mp_stanza_envelope(p->st);
    if (rc == MAGPIE_OK) {
        in_archive(p->st, u->host, u->local, u->bare, env->from.bare, p->ack);
        p->ack = NULL;
    }
    pop_route(u);
    pump(u);
}

static void pump_prefs(void *ud, int rc, const void *data, size_t len)
{
    struct user *u = ud;
    prefs_loaded(u->bare, rc, data, len); /* u is pinned: its queue is not empty */
    pump(u);
}

/* Clears u's queue without archiving (the account does not exist). */
static void pump_drop(struct user *u)
{
    pthread_mutex_lock(&lock);
    struct pending *p = u->head;
    u->head = u->tail = NULL;
    u->busy = 0;
    char *bare = mp_strdup(u->bare);
    user_forget(bare);
    pthread_mutex_unlock(&lock);
    free(bare);
    while (p) {
        struct pending *n = p->next;
        reinject = p->st;
        mp_route(p->st); /* the router bounces it */
        reinject = NULL;
        mp_ack_done(p->ack);
        free(p);
        p = n;
    }
}

static void pump_exists(void *ud, int rc)
{
    struct user *u = ud;
    if (rc == MAGPIE_NOTFOUND) {
        pump_drop(u);
        return;
    }
    if (rc != MAGPIE_OK ||
        mp_kv_get(u->host, PREFS_STORE, u->local, pump_prefs, u) != MAGPIE_OK)
        pump_prefs(u, MAGPIE_ERR, NULL, 0);
}

/* Works through u's waiting messages, in order, on the calling loop. */
static void pump(struct user *u)
{
    for (;;) {
        pthread_mutex_lock(&lock);
        struct pending *p = u->head;
        if (!p) {
            u->busy = 0;
            pthread_mutex_unlock(&lock);
            return;
        }
        if (!u->loaded) {
            pthread_mutex_unlock(&lock);
            if (mp_account_exists(u->host, u->local, pump_exists, u) != MAGPIE_OK)
                pump_exists(u, MAGPIE_ERR);
            return;
        }
        const struct mp_envelope *env = mp_stanza_envelope(p->st);
        enum verdict v = p->archivable ? decide(u, env->from.bare) : V_NO;
        pthread_mutex_unlock(&lock);
        if (v == V_ASK_ROSTER &&
            mp_query_roster_item(u->host, u->local, env->from.bare, pump_roster, u) == MAGPIE_OK)
            return; /* pump_roster goes on */
        if (v == V_YES) {
            in_archive(p->st, u->host, u->local, u->bare, env->from.bare, p->ack);
            p->ack = NULL;
        }
        pop_route(u);
    }
}

/* 1 if st already has a stanza id by bare (it was archived on its way). */
static int has_own_sid(const mp_xml *root, const char *bare)
{
    for (mp_xml *e = mp_xml_find(root, "stanza-id", NS_SID); e;
         e = mp_xml_find_next(e, "stanza-id", NS_SID)) {
        const char *by = mp_xml_get_attr(e, "by");
        if (by && strcmp(by, bare) == 0)
            return 1;
    }
    return 0;
}

static int decide_in(mp_stanza *st);

static int message_account(mp_stanza *st, void *ud)
{
    (void)ud;
    /* the router hands back the stanza routed, or (had someone else a
     * reference to it) an envelope copy sharing its children */
    if (reinject && (st == reinject || (mp_stanza_root(st)->children &&
                                        mp_stanza_root(st)->children ==
                                            mp_stanza_root(reinject)->children))) {
        reinject = NULL;
        return HOOK_PASS;
    }
    return decide_in(st);
}

/* The routing hook's work on st. */
static int decide_in(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->to.local || !env->from.domain)
        return HOOK_PASS;
    int ok = archivable(st, env) &&
             /* generated by the server for the user (not a message) */
             !(strcmp(env->from.bare, env->to.bare) == 0 && !env->from.resource) &&
             !has_own_sid(mp_stanza_root(st), env->to.bare);
    pthread_mutex_lock(&lock);
    struct user *u = user_find(env->to.bare);
    if (!ok && !(u && u->head)) {
        pthread_mutex_unlock(&lock);
        return HOOK_PASS;
    }
    if (ok && !u)
        u = user_get(env->to.domain, env->to.local, env->to.bare);
    enum verdict v = !u->head && u->loaded ? decide(u, env->from.bare) : V_ASK_ROSTER;
    if (v != V_ASK_ROSTER) {
        pthread_mutex_unlock(&lock);
        if (v == V_YES)
            in_archive(st, env->to.domain, env->to.local, env->to.bare, env->from.bare,
                       mp_stanza_defer_ack(st));
        return HOOK_PASS;
    }
    /* decided later, in order with what waits already */
    struct pending *p = mp_calloc(1, sizeof *p);
    p->st = mp_stanza_ref(st);
    p->ack = mp_stanza_defer_ack(st); /* done once decided (and archived) */
    p->archivable = ok;
    if (u->tail)
        u->tail->next = p;
    else
        u->head = p;
    u->tail = p;
    int start = !u->busy;
    u->busy = 1;
    pthread_mutex_unlock(&lock);
    if (start)
        pump(u);
    return HOOK_HANDLED;
}

/* ---- sessions: preferences and retention ---- */

static int64_t cutoff_us(void)
{
    long long days = mp_module_opt_int(self, "retention_days");
    return days > 0 ? mp_now_us() - (int64_t)days * 86400 * 1000000 : 0;
}

static void expired(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    char *hu = ud; /* "host\0user" */
    if (rc == MAGPIE_OK && n > 0)
        mp_archive_delete(hu, STORE, hu + strlen(hu) + 1, items[0].id, NULL, NULL);
    free(hu);
}

/* Deletes what is past the retention period from host/user's archive. */
static void purge(const char *host, const char *user)
{
    int64_t cut = cutoff_us();
    if (!cut)
        return;
    size_t hl = strlen(host), ul = strlen(user);
    char *hu = mp_calloc(1, hl + ul + 2);
    memcpy(hu, host, hl);
    memcpy(hu + hl + 1, user, ul);
    mp_archive_filter f = {.ts_to = cut - 1, .reverse = 1, .limit = 1};
    if (mp_archive_query(host, STORE, user, &f, expired, hu) != MAGPIE_OK)
        free(hu);
}

static void purge_timer(mp_session *s, void *ud)
{
    (void)ud;
    const mp_jid *j = mp_session_jid(s);
    purge(j->domain, j->local);
}

struct sess_load {
    uint64_t sid;
    char *bare;
};

static void sess_prefs(void *ud, int rc, const void *data, size_t len)
{
    struct sess_load *l = ud;
    prefs_loaded(l->bare, rc, data, len);
    mp_session *s = mp_session_find(l->sid);
    if (s)
        mp_session_release(s);
    free(l->bare);
    free(l);
}

static void session_started(mp_session *s, void *ud)
{
    (void)ud;
    const mp_jid *j = mp_session_jid(s);
    purge(j->domain, j->local);
    mp_session_timer(s, 3600, 1, purge_timer, NULL);
    pthread_mutex_lock(&lock);
    int loaded = user_get(j->domain, j->local, j->bare)->loaded;
    pthread_mutex_unlock(&lock);
    if (loaded)
        return;
    struct sess_load *l = mp_calloc(1, sizeof *l);
    l->sid = mp_session_id(s);
    l->bare = mp_strdup(j->bare);
    mp_session_hold(s); /* the first message it sends needs the prefs */
    if (mp_kv_get(j->domain, PREFS_STORE, j->local, sess_prefs, l) != MAGPIE_OK)
        sess_prefs(l, MAGPIE_ERR, NULL, 0);
}

static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    mp_archive_delete(domain, STORE, user, 0, NULL, NULL);
    mp_kv_del(domain, PREFS_STORE, user, NULL, NULL);
    size_t n = strlen(user) + 1 + strlen(domain) + 1;
    char *bare = mp_calloc(1, n);
    snprintf(bare, n, "%s@%s", user, domain);
    pthread_mutex_lock(&lock);
    user_forget(bare);
    pthread_mutex_unlock(&lock);
    free(bare);
}

/* ---- preferences IQ (XEP-0313 §6) ---- */

/* 1 if iq is the user's own request (no 'to', or its own bare JID). */
static int own_request(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    if (env->to.domain && strcmp(env->to.full, env->from.bare) != 0) {
        mp_iq_reply_error(iq, "cancel", "forbidden");
        return 0;
    }
    return 1;
}

struct prefs_op {
    mp_stanza *iq; /* referenced */
    int set;
};

static void prefs_answer(struct prefs_op *op)
{
    const struct mp_envelope *env = mp_stanza_envelope(op->iq);
    mp_stanza *res = mp_iq_result(op->iq);
    pthread_mutex_lock(&lock);
    struct user *u = user_get(env->from.domain, env->from.local, env->from.bare);
    if (op->set) {
        mp_xml *p = mp_xml_find(mp_stanza_root(op->iq), "prefs", NS_MAM);
        if (prefs_read(u, op->iq, p) != 0) {
            pthread_mutex_unlock(&lock);
            mp_stanza_unref(res);
            mp_iq_reply_error(op->iq, "modify", "bad-request");
            goto out;
        }
        mp_stanza *doc = mp_stanza_new("x", NS_PRIV);
        prefs_write(u, doc, mp_stanza_root(doc));
        char *s = mp_xml_to_string(mp_xml_first_element(mp_stanza_root(doc)), NULL);
        mp_kv_set(env->from.domain, PREFS_STORE, env->from.local, s, strlen(s), NULL, NULL);
        free(s);
        mp_stanza_unref(doc);
    }
    prefs_write(u, res, mp_stanza_root(res));
    pthread_mutex_unlock(&lock);
    mp_iq_reply(res);
out:
    mp_stanza_unref(op->iq);
    free(op);
}

static void prefs_fetched(void *ud, int rc, const void *data, size_t len)
{
    struct prefs_op *op = ud;
    const struct mp_envelope *env = mp_stanza_envelope(op->iq);
    pthread_mutex_lock(&lock);
    user_get(env->from.domain, env->from.local, env->from.bare);
    pthread_mutex_unlock(&lock);
    prefs_loaded(env->from.bare, rc, data, len);
    prefs_answer(op);
}

static void prefs_iq(mp_stanza *iq, void *ud)
{
    if (!own_request(iq))
        return;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    struct prefs_op *op = mp_calloc(1, sizeof *op);
    op->iq = mp_stanza_ref(iq);
    op->set = ud != NULL;
    pthread_mutex_lock(&lock);
    struct user *u = user_find(env->from.bare);
    int loaded = u && u->loaded;
    pthread_mutex_unlock(&lock);
    if (loaded) {
        prefs_answer(op);
        return;
    }
    if (mp_kv_get(env->from.domain, PREFS_STORE, env->from.local, prefs_fetched, op) !=
        MAGPIE_OK) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
        mp_stanza_unref(op->iq);
        free(op);
    }
}

/* ---- queries (XEP-0313 §4) and metadata (§5): magpie/mam.h ---- */

/* Parses a stored item: the message (caller owns), its stanza id and its
 * direction. NULL if unreadable. */
static mp_stanza *item_parse(const mp_archive_item *it, const char **sid, int *out)
{
    mp_stanza *m = mp_stanza_parse(it->data, it->len);
    if (!m)
        return NULL;
    mp_xml *root = mp_stanza_root(m);
    mp_xml *a = mp_xml_find(root, "archived", NS_PRIV);
    if (!a || !(*sid = mp_xml_get_attr(a, "sid"))) {
        mp_stanza_unref(m);
        return NULL;
    }
    const char *dir = mp_xml_get_attr(a, "dir");
    *out = dir && strcmp(dir, "out") == 0;
    mp_xml_remove(m, a);
    return m;
}

/* What a query keeps of its 'with': a full JID matches that resource only
 * (XEP-0313 §4.1.1), which the store cannot filter. NULL for metadata. */
struct q_with {
    char *full;
};

static mp_stanza *q_item(void *ud, const mp_archive_item *it, const char **sid, int *in_set)
{
    struct q_with *w = ud;
    int out;
    mp_stanza *m = item_parse(it, sid, &out);
    if (m && w && w->full) {
        const char *peer = mp_xml_get_attr(mp_stanza_root(m), out ? "to" : "from");
        mp_jid j;
        *in_set = 0;
        if (peer && mp_jid_parse(&j, peer) == MAGPIE_OK) {
            *in_set = strcmp(j.full, w->full) == 0;
            mp_jid_free(&j);
        }
    }
    return m;
}

/* The archive's 'with' column is the other party's bare JID. */
static const char *q_with(void *ud, const char *v, struct mp_mam_with *mw, const char **type)
{
    (void)type;
    struct q_with *w = ud;
    mp_jid j;
    if (mp_jid_parse(&j, v) != MAGPIE_OK) {
        mp_jid_free(&j);
        return "jid-malformed";
    }
    free(mw->exact);
    mw->exact = mp_strdup(j.bare);
    if (j.resource) {
        free(w->full);
        w->full = mp_strdup(j.full);
        mw->filtered = 1;
    }
    mp_jid_free(&j);
    return NULL;
}

static void q_done(void *ud, int rc)
{
    struct q_with *w = ud;
    if (rc == MAGPIE_OK)
        mp_counter_add(c_queries, 1);
    free(w->full);
    free(w);
}

static void meta_done(void *ud, int rc)
{
    (void)ud;
    (void)rc;
}

static const struct mp_mam_ops query_ops = {
    .item = q_item, .sid_ts = sid_ts, .with = q_with, .done = q_done};
static const struct mp_mam_ops meta_ops = {.item = q_item, .sid_ts = sid_ts, .done = meta_done};

/* The user's archive, as iq's sender (its own request) asks it. */
static struct mp_mam_archive archive_of(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    return (struct mp_mam_archive){
        .host = env->from.domain,
        .store = STORE,
        .key = env->from.local,
        .jid = env->from.bare,
        .page_max = (size_t)mp_module_opt_int(self, "max_page"),
        .ts_min = cutoff_us(),
        .flags = MP_MAM_FIN_QUERYID,
    };
}

static void query_set(mp_stanza *iq, void *ud)
{
    (void)ud;
    if (mp_xml_find(mp_stanza_root(iq), "prefs", NS_MAM)) {
        prefs_iq(iq, (void *)1);
        return;
    }
    if (!own_request(iq))
        return;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *query = mp_xml_find(mp_stanza_root(iq), "query", NS_MAM);
    if (!query || !env->from.local) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    struct mp_mam_archive a = archive_of(iq);
    mp_mam_query(iq, query, &a, &query_ops, mp_calloc(1, sizeof(struct q_with)));
}

static void metadata_get(mp_stanza *iq)
{
    struct mp_mam_archive a = archive_of(iq);
    mp_mam_metadata(iq, &a, &meta_ops, NULL);
}
/* XEP-0313 §4.1.5: the form a query may fill; also the preferences (§6)
 * and the metadata (§5), which share the namespace. */
static void query_get(mp_stanza *iq, void *ud)
{
    (void)ud;
    if (mp_xml_find(mp_stanza_root(iq), "prefs", NS_MAM)) {
        prefs_iq(iq, NULL);
        return;
    }
    if (!own_request(iq))
        return;
    if (mp_xml_find(mp_stanza_root(iq), "metadata", NS_MAM)) {
        metadata_get(iq);
        return;
    }
    if (!mp_xml_find(mp_stanza_root(iq), "query", NS_MAM)) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    mp_stanza *res = mp_iq_result(iq);
    mp_mam_form_add(res, mp_stanza_root(res));
    mp_iq_reply(res);
}

static const struct mp_notify notify = {
    .session_started = session_started,
    .account_deleted = account_deleted,
};

static const struct mp_route_hooks route_hooks = {.message_account = message_account};

static int load(mp_module *m)
{
    self = m;
    enum policy p;
    if (policy_parse(mp_module_opt_str(m, "default_policy"), &p) != 0) {
        mp_log(MP_LOG_ERROR, "mam: default_policy must be always, never or roster");
        return MAGPIE_ERR;
    }
    c_archived = mp_counter_new(m, "archived", "Messages written to user archives");
    c_queries = mp_counter_new(m, "queries", "Archive query pages answered");
    /* above carbons (40), below blocking (60): a blocked message is not archived */
    mp_filter_add(m, MP_FILTER_IN, 55, from_client, NULL);
    mp_route_hooks_add(m, &route_hooks, 0, NULL);
    mp_notify_add(m, &notify, NULL);
    if (mp_iq_register(m, MP_IQ_SET, NS_MAM, MP_IQ_ACCOUNT, query_set, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_GET, NS_MAM, MP_IQ_ACCOUNT, query_get, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    mp_disco_feature_add(m, MP_DISCO_ACCOUNT, NS_MAM);
    mp_disco_feature_add(m, MP_DISCO_ACCOUNT, NS_MAM_EXT);
    mp_disco_feature_add(m, MP_DISCO_ACCOUNT, NS_SID);
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_SID);
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    /* the workers are gone: nothing is in flight */
    for (size_t i = 0; i < NBUCKETS; i++)
        while (buckets[i]) {
            struct user *u = buckets[i];
            buckets[i] = u->next;
            while (u->head) {
                struct pending *p = u->head;
                u->head = p->next;
                mp_stanza_unref(p->st);
                mp_ack_done(p->ack);
                free(p);
            }
            user_free(u);
        }
    n_users = 0;
}

MP_MODULE_DECLARE("mam", "XEP-0313 Message Archive Management for user archives", options, load,
                  unload, NULL);
