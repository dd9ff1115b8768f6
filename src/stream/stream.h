/* stream/stream.h - what every XMPP stream shares, whatever its kind
 * (client-to-server now; server-to-server and components later) and
 * whatever its framing (RFC 6120 over TCP/TLS; RFC 7395 over WebSocket).
 *
 * The owner of a stream (c2s.c) keeps its state and policy (features,
 * SASL, binding, routing); these functions write the stream's own
 * elements in the transport's framing and judge a peer's stream header:
 *
 *   framing    header                      close          stanzas
 *   STREAM     <stream:stream xmlns=ns     </stream:stream>  in the
 *              xmlns:stream=...>                             default ns
 *   WEBSOCKET  <open xmlns=framing .../>   <close xmlns=framing/>
 *                                                       with xmlns=ns
 *
 * Output goes through a per-thread scratch buffer handed to the transport
 * in one piece (one TLS record per element). */
#ifndef MAGPIE_STREAM_STREAM_H
#define MAGPIE_STREAM_STREAM_H

#include <magpie/xml.h>
#include <stddef.h>

#include "net/transport.h"

struct evbuffer;

/* The calling thread's scratch buffer, to compose one element in. */
struct evbuffer *mp_stream_out(void);
/* Hands the scratch buffer's bytes to t (t NULL: they are dropped). */
void mp_stream_commit(struct mp_transport *t);
/* Frees the calling thread's scratch buffer (worker exit). */
void mp_stream_thread_exit(void);

/* Writes our stream header: id (NUL-terminated, chosen by the caller),
 * from (our domain), to (the peer's address, or NULL), lang ("" for
 * "en"); ns is the content namespace (jabber:client, jabber:server). */
void mp_stream_write_header(struct mp_transport *t, const char *ns, const char *id,
                            const char *from, const char *to, const char *lang);
/* Writes st (borrowed) as a stanza of a stream whose content namespace is
 * ns, sharing a fan-out's serialisation (mp_stanza_serialize). */
void mp_stream_write_stanza(struct mp_transport *t, const char *ns, mp_stanza *st);
/* Writes <stream:features> with the children of features (an element of
 * any stanza) in it; ns as above. */
void mp_stream_write_features(struct mp_transport *t, const char *ns, const mp_xml *features);
/* Writes a stream error (condition of RFC 6120 §4.9.3, optional English
 * text); the caller closes the stream after it. */
void mp_stream_write_error(struct mp_transport *t, const char *condition, const char *text);
/* Writes the end of our stream. */
void mp_stream_write_close(struct mp_transport *t);

/* Judges a peer's stream header (root of the header the parser reported,
 * with the default namespace it declared) for a stream of content
 * namespace ns framed as framing (RFC 6120 §4.7, §4.8; RFC 7395 §3.3.2).
 * Returns MAGPIE_OK, or MAGPIE_ERR with the stream error condition and
 * text to close with. */
int mp_stream_check_header(enum mp_framing framing, const mp_xml *root, const char *default_ns,
                           const char *ns, const char **condition, const char **text);
/* Copies the header's xml:lang into lang (size len) if it is a plausible
 * BCP 47 tag, else makes lang "" (RFC 6120 §4.7.4). */
void mp_stream_header_lang(const mp_xml *root, char *lang, size_t len);

#endif
