/* transport_tcp.c - the TCP transport, with TLS by STARTTLS or from the
 * first byte (see transport.h for the interface).
 *
 * The socket is a rate-limited socket bufferevent; TLS is an OpenSSL
 * *filter* bufferevent over it, not a socket-based OpenSSL bufferevent: the
 * filter re-reads what OpenSSL already decrypted whenever reading resumes,
 * so rate limiting and backpressure never strand decrypted bytes (see
 * docs/design-notes.md). Output arrives in one piece per stanza, so a TLS
 * filter makes one record of it. Closing half-closes after the output has
 * drained and discards input until the peer closes.
 *
 * Writing to the socket is ours, not libevent's, while the socket keeps
 * up: the socket bufferevent's EV_WRITE stays disabled, so bytes added to
 * its output (stanzas, TLS records, handshake messages, alerts) only queue
 * a flush at the end of the loop turn (mp_loop_at_turn_end), which sends
 * everything written to this connection during the turn in one writev.
 * Only when the kernel does not take it all is EV_WRITE enabled, and
 * libevent writes the rest when the socket is writable; once the output is
 * empty again the next flush disables it. A stanza to each of 100 MUC
 * occupants thus costs 100 sends in the same turn, not 100 EPOLL_CTL_MOD
 * to add EPOLLOUT, an epoll round, 100 sends and 100 EPOLL_CTL_MOD to
 * remove it. Without a loop on the thread (or another base) libevent
 * writes as before. */
#include "base/base.h"
#include "net/tls.h"
#include "net/transport.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct tcp {
    struct mp_transport t; /* first: the handle is a struct tcp */
    struct event_base *base;
    int fd;
    struct bufferevent *raw; /* the socket, rate-limited */
    struct bufferevent *bev; /* raw, or the TLS filter over it */
    SSL *ssl;                /* NULL until TLS; owned by bev */
    struct event *recheck;   /* polls the socket's output drain */
    struct evbuffer_cb_entry *out_cb;
    struct mp_turn_hook flush; /* queued: raw's output to be sent */
    unsigned tls_ready : 1, watching : 1, closing : 1, shut_wr : 1;
    unsigned ev_write : 1; /* EV_WRITE enabled on raw: libevent sends */
};

static void tcp_read(struct bufferevent *bev, void *arg);
static void tcp_write(struct bufferevent *bev, void *arg);
static void tcp_event(struct bufferevent *bev, short what, void *arg);

static void flush_run(struct mp_turn_hook *h);

/* Something is to be sent or reported: flush at the end of this turn.
 * Off the loop's thread base (no loop, or another base): libevent's own
 * writing. */
static void flush_soon(struct tcp *c)
{
    if (c->flush.next)
        return;
    mp_loop *l = mp_loop_current();
    if (l && mp_loop_base(l) == c->base) {
        mp_loop_at_turn_end(l, &c->flush);
        return;
    }
    if (!c->ev_write) {
        c->ev_write = 1;
        bufferevent_enable(c->raw, EV_WRITE);
    }
}

static size_t tcp_queued(struct mp_transport *t)
{
    struct tcp *c = (struct tcp *)t;
    size_t n = evbuffer_get_length(bufferevent_get_output(c->bev));
    if (c->raw != c->bev)
        n += evbuffer_get_length(bufferevent_get_output(c->raw));
    return n;
}

static struct evbuffer *tcp_input(struct mp_transport *t)
{
    return bufferevent_get_input(((struct tcp *)t)->bev);
}

static void tcp_write_buf(struct mp_transport *t, struct evbuffer *buf)
{
    struct tcp *c = (struct tcp *)t;
    if (evbuffer_get_length(buf) > 0)
        bufferevent_write_buffer(c->bev, buf);
}

static void tcp_set_reading(struct mp_transport *t, int on)
{
    struct tcp *c = (struct tcp *)t;
    if (c->closing)
        return;
    if (on)
        bufferevent_enable(c->bev, EV_READ);
    else
        bufferevent_disable(c->bev, EV_READ);
}

/* Discards what a closing peer still sends, so that closing the socket
 * with unread input does not reset the connection before the peer has read
 * our last words. */
static void tcp_discard(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void recheck_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct tcp *c = arg;
    tcp_write(c->bev, c);
}

/* The TLS filter reports its own output drained, not the socket's: poll the
 * socket's queue briefly while someone waits for the drain. */
static void recheck_soon(struct tcp *c, long usec)
{
    if (!c->recheck)
        c->recheck = evtimer_new(c->base, recheck_cb, c);
    struct timeval tv = {0, usec};
    evtimer_add(c->recheck, &tv);
}

static void tcp_watch_drain(struct mp_transport *t)
{
    struct tcp *c = (struct tcp *)t;
    c->watching = 1;
    if (c->bev != c->raw)
        bufferevent_enable(c->bev, EV_WRITE);
    flush_soon(c); /* reports it once the socket took everything */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        recheck_soon(c, 0); /* no write will come to report it */
}

