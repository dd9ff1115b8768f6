/* admin.c - XEP-0045 administration: muc#admin (roles §8, affiliations
 * §9, lists) and muc#owner (the configuration form §10.2, destruction
 * §10.9). Who may do what is decided by rules.c; this file applies it.
 * Runs on the room's worker. */
#include "muc.h"

#include <magpie/proto.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ROOMCONFIG "http://jabber.org/protocol/muc#roomconfig"

static mp_xml *query_of(mp_stanza *iq, const char *ns)
{
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    return q && strcmp(q->name, "query") == 0 && q->ns && strcmp(q->ns, ns) == 0 ? q : NULL;
}

static const char *item_reason(mp_stanza *iq, mp_xml *item)
{
    mp_xml *r = mp_xml_find(item, "reason", NULL);
    return r ? mp_xml_text(iq, r) : NULL;
}

/* ---- muc#admin get: lists ---- */

void muc_admin_get(struct muc_room *r, mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *q = query_of(iq, NS_MUC_ADMIN);
    mp_xml *item = q ? mp_xml_find(q, "item", NS_MUC_ADMIN) : NULL;
    if (!item) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    enum muc_affil actor_aff = muc_affil_of(r, env->from.bare);
    struct muc_occupant *actor = muc_occ_by_jid(r, env->from.full);
    const char *as = mp_xml_get_attr(item, "affiliation"), *rs = mp_xml_get_attr(item, "role");
    enum muc_affil la;
    enum muc_role lr;
    mp_stanza *res;
    mp_xml *rq;
    if (as && muc_affil_parse(as, &la) == 0 && la != AFF_NONE) {
        const char *no = muc_may_list_affil(actor_aff, la);
        if (no) {
            mp_iq_reply_error(iq, "auth", no);
            return;
        }
        res = mp_iq_result(iq);
        rq = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_MUC_ADMIN);
        for (size_t i = 0; i < r->n_aff; i++) {
            if (r->aff[i].affil != la)
                continue;
            mp_xml *it = mp_xml_add_child(res, rq, "item", NULL);
            mp_xml_set_attr(res, it, "affiliation", as);
            mp_xml_set_attr(res, it, "jid", r->aff[i].jid);
            if (r->aff[i].nick)
                mp_xml_set_attr(res, it, "nick", r->aff[i].nick);
            if (r->aff[i].reason)
                mp_xml_add_text(res, mp_xml_add_child(res, it, "reason", NULL), r->aff[i].reason,
                                strlen(r->aff[i].reason));
        }
    } else if (rs && muc_role_parse(rs, &lr) == 0 && lr != ROLE_NONE) {
        const char *no = muc_may_list_role(actor ? actor->role : ROLE_NONE);
        if (no) {
            mp_iq_reply_error(iq, "auth", no);
            return;
        }
        res = mp_iq_result(iq);
        rq = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_MUC_ADMIN);
        for (size_t i = 0; i < r->n_occ; i++) {
            struct muc_occupant *o = r->occ[i];
            if (o->role != lr)
                continue;
            mp_xml *it = mp_xml_add_child(res, rq, "item", NULL);
            mp_xml_set_attr(res, it, "role", rs);
            mp_xml_set_attr(res, it, "nick", o->nick);
            mp_xml_set_attr(res, it, "affiliation", muc_affil_name(muc_affil_of(r, o->real.bare)));
            mp_xml_set_attr(res, it, "jid", o->real.full);
        }
    } else {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    mp_iq_reply(res);
}

/* ---- muc#admin set: role and affiliation changes ---- */

struct change {
    int is_role;
    struct muc_occupant *target; /* role change */
    enum muc_role role;
    char bare[3 * 1024 + 2]; /* affiliation change */
    enum muc_affil affil;
    const char *reason;
};

