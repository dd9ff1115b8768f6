/* loadgen.c - magpie-loadgen: an XMPP c2s load generator (libevent + OpenSSL).
 *
 * Logs in K real sessions (TCP, stream header, STARTTLS, TLS handshake,
 * stream restart, SASL SCRAM-SHA-1 / SCRAM-SHA-256 / PLAIN, bind, optional
 * legacy session, initial presence) with a bounded number of logins in
 * flight, holds them idle, then runs sender->receiver pairs at a fixed total
 * message rate with a CLOCK_MONOTONIC timestamp in each body to measure
 * delivery latency at the receiver.
 *
 * Process layout: the parent forks --procs children, each owning a
 * contiguous slice of the user range and its own event loop.  Children send
 * fixed-size binary reports up a pipe; the parent moves all of them through
 * the phases together (login -> hold -> messaging -> quit), samples the
 * server's RSS and CPU time (/proc/PID) between phases, and prints a human
 * readable summary followed by one machine readable "RESULT key=value ..."
 * line.
 *
 * MUC mode (--muc-rooms N): the sessions are N rooms of M = sessions / N
 * occupants each (session g is nick u<g> in room r<g / M> of --muc-service).
 * After the logins a join phase enters every room (its first occupant
 * first, which creates it, then the others), then messaging sends
 * groupchat messages at --rate in total, round robin over the rooms and
 * over each room's occupants; every occupant (the sender too) receives
 * each one, so deliveries = messages x M, and latency is measured per
 * delivery.
 *
 * IM modes (--im roster|offline|mam, one process): roster: after the bind
 * every session fetches its roster (a login is done at the roster result)
 * and sends its initial presence; the presences of contacts arriving are
 * counted (the login report waits until they stop).  offline: receivers
 * (odd sessions) bind without presence; a store phase sends --offline-msgs
 * messages per pair to the receiver's bare JID, then a ping barrier; a
 * delivery phase has every receiver send its presence and counts what
 * arrives.  mam: a fill phase sends --mam-fill messages per pair (window
 * 32), then every paired session queries its own archive (XEP-0313, 50
 * items per page, latest page and oldest page with 'with' alternately)
 * with --mam-window queries in flight for --duration s.
 *
 * Replies are recognised by a tiny incremental tag scanner (depth counting,
 * quoted attribute values, PIs, comments, CDATA) over the bufferevent input
 * buffer: a stanza is the byte range of one depth-1 element; it is handled
 * with plain string searches.  This is enough for server replies, which are
 * well-formed XML; it is not a validating parser.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ------------------------------------------------------------------ */
/* options */

enum mech { MECH_SCRAM_SHA1, MECH_SCRAM_SHA256, MECH_PLAIN };
enum sessmode { SESSION_AUTO, SESSION_ALWAYS, SESSION_NEVER };
enum { IM_NONE, IM_ROSTER, IM_OFFLINE, IM_MAM };

static struct {
    const char *host;
    int port;
    const char *domain;
    const char *users; /* printf format with one %d/%ld */
    const char *password;
    long first_index;
    long sessions;
    int concurrency;
    double hold;
    double rate;
    double duration;
    long pairs; /* -1: sessions / 2 */
    int server_pid;
    int procs;
    int src_addrs; /* 0: auto (one per 20,000 sessions if > 20,000) */
    enum mech mech;
    enum sessmode session;
    double login_timeout;
    double login_phase_max;
    double drain;
    int window; /* closed loop: messages in flight per pair (0: open loop at --rate) */
    const char *resource;
    const char *go_file;   /* wait for this file to exist before the hold */
    const char *gw_domain; /* gateway mode: commands to devices of this domain */
    const char *gw_fmt;    /* device id format (one %d), devices 1..gw_devices */
    long gw_devices;
    int verbose;
    long muc_rooms;          /* MUC mode: rooms (0: c2s pairs) */
    const char *muc_service; /* NULL: conference.<domain> */
    double join_max;         /* join phase limit, s */
    int im;                  /* IM mode: IM_NONE, IM_ROSTER, IM_OFFLINE, IM_MAM */
    long roster_size;        /* roster mode: contacts per user (presences expected) */
    long offline_msgs;       /* offline mode: messages per pair */
    long mam_fill;           /* mam mode: messages per pair before the queries */
    int mam_window;          /* mam mode: queries in flight per session */
    int mam_max;             /* mam mode: page size */
} opt = {
    .host = "127.0.0.1",
    .port = 5222,
    .domain = "localhost",
    .users = "user%d",
    .password = "password",
    .first_index = 1,
    .sessions = 100,
    .concurrency = 50,
    .hold = 5,
    .rate = 100,
    .duration = 10,
    .pairs = -1,
    .server_pid = 0,
    .procs = 1,
    .src_addrs = 0,
    .mech = MECH_SCRAM_SHA1,
    .session = SESSION_AUTO,
    .login_timeout = 60,
    .login_phase_max = 1200,
    .drain = 5,
    .resource = "lg",
    .go_file = NULL,
    .gw_fmt = "dev%d",
    .verbose = 0,
    .muc_rooms = 0,
    .muc_service = NULL,
    .join_max = 300,
    .offline_msgs = 100,
    .mam_fill = 10000,
    .mam_window = 1,
    .mam_max = 50,
};

static const char *mech_name(enum mech m)
{
    switch (m) {
    case MECH_SCRAM_SHA1:
        return "SCRAM-SHA-1";
    case MECH_SCRAM_SHA256:
        return "SCRAM-SHA-256";
    default:
        return "PLAIN";
    }
}

/* ------------------------------------------------------------------ */
/* time and histograms */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Log-linear histogram of microsecond values: exact below 64 us, then 32
 * sub-buckets per power of two (about 3% resolution). */
#define HBUCKETS 1920
struct hist {
    uint64_t n, sum, max;
    uint64_t b[HBUCKETS];
};

static unsigned hist_index(uint64_t v)
{
    if (v < 64)
        return (unsigned)v;
    int msb = 63 - __builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (msb - 5)) & 31u;
    unsigned i = 64u + (unsigned)(msb - 6) * 32u + sub;
    return i < HBUCKETS ? i : HBUCKETS - 1;
}

/* Representative (middle) value of bucket i. */
static uint64_t hist_value(unsigned i)
{
    if (i < 64)
        return i;
    unsigned k = i - 64;
    int msb = (int)(k / 32) + 6;
    uint64_t lo = (uint64_t)(32 + k % 32) << (msb - 5);
    return lo + ((1ull << (msb - 5)) >> 1);
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
    h->b[hist_index(v)]++;
}

static void hist_merge(struct hist *d, const struct hist *s)
{
    d->n += s->n;
    d->sum += s->sum;
    if (s->max > d->max)
        d->max = s->max;
    for (unsigned i = 0; i < HBUCKETS; i++)
        d->b[i] += s->b[i];
}

/* Value (us) at quantile q in [0,1]; 0 for an empty histogram. */
static uint64_t hist_q(const struct hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t target = (uint64_t)ceil(q * (double)h->n), acc = 0;
    if (target == 0)
        target = 1;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        acc += h->b[i];
        if (acc >= target) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------ */
/* reports from children to the parent */

enum reason {
    R_CONNECT,
    R_TLS,
    R_STREAM,
    R_AUTH,
    R_BIND,
    R_CLOSED,
    R_TIMEOUT,
    R_STREAMERR,
    R_COUNT
};
static const char *reason_name[R_COUNT] = {"connect", "tls",    "stream",  "auth",
                                           "bind",    "closed", "timeout", "stream_error"};

enum { REP_LOGIN = 1, REP_MSG = 2, REP_JOIN = 3 };

struct report {
    int kind;
    long ok, fail, dropped;
    long reasons[R_COUNT];
    uint64_t t0, t1;               /* phase window, CLOCK_MONOTONIC ns */
    uint64_t last_send, last_recv; /* when the last message was sent / received */
    long sent, recv;
    long expect; /* deliveries expected for what was sent (c2s: sent) */
    long pairs;
    char first_err[240];
    struct hist h; /* login times or message latencies (us) */
    /* gateway mode: h is send -> receipt; ha send -> <accepted/> */
    long acc, gw_errors;
    struct hist ha;
};

static int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads exactly len bytes; returns 0, or -1 on EOF/error. */
static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t r = read(fd, p, len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            return -1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* small helpers: base64, SCRAM */

/* Base64-encodes len bytes into a new NUL-terminated string (caller frees). */
static char *b64_encode(const unsigned char *in, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out)
        abort();
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

/* Decodes base64 text of length len into out (capacity cap).  Returns the
 * decoded length or -1. */
static int b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    while (len && (in[len - 1] == ' ' || in[len - 1] == '\n' || in[len - 1] == '\r'))
        len--;
    if (len % 4 || (len / 4) * 3 > cap)
        return -1;
    if (len == 0)
        return 0;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    if (in[len - 1] == '=')
        n--;
    if (len > 1 && in[len - 2] == '=')
        n--;
    return n;
}

static const EVP_MD *scram_md(void)
{
    return opt.mech == MECH_SCRAM_SHA256 ? EVP_sha256() : EVP_sha1();
}

/* ------------------------------------------------------------------ */
/* sessions and the per-process engine */

enum state {
    S_NEW,
    S_CONNECTING,
    S_FEAT1,
    S_PROCEED,
    S_TLS,
    S_FEAT2,
    S_SASL1,
    S_SASL2,
    S_FEAT3,
    S_BIND,
    S_SESSION,
    S_ROSTER,
    S_ONLINE,
    S_DEAD
};

static const char *state_name[] = {
    "new",          "connecting",     "features",     "starttls",      "tls-handshake",
    "features-tls", "sasl-challenge", "sasl-success", "features-bind", "bind",
    "session",      "roster",         "online",        "dead"};

struct sess {
    long g;    /* global session number (0-based) */
    long user; /* user index: first_index + g */
    enum state state;
    int fd;
    struct bufferevent *bev;
    int depth;   /* XML depth: 0 outside stream, 1 in stream */
    size_t scan; /* first unscanned byte of the input buffer */
    uint64_t t_start;
    unsigned need_session : 1;
    unsigned tls : 1;
    char *jid;               /* bound full JID (malloc'd) */
    char *scram_first_bare;  /* client-first-message-bare (malloc'd) */
    unsigned muc_joined : 1; /* MUC mode: self-presence (110) received */
    long im_n;               /* IM modes: messages sent (sender) / received (receiver) */
    unsigned sm_offered : 1; /* offline mode: the server offers XEP-0198 */
    unsigned sm : 1;         /* ... and it is enabled on this session */
    unsigned barrier : 1;    /* offline mode: the store barrier is pending */
    uint32_t sm_in;          /* XEP-0198: stanzas received since <enable/> */
    unsigned char server_sig[EVP_MAX_MD_SIZE];
    unsigned server_sig_len;
};

static struct {
    struct event_base *base;
    SSL_CTX *ssl;
    struct sess *s;
    long n;    /* sessions in this process */
    long g0;   /* global number of s[0] */
    long next; /* next session to start */
    long inflight;
    int conc;
    int n_src; /* source addresses (0: don't bind) */
    struct sockaddr_in dst;
    int ctl; /* command pipe from parent */
    int rep; /* report pipe to parent */
    struct report login, msg;
    int login_reported;
    /* messaging */
    int messaging;
    long npairs;
    double rate;
    uint64_t msg_t0, msg_end, drain_end;
    long rr;      /* round-robin pair cursor */
    long gw_next; /* gateway mode: next device */
    struct event *msg_timer, *tick, *ctl_ev;
    char *scratch;
    size_t scratch_cap;
    int errs_printed;
} E;

/* MUC mode state of a child: its slice of sessions may hold parts of
 * several rooms (and rooms may span children). Joins go in two steps
 * through the parent: 'J' every room's first occupant (it creates the
 * room), 'K' the others once every child has reported its creators. */
static struct {
    long occ;          /* occupants per room (global) */
    long room0, rooms; /* rooms with occupants in this child: room0 .. room0+rooms-1 */
    long *next_sender; /* per local room: round-robin offset among its local occupants */
    long room_rr;
    long step_todo; /* joins of the current step not answered yet */
    int joining, join_reported;
    uint64_t join_deadline;
    struct report join;
} MU;

/* IM modes: the state of the current phase of this (single) child. */
static struct {
    int phase; /* 0, or the command letter of the running phase */
    long todo; /* barriers / queries outstanding */
    uint64_t deadline, end, all_logged_in;
    unsigned long qseq;
    long stored;
    struct report r;
} IM;

static void pump_logins(void);
static int im_stanza(struct sess *s, const char *name, const char *st);
static int im_receiver(const struct sess *s);
static void im_tick(void);
static void sess_send(struct sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sess_send(struct sess *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
    va_end(ap);
}

static void stream_header(struct sess *s)
{
    sess_send(s,
              "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              "xmlns:stream='http://etherx.jabber.org/streams' to='%s' "
              "version='1.0' xml:lang='en'>",
              opt.domain);
}

static void report_login_if_done(void)
{
    if (E.login_reported || E.login.ok + E.login.fail < E.n)
        return;
    if (!IM.all_logged_in)
        IM.all_logged_in = mono_ns();
    /* roster mode: the contacts' presences (broadcasts and probe answers)
     * are part of the logins: wait until all expected came, or none for 1 s */
    if (opt.im == IM_ROSTER && E.login.recv < E.login.expect) {
        uint64_t now = mono_ns(), last = E.login.last_recv > IM.all_logged_in
                                             ? E.login.last_recv
                                             : IM.all_logged_in;
        if (now - last < 1000000000ull)
            return;
    }
    E.login_reported = 1;
    E.login.kind = REP_LOGIN;
    E.login.t1 = IM.all_logged_in;
    if (write_full(E.rep, &E.login, sizeof E.login) < 0)
        exit(1);
}

/* Frees a bufferevent once its output (our closing </stream:stream>) has
 * been written, or on any error. */
static void closing_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_free(bev);
}

static void closing_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    (void)arg;
    bufferevent_free(bev);
}

