/* xmlstream.c - incremental XMPP stream parser on expat.
 *
 * expat runs with namespace processing (names arrive as
 * "uri\xfflocal\xffprefix") and every DTD-related feature refused: a
 * DOCTYPE, a comment or a processing instruction ends the stream with
 * restricted-xml before expat looks at what follows, so no entity is ever
 * declared, expanded or loaded.
 *
 * Size limit without unbounded buffering: the parser tracks `mark`, the
 * byte offset (in expat's own index space) where the current unit began -
 * the start tag of the stanza being read, or the end of the last event
 * between stanzas. The feed loop never hands expat more than
 * mark + max_stanza bytes, so neither expat (which buffers a partial
 * token) nor the stanza arena can grow past the limit, whether the bytes
 * come in one call or one at a time.
 *
 * Memory built, not only bytes read: expat reports a text run in pieces
 * (each newline, entity or buffer end starts a new callback), so the run
 * is gathered in a per-parser buffer that grows by doubling and goes into
 * the tree as one text node when the next tag arrives. The stanza's arena
 * plus that buffer is capped (max_memory), and so is its element count
 * (max_elements): a few bytes of markup per element build far more.
 *
 * Idle streams: mp_xmlstream_release frees the expat parser between
 * stanzas. The next feed creates a new one and feeds it a synthetic stream
 * header reproducing the original's qualified name and namespace
 * declarations, so prefixes, the default namespace and the closing
 * </stream:stream> resolve as before; the open callback is not repeated.
 * mp_xmlstream_stop uses the same mechanism: the parser is dropped at the
 * event boundary and rebuilt on the next feed, so no byte is buffered
 * twice. */
#include "base/base.h"
#include "xml/xmlstream.h"

#include <expat.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_HEADER, ST_STREAM, ST_CLOSED, ST_ERROR };
enum { HALT_NONE, HALT_STOP, HALT_RESET, HALT_ERROR };

/* Defaults used when a limit is given as 0. */
#define DEF_MAX_STANZA   (256 * 1024)
#define DEF_MAX_DEPTH    32
#define DEF_MAX_ATTRS    64
#define DEF_MAX_ATTR_LEN 8192
#define DEF_MAX_TEXT     (256 * 1024)
#define DEF_MAX_ELEMENTS 8192
/* max_memory defaults to DEF_MEMORY_FACTOR * max_stanza + DEF_MEMORY_SLACK */
#define DEF_MEMORY_FACTOR 4
#define DEF_MEMORY_SLACK  (16 * 1024)

/* A text buffer larger than this is freed when its stanza is complete. */
#define TEXT_KEEP 4096

/* Reparse deferral (expat >= 2.6.0, and distributions' 2.5.0 with the
 * CVE-2023-52425 fix): expat does not retry a partial token until the
 * buffered data has doubled, which keeps hostile one-byte feeds linear but
 * can hold a complete stanza back until more bytes arrive - fatal for a
 * chat protocol. We keep deferral on, and force an immediate reparse when
 * the new bytes could complete a token (they hold a '>' or a ';'), at most
 * FORCE_MAX times per token, so a client that puts '>' in every byte of a
 * huge attribute value still costs linear time. */
#define FORCE_MAX 32
#pragma weak XML_SetReparseDeferralEnabled
#if XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION < 6
XMLPARSEAPI(XML_Bool) XML_SetReparseDeferralEnabled(XML_Parser parser, XML_Bool enabled);
#endif

static void set_deferral(XML_Parser x, XML_Bool on)
{
    if (XML_SetReparseDeferralEnabled)
        XML_SetReparseDeferralEnabled(x, on);
}

/* Approximate expat allocation overhead we add per block for accounting. */
#define MM_HDR 16

