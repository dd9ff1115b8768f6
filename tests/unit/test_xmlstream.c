/* test_xmlstream.c - the incremental stream parser: headers and stanzas at
 * every split, keepalives, restricted XML, limits, reset/stop, and
 * release/rebuild of the expat parser on idle streams. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "xml/xmlstream.h"

/* Records every callback as a line of text in log. */
struct rec {
    char log[65536];
    size_t len;
    int opens, stanzas, closes, errors;
    const char *cond;
    /* actions taken from inside callbacks */
    mp_xmlstream *p;
    int stop_after_stanza; /* stop after this many stanzas (0: never) */
    int reset_after_stanza;
    int stop_on_open;
};

static void logf_(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->log + r->len, sizeof(r->log) - r->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        r->len += (size_t)n;
    assert_true(r->len < sizeof(r->log));
}

static void cb_open(void *ud, mp_stanza *hdr, const char *default_ns)
{
    struct rec *r = ud;
    char *s = mp_xml_to_string(mp_stanza_root(hdr), NULL);
    r->opens++;
    logf_(r, "open[%s] ns=%s %s\n", default_ns, mp_stanza_root(hdr)->ns, s);
    free(s);
    if (r->stop_on_open)
        mp_xmlstream_stop(r->p);
}

static void cb_stanza(void *ud, mp_stanza *st)
{
    struct rec *r = ud;
    char *s = mp_xml_to_string(mp_stanza_root(st), NULL);
    r->stanzas++;
    logf_(r, "stanza %s\n", s);
    free(s);
    mp_stanza_unref(st);
    if (r->stop_after_stanza && r->stanzas == r->stop_after_stanza)
        mp_xmlstream_stop(r->p);
    if (r->reset_after_stanza && r->stanzas == r->reset_after_stanza)
        mp_xmlstream_reset(r->p);
}

static void cb_close(void *ud)
{
    struct rec *r = ud;
    r->closes++;
    logf_(r, "close\n");
}

static void cb_error(void *ud, const char *cond, const char *text)
{
    struct rec *r = ud;
    r->errors++;
    r->cond = cond;
    logf_(r, "error %s (%s)\n", cond, text);
}

static const struct mp_xmlstream_cb CB = {cb_open, cb_stanza, cb_close, cb_error};

static struct mp_xml_limits LIM = {
    .max_stanza = 4096,
    .max_depth = 8,
    .max_attrs = 8,
    .max_attr_len = 256,
    .max_text = 1024,
};

static mp_xmlstream *new_parser(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    r->p = mp_xmlstream_new(&LIM, &CB, r);
    return r->p;
}

static int feed_str(mp_xmlstream *p, const char *s)
{
    size_t used;
    return mp_xmlstream_feed(p, s, strlen(s), &used);
}

#define HDR                                                                                        \
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "                                   \
    "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' "                            \
    "version='1.0' xml:lang='en'>"

static const char *CONV =
    HDR "<message to='a@example.com' type='chat' id='m1'><body>Hello &amp; &lt;bye&gt;"
        " \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80</body></message>\n"
        "<iq type='get' id='i1'><query xmlns='jabber:iq:roster'/></iq>"
        "<presence xml:lang='fr'><status>l&#224;</status></presence>"
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
        "</stream:stream>";

/* Parses s in one feed into r; returns the log. */
static const char *run_whole(struct rec *r, const char *s)
{
    mp_xmlstream *p = new_parser(r);
    int rc = feed_str(p, s);
    (void)rc;
    mp_xmlstream_free(p);
    return r->log;
}

static void parses_header_stanzas_and_close(void **state)
{
    (void)state;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    size_t used = 0;
    assert_int_equal(mp_xmlstream_feed(p, CONV, strlen(CONV), &used), MAGPIE_OK);
    assert_int_equal(used, strlen(CONV));
    assert_int_equal(r.opens, 1);
    assert_int_equal(r.stanzas, 4);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.errors, 0);
    assert_string_equal(
        r.log,
        "open[jabber:client] ns=http://etherx.jabber.org/streams <stream "
        "xmlns='http://etherx.jabber.org/streams' to='example.com' version='1.0' "
        "xml:lang='en'/>\n"
        "stanza <message xmlns='jabber:client' to='a@example.com' type='chat' id='m1'>"
        "<body>Hello &amp; &lt;bye&gt; \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80</body></message>\n"
        "stanza <iq xmlns='jabber:client' type='get' id='i1'>"
        "<query xmlns='jabber:iq:roster'/></iq>\n"
        "stanza <presence xmlns='jabber:client' xml:lang='fr'><status>l\xc3\xa0</status>"
        "</presence>\n"
        "stanza <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
        "AGEAYg==</auth>\n"
        "close\n");
    mp_xmlstream_free(p);
}

static mp_stanza *captured;
static char captured_ns[64];

static void cap_open(void *ud, mp_stanza *hdr, const char *default_ns)
{
    (void)ud;
    snprintf(captured_ns, sizeof captured_ns, "%s|%s", default_ns,
             mp_xml_get_attr(mp_stanza_root(hdr), "xml:lang"));
}

static void cap_stanza(void *ud, mp_stanza *st)
{
    (void)ud;
    captured = st;
}

static void stanza_tree_carries_namespaces_and_lang(void **state)
{
    (void)state;
    struct mp_xmlstream_cb cb = {cap_open, cap_stanza, NULL, NULL};
    mp_xmlstream *p = mp_xmlstream_new(&LIM, &cb, NULL);
    assert_int_equal(feed_str(p, HDR "<message xml:lang='de' xmlns:x='urn:x' x:a='1'>"
                                     "<body>b</body><x:y/></message>"),
                     MAGPIE_OK);
    assert_string_equal(captured_ns, "jabber:client|en");
    assert_non_null(captured);
    mp_xml *r = mp_stanza_root(captured);
    assert_string_equal(r->name, "message");
    assert_string_equal(r->ns, MP_NS_CLIENT);
    assert_string_equal(mp_xml_get_attr(r, "xml:lang"), "de");
    assert_string_equal(mp_xml_get_attr(r, "urn:x|a"), "1");
    assert_non_null(mp_xml_find(r, "body", MP_NS_CLIENT));
    assert_non_null(mp_xml_find(r, "y", "urn:x"));
    mp_stanza_unref(captured);
    mp_xmlstream_free(p);
}

