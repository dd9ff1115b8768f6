/* account.c - asynchronous account changes for modules (module.h:
 * mp_account_create, mp_account_set_password, mp_account_remove).
 *
 * Each change is one small state machine that runs on the caller's loop:
 * a lookup of the account (keyval store "accounts", as auth/accounts.c
 * keeps it), then for a new password its SCRAM derivation on the
 * authentication pool (PBKDF2 never runs on a worker loop), then the
 * write. Creations of one name are serialised here (a second one while
 * the first runs gets MAGPIE_AGAIN), so two clients registering the same
 * name at once cannot both succeed. */
#include "base/base.h"
#include "auth/accounts.h"
#include "core/server.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum op_kind { OP_CREATE, OP_PASSWD, OP_REMOVE };

struct account_op {
    enum op_kind kind;
    char *host, *key; /* key: the nodeprep'd username */
    char *password;   /* cleansed on free */
    char *enc;        /* the encoded credentials, once derived */
    unsigned iterations;
    int busy; /* holds the creation mark of (host, key) */
    mp_account_done_fn cb;
    void *ud;
};

/* (host, key) pairs being created now. */
struct creating {
    char *host, *key;
    struct creating *next;
};
static struct creating *creating;
static pthread_mutex_t creating_lock = PTHREAD_MUTEX_INITIALIZER;

static int mark_creating(const char *host, const char *key)
{
    pthread_mutex_lock(&creating_lock);
    for (struct creating *c = creating; c; c = c->next)
        if (strcmp(c->host, host) == 0 && strcmp(c->key, key) == 0) {
            pthread_mutex_unlock(&creating_lock);
            return 0;
        }
    struct creating *c = mp_calloc(1, sizeof *c);
    c->host = mp_strdup(host);
    c->key = mp_strdup(key);
    c->next = creating;
    creating = c;
    pthread_mutex_unlock(&creating_lock);
    return 1;
}

static void unmark_creating(const char *host, const char *key)
{
    pthread_mutex_lock(&creating_lock);
    for (struct creating **pp = &creating; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->host, host) == 0 && strcmp((*pp)->key, key) == 0) {
            struct creating *c = *pp;
            *pp = c->next;
            free(c->host);
            free(c->key);
            free(c);
            break;
        }
    pthread_mutex_unlock(&creating_lock);
}

static void clear_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void op_free(struct account_op *op)
{
    free(op->host);
    free(op->key);
    clear_free(op->password);
    clear_free(op->enc);
    free(op);
}

/* Calls the caller back with rc and frees op. */
static void finish(struct account_op *op, int rc)
{
    if (op->busy)
        unmark_creating(op->host, op->key);
    op->cb(op->ud, rc);
    op_free(op);
}

static void finish_again(void *arg)
{
    finish(arg, MAGPIE_AGAIN);
}

static void written(void *ud, int rc)
{
    finish(ud, rc == MAGPIE_OK ? MAGPIE_OK : MAGPIE_ERR);
}

/* Pool thread: PBKDF2 and encoding, nothing else of op is touched. */
static void derive_work(void *arg)
{
    struct account_op *op = arg;
    struct mp_credentials c;
    if (mp_credentials_derive(&c, op->password, op->iterations) == MAGPIE_OK)
        op->enc = mp_credentials_encode(&c);
    OPENSSL_cleanse(&c, sizeof c);
}

static void derive_done(void *arg, int rc)
{
    struct account_op *op = arg;
    if (rc != MAGPIE_OK || !op->enc) {
        finish(op, MAGPIE_ERR);
        return;
    }
    if (mp_kv_set(op->host, MP_ACCOUNTS_STORE, op->key, op->enc, strlen(op->enc), written, op) !=
        MAGPIE_OK)
        finish(op, MAGPIE_ERR);
}

static void removed(void *ud, int rc)
{
    struct account_op *op = ud;
    if (rc != MAGPIE_OK) {
        finish(op, MAGPIE_ERR);
        return;
    }
    mp_account_deleted(op->host, op->key);
    finish(op, MAGPIE_OK);
}

/* The lookup of the account is back: go on by kind. */
static void looked_up(void *ud, int rc, const void *data, size_t len)
{
    (void)data;
    (void)len;
    struct account_op *op = ud;
    if (rc == MAGPIE_ERR) {
        finish(op, MAGPIE_ERR);
        return;
    }
    if (op->kind == OP_CREATE && rc == MAGPIE_OK) {
        finish(op, MAGPIE_AGAIN);
        return;
    }
    if (op->kind != OP_CREATE && rc == MAGPIE_NOTFOUND) {
        finish(op, MAGPIE_NOTFOUND);
        return;
    }
    if (op->kind == OP_REMOVE) {
        if (mp_kv_del(op->host, MP_ACCOUNTS_STORE, op->key, removed, op) != MAGPIE_OK)
            finish(op, MAGPIE_ERR);
        return;
    }
    int q = mp_workpool_submit(mp_server.auth_pool, derive_work, derive_done, op);
    if (q != MAGPIE_OK) {
        mp_log(MP_LOG_WARN, "accounts: cannot queue a key derivation for %s@%s", op->key, op->host);
        finish(op, MAGPIE_ERR);
    }
}

/* Validates the arguments and starts the lookup; MAGPIE_ERR (cb never
 * called) when they are invalid or nothing could be queued. */
static int start(enum op_kind kind, const char *host, const char *user, const char *password,
                 mp_account_done_fn cb, void *ud)
{
    if (!host || !user || !cb || !mp_host_is_local(host))
        return MAGPIE_ERR;
    if (kind != OP_REMOVE) {
        char *pw = password ? mp_sasl_saslprep(password, 1) : NULL;
        if (!pw || !*pw) {
            clear_free(pw);
            return MAGPIE_ERR;
        }
        clear_free(pw);
    }
    char *key = mp_sasl_nodeprep(user);
    if (!key)
        return MAGPIE_ERR;
    struct account_op *op = mp_calloc(1, sizeof *op);
    op->kind = kind;
    op->host = mp_strdup(host);
    op->key = key;
    op->password = password && kind != OP_REMOVE ? mp_strdup(password) : NULL;
    op->iterations = mp_server.cfg && mp_server.cfg->scram_iterations > 0
                         ? (unsigned)mp_server.cfg->scram_iterations
                         : MP_SCRAM_DEFAULT_ITERATIONS;
    op->cb = cb;
    op->ud = ud;
    if (kind == OP_CREATE) {
        if (!mark_creating(host, key)) {
            /* another creation of this name runs: AGAIN, from the loop */
            mp_loop *l = mp_loop_current();
            if (l && mp_loop_post(l, finish_again, op) == MAGPIE_OK)
                return MAGPIE_OK;
            op_free(op);
            return MAGPIE_ERR;
        }
        op->busy = 1;
    }
    if (mp_kv_get(host, MP_ACCOUNTS_STORE, key, looked_up, op) != MAGPIE_OK) {
        if (op->busy)
            unmark_creating(host, key);
        op_free(op);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

int mp_account_create(const char *host, const char *user, const char *password,
                      mp_account_done_fn cb, void *ud)
{
    return start(OP_CREATE, host, user, password, cb, ud);
}

int mp_account_set_password(const char *host, const char *user, const char *password,
                            mp_account_done_fn cb, void *ud)
{
    return start(OP_PASSWD, host, user, password, cb, ud);
}

int mp_account_remove(const char *host, const char *user, mp_account_done_fn cb, void *ud)
{
    return start(OP_REMOVE, host, user, NULL, cb, ud);
}
