/* mod_upload - XEP-0363 HTTP File Upload (urn:xmpp:http:upload:0).
 *
 * The module serves a domain of its own (`domain`, default upload.<first
 * host>), listed in the server's disco#items. Its disco#info has the
 * identity store/file, the feature urn:xmpp:http:upload:0 and an
 * XEP-0128 form with max-file-size.
 *
 *   IQ get <request filename= size= content-type=/> to the domain, from an
 *     account of this server (anyone else: not-allowed): a slot, answered
 *     <slot><put url=><header name='Authorization'>Bearer T</header></put>
 *     <get url=/></slot>. Larger than `max_file_size`: not-acceptable with
 *     <file-too-large><max-file-size/>; over the user's `quota` (bytes
 *     stored plus slots not used yet): resource-constraint; more than
 *     `rate_limit` slots a minute: resource-constraint with <retry stamp/>.
 *   URL: <base_url>/upload/<slot id>/<file name>. The slot id is 128 random
 *     bits (unguessable; the GET URL is a capability, as in every XEP-0363
 *     service); the PUT must also carry the slot's own 128-bit token in
 *     the Authorization header (constant-time compare), so knowing a GET
 *     URL never lets anyone write. The file name in the URL is the
 *     client's, sanitised (letters, digits, "._-+~()" and UTF-8 bytes; the
 *     rest becomes '_', no leading '.'); on disk a file is named by its
 *     slot id only, so no client string ever becomes a path.
 *   PUT (HTTP, route /upload, bodies up to max_file_size written to disk as
 *     they arrive): the slot must exist and be open (else 403; used: 409;
 *     older than `slot_timeout`: 403), the token must match (403), the body
 *     be exactly the requested size (larger: 413, smaller: 400) and the
 *     Content-Type the requested one when one was given (400). Then 201.
 *     All of this is checked on the request's head, before the body is
 *     read (Content-Length), and again once it is there.
 *   GET / HEAD: 200 with the Content-Type and Content-Length of the upload,
 *     X-Content-Type-Options: nosniff, a restrictive Content-Security-
 *     Policy and a Content-Disposition (inline for images, audio, video
 *     and plain text, attachment otherwise); unknown: 404. OPTIONS answers
 *     CORS preflights (browser clients such as Converse.js).
 *   Files live in `dir` (default <state_dir>/upload) as <id> plus <id>.meta
 *   (owner, name, type, size, time), reloaded at start; with `expire_days`
 *   they are deleted that many days after upload (checked at start, on
 *   download and at most every 10 s on slot requests); an account's files
 *   go with the account.
 * Without an HTTP listener in the configuration the module loads, says so
 * in the log and serves nothing (so it can be in the default module list). */
#include <magpie/magpie.h>
#include <magpie/http.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NS_UPLOAD      "urn:xmpp:http:upload:0"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define PREFIX         "/upload"
#define ID_LEN         32 /* hex digits: 128 bits */
#define NAME_MAX_LEN   128
#define NBUCKETS       1024

static const struct mp_option options[] = {
    {"domain", MP_OPT_STRING, "", "The upload service's domain (empty: upload.<first host>)", 0, 0},
    {"name", MP_OPT_STRING, "HTTP File Upload", "Name in the service's disco identity", 0, 0},
    {"base_url", MP_OPT_STRING, "",
     "Public URL of the HTTP listener, e.g. \"https://xmpp.example.org:5443\" (empty: "
     "http(s)://<first host>:<port of the HTTP listener>)",
     0, 0},
    {"dir", MP_OPT_STRING, "", "Where uploads are stored (empty: <state_dir>/upload)", 0, 0},
    {"max_file_size", MP_OPT_INT, "10485760", "Largest file, in bytes", 1, 1LL << 40},
    {"quota", MP_OPT_INT, "104857600",
     "Bytes one user may have stored (and reserved by unused slots); 0: no limit", 0, 1LL << 50},
    {"slot_timeout", MP_OPT_INT, "300", "Seconds a slot stays valid for its PUT", 1, 86400},
    {"rate_limit", MP_OPT_INT, "30", "Slots one user may request per minute; 0: no limit", 0,
     100000},
    {"expire_days", MP_OPT_INT, "0", "Days after which stored files are deleted; 0: kept", 0,
     36500},
    {NULL, 0, NULL, NULL, 0, 0},
};