static void sess_close(struct sess *s)
{
    if (s->bev) {
        bufferevent_free(s->bev); /* closes fd: BEV_OPT_CLOSE_ON_FREE */
        s->bev = NULL;
    } else if (s->fd >= 0) {
        close(s->fd);
    }
    s->fd = -1;
    free(s->scram_first_bare);
    s->scram_first_bare = NULL;
}

/* Marks a session failed (during login) or dropped (after login), closes
 * it and lets the next login start. */
static void sess_fail(struct sess *s, enum reason r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void sess_fail(struct sess *s, enum reason r, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    if (s->state == S_DEAD)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int was_online = s->state == S_ONLINE;
    sess_close(s);
    s->state = S_DEAD;
    if (was_online) {
        E.login.dropped++;
        E.msg.dropped++;
    } else {
        E.inflight--;
        E.login.fail++;
        E.login.reasons[r]++;
    }
    if (!E.login.first_err[0])
        snprintf(E.login.first_err, sizeof E.login.first_err, "user %ld (%s): %s", s->user,
                 reason_name[r], msg);
    if (opt.verbose || E.errs_printed < 3) {
        E.errs_printed++;
        fprintf(stderr, "loadgen[%d]: user %ld %s: %s: %s\n", (int)getpid(), s->user,
                was_online ? "dropped" : "login failed", reason_name[r], msg);
    }
    if (!was_online) {
        pump_logins();
        report_login_if_done();
    }
}

static void go_online(struct sess *s)
{
    if (opt.im == IM_OFFLINE && s->sm_offered && !im_receiver(s)) {
        /* senders: XEP-0198, so that the store barrier is <r/> -> <a/>,
         * which a server that acks durably answers once all is stored */
        sess_send(s, "<enable xmlns='urn:xmpp:sm:3'/>");
        s->sm = 1;
    }
    if (!im_receiver(s)) /* offline mode: receivers stay unavailable */
        sess_send(s, "<presence/>");
    s->state = S_ONLINE;
    E.inflight--;
    E.login.ok++;
    hist_add(&E.login.h, (mono_ns() - s->t_start) / 1000);
    free(s->scram_first_bare);
    s->scram_first_bare = NULL;
    pump_logins();
    report_login_if_done();
}

/* ---- stanza helpers (st is a NUL-terminated copy of one element) ---- */

/* Copies the element name of st into out. */
static void st_name(const char *st, char *out, size_t cap)
{
    size_t i = 0;
    st++;
    while (*st && *st != ' ' && *st != '>' && *st != '/' && *st != '\t' && *st != '\n' &&
           *st != '\r' && i + 1 < cap)
        out[i++] = *st++;
    out[i] = 0;
}

/* Finds attribute name in the opening tag of st and copies its value to out.
 * Returns 1 if found. */
static int st_attr(const char *st, const char *name, char *out, size_t cap)
{
    const char *end = strchr(st, '>');
    size_t nl = strlen(name);
    for (const char *p = st + 1; p && p < end; p++) {
        p = strstr(p, name);
        if (!p || p >= end)
            return 0;
        if ((p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n' || p[-1] == '\r') && p[nl] == '=' &&
            (p[nl + 1] == '\'' || p[nl + 1] == '"')) {
            char q = p[nl + 1];
            const char *v = p + nl + 2, *ve = strchr(v, q);
            if (!ve)
                return 0;
            size_t l = (size_t)(ve - v);
            if (l >= cap)
                l = cap - 1;
            memcpy(out, v, l);
            out[l] = 0;
            return 1;
        }
    }
    return 0;
}

/* Returns the text content of the first <tag> element inside st (pointer
 * into st, length in *len), or NULL. */
static const char *st_child_text(const char *st, const char *tag, size_t *len)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    size_t ol = strlen(open);
    for (const char *p = strstr(st, open); p; p = strstr(p + 1, open)) {
        if (p[ol] != '>' && p[ol] != ' ')
            continue;
        const char *gt = strchr(p, '>');
        if (!gt || gt[-1] == '/')
            return NULL;
        const char *e = strstr(gt, close);
        if (!e)
            return NULL;
        *len = (size_t)(e - gt - 1);
        return gt + 1;
    }
    return NULL;
}

/* Text content of the root element of st. */
static const char *st_text(const char *st, size_t *len)
{
    const char *gt = strchr(st, '>');
    if (!gt || gt[-1] == '/') {
        *len = 0;
        return "";
    }
    const char *e = strrchr(st, '<');
    *len = e > gt ? (size_t)(e - gt - 1) : 0;
    return gt + 1;
}

/* Condition name of a stream error / SASL failure (first child element). */
static void st_condition(const char *st, char *out, size_t cap)
{
    const char *gt = strchr(st, '>');
    out[0] = 0;
    if (!gt || gt[-1] == '/')
        return;
    const char *c = strchr(gt, '<');
    if (c && c[1] != '/')
        st_name(c, out, cap);
}

/* ---- SASL ---- */

static void escape_saslname(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (; *in && o + 4 < cap; in++) {
        if (*in == '=') {
            memcpy(out + o, "=3D", 3);
            o += 3;
        } else if (*in == ',') {
            memcpy(out + o, "=2C", 3);
            o += 3;
        } else
            out[o++] = *in;
    }
    out[o] = 0;
}

static void username(char *out, size_t cap, long user)
{
    snprintf(out, cap, opt.users, (int)user);
}

static void send_auth(struct sess *s)
{
    char user[128], esc[400];
    username(user, sizeof user, s->user);
    if (opt.mech == MECH_PLAIN) {
        unsigned char buf[512];
        size_t ul = strlen(user), pl = strlen(opt.password);
        if (ul + pl + 2 > sizeof buf) {
            sess_fail(s, R_AUTH, "credentials too long");
            return;
        }
        buf[0] = 0;
        memcpy(buf + 1, user, ul);
        buf[1 + ul] = 0;
        memcpy(buf + 2 + ul, opt.password, pl);
        char *b = b64_encode(buf, ul + pl + 2);
        sess_send(s, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
                  b);
        free(b);
        s->state = S_SASL2;
        return;
    }
    unsigned char rnd[18];
    RAND_bytes(rnd, sizeof rnd);
    char *nonce = b64_encode(rnd, sizeof rnd);
    escape_saslname(esc, sizeof esc, user);
    size_t l = strlen(esc) + strlen(nonce) + 8;
    s->scram_first_bare = malloc(l);
    if (!s->scram_first_bare)
        abort();
    snprintf(s->scram_first_bare, l, "n=%s,r=%s", esc, nonce);
    free(nonce);
    char first[600];
    snprintf(first, sizeof first, "n,,%s", s->scram_first_bare);
    char *b = b64_encode((unsigned char *)first, strlen(first));
    sess_send(s, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='%s'>%s</auth>",
              mech_name(opt.mech), b);
    free(b);
    s->state = S_SASL1;
}

/* Handles the SCRAM server-first-message (base64 text b64/len): derives the
 * keys, sends client-final-message and keeps the expected ServerSignature. */
static void scram_challenge(struct sess *s, const char *b64, size_t len)
{
    unsigned char sf[1024];
    int sfl = b64_decode(b64, len, sf, sizeof sf - 1);
    if (sfl <= 0) {
        sess_fail(s, R_AUTH, "bad challenge base64");
        return;
    }
    sf[sfl] = 0;
    const char *r = NULL, *salt = NULL;
    size_t rl = 0, saltl = 0;
    long iter = 0;
    for (char *p = (char *)sf; p && *p;) {
        char *c = strchr(p, ',');
        size_t fl = c ? (size_t)(c - p) : strlen(p);
        if (fl > 2 && p[1] == '=') {
            if (p[0] == 'r') {
                r = p + 2;
                rl = fl - 2;
            } else if (p[0] == 's') {
                salt = p + 2;
                saltl = fl - 2;
            } else if (p[0] == 'i')
                iter = strtol(p + 2, NULL, 10);
        }
        p = c ? c + 1 : NULL;
    }
    const char *cn = strstr(s->scram_first_bare, ",r=") + 3;
    if (!r || !salt || iter <= 0 || iter > 10000000 || rl < strlen(cn) ||
        memcmp(r, cn, strlen(cn)) != 0) {
        sess_fail(s, R_AUTH, "bad server-first-message '%s'", (char *)sf);
        return;
    }
    unsigned char saltbin[256];
    int sl = b64_decode(salt, saltl, saltbin, sizeof saltbin);
    if (sl <= 0) {
        sess_fail(s, R_AUTH, "bad salt");
        return;
    }
    const EVP_MD *md = scram_md();
    unsigned dl = (unsigned)EVP_MD_get_size(md);
    unsigned char salted[EVP_MAX_MD_SIZE], ckey[EVP_MAX_MD_SIZE], skey[EVP_MAX_MD_SIZE];
    unsigned char stored[EVP_MAX_MD_SIZE], csig[EVP_MAX_MD_SIZE], proof[EVP_MAX_MD_SIZE];
    unsigned hl;
    if (!PKCS5_PBKDF2_HMAC(opt.password, (int)strlen(opt.password), saltbin, sl, (int)iter, md,
                           (int)dl, salted)) {
        sess_fail(s, R_AUTH, "PBKDF2 failed");
        return;
    }
    HMAC(md, salted, (int)dl, (const unsigned char *)"Client Key", 10, ckey, &hl);
    HMAC(md, salted, (int)dl, (const unsigned char *)"Server Key", 10, skey, &hl);
    EVP_Digest(ckey, dl, stored, &hl, md, NULL);
    char final_wo[600];
    snprintf(final_wo, sizeof final_wo, "c=biws,r=%.*s", (int)rl, r);
    size_t aml = strlen(s->scram_first_bare) + (size_t)sfl + strlen(final_wo) + 3;
    char *am = malloc(aml);
    if (!am)
        abort();
    snprintf(am, aml, "%s,%s,%s", s->scram_first_bare, (char *)sf, final_wo);
    HMAC(md, stored, (int)dl, (unsigned char *)am, strlen(am), csig, &hl);
    HMAC(md, skey, (int)dl, (unsigned char *)am, strlen(am), s->server_sig, &s->server_sig_len);
    free(am);
    for (unsigned i = 0; i < dl; i++)
        proof[i] = ckey[i] ^ csig[i];
    char *pb = b64_encode(proof, dl);
    char final[800];
    snprintf(final, sizeof final, "%s,p=%s", final_wo, pb);
    free(pb);
    char *fb = b64_encode((unsigned char *) final, strlen(final));
    sess_send(s, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>", fb);
    free(fb);
    s->state = S_SASL2;
}

/* Verifies the server-final-message "v=..." carried by <success/>. */
static int scram_verify(struct sess *s, const char *b64, size_t len)
{
    unsigned char buf[256];
    int l = b64_decode(b64, len, buf, sizeof buf - 1);
    if (l < 3)
        return -1;
    buf[l] = 0;
    if (buf[0] != 'v' || buf[1] != '=')
        return -1;
    unsigned char sig[EVP_MAX_MD_SIZE];
    int sl = b64_decode((char *)buf + 2, strlen((char *)buf + 2), sig, sizeof sig);
    if (sl != (int)s->server_sig_len || memcmp(sig, s->server_sig, (size_t)sl) != 0)
        return -1;
    return 0;
}

/* ---- TLS switch ---- */

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

/* Replaces the plain bufferevent by an OpenSSL one on the same socket.
 * The plain one is disabled first so it cannot read handshake bytes. */
static void start_tls(struct sess *s)
{
    bufferevent_disable(s->bev, EV_READ | EV_WRITE);
    bufferevent_free(s->bev); /* no CLOSE_ON_FREE: fd stays open */
    s->bev = NULL;
    SSL *ssl = SSL_new(E.ssl);
    if (!ssl) {
        sess_fail(s, R_TLS, "SSL_new failed");
        return;
    }
    SSL_set_tlsext_host_name(ssl, opt.domain);
    s->bev = bufferevent_openssl_socket_new(E.base, s->fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev) {
        SSL_free(ssl);
        sess_fail(s, R_TLS, "bufferevent_openssl_socket_new failed");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    s->tls = 1;
    s->depth = 0;
    s->scan = 0;
    s->state = S_TLS;
}

/* ---- stanza dispatch ---- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void send_test_message(struct sess *a, struct sess *b);

/* Gateway mode: the command's <accepted/> (durable) and its XEP-0184
 * receipt (the device ACKed) carry the id we sent, 'g<send time ns>'. */
static void on_gw_message(const char *st)
{
    char id[64] = "", type[16] = "";
    const char *r = strstr(st, "<received");
    const char *a = strstr(st, "<accepted");
    st_attr(st, "type", type, sizeof type);
    if (!strcmp(type, "error")) {
        E.msg.gw_errors++;
        E.msg.recv++;
        E.msg.last_recv = mono_ns();
        return;
    }
    if ((!r && !a) || !st_attr(r ? r : a, "id", id, sizeof id) || id[0] != 'g')
        return;
    uint64_t t = strtoull(id + 1, NULL, 10), now = mono_ns();
    if (a) {
        E.msg.acc++;
        hist_add(&E.msg.ha, now > t ? (now - t) / 1000 : 0);
        return;
    }
    E.msg.recv++;
    E.msg.last_recv = now;
    hist_add(&E.msg.h, now > t ? (now - t) / 1000 : 0);
}

static void on_message(struct sess *s, const char *st)
{
    size_t bl;
    if (opt.gw_domain) {
        on_gw_message(st);
        return;
    }
    const char *body = st_child_text(st, "body", &bl);
    if (!body || bl < 3 || body[0] != 't' || body[1] != '=')
        return;
    uint64_t t = strtoull(body + 2, NULL, 10), now = mono_ns();
    E.msg.recv++;
    E.msg.last_recv = now;
    hist_add(&E.msg.h, now > t ? (now - t) / 1000 : 0);
    /* closed loop: the pair's sender sends the next one */
    long i = (long)(s - E.s);
    if (opt.window > 0 && E.messaging && now < E.msg_end && (i & 1) && i / 2 < E.npairs &&
        E.s[i - 1].state == S_ONLINE)
        send_test_message(&E.s[i - 1], s);
}

static const char *muc_service(void)
{
    static char buf[300];
    if (opt.muc_service)
        return opt.muc_service;
    snprintf(buf, sizeof buf, "conference.%s", opt.domain);
    return buf;
}

static long sess_room(const struct sess *s)
{
    return s->g / MU.occ;
}

static void muc_send_join(struct sess *s)
{
    sess_send(s,
              "<presence to='r%ld@%s/u%ld'><x xmlns='http://jabber.org/protocol/muc'>"
              "<history maxstanzas='0'/></x></presence>",
              sess_room(s), muc_service(), s->g);
}

/* The current join step is over (every join answered, or the limit):
 * cumulative counts go to the parent. */
static void muc_join_report(void)
{
    if (MU.join_reported)
        return;
    MU.join_reported = 1;
    MU.joining = 0;
    MU.join.kind = REP_JOIN;
    MU.join.t1 = mono_ns();
    if (write_full(E.rep, &MU.join, sizeof MU.join) < 0)
        exit(1);
}

static void muc_join_done(struct sess *s, int ok)
{
    if (ok) {
        s->muc_joined = 1;
        MU.join.ok++;
        hist_add(&MU.join.h, (mono_ns() - MU.join.t0) / 1000);
    } else {
        MU.join.fail++;
    }
    if (--MU.step_todo <= 0)
        muc_join_report();
}

/* Step 1 (creators = 1) or 2: sends the joins of this child's first
 * occupants, or of the others. */
static void muc_join_step(int creators)
{
    MU.joining = 1;
    MU.join_reported = 0;
    if (creators)
        MU.join.t0 = mono_ns();
    MU.join_deadline = mono_ns() + (uint64_t)(opt.join_max * 1e9);
    MU.step_todo = 0;
    for (long i = 0; i < E.n; i++)
        if ((E.s[i].g % MU.occ == 0) == creators)
            MU.step_todo++;
    if (MU.step_todo == 0) {
        muc_join_report();
        return;
    }
    for (long i = 0; i < E.n; i++) {
        struct sess *c = &E.s[i];
        if ((c->g % MU.occ == 0) != creators)
            continue;
        if (c->state == S_ONLINE)
            muc_send_join(c);
        else
            muc_join_done(c, 0);
    }
}

/* Presence during the join phase: our own occupant's self-presence (status
 * 110) or an error for it. */
static void on_presence(struct sess *s, const char *st)
{
    if (!MU.joining || s->muc_joined)
        return;
    char from[512] = "", want[512], type[16] = "";
    st_attr(st, "from", from, sizeof from);
    snprintf(want, sizeof want, "r%ld@%s/u%ld", sess_room(s), muc_service(), s->g);
    if (strcmp(from, want) != 0)
        return;
    st_attr(st, "type", type, sizeof type);
    if (strcmp(type, "error") == 0) {
        char cond[64];
        st_condition(strstr(st, "<error") ? strstr(st, "<error") : st, cond, sizeof cond);
        if (!MU.join.first_err[0])
            snprintf(MU.join.first_err, sizeof MU.join.first_err, "join %.160s: %.60s", want, cond);
        muc_join_done(s, 0);
    } else if (strstr(st, "code='110'") || strstr(st, "code=\"110\"")) {
        muc_join_done(s, 1);
    }
}

/* Answers an iq get/set addressed to the client: ping gets a result,
 * anything else service-unavailable. */
static void on_iq(struct sess *s, const char *st)
{
    char type[16] = "", id[128] = "", from[512] = "";
    st_attr(st, "type", type, sizeof type);
    if (strcmp(type, "get") && strcmp(type, "set"))
        return;
    st_attr(st, "id", id, sizeof id);
    int has_from = st_attr(st, "from", from, sizeof from);
    char to[600] = "";
    if (has_from)
        snprintf(to, sizeof to, " to='%s'", from);
    if (strstr(st, "urn:xmpp:ping"))
        sess_send(s, "<iq type='result' id='%s'%s/>", id, to);
    else
        sess_send(s,
                  "<iq type='error' id='%s'%s><error type='cancel'><service-unavailable "
                  "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
                  id, to);
}

/* The resource is bound (and the session established): roster mode fetches
 * the roster first, the others go online. */
static void bound(struct sess *s)
{
    if (opt.im != IM_ROSTER) {
        go_online(s);
        return;
    }
    sess_send(s, "<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>");
    s->state = S_ROSTER;
}

/* Handles one complete depth-1 element.  Returns 1 if the caller must stop
 * touching the session's bufferevent (closed, or replaced for TLS). */
static int handle_stanza(struct sess *s, const char *st)
{
    char name[64], cond[64];
    size_t tl;
    const char *t;
    st_name(st, name, sizeof name);
    if (ends_with(name, ":error") && strstr(st, "http://etherx.jabber.org/streams")) {
        st_condition(st, cond, sizeof cond);
        sess_fail(s, R_STREAMERR, "stream error <%s/>", cond);
        return 1;
    }
    switch (s->state) {
    case S_FEAT1:
        if (!strstr(st, "urn:ietf:params:xml:ns:xmpp-tls")) {
            sess_fail(s, R_STREAM, "no STARTTLS offered");
            return 1;
        }
        sess_send(s, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        s->state = S_PROCEED;
        return 0;
    case S_PROCEED:
        if (strcmp(name, "proceed") != 0) {
            sess_fail(s, R_TLS, "STARTTLS refused (<%s/>)", name);
            return 1;
        }
        start_tls(s);
        return 1;
    case S_FEAT2: {
        char want[64];
        snprintf(want, sizeof want, ">%s<", mech_name(opt.mech));
        if (!strstr(st, want)) {
            sess_fail(s, R_AUTH, "mechanism %s not offered", mech_name(opt.mech));
            return 1;
        }
        send_auth(s);
        return s->state == S_DEAD;
    }
    case S_SASL1:
        if (strcmp(name, "challenge") == 0) {
            t = st_text(st, &tl);
            scram_challenge(s, t, tl);
            return s->state == S_DEAD;
        }
        st_condition(st, cond, sizeof cond);
        sess_fail(s, R_AUTH, "<%s/> %s", name, cond);
        return 1;
    case S_SASL2:
        if (strcmp(name, "success") != 0) {
            st_condition(st, cond, sizeof cond);
            sess_fail(s, R_AUTH, "<%s/> %s", name, cond);
            return 1;
        }
        if (opt.mech != MECH_PLAIN) {
            t = st_text(st, &tl);
            if (scram_verify(s, t, tl) != 0) {
                sess_fail(s, R_AUTH, "bad server signature");
                return 1;
            }
        }
        s->depth = 0;
        stream_header(s);
        s->state = S_FEAT3;
        return 0;
    case S_FEAT3: {
        if (!strstr(st, "urn:ietf:params:xml:ns:xmpp-bind")) {
            sess_fail(s, R_BIND, "no bind feature");
            return 1;
        }
        const char *sess = strstr(st, "urn:ietf:params:xml:ns:xmpp-session");
        s->sm_offered = strstr(st, "urn:xmpp:sm:3") != NULL;
        if (opt.session == SESSION_ALWAYS)
            s->need_session = 1;
        else if (opt.session == SESSION_NEVER || !sess)
            s->need_session = 0;
        else
            s->need_session = strstr(st, "<optional") == NULL;
        sess_send(s,
                  "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>%s%ld</resource></bind></iq>",
                  opt.resource, s->user);
        s->state = S_BIND;
        return 0;
    }
    case S_BIND: {
        char id[32] = "", type[16] = "";
        st_attr(st, "id", id, sizeof id);
        st_attr(st, "type", type, sizeof type);
        if (strcmp(name, "iq") || strcmp(id, "bind1"))
            return 0;
        if (strcmp(type, "result")) {
            st_condition(strstr(st, "<error") ? strstr(st, "<error") : st, cond, sizeof cond);
            sess_fail(s, R_BIND, "bind %s %s", type, cond);
            return 1;
        }
        t = st_child_text(st, "jid", &tl);
        if (!t || !tl) {
            sess_fail(s, R_BIND, "bind result without jid");
            return 1;
        }
        free(s->jid);
        s->jid = strndup(t, tl);
        if (s->need_session) {
            sess_send(s, "<iq type='set' id='sess1'><session "
                         "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
            s->state = S_SESSION;
        } else {
            bound(s);
        }
        return 0;
    }
    case S_SESSION: {
        char id[32] = "", type[16] = "";
        st_attr(st, "id", id, sizeof id);
        st_attr(st, "type", type, sizeof type);
        if (strcmp(name, "iq") || strcmp(id, "sess1"))
            return 0;
        if (strcmp(type, "result")) {
            sess_fail(s, R_BIND, "session %s", type);
            return 1;
        }
        bound(s);
        return 0;
    }
    case S_ROSTER: {
        char id[32] = "", type[16] = "";
        st_attr(st, "id", id, sizeof id);
        st_attr(st, "type", type, sizeof type);
        if (strcmp(name, "iq") || strcmp(id, "roster1")) {
            if (!strcmp(name, "presence")) /* a contact's, before our roster result */
                im_stanza(s, name, st);
            return 0;
        }
        if (strcmp(type, "result")) {
            sess_fail(s, R_BIND, "roster get %s", type);
            return 1;
        }
        for (const char *p = st; (p = strstr(p, "<item")) != NULL; p += 5)
            E.login.sent++; /* roster items received */
        go_online(s);
        return 0;
    }
    case S_ONLINE:
        if (s->sm && (!strcmp(name, "message") || !strcmp(name, "presence") || !strcmp(name, "iq")))
            s->sm_in++;
        if (opt.im && im_stanza(s, name, st))
            return 0;
        if (strcmp(name, "message") == 0)
            on_message(s, st);
        else if (strcmp(name, "iq") == 0)
            on_iq(s, st);
        else if (strcmp(name, "presence") == 0 && opt.muc_rooms)
            on_presence(s, st);
        return 0;
    default:
        return 0;
    }
}

/* Copies bytes [0,len) of the input buffer into the scratch buffer as a
 * NUL-terminated string, drains them, and dispatches the stanza. */
static int deliver(struct sess *s, struct evbuffer *in, size_t len)
{
    if (len + 1 > E.scratch_cap) {
        E.scratch_cap = (len + 1) * 2;
        E.scratch = realloc(E.scratch, E.scratch_cap);
        if (!E.scratch)
            abort();
    }
    evbuffer_remove(in, E.scratch, len);
    E.scratch[len] = 0;
    s->scan = 0;
    return handle_stanza(s, E.scratch);
}

enum { T_MORE, T_SKIP, T_OPEN, T_EMPTY, T_END };

/* Classifies the markup starting at p[a] == '<' and sets *e to the index
 * just past it.  T_MORE: incomplete, need more bytes. */
static int tag_end(const unsigned char *p, size_t n, size_t a, size_t *e)
{
    const unsigned char *f;
    if (a + 1 >= n)
        return T_MORE;
    if (p[a + 1] == '?') {
        f = memmem(p + a + 2, n - a - 2, "?>", 2);
        if (!f)
            return T_MORE;
        *e = (size_t)(f - p) + 2;
        return T_SKIP;
    }
    if (p[a + 1] == '!') {
        if (n - a < 9)
            return T_MORE;
        const char *term = ">";
        if (memcmp(p + a, "<!--", 4) == 0)
            term = "-->";
        else if (memcmp(p + a, "<![CDATA[", 9) == 0)
            term = "]]>";
        f = memmem(p + a + 2, n - a - 2, term, strlen(term));
        if (!f)
            return T_MORE;
        *e = (size_t)(f - p) + strlen(term);
        return T_SKIP;
    }
    char q = 0;
    for (size_t i = a + 1; i < n; i++) {
        unsigned char c = p[i];
        if (q) {
            if (c == q)
                q = 0;
        } else if (c == '\'' || c == '"') {
            q = (char)c;
        } else if (c == '>') {
            *e = i + 1;
            if (p[a + 1] == '/')
                return T_END;
            return p[i - 1] == '/' ? T_EMPTY : T_OPEN;
        }
    }
    return T_MORE;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct sess *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t n = evbuffer_get_length(in), e = 0;
        if (s->scan >= n)
            return;
        unsigned char *p = evbuffer_pullup(in, -1);
        unsigned char *lt = memchr(p + s->scan, '<', n - s->scan);
        if (!lt) {
            if (s->depth <= 1) {
                evbuffer_drain(in, n);
                s->scan = 0;
            } else {
                s->scan = n;
            }
            return;
        }
        size_t a = (size_t)(lt - p);
        if (s->depth <= 1 && a > 0) { /* whitespace between stanzas */
            evbuffer_drain(in, a);
            s->scan = 0;
            continue;
        }
        int k = tag_end(p, n, a, &e);
        switch (k) {
        case T_MORE:
            s->scan = a;
            return;
        case T_SKIP:
            if (s->depth <= 1) {
                evbuffer_drain(in, e);
                s->scan = 0;
            } else {
                s->scan = e;
            }
            break;
        case T_END:
            if (s->depth <= 1) { /* </stream:stream>: answer it */
                struct bufferevent *b = s->bev;
                s->bev = NULL;
                s->fd = -1;
                bufferevent_disable(b, EV_READ);
                evbuffer_add(bufferevent_get_output(b), "</stream:stream>", 16);
                bufferevent_setcb(b, NULL, closing_write, closing_event, NULL);
                sess_fail(s, R_CLOSED, "server closed the stream");
                return;
            }
            s->depth--;
            if (s->depth == 1) {
                if (deliver(s, in, e))
                    return;
            } else {
                s->scan = e;
            }
            break;
        case T_EMPTY:
            if (s->depth == 0) {
                sess_fail(s, R_STREAM, "empty stream element");
                return;
            }
            if (s->depth == 1) {
                if (deliver(s, in, e))
                    return;
            } else {
                s->scan = e;
            }
            break;
        case T_OPEN:
            if (s->depth == 0) { /* stream header */
                evbuffer_drain(in, e);
                s->scan = 0;
                s->depth = 1;
                if (s->state == S_CONNECTING)
                    s->state = S_FEAT1;
                else if (s->state == S_TLS)
                    s->state = S_FEAT2;
            } else {
                s->depth++;
                s->scan = e;
            }
            break;
        }
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct sess *s = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        if (s->state == S_TLS || s->state == S_CONNECTING)
            stream_header(s);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        char why[160];
        unsigned long se = s->tls ? bufferevent_get_openssl_error(bev) : 0;
        int err = EVUTIL_SOCKET_ERROR();
        if (se)
            ERR_error_string_n(se, why, sizeof why);
        else if (what & BEV_EVENT_EOF)
            snprintf(why, sizeof why, "connection closed by server");
        else
            snprintf(why, sizeof why, "%s", evutil_socket_error_to_string(err));
        enum reason r = s->state == S_CONNECTING ? R_CONNECT : s->state == S_TLS ? R_TLS : R_CLOSED;
        sess_fail(s, r, "%s (in %s)", why, state_name[s->state]);
    }
}

/* ---- starting logins ---- */

static void sess_start(struct sess *s)
{
    s->t_start = mono_ns();
    s->state = S_CONNECTING;
    s->depth = 0;
    s->scan = 0;
    s->tls = 0;
    E.inflight++;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        sess_fail(s, R_CONNECT, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (E.n_src > 0) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(s->g % E.n_src));
        setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(s->fd, (struct sockaddr *)&src, sizeof src) < 0) {
            sess_fail(s, R_CONNECT, "bind %s: %s", inet_ntoa(src.sin_addr), strerror(errno));
            return;
        }
    }
    s->bev = bufferevent_socket_new(E.base, s->fd, 0);
    if (!s->bev) {
        sess_fail(s, R_CONNECT, "bufferevent_socket_new failed");
        return;
    }
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&E.dst, sizeof E.dst) < 0) {
        sess_fail(s, R_CONNECT, "connect: %s", strerror(errno));
        return;
    }
}

