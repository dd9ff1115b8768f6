/* mam.c - the XEP-0313 query engine of the archive modules
 * (include/magpie/mam.h).
 *
 * A query runs in steps, each a storage call that comes back on the
 * caller's loop: the client's ids (after-id, before-id, RSM after, RSM
 * before, then each of the 'ids' field) are turned into archive ids, one
 * exact-time lookup each; then the page is read from the archive id
 * bounds, in batches while the module's own 'with' rule leaves it short;
 * the results go out; the result set is counted (and the page's first
 * index, with MP_MAM_INDEX); <fin/> ends it. */
#include "base/base.h"

#include <magpie/mam.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = mp_strdup(s);
}

/* One stored item, read, that a page will send. */
struct hit {
    mp_stanza *m;
    char *sid;
    int64_t ts, id;
};

/* The ids to turn into archive ids first, in this order; then 'ids'. */
enum { L_AFTER_ID, L_BEFORE_ID, L_RSM_AFTER, L_RSM_BEFORE, N_LOOK };

struct query {
    mp_stanza *iq; /* referenced */
    char *host, *store, *key, *jid, *queryid;
    unsigned flags;
    int64_t ts_min;
    const struct mp_mam_ops *ops;
    void *ud;
    /* the form and RSM */
    struct mp_mam_with with;
    int64_t ts_from, ts_to;
    size_t max;
    long index; /* RSM <index/>: items to skip from the start, or -1 */
    int backward, flip;
    char *look[N_LOOK];
    int64_t aid[N_LOOK];
    char **ids;
    size_t n_ids, at; /* the lookup under way: 0..3 the four, 4.. ids */
    /* the page: in reading order (newest first when backward); the 'ids'
     * items in the order asked */
    struct hit *hits;
    size_t n_hits;
    int64_t cursor; /* the page read so far ends here (an archive id) */
    int complete;   /* the page reaches the end of the result set */
    int64_t count;  /* the result set's size, or -1 */
};

static void q_end(struct query *q, int rc)
{
    q->ops->done(q->ud, rc);
    mp_stanza_unref(q->iq);
    free(q->host);
    free(q->store);
    free(q->key);
    free(q->jid);
    free(q->queryid);
    free(q->with.exact);
    free(q->with.has);
    for (int i = 0; i < N_LOOK; i++)
        free(q->look[i]);
    for (size_t i = 0; i < q->n_ids; i++)
        free(q->ids[i]);
    free(q->ids);
    for (size_t i = 0; i < q->n_hits; i++) {
        mp_stanza_unref(q->hits[i].m);
        free(q->hits[i].sid);
    }
    free(q->hits);
    free(q);
}

static void q_error(struct query *q, const char *type, const char *cond)
{
    mp_iq_reply_error(q->iq, type, cond);
    q_end(q, MAGPIE_ERR);
}

static void hit_add(struct query *q, mp_stanza *m, const char *sid, const mp_archive_item *it)
{
    q->hits = mp_realloc(q->hits, (q->n_hits + 1) * sizeof *q->hits);
    q->hits[q->n_hits++] = (struct hit){m, mp_strdup(sid), it->ts, it->id};
}

/* ---- sending ---- */

/* One result (XEP-0313 §4.2) to the asker. */
static void send_result(struct query *q, const struct hit *h)
{
    const struct mp_envelope *env = mp_stanza_envelope(q->iq);
    mp_stanza *w = mp_stanza_new_client("message", NULL, q->jid, NULL);
    mp_xml *root = mp_stanza_root(w);
    mp_stanza_set_to(w, &env->from);
    mp_xml *res = mp_xml_add_child(w, root, "result", MP_NS_MAM);
    if (q->queryid)
        mp_xml_set_attr(w, res, "queryid", q->queryid);
    mp_xml_set_attr(w, res, "id", h->sid);
    mp_xml *fw = mp_xml_add_child(w, res, "forwarded", MP_NS_FORWARD);
    mp_delay_add(w, fw, NULL, h->ts, NULL);
    mp_xml_add_copy(w, fw, mp_stanza_root(h->m));
    mp_route(w);
}

/* The page's oldest hit (the 'ids' items: the first asked), or NULL. */
static const struct hit *page_first(const struct query *q)
{
    return q->n_hits ? &q->hits[q->backward ? q->n_hits - 1 : 0] : NULL;
}

