/* test_sdk.c - the device SDK (sdk/): its SHA-256 and HMAC-SHA-256 against
 * OpenSSL and RFC 4231, and the protocol side against the test vectors of
 * xep/x-gateway/spec.md section 10 (handshake, commands, de-duplication,
 * heartbeats, bad frames), with in-memory send/recv. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "mgw.h"

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;
    for (; *h; h++) {
        int v;
        if (*h >= '0' && *h <= '9')
            v = *h - '0';
        else if (*h >= 'a' && *h <= 'f')
            v = *h - 'a' + 10;
        else
            continue;
        if (hi < 0) {
            hi = v;
        } else {
            assert_true(n < cap);
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    return n;
}

/* ---- SHA-256 and HMAC ---- */

static void test_sha256_known(void **state)
{
    (void)state;
    uint8_t out[32], want[32];
    struct mgw_sha256 c;
    mgw_sha256_init(&c);
    mgw_sha256_update(&c, "abc", 3);
    mgw_sha256_final(&c, out);
    unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want, 32);
    assert_memory_equal(out, want, 32);
    mgw_sha256_init(&c);
    mgw_sha256_final(&c, out);
    unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", want, 32);
    assert_memory_equal(out, want, 32);
    /* one million 'a' (FIPS 180-2 appendix B.3), fed in odd pieces */
    static uint8_t a[1000];
    memset(a, 'a', sizeof a);
    mgw_sha256_init(&c);
    for (int i = 0; i < 1000; i++) {
        mgw_sha256_update(&c, a, 333);
        mgw_sha256_update(&c, a, 667);
    }
    mgw_sha256_final(&c, out);
    unhex("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", want, 32);
    assert_memory_equal(out, want, 32);
}

/* Every length 0..300 (all padding cases), in one piece and in chunks. */
static void test_sha256_vs_openssl(void **state)
{
    (void)state;
    uint8_t data[300], out[32], want[32];
    assert_int_equal(RAND_bytes(data, sizeof data), 1);
    for (size_t len = 0; len <= sizeof data; len++) {
        SHA256(data, len, want);
        struct mgw_sha256 c;
        mgw_sha256_init(&c);
        mgw_sha256_update(&c, data, len);
        mgw_sha256_final(&c, out);
        assert_memory_equal(out, want, 32);
        mgw_sha256_init(&c);
        for (size_t i = 0; i < len; i += 7)
            mgw_sha256_update(&c, data + i, len - i < 7 ? len - i : 7);
        mgw_sha256_final(&c, out);
        assert_memory_equal(out, want, 32);
    }
}

