/* mod_sm - XEP-0198 Stream Management (urn:xmpp:sm:3): acks and resumption.
 *
 * <sm/> is advertised after authentication. On a bound stream <enable/>
 * starts it (mp_session_manage): from then on every stanza written to the
 * client is counted and kept, referenced, in the session's queue of
 * unacknowledged stanzas until the client's <a h=/> covers it (counts mod
 * 2^32, XEP-0198 §4); the server asks for an ack (<r/>) every
 * `request_every` unacknowledged stanzas. The client's <r/> is answered
 * with the count of its stanzas the server has *handled*
 * (mp_session_handled): routed, and for a message stored for an offline
 * recipient, written to disk (mod_offline defers the stanza's
 * acknowledgement token until the write committed). If some are not
 * handled yet, the <a/> waits for them (the `handled` hook).
 *
 * With resume='true' the session is resumable for min(max, resume_timeout)
 * seconds: a lost connection (EOF, reset, a ping timeout) detaches it
 * instead of ending it. It stays bound and available (contacts see no
 * unavailable), and what is sent to it goes to the queue. <resume
 * previd h/> on a new authenticated stream of the same account, before
 * binding, hands the session the new connection (mp_session_resume, on
 * whatever worker the session was: the core moves it), closing the old
 * connection if the server still had it; the client gets <resumed/>, then
 * every queued stanza its h does not cover, once each and in order, then
 * what arrives later. If some of the client's stanzas are still being
 * made durable at that moment, <resumed/> waits for them (its h must
 * cover them, or the client would send them again) and what comes for
 * the client meanwhile is held behind it. An unknown or expired previd gets <failed> with
 * <item-not-found/> (and the session's last handled count when it ended
 * recently, so the client knows which of its stanzas arrived).
 *
 * When a managed session ends (closed, expired while detached, replaced)
 * its unacknowledged stanzas are treated as undeliverable (§4): a message
 * (normal, chat) is routed again to the bare JID, so it reaches another
 * available resource or the offline store (mod_offline); one that was sent
 * to the bare JID is dropped if another resource is available (that
 * resource had it already). Carbon copies, groupchat, headline and error
 * messages are dropped; IQ requests are answered service-unavailable. The
 * queue is bounded by max_queue: beyond, the session ends that way. */
#include <magpie/magpie.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_SM       "urn:xmpp:sm:3"
#define NS_STANZAS  "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_CARBONS  "urn:xmpp:carbons:2"
#define BUCKETS     1024
#define TOMBSTONES  1024
#define PREVID_SIZE 33

static const struct mp_option options[] = {
    {"resume_timeout", MP_OPT_INT, "300",
     "Seconds a resumable session waits for its client after the connection was lost", 1, 3600},
    {"max_queue", MP_OPT_INT, "1000",
     "Most unacknowledged stanzas kept for one session; beyond, the session ends", 10, 100000},
    {"request_every", MP_OPT_INT, "5", "The server asks for an ack after this many stanzas", 1,
     1000},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;
static mp_counter *c_enabled, *c_resumed, *c_failed, *c_requeued;

/* ---- per session ---- */

struct sm {
    int resumable;
    char previd[PREVID_SIZE];
    uint32_t out_count; /* stanzas sent to the client (its h once it has them all) */
    uint32_t out_acked; /* the client's last h */
    mp_stanza **q;      /* unacknowledged, oldest first: a ring */
    size_t head, n, cap;
    unsigned since_request; /* stanzas sent since the last <r/> */
    int ack_owed;           /* an <r/> waits for stanzas still being handled ... */
    uint32_t ack_target;    /* ... until the handled count reaches this */
    int resuming;           /* <resumed/> waits the same way */
    uint32_t resume_target;
    double timeout;
};

static struct sm *sm_of(mp_session *s)
{
    return mp_session_data(s, self);
}

static void q_push(struct sm *sm, mp_stanza *st)
{
    if (sm->n == sm->cap) {
        size_t cap = sm->cap ? 2 * sm->cap : 16;
        mp_stanza **v = mp_malloc(cap * sizeof *v);
        for (size_t i = 0; i < sm->n; i++)
            v[i] = sm->q[(sm->head + i) % sm->cap];
        free(sm->q);
        sm->q = v;
        sm->cap = cap;
        sm->head = 0;
    }
    sm->q[(sm->head + sm->n) % sm->cap] = st;
    sm->n++;
}

static mp_stanza *q_pop(struct sm *sm)
{
    if (sm->n == 0)
        return NULL;
    mp_stanza *st = sm->q[sm->head];
    sm->head = (sm->head + 1) % sm->cap;
    sm->n--;
    return st;
}

/* ---- previd -> session, and recently ended sessions ---- */

struct entry {
    char previd[PREVID_SIZE];
    char *full;
    uint64_t id;
    struct entry *next;
};

struct tomb {
    char previd[PREVID_SIZE];
    uint32_t h;
    double until;
};

static struct entry *buckets[BUCKETS];
static struct tomb tombs[TOMBSTONES];
static size_t next_tomb;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned bucket_of(const char *previd)
{
    unsigned h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)previd; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % BUCKETS;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void registry_add(const char *previd, const char *full, uint64_t id)
{
    struct entry *e = mp_calloc(1, sizeof *e);
    e->full = mp_strdup(full);
    memcpy(e->previd, previd, PREVID_SIZE);
    e->id = id;
    unsigned b = bucket_of(previd);
    pthread_mutex_lock(&lock);
    e->next = buckets[b];
    buckets[b] = e;
    pthread_mutex_unlock(&lock);
}

/* Forgets previd, remembering h (the client's handled stanzas) for a
 * later <resume/> that comes too late. */
static void registry_del(const char *previd, uint32_t h, double keep)
{
    unsigned b = bucket_of(previd);
    pthread_mutex_lock(&lock);
    for (struct entry **pp = &buckets[b]; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->previd, previd) == 0) {
            struct entry *e = *pp;
            *pp = e->next;
            free(e->full);
            free(e);
            break;
        }
    struct tomb *t = &tombs[next_tomb++ % TOMBSTONES];
    memcpy(t->previd, previd, PREVID_SIZE);
    t->h = h;
    t->until = now_s() + keep;
    pthread_mutex_unlock(&lock);
}

