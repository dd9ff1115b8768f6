/* net/addrlimit.h - per-address connection count and rate. */
#ifndef MAGPIE_NET_ADDRLIMIT_H
#define MAGPIE_NET_ADDRLIMIT_H

#include <stddef.h>

/* Sets the limits (from the configuration, before the workers start): at
 * most max_per_address connections held, opened at rate_per_second after
 * burst_at_once. Until it is called every connection is refused. */
void mp_addrlimit_setup(int max_per_address, double rate_per_second, double burst_at_once);
/* Counts a new connection from key: MAGPIE_OK, or MAGPIE_ERR when the
 * address holds too many or opens them too fast (nothing counted). */
int mp_addrlimit_acquire(const char *key);
/* The same for the accepted socket fd: writes its key (mp_addr_key of the
 * peer, "local" for a peer without an IP address) into key (len bytes);
 * a refusal is counted (connections_refused_address). */
int mp_addrlimit_acquire_fd(int fd, char *key, size_t len);
/* Forgets one connection of key (once per successful acquire). */
void mp_addrlimit_release(const char *key);
/* Drops entries with no connection and a full bucket. */
void mp_addrlimit_prune(void);
size_t mp_addrlimit_count(void);
void mp_addrlimit_free(void);

#endif
