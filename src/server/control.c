/* control.c - the admin control socket <state_dir>/magpied.sock.
 *
 * One command line per connection ("status" or "reload"); the reply is
 * "key value" lines, then the server closes the connection. Only the
 * owner of the state directory can connect (socket mode 0600). */
#include "base/base.h"
#include "server/control.h"
#include "core/server.h"
#include "core/router.h"
#include "core/modules.h"

#include <errno.h>
#include <stdlib.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void (*mp_control_reload)(void);

static struct evconnlistener *control_listener;
static char control_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

/* The "status" reply: what the server is, its gauges, the core counters
 * and the modules' counters, one "name value" line each. */
static void status_write(struct evbuffer *out)
{
    evbuffer_add_printf(out, "version %s\n", MAGPIE_VERSION_STRING);
    evbuffer_add_printf(out, "pid %ld\n", (long)getpid());
    evbuffer_add_printf(out, "uptime %.0f\n", mp_now() - mp_server.started);
    evbuffer_add_printf(out, "workers %d\n", mp_server.n_workers);
    evbuffer_add_printf(out, "connections %d\n", atomic_load(&mp_server.connections));
    evbuffer_add_printf(out, "sessions %zu\n", mp_router_count());
    evbuffer_add_printf(out, "modules %zu\n", mp_modules_count());
    mp_stat_write_all(out);
    size_t throttled[MP_AUTHGUARD_KINDS];
    mp_authguard_stats(mp_server.auth_guard, mp_now(), throttled, NULL);
    evbuffer_add_printf(out, "auth_throttled_addresses %zu\n", throttled[MP_AUTHGUARD_ADDRESS]);
    evbuffer_add_printf(out, "auth_throttled_accounts %zu\n", throttled[MP_AUTHGUARD_ACCOUNT]);
    evbuffer_add_printf(out, "auth_pool_queued %zu\n", mp_workpool_queued(mp_server.auth_pool));
    mp_module_counters_write(out);
}

static void control_write_done(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_free(bev);
}

static void control_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    (void)arg;
    bufferevent_free(bev);
}

static void control_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_ANY);
    if (!line) {
        if (evbuffer_get_length(in) > 256)
            bufferevent_free(bev);
        return;
    }
    struct evbuffer *out = bufferevent_get_output(bev);
    if (strcmp(line, "status") == 0) {
        status_write(out);
    } else if (strncmp(line, "account-deleted ", 16) == 0) {
        /* magpiectl user del removed it from storage: tell the modules and
         * end its sessions */
        mp_jid j;
        if (mp_jid_parse(&j, line + 16) == MAGPIE_OK && j.local && !j.resource &&
            mp_host_is_local(j.domain)) {
            mp_account_deleted(j.domain, j.local);
            evbuffer_add_printf(out, "account-deleted ok\n");
        } else {
            evbuffer_add_printf(out, "error not an account of this server\n");
        }
        mp_jid_free(&j);
    } else if (strcmp(line, "reload") == 0) {
        if (mp_control_reload)
            mp_control_reload();
        evbuffer_add_printf(out, "reload ok\n");
    } else {
        evbuffer_add_printf(out, "error unknown command\n");
    }
    free(line);
    bufferevent_disable(bev, EV_READ);
    bufferevent_setcb(bev, NULL, control_write_done, control_event, NULL);
}

static void control_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int socklen, void *arg)
{
    (void)sa;
    (void)socklen;
    (void)arg;
    struct bufferevent *bev =
        bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, control_read, NULL, control_event, NULL);
    bufferevent_enable(bev, EV_READ);
}

int mp_control_start(mp_loop *loop, const struct mp_config *cfg)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if ((size_t)snprintf(control_path, sizeof control_path, "%s/magpied.sock", cfg->state_dir) >=
        sizeof control_path) {
        mp_log(MP_LOG_ERROR, "control socket path too long in state_dir %s", cfg->state_dir);
        return MAGPIE_ERR;
    }
    memcpy(sun.sun_path, control_path, strlen(control_path) + 1);
    unlink(control_path);
    mode_t old = umask(0077);
    control_listener = evconnlistener_new_bind(mp_loop_base(loop), control_accept, NULL,
                                               LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
                                               (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (!control_listener) {
        mp_log(MP_LOG_ERROR, "cannot listen on control socket %s: %s", control_path,
               strerror(errno));
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

void mp_control_stop(void)
{
    if (control_listener) {
        evconnlistener_free(control_listener);
        control_listener = NULL;
        unlink(control_path);
    }
}
