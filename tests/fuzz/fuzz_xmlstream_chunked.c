/* fuzz_xmlstream_chunked.c - libFuzzer target: the XMPP stream parser fed
 * in chunks of random sizes (docs/fuzzing.md).
 *
 * Input: 3 control bytes, then the client's byte stream.
 *   byte 0, flags: bit 0 small limits (2 KiB stanzas, depth 6, 6
 *           attributes of 200 bytes, text 300 bytes) instead of the
 *           defaults, so the limit paths are reached with short inputs;
 *           bit 1 mp_xmlstream_stop after every stanza (the caller then
 *           re-feeds the rest); bit 2 mp_xmlstream_release after feeds
 *           ending in '>'. The stream is always restarted after <auth/>
 *           and <starttls/>, as c2s does.
 *   bytes 1-2: seed of the chunk sizes (mostly 1..16 bytes, one in four
 *           1..4096).
 * The stream is parsed in one feed and in chunks; checked as in
 * fuzz_xmlstream.c: memory bound, round trip, same events and error. */
#include "fuzz_common.h"

#include <stdlib.h>

static size_t next_chunk(void *state)
{
    uint32_t *seed = state;
    *seed = *seed * 1103515245u + 12345u;
    uint32_t r = *seed >> 8;
    return (r & 3) == 0 ? 1 + (r >> 2) % 4096 : 1 + (r >> 2) % 16;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct mp_xml_limits defaults;
    static const struct mp_xml_limits small = {
        .max_stanza = 2048, .max_depth = 6, .max_attrs = 6, .max_attr_len = 200, .max_text = 300};
    if (size < 3)
        return 0;
    unsigned flags = data[0];
    uint32_t seed = data[1] | (uint32_t)data[2] << 8;
    data += 3;
    size -= 3;

    struct fuzz_log whole = {0}, chunked = {0};
    struct fuzz_stream_opts o = {.lim = (flags & 1) ? &small : &defaults,
                                 .reset_on_auth = 1,
                                 .stop_each = (flags & 2) != 0};
    fuzz_run_stream(data, size, &o, &whole);
    o.release = (flags & 4) != 0;
    o.next = next_chunk;
    o.next_state = &seed;
    fuzz_run_stream(data, size, &o, &chunked);
    fuzz_compare_runs(&whole, &chunked);
    free(whole.buf);
    free(chunked.buf);
    return 0;
}
