/* queue.c - devices and their durable, ordered command queues.
 *
 * A command is appended to the archive GW_STORE_QUEUE (key: device id)
 * before it is accepted; it stays there until it has ended (ACKed,
 * failed, expired). Its end is one write, the status record
 * GW_STORE_STATUS (key: the command id), which also tells a restart not to
 * send it again; the sender hears about the end once that record is
 * durable. When a device's queue is empty and enough ended commands have
 * gathered (COMPACT_AT), the archive up to the last ended id is deleted
 * (compaction). At start-up (gw_load_all) every provisioned device is read
 * with its pending commands, minus those with a status record (and those
 * with an end marker GW_STORE_DONE of the older format, converted there).
 *
 * Expiry: the commands with a ttl are also in a min-heap on expires_us
 * (G.heap, each command knows its place), so the once-a-second sweep pops
 * what is due instead of walking every device.
 *
 * All functions here run with G.lock held unless said otherwise. */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t gw_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static size_t hash(const char *s)
{
    size_t h = 5381;
    for (; *s; s++)
        h = h * 33 + (unsigned char)*s;
    return h;
}

struct gw_dev *gw_dev_find(const char *id)
{
    if (!G.tab)
        return NULL;
    for (struct gw_dev *d = G.tab[hash(id) % G.tab_size]; d; d = d->hnext)
        if (!strcmp(d->id, id))
            return d;
    return NULL;
}

static void free_owners(struct gw_dev *d)
{
    for (size_t i = 0; i < d->n_owners; i++)
        free(d->owners[i]);
    free(d->owners);
    d->owners = NULL;
    d->n_owners = 0;
}

/* Splits s on spaces/commas into normalised bare JIDs (malloc'd array). */
static char **parse_jids(const char *s, size_t len, size_t *n)
{
    char **v = NULL;
    size_t cnt = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == ',' || s[i] == '\n' || s[i] == '\t'))
            i++;
        size_t b = i;
        while (i < len && !(s[i] == ' ' || s[i] == ',' || s[i] == '\n' || s[i] == '\t'))
            i++;
        if (i == b)
            break;
        char tmp[3200];
        mp_jid j;
        if (i - b >= sizeof tmp)
            continue;
        memcpy(tmp, s + b, i - b);
        tmp[i - b] = '\0';
        if (mp_jid_parse(&j, tmp) != MAGPIE_OK) {
            mp_log(MP_LOG_WARN, "gateway: ignoring invalid JID '%s'", tmp);
            continue;
        }
        v = realloc(v, (cnt + 1) * sizeof *v);
        v[cnt++] = strdup(j.bare);
        mp_jid_free(&j);
    }
    *n = cnt;
    return v;
}

int gw_is_admin(const char *bare)
{
    for (size_t i = 0; i < G.n_admins; i++)
        if (!strcmp(G.admins[i], bare))
            return 1;
    return 0;
}

int gw_dev_is_owner(const struct gw_dev *d, const char *bare)
{
    for (size_t i = 0; i < d->n_owners; i++)
        if (!strcmp(d->owners[i], bare))
            return 1;
    return 0;
}

static int valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > GW_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9') || id[i] == '.' ||
              id[i] == '_' || id[i] == '-'))
            return 0;
    return 1;
}

