/* fuzz_jid.c - libFuzzer target: JID parsing and the stringprep profiles
 * (docs/fuzzing.md).
 *
 * Input: a JID as a client writes it in to='' (bytes after a NUL are
 * ignored). Checked: no crash, leak or undefined behaviour, and
 *   - a parsed JID is consistent (domain set; bare and full built from the
 *     parts) and its full form parses again to the same parts (the
 *     normalisation is idempotent: two spellings of one JID never compare
 *     unequal after a round through the server);
 *   - mp_jid_set on the parts and mp_jid_copy give the same JID;
 *   - nodeprep, nameprep and resourceprep of the whole input, when they
 *     succeed, are idempotent and fit in MP_JID_PART_MAX bytes. */
#include <magpie/jid.h>
#include <magpie/magpie.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

static int streq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void same_jid(const mp_jid *a, const mp_jid *b)
{
    if (!streq(a->local, b->local) || !streq(a->domain, b->domain) ||
        !streq(a->resource, b->resource) || !streq(a->bare, b->bare) || !streq(a->full, b->full)) {
        fprintf(stderr, "JIDs differ: '%s' vs '%s'\n", a->full, b->full);
        abort();
    }
}

static void check_parts(const mp_jid *j)
{
    char buf[3 * (MP_JID_PART_MAX + 1) + 3];
    CHECK(j->domain && *j->domain && j->bare && j->full);
    CHECK(!j->local || (*j->local && strlen(j->local) <= MP_JID_PART_MAX));
    CHECK(!j->resource || (*j->resource && strlen(j->resource) <= MP_JID_PART_MAX));
    CHECK(strlen(j->domain) <= MP_JID_PART_MAX);
    CHECK(!j->local || !strpbrk(j->local, "@/\"&'/:<>"));
    CHECK(!strpbrk(j->domain, "@/"));
    snprintf(buf, sizeof buf, "%s%s%s", j->local ? j->local : "", j->local ? "@" : "", j->domain);
    CHECK(strcmp(buf, j->bare) == 0);
    snprintf(buf, sizeof buf, "%s%s%s", j->bare, j->resource ? "/" : "",
             j->resource ? j->resource : "");
    CHECK(strcmp(buf, j->full) == 0);
}

typedef int (*prep_fn)(const char *in, char *out, size_t outlen);

static void check_prep(const char *name, prep_fn f, const char *s)
{
    char a[MP_JID_PART_MAX + 1], b[MP_JID_PART_MAX + 1];
    if (f(s, a, sizeof a) != MAGPIE_OK)
        return;
    CHECK(strlen(a) <= MP_JID_PART_MAX);
    if (f(a, b, sizeof b) != MAGPIE_OK || strcmp(a, b) != 0) {
        fprintf(stderr, "%s is not idempotent: '%s' -> '%s' -> '%s'\n", name, s, a, b);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    mp_jid j, k;
    if (mp_jid_parse(&j, s) == MAGPIE_OK) {
        check_parts(&j);
        if (mp_jid_parse(&k, j.full) != MAGPIE_OK) {
            fprintf(stderr, "normalised JID '%s' (from '%s') does not parse\n", j.full, s);
            abort();
        }
        same_jid(&j, &k);
        mp_jid_free(&k);
        CHECK(mp_jid_set(&k, j.local, j.domain, j.resource) == MAGPIE_OK);
        same_jid(&j, &k);
        mp_jid_free(&k);
        CHECK(mp_jid_copy(&k, &j) == MAGPIE_OK);
        same_jid(&j, &k);
        mp_jid_free(&k);
    } else {
        CHECK(j.full == NULL && j.buf_ == NULL);
    }
    mp_jid_free(&j);

    check_prep("nodeprep", mp_jid_nodeprep, s);
    check_prep("nameprep", mp_jid_nameprep, s);
    check_prep("resourceprep", mp_jid_resourceprep, s);
    free(s);
    return 0;
}
