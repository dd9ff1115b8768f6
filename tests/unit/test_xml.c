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

#include "core.h"

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
    mp_xml_remove(mp_xml_find(rb, "body", NULL));
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
    mp_xml_remove(mp_xml_find(r, "c", NULL)); /* last child */
    mp_xml_remove(a1);                        /* middle */
    mp_xml_remove(r->children);               /* first: the text */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(builds_message_and_serialises_in_client_stream),
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
