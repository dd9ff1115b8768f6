/* conn.c - the device listener: the MGW protocol (xep/x-gateway/spec.md),
 * server side. Each connection runs on the worker that accepted it; its
 * state (struct gw_conn) is touched only there. A bad frame ends that
 * connection with an ERROR frame and nothing else.
 *
 * Memory. An idle device costs what its connection holds for as long as
 * it is connected, so that is kept small (bench/gateway.sh measures it):
 * what only the handshake needs (nonces, the proof, the claimed id) is a
 * separate allocation freed at WELCOME, and there is no timer per
 * connection: one tick per worker (TICK_MS) walks the worker's connections
 * and ends those past their handshake deadline or silent for too long. */
#include "gateway.h"

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define PRE_WELCOME_BODY 128
#define TICK_MS          500 /* deadlines are checked this often */

enum conn_state { C_HELLO, C_CHALLENGED, C_READY, C_DEAD };

/* What only the handshake needs (from HELLO to WELCOME). */
struct gw_hs {
    char dev_id[GW_ID_MAX + 1];
    uint8_t cnonce[16], snonce[16], mac[32];
    uint8_t have_mac;
    uint8_t rec; /* provisioning record: 0 being read, 1 found, 2 not found */
};

struct gw_conn {
    struct gw_conn *tnext, *tprev; /* this worker's connections */
    mp_conn *c;
    mp_loop *loop;
    struct gw_dev *dev; /* once authenticated */
    struct gw_hs *hs;   /* from HELLO until WELCOME */
    uint64_t id;
    int64_t t_us; /* before WELCOME: when opened; then: when last heard from */
    uint8_t st;   /* enum conn_state */
    uint8_t closed;
    uint16_t pending; /* storage reads in flight */
};

static _Thread_local struct gw_conn *tl_conns;
static _Thread_local void *tl_tick; /* this worker's tick (struct tick_mem) */

/* The id the connection claims or has, for logs. */
static const char *conn_name(const struct gw_conn *k)
{
    if (k->dev)
        return k->dev->id;
    return k->hs && k->hs->dev_id[0] ? k->hs->dev_id : "-";
}

static uint32_t get16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

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

/* Writes hdr and body as one write when small (one segment, one send). */
static void write2(struct gw_conn *k, const uint8_t *hdr, size_t hl, const void *body, size_t len)
{
    uint8_t b[512];
    if (hl + len <= sizeof b) {
        memcpy(b, hdr, hl);
        if (len)
            memcpy(b + hl, body, len);
        mp_conn_write(k->c, (const char *)b, hl + len);
        return;
    }
    mp_conn_write(k->c, (const char *)hdr, hl);
    if (len)
        mp_conn_write(k->c, body, len);
}

static void send_frame(struct gw_conn *k, uint8_t type, const void *body, size_t len)
{
    uint8_t hdr[3];
    put16(hdr, (uint32_t)(1 + len));
    hdr[2] = type;
    write2(k, hdr, 3, body, len);
}

/* The device of k is offline from now on (if k is still its connection):
 * at once, not when the socket is finally closed. */
static void detach(struct gw_conn *k)
{
    struct gw_out out = {.n = 0};
    pthread_mutex_lock(&G.lock);
    if (k->dev && k->dev->conn == k) {
        k->dev->conn = NULL;
        k->dev->conn_id = 0;
        mp_log(MP_LOG_DEBUG, "gateway: device %s offline", k->dev->id);
        gw_presence_to_owners(k->dev, 0, &out);
    }
    pthread_mutex_unlock(&G.lock);
    gw_out_flush(&out);
}

/* Ends the connection with ERROR(code, text). */
static void fail(struct gw_conn *k, uint8_t code, const char *text)
{
    uint8_t b[128];
    size_t tl = strlen(text);
    if (tl > 100)
        tl = 100;
    b[0] = code;
    memcpy(b + 1, text, tl);
    if (k->st == C_DEAD)
        return;
    send_frame(k, GW_ERROR, b, 1 + tl);
    mp_log(MP_LOG_DEBUG, "gateway: %s (%s): error %d: %s", mp_conn_peer(k->c), conn_name(k), code,
           text);
    if (code == GW_E_AUTH_FAILED)
        mp_counter_add(G.c.auth_failures, 1);
    else if (code == GW_E_TIMEOUT)
        mp_counter_add(G.c.timeouts, 1);
    else if (code != GW_E_REPLACED && code != GW_E_UNAVAILABLE)
        mp_counter_add(G.c.bad_frames, 1);
    k->st = C_DEAD;
    detach(k);
    mp_conn_close(k->c);
}

