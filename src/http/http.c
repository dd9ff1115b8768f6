/* http.c - the server's HTTP/1.1 listener and the routes modules register
 * on it (include/magpie/http.h).
 *
 * A connection is a transport (net/transport.h: TCP, TLS from the first
 * byte, or the in-memory pipe of the unit tests) on the worker that
 * accepted it. Requests are parsed by http-parser (Debian's
 * libhttp-parser); the head and body are collected within MP_HTTP_MAX_HEAD
 * and MP_HTTP_MAX_BODY, then the route's handler gets the request. One
 * request at a time per connection: while a request is with its handler
 * the parser is paused, so pipelined requests wait in the input buffer and
 * are answered in order. The transport stops reading only once more than
 * PIPELINE_MAX bytes wait there: stopping and resuming for every request
 * would cost two epoll_ctl calls per request on a keep-alive connection.
 *
 * Why not libevent's evhttp or libwebsockets: see docs/design-notes.md
 * ("One HTTP listener"). In short: this sits on the same transports,
 * workers, TLS contexts and limits as the XMPP streams, so a WebSocket
 * (RFC 7395) or BOSH session can become an ordinary c2s stream later. */
#include "base/base.h"
#include "net/transport.h"
#include "http/http.h"
#include "net/addrlimit.h"
#include <magpie/http.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- routes ---- */

struct route {
    mp_module *m;
    char *method; /* NULL: any */
    char *prefix;
    size_t plen;
    size_t max_body;      /* 0: MP_HTTP_MAX_BODY */
    mp_http_head_fn head; /* judges the head before the body is read, or NULL */
    char *spool_dir;      /* NULL: the body is kept in memory */
    mp_http_fn fn;
    void *ud;
};

static struct route *routes;
static size_t n_routes;

int mp_http_route(mp_module *m, const char *method, const char *prefix, mp_http_fn fn, void *ud)
{
    return mp_http_route_ex(m, method, prefix, 0, NULL, NULL, fn, ud);
}

int mp_http_route_ex(mp_module *m, const char *method, const char *prefix, size_t max_body,
                     const char *spool_dir, mp_http_head_fn head, mp_http_fn fn, void *ud)
{
    if (!prefix || prefix[0] != '/' || !fn || (spool_dir && !*spool_dir))
        return MAGPIE_ERR;
    size_t pl = strlen(prefix);
    while (pl > 1 && prefix[pl - 1] == '/')
        pl--; /* "/a/" and "/a" are the same prefix */
    for (size_t i = 0; i < n_routes; i++)
        if (routes[i].plen == pl && !strncmp(routes[i].prefix, prefix, pl) &&
            ((!method && !routes[i].method) ||
             (method && routes[i].method && !strcmp(method, routes[i].method))))
            return MAGPIE_ERR;
    routes = mp_realloc(routes, (n_routes + 1) * sizeof *routes);
    struct route *r = &routes[n_routes++];
    r->m = m;
    r->method = method ? mp_strdup(method) : NULL;
    r->prefix = mp_malloc(pl + 1);
    memcpy(r->prefix, prefix, pl);
    r->prefix[pl] = '\0';
    r->plen = pl;
    r->max_body = max_body ? max_body : MP_HTTP_MAX_BODY;
    r->head = head;
    r->spool_dir = spool_dir ? mp_strdup(spool_dir) : NULL;
    r->fn = fn;
    r->ud = ud;
    return MAGPIE_OK;
}

void mp_http_routes_clear(void)
{
    for (size_t i = 0; i < n_routes; i++) {
        free(routes[i].method);
        free(routes[i].prefix);
        free(routes[i].spool_dir);
    }
    free(routes);
    routes = NULL;
    n_routes = 0;
}

size_t mp_http_routes_count(void)
{
    return n_routes;
}

/* The route for (method, path): longest prefix on a segment boundary.
 * *path_known is set when some route matches the path (for 405). */
static const struct route *route_find(const char *method, const char *path, int *path_known)
{
    const struct route *best = NULL;
    *path_known = 0;
    for (size_t i = 0; i < n_routes; i++) {
        const struct route *r = &routes[i];
        if (strncmp(path, r->prefix, r->plen) != 0)
            continue;
        char next = path[r->plen];
        if (r->plen > 1 && next != '\0' && next != '/')
            continue;
        *path_known = 1;
        if (r->method && strcmp(r->method, method) != 0)
            continue;
        if (!best || r->plen > best->plen || (r->plen == best->plen && r->method))
            best = r;
    }
    return best;
}

/* ---- requests and connections ---- */

struct hdr {
    char *name, *value;
};

struct http_conn;

