/* room.c - rooms and occupants (XEP-0045 §7): entering, presence
 * broadcast, nick changes, leaving, groupchat fan-out, private messages,
 * the subject, history for newcomers, invitations and self-ping.
 *
 * Every function here runs on the room's worker (muc.h). Stanzas sent to
 * several occupants are built once and shared: each recipient gets an
 * envelope copy (mp_stanza_copy_envelope: its own root with its own 'to',
 * the children shared), never a copy of the payload. */
#include "muc.h"

#include <magpie/proto.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- small helpers ---- */

void muc_set_str(char **dst, const char *s)
{
    char *n = mp_strdup(s);
    free(*dst);
    *dst = n;
}

void muc_add_status(mp_stanza *st, mp_xml *x, int code)
{
    char v[16];
    snprintf(v, sizeof v, "%d", code);
    mp_xml_set_attr(st, mp_xml_add_child(st, x, "status", NS_MUC_USER), "code", v);
}

void muc_error(mp_stanza *st, const char *type, const char *cond, const char *text)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->type == MP_TYPE_ERROR || (env->kind == MP_KIND_IQ && env->type == MP_TYPE_RESULT))
        return;
    mp_stanza *e = mp_stanza_copy(st);
    mp_stanza_make_error(e, type, cond, text);
    mp_route(e);
}

static void set_from_nick(mp_stanza *st, struct muc_room *r, const char *nick)
{
    size_t l = strlen(r->jid) + 1 + (nick ? strlen(nick) : 0) + 1;
    char *buf = mp_malloc(l);
    snprintf(buf, l, nick ? "%s/%s" : "%s", r->jid, nick ? nick : "");
    mp_xml_set_attr(st, mp_stanza_root(st), "from", buf);
    free(buf);
}

/* Sends shared (kept by the caller) to one recipient: an envelope copy
 * with its own 'to', the payload shared. */
static void send_copy(mp_stanza *shared, const mp_jid *to)
{
    mp_stanza *c = mp_stanza_copy_envelope(shared);
    mp_stanza_set_to(c, to);
    mp_route(c);
}

static int64_t now_unix(void)
{
    return (int64_t)time(NULL);
}

/* ---- rooms ---- */

struct muc_room *muc_room_new(const char *node)
{
    struct muc_room *r = mp_calloc(1, sizeof *r);
    r->node = mp_strdup(node);
    size_t l = strlen(node) + 1 + strlen(muc_domain()) + 1;
    r->jid = mp_malloc(l);
    snprintf(r->jid, l, "%s@%s", node, muc_domain());
    muc_config_defaults(&r->cfg);
    mp_random_id(r->salt, sizeof r->salt);
    return r;
}

/* Sends st (built without 'to'; taken) to every session of o: copies to
 * the further sessions, st itself to the first. */
void muc_occ_send(const struct muc_occupant *o, mp_stanza *st)
{
    for (size_t i = 0; i < o->n_more; i++) {
        mp_stanza *c = mp_stanza_copy(st);
        mp_stanza_set_to(c, &o->more[i]);
        mp_route(c);
    }
    mp_stanza_set_to(st, &o->real);
    mp_route(st);
}

/* Sends shared (kept by the caller, its envelope parsed) to every session
 * of o, an envelope copy each. */
static void occ_send_copy(mp_stanza *shared, const struct muc_occupant *o)
{
    send_copy(shared, &o->real);
    for (size_t i = 0; i < o->n_more; i++)
        send_copy(shared, &o->more[i]);
}

/* Index of session full among o's: 0 the first, 1.. the further ones
 * (more[i - 1]); -1 if not o's. */
static long occ_session(const struct muc_occupant *o, const char *full)
{
    if (strcmp(o->real.full, full) == 0)
        return 0;
    for (size_t i = 0; i < o->n_more; i++)
        if (strcmp(o->more[i].full, full) == 0)
            return (long)i + 1;
    return -1;
}

/* Removes session k (occ_session) of an occupant that has more than one;
 * the last further session takes the place of a first one that goes. */
static void occ_drop_session(struct muc_occupant *o, long k)
{
    mp_jid *gone = k == 0 ? &o->real : &o->more[k - 1];
    mp_jid_free(gone);
    *gone = o->more[--o->n_more];
}

static void occ_free(struct muc_occupant *o)
{
    free(o->nick);
    mp_jid_free(&o->real);
    for (size_t i = 0; i < o->n_more; i++)
        mp_jid_free(&o->more[i]);
    free(o->more);
    if (o->pres)
        mp_stanza_unref(o->pres);
    free(o);
}

void muc_room_free(struct muc_room *r)
{
    for (size_t i = 0; i < r->n_occ; i++)
        occ_free(r->occ[i]);
    free(r->occ);
    for (size_t i = 0; i < r->n_aff; i++) {
        free(r->aff[i].jid);
        free(r->aff[i].nick);
        free(r->aff[i].reason);
    }
    free(r->aff);
    for (size_t i = 0; i < r->n_hist; i++)
        mp_stanza_unref(r->hist[i].st);
    free(r->hist);
    free(r->cfg.name);
    free(r->cfg.desc);
    free(r->cfg.password);
    free(r->subject);
    free(r->subject_nick);
    free(r->node);
    free(r->jid);
    free(r);
}

int muc_room_gc(struct muc_room *r)
{
    if (r->n_occ > 0 || r->cfg.persistent)
        return 0;
    muc_room_drop(r);
    muc_log_delete(r->node); /* a temporary room's log goes with it */
    muc_room_free(r);
    return 1;
}

