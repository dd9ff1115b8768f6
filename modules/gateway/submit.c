/* submit.c - commands from the HTTP API and the database outbox: the
 * durable, idempotent way into a device's queue, and command status.
 *
 * gw_submit runs one storage transaction (mp_storage_txn): when the caller
 * gave an idempotency key that already names a command (GW_STORE_IDEM),
 * that command's id; otherwise the command is appended to the device's
 * queue (GW_STORE_QUEUE) and, with a key, key -> command id recorded, both
 * in the same commit. It answers once that is committed: one trip to the
 * storage thread, one group commit. Requests with the same key while the
 * first is still being committed wait for it (idem_list, in memory only
 * while pending); later ones find the mapping in storage. Either way they
 * get the same command id and no second command. (Queues written before
 * the two were one transaction may hold a command whose key was never
 * recorded: gw_idem_repair records it at start-up.)
 *
 * Commands from here have a sender starting with '!' ("!http", "!outbox"):
 * no XMPP stanza is sent about them (queue.c, outcome()).
 *
 * Status: a pending command is read from memory (queued, or sent with the
 * time of its first send); an ended one from GW_STORE_STATUS, written by
 * gw_cmd_finish. Callbacks run on the thread that completes the storage
 * call: the caller's loop, or a storage thread for callers without one
 * (the outbox thread). */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct waiter {
    struct waiter *next;
    gw_submit_cb cb;
    void *ud;
};

/* A key being committed (G.idem list, under G.lock). */
struct idem {
    struct idem *next;
    char *key;
    char dev[GW_ID_MAX + 1];
    struct waiter *waiters;
};

struct sub {
    struct gw_cmd *cmd;
    char dev[GW_ID_MAX + 1];
    struct idem *idem; /* NULL without a key */
    gw_submit_cb cb;   /* the first caller (no key) */
    void *ud;
    void *rec; /* the command's queue record (gw_cmd_encode) */
    size_t rec_len;
    /* set by submit_txn on a storage thread */
    int64_t aid;
    int found; /* the key already named command aid, of device found_dev */
    char found_dev[GW_ID_MAX + 1];
};

static struct idem *idem_list;

static struct idem *idem_find(const char *key)
{
    for (struct idem *i = idem_list; i; i = i->next)
        if (!strcmp(i->key, key))
            return i;
    return NULL;
}

/* Ends a pending key: unlinks it and answers every waiter (lock not held). */
static void idem_finish(struct idem *i, int status, int64_t aid, const char *dev)
{
    pthread_mutex_lock(&G.lock);
    for (struct idem **pp = &idem_list; *pp; pp = &(*pp)->next)
        if (*pp == i) {
            *pp = i->next;
            break;
        }
    struct waiter *w = i->waiters;
    pthread_mutex_unlock(&G.lock);
    int first = 1;
    while (w) {
        struct waiter *nx = w->next;
        /* the first waiter is the request that created the command */
        w->cb(w->ud, status, aid, dev, status == GW_SUBMIT_CREATED && !first);
        first = 0;
        free(w);
        w = nx;
    }
    free(i->key);
    free(i);
}

static void answer(struct sub *s, int status)
{
    if (s->idem)
        idem_finish(s->idem, status, s->aid, s->dev);
    else
        s->cb(s->ud, status, s->aid, s->dev, 0);
    gw_cmd_free(s->cmd);
    free(s->rec);
    free(s);
}

/* On a storage thread, in a transaction: the command the key names, or
 * the command appended and the key recorded. Reads s, sets its results. */
