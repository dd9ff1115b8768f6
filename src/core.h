/* core.h - the core's internal hub header. Modules never include it. */
#ifndef MAGPIE_CORE_H
#define MAGPIE_CORE_H

#include <magpie/magpie.h>
#include <pthread.h>
#include <stdatomic.h>

struct mp_config;

/* ---- log.c ---- */
/* Configures the log: level name ("debug".."error") and destination (NULL
 * or "-": stderr, "syslog", else a file appended to). Returns MAGPIE_OK or
 * MAGPIE_ERR (bad level or unwritable file). Safe to call again (SIGHUP). */
int mp_log_setup(const char *level, const char *dest);
int mp_log_level_parse(const char *name, enum mp_log_level *out);

/* ---- loop.c ---- */
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

/* ---- util.c ---- */
/* Monotonic clock in seconds. */
double mp_now(void);
/* Fills buf with len random bytes from OpenSSL's CSPRNG. */
void mp_random_bytes(void *buf, size_t len);
/* strdup that aborts on OOM. */
char *mp_strdup(const char *s);
/* Copies n bytes into a new buffer with a NUL after them (caller frees). */
char *mp_memdup0(const void *p, size_t n);
void *mp_malloc(size_t n);
void *mp_calloc(size_t n, size_t m);
void *mp_realloc(void *p, size_t n);
/* Writes the per-address accounting key of a peer: its IPv4 address
 * ("192.0.2.1", also for IPv4-mapped IPv6) or its IPv6 /64
 * ("2001:db8:1:2::/64"); "local" for other families. */
struct sockaddr;
void mp_addr_key(const struct sockaddr *sa, char *key, size_t len);

/* ---- pressure.c: backpressure between bounded queues and their senders ---- */
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

/* ---- workpool.c: threads for CPU-heavy jobs off the event loops ---- */
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

/* ---- authguard.c: throttling of failed logins (see the file) ---- */
enum { MP_AUTHGUARD_ADDRESS = 0, MP_AUTHGUARD_ACCOUNT = 1, MP_AUTHGUARD_KINDS };
#define MP_AUTHGUARD_MAX_ENTRIES 65536 /* per table */
typedef struct mp_authguard mp_authguard;
/* A new guard (thread-safe; free with mp_authguard_free): failures_free
 * failures within window seconds are answered at once, later ones after
 * 1 s doubling up to delay_max; max_entries bounds each table. */
mp_authguard *mp_authguard_new(unsigned failures_free, double delay_max, double window,
                               size_t max_entries);
void mp_authguard_free(mp_authguard *g);
/* Counts a failed login from the address addr (its mp_addr_key; NULL or
 * "": no address count) for account ("user@host", or NULL) at time now
 * (mp_now()). Returns the seconds to delay the failure answer (0: none). */
double mp_authguard_failure(mp_authguard *g, const char *addr, const char *account, double now);
/* A successful login of account: its count starts over. */
void mp_authguard_success(mp_authguard *g, const char *account);
/* Failures counted now for an address (its mp_addr_key) or an account. */
unsigned mp_authguard_failures(mp_authguard *g, int kind, const char *what, double now);
/* Per kind: entries over the free failures (throttled) and all entries. */
void mp_authguard_stats(mp_authguard *g, double now, size_t *throttled, size_t *entries);
/* The delay after the failures-th failure (pure arithmetic). */
double mp_authguard_delay(unsigned failures, unsigned failures_free, double delay_max);

/* ---- fanout.c: one stanza handed to several recipients ---- */
struct mp_fanout;
/* A fan-out of n hand-overs of st (a reference is taken). When the last
 * one is recorded and none succeeded, undeliverable(st) runs once, on that
 * thread, and takes the reference; otherwise it is dropped. */
struct mp_fanout *mp_fanout_new(mp_stanza *st, int n, void (*undeliverable)(mp_stanza *st));
/* Records one hand-over (delivered: it succeeded); the last frees fo. */
void mp_fanout_done(struct mp_fanout *fo, int delivered);

/* ---- the server (main.c, worker.c) ---- */
#include <openssl/ssl.h>
#include "config.h"
#include "table.h"
#include "xmlstream.h"
#include "sasl.h"

