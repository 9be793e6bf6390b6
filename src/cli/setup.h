/*
 * Users and API keys from the command line: `bearhook user create NAME`, and the first user
 * that `bearhook serve` creates when the database has none.
 */
#ifndef BEARHOOK_CLI_SETUP_H
#define BEARHOOK_CLI_SETUP_H

#include "core/error.h"
#include "store/store.h"

#define API_KEY_FILE_NAME "api-key"

/*
 * Creates a user and its API key. *api_key is the caller's to free; only its hash is stored.
 */
int user_create(struct store *store, const char *name, struct user *user, char **api_key,
                struct bh_error *err);
/*
 * When the store has no user, creates "admin", prints its API key once on stdout and writes
 * it to the file API_KEY_FILE_NAME beside the database, with mode 0600.
 */
int setup_first_user(struct store *store, const char *db_path, struct bh_error *err);

#endif
