/* mod_offline - XEP-0160 offline messages.
 *
 * A message of type normal or chat for an account with no available
 * resource reaches the core's "message-offline" hook (router.c, to_bare:
 * groupchat is bounced, headline and error dropped before it). This
 * module takes it: after checking that the account exists and is under
 * its quota it appends the stanza to the archive store "offline" (key =
 * username), and nothing else happens to it until that write has
 * committed: a failed write or a full quota is reported to the sender
 * (wait/internal-server-error, wait/resource-constraint), a nonexistent
 * account gets cancel/service-unavailable. Messages carrying only chat
 * states (XEP-0085) are dropped, as that XEP asks; a XEP-0334 <no-store/>
 * hint leaves the message to the core (service-unavailable).
 *
 * When a session sends available presence with a non-negative priority
 * for the first time, the stored messages are read, stamped with a
 * XEP-0203 <delay/> (from = the host, stamp = when it was stored), routed
 * to that resource in the order they were stored, and then deleted up to
 * the last one routed, so a later login does not get them again. One
 * resource at a time takes a user's messages; a message that cannot reach
 * it (the session went away meanwhile) goes through the router's
 * undeliverable rules and is stored again before the old copy is deleted,
 * so none is lost (a crash between the two may deliver one twice).
 *
 * "Acknowledged means durable": a message from a client with stream
 * management (XEP-0198) carries an acknowledgement token; the module
 * defers it while it stores the message and completes it once the write
 * has committed (or the sender got its error), so no <a/> covering the
 * message leaves before it is on disk. */
#include <magpie/magpie.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STORE         "offline"
#define NS_DELAY      "urn:xmpp:delay"
#define NS_HINTS      "urn:xmpp:hints"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"

static const struct mp_option options[] = {
    {"quota", MP_OPT_INT, "100",
     "Most messages kept for one user; beyond, the sender gets resource-constraint", 1, 100000},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;
static mp_counter *c_stored, *c_delivered, *c_refused;

/* Bounces the message st (not taken) to its sender. */
static void bounce(mp_stanza *st, const char *type, const char *cond)
{
    mp_stanza *e = mp_stanza_copy(st);
    mp_stanza_make_error(e, type, cond, NULL);
    mp_route(e);
}

/* ---- storing ---- */

struct store_op {
    mp_stanza *st; /* referenced */
    mp_ack *ack;   /* the sender's XEP-0198 acknowledgement waits for the write */
    char *host, *user, *with, *bare;
    struct store_op *next;
};

/* Messages for one user are stored one after the other (the quota check
 * and the append of one complete before the next starts), so a burst
 * cannot overrun the quota and stored order is arrival order. */
struct user_queue {
    char *bare;
    struct store_op *head, *tail;
    struct user_queue *next;
};
static struct user_queue *queues;
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;

static void store_start(struct store_op *op);
static void flush_start(const char *host, const char *user, const char *bare, uint64_t sid);
static int reachable(const char *bare);

/* Queues op behind its user's other messages; starts it if it is first. */
static void store_enqueue(struct store_op *op)
{
    pthread_mutex_lock(&queue_lock);
    struct user_queue *q = queues;
    while (q && strcmp(q->bare, op->bare) != 0)
        q = q->next;
    if (q) {
        q->tail->next = op;
        q->tail = op;
        pthread_mutex_unlock(&queue_lock);
        return;
    }
    q = mp_calloc(1, sizeof *q);
    q->bare = mp_strdup(op->bare);
    q->head = q->tail = op;
    q->next = queues;
    queues = q;
    pthread_mutex_unlock(&queue_lock);
    store_start(op);
}

/* op is finished: frees it and starts the user's next message. */
static void store_op_free(struct store_op *op)
{
    struct store_op *next = NULL;
    pthread_mutex_lock(&queue_lock);
    for (struct user_queue **pp = &queues; *pp; pp = &(*pp)->next) {
        struct user_queue *q = *pp;
        if (strcmp(q->bare, op->bare) != 0)
            continue;
        q->head = op->next;
        next = q->head;
        if (!next) {
            *pp = q->next;
            free(q->bare);
            free(q);
        }
        break;
    }
    pthread_mutex_unlock(&queue_lock);
    /* stored (committed), refused or bounced: the sender may be acked */
    mp_ack_done(op->ack);
    mp_stanza_unref(op->st);
    free(op->host);
    free(op->user);
    free(op->with);
    free(op->bare);
    free(op);
    if (next)
        store_start(next);
}

static void appended(void *ud, int rc, int64_t id)
{
    (void)id;
    struct store_op *op = ud;
    if (rc == MAGPIE_OK) {
        mp_counter_add(c_stored, 1);
        /* the user came online while this was being stored: the login's
         * flush may have read the store before it, so deliver it now */
        if (reachable(op->bare))
            flush_start(op->host, op->user, op->bare, 0);
    } else {
        mp_log(MP_LOG_ERROR, "offline: cannot store a message for %s@%s", op->user, op->host);
        bounce(op->st, "wait", "internal-server-error");
    }
    store_op_free(op);
}

static void counted(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    (void)items;
    struct store_op *op = ud;
    if (rc != MAGPIE_OK) {
        bounce(op->st, "wait", "internal-server-error");
        store_op_free(op);
        return;
    }
    if (n >= (size_t)mp_module_opt_int(self, "quota")) {
        mp_counter_add(c_refused, 1);
        bounce(op->st, "wait", "resource-constraint");
        store_op_free(op);
        return;
    }
    char *xml = mp_xml_to_string(mp_stanza_root(op->st), NULL);
    int q = mp_archive_append(op->host, STORE, op->user, op->with, xml, strlen(xml), appended, op);
    free(xml);
    if (q != MAGPIE_OK) {
        bounce(op->st, "wait", "internal-server-error");
        store_op_free(op);
    }
}

static void exists(void *ud, int rc)
{
    struct store_op *op = ud;
    if (rc != MAGPIE_OK) {
        bounce(op->st, rc == MAGPIE_NOTFOUND ? "cancel" : "wait",
               rc == MAGPIE_NOTFOUND ? "service-unavailable" : "internal-server-error");
        store_op_free(op);
        return;
    }
    /* the quota: count up to `quota` stored messages */
    mp_archive_filter f = {.limit = (size_t)mp_module_opt_int(self, "quota")};
    if (mp_archive_query(op->host, STORE, op->user, &f, counted, op) != MAGPIE_OK) {
        bounce(op->st, "wait", "internal-server-error");
        store_op_free(op);
    }
}

/* Only chat states (XEP-0085) and hints: nothing worth keeping. */
static int only_chat_state(const mp_xml *root)
{
    for (mp_xml *c = mp_xml_first_element(root); c; c = mp_xml_find_next(c, NULL, NULL))
        if (!c->ns || (strcmp(c->ns, NS_CHATSTATES) != 0 && strcmp(c->ns, NS_HINTS) != 0))
            return 0;
    return 1;
}

static int message_offline(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind != MP_KIND_MESSAGE ||
        (env->type != MP_TYPE_NONE && env->type != MP_TYPE_NORMAL && env->type != MP_TYPE_CHAT))
        return HOOK_PASS;
    if (!env->to.local || !env->from.domain)
        return HOOK_PASS;
    mp_xml *root = mp_stanza_root(st);
    if (mp_xml_find(root, "no-store", NS_HINTS))
        return HOOK_PASS;
    if (only_chat_state(root))
        return HOOK_HANDLED; /* dropped: XEP-0085 §5.5 */
    struct store_op *op = mp_calloc(1, sizeof *op);
    op->st = mp_stanza_ref(st);
    op->ack = mp_stanza_defer_ack(st);
    op->host = mp_strdup(env->to.domain);
    op->user = mp_strdup(env->to.local);
    op->with = mp_strdup(env->from.bare);
    op->bare = mp_strdup(env->to.bare);
    store_enqueue(op);
    return HOOK_HANDLED;
}