/* ---- deadlines: one tick per worker ---- */

/* A worker's tick event, in memory of our own (freed at unload: the loops
 * are freed before, and libevent removes their events itself). */
struct tick_mem {
    struct tick_mem *next;
};
static struct tick_mem *ticks; /* under G.lock */

/* Every TICK_MS: the handshake deadline of each connection of this worker,
 * then liveness (silent for dead_after = offline). A deadline is thus met
 * within TICK_MS. */
static void on_tick(evutil_socket_t fd, short what, void *ud)
{
    (void)fd;
    (void)what;
    (void)ud;
    int64_t now = gw_now_us();
    int64_t hs = (int64_t)G.handshake_timeout * 1000000, dead = (int64_t)G.dead_after * 1000000;
    for (struct gw_conn *k = tl_conns, *nx; k; k = nx) {
        nx = k->tnext; /* fail() closes k later, from the loop: k stays listed */
        if (k->st == C_READY && now >= k->t_us + dead)
            fail(k, GW_E_TIMEOUT, "silent for too long");
        else if (k->st != C_READY && k->st != C_DEAD && now >= k->t_us + hs)
            fail(k, GW_E_TIMEOUT, "handshake not completed in time");
    }
}

static void tick_start(void)
{
    if (tl_tick)
        return;
    struct tick_mem *t = calloc(1, sizeof *t + event_get_struct_event_size());
    struct event *ev = (struct event *)(t + 1);
    event_assign(ev, mp_loop_base(mp_loop_current()), -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};
    event_add(ev, &tv);
    pthread_mutex_lock(&G.lock);
    t->next = ticks;
    ticks = t;
    pthread_mutex_unlock(&G.lock);
    tl_tick = t;
}

/* ---- the expiry sweep: one timer, on the first worker that needs it ---- */

static atomic_int sweep_started;
static void *sweep_mem;

static void on_sweep(evutil_socket_t fd, short what, void *ud)
{
    (void)fd;
    (void)what;
    (void)ud;
    struct gw_out out = {.n = 0};
    int64_t now = gw_now_us();
    pthread_mutex_lock(&G.lock);
    gw_sweep(now, &out);
    pthread_mutex_unlock(&G.lock);
    gw_out_flush(&out);
    gw_prune_tick(now);
}

void gw_sweep_start(void)
{
    mp_loop *l = mp_loop_current();
    if (!l || atomic_exchange(&sweep_started, 1))
        return;
    /* our own memory: the loop may be freed before the module is unloaded,
     * and libevent then removes the event itself */
    sweep_mem = calloc(1, event_get_struct_event_size());
    event_assign(sweep_mem, mp_loop_base(l), -1, EV_PERSIST, on_sweep, NULL);
    struct timeval tv = {1, 0};
    event_add(sweep_mem, &tv);
    gw_hook_resume();
}

void gw_sweep_free(void)
{
    free(sweep_mem);
    sweep_mem = NULL;
    atomic_store(&sweep_started, 0);
    for (struct tick_mem *t = ticks, *nx; t; t = nx) {
        nx = t->next;
        free(t);
    }
    ticks = NULL;
}

/* ---- sending commands ---- */

void gw_pump(struct gw_dev *d, struct gw_out *out)
{
    struct gw_conn *k = d->conn;
    if (!k || k->st != C_READY)
        return;
    int64_t now = gw_now_us();
    int inflight = 0;
    for (struct gw_cmd *c = d->q; c; c = c->next)
        if (c->sent_conn == k->id)
            inflight++;
    for (struct gw_cmd *c = d->q, *nx; c; c = nx) {
        nx = c->next;
        if (c->expires_us && c->expires_us <= now) {
            mp_counter_add(G.c.expired, 1);
            gw_cmd_finish(d, c, "expired", -1, out);
            continue;
        }
        if (c->sent_conn == k->id)
            continue;
        if (inflight >= G.window)
            break;
        uint8_t hdr[9];
        uint32_t ttl = 0;
        if (c->expires_us) {
            int64_t left = (c->expires_us - now + 999999) / 1000000;
            ttl = left < 1 ? 1 : left > 65535 ? 65535 : (uint32_t)left;
        }
        put16(hdr, (uint32_t)(1 + 6 + c->len));
        hdr[2] = GW_COMMAND;
        put32(hdr + 3, (uint32_t)c->aid);
        put16(hdr + 7, ttl);
        write2(k, hdr, sizeof hdr, c->payload, c->len);
        if (c->sends++)
            mp_counter_add(G.c.retried, 1);
        else
            c->sent_us = now;
        mp_counter_add(G.c.sent, 1);
        c->sent_conn = k->id;
        inflight++;
    }
}

