/* server/control.h - the control socket of magpiectl. */
#ifndef MAGPIE_SERVER_CONTROL_H
#define MAGPIE_SERVER_CONTROL_H

#include "base/base.h"
#include "conf/config.h"

/* Listens on <state_dir>/magpied.sock on the main loop. */
int mp_control_start(mp_loop *loop, const struct mp_config *cfg);
void mp_control_stop(void);
/* Set by main: the reload action (SIGHUP and "reload" command). */
extern void (*mp_control_reload)(void);

#endif
