/* muc.h - shared declarations of mod_muc (XEP-0045 Multi-User Chat).
 *
 * Files:
 *   mod_muc.c  descriptor, options, the service domain's dispatch, the
 *              room directory, disco, session tracking (an occupant whose
 *              session ends leaves its rooms)
 *   room.c     rooms and occupants: join, leave, nick change, presence
 *              broadcast, groupchat fan-out, private messages, subject,
 *              history, invitations, self-ping
 *   admin.c    muc#admin (roles, affiliations, lists) and muc#owner
 *              (configuration form, destruction)
 *   store.c    persistent rooms in a keyval store
 *   log.c      the room's log in an archive store: stanza ids (XEP-0359),
 *              history across restarts, XEP-0313 archive queries
 *   moderate.c XEP-0425 moderated retraction (tombstones in the log)
 *   voice.c    voice requests and their approval (§7.13, §8.6)
 *   register.c registration with a room, reserved nicks (§7.10, §7.12)
 *   rules.c    pure rules: permissions, history selection (rules.h)
 *
 * Threads: every stanza whose 'to' is room@domain[/nick] runs on the worker
 * chosen by the room's bare JID, so a room's struct is only ever touched
 * by that worker and needs no lock. The directory (name -> room) is shared
 * by all workers and guarded by one mutex held for lookups and updates
 * only; the summary it keeps for disco#items (name, public) is written
 * under that mutex. */
#ifndef MUC_H
#define MUC_H

#include <magpie/magpie.h>
#include <stdint.h>
#include "rules.h"

#define NS_MUC         "http://jabber.org/protocol/muc"
#define NS_MUC_USER    "http://jabber.org/protocol/muc#user"
#define NS_MUC_ADMIN   "http://jabber.org/protocol/muc#admin"
#define NS_MUC_OWNER   "http://jabber.org/protocol/muc#owner"
#define NS_DISCO_INFO  "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_XDATA       "jabber:x:data"
#define NS_DELAY       "urn:xmpp:delay"
#define NS_OCCUPANT_ID "urn:xmpp:occupant-id:0"
#define NS_PING        "urn:xmpp:ping"
#define NS_CONFERENCE  "jabber:x:conference"
#define NS_MAM         "urn:xmpp:mam:2"
#define NS_MAM_EXT     "urn:xmpp:mam:2#extended"
#define NS_SID         "urn:xmpp:sid:0"
#define NS_MODERATE    "urn:xmpp:message-moderate:1"
#define NS_RETRACT     "urn:xmpp:message-retract:1"
#define NS_REGISTER    "jabber:iq:register"

struct muc_config {
    char *name;
    char *desc;
    char *password; /* NULL: none */
    int persistent, public_, members_only, moderated;
    int whois_anyone; /* non-anonymous: every occupant sees real JIDs */
    int change_subject, allow_invites;
    int allow_pm;     /* private messages between occupants */
    long max_users;   /* 0: no limit */
    long history_len; /* messages kept for joiners */
    int mam;          /* messages archived, XEP-0313 on the room's JID */
};

struct muc_occupant {
    char *nick;
    mp_jid real;  /* full JID of the occupant's (first) session */
    mp_jid *more; /* further sessions of the same bare JID sharing the
                   * nick (multi-session occupant), n_more of them */
    size_t n_more;
    enum muc_role role;
    char occupant_id[40]; /* XEP-0421, stable per room and bare JID */
    mp_stanza *pres;     /* last available presence from the client (referenced) */
};

struct muc_affil_item {
    char *jid; /* bare */
    enum muc_affil affil;
    char *nick, *reason; /* optional */
};

struct muc_hist {
    mp_stanza *st; /* the groupchat message as broadcast, without 'to' (referenced) */
    int64_t ts;    /* unix seconds */
    size_t chars;
    int64_t us;    /* log time, unix microseconds (its stanza id's time) */
    int64_t aid;   /* archive id in the log once known, else 0 */
    char sid[MUC_SID_MAX]; /* XEP-0359 stanza id */
};