static const struct hit *page_last(const struct query *q)
{
    return q->n_hits ? &q->hits[q->backward ? 0 : q->n_hits - 1] : NULL;
}

/* The IQ result with <fin/>: first and last name the page's oldest and
 * newest items (first with its index in the result set when index >= 0),
 * count the size of that set. Ends q. */
static void send_fin(struct query *q, int64_t index)
{
    mp_stanza *res = mp_iq_result(q->iq);
    mp_xml *fin = mp_xml_add_child(res, mp_stanza_root(res), "fin", MP_NS_MAM);
    if (q->queryid && (q->flags & MP_MAM_FIN_QUERYID))
        mp_xml_set_attr(res, fin, "queryid", q->queryid);
    if (q->complete)
        mp_xml_set_attr(res, fin, "complete", "true");
    const struct hit *first = page_first(q), *last = page_last(q);
    mp_rsm_add_result(res, fin, first ? first->sid : NULL, index > INT32_MAX ? -1 : (int)index,
                      last ? last->sid : NULL, q->count > INT32_MAX ? INT32_MAX : (int)q->count);
    mp_iq_reply(res);
    q_end(q, MAGPIE_OK);
}

/* The query's filter without paging: the result set that count and index
 * are about (XEP-0059 §2.1). */
static mp_archive_filter result_set(const struct query *q)
{
    mp_archive_filter f = {0};
    f.with = q->with.exact;
    f.with_has = q->with.has;
    f.ts_from = q->ts_from > q->ts_min ? q->ts_from : q->ts_min;
    f.ts_to = q->ts_to;
    if (q->flags & MP_MAM_INDEX) {
        f.after_id = q->aid[L_AFTER_ID];
        f.before_id = q->aid[L_BEFORE_ID];
    }
    return f;
}

static void on_index(void *ud, int rc, int64_t n)
{
    struct query *q = ud;
    if (rc != MAGPIE_OK)
        q_error(q, "wait", "internal-server-error");
    else
        send_fin(q, n);
}

static void on_count(void *ud, int rc, int64_t n)
{
    struct query *q = ud;
    if (rc != MAGPIE_OK) {
        if (q->flags & MP_MAM_INDEX)
            q_error(q, "wait", "internal-server-error");
        else
            send_fin(q, -1);
        return;
    }
    q->count = n;
    /* The index is optional (XEP-0059 §2.6). Pages fetched backwards leave
     * it out: the last page's index plus its size is the count, which
     * clients iterating backwards (slixmpp's XEP-0059 iterator) take for
     * the end of the set and stop after one page. */
    const struct hit *first = page_first(q);
    if (!(q->flags & MP_MAM_INDEX) || !first || q->backward) {
        send_fin(q, -1);
        return;
    }
    /* the first item's index: how many of the set come before it */
    mp_archive_filter f = result_set(q);
    if (!f.before_id || first->id < f.before_id)
        f.before_id = first->id;
    if (mp_archive_count(q->host, q->store, q->key, &f, on_index, q) != MAGPIE_OK)
        q_error(q, "wait", "internal-server-error");
}

/* Sends the hits (oldest first, or newest first when flipped), then <fin/>
 * once the result set is counted; a 'with' the store cannot filter, or an
 * 'ids' query without MP_MAM_INDEX, gets no count. */
static void send_page(struct query *q, int complete)
{
    size_t n = q->n_hits;
    for (size_t j = 0; j < n; j++) {
        size_t chrono = q->backward ? n - 1 - j : j;
        send_result(q, &q->hits[q->flip ? n - 1 - chrono : chrono]);
    }
    q->complete = complete;
    if (q->n_ids) {
        if (q->flags & MP_MAM_INDEX)
            q->count = (int64_t)q->n_ids;
        send_fin(q, (q->flags & MP_MAM_INDEX) ? 0 : -1);
        return;
    }
    if (q->with.filtered) {
        send_fin(q, -1);
        return;
    }
    mp_archive_filter f = result_set(q);
    if (mp_archive_count(q->host, q->store, q->key, &f, on_count, q) != MAGPIE_OK)
        on_count(q, MAGPIE_ERR, 0);
}

/* ---- reading the page ---- */

static void read_more(struct query *q);

