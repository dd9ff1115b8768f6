/* scram.c - the crypto under SASL: SCRAM key derivation (RFC 5802),
 * stored credentials and their text encoding, base64, SASLprep/nodeprep. */
#include "base/base.h"
#include "auth/sasl.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

#define MAX_ITERATIONS 10000000u

static const EVP_MD *hash_md(enum mp_hash h)
{
    return h == MP_HASH_SHA1 ? EVP_sha1() : EVP_sha256();
}

size_t mp_scram_digest_len(enum mp_hash h)
{
    return h == MP_HASH_SHA1 ? 20 : 32;
}

void mp_scram_hmac(enum mp_hash h, const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char *out)
{
    unsigned int olen = 0;
    if (!HMAC(hash_md(h), key, (int)key_len, data, len, out, &olen)) {
        fprintf(stderr, "magpie: HMAC failed\n");
        abort();
    }
}

void mp_scram_hash(enum mp_hash h, const void *data, size_t len, unsigned char *out)
{
    unsigned int olen = 0;
    if (EVP_Digest(data, len, out, &olen, hash_md(h), NULL) != 1) {
        fprintf(stderr, "magpie: EVP_Digest failed\n");
        abort();
    }
}

/* ---- string preparation ---- */

/* Strict UTF-8 check: no overlongs, surrogates or code points > U+10FFFF. */
int mp_sasl_utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i <= n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* Runs a libidn stringprep profile; returns a malloc'd string or NULL. */
static char *prep(const char *in, const char *profile, int flags, size_t max)
{
    char *out = NULL;
    size_t len = strlen(in);
    if (len == 0 || len > max || !mp_sasl_utf8_valid((const unsigned char *)in, len))
        return NULL;
    if (stringprep_profile(in, &out, profile, (Stringprep_profile_flags)flags) != STRINGPREP_OK) {
        free(out);
        return NULL;
    }
    size_t olen = strlen(out);
    if (olen == 0 || olen > max) {
        free(out);
        return NULL;
    }
    return out;
}

char *mp_sasl_nodeprep(const char *in)
{
    return prep(in, "Nodeprep", 0, 1023);
}

char *mp_sasl_saslprep(const char *in, int stored)
{
    return prep(in, "SASLprep", stored ? STRINGPREP_NO_UNASSIGNED : 0, 1023);
}

/* ---- credentials ---- */

int mp_scram_derive_key(enum mp_hash h, const char *password, const unsigned char *salt,
                        size_t salt_len, unsigned iterations, struct mp_scram_key *k)
{
    unsigned char salted[32], client_key[32];
    size_t dl = mp_scram_digest_len(h);
    if (iterations == 0 || iterations > MAX_ITERATIONS)
        return MAGPIE_ERR;
    if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, (int)iterations,
                          hash_md(h), (int)dl, salted) != 1)
        return MAGPIE_ERR;
    memset(k, 0, sizeof *k);
    mp_scram_hmac(h, salted, dl, "Client Key", 10, client_key);
    mp_scram_hash(h, client_key, dl, k->stored_key);
    mp_scram_hmac(h, salted, dl, "Server Key", 10, k->server_key);
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return MAGPIE_OK;
}

/* Derives the keys of every hash from one salt. The password is SASLprep'd
 * as a stored string. */
int mp_credentials_derive_salt(struct mp_credentials *c, const char *password,
                               const unsigned char *salt, size_t salt_len, unsigned iterations)
{
    if (salt_len == 0 || salt_len > sizeof c->salt || !password)
        return MAGPIE_ERR;
    char *pw = mp_sasl_saslprep(password, 1);
    if (!pw)
        return MAGPIE_ERR;
    memset(c, 0, sizeof *c);
    memcpy(c->salt, salt, salt_len);
    c->salt_len = salt_len;
    c->iterations = iterations;
    int rc = MAGPIE_OK;
    for (int h = 0; h < MP_HASH_COUNT && rc == MAGPIE_OK; h++)
        rc = mp_scram_derive_key((enum mp_hash)h, pw, salt, salt_len, iterations, &c->keys[h]);
    OPENSSL_cleanse(pw, strlen(pw));
    free(pw);
    if (rc != MAGPIE_OK)
        OPENSSL_cleanse(c, sizeof *c);
    return rc;
}

int mp_credentials_derive(struct mp_credentials *c, const char *password, unsigned iterations)
{
    unsigned char salt[16];
    mp_random_bytes(salt, sizeof salt);
    return mp_credentials_derive_salt(c, password, salt, sizeof salt, iterations);
}

