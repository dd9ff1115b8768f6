/* mgw.c - the device side of the MGW protocol (see mgw.h). */
#include "mgw.h"

#include <string.h>

#define PRE_WELCOME_BODY 128

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

size_t mgw_frame(uint8_t *out, size_t cap, uint8_t type, const uint8_t *body, size_t len)
{
    if (len > 65534 || cap < 3 + len)
        return 0;
    put16(out, (uint32_t)(1 + len));
    out[2] = type;
    if (len)
        memmove(out + 3, body, len);
    return 3 + len;
}

/* Sends a frame whose body the caller wrote at d->tx + 3. */
static int send_tx(struct mgw *d, uint8_t type, size_t len)
{
    put16(d->tx, (uint32_t)(1 + len));
    d->tx[2] = type;
    if (d->cfg->send(d->cfg->io, d->tx, 3 + len) < 0)
        return MGW_ERR_IO;
    return MGW_OK;
}

/* Sends ERROR(code) and marks the connection closed; returns err. */
static int fail(struct mgw *d, uint8_t code, int err)
{
    if (d->state != MGW_S_CLOSED) {
        d->tx[3] = code;
        (void)send_tx(d, MGW_ERROR, 1);
    }
    d->state = MGW_S_CLOSED;
    return err;
}

void mgw_init(struct mgw *d, const struct mgw_config *cfg)
{
    memset(d, 0, sizeof *d);
    d->cfg = cfg;
}

int mgw_ready(const struct mgw *d)
{
    return d->state == MGW_S_READY;
}