/* Feeding one byte at a time, and in two pieces split at every offset,
 * gives exactly the same callbacks as one feed. */
static void byte_at_a_time_equals_one_feed(void **state)
{
    (void)state;
    struct rec whole, r;
    run_whole(&whole, CONV);
    mp_xmlstream *p = new_parser(&r);
    size_t n = strlen(CONV);
    for (size_t i = 0; i < n; i++) {
        size_t used = 0;
        assert_int_equal(mp_xmlstream_feed(p, CONV + i, 1, &used), MAGPIE_OK);
        assert_int_equal(used, 1);
    }
    mp_xmlstream_free(p);
    assert_string_equal(r.log, whole.log);
}

static void every_split_point_equals_one_feed(void **state)
{
    (void)state;
    static struct rec whole, r;
    run_whole(&whole, CONV);
    size_t n = strlen(CONV);
    for (size_t cut = 0; cut <= n; cut++) {
        mp_xmlstream *p = new_parser(&r);
        size_t u1 = 0, u2 = 0;
        assert_int_equal(mp_xmlstream_feed(p, CONV, cut, &u1), MAGPIE_OK);
        assert_int_equal(mp_xmlstream_feed(p, CONV + cut, n - cut, &u2), MAGPIE_OK);
        assert_int_equal(u1 + u2, n);
        mp_xmlstream_free(p);
        assert_string_equal(r.log, whole.log);
    }
}

/* expat defers re-parsing a partial token until more data arrives; a
 * stanza must still be delivered the moment its last byte is fed. */
static void stanza_is_delivered_when_its_last_byte_arrives(void **state)
{
    (void)state;
    char buf[2048];
    snprintf(buf, sizeof buf,
             "<message to='%0200d' id='%0200d'><body>%0300d&amp;\xe2\x82\xac"
             "</body><x xmlns='urn:x' a='>' b='%0100d'/></message>",
             1, 2, 3, 4);
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    const char *h = "<stream:stream xmlns='jabber:client' "
                    "xmlns:stream='http://etherx.jabber.org/streams'>";
    for (size_t i = 0; h[i]; i++) {
        assert_int_equal(r.opens, 0);
        assert_int_equal(mp_xmlstream_feed(p, h + i, 1, NULL), MAGPIE_OK);
    }
    assert_int_equal(r.opens, 1);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; buf[i]; i++) {
            assert_int_equal(r.stanzas, round);
            assert_int_equal(mp_xmlstream_feed(p, buf + i, 1, NULL), MAGPIE_OK);
        }
        assert_int_equal(r.stanzas, round + 1);
    }
    /* and in 7-byte pieces */
    size_t n = strlen(buf);
    for (size_t i = 0; i < n; i += 7) {
        assert_int_equal(r.stanzas, 3);
        assert_int_equal(mp_xmlstream_feed(p, buf + i, n - i < 7 ? n - i : 7, NULL), MAGPIE_OK);
    }
    assert_int_equal(r.stanzas, 4);
    mp_xmlstream_free(p);
}

static void whitespace_keepalives_are_ignored(void **state)
{
    (void)state;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    assert_int_equal(feed_str(p, HDR), MAGPIE_OK);
    for (int i = 0; i < 10000; i++) /* far more than max_stanza bytes */
        assert_int_equal(feed_str(p, " \r\n\t"), MAGPIE_OK);
    assert_int_equal(feed_str(p, "<presence/>  \n "), MAGPIE_OK);
    assert_int_equal(mp_xmlstream_release(p), MAGPIE_OK);
    assert_int_equal(feed_str(p, "   <presence/>\n</stream:stream>"), MAGPIE_OK);
    assert_int_equal(r.stanzas, 2);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.errors, 0);
    mp_xmlstream_free(p);
}

/* RFC 7395 framing: top-level elements, <open/> as the header, stanzas in
 * jabber:client unless they say otherwise, an idle release and rebuild in
 * between, a reset for the next <open/>, <close/> as the end. */
static void websocket_framing(void **state)
{
    (void)state;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    mp_xmlstream_set_framed(p);
#define OPEN "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0'/>"
    assert_int_equal(feed_str(p, OPEN), MAGPIE_OK);
    assert_int_equal(r.opens, 1);
    assert_non_null(strstr(r.log, "open[jabber:client] ns=urn:ietf:params:xml:ns:xmpp-framing"));
    assert_int_equal(feed_str(p, "<message xmlns='jabber:client' to='a@b'><body>1</body></message>"
                                 " <presence/>"),
                     MAGPIE_OK);
    assert_int_equal(mp_xmlstream_release(p), MAGPIE_OK);
    assert_int_equal(feed_str(p, "<iq type='get' id='x'><q xmlns='urn:q'/></iq>"), MAGPIE_OK);
    assert_int_equal(r.stanzas, 3);
    assert_non_null(strstr(r.log, "stanza <iq xmlns='jabber:client' type='get' id='x'>"));
    mp_xmlstream_reset(p); /* after SASL: a new <open/> */
    assert_int_equal(feed_str(p, OPEN "<presence xmlns='jabber:client'/>"), MAGPIE_OK);
    assert_int_equal(r.opens, 2);
    assert_int_equal(r.stanzas, 4);
    assert_int_equal(feed_str(p, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/><x/>"),
                     MAGPIE_OK);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.stanzas, 4);
    assert_int_equal(r.errors, 0);
    mp_xmlstream_free(p);

    /* an element before <open/>, and an RFC 6120 header, are errors */
    p = new_parser(&r);
    mp_xmlstream_set_framed(p);
    assert_int_equal(feed_str(p, "<presence/>"), MAGPIE_ERR);
    assert_string_equal(r.cond, "bad-format");
    mp_xmlstream_free(p);
    p = new_parser(&r);
    mp_xmlstream_set_framed(p);
    assert_int_equal(feed_str(p, HDR), MAGPIE_ERR);
    assert_int_equal(r.opens, 0);
    mp_xmlstream_free(p);
#undef OPEN
}