enum slot_state { SLOT_OPEN, SLOT_STORED };

/* A slot handed out, and once its PUT is done, the stored file. */
struct slot {
    char id[ID_LEN + 1];
    char token[ID_LEN + 1]; /* the PUT's Authorization: Bearer token */
    char *owner;            /* bare JID */
    char *name;             /* sanitised file name */
    char *ctype;            /* requested Content-Type, or NULL */
    uint64_t size;
    int64_t created; /* seconds since the epoch */
    enum slot_state state;
    struct slot *next;
};

/* Per-user accounting: bytes stored or reserved, slots this minute. */
struct user {
    char *jid;
    uint64_t bytes;
    int64_t window;
    long count;
    struct user *next;
};

static mp_domain *dom;
static char domain_name[1024];
static char base_url[1024];
static char *store_dir;
static uint64_t max_size, quota;
static long long slot_timeout, rate_limit, expire_days;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot *slots[NBUCKETS];
static struct user *users[NBUCKETS];
static int64_t last_sweep;

static mp_counter *c_slots, *c_uploads, *c_refused;

/* ---- tables (under lock) ---- */

static unsigned hash_str(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % NBUCKETS;
}

static struct slot *slot_find(const char *id)
{
    for (struct slot *s = slots[hash_str(id)]; s; s = s->next)
        if (!strcmp(s->id, id))
            return s;
    return NULL;
}

static struct user *user_get(const char *jid)
{
    struct user **b = &users[hash_str(jid)];
    for (struct user *u = *b; u; u = u->next)
        if (!strcmp(u->jid, jid))
            return u;
    struct user *u = mp_calloc(1, sizeof *u);
    u->jid = strdup(jid);
    u->next = *b;
    *b = u;
    return u;
}

static void slot_insert(struct slot *s)
{
    struct slot **b = &slots[hash_str(s->id)];
    s->next = *b;
    *b = s;
    user_get(s->owner)->bytes += s->size;
}

static void path_of(char *buf, size_t len, const char *id, const char *suffix)
{
    snprintf(buf, len, "%s/%s%s", store_dir, id, suffix);
}

/* Unlinks slot s from its bucket, gives its bytes back to its owner,
 * deletes its files when it was stored, and frees it. */
static void slot_drop(struct slot *s)
{
    for (struct slot **p = &slots[hash_str(s->id)]; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    struct user *u = user_get(s->owner);
    u->bytes = u->bytes >= s->size ? u->bytes - s->size : 0;
    if (s->state == SLOT_STORED) {
        char path[4096];
        path_of(path, sizeof path, s->id, ".meta");
        unlink(path);
        path_of(path, sizeof path, s->id, "");
        unlink(path);
    }
    free(s->owner);
    free(s->name);
    free(s->ctype);
    free(s);
}

static int expired(const struct slot *s, int64_t now)
{
    if (s->state == SLOT_OPEN)
        return now - s->created >= slot_timeout;
    return expire_days > 0 && now - s->created >= expire_days * 86400;
}

/* Drops unused slots past slot_timeout and files past expire_days; at most
 * every 10 s (callers hold the lock). */
static void sweep(int64_t now)
{
    if (now - last_sweep < 10)
        return;
    last_sweep = now;
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct slot *s = slots[i], *next; s; s = next) {
            next = s->next;
            if (expired(s, now))
                slot_drop(s);
        }
}

static int64_t now_s(void)
{
    return mp_now_us() / 1000000;
}

/* ---- names and types ---- */

/* The client's file name made safe for a URL path segment and a
 * Content-Disposition: the part after the last '/' or '\', letters,
 * digits, "._-+~()" and bytes of multibyte UTF-8 kept, anything else '_',
 * no leading '.', at most NAME_MAX_LEN bytes (cut on a character
 * boundary), "file" if nothing is left. Returns a new string. */
