/* mod_component.c - external components (XEP-0114, jabber:component:accept).
 *
 * A component (a gateway, a bot, a pubsub or upload service written in any
 * language) connects to the module's listener, opens a stream to its own
 * domain, proves it knows the shared secret with <handshake/> (SHA-1 of
 * the stream id and the secret, hex) and from then on is that domain:
 * every stanza addressed to the domain or a JID in it is written to the
 * component, and whatever the component sends is routed like any stanza
 * the server sends, provided its 'from' is in the component's domain.
 *
 * Configuration (docs/admin-guide.md):
 *   { name = "component"; port = 5347;
 *     components = "pubsub.example.org=secret1 bot.example.org=secret2"; }
 *
 * Threads: the domain callback runs on the worker the router picks for the
 * destination JID, the connection lives on the worker that accepted it.
 * A stanza for the component is posted to that worker's loop (FIFO per
 * poster, so the router's per-sender order holds) and written there; one
 * for a component that is not connected is bounced with
 * service-unavailable, like a request to any entity that is not there. */
#include <magpie/magpie.h>
#include <magpie/listener.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ACCEPT "jabber:component:accept"
#define MAX_COMPONENTS 64

/* One configured component domain. conn/loop/gen are guarded by mu. */
struct component {
    char *domain;
    char *secret;
    pthread_mutex_t mu;
    mp_conn *conn;    /* the authenticated connection, or NULL */
    mp_loop *loop;    /* its worker's loop */
    unsigned gen;     /* bumped at every (dis)connection */
};

static struct component comps[MAX_COMPONENTS];
static size_t n_comps;
static size_t max_queued; /* bytes a component may leave unread */

enum cstate { C_HEADER, C_HANDSHAKE, C_BOUND, C_DEAD };

struct cconn {
    mp_conn *conn;
    mp_xmlstream *parser;
    enum cstate state;
    struct component *comp; /* the domain its header asked for */
    unsigned gen;           /* comp->gen when bound */
    char id[33];
};

static struct component *find_component(const char *domain)
{
    for (size_t i = 0; i < n_comps; i++)
        if (strcmp(comps[i].domain, domain) == 0)
            return &comps[i];
    return NULL;
}

static void write_str(mp_conn *c, const char *s)
{
    mp_conn_write(c, s, strlen(s));
}

/* The domain is free again as soon as its stream ends (the connection may
 * linger half-closed until the peer closes its side). */
static void release(struct component *comp, unsigned gen)
{
    pthread_mutex_lock(&comp->mu);
    if (comp->gen == gen) {
        comp->conn = NULL;
        comp->loop = NULL;
        comp->gen++;
        mp_log(MP_LOG_INFO, "component %s disconnected", comp->domain);
    }
    pthread_mutex_unlock(&comp->mu);
}

static void unbind(struct cconn *cc)
{
    if (cc->comp && cc->gen)
        release(cc->comp, cc->gen);
    cc->gen = 0;
}

/* Sends a stream error (with the stream header first if none was sent)
 * and closes. */
static void stream_fail(struct cconn *cc, const char *condition, const char *text)
{
    char buf[512];
    if (cc->state == C_HEADER)
        write_str(cc->conn, "<?xml version='1.0'?><stream:stream xmlns:stream="
                            "'http://etherx.jabber.org/streams' xmlns='" NS_ACCEPT "'>");
    snprintf(buf, sizeof buf,
             "<stream:error><%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
             "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>%s</text></stream:error>"
             "</stream:stream>",
             condition, text);
    write_str(cc->conn, buf);
    mp_log(MP_LOG_INFO, "component %s: stream error %s (%s)", mp_conn_peer(cc->conn), condition,
           text);
    cc->state = C_DEAD;
    unbind(cc);
    mp_xmlstream_stop(cc->parser); /* nothing after the error is read */
    mp_conn_close(cc->conn);
}

