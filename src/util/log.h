/*
 * One line per log event on stderr: UTC time with milliseconds, level, module, message.
 *
 *   2026-12-04T19:50:00.123Z INFO  dispatcher: delivered delivery=dlv_... status=200
 *
 * Messages carry the ids involved as key=value pairs and never a secret or an API key.
 * Thread-safe: each line is written with one locked call.
 */
#ifndef BEARHOOK_UTIL_LOG_H
#define BEARHOOK_UTIL_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn", "error" or "off"; returns -1 for anything else. */
int log_level_from_name(const char *name);
bool log_enabled(enum log_level level);
void log_write(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(module, ...) log_write(LOG_DEBUG, module, __VA_ARGS__)
#define log_info(module, ...) log_write(LOG_INFO, module, __VA_ARGS__)
#define log_warn(module, ...) log_write(LOG_WARN, module, __VA_ARGS__)
#define log_error(module, ...) log_write(LOG_ERROR, module, __VA_ARGS__)

#endif