static void text_at_stream_level_is_refused(void **state)
{
    (void)state;
    struct rec r;
    run_whole(&r, HDR "hello<presence/>");
    assert_int_equal(r.errors, 1);
    assert_string_equal(r.cond, "bad-format");
    assert_int_equal(r.stanzas, 0);
}

/* Feeds s after a header in one go and in single bytes; both must end in
 * exactly one error with condition cond, and no stanza. */
static char rlast_log[4096]; /* log of expect_error's last one-feed run */

static void expect_error(const char *body, const char *cond)
{
    struct rec r;
    char *s = malloc(strlen(HDR) + strlen(body) + 1);
    strcpy(s, HDR);
    strcat(s, body);
    run_whole(&r, s);
    snprintf(rlast_log, sizeof rlast_log, "%.4000s", r.log);
    if (r.errors != 1 || strcmp(r.cond, cond) != 0)
        fail_msg("%.200s: got %s", body, r.log);
    assert_int_equal(r.stanzas, 0);

    mp_xmlstream *p = new_parser(&r);
    int rc = MAGPIE_OK;
    size_t n = strlen(s), i;
    for (i = 0; i < n && rc == MAGPIE_OK; i++)
        rc = mp_xmlstream_feed(p, s + i, 1, NULL);
    assert_int_equal(rc, MAGPIE_ERR);
    assert_int_equal(r.errors, 1);
    assert_string_equal(r.cond, cond);
    /* after an error: nothing more is parsed and feeds fail */
    assert_int_equal(feed_str(p, "<presence/>"), MAGPIE_ERR);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.stanzas, 0);
    assert_int_equal(mp_xmlstream_release(p), MAGPIE_OK);
    mp_xmlstream_free(p);
    free(s);
}

static void doctype_is_restricted_xml(void **state)
{
    (void)state;
    struct rec r;
    run_whole(&r, "<?xml version='1.0'?><!DOCTYPE stream><stream:stream "
                  "xmlns:stream='http://etherx.jabber.org/streams'>");
    assert_int_equal(r.errors, 1);
    assert_string_equal(r.cond, "restricted-xml");
    assert_int_equal(r.opens, 0);
}

static void billion_laughs_never_expands(void **state)
{
    (void)state;
    struct rec r;
    run_whole(&r, "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
                  "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
                  "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
                  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"
                  "<message><body>&lol3;</body></message>");
    assert_int_equal(r.errors, 1);
    assert_string_equal(r.cond, "restricted-xml");
    assert_int_equal(r.opens + r.stanzas, 0);
    assert_null(strstr(r.log, "lollol"));
}

static void external_entity_is_never_read(void **state)
{
    (void)state;
    struct rec r;
    run_whole(&r, "<!DOCTYPE s [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
                  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"
                  "<message><body>&x;</body></message>");
    assert_int_equal(r.errors, 1);
    assert_string_equal(r.cond, "restricted-xml");
    assert_null(strstr(r.log, "root:"));
    /* and an ENTITY declaration without DOCTYPE is simply malformed */
    expect_error("<!ENTITY x SYSTEM \"file:///etc/passwd\"><message>&x;</message>",
                 "not-well-formed");
}

static void undefined_entity_reference_is_restricted_xml(void **state)
{
    (void)state;
    expect_error("<message><body>&nbsp;</body></message>", "restricted-xml");
    expect_error("<message to='&x;'/>", "restricted-xml");
}

static void processing_instruction_is_restricted_xml(void **state)
{
    (void)state;
    expect_error("<?php echo 1; ?><message/>", "restricted-xml");
    expect_error("<message><?pi x?></message>", "restricted-xml");
    /* a second XML declaration too */
    expect_error("<?xml version='1.0'?><message/>", "restricted-xml");
}

static void comment_is_restricted_xml(void **state)
{
    (void)state;
    expect_error("<!-- hi --><message/>", "restricted-xml");
    expect_error("<message><!-- hi --></message>", "restricted-xml");
}

static void malformed_xml_is_not_well_formed(void **state)
{
    (void)state;
    expect_error("<message><body></message>", "not-well-formed");
    expect_error("<message a='1' a='2'/>", "not-well-formed");
    expect_error("<message>\xc3\x28</message>", "not-well-formed");
    expect_error("<message>&#0;</message>", "not-well-formed");
    expect_error("<message a=1/>", "not-well-formed");
    expect_error("<a:message/>", "bad-namespace-prefix");
}

static void predefined_entities_and_cdata_are_allowed(void **state)
{
    (void)state;
    struct rec r;
    run_whole(&r, HDR "<message><body>&lt;&gt;&amp;&apos;&quot;&#65;<![CDATA[<x>]]></body>"
                      "</message>");
    assert_int_equal(r.errors, 0);
    assert_non_null(strstr(r.log, "<body>&lt;&gt;&amp;'\"A&lt;x&gt;</body>"));
}

/* Builds "<message><body>xxx...</body></message>" of exactly total bytes. */
static char *stanza_of_size(size_t total)
{
    const char *pre = "<message><body>", *post = "</body></message>";
    size_t fix = strlen(pre) + strlen(post);
    char *s = malloc(total + 1);
    strcpy(s, pre);
    memset(s + strlen(pre), 'x', total - fix);
    strcpy(s + total - strlen(post), post);
    return s;
}

static void stanza_at_size_limit_is_accepted(void **state)
{
    (void)state;
    struct mp_xml_limits saved = LIM;
    LIM.max_text = 1 << 20;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    char *s = stanza_of_size(LIM.max_stanza);
    assert_int_equal(feed_str(p, HDR), MAGPIE_OK);
    assert_int_equal(feed_str(p, s), MAGPIE_OK);
    assert_int_equal(feed_str(p, s), MAGPIE_OK);
    assert_int_equal(r.stanzas, 2);
    assert_int_equal(r.errors, 0);
    free(s);
    mp_xmlstream_free(p);
    LIM = saved;
}