/* Checks one item; fills c or returns the error condition (type in *type). */
static const char *check_item(struct muc_room *r, mp_stanza *iq, mp_xml *item, struct change *c,
                              const char **type)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    enum muc_affil actor_aff = muc_affil_of(r, env->from.bare);
    struct muc_occupant *actor = muc_occ_by_jid(r, env->from.full);
    const char *as = mp_xml_get_attr(item, "affiliation"), *rs = mp_xml_get_attr(item, "role");
    const char *nick = mp_xml_get_attr(item, "nick"), *jid = mp_xml_get_attr(item, "jid");
    memset(c, 0, sizeof *c);
    c->reason = item_reason(iq, item);
    *type = "modify";
    if (rs && !as) {
        if (muc_role_parse(rs, &c->role) != 0 || !nick)
            return "bad-request";
        c->is_role = 1;
        c->target = muc_occ_by_nick(r, nick);
        *type = "cancel";
        if (!c->target)
            return "item-not-found";
        *type = "cancel";
        const char *no = muc_may_set_role(actor ? actor->role : ROLE_NONE, actor_aff,
                                          c->target->role, muc_affil_of(r, c->target->real.bare),
                                          c->role);
        if (no && strcmp(no, "forbidden") == 0)
            *type = "auth";
        return no;
    }
    if (!as || muc_affil_parse(as, &c->affil) != 0)
        return "bad-request";
    if (jid) {
        mp_jid j;
        if (mp_jid_parse(&j, jid) != MAGPIE_OK)
            return "jid-malformed";
        snprintf(c->bare, sizeof c->bare, "%s", j.bare);
        mp_jid_free(&j);
    } else if (nick) {
        struct muc_occupant *t = muc_occ_by_nick(r, nick);
        *type = "cancel";
        if (!t)
            return "item-not-found";
        snprintf(c->bare, sizeof c->bare, "%s", t->real.bare);
    } else {
        return "bad-request";
    }
    enum muc_affil cur = muc_affil_of(r, c->bare);
    const char *no = muc_may_set_affil(actor_aff, cur, c->affil);
    if (no) {
        *type = strcmp(no, "forbidden") == 0 ? "auth" : "cancel";
        return no;
    }
    if (cur == AFF_OWNER && c->affil != AFF_OWNER && muc_count_affil(r, AFF_OWNER) <= 1) {
        *type = "cancel";
        return "conflict"; /* §10.6: a room keeps at least one owner */
    }
    return NULL;
}

/* The occupants of bare JID bare take affiliation a: banned (301) or,
 * in a members-only room, removed (321) occupants leave; the others get
 * the role that goes with a. */
static void apply_affil(struct muc_room *r, const char *bare, enum muc_affil a, const char *actor,
                        const char *reason)
{
    for (size_t i = 0; i < r->n_occ;) {
        struct muc_occupant *o = r->occ[i];
        if (strcmp(o->real.bare, bare) != 0) {
            i++;
            continue;
        }
        if (a == AFF_OUTCAST || (r->cfg.members_only && a < AFF_MEMBER)) {
            int code = a == AFF_OUTCAST ? 301 : 321;
            muc_remove_occupant(r, o, &code, 1, actor, reason);
            continue;
        }
        o->role = muc_default_role(a, r->cfg.moderated);
        muc_broadcast_presence(r, o, NULL, 0);
        i++;
    }
}

