/* listener.c - listeners registered by modules (include/magpie/listener.h)
 * and their connections.
 *
 * Registrations are written while modules load (before the workers start)
 * and cleared after they unload, so workers read them without locks, like
 * the other registries. Each worker opens its own SO_REUSEPORT socket for
 * each (worker.c); a connection is owned by the accepting worker and kept
 * on that worker's list, so shutdown can end every one of them.
 *
 * A connection here is not a bufferevent transport (transport.h) but a
 * socket with one libevent event and buffers that exist only while they
 * hold bytes: module listeners serve many long-lived, mostly idle peers
 * (devices), and an idle bufferevent with its two evbuffers, rate limit
 * and callbacks costs about 1.3 KiB, this about 0.25 KiB (bench/gateway.sh).
 * - Input: one recv() per readable event into a stack buffer, handed to
 *   the module as is; only what it leaves unconsumed is kept (an evbuffer,
 *   freed once consumed). More than CONN_MAX_INPUT unconsumed closes.
 * - Output: mp_conn_write sends at once; only what the socket does not
 *   take is kept (an evbuffer, freed once written) and written when the
 *   socket is writable.
 * - Reading is rate limited like client connections (limits.rate, burst):
 *   a token bucket of two integers; an empty bucket stops reading until it
 *   has refilled (the event becomes a timer meanwhile).
 * - Closing writes what is queued, half-closes, discards input until the
 *   peer closes, at most CONN_LINGER_S; then closed() runs.
 * A listener registered with TLS (mp_listener_add_tls) takes the other
 * path: its connections are TCP transports (transport.h) with TLS from the
 * first byte, as the client ports' (the memory figure above is for plain
 * connections). Both kinds count against the per-address limits of the
 * client ports (addrlimit.c). */
#include "base/base.h"
#include "conf/config.h"
#include "core/server.h"
#include "stream/listener.h"
#include "net/addrlimit.h"
#include "net/transport.h"
#include <magpie/listener.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONN_MAX_INPUT 65536
#define CONN_READ_MAX  16384 /* bytes read per readable event */
#define CONN_LINGER_S  10    /* after our half-close, wait this long for the peer's */
#define CONN_PAUSE_MS  100   /* an empty read bucket is looked at again after this */

struct mp_listener_reg {
    mp_module *m;
    char *address;
    int port;
    const struct mp_listener_ops *ops;
    void *ud;
    int tls;    /* TLS from the first byte: a transport per connection */
    char *host; /* its certificate's host (NULL: the first) */
};

struct mp_conn {
    struct mp_transport *t; /* a TLS listener's connection, else NULL */
    const struct mp_listener_reg *reg;
    void *state;
    struct mp_worker *w;
    struct mp_conn *prev, *next; /* the worker's list */
    struct evbuffer *in;         /* unconsumed input, or NULL */
    struct evbuffer *out;        /* unsent output, or NULL */
    int fd;
    uint32_t tokens;  /* read budget, bytes (rate limiting) */
    uint32_t fill_ms; /* when the budget was last refilled (monotonic ms) */
    short ev_flags;   /* what the event is set up for (-1: not added) */
    uint8_t ev_timer; /* and its timeout: 0 none, 1 refill, 2 linger */
    uint8_t closing, shut_wr, in_data, failed, paused;
    uint8_t v6, has_addr;
    uint8_t unthrottled; /* mp_conn_unthrottle: limits.rate does not apply */
    uint16_t port;
    uint8_t addr[16]; /* the peer, for mp_conn_peer */
    /* the connection's event follows, in the same allocation */
};
#define CONN_EV(c) ((struct event *)((c) + 1))

static struct mp_listener_reg *regs;
static size_t n_regs;

int mp_listener_add(mp_module *m, const char *address, int port, const struct mp_listener_ops *ops,
                    void *ud)
{
    if (!address || port <= 0 || port > 65535 || !ops || !ops->data)
        return MAGPIE_ERR;
    regs = mp_realloc(regs, (n_regs + 1) * sizeof *regs);
    regs[n_regs++] = (struct mp_listener_reg){m, mp_strdup(address), port, ops, ud, 0, NULL};
    return MAGPIE_OK;
}

