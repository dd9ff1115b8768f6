/* core.h - the core's internal hub header. Modules never include it. */
#ifndef MAGPIE_CORE_H
#define MAGPIE_CORE_H

#include <magpie/magpie.h>
#include <pthread.h>
#include <stdatomic.h>

struct mp_config;

/* ---- log.c ---- */
/* Configures the log: level name ("debug".."error") and destination (NULL
 * or "-": stderr, "syslog", else a file appended to). Returns MAGPIE_OK or
 * MAGPIE_ERR (bad level or unwritable file). Safe to call again (SIGHUP). */
int mp_log_setup(const char *level, const char *dest);
int mp_log_level_parse(const char *name, enum mp_log_level *out);

/* ---- loop.c ---- */
/* Creates a loop running on the calling thread when mp_loop_run is called.
 * Returns a new loop the caller frees with mp_loop_free. */
mp_loop *mp_loop_new(void);
void mp_loop_free(mp_loop *loop);
/* Makes loop the calling thread's current loop (mp_loop_current). */
void mp_loop_bind_thread(mp_loop *loop);
/* Runs until mp_loop_stop. */
void mp_loop_run(mp_loop *loop);
/* Thread-safe: asks loop to return from mp_loop_run once its queue is empty. */
void mp_loop_stop(mp_loop *loop);

/* ---- util.c ---- */
/* Monotonic clock in seconds. */
double mp_now(void);
/* Fills buf with len random bytes from OpenSSL's CSPRNG. */
void mp_random_bytes(void *buf, size_t len);
/* strdup that aborts on OOM. */
char *mp_strdup(const char *s);
void *mp_malloc(size_t n);
void *mp_calloc(size_t n, size_t m);
void *mp_realloc(void *p, size_t n);

#endif
