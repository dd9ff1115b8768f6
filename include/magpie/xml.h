/* xml.h - stanza trees.
 *
 * A stanza is one reference-counted arena holding a tree of elements and
 * text nodes. Every string in the tree lives in the stanza's arena and is
 * freed with it, so fan-out (MUC, presence broadcast) shares one stanza by
 * taking references instead of copying. A stanza shared by several owners
 * (refcount > 1) must not be modified: take mp_stanza_copy() first, or
 * mp_stanza_copy_envelope() to change only the root's attributes (a
 * different 'to' per recipient). Reading a shared stanza, mp_xml_text
 * included, never writes to it, so several threads may read one stanza. */
#ifndef MAGPIE_XML_H
#define MAGPIE_XML_H

#include <stddef.h>
#include <magpie/jid.h>

struct evbuffer;

#define MP_NS_CLIENT        "jabber:client"
#define MP_NS_SERVER        "jabber:server"
#define MP_NS_STREAMS       "http://etherx.jabber.org/streams"
#define MP_NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define MP_NS_STANZA_ERRORS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define MP_NS_TLS           "urn:ietf:params:xml:ns:xmpp-tls"
#define MP_NS_SASL          "urn:ietf:params:xml:ns:xmpp-sasl"
#define MP_NS_BIND          "urn:ietf:params:xml:ns:xmpp-bind"
#define MP_NS_SESSION       "urn:ietf:params:xml:ns:xmpp-session"
#define MP_NS_XML           "http://www.w3.org/XML/1998/namespace"
#define MP_NS_FRAMING       "urn:ietf:params:xml:ns:xmpp-framing"

enum mp_xml_type { MP_XML_ELEMENT = 0, MP_XML_TEXT = 1 };

typedef struct mp_xml_attr {
    const char *name;  /* "to", "type", "xml:lang"; other namespaced
                          attributes as "URI|local" */
    const char *value; /* unescaped */
    struct mp_xml_attr *next;
} mp_xml_attr;

typedef struct mp_xml {
    enum mp_xml_type type;
    unsigned text_cap_log2; /* internal (text node: buffer capacity as a
                               power of two once grown, 0 = exact) */
    const char *name;       /* element: local name; text: NULL */
    const char *ns;         /* element: namespace URI (never NULL for parsed
                               elements, "" for no namespace; children built
                               with ns NULL inherit the parent's namespace) */
    const char *text;       /* text node: unescaped content, NUL-terminated;
                               element: internal cache of mp_xml_text (NULL
                               unless it has several text children) */
    size_t text_len;
    mp_xml_attr *attrs;
    struct mp_xml *parent, *children, *last_child, *next;
} mp_xml;

typedef struct mp_stanza mp_stanza;

/* ---- the envelope: what routing reads, parsed once ----
 * Kind, type, id and the prepared 'to'/'from' JIDs of a stanza, computed
 * once and carried with it, so nothing downstream re-parses attributes.
 * Setting a root attribute (to, from, type, id) with mp_xml_set_attr marks
 * that field stale; it is recomputed on the next mp_stanza_envelope while
 * the caller is the stanza's only owner, and at the latest when the stanza
 * first becomes shared (mp_stanza_ref from 1 to 2), so a shared stanza's
 * envelope is only read. Its strings live in the stanza's arena. */
enum mp_stanza_kind { MP_KIND_OTHER = 0, MP_KIND_MESSAGE, MP_KIND_PRESENCE, MP_KIND_IQ };
enum mp_stanza_type {
    MP_TYPE_NONE = 0, /* no type attribute (message: normal; presence: available) */
    MP_TYPE_OTHER,    /* a value this server does not know */
    MP_TYPE_ERROR,
    MP_TYPE_NORMAL,
    MP_TYPE_CHAT,
    MP_TYPE_GROUPCHAT,
    MP_TYPE_HEADLINE,
    MP_TYPE_UNAVAILABLE,
    MP_TYPE_SUBSCRIBE,
    MP_TYPE_SUBSCRIBED,
    MP_TYPE_UNSUBSCRIBE,
    MP_TYPE_UNSUBSCRIBED,
    MP_TYPE_PROBE,
    MP_TYPE_GET,
    MP_TYPE_SET,
    MP_TYPE_RESULT,
};
struct mp_envelope {
    enum mp_stanza_kind kind;
    enum mp_stanza_type type;
    const char *id;                    /* NULL if absent */
    mp_jid to;                         /* to.domain NULL: no 'to' (or malformed: to_bad) */
    mp_jid from;                       /* likewise */
    unsigned to_bad : 1, from_bad : 1; /* present but not a valid JID */
};

