/* gw-http.c - the HTTP trigger of bench/gateway.sh: POSTs commands to the
 * gateway's HTTP API at a fixed rate (open loop) over keep-alive
 * connections, the way a payment backend's webhooks would, and measures
 * request -> response (the 201 is sent once the command is durable).
 *
 *   gw-http --port P --token T --devices N [--fmt l%d] [--rate R]
 *           [--duration S] [--conns C] [--drain S] [--no-key]
 *
 * Request k goes to device FMT(k % N + 1) at start + k / R, whether or not a
 * connection is free then (a request that waits for a connection counts that
 * wait: no coordinated omission). Its body is {"payload": "t=<due time, ns
 * of CLOCK_MONOTONIC>", "idempotency_key": "h<pid>-<k>"} (no key with
 * --no-key): mgw-sim --latency turns the payload into trigger-to-ACK.
 * Prints one line: RESULT-HTTP sent= ok= errors= unanswered= acc_p50_ms=
 * acc_p90_ms= acc_p99_ms= acc_max_ms=. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct conn {
    struct bufferevent *bev;
    uint64_t due; /* the request in flight (0: idle) */
    long status;  /* of the response being read; -1: headers not read yet */
    size_t body_left;
    struct conn *next_idle;
};

static struct {
    int port;
    const char *token;
    const char *fmt;
    long devices, conns;
    double rate, duration, drain;
    int no_key;
} opt = {.fmt = "l%d", .rate = 1000, .duration = 10, .conns = 64, .drain = 10};

static struct event_base *base;
static struct conn *conns, *idle;
static uint64_t start, *queue; /* due times of requests waiting for a connection */
static size_t qhead, qtail, qcap;
static long sent, ok, errors, answered;
static uint32_t *lat_us;
static size_t lat_n;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Writes the request straight to the socket (libevent's own writing would
 * add and remove EPOLLOUT around every request: two epoll_ctl calls and a
 * loop turn each, CPU this process takes from the server it measures on a
 * small machine); what the socket does not take goes to the bufferevent. */
static void send_request(struct conn *c, uint64_t due)
{
    char body[160], dev[64], req[512];
    snprintf(dev, sizeof dev, opt.fmt, (int)(sent % opt.devices + 1));
    int bl = opt.no_key ? snprintf(body, sizeof body, "{\"payload\":\"t=%" PRIu64 "\"}", due)
                        : snprintf(body, sizeof body,
                                   "{\"payload\":\"t=%" PRIu64 "\",\"idempotency_key\":\"h%ld-%ld\"}",
                                   due, (long)getpid(), sent);
    int n = snprintf(req, sizeof req,
                     "POST /gateway/v1/devices/%s/commands HTTP/1.1\r\nHost: localhost\r\n"
                     "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     dev, opt.token, bl, body);
    if (n < 0 || n >= (int)sizeof req)
        exit(1);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    ssize_t w = 0;
    if (evbuffer_get_length(out) == 0) {
        w = send(bufferevent_getfd(c->bev), req, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0)
            w = 0;
    }
    if (w < n)
        evbuffer_add(out, req + w, (size_t)(n - w));
    c->due = due;
    c->status = -1;
    sent++;
}

static void conn_free_or_next(struct conn *c)
{
    if (qhead < qtail) {
        send_request(c, queue[qhead++]);
        return;
    }
    c->due = 0;
    c->next_idle = idle;
    idle = c;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        if (c->status < 0) {
            struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
            if (p.pos < 0)
                return;
            size_t hl = (size_t)p.pos + 4;
            char *h = malloc(hl + 1);
            if (!h)
                exit(1);
            evbuffer_remove(in, h, hl);
            h[hl] = '\0';
            c->status = strncmp(h, "HTTP/1.1 ", 9) ? 0 : strtol(h + 9, NULL, 10);
            char *cl = strcasestr(h, "\r\nContent-Length:");
            c->body_left = cl ? strtoul(cl + 17, NULL, 10) : 0;
            free(h);
        }
        size_t have = evbuffer_get_length(in);
        size_t take = have < c->body_left ? have : c->body_left;
        evbuffer_drain(in, take);
        c->body_left -= take;
        if (c->body_left)
            return;
        if (c->due) {
            uint64_t now = now_ns();
            answered++;
            if (c->status == 200 || c->status == 201) {
                ok++;
                lat_us[lat_n++] = (uint32_t)((now > c->due ? now - c->due : 0) / 1000);
            } else {
                errors++;
            }
        }
        conn_free_or_next(c);
        if (!evbuffer_get_length(in))
            return;
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        fprintf(stderr, "gw-http: connection %ld %s (%s) after %ld requests sent, last status %ld\n",
                (long)(c - conns), what & BEV_EVENT_EOF ? "closed by the server" : "failed",
                evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()), sent, c->status);
        (void)bev;
        exit(1);
    }
}

