/* accounts.h - user accounts of a virtual host (core-internal).
 *
 * An account is one document in the keyval store "accounts" of its host:
 * key = the nodeprep'd username (RFC 6122 localpart), value = the SCRAM
 * credentials as mp_credentials_encode text. Passwords are never stored.
 *
 * Usernames are nodeprep'd here, so "Alice" and "alice" name one account;
 * a username that nodeprep refuses (or a password SASLprep refuses) makes
 * the call fail with MAGPIE_ERR.
 *
 * The *_sync calls block (magpiectl, start-up, tests); the others follow
 * the storage API: they return MAGPIE_OK when the lookup was queued (the
 * callback then runs exactly once, on the caller's loop) and MAGPIE_ERR
 * when it was not (bad username, storage closed): the callback is then
 * never called. */
#ifndef MAGPIE_ACCOUNTS_H
#define MAGPIE_ACCOUNTS_H

#include "auth/sasl.h"

#define MP_ACCOUNTS_STORE "accounts"

/* Creates an account. iterations 0 means MP_SCRAM_DEFAULT_ITERATIONS.
 * Returns MAGPIE_OK, MAGPIE_AGAIN if the account already exists (it is left
 * unchanged), or MAGPIE_ERR (invalid username/password, storage error).
 * The existence check and the write are not one transaction: two
 * concurrent adds of one name may both succeed, the last one winning. */
int mp_account_add_sync(const char *host, const char *user, const char *password,
                        unsigned iterations);
/* Deletes an account: MAGPIE_OK, MAGPIE_NOTFOUND or MAGPIE_ERR. */
int mp_account_del_sync(const char *host, const char *user);
/* Sets a new password (fresh salt): MAGPIE_OK, MAGPIE_NOTFOUND (no such
 * account) or MAGPIE_ERR. iterations 0: the default. */
int mp_account_passwd_sync(const char *host, const char *user, const char *password,
                           unsigned iterations);
/* Calls fn for every username of host in ascending byte order. Returns
 * MAGPIE_OK or MAGPIE_ERR. */
int mp_account_list_sync(const char *host, void (*fn)(void *ud, const char *user), void *ud);
/* MAGPIE_OK if the account exists, MAGPIE_NOTFOUND if not, MAGPIE_ERR. */
int mp_account_exists_sync(const char *host, const char *user);
/* Reads an account's credentials into *c: MAGPIE_OK, MAGPIE_NOTFOUND or
 * MAGPIE_ERR (also for a stored value that does not decode). */
int mp_account_get_credentials_sync(const char *host, const char *user, struct mp_credentials *c);

/* Asynchronous credential lookup (for SASL): cb gets rc MAGPIE_OK with c
 * set (valid during the callback only), or MAGPIE_NOTFOUND / MAGPIE_ERR
 * with c NULL. */
typedef void (*mp_account_creds_cb)(void *ud, int rc, const struct mp_credentials *c);
int mp_account_get_credentials(const char *host, const char *user, mp_account_creds_cb cb,
                               void *ud);
/* The asynchronous existence check, mp_account_exists, is public
 * (magpie/module.h). */

#endif