struct mp_http_req {
    struct http_conn *conn; /* NULL once the connection is gone */
    mp_loop *loop;
    char method[16];
    char *path, *query;
    struct hdr *h;
    size_t n_h;
    char *body;
    size_t body_len;
    char *body_file; /* the spooled body (a route with a spool_dir), or NULL */
    size_t file_len; /* its length (body and body_len are then "" and 0) */
    int keep_alive, secure;
    char peer[64];
    struct evbuffer *extra; /* response headers added by the handler */
    /* the answer, once given */
    int status;
    char *ctype;
    char *resp;
    size_t resp_len;
    int resp_fd; /* mp_http_respond_file: the body's file, or -1 */
};

struct http_conn {
    struct http_conn *prev, *next; /* this thread's connections */
    struct mp_transport *t;
    char addr_key[64]; /* per-address accounting (addrlimit.c), "" if none */
    http_parser p;
    struct event *idle;
    /* the request being read */
    struct evbuffer *url, *field, *value;
    struct hdr *h;
    size_t n_h;
    struct evbuffer *body;
    size_t body_max;  /* the route's limit, known once the head is read */
    size_t body_seen; /* bytes of body received */
    int spool_fd;     /* the body goes to this file (spool_path), or -1 */
    char *spool_path;
    size_t head_bytes;
    int last_was_value;
    int too_big;           /* 413/431/500 to answer, or a route's refusal */
    mp_http_req *building; /* head read, body being read */
    mp_http_req *pending;  /* with its handler */
    mp_http_req *complete; /* parsed, not yet dispatched */
    int closing;
    int stalled; /* the transport stopped reading: PIPELINE_MAX waiting */
};

/* Bytes of pipelined requests buffered while one is with its handler. */
#define PIPELINE_MAX MP_HTTP_MAX_HEAD

static _Thread_local struct http_conn *tl_conns;

static void req_free(mp_http_req *r)
{
    free(r->path);
    free(r->query);
    for (size_t i = 0; i < r->n_h; i++) {
        free(r->h[i].name);
        free(r->h[i].value);
    }
    free(r->h);
    free(r->body);
    free(r->ctype);
    free(r->resp);
    if (r->resp_fd >= 0)
        close(r->resp_fd);
    if (r->body_file) {
        unlink(r->body_file);
        free(r->body_file);
    }
    if (r->extra)
        evbuffer_free(r->extra);
    free(r);
}

static void reset_parse_state(struct http_conn *c)
{
    evbuffer_drain(c->url, evbuffer_get_length(c->url));
    evbuffer_drain(c->field, evbuffer_get_length(c->field));
    evbuffer_drain(c->value, evbuffer_get_length(c->value));
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    for (size_t i = 0; i < c->n_h; i++) {
        free(c->h[i].name);
        free(c->h[i].value);
    }
    free(c->h);
    c->h = NULL;
    c->n_h = 0;
    c->head_bytes = 0;
    c->last_was_value = 0;
    if (c->building) {
        req_free(c->building);
        c->building = NULL;
    }
    c->body_max = MP_HTTP_MAX_BODY;
    c->body_seen = 0;
    if (c->spool_fd >= 0) {
        close(c->spool_fd);
        c->spool_fd = -1;
    }
    if (c->spool_path) {
        unlink(c->spool_path);
        free(c->spool_path);
        c->spool_path = NULL;
    }
}

static void conn_free(struct http_conn *c)
{
    if (c->pending)
        c->pending->conn = NULL; /* the handler still owns it */
    if (c->complete)
        req_free(c->complete);
    reset_parse_state(c);
    evbuffer_free(c->url);
    evbuffer_free(c->field);
    evbuffer_free(c->value);
    evbuffer_free(c->body);
    event_free(c->idle);
    if (c->prev)
        c->prev->next = c->next;
    else
        tl_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->t->ops->free(c->t);
    if (c->addr_key[0])
        mp_addrlimit_release(c->addr_key);
    free(c);
}

static void arm_idle(struct http_conn *c)
{
    struct timeval tv = {MP_HTTP_IDLE_TIMEOUT, 0};
    event_add(c->idle, &tv);
}

static void close_conn(struct http_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->t->ops->shutdown(c->t);
}

static const char *reason(int status)
{
    switch (status) {
#define XX(num, name, string)                                                                      \
    case num:                                                                                      \
        return #string;
        HTTP_STATUS_MAP(XX)
#undef XX
    default:
        return "Unknown";
    }
}

