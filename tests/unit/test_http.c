/* test_http.c - the HTTP listener (src/http/http.c) over the in-memory
 * transport: routing (longest prefix, segment boundary, 404/405),
 * request parts, synchronous and deferred answers, pipelining in order,
 * keep-alive and Connection: close, limits (413) and malformed input;
 * a route with its own body limit whose bodies are spooled to a file
 * (mp_http_route_ex, mp_http_body_file, mp_http_body_move), file answers
 * (mp_http_respond_file) and 100-continue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "base/base.h"
#include "net/transport.h"
#include "http/http.h"
#include <magpie/http.h>

static mp_loop *loop;
static mp_http_req *deferred;
static char seen[4096];

static void pump(void)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(mp_loop_base(loop), EVLOOP_NONBLOCK);
}

/* Echoes what the handler saw. */
static void h_echo(mp_http_req *r, void *ud)
{
    size_t bl;
    const char *body = mp_http_body(r, &bl);
    const char *q = mp_http_query(r);
    const char *x = mp_http_header(r, "x-test");
    char out[2048];
    int n = snprintf(out, sizeof out, "%s %s q=%s x=%s body=%.*s via=%s", mp_http_method(r),
                     mp_http_path(r), q ? q : "-", x ? x : "-", (int)bl, body, (const char *)ud);
    mp_http_add_header(r, "X-Echo", "yes\r\nInjected: no");
    mp_http_respond(r, 200, "text/plain", out, (size_t)n);
}

static void h_defer(mp_http_req *r, void *ud)
{
    (void)ud;
    deferred = r;
}

/* What the server wrote so far, as a string (taken). */
static char *output(struct mp_transport *t)
{
    struct evbuffer *o = mp_transport_mem_output(t);
    size_t n = evbuffer_get_length(o);
    char *s = malloc(n + 1);
    evbuffer_remove(o, s, n);
    s[n] = '\0';
    snprintf(seen, sizeof seen, "%s", s);
    return s;
}

static struct mp_transport *open_conn(void)
{
    struct mp_transport *t = mp_transport_mem_new(mp_loop_base(loop), 0);
    mp_http_serve(t, NULL);
    return t;
}

static void send_str(struct mp_transport *t, const char *s)
{
    mp_transport_mem_feed(t, s, strlen(s));
    pump();
}

static char spool[256];
static int spool_moves; /* h_spool: 1 = move the body away and answer from the file */

/* Counts the files in the spool directory (none may be left behind). */
static int spool_files(void)
{
    DIR *d = opendir(spool);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    if (d)
        closedir(d);
    return n;
}

/* A spooled body: answers with its length, or with the file itself after
 * moving it out of the request. */
static void h_spool(mp_http_req *r, void *ud)
{
    (void)ud;
    size_t len = 0, mlen = 1;
    const char *f = mp_http_body_file(r, &len);
    mp_http_body(r, &mlen);
    assert_int_equal(mlen, 0); /* not in memory */
    if (!f) {
        mp_http_respond(r, 204, NULL, NULL, 0);
        return;
    }
    if (spool_moves) {
        char dest[300];
        snprintf(dest, sizeof dest, "%s/kept", spool);
        assert_int_equal(mp_http_body_move(r, dest), MAGPIE_OK);
        assert_null(mp_http_body_file(r, NULL));
        int fd = open(dest, O_RDONLY);
        assert_true(fd >= 0);
        unlink(dest);
        mp_http_respond_file(r, 200, "application/octet-stream", fd, len);
        return;
    }
    char out[64];
    int n = snprintf(out, sizeof out, "spooled %zu", len);
    mp_http_respond(r, 200, "text/plain", out, (size_t)n);
}

/* Refuses the head of a PUT to /up/forbidden, before its body. */
static int head_check(mp_http_req *r, void *ud)
{
    (void)ud;
    assert_non_null(mp_http_header(r, "Host"));
    return strcmp(mp_http_path(r), "/up/forbidden") == 0 ? 403 : 0;
}

static int setup(void **state)
{
    (void)state;
    loop = mp_loop_new();
    mp_loop_bind_thread(loop);
    assert_int_equal(mp_http_route(NULL, "GET", "/api", h_echo, "api"), MAGPIE_OK);
    assert_int_equal(mp_http_route(NULL, "POST", "/api/v1/things/", h_echo, "things"), MAGPIE_OK);
    assert_int_equal(mp_http_route(NULL, NULL, "/slow", h_defer, NULL), MAGPIE_OK);
    /* the same method and prefix twice is refused; a bad prefix too */
    assert_int_equal(mp_http_route(NULL, "GET", "/api/", h_echo, NULL), MAGPIE_ERR);
    assert_int_equal(mp_http_route(NULL, "GET", "api", h_echo, NULL), MAGPIE_ERR);
    snprintf(spool, sizeof spool, "/tmp/mp-test-http-XXXXXX");
    assert_non_null(mkdtemp(spool));
    assert_int_equal(
        mp_http_route_ex(NULL, "PUT", "/up", 3 << 20, spool, head_check, h_spool, NULL), MAGPIE_OK);
    assert_int_equal(mp_http_route_ex(NULL, "PUT", "/bad", 0, "", NULL, h_spool, NULL), MAGPIE_ERR);
    assert_int_equal(mp_http_routes_count(), 4);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mp_http_shutdown_thread();
    mp_http_routes_clear();
    mp_loop_free(loop);
    rmdir(spool);
    return 0;
}

