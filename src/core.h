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
    struct event *sweep;              /* periodic idle sweep */
    struct ev_token_bucket_cfg *rate; /* per-connection read rate, or NULL */
    int shutting_down;
};

struct mp_server {
    struct mp_config *cfg;
    struct mp_worker *workers;
    int n_workers;
    double started; /* mp_now() at start */
    struct mp_xml_limits limits;
    atomic_int connections; /* open client connections */
    atomic_int connections_peak; /* highest since the last heap trim */
    atomic_int sessions;    /* bound sessions */
    atomic_int next_worker; /* round robin for posted work */
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
    MP_STAT_REFUSED, /* connections over max_connections */
    MP_STAT_COUNT
};
void mp_stat_inc(enum mp_core_stat s);
/* Writes "name value\n" lines of every counter (core and modules). */
void mp_stats_write(struct evbuffer *out);

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
/* Takes an accepted socket on worker w; direct_tls for XEP-0368 ports. */
void mp_c2s_accept(struct mp_worker *w, int fd, int direct_tls);
/* Delivers st (reference taken over) to session s; runs on s's worker. */
void mp_c2s_deliver(mp_session *s, mp_stanza *st);
/* Closes every session of w (shutdown). */
void mp_c2s_shutdown_worker(struct mp_worker *w);
/* Frees the calling worker thread's output scratch buffer. */
void mp_c2s_thread_exit(void);
/* Idle sweep of one worker: releases parsers of idle streams. */
void mp_c2s_sweep(struct mp_worker *w);
/* Session reference counting (atomic; the last unref frees the shell). */
void mp_session_ref(mp_session *s);
void mp_session_unref(mp_session *s);
struct mp_worker *mp_session_worker(mp_session *s);

/* ---- router.c ---- */
int mp_router_init(void);
void mp_router_free(void);
/* Registers a bound session under its full JID. If a session with the same
 * full JID exists it is returned (referenced) in *replaced for the caller
 * to kick with a conflict error. */
int mp_router_bind(mp_session *s, mp_session **replaced);
void mp_router_unbind(mp_session *s);
/* Records presence of a session: available flag, priority, and the last
 * available presence stanza (ref taken, may be NULL). */
void mp_router_set_presence(mp_session *s, int available, int priority, mp_stanza *presence);
/* Handles a stanza from a bound client (from already stamped). Takes st. */
void mp_router_from_client(mp_session *s, mp_stanza *st);
/* Applies RFC 6121 §8.5.3.2 to st (taken), whose full-JID recipient is gone. */
void mp_router_undeliverable(mp_stanza *st);
/* Number of bound sessions. */
size_t mp_router_count(void);
/* Sends a stanza error reply for st (taken) unless st is itself an error. */
void mp_route_bounce(mp_stanza *st, const char *type, const char *condition, const char *text);

/* ---- module.c ---- */
int mp_modules_load(const struct mp_config *cfg);
void mp_modules_unload(void);
/* Runs hook handlers; returns HOOK_HANDLED or HOOK_PASS. */
int mp_hook_run(const char *hook, mp_session *s, mp_stanza *st, void *data);
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