void muc_admin_set(struct muc_room *r, mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *q = query_of(iq, NS_MUC_ADMIN);
    size_t n = 0;
    for (mp_xml *it = q ? mp_xml_find(q, "item", NS_MUC_ADMIN) : NULL; it;
         it = mp_xml_find_next(it, "item", NS_MUC_ADMIN))
        n++;
    if (n == 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    /* all or nothing: every item is checked before any is applied */
    struct change *cs = mp_calloc(n, sizeof *cs);
    size_t k = 0;
    for (mp_xml *it = mp_xml_find(q, "item", NS_MUC_ADMIN); it;
         it = mp_xml_find_next(it, "item", NS_MUC_ADMIN), k++) {
        const char *type, *no = check_item(r, iq, it, &cs[k], &type);
        if (no) {
            mp_iq_reply_error(iq, type, no);
            free(cs);
            return;
        }
    }
    struct muc_occupant *actor = muc_occ_by_jid(r, env->from.full);
    char *actor_nick = mp_strdup(actor ? actor->nick : NULL);
    int save = 0;
    mp_iq_reply(mp_iq_result(iq));
    for (k = 0; k < n; k++) {
        struct change *c = &cs[k];
        if (c->is_role) {
            /* the target may have left through an earlier item */
            int present = 0;
            for (size_t i = 0; i < r->n_occ; i++)
                present |= r->occ[i] == c->target;
            if (!present)
                continue;
            if (c->role == ROLE_NONE) {
                int code = 307;
                muc_remove_occupant(r, c->target, &code, 1, actor_nick, c->reason);
            } else if (c->role != c->target->role) {
                c->target->role = c->role;
                muc_broadcast_presence(r, c->target, NULL, 0);
            }
            continue;
        }
        if (muc_affil_of(r, c->bare) == c->affil)
            continue;
        muc_affil_set(r, c->bare, c->affil, c->reason);
        apply_affil(r, c->bare, c->affil, actor_nick, c->reason);
        save = 1;
    }
    free(actor_nick);
    free(cs);
    if (save)
        muc_store_save(r);
    muc_room_gc(r);
}

/* ---- muc#owner: the configuration form ---- */

/* A field with one value, empty when value is NULL. */
static mp_xml *field(mp_stanza *st, mp_xml *form, const char *var, const char *type,
                     const char *label, const char *value)
{
    return mp_form_field_add(st, form, var, type, label, value ? value : "");
}

static void options(mp_stanza *st, mp_xml *f, const char *const *vals)
{
    for (; *vals; vals++)
        mp_form_option_add(st, f, *vals, *vals);
}

void muc_config_form(struct muc_room *r, mp_stanza *st, mp_xml *parent)
{
    const struct muc_config *c = &r->cfg;
    mp_xml *x = mp_form_add(st, parent, "form", NS_ROOMCONFIG, "Room configuration");
    field(st, x, "muc#roomconfig_roomname", "text-single", "Name", c->name);
    field(st, x, "muc#roomconfig_roomdesc", "text-single", "Description", c->desc);
    field(st, x, "muc#roomconfig_persistentroom", "boolean", "Persistent", c->persistent ? "1" : "0");
    field(st, x, "muc#roomconfig_publicroom", "boolean", "Listed in the directory",
          c->public_ ? "1" : "0");
    field(st, x, "muc#roomconfig_membersonly", "boolean", "Members only",
          c->members_only ? "1" : "0");
    field(st, x, "muc#roomconfig_passwordprotectedroom", "boolean", "Password protected",
          c->password ? "1" : "0");
    field(st, x, "muc#roomconfig_roomsecret", "text-private", "Password", c->password);
    field(st, x, "muc#roomconfig_moderatedroom", "boolean", "Moderated", c->moderated ? "1" : "0");
    mp_xml *f = field(st, x, "muc#roomconfig_whois", "list-single", "Who may discover real JIDs",
                      c->whois_anyone ? "anyone" : "moderators");
    static const char *const whois[] = {"moderators", "anyone", NULL};
    options(st, f, whois);
    char n[32];
    snprintf(n, sizeof n, "%ld", c->max_users);
    f = field(st, x, "muc#roomconfig_maxusers", "list-single", "Maximum occupants",
              c->max_users ? n : "none");
    static const char *const maxu[] = {"10", "20", "30", "50", "100", "200", "none", NULL};
    options(st, f, maxu);
    field(st, x, "muc#roomconfig_changesubject", "boolean", "Occupants may change the subject",
          c->change_subject ? "1" : "0");
    field(st, x, "muc#roomconfig_allowinvites", "boolean", "Occupants may invite others",
          c->allow_invites ? "1" : "0");
    f = field(st, x, "muc#roomconfig_allowpm", "list-single", "Who may send private messages",
              c->allow_pm ? "anyone" : "none");
    static const char *const pm[] = {"anyone", "none", NULL};
    options(st, f, pm);
    snprintf(n, sizeof n, "%ld", c->history_len);
    field(st, x, "muc#maxhistoryfetch", "text-single", "Messages kept for newcomers", n);
    field(st, x, "muc#roomconfig_enablearchiving", "boolean",
          "Archive messages (XEP-0313 Message Archive Management)", c->mam ? "1" : "0");
}

void muc_owner_get(struct muc_room *r, mp_stanza *iq)
{
    if (muc_affil_of(r, mp_stanza_envelope(iq)->from.bare) != AFF_OWNER) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        return;
    }
    mp_xml *q = query_of(iq, NS_MUC_OWNER);
    if (!q) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    mp_stanza *res = mp_iq_result(iq);
    muc_config_form(r, res, mp_xml_add_child(res, mp_stanza_root(res), "query", NS_MUC_OWNER));
    mp_iq_reply(res);
}

