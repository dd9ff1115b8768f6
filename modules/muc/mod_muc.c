/* mod_muc - XEP-0045 Multi-User Chat, as a service domain.
 *
 * Serves `domain` (default conference.<first virtual host>): rooms are
 * room@domain, occupants room@domain/nick. This file holds the module's
 * descriptor and options, the dispatch of the domain's stanzas to rooms,
 * the room directory, the service's disco, and the tracking of the rooms
 * each session has joined, so that a session that ends (or goes
 * unavailable) leaves them: the core does not remember directed presence,
 * so the module notes every presence a client sends to the domain (an
 * inbound filter on the client's worker) and sends the unavailable
 * presence itself. As a second line, a groupchat message that bounces
 * from an occupant removes it (XEP-0045 §7.2.x / §18: errors from
 * occupants). See muc.h for the files and the threading rules. */
#include "muc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mp_module *muc_self;
static mp_domain *dom;
static char domain_name[1024];

const char *muc_domain(void)
{
    return domain_name;
}

long muc_opt_history_max(void)
{
    return (long)mp_module_opt_int(muc_self, "history_max");
}

void muc_config_defaults(struct muc_config *c)
{
    memset(c, 0, sizeof *c);
    c->persistent = mp_module_opt_bool(muc_self, "default_persistent");
    c->public_ = mp_module_opt_bool(muc_self, "default_public");
    c->members_only = mp_module_opt_bool(muc_self, "default_members_only");
    c->moderated = mp_module_opt_bool(muc_self, "default_moderated");
    c->whois_anyone = strcmp(mp_module_opt_str(muc_self, "default_whois"), "anyone") == 0;
    c->change_subject = mp_module_opt_bool(muc_self, "default_change_subject");
    c->allow_invites = mp_module_opt_bool(muc_self, "default_allow_invites");
    c->allow_pm = 1;
    c->max_users = (long)mp_module_opt_int(muc_self, "default_max_users");
    c->history_len = (long)mp_module_opt_int(muc_self, "default_history");
    c->mam = mp_module_opt_bool(muc_self, "default_mam");
    if (c->history_len > muc_opt_history_max())
        c->history_len = muc_opt_history_max();
}

int muc_may_create(const mp_jid *user)
{
    const char *who = mp_module_opt_str(muc_self, "create_rooms");
    if (strcmp(who, "anyone") == 0)
        return 1;
    if (strcmp(who, "local") == 0)
        return user->domain && mp_host_is_local(user->domain);
    return 0;
}

/* ---- the room directory ----
 * A chained hash table of rooms by localpart, shared by every worker under
 * one mutex, held only to find, add or remove a room and to read or write
 * its summary (what disco#items shows). A room's own state is only
 * touched by its worker. */
struct dir_entry {
    struct muc_room *room;
    char *name; /* summary: room name */
    int listed; /* summary: public and not locked */
    struct dir_entry *next;
};

static pthread_mutex_t dir_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dir_entry **dir_buckets;
static size_t dir_nbuckets, dir_count;

static size_t dir_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static struct dir_entry **dir_slot(const char *node)
{
    struct dir_entry **e = &dir_buckets[dir_hash(node) % dir_nbuckets];
    while (*e && strcmp((*e)->room->node, node) != 0)
        e = &(*e)->next;
    return e;
}

static void dir_grow(void)
{
    size_t n = dir_nbuckets ? dir_nbuckets * 2 : 64;
    struct dir_entry **b = mp_calloc(n, sizeof *b);
    for (size_t i = 0; i < dir_nbuckets; i++)
        for (struct dir_entry *e = dir_buckets[i], *next; e; e = next) {
            next = e->next;
            size_t k = dir_hash(e->room->node) % n;
            e->next = b[k];
            b[k] = e;
        }
    free(dir_buckets);
    dir_buckets = b;
    dir_nbuckets = n;
}

struct muc_room *muc_room_get(const char *node)
{
    pthread_mutex_lock(&dir_lock);
    struct muc_room *r = NULL;
    if (dir_nbuckets) {
        struct dir_entry *e = *dir_slot(node);
        r = e ? e->room : NULL;
    }
    pthread_mutex_unlock(&dir_lock);
    return r;
}