/* Starts logins until the concurrency limit is reached.  Guards against
 * recursion: a session failing synchronously inside sess_start calls back. */
static void pump_logins(void)
{
    static int busy;
    if (busy)
        return;
    busy = 1;
    while (E.inflight < E.conc && E.next < E.n)
        sess_start(&E.s[E.next++]);
    busy = 0;
}

/* Periodic check: fails logins that exceed the per-login timeout or the
 * whole login phase limit. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (MU.joining && mono_ns() > MU.join_deadline) {
        if (!MU.join.first_err[0])
            snprintf(MU.join.first_err, sizeof MU.join.first_err, "join phase limit reached");
        MU.join.fail += MU.step_todo;
        MU.step_todo = 0;
        muc_join_report();
    }
    if (opt.im)
        im_tick();
    if (E.login_reported)
        return;
    uint64_t now = mono_ns(), lim = (uint64_t)(opt.login_timeout * 1e9);
    int phase_over = now - E.login.t0 > (uint64_t)(opt.login_phase_max * 1e9);
    for (long i = 0; i < E.next; i++) {
        struct sess *s = &E.s[i];
        if (s->state != S_ONLINE && s->state != S_DEAD && s->state != S_NEW &&
            (phase_over || now - s->t_start > lim))
            sess_fail(s, R_TIMEOUT, "login timed out (in %s)", state_name[s->state]);
    }
    if (phase_over) {
        while (E.next < E.n) {
            struct sess *s = &E.s[E.next++];
            s->state = S_CONNECTING; /* count as a failed login */
            E.inflight++;
            sess_fail(s, R_TIMEOUT, "login phase limit reached before start");
        }
    }
}