static void on_open(void *ud, mp_stanza *hdr, const char *default_ns)
{
    struct cconn *cc = ud;
    mp_xml *root = mp_stanza_root(hdr);
    if (strcmp(root->name, "stream") != 0 || strcmp(root->ns, "http://etherx.jabber.org/streams")) {
        stream_fail(cc, "invalid-namespace", "not a stream");
        return;
    }
    if (strcmp(default_ns, NS_ACCEPT) != 0) {
        stream_fail(cc, "invalid-namespace", "the default namespace must be " NS_ACCEPT);
        return;
    }
    const char *to = mp_xml_get_attr(root, "to");
    mp_jid j;
    struct component *comp = NULL;
    if (to && mp_jid_parse(&j, to) == MAGPIE_OK) {
        if (!j.local && !j.resource)
            comp = find_component(j.domain);
        mp_jid_free(&j);
    }
    if (!comp) {
        stream_fail(cc, "host-unknown", "no component is configured for that domain");
        return;
    }
    cc->comp = comp;
    mp_random_id(cc->id, sizeof cc->id);
    char buf[512];
    snprintf(buf, sizeof buf,
             "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
             "xmlns='" NS_ACCEPT "' id='%s' from='%s'>",
             cc->id, comp->domain);
    write_str(cc->conn, buf);
    cc->state = C_HANDSHAKE;
}

/* The hex SHA-1 of id + secret (XEP-0114 §3). */
static void handshake_digest(const char *id, const char *secret, char out[2 * SHA_DIGEST_LENGTH + 1])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    size_t il = strlen(id), sl = strlen(secret);
    char *buf = malloc(il + sl + 1);
    memcpy(buf, id, il);
    memcpy(buf + il, secret, sl + 1);
    EVP_Digest(buf, il + sl, md, NULL, EVP_sha1(), NULL);
    OPENSSL_cleanse(buf, il + sl);
    free(buf);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void handshake(struct cconn *cc, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    if (strcmp(root->name, "handshake") != 0 || strcmp(root->ns, NS_ACCEPT) != 0) {
        stream_fail(cc, "not-authorized", "handshake first");
        return;
    }
    char want[2 * SHA_DIGEST_LENGTH + 1], got[2 * SHA_DIGEST_LENGTH + 1] = {0};
    handshake_digest(cc->id, cc->comp->secret, want);
    const char *t = mp_xml_text(st, root);
    size_t n = strlen(t);
    for (size_t i = 0; i < n && i < sizeof got - 1; i++)
        got[i] = (char)((t[i] >= 'A' && t[i] <= 'F') ? t[i] - 'A' + 'a' : t[i]);
    if (n != sizeof want - 1 || CRYPTO_memcmp(got, want, sizeof want - 1) != 0) {
        stream_fail(cc, "not-authorized", "wrong handshake");
        return;
    }
    struct component *comp = cc->comp;
    pthread_mutex_lock(&comp->mu);
    int taken = comp->conn != NULL;
    if (!taken) {
        comp->conn = cc->conn;
        comp->loop = mp_loop_current();
        cc->gen = ++comp->gen;
    }
    pthread_mutex_unlock(&comp->mu);
    if (taken) {
        stream_fail(cc, "conflict", "this component is already connected");
        return;
    }
    write_str(cc->conn, "<handshake/>");
    mp_conn_unthrottle(cc->conn); /* a server-side service, not a client */
    cc->state = C_BOUND;
    mp_log(MP_LOG_INFO, "component %s connected from %s", comp->domain, mp_conn_peer(cc->conn));
}

/* Moves every element of the component's namespace into jabber:client (the
 * namespace the rest of the server speaks); other namespaces stay. */
static void to_client_ns(mp_xml *el)
{
    if (el->type != MP_XML_ELEMENT)
        return;
    if (el->ns && strcmp(el->ns, NS_ACCEPT) == 0)
        el->ns = MP_NS_CLIENT;
    for (mp_xml *c = el->children; c; c = c->next)
        to_client_ns(c);
}

/* The stanza's 'from' is in the component's domain (XEP-0114 binds one
 * domain per stream; node@domain/resource JIDs in it are the component's). */
static int from_ok(const struct mp_envelope *env, const char *domain)
{
    return env->from.domain && strcmp(env->from.domain, domain) == 0;
}