static int valid_id(const char *id, size_t *len)
{
    size_t n = 0;
    for (; id[n]; n++) {
        char c = id[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    *len = n;
    return n >= 1 && n <= MGW_ID_MAX;
}

int mgw_connect(struct mgw *d, uint32_t now_ms)
{
    size_t idl;
    if (!valid_id(d->cfg->device_id, &idl))
        return MGW_ERR_ARG;
    d->rx_len = 0;
    d->heartbeat = 0;
    d->max_body = PRE_WELCOME_BODY;
    d->started_ms = d->last_rx_ms = d->last_tx_ms = now_ms;
    while (d->uplink_next == 0) /* random start: ids differ from before a reboot */
        d->cfg->random(d->cfg->io, (uint8_t *)&d->uplink_next, sizeof d->uplink_next);
    d->cfg->random(d->cfg->io, d->cnonce, sizeof d->cnonce);
    uint8_t *b = d->tx + 3;
    b[0] = 'M';
    b[1] = 'G';
    b[2] = MGW_VERSION;
    b[3] = MGW_VERSION;
    memcpy(b + 4, d->cnonce, 16);
    b[20] = (uint8_t)idl;
    memcpy(b + 21, d->cfg->device_id, idl);
    d->state = MGW_S_HELLO;
    return send_tx(d, MGW_HELLO, 21 + idl);
}

/* HMAC-SHA-256(secret, tag || version || n1 || n2 || id_len || id). */
static void auth_mac(const struct mgw *d, uint8_t tag, const uint8_t *n1, const uint8_t *n2,
                     uint8_t out[32])
{
    struct mgw_hmac h;
    uint8_t hdr[2] = {tag, d->version};
    uint8_t idl = (uint8_t)strlen(d->cfg->device_id);
    mgw_hmac_init(&h, d->cfg->secret, d->cfg->secret_len);
    mgw_hmac_update(&h, hdr, 2);
    mgw_hmac_update(&h, n1, 16);
    mgw_hmac_update(&h, n2, 16);
    mgw_hmac_update(&h, &idl, 1);
    mgw_hmac_update(&h, d->cfg->device_id, idl);
    mgw_hmac_final(&h, out);
}

static struct mgw_seen *seen_find(struct mgw *d, uint32_t id)
{
    for (unsigned i = 0; i < MGW_DEDUP; i++)
        if (d->seen[i].id == id)
            return &d->seen[i];
    return NULL;
}

static int send_ack(struct mgw *d, uint32_t id, uint8_t result)
{
    if (d->state != MGW_S_READY)
        return MGW_ERR_STATE;
    put32(d->tx + 3, id);
    d->tx[7] = result;
    d->acks_sent++;
    return send_tx(d, MGW_ACK, 5);
}

int mgw_ack(struct mgw *d, uint32_t msg_id, int result)
{
    struct mgw_seen *s = seen_find(d, msg_id);
    if (result < 0 || result > 255 || msg_id == 0)
        return MGW_ERR_ARG;
    if (s)
        s->result = (uint16_t)result;
    return send_ack(d, msg_id, (uint8_t)result);
}

/* A COMMAND: acts on a new msg_id once, re-ACKs a duplicate (spec §7). */
static int on_command(struct mgw *d, const uint8_t *b, size_t len)
{
    if (len < 6)
        return fail(d, MGW_E_MALFORMED, MGW_ERR_PROTO);
    uint32_t id = get32(b);
    uint16_t ttl = (uint16_t)get16(b + 4);
    if (id == 0)
        return fail(d, MGW_E_MALFORMED, MGW_ERR_PROTO);
    struct mgw_seen *s = seen_find(d, id);
    if (s) {
        d->duplicates++;
        if (s->result == MGW_DEFER)
            return MGW_OK; /* still working on it: mgw_ack will answer */
        return send_ack(d, id, (uint8_t)s->result);
    }
    s = &d->seen[d->seen_next];
    d->seen_next = (d->seen_next + 1) % MGW_DEDUP;
    s->id = id;
    s->result = MGW_DEFER;
    d->commands++;
    int r = d->cfg->on_command(d->cfg->app, d, id, b + 6, len - 6, ttl);
    if (d->state != MGW_S_READY)
        return MGW_ERR_STATE; /* the application closed in its callback */
    if (r == MGW_DEFER)
        return MGW_OK;
    if (r < 0 || r > 255)
        r = MGW_RESULT_FAILED;
    if (s->id == id && s->result == MGW_DEFER) { /* not already acked in the callback */
        s->result = (uint16_t)r;
        return send_ack(d, id, (uint8_t)r);
    }
    return MGW_OK;
}

/* Handles one complete frame of type t with body b[0..len). */
static int frame(struct mgw *d, uint8_t t, const uint8_t *b, size_t len)
{
    uint8_t mac[32];
    switch (t) {
    case MGW_CHALLENGE:
        if (d->state != MGW_S_HELLO)
            return fail(d, MGW_E_STATE, MGW_ERR_PROTO);
        if (len != 17 || b[0] != MGW_VERSION)
            return fail(d, MGW_E_MALFORMED, MGW_ERR_PROTO);
        d->version = b[0];
        memcpy(d->snonce, b + 1, 16);
        auth_mac(d, 'D', d->snonce, d->cnonce, d->tx + 3);
        d->state = MGW_S_AUTH;
        return send_tx(d, MGW_AUTH, 32);
    case MGW_WELCOME:
        if (d->state != MGW_S_AUTH)
            return fail(d, MGW_E_STATE, MGW_ERR_PROTO);
        if (len != 36)
            return fail(d, MGW_E_MALFORMED, MGW_ERR_PROTO);
        auth_mac(d, 'S', d->cnonce, d->snonce, mac);
        if (!mgw_ct_equal(mac, b + 4, 32))
            return fail(d, MGW_E_AUTH_FAILED, MGW_ERR_AUTH);
        d->heartbeat = (uint16_t)get16(b);
        d->max_body = (uint16_t)get16(b + 2);
        if (d->heartbeat == 0)
            return fail(d, MGW_E_MALFORMED, MGW_ERR_PROTO);
        if (d->max_body > MGW_MAX_BODY)
            d->max_body = MGW_MAX_BODY;
        d->state = MGW_S_READY;
        if (d->cfg->on_ready)
            d->cfg->on_ready(d->cfg->app, d);
        return MGW_OK;
    case MGW_PING:
        if (len)
            return fail(d, MGW_E_MALFORMED, MGW_ERR_PROTO);
        return send_tx(d, MGW_PONG, 0);
    case MGW_PONG:
        return len ? fail(d, MGW_E_MALFORMED, MGW_ERR_PROTO) : MGW_OK;
    case MGW_COMMAND:
        if (d->state != MGW_S_READY)
            return fail(d, MGW_E_STATE, MGW_ERR_PROTO);
        return on_command(d, b, len);
    case MGW_ACK:
        if (d->state != MGW_S_READY)
            return fail(d, MGW_E_STATE, MGW_ERR_PROTO);
        if (len != 5)
            return fail(d, MGW_E_MALFORMED, MGW_ERR_PROTO);
        if (d->cfg->on_uplink_ack)
            d->cfg->on_uplink_ack(d->cfg->app, d, get32(b), b[4]);
        return MGW_OK;
    case MGW_ERROR:
        d->state = MGW_S_CLOSED;
        if (d->cfg->on_close)
            d->cfg->on_close(d->cfg->app, d, len ? b[0] : 0, len > 1 ? (const char *)b + 1 : "",
                             len > 1 ? len - 1 : 0);
        return len && b[0] == MGW_E_AUTH_FAILED ? MGW_ERR_AUTH : MGW_ERR_CLOSED;
    case MGW_BYE:
        d->state = MGW_S_CLOSED;
        if (d->cfg->on_close)
            d->cfg->on_close(d->cfg->app, d, 0, NULL, 0);
        return MGW_ERR_CLOSED;
    case MGW_HELLO:
    case MGW_AUTH:
    case MGW_UPLINK:
        return fail(d, MGW_E_STATE, MGW_ERR_PROTO);
    default:
        return fail(d, MGW_E_UNKNOWN_TYPE, MGW_ERR_PROTO);
    }
}

int mgw_input(struct mgw *d, const uint8_t *data, size_t len, uint32_t now_ms)
{
    if (d->state == MGW_S_IDLE || d->state == MGW_S_CLOSED)
        return MGW_ERR_STATE;
    if (len)
        d->last_rx_ms = now_ms;
    while (len) {
        /* the header first, then exactly the frame's length */
        size_t want = d->rx_len < 2 ? 2 : 2 + get16(d->rx);
        size_t n = want - d->rx_len < len ? want - d->rx_len : len;
        memcpy(d->rx + d->rx_len, data, n);
        d->rx_len += n;
        data += n;
        len -= n;
        if (d->rx_len == 2) {
            size_t fl = get16(d->rx);
            size_t limit = d->state == MGW_S_READY ? d->max_body : PRE_WELCOME_BODY;
            if (fl == 0)
                return fail(d, MGW_E_MALFORMED, MGW_ERR_PROTO);
            if (fl - 1 > limit)
                return fail(d, MGW_E_OVERSIZE, MGW_ERR_PROTO);
            continue;
        }
        if (d->rx_len >= 3 && d->rx_len == 2 + get16(d->rx)) {
            d->rx_len = 0;
            int rc = frame(d, d->rx[2], d->rx + 3, get16(d->rx) - 1u);
            if (rc != MGW_OK)
                return rc;
        }
    }
    return MGW_OK;
}

int mgw_ping(struct mgw *d, uint32_t now_ms)
{
    if (d->state != MGW_S_READY)
        return MGW_ERR_STATE;
    d->last_tx_ms = now_ms;
    return send_tx(d, MGW_PING, 0);
}

int mgw_tick(struct mgw *d, uint32_t now_ms)
{
    if (d->state == MGW_S_IDLE || d->state == MGW_S_CLOSED)
        return MGW_ERR_STATE;
    if (d->state != MGW_S_READY) {
        if (now_ms - d->started_ms > MGW_HANDSHAKE_MS)
            return fail(d, MGW_E_TIMEOUT, MGW_ERR_TIMEOUT);
        return MGW_OK;
    }
    uint32_t hb = (uint32_t)d->heartbeat * 1000u;
    if (now_ms - d->last_rx_ms > hb * 5u / 2u)
        return fail(d, MGW_E_TIMEOUT, MGW_ERR_TIMEOUT);
    if (now_ms - d->last_tx_ms >= hb)
        return mgw_ping(d, now_ms);
    return MGW_OK;
}

int mgw_poll(struct mgw *d, uint32_t now_ms)
{
    uint8_t buf[256];
    for (;;) {
        int n = d->cfg->recv(d->cfg->io, buf, sizeof buf);
        if (n < 0) {
            d->state = MGW_S_CLOSED;
            return MGW_ERR_IO;
        }
        if (n == 0)
            break;
        int rc = mgw_input(d, buf, (size_t)n, now_ms);
        if (rc != MGW_OK)
            return rc;
    }
    return mgw_tick(d, now_ms);
}

int mgw_uplink_id(struct mgw *d, uint32_t msg_id, const uint8_t *payload, size_t len)
{
    if (d->state != MGW_S_READY)
        return MGW_ERR_STATE;
    if (msg_id == 0 || 4 + len > d->max_body)
        return MGW_ERR_ARG;
    put32(d->tx + 3, msg_id);
    if (len)
        memcpy(d->tx + 7, payload, len);
    return send_tx(d, MGW_UPLINK, 4 + len);
}

int mgw_uplink(struct mgw *d, const uint8_t *payload, size_t len, uint32_t *msg_id)
{
    uint32_t id = d->uplink_next++;
    if (d->uplink_next == 0) /* 0 is never an id */
        d->uplink_next = 1;
    int rc = mgw_uplink_id(d, id, payload, len);
    if (rc == MGW_OK && msg_id)
        *msg_id = id;
    return rc;
}

int mgw_bye(struct mgw *d, uint8_t reason)
{
    if (d->state == MGW_S_IDLE || d->state == MGW_S_CLOSED)
        return MGW_ERR_STATE;
    d->tx[3] = reason;
    d->state = MGW_S_CLOSED;
    return send_tx(d, MGW_BYE, 1);
}