static void store_start(struct store_op *op)
{
    if (mp_account_exists(op->host, op->user, exists, op) != MAGPIE_OK)
        exists(op, MAGPIE_ERR);
}

/* ---- delivering ---- */

/* Users whose messages a resource is taking now (one at a time). */
struct taking {
    char *bare;
    struct taking *next;
};
static struct taking *takers;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int take_begin(const char *bare)
{
    pthread_mutex_lock(&lock);
    for (struct taking *t = takers; t; t = t->next)
        if (strcmp(t->bare, bare) == 0) {
            pthread_mutex_unlock(&lock);
            return 0;
        }
    struct taking *t = mp_calloc(1, sizeof *t);
    t->bare = mp_strdup(bare);
    t->next = takers;
    takers = t;
    pthread_mutex_unlock(&lock);
    return 1;
}

static void take_end(const char *bare)
{
    pthread_mutex_lock(&lock);
    for (struct taking **pp = &takers; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->bare, bare) == 0) {
            struct taking *t = *pp;
            *pp = t->next;
            free(t->bare);
            free(t);
            break;
        }
    pthread_mutex_unlock(&lock);
}

struct flush_op {
    uint64_t sid; /* the session taking them; 0: whoever the bare JID reaches */
    int64_t last; /* highest id routed so far */
    char *host, *user, *bare;
};

static void fetched(void *ud, int rc, const mp_archive_item *items, size_t n);

static void flush_op_free(struct flush_op *op)
{
    take_end(op->bare);
    free(op->host);
    free(op->user);
    free(op->bare);
    free(op);
}

/* Reads what is stored after op->last; fetched() routes it. */
static void fetch_more(struct flush_op *op)
{
    mp_archive_filter f = {.after_id = op->last};
    if (mp_archive_query(op->host, STORE, op->user, &f, fetched, op) != MAGPIE_OK)
        flush_op_free(op);
}

/* Starts routing the stored messages of user@host to session sid (0: to
 * the bare JID), unless another flush of that user is running. */