static void summary_locked(struct dir_entry *e)
{
    struct muc_room *r = e->room;
    free(e->name);
    e->name = mp_strdup(r->cfg.name && *r->cfg.name ? r->cfg.name : NULL);
    e->listed = r->cfg.public_ && !r->locked;
}

void muc_room_put(struct muc_room *r)
{
    pthread_mutex_lock(&dir_lock);
    if (dir_count + 1 > dir_nbuckets)
        dir_grow();
    struct dir_entry **slot = dir_slot(r->node);
    if (!*slot) {
        struct dir_entry *e = mp_calloc(1, sizeof *e);
        e->room = r;
        *slot = e;
        dir_count++;
    }
    summary_locked(*slot);
    pthread_mutex_unlock(&dir_lock);
}

void muc_room_summary(struct muc_room *r)
{
    pthread_mutex_lock(&dir_lock);
    struct dir_entry *e = dir_nbuckets ? *dir_slot(r->node) : NULL;
    if (e && e->room == r)
        summary_locked(e);
    pthread_mutex_unlock(&dir_lock);
}

void muc_room_drop(struct muc_room *r)
{
    pthread_mutex_lock(&dir_lock);
    struct dir_entry **slot = dir_nbuckets ? dir_slot(r->node) : NULL;
    if (slot && *slot && (*slot)->room == r) {
        struct dir_entry *e = *slot;
        *slot = e->next;
        free(e->name);
        free(e);
        dir_count--;
    }
    pthread_mutex_unlock(&dir_lock);
}

/* ---- the service's own IQs ---- */

static void service_disco_info(mp_stanza *iq)
{
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    if (mp_xml_get_attr(q, "node")) {
        mp_iq_reply_error(iq, "cancel", "item-not-found");
        return;
    }
    mp_stanza *r = mp_iq_result(iq);
    mp_xml *rq = mp_xml_add_child(r, mp_stanza_root(r), "query", NS_DISCO_INFO);
    mp_xml *id = mp_xml_add_child(r, rq, "identity", NULL);
    mp_xml_set_attr(r, id, "category", "conference");
    mp_xml_set_attr(r, id, "type", "text");
    mp_xml_set_attr(r, id, "name", mp_module_opt_str(muc_self, "name"));
    static const char *const feats[] = {
        NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC,
        NS_PING,       NS_OCCUPANT_ID, "http://jabber.org/protocol/muc#self-ping-optimization"};
    for (size_t i = 0; i < sizeof feats / sizeof *feats; i++)
        mp_xml_set_attr(r, mp_xml_add_child(r, rq, "feature", NULL), "var", feats[i]);
    mp_iq_reply(r);
}

static void service_disco_items(mp_stanza *iq)
{
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    if (mp_xml_get_attr(q, "node")) {
        mp_iq_reply_error(iq, "cancel", "item-not-found");
        return;
    }
    mp_stanza *r = mp_iq_result(iq);
    mp_xml *rq = mp_xml_add_child(r, mp_stanza_root(r), "query", NS_DISCO_ITEMS);
    pthread_mutex_lock(&dir_lock);
    for (size_t i = 0; i < dir_nbuckets; i++)
        for (struct dir_entry *e = dir_buckets[i]; e; e = e->next) {
            if (!e->listed)
                continue;
            mp_xml *it = mp_xml_add_child(r, rq, "item", NULL);
            mp_xml_set_attr(r, it, "jid", e->room->jid);
            mp_xml_set_attr(r, it, "name", e->name ? e->name : e->room->node);
        }
    pthread_mutex_unlock(&dir_lock);
    mp_iq_reply(r);
}

/* The room an IQ is for (its bare 'to'), or NULL after answering
 * item-not-found. */
static struct muc_room *iq_room(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    struct muc_room *r = muc_room_get(env->to.local);
    if (!r)
        mp_iq_reply_error(iq, "cancel", "item-not-found");
    return r;
}

static void on_disco_info(mp_stanza *iq, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    if (!env->to.local) {
        service_disco_info(iq);
        return;
    }
    struct muc_room *r = iq_room(iq);
    if (!r)
        return;
    if (env->to.resource)
        muc_room_iq_other(r, iq);
    else
        muc_room_disco_info(r, iq);
}

