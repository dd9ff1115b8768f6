/* fuzz_common.h - helpers shared by the stream parser fuzz targets
 * (docs/fuzzing.md; built by tests/fuzz/run.sh).
 *
 * Memory bound. After every feed, and for every stanza handed over, the
 * targets check
 *
 *     bytes  <=  FUZZ_MEM_C * fed  +  FUZZ_MEM_E * elements  +  FUZZ_MEM_K
 *
 * where `bytes` is mp_xmlstream_memory() (or mp_stanza_size() of a stanza),
 * `fed` the input bytes given to the parser so far and `elements` the
 * number of '<' among them (an upper bound on the elements started). C is a
 * small constant per input byte (text, attribute values, names), E the
 * fixed cost of one tree node (sizeof(mp_xml) is 80 bytes: a 4-byte "<a/>"
 * costs ~20x, which is why element counts are capped rather than charged
 * per byte), K the parser's fixed overhead (expat's buffers and hash
 * tables, the first arena chunk). Anything that grows faster than the
 * input - e.g. text copied again for every piece expat hands over - breaks
 * the bound after a few kilobytes and aborts, so libFuzzer reports it.
 * The constants can be overridden with the environment variables
 * MAGPIE_FUZZ_MEM_C, MAGPIE_FUZZ_MEM_E and MAGPIE_FUZZ_MEM_K.
 *
 * Round trip. Every stanza is serialised (mp_xml_serialize) and parsed back
 * (mp_stanza_parse): it must parse, and to the same tree (names,
 * namespaces, attributes, text), both stand-alone and as written into a
 * jabber:client stream. */
#ifndef MAGPIE_FUZZ_COMMON_H
#define MAGPIE_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "xml/xmlstream.h"

/* Aborts with the failed condition, so libFuzzer reports the input. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Input accounting for the memory bound. */
struct fuzz_fed {
    uint64_t bytes; /* input bytes fed so far */
    uint64_t lts;   /* '<' among them */
};

/* Counts data[0..n) as fed. */
void fuzz_fed_add(struct fuzz_fed *f, const uint8_t *data, size_t n);
/* The bound for what was fed so far. */
uint64_t fuzz_mem_bound(const struct fuzz_fed *f);
/* Aborts with a message if bytes exceed the bound. what names the check. */
void fuzz_check_mem(const char *what, uint64_t bytes, const struct fuzz_fed *f);

/* Serialises st, re-parses it and compares the trees; aborts on a
 * mismatch or a serialisation that does not parse. */
void fuzz_check_roundtrip(const mp_stanza *st);

/* A canonical dump of an element tree (attributes sorted, adjacent text
 * nodes merged) as a malloc'd string; root_ns, if not NULL, replaces the
 * root element's namespace. */
char *fuzz_canon(const mp_xml *el, const char *root_ns);

/* ---- a stream parser driver shared by fuzz_xmlstream and
 * fuzz_xmlstream_chunked ---- */

struct fuzz_log {
    char *buf;
    size_t len, cap;
    const char *cond; /* error condition, NULL if none */
};

/* Returns the size of the next chunk to feed (>= 1). */
typedef size_t (*fuzz_chunker)(void *state);

struct fuzz_stream_opts {
    const struct mp_xml_limits *lim;
    int reset_on_auth; /* mp_xmlstream_reset on <auth/> and <starttls/>, as
                          c2s does after SASL success and TLS */
    int stop_each;     /* mp_xmlstream_stop after every stanza */
    int release;       /* mp_xmlstream_release after feeds that end in '>' */
    fuzz_chunker next; /* NULL: everything in one feed */
    void *next_state;
};

/* Parses data with a new parser, re-feeding what a stop or reset left
 * unconsumed, and checks the memory bound after every feed and the round
 * trip of every stanza. Events are logged into log (free log->buf). */
void fuzz_run_stream(const uint8_t *data, size_t size, const struct fuzz_stream_opts *o,
                     struct fuzz_log *log);

/* The chunked run's events must be a prefix of the whole run's, and the
 * error the same but for the differences chunking may legitimately cause.
 * Aborts otherwise. */
void fuzz_compare_runs(const struct fuzz_log *whole, const struct fuzz_log *chunked);

#endif
