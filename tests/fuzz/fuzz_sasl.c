/* fuzz_sasl.c - libFuzzer target: the server side of SASL PLAIN and
 * SCRAM-SHA-1/256(-PLUS) driven by client messages (docs/fuzzing.md).
 *
 * Input: "<m><c>\n" then the client's messages, one per line (already
 * base64-decoded, as mp_sasl_step takes them; an empty line is an empty
 * message; a final newline does not start another one).
 *   <m> - '0': SCRAM-SHA-1, '1': SCRAM-SHA-256, '2': SCRAM-SHA-1-PLUS,
 *         '3': SCRAM-SHA-256-PLUS, '4': PLAIN (other bytes: modulo 5)
 *   <c> - channel binding offered, bits of (<c> - '0'): 1 TLS, 2
 *         tls-exporter, 4 tls-server-end-point, 8 strict downgrade check.
 * The server nonce is fixed (mp_sasl_test_set_nonce) and the account
 * "user" has the password "pencil" (salt "QSXCR+Q6sek8bf92" in base64, 64
 * iterations, so PLAIN's key derivation stays cheap), so a seed can hold a
 * complete successful exchange (see tests/fuzz/corpus/fuzz_sasl/). Any
 * other username is unknown (the server continues with fake credentials).
 *
 * PLAIN's key derivation (MP_SASL_NEED_DERIVE) is run in line, as the
 * server's pool thread would.
 *
 * Checked: no crash, leak or undefined behaviour; a mechanism starts iff
 * mp_sasl_mechanisms offers it; success only for the known account; after
 * success or failure every further message fails; out/out_len agree; a
 * failure has a condition. Each message is also run through the base64
 * and the credentials-text decoders (decode(encode(x)) == x). */
#include "base/base.h"
#include "auth/sasl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

static const char *const mech_names[] = {"SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
                                         "SCRAM-SHA-256-PLUS", "PLAIN"};

static struct mp_credentials creds;
static int verbose; /* MAGPIE_FUZZ_VERBOSE=1: print every status (checking seeds) */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    unsigned char *salt;
    size_t salt_len;
    if (mp_base64_decode("QSXCR+Q6sek8bf92", 16, &salt, &salt_len) != MAGPIE_OK ||
        mp_credentials_derive_salt(&creds, "pencil", salt, salt_len, 64) != MAGPIE_OK)
        abort();
    free(salt);
    /* one exchange with the real account, so unknown accounts' fake
     * credentials copy its (cheap) iteration count from the start */
    mp_sasl *s = mp_sasl_new("SCRAM-SHA-1", NULL);
    unsigned char *out;
    size_t out_len;
    static const char first[] = "n,,n=user,r=abc";
    if (mp_sasl_step(s, (const unsigned char *)first, sizeof first - 1, &out, &out_len) !=
            MP_SASL_NEED_CREDS ||
        mp_sasl_set_credentials(s, &creds, &out, &out_len) != MP_SASL_CONTINUE)
        abort();
    free(out);
    mp_sasl_free(s);
    verbose = getenv("MAGPIE_FUZZ_VERBOSE") != NULL;
    return 0;
}

static void check_out(const unsigned char *out, size_t out_len)
{
    CHECK(out != NULL || out_len == 0);
}

