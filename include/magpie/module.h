/* module.h - what a loadable module sees of the core.
 *
 * A module is a shared object exporting one const descriptor:
 *
 *   static const struct mp_option opts[] = {
 *       { "interval", MP_OPT_INT, "60", "Seconds of silence before a ping", 1, 86400 },
 *       { NULL }
 *   };
 *   MP_MODULE_DECLARE("ping", "XEP-0199 XMPP Ping", opts, load, NULL, NULL);
 *
 * The loader checks api_version before calling into the module. In load()
 * the module registers hooks, IQ handlers, features and counters; the core
 * records every registration and undoes it on unload, so modules need no
 * unregister code. Handlers run on a worker thread; a session handle is
 * only valid on its own worker during the call (or a timer set with
 * mp_session_timer). */
#ifndef MAGPIE_MODULE_H
#define MAGPIE_MODULE_H

#include <stdint.h>
#include <magpie/xml.h>
#include <magpie/jid.h>

/* 2: layered core (2026-12-02): mp_xml_remove takes the stanza, mp_archive_filter
 * has time bounds, routing hooks, stream elements, listeners with TLS, HTTP routes */
#define MP_MODULE_API_VERSION 2

typedef struct mp_module mp_module;   /* a loaded module instance */
typedef struct mp_session mp_session; /* a client session (opaque) */

/* ---- options ---- */
enum mp_opt_type { MP_OPT_BOOL, MP_OPT_INT, MP_OPT_STRING };

struct mp_option {
    const char *name;
    enum mp_opt_type type;
    const char *def;    /* default, as it would be written in the config */
    const char *doc;    /* one line, copied into the generated config */
    long long min, max; /* MP_OPT_INT bounds (inclusive) */
};

/* ---- descriptor ---- */
struct mp_module_desc {
    unsigned api_version; /* MP_MODULE_API_VERSION */
    const char *name;     /* "ping" for mod_ping.so */
    const char *description;
    const struct mp_option *options; /* terminated by { NULL } or NULL */
    int (*load)(mp_module *m);       /* MAGPIE_OK / MAGPIE_ERR */
    void (*unload)(mp_module *m);    /* optional */
    int (*reload)(mp_module *m);     /* optional, options re-read */
};

#define MP_MODULE_DECLARE(name_, desc_, opts_, load_, unload_, reload_)                            \
    const struct mp_module_desc mp_module_descriptor = {                                           \
        MP_MODULE_API_VERSION, name_, desc_, opts_, load_, unload_, reload_}

/* Option values (validated by the core against the table; defaults apply). */
long long mp_module_opt_int(mp_module *m, const char *name);
int mp_module_opt_bool(mp_module *m, const char *name);
const char *mp_module_opt_str(mp_module *m, const char *name);
/* Private pointer for the module's own state. */
void mp_module_set_data(mp_module *m, void *data);
void *mp_module_data(mp_module *m);

/* ---- hooks ----
 * Named events run handlers in decreasing priority until one returns
 * HOOK_HANDLED. New code should prefer the typed filters and
 * notifications above: a misspelt hook name is never called. Core hooks:
 *   "session-started"   (session, NULL)  after resource binding
 *   "session-ended"     (session, NULL)  before the session is freed
 *   "stanza-in"         (session, stanza) every stanza from a client, after
 *                       'from' is stamped, before routing; HANDLED = consumed
 *   "message-offline"   (NULL, stanza) message for an account with no
 *                       available resource; HANDLED = stored (else bounced)
 *   "route-remote"      (NULL, stanza) stanza for a domain not hosted here;
 *                       HANDLED = taken (else remote-server-not-found)
 */
struct mp_hook_event {
    mp_session *session; /* may be NULL */
    mp_stanza *stanza;   /* may be NULL; borrowed: ref it to keep it */
    void *data;          /* hook-specific */
};
typedef int (*mp_hook_fn)(struct mp_hook_event *ev, void *ud);
int mp_hook_add(mp_module *m, const char *hook, int priority, mp_hook_fn fn, void *ud);

