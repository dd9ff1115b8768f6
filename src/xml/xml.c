/* xml.c - stanza trees: a reference-counted arena per stanza, tree
 * building and queries, serialisation into evbuffers, and the RFC 6120
 * stanza helpers (error replies, IQ results).
 *
 * Memory: the stanza struct is allocated together with a small first arena
 * chunk (ARENA_FIRST bytes); later chunks double in size (capped), and a
 * request of half a chunk or more gets a block of its own. Nothing in a stanza
 * is freed individually: mp_stanza_unref frees the chunks at refcount 0.
 * Text appended piece by piece grows by doubling (mp_xml_add_text), so a
 * text costs at most a few times its size, however many pieces it came in.
 *
 * Sharing: a stanza with refcount > 1 is only read. The one lazily computed
 * value, the concatenated text of an element with several text children
 * (mp_xml_text), is cached on the element; the cache is filled for the
 * whole tree when the stanza becomes shared (mp_stanza_ref from 1 to 2), so
 * readers of a shared stanza never write. An envelope copy
 * (mp_stanza_copy_envelope) has a root of its own whose children are the
 * original's: their ->parent is the original root, so tree walks here
 * count depth instead of comparing parents. */
#include "base/base.h"
#include "xml/xmlstream.h"

#include <event2/buffer.h>
#include <expat.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_FIRST     512
#define ARENA_CHUNK_MAX (64 * 1024)

struct chunk {
    struct chunk *prev; /* older chunk (NULL for the embedded one) */
    size_t size, used;
    char data[];
};

/* Stale envelope fields (bits of env_stale). */
#define ENV_META 1u /* kind, type, id */
#define ENV_TO   2u
#define ENV_FROM 4u
#define ENV_ALL  (ENV_META | ENV_TO | ENV_FROM)

struct mp_stanza {
    atomic_int refs;
    int text_dirty;     /* an element may lack its concatenated-text cache */
    unsigned env_stale; /* ENV_* fields of env to recompute */
    struct mp_envelope env;
    size_t total;      /* bytes allocated for the stanza, all chunks */
    struct chunk *cur; /* newest chunk: allocations come from here */
    mp_xml *root;
    mp_stanza *base;     /* envelope copy: the stanza whose children the
                            root shares (a reference is held), else NULL */
    struct chunk *first; /* embedded first chunk, right after this struct */
    /* The serialised children of the root, made once by the first writer
     * of a stanza written to several recipients (mp_stanza_serialize) and
     * shared by the others; dropped when the tree changes. */
    _Atomic(struct inner_out *) inner;
    atomic_int fanout;  /* mp_stanza_mark_fanout: cache the inner output */
    struct mp_ack *ack; /* mp_stanza_set_ack: the sender's acknowledgement (referenced) */
};

/* Serialised root children and the context they were written in. */
struct inner_out {
    size_t len;
    char *in_force;  /* default namespace in force for the children */
    char *stream_ns; /* "" for none */
    char data[];
};

static void inner_drop(mp_stanza *st)
{
    struct inner_out *o = atomic_exchange_explicit(&st->inner, NULL, memory_order_acq_rel);
    free(o);
}

/* Creates an empty stanza (no root) whose first chunk holds first_size
 * bytes. Caller owns the reference. */
static mp_stanza *stanza_alloc(size_t first_size)
{
    mp_stanza *st = mp_malloc(sizeof(*st) + sizeof(struct chunk) + first_size);
    atomic_init(&st->refs, 1);
    st->total = sizeof(*st) + sizeof(struct chunk) + first_size;
    st->first = (struct chunk *)(st + 1);
    st->first->prev = NULL;
    st->first->size = first_size;
    st->first->used = 0;
    st->cur = st->first;
    st->root = NULL;
    atomic_init(&st->inner, NULL);
    atomic_init(&st->fanout, 0);
    st->ack = NULL;
    st->base = NULL;
    st->text_dirty = 0;
    st->env_stale = ENV_ALL;
    memset(&st->env, 0, sizeof st->env);
    return st;
}

/* Takes len bytes aligned to align from chunk c, or returns NULL if they
 * do not fit. */
static void *chunk_take(struct chunk *c, size_t len, size_t align)
{
    uintptr_t base = (uintptr_t)c->data;
    size_t off = (size_t)(((base + c->used + align - 1) & ~(uintptr_t)(align - 1)) - base);
    if (off > c->size || c->size - off < len)
        return NULL;
    c->used = off + len;
    return c->data + off;
}

/* Bump allocation of len bytes aligned to align (a power of two) from the
 * stanza's arena. A request of half a chunk or more gets an exact block of
 * its own, so big texts are not followed by an almost empty chunk. Never
 * returns NULL. */
static void *arena_alloc(mp_stanza *st, size_t len, size_t align)
{
    struct chunk *c = st->cur;
    void *r = chunk_take(c, len, align);
    if (r)
        return r;
    size_t size = c->size * 2;
    if (size > ARENA_CHUNK_MAX)
        size = ARENA_CHUNK_MAX;
    int oversized = size / 2 < len + align;
    if (oversized)
        size = len + align;
    struct chunk *n = mp_malloc(sizeof(*n) + size);
    n->size = size;
    n->used = 0;
    st->total += sizeof(*n) + size;
    if (oversized && c->size - c->used > 64) {
        /* a big block: keep allocating small things from the current chunk */
        n->prev = c->prev;
        c->prev = n;
    } else {
        n->prev = c;
        st->cur = n;
    }
    return chunk_take(n, len, align);
}

/* Tries to grow the block [p, p+oldlen) - which must be the last allocation
 * in the current chunk - by more bytes in place. Returns 1 on success. */
static int arena_extend(mp_stanza *st, const char *p, size_t oldlen, size_t more)
{
    struct chunk *c = st->cur;
    if (p + oldlen != c->data + c->used || c->size - c->used < more)
        return 0;
    c->used += more;
    return 1;
}

