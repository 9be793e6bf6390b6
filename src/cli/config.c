#include "cli/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"

static const struct option_spec *find_spec(const struct option_spec *specs, size_t count,
                                           const char *name, size_t name_len)
{
    for (size_t i = 0; i < count; i++) {
        if (strlen(specs[i].name) == name_len && strncmp(specs[i].name, name, name_len) == 0)
            return &specs[i];
    }
    return NULL;
}

static int parse_bool(const char *text, bool *value)
{
    static const char *const truthy[] = {"1", "true", "yes", "on"};
    static const char *const falsy[] = {"0", "false", "no", "off"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, truthy[i]) == 0) {
            *value = true;
            return 0;
        }
        if (strcasecmp(text, falsy[i]) == 0) {
            *value = false;
            return 0;
        }
    }
    return -1;
}

/* Stores one value; `source` names where it came from for the error message. */
static int set_value(const struct option_spec *spec, void *settings, const char *text,
                     const char *source, struct bh_error *err)
{
    char *field = (char *)settings + spec->offset;

    switch (spec->type) {
    case OPTION_STRING: {
        char **slot = (char **)(void *)field;

        free(*slot);
        *slot = xstrdup(text ? text : "");
        return 0;
    }
    case OPTION_BOOL:
        if (parse_bool(text, (bool *)(void *)field) != 0)
            return bh_error_set(err, BH_ERR_INVALID, spec->name,
                                "%s: invalid value \"%s\" for --%s; use true or false", source,
                                text, spec->name);
        return 0;
    case OPTION_INT: {
        char *end = NULL;
        long long value;

        errno = 0;
        value = strtoll(text, &end, 10);
        if (errno != 0 || end == text || *end != '\0' || value < spec->min || value > spec->max)
            return bh_error_set(err, BH_ERR_INVALID, spec->name,
                                "%s: invalid value \"%s\" for --%s; use a whole number from %lld "
                                "to %lld%s%s",
                                source, text, spec->name, spec->min, spec->max,
                                spec->unit ? " " : "", spec->unit ? spec->unit : "");
        *(long long *)(void *)field = value;
        return 0;
    }
    }
    return BH_ERR_INTERNAL;
}

static void env_name(const char *prefix, const char *name, char *out, size_t size)
{
    size_t len = (size_t)snprintf(out, size, "%s%s", prefix, name);

    for (size_t i = 0; i < len && i < size; i++)
        out[i] = out[i] == '-' ? '_' : (char)toupper((unsigned char)out[i]);
}

static int apply_defaults_and_env(const struct option_spec *specs, size_t count, void *settings,
                                  const char *env_prefix, struct bh_error *err)
{
    char name[128];
    int result;

    for (size_t i = 0; i < count; i++) {
        const char *value = specs[i].default_value;
        const char *source = "default";

        if (env_prefix) {
            const char *from_env;

            env_name(env_prefix, specs[i].name, name, sizeof(name));
            from_env = getenv(name);
            if (from_env) {
                value = from_env;
                source = name;
            }
        }
        if (!value && specs[i].type != OPTION_STRING)
            continue;
        result = set_value(&specs[i], settings, value, source, err);
        if (result != 0)
            return result;
    }
    return 0;
}

int options_parse(const struct option_spec *specs, size_t count, void *settings,
                  const char *env_prefix, int argc, char **argv, struct option_args *args,
                  struct bh_error *err)
{
    int result;

    memset(args, 0, sizeof(*args));
    result = apply_defaults_and_env(specs, count, settings, env_prefix, err);
    if (result != 0)
        return result;

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *name;
        const char *equals;
        const char *value;
        const struct option_spec *spec;
        size_t name_len;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            args->help = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (args->positional_count == OPTIONS_POSITIONAL_MAX)
                return bh_error_set(err, BH_ERR_INVALID, "", "too many arguments at \"%s\"", arg);
            args->positional[args->positional_count++] = argv[i];
            continue;
        }

        name = arg + 2;
        equals = strchr(name, '=');
        name_len = equals ? (size_t)(equals - name) : strlen(name);
        spec = find_spec(specs, count, name, name_len);
        if (!spec)
            return bh_error_set(err, BH_ERR_INVALID, "", "unknown option \"%.*s\"; see --help",
                                (int)name_len + 2, arg);

        if (equals) {
            value = equals + 1;
        } else if (spec->type == OPTION_BOOL) {
            value = "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return bh_error_set(err, BH_ERR_INVALID, spec->name, "option --%s needs a value",
                                spec->name);
        }
        result = set_value(spec, settings, value, "command line", err);
        if (result != 0)
            return result;
    }
    return 0;
}

void options_release(const struct option_spec *specs, size_t count, void *settings)
{
    for (size_t i = 0; i < count; i++) {
        if (specs[i].type == OPTION_STRING) {
            char **slot = (char **)(void *)((char *)settings + specs[i].offset);

            free(*slot);
            *slot = NULL;
        }
    }
}

void options_print_help(FILE *out, const char *usage, const struct option_spec *specs, size_t count,
                        const char *env_prefix)
{
    char name[128];

    fprintf(out, "%s\n\nOptions:\n", usage);
    for (size_t i = 0; i < count; i++) {
        const struct option_spec *spec = &specs[i];
        const char *placeholder = spec->type == OPTION_INT      ? " N"
                                  : spec->type == OPTION_STRING ? " TEXT"
                                                                : "";

        fprintf(out, "  --%s%s\n      %s", spec->name, placeholder, spec->help);
        if (spec->type == OPTION_INT)
            fprintf(out, " (%lld to %lld%s%s)", spec->min, spec->max, spec->unit ? " " : "",
                    spec->unit ? spec->unit : "");
        else if (spec->unit)
            fprintf(out, " (%s)", spec->unit);
        fprintf(out, "\n      default: %s",
                spec->default_value && *spec->default_value ? spec->default_value : "(none)");
        if (env_prefix) {
            env_name(env_prefix, spec->name, name, sizeof(name));
            fprintf(out, "; environment: %s", name);
        }
        fputc('\n', out);
    }
    fprintf(out, "  --help\n      Prints this help.\n");
}
