/* test_config.c - the configuration loader: the shipped configs load, and
 * each class of mistake is reported as "FILE:LINE: message". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "config.h" alone would find autoconf's config.h in the build tree */
#include "conf/config.h"
#include "base/base.h"

#ifndef TOP_SRCDIR
#define TOP_SRCDIR "."
#endif

static char tmpdir[256];  /* realpath of a fresh directory */
static char cfgpath[512]; /* tmpdir/test.conf */
static char err[1024];

static int setup(void **state)
{
    char tmpl[] = "/tmp/magpie-test-config-XXXXXX";
    char real[PATH_MAX];
    (void)state;
    if (mkdtemp(tmpl) == NULL || realpath(tmpl, real) == NULL || strlen(real) >= sizeof(tmpdir))
        return -1;
    strcpy(tmpdir, real);
    snprintf(cfgpath, sizeof(cfgpath), "%s/test.conf", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[PATH_MAX + 16];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to cfgpath and loads it. */
static struct mp_config *load_text(const char *text)
{
    FILE *f = fopen(cfgpath, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    err[0] = '\0';
    return mp_config_load(cfgpath, err, sizeof(err));
}

/* Loads text, which must fail with exactly "cfgpath:line: msg". */
static void expect_error(const char *text, int line, const char *msg)
{
    char want[2048];
    struct mp_config *c = load_text(text);
    assert_null(c);
    snprintf(want, sizeof(want), "%s:%d: %s", cfgpath, line, msg);
    assert_string_equal(err, want);
}

#define HOSTS "hosts = ( { domain = \"localhost\"; } );\n"

/* admins: bare JIDs, normalised; a full JID or a non-string is refused. */
static void test_admins(void **state)
{
    (void)state;
    struct mp_config *c = load_text(HOSTS "admins = [ \"Ops@Example.ORG\", \"root@localhost\" ];\n");
    if (c == NULL)
        fail_msg("%s", err);
    assert_int_equal(c->n_admins, 2);
    assert_string_equal(c->admins[0], "ops@example.org");
    assert_string_equal(c->admins[1], "root@localhost");
    mp_config_free(c);
    expect_error(HOSTS "admins = [ \"ops@example.org/phone\" ];\n", 2,
                 "admins[0] is not a bare JID (user@domain)");
    expect_error(HOSTS "storage = { sqlite = { cache_kib = 8; }; };\n", 2,
                 "'storage.sqlite.cache_kib' must be an integer between 64 and 1048576");
    expect_error(HOSTS "admins = [ 5 ];\n", 2, "admins[0] is not a bare JID (user@domain)");
    expect_error(HOSTS "admins = \"ops@example.org\";\n", 2,
                 "'admins' must be a list of bare JIDs, e.g. [ \"admin@example.org\" ]");
}

static void test_default_config(void **state)
{
    const char *path = TOP_SRCDIR "/conf/magpie.conf";
    struct mp_config *c;
    char want[PATH_MAX + 32];
    (void)state;

    c = mp_config_load(path, err, sizeof(err));
    if (c == NULL)
        fail_msg("%s", err);
    assert_string_equal(c->file, path);
    assert_int_equal(c->n_hosts, 1);
    assert_string_equal(c->hosts[0].domain, "localhost");
    assert_null(c->hosts[0].cert_file);
    assert_null(c->hosts[0].key_file);
    assert_non_null(mp_config_host_find(c, "localhost"));
    assert_null(mp_config_host_find(c, "example.org"));

    assert_int_equal(c->n_listeners, 2);
    assert_int_equal(c->listeners[0].kind, MP_LISTEN_C2S);
    assert_string_equal(c->listeners[0].address, "0.0.0.0");
    assert_int_equal(c->listeners[0].port, 5222);
    assert_int_equal(c->listeners[1].kind, MP_LISTEN_C2S_TLS);
    assert_int_equal(c->listeners[1].port, 5223);

    assert_int_equal(c->n_modules, 19);
    assert_string_equal(c->modules[14].name, "sm");
    assert_string_equal(c->modules[15].name, "adhoc");
    assert_string_equal(c->modules[16].name, "admin_adhoc");
    assert_string_equal(c->modules[17].name, "upload");
    assert_string_equal(c->modules[18].name, "pep");
    assert_int_equal(c->n_admins, 0);
    assert_int_equal(c->sqlite_cache_kib, 512);
    assert_string_equal(c->modules[0].name, "disco");
    assert_string_equal(c->modules[1].name, "ping");
    assert_string_equal(c->modules[2].name, "version");
    assert_string_equal(c->modules[3].name, "time");
    assert_string_equal(c->modules[4].name, "muc");
    assert_string_equal(c->modules[5].name, "roster");
    assert_string_equal(c->modules[6].name, "offline");
    assert_string_equal(c->modules[7].name, "mam");
    assert_string_equal(c->modules[8].name, "carbons");
    assert_string_equal(c->modules[9].name, "blocking");
    assert_string_equal(c->modules[10].name, "vcard");
    assert_string_equal(c->modules[11].name, "private");
    assert_string_equal(c->modules[12].name, "last");
    assert_string_equal(c->modules[13].name, "csi");
    assert_string_equal(c->modules[14].name, "sm");
    assert_null(c->modules[1].options);

    assert_string_equal(c->state_dir, MAGPIE_STATE_DIR);
    assert_string_equal(c->module_dir, MAGPIE_MODULE_DIR);
    assert_string_equal(c->storage_driver, "sqlite");
    snprintf(want, sizeof(want), "%s/magpie.db", c->state_dir);
    assert_string_equal(c->sqlite_path, want);
    assert_string_equal(c->mysql_host, "localhost");
    assert_int_equal(c->mysql_port, 3306);
    assert_null(c->mysql_socket);
    assert_int_equal(c->storage_threads, 2);

    assert_int_equal(c->max_stanza_size, 262144);
    assert_int_equal(c->max_depth, 32);
    assert_int_equal(c->max_attrs, 64);
    assert_int_equal(c->max_attr_len, 8192);
    assert_int_equal(c->max_text, 262144);
    assert_int_equal(c->max_sasl_size, 8192);
    assert_int_equal(c->max_connections, 100000);
    assert_int_equal(c->rate_bytes_per_sec, 65536);
    assert_int_equal(c->rate_burst, 262144);
    assert_int_equal(c->http_rate, 4194304);
    assert_int_equal(c->max_output_buffer, 1048576);
    assert_int_equal(c->negotiation_timeout, 30);
    assert_int_equal(c->output_stall_timeout, 30);
    assert_int_equal(c->max_stanza_memory, 1048576);
    assert_int_equal(c->max_elements, 8192);
    assert_int_equal(c->preauth_max_stanza_size, 10240);
    assert_int_equal(c->preauth_max_elements, 32);
    assert_int_equal(c->max_connections_per_address, 256);
    assert_int_equal(c->connection_rate_per_address, 64);
    assert_int_equal(c->connection_burst_per_address, 256);
    assert_int_equal(c->worker_queue, 65536);
    assert_int_equal(c->storage_queue, 16384);
    assert_true(c->require_tls);
    assert_int_equal(c->scram_iterations, 10000);
    assert_int_equal(c->auth_threads, 2);
    assert_int_equal(c->auth_queue, 1024);
    assert_int_equal(c->auth_failures_free, 3);
    assert_true(c->auth_delay_max == 30);
    assert_int_equal(c->auth_failure_window, 600);
    assert_string_equal(c->log_level, "info");
    assert_string_equal(c->log_file, "-");
    assert_int_equal(c->workers, 0);
    mp_config_free(c);
}

static void test_mariadb_example(void **state)
{
    struct mp_config *c;
    (void)state;

    c = mp_config_load(TOP_SRCDIR "/conf/examples/mariadb.conf", err, sizeof(err));
    if (c == NULL)
        fail_msg("%s", err);
    assert_string_equal(c->storage_driver, "mysql");
    assert_string_equal(c->mysql_host, "127.0.0.1");
    assert_string_equal(c->mysql_password, "change-me");
    assert_int_equal(c->storage_threads, 8);
    assert_int_equal(c->n_hosts, 2);
    assert_string_equal(c->hosts[1].domain, "chat.example.com");
    /* same port on IPv4 and IPv6 is allowed */
    assert_int_equal(c->n_listeners, 4);
    assert_non_null(c->modules[1].options);
    mp_config_free(c);
}

/* Only hosts given: every other key takes its default; the domain is
 * normalised. */
static void test_minimal_and_nameprep(void **state)
{
    struct mp_config *c;
    (void)state;

    c = load_text("hosts = ( { domain = \"Example.ORG\"; },\n"
                  "          { domain = \"B\xc3\x9c"
                  "CHER.example\"; } );\n");
    if (c == NULL)
        fail_msg("%s", err);
    assert_int_equal(c->n_hosts, 2);
    assert_string_equal(c->hosts[0].domain, "example.org");
    assert_string_equal(c->hosts[1].domain, "b\xc3\xbc"
                                            "cher.example"); /* Nameprep */
    assert_non_null(mp_config_host_find(c, "example.org"));
    assert_int_equal(c->n_listeners, 2);
    assert_int_equal(c->listeners[1].port, 5223);
    /* the default module list: what a messenger user needs, group chat included */
    assert_int_equal(c->n_modules, 19);
    assert_string_equal(c->modules[14].name, "sm");
    assert_string_equal(c->modules[15].name, "adhoc");
    assert_string_equal(c->modules[16].name, "admin_adhoc");
    assert_string_equal(c->modules[17].name, "upload");
    assert_string_equal(c->modules[18].name, "pep");
    assert_int_equal(c->n_admins, 0);
    assert_string_equal(c->modules[3].name, "time");
    assert_string_equal(c->modules[4].name, "muc");
    assert_string_equal(c->modules[5].name, "roster");
    assert_string_equal(c->modules[6].name, "offline");
    assert_string_equal(c->modules[7].name, "mam");
    assert_string_equal(c->modules[8].name, "carbons");
    assert_string_equal(c->modules[9].name, "blocking");
    assert_string_equal(c->modules[10].name, "vcard");
    assert_string_equal(c->modules[11].name, "private");
    assert_string_equal(c->modules[12].name, "last");
    assert_string_equal(c->modules[13].name, "csi");
    assert_string_equal(c->modules[14].name, "sm");
    assert_int_equal(c->max_stanza_size, 262144);
    assert_true(c->require_tls);
    mp_config_free(c);
}

/* The shape the integration tests and README use: everything in a temp dir. */
static void test_build_tree_config(void **state)
{
    char text[4 * PATH_MAX], want[PATH_MAX + 32];
    struct mp_config *c;
    (void)state;

    snprintf(text, sizeof(text),
             "state_dir = \"%s/state\";\n"
             "module_dir = \"%s/modules/.libs\";\n"
             "workers = 1;\n"
             "log = { level = \"debug\"; file = \"%s/magpied.log\"; };\n"
             "hosts = ( { domain = \"localhost\"; } );\n"
             "listeners = ( { type = \"c2s\"; address = \"127.0.0.1\"; port = 15222; },\n"
             "              { type = \"c2s_tls\"; address = \"127.0.0.1\"; port = 15223; } );\n"
             "security = { require_tls = false; scram_iterations = 4096; };\n"
             "limits = { rate = 0; };\n",
             tmpdir, tmpdir, tmpdir);
    c = load_text(text);
    if (c == NULL)
        fail_msg("%s", err);
    snprintf(want, sizeof(want), "%s/state", tmpdir);
    assert_string_equal(c->state_dir, want);
    snprintf(want, sizeof(want), "%s/state/magpie.db", tmpdir);
    assert_string_equal(c->sqlite_path, want);
    snprintf(want, sizeof(want), "%s/modules/.libs", tmpdir);
    assert_string_equal(c->module_dir, want);
    assert_string_equal(c->log_level, "debug");
    assert_int_equal(c->workers, 1);
    assert_string_equal(c->listeners[0].address, "127.0.0.1");
    assert_int_equal(c->listeners[0].port, 15222);
    assert_false(c->require_tls);
    assert_int_equal(c->scram_iterations, 4096);
    assert_int_equal(c->rate_bytes_per_sec, 0);
    mp_config_free(c);
}

static void test_relative_paths(void **state)
{
    char want[PATH_MAX + 64], rel[PATH_MAX + 64];
    struct mp_config *c;
    (void)state;

    c = load_text(
        "state_dir = \"state\";\n"
        "log = { file = \"logs/magpie.log\"; };\n"
        "hosts = ( { domain = \"a.example\"; cert = \"certs/a.pem\"; },\n"
        "          { domain = \"b.example\"; cert = \"/etc/b.crt\"; key = \"b.key\"; } );\n"
        "storage = { sqlite = { path = \"db/m.db\"; cache_kib = 4096; }; };\n");
    if (c == NULL)
        fail_msg("%s", err);
    assert_int_equal(c->sqlite_cache_kib, 4096);
    snprintf(want, sizeof(want), "%s/state", tmpdir);
    assert_string_equal(c->state_dir, want);
    snprintf(want, sizeof(want), "%s/logs/magpie.log", tmpdir);
    assert_string_equal(c->log_file, want);
    snprintf(want, sizeof(want), "%s/certs/a.pem", tmpdir);
    assert_string_equal(c->hosts[0].cert_file, want);
    assert_string_equal(c->hosts[0].key_file, want); /* one PEM for both */
    assert_string_equal(c->hosts[1].cert_file, "/etc/b.crt");
    snprintf(want, sizeof(want), "%s/b.key", tmpdir);
    assert_string_equal(c->hosts[1].key_file, want);
    snprintf(want, sizeof(want), "%s/db/m.db", tmpdir);
    assert_string_equal(c->sqlite_path, want);
    mp_config_free(c);

    /* loading through a relative path to the file gives the same result */
    c = load_text(HOSTS "state_dir = \"state\";\n");
    assert_non_null(c);
    mp_config_free(c);
    {
        char cwd[PATH_MAX];
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        assert_int_equal(chdir("/tmp"), 0);
        snprintf(rel, sizeof(rel), "./%s/test.conf", tmpdir + strlen("/tmp/"));
        c = mp_config_load(rel, err, sizeof(err));
        assert_int_equal(chdir(cwd), 0);
    }
    if (c == NULL)
        fail_msg("%s", err);
    snprintf(want, sizeof(want), "%s/state", tmpdir);
    assert_string_equal(c->state_dir, want);
    mp_config_free(c);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_error(HOSTS "\n"
                       "stat_dir = \"/x\";\n",
                 3, "unknown key 'stat_dir'");
    expect_error(HOSTS "limits = {\n"
                       "    max_stanza_size = 65536;\n"
                       "    max_stanzas = 5;\n"
                       "};\n",
                 4, "unknown key 'limits.max_stanzas'");
    expect_error("hosts = (\n"
                 "  { domain = \"a.example\"; },\n"
                 "  { domain = \"b.example\";\n"
                 "    certificate = \"x.pem\"; }\n"
                 ");\n",
                 4, "unknown key 'hosts[1].certificate'");
    expect_error(HOSTS "listeners = ( { type = \"c2s\"; port = 5222; bind = \"::\"; } );\n", 2,
                 "unknown key 'listeners[0].bind'");
    expect_error(HOSTS "storage = {\n  mysql = {\n    pass = \"x\";\n  };\n};\n", 4,
                 "unknown key 'storage.mysql.pass'");
    expect_error(HOSTS "storage = { sqlite = { file = \"x\"; }; };\n", 2,
                 "unknown key 'storage.sqlite.file'");
    expect_error(HOSTS "log = { lvl = \"info\"; };\n", 2, "unknown key 'log.lvl'");
    expect_error(HOSTS "security = { tls = true; };\n", 2, "unknown key 'security.tls'");
}

static void test_bad_types_and_ranges(void **state)
{
    (void)state;
    expect_error(HOSTS "limits = {\n  max_stanza_size = \"big\";\n};\n", 3,
                 "'limits.max_stanza_size' must be an integer between 1024 and 67108864");
    expect_error(HOSTS "limits = {\n  max_stanza_size = 100;\n};\n", 3,
                 "'limits.max_stanza_size' must be an integer between 1024 and 67108864");
    expect_error(HOSTS "limits = { max_stanza_size = 100000000000; };\n", 2,
                 "'limits.max_stanza_size' must be an integer between 1024 and 67108864");
    expect_error(HOSTS "limits = { max_depth = 2.5; };\n", 2,
                 "'limits.max_depth' must be an integer between 4 and 1024");
    expect_error(HOSTS "workers = -1;\n", 2, "'workers' must be an integer between 0 and 1024");
    expect_error(HOSTS "security = { require_tls = 1; };\n", 2,
                 "'security.require_tls' must be true or false");
    expect_error(HOSTS "state_dir = 5;\n", 2, "'state_dir' must be a string");
    expect_error(HOSTS "state_dir = \"\";\n", 2, "'state_dir' must not be empty");
    expect_error(HOSTS "limits = 5;\n", 2, "'limits' must be a group { ... }");
    expect_error(HOSTS "log = { level = \"loud\"; };\n", 2,
                 "'log.level' must be one of debug, info, notice, warn, error");
    expect_error(HOSTS "storage = { driver = \"postgres\"; };\n", 2,
                 "'storage.driver' must be \"sqlite\" or \"mysql\", not \"postgres\"");
    expect_error(HOSTS "storage = { mysql = { port = 0; }; };\n", 2,
                 "'storage.mysql.port' must be an integer between 1 and 65535");
    expect_error(
        HOSTS "limits = {\n  max_sasl_size = 16384;\n  preauth_max_stanza_size = 16000;\n};\n", 4,
        "'limits.preauth_max_stanza_size' (16000) must exceed 'limits.max_sasl_size' (16384) "
        "by at least 256 bytes");
    expect_error(HOSTS "limits = { max_connections_per_address = 0; };\n", 2,
                 "'limits.max_connections_per_address' must be an integer between 1 and 10000000");
    expect_error(HOSTS "security = { auth_threads = 0; };\n", 2,
                 "'security.auth_threads' must be an integer between 1 and 64");
    expect_error(HOSTS "security = { scram_iterations = 100; };\n", 2,
                 "'security.scram_iterations' must be an integer between 4096 and 10000000");
}

/* libconfig's scanner exits the whole process on a NUL byte inside an
 * @include path (found by fuzzing): such a file is refused before. */
static void test_nul_byte(void **state)
{
    (void)state;
    static const char text[] = HOSTS "@include \"\0x.conf\"\n";
    FILE *f = fopen(cfgpath, "w");
    assert_non_null(f);
    fwrite(text, 1, sizeof text - 1, f);
    fclose(f);
    err[0] = '\0';
    assert_null(mp_config_load(cfgpath, err, sizeof(err)));
    char want[2048];
    snprintf(want, sizeof(want), "%s:2: a NUL byte: not a text file", cfgpath);
    assert_string_equal(err, want);
}

static void test_missing_file(void **state)
{
    char want[PATH_MAX + 64];
    (void)state;

    snprintf(cfgpath, sizeof(cfgpath), "%s/nonexistent.conf", tmpdir);
    assert_null(mp_config_load(cfgpath, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", cfgpath);
    assert_string_equal(err, want);

    assert_null(mp_config_load(tmpdir, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s: cannot read: Is a directory", tmpdir);
    assert_string_equal(err, want);
    snprintf(cfgpath, sizeof(cfgpath), "%s/test.conf", tmpdir);
}

static void test_syntax_error(void **state)
{
    char want[PATH_MAX + 64];
    (void)state;

    assert_null(load_text(HOSTS "workers = 2;\nlog = { level = ; };\nstate_dir = \"/x\";\n"));
    /* libconfig's own text follows the location */
    snprintf(want, sizeof(want), "%s:3: ", cfgpath);
    assert_true(strncmp(err, want, strlen(want)) == 0);
    assert_true(strlen(err) > strlen(want));

    assert_null(load_text(HOSTS "\n\nworkers = = 1;\n"));
    snprintf(want, sizeof(want), "%s:4: ", cfgpath);
    assert_true(strncmp(err, want, strlen(want)) == 0);

    /* a key given twice is libconfig's error too */
    assert_null(load_text(HOSTS "workers = 1;\nworkers = 2;\n"));
    snprintf(want, sizeof(want), "%s:3: duplicate setting name", cfgpath);
    assert_string_equal(err, want);
}

static void test_hosts(void **state)
{
    struct mp_config *c;
    char want[PATH_MAX + 128];
    (void)state;

    c = load_text("workers = 1;\n");
    assert_null(c);
    snprintf(want, sizeof(want),
             "%s: 'hosts' is missing: at least one host is required, "
             "e.g. hosts = ( { domain = \"localhost\"; } );",
             cfgpath);
    assert_string_equal(err, want);

    expect_error("\nhosts = ( );\n", 2, "'hosts' is empty: at least one host is required");
    expect_error("hosts = ( { domain = \"example.org\"; },\n"
                 "          { domain = \"EXAMPLE.org\"; } );\n",
                 2, "duplicate host 'example.org'");
    expect_error("hosts = ( { cert = \"x.pem\"; } );\n", 1, "'hosts[0].domain' is missing");
    expect_error("hosts = ( { domain = \"a@b\"; } );\n", 1,
                 "'hosts[0].domain' is not a valid domain: 'a@b'");
    expect_error("hosts = ( { domain = \"a.example\"; key = \"k.pem\"; } );\n", 1,
                 "'hosts[0].key' given without 'hosts[0].cert'");
    expect_error("hosts = \"localhost\";\n", 1,
                 "'hosts' must be a list ( { domain = \"...\"; }, ... )");
}

static void test_listeners(void **state)
{
    (void)state;
    expect_error(HOSTS "listeners = (\n  { type = \"s2s\"; port = 5269; }\n);\n", 3,
                 "'listeners[0].type' must be \"c2s\", \"c2s_tls\" or \"http\", not \"s2s\"");
    expect_error(HOSTS "listeners = ( { type = \"c2s\"; port = 5222; tls = true; } );\n", 2,
                 "'listeners[0].tls' is for \"http\" listeners (use type \"c2s_tls\" for TLS "
                 "from the first byte)");
    {
        struct mp_config *c = load_text(HOSTS "listeners = ( { type = \"http\"; port = 5280; },\n"
                                              "  { type = \"http\"; port = 5443; tls = true; } );\n");
        if (c == NULL)
            fail_msg("%s", err);
        assert_int_equal(c->n_listeners, 2);
        assert_int_equal(c->listeners[0].kind, MP_LISTEN_HTTP);
        assert_int_equal(c->listeners[0].tls, 0);
        assert_int_equal(c->listeners[1].kind, MP_LISTEN_HTTP);
        assert_int_equal(c->listeners[1].tls, 1);
        mp_config_free(c);
    }
    expect_error(HOSTS "listeners = (\n  { type = \"c2s\"; port = 5222; },\n"
                       "  { type = \"c2s_tls\"; port = 5222; }\n);\n",
                 4, "duplicate listener port 5222 (already used by listeners[0])");
    expect_error(HOSTS "listeners = ( { type = \"c2s\"; } );\n", 2,
                 "'listeners[0].port' is missing");
    expect_error(HOSTS "listeners = ( { type = \"c2s\"; port = 70000; } );\n", 2,
                 "'listeners[0].port' must be an integer between 1 and 65535");
    expect_error(
        HOSTS "listeners = ( { type = \"c2s\"; address = \"localhost\"; port = 5222; } );\n", 2,
        "'listeners[0].address' must be a numeric IPv4 or IPv6 address, not \"localhost\"");
    expect_error(HOSTS "listeners = ( );\n", 2,
                 "'listeners' is empty: at least one listener is required");
}

static void test_modules(void **state)
{
    struct mp_config *c;
    struct mp_config_setting *o;
    (void)state;

    c = load_text(HOSTS "modules = (\n"
                        "  \"disco\",\n"
                        "  { name = \"ping\";\n"
                        "    interval = 300;\n"
                        "    strict = true;\n"
                        "    label = \"hello\"; },\n"
                        "  \"time\"\n"
                        ");\n");
    if (c == NULL)
        fail_msg("%s", err);
    assert_int_equal(c->n_modules, 3);
    assert_string_equal(c->modules[0].name, "disco");
    assert_null(c->modules[0].options);
    assert_string_equal(c->modules[1].name, "ping");
    assert_string_equal(c->modules[2].name, "time");
    o = c->modules[1].options;
    assert_non_null(o);
    assert_string_equal(o->name, "interval");
    assert_string_equal(o->value, "300");
    assert_true(o->is_int && !o->is_bool && !o->is_string);
    assert_int_equal(o->line, 5);
    o = o->next;
    assert_non_null(o);
    assert_string_equal(o->name, "strict");
    assert_string_equal(o->value, "true");
    assert_true(o->is_bool && !o->is_int && !o->is_string);
    assert_int_equal(o->line, 6);
    o = o->next;
    assert_non_null(o);
    assert_string_equal(o->name, "label");
    assert_string_equal(o->value, "hello");
    assert_true(o->is_string);
    assert_int_equal(o->line, 7);
    assert_null(o->next);
    mp_config_free(c);

    /* an empty list loads no module */
    c = load_text(HOSTS "modules = ( );\n");
    assert_non_null(c);
    assert_int_equal(c->n_modules, 0);
    mp_config_free(c);

    expect_error(HOSTS "modules = ( \"ping\",\n  \"ping\" );\n", 3,
                 "module 'ping' is listed twice");
    expect_error(HOSTS "modules = (\n  { interval = 5; }\n);\n", 3, "'modules[0].name' is missing");
    expect_error(HOSTS "modules = ( \"../evil\" );\n", 2,
                 "'modules[0]': bad module name \"../evil\" (lower-case letters, digits, '_')");
    expect_error(HOSTS "modules = ( { name = \"ping\";\n  interval = 2.5; } );\n", 3,
                 "'modules[0].interval' must be a string, an integer or a boolean");
    expect_error(HOSTS "modules = ( 5 );\n", 2,
                 "'modules[0]' must be a module name (string) or a group "
                 "{ name = \"...\"; option = value; }");
}

/* Errors in an @include'd file name that file. */
static void test_include(void **state)
{
    char inc[PATH_MAX + 16], want[PATH_MAX + 128];
    FILE *f;
    (void)state;

    snprintf(inc, sizeof(inc), "%s/limits.inc", tmpdir);
    f = fopen(inc, "w");
    assert_non_null(f);
    fputs("limits = {\n  burst = 1;\n};\n", f);
    fclose(f);
    assert_null(load_text(HOSTS "@include \"limits.inc\"\n"));
    snprintf(want, sizeof(want),
             "%s:2: 'limits.burst' must be an integer between 1024 and 1073741824", inc);
    assert_string_equal(err, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_config),
        cmocka_unit_test(test_admins),
        cmocka_unit_test(test_mariadb_example),
        cmocka_unit_test(test_minimal_and_nameprep),
        cmocka_unit_test(test_build_tree_config),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_bad_types_and_ranges),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_hosts),
        cmocka_unit_test(test_listeners),
        cmocka_unit_test(test_modules),
        cmocka_unit_test(test_include),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
