/* session.c - what every kind of session shares (core/session.h). */
#include "base/base.h"
#include "core/session.h"
#include "core/modules.h"

#include <stdlib.h>
#include <string.h>

static atomic_uint_fast64_t next_session_id = 1;

void mp_session_base_init(struct mp_session_base *b, const struct mp_session_ops *ops,
                          struct mp_worker *w)
{
    b->ops = ops;
    atomic_init(&b->refs, 1);
    b->id = atomic_fetch_add(&next_session_id, 1);
    b->w = w;
    b->outq = mp_waitq_new();
}

void mp_session_ref(mp_session *s)
{
    atomic_fetch_add_explicit(&MP_SESSION_BASE(s)->refs, 1, memory_order_relaxed);
}

void mp_session_unref(mp_session *s)
{
    struct mp_session_base *b = MP_SESSION_BASE(s);
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    mp_jid_free(&b->jid);
    free(b->mod_data);
    for (size_t i = 0; i < b->n_held; i++)
        mp_stanza_unref(b->held[i]);
    free(b->held);
    mp_waitq_unref(b->outq);
    b->ops->release(s);
}

struct mp_worker *mp_session_worker(mp_session *s)
{
    return MP_SESSION_BASE(s)->w;
}

uint64_t mp_session_id(mp_session *s)
{
    return MP_SESSION_BASE(s)->id;
}

struct mp_waitq *mp_session_outq(mp_session *s)
{
    return MP_SESSION_BASE(s)->outq;
}

const mp_jid *mp_session_jid(mp_session *s)
{
    return &MP_SESSION_BASE(s)->jid;
}

int mp_session_deliver(mp_session *s, mp_stanza *st)
{
    return MP_SESSION_BASE(s)->ops->deliver(s, st);
}

void mp_session_replaced(mp_session *s)
{
    MP_SESSION_BASE(s)->ops->replaced(s);
}

void mp_session_set_data(mp_session *s, mp_module *m, void *data)
{
    struct mp_session_base *b = MP_SESSION_BASE(s);
    size_t i = (size_t)mp_module_index(m);
    if (i >= b->n_mod_data) {
        b->mod_data = mp_realloc(b->mod_data, (i + 1) * sizeof *b->mod_data);
        memset(b->mod_data + b->n_mod_data, 0, (i + 1 - b->n_mod_data) * sizeof *b->mod_data);
        b->n_mod_data = i + 1;
    }
    b->mod_data[i] = data;
}

void *mp_session_data(mp_session *s, mp_module *m)
{
    struct mp_session_base *b = MP_SESSION_BASE(s);
    size_t i = (size_t)mp_module_index(m);
    return i < b->n_mod_data ? b->mod_data[i] : NULL;
}
