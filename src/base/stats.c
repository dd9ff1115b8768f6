/* stats.c - core counters and their text dump for magpiectl status.
 * Module counters live in module.c; server/control.c writes the whole
 * status (these, gauges, module counters).
 *
 * Counters are per thread slot, summed on read: each thread (a worker, the
 * main loop, a pool thread) takes a slot of its own the first time it
 * counts, so counting is an uncontended relaxed add on a cache line no
 * other thread writes, instead of every worker bouncing one line per
 * stanza. Threads beyond MP_STAT_SLOTS - 1 share the last slot (still
 * correct: the adds are atomic). */
#include "base/base.h"

#include <event2/buffer.h>

struct stat_slot {
    atomic_ullong v[MP_STAT_COUNT];
} __attribute__((aligned(64)));

static struct stat_slot slots[MP_STAT_SLOTS];
static atomic_int slots_used;
static __thread int my_slot = -1;

int mp_stat_slot(void)
{
    if (my_slot < 0) {
        int n = atomic_fetch_add(&slots_used, 1);
        my_slot = n < MP_STAT_SLOTS ? n : MP_STAT_SLOTS - 1;
    }
    return my_slot;
}

static const char *const names[MP_STAT_COUNT] = {
    [MP_STAT_CONNECTIONS_TOTAL] = "connections_total",
    [MP_STAT_TLS_HANDSHAKES] = "tls_handshakes",
    [MP_STAT_TLS_FAILURES] = "tls_failures",
    [MP_STAT_AUTH_SUCCESS] = "auth_success",
    [MP_STAT_AUTH_FAILURES] = "auth_failures",
    [MP_STAT_STANZAS_IN] = "stanzas_in",
    [MP_STAT_STANZAS_OUT] = "stanzas_out",
    [MP_STAT_STREAM_ERRORS] = "stream_errors",
    [MP_STAT_PEER_CLOSED] = "peer_closed",
    [MP_STAT_BOUNCES] = "bounces",
    [MP_STAT_REFUSED] = "connections_refused",
    [MP_STAT_AUTH_DELAYED] = "auth_delayed",
    [MP_STAT_AUTH_POOL_REJECTED] = "auth_pool_rejected",
    [MP_STAT_REFUSED_ADDRESS] = "connections_refused_address",
    [MP_STAT_SENDERS_PAUSED] = "senders_paused",
    [MP_STAT_OUTPUT_STALLED] = "output_stall_disconnects",
};

void mp_stat_inc(enum mp_core_stat s)
{
    atomic_fetch_add_explicit(&slots[mp_stat_slot()].v[s], 1, memory_order_relaxed);
}

uint64_t mp_stat_get(enum mp_core_stat s)
{
    uint64_t sum = 0;
    for (int i = 0; i < MP_STAT_SLOTS; i++)
        sum += atomic_load_explicit(&slots[i].v[s], memory_order_relaxed);
    return sum;
}

void mp_stat_write_all(struct evbuffer *out)
{
    for (int i = 0; i < MP_STAT_COUNT; i++)
        evbuffer_add_printf(out, "%s %llu\n", names[i],
                            (unsigned long long)mp_stat_get((enum mp_core_stat)i));
}
