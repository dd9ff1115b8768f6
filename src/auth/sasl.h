/* sasl.h - server side SASL: SCRAM-SHA-1(-PLUS), SCRAM-SHA-256(-PLUS),
 * PLAIN (core-internal).
 *
 * Credentials are never stored in clear: an account keeps, per hash, the
 * SCRAM salted keys (RFC 5802): salt, iteration count, StoredKey, ServerKey.
 * PLAIN is verified by deriving StoredKey from the given password. */
#ifndef MAGPIE_SASL_H
#define MAGPIE_SASL_H

#include <stddef.h>

enum mp_hash { MP_HASH_SHA1 = 0, MP_HASH_SHA256 = 1, MP_HASH_COUNT };

struct mp_scram_key {
    unsigned char stored_key[32]; /* first digest-length bytes used */
    unsigned char server_key[32];
};

struct mp_credentials {
    unsigned char salt[16];
    size_t salt_len;
    unsigned iterations;
    struct mp_scram_key keys[MP_HASH_COUNT];
};

/* Derives fresh credentials (random salt) from a password (UTF-8; SASLprep
 * applied). Returns MAGPIE_OK or MAGPIE_ERR (invalid password). */
int mp_credentials_derive(struct mp_credentials *c, const char *password, unsigned iterations);
/* Fixed-size text encoding for storage: "v1 <iter> <b64 salt> <b64 sk1>
 * <b64 svk1> <b64 sk256> <b64 svk256>". Encode returns a malloc'd string;
 * decode returns MAGPIE_OK or MAGPIE_ERR. */
char *mp_credentials_encode(const struct mp_credentials *c);
int mp_credentials_decode(struct mp_credentials *c, const char *s, size_t len);

/* Channel binding data the TLS layer offers for -PLUS mechanisms. */
struct mp_sasl_cb {
    int tls;                    /* stream is TLS-protected */
    unsigned char exporter[32]; /* tls-exporter (RFC 9266), TLS 1.3 */
    int has_exporter;
    unsigned char endpoint[64]; /* tls-server-end-point (RFC 5929) */
    size_t endpoint_len;        /* 0 if unavailable */
    /* Refuse the gs2 flag "y" while we offer channel binding (RFC 5802 §6
     * downgrade detection). Off by default: clients that only implement
     * tls-unique (undefined for TLS 1.3; e.g. slixmpp) send "y" to servers
     * offering tls-exporter/tls-server-end-point, and would be locked out.
     * Config: security.channel_binding_strict. */
    int strict_downgrade;
};

enum mp_sasl_status {
    MP_SASL_CONTINUE,    /* send *out as <challenge/>, wait for <response/> */
    MP_SASL_NEED_CREDS,  /* look up credentials of mp_sasl_username(), then
                            call mp_sasl_set_credentials */
    MP_SASL_NEED_DERIVE, /* a key derivation (PBKDF2) must run: take it with
                            mp_sasl_take_derive, run it (on any thread) with
                            mp_sasl_derive_run, then call mp_sasl_derived */
    MP_SASL_SUCCESS,     /* send <success> with *out (may be empty) */
    MP_SASL_FAILURE      /* send <failure> with mp_sasl_condition() */
};

typedef struct mp_sasl mp_sasl;

/* Names of the mechanisms available on a stream, strongest first, written
 * into names (NULL-terminated). PLAIN only if cb->tls; -PLUS only if a
 * channel binding is available. Returns the count. */
int mp_sasl_mechanisms(const struct mp_sasl_cb *cb, const char **names, int max);

/* Channel binding types usable on this stream, preferred first
 * ("tls-exporter", "tls-server-end-point"), for advertising them (XEP-0440);
 * names is NULL-terminated. Returns the count. */
int mp_sasl_channel_bindings(const struct mp_sasl_cb *cb, const char **names, int max);

/* Starts an exchange. Returns NULL (condition "invalid-mechanism") if mech
 * is not offered on this stream. cb is copied. */
mp_sasl *mp_sasl_new(const char *mech, const struct mp_sasl_cb *cb);
void mp_sasl_free(mp_sasl *s);

/* Processes the client's (already base64-decoded) message: the initial
 * response of <auth/> or the content of <response/>. *out (malloc'd, not
 * base64-encoded, caller frees; may be NULL) is the server's next message.
 * An empty initial response is "=" on the wire and len 0 here. */
enum mp_sasl_status mp_sasl_step(mp_sasl *s, const unsigned char *in, size_t in_len,
                                 unsigned char **out, size_t *out_len);
/* After MP_SASL_NEED_CREDS: the normalised (nodeprep) username and, for
 * PLAIN, the authorization identity. */
const char *mp_sasl_username(const mp_sasl *s);
const char *mp_sasl_authzid(const mp_sasl *s); /* NULL if none */
/* Supplies the account's credentials (NULL: no such account - the exchange
 * continues with fake data so failure looks the same, then fails with
 * not-authorized). Returns like mp_sasl_step; never derives a key itself:
 * PLAIN answers MP_SASL_NEED_DERIVE (also for unknown accounts, against
 * the fake credentials, so both cost the same). SCRAM needs no derivation
 * here (the stored keys are used as they are). */
