/* test_sasl.c - SASL server: RFC 5802/7677 vectors, a SCRAM client written
 * here with OpenSSL, channel binding, PLAIN, malformed input, base64 and
 * the credentials text format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <magpie/magpie.h>
#include "auth/sasl.h"

/* ---- helpers ---- */

static unsigned char *b64d(const char *s, size_t *len)
{
    unsigned char *out;
    assert_int_equal(mp_base64_decode(s, strlen(s), &out, len), MAGPIE_OK);
    return out;
}

/* Credentials with a fixed salt given in base64. */
static void make_creds(struct mp_credentials *c, const char *password, const char *salt_b64,
                       unsigned iterations)
{
    size_t n;
    unsigned char *salt = b64d(salt_b64, &n);
    assert_int_equal(mp_credentials_derive_salt(c, password, salt, n, iterations), MAGPIE_OK);
    free(salt);
}

/* Feeds a text message; returns the status and stores the output text
 * (NUL-terminated copy) in *out_s (NULL if none). */
static enum mp_sasl_status step_s(mp_sasl *s, const char *in, char **out_s)
{
    unsigned char *out = NULL;
    size_t out_len = 12345;
    enum mp_sasl_status st = mp_sasl_step(s, (const unsigned char *)in, strlen(in), &out, &out_len);
    if (out_s) {
        *out_s = NULL;
        if (out) {
            *out_s = malloc(out_len + 1);
            memcpy(*out_s, out, out_len);
            (*out_s)[out_len] = '\0';
        }
    }
    if (!out)
        assert_int_equal(out_len, 0);
    free(out);
    return st;
}

static enum mp_sasl_status creds_s(mp_sasl *s, const struct mp_credentials *c, char **out_s)
{
    unsigned char *out = NULL;
    size_t out_len = 0;
    enum mp_sasl_status st = mp_sasl_set_credentials(s, c, &out, &out_len);
    *out_s = NULL;
    if (out) {
        *out_s = malloc(out_len + 1);
        memcpy(*out_s, out, out_len);
        (*out_s)[out_len] = '\0';
    }
    free(out);
    return st;
}

static const struct mp_sasl_cb no_tls = {0};
static const struct mp_sasl_cb tls_only = {.tls = 1};

static struct mp_sasl_cb tls_cb(void)
{
    struct mp_sasl_cb cb;
    memset(&cb, 0, sizeof cb);
    cb.tls = 1;
    for (int i = 0; i < 32; i++)
        cb.exporter[i] = (unsigned char)(0xa0 + i);
    cb.has_exporter = 1;
    for (int i = 0; i < 32; i++)
        cb.endpoint[i] = (unsigned char)(0x10 + i);
    cb.endpoint_len = 32;
    return cb;
}

/* ---- RFC test vectors ---- */

static void run_vector(const char *mech, const char *salt, const char *cfirst, const char *snonce,
                       const char *sfirst, const char *cfinal, const char *sfinal)
{
    struct mp_credentials c;
    char *out;
    make_creds(&c, "pencil", salt, 4096);
    mp_sasl *s = mp_sasl_new(mech, &no_tls);
    assert_non_null(s);
    mp_sasl_test_set_nonce(s, snonce);
    assert_int_equal(step_s(s, cfirst, &out), MP_SASL_NEED_CREDS);
    assert_null(out);
    assert_string_equal(mp_sasl_username(s), "user");
    assert_null(mp_sasl_authzid(s));
    assert_int_equal(creds_s(s, &c, &out), MP_SASL_CONTINUE);
    assert_string_equal(out, sfirst);
    free(out);
    assert_int_equal(step_s(s, cfinal, &out), MP_SASL_SUCCESS);
    assert_string_equal(out, sfinal);
    free(out);
    assert_non_null(mp_sasl_condition(s));
    /* anything after the end is refused */
    assert_int_equal(step_s(s, "x", &out), MP_SASL_FAILURE);
    mp_sasl_free(s);
}

