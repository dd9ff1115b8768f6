/* hook.c - the fallback webhook: when a command expires without an ACK,
 * POST a JSON notice to the configured URL (option webhook_url), so the
 * shop can refund or send an SMS. Once per command:
 *
 *   1. the command's hook record "pending <attempts>" is written to
 *      GW_STORE_HOOK (key: command id) and committed, then
 *   2. the POST is made (libevent's HTTP client, 5 s timeout); any 2xx
 *      answer ends it: "delivered <time us>" is written and the command is
 *      never posted again; anything else is retried after 1, 2, 4, ... s,
 *      at most webhook_attempts times in all, then "gave-up <time us>".
 *
 * A record still "pending" at start-up (magpied stopped between 1 and the
 * end of 2) is posted again when the gateway's timer starts, so a receiver
 * may, after a crash only, see a notice twice: every notice carries the
 * header Idempotency-Key: <command id> to drop it.
 *
 * Runs on the loop of the worker that expired the command. */
#include "gateway.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hook {
    struct hook *next;
    int64_t aid;
    char *body;
    int attempts;
    struct event_base *base;
    void *timer; /* our memory (event_assign): see gw_sweep_start */
};

static struct hook *hooks; /* in flight, under G.lock */
static char *(*resume_ids);
static size_t n_resume;

static void hook_free(struct hook *h)
{
    pthread_mutex_lock(&G.lock);
    for (struct hook **pp = &hooks; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    pthread_mutex_unlock(&G.lock);
    if (h->timer)
        event_del(h->timer);
    free(h->timer);
    free(h->body);
    free(h);
}

static void record(int64_t aid, const char *state, long long v)
{
    char key[32], val[64];
    snprintf(key, sizeof key, "%lld", (long long)aid);
    int n = snprintf(val, sizeof val, "%s %lld", state, v);
    mp_kv_set(G.domain, GW_STORE_HOOK, key, val, (size_t)n, NULL, NULL);
}

static void attempt(struct hook *h);

static void retry_cb(evutil_socket_t fd, short what, void *ud)
{
    (void)fd;
    (void)what;
    attempt(ud);
}

static void answered(struct evhttp_request *req, void *ud)
{
    struct hook *h = ud;
    int code = req ? evhttp_request_get_response_code(req) : 0;
    if (code >= 200 && code < 300) {
        mp_log(MP_LOG_INFO, "gateway: webhook for expired command %lld delivered (%d)",
               (long long)h->aid, code);
        mp_counter_add(G.c.hooks, 1);
        record(h->aid, "delivered", (long long)gw_now_us());
        hook_free(h);
        return;
    }
    if (h->attempts >= G.hook_attempts) {
        mp_log(MP_LOG_WARN,
               "gateway: webhook for expired command %lld failed %d times (%d), "
               "giving up",
               (long long)h->aid, h->attempts, code);
        mp_counter_add(G.c.hook_failures, 1);
        record(h->aid, "gave-up", (long long)gw_now_us());
        hook_free(h);
        return;
    }
    int delay = 1 << (h->attempts - 1 < 8 ? h->attempts - 1 : 8);
    mp_log(MP_LOG_DEBUG, "gateway: webhook for command %lld: answer %d, again in %d s",
           (long long)h->aid, code, delay);
    struct timeval tv = {delay, 0};
    event_add(h->timer, &tv);
}

static void attempt(struct hook *h)
{
    h->attempts++;
    struct evhttp_uri *u = evhttp_uri_parse(G.hook_url);
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    int port = u ? evhttp_uri_get_port(u) : -1;
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    const char *query = u ? evhttp_uri_get_query(u) : NULL;
    struct evhttp_connection *conn =
        host ? evhttp_connection_base_new(h->base, NULL, host,
                                          (unsigned short)(port > 0 ? port : 80))
             : NULL;
    if (!conn) {
        if (u)
            evhttp_uri_free(u);
        answered(NULL, h);
        return;
    }
    evhttp_connection_set_timeout(conn, 5);
    evhttp_connection_free_on_completion(conn);
    struct evhttp_request *req = evhttp_request_new(answered, h);
    struct evkeyvalq *hd = evhttp_request_get_output_headers(req);
    evhttp_add_header(hd, "Host", host);
    evhttp_add_header(hd, "Content-Type", "application/json");
    evhttp_add_header(hd, "Connection", "close");
    char v[80];
    snprintf(v, sizeof v, "%lld", (long long)h->aid);
    evhttp_add_header(hd, "Idempotency-Key", v);
    if (G.hmac_key && *G.hmac_key) {
        uint8_t mac[32];
        unsigned ml = 0;
        HMAC(EVP_sha256(), G.hmac_key, (int)strlen(G.hmac_key), (const uint8_t *)h->body,
             strlen(h->body), mac, &ml);
        char *p = v + snprintf(v, sizeof v, "sha256=");
        for (unsigned i = 0; i < ml; i++)
            p += sprintf(p, "%02x", mac[i]);
        evhttp_add_header(hd, "X-Magpie-Signature", v);
    }
    evbuffer_add(evhttp_request_get_output_buffer(req), h->body, strlen(h->body));
    char target[2048];
    snprintf(target, sizeof target, "%s%s%s", path && *path ? path : "/", query ? "?" : "",
             query ? query : "");
    evhttp_uri_free(u);
    if (evhttp_make_request(conn, req, EVHTTP_REQ_POST, target) != 0)
        mp_log(MP_LOG_WARN, "gateway: webhook request for %lld could not be made",
               (long long)h->aid); /* libevent calls answered(NULL) */
}

static void pending_written(void *ud, int rc)
{
    struct hook *h = ud;
    if (rc != MAGPIE_OK)
        mp_log(MP_LOG_WARN,
               "gateway: could not record the webhook of command %lld; posting "
               "it anyway",
               (long long)h->aid);
    attempt(h);
}

/* Starts the hook for aid with body (taken) on the calling loop. */
static void start(int64_t aid, char *body, int write_pending)
{
    mp_loop *l = mp_loop_current();
    if (!l) {
        free(body);
        return;
    }
    struct hook *h = calloc(1, sizeof *h);
    h->aid = aid;
    h->body = body;
    h->base = mp_loop_base(l);
    h->timer = calloc(1, event_get_struct_event_size());
    event_assign(h->timer, h->base, -1, 0, retry_cb, h);
    h->next = hooks;
    hooks = h; /* G.lock held by the callers: attempt from the loop, not here */
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)aid);
    if (!write_pending ||
        mp_kv_set(G.domain, GW_STORE_HOOK, key, "pending 0", 9, pending_written, h) != MAGPIE_OK) {
        struct timeval now = {0, 0};
        event_add(h->timer, &now);
    }
}