static void tcp_write(struct bufferevent *bev, void *arg)
{
    struct tcp *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return;
    if (!c->watching && !c->closing)
        return;
    if (tcp_queued(&c->t) != 0) {
        recheck_soon(c, 20000);
        return;
    }
    if (c->closing) {
        /* all written: half-close, then discard until the peer closes */
        if (!c->shut_wr && c->fd >= 0) {
            c->shut_wr = 1;
            shutdown(c->fd, SHUT_WR);
            bufferevent_setcb(bev, tcp_discard, NULL, tcp_event, c);
            bufferevent_enable(bev, EV_READ);
            tcp_discard(bev, c);
        }
        return;
    }
    c->watching = 0;
    c->t.up->drained(c->t.ud);
}

static void tcp_event(struct bufferevent *bev, short what, void *arg)
{
    struct tcp *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        c->tls_ready = 1;
        mp_stat_inc(MP_STAT_TLS_HANDSHAKES);
        c->t.up->event(c->t.ud, MP_TRANSPORT_TLS_READY);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        unsigned long e = c->ssl ? bufferevent_get_openssl_error(bev) : 0;
        char buf[256];
        if (e) {
            ERR_error_string_n(e, buf, sizeof buf);
            if (!c->tls_ready)
                mp_stat_inc(MP_STAT_TLS_FAILURES);
            mp_log(MP_LOG_DEBUG, "c2s %s: TLS %s: %s", c->t.peer,
                   c->tls_ready ? "error" : "handshake failed", buf);
        } else {
            mp_log(MP_LOG_DEBUG, "c2s %s: connection error: %s", c->t.peer,
                   evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        }
        c->t.up->event(c->t.ud, MP_TRANSPORT_ERROR);
        return;
    }
    mp_log(MP_LOG_DEBUG, "c2s %s: peer closed the connection%s", c->t.peer,
           (what & BEV_EVENT_TIMEOUT) ? " (timeout)" : "");
    c->t.up->event(c->t.ud, MP_TRANSPORT_EOF);
}

static void tcp_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct tcp *c = arg;
    c->t.up->read(c->t.ud);
}

/* Bytes added to the socket's output (by us or the TLS filter): sent at
 * the end of the turn unless libevent is writing; all of it sent while
 * libevent was: the flush turns libevent's writing off again. Progress is
 * reported up for stall detection. */
static void output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct tcp *c = arg;
    if ((info->n_added > 0 && !c->ev_write) ||
        (c->ev_write && info->n_deleted > 0 && evbuffer_get_length(buf) == 0))
        flush_soon(c);
    if (info->n_deleted > 0 && c->t.up)
        c->t.up->progress(c->t.ud, info->n_deleted);
}

/* End of turn: sends the socket's output in one writev. What the kernel
 * does not take is left to libevent (EV_WRITE on, until the output is
 * empty again); an error other than EAGAIN is left to it too, so that it
 * is reported as every other write error (BEV_EVENT_ERROR). When the
 * socket took everything, what libevent's write callbacks would do runs:
 * the TLS filter encrypts what it held back (over the 64 KiB mark), and a
 * drain being watched (or a close) is reported. */
static void flush_run(struct mp_turn_hook *h)
{
    struct tcp *c = (struct tcp *)((char *)h - offsetof(struct tcp, flush));
    struct evbuffer *out = bufferevent_get_output(c->raw);
    if (c->ev_write) {
        if (evbuffer_get_length(out) != 0)
            return; /* libevent is writing; output_cb calls again at 0 */
        c->ev_write = 0;
        bufferevent_disable(c->raw, EV_WRITE);
    } else if (evbuffer_get_length(out) != 0 && c->fd >= 0) {
        /* the socket bufferevent keeps its output's start frozen but
         * while it writes itself */
        evbuffer_unfreeze(out, 1);
        int n = evbuffer_write(out, c->fd);
        int err = errno;
        evbuffer_freeze(out, 1);
        errno = err;
        if (evbuffer_get_length(out) != 0 ||
            (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            c->ev_write = 1;
            bufferevent_enable(c->raw, EV_WRITE);
            return;
        }
    }
    if (evbuffer_get_length(out) != 0)
        return;
    if (c->bev != c->raw && evbuffer_get_length(bufferevent_get_output(c->bev)) != 0) {
        /* the filter's writecb encrypts more; its bytes queue a flush */
        bufferevent_trigger(c->raw, EV_WRITE, 0);
        return;
    }
    if (c->watching || c->closing)
        tcp_write(c->bev, c); /* may free c: last */
}

/* Puts a TLS filter over the socket bufferevent. Returns MAGPIE_OK or
 * MAGPIE_ERR. */
static int tls_wrap(struct tcp *c, const char *host)
{
    SSL *ssl = mp_tls_new_ssl(host);
    if (!ssl)
        return MAGPIE_ERR;
    struct bufferevent *f = bufferevent_openssl_filter_new(c->base, c->raw, ssl,
                                                           BUFFEREVENT_SSL_ACCEPTING,
                                                           BEV_OPT_CLOSE_ON_FREE);
    if (!f) {
        SSL_free(ssl);
        return MAGPIE_ERR;
    }
    c->ssl = ssl;
    c->bev = f;
    c->t.secure = 1;
    bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
    /* keep at most 64 KiB on the socket; the rest waits in the filter */
    bufferevent_setwatermark(c->raw, EV_WRITE, 0, 65536);
    bufferevent_setcb(f, tcp_read, tcp_write, tcp_event, c);
    bufferevent_enable(f, EV_READ | EV_WRITE);
    /* the filter enabled writing on the socket: sending is ours (above) */
    bufferevent_disable(c->raw, EV_WRITE);
    c->ev_write = 0;
    if (evbuffer_get_length(bufferevent_get_output(c->raw)) != 0)
        flush_soon(c);
    return MAGPIE_OK;
}

static int tcp_start_tls(struct mp_transport *t, const char *host)
{
    struct tcp *c = (struct tcp *)t;
    if (c->ssl)
        return MAGPIE_ERR;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in)); /* RFC 6120 §5.4.3.3 */
    return tls_wrap(c, host);
}