/* RFC 4231 section 4: test cases 1-4, 6 and 7 (5 is a truncated output). */
static void test_hmac_rfc4231(void **state)
{
    (void)state;
    static const struct {
        const char *key, *data, *mac;
    } v[] = {
        {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
         "dddddddddddd",
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {"0102030405060708090a0b0c0d0e0f10111213141516171819",
         "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
         "cdcdcdcdcdcd",
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368"
         "204b6579204669727374",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a"
         "65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865"
         "206b6579206e6565647320746f20626520686173686564206265666f7265206265696e672075736564206279"
         "2074686520484d414320616c676f726974686d2e",
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t key[200], data[300], want[32], out[32];
        size_t kl = unhex(v[i].key, key, sizeof key), dl = unhex(v[i].data, data, sizeof data);
        unhex(v[i].mac, want, 32);
        mgw_hmac_sha256(key, kl, data, dl, out);
        assert_memory_equal(out, want, 32);
    }
}

static void test_hmac_vs_openssl(void **state)
{
    (void)state;
    uint8_t key[200], data[500], out[32], want[32];
    unsigned int wl;
    assert_int_equal(RAND_bytes(key, sizeof key), 1);
    assert_int_equal(RAND_bytes(data, sizeof data), 1);
    for (size_t kl = 0; kl <= sizeof key; kl += 13)
        for (size_t dl = 0; dl <= sizeof data; dl += 31) {
            HMAC(EVP_sha256(), key, (int)kl, data, dl, want, &wl);
            mgw_hmac_sha256(key, kl, data, dl, out);
            assert_memory_equal(out, want, 32);
        }
    assert_true(mgw_ct_equal(out, want, 32));
    out[31] ^= 1;
    assert_false(mgw_ct_equal(out, want, 32));
}

/* ---- the protocol, in memory ---- */

#define HELLO     "001d014d470101a0a1a2a3a4a5a6a7a8a9aaabacadaeaf07766d2d30303432"
#define CHALLENGE "00120201b0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
#define AUTH      "002103fbecdc41fe04556b5d425d23f6e1e8e4bb43ca008e61f62de1ac443b0c5945e9"
#define WELCOME   "002504001e04009e70048e30b0238b4fad3d23167e788ab7a6e0bbea2907a8365519169dce9aea"
#define COMMAND7  "00120700000007012c76656e643a736c6f743d34"
#define ACK7      "0006080000000700"

struct fake {
    uint8_t out[4096]; /* what the SDK sent */
    size_t out_len;
    int calls; /* on_command calls */
    uint32_t last_id;
    char last_payload[64];
    int result; /* what on_command returns */
    int closed_code;
};

static int f_send(void *io, const uint8_t *buf, size_t len)
{
    struct fake *f = io;
    assert_true(f->out_len + len <= sizeof f->out);
    memcpy(f->out + f->out_len, buf, len);
    f->out_len += len;
    return 0;
}

static int f_recv(void *io, uint8_t *buf, size_t cap)
{
    (void)io;
    (void)buf;
    (void)cap;
    return 0;
}

static void f_random(void *io, uint8_t *buf, size_t n)
{
    (void)io;
    for (size_t i = 0; i < n; i++) /* the spec's cnonce a0..af */
        buf[i] = (uint8_t)(0xa0 + i);
}

static int f_command(void *app, struct mgw *d, uint32_t id, const uint8_t *p, size_t len,
                     uint16_t ttl)
{
    (void)d;
    (void)ttl;
    struct fake *f = app;
    f->calls++;
    f->last_id = id;
    snprintf(f->last_payload, sizeof f->last_payload, "%.*s", (int)len, (const char *)p);
    return f->result;
}

static void f_close(void *app, struct mgw *d, int code, const char *text, size_t len)
{
    (void)d;
    (void)text;
    (void)len;
    ((struct fake *)app)->closed_code = code;
}

static const uint8_t secret[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static struct fake F;
static struct mgw D;
static const struct mgw_config CFG = {
    .device_id = "vm-0042",
    .secret = secret,
    .secret_len = sizeof secret,
    .send = f_send,
    .recv = f_recv,
    .random = f_random,
    .on_command = f_command,
    .on_close = f_close,
    .io = &F,
    .app = &F,
};

/* Asserts the SDK sent exactly hex since the last call, and forgets it. */
static void sent(const char *hex)
{
    uint8_t want[512];
    size_t n = unhex(hex, want, sizeof want);
    assert_int_equal(F.out_len, n);
    assert_memory_equal(F.out, want, n);
    F.out_len = 0;
}

static int feed(const char *hex, uint32_t now)
{
    uint8_t b[2048];
    size_t n = unhex(hex, b, sizeof b);
    return mgw_input(&D, b, n, now);
}

/* Connects and completes the handshake of the spec's vectors. */
static void handshake(void)
{
    assert_int_equal(mgw_connect(&D, 0), MGW_OK);
    sent(HELLO);
    assert_int_equal(feed(CHALLENGE, 10), MGW_OK);
    sent(AUTH);
    assert_false(mgw_ready(&D));
    assert_int_equal(feed(WELCOME, 20), MGW_OK);
    sent("");
    assert_true(mgw_ready(&D));
    assert_int_equal(D.heartbeat, 30);
    assert_int_equal(D.max_body, 1024);
}

static int setup_dev(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    mgw_init(&D, &CFG);
    return 0;
}

static void test_handshake_vectors(void **state)
{
    (void)state;
    handshake();
}

static void test_command_ack_and_duplicates(void **state)
{
    (void)state;
    handshake();
    assert_int_equal(feed(COMMAND7, 30), MGW_OK);
    assert_int_equal(F.calls, 1);
    assert_int_equal(F.last_id, 7);
    assert_string_equal(F.last_payload, "vend:slot=4");
    sent(ACK7);
    /* the same command again (a retransmission): ACKed, not acted on */
    assert_int_equal(feed(COMMAND7, 40), MGW_OK);
    assert_int_equal(F.calls, 1);
    sent(ACK7);
    assert_int_equal(D.duplicates, 1);
    /* after a reconnect the ring is kept: still not acted on */
    handshake();
    assert_int_equal(feed(COMMAND7, 50), MGW_OK);
    assert_int_equal(F.calls, 1);
    sent(ACK7);
}

static void test_deferred_ack(void **state)
{
    (void)state;
    handshake();
    F.result = MGW_DEFER;
    assert_int_equal(feed(COMMAND7, 30), MGW_OK);
    assert_int_equal(F.calls, 1);
    sent(""); /* no ACK yet */
    /* connection lost before the ACK; the server sends it again */
    handshake();
    assert_int_equal(feed(COMMAND7, 30), MGW_OK);
    assert_int_equal(F.calls, 1);
    sent(""); /* still working on it */
    assert_int_equal(mgw_ack(&D, 7, MGW_RESULT_REJECTED), MGW_OK);
    sent("0006080000000701");
    assert_int_equal(feed(COMMAND7, 40), MGW_OK);
    sent("0006080000000701"); /* the stored result */
    assert_int_equal(F.calls, 1);
}

/* Frames split at every byte, and several frames in one read. */
static void test_split_and_batched_input(void **state)
{
    (void)state;
    uint8_t b[256];
    assert_int_equal(mgw_connect(&D, 0), MGW_OK);
    sent(HELLO);
    size_t n = unhex(CHALLENGE, b, sizeof b);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mgw_input(&D, b + i, 1, 1), MGW_OK);
    sent(AUTH);
    assert_int_equal(feed(WELCOME COMMAND7 "0015070000000900000000000000000000000000000000", 2),
                     MGW_OK);
    assert_int_equal(F.calls, 2);
    assert_int_equal(F.last_id, 9);
    sent(ACK7 "0006080000000900");
}

static void test_heartbeat_and_timeout(void **state)
{
    (void)state;
    handshake(); /* last frame sent at 0 ms, received at 20 ms */
    assert_int_equal(mgw_tick(&D, 29999), MGW_OK);
    sent("");
    assert_int_equal(mgw_tick(&D, 30000), MGW_OK);
    sent("000105"); /* PING: 3 bytes */
    assert_int_equal(feed("000106", 30010), MGW_OK);
    /* a PING from the server is answered */
    assert_int_equal(feed("000105", 30020), MGW_OK);
    sent("000106");
    assert_int_equal(mgw_tick(&D, 30020 + 75000), MGW_OK); /* 2.5 x 30 s: not yet */
    F.out_len = 0;
    assert_int_equal(mgw_tick(&D, 30020 + 75001), MGW_ERR_TIMEOUT);
    sent("00020a07");
}

static void test_bad_server_proof(void **state)
{
    (void)state;
    assert_int_equal(mgw_connect(&D, 0), MGW_OK);
    assert_int_equal(feed(CHALLENGE, 1), MGW_OK);
    F.out_len = 0;
    /* WELCOME with the last mac byte changed */
    assert_int_equal(
        feed("002504001e04009e70048e30b0238b4fad3d23167e788ab7a6e0bbea2907a8365519169dce9aeb", 2),
        MGW_ERR_AUTH);
    sent("00020a03");
    assert_false(mgw_ready(&D));
    /* nothing is accepted afterwards */
    assert_int_equal(feed(COMMAND7, 3), MGW_ERR_STATE);
    assert_int_equal(F.calls, 0);
}

static void test_bad_frames(void **state)
{
    (void)state;
    handshake();
    assert_int_equal(feed("000142", 30), MGW_ERR_PROTO); /* unknown type */
    sent("00020a02");
    handshake();
    assert_int_equal(feed("00020500", 30), MGW_ERR_PROTO); /* PING with a body */
    sent("00020a01");
    handshake();
    assert_int_equal(feed("0000", 30), MGW_ERR_PROTO); /* length 0 */
    sent("00020a01");
    handshake();
    assert_int_equal(feed("0402", 30), MGW_ERR_PROTO); /* body 1025 > max_body */
    sent("00020a04");
    handshake();
    assert_int_equal(feed("000d0a0361757468206661696c6564", 30), MGW_ERR_AUTH);
    assert_int_equal(F.closed_code, MGW_E_AUTH_FAILED);
    handshake();
    assert_int_equal(feed("00020b01", 30), MGW_ERR_CLOSED); /* BYE */
    /* a COMMAND before WELCOME */
    assert_int_equal(mgw_connect(&D, 0), MGW_OK);
    F.out_len = 0;
    assert_int_equal(feed(COMMAND7, 1), MGW_ERR_PROTO);
    sent("00020a06");
    assert_int_equal(F.calls, 0);
}

static void test_uplink(void **state)
{
    (void)state;
    handshake();
    D.uplink_next = 1;
    uint32_t id = 0;
    assert_int_equal(mgw_uplink(&D, (const uint8_t *)"temp=4.5", 8, &id), MGW_OK);
    assert_int_equal(id, 1);
    sent("000d090000000174656d703d342e35");
    uint8_t big[1100] = {0};
    assert_int_equal(mgw_uplink(&D, big, 1021, NULL), MGW_ERR_ARG); /* 4 + 1021 > 1024 */
    assert_int_equal(mgw_uplink(&D, big, 1020, NULL), MGW_OK);
    F.out_len = 0;
    assert_int_equal(feed("0006080000000100", 40), MGW_OK); /* server ACK */
    assert_int_equal(mgw_bye(&D, 2), MGW_OK);
    sent("00020b02");
}

/* The ring forgets the oldest ids: spec §7 (N >= 2 x window). */
static void test_ring_size(void **state)
{
    (void)state;
    handshake();
    char hex[64];
    for (uint32_t id = 1; id <= MGW_DEDUP; id++) {
        snprintf(hex, sizeof hex, "000707%08x0000", (unsigned)id);
        assert_int_equal(feed(hex, 30), MGW_OK);
    }
    assert_int_equal(F.calls, MGW_DEDUP);
    for (uint32_t id = 1; id <= MGW_DEDUP; id++) {
        snprintf(hex, sizeof hex, "000707%08x0000", (unsigned)id);
        assert_int_equal(feed(hex, 30), MGW_OK);
    }
    assert_int_equal(F.calls, MGW_DEDUP); /* all remembered */
    snprintf(hex, sizeof hex, "000707%08x0000", (unsigned)MGW_DEDUP + 1);
    assert_int_equal(feed(hex, 30), MGW_OK);
    assert_int_equal(feed("00070700000001"
                          "0000",
                          30),
                     MGW_OK); /* id 1 evicted */
    assert_int_equal(F.calls, MGW_DEDUP + 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known),
        cmocka_unit_test(test_sha256_vs_openssl),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_hmac_vs_openssl),
        cmocka_unit_test_setup(test_handshake_vectors, setup_dev),
        cmocka_unit_test_setup(test_command_ack_and_duplicates, setup_dev),
        cmocka_unit_test_setup(test_deferred_ack, setup_dev),
        cmocka_unit_test_setup(test_split_and_batched_input, setup_dev),
        cmocka_unit_test_setup(test_heartbeat_and_timeout, setup_dev),
        cmocka_unit_test_setup(test_bad_server_proof, setup_dev),
        cmocka_unit_test_setup(test_bad_frames, setup_dev),
        cmocka_unit_test_setup(test_uplink, setup_dev),
        cmocka_unit_test_setup(test_ring_size, setup_dev),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
