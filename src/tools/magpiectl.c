/* magpiectl.c - the admin command line tool.
 *
 *   magpiectl [-c FILE] user add|del|passwd USER@DOMAIN [--password P]
 *   magpiectl [-c FILE] user list DOMAIN
 *   magpiectl [-c FILE] device add ID@GWDOMAIN [--owner JID]... [--secret HEX]
 *   magpiectl [-c FILE] device del|show ID@GWDOMAIN
 *   magpiectl [-c FILE] device list GWDOMAIN
 *   magpiectl [-c FILE] device command GWDOMAIN COMMAND-ID
 *   magpiectl [-c FILE] check-config | status | reload
 *
 * User commands open the configured storage directly (sync mode), so they
 * work whether or not magpied runs. status and reload talk to the running
 * server over its control socket <state_dir>/magpied.sock.
 * Exit codes: 0 ok, 1 failure, 2 usage. */
#include "base/base.h"
#include "conf/config.h"
#include "storage/storage_driver.h"
#include "auth/accounts.h"
#include "auth/sasl.h"

#include <openssl/rand.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifndef MAGPIE_SYSCONF_DIR
#define MAGPIE_SYSCONF_DIR "/usr/local/etc/magpie"
#endif

#define EXIT_USAGE   2
#define PASSWORD_MAX 1024

static const char *progname = "magpiectl";

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: %s [-c FILE] COMMAND [ARGS]\n"
        "\n"
        "Commands:\n"
        "  user add USER@DOMAIN [--password P]   create an account\n"
        "  user passwd USER@DOMAIN [--password P] change its password\n"
        "  user del USER@DOMAIN                  delete an account\n"
        "  user list DOMAIN                      list the accounts of a host\n"
        "  device add ID@GWDOMAIN [--owner JID]... [--secret HEX]\n"
        "                                        provision a gateway device (mod_gateway);\n"
        "                                        prints its secret (random unless given)\n"
        "  device del ID@GWDOMAIN                remove a device\n"
        "  device show ID@GWDOMAIN               print its secret and owners\n"
        "  device list GWDOMAIN                  list the devices of a gateway domain\n"
        "  device command GWDOMAIN COMMAND-ID    a command's state and timestamps\n"
        "  check-config                          validate the configuration (core keys;\n"
        "                                        'magpied --check-config' also checks modules)\n"
        "  status                                show the running server's status\n"
        "  reload                                make the server reload (as SIGHUP)\n"
        "\n"
        "Options:\n"
        "  -c, --config FILE   configuration file (default: $MAGPIE_CONFIG,\n"
        "                      else %s/magpie.conf)\n"
        "  -h, --help          show this help\n"
        "  -V, --version       show the version\n"
        "\n"
        "Without --password, the password is read from the terminal (not echoed,\n"
        "asked twice) or, when stdin is not a terminal, as one line from stdin.\n"
        "Exit status: 0 success, 1 failure, 2 usage error.\n",
        progname, MAGPIE_SYSCONF_DIR);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", progname);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry '%s --help'.\n", progname);
    return EXIT_USAGE;
}

/* Loads the config, printing the error. Returns a config the caller frees,
 * or NULL. */
static struct mp_config *load_config(const char *path)
{
    char err[1024];
    struct mp_config *c = mp_config_load(path, err, sizeof(err));
    if (c == NULL)
        fprintf(stderr, "%s: %s\n", progname, err);
    return c;
}

/* ---- control socket ---- */

/* Sends one command line to the running server and copies its reply to
 * stdout. Returns the exit code. */