static int submit_txn(mp_txn *t, void *ud)
{
    struct sub *s = ud;
    s->aid = 0;
    s->found = 0;
    if (s->idem) {
        void *v;
        size_t vl;
        int rc = mp_txn_kv_get(t, GW_STORE_IDEM, s->idem->key, &v, &vl);
        if (rc == MAGPIE_ERR)
            return MAGPIE_ERR;
        if (rc == MAGPIE_OK) {
            long long aid;
            char fmt[16];
            snprintf(fmt, sizeof fmt, "%%lld %%%ds", GW_ID_MAX);
            rc = sscanf(v, fmt, &aid, s->found_dev) == 2 ? MAGPIE_OK : MAGPIE_ERR;
            free(v);
            if (rc != MAGPIE_OK) {
                mp_log(MP_LOG_ERROR, "gateway: bad idempotency record for %s", s->idem->key);
                return MAGPIE_ERR;
            }
            s->aid = aid;
            s->found = 1;
            return MAGPIE_OK;
        }
    }
    if (mp_txn_archive_append(t, GW_STORE_QUEUE, s->dev, s->cmd->sender, s->rec, s->rec_len,
                              &s->aid) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (!s->idem)
        return MAGPIE_OK;
    char val[GW_ID_MAX + 48]; /* the time: for pruning (prune.c) */
    int n = snprintf(val, sizeof val, "%lld %s %lld", (long long)s->aid, s->dev,
                     (long long)gw_now_us());
    return mp_txn_kv_set(t, GW_STORE_IDEM, s->idem->key, val, (size_t)n);
}

/* Back on the caller's loop: the transaction is committed (or failed).
 * A new command is durable: queue it and send it, then answer. */
static void submitted(void *ud, int rc)
{
    struct sub *s = ud;
    if (rc != MAGPIE_OK) {
        answer(s, GW_SUBMIT_ERR);
        return;
    }
    if (s->found) {
        if (strcmp(s->found_dev, s->dev) != 0) {
            snprintf(s->dev, sizeof s->dev, "%s", s->found_dev);
            answer(s, GW_SUBMIT_CONFLICT);
        } else {
            answer(s, GW_SUBMIT_EXISTS);
        }
        return;
    }
    gw_queue_accepted(s->dev, s->cmd, s->aid);
    s->cmd = NULL; /* taken */
    answer(s, GW_SUBMIT_CREATED);
}

static void start(struct sub *s)
{
    s->rec = gw_cmd_encode(s->cmd, &s->rec_len);
    if (mp_storage_txn(G.domain, GW_STORE_QUEUE, s->dev, submit_txn, submitted, s) != MAGPIE_OK)
        answer(s, GW_SUBMIT_ERR);
}

/* The device's record, for a device not in memory yet. */
static void record_read(void *ud, int rc, const void *data, size_t len)
{
    struct sub *s = ud;
    struct gw_dev *d = NULL;
    pthread_mutex_lock(&G.lock);
    if (rc == MAGPIE_OK)
        gw_dev_set_record(s->dev, data, len, &d);
    pthread_mutex_unlock(&G.lock);
    if (d)
        start(s);
    else
        answer(s, rc == MAGPIE_ERR ? GW_SUBMIT_ERR : GW_SUBMIT_NODEV);
}

void gw_submit(const char *dev, const char *origin, const char *key, const uint8_t *payload,
               size_t len, long long ttl, gw_submit_cb cb, void *ud)
{
    struct gw_cmd *c = calloc(1, sizeof *c + len);
    c->queued_us = gw_now_us();
    c->expires_us = ttl ? c->queued_us + ttl * 1000000 : 0;
    c->sender = strdup(origin);
    c->sid = key ? strdup(key) : NULL;
    c->len = len;
    if (len)
        memcpy(c->payload, payload, len);
    struct sub *s = calloc(1, sizeof *s);
    s->cmd = c;
    snprintf(s->dev, sizeof s->dev, "%s", dev);
    s->cb = cb;
    s->ud = ud;
    pthread_mutex_lock(&G.lock);
    struct gw_dev *d = gw_dev_find(dev);
    if (key) {
        struct idem *i = idem_find(key);
        struct waiter *w = calloc(1, sizeof *w);
        w->cb = cb;
        w->ud = ud;
        if (i) { /* being committed by another request: wait for it */
            struct waiter **pp = &i->waiters;
            while (*pp)
                pp = &(*pp)->next;
            *pp = w;
            pthread_mutex_unlock(&G.lock);
            gw_cmd_free(c);
            free(s);
            return;
        }
        i = calloc(1, sizeof *i);
        i->key = strdup(key);
        snprintf(i->dev, sizeof i->dev, "%s", dev);
        i->waiters = w;
        i->next = idem_list;
        idem_list = i;
        s->idem = i;
    }
    pthread_mutex_unlock(&G.lock);
    if (d) {
        start(s);
        return;
    }
    if (mp_kv_get(G.domain, GW_STORE_DEVICES, dev, record_read, s) != MAGPIE_OK)
        answer(s, GW_SUBMIT_ERR);
}

/* ---- start-up repair ---- */

void gw_idem_repair(const struct gw_dev *d, const struct gw_cmd *c)
{
    if (c->sender[0] != '!' || !c->sid)
        return;
    void *v;
    size_t vl;
    int rc = mp_kv_get_sync(G.domain, GW_STORE_IDEM, c->sid, &v, &vl);
    if (rc == MAGPIE_OK) {
        free(v);
        return;
    }
    if (rc != MAGPIE_NOTFOUND)
        return;
    char val[GW_ID_MAX + 48];
    int n = snprintf(val, sizeof val, "%lld %s %lld", (long long)c->aid, d->id,
                     (long long)c->queued_us);
    mp_kv_set_sync(G.domain, GW_STORE_IDEM, c->sid, val, (size_t)n);
    mp_log(MP_LOG_INFO, "gateway: idempotency key of command %lld recorded again",
           (long long)c->aid);
}

/* ---- status ---- */

struct status_ctx {
    gw_status_cb cb;
    void *ud;
    int64_t aid;
};

static void status_read(void *ud, int rc, const void *data, size_t len)
{
    struct status_ctx *x = ud;
    struct gw_status st = {.aid = x->aid};
    if (rc == MAGPIE_OK) {
        char buf[256];
        size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
        memcpy(buf, data, n);
        buf[n] = '\0';
        long long q, s, e;
        if (sscanf(buf, "1 %64s %15s %d %lld %lld %lld", st.dev, st.state, &st.result, &q, &s,
                   &e) == 6) {
            st.queued_us = q;
            st.sent_us = s;
            st.ended_us = e;
            x->cb(x->ud, MAGPIE_OK, &st);
            free(x);
            return;
        }
        rc = MAGPIE_ERR;
    }
    x->cb(x->ud, rc, NULL);
    free(x);
}

void gw_status(int64_t aid, gw_status_cb cb, void *ud)
{
    struct gw_status st = {.aid = aid};
    int found = 0;
    pthread_mutex_lock(&G.lock);
    for (size_t i = 0; i < G.tab_size && !found; i++)
        for (struct gw_dev *d = G.tab[i]; d && !found; d = d->hnext)
            for (struct gw_cmd *c = d->q; c; c = c->next)
                if (c->aid == aid) {
                    snprintf(st.dev, sizeof st.dev, "%s", d->id);
                    snprintf(st.state, sizeof st.state, "%s", c->sends ? "sent" : "queued");
                    st.result = -1;
                    st.queued_us = c->queued_us;
                    st.sent_us = c->sent_us;
                    st.expires_us = c->expires_us;
                    found = 1;
                    break;
                }
    pthread_mutex_unlock(&G.lock);
    if (found) {
        cb(ud, MAGPIE_OK, &st);
        return;
    }
    struct status_ctx *x = calloc(1, sizeof *x);
    x->cb = cb;
    x->ud = ud;
    x->aid = aid;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)aid);
    if (mp_kv_get(G.domain, GW_STORE_STATUS, key, status_read, x) != MAGPIE_OK) {
        free(x);
        cb(ud, MAGPIE_ERR, NULL);
    }
}

int gw_status_record(const struct gw_dev *d, const struct gw_cmd *c, const char *state, int result,
                     int64_t now_us, mp_store_done_cb cb, void *ud)
{
    char key[32], val[256];
    snprintf(key, sizeof key, "%lld", (long long)c->aid);
    int n = snprintf(val, sizeof val, "1 %s %s %d %lld %lld %lld", d->id, state, result,
                     (long long)c->queued_us, (long long)c->sent_us, (long long)now_us);
    return mp_kv_set(G.domain, GW_STORE_STATUS, key, val, (size_t)n, cb, ud);
}
