/* core/session.h - a session as the core sees it.
 *
 * An account's session is an entity with a stable id, a bound full JID,
 * an owning worker, an output waitq (backpressure) and one data slot per
 * module, whatever carries it: a c2s stream over TCP/TLS today, WebSocket
 * or BOSH later. The kind that carries it embeds struct mp_session_base as
 * the first member of its struct mp_session and fills ops; the core
 * reaches the session only through them, so the core never calls up into
 * the stream layer. */
#ifndef MAGPIE_CORE_SESSION_H
#define MAGPIE_CORE_SESSION_H

#include <magpie/module.h>
#include <stdatomic.h>
#include <stdint.h>

struct mp_worker;
struct mp_waitq;

struct mp_session_ops {
    /* On s's worker: writes (or queues) st for s. MAGPIE_OK (st taken), or
     * MAGPIE_ERR when s cannot take stanzas any more (closing, not bound):
     * st stays the caller's. */
    int (*deliver)(mp_session *s, mp_stanza *st);
    /* On s's worker: a newer bind took s's full JID; close s (conflict). */
    void (*replaced)(mp_session *s);
    /* On s's worker: ends s with a stream error condition (NULL: a clean
     * close) and optional text, e.g. when its account was deleted. */
    void (*close)(mp_session *s, const char *condition, const char *text);
    /* The last reference is gone: free what the kind added to the base
     * (plain memory only: I/O was released on the owning worker), and s. */
    void (*release)(mp_session *s);
};

struct mp_session_base {
    const struct mp_session_ops *ops;
    atomic_int refs;
    int moving; /* moving to this worker: see held */
    uint64_t id;         /* stable for the session's life, unique in the process */
    struct mp_worker *w; /* owner; changes only by a handover (takeover) */
    mp_jid jid;          /* bound full JID (empty until bound) */
    struct mp_waitq *outq;
    void **mod_data; /* per-module slots (mp_session_set_data) */
    size_t n_mod_data;
    /* while moving to this worker (router.c), deliveries wait in held until
     * the old worker has forwarded what it had; owner's thread only */
    mp_stanza **held;
    size_t n_held, cap_held;
};

#define MP_SESSION_BASE(s) ((struct mp_session_base *)(void *)(s))

/* Initialises the base of a new session owned by worker w: a fresh id, one
 * reference (the owner's), a new waitq. */
void mp_session_base_init(struct mp_session_base *b, const struct mp_session_ops *ops,
                          struct mp_worker *w);
/* Session reference counting (atomic; the last unref frees the session
 * through ops->release). */
void mp_session_ref(mp_session *s);
void mp_session_unref(mp_session *s);
struct mp_worker *mp_session_worker(mp_session *s);
/* The waitq marking s's output as over its limit (pressure.c). */
struct mp_waitq *mp_session_outq(mp_session *s);
/* Through ops: see struct mp_session_ops. */
int mp_session_deliver(mp_session *s, mp_stanza *st);
void mp_session_replaced(mp_session *s);

#endif