static void flush_start(const char *host, const char *user, const char *bare, uint64_t sid)
{
    if (!take_begin(bare))
        return; /* another resource is taking them now */
    struct flush_op *op = mp_calloc(1, sizeof *op);
    op->sid = sid;
    op->host = mp_strdup(host);
    op->user = mp_strdup(user);
    op->bare = mp_strdup(bare);
    fetch_more(op);
}

static void deleted(void *ud, int rc)
{
    struct flush_op *op = ud;
    if (rc != MAGPIE_OK) {
        mp_log(MP_LOG_ERROR, "offline: cannot delete delivered messages of %s", op->bare);
        flush_op_free(op);
        return;
    }
    /* a message whose store completed while these were read: take it too */
    fetch_more(op);
}

static void any_nonnegative(void *ud, const char *full, int priority)
{
    (void)full;
    if (priority >= 0)
        *(int *)ud = 1;
}

/* True if a message to bare would reach an available resource now. */
static int reachable(const char *bare)
{
    int any = 0;
    mp_sessions_foreach(bare, any_nonnegative, &any);
    return any;
}

/* XEP-0082 date-time of a storage timestamp (microseconds, UTC). */
static void stamp_of(int64_t ts, char *buf, size_t len)
{
    time_t secs = (time_t)(ts / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03dZ", (int)((ts / 1000) % 1000));
}

static void fetched(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct flush_op *op = ud;
    mp_session *s = op->sid ? mp_session_find(op->sid) : NULL;
    /* stop when the session is gone, or (to the bare JID) when nobody
     * would get them: routed now, they would only be stored again */
    if (rc != MAGPIE_OK || n == 0 || (op->sid ? !s : !reachable(op->bare))) {
        flush_op_free(op);
        return;
    }
    const char *full = s ? mp_session_jid(s)->full : op->bare;
    for (size_t i = 0; i < n; i++) {
        mp_stanza *st = mp_stanza_parse(items[i].data, items[i].len);
        if (!st) {
            mp_log(MP_LOG_WARN, "offline: unreadable message %lld of %s", (long long)items[i].id,
                   op->bare);
            continue;
        }
        mp_xml *root = mp_stanza_root(st);
        if (!mp_xml_find(root, "delay", NS_DELAY)) {
            char stamp[40];
            stamp_of(items[i].ts, stamp, sizeof stamp);
            mp_xml *d = mp_xml_add_child(st, root, "delay", NS_DELAY);
            mp_xml_set_attr(st, d, "from", op->host);
            mp_xml_set_attr(st, d, "stamp", stamp);
            mp_xml_add_text(st, d, "Offline Storage", 15);
        }
        mp_xml_set_attr(st, root, "to", full);
        mp_counter_add(c_delivered, 1);
        mp_route(st);
    }
    op->last = items[n - 1].id;
    if (mp_archive_delete(op->host, STORE, op->user, op->last, deleted, op) != MAGPIE_OK)
        flush_op_free(op);
}

struct sess {
    int taken; /* this session has had its chance at the stored messages */
};

static void presence_changed(mp_session *s, mp_stanza *presence, int available, void *ud)
{
    (void)ud;
    if (!available)
        return;
    struct sess *ss = mp_session_data(s, self);
    if (!ss) {
        ss = mp_calloc(1, sizeof *ss);
        mp_session_set_data(s, self, ss);
    }
    if (ss->taken)
        return;
    mp_xml *p = mp_xml_find(mp_stanza_root(presence), "priority", NULL);
    if (p && atoi(mp_xml_text(presence, p)) < 0)
        return; /* XEP-0160 §3: only to a resource with non-negative priority */
    ss->taken = 1;
    const mp_jid *j = mp_session_jid(s);
    flush_start(j->domain, j->local, j->bare, mp_session_id(s));
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    free(mp_session_data(s, self));
    mp_session_set_data(s, self, NULL);
}

static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    mp_archive_delete(domain, STORE, user, 0, NULL, NULL);
}

static const struct mp_notify notify = {
    .session_ended = session_ended,
    .presence_changed = presence_changed,
    .account_deleted = account_deleted,
};

static const struct mp_route_hooks route_hooks = {.message_offline = message_offline};

static int load(mp_module *m)
{
    self = m;
    c_stored = mp_counter_new(m, "stored", "Messages stored for offline users");
    c_delivered = mp_counter_new(m, "delivered", "Stored messages delivered at login");
    c_refused =
        mp_counter_new(m, "over_quota", "Messages refused because the user's store was full");
    mp_route_hooks_add(m, &route_hooks, 0, NULL);
    mp_notify_add(m, &notify, NULL);
    mp_disco_feature_add(m, MP_DISCO_SERVER, "msgoffline");
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    /* the workers are gone: no store operation is left in flight */
    while (queues) {
        struct user_queue *q = queues;
        queues = q->next;
        free(q->bare);
        free(q);
    }
    while (takers) {
        struct taking *t = takers;
        takers = t->next;
        free(t->bare);
        free(t);
    }
}

MP_MODULE_DECLARE("offline", "XEP-0160 offline messages", options, load, unload, NULL);