/* The session of previd: MAGPIE_OK with *full (malloc'd) and *id; else
 * MAGPIE_NOTFOUND, with *h set (and *h_known = 1) if it ended recently. */
static int registry_find(const char *previd, char **full, uint64_t *id, uint32_t *h, int *h_known)
{
    *h_known = 0;
    unsigned b = bucket_of(previd);
    pthread_mutex_lock(&lock);
    for (struct entry *e = buckets[b]; e; e = e->next)
        if (strcmp(e->previd, previd) == 0) {
            *full = mp_strdup(e->full);
            *id = e->id;
            pthread_mutex_unlock(&lock);
            return MAGPIE_OK;
        }
    double now = now_s();
    for (size_t i = 0; i < TOMBSTONES; i++)
        if (tombs[i].previd[0] && tombs[i].until > now && strcmp(tombs[i].previd, previd) == 0) {
            *h = tombs[i].h;
            *h_known = 1;
        }
    pthread_mutex_unlock(&lock);
    return MAGPIE_NOTFOUND;
}

/* ---- sending ---- */

static void send_h(mp_session *s, const char *name, uint32_t h, const char *previd)
{
    mp_stanza *a = mp_stanza_new(name, NS_SM);
    char buf[16];
    snprintf(buf, sizeof buf, "%u", (unsigned)h);
    if (previd)
        mp_xml_set_attr(a, mp_stanza_root(a), "previd", previd);
    mp_xml_set_attr(a, mp_stanza_root(a), "h", buf);
    mp_session_send(s, a);
}

static void send_failed(mp_session *s, const char *condition, const uint32_t *h)
{
    mp_stanza *f = mp_stanza_new("failed", NS_SM);
    if (h) {
        char buf[16];
        snprintf(buf, sizeof buf, "%u", (unsigned)*h);
        mp_xml_set_attr(f, mp_stanza_root(f), "h", buf);
    }
    mp_xml_add_child(f, mp_stanza_root(f), condition, NS_STANZAS);
    mp_session_send(s, f);
    mp_counter_add(c_failed, 1);
}

/* Parses an h attribute (0 .. 2^32-1). */
static int parse_h(mp_stanza *el, uint32_t *h)
{
    const char *v = mp_xml_get_attr(mp_stanza_root(el), "h");
    if (!v || !*v)
        return MAGPIE_ERR;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || x > 0xffffffffull || v[0] == '-')
        return MAGPIE_ERR;
    *h = (uint32_t)x;
    return MAGPIE_OK;
}

/* The client acknowledged up to h: drops what that covers. MAGPIE_ERR if
 * h acknowledges more than was sent. */
