/* auth/authguard.h - throttling of failed logins (see authguard.c). */
#ifndef MAGPIE_AUTH_AUTHGUARD_H
#define MAGPIE_AUTH_AUTHGUARD_H

#include <stddef.h>

/* throttling of failed logins (see the file) */
enum { MP_AUTHGUARD_ADDRESS = 0, MP_AUTHGUARD_ACCOUNT = 1, MP_AUTHGUARD_KINDS };
#define MP_AUTHGUARD_MAX_ENTRIES 65536 /* per table */
typedef struct mp_authguard mp_authguard;
/* A new guard (thread-safe; free with mp_authguard_free): failures_free
 * failures within window seconds are answered at once, later ones after
 * 1 s doubling up to delay_max; max_entries bounds each table. */
mp_authguard *mp_authguard_new(unsigned failures_free, double delay_max, double window,
                               size_t max_entries);
void mp_authguard_free(mp_authguard *g);
/* Counts a failed login from the address addr (its mp_addr_key; NULL or
 * "": no address count) for account ("user@host", or NULL) at time now
 * (mp_now()). Returns the seconds to delay the failure answer (0: none). */
double mp_authguard_failure(mp_authguard *g, const char *addr, const char *account, double now);
/* A successful login of account: its count starts over. */
void mp_authguard_success(mp_authguard *g, const char *account);
/* Failures counted now for an address (its mp_addr_key) or an account. */
unsigned mp_authguard_failures(mp_authguard *g, int kind, const char *what, double now);
/* Per kind: entries over the free failures (throttled) and all entries. */
void mp_authguard_stats(mp_authguard *g, double now, size_t *throttled, size_t *entries);
/* The delay after the failures-th failure (pure arithmetic). */
double mp_authguard_delay(unsigned failures, unsigned failures_free, double delay_max);

#endif
