/* log.c - the room's log: groupchat messages in the archive store
 * "muc_log" of the service domain, one archive per room (key = the room's
 * localpart). It serves two things:
 *
 *   - history that survives a restart (persistent rooms): the newest
 *     cfg.history_len messages are read back at start; with archiving off
 *     the log is trimmed to about that many;
 *   - XEP-0313 Message Archive Management on the room's bare JID (rooms
 *     with cfg.mam): queries by start/end/with/before-id/after-id/ids,
 *     XEP-0059 pages in both directions, flip-page, metadata.
 *
 * Every message a room numbers gets an XEP-0359 stanza id (muc.h:
 * muc_stamp) that is also where to find it: the id carries the time the
 * message was logged, unique and increasing per room (rules.h), which is
 * the item's archive timestamp. A client's id is turned into an archive id
 * by one exact-time lookup (indexed); the page is then read by archive id.
 * Each item is the message as broadcast (from room/nick, no 'to', with its
 * occupant id and stanza id) plus one private child
 *
 *   <log xmlns='urn:magpie:muc:log:0' sid='..' jid='real full JID' k='m'/>
 *
 * (k: m = message with a body, s = subject change, r = retraction notice),
 * removed before anything is sent. The archive's 'with' column is the
 * sender's nick, for the 'with' filter (an occupant JID, XEP-0313 §4.1.1:
 * "the publisher").
 *
 * Threads: everything runs on the room's worker; storage callbacks come
 * back there (the loop current at the call). A query keeps what it needs
 * (the room's JID, the asker's rights, decided when it asked), not the
 * room, which may be gone when the results arrive. */
#include "muc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STORE_LOG  "muc_log"
#define NS_LOG     "urn:magpie:muc:log:0"
#define NS_RSM     "http://jabber.org/protocol/rsm"
#define NS_FORWARD "urn:xmpp:forward:0"

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void stamp_us(int64_t us, char *buf, size_t len)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%06dZ", (int)(us % 1000000));
}

void muc_stamp(struct muc_room *r, int64_t *us, char sid[MUC_SID_MAX])
{
    char rnd[17];
    *us = r->last_ts = muc_next_ts(r->last_ts, now_us());
    mp_random_id(rnd, sizeof rnd);
    muc_sid_format(*us, rnd, sid);
}

int muc_logging(const struct muc_room *r)
{
    return r->cfg.mam || r->cfg.persistent;
}

/* ---- writing ---- */

static void trim_note(struct muc_room *r, int64_t aid);

struct appended {
    char *node;
    int64_t us;
    char kind;
};

static void on_appended(void *ud, int rc, int64_t id)
{
    struct appended *a = ud;
    if (rc != MAGPIE_OK) {
        mp_log(MP_LOG_WARN, "muc: could not log a message of %s@%s", a->node, muc_domain());
    } else {
        /* the history entry learns its archive id (for trimming), or,
         * already dropped from the history, is trimmed */
        struct muc_room *r = muc_room_get(a->node);
        size_t i = r ? r->n_hist : 0;
        while (i-- > 0)
            if (r->hist[i].us == a->us) {
                r->hist[i].aid = id;
                break;
            }
        if (r && i == (size_t)-1 && a->kind == 'm')
            trim_note(r, id);
    }
    free(a->node);
    free(a);
}

/* The stored document of m (the message as broadcast) with its log child;
 * malloc'd, caller frees. */
static char *log_doc(const struct muc_room *r, mp_stanza *m, const char *sid, const char *jid,
                     char kind, int tomb)
{
    (void)r;
    mp_stanza *c = mp_stanza_copy(m);
    mp_xml *l = mp_xml_add_child(c, mp_stanza_root(c), "log", NS_LOG);
    mp_xml_set_attr(c, l, "sid", sid);
    if (jid)
        mp_xml_set_attr(c, l, "jid", jid);
    char k[2] = {kind, 0};
    mp_xml_set_attr(c, l, "k", k);
    if (tomb)
        mp_xml_set_attr(c, l, "t", "1");
    char *s = mp_xml_to_string(mp_stanza_root(c), NULL);
    mp_stanza_unref(c);
    return s;
}