static int parse_bool(const char *v, int *out)
{
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
        *out = 1;
    else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

/* Reads a submitted form into c (a copy of the current configuration).
 * Returns NULL or the error condition (not-acceptable: a bad value). */
static const char *read_form(mp_stanza *iq, mp_xml *x, struct muc_config *c, int *pw_flag)
{
    *pw_flag = -1;
    for (mp_xml *f = mp_xml_find(x, "field", NS_XDATA); f; f = mp_xml_find_next(f, "field", NS_XDATA)) {
        const char *var = mp_xml_get_attr(f, "var");
        mp_xml *ve = mp_xml_find(f, "value", NS_XDATA);
        const char *v = ve ? mp_xml_text(iq, ve) : "";
        if (!var)
            continue;
        int b;
        if (strcmp(var, "FORM_TYPE") == 0) {
            if (strcmp(v, NS_ROOMCONFIG) != 0)
                return "bad-request";
        } else if (strcmp(var, "muc#roomconfig_roomname") == 0) {
            muc_set_str(&c->name, *v ? v : NULL);
        } else if (strcmp(var, "muc#roomconfig_roomdesc") == 0) {
            muc_set_str(&c->desc, *v ? v : NULL);
        } else if (strcmp(var, "muc#roomconfig_roomsecret") == 0) {
            muc_set_str(&c->password, *v ? v : NULL);
        } else if (strcmp(var, "muc#roomconfig_whois") == 0) {
            if (strcmp(v, "anyone") == 0)
                c->whois_anyone = 1;
            else if (strcmp(v, "moderators") == 0)
                c->whois_anyone = 0;
            else
                return "not-acceptable";
        } else if (strcmp(var, "muc#roomconfig_maxusers") == 0) {
            char *end;
            long n = strtol(v, &end, 10);
            if (strcmp(v, "none") == 0 || strcmp(v, "0") == 0)
                c->max_users = 0;
            else if (*v && !*end && n > 0 && n <= 100000)
                c->max_users = n;
            else
                return "not-acceptable";
        } else if (strcmp(var, "muc#maxhistoryfetch") == 0 ||
                   strcmp(var, "muc#roomconfig_historylength") == 0) {
            char *end;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 0)
                return "not-acceptable";
            c->history_len = n > muc_opt_history_max() ? muc_opt_history_max() : n;
        } else if (strcmp(var, "muc#roomconfig_allowpm") == 0) {
            c->allow_pm = strcmp(v, "none") != 0;
        } else {
            int *dst = NULL;
            if (strcmp(var, "muc#roomconfig_persistentroom") == 0)
                dst = &c->persistent;
            else if (strcmp(var, "muc#roomconfig_publicroom") == 0)
                dst = &c->public_;
            else if (strcmp(var, "muc#roomconfig_membersonly") == 0)
                dst = &c->members_only;
            else if (strcmp(var, "muc#roomconfig_moderatedroom") == 0)
                dst = &c->moderated;
            else if (strcmp(var, "muc#roomconfig_changesubject") == 0)
                dst = &c->change_subject;
            else if (strcmp(var, "muc#roomconfig_allowinvites") == 0)
                dst = &c->allow_invites;
            else if (strcmp(var, "muc#roomconfig_enablearchiving") == 0 || strcmp(var, "mam") == 0)
                dst = &c->mam;
            else if (strcmp(var, "muc#roomconfig_passwordprotectedroom") == 0)
                dst = pw_flag;
            if (!dst)
                continue; /* fields we do not know are ignored (XEP-0004 §3.3) */
            if (parse_bool(v, &b) != 0)
                return "not-acceptable";
            *dst = b;
        }
    }
    if (*pw_flag == 0)
        muc_set_str(&c->password, NULL);
    else if (*pw_flag == 1 && !c->password)
        return "not-acceptable"; /* protected, but no password given */
    return NULL;
}

