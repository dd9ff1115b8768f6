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
 * has time bounds, routing hooks, stream elements, listeners with TLS, HTTP routes
 * 3: stream management (XEP-0198): struct mp_stream_mgmt, mp_session_manage,
 * mp_session_handled/received, mp_session_resume, mp_stream_element_add_unbound,
 * mp_notify.session_resumed, acknowledgement tokens (xml.h);
 * mp_archive_filter.with_has, mp_archive_count
 * 4: mp_route_hooks.iq_account (the struct grew); mp_storage_txn */
#define MP_MODULE_API_VERSION 4

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
 *   iq_account             an IQ request (get or set) to a local account's
 *                          bare JID from another entity, before the server
 *                          answers it on the account's behalf (RFC 6120
 *                          §10.3.3); HANDLED: taken (answered, dropped or
 *                          held and routed again later: as for
 *                          message_account); PASS: answered
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
    int (*iq_account)(mp_stanza *st, void *ud);
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
 *                     before the account's sessions are ended
 *   session_resumed   a detached session got a new connection (XEP-0198
 *                     resumption), on its worker, after the stream
 *                     management module's <resumed/> and resent stanzas:
 *                     state tied to the connection starts over (CSI: the
 *                     client is active again)
 *   message_held      a routed message (any type; borrowed, shared: read
 *                     only) was queued on a detached session, one whose
 *                     connection is gone while it waits to be resumed
 *                     (XEP-0198): the client will not see it until it
 *                     resumes (XEP-0357 push notifies here); on the
 *                     session's worker, after it is queued */
