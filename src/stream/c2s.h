/* stream/c2s.h - client-to-server streams. */
#ifndef MAGPIE_STREAM_C2S_H
#define MAGPIE_STREAM_C2S_H

#include <magpie/module.h>
#include "core/server.h"
#include "core/session.h"

struct mp_transport;
/* Takes an accepted socket on worker w; direct_tls for XEP-0368 ports. */
void mp_c2s_accept(struct mp_worker *w, int fd, int direct_tls);
/* Starts a client stream over transport t (taken) on worker w, from the
 * calling thread, which must be w's. Returns the session (owned by the
 * worker until the stream ends: take a reference to keep it) or NULL. */
mp_session *mp_c2s_open(struct mp_worker *w, struct mp_transport *t);
/* Delivers st to session s; runs on s's worker. Returns MAGPIE_OK (st
 * taken), or MAGPIE_ERR if s cannot take stanzas any more (closing, not
 * bound): st stays the caller's. */
int mp_c2s_deliver(mp_session *s, mp_stanza *st);
/* Stanzas a detached session keeps for its next connection; beyond, a
 * delivery fails (the router's undeliverable rules apply). */
#define MP_SESSION_QUEUE_MAX 4096
/* On s's worker: separates bound session s from its connection (freed
 * without a closing tag, as when a resumable client vanishes); s stays
 * bound and routable, and what is sent to it waits on it (bounded) until a
 * connection is attached, or it ends after timeout seconds (waiting
 * stanzas then go through the undeliverable rules). Not from inside s's
 * own stanza handling. MAGPIE_OK, or MAGPIE_ERR (not bound, closing, or
 * already detached). */
int mp_c2s_detach(mp_session *s, double timeout);
/* timeout > 0: when s, bound, loses its connection (EOF, error) it is
 * detached for timeout seconds instead of ended (XEP-0198 resumption
 * enabled); 0: it ends (the default). On s's worker. */
void mp_c2s_set_resumable(mp_session *s, double timeout);
/* On from's worker: detached session s takes over from's connection (from
 * is authenticated as the same account, not bound, its stream open), from
 * any worker: s moves to from's worker if needed. Waiting stanzas are
 * written first, in order, once each; later ones follow; from's shell
 * ends. Safe from inside from's stanza handling (XEP-0198 <resume/>).
 * MAGPIE_OK (done, or under way across workers: if s is gone by then,
 * from's stream is closed) or MAGPIE_ERR (nothing done). */
int mp_c2s_takeover(mp_session *s, mp_session *from);
/* Closes every session of w (shutdown). */
void mp_c2s_shutdown_worker(struct mp_worker *w);
/* Frees the calling worker thread's output scratch buffer. */
void mp_c2s_thread_exit(void);
/* Idle sweep of one worker: releases parsers of idle streams. */
void mp_c2s_sweep(struct mp_worker *w);
/* Kicks a session whose directory entry a newer bind took (conflict);
 * runs on old's worker, old referenced by the caller for the call. */
void mp_c2s_replaced(mp_session *old);

#endif