static char *arena_strndup(mp_stanza *st, const char *s, size_t len)
{
    char *d = arena_alloc(st, len + 1, 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

void *mp_stanza_alloc(mp_stanza *st, size_t len)
{
    return arena_alloc(st, len, alignof(max_align_t));
}

const char *mp_stanza_strdup(mp_stanza *st, const char *s)
{
    if (!s)
        return NULL;
    return arena_strndup(st, s, strlen(s));
}

/* Strings that occur in almost every stanza are not copied. */
static const char *const common_strings[] = {
    "",           "to",      "from",      "id",          "type",   "xml:lang", MP_NS_CLIENT,
    MP_NS_SERVER, "message", "presence",  "iq",          "body",   "error",    "result",
    "get",        "set",     "query",     "item",        "jid",    "name",     "subscription",
    "node",       "var",     "x",         "show",        "status", "priority", "thread",
    "subject",    "chat",    "groupchat", "unavailable", "c",      "hash",     "ver",
    "stamp",      "text",
};

#define N_COMMON (sizeof(common_strings) / sizeof(*common_strings))

/* common_strings by length, then first byte: common_by_len[len] is the
 * range [start, end) of common_sorted holding the strings of that length
 * (at most 16). Built once, before any worker starts parsing. */
static const char *common_sorted[N_COMMON];
static unsigned char common_by_len[18];

__attribute__((constructor)) static void common_index(void)
{
    size_t n = 0;
    for (size_t len = 0; len <= 16; len++) {
        common_by_len[len] = (unsigned char)n;
        for (size_t i = 0; i < N_COMMON; i++)
            if (strlen(common_strings[i]) == len)
                common_sorted[n++] = common_strings[i];
    }
    common_by_len[17] = (unsigned char)n;
}

/* Returns a string equal to s[0..len) that lives at least as long as st:
 * a static copy for common names, else a copy in st's arena. */
static const char *arena_intern(mp_stanza *st, const char *s, size_t len)
{
    if (len == 0)
        return common_strings[0];
    if (len <= 16) {
        for (size_t i = common_by_len[len]; i < common_by_len[len + 1]; i++) {
            const char *c = common_sorted[i];
            if (c[0] == s[0] && memcmp(c, s, len) == 0)
                return c;
        }
    } else if (len == sizeof(MP_NS_STANZA_ERRORS) - 1 && memcmp(s, MP_NS_STANZA_ERRORS, len) == 0) {
        return MP_NS_STANZA_ERRORS;
    }
    return arena_strndup(st, s, len);
}

static mp_xml *node_new(mp_stanza *st, enum mp_xml_type type)
{
    mp_xml *n = arena_alloc(st, sizeof(*n), alignof(mp_xml));
    memset(n, 0, sizeof(*n));
    n->type = type;
    return n;
}

static void link_child(mp_xml *parent, mp_xml *n)
{
    n->parent = parent;
    if (parent->last_child)
        parent->last_child->next = n;
    else
        parent->children = n;
    parent->last_child = n;
}

mp_stanza *mp_stanza_new(const char *name, const char *ns)
{
    mp_stanza *st = stanza_alloc(ARENA_FIRST);
    mp_xml *r = node_new(st, MP_XML_ELEMENT);
    r->name = arena_intern(st, name, strlen(name));
    r->ns = ns ? arena_intern(st, ns, strlen(ns)) : NULL;
    st->root = r;
    return st;
}

mp_stanza *mp_stanza_new_client(const char *name, const char *type, const char *from,
                                const char *to)
{
    mp_stanza *st = mp_stanza_new(name, MP_NS_CLIENT);
    char id[24];
    mp_random_id(id, sizeof id);
    if (type)
        mp_xml_set_attr(st, st->root, "type", type);
    mp_xml_set_attr(st, st->root, "id", id);
    if (from)
        mp_xml_set_attr(st, st->root, "from", from);
    if (to)
        mp_xml_set_attr(st, st->root, "to", to);
    return st;
}

/* Internal (used by xmlstream.c): a new stanza with a given root already
 * built by the caller via mp_stanza_set_root. */
mp_stanza *mp_stanza_new_empty(void)
{
    return stanza_alloc(ARENA_FIRST);
}

void mp_stanza_set_root(mp_stanza *st, mp_xml *root)
{
    st->root = root;
}

static void text_seal(mp_stanza *st);

/* Taking the first extra reference shares the stanza: while the caller is
 * still its only owner, the concatenated texts are cached (text_seal) and
 * the envelope is completed, so that no reader has to write. */
int mp_stanza_is_shared(const mp_stanza *st)
{
    return atomic_load_explicit(&((mp_stanza *)st)->refs, memory_order_acquire) > 1;
}

mp_stanza *mp_stanza_ref(mp_stanza *st)
{
    if (atomic_fetch_add_explicit(&st->refs, 1, memory_order_acq_rel) == 1) {
        if (st->text_dirty)
            text_seal(st);
        if (st->env_stale)
            mp_stanza_envelope(st);
    }
    return st;
}

/* ---- envelope ---- */

/* Copies src into dst with every string in st's arena (dst->buf_ NULL, so
 * mp_jid_free is a no-op on it). */
static void jid_to_arena(mp_stanza *st, mp_jid *dst, const mp_jid *src)
{
    memset(dst, 0, sizeof *dst);
    if (!src || !src->domain)
        return;
    size_t fl = strlen(src->full), bl = strlen(src->bare);
    dst->full = arena_alloc(st, fl + 1, 1);
    memcpy(dst->full, src->full, fl + 1);
    dst->bare = arena_alloc(st, bl + 1, 1);
    memcpy(dst->bare, src->full, bl);
    dst->bare[bl] = '\0';
    dst->domain = dst->bare + (src->local ? strlen(src->local) + 1 : 0);
    if (src->local) {
        size_t ll = strlen(src->local);
        dst->local = arena_alloc(st, ll + 1, 1);
        memcpy(dst->local, src->local, ll + 1);
    }
    if (src->resource)
        dst->resource = dst->full + bl + 1;
}

/* Parses attribute value v into *j (arena); sets *bad if v is invalid. */
static void env_jid(mp_stanza *st, const char *v, mp_jid *j, int *bad)
{
    memset(j, 0, sizeof *j);
    *bad = 0;
    if (!v)
        return;
    mp_jid tmp;
    if (mp_jid_parse(&tmp, v) != MAGPIE_OK) {
        *bad = 1;
        return;
    }
    jid_to_arena(st, j, &tmp);
    mp_jid_free(&tmp);
}

static enum mp_stanza_type type_parse(const char *t)
{
    static const struct {
        const char *s;
        enum mp_stanza_type t;
    } v[] = {
        {"error", MP_TYPE_ERROR},
        {"normal", MP_TYPE_NORMAL},
        {"chat", MP_TYPE_CHAT},
        {"groupchat", MP_TYPE_GROUPCHAT},
        {"headline", MP_TYPE_HEADLINE},
        {"unavailable", MP_TYPE_UNAVAILABLE},
        {"subscribe", MP_TYPE_SUBSCRIBE},
        {"subscribed", MP_TYPE_SUBSCRIBED},
        {"unsubscribe", MP_TYPE_UNSUBSCRIBE},
        {"unsubscribed", MP_TYPE_UNSUBSCRIBED},
        {"probe", MP_TYPE_PROBE},
        {"get", MP_TYPE_GET},
        {"set", MP_TYPE_SET},
        {"result", MP_TYPE_RESULT},
    };
    if (!t)
        return MP_TYPE_NONE;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (strcmp(v[i].s, t) == 0)
            return v[i].t;
    return MP_TYPE_OTHER;
}

const struct mp_envelope *mp_stanza_envelope(mp_stanza *st)
{
    unsigned stale = st->env_stale;
    if (!stale)
        return &st->env;
    mp_xml *r = st->root;
    int bad;
    if (stale & ENV_META) {
        const char *n = r ? r->name : "";
        st->env.kind = strcmp(n, "message") == 0    ? MP_KIND_MESSAGE
                       : strcmp(n, "presence") == 0 ? MP_KIND_PRESENCE
                       : strcmp(n, "iq") == 0       ? MP_KIND_IQ
                                                    : MP_KIND_OTHER;
        st->env.type = type_parse(r ? mp_xml_get_attr(r, "type") : NULL);
        st->env.id = r ? mp_xml_get_attr(r, "id") : NULL;
    }
    if (stale & ENV_TO) {
        env_jid(st, r ? mp_xml_get_attr(r, "to") : NULL, &st->env.to, &bad);
        st->env.to_bad = (unsigned)bad;
    }
    if (stale & ENV_FROM) {
        env_jid(st, r ? mp_xml_get_attr(r, "from") : NULL, &st->env.from, &bad);
        st->env.from_bad = (unsigned)bad;
    }
    st->env_stale = 0;
    return &st->env;
}

/* Marks the envelope field fed by root attribute name stale. */
static void env_touch(mp_stanza *st, const char *name)
{
    if (strcmp(name, "to") == 0)
        st->env_stale |= ENV_TO;
    else if (strcmp(name, "from") == 0)
        st->env_stale |= ENV_FROM;
    else if (strcmp(name, "type") == 0 || strcmp(name, "id") == 0)
        st->env_stale |= ENV_META;
}

void mp_stanza_set_to(mp_stanza *st, const mp_jid *jid)
{
    mp_xml_set_attr(st, st->root, "to", jid ? jid->full : NULL);
    jid_to_arena(st, &st->env.to, jid);
    st->env.to_bad = 0;
    st->env_stale &= ~ENV_TO;
}

void mp_stanza_set_from(mp_stanza *st, const mp_jid *jid)
{
    mp_xml_set_attr(st, st->root, "from", jid ? jid->full : NULL);
    jid_to_arena(st, &st->env.from, jid);
    st->env.from_bad = 0;
    st->env_stale &= ~ENV_FROM;
}

void mp_stanza_unref(mp_stanza *st)
{
    if (!st)
        return;
    if (atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
        return;
    struct chunk *c = st->cur;
    while (c && c != st->first) {
        struct chunk *prev = c->prev;
        free(c);
        c = prev;
    }
    /* oversized blocks may hang off the embedded chunk too */
    c = st->first->prev;
    while (c) {
        struct chunk *prev = c->prev;
        free(c);
        c = prev;
    }
    mp_stanza *base = st->base;
    struct mp_ack *ack = st->ack;
    free(atomic_load_explicit(&st->inner, memory_order_relaxed));
    free(st);
    mp_stanza_unref(base);
    mp_ack_unref(ack);
}

/* ---- acknowledgement tokens ----
 * Two counts: refs keeps the memory (the stanza, the creator, each
 * deferral), pending counts the completions still owed (the creator and
 * each deferral). A deferral is only taken while pending > 0, so a token
 * whose acknowledgement has gone out can never be held again. */
struct mp_ack {
    atomic_int refs;
    atomic_int pending;
    void (*complete)(void *ud);
    void *ud;
};

struct mp_ack *mp_ack_new(void (*complete)(void *ud), void *ud)
{
    struct mp_ack *a = mp_malloc(sizeof *a);
    atomic_init(&a->refs, 1);
    atomic_init(&a->pending, 1);
    a->complete = complete;
    a->ud = ud;
    return a;
}

void mp_ack_unref(struct mp_ack *a)
{
    if (a && atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        free(a);
}

void mp_stanza_set_ack(mp_stanza *st, struct mp_ack *a)
{
    if (a)
        atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    mp_ack_unref(st->ack);
    st->ack = a;
}

mp_ack *mp_stanza_get_ack(const mp_stanza *st)
{
    return st->ack;
}

mp_ack *mp_stanza_defer_ack(mp_stanza *st)
{
    struct mp_ack *a = st->ack;
    if (!a)
        return NULL;
    int p = atomic_load_explicit(&a->pending, memory_order_acquire);
    while (p > 0)
        if (atomic_compare_exchange_weak_explicit(&a->pending, &p, p + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
            return a;
        }
    return NULL; /* acknowledged already */
}

void mp_ack_done(mp_ack *a)
{
    if (!a)
        return;
    if (atomic_fetch_sub_explicit(&a->pending, 1, memory_order_acq_rel) == 1)
        a->complete(a->ud);
    mp_ack_unref(a);
}

mp_xml *mp_stanza_root(const mp_stanza *st)
{
    return st->root;
}

size_t mp_stanza_size(const mp_stanza *st)
{
    return st->total;
}

static void copy_children(mp_stanza *st, mp_xml *dst, const mp_xml *src);

/* Copy-on-write for the root of an envelope copy: before its child list
 * changes, the shared children (whose ->parent is the original's root) are
 * replaced by copies in st. */
static void own_children(mp_stanza *st, mp_xml *el)
{
    inner_drop(st);
    if (!el->children || el->children->parent == el)
        return;
    const mp_xml *orig = el->children->parent;
    el->children = el->last_child = NULL;
    el->text = NULL;
    el->text_len = 0;
    copy_children(st, el, orig);
}

mp_xml *mp_xml_add_child(mp_stanza *st, mp_xml *parent, const char *name, const char *ns)
{
    own_children(st, parent);
    mp_xml *n = node_new(st, MP_XML_ELEMENT);
    n->name = arena_intern(st, name, strlen(name));
    if (!ns || (parent->ns && strcmp(ns, parent->ns) == 0))
        n->ns = parent->ns;
    else
        n->ns = arena_intern(st, ns, strlen(ns));
    link_child(parent, n);
    return n;
}

/* The text of parent is about to change: its cached concatenation goes,
 * and if parent may now have several text children the stanza must
 * compute it again before it is shared. */
static void text_changed(mp_stanza *st, mp_xml *parent, const mp_xml *changed)
{
    parent->text = NULL;
    parent->text_len = 0;
    if (parent->children && parent->children != changed)
        st->text_dirty = 1;
}

/* Adds len bytes of text to parent; text following a text node is merged
 * into it. The merged text grows in place when it is the arena's last
 * allocation, else moves to a block of twice the size (text_cap_log2
 * remembers the capacity), so n pieces cost O(total), not O(n * total). */
mp_xml *mp_xml_add_text(mp_stanza *st, mp_xml *parent, const char *text, size_t len)
{
    own_children(st, parent);
    mp_xml *last = parent->last_child;
    if (last && last->type == MP_XML_TEXT) {
        if (len == 0)
            return last;
        text_changed(st, parent, last);
        size_t need = last->text_len + len + 1;
        size_t cap = last->text_cap_log2 ? (size_t)1 << last->text_cap_log2 : last->text_len + 1;
        if (need > cap) {
            if (arena_extend(st, last->text, cap, need - cap)) {
                last->text_cap_log2 = 0; /* the block is now exactly need bytes */
            } else {
                unsigned lg = 6;
                while (((size_t)1 << lg) < need)
                    lg++;
                char *t = arena_alloc(st, (size_t)1 << lg, 1);
                memcpy(t, last->text, last->text_len);
                last->text = t;
                last->text_cap_log2 = lg;
            }
        }
        char *t = (char *)last->text;
        memcpy(t + last->text_len, text, len);
        last->text_len += len;
        t[last->text_len] = '\0';
        return last;
    }
    text_changed(st, parent, NULL);
    mp_xml *n = node_new(st, MP_XML_TEXT);
    n->text = arena_strndup(st, text, len);
    n->text_len = len;
    link_child(parent, n);
    return n;
}

static void copy_attrs(mp_stanza *st, mp_xml *dst, const mp_xml *src)
{
    mp_xml_attr **tail = &dst->attrs;
    for (const mp_xml_attr *a = src->attrs; a; a = a->next) {
        mp_xml_attr *na = arena_alloc(st, sizeof(*na), alignof(mp_xml_attr));
        na->name = arena_intern(st, a->name, strlen(a->name));
        na->value = arena_intern(st, a->value, strlen(a->value));
        na->next = NULL;
        *tail = na;
        tail = &na->next;
    }
}

/* Deep-copies the children of src under dst (iteratively, so hostile
 * depth cannot blow the stack; climbing counts depth, as src's children
 * may have another ->parent when src is an envelope copy's root). */
static void copy_children(mp_stanza *st, mp_xml *dst, const mp_xml *src)
{
    const mp_xml *s = src->children;
    mp_xml *d = dst;
    size_t depth = 0;
    while (s) {
        mp_xml *n;
        if (s->type == MP_XML_TEXT) {
            n = node_new(st, MP_XML_TEXT);
            n->text = arena_strndup(st, s->text, s->text_len);
            n->text_len = s->text_len;
            if (d->children)
                st->text_dirty = 1;
            link_child(d, n);
        } else {
            n = node_new(st, MP_XML_ELEMENT);
            n->name = arena_intern(st, s->name, strlen(s->name));
            if (!s->ns)
                n->ns = d->ns;
            else if (d->ns && strcmp(s->ns, d->ns) == 0)
                n->ns = d->ns;
            else
                n->ns = arena_intern(st, s->ns, strlen(s->ns));
            copy_attrs(st, n, s);
            link_child(d, n);
            if (s->children) {
                s = s->children;
                d = n;
                depth++;
                continue;
            }
        }
        while (!s->next && depth > 0) {
            s = s->parent;
            d = d->parent;
            depth--;
        }
        s = s->next;
    }
}

mp_xml *mp_xml_add_copy(mp_stanza *st, mp_xml *parent, const mp_xml *src)
{
    own_children(st, parent);
    if (src->type == MP_XML_TEXT)
        return mp_xml_add_text(st, parent, src->text, src->text_len);
    mp_xml *n = mp_xml_add_child(st, parent, src->name, src->ns);
    copy_attrs(st, n, src);
    copy_children(st, n, src);
    return n;
}

/* A deep copy of src whose first arena chunk holds hint bytes. */
static mp_stanza *copy_sized(const mp_stanza *src, size_t hint)
{
    mp_stanza *st = stanza_alloc(hint);
    const mp_xml *r = src->root;
    mp_xml *n = node_new(st, MP_XML_ELEMENT);
    n->name = arena_intern(st, r->name, strlen(r->name));
    n->ns = r->ns ? arena_intern(st, r->ns, strlen(r->ns)) : NULL;
    copy_attrs(st, n, r);
    st->root = n;
    copy_children(st, n, r);
    return st;
}

mp_stanza *mp_stanza_copy(const mp_stanza *src)
{
    size_t hint = src->total - sizeof(*src);
    if (hint < ARENA_FIRST)
        hint = ARENA_FIRST;
    if (hint > ARENA_CHUNK_MAX)
        hint = ARENA_CHUNK_MAX;
    return copy_sized(src, hint);
}

/* Bytes used in st's arena (and its base's, for an envelope copy), with
 * room for the alignment padding of each allocation in a copy. */
static size_t arena_used(const mp_stanza *st)
{
    size_t n = 0;
    for (; st; st = st->base)
        for (const struct chunk *c = st->cur; c; c = c->prev)
            n += c->used + c->used / 8 + 16;
    return n;
}

mp_stanza *mp_stanza_copy_compact(const mp_stanza *src)
{
    return copy_sized(src, arena_used(src));
}

/* The root is new (its attribute list copied, names and values shared with
 * st, which the copy keeps alive through its reference); the children are
 * st's own nodes. Taking the reference seals st's texts first if st was
 * unshared, so the copy's readers never write either. */
mp_stanza *mp_stanza_copy_envelope(mp_stanza *st)
{
    mp_stanza *c = stanza_alloc(ARENA_FIRST - 256);
    c->base = mp_stanza_ref(st);
    const mp_xml *r = st->root;
    mp_xml *n = node_new(c, MP_XML_ELEMENT);
    n->name = r->name;
    n->ns = r->ns;
    mp_xml_attr **tail = &n->attrs;
    for (const mp_xml_attr *a = r->attrs; a; a = a->next) {
        mp_xml_attr *na = arena_alloc(c, sizeof(*na), alignof(mp_xml_attr));
        na->name = a->name;
        na->value = a->value;
        na->next = NULL;
        *tail = na;
        tail = &na->next;
    }
    n->children = r->children;
    n->last_child = r->last_child;
    n->text = r->text;
    n->text_len = r->text_len;
    c->root = n;
    if (!st->env_stale) {
        /* the strings live in st's arena, which c keeps alive */
        c->env = st->env;
        c->env_stale = 0;
    }
    return c;
}

void mp_xml_set_attr(mp_stanza *st, mp_xml *el, const char *name, const char *value)
{
    if (el == st->root)
        env_touch(st, name);
    else
        inner_drop(st);
    mp_xml_attr **pp = &el->attrs;
    for (; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0)
            break;
    }
    if (!value) {
        if (*pp)
            *pp = (*pp)->next;
        return;
    }
    if (*pp) {
        (*pp)->value = arena_intern(st, value, strlen(value));
        return;
    }
    mp_xml_attr *a = arena_alloc(st, sizeof(*a), alignof(mp_xml_attr));
    a->name = arena_intern(st, name, strlen(name));
    a->value = arena_intern(st, value, strlen(value));
    a->next = NULL;
    *pp = a;
}

/* Rewrites el's cached text (if any) after a text child left: the
 * remaining texts are shorter, so they fit in the cache's own block. */
static void text_recache_shorter(mp_xml *el)
{
    if (!el->text)
        return;
    size_t n = 0;
    for (const mp_xml *c = el->children; c; c = c->next)
        n += c->type == MP_XML_TEXT;
    if (n < 2) {
        el->text = NULL;
        el->text_len = 0;
        return;
    }
    char *t = (char *)el->text, *o = t;
    for (const mp_xml *c = el->children; c; c = c->next) {
        if (c->type == MP_XML_TEXT) {
            memcpy(o, c->text, c->text_len);
            o += c->text_len;
        }
    }
    *o = '\0';
    el->text_len = (size_t)(o - t);
}

void mp_xml_remove(mp_stanza *st, mp_xml *el)
{
    inner_drop(st);
    mp_xml *p = el->parent;
    if (!p)
        return;
    mp_xml *prev = NULL;
    for (mp_xml *c = p->children; c && c != el; c = c->next)
        prev = c;
    if (prev)
        prev->next = el->next;
    else
        p->children = el->next;
    if (p->last_child == el)
        p->last_child = prev;
    el->parent = NULL;
    el->next = NULL;
    if (el->type == MP_XML_TEXT)
        text_recache_shorter(p);
}

const char *mp_xml_get_attr(const mp_xml *el, const char *name)
{
    for (const mp_xml_attr *a = el->attrs; a; a = a->next)
        if (strcmp(a->name, name) == 0)
            return a->value;
    return NULL;
}

static int matches(const mp_xml *c, const char *name, const char *ns)
{
    if (c->type != MP_XML_ELEMENT)
        return 0;
    if (name && strcmp(c->name, name) != 0)
        return 0;
    if (ns && (!c->ns || strcmp(c->ns, ns) != 0))
        return 0;
    return 1;
}

mp_xml *mp_xml_find(const mp_xml *el, const char *name, const char *ns)
{
    for (mp_xml *c = el->children; c; c = c->next)
        if (matches(c, name, ns))
            return c;
    return NULL;
}

mp_xml *mp_xml_find_next(const mp_xml *child, const char *name, const char *ns)
{
    for (mp_xml *c = child->next; c; c = c->next)
        if (matches(c, name, ns))
            return c;
    return NULL;
}

mp_xml *mp_xml_first_element(const mp_xml *el)
{
    return mp_xml_find(el, NULL, NULL);
}

/* Concatenates el's direct text children into dst (total + 1 bytes). */
static void text_concat(char *dst, const mp_xml *el)
{
    for (const mp_xml *c = el->children; c; c = c->next) {
        if (c->type == MP_XML_TEXT) {
            memcpy(dst, c->text, c->text_len);
            dst += c->text_len;
        }
    }
    *dst = '\0';
}

/* Counts el's direct text children, sums their lengths, and points *only
 * at the last one. */
static size_t text_children(const mp_xml *el, size_t *total, const mp_xml **only)
{
    size_t n = 0;
    *total = 0;
    for (const mp_xml *c = el->children; c; c = c->next) {
        if (c->type == MP_XML_TEXT) {
            n++;
            *total += c->text_len;
            *only = c;
        }
    }
    return n;
}

/* Fills the concatenated-text cache of every element of st that has
 * several text children. Only while st has a single owner. */
static void text_seal(mp_stanza *st)
{
    mp_xml *n = st->root;
    size_t depth = 0;
    while (n) {
        if (n->type == MP_XML_ELEMENT && !n->text) {
            size_t total;
            const mp_xml *only;
            if (text_children(n, &total, &only) > 1) {
                char *t = arena_alloc(st, total + 1, 1);
                text_concat(t, n);
                n->text = t;
                n->text_len = total;
            }
        }
        /* shared children of an envelope root belong to the sealed base */
        if (n->type == MP_XML_ELEMENT && n->children && n->children->parent == n) {
            n = n->children;
            depth++;
            continue;
        }
        while (depth > 0 && !n->next) {
            n = n->parent;
            depth--;
        }
        n = depth > 0 ? n->next : NULL;
    }
    st->text_dirty = 0;
}

/* Last resort when a shared stanza lacks a cache (it was changed while
 * shared, against the rules): a per-thread buffer, valid until the next
 * such call on this thread. Never reached through the API's own paths. */
static _Thread_local char *text_scratch;
static _Thread_local size_t text_scratch_cap;

const char *mp_xml_text(mp_stanza *st, const mp_xml *el)
{
    size_t total;
    const mp_xml *only = NULL;
    size_t n = text_children(el, &total, &only);
    if (n == 0)
        return "";
    if (n == 1)
        return only->text;
    if (el->text)
        return el->text;
    if (atomic_load_explicit(&st->refs, memory_order_acquire) == 1) {
        /* single owner: cache it (el must belong to st) */
        char *t = arena_alloc(st, total + 1, 1);
        text_concat(t, el);
        mp_xml *w = (mp_xml *)el;
        w->text = t;
        w->text_len = total;
        return t;
    }
    if (text_scratch_cap < total + 1) {
        free(text_scratch);
        text_scratch_cap = total + 1;
        text_scratch = mp_malloc(text_scratch_cap);
    }
    text_concat(text_scratch, el);
    return text_scratch;
}

/* ---- serialisation ---- */

void mp_xml_escape(struct evbuffer *out, const char *s, size_t len, int quote)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep;
        switch (s[i]) {
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '&':
            rep = "&amp;";
            break;
        case '"':
            rep = quote ? "&quot;" : NULL;
            break;
        case '\'':
            rep = quote ? "&apos;" : NULL;
            break;
        /* keep whitespace in attribute values from being normalised */
        case '\t':
            rep = quote ? "&#9;" : NULL;
            break;
        case '\n':
            rep = quote ? "&#10;" : NULL;
            break;
        case '\r':
            rep = "&#13;";
            break;
        default:
            rep = NULL;
            break;
        }
        if (!rep)
            continue;
        if (i > start)
            evbuffer_add(out, s + start, i - start);
        evbuffer_add(out, rep, strlen(rep));
        start = i + 1;
    }
    if (len > start)
        evbuffer_add(out, s + start, len - start);
}

static int is_content_ns(const char *ns)
{
    return ns && (strcmp(ns, MP_NS_CLIENT) == 0 || strcmp(ns, MP_NS_SERVER) == 0);
}

static int same_ns(const char *a, const char *b)
{
    if (!a || !*a)
        a = "";
    if (!b || !*b)
        b = "";
    return a == b || strcmp(a, b) == 0;
}

/* For a namespaced attribute name "URI|local" returns the '|', else NULL. */
static const char *ns_bar(const mp_xml_attr *a)
{
    return strrchr(a->name, '|');
}

/* The distinct attribute namespaces declared on the element being written,
 * nsN being the URI at index N. One table serves a whole serialisation. */
struct ns_table {
    struct ns_uri {
        const char *s;
        size_t len;
    } * v, local[16];
    size_t n, cap;
};

/* Returns the index of URI s[0..len) on the current element, adding it
 * (and setting *is_new) if it is not declared there yet. */
static size_t ns_index(struct ns_table *t, const char *s, size_t len, int *is_new)
{
    for (size_t i = 0; i < t->n; i++) {
        if (t->v[i].len == len && memcmp(t->v[i].s, s, len) == 0) {
            *is_new = 0;
            return i;
        }
    }
    if (t->n == t->cap) {
        struct ns_uri *v = mp_malloc(2 * t->cap * sizeof(*v));
        memcpy(v, t->v, t->n * sizeof(*v));
        if (t->v != t->local)
            free(t->v);
        t->v = v;
        t->cap *= 2;
    }
    t->v[t->n].s = s;
    t->v[t->n].len = len;
    *is_new = 1;
    return t->n++;
}

/* Writes one namespaced attribute "URI|local" as nsN:local, declaring
 * xmlns:nsN on the element at the first attribute using that URI. */
static void write_ns_attr(struct evbuffer *out, struct ns_table *t, const mp_xml_attr *a,
                          const char *bar)
{
    int is_new;
    size_t idx = ns_index(t, a->name, (size_t)(bar - a->name), &is_new);
    if (is_new) {
        evbuffer_add_printf(out, " xmlns:ns%zu='", idx);
        mp_xml_escape(out, a->name, (size_t)(bar - a->name), 1);
        evbuffer_add(out, "'", 1);
    }
    evbuffer_add_printf(out, " ns%zu:%s='", idx, bar + 1);
    mp_xml_escape(out, a->value, strlen(a->value), 1);
    evbuffer_add(out, "'", 1);
}

/* The fixed prefix an element is written with, or NULL: inside a stream
 * the stream: prefix is always bound, and the xml: prefix always is. */
static const char *elem_prefix(const mp_xml *el, const char *stream_ns)
{
    if (!el->ns)
        return NULL;
    if (stream_ns && strcmp(el->ns, MP_NS_STREAMS) == 0)
        return "stream:";
    if (strcmp(el->ns, MP_NS_XML) == 0)
        return "xml:";
    return NULL;
}

/* Writes the start tag of el. in_force is the default namespace in force
 * at el's parent ("" for none); returns the default namespace in force
 * for el's children. */
static const char *write_start(const mp_xml *el, struct evbuffer *out, const char *in_force,
                               const char *stream_ns, int is_root, struct ns_table *t)
{
    const char *ns = el->ns;
    const char *child_ns = in_force;
    const char *prefix = elem_prefix(el, stream_ns);
    evbuffer_add(out, "<", 1);
    if (prefix)
        evbuffer_add(out, prefix, strlen(prefix));
    evbuffer_add(out, el->name, strlen(el->name));
    if (!prefix && ns && *ns) {
        child_ns = ns;
        int omit =
            same_ns(ns, in_force) || (is_root && is_content_ns(ns) && is_content_ns(in_force));
        if (!omit) {
            evbuffer_add(out, " xmlns='", 8);
            mp_xml_escape(out, ns, strlen(ns), 1);
            evbuffer_add(out, "'", 1);
        }
    } else if (!prefix && ns) {
        /* no namespace: undeclare the default one in force, if any */
        child_ns = "";
        if (*in_force)
            evbuffer_add(out, " xmlns=''", 9);
    }
    t->n = 0;
    for (const mp_xml_attr *a = el->attrs; a; a = a->next) {
        const char *bar = ns_bar(a);
        if (bar) {
            write_ns_attr(out, t, a, bar);
            continue;
        }
        evbuffer_add(out, " ", 1);
        evbuffer_add(out, a->name, strlen(a->name));
        evbuffer_add(out, "='", 2);
        mp_xml_escape(out, a->value, strlen(a->value), 1);
        evbuffer_add(out, "'", 1);
    }
    return child_ns;
}

static void write_end(const mp_xml *el, struct evbuffer *out, const char *stream_ns)
{
    const char *prefix = elem_prefix(el, stream_ns);
    evbuffer_add(out, "</", 2);
    if (prefix)
        evbuffer_add(out, prefix, strlen(prefix));
    evbuffer_add(out, el->name, strlen(el->name));
    evbuffer_add(out, ">", 1);
}

/* Serialises el iteratively. Each open element is kept on a small growable
 * stack with the namespace in force at its parent, and closing climbs that
 * stack rather than ->parent: the children of an envelope copy's root
 * point at another root. */
static void serialize_from(const mp_xml *el, struct evbuffer *out, const char *in_force,
                           const char *stream_ns, int is_root)
{
    if (el->type == MP_XML_TEXT) {
        mp_xml_escape(out, el->text, el->text_len, 0);
        return;
    }
    struct open_el {
        const mp_xml *el;
        const char *in_force; /* at its parent */
    } stack_local[32], *stack = stack_local;
    size_t cap = 32, depth = 0;
    struct ns_table t = {.v = NULL, .n = 0, .cap = 16};
    t.v = t.local;
    const mp_xml *n = el;
    for (;;) {
        if (n->type == MP_XML_TEXT) {
            mp_xml_escape(out, n->text, n->text_len, 0);
        } else {
            const char *child_ns = write_start(n, out, in_force, stream_ns, is_root && n == el, &t);
            if (!n->children) {
                evbuffer_add(out, "/>", 2);
            } else {
                evbuffer_add(out, ">", 1);
                if (depth == cap) {
                    struct open_el *s2 = mp_malloc(2 * cap * sizeof(*s2));
                    memcpy(s2, stack, cap * sizeof(*s2));
                    if (stack != stack_local)
                        free(stack);
                    stack = s2;
                    cap *= 2;
                }
                stack[depth].el = n;
                stack[depth].in_force = in_force;
                depth++;
                in_force = child_ns;
                n = n->children;
                continue;
            }
        }
        /* climb until a next sibling exists */
        while (depth > 0 && !n->next) {
            depth--;
            n = stack[depth].el;
            in_force = stack[depth].in_force;
            write_end(n, out, stream_ns);
        }
        if (depth == 0)
            break;
        n = n->next;
    }
    if (stack != stack_local)
        free(stack);
    if (t.v != t.local)
        free(t.v);
}

void mp_xml_serialize(const mp_xml *el, struct evbuffer *out, const char *stream_ns)
{
    serialize_from(el, out, stream_ns ? stream_ns : "", stream_ns, 1);
}

const void *mp_stanza_inner_output(mp_stanza *st)
{
    return atomic_load_explicit(&st->inner, memory_order_acquire);
}

void mp_stanza_mark_fanout(mp_stanza *st)
{
    atomic_store_explicit(&st->fanout, 1, memory_order_relaxed);
}

static int inner_matches(const struct inner_out *o, const char *in_force, const char *sns)
{
    return strcmp(o->in_force, in_force) == 0 && strcmp(o->stream_ns, sns) == 0;
}

/* The serialised root children of owner for the context (in_force,
 * stream_ns), made and published now if owner has none; NULL if owner
 * holds one for another context (the caller writes the children itself).
 * The result lives as long as owner's tree is unchanged. Thread-safe: two
 * first writers race with a compare-and-swap and the loser uses the
 * winner's. */
static const struct inner_out *inner_get(mp_stanza *owner, const mp_xml *children,
                                         const char *in_force, const char *stream_ns)
{
    const char *sns = stream_ns ? stream_ns : "";
    struct inner_out *o = atomic_load_explicit(&owner->inner, memory_order_acquire);
    if (o)
        return inner_matches(o, in_force, sns) ? o : NULL;
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return NULL;
    for (const mp_xml *c = children; c; c = c->next)
        serialize_from(c, b, in_force, stream_ns, 0);
    size_t len = evbuffer_get_length(b), l1 = strlen(in_force) + 1, l2 = strlen(sns) + 1;
    struct inner_out *n = mp_malloc(sizeof *n + len + l1 + l2);
    n->len = len;
    evbuffer_remove(b, n->data, len);
    evbuffer_free(b);
    n->in_force = n->data + len;
    memcpy(n->in_force, in_force, l1);
    n->stream_ns = n->in_force + l1;
    memcpy(n->stream_ns, sns, l2);
    struct inner_out *expect = NULL;
    if (atomic_compare_exchange_strong_explicit(&owner->inner, &expect, n, memory_order_acq_rel,
                                                memory_order_acquire))
        return n;
    free(n);
    return inner_matches(expect, in_force, sns) ? expect : NULL;
}

/* Writes st's root start tag, then its children from the shared inner
 * output of the stanza that owns them (st, or the original of an envelope
 * copy whose children are still shared), then the end tag. Byte for byte
 * what mp_xml_serialize writes. */
void mp_stanza_serialize(mp_stanza *st, struct evbuffer *out, const char *stream_ns)
{
    const mp_xml *root = st->root;
    mp_stanza *owner = NULL;
    if (st->base && root->children && root->children == st->base->root->children)
        owner = st->base;
    else if (!st->base && atomic_load_explicit(&st->fanout, memory_order_relaxed))
        owner = st;
    if (!owner || !root->children || root->type != MP_XML_ELEMENT) {
        mp_xml_serialize(root, out, stream_ns);
        return;
    }
    struct ns_table nt = {.v = NULL, .n = 0, .cap = 16};
    nt.v = nt.local;
    const char *in_force = stream_ns ? stream_ns : "";
    const char *child_ns = write_start(root, out, in_force, stream_ns, 1, &nt);
    if (nt.v != nt.local)
        free(nt.v);
    evbuffer_add(out, ">", 1);
    const struct inner_out *o = inner_get(owner, root->children, child_ns, stream_ns);
    if (o) {
        evbuffer_add(out, o->data, o->len);
    } else {
        for (const mp_xml *c = root->children; c; c = c->next)
            serialize_from(c, out, child_ns, stream_ns, 0);
    }
    write_end(root, out, stream_ns);
}

char *mp_xml_to_string(const mp_xml *el, const char *stream_ns)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        abort();
    mp_xml_serialize(el, b, stream_ns);
    size_t len = evbuffer_get_length(b);
    char *s = mp_malloc(len + 1);
    evbuffer_remove(b, s, len);
    s[len] = '\0';
    evbuffer_free(b);
    return s;
}

/* ---- parsing one element from a string ---- */

struct tree_builder {
    mp_stanza *st;
    mp_xml *cur;
    int done, bad;
    char *text; /* the text run being read (expat hands it in pieces) */
    size_t text_len, text_cap;
};

/* Adds the pending text run to the current element as one text node. */
static void tb_flush(struct tree_builder *tb)
{
    if (tb->text_len && tb->cur)
        mp_xml_add_text(tb->st, tb->cur, tb->text, tb->text_len);
    tb->text_len = 0;
}

/* Splits an expat NS name "uri\xfflocal[\xffprefix]" into uri and local
 * (uri "" when the name has no namespace). */
void mp_xml_split_name(const char *name, const char **uri, size_t *ulen, const char **local,
                       size_t *llen)
{
    const char *s1 = strchr(name, MP_XML_NS_SEP);
    if (!s1) {
        *uri = "";
        *ulen = 0;
        *local = name;
        *llen = strlen(name);
        return;
    }
    *uri = name;
    *ulen = (size_t)(s1 - name);
    *local = s1 + 1;
    const char *s2 = strchr(*local, MP_XML_NS_SEP);
    *llen = s2 ? (size_t)(s2 - *local) : strlen(*local);
}

/* Builds an element node for expat's name/atts in st under parent (NULL for
 * the root). Returns the node. */
mp_xml *mp_xml_build_element(mp_stanza *st, mp_xml *parent, const char *name, const char **atts)
{
    const char *uri, *local;
    size_t ulen, llen;
    mp_xml_split_name(name, &uri, &ulen, &local, &llen);
    mp_xml *n = node_new(st, MP_XML_ELEMENT);
    n->name = arena_intern(st, local, llen);
    if (parent && parent->ns && strncmp(parent->ns, uri, ulen) == 0 && parent->ns[ulen] == '\0')
        n->ns = parent->ns;
    else
        n->ns = arena_intern(st, uri, ulen);
    mp_xml_attr **tail = &n->attrs;
    for (size_t i = 0; atts[i]; i += 2) {
        mp_xml_attr *a = arena_alloc(st, sizeof(*a), alignof(mp_xml_attr));
        const char *au, *al;
        size_t aulen, allen;
        mp_xml_split_name(atts[i], &au, &aulen, &al, &allen);
        if (aulen == 0) {
            a->name = arena_intern(st, al, allen);
        } else if (aulen == sizeof(MP_NS_XML) - 1 && memcmp(au, MP_NS_XML, aulen) == 0) {
            char *nm = arena_alloc(st, allen + 5, 1);
            memcpy(nm, "xml:", 4);
            memcpy(nm + 4, al, allen);
            nm[allen + 4] = '\0';
            a->name = (allen == 4 && memcmp(al, "lang", 4) == 0) ? "xml:lang" : nm;
        } else {
            char *nm = arena_alloc(st, aulen + allen + 2, 1);
            memcpy(nm, au, aulen);
            nm[aulen] = '|';
            memcpy(nm + aulen + 1, al, allen);
            nm[aulen + allen + 1] = '\0';
            a->name = nm;
        }
        a->value = arena_intern(st, atts[i + 1], strlen(atts[i + 1]));
        a->next = NULL;
        *tail = a;
        tail = &a->next;
    }
    if (parent)
        link_child(parent, n);
    return n;
}

static void XMLCALL tb_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct tree_builder *tb = ud;
    if (tb->done) {
        tb->bad = 1;
        return;
    }
    tb_flush(tb);
    mp_xml *n = mp_xml_build_element(tb->st, tb->cur, name, atts);
    if (!tb->cur)
        tb->st->root = n;
    tb->cur = n;
}