static struct gw_dev *dev_new(const char *id)
{
    if (G.n_devs + 1 > G.tab_size * 2 || !G.tab) { /* grow */
        size_t ns = G.tab_size ? G.tab_size * 4 : 1024;
        struct gw_dev **nt = calloc(ns, sizeof *nt);
        for (size_t i = 0; i < G.tab_size; i++)
            for (struct gw_dev *d = G.tab[i], *nx; d; d = nx) {
                nx = d->hnext;
                d->hnext = nt[hash(d->id) % ns];
                nt[hash(d->id) % ns] = d;
            }
        free(G.tab);
        G.tab = nt;
        G.tab_size = ns;
    }
    struct gw_dev *d = calloc(1, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", id);
    size_t jl = strlen(id) + 1 + strlen(G.domain) + 1;
    d->jid = malloc(jl);
    snprintf(d->jid, jl, "%s@%s", id, G.domain);
    d->hnext = G.tab[hash(id) % G.tab_size];
    G.tab[hash(id) % G.tab_size] = d;
    G.n_devs++;
    return d;
}

/* Record: "1 <secret hex> [owner JID ...]" (docs/gateway.md). */
int gw_dev_set_record(const char *id, const char *rec, size_t len, struct gw_dev **out)
{
    uint8_t secret[GW_SECRET_MAX];
    size_t sl = 0, i = 0;
    if (!valid_id(id) || len < 2 || rec[0] != '1' || rec[1] != ' ')
        return MAGPIE_ERR;
    i = 2;
    while (i + 1 < len && rec[i] != ' ' && rec[i] != '\n') {
        unsigned v;
        char h[3] = {rec[i], rec[i + 1], 0};
        if (sl >= sizeof secret || sscanf(h, "%2x", &v) != 1)
            return MAGPIE_ERR;
        secret[sl++] = (uint8_t)v;
        i += 2;
    }
    if (sl == 0)
        return MAGPIE_ERR;
    struct gw_dev *d = gw_dev_find(id);
    if (!d)
        d = dev_new(id);
    memcpy(d->secret, secret, sl);
    d->secret_len = sl;
    free_owners(d);
    d->owners = parse_jids(rec + i, len - i, &d->n_owners);
    if (out)
        *out = d;
    return MAGPIE_OK;
}

/* ---- commands ---- */

void gw_cmd_free(struct gw_cmd *c)
{
    if (!c)
        return;
    free(c->sender);
    free(c->sid);
    free(c);
}

/* Archive form: "1 <queued_us> <expires_us> <receipt> <sid length>:<sid>"
 * then the payload; the sender is the item's 'with'. */
void *gw_cmd_encode(const struct gw_cmd *c, size_t *len)
{
    size_t sl = c->sid ? strlen(c->sid) : 0;
    char hdr[96];
    int h = snprintf(hdr, sizeof hdr, "1 %lld %lld %d %zu:", (long long)c->queued_us,
                     (long long)c->expires_us, c->want_receipt, sl);
    char *b = malloc((size_t)h + sl + c->len);
    memcpy(b, hdr, (size_t)h);
    if (sl)
        memcpy(b + h, c->sid, sl);
    if (c->len)
        memcpy(b + h + sl, c->payload, c->len);
    *len = (size_t)h + sl + c->len;
    return b;
}

struct gw_cmd *gw_cmd_decode(int64_t aid, int64_t ts, const char *with, const void *data,
                             size_t len)
{
    (void)ts;
    const char *p = data;
    long long q, e;
    int r, used = 0;
    size_t sl;
    char hdr[96];
    size_t hl = len < sizeof hdr - 1 ? len : sizeof hdr - 1;
    memcpy(hdr, p, hl);
    hdr[hl] = '\0';
    if (sscanf(hdr, "1 %lld %lld %d %zu:%n", &q, &e, &r, &sl, &used) != 4 || used <= 0 ||
        (size_t)used + sl > len || !with)
        return NULL;
    size_t pl = len - (size_t)used - sl;
    struct gw_cmd *c = calloc(1, sizeof *c + pl);
    c->aid = aid;
    c->queued_us = q;
    c->expires_us = e;
    c->want_receipt = r;
    c->sender = strdup(with);
    if (sl) {
        c->sid = malloc(sl + 1);
        memcpy(c->sid, p + used, sl);
        c->sid[sl] = '\0';
    }
    c->len = pl;
    memcpy(c->payload, p + used + sl, pl);
    return c;
}

/* ---- the expiry heap ---- */

static int heap_less(size_t a, size_t b)
{
    return G.heap[a]->expires_us < G.heap[b]->expires_us;
}

static void heap_swap(size_t a, size_t b)
{
    struct gw_cmd *t = G.heap[a];
    G.heap[a] = G.heap[b];
    G.heap[b] = t;
    G.heap[a]->hidx = a + 1;
    G.heap[b]->hidx = b + 1;
}

static void heap_up(size_t i)
{
    while (i > 0 && heap_less(i, (i - 1) / 2)) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < G.n_heap && heap_less(l, m))
            m = l;
        if (r < G.n_heap && heap_less(r, m))
            m = r;
        if (m == i)
            return;
        heap_swap(i, m);
        i = m;
    }
}

