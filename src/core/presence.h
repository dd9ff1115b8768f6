/* core/presence.h - last available presence of each session. */
#ifndef MAGPIE_CORE_PRESENCE_H
#define MAGPIE_CORE_PRESENCE_H

#include <magpie/xml.h>
#include <stdint.h>

/* ---- presence.c: last available presence of each session, kept on the
 * session's worker (every call runs there) ---- */
/* Stores a copy of st (serialised: a few dozen bytes for a plain
 * presence, where a stanza takes hundreds) as session id's last available
 * presence; NULL forgets it. st stays the caller's. */
void mp_presence_store(uint64_t id, mp_stanza *st);
/* The stored presence of id as a new stanza (refcount 1, owned by the
 * caller), or NULL. */
mp_stanza *mp_presence_last(uint64_t id);
void mp_presence_forget(uint64_t id);
void mp_presence_thread_exit(void);

#endif
