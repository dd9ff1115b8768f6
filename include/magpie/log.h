/* log.h - levelled logging, one line per event. */
#ifndef MAGPIE_LOG_H
#define MAGPIE_LOG_H

enum mp_log_level { MP_LOG_DEBUG = 0, MP_LOG_INFO, MP_LOG_NOTICE, MP_LOG_WARN, MP_LOG_ERROR };

/* Writes one line "<time> <level> <message>" if level >= the configured
 * level. Thread-safe. Newlines inside the message are replaced by spaces. */
void mp_log(enum mp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when a message of that level would be written (skip costly formatting). */
int mp_log_enabled(enum mp_log_level level);

#endif
