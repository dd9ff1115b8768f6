/* loop.h - event loops (one per worker thread) and cross-thread posting. */
#ifndef MAGPIE_LOOP_H
#define MAGPIE_LOOP_H

struct event_base;
typedef struct mp_loop mp_loop;

/* The loop of the calling thread, or NULL when the thread runs no loop
 * (storage pool threads, magpiectl). */
mp_loop *mp_loop_current(void);

/* Queues fn(arg) to run on loop's thread, in FIFO order per poster.
 * Thread-safe; never blocks on the target loop. Returns MAGPIE_OK or
 * MAGPIE_ERR (loop shutting down: fn is not called, caller keeps arg). */
int mp_loop_post(mp_loop *loop, void (*fn)(void *arg), void *arg);

/* The libevent base behind a loop, for timers and I/O on that thread. */
struct event_base *mp_loop_base(mp_loop *loop);

#endif