/* Writes the response of r to its connection (on the connection's loop). */
static void write_response(struct http_conn *c, mp_http_req *r)
{
    struct evbuffer *out = evbuffer_new();
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %zu\r\n", r->status,
                        reason(r->status), date, r->resp_len);
    if (r->ctype)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", r->ctype);
    if (r->extra)
        evbuffer_add_buffer(out, r->extra);
    if (!r->keep_alive)
        evbuffer_add_printf(out, "Connection: close\r\n");
    evbuffer_add(out, "\r\n", 2);
    if (r->resp_fd >= 0) {
        if (r->resp_len && strcmp(r->method, "HEAD") != 0 &&
            evbuffer_add_file(out, r->resp_fd, 0, (ev_off_t)r->resp_len) == 0)
            r->resp_fd = -1; /* the buffer closes it once sent */
    } else if (r->resp_len && strcmp(r->method, "HEAD") != 0) {
        evbuffer_add(out, r->resp, r->resp_len);
    }
    c->t->ops->write(c->t, out);
    evbuffer_free(out);
}

static void conn_read(void *ud);

/* r's answer is ready: send it, then go on with the connection's input. */
static void deliver(void *arg)
{
    mp_http_req *r = arg;
    struct http_conn *c = r->conn;
    if (!c || c->closing) {
        if (c)
            c->pending = NULL;
        req_free(r);
        return;
    }
    c->pending = NULL;
    write_response(c, r);
    int keep = r->keep_alive;
    req_free(r);
    if (!keep) {
        close_conn(c);
        return;
    }
    arm_idle(c);
    http_parser_pause(&c->p, 0);
    if (c->stalled) {
        c->stalled = 0;
        c->t->ops->set_reading(c->t, 1);
    }
    conn_read(c); /* pipelined bytes already in the input */
}

/* Sends r's answer (set by the caller) from r's loop. */
static void respond_now(mp_http_req *r)
{
    if (mp_loop_current() == r->loop)
        deliver(r);
    else if (mp_loop_post(r->loop, deliver, r) != MAGPIE_OK)
        req_free(r); /* the worker is shutting down */
}

void mp_http_respond(mp_http_req *r, int status, const char *content_type, const char *body,
                     size_t len)
{
    r->status = status;
    r->ctype = content_type ? mp_strdup(content_type) : NULL;
    if (len) {
        r->resp = mp_malloc(len);
        memcpy(r->resp, body, len);
    }
    r->resp_len = len;
    respond_now(r);
}

void mp_http_respond_file(mp_http_req *r, int status, const char *content_type, int fd, size_t len)
{
    r->status = status;
    r->ctype = content_type ? mp_strdup(content_type) : NULL;
    r->resp_fd = fd;
    r->resp_len = len;
    respond_now(r);
}

void mp_http_add_header(mp_http_req *r, const char *name, const char *value)
{
    if (!r->extra)
        r->extra = evbuffer_new();
    /* no header injection: CR/LF end the value */
    evbuffer_add_printf(r->extra, "%s: %.*s\r\n", name, (int)strcspn(value, "\r\n"), value);
}

/* An answer of the server itself (errors before any handler). */
static void respond_plain(mp_http_req *r, int status, const char *text)
{
    mp_http_respond(r, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* Percent-decodes src[0..len) into a new string; NULL if malformed or it
 * would contain a NUL. */
static char *pct_decode(const char *src, size_t len)
{
    char *d = mp_malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '%') {
            if (i + 2 >= len || !isxdigit((unsigned char)src[i + 1]) ||
                !isxdigit((unsigned char)src[i + 2])) {
                free(d);
                return NULL;
            }
            char hx[3] = {src[i + 1], src[i + 2], 0};
            int v = (int)strtol(hx, NULL, 16);
            if (v == 0) {
                free(d);
                return NULL;
            }
            d[o++] = (char)v;
            i += 2;
        } else {
            d[o++] = src[i];
        }
    }
    d[o] = '\0';
    return d;
}

static char *buf_string(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = mp_malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

/* ---- parser callbacks ---- */

static int count_head(struct http_conn *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > MP_HTTP_MAX_HEAD) {
        c->too_big = 431;
        return -1;
    }
    return 0;
}

static int on_begin(http_parser *p)
{
    struct http_conn *c = p->data;
    reset_parse_state(c);
    event_del(c->idle);
    arm_idle(c); /* the whole request within the idle timeout */
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    evbuffer_add(c->url, at, n);
    return count_head(c, n);
}

static void header_done(struct http_conn *c)
{
    if (!c->last_was_value)
        return;
    c->h = mp_realloc(c->h, (c->n_h + 1) * sizeof *c->h);
    c->h[c->n_h].name = buf_string(c->field);
    c->h[c->n_h].value = buf_string(c->value);
    c->n_h++;
    c->last_was_value = 0;
}

