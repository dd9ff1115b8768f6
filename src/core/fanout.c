/* fanout.c - one stanza handed to several recipients, accounted as one.
 *
 * The router hands a stanza to every selected session (a bare-JID message
 * to all resources of the highest priority, a presence broadcast); each
 * hand-over may fail because the session went away meanwhile, on another
 * thread. The stanza is undeliverable only if every attempt failed, and
 * then the undeliverable rules (re-routing to the bare JID, the offline
 * hook, a bounce) must run once: running them per failed attempt delivered
 * a message again to the resource that had already received it, or bounced
 * it twice. */
#include "base/base.h"
#include "core/fanout.h"

#include <stdlib.h>

struct mp_fanout {
    atomic_int pending;
    atomic_int delivered;
    mp_stanza *st; /* referenced */
    void (*undeliverable)(mp_stanza *st);
};

struct mp_fanout *mp_fanout_new(mp_stanza *st, int n, void (*undeliverable)(mp_stanza *))
{
    struct mp_fanout *fo = mp_malloc(sizeof *fo);
    atomic_init(&fo->pending, n);
    atomic_init(&fo->delivered, 0);
    fo->st = mp_stanza_ref(st);
    fo->undeliverable = undeliverable;
    return fo;
}

void mp_fanout_done(struct mp_fanout *fo, int delivered)
{
    if (delivered)
        atomic_store_explicit(&fo->delivered, 1, memory_order_relaxed);
    if (atomic_fetch_sub_explicit(&fo->pending, 1, memory_order_acq_rel) != 1)
        return;
    if (atomic_load_explicit(&fo->delivered, memory_order_relaxed))
        mp_stanza_unref(fo->st);
    else
        fo->undeliverable(fo->st);
    free(fo);
}
