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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/clock.h"
#include "core/payload.h"
#include "store/backend.h"
#include "util/alloc.h"
#include "util/log.h"

#define BUSY_TIMEOUT_MS 5000
/* WAL pages after which a commit requests a checkpoint, the limit of SQLite's automatic one. */
#define CHECKPOINT_PAGES 1000
/* A checkpoint round stops its unlocked passes once one copies fewer frames than this. */
#define CATCHUP_FRAMES 100
#define CATCHUP_PASSES 4 /* the most unlocked passes in one checkpoint round */

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

    /*
     * 2: claims without scans. A leased delivery leaves deliveries_ready_by_integration, so a
     * claim reads only claimable rows, one integration at a time. deliveries_leased finds
     * expired leases.
     */
    "DROP INDEX deliveries_due;"
    "CREATE INDEX deliveries_ready_by_integration "
    "  ON deliveries(integration_id, next_attempt_ms, id) "
    "  WHERE state = 'pending' AND lease_until_ms IS NULL;"
    "CREATE INDEX deliveries_leased ON deliveries(lease_until_ms, next_attempt_ms) "
    "  WHERE state = 'pending' AND lease_until_ms IS NOT NULL;",

    /* 3: a lead export finds the lead's latest campaign without reading every event. */
    "CREATE INDEX events_lead ON events(user_id, lead_id, created_ms);",

    /*
     * 4: client event ids, so a repeated POST /v1/events gets the response of the first one, and an
     * index that lets the retention purge find finished deliveries by age without a scan.
     */
    "CREATE TABLE idempotency_keys ("
    "  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  client_event_id TEXT NOT NULL,"
    "  request_hash TEXT NOT NULL,"
    "  answer TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (user_id, client_event_id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX idempotency_keys_created ON idempotency_keys(created_ms);"
    "CREATE INDEX deliveries_finished ON deliveries(updated_ms) WHERE state <> 'pending';",

    /*
     * 5: the delivery log. deliveries_log pages through an integration's deliveries by
     * (created_ms, id) and replaces deliveries_integration, its prefix; deliveries_log_state
     * does the same within one state. attempts_base is the attempt count when the delivery was
     * last sent again, so its retries count from there.
     */
    "ALTER TABLE deliveries ADD COLUMN attempts_base INTEGER NOT NULL DEFAULT 0;"
    "DROP INDEX deliveries_integration;"
    "CREATE INDEX deliveries_log ON deliveries(integration_id, created_ms, id);"
    "CREATE INDEX deliveries_log_state ON deliveries(integration_id, state, created_ms, id);",

    /* 6: test deliveries, which are logged but count in no statistics. */
    "ALTER TABLE deliveries ADD COLUMN is_test INTEGER NOT NULL DEFAULT 0;",

    /*
     * 7: an event's deliveries differ only in the integration id at the end of their bodies.
     * The body up to there is stored once, in events.payload_prefix, and a delivery with
     * body_shared = 1 stores an empty body, which saves a kilobyte or more per delivery.
     */
    "ALTER TABLE events ADD COLUMN payload_prefix BLOB;"
    "ALTER TABLE deliveries ADD COLUMN body_shared INTEGER NOT NULL DEFAULT 0;",

    /*
     * 8: no query reads deliveries by event, and events are never deleted, so deliveries_event
     * served nothing while every delivery insert paid for it. A purge of events would need it
     * back, for the ON DELETE CASCADE to find an event's deliveries.
     */
    "DROP INDEX deliveries_event;",
};

#define MIGRATION_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

#define INTEGRATION_COLUMNS                                                                        \
    "id, user_id, name, url, provider, signing, secret, events, headers, max_retries, "            \
    "timeout_ms, created_ms, updated_ms, status, delivered, failed, last_delivery_ms, "            \
    "last_error, last_error_ms"

/* The columns of a claimed delivery that append_job reads, in its order. */
/* attempts - attempts_base: the attempts since the delivery was created or last sent
 * again, which the retry budget counts. */
#define JOB_COLUMNS                                                                                \
    "id, event_id, integration_id, user_id, body, attempts - attempts_base, is_test, body_shared"

#define DELIVERY_COLUMNS                                                                           \
    "id, event_id, integration_id, user_id, event_type, body, state, attempts, "                   \
    "next_attempt_ms, last_http_status, last_error, created_ms, updated_ms, is_test, body_shared"

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
    STMT_INTEGRATION_UPDATE,
    STMT_INTEGRATION_SHRINK_READ,
    STMT_INTEGRATION_SHRINK,
    STMT_RECORD_GET,
    STMT_RECORD_PUT,
    STMT_RECORD_LIST,
    STMT_MAPPING_PUT,
    STMT_MAPPING_LIST,
    STMT_ROUTES,
    STMT_EVENT_INSERT,
    STMT_EVENT_PAYLOAD_PREFIX,
    STMT_DELIVERY_INSERT,
    STMT_DELIVERY_GET,
    STMT_ATTEMPT_LIST,
    STMT_CLAIM_EXPIRED,
    STMT_CLAIM_NEXT_INTEGRATION,
    STMT_CLAIM_READY,
    STMT_CLAIM_INTEGRATION,
    STMT_CLAIM_LEASE,
    STMT_CLAIM_LEASE_READY,
    STMT_NEXT_DUE,
    STMT_FINISH_DELIVERY,
    STMT_FINISH_READ,
    STMT_FINISH_ATTEMPT,
    STMT_FINISH_STATISTICS,
    STMT_RELEASE_LEASES,
    STMT_MAPPING_GET,
    STMT_MAPPING_DELETE,
    STMT_LEAD_LATEST_CAMPAIGN,
    /* Idempotency keys and retention. */
    STMT_IDEMPOTENCY_GET,
    STMT_IDEMPOTENCY_PUT,
    STMT_PURGE_FINISHED_SELECT,
    STMT_PURGE_ATTEMPTS,
    STMT_PURGE_DELIVERY,
    STMT_PURGE_IDEMPOTENCY,
    /* The delivery log. */
    STMT_DELIVERY_LIST,
    STMT_DELIVERY_LIST_STATE,
    STMT_DELIVERY_REDELIVER,
    STMT_DELIVERY_RECOVER,
    STMT_DELIVERY_REOPEN_STATISTICS,
    STMT_COUNT
};

struct statement_def {
    const char *sql;
    const char *action; /* completes "could not ..." in error messages */
};

/* Parameters are numbered in the order the functions below bind them. */
/* The delivery log's list: ?6 is an event type or -1, ?7 the row limit. */
#define DELIVERY_LIST_SELECT                                                                       \
    "SELECT id, event_id, integration_id, user_id, event_type, NULL, state, attempts, "            \
    "next_attempt_ms, last_http_status, last_error, created_ms, updated_ms, is_test, 0 "           \
    "FROM deliveries WHERE integration_id = ?1 AND user_id = ?2 "                                  \
    "AND created_ms >= ?3 AND created_ms <= ?4 AND (created_ms < ?4 OR id < ?5) "                  \
    "AND (?6 < 0 OR event_type = ?6) "

