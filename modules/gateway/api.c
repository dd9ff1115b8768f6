/* api.c - the gateway's HTTP routes on the server's HTTP listener
 * (include/magpie/http.h), documented in docs/gateway.md:
 *
 *   POST /gateway/v1/devices/<id>/commands   {"payload", "encoding",
 *        "ttl", "idempotency_key"} -> 201 {"id", ...} (200 for a repeat)
 *   GET  /gateway/v1/commands/<id>           the command's lifecycle
 *
 * Authenticated by "Authorization: Bearer <token>" (option api_tokens) or
 * "X-Magpie-Signature: sha256=<hex HMAC-SHA-256 of the body>" (option
 * api_hmac_key; for GET the signed text is the path). The 201 is sent once
 * the command is committed (submit.c). */
#include "gateway.h"

#include <magpie/http.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREFIX  "/gateway/v1"
#define KEY_MAX 200

static void respond_json(mp_http_req *r, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    mp_http_respond(r, status, "application/json", s, strlen(s));
    free(s);
}

static void respond_error(mp_http_req *r, int status, const char *error, const char *text)
{
    if (status == 401)
        mp_http_add_header(r, "WWW-Authenticate", "Bearer realm=\"magpie-gateway\"");
    respond_json(r, status, json_pack("{s:s, s:s}", "error", error, "message", text));
}

/* ---- authentication ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* 1 if r carries a configured bearer token or a valid signature of
 * signed[0..len). Comparisons in constant time. */
static int authorised(mp_http_req *r, const char *signed_text, size_t len)
{
    const char *a = mp_http_header(r, "Authorization");
    if (a && !strncasecmp(a, "Bearer ", 7)) {
        const char *t = a + 7;
        size_t tl = strlen(t);
        int ok = 0;
        for (size_t i = 0; i < G.n_tokens; i++)
            if (strlen(G.tokens[i]) == tl && CRYPTO_memcmp(G.tokens[i], t, tl) == 0)
                ok = 1;
        if (ok)
            return 1;
    }
    const char *sig = mp_http_header(r, "X-Magpie-Signature");
    if (sig && G.hmac_key && *G.hmac_key && !strncmp(sig, "sha256=", 7) && strlen(sig + 7) == 64) {
        uint8_t want[32], got[32];
        unsigned ml = 0;
        for (int i = 0; i < 32; i++) {
            int hi = hexval(sig[7 + 2 * i]), lo = hexval(sig[8 + 2 * i]);
            if (hi < 0 || lo < 0)
                return 0;
            got[i] = (uint8_t)(hi << 4 | lo);
        }
        HMAC(EVP_sha256(), G.hmac_key, (int)strlen(G.hmac_key), (const uint8_t *)signed_text, len,
             want, &ml);
        return ml == 32 && CRYPTO_memcmp(want, got, 32) == 0;
    }
    return 0;
}

/* ---- POST a command ---- */

static void iso_time(char *buf, size_t n, int64_t us)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t l = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + l, n - l, ".%03dZ", (int)(us / 1000 % 1000));
}

static void submitted(void *ud, int status, int64_t aid, const char *dev, int dup)
{
    mp_http_req *r = ud;
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)aid);
    switch (status) {
    case GW_SUBMIT_CREATED:
    case GW_SUBMIT_EXISTS: {
        int again = status == GW_SUBMIT_EXISTS || dup;
        char loc[64];
        snprintf(loc, sizeof loc, PREFIX "/commands/%s", id);
        mp_http_add_header(r, "Location", loc);
        respond_json(r, again ? 200 : 201,
                     json_pack("{s:s, s:s, s:b}", "id", id, "device", dev, "duplicate", again));
        break;
    }
    case GW_SUBMIT_CONFLICT:
        respond_error(r, 409, "conflict", "this idempotency key was used for another device");
        break;
    case GW_SUBMIT_NODEV:
        respond_error(r, 404, "no-such-device", "no such device");
        break;
    default:
        respond_error(r, 503, "storage", "the command could not be stored; retry");
        break;
    }
}

static void post_command(mp_http_req *r, const char *dev)
{
    size_t bl;
    const char *body = mp_http_body(r, &bl);
    if (!authorised(r, body, bl)) {
        mp_counter_add(G.c.forbidden, 1);
        respond_error(r, 401, "unauthorized", "a valid bearer token or signature is required");
        return;
    }
    json_error_t err;
    json_t *j = json_loadb(body, bl, 0, &err);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        respond_error(r, 400, "bad-json", "the body must be a JSON object");
        return;
    }
    json_t *jp = json_object_get(j, "payload"), *je = json_object_get(j, "encoding"),
           *jt = json_object_get(j, "ttl"), *jk = json_object_get(j, "idempotency_key");
    const char *enc = je ? json_string_value(je) : "text";
    const char *bad = NULL;
    if (!jp || !json_is_string(jp))
        bad = "'payload' (string) is required";
    else if (!enc || (strcmp(enc, "text") && strcmp(enc, "base64")))
        bad = "'encoding' must be \"text\" or \"base64\"";
    else if (jt && !json_is_integer(jt))
        bad = "'ttl' must be an integer (seconds)";
    else if (jk && (!json_is_string(jk) || json_string_length(jk) == 0 ||
                    json_string_length(jk) > KEY_MAX))
        bad = "'idempotency_key' must be a string of 1 to 200 characters";
    long long ttl = jt ? json_integer_value(jt) : G.ttl_default;
    if (!bad && (ttl < 0 || (G.ttl_max && (ttl > G.ttl_max || ttl == 0))))
        bad = "'ttl' out of range";
    if (bad) {
        json_decref(j);
        respond_error(r, 400, "bad-request", bad);
        return;
    }
    const char *p = json_string_value(jp);
    size_t pl = json_string_length(jp);
    uint8_t *payload;
    size_t len;
    if (!strcmp(enc, "base64")) {
        payload = malloc(pl / 4 * 3 + 3);
        int n = pl % 4 ? -1 : EVP_DecodeBlock(payload, (const uint8_t *)p, (int)pl);
        if (n < 0) {
            free(payload);
            json_decref(j);
            respond_error(r, 400, "bad-request", "'payload' is not valid base64");
            return;
        }
        len = (size_t)n;
        if (pl >= 1 && p[pl - 1] == '=')
            len--;
        if (pl >= 2 && p[pl - 2] == '=')
            len--;
    } else {
        payload = malloc(pl + 1);
        memcpy(payload, p, pl);
        len = pl;
    }
    if (len + 6 > (size_t)G.max_body) {
        free(payload);
        json_decref(j);
        respond_error(r, 413, "too-large", "payload larger than the device's frames");
        return;
    }
    char key[KEY_MAX + 8];
    if (jk)
        snprintf(key, sizeof key, "api/%s", json_string_value(jk));
    gw_sweep_start();
    gw_submit(dev, "!http", jk ? key : NULL, payload, len, ttl, submitted, r);
    free(payload);
    json_decref(j);
}