void muc_log_message(struct muc_room *r, mp_stanza *m, const struct muc_occupant *o, char kind,
                     int64_t us, const char *sid)
{
    if (!muc_logging(r))
        return;
    if (!r->cfg.mam && (kind != 'm' || r->cfg.history_len <= 0))
        return; /* without archiving, only what history needs */
    char *doc = log_doc(r, m, sid, o ? o->real.full : NULL, kind, 0);
    struct appended *a = malloc(sizeof *a);
    if (!a)
        abort();
    a->node = muc_strdup(r->node);
    a->us = us;
    a->kind = kind;
    if (mp_archive_append_at(muc_domain(), STORE_LOG, r->node, us, o ? o->nick : NULL, doc,
                             strlen(doc), on_appended, a) != MAGPIE_OK) {
        mp_log(MP_LOG_WARN, "muc: could not queue the log of a message of %s", r->jid);
        free(a->node);
        free(a);
    }
    free(doc);
}

/* Log item aid of r is no longer history: without archiving it may go,
 * with everything older (a room's ids increase with time). One delete
 * for many items. */
static void trim_note(struct muc_room *r, int64_t aid)
{
    /* with archiving on, the log is the archive and keeps everything */
    if (r->cfg.mam || !r->cfg.persistent || aid <= 0)
        return;
    if (aid > r->trim_upto)
        r->trim_upto = aid;
    if (++r->trim_pending < 16)
        return;
    r->trim_pending = 0;
    mp_archive_delete(muc_domain(), STORE_LOG, r->node, r->trim_upto, NULL, NULL);
}

void muc_log_dropped(struct muc_room *r, const struct muc_hist *h)
{
    /* an entry whose append has not completed yet is noted when it does */
    trim_note(r, h->aid);
}

void muc_log_delete(const char *node)
{
    if (mp_archive_delete(muc_domain(), STORE_LOG, node, 0, NULL, NULL) != MAGPIE_OK)
        mp_log(MP_LOG_WARN, "muc: could not queue the deletion of the log of %s", node);
}

/* ---- reading items ---- */

/* Parses an item: the message (caller owns) and its log child's fields,
 * copied into the returned stanza (sid, jid may be NULL). The log child
 * is removed. NULL if unreadable. */
static mp_stanza *item_parse(const mp_archive_item *it, const char **sid, const char **jid,
                             char *kind, int *tomb)
{
    mp_stanza *m = mp_stanza_parse(it->data, it->len);
    if (!m)
        return NULL;
    mp_xml *root = mp_stanza_root(m);
    mp_xml *l = mp_xml_find(root, "log", NS_LOG);
    if (strcmp(root->name, "message") != 0 || !l) {
        mp_stanza_unref(m);
        return NULL;
    }
    const char *k = mp_xml_get_attr(l, "k");
    *sid = mp_xml_get_attr(l, "sid");
    *jid = mp_xml_get_attr(l, "jid");
    *kind = k && *k ? *k : 'm';
    *tomb = mp_xml_get_attr(l, "t") != NULL;
    mp_xml_remove(m, l);
    return m;
}

/* ---- history at start ---- */

struct load_ctx {
    struct muc_room *r;
    size_t want;
    mp_archive_item *items;
    size_t n;
};

static void collect_hist(void *ud, const mp_archive_item *it)
{
    struct load_ctx *c = ud;
    const char *sid, *jid;
    char kind;
    int tomb;
    if (c->r->last_ts < it->ts)
        c->r->last_ts = it->ts;
    if (c->r->n_hist >= c->want)
        return;
    mp_stanza *m = item_parse(it, &sid, &jid, &kind, &tomb);
    if (!m)
        return;
    if (kind != 'm' || !sid) {
        mp_stanza_unref(m);
        return;
    }
    /* newest first: shift later */
    struct muc_room *r = c->r;
    struct muc_hist *h = realloc(r->hist, (r->n_hist + 1) * sizeof *h);
    if (!h)
        abort();
    r->hist = h;
    h = &r->hist[r->n_hist++];
    memset(h, 0, sizeof *h);
    h->st = m;
    h->ts = it->ts / 1000000;
    h->us = it->ts;
    h->aid = it->id;
    snprintf(h->sid, sizeof h->sid, "%s", sid);
}