struct mp_xmlstream {
    XML_Parser parser; /* NULL when released (or before the 1st feed) */
    struct mp_xml_limits lim;
    struct mp_xmlstream_cb cb;
    void *ud;
    /* small fields together: this struct stays with every idle stream */
    unsigned char state;
    unsigned char halt;        /* why the current XML_Parse was stopped */
    unsigned char in_feed;
    unsigned char rebuilding;  /* parsing our own synthetic header */
    unsigned char framed;      /* RFC 7395: top-level elements, <open/> and <close/> */
    unsigned char framed_open; /* ... and an <open/> was read */
    unsigned depth;    /* open elements, stream element included */
    uint64_t fed;      /* bytes given to the current expat parser */
    uint64_t mark;     /* start of the current unit, see top */
    uint64_t halt_pos; /* end of the event where stop/reset hit */
    mp_stanza *cur;    /* stanza being built */
    mp_xml *node;      /* its innermost open element */
    unsigned elements; /* elements in cur */
    char *text;        /* text run not yet in the tree, see top */
    size_t text_len, text_cap;
    struct mp_xml_limits *next_lim; /* set_limits during a stanza, or NULL */
    char *synth; /* synthetic header for rebuilding (maybe a shared constant) */
    size_t synth_len;
    /* header namespace declarations, collected before the header's start
     * handler: "prefix\0uri\0" pairs, prefix "" for the default */
    char *decls;
    size_t decls_len;
    char *default_ns;          /* maybe a shared constant, see own_strings */
    unsigned char synth_const; /* synth is a string constant, not ours */
    unsigned char ns_const;    /* default_ns likewise */
    const char *err_cond, *err_text;
    size_t expat_mem; /* bytes currently allocated by expat */
    unsigned forced;  /* forced reparses since the last event */
};

/* ---- expat memory accounting ---- */

/* expat has no per-parser allocator argument besides the suite; the
 * accounting target is found through a thread-local set around calls. */
static _Thread_local mp_xmlstream *mm_owner;

/* Parser memory (expat's blocks, the text run buffer) comes from the
 * per-thread slab pool (base.h) up to MP_SLAB_MAX, from malloc above:
 * an idle stream's parser is freed long after the session's long-lived
 * objects were allocated around it, and in the main heap it would leave
 * a hole in every idle session. Callers know the size of what they free. */
static void *blk_alloc(size_t n)
{
    return n <= MP_SLAB_MAX ? mp_slab_alloc(n) : malloc(n);
}

static void blk_free(void *b, size_t n)
{
    if (n <= MP_SLAB_MAX)
        mp_slab_free(b);
    else
        free(b);
}

static void *mm_malloc(size_t n)
{
    if (n > SIZE_MAX - MM_HDR)
        return NULL;
    unsigned char *b = blk_alloc(n + MM_HDR);
    if (!b)
        return NULL;
    memcpy(b, &n, sizeof(n));
    if (mm_owner)
        mm_owner->expat_mem += n + MM_HDR;
    return b + MM_HDR;
}

static void mm_free(void *p)
{
    if (!p)
        return;
    unsigned char *b = (unsigned char *)p - MM_HDR;
    size_t old;
    memcpy(&old, b, sizeof(old));
    if (mm_owner && mm_owner->expat_mem >= old + MM_HDR)
        mm_owner->expat_mem -= old + MM_HDR;
    blk_free(b, old + MM_HDR);
}

static void *mm_realloc(void *p, size_t n)
{
    if (!p)
        return mm_malloc(n);
    unsigned char *b = (unsigned char *)p - MM_HDR;
    size_t old;
    memcpy(&old, b, sizeof(old));
    if (old + MM_HDR <= MP_SLAB_MAX && n <= MP_SLAB_MAX - MM_HDR &&
        mp_slab_size(old + MM_HDR) == mp_slab_size(n + MM_HDR)) {
        /* same slab class: in place */
        memcpy(b, &n, sizeof(n));
        if (mm_owner)
            mm_owner->expat_mem = mm_owner->expat_mem + n - old;
        return p;
    }
    void *np = mm_malloc(n);
    if (!np)
        return NULL;
    memcpy(np, p, old < n ? old : n);
    mm_free(p);
    return np;
}

static const XML_Memory_Handling_Suite mm_suite = {mm_malloc, mm_realloc, mm_free};

/* ---- errors and halting ---- */

/* Records a stream error from inside an expat handler and aborts expat;
 * the error callback runs once XML_Parse has returned (so the callee may
 * free p then; no other callback may free p). */
static void fail(mp_xmlstream *p, const char *cond, const char *text)
{
    if (p->state == ST_ERROR)
        return;
    p->state = ST_ERROR;
    p->err_cond = cond;
    p->err_text = text;
    p->halt = HALT_ERROR;
    if (p->parser && p->in_feed)
        XML_StopParser(p->parser, XML_FALSE);
}

