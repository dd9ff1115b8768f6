/* magpie/xmlstream.h - the incremental XMPP stream parser, for modules
 * that speak an XML stream on a listener of their own (XEP-0114
 * components, say) and for the core's c2s streams.
 *
 * Feeds arbitrary byte chunks; reports the stream header, each complete
 * depth-1 element as a stanza, the stream end, and errors as RFC 6120
 * stream error conditions. Hostile input is refused with limits. A parser
 * is used by one thread at a time. */
#ifndef MAGPIE_PUBLIC_XMLSTREAM_H
#define MAGPIE_PUBLIC_XMLSTREAM_H

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

/* Returns a new parser (caller frees with mp_xmlstream_free). limits (NULL:
 * the defaults) and cb
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

/* Starts over expecting a new stream header (after STARTTLS and SASL). */
void mp_xmlstream_reset(mp_xmlstream *p);
/* Stops the current feed after the current callback returns. */
void mp_xmlstream_stop(mp_xmlstream *p);

#endif
