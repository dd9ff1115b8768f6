/* sasl.c - server side SASL exchanges: SCRAM-SHA-1/256 with and without
 * channel binding (RFC 5802, RFC 7677, RFC 9266, RFC 5929) and PLAIN
 * (RFC 4616). Pure state machine: the stream code feeds decoded client
 * messages, looks up credentials when asked, runs key derivations where it
 * likes (a thread pool, or inline in tests) and sends what comes out. */
#include "base/base.h"
#include "auth/sasl.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_START, ST_NEED_CREDS, ST_NEED_DERIVE, ST_FINAL, ST_DONE };

static const struct mech {
    const char *name;
    int plain;
    enum mp_hash hash;
    int plus;
} mechs[] = {
    {"SCRAM-SHA-256-PLUS", 0, MP_HASH_SHA256, 1},
    {"SCRAM-SHA-1-PLUS", 0, MP_HASH_SHA1, 1},
    {"SCRAM-SHA-256", 0, MP_HASH_SHA256, 0},
    {"SCRAM-SHA-1", 0, MP_HASH_SHA1, 0},
    {"PLAIN", 1, MP_HASH_SHA256, 0},
};
#define NMECHS (sizeof mechs / sizeof mechs[0])

struct mp_sasl {
    const struct mech *mech;
    int state;
    int empty_seen; /* an empty first message got an empty challenge */
    struct mp_sasl_cb cb;
    const char *condition;
    char *username;   /* nodeprep'd */
    char *authzid;    /* NULL if none */
    char *password;   /* PLAIN only, until credentials arrive */
    char *gs2_header; /* "n,," / "y,," / "p=...,a=...," */
    size_t gs2_len;
    const unsigned char *cbdata; /* points into cb; NULL unless p= */
    size_t cbdata_len;
    char *client_first_bare;
    char *server_first;
    char *nonce; /* client nonce + server nonce */
    char *test_nonce;
    int known;     /* real credentials were supplied */
    int bad_creds; /* the last failure is a wrong password/unknown account */
    struct mp_scram_key key;
    struct mp_sasl_derive *derive; /* PLAIN: pending, until taken */
};

/* A key derivation, self-contained so that it can run on another thread
 * while (or after) the exchange goes away. */
struct mp_sasl_derive {
    enum mp_hash hash;
    unsigned iterations;
    size_t salt_len;
    unsigned char salt[16];
    char *password; /* SASLprep'd */
    int rc;         /* MAGPIE_OK once derived; MAGPIE_ERR before or on error */
    struct mp_scram_key key;
};

/* ---- fake credentials for unknown users ---- */

static unsigned char fake_secret[32];
static pthread_once_t fake_once = PTHREAD_ONCE_INIT;
/* Iterations of the last real account seen, so fakes look like real ones. */
static atomic_uint fake_iterations = MP_SCRAM_DEFAULT_ITERATIONS;

static void fake_init(void)
{
    mp_random_bytes(fake_secret, sizeof fake_secret);
}

/* Fills c with deterministic salt/iterations for username and random keys. */
static void fake_credentials(const char *username, struct mp_credentials *c)
{
    unsigned char mac[32];
    pthread_once(&fake_once, fake_init);
    mp_scram_hmac(MP_HASH_SHA256, fake_secret, sizeof fake_secret, username, strlen(username), mac);
    memset(c, 0, sizeof *c);
    memcpy(c->salt, mac, 16);
    c->salt_len = 16;
    c->iterations = atomic_load(&fake_iterations);
    for (int h = 0; h < MP_HASH_COUNT; h++) {
        mp_random_bytes(c->keys[h].stored_key, sizeof c->keys[h].stored_key);
        mp_random_bytes(c->keys[h].server_key, sizeof c->keys[h].server_key);
    }
}

/* ---- mechanisms and lifecycle ---- */

static int mech_offered(const struct mech *m, const struct mp_sasl_cb *cb)
{
    if (m->plain)
        return cb->tls;
    if (m->plus)
        return cb->tls && (cb->has_exporter || cb->endpoint_len > 0);
    return 1;
}

static int cb_available(const struct mp_sasl_cb *cb)
{
    return cb->tls && (cb->has_exporter || cb->endpoint_len > 0);
}