static void oversized_stanza_in_one_feed_is_policy_violation(void **state)
{
    (void)state;
    struct mp_xml_limits saved = LIM;
    LIM.max_text = 1 << 22;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    char *s = stanza_of_size(LIM.max_stanza + 1);
    assert_int_equal(feed_str(p, HDR "<presence/>"), MAGPIE_OK);
    assert_int_equal(feed_str(p, s), MAGPIE_ERR);
    assert_string_equal(r.cond, "policy-violation");
    assert_int_equal(r.stanzas, 1);
    free(s);
    mp_xmlstream_free(p);

    /* a huge one (4 MiB) behind a valid stanza in the same feed */
    p = new_parser(&r);
    size_t big = 4u << 20;
    char *b = malloc(big + 64);
    strcpy(b, HDR "<presence/><message><body>");
    size_t o = strlen(b);
    memset(b + o, 'y', big - o);
    b[big] = '\0';
    assert_int_equal(mp_xmlstream_feed(p, b, big, NULL), MAGPIE_ERR);
    assert_string_equal(r.cond, "policy-violation");
    assert_int_equal(r.stanzas, 1);
    mp_xmlstream_free(p);
    free(b);
    LIM = saved;
}

/* A stanza trickling in (a huge start tag or text) is cut off once it
 * passes max_stanza bytes, and the parser never holds much more. */
static void oversized_stanza_in_small_feeds_is_cut_off_early(void **state)
{
    (void)state;
    const char *starts[] = {"<message to='", "<message><body>", "<message"};
    struct mp_xml_limits saved = LIM;
    LIM.max_attr_len = 1 << 20;
    LIM.max_text = 1 << 20;
    for (size_t k = 0; k < 3; k++) {
        struct rec r;
        mp_xmlstream *p = new_parser(&r);
        assert_int_equal(feed_str(p, HDR), MAGPIE_OK);
        assert_int_equal(feed_str(p, starts[k]), MAGPIE_OK);
        size_t fed = strlen(starts[k]);
        size_t peak = 0;
        int rc = MAGPIE_OK;
        const char *chunk = k == 2 ? "          " : "xxxxxxxxxx";
        while (rc == MAGPIE_OK && fed < 10 * LIM.max_stanza) {
            rc = feed_str(p, chunk);
            fed += 10;
            size_t m = mp_xmlstream_memory(p);
            if (m > peak)
                peak = m;
        }
        assert_int_equal(rc, MAGPIE_ERR);
        assert_string_equal(r.cond, "policy-violation");
        assert_true(fed <= LIM.max_stanza + 10);
        /* expat's own buffers: a few KiB plus the partial token */
        assert_true(peak < 64 * 1024);
        mp_xmlstream_free(p);
    }
    LIM = saved;
}

static void oversized_stream_header_is_policy_violation(void **state)
{
    (void)state;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    assert_int_equal(feed_str(p, "<stream:stream xmlns:stream='http://etherx.jabber.org/"
                                 "streams' to='"),
                     MAGPIE_OK);
    int rc = MAGPIE_OK;
    for (int i = 0; i < 10000 && rc == MAGPIE_OK; i++)
        rc = feed_str(p, "aaaa");
    assert_int_equal(rc, MAGPIE_ERR);
    assert_string_equal(r.cond, "policy-violation");
    mp_xmlstream_free(p);
}

static void depth_limit(void **state)
{
    (void)state;
    /* max_depth 8: stanza + 7 levels is fine, 8 more is not */
    struct rec r;
    run_whole(&r, HDR "<a><b><c><d><e><f><g><h/></g></f></e></d></c></b></a>");
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.stanzas, 1);
    expect_error("<a><b><c><d><e><f><g><h><i/></h></g></f></e></d></c></b></a>",
                 "policy-violation");
}

static void attribute_count_limit(void **state)
{
    (void)state;
    struct rec r;
    run_whole(&r, HDR "<a a1='' a2='' a3='' a4='' a5='' a6='' a7='' a8=''/>");
    assert_int_equal(r.errors, 0);
    expect_error("<a a1='' a2='' a3='' a4='' a5='' a6='' a7='' a8='' a9=''/>", "policy-violation");
    expect_error("<a><b a1='' a2='' a3='' a4='' a5='' a6='' a7='' a8='' a9=''/></a>",
                 "policy-violation");
}

static void attribute_length_limit(void **state)
{
    (void)state;
    char buf[1024];
    struct rec r;
    snprintf(buf, sizeof buf, "%s<a v='%0256d'/>", HDR, 0);
    run_whole(&r, buf);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.stanzas, 1);
    snprintf(buf, sizeof buf, "<a v='%0257d'/>", 0);
    expect_error(buf, "policy-violation");
}

static void text_length_limit(void **state)
{
    (void)state;
    char buf[4096];
    struct rec r;
    snprintf(buf, sizeof buf, "%s<a><b>%01024d</b><c>%01024d</c></a>", HDR, 0, 0);
    run_whole(&r, buf);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.stanzas, 1);
    snprintf(buf, sizeof buf, "<a><b>%01025d</b></a>", 0);
    expect_error(buf, "policy-violation");
    /* entity references are part of the same run */
    snprintf(buf, sizeof buf, "<a>%01024d&amp;</a>", 0);
    expect_error(buf, "policy-violation");
}

static void reset_in_callback_restarts_stream(void **state)
{
    (void)state;
    /* SASL success: the stanza callback resets, the rest is a new stream */
    const char *in = HDR "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>" HDR "<iq/>";
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    r.reset_after_stanza = 1;
    size_t used = 0, n = strlen(in);
    assert_int_equal(mp_xmlstream_feed(p, in, n, &used), MAGPIE_AGAIN);
    assert_int_equal(used, strlen(HDR "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"));
    assert_int_equal(r.stanzas, 1);
    size_t used2 = 0;
    assert_int_equal(mp_xmlstream_feed(p, in + used, n - used, &used2), MAGPIE_OK);
    assert_int_equal(used + used2, n);
    assert_int_equal(r.opens, 2);
    assert_int_equal(r.stanzas, 2);
    assert_int_equal(r.errors, 0);
    mp_xmlstream_free(p);
}

