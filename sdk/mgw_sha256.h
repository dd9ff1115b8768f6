/* mgw_sha256.h - a small SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104)
 * for devices: no allocation, no dependency, about 2 KiB of code.
 * Checked against OpenSSL and the RFC 4231 vectors (tests/unit/test_sdk.c). */
#ifndef MGW_SHA256_H
#define MGW_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define MGW_SHA256_LEN 32

struct mgw_sha256 {
    uint32_t h[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t buf[64];
    size_t used; /* bytes in buf */
};

void mgw_sha256_init(struct mgw_sha256 *c);
void mgw_sha256_update(struct mgw_sha256 *c, const void *data, size_t len);
void mgw_sha256_final(struct mgw_sha256 *c, uint8_t out[MGW_SHA256_LEN]);

struct mgw_hmac {
    struct mgw_sha256 inner, outer;
};

/* HMAC-SHA-256 in three steps (key of any length), or in one call. */
void mgw_hmac_init(struct mgw_hmac *h, const uint8_t *key, size_t key_len);
void mgw_hmac_update(struct mgw_hmac *h, const void *data, size_t len);
void mgw_hmac_final(struct mgw_hmac *h, uint8_t out[MGW_SHA256_LEN]);
void mgw_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                     uint8_t out[MGW_SHA256_LEN]);

/* 1 if a and b (n bytes) are equal, in time independent of their content. */
int mgw_ct_equal(const uint8_t *a, const uint8_t *b, size_t n);

#endif