/* ---- messaging ---- */

static void msg_report(void)
{
    event_del(E.msg_timer);
    E.messaging = 0;
    E.msg.kind = REP_MSG;
    E.msg.t0 = E.msg_t0;
    E.msg.t1 = mono_ns();
    E.msg.pairs = E.npairs;
    if (write_full(E.rep, &E.msg, sizeof E.msg) < 0)
        exit(1);
}

/* Sends one timestamped message from a to b's full JID. */
static void send_test_message(struct sess *a, struct sess *b)
{
    if (opt.gw_domain) {
        /* a command to the next device, receipt requested */
        char dev[128];
        snprintf(dev, sizeof dev, opt.gw_fmt, (int)(E.gw_next++ % opt.gw_devices + 1));
        /* the body is the COMMAND payload: the send time again, for the
         * device-side trigger-to-ACK histogram (mgw-sim --latency) */
        uint64_t t = mono_ns();
        sess_send(a,
                  "<message to='%s@%s' type='chat' id='g%" PRIu64 "'><body>t=%" PRIu64 "</body>"
                  "<request xmlns='urn:xmpp:receipts'/></message>",
                  dev, opt.gw_domain, t, t);
        E.msg.sent++;
        E.msg.last_send = mono_ns();
        return;
    }
    sess_send(a, "<message to='%s' type='chat' id='m%ld'><body>t=%" PRIu64 "</body></message>",
              b->jid, E.msg.sent, mono_ns());
    E.msg.sent++;
    E.msg.expect++;
    E.msg.last_send = mono_ns();
}

/* MUC mode: the next due groupchat message, from the next of this
 * child's occupants of the next of its rooms; returns 0 if none of them
 * is in a room to send. */
static int send_muc_message(void)
{
    for (long tries = 0; tries < MU.rooms + E.n; tries++) {
        long r = MU.room_rr;
        MU.room_rr = (r + 1) % MU.rooms;
        long R = MU.room0 + r;
        long lo = R * MU.occ > E.g0 ? R * MU.occ : E.g0;
        long hi = (R + 1) * MU.occ < E.g0 + E.n ? (R + 1) * MU.occ : E.g0 + E.n;
        if (hi <= lo)
            continue;
        long k = MU.next_sender[r];
        MU.next_sender[r] = (k + 1) % (hi - lo);
        struct sess *a = &E.s[lo + k % (hi - lo) - E.g0];
        if (a->state != S_ONLINE || !a->muc_joined)
            continue;
        sess_send(a,
                  "<message to='r%ld@%s' type='groupchat' id='m%ld'><body>t=%" PRIu64
                  "</body></message>",
                  R, muc_service(), E.msg.sent, mono_ns());
        E.msg.sent++;
        E.msg.last_send = mono_ns();
        return 1;
    }
    return 0;
}

/* Sends the messages due at this instant (rate * elapsed - sent), round
 * robin over the pairs whose both ends are online; after the duration waits
 * for outstanding deliveries up to the drain limit, then reports. */
static void on_msg_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    uint64_t now = mono_ns();
    if (now < E.msg_end || !E.drain_end) {
        double el = (double)((now < E.msg_end ? now : E.msg_end) - E.msg_t0) / 1e9;
        long due = opt.window > 0 ? 0 : (long)(E.rate * el) - E.msg.sent;
        long tries = 0;
        if (opt.muc_rooms) {
            while (due > 0 && send_muc_message())
                due--;
            if (due > 0 && now > E.msg_t0 + 1000000000ull)
                E.msg_end = now; /* nobody left to send */
        }
        while (!opt.muc_rooms && due > 0 && tries < E.npairs) {
            struct sess *a = &E.s[2 * E.rr], *b = &E.s[2 * E.rr + 1];
            E.rr = (E.rr + 1) % E.npairs;
            if (a->state != S_ONLINE || (!opt.gw_domain && (b->state != S_ONLINE || !b->jid))) {
                tries++;
                continue;
            }
            tries = 0;
            send_test_message(a, b);
            due--;
        }
        if (tries >= E.npairs && E.npairs > 0 && due > 0 && now > E.msg_t0 + 1000000000ull) {
            /* no pair left online: stop early */
            E.msg_end = now;
        }
        if (now < E.msg_end)
            return;
        E.drain_end = now + (uint64_t)(opt.drain * 1e9);
    }
    /* MUC mode: deliveries come for rooms other children send to as well,
     * so a child waits until they stop (300 ms of silence) */
    int quiet = opt.muc_rooms ? now - E.msg.last_recv > 300000000ull || !E.msg.recv
                              : E.msg.recv >= E.msg.expect;
    if (quiet || now >= E.drain_end)
        msg_report();
}

static void start_messaging(void)
{
    E.messaging = 1;
    E.msg_t0 = mono_ns();
    E.msg_end = E.msg_t0 + (uint64_t)(opt.duration * 1e9);
    E.drain_end = 0;
    if ((E.npairs == 0 && !opt.muc_rooms) || E.rate <= 0) {
        E.msg_end = E.msg_t0;
    } else if (opt.window > 0) {
        /* closed loop: fill every pair's window; arrivals keep it full */
        for (long j = 0; j < E.npairs; j++) {
            struct sess *a = &E.s[2 * j], *b = &E.s[2 * j + 1];
            if (a->state != S_ONLINE || b->state != S_ONLINE || !b->jid)
                continue;
            for (int k = 0; k < opt.window; k++)
                send_test_message(a, b);
        }
    }
    struct timeval tv = {0, 2000};
    event_add(E.msg_timer, &tv);
}

/* ---- IM modes (--im roster|offline|mam): one child process ---- */

static int im_receiver(const struct sess *s)
{
    long i = (long)(s - E.s);
    return opt.im == IM_OFFLINE && (i & 1) && i / 2 < E.npairs;
}

static void bare_jid(char *out, size_t cap, long user)
{
    char u[128];
    username(u, sizeof u, user);
    snprintf(out, cap, "%s@%s", u, opt.domain);
}

static void im_report(void)
{
    if (!IM.phase)
        return;
    IM.phase = 0;
    IM.r.kind = REP_JOIN;
    IM.r.t1 = mono_ns();
    if (write_full(E.rep, &IM.r, sizeof IM.r) < 0)
        exit(1);
}

static void im_begin(int phase)
{
    memset(&IM.r, 0, sizeof IM.r);
    IM.phase = phase;
    IM.todo = 0;
    IM.r.t0 = mono_ns();
    IM.deadline = IM.r.t0 + (uint64_t)((opt.drain + 120) * 1e9);
}

static void im_first_err(const char *what, const char *st)
{
    char cond[64];
    const char *e = strstr(st, "<error");
    st_condition(e ? e : st, cond, sizeof cond);
    if (!IM.r.first_err[0])
        snprintf(IM.r.first_err, sizeof IM.r.first_err, "%s: %s", what, cond);
}

/* mam mode: one archive query from s, alternately the latest page and the
 * oldest page of the conversation with its partner ('with' filter). */