static void heap_add(struct gw_cmd *c)
{
    if (G.n_heap == G.cap_heap) {
        G.cap_heap = G.cap_heap ? G.cap_heap * 2 : 256;
        G.heap = realloc(G.heap, G.cap_heap * sizeof *G.heap);
    }
    G.heap[G.n_heap] = c;
    c->hidx = ++G.n_heap;
    heap_up(G.n_heap - 1);
}

static void heap_remove(struct gw_cmd *c)
{
    if (!c->hidx)
        return;
    size_t i = c->hidx - 1;
    c->hidx = 0;
    if (i == --G.n_heap)
        return;
    G.heap[i] = G.heap[G.n_heap];
    G.heap[i]->hidx = i + 1;
    heap_up(i);
    heap_down(i);
}

void gw_queue_insert(struct gw_dev *d, struct gw_cmd *c)
{
    struct gw_cmd **pp = &d->q;
    while (*pp && (*pp)->aid < c->aid)
        pp = &(*pp)->next;
    if (*pp && (*pp)->aid == c->aid) { /* already there */
        gw_cmd_free(c);
        return;
    }
    c->next = *pp;
    *pp = c;
    c->dev = d;
    if (c->expires_us)
        heap_add(c);
}

int gw_queue_accepted(const char *dev, struct gw_cmd *c, int64_t aid)
{
    c->aid = aid;
    mp_counter_add(G.c.accepted, 1);
    int64_t us = gw_now_us() - c->queued_us;
    mp_counter_add(G.c.accept_us, us > 0 ? (uint64_t)us : 0);
    pthread_mutex_lock(&G.lock);
    struct gw_dev *d = gw_dev_find(dev);
    mp_loop *post = d && d->conn ? d->loop : NULL;
    if (d)
        gw_queue_insert(d, c);
    else
        gw_cmd_free(c);
    pthread_mutex_unlock(&G.lock);
    if (post)
        gw_pump_on(post, d);
    return d != NULL;
}

void gw_out_add(struct gw_out *o, mp_stanza *st)
{
    if (o->n == sizeof o->st / sizeof o->st[0]) { /* full: route now (lock held: rare) */
        mp_log(MP_LOG_DEBUG, "gateway: routing under the lock (batch full)");
        mp_route(st);
        return;
    }
    o->st[o->n++] = st;
}

void gw_out_flush(struct gw_out *o)
{
    for (size_t i = 0; i < o->n; i++)
        mp_route(o->st[i]);
    o->n = 0;
}

