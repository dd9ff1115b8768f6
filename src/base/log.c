/* log.c - levelled logging, one line per event, to stderr, a file or syslog. */
#include "base/base.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <sys/time.h>

static atomic_int log_level = MP_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_fp; /* NULL: stderr */
static int log_syslog;

static const char *const level_names[] = {"debug", "info", "notice", "warn", "error"};

int mp_log_level_parse(const char *name, enum mp_log_level *out)
{
    for (int i = 0; i <= MP_LOG_ERROR; i++)
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum mp_log_level)i;
            return MAGPIE_OK;
        }
    if (strcasecmp(name, "warning") == 0) {
        *out = MP_LOG_WARN;
        return MAGPIE_OK;
    }
    return MAGPIE_ERR;
}

int mp_log_setup(const char *level, const char *dest)
{
    enum mp_log_level lv = MP_LOG_INFO;
    if (level && mp_log_level_parse(level, &lv) != MAGPIE_OK)
        return MAGPIE_ERR;
    FILE *fp = NULL;
    int use_syslog = 0;
    if (dest && strcmp(dest, "syslog") == 0) {
        use_syslog = 1;
    } else if (dest && *dest && strcmp(dest, "-") != 0) {
        fp = fopen(dest, "a");
        if (!fp)
            return MAGPIE_ERR;
        setvbuf(fp, NULL, _IOLBF, 0);
    }
    pthread_mutex_lock(&log_lock);
    if (log_fp)
        fclose(log_fp);
    log_fp = fp;
    if (use_syslog && !log_syslog)
        openlog("magpied", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    log_syslog = use_syslog;
    atomic_store(&log_level, (int)lv);
    pthread_mutex_unlock(&log_lock);
    return MAGPIE_OK;
}

int mp_log_enabled(enum mp_log_level level)
{
    return (int)level >= atomic_load(&log_level);
}

void mp_log(enum mp_log_level level, const char *fmt, ...)
{
    static const int syslog_prio[] = {LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR};
    if (!mp_log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';

    pthread_mutex_lock(&log_lock);
    if (log_syslog) {
        syslog(syslog_prio[level], "%s", msg);
    } else {
        struct timeval tv;
        struct tm tm;
        char ts[32];
        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(log_fp ? log_fp : stderr, "%s.%03ldZ %-6s %s\n", ts, (long)(tv.tv_usec / 1000),
                level_names[level], msg);
    }
    pthread_mutex_unlock(&log_lock);
}
