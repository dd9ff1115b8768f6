/* worker.c - worker threads: each runs one loop, owns the connections it
 * accepts, and has its own SO_REUSEPORT listening socket per configured
 * listener, so the kernel spreads new connections across workers. */
#include "base/base.h"
#include "core/server.h"
#include "core/router.h"
#include "stream/c2s.h"
#include "stream/listener.h"
#include "http/http.h"
#include "net/transport.h"
#include "server/worker.h"
#include "net/addrlimit.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/bufferevent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct listener_arg {
    struct mp_worker *w;
    int direct_tls;
    int http;                          /* an "http" listener (http/http.c); direct_tls: over TLS */
    const struct mp_listener_reg *reg; /* a module's listener, or NULL: c2s */
    struct event *resume;              /* re-enables the listener after EMFILE */
};

/* A connection on an "http" listener: TLS (if configured) with the first
 * host's certificate, unless SNI names another host. */
static void http_accept(struct mp_worker *w, int fd, int tls)
{
    if (w->shutting_down) {
        close(fd);
        return;
    }
    char key[64];
    if (mp_addrlimit_acquire_fd(fd, key, sizeof key) != MAGPIE_OK) {
        mp_log(MP_LOG_DEBUG, "http: %s over its connection limits, refused", key);
        close(fd);
        return;
    }
    struct mp_transport *t = mp_transport_tcp_new(mp_loop_base(w->loop), fd, w->http_rate, tls,
                                                  mp_server.cfg->hosts[0].domain);
    if (!t) {
        mp_addrlimit_release(key);
        return;
    }
    mp_log(MP_LOG_DEBUG, "http: connection from %s", t->peer);
    mp_http_serve(t, key);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    (void)l;
    (void)sa;
    (void)socklen;
    struct listener_arg *la = arg;
    if (la->reg)
        mp_listener_accept(la->w, la->reg, fd);
    else if (la->http)
        http_accept(la->w, fd, la->direct_tls);
    else
        mp_c2s_accept(la->w, fd, la->direct_tls);
}

static void resume_listener(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct evconnlistener *l = arg;
    evconnlistener_enable(l);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct listener_arg *la = arg;
    int err = EVUTIL_SOCKET_ERROR();
    mp_log(MP_LOG_WARN, "accept failed: %s; pausing this listener for 1s",
           evutil_socket_error_to_string(err));
    evconnlistener_disable(l);
    if (!la->resume)
        la->resume = evtimer_new(evconnlistener_get_base(l), resume_listener, l);
    struct timeval tv = {1, 0};
    evtimer_add(la->resume, &tv);
}

