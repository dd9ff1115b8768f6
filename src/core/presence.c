/* presence.c - the last available presence of each bound session, kept on
 * the session's own worker (a per-worker map by session id), so neither
 * the directory nor a lock holds presence stanzas. The router asks the
 * owning worker for a stored presence when another resource of the same
 * user becomes available (router.c, share_presence). A roster module will
 * take this over. */
#include "base/base.h"
#include "core/presence.h"
#include "base/table.h"

static __thread mp_idmap *last; /* session id -> mp_stanza (referenced) */

void mp_presence_store(uint64_t id, mp_stanza *st)
{
    if (!st) {
        mp_presence_forget(id);
        return;
    }
    if (!last)
        last = mp_idmap_new();
    mp_stanza *old = mp_idmap_put(last, id, mp_stanza_ref(st));
    if (old)
        mp_stanza_unref(old);
}

mp_stanza *mp_presence_last(uint64_t id)
{
    return last ? mp_idmap_get(last, id) : NULL;
}

void mp_presence_forget(uint64_t id)
{
    if (last)
        mp_stanza_unref(mp_idmap_del(last, id));
}

static void drop(void *ud, uint64_t id, void *value)
{
    (void)ud;
    (void)id;
    mp_stanza_unref(value);
}

void mp_presence_thread_exit(void)
{
    /* every session unbinds before its worker exits, so this is empty
     * unless a session outlived its worker's loop */
    if (last)
        mp_idmap_foreach(last, drop, NULL);
    mp_idmap_free(last);
    last = NULL;
}
