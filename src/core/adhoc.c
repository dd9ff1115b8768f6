/* adhoc.c - XEP-0050 ad-hoc commands: the commands modules register and
 * the execution sessions (include/magpie/adhoc.h).
 *
 * The commands are registrations like the others, kept by module.c
 * (mp_adhoc_command_add). Sessions are shared by the workers (a
 * requester's next stage may arrive on another worker) and live in one
 * list behind a mutex; there are few of them (at most MAX_SESSIONS, each
 * expiring after SESSION_IDLE_US without a request). While a request is
 * with its handler the session is busy: nothing else touches its state.
 * Modules are unloaded only at shutdown, after mp_adhoc_sessions_free, so
 * a session's free_fn is always still loaded. */
#include "base/base.h"
#include "core/modules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SESSIONS    1024
#define MAX_PER_OWNER   16
#define SESSION_IDLE_US (600LL * 1000000)

struct session {
    struct session *next;
    char id[24];
    char *owner; /* requester's full JID */
    char *node;
    int stage;
    unsigned allowed; /* MP_ADHOC_ALLOW mask of next/prev/complete */
    enum mp_adhoc_action def;
    int busy;
    int64_t last_us;
    void *state;
    void (*free_fn)(void *);
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct session *sessions;
static size_t n_sessions;

struct mp_adhoc_req {
    mp_stanza *iq; /* referenced */
    mp_xml *cmd;
    enum mp_adhoc_action action;
    struct session *s; /* busy while the request lives */
    enum mp_adhoc_status status;
    unsigned allowed;
    enum mp_adhoc_action def;
    int actions_set;
};

static const char *const action_names[] = {"execute", "next", "prev", "complete", "cancel"};
static const char *const status_names[] = {"executing", "completed", "canceled"};

/* ---- who may run what (the commands are kept by module.c) ---- */

int mp_adhoc_allowed(enum mp_adhoc_access access, const mp_jid *requester)
{
    if (!requester || !requester->domain)
        return 0;
    if (access == MP_ADHOC_ADMIN)
        return mp_is_admin(requester);
    return requester->local && mp_host_is_local(requester->domain);
}

static int command_allowed(const struct mp_adhoc_cmd *c, const mp_jid *requester)
{
    return mp_adhoc_allowed(c->access, requester) ||
           (c->allow && requester && requester->domain && c->allow(requester, c->allow_ud));
}

void mp_adhoc_commands_foreach(const mp_jid *requester,
                               void (*fn)(void *ud, const char *node, const char *name), void *ud)
{
    const struct mp_adhoc_cmd *c;
    for (size_t i = 0; (c = mp_adhoc_cmd_nth(i)); i++)
        if (command_allowed(c, requester))
            fn(ud, c->node, c->name);
}

int mp_adhoc_command_lookup(const char *node, const mp_jid *requester, char *buf, size_t len)
{
    const struct mp_adhoc_cmd *c = node ? mp_adhoc_cmd_find(node) : NULL;
    if (!c || !command_allowed(c, requester))
        return MAGPIE_NOTFOUND;
    if (buf && len)
        snprintf(buf, len, "%s", c->name);
    return MAGPIE_OK;
}

/* ---- sessions (mu held) ---- */

static void session_free(struct session *s)
{
    if (s->state && s->free_fn)
        s->free_fn(s->state);
    free(s->owner);
    free(s->node);
    free(s);
}

static void session_unlink(struct session *s)
{
    for (struct session **pp = &sessions; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            n_sessions--;
            return;
        }
}

/* Drops the sessions idle for more than SESSION_IDLE_US. */
static void sweep(int64_t now)
{
    for (struct session **pp = &sessions; *pp;) {
        struct session *s = *pp;
        if (!s->busy && now - s->last_us > SESSION_IDLE_US) {
            *pp = s->next;
            n_sessions--;
            session_free(s);
        } else {
            pp = &s->next;
        }
    }
}

static struct session *session_find(const char *id)
{
    for (struct session *s = sessions; s; s = s->next)
        if (strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

static size_t owner_sessions(const char *owner)
{
    size_t n = 0;
    for (struct session *s = sessions; s; s = s->next)
        n += strcmp(s->owner, owner) == 0;
    return n;
}

void mp_adhoc_sessions_free(void)
{
    pthread_mutex_lock(&mu);
    while (sessions) {
        struct session *s = sessions;
        sessions = s->next;
        session_free(s);
    }
    n_sessions = 0;
    pthread_mutex_unlock(&mu);
}

/* ---- answers ---- */

/* Answers iq with a stanza error plus, if specific is not NULL, the
 * XEP-0050 application condition. Does not take iq. */
static void reply_error(const mp_stanza *iq, const char *type, const char *condition,
                        const char *specific)
{
    mp_stanza *e = mp_stanza_copy(iq);
    mp_stanza_make_error(e, type, condition, NULL);
    if (specific) {
        mp_xml *err = mp_xml_find(mp_stanza_root(e), "error", NULL);
        if (err)
            mp_xml_add_child(e, err, specific, MP_NS_COMMANDS);
    }
    mp_iq_reply(e);
}

/* Ends request r: the session stays (idle again) when keep, else it is
 * removed and freed. */
static void req_end(mp_adhoc_req *r, int keep)
{
    pthread_mutex_lock(&mu);
    struct session *s = r->s;
    if (keep) {
        s->busy = 0;
        s->stage++;
        s->last_us = mp_now_us();
        if (r->actions_set) {
            s->allowed = r->allowed;
            s->def = r->def;
        } else {
            s->allowed = MP_ADHOC_ALLOW(MP_ADHOC_NEXT) | MP_ADHOC_ALLOW(MP_ADHOC_COMPLETE);
            s->def = MP_ADHOC_EXECUTE;
        }
        s = NULL;
    } else {
        session_unlink(s);
    }
    pthread_mutex_unlock(&mu);
    if (s)
        session_free(s);
    mp_stanza_unref(r->iq);
    free(r);
}

mp_stanza *mp_adhoc_reply_new(mp_adhoc_req *r, enum mp_adhoc_status status, mp_xml **cmd)
{
    mp_stanza *reply = mp_iq_result(r->iq);
    mp_xml *c = mp_xml_add_child(reply, mp_stanza_root(reply), "command", MP_NS_COMMANDS);
    mp_xml_set_attr(reply, c, "node", r->s->node);
    mp_xml_set_attr(reply, c, "sessionid", r->s->id);
    mp_xml_set_attr(reply, c, "status", status_names[status]);
    r->status = status;
    if (cmd)
        *cmd = c;
    return reply;
}

void mp_adhoc_actions(mp_adhoc_req *r, mp_stanza *reply, mp_xml *cmd, unsigned allowed,
                      enum mp_adhoc_action def)
{
    allowed &= MP_ADHOC_ALLOW(MP_ADHOC_NEXT) | MP_ADHOC_ALLOW(MP_ADHOC_PREV) |
               MP_ADHOC_ALLOW(MP_ADHOC_COMPLETE);
    mp_xml *a = mp_xml_add_child(reply, cmd, "actions", MP_NS_COMMANDS);
    if (allowed & MP_ADHOC_ALLOW(def))
        mp_xml_set_attr(reply, a, "execute", action_names[def]);
    for (int i = MP_ADHOC_NEXT; i <= MP_ADHOC_COMPLETE; i++)
        if (allowed & MP_ADHOC_ALLOW(i))
            mp_xml_add_child(reply, a, action_names[i], MP_NS_COMMANDS);
    r->allowed = allowed;
    r->def = (allowed & MP_ADHOC_ALLOW(def)) ? def : MP_ADHOC_EXECUTE;
    r->actions_set = 1;
}

void mp_adhoc_note(mp_stanza *reply, mp_xml *cmd, const char *type, const char *text)
{
    mp_xml *n = mp_xml_add_child(reply, cmd, "note", MP_NS_COMMANDS);
    mp_xml_set_attr(reply, n, "type", type ? type : "info");
    if (text)
        mp_xml_add_text(reply, n, text, strlen(text));
}

void mp_adhoc_send(mp_adhoc_req *r, mp_stanza *reply)
{
    int keep = r->status == MP_ADHOC_EXECUTING;
    req_end(r, keep);
    mp_iq_reply(reply);
}

void mp_adhoc_error(mp_adhoc_req *r, const char *type, const char *condition,
                    const char *specific)
{
    reply_error(r->iq, type, condition, specific);
    req_end(r, 0);
}

void mp_adhoc_complete_note(mp_adhoc_req *r, const char *type, const char *text)
{
    mp_xml *cmd;
    mp_stanza *reply = mp_adhoc_reply_new(r, MP_ADHOC_COMPLETED, &cmd);
    mp_adhoc_note(reply, cmd, type, text);
    mp_adhoc_send(r, reply);
}

/* ---- accessors ---- */

mp_stanza *mp_adhoc_iq(mp_adhoc_req *r) { return r->iq; }
mp_xml *mp_adhoc_command(mp_adhoc_req *r) { return r->cmd; }
mp_xml *mp_adhoc_form(mp_adhoc_req *r) { return mp_form_find(r->cmd); }
enum mp_adhoc_action mp_adhoc_action(mp_adhoc_req *r) { return r->action; }
int mp_adhoc_stage(mp_adhoc_req *r) { return r->s->stage; }
void *mp_adhoc_state(mp_adhoc_req *r) { return r->s->state; }

const mp_jid *mp_adhoc_requester(mp_adhoc_req *r)
{
    return &mp_stanza_envelope(r->iq)->from;
}

void mp_adhoc_set_state(mp_adhoc_req *r, void *state, void (*free_fn)(void *))
{
    struct session *s = r->s;
    if (s->state && s->state != state && s->free_fn)
        s->free_fn(s->state);
    s->state = state;
    s->free_fn = free_fn;
}

/* ---- dispatch ---- */

static int parse_action(const char *a)
{
    if (!a)
        return MP_ADHOC_EXECUTE;
    for (int i = 0; i <= MP_ADHOC_CANCEL; i++)
        if (strcmp(a, action_names[i]) == 0)
            return i;
    return -1;
}

void mp_adhoc_dispatch(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *cmd = mp_xml_find(mp_stanza_root(iq), "command", MP_NS_COMMANDS);
    const char *node = cmd ? mp_xml_get_attr(cmd, "node") : NULL;
    if (!node || !*node) {
        reply_error(iq, "modify", "bad-request", NULL);
        return;
    }
    const struct mp_adhoc_cmd *c = mp_adhoc_cmd_find(node);
    if (!c) {
        reply_error(iq, "cancel", "item-not-found", NULL);
        return;
    }
    if (!command_allowed(c, &env->from)) {
        reply_error(iq, "auth", "forbidden", NULL);
        return;
    }
    int action = parse_action(mp_xml_get_attr(cmd, "action"));
    if (action < 0) {
        reply_error(iq, "modify", "bad-request", "malformed-action");
        return;
    }
    const char *sid = mp_xml_get_attr(cmd, "sessionid");
    const char *owner = env->from.full;
    int64_t now = mp_now_us();
    struct session *s = NULL;

    pthread_mutex_lock(&mu);
    sweep(now);
    if (!sid) {
        if (action != MP_ADHOC_EXECUTE) {
            pthread_mutex_unlock(&mu);
            reply_error(iq, "modify", "bad-request", "bad-action");
            return;
        }
        if (n_sessions >= MAX_SESSIONS || owner_sessions(owner) >= MAX_PER_OWNER) {
            pthread_mutex_unlock(&mu);
            reply_error(iq, "wait", "resource-constraint", NULL);
            return;
        }
        s = mp_calloc(1, sizeof *s);
        do
            mp_random_id(s->id, sizeof s->id);
        while (session_find(s->id));
        s->owner = mp_strdup(owner);
        s->node = mp_strdup(node);
        s->next = sessions;
        sessions = s;
        n_sessions++;
    } else {
        s = session_find(sid);
        if (!s || strcmp(s->owner, owner) != 0 || strcmp(s->node, node) != 0) {
            pthread_mutex_unlock(&mu);
            reply_error(iq, "modify", "bad-request", "bad-sessionid");
            return;
        }
        if (s->busy) {
            pthread_mutex_unlock(&mu);
            reply_error(iq, "wait", "resource-constraint", NULL);
            return;
        }
        if (action == MP_ADHOC_CANCEL) {
            session_unlink(s);
            pthread_mutex_unlock(&mu);
            mp_stanza *reply = mp_iq_result(iq);
            mp_xml *rc = mp_xml_add_child(reply, mp_stanza_root(reply), "command", MP_NS_COMMANDS);
            mp_xml_set_attr(reply, rc, "node", s->node);
            mp_xml_set_attr(reply, rc, "sessionid", s->id);
            mp_xml_set_attr(reply, rc, "status", "canceled");
            session_free(s);
            mp_iq_reply(reply);
            return;
        }
        if (action == MP_ADHOC_EXECUTE) {
            action = s->def;
        } else if (!(s->allowed & MP_ADHOC_ALLOW(action))) {
            pthread_mutex_unlock(&mu);
            reply_error(iq, "modify", "bad-request", "bad-action");
            return;
        }
    }
    s->busy = 1;
    s->last_us = now;
    pthread_mutex_unlock(&mu);

    mp_adhoc_req *r = mp_calloc(1, sizeof *r);
    r->iq = mp_stanza_ref(iq);
    r->cmd = cmd;
    r->action = (enum mp_adhoc_action)action;
    r->s = s;
    r->status = MP_ADHOC_COMPLETED;
    c->fn(r, c->ud);
}
