/* fuzz_config.c - libFuzzer target: the configuration loader
 * (docs/fuzzing.md).
 *
 * Input: a configuration file (libconfig syntax, as conf/magpie.conf). It
 * is written to a file in a private temporary directory and loaded with
 * mp_config_load. Checked: no crash, leak (LeakSanitizer) or undefined
 * behaviour; a failure has a message; a loaded config has what the rest of
 * the server relies on (a host, a listener, a storage driver) and
 * mp_config_host_find finds every host.
 *
 * Inputs naming /dev, /proc or /sys are skipped: '@include "/dev/stdin"'
 * would block or read forever, which is not a bug of ours. */
#include "base/base.h"
#include "conf/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"

static char dir[64], path[96];

static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* in memory if possible: one file write and read per input */
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/magpie-fuzz-config.XXXXXX",
             tmp && strlen(tmp) < 30 ? tmp : "/tmp");
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof path, "%s/magpie.conf", dir);
    atexit(cleanup);
    return 0;
}

static int mentions(const uint8_t *d, size_t n, const char *w)
{
    size_t wl = strlen(w);
    for (size_t i = 0; i + wl <= n; i++)
        if (memcmp(d + i, w, wl) == 0)
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (mentions(data, size, "dev/") || mentions(data, size, "/dev") ||
        mentions(data, size, "proc/") || mentions(data, size, "/proc") ||
        mentions(data, size, "sys/") || mentions(data, size, "/sys"))
        return 0;
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);

    char err[512];
    memset(err, 'x', sizeof err);
    struct mp_config *c = mp_config_load(path, err, sizeof err);
    CHECK(memchr(err, '\0', sizeof err) != NULL);
    if (!c) {
        CHECK(err[0] != '\0');
        return 0;
    }
    CHECK(c->n_hosts > 0 && c->hosts);
    CHECK(c->n_listeners > 0 && c->listeners);
    CHECK(c->storage_driver != NULL);
    for (size_t i = 0; i < c->n_hosts; i++) {
        CHECK(c->hosts[i].domain != NULL);
        CHECK(mp_config_host_find(c, c->hosts[i].domain) != NULL);
    }
    mp_config_free(c);
    return 0;
}
