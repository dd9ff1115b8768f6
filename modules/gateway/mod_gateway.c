/* mod_gateway - the device gateway: embedded devices on a compact binary
 * protocol (xep/x-gateway/spec.md) become XMPP entities <id>@<domain>.
 *
 * - A <message> with a <body> from an owner or admin to a device is a
 *   command: appended to the device's durable queue, and only then
 *   accepted (the sender gets <accepted xmlns='urn:x-magpie:gateway:0'/>);
 *   sent to the device in order, again after every reconnect until ACKed.
 *   The ACK comes back as a XEP-0184 receipt (when requested), a failure or
 *   expiry as a message error. Anyone else gets 'forbidden'.
 * - An UPLINK from a device becomes a <message> to its owners.
 * - Device presence (available/unavailable) follows the connection and is
 *   sent to its owners (and answers their probes).
 * Operator's guide: docs/gateway.md. Provisioning: magpiectl device. */
#include "gateway.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_state G = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- stanzas to owners ---- */

mp_stanza *gw_presence(const struct gw_dev *d, const char *to, int available)
{
    mp_stanza *st = mp_stanza_new("presence", MP_NS_CLIENT);
    mp_xml *root = mp_stanza_root(st);
    mp_xml_set_attr(st, root, "from", d->jid);
    mp_xml_set_attr(st, root, "to", to);
    if (!available)
        mp_xml_set_attr(st, root, "type", "unavailable");
    return st;
}

void gw_presence_to_owners(const struct gw_dev *d, int available, struct gw_out *out)
{
    for (size_t i = 0; i < d->n_owners; i++)
        gw_out_add(out, gw_presence(d, d->owners[i], available));
}

/* 1 if p is UTF-8 without control characters other than tab/newline. */
static int is_text(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len;) {
        uint8_t c = p[i];
        size_t n = c < 0x80             ? 1
                   : (c & 0xe0) == 0xc0 ? 2
                   : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 ? 4
                                        : 0;
        if (n == 0 || i + n > len || (n == 1 && c < 0x20 && c != '\t' && c != '\n' && c != '\r'))
            return 0;
        if (n == 2 && c < 0xc2)
            return 0;
        for (size_t j = 1; j < n; j++)
            if ((p[i + j] & 0xc0) != 0x80)
                return 0;
        i += n;
    }
    return 1;
}

void gw_uplink_to_owners(const struct gw_dev *d, uint32_t mid, const uint8_t *p, size_t len,
                         struct gw_out *out)
{
    int text = is_text(p, len);
    char *b64 = NULL;
    if (!text) {
        b64 = malloc(4 * ((len + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *)b64, p, (int)len);
    }
    for (size_t i = 0; i < d->n_owners; i++) {
        mp_stanza *st = mp_stanza_new_client("message", "chat", d->jid, d->owners[i]);
        mp_xml *root = mp_stanza_root(st);
        char v[16];
        mp_xml *u = mp_xml_add_child(st, root, "uplink", GW_NS);
        snprintf(v, sizeof v, "%u", (unsigned)mid);
        mp_xml_set_attr(st, u, "id", v);
        if (text) {
            mp_xml *b = mp_xml_add_child(st, root, "body", NULL);
            mp_xml_add_text(st, b, (const char *)p, len);
        } else {
            mp_xml_set_attr(st, u, "encoding", "base64");
            mp_xml_add_text(st, u, b64, strlen(b64));
        }
        gw_out_add(out, st);
    }
    free(b64);
}

/* ---- commands from XMPP ---- */

static void reply_error(mp_stanza *st, const char *type, const char *cond, const char *text)
{
    mp_stanza *e = mp_stanza_copy(st);
    mp_route(mp_stanza_make_error(e, type, cond, text));
}

struct accept_ctx {
    struct gw_cmd *cmd;
    char dev[GW_ID_MAX + 1];
};

/* The command is durable: queue it, tell the sender, wake the connection. */
static void appended(void *ud, int rc, int64_t aid)
{
    struct accept_ctx *a = ud;
    struct gw_cmd *c = a->cmd;
    char from[GW_ID_MAX + 1100]; /* the device's JID (as its d->jid) */
    snprintf(from, sizeof from, "%s@%s", a->dev, G.domain);
    if (rc != MAGPIE_OK) {
        mp_stanza *st = mp_stanza_new("message", MP_NS_CLIENT);
        mp_xml *root = mp_stanza_root(st);
        mp_xml_set_attr(st, root, "from", from);
        mp_xml_set_attr(st, root, "to", c->sender);
        if (c->sid)
            mp_xml_set_attr(st, root, "id", c->sid);
        mp_xml_set_attr(st, root, "type", "error");
        mp_xml *e = mp_xml_add_child(st, root, "error", NULL);
        mp_xml_set_attr(st, e, "type", "wait");
        mp_xml_add_child(st, e, "internal-server-error", MP_NS_STANZA_ERRORS);
        mp_route(st);
        gw_cmd_free(c);
        free(a);
        return;
    }
    mp_stanza *ok = mp_stanza_new("message", MP_NS_CLIENT);
    mp_xml *root = mp_stanza_root(ok);
    mp_xml_set_attr(ok, root, "to", c->sender);
    mp_xml_set_attr(ok, root, "type", "headline");
    mp_xml *acc = mp_xml_add_child(ok, root, "accepted", GW_NS);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)aid);
    mp_xml_set_attr(ok, acc, "command", v);
    if (c->sid)
        mp_xml_set_attr(ok, acc, "id", c->sid);
    /* c is taken (and may be sent, ACKed and freed at once) */
    mp_xml_set_attr(ok, root, "from", gw_queue_accepted(a->dev, c, aid) ? from : G.domain);
    mp_route(ok);
    free(a);
}

