/* test_proto.c - the protocol helpers of include/magpie/proto.h: XEP-0082
 * date/time round trips and rejects, XEP-0203 delay, XEP-0004 forms built
 * and read back, XEP-0059 sets parsed (and refused) and written. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <magpie/proto.h>

static mp_stanza *parse(const char *s)
{
    mp_stanza *st = mp_stanza_parse(s, strlen(s));
    assert_non_null(st);
    return st;
}

static void assert_root(mp_stanza *st, const char *want)
{
    char *s = mp_xml_to_string(mp_stanza_root(st), "jabber:client");
    assert_string_equal(s, want);
    free(s);
}

static void datetime_round_trip(void **state)
{
    (void)state;
    char buf[MP_DATETIME_MAX];
    int64_t us;
    assert_string_equal(mp_datetime_format(0, buf, sizeof buf), "1970-01-01T00:00:00Z");
    assert_string_equal(mp_datetime_format(1796234728123456LL, buf, sizeof buf),
                        "2026-12-02T18:05:28.123456Z");
    assert_int_equal(mp_datetime_parse(buf, &us), 0);
    assert_true(us == 1796234728123456LL);
    assert_int_equal(mp_datetime_parse("2026-12-02T18:05:28Z", &us), 0);
    assert_true(us == 1796234728000000LL);
    /* offsets, fractions of any length */
    assert_int_equal(mp_datetime_parse("2026-12-02T20:05:28.5+02:00", &us), 0);
    assert_true(us == 1796234728500000LL);
    assert_int_equal(mp_datetime_parse("2026-12-02T17:35:28.123456789-00:30", &us), 0);
    assert_true(us == 1796234728123456LL);
    /* before the epoch */
    assert_int_equal(mp_datetime_parse("1969-12-31T23:59:59.5Z", &us), 0);
    assert_true(us == -500000);
    assert_string_equal(mp_datetime_format(-500000, buf, sizeof buf),
                        "1969-12-31T23:59:59.500000Z");
}

static void datetime_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "2026-12-02", "2026-12-02T18:05:28", "2026-12-02T18:05:28z",
        "2026-13-02T18:05:28Z", "2026-12-02T24:05:28Z", "2026-12-02T18:05:28.Z",
        "2026-12-02T18:05:28+0200", "2026-12-02T18:05:28Zjunk", "26-12-02T18:05:28Z",
        "2026-12-02 18:05:28Z", "2026-12-02T18:05:28+02:00x",
    };
    int64_t us = 42;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (mp_datetime_parse(bad[i], &us) != -1)
            fail_msg("accepted %s", bad[i]);
    }
    assert_int_equal(mp_datetime_parse(NULL, &us), -1);
    assert_true(us == 42);
}

static void delay_once_per_entity(void **state)
{
    (void)state;
    mp_stanza *st = parse("<message xmlns='jabber:client' to='a@b'><body>x</body></message>");
    mp_xml *root = mp_stanza_root(st);
    mp_delay_add(st, root, "b", 1000000, "Offline Storage");
    mp_delay_add(st, root, "b", 2000000, NULL); /* same entity: kept as is */
    mp_delay_add(st, root, "conference.b", 0, NULL);
    assert_root(st, "<message to='a@b'><body>x</body>"
                    "<delay xmlns='urn:xmpp:delay' from='b' stamp='1970-01-01T00:00:01Z'>"
                    "Offline Storage</delay>"
                    "<delay xmlns='urn:xmpp:delay' from='conference.b' "
                    "stamp='1970-01-01T00:00:00Z'/></message>");
    mp_stanza_unref(st);
}

