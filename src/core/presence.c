/* presence.c - the last available presence of each bound session, kept on
 * the session's own worker (a per-worker map by session id), so neither
 * the directory nor a lock holds presence stanzas. The router asks the
 * owning worker for a stored presence when another resource of the same
 * user becomes available (router.c, share_presence). A roster module will
 * take this over.
 *
 * Memory: the presence is kept serialised (with its namespace, so it
 * parses back to the same stanza), not as a stanza: one idle session's
 * <presence/> costs some 60 bytes instead of the ~500 of a stanza struct
 * and arena. It is parsed again only when asked for, which is rare (a
 * second resource of the user coming online, a session moving to another
 * worker). */
#include "base/base.h"
#include "core/presence.h"
#include "base/table.h"

#include <stdlib.h>
#include <string.h>

static __thread mp_idmap *last; /* session id -> char * (serialised stanza) */

void mp_presence_store(uint64_t id, mp_stanza *st)
{
    if (!st) {
        mp_presence_forget(id);
        return;
    }
    if (!last)
        last = mp_idmap_new();
    /* "" as the stream namespace: the root keeps its xmlns */
    free(mp_idmap_put(last, id, mp_xml_to_string(mp_stanza_root(st), "")));
}

mp_stanza *mp_presence_last(uint64_t id)
{
    const char *x = last ? mp_idmap_get(last, id) : NULL;
    return x ? mp_stanza_parse(x, strlen(x)) : NULL;
}

void mp_presence_forget(uint64_t id)
{
    if (last)
        free(mp_idmap_del(last, id));
}

static void drop(void *ud, uint64_t id, void *value)
{
    (void)ud;
    (void)id;
    free(value);
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