static void XMLCALL tb_end(void *ud, const XML_Char *name)
{
    struct tree_builder *tb = ud;
    (void)name;
    tb_flush(tb);
    tb->cur = tb->cur->parent;
    if (!tb->cur)
        tb->done = 1;
}

static void XMLCALL tb_text(void *ud, const XML_Char *s, int len)
{
    struct tree_builder *tb = ud;
    if (!tb->cur || len <= 0)
        return;
    if (tb->text_cap - tb->text_len < (size_t)len) {
        size_t cap = tb->text_cap ? tb->text_cap : 256;
        while (cap - tb->text_len < (size_t)len)
            cap *= 2;
        tb->text = mp_realloc(tb->text, cap);
        tb->text_cap = cap;
    }
    memcpy(tb->text + tb->text_len, s, (size_t)len);
    tb->text_len += (size_t)len;
}

static void XMLCALL tb_refuse(void *ud)
{
    ((struct tree_builder *)ud)->bad = 1;
}

static void XMLCALL tb_doctype(void *ud, const XML_Char *n, const XML_Char *s, const XML_Char *p,
                               int i)
{
    (void)n;
    (void)s;
    (void)p;
    (void)i;
    tb_refuse(ud);
}

static void XMLCALL tb_pi(void *ud, const XML_Char *t, const XML_Char *d)
{
    (void)t;
    (void)d;
    tb_refuse(ud);
}