static void form_build_and_read(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("iq", "jabber:client");
    mp_xml *q = mp_xml_add_child(st, mp_stanza_root(st), "query", "urn:x");
    mp_xml *x = mp_form_add(st, q, "form", "urn:x:cfg", "Settings");
    mp_xml *f = mp_form_field_add(st, x, "level", "list-single", "Level", "2");
    mp_form_option_add(st, f, "Two", "2");
    f = mp_form_field_add(st, x, "jids", "jid-multi", NULL, "a@b");
    mp_form_value_add(st, f, "c@d");
    mp_form_field_add(st, x, "on", "boolean", NULL, "true");
    assert_root(st, "<iq><query xmlns='urn:x'><x xmlns='jabber:x:data' type='form'>"
                    "<title>Settings</title>"
                    "<field var='FORM_TYPE' type='hidden'><value>urn:x:cfg</value></field>"
                    "<field var='level' type='list-single' label='Level'><value>2</value>"
                    "<option label='Two'><value>2</value></option></field>"
                    "<field var='jids' type='jid-multi'><value>a@b</value><value>c@d</value></field>"
                    "<field var='on' type='boolean'><value>true</value></field>"
                    "</x></query></iq>");
    mp_stanza_unref(st);

    st = parse("<iq xmlns='jabber:client'><query xmlns='urn:x'>"
               "<x xmlns='jabber:x:data' type='submit'>"
               "<field var='FORM_TYPE'><value>urn:x:cfg</value></field>"
               "<field var='a'><value>1</value></field><field var='b'><value>false</value></field>"
               "<field var='c'><value>maybe</value></field><field var='empty'/>"
               "</x></query></iq>");
    q = mp_xml_first_element(mp_stanza_root(st));
    x = mp_form_find(q);
    assert_non_null(x);
    assert_string_equal(mp_form_type(x), "submit");
    assert_string_equal(mp_form_form_type(st, x), "urn:x:cfg");
    assert_string_equal(mp_form_value(st, x, "a"), "1");
    assert_null(mp_form_value(st, x, "empty"));
    assert_non_null(mp_form_field(x, "empty"));
    assert_null(mp_form_value(st, x, "missing"));
    assert_int_equal(mp_form_bool(st, x, "a", 0), 1);
    assert_int_equal(mp_form_bool(st, x, "b", 1), 0);
    assert_int_equal(mp_form_bool(st, x, "c", 1), -1);
    assert_int_equal(mp_form_bool(st, x, "missing", 7), 7);
    assert_null(mp_form_find(mp_xml_first_element(x)));
    mp_stanza_unref(st);
}

static void rsm_parse(void **state)
{
    (void)state;
    struct mp_rsm r;
    mp_stanza *st = parse("<q xmlns='urn:x'><set xmlns='http://jabber.org/protocol/rsm'>"
                          "<max>10</max><before/></set></q>");
    assert_int_equal(mp_rsm_parse(st, mp_stanza_root(st), &r), 0);
    assert_int_equal(r.max, 10);
    assert_int_equal(r.index, -1);
    assert_null(r.after);
    assert_string_equal(r.before, "");
    mp_stanza_unref(st);

    st = parse("<q xmlns='urn:x'><set xmlns='http://jabber.org/protocol/rsm'>"
               "<max>0</max><after>id-7</after><index>3</index></set></q>");
    assert_int_equal(mp_rsm_parse(st, mp_stanza_root(st), &r), 0);
    assert_int_equal(r.max, 0);
    assert_int_equal(r.index, 3);
    assert_string_equal(r.after, "id-7");
    assert_null(r.before);
    mp_stanza_unref(st);

    st = parse("<q xmlns='urn:x'/>");
    assert_int_equal(mp_rsm_parse(st, mp_stanza_root(st), &r), 0);
    assert_int_equal(r.max, -1);
    assert_null(r.after);
    assert_null(r.before);
    mp_stanza_unref(st);

    static const char *const bad[] = {
        "<max>-1</max>", "<max>x</max>", "<max></max>", "<max>99999999999</max>",
        "<index>a</index>", "<after/>", "<after>a</after><before>b</before>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char xml[256];
        snprintf(xml, sizeof xml, "<q xmlns='urn:x'><set xmlns='http://jabber.org/protocol/rsm'>"
                                  "%s</set></q>", bad[i]);
        st = parse(xml);
        if (mp_rsm_parse(st, mp_stanza_root(st), &r) != -1)
            fail_msg("accepted %s", bad[i]);
        mp_stanza_unref(st);
    }
}

static void rsm_result(void **state)
{
    (void)state;
    mp_stanza *st = mp_stanza_new("fin", "urn:xmpp:mam:2");
    mp_rsm_add_result(st, mp_stanza_root(st), "a", 0, "c", 3);
    assert_root(st, "<fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
                    "<first index='0'>a</first><last>c</last><count>3</count></set></fin>");
    mp_stanza_unref(st);
    st = mp_stanza_new("fin", "urn:xmpp:mam:2");
    mp_rsm_add_result(st, mp_stanza_root(st), NULL, -1, NULL, -1);
    assert_root(st, "<fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'/>"
                    "</fin>");
    mp_stanza_unref(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(datetime_round_trip), cmocka_unit_test(datetime_rejects),
        cmocka_unit_test(delay_once_per_entity), cmocka_unit_test(form_build_and_read),
        cmocka_unit_test(rsm_parse), cmocka_unit_test(rsm_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