static void on_disco_items(mp_stanza *iq, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    if (!env->to.local) {
        service_disco_items(iq);
        return;
    }
    struct muc_room *r = iq_room(iq);
    if (!r)
        return;
    if (env->to.resource)
        muc_room_iq_other(r, iq);
    else
        muc_room_disco_items(r, iq);
}

static void on_ping(mp_stanza *iq, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    if (!env->to.local) {
        mp_iq_reply(mp_iq_result(iq));
        return;
    }
    struct muc_room *r = muc_room_get(env->to.local);
    if (!r) {
        /* XEP-0410: not joined (the room does not even exist) */
        mp_iq_reply_error(iq, "cancel", env->to.resource ? "not-acceptable" : "item-not-found");
        return;
    }
    if (env->to.resource)
        muc_room_ping(r, iq);
    else
        mp_iq_reply(mp_iq_result(iq));
}

/* muc#admin and muc#owner: to a room's bare JID only. */
static struct muc_room *admin_room(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    if (!env->to.local || env->to.resource) {
        if (env->to.local && env->to.resource) {
            struct muc_room *r = muc_room_get(env->to.local);
            if (r) {
                muc_room_iq_other(r, iq);
                return NULL;
            }
        }
        mp_iq_reply_error(iq, "cancel",
                          env->to.local ? "item-not-found" : "feature-not-implemented");
        return NULL;
    }
    return iq_room(iq);
}

/* An IQ to a room's bare JID handled by one of the room's functions
 * (ud: its struct room_iq): muc#admin, muc#owner, XEP-0313, XEP-0425. */
struct room_iq {
    void (*fn)(struct muc_room *r, mp_stanza *iq);
};

static const struct room_iq admin_get = {muc_admin_get}, admin_set = {muc_admin_set},
                            owner_get = {muc_owner_get}, owner_set = {muc_owner_set},
                            mam_query = {muc_mam_query}, mam_get = {muc_mam_get},
                            moderate = {muc_moderate}, register_get = {muc_register_get},
                            register_set = {muc_register_set};

static void on_room_iq(mp_stanza *iq, void *ud)
{
    const struct room_iq *h = ud;
    struct muc_room *r = admin_room(iq);
    if (r)
        h->fn(r, iq);
}

/* ---- everything else sent to the domain ---- */

static int on_stanza(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (!env->from.domain || env->from_bad)
        return HOOK_PASS;
    if (!env->to.local)
        return HOOK_PASS; /* the service itself takes no messages or presence */
    struct muc_room *r = muc_room_get(env->to.local);
    switch (env->kind) {
    case MP_KIND_PRESENCE:
        if (r)
            muc_room_presence(r, st);
        else if (env->type == MP_TYPE_NONE && env->to.resource)
            muc_room_create_join(env->to.local, st);
        else if (env->type == MP_TYPE_NONE)
            muc_error(st, "modify", "jid-malformed", "A nickname is required to enter a room");
        return HOOK_HANDLED;
    case MP_KIND_MESSAGE:
        if (r)
            muc_room_message(r, st);
        else if (env->type != MP_TYPE_ERROR)
            muc_error(st, "cancel", "item-not-found", NULL);
        return HOOK_HANDLED;
    case MP_KIND_IQ:
        if (r) {
            muc_room_iq_other(r, st);
            return HOOK_HANDLED;
        }
        if (env->type == MP_TYPE_GET || env->type == MP_TYPE_SET) {
            mp_iq_reply_error(st, "cancel", "item-not-found");
            return HOOK_HANDLED;
        }
        return HOOK_PASS;
    default:
        return HOOK_PASS;
    }
}

/* ---- sessions: which rooms has each session entered? ----
 * Kept on the session's worker (the inbound filter and the notifications
 * run there): the occupant JIDs the client last sent available presence
 * to, one per room. */
struct joined {
    char **to; /* room@domain/nick */
    size_t n;
};

static size_t bare_len(const char *full)
{
    const char *slash = strchr(full, '/');
    return slash ? (size_t)(slash - full) : strlen(full);
}

