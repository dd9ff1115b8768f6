/* tls.c - server TLS contexts: one per virtual host, picked by SNI;
 * self-signed certificates generated on first start; channel binding data.
 *
 * TLS 1.2 is the minimum; renegotiation is off; SSL_MODE_RELEASE_BUFFERS
 * frees an idle connection's record buffers (about 11 KiB per idle stream).
 * On reload (SIGHUP) new contexts replace the old ones for new connections;
 * OpenSSL's reference counting keeps old ones alive for existing streams. */
#include "base/base.h"
#include "net/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

struct host_ctx {
    char *domain;
    SSL_CTX *ctx;
};

static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static struct host_ctx *ctxs;
static size_t n_ctxs;

static void log_ssl_error(const char *what, const char *file)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof buf);
    mp_log(MP_LOG_ERROR, "%s %s: %s", what, file ? file : "", e ? buf : strerror(errno));
    ERR_clear_error();
}

/* Writes a new self-signed certificate and key for domain. Returns
 * MAGPIE_OK or MAGPIE_ERR (logged). */
static int generate_self_signed(const char *domain, const char *cert_file, const char *key_file)
{
    int rc = MAGPIE_ERR;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *fp = NULL;
    if (!pkey || !x)
        goto out;
    X509_set_version(x, 2);
    unsigned char serial[16];
    mp_random_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)domain, -1, -1, 0);
    X509_set_issuer_name(x, name);
    char san[1100];
    snprintf(san, sizeof san, "DNS:%s", domain);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (!ext)
        goto out;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!X509_sign(x, pkey, EVP_sha256()))
        goto out;

    mode_t old = umask(0077);
    fp = fopen(key_file, "w");
    umask(old);
    if (!fp || !PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL)) {
        log_ssl_error("cannot write key", key_file);
        goto out;
    }
    fclose(fp);
    fp = fopen(cert_file, "w");
    if (!fp || !PEM_write_X509(fp, x)) {
        log_ssl_error("cannot write certificate", cert_file);
        goto out;
    }
    mp_log(MP_LOG_NOTICE, "generated a self-signed certificate for %s in %s", domain, cert_file);
    rc = MAGPIE_OK;
out:
    if (fp)
        fclose(fp);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