void muc_log_load_history(struct muc_room *r)
{
    struct load_ctx c = {r, r->cfg.history_len > 0 ? (size_t)r->cfg.history_len : 0, NULL, 0};
    /* the newest items, newest first; subjects and notices are skipped,
     * so read a few more than needed. The newest also gives the room's
     * last log time, so that new ids keep increasing across the restart. */
    mp_archive_filter q = {.reverse = 1, .limit = c.want * 2 + 8};
    if (mp_archive_query_sync(muc_domain(), STORE_LOG, r->node, &q, collect_hist, &c) !=
        MAGPIE_OK) {
        mp_log(MP_LOG_WARN, "muc: could not read the history of %s", r->jid);
        return;
    }
    /* oldest first, as the room keeps it */
    for (size_t i = 0, j = r->n_hist ? r->n_hist - 1 : 0; i < j; i++, j--) {
        struct muc_hist t = r->hist[i];
        r->hist[i] = r->hist[j];
        r->hist[j] = t;
    }
}

/* ---- XEP-0313 queries ---- */

/* What a query keeps across its storage calls. */
struct mam_q {
    mp_stanza *iq;     /* referenced */
    char *node, *room; /* the room's localpart and bare JID */
    char *queryid;
    int sees_jids; /* the asker may see real JIDs (decided when asked) */
    /* the form and RSM */
    char *with_nick;
    int64_t ts_from, ts_to;
    size_t max;
    int backward, flip;
    /* ids to turn into archive ids first: after-id, before-id, RSM after,
     * RSM before; then the 'ids' field */
    char *look[4];
    int64_t aid[4];
    char **ids;
    size_t n_ids, at;  /* the lookup under way: 0..3 the four, 4.. ids */
    mp_stanza **found; /* the 'ids' items, as parsed */
    int64_t *found_ts;
    char **found_sid, **found_jid;
};

enum { L_AFTER_ID, L_BEFORE_ID, L_RSM_AFTER, L_RSM_BEFORE };

static void mq_free(struct mam_q *q)
{
    mp_stanza_unref(q->iq);
    free(q->node);
    free(q->room);
    free(q->queryid);
    free(q->with_nick);
    for (int i = 0; i < 4; i++)
        free(q->look[i]);
    for (size_t i = 0; i < q->n_ids; i++) {
        free(q->ids[i]);
        if (q->found && q->found[i])
            mp_stanza_unref(q->found[i]);
        if (q->found_sid)
            free(q->found_sid[i]);
        if (q->found_jid)
            free(q->found_jid[i]);
    }
    free(q->ids);
    free(q->found);
    free(q->found_ts);
    free(q->found_sid);
    free(q->found_jid);
    free(q);
}

static void mq_error(struct mam_q *q, const char *type, const char *cond)
{
    mp_iq_reply_error(q->iq, type, cond);
    mq_free(q);
}

/* Sends one result (XEP-0313 §4.2) for message m (owned by the caller,
 * modified: the real JID is added for askers who may see it). */
static void send_result(struct mam_q *q, mp_stanza *m, const char *sid, const char *jid, int64_t ts)
{
    const struct mp_envelope *env = mp_stanza_envelope(q->iq);
    mp_xml *mr = mp_stanza_root(m);
    mp_xml_set_attr(m, mr, "to", NULL);
    if (q->sees_jids && jid) {
        mp_xml *x = mp_xml_add_child(m, mr, "x", NS_MUC_USER);
        mp_xml_set_attr(m, mp_xml_add_child(m, x, "item", NULL), "jid", jid);
    }
    mp_stanza *w = mp_stanza_new("message", MP_NS_CLIENT);
    mp_xml *root = mp_stanza_root(w);
    char id[24];
    mp_random_id(id, sizeof id);
    mp_xml_set_attr(w, root, "id", id);
    mp_xml_set_attr(w, root, "from", q->room);
    mp_stanza_set_to(w, &env->from);
    mp_xml *res = mp_xml_add_child(w, root, "result", NS_MAM);
    if (q->queryid)
        mp_xml_set_attr(w, res, "queryid", q->queryid);
    mp_xml_set_attr(w, res, "id", sid);
    mp_xml *fw = mp_xml_add_child(w, res, "forwarded", NS_FORWARD);
    char st[40];
    stamp_us(ts, st, sizeof st);
    mp_xml_set_attr(w, mp_xml_add_child(w, fw, "delay", NS_DELAY), "stamp", st);
    mp_xml_add_copy(w, fw, mr);
    mp_route(w);
}

