/*
 * The SQLite back end of the storage interface.
 *
 * One struct sqlite_store is one connection. Every statement is prepared once, when the
 * connection opens, with SQLITE_PREPARE_PERSISTENT, and reused; values reach SQL only through
 * bound parameters. A statement is reset as soon as its rows are read, so no read transaction
 * outlives the call that started it.
 *
 * Operations that write more than one row run in a transaction of their own (BEGIN IMMEDIATE)
 * when the caller has none open, and inside a savepoint when the caller has one. A failure then
 * undoes only the operation's own writes and leaves the caller's transaction usable.
 *
 * The schema is the list of migrations below; PRAGMA user_version counts those applied.
 * Delivery states and integration statuses are stored as words, so the file can be read
 * without this code. Event types, event masks and record kinds are stored as the numbers of
 * their enums, so new values of those enums go at the end.
 */
#include "store/sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/clock.h"
#include "store/backend.h"
#include "util/alloc.h"

#define BUSY_TIMEOUT_MS 5000

/* Each step runs in its own transaction. Released steps are never edited: add a new one. */
static const char *const migrations[] = {
    /* 1: the first schema. */
    "CREATE TABLE users ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE api_keys ("
    "  key_hash TEXT PRIMARY KEY,"
    "  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX api_keys_user ON api_keys(user_id);"
    "CREATE TABLE integrations ("
    "  id TEXT PRIMARY KEY,"
    "  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  url TEXT NOT NULL,"
    "  provider TEXT NOT NULL,"
    "  signing INTEGER NOT NULL,"
    "  secret TEXT,"
    "  events INTEGER NOT NULL,"
    "  headers TEXT," /* a JSON object {"Name": "value"} */
    "  max_retries INTEGER NOT NULL,"
    "  timeout_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('active', 'error')),"
    "  delivered INTEGER NOT NULL DEFAULT 0,"
    "  failed INTEGER NOT NULL DEFAULT 0,"
    "  last_delivery_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  last_error_ms INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX integrations_user ON integrations(user_id, created_ms);"
    "CREATE TABLE records ("
    "  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  kind INTEGER NOT NULL,"
    "  id TEXT NOT NULL,"
    "  json TEXT NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (user_id, kind, id)"
    ") WITHOUT ROWID;"
    "CREATE TABLE mappings ("
    "  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  campaign_id TEXT NOT NULL,"
    "  integration_id TEXT NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,"
    "  events INTEGER NOT NULL,"
    "  active INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (user_id, campaign_id, integration_id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX mappings_integration ON mappings(integration_id);"
    "CREATE TABLE events ("
    "  id TEXT PRIMARY KEY,"
    "  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  type INTEGER NOT NULL,"
    "  lead_id TEXT NOT NULL,"
    "  campaign_id TEXT,"
    "  account_id TEXT,"
    "  occurred_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX events_user ON events(user_id, created_ms);"
    "CREATE TABLE deliveries ("
    "  id TEXT PRIMARY KEY,"
    "  event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,"
    "  integration_id TEXT NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,"
    "  user_id TEXT NOT NULL,"
    "  event_type INTEGER NOT NULL,"
    "  body BLOB NOT NULL,"
    "  state TEXT NOT NULL"
    "    CHECK (state IN ('pending', 'succeeded', 'failed', 'cancelled')),"
    "  attempts INTEGER NOT NULL,"
    "  next_attempt_ms INTEGER NOT NULL,"
    "  lease_owner TEXT,"
    "  lease_until_ms INTEGER,"
    "  last_http_status INTEGER NOT NULL,"
    "  last_error TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX deliveries_due ON deliveries(state, next_attempt_ms) WHERE state = 'pending';"
    "CREATE INDEX deliveries_integration ON deliveries(integration_id, created_ms);"
    "CREATE INDEX deliveries_event ON deliveries(event_id);"
    "CREATE TABLE attempts ("
    "  delivery_id TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,"
    "  number INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL,"
    "  duration_ms INTEGER NOT NULL,"
    "  http_status INTEGER NOT NULL,"
    "  error TEXT,"
    "  response_excerpt BLOB,"
    "  PRIMARY KEY (delivery_id, number)"
    ") WITHOUT ROWID;",
};

#define MIGRATION_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

#define INTEGRATION_COLUMNS                                                                        \
    "id, user_id, name, url, provider, signing, secret, events, headers, max_retries, "            \
    "timeout_ms, created_ms, updated_ms, status, delivered, failed, last_delivery_ms, "            \
    "last_error, last_error_ms"

#define DELIVERY_COLUMNS                                                                           \
    "id, event_id, integration_id, user_id, event_type, body, state, attempts, "                   \
    "next_attempt_ms, last_http_status, last_error, created_ms, updated_ms"

enum statement_id {
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_SAVEPOINT,
    STMT_RELEASE,
    STMT_ROLLBACK_TO,
    STMT_USER_INSERT,
    STMT_KEY_INSERT,
    STMT_USER_COUNT,
    STMT_USER_BY_KEY,
    STMT_INTEGRATION_INSERT,
    STMT_INTEGRATION_GET,
    STMT_INTEGRATION_LIST,
    STMT_INTEGRATION_DELETE,
    STMT_RECORD_GET,
    STMT_RECORD_PUT,
    STMT_RECORD_LIST,
    STMT_MAPPING_PUT,
    STMT_MAPPING_LIST,
    STMT_ROUTES,
    STMT_EVENT_INSERT,
    STMT_DELIVERY_INSERT,
    STMT_DELIVERY_GET,
    STMT_ATTEMPT_LIST,
    STMT_CLAIM_SELECT,
    STMT_CLAIM_LEASE,
    STMT_NEXT_DUE,
    STMT_FINISH_DELIVERY,
    STMT_FINISH_ATTEMPT,
    STMT_FINISH_STATISTICS,
    STMT_RELEASE_LEASES,
    STMT_COUNT
};

struct statement_def {
    const char *sql;
    const char *action; /* completes "could not ..." in error messages */
};