static char *notice(int64_t aid, const char *dev, int64_t queued_us, int64_t expires_us, int sends,
                    const char *sender, const char *key)
{
    char *b = malloc(1024 + (key ? strlen(key) * 2 : 0));
    char k[512] = "null";
    if (key && !strncmp(key, "api/", 4) && strlen(key) < 200) {
        /* JSON string of the client's key (printable ASCII only; else null) */
        size_t o = 0;
        k[o++] = '"';
        for (const char *p = key + 4; *p; p++) {
            if (*p < 0x20 || *p > 0x7e) {
                strcpy(k, "null");
                o = 0;
                break;
            }
            if (*p == '"' || *p == '\\')
                k[o++] = '\\';
            k[o++] = *p;
        }
        if (o) {
            k[o++] = '"';
            k[o] = '\0';
        }
    }
    sprintf(b,
            "{\"event\":\"command.expired\",\"id\":\"%lld\",\"device\":\"%s\",\"domain\":\"%s\","
            "\"queued_us\":%lld,\"expires_us\":%lld,\"sent\":%s,\"origin\":\"%s\","
            "\"idempotency_key\":%s}",
            (long long)aid, dev, G.domain, (long long)queued_us, (long long)expires_us,
            sends ? "true" : "false",
            !strcmp(sender, "!http")     ? "http"
            : !strcmp(sender, "!outbox") ? "outbox"
            : !strcmp(sender, "!adhoc")  ? "adhoc"
                                         : "xmpp",
            k);
    return b;
}

void gw_hook_expired(const struct gw_dev *d, const struct gw_cmd *c)
{
    if (!G.hook_url || !*G.hook_url)
        return;
    start(c->aid,
          notice(c->aid, d->id, c->queued_us, c->expires_us, (int)c->sends, c->sender, c->sid), 1);
}

/* ---- start-up ---- */

static void pending_key(void *ud, const char *key)
{
    (void)ud;
    resume_ids = realloc(resume_ids, (n_resume + 1) * sizeof *resume_ids);
    resume_ids[n_resume++] = strdup(key);
}

int gw_hook_load(mp_module *m)
{
    G.hook_url = mp_module_opt_str(m, "webhook_url");
    G.hook_attempts = (int)mp_module_opt_int(m, "webhook_attempts");
    G.c.hooks = mp_counter_new(m, "webhooks", "fallback webhooks delivered");
    G.c.hook_failures = mp_counter_new(m, "webhook_failures", "fallback webhooks given up");
    if (!G.hook_url || !*G.hook_url)
        return MAGPIE_OK;
    if (strncmp(G.hook_url, "http://", 7) != 0) {
        mp_log(MP_LOG_ERROR, "gateway: webhook_url must be an http:// URL");
        return MAGPIE_ERR;
    }
    /* hooks left pending by the last run */
    char **keys = NULL;
    size_t n = 0;
    resume_ids = NULL;
    n_resume = 0;
    mp_kv_keys_sync(G.domain, GW_STORE_HOOK, pending_key, NULL);
    for (size_t i = 0; i < n_resume; i++) {
        void *v;
        size_t vl;
        if (mp_kv_get_sync(G.domain, GW_STORE_HOOK, resume_ids[i], &v, &vl) == MAGPIE_OK) {
            if (vl >= 7 && !memcmp(v, "pending", 7)) {
                keys = realloc(keys, (n + 1) * sizeof *keys);
                keys[n++] = strdup(resume_ids[i]);
            }
            free(v);
        }
        free(resume_ids[i]);
    }
    free(resume_ids);
    resume_ids = keys;
    n_resume = n;
    if (n)
        mp_log(MP_LOG_INFO, "gateway: %zu fallback webhook(s) to post again", n);
    return MAGPIE_OK;
}

void gw_hook_resume(void)
{
    pthread_mutex_lock(&G.lock);
    for (size_t i = 0; i < n_resume; i++) {
        int64_t aid = strtoll(resume_ids[i], NULL, 10);
        char *body = malloc(160);
        snprintf(body, 160,
                 "{\"event\":\"command.expired\",\"id\":\"%lld\",\"domain\":\"%s\","
                 "\"resumed\":true}",
                 (long long)aid, G.domain);
        start(aid, body, 0);
        free(resume_ids[i]);
    }
    free(resume_ids);
    resume_ids = NULL;
    n_resume = 0;
    pthread_mutex_unlock(&G.lock);
}

void gw_hook_unload(void)
{
    /* the loops are gone: free our memory only */
    while (hooks) {
        struct hook *h = hooks;
        hooks = h->next;
        free(h->timer);
        free(h->body);
        free(h);
    }
    for (size_t i = 0; i < n_resume; i++)
        free(resume_ids[i]);
    free(resume_ids);
    resume_ids = NULL;
    n_resume = 0;
}