void muc_history_trim(struct muc_room *r)
{
    size_t keep = r->cfg.history_len > 0 ? (size_t)r->cfg.history_len : 0;
    if (r->n_hist <= keep)
        return;
    size_t drop = r->n_hist - keep;
    for (size_t i = 0; i < drop; i++) {
        muc_log_dropped(r, &r->hist[i]);
        mp_stanza_unref(r->hist[i].st);
    }
    memmove(r->hist, r->hist + drop, keep * sizeof *r->hist);
    r->n_hist = keep;
}

/* ---- occupants and affiliations ---- */

struct muc_occupant *muc_occ_by_nick(struct muc_room *r, const char *nick)
{
    for (size_t i = 0; i < r->n_occ; i++)
        if (strcmp(r->occ[i]->nick, nick) == 0)
            return r->occ[i];
    return NULL;
}

struct muc_occupant *muc_occ_by_jid(struct muc_room *r, const char *full)
{
    for (size_t i = 0; i < r->n_occ; i++)
        if (occ_session(r->occ[i], full) >= 0)
            return r->occ[i];
    return NULL;
}

static void occ_unlink(struct muc_room *r, struct muc_occupant *o)
{
    for (size_t i = 0; i < r->n_occ; i++)
        if (r->occ[i] == o) {
            memmove(r->occ + i, r->occ + i + 1, (r->n_occ - i - 1) * sizeof *r->occ);
            r->n_occ--;
            return;
        }
}

static struct muc_affil_item *affil_find(struct muc_room *r, const char *bare)
{
    for (size_t i = 0; i < r->n_aff; i++)
        if (strcmp(r->aff[i].jid, bare) == 0)
            return &r->aff[i];
    return NULL;
}

enum muc_affil muc_affil_of(struct muc_room *r, const char *bare)
{
    struct muc_affil_item *a = affil_find(r, bare);
    return a ? a->affil : AFF_NONE;
}

void muc_affil_set(struct muc_room *r, const char *bare, enum muc_affil a, const char *reason)
{
    struct muc_affil_item *it = affil_find(r, bare);
    if (a == AFF_NONE) {
        if (!it)
            return;
        free(it->jid);
        free(it->nick);
        free(it->reason);
        size_t i = (size_t)(it - r->aff);
        memmove(r->aff + i, r->aff + i + 1, (r->n_aff - i - 1) * sizeof *r->aff);
        r->n_aff--;
        return;
    }
    if (!it) {
        r->aff = mp_realloc(r->aff, (r->n_aff + 1) * sizeof *r->aff);
        it = &r->aff[r->n_aff++];
        memset(it, 0, sizeof *it);
        it->jid = mp_strdup(bare);
    }
    it->affil = a;
    muc_set_str(&it->reason, reason);
}

size_t muc_count_affil(struct muc_room *r, enum muc_affil a)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_aff; i++)
        n += r->aff[i].affil == a;
    return n;
}

/* XEP-0421: an id stable for one user in one room and revealing nothing
 * about the JID: a hash of the room's random salt, the room and the bare
 * JID. */
static void occupant_id(struct muc_room *r, const char *bare, char out[40])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c)
        abort();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    EVP_DigestUpdate(c, r->salt, strlen(r->salt));
    EVP_DigestUpdate(c, "\n", 1);
    EVP_DigestUpdate(c, r->jid, strlen(r->jid));
    EVP_DigestUpdate(c, "\n", 1);
    EVP_DigestUpdate(c, bare, strlen(bare));
    EVP_DigestFinal_ex(c, md, &mdlen);
    EVP_MD_CTX_free(c);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[32] = 0;
}

static void add_occupant_id(mp_stanza *st, mp_xml *parent, const struct muc_occupant *o)
{
    mp_xml *e = mp_xml_add_child(st, parent, "occupant-id", NS_OCCUPANT_ID);
    mp_xml_set_attr(st, e, "id", o->occupant_id);
}

static int is_el(const mp_xml *c, const char *name, const char *ns)
{
    return c->type == MP_XML_ELEMENT && strcmp(c->name, name) == 0 && c->ns &&
           strcmp(c->ns, ns) == 0;
}

/* ---- presence ---- */

struct pres_opts {
    int unavailable;
    int with_jid;
    const int *codes;
    size_t n_codes;
    const char *new_nick;   /* 303: the new nick in <item nick=/> */
    const char *actor_nick; /* kick/ban: <actor nick=/> */
    const char *reason;
};

/* Builds o's presence as an occupant sees it (from room/nick, no 'to'):
 * the client's own children (show, status, ... but not its <x/> join
 * element nor an occupant-id it made up), <x muc#user> with the item
 * and the status codes, and o's occupant id. Returns a new stanza. */