static const struct statement_def statement_defs[STMT_COUNT] = {
    /*
     * The delivery log. Each list reads its index backwards from the page's upper bound
     * (?4, ?5); the body column is left out as NULL.
     */
    [STMT_DELIVERY_LIST] = {DELIVERY_LIST_SELECT "ORDER BY created_ms DESC, id DESC LIMIT ?7",
                            "list deliveries"},
    [STMT_DELIVERY_LIST_STATE] = {DELIVERY_LIST_SELECT "AND state = ?8 "
                                                       "ORDER BY created_ms DESC, id DESC LIMIT ?7",
                                  "list deliveries in one state"},
    [STMT_DELIVERY_REDELIVER] = {"UPDATE deliveries SET state = 'pending', next_attempt_ms = ?1, "
                                 "attempts_base = attempts, lease_owner = NULL, "
                                 "lease_until_ms = NULL, updated_ms = ?1 "
                                 "WHERE id = ?2 AND user_id = ?3 "
                                 "AND state IN ('succeeded', 'failed')",
                                 "send a delivery again"},
    [STMT_DELIVERY_RECOVER] = {"UPDATE deliveries SET state = 'pending', next_attempt_ms = ?1, "
                               "attempts_base = attempts, lease_owner = NULL, "
                               "lease_until_ms = NULL, updated_ms = ?1 "
                               "WHERE integration_id = ?2 AND user_id = ?3 "
                               "AND state = 'failed' AND created_ms >= ?4 AND is_test = 0",
                               "recover failed deliveries"},
    [STMT_DELIVERY_REOPEN_STATISTICS] = {"UPDATE integrations SET "
                                         "delivered = MAX(0, delivered - ?1), "
                                         "failed = MAX(0, failed - ?2) WHERE id = ?3",
                                         "update integration statistics"},
    [STMT_IDEMPOTENCY_GET] = {"SELECT request_hash, answer FROM idempotency_keys "
                              "WHERE user_id = ?1 AND client_event_id = ?2",
                              "read an idempotency key"},
    [STMT_IDEMPOTENCY_PUT] = {"INSERT INTO idempotency_keys (user_id, client_event_id, "
                              "request_hash, answer, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                              "save an idempotency key"},
    /* Reads deliveries_finished alone; pending deliveries are not in that index. */
    [STMT_PURGE_FINISHED_SELECT] = {"SELECT id FROM deliveries WHERE state <> 'pending' "
                                    "AND updated_ms < ?1 ORDER BY updated_ms LIMIT ?2",
                                    "find finished deliveries to purge"},
    [STMT_PURGE_ATTEMPTS] = {"DELETE FROM attempts WHERE delivery_id = ?1",
                             "purge the attempts of a delivery"},
    [STMT_PURGE_DELIVERY] = {"DELETE FROM deliveries WHERE id = ?1 AND state <> 'pending'",
                             "purge a finished delivery"},
    [STMT_PURGE_IDEMPOTENCY] = {"DELETE FROM idempotency_keys WHERE (user_id, client_event_id) "
                                "IN (SELECT user_id, client_event_id FROM idempotency_keys "
                                "WHERE created_ms < ?1 ORDER BY created_ms LIMIT ?2)",
                                "purge idempotency keys"},
    [STMT_MAPPING_GET] = {"SELECT campaign_id, integration_id, events, active, created_ms, "
                          "updated_ms FROM mappings WHERE user_id = ?1 AND campaign_id = ?2 "
                          "AND integration_id = ?3",
                          "read a campaign mapping"},
    [STMT_MAPPING_DELETE] = {"DELETE FROM mappings WHERE user_id = ?1 AND campaign_id = ?2 "
                             "AND integration_id = ?3",
                             "delete a campaign mapping"},
    /* rowid breaks ties between events accepted in the same millisecond. */
    [STMT_LEAD_LATEST_CAMPAIGN] = {"SELECT campaign_id FROM events WHERE user_id = ?1 "
                                   "AND lead_id = ?2 AND campaign_id IS NOT NULL "
                                   "ORDER BY created_ms DESC, rowid DESC LIMIT 1",
                                   "find the latest campaign of a lead"},
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
    [STMT_INTEGRATION_UPDATE] = {"UPDATE integrations SET name = ?1, url = ?2, provider = ?3, "
                                 "signing = ?4, secret = ?5, events = ?6, headers = ?7, "
                                 "max_retries = ?8, timeout_ms = ?9, updated_ms = ?10 "
                                 "WHERE id = ?11 AND user_id = ?12",
                                 "update an integration"},
    /*
     * Reads the mappings that enable events outside ?1, the new events, as the shrink leaves
     * them.
     */
    [STMT_INTEGRATION_SHRINK_READ] = {"SELECT campaign_id, integration_id, events & ?1, active, "
                                      "created_ms, ?2 FROM mappings "
                                      "WHERE user_id = ?3 AND integration_id = ?4 "
                                      "AND (events & ~?1) <> 0 ORDER BY campaign_id",
                                      "read the mappings that an integration update changes"},
    [STMT_INTEGRATION_SHRINK] = {"UPDATE mappings SET events = events & ?1, updated_ms = ?2 "
                                 "WHERE user_id = ?3 AND integration_id = ?4 "
                                 "AND (events & ~?1) <> 0",
                                 "remove events from campaign mappings"},
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
                           "account_id, occurred_ms, created_ms, payload_prefix) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                           "insert an event"},
    [STMT_EVENT_PAYLOAD_PREFIX] = {"SELECT payload_prefix FROM events WHERE id = ?1",
                                   "read the payload prefix of an event"},
    /* The SELECT makes a delivery to a missing or another user's integration insert nothing. */
    [STMT_DELIVERY_INSERT] = {"INSERT INTO deliveries (" DELIVERY_COLUMNS ") "
                              "SELECT ?1, ?2, id, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
                              "?15 "
                              "FROM integrations WHERE id = ?3 AND user_id = ?4",
                              "insert a delivery"},
    [STMT_DELIVERY_GET] = {"SELECT " DELIVERY_COLUMNS " FROM deliveries "
                           "WHERE id = ?1 AND user_id = ?2",
                           "read a delivery"},
    [STMT_ATTEMPT_LIST] = {"SELECT number, started_ms, duration_ms, http_status, error, "
                           "response_excerpt FROM attempts WHERE delivery_id = ?1 "
                           "ORDER BY number",
                           "list attempts"},
    /*
     * The literal terms state = 'pending' and lease_until_ms IS [NOT] NULL let the planner use
     * the partial indexes of migration 2; rowid and integration_id come from the index alone.
     */
    [STMT_CLAIM_EXPIRED] = {"SELECT rowid, " JOB_COLUMNS " FROM deliveries "
                            "WHERE state = 'pending' AND lease_until_ms IS NOT NULL "
                            "AND lease_until_ms < ?1 AND next_attempt_ms <= ?1 "
                            "ORDER BY lease_until_ms",
                            "select deliveries whose lease expired"},
    [STMT_CLAIM_NEXT_INTEGRATION] = {"SELECT integration_id FROM deliveries "
                                     "WHERE state = 'pending' AND lease_until_ms IS NULL "
                                     "AND integration_id > ?1 ORDER BY integration_id LIMIT 1",
                                     "find the next integration with pending deliveries"},
    [STMT_CLAIM_READY] = {"SELECT rowid, " JOB_COLUMNS " FROM deliveries "
                          "WHERE integration_id = ?1 AND state = 'pending' "
                          "AND lease_until_ms IS NULL AND next_attempt_ms <= ?2 "
                          "ORDER BY next_attempt_ms, id LIMIT ?3",
                          "select due deliveries"},
    [STMT_CLAIM_INTEGRATION] = {"SELECT url, signing, secret, headers, timeout_ms, max_retries "
                                "FROM integrations WHERE id = ?1",
                                "read the integration of a claimed delivery"},
    [STMT_CLAIM_LEASE] = {"UPDATE deliveries SET lease_owner = ?1, lease_until_ms = ?2 "
                          "WHERE rowid = ?3",
                          "lease a delivery"},
    /* Leases the rows that STMT_CLAIM_READY just returned: the same query and limit. */
    [STMT_CLAIM_LEASE_READY] = {"UPDATE deliveries SET lease_owner = ?1, lease_until_ms = ?2 "
                                "WHERE rowid IN (SELECT rowid FROM deliveries "
                                "WHERE integration_id = ?3 AND state = 'pending' "
                                "AND lease_until_ms IS NULL AND next_attempt_ms <= ?4 "
                                "ORDER BY next_attempt_ms, id LIMIT ?5)",
                                "lease due deliveries"},
    /*
     * The earliest unleased due time is the least of each integration's first entry in
     * deliveries_ready_by_integration, which the recursive part visits one integration at a
     * time. A leased delivery becomes claimable 1 ms after its lease ends.
     */
    [STMT_NEXT_DUE] = {"WITH RECURSIVE ready(integration_id) AS ("
                       "SELECT (SELECT MIN(integration_id) FROM deliveries "
                       "WHERE state = 'pending' AND lease_until_ms IS NULL) "
                       "UNION ALL "
                       "SELECT (SELECT MIN(integration_id) FROM deliveries "
                       "WHERE state = 'pending' AND lease_until_ms IS NULL "
                       "AND integration_id > ready.integration_id) "
                       "FROM ready WHERE ready.integration_id IS NOT NULL) "
                       "SELECT MIN(due_ms) FROM ("
                       "SELECT (SELECT MIN(next_attempt_ms) FROM deliveries "
                       "WHERE integration_id = ready.integration_id AND state = 'pending' "
                       "AND lease_until_ms IS NULL) AS due_ms "
                       "FROM ready WHERE ready.integration_id IS NOT NULL "
                       "UNION ALL "
                       "SELECT MIN(MAX(next_attempt_ms, lease_until_ms + 1)) FROM deliveries "
                       "WHERE state = 'pending' AND lease_until_ms IS NOT NULL)",
                       "find the next due delivery"},
    /*
     * ?8 is the outcome's row_ref. A nonzero one finds the row by rowid, and the id check keeps
     * a wrong one from touching another row. With 0 the row is found by id.
     */
    [STMT_FINISH_DELIVERY] = {"UPDATE deliveries SET state = ?1, attempts = attempts + 1, "
                              "next_attempt_ms = CASE WHEN ?1 = 'pending' THEN ?2 "
                              "ELSE next_attempt_ms END, "
                              "lease_owner = NULL, lease_until_ms = NULL, "
                              "last_http_status = ?3, last_error = ?4, updated_ms = ?5 "
                              "WHERE rowid = (SELECT CASE WHEN ?8 <> 0 THEN ?8 ELSE "
                              "(SELECT rowid FROM deliveries WHERE id = ?6) END) "
                              "AND id = ?6 AND lease_owner = ?7 AND state = 'pending'",
                              "update a delivery"},
    /* Read after STMT_FINISH_DELIVERY, in place of a RETURNING clause, which costs more. */
    [STMT_FINISH_READ] = {"SELECT attempts, integration_id FROM deliveries "
                          "WHERE rowid = (SELECT CASE WHEN ?2 <> 0 THEN ?2 ELSE "
                          "(SELECT rowid FROM deliveries WHERE id = ?1) END) AND id = ?1",
                          "read a finished delivery"},
    [STMT_FINISH_ATTEMPT] = {"INSERT INTO attempts (delivery_id, number, started_ms, "
                             "duration_ms, http_status, error, response_excerpt) "
                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                             "insert an attempt"},
    /* ?6 is the status that the batch's last ended delivery sets, or NULL to keep it. */
    [STMT_FINISH_STATISTICS] = {"UPDATE integrations SET "
                                "last_delivery_ms = MAX(last_delivery_ms, ?1), "
                                "last_error = COALESCE(?2, last_error), "
                                "last_error_ms = CASE WHEN ?2 IS NULL THEN last_error_ms "
                                "ELSE ?3 END, "
                                "delivered = delivered + ?4, failed = failed + ?5, "
                                "status = COALESCE(?6, status) "
                                "WHERE id = ?7",
                                "update integration statistics"},
    [STMT_RELEASE_LEASES] = {"UPDATE deliveries SET lease_owner = NULL, lease_until_ms = NULL "
                             "WHERE lease_owner IS NOT NULL OR lease_until_ms IS NOT NULL",
                             "release leases"},
};

/*
 * Connections of this process take turns at write transactions on this mutex before SQLite's
 * own lock. Without it, the ingest committer and the dispatcher contend in SQLite's busy
 * handler, which sleeps for up to 100 ms per try and so adds whole milliseconds of latency.
 * A process uses one database, so one mutex serves every connection. Other processes on the
 * same file still wait in the busy handler. The checkpointer also takes it for the last pass of
 * each checkpoint (checkpoint_round).
 *
 * A thread takes writer_turnstile before writer_lock and lets it go once it has writer_lock.
 * glibc's mutex does not hand itself to a waiter, so without the turnstile a thread that
 * commits and begins again at once takes writer_lock back before the waiter wakes, every time.
 * A waiter that has taken the turnstile stops the next begin until it has had its turn.
 */
static pthread_mutex_t writer_turnstile = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t writer_lock = PTHREAD_MUTEX_INITIALIZER;

static void writer_lock_take(void)
{
    pthread_mutex_lock(&writer_turnstile);
    pthread_mutex_lock(&writer_lock);
    pthread_mutex_unlock(&writer_turnstile);
}

/*
 * Checkpoints run on a thread of their own, one per database file in the process, with a
 * connection of its own. SQLite's automatic checkpoint runs inside the commit that takes the
 * WAL past its limit, so that commit, and every writer of the process waiting on writer_lock
 * behind it, would wait for the copying and the syncs. Each connection's WAL hook wakes the
 * checkpointer instead. A passive checkpoint copies the frames that no reader still needs
 * without waiting for readers or writers (SQLite's documentation of sqlite3_wal_checkpoint_v2),
 * and the next one copies what it left.
 */
struct checkpointer {
    char *path;
    size_t users; /* open connections of this file, the last of which stops the thread */
    sqlite3 *db;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool due;      /* under lock */
    bool stopping; /* under lock */
    struct checkpointer *next;
};

static pthread_mutex_t checkpointers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct checkpointer *checkpointers;

/*
 * Copies the WAL into the database file, and then leaves it fully copied, so that the next
 * write transaction starts it over from the beginning. A passive checkpoint copies the frames
 * that exist when it starts, while this process's writers go on adding more. Without the last
 * pass, a process that commits without pause never lets SQLite restart the WAL, which then
 * grows as long as the load lasts: to 76 MB in a 3 s benchmark. Passes without a lock repeat
 * until one finds fewer than CATCHUP_FRAMES new frames (or CATCHUP_PASSES ran). The last pass
 * then takes writer_lock, so no writer of this process adds frames while it copies the rest
 * and syncs. In the latency benchmark it held the lock for 0.9 ms on average and 5 ms at most.
 * Readers of old frames and writers in other processes can still put the restart off to a
 * later round.
 */
static int checkpoint_round(struct checkpointer *c)
{
    int wal_frames = 0;
    int copied = 0;
    int copied_before = 0;
    int rc;

    for (int pass = 0; pass < CATCHUP_PASSES; pass++) {
        rc =
            sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &wal_frames, &copied);
        /* A short WAL has started over since the hook asked for this round. */
        if (rc != SQLITE_OK || wal_frames < CHECKPOINT_PAGES)
            return rc;
        /* copied counts from the WAL's first frame, so the first pass never stops the loop. */
        if (copied - copied_before < CATCHUP_FRAMES)
            break;
        copied_before = copied;
    }
    writer_lock_take();
    rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    pthread_mutex_unlock(&writer_lock);
    return rc;
}

