/* mod_last - XEP-0012 Last Activity.
 *
 *   IQ get jabber:iq:last to a host (server scope): the server's uptime
 *     (seconds since this module was loaded, i.e. since start) (§5).
 *   IQ get jabber:iq:last to a user's bare JID (account scope, §4): asked
 *     by the user or by a JID whose item in the user's roster has a 'from'
 *     or 'both' subscription (the roster is read from mod_roster's map
 *     store "roster"); anyone else gets forbidden. If the user has an
 *     available resource the answer is 0 seconds; otherwise the seconds
 *     since the user's last resource became unavailable, with the status
 *     text of that unavailable presence; item-not-found when the user was
 *     never online since this module was installed.
 *   notifications: a session that goes from available to unavailable
 *     (unavailable presence, or a session that ends while available)
 *     records the time and status in the keyval store "last" (key =
 *     username, value "<unix seconds>\n<status>"); account_deleted drops
 *     it. Every such transition is written (stores keep the order of writes
 *     to one key), so the record is that of the last resource to leave. */
#include <magpie/magpie.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_LAST      "jabber:iq:last"
#define NS_ROSTER    "jabber:iq:roster"
#define STORE        "last"
#define ROSTER_STORE "roster"

static mp_module *self;
static time_t loaded_at;    /* CLOCK_MONOTONIC seconds */
static char available_mark; /* a session's data slot: &available_mark while available */

static time_t monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static mp_stanza *result_seconds(mp_stanza *iq, long long secs, const char *status)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", secs < 0 ? 0 : secs);
    mp_stanza *r = mp_iq_result(iq);
    mp_xml *q = mp_xml_add_child(r, mp_stanza_root(r), "query", NS_LAST);
    mp_xml_set_attr(r, q, "seconds", buf);
    if (status && *status)
        mp_xml_add_text(r, q, status, strlen(status));
    return r;
}

/* ---- recording ---- */

static void record(const mp_jid *j, const char *status)
{
    char head[32];
    int hl = snprintf(head, sizeof head, "%lld\n", (long long)time(NULL));
    size_t sl = status ? strlen(status) : 0;
    char *v = mp_malloc((size_t)hl + sl + 1);
    memcpy(v, head, (size_t)hl);
    if (sl)
        memcpy(v + hl, status, sl);
    mp_kv_set(j->domain, STORE, j->local, v, (size_t)hl + sl, NULL, NULL);
    free(v);
}

/* The session's data slot is &available_mark while it is available
 * (nothing is allocated per session). */
static void presence_changed(mp_session *s, mp_stanza *presence, int available, void *ud)
{
    (void)ud;
    if (available) {
        mp_session_set_data(s, self, &available_mark);
        return;
    }
    if (mp_session_data(s, self) != &available_mark)
        return;
    mp_session_set_data(s, self, NULL);
    mp_xml *st = mp_xml_find(mp_stanza_root(presence), "status", NULL);
    record(mp_session_jid(s), st ? mp_xml_text(presence, st) : NULL);
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    if (mp_session_data(s, self) != &available_mark)
        return;
    mp_session_set_data(s, self, NULL);
    record(mp_session_jid(s), NULL);
}

static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    mp_kv_del(domain, STORE, user, NULL, NULL);
}

static const struct mp_notify notify = {
    .presence_changed = presence_changed,
    .session_ended = session_ended,
    .account_deleted = account_deleted,
};

/* ---- queries ---- */

static void count_res(void *ud, const char *full, int priority)
{
    (void)full;
    (void)priority;
    ++*(int *)ud;
}

static void got_last(void *ud, int rc, const void *data, size_t len)
{
    mp_stanza *iq = ud;
    if (rc == MAGPIE_NOTFOUND) {
        mp_iq_reply_error(iq, "cancel", "item-not-found");
    } else if (rc != MAGPIE_OK) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
    } else {
        char *v = mp_malloc(len + 1);
        memcpy(v, data, len);
        v[len] = '\0';
        char *nl = strchr(v, '\n');
        long long at = strtoll(v, NULL, 10);
        mp_iq_reply(result_seconds(iq, (long long)time(NULL) - at, nl ? nl + 1 : NULL));
        free(v);
    }
    mp_stanza_unref(iq);
}

/* The requester may see the target's presence: answers (and drops iq). */
static void answer(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    const mp_jid *t = env->to.domain ? &env->to : &env->from;
    int online = 0;
    mp_sessions_foreach(t->bare, count_res, &online);
    if (online) {
        mp_iq_reply(result_seconds(iq, 0, NULL));
        mp_stanza_unref(iq);
        return;
    }
    if (mp_kv_get(t->domain, STORE, t->local, got_last, iq) != MAGPIE_OK) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
        mp_stanza_unref(iq);
    }
}

static void got_item(void *ud, int rc, const void *data, size_t len)
{
    mp_stanza *iq = ud;
    int allowed = 0;
    if (rc == MAGPIE_OK) {
        mp_stanza *item = mp_stanza_parse(data, len);
        if (item) {
            const char *sub = mp_xml_get_attr(mp_stanza_root(item), "subscription");
            allowed = sub && (strcmp(sub, "from") == 0 || strcmp(sub, "both") == 0);
            mp_stanza_unref(item);
        }
    } else if (rc != MAGPIE_NOTFOUND) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
        mp_stanza_unref(iq);
        return;
    }
    if (!allowed) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        mp_stanza_unref(iq);
        return;
    }
    answer(iq);
}

static void account_last(mp_stanza *iq, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    const mp_jid *t = env->to.domain ? &env->to : &env->from;
    if (!t->local || !env->from.domain) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    if (strcmp(env->from.bare, t->bare) == 0) {
        answer(mp_stanza_ref(iq));
        return;
    }
    if (mp_map_get(t->domain, ROSTER_STORE, t->local, env->from.bare, got_item,
                   mp_stanza_ref(iq)) != MAGPIE_OK) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
        mp_stanza_unref(iq);
    }
}

static void server_last(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_iq_reply(result_seconds(iq, (long long)(monotonic() - loaded_at), NULL));
}

static int load(mp_module *m)
{
    self = m;
    loaded_at = monotonic();
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_LAST);
    mp_disco_feature_add(m, MP_DISCO_ACCOUNT, NS_LAST);
    mp_notify_add(m, &notify, NULL);
    if (mp_iq_register(m, MP_IQ_GET, NS_LAST, MP_IQ_SERVER, server_last, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_GET, NS_LAST, MP_IQ_ACCOUNT, account_last, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

MP_MODULE_DECLARE("last", "XEP-0012 Last Activity", NULL, load, NULL, NULL);
