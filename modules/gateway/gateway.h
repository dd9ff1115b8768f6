/* gateway.h - mod_gateway's own structures, shared by its three files:
 *   mod_gateway.c  options, load/unload, the XMPP side (the device domain)
 *   conn.c         the device listener and the MGW wire protocol
 *   queue.c        devices, their durable command queues, storage
 * The protocol is xep/x-gateway/spec.md; the operator's view docs/gateway.md.
 *
 * Threads. A device connection lives on the worker that accepted it; the
 * stanzas for one device JID run on the worker the core picks for that JID
 * (usually another one). All device state is therefore under one module
 * lock (G.lock), and work for a connection is posted to its loop
 * (gw_pump_on(dev->loop, dev)): a device (struct gw_dev)
 * lives until the module is unloaded, so it is a safe thing to post, and
 * dev->conn may only be dereferenced on dev->loop. Stanzas are routed
 * after the lock is released (struct gw_out). */
#ifndef MOD_GATEWAY_H
#define MOD_GATEWAY_H

#include <magpie/magpie.h>
#include <magpie/listener.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define GW_NS          "urn:x-magpie:gateway:0"
#define GW_NS_RECEIPTS "urn:xmpp:receipts"
#define GW_ID_MAX      64
#define GW_SECRET_MAX  64
#define GW_UPLINK_SEEN 16

/* storage (host = the gateway domain) */
#define GW_STORE_DEVICES "gateway_devices" /* keyval: id -> "1 <secret hex> [owner ...]" */
#define GW_STORE_QUEUE   "gateway_queue"   /* archive: id -> commands, in order */
#define GW_STORE_DONE    "gateway_done"    /* keyval: "<id>/<archive id>" -> final state
                                              (before 2026-12-02; converted at start-up) */
#define GW_STORE_IDEM    "gateway_idem"    /* keyval: idempotency key -> "<command id> <device>
                                              [<time recorded us>]" */
#define GW_STORE_STATUS  "gateway_status"  /* keyval: command id -> its end (submit.c);
                                              present = the command ended */
#define GW_STORE_HOOK    "gateway_hook"    /* keyval: command id -> fallback webhook state */

enum gw_frame {
    GW_HELLO = 1,
    GW_CHALLENGE,
    GW_AUTH,
    GW_WELCOME,
    GW_PING,
    GW_PONG,
    GW_COMMAND,
    GW_ACK,
    GW_UPLINK,
    GW_ERROR,
    GW_BYE,
};
enum gw_error {
    GW_E_MALFORMED = 1,
    GW_E_UNKNOWN_TYPE,
    GW_E_AUTH_FAILED,
    GW_E_OVERSIZE,
    GW_E_VERSION,
    GW_E_STATE,
    GW_E_TIMEOUT,
    GW_E_REPLACED,
    GW_E_UNAVAILABLE,
};
enum gw_result { GW_R_DONE = 0, GW_R_REJECTED, GW_R_FAILED, GW_R_UNSUPPORTED };

/* One queued command (in memory; durable in GW_STORE_QUEUE). */
struct gw_cmd {
    struct gw_cmd *next;
    int64_t aid;        /* archive id; the wire msg_id is its low 32 bits */
    int64_t queued_us;  /* when accepted */
    int64_t expires_us; /* 0: never */
    struct gw_dev *dev; /* its device (set by gw_queue_insert) */
    size_t hidx;        /* 1 + its place in the expiry heap; 0: not there */
    uint64_t sent_conn; /* connection it was last sent on (0: not sent) */
    int64_t sent_us;    /* first sent (this run; 0: not yet) */
    unsigned sends;     /* how often it was sent */
    int want_receipt;
    char *sender; /* full JID, or "!http" / "!outbox" (no XMPP sender) */
    char *sid;    /* the message's id attribute, or the idempotency key of a
                     '!' sender, or NULL */
    size_t len;
    uint8_t payload[];
};

struct gw_conn;