/* Authorises a command for d and appends it (record known). */
static void command(struct gw_dev *d, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    mp_xml *root = mp_stanza_root(st);
    mp_xml *body = mp_xml_find(root, "body", NULL);
    if (!body)
        return; /* chat states and the like: nothing to do */
    if (!gw_is_admin(env->from.bare) && !gw_dev_is_owner(d, env->from.bare)) {
        mp_counter_add(G.c.forbidden, 1);
        reply_error(st, "auth", "forbidden", "not allowed to command this device");
        return;
    }
    const char *text = mp_xml_text(st, body);
    size_t len = strlen(text);
    if (len + 6 > (size_t)G.max_body) {
        reply_error(st, "modify", "not-acceptable", "command larger than the device's frames");
        return;
    }
    long long ttl = G.ttl_default;
    mp_xml *opt = mp_xml_find(root, "command", GW_NS);
    const char *t = opt ? mp_xml_get_attr(opt, "ttl") : NULL;
    if (t) {
        char *end;
        ttl = strtoll(t, &end, 10);
        if (*end || ttl < 0 || ttl > G.ttl_max || (ttl == 0 && G.ttl_max)) {
            reply_error(st, "modify", "bad-request", "ttl out of range");
            return;
        }
    }
    struct gw_cmd *c = calloc(1, sizeof *c + len);
    c->queued_us = gw_now_us();
    c->expires_us = ttl ? c->queued_us + ttl * 1000000 : 0;
    c->want_receipt = mp_xml_find(root, "request", GW_NS_RECEIPTS) != NULL;
    c->sender = strdup(env->from.full);
    c->sid = env->id ? strdup(env->id) : NULL;
    c->len = len;
    memcpy(c->payload, text, len);
    struct accept_ctx *a = calloc(1, sizeof *a);
    a->cmd = c;
    snprintf(a->dev, sizeof a->dev, "%s", d->id);
    size_t dl;
    void *data = gw_cmd_encode(c, &dl);
    gw_sweep_start();
    if (mp_archive_append(G.domain, GW_STORE_QUEUE, d->id, c->sender, data, dl, appended, a) !=
        MAGPIE_OK) {
        reply_error(st, "wait", "internal-server-error", NULL);
        gw_cmd_free(c);
        free(a);
    }
    free(data);
}

static void presence_in(struct gw_dev *d, mp_stanza *st);

/* Stanzas for a device that is not in memory wait, in arrival order, for
 * its record to be read: one read per device, and every stanza that
 * arrives meanwhile queues behind the first (a second read would complete
 * after stanzas that came later and found the device known, and commands
 * would be queued out of order). Guarded by G.lock. */