static struct event *tick;

/* Sends (or queues) what is due, then sleeps until the next request is due
 * (a timer per request, not a tick every 100 us: wake-ups are CPU too). */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    uint64_t now = now_ns();
    double el = now > start ? (double)(now - start) / 1e9 : 0;
    long total = (long)(opt.rate * opt.duration);
    long due_n = now >= start ? (long)(el * opt.rate) + 1 : 0; /* k is due at k / rate */
    if (due_n > total)
        due_n = total;
    static long scheduled;
    for (; scheduled < due_n; scheduled++) {
        uint64_t due = start + (uint64_t)((double)scheduled / opt.rate * 1e9);
        if (idle) {
            struct conn *c = idle;
            idle = c->next_idle;
            send_request(c, due);
        } else {
            if (qtail == qcap)
                exit(1); /* sized for every request */
            queue[qtail++] = due;
        }
    }
    if (el >= opt.duration + opt.drain || (scheduled >= total && answered >= total)) {
        event_base_loopbreak(base);
        return;
    }
    uint64_t next = scheduled < total ? start + (uint64_t)((double)scheduled / opt.rate * 1e9)
                                      : now + 10000000u; /* draining: look every 10 ms */
    uint64_t wait = next > now ? next - now : 0;
    struct timeval tv = {(time_t)(wait / 1000000000u), (suseconds_t)(wait % 1000000000u / 1000)};
    event_add(tick, &tv);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!lat_n)
        return 0;
    size_t i = (size_t)(p * (double)lat_n);
    return lat_us[i < lat_n ? i : lat_n - 1] / 1000.0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", 1, 0, 'p'},     {"token", 1, 0, 't'}, {"devices", 1, 0, 'n'},
        {"fmt", 1, 0, 'f'},      {"rate", 1, 0, 'r'},  {"duration", 1, 0, 'd'},
        {"conns", 1, 0, 'c'},    {"drain", 1, 0, 'D'}, {"no-key", 0, 0, 'k'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'p': opt.port = atoi(optarg); break;
        case 't': opt.token = optarg; break;
        case 'n': opt.devices = atol(optarg); break;
        case 'f': opt.fmt = optarg; break;
        case 'r': opt.rate = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'c': opt.conns = atol(optarg); break;
        case 'D': opt.drain = atof(optarg); break;
        case 'k': opt.no_key = 1; break;
        default: goto usage;
        }
    }
    if (opt.port <= 0 || !opt.token || opt.devices <= 0 || opt.rate <= 0 || opt.conns <= 0)
        goto usage;
    qcap = (size_t)(opt.rate * opt.duration) + 1;
    queue = calloc(qcap, sizeof *queue);
    lat_us = calloc(qcap, sizeof *lat_us);
    conns = calloc((size_t)opt.conns, sizeof *conns);
    /* timerfd-precise timers: requests leave within ~100 us of their due
     * time, not at the next millisecond */
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!queue || !lat_us || !conns || !base)
        return 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    for (long i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev || bufferevent_socket_connect(c->bev, (struct sockaddr *)&a, sizeof a) != 0) {
            fprintf(stderr, "gw-http: cannot connect to port %d\n", opt.port);
            return 1;
        }
        int one = 1;
        setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE); /* EV_WRITE: only while output waits */
        c->next_idle = idle;
        idle = c;
    }
    tick = event_new(base, -1, 0, on_tick, NULL);
    start = now_ns() + 100000000u; /* connections established */
    struct timeval tv = {0, 100000};
    event_add(tick, &tv);
    event_base_dispatch(base);
    qsort(lat_us, lat_n, sizeof *lat_us, cmp_u32);
    printf("RESULT-HTTP sent=%ld ok=%ld errors=%ld unanswered=%ld acc_p50_ms=%.3f acc_p90_ms=%.3f "
           "acc_p99_ms=%.3f acc_max_ms=%.3f\n",
           sent + (long)(qtail - qhead), ok, errors, sent - answered + (long)(qtail - qhead),
           pct(0.5), pct(0.9), pct(0.99), lat_n ? lat_us[lat_n - 1] / 1000.0 : 0);
    return 0;
usage:
    fprintf(stderr, "usage: gw-http --port P --token T --devices N [--fmt l%%d] [--rate R] "
                    "[--duration S] [--conns C] [--drain S] [--no-key]\n");
    return 1;
}