/* One provisioned device. Never freed before unload. */
struct gw_dev {
    struct gw_dev *hnext;
    char id[GW_ID_MAX + 1];
    char *jid; /* id@domain (malloc'd: most of a fixed buffer would be unused) */
    /* provisioning record (GW_STORE_DEVICES) */
    uint8_t secret[GW_SECRET_MAX];
    size_t secret_len;
    char **owners;
    size_t n_owners;
    /* the queue: oldest first; finished archive ids awaiting compaction */
    struct gw_cmd *q;
    int64_t *done;
    size_t n_done, cap_done;
    /* the authenticated connection, if any (dereference on loop only) */
    struct gw_conn *conn;
    mp_loop *loop;
    uint64_t conn_id;
    /* uplink ids seen recently (de-duplication) */
    uint32_t up_seen[GW_UPLINK_SEEN];
    unsigned up_next;
};

/* Stanzas to route once the lock is released. */
struct gw_out {
    mp_stanza *st[64];
    size_t n;
};

struct gw_state {
    mp_module *m;
    const char *domain;
    int heartbeat, dead_after, handshake_timeout, max_body, window;
    /* HTTP API (api.c) */
    char **tokens; /* bearer tokens */
    size_t n_tokens;
    const char *hmac_key; /* "" or NULL: no signatures */
    /* fallback webhook (hook.c) */
    const char *hook_url;
    int hook_attempts;
    /* database outbox (outbox.c) */
    int outbox_on;
    long long ttl_default, ttl_max;
    long long retention; /* status_retention, seconds (0: keep forever; prune.c) */
    char **admins;
    size_t n_admins;
    pthread_mutex_t lock;
    struct gw_dev **tab;
    size_t tab_size, n_devs;
    uint64_t next_conn_id;
    /* commands with a ttl, a min-heap on expires_us (queue.c) */
    struct gw_cmd **heap;
    size_t n_heap, cap_heap;
    struct {
        mp_counter *accepted, *sent, *retried, *acked, *failed, *expired, *late_acks, *uplinks,
            *connects, *auth_failures, *bad_frames, *timeouts, *replaced, *forbidden, *latency_ms,
            *hooks, *hook_failures, *outbox_rows, *accept_us, *end_us, *pruned_status,
            *pruned_idem, *pruned_hooks;
    } c;
};
extern struct gw_state G;

/* queue.c (callers hold G.lock unless said otherwise) */
struct gw_dev *gw_dev_find(const char *id);
/* Parses a record and stores it in dev (created if needed); MAGPIE_OK/ERR. */
int gw_dev_set_record(const char *id, const char *rec, size_t len, struct gw_dev **out);
int gw_dev_is_owner(const struct gw_dev *d, const char *bare);
int gw_is_admin(const char *bare);
/* Loads every provisioned device and its pending commands (sync; load()). */
void gw_load_all(void);
void gw_free_all(void);
/* Inserts c in d's queue in archive-id order. */
void gw_queue_insert(struct gw_dev *d, struct gw_cmd *c);
/* A new command c is durable as archive row aid (lock not held; takes c):
 * counts it (accepted, accept latency), queues it on device dev and sends
 * it at once when dev is connected. 1, or 0 when dev is no longer known
 * (c is freed). */
int gw_queue_accepted(const char *dev, struct gw_cmd *c, int64_t aid);
/* Ends a command: unlinks it, records its final state, tells its sender
 * once that record is durable (from the storage callback, on the calling
 * loop; into out if storage refuses the job), compacts storage when the
 * queue is empty. Frees c. Must run on a worker loop. */
void gw_cmd_finish(struct gw_dev *d, struct gw_cmd *c, const char *state, int result,
                   struct gw_out *out);
/* Expires due commands (into out): pops the expiry heap (ordered by
 * expires_us), so it costs nothing while nothing is due. */
void gw_sweep(int64_t now_us, struct gw_out *out);
/* Compacts the ended rows of every device below its oldest pending
 * command, however few (for pruning: prune.c). */
void gw_compact_ended(void);
/* Serialises / parses the archive form of a command. */
void *gw_cmd_encode(const struct gw_cmd *c, size_t *len);
struct gw_cmd *gw_cmd_decode(int64_t aid, int64_t ts, const char *with, const void *data,
                             size_t len);
void gw_cmd_free(struct gw_cmd *c);
int64_t gw_now_us(void);
void gw_out_add(struct gw_out *o, mp_stanza *st);
/* Routes everything in o (call without the lock). */
void gw_out_flush(struct gw_out *o);

