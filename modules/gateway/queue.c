/* queue.c - devices and their durable, ordered command queues.
 *
 * A command is appended to the archive GW_STORE_QUEUE (key: device id)
 * before it is accepted; it stays there until it has ended (ACKed,
 * failed, expired). Its end is written to GW_STORE_DONE as
 * "<device>/<archive id>" so that a restart does not send it again; when a
 * device's queue is empty, the archive up to the last ended id and those
 * markers are deleted (compaction). At start-up (gw_load_all) every
 * provisioned device is read with its pending commands, minus those with a
 * marker. All functions here run with G.lock held unless said otherwise. */
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

struct compact {
    char id[GW_ID_MAX + 1];
    size_t n;
    int64_t aids[];
};

/* Archive compacted: the end markers can go. Runs on the caller's loop. */
static void compacted(void *ud, int rc)
{
    struct compact *k = ud;
    if (rc == MAGPIE_OK)
        for (size_t i = 0; i < k->n; i++) {
            char key[GW_ID_MAX + 32];
            snprintf(key, sizeof key, "%s/%lld", k->id, (long long)k->aids[i]);
            mp_kv_del(G.domain, GW_STORE_DONE, key, NULL, NULL);
        }
    free(k);
}

static void compact(struct gw_dev *d)
{
    if (d->q || d->n_done == 0)
        return;
    struct compact *k = malloc(sizeof *k + d->n_done * sizeof k->aids[0]);
    snprintf(k->id, sizeof k->id, "%s", d->id);
    k->n = d->n_done;
    int64_t max = 0;
    for (size_t i = 0; i < d->n_done; i++) {
        k->aids[i] = d->done[i];
        if (d->done[i] > max)
            max = d->done[i];
    }
    d->n_done = 0;
    if (mp_archive_delete(G.domain, GW_STORE_QUEUE, d->id, max, compacted, k) != MAGPIE_OK)
        free(k);
}

/* The end state is durable: now the sender may hear about it (so that a
 * sender told "done" never sees the command delivered again after a
 * crash). */
static void finish_recorded(void *ud, int rc)
{
    mp_stanza *st = ud;
    if (rc != MAGPIE_OK)
        mp_log(MP_LOG_WARN, "gateway: could not record the end of a command; it may be sent "
                            "again after a restart");
    if (st)
        mp_route(st);
}

void gw_cmd_finish(struct gw_dev *d, struct gw_cmd *c, const char *state, int result,
                   struct gw_out *out)
{
    struct gw_cmd **pp = &d->q;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    char key[GW_ID_MAX + 32], val[96];
    int64_t now = gw_now_us();
    snprintf(key, sizeof key, "%s/%lld", d->id, (long long)c->aid);
    int n = snprintf(val, sizeof val, "%s %d %lld", state, result, (long long)now);
    /* the lifecycle's end: acked (result DONE), failed (any other result),
     * expired */
    const char *life = strcmp(state, "acked") ? state : result == GW_R_DONE ? "acked" : "failed";
    gw_status_record(d, c, life, result, now);
    if (!strcmp(state, "expired"))
        gw_hook_expired(d, c);
    if (!strcmp(c->sender, "!outbox"))
        gw_outbox_ended(c, life, result);
    mp_stanza *st = outcome(d, c, state, result);
    if (mp_kv_set(G.domain, GW_STORE_DONE, key, val, (size_t)n, finish_recorded, st) != MAGPIE_OK &&
        st)
        gw_out_add(out, st);
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
    for (size_t i = 0; i < G.tab_size; i++)
        for (struct gw_dev *d = G.tab[i]; d; d = d->hnext)
            for (struct gw_cmd *c = d->q, *nx; c; c = nx) {
                nx = c->next;
                if (c->expires_us && c->expires_us <= now_us) {
                    mp_log(MP_LOG_DEBUG, "gateway: command %lld for %s expired", (long long)c->aid,
                           d->id);
                    mp_counter_add(G.c.expired, 1);
                    gw_cmd_finish(d, c, "expired", -1, out);
                }
            }
}

/* ---- start-up ---- */

struct load_ctx {
    struct gw_dev *d;
    char **done; /* sorted keys of GW_STORE_DONE for this device */
    size_t n_done;
};

static void load_done_key(void *ud, const char *key)
{
    struct load_ctx *l = ud;
    l->done = realloc(l->done, (l->n_done + 1) * sizeof *l->done);
    l->done[l->n_done++] = strdup(key);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void load_item(void *ud, const mp_archive_item *it)
{
    struct load_ctx *l = ud;
    char key[GW_ID_MAX + 32], *kp = key;
    snprintf(key, sizeof key, "%s/%lld", l->d->id, (long long)it->id);
    if (l->n_done && bsearch(&kp, l->done, l->n_done, sizeof *l->done, cmp_str)) {
        /* ended before the restart: remember for compaction */
        struct gw_dev *d = l->d;
        if (d->n_done == d->cap_done) {
            d->cap_done = d->cap_done ? d->cap_done * 2 : 8;
            d->done = realloc(d->done, d->cap_done * sizeof *d->done);
        }
        d->done[d->n_done++] = it->id;
        return;
    }
    struct gw_cmd *c = gw_cmd_decode(it->id, it->ts, it->with, it->data, it->len);
    if (!c) {
        mp_log(MP_LOG_WARN, "gateway: unreadable queued command %lld for %s, skipped",
               (long long)it->id, l->d->id);
        return;
    }
    gw_idem_repair(l->d, c);
    gw_queue_insert(l->d, c);
}

static void load_key(struct load_ctx *all, const char *id)
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
    struct load_ctx l = {d, all->done, all->n_done};
    mp_archive_filter q = {0};
    if (mp_archive_query_sync(G.domain, GW_STORE_QUEUE, id, &q, load_item, &l) != MAGPIE_OK)
        mp_log(MP_LOG_ERROR, "gateway: cannot read the command queue of %s", id);
}

void gw_load_all(void)
{
    struct load_ctx all = {0}, ids = {0};
    /* keys first, then the reads: no storage call nested in an iteration */
    if (mp_kv_keys_sync(G.domain, GW_STORE_DONE, load_done_key, &all) != MAGPIE_OK ||
        mp_kv_keys_sync(G.domain, GW_STORE_DEVICES, load_done_key, &ids) != MAGPIE_OK)
        mp_log(MP_LOG_WARN, "gateway: could not read the provisioned devices from storage "
                            "(expected under --check-config)");
    for (size_t i = 0; i < ids.n_done; i++) {
        load_key(&all, ids.done[i]);
        free(ids.done[i]);
    }
    free(ids.done);
    for (size_t i = 0; i < all.n_done; i++)
        free(all.done[i]);
    free(all.done);
    size_t n = 0;
    for (size_t i = 0; i < G.tab_size; i++)
        for (struct gw_dev *d = G.tab[i]; d; d = d->hnext)
            for (struct gw_cmd *c = d->q; c; c = c->next)
                n++;
    mp_log(MP_LOG_INFO, "gateway: %zu device(s), %zu pending command(s)", G.n_devs, n);
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
}
