/*
 * Command-line options from one table per command. Each row drives the flag (--name VALUE or
 * --name=VALUE), the environment variable (the prefix and the name in upper case, dashes as
 * underscores: BEARHOOK_RETRY_BASE_MS), the bounds check and the --help text.
 *
 * Precedence: the table's default, then the environment, then the flags.
 * Field types in the settings struct: OPTION_STRING is char * (owned, freed by
 * options_release), OPTION_INT is long long, OPTION_BOOL is bool.
 */
#ifndef BEARHOOK_CLI_CONFIG_H
#define BEARHOOK_CLI_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/error.h"

enum option_type { OPTION_STRING, OPTION_INT, OPTION_BOOL };

struct option_spec {
    const char *name; /* flag name without dashes, e.g. "retry-base-ms" */
    enum option_type type;
    size_t offset;             /* of the field in the settings struct */
    const char *default_value; /* text, parsed like a flag value; NULL for an empty string */
    long long min, max;        /* bounds for OPTION_INT */
    const char *unit;          /* shown in --help, e.g. "ms"; NULL for none */
    const char *help;
};

#define OPTIONS_POSITIONAL_MAX 8

struct option_args {
    char *positional[OPTIONS_POSITIONAL_MAX]; /* borrowed from argv */
    size_t positional_count;
    bool help; /* --help or -h was given */
};

/*
 * Fills settings from the table, the environment (when env_prefix is not NULL) and argv,
 * which starts after the command name. Unknown flags, missing values, out-of-range numbers
 * and too many positional arguments are errors that name the option and its allowed values.
 */
int options_parse(const struct option_spec *specs, size_t count, void *settings,
                  const char *env_prefix, int argc, char **argv, struct option_args *args,
                  struct bh_error *err);
void options_release(const struct option_spec *specs, size_t count, void *settings);
void options_print_help(FILE *out, const char *usage, const struct option_spec *specs, size_t count,
                        const char *env_prefix);

#endif