static int sni_callback(SSL *ssl, int *alert, void *arg);

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    /* XEP-0368: accept "xmpp-client"; ignore the others */
    for (unsigned i = 0; i + 1 <= inlen;) {
        unsigned len = in[i];
        if (i + 1 + len > inlen)
            break;
        if (len == 11 && memcmp(in + i + 1, "xmpp-client", 11) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)len;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* Returns a new context for one host, or NULL (logged). */
static SSL_CTX *make_ctx(const struct mp_config *cfg, const struct mp_config_host *h)
{
    char cert[4096], key[4096];
    if (h->cert_file) {
        snprintf(cert, sizeof cert, "%s", h->cert_file);
        snprintf(key, sizeof key, "%s", h->key_file ? h->key_file : h->cert_file);
    } else {
        snprintf(cert, sizeof cert, "%s/%s.crt", cfg->state_dir, h->domain);
        snprintf(key, sizeof key, "%s/%s.key", cfg->state_dir, h->domain);
        struct stat st;
        if (stat(cert, &st) != 0 || stat(key, &st) != 0)
            if (generate_self_signed(h->domain, cert, key) != MAGPIE_OK)
                return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    /* TLS 1.3: AES-128-GCM first (OpenSSL's default puts AES-256-GCM-SHA384
     * first): fewer rounds per record, and its SHA-256 transcript hash keeps
     * about 220 bytes less per connection than SHA-384 for the session's
     * life (docs/design-notes.md, memory per idle session) */
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                  "TLS_CHACHA20_POLY1305_SHA256");
    /* TLS 1.2: forward-secret AEAD suites only (RFC 7590 via RFC 7525) */
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        log_ssl_error("cannot load certificate", cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        log_ssl_error("cannot load private key", key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_callback);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;
}

int mp_tls_init(const struct mp_config *cfg)
{
    struct host_ctx *v = mp_calloc(cfg->n_hosts, sizeof *v);
    for (size_t i = 0; i < cfg->n_hosts; i++) {
        v[i].domain = mp_strdup(cfg->hosts[i].domain);
        v[i].ctx = make_ctx(cfg, &cfg->hosts[i]);
        if (!v[i].ctx) {
            for (size_t j = 0; j <= i; j++) {
                SSL_CTX_free(v[j].ctx);
                free(v[j].domain);
            }
            free(v);
            return MAGPIE_ERR;
        }
    }
    pthread_mutex_lock(&ctx_lock);
    struct host_ctx *old = ctxs;
    size_t n_old = n_ctxs;
    ctxs = v;
    n_ctxs = cfg->n_hosts;
    pthread_mutex_unlock(&ctx_lock);
    for (size_t i = 0; i < n_old; i++) {
        SSL_CTX_free(old[i].ctx);
        free(old[i].domain);
    }
    free(old);
    return MAGPIE_OK;
}

void mp_tls_shutdown(void)
{
    pthread_mutex_lock(&ctx_lock);
    for (size_t i = 0; i < n_ctxs; i++) {
        SSL_CTX_free(ctxs[i].ctx);
        free(ctxs[i].domain);
    }
    free(ctxs);
    ctxs = NULL;
    n_ctxs = 0;
    pthread_mutex_unlock(&ctx_lock);
}

static int sni_callback(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    (void)arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name)
        return SSL_TLSEXT_ERR_NOACK;
    pthread_mutex_lock(&ctx_lock);
    for (size_t i = 0; i < n_ctxs; i++)
        if (strcasecmp(ctxs[i].domain, name) == 0) {
            SSL_set_SSL_CTX(ssl, ctxs[i].ctx);
            break;
        }
    pthread_mutex_unlock(&ctx_lock);
    return SSL_TLSEXT_ERR_OK;
}

SSL *mp_tls_new_ssl(const char *default_host)
{
    SSL *ssl = NULL;
    pthread_mutex_lock(&ctx_lock);
    SSL_CTX *ctx = n_ctxs ? ctxs[0].ctx : NULL;
    for (size_t i = 0; default_host && i < n_ctxs; i++)
        if (strcmp(ctxs[i].domain, default_host) == 0)
            ctx = ctxs[i].ctx;
    if (ctx)
        ssl = SSL_new(ctx);
    pthread_mutex_unlock(&ctx_lock);
    return ssl;
}

void mp_tls_channel_binding(SSL *ssl, struct mp_sasl_cb *cb)
{
    memset(cb, 0, sizeof *cb);
    cb->tls = 1;
    if (!SSL_is_init_finished(ssl))
        return;
    /* RFC 9266: tls-exporter, defined for TLS 1.3 */
    if (SSL_version(ssl) >= TLS1_3_VERSION &&
        SSL_export_keying_material(ssl, cb->exporter, sizeof cb->exporter,
                                   "EXPORTER-Channel-Binding", 24, NULL, 0, 0) == 1)
        cb->has_exporter = 1;
    /* RFC 5929: hash of our certificate with its signature's hash
     * (SHA-256 when that is MD5 or SHA-1) */
    X509 *cert = SSL_get_certificate(ssl);
    if (cert) {
        int md_nid = NID_undef;
        const EVP_MD *md = NULL;
        if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL) && md_nid != NID_md5 &&
            md_nid != NID_sha1 && md_nid != NID_undef)
            md = EVP_get_digestbynid(md_nid);
        if (!md)
            md = EVP_sha256();
        unsigned len = 0;
        if (X509_digest(cert, md, cb->endpoint, &len) == 1 && len <= sizeof cb->endpoint)
            cb->endpoint_len = len;
    }
}