enum mp_sasl_status mp_sasl_set_credentials(mp_sasl *s, const struct mp_credentials *c,
                                            unsigned char **out, size_t *out_len);

/* A pending key derivation: a self-contained copy of the work (prepared
 * password, salt, iteration count) and, once run, its result. It does not
 * point into the exchange, so it may outlive it (the stream may close
 * while a pool thread runs it). */
struct mp_sasl_derive;
/* After MP_SASL_NEED_DERIVE: hands the derivation over (the caller frees it
 * with mp_sasl_derive_free). NULL if none is pending. */
struct mp_sasl_derive *mp_sasl_take_derive(mp_sasl *s);
/* Runs PBKDF2 and the key hashes: touches only d, so any thread may call
 * it. Costs the stored iteration count (up to 10,000,000). */
void mp_sasl_derive_run(struct mp_sasl_derive *d);
/* Iterations d will (or did) cost. */
unsigned mp_sasl_derive_iterations(const struct mp_sasl_derive *d);
/* Wipes and frees d (NULL is fine). */
void mp_sasl_derive_free(struct mp_sasl_derive *d);
/* Completes the exchange with the result of mp_sasl_derive_run on the
 * derivation taken from s (d == NULL: it could not run, the exchange fails
 * with "temporary-auth-failure"). Returns MP_SASL_SUCCESS or
 * MP_SASL_FAILURE; *out is always NULL. Does not free d. */
enum mp_sasl_status mp_sasl_derived(mp_sasl *s, const struct mp_sasl_derive *d, unsigned char **out,
                                    size_t *out_len);

/* RFC 6120 §6.5 condition for the last failure (never NULL): "not-authorized",
 * "malformed-request", "invalid-mechanism", "encryption-required",
 * "invalid-authzid", "incorrect-encoding", "aborted",
 * "temporary-auth-failure". */
const char *mp_sasl_condition(const mp_sasl *s);
/* 1 if the last failure was a wrong password, an unknown account or an
 * impossible username: what login throttling counts. 0 for protocol errors
 * and for a failed channel-binding check on -PLUS (wrong or missing binding
 * data, or a gs2 flag that does not fit): such an answer reveals nothing
 * about the password, and a man in the middle must not be able to lock an
 * account out. */
int mp_sasl_bad_credentials(const mp_sasl *s);

/* base64 helpers (OpenSSL EVP). decode returns MAGPIE_ERR on bad input
 * (strict: no whitespace, padding required; a lone "=" decodes to empty);
 * both return malloc'd buffers the caller frees (decode's is also
 * NUL-terminated, not counted in *out_len). */
char *mp_base64_encode(const unsigned char *in, size_t len);
int mp_base64_decode(const char *in, size_t len, unsigned char **out, size_t *out_len);

/* ---- internals shared by sasl.c, scram.c, accounts.c and unit tests ---- */
#define MP_SASL_MAX_INPUT           4096 /* larger client messages: malformed-request */
#define MP_SCRAM_DEFAULT_ITERATIONS 4096
/* Strict UTF-8 check (no overlongs, surrogates, > U+10FFFF): 1 if valid. */
int mp_sasl_utf8_valid(const unsigned char *s, size_t len);
/* Digest length of h (20 or 32). */
size_t mp_scram_digest_len(enum mp_hash h);
/* Nodeprep (RFC 6122) of a UTF-8 username: a malloc'd string, or NULL if
 * invalid (bad UTF-8, prohibited characters, empty, longer than 1023). */
char *mp_sasl_nodeprep(const char *in);
/* SASLprep (RFC 4013) of a UTF-8 password: malloc'd string or NULL.
 * stored != 0 refuses unassigned code points (for passwords being set). */
char *mp_sasl_saslprep(const char *in, int stored);
/* Like mp_credentials_derive with a given salt (1..16 bytes). */
int mp_credentials_derive_salt(struct mp_credentials *c, const char *password,
                               const unsigned char *salt, size_t salt_len, unsigned iterations);
/* SaltedPassword -> StoredKey/ServerKey for hash h (RFC 5802 §3); the
 * password must already be SASLprep'd. Returns MAGPIE_OK or MAGPIE_ERR. */
int mp_scram_derive_key(enum mp_hash h, const char *password, const unsigned char *salt,
                        size_t salt_len, unsigned iterations, struct mp_scram_key *k);
/* HMAC and hash for h; out receives mp_scram_digest_len(h) bytes. */
void mp_scram_hmac(enum mp_hash h, const void *key, size_t key_len, const void *data, size_t len,
                   unsigned char *out);
void mp_scram_hash(enum mp_hash h, const void *data, size_t len, unsigned char *out);

/* ---- test hook (unit tests only): fixes the server nonce part used by the
 * next server-first message instead of a random one. ---- */
void mp_sasl_test_set_nonce(mp_sasl *s, const char *server_nonce);

#endif
