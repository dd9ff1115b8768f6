/* http/http.h - the server's HTTP/1.1 listener (core-internal side of
 * include/magpie/http.h). */
#ifndef MAGPIE_HTTP_HTTP_H
#define MAGPIE_HTTP_HTTP_H

#include <stddef.h>
#include "core/server.h"

struct mp_transport;

/* Longest body a request may have (413 above it). */
#define MP_HTTP_MAX_BODY (1024 * 1024)
/* Longest request line plus headers (431 above it). */
#define MP_HTTP_MAX_HEAD (16 * 1024)
/* Seconds a connection may sit between requests (or in a request's head
 * and body) before it is closed. */
#define MP_HTTP_IDLE_TIMEOUT 60

/* Serves HTTP on transport t (taken) on the calling thread's loop: a
 * connection accepted on an "http" listener (server/worker.c), or the
 * in-memory transport of the unit tests. */
void mp_http_serve(struct mp_transport *t, const char *addr_key);
/* Ends every HTTP connection of the calling worker thread (shutdown). */
void mp_http_shutdown_thread(void);
/* Forgets every route (after the modules are unloaded). */
void mp_http_routes_clear(void);
/* Number of routes registered. */
size_t mp_http_routes_count(void);

#endif
