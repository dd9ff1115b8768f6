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
 * removed before anything is sent. The archive's 'with' column names the
 * sender twice, "\tn=<nick>\tj=<real bare JID>\t" (a nick holds no
 * control character, a JID no tab), so the 'with' filter finds the
 * messages of an occupant JID room@service/nick (XEP-0313 §4.1.1: the
 * publisher) or of a real bare JID (for askers who may see real JIDs)
 * with one "contains" match.
 *
 * Limits (options): mam_max_messages keeps a room's archive to that many
 * items (the oldest go), mam_retention_days drops items older than that;
 * both are enforced after appends, in one count and one delete.
 *
 * Threads: everything runs on the room's worker; storage callbacks come
 * back there (the loop current at the call). A query keeps what it needs
 * (the room's JID, the asker's rights, decided when it asked), not the
 * room, which may be gone when the results arrive. */
#include "muc.h"

#include <magpie/mam.h>
#include <magpie/proto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_LOG  "muc_log"
#define NS_LOG     "urn:magpie:muc:log:0"

void muc_stamp(struct muc_room *r, int64_t *us, char sid[MUC_SID_MAX])
{
    char rnd[17];
    *us = r->last_ts = muc_next_ts(r->last_ts, mp_now_us());
    mp_random_id(rnd, sizeof rnd);
    muc_sid_format(*us, rnd, sid);
}

int muc_logging(const struct muc_room *r)
{
    return r->cfg.mam || r->cfg.persistent;
}

/* ---- writing ---- */

static void trim_note(struct muc_room *r, int64_t aid);
static void limits_check(struct muc_room *r);

struct appended {
    char *node;
    int64_t us;
    char kind;
};

/* The 'with' filter string of a nick ('n') or a real bare JID ('j'):
 * "\tn=<nick>\t"; malloc'd, caller frees. */
static char *with_part(char what, const char *v)
{
    size_t n = strlen(v) + 5;
    char *s = mp_malloc(n);
    snprintf(s, n, "\t%c=%s\t", what, v);
    return s;
}

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
        if (r)
            limits_check(r);
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
    char *with = NULL;
    if (o) {
        size_t n = strlen(o->nick) + strlen(o->real.bare) + 10;
        with = mp_malloc(n);
        snprintf(with, n, "\tn=%s\tj=%s\t", o->nick, o->real.bare);
    }
    struct appended *a = mp_malloc(sizeof *a);
    a->node = mp_strdup(r->node);
    a->us = us;
    a->kind = kind;
    if (mp_archive_append_at(muc_domain(), STORE_LOG, r->node, us, with, doc, strlen(doc),
                             on_appended, a) != MAGPIE_OK) {
        mp_log(MP_LOG_WARN, "muc: could not queue the log of a message of %s", r->jid);
        free(a->node);
        free(a);
    }
    free(with);
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

/* ---- archive limits ---- */

/* One trim of a room's log under way; a room has at most one size trim
 * at a time (r->trim_busy), so each count sees the deletes before it. */
struct trim {
    char *node;
    int size; /* the size trim (not the retention one) */
};

static void trim_free(struct trim *t)
{
    free(t->node);
    free(t);
}

static void size_trim(struct muc_room *r);

/* A size trim is over: another if appends came meanwhile. */
static void trim_done(struct trim *t)
{
    struct muc_room *r = t->size ? muc_room_get(t->node) : NULL;
    if (r) {
        r->trim_busy = 0;
        if (r->trim_again) {
            r->trim_again = 0;
            size_trim(r);
        }
    }
    trim_free(t);
}

static void on_trim_deleted(void *ud, int rc)
{
    (void)rc;
    trim_done(ud);
}

static void on_trim_items(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct trim *t = ud;
    if (rc != MAGPIE_OK || n == 0 ||
        mp_archive_delete(muc_domain(), STORE_LOG, t->node, items[n - 1].id, on_trim_deleted, t) !=
            MAGPIE_OK)
        trim_done(t);
}

/* Fetches the items of t's room matching f and deletes up to the last of
 * them; takes t. */
static void trim_upto(struct trim *t, mp_archive_filter *f)
{
    if (mp_archive_query(muc_domain(), STORE_LOG, t->node, f, on_trim_items, t) != MAGPIE_OK)
        trim_done(t);
}

static void on_trim_count(void *ud, int rc, int64_t n)
{
    struct trim *t = ud;
    long max = (long)mp_module_opt_int(muc_self, "mam_max_messages");
    if (rc != MAGPIE_OK || n <= max) {
        trim_done(t);
        return;
    }
    /* the oldest n - max items go, at most 1,000 at a time */
    int64_t excess = n - max;
    mp_archive_filter f = {.limit = excess < 1000 ? (size_t)excess : 1000};
    trim_upto(t, &f);
}

static struct trim *trim_new(struct muc_room *r, int size)
{
    struct trim *t = mp_calloc(1, sizeof *t);
    t->node = mp_strdup(r->node);
    t->size = size;
    return t;
}

/* mam_max_messages: count, then delete the oldest beyond it. */
static void size_trim(struct muc_room *r)
{
    if (r->trim_busy) {
        r->trim_again = 1;
        return;
    }
    struct trim *t = trim_new(r, 1);
    r->trim_busy = 1;
    if (mp_archive_count(muc_domain(), STORE_LOG, r->node, NULL, on_trim_count, t) != MAGPIE_OK)
        trim_done(t);
}

/* Enforces mam_max_messages and mam_retention_days on an archiving room's
 * log, every few appends (every append for small limits, so the archive
 * never stays above its size for long). */