static mp_stanza *occ_presence(struct muc_room *r, const struct muc_occupant *o,
                               const struct pres_opts *po)
{
    mp_stanza *p = mp_stanza_new("presence", MP_NS_CLIENT);
    mp_xml *root = mp_stanza_root(p);
    set_from_nick(p, r, o->nick);
    if (po->unavailable) {
        mp_xml_set_attr(p, root, "type", "unavailable");
        /* a leave keeps the client's <status/> */
        const char *t = o->pres ? mp_xml_get_attr(mp_stanza_root(o->pres), "type") : NULL;
        mp_xml *st = t && strcmp(t, "unavailable") == 0
                         ? mp_xml_find(mp_stanza_root(o->pres), "status", NULL)
                         : NULL;
        if (st)
            mp_xml_add_copy(p, root, st);
    } else if (o->pres) {
        for (mp_xml *c = mp_stanza_root(o->pres)->children; c; c = c->next)
            if (c->type == MP_XML_ELEMENT && !is_el(c, "x", NS_MUC) &&
                !is_el(c, "x", NS_MUC_USER) && !is_el(c, "occupant-id", NS_OCCUPANT_ID))
                mp_xml_add_copy(p, root, c);
    }
    mp_xml *x = mp_xml_add_child(p, root, "x", NS_MUC_USER);
    mp_xml *item = mp_xml_add_child(p, x, "item", NULL);
    mp_xml_set_attr(p, item, "affiliation", muc_affil_name(muc_affil_of(r, o->real.bare)));
    mp_xml_set_attr(p, item, "role", muc_role_name(po->unavailable ? ROLE_NONE : o->role));
    if (po->with_jid)
        mp_xml_set_attr(p, item, "jid", o->real.full);
    if (po->new_nick)
        mp_xml_set_attr(p, item, "nick", po->new_nick);
    if (po->actor_nick)
        mp_xml_set_attr(p, mp_xml_add_child(p, item, "actor", NULL), "nick", po->actor_nick);
    if (po->reason)
        mp_xml_add_text(p, mp_xml_add_child(p, item, "reason", NULL), po->reason,
                        strlen(po->reason));
    for (size_t i = 0; i < po->n_codes; i++)
        muc_add_status(p, x, po->codes[i]);
    add_occupant_id(p, root, o);
    return p;
}

static int sees_jids(struct muc_room *r, const struct muc_occupant *viewer)
{
    return r->cfg.whois_anyone || viewer->role == ROLE_MODERATOR;
}

/* Sends o's presence (po, without with_jid) to every occupant but o: two
 * variants at most (with and without the real JID), each built once and
 * shared. Then, if self_codes is not NULL, o's own copy with those codes
 * (110 and others) instead of po's. */
static void broadcast(struct muc_room *r, struct muc_occupant *o, struct pres_opts po,
                      const int *self_codes, size_t n_self)
{
    mp_stanza *variant[2] = {NULL, NULL};
    for (size_t i = 0; i < r->n_occ; i++) {
        struct muc_occupant *x = r->occ[i];
        if (x == o)
            continue;
        int j = sees_jids(r, x);
        if (!variant[j]) {
            po.with_jid = j;
            variant[j] = occ_presence(r, o, &po);
            mp_stanza_envelope(variant[j]);
        }
        occ_send_copy(variant[j], x);
    }
    for (int j = 0; j < 2; j++)
        if (variant[j])
            mp_stanza_unref(variant[j]);
    if (self_codes) {
        po.with_jid = 1;
        po.codes = self_codes;
        po.n_codes = n_self;
        muc_occ_send(o, occ_presence(r, o, &po));
    }
}

void muc_broadcast_presence(struct muc_room *r, struct muc_occupant *o, const int *codes, size_t n)
{
    int self[8];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 7; i++)
        self[k++] = codes[i];
    self[k++] = 110;
    struct pres_opts po = {0, 0, codes, n, NULL, NULL, NULL};
    broadcast(r, o, po, self, k);
}

void muc_remove_occupant(struct muc_room *r, struct muc_occupant *o, const int *codes, size_t n,
                         const char *actor_nick, const char *reason)
{
    int self[8];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 7; i++)
        self[k++] = codes[i];
    self[k++] = 110;
    struct pres_opts po = {1, 0, codes, n, NULL, actor_nick, reason};
    /* 333: the occupant's server answered with an error; it gets nothing */
    int gone = n == 1 && codes[0] == 333;
    broadcast(r, o, po, gone ? NULL : self, k);
    occ_unlink(r, o);
    occ_free(o);
}

/* Sends every other occupant's presence to o's session to (entering,
 * §7.2.3). */
static void send_occupants_to(struct muc_room *r, struct muc_occupant *o, const mp_jid *to)
{
    for (size_t i = 0; i < r->n_occ; i++) {
        struct muc_occupant *x = r->occ[i];
        if (x == o)
            continue;
        struct pres_opts po = {0, sees_jids(r, o), NULL, 0, NULL, NULL, NULL};
        mp_stanza *p = occ_presence(r, x, &po);
        mp_stanza_set_to(p, to);
        mp_route(p);
    }
}

/* ---- history (§7.2.15) ---- */

static void history_add(struct muc_room *r, mp_stanza *st, int64_t us, const char *sid)
{
    if (r->cfg.history_len <= 0)
        return;
    if (r->n_hist >= (size_t)r->cfg.history_len) {
        muc_log_dropped(r, &r->hist[0]);
        mp_stanza_unref(r->hist[0].st);
        memmove(r->hist, r->hist + 1, (r->n_hist - 1) * sizeof *r->hist);
        r->n_hist--;
    }
    r->hist = mp_realloc(r->hist, (r->n_hist + 1) * sizeof *r->hist);
    struct muc_hist *h = &r->hist[r->n_hist++];
    memset(h, 0, sizeof *h);
    h->st = mp_stanza_ref(st);
    h->ts = now_unix();
    h->us = us;
    snprintf(h->sid, sizeof h->sid, "%s", sid);
}

static long attr_long(const mp_xml *el, const char *name)
{
    const char *v = mp_xml_get_attr(el, name);
    if (!v || !*v)
        return -1;
    char *end;
    long n = strtol(v, &end, 10);
    return *end || n < 0 ? -1 : n;
}

