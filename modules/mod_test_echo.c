/* mod_test_echo - a test module (built, never installed): serves a service
 * domain of its own and exercises the typed filters and notifications.
 *
 * - The domain (option `domain`, default echo.localhost) answers disco#info
 *   from its own identity and features, ping through a per-domain IQ
 *   handler, and echoes every message back to its sender.
 * - Inbound filters at priorities 20, 10, 10 (registered in the order
 *   10 "a", 20 "b", 10 "c") each add <f n='...'/> to a message whose body is
 *   "filter-order", so the echo shows the order they ran in: b, a, c. A
 *   filter at priority 30 stops messages whose body is "drop-me".
 * - An outbound filter stops messages whose body is "hide-me".
 * - Two notification subscribers count session starts/ends and presence
 *   changes; IQ get <stats xmlns='urn:magpie:test:echo'/> to the domain
 *   answers with both counts, and with how many sessions were found again
 *   by id (mp_session_find) when they started.
 * - Stream elements (tests/integration/test_27_csi.py): a bound client's
 *   top-level <echo xmlns='urn:magpie:test:echo'/> comes back as a copy
 *   with <seen jid='its full JID'/> added; <decline/> in that namespace is
 *   declined (HOOK_PASS), so the stream closes as for an unknown element.
 *   The post-auth stream features carry <echo xmlns='urn:magpie:test:echo'/>.
 * - An ad-hoc command (XEP-0050, tests/integration/test_65_adhoc.py) for
 *   any local user, urn:magpie:test:echo#wizard: three forms asking for one
 *   word each, with next/prev between them and complete on the last; the
 *   words are kept in the session's state; completing answers with a note
 *   "w1 w2 w3". Each form carries the stage number (mp_adhoc_stage).
 * - IQ set <relay xmlns='urn:magpie:test:echo' to='JID'>payload</relay> to
 *   the domain sends <iq type='get'>payload</iq> to JID from
 *   relay@<domain> (an entity of a domain the server serves but does not
 *   host, like a user of another server) and answers with
 *   <relay><iq .../></relay> holding the answer it got
 *   (tests/integration/test_76_upload.py). */
#include <magpie/magpie.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ECHO "urn:magpie:test:echo"
#define NS_PING "urn:xmpp:ping"

static mp_domain *dom;

struct counts {
    atomic_int started, ended, presence, deleted;
};
static struct counts subs[2];
static atomic_int found_by_id;

static const char *body_of(mp_stanza *st)
{
    mp_xml *b = mp_xml_find(mp_stanza_root(st), "body", NULL);
    return b ? mp_xml_text(st, b) : "";
}

/* ---- the domain ---- */

/* Relayed requests waiting for their answer. */
struct relay {
    char id[32];
    mp_stanza *req; /* the client's IQ, referenced */
    struct relay *next;
};
static pthread_mutex_t relay_lock = PTHREAD_MUTEX_INITIALIZER;
static struct relay *relays;
static atomic_int relay_seq;

static void relay_start(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_xml *rl = mp_xml_find(mp_stanza_root(iq), "relay", NS_ECHO);
    const char *to = mp_xml_get_attr(rl, "to");
    mp_xml *payload = mp_xml_first_element(rl);
    mp_jid jid, from;
    if (!to || !payload || mp_jid_parse(&jid, to) != MAGPIE_OK) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    struct relay *r = calloc(1, sizeof *r);
    snprintf(r->id, sizeof r->id, "relay-%d", atomic_fetch_add(&relay_seq, 1));
    char *inner = mp_xml_to_string(payload, "jabber:client");
    size_t n = strlen(inner) + 128;
    char *xml = malloc(n);
    snprintf(xml, n, "<iq xmlns='jabber:client' type='get' id='%s'>%s</iq>", r->id, inner);
    free(inner);
    mp_stanza *out = mp_stanza_parse(xml, strlen(xml));
    free(xml);
    char fromstr[1100];
    snprintf(fromstr, sizeof fromstr, "relay@%s", mp_domain_name(dom));
    if (!out || mp_jid_parse(&from, fromstr) != MAGPIE_OK) {
        if (out)
            mp_stanza_unref(out);
        mp_jid_free(&jid);
        free(r);
        mp_iq_reply_error(iq, "wait", "internal-server-error");
        return;
    }
    mp_stanza_set_to(out, &jid);
    mp_stanza_set_from(out, &from);
    mp_jid_free(&jid);
    mp_jid_free(&from);
    r->req = mp_stanza_ref(iq);
    pthread_mutex_lock(&relay_lock);
    r->next = relays;
    relays = r;
    pthread_mutex_unlock(&relay_lock);
    mp_route(out);
}

/* The answer to a relayed request: back to the client inside <relay/>. */
static int relay_answer(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->id)
        return HOOK_PASS;
    pthread_mutex_lock(&relay_lock);
    struct relay *r = NULL;
    for (struct relay **p = &relays; *p; p = &(*p)->next)
        if (!strcmp((*p)->id, env->id)) {
            r = *p;
            *p = r->next;
            break;
        }
    pthread_mutex_unlock(&relay_lock);
    if (!r)
        return HOOK_PASS;
    mp_stanza *res = mp_iq_result(r->req);
    mp_xml *rl = mp_xml_add_child(res, mp_stanza_root(res), "relay", NS_ECHO);
    mp_xml_add_copy(res, rl, mp_stanza_root(st));
    mp_iq_reply(res);
    mp_stanza_unref(r->req);
    free(r);
    return HOOK_HANDLED;
}