static void XMLCALL tb_comment(void *ud, const XML_Char *d)
{
    (void)d;
    tb_refuse(ud);
}

mp_stanza *mp_stanza_parse(const char *xml, size_t len)
{
    /* chunks grow as needed; a big text gets a block of its own */
    struct tree_builder tb = {.st = stanza_alloc(ARENA_FIRST)};
    XML_Parser p = XML_ParserCreateNS("UTF-8", MP_XML_NS_SEP);
    if (!p)
        abort();
    XML_SetReturnNSTriplet(p, XML_TRUE);
    XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
    XML_SetUserData(p, &tb);
    XML_SetElementHandler(p, tb_start, tb_end);
    XML_SetCharacterDataHandler(p, tb_text);
    XML_SetStartDoctypeDeclHandler(p, tb_doctype);
    XML_SetProcessingInstructionHandler(p, tb_pi);
    XML_SetCommentHandler(p, tb_comment);
    int ok = len <= INT32_MAX && XML_Parse(p, xml, (int)len, 1) == XML_STATUS_OK;
    XML_ParserFree(p);
    free(tb.text);
    if (!ok || tb.bad || !tb.done) {
        mp_stanza_unref(tb.st);
        return NULL;
    }
    return tb.st;
}

/* ---- stanza helpers ---- */

