/* mgw-sim - a device simulator on the SDK (sdk/mgw.h): connects N devices
 * to a Magpie gateway, prints the commands they receive, ACKs them, and
 * can misbehave on purpose (drop the connection before an ACK, send
 * everything twice, go silent). Used by tests/integration/test_4x_gateway*
 * and the benchmark.
 *
 *   mgw-sim --port P [--host A] --device ID:SECRETHEX ... | --devices FILE
 *           [--result N] [--drop-before-ack K] [--duplicates]
 *           [--silent-after S] [--uplink TEXT] [--exit-after N]
 *           [--duration S] [--no-reconnect] [--concurrency N] [--latency]
 *
 * --latency (bench/gateway.sh): a command whose payload starts with
 * "t=<CLOCK_MONOTONIC ns>" (the trigger's send time, same machine) adds
 * (time its ACK was written - t) to a histogram; SIGUSR1 prints
 * "LATENCY n=N p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.." and starts a new
 * one. That is trigger-to-ACK as the device sees it.
 *
 * FILE holds one "ID SECRETHEX" per line. One line per event on stdout:
 *   READY id | COMMAND id msg_id ttl payload | DUPLICATE id msg_id |
 *   ACK id msg_id result | DROP id msg_id | UPLINK id msg_id |
 *   UPLINK-ACK id msg_id result | SILENT id | CLOSED id code text |
 *   DISCONNECTED id why | DONE
 * Exit status: 0, or 1 on a usage or connection error. */
#include "mgw.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEVICES 100000

struct sim_dev {
    struct mgw m;
    struct mgw_config cfg;
    char id[MGW_ID_MAX + 1];
    uint8_t secret[64];
    int fd;
    int drop_ack; /* fail the next ACK's send: the connection drops before it */
    uint32_t drop_id;
    int silent, finished;
    uint32_t reconnect_at; /* ms; 0: now */
    unsigned backoff_ms;
    int uplink_sent;
    uint64_t lat_t; /* --latency: trigger time of the command being ACKed */
};