static int on_field(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    header_done(c);
    evbuffer_add(c->field, at, n);
    return count_head(c, n + 4);
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    c->last_was_value = 1;
    evbuffer_add(c->value, at, n);
    return count_head(c, n);
}

static mp_http_req *req_new(struct http_conn *c);

/* The head is read: the request is built from it (the body is added
 * when it is complete), and its route decides how large the body may be,
 * whether it goes to a file, and (its head callback) whether to read it at
 * all. A refused or too large body is refused before any of it is read;
 * "Expect: 100-continue" is answered otherwise. */
static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    header_done(c);
    mp_http_req *r = req_new(c);
    snprintf(r->method, sizeof r->method, "%s", http_method_str(p->method));
    char *url = buf_string(c->url);
    url[strcspn(url, "#")] = '\0';
    char *q = strchr(url, '?');
    if (q) {
        *q = '\0';
        r->query = mp_strdup(q + 1);
    }
    r->path = url[0] == '/' ? pct_decode(url, strlen(url)) : NULL;
    free(url);
    r->h = c->h;
    r->n_h = c->n_h;
    c->h = NULL;
    c->n_h = 0;
    c->building = r;
    int known;
    const struct route *rt = r->path ? route_find(r->method, r->path, &known) : NULL;
    c->body_max = rt ? rt->max_body : MP_HTTP_MAX_BODY;
    if (p->content_length != ULLONG_MAX && p->content_length > c->body_max) {
        c->too_big = 413;
        return -1;
    }
    if (rt && rt->head) {
        int st = rt->head(r, rt->ud);
        if (st) {
            c->too_big = st >= 400 && st <= 599 ? st : 500;
            return -1;
        }
    }
    if (rt && rt->spool_dir && p->content_length != 0) {
        size_t n = strlen(rt->spool_dir) + sizeof "/.http-XXXXXX";
        c->spool_path = mp_malloc(n);
        snprintf(c->spool_path, n, "%s/.http-XXXXXX", rt->spool_dir);
        c->spool_fd = mkstemp(c->spool_path);
        if (c->spool_fd < 0) {
            mp_log(MP_LOG_ERROR, "http: cannot create a file in %s: %s", rt->spool_dir,
                   strerror(errno));
            free(c->spool_path);
            c->spool_path = NULL;
            c->too_big = 500;
            return -1;
        }
    }
    const char *expect = mp_http_header(r, "Expect");
    if (expect && !strcasecmp(expect, "100-continue") && p->http_major == 1 && p->http_minor >= 1) {
        struct evbuffer *out = evbuffer_new();
        evbuffer_add_printf(out, "HTTP/1.1 100 Continue\r\n\r\n");
        c->t->ops->write(c->t, out);
        evbuffer_free(out);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    if (c->body_seen + n > c->body_max) {
        c->too_big = 413;
        return -1;
    }
    c->body_seen += n;
    if (c->spool_fd < 0) {
        evbuffer_add(c->body, at, n);
        return 0;
    }
    while (n > 0) {
        ssize_t w = write(c->spool_fd, at, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            mp_log(MP_LOG_ERROR, "http: writing %s: %s", c->spool_path, strerror(errno));
            c->too_big = 500;
            return -1;
        }
        at += w;
        n -= (size_t)w;
    }
    arm_idle(c); /* a large body: the idle timeout counts from its last bytes */
    return 0;
}

static mp_http_req *req_new(struct http_conn *c)
{
    mp_http_req *r = mp_calloc(1, sizeof *r);
    r->conn = c;
    r->loop = mp_loop_current();
    snprintf(r->peer, sizeof r->peer, "%s", c->t->peer);
    r->secure = c->t->secure;
    r->keep_alive = 0;
    r->resp_fd = -1;
    return r;
}

static int on_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    mp_http_req *r = c->building;
    c->building = NULL;
    r->keep_alive = http_should_keep_alive(p);
    if (c->spool_fd >= 0) {
        close(c->spool_fd);
        c->spool_fd = -1;
        r->body_file = c->spool_path; /* the request's now */
        c->spool_path = NULL;
        r->file_len = c->body_seen;
        r->body = mp_calloc(1, 1);
    } else {
        r->body_len = evbuffer_get_length(c->body);
        r->body = mp_malloc(r->body_len + 1);
        evbuffer_remove(c->body, r->body, r->body_len);
        r->body[r->body_len] = '\0';
    }
    c->complete = r;
    http_parser_pause(p, 1); /* one request at a time */
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