/* Parameters are numbered in the order the functions below bind them. */
static const struct statement_def statement_defs[STMT_COUNT] = {
    [STMT_BEGIN] = {"BEGIN IMMEDIATE", "begin a transaction"},
    [STMT_COMMIT] = {"COMMIT", "commit the transaction"},
    [STMT_ROLLBACK] = {"ROLLBACK", "roll back the transaction"},
    [STMT_SAVEPOINT] = {"SAVEPOINT store_operation", "open a savepoint"},
    [STMT_RELEASE] = {"RELEASE store_operation", "release a savepoint"},
    [STMT_ROLLBACK_TO] = {"ROLLBACK TO store_operation", "roll back to a savepoint"},
    [STMT_USER_INSERT] = {"INSERT INTO users (id, name, created_ms) VALUES (?1, ?2, ?3)",
                          "insert a user"},
    [STMT_KEY_INSERT] = {"INSERT INTO api_keys (key_hash, user_id, created_ms) "
                         "VALUES (?1, ?2, ?3)",
                         "insert an API key"},
    [STMT_USER_COUNT] = {"SELECT COUNT(*) FROM users", "count users"},
    [STMT_USER_BY_KEY] = {"SELECT u.id, u.name, u.created_ms FROM api_keys k "
                          "JOIN users u ON u.id = k.user_id WHERE k.key_hash = ?1",
                          "look up an API key"},
    [STMT_INTEGRATION_INSERT] = {"INSERT INTO integrations (" INTEGRATION_COLUMNS ") VALUES "
                                 "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
                                 "?15, ?16, ?17, ?18, ?19)",
                                 "insert an integration"},
    [STMT_INTEGRATION_GET] = {"SELECT " INTEGRATION_COLUMNS " FROM integrations "
                              "WHERE id = ?1 AND user_id = ?2",
                              "read an integration"},
    [STMT_INTEGRATION_LIST] = {"SELECT " INTEGRATION_COLUMNS " FROM integrations "
                               "WHERE user_id = ?1 ORDER BY created_ms, id",
                               "list integrations"},
    [STMT_INTEGRATION_DELETE] = {"DELETE FROM integrations WHERE id = ?1 AND user_id = ?2",
                                 "delete an integration"},
    [STMT_RECORD_GET] = {"SELECT json FROM records WHERE user_id = ?1 AND kind = ?2 AND id = ?3",
                         "read a record"},
    [STMT_RECORD_PUT] = {"INSERT INTO records (user_id, kind, id, json, updated_ms) "
                         "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (user_id, kind, id) "
                         "DO UPDATE SET json = excluded.json, updated_ms = excluded.updated_ms",
                         "store a record"},
    [STMT_RECORD_LIST] = {"SELECT json FROM records WHERE user_id = ?1 AND kind = ?2 "
                          "AND id > ?3 ORDER BY id LIMIT ?4",
                          "list records"},
    /* The SELECT makes a mapping to a missing or another user's integration insert nothing. */
    [STMT_MAPPING_PUT] = {"INSERT INTO mappings (user_id, campaign_id, integration_id, events, "
                          "active, created_ms, updated_ms) "
                          "SELECT ?1, ?2, id, ?3, ?4, ?5, ?6 FROM integrations "
                          "WHERE id = ?7 AND user_id = ?1 "
                          "ON CONFLICT (user_id, campaign_id, integration_id) DO UPDATE SET "
                          "events = excluded.events, active = excluded.active, "
                          "updated_ms = excluded.updated_ms",
                          "store a campaign mapping"},
    [STMT_MAPPING_LIST] = {"SELECT campaign_id, integration_id, events, active, created_ms, "
                           "updated_ms FROM mappings WHERE user_id = ?1 AND campaign_id = ?2 "
                           "ORDER BY created_ms, integration_id",
                           "list campaign mappings"},
    [STMT_ROUTES] = {"SELECT m.integration_id FROM mappings m "
                     "JOIN integrations i ON i.id = m.integration_id AND i.user_id = m.user_id "
                     "WHERE m.user_id = ?1 AND m.campaign_id = ?2 AND m.active <> 0 "
                     "AND (m.events & ?3) <> 0 AND (i.events & ?3) <> 0 "
                     "ORDER BY m.created_ms, m.integration_id",
                     "find the routes of an event"},
    [STMT_EVENT_INSERT] = {"INSERT INTO events (id, user_id, type, lead_id, campaign_id, "
                           "account_id, occurred_ms, created_ms) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                           "insert an event"},
    /* The SELECT makes a delivery to a missing or another user's integration insert nothing. */
    [STMT_DELIVERY_INSERT] = {"INSERT INTO deliveries (" DELIVERY_COLUMNS ") "
                              "SELECT ?1, ?2, id, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13 "
                              "FROM integrations WHERE id = ?3 AND user_id = ?4",
                              "insert a delivery"},
    [STMT_DELIVERY_GET] = {"SELECT " DELIVERY_COLUMNS " FROM deliveries "
                           "WHERE id = ?1 AND user_id = ?2",
                           "read a delivery"},
    [STMT_ATTEMPT_LIST] = {"SELECT number, started_ms, duration_ms, http_status, error, "
                           "response_excerpt FROM attempts WHERE delivery_id = ?1 "
                           "ORDER BY number",
                           "list attempts"},
    /* The literal state = 'pending' lets the planner use the partial index deliveries_due. */
    [STMT_CLAIM_SELECT] = {"SELECT d.id, d.event_id, d.integration_id, d.user_id, d.body, "
                           "d.attempts, i.url, i.signing, i.secret, i.headers, i.timeout_ms, "
                           "i.max_retries FROM deliveries d "
                           "JOIN integrations i ON i.id = d.integration_id "
                           "WHERE d.state = 'pending' AND d.next_attempt_ms <= ?1 "
                           "AND (d.lease_until_ms IS NULL OR d.lease_until_ms < ?1) "
                           "ORDER BY d.next_attempt_ms, d.id LIMIT ?2",
                           "select due deliveries"},
    [STMT_CLAIM_LEASE] = {"UPDATE deliveries SET lease_owner = ?1, lease_until_ms = ?2 "
                          "WHERE id = ?3",
                          "lease a delivery"},
    /* A leased delivery becomes claimable 1 ms after its lease ends. */
    [STMT_NEXT_DUE] = {"SELECT MIN(MAX(next_attempt_ms, "
                       "COALESCE(lease_until_ms + 1, next_attempt_ms))) "
                       "FROM deliveries WHERE state = 'pending'",
                       "find the next due delivery"},
    [STMT_FINISH_DELIVERY] = {"UPDATE deliveries SET state = ?1, attempts = attempts + 1, "
                              "next_attempt_ms = CASE WHEN ?1 = 'pending' THEN ?2 "
                              "ELSE next_attempt_ms END, "
                              "lease_owner = NULL, lease_until_ms = NULL, "
                              "last_http_status = ?3, last_error = ?4, updated_ms = ?5 "
                              "WHERE id = ?6 AND lease_owner = ?7 AND state = 'pending' "
                              "RETURNING attempts, integration_id",
                              "update a delivery"},
    [STMT_FINISH_ATTEMPT] = {"INSERT INTO attempts (delivery_id, number, started_ms, "
                             "duration_ms, http_status, error, response_excerpt) "
                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                             "insert an attempt"},
    [STMT_FINISH_STATISTICS] = {"UPDATE integrations SET "
                                "last_delivery_ms = MAX(last_delivery_ms, ?1), "
                                "last_error = CASE WHEN ?2 IS NULL THEN last_error ELSE ?2 END, "
                                "last_error_ms = CASE WHEN ?2 IS NULL THEN last_error_ms "
                                "ELSE ?1 END, "
                                "delivered = delivered + ?3, failed = failed + ?4, "
                                "status = CASE WHEN ?3 <> 0 THEN 'active' "
                                "WHEN ?4 <> 0 THEN 'error' ELSE status END "
                                "WHERE id = ?5",
                                "update integration statistics"},
    [STMT_RELEASE_LEASES] = {"UPDATE deliveries SET lease_owner = NULL, lease_until_ms = NULL "
                             "WHERE lease_owner IS NOT NULL OR lease_until_ms IS NOT NULL",
                             "release leases"},
};

struct sqlite_store {
    struct store base; /* first, so a struct store pointer converts to this struct */
    sqlite3 *db;
    sqlite3_stmt *statements[STMT_COUNT];
};

/*
 * One use of a prepared statement: parameters are bound in order from 1, and columns are read
 * in order from 0 on each row. query_end resets the statement for its next use.
 */
struct query {
    struct sqlite_store *store;
    enum statement_id id;
    sqlite3_stmt *stmt;
    int param;   /* the last parameter bound */
    int bind_rc; /* the first binding failure, or SQLITE_OK */
    int column;  /* the next column to read */
};

static const struct store_ops sqlite_ops;

static struct sqlite_store *from_store(struct store *store)
{
    return (struct sqlite_store *)store;
}

/* Fills err from the connection's last error. A duplicate key is BH_ERR_CONFLICT. */
static int fail(struct sqlite_store *s, const char *action, struct bh_error *err)
{
    int code = sqlite3_extended_errcode(s->db);
    int status = BH_ERR_STORE;

    if (code == SQLITE_CONSTRAINT_PRIMARYKEY || code == SQLITE_CONSTRAINT_UNIQUE)
        status = BH_ERR_CONFLICT;
    return bh_error_set(err, status, "", "could not %s: %s", action, sqlite3_errmsg(s->db));
}

static void query_start(struct query *q, struct sqlite_store *s, enum statement_id id)
{
    q->store = s;
    q->id = id;
    q->stmt = s->statements[id];
    q->param = 0;
    q->bind_rc = SQLITE_OK;
    q->column = 0;
}

static void query_end(struct query *q)
{
    sqlite3_reset(q->stmt);
    sqlite3_clear_bindings(q->stmt);
}

static void keep_bind_rc(struct query *q, int rc)
{
    if (q->bind_rc == SQLITE_OK)
        q->bind_rc = rc;
}

/* Binds text, or NULL as SQL NULL. The text must stay unchanged until query_end. */
static void bind_text(struct query *q, const char *text)
{
    int index = ++q->param;

    if (text)
        keep_bind_rc(q, sqlite3_bind_text(q->stmt, index, text, -1, SQLITE_STATIC));
    else
        keep_bind_rc(q, sqlite3_bind_null(q->stmt, index));
}

static void bind_int(struct query *q, int64_t value)
{
    keep_bind_rc(q, sqlite3_bind_int64(q->stmt, ++q->param, value));
}

/* Binds bytes, or NULL as SQL NULL. The bytes must stay unchanged until query_end. */
static void bind_blob(struct query *q, const void *data, size_t len)
{
    int index = ++q->param;

    if (data)
        keep_bind_rc(q, sqlite3_bind_blob64(q->stmt, index, data, len, SQLITE_STATIC));
    else
        keep_bind_rc(q, sqlite3_bind_null(q->stmt, index));
}

/* Steps once. Returns 1 when a row is ready, 0 when the statement is done, or an error. */
static int query_step(struct query *q, struct bh_error *err)
{
    int rc;

    if (q->bind_rc != SQLITE_OK)
        return bh_error_set(err, BH_ERR_STORE, "", "could not %s: binding failed: %s",
                            statement_defs[q->id].action, sqlite3_errstr(q->bind_rc));
    rc = sqlite3_step(q->stmt);
    q->column = 0;
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return fail(q->store, statement_defs[q->id].action, err);
}

/* Runs a statement that returns no rows and resets it. */
static int query_exec(struct query *q, struct bh_error *err)
{
    int status = query_step(q, err);

    query_end(q);
    if (status > 0)
        return bh_error_set(err, BH_ERR_INTERNAL, "", "could not %s: it returned rows",
                            statement_defs[q->id].action);
    return status;
}

static int64_t column_int(struct query *q)
{
    return sqlite3_column_int64(q->stmt, q->column++);
}

/* Returns a copy of a text column, or NULL for SQL NULL. */
static char *column_text_dup(struct query *q)
{
    const char *text = (const char *)sqlite3_column_text(q->stmt, q->column++);

    return text ? xstrdup(text) : NULL;
}

/* Copies a text column into a fixed buffer, truncated to fit. SQL NULL becomes "". */
static void column_text_copy(struct query *q, char *out, size_t size)
{
    const char *text = (const char *)sqlite3_column_text(q->stmt, q->column++);

    snprintf(out, size, "%s", text ? text : "");
}

/* Returns a NUL-terminated copy of a blob column and sets *len. SQL NULL returns NULL. */
static char *column_blob_dup(struct query *q, size_t *len)
{
    int index = q->column++;
    const void *data;
    size_t size;
    char *copy;

    *len = 0;
    if (sqlite3_column_type(q->stmt, index) == SQLITE_NULL)
        return NULL;
    data = sqlite3_column_blob(q->stmt, index);
    size = (size_t)sqlite3_column_bytes(q->stmt, index);
    copy = xmalloc(size + 1);
    if (size > 0)
        memcpy(copy, data, size);
    copy[size] = '\0';
    *len = size;
    return copy;
}

static int run(struct sqlite_store *s, enum statement_id id, struct bh_error *err)
{
    struct query q;

    query_start(&q, s, id);
    return query_exec(&q, err);
}

/*
 * Starts an operation's own transaction, or a savepoint inside the caller's. *nested records
 * which of the two operation_commit and operation_rollback must end.
 */
static int operation_begin(struct sqlite_store *s, bool *nested, struct bh_error *err)
{
    *nested = !sqlite3_get_autocommit(s->db);
    return run(s, *nested ? STMT_SAVEPOINT : STMT_BEGIN, err);
}

static void operation_rollback(struct sqlite_store *s, bool nested)
{
    if (nested) {
        run(s, STMT_ROLLBACK_TO, NULL);
        run(s, STMT_RELEASE, NULL);
    } else if (!sqlite3_get_autocommit(s->db)) {
        run(s, STMT_ROLLBACK, NULL);
    }
}

static int operation_commit(struct sqlite_store *s, bool nested, struct bh_error *err)
{
    int status = run(s, nested ? STMT_RELEASE : STMT_COMMIT, err);

    if (status < 0)
        operation_rollback(s, nested);
    return status;
}

/* Ends an operation: commits when status is 0, or rolls back. Returns the final status. */
static int operation_end(struct sqlite_store *s, bool nested, int status, struct bh_error *err)
{
    if (status < 0) {
        operation_rollback(s, nested);
        return status;
    }
    return operation_commit(s, nested, err);
}

static const char *state_name(enum delivery_state state)
{
    switch (state) {
    case DELIVERY_PENDING:
        return "pending";
    case DELIVERY_SUCCEEDED:
        return "succeeded";
    case DELIVERY_FAILED:
        return "failed";
    case DELIVERY_CANCELLED:
        return "cancelled";
    }
    return "pending";
}

static enum delivery_state state_from_name(const char *name)
{
    if (strcmp(name, "succeeded") == 0)
        return DELIVERY_SUCCEEDED;
    if (strcmp(name, "failed") == 0)
        return DELIVERY_FAILED;
    if (strcmp(name, "cancelled") == 0)
        return DELIVERY_CANCELLED;
    return DELIVERY_PENDING;
}

static void *grow(void *items, size_t count, size_t *capacity, size_t item_size)
{
    if (count < *capacity)
        return items;
    *capacity = *capacity ? *capacity * 2 : 8;
    return xrealloc(items, *capacity * item_size);
}

/* ---- Opening, schema migrations and closing ---- */

/* Creates the folders above path that are missing, each with mode 0700. */
static int make_parent_folders(const char *path, struct bh_error *err)
{
    char *copy = xstrdup(path);
    int status = 0;

    for (char *slash = strchr(copy + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(copy, 0700) != 0 && errno != EEXIST) {
            status = bh_error_set(err, BH_ERR_IO, "", "could not create the folder %s: %s", copy,
                                  strerror(errno));
            break;
        }
        *slash = '/';
    }
    free(copy);
    return status;
}

/*
 * Creates the database file with mode 0600 when it is missing. SQLite gives its WAL and
 * shared-memory files the mode of the database file. An existing file keeps its mode.
 */
static int create_private_file(const char *path, struct bh_error *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

    if (fd < 0)
        return bh_error_set(err, BH_ERR_IO, "", "could not open the database file %s: %s", path,
                            strerror(errno));
    close(fd);
    return 0;
}

static int exec_sql(sqlite3 *db, const char *sql, const char *action, struct bh_error *err)
{
    char *message = NULL;
    int status = 0;

    if (sqlite3_exec(db, sql, NULL, NULL, &message) != SQLITE_OK) {
        status = bh_error_set(err, BH_ERR_STORE, "", "could not %s: %s", action,
                              message ? message : sqlite3_errmsg(db));
    }
    sqlite3_free(message);
    return status;
}

/* Reads a pragma that returns one value as text into out. */
static int read_pragma(sqlite3 *db, const char *sql, char *out, size_t size, struct bh_error *err)
{
    sqlite3_stmt *stmt = NULL;
    const char *text;
    int status = 0;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
        status =
            bh_error_set(err, BH_ERR_STORE, "", "could not run %s: %s", sql, sqlite3_errmsg(db));
        goto finalize;
    }
    text = (const char *)sqlite3_column_text(stmt, 0);
    snprintf(out, size, "%s", text ? text : "");

finalize:
    sqlite3_finalize(stmt);
    return status;
}