static char *sanitise_name(const char *in)
{
    const char *p = in;
    for (const char *q = in; *q; q++)
        if (*q == '/' || *q == '\\')
            p = q + 1;
    char *out = mp_malloc(NAME_MAX_LEN + 1);
    size_t o = 0;
    for (; *p && o < NAME_MAX_LEN; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch >= 0x80 || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || strchr("._-+~()", ch))
            out[o++] = (char)ch;
        else
            out[o++] = '_';
    }
    if (((unsigned char)*p & 0xc0) == 0x80) { /* cut inside a character: drop all of it */
        while (o > 0 && ((unsigned char)out[o - 1] & 0xc0) == 0x80)
            o--;
        if (o > 0 && ((unsigned char)out[o - 1] & 0xc0) == 0xc0)
            o--;
    }
    out[o] = '\0';
    for (size_t i = 0; out[i] == '.'; i++)
        out[i] = '_';
    if (!o)
        strcpy(out, "file");
    return out;
}

/* Percent-encodes every byte of s outside the unreserved set. */
static void pct_encode(char *buf, size_t len, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("._-~", ch)) {
            buf[o++] = (char)ch;
        } else {
            buf[o++] = '%';
            buf[o++] = hex[ch >> 4];
            buf[o++] = hex[ch & 15];
        }
    }
    buf[o] = '\0';
}

/* A MIME type "type/subtype" with optional "; param=value" parts, of
 * token characters only (no CR/LF, quotes or spaces other than after ';'). */
static int valid_ctype(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 255 || t[0] == '/')
        return 0;
    int slashes = 0, params = 0;
    for (const char *p = t; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        int token = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || strchr("!#$&^_.+-", ch);
        if (ch == ';')
            params = 1;
        else if (ch == '/' && !params)
            slashes++;
        else if (!token && !(params && (ch == ' ' || ch == '=')))
            return 0;
    }
    return slashes == 1;
}

/* Compares Content-Types by their "type/subtype", case-insensitively. */
static int same_type(const char *a, const char *b)
{
    size_t la = strcspn(a, "; "), lb = strcspn(b, "; ");
    return la == lb && !strncasecmp(a, b, la);
}

/* ---- stored files ---- */

/* Writes s's metadata next to its file (a temporary file renamed into
 * place). MAGPIE_OK or MAGPIE_ERR. */