static void routed_stanza(struct cconn *cc, mp_stanza *st)
{
    mp_xml *root = mp_stanza_root(st);
    if (strcmp(root->ns, NS_ACCEPT) != 0 || (strcmp(root->name, "message") != 0 &&
                                             strcmp(root->name, "presence") != 0 &&
                                             strcmp(root->name, "iq") != 0)) {
        stream_fail(cc, "unsupported-stanza-type", "only message, presence and iq");
        return;
    }
    to_client_ns(root);
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->from_bad || !from_ok(env, cc->comp->domain)) {
        stream_fail(cc, "invalid-from", "'from' must be in the component's domain");
        return;
    }
    if (env->to_bad || !env->to.domain) {
        stream_fail(cc, "improper-addressing", "a stanza needs a valid 'to'");
        return;
    }
    mp_route(mp_stanza_ref(st));
}

static void on_stanza(void *ud, mp_stanza *st)
{
    struct cconn *cc = ud;
    if (cc->state == C_HANDSHAKE)
        handshake(cc, st);
    else if (cc->state == C_BOUND)
        routed_stanza(cc, st);
    mp_stanza_unref(st);
}

static void on_close(void *ud)
{
    struct cconn *cc = ud;
    if (cc->state != C_DEAD) {
        write_str(cc->conn, "</stream:stream>");
        cc->state = C_DEAD;
        unbind(cc);
        mp_conn_close(cc->conn);
    }
}

static void on_error(void *ud, const char *condition, const char *text)
{
    stream_fail(ud, condition, text);
}

static const struct mp_xmlstream_cb parser_cb = {on_open, on_stanza, on_close, on_error};

static void *conn_open(mp_conn *c, void *ud)
{
    (void)ud;
    struct cconn *cc = calloc(1, sizeof *cc);
    if (!cc) {
        mp_conn_close(c);
        return NULL;
    }
    cc->conn = c;
    cc->parser = mp_xmlstream_new(NULL, &parser_cb, cc);
    return cc;
}

static size_t conn_data(mp_conn *c, void *state, const char *data, size_t len)
{
    struct cconn *cc = state;
    (void)c;
    if (!cc || cc->state == C_DEAD)
        return len;
    size_t used;
    mp_xmlstream_feed(cc->parser, data, len, &used);
    return len;
}

static void conn_closed(mp_conn *c, void *state)
{
    struct cconn *cc = state;
    (void)c;
    if (!cc)
        return;
    unbind(cc);
    mp_xmlstream_free(cc->parser);
    free(cc);
}

static const struct mp_listener_ops listener_ops = {conn_open, conn_data, conn_closed};

/* ---- stanzas for a component ---- */

static void bounce(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->type == MP_TYPE_ERROR || env->type == MP_TYPE_RESULT ||
        (env->kind == MP_KIND_PRESENCE && env->type != MP_TYPE_PROBE))
        return; /* RFC 6120 §8.3.1: never answer an error; presence is dropped */
    mp_stanza *e = mp_stanza_copy(st);
    mp_stanza_make_error(e, "cancel", "service-unavailable", "the component is not connected");
    mp_route(e);
}

struct delivery {
    struct component *comp;
    unsigned gen;
    mp_stanza *st;
};

/* On the component connection's worker. */
static void deliver_here(void *arg)
{
    struct delivery *d = arg;
    pthread_mutex_lock(&d->comp->mu);
    mp_conn *c = d->comp->gen == d->gen ? d->comp->conn : NULL;
    pthread_mutex_unlock(&d->comp->mu);
    if (c) {
        /* written in jabber:client terms into a stream whose default
         * namespace is jabber:component:accept: elements of jabber:client
         * carry no xmlns and so read as the component's namespace */
        if (mp_conn_queued(c) > max_queued) {
            /* a component that stopped reading: cut it off rather than
             * hold an unbounded queue (a request is answered by bounce) */
            mp_log(MP_LOG_WARN, "component %s: more than %zu bytes unread, disconnecting",
                   d->comp->domain, max_queued);
            write_str(c, "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:"
                         "xmpp-streams'/></stream:error></stream:stream>");
            release(d->comp, d->gen);
            mp_conn_close(c);
            bounce(d->st);
        } else {
            char *s = mp_xml_to_string(mp_stanza_root(d->st), MP_NS_CLIENT);
            write_str(c, s);
            free(s);
        }
    } else {
        bounce(d->st);
    }
    mp_stanza_unref(d->st);
    free(d);
}

