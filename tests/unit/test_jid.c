/* test_jid.c - JID parsing and normalisation (RFC 7622 with stringprep). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

#include "base/base.h"
#include "conf/config.h"

struct vec {
    const char *in;
    const char *local, *domain, *resource, *full;
};

static void expect_jid(const struct vec *v)
{
    mp_jid j;
    if (mp_jid_parse(&j, v->in) != MAGPIE_OK)
        fail_msg("refused valid JID '%s'", v->in);
    if (v->local)
        assert_string_equal(j.local, v->local);
    else
        assert_null(j.local);
    assert_string_equal(j.domain, v->domain);
    if (v->resource)
        assert_string_equal(j.resource, v->resource);
    else
        assert_null(j.resource);
    assert_string_equal(j.full, v->full);
    /* bare is full without the resource */
    char bare[4096];
    snprintf(bare, sizeof bare, "%s%s%s", v->local ? v->local : "", v->local ? "@" : "", v->domain);
    assert_string_equal(j.bare, bare);
    mp_jid_free(&j);
}

static void parses_valid_jids(void **state)
{
    (void)state;
    static const struct vec ok[] = {
        {"juliet@example.com", "juliet", "example.com", NULL, "juliet@example.com"},
        {"juliet@example.com/foo", "juliet", "example.com", "foo", "juliet@example.com/foo"},
        {"juliet@example.com/foo bar", "juliet", "example.com", "foo bar",
         "juliet@example.com/foo bar"},
        {"juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar",
         "juliet@example.com/foo@bar"},
        {"juliet@example.com/a/b", "juliet", "example.com", "a/b", "juliet@example.com/a/b"},
        {"example.com", NULL, "example.com", NULL, "example.com"},
        {"example.com/foobar", NULL, "example.com", "foobar", "example.com/foobar"},
        {"a.example.com/b@example.net", NULL, "a.example.com", "b@example.net",
         "a.example.com/b@example.net"},
        {"\xcf\x80@example.com", "\xcf\x80", "example.com", NULL, "\xcf\x80@example.com"},
        {"foo\\20bar@example.com", "foo\\20bar", "example.com", NULL, "foo\\20bar@example.com"},
        {"localhost", NULL, "localhost", NULL, "localhost"},
        {"u@127.0.0.1/r", "u", "127.0.0.1", "r", "u@127.0.0.1/r"},
        {"m\xc3\xbcnchen.example/x", NULL, "m\xc3\xbcnchen.example", "x",
         "m\xc3\xbcnchen.example/x"},
        /* resource may contain characters nodeprep forbids */
        {"a@b/<\"&'>:", "a", "b", "<\"&'>:", "a@b/<\"&'>:"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(*ok); i++)
        expect_jid(&ok[i]);
}

static void folds_case_of_local_and_domain_but_not_resource(void **state)
{
    (void)state;
    static const struct vec v[] = {
        {"JULIET@EXAMPLE.COM/Balcony", "juliet", "example.com", "Balcony",
         "juliet@example.com/Balcony"},
        {"Ju\xc3\x9fLiet@Example.Com", "jussliet", "example.com", NULL, "jussliet@example.com"},
        {"\xce\xa3\xce\x91@EXAMPLE.com/\xce\xa3", "\xcf\x83\xce\xb1", "example.com", "\xce\xa3",
         "\xcf\x83\xce\xb1@example.com/\xce\xa3"},
        /* NFKC: fullwidth letters become ASCII */
        {"\xef\xbd\x81@example.com", "a", "example.com", NULL, "a@example.com"},
        /* soft hyphen is mapped to nothing */
        {"a\xc2\xad"
         "b@example.com",
         "ab", "example.com", NULL, "ab@example.com"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(*v); i++)
        expect_jid(&v[i]);
}

static void strips_one_trailing_dot_from_domain(void **state)
{
    (void)state;
    static const struct vec v[] = {
        {"example.com.", NULL, "example.com", NULL, "example.com"},
        {"a@example.com./r.", "a", "example.com", "r.", "a@example.com/r."},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(*v); i++)
        expect_jid(&v[i]);
    mp_jid j;
    assert_int_equal(mp_jid_parse(&j, "example.com.."), MAGPIE_ERR);
    assert_int_equal(mp_jid_parse(&j, "."), MAGPIE_ERR);
}

static void accepts_ip_literals(void **state)
{
    (void)state;
    static const struct vec v[] = {
        {"[::1]", NULL, "[::1]", NULL, "[::1]"},
        {"user@[2001:DB8:0:0::1]/r", "user", "[2001:db8::1]", "r", "user@[2001:db8::1]/r"},
        {"[::ffff:192.0.2.1]", NULL, "[::ffff:192.0.2.1]", NULL, "[::ffff:192.0.2.1]"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(*v); i++)
        expect_jid(&v[i]);
    const char *bad[] = {"[::1", "[]", "[example.com]", "[1.2.3.4]", "a@[::1]x", "[::g]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        mp_jid j;
        if (mp_jid_parse(&j, bad[i]) != MAGPIE_ERR)
            fail_msg("accepted '%s'", bad[i]);
    }
}

static void refuses_invalid_jids(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "@example.com",
        "juliet@",
        "juliet@example.com/",
        "/foo",
        "example.com/",
        "@",
        "@/",
        "juliet@/r",
        "jul\"iet@example.com",
        "a b@example.com",
        "<x>@example.com",
        "a&b@example.com",
        "a'b@example.com",
        "a:b@example.com",
        "juliet@@example.com",
        "juliet@exa mple.com",
        "juliet@exa<mple.com",
        "example..com",
        ".example.com",
        "a@example.com../r",
        "\xff@example.com",
        "a@example.com/\xc3",
        "\xc0\xaf@example.com",
        "a@example.com/\x07",
        "a@example.com/\xed\xa0\x80",
        /* RandALCat mixed with LCat violates the bidi rule */
        ("\xd7\x90"
         "a@example.com"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        mp_jid j;
        memset(&j, 0x55, sizeof(j));
        if (mp_jid_parse(&j, bad[i]) != MAGPIE_ERR)
            fail_msg("accepted invalid JID '%s' (#%zu)", bad[i], i);
        /* left empty, safe to free */
        assert_null(j.domain);
        assert_null(j.buf_);
        mp_jid_free(&j);
    }
}

/* Returns a malloc'd string of n copies of c. */
static char *rep(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void enforces_1023_byte_parts(void **state)
{
    (void)state;
    char buf[8192];
    mp_jid j;
    char *l1023 = rep('a', 1023), *l1024 = rep('a', 1024);
    snprintf(buf, sizeof buf, "%s@example.com", l1023);
    assert_int_equal(mp_jid_parse(&j, buf), MAGPIE_OK);
    assert_int_equal(strlen(j.local), 1023);
    mp_jid_free(&j);
    snprintf(buf, sizeof buf, "%s@example.com", l1024);
    assert_int_equal(mp_jid_parse(&j, buf), MAGPIE_ERR);

    snprintf(buf, sizeof buf, "a@example.com/%s", l1023);
    assert_int_equal(mp_jid_parse(&j, buf), MAGPIE_OK);
    assert_int_equal(strlen(j.resource), 1023);
    assert_int_equal(strlen(j.full), 1023 + 14);
    mp_jid_free(&j);
    snprintf(buf, sizeof buf, "a@example.com/%s", l1024);
    assert_int_equal(mp_jid_parse(&j, buf), MAGPIE_ERR);

    /* domain: 16 labels of 63 and 15 dots = 1023 bytes */
    char dom[1100] = "";
    char *lab = rep('d', 63);
    for (int i = 0; i < 16; i++) {
        strcat(dom, lab);
        if (i < 15)
            strcat(dom, ".");
    }
    assert_int_equal(strlen(dom), 1023);
    assert_int_equal(mp_jid_parse(&j, dom), MAGPIE_OK);
    mp_jid_free(&j);
    strcat(dom, "."); /* the trailing dot is stripped before counting */
    assert_int_equal(mp_jid_parse(&j, dom), MAGPIE_OK);
    mp_jid_free(&j);
    dom[1023] = 'x'; /* 1024 bytes */
    assert_int_equal(mp_jid_parse(&j, dom), MAGPIE_ERR);
    /* a DNS label over 63 bytes */
    char *l64 = rep('e', 64);
    snprintf(buf, sizeof buf, "%s.example", l64);
    assert_int_equal(mp_jid_parse(&j, buf), MAGPIE_ERR);

    /* the limit is on the prepared form: 512 x U+00DF (2 bytes) folds to
     * "ss" (2 bytes) = 1024 bytes: refused; 511 of them are fine */
    char sz[2048] = "";
    for (int i = 0; i < 512; i++)
        strcat(sz, "\xc3\x9f");
    snprintf(buf, sizeof buf, "%s@x", sz);
    assert_int_equal(mp_jid_parse(&j, buf), MAGPIE_ERR);
    sz[1022] = '\0';
    snprintf(buf, sizeof buf, "%s@x", sz);
    assert_int_equal(mp_jid_parse(&j, buf), MAGPIE_OK);
    assert_int_equal(strlen(j.local), 1022);
    mp_jid_free(&j);

    /* huge input is refused, not crashed on */
    char *huge = rep('h', 100000);
    assert_int_equal(mp_jid_parse(&j, huge), MAGPIE_ERR);
    free(huge);
    free(l64);
    free(lab);
    free(l1023);
    free(l1024);
}

static void set_builds_and_normalises_parts(void **state)
{
    (void)state;
    mp_jid j;
    assert_int_equal(mp_jid_set(&j, "Romeo", "Example.NET.", "Orchard"), MAGPIE_OK);
    assert_string_equal(j.full, "romeo@example.net/Orchard");
    assert_string_equal(j.bare, "romeo@example.net");
    mp_jid_free(&j);
    assert_int_equal(mp_jid_set(&j, NULL, "example.net", NULL), MAGPIE_OK);
    assert_null(j.local);
    assert_null(j.resource);
    assert_string_equal(j.full, "example.net");
    mp_jid_free(&j);
    assert_int_equal(mp_jid_set(&j, "", "example.net", NULL), MAGPIE_ERR);
    assert_int_equal(mp_jid_set(&j, "a", "example.net", ""), MAGPIE_ERR);
    assert_int_equal(mp_jid_set(&j, "a", NULL, NULL), MAGPIE_ERR);
    assert_int_equal(mp_jid_set(&j, "a@b", "example.net", NULL), MAGPIE_ERR);
    mp_jid_free(&j);
}

static void copy_is_independent(void **state)
{
    (void)state;
    mp_jid a, b, c;
    assert_int_equal(mp_jid_parse(&a, "Alice@Wonderland.lit/Rabbit Hole"), MAGPIE_OK);
    assert_int_equal(mp_jid_copy(&b, &a), MAGPIE_OK);
    mp_jid_free(&a);
    assert_null(a.full);
    assert_string_equal(b.local, "alice");
    assert_string_equal(b.domain, "wonderland.lit");
    assert_string_equal(b.resource, "Rabbit Hole");
    assert_string_equal(b.bare, "alice@wonderland.lit");
    assert_string_equal(b.full, "alice@wonderland.lit/Rabbit Hole");
    assert_int_equal(mp_jid_parse(&a, "wonderland.lit"), MAGPIE_OK);
    assert_int_equal(mp_jid_copy(&c, &a), MAGPIE_OK);
    assert_null(c.local);
    assert_null(c.resource);
    assert_string_equal(c.full, "wonderland.lit");
    mp_jid_free(&a);
    mp_jid_free(&b);
    mp_jid_free(&c);
}

static void part_prep_functions(void **state)
{
    (void)state;
    char out[1024];
    assert_int_equal(mp_jid_nodeprep("Hamlet", out, sizeof out), MAGPIE_OK);
    assert_string_equal(out, "hamlet");
    assert_int_equal(mp_jid_nodeprep("ham@let", out, sizeof out), MAGPIE_ERR);
    assert_int_equal(mp_jid_nodeprep("", out, sizeof out), MAGPIE_ERR);
    assert_int_equal(mp_jid_nameprep("Elsinore.LIT.", out, sizeof out), MAGPIE_OK);
    assert_string_equal(out, "elsinore.lit");
    assert_int_equal(mp_jid_nameprep("a/b", out, sizeof out), MAGPIE_ERR);
    assert_int_equal(mp_jid_resourceprep("Castle Gate", out, sizeof out), MAGPIE_OK);
    assert_string_equal(out, "Castle Gate");
    /* output buffer too small */
    char small[4];
    assert_int_equal(mp_jid_nodeprep("hamlet", small, sizeof small), MAGPIE_ERR);
    assert_int_equal(mp_jid_nodeprep("ham", small, sizeof small), MAGPIE_OK);
    assert_string_equal(small, "ham");
}

/* libidn's answer for in with profile: MAGPIE_OK with out set, or
 * MAGPIE_ERR. */
static int libidn_prep(const char *in, const Stringprep_profile *profile, char *out, size_t outlen)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", in);
    if (stringprep(buf, sizeof buf, 0, profile) != STRINGPREP_OK || !buf[0] ||
        strlen(buf) >= outlen)
        return MAGPIE_ERR;
    strcpy(out, buf);
    return MAGPIE_OK;
}

/* The domain rule jid.c applies after Nameprep: labels of 1..63 bytes of
 * a-z, 0-9, '-', '_' (for ASCII). */
static int domain_ok(const char *d)
{
    size_t label = 0;
    for (const char *p = d;; p++) {
        if (*p == '.' || !*p) {
            if (label == 0 || label > 63)
                return 0;
            if (!*p)
                return 1;
            label = 0;
            continue;
        }
        label++;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    }
}

static void compare_with_libidn(const char *in)
{
    char fast[1100], slow[1100];
    int rf = mp_jid_nodeprep(in, fast, sizeof fast);
    int rs = libidn_prep(in, stringprep_xmpp_nodeprep, slow, sizeof slow);
    if (rf != rs || (rf == MAGPIE_OK && strcmp(fast, slow) != 0))
        fail_msg("nodeprep of \"%s\": fast %d \"%s\", libidn %d \"%s\"", in, rf, fast, rs, slow);
    rf = mp_jid_resourceprep(in, fast, sizeof fast);
    rs = libidn_prep(in, stringprep_xmpp_resourceprep, slow, sizeof slow);
    if (rf != rs || (rf == MAGPIE_OK && strcmp(fast, slow) != 0))
        fail_msg("resourceprep of \"%s\": fast %d \"%s\", libidn %d \"%s\"", in, rf, fast, rs, slow);
    size_t n = strlen(in);
    if (n && in[n - 1] == '.')
        return; /* the trailing dot rule is tested above */
    if (in[0] == '[')
        return; /* IP literals */
    rf = mp_jid_nameprep(in, fast, sizeof fast);
    rs = libidn_prep(in, stringprep_nameprep, slow, sizeof slow);
    if (rs == MAGPIE_OK && !domain_ok(slow))
        rs = MAGPIE_ERR;
    if (rf != rs || (rf == MAGPIE_OK && strcmp(fast, slow) != 0))
        fail_msg("nameprep of \"%s\": fast %d \"%s\", libidn %d \"%s\"", in, rf, fast, rs, slow);
}

/* The ASCII fast path gives libidn's answers: every ASCII character alone
 * and between letters, and 20,000 random ASCII strings. */
static void ascii_fast_path_matches_libidn(void **state)
{
    (void)state;
    char s[64];
    for (int c = 1; c < 128; c++) {
        snprintf(s, sizeof s, "%c", c);
        compare_with_libidn(s);
        snprintf(s, sizeof s, "aB%cZ9", c);
        compare_with_libidn(s);
    }
    unsigned seed = 12345;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        int len = 1 + (int)((seed >> 16) % 40);
        for (int k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            /* mostly letters, digits, dots and hyphens; sometimes anything */
            unsigned r = (seed >> 16) % 100;
            const char *common = "abcXYZ09.-_ ";
            s[k] = r < 85 ? common[r % 12] : (char)(1 + (seed >> 8) % 127);
        }
        s[len] = '\0';
        compare_with_libidn(s);
    }
    /* a longest ASCII part and one byte over */
    char longest[1025];
    memset(longest, 'A', 1023);
    longest[1023] = '\0';
    char out[1100];
    assert_int_equal(mp_jid_resourceprep(longest, out, sizeof out), MAGPIE_OK);
    longest[1023] = 'A';
    longest[1024] = '\0';
    assert_int_equal(mp_jid_resourceprep(longest, out, sizeof out), MAGPIE_ERR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_valid_jids),
        cmocka_unit_test(folds_case_of_local_and_domain_but_not_resource),
        cmocka_unit_test(strips_one_trailing_dot_from_domain),
        cmocka_unit_test(accepts_ip_literals),
        cmocka_unit_test(refuses_invalid_jids),
        cmocka_unit_test(enforces_1023_byte_parts),
        cmocka_unit_test(set_builds_and_normalises_parts),
        cmocka_unit_test(copy_is_independent),
        cmocka_unit_test(part_prep_functions),
        cmocka_unit_test(ascii_fast_path_matches_libidn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