static int halted(const mp_xmlstream *p)
{
    return p->halt != HALT_NONE || p->state == ST_ERROR || p->state == ST_CLOSED;
}

static uint64_t event_end(const mp_xmlstream *p)
{
    return (uint64_t)XML_GetCurrentByteIndex(p->parser) +
           (uint64_t)XML_GetCurrentByteCount(p->parser);
}

/* ---- the stream header ---- */

static void add_decl(mp_xmlstream *p, const char *prefix, const char *uri)
{
    size_t pl = prefix ? strlen(prefix) : 0, ul = uri ? strlen(uri) : 0;
    p->decls = mp_realloc(p->decls, p->decls_len + pl + ul + 2);
    memcpy(p->decls + p->decls_len, prefix ? prefix : "", pl + 1);
    memcpy(p->decls + p->decls_len + pl + 1, uri ? uri : "", ul + 1);
    p->decls_len += pl + ul + 2;
}

/* Appends len bytes of s to the synthetic header, escaped for an
 * attribute value if escape is set. */
static void synth_addn(mp_xmlstream *p, size_t *cap, const char *s, size_t len, int escape)
{
    for (const char *end = s + len; s < end; s++) {
        const char *rep = NULL;
        if (escape && *s == '\'')
            rep = "&apos;";
        else if (escape && *s == '&')
            rep = "&amp;";
        else if (escape && *s == '<')
            rep = "&lt;";
        /* attribute values normalise raw whitespace to spaces: keep it */
        else if (escape && *s == '\t')
            rep = "&#9;";
        else if (escape && *s == '\n')
            rep = "&#10;";
        else if (escape && *s == '\r')
            rep = "&#13;";
        size_t n = rep ? strlen(rep) : 1;
        if (p->synth_len + n + 1 > *cap) {
            *cap = (*cap + n) * 2;
            p->synth = mp_realloc(p->synth, *cap);
        }
        memcpy(p->synth + p->synth_len, rep ? rep : s, n);
        p->synth_len += n;
        p->synth[p->synth_len] = '\0';
    }
}

static void synth_add(mp_xmlstream *p, size_t *cap, const char *s, int escape)
{
    synth_addn(p, cap, s, strlen(s), escape);
}

/* The synthetic headers and default namespace of almost every client
 * stream (the declarations in either order): kept by every idle stream,
 * so they are shared constants instead of copies. */
static const char *const common_synth[] = {
    "<stream:stream xmlns='" MP_NS_CLIENT "' xmlns:stream='" MP_NS_STREAMS "'>",
    "<stream:stream xmlns:stream='" MP_NS_STREAMS "' xmlns='" MP_NS_CLIENT "'>",
};

static void free_synth(mp_xmlstream *p)
{
    if (!p->synth_const)
        free(p->synth);
    p->synth = NULL;
    p->synth_len = 0;
    p->synth_const = 0;
}

static void free_default_ns(mp_xmlstream *p)
{
    if (!p->ns_const)
        free(p->default_ns);
    p->default_ns = NULL;
    p->ns_const = 0;
}

static void set_default_ns(mp_xmlstream *p, const char *ns)
{
    free_default_ns(p);
    if (strcmp(ns, MP_NS_CLIENT) == 0) {
        p->default_ns = (char *)MP_NS_CLIENT;
        p->ns_const = 1;
    } else {
        p->default_ns = mp_strdup(ns);
    }
}

/* The finished synthetic header: a shared constant if it is a common one,
 * else trimmed to its length. */
static void own_synth(mp_xmlstream *p)
{
    for (size_t i = 0; i < sizeof common_synth / sizeof *common_synth; i++)
        if (strcmp(p->synth, common_synth[i]) == 0) {
            free(p->synth);
            p->synth = (char *)common_synth[i];
            p->synth_const = 1;
            return;
        }
    p->synth = mp_realloc(p->synth, p->synth_len + 1);
}

/* Records what is needed to rebuild the parser: the header's qualified
 * name and its namespace declarations, as a start tag. */
