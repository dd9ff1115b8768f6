/* c2s.c - client-to-server streams (RFC 6120): TCP and direct TLS
 * connections, STARTTLS, SASL, resource binding, and stanza intake.
 *
 * A session (struct mp_session, stable id) carries its stream over one
 * connection, a transport (transport.h); the stream code never sees a
 * socket. A bound session can be detached from its connection and another
 * connection attached later, on any worker (mp_c2s_detach,
 * mp_c2s_takeover: what XEP-0198 resumption needs); stanzas for it wait on
 * the session meanwhile, bounded, and are written to the new connection
 * first, in order, once each.
 *
 * A session is owned by one worker at a time: all of its I/O and state
 * changes happen on that worker's thread. Other threads hold references (router table, queued
 * deliveries, storage callbacks) through an atomic reference count; the last reference frees the
 * struct, while sockets, TLS, parser and timers are released on the owning thread when the stream
 * ends (c2s_destroy).
 *
 * Backpressure (pressure.c): a client's output buffer is a bounded queue.
 * Above limits.max_output_buffer it is marked congested, and whoever sends
 * to it stops being read after the current stanza, until it drains to half
 * (the router notes the recipient's queue at delivery; on_stanza collects
 * the notes). The client itself is cut off only if it reads nothing for
 * limits.output_stall_timeout while over the limit. The same pausing
 * applies when a worker's queue or the storage queue is over its bound. */
#include "base/base.h"
#include "stream/c2s.h"
#include "stream/stream.h"
#include "core/session.h"
#include "core/router.h"
#include "core/presence.h"
#include "core/modules.h"
#include "net/addrlimit.h"
#include "net/tls.h"
#include "auth/accounts.h"
#include "net/transport.h"

#include <inttypes.h>
#include <malloc.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_SASL_FAILURES   5
#define CLOSE_GRACE_SECONDS 2.0

struct mp_timer {
    struct event *ev;
    mp_session *s;
    mp_session_timer_fn fn;
    void *ud;
    int repeat;
    double secs; /* period, to re-arm it on another worker */
    struct mp_timer *next;
};

struct mp_session {
    struct mp_session_base base;    /* id, JID, owner worker, refs, module data (core/session.h) */
    struct mp_session *prev, *next; /* worker's list */
    struct mp_transport *t;         /* the connection (transport.h); NULL: detached */
    mp_xmlstream *parser;           /* the connection's stream; NULL while detached */
    /* stanzas waiting while detached: a ring of references, oldest first */
    mp_stanza **pending;
    uint32_t pending_head, pending_n, pending_cap; /* at most MP_SESSION_QUEUE_MAX */
    unsigned tls : 1, authed : 1, bound : 1, header_sent : 1, closing : 1, dead : 1,
        starttls_pending : 1, read_paused : 1, waiting_creds : 1, addr_counted : 1,
        sm : 1,            /* stream management (mp_session_manage): counts, `sent` */
        auth_delayed : 1; /* a SASL failure answer waits for auth_timer */
    unsigned blocked;    /* full queues this session waits on before reading again */
    /* stream management: stanzas received from the client since it was
     * enabled (mod 2^32); in_open below: those of them not handled yet
     * (their acknowledgement token is deferred), oldest first */
    uint32_t in_seq;
    struct event *stall; /* output_stall_timeout check while congested */
    uint64_t written;    /* bytes the socket has taken, ever */
    uint64_t stall_mark; /* `written` when the stall check was armed */
    char *host;          /* stream's 'to', normalised */
    /* 58 bytes of strings, then 32-bit counts: little padding */
    char addr_key[MP_ADDR_KEY_LEN]; /* per-address accounting key (mp_addr_key) */
    char stream_id[17];
    char lang[16]; /* client stream's xml:lang, "" if none or not a tag of at most
                    * 15 characters (RFC 5646 tags in use are shorter: "zh-Hant-TW") */
    uint32_t in_open_n, in_open_cap;
    int sasl_failures;
    uint32_t *in_open;
    mp_sasl *sasl;
    mp_timer *auth_timer; /* delays a throttled SASL failure answer */
    char *user;           /* authenticated username */
    struct event *timer;  /* negotiation, then close grace */
    double last_read;
    double parser_idle_since;
    double detach_deadline; /* when a detached session ends */
    double resume_timeout;  /* > 0: losing the connection detaches */
    struct mp_timer *timers;
    /* "host:port" for logs: the transport's own string while attached, a
     * copy once the connection is gone (keep_peer) */
    const char *peer;
    char *peer_copy;
};

static void c2s_read(void *ud);
static void update_reading(mp_session *s);
static int may_read(const mp_session *s);
static void handle_nonza_or_stanza(mp_session *s, mp_stanza *st);
static void c2s_close(mp_session *s, const char *condition, const char *text);
static void c2s_destroy(mp_session *s);
static void stall_check(evutil_socket_t fd, short what, void *arg);
static void drop_connection(mp_session *s);
static int pending_push(mp_session *s, mp_stanza *st);

/* ---- references ---- */

/* The last reference is gone: only plain memory is left (the owner
 * released I/O in c2s_destroy); the base is already released. */
static void c2s_release(mp_session *s)
{
    free(s->in_open);
    free(s->peer_copy);
    free(s->pending);
    free(s->host);
    free(s->user);
    free(s);
}

/* A session the server is not reading (paused for backpressure, waiting
 * for a credentials lookup or key derivation) is not idle: its silence is
 * ours, and e.g. mod_ping must not take it for a dead peer. */
double mp_session_idle_seconds(mp_session *s)
{
    if (!s->closing && !s->dead && !may_read(s))
        return 0;
    return mp_now() - s->last_read;
}

/* ---- output ---- */

/* Bytes queued towards the client, in every layer of the transport. */
static size_t queued(mp_session *s)
{
    return s->t ? s->t->ops->queued(s->t) : 0;
}

void mp_c2s_thread_exit(void)
{
    mp_stream_thread_exit();
}

/* Writes our stream header (once per stream). */
static void send_header(mp_session *s, const char *client_from)
{
    const char *from = s->host ? s->host : mp_server.cfg->hosts[0].domain;
    mp_random_id(s->stream_id, sizeof s->stream_id);
    mp_stream_write_header(s->t, MP_NS_CLIENT, s->stream_id, from, client_from, s->lang);
    s->header_sent = 1;
}

/* Sends st (taken) to the client; while detached it waits on the session
 * (dropped, logged, if that queue is full). */
/* A stanza (counted by stream management), not a stream element. */
static int is_stanza(const mp_stanza *st)
{
    const mp_xml *r = mp_stanza_root(st);
    if (r->ns && *r->ns && strcmp(r->ns, MP_NS_CLIENT) != 0)
        return 0;
    return strcmp(r->name, "message") == 0 || strcmp(r->name, "presence") == 0 ||
           strcmp(r->name, "iq") == 0;
}

void mp_session_send(mp_session *s, mp_stanza *st)
{
    if (s->dead || s->closing) {
        mp_stanza_unref(st);
        return;
    }
    if (s->sm) {
        /* stanzas are counted where they are written; while detached the
         * module keeps them, and a stream element (<r/>) is moot */
        int held = is_stanza(st) && mp_sm_sent(s, st) == MP_FILTER_STOP;
        if (held || !s->t || s->closing) {
            mp_stanza_unref(st);
            return;
        }
    }
    if (!s->t) {
        if (pending_push(s, st) != MAGPIE_OK) {
            mp_log(MP_LOG_WARN, "c2s %s: detached session's queue full, stanza dropped", s->peer);
            mp_stanza_unref(st);
        }
        return;
    }
    mp_stream_write_stanza(s->t, MP_NS_CLIENT, st);
    mp_stanza_unref(st);
    mp_stat_inc(MP_STAT_STANZAS_OUT);
    if (queued(s) > mp_server.cfg->max_output_buffer) {
        if (!mp_waitq_congested(s->base.outq)) {
            mp_log(MP_LOG_DEBUG, "c2s %s: output buffer over %zu bytes, pausing its senders",
                   s->peer, mp_server.cfg->max_output_buffer);
            mp_waitq_set(s->base.outq, 1);
            s->stall_mark = s->written;
            if (!s->stall) /* made on first use: most sessions never need it */
                s->stall = evtimer_new(mp_loop_base(s->base.w->loop), stall_check, s);
            struct timeval tv = {mp_server.cfg->output_stall_timeout, 0};
            evtimer_add(s->stall, &tv);
        }
        mp_pressure_note(s->base.outq);
    }
}

struct forward {
    mp_session *s; /* referenced */
    mp_stanza *st;
};

static void forward_run(void *arg)
{
    struct forward *f = arg;
    if (mp_c2s_deliver(f->s, f->st) != MAGPIE_OK)
        mp_router_undeliverable(f->st);
    mp_session_unref(f->s);
    free(f);
}