static void limits_check(struct muc_room *r)
{
    if (!r->cfg.mam)
        return;
    long max = (long)mp_module_opt_int(muc_self, "mam_max_messages");
    long days = (long)mp_module_opt_int(muc_self, "mam_retention_days");
    long every = max > 0 && max / 8 < 64 ? max / 8 : 64;
    if (every < 1)
        every = 1;
    if (r->mam_appends++ % every != 0)
        return;
    if (days > 0) {
        /* items are numbered in time order in a room: delete up to the
         * newest that is too old */
        mp_archive_filter f = {
            .ts_to = mp_now_us() - (int64_t)days * 86400 * 1000000, .reverse = 1, .limit = 1};
        trim_upto(trim_new(r, 0), &f);
    }
    if (max > 0)
        size_trim(r);
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
    struct muc_hist *h = mp_realloc(r->hist, (r->n_hist + 1) * sizeof *h);
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

/* ---- XEP-0313 queries and metadata: magpie/mam.h ---- */

/* What a query keeps (decided when asked): not the room, which may be
 * gone when the results arrive. NULL for metadata. */
struct mam_ctx {
    char *room;    /* the room's bare JID */
    int sees_jids; /* the asker may see real JIDs */
};

/* A log item as a result shows it: without 'to', with the sender's real
 * JID for askers who may see it. */
static mp_stanza *mam_item(void *ud, const mp_archive_item *it, const char **sid, int *in_set)
{
    (void)in_set;
    struct mam_ctx *c = ud;
    const char *jid;
    char kind;
    int tomb;
    mp_stanza *m = item_parse(it, sid, &jid, &kind, &tomb);
    if (m && !*sid) {
        mp_stanza_unref(m);
        return NULL;
    }
    if (m && c) {
        mp_xml *mr = mp_stanza_root(m);
        mp_xml_set_attr(m, mr, "to", NULL);
        if (c->sees_jids && jid) {
            mp_xml *x = mp_xml_add_child(m, mr, "x", NS_MUC_USER);
            mp_xml_set_attr(m, mp_xml_add_child(m, x, "item", NULL), "jid", jid);
        }
    }
    return m;
}

/* The 'with' field (XEP-0313 §4.1.1): an occupant JID room@service/nick
 * finds what that nick published; a real JID (its bare part) what that
 * user published, for askers who may see real JIDs (a non-anonymous room,
 * or a moderator). */
static const char *mam_with(void *ud, const char *v, struct mp_mam_with *w, const char **type)
{
    struct mam_ctx *c = ud;
    mp_jid j;
    if (mp_jid_parse(&j, v) != MAGPIE_OK)
        return "jid-malformed";
    const char *cond = NULL;
    if (strcmp(j.bare, c->room) == 0) {
        /* the room's own JID: every message */
        if (j.resource) {
            free(w->has);
            w->has = with_part('n', j.resource);
        }
    } else if (c->sees_jids) {
        free(w->has);
        w->has = with_part('j', j.bare);
    } else {
        /* a semi-anonymous room does not tell who is behind a nick */
        *type = "auth";
        cond = "forbidden";
    }
    mp_jid_free(&j);
    return cond;
}

static void mam_done(void *ud, int rc)
{
    (void)rc;
    struct mam_ctx *c = ud;
    if (c)
        free(c->room);
    free(c);
}

static const struct mp_mam_ops mam_ops = {
    .item = mam_item, .sid_ts = muc_sid_ts, .with = mam_with, .done = mam_done};

/* The room's archive. */
static struct mp_mam_archive mam_archive(const struct muc_room *r)
{
    long most = (long)mp_module_opt_int(muc_self, "mam_max_messages");
    return (struct mp_mam_archive){
        .host = muc_domain(),
        .store = STORE_LOG,
        .key = r->node,
        .jid = r->jid,
        .page_max = (size_t)mp_module_opt_int(muc_self, "mam_page_max"),
        /* reading an index means reading every item before it */
        .index_max = most > 0 ? most : 10000,
        .flags = MP_MAM_END_SECOND | MP_MAM_INDEX,
    };
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
    struct mam_ctx *c = mp_calloc(1, sizeof *c);
    c->room = mp_strdup(r->jid);
    c->sees_jids = sees;
    struct mp_mam_archive a = mam_archive(r);
    mp_mam_query(iq, query, &a, &mam_ops, c);
}

/* ---- the form and the metadata (iq get) ---- */

void muc_mam_get(struct muc_room *r, mp_stanza *iq)
{
    int sees;
    if (!mam_allowed(r, iq, &sees))
        return;
    mp_xml *el = mp_xml_first_element(mp_stanza_root(iq));
    if (el && strcmp(el->name, "metadata") == 0) {
        /* XEP-0313 §5: the first and the last item */
        struct mp_mam_archive a = mam_archive(r);
        mp_mam_metadata(iq, &a, &mam_ops, NULL);
        return;
    }
    if (!el || strcmp(el->name, "query") != 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    /* XEP-0313 §4.1.5: the fields a query may use */
    mp_stanza *res = mp_iq_result(iq);
    mp_xml *ids = mp_mam_form_add(res, mp_stanza_root(res));
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
    struct find_ctx *c = mp_malloc(sizeof *c);
    c->fn = fn;
    c->ud = ud;
    c->sid = mp_strdup(sid);
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
    char *node = mp_strdup(r->node);
    if (mp_archive_replace(muc_domain(), STORE_LOG, r->node, aid, doc, strlen(doc), on_replaced,
                           node) != MAGPIE_OK)
        free(node);
    free(doc);
}