static void test_routing(void **state)
{
    (void)state;
    struct mp_transport *t = open_conn();
    send_str(t, "GET /api/x%20y?a=1 HTTP/1.1\r\nHost: h\r\nX-Test: hello\r\n\r\n");
    char *o = output(t);
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o, "Content-Type: text/plain\r\n"));
    assert_non_null(strstr(o, "GET /api/x y q=a=1 x=hello body= via=api"));
    assert_non_null(strstr(o, "X-Echo: yes\r\n"));
    assert_null(strstr(o, "Injected"));
    assert_null(strstr(o, "Connection: close"));
    free(o);
    /* the longer prefix wins for POST */
    send_str(t, "POST /api/v1/things/7 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    o = output(t);
    assert_non_null(strstr(o, "POST /api/v1/things/7 q=- x=- body=hello via=things"));
    free(o);
    /* a path known for another method: 405; not on a segment boundary: 404 */
    send_str(t, "DELETE /api/1 HTTP/1.1\r\nHost: h\r\n\r\n");
    o = output(t);
    assert_non_null(strstr(o, "HTTP/1.1 405 Method Not Allowed\r\n"));
    free(o);
    send_str(t, "GET /apix HTTP/1.1\r\nHost: h\r\n\r\n");
    o = output(t);
    assert_non_null(strstr(o, "HTTP/1.1 404 Not Found\r\n"));
    free(o);
    assert_int_equal(mp_transport_mem_state(t), 0); /* still open: keep-alive */
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);
}

static void test_deferred_and_pipelined(void **state)
{
    (void)state;
    struct mp_transport *t = open_conn();
    deferred = NULL;
    /* two requests in one write: the second waits for the first's answer */
    send_str(t, "POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nabGET /api/2 "
                "HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_non_null(deferred);
    char *o = output(t);
    assert_string_equal(o, "");
    free(o);
    size_t bl;
    assert_string_equal(mp_http_body(deferred, &bl), "ab");
    mp_http_respond(deferred, 202, "application/json", "{}", 2);
    pump();
    o = output(t);
    char *first = strstr(o, "HTTP/1.1 202 Accepted\r\n");
    char *second = strstr(o, "GET /api/2");
    assert_non_null(first);
    assert_non_null(second);
    assert_true(first < second);
    free(o);
    /* a deferred request whose client went away: the answer is dropped */
    deferred = NULL;
    send_str(t, "GET /slow/x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_non_null(deferred);
    mp_transport_mem_close(t);
    pump();
    mp_http_respond(deferred, 200, NULL, NULL, 0); /* no crash, no leak */
    pump();
    mp_transport_mem_destroy(t);
}

/* While a request is with its handler, the connection keeps reading (no
 * epoll_ctl per request): pipelined bytes wait in the input, up to
 * PIPELINE_MAX (16 KiB); beyond that it stops reading until the answer. */
static void test_pipeline_bound(void **state)
{
    (void)state;
    struct mp_transport *t = open_conn();
    assert_int_equal(mp_transport_mem_reading(t), 1);
    deferred = NULL;
    send_str(t, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_non_null(deferred);
    assert_int_equal(mp_transport_mem_reading(t), 1);
    mp_http_respond(deferred, 204, NULL, NULL, 0);
    pump();
    free(output(t));
    assert_int_equal(mp_transport_mem_reading(t), 1);

    deferred = NULL;
    send_str(t, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_non_null(deferred);
    mp_http_req *first = deferred;
    char req[1100], pad[1001];
    memset(pad, 'x', 1000);
    pad[1000] = '\0';
    int rl = snprintf(req, sizeof req, "GET /api/p HTTP/1.1\r\nHost: h\r\nX-Pad: %s\r\n\r\n", pad);
    int n = 0;
    while ((size_t)(n * rl) <= 16 * 1024) {
        mp_transport_mem_feed(t, req, (size_t)rl);
        n++;
    }
    pump();
    assert_int_equal(mp_transport_mem_reading(t), 0);
    mp_http_respond(first, 204, NULL, NULL, 0);
    pump();
    /* every pipelined request answered, in order, and reading again */
    char *o = output(t);
    int answers = 0;
    for (char *p = o; (p = strstr(p, "HTTP/1.1 200 OK")); p++)
        answers++;
    assert_int_equal(answers, n);
    assert_true(strstr(o, "HTTP/1.1 204") < strstr(o, "HTTP/1.1 200"));
    free(o);
    assert_int_equal(mp_transport_mem_reading(t), 1);
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);
}

static void test_close_and_errors(void **state)
{
    (void)state;
    struct mp_transport *t = open_conn();
    send_str(t, "GET /api HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    char *o = output(t);
    assert_non_null(strstr(o, "200 OK"));
    assert_non_null(strstr(o, "Connection: close\r\n"));
    free(o);
    assert_int_equal(mp_transport_mem_state(t), 1); /* shut down */
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);

    t = open_conn();
    send_str(t, "GARBAGE\r\n\r\n");
    o = output(t);
    assert_non_null(strstr(o, "HTTP/1.1 400 Bad Request\r\n"));
    free(o);
    assert_int_equal(mp_transport_mem_state(t), 1);
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);

    t = open_conn();
    send_str(t, "POST /api/v1/things/ HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n");
    o = output(t);
    assert_non_null(strstr(o, "HTTP/1.1 413 Payload Too Large\r\n"));
    free(o);
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);

    /* HTTP/1.0 without keep-alive closes; a NUL in the path is refused */
    t = open_conn();
    send_str(t, "GET /api/%00 HTTP/1.0\r\n\r\n");
    o = output(t);
    assert_non_null(strstr(o, "HTTP/1.1 400 Bad Request\r\n"));
    free(o);
    assert_int_equal(mp_transport_mem_state(t), 1);
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);
}

