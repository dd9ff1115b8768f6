/* accounts.c - user accounts on top of the keyval store "accounts": the
 * key is the nodeprep'd username, the value the encoded SCRAM credentials. */
#include "base/base.h"
#include "auth/accounts.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

static unsigned iterations_or_default(unsigned iterations)
{
    return iterations ? iterations : MP_SCRAM_DEFAULT_ITERATIONS;
}

/* Derives and writes credentials for key. */
static int store_password(const char *host, const char *key, const char *password,
                          unsigned iterations)
{
    struct mp_credentials c;
    if (mp_credentials_derive(&c, password, iterations_or_default(iterations)) != MAGPIE_OK)
        return MAGPIE_ERR;
    char *enc = mp_credentials_encode(&c);
    OPENSSL_cleanse(&c, sizeof c);
    if (!enc)
        return MAGPIE_ERR;
    int rc = mp_kv_set_sync(host, MP_ACCOUNTS_STORE, key, enc, strlen(enc));
    free(enc);
    return rc == MAGPIE_OK ? MAGPIE_OK : MAGPIE_ERR;
}

int mp_account_add_sync(const char *host, const char *user, const char *password,
                        unsigned iterations)
{
    char *key = user ? mp_sasl_nodeprep(user) : NULL;
    if (!key || !password)
        goto err;
    int rc = mp_account_exists_sync(host, key);
    if (rc == MAGPIE_OK) {
        free(key);
        return MAGPIE_AGAIN;
    }
    if (rc != MAGPIE_NOTFOUND)
        goto err;
    rc = store_password(host, key, password, iterations);
    free(key);
    return rc;
err:
    free(key);
    return MAGPIE_ERR;
}

int mp_account_del_sync(const char *host, const char *user)
{
    char *key = user ? mp_sasl_nodeprep(user) : NULL;
    if (!key)
        return MAGPIE_ERR;
    int rc = mp_kv_del_sync(host, MP_ACCOUNTS_STORE, key);
    free(key);
    return rc;
}

int mp_account_passwd_sync(const char *host, const char *user, const char *password,
                           unsigned iterations)
{
    char *key = user ? mp_sasl_nodeprep(user) : NULL;
    if (!key || !password) {
        free(key);
        return MAGPIE_ERR;
    }
    int rc = mp_account_exists_sync(host, key);
    if (rc == MAGPIE_OK)
        rc = store_password(host, key, password, iterations);
    free(key);
    return rc;
}

int mp_account_list_sync(const char *host, void (*fn)(void *ud, const char *user), void *ud)
{
    return mp_kv_keys_sync(host, MP_ACCOUNTS_STORE, fn, ud) == MAGPIE_OK ? MAGPIE_OK : MAGPIE_ERR;
}

int mp_account_get_credentials_sync(const char *host, const char *user, struct mp_credentials *c)
{
    char *key = user ? mp_sasl_nodeprep(user) : NULL;
    void *data = NULL;
    size_t len = 0;
    if (!key)
        return MAGPIE_ERR;
    int rc = mp_kv_get_sync(host, MP_ACCOUNTS_STORE, key, &data, &len);
    free(key);
    if (rc == MAGPIE_OK && mp_credentials_decode(c, data, len) != MAGPIE_OK)
        rc = MAGPIE_ERR;
    free(data);
    return rc;
}

int mp_account_exists_sync(const char *host, const char *user)
{
    char *key = user ? mp_sasl_nodeprep(user) : NULL;
    void *data = NULL;
    size_t len = 0;
    if (!key)
        return MAGPIE_ERR;
    int rc = mp_kv_get_sync(host, MP_ACCOUNTS_STORE, key, &data, &len);
    free(key);
    free(data);
    return rc;
}

/* ---- asynchronous lookups ---- */

struct creds_req {
    mp_account_creds_cb creds_cb;
    void (*exists_cb)(void *ud, int rc);
    void *ud;
};

/* Storage completion: decodes the value and hands it to the caller. */
static void on_kv_get(void *ud, int rc, const void *data, size_t len)
{
    struct creds_req *r = ud;
    if (r->exists_cb) {
        r->exists_cb(r->ud, rc);
    } else if (rc == MAGPIE_OK) {
        struct mp_credentials c;
        if (mp_credentials_decode(&c, data, len) == MAGPIE_OK) {
            r->creds_cb(r->ud, MAGPIE_OK, &c);
            OPENSSL_cleanse(&c, sizeof c);
        } else {
            mp_log(MP_LOG_WARN, "accounts: stored credentials do not decode");
            r->creds_cb(r->ud, MAGPIE_ERR, NULL);
        }
    } else {
        r->creds_cb(r->ud, rc == MAGPIE_NOTFOUND ? MAGPIE_NOTFOUND : MAGPIE_ERR, NULL);
    }
    free(r);
}

static int lookup(const char *host, const char *user, struct creds_req *r)
{
    char *key = user ? mp_sasl_nodeprep(user) : NULL;
    if (!key) {
        free(r);
        return MAGPIE_ERR;
    }
    int rc = mp_kv_get(host, MP_ACCOUNTS_STORE, key, on_kv_get, r);
    free(key);
    if (rc != MAGPIE_OK) {
        free(r);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

int mp_account_get_credentials(const char *host, const char *user, mp_account_creds_cb cb, void *ud)
{
    struct creds_req *r = mp_calloc(1, sizeof *r);
    r->creds_cb = cb;
    r->ud = ud;
    return lookup(host, user, r);
}

int mp_account_exists(const char *host, const char *user, void (*cb)(void *ud, int rc), void *ud)
{
    struct creds_req *r = mp_calloc(1, sizeof *r);
    r->exists_cb = cb;
    r->ud = ud;
    return lookup(host, user, r);
}