static void config_free(struct muc_config *c)
{
    free(c->name);
    free(c->desc);
    free(c->password);
}

static void config_submit(struct muc_room *r, mp_stanza *iq, mp_xml *x)
{
    struct muc_config c = r->cfg;
    c.name = mp_strdup(r->cfg.name);
    c.desc = mp_strdup(r->cfg.desc);
    c.password = mp_strdup(r->cfg.password);
    int pw_flag;
    const char *no = read_form(iq, x, &c, &pw_flag);
    if (no) {
        config_free(&c);
        mp_iq_reply_error(iq, "modify", no);
        return;
    }
    int was_locked = r->locked, was_persistent = r->cfg.persistent;
    int was_anyone = r->cfg.whois_anyone, was_members = r->cfg.members_only;
    int was_mam = r->cfg.mam;
    config_free(&r->cfg);
    r->cfg = c;
    r->locked = 0;
    muc_history_trim(r);
    muc_room_summary(r);
    mp_iq_reply(mp_iq_result(iq));
    if (r->cfg.persistent)
        muc_store_save(r);
    else if (was_persistent)
        muc_store_delete(r->node);
    if (!was_locked) {
        /* §10.2.1: occupants learn that the configuration changed */
        int codes[3];
        size_t n = 0;
        codes[n++] = 104;
        if (was_anyone != r->cfg.whois_anyone)
            codes[n++] = r->cfg.whois_anyone ? 172 : 173;
        if (was_mam != r->cfg.mam)
            codes[n++] = r->cfg.mam ? 170 : 171; /* logging on / off */
        muc_room_status_message(r, codes, n);
    }
    if (!was_members && r->cfg.members_only) {
        /* §9.? : non-members leave a room that became members-only (322) */
        for (size_t i = 0; i < r->n_occ;) {
            struct muc_occupant *o = r->occ[i];
            if (muc_affil_of(r, o->real.bare) < AFF_MEMBER) {
                int code = 322;
                muc_remove_occupant(r, o, &code, 1, NULL, NULL);
                continue;
            }
            i++;
        }
    }
    muc_room_gc(r);
}

void muc_owner_set(struct muc_room *r, mp_stanza *iq)
{
    if (muc_affil_of(r, mp_stanza_envelope(iq)->from.bare) != AFF_OWNER) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        return;
    }
    mp_xml *q = query_of(iq, NS_MUC_OWNER);
    mp_xml *x = q ? mp_form_find(q) : NULL;
    mp_xml *d = q ? mp_xml_find(q, "destroy", NS_MUC_OWNER) : NULL;
    if (d) {
        mp_xml *reason = mp_xml_find(d, "reason", NULL), *pw = mp_xml_find(d, "password", NULL);
        mp_iq_reply(mp_iq_result(iq));
        muc_room_destroy(r, mp_xml_get_attr(d, "jid"), reason ? mp_xml_text(iq, reason) : NULL,
                         pw ? mp_xml_text(iq, pw) : NULL);
        return;
    }
    if (!x) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    const char *type = mp_xml_get_attr(x, "type");
    if (type && strcmp(type, "cancel") == 0) {
        mp_iq_reply(mp_iq_result(iq));
        /* §10.1.3: cancelling the initial configuration destroys the room */
        if (r->locked)
            muc_room_destroy(r, NULL, NULL, NULL);
        return;
    }
    if (!type || strcmp(type, "submit") != 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    config_submit(r, iq, x);
}