int mp_c2s_deliver(mp_session *s, mp_stanza *st)
{
    if (s->dead || s->closing || !s->bound)
        return MAGPIE_ERR;
    if (s->base.w->loop != mp_loop_current()) {
        /* the session moved to another worker (takeover) after the router
         * picked this one: pass it on, after what it sent there already */
        struct forward *f = mp_malloc(sizeof *f);
        f->s = s;
        f->st = st;
        mp_session_ref(s);
        if (mp_loop_post(s->base.w->loop, forward_run, f) != MAGPIE_OK) {
            mp_session_unref(s);
            free(f);
            return MAGPIE_ERR;
        }
        return MAGPIE_OK;
    }
    if (!s->t && !s->sm && s->pending_n >= MP_SESSION_QUEUE_MAX)
        return MAGPIE_ERR; /* the router treats it as undeliverable */
    if (s->t) {
        mp_session_send(s, st);
        return MAGPIE_OK;
    }
    /* detached: it waits for a resumption; tell the modules (push) */
    int message = mp_stanza_envelope(st)->kind == MP_KIND_MESSAGE;
    if (message)
        mp_stanza_ref(st);
    mp_session_send(s, st);
    if (message) {
        mp_notify_message_held(s, st);
        mp_stanza_unref(st);
    }
    return MAGPIE_OK;
}

/* Output progress: counts what the peer takes, and lifts the congestion
 * mark once the output is down to half the limit. */
static void on_progress(void *arg, size_t n)
{
    mp_session *s = arg;
    s->written += n;
    if (mp_waitq_congested(s->base.outq) && queued(s) <= mp_server.cfg->max_output_buffer / 2) {
        if (s->stall)
            evtimer_del(s->stall);
        mp_waitq_set(s->base.outq, 0);
    }
}

/* Fires output_stall_timeout after the output went over the limit: a client
 * that read nothing since is cut off; one that reads is given more time. */
static void stall_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mp_session *s = arg;
    if (s->dead || s->closing || !mp_waitq_congested(s->base.outq))
        return;
    if (s->written == s->stall_mark) {
        mp_log(MP_LOG_INFO, "c2s %s: read nothing of a full output buffer for %d s, closing",
               s->peer, mp_server.cfg->output_stall_timeout);
        mp_stat_inc(MP_STAT_OUTPUT_STALLED);
        c2s_close(s, "resource-constraint", "Output buffer full and not being read");
        return;
    }
    s->stall_mark = s->written;
    struct timeval tv = {mp_server.cfg->output_stall_timeout, 0};
    evtimer_add(s->stall, &tv);
}

/* Sends a SASL/TLS nonza <name xmlns=ns>[<child/>][text]</name>. */
static void send_nonza(mp_session *s, const char *name, const char *ns, const char *child,
                       const char *text)
{
    struct evbuffer *out = mp_stream_out();
    evbuffer_add_printf(out, "<%s xmlns='%s'", name, ns);
    if (!child && !text) {
        evbuffer_add_printf(out, "/>");
        mp_stream_commit(s->t);
        return;
    }
    evbuffer_add_printf(out, ">");
    if (child)
        evbuffer_add_printf(out, "<%s/>", child);
    if (text)
        evbuffer_add_printf(out, "%s", text);
    evbuffer_add_printf(out, "</%s>", name);
    mp_stream_commit(s->t);
}

/* ---- closing ---- */

static void close_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    c2s_destroy(arg);
}

/* Ends the stream: a stream error if condition is set, then the closing
 * tag; the connection is freed once the output is flushed (or after a
 * grace period). Safe to call from inside parser callbacks. */
static void c2s_close(mp_session *s, const char *condition, const char *text)
{
    if (s->closing || s->dead)
        return;
    /* a resumable session whose peer stopped answering (mod_ping) lost
     * its connection, not its session */
    if (s->resume_timeout > 0 && condition && strcmp(condition, "connection-timeout") == 0 &&
        s->t && s->bound) {
        mp_stream_write_error(s->t, condition, text);
        mp_stream_write_close(s->t);
        if (mp_c2s_detach(s, s->resume_timeout) == MAGPIE_OK)
            return;
    }
    s->closing = 1;
    mp_waitq_set(s->base.outq, 0); /* what it is sent now is dropped: nobody waits */
    if (s->bound) {
        /* stop routing to this session at once */
        mp_router_unbind(s);
        if (s->sm)
            mp_sm_closing(s); /* its unacknowledged stanzas are undeliverable now */
    }
    if (s->t) {
        if (condition) {
            mp_stat_inc(MP_STAT_STREAM_ERRORS);
            if (!s->header_sent)
                send_header(s, NULL);
            mp_stream_write_error(s->t, condition, text);
            mp_log(MP_LOG_DEBUG, "c2s %s: stream error %s%s%s", s->peer, condition,
                   text ? ": " : "", text ? text : "");
        }
        if (s->header_sent)
            mp_stream_write_close(s->t);
        s->t->ops->shutdown(s->t);
    }
    if (s->timer)
        event_free(s->timer);
    s->timer = evtimer_new(mp_loop_base(s->base.w->loop), close_timeout, s);
    struct timeval tv = {(time_t)CLOSE_GRACE_SECONDS, 0};
    evtimer_add(s->timer, &tv);
}

void mp_session_close(mp_session *s, const char *condition, const char *text)
{
    c2s_close(s, condition, text);
}

static void update_reading(mp_session *s);

/* A module's hold counts like a full queue the session waits on
 * (s->blocked): reading and parsing stop at the current stanza boundary
 * and resume once every hold and wait is gone. */
void mp_session_hold(mp_session *s)
{
    if (s->closing || s->dead)
        return;
    s->blocked++;
    mp_xmlstream_stop(s->parser);
    if (s->t)
        s->t->ops->set_reading(s->t, 0);
}

void mp_session_release(mp_session *s)
{
    if (s->blocked > 0)
        s->blocked--;
    if (!s->dead)
        update_reading(s);
}

/* Releases everything the stream holds on the owning thread and drops the
 * worker's reference. */
static void c2s_destroy(mp_session *s)
{
    if (s->dead)
        return;
    struct mp_worker *w = s->base.w;
    if (s->bound) {
        /* out of the directory first: what session_ended subscribers route
         * (unacknowledged stanzas) must not come back to s */
        if (!s->closing)
            mp_router_unbind(s);
        s->closing = 1;
        mp_notify_session_ended(s);
        s->bound = 0;
        atomic_fetch_sub(&mp_server.sessions, 1);
    }
    s->dead = 1;
    s->closing = 1;
    /* stanzas that waited for a connection that never came back */
    while (s->pending_n > 0) {
        mp_stanza *st = s->pending[s->pending_head];
        s->pending_head = (s->pending_head + 1) % s->pending_cap;
        s->pending_n--;
        mp_router_undeliverable(st);
    }
    while (s->timers) {
        struct mp_timer *t = s->timers;
        s->timers = t->next;
        event_del(t->ev); /* the event lives in t's block (mp_session_timer) */
        free(t);
    }
    if (s->timer)
        event_free(s->timer);
    s->timer = NULL;
    if (s->stall)
        event_free(s->stall);
    s->stall = NULL;
    /* a detached session's connection was dropped (and counted off) already */
    if (s->t)
        drop_connection(s);
    mp_waitq_set(s->base.outq, 0); /* nobody may wait for this output any more */
    if (s->sasl)
        mp_sasl_free(s->sasl);
    s->sasl = NULL;

    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->n_sessions--;
    mp_session_unref(s);
    if (w->shutting_down && w->n_sessions == 0)
        mp_loop_stop(w->loop);
}

/* ---- timers for modules ---- */

static void session_timer_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct mp_timer *t = arg;
    mp_session *s = t->s;
    if (s->dead || s->closing)
        return;
    t->fn(s, t->ud);
}

static struct timeval to_tv(double secs)
{
    if (secs < 0)
        secs = 0;
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
    return tv;
}

mp_timer *mp_session_timer(mp_session *s, double secs, int repeat, mp_session_timer_fn fn, void *ud)
{
    if (s->dead)
        return NULL;
    /* one block: the timer and its libevent event right after it */
    mp_timer *t = mp_calloc(1, sizeof *t + event_get_struct_event_size());
    t->ev = (struct event *)(void *)(t + 1);
    t->s = s;
    t->fn = fn;
    t->ud = ud;
    t->repeat = repeat;
    t->secs = secs;
    event_assign(t->ev, mp_loop_base(s->base.w->loop), -1, repeat ? EV_PERSIST : 0,
                 session_timer_fire, t);
    struct timeval tv = to_tv(secs);
    event_add(t->ev, &tv);
    t->next = s->timers;
    s->timers = t;
    return t;
}

void mp_timer_set(mp_timer *t, double secs)
{
    if (t->s->dead)
        return;
    t->secs = secs;
    struct timeval tv = to_tv(secs);
    event_add(t->ev, &tv);
}

/* ---- stream header and features ---- */