int mp_listener_add_tls(mp_module *m, const char *address, int port, const char *host,
                        const struct mp_listener_ops *ops, void *ud)
{
    if (mp_listener_add(m, address, port, ops, ud) != MAGPIE_OK)
        return MAGPIE_ERR;
    regs[n_regs - 1].tls = 1;
    regs[n_regs - 1].host = host ? mp_strdup(host) : NULL;
    return MAGPIE_OK;
}

size_t mp_listeners_count(void)
{
    return n_regs;
}

const struct mp_listener_reg *mp_listener_get(size_t i, const char **address, int *port)
{
    *address = regs[i].address;
    *port = regs[i].port;
    return &regs[i];
}

void mp_listeners_clear(void)
{
    for (size_t i = 0; i < n_regs; i++) {
        free(regs[i].address);
        free(regs[i].host);
    }
    free(regs);
    regs = NULL;
    n_regs = 0;
}

static uint32_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static void conn_cb(evutil_socket_t fd, short what, void *arg);

/* Sets c's event up for what c needs now: reading unless the budget is
 * empty (then a timer for its refill), writing while output waits, a
 * linger timeout once half-closed. */
static void conn_update(mp_conn *c)
{
    short want = EV_PERSIST;
    uint8_t timer = 0;
    struct timeval tv = {0, 0};
    if (!c->paused || c->shut_wr)
        want |= EV_READ;
    if (c->out)
        want |= EV_WRITE;
    if (c->shut_wr) {
        timer = 2;
        tv.tv_sec = CONN_LINGER_S;
    } else if (c->paused) {
        timer = 1;
        tv.tv_usec = CONN_PAUSE_MS * 1000;
    }
    if (want == c->ev_flags && timer == c->ev_timer)
        return; /* a persistent event: its timeout, if any, re-arms itself */
    if (c->ev_flags != -1)
        event_del(CONN_EV(c));
    event_assign(CONN_EV(c), mp_loop_base(c->w->loop), c->fd, want, conn_cb, c);
    event_add(CONN_EV(c), timer ? &tv : NULL);
    c->ev_flags = want;
    c->ev_timer = timer;
}

/* The per-address accounting key of c's peer (addrlimit.c), rebuilt from
 * the address kept for mp_conn_peer rather than kept (64 bytes a device). */
static void conn_key(const mp_conn *c, char *key, size_t len)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (c->v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        memcpy(&a->sin6_addr, c->addr, 16);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        memcpy(&a->sin_addr, c->addr, 4);
    }
    if (!c->has_addr) {
        snprintf(key, len, "local");
        return;
    }
    mp_addr_key((struct sockaddr *)&ss, key, len);
}

/* Ends c now: the module's closed() runs, then everything is freed. */
static void conn_free(mp_conn *c)
{
    if (c->reg->ops->closed)
        c->reg->ops->closed(c, c->state);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    char key[64];
    conn_key(c, key, sizeof key);
    mp_addrlimit_release(key);
    if (c->t) {
        c->t->ops->free(c->t);
        free(c);
        return;
    }
    if (c->ev_flags != -1)
        event_del(CONN_EV(c));
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    close(c->fd);
    free(c);
}

/* What is queued has left: half-close once closing. */
static void conn_half_close(mp_conn *c)
{
    if (c->closing && !c->out && !c->shut_wr) {
        c->shut_wr = 1;
        shutdown(c->fd, SHUT_WR);
    }
}

/* Writes queued output. MAGPIE_ERR: the connection failed. */
static int conn_flush(mp_conn *c)
{
    while (c->out && evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? MAGPIE_OK
                                                                             : MAGPIE_ERR;
        if (n == 0)
            return MAGPIE_OK;
    }
    if (c->out) {
        evbuffer_free(c->out);
        c->out = NULL;
    }
    conn_half_close(c);
    return MAGPIE_OK;
}

/* Takes away n bytes of read budget (rate limiting). */
static void conn_spend(mp_conn *c, size_t n)
{
    const struct mp_config *cfg = mp_server.cfg;
    if (!cfg || cfg->rate_bytes_per_sec <= 0 || c->unthrottled)
        return;
    c->tokens = n >= c->tokens ? 0 : c->tokens - (uint32_t)n;
    if (c->tokens == 0)
        c->paused = 1;
}