static int read_schema_version(sqlite3 *db, int *version, struct bh_error *err)
{
    char text[32];
    int status = read_pragma(db, "PRAGMA user_version", text, sizeof(text), err);

    if (status == 0)
        *version = atoi(text);
    return status;
}

/*
 * WAL lets readers run while one connection writes. synchronous=FULL syncs the WAL on every
 * commit, so a committed event and its deliveries survive a power loss, not only a crash of
 * the process. The API acknowledges an event only after its commit.
 */
static int configure(sqlite3 *db, bool in_memory, struct bh_error *err)
{
    char mode[16];
    int status;

    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    status = exec_sql(db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL",
                      "configure the connection", err);
    if (status < 0 || in_memory)
        return status;

    status = read_pragma(db, "PRAGMA journal_mode = WAL", mode, sizeof(mode), err);
    if (status < 0)
        return status;
    if (strcmp(mode, "wal") != 0)
        return bh_error_set(err, BH_ERR_STORE, "",
                            "could not switch the database to WAL mode (it stays in %s mode); "
                            "put the file on a local file system",
                            mode);
    return 0;
}

/*
 * Applies the migration after the file's current version in one transaction. The version is
 * read again under the write lock, since another process may have migrated in the meantime.
 */
static int apply_next_migration(sqlite3 *db, int *version, struct bh_error *err)
{
    char sql[64];
    int status;

    status = exec_sql(db, "BEGIN IMMEDIATE", "begin a schema migration", err);
    if (status < 0)
        return status;
    status = read_schema_version(db, version, err);
    if (status < 0 || *version >= MIGRATION_COUNT)
        goto end;

    status = exec_sql(db, migrations[*version], "apply a schema migration", err);
    if (status < 0)
        goto end;
    /* PRAGMA takes no parameters. The number comes from this file, not from input. */
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", *version + 1);
    status = exec_sql(db, sql, "record the schema version", err);
    if (status == 0)
        *version += 1;

end:
    if (status == 0)
        status = exec_sql(db, "COMMIT", "commit a schema migration", err);
    if (status < 0)
        exec_sql(db, "ROLLBACK", "roll back a schema migration", NULL);
    return status;
}

