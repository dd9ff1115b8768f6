/* addrlimit.c - per-address connection limits: how many connections one
 * address may hold at once (limits.max_connections_per_address) and how
 * fast it may open new ones (a token bucket: connection_rate_per_address
 * per second, connection_burst_per_address at once). An IPv4 address
 * counts alone; IPv6 addresses count per /64, the block one subscriber
 * usually gets. Loopback is not exempt: the limits are the operator's.
 *
 * One table for all workers, under a mutex held for a lookup and an
 * update only. Entries with no open connection stay while their bucket
 * refills (so closing and reopening does not reset the rate) and are
 * pruned by mp_addrlimit_prune. */
#include "base/base.h"
#include "base/table.h"
#include "net/addrlimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>

struct addr_entry {
    int open;      /* connections held now */
    double tokens; /* new connections allowed now */
    double last;   /* when tokens was computed */
};

static int max_open;               /* limits.max_connections_per_address */
static double rate = 1, burst = 1; /* connection_rate/burst_per_address */
static mp_table *addrs;
static pthread_mutex_t addr_lock = PTHREAD_MUTEX_INITIALIZER;

void mp_addrlimit_setup(int max_per_address, double rate_per_second, double burst_at_once)
{
    pthread_mutex_lock(&addr_lock);
    max_open = max_per_address;
    rate = rate_per_second;
    burst = burst_at_once;
    pthread_mutex_unlock(&addr_lock);
}

/* Refills e's bucket up to the burst at the configured rate. */
static void refill(struct addr_entry *e, double now)
{
    e->tokens += (now - e->last) * rate;
    if (e->tokens > burst)
        e->tokens = burst;
    e->last = now;
}

int mp_addrlimit_acquire(const char *key)
{
    double now = mp_now();
    int rc = MAGPIE_OK;
    pthread_mutex_lock(&addr_lock);
    if (!addrs)
        addrs = mp_table_new(256);
    struct addr_entry *e = mp_table_get(addrs, key);
    if (!e) {
        e = mp_calloc(1, sizeof *e);
        e->tokens = burst;
        e->last = now;
        mp_table_put(addrs, key, e);
    }
    refill(e, now);
    if (e->open >= max_open || e->tokens < 1.0) {
        rc = MAGPIE_ERR;
    } else {
        e->open++;
        e->tokens -= 1.0;
    }
    pthread_mutex_unlock(&addr_lock);
    return rc;
}

int mp_addrlimit_acquire_fd(int fd, char *key, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    snprintf(key, len, "local");
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        mp_addr_key((struct sockaddr *)&ss, key, len);
    if (mp_addrlimit_acquire(key) == MAGPIE_OK)
        return MAGPIE_OK;
    mp_stat_inc(MP_STAT_REFUSED_ADDRESS);
    return MAGPIE_ERR;
}

void mp_addrlimit_release(const char *key)
{
    pthread_mutex_lock(&addr_lock);
    struct addr_entry *e = addrs ? mp_table_get(addrs, key) : NULL;
    if (e && e->open > 0)
        e->open--;
    pthread_mutex_unlock(&addr_lock);
}

struct prune_ctx {
    double now;
    char **dead;
    size_t n, cap;
};

static void collect_idle(void *ud, const char *key, void *value)
{
    struct prune_ctx *c = ud;
    struct addr_entry *e = value;
    refill(e, c->now);
    if (e->open == 0 && e->tokens >= burst) {
        if (c->n == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 64;
            c->dead = mp_realloc(c->dead, c->cap * sizeof *c->dead);
        }
        c->dead[c->n++] = mp_strdup(key);
    }
}

void mp_addrlimit_prune(void)
{
    struct prune_ctx c = {mp_now(), NULL, 0, 0};
    pthread_mutex_lock(&addr_lock);
    if (addrs)
        mp_table_foreach(addrs, collect_idle, &c);
    for (size_t i = 0; i < c.n; i++) {
        free(mp_table_del(addrs, c.dead[i]));
        free(c.dead[i]);
    }
    pthread_mutex_unlock(&addr_lock);
    free(c.dead);
}

size_t mp_addrlimit_count(void)
{
    pthread_mutex_lock(&addr_lock);
    size_t n = addrs ? mp_table_count(addrs) : 0;
    pthread_mutex_unlock(&addr_lock);
    return n;
}

void mp_addrlimit_free(void)
{
    pthread_mutex_lock(&addr_lock);
    mp_table_free(addrs, free);
    addrs = NULL;
    pthread_mutex_unlock(&addr_lock);
}
