/* config.c - reads and validates the server configuration (libconfig).
 *
 * Every key is checked: unknown keys, wrong types and out-of-range values
 * fail with "FILE:LINE: message". Everything but `hosts` has a default;
 * conf/magpie.conf documents each key. Relative paths are taken relative to
 * the directory of the config file. Module option groups are not checked
 * here: they are kept as mp_config_setting lists (with line numbers) for the
 * module loader, which knows each module's option table. */
#include "conf/config.h"
#include "base/base.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MAGPIE_STATE_DIR
#define MAGPIE_STATE_DIR "/var/lib/magpie"
#endif
#ifndef MAGPIE_MODULE_DIR
#define MAGPIE_MODULE_DIR "/usr/local/lib/magpie"
#endif

/* State shared by the validation helpers of one load. */
struct cctx {
    const char *path; /* the file as given */
    char *basedir;    /* absolute directory of the file */
    char *err;
    size_t errlen;
};

static const char *const default_modules[] = {
    "disco", "ping", "version", "time",  "muc",         "roster", "offline", "mam", "carbons", "blocking",
    "vcard", "private", "last", "csi", "sm", "adhoc", "admin_adhoc", "upload", "pep"};

/* Writes "FILE:LINE: message" for setting s (or "FILE: message" when s is
 * NULL) into the error buffer. Always returns MAGPIE_ERR. */
static int cerr(struct cctx *x, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cerr(struct cctx *x, const config_setting_t *s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (x->err == NULL || x->errlen == 0)
        return MAGPIE_ERR;
    if (s != NULL) {
        const char *file = config_setting_source_file(s);
        if (file == NULL || strcmp(file, x->path) == 0)
            snprintf(x->err, x->errlen, "%s:%u: %s", x->path,
                     (unsigned)config_setting_source_line(s), msg);
        else /* an @include'd file, named relative to the include dir */
            snprintf(x->err, x->errlen, "%s%s%s:%u: %s", file[0] == '/' ? "" : x->basedir,
                     file[0] == '/' ? "" : "/", file, (unsigned)config_setting_source_line(s), msg);
    } else {
        snprintf(x->err, x->errlen, "%s: %s", x->path, msg);
    }
    return MAGPIE_ERR;
}

/* Joins a setting path for messages: "limits" + "rate" -> "limits.rate". */
static void keypath(char *out, size_t outlen, const char *prefix, const char *name)
{
    if (prefix == NULL || *prefix == '\0')
        snprintf(out, outlen, "%s", name);
    else
        snprintf(out, outlen, "%s.%s", prefix, name);
}

/* Fails on the first member of group g whose name is not in allowed
 * (NULL-terminated). g must be a group. */
static int check_keys(struct cctx *x, const config_setting_t *g, const char *prefix,
                      const char *const *allowed)
{
    int n = config_setting_length(g);

    for (int i = 0; i < n; i++) {
        config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);
        int ok = 0;
        for (const char *const *a = allowed; *a; a++) {
            if (strcmp(*a, name) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            char kp[256];
            keypath(kp, sizeof(kp), prefix, name);
            return cerr(x, m, "unknown key '%s'", kp);
        }
    }
    return MAGPIE_OK;
}

/* Looks up a member that must be a group (or absent: *out = NULL). */
static int get_group(struct cctx *x, const config_setting_t *parent, const char *prefix,
                     const char *name, config_setting_t **out)
{
    config_setting_t *s = config_setting_get_member(parent, name);
    char kp[256];

    *out = NULL;
    if (s == NULL)
        return MAGPIE_OK;
    if (!config_setting_is_group(s)) {
        keypath(kp, sizeof(kp), prefix, name);
        return cerr(x, s, "'%s' must be a group { ... }", kp);
    }
    *out = s;
    return MAGPIE_OK;
}

/* Reads an optional string member into *out (a new string the config owns),
 * leaving *out untouched when absent. Empty strings are refused unless
 * allow_empty. */
static int get_string(struct cctx *x, const config_setting_t *g, const char *prefix,
                      const char *name, int allow_empty, char **out)
{
    config_setting_t *s = g ? config_setting_get_member(g, name) : NULL;
    char kp[256];

    if (s == NULL)
        return MAGPIE_OK;
    keypath(kp, sizeof(kp), prefix, name);
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return cerr(x, s, "'%s' must be a string", kp);
    const char *v = config_setting_get_string(s);
    if (!allow_empty && *v == '\0')
        return cerr(x, s, "'%s' must not be empty", kp);
    free(*out);
    *out = mp_strdup(v);
    return MAGPIE_OK;
}

/* Reads an optional integer member within [min, max]. */
static int get_int(struct cctx *x, const config_setting_t *g, const char *prefix, const char *name,
                   long long min, long long max, long long *out)
{
    config_setting_t *s = g ? config_setting_get_member(g, name) : NULL;
    char kp[256];
    long long v;

    if (s == NULL)
        return MAGPIE_OK;
    keypath(kp, sizeof(kp), prefix, name);
    if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64)
        return cerr(x, s, "'%s' must be an integer between %lld and %lld", kp, min, max);
    v = config_setting_get_int64(s);
    if (v < min || v > max)
        return cerr(x, s, "'%s' must be an integer between %lld and %lld", kp, min, max);
    *out = v;
    return MAGPIE_OK;
}

