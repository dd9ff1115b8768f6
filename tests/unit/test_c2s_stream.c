/* test_c2s_stream.c - the c2s stream over the in-memory transport: a whole
 * negotiation (header, features, SASL PLAIN, restart, bind, a message to
 * itself) and its error paths, by feeding bytes and reading bytes, with no
 * socket. The server context is real: config, SQLite storage in a temp
 * dir, the auth pool, the router, one worker loop run by the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "base/base.h"
#include "stream/c2s.h"
#include "core/router.h"
#include "core/modules.h"
#include "net/addrlimit.h"
#include "net/tls.h"
#include "auth/accounts.h"
#include "storage/storage_driver.h"
#include "net/transport.h"

#include <errno.h>
#include <sys/socket.h>

struct mp_server mp_server;
void (*mp_control_reload)(void);

#define HOST "example.org"
#define HDR(to, ns)                                                                                \
    "<?xml version='1.0'?><stream:stream to='" to "' xmlns='" ns "' "                              \
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
#define HEADER HDR(HOST, "jabber:client")
/* base64 of "\0alice\0secret" and "\0alice\0wrong" */
#define PLAIN_OK  "AGFsaWNlAHNlY3JldA=="
#define PLAIN_BAD "AGFsaWNlAHdyb25n"

static char dir[64];
/* two workers whose loops the test runs in turn on its one thread, each
 * bound as the thread's current loop while it runs (as its own thread
 * would have it) */
static struct mp_worker workers[2];
#define worker workers[0]

/* Runs each worker's loop once without waiting. */
static void pump(void)
{
    for (int i = 1; i >= 0; i--) {
        mp_loop_bind_thread(workers[i].loop);
        event_base_loop(mp_loop_base(workers[i].loop), EVLOOP_NONBLOCK);
    }
}

/* message_held notifications seen for alice/phone (test_detach_and_takeover). */
static int held_messages;

static void on_message_held(mp_session *s, mp_stanza *msg, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(msg);
    if (env->kind == MP_KIND_MESSAGE &&
        strcmp(mp_session_jid(s)->full, "alice@" HOST "/phone") == 0)
        held_messages++;
}

static const struct mp_notify held_notify = {.message_held = on_message_held};