/* The history a joiner asked for (join, its presence) to its session to. */
static void send_history(struct muc_room *r, const mp_jid *to, mp_stanza *join)
{
    if (r->n_hist == 0)
        return;
    struct muc_hist_req req = {-1, -1, -1, -1};
    mp_xml *x = mp_xml_find(mp_stanza_root(join), "x", NS_MUC);
    mp_xml *h = x ? mp_xml_find(x, "history", NS_MUC) : NULL;
    if (h) {
        req.maxchars = attr_long(h, "maxchars");
        req.maxstanzas = attr_long(h, "maxstanzas");
        req.seconds = attr_long(h, "seconds");
        const char *since = mp_xml_get_attr(h, "since");
        int64_t us;
        if (since)
            req.since = mp_datetime_parse(since, &us) == 0 ? us / 1000000 : -1;
    }
    struct muc_hist_meta *meta = mp_calloc(r->n_hist, sizeof *meta);
    for (size_t i = 0; i < r->n_hist; i++) {
        meta[i].ts = r->hist[i].ts;
        if (req.maxchars >= 0) {
            char *s = mp_xml_to_string(mp_stanza_root(r->hist[i].st), MP_NS_CLIENT);
            meta[i].chars = s ? strlen(s) : 0;
            free(s);
        }
    }
    size_t first = muc_history_select(meta, r->n_hist, &req, now_unix());
    free(meta);
    for (size_t i = first; i < r->n_hist; i++) {
        /* a delay child is added: this copy is the joiner's own */
        mp_stanza *c = mp_stanza_copy(r->hist[i].st);
        mp_delay_add(c, mp_stanza_root(c), r->jid,
                     r->hist[i].us ? r->hist[i].us : r->hist[i].ts * 1000000, NULL);
        mp_stanza_set_to(c, to);
        mp_route(c);
    }
}

/* The subject as a newcomer gets it (§7.2.16): always sent, empty if none. */
static mp_stanza *subject_message(struct muc_room *r)
{
    mp_stanza *m = mp_stanza_new_client("message", "groupchat", NULL, NULL);
    mp_xml *root = mp_stanza_root(m);
    set_from_nick(m, r, r->subject_nick);
    mp_xml *s = mp_xml_add_child(m, root, "subject", NULL);
    if (r->subject)
        mp_xml_add_text(m, s, r->subject, strlen(r->subject));
    return m;
}

/* ---- entering ---- */

static const char *join_refusal(struct muc_room *r, mp_stanza *st, const char **type)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    enum muc_affil a = muc_affil_of(r, env->from.bare);
    *type = "auth";
    if (r->locked && a != AFF_OWNER) {
        *type = "cancel";
        return "item-not-found"; /* §10.1.1: a locked room does not exist yet */
    }
    if (a == AFF_OUTCAST)
        return "forbidden";
    if (r->cfg.members_only && a < AFF_MEMBER)
        return "registration-required";
    if (r->cfg.password) {
        mp_xml *x = mp_xml_find(mp_stanza_root(st), "x", NS_MUC);
        mp_xml *pw = x ? mp_xml_find(x, "password", NS_MUC) : NULL;
        if (!pw || strcmp(mp_xml_text(st, pw), r->cfg.password) != 0)
            return "not-authorized";
    }
    *type = "cancel";
    struct muc_occupant *holder = muc_occ_by_nick(r, env->to.resource);
    if (holder)
        /* the same user from another session shares the nick */
        return strcmp(holder->real.bare, env->from.bare) == 0 ? NULL : "conflict";
    /* a nick reserved by a member (§7.10, §7.12) is theirs */
    if (muc_nick_reserved_by_other(r, env->to.resource, env->from.bare))
        return "conflict";
    if (r->cfg.max_users > 0 && r->n_occ >= (size_t)r->cfg.max_users && a < AFF_ADMIN) {
        *type = "wait";
        return "service-unavailable";
    }
    return NULL;
}

/* The codes of an occupant's self-presence on entering (§7.2). */
static size_t entering_codes(struct muc_room *r, int created, int codes[4])
{
    size_t k = 0;
    if (r->cfg.whois_anyone)
        codes[k++] = 100;
    codes[k++] = 110;
    if (created)
        codes[k++] = 201;
    if (r->cfg.mam)
        codes[k++] = 170; /* §7.2.12: the discussion is logged (archived) */
    return k;
}

/* Another session of o's user enters with o's nick (multi-session
 * occupant): it joins o and gets what an entering occupant gets (the
 * others' presence, its own with 110, history, subject); the others see
 * no change. */
static void add_session(struct muc_room *r, struct muc_occupant *o, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    o->more = mp_realloc(o->more, (o->n_more + 1) * sizeof *o->more);
    if (mp_jid_copy(&o->more[o->n_more], &env->from) != MAGPIE_OK)
        abort();
    o->n_more++;
    send_occupants_to(r, o, &env->from);
    int self[4];
    struct pres_opts po = {0, 1, self, entering_codes(r, 0, self), NULL, NULL, NULL};
    mp_stanza *p = occ_presence(r, o, &po);
    mp_stanza_set_to(p, &env->from);
    mp_route(p);
    send_history(r, &env->from, st);
    mp_stanza *subj = subject_message(r);
    mp_stanza_set_to(subj, &env->from);
    mp_route(subj);
}

/* Session full of o leaves: with other sessions left it alone gets the
 * unavailable self-presence and the occupant stays. Returns 1 then. */
static int leave_session(struct muc_room *r, struct muc_occupant *o, const char *full, int tell)
{
    long k = occ_session(o, full);
    if (o->n_more == 0 || k < 0)
        return 0;
    if (tell) {
        int self = 110;
        struct pres_opts po = {1, 1, &self, 1, NULL, NULL, NULL};
        mp_stanza *p = occ_presence(r, o, &po);
        mp_stanza_set_to(p, k == 0 ? &o->real : &o->more[k - 1]);
        mp_route(p);
    }
    occ_drop_session(o, k);
    return 1;
}

