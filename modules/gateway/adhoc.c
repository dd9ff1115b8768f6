/* adhoc.c - the gateway's XEP-0050 ad-hoc commands, for the server's
 * admins and the gateway's own `admins`:
 *   urn:x-magpie:gateway:0#send    device, payload (text), ttl, optional
 *                                  idempotency-key: queues a command on the
 *                                  same path as the HTTP trigger (gw_submit:
 *                                  durable before the answer) and answers
 *                                  with its id
 *   urn:x-magpie:gateway:0#status  command-id: the command's lifecycle
 *                                  (gw_status), as GET /commands/{id}
 * Commands queued here have the sender "!adhoc": no XMPP message follows
 * them; their state is queried by id. */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_SEND   GW_NS "#send"
#define NODE_STATUS GW_NS "#status"
#define FORM_TYPE   GW_NS "#adhoc"

static int gw_admin_allow(const mp_jid *requester, void *ud)
{
    (void)ud;
    return requester->bare && gw_is_admin(requester->bare);
}

static mp_xml *submitted(mp_adhoc_req *r)
{
    mp_xml *f = mp_adhoc_form(r);
    return f && strcmp(mp_form_type(f), "submit") == 0 ? f : NULL;
}

static mp_xml *required(mp_stanza *st, mp_xml *form, const char *var, const char *type,
                        const char *label, const char *value)
{
    mp_xml *f = mp_form_field_add(st, form, var, type, label, value);
    mp_xml_add_child(st, f, "required", NULL);
    return f;
}

/* Answers the first request of a command with its form. */
static void send_form(mp_adhoc_req *r, const char *title, int send)
{
    mp_xml *cmd;
    mp_stanza *reply = mp_adhoc_reply_new(r, MP_ADHOC_EXECUTING, &cmd);
    mp_adhoc_actions(r, reply, cmd, MP_ADHOC_ALLOW(MP_ADHOC_COMPLETE), MP_ADHOC_COMPLETE);
    mp_xml *form = mp_form_add(reply, cmd, "form", FORM_TYPE, title);
    if (send) {
        char ttl[24];
        snprintf(ttl, sizeof ttl, "%lld", G.ttl_default);
        required(reply, form, "device", "text-single", "Device id", NULL);
        required(reply, form, "payload", "text-multi", "Command payload (text)", NULL);
        mp_form_field_add(reply, form, "ttl", "text-single", "Time to live, seconds", ttl);
        mp_form_field_add(reply, form, "idempotency-key", "text-single",
                          "Idempotency key (a retry with the same key queues nothing new)",
                          NULL);
    } else {
        required(reply, form, "command-id", "text-single", "Command id", NULL);
    }
    mp_adhoc_send(r, reply);
}

/* ---- send ---- */

static void sent(void *ud, int status, int64_t aid, const char *dev, int dup)
{
    mp_adhoc_req *r = ud;
    if (status == GW_SUBMIT_NODEV) {
        mp_adhoc_error(r, "cancel", "item-not-found", NULL);
        return;
    }
    if (status == GW_SUBMIT_CONFLICT) {
        mp_adhoc_error(r, "cancel", "conflict", NULL);
        return;
    }
    if (status != GW_SUBMIT_CREATED && status != GW_SUBMIT_EXISTS) {
        mp_adhoc_error(r, "wait", "internal-server-error", NULL);
        return;
    }
    char id[32], note[160];
    snprintf(id, sizeof id, "%lld", (long long)aid);
    int again = status == GW_SUBMIT_EXISTS || dup;
    snprintf(note, sizeof note, "%s command %s for device %s.",
             again ? "Already queued:" : "Queued", id, dev);
    mp_xml *cmd;
    mp_stanza *reply = mp_adhoc_reply_new(r, MP_ADHOC_COMPLETED, &cmd);
    mp_adhoc_note(reply, cmd, "info", note);
    mp_xml *form = mp_form_add(reply, cmd, "result", FORM_TYPE, NULL);
    mp_form_field_add(reply, form, "command-id", "text-single", "Command id", id);
    mp_form_field_add(reply, form, "device", "text-single", "Device id", dev);
    mp_form_field_add(reply, form, "duplicate", "boolean", NULL, again ? "1" : "0");
    mp_adhoc_send(r, reply);
}