int mp_sasl_mechanisms(const struct mp_sasl_cb *cb, const char **names, int max)
{
    struct mp_sasl_cb none;
    int n = 0;
    if (!cb) {
        memset(&none, 0, sizeof none);
        cb = &none;
    }
    for (size_t i = 0; i < NMECHS && n < max - 1; i++)
        if (mech_offered(&mechs[i], cb))
            names[n++] = mechs[i].name;
    if (max > 0)
        names[n] = NULL;
    return n;
}

int mp_sasl_channel_bindings(const struct mp_sasl_cb *cb, const char **names, int max)
{
    int n = 0;
    if (cb && cb->tls && cb->has_exporter && n < max - 1)
        names[n++] = "tls-exporter";
    if (cb && cb->tls && cb->endpoint_len > 0 && n < max - 1)
        names[n++] = "tls-server-end-point";
    if (max > 0)
        names[n] = NULL;
    return n;
}

/* Returns a new exchange the caller frees with mp_sasl_free, or NULL if
 * mech is not offered with this channel binding data. */
mp_sasl *mp_sasl_new(const char *mech, const struct mp_sasl_cb *cb)
{
    struct mp_sasl_cb none;
    if (!cb) {
        memset(&none, 0, sizeof none);
        cb = &none;
    }
    if (!mech)
        return NULL;
    for (size_t i = 0; i < NMECHS; i++) {
        if (strcmp(mech, mechs[i].name) != 0 || !mech_offered(&mechs[i], cb))
            continue;
        mp_sasl *s = mp_calloc(1, sizeof *s);
        s->mech = &mechs[i];
        s->cb = *cb;
        s->condition = "not-authorized";
        return s;
    }
    return NULL;
}

static void wipe_str(char **p)
{
    if (*p) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

void mp_sasl_free(mp_sasl *s)
{
    if (!s)
        return;
    free(s->username);
    free(s->authzid);
    wipe_str(&s->password);
    free(s->gs2_header);
    free(s->client_first_bare);
    free(s->server_first);
    free(s->nonce);
    free(s->test_nonce);
    mp_sasl_derive_free(s->derive);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
}

void mp_sasl_test_set_nonce(mp_sasl *s, const char *server_nonce)
{
    free(s->test_nonce);
    s->test_nonce = server_nonce ? mp_strdup(server_nonce) : NULL;
}

const char *mp_sasl_username(const mp_sasl *s)
{
    return s->username;
}

const char *mp_sasl_authzid(const mp_sasl *s)
{
    return s->authzid;
}

const char *mp_sasl_condition(const mp_sasl *s)
{
    return s->condition;
}

int mp_sasl_bad_credentials(const mp_sasl *s)
{
    return s->bad_creds;
}

/* Ends the exchange with condition; not counted by login throttling. */
static enum mp_sasl_status fail(mp_sasl *s, const char *condition)
{
    s->state = ST_DONE;
    s->condition = condition;
    s->bad_creds = 0;
    wipe_str(&s->password);
    return MP_SASL_FAILURE;
}

/* Ends the exchange with not-authorized for wrong credentials (password,
 * account or username): counted by login throttling. */
static enum mp_sasl_status fail_creds(mp_sasl *s)
{
    fail(s, "not-authorized");
    s->bad_creds = 1;
    return MP_SASL_FAILURE;
}

static void set_out(unsigned char **out, size_t *out_len, char *msg)
{
    *out = (unsigned char *)msg;
    *out_len = msg ? strlen(msg) : 0;
}

/* ---- SCRAM parsing helpers ---- */

/* Decodes a saslname (RFC 5802: "=2C" is ',', "=3D" is '=') of len bytes;
 * returns a malloc'd string or NULL on bad syntax or bad UTF-8. */
static char *saslname_decode(const char *in, size_t len)
{
    char *out = mp_malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '=') {
            if (len - i >= 3 && in[i + 1] == '2' && in[i + 2] == 'C')
                out[n++] = ',';
            else if (len - i >= 3 && in[i + 1] == '3' && in[i + 2] == 'D')
                out[n++] = '=';
            else
                goto bad;
            i += 2;
        } else if (in[i] == ',' || in[i] == '\0') {
            goto bad;
        } else {
            out[n++] = in[i];
        }
    }
    out[n] = '\0';
    if (!mp_sasl_utf8_valid((const unsigned char *)out, n))
        goto bad;
    return out;