static int control_command(const struct mp_config *cfg, const char *cmd)
{
    struct sockaddr_un sun;
    char path[sizeof(sun.sun_path) + 1];
    char buf[4096];
    size_t len, got = 0;
    ssize_t n;
    int fd, failed = 0, first = 1;

    if ((size_t)snprintf(path, sizeof(path), "%s/magpied.sock", cfg->state_dir) >=
        sizeof(sun.sun_path)) {
        fprintf(stderr, "%s: control socket path too long: %s/magpied.sock\n", progname,
                cfg->state_dir);
        return EXIT_FAILURE;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "%s: socket: %s\n", progname, strerror(errno));
        return EXIT_FAILURE;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        int e = errno;
        close(fd);
        if (e == ENOENT || e == ECONNREFUSED)
            fprintf(stderr, "magpied is not running (no control socket at %s)\n", path);
        else
            fprintf(stderr, "%s: cannot connect to %s: %s\n", progname, path, strerror(e));
        return EXIT_FAILURE;
    }
    len = strlen(cmd);
    while (len > 0) {
        n = write(fd, cmd, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "%s: writing to %s: %s\n", progname, path, strerror(errno));
            close(fd);
            return EXIT_FAILURE;
        }
        cmd += n;
        len -= (size_t)n;
    }
    /* the server answers with lines and then closes the connection */
    for (;;) {
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "%s: reading from %s: %s\n", progname, path, strerror(errno));
            close(fd);
            return EXIT_FAILURE;
        }
        if (n == 0)
            break;
        if (first && strncmp(buf, "error", (size_t)n < 5 ? (size_t)n : 5) == 0)
            failed = 1;
        first = 0;
        fwrite(buf, 1, (size_t)n, failed ? stderr : stdout);
        got += (size_t)n;
    }
    close(fd);
    if (got == 0) {
        fprintf(stderr, "%s: magpied closed the control connection without a reply\n", progname);
        return EXIT_FAILURE;
    }
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* Sends a notice to the running server, if there is one: its reply is
 * not shown, and no server running is not an error. */
static void control_notify(const struct mp_config *cfg, const char *line)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    snprintf(path, sizeof path, "%s/magpied.sock", cfg->state_dir);
    if (access(path, F_OK) != 0)
        return;
    int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (saved < 0 || null < 0) {
        if (saved >= 0)
            close(saved);
        if (null >= 0)
            close(null);
        return;
    }
    fflush(stdout);
    dup2(null, STDOUT_FILENO);
    (void)control_command(cfg, line); /* a failure is reported on stderr */
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    close(null);
}

/* ---- passwords ---- */

/* Reads one line from fd into buf (without the newline). Returns its
 * length, or -1 on EOF before any byte / error / line too long. */
static int read_line(int fd, char *buf, size_t size)
{
    size_t n = 0;
    char ch;

    for (;;) {
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return n > 0 ? (int)n : -1;
        if (ch == '\n')
            break;
        if (n + 1 >= size)
            return -1;
        buf[n++] = ch;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    return (int)n;
}

/* Prompts on the terminal with echo off. Returns MAGPIE_OK or MAGPIE_ERR. */
static int prompt_noecho(const char *prompt, char *buf, size_t size)
{
    struct termios old, quiet;
    int rc, restore;

    fputs(prompt, stderr);
    fflush(stderr);
    restore = tcgetattr(STDIN_FILENO, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    rc = read_line(STDIN_FILENO, buf, size);
    if (restore)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    return rc < 0 ? MAGPIE_ERR : MAGPIE_OK;
}

/* Gets the new password into buf: from --password, else the terminal
 * (twice), else one line of stdin. Returns MAGPIE_OK or MAGPIE_ERR (message
 * printed). */
static int get_password(const char *given, char *buf, size_t size)
{
    if (given != NULL) {
        if (strlen(given) >= size) {
            fprintf(stderr, "%s: password too long (at most %zu bytes)\n", progname, size - 1);
            return MAGPIE_ERR;
        }
        strcpy(buf, given);
    } else if (isatty(STDIN_FILENO)) {
        char again[PASSWORD_MAX];
        if (prompt_noecho("New password: ", buf, size) != MAGPIE_OK ||
            prompt_noecho("Retype new password: ", again, sizeof(again)) != MAGPIE_OK) {
            fprintf(stderr, "%s: no password read\n", progname);
            return MAGPIE_ERR;
        }
        if (strcmp(buf, again) != 0) {
            explicit_bzero(again, sizeof(again));
            fprintf(stderr, "%s: the passwords do not match\n", progname);
            return MAGPIE_ERR;
        }
        explicit_bzero(again, sizeof(again));
    } else if (read_line(STDIN_FILENO, buf, size) < 0) {
        fprintf(stderr, "%s: no password on stdin (or longer than %zu bytes)\n", progname,
                size - 1);
        return MAGPIE_ERR;
    }
    if (buf[0] == '\0') {
        fprintf(stderr, "%s: the password must not be empty\n", progname);
        return MAGPIE_ERR;
    }
    /* the accounts API refuses what SASLprep refuses: say why here */
    char *prepped = mp_sasl_saslprep(buf, 1);
    if (prepped == NULL) {
        fprintf(stderr,
                "%s: the password is not valid UTF-8 or contains characters SASLprep "
                "(RFC 4013) prohibits\n",
                progname);
        return MAGPIE_ERR;
    }
    explicit_bzero(prepped, strlen(prepped));
    free(prepped);
    return MAGPIE_OK;
}

/* ---- user commands ---- */

/* Creates directory dir and its missing parents (mode 0750), so that user
 * commands work before the server's first start created state_dir.
 * Returns MAGPIE_OK or MAGPIE_ERR (message printed). */
static int make_dirs(const char *dir)
{
    char *p = mp_strdup(dir);
    int rc = MAGPIE_OK;

    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0750) != 0 && errno != EEXIST) {
            fprintf(stderr, "%s: cannot create %s: %s\n", progname, p, strerror(errno));
            rc = MAGPIE_ERR;
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    return rc;
}

/* The SQLite file lives in state_dir, which may not exist yet. */
static int prepare_storage_dir(const struct mp_config *cfg)
{
    char *dir, *slash;
    int rc = MAGPIE_OK;

    if (strcmp(cfg->storage_driver, "sqlite") != 0 || cfg->sqlite_path == NULL ||
        cfg->sqlite_path[0] != '/')
        return MAGPIE_OK;
    dir = mp_strdup(cfg->sqlite_path);
    slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        rc = make_dirs(dir);
    }
    free(dir);
    return rc;
}