static struct sim_dev *devs;
static size_t ndevs;
static const char *host = "127.0.0.1";
static int port;
static int result_code = MGW_RESULT_DONE;
static long drop_left; /* commands still to drop before their ACK */
static int duplicates; /* send ACKs and UPLINKs twice */
static double silent_after = -1;
static const char *uplink_text;
static long exit_after = -1; /* exit after this many commands acted on */
static long acted;
static double duration = -1;
static int reconnect = 1;
static long concurrency; /* handshakes in flight at once (0: no limit) */
static uint32_t t0;
static int latency;      /* --latency */
static uint32_t *lat_us; /* samples of the current histogram */
static size_t lat_n, lat_cap;
static volatile sig_atomic_t lat_report; /* SIGUSR1 */
static int rescan;                       /* a device became ready or dropped: look at them all */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void lat_add(uint64_t t)
{
    uint64_t now = now_ns();
    uint64_t us = now > t ? (now - t) / 1000 : 0;
    if (lat_n == lat_cap) {
        size_t cap = lat_cap ? 2 * lat_cap : 65536;
        uint32_t *v = realloc(lat_us, cap * sizeof *v);
        if (!v)
            return;
        lat_us = v;
        lat_cap = cap;
    }
    lat_us[lat_n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double lat_pct(double p)
{
    size_t i = (size_t)(p * (double)lat_n);
    return lat_us[i < lat_n ? i : lat_n - 1] / 1000.0;
}

static void lat_print(void)
{
    if (lat_n) {
        qsort(lat_us, lat_n, sizeof *lat_us, cmp_u32);
        printf("LATENCY n=%zu p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", lat_n,
               lat_pct(0.50), lat_pct(0.90), lat_pct(0.99), lat_us[lat_n - 1] / 1000.0);
    } else {
        printf("LATENCY n=0\n");
    }
    fflush(stdout);
    lat_n = 0;
}

static void on_usr1(int sig)
{
    (void)sig;
    lat_report = 1;
}

static uint32_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int io_send(void *io, const uint8_t *buf, size_t len)
{
    struct sim_dev *d = io;
    if (d->fd < 0 || d->silent)
        return d->silent ? 0 : -1;
    if (d->drop_ack && len >= 8 && buf[2] == MGW_ACK) {
        /* misbehave: the connection drops before this ACK leaves */
        d->drop_ack = 0;
        say("DROP %s %u", d->id, (unsigned)d->drop_id);
        return -1;
    }
    if (d->lat_t && len >= 3 && buf[2] == MGW_ACK) {
        /* the ACK of a timed command: counted once it is written below */
        uint64_t t = d->lat_t;
        d->lat_t = 0;
        int rc = io_send(io, buf, len);
        if (rc == 0)
            lat_add(t);
        return rc;
    }
    int times = duplicates && len >= 3 && (buf[2] == MGW_ACK || buf[2] == MGW_UPLINK) ? 2 : 1;
    for (int t = 0; t < times; t++) {
        size_t off = 0;
        while (off < len) {
            ssize_t n = send(d->fd, buf + off, len - off, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                struct pollfd p = {d->fd, POLLOUT, 0};
                poll(&p, 1, 1000);
                continue;
            }
            if (n <= 0)
                return -1;
            off += (size_t)n;
        }
    }
    return 0;
}

static int io_recv(void *io, uint8_t *buf, size_t cap)
{
    struct sim_dev *d = io;
    ssize_t n = recv(d->fd, buf, cap, MSG_DONTWAIT);
    if (n > 0)
        return (int)n;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    return -1; /* closed or failed */
}

static void io_random(void *io, uint8_t *buf, size_t n)
{
    (void)io;
    while (n) {
        ssize_t r = getrandom(buf, n, 0);
        if (r > 0) {
            buf += r;
            n -= (size_t)r;
        }
    }
}

static int on_command(void *app, struct mgw *m, uint32_t id, const uint8_t *p, size_t len,
                      uint16_t ttl)
{
    (void)m;
    struct sim_dev *d = app;
    if (latency) /* thousands a second: written in blocks (stdout is fully buffered) */
        printf("COMMAND %s %u %u %.*s\n", d->id, (unsigned)id, (unsigned)ttl, (int)len,
               (const char *)p);
    else
        say("COMMAND %s %u %u %.*s", d->id, (unsigned)id, (unsigned)ttl, (int)len, (const char *)p);
    acted++;
    if (latency && len > 2 && p[0] == 't' && p[1] == '=') {
        uint64_t t = 0;
        for (size_t i = 2; i < len && p[i] >= '0' && p[i] <= '9'; i++)
            t = t * 10 + (uint64_t)(p[i] - '0');
        d->lat_t = t;
    }
    if (drop_left > 0) {
        drop_left--;
        d->drop_ack = 1;
        d->drop_id = id;
    }
    return result_code;
}

static void on_uplink_ack(void *app, struct mgw *m, uint32_t id, uint8_t result)
{
    (void)m;
    say("UPLINK-ACK %s %u %u", ((struct sim_dev *)app)->id, (unsigned)id, (unsigned)result);
}

static void on_close(void *app, struct mgw *m, int code, const char *text, size_t len)
{
    (void)m;
    say("CLOSED %s %d %.*s", ((struct sim_dev *)app)->id, code, (int)len, text ? text : "");
}

static void on_ready(void *app, struct mgw *m)
{
    struct sim_dev *d = app;
    say("READY %s", d->id);
    d->backoff_ms = 0;
    rescan = 1;
    if (uplink_text && !d->uplink_sent) {
        uint32_t id;
        if (mgw_uplink(m, (const uint8_t *)uplink_text, strlen(uplink_text), &id) == MGW_OK) {
            d->uplink_sent = 1;
            say("UPLINK %s %u", d->id, (unsigned)id);
        }
    }
}

static int unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = strlen(h);
    if (n % 2 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    return (int)(n / 2);
}

static int add_device(const char *id, const char *hex)
{
    if (ndevs >= MAX_DEVICES || strlen(id) > MGW_ID_MAX)
        return -1;
    struct sim_dev *d = &devs[ndevs];
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", id);
    int n = unhex(hex, d->secret, sizeof d->secret);
    if (n <= 0)
        return -1;
    d->cfg = (struct mgw_config){
        .device_id = d->id,
        .secret = d->secret,
        .secret_len = (size_t)n,
        .send = io_send,
        .recv = io_recv,
        .random = io_random,
        .on_command = on_command,
        .on_uplink_ack = on_uplink_ack,
        .on_close = on_close,
        .on_ready = on_ready,
        .io = d,
        .app = d,
    };
    mgw_init(&d->m, &d->cfg);
    d->fd = -1;
    ndevs++;
    return 0;
}

static int dial(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void disconnect(struct sim_dev *d, const char *why, uint32_t now)
{
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
    rescan = 1;
    say("DISCONNECTED %s %s", d->id, why);
    if (!reconnect) {
        d->finished = 1;
        return;
    }
    d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : 100;
    if (d->backoff_ms > 5000)
        d->backoff_ms = 5000;
    d->reconnect_at = now + d->backoff_ms;
}

/* Lets the SDK read what d's socket has and run its timers; a silent
 * device (hung firmware) reads nothing into the SDK and sends nothing, and
 * only notices when the server closes. */
static void serve(struct sim_dev *d, uint32_t now)
{
    if (d->silent) {
        uint8_t buf[512];
        ssize_t r = recv(d->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            close(d->fd);
            d->fd = -1;
            d->finished = 1;
            say("DISCONNECTED %s closed-by-server", d->id);
        }
        return;
    }
    int rc = mgw_poll(&d->m, now);
    if (rc != MGW_OK)
        disconnect(d,
                   rc == MGW_ERR_IO        ? "io"
                   : rc == MGW_ERR_TIMEOUT ? "timeout"
                   : rc == MGW_ERR_AUTH    ? "auth"
                   : rc == MGW_ERR_CLOSED  ? "closed"
                                           : "protocol",
                   now);
}

static void usage(void)
{
    fprintf(stderr, "usage: mgw-sim --port P [--host A] (--device ID:SECRETHEX ... | --devices "
                    "FILE)\n"
                    "  [--result N] [--drop-before-ack K] [--duplicates] [--silent-after S]\n"
                    "  [--uplink TEXT] [--exit-after N] [--duration S] [--no-reconnect]\n"
                    "  [--concurrency N]   (at most N handshakes at once; default: no limit)\n"
                    "  [--latency]         (trigger-to-ACK histogram of \"t=<ns>\" payloads, "
                    "printed on SIGUSR1)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"device", required_argument, NULL, 'd'},
        {"devices", required_argument, NULL, 'f'},
        {"result", required_argument, NULL, 'r'},
        {"drop-before-ack", required_argument, NULL, 'D'},
        {"duplicates", no_argument, NULL, 'u'},
        {"silent-after", required_argument, NULL, 's'},
        {"uplink", required_argument, NULL, 'U'},
        {"exit-after", required_argument, NULL, 'x'},
        {"duration", required_argument, NULL, 't'},
        {"no-reconnect", no_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'c'},
        {"latency", no_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    devs = calloc(MAX_DEVICES, sizeof *devs);
    if (!devs)
        return 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'd': {
            char *c = strchr(optarg, ':');
            if (!c)
                goto bad;
            *c = '\0';
            if (add_device(optarg, c + 1) != 0)
                goto bad;
            break;
        }
        case 'f': {
            FILE *f = fopen(optarg, "r");
            char id[128], hex[160];
            if (!f)
                goto bad;
            while (fscanf(f, "%127s %159s", id, hex) == 2)
                if (add_device(id, hex) != 0) {
                    fclose(f);
                    goto bad;
                }
            fclose(f);
            break;
        }
        case 'r':
            result_code = atoi(optarg);
            break;
        case 'D':
            drop_left = atol(optarg);
            break;
        case 'u':
            duplicates = 1;
            break;
        case 's':
            silent_after = atof(optarg);
            break;
        case 'U':
            uplink_text = optarg;
            break;
        case 'x':
            exit_after = atol(optarg);
            break;
        case 't':
            duration = atof(optarg);
            break;
        case 'n':
            reconnect = 0;
            break;
        case 'c':
            concurrency = atol(optarg);
            break;
        case 'L':
            latency = 1;
            break;
        default:
            goto bad;
        }
    }
    if (port <= 0 || ndevs == 0)
        goto bad;
    signal(SIGPIPE, SIG_IGN);
    if (latency) {
        struct sigaction sa = {.sa_handler = on_usr1};
        sigaction(SIGUSR1, &sa, NULL); /* no SA_RESTART: epoll_wait returns EINTR */
    }
    setvbuf(stdout, NULL, latency ? _IOFBF : _IOLBF, 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return 1;
    t0 = now_ms();
    uint32_t last_scan = t0, next_dial = 0;
    int have_dial = 0;
    rescan = 1;
    for (;;) {
        uint32_t now = now_ms();
        double el = (now - t0) / 1000.0;
        if (duration >= 0 && el >= duration)
            break;
        if (exit_after >= 0 && acted >= exit_after)
            break;
        /* the whole table is looked at every 200 ms (heartbeats, handshake
         * timeouts), when a device was due to (re)connect, and after a
         * device became ready or dropped (a handshake slot is free); in
         * between only the devices whose sockets have something: with
         * thousands of devices a pass over all of them per wake-up would
         * be most of this process's CPU */
        if (rescan || now - last_scan >= 200 || (have_dial && (int32_t)(now - next_dial) >= 0)) {
            rescan = 0;
            last_scan = now;
            have_dial = 0;
            size_t live = 0;
            long connecting = 0;
            if (concurrency > 0)
                for (size_t i = 0; i < ndevs; i++)
                    if (devs[i].fd >= 0 && !mgw_ready(&devs[i].m))
                        connecting++;
            for (size_t i = 0; i < ndevs; i++) {
                struct sim_dev *d = &devs[i];
                if (d->finished)
                    continue;
                live++;
                if (d->fd < 0) {
                    if ((int32_t)(now - d->reconnect_at) < 0 ||
                        (concurrency > 0 && connecting >= concurrency)) {
                        if (!have_dial || (int32_t)(d->reconnect_at - next_dial) < 0)
                            next_dial = d->reconnect_at;
                        have_dial = 1;
                        continue;
                    }
                    connecting++;
                    d->fd = dial();
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = d};
                    if (d->fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, d->fd, &ev) != 0) {
                        disconnect(d, "connect-failed", now);
                        continue;
                    }
                    if (mgw_connect(&d->m, now) != MGW_OK) {
                        disconnect(d, "hello-failed", now);
                        continue;
                    }
                }
                if (!d->silent && silent_after >= 0 && el >= silent_after && mgw_ready(&d->m)) {
                    d->silent = 1;
                    say("SILENT %s", d->id);
                }
                serve(d, now);
            }
            if (live == 0)
                break;
        }
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 50);
        if (n < 0 && errno != EINTR)
            break;
        if (lat_report) {
            lat_report = 0;
            lat_print();
        }
        now = now_ms();
        for (int i = 0; i < n; i++) {
            struct sim_dev *d = evs[i].data.ptr;
            if (d->fd >= 0 && !d->finished)
                serve(d, now);
        }
    }
    close(ep);
    for (size_t i = 0; i < ndevs; i++)
        if (devs[i].fd >= 0) {
            if (!devs[i].silent)
                mgw_bye(&devs[i].m, 2);
            close(devs[i].fd);
        }
    say("DONE");
    free(lat_us);
    free(devs);
    return 0;
bad:
    usage();
    free(devs);
    return 1;
}