static void tcp_channel_binding(struct mp_transport *t, struct mp_sasl_cb *cb)
{
    struct tcp *c = (struct tcp *)t;
    if (c->ssl)
        mp_tls_channel_binding(c->ssl, cb);
}

static void tcp_shutdown(struct mp_transport *t)
{
    struct tcp *c = (struct tcp *)t;
    if (c->closing)
        return;
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    if (c->bev != c->raw)
        bufferevent_enable(c->bev, EV_WRITE);
    flush_soon(c);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        recheck_soon(c, 0);
}

/* bev is the socket bufferevent or the TLS filter over it; the filter frees
 * the socket bufferevent and the SSL with itself, and the socket
 * bufferevent closes the fd when libevent really frees it (possibly after
 * the callback we are in returns). */
static void tcp_free(struct mp_transport *t)
{
    struct tcp *c = (struct tcp *)t;
    mp_turn_hook_cancel(&c->flush);
    if (c->recheck)
        event_free(c->recheck);
    if (c->out_cb)
        evbuffer_remove_cb_entry(bufferevent_get_output(c->raw), c->out_cb);
    if (c->bev)
        bufferevent_free(c->bev);
    else if (c->fd >= 0)
        close(c->fd);
    free(c);
}

static const struct mp_transport_ops tcp_ops = {
    .input = tcp_input,
    .write = tcp_write_buf,
    .queued = tcp_queued,
    .set_reading = tcp_set_reading,
    .watch_drain = tcp_watch_drain,
    .start_tls = tcp_start_tls,
    .channel_binding = tcp_channel_binding,
    .shutdown = tcp_shutdown,
    .free = tcp_free,
};

struct mp_transport *mp_transport_tcp_new(struct event_base *base, int fd,
                                          struct ev_token_bucket_cfg *rate, int direct_tls,
                                          const char *host)
{
    struct tcp *c = mp_calloc(1, sizeof *c);
    c->t.ops = &tcp_ops;
    c->flush.fn = flush_run;
    c->base = base;
    c->fd = fd;
    evutil_make_socket_nonblocking(fd);
    /* stanzas are small and latency matters: no Nagle delay */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char host_s[48] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host_s, sizeof host_s);
            port = ntohs(a->sin6_port);
        } else if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host_s, sizeof host_s);
            port = ntohs(a->sin_port);
        }
        snprintf(c->t.peer, sizeof c->t.peer, "%s:%d", host_s, port);
    }
    c->raw = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->raw) {
        mp_log(MP_LOG_ERROR, "c2s %s: cannot set up the connection", c->t.peer);
        close(fd);
        free(c);
        return NULL;
    }
    bufferevent_disable(c->raw, EV_WRITE); /* on by default; see flush_soon */
    if (rate)
        bufferevent_set_rate_limit(c->raw, rate);
    c->out_cb = evbuffer_add_cb(bufferevent_get_output(c->raw), output_cb, c);
    c->bev = c->raw;
    if (direct_tls) {
        if (tls_wrap(c, host) != MAGPIE_OK) {
            mp_log(MP_LOG_ERROR, "c2s %s: cannot set up TLS", c->t.peer);
            tcp_free(&c->t);
            return NULL;
        }
    } else {
        bufferevent_setcb(c->bev, tcp_read, tcp_write, tcp_event, c);
        bufferevent_enable(c->bev, EV_READ); /* EV_WRITE: see flush_soon */
    }
    return &c->t;
}