static int echo(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind == MP_KIND_IQ && (env->type == MP_TYPE_RESULT || env->type == MP_TYPE_ERROR) &&
        env->to.local && !strcmp(env->to.local, "relay"))
        return relay_answer(st);
    if (env->kind != MP_KIND_MESSAGE || env->type == MP_TYPE_ERROR || !env->from.domain)
        return HOOK_PASS;
    mp_stanza *r = mp_stanza_copy(st);
    mp_stanza_set_to(r, &env->from);
    mp_stanza_set_from(r, &env->to);
    mp_route(r);
    return HOOK_HANDLED;
}

static void pong(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_iq_reply(mp_iq_result(iq));
}

static void stats(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_stanza *r = mp_iq_result(iq);
    mp_xml *q = mp_xml_add_child(r, mp_stanza_root(r), "stats", NS_ECHO);
    char v[32];
    const char *names[2] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        char k[32];
        snprintf(k, sizeof k, "started-%s", names[i]);
        snprintf(v, sizeof v, "%d", atomic_load(&subs[i].started));
        mp_xml_set_attr(r, q, k, v);
        snprintf(k, sizeof k, "ended-%s", names[i]);
        snprintf(v, sizeof v, "%d", atomic_load(&subs[i].ended));
        mp_xml_set_attr(r, q, k, v);
        snprintf(k, sizeof k, "presence-%s", names[i]);
        snprintf(v, sizeof v, "%d", atomic_load(&subs[i].presence));
        mp_xml_set_attr(r, q, k, v);
        snprintf(k, sizeof k, "deleted-%s", names[i]);
        snprintf(v, sizeof v, "%d", atomic_load(&subs[i].deleted));
        mp_xml_set_attr(r, q, k, v);
    }
    snprintf(v, sizeof v, "%d", atomic_load(&found_by_id));
    mp_xml_set_attr(r, q, "found-by-id", v);
    mp_iq_reply(r);
}

/* ---- filters ---- */

static int to_us(mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    return env->kind == MP_KIND_MESSAGE && env->to.domain &&
           strcmp(env->to.domain, mp_domain_name(dom)) == 0;
}

static int mark(mp_session *s, mp_stanza *st, void *ud)
{
    (void)s;
    if (to_us(st) && strcmp(body_of(st), "filter-order") == 0)
        mp_xml_set_attr(st, mp_xml_add_child(st, mp_stanza_root(st), "f", NS_ECHO), "n", ud);
    return MP_FILTER_PASS;
}

static int drop(mp_session *s, mp_stanza *st, void *ud)
{
    (void)s;
    (void)ud;
    return to_us(st) && strcmp(body_of(st), "drop-me") == 0 ? MP_FILTER_STOP : MP_FILTER_PASS;
}

static int hide(mp_session *s, mp_stanza *st, void *ud)
{
    (void)s;
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    int from_us = env->from.domain && strcmp(env->from.domain, mp_domain_name(dom)) == 0;
    return from_us && strcmp(body_of(st), "hide-me") == 0 ? MP_FILTER_STOP : MP_FILTER_PASS;
}

/* ---- notifications ---- */

static void started(mp_session *s, void *ud)
{
    struct counts *c = ud;
    atomic_fetch_add(&c->started, 1);
    if (c == &subs[0] && mp_session_find(mp_session_id(s)) == s)
        atomic_fetch_add(&found_by_id, 1);
}

static void ended(mp_session *s, void *ud)
{
    (void)s;
    atomic_fetch_add(&((struct counts *)ud)->ended, 1);
}

static void presence(mp_session *s, mp_stanza *p, int available, void *ud)
{
    (void)s;
    (void)p;
    (void)available;
    atomic_fetch_add(&((struct counts *)ud)->presence, 1);
}

static void deleted(const char *domain, const char *user, void *ud)
{
    (void)domain;
    (void)user;
    atomic_fetch_add(&((struct counts *)ud)->deleted, 1);
}

static const struct mp_notify watch = {
    .session_started = started,
    .session_ended = ended,
    .presence_changed = presence,
    .account_deleted = deleted,
};

static int nonza_echo(mp_session *s, mp_stanza *el, void *ud)
{
    (void)ud;
    mp_stanza *r = mp_stanza_copy(el);
    mp_xml *seen = mp_xml_add_child(r, mp_stanza_root(r), "seen", NULL);
    mp_xml_set_attr(r, seen, "jid", mp_session_jid(s)->full);
    mp_session_send(s, r);
    return HOOK_HANDLED;
}

static int nonza_decline(mp_session *s, mp_stanza *el, void *ud)
{
    (void)s;
    (void)el;
    (void)ud;
    return HOOK_PASS;
}