static void test_rfc5802_vector(void **state)
{
    (void)state;
    run_vector("SCRAM-SHA-1", "QSXCR+Q6sek8bf92", "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
               "3rfcNHYJY1ZVvWVs7j",
               "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
               "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
               "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

static void test_rfc7677_vector(void **state)
{
    (void)state;
    run_vector("SCRAM-SHA-256", "W22ZaJ0SNY7soEsUEjb6gQ==", "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
               "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
               "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
               "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
               "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
               "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
               "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

/* ---- an independent SCRAM client (OpenSSL only) ---- */

struct client_opts {
    const char *mech;
    const struct mp_sasl_cb *cb; /* server side channel binding */
    const char *gs2;             /* e.g. "n,,", "p=tls-exporter,," */
    const unsigned char *cbdata; /* what the client binds to (p= only) */
    size_t cbdata_len;
    const char *user;                   /* as sent (already saslname-escaped) */
    const char *password;               /* the client's password */
    const struct mp_credentials *creds; /* what the server knows, NULL: unknown */
    int tamper_nonce;
    int flip_proof;
};

struct client_result {
    enum mp_sasl_status first, creds, final;
    const char *condition;
    int bad_creds; /* mp_sasl_bad_credentials at the end */
    char server_first[512];
    int server_sig_ok;
};

static void b64e(const unsigned char *in, size_t len, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

static void run_client(const struct client_opts *o, struct client_result *r)
{
    const EVP_MD *md = strstr(o->mech, "SHA-256") ? EVP_sha256() : EVP_sha1();
    int dl = EVP_MD_get_size(md);
    char cfb[256], cfirst[512], *out;
    const char *cnonce = "clientNONCEabc123XYZ";

    memset(r, 0, sizeof *r);
    r->first = r->creds = r->final = MP_SASL_FAILURE;
    mp_sasl *s = mp_sasl_new(o->mech, o->cb);
    assert_non_null(s);
    snprintf(cfb, sizeof cfb, "n=%s,r=%s", o->user, cnonce);
    snprintf(cfirst, sizeof cfirst, "%s%s", o->gs2, cfb);
    r->first = step_s(s, cfirst, &out);
    assert_null(out);
    if (r->first != MP_SASL_NEED_CREDS)
        goto done;
    r->creds = creds_s(s, o->creds, &out);
    if (r->creds != MP_SASL_CONTINUE) {
        free(out);
        goto done;
    }
    assert_non_null(out);
    snprintf(r->server_first, sizeof r->server_first, "%s", out);
    free(out);

    /* parse r=,s=,i= */
    char sf[512], *nonce, *salt_b64, *it;
    snprintf(sf, sizeof sf, "%s", r->server_first);
    assert_memory_equal(sf, "r=", 2);
    nonce = sf + 2;
    salt_b64 = strstr(sf, ",s=");
    assert_non_null(salt_b64);
    *salt_b64 = '\0';
    salt_b64 += 3;
    it = strstr(salt_b64, ",i=");
    assert_non_null(it);
    *it = '\0';
    it += 3;
    assert_memory_equal(nonce, cnonce, strlen(cnonce));
    assert_true(strlen(nonce) > strlen(cnonce) + 8);
    unsigned char salt[64];
    int slen = EVP_DecodeBlock(salt, (const unsigned char *)salt_b64, (int)strlen(salt_b64));
    assert_true(slen > 0);
    if (strlen(salt_b64) > 1 && salt_b64[strlen(salt_b64) - 1] == '=')
        slen--;
    if (strlen(salt_b64) > 2 && salt_b64[strlen(salt_b64) - 2] == '=')
        slen--;
    int iter = atoi(it);
    assert_true(iter > 0);

    /* keys */
    unsigned char salted[64], ckey[64], skey[64], stored[64], csig[64], proof[64], ssig[64];
    unsigned int l;
    assert_int_equal(
        PKCS5_PBKDF2_HMAC(o->password, (int)strlen(o->password), salt, slen, iter, md, dl, salted),
        1);
    HMAC(md, salted, dl, (const unsigned char *)"Client Key", 10, ckey, &l);
    HMAC(md, salted, dl, (const unsigned char *)"Server Key", 10, skey, &l);
    EVP_Digest(ckey, (size_t)dl, stored, &l, md, NULL);

    unsigned char cbind[256];
    size_t gl = strlen(o->gs2);
    memcpy(cbind, o->gs2, gl);
    if (o->cbdata_len)
        memcpy(cbind + gl, o->cbdata, o->cbdata_len);
    char cbind_b64[400];
    b64e(cbind, gl + o->cbdata_len, cbind_b64);
    char cfwp[1024];
    snprintf(cfwp, sizeof cfwp, "c=%s,r=%s%s", cbind_b64, nonce, o->tamper_nonce ? "x" : "");
    char auth[2048];
    snprintf(auth, sizeof auth, "%s,%s,%s", cfb, r->server_first, cfwp);
    HMAC(md, stored, dl, (const unsigned char *)auth, strlen(auth), csig, &l);
    for (int i = 0; i < dl; i++)
        proof[i] = ckey[i] ^ csig[i];
    if (o->flip_proof)
        proof[0] ^= 1;
    HMAC(md, skey, dl, (const unsigned char *)auth, strlen(auth), ssig, &l);
    char proof_b64[100], cfinal[1200], ssig_b64[100], expect[110];
    b64e(proof, (size_t)dl, proof_b64);
    snprintf(cfinal, sizeof cfinal, "%s,p=%s", cfwp, proof_b64);
    r->final = step_s(s, cfinal, &out);
    if (r->final == MP_SASL_SUCCESS) {
        b64e(ssig, (size_t)dl, ssig_b64);
        snprintf(expect, sizeof expect, "v=%s", ssig_b64);
        assert_non_null(out);
        r->server_sig_ok = strcmp(out, expect) == 0;
    } else {
        assert_null(out);
    }
    free(out);
done:
    r->condition = mp_sasl_condition(s);
    r->bad_creds = mp_sasl_bad_credentials(s);
    mp_sasl_free(s);
}

static struct mp_credentials alice;

static int setup_alice(void **state)
{
    (void)state;
    return mp_credentials_derive(&alice, "s3cret pass", 4096) == MAGPIE_OK ? 0 : -1;
}

static void test_client_success_all_mechs(void **state)
{
    (void)state;
    struct mp_sasl_cb cb = tls_cb();
    struct client_result r;
    const char *plain_mechs[] = {"SCRAM-SHA-1", "SCRAM-SHA-256"};
    for (int i = 0; i < 2; i++) {
        struct client_opts o = {.mech = plain_mechs[i],
                                .cb = &no_tls,
                                .gs2 = "n,,",
                                .user = "alice",
                                .password = "s3cret pass",
                                .creds = &alice};
        run_client(&o, &r);
        assert_int_equal(r.final, MP_SASL_SUCCESS);
        assert_true(r.server_sig_ok);
    }
    /* -PLUS with tls-exporter and tls-server-end-point */
    const char *plus[] = {"SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"};
    for (int i = 0; i < 2; i++) {
        struct client_opts o = {.mech = plus[i],
                                .cb = &cb,
                                .gs2 = "p=tls-exporter,,",
                                .cbdata = cb.exporter,
                                .cbdata_len = 32,
                                .user = "alice",
                                .password = "s3cret pass",
                                .creds = &alice};
        run_client(&o, &r);
        assert_int_equal(r.final, MP_SASL_SUCCESS);
        assert_true(r.server_sig_ok);
        o.gs2 = "p=tls-server-end-point,,";
        o.cbdata = cb.endpoint;
        run_client(&o, &r);
        assert_int_equal(r.final, MP_SASL_SUCCESS);
        assert_true(r.server_sig_ok);
    }
}

static void test_wrong_password(void **state)
{
    (void)state;
    struct client_result r;
    struct client_opts o = {.mech = "SCRAM-SHA-256",
                            .cb = &no_tls,
                            .gs2 = "n,,",
                            .user = "alice",
                            .password = "s3cret pasS",
                            .creds = &alice};
    run_client(&o, &r);
    assert_int_equal(r.first, MP_SASL_NEED_CREDS);
    assert_int_equal(r.creds, MP_SASL_CONTINUE);
    assert_int_equal(r.final, MP_SASL_FAILURE);
    assert_string_equal(r.condition, "not-authorized");
    assert_true(r.bad_creds); /* counted by login throttling */
    /* right password, damaged proof */
    o.password = "s3cret pass";
    o.flip_proof = 1;
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_FAILURE);
    assert_string_equal(r.condition, "not-authorized");
    assert_true(r.bad_creds);
    /* right proof, wrong nonce echoed: a protocol error, not a guess */
    o.flip_proof = 0;
    o.tamper_nonce = 1;
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_FAILURE);
    assert_string_equal(r.condition, "not-authorized");
    assert_false(r.bad_creds);
    /* a success is no failure */
    o.tamper_nonce = 0;
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_SUCCESS);
    assert_false(r.bad_creds);
}

/* Splits "r=..,s=..,i=.." and returns the s= value (static buffer). */
static const char *salt_of(const char *sfirst, char *buf, size_t n)
{
    const char *s = strstr(sfirst, ",s=");
    assert_non_null(s);
    snprintf(buf, n, "%s", s + 3);
    char *e = strchr(buf, ',');
    assert_non_null(e);
    *e = '\0';
    return buf;
}

static void test_unknown_user(void **state)
{
    (void)state;
    struct client_result r1, r2, r3, ok;
    struct client_opts o = {.mech = "SCRAM-SHA-256",
                            .cb = &no_tls,
                            .gs2 = "n,,",
                            .user = "mallory",
                            .password = "whatever",
                            .creds = NULL};
    run_client(&o, &r1);
    assert_int_equal(r1.creds, MP_SASL_CONTINUE); /* looks like a real account */
    assert_int_equal(r1.final, MP_SASL_FAILURE);
    assert_string_equal(r1.condition, "not-authorized");
    assert_true(r1.bad_creds);
    run_client(&o, &r2);
    o.user = "trudy";
    run_client(&o, &r3);
    char a[64], b[64], c[64], d[64];
    /* the fake salt is stable per user and differs between users */
    assert_string_equal(salt_of(r1.server_first, a, sizeof a),
                        salt_of(r2.server_first, b, sizeof b));
    assert_string_not_equal(salt_of(r1.server_first, a, sizeof a),
                            salt_of(r3.server_first, c, sizeof c));
    /* same shape as a real account: 16-byte salt, same iteration count */
    struct client_opts real = {.mech = "SCRAM-SHA-256",
                               .cb = &no_tls,
                               .gs2 = "n,,",
                               .user = "alice",
                               .password = "s3cret pass",
                               .creds = &alice};
    run_client(&real, &ok);
    assert_int_equal(strlen(salt_of(ok.server_first, d, sizeof d)), strlen(a));
    assert_string_equal(strstr(ok.server_first, ",i="), strstr(r1.server_first, ",i="));
}

static void test_channel_binding(void **state)
{
    (void)state;
    struct mp_sasl_cb cb = tls_cb();
    struct client_result r;
    unsigned char bad[32];
    memcpy(bad, cb.exporter, 32);
    bad[31] ^= 0x80;
    /* the client is bound to another TLS session (MITM) */
    struct client_opts o = {.mech = "SCRAM-SHA-256-PLUS",
                            .cb = &cb,
                            .gs2 = "p=tls-exporter,,",
                            .cbdata = bad,
                            .cbdata_len = 32,
                            .user = "alice",
                            .password = "s3cret pass",
                            .creds = &alice};
    run_client(&o, &r);
    assert_int_equal(r.creds, MP_SASL_CONTINUE);
    assert_int_equal(r.final, MP_SASL_FAILURE);
    assert_string_equal(r.condition, "not-authorized");
    /* a binding mismatch is not a failed password: not throttled */
    assert_false(r.bad_creds);
    /* ... even with a wrong password on top (the answer says nothing) */
    o.password = "wrong";
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_FAILURE);
    assert_false(r.bad_creds);
    o.password = "s3cret pass";
    /* c= carries only the gs2 header, no binding data */
    o.cbdata_len = 0;
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_FAILURE);
    assert_false(r.bad_creds);
    /* binding data of the other type */
    o.cbdata = cb.endpoint;
    o.cbdata_len = 32;
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_FAILURE);
    assert_false(r.bad_creds);
    /* an unknown or unavailable binding type */
    o.gs2 = "p=tls-unique,,";
    run_client(&o, &r);
    assert_int_equal(r.first, MP_SASL_FAILURE);
    assert_false(r.bad_creds);
    struct mp_sasl_cb endpoint_only = cb;
    endpoint_only.has_exporter = 0;
    o.cb = &endpoint_only;
    o.gs2 = "p=tls-exporter,,";
    o.cbdata = cb.exporter;
    run_client(&o, &r);
    assert_int_equal(r.first, MP_SASL_FAILURE);
    o.gs2 = "p=tls-server-end-point,,";
    o.cbdata = cb.endpoint;
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_SUCCESS);
    /* -PLUS mechanism without p= */
    o.cb = &cb;
    o.gs2 = "n,,";
    o.cbdata_len = 0;
    run_client(&o, &r);
    assert_int_equal(r.first, MP_SASL_FAILURE);
    /* p= with a non-PLUS mechanism */
    o.mech = "SCRAM-SHA-256";
    o.gs2 = "p=tls-exporter,,";
    o.cbdata = cb.exporter;
    o.cbdata_len = 32;
    run_client(&o, &r);
    assert_int_equal(r.first, MP_SASL_FAILURE);
}