/* Refills the read budget for the time since the last refill. */
static void conn_refill(mp_conn *c)
{
    const struct mp_config *cfg = mp_server.cfg;
    if (!cfg || cfg->rate_bytes_per_sec <= 0)
        return;
    uint32_t now = now_ms(), dt = now - c->fill_ms;
    uint64_t burst = (uint64_t)(cfg->rate_burst > 0 ? cfg->rate_burst : cfg->rate_bytes_per_sec);
    uint64_t t = c->tokens + (uint64_t)dt * (uint64_t)cfg->rate_bytes_per_sec / 1000;
    if (burst > UINT32_MAX)
        burst = UINT32_MAX;
    c->tokens = (uint32_t)(t > burst ? burst : t);
    c->fill_ms = now;
    if (c->tokens > 0)
        c->paused = 0;
}

/* Readable. Returns MAGPIE_ERR when the connection is over (EOF, error). */
static int conn_read(mp_conn *c)
{
    char buf[CONN_READ_MAX];
    size_t want = sizeof buf;
    const struct mp_config *cfg = mp_server.cfg;
    if (!c->closing && !c->unthrottled && cfg && cfg->rate_bytes_per_sec > 0 && c->tokens < want)
        want = c->tokens;
    if (want == 0)
        return MAGPIE_OK;
    ssize_t n = recv(c->fd, buf, want, 0);
    if (n == 0)
        return MAGPIE_ERR;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? MAGPIE_OK : MAGPIE_ERR;
    if (c->closing)
        return MAGPIE_OK; /* discarded: the peer is told to go */
    conn_spend(c, (size_t)n);
    const char *p = buf;
    size_t len = (size_t)n;
    if (c->in) {
        evbuffer_add(c->in, buf, len);
        len = evbuffer_get_length(c->in);
        p = (const char *)evbuffer_pullup(c->in, -1);
    }
    c->in_data = 1;
    size_t used = c->reg->ops->data(c, c->state, p, len);
    c->in_data = 0;
    if (used > len)
        used = len;
    if (c->in) {
        evbuffer_drain(c->in, used);
    } else if (used < len && !c->closing) {
        c->in = evbuffer_new();
        evbuffer_add(c->in, p + used, len - used);
    }
    if (c->in && (c->closing || evbuffer_get_length(c->in) == 0)) {
        evbuffer_free(c->in);
        c->in = NULL;
    }
    if (c->in && evbuffer_get_length(c->in) > CONN_MAX_INPUT) {
        mp_log(MP_LOG_INFO, "listener %s: more than %d bytes unconsumed, closing", mp_conn_peer(c),
               CONN_MAX_INPUT);
        mp_conn_close(c);
    }
    return MAGPIE_OK;
}

static void conn_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    mp_conn *c = arg;
    if (!c->failed && (what & EV_WRITE) && conn_flush(c) != MAGPIE_OK)
        c->failed = 1;
    if (!c->failed && (what & EV_READ) && conn_read(c) != MAGPIE_OK)
        c->failed = 1;
    if (!c->failed && (what & EV_TIMEOUT) && c->shut_wr)
        c->failed = 1; /* the peer did not close in time */
    if (c->failed) {
        conn_free(c);
        return;
    }
    if (c->paused)
        conn_refill(c);
    conn_update(c);
}

/* A TLS listener's connection: the transport has bytes for the module. */
static void tls_read(void *ud)
{
    mp_conn *c = ud;
    struct evbuffer *in = c->t->ops->input(c->t);
    size_t len = evbuffer_get_length(in);
    if (c->closing || len == 0)
        return;
    const char *p = (const char *)evbuffer_pullup(in, -1);
    c->in_data = 1;
    size_t used = c->reg->ops->data(c, c->state, p, len);
    c->in_data = 0;
    evbuffer_drain(in, used < len ? used : len);
    if (!c->closing && evbuffer_get_length(in) > CONN_MAX_INPUT) {
        mp_log(MP_LOG_INFO, "listener %s: more than %d bytes unconsumed, closing", c->t->peer,
               CONN_MAX_INPUT);
        mp_conn_close(c);
    }
}

static void tls_drained(void *ud)
{
    (void)ud;
}

static void tls_progress(void *ud, size_t n)
{
    (void)ud;
    (void)n;
}

static void tls_event(void *ud, enum mp_transport_event ev)
{
    if (ev != MP_TRANSPORT_TLS_READY)
        conn_free(ud);
}

static const struct mp_transport_up tls_up = {tls_read, tls_drained, tls_progress, tls_event};