static void mam_query(struct sess *s)
{
    long i = (long)(s - E.s);
    char with[300];
    bare_jid(with, sizeof with, E.s[i ^ 1].user);
    unsigned long q = IM.qseq++;
    if (q & 1)
        sess_send(s,
                  "<iq type='set' id='q%" PRIu64 "'><query xmlns='urn:xmpp:mam:2' queryid='w%lu'>"
                  "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                  "<value>urn:xmpp:mam:2</value></field><field var='with'><value>%s</value>"
                  "</field></x><set xmlns='http://jabber.org/protocol/rsm'><max>%d</max></set>"
                  "</query></iq>",
                  mono_ns(), q, with, opt.mam_max);
    else
        sess_send(s,
                  "<iq type='set' id='q%" PRIu64 "'><query xmlns='urn:xmpp:mam:2' queryid='l%lu'>"
                  "<set xmlns='http://jabber.org/protocol/rsm'><max>%d</max><before/></set>"
                  "</query></iq>",
                  mono_ns(), q, opt.mam_max);
    IM.todo++;
    IM.r.sent++;
}

/* Sends the next message of pair j (sender 2j) in the offline and fill
 * phases; offline: to the receiver's bare JID, fill: to its full JID. */
static void im_send(long j)
{
    struct sess *a = &E.s[2 * j], *b = &E.s[2 * j + 1];
    char to[300];
    if (opt.im == IM_OFFLINE)
        bare_jid(to, sizeof to, b->user);
    else
        snprintf(to, sizeof to, "%s", b->jid ? b->jid : "");
    sess_send(a, "<message to='%s' type='chat' id='o%ld'><body>t=%" PRIu64 "</body></message>", to,
              a->im_n, mono_ns());
    a->im_n++;
    IM.r.sent++;
    IM.r.last_send = mono_ns();
}

/* Commands: 'O' offline store, 'D' offline delivery, 'F' archive fill,
 * 'A' archive queries. */
static void im_phase(char c)
{
    im_begin(c);
    if (c == 'O' || c == 'F') {
        long per = c == 'O' ? opt.offline_msgs : opt.mam_fill;
        for (long j = 0; j < E.npairs; j++) {
            struct sess *a = &E.s[2 * j], *b = &E.s[2 * j + 1];
            if (a->state != S_ONLINE || (c == 'F' && (b->state != S_ONLINE || !b->jid)))
                continue;
            long n = c == 'O' ? per : (per < 32 ? per : 32); /* fill: window of 32 */
            for (long k = 0; k < n; k++)
                im_send(j);
            IM.r.expect += per;
            if (c == 'O') {
                /* barrier: with XEP-0198 the <a/> answering <r/> (Magpie sends
                 * it once every message is durable), else a ping answered
                 * after the messages were handled */
                if (a->sm)
                    sess_send(a, "<r xmlns='urn:xmpp:sm:3'/>");
                else
                    sess_send(a,
                              "<iq type='get' id='bar%ld' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>",
                              j, opt.domain);
                a->barrier = 1;
                IM.todo++;
            }
        }
    } else if (c == 'D') {
        IM.r.expect = IM.stored; /* sent in the 'O' phase */
        for (long j = 0; j < E.npairs; j++)
            if (E.s[2 * j + 1].state == S_ONLINE)
                sess_send(&E.s[2 * j + 1], "<presence/>");
    } else if (c == 'A') {
        IM.end = IM.r.t0 + (uint64_t)(opt.duration * 1e9);
        IM.deadline = IM.end + (uint64_t)(opt.drain * 1e9);
        for (long i = 0; i < 2 * E.npairs; i++)
            if (E.s[i].state == S_ONLINE)
                for (int k = 0; k < opt.mam_window; k++)
                    mam_query(&E.s[i]);
    }
    if (c == 'O')
        IM.stored = IM.r.sent;
    if (((c == 'O' || c == 'A') && IM.todo <= 0) || ((c == 'F' || c == 'D') && IM.r.expect == 0))
        im_report();
}

/* A stanza of an online (or roster-fetching) session in an IM mode;
 * returns 1 if it was consumed here. */
static int im_stanza(struct sess *s, const char *name, const char *st)
{
    uint64_t now = mono_ns();
    char type[16] = "", id[64] = "";
    st_attr(st, "type", type, sizeof type);
    if (opt.im == IM_ROSTER) {
        if (strcmp(name, "presence"))
            return 0;
        char from[512] = "", me[300];
        st_attr(st, "from", from, sizeof from);
        char *slash = strchr(from, '/');
        if (slash)
            *slash = 0;
        bare_jid(me, sizeof me, s->user);
        if (!type[0] && strcmp(from, me)) { /* a contact's available presence */
            E.login.recv++;
            E.login.last_recv = now;
            if (E.login.recv >= E.login.expect)
                report_login_if_done();
        }
        return 1;
    }
    long i = (long)(s - E.s);
    if (s->sm && !strcmp(name, "r")) {
        sess_send(s, "<a xmlns='urn:xmpp:sm:3' h='%u'/>", s->sm_in);
        return 1;
    }
    if (s->sm && !strcmp(name, "a")) {
        char h[16] = "";
        st_attr(st, "h", h, sizeof h);
        /* our presence + the messages sent */
        if (IM.phase == 'O' && s->barrier && strtoul(h, NULL, 10) >= (unsigned long)(1 + s->im_n)) {
            s->barrier = 0;
            IM.r.last_recv = now;
            if (--IM.todo <= 0)
                im_report();
        }
        return 1;
    }
    if (!strcmp(name, "enabled") || !strcmp(name, "failed"))
        return 1;
    if (!strcmp(name, "iq")) {
        st_attr(st, "id", id, sizeof id);
        if (opt.im == IM_OFFLINE && IM.phase == 'O' && !strncmp(id, "bar", 3) && s->barrier) {
            s->barrier = 0;
            IM.r.last_recv = now;
            if (--IM.todo <= 0)
                im_report();
            return 1;
        }
        if (opt.im == IM_MAM && IM.phase == 'A' && id[0] == 'q') {
            uint64_t t = strtoull(id + 1, NULL, 10);
            if (!strcmp(type, "result")) {
                IM.r.ok++;
                hist_add(&IM.r.h, now > t ? (now - t) / 1000 : 0);
            } else {
                IM.r.fail++;
                im_first_err("mam query", st);
            }
            IM.r.last_recv = now;
            IM.todo--;
            if (now < IM.end)
                mam_query(s);
            else if (IM.todo <= 0)
                im_report();
            return 1;
        }
        return 0;
    }
    if (strcmp(name, "message"))
        return 0;
    if (!strcmp(type, "error")) {
        IM.r.fail++;
        im_first_err("message", st);
        return 1;
    }
    if (opt.im == IM_MAM && strstr(st, "urn:xmpp:mam:2") && strstr(st, "<result")) {
        IM.r.recv++; /* one archived message of a query's page */
        return 1;
    }
    size_t bl;
    const char *body = st_child_text(st, "body", &bl);
    if (!body || bl < 3 || body[0] != 't' || body[1] != '=')
        return 1;
    if (opt.im == IM_OFFLINE && IM.phase == 'D' && (i & 1)) {
        IM.r.recv++;
        IM.r.last_recv = now;
        if (strstr(st, "urn:xmpp:delay"))
            IM.r.acc++; /* with a XEP-0203 delay stamp */
        if (IM.r.recv >= IM.r.expect)
            im_report();
    } else if (opt.im == IM_MAM && IM.phase == 'F' && (i & 1) && i / 2 < E.npairs) {
        s->im_n++;
        IM.r.recv++;
        IM.r.last_recv = now;
        if (E.s[i - 1].im_n < opt.mam_fill && E.s[i - 1].state == S_ONLINE)
            im_send(i / 2);
        if (IM.r.recv >= IM.r.expect)
            im_report();
    }
    return 1;
}

/* From the tick: a phase that makes no progress ends at its deadline;
 * delivery ends after --drain s without a message. */
static void im_tick(void)
{
    uint64_t now = mono_ns();
    if (opt.im == IM_ROSTER && !E.login_reported)
        report_login_if_done();
    if (!IM.phase)
        return;
    if (IM.phase == 'D') {
        /* Prosody 0.12 delivers in bursts with pauses of several seconds
         * between them under this load: at least 30 s of silence */
        uint64_t last = IM.r.last_recv > IM.r.t0 ? IM.r.last_recv : IM.r.t0;
        if (now - last > (uint64_t)((opt.drain > 30 ? opt.drain : 30) * 1e9))
            im_report();
        return;
    }
    if (now > IM.deadline) {
        if (!IM.r.first_err[0])
            snprintf(IM.r.first_err, sizeof IM.r.first_err, "phase %c: time limit", IM.phase);
        im_report();
    }
}

/* Commands from the parent: 'M' start messaging, 'Q' quit.  EOF: quit. */
static void on_ctl(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    char c;
    ssize_t r = read(fd, &c, 1);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (r <= 0 || c == 'Q') {
        event_base_loopbreak(E.base);
        return;
    }
    if (c == 'M')
        start_messaging();
    else if (c == 'O' || c == 'D' || c == 'F' || c == 'A')
        im_phase(c);
    else if (c == 'J' || c == 'K')
        muc_join_step(c == 'J');
}