static void test_downgrade_y_flag(void **state)
{
    (void)state;
    struct mp_sasl_cb cb = tls_cb();
    struct client_result r;
    cb.strict_downgrade = 1;
    /* we offer -PLUS, the client says "y" (thinks we don't): attack */
    struct client_opts o = {.mech = "SCRAM-SHA-256",
                            .cb = &cb,
                            .gs2 = "y,,",
                            .user = "alice",
                            .password = "s3cret pass",
                            .creds = &alice};
    run_client(&o, &r);
    assert_int_equal(r.first, MP_SASL_FAILURE);
    assert_string_equal(r.condition, "not-authorized");
    /* no channel binding on this stream: "y" is fine */
    o.cb = &tls_only;
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_SUCCESS);
    /* lenient mode (default): a tls-unique-only client's "y" is accepted */
    struct mp_sasl_cb lenient = tls_cb();
    o.cb = &lenient;
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_SUCCESS);
    /* "n" on a stream with binding available is the client's choice */
    o.cb = &cb;
    o.gs2 = "n,,";
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_SUCCESS);
}

static void test_mechanisms(void **state)
{
    (void)state;
    const char *n[8];
    struct mp_sasl_cb cb = tls_cb();
    assert_int_equal(mp_sasl_mechanisms(&cb, n, 8), 5);
    assert_string_equal(n[0], "SCRAM-SHA-256-PLUS");
    assert_string_equal(n[1], "SCRAM-SHA-1-PLUS");
    assert_string_equal(n[2], "SCRAM-SHA-256");
    assert_string_equal(n[3], "SCRAM-SHA-1");
    assert_string_equal(n[4], "PLAIN");
    assert_null(n[5]);
    assert_int_equal(mp_sasl_mechanisms(&tls_only, n, 8), 3);
    assert_string_equal(n[0], "SCRAM-SHA-256");
    assert_string_equal(n[2], "PLAIN");
    assert_int_equal(mp_sasl_mechanisms(&no_tls, n, 8), 2);
    assert_string_equal(n[1], "SCRAM-SHA-1");
    assert_null(n[2]);
    assert_int_equal(mp_sasl_mechanisms(&cb, n, 3), 2); /* room for the NULL */
    assert_null(n[2]);

    assert_int_equal(mp_sasl_channel_bindings(&cb, n, 8), 2);
    assert_string_equal(n[0], "tls-exporter");
    assert_string_equal(n[1], "tls-server-end-point");
    assert_null(n[2]);
    struct mp_sasl_cb ep = cb;
    ep.has_exporter = 0;
    assert_int_equal(mp_sasl_channel_bindings(&ep, n, 8), 1);
    assert_string_equal(n[0], "tls-server-end-point");
    assert_int_equal(mp_sasl_channel_bindings(&tls_only, n, 8), 0);
    assert_null(n[0]);

    assert_null(mp_sasl_new("PLAIN", &no_tls));
    assert_null(mp_sasl_new("SCRAM-SHA-256-PLUS", &tls_only));
    assert_null(mp_sasl_new("DIGEST-MD5", &cb));
    assert_null(mp_sasl_new("scram-sha-1", &cb));
    mp_sasl *s = mp_sasl_new("SCRAM-SHA-1-PLUS", &cb);
    assert_non_null(s);
    mp_sasl_free(s);
}