/* Splits and normalises "user@domain" into user/domain (nodeprep and
 * nameprep), checking that the domain is a configured host. Returns
 * MAGPIE_OK or MAGPIE_ERR (message printed). */
static int parse_account(const struct mp_config *cfg, const char *arg, char *user, size_t userlen,
                         char *domain, size_t domainlen)
{
    const char *at = strchr(arg, '@');
    char local[MP_JID_PART_MAX + 1];
    size_t n;

    if (at == NULL || at == arg || at[1] == '\0' || strchr(at, '/') != NULL) {
        fprintf(stderr, "%s: '%s' is not an account address USER@DOMAIN\n", progname, arg);
        return MAGPIE_ERR;
    }
    n = (size_t)(at - arg);
    if (n >= sizeof(local)) {
        fprintf(stderr, "%s: user name too long in '%s'\n", progname, arg);
        return MAGPIE_ERR;
    }
    memcpy(local, arg, n);
    local[n] = '\0';
    if (mp_jid_nodeprep(local, user, userlen) != MAGPIE_OK || user[0] == '\0') {
        fprintf(stderr, "%s: '%s' is not a valid user name\n", progname, local);
        return MAGPIE_ERR;
    }
    if (mp_jid_nameprep(at + 1, domain, domainlen) != MAGPIE_OK || domain[0] == '\0') {
        fprintf(stderr, "%s: '%s' is not a valid domain\n", progname, at + 1);
        return MAGPIE_ERR;
    }
    if (mp_config_host_find(cfg, domain) == NULL) {
        fprintf(stderr, "%s: '%s' is not a host configured in %s\n", progname, domain, cfg->file);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

static void print_user(void *ud, const char *user)
{
    (void)ud;
    printf("%s\n", user);
}

/* Runs "user SUB ARGS...". argv[0] is SUB. Returns the exit code. */
static int cmd_user(const char *config_path, int argc, char **argv)
{
    static const struct option opts[] = {
        {"password", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0},
    };
    const char *sub, *target, *password_arg = NULL;
    char user[MP_JID_PART_MAX + 1], domain[MP_JID_PART_MAX + 1];
    char password[PASSWORD_MAX], err[1024];
    struct mp_config *cfg;
    int ch, rc, status = EXIT_FAILURE, is_add, is_passwd, is_del, is_list;

    if (argc < 1)
        return usage_error("%s", "'user' needs a subcommand: add, passwd, del or list");
    sub = argv[0];
    is_add = strcmp(sub, "add") == 0;
    is_passwd = strcmp(sub, "passwd") == 0;
    is_del = strcmp(sub, "del") == 0 || strcmp(sub, "delete") == 0;
    is_list = strcmp(sub, "list") == 0;
    if (!is_add && !is_passwd && !is_del && !is_list)
        return usage_error("unknown user subcommand '%s'", sub);

    optind = 0; /* glibc: full re-initialisation; options may follow the target */
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "p:", opts, NULL)) != -1) {
        if (ch == 'p' && (is_add || is_passwd))
            password_arg = optarg;
        else if (ch == 'p')
            return usage_error("--password is not an option of 'user %s'", sub);
        else
            return usage_error("unknown option '%s'", argv[optind - 1]);
    }
    if (argc - optind != 1)
        return usage_error(is_list ? "usage: user %s DOMAIN" : "usage: user %s USER@DOMAIN", sub);
    target = argv[optind];

    cfg = load_config(config_path);
    if (cfg == NULL)
        return EXIT_FAILURE;
    if (is_list) {
        if (mp_jid_nameprep(target, domain, sizeof(domain)) != MAGPIE_OK ||
            mp_config_host_find(cfg, domain) == NULL) {
            fprintf(stderr, "%s: '%s' is not a host configured in %s\n", progname, target,
                    cfg->file);
            goto out;
        }
    } else if (parse_account(cfg, target, user, sizeof(user), domain, sizeof(domain)) !=
               MAGPIE_OK) {
        goto out;
    }
    if ((is_add || is_passwd) &&
        get_password(password_arg, password, sizeof(password)) != MAGPIE_OK)
        goto out;

    if (prepare_storage_dir(cfg) != MAGPIE_OK)
        goto out;
    if (mp_storage_open_sync_only(cfg, err, sizeof(err)) != MAGPIE_OK) {
        fprintf(stderr, "%s: cannot open storage (%s): %s\n", progname, cfg->storage_driver, err);
        goto out;
    }
    if (is_add) {
        rc = mp_account_add_sync(domain, user, password, (unsigned)cfg->scram_iterations);
        if (rc == MAGPIE_OK)
            printf("created %s@%s\n", user, domain);
        else if (rc == MAGPIE_AGAIN)
            fprintf(stderr, "%s: %s@%s already exists\n", progname, user, domain);
        else
            fprintf(stderr, "%s: could not create %s@%s (storage error, see above)\n", progname,
                    user, domain);
    } else if (is_passwd) {
        rc = mp_account_passwd_sync(domain, user, password, (unsigned)cfg->scram_iterations);
        if (rc == MAGPIE_OK)
            printf("password changed for %s@%s\n", user, domain);
        else if (rc == MAGPIE_NOTFOUND)
            fprintf(stderr, "%s: no such account %s@%s\n", progname, user, domain);
        else
            fprintf(stderr, "%s: could not change the password of %s@%s (storage error)\n",
                    progname, user, domain);
    } else if (is_del) {
        rc = mp_account_del_sync(domain, user);
        if (rc == MAGPIE_OK) {
            printf("deleted %s@%s\n", user, domain);
            /* a running server ends the account's sessions and tells its
             * modules (account_deleted); none running: nothing to tell */
            char line[2 * MP_JID_PART_MAX + 32];
            snprintf(line, sizeof line, "account-deleted %s@%s\n", user, domain);
            control_notify(cfg, line);
        } else if (rc == MAGPIE_NOTFOUND)
            fprintf(stderr, "%s: no such account %s@%s\n", progname, user, domain);
        else
            fprintf(stderr, "%s: could not delete %s@%s (storage error)\n", progname, user, domain);
    } else {
        rc = mp_account_list_sync(domain, print_user, NULL);
        if (rc != MAGPIE_OK)
            fprintf(stderr, "%s: could not list the accounts of %s (storage error)\n", progname,
                    domain);
    }
    mp_storage_close();
    if (rc == MAGPIE_OK)
        status = EXIT_SUCCESS;