/* adhoc.c: the XEP-0050 commands send and status (server and gateway admins) */
int gw_adhoc_load(mp_module *m);

/* submit.c: commands from the HTTP API and the outbox */
enum {
    GW_SUBMIT_CREATED = 0, /* new command */
    GW_SUBMIT_EXISTS,      /* the key's command (dup) */
    GW_SUBMIT_CONFLICT,    /* the key belongs to a command of another device (dev) */
    GW_SUBMIT_NODEV,       /* no such device */
    GW_SUBMIT_ERR,         /* storage failed */
};
/* status; aid: the command id; dev: its device; dup: 1 when CREATED went
 * to a request that waited for another with the same key (report as
 * EXISTS). Runs on the caller's loop or a storage thread. */
typedef void (*gw_submit_cb)(void *ud, int status, int64_t aid, const char *dev, int dup);
/* Appends a command (durable before cb) for device dev. origin: "!http"
 * or "!outbox". key: idempotency key (NULL: none). ttl seconds (0: none).
 * Lock not held. */
void gw_submit(const char *dev, const char *origin, const char *key, const uint8_t *payload,
               size_t len, long long ttl, gw_submit_cb cb, void *ud);
/* At start-up (sync): re-records the key of a pending command. */
void gw_idem_repair(const struct gw_dev *d, const struct gw_cmd *c);
struct gw_status {
    int64_t aid;
    char dev[GW_ID_MAX + 1];
    char state[16]; /* queued sent acked failed expired */
    int result;     /* ACK result, -1 if none */
    int64_t queued_us, sent_us, ended_us, expires_us; /* 0: unknown / not yet */
};
/* rc MAGPIE_OK (st), MAGPIE_NOTFOUND or MAGPIE_ERR. Lock not held. */
typedef void (*gw_status_cb)(void *ud, int rc, const struct gw_status *st);
void gw_status(int64_t aid, gw_status_cb cb, void *ud);
/* Records c's end for status queries and for start-up (the record marks
 * c ended); cb (may be NULL) once it is durable. Lock held. MAGPIE_OK or
 * MAGPIE_ERR (storage refused: cb is not called). */
int gw_status_record(const struct gw_dev *d, const struct gw_cmd *c, const char *state,
                     int result, int64_t now_us, mp_store_done_cb cb, void *ud);

/* api.c: the HTTP routes */
int gw_api_load(mp_module *m);
void gw_api_unload(void);

/* hook.c: the fallback webhook */
int gw_hook_load(mp_module *m);
/* c expired (lock held): fire the webhook for it, once. */
void gw_hook_expired(const struct gw_dev *d, const struct gw_cmd *c);
void gw_hook_unload(void);
/* Posts the hooks left pending by the last run (on the calling loop). */
void gw_hook_resume(void);

/* outbox.c: the database outbox */
int gw_outbox_load(mp_module *m);
/* c, from the outbox, ended (lock held). */
void gw_outbox_ended(const struct gw_cmd *c, const char *state, int result);
void gw_outbox_unload(void);

/* prune.c: bounded retention of status records, idempotency keys and
 * webhook records (option status_retention) */
void gw_prune_load(mp_module *m);
/* Starts a pruning pass when one is due (on the sweep's loop, lock not
 * held). */
void gw_prune_tick(int64_t now_us);
void gw_prune_unload(void);

/* mod_gateway.c */
mp_stanza *gw_presence(const struct gw_dev *d, const char *to, int available);
void gw_presence_to_owners(const struct gw_dev *d, int available, struct gw_out *out);
void gw_uplink_to_owners(const struct gw_dev *d, uint32_t mid, const uint8_t *p, size_t len,
                         struct gw_out *out);

/* conn.c */
extern const struct mp_listener_ops gw_listener_ops;
/* Posted to dev->loop: sends what is due on dev's connection. */
void gw_pump_post(void *dev);
/* gw_pump_post(d) now when loop (d's connection's) is the calling one,
 * else posted to it (lock not held). */
void gw_pump_on(mp_loop *loop, struct gw_dev *d);
/* Sends due commands on d's connection (on its loop, lock held). */
void gw_pump(struct gw_dev *d, struct gw_out *out);
/* Starts the expiry sweep on the calling loop (once). */
void gw_sweep_start(void);
void gw_sweep_free(void);

#endif
