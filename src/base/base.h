/* base/base.h - the lowest layer: log set-up, loops, memory and clock helpers,
 * backpressure, thread pools and counters. Includes nothing of the project
 * but the public headers. */
#ifndef MAGPIE_BASE_BASE_H
#define MAGPIE_BASE_BASE_H

#include <magpie/magpie.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Configures the log: level name ("debug".."error") and destination (NULL
 * or "-": stderr, "syslog", else a file appended to). Returns MAGPIE_OK or
 * MAGPIE_ERR (bad level or unwritable file). Safe to call again (SIGHUP). */
int mp_log_setup(const char *level, const char *dest);
int mp_log_level_parse(const char *name, enum mp_log_level *out);

/* Creates a loop running on the calling thread when mp_loop_run is called.
 * Returns a new loop the caller frees with mp_loop_free. */
mp_loop *mp_loop_new(void);
void mp_loop_free(mp_loop *loop);
/* Makes loop the calling thread's current loop (mp_loop_current). */
void mp_loop_bind_thread(mp_loop *loop);
/* Runs until mp_loop_stop. */
void mp_loop_run(mp_loop *loop);
/* Thread-safe: asks loop to return from mp_loop_run once its queue is empty. */
void mp_loop_stop(mp_loop *loop);
/* Sets the soft bound of the loop's posted-call queue (0: none): above it,
 * posting notes the loop's waitq (pressure.c) so the sender is paused. */
void mp_loop_set_bound(mp_loop *loop, size_t bound);
/* Calls posted and not yet run. */
size_t mp_loop_pending(mp_loop *loop);

/* Work deferred to the end of the current loop turn: once the callbacks
 * that are active now have run (I/O, timers, posted calls), the queued
 * hooks run in the order they were queued. Used to coalesce output: every
 * stanza written to a connection during a turn leaves in one send. A hook
 * is embedded in its owner (zeroed = not queued); fn may queue it again
 * (it then runs once more in the same turn) and may cancel or free other
 * hooks. Loop thread only. */
struct mp_turn_hook {
    struct mp_turn_hook *next, *prev; /* NULL while not queued */
    void (*fn)(struct mp_turn_hook *h);
};
/* Queues h (fn set) on loop, the calling thread's loop; no-op if queued. */
void mp_loop_at_turn_end(mp_loop *loop, struct mp_turn_hook *h);
/* Unqueues h if queued (call before freeing its owner). */
void mp_turn_hook_cancel(struct mp_turn_hook *h);

/* Monotonic clock in seconds. */
double mp_now(void);
/* Fills buf with len random bytes from OpenSSL's CSPRNG. */
void mp_random_bytes(void *buf, size_t len);
/* mp_malloc, mp_calloc, mp_realloc, mp_strdup, mp_memdup0 (util.c): in
 * <magpie/alloc.h>, public for modules. */
/* Per-thread slab pool (slab.c) for memory that comes and goes with a
 * connection's activity (expat parsers), kept out of the main heap so that
 * freeing it leaves no holes between long-lived objects. mp_slab_alloc
 * returns a 16-aligned block of at least n <= MP_SLAB_MAX bytes, or NULL
 * (n too big, or no memory); mp_slab_free (any thread) takes it back.
 * mp_slab_size: the bytes a request of n really takes; mp_slab_mapped: the
 * bytes all pools have mapped. */
#define MP_SLAB_MAX (16 * 1024)
void *mp_slab_alloc(size_t n);
void mp_slab_free(void *b);
size_t mp_slab_size(size_t n);
size_t mp_slab_mapped(void);
/* Writes the per-address accounting key of a peer: its IPv4 address
 * ("192.0.2.1", also for IPv4-mapped IPv6) or its IPv6 /64
 * ("2001:db8:1:2::/64"); "local" for other families. */
struct sockaddr;
void mp_addr_key(const struct sockaddr *sa, char *key, size_t len);
/* Room for any key: the longest is an IPv6 /64, 21 + 3 characters. */
#define MP_ADDR_KEY_LEN 25