struct muc_room {
    char *node;          /* localpart */
    char *jid;           /* node@domain */
    struct muc_config cfg;
    int locked;          /* created and not configured yet (§10.1) */
    char salt[33];       /* for occupant ids */
    struct muc_occupant **occ;
    size_t n_occ;
    struct muc_affil_item *aff;
    size_t n_aff;
    char *subject, *subject_nick; /* NULL: no subject set */
    struct muc_hist *hist;       /* oldest first, at most cfg.history_len */
    size_t n_hist;
    int64_t last_ts;             /* last log time given (muc_stamp), µs */
    int64_t trim_upto;           /* log items up to this id may go (no archiving) */
    int trim_pending;
    unsigned long mam_appends; /* logged while archiving, for the limits' checks */
    int trim_busy, trim_again; /* a size trim of the log under way / wanted after it */
};

/* ---- mod_muc.c ---- */
extern mp_module *muc_self;
const char *muc_domain(void);
long muc_opt_history_max(void);
/* Room directory (shared by the workers; see above). */
struct muc_room *muc_room_get(const char *node);
void muc_room_put(struct muc_room *r);     /* adds, updates the summary */
void muc_room_summary(struct muc_room *r); /* summary changed (name, public) */
void muc_room_drop(struct muc_room *r);    /* removes; caller frees */
/* May this user create rooms? */
int muc_may_create(const mp_jid *user);
/* Fills defaults from the module's options. */
void muc_config_defaults(struct muc_config *c);

/* ---- room.c ---- */
struct muc_room *muc_room_new(const char *node);
void muc_room_free(struct muc_room *r);
/* Presence / message to the room or an occupant (stanza borrowed). */
void muc_room_presence(struct muc_room *r, mp_stanza *st);
void muc_room_message(struct muc_room *r, mp_stanza *st);
/* A join for a room that does not exist yet (creates it, or answers). */
void muc_room_create_join(const char *node, mp_stanza *st);
/* IQs at the room level. */
void muc_room_disco_info(struct muc_room *r, mp_stanza *iq);
void muc_room_disco_items(struct muc_room *r, mp_stanza *iq);
void muc_room_ping(struct muc_room *r, mp_stanza *iq);
void muc_room_iq_other(struct muc_room *r, mp_stanza *iq);

struct muc_occupant *muc_occ_by_nick(struct muc_room *r, const char *nick);
struct muc_occupant *muc_occ_by_jid(struct muc_room *r, const char *full);
enum muc_affil muc_affil_of(struct muc_room *r, const char *bare);
/* Sets (AFF_NONE: removes) an affiliation. */
void muc_affil_set(struct muc_room *r, const char *bare, enum muc_affil a, const char *reason);
size_t muc_count_affil(struct muc_room *r, enum muc_affil a);
/* Broadcasts occ's current presence to everyone (after a role or
 * affiliation change); codes are extra status codes for everyone. */
void muc_broadcast_presence(struct muc_room *r, struct muc_occupant *o, const int *codes, size_t n);
/* Removes occ from the room with an unavailable presence to all carrying
 * codes (307 kick, 301 ban, 321 affiliation change, 333 error), the actor's
 * nick and reason (may be NULL); frees it. */
void muc_remove_occupant(struct muc_room *r, struct muc_occupant *o, const int *codes, size_t n,
                         const char *actor_nick, const char *reason);
/* A groupchat message from the room itself with status codes. */
void muc_room_status_message(struct muc_room *r, const int *codes, size_t n);
/* Destroys the room: occupants get unavailable with <destroy/>, the room
 * leaves the directory and the store; r is freed. */
void muc_room_destroy(struct muc_room *r, const char *alt, const char *reason,
                      const char *password);
/* Frees the room if nobody is in it and it is not persistent; returns 1
 * if freed. */
int muc_room_gc(struct muc_room *r);
/* Drops the oldest history beyond cfg.history_len. */
void muc_history_trim(struct muc_room *r);

/* ---- admin.c ---- */
void muc_admin_get(struct muc_room *r, mp_stanza *iq);
void muc_admin_set(struct muc_room *r, mp_stanza *iq);
void muc_owner_get(struct muc_room *r, mp_stanza *iq);
void muc_owner_set(struct muc_room *r, mp_stanza *iq);
/* Adds the room configuration form (type form, or result) to parent. */
void muc_config_form(struct muc_room *r, mp_stanza *st, mp_xml *parent);

/* ---- store.c ---- */
/* Saves r (if persistent) / deletes it, asynchronously. */
void muc_store_save(struct muc_room *r);
void muc_store_delete(const char *node);
/* At load: restores every stored room into the directory. */
void muc_store_load_all(void);