static int domain_stanza(mp_stanza *st, void *ud)
{
    struct component *comp = ud;
    pthread_mutex_lock(&comp->mu);
    mp_loop *loop = comp->conn ? comp->loop : NULL;
    unsigned gen = comp->gen;
    pthread_mutex_unlock(&comp->mu);
    if (loop) {
        struct delivery *d = malloc(sizeof *d);
        if (d) {
            *d = (struct delivery){comp, gen, mp_stanza_ref(st)};
            if (mp_loop_post(loop, deliver_here, d) == MAGPIE_OK)
                return HOOK_HANDLED;
            mp_stanza_unref(st);
            free(d);
        }
    }
    bounce(st);
    return HOOK_HANDLED;
}

/* ---- configuration ---- */

/* "domain=secret domain2=secret2" -> comps[]. */
static int parse_components(mp_module *m, const char *spec)
{
    char *copy = strdup(spec), *save = NULL;
    int rc = MAGPIE_OK;
    for (char *tok = strtok_r(copy, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
        char *eq = strchr(tok, '=');
        char norm[MP_JID_PART_MAX + 1];
        if (!eq || eq == tok || !eq[1]) {
            mp_log(MP_LOG_ERROR, "component: '%s' is not domain=secret", tok);
            rc = MAGPIE_ERR;
            break;
        }
        *eq = '\0';
        if (mp_jid_nameprep(tok, norm, sizeof norm) != MAGPIE_OK || n_comps == MAX_COMPONENTS ||
            find_component(norm)) {
            mp_log(MP_LOG_ERROR, "component: bad, repeated or too many domains at '%s'", tok);
            rc = MAGPIE_ERR;
            break;
        }
        if (strlen(eq + 1) < 8)
            mp_log(MP_LOG_WARN, "component %s: its secret is shorter than 8 characters", norm);
        struct component *c = &comps[n_comps];
        c->domain = strdup(norm);
        c->secret = strdup(eq + 1);
        pthread_mutex_init(&c->mu, NULL);
        n_comps++;
        if (!mp_domain_add(m, c->domain, domain_stanza, c)) {
            mp_log(MP_LOG_ERROR, "component %s: the domain is a host or served by another module",
                   c->domain);
            rc = MAGPIE_ERR;
            break;
        }
    }
    free(copy);
    return rc;
}

static int load(mp_module *m)
{
    max_queued = (size_t)mp_module_opt_int(m, "max_queued_kib") * 1024;
    if (parse_components(m, mp_module_opt_str(m, "components")) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (n_comps == 0)
        mp_log(MP_LOG_WARN, "component: no components configured (option 'components')");
    return mp_listener_add(m, mp_module_opt_str(m, "address"), (int)mp_module_opt_int(m, "port"),
                           &listener_ops, NULL);
}

static void unload(mp_module *m)
{
    (void)m;
    for (size_t i = 0; i < n_comps; i++) {
        free(comps[i].domain);
        free(comps[i].secret);
        pthread_mutex_destroy(&comps[i].mu);
    }
    n_comps = 0;
}

static const struct mp_option opts[] = {
    {"address", MP_OPT_STRING, "127.0.0.1", "address the component listener binds", 0, 0},
    {"port", MP_OPT_INT, "5347", "port of the component listener", 1, 65535},
    {"components", MP_OPT_STRING, "",
     "the components: space-separated domain=secret pairs", 0, 0},
    {"max_queued_kib", MP_OPT_INT, "4096",
     "KiB of stanzas a component may leave unread before it is disconnected", 64, 1048576},
    {NULL, 0, NULL, NULL, 0, 0},
};

MP_MODULE_DECLARE("component", "XEP-0114 Jabber Component Protocol", opts, load, unload, NULL);
