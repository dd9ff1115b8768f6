/* test_xml.c - stanza trees: building, serialisation (escaping,
 * namespaces), parsing round trips, refcount/copy, RFC 6120 helpers. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "conf/config.h"
#include "xml/xmlstream.h"

#include <pthread.h>

/* Serialises st's root into a string (caller frees). */
static char *ser(const mp_stanza *st, const char *stream_ns)
{
    return mp_xml_to_string(mp_stanza_root(st), stream_ns);
}

static void assert_ser(const mp_stanza *st, const char *stream_ns, const char *want)
{
    char *s = ser(st, stream_ns);
    assert_string_equal(s, want);
    free(s);
}

static mp_stanza *parse(const char *s)
{
    mp_stanza *st = mp_stanza_parse(s, strlen(s));
    assert_non_null(st);
    return st;
}

static void builds_message_and_serialises_in_client_stream(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("message", MP_NS_CLIENT);
    mp_xml *r = mp_stanza_root(st);
    mp_xml_set_attr(st, r, "to", "juliet@example.com");
    mp_xml_set_attr(st, r, "type", "chat");
    mp_xml *b = mp_xml_add_child(st, r, "body", NULL);
    mp_xml_add_text(st, b, "hi", 2);
    assert_string_equal(b->ns, MP_NS_CLIENT);
    assert_ser(st, MP_NS_CLIENT,
               "<message to='juliet@example.com' type='chat'><body>hi</body></message>");
    /* outside any stream the root declares its namespace */
    assert_ser(st, NULL,
               "<message xmlns='jabber:client' to='juliet@example.com' type='chat'>"
               "<body>hi</body></message>");
    mp_stanza_unref(st);
}

static void new_client_stanza_has_fresh_id_and_given_attributes(void **state)
{
    (void)state;
    mp_stanza *a =
        mp_stanza_new_client("message", "headline", "pubsub.example.com", "juliet@example.com");
    mp_stanza *b = mp_stanza_new_client("iq", NULL, NULL, NULL);
    mp_xml *ra = mp_stanza_root(a), *rb = mp_stanza_root(b);
    assert_string_equal(ra->name, "message");
    assert_string_equal(ra->ns, MP_NS_CLIENT);
    assert_string_equal(mp_xml_get_attr(ra, "type"), "headline");
    assert_string_equal(mp_xml_get_attr(ra, "from"), "pubsub.example.com");
    assert_string_equal(mp_xml_get_attr(ra, "to"), "juliet@example.com");
    const char *ida = mp_xml_get_attr(ra, "id"), *idb = mp_xml_get_attr(rb, "id");
    assert_non_null(ida);
    assert_non_null(idb);
    assert_true(strlen(ida) >= 16);
    assert_string_not_equal(ida, idb);
    /* NULL leaves the attribute out */
    assert_null(mp_xml_get_attr(rb, "type"));
    assert_null(mp_xml_get_attr(rb, "from"));
    assert_null(mp_xml_get_attr(rb, "to"));
    const struct mp_envelope *env = mp_stanza_envelope(a);
    assert_int_equal(env->kind, MP_KIND_MESSAGE);
    assert_int_equal(env->type, MP_TYPE_HEADLINE);
    assert_string_equal(env->to.domain, "example.com");
    mp_stanza_unref(a);
    mp_stanza_unref(b);
}

static void escapes_text_and_attribute_values(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("x", "urn:t");
    mp_xml *r = mp_stanza_root(st);
    mp_xml_set_attr(st, r, "a", "q'd\"l<g>&");
    mp_xml_add_text(st, r, "<b>&'\"", 6);
    assert_ser(st, "urn:t", "<x a='q&apos;d&quot;l&lt;g&gt;&amp;'>&lt;b&gt;&amp;'\"</x>");
    /* and the parser gets the original strings back */
    char *s = ser(st, NULL);
    mp_stanza *p = parse(s);
    assert_string_equal(mp_xml_get_attr(mp_stanza_root(p), "a"), "q'd\"l<g>&");
    assert_string_equal(mp_xml_text(p, mp_stanza_root(p)), "<b>&'\"");
    free(s);
    mp_stanza_unref(p);
    mp_stanza_unref(st);
}

static void escape_function_handles_each_special_character(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    mp_xml_escape(b, "a<b>c&d'e\"f", 11, 0);
    evbuffer_add(b, "|", 1);
    mp_xml_escape(b, "a<b>c&d'e\"f", 11, 1);
    evbuffer_add(b, "", 1);
    assert_string_equal((char *)evbuffer_pullup(b, -1),
                        "a&lt;b&gt;c&amp;d'e\"f|a&lt;b&gt;c&amp;d&apos;e&quot;f");
    evbuffer_free(b);
}

static void self_closes_empty_elements(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("presence", MP_NS_CLIENT);
    assert_ser(st, MP_NS_CLIENT, "<presence/>");
    mp_xml_add_child(st, mp_stanza_root(st), "x", "vcard-temp:x:update");
    assert_ser(st, MP_NS_CLIENT, "<presence><x xmlns='vcard-temp:x:update'/></presence>");
    mp_stanza_unref(st);
}

static void declares_namespace_only_where_it_changes(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("iq", MP_NS_CLIENT);
    mp_xml *r = mp_stanza_root(st);
    mp_xml_set_attr(st, r, "type", "result");
    mp_xml *q = mp_xml_add_child(st, r, "query", "jabber:iq:roster");
    mp_xml *i = mp_xml_add_child(st, q, "item", NULL);
    mp_xml_add_child(st, i, "group", "jabber:iq:roster");
    mp_xml_add_child(st, r, "extra", MP_NS_CLIENT);
    assert_ser(st, MP_NS_CLIENT,
               "<iq type='result'><query xmlns='jabber:iq:roster'><item><group/></item>"
               "</query><extra/></iq>");
    mp_stanza_unref(st);
}

