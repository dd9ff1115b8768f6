/* strophe_client.c - a libstrophe (C) XMPP client for the integration tests.
 *
 * Logs in (STARTTLS, or direct TLS with --direct-tls), trusting the server's
 * self-signed certificate, then optionally sends a message and pings the
 * server, optionally waits for one incoming message, and disconnects.
 * Exits 0 when everything asked for succeeded, 1 otherwise.
 *
 * Prints machine-readable lines on stdout for the driving test:
 *   MECH <sasl mechanism used>      (from libstrophe's SENT log of <auth/>)
 *   BOUND <full jid>
 *   PING ok | PING error
 *   SENT <to>
 *   MESSAGE <from> <body>
 *   AUTHFAIL <condition>            (a SASL <failure/> received, from the RECV log)
 *   DONE
 *
 * usage: strophe_client --jid JID --password PW --host H --port P
 *        [--direct-tls] [--to JID --body TEXT] [--ping] [--wait-message]
 *        [--timeout SECONDS] [--verbose] */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <strophe.h>

struct client {
    xmpp_ctx_t *ctx;
    const char *to, *body;
    int want_ping, wait_message, verbose;
    int ping_ok, message_got, connected, failed, finished;
    char mech[64];
};

/* Log handler: extracts the SASL mechanism from the <auth/> element libstrophe
 * sends, and echoes everything to stderr with --verbose. */
static void log_handler(void *ud, xmpp_log_level_t level, const char *area, const char *msg)
{
    struct client *c = ud;
    const char *p;

    if (c->verbose)
        fprintf(stderr, "strophe %d %s: %s\n", (int)level, area, msg);
    if (c->mech[0] == '\0' && strstr(msg, "SENT:") != NULL && strstr(msg, "<auth") != NULL &&
        (p = strstr(msg, "mechanism=")) != NULL) {
        size_t n = 0;
        char q = p[10];
        p += 11;
        while (p[n] && p[n] != q && n + 1 < sizeof(c->mech)) {
            c->mech[n] = p[n];
            n++;
        }
        c->mech[n] = '\0';
        printf("MECH %s\n", c->mech);
        fflush(stdout);
    }
    /* RECV: <failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><not-authorized/>... */
    if (strstr(msg, "RECV:") != NULL && (p = strstr(msg, "<failure")) != NULL &&
        strstr(p, "urn:ietf:params:xml:ns:xmpp-sasl") != NULL && (p = strchr(p + 1, '<')) != NULL) {
        p++;
        printf("AUTHFAIL %.*s\n", (int)strcspn(p, " />"), p);
        fflush(stdout);
    }
}

/* Disconnects once every requested step is done. */
static void maybe_finish(xmpp_conn_t *conn, struct client *c)
{
    if (c->finished)
        return;
    if (c->want_ping && !c->ping_ok)
        return;
    if (c->wait_message && !c->message_got)
        return;
    c->finished = 1;
    printf("DONE\n");
    fflush(stdout);
    xmpp_disconnect(conn);
}

/* Result of our ping to the server. */
static int ping_handler(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct client *c = ud;
    const char *type = xmpp_stanza_get_type(st);

    if (type != NULL && strcmp(type, "result") == 0) {
        printf("PING ok\n");
        c->ping_ok = 1;
        fflush(stdout);
        maybe_finish(conn, c);
    } else {
        printf("PING error\n");
        fflush(stdout);
        c->failed = 1;
        xmpp_disconnect(conn);
    }
    return 0;
}

/* Incoming messages: records the first one with a body. */
static int message_handler(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    struct client *c = ud;
    char *body;
    const char *from = xmpp_stanza_get_from(st);

    body = xmpp_message_get_body(st);
    if (body == NULL)
        return 1;
    printf("MESSAGE %s %s\n", from ? from : "-", body);
    fflush(stdout);
    xmpp_free(c->ctx, body);
    c->message_got = 1;
    maybe_finish(conn, c);
    return 1;
}

/* Whole-run timeout. */
static int timeout_handler(xmpp_ctx_t *ctx, void *ud)
{
    struct client *c = ud;

    fprintf(stderr, "strophe_client: timeout\n");
    c->failed = 1;
    xmpp_stop(ctx);
    return 0;
}

