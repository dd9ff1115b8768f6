/* test_muc_rules.c - mod_muc's pure rules (modules/muc/rules.c): the
 * XEP-0045 permission table for role and affiliation changes and lists,
 * the role an affiliation enters with, history selection for a joiner
 * (§7.2.15), XEP-0082 timestamps and stanza ids (XEP-0359); archive pages
 * are src/core/mam.c's (tests 36, 39, 56). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "../../modules/muc/rules.h"

#define OK(x)   assert_null(x)
#define NO(c, x) assert_string_equal((x), (c))

static void test_names(void **state)
{
    (void)state;
    enum muc_affil a;
    enum muc_role r;
    for (int i = AFF_OUTCAST; i <= AFF_OWNER; i++) {
        assert_int_equal(muc_affil_parse(muc_affil_name((enum muc_affil)i), &a), 0);
        assert_int_equal(a, i);
    }
    for (int i = ROLE_NONE; i <= ROLE_MODERATOR; i++) {
        assert_int_equal(muc_role_parse(muc_role_name((enum muc_role)i), &r), 0);
        assert_int_equal(r, i);
    }
    assert_int_equal(muc_affil_parse("god", &a), -1);
    assert_int_equal(muc_affil_parse(NULL, &a), -1);
    assert_int_equal(muc_role_parse("Moderator", &r), -1);
}

static void test_default_role(void **state)
{
    (void)state;
    assert_int_equal(muc_default_role(AFF_OWNER, 0), ROLE_MODERATOR);
    assert_int_equal(muc_default_role(AFF_ADMIN, 1), ROLE_MODERATOR);
    assert_int_equal(muc_default_role(AFF_MEMBER, 1), ROLE_PARTICIPANT);
    assert_int_equal(muc_default_role(AFF_NONE, 0), ROLE_PARTICIPANT);
    assert_int_equal(muc_default_role(AFF_NONE, 1), ROLE_VISITOR);
    assert_int_equal(muc_default_role(AFF_OUTCAST, 0), ROLE_NONE);
}

/* §8: kick, voice; §9.6/9.7: moderator status */
static void test_roles(void **state)
{
    (void)state;
    /* a moderator without affiliation kicks a participant, silences and
     * gives voice */
    OK(muc_may_set_role(ROLE_MODERATOR, AFF_NONE, ROLE_PARTICIPANT, AFF_NONE, ROLE_NONE));
    OK(muc_may_set_role(ROLE_MODERATOR, AFF_NONE, ROLE_PARTICIPANT, AFF_MEMBER, ROLE_VISITOR));
    OK(muc_may_set_role(ROLE_MODERATOR, AFF_NONE, ROLE_VISITOR, AFF_NONE, ROLE_PARTICIPANT));
    /* a participant or visitor does none of it */
    NO("forbidden",
       muc_may_set_role(ROLE_PARTICIPANT, AFF_MEMBER, ROLE_PARTICIPANT, AFF_NONE, ROLE_NONE));
    NO("forbidden", muc_may_set_role(ROLE_VISITOR, AFF_NONE, ROLE_VISITOR, AFF_NONE, ROLE_PARTICIPANT));
    NO("forbidden", muc_may_set_role(ROLE_NONE, AFF_OWNER, ROLE_PARTICIPANT, AFF_NONE, ROLE_NONE));
    /* admins and owners cannot be kicked or silenced (not-allowed) */
    NO("not-allowed",
       muc_may_set_role(ROLE_MODERATOR, AFF_NONE, ROLE_MODERATOR, AFF_ADMIN, ROLE_NONE));
    NO("not-allowed",
       muc_may_set_role(ROLE_MODERATOR, AFF_ADMIN, ROLE_MODERATOR, AFF_OWNER, ROLE_NONE));
    NO("not-allowed",
       muc_may_set_role(ROLE_MODERATOR, AFF_OWNER, ROLE_MODERATOR, AFF_ADMIN, ROLE_NONE));
    NO("not-allowed",
       muc_may_set_role(ROLE_MODERATOR, AFF_OWNER, ROLE_MODERATOR, AFF_ADMIN, ROLE_VISITOR));
    /* only admins and owners grant or revoke moderation */
    NO("forbidden",
       muc_may_set_role(ROLE_MODERATOR, AFF_MEMBER, ROLE_PARTICIPANT, AFF_NONE, ROLE_MODERATOR));
    OK(muc_may_set_role(ROLE_MODERATOR, AFF_ADMIN, ROLE_PARTICIPANT, AFF_NONE, ROLE_MODERATOR));
    OK(muc_may_set_role(ROLE_MODERATOR, AFF_ADMIN, ROLE_MODERATOR, AFF_MEMBER, ROLE_PARTICIPANT));
    NO("forbidden",
       muc_may_set_role(ROLE_MODERATOR, AFF_NONE, ROLE_MODERATOR, AFF_MEMBER, ROLE_PARTICIPANT));
    OK(muc_may_set_role(ROLE_MODERATOR, AFF_OWNER, ROLE_MODERATOR, AFF_NONE, ROLE_NONE));
}