static void client_and_server_namespaces_are_equivalent_at_root(void **state)
{
    (void)state;
    /* a stanza read from s2s (jabber:server) written into c2s */
    mp_stanza *st = parse("<message xmlns='jabber:server' to='a@b'><body>x</body>"
                          "<x xmlns='urn:y'><z/></x></message>");
    assert_string_equal(mp_stanza_root(st)->ns, MP_NS_SERVER);
    assert_ser(st, MP_NS_CLIENT,
               "<message to='a@b'><body>x</body><x xmlns='urn:y'><z/></x></message>");
    assert_ser(st, MP_NS_SERVER,
               "<message to='a@b'><body>x</body><x xmlns='urn:y'><z/></x></message>");
    /* into a component stream it must keep its namespace */
    assert_ser(st, "jabber:component:accept",
               "<message xmlns='jabber:server' to='a@b'><body>x</body>"
               "<x xmlns='urn:y'><z/></x></message>");
    mp_stanza_unref(st);
}

static void nested_content_namespace_is_declared(void **state)
{
    (void)state;
    /* a forwarded message inside a foreign element keeps jabber:client */
    const char *in = "<message xmlns='jabber:client'><forwarded xmlns='urn:xmpp:forward:0'>"
                     "<message xmlns='jabber:client'><body>b</body></message>"
                     "</forwarded></message>";
    mp_stanza *st = parse(in);
    assert_ser(st, MP_NS_CLIENT,
               "<message><forwarded xmlns='urn:xmpp:forward:0'>"
               "<message xmlns='jabber:client'><body>b</body></message>"
               "</forwarded></message>");
    mp_stanza_unref(st);
}

static void stream_namespace_elements_use_stream_prefix(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("features", MP_NS_STREAMS);
    mp_xml *m = mp_xml_add_child(st, mp_stanza_root(st), "mechanisms", MP_NS_SASL);
    mp_xml_add_text(st, mp_xml_add_child(st, m, "mechanism", NULL), "PLAIN", 5);
    assert_ser(st, MP_NS_CLIENT,
               "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
               "<mechanism>PLAIN</mechanism></mechanisms></stream:features>");
    mp_stanza_unref(st);
    st = mp_stanza_new("error", MP_NS_STREAMS);
    mp_xml_add_child(st, mp_stanza_root(st), "not-well-formed", MP_NS_STREAM_ERRORS);
    assert_ser(st, MP_NS_CLIENT,
               "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
               "</stream:error>");
    mp_stanza_unref(st);
}

static void xml_namespace_elements_use_xml_prefix(void **state)
{
    (void)state;
    /* the xml namespace may not be declared as a default namespace */
    mp_stanza *st = parse("<a xmlns='urn:a'><xml:b/></a>");
    assert_string_equal(mp_xml_first_element(mp_stanza_root(st))->ns, MP_NS_XML);
    assert_ser(st, NULL, "<a xmlns='urn:a'><xml:b/></a>");
    mp_stanza_unref(st);
}

static void namespaced_attributes_get_prefix_declarations(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("x", "urn:a");
    mp_xml *r = mp_stanza_root(st);
    mp_xml_set_attr(st, r, "plain", "1");
    mp_xml_set_attr(st, r, "urn:one|a", "2");
    mp_xml_set_attr(st, r, "urn:two|b", "3");
    mp_xml_set_attr(st, r, "urn:one|c", "4");
    mp_xml_set_attr(st, r, "xml:lang", "de");
    assert_ser(st, "urn:a",
               "<x plain='1' xmlns:ns0='urn:one' ns0:a='2' xmlns:ns1='urn:two' ns1:b='3'"
               " ns0:c='4' xml:lang='de'/>");
    char *s = ser(st, NULL);
    mp_stanza *p = parse(s);
    mp_xml *pr = mp_stanza_root(p);
    assert_string_equal(mp_xml_get_attr(pr, "urn:one|a"), "2");
    assert_string_equal(mp_xml_get_attr(pr, "urn:two|b"), "3");
    assert_string_equal(mp_xml_get_attr(pr, "urn:one|c"), "4");
    assert_string_equal(mp_xml_get_attr(pr, "xml:lang"), "de");
    assert_string_equal(mp_xml_get_attr(pr, "plain"), "1");
    free(s);
    mp_stanza_unref(p);
    mp_stanza_unref(st);
}

static void parse_serialise_round_trip_is_stable(void **state)
{
    (void)state;
    const char *in = "<iq xmlns='jabber:client' type='set' id='a1' xml:lang='en'>"
                     "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'>"
                     "<item id='x'><entry xmlns='http://www.w3.org/2005/Atom'>t &amp; &lt;u&gt;"
                     "<title>T</title>\n tail</entry></item></publish></pubsub></iq>";
    mp_stanza *a = parse(in);
    char *s1 = ser(a, NULL);
    mp_stanza *b = parse(s1);
    char *s2 = ser(b, NULL);
    assert_string_equal(s1, s2);
    assert_string_equal(s1, in);
    free(s1);
    free(s2);
    mp_stanza_unref(a);
    mp_stanza_unref(b);
}

static void parse_refuses_bad_or_restricted_input(void **state)
{
    (void)state;
    const char *bad[] = {
        "<a><b></a>",
        "<a>",
        "",
        "<a/><b/>",
        "<!DOCTYPE a><a/>",
        "<a><!-- c --></a>",
        "<a><?pi x?></a>",
        "<a>&undefined;</a>",
        "<a>\xff</a>",
        "<p:a/>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        mp_stanza *st = mp_stanza_parse(bad[i], strlen(bad[i]));
        if (st)
            fail_msg("accepted: %s", bad[i]);
    }
    /* predefined entities and character references are fine */
    mp_stanza *st = parse("<a>&lt;&#x41;&#66;</a>");
    assert_string_equal(mp_xml_text(st, mp_stanza_root(st)), "<AB");
    mp_stanza_unref(st);
}