static void echo_feature(mp_session *s, mp_stanza *st, mp_xml *features, void *ud)
{
    (void)s;
    (void)ud;
    mp_xml_add_child(st, features, "echo", NS_ECHO);
}

/* ---- the ad-hoc wizard ---- */

struct wizard {
    int step; /* 1..3: the form last sent */
    char words[3][64];
};

static void wizard_form(mp_adhoc_req *r, struct wizard *w)
{
    mp_xml *cmd;
    mp_stanza *reply = mp_adhoc_reply_new(r, MP_ADHOC_EXECUTING, &cmd);
    unsigned allowed = w->step > 1 ? MP_ADHOC_ALLOW(MP_ADHOC_PREV) : 0;
    allowed |= MP_ADHOC_ALLOW(w->step < 3 ? MP_ADHOC_NEXT : MP_ADHOC_COMPLETE);
    mp_adhoc_actions(r, reply, cmd, allowed, w->step < 3 ? MP_ADHOC_NEXT : MP_ADHOC_COMPLETE);
    char title[32], stage[16];
    snprintf(title, sizeof title, "Word %d", w->step);
    snprintf(stage, sizeof stage, "%d", mp_adhoc_stage(r));
    mp_xml *form = mp_form_add(reply, cmd, "form", NS_ECHO, title);
    mp_form_field_add(reply, form, "stage", "hidden", NULL, stage);
    mp_form_field_add(reply, form, "word", "text-single", title, w->words[w->step - 1]);
    mp_adhoc_send(r, reply);
}

static void wizard(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    struct wizard *w = mp_adhoc_state(r);
    if (!w) {
        w = calloc(1, sizeof *w);
        w->step = 1;
        mp_adhoc_set_state(r, w, free);
        wizard_form(r, w);
        return;
    }
    enum mp_adhoc_action a = mp_adhoc_action(r);
    if (a == MP_ADHOC_PREV) {
        w->step--;
        wizard_form(r, w);
        return;
    }
    mp_xml *form = mp_adhoc_form(r);
    const char *word = form ? mp_form_value(mp_adhoc_iq(r), form, "word") : NULL;
    if (!word) {
        mp_adhoc_error(r, "modify", "bad-request", "bad-payload");
        return;
    }
    snprintf(w->words[w->step - 1], sizeof w->words[0], "%s", word);
    if (a == MP_ADHOC_NEXT) {
        w->step++;
        wizard_form(r, w);
        return;
    }
    char note[200];
    snprintf(note, sizeof note, "%s %s %s", w->words[0], w->words[1], w->words[2]);
    mp_adhoc_complete_note(r, "info", note);
}

static int load(mp_module *m)
{
    dom = mp_domain_add(m, mp_module_opt_str(m, "domain"), echo, NULL);
    if (!dom)
        return MAGPIE_ERR;
    mp_domain_disco_identity(dom, "component", "generic", "Echo service");
    mp_domain_disco_feature(dom, NS_ECHO);
    mp_domain_disco_feature(dom, NS_PING);
    mp_filter_add(m, MP_FILTER_IN, 10, mark, "a");
    mp_filter_add(m, MP_FILTER_IN, 20, mark, "b");
    mp_filter_add(m, MP_FILTER_IN, 10, mark, "c");
    mp_filter_add(m, MP_FILTER_IN, 30, drop, NULL);
    mp_filter_add(m, MP_FILTER_OUT, 0, hide, NULL);
    mp_notify_add(m, &watch, &subs[0]);
    mp_notify_add(m, &watch, &subs[1]);
    if (mp_domain_iq_register(dom, MP_IQ_GET, NS_PING, pong, NULL) != MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_GET, NS_ECHO, stats, NULL) != MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_SET, NS_ECHO, relay_start, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (mp_stream_element_add(m, NS_ECHO, "echo", nonza_echo, NULL) != MAGPIE_OK ||
        mp_stream_element_add(m, NS_ECHO, "decline", nonza_decline, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    /* refused: a second handler for one element, and stanzas' namespace */
    if (mp_stream_element_add(m, NS_ECHO, "echo", nonza_decline, NULL) == MAGPIE_OK ||
        mp_stream_element_add(m, "jabber:client", "echo", nonza_decline, NULL) == MAGPIE_OK)
        return MAGPIE_ERR;
    mp_stream_feature_add(m, MP_FEATURES_POST_AUTH, echo_feature, NULL);
    return mp_adhoc_command_add(m, NS_ECHO "#wizard", "Three words", MP_ADHOC_LOCAL, wizard, NULL);
}

static const struct mp_option options[] = {
    {"domain", MP_OPT_STRING, "echo.localhost", "The service domain to serve", 0, 0},
    {NULL, 0, NULL, NULL, 0, 0},
};

static void unload(mp_module *m)
{
    (void)m;
    pthread_mutex_lock(&relay_lock);
    while (relays) {
        struct relay *r = relays;
        relays = r->next;
        mp_stanza_unref(r->req);
        free(r);
    }
    pthread_mutex_unlock(&relay_lock);
}

MP_MODULE_DECLARE("test_echo", "Test: a service domain, filters and notifications", options, load,
                  unload, NULL);