static int migrate(sqlite3 *db, const char *path, struct bh_error *err)
{
    int version = 0;
    int status = read_schema_version(db, &version, err);

    for (int step = 0; status == 0 && version < MIGRATION_COUNT && step < MIGRATION_COUNT; step++)
        status = apply_next_migration(db, &version, err);
    if (status < 0)
        return status;
    if (version > MIGRATION_COUNT)
        return bh_error_set(err, BH_ERR_STORE, "",
                            "the database %s has schema version %d, newer than the %d that this "
                            "bearhook supports; run a newer bearhook with it",
                            path, version, MIGRATION_COUNT);
    return 0;
}

static int prepare_statements(struct sqlite_store *s, struct bh_error *err)
{
    for (int i = 0; i < STMT_COUNT; i++) {
        int rc = sqlite3_prepare_v3(s->db, statement_defs[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->statements[i], NULL);
        if (rc != SQLITE_OK)
            return bh_error_set(err, BH_ERR_STORE, "", "could not prepare \"%s\": %s",
                                statement_defs[i].sql, sqlite3_errmsg(s->db));
    }
    return 0;
}

static void sqlite_close(struct store *store)
{
    struct sqlite_store *s = from_store(store);

    for (int i = 0; i < STMT_COUNT; i++)
        sqlite3_finalize(s->statements[i]);
    sqlite3_close(s->db);
    free(s);
}

int sqlite_store_schema_version(void)
{
    return MIGRATION_COUNT;
}

struct store *sqlite_store_open(const char *path, struct bh_error *err)
{
    bool in_memory = strcmp(path, ":memory:") == 0;
    struct sqlite_store *s = NULL;
    int status;

    if (path[0] == '\0') {
        bh_error_set(err, BH_ERR_INVALID, "", "the SQLite database path is empty");
        return NULL;
    }
    if (!in_memory) {
        status = make_parent_folders(path, err);
        if (status == 0)
            status = create_private_file(path, err);
        if (status < 0)
            return NULL;
    }

    s = xcalloc(1, sizeof(*s));
    s->base.ops = &sqlite_ops;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        bh_error_set(err, BH_ERR_STORE, "", "could not open the database %s: %s", path,
                     s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    status = configure(s->db, in_memory, err);
    if (status == 0)
        status = migrate(s->db, path, err);
    if (status == 0)
        status = prepare_statements(s, err);
    if (status < 0)
        goto fail;
    return &s->base;

fail:
    sqlite_close(&s->base);
    return NULL;
}

/* ---- Transactions ---- */

static int sqlite_begin(struct store *store, struct bh_error *err)
{
    return run(from_store(store), STMT_BEGIN, err);
}

static int sqlite_commit(struct store *store, struct bh_error *err)
{
    return run(from_store(store), STMT_COMMIT, err);
}

static void sqlite_rollback(struct store *store)
{
    struct sqlite_store *s = from_store(store);

    if (!sqlite3_get_autocommit(s->db))
        run(s, STMT_ROLLBACK, NULL);
}

/* ---- Users and API keys ---- */

static int insert_user(struct sqlite_store *s, const struct user *user, const char *key_hash,
                       struct bh_error *err)
{
    struct query q;
    int status;

    query_start(&q, s, STMT_USER_INSERT);
    bind_text(&q, user->id);
    bind_text(&q, user->name);
    bind_int(&q, user->created_ms);
    status = query_exec(&q, err);
    if (status < 0 || !key_hash)
        return status;

    query_start(&q, s, STMT_KEY_INSERT);
    bind_text(&q, key_hash);
    bind_text(&q, user->id);
    bind_int(&q, user->created_ms);
    return query_exec(&q, err);
}

static int sqlite_user_create(struct store *store, const struct user *user, const char *key_hash,
                              struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    bool nested;
    int status = operation_begin(s, &nested, err);

    if (status < 0)
        return status;
    status = insert_user(s, user, key_hash, err);
    return operation_end(s, nested, status, err);
}

static int sqlite_user_count(struct store *store, int64_t *count, struct bh_error *err)
{
    struct query q;
    int status;

    query_start(&q, from_store(store), STMT_USER_COUNT);
    status = query_step(&q, err);
    if (status > 0) {
        *count = column_int(&q);
        status = 0;
    }
    query_end(&q);
    return status;
}

static int sqlite_user_by_key(struct store *store, const char *key_hash, struct user *out,
                              struct bh_error *err)
{
    struct query q;
    int status;

    query_start(&q, from_store(store), STMT_USER_BY_KEY);
    bind_text(&q, key_hash);
    status = query_step(&q, err);
    if (status > 0) {
        column_text_copy(&q, out->id, sizeof(out->id));
        column_text_copy(&q, out->name, sizeof(out->name));
        out->created_ms = column_int(&q);
        status = 0;
    } else if (status == 0) {
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "", "no user has this API key");
    }
    query_end(&q);
    return status;
}

/* ---- Integrations ---- */

static int sqlite_integration_insert(struct store *store, const struct integration *integration,
                                     struct bh_error *err)
{
    const struct integration *in = integration;
    char *headers = custom_headers_to_text(in->headers, in->header_count);
    struct query q;
    int status;

    query_start(&q, from_store(store), STMT_INTEGRATION_INSERT);
    bind_text(&q, in->id);
    bind_text(&q, in->user_id);
    bind_text(&q, in->name);
    bind_text(&q, in->url);
    bind_text(&q, in->provider);
    bind_int(&q, in->signing);
    bind_text(&q, in->signing ? in->secret : NULL);
    bind_int(&q, in->events);
    bind_text(&q, headers);
    bind_int(&q, in->max_retries);
    bind_int(&q, in->timeout_ms);
    bind_int(&q, in->created_ms);
    bind_int(&q, in->updated_ms);
    bind_text(&q, in->status == INTEGRATION_ERROR ? "error" : "active");
    bind_int(&q, in->delivered);
    bind_int(&q, in->failed);
    bind_int(&q, in->last_delivery_ms);
    bind_text(&q, in->last_error);
    bind_int(&q, in->last_error_ms);
    status = query_exec(&q, err);
    free(headers);
    return status;
}

/* Parses stored custom headers. NULL text means no headers. */
static int read_headers(const char *text, const char *integration_id,
                        struct custom_header **headers, size_t *count, struct bh_error *err)
{
    *headers = NULL;
    *count = 0;
    if (!text)
        return 0;
    if (custom_headers_from_text(text, headers, count) != 0)
        return bh_error_set(err, BH_ERR_STORE, "",
                            "the stored custom headers of integration %s are not a valid JSON "
                            "object of strings",
                            integration_id);
    return 0;
}

/* Reads one row of INTEGRATION_COLUMNS into out, which integration_init prepared. */
static int read_integration(struct query *q, struct integration *out, struct bh_error *err)
{
    char status_text[16];
    char *headers;
    int status;

    column_text_copy(q, out->id, sizeof(out->id));
    column_text_copy(q, out->user_id, sizeof(out->user_id));
    out->name = column_text_dup(q);
    out->url = column_text_dup(q);
    column_text_copy(q, out->provider, sizeof(out->provider));
    out->signing = column_int(q) != 0;
    out->secret = column_text_dup(q);
    out->events = (uint32_t)column_int(q);
    headers = column_text_dup(q);
    out->max_retries = (int)column_int(q);
    out->timeout_ms = (int)column_int(q);
    out->created_ms = column_int(q);
    out->updated_ms = column_int(q);
    column_text_copy(q, status_text, sizeof(status_text));
    out->status = strcmp(status_text, "error") == 0 ? INTEGRATION_ERROR : INTEGRATION_ACTIVE;
    out->delivered = column_int(q);
    out->failed = column_int(q);
    out->last_delivery_ms = column_int(q);
    out->last_error = column_text_dup(q);
    out->last_error_ms = column_int(q);

    status = read_headers(headers, out->id, &out->headers, &out->header_count, err);
    free(headers);
    return status;
}

static int sqlite_integration_get(struct store *store, const char *user_id, const char *id,
                                  struct integration *out, struct bh_error *err)
{
    struct query q;
    int status;

    integration_init(out);
    query_start(&q, from_store(store), STMT_INTEGRATION_GET);
    bind_text(&q, id);
    bind_text(&q, user_id);
    status = query_step(&q, err);
    if (status > 0)
        status = read_integration(&q, out, err);
    else if (status == 0)
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "", "integration %s not found", id);
    query_end(&q);

    if (status < 0) {
        integration_release(out);
        integration_init(out);
    }
    return status;
}