static void refcount_keeps_stanza_until_last_unref(void **state)
{
    (void)state;
    mp_stanza *st = parse("<message xmlns='jabber:client'><body>x</body></message>");
    assert_ptr_equal(mp_stanza_ref(st), st);
    mp_stanza_ref(st);
    mp_stanza_unref(st);
    mp_stanza_unref(st);
    /* still alive: ASan would flag a use after free here */
    assert_string_equal(mp_stanza_root(st)->name, "message");
    mp_stanza_unref(st);
}

static void copy_is_deep_and_independent(void **state)
{
    (void)state;
    mp_stanza *a = parse("<message xmlns='jabber:client' to='x@y'><body>one</body>"
                         "<x xmlns='urn:q' k='v'><y>deep</y></x></message>");
    mp_stanza *b = mp_stanza_copy(a);
    char *sa = ser(a, NULL), *sb = ser(b, NULL);
    assert_string_equal(sa, sb);
    mp_xml *rb = mp_stanza_root(b);
    mp_xml_set_attr(b, rb, "to", "z@y");
    mp_xml_remove(b, mp_xml_find(rb, "body", NULL));
    char *sa2 = ser(a, NULL);
    assert_string_equal(sa, sa2);
    mp_stanza_unref(a);
    /* b survives a's death */
    assert_string_equal(mp_xml_get_attr(rb, "to"), "z@y");
    mp_xml *y = mp_xml_find(mp_xml_find(rb, "x", "urn:q"), "y", "urn:q");
    assert_non_null(y);
    assert_string_equal(mp_xml_text(b, y), "deep");
    free(sa);
    free(sb);
    free(sa2);
    mp_stanza_unref(b);
}

static void add_copy_takes_subtree_from_another_stanza(void **state)
{
    (void)state;
    mp_stanza *src = parse("<iq xmlns='jabber:client'><query xmlns='urn:q'><a b='c'>t</a>"
                           "</query></iq>");
    mp_stanza *dst = mp_stanza_new("iq", MP_NS_CLIENT);
    mp_xml_add_copy(dst, mp_stanza_root(dst), mp_xml_first_element(mp_stanza_root(src)));
    mp_stanza_unref(src);
    assert_ser(dst, MP_NS_CLIENT, "<iq><query xmlns='urn:q'><a b='c'>t</a></query></iq>");
    mp_stanza_unref(dst);
}

static void attributes_set_replace_and_remove(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("a", "urn:x");
    mp_xml *r = mp_stanza_root(st);
    mp_xml_set_attr(st, r, "one", "1");
    mp_xml_set_attr(st, r, "two", "2");
    mp_xml_set_attr(st, r, "one", "uno");
    assert_string_equal(mp_xml_get_attr(r, "one"), "uno");
    mp_xml_set_attr(st, r, "one", NULL);
    assert_null(mp_xml_get_attr(r, "one"));
    mp_xml_set_attr(st, r, "missing", NULL);
    assert_ser(st, "urn:x", "<a two='2'/>");
    mp_stanza_unref(st);
}

static void find_and_remove_children(void **state)
{
    (void)state;
    mp_stanza *st = parse("<r xmlns='urn:r'>t<a/><b xmlns='urn:o'/><a n='2'/><c/></r>");
    mp_xml *r = mp_stanza_root(st);
    mp_xml *a1 = mp_xml_find(r, "a", NULL);
    assert_non_null(a1);
    mp_xml *a2 = mp_xml_find_next(a1, "a", "urn:r");
    assert_string_equal(mp_xml_get_attr(a2, "n"), "2");
    assert_null(mp_xml_find_next(a2, "a", NULL));
    assert_null(mp_xml_find(r, "b", "urn:r"));
    assert_non_null(mp_xml_find(r, "b", "urn:o"));
    assert_ptr_equal(mp_xml_first_element(r), a1);
    mp_xml_remove(st, mp_xml_find(r, "c", NULL)); /* last child */
    mp_xml_remove(st, a1);                        /* middle */
    mp_xml_remove(st, r->children);               /* first: the text */
    assert_ser(st, "urn:r", "<r><b xmlns='urn:o'/><a n='2'/></r>");
    mp_xml *n = mp_xml_add_child(st, r, "d", NULL);
    assert_ptr_equal(r->last_child, n);
    assert_ser(st, "urn:r", "<r><b xmlns='urn:o'/><a n='2'/><d/></r>");
    mp_stanza_unref(st);
}

static void text_concatenates_direct_text_children(void **state)
{
    (void)state;
    mp_stanza *st = parse("<a xmlns='u'>one<b>skip</b>two<![CDATA[<3]]></a>");
    assert_string_equal(mp_xml_text(st, mp_stanza_root(st)), "one"
                                                             "two<3");
    mp_stanza *e = mp_stanza_new("e", "u");
    assert_string_equal(mp_xml_text(e, mp_stanza_root(e)), "");
    /* adjacent text additions merge */
    mp_xml_add_text(e, mp_stanza_root(e), "ab", 2);
    mp_xml_add_text(e, mp_stanza_root(e), "cd", 2);
    assert_ptr_equal(mp_stanza_root(e)->children, mp_stanza_root(e)->last_child);
    assert_string_equal(mp_stanza_root(e)->children->text, "abcd");
    mp_stanza_unref(e);
    mp_stanza_unref(st);
}