/* ---- log.c ---- */
/* Gives the next message of r its log time (µs, increasing per room) and
 * its XEP-0359 stanza id. */
void muc_stamp(struct muc_room *r, int64_t *us, char sid[MUC_SID_MAX]);
/* Does r keep a log (archiving on, or persistent: history)? */
int muc_logging(const struct muc_room *r);
/* Logs m (the message as broadcast, borrowed) sent by o (NULL: the room)
 * with its stamp; kind 'm' message with a body, 's' subject, 'r'
 * retraction notice. Asynchronous. */
void muc_log_message(struct muc_room *r, mp_stanza *m, const struct muc_occupant *o, char kind,
                     int64_t us, const char *sid);
/* History entry h has just been dropped from memory (trims the log of
 * rooms that do not archive). */
void muc_log_dropped(struct muc_room *r, const struct muc_hist *h);
/* Deletes a room's whole log (asynchronous). */
void muc_log_delete(const char *node);
/* At start (synchronous): r's history and last log time from its log. */
void muc_log_load_history(struct muc_room *r);
/* XEP-0313: a query (iq set) and the form or metadata (iq get). */
void muc_mam_query(struct muc_room *r, mp_stanza *iq);
void muc_mam_get(struct muc_room *r, mp_stanza *iq);
/* Finds the logged message with stanza id sid; fn gets MAGPIE_OK with its
 * archive id, the message (borrowed, without its log data), the sender's
 * real JID, its kind and whether it is a tombstone; or MAGPIE_NOTFOUND /
 * MAGPIE_ERR. Returns MAGPIE_NOTFOUND at once for an id that is not one
 * of ours (fn is then not called), MAGPIE_ERR if the query was not queued. */
typedef void (*muc_log_found_fn)(void *ud, int rc, int64_t aid, mp_stanza *m, const char *jid,
                                 char kind, int tomb);
int muc_log_find(struct muc_room *r, const char *sid, muc_log_found_fn fn, void *ud);
/* Replaces log item aid by m (a tombstone; borrowed). */
void muc_log_replace(struct muc_room *r, int64_t aid, mp_stanza *m, const char *sid,
                     const char *jid, char kind);

/* ---- moderate.c ---- */
/* XEP-0425: a moderator's retraction request (iq set to the room). */
void muc_moderate(struct muc_room *r, mp_stanza *iq);

/* ---- voice.c ---- */
/* Is st (a message to the room) a muc#request form? */
int muc_is_voice_form(mp_stanza *st);
/* A voice request or a moderator's approval (st borrowed). */
void muc_voice_message(struct muc_room *r, mp_stanza *st);

/* ---- register.c ---- */
/* jabber:iq:register on the room's JID (get: the form, set: register). */
void muc_register_get(struct muc_room *r, mp_stanza *iq);
void muc_register_set(struct muc_room *r, mp_stanza *iq);
/* The nick reserved for bare in r (its affiliation item's), or NULL. */
const char *muc_reserved_nick(struct muc_room *r, const char *bare);
/* Is nick reserved in r for a user other than bare? */
int muc_nick_reserved_by_other(struct muc_room *r, const char *nick, const char *bare);
/* disco#info node x-roomuser-item: the asker's reserved nick (§7.12). */
void muc_reserved_nick_info(struct muc_room *r, mp_stanza *iq);

/* ---- helpers (room.c) ---- */
/* Sends st (built without 'to'; taken) to every session of occupant o. */
void muc_occ_send(const struct muc_occupant *o, mp_stanza *st);
/* Sends m (built without 'to', kept by the caller) to every occupant. */
void muc_fan_out(struct muc_room *r, mp_stanza *m);
/* Adds r's <stanza-id/> (XEP-0359) with id sid to m. */
void muc_add_stanza_id(struct muc_room *r, mp_stanza *m, const char *sid);
void muc_set_str(char **dst, const char *s); /* replaces, NULL allowed */
/* Adds <status code='N'/> to x. */
void muc_add_status(mp_stanza *st, mp_xml *x, int code);
/* Sends an error reply to st (copied; st borrowed). */
void muc_error(mp_stanza *st, const char *type, const char *cond, const char *text);

#endif