static void join(struct muc_room *r, mp_stanza *st, int created)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    const char *type, *cond = created ? NULL : join_refusal(r, st, &type);
    if (cond) {
        muc_error(st, type, cond, NULL);
        return;
    }
    struct muc_occupant *o = created ? NULL : muc_occ_by_nick(r, env->to.resource);
    if (o) {
        add_session(r, o, st);
        return;
    }
    o = mp_calloc(1, sizeof *o);
    o->nick = mp_strdup(env->to.resource);
    if (mp_jid_copy(&o->real, &env->from) != MAGPIE_OK)
        abort();
    o->role = muc_default_role(muc_affil_of(r, env->from.bare), r->cfg.moderated);
    o->pres = mp_stanza_ref(st);
    occupant_id(r, env->from.bare, o->occupant_id);

    send_occupants_to(r, o, &o->real);
    r->occ = mp_realloc(r->occ, (r->n_occ + 1) * sizeof *r->occ);
    r->occ[r->n_occ++] = o;
    int self[4];
    size_t k = entering_codes(r, created, self);
    struct pres_opts po = {0, 0, NULL, 0, NULL, NULL, NULL};
    broadcast(r, o, po, self, k);
    send_history(r, &o->real, st);
    mp_stanza *subj = subject_message(r);
    mp_stanza_set_to(subj, &o->real);
    mp_route(subj);
}

void muc_room_create_join(const char *node, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!muc_may_create(&env->from)) {
        muc_error(st, "cancel", "not-allowed", "Room creation is restricted");
        return;
    }
    struct muc_room *r = muc_room_new(node);
    /* §10.1: a client that speaks MUC gets a locked room to configure
     * (or to accept as is); one that does not (no <x/>) an instant room */
    r->locked = mp_module_opt_bool(muc_self, "lock_new_rooms") &&
                mp_xml_find(mp_stanza_root(st), "x", NS_MUC) != NULL;
    muc_affil_set(r, env->from.bare, AFF_OWNER, NULL);
    /* a log left by an earlier room of that name (a crash, or a delete
     * still queued) is not this room's: the storage runs this first */
    muc_log_delete(node);
    muc_room_put(r);
    join(r, st, 1);
    if (!r->locked)
        muc_store_save(r);
}

/* ---- presence to the room ---- */

static int is_delivery_failure(mp_stanza *st)
{
    static const char *const conds[] = {"service-unavailable", "recipient-unavailable",
                                        "item-not-found",      "remote-server-not-found",
                                        "remote-server-timeout", "gone", "redirect"};
    mp_xml *e = mp_xml_find(mp_stanza_root(st), "error", NULL);
    if (!e)
        return 0;
    for (mp_xml *c = e->children; c; c = c->next)
        if (c->type == MP_XML_ELEMENT && c->ns && strcmp(c->ns, MP_NS_STANZA_ERRORS) == 0)
            for (size_t i = 0; i < sizeof conds / sizeof *conds; i++)
                if (strcmp(c->name, conds[i]) == 0)
                    return 1;
    return 0;
}

/* An error from an occupant's own JID (its server bounced what the room
 * sent, the session is gone): the occupant leaves (status 333). Returns
 * 1 if the room was freed. */
static int error_from(struct muc_room *r, mp_stanza *st)
{
    const char *full = mp_stanza_envelope(st)->from.full;
    struct muc_occupant *o = muc_occ_by_jid(r, full);
    if (!o || !is_delivery_failure(st))
        return 0;
    if (leave_session(r, o, full, 0))
        return 0; /* that session is gone, the occupant's others stay */
    int code = 333;
    muc_remove_occupant(r, o, &code, 1, NULL, NULL);
    return muc_room_gc(r);
}

static void change_nick(struct muc_room *r, struct muc_occupant *o, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    const char *nick = env->to.resource;
    int reserved = 0;
    for (size_t i = 0; i < r->n_aff; i++)
        if (r->aff[i].nick && strcmp(r->aff[i].nick, nick) == 0 &&
            strcmp(r->aff[i].jid, o->real.bare) != 0)
            reserved = 1;
    if (muc_occ_by_nick(r, nick) || reserved) {
        muc_error(st, "cancel", "conflict", NULL);
        return;
    }
    /* §7.6: unavailable with the new nick and 303, then available */
    int code = 303, self[2] = {303, 110};
    struct pres_opts po = {1, 0, &code, 1, nick, NULL, NULL};
    broadcast(r, o, po, self, 2);
    muc_set_str(&o->nick, nick);
    if (o->pres)
        mp_stanza_unref(o->pres);
    o->pres = mp_stanza_ref(st);
    muc_broadcast_presence(r, o, NULL, 0);
}

void muc_room_presence(struct muc_room *r, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    struct muc_occupant *o = muc_occ_by_jid(r, env->from.full);
    switch (env->type) {
    case MP_TYPE_ERROR:
        error_from(r, st);
        return;
    case MP_TYPE_UNAVAILABLE:
        if (!o || leave_session(r, o, env->from.full, 1))
            return;
        if (o->pres)
            mp_stanza_unref(o->pres);
        o->pres = mp_stanza_ref(st); /* its <status/> goes with the leave */
        {
            struct pres_opts po = {1, 0, NULL, 0, NULL, NULL, NULL};
            int self = 110;
            broadcast(r, o, po, &self, 1);
        }
        occ_unlink(r, o);
        occ_free(o);
        muc_room_gc(r);
        return;
    case MP_TYPE_NONE:
        break;
    default:
        return; /* subscriptions and probes mean nothing to a room */
    }
    if (!env->to.resource) {
        muc_error(st, "modify", "jid-malformed", "A nickname is required to enter a room");
        return;
    }
    if (!o) {
        join(r, st, 0);
        return;
    }
    if (strcmp(o->nick, env->to.resource) != 0) {
        change_nick(r, o, st);
        return;
    }
    /* a presence update (show, status): to everyone */
    if (o->pres)
        mp_stanza_unref(o->pres);
    o->pres = mp_stanza_ref(st);
    muc_broadcast_presence(r, o, NULL, 0);
}

