/* stream.c - the stream's own elements in the transport's framing, and
 * the judgement of a peer's header (stream/stream.h). */
#include "base/base.h"
#include "stream/stream.h"

#include <event2/buffer.h>
#include <string.h>

static _Thread_local struct evbuffer *scratch;

struct evbuffer *mp_stream_out(void)
{
    if (!scratch)
        scratch = evbuffer_new();
    return scratch;
}

void mp_stream_commit(struct mp_transport *t)
{
    struct evbuffer *out = mp_stream_out();
    if (t)
        t->ops->write(t, out);
    else
        evbuffer_drain(out, evbuffer_get_length(out));
}

void mp_stream_thread_exit(void)
{
    if (scratch)
        evbuffer_free(scratch);
    scratch = NULL;
}

static void attr(struct evbuffer *out, const char *name, const char *value)
{
    evbuffer_add_printf(out, " %s='", name);
    mp_xml_escape(out, value, strlen(value), 1);
    evbuffer_add(out, "'", 1);
}

void mp_stream_write_header(struct mp_transport *t, const char *ns, const char *id,
                            const char *from, const char *to, const char *lang)
{
    struct evbuffer *out = mp_stream_out();
    if (t && t->framing == MP_FRAMING_WEBSOCKET)
        evbuffer_add_printf(out, "<open xmlns='" MP_NS_FRAMING "'");
    else
        evbuffer_add_printf(
            out, "<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='" MP_NS_STREAMS "'",
            ns);
    attr(out, "id", id);
    attr(out, "from", from);
    if (to)
        attr(out, "to", to);
    attr(out, "version", "1.0");
    attr(out, "xml:lang", lang && *lang ? lang : "en");
    evbuffer_add_printf(out, t && t->framing == MP_FRAMING_WEBSOCKET ? "/>" : ">");
    mp_stream_commit(t);
}

void mp_stream_write_stanza(struct mp_transport *t, const char *ns, mp_stanza *st)
{
    /* a WebSocket frame has no enclosing default namespace: the stanza
     * carries its own xmlns (RFC 7395 §3.4) */
    int ws = t && t->framing == MP_FRAMING_WEBSOCKET;
    mp_stanza_serialize(st, mp_stream_out(), ws ? NULL : ns);
    mp_stream_commit(t);
}

/* The opening of a stream-namespaced element: inside an RFC 6120 stream
 * the stream: prefix is bound by the header; in a WebSocket frame the
 * element binds it itself. */
static void open_stream_el(struct evbuffer *out, struct mp_transport *t, const char *name)
{
    if (t && t->framing == MP_FRAMING_WEBSOCKET)
        evbuffer_add_printf(out, "<stream:%s xmlns:stream='" MP_NS_STREAMS "'>", name);
    else
        evbuffer_add_printf(out, "<stream:%s>", name);
}

void mp_stream_write_features(struct mp_transport *t, const char *ns, const mp_xml *features)
{
    struct evbuffer *out = mp_stream_out();
    int ws = t && t->framing == MP_FRAMING_WEBSOCKET;
    open_stream_el(out, t, "features");
    for (const mp_xml *c = features->children; c; c = c->next)
        mp_xml_serialize(c, out, ws ? NULL : ns);
    evbuffer_add_printf(out, "</stream:features>");
    mp_stream_commit(t);
}

void mp_stream_write_error(struct mp_transport *t, const char *condition, const char *text)
{
    struct evbuffer *out = mp_stream_out();
    open_stream_el(out, t, "error");
    evbuffer_add_printf(out, "<%s xmlns='" MP_NS_STREAM_ERRORS "'/>", condition);
    if (text) {
        evbuffer_add_printf(out, "<text xmlns='" MP_NS_STREAM_ERRORS "' xml:lang='en'>");
        mp_xml_escape(out, text, strlen(text), 0);
        evbuffer_add_printf(out, "</text>");
    }
    evbuffer_add_printf(out, "</stream:error>");
    mp_stream_commit(t);
}

void mp_stream_write_close(struct mp_transport *t)
{
    if (t && t->framing == MP_FRAMING_WEBSOCKET)
        evbuffer_add_printf(mp_stream_out(), "<close xmlns='" MP_NS_FRAMING "'/>");
    else
        evbuffer_add_printf(mp_stream_out(), "</stream:stream>");
    mp_stream_commit(t);
}

int mp_stream_check_header(enum mp_framing framing, const mp_xml *root, const char *default_ns,
                           const char *ns, const char **condition, const char **text)
{
    const char *version = mp_xml_get_attr(root, "version");
    if (framing == MP_FRAMING_WEBSOCKET) {
        if (strcmp(root->name, "open") != 0 || !root->ns || strcmp(root->ns, MP_NS_FRAMING) != 0) {
            *condition = "invalid-namespace";
            *text = "The stream must open with <open xmlns='" MP_NS_FRAMING "'/>";
            return MAGPIE_ERR;
        }
    } else {
        if (strcmp(root->name, "stream") != 0 || !root->ns ||
            strcmp(root->ns, MP_NS_STREAMS) != 0) {
            *condition = "invalid-namespace";
            *text = "The stream namespace must be " MP_NS_STREAMS;
            return MAGPIE_ERR;
        }
        if (!default_ns || strcmp(default_ns, ns) != 0) {
            *condition = "invalid-namespace";
            *text = strcmp(ns, MP_NS_CLIENT) == 0 ? "The content namespace must be " MP_NS_CLIENT
                                                  : "The content namespace must be " MP_NS_SERVER;
            return MAGPIE_ERR;
        }
    }
    if (!version || strncmp(version, "1.", 2) != 0) {
        *condition = "unsupported-version";
        *text = "XMPP version 1.0 is required";
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

void mp_stream_header_lang(const mp_xml *root, char *lang, size_t len)
{
    const char *l = mp_xml_get_attr(root, "xml:lang");
    lang[0] = '\0';
    if (l && *l && strlen(l) < len &&
        strspn(l, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == strlen(l))
        memcpy(lang, l, strlen(l) + 1);
}
