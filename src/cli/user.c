/* bearhook user create NAME, and the first user of a new database. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli/commands.h"
#include "cli/config.h"
#include "cli/setup.h"
#include "core/clock.h"
#include "core/ids.h"
#include "util/alloc.h"
#include "util/log.h"

#define USER_NAME_MAX 100

struct user_settings {
    char *db;
};

static const struct option_spec user_options[] = {
    {"db", OPTION_STRING, offsetof(struct user_settings, db), "var/bearhook.db", 0, 0, NULL,
     "Database: a SQLite file path."},
};

static const char user_usage[] = "Usage: bearhook user create NAME [--db PATH]\n\n"
                                 "Creates a user and prints its API key once.";

static int check_name(const char *name, struct bh_error *err)
{
    size_t len = strlen(name);

    if (len == 0 || len > USER_NAME_MAX)
        return bh_error_set(err, BH_ERR_INVALID, "name", "user name must be 1 to %d bytes long",
                            USER_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return bh_error_set(err, BH_ERR_INVALID, "name",
                                "user name must not contain control characters");
    }
    return BH_OK;
}

int user_create(struct store *store, const char *name, struct user *user, char **api_key,
                struct bh_error *err)
{
    char key_hash[SHA256_HEX_LEN + 1];
    int result;

    *api_key = NULL;
    result = check_name(name, err);
    if (result != BH_OK)
        return result;

    memset(user, 0, sizeof(*user));
    id_generate(user->id);
    snprintf(user->name, sizeof(user->name), "%s", name);
    user->created_ms = clock_now_ms();
    *api_key = api_key_generate();
    api_key_hash(*api_key, key_hash);

    result = store_user_create(store, user, key_hash, err);
    if (result != BH_OK) {
        OPENSSL_cleanse(*api_key, strlen(*api_key));
        free(*api_key);
        *api_key = NULL;
    }
    return result;
}

static int write_key_file(const char *path, const char *api_key, struct bh_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    size_t len = strlen(api_key);
    int result = BH_OK;

    if (fd < 0)
        return bh_error_set(err, BH_ERR_IO, "", "cannot write %s: %s", path, strerror(errno));
    /* O_CREAT's mode does not apply to a file that already existed. */
    if (fchmod(fd, 0600) != 0 || write(fd, api_key, len) != (ssize_t)len ||
        write(fd, "\n", 1) != 1 || fsync(fd) != 0)
        result = bh_error_set(err, BH_ERR_IO, "", "cannot write %s: %s", path, strerror(errno));
    close(fd);
    return result;
}

int setup_first_user(struct store *store, const char *db_path, struct bh_error *err)
{
    struct user user;
    char *api_key = NULL;
    char *db_copy = xstrdup(db_path);
    char *key_path = xasprintf("%s/" API_KEY_FILE_NAME, dirname(db_copy));
    int64_t count = 0;
    int result;

    result = store_user_count(store, &count, err);
    if (result != BH_OK || count > 0)
        goto release;

    result = user_create(store, "admin", &user, &api_key, err);
    if (result != BH_OK)
        goto release;
    result = write_key_file(key_path, api_key, err);
    if (result != BH_OK)
        goto release;

    printf("Created the first user \"admin\" (id %s).\n"
           "API key, shown once and written to %s (mode 0600):\n%s\n",
           user.id, key_path, api_key);
    fflush(stdout);
    log_info("serve", "created first user user=%s key_file=%s", user.id, key_path);

release:
    if (api_key) {
        OPENSSL_cleanse(api_key, strlen(api_key));
        free(api_key);
    }
    free(key_path);
    free(db_copy);
    return result;
}

int cmd_user(int argc, char **argv)
{
    struct user_settings settings = {NULL};
    struct option_args args;
    struct bh_error err;
    struct store *store = NULL;
    struct user user;
    char *api_key = NULL;
    int status = EXIT_USAGE;
    int result;

    bh_error_clear(&err);
    result = options_parse(user_options, 1, &settings, "BEARHOOK_", argc, argv, &args, &err);
    if (result == BH_OK && args.help) {
        options_print_help(stdout, user_usage, user_options, 1, "BEARHOOK_");
        status = 0;
        goto release;
    }
    if (result == BH_OK &&
        (args.positional_count != 2 || strcmp(args.positional[0], "create") != 0))
        result = bh_error_set(&err, BH_ERR_INVALID, "", "expected: bearhook user create NAME");
    if (result != BH_OK) {
        fprintf(stderr, "bearhook user: %s\n", err.message);
        goto release;
    }

    status = 1;
    store = store_open(settings.db, &err);
    if (store)
        result = user_create(store, args.positional[1], &user, &api_key, &err);
    if (!store || result != BH_OK) {
        fprintf(stderr, "bearhook user: %s\n", err.message);
        goto release;
    }

    printf("Created user \"%s\" (id %s).\nAPI key, shown once:\n%s\n", user.name, user.id, api_key);
    status = 0;

release:
    if (api_key) {
        OPENSSL_cleanse(api_key, strlen(api_key));
        free(api_key);
    }
    store_close(store);
    options_release(user_options, 1, &settings);
    return status;
}