static void on_page(void *ud, int rc, const mp_archive_item *items, size_t got)
{
    struct query *q = ud;
    if (rc != MAGPIE_OK) {
        q_error(q, "wait", "internal-server-error");
        return;
    }
    size_t asked = q->max + 1;
    /* RSM <index/>: the page starts that many items into the set */
    size_t i = 0;
    if (q->index > 0) {
        size_t skip = (size_t)q->index;
        asked += skip;
        i = skip < got ? skip : got;
        if (i)
            q->cursor = items[i - 1].id;
        q->index = 0;
    }
    for (; i < got && q->n_hits < q->max + 1; i++) {
        q->cursor = items[i].id;
        const char *sid;
        int in_set = 1;
        mp_stanza *m = q->ops->item(q->ud, &items[i], &sid, &in_set);
        if (!m)
            continue;
        if (!in_set) {
            mp_stanza_unref(m);
            continue;
        }
        hit_add(q, m, sid, &items[i]);
    }
    if (q->n_hits <= q->max && got >= asked) {
        read_more(q); /* some were left out: read on */
        return;
    }
    int complete = q->n_hits <= q->max;
    if (!complete) {
        /* the one past the page only told that there is more */
        struct hit *h = &q->hits[--q->n_hits];
        mp_stanza_unref(h->m);
        free(h->sid);
    }
    send_page(q, complete);
}

/* Reads the next batch of the page from q->cursor on. */
static void read_more(struct query *q)
{
    mp_archive_filter f = result_set(q);
    f.limit = q->max + 1 + (q->index > 0 ? (size_t)q->index : 0);
    f.reverse = q->backward;
    /* the tighter of the form's and RSM's bounds */
    int64_t after = q->aid[L_AFTER_ID] > q->aid[L_RSM_AFTER] ? q->aid[L_AFTER_ID]
                                                             : q->aid[L_RSM_AFTER];
    int64_t before = q->aid[L_BEFORE_ID];
    if (q->aid[L_RSM_BEFORE] && (!before || q->aid[L_RSM_BEFORE] < before))
        before = q->aid[L_RSM_BEFORE];
    if (q->cursor) {
        if (q->backward)
            before = q->cursor;
        else
            after = q->cursor;
    }
    f.after_id = after;
    f.before_id = before;
    if (mp_archive_query(q->host, q->store, q->key, &f, on_page, q) != MAGPIE_OK)
        q_error(q, "wait", "internal-server-error");
}

/* ---- client ids to archive ids ---- */

static void next_lookup(struct query *q);

static const char *lookup_sid(const struct query *q)
{
    return q->at < N_LOOK ? q->look[q->at] : q->ids[q->at - N_LOOK];
}

static void on_lookup(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct query *q = ud;
    if (rc != MAGPIE_OK) {
        q_error(q, "wait", "internal-server-error");
        return;
    }
    const char *want = lookup_sid(q);
    for (size_t i = 0; i < n; i++) {
        const char *sid;
        int in_set = 1;
        mp_stanza *m = q->ops->item(q->ud, &items[i], &sid, &in_set);
        if (m && strcmp(sid, want) == 0) {
            if (q->at < N_LOOK) {
                q->aid[q->at] = items[i].id;
                mp_stanza_unref(m);
            } else {
                hit_add(q, m, sid, &items[i]);
            }
            q->at++;
            next_lookup(q);
            return;
        }
        if (m)
            mp_stanza_unref(m);
    }
    /* XEP-0313 §4.1.3, §4.3.2: an id that is not in the archive */
    q_error(q, "cancel", "item-not-found");
}

/* Turns the next client id into an archive id, or runs the query. */
static void next_lookup(struct query *q)
{
    while (q->at < N_LOOK && !q->look[q->at])
        q->at++;
    if (q->at >= N_LOOK + q->n_ids) {
        if (q->n_ids) {
            q->backward = 0; /* the ids field: in the order asked */
            send_page(q, 1);
        } else {
            read_more(q);
        }
        return;
    }
    int64_t ts = q->ops->sid_ts(lookup_sid(q));
    if (ts < 0 || ts < q->ts_min) {
        q_error(q, "cancel", "item-not-found");
        return;
    }
    mp_archive_filter f = {.ts_from = ts, .ts_to = ts, .limit = 4};
    if (mp_archive_query(q->host, q->store, q->key, &f, on_lookup, q) != MAGPIE_OK)
        q_error(q, "wait", "internal-server-error");
}

/* ---- the request ---- */