/* Returns a new stanza, refcount 1, whose root element is <name xmlns=ns>.
 * The caller owns the reference. Never returns NULL (aborts on OOM). */
mp_stanza *mp_stanza_new(const char *name, const char *ns);
/* A stanza the server originates (a notification, a push, a forwarded
 * result): <name xmlns='jabber:client'> with a fresh random 'id' and, where
 * not NULL, 'type', 'from' and 'to'. Owned by the caller, like
 * mp_stanza_new's. */
mp_stanza *mp_stanza_new_client(const char *name, const char *type, const char *from,
                                const char *to);

/* Parses one complete element from a string (tests, modules' templates).
 * Returns a new stanza owned by the caller, or NULL if not well-formed. */
mp_stanza *mp_stanza_parse(const char *xml, size_t len);

/* Reference counting; thread-safe. unref frees at zero. */
mp_stanza *mp_stanza_ref(mp_stanza *st);
void mp_stanza_unref(mp_stanza *st);

/* 1 if st has more than one reference (it must not be modified), else 0. */
int mp_stanza_is_shared(const mp_stanza *st);
/* Deep copy, refcount 1, owned by the caller (to modify a shared stanza). */
mp_stanza *mp_stanza_copy(const mp_stanza *st);
/* Cheap per-recipient copy: a new stanza (refcount 1, owned by the caller)
 * whose root is a fresh copy of st's root (name, namespace, attributes)
 * and whose children are st's own nodes, shared; the copy holds a
 * reference on st until it is freed. Set, replace or remove the root's
 * attributes freely. The shared children must never be modified (nor
 * passed to mp_xml_remove); adding or copying a child into the root
 * first copies them (copy-on-write). Their ->parent is st's root, not the
 * copy's. mp_stanza_size counts the copy's own bytes only. */
mp_stanza *mp_stanza_copy_envelope(mp_stanza *st);

/* The root element. */
mp_xml *mp_stanza_root(const mp_stanza *st);

/* The stanza's envelope (see above), valid while st lives. Computes stale
 * fields first, which writes to st: call it on an unshared stanza or on a
 * shared one (whose envelope was sealed when it became shared). */
const struct mp_envelope *mp_stanza_envelope(mp_stanza *st);
/* Sets the root's 'to' / 'from' to jid's full form and the envelope's
 * prepared JID from jid (copied into the arena, no preparation redone);
 * jid NULL removes the attribute. Unshared stanzas only. */
void mp_stanza_set_to(mp_stanza *st, const mp_jid *jid);
void mp_stanza_set_from(mp_stanza *st, const mp_jid *jid);

/* Bytes the stanza's arena occupies, for accounting and limits (an
 * envelope copy: its own bytes, not those it shares). */
size_t mp_stanza_size(const mp_stanza *st);

/* Allocates len bytes / copies a string into the stanza's arena. */
void *mp_stanza_alloc(mp_stanza *st, size_t len);
const char *mp_stanza_strdup(mp_stanza *st, const char *s);

/* Tree building, on an unshared stanza only. The returned nodes belong to
 * the stanza. ns NULL means "same namespace as parent", "" no namespace.
 * mp_xml_add_text merges with a preceding text node; adding text in many
 * pieces costs amortised O(total length). */
mp_xml *mp_xml_add_child(mp_stanza *st, mp_xml *parent, const char *name, const char *ns);
mp_xml *mp_xml_add_text(mp_stanza *st, mp_xml *parent, const char *text, size_t len);
/* Adds a deep copy of src (from any stanza) as last child of parent. */
mp_xml *mp_xml_add_copy(mp_stanza *st, mp_xml *parent, const mp_xml *src);
/* Sets (value copied), replaces, or with value NULL removes an attribute. */
void mp_xml_set_attr(mp_stanza *st, mp_xml *el, const char *name, const char *value);
/* Unlinks el (in st) from its parent (memory stays in the arena). Not on
 * the shared children of an envelope copy. */
