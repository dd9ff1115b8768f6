/* test_gw_vectors.c - the test vectors of xep/x-gateway/spec.md, checked
 * against OpenSSL. The expected values are read from the specification
 * itself, so the document cannot drift from what the code computes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SPEC TOP_SRCDIR "/xep/x-gateway/spec.md"

static char *spec;

static int setup(void **state)
{
    (void)state;
    FILE *f = fopen(SPEC, "rb");
    if (!f)
        return -1;
    spec = calloc(1, 1 << 20);
    size_t n = fread(spec, 1, (1 << 20) - 1, f);
    fclose(f);
    spec[n] = '\0';
    return n > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    free(spec);
    return 0;
}

/* Hex digits (spaces and '|' skipped) of the line in section 10 of the
 * spec that starts with label, decoded into out; stops at '(' or the end of the line.
 * Returns the byte count. */
static size_t spec_hex(const char *label, unsigned char *out, size_t cap)
{
    const char *p = strstr(spec, "## 10. Test vectors");
    assert_non_null(p);
    size_t ll = strlen(label), n = 0;
    for (;;) {
        p = strstr(p, label);
        assert_non_null(p);
        if (p == spec || p[-1] == '\n')
            break;
        p += ll;
    }
    p += ll;
    int hi = -1;
    for (; *p && *p != '\n' && *p != '('; p++) {
        if (!isxdigit((unsigned char)*p))
            continue;
        int v = isdigit((unsigned char)*p) ? *p - '0' : (tolower((unsigned char)*p) - 'a' + 10);
        if (hi < 0) {
            hi = v;
        } else {
            assert_true(n < cap);
            out[n++] = (unsigned char)(hi << 4 | v);
            hi = -1;
        }
    }
    assert_int_equal(hi, -1);
    return n;
}

static const unsigned char secret[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                         11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                         22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static void check_mac(const char *in_label, const char *mac_label, unsigned char tag)
{
    unsigned char in[128], want[64], got[EVP_MAX_MD_SIZE];
    unsigned int gl = 0;
    size_t il = spec_hex(in_label, in, sizeof in);
    size_t wl = spec_hex(mac_label, want, sizeof want);
    assert_int_equal(wl, 32);
    /* the input is laid out as section 4.3/4.4 says */
    assert_int_equal(il, 1 + 1 + 16 + 16 + 1 + 7);
    assert_int_equal(in[0], tag);
    assert_int_equal(in[1], 1);
    assert_int_equal(in[34], 7);
    assert_memory_equal(in + 35, "vm-0042", 7);
    assert_non_null(HMAC(EVP_sha256(), secret, sizeof secret, in, il, got, &gl));
    assert_int_equal(gl, 32);
    assert_memory_equal(got, want, 32);
}

static void test_device_mac(void **state)
{
    (void)state;
    check_mac("device_input = ", "device mac   = ", 'D');
}

static void test_server_mac(void **state)
{
    (void)state;
    check_mac("server_input = ", "server_mac   = ", 'S');
}

/* The frames of section 10: length field = 1 + body, type as the table. */
static void test_frames(void **state)
{
    (void)state;
    static const struct {
        const char *label;
        unsigned type;
        size_t len;
    } fr[] = {
        {"HELLO      ", 0x01, 2 + 1 + 28}, {"CHALLENGE  ", 0x02, 2 + 1 + 17},
        {"AUTH       ", 0x03, 2 + 1 + 32}, {"WELCOME    ", 0x04, 2 + 1 + 36},
        {"PING       ", 0x05, 3},          {"PONG       ", 0x06, 3},
        {"COMMAND    ", 0x07, 2 + 1 + 17}, {"ACK        ", 0x08, 8},
        {"UPLINK     ", 0x09, 2 + 1 + 12}, {"ERROR      ", 0x0a, 2 + 1 + 12},
        {"BYE        ", 0x0b, 4},
    };
    unsigned char b[128];
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) {
        size_t n = spec_hex(fr[i].label, b, sizeof b);
        assert_int_equal(n, fr[i].len);
        assert_int_equal((size_t)(b[0] << 8 | b[1]), n - 2);
        assert_int_equal(b[2], fr[i].type);
    }
    /* heartbeat <= 4 bytes, command overhead <= 16 */
    assert_int_equal(spec_hex("PING       ", b, sizeof b), 3);
    assert_int_equal(spec_hex("COMMAND    ", b, sizeof b) - strlen("vend:slot=4"), 9);
    /* the AUTH frame carries the device mac, WELCOME the server mac */
    unsigned char mac[32];
    spec_hex("device mac   = ", mac, sizeof mac);
    spec_hex("AUTH       ", b, sizeof b);
    assert_memory_equal(b + 3, mac, 32);
    spec_hex("server_mac   = ", mac, sizeof mac);
    spec_hex("WELCOME    ", b, sizeof b);
    assert_memory_equal(b + 7, mac, 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_mac),
        cmocka_unit_test(test_server_mac),
        cmocka_unit_test(test_frames),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
