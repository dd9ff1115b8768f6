/* prune.c - bounded retention of the records ended commands leave behind.
 *
 * Three keyval stores would otherwise grow forever: the status records
 * (GW_STORE_STATUS, one per ended command), the idempotency keys
 * (GW_STORE_IDEM) and the fallback webhook records (GW_STORE_HOOK). Every
 * status_retention / 4 seconds (at least 1, at most 3600) a pass walks
 * each store in pages of PAGE keys (mp_kv_scan) and deletes, one
 * asynchronous call at a time, on the loop of the expiry sweep:
 *
 *   status  a record whose command ended more than status_retention ago,
 *           once its row is gone from the device's queue archive
 *           (GW_STORE_QUEUE): while the row is there the record is what
 *           tells a restart not to send the command again (queue.c,
 *           gw_load_all), so it stays. The check is a count on the device's
 *           archive key, which runs on the same storage thread as, and
 *           after, any compaction issued before it.
 *   idem    a key whose command is not pending (in memory) and whose
 *           status record is gone or older than the retention: a key thus
 *           lives at least as long as its command's status, and never
 *           less than the command's time to live. Keys recorded within the
 *           retention (the time in their value) are not even looked at.
 *   hook    a "delivered" or "gave-up" record older than the retention
 *           ("pending" ones are still being posted).
 *
 * Before each pass the ended rows of idle devices are compacted
 * (gw_compact_ended), so that a device with few commands lets its old
 * status records go too. Counters: pruned_status, pruned_idempotency_keys,
 * pruned_webhooks. status_retention 0 keeps everything. */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 100

enum { PH_STATUS, PH_IDEM, PH_HOOK, PH_END };

/* A record found old enough in the current page. */
struct cand {
    char *key;
    int64_t aid;
    char dev[GW_ID_MAX + 1];
};

static struct {
    int running;
    int stopping;
    int64_t next_us, cutoff;
    int phase;
    char *after; /* the last key of the previous page */
    int more;    /* the previous page was full */
    struct cand *c;
    size_t n, i;
} P;

static const char *const stores[] = {GW_STORE_STATUS, GW_STORE_IDEM, GW_STORE_HOOK};

static void step(void);
static void scan(void);

static void cands_free(void)
{
    for (size_t k = 0; k < P.n; k++)
        free(P.c[k].key);
    free(P.c);
    P.c = NULL;
    P.n = P.i = 0;
}

static void pass_end(void)
{
    cands_free();
    free(P.after);
    P.after = NULL;
    P.running = 0;
    int64_t every = G.retention / 4;
    if (every < 1)
        every = 1;
    if (every > 3600)
        every = 3600;
    P.next_us = gw_now_us() + every * 1000000;
}

/* Copies a value into a NUL-terminated buffer. */
static void text(char *buf, size_t size, const void *data, size_t len)
{
    size_t n = len < size - 1 ? len : size - 1;
    memcpy(buf, data, n);
    buf[n] = '\0';
}

/* 1 (and *aid, dev set) when item is a candidate of the current phase. */
static int candidate(const mp_map_item *it, int64_t *aid, char *dev)
{
    char buf[256], state[16];
    long long a, q, s, e;
    int result;
    text(buf, sizeof buf, it->data, it->len);
    switch (P.phase) {
    case PH_STATUS: /* "1 <device> <state> <result> <queued> <sent> <ended>" */
        if (sscanf(buf, "1 %64s %15s %d %lld %lld %lld", dev, state, &result, &q, &s, &e) != 6 ||
            e >= P.cutoff)
            return 0;
        *aid = strtoll(it->field, NULL, 10);
        return *aid > 0;
    case PH_IDEM: /* "<command id> <device> [<time recorded>]" */
        switch (sscanf(buf, "%lld %64s %lld", &a, dev, &e)) {
        case 3: /* recorded within the retention: its command ended within it */
            if (e >= P.cutoff)
                return 0;
            break;
        case 2: /* the older form: ask its status */
            break;
        default:
            return 0;
        }
        *aid = a;
        return 1;
    case PH_HOOK: /* "delivered <us>", "gave-up <us>"; "pending <n>" stays */
        if (sscanf(buf, "%15s %lld", state, &e) != 2 || !strcmp(state, "pending") ||
            e >= P.cutoff)
            return 0;
        *aid = 0;
        dev[0] = '\0';
        return 1;
    }
    return 0;
}

static void scanned(void *ud, int rc, const mp_map_item *items, size_t n)
{
    (void)ud;
    if (P.stopping)
        return;
    if (rc != MAGPIE_OK) {
        mp_log(MP_LOG_WARN, "gateway: pruning: cannot read %s", stores[P.phase]);
        pass_end();
        return;
    }
    cands_free();
    P.more = n == PAGE;
    if (n) {
        free(P.after);
        P.after = strdup(items[n - 1].field);
    }
    for (size_t k = 0; k < n; k++) {
        struct cand c = {0};
        if (!candidate(&items[k], &c.aid, c.dev))
            continue;
        c.key = strdup(items[k].field);
        P.c = realloc(P.c, (P.n + 1) * sizeof *P.c);
        P.c[P.n++] = c;
    }
    step();
}