/* Body of one child process: sessions [g0, g0+n), pairs within them. */
static int child_main(long g0, long n, long npairs, double rate, int conc, int n_src, int ctl,
                      int rep)
{
    memset(&E, 0, sizeof E);
    E.g0 = g0;
    E.n = n;
    E.npairs = npairs;
    E.gw_next = g0;
    E.rate = rate;
    E.conc = conc > 0 ? conc : 1;
    E.n_src = n_src;
    E.ctl = ctl;
    E.rep = rep;
    E.s = calloc((size_t)(n > 0 ? n : 1), sizeof *E.s);
    if (!E.s)
        return 1;
    if (opt.muc_rooms && n > 0) {
        MU.occ = opt.sessions / opt.muc_rooms;
        MU.room0 = g0 / MU.occ;
        MU.rooms = (g0 + n - 1) / MU.occ - MU.room0 + 1;
        MU.next_sender = calloc((size_t)MU.rooms, sizeof *MU.next_sender);
        if (!MU.next_sender)
            return 1;
    }
    if (opt.im == IM_ROSTER)
        E.login.expect = n * opt.roster_size; /* each user hears from each contact */
    for (long i = 0; i < n; i++) {
        E.s[i].g = g0 + i;
        E.s[i].user = opt.first_index + g0 + i;
        E.s[i].fd = -1;
        E.s[i].state = S_NEW;
    }
    E.dst.sin_family = AF_INET;
    E.dst.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &E.dst.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad --host %s (IPv4 address expected)\n", opt.host);
        return 1;
    }
    struct event_config *cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    E.base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    E.ssl = SSL_CTX_new(TLS_client_method());
    if (!E.base || !E.ssl)
        return 1;
    SSL_CTX_set_verify(E.ssl, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(E.ssl, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(E.ssl, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_min_proto_version(E.ssl, TLS1_2_VERSION);

    E.msg_timer = event_new(E.base, -1, EV_PERSIST, on_msg_timer, NULL);
    E.tick = event_new(E.base, -1, EV_PERSIST, on_tick, NULL);
    E.ctl_ev = event_new(E.base, ctl, EV_READ | EV_PERSIST, on_ctl, NULL);
    struct timeval tv = {0, 250000};
    event_add(E.tick, &tv);
    event_add(E.ctl_ev, NULL);

    E.login.t0 = mono_ns();
    pump_logins();
    report_login_if_done();
    event_base_dispatch(E.base);
    /* fast exit: the kernel closes the sockets */
    return 0;
}

/* ------------------------------------------------------------------ */
/* parent: server sampling, orchestration, output */

static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* utime+stime of pid (all threads) in seconds, or -1. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    /* fields after ')': 3 state ... 14 utime 15 stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static volatile sig_atomic_t got_signal;
static void on_signal(int sig)
{
    got_signal = sig;
}

struct child {
    pid_t pid;
    int ctl, rep;
    long g0, n, pairs;
    struct report login, msg, join;
    int have_login, have_msg, have_join;
};

static int *have_of(struct child *c, int kind)
{
    return kind == REP_LOGIN ? &c->have_login : kind == REP_MSG ? &c->have_msg : &c->have_join;
}

/* Waits until every live child has delivered a report of the given kind
 * (stored into login/msg) or the deadline passes.  Returns how many came. */
static int collect(struct child *c, int nc, int kind, double timeout_s)
{
    uint64_t deadline = mono_ns() + (uint64_t)(timeout_s * 1e9);
    int got = 0;
    for (int i = 0; i < nc; i++)
        got += *have_of(&c[i], kind);
    struct report *tmp = malloc(sizeof *tmp);
    if (!tmp)
        abort();
    while (got < nc) {
        struct pollfd pf[256];
        int idx[256], np = 0;
        for (int i = 0; i < nc && np < 256; i++) {
            int have = *have_of(&c[i], kind);
            if (!have && c[i].rep >= 0) {
                pf[np].fd = c[i].rep;
                pf[np].events = POLLIN;
                idx[np++] = i;
            }
        }
        if (np == 0 || got_signal)
            break;
        uint64_t now = mono_ns();
        if (now >= deadline)
            break;
        int ms = (int)((deadline - now) / 1000000) + 1;
        int r = poll(pf, (nfds_t)np, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (int j = 0; j < np; j++) {
            if (!pf[j].revents)
                continue;
            struct child *ch = &c[idx[j]];
            if (read_full(ch->rep, tmp, sizeof *tmp) < 0) {
                fprintf(stderr, "loadgen: child %d exited early\n", (int)ch->pid);
                close(ch->rep);
                ch->rep = -1;
                continue;
            }
            if (tmp->kind == REP_LOGIN) {
                ch->login = *tmp;
                ch->have_login = 1;
            } else if (tmp->kind == REP_JOIN) {
                ch->join = *tmp;
                ch->have_join = 1;
            } else {
                ch->msg = *tmp;
                ch->have_msg = 1;
            }
            if (tmp->kind == kind)
                got++;
        }
    }
    free(tmp);
    return got;
}

static void broadcast(struct child *c, int nc, char cmd)
{
    for (int i = 0; i < nc; i++)
        if (c[i].ctl >= 0 && write(c[i].ctl, &cmd, 1) != 1) {
            close(c[i].ctl);
            c[i].ctl = -1;
        }
}

/* Waits until path exists, at most secs (early on a signal).  Returns 1 if
 * it exists. */
static int wait_file(const char *path, double secs)
{
    uint64_t end = mono_ns() + (uint64_t)(secs * 1e9);
    while (!got_signal && access(path, F_OK) != 0) {
        if (mono_ns() >= end)
            return 0;
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    return access(path, F_OK) == 0;
}

/* Sleeps up to secs, returning early on a signal. */
static void nap(double secs)
{
    uint64_t end = mono_ns() + (uint64_t)(secs * 1e9);
    while (!got_signal) {
        uint64_t now = mono_ns();
        if (now >= end)
            break;
        uint64_t left = end - now;
        if (left > 200000000ull)
            left = 200000000ull;
        struct timespec ts = {(time_t)(left / 1000000000ull), (long)(left % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: magpie-loadgen [options]\n"
        "  --host ADDR          server IPv4 address (127.0.0.1)\n"
        "  --port N             c2s port (5222)\n"
        "  --domain D           XMPP domain (localhost)\n"
        "  --users FMT          user name format with one %%d (user%%d)\n"
        "  --password P         password of every account (password)\n"
        "  --first-index N      index of the first user (1)\n"
        "  --sessions K         sessions to log in (100)\n"
        "  --concurrency C      logins in flight, total over all procs (50)\n"
        "  --hold SECONDS       hold all sessions idle before messaging (5)\n"
        "  --pairs N            sender->receiver pairs (sessions/2); pair j: session 2j -> 2j+1\n"
        "  --rate R             total messages per second (100); 0: no messaging\n"
        "  --duration SECONDS   messaging time (10)\n"
        "  --drain SECONDS      wait for late deliveries after messaging (5)\n"
        "  --window W           closed loop: each pair keeps W messages in flight, the next\n"
        "                       sent when one arrives, for --duration (--rate only has to be\n"
        "                       > 0); measures the server's maximum throughput (0: off)\n"
        "  --server-pid PID     sample the server's RSS and CPU time from /proc\n"
        "  --procs P            load generator processes, each with its own user slice (1)\n"
        "  --src-addrs N        bind to 127.0.0.2..127.0.0.(N+1) round robin; 0 auto:\n"
        "                       one per 20000 sessions when more than 20000 (0)\n"
        "  --mech M             scram-sha-1 | scram-sha-256 | plain (scram-sha-1)\n"
        "  --session MODE       legacy session iq: auto (when advertised and not optional),\n"
        "                       always, never (auto)\n"
        "  --resource R         resource prefix (lg); the user index is appended\n"
        "  --login-timeout S    per-login timeout (60)\n"
        "  --login-phase-max S  bound on the whole login phase (1200)\n"
        "  --go-file PATH       after the login phase, wait until PATH exists (at most\n"
        "                       --login-phase-max s) before the hold: a barrier between\n"
        "                       independent load generators (bench/multi-node.sh)\n"
        "  --muc-rooms N        MUC mode: N rooms of sessions/N occupants (nick u<g> in room\n"
        "                       r<g/M>); after the logins every occupant enters its room, then\n"
        "                       --rate groupchat messages/s in total go round robin over the\n"
        "                       rooms and their occupants (0: c2s pairs)\n"
        "  --muc-service D      the MUC service (conference.<domain>)\n"
        "  --join-max S         bound on the join phase (300)\n"
        "  --gw-domain D        gateway mode (bench/gateway.sh): the sender of each pair sends\n"
        "                       commands (XMPP messages with a XEP-0184 request) to devices\n"
        "                       <FMT with k>@D, k = 1..N round robin; latency = send -> receipt\n"
        "                       (the device ACKed), and send -> <accepted/> (durable)\n"
        "  --gw-devices N       devices to address (needed with --gw-domain)\n"
        "  --gw-fmt FMT         device id format with one %%d (dev%%d)\n"
        "  --im MODE            IM modes (one process; --rate 0 skips the pair messaging):\n"
        "                       roster: after the bind a roster get (a login ends at its\n"
        "                       result), then presence; contacts' presences are counted\n"
        "                       (--roster-size K expected per user); offline: receivers\n"
        "                       (odd sessions) stay unavailable, each pair's sender sends\n"
        "                       --offline-msgs to the bare JID then a ping barrier (stored/s),\n"
        "                       then receivers send presence (delivered/s); mam: each pair\n"
        "                       exchanges --mam-fill messages (window 32), then every paired\n"
        "                       session queries its archive for --duration s with\n"
        "                       --mam-window queries in flight, --mam-max items per page\n"
        "  --roster-size K      roster mode: contacts per user (0)\n"
        "  --offline-msgs M     offline mode: messages per pair (100)\n"
        "  --mam-fill F         mam mode: messages per pair before the queries (10000)\n"
        "  --mam-window W       mam mode: queries in flight per session (1)\n"
        "  --mam-max N          mam mode: items per page (50)\n"
        "  -v, --verbose        print every failure\n");
}

static double num(const char *s, const char *what)
{
    char *e;
    double v = strtod(s, &e);
    if (*s == 0 || *e || v < 0) {
        fprintf(stderr, "loadgen: bad value for %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    static const struct option lo[] = {{"host", 1, 0, 'H'},
                                       {"port", 1, 0, 'p'},
                                       {"domain", 1, 0, 'd'},
                                       {"users", 1, 0, 'u'},
                                       {"password", 1, 0, 'w'},
                                       {"first-index", 1, 0, 'f'},
                                       {"sessions", 1, 0, 'k'},
                                       {"concurrency", 1, 0, 'c'},
                                       {"hold", 1, 0, 'h'},
                                       {"rate", 1, 0, 'r'},
                                       {"duration", 1, 0, 't'},
                                       {"pairs", 1, 0, 'P'},
                                       {"server-pid", 1, 0, 's'},
                                       {"procs", 1, 0, 'n'},
                                       {"src-addrs", 1, 0, 'a'},
                                       {"mech", 1, 0, 'm'},
                                       {"session", 1, 0, 'S'},
                                       {"login-timeout", 1, 0, 'T'},
                                       {"login-phase-max", 1, 0, 'L'},
                                       {"drain", 1, 0, 'D'},
                                       {"window", 1, 0, 'W'},
                                       {"resource", 1, 0, 'R'},
                                       {"go-file", 1, 0, 'G'},
                                       {"muc-rooms", 1, 0, 'M'},
                                       {"muc-service", 1, 0, 'V'},
                                       {"join-max", 1, 0, 'J'},
                                       {"gw-domain", 1, 0, 'g'},
                                       {"gw-devices", 1, 0, 'N'},
                                       {"gw-fmt", 1, 0, 'F'},
                                       {"im", 1, 0, 1001},
                                       {"roster-size", 1, 0, 1002},
                                       {"offline-msgs", 1, 0, 1003},
                                       {"mam-fill", 1, 0, 1004},
                                       {"mam-window", 1, 0, 1005},
                                       {"mam-max", 1, 0, 1006},
                                       {"verbose", 0, 0, 'v'},
                                       {"help", 0, 0, '?'},
                                       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "v", lo, NULL)) != -1) {
        switch (c) {
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = (int)num(optarg, "--port");
            break;
        case 'd':
            opt.domain = optarg;
            break;
        case 'u':
            opt.users = optarg;
            break;
        case 'w':
            opt.password = optarg;
            break;
        case 'f':
            opt.first_index = (long)num(optarg, "--first-index");
            break;
        case 'k':
            opt.sessions = (long)num(optarg, "--sessions");
            break;
        case 'c':
            opt.concurrency = (int)num(optarg, "--concurrency");
            break;
        case 'h':
            opt.hold = num(optarg, "--hold");
            break;
        case 'r':
            opt.rate = num(optarg, "--rate");
            break;
        case 't':
            opt.duration = num(optarg, "--duration");
            break;
        case 'P':
            opt.pairs = (long)num(optarg, "--pairs");
            break;
        case 's':
            opt.server_pid = (int)num(optarg, "--server-pid");
            break;
        case 'n':
            opt.procs = (int)num(optarg, "--procs");
            break;
        case 'a':
            opt.src_addrs = (int)num(optarg, "--src-addrs");
            break;
        case 'T':
            opt.login_timeout = num(optarg, "--login-timeout");
            break;
        case 'L':
            opt.login_phase_max = num(optarg, "--login-phase-max");
            break;
        case 'D':
            opt.drain = num(optarg, "--drain");
            break;
        case 'W':
            opt.window = (int)num(optarg, "--window");
            break;
        case 'R':
            opt.resource = optarg;
            break;
        case 'G':
            opt.go_file = optarg;
            break;
        case 'M':
            opt.muc_rooms = (long)num(optarg, "--muc-rooms");
            break;
        case 'V':
            opt.muc_service = optarg;
            break;
        case 'J':
            opt.join_max = num(optarg, "--join-max");
            break;
        case 'g':
            opt.gw_domain = optarg;
            break;
        case 'N':
            opt.gw_devices = (long)num(optarg, "--gw-devices");
            break;
        case 'F':
            opt.gw_fmt = optarg;
            break;
        case 'v':
            opt.verbose = 1;
            break;
        case 1001:
            if (!strcmp(optarg, "roster"))
                opt.im = IM_ROSTER;
            else if (!strcmp(optarg, "offline"))
                opt.im = IM_OFFLINE;
            else if (!strcmp(optarg, "mam"))
                opt.im = IM_MAM;
            else {
                fprintf(stderr, "loadgen: unknown --im %s (roster, offline, mam)\n", optarg);
                exit(2);
            }
            break;
        case 1002:
            opt.roster_size = (long)num(optarg, "--roster-size");
            break;
        case 1003:
            opt.offline_msgs = (long)num(optarg, "--offline-msgs");
            break;
        case 1004:
            opt.mam_fill = (long)num(optarg, "--mam-fill");
            break;
        case 1005:
            opt.mam_window = (int)num(optarg, "--mam-window");
            break;
        case 1006:
            opt.mam_max = (int)num(optarg, "--mam-max");
            break;
        case 'm':
            if (!strcasecmp(optarg, "scram-sha-1"))
                opt.mech = MECH_SCRAM_SHA1;
            else if (!strcasecmp(optarg, "scram-sha-256"))
                opt.mech = MECH_SCRAM_SHA256;
            else if (!strcasecmp(optarg, "plain"))
                opt.mech = MECH_PLAIN;
            else {
                fprintf(stderr, "loadgen: unknown --mech %s\n", optarg);
                exit(2);
            }
            break;
        case 'S':
            if (!strcmp(optarg, "auto"))
                opt.session = SESSION_AUTO;
            else if (!strcmp(optarg, "always"))
                opt.session = SESSION_ALWAYS;
            else if (!strcmp(optarg, "never"))
                opt.session = SESSION_NEVER;
            else {
                fprintf(stderr, "loadgen: unknown --session %s\n", optarg);
                exit(2);
            }
            break;
        case '?':
        default:
            usage(c == '?' && optind > 0 && !strcmp(argv[optind - 1], "--help") ? stdout : stderr);
            exit(c == '?' && optind > 0 && !strcmp(argv[optind - 1], "--help") ? 0 : 2);
        }
    }
    if (optind < argc) {
        usage(stderr);
        exit(2);
    }
    const char *pc = strchr(opt.users, '%');
    if (!pc || strchr(pc + 1, '%') || (pc[1] != 'd' && pc[1] != 'i')) {
        fprintf(stderr, "loadgen: --users needs exactly one %%d\n");
        exit(2);
    }
    if (opt.procs < 1 || opt.procs > 256) {
        fprintf(stderr, "loadgen: --procs must be 1..256\n");
        exit(2);
    }
    if (opt.muc_rooms) {
        if (opt.muc_rooms < 0 || opt.sessions % opt.muc_rooms || opt.sessions < opt.muc_rooms) {
            fprintf(stderr, "loadgen: --sessions must be a multiple of --muc-rooms\n");
            exit(2);
        }
        if (opt.window > 0 || opt.go_file) {
            fprintf(stderr, "loadgen: MUC mode is open loop, without --go-file\n");
            exit(2);
        }
        opt.pairs = 0;
    }
    if (opt.pairs < 0)
        opt.pairs = opt.sessions / 2;
    if (opt.im && (opt.procs != 1 || opt.muc_rooms || opt.gw_domain || opt.window > 0)) {
        fprintf(stderr, "loadgen: --im runs in one process, without MUC, gateway or --window\n");
        exit(2);
    }
    if (opt.gw_domain && (opt.gw_devices <= 0 || opt.window > 0)) {
        fprintf(stderr, "loadgen: --gw-domain needs --gw-devices N and no --window\n");
        exit(2);
    }
    if (opt.pairs * 2 > opt.sessions) {
        fprintf(stderr, "loadgen: --pairs %ld needs %ld sessions\n", opt.pairs, opt.pairs * 2);
        exit(2);
    }
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void kv_long(const char *k, long v, int ok)
{
    if (ok)
        printf(" %s=%ld", k, v);
    else
        printf(" %s=na", k);
}

static void kv_double(const char *k, double v, int ok)
{
    if (ok)
        printf(" %s=%.3f", k, v);
    else
        printf(" %s=na", k);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    long per_proc = (opt.sessions + opt.procs - 1) / opt.procs;
    if ((rlim_t)per_proc + 64 > rl.rlim_cur)
        fprintf(stderr,
                "loadgen: warning: %ld sessions per process but RLIMIT_NOFILE is %lu; "
                "use more --procs\n",
                per_proc, (unsigned long)rl.rlim_cur);
    int n_src = opt.src_addrs;
    if (n_src == 0 && opt.sessions > 20000)
        n_src = (int)((opt.sessions + 19999) / 20000);
    if (n_src > 250)
        n_src = 250;

    int pid = opt.server_pid;
    long rss0 = pid ? proc_rss_kb(pid) : -1;
    double cpu0 = pid ? proc_cpu_s(pid) : -1;
    if (pid && (rss0 < 0 || cpu0 < 0)) {
        fprintf(stderr, "loadgen: cannot read /proc/%d (server pid)\n", pid);
        return 2;
    }

    printf("magpie-loadgen: %s:%d domain %s, %ld sessions over %d proc(s), concurrency %d, %s, "
           "%d source address(es)\n",
           opt.host, opt.port, opt.domain, opt.sessions, opt.procs, opt.concurrency,
           mech_name(opt.mech), n_src ? n_src : 1);
    fflush(stdout);

    struct child *ch = calloc((size_t)opt.procs, sizeof *ch);
    if (!ch)
        return 1;
    long g = 0, pairs_left = opt.pairs;
    for (int i = 0; i < opt.procs; i++) {
        long n = opt.sessions / opt.procs + (i < opt.sessions % opt.procs ? 1 : 0);
        long want = opt.pairs / opt.procs + (i < opt.pairs % opt.procs ? 1 : 0);
        if (want > n / 2)
            want = n / 2;
        if (want > pairs_left)
            want = pairs_left;
        pairs_left -= want;
        ch[i].g0 = g;
        ch[i].n = n;
        ch[i].pairs = want;
        g += n;
    }
    for (int i = 0; i < opt.procs && pairs_left > 0; i++) { /* leftovers */
        long room = ch[i].n / 2 - ch[i].pairs;
        long add = room < pairs_left ? room : pairs_left;
        ch[i].pairs += add;
        pairs_left -= add;
    }
    long total_pairs = opt.pairs - pairs_left;
    int conc_per = (opt.concurrency + opt.procs - 1) / opt.procs;

    for (int i = 0; i < opt.procs; i++) {
        int cp[2], rp[2];
        if (pipe(cp) < 0 || pipe(rp) < 0) {
            perror("pipe");
            return 1;
        }
        fflush(stdout);
        pid_t p = fork();
        if (p < 0) {
            perror("fork");
            return 1;
        }
        if (p == 0) {
            close(cp[1]);
            close(rp[0]);
            for (int j = 0; j < i; j++) {
                close(ch[j].ctl);
                close(ch[j].rep);
            }
            double rate = opt.muc_rooms ? opt.rate * (double)ch[i].n / (double)opt.sessions
                          : total_pairs ? opt.rate * (double)ch[i].pairs / (double)total_pairs
                                        : 0;
            _exit(child_main(ch[i].g0, ch[i].n, ch[i].pairs, rate, conc_per, n_src, cp[0], rp[1]));
        }
        close(cp[0]);
        close(rp[1]);
        ch[i].pid = p;
        ch[i].ctl = cp[1];
        ch[i].rep = rp[0];
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    /* phase 1: logins */
    uint64_t t_login0 = mono_ns();
    collect(ch, opt.procs, REP_LOGIN, opt.login_phase_max + 60);
    double cpu_login = pid ? proc_cpu_s(pid) : -1;
    struct report L = {0};
    uint64_t lt0 = UINT64_MAX, lt1 = 0;
    int have_all_login = 1;
    for (int i = 0; i < opt.procs; i++) {
        if (!ch[i].have_login) {
            have_all_login = 0;
            L.fail += ch[i].n;
            L.reasons[R_TIMEOUT] += ch[i].n;
            continue;
        }
        struct report *r = &ch[i].login;
        L.sent += r->sent; /* roster mode: roster items, contacts' presences */
        L.recv += r->recv;
        L.expect += r->expect;
        if (r->last_recv > L.last_recv)
            L.last_recv = r->last_recv;
        L.ok += r->ok;
        L.fail += r->fail;
        for (int k = 0; k < R_COUNT; k++)
            L.reasons[k] += r->reasons[k];
        hist_merge(&L.h, &r->h);
        if (r->t0 < lt0)
            lt0 = r->t0;
        if (r->t1 > lt1)
            lt1 = r->t1;
        if (!L.first_err[0] && r->first_err[0])
            memcpy(L.first_err, r->first_err, sizeof L.first_err);
    }
    if (lt0 == UINT64_MAX) {
        lt0 = t_login0;
        lt1 = mono_ns();
    }
    double login_s = (double)(lt1 - lt0) / 1e9;
    double logins_ps = login_s > 0 ? (double)L.ok / login_s : 0;
    printf("logins:   %ld ok, %ld failed in %.2f s = %.1f logins/s; login time p50 %.1f ms, "
           "p99 %.1f ms, max %.1f ms\n",
           L.ok, L.fail, login_s, logins_ps, (double)hist_q(&L.h, 0.5) / 1000,
           (double)hist_q(&L.h, 0.99) / 1000, (double)L.h.max / 1000);
    if (L.fail) {
        printf("          failures:");
        for (int k = 0; k < R_COUNT; k++)
            if (L.reasons[k])
                printf(" %s=%ld", reason_name[k], L.reasons[k]);
        printf("\n          first: %s\n", L.first_err);
    }
    if (opt.im == IM_ROSTER)
        printf("roster:   %ld roster items received, %ld of %ld contact presences in %.2f s "
               "from the first connect\n",
               L.sent, L.recv, L.expect,
               L.last_recv > lt0 ? (double)(L.last_recv - lt0) / 1e9 : 0);
    fflush(stdout);

    /* phase 1b (MUC mode): every occupant enters its room */
    struct report J = {0};
    double cpu_join = cpu_login, join_s = 0;
    if (opt.muc_rooms && !got_signal && have_all_login) {
        /* the rooms' first occupants create them, then the others enter */
        broadcast(ch, opt.procs, 'J');
        collect(ch, opt.procs, REP_JOIN, opt.join_max + 30);
        for (int i = 0; i < opt.procs; i++)
            ch[i].have_join = 0;
        broadcast(ch, opt.procs, 'K');
        collect(ch, opt.procs, REP_JOIN, opt.join_max + 30);
        if (pid)
            cpu_join = proc_cpu_s(pid);
        for (int i = 0; i < opt.procs; i++) {
            if (!ch[i].have_join) {
                J.fail += ch[i].n;
                continue;
            }
            J.ok += ch[i].join.ok;
            J.fail += ch[i].join.fail;
            hist_merge(&J.h, &ch[i].join.h);
            double js = (double)(ch[i].join.t1 - ch[i].join.t0) / 1e9;
            if (js > join_s)
                join_s = js;
            if (!J.first_err[0] && ch[i].join.first_err[0])
                memcpy(J.first_err, ch[i].join.first_err, sizeof J.first_err);
        }
        printf("joins:    %ld rooms x %ld occupants: %ld in, %ld failed in %.2f s; server CPU "
               "%.3f s\n",
               opt.muc_rooms, opt.sessions / opt.muc_rooms, J.ok, J.fail, join_s,
               pid ? cpu_join - cpu_login : 0);
        if (J.fail)
            printf("          first: %s\n", J.first_err);
        fflush(stdout);
    }

    /* phase 2: hold idle, then sample memory */
    long rss_idle = -1;
    double cpu_hold0 = cpu_join, cpu_idle = -1;
    uint64_t th0 = mono_ns();
    if (opt.go_file && !got_signal && have_all_login) {
        int go = wait_file(opt.go_file, opt.login_phase_max);
        printf("go:       %s after %.1f s idle\n", go ? "go file found" : "no go file, going on",
               (double)(mono_ns() - th0) / 1e9);
        fflush(stdout);
    }
    if (!got_signal && have_all_login)
        nap(opt.hold);
    double held = (double)(mono_ns() - th0) / 1e9;
    if (pid) {
        rss_idle = proc_rss_kb(pid);
        cpu_idle = proc_cpu_s(pid);
    }
    double rss_per =
        (pid && L.ok > 0 && rss_idle >= 0) ? (double)(rss_idle - rss0) / (double)L.ok : 0;
    int alive_login = cpu_login >= 0, alive_idle = rss_idle >= 0 && cpu_idle >= 0;
    if (pid && !alive_idle)
        printf("server:   process %d is gone (exited or crashed)\n", pid);
    else if (pid)
        printf("server:   RSS %ld kB before, %ld kB with %ld sessions idle = %.2f kB/session; "
               "CPU %.3f s for logins = %.3f ms/login; %.3f s while idle %.0f s\n",
               rss0, rss_idle, L.ok, rss_per, cpu_login - cpu0,
               L.ok ? (cpu_login - cpu0) * 1000 / (double)L.ok : 0, cpu_idle - cpu_hold0, held);
    fflush(stdout);

    /* phase 2b (IM modes offline, mam): two timed phases each */
    struct report I1 = {0}, I2 = {0};
    double cpu_i0 = cpu_idle, cpu_i1 = -1, cpu_i2 = -1, cpu_after_im = cpu_idle;
    int did_im = 0;
    if ((opt.im == IM_OFFLINE || opt.im == IM_MAM) && !got_signal && have_all_login) {
        char c1 = opt.im == IM_OFFLINE ? 'O' : 'F', c2 = opt.im == IM_OFFLINE ? 'D' : 'A';
        if (pid)
            cpu_i0 = proc_cpu_s(pid);
        broadcast(ch, opt.procs, c1);
        collect(ch, opt.procs, REP_JOIN, opt.drain + 180);
        if (ch[0].have_join)
            I1 = ch[0].join;
        ch[0].have_join = 0;
        if (pid)
            cpu_i1 = proc_cpu_s(pid);
        if (opt.im == IM_MAM)
            nap(1); /* the archive writes settle */
        double cpu_i1b = pid ? proc_cpu_s(pid) : -1;
        broadcast(ch, opt.procs, c2);
        collect(ch, opt.procs, REP_JOIN, opt.duration + opt.drain + 180);
        if (ch[0].have_join)
            I2 = ch[0].join;
        if (pid)
            cpu_i2 = proc_cpu_s(pid);
        did_im = 1;
        double s1 = I1.t1 > I1.t0 ? (double)(I1.t1 - I1.t0) / 1e9 : 0;
        uint64_t e2 = opt.im == IM_OFFLINE ? I2.last_recv : I2.t1;
        double s2 = e2 > I2.t0 ? (double)(e2 - I2.t0) / 1e9 : 0;
        double c1s = cpu_i1 - cpu_i0, c2s = cpu_i2 - cpu_i1b;
        if (opt.im == IM_OFFLINE) {
            printf("offline:  stored %ld (%ld errors) in %.2f s = %.1f/s, server CPU %.3f s = %.1f "
                   "us/message\n",
                   I1.sent - I1.fail, I1.fail, s1, s1 > 0 ? (double)(I1.sent - I1.fail) / s1 : 0,
                   c1s, I1.sent ? c1s * 1e6 / (double)I1.sent : 0);
            printf("          delivered %ld of %ld (%ld with a delay stamp) in %.2f s = %.1f/s, "
                   "server CPU %.3f s = %.1f us/message\n",
                   I2.recv, I2.expect, I2.acc, s2, s2 > 0 ? (double)I2.recv / s2 : 0, c2s,
                   I2.recv ? c2s * 1e6 / (double)I2.recv : 0);
        } else {
            printf("mam fill: %ld messages exchanged in %.2f s (%.1f/s), server CPU %.3f s\n",
                   I1.recv, s1, s1 > 0 ? (double)I1.recv / s1 : 0, c1s);
            printf("mam:      %ld queries ok, %ld failed in %.2f s = %.1f queries/s; %ld results "
                   "(%.1f per query); query p50 %.2f ms p99 %.2f ms; server CPU %.3f s = %.3f "
                   "ms/query\n",
                   I2.ok, I2.fail, s2, s2 > 0 ? (double)I2.ok / s2 : 0, I2.recv,
                   I2.ok ? (double)I2.recv / (double)I2.ok : 0, (double)hist_q(&I2.h, 0.5) / 1000,
                   (double)hist_q(&I2.h, 0.99) / 1000, c2s,
                   I2.ok ? c2s * 1000 / (double)I2.ok : 0);
        }
        if (I1.first_err[0] || I2.first_err[0])
            printf("          first error: %s\n", I1.first_err[0] ? I1.first_err : I2.first_err);
        fflush(stdout);
        cpu_i1 = c1s;
        cpu_i2 = c2s;
        cpu_after_im = pid ? proc_cpu_s(pid) : -1; /* messaging CPU counts from here */
    }

    /* phase 3: messaging */
    struct report M = {0};
    double msg_s = 0, send_s = 0, sent_ps = 0, recv_ps = 0, cpu_msg = -1, cpu_m0 = cpu_after_im;
    (void)did_im;
    long rss_after = -1;
    int did_msg = 0;
    if (!got_signal && have_all_login) {
        /* with no messaging the children report at once (drops during hold) */
        did_msg =
            (total_pairs > 0 || (opt.muc_rooms && J.ok > 0)) && opt.rate > 0 && opt.duration > 0;
        broadcast(ch, opt.procs, 'M');
        collect(ch, opt.procs, REP_MSG, opt.duration + opt.drain + 60);
        if (pid) {
            cpu_msg = proc_cpu_s(pid);
            rss_after = proc_rss_kb(pid);
        }
        uint64_t mt0 = UINT64_MAX, mt1 = 0, last_send = 0, last_recv = 0;
        for (int i = 0; i < opt.procs; i++) {
            if (!ch[i].have_msg)
                continue;
            struct report *r = &ch[i].msg;
            M.sent += r->sent;
            M.recv += r->recv;
            M.expect += r->expect;
            if (opt.muc_rooms) /* each message reaches its room's occupants */
                M.expect += r->sent * J.ok / opt.muc_rooms;
            M.dropped += r->dropped;
            M.acc += r->acc;
            M.gw_errors += r->gw_errors;
            hist_merge(&M.h, &r->h);
            hist_merge(&M.ha, &r->ha);
            if (r->t0 < mt0)
                mt0 = r->t0;
            if (r->t1 > mt1)
                mt1 = r->t1;
            if (r->last_send > last_send)
                last_send = r->last_send;
            if (r->last_recv > last_recv)
                last_recv = r->last_recv;
        }
        if (!did_msg) {
            if (M.dropped)
                printf("sessions: %ld dropped while idle\n", M.dropped);
            goto quit;
        }
        /* rates over the measured windows: from the start of messaging to
         * the last message sent, and to the last message received (not the
         * configured --duration: a server that falls behind delivers over a
         * longer time, a sender stopped early sends over a shorter one) */
        send_s = M.sent && last_send > mt0 ? (double)(last_send - mt0) / 1e9 : 0;
        msg_s = M.recv && last_recv > mt0 ? (double)(last_recv - mt0) / 1e9 : 0;
        sent_ps = send_s > 0 ? (double)M.sent / send_s : 0;
        recv_ps = msg_s > 0 ? (double)M.recv / msg_s : 0;
        if (opt.muc_rooms)
            printf("messages: %ld rooms, sent %ld in %.2f s (%.1f/s), deliveries %ld of %ld in "
                   "%.2f s (%.1f/s), lost %ld, sessions dropped %ld\n",
                   opt.muc_rooms, M.sent, send_s, sent_ps, M.recv, M.expect, msg_s, recv_ps,
                   M.expect - M.recv, M.dropped);
        else
            printf("messages: %ld pairs, sent %ld in %.2f s (%.1f/s), received %ld in %.2f s "
                   "(%.1f/s), lost %ld, sessions dropped %ld\n",
                   total_pairs, M.sent, send_s, sent_ps, M.recv, msg_s, recv_ps, M.expect - M.recv,
                   M.dropped);
        printf("latency:  p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms\n",
               (double)hist_q(&M.h, 0.5) / 1000, (double)hist_q(&M.h, 0.9) / 1000,
               (double)hist_q(&M.h, 0.99) / 1000, (double)M.h.max / 1000,
               M.h.n ? (double)M.h.sum / (double)M.h.n / 1000 : 0);
        if (opt.gw_domain)
            printf("gateway:  %ld accepted (p50 %.3f ms, p99 %.3f ms, max %.3f ms to <accepted/>), "
                   "%ld receipts, %ld errors\n",
                   M.acc, (double)hist_q(&M.ha, 0.5) / 1000, (double)hist_q(&M.ha, 0.99) / 1000,
                   (double)M.ha.max / 1000, M.recv - M.gw_errors, M.gw_errors);
        if (pid && (cpu_msg < 0 || cpu_m0 < 0))
            printf("server:   process %d is gone (exited or crashed)\n", pid);
        else if (pid)
            printf("server:   CPU %.3f s for messages = %.1f us/message; RSS after %ld kB\n",
                   cpu_msg - cpu_m0, M.recv ? (cpu_msg - cpu_m0) * 1e6 / (double)M.recv : 0,
                   rss_after);
        fflush(stdout);
    }

quit:
    /* phase 4: quit */
    broadcast(ch, opt.procs, 'Q');
    uint64_t qdeadline = mono_ns() + 10000000000ull;
    int live = opt.procs;
    while (live > 0) {
        int st;
        pid_t w = waitpid(-1, &st, WNOHANG);
        if (w > 0) {
            live--;
            continue;
        }
        if (w < 0 && errno != EINTR)
            break;
        if (mono_ns() > qdeadline) {
            for (int i = 0; i < opt.procs; i++)
                kill(ch[i].pid, SIGKILL);
            qdeadline = UINT64_MAX;
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    double lg_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("loadgen:  %.2f s CPU in %d process(es)\n", lg_cpu, opt.procs);

    printf("RESULT sessions=%ld procs=%d concurrency=%d mech=%s logins_ok=%ld login_failures=%ld",
           opt.sessions, opt.procs, opt.concurrency, mech_name(opt.mech), L.ok, L.fail);
    kv_double("login_secs", login_s, 1);
    kv_double("logins_per_sec", logins_ps, 1);
    kv_double("login_p50_ms", (double)hist_q(&L.h, 0.5) / 1000, L.h.n > 0);
    kv_double("login_p99_ms", (double)hist_q(&L.h, 0.99) / 1000, L.h.n > 0);
    printf(" pairs=%ld rate=%.1f duration=%.1f msgs_sent=%ld msgs_received=%ld msgs_lost=%ld"
           " sessions_dropped=%ld",
           did_msg ? total_pairs : 0, opt.rate, opt.duration, M.sent, M.recv, M.expect - M.recv,
           M.dropped + 0);
    if (opt.muc_rooms) {
        printf(" muc_rooms=%ld muc_occupants=%ld joins_ok=%ld join_failures=%ld msgs_expected=%ld",
               opt.muc_rooms, opt.sessions / opt.muc_rooms, J.ok, J.fail, M.expect);
        kv_double("join_secs", join_s, J.ok > 0);
        kv_double("server_cpu_join_s", cpu_join - cpu_login, pid && cpu_join >= 0);
    }
    if (opt.im == IM_ROSTER) {
        printf(" roster_size=%ld roster_items=%ld presences_received=%ld presences_expected=%ld",
               opt.roster_size, L.sent, L.recv, L.expect);
        kv_double("presence_secs", L.last_recv > lt0 ? (double)(L.last_recv - lt0) / 1e9 : 0,
                  L.recv > 0);
    }
    if (opt.im == IM_OFFLINE) {
        double s1 = I1.t1 > I1.t0 ? (double)(I1.t1 - I1.t0) / 1e9 : 0;
        double s2 = I2.last_recv > I2.t0 ? (double)(I2.last_recv - I2.t0) / 1e9 : 0;
        printf(" offline_sent=%ld offline_errors=%ld offline_delivered=%ld offline_delayed=%ld",
               I1.sent, I1.fail, I2.recv, I2.acc);
        kv_double("offline_store_secs", s1, did_im);
        kv_double("offline_stored_per_sec", s1 > 0 ? (double)(I1.sent - I1.fail) / s1 : 0,
                  did_im && s1 > 0);
        kv_double("server_cpu_per_stored_us", I1.sent ? cpu_i1 * 1e6 / (double)I1.sent : 0,
                  did_im && pid && I1.sent > 0);
        kv_double("offline_deliver_secs", s2, did_im);
        kv_double("offline_delivered_per_sec", s2 > 0 ? (double)I2.recv / s2 : 0,
                  did_im && s2 > 0);
        kv_double("server_cpu_per_delivered_us", I2.recv ? cpu_i2 * 1e6 / (double)I2.recv : 0,
                  did_im && pid && I2.recv > 0);
    }
    if (opt.im == IM_MAM) {
        double s1 = I1.t1 > I1.t0 ? (double)(I1.t1 - I1.t0) / 1e9 : 0;
        double s2 = I2.t1 > I2.t0 ? (double)(I2.t1 - I2.t0) / 1e9 : 0;
        printf(" mam_fill=%ld mam_filled=%ld mam_queries=%ld mam_query_errors=%ld mam_results=%ld",
               opt.mam_fill, I1.recv, I2.ok, I2.fail, I2.recv);
        kv_double("mam_fill_secs", s1, did_im);
        kv_double("mam_queries_per_sec", s2 > 0 ? (double)I2.ok / s2 : 0, did_im && s2 > 0);
        kv_double("mam_results_per_query", I2.ok ? (double)I2.recv / (double)I2.ok : 0,
                  did_im && I2.ok > 0);
        kv_double("mam_query_p50_ms", (double)hist_q(&I2.h, 0.5) / 1000, did_im && I2.h.n > 0);
        kv_double("mam_query_p99_ms", (double)hist_q(&I2.h, 0.99) / 1000, did_im && I2.h.n > 0);
        kv_double("server_cpu_per_query_ms", I2.ok ? cpu_i2 * 1000 / (double)I2.ok : 0,
                  did_im && pid && I2.ok > 0);
    }
    kv_double("msgs_sent_per_sec", sent_ps, did_msg);
    kv_double("msgs_recv_per_sec", recv_ps, did_msg);
    kv_double("msgs_send_secs", send_s, did_msg);
    kv_double("msgs_recv_secs", msg_s, did_msg);
    int hl = did_msg && M.h.n > 0;
    kv_double("lat_p50_ms", (double)hist_q(&M.h, 0.5) / 1000, hl);
    kv_double("lat_p90_ms", (double)hist_q(&M.h, 0.9) / 1000, hl);
    kv_double("lat_p99_ms", (double)hist_q(&M.h, 0.99) / 1000, hl);
    kv_double("lat_max_ms", (double)M.h.max / 1000, hl);
    if (opt.gw_domain) {
        kv_long("gw_accepted", M.acc, did_msg);
        kv_long("gw_errors", M.gw_errors, did_msg);
        kv_double("acc_p50_ms", (double)hist_q(&M.ha, 0.5) / 1000, did_msg && M.ha.n > 0);
        kv_double("acc_p99_ms", (double)hist_q(&M.ha, 0.99) / 1000, did_msg && M.ha.n > 0);
    }
    if (pid) {
        int alive_msg = did_msg && cpu_msg >= 0 && cpu_m0 >= 0;
        printf(" server_pid=%d server_alive=%d", pid, alive_idle && (!did_msg || alive_msg));
        kv_long("rss_before_kb", rss0, 1);
        kv_long("rss_idle_kb", rss_idle, alive_idle);
        kv_long("rss_after_kb", rss_after, alive_msg && rss_after >= 0);
        kv_double("rss_per_session_kb", rss_per, L.ok > 0 && alive_idle);
        kv_double("server_cpu_login_s", cpu_login - cpu0, alive_login);
        kv_double("server_cpu_per_login_ms", L.ok ? (cpu_login - cpu0) * 1000 / (double)L.ok : 0,
                  L.ok > 0 && alive_login);
        kv_double("server_cpu_idle_s", cpu_idle - cpu_hold0, alive_idle && alive_login);
        kv_double("server_cpu_msg_s", cpu_msg - cpu_m0, alive_msg);
        kv_double("server_cpu_per_msg_us", M.recv ? (cpu_msg - cpu_m0) * 1e6 / (double)M.recv : 0,
                  alive_msg && M.recv > 0);
        /* deliveries per second of server CPU: per core, whatever the threads */
        kv_double("deliveries_per_cpu_sec",
                  cpu_msg - cpu_m0 > 0 ? (double)M.recv / (cpu_msg - cpu_m0) : 0,
                  alive_msg && M.recv > 0 && cpu_msg - cpu_m0 > 0);
    }
    kv_double("loadgen_cpu_s", lg_cpu, 1);
    if (got_signal)
        printf(" interrupted=1");
    printf("\n");
    fflush(stdout);
    free(ch);
    return L.ok == 0 || got_signal ? 1 : 0;
}