static int sqlite_integration_list(struct store *store, const char *user_id,
                                   struct integration **out, size_t *count, struct bh_error *err)
{
    struct integration *items = NULL;
    size_t capacity = 0;
    size_t n = 0;
    struct query q;
    int status;

    query_start(&q, from_store(store), STMT_INTEGRATION_LIST);
    bind_text(&q, user_id);
    while ((status = query_step(&q, err)) > 0) {
        items = grow(items, n, &capacity, sizeof(*items));
        integration_init(&items[n]);
        n++;
        status = read_integration(&q, &items[n - 1], err);
        if (status < 0)
            break;
    }
    query_end(&q);

    if (status < 0) {
        integration_list_free(items, n);
        items = NULL;
        n = 0;
    }
    *out = items;
    *count = n;
    return status;
}

static int sqlite_integration_delete(struct store *store, const char *user_id, const char *id,
                                     struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    struct query q;
    bool nested;
    int status = operation_begin(s, &nested, err);

    if (status < 0)
        return status;
    query_start(&q, s, STMT_INTEGRATION_DELETE);
    bind_text(&q, id);
    bind_text(&q, user_id);
    status = query_exec(&q, err);
    if (status == 0 && sqlite3_changes(s->db) == 0)
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "", "integration %s not found", id);
    return operation_end(s, nested, status, err);
}