static void *run_checkpointer(void *arg)
{
    struct checkpointer *c = arg;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        int rc;

        while (!c->due && !c->stopping)
            pthread_cond_wait(&c->wake, &c->lock);
        if (c->stopping)
            break;
        c->due = false;
        pthread_mutex_unlock(&c->lock);

        rc = checkpoint_round(c);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            log_warn("store", "WAL checkpoint failed, the next full WAL retries it error=\"%s\"",
                     sqlite3_errmsg(c->db));
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void checkpointer_free(struct checkpointer *c)
{
    sqlite3_close(c->db);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->wake);
    free(c->path);
    free(c);
}

/* Returns the checkpointer of path, started if new, or NULL when it cannot start. */
static struct checkpointer *checkpointer_attach(const char *path)
{
    struct checkpointer *c;

    pthread_mutex_lock(&checkpointers_lock);
    for (c = checkpointers; c != NULL && strcmp(c->path, path) != 0; c = c->next)
        ;
    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        c->path = xstrdup(path);
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->wake, NULL);
        /* The first read opens the WAL; a connection that has not read checkpoints nothing. */
        if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
            sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS) != SQLITE_OK ||
            sqlite3_exec(c->db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) !=
                SQLITE_OK ||
            pthread_create(&c->thread, NULL, run_checkpointer, c) != 0) {
            checkpointer_free(c);
            pthread_mutex_unlock(&checkpointers_lock);
            return NULL;
        }
        pthread_setname_np(c->thread, "bh-checkpoint");
        c->next = checkpointers;
        checkpointers = c;
    }
    c->users++;
    pthread_mutex_unlock(&checkpointers_lock);
    return c;
}

/*
 * NOTE: a thread must not close the last connection of a file while it holds writer_lock
 * through another connection. The checkpointer may be waiting for writer_lock, and the join
 * below would never end. sqlite_close releases its own connection's lock first.
 */
static void checkpointer_detach(struct checkpointer *c)
{
    struct checkpointer **link;

    pthread_mutex_lock(&checkpointers_lock);
    if (--c->users > 0) {
        pthread_mutex_unlock(&checkpointers_lock);
        return;
    }
    for (link = &checkpointers; *link != c; link = &(*link)->next)
        ;
    *link = c->next;
    pthread_mutex_unlock(&checkpointers_lock);

    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    checkpointer_free(c);
}

/* SQLite calls this after each commit with the pages in the WAL. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *schema, int pages)
{
    struct checkpointer *c = arg;

    (void)db;
    (void)schema;
    if (pages < CHECKPOINT_PAGES)
        return SQLITE_OK;
    pthread_mutex_lock(&c->lock);
    c->due = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->lock);
    return SQLITE_OK;
}

struct sqlite_store {
    struct store base; /* first, so a struct store pointer converts to this struct */
    sqlite3 *db;
    sqlite3_stmt *statements[STMT_COUNT];
    bool holds_writer_lock;            /* this connection's transaction holds writer_lock */
    struct checkpointer *checkpointer; /* NULL for an in-memory database */

    /* For sqlite_sync. */
    char *wal_path;  /* NULL for an in-memory database */
    char *dir_path;  /* the folder of the database and its WAL */
    int wal_fd;      /* opened at the first sync, -1 before */
    bool dir_synced; /* the folder was synced once the WAL was open, so its entry is durable */
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

