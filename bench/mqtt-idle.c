/* mqtt-idle - N idle MQTT 3.1.1 clients, the Mosquitto side of
 * bench/gateway.sh: each connects (clean session, a unique client id, no
 * will, no credentials), waits for CONNACK and then only keeps its
 * connection alive with PINGREQ every keepalive/2 s, like an idle device.
 * C, libevent, one event per client; no MQTT library.
 *
 *   mqtt-idle --port P [--host A] --clients N [--keepalive S] [--concurrency C]
 *             [--id-prefix STR]
 *
 * stdout: "progress connected=… failed=…" every 2 s while connecting, then
 * "ALL connected=N failed=F secs=T" once every client has either a CONNACK
 * or a failure, then "state connected=… dropped=…" every 2 s (dropped: closed
 * by the broker); on
 * SIGTERM/SIGINT "END connected=… dropped=… pings=… pongs=…" and exit 0.
 * Raises RLIMIT_NOFILE soft to hard. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { C_IDLE, C_CONNECTING, C_WAIT_CONNACK, C_UP, C_DEAD };

struct client {
    struct event *ev;
    int fd, state;
    unsigned char got; /* bytes of the pending 2- or 4-byte reply */
};

static struct event_base *base;
static struct client *cl;
static long n_clients, next_start, in_flight, concurrency = 200;
static long connected, failed, dropped, pings, pongs;
static int keepalive = 60, port;
static const char *host = "127.0.0.1", *prefix = "mi";
static struct sockaddr_in addr;
static double t0;
static int all_reported;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void start_more(void);

static void finish(struct client *c, int ok)
{
    if (c->state == C_CONNECTING || c->state == C_WAIT_CONNACK) {
        in_flight--;
        if (ok)
            connected++;
        else
            failed++;
    } else if (c->state == C_UP && !ok) {
        connected--;
        dropped++;
    }
    if (!ok) {
        if (c->ev)
            event_free(c->ev);
        c->ev = NULL;
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
        c->state = C_DEAD;
    } else {
        c->state = C_UP;
    }
    start_more();
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct client *c = arg;
    unsigned char b[64];
    ssize_t n = recv(fd, b, sizeof b, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        finish(c, 0);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (c->state == C_WAIT_CONNACK) {
            /* 20 02 <flags> <return code> */
            static const unsigned char want[3] = {0x20, 0x02, 0x00};
            if ((c->got < 3 && b[i] != want[c->got] && c->got != 2) ||
                (c->got == 3 && b[i] != 0x00)) {
                finish(c, 0);
                return;
            }
            if (++c->got == 4) {
                c->got = 0;
                finish(c, 1);
            }
        } else { /* d0 00: PINGRESP */
            if (++c->got == 2) {
                c->got = 0;
                pongs++;
            }
        }
    }
}

static void send_connect(struct client *c, long i)
{
    unsigned char p[64];
    char id[32];
    int il = snprintf(id, sizeof id, "%s%ld", prefix, i);
    size_t rl = 10 + 2 + (size_t)il;
    p[0] = 0x10;
    p[1] = (unsigned char)rl;
    memcpy(p + 2, "\0\4MQTT\4\2", 8); /* protocol name, level 4, clean session */
    p[10] = (unsigned char)(keepalive >> 8);
    p[11] = (unsigned char)keepalive;
    p[12] = (unsigned char)(il >> 8);
    p[13] = (unsigned char)il;
    memcpy(p + 14, id, (size_t)il);
    if (send(c->fd, p, 14 + (size_t)il, MSG_NOSIGNAL) != (ssize_t)(14 + il))
        finish(c, 0);
}

static void on_connected(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct client *c = arg;
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) != 0 || err != 0) {
        finish(c, 0);
        return;
    }
    c->state = C_WAIT_CONNACK;
    event_free(c->ev);
    c->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, c);
    event_add(c->ev, NULL);
    send_connect(c, c - cl);
}

