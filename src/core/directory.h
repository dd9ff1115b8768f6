/* directory.h - the session directory: which resources of a bare JID are
 * bound, where they live, and whether they may receive stanzas.
 *
 * The directory hands out addresses, never session pointers: a resource is
 * (session id, owning worker index). A caller that wants to reach the
 * session posts work to that worker, which looks the id up in its own
 * session registry (router.c, mp_session_find) and may find it gone. So a
 * directory entry may outlive its session for a moment, and a cluster
 * implementation (Redis, ROADMAP) can return addresses on other nodes
 * behind the same calls.
 *
 * Presence *stanzas* are not kept here (presence.c holds them on the
 * session's worker); the directory keeps only what routing reads:
 * availability and priority.
 *
 * All calls are thread-safe and never block on I/O in the local
 * implementation (src/directory.c: sharded read-write locks, one shard per
 * bare-JID hash, held only for the copy in or out). */
#ifndef MAGPIE_DIRECTORY_H
#define MAGPIE_DIRECTORY_H

#include <magpie/magpie.h>
#include <stdint.h>

struct mp_waitq;

/* Where a session lives: its id (mp_session_id) and worker index. outq is
 * the session's output waitq (pressure.c) when the session is on this
 * node: given to bind (the directory keeps a reference), and returned by
 * lookups, referenced, only while it is congested (else NULL): the caller
 * notes it (mp_pressure_note) and drops the reference. It lets a sender be
 * paused for a slow recipient without touching the recipient's session. */
struct mp_sref {
    uint64_t id;
    int worker;
    struct mp_waitq *outq;
};

/* One bound resource as seen in a lookup. */
struct mp_dir_res {
    struct mp_sref who;
    int available;
    int priority;
};

struct mp_directory_ops {
    /* Binds full (bare + resource) to who, unavailable, priority 0. If the
     * full JID was bound to another session, that session's address is
     * written to *replaced (its entry now belongs to who) and MAGPIE_AGAIN
     * returned; else MAGPIE_OK. */
    int (*bind)(const mp_jid *full, struct mp_sref who, struct mp_sref *replaced);
    /* Removes full if it is still bound to session id. Returns MAGPIE_OK
     * and sets *was_available, or MAGPIE_NOTFOUND. */
    int (*unbind)(const mp_jid *full, uint64_t id, int *was_available);
    /* Points full at worker if it is still bound to session id (the
     * session moved: stream-management takeover). Returns MAGPIE_OK or
     * MAGPIE_NOTFOUND. */
    int (*move)(const mp_jid *full, uint64_t id, int worker);
    /* Sets availability and priority of full if still bound to id.
     * Returns MAGPIE_OK and sets *was_available, or MAGPIE_NOTFOUND. */
    int (*set_presence)(const mp_jid *full, uint64_t id, int available, int priority,
                        int *was_available);
    /* Copies up to max resources of bare into out. Returns how many are
     * bound, which may exceed max: call again with room for that many. */
    size_t (*lookup_bare)(const char *bare, struct mp_dir_res *out, size_t max);
    /* Calls fn for each resource of bare, under the directory's lock: fn
     * only copies what it needs (no other directory call, no delivery). */
    void (*resources)(const char *bare,
                      void (*fn)(void *ud, const struct mp_dir_res *r, const char *resource),
                      void *ud);
    /* The session bound to full: MAGPIE_OK and *out, or MAGPIE_NOTFOUND. */
    int (*lookup_full)(const mp_jid *full, struct mp_sref *out);
    /* Bound resources in total. */
    size_t (*count)(void);
    void (*free)(void);
};

/* The directory in use (set by mp_directory_local_init). */
extern const struct mp_directory_ops *mp_directory;

/* Installs the in-process directory. Returns MAGPIE_OK. */
int mp_directory_local_init(void);

#endif