/* ---- routing hooks ----
 * Typed points where the router offers a stanza to modules before its own
 * handling (RFC 6120 §10, RFC 6121 §8). Handlers of one point run in
 * decreasing priority (equal: in the order added) until one returns
 * HOOK_HANDLED: the stanza is then the module's to answer. The stanza is
 * borrowed (take a reference to keep it). Fill the members you need and
 * leave the others NULL; h must stay valid while the module is loaded (a
 * static const struct). They run on the worker routing the stanza.
 *   message_offline        a message (normal or chat) to an account with
 *                          no available resource; PASS: service-unavailable
 *   presence_subscription  subscribe / subscribed / unsubscribe /
 *                          unsubscribed to an account's bare JID; PASS:
 *                          delivered to its resources
 *   presence_probe         a probe to an account's bare JID; PASS: dropped
 *   iq_result              an IQ result or error to a host or to an
 *                          account's bare JID (the answer to a request a
 *                          module sent); PASS: dropped
 *   to_host                a message or presence to a host itself; PASS:
 *                          dropped
 *   remote                 a stanza for a domain this server neither hosts
 *                          nor serves (federation attaches here); PASS:
 *                          remote-server-not-found
 *   message_account        every message (any type) routed to a local
 *                          account (bare or full JID), once, before the
 *                          delivery rules and before message_offline; the
 *                          stanza is unshared here, so the handler may
 *                          modify it (a XEP-0359 stanza-id). Runs on the
 *                          routing worker; not run again when a stanza
 *                          that could not reach a full JID falls back to
 *                          the bare JID. HANDLED: taken (a handler that
 *                          routes it again later must recognise it, or its
 *                          handler runs once more: the stanza it routes is
 *                          the one the handler gets, unless it is shared
 *                          then); PASS: delivered
 * The string hooks of the same names ("message-offline", ...) still run
 * after the typed handlers, for older modules. */
struct mp_route_hooks {
    int (*message_offline)(mp_stanza *st, void *ud);
    int (*presence_subscription)(mp_stanza *st, void *ud);
    int (*presence_probe)(mp_stanza *st, void *ud);
    int (*iq_result)(mp_stanza *st, void *ud);
    int (*to_host)(mp_stanza *st, void *ud);
    int (*remote)(mp_stanza *st, void *ud);
    int (*message_account)(mp_stanza *st, void *ud);
};
int mp_route_hooks_add(mp_module *m, const struct mp_route_hooks *h, int priority, void *ud);

/* ---- stanza filters ----
 * Typed, ordered, may stop a stanza (carbons, archiving, blocking,
 * stream-management counters attach here). Filters run on the session's
 * own worker, in decreasing priority (equal priorities: in the order
 * added), until one returns MP_FILTER_STOP.
 *   MP_FILTER_IN   every stanza from a bound client, 'from' stamped and
 *                  the envelope prepared, before routing. The stanza is
 *                  not shared yet: an inbound filter may modify it.
 *                  STOP: not routed (the filter answers if needed).
 *   MP_FILTER_OUT  every routed stanza about to be written to a session.
 *                  The stanza may be shared: do not modify it (send a
 *                  copy instead and STOP). STOP: not written, and counted
 *                  as delivered (no bounce, no offline storage).
 * The stanza is borrowed: take a reference to keep it. */
enum mp_filter_dir { MP_FILTER_IN = 0, MP_FILTER_OUT = 1 };
#define MP_FILTER_PASS 0
#define MP_FILTER_STOP 1
typedef int (*mp_filter_fn)(mp_session *s, mp_stanza *st, void *ud);
int mp_filter_add(mp_module *m, enum mp_filter_dir dir, int priority, mp_filter_fn fn, void *ud);