static void send_features(mp_session *s)
{
    mp_stanza *f = mp_stanza_new("features", MP_NS_STREAMS);
    mp_xml *root = mp_stanza_root(f);
    const struct mp_config *cfg = mp_server.cfg;
    /* over WebSocket, TLS is the HTTP layer's (RFC 7395 §3.6): no STARTTLS */
    if (!s->tls && s->t && s->t->framing == MP_FRAMING_STREAM) {
        mp_xml *tls = mp_xml_add_child(f, root, "starttls", MP_NS_TLS);
        if (cfg->require_tls)
            mp_xml_add_child(f, tls, "required", NULL);
    }
    if (!s->authed && (s->tls || !cfg->require_tls)) {
        struct mp_sasl_cb cb;
        memset(&cb, 0, sizeof cb);
        cb.tls = s->tls;
        if (s->t)
            s->t->ops->channel_binding(s->t, &cb);
        const char *mechs[8];
        int n = mp_sasl_mechanisms(&cb, mechs, 8);
        mp_xml *m = mp_xml_add_child(f, root, "mechanisms", MP_NS_SASL);
        for (int i = 0; i < n; i++) {
            mp_xml *e = mp_xml_add_child(f, m, "mechanism", NULL);
            mp_xml_add_text(f, e, mechs[i], strlen(mechs[i]));
        }
        if (cb.has_exporter || cb.endpoint_len) {
            /* XEP-0440: which channel-binding types we support */
            mp_xml *cbs = mp_xml_add_child(f, root, "sasl-channel-binding", "urn:xmpp:sasl-cb:0");
            if (cb.has_exporter)
                mp_xml_set_attr(f, mp_xml_add_child(f, cbs, "channel-binding", NULL), "type",
                                "tls-exporter");
            if (cb.endpoint_len)
                mp_xml_set_attr(f, mp_xml_add_child(f, cbs, "channel-binding", NULL), "type",
                                "tls-server-end-point");
        }
        mp_stream_features_add(s, f, root, MP_FEATURES_PRE_AUTH);
    }
    if (s->authed) {
        mp_xml_add_child(f, root, "bind", MP_NS_BIND);
        mp_xml *sess = mp_xml_add_child(f, root, "session", MP_NS_SESSION);
        mp_xml_add_child(f, sess, "optional", NULL);
        mp_stream_features_add(s, f, root, MP_FEATURES_POST_AUTH);
    }
    mp_stream_write_features(s->t, MP_NS_CLIENT, root);
    mp_stanza_unref(f);
}

static void on_open(void *ud, mp_stanza *hdr, const char *default_ns)
{
    mp_session *s = ud;
    mp_xml *root = mp_stanza_root(hdr);
    const char *to = mp_xml_get_attr(root, "to");
    const char *from = mp_xml_get_attr(root, "from");
    char domain[MP_JID_PART_MAX + 1];

    mp_jid fj;
    int from_ok = from && mp_jid_parse(&fj, from) == MAGPIE_OK;
    if (from_ok)
        mp_jid_free(&fj);

    /* RFC 6120 §4.7.4: stanzas without xml:lang inherit the stream's */
    mp_stream_header_lang(root, s->lang, sizeof s->lang);

    if (to && mp_jid_nameprep(to, domain, sizeof domain) == MAGPIE_OK && mp_host_is_local(domain)) {
        if (s->host && strcmp(s->host, domain) != 0) {
            c2s_close(s, "host-unknown", "The domain changed during negotiation");
            return;
        }
        if (!s->host)
            s->host = mp_strdup(domain);
    } else {
        send_header(s, NULL);
        c2s_close(s, "host-unknown",
                  to ? "This server does not serve that domain" : "The stream header has no 'to'");
        return;
    }
    send_header(s, from_ok ? from : NULL);
    const char *cond, *text;
    if (mp_stream_check_header(s->t ? s->t->framing : MP_FRAMING_STREAM, root, default_ns,
                               MP_NS_CLIENT, &cond, &text) != MAGPIE_OK) {
        c2s_close(s, cond, text);
        return;
    }
    send_features(s);
}

static void on_close(void *ud)
{
    mp_session *s = ud;
    mp_log(MP_LOG_DEBUG, "c2s %s: client closed the stream", s->peer);
    c2s_close(s, NULL, NULL);
}

static void on_error(void *ud, const char *condition, const char *text)
{
    mp_session *s = ud;
    c2s_close(s, condition, text);
}

/* ---- STARTTLS ---- */

/* Called once <proceed/> is flushed: TLS over the same socket. */
static int start_tls(mp_session *s)
{
    if (!s->t->ops->start_tls || s->t->ops->start_tls(s->t, s->host) != MAGPIE_OK)
        return MAGPIE_ERR;
    s->tls = 1;
    s->starttls_pending = 0;
    s->header_sent = 0; /* a new stream starts (RFC 6120 §5.4.3.3) */
    mp_xmlstream_reset(s->parser);
    return MAGPIE_OK;
}

/* ---- SASL ----
 *
 * Three things suspend a stream in the middle of SASL: the credentials
 * lookup (storage), a key derivation (PLAIN's PBKDF2, on the auth pool,
 * never on this loop), and a throttled failure answer (authguard.c). Each
 * sets waiting_creds: the parser stops at the current element and nothing
 * more is read until sasl_resume. Lookups and derivations hold a session
 * reference and check dead/closing when they complete; the delay is a
 * session timer, which dies with the session. */

static void sasl_finish(mp_session *s, enum mp_sasl_status st, unsigned char *out, size_t out_len);

/* Suspends parsing and reading until sasl_resume. */
static void sasl_wait(mp_session *s)
{
    s->waiting_creds = 1;
    mp_xmlstream_stop(s->parser); /* no-op outside the parser */
    if (s->t)
        s->t->ops->set_reading(s->t, 0);
}

/* After a wait ended: reads and parses what arrived meanwhile, unless the
 * step just taken started another wait. */
static void sasl_resume(mp_session *s)
{
    if (!s->closing && !s->dead && !s->waiting_creds)
        update_reading(s);
}

static void creds_ready(void *ud, int rc, const struct mp_credentials *c)
{
    mp_session *s = ud;
    if (!s->dead && !s->closing && s->sasl && s->waiting_creds) {
        s->waiting_creds = 0;
        if (rc == MAGPIE_ERR)
            mp_log(MP_LOG_WARN, "c2s %s: storage error while reading credentials", s->peer);
        unsigned char *out = NULL;
        size_t out_len = 0;
        enum mp_sasl_status st =
            mp_sasl_set_credentials(s->sasl, rc == MAGPIE_OK ? c : NULL, &out, &out_len);
        if (rc == MAGPIE_ERR && st != MP_SASL_FAILURE) {
            /* cannot verify: fail as a temporary error */
            free(out);
            out = NULL;
            send_nonza(s, "failure", MP_NS_SASL, "temporary-auth-failure", NULL);
            mp_sasl_free(s->sasl);
            s->sasl = NULL;
        } else {
            sasl_finish(s, st, out, out_len);
        }
        sasl_resume(s);
    }
    mp_session_unref(s);
}

/* A key derivation on the auth pool; owns d and a session reference. */
struct derive_job {
    mp_session *s;
    mp_sasl *sasl; /* the exchange it was taken from */
    struct mp_sasl_derive *d;
};

/* Pool thread: touches only the derivation (and the atomic reference
 * count), never the rest of the session. */
static void derive_work(void *arg)
{
    struct derive_job *j = arg;
    /* the worker drops its reference when the stream is destroyed: if ours
     * is the last one, nobody waits for the result (a client that sent its
     * <auth/> and hung up), so its PBKDF2 is skipped */
    if (atomic_load_explicit(&j->s->base.refs, memory_order_acquire) > 1)
        mp_sasl_derive_run(j->d);
}

/* Back on the session's worker (rc MAGPIE_ERR: cancelled at shutdown). */
static void derive_done(void *arg, int rc)
{
    struct derive_job *j = arg;
    mp_session *s = j->s;
    if (!s->dead && !s->closing && s->sasl == j->sasl && s->waiting_creds && !s->auth_delayed) {
        s->waiting_creds = 0;
        unsigned char *out = NULL;
        size_t out_len = 0;
        enum mp_sasl_status st =
            mp_sasl_derived(s->sasl, rc == MAGPIE_OK ? j->d : NULL, &out, &out_len);
        sasl_finish(s, st, out, out_len);
        sasl_resume(s);
    }
    mp_sasl_derive_free(j->d);
    free(j);
    mp_session_unref(s);
}

/* Hands the pending derivation of s->sasl to the auth pool; if the pool is
 * full (security.auth_queue) the login fails at once with
 * temporary-auth-failure. */
static void sasl_derive(mp_session *s)
{
    struct derive_job *j = mp_calloc(1, sizeof *j);
    j->s = s;
    j->sasl = s->sasl;
    j->d = mp_sasl_take_derive(s->sasl);
    mp_session_ref(s);
    int rc =
        j->d ? mp_workpool_submit(mp_server.auth_pool, derive_work, derive_done, j) : MAGPIE_ERR;
    if (rc == MAGPIE_OK) {
        sasl_wait(s);
        return;
    }
    if (rc == MAGPIE_AGAIN) {
        mp_stat_inc(MP_STAT_AUTH_POOL_REJECTED);
        mp_log(MP_LOG_WARN, "c2s %s: key derivation queue full, login refused for now", s->peer);
    } else {
        mp_log(MP_LOG_WARN, "c2s %s: cannot queue a key derivation", s->peer);
    }
    mp_sasl_derive_free(j->d);
    free(j);
    mp_session_unref(s);
    unsigned char *out = NULL;
    size_t out_len = 0;
    enum mp_sasl_status st = mp_sasl_derived(s->sasl, NULL, &out, &out_len);
    sasl_finish(s, st, out, out_len);
}