/* Reads a mapping row: campaign_id, integration_id, events, active, created_ms, updated_ms. */
static void read_mapping(struct query *q, struct mapping *m)
{
    column_text_copy(q, m->campaign_id, sizeof(m->campaign_id));
    column_text_copy(q, m->integration_id, sizeof(m->integration_id));
    m->events = (uint32_t)column_int(q);
    m->active = column_int(q) != 0;
    m->created_ms = column_int(q);
    m->updated_ms = column_int(q);
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

/*
 * Releases writer_lock once the connection's transaction has ended: by COMMIT, by ROLLBACK, by
 * a failed BEGIN, or by SQLite itself, which rolls back on its own after some errors (a full
 * disk, an I/O error, no memory).
 */
static void release_writer_lock_if_ended(struct sqlite_store *s)
{
    if (s->holds_writer_lock && sqlite3_get_autocommit(s->db)) {
        s->holds_writer_lock = false;
        pthread_mutex_unlock(&writer_lock);
    }
}

static int run(struct sqlite_store *s, enum statement_id id, struct bh_error *err)
{
    struct query q;
    int status;

    if (id == STMT_BEGIN && !s->holds_writer_lock) {
        writer_lock_take();
        s->holds_writer_lock = true;
    }

    query_start(&q, s, id);
    status = query_exec(&q, err);

    release_writer_lock_if_ended(s);
    return status;
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
    release_writer_lock_if_ended(s);
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
 * the process. The API acknowledges an event only after its commit. temp_store=MEMORY keeps
 * statement and savepoint journals in memory; on disk they cost a write per changed page.
 */
static int configure(sqlite3 *db, bool in_memory, struct bh_error *err)
{
    char mode[16];
    int status;

    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    status = exec_sql(db,
                      "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; "
                      "PRAGMA temp_store = MEMORY",
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
    if (s->holds_writer_lock)
        pthread_mutex_unlock(&writer_lock);
    sqlite3_close(s->db);
    if (s->checkpointer)
        checkpointer_detach(s->checkpointer);
    if (s->wal_fd >= 0)
        close(s->wal_fd);
    free(s->wal_path);
    free(s->dir_path);
    free(s);
}

/*
 * Hands the connection's checkpoints to the file's checkpointer and notes the WAL's path for
 * sqlite_sync. The WAL is the database file's full path followed by "-wal". Without a
 * checkpointer, SQLite's automatic checkpoint stays.
 */
static void watch_wal(struct sqlite_store *s)
{
    const char *file = sqlite3_db_filename(s->db, "main");
    const char *slash;

    if (file == NULL || file[0] == '\0')
        return;
    s->checkpointer = checkpointer_attach(file);
    if (s->checkpointer)
        sqlite3_wal_hook(s->db, on_wal_commit, s->checkpointer);
    else
        log_warn("store", "could not start the checkpoint thread; commits checkpoint the WAL "
                          "themselves");
    s->wal_path = xmalloc(strlen(file) + sizeof("-wal"));
    sprintf(s->wal_path, "%s-wal", file);
    slash = strrchr(file, '/');
    s->dir_path = slash == NULL ? xstrdup(".") : xstrndup(file, (size_t)(slash - file) + 1);
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
    s->wal_fd = -1;
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
    if (!in_memory)
        watch_wal(s);
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
    release_writer_lock_if_ended(s);
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

/* ---- Integration updates ---- */

static int write_integration_settings(struct sqlite_store *s, const struct integration *in,
                                      struct bh_error *err)
{
    char *headers = custom_headers_to_text(in->headers, in->header_count);
    struct query q;
    int status;

    query_start(&q, s, STMT_INTEGRATION_UPDATE);
    bind_text(&q, in->name);
    bind_text(&q, in->url);
    bind_text(&q, in->provider);
    bind_int(&q, in->signing);
    bind_text(&q, in->signing ? in->secret : NULL);
    bind_int(&q, in->events);
    bind_text(&q, headers);
    bind_int(&q, in->max_retries);
    bind_int(&q, in->timeout_ms);
    bind_int(&q, in->updated_ms);
    bind_text(&q, in->id);
    bind_text(&q, in->user_id);
    status = query_exec(&q, err);
    free(headers);
    if (status == 0 && sqlite3_changes(s->db) == 0)
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "", "integration %s not found", in->id);
    return status;
}

/* Binds the four parameters that the two shrink statements share. */
static void bind_shrink(struct query *q, const struct integration *in)
{
    bind_int(q, in->events);
    bind_int(q, in->updated_ms);
    bind_text(q, in->user_id);
    bind_text(q, in->id);
}

/* Reads the mappings that lose events, as they will be, then removes those events. */
static int shrink_mappings(struct sqlite_store *s, const struct integration *in,
                           struct mapping **out, size_t *count, struct bh_error *err)
{
    struct mapping *items = NULL;
    size_t capacity = 0;
    size_t n = 0;
    struct query q;
    int status;

    query_start(&q, s, STMT_INTEGRATION_SHRINK_READ);
    bind_shrink(&q, in);
    while ((status = query_step(&q, err)) > 0) {
        items = grow(items, n, &capacity, sizeof(*items));
        read_mapping(&q, &items[n++]);
    }
    query_end(&q);

    if (status == 0 && n > 0) {
        query_start(&q, s, STMT_INTEGRATION_SHRINK);
        bind_shrink(&q, in);
        status = query_exec(&q, err);
    }
    if (status < 0) {
        free(items);
        return status;
    }
    *out = items;
    *count = n;
    return 0;
}

static int sqlite_integration_update(struct store *store, const struct integration *integration,
                                     struct mapping **changed, size_t *changed_count,
                                     struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    struct mapping *items = NULL;
    size_t n = 0;
    bool nested;
    int status;

    if (changed) {
        *changed = NULL;
        *changed_count = 0;
    }
    status = operation_begin(s, &nested, err);
    if (status < 0)
        return status;
    status = write_integration_settings(s, integration, err);
    if (status == 0)
        status = shrink_mappings(s, integration, &items, &n, err);
    status = operation_end(s, nested, status, err);

    if (status < 0 || !changed) {
        free(items);
        return status;
    }
    *changed = items;
    *changed_count = n;
    return 0;
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
        items = grow(items, n, &capacity, sizeof(*items));
        read_mapping(&q, &items[n++]);
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
    bind_blob(&q, event->payload_prefix, event->payload_prefix_len);
    return query_exec(&q, err);
}

/*
 * Replaces the empty body of a delivery stored with body_shared by its whole body: the event's
 * payload prefix finished with the integration id, as at ingest.
 */
static int expand_shared_body(struct sqlite_store *s, const char *event_id,
                              const char *integration_id, char **body, size_t *body_len,
                              struct bh_error *err)
{
    struct query q;
    const void *prefix;
    bool missing;
    int status;

    query_start(&q, s, STMT_EVENT_PAYLOAD_PREFIX);
    bind_text(&q, event_id);
    status = query_step(&q, err);
    prefix = status > 0 ? sqlite3_column_blob(q.stmt, 0) : NULL;
    missing = prefix == NULL;
    if (!missing) {
        free(*body);
        *body = payload_finish(prefix, (size_t)sqlite3_column_bytes(q.stmt, 0), integration_id,
                               body_len);
        missing = *body == NULL;
    }
    query_end(&q);
    if (status < 0)
        return status;
    if (missing)
        return bh_error_set(err, BH_ERR_STORE, "",
                            "the payload of event %s, which its deliveries share, is missing",
                            event_id);
    return 0;
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
    if (d->shared_body)
        bind_blob(&q, "", 0);
    else
        bind_blob(&q, d->body ? d->body : "", d->body_len);
    bind_text(&q, state_name(d->state));
    bind_int(&q, d->attempts);
    bind_int(&q, d->next_attempt_ms);
    bind_int(&q, d->last_http_status);
    bind_text(&q, d->last_error);
    bind_int(&q, d->created_ms);
    bind_int(&q, d->updated_ms);
    bind_int(&q, d->test ? 1 : 0);
    bind_int(&q, d->shared_body ? 1 : 0);
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
    out->test = column_int(q) != 0;
    out->shared_body = column_int(q) != 0;
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
    if (status == 0 && out->shared_body) {
        status = expand_shared_body(from_store(store), out->event_id, out->integration_id,
                                    &out->body, &out->body_len, err);
        out->shared_body = false;
    }
    if (status < 0)
        delivery_release(out);
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

/* The settings of an integration that its jobs carry, read once per integration a claim visits. */
struct claim_target {
    bool found;
    char *url;
    bool signing;
    char *secret; /* NULL while signing is off */
    struct custom_header *headers;
    size_t header_count;
    int timeout_ms;
    int max_retries;
};

/* A claim in progress: how many jobs each integration holds, and the jobs taken so far. */
struct claim {
    struct sqlite_store *s;
    const struct claim_request *request;
    struct integration_load *used; /* sorted by id: the caller's loads plus jobs taken here */
    size_t used_count;
    size_t used_capacity;
    struct delivery_job *jobs;
    size_t count;
    size_t capacity;
};

static void claim_target_release(struct claim_target *target)
{
    free(target->url);
    free(target->secret);
    custom_headers_free(target->headers, target->header_count);
    memset(target, 0, sizeof(*target));
}

static int read_claim_target(struct sqlite_store *s, const char *integration_id,
                             struct claim_target *target, struct bh_error *err)
{
    struct query q;
    char *headers = NULL;
    int status;

    memset(target, 0, sizeof(*target));
    query_start(&q, s, STMT_CLAIM_INTEGRATION);
    bind_text(&q, integration_id);
    status = query_step(&q, err);
    if (status > 0) {
        target->found = true;
        target->url = column_text_dup(&q);
        target->signing = column_int(&q) != 0;
        target->secret = column_text_dup(&q);
        headers = column_text_dup(&q);
        target->timeout_ms = (int)column_int(&q);
        target->max_retries = (int)column_int(&q);
        status = 0;
    }
    query_end(&q);

    if (status == 0 && !target->signing) {
        free(target->secret);
        target->secret = NULL;
    }
    if (status == 0)
        status =
            read_headers(headers, integration_id, &target->headers, &target->header_count, err);
    free(headers);
    if (status < 0)
        claim_target_release(target);
    return status;
}

static struct custom_header *copy_headers(const struct custom_header *headers, size_t count)
{
    struct custom_header *copy;

    if (count == 0)
        return NULL;
    copy = xcalloc(count, sizeof(*copy));
    for (size_t i = 0; i < count; i++) {
        copy[i].name = xstrdup(headers[i].name);
        copy[i].value = xstrdup(headers[i].value);
    }
    return copy;
}

static int compare_loads(const void *a, const void *b)
{
    const struct integration_load *left = a;
    const struct integration_load *right = b;

    return strcmp(left->integration_id, right->integration_id);
}

/* Returns the entry of integration_id in claim->used, adding one with no jobs if missing. */
static struct integration_load *claim_usage(struct claim *claim, const char *integration_id)
{
    struct integration_load key;
    struct integration_load *found;
    size_t at = 0;

    snprintf(key.integration_id, sizeof(key.integration_id), "%s", integration_id);
    /* bsearch requires a non-NULL array even when it is empty. */
    found = claim->used_count == 0
                ? NULL
                : bsearch(&key, claim->used, claim->used_count, sizeof(key), compare_loads);
    if (found)
        return found;

    while (at < claim->used_count && strcmp(claim->used[at].integration_id, integration_id) < 0)
        at++;
    claim->used = grow(claim->used, claim->used_count, &claim->used_capacity, sizeof(key));
    memmove(&claim->used[at + 1], &claim->used[at],
            (claim->used_count - at) * sizeof(*claim->used));
    key.claimed = 0;
    claim->used[at] = key;
    claim->used_count++;
    return &claim->used[at];
}

/* Returns how many more jobs the claim may take for integration_id. */
static size_t claim_room(struct claim *claim, const char *integration_id)
{
    size_t left = claim->request->limit - claim->count;
    size_t cap = claim->request->per_integration_limit;
    size_t used;

    if (cap == 0 || left == 0)
        return left;
    used = claim_usage(claim, integration_id)->claimed;
    if (used >= cap)
        return 0;
    return cap - used < left ? cap - used : left;
}

/*
 * Appends a job read from a row of STMT_CLAIM_READY or STMT_CLAIM_EXPIRED, which start with
 * the rowid and JOB_COLUMNS, and counts it against its integration. Its integration's
 * settings are filled in by fill_jobs. Returns 0, or the error of a shared body that could
 * not be read, with no job appended.
 */
static int append_job(struct claim *claim, struct query *q, struct bh_error *err)
{
    struct delivery_job *job;
    int status = 0;

    claim->jobs = grow(claim->jobs, claim->count, &claim->capacity, sizeof(*claim->jobs));
    job = &claim->jobs[claim->count];
    memset(job, 0, sizeof(*job));
    job->row_ref = column_int(q);
    column_text_copy(q, job->delivery_id, sizeof(job->delivery_id));
    column_text_copy(q, job->event_id, sizeof(job->event_id));
    column_text_copy(q, job->integration_id, sizeof(job->integration_id));
    column_text_copy(q, job->user_id, sizeof(job->user_id));
    job->body = column_blob_dup(q, &job->body_len);
    job->attempts_before = (int)column_int(q);
    job->test = column_int(q) != 0;
    if (column_int(q) != 0)
        status = expand_shared_body(claim->s, job->event_id, job->integration_id, &job->body,
                                    &job->body_len, err);
    if (status < 0) {
        delivery_job_release(job);
        return status;
    }
    claim->count++;
    claim_usage(claim, job->integration_id)->claimed++;
    return 0;
}

/* Takes the last job back out of the claim. */
static void drop_last_job(struct claim *claim)
{
    struct delivery_job *job = &claim->jobs[--claim->count];

    claim_usage(claim, job->integration_id)->claimed--;
    delivery_job_release(job);
}

/*
 * Gives jobs[first, end), which belong to one integration, its settings. When the integration
 * is gone, sets *found to false and empties the jobs for claim_compact.
 */
static int fill_jobs(struct claim *claim, size_t first, size_t end, bool *found,
                     struct bh_error *err)
{
    struct claim_target target;
    int status;

    status = read_claim_target(claim->s, claim->jobs[first].integration_id, &target, err);
    *found = status == 0 && target.found;
    for (size_t i = first; status == 0 && i < end; i++) {
        struct delivery_job *job = &claim->jobs[i];

        if (!target.found) {
            delivery_job_release(job);
            job->delivery_id[0] = '\0';
            continue;
        }
        job->url = xstrdup(target.url);
        job->signing = target.signing;
        job->secret = target.secret ? xstrdup(target.secret) : NULL;
        job->headers = copy_headers(target.headers, target.header_count);
        job->header_count = target.header_count;
        job->timeout_ms = target.timeout_ms;
        /* A test delivery makes one attempt: its caller waits for that outcome. */
        job->max_retries = job->test ? 0 : target.max_retries;
    }
    claim_target_release(&target);
    return status;
}

static int lease_row(struct claim *claim, int64_t rowid, struct bh_error *err)
{
    const struct claim_request *request = claim->request;
    struct query q;

    query_start(&q, claim->s, STMT_CLAIM_LEASE);
    bind_text(&q, request->owner);
    bind_int(&q, request->now_ms + request->lease_ms);
    bind_int(&q, rowid);
    return query_exec(&q, err);
}

/* Leases the count rows that STMT_CLAIM_READY returned for the integration. */
static int lease_ready(struct claim *claim, const char *integration_id, size_t count,
                       struct bh_error *err)
{
    const struct claim_request *request = claim->request;
    struct query q;
    int status;

    query_start(&q, claim->s, STMT_CLAIM_LEASE_READY);
    bind_text(&q, request->owner);
    bind_int(&q, request->now_ms + request->lease_ms);
    bind_text(&q, integration_id);
    bind_int(&q, request->now_ms);
    bind_int(&q, (int64_t)count);
    status = query_exec(&q, err);
    if (status == 0 && (size_t)sqlite3_changes(claim->s->db) != count)
        status = bh_error_set(err, BH_ERR_INTERNAL, "",
                              "leased %d deliveries of integration %s instead of the %zu read",
                              sqlite3_changes(claim->s->db), integration_id, count);
    return status;
}

/* Removes the jobs that fill_jobs emptied, keeping the order of the rest. */
static void claim_compact(struct claim *claim)
{
    size_t kept = 0;

    for (size_t i = 0; i < claim->count; i++) {
        if (claim->jobs[i].delivery_id[0] != '\0')
            claim->jobs[kept++] = claim->jobs[i];
    }
    claim->count = kept;
}

/* Claims deliveries whose lease ended, for integrations with room. */
static int claim_expired(struct claim *claim, struct bh_error *err)
{
    size_t first = claim->count;
    struct query q;
    int status = 0;

    /*
     * Rows are read first and leased after, since a lease changes the index being read. Only
     * a worker that stopped without finishing leaves expired leases, so they are few.
     */
    query_start(&q, claim->s, STMT_CLAIM_EXPIRED);
    bind_int(&q, claim->request->now_ms);
    while (claim->count < claim->request->limit && (status = query_step(&q, err)) > 0) {
        struct delivery_job *job;

        status = append_job(claim, &q, err);
        if (status < 0)
            break;
        job = &claim->jobs[claim->count - 1];
        /* The job just appended counts already, so going over the cap means no room. */
        if (claim->request->per_integration_limit > 0 &&
            claim_usage(claim, job->integration_id)->claimed >
                claim->request->per_integration_limit)
            drop_last_job(claim);
    }
    query_end(&q);
    if (claim->count == claim->request->limit)
        status = 0;

    for (size_t i = first; status == 0 && i < claim->count; i++) {
        bool found;
        int64_t rowid = claim->jobs[i].row_ref;

        status = fill_jobs(claim, i, i + 1, &found, err);
        if (status == 0 && found)
            status = lease_row(claim, rowid, err);
    }
    return status;
}

/* Finds the first integration after `after` with unleased pending deliveries; "" for none. */
static int next_integration(struct sqlite_store *s, const char *after, char next[ID_LEN + 1],
                            struct bh_error *err)
{
    struct query q;
    int status;

    next[0] = '\0';
    query_start(&q, s, STMT_CLAIM_NEXT_INTEGRATION);
    bind_text(&q, after);
    status = query_step(&q, err);
    if (status > 0) {
        column_text_copy(&q, next, ID_LEN + 1);
        status = 0;
    }
    query_end(&q);
    return status;
}

/* Claims up to room due deliveries of one integration, oldest due first. */
static int claim_integration(struct claim *claim, const char *integration_id, size_t room,
                             struct bh_error *err)
{
    size_t first = claim->count;
    size_t n = 0;
    struct query q;
    int status = 0;

    query_start(&q, claim->s, STMT_CLAIM_READY);
    bind_text(&q, integration_id);
    bind_int(&q, claim->request->now_ms);
    bind_int(&q, room > INT64_MAX ? INT64_MAX : (int64_t)room);
    while (n < room && (status = query_step(&q, err)) > 0) {
        status = append_job(claim, &q, err);
        if (status < 0)
            break;
        n++;
    }
    query_end(&q);
    if (n == room)
        status = 0;

    if (status == 0 && n > 0) {
        bool found;

        status = fill_jobs(claim, first, claim->count, &found, err);
        if (status == 0 && found)
            status = lease_ready(claim, integration_id, n, err);
    }
    return status;
}

/*
 * Lists the integrations with unleased pending deliveries in round order: those whose id
 * sorts after cursor, then the rest up to cursor itself. The list is the caller's to free.
 */
static int list_round(struct sqlite_store *s, const char *cursor, char (**ids)[ID_LEN + 1],
                      size_t *count, struct bh_error *err)
{
    char current[ID_LEN + 1];
    size_t capacity = 0;
    bool wrapped = cursor[0] == '\0';
    int status = 0;

    *ids = NULL;
    *count = 0;
    snprintf(current, sizeof(current), "%s", cursor);
    for (;;) {
        char next[ID_LEN + 1];

        status = next_integration(s, current, next, err);
        if (status < 0)
            break;
        if (next[0] == '\0') {
            if (wrapped)
                break;
            wrapped = true;
            current[0] = '\0';
            continue;
        }
        if (wrapped && cursor[0] != '\0' && strcmp(next, cursor) > 0)
            break;
        *ids = grow(*ids, *count, &capacity, sizeof(**ids));
        memcpy((*ids)[(*count)++], next, ID_LEN + 1);
        snprintf(current, sizeof(current), "%s", next);
    }
    return status;
}

/*
 * Shares the claim's limit among the integrations with due deliveries, taking turns from
 * cursor. Each integration gets at most an equal share of what is left per pass, so one
 * claim reaches many integrations. Their due deliveries are mostly of the same events, so
 * the claim and the results that follow touch fewer database pages.
 */
static int claim_round(struct claim *claim, char cursor[ID_LEN + 1], struct bh_error *err)
{
    char(*ids)[ID_LEN + 1] = NULL;
    size_t count = 0;
    int status = list_round(claim->s, cursor, &ids, &count, err);

    /* Each pass drops the integrations that ran out of room or of due deliveries. */
    while (status == 0 && count > 0 && claim->count < claim->request->limit) {
        size_t left = claim->request->limit - claim->count;
        size_t share = left / count > 0 ? left / count : 1;
        size_t kept = 0;

        for (size_t i = 0; i < count; i++) {
            size_t room = claim_room(claim, ids[i]);
            size_t want = room < share ? room : share;
            size_t before = claim->count;

            if (want > 0 && claim->count < claim->request->limit) {
                status = claim_integration(claim, ids[i], want, err);
                if (status < 0)
                    break;
            }
            if (claim->count > before)
                snprintf(cursor, ID_LEN + 1, "%s", ids[i]);
            /* It stays for the next pass only if it filled its share and has room left. */
            if (want > 0 && claim->count - before == want && claim_room(claim, ids[i]) > 0)
                memcpy(ids[kept++], ids[i], ID_LEN + 1);
        }
        count = kept;
    }
    free(ids);
    return status;
}

static int sqlite_delivery_claim_capped(struct store *store, const struct claim_request *request,
                                        char cursor[ID_LEN + 1], struct delivery_job **jobs,
                                        size_t *count, struct bh_error *err)
{
    struct claim claim = {.s = from_store(store), .request = request};
    char new_cursor[ID_LEN + 1];
    bool nested;
    int status;

    *jobs = NULL;
    *count = 0;
    if (request->limit == 0)
        return 0;
    if (strlen(request->owner) > LEASE_OWNER_MAX)
        return bh_error_set(err, BH_ERR_INVALID, "", "the lease owner %s is longer than %d bytes",
                            request->owner, LEASE_OWNER_MAX);

    if (request->load_count > 0) {
        claim.used = xmalloc(request->load_count * sizeof(*claim.used));
        memcpy(claim.used, request->loads, request->load_count * sizeof(*claim.used));
        qsort(claim.used, request->load_count, sizeof(*claim.used), compare_loads);
        claim.used_count = request->load_count;
        claim.used_capacity = request->load_count;
    }
    snprintf(new_cursor, sizeof(new_cursor), "%s", cursor);

    status = operation_begin(claim.s, &nested, err);
    if (status == 0) {
        status = claim_expired(&claim, err);
        if (status == 0)
            status = claim_round(&claim, new_cursor, err);
        status = operation_end(claim.s, nested, status, err);
    }
    free(claim.used);
    claim_compact(&claim);

    if (status < 0) {
        delivery_job_list_free(claim.jobs, claim.count);
        return status;
    }
    snprintf(cursor, ID_LEN + 1, "%s", new_cursor);
    *jobs = claim.jobs;
    *count = claim.count;
    return 0;
}

static int sqlite_delivery_claim(struct store *store, const char *owner, int64_t now_ms,
                                 int64_t lease_ms, size_t limit, struct delivery_job **jobs,
                                 size_t *count, struct bh_error *err)
{
    struct claim_request request = {
        .owner = owner,
        .now_ms = now_ms,
        .lease_ms = lease_ms,
        .limit = limit,
    };
    char cursor[ID_LEN + 1] = "";

    return sqlite_delivery_claim_capped(store, &request, cursor, jobs, count, err);
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
    bind_int(&q, o->row_ref);
    status = query_exec(&q, err);
    if (status == 0 && sqlite3_changes(s->db) == 0)
        return bh_error_set(err, BH_ERR_NOT_FOUND, "",
                            "delivery %s is not pending under a lease of %s", o->delivery_id,
                            o->lease_owner);
    if (status < 0)
        return status;

    query_start(&q, s, STMT_FINISH_READ);
    bind_text(&q, o->delivery_id);
    bind_int(&q, o->row_ref);
    status = query_step(&q, err);
    if (status > 0) {
        *number = (int)column_int(&q);
        column_text_copy(&q, integration_id, ID_LEN + 1);
        status = 0;
    } else if (status == 0) {
        status = bh_error_set(err, BH_ERR_INTERNAL, "", "delivery %s vanished while finishing",
                              o->delivery_id);
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

/*
 * The change that a batch makes to one integration's statistics. Applying it once gives the
 * same result as applying each of the batch's outcomes in order.
 */
struct statistics_change {
    char integration_id[ID_LEN + 1];
    int64_t last_delivery_ms; /* the latest end of an attempt */
    const char *last_error;   /* the error of the last failed attempt, or NULL */
    int64_t last_error_ms;    /* when that attempt ended */
    int64_t delivered;
    int64_t failed;
    const char *status; /* set by the last delivery that ended, or NULL to keep */
};

struct statistics_batch {
    struct statistics_change *changes;
    size_t count;
    size_t capacity;
};

static struct statistics_change *statistics_find(struct statistics_batch *batch,
                                                 const char *integration_id)
{
    struct statistics_change *change;

    /* Batches hold few integrations, and outcomes of one integration tend to come together. */
    for (size_t i = batch->count; i > 0; i--) {
        if (strcmp(batch->changes[i - 1].integration_id, integration_id) == 0)
            return &batch->changes[i - 1];
    }
    batch->changes = grow(batch->changes, batch->count, &batch->capacity, sizeof(*change));
    change = &batch->changes[batch->count++];
    memset(change, 0, sizeof(*change));
    snprintf(change->integration_id, sizeof(change->integration_id), "%s", integration_id);
    return change;
}

static void statistics_add(struct statistics_batch *batch, const char *integration_id,
                           const struct attempt_outcome *o)
{
    struct statistics_change *change = statistics_find(batch, integration_id);
    int64_t ended_ms = o->started_ms + o->duration_ms;

    if (ended_ms > change->last_delivery_ms)
        change->last_delivery_ms = ended_ms;
    if (o->error) {
        change->last_error = o->error;
        change->last_error_ms = ended_ms;
    }
    if (o->new_state == DELIVERY_SUCCEEDED) {
        change->delivered++;
        change->status = "active";
    } else if (o->new_state == DELIVERY_FAILED) {
        change->failed++;
        change->status = "error";
    }
}

static int write_statistics(struct sqlite_store *s, const struct statistics_batch *batch,
                            struct bh_error *err)
{
    for (size_t i = 0; i < batch->count; i++) {
        const struct statistics_change *change = &batch->changes[i];
        struct query q;
        int status;

        query_start(&q, s, STMT_FINISH_STATISTICS);
        bind_int(&q, change->last_delivery_ms);
        bind_text(&q, change->last_error);
        bind_int(&q, change->last_error_ms);
        bind_int(&q, change->delivered);
        bind_int(&q, change->failed);
        bind_text(&q, change->status);
        bind_text(&q, change->integration_id);
        status = query_exec(&q, err);
        if (status < 0)
            return status;
    }
    return 0;
}

/* Writes one outcome's delivery and attempt rows and sets integration_id. */
static int record_outcome(struct sqlite_store *s, const struct attempt_outcome *o,
                          char integration_id[ID_LEN + 1], struct bh_error *err)
{
    int number = 0;
    int status;

    if (o->new_state == DELIVERY_CANCELLED)
        return bh_error_set(err, BH_ERR_INVALID, "",
                            "an attempt cannot cancel delivery %s; its new state must be "
                            "pending, succeeded or failed",
                            o->delivery_id);
    status = finish_delivery(s, o, &number, integration_id, err);
    if (status == 0)
        status = insert_attempt(s, o, number, err);
    return status;
}

/*
 * Records each outcome inside the open transaction. Without isolate, an outcome that fails
 * after writing a row stops the batch with that error. With isolate, each outcome runs in its
 * own savepoint, so its failure undoes only its rows.
 */
static int record_outcomes(struct sqlite_store *s, const struct attempt_outcome *outcomes,
                           size_t count, int *results, bool isolate, struct bh_error *err)
{
    struct statistics_batch statistics = {0};
    int status = 0;

    for (size_t i = 0; i < count; i++) {
        char integration_id[ID_LEN + 1];
        struct bh_error row_err;
        bool nested = false;

        if (isolate) {
            status = operation_begin(s, &nested, err);
            if (status < 0)
                break;
        }
        results[i] = record_outcome(s, &outcomes[i], integration_id, &row_err);
        if (isolate) {
            status = operation_end(s, nested, results[i], err);
            if (status < 0 && results[i] == 0)
                break;
            status = 0;
        } else if (results[i] != 0 && results[i] != BH_ERR_NOT_FOUND &&
                   results[i] != BH_ERR_INVALID) {
            /* NOT_FOUND and INVALID write nothing, so only other failures leave rows behind. */
            status = results[i];
            if (err)
                *err = row_err;
            break;
        }
        if (results[i] == 0)
            if (!outcomes[i].test)
                statistics_add(&statistics, integration_id, &outcomes[i]);
    }
    if (status == 0)
        status = write_statistics(s, &statistics, err);
    free(statistics.changes);
    return status;
}

static int sqlite_delivery_finish_batch(struct store *store, const struct attempt_outcome *outcomes,
                                        size_t count, int *results, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    bool nested;
    int status;

    if (count == 0)
        return 0;
    status = operation_begin(s, &nested, err);
    if (status < 0)
        return status;
    status = record_outcomes(s, outcomes, count, results, false, err);
    if (status < 0) {
        /* One outcome failed half way: undo the batch and record each outcome on its own. */
        operation_rollback(s, nested);
        status = operation_begin(s, &nested, err);
        if (status < 0)
            return status;
        status = record_outcomes(s, outcomes, count, results, true, err);
    }
    return operation_end(s, nested, status, err);
}

static int sqlite_delivery_finish(struct store *store, const struct attempt_outcome *outcome,
                                  struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    struct statistics_batch statistics = {0};
    char integration_id[ID_LEN + 1];
    bool nested;
    int status;

    status = operation_begin(s, &nested, err);
    if (status < 0)
        return status;
    status = record_outcome(s, outcome, integration_id, err);
    if (status == 0) {
        if (!outcome->test)
            statistics_add(&statistics, integration_id, outcome);
        status = write_statistics(s, &statistics, err);
    }
    free(statistics.changes);
    return operation_end(s, nested, status, err);
}

/*
 * Runs the pragma directly: SQLite applies a pragma's setting when the statement is
 * prepared, so a prepared "PRAGMA synchronous" would change the connection at open time.
 */
static int sqlite_set_sync_commits(struct store *store, bool sync, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);

    return exec_sql(s->db, sync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                    "set how commits sync", err);
}

/* Syncs the folder at path, so that the files created in it remain after a power loss. */
static int sync_folder(const char *path, struct bh_error *err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int status = 0;

    if (fd < 0)
        return bh_error_set(err, BH_ERR_IO, "", "could not open the folder %s to sync it: %s", path,
                            strerror(errno));
    if (fsync(fd) != 0)
        status = bh_error_set(err, BH_ERR_IO, "", "could not sync the folder %s: %s", path,
                              strerror(errno));
    close(fd);
    return status;
}

/*
 * Every commit stays in the WAL until a checkpoint, which syncs the WAL before copying it. So
 * syncing the WAL makes durable what commits without sync wrote, as a synced commit would
 * have. SQLite's own first sync of a new WAL also syncs its folder, and so does this. SQLite
 * offers no call that syncs the WAL, so this uses a descriptor of its own.
 */
static int sqlite_sync(struct store *store, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    int status = 0;

    if (s->wal_path == NULL)
        return 0;
    if (s->wal_fd < 0) {
        s->wal_fd = open(s->wal_path, O_RDONLY | O_CLOEXEC);
        if (s->wal_fd < 0)
            status = bh_error_set(err, BH_ERR_IO, "", "could not open %s to sync it: %s",
                                  s->wal_path, strerror(errno));
    }
    if (status == 0 && fdatasync(s->wal_fd) != 0)
        status =
            bh_error_set(err, BH_ERR_IO, "", "could not sync %s: %s", s->wal_path, strerror(errno));
    if (status == 0 && !s->dir_synced) {
        status = sync_folder(s->dir_path, err);
        s->dir_synced = status == 0;
    }
    return status;
}

static int sqlite_release_all_leases(struct store *store, struct bh_error *err)
{
    return run(from_store(store), STMT_RELEASE_LEASES, err);
}

/* ---- Mapping edits and lead lookups ---- */

static int sqlite_mapping_get(struct store *store, const char *user_id, const char *campaign_id,
                              const char *integration_id, struct mapping *out, struct bh_error *err)
{
    struct query q;
    int status;

    memset(out, 0, sizeof(*out));
    query_start(&q, from_store(store), STMT_MAPPING_GET);
    bind_text(&q, user_id);
    bind_text(&q, campaign_id);
    bind_text(&q, integration_id);
    status = query_step(&q, err);
    if (status > 0) {
        read_mapping(&q, out);
        status = 0;
    } else if (status == 0) {
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "",
                              "integration %s is not connected to campaign %s", integration_id,
                              campaign_id);
    }
    query_end(&q);
    return status;
}

static int sqlite_mapping_delete(struct store *store, const char *user_id, const char *campaign_id,
                                 const char *integration_id, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    struct query q;
    int status;

    query_start(&q, s, STMT_MAPPING_DELETE);
    bind_text(&q, user_id);
    bind_text(&q, campaign_id);
    bind_text(&q, integration_id);
    status = query_exec(&q, err);
    if (status == 0 && sqlite3_changes(s->db) == 0)
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "",
                              "integration %s is not connected to campaign %s", integration_id,
                              campaign_id);
    return status;
}

static int sqlite_lead_latest_campaign(struct store *store, const char *user_id,
                                       const char *lead_id, char campaign_id[EXTERNAL_ID_MAX + 1],
                                       struct bh_error *err)
{
    struct query q;
    int status;

    campaign_id[0] = '\0';
    query_start(&q, from_store(store), STMT_LEAD_LATEST_CAMPAIGN);
    bind_text(&q, user_id);
    bind_text(&q, lead_id);
    status = query_step(&q, err);
    if (status > 0) {
        column_text_copy(&q, campaign_id, EXTERNAL_ID_MAX + 1);
        status = 0;
    }
    query_end(&q);
    return status;
}

/* ---- Idempotency keys and retention ---- */

static int sqlite_idempotency_get(struct store *store, const char *user_id,
                                  const char *client_event_id, char **request_hash, char **answer,
                                  struct bh_error *err)
{
    struct query q;
    int status;

    *request_hash = NULL;
    *answer = NULL;
    query_start(&q, from_store(store), STMT_IDEMPOTENCY_GET);
    bind_text(&q, user_id);
    bind_text(&q, client_event_id);
    status = query_step(&q, err);
    if (status > 0) {
        *request_hash = column_text_dup(&q);
        *answer = column_text_dup(&q);
        status = 0;
    } else if (status == 0) {
        status = bh_error_set(err, BH_ERR_NOT_FOUND, "eventId", "no event with eventId %s",
                              client_event_id);
    }
    query_end(&q);
    return status;
}

static int sqlite_idempotency_put(struct store *store, const char *user_id,
                                  const char *client_event_id, const char *request_hash,
                                  const char *answer, int64_t created_ms, struct bh_error *err)
{
    struct query q;

    query_start(&q, from_store(store), STMT_IDEMPOTENCY_PUT);
    bind_text(&q, user_id);
    bind_text(&q, client_event_id);
    bind_text(&q, request_hash);
    bind_text(&q, answer);
    bind_int(&q, created_ms);
    return query_exec(&q, err);
}

/* Reads the ids of up to limit finished deliveries last updated before before_ms. */
static int read_purge_ids(struct sqlite_store *s, int64_t before_ms, size_t limit,
                          char (**ids)[DELIVERY_ID_LEN + 1], size_t *count, struct bh_error *err)
{
    size_t capacity = 0;
    struct query q;
    int status;

    *ids = NULL;
    *count = 0;
    query_start(&q, s, STMT_PURGE_FINISHED_SELECT);
    bind_int(&q, before_ms);
    bind_int(&q, (int64_t)limit);
    while ((status = query_step(&q, err)) > 0) {
        *ids = grow(*ids, *count, &capacity, sizeof(**ids));
        column_text_copy(&q, (*ids)[*count], sizeof((*ids)[*count]));
        (*count)++;
    }
    query_end(&q);
    return status;
}

static int purge_delivery(struct sqlite_store *s, const char *id, size_t *deliveries,
                          size_t *attempts, struct bh_error *err)
{
    struct query q;
    int status;

    query_start(&q, s, STMT_PURGE_ATTEMPTS);
    bind_text(&q, id);
    status = query_exec(&q, err);
    if (status < 0)
        return status;
    *attempts += (size_t)sqlite3_changes(s->db);

    query_start(&q, s, STMT_PURGE_DELIVERY);
    bind_text(&q, id);
    status = query_exec(&q, err);
    if (status == 0)
        *deliveries += (size_t)sqlite3_changes(s->db);
    return status;
}

static int sqlite_purge_finished(struct store *store, int64_t before_ms, size_t limit,
                                 size_t *deliveries, size_t *attempts, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    char(*ids)[DELIVERY_ID_LEN + 1] = NULL;
    size_t count = 0;
    bool nested;
    int status;

    *deliveries = 0;
    *attempts = 0;
    status = operation_begin(s, &nested, err);
    if (status < 0)
        return status;
    status = read_purge_ids(s, before_ms, limit, &ids, &count, err);
    for (size_t i = 0; i < count && status == 0; i++)
        status = purge_delivery(s, ids[i], deliveries, attempts, err);
    free(ids);
    status = operation_end(s, nested, status, err);
    if (status < 0) {
        *deliveries = 0;
        *attempts = 0;
    }
    return status;
}

static int sqlite_purge_idempotency(struct store *store, int64_t before_ms, size_t limit,
                                    size_t *purged, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    struct query q;
    int status;

    *purged = 0;
    query_start(&q, s, STMT_PURGE_IDEMPOTENCY);
    bind_int(&q, before_ms);
    bind_int(&q, (int64_t)limit);
    status = query_exec(&q, err);
    if (status == 0)
        *purged = (size_t)sqlite3_changes(s->db);
    return status;
}

/* ---- The delivery log: lists, redelivery and recovery ---- */

/* An id after every delivery id ("dlv_" and hex digits), for a page bound with no id part. */
#define ID_AFTER_ALL "~"

static int sqlite_delivery_list(struct store *store, const char *user_id,
                                const struct delivery_filter *filter, struct delivery **out,
                                size_t *count, struct bh_error *err)
{
    bool by_state = filter->state >= 0;
    struct delivery *items = NULL;
    size_t capacity = 0;
    size_t n = 0;
    int64_t upper_ms = filter->until_ms;
    const char *upper_id = ID_AFTER_ALL;
    struct query q;
    int status;

    /* One upper bound on (created_ms, id), so the scan starts right at the page. */
    if (filter->before_id && filter->before_ms <= upper_ms) {
        upper_ms = filter->before_ms;
        upper_id = filter->before_id;
    }
    query_start(&q, from_store(store), by_state ? STMT_DELIVERY_LIST_STATE : STMT_DELIVERY_LIST);
    bind_text(&q, filter->integration_id);
    bind_text(&q, user_id);
    bind_int(&q, filter->since_ms);
    bind_int(&q, upper_ms);
    bind_text(&q, upper_id);
    bind_int(&q, filter->event_type);
    bind_int(&q, (int64_t)filter->limit);
    if (by_state)
        bind_text(&q, state_name((enum delivery_state)filter->state));
    while ((status = query_step(&q, err)) > 0) {
        items = grow(items, n, &capacity, sizeof(*items));
        read_delivery(&q, &items[n++]);
    }
    query_end(&q);

    if (status < 0) {
        delivery_list_free(items, n);
        items = NULL;
        n = 0;
    }
    *out = items;
    *count = n;
    return status;
}

/* Takes finished deliveries out of the integration's delivered and failed counts. */
static int reopen_statistics(struct sqlite_store *s, const char *integration_id, int64_t delivered,
                             int64_t failed, struct bh_error *err)
{
    struct query q;

    query_start(&q, s, STMT_DELIVERY_REOPEN_STATISTICS);
    bind_int(&q, delivered);
    bind_int(&q, failed);
    bind_text(&q, integration_id);
    return query_exec(&q, err);
}

static int redeliver_one(struct sqlite_store *s, const char *user_id, const char *id,
                         int64_t now_ms, struct delivery *out, struct bh_error *err)
{
    enum delivery_state before;
    struct query q;
    int status;

    status = sqlite_delivery_get(&s->base, user_id, id, out, err);
    if (status < 0)
        return status;
    before = out->state;
    if (before != DELIVERY_SUCCEEDED && before != DELIVERY_FAILED)
        return bh_error_set(err, BH_ERR_CONFLICT, "id",
                            "delivery %s is %s, not finished; only a succeeded or failed "
                            "delivery can be sent again",
                            id, state_name(before));
    if (out->test)
        return bh_error_set(err, BH_ERR_CONFLICT, "id",
                            "delivery %s is a test; send a new test with "
                            "POST /v1/integrations/%s/test",
                            id, out->integration_id);

    query_start(&q, s, STMT_DELIVERY_REDELIVER);
    bind_int(&q, now_ms);
    bind_text(&q, id);
    bind_text(&q, user_id);
    status = query_exec(&q, err);
    if (status < 0)
        return status;
    status = reopen_statistics(s, out->integration_id, before == DELIVERY_SUCCEEDED,
                               before == DELIVERY_FAILED, err);
    if (status < 0)
        return status;
    out->state = DELIVERY_PENDING;
    out->next_attempt_ms = now_ms;
    out->updated_ms = now_ms;
    return 0;
}

static int sqlite_delivery_redeliver(struct store *store, const char *user_id, const char *id,
                                     int64_t now_ms, struct delivery *out, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    bool nested;
    int status;

    memset(out, 0, sizeof(*out));
    status = operation_begin(s, &nested, err);
    if (status < 0)
        return status;
    status = redeliver_one(s, user_id, id, now_ms, out, err);
    status = operation_end(s, nested, status, err);
    if (status < 0)
        delivery_release(out);
    return status;
}

static int sqlite_delivery_recover(struct store *store, const char *user_id,
                                   const char *integration_id, int64_t since_ms, int64_t now_ms,
                                   int64_t *recovered, struct bh_error *err)
{
    struct sqlite_store *s = from_store(store);
    struct query q;
    bool nested;
    int status;

    *recovered = 0;
    status = operation_begin(s, &nested, err);
    if (status < 0)
        return status;
    query_start(&q, s, STMT_DELIVERY_RECOVER);
    bind_int(&q, now_ms);
    bind_text(&q, integration_id);
    bind_text(&q, user_id);
    bind_int(&q, since_ms);
    status = query_exec(&q, err);
    if (status == 0)
        *recovered = sqlite3_changes64(s->db);
    if (status == 0 && *recovered > 0)
        status = reopen_statistics(s, integration_id, 0, *recovered, err);
    status = operation_end(s, nested, status, err);
    if (status < 0)
        *recovered = 0;
    return status;
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
    .integration_update = sqlite_integration_update,
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
    .delivery_claim_capped = sqlite_delivery_claim_capped,
    .delivery_next_due = sqlite_delivery_next_due,
    .delivery_finish = sqlite_delivery_finish,
    .delivery_finish_batch = sqlite_delivery_finish_batch,
    .set_sync_commits = sqlite_set_sync_commits,
    .sync = sqlite_sync,
    .release_all_leases = sqlite_release_all_leases,
    .mapping_get = sqlite_mapping_get,
    .mapping_delete = sqlite_mapping_delete,
    .lead_latest_campaign = sqlite_lead_latest_campaign,
    .idempotency_get = sqlite_idempotency_get,
    .idempotency_put = sqlite_idempotency_put,
    .purge_finished = sqlite_purge_finished,
    .purge_idempotency = sqlite_purge_idempotency,
    .delivery_list = sqlite_delivery_list,
    .delivery_redeliver = sqlite_delivery_redeliver,
    .delivery_recover = sqlite_delivery_recover,
};
