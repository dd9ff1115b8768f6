/* moderate.c - XEP-0425 Moderated Message Retraction (version 0.3.0,
 * urn:xmpp:message-moderate:1).
 *
 * A moderator asks the room to retract a message by its stanza id:
 *
 *   <iq type='set' to='room@domain'>
 *     <moderate xmlns='urn:xmpp:message-moderate:1' id='STANZA-ID'>
 *       <retract xmlns='urn:xmpp:message-retract:1'/>
 *       <reason>..</reason>
 *     </moderate></iq>
 *
 * The room finds the message (in its log when it keeps one, else in the
 * history it holds), replaces it there by a tombstone (§5: the message's
 * attributes, its author's occupant id and stanza id, and <retracted/> with
 * <moderated by=moderator/>), tells every occupant with an XEP-0424
 * <retract id=/> from the room's bare JID (§4, logged too, so that clients
 * catching up through the archive learn of it), and answers the IQ.
 * Anyone but a moderator gets forbidden; an id the room does not know,
 * item-not-found. A message already retracted is answered without a new
 * notice. */
#include "muc.h"

#include <magpie/proto.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct mod_req {
    mp_stanza *iq; /* referenced */
    char *node;
    char *sid;
    char *by;     /* the moderator's occupant JID */
    char oid[40]; /* and occupant id */
    char *reason; /* NULL: none */
};

static void req_free(struct mod_req *q)
{
    mp_stanza_unref(q->iq);
    free(q->node);
    free(q->sid);
    free(q->by);
    free(q->reason);
    free(q);
}

/* <moderated by=.. xmlns=moderate:1><occupant-id/></moderated> and the
 * reason, as children of parent (retract or retracted). */
static void add_moderation(mp_stanza *st, mp_xml *parent, const struct mod_req *q)
{
    mp_xml *m = mp_xml_add_child(st, parent, "moderated", NS_MODERATE);
    mp_xml_set_attr(st, m, "by", q->by);
    mp_xml_set_attr(st, mp_xml_add_child(st, m, "occupant-id", NS_OCCUPANT_ID), "id", q->oid);
    if (q->reason)
        mp_xml_add_text(st, mp_xml_add_child(st, parent, "reason", NS_RETRACT), q->reason,
                        strlen(q->reason));
}

static int is_el(const mp_xml *c, const char *name, const char *ns)
{
    return c->type == MP_XML_ELEMENT && strcmp(c->name, name) == 0 && c->ns &&
           strcmp(c->ns, ns) == 0;
}

/* The tombstone of m (§5): a new stanza with m's root attributes, its
 * author's occupant id and its stanza id, the content replaced by
 * <retracted/>. */
static mp_stanza *tombstone(mp_stanza *m, const struct mod_req *q)
{
    mp_xml *mr = mp_stanza_root(m);
    mp_stanza *t = mp_stanza_new("message", MP_NS_CLIENT);
    mp_xml *root = mp_stanza_root(t);
    for (const mp_xml_attr *a = mr->attrs; a; a = a->next)
        if (strcmp(a->name, "to") != 0)
            mp_xml_set_attr(t, root, a->name, a->value);
    char stamp[MP_DATETIME_MAX];
    mp_datetime_format(mp_now_us() / 1000000 * 1000000, stamp, sizeof stamp);
    mp_xml *r = mp_xml_add_child(t, root, "retracted", NS_RETRACT);
    mp_xml_set_attr(t, r, "stamp", stamp);
    add_moderation(t, r, q);
    for (mp_xml *c = mr->children; c; c = c->next)
        if (is_el(c, "occupant-id", NS_OCCUPANT_ID) || is_el(c, "stanza-id", NS_SID))
            mp_xml_add_copy(t, root, c);
    return t;
}

/* Replaces the retracted message in the room's history held for
 * newcomers (if it is still there). */
static void history_replace(struct muc_room *r, const struct mod_req *q)
{
    for (size_t i = r->n_hist; i-- > 0;)
        if (strcmp(r->hist[i].sid, q->sid) == 0) {
            mp_stanza *t = tombstone(r->hist[i].st, q);
            mp_stanza_unref(r->hist[i].st);
            r->hist[i].st = t;
            return;
        }
}

