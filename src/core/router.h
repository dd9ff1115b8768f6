/* core/router.h - routing of stanzas to entities. */
#ifndef MAGPIE_CORE_ROUTER_H
#define MAGPIE_CORE_ROUTER_H

#include <magpie/module.h>
#include "core/server.h"

int mp_router_init(void);
void mp_router_free(void);
/* Frees the calling worker's session registry (worker exit). */
void mp_router_thread_exit(void);
/* Registers a bound session (on its own worker) under its full JID. If a
 * session with the same full JID exists on this worker it is returned
 * (referenced) in *replaced for the caller to kick with a conflict error;
 * one on another worker is kicked there (mp_c2s_replaced). */
int mp_router_bind(mp_session *s, mp_session **replaced);
void mp_router_unbind(mp_session *s);
/* A bound session moved to another worker (takeover): runs on the new
 * worker, with the session's last presence taken from the old worker
 * (mp_presence_last there; may be NULL). The session is found here and
 * the directory points here from now on; the old worker keeps finding it
 * (and c2s forwards what reaches it) until a job posted there forgets it. */
void mp_router_session_arrive(mp_session *s, struct mp_worker *old, mp_stanza *presence);
/* The worker of the session bound to full JID `full` if its id is id:
 * MAGPIE_OK, else MAGPIE_NOTFOUND. */
int mp_router_find_full(const char *full, uint64_t id, int *worker);
/* Handles a stanza from a bound client (from already stamped). Takes st. */
void mp_router_from_client(mp_session *s, mp_stanza *st);
/* Applies RFC 6121 §8.5.3.2 to st (taken), whose full-JID recipient is gone. */
void mp_router_undeliverable(mp_stanza *st);
/* Number of bound sessions. */
size_t mp_router_count(void);
/* Sends a stanza error reply for st (taken) unless st is itself an error. */
void mp_route_bounce(mp_stanza *st, const char *type, const char *condition, const char *text);

#endif