static int acked(struct sm *sm, uint32_t h)
{
    uint32_t delta = h - sm->out_acked;
    if (delta > sm->n)
        return MAGPIE_ERR;
    for (uint32_t i = 0; i < delta; i++)
        mp_stanza_unref(q_pop(sm));
    sm->out_acked = h;
    return MAGPIE_OK;
}

/* ---- the stream's hooks ---- */

/* A stanza went to the client (or to the queue while it is away, or
 * while <resumed/> waits: then it is held, and written after it). */
static int on_sent(mp_session *s, mp_stanza *st, void *ud)
{
    (void)ud;
    struct sm *sm = sm_of(s);
    if (!sm)
        return MP_FILTER_PASS;
    q_push(sm, mp_stanza_ref(st));
    sm->out_count++;
    if (sm->resuming)
        return MP_FILTER_STOP;
    if (sm->n > (size_t)mp_module_opt_int(self, "max_queue")) {
        mp_log(MP_LOG_INFO, "sm: %s has not acknowledged %zu stanzas, ending the session",
               mp_session_jid(s)->full, sm->n);
        mp_session_close(s, "resource-constraint", "Too many unacknowledged stanzas");
        return MP_FILTER_PASS;
    }
    if (++sm->since_request >= (unsigned)mp_module_opt_int(self, "request_every")) {
        sm->since_request = 0;
        mp_session_send(s, mp_stanza_new("r", NS_SM));
    }
    return MP_FILTER_PASS;
}

static void finish_resume(mp_session *s, struct sm *sm);

/* More of the client's stanzas are handled: an owed <a/> may go now. */
static void on_handled(mp_session *s, uint32_t h, void *ud)
{
    (void)ud;
    struct sm *sm = sm_of(s);
    if (!sm)
        return;
    if (sm->resuming) {
        if ((int32_t)(h - sm->resume_target) >= 0)
            finish_resume(s, sm);
        return;
    }
    if (sm->ack_owed && (int32_t)(h - sm->ack_target) >= 0) {
        sm->ack_owed = 0;
        send_h(s, "a", h, NULL);
    }
}

struct resume_arg {
    uint32_t h; /* the client's count of what it received */
    char previd[PREVID_SIZE];
};

/* s has the new connection: <resumed/>, then what the client lacks. */
static void on_resumed(mp_session *s, void *arg, void *ud)
{
    (void)ud;
    struct resume_arg *ra = arg;
    struct sm *sm = sm_of(s);
    if (!sm) {
        free(ra);
        return;
    }
    if (acked(sm, ra->h) != MAGPIE_OK)
        mp_log(MP_LOG_INFO, "sm: %s resumed with h=%u beyond the %u stanzas sent",
               mp_session_jid(s)->full, (unsigned)ra->h, (unsigned)sm->out_count);
    int all;
    mp_session_handled(s, &all);
    free(ra);
    if (!all) {
        /* some of the client's stanzas are still being made durable: an h
         * without them would have the client send them again, twice
         * handled. <resumed/> waits for them (on_handled); what comes for
         * the client meanwhile is held (on_sent). */
        sm->resuming = 1;
        sm->resume_target = mp_session_received(s);
        return;
    }
    finish_resume(s, sm);
}

/* <resumed/> with the client's handled stanzas, then what it lacks. */
static void finish_resume(mp_session *s, struct sm *sm)
{
    int owed = sm->ack_owed; /* an <r/> that came while <resumed/> waited */
    sm->resuming = 0;
    uint32_t handled = mp_session_handled(s, NULL);
    if (owed && (int32_t)(handled - sm->ack_target) < 0)
        owed = 0; /* still owed: on_handled answers it */
    else
        sm->ack_owed = 0;
    send_h(s, "resumed", handled, sm->previd);
    /* resend what the client did not get; counted again as it goes out */
    size_t n = sm->n;
    mp_stanza **v = mp_malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = q_pop(sm);
    sm->out_count = sm->out_acked;
    sm->since_request = 0;
    for (size_t i = 0; i < n; i++)
        mp_session_send(s, v[i]);
    free(v);
    if (owed)
        send_h(s, "a", handled, NULL);
    mp_counter_add(c_resumed, 1);
    mp_log(MP_LOG_INFO, "sm: %s resumed, %zu stanza(s) resent", mp_session_jid(s)->full, n);
}

static void on_resume_failed(mp_session *from, void *arg, void *ud)
{
    (void)ud;
    struct resume_arg *ra = arg;
    if (from) {
        char *full = NULL;
        uint64_t id;
        uint32_t h = 0;
        int known = 0;
        if (registry_find(ra->previd, &full, &id, &h, &known) == MAGPIE_OK)
            free(full);
        send_failed(from, "item-not-found", known ? &h : NULL);
    }
    free(ra);
}