/* ---- messages ---- */

/* Sends a groupchat message (built without 'to') to every occupant: the
 * payload is shared, each occupant gets an envelope copy. */
void muc_fan_out(struct muc_room *r, mp_stanza *m)
{
    mp_stanza_envelope(m);
    for (size_t i = 0; i < r->n_occ; i++)
        occ_send_copy(m, r->occ[i]);
}

void muc_room_status_message(struct muc_room *r, const int *codes, size_t n)
{
    mp_stanza *m = mp_stanza_new_client("message", "groupchat", r->jid, NULL);
    mp_xml *x = mp_xml_add_child(m, mp_stanza_root(m), "x", NS_MUC_USER);
    for (size_t i = 0; i < n; i++)
        muc_add_status(m, x, codes[i]);
    muc_fan_out(r, m);
    mp_stanza_unref(m);
}

void muc_add_stanza_id(struct muc_room *r, mp_stanza *m, const char *sid)
{
    mp_xml *e = mp_xml_add_child(m, mp_stanza_root(m), "stanza-id", NS_SID);
    mp_xml_set_attr(m, e, "id", sid);
    mp_xml_set_attr(m, e, "by", r->jid);
}

/* Children of a client's groupchat message that the room does not pass
 * on: what only the room may say (its occupant id, a stanza id in its
 * name: XEP-0359 §3.1, a muc#user <x/> that could carry a forged real
 * JID into archives: XEP-0313 §8.4). */
static int foreign(struct muc_room *r, const mp_xml *c)
{
    if (is_el(c, "occupant-id", NS_OCCUPANT_ID) || is_el(c, "x", NS_MUC_USER))
        return 1;
    if (is_el(c, "stanza-id", NS_SID)) {
        const char *by = mp_xml_get_attr(c, "by");
        return by && strcmp(by, r->jid) == 0;
    }
    return 0;
}

static void groupchat(struct muc_room *r, struct muc_occupant *o, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    mp_xml *subject = mp_xml_find(root, "subject", NULL);
    mp_xml *body = mp_xml_find(root, "body", NULL);
    if (subject && !body) {
        /* §8.1: moderators, or participants if the room lets them */
        if (o->role != ROLE_MODERATOR && !(r->cfg.change_subject && o->role >= ROLE_PARTICIPANT)) {
            muc_error(st, "auth", "forbidden", "You may not change the subject");
            return;
        }
        muc_set_str(&r->subject, mp_xml_text(st, subject));
        if (r->subject && !*r->subject)
            muc_set_str(&r->subject, NULL);
        muc_set_str(&r->subject_nick, o->nick);
        muc_store_save(r);
    } else if (o->role < ROLE_PARTICIPANT) {
        muc_error(st, "auth", "forbidden", "Visitors have no voice in this room");
        return;
    }
    mp_stanza *m = mp_stanza_new("message", MP_NS_CLIENT);
    mp_xml *mr = mp_stanza_root(m);
    set_from_nick(m, r, o->nick);
    mp_xml_set_attr(m, mr, "type", "groupchat");
    const char *id = mp_xml_get_attr(root, "id");
    if (id)
        mp_xml_set_attr(m, mr, "id", id);
    const char *lang = mp_xml_get_attr(root, "xml:lang");
    if (lang)
        mp_xml_set_attr(m, mr, "xml:lang", lang);
    for (mp_xml *c = root->children; c; c = c->next)
        if (c->type == MP_XML_ELEMENT && !foreign(r, c))
            mp_xml_add_copy(m, mr, c);
    add_occupant_id(m, mr, o);
    /* what the room keeps (a body, a subject) is numbered: XEP-0359 */
    int64_t us = 0;
    char sid[MUC_SID_MAX];
    if (body || subject) {
        muc_stamp(r, &us, sid);
        muc_add_stanza_id(r, m, sid);
    }
    muc_fan_out(r, m);
    if (body)
        history_add(r, m, us, sid);
    if (body || subject)
        muc_log_message(r, m, o, body ? 'm' : 's', us, sid);
    mp_stanza_unref(m);
}

/* §7.5: a private message between occupants. */
static void private_message(struct muc_room *r, struct muc_occupant *o, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->type == MP_TYPE_GROUPCHAT) {
        muc_error(st, "modify", "bad-request", "A groupchat message goes to the room");
        return;
    }
    if (!o) {
        muc_error(st, "cancel", "not-acceptable", "Only occupants may send private messages");
        return;
    }
    if (!r->cfg.allow_pm) {
        muc_error(st, "cancel", "not-allowed", NULL);
        return;
    }
    struct muc_occupant *t = muc_occ_by_nick(r, env->to.resource);
    if (!t) {
        muc_error(st, "cancel", "item-not-found", NULL);
        return;
    }
    mp_stanza *m = mp_stanza_copy(st);
    mp_xml *root = mp_stanza_root(m);
    for (mp_xml *c = root->children, *next; c; c = next) {
        next = c->next;
        if (is_el(c, "occupant-id", NS_OCCUPANT_ID))
            mp_xml_remove(m, c);
    }
    set_from_nick(m, r, o->nick);
    if (!mp_xml_find(root, "x", NS_MUC_USER))
        mp_xml_add_child(m, root, "x", NS_MUC_USER);
    add_occupant_id(m, root, o);
    muc_occ_send(t, m); /* every session of a multi-session occupant */
}