/* Sends the failure answer of s->sasl and ends the exchange; closes the
 * stream after MAX_SASL_FAILURES. */
static void sasl_fail_answer(mp_session *s)
{
    send_nonza(s, "failure", MP_NS_SASL, mp_sasl_condition(s->sasl), NULL);
    mp_stat_inc(MP_STAT_AUTH_FAILURES);
    mp_log(MP_LOG_INFO, "c2s %s: authentication failed (%s)", s->peer, mp_sasl_condition(s->sasl));
    mp_sasl_free(s->sasl);
    s->sasl = NULL;
    if (++s->sasl_failures >= MAX_SASL_FAILURES)
        c2s_close(s, "not-authorized", "Too many authentication failures");
}

/* Session timer: a throttled failure answer is due. */
static void auth_delay_fire(mp_session *s, void *ud)
{
    (void)ud;
    if (!s->auth_delayed || !s->sasl)
        return;
    s->auth_delayed = 0;
    s->waiting_creds = 0;
    sasl_fail_answer(s);
    sasl_resume(s);
}

/* Counts a failed login (wrong password, unknown account) against the
 * peer's address and the account; returns the seconds its answer must
 * wait (0: none). */
static double sasl_throttle(mp_session *s)
{
    const char *user = mp_sasl_username(s->sasl);
    char *account = NULL;
    if (user && s->host) {
        size_t n = strlen(user) + strlen(s->host) + 2;
        account = mp_malloc(n);
        snprintf(account, n, "%s@%s", user, s->host);
    }
    double delay = mp_authguard_failure(mp_server.auth_guard, s->addr_key, account, mp_now());
    free(account);
    return delay;
}

/* A successful login: the account's failure count starts over. */
static void sasl_unthrottle(mp_session *s, const char *user)
{
    size_t n = strlen(user) + strlen(s->host) + 2;
    char *account = mp_malloc(n);
    snprintf(account, n, "%s@%s", user, s->host);
    mp_authguard_success(mp_server.auth_guard, account);
    free(account);
}

/* Acts on a SASL step result; takes out. */
static void sasl_finish(mp_session *s, enum mp_sasl_status st, unsigned char *out, size_t out_len)
{
    char *b64 = NULL;
    if (out && out_len)
        b64 = mp_base64_encode(out, out_len);
    free(out);
    switch (st) {
    case MP_SASL_CONTINUE:
        send_nonza(s, "challenge", MP_NS_SASL, NULL, b64 ? b64 : "=");
        break;
    case MP_SASL_NEED_CREDS: {
        const char *user = mp_sasl_username(s->sasl);
        sasl_wait(s);
        mp_session_ref(s);
        if (mp_account_get_credentials(s->host, user, creds_ready, s) != MAGPIE_OK)
            creds_ready(s, MAGPIE_ERR, NULL);
        break;
    }
    case MP_SASL_NEED_DERIVE:
        sasl_derive(s);
        break;
    case MP_SASL_SUCCESS: {
        const char *user = mp_sasl_username(s->sasl);
        const char *authzid = mp_sasl_authzid(s->sasl);
        if (authzid && *authzid) {
            char bare[2 * MP_JID_PART_MAX + 2];
            snprintf(bare, sizeof bare, "%s@%s", user, s->host);
            mp_jid az;
            int ok = 0;
            if (mp_jid_parse(&az, authzid) == MAGPIE_OK) {
                ok = strcmp(az.full, bare) == 0;
                mp_jid_free(&az);
            }
            if (!ok) {
                send_nonza(s, "failure", MP_NS_SASL, "invalid-authzid", NULL);
                mp_stat_inc(MP_STAT_AUTH_FAILURES);
                mp_sasl_free(s->sasl);
                s->sasl = NULL;
                break;
            }
        }
        sasl_unthrottle(s, user);
        s->user = mp_strdup(user);
        if (b64)
            send_nonza(s, "success", MP_NS_SASL, NULL, b64);
        else
            send_nonza(s, "success", MP_NS_SASL, NULL, NULL);
        mp_stat_inc(MP_STAT_AUTH_SUCCESS);
        mp_log(MP_LOG_INFO, "c2s %s: authenticated %s@%s", s->peer, user, s->host);
        s->authed = 1;
        s->header_sent = 0; /* the client restarts the stream */
        mp_sasl_free(s->sasl);
        s->sasl = NULL;
        mp_xmlstream_set_limits(s->parser, &mp_server.limits); /* pre-auth ones until now */
        mp_xmlstream_reset(s->parser);
        break;
    }
    case MP_SASL_FAILURE: {
        double delay = mp_sasl_bad_credentials(s->sasl) ? sasl_throttle(s) : 0;
        if (delay > 0) {
            /* too many recent failures from this address or for this
             * account: the answer (and anything after it) waits */
            mp_stat_inc(MP_STAT_AUTH_DELAYED);
            mp_log(MP_LOG_INFO, "c2s %s: failed login, answer delayed %.0f s", s->peer, delay);
            sasl_wait(s);
            s->auth_delayed = 1;
            if (!s->auth_timer)
                s->auth_timer = mp_session_timer(s, delay, 0, auth_delay_fire, NULL);
            else
                mp_timer_set(s->auth_timer, delay);
            break;
        }
        sasl_fail_answer(s);
        break;
    }
    }
    free(b64);
}

/* Decodes the base64 content of an <auth/> or <response/>. Returns
 * MAGPIE_OK, or MAGPIE_ERR after answering the client. */