static void reset_outside_callback_expects_new_header(void **state)
{
    (void)state;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    assert_int_equal(feed_str(p, HDR "<iq><query"), MAGPIE_OK);
    mp_xmlstream_reset(p);
    assert_int_equal(feed_str(p, HDR "<presence/>"), MAGPIE_OK);
    assert_int_equal(r.opens, 2);
    assert_int_equal(r.stanzas, 1);
    assert_int_equal(r.errors, 0);
    assert_non_null(strstr(r.log, "stanza <presence"));
    mp_xmlstream_free(p);
}

static void stop_in_callback_returns_rest_unconsumed(void **state)
{
    (void)state;
    struct rec whole, r;
    run_whole(&whole, CONV);
    mp_xmlstream *p = new_parser(&r);
    r.stop_on_open = 1;
    r.stop_after_stanza = 2;
    size_t n = strlen(CONV), off = 0, used = 0;
    assert_int_equal(mp_xmlstream_feed(p, CONV, n, &used), MAGPIE_AGAIN);
    assert_int_equal(used, strlen(HDR));
    assert_int_equal(r.opens, 1);
    assert_int_equal(r.stanzas, 0);
    off += used;
    assert_int_equal(mp_xmlstream_feed(p, CONV + off, n - off, &used), MAGPIE_AGAIN);
    assert_int_equal(r.stanzas, 2);
    assert_memory_equal(CONV + off + used - 5, "</iq>", 5);
    off += used;
    assert_int_equal(mp_xmlstream_feed(p, CONV + off, n - off, &used), MAGPIE_OK);
    assert_int_equal(off + used, n);
    assert_string_equal(r.log, whole.log);
    mp_xmlstream_free(p);
}

static void release_and_rebuild_gives_identical_stanzas(void **state)
{
    (void)state;
    struct rec whole, r;
    run_whole(&whole, CONV);
    mp_xmlstream *p = new_parser(&r);
    const char *s = CONV;
    size_t n = strlen(s);
    int released = 0;
    /* feed byte by byte and release whenever allowed */
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(mp_xmlstream_feed(p, s + i, 1, NULL), MAGPIE_OK);
        size_t before = mp_xmlstream_memory(p);
        if (mp_xmlstream_release(p) == MAGPIE_OK && r.opens && !r.closes) {
            released++;
            assert_true(mp_xmlstream_memory(p) + 4096 < before);
        }
    }
    assert_true(released >= 4);
    mp_xmlstream_free(p);
    assert_string_equal(r.log, whole.log);
}

/* The rebuilt header must declare the same namespaces: whitespace in a
 * namespace URI is written as character references, not raw (an attribute
 * value normalises raw tabs and newlines to spaces). Found by fuzzing. */
static void release_keeps_whitespace_in_namespace_uris(void **state)
{
    (void)state;
    static const char *conv =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        "xmlns:x='urn:a&#10;b&#9;c&#13;d' to='localhost' version='1.0'>"
        "<message><x:y/></message><message><x:y/></message>";
    struct rec whole, r;
    run_whole(&whole, conv);
    mp_xmlstream *p = new_parser(&r);
    const char *first_end = strstr(conv, "</message>") + strlen("</message>");
    size_t n1 = (size_t)(first_end - conv);
    for (size_t i = 0; i < n1; i++)
        assert_int_equal(mp_xmlstream_feed(p, conv + i, 1, NULL), MAGPIE_OK);
    assert_int_equal(mp_xmlstream_release(p), MAGPIE_OK);
    assert_int_equal(feed_str(p, first_end), MAGPIE_OK);
    assert_string_equal(r.log, whole.log);
    assert_non_null(strstr(r.log, "urn:a&#10;b&#9;c&#13;d"));
    mp_xmlstream_free(p);
}

static void release_refused_inside_stanza(void **state)
{
    (void)state;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    assert_int_equal(feed_str(p, HDR "<message><body>"), MAGPIE_OK);
    assert_int_equal(mp_xmlstream_release(p), MAGPIE_AGAIN);
    assert_int_equal(feed_str(p, "x</body></message><pres"), MAGPIE_OK);
    /* a partial start tag is buffered in expat: not a boundary */
    assert_int_equal(mp_xmlstream_release(p), MAGPIE_AGAIN);
    assert_int_equal(feed_str(p, "ence/>"), MAGPIE_OK);
    assert_int_equal(mp_xmlstream_release(p), MAGPIE_OK);
    assert_int_equal(r.stanzas, 2);
    mp_xmlstream_free(p);
}

static void rebuild_keeps_custom_prefixes_and_default_namespace(void **state)
{
    (void)state;
    const char *hdr = "<s:stream xmlns:s='http://etherx.jabber.org/streams' "
                      "xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
                      "xmlns:q=\"urn:a'b\" to='x'>";
    const char *rest = "<db:result to='a' from='b'>key</db:result><message><q:x/></message>"
                       "<s:features/></s:stream>";
    struct rec whole, r;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s%s", hdr, rest);
    run_whole(&whole, buf);
    assert_int_equal(whole.errors, 0);
    assert_int_equal(whole.closes, 1);
    assert_non_null(strstr(whole.log, "open[jabber:server]"));
    assert_non_null(strstr(whole.log, "stanza <result xmlns='jabber:server:dialback'"));
    assert_non_null(strstr(whole.log, "<x xmlns='urn:a&apos;b'/>"));

    mp_xmlstream *p = new_parser(&r);
    assert_int_equal(feed_str(p, hdr), MAGPIE_OK);
    assert_int_equal(mp_xmlstream_release(p), MAGPIE_OK);
    size_t idle = mp_xmlstream_memory(p);
    assert_true(idle < 1024);
    for (const char *c = rest; *c; c++) {
        assert_int_equal(mp_xmlstream_feed(p, c, 1, NULL), MAGPIE_OK);
        mp_xmlstream_release(p);
    }
    assert_string_equal(r.log, whole.log);
    assert_int_equal(r.opens, 1);
    mp_xmlstream_free(p);
}