struct lookup {
    struct lookup *next;
    char id[GW_ID_MAX + 1];
    mp_stanza **st;
    size_t n, cap;
};
static struct lookup *lookups;

static void lookup_add(struct lookup *l, mp_stanza *st)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 4;
        l->st = realloc(l->st, l->cap * sizeof *l->st);
    }
    l->st[l->n++] = mp_stanza_ref(st);
}

/* One stanza for a device, known (d) or found not to exist (rc). */
static void record_stanza(struct gw_dev *d, int rc, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (d && env->kind == MP_KIND_PRESENCE)
        presence_in(d, st);
    else if (d)
        command(d, st);
    else if (env->kind == MP_KIND_PRESENCE)
        ; /* nothing to say about a device that does not exist */
    else if (rc == MAGPIE_ERR)
        reply_error(st, "wait", "internal-server-error", NULL);
    else
        reply_error(st, "cancel", "item-not-found", "no such device");
}

/* The record of a device not in memory was read: the stanzas that waited
 * for it run in arrival order. */
static void record_read(void *ud, int rc, const void *data, size_t len)
{
    struct lookup *l = ud;
    struct gw_dev *d = NULL;
    pthread_mutex_lock(&G.lock);
    if (rc == MAGPIE_OK)
        gw_dev_set_record(l->id, data, len, &d);
    for (struct lookup **pp = &lookups; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    pthread_mutex_unlock(&G.lock);
    for (size_t i = 0; i < l->n; i++) {
        record_stanza(d, rc, l->st[i]);
        mp_stanza_unref(l->st[i]);
    }
    free(l->st);
    free(l);
}

static void presence_in(struct gw_dev *d, mp_stanza *st)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->type != MP_TYPE_PROBE && env->type != MP_TYPE_SUBSCRIBE)
        return;
    pthread_mutex_lock(&G.lock);
    int allowed = gw_dev_is_owner(d, env->from.bare) || gw_is_admin(env->from.bare);
    int online = d->conn != NULL;
    pthread_mutex_unlock(&G.lock);
    if (env->type == MP_TYPE_SUBSCRIBE) {
        mp_stanza *r = mp_stanza_new("presence", MP_NS_CLIENT);
        mp_xml *root = mp_stanza_root(r);
        mp_xml_set_attr(r, root, "from", d->jid);
        mp_xml_set_attr(r, root, "to", env->from.bare);
        mp_xml_set_attr(r, root, "type", allowed ? "subscribed" : "unsubscribed");
        mp_route(r);
    }
    if (allowed)
        mp_route(gw_presence(d, env->from.full, online));
}

static int on_stanza(mp_stanza *st, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(st);
    if (env->kind == MP_KIND_IQ)
        return HOOK_PASS;
    if (env->type == MP_TYPE_ERROR || !env->from.domain)
        return HOOK_HANDLED;
    if (!env->to.local) {
        if (env->kind == MP_KIND_MESSAGE)
            reply_error(st, "cancel", "service-unavailable", "send commands to a device JID");
        return HOOK_HANDLED;
    }
    pthread_mutex_lock(&G.lock);
    struct gw_dev *d = gw_dev_find(env->to.local);
    struct lookup *l = NULL;
    if (!d) {
        for (l = lookups; l && strcmp(l->id, env->to.local) != 0; l = l->next)
            ;
        if (l) { /* a read is under way: wait behind it */
            lookup_add(l, st);
            pthread_mutex_unlock(&G.lock);
            return HOOK_HANDLED;
        }
        if (strlen(env->to.local) <= GW_ID_MAX) {
            l = calloc(1, sizeof *l);
            memcpy(l->id, env->to.local, strlen(env->to.local) + 1);
            lookup_add(l, st);
            l->next = lookups;
            lookups = l;
        }
    }
    pthread_mutex_unlock(&G.lock);
    if (d) {
        record_stanza(d, MAGPIE_OK, st);
        return HOOK_HANDLED;
    }
    if (!l) {
        record_stanza(NULL, MAGPIE_NOTFOUND, st);
        return HOOK_HANDLED;
    }
    /* not seen since start-up: perhaps provisioned since */
    if (mp_kv_get(G.domain, GW_STORE_DEVICES, l->id, record_read, l) != MAGPIE_OK)
        record_read(l, MAGPIE_ERR, NULL, 0);
    return HOOK_HANDLED;
}

