/* mgw.h - the Magpie device gateway SDK: the device side of the MGW
 * protocol (xep/x-gateway/spec.md) in portable C99.
 *
 * No dynamic allocation: a device is one struct mgw (about 2.3 KiB with the
 * defaults), placed wherever the firmware likes (static, stack). The SDK
 * depends only on the callbacks of struct mgw_config (send, recv, random)
 * and on the bundled HMAC-SHA-256 (mgw_sha256.c).
 *
 * Use:
 *   static struct mgw dev;
 *   mgw_init(&dev, &cfg);            once; the de-duplication ring lives in
 *                                    dev and survives reconnects
 *   (open a TCP connection)
 *   mgw_connect(&dev, now_ms);       sends HELLO
 *   loop: mgw_poll(&dev, now_ms)     reads through cfg.recv, handles frames,
 *                                    sends heartbeats; a negative return
 *                                    means: close the socket, reconnect
 *                                    later (with backoff) and call
 *                                    mgw_connect again.
 *   Or, with your own reading: mgw_input(&dev, bytes, n, now_ms) and
 *   mgw_tick(&dev, now_ms).
 *
 * Commands reach cfg.on_command at most once per msg_id, however often the
 * server sends them again (spec section 7). on_command returns a result
 * (MGW_RESULT_*), which is sent in the ACK, or MGW_DEFER: the device ACKs
 * later with mgw_ack(). All callbacks run inside mgw_poll/mgw_input. */
#ifndef MGW_H
#define MGW_H

#include <stddef.h>
#include <stdint.h>

#include "mgw_sha256.h"

#ifndef MGW_MAX_BODY
#define MGW_MAX_BODY 1024 /* largest frame body sent or received */
#endif
#ifndef MGW_DEDUP
#define MGW_DEDUP 32 /* msg_ids remembered for de-duplication */
#endif
#define MGW_ID_MAX       64
#define MGW_VERSION      1
#define MGW_HANDSHAKE_MS 15000 /* time allowed for the handshake */

/* Return codes. */
#define MGW_OK          0
#define MGW_ERR_IO      (-1) /* send or recv failed, or the peer closed */
#define MGW_ERR_PROTO   (-2) /* the server sent something invalid */
#define MGW_ERR_AUTH    (-3) /* AUTH_FAILED, or the server's proof was wrong */
#define MGW_ERR_TIMEOUT (-4) /* the server was silent for too long */
#define MGW_ERR_CLOSED  (-5) /* the server sent ERROR or BYE */
#define MGW_ERR_STATE   (-6) /* not connected / not ready */
#define MGW_ERR_ARG     (-7) /* bad argument (too large, bad id) */

/* Frame types (spec section 3). */
enum {
    MGW_HELLO = 0x01,
    MGW_CHALLENGE = 0x02,
    MGW_AUTH = 0x03,
    MGW_WELCOME = 0x04,
    MGW_PING = 0x05,
    MGW_PONG = 0x06,
    MGW_COMMAND = 0x07,
    MGW_ACK = 0x08,
    MGW_UPLINK = 0x09,
    MGW_ERROR = 0x0A,
    MGW_BYE = 0x0B,
};

/* ACK results (spec section 5.2) and ERROR codes (section 8.1). */
enum {
    MGW_RESULT_DONE = 0,
    MGW_RESULT_REJECTED = 1,
    MGW_RESULT_FAILED = 2,
    MGW_RESULT_UNSUPPORTED = 3,
};
#define MGW_DEFER 0x100 /* on_command: "I will call mgw_ack later" */
enum {
    MGW_E_MALFORMED = 1,
    MGW_E_UNKNOWN_TYPE = 2,
    MGW_E_AUTH_FAILED = 3,
    MGW_E_OVERSIZE = 4,
    MGW_E_VERSION = 5,
    MGW_E_STATE = 6,
    MGW_E_TIMEOUT = 7,
    MGW_E_REPLACED = 8,
    MGW_E_UNAVAILABLE = 9,
};

enum mgw_state { MGW_S_IDLE = 0, MGW_S_HELLO, MGW_S_AUTH, MGW_S_READY, MGW_S_CLOSED };

struct mgw;