/* §7.8.2 mediated invitations and their declines. */
static void invitations(struct muc_room *r, struct muc_occupant *o, mp_stanza *st, mp_xml *x)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    mp_xml *decline = mp_xml_find(x, "decline", NS_MUC_USER);
    if (decline) {
        const char *to = mp_xml_get_attr(decline, "to");
        mp_jid tj;
        if (!to || mp_jid_parse(&tj, to) != MAGPIE_OK) {
            muc_error(st, "modify", "jid-malformed", NULL);
            return;
        }
        mp_stanza *m = mp_stanza_new("message", MP_NS_CLIENT);
        mp_xml *root = mp_stanza_root(m);
        mp_xml_set_attr(m, root, "from", r->jid);
        mp_stanza_set_to(m, &tj);
        mp_xml *dx = mp_xml_add_child(m, mp_xml_add_child(m, root, "x", NS_MUC_USER), "decline",
                                      NULL);
        mp_xml_set_attr(m, dx, "from", env->from.bare);
        mp_xml *reason = mp_xml_find(decline, "reason", NS_MUC_USER);
        if (reason)
            mp_xml_add_copy(m, dx, reason);
        mp_jid_free(&tj);
        mp_route(m);
        return;
    }
    if (!o) {
        muc_error(st, "cancel", "not-acceptable", "Only occupants may invite");
        return;
    }
    enum muc_affil a = muc_affil_of(r, o->real.bare);
    if (!r->cfg.allow_invites && o->role != ROLE_MODERATOR && a < AFF_ADMIN) {
        muc_error(st, "auth", "forbidden", "Invitations are restricted in this room");
        return;
    }
    int changed = 0;
    for (mp_xml *inv = mp_xml_find(x, "invite", NS_MUC_USER); inv;
         inv = mp_xml_find_next(inv, "invite", NS_MUC_USER)) {
        const char *to = mp_xml_get_attr(inv, "to");
        mp_jid tj;
        if (!to || mp_jid_parse(&tj, to) != MAGPIE_OK) {
            muc_error(st, "modify", "jid-malformed", NULL);
            continue;
        }
        /* in a members-only room an admin's invitation is a membership */
        if (r->cfg.members_only && a >= AFF_ADMIN && muc_affil_of(r, tj.bare) == AFF_NONE) {
            muc_affil_set(r, tj.bare, AFF_MEMBER, NULL);
            changed = 1;
        }
        mp_stanza *m = mp_stanza_new("message", MP_NS_CLIENT);
        mp_xml *root = mp_stanza_root(m);
        mp_xml_set_attr(m, root, "from", r->jid);
        mp_stanza_set_to(m, &tj);
        mp_xml *ux = mp_xml_add_child(m, root, "x", NS_MUC_USER);
        mp_xml *ix = mp_xml_add_child(m, ux, "invite", NULL);
        mp_xml_set_attr(m, ix, "from", o->real.bare);
        mp_xml *reason = mp_xml_find(inv, "reason", NS_MUC_USER);
        if (reason)
            mp_xml_add_copy(m, ix, reason);
        if (r->cfg.password) {
            mp_xml *pw = mp_xml_add_child(m, ux, "password", NULL);
            mp_xml_add_text(m, pw, r->cfg.password, strlen(r->cfg.password));
        }
        /* the XEP-0249 form too, for clients that only know that one */
        mp_xml *cx = mp_xml_add_child(m, root, "x", NS_CONFERENCE);
        mp_xml_set_attr(m, cx, "jid", r->jid);
        mp_jid_free(&tj);
        mp_route(m);
    }
    if (changed)
        muc_store_save(r);
}

void muc_room_message(struct muc_room *r, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->type == MP_TYPE_ERROR) {
        error_from(r, st);
        return;
    }
    struct muc_occupant *o = muc_occ_by_jid(r, env->from.full);
    if (env->to.resource) {
        private_message(r, o, st);
        return;
    }
    if (env->type == MP_TYPE_GROUPCHAT) {
        if (!o) {
            muc_error(st, "cancel", "not-acceptable", "You are not in this room");
            return;
        }
        groupchat(r, o, st);
        return;
    }
    mp_xml *x = mp_xml_find(mp_stanza_root(st), "x", NS_MUC_USER);
    if (x && (mp_xml_find(x, "invite", NS_MUC_USER) || mp_xml_find(x, "decline", NS_MUC_USER))) {
        invitations(r, o, st, x);
        return;
    }
    if (muc_is_voice_form(st)) {
        muc_voice_message(r, st);
        return;
    }
    muc_error(st, "modify", "bad-request", NULL);
}

/* ---- IQs ---- */

static void add_feature(mp_stanza *st, mp_xml *q, const char *var)
{
    mp_xml_set_attr(st, mp_xml_add_child(st, q, "feature", NULL), "var", var);
}

