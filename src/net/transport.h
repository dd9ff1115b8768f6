/* transport.h - the byte pipe under an XMPP stream (core-internal).
 *
 * A transport carries bytes between the server and one peer: TCP with
 * optional TLS (transport_tcp.c), an in-memory pipe for unit tests
 * (transport_mem.c), and later a framing layer (WebSocket, RFC 7395) that
 * is itself a transport wrapped around a lower one: it takes the lower
 * transport's up-calls, decodes frames into its own input buffer and calls
 * its own owner's up-calls, and wraps what is written in frames.
 *
 * The stream layer (c2s.c) talks to a transport only through these
 * operations and callbacks; it never sees a socket, a bufferevent or an SSL.
 * Buffers are libevent evbuffers so bytes move without copies: the stream
 * peeks and drains the transport's input, and hands its composed output
 * over in one piece per stanza (one TLS record per stanza).
 *
 * Threading: a transport lives on one loop (the one it was created on);
 * every operation and every callback runs on that loop's thread. */
#ifndef MAGPIE_TRANSPORT_H
#define MAGPIE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct event_base;
struct ev_token_bucket_cfg;
struct mp_sasl_cb;

enum mp_transport_event {
    MP_TRANSPORT_TLS_READY, /* the TLS handshake completed */
    MP_TRANSPORT_EOF,       /* the peer closed (or timed out) */
    MP_TRANSPORT_ERROR,     /* I/O or TLS error; detail is logged already */
};

/* Callbacks up to the transport's owner (the stream). ud is the owner's. */
struct mp_transport_up {
    /* Bytes are waiting in ops->input(). The owner consumes what it can
     * (evbuffer_drain) and may leave the rest for later. */
    void (*read)(void *ud);
    /* Asked for with ops->watch_drain: everything written has left (for
     * TCP: the socket took it all). Runs once per watch_drain. */
    void (*drained)(void *ud);
    /* The peer took n more bytes (progress for output-stall detection).
     * Must not free the transport. */
    void (*progress)(void *ud, size_t n);
    /* The connection ended (EOF, ERROR) or TLS came up (TLS_READY). After
     * EOF or ERROR nothing more is read or written; the owner frees the
     * transport (it may do so from inside this callback). */
    void (*event)(void *ud, enum mp_transport_event ev);
};

struct mp_transport;

struct mp_transport_ops {
    /* The buffer of received bytes not yet consumed by the owner. */
    struct evbuffer *(*input)(struct mp_transport *t);
    /* Moves every byte of buf to the output (buf is left empty). TCP sends
     * what a turn of the loop wrote at the end of that turn, in one send
     * (see transport_tcp.c). */
    void (*write)(struct mp_transport *t, struct evbuffer *buf);
    /* Bytes written and not yet taken by the peer, in every layer. */
    size_t (*queued)(struct mp_transport *t);
    /* Starts (on != 0) or stops reading from the peer. Stopped reading
     * bounds the input: nothing more is received until it is started. */
    void (*set_reading)(struct mp_transport *t, int on);
    /* Calls up->drained once, after everything written so far has left
     * (soon, from the loop, if it already has). */
    void (*watch_drain)(struct mp_transport *t);
    /* Switches to TLS from here on (STARTTLS, after <proceed/> drained);
     * host picks the certificate. Input not yet read is discarded (RFC 6120
     * §5.4.3.3). Returns MAGPIE_OK or MAGPIE_ERR (NULL op: no TLS here). */
    int (*start_tls)(struct mp_transport *t, const char *host);
    /* Fills cb with the TLS channel bindings (cb->tls = 0 without TLS). */
    void (*channel_binding)(struct mp_transport *t, struct mp_sasl_cb *cb);
    /* Ends the connection gracefully: what is queued is written, then the
     * sending side is closed and input is discarded until the peer closes
     * (then up->event(EOF)), so a stream error is read before any reset.
     * Nothing more may be written. */
    void (*shutdown)(struct mp_transport *t);
    /* Frees the transport now (closing the connection if still open).
     * No callback runs afterwards. */
    void (*free)(struct mp_transport *t);
};

/* How XMPP streams are framed on a transport. */
enum mp_framing {
    MP_FRAMING_STREAM = 0,   /* RFC 6120: one <stream:stream> document */
    MP_FRAMING_WEBSOCKET = 1 /* RFC 7395: each frame one element, <open/> and <close/> */
};

struct mp_transport {
    const struct mp_transport_ops *ops;
    const struct mp_transport_up *up;
    void *ud;
    unsigned secure : 1;  /* confidential: TLS, or a pipe that cannot be
                             read by others (tests, a TLS-terminating
                             front end): PLAIN may be offered */
    unsigned framing : 1; /* enum mp_framing, set by the transport */
    char peer[64];        /* "host:port" of the peer, for logs and limits */
};

/* Sets the owner's callbacks (call before the loop runs again). */
static inline void mp_transport_set_up(struct mp_transport *t, const struct mp_transport_up *up,
                                       void *ud)
{
    t->up = up;
    t->ud = ud;
}

/* Wraps an accepted, connected socket (taken: closed on free) on base.
 * rate (may be NULL) limits reading. direct_tls: TLS from the first byte
 * (XEP-0368), with host's certificate unless SNI says otherwise. Reading
 * is on: the owner sets its callbacks (mp_transport_set_up) before its
 * loop runs again. Returns a new transport or NULL (fd closed, logged). */
struct mp_transport *mp_transport_tcp_new(struct event_base *base, int fd,
                                          struct ev_token_bucket_cfg *rate, int direct_tls,
                                          const char *host);

/* an in-memory pipe, for unit tests */
/* A transport on base whose peer is the test: mp_transport_mem_feed puts
 * bytes into the input (and calls up->read from the loop), what the owner
 * writes accumulates in mp_transport_mem_output. secure sets t->secure. */
struct mp_transport *mp_transport_mem_new(struct event_base *base, int secure);
void mp_transport_mem_feed(struct mp_transport *t, const char *data, size_t len);
/* The peer closes its side: up->event(EOF) from the loop. */
void mp_transport_mem_close(struct mp_transport *t);
/* What the owner wrote and the test has not taken yet. */
struct evbuffer *mp_transport_mem_output(struct mp_transport *t);
/* 1 once the owner called shutdown, 2 once it freed the transport (the
 * test keeps the handle: freeing only detaches the owner). */
int mp_transport_mem_state(struct mp_transport *t);
/* 1 while the owner wants input (set_reading), 0 while it does not. */
int mp_transport_mem_reading(struct mp_transport *t);
/* Frees a mem transport after its owner freed it (the test's handle). */
void mp_transport_mem_destroy(struct mp_transport *t);

#endif