static int track(mp_session *s, mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind != MP_KIND_PRESENCE || !env->to.domain || !env->to.local ||
        strcmp(env->to.domain, domain_name) != 0)
        return MP_FILTER_PASS;
    if (env->type != MP_TYPE_NONE && env->type != MP_TYPE_UNAVAILABLE)
        return MP_FILTER_PASS;
    struct joined *j = mp_session_data(s, muc_self);
    size_t bl = strlen(env->to.bare), i;
    for (i = 0; j && i < j->n; i++)
        if (bare_len(j->to[i]) == bl && strncmp(j->to[i], env->to.bare, bl) == 0)
            break;
    if (env->type == MP_TYPE_UNAVAILABLE) {
        if (j && i < j->n) {
            free(j->to[i]);
            j->to[i] = j->to[--j->n];
        }
        return MP_FILTER_PASS;
    }
    if (!env->to.resource)
        return MP_FILTER_PASS;
    if (!j) {
        j = mp_calloc(1, sizeof *j);
        mp_session_set_data(s, muc_self, j);
    }
    if (i < j->n) {
        free(j->to[i]);
    } else {
        char **v = mp_realloc(j->to, (j->n + 1) * sizeof *v);
        j->to = v;
        i = j->n++;
    }
    j->to[i] = mp_strdup(env->to.full);
    return MP_FILTER_PASS;
}

/* Sends unavailable presence from the session to every room it entered
 * (RFC 6121 §4.6.3 for directed presence) and forgets them. */
static void leave_all(mp_session *s)
{
    struct joined *j = mp_session_data(s, muc_self);
    const mp_jid *me = mp_session_jid(s);
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++) {
        mp_stanza *p = mp_stanza_new("presence", MP_NS_CLIENT);
        mp_xml *root = mp_stanza_root(p);
        mp_xml_set_attr(p, root, "type", "unavailable");
        mp_xml_set_attr(p, root, "from", me->full);
        mp_xml_set_attr(p, root, "to", j->to[i]);
        mp_route(p);
        free(j->to[i]);
    }
    j->n = 0;
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    struct joined *j = mp_session_data(s, muc_self);
    if (!j)
        return;
    leave_all(s);
    free(j->to);
    free(j);
    mp_session_set_data(s, muc_self, NULL);
}

static void presence_changed(mp_session *s, mp_stanza *p, int available, void *ud)
{
    (void)p;
    (void)ud;
    if (!available)
        leave_all(s);
}

static const struct mp_notify notify = {
    .session_ended = session_ended,
    .presence_changed = presence_changed,
};

/* ---- load / unload ---- */

static int load(mp_module *m)
{
    muc_self = m;
    if (mp_service_domain_name(mp_module_opt_str(m, "domain"), "conference", domain_name,
                               sizeof domain_name) != MAGPIE_OK)
        return MAGPIE_ERR;
    const char *who = mp_module_opt_str(m, "create_rooms");
    if (strcmp(who, "anyone") != 0 && strcmp(who, "local") != 0 && strcmp(who, "nobody") != 0) {
        mp_log(MP_LOG_ERROR, "muc: create_rooms must be \"anyone\", \"local\" or \"nobody\"");
        return MAGPIE_ERR;
    }
    const char *whois = mp_module_opt_str(m, "default_whois");
    if (strcmp(whois, "anyone") != 0 && strcmp(whois, "moderators") != 0) {
        mp_log(MP_LOG_ERROR, "muc: default_whois must be \"anyone\" or \"moderators\"");
        return MAGPIE_ERR;
    }
    dom = mp_domain_add(m, domain_name, on_stanza, NULL);
    if (!dom) {
        mp_log(MP_LOG_ERROR, "muc: cannot serve %s (a virtual host, or taken)", domain_name);
        return MAGPIE_ERR;
    }
    /* clients find the service in the server's disco#items (XEP-0045 §6.1) */
    mp_disco_item_add(m, MP_DISCO_SERVER, domain_name, mp_module_opt_str(m, "name"));
    if (mp_domain_iq_register(dom, MP_IQ_GET, NS_DISCO_INFO, on_disco_info, NULL) != MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_GET, NS_DISCO_ITEMS, on_disco_items, NULL) != MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_GET, NS_PING, on_ping, NULL) != MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_GET, NS_MUC_ADMIN, on_room_iq, (void *)&admin_get) !=
            MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_SET, NS_MUC_ADMIN, on_room_iq, (void *)&admin_set) !=
            MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_GET, NS_MUC_OWNER, on_room_iq, (void *)&owner_get) !=
            MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_SET, NS_MUC_OWNER, on_room_iq, (void *)&owner_set) !=
            MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_SET, NS_MAM, on_room_iq, (void *)&mam_query) !=
            MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_GET, NS_MAM, on_room_iq, (void *)&mam_get) != MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_SET, NS_MODERATE, on_room_iq, (void *)&moderate) !=
            MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_GET, NS_REGISTER, on_room_iq, (void *)&register_get) !=
            MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_SET, NS_REGISTER, on_room_iq, (void *)&register_set) !=
            MAGPIE_OK)
        return MAGPIE_ERR;
    mp_filter_add(m, MP_FILTER_IN, 0, track, NULL);
    mp_notify_add(m, &notify, NULL);
    muc_store_load_all();
    mp_log(MP_LOG_INFO, "muc: serving %s (%zu stored rooms)", domain_name, dir_count);
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    for (size_t i = 0; i < dir_nbuckets; i++)
        for (struct dir_entry *e = dir_buckets[i], *next; e; e = next) {
            next = e->next;
            muc_room_free(e->room);
            free(e->name);
            free(e);
        }
    free(dir_buckets);
    dir_buckets = NULL;
    dir_nbuckets = dir_count = 0;
}

