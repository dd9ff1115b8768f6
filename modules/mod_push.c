/* mod_push - XEP-0357 push notifications (opt-in: not in the default
 * module list).
 *
 * A client registers an app server for its account:
 *   <iq type='set'><enable xmlns='urn:xmpp:push:0' jid=APP node=NODE>
 *     [<x xmlns='jabber:x:data' type='submit'> publish-options </x>]
 *   </enable></iq>
 * kept in the map store "push" (key = username, field = APP "\n" NODE,
 * value = the <enable/> element as sent, form included, at most
 * `max_form_size` bytes), so registrations survive restarts; enabling the
 * same (APP, NODE) again replaces its form; at most `max_registrations`
 * per account (beyond: wait/resource-constraint). <disable jid=APP [node=NODE]/>
 * removes that registration, or every one of APP. Only the account itself
 * may enable or disable (to its bare JID or without 'to'). The account's
 * disco#info lists urn:xmpp:push:0. Deleting the account drops them.
 *
 * A message with a <body/> that the client will not see now triggers a
 * notification to every registered app server:
 *   - the account has no available resource (the message_offline routing
 *     point; this module runs before mod_offline and lets it store the
 *     message), chat and normal messages;
 *   - the message was queued on a detached session, one waiting to be
 *     resumed after its connection went (the message_held notification,
 *     XEP-0198).
 * The notification is an IQ set from the account's bare JID:
 *   <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node=NODE>
 *   <item><notification xmlns='urn:xmpp:push:0'><x type='submit'> with
 *   FORM_TYPE urn:xmpp:push:summary, message-count (messages since the
 *   account was last online), last-message-sender (bare JID) and, only if
 *   `include_body` is on, last-message-body </x></notification></item>
 *   </publish><publish-options> the stored form </publish-options></pubsub>
 * Bursts are coalesced: at most one notification per registration every
 * `min_interval` seconds; messages in between are counted in the next
 * one's message-count. An error answer from the app server (of any type
 * but 'wait', XEP-0357 §8) removes the registration.
 *
 * A message from a JID the user blocked never gets here: mod_blocking
 * refuses it in message_account (before message_offline), session or
 * not. Messages held on a detached session have passed the outbound
 * filters, blocking included. */
#include <magpie/magpie.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PUSH        "urn:xmpp:push:0"
#define NS_PUBSUB      "http://jabber.org/protocol/pubsub"
#define NS_SUMMARY     "urn:xmpp:push:summary"
#define STORE          "push"
#define ANSWER_WAIT_US (120 * 1000000LL) /* forget unanswered notifications */