static int meta_write(const struct slot *s)
{
    char path[4096], tmp[4096];
    path_of(path, sizeof path, s->id, ".meta");
    path_of(tmp, sizeof tmp, s->id, ".meta.tmp");
    FILE *f = fopen(tmp, "w");
    if (!f)
        return MAGPIE_ERR;
    fprintf(f, "%s\n%s\n%s\n%" PRIu64 "\n%" PRId64 "\n", s->owner, s->name,
            s->ctype ? s->ctype : "", s->size, s->created);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

static int hex_id(const char *s, size_t n)
{
    if (n != ID_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Reads <id>.meta into a stored slot, or NULL when it is unreadable. */
static struct slot *meta_read(const char *id)
{
    char path[4096], line[5][1024];
    path_of(path, sizeof path, id, ".meta");
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    int ok = 1;
    for (int i = 0; i < 5 && ok; i++) {
        if (!fgets(line[i], sizeof line[i], f))
            ok = 0;
        else
            line[i][strcspn(line[i], "\n")] = '\0';
    }
    fclose(f);
    if (!ok || !line[0][0] || !line[1][0])
        return NULL;
    struct slot *s = mp_calloc(1, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", id);
    s->owner = strdup(line[0]);
    s->name = strdup(line[1]);
    s->ctype = line[2][0] ? strdup(line[2]) : NULL;
    s->size = strtoull(line[3], NULL, 10);
    s->created = strtoll(line[4], NULL, 10);
    s->state = SLOT_STORED;
    return s;
}

/* Loads the stored files of store_dir; removes leftovers (a file without
 * metadata or the other way round, temporary and spooled files). */
static void load_stored(void)
{
    DIR *d = opendir(store_dir);
    if (!d)
        return;
    struct dirent *e;
    size_t n = 0;
    char path[4096];
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        size_t len = strlen(nm);
        if (!strcmp(nm, ".") || !strcmp(nm, ".."))
            continue;
        if (len == ID_LEN + 5 && hex_id(nm, ID_LEN) && !strcmp(nm + ID_LEN, ".meta"))
            continue; /* read with its file */
        if (len == ID_LEN && hex_id(nm, len)) {
            struct slot *s = meta_read(nm);
            struct stat st;
            path_of(path, sizeof path, nm, "");
            if (s && stat(path, &st) == 0 && (uint64_t)st.st_size == s->size) {
                slot_insert(s);
                n++;
                continue;
            }
            if (s) {
                s->state = SLOT_OPEN; /* nothing to unlink twice */
                free(s->owner);
                free(s->name);
                free(s->ctype);
                free(s);
            }
        }
        snprintf(path, sizeof path, "%s/%s", store_dir, nm);
        unlink(path); /* a leftover */
    }
    closedir(d);
    /* metadata whose file is gone */
    d = opendir(store_dir);
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len == ID_LEN + 5 && !strcmp(e->d_name + ID_LEN, ".meta")) {
            char id[ID_LEN + 1];
            memcpy(id, e->d_name, ID_LEN);
            id[ID_LEN] = '\0';
            if (!slot_find(id)) {
                snprintf(path, sizeof path, "%s/%s", store_dir, e->d_name);
                unlink(path);
            }
        }
    }
    if (d)
        closedir(d);
    mp_log(MP_LOG_INFO, "upload: %zu stored files in %s", n, store_dir);
}

/* ---- XMPP side ---- */

static void on_disco_items(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_stanza *r = mp_iq_result(iq);
    mp_xml_add_child(r, mp_stanza_root(r), "query", NS_DISCO_ITEMS);
    mp_iq_reply(r);
}

/* Answers iq with an error of type/condition and text, plus an element
 * of the upload namespace (file-too-large with its max-file-size, or
 * retry with a stamp) when extra is not NULL. */
static void reply_error(mp_stanza *iq, const char *type, const char *cond, const char *text,
                        const char *extra, const char *value)
{
    mp_stanza *e = mp_stanza_make_error(mp_stanza_copy(iq), type, cond, text);
    mp_xml *err = mp_xml_find(mp_stanza_root(e), "error", NULL);
    if (err && extra && !strcmp(extra, "file-too-large")) {
        mp_xml *f = mp_xml_add_child(e, err, "file-too-large", NS_UPLOAD);
        mp_xml *m = mp_xml_add_child(e, f, "max-file-size", NS_UPLOAD);
        mp_xml_add_text(e, m, value, strlen(value));
    } else if (err && extra) {
        mp_xml_set_attr(e, mp_xml_add_child(e, err, extra, NS_UPLOAD), "stamp", value);
    }
    mp_counter_add(c_refused, 1);
    mp_route(e);
}

/* The slot request (XEP-0363 §4). */
static void on_request(mp_stanza *iq, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *req = mp_xml_find(mp_stanza_root(iq), "request", NS_UPLOAD);
    if (!env->from.local || !mp_host_is_local(env->from.domain)) {
        reply_error(iq, "cancel", "not-allowed", "Only accounts of this server may upload", NULL,
                    NULL);
        return;
    }
    const char *fname = req ? mp_xml_get_attr(req, "filename") : NULL;
    const char *size_s = req ? mp_xml_get_attr(req, "size") : NULL;
    const char *ctype = req ? mp_xml_get_attr(req, "content-type") : NULL;
    char *end = NULL;
    errno = 0;
    unsigned long long size =
        size_s && size_s[0] >= '0' && size_s[0] <= '9' ? strtoull(size_s, &end, 10) : 0;
    if (!fname || !*fname || !end || *end || errno || size == 0) {
        reply_error(iq, "modify", "bad-request", "A filename and a size (bytes, > 0) are required",
                    NULL, NULL);
        return;
    }
    if (ctype && *ctype && !valid_ctype(ctype)) {
        reply_error(iq, "modify", "bad-request", "Invalid content-type", NULL, NULL);
        return;
    }
    char max[32], text[128];
    snprintf(max, sizeof max, "%" PRIu64, max_size);
    if (size > max_size) {
        snprintf(text, sizeof text, "File too large. The maximum file size is %s bytes", max);
        reply_error(iq, "modify", "not-acceptable", text, "file-too-large", max);
        return;
    }
    const char *owner = env->from.bare;
    int64_t now = now_s();
    pthread_mutex_lock(&lock);
    sweep(now);
    struct user *u = user_get(owner);
    if (now - u->window >= 60) {
        u->window = now;
        u->count = 0;
    }
    if (rate_limit > 0 && u->count >= rate_limit) {
        int64_t retry = (u->window + 60) * 1000000;
        pthread_mutex_unlock(&lock);
        char stamp[64];
        mp_datetime_format(retry, stamp, sizeof stamp);
        reply_error(iq, "wait", "resource-constraint",
                    "Too many upload slots requested; retry later", "retry", stamp);
        return;
    }
    if (quota > 0 && (u->bytes + size > quota || u->bytes + size < u->bytes)) {
        pthread_mutex_unlock(&lock);
        snprintf(text, sizeof text, "Quota reached: %" PRIu64 " bytes per user", quota);
        reply_error(iq, "wait", "resource-constraint", text, NULL, NULL);
        return;
    }
    u->count++;
    struct slot *s = mp_calloc(1, sizeof *s);
    mp_random_id(s->id, sizeof s->id);
    mp_random_id(s->token, sizeof s->token);
    s->owner = strdup(owner);
    s->name = sanitise_name(fname);
    s->ctype = ctype && *ctype ? strdup(ctype) : NULL;
    s->size = size;
    s->created = now;
    s->state = SLOT_OPEN;
    slot_insert(s);
    char enc[NAME_MAX_LEN * 3 + 1], url[4096], auth[64];
    pct_encode(enc, sizeof enc, s->name);
    snprintf(url, sizeof url, "%s%s/%s/%s", base_url, PREFIX, s->id, enc);
    snprintf(auth, sizeof auth, "Bearer %s", s->token);
    pthread_mutex_unlock(&lock);

    mp_stanza *r = mp_iq_result(iq);
    mp_xml *slot = mp_xml_add_child(r, mp_stanza_root(r), "slot", NS_UPLOAD);
    mp_xml *put = mp_xml_add_child(r, slot, "put", NULL);
    mp_xml_set_attr(r, put, "url", url);
    mp_xml *h = mp_xml_add_child(r, put, "header", NULL);
    mp_xml_set_attr(r, h, "name", "Authorization");
    mp_xml_add_text(r, h, auth, strlen(auth));
    mp_xml_set_attr(r, mp_xml_add_child(r, slot, "get", NULL), "url", url);
    mp_counter_add(c_slots, 1);
    mp_iq_reply(r);
}

static int on_stanza(mp_stanza *st, void *ud)
{
    (void)st;
    (void)ud;
    return HOOK_PASS; /* messages and presence: nothing here */
}

static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    char jid[2048];
    snprintf(jid, sizeof jid, "%s@%s", user, domain);
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct slot *s = slots[i], *next; s; s = next) {
            next = s->next;
            if (!strcmp(s->owner, jid))
                slot_drop(s);
        }
    pthread_mutex_unlock(&lock);
}