static const struct mp_option options[] = {
    {"domain", MP_OPT_STRING, "", "The MUC service's domain (empty: conference.<first host>)", 0,
     0},
    {"name", MP_OPT_STRING, "Chatrooms", "Name in the service's disco identity", 0, 0},
    {"create_rooms", MP_OPT_STRING, "local",
     "Who may create rooms: \"anyone\", \"local\" (accounts of this server) or \"nobody\"", 0, 0},
    {"lock_new_rooms", MP_OPT_BOOL, "true",
     "A new room stays locked until its owner configures it or accepts the defaults (XEP-0045 "
     "10.1)",
     0, 0},
    {"history_max", MP_OPT_INT, "50", "Most messages a room may keep for newcomers", 0, 1000},
    {"default_history", MP_OPT_INT, "20", "Messages a new room keeps for newcomers", 0, 1000},
    {"default_public", MP_OPT_BOOL, "true", "New rooms are listed in disco#items", 0, 0},
    {"default_persistent", MP_OPT_BOOL, "false", "New rooms outlive their last occupant", 0, 0},
    {"default_members_only", MP_OPT_BOOL, "false", "New rooms admit members only", 0, 0},
    {"default_moderated", MP_OPT_BOOL, "false", "New rooms give visitors no voice", 0, 0},
    {"default_whois", MP_OPT_STRING, "moderators",
     "Who sees occupants' real JIDs in new rooms: \"moderators\" or \"anyone\"", 0, 0},
    {"default_change_subject", MP_OPT_BOOL, "false", "Participants may change the subject", 0, 0},
    {"default_allow_invites", MP_OPT_BOOL, "true", "Occupants may invite others", 0, 0},
    {"default_max_users", MP_OPT_INT, "200", "Occupants per new room (0: no limit)", 0, 100000},
    {"default_mam", MP_OPT_BOOL, "true",
     "New rooms archive their messages (XEP-0313 on the room's JID; room option "
     "muc#roomconfig_enablearchiving)",
     0, 0},
    {"mam_page_max", MP_OPT_INT, "100", "Most archived messages one XEP-0313 query returns", 1,
     1000},
    {"allow_register", MP_OPT_BOOL, "true",
     "Users may register with rooms (XEP-0045 7.10): they become members and reserve a nick", 0, 0},
    {"mam_max_messages", MP_OPT_INT, "10000",
     "Most messages a room's archive keeps; the oldest go (0: no limit)", 0, 100000000},
    {"mam_retention_days", MP_OPT_INT, "0",
     "Days a room's archived messages are kept (0: for ever)", 0, 36500},
    {NULL, 0, NULL, NULL, 0, 0},
};

MP_MODULE_DECLARE("muc", "XEP-0045 Multi-User Chat", options, load, unload, NULL);