static void arena_grows_for_large_stanzas(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("big", "urn:b");
    size_t s0 = mp_stanza_size(st);
    mp_xml *r = mp_stanza_root(st);
    char buf[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(buf, sizeof buf, "v%d", i);
        mp_xml *c = mp_xml_add_child(st, r, "item", NULL);
        mp_xml_set_attr(st, c, "n", buf);
    }
    /* a block larger than any chunk */
    char *big = mp_stanza_alloc(st, 200000);
    memset(big, 'x', 200000);
    assert_int_equal((uintptr_t)big % _Alignof(max_align_t), 0);
    assert_true(mp_stanza_size(st) > s0 + 200000);
    int n = 0;
    for (mp_xml *c = mp_xml_find(r, "item", NULL); c; c = mp_xml_find_next(c, "item", NULL))
        n++;
    assert_int_equal(n, 5000);
    mp_xml *last = r->last_child;
    assert_string_equal(mp_xml_get_attr(last, "n"), "v4999");
    mp_stanza *cp = mp_stanza_copy(st);
    char *s1 = ser(st, NULL), *s2 = ser(cp, NULL);
    assert_string_equal(s1, s2);
    free(s1);
    free(s2);
    mp_stanza_unref(cp);
    mp_stanza_unref(st);
}

static void deep_trees_serialise_and_copy_without_recursion(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("d", "urn:d");
    mp_xml *n = mp_stanza_root(st);
    for (int i = 0; i < 100000; i++)
        n = mp_xml_add_child(st, n, "d", NULL);
    mp_stanza *cp = mp_stanza_copy(st);
    char *s = ser(cp, "urn:d");
    assert_int_equal(strlen(s), 100000 * 7 + 4);
    assert_memory_equal(s, "<d><d><d>", 9);
    free(s);
    mp_stanza_unref(cp);
    mp_stanza_unref(st);
}

static void make_error_swaps_addresses_and_adds_condition(void **state)
{
    (void)state;
    mp_stanza *st = parse("<message xmlns='jabber:client' from='a@b/c' to='d@e' id='7'"
                          " type='chat'><body>hi</body></message>");
    assert_ptr_equal(mp_stanza_make_error(st, "cancel", "service-unavailable", NULL), st);
    mp_xml *r = mp_stanza_root(st);
    assert_string_equal(mp_xml_get_attr(r, "to"), "a@b/c");
    assert_string_equal(mp_xml_get_attr(r, "from"), "d@e");
    assert_string_equal(mp_xml_get_attr(r, "type"), "error");
    assert_string_equal(mp_xml_get_attr(r, "id"), "7");
    mp_xml *e = mp_xml_find(r, "error", MP_NS_CLIENT);
    assert_non_null(e);
    assert_string_equal(mp_xml_get_attr(e, "type"), "cancel");
    assert_non_null(mp_xml_find(e, "service-unavailable", MP_NS_STANZA_ERRORS));
    assert_non_null(mp_xml_find(r, "body", NULL));
    char *s = ser(st, MP_NS_CLIENT);
    assert_non_null(strstr(s, "<error type='cancel'><service-unavailable "
                              "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"));
    free(s);
    mp_stanza_unref(st);

    /* from a client stream: no from, so the reply has no to */
    st = parse("<iq xmlns='jabber:client' to='e.org' type='get' id='q'><x xmlns='u'/></iq>");
    mp_stanza_make_error(st, "modify", "bad-request", "no <good>");
    assert_ser(st, MP_NS_CLIENT,
               "<iq from='e.org' type='error' id='q'><x xmlns='u'/><error type='modify'>"
               "<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
               "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>"
               "no &lt;good&gt;</text></error></iq>");
    mp_stanza_unref(st);
}

