/* config.h - the server configuration (core-internal).
 *
 * Read from a libconfig file (conf/magpie.conf documents every key). Any
 * unknown key, missing required key or bad value fails with a message
 * naming the file and line. */
#ifndef MAGPIE_CONFIG_H
#define MAGPIE_CONFIG_H

#include <stddef.h>

struct mp_config_host {
    char *domain;    /* normalised (nameprep) */
    char *cert_file; /* PEM; NULL: <state_dir>/<domain>.crt, generated
                        self-signed on first start */
    char *key_file;
};

enum mp_listener_kind { MP_LISTEN_C2S = 0, MP_LISTEN_C2S_TLS = 1, MP_LISTEN_HTTP = 2 };

struct mp_config_listener {
    enum mp_listener_kind kind; /* "c2s" (STARTTLS), "c2s_tls" (direct TLS, XEP-0368) or
                                   "http" (the HTTP listener of include/magpie/http.h) */
    char *address;              /* "0.0.0.0", "::", "127.0.0.1" */
    int port;
    int tls; /* "http" only: TLS from the first byte, with the first host's certificate */
};

struct mp_config_module {
    char *name; /* "ping" -> mod_ping.so */
    /* the module's option group in the config, kept for validation by the
     * module loader against the module's option table; NULL if none */
    struct mp_config_setting *options;
};

/* One key=value from a module's option group, as written in the file. */
struct mp_config_setting {
    char *name;
    char *value; /* textual value (booleans "true"/"false") */
    int is_string, is_bool, is_int;
    int line; /* line in file, for error messages */
    struct mp_config_setting *next;
};

struct mp_config {
    char *file;       /* the path it was read from */
    char *state_dir;  /* certificates, sqlite db, control socket */
    char *module_dir; /* where mod_*.so live */

    struct mp_config_host *hosts;
    size_t n_hosts;
    struct mp_config_listener *listeners;
    size_t n_listeners;
    struct mp_config_module *modules;
    size_t n_modules;

    /* storage */
    char *storage_driver; /* "sqlite" | "mysql" */
    char *sqlite_path;    /* default <state_dir>/magpie.db */
    int sqlite_cache_kib; /* page cache per connection (default 512) */
    char *mysql_host;
    int mysql_port;
    char *mysql_user;
    char *mysql_password;
    char *mysql_database;
    char *mysql_socket; /* optional unix socket */
    int storage_threads;

    /* limits */
    size_t max_stanza_size;
    unsigned max_depth;
    unsigned max_attrs;
    size_t max_attr_len;
    size_t max_text;
    size_t max_sasl_size;
    int max_connections;
    long rate_bytes_per_sec; /* per connection read rate; 0 = unlimited */
    long rate_burst;
    long http_rate;                 /* per connection read rate of the HTTP listener (bodies are
                                       uploads, not stanzas); 0 = unlimited */
    size_t max_output_buffer;       /* bytes queued to one client; above it senders are paused */
    int output_stall_timeout;       /* seconds a client over max_output_buffer may write nothing
                                       before it is cut off */
    int negotiation_timeout;        /* seconds to finish STARTTLS+SASL+bind */
    size_t max_stanza_memory;       /* bytes one stanza's tree may take in memory */
    unsigned max_elements;          /* elements in one stanza */
    size_t preauth_max_stanza_size; /* the same limits before authentication */
    unsigned preauth_max_elements;
    int max_connections_per_address;  /* simultaneous, per IPv4 address / IPv6 /64 */
    int connection_rate_per_address;  /* new connections per second, per address */
    int connection_burst_per_address; /* new connections at once before the rate applies */
    int worker_queue;                 /* stanzas queued to one worker; senders pause above it */
    int storage_queue;                /* jobs queued to the storage pool; senders pause above it */

    /* security */
    int require_tls; /* c2s STARTTLS required (default true) */
    int scram_iterations;
    int channel_binding_strict; /* refuse SCRAM gs2 "y" while -PLUS is offered */
    int auth_threads;           /* threads deriving SCRAM/PLAIN keys off the event loops */
    int auth_queue;             /* key derivations waiting for a thread; more fail temporarily */
    int auth_failures_free;     /* failed logins per address/account before delays start */
    double auth_delay_max;      /* seconds: cap of the doubling delay after failures */
    int auth_failure_window;    /* seconds after which an address's/account's failures are
                                   forgotten */

    /* logging */
    char *log_level; /* debug|info|notice|warn|error */
    char *log_file;  /* NULL or "-": stderr; "syslog" */

    int workers; /* 0 = number of cores */

    /* server administrators: normalised bare JIDs (XEP-0133 commands) */
    char **admins;
    size_t n_admins;
};

/* Reads and validates path. On success returns a new config the caller
 * frees with mp_config_free; on failure returns NULL and writes
 * "FILE:LINE: message" into err. */
struct mp_config *mp_config_load(const char *path, char *err, size_t errlen);
void mp_config_free(struct mp_config *c);

/* The host entry for a domain, or NULL. */
const struct mp_config_host *mp_config_host_find(const struct mp_config *c, const char *domain);

#endif