static void data_after_stream_close_is_ignored(void **state)
{
    (void)state;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    size_t used = 0;
    const char *s = HDR "</stream:stream><junk";
    assert_int_equal(mp_xmlstream_feed(p, s, strlen(s), &used), MAGPIE_OK);
    assert_int_equal(used, strlen(s));
    assert_int_equal(feed_str(p, "<more/>"), MAGPIE_OK);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.stanzas, 0);
    mp_xmlstream_free(p);
}

static void parser_memory_is_accounted(void **state)
{
    (void)state;
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    size_t m0 = mp_xmlstream_memory(p);
    assert_int_equal(feed_str(p, HDR), MAGPIE_OK);
    size_t m1 = mp_xmlstream_memory(p);
    assert_true(m1 > m0 + 4096); /* expat's buffers and hash tables */
    assert_int_equal(mp_xmlstream_release(p), MAGPIE_OK);
    assert_true(mp_xmlstream_memory(p) < m0 + 512);
    mp_xmlstream_free(p);
}

/* ---- hostile input: memory built per byte received ---- */

/* Feeds s in pieces of step bytes (the last one shorter) and, if ratio,
 * checks after each piece that the parser holds at most 4 bytes per byte
 * fed above what it held before (plus slack for expat's buffers). Stops at
 * the first error callback. Returns the highest memory seen above base. */
static size_t feed_bounded(struct rec *r, const char *s, size_t n, size_t step, int ratio)
{
    mp_xmlstream *p = r->p;
    size_t base = mp_xmlstream_memory(p), peak = 0;
    for (size_t off = 0; off < n && !r->errors; off += step) {
        size_t k = n - off < step ? n - off : step;
        mp_xmlstream_feed(p, s + off, k, NULL);
        size_t m = mp_xmlstream_memory(p);
        size_t over = m > base ? m - base : 0;
        if (over > peak)
            peak = over;
        if (ratio && over > 4 * (off + k) + 16384)
            fail_msg("after %zu bytes the parser holds %zu bytes more", off + k, over);
    }
    return peak;
}

static void quiet_stanza(void *ud, mp_stanza *st)
{
    ((struct rec *)ud)->stanzas++;
    mp_stanza_unref(st);
}

/* A body of 64 KiB of 'A' and 16,384 newlines, never finished: expat
 * reports every newline as a callback of its own. The text must not be
 * copied again per piece (that took 1.19 GB). */
static void text_in_pieces_costs_linear_memory(void **state)
{
    (void)state;
    struct mp_xml_limits saved = LIM;
    LIM.max_stanza = 256 * 1024;
    LIM.max_text = 256 * 1024;
    LIM.max_memory = 1024 * 1024;
    size_t na = 64 * 1024, nl = 16384;
    const char *pre = "<message><body>";
    size_t n = strlen(pre) + na + nl;
    char *s = malloc(n + 32);
    strcpy(s, pre);
    memset(s + strlen(pre), 'A', na);
    memset(s + strlen(pre) + na, '\n', nl);
    strcpy(s + n, "</body></message>");
    size_t steps[] = {1, 7, 1000, 65536};
    struct mp_xmlstream_cb quiet = {NULL, quiet_stanza, NULL, cb_error};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        struct rec r;
        memset(&r, 0, sizeof r);
        mp_xmlstream *p = r.p = mp_xmlstream_new(&LIM, &quiet, &r);
        assert_int_equal(feed_str(p, HDR), MAGPIE_OK);
        size_t peak = feed_bounded(&r, s, n, steps[i], 1);
        assert_int_equal(r.errors, 0);
        print_message("step %zu: peak %zu bytes above the header for %zu bytes\n", steps[i], peak,
                      n);
        assert_int_equal(feed_str(p, "</body></message>"), MAGPIE_OK);
        assert_int_equal(r.stanzas, 1);
        mp_xmlstream_free(p);
    }
    /* the delivered stanza: one text node, arena about the text's size */
    struct mp_xmlstream_cb cb = {NULL, cap_stanza, NULL, cb_error};
    struct rec r;
    memset(&r, 0, sizeof r);
    mp_xmlstream *p = mp_xmlstream_new(&LIM, &cb, &r);
    captured = NULL;
    assert_int_equal(feed_str(p, HDR), MAGPIE_OK);
    for (size_t off = 0; off < n + strlen("</body></message>"); off += 4096) {
        size_t k = n + 17 - off < 4096 ? n + 17 - off : 4096;
        assert_int_equal(mp_xmlstream_feed(p, s + off, k, NULL), MAGPIE_OK);
    }
    assert_non_null(captured);
    mp_xml *body = mp_xml_find(mp_stanza_root(captured), "body", NULL);
    assert_non_null(body);
    assert_non_null(body->children);
    assert_ptr_equal(body->children, body->last_child);
    assert_int_equal(body->children->text_len, na + nl);
    assert_true(mp_stanza_size(captured) < na + nl + 4096);
    mp_stanza_unref(captured);
    mp_xmlstream_free(p);
    free(s);
    LIM = saved;
}

/* Entities and newlines inside one text run give one text node. */
static void text_run_is_one_node(void **state)
{
    (void)state;
    struct mp_xmlstream_cb cb = {NULL, cap_stanza, NULL, NULL};
    mp_xmlstream *p = mp_xmlstream_new(&LIM, &cb, NULL);
    captured = NULL;
    assert_int_equal(feed_str(p, HDR "<message><body>a&amp;b\nc\r\n&#65;<![CDATA[<]]>"
                                     "</body></message>"),
                     MAGPIE_OK);
    assert_non_null(captured);
    mp_xml *b = mp_xml_find(mp_stanza_root(captured), "body", NULL);
    assert_ptr_equal(b->children, b->last_child);
    assert_string_equal(b->children->text, "a&b\nc\nA<");
    assert_string_equal(mp_xml_text(captured, b), "a&b\nc\nA<");
    mp_stanza_unref(captured);
    mp_xmlstream_free(p);
}