bad:
    free(out);
    return NULL;
}

static int nonce_valid(const char *p, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
            return 0;
    return 1;
}

/* A cursor over comma-separated fields of [p, end). */
struct fields {
    const char *p, *end;
    int done;
};

/* Splits off the next field into f, flen and moves past its comma.
 * Returns 0 when no field is left (after the last one). */
static int next_field(struct fields *fs, const char **f, size_t *flen)
{
    if (fs->done)
        return 0;
    const char *c = memchr(fs->p, ',', (size_t)(fs->end - fs->p));
    *f = fs->p;
    if (c) {
        *flen = (size_t)(c - fs->p);
        fs->p = c + 1;
    } else {
        *flen = (size_t)(fs->end - fs->p);
        fs->p = fs->end;
        fs->done = 1;
    }
    return 1;
}

static int is_attr(const char *f, size_t flen, char name)
{
    return flen >= 2 && f[0] == name && f[1] == '=';
}

/* Parses client-first-message (RFC 5802 §7). Returns MP_SASL_NEED_CREDS or
 * a failure. */
static enum mp_sasl_status scram_client_first(mp_sasl *s, const char *in, size_t len)
{
    struct fields fs = {in, in + len, 0};
    const char *f;
    size_t flen;
    int has_cb = cb_available(&s->cb);

    /* gs2-cbind-flag */
    if (!next_field(&fs, &f, &flen) || flen == 0)
        return fail(s, "malformed-request");
    if (flen == 1 && f[0] == 'n') {
        if (s->mech->plus)
            return fail(s, "not-authorized");
    } else if (flen == 1 && f[0] == 'y') {
        /* The client could bind but thinks we can't: we advertise -PLUS
         * whenever we can, so this may be a downgrade (RFC 5802 §6); see
         * strict_downgrade in sasl.h for why that check is optional. */
        if (s->mech->plus || (has_cb && s->cb.strict_downgrade))
            return fail(s, "not-authorized");
    } else if (is_attr(f, flen, 'p')) {
        const char *name = f + 2;
        size_t nlen = flen - 2;
        if (!s->mech->plus)
            return fail(s, "not-authorized");
        if (nlen == 12 && memcmp(name, "tls-exporter", 12) == 0 && s->cb.has_exporter) {
            s->cbdata = s->cb.exporter;
            s->cbdata_len = sizeof s->cb.exporter;
        } else if (nlen == 20 && memcmp(name, "tls-server-end-point", 20) == 0 &&
                   s->cb.endpoint_len > 0 && s->cb.endpoint_len <= sizeof s->cb.endpoint) {
            s->cbdata = s->cb.endpoint;
            s->cbdata_len = s->cb.endpoint_len;
        } else {
            return fail(s, "not-authorized");
        }
    } else {
        return fail(s, "malformed-request");
    }

    /* [ authzid ] */
    if (!next_field(&fs, &f, &flen) || fs.done)
        return fail(s, "malformed-request");
    if (flen > 0) {
        if (!is_attr(f, flen, 'a') || flen == 2)
            return fail(s, "malformed-request");
        s->authzid = saslname_decode(f + 2, flen - 2);
        if (!s->authzid)
            return fail(s, "malformed-request");
    }
    s->gs2_len = (size_t)(fs.p - in);
    s->gs2_header = mp_memdup0(in, s->gs2_len);