static void iq_result_answers_request(void **state)
{
    (void)state;
    mp_stanza *req = parse("<iq xmlns='jabber:client' from='u@h/r' to='h' type='get'"
                           " id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
    mp_stanza *res = mp_iq_result(req);
    mp_stanza_unref(req);
    assert_ser(res, MP_NS_CLIENT, "<iq to='u@h/r' from='h' type='result' id='p1'/>");
    assert_string_equal(mp_stanza_root(res)->ns, MP_NS_CLIENT);
    mp_stanza_unref(res);
}

/* ---- hostile input and shared stanzas ---- */

/* Text added in pieces through the API is grown by doubling, never
 * re-copied per piece: two elements appended to in turn (so neither text
 * is ever the arena's last allocation) keep the arena linear. */
static void add_text_in_pieces_is_amortised(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("a", "urn:t");
    mp_xml *r = mp_stanza_root(st);
    mp_xml *x = mp_xml_add_child(st, r, "x", NULL), *y = mp_xml_add_child(st, r, "y", NULL);
    size_t base = mp_stanza_size(st), n = 40000;
    for (size_t i = 1; i <= n; i++) {
        mp_xml_add_text(st, x, "x", 1);
        mp_xml_add_text(st, y, "yy", 2);
        /* doubling: at most ~4x the text, plus a partly used arena chunk */
        if (mp_stanza_size(st) > base + 4 * 3 * i + 72 * 1024)
            fail_msg("%zu bytes of text built %zu bytes", 3 * i, mp_stanza_size(st) - base);
    }
    assert_int_equal(x->children->text_len, n);
    assert_int_equal(y->children->text_len, 2 * n);
    assert_int_equal(strlen(mp_xml_text(st, y)), 2 * n);
    assert_true(x->children == x->last_child && y->children == y->last_child);
    mp_stanza_unref(st);
}

/* Parsing a text that expat hands over in thousands of pieces (every
 * newline is a callback) builds one text node of the text's size. */
static void parse_text_in_pieces_is_linear(void **state)
{
    (void)state;
    size_t na = 16384, nl = 4096;
    char *s = malloc(na + nl + 32);
    strcpy(s, "<body>");
    memset(s + 6, 'A', na);
    memset(s + 6 + na, '\n', nl);
    strcpy(s + 6 + na + nl, "</body>");
    mp_stanza *st = parse(s);
    mp_xml *r = mp_stanza_root(st);
    assert_ptr_equal(r->children, r->last_child);
    assert_int_equal(r->children->text_len, na + nl);
    print_message("%zu bytes of text: arena %zu bytes\n", na + nl, mp_stanza_size(st));
    assert_true(mp_stanza_size(st) < na + nl + 4096);
    mp_stanza_unref(st);
    free(s);
}

/* Reading the text of a shared stanza never writes to it: several
 * workers may read one stanza at once. */
static void text_of_shared_stanza_is_read_only(void **state)
{
    (void)state;
    mp_stanza *st = parse("<message xmlns='jabber:client'><body>one<x/>two<y/>"
                          "three</body><s>a<t>b</t>c</s></message>");
    mp_xml *body = mp_xml_find(mp_stanza_root(st), "body", NULL);
    mp_xml *sub = mp_xml_find(mp_stanza_root(st), "s", NULL);
    mp_stanza_ref(st); /* now shared */
    size_t size = mp_stanza_size(st);
    const char *t = mp_xml_text(st, body);
    assert_string_equal(t, "onetwothree");
    for (int i = 0; i < 2000; i++) {
        assert_ptr_equal(mp_xml_text(st, body), t);
        assert_string_equal(mp_xml_text(st, sub), "ac");
    }
    assert_int_equal(mp_stanza_size(st), size);
    mp_stanza_unref(st);
    mp_stanza_unref(st);

    /* built by hand: sharing seals the texts too */
    mp_stanza *b = mp_stanza_new("m", "urn:m");
    mp_xml *r = mp_stanza_root(b);
    mp_xml_add_text(b, r, "ab", 2);
    mp_xml_add_child(b, r, "c", NULL);
    mp_xml_add_text(b, r, "cd", 2);
    assert_string_equal(mp_xml_text(b, r), "abcd"); /* unshared: cached */
    mp_xml_add_text(b, r, "ef", 2);                 /* invalidates */
    mp_stanza_ref(b);
    size = mp_stanza_size(b);
    t = mp_xml_text(b, r);
    assert_string_equal(t, "abcdef");
    for (int i = 0; i < 2000; i++)
        assert_ptr_equal(mp_xml_text(b, r), t);
    assert_int_equal(mp_stanza_size(b), size);
    mp_stanza_unref(b);
    /* unshared again: removing a text child keeps the text right */
    mp_xml_remove(b, r->children);
    assert_string_equal(mp_xml_text(b, r), "cdef");
    mp_stanza_unref(b);
}

/* The per-recipient envelope copy: a fresh root, children shared. */
/* mp_stanza_serialize into a new string (caller frees). */
static char *ser_shared(mp_stanza *st, const char *stream_ns)
{
    struct evbuffer *b = evbuffer_new();
    mp_stanza_serialize(st, b, stream_ns);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

struct ser_job {
    mp_stanza *st;
    char *out[50];
};

static void *ser_thread(void *arg)
{
    struct ser_job *j = arg;
    for (int i = 0; i < 50; i++) {
        mp_stanza *c = mp_stanza_copy_envelope(j->st);
        char to[32];
        snprintf(to, sizeof to, "u%d@b/r", i);
        mp_xml_set_attr(c, mp_stanza_root(c), "to", to);
        j->out[i] = ser_shared(c, MP_NS_CLIENT);
        mp_stanza_unref(c);
    }
    return NULL;
}

/* One serialisation shared by a fan-out: envelope copies and a marked
 * stanza write exactly what mp_xml_serialize writes, reuse one serialised
 * body (the same bytes object for every recipient, on any thread), and a
 * change to the tree is never hidden by the shared bytes. */
static void fanout_shares_one_serialisation(void **state)
{
    (void)state;
    const char *srcs[] = {
        "<message xmlns='jabber:client' to='room@muc' from='a@b/c' type='groupchat'>"
        "<body>hi &amp; &lt;x&gt;<b/>there</body><x xmlns='urn:x' a='&apos;'><deep><er>t</er>"
        "</deep></x><e xmlns=''><f/></e><g xmlns:p='urn:p' p:k='v'/></message>",
        "<presence xmlns='jabber:server' from='a@b/c'><show>away</show>"
        "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>",
        "<iq xmlns='jabber:client' type='get' id='1'><query xmlns='urn:q'/></iq>",
        "<message xmlns='jabber:client' to='x@y'/>",
    };
    const char *contexts[] = {MP_NS_CLIENT, MP_NS_SERVER, NULL};
    for (size_t k = 0; k < sizeof srcs / sizeof *srcs; k++) {
        for (size_t ctx = 0; ctx < 3; ctx++) {
            mp_stanza *st = parse(srcs[k]);
            char *plain = ser(st, contexts[ctx]);
            mp_stanza *c1 = mp_stanza_copy_envelope(st), *c2 = mp_stanza_copy_envelope(st);
            mp_xml_set_attr(c2, mp_stanza_root(c2), "to", "other@b/r");
            char *s1 = ser_shared(c1, contexts[ctx]);
            assert_string_equal(s1, plain);
            const void *inner = mp_stanza_inner_output(st);
            if (mp_stanza_root(st)->children)
                assert_non_null(inner);
            char *s2 = ser_shared(c2, contexts[ctx]);
            char *plain2 = ser(c2, contexts[ctx]);
            assert_string_equal(s2, plain2);
            assert_ptr_equal(mp_stanza_inner_output(st), inner); /* reused, not redone */
            /* another stream namespace: still right, written directly */
            char *other = ser_shared(c1, ctx == 0 ? MP_NS_SERVER : MP_NS_CLIENT);
            char *other_plain = ser(c1, ctx == 0 ? MP_NS_SERVER : MP_NS_CLIENT);
            assert_string_equal(other, other_plain);
            free(s1), free(s2), free(plain2), free(other), free(other_plain);
            mp_stanza_unref(c1);
            mp_stanza_unref(c2);
            /* a stanza marked for a fan-out shares its own body */
            mp_stanza_mark_fanout(st);
            char *m = ser_shared(st, contexts[ctx]);
            assert_string_equal(m, plain);
            free(m);
            free(plain);
            mp_stanza_unref(st);
        }
    }

    /* changes after a shared write are not hidden by the kept bytes */
    mp_stanza *st = parse("<message xmlns='jabber:client'><body>one</body><x/></message>");
    mp_stanza_mark_fanout(st);
    char *s = ser_shared(st, MP_NS_CLIENT);
    assert_string_equal(s, "<message><body>one</body><x/></message>");
    free(s);
    mp_xml *r = mp_stanza_root(st);
    mp_xml_add_child(st, r, "delay", "urn:xmpp:delay");
    s = ser_shared(st, MP_NS_CLIENT);
    assert_string_equal(s,
                        "<message><body>one</body><x/><delay xmlns='urn:xmpp:delay'/></message>");
    free(s);
    mp_xml_set_attr(st, mp_xml_find(r, "x", NULL), "k", "v");
    s = ser_shared(st, MP_NS_CLIENT);
    assert_string_equal(
        s, "<message><body>one</body><x k='v'/><delay xmlns='urn:xmpp:delay'/></message>");
    free(s);
    mp_xml_remove(st, mp_xml_find(r, "body", NULL));
    s = ser_shared(st, MP_NS_CLIENT);
    assert_string_equal(s, "<message><x k='v'/><delay xmlns='urn:xmpp:delay'/></message>");
    free(s);
    mp_xml_add_text(st, mp_xml_find(r, "x", NULL), "t", 1);
    s = ser_shared(st, MP_NS_CLIENT);
    assert_string_equal(s, "<message><x k='v'>t</x><delay xmlns='urn:xmpp:delay'/></message>");
    free(s);
    /* a copy that added to its own root (copy-on-write) writes its own body */
    mp_stanza *c = mp_stanza_copy_envelope(st);
    mp_xml_add_child(c, mp_stanza_root(c), "extra", NULL);
    s = ser_shared(c, MP_NS_CLIENT);
    assert_string_equal(s,
                        "<message><x k='v'>t</x><delay xmlns='urn:xmpp:delay'/><extra/></message>");
    free(s);
    mp_stanza_unref(c);
    mp_stanza_unref(st);

    /* four threads write 50 copies each at once: one body, right bytes */
    st = parse("<message xmlns='jabber:client' from='room@muc/n' type='groupchat'>"
               "<body>to everyone</body></message>");
    mp_stanza_ref(st); /* shared, as when fanned out */
    struct ser_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i].st = st;
        assert_int_equal(pthread_create(&th[i], NULL, ser_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        for (int n = 0; n < 50; n++) {
            char want[200];
            snprintf(want, sizeof want,
                     "<message from='room@muc/n' type='groupchat' to='u%d@b/r'>"
                     "<body>to everyone</body></message>",
                     n);
            assert_string_equal(jobs[i].out[n], want);
            free(jobs[i].out[n]);
        }
    assert_non_null(mp_stanza_inner_output(st));
    mp_stanza_unref(st);
    mp_stanza_unref(st);
}

static void copy_envelope_shares_children(void **state)
{
    (void)state;
    const char *src =
        "<message xmlns='jabber:client' to='room@muc/x' from='a@b/c' type='groupchat'>"
        "<body>hi<b/>there</body><x xmlns='urn:x'><deep><er>t</er></deep></x>"
        "</message>";
    for (int order = 0; order < 2; order++) {
        mp_stanza *st = parse(src);
        char *before = ser(st, MP_NS_CLIENT);
        mp_stanza *c = mp_stanza_copy_envelope(st);
        mp_xml *r = mp_stanza_root(st), *cr = mp_stanza_root(c);
        assert_ptr_not_equal(r, cr);
        assert_ptr_equal(cr->children, r->children);
        assert_ptr_equal(cr->last_child, r->last_child);
        mp_xml_set_attr(c, cr, "to", "member@b/r");
        mp_xml_set_attr(c, cr, "from", "room@muc/nick");
        assert_ser(st, MP_NS_CLIENT, before);
        assert_ser(c, MP_NS_CLIENT,
                   "<message to='member@b/r' from='room@muc/nick' type='groupchat'>"
                   "<body>hi<b/>there</body><x xmlns='urn:x'><deep><er>t</er></deep></x>"
                   "</message>");
        assert_string_equal(mp_xml_text(c, mp_xml_find(cr, "body", NULL)), "hithere");
        /* serialising a shared child on its own, and a deep copy of the copy */
        char *x = mp_xml_to_string(mp_xml_find(cr, "x", NULL), MP_NS_CLIENT);
        assert_string_equal(x, "<x xmlns='urn:x'><deep><er>t</er></deep></x>");
        free(x);
        mp_stanza *d = mp_stanza_copy(c);
        assert_ser(d, MP_NS_CLIENT,
                   "<message to='member@b/r' from='room@muc/nick' type='groupchat'>"
                   "<body>hi<b/>there</body><x xmlns='urn:x'><deep><er>t</er></deep></x>"
                   "</message>");
        mp_stanza_unref(d);
        /* adding to the copy's root copies its children first */
        mp_stanza *e = mp_stanza_copy_envelope(st);
        mp_xml_add_child(e, mp_stanza_root(e), "extra", "urn:e");
        assert_ptr_not_equal(mp_stanza_root(e)->children, r->children);
        assert_ser(st, MP_NS_CLIENT, before);
        mp_stanza_unref(e);
        /* a copy of a copy */
        mp_stanza *cc = mp_stanza_copy_envelope(c);
        assert_ptr_equal(mp_stanza_root(cc)->children, r->children);
        assert_string_equal(mp_xml_get_attr(mp_stanza_root(cc), "to"), "member@b/r");
        if (order == 0) {
            mp_stanza_unref(st);
            assert_ser(c, MP_NS_CLIENT,
                       "<message to='member@b/r' from='room@muc/nick' type='groupchat'>"
                       "<body>hi<b/>there</body><x xmlns='urn:x'><deep><er>t</er></deep></x>"
                       "</message>");
            mp_stanza_unref(c);
            mp_stanza_unref(cc);
        } else {
            mp_stanza_unref(cc);
            mp_stanza_unref(c);
            assert_ser(st, MP_NS_CLIENT, before);
            mp_stanza_unref(st);
        }
        free(before);
    }
}

/* An element in no namespace under a default namespace keeps xmlns=''. */
static void no_namespace_child_keeps_empty_xmlns(void **state)
{
    (void)state;
    mp_stanza *st = parse("<message xmlns='jabber:client'><body xmlns=''>x<i>y</i></body>"
                          "<body>z</body></message>");
    mp_xml *b = mp_xml_find(mp_stanza_root(st), "body", "");
    assert_non_null(b);
    assert_string_equal(b->ns, "");
    assert_ser(st, MP_NS_CLIENT,
               "<message><body xmlns=''>x<i>y</i></body><body>z</body></message>");
    char *s = ser(st, NULL);
    mp_stanza *p = parse(s);
    assert_non_null(mp_xml_find(mp_stanza_root(p), "body", ""));
    assert_non_null(mp_xml_find(mp_stanza_root(p), "body", MP_NS_CLIENT));
    free(s);
    mp_stanza_unref(p);
    mp_stanza_unref(st);
    /* at the top level of a stream with no default namespace: nothing */
    st = parse("<a xmlns=''/>");
    assert_ser(st, NULL, "<a/>");
    mp_stanza_unref(st);
}

/* Writing namespace declarations is not cubic in the attribute count:
 * 3,000 attributes in distinct namespaces took seconds. */
static void namespaced_attributes_serialise_in_linear_time(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("x", "urn:a");
    mp_xml *r = mp_stanza_root(st);
    size_t n = 3000;
    mp_xml_attr **tail = &r->attrs;
    for (size_t i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "urn:n%zu|a", i % (n / 2));
        mp_xml_attr *a = mp_stanza_alloc(st, sizeof(*a));
        a->name = mp_stanza_strdup(st, name);
        a->value = i < n / 2 ? "1" : "2";
        a->next = NULL;
        *tail = a;
        tail = &a->next;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *s = ser(st, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    print_message("%zu namespaced attributes serialised in %.1f ms\n", n, ms);
    assert_true(ms < 500);
    /* each namespace declared once, and reused by its second attribute */
    size_t decls = 0;
    for (const char *p = s; (p = strstr(p, " xmlns:ns")); p++)
        decls++;
    assert_int_equal(decls, n / 2);
    assert_non_null(strstr(s, " xmlns:ns1499='urn:n1499' ns1499:a='1'"));
    assert_non_null(strstr(s, " ns0:a='2'"));
    free(s);
    mp_stanza_unref(st);
}

/* The envelope is parsed once, follows attribute changes, survives an
 * envelope copy and swaps with the addresses of an error reply. */
static void is_shared_counts_references(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("message", MP_NS_CLIENT);
    assert_int_equal(mp_stanza_is_shared(st), 0);
    mp_stanza_ref(st);
    assert_int_equal(mp_stanza_is_shared(st), 1);
    mp_stanza_unref(st);
    assert_int_equal(mp_stanza_is_shared(st), 0);
    /* an envelope copy is a stanza of its own */
    mp_stanza *c = mp_stanza_copy_envelope(st);
    assert_int_equal(mp_stanza_is_shared(c), 0);
    mp_stanza_unref(c);
    mp_stanza_unref(st);
}

static void envelope_is_parsed_once_and_follows_changes(void **state)
{
    (void)state;
    const char *x = "<message xmlns='jabber:client' type='chat' id='m1' "
                    "to='Juliet@Example.COM/Balcony' from='romeo@example.net/orchard'>"
                    "<body>hi</body></message>";
    mp_stanza *st = mp_stanza_parse(x, strlen(x));
    assert_non_null(st);
    const struct mp_envelope *e = mp_stanza_envelope(st);
    assert_int_equal(e->kind, MP_KIND_MESSAGE);
    assert_int_equal(e->type, MP_TYPE_CHAT);
    assert_string_equal(e->id, "m1");
    assert_string_equal(e->to.full, "juliet@example.com/Balcony");
    assert_string_equal(e->to.bare, "juliet@example.com");
    assert_string_equal(e->to.local, "juliet");
    assert_string_equal(e->to.domain, "example.com");
    assert_string_equal(e->to.resource, "Balcony");
    assert_string_equal(e->from.full, "romeo@example.net/orchard");
    assert_true(e == mp_stanza_envelope(st));

    /* a changed 'to' is re-read; a bad one is flagged */
    mp_xml_set_attr(st, mp_stanza_root(st), "to", "a@@b");
    e = mp_stanza_envelope(st);
    assert_true(e->to_bad);
    assert_null(e->to.domain);
    mp_jid j;
    assert_int_equal(mp_jid_parse(&j, "nurse@example.com"), MAGPIE_OK);
    mp_stanza_set_to(st, &j);
    mp_jid_free(&j);
    e = mp_stanza_envelope(st);
    assert_false(e->to_bad);
    assert_string_equal(e->to.bare, "nurse@example.com");
    assert_null(e->to.resource);
    assert_string_equal(mp_xml_get_attr(mp_stanza_root(st), "to"), "nurse@example.com");

    /* an envelope copy starts with the original's envelope */
    mp_stanza *c = mp_stanza_copy_envelope(st);
    assert_string_equal(mp_stanza_envelope(c)->to.full, "nurse@example.com");
    mp_xml_set_attr(c, mp_stanza_root(c), "to", "tybalt@example.org/x");
    assert_string_equal(mp_stanza_envelope(c)->to.full, "tybalt@example.org/x");
    assert_string_equal(mp_stanza_envelope(st)->to.full, "nurse@example.com");
    mp_stanza_unref(c);

    /* an error reply swaps the prepared addresses */
    mp_stanza *err = mp_stanza_copy(st);
    mp_stanza_envelope(err);
    mp_stanza_make_error(err, "cancel", "service-unavailable", NULL);
    e = mp_stanza_envelope(err);
    assert_int_equal(e->type, MP_TYPE_ERROR);
    assert_string_equal(e->to.full, "romeo@example.net/orchard");
    assert_string_equal(e->from.full, "nurse@example.com");
    mp_stanza_unref(err);

    const char *p = "<presence xmlns='jabber:client' type='subscribe' to='x@y'/>";
    mp_stanza *pr = mp_stanza_parse(p, strlen(p));
    /* sharing completes the envelope: readers never write */
    mp_stanza_ref(pr);
    e = mp_stanza_envelope(pr);
    assert_int_equal(e->kind, MP_KIND_PRESENCE);
    assert_int_equal(e->type, MP_TYPE_SUBSCRIBE);
    assert_null(e->from.domain);
    assert_false(e->from_bad);
    mp_stanza_unref(pr);
    mp_stanza_unref(pr);
    mp_stanza_unref(st);
}

/* Acknowledgement tokens (XEP-0198): complete runs once, when the
 * creator's part and every deferral are done; no deferral once it ran;
 * the stanza keeps the token's memory. */
static int completions;
static void count_completion(void *ud)
{
    (void)ud;
    completions++;
}

static void ack_token_completes_once(void **state)
{
    (void)state;
    completions = 0;
    mp_stanza *st = mp_stanza_new("message", MP_NS_CLIENT);
    assert_null(mp_stanza_defer_ack(st)); /* no token: nothing to defer */
    mp_ack_done(NULL);
    mp_ack *a = mp_ack_new(count_completion, NULL);
    mp_stanza_set_ack(st, a);
    mp_ack *d1 = mp_stanza_defer_ack(st);
    mp_ack *d2 = mp_stanza_defer_ack(st);
    assert_non_null(d1);
    assert_non_null(d2);
    mp_ack_done(a); /* the creator's part */
    assert_int_equal(completions, 0);
    mp_ack_done(d2);
    assert_int_equal(completions, 0);
    mp_ack_done(d1);
    assert_int_equal(completions, 1);
    assert_null(mp_stanza_defer_ack(st)); /* acknowledged already */
    mp_stanza_unref(st);                  /* frees the token too (ASan) */
    assert_int_equal(completions, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(builds_message_and_serialises_in_client_stream),
        cmocka_unit_test(new_client_stanza_has_fresh_id_and_given_attributes),
        cmocka_unit_test(escapes_text_and_attribute_values),
        cmocka_unit_test(escape_function_handles_each_special_character),
        cmocka_unit_test(self_closes_empty_elements),
        cmocka_unit_test(declares_namespace_only_where_it_changes),
        cmocka_unit_test(client_and_server_namespaces_are_equivalent_at_root),
        cmocka_unit_test(nested_content_namespace_is_declared),
        cmocka_unit_test(stream_namespace_elements_use_stream_prefix),
        cmocka_unit_test(xml_namespace_elements_use_xml_prefix),
        cmocka_unit_test(namespaced_attributes_get_prefix_declarations),
        cmocka_unit_test(parse_serialise_round_trip_is_stable),
        cmocka_unit_test(parse_refuses_bad_or_restricted_input),
        cmocka_unit_test(refcount_keeps_stanza_until_last_unref),
        cmocka_unit_test(copy_is_deep_and_independent),
        cmocka_unit_test(add_copy_takes_subtree_from_another_stanza),
        cmocka_unit_test(attributes_set_replace_and_remove),
        cmocka_unit_test(find_and_remove_children),
        cmocka_unit_test(text_concatenates_direct_text_children),
        cmocka_unit_test(arena_grows_for_large_stanzas),
        cmocka_unit_test(deep_trees_serialise_and_copy_without_recursion),
        cmocka_unit_test(make_error_swaps_addresses_and_adds_condition),
        cmocka_unit_test(iq_result_answers_request),
        cmocka_unit_test(add_text_in_pieces_is_amortised),
        cmocka_unit_test(parse_text_in_pieces_is_linear),
        cmocka_unit_test(text_of_shared_stanza_is_read_only),
        cmocka_unit_test(copy_envelope_shares_children),
        cmocka_unit_test(fanout_shares_one_serialisation),
        cmocka_unit_test(no_namespace_child_keeps_empty_xmlns),
        cmocka_unit_test(namespaced_attributes_serialise_in_linear_time),
        cmocka_unit_test(envelope_is_parsed_once_and_follows_changes),
        cmocka_unit_test(ack_token_completes_once),
        cmocka_unit_test(is_shared_counts_references),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