/* Feeds HDR + body with limits lim in one feed and byte by byte (memory
 * checked after every byte); each must end in exactly one error cond, and
 * the parser's memory above the header never passes lim.max_memory plus
 * expat's own buffers. */
static void expect_bounded_error(const struct mp_xml_limits *lim, const char *body,
                                 const char *cond, const char *text_part)
{
    struct mp_xml_limits saved = LIM;
    LIM = *lim;
    expect_error(body, cond);
    if (text_part && !strstr(rlast_log, text_part))
        fail_msg("%s: error text lacks '%s': %s", cond, text_part, rlast_log);
    struct rec r;
    mp_xmlstream *p = new_parser(&r);
    assert_int_equal(feed_str(p, HDR), MAGPIE_OK);
    size_t peak = feed_bounded(&r, body, strlen(body), 1, 0);
    assert_int_equal(r.errors, 1);
    assert_string_equal(r.cond, cond);
    size_t cap = (lim->max_memory ? lim->max_memory : 4 * lim->max_stanza) + 32768;
    if (peak > cap)
        fail_msg("peak %zu above the header, cap %zu", peak, cap);
    mp_xmlstream_free(p);
    LIM = saved;
}

/* Repeats unit n times between pre and post; caller frees. */
static char *repeat(const char *pre, const char *unit, size_t n, const char *post)
{
    size_t lp = strlen(pre), lu = strlen(unit), lq = strlen(post);
    char *s = malloc(lp + lu * n + lq + 1), *o = s;
    memcpy(o, pre, lp);
    o += lp;
    for (size_t i = 0; i < n; i++, o += lu)
        memcpy(o, unit, lu);
    memcpy(o, post, lq + 1);
    return s;
}

/* The element count and the built size are capped, not only bytes read:
 * 260 KB of <a/> inside <auth> built a ~5.8 MB arena. */
static void built_size_is_capped(void **state)
{
    (void)state;
    struct mp_xml_limits lim = {.max_stanza = 64 * 1024,
                                .max_depth = 8,
                                .max_attrs = 16,
                                .max_attr_len = 256,
                                .max_text = 64 * 1024,
                                .max_elements = 100,
                                .max_memory = 32 * 1024};
    struct rec r;
    struct mp_xml_limits saved = LIM;
    LIM = lim;
    /* at the limits: root + 99 children, accepted */
    char *s = repeat(HDR "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>", "<a/>", 99, "</auth>");
    run_whole(&r, s);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.stanzas, 1);
    free(s);
    LIM = saved;

    /* wide: one element too many */
    s = repeat("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>", "<a/>", 100, "</auth>");
    expect_bounded_error(&lim, s, "policy-violation", "elements");
    free(s);
    /* deep and wide at once */
    s = repeat("<a>", "<b><c><d/></c></b>", 40, "</a>");
    expect_bounded_error(&lim, s, "policy-violation", "elements");
    free(s);
    /* many attributes on few elements: memory, not count, is the limit */
    s = repeat("<a>",
               "<b a1='x' a2='x' a3='x' a4='x' a5='x' a6='x' a7='x' a8='x' a9='x' a10='x' "
               "a11='x' a12='x' a13='x' a14='x' a15='x' a16='x'/>",
               90, "</a>");
    expect_bounded_error(&lim, s, "policy-violation", "memory");
    free(s);
    /* huge text: within max_text but over the memory cap */
    struct mp_xml_limits big = lim;
    big.max_stanza = 128 * 1024;
    big.max_text = 60 * 1024;
    s = repeat("<message><body>", "A\n&amp;", 12000, "</body></message>");
    expect_bounded_error(&big, s, "policy-violation", "memory");
    free(s);
    /* namespaced attributes with a long namespace name declared once */
    char ns[1024 + 64];
    memset(ns, 'u', 1024);
    ns[1024] = '\0';
    char head[1200];
    snprintf(head, sizeof head, "<message xmlns:x='urn:%s'>", ns);
    s = repeat(head, "<a x:b=''/>", 90, "</message>");
    expect_bounded_error(&lim, s, "policy-violation", "memory");
    free(s);
    /* defaults (0) still cap: elements default is 8192 */
    struct mp_xml_limits dflt = {.max_stanza = 256 * 1024};
    s = repeat(HDR "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>", "<a/>", 60000, "</auth>");
    LIM = dflt;
    run_whole(&r, s);
    assert_int_equal(r.errors, 1);
    assert_string_equal(r.cond, "policy-violation");
    assert_non_null(strstr(r.log, "elements"));
    LIM = saved;
    free(s);
}

static int switch_limits_at;
static struct mp_xml_limits switch_to;

static void cb_stanza_switch(void *ud, mp_stanza *st)
{
    struct rec *r = ud;
    cb_stanza(ud, st);
    if (r->stanzas == switch_limits_at)
        mp_xmlstream_set_limits(r->p, &switch_to);
}

/* Limits change between stanzas (pre-auth -> post-auth), from a callback
 * or between feeds, and never for the stanza being read. */
