/* adhoc.h - XEP-0050 ad-hoc commands for modules.
 *
 * A module registers a command in load():
 *
 *   mp_adhoc_command_add(m, "http://jabber.org/protocol/admin#announce",
 *                        "Send announcement to online users", MP_ADHOC_ADMIN, run, NULL);
 *
 * The core keeps the commands and the execution sessions (sessionid,
 * allowed actions, the module's per-session state, expiry); mod_adhoc is
 * the protocol front (the <command/> IQ, disco): without it no command is
 * reachable. The core checks who may run a command, the sessionid, the
 * action and answers cancel itself; the handler is called for execute,
 * next, prev and complete, and answers exactly once, now or later (from
 * a storage callback, on any thread), with mp_adhoc_send or
 * mp_adhoc_error. */
#ifndef MAGPIE_ADHOC_H
#define MAGPIE_ADHOC_H

#include <magpie/module.h>

#define MP_NS_COMMANDS "http://jabber.org/protocol/commands"

/* Who may run a command (and sees it in disco#items). */
enum mp_adhoc_access {
    MP_ADHOC_ADMIN = 0, /* the bare JIDs of the top-level `admins` list */
    MP_ADHOC_LOCAL = 1, /* any account of a virtual host of this server */
};

enum mp_adhoc_action {
    MP_ADHOC_EXECUTE = 0,
    MP_ADHOC_NEXT,
    MP_ADHOC_PREV,
    MP_ADHOC_COMPLETE,
    MP_ADHOC_CANCEL, /* handled by the core, never given to a handler */
};

enum mp_adhoc_status { MP_ADHOC_EXECUTING = 0, MP_ADHOC_COMPLETED, MP_ADHOC_CANCELED };

typedef struct mp_adhoc_req mp_adhoc_req;
typedef void (*mp_adhoc_fn)(mp_adhoc_req *r, void *ud);

/* Registers command node (its name shown in disco#items) for requesters
 * allowed by access. Returns MAGPIE_OK or MAGPIE_ERR (node taken). */
int mp_adhoc_command_add(mp_module *m, const char *node, const char *name,
                         enum mp_adhoc_access access, mp_adhoc_fn fn, void *ud);

/* Widens who may run command node (registered by m): besides the
 * requesters its access allows, those for whom allow(requester, ud)
 * returns 1 (the device gateway's own admins). Returns MAGPIE_OK or
 * MAGPIE_ERR (no such command of m). */
int mp_adhoc_command_allow(mp_module *m, const char *node,
                           int (*allow)(const mp_jid *requester, void *ud), void *ud);

/* ---- the request (valid until answered) ---- */
/* The <iq type='set'> (borrowed). */
mp_stanza *mp_adhoc_iq(mp_adhoc_req *r);
/* Its <command/> element. */
mp_xml *mp_adhoc_command(mp_adhoc_req *r);
/* The data form in the command (any type), or NULL. */
mp_xml *mp_adhoc_form(mp_adhoc_req *r);
enum mp_adhoc_action mp_adhoc_action(mp_adhoc_req *r);
/* The requester's full JID (the IQ's prepared 'from'). */
const mp_jid *mp_adhoc_requester(mp_adhoc_req *r);
/* How many times the handler answered "executing" in this session so far:
 * 0 for the first request. */
int mp_adhoc_stage(mp_adhoc_req *r);
/* The handler's state for this session (NULL at first). set_state replaces
 * it (the old one is freed with its free_fn); the core frees the state
 * with free_fn when the session ends (completed, canceled, error, expiry). */
void *mp_adhoc_state(mp_adhoc_req *r);
void mp_adhoc_set_state(mp_adhoc_req *r, void *state, void (*free_fn)(void *));

/* ---- the answer ---- */
/* A new <iq type='result'> with <command node= sessionid= status=>;
 * *cmd is set to the command element to which the handler adds a form, a
 * note, actions. Owned by the caller until mp_adhoc_send. */
mp_stanza *mp_adhoc_reply_new(mp_adhoc_req *r, enum mp_adhoc_status status, mp_xml **cmd);
/* Adds <actions execute=def><a/>...</actions>: allowed is a mask of
 * (1 << MP_ADHOC_NEXT | 1 << MP_ADHOC_PREV | 1 << MP_ADHOC_COMPLETE), def
 * the default (one of them). Requests of any other action (execute means
 * the default) are refused with bad-request/bad-action. Without actions
 * the requester may execute, next or complete. */
#define MP_ADHOC_ALLOW(a) (1u << (a))
void mp_adhoc_actions(mp_adhoc_req *r, mp_stanza *reply, mp_xml *cmd, unsigned allowed,
                      enum mp_adhoc_action def);
/* Adds <note type=type>text</note> (type "info", "warn" or "error"). */
void mp_adhoc_note(mp_stanza *reply, mp_xml *cmd, const char *type, const char *text);
/* Sends reply (ownership taken) and ends the request r; status executing
 * keeps the session for the next stage, the others end it. Any thread. */
void mp_adhoc_send(mp_adhoc_req *r, mp_stanza *reply);
/* Answers r with a stanza error (RFC 6120 condition) plus, when specific
 * is not NULL, the XEP-0050 condition <specific xmlns=commands> ("bad-action",
 * "bad-payload", "bad-sessionid", "malformed-action", "session-expired"),
 * and ends the session. Any thread. */
void mp_adhoc_error(mp_adhoc_req *r, const char *type, const char *condition,
                    const char *specific);
/* Shortcut: completes with one note (type "info" or "error"). */
void mp_adhoc_complete_note(mp_adhoc_req *r, const char *type, const char *text);

/* ---- for the protocol front (mod_adhoc) ---- */
/* Handles an <iq type='set'><command/></iq> to a host: checks, sessions,
 * calls the handler. Answers exactly once. */
void mp_adhoc_dispatch(mp_stanza *iq);
/* 1 if requester may run commands of that access. */
int mp_adhoc_allowed(enum mp_adhoc_access access, const mp_jid *requester);
/* Calls fn for each command requester may run, in the order registered. */
void mp_adhoc_commands_foreach(const mp_jid *requester,
                               void (*fn)(void *ud, const char *node, const char *name),
                               void *ud);
/* The name of command node if requester may run it: MAGPIE_OK, or
 * MAGPIE_NOTFOUND (no such command, or not for requester). name is
 * copied into buf. */
int mp_adhoc_command_lookup(const char *node, const mp_jid *requester, char *buf, size_t len);

#endif