/* ---- PLAIN ---- */

static enum mp_sasl_status plain(const char *msg, size_t len, const struct mp_credentials *c,
                                 int known, const char **cond, char *user, char *authz)
{
    unsigned char *out;
    size_t out_len;
    mp_sasl *s = mp_sasl_new("PLAIN", &tls_only);
    assert_non_null(s);
    enum mp_sasl_status st = mp_sasl_step(s, (const unsigned char *)msg, len, &out, &out_len);
    assert_null(out);
    if (st == MP_SASL_NEED_CREDS) {
        if (user)
            strcpy(user, mp_sasl_username(s));
        if (authz)
            strcpy(authz, mp_sasl_authzid(s) ? mp_sasl_authzid(s) : "(none)");
        st = mp_sasl_set_credentials(s, known ? c : NULL, &out, &out_len);
        assert_null(out);
        if (st == MP_SASL_NEED_DERIVE) {
            /* what a pool thread does, done inline */
            struct mp_sasl_derive *d = mp_sasl_take_derive(s);
            assert_non_null(d);
            assert_null(mp_sasl_take_derive(s));
            mp_sasl_derive_run(d);
            st = mp_sasl_derived(s, d, &out, &out_len);
            assert_null(out);
            mp_sasl_derive_free(d);
        }
    }
    *cond = mp_sasl_condition(s);
    mp_sasl_free(s);
    return st;
}