/* ---- notifications ----
 * Typed events that always reach every subscriber (nothing can stop them;
 * the order among subscribers is the order of subscription). Fill the
 * members you need and leave the others NULL; n must stay valid while the
 * module is loaded (a static const struct).
 *   session_started   after resource binding, on the session's worker
 *   session_ended     before the session is freed, on its worker
 *   presence_changed  a bound client sent presence without 'to'
 *                     (available = 0 for type='unavailable'), on its
 *                     worker, before it is broadcast
 *   account_deleted   an account was deleted (mp_account_deleted: by a
 *                     module, or by `magpiectl user del` through the
 *                     control socket), on the main or a worker thread,
 *                     before the account's sessions are ended */
struct mp_notify {
    void (*session_started)(mp_session *s, void *ud);
    void (*session_ended)(mp_session *s, void *ud);
    void (*presence_changed)(mp_session *s, mp_stanza *presence, int available, void *ud);
    void (*account_deleted)(const char *domain, const char *user, void *ud);
};
int mp_notify_add(mp_module *m, const struct mp_notify *n, void *ud);

/* ---- questions between modules ----
 * Typed queries one module answers for the others, so that neither links
 * the other: the answering module registers a static const struct with
 * the members it answers (mod_roster: roster_item), any module asks
 * through the mp_query_* function of the same name, which calls the first
 * registered answerer. Asynchronous: the answer comes once, on the
 * asker's loop.
 *   roster_item   the item for contact (a bare JID) in the roster of
 *                 user@host: rc MAGPIE_OK with its subscription ("none",
 *                 "to", "from", "both"; pending states are not shown),
 *                 MAGPIE_NOTFOUND (not in the roster), MAGPIE_ERR */
typedef void (*mp_roster_item_cb)(void *ud, int rc, const char *subscription);
struct mp_queries {
    int (*roster_item)(const char *host, const char *user, const char *contact,
                       mp_roster_item_cb cb, void *cb_ud, void *ud);
};
int mp_queries_add(mp_module *m, const struct mp_queries *q, void *ud);
/* Returns MAGPIE_OK when asked (cb will run once), MAGPIE_NOTFOUND when no
 * loaded module answers (cb never runs), MAGPIE_ERR when the answerer could
 * not queue the question (cb never runs). */
int mp_query_roster_item(const char *host, const char *user, const char *contact,
                         mp_roster_item_cb cb, void *ud);

/* ---- IQ handlers ----
 * Keyed by (type, namespace of the IQ's child element, scope): one hash
 * lookup per IQ. MP_IQ_SERVER handles IQs addressed to a hosted domain (or
 * with no 'to'); MP_IQ_ACCOUNT handles IQs addressed to a user's bare JID
 * (the server answers on the account's behalf). The handler must answer
 * exactly once, now or later, with mp_iq_reply or mp_iq_reply_error. */
enum mp_iq_type { MP_IQ_GET = 0, MP_IQ_SET = 1 };
enum mp_iq_scope { MP_IQ_SERVER = 0, MP_IQ_ACCOUNT = 1 };
typedef void (*mp_iq_fn)(mp_stanza *iq, void *ud);
int mp_iq_register(mp_module *m, enum mp_iq_type type, const char *ns, enum mp_iq_scope scope,
                   mp_iq_fn fn, void *ud);

/* Routes reply (ownership taken) back to the requester. */
void mp_iq_reply(mp_stanza *reply);
/* Answers request iq with an error (condition of RFC 6120 §8.3.3). Does not
 * take iq (it is copied). */
void mp_iq_reply_error(const mp_stanza *iq, const char *type, const char *condition);

/* ---- stream features and disco ---- */
enum mp_feature_stage { MP_FEATURES_PRE_AUTH = 0, MP_FEATURES_POST_AUTH = 1 };
/* fn adds its children to the <stream:features/> element. */
typedef void (*mp_feature_fn)(mp_session *s, mp_stanza *st, mp_xml *features, void *ud);
int mp_stream_feature_add(mp_module *m, enum mp_feature_stage stage, mp_feature_fn fn, void *ud);

