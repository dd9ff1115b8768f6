/* listener.c - listeners registered by modules (include/magpie/listener.h)
 * and their connections.
 *
 * Registrations are written while modules load (before the workers start)
 * and cleared after they unload, so workers read them without locks, like
 * the other registries. Each worker opens its own SO_REUSEPORT socket for
 * each (worker.c); a connection is a TCP transport (transport.h) owned by
 * the accepting worker and kept on that worker's list, so shutdown can end
 * every one of them. */
#include "base/base.h"
#include "stream/listener.h"
#include "net/transport.h"
#include "net/addrlimit.h"
#include <magpie/listener.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONN_MAX_INPUT 65536

struct mp_listener_reg {
    mp_module *m;
    char *address;
    int port;
    const struct mp_listener_ops *ops;
    void *ud;
    int tls;    /* TLS from the first byte */
    char *host; /* its certificate's host (NULL: the first) */
};

struct mp_conn {
    struct mp_transport *t;
    const struct mp_listener_reg *reg;
    void *state;
    struct mp_worker *w;
    struct mp_conn *prev, *next; /* the worker's list */
    int closing, in_data;
    char addr_key[64]; /* per-address accounting (addrlimit.c) */
};

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
    c->t->ops->free(c->t);
    mp_addrlimit_release(c->addr_key);
    free(c);
}

static void conn_read(void *ud)
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

static void conn_drained(void *ud)
{
    (void)ud;
}

static void conn_progress(void *ud, size_t n)
{
    (void)ud;
    (void)n;
}

static void conn_event(void *ud, enum mp_transport_event ev)
{
    if (ev != MP_TRANSPORT_TLS_READY)
        conn_free(ud);
}

static const struct mp_transport_up conn_up = {conn_read, conn_drained, conn_progress, conn_event};

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
    const char *host = reg->host ? reg->host : mp_server.cfg->hosts[0].domain;
    struct mp_transport *t =
        mp_transport_tcp_new(mp_loop_base(w->loop), fd, w->rate, reg->tls, host);
    if (!t) {
        mp_addrlimit_release(key);
        return;
    }
    mp_conn *c = mp_calloc(1, sizeof *c);
    memcpy(c->addr_key, key, sizeof key);
    c->t = t;
    c->reg = reg;
    c->w = w;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    mp_transport_set_up(t, &conn_up, c);
    c->state = reg->ops->open ? reg->ops->open(c, reg->ud) : NULL;
    mp_log(MP_LOG_DEBUG, "listener %s:%d: connection from %s", reg->address, reg->port, t->peer);
}

void mp_listener_shutdown_worker(struct mp_worker *w)
{
    while (w->conns)
        conn_free(w->conns);
}

/* per-thread handover buffer, as in c2s.c: no allocation per write */
static _Thread_local struct evbuffer *scratch;

void mp_conn_write(mp_conn *c, const char *data, size_t len)
{
    if (c->closing)
        return;
    if (!scratch)
        scratch = evbuffer_new();
    evbuffer_add(scratch, data, len);
    c->t->ops->write(c->t, scratch);
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
    c->t->ops->shutdown(c->t);
}

const char *mp_conn_peer(mp_conn *c)
{
    return c->t->peer;
}

int mp_conn_secure(mp_conn *c)
{
    return c->t->secure;
}
