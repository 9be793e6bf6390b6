/* Unit tests of the option table engine: defaults, environment, flags, bounds and help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli/config.h"

struct sample_settings {
    char *name;
    long long count;
    bool flag;
};

static const struct option_spec specs[] = {
    {"name", OPTION_STRING, offsetof(struct sample_settings, name), "default-name", 0, 0, NULL,
     "A name."},
    {"count", OPTION_INT, offsetof(struct sample_settings, count), "5", 1, 10, "items", "A count."},
    {"flag", OPTION_BOOL, offsetof(struct sample_settings, flag), "false", 0, 0, NULL, "A switch."},
};

static int parse(struct sample_settings *settings, struct option_args *args, struct bh_error *err,
                 int argc, char **argv)
{
    memset(settings, 0, sizeof(*settings));
    bh_error_clear(err);
    return options_parse(specs, 3, settings, "SAMPLETEST_", argc, argv, args, err);
}

static void test_defaults_applied(void **state)
{
    struct sample_settings settings;
    struct option_args args;
    struct bh_error err;

    unsetenv("SAMPLETEST_NAME");
    assert_int_equal(parse(&settings, &args, &err, 0, NULL), 0);
    assert_string_equal(settings.name, "default-name");
    assert_int_equal(settings.count, 5);
    assert_false(settings.flag);
    assert_int_equal(args.positional_count, 0);
    options_release(specs, 3, &settings);
}

static void test_environment_then_flags(void **state)
{
    struct sample_settings settings;
    struct option_args args;
    struct bh_error err;
    char *argv[] = {"--count", "9", "--flag", "--name=from-flag", "extra"};

    setenv("SAMPLETEST_NAME", "from-env", 1);
    setenv("SAMPLETEST_COUNT", "7", 1);
    assert_int_equal(parse(&settings, &args, &err, 0, NULL), 0);
    assert_string_equal(settings.name, "from-env");
    assert_int_equal(settings.count, 7);
    options_release(specs, 3, &settings);

    assert_int_equal(parse(&settings, &args, &err, 5, argv), 0);
    assert_string_equal(settings.name, "from-flag");
    assert_int_equal(settings.count, 9);
    assert_true(settings.flag);
    assert_int_equal(args.positional_count, 1);
    assert_string_equal(args.positional[0], "extra");
    options_release(specs, 3, &settings);
    unsetenv("SAMPLETEST_NAME");
    unsetenv("SAMPLETEST_COUNT");
}

static void test_out_of_range_rejected(void **state)
{
    struct sample_settings settings;
    struct option_args args;
    struct bh_error err;
    char *too_big[] = {"--count", "11"};
    char *not_number[] = {"--count=5x"};

    assert_int_equal(parse(&settings, &args, &err, 2, too_big), BH_ERR_INVALID);
    assert_string_equal(err.field, "count");
    assert_non_null(strstr(err.message, "1 to 10 items"));
    options_release(specs, 3, &settings);

    assert_int_equal(parse(&settings, &args, &err, 1, not_number), BH_ERR_INVALID);
    assert_non_null(strstr(err.message, "\"5x\""));
    options_release(specs, 3, &settings);
}

static void test_bad_environment_named(void **state)
{
    struct sample_settings settings;
    struct option_args args;
    struct bh_error err;

    setenv("SAMPLETEST_FLAG", "maybe", 1);
    assert_int_equal(parse(&settings, &args, &err, 0, NULL), BH_ERR_INVALID);
    assert_non_null(strstr(err.message, "SAMPLETEST_FLAG"));
    options_release(specs, 3, &settings);
    unsetenv("SAMPLETEST_FLAG");
}

static void test_unknown_and_missing_value(void **state)
{
    struct sample_settings settings;
    struct option_args args;
    struct bh_error err;
    char *unknown[] = {"--colour", "red"};
    char *missing[] = {"--name"};
    char *help[] = {"--help"};

    assert_int_equal(parse(&settings, &args, &err, 2, unknown), BH_ERR_INVALID);
    assert_non_null(strstr(err.message, "--colour"));
    options_release(specs, 3, &settings);

    assert_int_equal(parse(&settings, &args, &err, 1, missing), BH_ERR_INVALID);
    assert_non_null(strstr(err.message, "needs a value"));
    options_release(specs, 3, &settings);

    assert_int_equal(parse(&settings, &args, &err, 1, help), 0);
    assert_true(args.help);
    options_release(specs, 3, &settings);
}

static void test_help_lists_units_and_defaults(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    options_print_help(out, "Usage: sample", specs, 3, "SAMPLETEST_");
    fclose(out);
    assert_non_null(strstr(text, "--count N"));
    assert_non_null(strstr(text, "(1 to 10 items)"));
    assert_non_null(strstr(text, "default: 5"));
    assert_non_null(strstr(text, "SAMPLETEST_COUNT"));
    assert_non_null(strstr(text, "default: default-name"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_applied),
        cmocka_unit_test(test_environment_then_flags),
        cmocka_unit_test(test_out_of_range_rejected),
        cmocka_unit_test(test_bad_environment_named),
        cmocka_unit_test(test_unknown_and_missing_value),
        cmocka_unit_test(test_help_lists_units_and_defaults),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
