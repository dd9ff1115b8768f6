/* core/fanout.h - one stanza handed to several recipients. */
#ifndef MAGPIE_CORE_FANOUT_H
#define MAGPIE_CORE_FANOUT_H

#include <magpie/xml.h>

/* one stanza handed to several recipients */
struct mp_fanout;
/* A fan-out of n hand-overs of st (a reference is taken). When the last
 * one is recorded and none succeeded, undeliverable(st) runs once, on that
 * thread, and takes the reference; otherwise it is dropped. */
struct mp_fanout *mp_fanout_new(mp_stanza *st, int n, void (*undeliverable)(mp_stanza *st));
/* Records one hand-over (delivered: it succeeded); the last frees fo. */
void mp_fanout_done(struct mp_fanout *fo, int delivered);

#endif