void mp_listener_accept(struct mp_worker *w, const struct mp_listener_reg *reg, int fd)
{
    if (w->shutting_down) {
        close(fd);
        return;
    }
    char key[64];
    if (mp_addrlimit_acquire_fd(fd, key, sizeof key) != MAGPIE_OK) {
        mp_log(MP_LOG_DEBUG, "listener %s:%d: %s over its connection limits, refused", reg->address,
               reg->port, key);
        close(fd);
        return;
    }
    mp_conn *c = mp_calloc(1, sizeof *c + (reg->tls ? 0 : event_get_struct_event_size()));
    c->reg = reg;
    c->w = w;
    c->ev_flags = -1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            memcpy(c->addr, &a->sin6_addr, 16);
            c->port = ntohs(a->sin6_port);
            c->v6 = 1;
            c->has_addr = 1;
        } else if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            memcpy(c->addr, &a->sin_addr, 4);
            c->port = ntohs(a->sin_port);
            c->has_addr = 1;
        }
    }
    if (reg->tls) {
        const char *host = reg->host ? reg->host : mp_server.cfg->hosts[0].domain;
        c->t = mp_transport_tcp_new(mp_loop_base(w->loop), fd, w->rate, 1, host);
        if (!c->t) {
            mp_addrlimit_release(key);
            free(c);
            return;
        }
        mp_transport_set_up(c->t, &tls_up, c);
    } else {
        evutil_make_socket_nonblocking(fd);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->tokens = UINT32_MAX;
        c->fill_ms = now_ms();
        if (mp_server.cfg && mp_server.cfg->rate_bytes_per_sec > 0) {
            long b = mp_server.cfg->rate_burst > 0 ? mp_server.cfg->rate_burst
                                                   : mp_server.cfg->rate_bytes_per_sec;
            c->tokens = b > (long)UINT32_MAX ? UINT32_MAX : (uint32_t)b;
        }
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    if (!c->t)
        conn_update(c);
    c->state = reg->ops->open ? reg->ops->open(c, reg->ud) : NULL;
    mp_log(MP_LOG_DEBUG, "listener %s:%d: connection from %s", reg->address, reg->port,
           mp_conn_peer(c));
}

void mp_listener_shutdown_worker(struct mp_worker *w)
{
    while (w->conns)
        conn_free(w->conns);
}

/* per-thread handover buffer of TLS connections' writes */
static _Thread_local struct evbuffer *scratch;

void mp_conn_write(mp_conn *c, const char *data, size_t len)
{
    if (c->closing || c->failed || len == 0)
        return;
    if (c->t) {
        if (!scratch)
            scratch = evbuffer_new();
        evbuffer_add(scratch, data, len);
        c->t->ops->write(c->t, scratch);
        return;
    }
    if (!c->out) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n == (ssize_t)len)
            return;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            /* ended from the loop, not from inside the module's call */
            c->failed = 1;
            event_active(CONN_EV(c), EV_WRITE, 1);
            return;
        }
        if (n < 0)
            n = 0;
        c->out = evbuffer_new();
        evbuffer_add(c->out, data + n, len - (size_t)n);
        if (!c->in_data)
            conn_update(c);
        return;
    }
    evbuffer_add(c->out, data, len);
}

void mp_conn_unthrottle(mp_conn *c)
{
    c->unthrottled = 1;
    c->paused = 0;
}

size_t mp_conn_queued(mp_conn *c)
{
    if (c->t)
        return c->t->ops->queued(c->t);
    return c->out ? evbuffer_get_length(c->out) : 0;
}

void mp_listener_thread_exit(void)
{
    if (scratch)
        evbuffer_free(scratch);
    scratch = NULL;
}

void mp_conn_close(mp_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->t) {
        c->t->ops->shutdown(c->t);
        return;
    }
    conn_half_close(c);
    if (!c->in_data)
        conn_update(c);
}

int mp_conn_secure(mp_conn *c)
{
    return c->t ? c->t->secure : 0;
}

const char *mp_conn_peer(mp_conn *c)
{
    if (c->t)
        return c->t->peer;
    static _Thread_local char buf[64];
    char host[INET6_ADDRSTRLEN] = "?";
    inet_ntop(c->v6 ? AF_INET6 : AF_INET, c->addr, host, sizeof host);
    snprintf(buf, sizeof buf, "%s:%d", host, c->port);
    return buf;
}