/* ---- stream elements ("nonzas") ----
 * A module handles the top-level elements of one (namespace, local name)
 * that a bound client sends on its stream other than message, presence
 * and iq: XEP-0352's <active/>/<inactive/>, XEP-0198's <enable/>, <r/>,
 * <a/>. fn runs on the session's worker with the element borrowed (take a
 * reference to keep it); it returns HOOK_HANDLED, or HOOK_PASS to treat
 * the element as unknown: the stream is closed with
 * unsupported-stanza-type, as for any element no module handles. Input
 * filters do not see these elements. To answer, build the element
 * (mp_stanza_new(name, ns)) and mp_session_send it. One handler per
 * (ns, name); ns may not be jabber:client. Returns MAGPIE_OK or
 * MAGPIE_ERR (taken, or invalid). Advertise the feature with
 * mp_stream_feature_add(MP_FEATURES_POST_AUTH). */
typedef int (*mp_stream_element_fn)(mp_session *s, mp_stanza *el, void *ud);
int mp_stream_element_add(mp_module *m, const char *ns, const char *name, mp_stream_element_fn fn,
                          void *ud);

enum mp_disco_scope { MP_DISCO_SERVER = 0, MP_DISCO_ACCOUNT = 1 };
int mp_disco_feature_add(mp_module *m, enum mp_disco_scope scope, const char *var);
int mp_disco_identity_add(mp_module *m, enum mp_disco_scope scope, const char *category,
                          const char *type, const char *name);
/* Adds an item to the scope's disco#items (a service domain a module
 * serves, say: mod_muc lists its conference service). name may be NULL. */
int mp_disco_item_add(mp_module *m, enum mp_disco_scope scope, const char *jid, const char *name);
/* Iterates the registered features / identities / items of a scope (for
 * mod_disco). */
void mp_disco_features_foreach(enum mp_disco_scope scope, void (*fn)(void *ud, const char *var),
                               void *ud);
void mp_disco_identities_foreach(enum mp_disco_scope scope,
                                 void (*fn)(void *ud, const char *category, const char *type,
                                            const char *name),
                                 void *ud);
void mp_disco_items_foreach(enum mp_disco_scope scope,
                            void (*fn)(void *ud, const char *jid, const char *name), void *ud);

/* ---- service domains ----
 * A module serves a domain of its own (a MUC service, upload, the device
 * gateway, a component): every stanza whose 'to' has that domainpart
 * (domain, domain/res, node@domain, node@domain/res) comes to it.
 * Stanzas for one bare 'to' JID (one room, one device) always run on the
 * same worker, chosen by a hash of it, in arrival order per sender.
 * IQ get/set go first to the handlers registered for the domain
 * (mp_domain_iq_register, one hash lookup); a disco#info query with no
 * handler is answered from the domain's disco identities and features;
 * everything else goes to fn, which returns HOOK_HANDLED, or HOOK_PASS
 * to have the core bounce a request with service-unavailable. The stanza
 * is borrowed (take a reference to keep it). Domains are registered in
 * load() only, and must not be a virtual host. */
typedef struct mp_domain mp_domain;
typedef int (*mp_domain_fn)(mp_stanza *st, void *ud);
/* Returns the domain's handle, or NULL (invalid, a host, or taken). */
mp_domain *mp_domain_add(mp_module *m, const char *domain, mp_domain_fn fn, void *ud);
int mp_domain_iq_register(mp_domain *d, enum mp_iq_type type, const char *ns, mp_iq_fn fn,
                          void *ud);
int mp_domain_disco_identity(mp_domain *d, const char *category, const char *type,
                             const char *name);
int mp_domain_disco_feature(mp_domain *d, const char *var);
const char *mp_domain_name(const mp_domain *d);

/* ---- routing and hosts ---- */
/* Routes st (ownership taken) by its 'to' as if the server sent it; 'from'
 * must already be set. Safe from any worker thread. */
void mp_route(mp_stanza *st);
/* Tells the server that the account user@domain was just deleted from
 * storage (by a module: in-band registration, an admin command):
 * account_deleted notifications run, then every session of the account
 * ends with a not-authorized stream error. Any thread. */
