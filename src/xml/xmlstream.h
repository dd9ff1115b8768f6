/* xmlstream.h - the XMPP stream parser: the public part is
 * <magpie/xmlstream.h>; here what only the core uses (RFC 7395 framing,
 * idle release, accounting, tree building shared with xml.c). */
#ifndef MAGPIE_XMLSTREAM_H
#define MAGPIE_XMLSTREAM_H

#include <stddef.h>
#include <magpie/xml.h>
#include <magpie/xmlstream.h>

/* Switches p, before its first feed, to RFC 7395 framing (WebSocket):
 * the input is a sequence of complete elements; <open/> in the framing
 * namespace is reported as the header (open callback, hdr's root "open",
 * default_ns jabber:client), <close/> as the end, anything else as a
 * stanza; an element before the first <open/> is a bad-format error. */
void mp_xmlstream_set_framed(mp_xmlstream *p);
/* The callbacks' ud from now on (a stream handed to another owner). */
void mp_xmlstream_set_ud(mp_xmlstream *p, void *ud);
/* At a stanza boundary (between depth-1 elements), frees the expat parser
 * and its buffers to save memory on idle streams; the next feed rebuilds it
 * transparently with the stream's namespace context. Returns MAGPIE_OK if
 * released, MAGPIE_AGAIN if not at a boundary (nothing done). */
int mp_xmlstream_release(mp_xmlstream *p);

/* Bytes held by the parser (approximate), for accounting. */
size_t mp_xmlstream_memory(const mp_xmlstream *p);

/* Acknowledgement tokens (xml.h, mp_stanza_defer_ack), made by the stream
 * that reads a stanza from a client with stream management: complete(ud)
 * runs once, on the thread of the last mp_ack_done, when the creator's
 * own part (the first mp_ack_done) and every deferral are done. The
 * stanza keeps the token's memory (mp_stanza_set_ack, a reference). */
mp_ack *mp_ack_new(void (*complete)(void *ud), void *ud);
void mp_ack_unref(mp_ack *a);
void mp_stanza_set_ack(mp_stanza *st, mp_ack *a);
/* The token st carries (borrowed), or NULL. */
mp_ack *mp_stanza_get_ack(const mp_stanza *st);
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
