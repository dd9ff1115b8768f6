/* magpie/listener.h - a module's own listener, with its own framing.
 *
 * A module registers a TCP listener in its load callback; every worker then
 * accepts on it (SO_REUSEPORT), like the client ports, and each connection
 * lives on the worker that accepted it: every callback runs on that
 * worker's thread, so a module's per-connection state needs no lock. What
 * the module makes of the bytes is its own business; to turn them into
 * XMPP it builds stanzas and hands them to mp_route (magpie/module.h). */
#ifndef MAGPIE_LISTENER_H
#define MAGPIE_LISTENER_H

#include <stddef.h>
#include <magpie/module.h>

typedef struct mp_conn mp_conn; /* one connection on a module's listener */

struct mp_listener_ops {
    /* A connection was accepted. Returns the module's state for it (passed
     * to the other callbacks; may be NULL). */
    void *(*open)(mp_conn *c, void *ud);
    /* Bytes arrived: data[0..len) is everything received and not yet
     * consumed. Returns how many bytes it consumed (the rest is offered
     * again with what follows). A connection whose unconsumed input passes
     * 64 KiB is closed. */
    size_t (*data)(mp_conn *c, void *state, const char *data, size_t len);
    /* The connection ended (peer closed, error, mp_conn_close, shutdown):
     * free state. No callback follows. */
    void (*closed)(mp_conn *c, void *state);
};

/* Registers a listener on address:port (numeric) for module m; call from
 * load. ops is not copied (keep it static); ud is passed to open. The core
 * undoes the registration when the module is unloaded. MAGPIE_OK or
 * MAGPIE_ERR. Listening starts with the workers. */
int mp_listener_add(mp_module *m, const char *address, int port,
                    const struct mp_listener_ops *ops, void *ud);

/* The same with TLS from the first byte (like XEP-0368 client ports): the
 * certificate of virtual host `host` (NULL: the first one; a client's SNI
 * picks another host's). The module's callbacks see only decrypted bytes,
 * after the handshake. */
int mp_listener_add_tls(mp_module *m, const char *address, int port, const char *host,
                        const struct mp_listener_ops *ops, void *ud);

/* Every listener of a module counts against the same per-address limits as
 * the client ports (limits.max_connections_per_address and the connection
 * rate): a connection over them is closed before open() is called. */

/* Queues len bytes to the peer. Only from the connection's callbacks or
 * its worker. */
void mp_conn_write(mp_conn *c, const char *data, size_t len);
/* Exempts c from the read rate limit (limits.rate) from now on: for a
 * peer that proved to be trusted (a component after its handshake). */
void mp_conn_unthrottle(mp_conn *c);
/* Bytes written with mp_conn_write and not yet sent (a peer that does not
 * read makes this grow: bound it). */
size_t mp_conn_queued(mp_conn *c);
/* Ends the connection once what is queued is written; closed() follows. */
void mp_conn_close(mp_conn *c);
/* "host:port" of the peer. */
const char *mp_conn_peer(mp_conn *c);
/* 1 if the connection is encrypted (a TLS listener), else 0. */
int mp_conn_secure(mp_conn *c);

#endif