/* Opens a listening socket with SO_REUSEPORT. Returns the fd or -1 (logged). */
static int open_listener(const struct mp_config_listener *cl)
{
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", cl->port);
    int rc = getaddrinfo(cl->address, port, &hints, &ai);
    if (rc != 0) {
        mp_log(MP_LOG_ERROR, "listener %s:%d: %s", cl->address, cl->port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
            mp_log(MP_LOG_ERROR, "cannot listen on %s:%d: %s", cl->address, cl->port,
                   strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    return fd;
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mp_c2s_sweep(arg);
}

static void *worker_main(void *arg)
{
    struct mp_worker *w = arg;
    mp_loop_run(w->loop);
    mp_c2s_thread_exit();
    mp_router_thread_exit();
    mp_listener_thread_exit();
    return NULL;
}

int mp_workers_start(void)
{
    const struct mp_config *cfg = mp_server.cfg;
    int n = cfg->workers > 0 ? cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    mp_server.workers = mp_calloc((size_t)n, sizeof *mp_server.workers);
    mp_server.n_workers = n;
    for (int i = 0; i < n; i++) {
        struct mp_worker *w = &mp_server.workers[i];
        w->id = i;
        w->loop = mp_loop_new();
        if (!w->loop)
            return MAGPIE_ERR;
        mp_loop_set_bound(w->loop, (size_t)cfg->worker_queue);
        struct event_base *base = mp_loop_base(w->loop);
        if (cfg->rate_bytes_per_sec > 0) {
            struct timeval tick = {0, 100000};
            size_t rate = (size_t)cfg->rate_bytes_per_sec / 10;
            size_t burst =
                (size_t)(cfg->rate_burst > 0 ? cfg->rate_burst : cfg->rate_bytes_per_sec);
            w->rate = ev_token_bucket_cfg_new(rate ? rate : 1, burst, EV_RATE_LIMIT_MAX,
                                              EV_RATE_LIMIT_MAX, &tick);
        }
        if (cfg->http_rate > 0) {
            struct timeval tick = {0, 100000};
            size_t rate = (size_t)cfg->http_rate / 10;
            w->http_rate = ev_token_bucket_cfg_new(rate ? rate : 1, (size_t)cfg->http_rate,
                                                   EV_RATE_LIMIT_MAX, EV_RATE_LIMIT_MAX, &tick);
        }
        /* the configured client ports, then those of modules */
        size_t n_all = cfg->n_listeners + mp_listeners_count();
        w->listeners = mp_calloc(n_all, sizeof *w->listeners);
        w->listener_args = mp_calloc(n_all, sizeof *w->listener_args);
        w->n_listeners = n_all;
        for (size_t j = 0; j < n_all; j++) {
            struct mp_config_listener ml;
            const struct mp_listener_reg *reg = NULL;
            const struct mp_config_listener *cl = &ml;
            if (j < cfg->n_listeners) {
                cl = &cfg->listeners[j];
            } else {
                memset(&ml, 0, sizeof ml);
                reg = mp_listener_get(j - cfg->n_listeners, (const char **)&ml.address, &ml.port);
            }
            int fd = open_listener(cl);
            if (fd < 0)
                return MAGPIE_ERR;
            struct listener_arg *la = mp_calloc(1, sizeof *la);
            la->w = w;
            la->reg = reg;
            la->http = !reg && cl->kind == MP_LISTEN_HTTP;
            la->direct_tls = !reg && (cl->kind == MP_LISTEN_C2S_TLS || (la->http && cl->tls));
            w->listener_args[j] = la;
            w->listeners[j] = evconnlistener_new(
                base, accept_cb, la, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
            if (!w->listeners[j]) {
                close(fd);
                free(la);
                return MAGPIE_ERR;
            }
            evconnlistener_set_error_cb(w->listeners[j], accept_error_cb);
        }
        w->sweep = event_new(base, -1, EV_PERSIST, sweep_cb, w);
        struct timeval tv = {5, 0};
        event_add(w->sweep, &tv);
    }
    for (int i = 0; i < n; i++)
        if (pthread_create(&mp_server.workers[i].thread, NULL, worker_main,
                           &mp_server.workers[i]) != 0)
            return MAGPIE_ERR;
    for (size_t j = 0; j < cfg->n_listeners; j++)
        mp_log(MP_LOG_NOTICE, "listening on %s:%d (%s)", cfg->listeners[j].address,
               cfg->listeners[j].port,
               cfg->listeners[j].kind == MP_LISTEN_C2S_TLS ? "c2s, direct TLS"
               : cfg->listeners[j].kind == MP_LISTEN_HTTP
                   ? (cfg->listeners[j].tls ? "http, TLS" : "http")
                   : "c2s, STARTTLS");
    int have_http = 0;
    for (size_t j = 0; j < cfg->n_listeners; j++)
        have_http |= cfg->listeners[j].kind == MP_LISTEN_HTTP;
    if (mp_http_routes_count() && !have_http)
        mp_log(MP_LOG_WARN,
               "modules registered %zu HTTP route(s) but no \"http\" listener is "
               "configured: they are unreachable",
               mp_http_routes_count());
    for (size_t j = 0; j < mp_listeners_count(); j++) {
        const char *address;
        int port;
        mp_listener_get(j, &address, &port);
        mp_log(MP_LOG_NOTICE, "listening on %s:%d (module)", address, port);
    }
    return MAGPIE_OK;
}

static void close_listeners(struct mp_worker *w)
{
    for (size_t j = 0; j < w->n_listeners; j++) {
        if (!w->listeners[j])
            continue;
        struct listener_arg *la = w->listener_args[j];
        evconnlistener_free(w->listeners[j]);
        if (la->resume)
            event_free(la->resume);
        free(la);
        w->listeners[j] = NULL;
    }
}

static void shutdown_job(void *arg)
{
    struct mp_worker *w = arg;
    close_listeners(w);
    if (w->sweep) {
        event_free(w->sweep);
        w->sweep = NULL;
    }
    mp_listener_shutdown_worker(w);
    mp_http_shutdown_thread();
    mp_c2s_shutdown_worker(w);
}

void mp_workers_stop(void)
{
    for (int i = 0; i < mp_server.n_workers; i++) {
        struct mp_worker *w = &mp_server.workers[i];
        if (w->thread)
            mp_loop_post(w->loop, shutdown_job, w);
    }
    for (int i = 0; i < mp_server.n_workers; i++) {
        struct mp_worker *w = &mp_server.workers[i];
        if (w->thread)
            pthread_join(w->thread, NULL);
    }
}

void mp_workers_free(void)
{
    for (int i = 0; i < mp_server.n_workers; i++) {
        struct mp_worker *w = &mp_server.workers[i];
        if (w->listeners)
            close_listeners(w);
        free(w->listeners);
        free(w->listener_args);
        if (w->sweep)
            event_free(w->sweep);
        if (w->rate)
            ev_token_bucket_cfg_free(w->rate);
        if (w->http_rate)
            ev_token_bucket_cfg_free(w->http_rate);
        mp_loop_free(w->loop);
    }
    free(mp_server.workers);
    mp_server.workers = NULL;
    mp_server.n_workers = 0;
}
