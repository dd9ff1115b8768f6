/* rules.h - the pure parts of XEP-0045 Multi-User Chat: role and
 * affiliation names, who may change whose role or affiliation (XEP-0045
 * §8, §9, §10), what role an affiliation gets on entering, and which
 * history messages a joining occupant asks for (§7.2.15). No I/O, no
 * allocation: unit-tested in tests/unit/test_muc_rules.c. */
#ifndef MUC_RULES_H
#define MUC_RULES_H

#include <stddef.h>
#include <stdint.h>

/* Ordered: a higher value is higher in the hierarchy. */
enum muc_affil { AFF_OUTCAST = 0, AFF_NONE, AFF_MEMBER, AFF_ADMIN, AFF_OWNER };
enum muc_role { ROLE_NONE = 0, ROLE_VISITOR, ROLE_PARTICIPANT, ROLE_MODERATOR };

const char *muc_affil_name(enum muc_affil a);
const char *muc_role_name(enum muc_role r);
/* Parses a name; returns 0 and sets *out, or -1 if unknown. */
int muc_affil_parse(const char *s, enum muc_affil *out);
int muc_role_parse(const char *s, enum muc_role *out);

/* The role an occupant with affiliation a gets on entering (§5.1.2):
 * owners and admins moderate, members participate, others participate
 * unless the room is moderated (then visitors). Outcasts never enter
 * (ROLE_NONE). */
enum muc_role muc_default_role(enum muc_affil a, int moderated);

/* Outcomes of a permission check: MUC_OK or the XMPP stanza error
 * condition to answer with. */
#define MUC_OK NULL

/* May an actor (role, affiliation) change the role of a target occupant
 * (its current role and affiliation) to new_role? (§8.2 kick, §8.3/8.4
 * voice, §9.6/9.7 moderator). Returns MUC_OK, "forbidden" (the actor lacks
 * the privilege) or "not-allowed" (the target is protected by its
 * affiliation). */
const char *muc_may_set_role(enum muc_role actor_role, enum muc_affil actor_aff,
                             enum muc_role target_role, enum muc_affil target_aff,
                             enum muc_role new_role);

/* May an actor with affiliation actor_aff change a target's affiliation
 * from target_aff to new_aff? (§9.1-9.5, §10.3-10.7). Returns MUC_OK,
 * "forbidden" or "not-allowed". The last-owner rule (conflict) is the
 * caller's: it needs the owner count. */
const char *muc_may_set_affil(enum muc_affil actor_aff, enum muc_affil target_aff,
                              enum muc_affil new_aff);

/* May actor_aff retrieve the list of affiliation list_aff (§9.5 members,
 * §9.2 outcasts, §10.5 owners, §10.8 admins)? Admins and owners may read
 * every list; returns MUC_OK or "forbidden". */
const char *muc_may_list_affil(enum muc_affil actor_aff, enum muc_affil list_aff);
/* Role lists (moderators, participants, visitors): moderators. */
const char *muc_may_list_role(enum muc_role actor_role);

/* ---- history (§7.2.15) ---- */
struct muc_hist_meta {
    int64_t ts;   /* unix seconds the message was sent */
    size_t chars; /* length of the message's XML */
};
struct muc_hist_req {
    long maxchars;   /* < 0: not given */
    long maxstanzas; /* < 0: not given */
    long seconds;    /* < 0: not given */
    int64_t since;   /* < 0: not given (unix seconds) */
};
/* Index of the first of the n items (oldest first) to send to a joiner:
 * the items after it satisfy every limit given in req (maxchars counts
 * whole items only, newest first). Returns n for nothing. */
size_t muc_history_select(const struct muc_hist_meta *items, size_t n,
                          const struct muc_hist_req *req, int64_t now);

/* ---- stanza ids (XEP-0359) ----
 * A room names each message it logs by the time it logged it (unix
 * microseconds, unique and increasing per room) and a random tail, so an
 * id is unpredictable (XEP-0313 §3) yet tells where to look in the
 * archive: "<ts in hex>-<random hex>". */
#define MUC_SID_MAX 48

/* The next log time of a room whose last one was last, now being the
 * clock: now, or last + 1 when the clock has not moved on. */
int64_t muc_next_ts(int64_t last, int64_t now);
/* Writes the stanza id of ts with the random tail rnd (hex, 8 to 24
 * characters; longer is cut) into out. */
void muc_sid_format(int64_t ts, const char *rnd, char out[MUC_SID_MAX]);
/* The time of a stanza id written by muc_sid_format, or -1 when s is not
 * one (a client's made-up id). */
int64_t muc_sid_ts(const char *s);

#endif