static void save_header(mp_xmlstream *p, const char *name)
{
    const char *uri, *local;
    size_t ulen, llen;
    mp_xml_split_name(name, &uri, &ulen, &local, &llen);
    const char *prefix = ulen ? strchr(local, MP_XML_NS_SEP) : NULL;
    size_t cap = 128;
    free_synth(p);
    p->synth = mp_malloc(cap);
    synth_add(p, &cap, "<", 0);
    if (prefix) {
        synth_add(p, &cap, prefix + 1, 0);
        synth_add(p, &cap, ":", 0);
    }
    synth_addn(p, &cap, local, llen, 0);
    for (size_t off = 0; off < p->decls_len;) {
        const char *pre = p->decls + off;
        const char *u = pre + strlen(pre) + 1;
        off = (size_t)(u - p->decls) + strlen(u) + 1;
        synth_add(p, &cap, *pre ? " xmlns:" : " xmlns", 0);
        synth_add(p, &cap, pre, 0);
        synth_add(p, &cap, "='", 0);
        synth_add(p, &cap, u, 1);
        synth_add(p, &cap, "'", 0);
        if (!*pre)
            set_default_ns(p, u);
    }
    synth_add(p, &cap, ">", 0);
    own_synth(p);
    free(p->decls);
    p->decls = NULL;
    p->decls_len = 0;
}

/* ---- expat handlers ---- */

static int check_attrs(mp_xmlstream *p, const char **atts)
{
    unsigned n = 0;
    for (size_t i = 0; atts[i]; i += 2) {
        if (++n > p->lim.max_attrs) {
            fail(p, "policy-violation", "too many attributes");
            return -1;
        }
        if (strlen(atts[i + 1]) > p->lim.max_attr_len) {
            fail(p, "policy-violation", "attribute value too long");
            return -1;
        }
    }
    return 0;
}

/* Fails the stream if the stanza being built takes more than max_memory
 * (its arena plus the pending text). Returns -1 then. */
static int check_memory(mp_xmlstream *p)
{
    if (mp_stanza_size(p->cur) + p->text_len > p->lim.max_memory) {
        fail(p, "policy-violation", "stanza takes too much memory");
        return -1;
    }
    return 0;
}

/* Adds the pending text run to the open element as one text node. */
static void flush_text(mp_xmlstream *p)
{
    if (!p->text_len)
        return;
    mp_xml_add_text(p->cur, p->node, p->text, p->text_len);
    p->text_len = 0;
}

static void free_text(mp_xmlstream *p)
{
    if (p->text)
        blk_free(p->text, p->text_cap);
    p->text = NULL;
    p->text_len = p->text_cap = 0;
}

/* On a stanza root, only the unqualified from/to/id/type are its
 * addressing; qualified ones ("URI|to", whatever the URI) are dropped so
 * they cannot be forwarded as a look-alike (ns0:to). */
static void drop_qualified_addressing(mp_xml *root)
{
    static const char *const names[] = {"from", "to", "id", "type"};
    for (mp_xml_attr **pp = &root->attrs; *pp;) {
        const char *bar = strrchr((*pp)->name, '|');
        int drop = 0;
        for (size_t i = 0; bar && i < sizeof(names) / sizeof(*names); i++)
            drop |= strcmp(bar + 1, names[i]) == 0;
        if (drop)
            *pp = (*pp)->next;
        else
            pp = &(*pp)->next;
    }
}

static void apply_limits(mp_xmlstream *p, const struct mp_xml_limits *limits);

/* Applies the limits set during the stanza that just ended, if any. */
static void apply_pending_limits(mp_xmlstream *p)
{
    if (!p->next_lim)
        return;
    struct mp_xml_limits l = *p->next_lim;
    free(p->next_lim);
    p->next_lim = NULL;
    apply_limits(p, &l);
}

enum { FRAMING_NONE, FRAMING_OPEN, FRAMING_CLOSE };

/* Which RFC 7395 framing element expat's name ("uri\xfflocal[\xffprefix]")
 * is, if any. */
