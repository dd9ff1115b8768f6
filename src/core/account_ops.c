/* account_ops.c - account administration for modules (module.h:
 * mp_account_create, mp_account_set_password, mp_account_remove).
 *
 * The SCRAM derivation (PBKDF2, the configured iterations) and the blocking
 * storage calls of auth/accounts.c run on the auth thread pool, off the
 * event loops; the callback comes back on the caller's loop. A user name
 * that Nodeprep refuses or a password that SASLprep refuses is refused at
 * once (MAGPIE_ERR, no callback). */
#include "base/base.h"
#include "auth/accounts.h"
#include "core/server.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

enum op { OP_CREATE, OP_PASSWD, OP_REMOVE };

struct account_job {
    enum op op;
    char *host, *user, *password;
    int rc;
    mp_account_cb cb;
    void *ud;
};

static void job_free(struct account_job *j)
{
    free(j->host);
    free(j->user);
    if (j->password) {
        OPENSSL_cleanse(j->password, strlen(j->password));
        free(j->password);
    }
    free(j);
}

/* On a pool thread. */
static void job_work(void *arg)
{
    struct account_job *j = arg;
    unsigned it = (unsigned)mp_server.cfg->scram_iterations;
    switch (j->op) {
    case OP_CREATE:
        j->rc = mp_account_add_sync(j->host, j->user, j->password, it);
        break;
    case OP_PASSWD:
        j->rc = mp_account_passwd_sync(j->host, j->user, j->password, it);
        break;
    case OP_REMOVE:
        j->rc = mp_account_del_sync(j->host, j->user);
        break;
    }
}

/* On the caller's loop. */
static void job_done(void *arg, int rc)
{
    struct account_job *j = arg;
    if (rc != MAGPIE_OK)
        j->rc = MAGPIE_ERR;
    if (j->op == OP_REMOVE && j->rc == MAGPIE_OK) {
        char user[MP_JID_PART_MAX + 1];
        if (mp_jid_nodeprep(j->user, user, sizeof user) == MAGPIE_OK)
            mp_account_deleted(j->host, user);
    }
    j->cb(j->ud, j->rc);
    job_free(j);
}

static int submit(enum op op, const char *host, const char *user, const char *password,
                  mp_account_cb cb, void *ud)
{
    if (!host || !user || !*user || !cb || !mp_host_is_local(host) ||
        (op != OP_REMOVE && !password) || !mp_server.auth_pool || !mp_loop_current())
        return MAGPIE_ERR;
    /* names and passwords the storage calls would refuse are refused here,
     * so that the caller can tell a bad request from a storage failure */
    char *check = mp_sasl_nodeprep(user);
    if (!check)
        return MAGPIE_ERR;
    free(check);
    if (password) {
        check = mp_sasl_saslprep(password, 1);
        if (!check)
            return MAGPIE_ERR;
        OPENSSL_cleanse(check, strlen(check));
        free(check);
    }
    struct account_job *j = mp_calloc(1, sizeof *j);
    j->op = op;
    j->host = mp_strdup(host);
    j->user = mp_strdup(user);
    j->password = password ? mp_strdup(password) : NULL;
    j->cb = cb;
    j->ud = ud;
    if (mp_workpool_submit(mp_server.auth_pool, job_work, job_done, j) != MAGPIE_OK) {
        job_free(j);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

int mp_account_create(const char *host, const char *user, const char *password, mp_account_cb cb,
                      void *ud)
{
    return submit(OP_CREATE, host, user, password, cb, ud);
}

int mp_account_set_password(const char *host, const char *user, const char *password,
                            mp_account_cb cb, void *ud)
{
    return submit(OP_PASSWD, host, user, password, cb, ud);
}

int mp_account_remove(const char *host, const char *user, mp_account_cb cb, void *ud)
{
    return submit(OP_REMOVE, host, user, NULL, cb, ud);
}