/* §4: the notice to every occupant, logged like a message, then the IQ's
 * result. */
static void announce(struct muc_room *r, struct mod_req *q)
{
    mp_stanza *m = mp_stanza_new_client("message", "groupchat", r->jid, NULL);
    mp_xml *root = mp_stanza_root(m);
    mp_xml *rt = mp_xml_add_child(m, root, "retract", NS_RETRACT);
    mp_xml_set_attr(m, rt, "id", q->sid);
    add_moderation(m, rt, q);
    int64_t us;
    char sid[MUC_SID_MAX];
    muc_stamp(r, &us, sid);
    muc_add_stanza_id(r, m, sid);
    muc_fan_out(r, m);
    muc_log_message(r, m, NULL, 'r', us, sid);
    mp_stanza_unref(m);
    mp_iq_reply(mp_iq_result(q->iq));
}

static void on_found(void *ud, int rc, int64_t aid, mp_stanza *m, const char *jid, char kind,
                     int tomb)
{
    struct mod_req *q = ud;
    struct muc_room *r = muc_room_get(q->node);
    if (rc == MAGPIE_ERR) {
        mp_iq_reply_error(q->iq, "wait", "internal-server-error");
    } else if (!r || rc == MAGPIE_NOTFOUND || kind != 'm') {
        /* gone with its room, never logged, or not a message (subjects
         * and notices are not retracted) */
        mp_iq_reply_error(q->iq, "cancel", "item-not-found");
    } else if (tomb) {
        mp_iq_reply(mp_iq_result(q->iq)); /* already retracted */
    } else {
        mp_stanza *t = tombstone(m, q);
        muc_log_replace(r, aid, t, q->sid, jid, 'm');
        mp_stanza_unref(t);
        history_replace(r, q);
        announce(r, q);
    }
    req_free(q);
}

void muc_moderate(struct muc_room *r, mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *mod = mp_xml_find(mp_stanza_root(iq), "moderate", NS_MODERATE);
    const char *sid = mod ? mp_xml_get_attr(mod, "id") : NULL;
    if (!sid || !*sid || !mp_xml_find(mod, "retract", NS_RETRACT)) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    struct muc_occupant *o = muc_occ_by_jid(r, env->from.full);
    if (!o || o->role != ROLE_MODERATOR) {
        muc_error(iq, "auth", "forbidden", "Only moderators may retract other occupants' messages");
        return;
    }
    struct mod_req *q = mp_calloc(1, sizeof *q);
    q->iq = mp_stanza_ref(iq);
    q->node = mp_strdup(r->node);
    q->sid = mp_strdup(sid);
    size_t l = strlen(r->jid) + strlen(o->nick) + 2;
    q->by = mp_malloc(l);
    snprintf(q->by, l, "%s/%s", r->jid, o->nick);
    snprintf(q->oid, sizeof q->oid, "%s", o->occupant_id);
    mp_xml *reason = mp_xml_find(mod, "reason", NULL);
    if (reason && *mp_xml_text(iq, reason))
        q->reason = mp_strdup(mp_xml_text(iq, reason));

    if (muc_logging(r)) {
        int rc = muc_log_find(r, sid, on_found, q);
        if (rc == MAGPIE_OK)
            return;
        if (rc == MAGPIE_NOTFOUND)
            mp_iq_reply_error(iq, "cancel", "item-not-found");
        else
            mp_iq_reply_error(iq, "wait", "internal-server-error");
        req_free(q);
        return;
    }
    /* no log: the history held in memory is all there is */
    for (size_t i = 0; i < r->n_hist; i++)
        if (strcmp(r->hist[i].sid, sid) == 0) {
            if (mp_xml_find(mp_stanza_root(r->hist[i].st), "retracted", NS_RETRACT)) {
                mp_iq_reply(mp_iq_result(iq));
            } else {
                history_replace(r, q);
                announce(r, q);
            }
            req_free(q);
            return;
        }
    mp_iq_reply_error(iq, "cancel", "item-not-found");
    req_free(q);
}