static int framing_element(const char *name)
{
    const char *uri, *local;
    size_t ulen, llen;
    mp_xml_split_name(name, &uri, &ulen, &local, &llen);
    if (ulen != sizeof MP_NS_FRAMING - 1 || memcmp(uri, MP_NS_FRAMING, ulen) != 0)
        return FRAMING_NONE;
    if (llen == 4 && memcmp(local, "open", 4) == 0)
        return FRAMING_OPEN;
    if (llen == 5 && memcmp(local, "close", 5) == 0)
        return FRAMING_CLOSE;
    return FRAMING_NONE;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    mp_xmlstream *p = ud;
    p->forced = 0;
    if (halted(p))
        return;
    unsigned level = ++p->depth; /* 1 = stream, 2 = stanza root */
    if (level == 1) {
        if (p->rebuilding) {
            p->mark = event_end(p);
            return;
        }
        if (check_attrs(p, atts) < 0)
            return;
        save_header(p, name);
        p->state = ST_STREAM;
        p->mark = event_end(p);
        mp_stanza *hdr = mp_stanza_new_empty();
        mp_stanza_set_root(hdr, mp_xml_build_element(hdr, NULL, name, atts));
        if (p->cb.open)
            p->cb.open(p->ud, hdr, p->default_ns ? p->default_ns : "");
        mp_stanza_unref(hdr);
        return;
    }
    if (level - 1 > p->lim.max_depth) {
        fail(p, "policy-violation", "elements nested too deeply");
        return;
    }
    if (check_attrs(p, atts) < 0)
        return;
    if (level == 2 && p->framed && !p->framed_open && framing_element(name) != FRAMING_OPEN) {
        fail(p, "bad-format", "a WebSocket stream starts with <open/>");
        return;
    }
    if (level == 2) {
        p->mark = (uint64_t)XML_GetCurrentByteIndex(p->parser);
        p->cur = mp_stanza_new_empty();
        p->node = mp_xml_build_element(p->cur, NULL, name, atts);
        drop_qualified_addressing(p->node);
        mp_stanza_set_root(p->cur, p->node);
        p->elements = 1;
    } else {
        if (++p->elements > p->lim.max_elements) {
            fail(p, "policy-violation", "too many elements in a stanza");
            return;
        }
        flush_text(p);
        p->node = mp_xml_build_element(p->cur, p->node, name, atts);
    }
    check_memory(p);
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    mp_xmlstream *p = ud;
    p->forced = 0;
    if (halted(p))
        return;
    unsigned level = p->depth--;
    if (level == 1) {
        if (p->rebuilding)
            return;
        p->state = ST_CLOSED;
        if (p->cb.close)
            p->cb.close(p->ud);
        return;
    }
    flush_text(p);
    if (check_memory(p) < 0)
        return;
    if (level > 2) {
        p->node = p->node->parent;
        return;
    }
    mp_stanza *st = p->cur;
    p->cur = NULL;
    p->node = NULL;
    p->mark = event_end(p);
    if (p->text_cap > TEXT_KEEP)
        free_text(p);
    apply_pending_limits(p);
    if (p->framed) {
        int f = framing_element(name);
        if (f == FRAMING_OPEN) {
            p->framed_open = 1;
            if (p->cb.open)
                p->cb.open(p->ud, st, MP_NS_CLIENT);
            mp_stanza_unref(st);
            return;
        }
        if (f == FRAMING_CLOSE) {
            mp_stanza_unref(st);
            p->state = ST_CLOSED;
            if (p->cb.close)
                p->cb.close(p->ud);
            return;
        }
    }
    if (p->cb.stanza)
        p->cb.stanza(p->ud, st);
    else
        mp_stanza_unref(st);
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    mp_xmlstream *p = ud;
    p->forced = 0;
    if (halted(p))
        return;
    if (p->depth >= 2) {
        size_t n = (size_t)len;
        if (p->text_len + n > p->lim.max_text) {
            fail(p, "policy-violation", "text too long");
            return;
        }
        if (p->text_cap - p->text_len < n) {
            size_t cap = p->text_cap ? p->text_cap : 256;
            while (cap - p->text_len < n)
                cap *= 2;
            char *t = blk_alloc(cap);
            if (!t) {
                fail(p, "resource-constraint", "out of memory");
                return;
            }
            if (p->text) {
                memcpy(t, p->text, p->text_len);
                blk_free(p->text, p->text_cap);
            }
            p->text = t;
            p->text_cap = cap;
        }
        memcpy(p->text + p->text_len, s, n);
        p->text_len += n;
        check_memory(p);
        return;
    }
    /* between stanzas only whitespace (keepalives) is allowed */
    for (int i = 0; i < len; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') {
            fail(p, "bad-format", "text at stream level");
            return;
        }
    }
    p->mark = event_end(p);
}

