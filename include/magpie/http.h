/* magpie/http.h - routes on the server's HTTP listener.
 *
 * The server has one HTTP/1.1 listener kind (configured under `listeners`
 * with type "http", optionally TLS); every module that speaks HTTP (the
 * gateway's trigger API and HTTP File Upload now; metrics, the admin API,
 * BOSH later) registers routes on it instead of opening a port of its own.
 *
 * A route is (method, path prefix) -> handler. A request goes to the route
 * with the longest prefix that matches its path on a segment boundary
 * ("/gateway/v1/" matches "/gateway/v1/devices/x", "/api" matches "/api"
 * and "/api/x" but not "/apix"); a path some route matches, but not with
 * this method, gets 405; no route at all, 404. The whole request (headers
 * and a body of at most 1 MiB, or the route's own limit) is read before
 * the handler runs. A body larger than the route allows is refused with
 * 413: from Content-Length before any of it is read, or (chunked) as soon
 * as it passes the limit. "Expect: 100-continue" is answered.
 *
 * The handler runs on the worker that owns the connection. It must answer
 * exactly once with mp_http_respond, now or later (after a storage
 * callback, say); until it does, the request is the handler's and the
 * connection reads nothing more. mp_http_respond may be called from any
 * thread; it frees the request, so the handler must not touch it after.
 * If the client goes away first, the answer is dropped quietly. */
#ifndef MAGPIE_HTTP_H
#define MAGPIE_HTTP_H

#include <stddef.h>
#include <magpie/module.h>

typedef struct mp_http_req mp_http_req;
typedef void (*mp_http_fn)(mp_http_req *r, void *ud);
/* Judges a request from its head (method, path, query, headers; no body
 * yet) before its body is read: returns 0 to go on (the body is read, then
 * the route's handler runs), or an HTTP status (4xx/5xx) the server answers
 * at once, closing the connection without reading the body. It must not
 * answer or keep r. */
typedef int (*mp_http_head_fn)(mp_http_req *r, void *ud);

/* Registers fn for method ("GET", "POST", ...; NULL: any) on every path
 * under prefix (starts with '/'). Call from load; the core forgets the
 * routes when modules unload. MAGPIE_OK or MAGPIE_ERR (bad arguments, or
 * the same method and prefix already taken). */
int mp_http_route(mp_module *m, const char *method, const char *prefix, mp_http_fn fn, void *ud);
/* As mp_http_route, with the route's own body limit, storage and check:
 * max_body is the largest body accepted (0: the default 1 MiB); with
 * spool_dir NULL the body is kept in memory (mp_http_body), otherwise it
 * is written as it arrives to a new file in spool_dir (an existing
 * directory the server may write; same file system as where the module
 * keeps it, so that mp_http_body_move is a rename), memory stays bounded
 * whatever the size, and the handler finds it with mp_http_body_file. The
 * idle timeout of a spooled body counts from its last bytes. head (may be
 * NULL) is called with ud when the head is read, to refuse a request
 * before its body costs anything. */
int mp_http_route_ex(mp_module *m, const char *method, const char *prefix, size_t max_body,
                     const char *spool_dir, mp_http_head_fn head, mp_http_fn fn, void *ud);
/* The base URL of the server's HTTP listener, "https://<first host>:<port>"
 * (an HTTPS listener if there is one, else "http://..."), in buf; for
 * modules that hand out URLs and have no configured public URL.
 * MAGPIE_OK, or MAGPIE_ERR when there is no HTTP listener (or buf is too
 * small). */
int mp_http_base_url(char *buf, size_t len);

/* The request; every string lives as long as the request. */
const char *mp_http_method(const mp_http_req *r);
/* The path, percent-decoded, without the query ("/gateway/v1/commands/7"). */
const char *mp_http_path(const mp_http_req *r);
/* The query string after '?', undecoded, or NULL. */
const char *mp_http_query(const mp_http_req *r);
/* A header's value (name case-insensitive; the first if repeated), or NULL. */
const char *mp_http_header(const mp_http_req *r, const char *name);
/* The body (NUL-terminated for convenience; may contain NULs) and its
 * length (0 when there is none). */
const char *mp_http_body(const mp_http_req *r, size_t *len);
/* The file holding a spooled body (route with a spool_dir) and its length,
 * or NULL when the body is in memory or empty. The file belongs to the
 * request: it is deleted when the request is freed unless moved away. */
const char *mp_http_body_file(const mp_http_req *r, size_t *len);
/* Renames the spooled body's file to dest (same file system), which the
 * caller then owns. MAGPIE_OK, or MAGPIE_ERR (no spooled body, rename
 * failed: the file stays the request's). */
int mp_http_body_move(mp_http_req *r, const char *dest);
/* "address:port" of the client. */
const char *mp_http_peer(const mp_http_req *r);
/* 1 if the request came over TLS. */
int mp_http_secure(const mp_http_req *r);

/* Adds a response header (before mp_http_respond; from the handler's
 * thread). Content-Length, Connection and Date are the server's. */
void mp_http_add_header(mp_http_req *r, const char *name, const char *value);
/* Answers r with status (200, 404, ...), content_type (NULL: none) and
 * body[0..len) (copied), and frees r. Any thread; exactly once. */
void mp_http_respond(mp_http_req *r, int status, const char *content_type, const char *body,
                     size_t len);
/* As mp_http_respond with a body of len bytes read from the start of the
 * open file fd (taken: closed by the server, also on HEAD and when the
 * client is gone), sent without copying it into memory. */
void mp_http_respond_file(mp_http_req *r, int status, const char *content_type, int fd, size_t len);

#endif