static int get_bool(struct cctx *x, const config_setting_t *g, const char *prefix, const char *name,
                    int *out)
{
    config_setting_t *s = g ? config_setting_get_member(g, name) : NULL;
    char kp[256];

    if (s == NULL)
        return MAGPIE_OK;
    keypath(kp, sizeof(kp), prefix, name);
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return cerr(x, s, "'%s' must be true or false", kp);
    *out = config_setting_get_bool(s) ? 1 : 0;
    return MAGPIE_OK;
}

/* Returns a new absolute path: p itself if absolute, else basedir/p. */
static char *resolve_path(const struct cctx *x, const char *p)
{
    if (p[0] == '/')
        return mp_strdup(p);
    size_t n = strlen(x->basedir) + strlen(p) + 2;
    char *r = mp_malloc(n);
    snprintf(r, n, "%s/%s", x->basedir, p);
    return r;
}

/* Replaces *p (owned) by its resolved form. */
static void resolve_inplace(const struct cctx *x, char **p)
{
    if (*p == NULL)
        return;
    char *r = resolve_path(x, *p);
    free(*p);
    *p = r;
}

/* Returns a new string: the absolute directory containing path. */
static char *config_dir_of(const char *path)
{
    char *copy = mp_strdup(path);
    char *slash = strrchr(copy, '/');
    char *dir;

    if (slash == NULL) {
        free(copy);
        copy = mp_strdup(".");
    } else if (slash == copy) {
        copy[1] = '\0';
    } else {
        *slash = '\0';
    }
    dir = realpath(copy, NULL);
    if (dir == NULL)
        dir = mp_strdup(copy);
    free(copy);
    return dir;
}

/* ---- sections ---- */