static void XMLCALL on_ns_start(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
    mp_xmlstream *p = ud;
    if (halted(p) || p->depth != 0 || p->rebuilding)
        return;
    add_decl(p, prefix, uri);
}

static void XMLCALL on_doctype(void *ud, const XML_Char *n, const XML_Char *s, const XML_Char *pub,
                               int internal)
{
    (void)n;
    (void)s;
    (void)pub;
    (void)internal;
    fail(ud, "restricted-xml", "DTDs are not allowed");
}

static void XMLCALL on_entity(void *ud, const XML_Char *n, int pe, const XML_Char *v, int vl,
                              const XML_Char *b, const XML_Char *s, const XML_Char *pub,
                              const XML_Char *nn)
{
    (void)n;
    (void)pe;
    (void)v;
    (void)vl;
    (void)b;
    (void)s;
    (void)pub;
    (void)nn;
    fail(ud, "restricted-xml", "entity declarations are not allowed");
}

static void XMLCALL on_pi(void *ud, const XML_Char *t, const XML_Char *d)
{
    (void)t;
    (void)d;
    fail(ud, "restricted-xml", "processing instructions are not allowed");
}

static void XMLCALL on_comment(void *ud, const XML_Char *d)
{
    (void)d;
    fail(ud, "restricted-xml", "comments are not allowed");
}

static int on_extref(XML_Parser parser, const XML_Char *ctx, const XML_Char *base,
                     const XML_Char *sys, const XML_Char *pub)
{
    (void)ctx;
    (void)base;
    (void)sys;
    (void)pub;
    fail(XML_GetUserData(parser), "restricted-xml", "external entities are not allowed");
    return XML_STATUS_ERROR;
}

static void XMLCALL on_skipped(void *ud, const XML_Char *n, int pe)
{
    (void)n;
    (void)pe;
    fail(ud, "restricted-xml", "entity references are not allowed");
}

/* ---- parser lifecycle ---- */

static void drop_parser(mp_xmlstream *p)
{
    if (!p->parser)
        return;
    mp_xmlstream *saved = mm_owner;
    mm_owner = p;
    XML_ParserFree(p->parser);
    mm_owner = saved;
    p->parser = NULL;
}

/* Creates the expat parser; for an open stream, replays the synthetic
 * header (without calling the open callback). */
static void make_parser(mp_xmlstream *p)
{
    p->parser = XML_ParserCreate_MM("UTF-8", &mm_suite, "\xff");
    if (!p->parser)
        abort();
    XML_Parser x = p->parser;
    XML_SetReturnNSTriplet(x, XML_TRUE);
    XML_SetParamEntityParsing(x, XML_PARAM_ENTITY_PARSING_NEVER);
    XML_SetUserData(x, p);
    XML_SetElementHandler(x, on_start, on_end);
    XML_SetCharacterDataHandler(x, on_text);
    XML_SetStartNamespaceDeclHandler(x, on_ns_start);
    XML_SetStartDoctypeDeclHandler(x, on_doctype);
    XML_SetEntityDeclHandler(x, on_entity);
    XML_SetProcessingInstructionHandler(x, on_pi);
    XML_SetCommentHandler(x, on_comment);
    XML_SetExternalEntityRefHandler(x, on_extref);
    XML_SetSkippedEntityHandler(x, on_skipped);
    p->fed = 0;
    p->mark = 0;
    p->depth = 0;
    if (p->state == ST_STREAM) {
        p->rebuilding = 1;
        enum XML_Status s = XML_Parse(x, p->synth, (int)p->synth_len, 0);
        p->rebuilding = 0;
        if (s != XML_STATUS_OK || p->depth != 1)
            abort(); /* we wrote it: cannot happen */
        p->fed = p->synth_len;
        p->mark = p->fed;
    }
}