static void limits_switch_at_stanza_boundary(void **state)
{
    (void)state;
    struct mp_xml_limits small = LIM, large = LIM;
    small.max_stanza = 1024;
    small.max_elements = 4;
    large.max_stanza = 8192;
    large.max_elements = 64;
    large.max_text = 8192;
    char *wide = repeat("<iq>", "<a/>", 10, "</iq>"); /* 11 elements */
    char *longer = stanza_of_size(2000);

    /* from inside the stanza callback, as after SASL success */
    struct mp_xmlstream_cb cb = {cb_open, cb_stanza_switch, cb_close, cb_error};
    struct rec r;
    memset(&r, 0, sizeof r);
    r.p = mp_xmlstream_new(&small, &cb, &r);
    switch_limits_at = 1;
    switch_to = large;
    assert_int_equal(feed_str(r.p, HDR "<auth/>"), MAGPIE_OK);
    assert_int_equal(feed_str(r.p, wide), MAGPIE_OK);
    assert_int_equal(feed_str(r.p, longer), MAGPIE_OK);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.stanzas, 3);
    mp_xmlstream_free(r.p);

    /* the small limits apply before the switch */
    memset(&r, 0, sizeof r);
    r.p = mp_xmlstream_new(&small, &cb, &r);
    switch_limits_at = 0;
    assert_int_equal(feed_str(r.p, HDR), MAGPIE_OK);
    assert_int_equal(feed_str(r.p, wide), MAGPIE_ERR);
    assert_string_equal(r.cond, "policy-violation");
    mp_xmlstream_free(r.p);
    memset(&r, 0, sizeof r);
    r.p = mp_xmlstream_new(&small, &cb, &r);
    assert_int_equal(feed_str(r.p, HDR), MAGPIE_OK);
    assert_int_equal(feed_str(r.p, longer), MAGPIE_ERR);
    mp_xmlstream_free(r.p);

    /* set in the middle of a stanza: that stanza keeps the old limits,
     * the next one gets the new ones */
    memset(&r, 0, sizeof r);
    r.p = mp_xmlstream_new(&large, &cb, &r);
    assert_int_equal(feed_str(r.p, HDR "<iq><a/><a/><a/><a/>"), MAGPIE_OK);
    mp_xmlstream_set_limits(r.p, &small);
    assert_int_equal(feed_str(r.p, "<a/><a/></iq>"), MAGPIE_OK);
    assert_int_equal(r.stanzas, 1);
    assert_int_equal(feed_str(r.p, "<presence/>"), MAGPIE_OK);
    assert_int_equal(feed_str(r.p, wide), MAGPIE_ERR);
    assert_int_equal(r.stanzas, 2);
    mp_xmlstream_free(r.p);

    /* survives release/rebuild and a stream reset */
    memset(&r, 0, sizeof r);
    r.p = mp_xmlstream_new(&small, &cb, &r);
    assert_int_equal(feed_str(r.p, HDR), MAGPIE_OK);
    mp_xmlstream_set_limits(r.p, &large);
    assert_int_equal(mp_xmlstream_release(r.p), MAGPIE_OK);
    mp_xmlstream_reset(r.p);
    assert_int_equal(feed_str(r.p, HDR), MAGPIE_OK);
    assert_int_equal(feed_str(r.p, wide), MAGPIE_OK);
    assert_int_equal(feed_str(r.p, longer), MAGPIE_OK);
    assert_int_equal(r.errors, 0);
    mp_xmlstream_free(r.p);
    free(wide);
    free(longer);
}

/* Only unqualified from/to/id/type on a stanza root address it: qualified
 * ones (any namespace, jabber:client included) are dropped there. */
static void qualified_addressing_attributes_are_dropped_on_root(void **state)
{
    (void)state;
    struct rec r;
    run_whole(&r, HDR "<message xmlns:x='urn:x' xmlns:c='jabber:client' x:to='evil@x' "
                      "to='good@x' c:from='evil@y' x:type='groupchat' x:id='i' c:to='e' "
                      "x:other='kept'><body x:to='kept2'>b</body></message>");
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.stanzas, 1);
    if (!strstr(r.log, "stanza <message xmlns='jabber:client' to='good@x' "
                       "xmlns:ns0='urn:x' ns0:other='kept'><body xmlns:ns0='urn:x' "
                       "ns0:to='kept2'>b</body></message>"))
        fail_msg("%s", r.log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_header_stanzas_and_close),
        cmocka_unit_test(stanza_tree_carries_namespaces_and_lang),
        cmocka_unit_test(byte_at_a_time_equals_one_feed),
        cmocka_unit_test(every_split_point_equals_one_feed),
        cmocka_unit_test(stanza_is_delivered_when_its_last_byte_arrives),
        cmocka_unit_test(whitespace_keepalives_are_ignored),
        cmocka_unit_test(websocket_framing),
        cmocka_unit_test(text_at_stream_level_is_refused),
        cmocka_unit_test(doctype_is_restricted_xml),
        cmocka_unit_test(billion_laughs_never_expands),
        cmocka_unit_test(external_entity_is_never_read),
        cmocka_unit_test(undefined_entity_reference_is_restricted_xml),
        cmocka_unit_test(processing_instruction_is_restricted_xml),
        cmocka_unit_test(comment_is_restricted_xml),
        cmocka_unit_test(malformed_xml_is_not_well_formed),
        cmocka_unit_test(predefined_entities_and_cdata_are_allowed),
        cmocka_unit_test(stanza_at_size_limit_is_accepted),
        cmocka_unit_test(oversized_stanza_in_one_feed_is_policy_violation),
        cmocka_unit_test(oversized_stanza_in_small_feeds_is_cut_off_early),
        cmocka_unit_test(oversized_stream_header_is_policy_violation),
        cmocka_unit_test(depth_limit),
        cmocka_unit_test(attribute_count_limit),
        cmocka_unit_test(attribute_length_limit),
        cmocka_unit_test(text_length_limit),
        cmocka_unit_test(reset_in_callback_restarts_stream),
        cmocka_unit_test(reset_outside_callback_expects_new_header),
        cmocka_unit_test(stop_in_callback_returns_rest_unconsumed),
        cmocka_unit_test(release_and_rebuild_gives_identical_stanzas),
        cmocka_unit_test(release_refused_inside_stanza),
        cmocka_unit_test(release_keeps_whitespace_in_namespace_uris),
        cmocka_unit_test(rebuild_keeps_custom_prefixes_and_default_namespace),
        cmocka_unit_test(data_after_stream_close_is_ignored),
        cmocka_unit_test(parser_memory_is_accounted),
        cmocka_unit_test(text_in_pieces_costs_linear_memory),
        cmocka_unit_test(text_run_is_one_node),
        cmocka_unit_test(built_size_is_capped),
        cmocka_unit_test(limits_switch_at_stanza_boundary),
        cmocka_unit_test(qualified_addressing_attributes_are_dropped_on_root),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