/* backpressure between bounded queues and their senders */
struct mp_waitq;
/* A new waitq, not congested, one reference owned by the caller. */
struct mp_waitq *mp_waitq_new(void);
struct mp_waitq *mp_waitq_ref(struct mp_waitq *q);
/* Drops a reference; the last one wakes any waiters and frees q. */
void mp_waitq_unref(struct mp_waitq *q);
/* The owner marks its queue over (1) or back under (0) its bound. Clearing
 * runs every registered wake function once, on the calling thread. */
void mp_waitq_set(struct mp_waitq *q, int congested);
int mp_waitq_congested(const struct mp_waitq *q);
/* Registers wake(arg) to run when q is cleared. Returns MAGPIE_OK, or
 * MAGPIE_AGAIN (nothing registered) if q is not congested any more. */
int mp_waitq_wait(struct mp_waitq *q, void (*wake)(void *), void *arg);
/* Starts collecting notes on the calling thread (for one peer's stanza). */
void mp_pressure_begin(void);
/* While collecting: notes that the work being done for the current peer
 * added to q while it is congested (no-op otherwise, and when not
 * collecting); takes a reference on q. */
void mp_pressure_note(struct mp_waitq *q);
/* Ends collecting: moves up to max notes into out (the caller gets their
 * references), forgets the rest; returns how many. */
size_t mp_pressure_take(struct mp_waitq **out, size_t max);

/* threads for CPU-heavy jobs off the event loops */
typedef struct mp_workpool mp_workpool;
/* Starts threads (>= 1) that run submitted jobs; at most max_queued jobs
 * wait for a thread. Returns a new pool (free with mp_workpool_free) or
 * NULL (logged). */
mp_workpool *mp_workpool_new(const char *name, int threads, size_t max_queued);
/* Queues work(arg) for a pool thread; then done(arg, MAGPIE_OK) runs on the
 * calling thread's loop (mp_loop_current; on the pool thread if there is
 * none). Returns MAGPIE_OK (done will run exactly once), MAGPIE_AGAIN
 * (queue full) or MAGPIE_ERR (pool stopping); then done never runs. */
int mp_workpool_submit(mp_workpool *p, void (*work)(void *), void (*done)(void *, int), void *arg);
/* Jobs waiting for a thread. */
size_t mp_workpool_queued(mp_workpool *p);
/* Stops the pool: jobs not yet started are cancelled (their done gets
 * MAGPIE_ERR, posted like the others), running ones finish; then joins the
 * threads. Call before the loops that receive completions are freed. */
void mp_workpool_free(mp_workpool *p);

/* core counters, shown by magpiectl status */
enum mp_core_stat {
    MP_STAT_CONNECTIONS_TOTAL,
    MP_STAT_TLS_HANDSHAKES,
    MP_STAT_TLS_FAILURES,
    MP_STAT_AUTH_SUCCESS,
    MP_STAT_AUTH_FAILURES,
    MP_STAT_STANZAS_IN,
    MP_STAT_STANZAS_OUT,
    MP_STAT_STREAM_ERRORS,
    MP_STAT_PEER_CLOSED, /* reset by peer, EOF, timeouts */
    MP_STAT_BOUNCES,
    MP_STAT_REFUSED,            /* connections over max_connections */
    MP_STAT_AUTH_DELAYED,       /* failure answers delayed by throttling */
    MP_STAT_AUTH_POOL_REJECTED, /* logins refused: key derivation queue full */
    MP_STAT_REFUSED_ADDRESS,    /* over the per-address count or rate */
    MP_STAT_SENDERS_PAUSED,     /* times a session stopped being read for a full queue */
    MP_STAT_OUTPUT_STALLED,     /* clients cut off for not reading a full output buffer */
    MP_STAT_COUNT
};
/* Counts one event in the calling thread's slot (no shared cache line). */
void mp_stat_inc(enum mp_core_stat s);
/* A counter's value: the sum of every slot. */
uint64_t mp_stat_get(enum mp_core_stat s);
/* The calling thread's counter slot, 0..MP_STAT_SLOTS-1 (module counters
 * use the same slots). */
#define MP_STAT_SLOTS 16
int mp_stat_slot(void);
/* Writes "name value\n" lines of the core counters. */
struct evbuffer;
void mp_stat_write_all(struct evbuffer *out);

#endif
