/* mod_ping - XEP-0199 XMPP Ping, both directions.
 *
 * Answers pings to the server and to accounts. Every bound session gets a
 * timer: when a client has sent nothing for `interval` seconds the server
 * pings it; if it still sends nothing within `timeout` seconds the stream
 * is closed with connection-timeout, so dead connections behind NATs do not
 * pile up. Any byte from the client (the pong included) counts as life. */
#include <magpie/magpie.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PING "urn:xmpp:ping"

struct ping_state {
    double sent_at;  /* monotonic time the ping went out; < 0: none */
    mp_timer *timer; /* one per session, armed for the next due check */
};

static mp_module *self;
static mp_counter *pings_sent, *timeouts;

static void pong(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_iq_reply(mp_iq_result(iq));
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs when something may be due: a silent client to ping, or a ping
 * whose answer is overdue. Re-arms the session's timer for the next such
 * moment, so an idle session costs one timer expiry per interval. */
static void check(mp_session *s, void *ud)
{
    (void)ud;
    struct ping_state *ps = mp_session_data(s, self);
    if (!ps)
        return;
    double now = monotonic();
    double idle = mp_session_idle_seconds(s);
    double interval = (double)mp_module_opt_int(self, "interval");
    double timeout = (double)mp_module_opt_int(self, "timeout");
    if (ps->sent_at >= 0 && now - idle > ps->sent_at)
        ps->sent_at = -1; /* the client spoke since the ping */
    if (ps->sent_at >= 0) {
        if (now - ps->sent_at >= timeout) {
            mp_counter_add(timeouts, 1);
            mp_session_close(s, "connection-timeout", "No answer to ping");
            return;
        }
        mp_timer_set(ps->timer, timeout - (now - ps->sent_at));
        return;
    }
    if (idle < interval) {
        mp_timer_set(ps->timer, interval - idle);
        return;
    }
    const mp_jid *j = mp_session_jid(s);
    char id[24] = "ping-";
    mp_random_id(id + 5, sizeof id - 5);
    mp_stanza *p = mp_stanza_new("iq", MP_NS_CLIENT);
    mp_xml *root = mp_stanza_root(p);
    mp_xml_set_attr(p, root, "type", "get");
    mp_xml_set_attr(p, root, "id", id);
    mp_xml_set_attr(p, root, "from", j->domain);
    mp_xml_set_attr(p, root, "to", j->full);
    mp_xml_add_child(p, root, "ping", NS_PING);
    ps->sent_at = now;
    mp_counter_add(pings_sent, 1);
    mp_session_send(s, p);
    mp_timer_set(ps->timer, timeout);
}

static void session_started(mp_session *s, void *ud)
{
    (void)ud;
    struct ping_state *ps = malloc(sizeof *ps);
    if (!ps)
        return;
    ps->sent_at = -1;
    ps->timer = mp_session_timer(s, (double)mp_module_opt_int(self, "interval"), 0, check, NULL);
    if (!ps->timer) {
        free(ps);
        return;
    }
    mp_session_set_data(s, self, ps);
}

static void session_ended(mp_session *s, void *ud)
{
    (void)ud;
    free(mp_session_data(s, self));
    mp_session_set_data(s, self, NULL);
}

static const struct mp_notify notify = {
    .session_started = session_started,
    .session_ended = session_ended,
};

static int load(mp_module *m)
{
    self = m;
    pings_sent = mp_counter_new(m, "sent", "Pings sent to silent clients");
    timeouts = mp_counter_new(m, "timeouts", "Streams closed for not answering a ping");
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_PING);
    mp_disco_feature_add(m, MP_DISCO_ACCOUNT, NS_PING); /* answered for accounts too */
    mp_notify_add(m, &notify, NULL);
    if (mp_iq_register(m, MP_IQ_GET, NS_PING, MP_IQ_SERVER, pong, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_GET, NS_PING, MP_IQ_ACCOUNT, pong, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

static const struct mp_option options[] = {
    {"interval", MP_OPT_INT, "300", "Seconds of client silence before the server pings it", 1,
     86400},
    {"timeout", MP_OPT_INT, "60", "Seconds to wait for any answer before closing the stream", 1,
     3600},
    {NULL, 0, NULL, NULL, 0, 0},
};

MP_MODULE_DECLARE("ping", "XEP-0199 XMPP Ping", options, load, NULL, NULL);