static int sasl_payload(mp_session *s, mp_stanza *st, unsigned char **data, size_t *len)
{
    const char *text = mp_xml_text(st, mp_stanza_root(st));
    size_t tl = strlen(text);
    *data = NULL;
    *len = 0;
    if (tl > mp_server.cfg->max_sasl_size) {
        c2s_close(s, "policy-violation", "SASL message too large");
        return MAGPIE_ERR;
    }
    if (tl == 0 || strcmp(text, "=") == 0)
        return MAGPIE_OK;
    if (mp_base64_decode(text, tl, data, len) != MAGPIE_OK) {
        send_nonza(s, "failure", MP_NS_SASL, "incorrect-encoding", NULL);
        mp_stat_inc(MP_STAT_AUTH_FAILURES);
        if (s->sasl)
            mp_sasl_free(s->sasl);
        s->sasl = NULL;
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

static void handle_sasl(mp_session *s, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    if (strcmp(root->name, "abort") == 0) {
        if (s->sasl)
            mp_sasl_free(s->sasl);
        s->sasl = NULL;
        send_nonza(s, "failure", MP_NS_SASL, "aborted", NULL);
        return;
    }
    if (strcmp(root->name, "auth") == 0) {
        if (s->sasl)
            mp_sasl_free(s->sasl);
        const char *mech = mp_xml_get_attr(root, "mechanism");
        struct mp_sasl_cb cb;
        memset(&cb, 0, sizeof cb);
        cb.tls = s->tls;
        if (s->t)
            s->t->ops->channel_binding(s->t, &cb);
        cb.strict_downgrade = mp_server.cfg->channel_binding_strict;
        s->sasl = mech ? mp_sasl_new(mech, &cb) : NULL;
        if (!s->sasl) {
            send_nonza(s, "failure", MP_NS_SASL, "invalid-mechanism", NULL);
            mp_stat_inc(MP_STAT_AUTH_FAILURES);
            return;
        }
    } else if (strcmp(root->name, "response") == 0) {
        if (!s->sasl) {
            send_nonza(s, "failure", MP_NS_SASL, "malformed-request", NULL);
            return;
        }
    } else {
        c2s_close(s, "unsupported-stanza-type", NULL);
        return;
    }
    unsigned char *in, *out = NULL;
    size_t in_len, out_len = 0;
    if (sasl_payload(s, st, &in, &in_len) != MAGPIE_OK)
        return;
    enum mp_sasl_status rc = mp_sasl_step(s->sasl, in, in_len, &out, &out_len);
    free(in);
    sasl_finish(s, rc, out, out_len);
}

/* ---- binding ---- */

static void send_iq_error(mp_session *s, mp_stanza *st, const char *type, const char *cond)
{
    mp_stanza *e = mp_stanza_copy(st);
    mp_stanza_make_error(e, type, cond, NULL);
    mp_xml_set_attr(e, mp_stanza_root(e), "from", NULL);
    mp_session_send(s, e);
}

static void kick_run(void *arg)
{
    mp_session *old = arg;
    if (!old->dead) {
        /* the router entry already belongs to the new session */
        old->bound = 0;
        atomic_fetch_sub(&mp_server.sessions, 1);
        mp_notify_session_ended(old);
        c2s_close(old, "conflict", "Replaced by new connection");
    }
    mp_session_unref(old);
}

void mp_c2s_replaced(mp_session *old)
{
    mp_session_ref(old);
    kick_run(old);
}

static void handle_bind(mp_session *s, mp_stanza *st, mp_xml *bind)
{
    mp_xml *res = mp_xml_find(bind, "resource", NULL);
    const char *r = res ? mp_xml_text(st, res) : "";
    char gen[17];
    if (!*r) {
        mp_random_id(gen, sizeof gen);
        r = gen;
    }
    if (mp_jid_set(&s->base.jid, s->user, s->host, r) != MAGPIE_OK) {
        send_iq_error(s, st, "modify", "bad-request");
        return;
    }
    mp_session *old = NULL;
    mp_router_bind(s, &old);
    s->bound = 1;
    atomic_fetch_add(&mp_server.sessions, 1);
    if (old) {
        mp_log(MP_LOG_INFO, "c2s %s: %s replaces an existing session", s->peer, s->base.jid.full);
        if (old->base.w == s->base.w)
            kick_run(old);
        else if (mp_loop_post(old->base.w->loop, kick_run, old) != MAGPIE_OK)
            mp_session_unref(old);
    }
    if (s->timer) {
        event_free(s->timer);
        s->timer = NULL;
    }
    mp_stanza *reply = mp_iq_result(st);
    mp_xml_set_attr(reply, mp_stanza_root(reply), "from", NULL);
    mp_xml_set_attr(reply, mp_stanza_root(reply), "to", NULL);
    mp_xml *b = mp_xml_add_child(reply, mp_stanza_root(reply), "bind", MP_NS_BIND);
    mp_xml *j = mp_xml_add_child(reply, b, "jid", NULL);
    mp_xml_add_text(reply, j, s->base.jid.full, strlen(s->base.jid.full));
    mp_session_send(s, reply);
    mp_log(MP_LOG_INFO, "c2s %s: bound %s on worker %d", s->peer, s->base.jid.full, s->base.w->id);
    mp_notify_session_started(s);
}

/* ---- stanzas ---- */

static int valid_stanza(mp_session *s, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    if (strcmp(root->name, "iq") != 0)
        return 1;
    const char *type = mp_xml_get_attr(root, "type");
    const char *id = mp_xml_get_attr(root, "id");
    int req = type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0);
    int resp = type && (strcmp(type, "result") == 0 || strcmp(type, "error") == 0);
    int n = 0;
    for (mp_xml *c = mp_xml_first_element(root); c; c = mp_xml_find_next(c, NULL, NULL))
        n++;
    if (!id || (!req && !resp) || (req && n != 1)) {
        if (id && !resp)
            send_iq_error(s, st, "modify", "bad-request");
        return 0;
    }
    return 1;
}

static void handle_client_stanza(mp_session *s, mp_stanza *st);
static mp_ack *in_begin(mp_session *s, mp_stanza *st);

static void handle_stanza(mp_session *s, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    if (!root->ns || strcmp(root->ns, MP_NS_CLIENT) != 0 ||
        (strcmp(root->name, "message") != 0 && strcmp(root->name, "presence") != 0 &&
         strcmp(root->name, "iq") != 0)) {
        /* a nonza a module handles (XEP-0352, XEP-0198; before binding
         * only those registered for it: <resume/>) */
        if (mp_stream_element_dispatch(s, st, s->bound) == HOOK_HANDLED)
            return;
        c2s_close(s, "unsupported-stanza-type", NULL);
        return;
    }
    if (s->sm && s->bound) {
        /* counted: handled once routing returned and every deferral of
         * its acknowledgement token (mp_stanza_defer_ack) is done */
        mp_ack *a = in_begin(s, st);
        handle_client_stanza(s, st);
        mp_ack_done(a);
        return;
    }
    handle_client_stanza(s, st);
}

/* A message, presence or iq from the client. */
static void handle_client_stanza(mp_session *s, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    if (!valid_stanza(s, st))
        return;

    if (!s->bound) {
        mp_xml *child = mp_xml_first_element(root);
        const char *type = mp_xml_get_attr(root, "type");
        if (strcmp(root->name, "iq") == 0 && child && type && strcmp(type, "set") == 0 &&
            child->ns && strcmp(child->ns, MP_NS_BIND) == 0 && strcmp(child->name, "bind") == 0) {
            handle_bind(s, st, child);
            return;
        }
        c2s_close(s, "not-authorized", "Bind a resource first");
        return;
    }

    /* RFC 6120 §8.1.2.1: stamp 'from' with the full JID; a client may
     * give its own full or bare JID, nothing else */
    const char *from = mp_xml_get_attr(root, "from");
    if (from && strcmp(from, s->base.jid.full) != 0 && strcmp(from, s->base.jid.bare) != 0) {
        mp_jid fj;
        int same = 0;
        if (mp_jid_parse(&fj, from) == MAGPIE_OK) {
            same = strcmp(fj.full, s->base.jid.full) == 0 || strcmp(fj.full, s->base.jid.bare) == 0;
            mp_jid_free(&fj);
        }
        if (!same) {
            c2s_close(s, "invalid-from", "The 'from' address is not yours");
            return;
        }
    }
    mp_stanza_set_from(st, &s->base.jid);
    if (s->lang[0] && !mp_xml_get_attr(root, "xml:lang"))
        mp_xml_set_attr(st, root, "xml:lang", s->lang);

    const char *to = mp_xml_get_attr(root, "to");
    if (to) {
        mp_jid tj;
        if (mp_jid_parse(&tj, to) != MAGPIE_OK) {
            mp_stanza *e = mp_stanza_copy(st);
            mp_stanza_make_error(e, "modify", "jid-malformed", NULL);
            mp_xml_set_attr(e, mp_stanza_root(e), "from", NULL);
            mp_xml_set_attr(e, mp_stanza_root(e), "to", s->base.jid.full);
            const char *t = mp_xml_get_attr(root, "type");
            if (t && strcmp(t, "error") == 0)
                mp_stanza_unref(e);
            else
                mp_session_send(s, e);
            return;
        }
        mp_stanza_set_to(st, &tj);
        mp_jid_free(&tj);
    }

    /* legacy session establishment (RFC 3921): accepted and ignored */
    mp_xml *child = mp_xml_first_element(root);
    if (strcmp(root->name, "iq") == 0 && !to && child && child->ns &&
        strcmp(child->ns, MP_NS_SESSION) == 0) {
        mp_stanza *r = mp_iq_result(st);
        mp_xml_set_attr(r, mp_stanza_root(r), "from", NULL);
        mp_session_send(s, r);
        return;
    }
    if (strcmp(root->name, "iq") == 0 && child && child->ns && strcmp(child->ns, MP_NS_BIND) == 0) {
        send_iq_error(s, st, "cancel", "not-allowed");
        return;
    }

    if (mp_filters_run(MP_FILTER_IN, s, st) == MP_FILTER_STOP)
        return;
    mp_router_from_client(s, mp_stanza_ref(st));
}

static void unblock_run(void *arg)
{
    mp_session *s = arg;
    if (s->blocked > 0)
        s->blocked--;
    if (!s->dead)
        update_reading(s);
    mp_session_unref(s);
}

/* A queue this session waited on has drained (any thread): resume it on
 * its own worker, never from inside the drainer's call stack. */
static void unblock_wake(void *arg)
{
    mp_session *s = arg;
    if (mp_loop_post(s->base.w->loop, unblock_run, s) != MAGPIE_OK)
        mp_session_unref(s);
}

/* After one of s's stanzas was handled: if handling it added to queues
 * that are over their bound, s stops being read until each has drained. */
static void wait_for_pressure(mp_session *s)
{
    struct mp_waitq *q[8];
    size_t n = mp_pressure_take(q, 8);
    for (size_t i = 0; i < n; i++) {
        if (q[i] != s->base.outq && !s->closing) {
            mp_session_ref(s);
            if (mp_waitq_wait(q[i], unblock_wake, s) == MAGPIE_OK)
                s->blocked++;
            else
                mp_session_unref(s);
        }
        mp_waitq_unref(q[i]);
    }
    if (s->blocked > 0 && !s->closing) {
        mp_stat_inc(MP_STAT_SENDERS_PAUSED);
        mp_xmlstream_stop(s->parser);
        if (s->t)
            s->t->ops->set_reading(s->t, 0);
    }
}

/* An IQ on a stream not authenticated yet: only a get/set with one child
 * element, in a namespace a module registered with mp_preauth_iq_register
 * (XEP-0077), is let through, each one counted against the address's
 * connection rate. HOOK_HANDLED (answered, by the module or here), or
 * HOOK_PASS: the caller closes the stream. st borrowed. */
static int preauth_iq(mp_session *s, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    if (!root->ns || strcmp(root->ns, MP_NS_CLIENT) != 0 || strcmp(root->name, "iq") != 0 ||
        !s->host)
        return HOOK_PASS;
    const char *type = mp_xml_get_attr(root, "type");
    if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0) ||
        !mp_xml_get_attr(root, "id"))
        return HOOK_PASS;
    mp_xml *child = mp_xml_first_element(root);
    if (!child || mp_xml_find_next(child, NULL, NULL))
        return HOOK_PASS;
    if (!child->ns || !mp_preauth_iq_known(child->ns))
        return HOOK_PASS;
    if (s->addr_counted) {
        if (mp_addrlimit_acquire(s->addr_key) != MAGPIE_OK) {
            send_iq_error(s, st, "wait", "resource-constraint");
            return HOOK_HANDLED;
        }
        mp_addrlimit_release(s->addr_key);
    }
    return mp_preauth_iq_dispatch(s, st, s->host, s->addr_counted ? s->addr_key : "local");
}