out:
    explicit_bzero(password, sizeof(password));
    mp_config_free(cfg);
    return status;
}

/* ---- gateway devices (mod_gateway, docs/gateway.md) ----
 * The record is a keyval document in store "gateway_devices" of host
 * GWDOMAIN, key ID: "1 <secret hex> [owner bare JID ...]". */

#define GW_STORE_DEVICES "gateway_devices"

static void print_key(void *ud, const char *key)
{
    (void)ud;
    printf("%s\n", key);
}

static int device_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9') || id[i] == '.' ||
              id[i] == '_' || id[i] == '-'))
            return 0;
    return 1;
}

static void print_time(const char *name, long long us)
{
    if (us <= 0) {
        printf(" %s -", name);
        return;
    }
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    char b[40];
    gmtime_r(&t, &tm);
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    printf(" %s %s.%03dZ", name, b, (int)(us / 1000 % 1000));
}

struct find_cmd {
    long long aid;
    char **ids;
    size_t n;
    const char *dev; /* where it was found */
    long long queued_us, expires_us;
};

static void collect_key(void *ud, const char *key)
{
    struct find_cmd *f = ud;
    f->ids = realloc(f->ids, (f->n + 1) * sizeof *f->ids);
    f->ids[f->n++] = strdup(key);
}