/* ---- GET a command's status ---- */

static void add_time(json_t *o, const char *name, int64_t us)
{
    if (us <= 0) {
        json_object_set_new(o, name, json_null());
        return;
    }
    char t[40];
    iso_time(t, sizeof t, us);
    json_object_set_new(o, name, json_string(t));
}

static void status_done(void *ud, int rc, const struct gw_status *st)
{
    mp_http_req *r = ud;
    if (rc == MAGPIE_NOTFOUND) {
        respond_error(r, 404, "no-such-command", "no such command (or it ended long ago)");
        return;
    }
    if (rc != MAGPIE_OK) {
        respond_error(r, 503, "storage", "storage unavailable; retry");
        return;
    }
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)st->aid);
    json_t *o = json_pack("{s:s, s:s, s:s}", "id", id, "device", st->dev, "state", st->state);
    json_object_set_new(o, "result", st->result >= 0 ? json_integer(st->result) : json_null());
    add_time(o, "queued_at", st->queued_us);
    add_time(o, "sent_at", st->sent_us);
    add_time(o, "ended_at", st->ended_us);
    if (st->expires_us)
        add_time(o, "expires_at", st->expires_us);
    respond_json(r, 200, o);
}

static void get_command(mp_http_req *r, const char *id)
{
    const char *path = mp_http_path(r);
    if (!authorised(r, path, strlen(path))) {
        respond_error(r, 401, "unauthorized", "a valid bearer token or signature is required");
        return;
    }
    char *end;
    long long aid = strtoll(id, &end, 10);
    if (*id == '\0' || *end || aid <= 0) {
        respond_error(r, 404, "no-such-command", "no such command");
        return;
    }
    gw_status(aid, status_done, r);
}

/* ---- routing ---- */

static void on_request(mp_http_req *r, void *ud)
{
    (void)ud;
    const char *path = mp_http_path(r) + strlen(PREFIX);
    const char *method = mp_http_method(r);
    char dev[GW_ID_MAX + 2];
    int n = 0;
    if (!strncmp(path, "/devices/", 9)) {
        const char *s = path + 9, *slash = strchr(s, '/');
        if (slash && !strcmp(slash, "/commands") && slash - s > 0 && slash - s <= GW_ID_MAX) {
            memcpy(dev, s, (size_t)(slash - s));
            dev[slash - s] = '\0';
            n = 1;
        }
        if (n && strcmp(method, "POST")) {
            mp_http_add_header(r, "Allow", "POST");
            respond_error(r, 405, "method", "use POST");
            return;
        }
        if (n) {
            post_command(r, dev);
            return;
        }
    } else if (!strncmp(path, "/commands/", 10) && !strchr(path + 10, '/')) {
        if (strcmp(method, "GET")) {
            mp_http_add_header(r, "Allow", "GET");
            respond_error(r, 405, "method", "use GET");
            return;
        }
        get_command(r, path + 10);
        return;
    }
    respond_error(r, 404, "not-found", "no such resource");
}

static char **split(const char *s, size_t *n)
{
    char **v = NULL;
    size_t cnt = 0;
    char *dup = strdup(s ? s : ""), *save = NULL;
    for (char *t = strtok_r(dup, " ,", &save); t; t = strtok_r(NULL, " ,", &save)) {
        v = realloc(v, (cnt + 1) * sizeof *v);
        v[cnt++] = strdup(t);
    }
    free(dup);
    *n = cnt;
    return v;
}

int gw_api_load(mp_module *m)
{
    G.tokens = split(mp_module_opt_str(m, "api_tokens"), &G.n_tokens);
    G.hmac_key = mp_module_opt_str(m, "api_hmac_key");
    for (size_t i = 0; i < G.n_tokens; i++)
        if (strlen(G.tokens[i]) < 16) {
            mp_log(MP_LOG_ERROR, "gateway: api_tokens: a token must have at least 16 characters");
            return MAGPIE_ERR;
        }
    if (!G.n_tokens && !(G.hmac_key && *G.hmac_key))
        return MAGPIE_OK; /* no credentials: no API */
    return mp_http_route(m, NULL, PREFIX, on_request, NULL);
}

void gw_api_unload(void)
{
    for (size_t i = 0; i < G.n_tokens; i++)
        free(G.tokens[i]);
    free(G.tokens);
    G.tokens = NULL;
    G.n_tokens = 0;
}