static int load_log(struct cctx *x, struct mp_config *c, const config_setting_t *root)
{
    static const char *const keys[] = {"level", "file", NULL};
    config_setting_t *g;
    enum mp_log_level lvl;

    if (get_group(x, root, NULL, "log", &g) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (g == NULL)
        return MAGPIE_OK;
    if (check_keys(x, g, "log", keys) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (get_string(x, g, "log", "level", 0, &c->log_level) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (mp_log_level_parse(c->log_level, &lvl) != MAGPIE_OK)
        return cerr(x, config_setting_get_member(g, "level"),
                    "'log.level' must be one of debug, info, notice, warn, error");
    if (get_string(x, g, "log", "file", 0, &c->log_file) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (strcmp(c->log_file, "-") != 0 && strcmp(c->log_file, "syslog") != 0)
        resolve_inplace(x, &c->log_file);
    return MAGPIE_OK;
}

static int load_hosts(struct cctx *x, struct mp_config *c, const config_setting_t *root)
{
    static const char *const keys[] = {"domain", "cert", "key", NULL};
    config_setting_t *l = config_setting_get_member(root, "hosts");
    int n;

    if (l == NULL)
        return cerr(x, NULL,
                    "'hosts' is missing: at least one host is required, "
                    "e.g. hosts = ( { domain = \"localhost\"; } );");
    if (!config_setting_is_list(l))
        return cerr(x, l, "'hosts' must be a list ( { domain = \"...\"; }, ... )");
    n = config_setting_length(l);
    if (n == 0)
        return cerr(x, l, "'hosts' is empty: at least one host is required");
    c->hosts = mp_calloc((size_t)n, sizeof(*c->hosts));
    for (int i = 0; i < n; i++) {
        config_setting_t *h = config_setting_get_elem(l, (unsigned)i);
        struct mp_config_host *host = &c->hosts[c->n_hosts];
        char prefix[64], norm[MP_JID_PART_MAX + 1];
        char *domain = NULL;

        snprintf(prefix, sizeof(prefix), "hosts[%d]", i);
        if (!config_setting_is_group(h))
            return cerr(x, h, "'%s' must be a group { domain = \"...\"; }", prefix);
        c->n_hosts++;
        if (check_keys(x, h, prefix, keys) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (get_string(x, h, prefix, "domain", 0, &domain) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (domain == NULL)
            return cerr(x, h, "'%s.domain' is missing", prefix);
        if (strchr(domain, '@') || strchr(domain, '/') ||
            mp_jid_nameprep(domain, norm, sizeof(norm)) != MAGPIE_OK || norm[0] == '\0') {
            cerr(x, config_setting_get_member(h, "domain"),
                 "'%s.domain' is not a valid domain: '%s'", prefix, domain);
            free(domain);
            return MAGPIE_ERR;
        }
        free(domain);
        host->domain = mp_strdup(norm);
        for (size_t j = 0; j + 1 < c->n_hosts; j++) {
            if (strcmp(c->hosts[j].domain, host->domain) == 0)
                return cerr(x, config_setting_get_member(h, "domain"), "duplicate host '%s'",
                            host->domain);
        }
        if (get_string(x, h, prefix, "cert", 0, &host->cert_file) != MAGPIE_OK ||
            get_string(x, h, prefix, "key", 0, &host->key_file) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (host->key_file != NULL && host->cert_file == NULL)
            return cerr(x, config_setting_get_member(h, "key"), "'%s.key' given without '%s.cert'",
                        prefix, prefix);
        /* a cert without key: one PEM holding both */
        if (host->cert_file != NULL && host->key_file == NULL)
            host->key_file = mp_strdup(host->cert_file);
        resolve_inplace(x, &host->cert_file);
        resolve_inplace(x, &host->key_file);
    }
    return MAGPIE_OK;
}

/* True when both addresses are of the same family (so the same port
 * conflicts). Addresses are already validated. */
static int same_family(const char *a, const char *b)
{
    return (strchr(a, ':') != NULL) == (strchr(b, ':') != NULL);
}

static int load_listeners(struct cctx *x, struct mp_config *c, const config_setting_t *root)
{
    static const char *const keys[] = {"type", "address", "port", "tls", NULL};
    config_setting_t *l = config_setting_get_member(root, "listeners");
    int n;

    if (l == NULL) {
        /* default: STARTTLS on 5222 and direct TLS on 5223, all interfaces */
        c->listeners = mp_calloc(2, sizeof(*c->listeners));
        c->listeners[0].kind = MP_LISTEN_C2S;
        c->listeners[0].address = mp_strdup("0.0.0.0");
        c->listeners[0].port = 5222;
        c->listeners[1].kind = MP_LISTEN_C2S_TLS;
        c->listeners[1].address = mp_strdup("0.0.0.0");
        c->listeners[1].port = 5223;
        c->n_listeners = 2;
        return MAGPIE_OK;
    }
    if (!config_setting_is_list(l))
        return cerr(x, l, "'listeners' must be a list ( { type = \"c2s\"; port = 5222; }, ... )");
    n = config_setting_length(l);
    if (n == 0)
        return cerr(x, l, "'listeners' is empty: at least one listener is required");
    c->listeners = mp_calloc((size_t)n, sizeof(*c->listeners));
    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(l, (unsigned)i);
        struct mp_config_listener *li = &c->listeners[c->n_listeners];
        char prefix[64];
        char *type = NULL;
        long long port = -1;
        unsigned char addrbuf[16];

        snprintf(prefix, sizeof(prefix), "listeners[%d]", i);
        if (!config_setting_is_group(s))
            return cerr(x, s, "'%s' must be a group { type = \"c2s\"; port = 5222; }", prefix);
        c->n_listeners++;
        if (check_keys(x, s, prefix, keys) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (get_string(x, s, prefix, "type", 0, &type) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (type == NULL)
            return cerr(x, s, "'%s.type' is missing (\"c2s\", \"c2s_tls\" or \"http\")", prefix);
        if (strcmp(type, "c2s") == 0) {
            li->kind = MP_LISTEN_C2S;
        } else if (strcmp(type, "c2s_tls") == 0) {
            li->kind = MP_LISTEN_C2S_TLS;
        } else if (strcmp(type, "http") == 0) {
            li->kind = MP_LISTEN_HTTP;
        } else {
            cerr(x, config_setting_get_member(s, "type"),
                 "'%s.type' must be \"c2s\", \"c2s_tls\" or \"http\", not \"%s\"", prefix, type);
            free(type);
            return MAGPIE_ERR;
        }
        free(type);
        li->address = mp_strdup("0.0.0.0");
        if (get_string(x, s, prefix, "address", 0, &li->address) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (inet_pton(AF_INET, li->address, addrbuf) != 1 &&
            inet_pton(AF_INET6, li->address, addrbuf) != 1)
            return cerr(x, config_setting_get_member(s, "address"),
                        "'%s.address' must be a numeric IPv4 or IPv6 address, not \"%s\"", prefix,
                        li->address);
        if (get_int(x, s, prefix, "port", 1, 65535, &port) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (port < 0)
            return cerr(x, s, "'%s.port' is missing", prefix);
        li->port = (int)port;
        if (get_bool(x, s, prefix, "tls", &li->tls) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (li->tls && li->kind != MP_LISTEN_HTTP)
            return cerr(x, config_setting_get_member(s, "tls"),
                        "'%s.tls' is for \"http\" listeners (use type \"c2s_tls\" for TLS "
                        "from the first byte)",
                        prefix);
        for (size_t j = 0; j + 1 < c->n_listeners; j++) {
            if (c->listeners[j].port == li->port &&
                same_family(c->listeners[j].address, li->address))
                return cerr(x, config_setting_get_member(s, "port"),
                            "duplicate listener port %d (already used by listeners[%zu])", li->port,
                            j);
        }
    }
    return MAGPIE_OK;
}

static int load_storage(struct cctx *x, struct mp_config *c, const config_setting_t *root)
{
    static const char *const keys[] = {"driver", "sqlite", "mysql", "threads", NULL};
    static const char *const sqlite_keys[] = {"path", "cache_kib", NULL};
    static const char *const mysql_keys[] = {"host",     "port",   "user", "password",
                                             "database", "socket", NULL};
    config_setting_t *g, *sq, *my;
    long long v;

    if (get_group(x, root, NULL, "storage", &g) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (g != NULL) {
        if (check_keys(x, g, "storage", keys) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (get_string(x, g, "storage", "driver", 0, &c->storage_driver) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (strcmp(c->storage_driver, "mariadb") == 0) {
            free(c->storage_driver);
            c->storage_driver = mp_strdup("mysql");
        }
        if (strcmp(c->storage_driver, "sqlite") != 0 && strcmp(c->storage_driver, "mysql") != 0)
            return cerr(x, config_setting_get_member(g, "driver"),
                        "'storage.driver' must be \"sqlite\" or \"mysql\", not \"%s\"",
                        c->storage_driver);
        v = c->storage_threads;
        if (get_int(x, g, "storage", "threads", 1, 64, &v) != MAGPIE_OK)
            return MAGPIE_ERR;
        c->storage_threads = (int)v;

        if (get_group(x, g, "storage", "sqlite", &sq) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (sq != NULL) {
            if (check_keys(x, sq, "storage.sqlite", sqlite_keys) != MAGPIE_OK ||
                get_string(x, sq, "storage.sqlite", "path", 0, &c->sqlite_path) != MAGPIE_OK)
                return MAGPIE_ERR;
            v = c->sqlite_cache_kib;
            if (get_int(x, sq, "storage.sqlite", "cache_kib", 64, 1048576, &v) != MAGPIE_OK)
                return MAGPIE_ERR;
            c->sqlite_cache_kib = (int)v;
        }
        if (get_group(x, g, "storage", "mysql", &my) != MAGPIE_OK)
            return MAGPIE_ERR;
        if (my != NULL) {
            if (check_keys(x, my, "storage.mysql", mysql_keys) != MAGPIE_OK ||
                get_string(x, my, "storage.mysql", "host", 0, &c->mysql_host) != MAGPIE_OK ||
                get_string(x, my, "storage.mysql", "user", 0, &c->mysql_user) != MAGPIE_OK ||
                get_string(x, my, "storage.mysql", "password", 1, &c->mysql_password) !=
                    MAGPIE_OK ||
                get_string(x, my, "storage.mysql", "database", 0, &c->mysql_database) !=
                    MAGPIE_OK ||
                get_string(x, my, "storage.mysql", "socket", 0, &c->mysql_socket) != MAGPIE_OK)
                return MAGPIE_ERR;
            v = c->mysql_port;
            if (get_int(x, my, "storage.mysql", "port", 1, 65535, &v) != MAGPIE_OK)
                return MAGPIE_ERR;
            c->mysql_port = (int)v;
        }
    }
    if (c->sqlite_path == NULL) {
        size_t n = strlen(c->state_dir) + sizeof("/magpie.db");
        c->sqlite_path = mp_malloc(n);
        snprintf(c->sqlite_path, n, "%s/magpie.db", c->state_dir);
    } else if (strcmp(c->sqlite_path, ":memory:") != 0) {
        resolve_inplace(x, &c->sqlite_path);
    }
    resolve_inplace(x, &c->mysql_socket);
    return MAGPIE_OK;
}

/* Reads the integer key group.name into c->field, within [lo, hi]; returns
 * from the calling loader on error. Needs x, g and c in scope. */
#define INT_KEY(group, name, lo, hi, field)                                                        \
    do {                                                                                           \
        long long v_ = (long long)(c->field);                                                      \
        if (get_int(x, g, group, name, lo, hi, &v_) != MAGPIE_OK)                                  \
            return MAGPIE_ERR;                                                                     \
        c->field = (__typeof__(c->field))v_;                                                       \
    } while (0)
#define LIMIT(name, lo, hi, field) INT_KEY("limits", name, lo, hi, field)

static int load_limits(struct cctx *x, struct mp_config *c, const config_setting_t *root)
{
    static const char *const keys[] = {"max_stanza_size",
                                       "max_depth",
                                       "max_attributes",
                                       "max_attribute_length",
                                       "max_text_length",
                                       "max_sasl_size",
                                       "max_connections",
                                       "rate",
                                       "burst",
                                       "http_rate",
                                       "max_output_buffer",
                                       "negotiation_timeout",
                                       "output_stall_timeout",
                                       "max_stanza_memory",
                                       "max_elements",
                                       "preauth_max_stanza_size",
                                       "preauth_max_elements",
                                       "max_connections_per_address",
                                       "connection_rate_per_address",
                                       "connection_burst_per_address",
                                       "worker_queue",
                                       "storage_queue",
                                       NULL};
    config_setting_t *g;

    if (get_group(x, root, NULL, "limits", &g) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (g == NULL)
        return MAGPIE_OK;
    if (check_keys(x, g, "limits", keys) != MAGPIE_OK)
        return MAGPIE_ERR;
    LIMIT("max_stanza_size", 1024, 67108864, max_stanza_size);
    LIMIT("max_depth", 4, 1024, max_depth);
    LIMIT("max_attributes", 4, 4096, max_attrs);
    LIMIT("max_attribute_length", 256, 67108864, max_attr_len);
    LIMIT("max_text_length", 1024, 67108864, max_text);
    LIMIT("max_sasl_size", 512, 1048576, max_sasl_size);
    LIMIT("max_connections", 1, 10000000, max_connections);
    LIMIT("rate", 0, 1073741824, rate_bytes_per_sec);
    LIMIT("burst", 1024, 1073741824, rate_burst);
    LIMIT("http_rate", 0, 1073741824, http_rate);
    LIMIT("max_output_buffer", 4096, 1073741824, max_output_buffer);
    LIMIT("negotiation_timeout", 1, 3600, negotiation_timeout);
    LIMIT("output_stall_timeout", 1, 3600, output_stall_timeout);
    LIMIT("max_stanza_memory", 4096, 1073741824, max_stanza_memory);
    LIMIT("max_elements", 8, 1048576, max_elements);
    LIMIT("preauth_max_stanza_size", 1024, 1048576, preauth_max_stanza_size);
    LIMIT("preauth_max_elements", 4, 4096, preauth_max_elements);
    LIMIT("max_connections_per_address", 1, 10000000, max_connections_per_address);
    LIMIT("connection_rate_per_address", 1, 1000000, connection_rate_per_address);
    LIMIT("connection_burst_per_address", 1, 10000000, connection_burst_per_address);
    LIMIT("worker_queue", 64, 100000000, worker_queue);
    LIMIT("storage_queue", 16, 100000000, storage_queue);
    if (c->preauth_max_stanza_size < c->max_sasl_size + 256)
        return cerr(x, config_setting_get_member(g, "preauth_max_stanza_size"),
                    "'limits.preauth_max_stanza_size' (%zu) must exceed 'limits.max_sasl_size' "
                    "(%zu) by at least 256 bytes",
                    c->preauth_max_stanza_size, c->max_sasl_size);
    return MAGPIE_OK;
}

static int load_security(struct cctx *x, struct mp_config *c, const config_setting_t *root)
{
    static const char *const keys[] = {
        "require_tls",    "scram_iterations",    "channel_binding_strict",
        "auth_threads",   "auth_queue",          "auth_failures_free",
        "auth_delay_max", "auth_failure_window", NULL};
    config_setting_t *g;

    if (get_group(x, root, NULL, "security", &g) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (g == NULL)
        return MAGPIE_OK;
    if (check_keys(x, g, "security", keys) != MAGPIE_OK ||
        get_bool(x, g, "security", "require_tls", &c->require_tls) != MAGPIE_OK ||
        get_bool(x, g, "security", "channel_binding_strict", &c->channel_binding_strict) !=
            MAGPIE_OK)
        return MAGPIE_ERR;
    INT_KEY("security", "scram_iterations", 4096, 10000000, scram_iterations);
    INT_KEY("security", "auth_threads", 1, 64, auth_threads);
    INT_KEY("security", "auth_queue", 1, 1000000, auth_queue);
    INT_KEY("security", "auth_failures_free", 0, 1000, auth_failures_free);
    INT_KEY("security", "auth_delay_max", 0, 3600, auth_delay_max);
    INT_KEY("security", "auth_failure_window", 1, 86400, auth_failure_window);
    return MAGPIE_OK;
}

static int valid_module_name(const char *s)
{
    if (*s == '\0' || strlen(s) > 64)
        return 0;
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    }
    return 1;
}

/* Copies the option members of module group g (all but "name") into a new
 * mp_config_setting list owned by the config. Only scalar values are
 * allowed; which names and types a module accepts is the loader's job. */
static int load_module_options(struct cctx *x, struct mp_config_module *m,
                               const config_setting_t *g, const char *prefix)
{
    struct mp_config_setting **tail = &m->options;
    int n = config_setting_length(g);

    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        struct mp_config_setting *o;
        char buf[64];
        const char *val;

        if (strcmp(name, "name") == 0)
            continue;
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_STRING:
            val = config_setting_get_string(s);
            break;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
            snprintf(buf, sizeof(buf), "%lld", config_setting_get_int64(s));
            val = buf;
            break;
        case CONFIG_TYPE_BOOL:
            val = config_setting_get_bool(s) ? "true" : "false";
            break;
        default:
            return cerr(x, s, "'%s.%s' must be a string, an integer or a boolean", prefix, name);
        }
        o = mp_calloc(1, sizeof(*o));
        o->name = mp_strdup(name);
        o->value = mp_strdup(val);
        o->is_string = config_setting_type(s) == CONFIG_TYPE_STRING;
        o->is_bool = config_setting_type(s) == CONFIG_TYPE_BOOL;
        o->is_int = !o->is_string && !o->is_bool;
        o->line = (int)config_setting_source_line(s);
        *tail = o;
        tail = &o->next;
    }
    return MAGPIE_OK;
}

static int load_modules(struct cctx *x, struct mp_config *c, const config_setting_t *root)
{
    config_setting_t *l = config_setting_get_member(root, "modules");
    int n;

    if (l == NULL) {
        size_t k = sizeof(default_modules) / sizeof(default_modules[0]);
        c->modules = mp_calloc(k, sizeof(*c->modules));
        for (size_t i = 0; i < k; i++)
            c->modules[i].name = mp_strdup(default_modules[i]);
        c->n_modules = k;
        return MAGPIE_OK;
    }
    if (!config_setting_is_list(l) && !config_setting_is_array(l))
        return cerr(x, l, "'modules' must be a list ( \"ping\", { name = \"ping\"; ... }, ... )");
    n = config_setting_length(l);
    c->modules = mp_calloc(n > 0 ? (size_t)n : 1, sizeof(*c->modules));
    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(l, (unsigned)i);
        struct mp_config_module *m = &c->modules[c->n_modules];
        config_setting_t *ns = s;
        char prefix[64];

        snprintf(prefix, sizeof(prefix), "modules[%d]", i);
        if (config_setting_is_group(s)) {
            ns = config_setting_get_member(s, "name");
            if (ns == NULL)
                return cerr(x, s, "'%s.name' is missing", prefix);
        }
        if (config_setting_type(ns) != CONFIG_TYPE_STRING)
            return cerr(x, ns,
                        "'%s' must be a module name (string) or a group "
                        "{ name = \"...\"; option = value; }",
                        prefix);
        m->name = mp_strdup(config_setting_get_string(ns));
        c->n_modules++;
        if (!valid_module_name(m->name))
            return cerr(x, ns, "'%s': bad module name \"%s\" (lower-case letters, digits, '_')",
                        prefix, m->name);
        for (size_t j = 0; j + 1 < c->n_modules; j++) {
            if (strcmp(c->modules[j].name, m->name) == 0)
                return cerr(x, ns, "module '%s' is listed twice", m->name);
        }
        if (config_setting_is_group(s) && load_module_options(x, m, s, prefix) != MAGPIE_OK)
            return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

/* Fills c with the defaults of every key. */
static void set_defaults(struct mp_config *c)
{
    c->state_dir = mp_strdup(MAGPIE_STATE_DIR);
    c->module_dir = mp_strdup(MAGPIE_MODULE_DIR);
    c->workers = 0;
    c->log_level = mp_strdup("info");
    c->log_file = mp_strdup("-");
    c->storage_driver = mp_strdup("sqlite");
    c->sqlite_cache_kib = 512;
    c->mysql_host = mp_strdup("localhost");
    c->mysql_port = 3306;
    c->mysql_user = mp_strdup("magpie");
    c->mysql_password = mp_strdup("");
    c->mysql_database = mp_strdup("magpie");
    c->storage_threads = 2;
    c->max_stanza_size = 262144;
    c->max_depth = 32;
    c->max_attrs = 64;
    c->max_attr_len = 8192;
    c->max_text = 262144;
    c->max_sasl_size = 8192;
    c->max_connections = 100000;
    c->rate_bytes_per_sec = 65536;
    c->rate_burst = 262144;
    c->http_rate = 4194304;
    c->max_output_buffer = 1048576;
    c->negotiation_timeout = 30;
    c->output_stall_timeout = 30;
    c->max_stanza_memory = 1048576;
    c->max_elements = 8192;
    c->preauth_max_stanza_size = 10240;
    c->preauth_max_elements = 32;
    c->max_connections_per_address = 256;
    c->connection_rate_per_address = 64;
    c->connection_burst_per_address = 256;
    c->worker_queue = 65536;
    c->storage_queue = 16384;
    c->require_tls = 1;
    c->scram_iterations = 10000;
    c->auth_threads = 2;
    c->auth_queue = 1024;
    c->auth_failures_free = 3;
    c->auth_delay_max = 30;
    c->auth_failure_window = 600;
}

/* admins = [ "alice@example.org", ... ]: bare JIDs of the server's
 * administrators (ad-hoc service administration, XEP-0133). Optional,
 * default none. Each is normalised; a full JID or a bad one is an error. */
static int load_admins(struct cctx *x, struct mp_config *c, const config_setting_t *root)
{
    const config_setting_t *l = config_setting_get_member(root, "admins");
    if (!l)
        return MAGPIE_OK;
    if (!config_setting_is_array(l) && !config_setting_is_list(l))
        return cerr(x, l, "'admins' must be a list of bare JIDs, e.g. [ \"admin@example.org\" ]");
    int n = config_setting_length(l);
    c->admins = mp_calloc((size_t)n + 1, sizeof *c->admins);
    for (int i = 0; i < n; i++) {
        const char *v = config_setting_get_string(config_setting_get_elem(l, (unsigned)i));
        mp_jid j;
        if (!v || mp_jid_parse(&j, v) != MAGPIE_OK || j.resource) {
            if (v)
                mp_jid_free(&j);
            return cerr(x, config_setting_get_elem(l, (unsigned)i),
                        "admins[%d] is not a bare JID (user@domain)", i);
        }
        c->admins[c->n_admins++] = mp_strdup(j.bare);
        mp_jid_free(&j);
    }
    return MAGPIE_OK;
}

static int load_root(struct cctx *x, struct mp_config *c, const config_setting_t *root)
{
    static const char *const keys[] = {"state_dir", "module_dir", "workers", "log",
                                       "hosts",     "listeners",  "storage", "limits",
                                       "security",  "modules",    "admins",  NULL};
    long long v = 0;

    if (check_keys(x, root, NULL, keys) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (get_string(x, root, NULL, "state_dir", 0, &c->state_dir) != MAGPIE_OK ||
        get_string(x, root, NULL, "module_dir", 0, &c->module_dir) != MAGPIE_OK)
        return MAGPIE_ERR;
    resolve_inplace(x, &c->state_dir);
    resolve_inplace(x, &c->module_dir);
    if (get_int(x, root, NULL, "workers", 0, 1024, &v) != MAGPIE_OK)
        return MAGPIE_ERR;
    c->workers = (int)v;
    if (load_log(x, c, root) != MAGPIE_OK || load_hosts(x, c, root) != MAGPIE_OK ||
        load_listeners(x, c, root) != MAGPIE_OK || load_storage(x, c, root) != MAGPIE_OK ||
        load_limits(x, c, root) != MAGPIE_OK || load_security(x, c, root) != MAGPIE_OK ||
        load_modules(x, c, root) != MAGPIE_OK || load_admins(x, c, root) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

struct mp_config *mp_config_load(const char *path, char *err, size_t errlen)
{
    struct cctx x = {path, NULL, err, errlen};
    struct mp_config *c;
    struct stat st;
    config_t cfg;
    FILE *f;
    int rc;

    if (err && errlen)
        err[0] = '\0';
    /* libconfig only says "file I/O error": find the real reason first */
    f = fopen(path, "r");
    if (f == NULL) {
        cerr(&x, NULL, "cannot read: %s", strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        cerr(&x, NULL, "cannot read: %s", strerror(EISDIR));
        return NULL;
    }
    /* libconfig's scanner exits the process on a NUL byte in some places
     * (e.g. inside an @include path): a text file never has one */
    int ch, line = 1;
    while ((ch = getc(f)) != EOF && ch != '\0')
        line += ch == '\n';
    fclose(f);
    if (ch == '\0') {
        if (err && errlen)
            snprintf(err, errlen, "%s:%d: a NUL byte: not a text file", path, line);
        return NULL;
    }

    x.basedir = config_dir_of(path);
    config_init(&cfg);
    config_set_include_dir(&cfg, x.basedir);
    if (config_read_file(&cfg, path) != CONFIG_TRUE) {
        const char *ef = config_error_file(&cfg);
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
            cerr(&x, NULL, "cannot read: %s", config_error_text(&cfg));
        else if (err && errlen)
            snprintf(err, errlen, "%s%s%s:%d: %s",
                     ef == NULL || ef[0] == '/' || strcmp(ef, path) == 0 ? "" : x.basedir,
                     ef == NULL || ef[0] == '/' || strcmp(ef, path) == 0 ? "" : "/", ef ? ef : path,
                     config_error_line(&cfg), config_error_text(&cfg));
        config_destroy(&cfg);
        free(x.basedir);
        return NULL;
    }

    c = mp_calloc(1, sizeof(*c));
    c->file = mp_strdup(path);
    set_defaults(c);
    rc = load_root(&x, c, config_root_setting(&cfg));
    config_destroy(&cfg);
    free(x.basedir);
    if (rc != MAGPIE_OK) {
        mp_config_free(c);
        return NULL;
    }
    return c;
}

void mp_config_free(struct mp_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_admins; i++)
        free(c->admins[i]);
    free(c->admins);
    for (size_t i = 0; i < c->n_hosts; i++) {
        free(c->hosts[i].domain);
        free(c->hosts[i].cert_file);
        free(c->hosts[i].key_file);
    }
    free(c->hosts);
    for (size_t i = 0; i < c->n_listeners; i++)
        free(c->listeners[i].address);
    free(c->listeners);
    for (size_t i = 0; i < c->n_modules; i++) {
        struct mp_config_setting *o = c->modules[i].options, *next;
        for (; o != NULL; o = next) {
            next = o->next;
            free(o->name);
            free(o->value);
            free(o);
        }
        free(c->modules[i].name);
    }
    free(c->modules);
    free(c->file);
    free(c->state_dir);
    free(c->module_dir);
    free(c->storage_driver);
    free(c->sqlite_path);
    free(c->mysql_host);
    free(c->mysql_user);
    free(c->mysql_password);
    free(c->mysql_database);
    free(c->mysql_socket);
    free(c->log_level);
    free(c->log_file);
    free(c);
}

const struct mp_config_host *mp_config_host_find(const struct mp_config *c, const char *domain)
{
    if (c == NULL || domain == NULL)
        return NULL;
    for (size_t i = 0; i < c->n_hosts; i++) {
        if (strcasecmp(c->hosts[i].domain, domain) == 0)
            return &c->hosts[i];
    }
    return NULL;
}