/* ---- Records ---- */

static int check_kind(enum record_kind kind, struct bh_error *err)
{
    if ((int)kind < 0 || kind >= RECORD_KIND_COUNT)
        return bh_error_set(err, BH_ERR_INVALID, "", "record kind %d is out of range", (int)kind);
    return 0;
}

static int sqlite_record_get(struct store *store, enum record_kind kind, const char *user_id,
                             const char *id, char **json_text, struct bh_error *err)
{
    struct query q;
    int status;

    *json_text = NULL;
    status = check_kind(kind, err);
    if (status < 0)
        return status;
    query_start(&q, from_store(store), STMT_RECORD_GET);
    bind_text(&q, user_id);
    bind_int(&q, kind);
    bind_text(&q, id);
    status = query_step(&q, err);
    if (status > 0) {
        *json_text = column_text_dup(&q);
        status = 0;
    } else if (status == 0) {
        status =
            bh_error_set(err, BH_ERR_NOT_FOUND, "", "%s %s not found", record_kind_name(kind), id);
    }
    query_end(&q);
    return status;
}

static int sqlite_record_put(struct store *store, enum record_kind kind, const char *user_id,
                             const char *id, const char *json_text, struct bh_error *err)
{
    struct query q;
    int status = check_kind(kind, err);

    if (status < 0)
        return status;
    /* The interface passes no time, so updated_ms is when this row was last written. */
    query_start(&q, from_store(store), STMT_RECORD_PUT);
    bind_text(&q, user_id);
    bind_int(&q, kind);
    bind_text(&q, id);
    bind_text(&q, json_text);
    bind_int(&q, clock_now_ms());
    return query_exec(&q, err);
}

static int sqlite_record_list(struct store *store, enum record_kind kind, const char *user_id,
                              const char *after_id, size_t limit, char ***json_texts, size_t *count,
                              struct bh_error *err)
{
    char **items = NULL;
    size_t capacity = 0;
    size_t n = 0;
    struct query q;
    int status;

    *json_texts = NULL;
    *count = 0;
    status = check_kind(kind, err);
    if (status < 0)
        return status;
    query_start(&q, from_store(store), STMT_RECORD_LIST);
    bind_text(&q, user_id);
    bind_int(&q, kind);
    bind_text(&q, after_id ? after_id : ""); /* every id is longer than "" */
    bind_int(&q, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    while ((status = query_step(&q, err)) > 0) {
        items = grow(items, n, &capacity, sizeof(*items));
        items[n++] = column_text_dup(&q);
    }
    query_end(&q);

    if (status < 0) {
        record_list_free(items, n);
        items = NULL;
        n = 0;
    }
    *json_texts = items;
    *count = n;
    return status;
}

/* ---- Campaign mappings and routes ---- */

static int sqlite_mapping_put(struct store *store, const char *user_id,
                              const struct mapping *mapping, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    struct query q;
    int status;

    query_start(&q, s, STMT_MAPPING_PUT);
    bind_text(&q, user_id);
    bind_text(&q, mapping->campaign_id);
    bind_int(&q, mapping->events);
    bind_int(&q, mapping->active);
    bind_int(&q, mapping->created_ms);
    bind_int(&q, mapping->updated_ms);
    bind_text(&q, mapping->integration_id);
    status = query_exec(&q, err);
    if (status == 0 && sqlite3_changes(s->db) == 0)
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "", "integration %s not found",
                              mapping->integration_id);
    return status;
}

static int sqlite_mapping_list(struct store *store, const char *user_id, const char *campaign_id,
                               struct mapping **out, size_t *count, struct bh_error *err)
{
    struct mapping *items = NULL;
    size_t capacity = 0;
    size_t n = 0;
    struct query q;
    int status;

    query_start(&q, from_store(store), STMT_MAPPING_LIST);
    bind_text(&q, user_id);
    bind_text(&q, campaign_id);
    while ((status = query_step(&q, err)) > 0) {
        struct mapping *m;

        items = grow(items, n, &capacity, sizeof(*items));
        m = &items[n++];
        column_text_copy(&q, m->campaign_id, sizeof(m->campaign_id));
        column_text_copy(&q, m->integration_id, sizeof(m->integration_id));
        m->events = (uint32_t)column_int(&q);
        m->active = column_int(&q) != 0;
        m->created_ms = column_int(&q);
        m->updated_ms = column_int(&q);
    }
    query_end(&q);

    if (status < 0) {
        free(items);
        items = NULL;
        n = 0;
    }
    *out = items;
    *count = n;
    return status;
}