static const struct mp_option options[] = {
    {"include_body", MP_OPT_BOOL, "false",
     "Send the message body to app servers (off: only the sender and a count, for privacy)", 0, 0},
    {"min_interval", MP_OPT_INT, "5",
     "Least seconds between two notifications to one registration (bursts are coalesced)", 0, 3600},
    {"max_registrations", MP_OPT_INT, "10",
     "Most app server registrations (jid + node) one account may keep; beyond: "
     "resource-constraint",
     1, 1000},
    {"max_form_size", MP_OPT_INT, "4096",
     "Largest <enable/> element, publish-options form included (bytes, serialised)", 256, 65536},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;
static mp_counter *c_sent, *c_coalesced, *c_disabled;

/* "APP\nNODE": the map field of a registration (malloc'd). */
static char *field_of(const char *app, const char *node)
{
    size_t n = strlen(app) + strlen(node) + 2;
    char *f = mp_calloc(1, n);
    snprintf(f, n, "%s\n%s", app, node);
    return f;
}

/* ---- in-memory state: counts, coalescing, pending answers ---- */

/* Per account: messages since it was last online. Per registration: when
 * the last notification went. Few entries (accounts with push that got
 * messages while away); guarded by one lock. */
struct reg_state {
    char *bare, *field;
    int64_t last_us;
    struct reg_state *next;
};
struct user_count {
    char *bare;
    unsigned count;
    struct user_count *next;
};
/* A notification waiting for the app server's answer. */
struct pending {
    char id[17];
    char *host, *user, *field, *app;
    int64_t sent_us;
    struct pending *next;
};
static struct reg_state *regs;
static struct user_count *counts;
static struct pending *pendings;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void reg_state_free(struct reg_state *r)
{
    free(r->bare);
    free(r->field);
    free(r);
}

static void pending_free(struct pending *p)
{
    free(p->host);
    free(p->user);
    free(p->field);
    free(p->app);
    free(p);
}

/* Counts one more message for bare; returns the new count. */
static unsigned count_message(const char *bare)
{
    pthread_mutex_lock(&lock);
    struct user_count *c = counts;
    while (c && strcmp(c->bare, bare) != 0)
        c = c->next;
    if (!c) {
        c = mp_calloc(1, sizeof *c);
        c->bare = mp_strdup(bare);
        c->next = counts;
        counts = c;
    }
    unsigned n = ++c->count;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Forgets the state of bare's registrations (field NULL: all of them) and,
 * with field NULL, its count. */
static void forget(const char *bare, const char *field)
{
    pthread_mutex_lock(&lock);
    for (struct reg_state **pp = &regs; *pp;) {
        struct reg_state *r = *pp;
        if (strcmp(r->bare, bare) == 0 && (!field || strcmp(r->field, field) == 0)) {
            *pp = r->next;
            reg_state_free(r);
        } else {
            pp = &r->next;
        }
    }
    if (!field)
        for (struct user_count **pp = &counts; *pp; pp = &(*pp)->next)
            if (strcmp((*pp)->bare, bare) == 0) {
                struct user_count *c = *pp;
                *pp = c->next;
                free(c->bare);
                free(c);
                break;
            }
    pthread_mutex_unlock(&lock);
}

/* 1 if registration (bare, field) may be notified now (and marks it), 0
 * if it was notified less than min_interval ago. */
static int may_notify(const char *bare, const char *field)
{
    int64_t now = mp_now_us();
    int64_t gap = mp_module_opt_int(self, "min_interval") * 1000000LL;
    pthread_mutex_lock(&lock);
    struct reg_state *r = regs;
    while (r && (strcmp(r->bare, bare) != 0 || strcmp(r->field, field) != 0))
        r = r->next;
    int ok = !r || now - r->last_us >= gap;
    if (!r) {
        r = mp_calloc(1, sizeof *r);
        r->bare = mp_strdup(bare);
        r->field = mp_strdup(field);
        r->next = regs;
        regs = r;
    }
    if (ok)
        r->last_us = now;
    pthread_mutex_unlock(&lock);
    return ok;
}

/* Remembers a notification sent with id, and drops old unanswered ones. */
static void pending_add(const char *id, const char *host, const char *user, const char *field,
                        const char *app)
{
    struct pending *p = mp_calloc(1, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", id);
    p->host = mp_strdup(host);
    p->user = mp_strdup(user);
    p->field = mp_strdup(field);
    p->app = mp_strdup(app);
    p->sent_us = mp_now_us();
    pthread_mutex_lock(&lock);
    for (struct pending **pp = &pendings; *pp;) {
        struct pending *o = *pp;
        if (p->sent_us - o->sent_us > ANSWER_WAIT_US) {
            *pp = o->next;
            pending_free(o);
        } else {
            pp = &o->next;
        }
    }
    p->next = pendings;
    pendings = p;
    pthread_mutex_unlock(&lock);
}

/* Takes the pending notification answered by (id, from), or NULL. */
static struct pending *pending_take(const char *id, const char *from)
{
    pthread_mutex_lock(&lock);
    for (struct pending **pp = &pendings; *pp; pp = &(*pp)->next) {
        struct pending *p = *pp;
        if (strcmp(p->id, id) == 0 && strcmp(p->app, from) == 0) {
            *pp = p->next;
            pthread_mutex_unlock(&lock);
            return p;
        }
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* ---- enable / disable ---- */

static void stored(void *ud, int rc)
{
    mp_stanza *iq = ud;
    if (rc == MAGPIE_OK)
        mp_iq_reply(mp_iq_result(iq));
    else
        mp_iq_reply_error(iq, "wait", "internal-server-error");
    mp_stanza_unref(iq);
}

struct enable_op {
    mp_stanza *iq; /* referenced */
    char *host, *user, *bare, *field, *xml;
};

static void enable_op_free(struct enable_op *op)
{
    mp_stanza_unref(op->iq);
    free(op->host);
    free(op->user);
    free(op->bare);
    free(op->field);
    free(op->xml);
    free(op);
}

/* The account's registrations were read: stores the new one unless the
 * account has max_registrations others already. */
static void enable_listed(void *ud, int rc, const mp_map_item *items, size_t n)
{
    struct enable_op *op = ud;
    size_t others = 0;
    for (size_t i = 0; rc == MAGPIE_OK && i < n; i++)
        if (strcmp(items[i].field, op->field) != 0)
            others++;
    if (rc != MAGPIE_OK) {
        mp_iq_reply_error(op->iq, "wait", "internal-server-error");
    } else if (others >= (size_t)mp_module_opt_int(self, "max_registrations")) {
        mp_iq_reply_error(op->iq, "wait", "resource-constraint");
    } else {
        forget(op->bare, op->field);
        if (mp_map_set(op->host, STORE, op->user, op->field, op->xml, strlen(op->xml), stored,
                       mp_stanza_ref(op->iq)) != MAGPIE_OK) {
            mp_iq_reply_error(op->iq, "wait", "internal-server-error");
            mp_stanza_unref(op->iq);
        }
    }
    enable_op_free(op);
}

static void enable(mp_stanza *iq, mp_xml *el, const mp_jid *owner)
{
    const char *app = mp_xml_get_attr(el, "jid");
    const char *node = mp_xml_get_attr(el, "node");
    mp_jid aj;
    if (!app || !node || !*node || mp_jid_parse(&aj, app) != MAGPIE_OK) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    mp_xml *form = mp_form_find(el);
    if (form && strcmp(mp_form_type(form), "submit") != 0) {
        mp_jid_free(&aj);
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    /* keep what was sent, with the app server's JID normalised */
    mp_stanza *doc = mp_stanza_new("enable", NS_PUSH);
    mp_xml *root = mp_stanza_root(doc);
    mp_xml_set_attr(doc, root, "jid", aj.full);
    mp_xml_set_attr(doc, root, "node", node);
    if (form)
        mp_xml_add_copy(doc, root, form);
    char *xml = mp_xml_to_string(root, NULL);
    if (strlen(xml) > (size_t)mp_module_opt_int(self, "max_form_size")) {
        mp_iq_reply_error(iq, "modify", "not-acceptable");
        free(xml);
    } else {
        struct enable_op *op = mp_calloc(1, sizeof *op);
        op->iq = mp_stanza_ref(iq);
        op->host = mp_strdup(owner->domain);
        op->user = mp_strdup(owner->local);
        op->bare = mp_strdup(owner->bare);
        op->field = field_of(aj.full, node);
        op->xml = xml;
        /* count the account's other registrations first */
        if (mp_map_all(owner->domain, STORE, owner->local, enable_listed, op) != MAGPIE_OK) {
            mp_iq_reply_error(iq, "wait", "internal-server-error");
            enable_op_free(op);
        }
    }
    mp_stanza_unref(doc);
    mp_jid_free(&aj);
}

struct disable_op {
    mp_stanza *iq; /* referenced */
    char *host, *user, *bare, *app;
};

static void disable_op_free(struct disable_op *op)
{
    mp_stanza_unref(op->iq);
    free(op->host);
    free(op->user);
    free(op->bare);
    free(op->app);
    free(op);
}

/* Every registration was read: deletes those of op->app, then answers
 * (deletions are queued in order, the answer follows the last). */
static void disable_listed(void *ud, int rc, const mp_map_item *items, size_t n)
{
    struct disable_op *op = ud;
    if (rc != MAGPIE_OK) {
        mp_iq_reply_error(op->iq, "wait", "internal-server-error");
        disable_op_free(op);
        return;
    }
    size_t applen = strlen(op->app);
    for (size_t i = 0; i < n; i++)
        if (strncmp(items[i].field, op->app, applen) == 0 && items[i].field[applen] == '\n') {
            forget(op->bare, items[i].field);
            mp_map_del(op->host, STORE, op->user, items[i].field, NULL, NULL);
        }
    mp_iq_reply(mp_iq_result(op->iq));
    disable_op_free(op);
}

static void disable(mp_stanza *iq, mp_xml *el, const mp_jid *owner)
{
    const char *app = mp_xml_get_attr(el, "jid");
    const char *node = mp_xml_get_attr(el, "node");
    mp_jid aj;
    if (!app || mp_jid_parse(&aj, app) != MAGPIE_OK) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    if (node) {
        char *field = field_of(aj.full, node);
        forget(owner->bare, field);
        if (mp_map_del(owner->domain, STORE, owner->local, field, stored, mp_stanza_ref(iq)) !=
            MAGPIE_OK) {
            mp_iq_reply_error(iq, "wait", "internal-server-error");
            mp_stanza_unref(iq);
        }
        free(field);
    } else {
        struct disable_op *op = mp_calloc(1, sizeof *op);
        op->iq = mp_stanza_ref(iq);
        op->host = mp_strdup(owner->domain);
        op->user = mp_strdup(owner->local);
        op->bare = mp_strdup(owner->bare);
        op->app = mp_strdup(aj.full);
        if (mp_map_all(owner->domain, STORE, owner->local, disable_listed, op) != MAGPIE_OK) {
            mp_iq_reply_error(iq, "wait", "internal-server-error");
            disable_op_free(op);
        }
    }
    mp_jid_free(&aj);
}

static void push_set(mp_stanza *iq, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *el = mp_xml_first_element(mp_stanza_root(iq));
    if (!env->from.local || !mp_host_is_local(env->from.domain) ||
        (env->to.domain && strcmp(env->to.bare, env->from.bare) != 0)) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        return;
    }
    if (strcmp(el->name, "enable") == 0)
        enable(iq, el, &env->from);
    else if (strcmp(el->name, "disable") == 0)
        disable(iq, el, &env->from);
    else
        mp_iq_reply_error(iq, "modify", "bad-request");
}

/* ---- notifying ---- */

struct notify_op {
    char *host, *user, *bare, *sender, *body;
    unsigned count;
};

static void notify_op_free(struct notify_op *op)
{
    free(op->host);
    free(op->user);
    free(op->bare);
    free(op->sender);
    free(op->body);
    free(op);
}

/* Builds and routes the notification for one stored registration. */
static void notify_one(struct notify_op *op, const mp_map_item *item)
{
    mp_stanza *reg = mp_stanza_parse(item->data, item->len);
    if (!reg) {
        mp_log(MP_LOG_WARN, "push: unreadable registration of %s", op->bare);
        return;
    }
    mp_xml *er = mp_stanza_root(reg);
    const char *app = mp_xml_get_attr(er, "jid");
    const char *node = mp_xml_get_attr(er, "node");
    if (!app || !node) {
        mp_stanza_unref(reg);
        return;
    }
    if (!may_notify(op->bare, item->field)) {
        mp_counter_add(c_coalesced, 1);
        mp_stanza_unref(reg);
        return;
    }
    char id[17], num[16];
    mp_random_id(id, sizeof id);
    mp_stanza *iq = mp_stanza_new("iq", "jabber:client");
    mp_xml *root = mp_stanza_root(iq);
    mp_xml_set_attr(iq, root, "type", "set");
    mp_xml_set_attr(iq, root, "id", id);
    mp_xml_set_attr(iq, root, "from", op->bare);
    mp_xml_set_attr(iq, root, "to", app);
    mp_xml *ps = mp_xml_add_child(iq, root, "pubsub", NS_PUBSUB);
    mp_xml *pub = mp_xml_add_child(iq, ps, "publish", NULL);
    mp_xml_set_attr(iq, pub, "node", node);
    mp_xml *item_el = mp_xml_add_child(iq, pub, "item", NULL);
    mp_xml *n = mp_xml_add_child(iq, item_el, "notification", NS_PUSH);
    mp_xml *x = mp_form_add(iq, n, "submit", NS_SUMMARY, NULL);
    snprintf(num, sizeof num, "%u", op->count);
    mp_form_field_add(iq, x, "message-count", NULL, NULL, num);
    mp_form_field_add(iq, x, "last-message-sender", NULL, NULL, op->sender);
    if (op->body)
        mp_form_field_add(iq, x, "last-message-body", NULL, NULL, op->body);
    mp_xml *form = mp_form_find(er);
    if (form) {
        mp_xml *po = mp_xml_add_child(iq, ps, "publish-options", NULL);
        mp_xml_add_copy(iq, po, form);
    }
    pending_add(id, op->host, op->user, item->field, app);
    mp_counter_add(c_sent, 1);
    mp_route(iq);
    mp_stanza_unref(reg);
}

static void regs_listed(void *ud, int rc, const mp_map_item *items, size_t n)
{
    struct notify_op *op = ud;
    if (rc == MAGPIE_OK)
        for (size_t i = 0; i < n; i++)
            notify_one(op, &items[i]);
    notify_op_free(op);
}

/* A message (borrowed) for account user@host that its client will not see
 * now: notifies the account's app servers, if it has a body. */
static void message_missed(mp_stanza *msg, const char *host, const char *user, const char *bare)
{
    const struct mp_envelope *env = mp_stanza_envelope(msg);
    mp_xml *body = mp_xml_find(mp_stanza_root(msg), "body", NULL);
    if (!body || !env->from.domain || env->type == MP_TYPE_ERROR || env->type == MP_TYPE_HEADLINE)
        return;
    struct notify_op *op = mp_calloc(1, sizeof *op);
    op->host = mp_strdup(host);
    op->user = mp_strdup(user);
    op->bare = mp_strdup(bare);
    op->sender = mp_strdup(env->from.bare);
    if (mp_module_opt_bool(self, "include_body"))
        op->body = mp_strdup(mp_xml_text(msg, body));
    op->count = count_message(bare);
    if (mp_map_all(host, STORE, user, regs_listed, op) != MAGPIE_OK)
        notify_op_free(op);
}

static int message_offline(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind == MP_KIND_MESSAGE && env->to.local)
        message_missed(st, env->to.domain, env->to.local, env->to.bare);
    return HOOK_PASS; /* mod_offline stores it */
}

static void message_held(mp_session *s, mp_stanza *msg, void *ud)
{
    (void)ud;
    const mp_jid *j = mp_session_jid(s);
    if (j->local)
        message_missed(msg, j->domain, j->local, j->bare);
}

/* An answer to a notification: an error other than 'wait' disables the
 * registration (XEP-0357 §8). */
static int iq_answer(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->id || !env->from.domain)
        return HOOK_PASS;
    struct pending *p = pending_take(env->id, env->from.full);
    if (!p)
        return HOOK_PASS;
    if (env->type == MP_TYPE_ERROR) {
        mp_xml *err = mp_xml_find(mp_stanza_root(st), "error", NULL);
        const char *type = err ? mp_xml_get_attr(err, "type") : NULL;
        if (!type || strcmp(type, "wait") != 0) {
            char bare[2 * MP_JID_PART_MAX + 2];
            snprintf(bare, sizeof bare, "%s@%s", p->user, p->host);
            mp_log(MP_LOG_INFO, "push: %s refused a notification for %s; registration removed",
                   p->app, bare);
            forget(bare, p->field);
            mp_map_del(p->host, STORE, p->user, p->field, NULL, NULL);
            mp_counter_add(c_disabled, 1);
        }
    }
    pending_free(p);
    return HOOK_HANDLED;
}

static void session_started(mp_session *s, void *ud)
{
    (void)ud;
    /* back online: the count of missed messages starts again */
    const mp_jid *j = mp_session_jid(s);
    pthread_mutex_lock(&lock);
    for (struct user_count **pp = &counts; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->bare, j->bare) == 0) {
            struct user_count *c = *pp;
            *pp = c->next;
            free(c->bare);
            free(c);
            break;
        }
    pthread_mutex_unlock(&lock);
}

static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    char bare[2 * MP_JID_PART_MAX + 2];
    snprintf(bare, sizeof bare, "%s@%s", user, domain);
    forget(bare, NULL);
    mp_map_del(domain, STORE, user, NULL, NULL, NULL);
}

static const struct mp_route_hooks route_hooks = {
    .message_offline = message_offline,
    .iq_result = iq_answer,
};

static const struct mp_notify notify = {
    .session_started = session_started,
    .account_deleted = account_deleted,
    .message_held = message_held,
};

static int load(mp_module *m)
{
    self = m;
    c_sent = mp_counter_new(m, "push_notifications_sent", "Notifications sent to app servers");
    c_coalesced = mp_counter_new(m, "push_notifications_coalesced",
                                 "Notifications left out by min_interval (counted in the next)");
    c_disabled = mp_counter_new(m, "push_registrations_disabled",
                                "Registrations removed after an app server's error");
    mp_disco_feature_add(m, MP_DISCO_ACCOUNT, NS_PUSH);
    mp_notify_add(m, &notify, NULL);
    /* after mod_blocking (10: a blocked sender notifies nobody), before
     * mod_offline (0), which takes the message */
    if (mp_route_hooks_add(m, &route_hooks, 5, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_SET, NS_PUSH, MP_IQ_ACCOUNT, push_set, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    pthread_mutex_lock(&lock);
    while (regs) {
        struct reg_state *r = regs;
        regs = r->next;
        reg_state_free(r);
    }
    while (counts) {
        struct user_count *c = counts;
        counts = c->next;
        free(c->bare);
        free(c);
    }
    while (pendings) {
        struct pending *p = pendings;
        pendings = p->next;
        pending_free(p);
    }
    pthread_mutex_unlock(&lock);
}

MP_MODULE_DECLARE("push", "XEP-0357 push notifications", options, load, unload, NULL);