/* §9 (admin) and §10 (owner) */
static void test_affiliations(void **state)
{
    (void)state;
    OK(muc_may_set_affil(AFF_ADMIN, AFF_NONE, AFF_MEMBER));
    OK(muc_may_set_affil(AFF_ADMIN, AFF_MEMBER, AFF_OUTCAST));
    OK(muc_may_set_affil(AFF_ADMIN, AFF_OUTCAST, AFF_NONE));
    NO("forbidden", muc_may_set_affil(AFF_ADMIN, AFF_NONE, AFF_ADMIN));
    NO("forbidden", muc_may_set_affil(AFF_ADMIN, AFF_MEMBER, AFF_OWNER));
    NO("not-allowed", muc_may_set_affil(AFF_ADMIN, AFF_ADMIN, AFF_OUTCAST));
    NO("not-allowed", muc_may_set_affil(AFF_ADMIN, AFF_OWNER, AFF_NONE));
    OK(muc_may_set_affil(AFF_OWNER, AFF_ADMIN, AFF_OUTCAST));
    OK(muc_may_set_affil(AFF_OWNER, AFF_NONE, AFF_OWNER));
    NO("forbidden", muc_may_set_affil(AFF_MEMBER, AFF_NONE, AFF_MEMBER));
    NO("forbidden", muc_may_set_affil(AFF_NONE, AFF_NONE, AFF_OUTCAST));
    NO("forbidden", muc_may_set_affil(AFF_OUTCAST, AFF_OUTCAST, AFF_NONE));
    /* lists */
    OK(muc_may_list_affil(AFF_ADMIN, AFF_MEMBER));
    OK(muc_may_list_affil(AFF_OWNER, AFF_OWNER));
    NO("forbidden", muc_may_list_affil(AFF_MEMBER, AFF_MEMBER));
    OK(muc_may_list_role(ROLE_MODERATOR));
    NO("forbidden", muc_may_list_role(ROLE_PARTICIPANT));
}

static const struct muc_hist_meta H[] = {
    {1000, 100}, {1010, 200}, {1020, 50}, {1030, 300}, {1040, 10},
};
#define HN (sizeof H / sizeof *H)

static size_t sel(long maxchars, long maxstanzas, long seconds, int64_t since)
{
    struct muc_hist_req q = {maxchars, maxstanzas, seconds, since};
    return muc_history_select(H, HN, &q, 1050);
}

static void test_history(void **state)
{
    (void)state;
    assert_int_equal(sel(-1, -1, -1, -1), 0);  /* everything kept */
    assert_int_equal(sel(-1, 2, -1, -1), 3);   /* the last two */
    assert_int_equal(sel(-1, 0, -1, -1), 5);   /* none */
    assert_int_equal(sel(-1, 99, -1, -1), 0);
    assert_int_equal(sel(-1, -1, 25, -1), 3);  /* ts >= 1025 */
    assert_int_equal(sel(-1, -1, -1, 1010), 1); /* since: ts >= 1010 */
    assert_int_equal(sel(-1, -1, -1, 2000), 5);
    assert_int_equal(sel(310, -1, -1, -1), 3); /* 10 + 300 fit, 50 more do not */
    assert_int_equal(sel(309, -1, -1, -1), 4);
    assert_int_equal(sel(0, -1, -1, -1), 5);
    /* several limits: the strictest wins */
    assert_int_equal(sel(10000, 3, -1, 1030), 3);
    assert_int_equal(sel(5, 3, 40, -1), 5);
    assert_int_equal(muc_history_select(H, 0, &(struct muc_hist_req){-1, -1, -1, -1}, 0), 0);
}

static void test_stanza_ids(void **state)
{
    (void)state;
    char sid[MUC_SID_MAX];
    muc_sid_format(1733150000123456LL, "0123456789abcdef", sid);
    assert_string_equal(sid, "6284a6e198e40-0123456789abcdef");
    assert_int_equal(muc_sid_ts(sid), 1733150000123456LL);
    /* tails of 8..24 hex characters only, lowercase, one dash */
    assert_int_equal(muc_sid_ts("1f-01234567"), 31);
    assert_int_equal(muc_sid_ts("1f-0123456"), -1);
    assert_int_equal(muc_sid_ts("1f-0123456789abcdef012345678"), -1);
    assert_int_equal(muc_sid_ts("1F-01234567"), -1);
    assert_int_equal(muc_sid_ts("-01234567"), -1);
    assert_int_equal(muc_sid_ts("0-01234567"), -1);
    assert_int_equal(muc_sid_ts("1f-0123456g"), -1);
    assert_int_equal(muc_sid_ts("1f01234567"), -1);
    assert_int_equal(muc_sid_ts("ffffffffffffffff-01234567"), -1); /* > INT64_MAX */
    assert_int_equal(muc_sid_ts("11111111111111111-01234567"), -1); /* 17 digits */
    assert_int_equal(muc_sid_ts("my-client-id"), -1);
    assert_int_equal(muc_sid_ts(""), -1);
    assert_int_equal(muc_sid_ts(NULL), -1);
    /* the clock may stand still or step back: times still increase */
    assert_int_equal(muc_next_ts(0, 500), 500);
    assert_int_equal(muc_next_ts(500, 500), 501);
    assert_int_equal(muc_next_ts(500, 100), 501);
    assert_int_equal(muc_next_ts(500, 900), 900);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),   cmocka_unit_test(test_default_role),
        cmocka_unit_test(test_roles),   cmocka_unit_test(test_affiliations),
        cmocka_unit_test(test_history), cmocka_unit_test(test_stanza_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