static void test_plain(void **state)
{
    (void)state;
    const char *cond;
    char user[64], authz[64];
    static const char ok[] = "\0alice\0s3cret pass";
    assert_int_equal(plain(ok, sizeof ok - 1, &alice, 1, &cond, user, authz), MP_SASL_SUCCESS);
    assert_string_equal(user, "alice");
    assert_string_equal(authz, "(none)");
    static const char upper[] = "alice@example.com\0ALICE\0s3cret pass";
    assert_int_equal(plain(upper, sizeof upper - 1, &alice, 1, &cond, user, authz),
                     MP_SASL_SUCCESS);
    assert_string_equal(user, "alice");
    assert_string_equal(authz, "alice@example.com");
    static const char bad[] = "\0alice\0s3cret pas";
    assert_int_equal(plain(bad, sizeof bad - 1, &alice, 1, &cond, NULL, NULL), MP_SASL_FAILURE);
    assert_string_equal(cond, "not-authorized");
    assert_int_equal(plain(ok, sizeof ok - 1, &alice, 0, &cond, NULL, NULL), MP_SASL_FAILURE);
    assert_string_equal(cond, "not-authorized");
    /* malformed */
    static const char one_nul[] = "alice\0s3cret pass";
    assert_int_equal(plain(one_nul, sizeof one_nul - 1, &alice, 1, &cond, NULL, NULL),
                     MP_SASL_FAILURE);
    assert_string_equal(cond, "malformed-request");
    static const char three[] = "\0alice\0s3cret pass\0x";
    assert_int_equal(plain(three, sizeof three - 1, &alice, 1, &cond, NULL, NULL), MP_SASL_FAILURE);
    assert_string_equal(cond, "malformed-request");
    static const char nopw[] = "\0alice\0";
    assert_int_equal(plain(nopw, sizeof nopw - 1, &alice, 1, &cond, NULL, NULL), MP_SASL_FAILURE);
    static const char nouser[] = "\0\0s3cret pass";
    assert_int_equal(plain(nouser, sizeof nouser - 1, &alice, 1, &cond, NULL, NULL),
                     MP_SASL_FAILURE);
    static const char badutf8[] = "\0al\xffice\0s3cret pass";
    assert_int_equal(plain(badutf8, sizeof badutf8 - 1, &alice, 1, &cond, NULL, NULL),
                     MP_SASL_FAILURE);
    static const char badz[] = "\xc0\xaf\0alice\0s3cret pass"; /* overlong authzid */
    assert_int_equal(plain(badz, sizeof badz - 1, &alice, 1, &cond, NULL, NULL), MP_SASL_FAILURE);
    assert_string_equal(cond, "malformed-request");
    static const char at[] = "\0alice@x\0s3cret pass"; /* '@' is not nodeprep-valid */
    assert_int_equal(plain(at, sizeof at - 1, &alice, 1, &cond, NULL, NULL), MP_SASL_FAILURE);
}

/* The split PLAIN API: set_credentials never derives; the derivation is a
 * self-contained job that may outlive the exchange. */
static void test_plain_split(void **state)
{
    (void)state;
    static const char ok[] = "\0alice\0s3cret pass";
    static const char bad[] = "\0alice\0wrong";
    unsigned char *out;
    size_t out_len;

    /* known account, right password */
    mp_sasl *s = mp_sasl_new("PLAIN", &tls_only);
    assert_int_equal(mp_sasl_step(s, (const unsigned char *)ok, sizeof ok - 1, &out, &out_len),
                     MP_SASL_NEED_CREDS);
    assert_int_equal(mp_sasl_set_credentials(s, &alice, &out, &out_len), MP_SASL_NEED_DERIVE);
    assert_null(out);
    /* nothing may be fed meanwhile */
    struct mp_sasl_derive *d = mp_sasl_take_derive(s);
    assert_non_null(d);
    assert_int_equal(mp_sasl_derive_iterations(d), alice.iterations);
    mp_sasl_derive_run(d);
    assert_int_equal(mp_sasl_derived(s, d, &out, &out_len), MP_SASL_SUCCESS);
    assert_false(mp_sasl_bad_credentials(s));
    /* a second completion is refused */
    assert_int_equal(mp_sasl_derived(s, d, &out, &out_len), MP_SASL_FAILURE);
    assert_string_equal(mp_sasl_condition(s), "aborted");
    mp_sasl_derive_free(d);
    mp_sasl_free(s);

    /* wrong password: counted */
    s = mp_sasl_new("PLAIN", &tls_only);
    assert_int_equal(mp_sasl_step(s, (const unsigned char *)bad, sizeof bad - 1, &out, &out_len),
                     MP_SASL_NEED_CREDS);
    assert_int_equal(mp_sasl_set_credentials(s, &alice, &out, &out_len), MP_SASL_NEED_DERIVE);
    d = mp_sasl_take_derive(s);
    mp_sasl_derive_run(d);
    assert_int_equal(mp_sasl_derived(s, d, &out, &out_len), MP_SASL_FAILURE);
    assert_string_equal(mp_sasl_condition(s), "not-authorized");
    assert_true(mp_sasl_bad_credentials(s));
    mp_sasl_derive_free(d);
    mp_sasl_free(s);

    /* unknown account: derives too (same cost), then fails, counted */
    s = mp_sasl_new("PLAIN", &tls_only);
    assert_int_equal(mp_sasl_step(s, (const unsigned char *)ok, sizeof ok - 1, &out, &out_len),
                     MP_SASL_NEED_CREDS);
    assert_int_equal(mp_sasl_set_credentials(s, NULL, &out, &out_len), MP_SASL_NEED_DERIVE);
    d = mp_sasl_take_derive(s);
    assert_int_equal(mp_sasl_derive_iterations(d), alice.iterations);
    mp_sasl_derive_run(d);
    assert_int_equal(mp_sasl_derived(s, d, &out, &out_len), MP_SASL_FAILURE);
    assert_true(mp_sasl_bad_credentials(s));
    mp_sasl_derive_free(d);
    mp_sasl_free(s);

    /* the step in between is refused; the derivation outlives the exchange */
    s = mp_sasl_new("PLAIN", &tls_only);
    assert_int_equal(mp_sasl_step(s, (const unsigned char *)ok, sizeof ok - 1, &out, &out_len),
                     MP_SASL_NEED_CREDS);
    assert_int_equal(mp_sasl_set_credentials(s, &alice, &out, &out_len), MP_SASL_NEED_DERIVE);
    d = mp_sasl_take_derive(s);
    mp_sasl_free(s);
    mp_sasl_derive_run(d); /* still valid: a copy of the work */
    mp_sasl_derive_free(d);

    /* could not run (pool full): temporary failure, not counted */
    s = mp_sasl_new("PLAIN", &tls_only);
    assert_int_equal(mp_sasl_step(s, (const unsigned char *)ok, sizeof ok - 1, &out, &out_len),
                     MP_SASL_NEED_CREDS);
    assert_int_equal(mp_sasl_set_credentials(s, &alice, &out, &out_len), MP_SASL_NEED_DERIVE);
    d = mp_sasl_take_derive(s);
    assert_int_equal(mp_sasl_derived(s, NULL, &out, &out_len), MP_SASL_FAILURE);
    assert_string_equal(mp_sasl_condition(s), "temporary-auth-failure");
    assert_false(mp_sasl_bad_credentials(s));
    mp_sasl_derive_free(d);
    mp_sasl_free(s);

    /* feeding while the derivation is pending aborts; freeing with an
     * untaken derivation releases it */
    s = mp_sasl_new("PLAIN", &tls_only);
    assert_int_equal(mp_sasl_step(s, (const unsigned char *)ok, sizeof ok - 1, &out, &out_len),
                     MP_SASL_NEED_CREDS);
    assert_int_equal(mp_sasl_set_credentials(s, &alice, &out, &out_len), MP_SASL_NEED_DERIVE);
    assert_int_equal(mp_sasl_step(s, (const unsigned char *)"x", 1, &out, &out_len),
                     MP_SASL_FAILURE);
    assert_string_equal(mp_sasl_condition(s), "aborted");
    mp_sasl_free(s);

    /* a username nodeprep refuses: counted (address only in c2s) */
    static const char at[] = "\0alice@x\0s3cret pass";
    s = mp_sasl_new("PLAIN", &tls_only);
    assert_int_equal(mp_sasl_step(s, (const unsigned char *)at, sizeof at - 1, &out, &out_len),
                     MP_SASL_FAILURE);
    assert_true(mp_sasl_bad_credentials(s));
    assert_null(mp_sasl_username(s));
    mp_sasl_free(s);
    /* malformed: not counted */
    static const char one_nul[] = "alice\0s3cret pass";
    s = mp_sasl_new("PLAIN", &tls_only);
    assert_int_equal(
        mp_sasl_step(s, (const unsigned char *)one_nul, sizeof one_nul - 1, &out, &out_len),
        MP_SASL_FAILURE);
    assert_false(mp_sasl_bad_credentials(s));
    mp_sasl_free(s);
}