static int group_setup(void **state)
{
    (void)state;
    char path[160], db[160], err[512];
    snprintf(dir, sizeof dir, "/tmp/magpie-c2s-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/magpie.conf", dir);
    snprintf(db, sizeof db, "%s/magpie.db", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "state_dir = \"%s\";\nworkers = 1;\nlog = { level = \"error\"; file = \"-\"; };\n"
            "hosts = ( { domain = \"" HOST "\"; } );\n"
            "listeners = ( { type = \"c2s\"; address = \"127.0.0.1\"; port = 5222; } );\n"
            "storage = { driver = \"sqlite\"; sqlite = { path = \"%s\"; }; };\n"
            "security = { require_tls = false; };\nmodules = ( );\n",
            dir, db);
    fclose(f);
    struct mp_config *cfg = mp_config_load(path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    mp_server.cfg = cfg;
    mp_addrlimit_setup(cfg->max_connections_per_address, cfg->connection_rate_per_address,
                       cfg->connection_burst_per_address);
    mp_log_setup("error", NULL);
    mp_server.limits = (struct mp_xml_limits){
        cfg->max_stanza_size, cfg->max_depth,    cfg->max_attrs,        cfg->max_attr_len,
        cfg->max_text,        cfg->max_elements, cfg->max_stanza_memory};
    mp_server.preauth_limits = mp_server.limits;
    mp_server.preauth_limits.max_stanza = cfg->preauth_max_stanza_size;
    for (int i = 0; i < 2; i++) {
        workers[i].id = i;
        workers[i].loop = mp_loop_new();
    }
    mp_loop_bind_thread(worker.loop);
    mp_server.workers = workers;
    mp_server.n_workers = 2;
    if (mp_storage_open(cfg, err, sizeof err) != MAGPIE_OK) {
        fprintf(stderr, "storage: %s\n", err);
        return -1;
    }
    mp_server.auth_pool = mp_workpool_new("auth", 1, 16);
    mp_server.auth_guard = mp_authguard_new(100, 1, 60, 1024);
    if (mp_router_init() != MAGPIE_OK || mp_modules_load(cfg) != MAGPIE_OK)
        return -1;
    /* no module loaded: a notification of the test's own (m NULL) */
    mp_notify_add(NULL, &held_notify, NULL);
    if (mp_account_add_sync(HOST, "alice", "secret", 4096) != MAGPIE_OK)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char p[200];
    mp_storage_close();
    mp_workpool_free(mp_server.auth_pool);
    mp_authguard_free(mp_server.auth_guard);
    mp_modules_unload();
    mp_router_free();
    mp_addrlimit_free();
    mp_c2s_thread_exit();
    mp_loop_free(workers[0].loop);
    mp_loop_free(workers[1].loop);
    mp_config_free(mp_server.cfg);
    const char *names[] = {"magpie.conf", "magpie.db", "magpie.db-wal", "magpie.db-shm"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

/* ---- a client, as the test sees it ---- */

struct client {
    struct mp_transport *t;
    mp_session *s;
    char got[16384]; /* everything read and not yet consumed */
    size_t len;
};

/* A new connection on workers[w]. */
static void client_open_on(struct client *c, int secure, int w)
{
    memset(c, 0, sizeof *c);
    mp_loop_bind_thread(workers[w].loop);
    c->t = mp_transport_mem_new(mp_loop_base(workers[w].loop), secure);
    c->s = mp_c2s_open(&workers[w], c->t);
    mp_loop_bind_thread(worker.loop);
    assert_non_null(c->s);
}

static void client_open(struct client *c, int secure)
{
    client_open_on(c, secure, 0);
}

static void send_str(struct client *c, const char *text)
{
    mp_transport_mem_feed(c->t, text, strlen(text));
}

static void pull(struct client *c)
{
    struct evbuffer *out = mp_transport_mem_output(c->t);
    size_t n = evbuffer_get_length(out);
    assert_true(c->len + n < sizeof c->got);
    evbuffer_remove(out, c->got + c->len, n);
    c->len += n;
    c->got[c->len] = '\0';
}

/* Runs the loop until what was read contains needle (within 10 s), then
 * consumes everything up to and including it. */
static void expect(struct client *c, const char *needle)
{
    double until = mp_now() + 10;
    for (;;) {
        pull(c);
        char *p = strstr(c->got, needle);
        if (p) {
            size_t used = (size_t)(p - c->got) + strlen(needle);
            memmove(c->got, c->got + used, c->len - used + 1);
            c->len -= used;
            return;
        }
        if (mp_now() > until)
            fail_msg("waited for %s, got: %s", needle, c->got);
        pump();
        usleep(1000);
    }
}

/* The peer hangs up; the stream ends and frees its side. */
static void client_close(struct client *c)
{
    mp_transport_mem_close(c->t);
    double until = mp_now() + 5;
    while (mp_transport_mem_state(c->t) != 2 && mp_now() < until) {
        pump();
        usleep(1000);
    }
    assert_int_equal(mp_transport_mem_state(c->t), 2);
    mp_transport_mem_destroy(c->t);
    c->t = NULL;
}

/* Negotiates up to a bound session alice@example.org/<resource>. */
static void login(struct client *c, const char *resource)
{
    char iq[256];
    send_str(c, HEADER);
    expect(c, "<stream:features>");
    expect(c, "<mechanism>PLAIN</mechanism>");
    expect(c, "</stream:features>");
    send_str(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_OK
                "</auth>");
    expect(c, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    send_str(c, HEADER);
    expect(c, "<stream:features>");
    expect(c, "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>");
    snprintf(iq, sizeof iq,
             "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             "<resource>%s</resource></bind></iq>",
             resource);
    send_str(c, iq);
    snprintf(iq, sizeof iq, "<jid>alice@" HOST "/%s</jid>", resource);
    expect(c, iq);
}

/* ---- tests ---- */

static void test_negotiation_and_echo(void **state)
{
    (void)state;
    struct client c;
    client_open(&c, 1);
    login(&c, "home");
    send_str(&c, "<message to='alice@" HOST "/home' type='chat' id='m1'><body>hi me</body>"
                 "</message>");
    expect(&c, "from='alice@" HOST "/home'");
    expect(&c, "<body>hi me</body>");
    /* legacy session establishment is answered */
    send_str(&c, "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>"
                 "</iq>");
    expect(&c, "id='s1'");
    send_str(&c, "</stream:stream>");
    expect(&c, "</stream:stream>");
    assert_int_equal(mp_transport_mem_state(c.t), 1);
    client_close(&c);
}

#define WS_OPEN "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='" HOST "' version='1.0'/>"

/* The same stream layer with RFC 7395 framing (what a WebSocket transport
 * will set): <open/> and <close/> instead of the stream document,
 * features and errors that bind the stream: prefix themselves, stanzas
 * that carry xmlns, no STARTTLS; a stanza before <open/> is refused. */
static void test_websocket_framing(void **state)
{
    (void)state;
    struct client c;
    memset(&c, 0, sizeof c);
    mp_loop_bind_thread(worker.loop);
    c.t = mp_transport_mem_new(mp_loop_base(worker.loop), 1);
    c.t->framing = MP_FRAMING_WEBSOCKET;
    c.s = mp_c2s_open(&worker, c.t);
    assert_non_null(c.s);
    send_str(&c, WS_OPEN);
    expect(&c, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='");
    expect(&c, "from='" HOST "' version='1.0' xml:lang='en'/>");
    expect(&c, "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>");
    expect(&c, "<mechanism>PLAIN</mechanism>");
    expect(&c, "</stream:features>");
    assert_null(strstr(c.got, "starttls"));
    send_str(&c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_OK
                 "</auth>");
    expect(&c, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    send_str(&c, WS_OPEN);
    expect(&c, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'");
    expect(&c, "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>");
    send_str(&c, "<iq xmlns='jabber:client' type='set' id='b1'>"
                 "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>ws</resource></bind>"
                 "</iq>");
    expect(&c, "<iq xmlns='jabber:client' type='result' id='b1'>");
    expect(&c, "<jid>alice@" HOST "/ws</jid>");
    /* a stanza to itself comes back with its own xmlns, in one frame */
    send_str(&c, "<message xmlns='jabber:client' to='alice@" HOST "/ws' type='chat' id='m1'>"
                 "<body>framed</body></message>");
    expect(&c, "<message xmlns='jabber:client'");
    expect(&c, "<body>framed</body></message>");
    send_str(&c, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
    expect(&c, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
    assert_null(strstr(c.got, "</stream:stream>"));
    client_close(&c);

    /* anything before <open/> is a stream error, written in frames */
    memset(&c, 0, sizeof c);
    c.t = mp_transport_mem_new(mp_loop_base(worker.loop), 1);
    c.t->framing = MP_FRAMING_WEBSOCKET;
    c.s = mp_c2s_open(&worker, c.t);
    send_str(&c, "<message xmlns='jabber:client' to='x@" HOST "'/>");
    expect(&c, "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
               "<bad-format xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
    expect(&c, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
    client_close(&c);

    /* an RFC 6120 header on a WebSocket stream is refused */
    memset(&c, 0, sizeof c);
    c.t = mp_transport_mem_new(mp_loop_base(worker.loop), 1);
    c.t->framing = MP_FRAMING_WEBSOCKET;
    c.s = mp_c2s_open(&worker, c.t);
    send_str(&c, HEADER);
    expect(&c, "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>");
    expect(&c, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
    client_close(&c);
}

static void test_scram_offered_without_tls(void **state)
{
    (void)state;
    struct client c;
    client_open(&c, 0);
    send_str(&c, HEADER);
    expect(&c, "<stream:features>");
    expect(&c, "<mechanism>SCRAM-SHA-256</mechanism>");
    pull(&c);
    assert_null(strstr(c.got, "PLAIN")); /* not over an insecure transport */
    /* no TLS on this transport: STARTTLS is offered but fails cleanly */
    send_str(&c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    expect(&c, "<proceed");
    client_close(&c);
}

static void test_bad_namespace(void **state)
{
    (void)state;
    struct client c;
    client_open(&c, 1);
    send_str(&c, HDR(HOST, "jabber:server"));
    expect(&c, "<invalid-namespace xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
    expect(&c, "</stream:stream>");
    client_close(&c);
}

static void test_unknown_host(void **state)
{
    (void)state;
    struct client c;
    client_open(&c, 1);
    send_str(&c, HDR("elsewhere.example", "jabber:client"));
    expect(&c, "<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
    client_close(&c);
}

static void test_stanza_before_auth(void **state)
{
    (void)state;
    struct client c;
    client_open(&c, 1);
    send_str(&c, HEADER);
    expect(&c, "</stream:features>");
    send_str(&c, "<message to='alice@" HOST "'><body>x</body></message>");
    expect(&c, "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
    expect(&c, "</stream:stream>");
    client_close(&c);
}

static void test_stanza_before_bind(void **state)
{
    (void)state;
    struct client c;
    client_open(&c, 1);
    send_str(&c, HEADER);
    expect(&c, "</stream:features>");
    send_str(&c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_OK
                 "</auth>");
    expect(&c, "<success");
    send_str(&c, HEADER);
    expect(&c, "</stream:features>");
    send_str(&c, "<message to='alice@" HOST "'><body>x</body></message>");
    expect(&c, "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
    client_close(&c);
}

static void test_wrong_password(void **state)
{
    (void)state;
    struct client c;
    client_open(&c, 1);
    send_str(&c, HEADER);
    expect(&c, "</stream:features>");
    send_str(&c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_BAD
                 "</auth>");
    expect(&c, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>");
    /* the stream stays open: a second try succeeds */
    send_str(&c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_OK
                 "</auth>");
    expect(&c, "<success");
    client_close(&c);
}

static void test_not_well_formed(void **state)
{
    (void)state;
    struct client c;
    client_open(&c, 1);
    send_str(&c, HEADER);
    expect(&c, "</stream:features>");
    send_str(&c, "<message><a></b></message>");
    expect(&c, "<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
    client_close(&c);
}

/* Reads until needle like expect, and fails if what came before it
 * contains forbidden (a stanza delivered twice, or out of order). */
static void expect_clean(struct client *c, const char *needle, const char *forbidden)
{
    double until = mp_now() + 10;
    for (;;) {
        pull(c);
        char *p = strstr(c->got, needle);
        if (p) {
            *p = '\0';
            if (strstr(c->got, forbidden))
                fail_msg("%s came before %s: %s", forbidden, needle, c->got);
            *p = needle[0];
            size_t used = (size_t)(p - c->got) + strlen(needle);
            memmove(c->got, c->got + used, c->len - used + 1);
            c->len -= used;
            return;
        }
        if (mp_now() > until)
            fail_msg("waited for %s, got: %s", needle, c->got);
        pump();
        usleep(1000);
    }
}

/* Authenticates and restarts the stream without binding (a connection
 * that will resume a session). */
static void authenticate(struct client *c)
{
    send_str(c, HEADER);
    expect(c, "</stream:features>");
    send_str(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_OK
                "</auth>");
    expect(c, "<success");
    send_str(c, HEADER);
    expect(c, "</stream:features>");
}

/* A session outlives its connection: detached, it stays routable and keeps
 * what is sent to it; a new connection takes it over and reads all of it
 * once, in order, then carries the session on. */
static void test_detach_and_takeover(void **state)
{
    (void)state;
    struct client a, b, c;
    char msg[256];
    client_open(&a, 1);
    login(&a, "phone");
    mp_session *s = a.s;
    mp_session_ref(s);
    uint64_t id = mp_session_id(s);
    assert_true(id > 0);
    int conns = atomic_load(&mp_server.connections);
    assert_int_equal(mp_c2s_detach(s, 60), MAGPIE_OK);
    assert_int_equal(atomic_load(&mp_server.connections), conns - 1);
    assert_int_equal(mp_c2s_detach(s, 60), MAGPIE_ERR); /* once */
    assert_int_equal(mp_transport_mem_state(a.t), 2);   /* the connection is gone */
    mp_transport_mem_destroy(a.t);

    /* another resource sends to the detached one: no error comes back,
     * and modules hear of each message held for it (message_held) */
    held_messages = 0;
    client_open(&b, 1);
    login(&b, "desk");
    for (int i = 1; i <= 5; i++) {
        snprintf(msg, sizeof msg,
                 "<message to='alice@" HOST "/phone' type='chat'><body>n%d</body></message>", i);
        send_str(&b, msg);
    }
    send_str(&b, "<message to='alice@" HOST "/desk' type='chat'><body>sync</body></message>");
    expect_clean(&b, "<body>sync</body>", "error");
    assert_int_equal(held_messages, 5);

    /* a new connection authenticates as the same account and takes over */
    client_open(&c, 1);
    authenticate(&c);
    struct client x;
    client_open(&x, 1);
    send_str(&x, HEADER);
    expect(&x, "</stream:features>");
    assert_int_equal(mp_c2s_takeover(s, x.s), MAGPIE_ERR); /* not authenticated */
    client_close(&x);
    conns = atomic_load(&mp_server.connections);
    assert_int_equal(mp_c2s_takeover(s, c.s), MAGPIE_OK);
    assert_int_equal(mp_session_id(s), id);
    assert_int_equal(atomic_load(&mp_server.connections), conns); /* c's, now s's */
    expect_clean(&c, "<body>n1</body>", "<body>n");
    expect_clean(&c, "<body>n2</body>", "<body>n");
    expect_clean(&c, "<body>n3</body>", "<body>n");
    expect_clean(&c, "<body>n4</body>", "<body>n");
    expect_clean(&c, "<body>n5</body>", "<body>n");
    /* later stanzas come straight through, after those, with none again */
    send_str(&b, "<message to='alice@" HOST "/phone' type='chat'><body>after</body></message>");
    expect_clean(&c, "<body>after</body>", "<body>n");
    assert_int_equal(held_messages, 5); /* attached again: nothing held */
    /* and the new connection speaks for the session */
    send_str(&c, "<message to='alice@" HOST "/desk' type='chat'><body>back</body></message>");
    expect(&b, "from='alice@" HOST "/phone'");
    expect(&b, "<body>back</body>");
    /* c's session shell ended with the takeover; s is attached now */
    struct client y;
    client_open(&y, 1);
    authenticate(&y);
    assert_int_equal(mp_c2s_takeover(s, y.s), MAGPIE_ERR);
    client_close(&y);
    mp_session_unref(s);
    client_close(&c);
    client_close(&b);
}

/* The same across workers: the session detached on worker 0 moves to
 * worker 1, where the new connection is; a stanza routed to it on worker 0
 * meanwhile is passed on after the ones that waited. */
static void test_takeover_across_workers(void **state)
{
    (void)state;
    struct client a, b, c;
    client_open(&a, 1);
    login(&a, "car");
    mp_session *s = a.s;
    mp_session_ref(s);
    assert_int_equal(mp_c2s_detach(s, 60), MAGPIE_OK);
    mp_transport_mem_destroy(a.t);
    client_open(&b, 1);
    login(&b, "bike");
    send_str(&b, "<message to='alice@" HOST "/car' type='chat'><body>w1</body></message>");
    send_str(&b, "<message to='alice@" HOST "/car' type='chat'><body>w2</body></message>");
    send_str(&b, "<message to='alice@" HOST "/bike' type='chat'><body>sync</body></message>");
    expect_clean(&b, "<body>sync</body>", "error");
    client_open_on(&c, 1, 1);
    authenticate(&c);
    mp_loop_bind_thread(workers[1].loop); /* takeover runs on the connection's worker */
    assert_int_equal(mp_c2s_takeover(s, c.s), MAGPIE_OK);
    mp_loop_bind_thread(worker.loop);
    /* routed on worker 0 (the router's entry) before the handover ran */
    send_str(&b, "<message to='alice@" HOST "/car' type='chat'><body>w3</body></message>");
    expect_clean(&c, "<body>w1</body>", "<body>w");
    expect_clean(&c, "<body>w2</body>", "<body>w");
    expect_clean(&c, "<body>w3</body>", "<body>w");
    assert_ptr_equal(mp_session_worker(s), &workers[1]);
    send_str(&c, "<message to='alice@" HOST "/bike' type='chat'><body>moved</body></message>");
    expect(&b, "from='alice@" HOST "/car'");
    expect(&b, "<body>moved</body>");
    mp_session_unref(s);
    client_close(&c);
    client_close(&b);
}

/* A resumable session that loses its connection is detached, not ended:
 * what is sent meanwhile waits for the connection that takes it over. */
static void test_resumable_survives_disconnect(void **state)
{
    (void)state;
    struct client a, b, c;
    client_open(&a, 1);
    login(&a, "watch");
    mp_session *s = a.s;
    mp_session_ref(s);
    mp_c2s_set_resumable(s, 60);
    client_close(&a); /* the peer vanishes: the transport is freed */
    client_open(&b, 1);
    login(&b, "pc");
    send_str(&b, "<message to='alice@" HOST "/watch' type='chat'><body>r1</body></message>");
    send_str(&b, "<message to='alice@" HOST "/pc' type='chat'><body>sync</body></message>");
    expect_clean(&b, "<body>sync</body>", "error");
    client_open(&c, 1);
    authenticate(&c);
    assert_int_equal(mp_c2s_takeover(s, c.s), MAGPIE_OK);
    expect(&c, "<body>r1</body>");
    mp_c2s_set_resumable(s, 0);
    mp_session_unref(s);
    client_close(&c); /* not resumable any more: it ends */
    send_str(&b, "<message to='alice@" HOST "/watch' type='chat' id='gone'><body>x</body>"
                 "</message>");
    expect(&b, "type='error'");
    client_close(&b);
}

/* A detached session that is not taken over in time ends; what waited for
 * it goes through the undeliverable rules (an error to the sender). */
static void test_detached_expires(void **state)
{
    (void)state;
    struct client a, b;
    client_open(&a, 1);
    login(&a, "tablet");
    assert_int_equal(mp_c2s_detach(a.s, 0.2), MAGPIE_OK);
    mp_transport_mem_destroy(a.t);
    client_open(&b, 1);
    login(&b, "laptop");
    send_str(&b, "<message to='alice@" HOST "/tablet' type='chat' id='lost'><body>x</body>"
                 "</message>");
    expect(&b, "type='error'");
    client_close(&b);
}

/* Stream management's core part (XEP-0198, module.h): the client's
 * stanzas are counted from mp_session_manage on and handled once routed;
 * a resumable managed session that loses its connection is detached, and
 * mp_session_resume finds it by full JID and id (a wrong id finds
 * nothing) and gives it the new authenticated connection, on the same or
 * on another worker; the count goes on there. */
static void sm_resume_on(int target_worker)
{
    struct client a, b, c;
    client_open(&a, 1);
    login(&a, "sm");
    mp_session *s = a.s;
    mp_session_ref(s);
    uint64_t id = mp_session_id(s);
    client_open(&b, 1);
    login(&b, "other");
    mp_session_manage(s, 60);
    int all = 0;
    assert_int_equal(mp_session_handled(s, &all), 0);
    assert_true(all);
    for (int i = 0; i < 3; i++)
        send_str(&a, "<message to='alice@" HOST "/other' type='chat'><body>c</body></message>");
    expect(&b, "<body>c</body>");
    pump();
    assert_int_equal(mp_session_handled(s, &all), 3);
    assert_true(all);
    client_close(&a); /* the peer vanishes: detached, not ended */
    client_open_on(&c, 1, target_worker);
    authenticate(&c);
    if (target_worker)
        mp_loop_bind_thread(workers[1].loop);
    assert_int_equal(mp_session_resume(c.s, "alice@" HOST "/sm", id + 1000, NULL), MAGPIE_NOTFOUND);
    assert_int_equal(mp_session_resume(c.s, "alice@" HOST "/nope", id, NULL), MAGPIE_NOTFOUND);
    assert_int_equal(mp_session_resume(c.s, "alice@" HOST "/sm", id, NULL), MAGPIE_OK);
    mp_loop_bind_thread(worker.loop);
    pump();
    pump();
    assert_ptr_equal(mp_session_worker(s), &workers[target_worker]);
    /* (the router's per-worker session maps are per thread, and this test
     * runs both workers on one thread: deliveries to a session that moved
     * are checked by tests/integration/test_63 on real workers) */
    if (target_worker == 0) {
        send_str(&b, "<message to='alice@" HOST "/sm' type='chat'><body>resumed</body></message>");
        expect(&c, "<body>resumed</body>");
    }
    send_str(&c, "<message to='alice@" HOST "/other' type='chat'><body>again</body></message>");
    expect(&b, "from='alice@" HOST "/sm'");
    for (int i = 0; i < 10 && mp_session_handled(s, NULL) != 4; i++) {
        pump();
        usleep(1000);
    }
    assert_int_equal(mp_session_handled(s, &all), 4);
    mp_session_unref(s);
    client_close(&c);
    client_close(&b);
}

static void test_sm_count_and_resume(void **state)
{
    (void)state;
    sm_resume_on(0);
}

static void test_sm_resume_across_workers(void **state)
{
    (void)state;
    sm_resume_on(1);
}

/* ---- the TCP transport's output: one send per turn, libevent on a full
 * socket ---- */

struct tx {
    mp_loop *loop;
    struct mp_transport *t;
    int peer;
    size_t big, got;
    int drained, eof;
    unsigned char *rx;
    struct event *reader;
};
static struct tx *tx;

static void tx_read(void *ud)
{
    (void)ud;
}
static void tx_drained(void *ud)
{
    (void)ud;
    tx->drained++;
    mp_loop_stop(tx->loop);
}
static void tx_progress(void *ud, size_t n)
{
    (void)ud;
    (void)n;
}
static void tx_event(void *ud, enum mp_transport_event ev)
{
    (void)ud;
    if (ev != MP_TRANSPORT_TLS_READY)
        tx->eof++;
}
static const struct mp_transport_up tx_up = {tx_read, tx_drained, tx_progress, tx_event};

static void tx_put(const void *data, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, data, len);
    tx->t->ops->write(tx->t, b);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

/* the peer reads slowly, in the loop, until it has everything */
static void tx_reader(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    size_t want = 6 + tx->big - tx->got;
    ssize_t n = recv(tx->peer, tx->rx + tx->got, want < 4096 ? want : 4096, MSG_DONTWAIT);
    if (n > 0)
        tx->got += (size_t)n;
    else
        assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    if (tx->got < 6 + tx->big) {
        struct timeval tv = {0, 200};
        evtimer_add(tx->reader, &tv);
    }
}

static void tx_give_up(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    mp_loop_stop(tx->loop); /* x.drained stays 0: the test fails */
}

static void tx_job(void *arg)
{
    (void)arg;
    char c;
    tx_put("one", 3);
    tx_put("two", 3);
    /* nothing is sent before the turn ends */
    assert_int_equal(recv(tx->peer, &c, 1, MSG_DONTWAIT | MSG_PEEK), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    unsigned char *big = malloc(tx->big);
    for (size_t i = 0; i < tx->big; i++)
        big[i] = (unsigned char)(i * 7 + (i >> 12));
    tx_put(big, tx->big);
    free(big);
    tx->t->ops->watch_drain(tx->t);
    struct timeval tv = {0, 0};
    evtimer_add(tx->reader, &tv);
}

/* What is written during a turn leaves at its end, in order; what the
 * socket does not take is written by libevent as the peer reads, and the
 * drain is reported once the peer has taken everything. */
static void tcp_output_per_turn_and_backpressure(void **state)
{
    (void)state;
    struct tx x;
    memset(&x, 0, sizeof x);
    tx = &x;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 16384;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    mp_loop *prev = mp_loop_current();
    x.loop = mp_loop_new();
    mp_loop_bind_thread(x.loop);
    x.peer = sv[1];
    x.big = 1 << 20; /* far more than the socket holds */
    x.rx = malloc(3 + 3 + x.big);
    x.t = mp_transport_tcp_new(mp_loop_base(x.loop), sv[0], NULL, 0, "localhost");
    assert_non_null(x.t);
    mp_transport_set_up(x.t, &tx_up, NULL);
    x.reader = evtimer_new(mp_loop_base(x.loop), tx_reader, NULL);
    x.big -= 3; /* "one" + "two" + big = 1 MiB + 3 */
    struct event *give_up = evtimer_new(mp_loop_base(x.loop), tx_give_up, NULL);
    struct timeval limit = {20, 0};
    evtimer_add(give_up, &limit);
    mp_loop_post(x.loop, tx_job, NULL);
    mp_loop_run(x.loop); /* until drained: the socket took the last bytes */
    event_free(give_up);
    assert_int_equal(x.drained, 1);
    /* what the kernel still holds */
    while (x.got < 6 + x.big) {
        ssize_t n = recv(x.peer, x.rx + x.got, 6 + x.big - x.got, 0);
        assert_true(n > 0);
        x.got += (size_t)n;
    }
    char extra;
    assert_int_equal(recv(x.peer, &extra, 1, MSG_DONTWAIT), -1);
    assert_int_equal(x.t->ops->queued(x.t), 0);
    assert_memory_equal(x.rx, "onetwo", 6);
    for (size_t i = 0; i < x.big; i++)
        if (x.rx[6 + i] != (unsigned char)(i * 7 + (i >> 12)))
            fail_msg("byte %zu out of order", i);
    assert_int_equal(x.eof, 0);
    event_free(x.reader);
    x.t->ops->free(x.t);
    close(sv[1]);
    free(x.rx);
    mp_loop_free(x.loop);
    mp_loop_bind_thread(prev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negotiation_and_echo),
        cmocka_unit_test(test_websocket_framing),
        cmocka_unit_test(test_scram_offered_without_tls),
        cmocka_unit_test(test_bad_namespace),
        cmocka_unit_test(test_unknown_host),
        cmocka_unit_test(test_stanza_before_auth),
        cmocka_unit_test(test_stanza_before_bind),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_not_well_formed),
        cmocka_unit_test(test_detach_and_takeover),
        cmocka_unit_test(test_takeover_across_workers),
        cmocka_unit_test(test_resumable_survives_disconnect),
        cmocka_unit_test(test_detached_expires),
        cmocka_unit_test(test_sm_count_and_resume),
        cmocka_unit_test(test_sm_resume_across_workers),
        cmocka_unit_test(tcp_output_per_turn_and_backpressure),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