mp_session *mp_session_find_stream(uint64_t id)
{
    mp_session *b = mp_session_find(id);
    if (b)
        return b;
    mp_loop *cur = mp_loop_current();
    for (int i = 0; i < mp_server.n_workers; i++) {
        struct mp_worker *w = &mp_server.workers[i];
        if (w->loop != cur)
            continue;
        for (mp_session *s = w->sessions; s; s = s->next)
            if (s->base.id == id)
                return s->closing || s->dead ? NULL : s;
    }
    return NULL;
}

static void on_stanza(void *ud, mp_stanza *st)
{
    mp_session *s = ud;
    mp_stat_inc(MP_STAT_STANZAS_IN);
    if (s->closing) {
        mp_stanza_unref(st);
        return;
    }
    mp_pressure_begin();
    handle_nonza_or_stanza(s, st);
    wait_for_pressure(s);
}

/* Dispatches one depth-1 element of the stream by negotiation state.
 * Takes st. */
static void handle_nonza_or_stanza(mp_session *s, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    const char *ns = root->ns ? root->ns : "";

    if (strcmp(ns, MP_NS_TLS) == 0 && strcmp(root->name, "starttls") == 0) {
        if (s->tls || s->authed) {
            send_nonza(s, "failure", MP_NS_TLS, NULL, NULL);
            c2s_close(s, NULL, NULL);
        } else {
            send_nonza(s, "proceed", MP_NS_TLS, NULL, NULL);
            s->starttls_pending = 1;
            s->t->ops->set_reading(s->t, 0);
            s->t->ops->watch_drain(s->t);
            mp_xmlstream_stop(s->parser);
        }
    } else if (!s->tls && mp_server.cfg->require_tls) {
        if (strcmp(ns, MP_NS_SASL) == 0 && strcmp(root->name, "auth") == 0) {
            send_nonza(s, "failure", MP_NS_SASL, "encryption-required", NULL);
            c2s_close(s, "policy-violation", "Use STARTTLS first");
        } else {
            c2s_close(s, "policy-violation", "Use STARTTLS first");
        }
    } else if (strcmp(ns, MP_NS_SASL) == 0 && !s->authed) {
        if (!s->waiting_creds)
            handle_sasl(s, st);
    } else if (!s->authed) {
        if (preauth_iq(s, st) != HOOK_HANDLED)
            c2s_close(s, "not-authorized", "Authenticate first");
    } else {
        handle_stanza(s, st);
    }
    mp_stanza_unref(st);
}

/* ---- transport callbacks ---- */

/* Bytes arrived: parse what may be parsed now. */
static void c2s_read(void *ud)
{
    mp_session *s = ud;
    if (!s->t)
        return;
    struct evbuffer *in = s->t->ops->input(s->t);
    s->last_read = mp_now();
    mp_session_ref(s);
    while (may_read(s) && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t used = 0;
        int rc = mp_xmlstream_feed(s->parser, v.iov_base, v.iov_len, &used);
        if (rc == MAGPIE_OK)
            evbuffer_drain(in, v.iov_len);
        else if (rc == MAGPIE_AGAIN)
            evbuffer_drain(in, used);
        else
            break;
    }
    if (s->starttls_pending && s->t)
        evbuffer_drain(in, evbuffer_get_length(in)); /* RFC 6120 §5.4.3.3 */
    s->parser_idle_since = mp_now();
    /* backpressure: stop reading while our own output is not drained */
    if (!s->closing && !s->dead && !s->read_paused &&
        queued(s) > mp_server.cfg->max_output_buffer / 2) {
        s->read_paused = 1;
        s->t->ops->watch_drain(s->t);
    }
    /* nothing more is read while parsing is suspended (credentials
     * lookup, STARTTLS, a full queue): input stays bounded */
    if (!s->closing && !s->dead && s->t && !may_read(s))
        s->t->ops->set_reading(s->t, 0);
    mp_session_unref(s);
}

/* Whether s's input is to be read and parsed now. */
static int may_read(const mp_session *s)
{
    return !s->closing && !s->dead && !s->starttls_pending && !s->waiting_creds &&
           !s->read_paused && s->blocked == 0;
}

/* Re-enables reading once nothing holds it back, parsing what was already
 * buffered. */
static void update_reading(mp_session *s)
{
    if (!s->t || !may_read(s))
        return;
    s->t->ops->set_reading(s->t, 1);
    if (evbuffer_get_length(s->t->ops->input(s->t)) > 0)
        c2s_read(s);
}

/* What we wrote has left (asked for by STARTTLS and by read pausing). */
static void on_drained(void *ud)
{
    mp_session *s = ud;
    if (s->closing || s->dead)
        return;
    if (s->starttls_pending) {
        if (start_tls(s) != MAGPIE_OK) {
            mp_log(MP_LOG_WARN, "c2s %s: cannot start TLS", s->peer);
            c2s_destroy(s);
        }
        return;
    }
    if (s->read_paused) {
        s->read_paused = 0;
        update_reading(s);
    }
}

static void on_event(void *ud, enum mp_transport_event ev)
{
    mp_session *s = ud;
    if (ev == MP_TRANSPORT_TLS_READY)
        return;
    mp_stat_inc(MP_STAT_PEER_CLOSED);
    /* a resumable session outlives the connection it just lost */
    if (s->resume_timeout > 0 && mp_c2s_detach(s, s->resume_timeout) == MAGPIE_OK)
        return;
    c2s_destroy(s);
}

static const struct mp_transport_up c2s_up = {c2s_read, on_drained, on_progress, on_event};

static void negotiation_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mp_session *s = arg;
    mp_log(MP_LOG_DEBUG, "c2s %s: negotiation not finished in time", s->peer);
    c2s_close(s, "connection-timeout", "Negotiation took too long");
}

/* ---- accept ---- */

static const struct mp_xmlstream_cb parser_cb = {on_open, on_stanza, on_close, on_error};
static const struct mp_session_ops c2s_ops = {mp_c2s_deliver, mp_c2s_replaced, c2s_close,
                                              c2s_release};

/* Starts the stream of a new connection t (taken) on worker w, counted in
 * mp_server.connections already. Returns the new session (the worker holds
 * its reference). */
static mp_session *c2s_start(struct mp_worker *w, struct mp_transport *t)
{
    const struct mp_config *cfg = mp_server.cfg;
    mp_session *s = mp_calloc(1, sizeof *s);
    mp_session_base_init(&s->base, &c2s_ops, w); /* the worker's reference */
    s->t = t;
    s->tls = t->secure;
    s->peer = t->peer;
    s->last_read = mp_now();
    s->parser_idle_since = s->last_read;
    s->parser = mp_xmlstream_new(&mp_server.preauth_limits, &parser_cb, s);
    if (s->parser && t->framing == MP_FRAMING_WEBSOCKET)
        mp_xmlstream_set_framed(s->parser);
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->n_sessions++;
    mp_transport_set_up(t, &c2s_up, s);
    if (!s->parser) {
        mp_log(MP_LOG_ERROR, "c2s %s: cannot set up the connection", s->peer);
        c2s_destroy(s);
        return NULL;
    }
    s->timer = evtimer_new(mp_loop_base(w->loop), negotiation_timeout, s);
    struct timeval tv = {cfg->negotiation_timeout, 0};
    evtimer_add(s->timer, &tv);
    t->ops->set_reading(t, 1);
    return s;
}

mp_session *mp_c2s_open(struct mp_worker *w, struct mp_transport *t)
{
    atomic_fetch_add(&mp_server.connections, 1);
    return c2s_start(w, t);
}

void mp_c2s_accept(struct mp_worker *w, int fd, int direct_tls)
{
    const struct mp_config *cfg = mp_server.cfg;
    int open_now = atomic_fetch_add(&mp_server.connections, 1);
    if (w->shutting_down || open_now >= cfg->max_connections) {
        atomic_fetch_sub(&mp_server.connections, 1);
        mp_stat_inc(MP_STAT_REFUSED);
        close(fd);
        return;
    }
    char key[64];
    if (mp_addrlimit_acquire_fd(fd, key, sizeof key) != MAGPIE_OK) {
        atomic_fetch_sub(&mp_server.connections, 1);
        mp_log(MP_LOG_DEBUG, "c2s: refused a connection from %s (per-address limit)", key);
        close(fd);
        return;
    }
    mp_stat_inc(MP_STAT_CONNECTIONS_TOTAL);
    if (open_now + 1 > atomic_load_explicit(&mp_server.connections_peak, memory_order_relaxed))
        atomic_store_explicit(&mp_server.connections_peak, open_now + 1, memory_order_relaxed);
    struct mp_transport *t =
        mp_transport_tcp_new(mp_loop_base(w->loop), fd, w->rate, direct_tls, cfg->hosts[0].domain);
    if (!t) {
        mp_addrlimit_release(key);
        atomic_fetch_sub(&mp_server.connections, 1);
        return;
    }
    mp_session *s = c2s_start(w, t);
    if (s) {
        memcpy(s->addr_key, key, sizeof s->addr_key - 1);
        s->addr_key[sizeof s->addr_key - 1] = '\0';
        s->addr_counted = 1;
    } else {
        mp_addrlimit_release(key);
    }
    if (s)
        mp_log(MP_LOG_DEBUG, "c2s %s: connected%s", s->peer, direct_tls ? " (direct TLS)" : "");
}

