/* fuzz_xmlstream.c - libFuzzer target: the XMPP stream parser fed one byte
 * at a time, with the default limits (docs/fuzzing.md).
 *
 * The input is a client's byte stream. It is parsed twice: in one feed,
 * and one byte per mp_xmlstream_feed call, releasing the parser after
 * every '>' (as c2s does on idle streams) and restarting the stream after
 * <auth/> and <starttls/>. Checked (abort() on failure, so libFuzzer
 * reports it with the input):
 *   - the memory bound of fuzz_common.h after every feed and for every
 *     stanza handed over (mp_xmlstream_memory, mp_stanza_size);
 *   - every stanza serialises and parses back to the same tree;
 *   - the byte-at-a-time run reports a prefix of the one-feed run's events
 *     (the same events when neither fails) and the same error.
 * Build and run: tests/fuzz/run.sh (or see docs/fuzzing.md). */
#include "fuzz_common.h"

#include <stdlib.h>

static size_t one_byte(void *state)
{
    (void)state;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct mp_xml_limits defaults; /* all 0: the parser's defaults */
    struct fuzz_log whole = {0}, bytes = {0};
    struct fuzz_stream_opts o = {.lim = &defaults, .reset_on_auth = 1};

    fuzz_run_stream(data, size, &o, &whole);
    o.release = 1;
    o.next = one_byte;
    fuzz_run_stream(data, size, &o, &bytes);
    fuzz_compare_runs(&whole, &bytes);
    free(whole.buf);
    free(bytes.buf);
    return 0;
}