/* The final IQ result with <fin/> (first and last: the ids of the page's
 * oldest and newest items). */
static void send_fin(struct mam_q *q, int complete, const char *first, const char *last)
{
    mp_stanza *res = mp_iq_result(q->iq);
    mp_xml *fin = mp_xml_add_child(res, mp_stanza_root(res), "fin", NS_MAM);
    if (complete)
        mp_xml_set_attr(res, fin, "complete", "true");
    mp_xml *set = mp_xml_add_child(res, fin, "set", NS_RSM);
    if (first && last) {
        mp_xml_add_text(res, mp_xml_add_child(res, set, "first", NULL), first, strlen(first));
        mp_xml_add_text(res, mp_xml_add_child(res, set, "last", NULL), last, strlen(last));
    } else {
        mp_xml_add_text(res, mp_xml_add_child(res, set, "count", NULL), "0", 1);
    }
    mp_iq_reply(res);
}

static void on_page(void *ud, int rc, const mp_archive_item *items, size_t got)
{
    struct mam_q *q = ud;
    if (rc != MAGPIE_OK) {
        mq_error(q, "wait", "internal-server-error");
        return;
    }
    size_t n;
    int complete = muc_page(got, q->max, &n);
    char *first = NULL, *last = NULL;
    for (size_t j = 0; j < n; j++) {
        const mp_archive_item *it = &items[muc_page_index(n, q->backward, q->flip, j)];
        const char *sid, *jid;
        char kind;
        int tomb;
        mp_stanza *m = item_parse(it, &sid, &jid, &kind, &tomb);
        if (!m || !sid) {
            if (m)
                mp_stanza_unref(m);
            continue;
        }
        /* first/last name the page's oldest and newest items, flipped or not */
        size_t chrono = q->flip ? n - 1 - j : j;
        if (chrono == 0)
            muc_set_str(&first, sid);
        if (chrono == n - 1)
            muc_set_str(&last, sid);
        send_result(q, m, sid, jid, it->ts);
        mp_stanza_unref(m);
    }
    send_fin(q, complete, first, last);
    free(first);
    free(last);
    mq_free(q);
}

static void run_page(struct mam_q *q)
{
    mp_archive_filter f = {0};
    f.with = q->with_nick;
    f.ts_from = q->ts_from;
    f.ts_to = q->ts_to;
    f.limit = q->max + 1;
    f.reverse = q->backward;
    /* the tighter of the form's and RSM's bounds */
    int64_t after =
        q->aid[L_AFTER_ID] > q->aid[L_RSM_AFTER] ? q->aid[L_AFTER_ID] : q->aid[L_RSM_AFTER];
    int64_t before = q->aid[L_BEFORE_ID];
    if (q->aid[L_RSM_BEFORE] && (!before || q->aid[L_RSM_BEFORE] < before))
        before = q->aid[L_RSM_BEFORE];
    f.after_id = after;
    f.before_id = before;
    if (mp_archive_query(muc_domain(), STORE_LOG, q->node, &f, on_page, q) != MAGPIE_OK)
        mq_error(q, "wait", "internal-server-error");
}

/* The 'ids' field: the items found, in the order asked. */
static void send_ids(struct mam_q *q)
{
    const char *first = NULL, *last = NULL;
    for (size_t i = 0; i < q->n_ids; i++) {
        size_t k = q->flip ? q->n_ids - 1 - i : i;
        if (!first)
            first = q->found_sid[k];
        last = q->found_sid[k];
        send_result(q, q->found[k], q->found_sid[k], q->found_jid[k], q->found_ts[k]);
    }
    send_fin(q, 1, first, last);
    mq_free(q);
}