/* SASLprep: a no-break space in the password maps to a space. */
static void test_saslprep(void **state)
{
    (void)state;
    const char *cond;
    static const char nbsp[] = "\0alice\0s3cret\xc2\xa0pass";
    assert_int_equal(plain(nbsp, sizeof nbsp - 1, &alice, 1, &cond, NULL, NULL), MP_SASL_SUCCESS);
    struct mp_credentials a, b;
    static const unsigned char salt[4] = {1, 2, 3, 4};
    assert_int_equal(mp_credentials_derive_salt(&a, "I\xc2\xadX", salt, 4, 100), MAGPIE_OK);
    assert_int_equal(mp_credentials_derive_salt(&b, "IX", salt, 4, 100), MAGPIE_OK);
    assert_memory_equal(&a.keys, &b.keys, sizeof a.keys);
    assert_int_equal(mp_credentials_derive(&a, "", 100), MAGPIE_ERR);
    assert_int_equal(mp_credentials_derive(&a, "a\x07", 100), MAGPIE_ERR);    /* control char */
    assert_int_equal(mp_credentials_derive(&a, "\xc3\x28", 100), MAGPIE_ERR); /* bad UTF-8 */
}

/* ---- SCRAM details and malformed input ---- */

static void test_scram_names(void **state)
{
    (void)state;
    char *out;
    mp_sasl *s = mp_sasl_new("SCRAM-SHA-1", &no_tls);
    assert_int_equal(step_s(s, "n,a=admin=2Cx@example.com,n=Al=3Dice,r=abc", &out),
                     MP_SASL_NEED_CREDS);
    assert_string_equal(mp_sasl_username(s), "al=ice");
    assert_string_equal(mp_sasl_authzid(s), "admin,x@example.com");
    mp_sasl_free(s);
    /* no initial response: an empty challenge, then the client-first */
    s = mp_sasl_new("SCRAM-SHA-1", &no_tls);
    assert_int_equal(step_s(s, "", &out), MP_SASL_CONTINUE);
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(step_s(s, "n,,n=bob,r=abc,x=ext", &out), MP_SASL_NEED_CREDS);
    assert_string_equal(mp_sasl_username(s), "bob");
    mp_sasl_free(s);
}

static void expect_first_fails(const char *msg, size_t len, const char *cond)
{
    unsigned char *out;
    size_t out_len;
    mp_sasl *s = mp_sasl_new("SCRAM-SHA-256", &no_tls);
    enum mp_sasl_status st = mp_sasl_step(s, (const unsigned char *)msg, len, &out, &out_len);
    if (st != MP_SASL_FAILURE)
        fail_msg("accepted client-first %.*s", (int)len, msg);
    assert_null(out);
    assert_string_equal(mp_sasl_condition(s), cond);
    mp_sasl_free(s);
}