/* The message the sender of c gets when c ends (NULL: nothing to say). */
static mp_stanza *outcome(const struct gw_dev *d, const struct gw_cmd *c, const char *state,
                          int result)
{
    if (c->sender[0] == '!')
        return NULL; /* from the HTTP API or the outbox: no XMPP sender */
    mp_stanza *st = mp_stanza_new("message", MP_NS_CLIENT);
    mp_xml *root = mp_stanza_root(st);
    mp_xml_set_attr(st, root, "from", d->jid);
    mp_xml_set_attr(st, root, "to", c->sender);
    if (!strcmp(state, "acked") && result == GW_R_DONE) {
        if (!c->want_receipt || !c->sid) {
            mp_stanza_unref(st);
            return NULL;
        }
        char rid[24];
        mp_random_id(rid, sizeof rid);
        mp_xml_set_attr(st, root, "id", rid);
        mp_xml *r = mp_xml_add_child(st, root, "received", GW_NS_RECEIPTS);
        mp_xml_set_attr(st, r, "id", c->sid);
        return st;
    }
    const char *cond = "undefined-condition", *text = "the device failed to carry out the command";
    if (!strcmp(state, "expired")) {
        cond = "remote-server-timeout";
        text = c->sends ? "the command expired before the device acknowledged it"
                        : "the command expired before it could be delivered";
    } else if (result == GW_R_REJECTED) {
        cond = "not-acceptable";
        text = "the device rejected the command";
    } else if (result == GW_R_UNSUPPORTED) {
        cond = "feature-not-implemented";
        text = "the device does not support the command";
    }
    if (c->sid)
        mp_xml_set_attr(st, root, "id", c->sid);
    mp_xml_set_attr(st, root, "type", "error");
    mp_xml *e = mp_xml_add_child(st, root, "error", NULL);
    mp_xml_set_attr(st, e, "type", "cancel");
    mp_xml_add_child(st, e, cond, MP_NS_STANZA_ERRORS);
    mp_xml *t = mp_xml_add_child(st, e, "text", MP_NS_STANZA_ERRORS);
    mp_xml_add_text(st, t, text, strlen(text));
    mp_xml *g = mp_xml_add_child(st, e, "command", GW_NS);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)c->aid);
    mp_xml_set_attr(st, g, "id", v);
    mp_xml_set_attr(st, g, "state", state);
    snprintf(v, sizeof v, "%d", result);
    if (result >= 0)
        mp_xml_set_attr(st, g, "result", v);
    return st;
}

/* Ended commands a device gathers before its archive is compacted: one
 * delete per COMPACT_AT commands instead of one per command (the ended
 * rows left meanwhile are recognised by their status record at start-up). */
#define COMPACT_AT 8

static void compact(struct gw_dev *d)
{
    if (d->q || d->n_done < COMPACT_AT)
        return;
    int64_t max = 0;
    for (size_t i = 0; i < d->n_done; i++)
        if (d->done[i] > max)
            max = d->done[i];
    d->n_done = 0;
    mp_archive_delete(G.domain, GW_STORE_QUEUE, d->id, max, NULL, NULL);
}

/* Deletes d's ended rows below its oldest pending command (all of them
 * when nothing is pending); those above it stay listed. */
static void compact_below_head(struct gw_dev *d)
{
    int64_t bound = d->q ? d->q->aid : INT64_MAX, max = 0;
    size_t keep = 0;
    for (size_t i = 0; i < d->n_done; i++) {
        if (d->done[i] < bound) {
            if (d->done[i] > max)
                max = d->done[i];
        } else {
            d->done[keep++] = d->done[i];
        }
    }
    d->n_done = keep;
    if (max)
        mp_archive_delete(G.domain, GW_STORE_QUEUE, d->id, max, NULL, NULL);
}

void gw_compact_ended(void)
{
    for (size_t i = 0; i < G.tab_size; i++)
        for (struct gw_dev *d = G.tab[i]; d; d = d->hnext)
            if (d->n_done)
                compact_below_head(d);
}

/* The end state is durable: now the sender may hear about it (so that a
 * sender told "done" never sees the command delivered again after a
 * crash). */
struct fin {
    mp_stanza *st;
    int64_t t0; /* when the end was written */
};

static void finish_recorded(void *ud, int rc)
{
    struct fin *f = ud;
    if (rc != MAGPIE_OK)
        mp_log(MP_LOG_WARN, "gateway: could not record the end of a command; it may be sent "
                            "again after a restart");
    int64_t us = gw_now_us() - f->t0;
    mp_counter_add(G.c.end_us, us > 0 ? (uint64_t)us : 0);
    mp_route(f->st);
    free(f);
}