static void next_lookup(struct mam_q *q);

static void on_lookup(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct mam_q *q = ud;
    if (rc != MAGPIE_OK) {
        mq_error(q, "wait", "internal-server-error");
        return;
    }
    const char *want = q->at < 4 ? q->look[q->at] : q->ids[q->at - 4];
    for (size_t i = 0; i < n; i++) {
        const char *sid, *jid;
        char kind;
        int tomb;
        mp_stanza *m = item_parse(&items[i], &sid, &jid, &kind, &tomb);
        if (m && sid && strcmp(sid, want) == 0) {
            if (q->at < 4) {
                q->aid[q->at] = items[i].id;
                mp_stanza_unref(m);
            } else {
                size_t k = q->at - 4;
                q->found[k] = m;
                q->found_ts[k] = items[i].ts;
                q->found_sid[k] = muc_strdup(sid);
                q->found_jid[k] = muc_strdup(jid);
            }
            q->at++;
            next_lookup(q);
            return;
        }
        if (m)
            mp_stanza_unref(m);
    }
    /* XEP-0313 §4.1.3, §4.3.2: an id not in the archive */
    mq_error(q, "cancel", "item-not-found");
}

/* Looks up the next id that needs it, or runs the query. */
static void next_lookup(struct mam_q *q)
{
    while (q->at < 4 && !q->look[q->at])
        q->at++;
    if (q->at >= 4 + q->n_ids) {
        if (q->n_ids)
            send_ids(q);
        else
            run_page(q);
        return;
    }
    const char *sid = q->at < 4 ? q->look[q->at] : q->ids[q->at - 4];
    int64_t ts = muc_sid_ts(sid);
    if (ts < 0) {
        mq_error(q, "cancel", "item-not-found");
        return;
    }
    mp_archive_filter f = {.ts_from = ts, .ts_to = ts, .limit = 4};
    if (mp_archive_query(muc_domain(), STORE_LOG, q->node, &f, on_lookup, q) != MAGPIE_OK)
        mq_error(q, "wait", "internal-server-error");
}

/* May the sender of iq read the room's archive (XEP-0313 §6.1.2: whoever
 * may enter it)? Answers and returns 0 if not. Sets *sees_jids. */
static int mam_allowed(struct muc_room *r, mp_stanza *iq, int *sees_jids)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    if (!r->cfg.mam) {
        mp_iq_reply_error(iq, "cancel", "service-unavailable");
        return 0;
    }
    enum muc_affil a = muc_affil_of(r, env->from.bare);
    struct muc_occupant *o = muc_occ_by_jid(r, env->from.full);
    const char *why = NULL;
    if (r->locked && a != AFF_OWNER) {
        mp_iq_reply_error(iq, "cancel", "item-not-found");
        return 0;
    }
    if (a == AFF_OUTCAST)
        why = "You are banned from this room";
    else if (r->cfg.members_only && a < AFF_MEMBER)
        why = "The archive of a members-only room is for its members";
    else if (r->cfg.password && a < AFF_MEMBER && !o)
        why = "Enter the room (it has a password) to read its archive";
    if (why) {
        muc_error(iq, "auth", "forbidden", why);
        return 0;
    }
    *sees_jids = r->cfg.whois_anyone || a >= AFF_ADMIN || (o && o->role == ROLE_MODERATOR);
    return 1;
}

static const char *field_value(mp_stanza *iq, mp_xml *f)
{
    mp_xml *v = mp_xml_find(f, "value", NULL);
    return v ? mp_xml_text(iq, v) : NULL;
}

static long child_long(mp_stanza *iq, mp_xml *el, const char *name, long def)
{
    mp_xml *c = mp_xml_find(el, name, NULL);
    if (!c)
        return def;
    char *end;
    const char *t = mp_xml_text(iq, c);
    long v = strtol(t, &end, 10);
    return *t && !*end && v >= 0 ? v : -1;
}

/* Reads the query form into q; returns NULL or an error condition (with
 * its type in *type). */