void gw_pump_post(void *dev)
{
    struct gw_dev *d = dev;
    struct gw_out out = {.n = 0};
    pthread_mutex_lock(&G.lock);
    if (d->conn && d->loop == mp_loop_current())
        gw_pump(d, &out);
    pthread_mutex_unlock(&G.lock);
    gw_out_flush(&out);
}

void gw_pump_on(mp_loop *loop, struct gw_dev *d)
{
    if (loop == mp_loop_current())
        gw_pump_post(d); /* the connection is on this loop: send now */
    else
        mp_loop_post(loop, gw_pump_post, d);
}

/* Posted to the loop of a replaced connection: ends it. */
static void kick_post(void *dev)
{
    for (struct gw_conn *k = tl_conns, *nx; k; k = nx) {
        nx = k->tnext;
        pthread_mutex_lock(&G.lock);
        int old = k->dev == dev && k->st == C_READY && ((struct gw_dev *)dev)->conn != k;
        pthread_mutex_unlock(&G.lock);
        if (old) {
            mp_counter_add(G.c.replaced, 1);
            fail(k, GW_E_REPLACED, "another connection authenticated as this device");
        }
    }
}

/* ---- handshake ---- */

static void auth_mac(const struct gw_dev *d, uint8_t tag, const uint8_t *n1, const uint8_t *n2,
                     uint8_t out[32])
{
    uint8_t msg[2 + 32 + 1 + GW_ID_MAX];
    size_t idl = strlen(d->id);
    msg[0] = tag;
    msg[1] = 1;
    memcpy(msg + 2, n1, 16);
    memcpy(msg + 18, n2, 16);
    msg[34] = (uint8_t)idl;
    memcpy(msg + 35, d->id, idl);
    unsigned int ol = 32;
    HMAC(EVP_sha256(), d->secret, (int)d->secret_len, msg, 35 + idl, out, &ol);
}

/* Checks the AUTH once both it and the record are there. */
static void try_auth(struct gw_conn *k)
{
    struct gw_hs *hs = k->hs;
    if (k->st != C_CHALLENGED || !hs->have_mac || hs->rec == 0)
        return;
    struct gw_out out = {.n = 0};
    uint8_t want[32], body[36];
    pthread_mutex_lock(&G.lock);
    struct gw_dev *d = hs->rec == 1 ? gw_dev_find(hs->dev_id) : NULL;
    if (d)
        auth_mac(d, 'D', hs->snonce, hs->cnonce, want);
    if (!d || CRYPTO_memcmp(want, hs->mac, 32) != 0) {
        pthread_mutex_unlock(&G.lock);
        fail(k, GW_E_AUTH_FAILED, "authentication failed");
        return;
    }
    if (d->conn && d->conn != k) { /* the older connection goes */
        if (d->loop == k->loop) {
            struct gw_conn *o = d->conn;
            d->conn = NULL;
            mp_counter_add(G.c.replaced, 1);
            pthread_mutex_unlock(&G.lock);
            fail(o, GW_E_REPLACED, "another connection authenticated as this device");
            pthread_mutex_lock(&G.lock);
        } else {
            mp_loop_post(d->loop, kick_post, d);
        }
    }
    k->dev = d;
    k->st = C_READY;
    d->conn = k;
    d->loop = k->loop;
    d->conn_id = k->id;
    put16(body, (uint32_t)G.heartbeat);
    put16(body + 2, (uint32_t)G.max_body);
    auth_mac(d, 'S', hs->cnonce, hs->snonce, body + 4);
    k->hs = NULL; /* the handshake is over: the device is k->dev */
    k->t_us = gw_now_us();
    send_frame(k, GW_WELCOME, body, sizeof body);
    mp_counter_add(G.c.connects, 1);
    mp_log(MP_LOG_DEBUG, "gateway: device %s online from %s", d->id, mp_conn_peer(k->c));
    gw_presence_to_owners(d, 1, &out);
    gw_pump(d, &out);
    pthread_mutex_unlock(&G.lock);
    OPENSSL_cleanse(hs, sizeof *hs);
    free(hs);
    gw_out_flush(&out);
}