static void on_closing(mp_session *s, void *ud);

static const struct mp_stream_mgmt hooks = {
    .sent = on_sent,
    .closing = on_closing,
    .handled = on_handled,
    .resumed = on_resumed,
    .resume_failed = on_resume_failed,
};

/* ---- stream elements ---- */

static int on_enable(mp_session *s, mp_stanza *el, void *ud)
{
    (void)ud;
    if (!mp_session_jid(s)->full || sm_of(s)) {
        send_failed(s, "unexpected-request", NULL); /* before binding, or twice */
        return HOOK_HANDLED;
    }
    const char *r = mp_xml_get_attr(mp_stanza_root(el), "resume");
    int resume = r && (strcmp(r, "true") == 0 || strcmp(r, "1") == 0);
    double timeout = (double)mp_module_opt_int(self, "resume_timeout");
    const char *max = mp_xml_get_attr(mp_stanza_root(el), "max");
    if (max) {
        long want = atol(max);
        if (want > 0 && want < timeout)
            timeout = (double)want;
    }
    struct sm *sm = mp_calloc(1, sizeof *sm);
    sm->resumable = resume;
    sm->timeout = timeout;
    mp_session_set_data(s, self, sm);
    mp_stanza *en = mp_stanza_new("enabled", NS_SM);
    mp_xml *root = mp_stanza_root(en);
    if (resume) {
        mp_random_id(sm->previd, 17);
        mp_random_id(sm->previd + 16, 17);
        registry_add(sm->previd, mp_session_jid(s)->full, mp_session_id(s));
        char buf[24];
        snprintf(buf, sizeof buf, "%ld", (long)timeout);
        mp_xml_set_attr(en, root, "id", sm->previd);
        mp_xml_set_attr(en, root, "resume", "true");
        mp_xml_set_attr(en, root, "max", buf);
    }
    /* <enabled/> first: stanzas are counted from the next one on */
    mp_session_send(s, en);
    mp_session_manage(s, resume ? timeout : 0);
    mp_counter_add(c_enabled, 1);
    return HOOK_HANDLED;
}

static int on_r(mp_session *s, mp_stanza *el, void *ud)
{
    (void)el;
    (void)ud;
    struct sm *sm = sm_of(s);
    if (!sm) {
        send_failed(s, "unexpected-request", NULL);
        return HOOK_HANDLED;
    }
    int all;
    uint32_t h = mp_session_handled(s, &all);
    if (all && !sm->resuming) {
        send_h(s, "a", h, NULL);
    } else {
        /* answered once what was received so far is handled (durable) */
        sm->ack_owed = 1;
        sm->ack_target = mp_session_received(s);
    }
    return HOOK_HANDLED;
}

static int on_a(mp_session *s, mp_stanza *el, void *ud)
{
    (void)ud;
    struct sm *sm = sm_of(s);
    uint32_t h;
    if (!sm) {
        send_failed(s, "unexpected-request", NULL);
        return HOOK_HANDLED;
    }
    if (parse_h(el, &h) != MAGPIE_OK) {
        mp_session_close(s, "invalid-xml", "<a/> needs an h attribute");
        return HOOK_HANDLED;
    }
    if (acked(sm, h) != MAGPIE_OK) {
        char text[120];
        snprintf(text, sizeof text, "You acknowledged %u stanzas, but I only sent you %u so far.",
                 (unsigned)h, (unsigned)sm->out_count);
        mp_session_close(s, "undefined-condition", text);
    }
    return HOOK_HANDLED;
}

/* <resume/> on an authenticated stream, before binding. */
static int on_resume(mp_session *from, mp_stanza *el, void *ud)
{
    (void)ud;
    if (mp_session_jid(from)->full) {
        send_failed(from, "unexpected-request", NULL);
        return HOOK_HANDLED;
    }
    const char *previd = mp_xml_get_attr(mp_stanza_root(el), "previd");
    uint32_t h;
    if (!previd || parse_h(el, &h) != MAGPIE_OK || strlen(previd) >= PREVID_SIZE) {
        send_failed(from, "bad-request", NULL);
        return HOOK_HANDLED;
    }
    char *full = NULL;
    uint64_t id = 0;
    uint32_t last_h = 0;
    int known = 0;
    if (registry_find(previd, &full, &id, &last_h, &known) != MAGPIE_OK) {
        send_failed(from, "item-not-found", known ? &last_h : NULL);
        return HOOK_HANDLED;
    }
    struct resume_arg *ra = mp_calloc(1, sizeof *ra);
    ra->h = h;
    memcpy(ra->previd, previd, strlen(previd) + 1);
    int rc = mp_session_resume(from, full, id, ra);
    free(full);
    if (rc != MAGPIE_OK) {
        free(ra);
        send_failed(from, "item-not-found", NULL);
    }
    return HOOK_HANDLED;
}