    /* client-first-message-bare: [reserved-mext ","] username "," nonce ["," extensions] */
    const char *bare = fs.p;
    if (!next_field(&fs, &f, &flen))
        return fail(s, "malformed-request");
    if (is_attr(f, flen, 'm'))
        return fail(s, "malformed-request"); /* no mandatory extensions known */
    if (!is_attr(f, flen, 'n') || flen == 2)
        return fail(s, "malformed-request");
    char *user = saslname_decode(f + 2, flen - 2);
    if (!user)
        return fail(s, "malformed-request");
    if (!next_field(&fs, &f, &flen) || !is_attr(f, flen, 'r') || !nonce_valid(f + 2, flen - 2)) {
        free(user);
        return fail(s, "malformed-request");
    }
    const char *cnonce = f + 2;
    size_t cnonce_len = flen - 2;
    while (next_field(&fs, &f, &flen)) { /* optional extensions */
        if (flen < 2 || f[1] != '=' ||
            !((f[0] >= 'a' && f[0] <= 'z') || (f[0] >= 'A' && f[0] <= 'Z'))) {
            free(user);
            return fail(s, "malformed-request");
        }
    }
    s->username = mp_sasl_nodeprep(user);
    free(user);
    if (!s->username)
        return fail_creds(s);
    size_t blen = (size_t)(fs.end - bare);
    s->client_first_bare = mp_memdup0(bare, blen);
    s->nonce = mp_memdup0(cnonce, cnonce_len);
    s->state = ST_NEED_CREDS;
    return MP_SASL_NEED_CREDS;
}

/* Builds server-first-message from the credentials (or fakes). */
static enum mp_sasl_status scram_server_first(mp_sasl *s, const struct mp_credentials *c,
                                              unsigned char **out, size_t *out_len)
{
    char *snonce;
    if (s->test_nonce) {
        snonce = mp_strdup(s->test_nonce);
    } else {
        unsigned char raw[18];
        mp_random_bytes(raw, sizeof raw);
        snonce = mp_base64_encode(raw, sizeof raw);
    }
    size_t nlen = strlen(s->nonce) + strlen(snonce) + 1;
    char *nonce = mp_malloc(nlen);
    snprintf(nonce, nlen, "%s%s", s->nonce, snonce);
    free(snonce);
    free(s->nonce);
    s->nonce = nonce;

    char *salt = mp_base64_encode(c->salt, c->salt_len);
    size_t mlen = strlen(nonce) + strlen(salt) + 32;
    s->server_first = mp_malloc(mlen);
    snprintf(s->server_first, mlen, "r=%s,s=%s,i=%u", nonce, salt, c->iterations);
    free(salt);
    s->key = c->keys[s->mech->hash];
    s->state = ST_FINAL;
    set_out(out, out_len, mp_strdup(s->server_first));
    return MP_SASL_CONTINUE;
}

