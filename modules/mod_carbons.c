/* mod_carbons - XEP-0280 Message Carbons (urn:xmpp:carbons:2).
 *
 * A client enables or disables carbons for its own session with an IQ set
 * <enable/> / <disable/>; an inbound filter answers it (the filter has the
 * session, an IQ handler would not). The carbon-enabled full JIDs of each
 * user are kept in a table behind one mutex, since the resources of one
 * user live on several workers.
 *
 * Sent carbons: an inbound filter sees each eligible message a client
 * sends and routes a copy, wrapped in <sent><forwarded/></sent>, to every
 * other carbon-enabled resource of the user.
 * Received carbons: an outbound filter sees each eligible message as it is
 * written to a session of its recipient. A message to a full JID: the
 * other enabled resources get it wrapped in <received/>. A message to the
 * bare JID reaches every resource of the highest non-negative priority
 * (RFC 6121 §8.5.2.1.1): only the first of those (by full JID) sends the
 * carbons, to the enabled resources that did not get the message, so
 * nobody gets a copy twice.
 *
 * Eligible (§6.1): type chat, or type normal with a <body/>; not an error,
 * not a carbon itself, not one with <private/> (§7) or a XEP-0334
 * <no-copy/> hint. */
#include <magpie/magpie.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_HINTS   "urn:xmpp:hints"

static mp_module *self;
static mp_counter *c_carbons;

/* ---- who has carbons on ---- */

struct enabled {
    char *bare, *full;
    struct enabled *next;
};
static struct enabled *enabled;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void set_enabled(const mp_jid *j, int on)
{
    pthread_mutex_lock(&lock);
    struct enabled **pp = &enabled;
    while (*pp && strcmp((*pp)->full, j->full) != 0)
        pp = &(*pp)->next;
    if (on && !*pp) {
        struct enabled *e = mp_calloc(1, sizeof *e);
        e->bare = mp_strdup(j->bare);
        e->full = mp_strdup(j->full);
        e->next = enabled;
        enabled = e;
    } else if (!on && *pp) {
        struct enabled *e = *pp;
        *pp = e->next;
        free(e->bare);
        free(e->full);
        free(e);
    }
    pthread_mutex_unlock(&lock);
}

/* The enabled full JIDs of bare other than `except` (and not in skip[]),
 * as a malloc'd array of malloc'd strings; *n its length. */
static char **enabled_of(const char *bare, const char *except, char **skip, size_t nskip, size_t *n)
{
    char **v = NULL;
    *n = 0;
    pthread_mutex_lock(&lock);
    for (struct enabled *e = enabled; e; e = e->next) {
        if (strcmp(e->bare, bare) != 0 || (except && strcmp(e->full, except) == 0))
            continue;
        size_t k;
        for (k = 0; k < nskip && strcmp(skip[k], e->full) != 0; k++)
            ;
        if (k < nskip)
            continue;
        v = mp_realloc(v, (*n + 1) * sizeof *v);
        v[*n] = mp_strdup(e->full);
        (*n)++;
    }
    pthread_mutex_unlock(&lock);
    return v;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- carbons ---- */

static int eligible(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind != MP_KIND_MESSAGE)
        return 0;
    mp_xml *root = mp_stanza_root(st);
    if (env->type != MP_TYPE_CHAT && !((env->type == MP_TYPE_NONE || env->type == MP_TYPE_NORMAL) &&
                                       mp_xml_find(root, "body", NULL)))
        return 0;
    if (mp_xml_find(root, "private", NS_CARBONS) || mp_xml_find(root, "no-copy", NS_HINTS) ||
        mp_xml_find(root, "received", NS_CARBONS) || mp_xml_find(root, "sent", NS_CARBONS))
        return 0;
    return 1;
}

/* Routes <message from=bare to=each><how><forwarded>st</forwarded></how>. */
static void send_carbons(const char *bare, char **to, size_t n, const char *how, mp_stanza *st)
{
    for (size_t i = 0; i < n; i++) {
        mp_stanza *c = mp_stanza_new("message", MP_NS_CLIENT);
        mp_xml *root = mp_stanza_root(c);
        mp_xml_set_attr(c, root, "from", bare);
        mp_xml_set_attr(c, root, "to", to[i]);
        const char *type = mp_xml_get_attr(mp_stanza_root(st), "type");
        if (type)
            mp_xml_set_attr(c, root, "type", type);
        mp_xml *w = mp_xml_add_child(c, root, how, NS_CARBONS);
        mp_xml *f = mp_xml_add_child(c, w, "forwarded", NS_FORWARD);
        mp_xml_add_copy(c, f, mp_stanza_root(st));
        mp_counter_add(c_carbons, 1);
        mp_route(c);
    }
}