/* The next page of the current store, or the next store. */
static void scan(void)
{
    if (P.phase == PH_END) {
        pass_end();
        return;
    }
    if (mp_kv_scan(G.domain, stores[P.phase], P.after ? P.after : "", PAGE, scanned, NULL) !=
        MAGPIE_OK) {
        mp_log(MP_LOG_WARN, "gateway: pruning: storage refused a scan of %s", stores[P.phase]);
        pass_end();
    }
}

static void next(void)
{
    P.i++;
    step();
}

static void deleted(void *ud, int rc)
{
    mp_counter *counter = ud;
    if (P.stopping)
        return;
    if (rc == MAGPIE_OK)
        mp_counter_add(counter, 1);
    next();
}

static void del(mp_counter *counter)
{
    if (mp_kv_del(G.domain, stores[P.phase], P.c[P.i].key, deleted, counter) != MAGPIE_OK)
        next();
}

/* Status: the command's row left in its device's queue archive. */
static void row_counted(void *ud, int rc, int64_t n)
{
    (void)ud;
    if (P.stopping)
        return;
    if (rc == MAGPIE_OK && n == 0)
        del(G.c.pruned_status);
    else
        next();
}

/* Idempotency key: its command's status record. */
static void status_read(void *ud, int rc, const void *data, size_t len)
{
    (void)ud;
    if (P.stopping)
        return;
    int old = rc == MAGPIE_NOTFOUND;
    if (rc == MAGPIE_OK) {
        char buf[256], dev[GW_ID_MAX + 1], state[16];
        long long q, s, e;
        int result;
        text(buf, sizeof buf, data, len);
        old = sscanf(buf, "1 %64s %15s %d %lld %lld %lld", dev, state, &result, &q, &s, &e) == 6 &&
              e < P.cutoff;
    }
    if (old)
        del(G.c.pruned_idem);
    else
        next();
}

static int pending(const char *dev, int64_t aid)
{
    int found = 0;
    pthread_mutex_lock(&G.lock);
    struct gw_dev *d = gw_dev_find(dev);
    for (struct gw_cmd *c = d ? d->q : NULL; c && !found; c = c->next)
        found = c->aid == aid;
    pthread_mutex_unlock(&G.lock);
    return found;
}

/* Handles candidate P.i, or moves on to the next page. */
static void step(void)
{
    if (P.i >= P.n) {
        cands_free();
        if (!P.more) {
            P.phase++;
            free(P.after);
            P.after = NULL;
        }
        scan();
        return;
    }
    struct cand *c = &P.c[P.i];
    char key[32];
    switch (P.phase) {
    case PH_STATUS: {
        mp_archive_filter q = {.after_id = c->aid - 1, .before_id = c->aid + 1};
        if (mp_archive_count(G.domain, GW_STORE_QUEUE, c->dev, &q, row_counted, NULL) !=
            MAGPIE_OK)
            next();
        return;
    }
    case PH_IDEM:
        if (pending(c->dev, c->aid)) {
            next();
            return;
        }
        snprintf(key, sizeof key, "%lld", (long long)c->aid);
        if (mp_kv_get(G.domain, GW_STORE_STATUS, key, status_read, NULL) != MAGPIE_OK)
            next();
        return;
    default:
        del(G.c.pruned_hooks);
        return;
    }
}

void gw_prune_tick(int64_t now_us)
{
    if (G.retention <= 0 || P.running || P.stopping || now_us < P.next_us)
        return;
    P.running = 1;
    P.phase = PH_STATUS;
    P.more = 0;
    P.cutoff = now_us - (int64_t)G.retention * 1000000;
    pthread_mutex_lock(&G.lock);
    gw_compact_ended();
    pthread_mutex_unlock(&G.lock);
    scan();
}

void gw_prune_load(mp_module *m)
{
    G.retention = mp_module_opt_int(m, "status_retention");
    G.c.pruned_status = mp_counter_new(m, "pruned_status",
                                       "status records of ended commands removed after "
                                       "status_retention");
    G.c.pruned_idem = mp_counter_new(m, "pruned_idempotency_keys",
                                     "idempotency keys removed after status_retention");
    G.c.pruned_hooks = mp_counter_new(m, "pruned_webhooks",
                                      "fallback webhook records removed after status_retention");
    memset(&P, 0, sizeof P);
}

void gw_prune_unload(void)
{
    /* a storage call may still answer: its callback then does nothing */
    P.stopping = 1;
    cands_free();
    free(P.after);
    P.after = NULL;
}
