/* server.c - questions about the server's configuration that every core
 * file may ask (core/server.h). The state itself (mp_server) is defined by
 * the daemon. */
#include "base/base.h"
#include "core/server.h"

#include <magpie/http.h>
#include <stdio.h>
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

/* include/magpie/http.h: a question about the configured listeners. */
int mp_http_base_url(char *buf, size_t len)
{
    const struct mp_config *cfg = mp_server.cfg;
    const char *host = mp_host_nth(0);
    for (size_t i = 0; host && i < 2 * cfg->n_listeners; i++) {
        /* an HTTPS listener first, then a plain one */
        const struct mp_config_listener *l = &cfg->listeners[i % cfg->n_listeners];
        if (l->kind != MP_LISTEN_HTTP || (i < cfg->n_listeners && !l->tls))
            continue;
        int n = snprintf(buf, len, "%s://%s:%d", l->tls ? "https" : "http", host, l->port);
        return n > 0 && (size_t)n < len ? MAGPIE_OK : MAGPIE_ERR;
    }
    return MAGPIE_ERR;
}

int mp_service_domain_name(const char *configured, const char *label, char *buf, size_t len)
{
    if (configured && *configured) {
        if (mp_jid_nameprep(configured, buf, len) == MAGPIE_OK)
            return MAGPIE_OK;
        mp_log(MP_LOG_ERROR, "%s: invalid domain '%s'", label, configured);
        return MAGPIE_ERR;
    }
    const char *host = mp_host_nth(0);
    int n = host ? snprintf(buf, len, "%s.%s", label, host) : -1;
    if (n > 0 && (size_t)n < len)
        return MAGPIE_OK;
    mp_log(MP_LOG_ERROR, "%s: no virtual host to name the service after; set 'domain'", label);
    return MAGPIE_ERR;
}
