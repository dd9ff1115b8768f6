/* jid.c - JIDs (RFC 7622): split, normalise with libidn stringprep
 * (Nodeprep, Nameprep, Resourceprep), and store all parts of one JID in a
 * single malloc'd buffer. */
#include "base/base.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

/* Work buffer for one part: an input longer than this cannot come out of
 * preparation at 1023 bytes or less (short of pathological input made of
 * code points mapped to nothing, which we refuse). */
#define PREP_BUF 4096

/* Returns 1 if s[0..len) is valid UTF-8 (no overlongs, surrogates or
 * code points above U+10FFFF) without NUL bytes. */
static int utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned cp;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + n >= len)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* The ASCII fast path: what stringprep with profile makes of in[0..len),
 * all bytes in 1..0x7f, into out. For ASCII the three profiles reduce to
 * this (RFC 3454 tables; RFC 3920 appendices A and B, RFC 3491): Nodeprep
 * and Nameprep fold A-Z to lower case (table B.2), Resourceprep maps
 * nothing; Nodeprep prohibits the ASCII space and controls (C.1.1, C.2.1)
 * and " & ' / : < > @, Resourceprep the controls (C.2.1), Nameprep no
 * ASCII character at all (domain_chars_ok checks domains afterwards); no
 * ASCII character is unassigned or right-to-left, so no bidi rule applies.
 * tests/unit/test_jid.c compares it with libidn on every ASCII input
 * class. Returns MAGPIE_OK/ERR; out holds len + 1 bytes. */
static int prep_ascii(const char *in, size_t len, const Stringprep_profile *profile, char *out)
{
    int fold = profile != stringprep_xmpp_resourceprep;
    int node = profile == stringprep_xmpp_nodeprep;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (profile != stringprep_nameprep && (c < 0x20 || c == 0x7f))
            return MAGPIE_ERR;
        if (node && (c == ' ' || c == '"' || c == '&' || c == '\'' || c == '/' || c == ':' ||
                     c == '<' || c == '>' || c == '@'))
            return MAGPIE_ERR;
        out[i] = (char)(fold && c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    out[len] = '\0';
    return MAGPIE_OK;
}

static int all_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] - 1u >= 0x7fu) /* 0 or >= 0x80 */
            return 0;
    return 1;
}

/* Prepares in[0..len) with profile into out (size outlen). The result must
 * be 1..MP_JID_PART_MAX bytes and fit outlen. Returns MAGPIE_OK/ERR. */
static int prep(const char *in, size_t len, const Stringprep_profile *profile, char *out,
                size_t outlen)
{
    char buf[PREP_BUF];
    if (len > 0 && len <= MP_JID_PART_MAX && len < outlen && all_ascii(in, len))
        return prep_ascii(in, len, profile, out);
    if (len == 0 || len >= PREP_BUF || !utf8_valid((const unsigned char *)in, len))
        return MAGPIE_ERR;
    memcpy(buf, in, len);
    buf[len] = '\0';
    if (stringprep(buf, sizeof(buf), 0, profile) != STRINGPREP_OK)
        return MAGPIE_ERR;
    size_t n = strlen(buf);
    if (n == 0 || n > MP_JID_PART_MAX || n >= outlen)
        return MAGPIE_ERR;
    memcpy(out, buf, n + 1);
    return MAGPIE_OK;
}

int mp_jid_nodeprep(const char *in, char *out, size_t outlen)
{
    return prep(in, strlen(in), stringprep_xmpp_nodeprep, out, outlen);
}

int mp_jid_resourceprep(const char *in, char *out, size_t outlen)
{
    return prep(in, strlen(in), stringprep_xmpp_resourceprep, out, outlen);
}

/* Checks a prepared (lowercased) DNS domain: non-empty labels of at most 63
 * bytes when ASCII, ASCII limited to letters, digits, '-' and '_'. */
static int domain_chars_ok(const char *d)
{
    size_t label = 0;
    int ascii = 1;
    for (const unsigned char *p = (const unsigned char *)d;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || (ascii && label > 63))
                return 0;
            if (*p == '\0')
                return 1;
            label = 0;
            ascii = 1;
            continue;
        }
        label++;
        if (*p >= 0x80)
            ascii = 0;
        else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    }
}

/* Normalises a domainpart of len bytes: strips one trailing dot, accepts
 * [IPv6] literals (written back in canonical form), else Nameprep. */