struct mgw_config {
    const char *device_id; /* 1..64 of a-z 0-9 . _ - */
    const uint8_t *secret; /* the provisioned secret */
    size_t secret_len;
    /* Writes all len bytes (or fails): 0, or < 0 on error. */
    int (*send)(void *io, const uint8_t *buf, size_t len);
    /* Reads up to cap bytes without blocking: > 0 bytes read, 0 nothing
     * now, < 0 closed or failed. Only mgw_poll uses it. */
    int (*recv)(void *io, uint8_t *buf, size_t cap);
    /* Fills buf with n random bytes (hardware RNG if there is one). */
    void (*random)(void *io, uint8_t *buf, size_t n);
    /* A new command (never one already handled). Returns MGW_RESULT_* or
     * MGW_DEFER. ttl: seconds left (0: no expiry). */
    int (*on_command)(void *app, struct mgw *d, uint32_t msg_id, const uint8_t *payload, size_t len,
                      uint16_t ttl);
    /* Optional: the server acknowledged uplink msg_id. */
    void (*on_uplink_ack)(void *app, struct mgw *d, uint32_t msg_id, uint8_t result);
    /* Optional: the server sent ERROR (code, text) or BYE (code = 0,
     * text = NULL) and will close. */
    void (*on_close)(void *app, struct mgw *d, int code, const char *text, size_t len);
    /* Optional: the connection is ready (WELCOME checked). */
    void (*on_ready)(void *app, struct mgw *d);
    void *io;  /* passed to send/recv/random */
    void *app; /* passed to the on_* callbacks */
};

struct mgw_seen {
    uint32_t id;     /* 0: empty slot */
    uint16_t result; /* MGW_RESULT_* or MGW_DEFER while in progress */
};

struct mgw {
    const struct mgw_config *cfg;
    enum mgw_state state;
    uint8_t version;
    uint8_t cnonce[16], snonce[16];
    uint16_t heartbeat; /* seconds, from WELCOME */
    uint16_t max_body;  /* from WELCOME, capped at MGW_MAX_BODY */
    uint32_t last_rx_ms, last_tx_ms, started_ms;
    uint32_t uplink_next;
    size_t rx_len;
    uint8_t rx[3 + MGW_MAX_BODY];
    uint8_t tx[3 + MGW_MAX_BODY];
    struct mgw_seen seen[MGW_DEDUP];
    unsigned seen_next;
    /* statistics */
    uint32_t commands, duplicates, acks_sent;
};

/* Initialises d for cfg (kept by pointer). Clears the de-duplication ring. */
void mgw_init(struct mgw *d, const struct mgw_config *cfg);
/* Starts a connection on a freshly connected socket: resets the
 * connection state (not the ring) and sends HELLO. */
int mgw_connect(struct mgw *d, uint32_t now_ms);
/* Feeds received bytes. Returns MGW_OK or a negative MGW_ERR_* after which
 * the connection must be closed (an ERROR frame has been sent when the
 * fault was the server's). */
int mgw_input(struct mgw *d, const uint8_t *data, size_t len, uint32_t now_ms);
/* Sends a PING when due; MGW_ERR_TIMEOUT when the server is silent for
 * 2.5 heartbeats or the handshake takes too long. */
int mgw_tick(struct mgw *d, uint32_t now_ms);
/* Reads everything cfg.recv has, then mgw_tick. */
int mgw_poll(struct mgw *d, uint32_t now_ms);
/* ACKs a command (after on_command returned MGW_DEFER). Remembers the
 * result for duplicates; sends the ACK if connected (else the next
 * duplicate from the server gets it). */
int mgw_ack(struct mgw *d, uint32_t msg_id, int result);
/* Sends an UPLINK; *msg_id (may be NULL) receives its id. */
int mgw_uplink(struct mgw *d, const uint8_t *payload, size_t len, uint32_t *msg_id);
/* Sends UPLINK again with a given msg_id (after a reconnect). */
int mgw_uplink_id(struct mgw *d, uint32_t msg_id, const uint8_t *payload, size_t len);
int mgw_ping(struct mgw *d, uint32_t now_ms);
/* Orderly close: sends BYE(reason); close the socket afterwards. */
int mgw_bye(struct mgw *d, uint8_t reason);
/* 1 once WELCOME was checked. */
int mgw_ready(const struct mgw *d);

/* Builds one frame into out (cap bytes): returns its size, or 0 if it does
 * not fit. For tests and for tools that speak the protocol directly. */
size_t mgw_frame(uint8_t *out, size_t cap, uint8_t type, const uint8_t *body, size_t len);

#endif
