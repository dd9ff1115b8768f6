/* fsync-floor.c - the disk's floor for a durable commit: N times a write of
 * SIZE bytes appended to FILE and an fdatasync, then p50/p90/p99/p99.9/max
 * of one write + fdatasync in ms (bench/RESULTS.md, the gateway latency
 * section). The file is removed at the end.
 *
 *   make bench/fsync-floor   (in the build directory; or cc -O2 -o fsync-floor bench/fsync-floor.c)
 *   bench/fsync-floor /tmp/floor.dat [N=2000] [SIZE=4096]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [N] [SIZE]\n", argv[0]);
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 2000, sz = argc > 3 ? atoi(argv[3]) : 4096;
    if (n < 1 || sz < 1)
        return 2;
    int fd = open(argv[1], O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    char *buf = malloc((size_t)sz);
    double *v = malloc((size_t)n * sizeof *v);
    memset(buf, 'x', (size_t)sz);
    for (int i = 0; i < n; i++) {
        double t = now_ms();
        if (write(fd, buf, (size_t)sz) != sz || fdatasync(fd)) {
            perror("write/fdatasync");
            return 1;
        }
        v[i] = now_ms() - t;
    }
    close(fd);
    unlink(argv[1]);
    qsort(v, (size_t)n, sizeof *v, cmp);
    printf("%s n=%d size=%d: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f ms\n", argv[1], n, sz,
           v[n / 2], v[n * 9 / 10], v[n * 99 / 100], v[n * 999 / 1000], v[n - 1]);
    free(buf);
    free(v);
    return 0;
}