static void found_item(void *ud, const mp_archive_item *it)
{
    struct find_cmd *f = ud;
    long long q = 0, e = 0;
    char hdr[64];
    size_t n = it->len < sizeof hdr - 1 ? it->len : sizeof hdr - 1;
    memcpy(hdr, it->data, n);
    hdr[n] = '\0';
    if (it->id == f->aid && sscanf(hdr, "1 %lld %lld", &q, &e) == 2) {
        f->queued_us = q;
        f->expires_us = e;
        f->dev = "";
    }
}

/* "device command GWDOMAIN ID": the command's end (store gateway_status)
 * or, while it is pending, its place in a device's queue (gateway_queue;
 * whether it was sent already only the running server knows). */
static int device_command(const char *config_path, int argc, char **argv)
{
    char err[1024], domain[MP_JID_PART_MAX + 1];
    if (argc != 3)
        return usage_error("%s", "usage: device command GWDOMAIN COMMAND-ID");
    if (mp_jid_nameprep(argv[1], domain, sizeof domain) != MAGPIE_OK)
        return usage_error("invalid domain '%s'", argv[1]);
    char *end;
    long long aid = strtoll(argv[2], &end, 10);
    if (*end || aid <= 0)
        return usage_error("invalid command id '%s'", argv[2]);
    struct mp_config *cfg = load_config(config_path);
    if (cfg == NULL)
        return EXIT_FAILURE;
    int status = EXIT_FAILURE;
    if (prepare_storage_dir(cfg) != MAGPIE_OK)
        goto out;
    if (mp_storage_open_sync_only(cfg, err, sizeof(err)) != MAGPIE_OK) {
        fprintf(stderr, "%s: cannot open storage (%s): %s\n", progname, cfg->storage_driver, err);
        goto out;
    }
    void *data;
    size_t len;
    int rc = mp_kv_get_sync(domain, "gateway_status", argv[2], &data, &len);
    if (rc == MAGPIE_OK) {
        char buf[256], dev[80], state[20];
        int result;
        long long q, snt, e;
        snprintf(buf, sizeof buf, "%.*s", (int)len, (char *)data);
        free(data);
        if (sscanf(buf, "1 %79s %19s %d %lld %lld %lld", dev, state, &result, &q, &snt, &e) != 6) {
            fprintf(stderr, "%s: unreadable status record of command %lld\n", progname, aid);
            goto out_storage;
        }
        printf("command %lld device %s@%s state %s result ", aid, dev, domain, state);
        if (result >= 0)
            printf("%d", result);
        else
            printf("-");
        print_time("queued", q);
        print_time("sent", snt);
        print_time("ended", e);
        printf("\n");
        status = EXIT_SUCCESS;
        goto out_storage;
    }
    if (rc == MAGPIE_ERR) {
        fprintf(stderr, "%s: storage error\n", progname);
        goto out_storage;
    }
    struct find_cmd f = {.aid = aid};
    mp_kv_keys_sync(domain, "gateway_devices", collect_key, &f);
    const char *dev = NULL;
    for (size_t i = 0; i < f.n; i++) {
        mp_archive_filter q = {.after_id = aid - 1, .limit = 1};
        f.dev = NULL;
        mp_archive_query_sync(domain, "gateway_queue", f.ids[i], &q, found_item, &f);
        if (f.dev && !dev) {
            dev = f.ids[i];
            printf("command %lld device %s@%s state pending result -", aid, dev, domain);
            print_time("queued", f.queued_us);
            print_time("expires", f.expires_us);
            printf("\n");
            status = EXIT_SUCCESS;
        }
    }
    if (!dev)
        fprintf(stderr, "%s: no such command %lld in %s\n", progname, aid, domain);
    for (size_t i = 0; i < f.n; i++)
        free(f.ids[i]);
    free(f.ids);
out_storage:
    mp_storage_close();
out:
    mp_config_free(cfg);
    return status;
}