/* Makes limits (0 = default; NULL: all defaults) the ones in force. */
static void apply_limits(mp_xmlstream *p, const struct mp_xml_limits *limits)
{
    static const struct mp_xml_limits defaults;
    p->lim = limits ? *limits : defaults;
    if (!p->lim.max_stanza)
        p->lim.max_stanza = DEF_MAX_STANZA;
    if (!p->lim.max_depth)
        p->lim.max_depth = DEF_MAX_DEPTH;
    if (!p->lim.max_attrs)
        p->lim.max_attrs = DEF_MAX_ATTRS;
    if (!p->lim.max_attr_len)
        p->lim.max_attr_len = DEF_MAX_ATTR_LEN;
    if (!p->lim.max_text)
        p->lim.max_text = DEF_MAX_TEXT;
    if (!p->lim.max_elements)
        p->lim.max_elements = DEF_MAX_ELEMENTS;
    if (!p->lim.max_memory)
        p->lim.max_memory = DEF_MEMORY_FACTOR * p->lim.max_stanza + DEF_MEMORY_SLACK;
}

mp_xmlstream *mp_xmlstream_new(const struct mp_xml_limits *limits, const struct mp_xmlstream_cb *cb,
                               void *ud)
{
    mp_xmlstream *p = mp_calloc(1, sizeof(*p));
    apply_limits(p, limits);
    p->cb = *cb;
    p->ud = ud;
    p->state = ST_HEADER;
    return p;
}

/* Forgets the stream: no parser, no stanza in progress, no header. */
static void clear_stream(mp_xmlstream *p)
{
    drop_parser(p);
    mp_stanza_unref(p->cur);
    p->cur = NULL;
    p->node = NULL;
    free_text(p);
    apply_pending_limits(p);
    free_synth(p);
    free(p->decls);
    p->decls = NULL;
    p->decls_len = 0;
    free_default_ns(p);
    p->depth = 0;
}

/* Waits for a new stream header. In framed mode (RFC 7395) there is no
 * enclosing document: the parser runs inside a synthetic root of our own
 * (jabber:client by default, as a WebSocket client's stanzas declare),
 * every top-level element is a depth-1 element, and <open/>/<close/> in
 * the framing namespace stand for the header and the end of the stream. */
static void stream_restart(mp_xmlstream *p)
{
    clear_stream(p);
    p->state = ST_HEADER;
    if (!p->framed)
        return;
    static const char root[] = "<framed xmlns='" MP_NS_CLIENT "'>";
    p->synth = mp_strdup(root);
    p->synth_len = sizeof root - 1;
    set_default_ns(p, MP_NS_CLIENT);
    p->framed_open = 0;
    p->state = ST_STREAM;
}

void mp_xmlstream_set_framed(mp_xmlstream *p)
{
    p->framed = 1;
    stream_restart(p);
}

/* Inside a stanza the new limits wait for its end (on_end), so the stanza
 * is judged by one set of limits; between stanzas they apply at once, and
 * the feed loop uses the new max_stanza for the bytes that follow. */
void mp_xmlstream_set_limits(mp_xmlstream *p, const struct mp_xml_limits *limits)
{
    if (p->cur) {
        if (!p->next_lim)
            p->next_lim = mp_malloc(sizeof *p->next_lim);
        *p->next_lim = *limits;
        return;
    }
    free(p->next_lim);
    p->next_lim = NULL;
    apply_limits(p, limits);
}

void mp_xmlstream_free(mp_xmlstream *p)
{
    if (!p)
        return;
    clear_stream(p);
    free(p);
}

void mp_xmlstream_reset(mp_xmlstream *p)
{
    if (p->state == ST_ERROR)
        return;
    if (p->in_feed && p->parser) {
        p->halt_pos = event_end(p);
        p->halt = HALT_RESET;
        XML_StopParser(p->parser, XML_FALSE);
        return; /* the feed loop finishes the reset */
    }
    stream_restart(p);
}

void mp_xmlstream_set_ud(mp_xmlstream *p, void *ud)
{
    p->ud = ud;
}

void mp_xmlstream_stop(mp_xmlstream *p)
{
    if (!p->in_feed || !p->parser || p->halt != HALT_NONE || p->state == ST_ERROR)
        return;
    p->halt_pos = event_end(p);
    p->halt = HALT_STOP;
    XML_StopParser(p->parser, XML_FALSE);
}

/* Also frees the text buffer (empty between stanzas). */
int mp_xmlstream_release(mp_xmlstream *p)
{
    if (!p->parser) {
        if (!p->cur)
            free_text(p);
        return MAGPIE_OK;
    }
    if (p->in_feed || p->state != ST_STREAM || p->depth != 1 || p->fed != p->mark)
        return MAGPIE_AGAIN;
    drop_parser(p);
    free_text(p);
    return MAGPIE_OK;
}