void gw_cmd_finish(struct gw_dev *d, struct gw_cmd *c, const char *state, int result,
                   struct gw_out *out)
{
    struct gw_cmd **pp = &d->q;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    heap_remove(c);
    int64_t now = gw_now_us();
    /* the lifecycle's end: acked (result DONE), failed (any other result),
     * expired */
    const char *life = strcmp(state, "acked") ? state : result == GW_R_DONE ? "acked" : "failed";
    if (!strcmp(state, "expired"))
        gw_hook_expired(d, c);
    if (!strcmp(c->sender, "!outbox"))
        gw_outbox_ended(c, life, result);
    mp_stanza *st = outcome(d, c, state, result);
    /* one write: the status record is also the end marker */
    struct fin *f = NULL;
    if (st) {
        f = malloc(sizeof *f);
        f->st = st;
        f->t0 = now;
    }
    if (gw_status_record(d, c, life, result, now, f ? finish_recorded : NULL, f) != MAGPIE_OK &&
        f) {
        gw_out_add(out, st);
        free(f);
    }
    if (d->n_done == d->cap_done) {
        d->cap_done = d->cap_done ? d->cap_done * 2 : 8;
        d->done = realloc(d->done, d->cap_done * sizeof *d->done);
    }
    d->done[d->n_done++] = c->aid;
    gw_cmd_free(c);
    compact(d);
}

void gw_sweep(int64_t now_us, struct gw_out *out)
{
    while (G.n_heap && G.heap[0]->expires_us <= now_us) {
        struct gw_cmd *c = G.heap[0];
        struct gw_dev *d = c->dev;
        mp_log(MP_LOG_DEBUG, "gateway: command %lld for %s expired", (long long)c->aid, d->id);
        mp_counter_add(G.c.expired, 1);
        gw_cmd_finish(d, c, "expired", -1, out); /* takes it off the heap */
    }
}

/* ---- start-up ---- */

struct keys {
    char **v;
    size_t n;
};

static void key_add(void *ud, const char *key)
{
    struct keys *k = ud;
    k->v = realloc(k->v, (k->n + 1) * sizeof *k->v);
    k->v[k->n++] = strdup(key);
}

static void keys_free(struct keys *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->v[i]);
    free(k->v);
}

/* A device's stored commands, collected first: no storage call nested in
 * the archive query. */
struct load_ctx {
    struct gw_cmd **c;
    size_t n;
    struct gw_dev *d;
};

static void load_item(void *ud, const mp_archive_item *it)
{
    struct load_ctx *l = ud;
    struct gw_cmd *c = gw_cmd_decode(it->id, it->ts, it->with, it->data, it->len);
    if (!c) {
        mp_log(MP_LOG_WARN, "gateway: unreadable queued command %lld for %s, skipped",
               (long long)it->id, l->d->id);
        return;
    }
    l->c = realloc(l->c, (l->n + 1) * sizeof *l->c);
    l->c[l->n++] = c;
}

/* 1 if command aid has ended (it has a status record). */
static int ended(int64_t aid)
{
    char key[32];
    void *v;
    size_t vl;
    snprintf(key, sizeof key, "%lld", (long long)aid);
    if (mp_kv_get_sync(G.domain, GW_STORE_STATUS, key, &v, &vl) != MAGPIE_OK)
        return 0;
    free(v);
    return 1;
}

static void load_key(const char *id)
{
    void *rec;
    size_t len;
    struct gw_dev *d = NULL;
    if (mp_kv_get_sync(G.domain, GW_STORE_DEVICES, id, &rec, &len) != MAGPIE_OK)
        return;
    if (gw_dev_set_record(id, rec, len, &d) != MAGPIE_OK)
        mp_log(MP_LOG_WARN, "gateway: bad provisioning record for device '%s'", id);
    free(rec);
    if (!d)
        return;
    struct load_ctx l = {.d = d};
    mp_archive_filter q = {0};
    if (mp_archive_query_sync(G.domain, GW_STORE_QUEUE, id, &q, load_item, &l) != MAGPIE_OK)
        mp_log(MP_LOG_ERROR, "gateway: cannot read the command queue of %s", id);
    for (size_t i = 0; i < l.n; i++) {
        struct gw_cmd *c = l.c[i];
        if (ended(c->aid)) { /* ended before the restart: remember for compaction */
            if (d->n_done == d->cap_done) {
                d->cap_done = d->cap_done ? d->cap_done * 2 : 8;
                d->done = realloc(d->done, d->cap_done * sizeof *d->done);
            }
            d->done[d->n_done++] = c->aid;
            gw_cmd_free(c);
            continue;
        }
        gw_idem_repair(d, c);
        gw_queue_insert(d, c);
    }
    free(l.c);
}

