/* voice.c - voice requests (XEP-0045 §7.13, §8.6).
 *
 * A visitor of a moderated room asks for voice by sending the room a
 * message with a muc#request form (muc#role = participant). The room
 * passes it on to every moderator as a message with the approval form
 * (the requester's full JID, nick, and muc#request_allow = false). A
 * moderator approves by sending the room that form submitted with
 * muc#request_allow true: the requester becomes a participant, announced
 * to the room like any role change; false or a cancelled form skips it.
 *
 * Errors, as message errors to the sender: a request from someone who is
 * not in the room: not-acceptable; one from an occupant who has voice or
 * in a room that is not moderated: not-allowed (there is nothing to
 * grant); an approval from a non-moderator: forbidden; an approval for
 * someone who left: item-not-found; a form that is neither: bad-request. */
#include "muc.h"

#include <magpie/proto.h>
#include <string.h>

#define NS_MUC_REQUEST "http://jabber.org/protocol/muc#request"

int muc_is_voice_form(mp_stanza *st)
{
    mp_xml *x = mp_form_find(mp_stanza_root(st));
    const char *ft = x ? mp_form_form_type(st, x) : NULL;
    return ft && strcmp(ft, NS_MUC_REQUEST) == 0;
}

/* The approval form (§8.6) for requester o, sent to moderator m. */
static void send_approval_form(struct muc_room *r, const struct muc_occupant *o,
                               const struct muc_occupant *m)
{
    mp_stanza *st = mp_stanza_new_client("message", NULL, r->jid, NULL);
    mp_xml *root = mp_stanza_root(st);
    mp_xml *x = mp_form_add(st, root, "form", NS_MUC_REQUEST, "Voice request");
    static const char instr[] = "To approve this request for voice, select the \"Grant voice to "
                                "this person?\" checkbox and click OK. To skip this request, "
                                "click the cancel button.";
    mp_xml_add_text(st, mp_xml_add_child(st, x, "instructions", NULL), instr, sizeof instr - 1);
    mp_form_field_add(st, x, "muc#role", "list-single", "Requested role", "participant");
    mp_form_field_add(st, x, "muc#jid", "jid-single", "User ID", o->real.full);
    mp_form_field_add(st, x, "muc#roomnick", "text-single", "Room Nickname", o->nick);
    mp_form_field_add(st, x, "muc#request_allow", "boolean", "Grant voice to this person?",
                      "false");
    muc_occ_send(m, st);
}

/* A visitor's request (§7.13). */
static void request(struct muc_room *r, struct muc_occupant *o, mp_stanza *st, mp_xml *x)
{
    const char *role = mp_form_value(st, x, "muc#role");
    if (role && strcmp(role, "participant") != 0) {
        muc_error(st, "modify", "bad-request", "Only voice (participant) can be requested");
        return;
    }
    if (!r->cfg.moderated || o->role != ROLE_VISITOR) {
        muc_error(st, "cancel", "not-allowed", "You have voice already");
        return;
    }
    size_t sent = 0;
    for (size_t i = 0; i < r->n_occ; i++)
        if (r->occ[i]->role == ROLE_MODERATOR) {
            send_approval_form(r, o, r->occ[i]);
            sent++;
        }
    if (!sent)
        muc_error(st, "wait", "service-unavailable", "No moderator is in the room");
}

/* A moderator's answer (§8.6). */
static void approval(struct muc_room *r, struct muc_occupant *o, mp_stanza *st, mp_xml *x)
{
    if (!o || o->role != ROLE_MODERATOR) {
        muc_error(st, "auth", "forbidden", "Only moderators approve voice requests");
        return;
    }
    int allow = mp_form_bool(st, x, "muc#request_allow", 0);
    if (allow < 0) {
        muc_error(st, "modify", "bad-request", NULL);
        return;
    }
    if (!allow)
        return; /* skipped */
    const char *nick = mp_form_value(st, x, "muc#roomnick");
    const char *jid = mp_form_value(st, x, "muc#jid");
    struct muc_occupant *t = nick ? muc_occ_by_nick(r, nick) : NULL;
    if (!t && jid)
        t = muc_occ_by_jid(r, jid);
    if (!t) {
        muc_error(st, "cancel", "item-not-found", "The requester is not in the room");
        return;
    }
    if (t->role != ROLE_VISITOR)
        return; /* another moderator was quicker, or the role changed */
    const char *no = muc_may_set_role(o->role, muc_affil_of(r, o->real.bare), t->role,
                                      muc_affil_of(r, t->real.bare), ROLE_PARTICIPANT);
    if (no) {
        muc_error(st, strcmp(no, "forbidden") == 0 ? "auth" : "cancel", no, NULL);
        return;
    }
    t->role = ROLE_PARTICIPANT;
    muc_broadcast_presence(r, t, NULL, 0);
}

void muc_voice_message(struct muc_room *r, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    struct muc_occupant *o = muc_occ_by_jid(r, env->from.full);
    mp_xml *x = mp_form_find(mp_stanza_root(st));
    const char *type = mp_form_type(x);
    if (strcmp(type, "cancel") == 0)
        return; /* a moderator skipping a request */
    if (strcmp(type, "submit") != 0) {
        muc_error(st, "modify", "bad-request", NULL);
        return;
    }
    if (!o) {
        muc_error(st, "cancel", "not-acceptable", "You are not in this room");
        return;
    }
    /* the approval carries the requester; the request does not */
    if (mp_form_field(x, "muc#request_allow") || mp_form_field(x, "muc#jid"))
        approval(r, o, st, x);
    else
        request(r, o, st, x);
}