/* Checks client-final-message (RFC 5802 §7) and answers server-final. */
static enum mp_sasl_status scram_client_final(mp_sasl *s, const char *in, size_t len,
                                              unsigned char **out, size_t *out_len)
{
    struct fields fs = {in, in + len, 0};
    const char *f, *c_val, *r_val, *proof_val = NULL;
    size_t flen, c_len, r_len, proof_len = 0, without_proof_len = 0;
    enum mp_hash h = s->mech->hash;
    size_t dl = mp_scram_digest_len(h);

    if (!next_field(&fs, &f, &flen) || !is_attr(f, flen, 'c'))
        return fail(s, "malformed-request");
    c_val = f + 2;
    c_len = flen - 2;
    if (!next_field(&fs, &f, &flen) || !is_attr(f, flen, 'r'))
        return fail(s, "malformed-request");
    r_val = f + 2;
    r_len = flen - 2;
    while (next_field(&fs, &f, &flen)) {
        if (proof_val) /* proof must be last */
            return fail(s, "malformed-request");
        if (is_attr(f, flen, 'p')) {
            proof_val = f + 2;
            proof_len = flen - 2;
            without_proof_len = (size_t)(f - 1 - in);
        } else if (flen < 2 || f[1] != '=' ||
                   !((f[0] >= 'a' && f[0] <= 'z') || (f[0] >= 'A' && f[0] <= 'Z'))) {
            return fail(s, "malformed-request");
        }
    }
    if (!proof_val)
        return fail(s, "malformed-request");

    unsigned char *cbind = NULL, *proof = NULL;
    size_t cbind_len = 0, plen = 0;
    if (mp_base64_decode(c_val, c_len, &cbind, &cbind_len) != MAGPIE_OK)
        return fail(s, "malformed-request");
    if (mp_base64_decode(proof_val, proof_len, &proof, &plen) != MAGPIE_OK || plen != dl) {
        free(cbind);
        free(proof);
        return fail(s, "malformed-request");
    }

    /* channel binding: gs2 header followed by the binding data for p= */
    int cb_ok =
        cbind_len == s->gs2_len + s->cbdata_len &&
        CRYPTO_memcmp(cbind, s->gs2_header, s->gs2_len) == 0 &&
        (s->cbdata_len == 0 || CRYPTO_memcmp(cbind + s->gs2_len, s->cbdata, s->cbdata_len) == 0);
    free(cbind);
    int nonce_ok = r_len == strlen(s->nonce) && memcmp(r_val, s->nonce, r_len) == 0;

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    size_t cfb = strlen(s->client_first_bare), sf = strlen(s->server_first);
    size_t alen = cfb + 1 + sf + 1 + without_proof_len;
    char *auth = mp_malloc(alen + 1);
    memcpy(auth, s->client_first_bare, cfb);
    auth[cfb] = ',';
    memcpy(auth + cfb + 1, s->server_first, sf);
    auth[cfb + 1 + sf] = ',';
    memcpy(auth + cfb + 2 + sf, in, without_proof_len);
    auth[alen] = '\0';

    unsigned char sig[32], client_key[32], stored[32];
    mp_scram_hmac(h, s->key.stored_key, dl, auth, alen, sig);
    for (size_t i = 0; i < dl; i++)
        client_key[i] = proof[i] ^ sig[i];
    mp_scram_hash(h, client_key, dl, stored);
    int proof_ok = CRYPTO_memcmp(stored, s->key.stored_key, dl) == 0;
    OPENSSL_cleanse(client_key, sizeof client_key);
    free(proof);

    if (!cb_ok || !nonce_ok || !proof_ok || !s->known) {
        free(auth);
        /* a channel-binding mismatch (or a stale nonce) is answered the
         * same but says nothing about the password: not counted */
        return cb_ok && nonce_ok ? fail_creds(s) : fail(s, "not-authorized");
    }
    unsigned char server_sig[32];
    mp_scram_hmac(h, s->key.server_key, dl, auth, alen, server_sig);
    free(auth);
    char *b64 = mp_base64_encode(server_sig, dl);
    size_t vlen = strlen(b64) + 3;
    char *v = mp_malloc(vlen);
    snprintf(v, vlen, "v=%s", b64);
    free(b64);
    s->state = ST_DONE;
    set_out(out, out_len, v);
    return MP_SASL_SUCCESS;
}

/* ---- PLAIN ---- */

/* Parses authzid NUL authcid NUL passwd (RFC 4616). */
static enum mp_sasl_status plain_parse(mp_sasl *s, const unsigned char *in, size_t len)
{
    if (len == 0)
        return fail(s, "malformed-request");
    const unsigned char *z1 = memchr(in, 0, len);
    if (!z1)
        return fail(s, "malformed-request");
    const unsigned char *a = z1 + 1;
    const unsigned char *z2 = memchr(a, 0, len - (size_t)(a - in));
    if (!z2)
        return fail(s, "malformed-request");
    const unsigned char *pw = z2 + 1;
    size_t zlen = (size_t)(z1 - in), alen = (size_t)(z2 - a), plen = len - (size_t)(pw - in);
    if (memchr(pw, 0, plen) || alen == 0 || plen == 0 || zlen > 1023 || alen > 1023 || plen > 1023)
        return fail(s, "malformed-request");
    char *user = mp_memdup0(a, alen);
    s->username = mp_sasl_nodeprep(user);
    free(user);
    if (!s->username)
        return fail_creds(s);
    if (zlen > 0) {
        if (!mp_sasl_utf8_valid(in, zlen))
            return fail(s, "malformed-request");
        s->authzid = mp_memdup0(in, zlen);
    }
    s->password = mp_memdup0(pw, plen);
    s->state = ST_NEED_CREDS;
    return MP_SASL_NEED_CREDS;
}

/* Prepares the PLAIN check against c: StoredKey (SHA-256) must be derived
 * from the password with c's salt and iterations, which is left to the
 * caller (mp_sasl_take_derive). */