/* End markers of the older format ("<device>/<archive id>" -> "<state>
 * <result> <time>" in GW_STORE_DONE): each becomes a status record (if
 * the command has none) and goes. */
static void convert_done(const struct keys *k)
{
    for (size_t i = 0; i < k->n; i++) {
        const char *slash = strrchr(k->v[i], '/');
        void *v;
        size_t vl;
        if (!slash || mp_kv_get_sync(G.domain, GW_STORE_DONE, k->v[i], &v, &vl) != MAGPIE_OK)
            continue;
        char val[96], state[16], dev[GW_ID_MAX + 1];
        size_t n = vl < sizeof val - 1 ? vl : sizeof val - 1;
        memcpy(val, v, n);
        val[n] = '\0';
        free(v);
        int result;
        long long ts, aid = strtoll(slash + 1, NULL, 10);
        size_t dl = (size_t)(slash - k->v[i]);
        if (aid <= 0 || dl > GW_ID_MAX || sscanf(val, "%15s %d %lld", state, &result, &ts) != 3)
            continue;
        memcpy(dev, k->v[i], dl);
        dev[dl] = '\0';
        if (!ended(aid)) {
            const char *life = strcmp(state, "acked")      ? state
                               : result == GW_R_DONE ? "acked"
                                                     : "failed";
            char key[32], rec[256];
            snprintf(key, sizeof key, "%lld", aid);
            int rl = snprintf(rec, sizeof rec, "1 %s %s %d 0 0 %lld", dev, life, result, ts);
            if (mp_kv_set_sync(G.domain, GW_STORE_STATUS, key, rec, (size_t)rl) != MAGPIE_OK)
                continue; /* keep the marker */
        }
        mp_kv_del_sync(G.domain, GW_STORE_DONE, k->v[i]);
    }
    if (k->n)
        mp_log(MP_LOG_INFO, "gateway: %zu end marker(s) of the older format converted", k->n);
}

static size_t pending(void)
{
    size_t n = 0;
    for (size_t i = 0; i < G.tab_size; i++)
        for (struct gw_dev *d = G.tab[i]; d; d = d->hnext)
            for (struct gw_cmd *c = d->q; c; c = c->next)
                n++;
    return n;
}

void gw_load_all(void)
{
    struct keys done = {0}, ids = {0};
    /* keys first, then the reads: no storage call nested in an iteration */
    if (mp_kv_keys_sync(G.domain, GW_STORE_DONE, key_add, &done) != MAGPIE_OK ||
        mp_kv_keys_sync(G.domain, GW_STORE_DEVICES, key_add, &ids) != MAGPIE_OK)
        mp_log(MP_LOG_WARN, "gateway: could not read the provisioned devices from storage "
                            "(expected under --check-config)");
    convert_done(&done);
    keys_free(&done);
    for (size_t i = 0; i < ids.n; i++)
        load_key(ids.v[i]);
    keys_free(&ids);
    mp_log(MP_LOG_INFO, "gateway: %zu device(s), %zu pending command(s) (%zu with a ttl)",
           G.n_devs, pending(), G.n_heap);
}

void gw_free_all(void)
{
    for (size_t i = 0; i < G.tab_size; i++)
        for (struct gw_dev *d = G.tab[i], *nx; d; d = nx) {
            nx = d->hnext;
            for (struct gw_cmd *c = d->q, *cn; c; c = cn) {
                cn = c->next;
                gw_cmd_free(c);
            }
            free_owners(d);
            free(d->done);
            free(d->jid);
            free(d);
        }
    free(G.tab);
    G.tab = NULL;
    G.tab_size = G.n_devs = 0;
    free(G.heap);
    G.heap = NULL;
    G.n_heap = G.cap_heap = 0;
}