struct mp_notify {
    void (*session_started)(mp_session *s, void *ud);
    void (*session_ended)(mp_session *s, void *ud);
    void (*presence_changed)(mp_session *s, mp_stanza *presence, int available, void *ud);
    void (*account_deleted)(const char *domain, const char *user, void *ud);
    void (*session_resumed)(mp_session *s, void *ud);
    void (*message_held)(mp_session *s, mp_stanza *message, void *ud);
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

/* Same, for an element also accepted after authentication and before
 * resource binding (XEP-0198 <resume/>): fn then gets the not yet bound
 * session, whose mp_session_jid has no full JID (->full NULL). */
int mp_stream_element_add_unbound(mp_module *m, const char *ns, const char *name,
                                  mp_stream_element_fn fn, void *ud);

/* ---- stream management (XEP-0198) ----
 * What a stream management module needs from the stream; one module may
 * register (mp_stream_mgmt_set, in load). Per session it is off until the
 * module calls mp_session_manage (on <enable/>); from then on:
 *   sent      every stanza (message, presence, iq) written to the
 *             session's connection, or given to it while it is detached
 *             (then nothing is written: the module keeps it and sends it
 *             again after a resume), in order, on the session's worker;
 *             st borrowed (take a reference to keep it). Stream elements
 *             (nonzas) are not reported. Returns MP_FILTER_PASS (written
 *             as usual) or MP_FILTER_STOP: not written now, the module
 *             keeps it and sends it itself later (while a <resumed/> waits).
 *   handled   the count of the client's stanzas handled (mp_session_handled)
 *             advanced after a deferred acknowledgement completed
 *             (mp_stanza_defer_ack): time to send an <a/> that is owed.
 *   resumed   mp_session_resume succeeded: s (detached until now) has the
 *             new connection, on the connection's worker; runs before
 *             anything else is written to it. arg is the caller's. (The
 *             module may wait for `handled` before it answers <resumed/>:
 *             `sent` returning MP_FILTER_STOP holds stanzas meanwhile.)
 *   closing   the stream of s is being closed (by either side) while s
 *             is bound: nothing more is written to it, and it ends once
 *             the connection is gone (session_ended follows, up to a few
 *             seconds later). Time to treat unacknowledged stanzas as
 *             undeliverable.
 *   resume_failed  mp_session_resume found no session to take over (gone,
 *             another account's, ended meanwhile): on from's worker, from
 *             still open and unbound (it may bind), or from NULL if it
 *             closed meanwhile. arg is the caller's. */
struct mp_stream_mgmt {
    int (*sent)(mp_session *s, mp_stanza *st, void *ud);
    void (*handled)(mp_session *s, uint32_t handled, void *ud);
    void (*resumed)(mp_session *s, void *arg, void *ud);
    void (*resume_failed)(mp_session *from, void *arg, void *ud);
    void (*closing)(mp_session *s, void *ud);
};
int mp_stream_mgmt_set(mp_module *m, const struct mp_stream_mgmt *h, void *ud);
/* On s's worker, s bound: starts stream management on s: the counts of
 * stanzas from the client start at 0 and `sent` runs for what is written.
 * resume_timeout > 0: when s loses its connection (EOF, error, timeout)
 * it is detached for that many seconds instead of ended: it stays bound
 * and available (no unavailable presence is broadcast), what is sent to
 * it goes to `sent`, and it ends (session_ended) if not resumed in time. */
void mp_session_manage(mp_session *s, double resume_timeout);
/* Stanzas from the client since mp_session_manage that are handled, mod
 * 2^32: a prefix of what it sent, each routed and made durable where a
 * module deferred its acknowledgement. *all (if not NULL) is set to 1
 * when every stanza received so far is handled. */
uint32_t mp_session_handled(mp_session *s, int *all);
/* Stanzas received from the client since mp_session_manage, mod 2^32
 * (handled or not yet): an <a/> owed for an <r/> covers this many. */
uint32_t mp_session_received(mp_session *s);
/* On from's worker, from authenticated and not bound: the session of the
 * same account bound to full JID `full` with id `id` takes over from's
 * connection (wherever it runs; its old connection, if still open, gets
 * a closing tag and is dropped). Then `resumed` or `resume_failed` runs
 * once with arg. MAGPIE_OK (under way), or MAGPIE_NOTFOUND when no such
 * session is known (nothing runs: answer at once). */
int mp_session_resume(mp_session *from, const char *full, uint64_t id, void *arg);

/* ---- IQs before authentication ----
 * XEP-0077 lets a client create an account on a stream it has not
 * authenticated yet. A module that registers namespace ns here gets IQ
 * get/set requests whose one child is in ns from unauthenticated client
 * streams (after STARTTLS where TLS is required); nothing else passes
 * before authentication (any other stanza still closes the stream with
 * not-authorized). Such IQs are parsed under the pre-auth size limits and
 * each one is counted against the per-address connection rate (beyond it
 * the core answers wait/resource-constraint itself). fn runs on the
 * stream's worker with the IQ borrowed, host the stream's virtual host and
 * addr the client's address key (its IP address, "local" when it has
 * none), both valid during the call. It answers exactly once by
 * mp_session_send(s, reply): now, or later after finding the stream again
 * with mp_session_find_stream(id). One handler per namespace: MAGPIE_OK or
 * MAGPIE_ERR (taken, or invalid). */
typedef void (*mp_preauth_iq_fn)(mp_session *s, mp_stanza *iq, const char *host, const char *addr,
                                 void *ud);
int mp_preauth_iq_register(mp_module *m, const char *ns, mp_preauth_iq_fn fn, void *ud);

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

/* Node-specific disco (XEP-0030 §3.2, §4.2): a query with a node attribute
 * is offered to the handlers of its scope in the order added; fn answers
 * (mp_iq_reply) and returns HOOK_HANDLED, or returns HOOK_PASS for a node
 * it does not know (nobody: item-not-found). items is 1 for disco#items,
 * 0 for disco#info. mod_adhoc serves the commands node this way. */
typedef int (*mp_disco_node_fn)(mp_stanza *iq, const char *node, int items, void *ud);
int mp_disco_node_add(mp_module *m, enum mp_disco_scope scope, mp_disco_node_fn fn, void *ud);
/* For mod_disco: offers iq to the node handlers; HOOK_HANDLED or HOOK_PASS. */
int mp_disco_node_dispatch(enum mp_disco_scope scope, mp_stanza *iq, const char *node, int items);

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
/* The name of a module's service domain: configured (an option, may be
 * NULL or "") nameprepped, or "<label>.<first host>" ("conference",
 * "upload") when nothing is configured, into buf. MAGPIE_OK, or MAGPIE_ERR
 * (invalid, no host, too long: logged). */
int mp_service_domain_name(const char *configured, const char *label, char *buf, size_t len);
int mp_domain_iq_register(mp_domain *d, enum mp_iq_type type, const char *ns, mp_iq_fn fn,
                          void *ud);
int mp_domain_disco_identity(mp_domain *d, const char *category, const char *type,
                             const char *name);
int mp_domain_disco_feature(mp_domain *d, const char *var);
/* Adds a field var=value to the XEP-0128 extended-information form whose
 * FORM_TYPE is form_type in the domain's disco#info answer (XEP-0363's
 * max-file-size, say); fields of one form_type make one form. */
int mp_domain_disco_field(mp_domain *d, const char *form_type, const char *var, const char *value);
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
/* Account administration for modules (ad-hoc admin commands, in-band
 * registration). Asynchronous: the SCRAM derivation and the storage write
 * run off the event loop; cb(ud, rc) runs once on the caller's loop. They
 * return MAGPIE_OK when queued, MAGPIE_ERR when not (cb never called: a
 * user name Nodeprep or a password SASLprep refuses, a host not served).
 *   mp_account_create        rc MAGPIE_OK, MAGPIE_AGAIN (exists, left
 *                            unchanged) or MAGPIE_ERR (bad name or
 *                            password, storage)
 *   mp_account_set_password  MAGPIE_OK, MAGPIE_NOTFOUND or MAGPIE_ERR; the
 *                            new credentials apply to the next login
 *   mp_account_remove        MAGPIE_OK, MAGPIE_NOTFOUND or MAGPIE_ERR; on
 *                            MAGPIE_OK mp_account_deleted has run (the
 *                            account's sessions are ending)
 * user is the JID localpart (nodeprep'd here); password in UTF-8. */
typedef void (*mp_account_cb)(void *ud, int rc);
int mp_account_create(const char *host, const char *user, const char *password, mp_account_cb cb,
                      void *ud);
int mp_account_set_password(const char *host, const char *user, const char *password,
                            mp_account_cb cb, void *ud);
int mp_account_remove(const char *host, const char *user, mp_account_cb cb, void *ud);
/* 1 if jid's bare JID is in the configuration's `admins` list. */
int mp_is_admin(const mp_jid *jid);
/* Ends sessions (any thread): every session of a bare JID, or the one
 * bound to a full JID, with a stream error condition (NULL: a clean close)
 * and text. Returns how many sessions were told to end. */
size_t mp_sessions_end(const mp_jid *jid, const char *condition, const char *text);
/* Collects the full JIDs of every bound session of host (NULL: all
 * hosts) from every worker; cb(ud, jids, n) then runs once on the
 * caller's loop (jids valid during the call only, in no particular
 * order). Returns MAGPIE_OK, or MAGPIE_ERR (not called from a loop). */
int mp_sessions_list(const char *host, void (*cb)(void *ud, const char *const *jids, size_t n),
                     void *ud);
/* Calls fn for each locally available resource of bare JID (on the calling
 * thread, from a snapshot). */
void mp_sessions_foreach(const char *bare, void (*fn)(void *ud, const char *full, int priority),
                         void *ud);

/* ---- roster queries ----
 * The roster lives in one module (mod_roster); others (PEP's presence
 * access model and notifications) ask it through this typed query. The
 * roster module registers the provider; anyone calls mp_roster_contacts.
 * cb(ud, rc, contacts, n) runs once on the caller's loop (never inside
 * the call) with rc MAGPIE_OK and the account's roster items (contacts
 * valid during the callback only), or MAGPIE_ERR. mp_roster_contacts
 * returns MAGPIE_ERR (cb never called) when no roster module is loaded or
 * the query could not be queued. */
#define MP_SUB_TO   1u /* the user receives the contact's presence */
#define MP_SUB_FROM 2u /* the contact receives the user's presence */
struct mp_roster_contact {
    const char *jid;       /* contact's bare JID, normalised */
    unsigned subscription; /* MP_SUB_TO | MP_SUB_FROM bits (0: none) */
};
typedef void (*mp_roster_contacts_cb)(void *ud, int rc, const struct mp_roster_contact *contacts,
                                      size_t n);
typedef int (*mp_roster_contacts_fn)(const char *host, const char *user, mp_roster_contacts_cb cb,
                                     void *ud, void *provider_ud);
/* One provider at a time: MAGPIE_ERR when another module registered one. */
int mp_roster_provider_set(mp_module *m, mp_roster_contacts_fn fn, void *provider_ud);
int mp_roster_contacts(const char *host, const char *user, mp_roster_contacts_cb cb, void *ud);

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
/* Like mp_session_find, but also finds a stream of the calling worker
 * that is not bound yet (one that sent a pre-auth IQ,
 * mp_preauth_iq_register); NULL once it has ended or is closing. */
mp_session *mp_session_find_stream(uint64_t id);
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
/* The server's state directory (config `state_dir`): where a module keeps
 * files of its own, in a subdirectory named after it. Lives as long as the
 * configuration. */
const char *mp_state_dir(void);
/* Returns a new random id string (hex, NUL-terminated) in buf (>= 17 bytes). */
void mp_random_id(char *buf, size_t len);

#endif