static const struct mp_notify notify = {.account_deleted = account_deleted};

/* ---- HTTP side ---- */

static void respond_text(mp_http_req *r, int status, const char *text)
{
    mp_http_respond(r, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* Splits "/upload/<id>/<name>" into id and name (pointers into path), or
 * returns MAGPIE_ERR. */
static int parse_path(const char *path, char *id, const char **name)
{
    size_t pl = strlen(PREFIX);
    if (strncmp(path, PREFIX "/", pl + 1) != 0)
        return MAGPIE_ERR;
    const char *p = path + pl + 1;
    const char *slash = strchr(p, '/');
    if (!slash || !hex_id(p, (size_t)(slash - p)) || !slash[1] || strchr(slash + 1, '/'))
        return MAGPIE_ERR;
    memcpy(id, p, ID_LEN);
    id[ID_LEN] = '\0';
    *name = slash + 1;
    return MAGPIE_OK;
}

/* Equal strings, in time independent of where they differ. */
static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la && i < lb; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static void cors(mp_http_req *r)
{
    mp_http_add_header(r, "Access-Control-Allow-Origin", "*");
    mp_http_add_header(r, "Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS");
    mp_http_add_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
    mp_http_add_header(r, "Access-Control-Max-Age", "86400");
}

/* Whether request r may upload len bytes (have_len 0: length unknown yet)
 * to slot id/name: 0, or the HTTP status refusing it with *text. Drops the
 * slot if it has expired. Called with the lock held; *out is the slot. */
static int put_check(mp_http_req *r, const char *id, const char *name, uint64_t len, int have_len,
                     struct slot **out, const char **text)
{
    const char *ctype = mp_http_header(r, "Content-Type");
    const char *auth = mp_http_header(r, "Authorization");
    struct slot *s = *out = slot_find(id);
    if (s && s->state == SLOT_OPEN && expired(s, now_s())) {
        slot_drop(s);
        s = *out = NULL;
    }
    if (!s || strcmp(s->name, name) != 0)
        return *text = "no such upload slot (or it has expired)\n", 403;
    if (s->state != SLOT_OPEN)
        return *text = "this slot has been used\n", 409;
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || !token_equal(auth + 7, s->token))
        return *text = "wrong or missing Authorization\n", 403;
    if (have_len && len > s->size)
        return *text = "larger than the slot's size\n", 413;
    if (have_len && len != s->size)
        return *text = "the body must be exactly the slot's size\n", 400;
    if (s->ctype && (!ctype || !same_type(s->ctype, ctype)))
        return *text = "Content-Type differs from the slot's\n", 400;
    if (!s->ctype && ctype && !valid_ctype(ctype))
        return *text = "invalid Content-Type\n", 400;
    return 0;
}

/* The head of a request to /upload: a PUT that cannot succeed (unknown or
 * used slot, wrong token, Content-Length or type) is refused before its
 * body is read. */
static int http_head(mp_http_req *r, void *ud)
{
    (void)ud;
    char id[ID_LEN + 1];
    const char *name, *text;
    if (strcmp(mp_http_method(r), "PUT") != 0)
        return 0;
    if (parse_path(mp_http_path(r), id, &name) != MAGPIE_OK)
        return 403;
    const char *cl = mp_http_header(r, "Content-Length");
    struct slot *s;
    pthread_mutex_lock(&lock);
    int st = put_check(r, id, name, cl ? strtoull(cl, NULL, 10) : 0, cl != NULL, &s, &text);
    pthread_mutex_unlock(&lock);
    return st;
}

static void http_put(mp_http_req *r, const char *id, const char *name)
{
    size_t got = 0;
    const char *file = mp_http_body_file(r, &got);
    const char *ctype = mp_http_header(r, "Content-Type");
    const char *text = "created\n";
    struct slot *s;
    pthread_mutex_lock(&lock);
    int status = put_check(r, id, name, got, 1, &s, &text);
    if (!status && !file) {
        status = 400, text = "the body must be exactly the slot's size\n";
    } else if (!status) {
        char path[4096];
        path_of(path, sizeof path, s->id, "");
        if (!s->ctype && ctype)
            s->ctype = strdup(ctype);
        s->created = now_s();
        if (mp_http_body_move(r, path) != MAGPIE_OK || meta_write(s) != MAGPIE_OK) {
            mp_log(MP_LOG_ERROR, "upload: cannot store %s: %s", path, strerror(errno));
            unlink(path);
            slot_drop(s);
            status = 500, text = "cannot store the file\n";
        } else {
            s->state = SLOT_STORED;
            mp_counter_add(c_uploads, 1);
            mp_log(MP_LOG_INFO, "upload: %s stored %s (%" PRIu64 " bytes)", s->owner, s->id,
                   s->size);
        }
    }
    pthread_mutex_unlock(&lock);
    cors(r);
    respond_text(r, status ? status : 201, text);
}

static int inline_type(const char *t)
{
    if (!strncasecmp(t, "image/", 6))
        return strncasecmp(t, "image/svg", 9) != 0;
    return !strncasecmp(t, "audio/", 6) || !strncasecmp(t, "video/", 6) ||
           same_type(t, "text/plain");
}

static void http_get(mp_http_req *r, const char *id, const char *name)
{
    char path[4096], ctype[256], fname[NAME_MAX_LEN + 1];
    int64_t now = now_s();
    int fd = -1;
    pthread_mutex_lock(&lock);
    struct slot *s = slot_find(id);
    if (s && s->state == SLOT_STORED && expired(s, now)) {
        slot_drop(s);
        s = NULL;
    }
    if (s && s->state == SLOT_STORED && !strcmp(s->name, name)) {
        path_of(path, sizeof path, s->id, "");
        fd = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(ctype, sizeof ctype, "%s", s->ctype ? s->ctype : "application/octet-stream");
        snprintf(fname, sizeof fname, "%s", s->name);
    }
    pthread_mutex_unlock(&lock);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        cors(r);
        respond_text(r, 404, "not found\n");
        return;
    }
    char disp[NAME_MAX_LEN * 3 + 64], enc[NAME_MAX_LEN * 3 + 1];
    pct_encode(enc, sizeof enc, fname);
    snprintf(disp, sizeof disp, "%s; filename*=UTF-8''%s",
             inline_type(ctype) ? "inline" : "attachment", enc);
    mp_http_add_header(r, "Content-Disposition", disp);
    mp_http_add_header(r, "X-Content-Type-Options", "nosniff");
    mp_http_add_header(r, "Content-Security-Policy", "default-src 'none'; sandbox");
    mp_http_add_header(r, "Cache-Control", "public, max-age=31536000, immutable");
    cors(r);
    mp_http_respond_file(r, 200, ctype, fd, (size_t)st.st_size);
}