struct bufferevent;
struct evbuffer;
struct evconnlistener;
struct event;
struct ev_token_bucket_cfg;

struct mp_worker {
    int id;
    mp_loop *loop;
    pthread_t thread;
    struct evconnlistener **listeners; /* one per configured listener */
    size_t n_listeners;
    void **listener_args;        /* worker.c's per-listener state */
    struct mp_session *sessions; /* every connection on this worker */
    size_t n_sessions;
    struct mp_conn *conns; /* connections on module listeners (listener.c) */
    struct event *sweep;              /* periodic idle sweep */
    struct ev_token_bucket_cfg *rate; /* per-connection read rate, or NULL */
    int shutting_down;
};

struct mp_server {
    struct mp_config *cfg;
    struct mp_worker *workers;
    int n_workers;
    double started;                      /* mp_now() at start */
    struct mp_xml_limits limits;         /* parser limits once authenticated */
    struct mp_xml_limits preauth_limits; /* ... and before (small) */
    atomic_int connections;              /* open client connections */
    atomic_int connections_peak;         /* highest since the last heap trim */
    atomic_int sessions;                 /* bound sessions */
    atomic_int next_worker;              /* round robin for posted work */
    mp_workpool *auth_pool;              /* PBKDF2 of logins (security.auth_threads) */
    mp_authguard *auth_guard;            /* failed-login throttling */
    volatile int stopping;
};

extern struct mp_server mp_server;

/* Creates the workers and their listening sockets, then starts the
 * threads. Returns MAGPIE_OK or MAGPIE_ERR (logged). */
int mp_workers_start(void);
/* Closes listeners and every stream, then joins the threads. */
void mp_workers_stop(void);
void mp_workers_free(void);

/* ---- stats.c: core counters, shown by magpiectl status ---- */
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
/* Writes "name value\n" lines of every counter (core and modules). */
void mp_stats_write(struct evbuffer *out);

/* ---- addrlimit.c: per-address connection count and rate ---- */
/* Counts a new connection from key: MAGPIE_OK, or MAGPIE_ERR when the
 * address holds too many or opens them too fast (nothing counted). */
int mp_addrlimit_acquire(const char *key);
/* Forgets one connection of key (once per successful acquire). */
void mp_addrlimit_release(const char *key);
/* Drops entries with no connection and a full bucket. */
void mp_addrlimit_prune(void);
size_t mp_addrlimit_count(void);
void mp_addrlimit_free(void);

/* ---- tls.c ---- */
/* Loads (or generates self-signed) certificates for every host and builds
 * the SSL_CTXs. Returns MAGPIE_OK or MAGPIE_ERR (logged). Callable again on
 * SIGHUP: new contexts replace the old ones for new connections. */
int mp_tls_init(const struct mp_config *cfg);
void mp_tls_shutdown(void);
/* Returns a new server-side SSL for an accepted connection (SNI picks the
 * host's certificate), or NULL. */
SSL *mp_tls_new_ssl(const char *default_host);
/* Fills channel binding data of an established TLS connection. */
void mp_tls_channel_binding(SSL *ssl, struct mp_sasl_cb *cb);

/* ---- c2s.c ---- */
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
/* The session's stable id (unique in this process, never reused). */
uint64_t mp_session_id(mp_session *s);
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
/* The waitq marking s's output as over its limit (pressure.c). */
struct mp_waitq *mp_session_outq(mp_session *s);
/* Closes every session of w (shutdown). */
void mp_c2s_shutdown_worker(struct mp_worker *w);
/* Frees the calling worker thread's output scratch buffer. */
void mp_c2s_thread_exit(void);
/* Idle sweep of one worker: releases parsers of idle streams. */
void mp_c2s_sweep(struct mp_worker *w);
/* Kicks a session whose directory entry a newer bind took (conflict);
 * runs on old's worker, old referenced by the caller for the call. */
void mp_c2s_replaced(mp_session *old);
/* Session reference counting (atomic; the last unref frees the shell). */
void mp_session_ref(mp_session *s);
void mp_session_unref(mp_session *s);
struct mp_worker *mp_session_worker(mp_session *s);

