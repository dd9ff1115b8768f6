/* core/server.h - the server's shared state: configuration, workers, limits. */
#ifndef MAGPIE_CORE_SERVER_H
#define MAGPIE_CORE_SERVER_H

#include <magpie/magpie.h>
#include <pthread.h>
#include <stdatomic.h>
#include "base/base.h"
#include "conf/config.h"
#include "xml/xmlstream.h"
#include "auth/authguard.h"

/* The workers and the server-wide state, defined by the daemon (main.c)
 * and filled before the workers start; read by every layer above base. */
struct mp_session;
struct mp_conn;
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
    struct mp_conn *conns;                 /* connections on module listeners (listener.c) */
    struct event *sweep;                   /* periodic idle sweep */
    struct ev_token_bucket_cfg *rate;      /* per-connection read rate, or NULL */
    struct ev_token_bucket_cfg *http_rate; /* the same for HTTP connections */
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

/* mp_host_is_local (module.h) is implemented in server.c. */

#endif