/* ---- sessions that outlive connections ---- */

/* Queues st (taken) on a detached session. MAGPIE_OK, or MAGPIE_ERR when
 * MP_SESSION_QUEUE_MAX stanzas wait already (st not taken). The ring grows
 * by doubling, so this allocates only while detached and rarely. */
static int pending_push(mp_session *s, mp_stanza *st)
{
    if (s->pending_n >= MP_SESSION_QUEUE_MAX)
        return MAGPIE_ERR;
    if (s->pending_n == s->pending_cap) {
        uint32_t cap = s->pending_cap ? 2 * s->pending_cap : 16;
        mp_stanza **v = mp_malloc(cap * sizeof *v);
        for (uint32_t i = 0; i < s->pending_n; i++)
            v[i] = s->pending[(s->pending_head + i) % s->pending_cap];
        free(s->pending);
        s->pending = v;
        s->pending_cap = cap;
        s->pending_head = 0;
    }
    s->pending[(s->pending_head + s->pending_n) % s->pending_cap] = st;
    s->pending_n++;
    return MAGPIE_OK;
}

static void detach_expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mp_session *s = arg;
    mp_log(MP_LOG_DEBUG, "c2s %s: detached session %" PRIu64 " expired", s->peer, s->base.id);
    c2s_destroy(s);
}

/* (Re)arms the end of detached session s, on its current worker. */
static void arm_detach_timer(mp_session *s)
{
    if (s->timer)
        event_free(s->timer);
    s->timer = evtimer_new(mp_loop_base(s->base.w->loop), detach_expired, s);
    struct timeval tv = to_tv(s->detach_deadline - mp_now());
    evtimer_add(s->timer, &tv);
}

/* s's connection is about to go: its peer string becomes a copy of its own. */
static void keep_peer(mp_session *s)
{
    if (!s->t || s->peer != s->t->peer)
        return;
    s->peer_copy = mp_strdup(s->t->peer);
    s->peer = s->peer_copy;
}

/* Frees s's connection-side state: transport, parser, output accounting. */
static void drop_connection(mp_session *s)
{
    keep_peer(s);
    if (s->t)
        s->t->ops->free(s->t);
    s->t = NULL;
    if (s->parser)
        mp_xmlstream_free(s->parser);
    s->parser = NULL;
    if (s->stall)
        evtimer_del(s->stall);
    mp_waitq_set(s->base.outq, 0);
    if (s->addr_counted)
        mp_addrlimit_release(s->addr_key);
    s->addr_counted = 0;
    s->read_paused = 0;
    atomic_fetch_sub(&mp_server.connections, 1);
}

void mp_c2s_set_resumable(mp_session *s, double timeout)
{
    s->resume_timeout = timeout;
}

int mp_c2s_detach(mp_session *s, double timeout)
{
    if (s->dead || s->closing || !s->bound || !s->t)
        return MAGPIE_ERR;
    mp_log(MP_LOG_DEBUG, "c2s %s: session %" PRIu64 " (%s) detached", s->peer, s->base.id,
           s->base.jid.full);
    drop_connection(s);
    s->detach_deadline = mp_now() + timeout;
    arm_detach_timer(s);
    return MAGPIE_OK;
}

static void resume_reading_run(void *arg)
{
    mp_session *s = arg;
    if (!s->dead)
        update_reading(s);
    mp_session_unref(s);
}

static void resume_failed(mp_session *from, void *arg);

/* On s's (now) own worker: s takes from's connection and open stream,
 * writes what waited, and from's shell ends. resume: called for
 * mp_session_resume (arg is its caller's), which reports the outcome. */
static void adopt(mp_session *s, mp_session *from, int resume, void *arg)
{
    if (s->dead || s->closing || s->t || from->dead || from->closing || !from->t) {
        if (resume)
            resume_failed(from, arg);
        else
            c2s_close(from, "not-authorized", "The session to resume is gone");
        if (!s->dead && !s->closing && !s->t)
            arm_detach_timer(s); /* still detached: it ends in its own time */
        return;
    }
    if (resume && from->blocked > 0)
        from->blocked--; /* the hold taken by mp_session_resume */
    if (s->timer)
        event_free(s->timer);
    s->timer = NULL;
    keep_peer(from);
    s->t = from->t;
    s->parser = from->parser;
    from->t = NULL;
    from->parser = NULL;
    mp_transport_set_up(s->t, &c2s_up, s);
    mp_xmlstream_stop(s->parser); /* if from was being fed: stop there */
    mp_xmlstream_set_ud(s->parser, s);
    s->tls = from->tls;
    s->header_sent = from->header_sent;
    memcpy(s->lang, from->lang, sizeof s->lang);
    free(s->peer_copy);
    s->peer_copy = NULL;
    s->peer = s->t->peer;
    memcpy(s->addr_key, from->addr_key, sizeof s->addr_key);
    s->addr_counted = from->addr_counted;
    from->addr_counted = 0;
    s->last_read = s->parser_idle_since = mp_now();
    c2s_destroy(from); /* the connection (and its count) went to s */
    mp_log(MP_LOG_DEBUG,
           "c2s %s: session %" PRIu64 " (%s) attached on worker %d, %u stanza(s) waited", s->peer,
           s->base.id, s->base.jid.full, s->base.w->id, s->pending_n);
    if (resume) {
        /* <resumed/> and what the client has not acknowledged go first;
         * then module state tied to the connection starts over (CSI) */
        mp_sm_resumed(s, arg);
        mp_notify_session_resumed(s);
    }
    /* what waited goes first, in order, once each */
    while (s->pending_n > 0 && s->t) {
        mp_stanza *st = s->pending[s->pending_head];
        s->pending_head = (s->pending_head + 1) % s->pending_cap;
        s->pending_n--;
        mp_session_send(s, st);
    }
    free(s->pending);
    s->pending = NULL;
    s->pending_cap = s->pending_head = 0;
    /* input already buffered is parsed from the loop, never from inside
     * the feed that may have called us */
    mp_session_ref(s);
    if (mp_loop_post(s->base.w->loop, resume_reading_run, s) != MAGPIE_OK)
        mp_session_unref(s);
}

struct handover {
    int resume; /* for mp_session_resume, with its caller's arg */
    void *arg;
    mp_session *s, *from; /* referenced */
    struct mp_worker *to;
    mp_stanza *presence;           /* s's last presence, carried along (referenced) */
    struct mp_worker *from_worker; /* s's worker before the move */
};

static void handover_end(struct handover *h)
{
    mp_session_unref(h->s);
    mp_session_unref(h->from);
    mp_stanza_unref(h->presence);
    free(h);
}

/* On the new worker: s arrives, with its timers; then adopt. */
static void handover_in(void *arg)
{
    struct handover *h = arg;
    mp_session *s = h->s;
    struct mp_worker *w = h->to;
    s->prev = NULL;
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->n_sessions++;
    for (struct mp_timer *t = s->timers; t; t = t->next) {
        int pending = t->repeat || evtimer_pending(t->ev, NULL);
        event_del(t->ev);
        event_assign(t->ev, mp_loop_base(w->loop), -1, t->repeat ? EV_PERSIST : 0,
                     session_timer_fire, t);
        if (pending) {
            struct timeval tv = to_tv(t->secs);
            event_add(t->ev, &tv);
        }
    }
    if (s->stall) {
        event_free(s->stall);
        s->stall = NULL;
    }
    mp_router_session_arrive(s, h->from_worker, h->presence);
    adopt(s, h->from, h->resume, h->arg);
    handover_end(h);
}

/* The new worker could not take s: from's stream ends there. */
static void handover_refused(void *arg)
{
    struct handover *h = arg;
    if (h->resume)
        resume_failed(h->from, h->arg);
    else
        c2s_close(h->from, "not-authorized", "The session to resume is gone");
    handover_end(h);
}

/* On s's old worker: s leaves it (if still detached) for h->to. */
static void handover_out(void *arg)
{
    struct handover *h = arg;
    mp_session *s = h->s;
    struct mp_worker *old = s->base.w;
    if (s->dead || s->closing || s->t) {
        if (mp_loop_post(h->to->loop, handover_refused, h) != MAGPIE_OK)
            handover_end(h);
        return;
    }
    if (s->timer)
        event_free(s->timer);
    s->timer = NULL;
    for (struct mp_timer *t = s->timers; t; t = t->next)
        event_del(t->ev);
    if (s->stall)
        evtimer_del(s->stall);
    if (s->prev)
        s->prev->next = s->next;
    else
        old->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    old->n_sessions--;
    /* the router finds it on the new worker from now on; its presence goes along */
    h->presence = mp_presence_last(mp_session_id(s)); /* a new stanza, or NULL */
    mp_presence_forget(mp_session_id(s));
    h->from_worker = old;
    s->base.w = h->to; /* deliveries still routed here are forwarded from now on */
    if (mp_loop_post(h->to->loop, handover_in, h) != MAGPIE_OK) {
        s->base.w = old; /* cannot happen while the new worker runs */
        handover_end(h);
    }
    if (old->shutting_down && old->n_sessions == 0)
        mp_loop_stop(old->loop);
}