/* ---- module ---- */

static char **split_jids(const char *s, size_t *n)
{
    char **v = NULL;
    size_t cnt = 0;
    char *dup = strdup(s ? s : ""), *save = NULL;
    for (char *t = strtok_r(dup, " ,", &save); t; t = strtok_r(NULL, " ,", &save)) {
        mp_jid j;
        if (mp_jid_parse(&j, t) != MAGPIE_OK) {
            mp_log(MP_LOG_ERROR, "gateway: admins: invalid JID '%s'", t);
            continue;
        }
        v = realloc(v, (cnt + 1) * sizeof *v);
        v[cnt++] = strdup(j.bare);
        mp_jid_free(&j);
    }
    free(dup);
    *n = cnt;
    return v;
}

static int load(mp_module *m)
{
    G.m = m;
    G.domain = mp_module_opt_str(m, "domain");
    G.heartbeat = (int)mp_module_opt_int(m, "heartbeat");
    G.dead_after = (int)mp_module_opt_int(m, "dead_after");
    if (G.dead_after == 0)
        G.dead_after = (G.heartbeat * 5 + 1) / 2;
    G.handshake_timeout = (int)mp_module_opt_int(m, "handshake_timeout");
    G.max_body = (int)mp_module_opt_int(m, "max_payload") + 6;
    G.window = (int)mp_module_opt_int(m, "window");
    G.ttl_default = mp_module_opt_int(m, "ttl");
    G.ttl_max = mp_module_opt_int(m, "max_ttl");
    G.admins = split_jids(mp_module_opt_str(m, "admins"), &G.n_admins);
    G.c.accepted = mp_counter_new(m, "commands_accepted", "commands made durable and accepted");
    G.c.sent = mp_counter_new(m, "commands_sent", "COMMAND frames sent (retries included)");
    G.c.retried = mp_counter_new(m, "commands_retried", "COMMAND frames sent again");
    G.c.acked = mp_counter_new(m, "commands_acked", "commands the device ACKed as done");
    G.c.failed = mp_counter_new(m, "commands_failed", "commands the device ACKed with a failure");
    G.c.expired = mp_counter_new(m, "commands_expired", "commands whose ttl ran out");
    G.c.late_acks = mp_counter_new(m, "acks_unmatched", "ACKs for no pending command");
    G.c.latency_ms = mp_counter_new(m, "ack_latency_ms_total",
                                    "sum of accept-to-ACK times in ms (divide by acked+failed)");
    G.c.accept_us = mp_counter_new(m, "accept_latency_us_total",
                                   "sum of times from a command's arrival to its durable append "
                                   "in µs (divide by commands_accepted)");
    G.c.end_us = mp_counter_new(m, "end_latency_us_total",
                                "sum of times from a command's end (ACK) to its durable status "
                                "record in µs, for ends someone is told about");
    G.c.uplinks = mp_counter_new(m, "uplinks", "UPLINK frames routed to owners");
    G.c.connects = mp_counter_new(m, "device_logins", "devices authenticated");
    G.c.auth_failures = mp_counter_new(m, "auth_failures", "failed device authentications");
    G.c.bad_frames = mp_counter_new(m, "bad_frames", "connections closed for a protocol error");
    G.c.timeouts = mp_counter_new(m, "timeouts", "connections closed for silence");
    G.c.replaced = mp_counter_new(m, "replaced", "connections replaced by a newer one");
    G.c.forbidden = mp_counter_new(m, "forbidden", "commands refused to unauthorised senders");

    mp_domain *d = mp_domain_add(m, G.domain, on_stanza, NULL);
    if (!d) {
        mp_log(MP_LOG_ERROR, "gateway: cannot serve domain '%s' (invalid, a host, or taken)",
               G.domain);
        return MAGPIE_ERR;
    }
    mp_domain_disco_identity(d, "component", "generic", "Magpie device gateway");
    mp_domain_disco_feature(d, GW_NS);
    gw_load_all();
    gw_prune_load(m);
    if (gw_api_load(m) != MAGPIE_OK || gw_hook_load(m) != MAGPIE_OK ||
        gw_outbox_load(m) != MAGPIE_OK || gw_adhoc_load(m) != MAGPIE_OK)
        return MAGPIE_ERR;
    long long port = mp_module_opt_int(m, "port");
    if (port == 0)
        return MAGPIE_OK;
    if (mp_module_opt_bool(m, "tls"))
        return mp_listener_add_tls(m, mp_module_opt_str(m, "address"), (int)port, NULL,
                                   &gw_listener_ops, NULL);
    return mp_listener_add(m, mp_module_opt_str(m, "address"), (int)port, &gw_listener_ops, NULL);
}

