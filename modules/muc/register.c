/* register.c - registering with a room (XEP-0045 §7.10) and the reserved
 * nick query (§7.12).
 *
 * jabber:iq:register on the room's bare JID: a get returns the
 * muc#register form (or <registered/> with the nick for a user who has
 * one); a set with the submitted form makes the user a member (admins and
 * owners keep their affiliation) and reserves the nick: anyone else who
 * enters with it, or registers it, gets conflict. Registration is open to
 * anyone not banned (module option allow_register; off: not-allowed), so
 * in a members-only room it is the way in. The reservation is the nick of
 * the user's affiliation item, stored with the room.
 *
 * disco#info with node x-roomuser-item tells a user the nick reserved for
 * them (an identity named by it, or no identity). */
#include "muc.h"

#include <magpie/proto.h>
#include <string.h>

#define NS_MUC_REGISTER "http://jabber.org/protocol/muc#register"
#define FIELD_NICK      "muc#register_roomnick"

/* The nick reserved for bare in r, or NULL. */
const char *muc_reserved_nick(struct muc_room *r, const char *bare)
{
    for (size_t i = 0; i < r->n_aff; i++)
        if (strcmp(r->aff[i].jid, bare) == 0)
            return r->aff[i].nick;
    return NULL;
}

/* Is nick reserved in r by someone other than bare? */
int muc_nick_reserved_by_other(struct muc_room *r, const char *nick, const char *bare)
{
    for (size_t i = 0; i < r->n_aff; i++)
        if (r->aff[i].nick && strcmp(r->aff[i].nick, nick) == 0 && strcmp(r->aff[i].jid, bare) != 0)
            return 1;
    return 0;
}

/* Outcasts may not register; nor anyone when the option is off. Answers
 * and returns 0 then. */
static int may_register(struct muc_room *r, mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    enum muc_affil a = muc_affil_of(r, env->from.bare);
    if (r->locked && a != AFF_OWNER) {
        mp_iq_reply_error(iq, "cancel", "item-not-found");
        return 0;
    }
    if (a == AFF_OUTCAST) {
        muc_error(iq, "auth", "forbidden", "You are banned from this room");
        return 0;
    }
    if (!mp_module_opt_bool(muc_self, "allow_register")) {
        muc_error(iq, "cancel", "not-allowed", "Registration with rooms is off");
        return 0;
    }
    return 1;
}

void muc_register_get(struct muc_room *r, mp_stanza *iq)
{
    if (!may_register(r, iq))
        return;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_stanza *res = mp_iq_result(iq);
    mp_xml *q = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_REGISTER);
    const char *nick = muc_reserved_nick(r, env->from.bare);
    if (nick && muc_affil_of(r, env->from.bare) >= AFF_MEMBER) {
        /* §7.10: already registered */
        mp_xml_add_child(res, q, "registered", NULL);
        mp_xml_add_text(res, mp_xml_add_child(res, q, "username", NULL), nick, strlen(nick));
        mp_iq_reply(res);
        return;
    }
    static const char instr[] = "To register with this room, choose the nickname it will keep "
                                "for you.";
    mp_xml_add_text(res, mp_xml_add_child(res, q, "instructions", NULL), instr, sizeof instr - 1);
    mp_xml *x = mp_form_add(res, q, "form", NS_MUC_REGISTER, "Room registration");
    mp_form_field_add(res, x, "muc#register_first", "text-single", "Given Name", NULL);
    mp_form_field_add(res, x, "muc#register_last", "text-single", "Family Name", NULL);
    mp_xml *f = mp_form_field_add(res, x, FIELD_NICK, "text-single", "Desired Nickname", NULL);
    mp_xml_add_child(res, f, "required", NULL);
    mp_iq_reply(res);
}

void muc_register_set(struct muc_room *r, mp_stanza *iq)
{
    if (!may_register(r, iq))
        return;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *q = mp_xml_find(mp_stanza_root(iq), "query", NS_REGISTER);
    mp_xml *x = q ? mp_form_find(q) : NULL;
    if (!x) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    if (strcmp(mp_form_type(x), "cancel") == 0) {
        mp_iq_reply(mp_iq_result(iq));
        return;
    }
    const char *ft = mp_form_form_type(iq, x);
    if (strcmp(mp_form_type(x), "submit") != 0 || (ft && strcmp(ft, NS_MUC_REGISTER) != 0)) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    const char *nick = mp_form_value(iq, x, FIELD_NICK);
    if (!nick || !*nick) {
        muc_error(iq, "modify", "not-acceptable", "A nickname is required");
        return;
    }
    /* §7.10: a nick reserved, or in use, by someone else */
    struct muc_occupant *holder = muc_occ_by_nick(r, nick);
    if (muc_nick_reserved_by_other(r, nick, env->from.bare) ||
        (holder && strcmp(holder->real.bare, env->from.bare) != 0)) {
        muc_error(iq, "cancel", "conflict", "That nickname is taken");
        return;
    }
    enum muc_affil a = muc_affil_of(r, env->from.bare);
    if (a < AFF_MEMBER)
        muc_affil_set(r, env->from.bare, AFF_MEMBER, NULL);
    for (size_t i = 0; i < r->n_aff; i++)
        if (strcmp(r->aff[i].jid, env->from.bare) == 0)
            muc_set_str(&r->aff[i].nick, nick);
    mp_iq_reply(mp_iq_result(iq));
    /* a new member who is in the room: everyone learns the affiliation,
     * and a visitor of a moderated room gets the voice members have */
    if (a < AFF_MEMBER)
        for (size_t i = 0; i < r->n_occ; i++) {
            struct muc_occupant *o = r->occ[i];
            if (strcmp(o->real.bare, env->from.bare) != 0)
                continue;
            if (o->role == ROLE_VISITOR)
                o->role = muc_default_role(AFF_MEMBER, r->cfg.moderated);
            muc_broadcast_presence(r, o, NULL, 0);
        }
    muc_store_save(r);
}

void muc_reserved_nick_info(struct muc_room *r, mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_stanza *res = mp_iq_result(iq);
    mp_xml *q = mp_xml_add_child(res, mp_stanza_root(res), "query", NS_DISCO_INFO);
    mp_xml_set_attr(res, q, "node", "x-roomuser-item");
    const char *nick = muc_reserved_nick(r, env->from.bare);
    if (nick) {
        mp_xml *id = mp_xml_add_child(res, q, "identity", NULL);
        mp_xml_set_attr(res, id, "category", "conference");
        mp_xml_set_attr(res, id, "name", nick);
        mp_xml_set_attr(res, id, "type", "text");
    }
    mp_iq_reply(res);
}
