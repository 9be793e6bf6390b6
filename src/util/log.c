#include "util/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static atomic_int current_level = LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_set_level(enum log_level level)
{
    atomic_store(&current_level, (int)level);
}

int log_level_from_name(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off"};

    for (int i = 0; i < 5; i++) {
        if (strcmp(name, names[i]) == 0)
            return i;
    }
    return -1;
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load(&current_level);
}

void log_write(enum log_level level, const char *module, const char *fmt, ...)
{
    struct timespec now;
    struct tm utc;
    char stamp[32];
    char message[2048];
    va_list args;

    if (!log_enabled(level) || level >= LOG_OFF)
        return;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &utc);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);

    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);

    /* Control characters from input would let one event forge another line. */
    for (char *p = message; *p; p++) {
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    }

    fprintf(stderr, "%s.%03ldZ %-5s %s: %s\n", stamp, now.tv_nsec / 1000000L, level_names[level],
            module, message);
}
