/* xmlstream.h - incremental XMPP stream parser on expat (core-internal).
 *
 * Feeds arbitrary byte chunks; reports the stream header, each complete
 * depth-1 element as a stanza, the stream end, and errors as RFC 6120
 * stream error conditions. Hostile input is refused with limits. */
#ifndef MAGPIE_XMLSTREAM_H
#define MAGPIE_XMLSTREAM_H

#include <stddef.h>
#include <magpie/xml.h>

/* A limit of 0 takes the default: 256 KiB stanza, depth 32, 64 attributes
 * of 8 KiB, 256 KiB text, 8192 elements, memory 4 x max_stanza + 16 KiB.
 * Exceeding any is a policy-violation stream error. */
struct mp_xml_limits {
    size_t max_stanza;   /* bytes of one depth-1 element, incl. markup */
    unsigned max_depth;  /* element nesting inside a stanza (stanza = 1) */
    unsigned max_attrs;  /* attributes per element */
    size_t max_attr_len; /* bytes of one attribute value */
    size_t max_text;     /* bytes of one text node run */
    /* What a stanza may build, not only what it may send: */
    unsigned max_elements; /* elements in one stanza, its root included */
    size_t max_memory;     /* arena bytes of the stanza being built
                              (mp_stanza_size) plus text not yet added */
};

struct mp_xmlstream_cb {
    /* <stream:stream ...> was read. hdr is a stanza whose root is the
     * stream element (name "stream", ns its namespace) with its attributes
     * (xml:lang as "xml:lang"); default_ns is the default namespace it
     * declared ("" if none). hdr is borrowed. */
    void (*open)(void *ud, mp_stanza *hdr, const char *default_ns);
    /* A complete depth-1 element. Ownership of st passes to the callee. */
    void (*stanza)(void *ud, mp_stanza *st);
    /* </stream:stream> was read. */
    void (*close)(void *ud);
    /* The stream is broken: condition is a stream error condition name
     * ("not-well-formed", "restricted-xml", "policy-violation",
     * "invalid-xml"...), text a short English explanation. No further
     * callbacks follow; the parser refuses further input. */
    void (*error)(void *ud, const char *condition, const char *text);
};

typedef struct mp_xmlstream mp_xmlstream;

/* Returns a new parser (caller frees with mp_xmlstream_free). limits and cb
 * are copied. */
mp_xmlstream *mp_xmlstream_new(const struct mp_xml_limits *limits, const struct mp_xmlstream_cb *cb,
                               void *ud);
void mp_xmlstream_free(mp_xmlstream *p);

/* Replaces the limits (copied) from the next stanza on: a stanza being read
 * keeps the limits it started with (pre-auth -> post-auth). May be called
 * from a callback. */
void mp_xmlstream_set_limits(mp_xmlstream *p, const struct mp_xml_limits *limits);

/* Feeds len bytes. Callbacks run from inside this call; a callback may call
 * mp_xmlstream_reset or mp_xmlstream_stop on p (feeding then stops at that
 * point: returns MAGPIE_AGAIN with *consumed set to the bytes used, so the
 * caller can re-feed the rest after e.g. a TLS switch - in practice the
 * remainder is discarded per RFC 6120 after STARTTLS/SASL). Returns
 * MAGPIE_OK when all bytes were consumed, MAGPIE_ERR after an error callback. */
int mp_xmlstream_feed(mp_xmlstream *p, const char *data, size_t len, size_t *consumed);

/* Switches p, before its first feed, to RFC 7395 framing (WebSocket):
 * the input is a sequence of complete elements; <open/> in the framing
 * namespace is reported as the header (open callback, hdr's root "open",
 * default_ns jabber:client), <close/> as the end, anything else as a
 * stanza; an element before the first <open/> is a bad-format error. */
void mp_xmlstream_set_framed(mp_xmlstream *p);
/* Starts over expecting a new stream header (after STARTTLS and SASL). */
void mp_xmlstream_reset(mp_xmlstream *p);
/* The callbacks' ud from now on (a stream handed to another owner). */
void mp_xmlstream_set_ud(mp_xmlstream *p, void *ud);
/* Stops the current feed after the current callback returns. */
void mp_xmlstream_stop(mp_xmlstream *p);

/* At a stanza boundary (between depth-1 elements), frees the expat parser
 * and its buffers to save memory on idle streams; the next feed rebuilds it
 * transparently with the stream's namespace context. Returns MAGPIE_OK if
 * released, MAGPIE_AGAIN if not at a boundary (nothing done). */
int mp_xmlstream_release(mp_xmlstream *p);

/* Bytes held by the parser (approximate), for accounting. */
size_t mp_xmlstream_memory(const mp_xmlstream *p);

/* A deep copy (refcount 1, owned by the caller) whose arena is sized to its
 * content instead of the usual first chunk: for stanzas kept for a
 * session's life (its last presence). */
mp_stanza *mp_stanza_copy_compact(const mp_stanza *src);

/* ---- shared by xml.c and xmlstream.c only (tree building from expat) ---- */
/* Separator of expat's namespace-processed names: "uri\xfflocal\xffprefix".
 * 0xFF never occurs in UTF-8, so it cannot clash with a URI or name. */
#define MP_XML_NS_SEP '\xff'
/* A new stanza without a root (refcount 1, caller owns). */
mp_stanza *mp_stanza_new_empty(void);
void mp_stanza_set_root(mp_stanza *st, mp_xml *root);
/* Builds the element for expat's (name, atts) in st's arena and appends it
 * to parent (NULL: a detached root). Attribute names become "to",
 * "xml:lang" or "URI|local". */
mp_xml *mp_xml_build_element(mp_stanza *st, mp_xml *parent, const char *name, const char **atts);
/* Unit tests: st's shared serialised children (mp_stanza_serialize), or
 * NULL if none has been made. */
const void *mp_stanza_inner_output(mp_stanza *st);
void mp_xml_split_name(const char *name, const char **uri, size_t *ulen, const char **local,
                       size_t *llen);

#endif
