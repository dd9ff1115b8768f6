/* mod_csi - XEP-0352 Client State Indication (urn:xmpp:csi:0).
 *
 * A bound client says <inactive/> when its user is not looking (a phone in
 * a pocket) and <active/> when they are again; the server advertises
 * <csi/> in the post-authentication stream features. What the server does
 * meanwhile is its own policy (XEP-0352 §5); ours:
 *
 *   - presence broadcasts (available and unavailable) to an inactive
 *     session are held back and folded: only the latest presence from each
 *     sender's full JID is kept, so a contact changing status ten times
 *     costs one stanza, sent when the client becomes active again;
 *   - everything else (messages, IQs, subscription requests, presence
 *     errors) flows at once, and so does a MUC occupant's own presence
 *     (XEP-0045 status 110: the answer to a join or nick change the
 *     client waits for), which replaces a held one from the same sender.
 *
 * On <active/> the held presences are written in the order their latest
 * version arrived. An outbound filter at the lowest priority holds them,
 * after every other module's outbound filter (blocking, carbons) has seen
 * the stanza; the held stanzas are written with mp_session_send. The
 * per-session state lives in the session's module slot and is freed in
 * session_ended. At most max_held senders are kept per session: past that,
 * everything held is written out and holding starts over, so memory per
 * session stays bounded. A session resumed after a lost connection
 * (XEP-0198) is active again: the client must send <inactive/> anew. */
#include <magpie/magpie.h>
#include <stdlib.h>
#include <string.h>

#define NS_CSI      "urn:xmpp:csi:0"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"

static mp_module *self;
static mp_counter *c_held, *c_folded;

struct held {
    char *from;    /* sender's full JID, as in the stanza */
    mp_stanza *st; /* reference */
};

struct csi {
    int inactive;
    struct held *v; /* oldest first */
    size_t n, cap;
};

static struct csi *csi_of(mp_session *s, int create)
{
    struct csi *c = mp_session_data(s, self);
    if (!c && create) {
        c = mp_calloc(1, sizeof *c);
        mp_session_set_data(s, self, c);
    }
    return c;
}

/* Writes every held presence to s, oldest first, and empties the list. */
static void flush(mp_session *s, struct csi *c)
{
    size_t n = c->n;
    c->n = 0; /* before sending: nothing re-enters the list meanwhile */
    for (size_t i = 0; i < n; i++) {
        mp_session_send(s, c->v[i].st);
        free(c->v[i].from);
    }
}

static void drop_all(struct csi *c)
{
    for (size_t i = 0; i < c->n; i++) {
        mp_stanza_unref(c->v[i].st);
        free(c->v[i].from);
    }
    c->n = 0;
}

/* A MUC room's presence about the client's own occupant (status 110). */
static int muc_self_presence(mp_stanza *st)
{
    mp_xml *x = mp_xml_find(mp_stanza_root(st), "x", NS_MUC_USER);
    for (mp_xml *c = x ? mp_xml_find(x, "status", NS_MUC_USER) : NULL; c;
         c = mp_xml_find_next(c, "status", NS_MUC_USER)) {
        const char *code = mp_xml_get_attr(c, "code");
        if (code && strcmp(code, "110") == 0)
            return 1;
    }
    return 0;
}

/* Outbound filter: holds a presence broadcast to an inactive session,
 * replacing (and moving to the end) an older one from the same sender. */
static int to_client(mp_session *s, mp_stanza *st, void *ud)
{
    (void)ud;
    struct csi *c = csi_of(s, 0);
    if (!c || !c->inactive)
        return MP_FILTER_PASS;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind != MP_KIND_PRESENCE ||
        (env->type != MP_TYPE_NONE && env->type != MP_TYPE_UNAVAILABLE))
        return MP_FILTER_PASS;
    const char *from = env->from.domain ? env->from.full : "";
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].from, from) == 0) {
            struct held old = c->v[i];
            memmove(&c->v[i], &c->v[i + 1], (c->n - i - 1) * sizeof *c->v);
            c->n--;
            mp_stanza_unref(old.st);
            free(old.from);
            mp_counter_add(c_folded, 1);
            break;
        }
    }
    if (muc_self_presence(st))
        return MP_FILTER_PASS; /* the client waits for it; what it replaced is gone */
    if (c->n >= (size_t)mp_module_opt_int(self, "max_held"))
        flush(s, c); /* bounded: write out what is held, keep holding */
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->v = mp_realloc(c->v, c->cap * sizeof *c->v);
    }
    c->v[c->n].from = mp_strdup(from);
    c->v[c->n].st = mp_stanza_ref(st);
    c->n++;
    mp_counter_add(c_held, 1);
    return MP_FILTER_STOP;
}

static int on_inactive(mp_session *s, mp_stanza *el, void *ud)
{
    (void)el;
    (void)ud;
    csi_of(s, 1)->inactive = 1;
    return HOOK_HANDLED;
}

static int on_active(mp_session *s, mp_stanza *el, void *ud)
{
    (void)el;
    (void)ud;
    struct csi *c = csi_of(s, 0);
    if (c) {
        c->inactive = 0;
        flush(s, c);
    }
    return HOOK_HANDLED;
}

static void feature(mp_session *s, mp_stanza *st, mp_xml *features, void *ud)
{
    (void)s;
    (void)ud;
    mp_xml_add_child(st, features, "csi", NS_CSI);
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    struct csi *c = csi_of(s, 0);
    if (!c)
        return;
    drop_all(c); /* nobody to write them to */
    free(c->v);
    free(c);
    mp_session_set_data(s, self, NULL);
}

/* XEP-0352 §4: a stream starts active; a resumed one too (XEP-0198
 * resumption is a new stream): what is held goes out now. */
static void session_resumed(mp_session *s, void *ud)
{
    (void)ud;
    struct csi *c = csi_of(s, 0);
    if (c) {
        c->inactive = 0;
        flush(s, c);
    }
}

static const struct mp_notify notify = {.session_ended = session_ended,
                                        .session_resumed = session_resumed};

static int load(mp_module *m)
{
    self = m;
    c_held = mp_counter_new(m, "presences_held", "Presences held back from inactive clients");
    c_folded = mp_counter_new(m, "presences_folded",
                              "Held presences replaced by a newer one from the same sender");
    if (mp_stream_element_add(m, NS_CSI, "inactive", on_inactive, NULL) != MAGPIE_OK ||
        mp_stream_element_add(m, NS_CSI, "active", on_active, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    mp_stream_feature_add(m, MP_FEATURES_POST_AUTH, feature, NULL);
    /* lowest priority: every other outbound filter sees the presence first */
    mp_filter_add(m, MP_FILTER_OUT, -1000, to_client, NULL);
    mp_notify_add(m, &notify, NULL);
    return MAGPIE_OK;
}

static const struct mp_option options[] = {
    {"max_held", MP_OPT_INT, "1000",
     "Senders whose presence an inactive session holds before it is written out anyway", 1,
     1000000},
    {NULL, 0, NULL, NULL, 0, 0}};

MP_MODULE_DECLARE("csi", "XEP-0352 Client State Indication", options, load, NULL, NULL);