static void feature(mp_session *s, mp_stanza *st, mp_xml *features, void *ud)
{
    (void)s;
    (void)ud;
    mp_xml_add_child(st, features, "sm", NS_SM);
}

/* ---- the end of a managed session ---- */

static void one_available(void *ud, const char *full, int priority)
{
    (void)full;
    (void)priority;
    *(int *)ud = 1;
}

/* An unacknowledged stanza of a session that ended (XEP-0198 §4: as
 * undeliverable). */
static void requeue(mp_session *s, mp_stanza *st, int others)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    mp_xml *root = mp_stanza_root(st);
    if (env->kind == MP_KIND_IQ) {
        if (env->type == MP_TYPE_GET || env->type == MP_TYPE_SET)
            mp_iq_reply_error(st, "cancel", "service-unavailable");
        return;
    }
    if (env->kind != MP_KIND_MESSAGE ||
        (env->type != MP_TYPE_NONE && env->type != MP_TYPE_NORMAL && env->type != MP_TYPE_CHAT))
        return;
    if (mp_xml_find(root, "received", NS_CARBONS) || mp_xml_find(root, "sent", NS_CARBONS))
        return; /* a copy: the original went where it belongs */
    if (!env->to.resource && others)
        return; /* sent to every available resource: the others have it */
    const mp_jid *me = mp_session_jid(s);
    mp_stanza *c = mp_stanza_copy_envelope(st);
    mp_xml_set_attr(c, mp_stanza_root(c), "to", me->bare);
    mp_counter_add(c_requeued, 1);
    mp_route(c);
}

/* s is out of the directory: what it did not acknowledge is undeliverable. */
static void requeue_all(mp_session *s, struct sm *sm)
{
    int others = 0;
    if (sm->n > 0)
        mp_sessions_foreach(mp_session_jid(s)->bare, one_available, &others);
    mp_stanza *st;
    while ((st = q_pop(sm))) {
        requeue(s, st, others);
        mp_stanza_unref(st);
    }
}

static void on_closing(mp_session *s, void *ud)
{
    (void)ud;
    struct sm *sm = sm_of(s);
    if (sm)
        requeue_all(s, sm);
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    struct sm *sm = sm_of(s);
    if (!sm)
        return;
    mp_session_set_data(s, self, NULL);
    if (sm->resumable)
        registry_del(sm->previd, mp_session_handled(s, NULL), sm->timeout);
    requeue_all(s, sm);
    free(sm->q);
    free(sm);
}

static const struct mp_notify notify = {.session_ended = session_ended};

static int load(mp_module *m)
{
    self = m;
    c_enabled = mp_counter_new(m, "enabled", "Streams that enabled stream management");
    c_resumed = mp_counter_new(m, "resumed", "Sessions resumed on a new connection");
    c_failed = mp_counter_new(m, "failed", "<failed/> answers (resumption refused and others)");
    c_requeued = mp_counter_new(m, "requeued",
                                "Unacknowledged messages routed again when their session ended");
    if (mp_stream_mgmt_set(m, &hooks, NULL) != MAGPIE_OK ||
        mp_stream_element_add_unbound(m, NS_SM, "enable", on_enable, NULL) != MAGPIE_OK ||
        mp_stream_element_add_unbound(m, NS_SM, "resume", on_resume, NULL) != MAGPIE_OK ||
        mp_stream_element_add(m, NS_SM, "r", on_r, NULL) != MAGPIE_OK ||
        mp_stream_element_add(m, NS_SM, "a", on_a, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    mp_stream_feature_add(m, MP_FEATURES_POST_AUTH, feature, NULL);
    mp_notify_add(m, &notify, NULL);
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    for (size_t b = 0; b < BUCKETS; b++)
        while (buckets[b]) {
            struct entry *e = buckets[b];
            buckets[b] = e->next;
            free(e->full);
            free(e);
        }
}

MP_MODULE_DECLARE("sm", "XEP-0198 Stream Management", options, load, unload, NULL);