void muc_room_disco_info(struct muc_room *r, mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    const char *node = mp_xml_get_attr(q, "node");
    if ((node && strcmp(node, "x-roomuser-item") != 0) ||
        (r->locked && muc_affil_of(r, env->from.bare) != AFF_OWNER)) {
        mp_iq_reply_error(iq, "cancel", "item-not-found");
        return;
    }
    if (node) {
        muc_reserved_nick_info(r, iq);
        return;
    }
    mp_stanza *res = mp_iq_result(iq);
    mp_xml *rq = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_DISCO_INFO);
    mp_xml *id = mp_xml_add_child(res, rq, "identity", NULL);
    mp_xml_set_attr(res, id, "category", "conference");
    mp_xml_set_attr(res, id, "type", "text");
    mp_xml_set_attr(res, id, "name", r->cfg.name && *r->cfg.name ? r->cfg.name : r->node);
    const struct muc_config *c = &r->cfg;
    add_feature(res, rq, NS_MUC);
    add_feature(res, rq, NS_DISCO_INFO);
    add_feature(res, rq, NS_OCCUPANT_ID);
    add_feature(res, rq, "http://jabber.org/protocol/muc#self-ping-optimization");
    add_feature(res, rq, NS_SID);
    add_feature(res, rq, NS_MODERATE);
    if (mp_module_opt_bool(muc_self, "allow_register"))
        add_feature(res, rq, NS_REGISTER);
    if (c->mam) {
        add_feature(res, rq, NS_MAM);
        add_feature(res, rq, NS_MAM_EXT);
    }
    add_feature(res, rq, c->public_ ? "muc_public" : "muc_hidden");
    add_feature(res, rq, c->persistent ? "muc_persistent" : "muc_temporary");
    add_feature(res, rq, c->members_only ? "muc_membersonly" : "muc_open");
    add_feature(res, rq, c->moderated ? "muc_moderated" : "muc_unmoderated");
    add_feature(res, rq, c->whois_anyone ? "muc_nonanonymous" : "muc_semianonymous");
    add_feature(res, rq, c->password ? "muc_passwordprotected" : "muc_unsecured");
    mp_xml *form = mp_form_add(res, rq, "result", "http://jabber.org/protocol/muc#roominfo", NULL);
    mp_form_field_add(res, form, "muc#roominfo_description", NULL, "Description",
                      c->desc ? c->desc : "");
    char n[32];
    snprintf(n, sizeof n, "%zu", r->n_occ);
    mp_form_field_add(res, form, "muc#roominfo_occupants", NULL, "Number of occupants", n);
    mp_form_field_add(res, form, "muc#roominfo_subject", NULL, "Subject",
                      r->subject ? r->subject : "");
    mp_form_field_add(res, form, "muc#roominfo_subjectmod", "boolean",
                      "Occupants may change the subject", c->change_subject ? "1" : "0");
    mp_form_field_add(res, form, "muc#roomconfig_roomname", NULL, "Name",
                      c->name && *c->name ? c->name : r->node);
    snprintf(n, sizeof n, "%ld", c->max_users);
    mp_form_field_add(res, form, "muc#maxusers", NULL, "Maximum occupants",
                      c->max_users ? n : "none");
    mp_iq_reply(res);
}

void muc_room_disco_items(struct muc_room *r, mp_stanza *iq)
{
    (void)r;
    /* §6.5: occupants are not listed (their nicks are for occupants) */
    mp_stanza *res = mp_iq_result(iq);
    mp_xml_add_child(res, mp_stanza_root(res), "query", NS_DISCO_ITEMS);
    mp_iq_reply(res);
}

void muc_room_ping(struct muc_room *r, mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    struct muc_occupant *o = muc_occ_by_jid(r, env->from.full);
    if (!o) {
        /* XEP-0410: the client is not (or no longer) in the room */
        mp_iq_reply_error(iq, "cancel", "not-acceptable");
        return;
    }
    if (strcmp(o->nick, env->to.resource) == 0) {
        mp_iq_reply(mp_iq_result(iq)); /* self-ping: still joined */
        return;
    }
    muc_room_iq_other(r, iq);
}

/* IQs to an occupant JID are passed between occupants (§7.7 for vCard,
 * generally any IQ): a request from occupant A to room/B goes to B's real
 * JID from room/A; B's answer to room/A goes back to A from room/B. The id
 * is kept, so nothing is remembered. IQs to the room's bare JID that no
 * handler took are not supported. */
void muc_room_iq_other(struct muc_room *r, mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    int request = env->type == MP_TYPE_GET || env->type == MP_TYPE_SET;
    if (!env->to.resource) {
        if (request)
            mp_iq_reply_error(iq, "cancel", "service-unavailable");
        return;
    }
    struct muc_occupant *from = muc_occ_by_jid(r, env->from.full);
    struct muc_occupant *to = muc_occ_by_nick(r, env->to.resource);
    if (!from) {
        if (request)
            mp_iq_reply_error(iq, "cancel", "not-acceptable");
        return;
    }
    if (!to) {
        if (request)
            mp_iq_reply_error(iq, "cancel", "item-not-found");
        return;
    }
    mp_stanza *c = mp_stanza_copy(iq);
    set_from_nick(c, r, from->nick);
    mp_stanza_set_to(c, &to->real);
    mp_route(c);
}

/* ---- destruction (§10.9) ---- */

void muc_room_destroy(struct muc_room *r, const char *alt, const char *reason,
                      const char *password)
{
    for (size_t i = 0; i < r->n_occ; i++) {
        struct muc_occupant *o = r->occ[i];
        mp_stanza *p = mp_stanza_new("presence", MP_NS_CLIENT);
        mp_xml *root = mp_stanza_root(p);
        set_from_nick(p, r, o->nick);
        mp_xml_set_attr(p, root, "type", "unavailable");
        mp_xml *x = mp_xml_add_child(p, root, "x", NS_MUC_USER);
        mp_xml *item = mp_xml_add_child(p, x, "item", NULL);
        mp_xml_set_attr(p, item, "affiliation", "none");
        mp_xml_set_attr(p, item, "role", "none");
        mp_xml *d = mp_xml_add_child(p, x, "destroy", NULL);
        if (alt)
            mp_xml_set_attr(p, d, "jid", alt);
        if (reason)
            mp_xml_add_text(p, mp_xml_add_child(p, d, "reason", NULL), reason, strlen(reason));
        if (password)
            mp_xml_add_text(p, mp_xml_add_child(p, d, "password", NULL), password,
                            strlen(password));
        muc_occ_send(o, p);
    }
    muc_room_drop(r);
    if (r->cfg.persistent)
        muc_store_delete(r->node);
    muc_log_delete(r->node);
    muc_room_free(r);
}