size_t mp_xmlstream_memory(const mp_xmlstream *p)
{
    return sizeof(*p) + p->expat_mem + (p->synth ? p->synth_len + 1 : 0) + p->decls_len +
           p->text_cap + (p->cur ? mp_stanza_size(p->cur) : 0);
}

static const char *map_expat_error(enum XML_Error e)
{
    switch (e) {
    case XML_ERROR_UNDEFINED_ENTITY:
    case XML_ERROR_MISPLACED_XML_PI:
    case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
    case XML_ERROR_RECURSIVE_ENTITY_REF:
    case XML_ERROR_BINARY_ENTITY_REF:
    case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
    case XML_ERROR_ENTITY_DECLARED_IN_PE:
    case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
        return "restricted-xml";
    case XML_ERROR_UNBOUND_PREFIX:
        return "bad-namespace-prefix";
    case XML_ERROR_NO_MEMORY:
        return "resource-constraint";
    default:
        return "not-well-formed";
    }
}

/* Finishes a feed that ended in an error: drops the parser, reports. */
static int feed_error(mp_xmlstream *p)
{
    p->in_feed = 0;
    p->halt = HALT_NONE;
    clear_stream(p);
    p->state = ST_ERROR;
    if (p->cb.error)
        p->cb.error(p->ud, p->err_cond, p->err_text);
    return MAGPIE_ERR;
}

int mp_xmlstream_feed(mp_xmlstream *p, const char *data, size_t len, size_t *consumed)
{
    size_t off = 0;
    int rc = MAGPIE_OK;
    if (consumed)
        *consumed = 0;
    if (p->state == ST_ERROR)
        return MAGPIE_ERR;
    if (p->state == ST_CLOSED) {
        if (consumed)
            *consumed = len;
        return MAGPIE_OK;
    }
    mp_xmlstream *saved_owner = mm_owner;
    mm_owner = p;
    p->in_feed = 1;
    p->halt = HALT_NONE;
    while (off < len) {
        if (!p->parser)
            make_parser(p);
        uint64_t used = p->fed - p->mark;
        if (used >= p->lim.max_stanza) {
            p->err_cond = "policy-violation";
            p->err_text = p->state == ST_HEADER ? "stream header too big" : "stanza too big";
            p->state = ST_ERROR;
            break;
        }
        size_t n = len - off;
        if (n > p->lim.max_stanza - used)
            n = (size_t)(p->lim.max_stanza - used);
        if (n > INT32_MAX)
            n = INT32_MAX;
        uint64_t base = p->fed; /* expat index of data[off] */
        int force =
            p->forced < FORCE_MAX && (memchr(data + off, '>', n) || memchr(data + off, ';', n));
        if (force) {
            p->forced++;
            set_deferral(p->parser, XML_FALSE);
        }
        enum XML_Status s = XML_Parse(p->parser, data + off, (int)n, 0);
        if (force && p->parser)
            set_deferral(p->parser, XML_TRUE);
        if (s == XML_STATUS_OK) {
            p->fed += n;
            off += n;
            if (p->state == ST_CLOSED) {
                drop_parser(p);
                off = len; /* the rest after </stream> is ignored */
                break;
            }
            continue;
        }
        if (p->halt == HALT_STOP || p->halt == HALT_RESET) {
            off += (size_t)(p->halt_pos - base);
            if (p->halt == HALT_RESET) {
                stream_restart(p);
            } else {
                /* rebuilt at the next feed, from the boundary */
                drop_parser(p);
            }
            rc = MAGPIE_AGAIN;
            break;
        }
        if (p->state == ST_CLOSED) { /* junk after </stream>: ignored */
            drop_parser(p);
            off = len;
            break;
        }
        if (p->state != ST_ERROR) {
            enum XML_Error e = XML_GetErrorCode(p->parser);
            fail(p, map_expat_error(e), XML_ErrorString(e));
        }
        break;
    }
    mm_owner = saved_owner;
    if (p->state == ST_ERROR)
        return feed_error(p);
    p->in_feed = 0;
    p->halt = HALT_NONE;
    if (consumed)
        *consumed = off;
    return rc;
}
