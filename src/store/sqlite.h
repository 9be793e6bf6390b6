/*
 * The SQLite back end of the storage interface: one database file in WAL mode.
 *
 * sqlite_store_open creates the file's folder (mode 0700) and the file (mode 0600) when they
 * are missing, applies the schema migrations that the file lacks, each in its own
 * transaction, and rejects a file whose schema is newer than this build supports. Use the
 * connection through the store_* functions of store/store.h, and close it with store_close.
 * ":memory:" opens a private in-memory database, which no other connection can see.
 */
#ifndef BEARHOOK_STORE_SQLITE_H
#define BEARHOOK_STORE_SQLITE_H

#include "core/error.h"
#include "store/store.h"

struct store *sqlite_store_open(const char *path, struct bh_error *err);

/* Returns the schema version that this build creates: the number of its migrations. */
int sqlite_store_schema_version(void);

#endif
