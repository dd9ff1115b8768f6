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
void mp_notify_presence_changed(mp_session *s, mp_stanza *presence, int available);
void mp_notify_account_deleted(const char *domain, const char *user);
/* The routing points of struct mp_route_hooks (module.h). */
enum mp_route_point {
    MP_ROUTE_MESSAGE_OFFLINE,
    MP_ROUTE_PRESENCE_SUBSCRIPTION,
    MP_ROUTE_PRESENCE_PROBE,
    MP_ROUTE_IQ_RESULT,
    MP_ROUTE_TO_HOST,
    MP_ROUTE_REMOTE,
    MP_ROUTE_MESSAGE_ACCOUNT,
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
/* Offers a top-level element a bound client sent (not message, presence
 * or iq; borrowed) to the module registered for its (ns, name):
 * HOOK_HANDLED, or HOOK_PASS when none is or it declined. */
int mp_stream_element_dispatch(mp_session *s, mp_stanza *el);
size_t mp_modules_count(void);
/* The module's slot in per-session data arrays. */
int mp_module_index(mp_module *m);
void mp_module_counters_write(struct evbuffer *out);

#endif