#define FIRST_FAILS(lit, cond) expect_first_fails(lit, sizeof(lit) - 1, cond)

static void test_malformed_first(void **state)
{
    (void)state;
    FIRST_FAILS("n,,r=abc", "malformed-request");  /* no username */
    FIRST_FAILS("n,,n=user", "malformed-request"); /* no nonce */
    FIRST_FAILS("n,,n=user,r=", "malformed-request");
    FIRST_FAILS("n,,n=,r=abc", "malformed-request");
    FIRST_FAILS("x,,n=user,r=abc", "malformed-request"); /* bad gs2 flag */
    FIRST_FAILS("n,n=user,r=abc", "malformed-request");  /* gs2 missing a field */
    FIRST_FAILS("n,", "malformed-request");
    FIRST_FAILS("n", "malformed-request");
    FIRST_FAILS(",,n=user,r=abc", "malformed-request");
    FIRST_FAILS("n,a=,n=user,r=abc", "malformed-request");
    FIRST_FAILS("n,,n=us=2Xer,r=abc", "malformed-request"); /* bad saslname escape */
    FIRST_FAILS("n,,n=user=,r=abc", "malformed-request");
    FIRST_FAILS("n,,m=ext,n=user,r=abc", "malformed-request");
    FIRST_FAILS("n,,n=user,r=abc,", "malformed-request");
    FIRST_FAILS("n,,n=user,r=a\x7f"
                "b",
                "malformed-request");
    FIRST_FAILS("n,,n=user,r=abc,1=x", "malformed-request");
    FIRST_FAILS("n,,n=us\0er,r=abc", "malformed-request"); /* NUL byte */
    FIRST_FAILS("n,,n=user,r=abc\0", "malformed-request");
    FIRST_FAILS("n,a=\xff,n=user,r=abc", "malformed-request"); /* bad UTF-8 authzid */
    FIRST_FAILS("n,,n=user@host,r=abc", "not-authorized");     /* not a valid localpart */
    FIRST_FAILS("n,,n=\xc3\x28,r=abc", "malformed-request");   /* bad UTF-8 */

    /* huge input */
    size_t big = MP_SASL_MAX_INPUT + 1;
    char *msg = malloc(big);
    memset(msg, 'a', big);
    memcpy(msg, "n,,n=user,r=", 12);
    expect_first_fails(msg, big, "malformed-request");
    /* exactly at the limit it is parsed */
    unsigned char *out;
    size_t out_len;
    mp_sasl *s = mp_sasl_new("SCRAM-SHA-256", &no_tls);
    assert_int_equal(mp_sasl_step(s, (unsigned char *)msg, big - 1, &out, &out_len),
                     MP_SASL_NEED_CREDS);
    mp_sasl_free(s);
    free(msg);
}

/* Runs a real exchange up to the server-first, then sends final. */
static enum mp_sasl_status final_with(const char *final_fmt, const char **cond)
{
    char *out, buf[1024];
    mp_sasl *s = mp_sasl_new("SCRAM-SHA-1", &no_tls);
    mp_sasl_test_set_nonce(s, "SRV");
    assert_int_equal(step_s(s, "n,,n=alice,r=CLI", &out), MP_SASL_NEED_CREDS);
    assert_int_equal(creds_s(s, &alice, &out), MP_SASL_CONTINUE);
    free(out);
    snprintf(buf, sizeof buf, final_fmt, "CLISRV");
    enum mp_sasl_status st = step_s(s, buf, &out);
    assert_null(out);
    *cond = mp_sasl_condition(s);
    mp_sasl_free(s);
    return st;
}

static void test_malformed_final(void **state)
{
    (void)state;
    const char *cond;
    static const char *bad[] = {
        "r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=",                        /* no c= */
        "c=biws,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=",                      /* no r= */
        "c=biws,r=%s",                                                /* no proof */
        "c=biws,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=,x=1",             /* proof not last */
        "c=bi ws,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=",                /* bad base64 */
        "c=biws,r=%s,p=AAAA!AAAAAAAAAAAAAAAAAAAAAA=",                 /* bad base64 */
        "c=biws,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* wrong length */
        "c=biws,r=%s,p=AAA",
        "",
        "c=biws,r=%s,,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(final_with(bad[i], &cond), MP_SASL_FAILURE);
        if (strcmp(cond, "malformed-request") != 0)
            fail_msg("case %zu: %s", i, cond);
    }
    /* well-formed but wrong */
    assert_int_equal(final_with("c=biws,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", &cond),
                     MP_SASL_FAILURE);
    assert_string_equal(cond, "not-authorized");
    assert_int_equal(final_with("c=eSws,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", &cond),
                     MP_SASL_FAILURE);
    assert_string_equal(cond, "not-authorized");

    /* NUL in the final message */
    char *out;
    unsigned char *o2;
    size_t ol;
    mp_sasl *s = mp_sasl_new("SCRAM-SHA-1", &no_tls);
    assert_int_equal(step_s(s, "n,,n=alice,r=CLI", &out), MP_SASL_NEED_CREDS);
    assert_int_equal(creds_s(s, &alice, &out), MP_SASL_CONTINUE);
    free(out);
    static const char nul[] = "c=biws,r=x\0,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_int_equal(mp_sasl_step(s, (const unsigned char *)nul, sizeof nul - 1, &o2, &ol),
                     MP_SASL_FAILURE);
    assert_string_equal(mp_sasl_condition(s), "malformed-request");
    mp_sasl_free(s);

    /* out-of-order calls */
    s = mp_sasl_new("SCRAM-SHA-1", &no_tls);
    assert_int_equal(mp_sasl_set_credentials(s, &alice, &o2, &ol), MP_SASL_FAILURE);
    assert_null(o2);
    mp_sasl_free(s);
    s = mp_sasl_new("SCRAM-SHA-1", &no_tls);
    assert_int_equal(step_s(s, "n,,n=alice,r=CLI", &out), MP_SASL_NEED_CREDS);
    assert_int_equal(step_s(s, "n,,n=alice,r=CLI", &out), MP_SASL_FAILURE);
    mp_sasl_free(s);
}