/* Reads the form's start or end value v into q. */
static int read_time(struct query *q, const char *var, const char *v)
{
    int64_t t;
    if (mp_datetime_parse(v, &t) != 0)
        return -1;
    if (var[0] == 's')
        q->ts_from = t > 0 ? t : 1;
    else if ((q->flags & MP_MAM_END_SECOND) && !strchr(v, '.'))
        q->ts_to = t + 999999; /* a time in whole seconds ends with its second */
    else
        q->ts_to = t;
    return 0;
}

/* Reads the form and the RSM set into q; NULL, or an error condition with
 * its type in *type. */
static const char *read_query(struct query *q, const mp_xml *query, size_t page_max,
                              long index_max, const char **type)
{
    mp_stanza *iq = q->iq;
    *type = "modify";
    mp_xml *x = mp_form_find(query);
    if (x) {
        const char *ft = mp_form_form_type(iq, x);
        if (ft && strcmp(ft, MP_NS_MAM) != 0)
            return "bad-request";
    }
    for (mp_xml *f = x ? mp_xml_find(x, "field", NULL) : NULL; f;
         f = mp_xml_find_next(f, "field", NULL)) {
        const char *var = mp_xml_get_attr(f, "var");
        if (!var || strcmp(var, "FORM_TYPE") == 0)
            continue;
        const char *v = mp_form_value(iq, x, var);
        if (strcmp(var, "start") == 0 || strcmp(var, "end") == 0) {
            if (v && *v && read_time(q, var, v) != 0)
                return "bad-request";
        } else if (strcmp(var, "with") == 0) {
            if (!v || !*v)
                continue;
            const char *cond = q->ops->with(q->ud, v, &q->with, type);
            if (cond)
                return cond;
        } else if (strcmp(var, "after-id") == 0 || strcmp(var, "before-id") == 0) {
            if (v && *v)
                set_str(&q->look[var[0] == 'a' ? L_AFTER_ID : L_BEFORE_ID], v);
        } else if (strcmp(var, "ids") == 0) {
            for (mp_xml *ve = mp_xml_find(f, "value", NULL); ve;
                 ve = mp_xml_find_next(ve, "value", NULL)) {
                q->ids = mp_realloc(q->ids, (q->n_ids + 1) * sizeof *q->ids);
                q->ids[q->n_ids++] = mp_strdup(mp_xml_text(iq, ve));
            }
        } else {
            /* XEP-0313 §4.1.5: a field we do not know */
            *type = "cancel";
            return "feature-not-implemented";
        }
    }
    struct mp_rsm rsm;
    if (mp_rsm_parse(iq, query, &rsm) != 0)
        return "bad-request"; /* also both after and before (§4.3.2: use the ids) */
    q->max = rsm.max >= 0 && (size_t)rsm.max < page_max ? (size_t)rsm.max : page_max;
    q->index = rsm.index;
    if (rsm.after)
        set_str(&q->look[L_RSM_AFTER], rsm.after);
    if (rsm.before) {
        q->backward = 1; /* XEP-0059 §2.5; empty: the last page */
        if (*rsm.before)
            set_str(&q->look[L_RSM_BEFORE], rsm.before);
    }
    if (rsm.index >= 0) {
        if (!(q->flags & MP_MAM_INDEX)) {
            *type = "cancel";
            return "feature-not-implemented";
        }
        /* XEP-0059 §2.6: an index is counted from the start of the set,
         * not combined with after/before; reading it means reading every
         * item before it, so it is bounded */
        if (rsm.after || rsm.before)
            return "bad-request";
        if (rsm.index > index_max) {
            *type = "cancel";
            return "item-not-found";
        }
    }
    q->flip = mp_xml_find(query, "flip-page", NULL) != NULL;
    if (q->n_ids > page_max)
        return "policy-violation";
    return NULL;
}

void mp_mam_query(mp_stanza *iq, const mp_xml *query, const struct mp_mam_archive *a,
                  const struct mp_mam_ops *ops, void *ud)
{
    struct query *q = mp_calloc(1, sizeof *q);
    q->iq = mp_stanza_ref(iq);
    q->host = mp_strdup(a->host);
    q->store = mp_strdup(a->store);
    q->key = mp_strdup(a->key);
    q->jid = mp_strdup(a->jid);
    const char *qid = mp_xml_get_attr(query, "queryid");
    q->queryid = qid ? mp_strdup(qid) : NULL;
    q->flags = a->flags;
    q->ts_min = a->ts_min;
    q->ops = ops;
    q->ud = ud;
    q->count = -1;
    const char *type, *cond = read_query(q, query, a->page_max, a->index_max, &type);
    if (cond) {
        q_error(q, type, cond);
        return;
    }
    next_lookup(q);
}