mp_stanza *mp_stanza_make_error(mp_stanza *st, const char *error_type, const char *condition,
                                const char *text)
{
    mp_xml *r = st->root;
    /* swap in place so attribute order is kept; names are static */
    for (mp_xml_attr *a = r->attrs; a; a = a->next) {
        if (strcmp(a->name, "to") == 0)
            a->name = "from";
        else if (strcmp(a->name, "from") == 0)
            a->name = "to";
    }
    /* the prepared JIDs swap with them */
    mp_jid j = st->env.to;
    st->env.to = st->env.from;
    st->env.from = j;
    unsigned bad = st->env.to_bad;
    st->env.to_bad = st->env.from_bad;
    st->env.from_bad = bad;
    unsigned stale = st->env_stale;
    st->env_stale =
        (stale & ENV_META) | ((stale & ENV_TO) ? ENV_FROM : 0) | ((stale & ENV_FROM) ? ENV_TO : 0);
    mp_xml_set_attr(st, r, "type", "error");
    mp_xml *e = mp_xml_add_child(st, r, "error", NULL);
    mp_xml_set_attr(st, e, "type", error_type);
    mp_xml_add_child(st, e, condition, MP_NS_STANZA_ERRORS);
    if (text) {
        mp_xml *t = mp_xml_add_child(st, e, "text", MP_NS_STANZA_ERRORS);
        mp_xml_set_attr(st, t, "xml:lang", "en");
        mp_xml_add_text(st, t, text, strlen(text));
    }
    return st;
}

mp_stanza *mp_iq_result(const mp_stanza *req)
{
    const mp_xml *q = req->root;
    mp_stanza *st = mp_stanza_new("iq", q->ns);
    mp_xml *r = st->root;
    const char *v;
    r->attrs = NULL;
    if ((v = mp_xml_get_attr(q, "from")))
        mp_xml_set_attr(st, r, "to", v);
    if ((v = mp_xml_get_attr(q, "to")))
        mp_xml_set_attr(st, r, "from", v);
    mp_xml_set_attr(st, r, "type", "result");
    if ((v = mp_xml_get_attr(q, "id")))
        mp_xml_set_attr(st, r, "id", v);
    return st;
}