/* ---- listener.c: listeners registered by modules ---- */
struct mp_conn;
struct mp_listener_reg;
size_t mp_listeners_count(void);
/* The i-th registration and where it listens. */
const struct mp_listener_reg *mp_listener_get(size_t i, const char **address, int *port);
/* Forgets every registration (after the modules are unloaded). */
void mp_listeners_clear(void);
/* Takes a socket accepted on reg's listener by worker w. */
void mp_listener_accept(struct mp_worker *w, const struct mp_listener_reg *reg, int fd);
/* Ends every module-listener connection of w (shutdown, on w's thread). */
void mp_listener_shutdown_worker(struct mp_worker *w);
void mp_listener_thread_exit(void);

/* ---- router.c ---- */
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
/* Handles a stanza from a bound client (from already stamped). Takes st. */
void mp_router_from_client(mp_session *s, mp_stanza *st);
/* Applies RFC 6121 §8.5.3.2 to st (taken), whose full-JID recipient is gone. */
void mp_router_undeliverable(mp_stanza *st);
/* Number of bound sessions. */
size_t mp_router_count(void);
/* Sends a stanza error reply for st (taken) unless st is itself an error. */
void mp_route_bounce(mp_stanza *st, const char *type, const char *condition, const char *text);

/* ---- presence.c: last available presence of each session, kept on the
 * session's worker (every call runs there) ---- */
/* Stores st (a reference is taken) as session id's last available
 * presence; NULL forgets it. */
void mp_presence_store(uint64_t id, mp_stanza *st);
/* The stored presence of id (borrowed), or NULL. */
mp_stanza *mp_presence_last(uint64_t id);
void mp_presence_forget(uint64_t id);
void mp_presence_thread_exit(void);

/* ---- module.c ---- */
int mp_modules_load(const struct mp_config *cfg);
void mp_modules_unload(void);
/* Runs hook handlers; returns HOOK_HANDLED or HOOK_PASS. */
int mp_hook_run(const char *hook, mp_session *s, mp_stanza *st, void *data);
/* Runs every handler of a hook whatever they return (notifications). */
void mp_hook_run_all(const char *hook, mp_session *s, mp_stanza *st, void *data);
/* Runs the filters of dir (then, inbound, the "stanza-in" hook) on st
 * (borrowed); MP_FILTER_PASS or MP_FILTER_STOP. */
int mp_filters_run(enum mp_filter_dir dir, mp_session *s, mp_stanza *st);
/* Typed notifications (module.h, struct mp_notify), then the string hook
 * of the same name where one exists; every subscriber is called. */
void mp_notify_session_started(mp_session *s);
void mp_notify_session_ended(mp_session *s);
void mp_notify_presence_changed(mp_session *s, mp_stanza *presence, int available);
void mp_notify_account_deleted(const char *domain, const char *user);
/* The module-served domain named name (normalised), or NULL. */
mp_domain *mp_domain_find(const char *name);
/* Hands st (taken) to d on the calling worker: its IQ handlers, its disco
 * answer, then its handler; unanswered requests bounce. */
void mp_domain_deliver(mp_domain *d, mp_stanza *st);
/* Finds the IQ handler for (type, ns, scope); returns MAGPIE_OK and calls it,
 * or MAGPIE_NOTFOUND. Does not take iq (handler gets a borrowed ref). */
int mp_iq_dispatch(mp_stanza *iq, enum mp_iq_scope scope);
void mp_stream_features_add(mp_session *s, mp_stanza *st, mp_xml *features,
                            enum mp_feature_stage stage);
size_t mp_modules_count(void);
/* The module's slot in per-session data arrays. */
int mp_module_index(mp_module *m);
void mp_module_counters_write(struct evbuffer *out);

/* ---- control.c ---- */
/* Listens on <state_dir>/magpied.sock on the main loop. */
int mp_control_start(mp_loop *loop, const struct mp_config *cfg);
void mp_control_stop(void);
/* Set by main: the reload action (SIGHUP and "reload" command). */
extern void (*mp_control_reload)(void);

#endif