/* ---- base64 and credentials ---- */

static void test_base64(void **state)
{
    (void)state;
    unsigned char *out;
    size_t n;
    for (size_t len = 0; len < 40; len++) {
        unsigned char in[40];
        for (size_t i = 0; i < len; i++)
            in[i] = (unsigned char)(i * 37 + len);
        char *e = mp_base64_encode(in, len);
        assert_int_equal(strlen(e), 4 * ((len + 2) / 3));
        assert_int_equal(mp_base64_decode(e, strlen(e), &out, &n), MAGPIE_OK);
        assert_int_equal(n, len);
        assert_memory_equal(out, in, len);
        assert_int_equal(out[n], 0);
        free(out);
        free(e);
    }
    out = b64d("cGVuY2ls", &n);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "pencil", 6);
    free(out);
    out = b64d("=", &n);
    assert_int_equal(n, 0);
    free(out);
    const char *bad[] = {"cGVuY2l",  "cGVu Y2ls", "cGVuY2l\n", "cG=uY2ls",
                         "cGVuY2=s", "cGVuY===",  "cGVu\0Y2l", "cGVu*2ls"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out = (unsigned char *)"x";
        if (mp_base64_decode(bad[i], 8, &out, &n) != MAGPIE_ERR)
            fail_msg("accepted %s", bad[i]);
        assert_null(out);
    }
    assert_int_equal(mp_base64_decode("c===", 4, &out, &n), MAGPIE_ERR);
}

static void test_credentials_codec(void **state)
{
    (void)state;
    struct mp_credentials c, d;
    assert_int_equal(mp_credentials_derive(&c, "pencil", 4096), MAGPIE_OK);
    assert_int_equal(c.salt_len, 16);
    assert_int_equal(c.iterations, 4096);
    char *s = mp_credentials_encode(&c);
    assert_non_null(s);
    assert_memory_equal(s, "v1 4096 ", 8);
    assert_int_equal(mp_credentials_decode(&d, s, strlen(s)), MAGPIE_OK);
    assert_int_equal(d.iterations, c.iterations);
    assert_int_equal(d.salt_len, c.salt_len);
    assert_memory_equal(d.salt, c.salt, c.salt_len);
    assert_memory_equal(d.keys[0].stored_key, c.keys[0].stored_key, 20);
    assert_memory_equal(d.keys[0].server_key, c.keys[0].server_key, 20);
    assert_memory_equal(d.keys[1].stored_key, c.keys[1].stored_key, 32);
    assert_memory_equal(d.keys[1].server_key, c.keys[1].server_key, 32);
    /* the decoded credentials work for SCRAM-SHA-1 and -256 */
    struct client_result r;
    struct client_opts o = {.mech = "SCRAM-SHA-1",
                            .cb = &no_tls,
                            .gs2 = "n,,",
                            .user = "u",
                            .password = "pencil",
                            .creds = &d};
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_SUCCESS);
    o.mech = "SCRAM-SHA-256";
    run_client(&o, &r);
    assert_int_equal(r.final, MP_SASL_SUCCESS);
    /* two derivations use different salts */
    assert_int_equal(mp_credentials_derive(&d, "pencil", 4096), MAGPIE_OK);
    assert_memory_not_equal(d.salt, c.salt, 16);

    /* truncations and corruptions are refused */
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(mp_credentials_decode(&d, s, i), MAGPIE_ERR);
    char *t = malloc(len + 3);
    snprintf(t, len + 3, "%s x", s);
    assert_int_equal(mp_credentials_decode(&d, t, strlen(t)), MAGPIE_ERR);
    memcpy(t, s, len + 1);
    t[1] = '2';
    assert_int_equal(mp_credentials_decode(&d, t, len), MAGPIE_ERR);
    free(t);
    assert_int_equal(mp_credentials_decode(&d, "v1 0 AAAA", 9), MAGPIE_ERR);
    free(s);
    /* swapped key lengths (sha1 slot with 32 bytes) */
    const char *sw = "v1 10 AAAAAAAAAAAAAAAAAAAAAA== "
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= "
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= "
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAA= AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_int_equal(mp_credentials_decode(&d, sw, strlen(sw)), MAGPIE_ERR);
    const char *ok = "v1 10 AAAAAAAAAAAAAAAAAAAAAA== "
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAA= AAAAAAAAAAAAAAAAAAAAAAAAAAA= "
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= "
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_int_equal(mp_credentials_decode(&d, ok, strlen(ok)), MAGPIE_OK);
    assert_int_equal(d.iterations, 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc5802_vector),
        cmocka_unit_test(test_rfc7677_vector),
        cmocka_unit_test(test_client_success_all_mechs),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_unknown_user),
        cmocka_unit_test(test_channel_binding),
        cmocka_unit_test(test_downgrade_y_flag),
        cmocka_unit_test(test_mechanisms),
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_plain_split),
        cmocka_unit_test(test_saslprep),
        cmocka_unit_test(test_scram_names),
        cmocka_unit_test(test_malformed_first),
        cmocka_unit_test(test_malformed_final),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_credentials_codec),
    };
    return cmocka_run_group_tests(tests, setup_alice, NULL);
}