static void cmd_send(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    mp_xml *form = submitted(r);
    if (!form) {
        send_form(r, "Send a command to a device", 1);
        return;
    }
    mp_stanza *iq = mp_adhoc_iq(r);
    const char *dev = mp_form_value(iq, form, "device");
    const char *t = mp_form_value(iq, form, "ttl");
    const char *key = mp_form_value(iq, form, "idempotency-key");
    /* a text-multi payload: its lines joined with '\n' */
    mp_xml *pf = mp_form_field(form, "payload");
    size_t len = 0, cap = 0;
    char *payload = NULL;
    for (mp_xml *v = pf ? mp_xml_find(pf, "value", NULL) : NULL; v;
         v = mp_xml_find_next(v, "value", NULL)) {
        const char *line = mp_xml_text(iq, v);
        size_t ll = strlen(line);
        if (len + ll + 2 > cap) {
            cap = 2 * (len + ll + 2);
            payload = realloc(payload, cap);
        }
        if (len)
            payload[len++] = '\n';
        memcpy(payload + len, line, ll);
        len += ll;
    }
    long long ttl = G.ttl_default;
    char *end = NULL;
    if (t && *t)
        ttl = strtoll(t, &end, 10);
    const char *bad = NULL;
    if (!dev || !*dev || strlen(dev) > GW_ID_MAX)
        bad = "a device id is required";
    else if (!payload)
        bad = "a payload is required";
    else if ((end && *end) || ttl < 0 || (G.ttl_max && (ttl > G.ttl_max || ttl == 0)))
        bad = "ttl out of range";
    else if (key && (!*key || strlen(key) > 200))
        bad = "the idempotency key must have 1 to 200 characters";
    if (bad) {
        free(payload);
        mp_adhoc_error(r, "modify", "bad-request", "bad-payload");
        return;
    }
    if (len + 6 > (size_t)G.max_body) {
        free(payload);
        mp_adhoc_error(r, "modify", "not-acceptable", "bad-payload");
        return;
    }
    char k[220];
    if (key)
        snprintf(k, sizeof k, "adhoc/%s", key);
    gw_sweep_start();
    gw_submit(dev, "!adhoc", key ? k : NULL, (const uint8_t *)payload, len, ttl, sent, r);
    free(payload);
}

/* ---- status ---- */

static void time_field(mp_stanza *st, mp_xml *form, const char *var, const char *label,
                       int64_t us)
{
    char t[MP_DATETIME_MAX];
    mp_form_field_add(st, form, var, "text-single", label,
                      us > 0 ? mp_datetime_format(us, t, sizeof t) : NULL);
}

static void status_done(void *ud, int rc, const struct gw_status *st)
{
    mp_adhoc_req *r = ud;
    if (rc == MAGPIE_NOTFOUND) {
        mp_adhoc_error(r, "cancel", "item-not-found", NULL);
        return;
    }
    if (rc != MAGPIE_OK) {
        mp_adhoc_error(r, "wait", "internal-server-error", NULL);
        return;
    }
    char id[32], res[16];
    snprintf(id, sizeof id, "%lld", (long long)st->aid);
    snprintf(res, sizeof res, "%d", st->result);
    mp_xml *cmd;
    mp_stanza *reply = mp_adhoc_reply_new(r, MP_ADHOC_COMPLETED, &cmd);
    mp_xml *form = mp_form_add(reply, cmd, "result", FORM_TYPE, NULL);
    mp_form_field_add(reply, form, "command-id", "text-single", "Command id", id);
    mp_form_field_add(reply, form, "device", "text-single", "Device id", st->dev);
    mp_form_field_add(reply, form, "state", "text-single",
                      "State (queued, sent, acked, failed, expired)", st->state);
    mp_form_field_add(reply, form, "result", "text-single", "Device's ACK result code",
                      st->result >= 0 ? res : NULL);
    time_field(reply, form, "queued", "Queued at", st->queued_us);
    time_field(reply, form, "sent", "First sent at", st->sent_us);
    time_field(reply, form, "ended", "Ended at", st->ended_us);
    time_field(reply, form, "expires", "Expires at", st->expires_us);
    mp_adhoc_send(r, reply);
}

static void cmd_status(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    mp_xml *form = submitted(r);
    if (!form) {
        send_form(r, "Status of a device command", 0);
        return;
    }
    const char *v = mp_form_value(mp_adhoc_iq(r), form, "command-id");
    char *end = NULL;
    long long aid = v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || aid <= 0) {
        mp_adhoc_error(r, "modify", "bad-request", "bad-payload");
        return;
    }
    gw_status(aid, status_done, r);
}

int gw_adhoc_load(mp_module *m)
{
    if (mp_adhoc_command_add(m, NODE_SEND, "Send a command to a device", MP_ADHOC_ADMIN, cmd_send,
                             NULL) != MAGPIE_OK ||
        mp_adhoc_command_add(m, NODE_STATUS, "Status of a device command", MP_ADHOC_ADMIN,
                             cmd_status, NULL) != MAGPIE_OK ||
        mp_adhoc_command_allow(m, NODE_SEND, gw_admin_allow, NULL) != MAGPIE_OK ||
        mp_adhoc_command_allow(m, NODE_STATUS, gw_admin_allow, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}
