/* server.c - questions about the server's configuration that every core
 * file may ask (core/server.h). The state itself (mp_server) is defined by
 * the daemon. */
#include "base/base.h"
#include "core/server.h"

#include <string.h>

int mp_host_is_local(const char *domain)
{
    const struct mp_config *cfg = mp_server.cfg;
    for (size_t i = 0; i < cfg->n_hosts; i++)
        if (strcmp(cfg->hosts[i].domain, domain) == 0)
            return 1;
    return 0;
}

const char *mp_host_nth(size_t i)
{
    const struct mp_config *cfg = mp_server.cfg;
    return i < cfg->n_hosts ? cfg->hosts[i].domain : NULL;
}

const char *mp_state_dir(void)
{
    return mp_server.cfg->state_dir;
}
