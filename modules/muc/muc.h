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
};

struct muc_occupant {
    char *nick;
    mp_jid real;         /* full JID of the occupant's session */
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

/* ---- helpers (room.c) ---- */
char *muc_strdup(const char *s);
void muc_set_str(char **dst, const char *s); /* replaces, NULL allowed */
/* Adds <status code='N'/> to x. */
void muc_add_status(mp_stanza *st, mp_xml *x, int code);
/* Sends an error reply to st (copied; st borrowed). */
void muc_error(mp_stanza *st, const char *type, const char *cond, const char *text);

#endif
