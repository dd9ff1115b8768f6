/* core/modules.h - the module loader and the registries modules fill. */
#ifndef MAGPIE_CORE_MODULES_H
#define MAGPIE_CORE_MODULES_H

#include <magpie/module.h>
#include "conf/config.h"

int mp_modules_load(const struct mp_config *cfg);
void mp_modules_unload(void);
/* Runs hook handlers; returns HOOK_HANDLED or HOOK_PASS. */
int mp_hook_run(const char *hook, mp_session *s, mp_stanza *st, void *data);
/* Runs every handler of a hook whatever they return (notifications). */
void mp_hook_run_all(const char *hook, mp_session *s, mp_stanza *st, void *data);
/* Runs the filters of dir (then, inbound, the "stanza-in" hook) on st
 * (borrowed); MP_FILTER_PASS or MP_FILTER_STOP. */
int mp_filters_run(enum mp_filter_dir dir, mp_session *s, mp_stanza *st);
/* Typed notifications (module.h, struct mp_notify), then the string hook
 * of the same name where one exists; every subscriber is called. */
void mp_notify_session_started(mp_session *s);
void mp_notify_session_ended(mp_session *s);
void mp_notify_session_resumed(mp_session *s);
void mp_notify_presence_changed(mp_session *s, mp_stanza *presence, int available);
void mp_notify_account_deleted(const char *domain, const char *user);
/* An ad-hoc command as registered (mp_adhoc_command_add); module.c keeps
 * them, adhoc.c runs them. Registered in load() only, read afterwards. */
struct mp_adhoc_cmd {
    char *node, *name;
    enum mp_adhoc_access access;
    mp_adhoc_fn fn;
    void *ud;
    mp_module *m;
    int (*allow)(const mp_jid *requester, void *ud); /* optional widening */
    void *allow_ud;
};
const struct mp_adhoc_cmd *mp_adhoc_cmd_find(const char *node);
/* The i-th command, or NULL past the last. */
const struct mp_adhoc_cmd *mp_adhoc_cmd_nth(size_t i);
/* adhoc.c: frees the execution sessions (shutdown: after the workers,
 * before the modules, whose code frees their sessions' state). */
void mp_adhoc_sessions_free(void);
void mp_notify_message_held(mp_session *s, mp_stanza *message);
/* The routing points of struct mp_route_hooks (module.h). */
enum mp_route_point {
    MP_ROUTE_MESSAGE_OFFLINE,
    MP_ROUTE_PRESENCE_SUBSCRIPTION,
    MP_ROUTE_PRESENCE_PROBE,
    MP_ROUTE_IQ_RESULT,
    MP_ROUTE_TO_HOST,
    MP_ROUTE_REMOTE,
    MP_ROUTE_MESSAGE_ACCOUNT,
    MP_ROUTE_IQ_ACCOUNT,
};
/* Offers st (borrowed) to the handlers of point p, then to the string hook
 * of the same name; HOOK_HANDLED or HOOK_PASS. */
int mp_route_hooks_run(enum mp_route_point p, mp_session *s, mp_stanza *st);
/* True if some module handles point p (lets the router skip work). */
int mp_route_hooks_any(enum mp_route_point p);
/* The module-served domain named name (normalised), or NULL. */
mp_domain *mp_domain_find(const char *name);
/* Offers st (borrowed) to d on the calling worker: its IQ handlers, its
 * disco#info answer, then its handler. HOOK_HANDLED (*reply, if set, is a
 * new answer for the caller to route) or HOOK_PASS. */
int mp_domain_dispatch(mp_domain *d, mp_stanza *st, mp_stanza **reply);
/* Finds the IQ handler for (type, ns, scope); returns MAGPIE_OK and calls it,
 * or MAGPIE_NOTFOUND. Does not take iq (handler gets a borrowed ref). */
int mp_iq_dispatch(mp_stanza *iq, enum mp_iq_scope scope);
void mp_stream_features_add(mp_session *s, mp_stanza *st, mp_xml *features,
                            enum mp_feature_stage stage);
/* Offers a top-level element an authenticated client sent (not message,
 * presence or iq; borrowed) to the module registered for its (ns, name):
 * HOOK_HANDLED, or HOOK_PASS when none is, it declined, or s is not bound
 * (bound 0) and the element is not one accepted before binding. */
int mp_stream_element_dispatch(mp_session *s, mp_stanza *el, int bound);
/* The stream management module's hooks (struct mp_stream_mgmt); no-ops
 * when no module registered them. */
int mp_sm_sent(mp_session *s, mp_stanza *st);
void mp_sm_handled(mp_session *s, uint32_t handled);
void mp_sm_resumed(mp_session *s, void *arg);
void mp_sm_resume_failed(mp_session *from, void *arg);
void mp_sm_closing(mp_session *s);
/* Offers an IQ get/set (borrowed, exactly one child element) from an
 * unauthenticated stream to the module registered for its child's
 * namespace (mp_preauth_iq_register): HOOK_HANDLED (the module answers),
 * or HOOK_PASS when none is. */
int mp_preauth_iq_known(const char *ns); /* 1 if a module registered ns */
int mp_preauth_iq_dispatch(mp_session *s, mp_stanza *iq, const char *host, const char *addr);
size_t mp_modules_count(void);
/* The module's slot in per-session data arrays. */
int mp_module_index(mp_module *m);
void mp_module_counters_write(struct evbuffer *out);

#endif