mp_xml *mp_mam_form_add(mp_stanza *res, mp_xml *parent)
{
    mp_xml *rq = mp_xml_add_child(res, parent, "query", MP_NS_MAM);
    mp_xml *x = mp_form_add(res, rq, "form", MP_NS_MAM, NULL);
    mp_form_field_add(res, x, "with", "jid-single", NULL, NULL);
    mp_form_field_add(res, x, "start", "text-single", NULL, NULL);
    mp_form_field_add(res, x, "end", "text-single", NULL, NULL);
    mp_form_field_add(res, x, "before-id", "text-single", NULL, NULL);
    mp_form_field_add(res, x, "after-id", "text-single", NULL, NULL);
    return mp_form_field_add(res, x, "ids", "list-multi", NULL, NULL);
}

/* ---- metadata (XEP-0313 §5): the first and the last item ---- */

struct meta {
    mp_stanza *iq; /* referenced */
    char *host, *store, *key;
    const struct mp_mam_ops *ops;
    void *ud;
    char *first_sid;
    int64_t first_ts;
};

static void meta_done(struct meta *m, int rc)
{
    m->ops->done(m->ud, rc);
    mp_stanza_unref(m->iq);
    free(m->host);
    free(m->store);
    free(m->key);
    free(m->first_sid);
    free(m);
}

static void meta_error(struct meta *m)
{
    mp_iq_reply_error(m->iq, "wait", "internal-server-error");
    meta_done(m, MAGPIE_ERR);
}

/* The stanza id of the first readable item (into *sid, malloc'd, or NULL)
 * and its time. */
static int64_t first_readable(struct meta *m, const mp_archive_item *items, size_t n, char **sid)
{
    for (size_t i = 0; i < n; i++) {
        const char *s;
        int in_set = 1;
        mp_stanza *st = m->ops->item(m->ud, &items[i], &s, &in_set);
        if (st) {
            *sid = mp_strdup(s);
            mp_stanza_unref(st);
            return items[i].ts;
        }
    }
    *sid = NULL;
    return 0;
}

static void meta_add(mp_stanza *res, mp_xml *md, const char *name, const char *sid, int64_t ts)
{
    char stamp[MP_DATETIME_MAX];
    mp_xml *e = mp_xml_add_child(res, md, name, NULL);
    mp_xml_set_attr(res, e, "id", sid);
    mp_xml_set_attr(res, e, "timestamp", mp_datetime_format(ts, stamp, sizeof stamp));
}

static void on_meta_last(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct meta *m = ud;
    if (rc != MAGPIE_OK) {
        meta_error(m);
        return;
    }
    char *last;
    int64_t ts = first_readable(m, items, n, &last);
    mp_stanza *res = mp_iq_result(m->iq);
    mp_xml *md = mp_xml_add_child(res, mp_stanza_root(res), "metadata", MP_NS_MAM);
    if (m->first_sid && last) {
        meta_add(res, md, "start", m->first_sid, m->first_ts);
        meta_add(res, md, "end", last, ts);
    }
    mp_iq_reply(res);
    free(last);
    meta_done(m, MAGPIE_OK);
}

static void on_meta_first(void *ud, int rc, const mp_archive_item *items, size_t n)
{
    struct meta *m = ud;
    if (rc == MAGPIE_OK)
        m->first_ts = first_readable(m, items, n, &m->first_sid);
    mp_archive_filter f = {.limit = 4, .reverse = 1};
    if (rc != MAGPIE_OK ||
        mp_archive_query(m->host, m->store, m->key, &f, on_meta_last, m) != MAGPIE_OK)
        meta_error(m);
}

void mp_mam_metadata(mp_stanza *iq, const struct mp_mam_archive *a,
                     const struct mp_mam_ops *ops, void *ud)
{
    struct meta *m = mp_calloc(1, sizeof *m);
    m->iq = mp_stanza_ref(iq);
    m->host = mp_strdup(a->host);
    m->store = mp_strdup(a->store);
    m->key = mp_strdup(a->key);
    m->ops = ops;
    m->ud = ud;
    mp_archive_filter f = {.limit = 4, .ts_from = a->ts_min};
    if (mp_archive_query(m->host, m->store, m->key, &f, on_meta_first, m) != MAGPIE_OK)
        meta_error(m);
}