static void reply(mp_session *s, mp_stanza *iq, const char *error)
{
    mp_stanza *r;
    if (error) {
        r = mp_stanza_make_error(mp_stanza_copy(iq), "modify", error, NULL);
    } else {
        r = mp_iq_result(iq);
    }
    mp_xml_set_attr(r, mp_stanza_root(r), "from", NULL);
    mp_session_send(s, r);
}

static int from_client(mp_session *s, mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    const mp_jid *me = mp_session_jid(s);
    if (env->kind == MP_KIND_IQ && env->type == MP_TYPE_SET &&
        (!env->to.domain || strcmp(env->to.full, me->bare) == 0)) {
        mp_xml *q = mp_xml_first_element(mp_stanza_root(st));
        if (!q || !q->ns || strcmp(q->ns, NS_CARBONS) != 0)
            return MP_FILTER_PASS;
        if (strcmp(q->name, "enable") == 0 || strcmp(q->name, "disable") == 0) {
            int on = strcmp(q->name, "enable") == 0;
            set_enabled(me, on);
            mp_session_set_data(s, self, on ? (void *)1 : NULL);
            reply(s, st, NULL);
        } else {
            reply(s, st, "bad-request");
        }
        return MP_FILTER_STOP;
    }
    if (env->kind != MP_KIND_MESSAGE || !eligible(st))
        return MP_FILTER_PASS;
    size_t n;
    char **to = enabled_of(me->bare, me->full, NULL, 0, &n);
    if (n > 0)
        send_carbons(me->bare, to, n, "sent", st);
    free_list(to, n);
    return MP_FILTER_PASS;
}

struct targets {
    char **v;
    size_t n;
    int best;
};

static void collect(void *ud, const char *full, int priority)
{
    struct targets *t = ud;
    if (priority < 0 || priority < t->best)
        return;
    if (priority > t->best) {
        free_list(t->v, t->n);
        t->v = NULL;
        t->n = 0;
        t->best = priority;
    }
    t->v = mp_realloc(t->v, (t->n + 1) * sizeof *t->v);
    t->v[t->n] = mp_strdup(full);
    t->n++;
}

static int to_client(mp_session *s, mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind != MP_KIND_MESSAGE || !env->to.domain)
        return MP_FILTER_PASS;
    const mp_jid *me = mp_session_jid(s);
    /* only messages to this user, from someone else's session (a user
     * writing to itself gets sent carbons instead) */
    if (strcmp(env->to.bare, me->bare) != 0 || !eligible(st))
        return MP_FILTER_PASS;
    if (env->from.domain && strcmp(env->from.bare, me->bare) == 0)
        return MP_FILTER_PASS;
    size_t n;
    char **to;
    if (env->to.resource) {
        to = enabled_of(me->bare, me->full, NULL, 0, &n);
    } else {
        /* to the bare JID: the first recipient (by full JID) sends carbons
         * to the enabled resources the router did not give it to */
        struct targets t = {NULL, 0, -129};
        mp_sessions_foreach(me->bare, collect, &t);
        const char *first = NULL;
        for (size_t i = 0; i < t.n; i++)
            if (!first || strcmp(t.v[i], first) < 0)
                first = t.v[i];
        if (!first || strcmp(first, me->full) != 0) {
            free_list(t.v, t.n);
            return MP_FILTER_PASS;
        }
        to = enabled_of(me->bare, NULL, t.v, t.n, &n);
        free_list(t.v, t.n);
    }
    if (n > 0)
        send_carbons(me->bare, to, n, "received", st);
    free_list(to, n);
    return MP_FILTER_PASS;
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    if (mp_session_data(s, self))
        set_enabled(mp_session_jid(s), 0);
    mp_session_set_data(s, self, NULL);
}

static const struct mp_notify notify = {.session_ended = session_ended};

static int load(mp_module *m)
{
    self = m;
    c_carbons = mp_counter_new(m, "copies", "Carbon copies sent");
    mp_filter_add(m, MP_FILTER_IN, 40, from_client, NULL);
    /* low priority: after filters that drop a message (blocking) */
    mp_filter_add(m, MP_FILTER_OUT, -10, to_client, NULL);
    mp_notify_add(m, &notify, NULL);
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_CARBONS);
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    while (enabled) {
        struct enabled *e = enabled;
        enabled = e->next;
        free(e->bare);
        free(e->full);
        free(e);
    }
}

MP_MODULE_DECLARE("carbons", "XEP-0280 Message Carbons", NULL, load, unload, NULL);