/* Hands a complete request to its route (or answers it). */
static void dispatch(struct http_conn *c, mp_http_req *r)
{
    c->pending = r;
    event_del(c->idle);
    if (!r->path) {
        r->keep_alive = 0;
        respond_plain(r, 400, "bad request path\n");
        return;
    }
    int known;
    const struct route *rt = route_find(r->method, r->path, &known);
    if (!rt) {
        if (known) {
            respond_plain(r, 405, "method not allowed\n");
        } else {
            respond_plain(r, 404, "not found\n");
        }
        return;
    }
    rt->fn(r, rt->ud);
}

/* A request the parser refused: answer and close. */
static void refuse(struct http_conn *c, int status, const char *text)
{
    mp_http_req *r = req_new(c);
    snprintf(r->method, sizeof r->method, "GET");
    r->keep_alive = 0;
    c->pending = r;
    c->t->ops->set_reading(c->t, 0);
    respond_plain(r, status, text);
}

static void conn_read(void *ud)
{
    struct http_conn *c = ud;
    if (c->closing)
        return;
    struct evbuffer *in = c->t->ops->input(c->t);
    size_t len = evbuffer_get_length(in);
    if (c->pending) {
        if (len > PIPELINE_MAX && !c->stalled) {
            c->stalled = 1;
            c->t->ops->set_reading(c->t, 0);
        }
        return;
    }
    if (len == 0)
        return;
    const char *data = (const char *)evbuffer_pullup(in, -1);
    size_t used = http_parser_execute(&c->p, &settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (c->p.upgrade) {
        evbuffer_drain(in, len);
        refuse(c, 501, "protocol upgrades are not supported yet\n");
        return;
    }
    if (e == HPE_PAUSED) {
        evbuffer_drain(in, used);
        mp_http_req *r = c->complete;
        c->complete = NULL;
        dispatch(c, r);
        return;
    }
    evbuffer_drain(in, len);
    if (e != HPE_OK) {
        if (c->too_big == 413)
            refuse(c, 413, "request body too large\n");
        else if (c->too_big == 431)
            refuse(c, 431, "request header too large\n");
        else if (c->too_big == 500)
            refuse(c, 500, "cannot store the request body\n");
        else if (c->too_big)
            refuse(c, c->too_big, "request refused\n");
        else
            refuse(c, 400, "malformed request\n");
        mp_log(MP_LOG_DEBUG, "http %s: %s", c->t->peer, http_errno_name(e));
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

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_conn *c = arg;
    if (!c->pending)
        close_conn(c);
}

void mp_http_serve(struct mp_transport *t, const char *addr_key)
{
    struct http_conn *c = mp_calloc(1, sizeof *c);
    c->t = t;
    snprintf(c->addr_key, sizeof c->addr_key, "%s", addr_key ? addr_key : "");
    http_parser_init(&c->p, HTTP_REQUEST);
    c->p.data = c;
    c->url = evbuffer_new();
    c->field = evbuffer_new();
    c->value = evbuffer_new();
    c->body = evbuffer_new();
    c->spool_fd = -1;
    c->body_max = MP_HTTP_MAX_BODY;
    c->idle = evtimer_new(mp_loop_base(mp_loop_current()), on_idle, c);
    c->next = tl_conns;
    if (tl_conns)
        tl_conns->prev = c;
    tl_conns = c;
    mp_transport_set_up(t, &conn_up, c);
    t->ops->set_reading(t, 1);
    arm_idle(c);
}

void mp_http_shutdown_thread(void)
{
    while (tl_conns)
        conn_free(tl_conns);
}

/* ---- the request, for handlers ---- */

const char *mp_http_method(const mp_http_req *r)
{
    return r->method;
}

const char *mp_http_path(const mp_http_req *r)
{
    return r->path;
}

const char *mp_http_query(const mp_http_req *r)
{
    return r->query;
}

const char *mp_http_header(const mp_http_req *r, const char *name)
{
    for (size_t i = 0; i < r->n_h; i++)
        if (!strcasecmp(r->h[i].name, name))
            return r->h[i].value;
    return NULL;
}

const char *mp_http_body(const mp_http_req *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body;
}

const char *mp_http_body_file(const mp_http_req *r, size_t *len)
{
    if (len)
        *len = r->body_file ? r->file_len : 0;
    return r->body_file;
}

int mp_http_body_move(mp_http_req *r, const char *dest)
{
    if (!r->body_file || !dest || rename(r->body_file, dest) != 0)
        return MAGPIE_ERR;
    free(r->body_file);
    r->body_file = NULL;
    return MAGPIE_OK;
}

const char *mp_http_peer(const mp_http_req *r)
{
    return r->peer;
}

int mp_http_secure(const mp_http_req *r)
{
    return r->secure;
}
