/* mod_linetest.c - a test module with its own listener and framing: a
 * trivial line protocol whose lines are routed as XMPP messages.
 *
 * Each line "JID text" becomes <message type='chat' to='JID' from='<from>'>
 * <body>text</body></message>, routed like any stanza the server sends;
 * the module answers "ok" (or "error: ...") per line. It exists to prove
 * that a module can serve a listener on the same worker/event model as the
 * client ports (tests/integration/test_13_module_listener.py); it is not
 * installed. */
#include <magpie/magpie.h>
#include <magpie/listener.h>
#include <string.h>

static const char *from_jid;

static void route_line(mp_conn *c, const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    mp_jid to;
    char jid[3 * 1024];
    size_t jl = sp ? (size_t)(sp - line) : len;
    if (!sp || jl == 0 || jl >= sizeof jid) {
        mp_conn_write(c, "error: expected 'JID text'\n", 27);
        return;
    }
    memcpy(jid, line, jl);
    jid[jl] = '\0';
    if (mp_jid_parse(&to, jid) != MAGPIE_OK) {
        mp_conn_write(c, "error: bad JID\n", 15);
        return;
    }
    mp_stanza *st = mp_stanza_new("message", "jabber:client");
    mp_xml *root = mp_stanza_root(st);
    mp_xml_set_attr(st, root, "type", "chat");
    mp_xml_set_attr(st, root, "to", to.full);
    mp_xml_set_attr(st, root, "from", from_jid);
    mp_xml *body = mp_xml_add_child(st, root, "body", NULL);
    mp_xml_add_text(st, body, sp + 1, len - jl - 1);
    mp_jid_free(&to);
    mp_route(st);
    mp_conn_write(c, "ok\n", 3);
}

/* Consumes every complete line; a partial one waits for the rest. */
static size_t on_data(mp_conn *c, void *state, const char *data, size_t len)
{
    (void)state;
    size_t used = 0;
    for (;;) {
        const char *nl = memchr(data + used, '\n', len - used);
        if (!nl)
            return used;
        size_t n = (size_t)(nl - (data + used));
        if (n > 0 && data[used + n - 1] == '\r')
            n--;
        if (n == 4 && memcmp(data + used, "quit", 4) == 0) {
            mp_conn_write(c, "bye\n", 4);
            mp_conn_close(c);
            return len;
        }
        if (n > 0)
            route_line(c, data + used, n);
        used = (size_t)(nl - data) + 1;
    }
}

static const struct mp_listener_ops ops = {NULL, on_data, NULL};

static int load(mp_module *m)
{
    from_jid = mp_module_opt_str(m, "from");
    long long port = mp_module_opt_int(m, "port");
    if (port == 0)
        return MAGPIE_OK;
    if (mp_module_opt_bool(m, "tls"))
        return mp_listener_add_tls(m, mp_module_opt_str(m, "address"), (int)port, NULL, &ops, NULL);
    return mp_listener_add(m, mp_module_opt_str(m, "address"), (int)port, &ops, NULL);
}

static const struct mp_option opts[] = {
    {"address", MP_OPT_STRING, "127.0.0.1", "address the line listener binds", 0, 0},
    {"port", MP_OPT_INT, "0", "port of the line listener (0: none)", 0, 65535},
    {"from", MP_OPT_STRING, "localhost", "'from' of the messages it routes", 0, 0},
    {"tls", MP_OPT_BOOL, "false", "TLS from the first byte", 0, 0},
    {NULL, 0, NULL, NULL, 0, 0},
};

MP_MODULE_DECLARE("linetest", "test: a line protocol listener whose lines become messages", opts,
                  load, NULL, NULL);