/* Runs "device SUB ARGS...". argv[0] is SUB. Returns the exit code. */
static int cmd_device(const char *config_path, int argc, char **argv)
{
    static const struct option opts[] = {
        {"owner", required_argument, NULL, 'o'},
        {"secret", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    char rec[8192], err[1024], id[80], domain[MP_JID_PART_MAX + 1];
    const char *secret_hex = NULL;
    size_t rl;
    int ch, rc = MAGPIE_ERR, status = EXIT_FAILURE;
    struct mp_config *cfg;

    if (argc < 1)
        return usage_error("%s", "'device' needs a subcommand: add, del, show, list or command");
    const char *sub = argv[0];
    if (!strcmp(sub, "command"))
        return device_command(config_path, argc, argv);
    int is_add = !strcmp(sub, "add"), is_del = !strcmp(sub, "del"), is_show = !strcmp(sub, "show"),
        is_list = !strcmp(sub, "list");
    if (!is_add && !is_del && !is_show && !is_list)
        return usage_error("unknown device subcommand '%s'", sub);
    rl = (size_t)snprintf(rec, sizeof rec, "1 ");
    optind = 0;
    opterr = 0;
    char owners[6000] = "";
    while ((ch = getopt_long(argc, argv, "o:s:", opts, NULL)) != -1) {
        if (!is_add)
            return usage_error("'device %s' takes no options", sub);
        if (ch == 'o') {
            mp_jid j;
            if (mp_jid_parse(&j, optarg) != MAGPIE_OK)
                return usage_error("invalid owner JID '%s'", optarg);
            if (strlen(owners) + strlen(j.bare) + 2 < sizeof owners) {
                strcat(owners, " ");
                strcat(owners, j.bare);
            }
            mp_jid_free(&j);
        } else if (ch == 's') {
            secret_hex = optarg;
        } else {
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return usage_error(is_list ? "usage: device %s GWDOMAIN" : "usage: device %s ID@GWDOMAIN",
                           sub);
    const char *target = argv[optind];
    const char *at = strchr(target, '@');
    if (is_list) {
        if (mp_jid_nameprep(target, domain, sizeof domain) != MAGPIE_OK)
            return usage_error("invalid domain '%s'", target);
    } else {
        if (!at || (size_t)(at - target) >= sizeof id)
            return usage_error("expected ID@GWDOMAIN, got '%s'", target);
        memcpy(id, target, (size_t)(at - target));
        id[at - target] = '\0';
        if (!device_id_ok(id))
            return usage_error("invalid device id '%s' (1-64 of a-z 0-9 . _ -)", id);
        if (mp_jid_nameprep(at + 1, domain, sizeof domain) != MAGPIE_OK)
            return usage_error("invalid domain '%s'", at + 1);
    }
    if (is_add) {
        unsigned char sec[32];
        if (secret_hex) {
            size_t n = strlen(secret_hex);
            if (n < 32 || n > 128 || n % 2 || strspn(secret_hex, "0123456789abcdef") != n)
                return usage_error("%s", "--secret must be 16 to 64 bytes in lower-case hex");
            rl += (size_t)snprintf(rec + rl, sizeof rec - rl, "%s", secret_hex);
        } else {
            if (RAND_bytes(sec, sizeof sec) != 1) {
                fprintf(stderr, "%s: no randomness\n", progname);
                return EXIT_FAILURE;
            }
            for (size_t i = 0; i < sizeof sec; i++)
                rl += (size_t)snprintf(rec + rl, sizeof rec - rl, "%02x", sec[i]);
        }
        rl += (size_t)snprintf(rec + rl, sizeof rec - rl, "%s", owners);
    }

    cfg = load_config(config_path);
    if (cfg == NULL)
        return EXIT_FAILURE;
    if (prepare_storage_dir(cfg) != MAGPIE_OK)
        goto out;
    if (mp_storage_open_sync_only(cfg, err, sizeof(err)) != MAGPIE_OK) {
        fprintf(stderr, "%s: cannot open storage (%s): %s\n", progname, cfg->storage_driver, err);
        goto out;
    }
    if (is_list) {
        rc = mp_kv_keys_sync(domain, GW_STORE_DEVICES, print_key, NULL);
    } else if (is_del) {
        rc = mp_kv_del_sync(domain, GW_STORE_DEVICES, id);
        if (rc == MAGPIE_NOTFOUND)
            fprintf(stderr, "%s: no such device %s@%s\n", progname, id, domain);
        else if (rc == MAGPIE_OK)
            printf("deleted %s@%s\n", id, domain);
    } else if (is_show) {
        void *data;
        size_t len;
        rc = mp_kv_get_sync(domain, GW_STORE_DEVICES, id, &data, &len);
        if (rc == MAGPIE_OK) {
            /* "1 <secret> owners..." -> "<id>@<domain> <secret> owners..." */
            printf("%s@%s %.*s\n", id, domain, len > 2 ? (int)len - 2 : 0, (char *)data + 2);
            free(data);
        } else if (rc == MAGPIE_NOTFOUND) {
            fprintf(stderr, "%s: no such device %s@%s\n", progname, id, domain);
        }
    } else {
        void *data;
        size_t len;
        if (mp_kv_get_sync(domain, GW_STORE_DEVICES, id, &data, &len) == MAGPIE_OK) {
            free(data);
            fprintf(stderr, "%s: %s@%s already exists (device del first)\n", progname, id, domain);
            rc = MAGPIE_ERR;
        } else {
            rc = mp_kv_set_sync(domain, GW_STORE_DEVICES, id, rec, rl);
            if (rc == MAGPIE_OK)
                printf("%s@%s %.*s\n", id, domain, (int)rl - 2, rec + 2);
        }
    }
    if (rc == MAGPIE_ERR)
        fprintf(stderr, "%s: storage error\n", progname);
    mp_storage_close();
    if (rc == MAGPIE_OK)
        status = EXIT_SUCCESS;
out:
    explicit_bzero(rec, sizeof rec);
    mp_config_free(cfg);
    return status;
}

/* ---- other commands ---- */

static int cmd_check_config(const char *config_path)
{
    struct mp_config *cfg = load_config(config_path);
    if (cfg == NULL)
        return EXIT_FAILURE;
    printf("%s: ok (%zu host%s, %zu listener%s, %zu module%s, storage %s)\n", cfg->file,
           cfg->n_hosts, cfg->n_hosts == 1 ? "" : "s", cfg->n_listeners,
           cfg->n_listeners == 1 ? "" : "s", cfg->n_modules, cfg->n_modules == 1 ? "" : "s",
           cfg->storage_driver);
    mp_config_free(cfg);
    return EXIT_SUCCESS;
}

static int cmd_control(const char *config_path, const char *line)
{
    struct mp_config *cfg = load_config(config_path);
    int rc;

    if (cfg == NULL)
        return EXIT_FAILURE;
    rc = control_command(cfg, line);
    mp_config_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = getenv("MAGPIE_CONFIG");
    const char *cmd;
    int ch;

    if (config_path == NULL || *config_path == '\0')
        config_path = MAGPIE_SYSCONF_DIR "/magpie.conf";
    opterr = 0;
    /* '+': stop at the command, its own options come after it */
    while ((ch = getopt_long(argc, argv, "+c:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        case 'V':
            printf("magpiectl %s\n", MAGPIE_VERSION_STRING);
            return EXIT_SUCCESS;
        default:
            if (optopt == 'c')
                return usage_error("%s", "option -c needs a FILE");
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("%s", "no command given");
    cmd = argv[optind];

    /* quiet by default: storage drivers log problems as warnings */
    mp_log_setup("warn", "-");

    if (strcmp(cmd, "user") == 0)
        return cmd_user(config_path, argc - optind - 1, argv + optind + 1);
    if (strcmp(cmd, "device") == 0)
        return cmd_device(config_path, argc - optind - 1, argv + optind + 1);
    if (optind + 1 != argc)
        return usage_error("'%s' takes no arguments", cmd);
    if (strcmp(cmd, "check-config") == 0)
        return cmd_check_config(config_path);
    if (strcmp(cmd, "status") == 0)
        return cmd_control(config_path, "status\n");
    if (strcmp(cmd, "reload") == 0)
        return cmd_control(config_path, "reload\n");
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return EXIT_SUCCESS;
    }
    return usage_error("unknown command '%s'", cmd);
}
