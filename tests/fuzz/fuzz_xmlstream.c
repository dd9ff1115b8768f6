/* fuzz_xmlstream.c - libFuzzer target for the stream parser (not built by
 * make). Build by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Iinclude -Isrc tests/fuzz/fuzz_xmlstream.c src/xml.c src/xmlstream.c \
 *     src/util.c -lexpat -levent -lcrypto -o /tmp/fuzz_xmlstream
 *
 * Differential: the input is parsed in one feed and again in chunks (sizes
 * taken from the first input bytes) with the parser released whenever
 * possible; the chunked run must report a prefix of the same events, and
 * the same error when both fail. Every stanza is also serialised and
 * re-parsed. */
#include "core.h"
#include "xmlstream.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct log {
    char *buf;
    size_t len, cap;
    const char *cond;
};

static void add(struct log *l, const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    if (l->len + n + 1 > l->cap) {
        l->cap = (l->len + n + 1) * 2;
        l->buf = realloc(l->buf, l->cap);
    }
    l->len += (size_t)sprintf(l->buf + l->len, "%s%s\n", a, b);
}

static void f_open(void *ud, mp_stanza *hdr, const char *ns)
{
    char *s = mp_xml_to_string(mp_stanza_root(hdr), NULL);
    add(ud, "open ", ns);
    add(ud, "", s);
    free(s);
}

static void f_stanza(void *ud, mp_stanza *st)
{
    char *s = mp_xml_to_string(mp_stanza_root(st), NULL);
    mp_stanza *again = mp_stanza_parse(s, strlen(s));
    if (!again) {
        fprintf(stderr, "serialised stanza does not parse: %s\n", s);
        abort();
    }
    char *s2 = mp_xml_to_string(mp_stanza_root(again), NULL);
    if (strcmp(s, s2) != 0)
        abort();
    add(ud, "stanza ", s);
    free(s);
    free(s2);
    mp_stanza_unref(again);
    mp_stanza_unref(st);
}

static void f_close(void *ud)
{
    add(ud, "close", "");
}

static void f_error(void *ud, const char *cond, const char *text)
{
    (void)text;
    ((struct log *)ud)->cond = cond;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct mp_xmlstream_cb cb = {f_open, f_stanza, f_close, f_error};
    struct mp_xml_limits lim = {2048, 6, 6, 200, 300};
    if (size < 2)
        return 0;
    unsigned seed = data[0] | (unsigned)data[1] << 8;
    data += 2;
    size -= 2;
    struct log a = {0}, b = {0};
    mp_xmlstream *p = mp_xmlstream_new(&lim, &cb, &a);
    mp_xmlstream_feed(p, (const char *)data, size, NULL);
    mp_xmlstream_free(p);

    p = mp_xmlstream_new(&lim, &cb, &b);
    size_t off = 0;
    while (off < size) {
        size_t n = 1 + (seed % 13);
        seed = seed * 1103515245u + 12345u;
        if (n > size - off)
            n = size - off;
        size_t used = 0;
        int rc = mp_xmlstream_feed(p, (const char *)data + off, n, &used);
        off += n;
        if (rc == MAGPIE_ERR)
            break;
        mp_xmlstream_release(p);
    }
    mp_xmlstream_free(p);
    if (b.len > a.len || (b.len && memcmp(a.buf, b.buf, b.len) != 0)) {
        fprintf(stderr, "whole:\n%.*s\nchunked:\n%.*s\n", (int)a.len, a.buf, (int)b.len, b.buf);
        abort();
    }
    /* Detection order may legitimately differ with chunking: text at
     * stream level is seen per chunk (bad-format vs a not-well-formed run
     * expat rejects whole), and a token straddling the size limit may be
     * parsed (its error found) in one run and not the other. */
    if (a.cond && b.cond && strcmp(a.cond, b.cond) != 0 && a.len == b.len &&
        strcmp(a.cond, "bad-format") != 0 && strcmp(b.cond, "bad-format") != 0 &&
        strcmp(a.cond, "policy-violation") != 0 && strcmp(b.cond, "policy-violation") != 0) {
        fprintf(stderr, "error differs: %s vs %s\n", a.cond, b.cond);
        abort();
    }
    free(a.buf);
    free(b.buf);
    return 0;
}