static void free_conn(struct gw_conn *k)
{
    free(k->hs);
    free(k);
}

/* The provisioning record, read fresh for every HELLO. */
static void on_record(void *ud, int rc, const void *data, size_t len)
{
    struct gw_conn *k = ud;
    k->pending--;
    if (k->closed) {
        if (!k->pending)
            free_conn(k);
        return;
    }
    pthread_mutex_lock(&G.lock);
    if (rc == MAGPIE_OK && gw_dev_set_record(k->hs->dev_id, data, len, NULL) == MAGPIE_OK)
        k->hs->rec = 1;
    else
        k->hs->rec = 2;
    pthread_mutex_unlock(&G.lock);
    if (rc == MAGPIE_ERR) {
        fail(k, GW_E_UNAVAILABLE, "storage unavailable");
        return;
    }
    try_auth(k);
}

static int valid_id_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

static void on_hello(struct gw_conn *k, const uint8_t *b, size_t len)
{
    if (len < 22 || b[0] != 'M' || b[1] != 'G' || b[2] > b[3] || b[20] < 1 || b[20] > GW_ID_MAX ||
        len != 21u + b[20]) {
        fail(k, GW_E_MALFORMED, "bad HELLO");
        return;
    }
    if (b[2] > 1 || b[3] < 1) {
        fail(k, GW_E_VERSION, "1-1");
        return;
    }
    for (size_t i = 0; i < b[20]; i++)
        if (!valid_id_char(b[21 + i])) {
            fail(k, GW_E_MALFORMED, "bad device id");
            return;
        }
    struct gw_hs *hs = k->hs = calloc(1, sizeof *k->hs);
    memcpy(hs->cnonce, b + 4, 16);
    memcpy(hs->dev_id, b + 21, b[20]);
    hs->dev_id[b[20]] = '\0';
    if (RAND_bytes(hs->snonce, sizeof hs->snonce) != 1) {
        fail(k, GW_E_UNAVAILABLE, "no randomness");
        return;
    }
    uint8_t body[17];
    body[0] = 1;
    memcpy(body + 1, hs->snonce, 16);
    k->st = C_CHALLENGED;
    send_frame(k, GW_CHALLENGE, body, sizeof body);
    k->pending++;
    if (mp_kv_get(G.domain, GW_STORE_DEVICES, hs->dev_id, on_record, k) != MAGPIE_OK) {
        k->pending--;
        fail(k, GW_E_UNAVAILABLE, "storage unavailable");
    }
}

/* ---- authenticated frames ---- */

static void on_ack(struct gw_conn *k, const uint8_t *b)
{
    uint32_t mid = get32(b);
    int result = b[4];
    struct gw_out out = {.n = 0};
    pthread_mutex_lock(&G.lock);
    struct gw_dev *d = k->dev;
    struct gw_cmd *c = d->q;
    while (c && !((uint32_t)c->aid == mid && c->sends))
        c = c->next;
    if (c) {
        int64_t ms = (gw_now_us() - c->queued_us) / 1000;
        mp_counter_add(G.c.latency_ms, ms > 0 ? (uint64_t)ms : 0);
        mp_counter_add(result == GW_R_DONE ? G.c.acked : G.c.failed, 1);
        if (result > GW_R_UNSUPPORTED)
            result = GW_R_FAILED;
        gw_cmd_finish(d, c, "acked", result, &out);
    } else {
        mp_counter_add(G.c.late_acks, 1);
    }
    if (d->conn == k)
        gw_pump(d, &out);
    pthread_mutex_unlock(&G.lock);
    gw_out_flush(&out);
}

static void on_uplink(struct gw_conn *k, const uint8_t *b, size_t len)
{
    uint32_t mid = get32(b);
    uint8_t ack[5];
    if (mid == 0) {
        fail(k, GW_E_MALFORMED, "uplink id 0");
        return;
    }
    put32(ack, mid);
    ack[4] = 0;
    struct gw_out out = {.n = 0};
    pthread_mutex_lock(&G.lock);
    struct gw_dev *d = k->dev;
    int dup = 0;
    for (unsigned i = 0; i < GW_UPLINK_SEEN; i++)
        if (d->up_seen[i] == mid)
            dup = 1;
    if (!dup && d->n_owners == 0) {
        ack[4] = 1; /* REJECTED: nobody to tell */
    } else if (!dup) {
        d->up_seen[d->up_next] = mid;
        d->up_next = (d->up_next + 1) % GW_UPLINK_SEEN;
        gw_uplink_to_owners(d, mid, b + 4, len - 4, &out);
        mp_counter_add(G.c.uplinks, 1);
    }
    pthread_mutex_unlock(&G.lock);
    gw_out_flush(&out);
    send_frame(k, GW_ACK, ack, sizeof ack);
}