static int sqlite_routes(struct store *store, const char *user_id, const char *campaign_id,
                         int type, char (**ids)[ID_LEN + 1], size_t *count, struct bh_error *err)
{
    char(*items)[ID_LEN + 1] = NULL;
    size_t capacity = 0;
    size_t n = 0;
    struct query q;
    int status;

    *ids = NULL;
    *count = 0;
    if (type < 0 || type >= 32)
        return bh_error_set(err, BH_ERR_INVALID, "", "event type %d is out of range", type);

    query_start(&q, from_store(store), STMT_ROUTES);
    bind_text(&q, user_id);
    bind_text(&q, campaign_id);
    bind_int(&q, (int64_t)1 << type);
    while ((status = query_step(&q, err)) > 0) {
        items = grow(items, n, &capacity, sizeof(*items));
        column_text_copy(&q, items[n++], sizeof(items[0]));
    }
    query_end(&q);

    if (status < 0) {
        free(items);
        return status;
    }
    *ids = items;
    *count = n;
    return 0;
}

/* ---- Events, deliveries and attempts ---- */

static int sqlite_event_insert(struct store *store, const struct event_record *event,
                               struct bh_error *err)
{
    struct query q;

    query_start(&q, from_store(store), STMT_EVENT_INSERT);
    bind_text(&q, event->id);
    bind_text(&q, event->user_id);
    bind_int(&q, event->type);
    bind_text(&q, event->lead_id);
    bind_text(&q, event->campaign_id);
    bind_text(&q, event->account_id);
    bind_int(&q, event->occurred_ms);
    bind_int(&q, event->created_ms);
    return query_exec(&q, err);
}

static int sqlite_delivery_insert(struct store *store, const struct delivery *delivery,
                                  struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    const struct delivery *d = delivery;
    struct query q;
    int status;

    query_start(&q, s, STMT_DELIVERY_INSERT);
    bind_text(&q, d->id);
    bind_text(&q, d->event_id);
    bind_text(&q, d->integration_id);
    bind_text(&q, d->user_id);
    bind_int(&q, d->event_type);
    bind_blob(&q, d->body ? d->body : "", d->body_len);
    bind_text(&q, state_name(d->state));
    bind_int(&q, d->attempts);
    bind_int(&q, d->next_attempt_ms);
    bind_int(&q, d->last_http_status);
    bind_text(&q, d->last_error);
    bind_int(&q, d->created_ms);
    bind_int(&q, d->updated_ms);
    status = query_exec(&q, err);
    if (status == 0 && sqlite3_changes(s->db) == 0)
        status =
            bh_error_set(err, BH_ERR_NOT_FOUND, "", "integration %s not found", d->integration_id);
    return status;
}

static void read_delivery(struct query *q, struct delivery *out)
{
    char state[16];

    column_text_copy(q, out->id, sizeof(out->id));
    column_text_copy(q, out->event_id, sizeof(out->event_id));
    column_text_copy(q, out->integration_id, sizeof(out->integration_id));
    column_text_copy(q, out->user_id, sizeof(out->user_id));
    out->event_type = (int)column_int(q);
    out->body = column_blob_dup(q, &out->body_len);
    column_text_copy(q, state, sizeof(state));
    out->state = state_from_name(state);
    out->attempts = (int)column_int(q);
    out->next_attempt_ms = column_int(q);
    out->last_http_status = (int)column_int(q);
    out->last_error = column_text_dup(q);
    out->created_ms = column_int(q);
    out->updated_ms = column_int(q);
}

static int sqlite_delivery_get(struct store *store, const char *user_id, const char *id,
                               struct delivery *out, struct bh_error *err)
{
    struct query q;
    int status;

    memset(out, 0, sizeof(*out));
    query_start(&q, from_store(store), STMT_DELIVERY_GET);
    bind_text(&q, id);
    bind_text(&q, user_id);
    status = query_step(&q, err);
    if (status > 0) {
        read_delivery(&q, out);
        status = 0;
    } else if (status == 0) {
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "", "delivery %s not found", id);
    }
    query_end(&q);
    return status;
}

static int sqlite_attempt_list(struct store *store, const char *delivery_id, struct attempt **out,
                               size_t *count, struct bh_error *err)
{
    struct attempt *items = NULL;
    size_t capacity = 0;
    size_t n = 0;
    struct query q;
    int status;

    query_start(&q, from_store(store), STMT_ATTEMPT_LIST);
    bind_text(&q, delivery_id);
    while ((status = query_step(&q, err)) > 0) {
        struct attempt *a;

        items = grow(items, n, &capacity, sizeof(*items));
        a = &items[n++];
        a->number = (int)column_int(&q);
        a->started_ms = column_int(&q);
        a->duration_ms = (int)column_int(&q);
        a->http_status = (int)column_int(&q);
        a->error = column_text_dup(&q);
        a->response_excerpt = column_blob_dup(&q, &a->response_excerpt_len);
    }
    query_end(&q);

    if (status < 0) {
        attempt_list_free(items, n);
        items = NULL;
        n = 0;
    }
    *out = items;
    *count = n;
    return status;
}

/* ---- Claims, leases and outcomes ---- */

/* Reads one row of STMT_CLAIM_SELECT into job. */
static int read_job(struct query *q, struct delivery_job *job, struct bh_error *err)
{
    char *headers;
    int status;

    memset(job, 0, sizeof(*job));
    column_text_copy(q, job->delivery_id, sizeof(job->delivery_id));
    column_text_copy(q, job->event_id, sizeof(job->event_id));
    column_text_copy(q, job->integration_id, sizeof(job->integration_id));
    column_text_copy(q, job->user_id, sizeof(job->user_id));
    job->body = column_blob_dup(q, &job->body_len);
    job->attempts_before = (int)column_int(q);
    job->url = column_text_dup(q);
    job->signing = column_int(q) != 0;
    job->secret = column_text_dup(q);
    headers = column_text_dup(q);
    job->timeout_ms = (int)column_int(q);
    job->max_retries = (int)column_int(q);

    if (!job->signing) {
        free(job->secret);
        job->secret = NULL;
    }
    status = read_headers(headers, job->integration_id, &job->headers, &job->header_count, err);
    free(headers);
    return status;
}

static int select_due(struct sqlite_store *s, int64_t now_ms, size_t limit,
                      struct delivery_job **jobs, size_t *count, struct bh_error *err)
{
    struct delivery_job *items = NULL;
    size_t capacity = 0;
    size_t n = 0;
    struct query q;
    int status;