/* Returns a malloc'd "v1 <iter> <salt> <sk1> <svk1> <sk256> <svk256>". */
char *mp_credentials_encode(const struct mp_credentials *c)
{
    if (c->salt_len == 0 || c->salt_len > sizeof c->salt)
        return NULL;
    char *parts[5];
    parts[0] = mp_base64_encode(c->salt, c->salt_len);
    for (int h = 0; h < MP_HASH_COUNT; h++) {
        size_t dl = mp_scram_digest_len((enum mp_hash)h);
        parts[1 + 2 * h] = mp_base64_encode(c->keys[h].stored_key, dl);
        parts[2 + 2 * h] = mp_base64_encode(c->keys[h].server_key, dl);
    }
    size_t n = 16;
    for (int i = 0; i < 5; i++)
        n += strlen(parts[i]) + 1;
    char *s = mp_malloc(n);
    snprintf(s, n, "v1 %u %s %s %s %s %s", c->iterations, parts[0], parts[1], parts[2], parts[3],
             parts[4]);
    for (int i = 0; i < 5; i++)
        free(parts[i]);
    return s;
}

/* Decodes one space-separated base64 field of exactly want bytes (or
 * 1..want bytes if !exact) into dst; advances *p. */
static int decode_field(const char **p, const char *end, unsigned char *dst, size_t want, int exact,
                        size_t *got)
{
    const char *s = *p;
    if (s >= end || *s != ' ')
        return MAGPIE_ERR;
    s++;
    const char *e = memchr(s, ' ', (size_t)(end - s));
    if (!e)
        e = end;
    unsigned char *buf;
    size_t len;
    if (mp_base64_decode(s, (size_t)(e - s), &buf, &len) != MAGPIE_OK)
        return MAGPIE_ERR;
    int ok = exact ? len == want : (len >= 1 && len <= want);
    if (ok)
        memcpy(dst, buf, len);
    free(buf);
    if (!ok)
        return MAGPIE_ERR;
    if (got)
        *got = len;
    *p = e;
    return MAGPIE_OK;
}

int mp_credentials_decode(struct mp_credentials *c, const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    struct mp_credentials tmp;
    memset(&tmp, 0, sizeof tmp);
    if (len < 4 || memcmp(p, "v1 ", 3) != 0)
        return MAGPIE_ERR;
    p += 3;
    unsigned long it = 0;
    const char *d = p;
    while (p < end && *p >= '0' && *p <= '9' && p - d < 9)
        it = it * 10 + (unsigned long)(*p++ - '0');
    if (p == d || it == 0 || it > MAX_ITERATIONS)
        return MAGPIE_ERR;
    tmp.iterations = (unsigned)it;
    if (decode_field(&p, end, tmp.salt, sizeof tmp.salt, 0, &tmp.salt_len) != MAGPIE_OK)
        return MAGPIE_ERR;
    for (int h = 0; h < MP_HASH_COUNT; h++) {
        size_t dl = mp_scram_digest_len((enum mp_hash)h);
        if (decode_field(&p, end, tmp.keys[h].stored_key, dl, 1, NULL) != MAGPIE_OK ||
            decode_field(&p, end, tmp.keys[h].server_key, dl, 1, NULL) != MAGPIE_OK)
            return MAGPIE_ERR;
    }
    if (p != end)
        return MAGPIE_ERR;
    *c = tmp;
    OPENSSL_cleanse(&tmp, sizeof tmp);
    return MAGPIE_OK;
}

/* ---- base64 ---- */

char *mp_base64_encode(const unsigned char *in, size_t len)
{
    size_t n = 4 * ((len + 2) / 3) + 1;
    char *out = mp_malloc(n);
    if (len == 0) {
        out[0] = '\0';
        return out;
    }
    if (len > (size_t)0x3fffffff)
        abort();
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

static int b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Strict decoding: length a multiple of 4, only alphabet characters, at
 * most two '=' and only at the end. */
int mp_base64_decode(const char *in, size_t len, unsigned char **out, size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)in;
    *out = NULL;
    *out_len = 0;
    if (len == 1 && s[0] == '=') {
        *out = mp_malloc(1);
        (*out)[0] = 0;
        return MAGPIE_OK;
    }
    if (len % 4 != 0 || len > (size_t)0x3fffffff)
        return MAGPIE_ERR;
    size_t pad = 0;
    if (len > 0 && s[len - 1] == '=')
        pad++;
    if (len > 1 && s[len - 2] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++)
        if (!b64_char(s[i]))
            return MAGPIE_ERR;
    unsigned char *buf = mp_malloc(len / 4 * 3 + 1);
    size_t n = 0;
    if (len > 0) {
        int r = EVP_DecodeBlock(buf, s, (int)len);
        if (r < 0 || (size_t)r < pad) {
            free(buf);
            return MAGPIE_ERR;
        }
        n = (size_t)r - pad;
    }
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return MAGPIE_OK;
}