static enum mp_sasl_status plain_prepare(mp_sasl *s, const struct mp_credentials *c)
{
    char *pw = mp_sasl_saslprep(s->password, 0);
    wipe_str(&s->password);
    if (!pw)
        return fail_creds(s); /* no stored password can match */
    struct mp_sasl_derive *d = mp_calloc(1, sizeof *d);
    d->hash = MP_HASH_SHA256;
    d->iterations = c->iterations;
    d->salt_len = c->salt_len;
    memcpy(d->salt, c->salt, c->salt_len);
    d->password = pw;
    d->rc = MAGPIE_ERR;
    s->key = c->keys[MP_HASH_SHA256];
    s->derive = d;
    s->state = ST_NEED_DERIVE;
    return MP_SASL_NEED_DERIVE;
}

struct mp_sasl_derive *mp_sasl_take_derive(mp_sasl *s)
{
    struct mp_sasl_derive *d = s->derive;
    s->derive = NULL;
    return d;
}

void mp_sasl_derive_run(struct mp_sasl_derive *d)
{
    d->rc = mp_scram_derive_key(d->hash, d->password, d->salt, d->salt_len, d->iterations, &d->key);
}

unsigned mp_sasl_derive_iterations(const struct mp_sasl_derive *d)
{
    return d->iterations;
}

void mp_sasl_derive_free(struct mp_sasl_derive *d)
{
    if (!d)
        return;
    wipe_str(&d->password);
    OPENSSL_cleanse(d, sizeof *d);
    free(d);
}

/* Compares the derived StoredKey with the account's (constant time). */
enum mp_sasl_status mp_sasl_derived(mp_sasl *s, const struct mp_sasl_derive *d, unsigned char **out,
                                    size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (s->state != ST_NEED_DERIVE || s->derive)
        return fail(s, "aborted");
    if (!d)
        return fail(s, "temporary-auth-failure");
    size_t dl = mp_scram_digest_len(d->hash);
    int ok = d->rc == MAGPIE_OK && d->hash == MP_HASH_SHA256 &&
             CRYPTO_memcmp(d->key.stored_key, s->key.stored_key, dl) == 0;
    OPENSSL_cleanse(&s->key, sizeof s->key);
    if (!ok || !s->known)
        return fail_creds(s);
    s->state = ST_DONE;
    return MP_SASL_SUCCESS;
}

/* ---- entry points ---- */

enum mp_sasl_status mp_sasl_step(mp_sasl *s, const unsigned char *in, size_t in_len,
                                 unsigned char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (s->state == ST_DONE || s->state == ST_NEED_CREDS || s->state == ST_NEED_DERIVE)
        return fail(s, "aborted");
    if (in_len > MP_SASL_MAX_INPUT || (in_len > 0 && !in))
        return fail(s, "malformed-request");
    if (in_len == 0 && s->state == ST_START && !s->empty_seen) {
        /* no initial response: ask for it with an empty challenge */
        s->empty_seen = 1;
        set_out(out, out_len, mp_strdup(""));
        return MP_SASL_CONTINUE;
    }
    if (s->mech->plain)
        return plain_parse(s, in, in_len);
    if (in_len == 0 || memchr(in, 0, in_len))
        return fail(s, "malformed-request");
    if (s->state == ST_START)
        return scram_client_first(s, (const char *)in, in_len);
    return scram_client_final(s, (const char *)in, in_len, out, out_len);
}

enum mp_sasl_status mp_sasl_set_credentials(mp_sasl *s, const struct mp_credentials *c,
                                            unsigned char **out, size_t *out_len)
{
    struct mp_credentials fake;
    *out = NULL;
    *out_len = 0;
    if (s->state != ST_NEED_CREDS)
        return fail(s, "aborted");
    s->known = c && c->salt_len > 0 && c->salt_len <= sizeof c->salt && c->iterations > 0;
    if (s->known) {
        atomic_store(&fake_iterations, c->iterations);
    } else {
        fake_credentials(s->username, &fake);
        c = &fake;
    }
    enum mp_sasl_status st =
        s->mech->plain ? plain_prepare(s, c) : scram_server_first(s, c, out, out_len);
    if (c == &fake)
        OPENSSL_cleanse(&fake, sizeof fake);
    return st;
}