void mp_account_deleted(const char *domain, const char *user);
/* True if domain (normalised) is a virtual host of this server. */
int mp_host_is_local(const char *domain);
/* The i-th virtual host of the configuration (normalised, in the order
 * configured), or NULL when i is past the last one. Lives as long as the
 * server's configuration (for good in load()). */
const char *mp_host_nth(size_t i);
/* Asynchronous check that the account user@host exists (host a virtual
 * host, user as in the JID's localpart): cb(ud, rc) runs once on the
 * caller's loop with MAGPIE_OK, MAGPIE_NOTFOUND or MAGPIE_ERR. Returns
 * MAGPIE_OK when the check was queued, MAGPIE_ERR when it was not (bad
 * name, storage closed: cb is then never called). Modules that keep data
 * for the recipient of a stanza (offline messages, subscription requests)
 * check first, so a stanza to a nonexistent account stores nothing. */
int mp_account_exists(const char *host, const char *user, void (*cb)(void *ud, int rc), void *ud);
/* Calls fn for each locally available resource of bare JID (on the calling
 * thread, from a snapshot). */
void mp_sessions_foreach(const char *bare, void (*fn)(void *ud, const char *full, int priority),
                         void *ud);

/* ---- sessions (only on the session's own worker) ---- */
const mp_jid *mp_session_jid(mp_session *s); /* full JID once bound */
/* A session's id: stable for its life, never reused. To keep work for a
 * session across an asynchronous call (storage, a timer of the module's
 * own), keep the id, not the pointer, and look it up again when the
 * callback runs on the session's worker (storage callbacks do):
 * mp_session_find returns the bound session with that id owned by the
 * calling worker, or NULL once it has ended (or is closing). */
uint64_t mp_session_id(mp_session *s);
mp_session *mp_session_find(uint64_t id);
/* Sends st to the client (ownership of the reference taken). */
void mp_session_send(mp_session *s, mp_stanza *st);
/* Seconds since the last byte was received from the client. */
double mp_session_idle_seconds(mp_session *s);
/* Closes the stream with a stream error condition (NULL: clean close). */
void mp_session_close(mp_session *s, const char *condition, const char *text);
/* Holds the session's input: once the stanza being handled is done,
 * nothing more the client sent is parsed until every hold is released
 * (holds are counted). For a module that must load per-user state before
 * it can judge what the client sends (a blocklist): hold in
 * session_started, release from the storage callback, on the session's
 * worker (find it again by id; a session that ended needs no release).
 * What the server sends to the session is not held. */
void mp_session_hold(mp_session *s);
void mp_session_release(mp_session *s);
/* Runs fn(s, ud) after secs seconds on the session's worker; repeat != 0
 * re-arms it with the same period. Returns a handle owned by the session
 * (freed automatically when the session ends), or NULL if the session is
 * gone. */
typedef void (*mp_session_timer_fn)(mp_session *s, void *ud);
typedef struct mp_timer mp_timer;
mp_timer *mp_session_timer(mp_session *s, double secs, int repeat, mp_session_timer_fn fn,
                           void *ud);
/* (Re)schedules a timer to fire once after secs seconds, replacing any
 * pending expiry: lets a module keep one timer per session and fire it
 * only when something is due. */
void mp_timer_set(mp_timer *t, double secs);
/* Per-session module data slot (freed by the module in session-ended). */
void mp_session_set_data(mp_session *s, mp_module *m, void *data);
void *mp_session_data(mp_session *s, mp_module *m);

/* ---- stats ---- */
typedef struct mp_counter mp_counter;
/* Registers a monotonically increasing counter shown by magpiectl status
 * and /metrics. */
mp_counter *mp_counter_new(mp_module *m, const char *name, const char *help);
void mp_counter_add(mp_counter *c, uint64_t n);

/* ---- misc ---- */
/* Returns a new random id string (hex, NUL-terminated) in buf (>= 17 bytes). */
void mp_random_id(char *buf, size_t len);

#endif