static void start_more(void)
{
    while (in_flight < concurrency && next_start < n_clients) {
        struct client *c = &cl[next_start++];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        c->state = C_CONNECTING;
        in_flight++;
        if (c->fd < 0) {
            finish(c, 0);
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
            finish(c, 0);
            continue;
        }
        c->ev = event_new(base, c->fd, EV_WRITE, on_connected, c);
        event_add(c->ev, NULL);
    }
    if (!all_reported && next_start == n_clients && in_flight == 0) {
        all_reported = 1;
        printf("ALL connected=%ld failed=%ld secs=%.2f\n", connected, failed, now_s() - t0);
        fflush(stdout);
    }
}

/* Every 100 ms: PINGREQ to the next slice of clients, so that each gets
 * one every keepalive/2 s. The slice follows the clock, not the number of
 * ticks: on a busy machine ticks come late, and a client without a ping for
 * 1.5 x keepalive is dropped by the broker. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    static long cursor, ticks, done;
    double el = now_s() - t0;
    long due = (long)(el * (double)n_clients / (keepalive / 2.0)) - done;
    for (long k = 0; k < due && n_clients > 0; k++) {
        struct client *c = &cl[cursor];
        cursor = (cursor + 1) % n_clients;
        done++;
        if (c->state == C_UP) {
            static const unsigned char ping[2] = {0xc0, 0x00};
            if (send(c->fd, ping, 2, MSG_NOSIGNAL) == 2)
                pings++;
            else
                finish(c, 0);
        }
    }
    if (++ticks % 20 == 0) {
        if (!all_reported)
            printf("progress connected=%ld failed=%ld\n", connected, failed);
        else
            printf("state connected=%ld dropped=%ld\n", connected, dropped);
        fflush(stdout);
    }
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'H'},
        {"port", 1, 0, 'p'},
        {"clients", 1, 0, 'n'},
        {"keepalive", 1, 0, 'k'},
        {"concurrency", 1, 0, 'c'},
        {"id-prefix", 1, 0, 'i'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'n':
            n_clients = atol(optarg);
            break;
        case 'k':
            keepalive = atoi(optarg);
            break;
        case 'c':
            concurrency = atol(optarg);
            break;
        case 'i':
            prefix = optarg;
            break;
        default:
            goto usage;
        }
    }
    if (port <= 0 || n_clients <= 0 || keepalive < 2 || keepalive > 65535 || concurrency < 1 ||
        strlen(prefix) > 16)
        goto usage;
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        goto usage;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if ((rlim_t)n_clients + 50 > rl.rlim_cur)
            fprintf(stderr, "mqtt-idle: %ld clients do not fit RLIMIT_NOFILE %lu\n", n_clients,
                    (unsigned long)rl.rlim_cur);
    }
    signal(SIGPIPE, SIG_IGN);
    cl = calloc((size_t)n_clients, sizeof *cl);
    base = event_base_new();
    if (!cl || !base)
        return 1;
    struct event *sig1 = evsignal_new(base, SIGTERM, on_signal, NULL);
    struct event *sig2 = evsignal_new(base, SIGINT, on_signal, NULL);
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 100000};
    event_add(sig1, NULL);
    event_add(sig2, NULL);
    event_add(tick, &tv);
    t0 = now_s();
    start_more();
    event_base_dispatch(base);
    printf("END connected=%ld failed=%ld dropped=%ld pings=%ld pongs=%ld\n", connected, failed,
           dropped, pings, pongs);
    for (long i = 0; i < n_clients; i++) {
        if (cl[i].ev)
            event_free(cl[i].ev);
        if (cl[i].fd > 0)
            close(cl[i].fd);
    }
    event_free(sig1);
    event_free(sig2);
    event_free(tick);
    event_base_free(base);
    free(cl);
    return 0;
usage:
    fprintf(stderr, "usage: mqtt-idle --port P [--host A] --clients N [--keepalive S] "
                    "[--concurrency C] [--id-prefix STR]\n");
    return 2;
}