int mp_c2s_takeover(mp_session *s, mp_session *from)
{
    if (s == from || s->dead || s->closing || !s->bound || !from->authed || from->bound ||
        from->closing || from->dead || !from->t || !s->user || !from->user || !s->host ||
        !from->host || strcmp(s->user, from->user) != 0 || strcmp(s->host, from->host) != 0)
        return MAGPIE_ERR;
    if (s->base.w == from->base.w) {
        if (s->t)
            return MAGPIE_ERR;
        adopt(s, from, 0, NULL);
        return MAGPIE_OK;
    }
    /* s lives on another worker: it moves to from's, where the connection
     * is. from stops reading until then. */
    from->t->ops->set_reading(from->t, 0);
    mp_xmlstream_stop(from->parser);
    from->read_paused = 1;
    struct handover *h = mp_calloc(1, sizeof *h);
    h->s = s;
    h->from = from;
    h->to = from->base.w;
    h->presence = NULL;
    h->from_worker = s->base.w;
    mp_session_ref(s);
    mp_session_ref(from);
    if (mp_loop_post(s->base.w->loop, handover_out, h) != MAGPIE_OK) {
        from->read_paused = 0;
        handover_end(h);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

/* ---- stream management (XEP-0198) ---- */

void mp_session_manage(mp_session *s, double resume_timeout)
{
    s->sm = 1;
    s->in_seq = 0;
    s->in_open_n = 0;
    s->resume_timeout = resume_timeout;
}

uint32_t mp_session_received(mp_session *s)
{
    return s->in_seq;
}

uint32_t mp_session_handled(mp_session *s, int *all)
{
    if (all)
        *all = s->in_open_n == 0;
    return s->in_open_n ? s->in_open[0] - 1 : s->in_seq;
}

/* The client's stanza seq is handled (on s's worker). */
static void in_done(mp_session *s, uint32_t seq)
{
    size_t i = 0;
    while (i < s->in_open_n && s->in_open[i] != seq)
        i++;
    if (i == s->in_open_n)
        return; /* counting restarted (a second <enable/>) */
    memmove(s->in_open + i, s->in_open + i + 1, (s->in_open_n - i - 1) * sizeof *s->in_open);
    s->in_open_n--;
    if (i == 0 && !s->dead && !s->closing && s->sm)
        mp_sm_handled(s, mp_session_handled(s, NULL));
}

struct in_tok {
    mp_session *s; /* referenced */
    uint32_t seq;
};

static void in_done_run(void *arg)
{
    struct in_tok *k = arg;
    mp_session *s = k->s;
    if (!s->dead && !s->closing && s->base.w->loop != mp_loop_current()) {
        /* the session moved (resumed on another worker): follow it */
        if (mp_loop_post(s->base.w->loop, in_done_run, k) == MAGPIE_OK)
            return;
    } else if (!s->dead && s->base.w->loop == mp_loop_current()) {
        in_done(s, k->seq);
    }
    mp_session_unref(s);
    free(k);
}

/* The token's last completion (any thread): report it on s's worker. */
static void in_complete(void *ud)
{
    struct in_tok *k = ud;
    if (k->s->base.w->loop == mp_loop_current()) {
        in_done_run(k);
        return;
    }
    if (mp_loop_post(k->s->base.w->loop, in_done_run, k) != MAGPIE_OK) {
        mp_session_unref(k->s);
        free(k);
    }
}

/* Counts a stanza from the client and gives it an acknowledgement token;
 * the caller completes its own part with mp_ack_done once it handled it. */
static mp_ack *in_begin(mp_session *s, mp_stanza *st)
{
    uint32_t seq = ++s->in_seq;
    if (s->in_open_n == s->in_open_cap) {
        s->in_open_cap = s->in_open_cap ? 2 * s->in_open_cap : 8;
        s->in_open = mp_realloc(s->in_open, s->in_open_cap * sizeof *s->in_open);
    }
    s->in_open[s->in_open_n++] = seq;
    struct in_tok *k = mp_malloc(sizeof *k);
    k->s = s;
    k->seq = seq;
    mp_session_ref(s);
    mp_ack *a = mp_ack_new(in_complete, k);
    mp_stanza_set_ack(st, a);
    return a;
}

struct resume_job {
    uint64_t id;
    mp_session *from; /* referenced */
    void *arg;
};

static void resume_job_end(struct resume_job *r)
{
    mp_session_unref(r->from);
    free(r);
}

/* On from's worker: no session to take over. from reads again (it may
 * bind), and the module answers <failed/>. */
static void resume_failed(mp_session *from, void *arg)
{
    int open = !from->dead && !from->closing;
    if (open && from->blocked > 0)
        from->blocked--;
    mp_sm_resume_failed(open ? from : NULL, arg);
    if (open) {
        mp_session_ref(from);
        if (mp_loop_post(from->base.w->loop, resume_reading_run, from) != MAGPIE_OK)
            mp_session_unref(from);
    }
}

static void resume_failed_run(void *arg)
{
    struct resume_job *r = arg;
    resume_failed(r->from, r->arg);
    resume_job_end(r);
}

/* On the worker the directory named for the session: finds it, closes
 * its old connection if it still has one, and hands it to from. */
static void resume_run(void *arg)
{
    struct resume_job *r = arg;
    mp_session *from = r->from;
    mp_session *s = mp_session_find(r->id);
    if (!s || s->dead || s->closing || !s->bound || !s->sm || !s->user || !from->user ||
        strcmp(s->user, from->user) != 0 || !s->host || !from->host ||
        strcmp(s->host, from->host) != 0) {
        if (from->base.w->loop == mp_loop_current())
            resume_failed_run(r);
        else if (mp_loop_post(from->base.w->loop, resume_failed_run, r) != MAGPIE_OK)
            resume_job_end(r);
        return;
    }
    if (s->t) {
        /* XEP-0198 §5: the old connection, still open here, ends */
        mp_log(MP_LOG_DEBUG, "c2s %s: session %" PRIu64 " resumed elsewhere, old connection closed",
               s->peer, s->base.id);
        if (s->header_sent)
            mp_stream_write_close(s->t);
        mp_c2s_detach(s, s->resume_timeout > 0 ? s->resume_timeout : 60);
    }
    if (s->base.w == from->base.w) {
        adopt(s, from, 1, r->arg);
        resume_job_end(r);
        return;
    }
    struct handover *h = mp_calloc(1, sizeof *h);
    h->resume = 1;
    h->arg = r->arg;
    h->s = s;
    h->from = from; /* the job's reference goes to the handover */
    h->to = from->base.w;
    h->from_worker = s->base.w;
    mp_session_ref(s);
    free(r);
    handover_out(h);
}

int mp_session_resume(mp_session *from, const char *full, uint64_t id, void *arg)
{
    int worker;
    if (!from->authed || from->bound || from->closing || from->dead || !from->t ||
        mp_router_find_full(full, id, &worker) != MAGPIE_OK)
        return MAGPIE_NOTFOUND;
    /* from reads nothing more until the outcome */
    mp_session_hold(from);
    struct resume_job *r = mp_malloc(sizeof *r);
    r->id = id;
    r->from = from;
    r->arg = arg;
    mp_session_ref(from);
    struct mp_worker *w = &mp_server.workers[worker];
    if (w->loop == mp_loop_current()) {
        resume_run(r);
    } else if (mp_loop_post(w->loop, resume_run, r) != MAGPIE_OK) {
        resume_job_end(r);
        mp_session_release(from);
        return MAGPIE_NOTFOUND;
    }
    return MAGPIE_OK;
}

void mp_c2s_shutdown_worker(struct mp_worker *w)
{
    w->shutting_down = 1;
    if (w->n_sessions == 0) {
        mp_loop_stop(w->loop);
        return;
    }
    for (mp_session *s = w->sessions; s; s = s->next)
        c2s_close(s, "system-shutdown", "The server is shutting down");
}

void mp_c2s_sweep(struct mp_worker *w)
{
    double now = mp_now();
    size_t released = 0;
    for (mp_session *s = w->sessions; s; s = s->next) {
        if (s->closing || !s->parser || now - s->parser_idle_since <= 10.0 || !s->t ||
            evbuffer_get_length(s->t->ops->input(s->t)) != 0)
            continue;
        /* count only parsers freed now, not ones released by an earlier sweep */
        size_t before = mp_xmlstream_memory(s->parser);
        if (mp_xmlstream_release(s->parser) == MAGPIE_OK && mp_xmlstream_memory(s->parser) < before)
            released++, mp_log(MP_LOG_DEBUG, "c2s %s: idle parser released, %zu -> %zu bytes",
                               s->peer, before, mp_xmlstream_memory(s->parser));
    }
    /* freed parsers sit between live allocations: give their pages back */
    if (released >= 256)
        malloc_trim(0);
    if (w->id == 0)
        mp_addrlimit_prune();
}