static const char *read_query(struct muc_room *r, mp_stanza *iq, mp_xml *query, struct mam_q *q,
                              const char **type)
{
    *type = "modify";
    mp_xml *x = mp_xml_find(query, "x", NS_XDATA);
    for (mp_xml *f = x ? mp_xml_find(x, "field", NULL) : NULL; f;
         f = mp_xml_find_next(f, "field", NULL)) {
        const char *var = mp_xml_get_attr(f, "var");
        const char *v = field_value(iq, f);
        if (!var)
            continue;
        if (strcmp(var, "FORM_TYPE") == 0) {
            if (!v || strcmp(v, NS_MAM) != 0)
                return "bad-request";
        } else if (strcmp(var, "start") == 0 || strcmp(var, "end") == 0) {
            if (!v)
                continue;
            int64_t t = muc_parse_datetime(v);
            if (t < 0)
                return "bad-request";
            if (var[0] == 's')
                q->ts_from = t * 1000000 > 0 ? t * 1000000 : 1;
            else
                q->ts_to = t * 1000000 + 999999; /* the whole second */
        } else if (strcmp(var, "with") == 0) {
            if (!v || !*v)
                continue;
            mp_jid j;
            if (mp_jid_parse(&j, v) != MAGPIE_OK)
                return "jid-malformed";
            int ours = strcmp(j.bare, r->jid) == 0;
            if (ours && j.resource)
                q->with_nick = muc_strdup(j.resource);
            mp_jid_free(&j);
            if (!ours) {
                /* a real JID: the archive is searched by occupant JID only */
                *type = "cancel";
                return "feature-not-implemented";
            }
        } else if (strcmp(var, "after-id") == 0 || strcmp(var, "before-id") == 0) {
            if (v && *v)
                muc_set_str(&q->look[var[0] == 'a' ? L_AFTER_ID : L_BEFORE_ID], v);
        } else if (strcmp(var, "ids") == 0) {
            for (mp_xml *ve = mp_xml_find(f, "value", NULL); ve;
                 ve = mp_xml_find_next(ve, "value", NULL)) {
                char **n = realloc(q->ids, (q->n_ids + 1) * sizeof *n);
                if (!n)
                    abort();
                q->ids = n;
                q->ids[q->n_ids++] = muc_strdup(mp_xml_text(iq, ve));
            }
        } else {
            /* XEP-0313 §4.1.5: a field we do not know */
            *type = "cancel";
            return "feature-not-implemented";
        }
    }
    long page_max = (long)mp_module_opt_int(muc_self, "mam_page_max");
    q->max = (size_t)page_max;
    mp_xml *set = mp_xml_find(query, "set", NS_RSM);
    if (set) {
        long m = child_long(iq, set, "max", page_max);
        if (m < 0)
            return "bad-request";
        q->max = m < page_max ? (size_t)m : (size_t)page_max;
        mp_xml *after = mp_xml_find(set, "after", NULL);
        mp_xml *before = mp_xml_find(set, "before", NULL);
        if (after && before)
            return "bad-request"; /* XEP-0313 §4.3.2: use before-id and after-id */
        if (after) {
            const char *t = mp_xml_text(iq, after);
            if (!*t)
                return "bad-request";
            muc_set_str(&q->look[L_RSM_AFTER], t);
        }
        if (before) {
            /* RSM §2.5: paging backwards; empty: the last page */
            const char *t = mp_xml_text(iq, before);
            q->backward = 1;
            if (*t)
                muc_set_str(&q->look[L_RSM_BEFORE], t);
        }
        if (mp_xml_find(set, "index", NULL))
            return "feature-not-implemented";
    }
    q->flip = mp_xml_find(query, "flip-page", NULL) != NULL;
    if (q->n_ids) {
        if (q->n_ids > (size_t)page_max)
            return "policy-violation";
        q->found = calloc(q->n_ids, sizeof *q->found);
        q->found_ts = calloc(q->n_ids, sizeof *q->found_ts);
        q->found_sid = calloc(q->n_ids, sizeof *q->found_sid);
        q->found_jid = calloc(q->n_ids, sizeof *q->found_jid);
        if (!q->found || !q->found_ts || !q->found_sid || !q->found_jid)
            abort();
    }
    return NULL;
}