/* Sends the head req on a new connection: the answer must start with
 * status, come without a 100 Continue, close the connection and leave no
 * spool file. */
static void refused_on_head(const char *req, const char *status)
{
    struct mp_transport *t = open_conn();
    send_str(t, req);
    char *o = output(t);
    assert_true(strncmp(o, status, strlen(status)) == 0);
    free(o);
    assert_int_equal(mp_transport_mem_state(t), 1);
    assert_int_equal(spool_files(), 0);
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);
}

static void test_spooled_bodies(void **state)
{
    (void)state;
    size_t big = (2 << 20) + 5; /* above the default 1 MiB */
    char *body = malloc(big);
    for (size_t i = 0; i < big; i++)
        body[i] = (char)('a' + i % 26);
    struct mp_transport *t = open_conn();
    char head[256];
    snprintf(head, sizeof head,
             "PUT /up/x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: %zu\r\n\r\n",
             big);
    send_str(t, head);
    char *o = output(t);
    assert_string_equal(o, "HTTP/1.1 100 Continue\r\n\r\n");
    free(o);
    /* the body in pieces, written to the spool file as it comes */
    for (size_t off = 0; off < big; off += 100000) {
        size_t n = big - off < 100000 ? big - off : 100000;
        mp_transport_mem_feed(t, body + off, n);
        pump();
        if (off + n < big)
            assert_int_equal(spool_files(), 1);
    }
    o = output(t);
    char want[64];
    snprintf(want, sizeof want, "spooled %zu", big);
    assert_non_null(strstr(o, want));
    free(o);
    assert_int_equal(spool_files(), 0); /* deleted with the request */
    /* moved away and sent back from the file */
    spool_moves = 1;
    send_str(t, head);
    free(output(t));
    mp_transport_mem_feed(t, body, big);
    pump();
    pump();
    o = output(t);
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", big);
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o, cl));
    char *b = strstr(o, "\r\n\r\n");
    assert_non_null(b);
    assert_int_equal(strlen(b + 4), big);
    assert_memory_equal(b + 4, body, big);
    free(o);
    spool_moves = 0;
    assert_int_equal(spool_files(), 0);
    /* an empty body: no file at all */
    send_str(t, "PUT /up/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    o = output(t);
    assert_non_null(strstr(o, "HTTP/1.1 204 No Content\r\n"));
    free(o);
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);
    /* refused by the route's head check, or above the route's own limit
     * (Content-Length): answered before any body, no file */
    refused_on_head("PUT /up/forbidden HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n"
                    "Expect: 100-continue\r\n\r\n",
                    "HTTP/1.1 403 Forbidden\r\n");
    refused_on_head("PUT /up/x HTTP/1.1\r\nHost: h\r\nContent-Length: 3145729\r\n\r\n",
                    "HTTP/1.1 413 Payload Too Large\r\n");

    /* a chunked body that passes the limit, and a connection gone mid-body:
     * no file left behind */
    t = open_conn();
    send_str(t, "PUT /up/y HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 4; i++) {
        snprintf(head, sizeof head, "%x\r\n", 1 << 20);
        send_str(t, head);
        mp_transport_mem_feed(t, body, 1 << 20);
        send_str(t, "\r\n");
    }
    o = output(t);
    assert_non_null(strstr(o, "HTTP/1.1 413 Payload Too Large\r\n"));
    free(o);
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);
    assert_int_equal(spool_files(), 0);
    t = open_conn();
    send_str(t, "PUT /up/z HTTP/1.1\r\nHost: h\r\nContent-Length: 500000\r\n\r\n");
    mp_transport_mem_feed(t, body, 1000);
    pump();
    assert_int_equal(spool_files(), 1);
    mp_transport_mem_close(t);
    pump();
    mp_transport_mem_destroy(t);
    assert_int_equal(spool_files(), 0);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routing),        cmocka_unit_test(test_deferred_and_pipelined),
        cmocka_unit_test(test_pipeline_bound), cmocka_unit_test(test_close_and_errors),
        cmocka_unit_test(test_spooled_bodies),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
