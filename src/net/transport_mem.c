/* transport_mem.c - an in-memory transport whose peer is a unit test (see
 * transport.h). The test feeds bytes and reads what the stream wrote; the
 * up-calls run from the loop, as they would for a socket. Output is taken
 * by the "peer" as soon as it is written (queued() is 0). */
#include "base/base.h"
#include "net/transport.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

struct mem {
    struct mp_transport t; /* first */
    struct evbuffer *in, *out;
    struct event *kick; /* runs the pending up-calls from the loop */
    unsigned reading : 1, want_read : 1, want_drain : 1, eof : 1, eof_told : 1;
    int state; /* 0 open, 1 shut down by the owner, 2 freed by the owner */
};

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct mem *m = arg;
    if (m->state == 2)
        return;
    if (m->want_drain) {
        m->want_drain = 0;
        m->t.up->drained(m->t.ud);
        if (m->state == 2)
            return;
    }
    if (m->reading && m->state == 0 && evbuffer_get_length(m->in) > 0) {
        m->t.up->read(m->t.ud);
        if (m->state == 2)
            return;
    }
    if (m->eof && !m->eof_told) {
        m->eof_told = 1;
        m->t.up->event(m->t.ud, MP_TRANSPORT_EOF);
    }
}

static void kick(struct mem *m)
{
    event_active(m->kick, EV_TIMEOUT, 1);
}

static struct evbuffer *mem_input(struct mp_transport *t)
{
    return ((struct mem *)t)->in;
}

static void mem_write(struct mp_transport *t, struct evbuffer *buf)
{
    struct mem *m = (struct mem *)t;
    if (m->state == 0)
        evbuffer_add_buffer(m->out, buf);
    else
        evbuffer_drain(buf, evbuffer_get_length(buf));
}

static size_t mem_queued(struct mp_transport *t)
{
    (void)t;
    return 0;
}

static void mem_set_reading(struct mp_transport *t, int on)
{
    struct mem *m = (struct mem *)t;
    m->reading = on != 0;
    if (on && evbuffer_get_length(m->in) > 0)
        kick(m);
}

static void mem_watch_drain(struct mp_transport *t)
{
    struct mem *m = (struct mem *)t;
    m->want_drain = 1;
    kick(m);
}

static int mem_start_tls(struct mp_transport *t, const char *host)
{
    (void)t;
    (void)host;
    return MAGPIE_ERR;
}

static void mem_channel_binding(struct mp_transport *t, struct mp_sasl_cb *cb)
{
    (void)t;
    (void)cb;
}

static void mem_shutdown(struct mp_transport *t)
{
    struct mem *m = (struct mem *)t;
    if (m->state == 0)
        m->state = 1;
    evbuffer_drain(m->in, evbuffer_get_length(m->in));
}

static void mem_free(struct mp_transport *t)
{
    struct mem *m = (struct mem *)t;
    m->state = 2;
    event_del(m->kick);
}

static const struct mp_transport_ops mem_ops = {
    .input = mem_input,
    .write = mem_write,
    .queued = mem_queued,
    .set_reading = mem_set_reading,
    .watch_drain = mem_watch_drain,
    .start_tls = mem_start_tls,
    .channel_binding = mem_channel_binding,
    .shutdown = mem_shutdown,
    .free = mem_free,
};

struct mp_transport *mp_transport_mem_new(struct event_base *base, int secure)
{
    struct mem *m = mp_calloc(1, sizeof *m);
    m->t.ops = &mem_ops;
    m->t.secure = secure != 0;
    snprintf(m->t.peer, sizeof m->t.peer, "memory:%p", (void *)m);
    m->in = evbuffer_new();
    m->out = evbuffer_new();
    m->kick = event_new(base, -1, 0, kick_cb, m);
    return &m->t;
}

void mp_transport_mem_feed(struct mp_transport *t, const char *data, size_t len)
{
    struct mem *m = (struct mem *)t;
    if (m->state != 0)
        return;
    evbuffer_add(m->in, data, len);
    if (m->reading)
        kick(m);
}

void mp_transport_mem_close(struct mp_transport *t)
{
    struct mem *m = (struct mem *)t;
    m->eof = 1;
    if (m->state != 2)
        kick(m);
}

struct evbuffer *mp_transport_mem_output(struct mp_transport *t)
{
    return ((struct mem *)t)->out;
}

int mp_transport_mem_state(struct mp_transport *t)
{
    return ((struct mem *)t)->state;
}

int mp_transport_mem_reading(struct mp_transport *t)
{
    return ((struct mem *)t)->reading;
}

void mp_transport_mem_destroy(struct mp_transport *t)
{
    struct mem *m = (struct mem *)t;
    event_free(m->kick);
    evbuffer_free(m->in);
    evbuffer_free(m->out);
    free(m);
}