void muc_mam_query(struct muc_room *r, mp_stanza *iq)
{
    int sees;
    if (!mam_allowed(r, iq, &sees))
        return;
    mp_xml *query = mp_xml_find(mp_stanza_root(iq), "query", NS_MAM);
    if (!query) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    struct mam_q *q = calloc(1, sizeof *q);
    if (!q)
        abort();
    q->iq = mp_stanza_ref(iq);
    q->node = muc_strdup(r->node);
    q->room = muc_strdup(r->jid);
    q->queryid = muc_strdup(mp_xml_get_attr(query, "queryid"));
    q->sees_jids = sees;
    const char *type, *cond = read_query(r, iq, query, q, &type);
    if (cond) {
        mq_error(q, type, cond);
        return;
    }
    next_lookup(q);
}

/* ---- the form and the metadata (iq get) ---- */

static void form_field(mp_stanza *st, mp_xml *x, const char *var, const char *type)
{
    mp_xml *f = mp_xml_add_child(st, x, "field", NULL);
    mp_xml_set_attr(st, f, "var", var);
    mp_xml_set_attr(st, f, "type", type);
}

struct meta {
    mp_stanza *iq;
    char *node;
    char *first_sid;
    int64_t first_ts;
};

static void meta_free(struct meta *m)
{
    mp_stanza_unref(m->iq);
    free(m->node);
    free(m->first_sid);
    free(m);
}

/* The sid of the first readable item, or NULL. */
static char *first_sid(const mp_archive_item *items, size_t n, int64_t *ts)
{
    for (size_t i = 0; i < n; i++) {
        const char *sid, *jid;
        char kind;
        int tomb;
        mp_stanza *m = item_parse(&items[i], &sid, &jid, &kind, &tomb);
        char *s = m && sid ? muc_strdup(sid) : NULL;
        if (m)
            mp_stanza_unref(m);
        if (s) {
            *ts = items[i].ts;
            return s;
        }
    }
    return NULL;
}

static void on_meta_end(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct meta *m = ud;
    if (rc != MAGPIE_OK) {
        mp_iq_reply_error(m->iq, "wait", "internal-server-error");
        meta_free(m);
        return;
    }
    int64_t ts = 0;
    char *last = first_sid(items, n, &ts);
    mp_stanza *res = mp_iq_result(m->iq);
    mp_xml *md = mp_xml_add_child(res, mp_stanza_root(res), "metadata", NS_MAM);
    if (m->first_sid && last) {
        char st[40];
        mp_xml *s = mp_xml_add_child(res, md, "start", NULL);
        mp_xml_set_attr(res, s, "id", m->first_sid);
        stamp_us(m->first_ts, st, sizeof st);
        mp_xml_set_attr(res, s, "timestamp", st);
        mp_xml *e = mp_xml_add_child(res, md, "end", NULL);
        mp_xml_set_attr(res, e, "id", last);
        stamp_us(ts, st, sizeof st);
        mp_xml_set_attr(res, e, "timestamp", st);
    }
    mp_iq_reply(res);
    free(last);
    meta_free(m);
}

static void on_meta_start(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct meta *m = ud;
    if (rc == MAGPIE_OK)
        m->first_sid = first_sid(items, n, &m->first_ts);
    mp_archive_filter f = {.limit = 4, .reverse = 1};
    if (rc != MAGPIE_OK ||
        mp_archive_query(muc_domain(), STORE_LOG, m->node, &f, on_meta_end, m) != MAGPIE_OK) {
        mp_iq_reply_error(m->iq, "wait", "internal-server-error");
        meta_free(m);
    }
}

