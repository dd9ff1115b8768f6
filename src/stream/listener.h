/* stream/listener.h - listeners registered by modules. */
#ifndef MAGPIE_STREAM_LISTENER_H
#define MAGPIE_STREAM_LISTENER_H

#include <stddef.h>
#include "core/server.h"

/* listeners registered by modules */
struct mp_conn;
struct mp_listener_reg;
size_t mp_listeners_count(void);
/* The i-th registration and where it listens. */
const struct mp_listener_reg *mp_listener_get(size_t i, const char **address, int *port);
/* Forgets every registration (after the modules are unloaded). */
void mp_listeners_clear(void);
/* Takes a socket accepted on reg's listener by worker w. */
void mp_listener_accept(struct mp_worker *w, const struct mp_listener_reg *reg, int fd);
/* Ends every module-listener connection of w (shutdown, on w's thread). */
void mp_listener_shutdown_worker(struct mp_worker *w);
void mp_listener_thread_exit(void);

#endif