static int domain_prep(const char *in, size_t len, char *out, size_t outlen)
{
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0)
        return MAGPIE_ERR;
    if (in[0] == '[') {
        char addr[64];
        unsigned char bin[16];
        if (len < 3 || in[len - 1] != ']' || len - 2 >= sizeof(addr))
            return MAGPIE_ERR;
        memcpy(addr, in + 1, len - 2);
        addr[len - 2] = '\0';
        if (inet_pton(AF_INET6, addr, bin) != 1)
            return MAGPIE_ERR;
        if (!inet_ntop(AF_INET6, bin, addr, sizeof(addr)))
            return MAGPIE_ERR;
        size_t n = strlen(addr);
        if (n + 3 > outlen)
            return MAGPIE_ERR;
        out[0] = '[';
        memcpy(out + 1, addr, n);
        out[n + 1] = ']';
        out[n + 2] = '\0';
        return MAGPIE_OK;
    }
    if (prep(in, len, stringprep_nameprep, out, outlen) != MAGPIE_OK)
        return MAGPIE_ERR;
    return domain_chars_ok(out) ? MAGPIE_OK : MAGPIE_ERR;
}

int mp_jid_nameprep(const char *in, char *out, size_t outlen)
{
    return domain_prep(in, strlen(in), out, outlen);
}

/* Fills jid from prepared parts (local/resource may be NULL), allocating
 * its single buffer. */
static void jid_build(mp_jid *jid, const char *local, const char *domain, const char *resource)
{
    size_t ll = local ? strlen(local) : 0, dl = strlen(domain);
    size_t rl = resource ? strlen(resource) : 0;
    size_t bl = (local ? ll + 1 : 0) + dl;
    size_t fl = bl + (resource ? rl + 1 : 0);
    char *b = mp_malloc((local ? ll + 1 : 0) + dl + 1 + (resource ? rl + 1 : 0) + bl + 1 + fl + 1);
    char *p = b;
    jid->buf_ = b;
    jid->local = NULL;
    jid->resource = NULL;
    if (local) {
        jid->local = p;
        memcpy(p, local, ll + 1);
        p += ll + 1;
    }
    jid->domain = p;
    memcpy(p, domain, dl + 1);
    p += dl + 1;
    if (resource) {
        jid->resource = p;
        memcpy(p, resource, rl + 1);
        p += rl + 1;
    }
    jid->bare = p;
    if (local) {
        memcpy(p, local, ll);
        p[ll] = '@';
        memcpy(p + ll + 1, domain, dl + 1);
    } else {
        memcpy(p, domain, dl + 1);
    }
    p += bl + 1;
    jid->full = p;
    memcpy(p, jid->bare, bl);
    if (resource) {
        p[bl] = '/';
        memcpy(p + bl + 1, resource, rl + 1);
    } else {
        p[bl] = '\0';
    }
}

/* Prepares the three raw parts (lengths given; local/resource NULL when
 * absent) and builds jid. */
static int jid_from_parts(mp_jid *jid, const char *l, size_t ll, const char *d, size_t dl,
                          const char *r, size_t rl)
{
    char local[MP_JID_PART_MAX + 1], domain[MP_JID_PART_MAX + 1];
    char resource[MP_JID_PART_MAX + 1];
    if (l && prep(l, ll, stringprep_xmpp_nodeprep, local, sizeof(local)) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (domain_prep(d, dl, domain, sizeof(domain)) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (r && prep(r, rl, stringprep_xmpp_resourceprep, resource, sizeof(resource)) != MAGPIE_OK)
        return MAGPIE_ERR;
    jid_build(jid, l ? local : NULL, domain, r ? resource : NULL);
    return MAGPIE_OK;
}

int mp_jid_parse(mp_jid *jid, const char *s)
{
    memset(jid, 0, sizeof(*jid));
    if (!s)
        return MAGPIE_ERR;
    const char *slash = strchr(s, '/');
    size_t before = slash ? (size_t)(slash - s) : strlen(s);
    const char *at = memchr(s, '@', before);
    const char *l = NULL, *d = s, *r = NULL;
    size_t ll = 0, dl = before, rl = 0;
    if (at) {
        l = s;
        ll = (size_t)(at - s);
        d = at + 1;
        dl = before - ll - 1;
    }
    if (slash) {
        r = slash + 1;
        rl = strlen(r);
    }
    /* an empty part behind a separator is an error: prep() refuses len 0 */
    return jid_from_parts(jid, l, ll, d, dl, r, rl);
}

int mp_jid_set(mp_jid *jid, const char *local, const char *domain, const char *resource)
{
    memset(jid, 0, sizeof(*jid));
    if (!domain)
        return MAGPIE_ERR;
    return jid_from_parts(jid, local, local ? strlen(local) : 0, domain, strlen(domain), resource,
                          resource ? strlen(resource) : 0);
}

int mp_jid_copy(mp_jid *dst, const mp_jid *src)
{
    memset(dst, 0, sizeof(*dst));
    if (!src->domain)
        return MAGPIE_ERR;
    jid_build(dst, src->local, src->domain, src->resource);
    return MAGPIE_OK;
}

void mp_jid_free(mp_jid *jid)
{
    free(jid->buf_);
    memset(jid, 0, sizeof(*jid));
}