static void on_http(mp_http_req *r, void *ud)
{
    (void)ud;
    const char *method = mp_http_method(r);
    char id[ID_LEN + 1];
    const char *name;
    if (!strcmp(method, "OPTIONS")) {
        cors(r);
        mp_http_respond(r, 204, NULL, NULL, 0);
        return;
    }
    int known = parse_path(mp_http_path(r), id, &name) == MAGPIE_OK;
    if (!strcmp(method, "PUT")) {
        if (!known) {
            respond_text(r, 403, "no such upload slot\n");
            return;
        }
        http_put(r, id, name);
    } else if (!strcmp(method, "GET") || !strcmp(method, "HEAD")) {
        if (!known) {
            respond_text(r, 404, "not found\n");
            return;
        }
        http_get(r, id, name);
    } else {
        mp_http_add_header(r, "Allow", "GET, HEAD, PUT, OPTIONS");
        respond_text(r, 405, "method not allowed\n");
    }
}

/* ---- load / unload ---- */

static int make_dir(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return MAGPIE_ERR;
            *p = '/';
        }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

static int load(mp_module *m)
{
    if (mp_http_base_url(base_url, sizeof base_url) != MAGPIE_OK) {
        mp_log(MP_LOG_INFO, "upload: no \"http\" listener configured: HTTP File Upload is off "
                            "(add one under 'listeners' to turn it on)");
        return MAGPIE_OK;
    }
    const char *b = mp_module_opt_str(m, "base_url");
    if (b && *b) {
        if (strncmp(b, "http://", 7) != 0 && strncmp(b, "https://", 8) != 0) {
            mp_log(MP_LOG_ERROR, "upload: base_url must start with http:// or https://");
            return MAGPIE_ERR;
        }
        snprintf(base_url, sizeof base_url, "%s", b);
        size_t n = strlen(base_url);
        while (n > 0 && base_url[n - 1] == '/')
            base_url[--n] = '\0';
    }
    if (mp_service_domain_name(mp_module_opt_str(m, "domain"), "upload", domain_name,
                               sizeof domain_name) != MAGPIE_OK)
        return MAGPIE_ERR;
    const char *dir = mp_module_opt_str(m, "dir");
    char def[4096];
    if (!dir || !*dir) {
        snprintf(def, sizeof def, "%s/upload", mp_state_dir());
        dir = def;
    }
    if (make_dir(dir) != MAGPIE_OK) {
        mp_log(MP_LOG_ERROR, "upload: cannot create %s: %s", dir, strerror(errno));
        return MAGPIE_ERR;
    }
    store_dir = strdup(dir);
    max_size = (uint64_t)mp_module_opt_int(m, "max_file_size");
    quota = (uint64_t)mp_module_opt_int(m, "quota");
    slot_timeout = mp_module_opt_int(m, "slot_timeout");
    rate_limit = mp_module_opt_int(m, "rate_limit");
    expire_days = mp_module_opt_int(m, "expire_days");
    dom = mp_domain_add(m, domain_name, on_stanza, NULL);
    if (!dom) {
        mp_log(MP_LOG_ERROR, "upload: cannot serve %s (a virtual host, or taken)", domain_name);
        return MAGPIE_ERR;
    }
    mp_disco_item_add(m, MP_DISCO_SERVER, domain_name, mp_module_opt_str(m, "name"));
    /* disco#info (answered by the core): XEP-0363 §2, with the largest file
     * in an XEP-0128 extended form */
    char maxs[32];
    snprintf(maxs, sizeof maxs, "%" PRIu64, max_size);
    if (mp_domain_disco_identity(dom, "store", "file", mp_module_opt_str(m, "name")) != MAGPIE_OK ||
        mp_domain_disco_feature(dom, NS_DISCO_ITEMS) != MAGPIE_OK ||
        mp_domain_disco_feature(dom, NS_UPLOAD) != MAGPIE_OK ||
        mp_domain_disco_field(dom, NS_UPLOAD, "max-file-size", maxs) != MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_GET, NS_DISCO_ITEMS, on_disco_items, NULL) != MAGPIE_OK ||
        mp_domain_iq_register(dom, MP_IQ_GET, NS_UPLOAD, on_request, NULL) != MAGPIE_OK ||
        mp_http_route_ex(m, NULL, PREFIX, (size_t)max_size, store_dir, http_head, on_http, NULL) !=
            MAGPIE_OK)
        return MAGPIE_ERR;
    mp_notify_add(m, &notify, NULL);
    c_slots = mp_counter_new(m, "upload_slots", "HTTP upload slots handed out");
    c_uploads = mp_counter_new(m, "upload_files", "Files uploaded over HTTP");
    c_refused = mp_counter_new(m, "upload_refused", "Upload slot requests refused");
    pthread_mutex_lock(&lock);
    load_stored();
    sweep(now_s()); /* files past expire_days */
    pthread_mutex_unlock(&lock);
    mp_log(MP_LOG_INFO, "upload: serving %s, files at %s/upload/", domain_name, base_url);
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (struct slot *s = slots[i], *next; s; s = next) {
            next = s->next;
            free(s->owner);
            free(s->name);
            free(s->ctype);
            free(s);
        }
        slots[i] = NULL;
        for (struct user *u = users[i], *next; u; u = next) {
            next = u->next;
            free(u->jid);
            free(u);
        }
        users[i] = NULL;
    }
    free(store_dir);
    store_dir = NULL;
    dom = NULL;
    last_sweep = 0;
    pthread_mutex_unlock(&lock);
}

MP_MODULE_DECLARE("upload", "XEP-0363 HTTP File Upload", options, load, unload, NULL);