static void on_frame(struct gw_conn *k, uint8_t t, const uint8_t *b, size_t len)
{
    if (t < GW_HELLO || t > GW_BYE) {
        fail(k, GW_E_UNKNOWN_TYPE, "unknown frame type");
        return;
    }
    if (t == GW_ERROR || t == GW_BYE) {
        mp_log(MP_LOG_DEBUG, "gateway: %s (%s) closes: %s %d", mp_conn_peer(k->c), conn_name(k),
               t == GW_BYE ? "BYE" : "ERROR", len ? b[0] : 0);
        k->st = C_DEAD;
        detach(k);
        mp_conn_close(k->c);
        return;
    }
    if (k->st == C_HELLO && t == GW_HELLO) {
        on_hello(k, b, len);
        return;
    }
    if (k->st == C_CHALLENGED && t == GW_AUTH && !k->hs->have_mac) {
        if (len != 32) {
            fail(k, GW_E_MALFORMED, "bad AUTH");
            return;
        }
        memcpy(k->hs->mac, b, 32);
        k->hs->have_mac = 1;
        try_auth(k);
        return;
    }
    if (k->st != C_READY) {
        fail(k, GW_E_STATE, "frame not allowed before WELCOME");
        return;
    }
    switch (t) {
    case GW_PING:
    case GW_PONG:
        if (len) {
            fail(k, GW_E_MALFORMED, "PING/PONG with a body");
            return;
        }
        if (t == GW_PING)
            send_frame(k, GW_PONG, NULL, 0);
        return;
    case GW_ACK:
        if (len != 5) {
            fail(k, GW_E_MALFORMED, "ACK of the wrong size");
            return;
        }
        on_ack(k, b);
        return;
    case GW_UPLINK:
        if (len < 4) {
            fail(k, GW_E_MALFORMED, "UPLINK too short");
            return;
        }
        on_uplink(k, b, len);
        return;
    default:
        fail(k, GW_E_STATE, "frame not allowed from a device");
        return;
    }
}

/* ---- listener callbacks ---- */

static void *on_open(mp_conn *c, void *ud)
{
    (void)ud;
    struct gw_conn *k = calloc(1, sizeof *k);
    k->c = c;
    k->loop = mp_loop_current();
    pthread_mutex_lock(&G.lock);
    k->id = ++G.next_conn_id;
    pthread_mutex_unlock(&G.lock);
    k->st = C_HELLO;
    k->t_us = gw_now_us();
    tick_start();
    k->tnext = tl_conns;
    if (tl_conns)
        tl_conns->tprev = k;
    tl_conns = k;
    gw_sweep_start();
    return k;
}

static size_t on_data(mp_conn *c, void *state, const char *data, size_t len)
{
    (void)c;
    struct gw_conn *k = state;
    const uint8_t *p = (const uint8_t *)data;
    size_t used = 0;
    if (k->st == C_DEAD)
        return len;
    if (k->st == C_READY)
        k->t_us = gw_now_us();
    while (len - used >= 2) {
        size_t fl = get16(p + used);
        size_t limit = k->st == C_READY ? (size_t)G.max_body : PRE_WELCOME_BODY;
        if (fl == 0) {
            fail(k, GW_E_MALFORMED, "frame length 0");
            return len;
        }
        if (fl - 1 > limit) {
            fail(k, GW_E_OVERSIZE, "frame too large");
            return len;
        }
        if (len - used < 2 + fl)
            break;
        on_frame(k, p[used + 2], p + used + 3, fl - 1);
        if (k->st == C_DEAD)
            return len;
        used += 2 + fl;
    }
    return used;
}

static void on_closed(mp_conn *c, void *state)
{
    (void)c;
    struct gw_conn *k = state;
    if (k->tprev)
        k->tprev->tnext = k->tnext;
    else
        tl_conns = k->tnext;
    if (k->tnext)
        k->tnext->tprev = k->tprev;
    detach(k);
    k->closed = 1;
    k->st = C_DEAD;
    if (!k->pending)
        free_conn(k);
}

const struct mp_listener_ops gw_listener_ops = {on_open, on_data, on_closed};