/* base64 and credentials text decoders on the same bytes */
static void side_decoders(const unsigned char *m, size_t n)
{
    unsigned char *d = NULL;
    size_t dn = 0;
    if (mp_base64_decode((const char *)m, n, &d, &dn) == MAGPIE_OK) {
        CHECK(d != NULL);
        free(d);
    }
    char *e = mp_base64_encode(m, n);
    CHECK(e != NULL);
    CHECK(mp_base64_decode(e, strlen(e), &d, &dn) == MAGPIE_OK);
    CHECK(dn == n && (n == 0 || memcmp(d, m, n) == 0));
    free(d);
    free(e);

    struct mp_credentials c, c2;
    if (mp_credentials_decode(&c, (const char *)m, n) == MAGPIE_OK) {
        char *t = mp_credentials_encode(&c);
        CHECK(t != NULL);
        CHECK(mp_credentials_decode(&c2, t, strlen(t)) == MAGPIE_OK);
        CHECK(c2.iterations == c.iterations && c2.salt_len == c.salt_len &&
              memcmp(c2.salt, c.salt, c.salt_len) == 0 &&
              memcmp(c2.keys, c.keys, sizeof c.keys) == 0);
        free(t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    const char *mech = mech_names[(uint8_t)(data[0] - '0') % 5];
    unsigned fl = (uint8_t)(data[1] - '0') & 15;
    struct mp_sasl_cb cb;
    memset(&cb, 0, sizeof cb);
    cb.tls = (fl & 1) != 0;
    if (fl & 2) {
        cb.has_exporter = 1;
        for (int i = 0; i < 32; i++)
            cb.exporter[i] = (unsigned char)(0xa0 + i);
    }
    if (fl & 4) {
        cb.endpoint_len = 32;
        for (int i = 0; i < 32; i++)
            cb.endpoint[i] = (unsigned char)(0x10 + i);
    }
    cb.strict_downgrade = (fl & 8) != 0;
    data += 3;
    size -= 3;

    const char *names[16];
    int n = mp_sasl_mechanisms(&cb, names, 16), offered = 0;
    for (int i = 0; i < n; i++)
        offered |= strcmp(names[i], mech) == 0;
    mp_sasl *s = mp_sasl_new(mech, &cb);
    CHECK((s != NULL) == (offered != 0));
    if (!s)
        return 0;
    mp_sasl_test_set_nonce(s, "3rfcNHYJY1ZVvWVs7j");

    int done = 0; /* 1 after success or failure */
    size_t off = 0;
    while (off < size) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        size_t len = nl ? (size_t)(nl - (data + off)) : size - off;
        const unsigned char *msg = data + off;
        off += len + (nl ? 1 : 0);
        side_decoders(msg, len);

        unsigned char *out = NULL;
        size_t out_len = 0;
        enum mp_sasl_status st = mp_sasl_step(s, msg, len, &out, &out_len);
        check_out(out, out_len);
        free(out);
        out = NULL;
        if (st == MP_SASL_NEED_CREDS) {
            CHECK(!done);
            const char *user = mp_sasl_username(s);
            CHECK(user != NULL && *user);
            int known = strcmp(user, "user") == 0;
            st = mp_sasl_set_credentials(s, known ? &creds : NULL, &out, &out_len);
            check_out(out, out_len);
            free(out);
            out = NULL;
            CHECK(st != MP_SASL_NEED_CREDS);
        }
        if (st == MP_SASL_NEED_DERIVE) {
            /* PLAIN: the key derivation a pool thread runs in the server */
            struct mp_sasl_derive *d = mp_sasl_take_derive(s);
            CHECK(d != NULL);
            CHECK(mp_sasl_take_derive(s) == NULL);
            CHECK(mp_sasl_derive_iterations(d) == creds.iterations); /* fakes too, see init */
            mp_sasl_derive_run(d);
            st = mp_sasl_derived(s, d, &out, &out_len);
            CHECK(out == NULL);
            mp_sasl_derive_free(d);
            CHECK(st == MP_SASL_SUCCESS || st == MP_SASL_FAILURE);
        }
        if (verbose)
            fprintf(stderr, "%s: message of %zu bytes -> %s%s\n", mech, len,
                    st == MP_SASL_SUCCESS    ? "success"
                    : st == MP_SASL_CONTINUE ? "continue"
                    : st == MP_SASL_FAILURE  ? "failure "
                                             : "?",
                    st == MP_SASL_FAILURE ? mp_sasl_condition(s) : "");
        if (done)
            CHECK(st == MP_SASL_FAILURE);
        if (st == MP_SASL_SUCCESS) {
            CHECK(strcmp(mp_sasl_username(s), "user") == 0); /* the only known account */
            done = 1;
        } else if (st == MP_SASL_FAILURE) {
            CHECK(mp_sasl_condition(s) != NULL);
            done = 1;
        }
    }
    mp_sasl_free(s);
    return 0;
}