static void unload(mp_module *m)
{
    (void)m;
    gw_outbox_unload();
    gw_prune_unload();
    gw_sweep_free();
    gw_hook_unload();
    gw_api_unload();
    gw_free_all();
    for (struct lookup *l = lookups, *nx; l; l = nx) {
        nx = l->next;
        for (size_t i = 0; i < l->n; i++)
            mp_stanza_unref(l->st[i]);
        free(l->st);
        free(l);
    }
    lookups = NULL;
    for (size_t i = 0; i < G.n_admins; i++)
        free(G.admins[i]);
    free(G.admins);
    G.admins = NULL;
    G.n_admins = 0;
}

static const struct mp_option opts[] = {
    {"domain", MP_OPT_STRING, "devices.localhost", "XMPP domain of the devices (<id>@domain)", 0,
     0},
    {"address", MP_OPT_STRING, "127.0.0.1", "address the device listener binds", 0, 0},
    {"port", MP_OPT_INT, "0", "port of the device listener (0: none)", 0, 65535},
    {"tls", MP_OPT_BOOL, "false",
     "TLS from the first byte on the device listener (the first host's certificate)", 0, 0},
    {"heartbeat", MP_OPT_INT, "30", "heartbeat interval announced to devices, seconds", 1, 65535},
    {"dead_after", MP_OPT_INT, "0",
     "seconds of device silence before it is offline (0: 2.5 x heartbeat)", 0, 1000000},
    {"handshake_timeout", MP_OPT_INT, "10", "seconds a device has to authenticate", 1, 3600},
    {"max_payload", MP_OPT_INT, "1018", "largest command/uplink payload, bytes", 16, 65000},
    {"window", MP_OPT_INT, "8", "commands sent to a device before it ACKs", 1, 1024},
    {"ttl", MP_OPT_INT, "3600", "default time to live of a command, seconds (0: none)", 0,
     31536000},
    {"max_ttl", MP_OPT_INT, "604800", "largest ttl a sender may ask for (0: unlimited)", 0,
     31536000},
    {"status_retention", MP_OPT_INT, "604800",
     "seconds the status record, idempotency key and webhook record of an ended command are "
     "kept (0: forever)",
     0, 315360000},
    {"admins", MP_OPT_STRING, "", "JIDs (space/comma separated) that may command every device", 0,
     0},
    {"api_tokens", MP_OPT_STRING, "",
     "bearer tokens (space separated, 16+ characters each) of the HTTP API", 0, 0},
    {"api_hmac_key", MP_OPT_STRING, "",
     "key of the HMAC-SHA-256 signatures (X-Magpie-Signature) the HTTP API accepts", 0, 0},
    {"webhook_url", MP_OPT_STRING, "",
     "http:// URL POSTed once when a command expires unacknowledged (empty: none)", 0, 0},
    {"webhook_attempts", MP_OPT_INT, "5", "tries of the webhook before giving up", 1, 100},
    {"outbox_dsn", MP_OPT_STRING, "",
     "MariaDB/MySQL of the outbox, host:port:user:password:database (empty: no outbox)", 0, 0},
    {"outbox_table", MP_OPT_STRING, "magpie_outbox", "the outbox table", 0, 0},
    {"outbox_interval_ms", MP_OPT_INT, "200", "how often the outbox is polled, ms", 10, 60000},
    {NULL, 0, NULL, NULL, 0, 0},
};

MP_MODULE_DECLARE("gateway", "device gateway: embedded devices as XMPP entities", opts, load,
                  unload, NULL);