void mp_xml_remove(mp_stanza *st, mp_xml *el);

/* Queries. */
const char *mp_xml_get_attr(const mp_xml *el, const char *name);
/* First child element with that name and namespace (either may be NULL =
 * any), or NULL. */
mp_xml *mp_xml_find(const mp_xml *el, const char *name, const char *ns);
/* Next sibling element after child with the same filter, or NULL. */
mp_xml *mp_xml_find_next(const mp_xml *child, const char *name, const char *ns);
/* First child element, or NULL. */
mp_xml *mp_xml_first_element(const mp_xml *el);
/* Concatenated text of el's direct text children (el in st); returns a
 * string that lives as long as st ("" if none). Never writes to a shared
 * stanza: an element with several text children gets its concatenation
 * cached while st has one owner (here, or when it is first shared). */
const char *mp_xml_text(mp_stanza *st, const mp_xml *el);

/* Serialisation. Writes el into out. stream_ns is the default namespace in
 * force where el is written (e.g. "jabber:client" inside a c2s stream): an
 * element whose ns equals it gets no xmlns attribute; the root also omits
 * it when its ns is jabber:client or jabber:server and stream_ns is one of
 * those two (a stanza written into another stream keeps its meaning). An
 * element in no namespace (ns "") under a default namespace is written
 * with xmlns=''. Namespaced attributes ("URI|local") are written as
 * nsN:local with one xmlns:nsN declaration per distinct URI on that
 * element. */
void mp_xml_serialize(const mp_xml *el, struct evbuffer *out, const char *stream_ns);
/* Writes stanza st, byte for byte as mp_xml_serialize(root) would, but
 * shares the work of a fan-out: the root's children are serialised once
 * and the bytes reused by every later write, on any thread, of st (if
 * marked with mp_stanza_mark_fanout) or of an envelope copy of st (see
 * mp_stanza_copy_envelope: a MUC message to 1,000 occupants is 1,000 small
 * roots around one serialised body). Only the root's start tag is written
 * per recipient. */
void mp_stanza_serialize(mp_stanza *st, struct evbuffer *out, const char *stream_ns);
/* Marks st as written to several recipients, so mp_stanza_serialize keeps
 * the serialised children (before st is shared, or from its owner). */
void mp_stanza_mark_fanout(mp_stanza *st);
/* Same, into a malloc'd NUL-terminated string the caller frees. */
char *mp_xml_to_string(const mp_xml *el, const char *stream_ns);
/* Appends s escaped for text (quote=0) or attribute values (quote=1). */
void mp_xml_escape(struct evbuffer *out, const char *s, size_t len, int quote);

/* Stanza helpers (RFC 6120 §8). */
/* Turns st (owned, refcount 1) into an error reply in place: swaps to and
 * from, sets type='error' and adds <error type=...><condition xmlns=
 * stanzas/>[<text>]</error>. Returns st. */
mp_stanza *mp_stanza_make_error(mp_stanza *st, const char *error_type, const char *condition,
                                const char *text);
/* Returns a new <iq type='result'> reply (caller owns) to the IQ req:
 * same id, to = req's from, from = req's to. */
mp_stanza *mp_iq_result(const mp_stanza *req);

/* ---- acknowledgement (XEP-0198: "acknowledged means durable") ----
 * A stanza a client sent on a stream with stream management carries a
 * token; the client's <a/> covers the stanza only once the token is done.
 * The core completes its own part when routing returns; a module that
 * makes the stanza durable later (an offline store write) defers the
 * token while it handles the stanza, on the routing thread, and calls
 * mp_ack_done (any thread) once the write committed or failed. Returns
 * NULL when st carries no token or its acknowledgement is no longer
 * pending (nothing to defer; mp_ack_done(NULL) is a no-op). */
typedef struct mp_ack mp_ack;
mp_ack *mp_stanza_defer_ack(mp_stanza *st);
void mp_ack_done(mp_ack *a);

#endif