/* Connection events: on connect, send the message and the ping. */
static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
                         xmpp_stream_error_t *stream_error, void *ud)
{
    struct client *c = ud;

    if (status == XMPP_CONN_CONNECT) {
        xmpp_stanza_t *pres, *iq, *ping;

        c->connected = 1;
        printf("BOUND %s\n", xmpp_conn_get_bound_jid(conn));
        fflush(stdout);
        xmpp_handler_add(conn, message_handler, NULL, "message", NULL, c);

        pres = xmpp_presence_new(c->ctx);
        xmpp_send(conn, pres);
        xmpp_stanza_release(pres);

        if (c->to != NULL) {
            xmpp_stanza_t *msg = xmpp_message_new(c->ctx, "chat", c->to, "m1");
            xmpp_message_set_body(msg, c->body ? c->body : "hello");
            xmpp_send(conn, msg);
            xmpp_stanza_release(msg);
            printf("SENT %s\n", c->to);
            fflush(stdout);
        }
        if (c->want_ping) {
            /* sent after the message: its result proves the message was
             * processed before we disconnect */
            const char *jid = xmpp_conn_get_bound_jid(conn);
            char *domain = xmpp_jid_domain(c->ctx, jid);
            iq = xmpp_iq_new(c->ctx, "get", "ping1");
            xmpp_stanza_set_to(iq, domain);
            ping = xmpp_stanza_new(c->ctx);
            xmpp_stanza_set_name(ping, "ping");
            xmpp_stanza_set_ns(ping, "urn:xmpp:ping");
            xmpp_stanza_add_child(iq, ping);
            xmpp_stanza_release(ping);
            xmpp_id_handler_add(conn, ping_handler, "ping1", c);
            xmpp_send(conn, iq);
            xmpp_stanza_release(iq);
            xmpp_free(c->ctx, domain);
        }
        maybe_finish(conn, c);
        return;
    }
    if (!c->finished) {
        fprintf(stderr, "strophe_client: %s (error %d%s%s)\n",
                status == XMPP_CONN_FAIL ? "connection failed" : "disconnected early", error,
                stream_error ? ", stream error " : "",
                stream_error && stream_error->text ? stream_error->text : "");
        c->failed = 1;
    }
    xmpp_stop(c->ctx);
}

static void usage(void)
{
    fprintf(stderr, "usage: strophe_client --jid JID --password PW --host H --port P "
                    "[--direct-tls] [--to JID --body TEXT] [--ping] [--wait-message] "
                    "[--timeout S] [--verbose]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"jid", required_argument, NULL, 'j'},    {"password", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},   {"port", required_argument, NULL, 'P'},
        {"direct-tls", no_argument, NULL, 'd'},   {"to", required_argument, NULL, 't'},
        {"body", required_argument, NULL, 'b'},   {"ping", no_argument, NULL, 'i'},
        {"wait-message", no_argument, NULL, 'w'}, {"timeout", required_argument, NULL, 'T'},
        {"verbose", no_argument, NULL, 'v'},      {NULL, 0, NULL, 0},
    };
    struct client c;
    const char *jid = NULL, *password = NULL, *host = "127.0.0.1";
    int port = 5222, direct = 0, timeout = 20, o;
    xmpp_log_t log;
    xmpp_conn_t *conn;
    long flags;

    memset(&c, 0, sizeof(c));
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'j':
            jid = optarg;
            break;
        case 'p':
            password = optarg;
            break;
        case 'H':
            host = optarg;
            break;
        case 'P':
            port = atoi(optarg);
            break;
        case 'd':
            direct = 1;
            break;
        case 't':
            c.to = optarg;
            break;
        case 'b':
            c.body = optarg;
            break;
        case 'i':
            c.want_ping = 1;
            break;
        case 'w':
            c.wait_message = 1;
            break;
        case 'T':
            timeout = atoi(optarg);
            break;
        case 'v':
            c.verbose = 1;
            break;
        default:
            usage();
        }
    }
    if (jid == NULL || password == NULL || port <= 0 || port > 65535)
        usage();

    xmpp_initialize();
    log.handler = log_handler;
    log.userdata = &c;
    c.ctx = xmpp_ctx_new(NULL, &log);
    conn = xmpp_conn_new(c.ctx);
    flags = XMPP_CONN_FLAG_TRUST_TLS | XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_DISABLE_SM;
    if (direct)
        flags = XMPP_CONN_FLAG_TRUST_TLS | XMPP_CONN_FLAG_LEGACY_SSL | XMPP_CONN_FLAG_DISABLE_SM;
    if (xmpp_conn_set_flags(conn, flags) != XMPP_EOK) {
        fprintf(stderr, "strophe_client: cannot set flags\n");
        return 1;
    }
    xmpp_conn_set_jid(conn, jid);
    xmpp_conn_set_pass(conn, password);
    xmpp_global_timed_handler_add(c.ctx, timeout_handler, (unsigned long)timeout * 1000, &c);
    if (xmpp_connect_client(conn, host, (unsigned short)port, conn_handler, &c) != XMPP_EOK) {
        fprintf(stderr, "strophe_client: connect failed\n");
        return 1;
    }
    xmpp_run(c.ctx);

    /* libstrophe does not free still-registered global handlers */
    xmpp_global_timed_handler_delete(c.ctx, timeout_handler);
    xmpp_conn_release(conn);
    xmpp_ctx_free(c.ctx);
    xmpp_shutdown();
    if (c.failed || !c.connected || !c.finished)
        return 1;
    return 0;
}