    query_start(&q, s, STMT_CLAIM_SELECT);
    bind_int(&q, now_ms);
    bind_int(&q, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    while ((status = query_step(&q, err)) > 0) {
        items = grow(items, n, &capacity, sizeof(*items));
        status = read_job(&q, &items[n++], err);
        if (status < 0)
            break;
    }
    query_end(&q);

    *jobs = items;
    *count = n;
    return status;
}

static int lease_jobs(struct sqlite_store *s, const char *owner, int64_t until_ms,
                      const struct delivery_job *jobs, size_t count, struct bh_error *err)
{
    for (size_t i = 0; i < count; i++) {
        struct query q;
        int status;

        query_start(&q, s, STMT_CLAIM_LEASE);
        bind_text(&q, owner);
        bind_int(&q, until_ms);
        bind_text(&q, jobs[i].delivery_id);
        status = query_exec(&q, err);
        if (status < 0)
            return status;
    }
    return 0;
}

static int sqlite_delivery_claim(struct store *store, const char *owner, int64_t now_ms,
                                 int64_t lease_ms, size_t limit, struct delivery_job **jobs,
                                 size_t *count, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    struct delivery_job *items = NULL;
    size_t n = 0;
    bool nested;
    int status;

    *jobs = NULL;
    *count = 0;
    if (limit == 0)
        return 0;
    if (strlen(owner) > LEASE_OWNER_MAX)
        return bh_error_set(err, BH_ERR_INVALID, "", "the lease owner %s is longer than %d bytes",
                            owner, LEASE_OWNER_MAX);

    status = operation_begin(s, &nested, err);
    if (status < 0)
        return status;
    status = select_due(s, now_ms, limit, &items, &n, err);
    if (status == 0)
        status = lease_jobs(s, owner, now_ms + lease_ms, items, n, err);
    status = operation_end(s, nested, status, err);

    if (status < 0) {
        delivery_job_list_free(items, n);
        return status;
    }
    *jobs = items;
    *count = n;
    return 0;
}

static int sqlite_delivery_next_due(struct store *store, int64_t *due_ms, struct bh_error *err)
{
    struct query q;
    int status;

    *due_ms = -1;
    query_start(&q, from_store(store), STMT_NEXT_DUE);
    status = query_step(&q, err);
    if (status > 0) {
        if (sqlite3_column_type(q.stmt, 0) != SQLITE_NULL)
            *due_ms = column_int(&q);
        status = 0;
    }
    query_end(&q);
    return status;
}

/*
 * Moves the delivery out of its lease. Sets *number to the attempt's number and copies the
 * delivery's integration id. Returns BH_ERR_NOT_FOUND when the lease owner changed or the
 * delivery is gone or no longer pending.
 */
static int finish_delivery(struct sqlite_store *s, const struct attempt_outcome *o, int *number,
                           char integration_id[ID_LEN + 1], struct bh_error *err)
{
    struct query q;
    int status;

    query_start(&q, s, STMT_FINISH_DELIVERY);
    bind_text(&q, state_name(o->new_state));
    bind_int(&q, o->next_attempt_ms);
    bind_int(&q, o->http_status);
    bind_text(&q, o->error);
    bind_int(&q, o->started_ms + o->duration_ms);
    bind_text(&q, o->delivery_id);
    bind_text(&q, o->lease_owner);
    status = query_step(&q, err);
    if (status > 0) {
        *number = (int)column_int(&q);
        column_text_copy(&q, integration_id, ID_LEN + 1);
        status = 0;
    } else if (status == 0) {
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "",
                              "delivery %s is not pending under a lease of %s", o->delivery_id,
                              o->lease_owner);
    }
    query_end(&q);
    return status;
}

static int insert_attempt(struct sqlite_store *s, const struct attempt_outcome *o, int number,
                          struct bh_error *err)
{
    size_t excerpt_len = o->response_excerpt_len;
    struct query q;

    if (excerpt_len > RESPONSE_EXCERPT_MAX)
        excerpt_len = RESPONSE_EXCERPT_MAX;
    query_start(&q, s, STMT_FINISH_ATTEMPT);
    bind_text(&q, o->delivery_id);
    bind_int(&q, number);
    bind_int(&q, o->started_ms);
    bind_int(&q, o->duration_ms);
    bind_int(&q, o->http_status);
    bind_text(&q, o->error);
    bind_blob(&q, o->response_excerpt, excerpt_len);
    return query_exec(&q, err);
}

static int update_statistics(struct sqlite_store *s, const struct attempt_outcome *o,
                             const char *integration_id, struct bh_error *err)
{
    struct query q;

    query_start(&q, s, STMT_FINISH_STATISTICS);
    bind_int(&q, o->started_ms + o->duration_ms);
    bind_text(&q, o->error);
    bind_int(&q, o->new_state == DELIVERY_SUCCEEDED);
    bind_int(&q, o->new_state == DELIVERY_FAILED);
    bind_text(&q, integration_id);
    return query_exec(&q, err);
}

static int sqlite_delivery_finish(struct store *store, const struct attempt_outcome *outcome,
                                  struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    char integration_id[ID_LEN + 1];
    int number = 0;
    bool nested;
    int status;

    if (outcome->new_state == DELIVERY_CANCELLED)
        return bh_error_set(err, BH_ERR_INVALID, "",
                            "an attempt cannot cancel delivery %s; its new state must be "
                            "pending, succeeded or failed",
                            outcome->delivery_id);

    status = operation_begin(s, &nested, err);
    if (status < 0)
        return status;
    status = finish_delivery(s, outcome, &number, integration_id, err);
    if (status == 0)
        status = insert_attempt(s, outcome, number, err);
    if (status == 0)
        status = update_statistics(s, outcome, integration_id, err);
    return operation_end(s, nested, status, err);
}

static int sqlite_release_all_leases(struct store *store, struct bh_error *err)
{
    return run(from_store(store), STMT_RELEASE_LEASES, err);
}

static const struct store_ops sqlite_ops = {
    .close = sqlite_close,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .user_create = sqlite_user_create,
    .user_count = sqlite_user_count,
    .user_by_key = sqlite_user_by_key,
    .integration_insert = sqlite_integration_insert,
    .integration_get = sqlite_integration_get,
    .integration_list = sqlite_integration_list,
    .integration_delete = sqlite_integration_delete,
    .record_get = sqlite_record_get,
    .record_put = sqlite_record_put,
    .record_list = sqlite_record_list,
    .mapping_put = sqlite_mapping_put,
    .mapping_list = sqlite_mapping_list,
    .routes = sqlite_routes,
    .event_insert = sqlite_event_insert,
    .delivery_insert = sqlite_delivery_insert,
    .delivery_get = sqlite_delivery_get,
    .attempt_list = sqlite_attempt_list,
    .delivery_claim = sqlite_delivery_claim,
    .delivery_next_due = sqlite_delivery_next_due,
    .delivery_finish = sqlite_delivery_finish,
    .release_all_leases = sqlite_release_all_leases,
};