void muc_mam_get(struct muc_room *r, mp_stanza *iq)
{
    int sees;
    if (!mam_allowed(r, iq, &sees))
        return;
    mp_xml *el = mp_xml_first_element(mp_stanza_root(iq));
    if (el && strcmp(el->name, "metadata") == 0) {
        /* XEP-0313 §5: the first and the last item */
        struct meta *m = calloc(1, sizeof *m);
        if (!m)
            abort();
        m->iq = mp_stanza_ref(iq);
        m->node = muc_strdup(r->node);
        mp_archive_filter f = {.limit = 4};
        if (mp_archive_query(muc_domain(), STORE_LOG, r->node, &f, on_meta_start, m) != MAGPIE_OK) {
            mp_iq_reply_error(iq, "wait", "internal-server-error");
            meta_free(m);
        }
        return;
    }
    if (!el || strcmp(el->name, "query") != 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    /* XEP-0313 §4.1.5: the fields a query may use */
    mp_stanza *res = mp_iq_result(iq);
    mp_xml *rq = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_MAM);
    mp_xml *x = mp_xml_add_child(res, rq, "x", NS_XDATA);
    mp_xml_set_attr(res, x, "type", "form");
    mp_xml *ft = mp_xml_add_child(res, x, "field", NULL);
    mp_xml_set_attr(res, ft, "var", "FORM_TYPE");
    mp_xml_set_attr(res, ft, "type", "hidden");
    mp_xml_add_text(res, mp_xml_add_child(res, ft, "value", NULL), NS_MAM, strlen(NS_MAM));
    form_field(res, x, "with", "jid-single");
    form_field(res, x, "start", "text-single");
    form_field(res, x, "end", "text-single");
    form_field(res, x, "before-id", "text-single");
    form_field(res, x, "after-id", "text-single");
    mp_xml *ids = mp_xml_add_child(res, x, "field", NULL);
    mp_xml_set_attr(res, ids, "var", "ids");
    mp_xml_set_attr(res, ids, "type", "list-multi");
    mp_xml *val =
        mp_xml_add_child(res, ids, "validate", "http://jabber.org/protocol/xdata-validate");
    mp_xml_set_attr(res, val, "datatype", "xs:string");
    mp_xml_add_child(res, val, "open", NULL);
    mp_iq_reply(res);
}

/* ---- moderation support: one item by stanza id ---- */

struct find_ctx {
    muc_log_found_fn fn;
    void *ud;
    char *sid;
};

static void on_find(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct find_ctx *c = ud;
    int done = 0;
    for (size_t i = 0; rc == MAGPIE_OK && i < n && !done; i++) {
        const char *sid, *jid;
        char kind;
        int tomb;
        mp_stanza *m = item_parse(&items[i], &sid, &jid, &kind, &tomb);
        if (m && sid && strcmp(sid, c->sid) == 0) {
            c->fn(c->ud, MAGPIE_OK, items[i].id, m, jid, kind, tomb);
            done = 1;
        }
        if (m)
            mp_stanza_unref(m);
    }
    if (!done)
        c->fn(c->ud, rc == MAGPIE_OK ? MAGPIE_NOTFOUND : MAGPIE_ERR, 0, NULL, NULL, 0, 0);
    free(c->sid);
    free(c);
}

int muc_log_find(struct muc_room *r, const char *sid, muc_log_found_fn fn, void *ud)
{
    int64_t ts = muc_sid_ts(sid);
    if (ts < 0)
        return MAGPIE_NOTFOUND;
    struct find_ctx *c = malloc(sizeof *c);
    if (!c)
        abort();
    c->fn = fn;
    c->ud = ud;
    c->sid = muc_strdup(sid);
    mp_archive_filter f = {.ts_from = ts, .ts_to = ts, .limit = 4};
    if (mp_archive_query(muc_domain(), STORE_LOG, r->node, &f, on_find, c) != MAGPIE_OK) {
        free(c->sid);
        free(c);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

static void on_replaced(void *ud, int rc)
{
    char *node = ud;
    if (rc != MAGPIE_OK)
        mp_log(MP_LOG_WARN, "muc: could not replace a message of %s@%s by its tombstone", node,
               muc_domain());
    free(node);
}

void muc_log_replace(struct muc_room *r, int64_t aid, mp_stanza *m, const char *sid,
                     const char *jid, char kind)
{
    char *doc = log_doc(r, m, sid, jid, kind, 1);
    char *node = muc_strdup(r->node);
    if (mp_archive_replace(muc_domain(), STORE_LOG, r->node, aid, doc, strlen(doc), on_replaced,
                           node) != MAGPIE_OK)
        free(node);
    free(doc);
}
