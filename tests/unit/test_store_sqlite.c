/*
 * Tests of the storage interface on its SQLite back end, each against a real database file
 * in its own temporary folder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/clock.h"
#include "core/events.h"
#include "core/ids.h"
#include "core/integration.h"
#include "core/payload.h"
#include "store/sqlite.h"
#include "store/store.h"
#include "util/alloc.h"

#define T0 1767225600000 /* 2026-01-01T00:00:00.000Z, the tests' clock */
#define LEASE_MS 60000
#define ALL_EVENTS EVENT_SELECTABLE_MASK

struct fixture {
    char dir[64];
    char path[128];
    struct store *store;
    struct user user;
    struct user other;
    int64_t next_created_ms; /* strictly increasing creation times, for ordered lists */
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void create_user(struct store *store, struct user *user, char key_hash[SHA256_HEX_LEN + 1])
{
    struct bh_error err;
    char *key = api_key_generate();

    memset(user, 0, sizeof(*user));
    id_generate(user->id);
    snprintf(user->name, sizeof(user->name), "user %s", user->id);
    user->created_ms = T0;
    api_key_hash(key, key_hash);
    free(key);
    assert_int_equal(store_user_create(store, user, key_hash, &err), 0);
}

static int setup(void **state)
{
    struct fixture *fx = xcalloc(1, sizeof(*fx));
    char key_hash[SHA256_HEX_LEN + 1];
    struct bh_error err;

    snprintf(fx->dir, sizeof(fx->dir), "/tmp/bearhook-store-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    /* A folder below the temporary one, so that opening has to create it. */
    snprintf(fx->path, sizeof(fx->path), "%s/data/bearhook.db", fx->dir);
    fx->store = store_open(fx->path, &err);
    if (!fx->store) {
        fprintf(stderr, "store_open: %s\n", err.message);
        return -1;
    }
    create_user(fx->store, &fx->user, key_hash);
    create_user(fx->store, &fx->other, key_hash);
    fx->next_created_ms = T0;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    store_close(fx->store);
    nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* Inserts an integration of user_id with every field set, and returns it in out. */
static void create_integration(struct fixture *fx, const char *user_id, uint32_t events,
                               struct integration *out)
{
    struct bh_error err;

    integration_init(out);
    id_generate(out->id);
    snprintf(out->user_id, sizeof(out->user_id), "%s", user_id);
    out->name = xstrdup("CRM sync");
    out->url = xasprintf("https://hooks.example.com/bearhook/%s", out->id);
    snprintf(out->provider, sizeof(out->provider), "zapier");
    out->signing = true;
    out->secret = secret_generate();
    out->events = events;
    out->header_count = 2;
    out->headers = xcalloc(2, sizeof(*out->headers));
    out->headers[0].name = xstrdup("X-Api-Key");
    out->headers[0].value = xstrdup("key \"with\" quotes");
    out->headers[1].name = xstrdup("X-Team");
    out->headers[1].value = xstrdup("growth");
    out->max_retries = 4;
    out->timeout_ms = 12000;
    out->created_ms = fx->next_created_ms++;
    out->updated_ms = out->created_ms;
    out->status = INTEGRATION_ACTIVE;
    assert_int_equal(store_integration_insert(fx->store, out, &err), 0);
}

static void create_event(struct fixture *fx, const char *user_id, const char *campaign_id,
                         struct event_record *out)
{
    struct bh_error err;

    memset(out, 0, sizeof(*out));
    event_id_generate(out->id);
    snprintf(out->user_id, sizeof(out->user_id), "%s", user_id);
    out->type = EVENT_MESSAGE_REPLIED;
    out->lead_id = "lead-1";
    out->campaign_id = (char *)campaign_id;
    out->occurred_ms = T0;
    out->created_ms = T0;
    assert_int_equal(store_event_insert(fx->store, out, &err), 0);
}

/* Fills a pending delivery of event to integration, due at due_ms, without inserting it. */
static void fill_delivery(const struct event_record *event, const struct integration *integration,
                          int64_t due_ms, struct delivery *out)
{
    static const char body[] = "{\"event\":\"message_replied\",\"data\":{\"lead\":\"\0\"}}";

    memset(out, 0, sizeof(*out));
    delivery_id_generate(out->id);
    snprintf(out->event_id, sizeof(out->event_id), "%s", event->id);
    snprintf(out->integration_id, sizeof(out->integration_id), "%s", integration->id);
    snprintf(out->user_id, sizeof(out->user_id), "%s", integration->user_id);
    out->event_type = event->type;
    out->body = (char *)body; /* contains a NUL byte, which must survive the round trip */
    out->body_len = sizeof(body) - 1;
    out->state = DELIVERY_PENDING;
    out->next_attempt_ms = due_ms;
    out->created_ms = T0;
    out->updated_ms = T0;
}

/* Inserts an event and one pending delivery of it to integration, due at due_ms. */
static void create_delivery(struct fixture *fx, const struct integration *integration,
                            int64_t due_ms, struct delivery *out)
{
    struct event_record event;
    struct bh_error err;

    create_event(fx, integration->user_id, "campaign-1", &event);
    fill_delivery(&event, integration, due_ms, out);
    assert_int_equal(store_delivery_insert(fx->store, out, &err), 0);
}

static void claim(struct fixture *fx, const char *owner, int64_t now_ms, size_t limit,
                  struct delivery_job **jobs, size_t *count)
{
    struct bh_error err;

    assert_int_equal(
        store_delivery_claim(fx->store, owner, now_ms, LEASE_MS, limit, jobs, count, &err), 0);
}

static struct attempt_outcome outcome_for(const struct delivery *d, const char *owner,
                                          enum delivery_state new_state)
{
    struct attempt_outcome o = {
        .delivery_id = d->id,
        .integration_id = d->integration_id,
        .lease_owner = owner,
        .started_ms = T0 + 1000,
        .duration_ms = 250,
        .new_state = new_state,
    };

    if (new_state == DELIVERY_SUCCEEDED) {
        o.http_status = 200;
        o.response_excerpt = "ok";
        o.response_excerpt_len = 2;
    } else {
        o.http_status = 503;
        o.error = "HTTP 503 Service Unavailable";
        o.next_attempt_ms = T0 + 30000;
    }
    return o;
}

static int64_t query_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int64_t value;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

static void exec_raw(const char *path, const char *sql)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* ---- Opening and migrations ---- */

static void store_open_creates_schema(void **state)
{
    struct fixture *fx = *state;
    static const char *const tables[] = {"users",    "api_keys", "integrations", "records",
                                         "mappings", "events",   "deliveries",   "attempts"};
    char folder[160];
    struct stat st;

    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        char sql[160];

        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '%s'",
                 tables[i]);
        assert_int_equal(query_int(fx->path, sql), 1);
    }
    assert_int_equal(query_int(fx->path, "PRAGMA user_version"), sqlite_store_schema_version());
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM sqlite_master WHERE type = "
                                         "'index' AND name = 'deliveries_ready_by_integration'"),
                     1);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM sqlite_master "
                                         "WHERE type = 'index' AND name = 'deliveries_leased'"),
                     1);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM sqlite_master "
                                         "WHERE type = 'index' AND name = 'deliveries_due'"),
                     0);

    assert_int_equal(stat(fx->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(folder, sizeof(folder), "%s/data", fx->dir);
    assert_int_equal(stat(folder, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
}

static void store_open_uses_wal(void **state)
{
    struct fixture *fx = *state;
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;

    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

/* Commits made without sync are confirmed by store_sync, on a file and in memory. */
static void store_sync_confirms_commits(void **state)
{
    struct fixture *fx = *state;
    struct integration created;
    struct store *memory;
    struct bh_error err;
    char wal[160];
    struct stat st;

    assert_int_equal(store_set_sync_commits(fx->store, false, &err), 0);
    create_integration(fx, fx->user.id, ALL_EVENTS, &created);
    assert_int_equal(store_sync(fx->store, &err), 0);
    assert_int_equal(store_sync(fx->store, &err), 0);
    snprintf(wal, sizeof(wal), "%s-wal", fx->path);
    assert_int_equal(stat(wal, &st), 0);
    integration_release(&created);

    memory = store_open(":memory:", &err);
    assert_non_null(memory);
    assert_int_equal(store_sync(memory, &err), 0);
    store_close(memory);
}

static off_t file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? st.st_size : -1;
}

/*
 * Checkpoints run on a thread of their own: once commits take the WAL past its limit, its
 * pages reach the database file while the connection stays open and writes nothing more.
 */
/* Commits `commits` transactions in a row, each of `per_commit` deliveries of 3000 bytes. */
static void commit_large_deliveries(struct fixture *fx, int commits, int per_commit)
{
    struct integration integration;
    struct event_record event;
    struct bh_error err;
    char *body = xmalloc(3000);

    memset(body, 'x', 3000);
    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_event(fx, fx->user.id, "campaign-1", &event);
    for (int round = 0; round < commits; round++) {
        assert_int_equal(store_begin(fx->store, &err), 0);
        for (int i = 0; i < per_commit; i++) {
            struct delivery d;

            fill_delivery(&event, &integration, T0, &d);
            d.body = body;
            d.body_len = 3000;
            assert_int_equal(store_delivery_insert(fx->store, &d, &err), 0);
        }
        assert_int_equal(store_commit(fx->store, &err), 0);
    }
    free(body);
    integration_release(&integration);
}

static void checkpoint_copies_wal_while_open(void **state)
{
    struct fixture *fx = *state;
    off_t before = file_size(fx->path);

    /* About 6 MB in 10 commits, past the 1000 pages (4 MB) that ask for a checkpoint. */
    commit_large_deliveries(fx, 10, 200);
    for (int wait = 0; wait < 200 && file_size(fx->path) < before + 3 * 1024 * 1024; wait++)
        usleep(50 * 1000);
    assert_true(file_size(fx->path) >= before + 3 * 1024 * 1024);
}

/*
 * A connection that commits all the time still lets the WAL start over. About 45 MB of commits
 * without a pause leave a WAL file of 7 to 18 MB, with several tests running at once on 2 CPUs.
 */
static void wal_starts_over_under_steady_commits(void **state)
{
    struct fixture *fx = *state;
    struct bh_error err;
    char wal[160];

    assert_int_equal(store_set_sync_commits(fx->store, false, &err), 0);
    commit_large_deliveries(fx, 150, 50);
    /* The file keeps its largest size, so this is the most the WAL held at any time. */
    snprintf(wal, sizeof(wal), "%s-wal", fx->path);
    assert_true(file_size(wal) > 0);
    assert_true(file_size(wal) < 28 * 1024 * 1024);
}

static void store_reopen_keeps_data(void **state)
{
    struct fixture *fx = *state;
    struct integration created;
    struct integration loaded;
    struct bh_error err;
    char location[160];

    create_integration(fx, fx->user.id, ALL_EVENTS, &created);
    store_close(fx->store);

    snprintf(location, sizeof(location), "sqlite:%s", fx->path);
    fx->store = store_open(location, &err);
    assert_non_null(fx->store);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, created.id, &loaded, &err), 0);
    assert_string_equal(loaded.url, created.url);
    assert_int_equal(query_int(fx->path, "PRAGMA user_version"), sqlite_store_schema_version());

    integration_release(&loaded);
    integration_release(&created);
}

static void store_newer_schema_rejected(void **state)
{
    struct fixture *fx = *state;
    struct bh_error err;
    char sql[64];

    store_close(fx->store);
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", sqlite_store_schema_version() + 1);
    exec_raw(fx->path, sql);

    fx->store = store_open(fx->path, &err);
    assert_null(fx->store);
    assert_int_equal(err.status, BH_ERR_STORE);
    assert_non_null(strstr(err.message, "newer"));
    assert_int_equal(query_int(fx->path, "PRAGMA user_version"), sqlite_store_schema_version() + 1);
}

static void store_postgres_not_built(void **state)
{
    struct bh_error err;

    assert_null(store_open("postgres://bearhook@localhost/bearhook", &err));
    assert_int_equal(err.status, BH_ERR_INVALID);
    assert_non_null(strstr(err.message, "PostgreSQL support is not built yet"));
    assert_null(store_open("postgresql://localhost/bearhook", &err));
    assert_int_equal(err.status, BH_ERR_INVALID);
}

/* ---- Users ---- */

static void user_create_and_find(void **state)
{
    struct fixture *fx = *state;
    char key_hash[SHA256_HEX_LEN + 1];
    char unknown_hash[SHA256_HEX_LEN + 1];
    struct user created;
    struct user found;
    struct bh_error err;
    int64_t count = 0;

    assert_int_equal(store_user_count(fx->store, &count, &err), 0);
    assert_int_equal(count, 2);

    create_user(fx->store, &created, key_hash);
    assert_int_equal(store_user_count(fx->store, &count, &err), 0);
    assert_int_equal(count, 3);

    assert_int_equal(store_user_by_key(fx->store, key_hash, &found, &err), 0);
    assert_string_equal(found.id, created.id);
    assert_string_equal(found.name, created.name);
    assert_int_equal(found.created_ms, created.created_ms);

    api_key_hash("bh_not-a-key", unknown_hash);
    assert_int_equal(store_user_by_key(fx->store, unknown_hash, &found, &err), BH_ERR_NOT_FOUND);
}

static void user_duplicate_is_conflict(void **state)
{
    struct fixture *fx = *state;
    char key_hash[SHA256_HEX_LEN + 1];
    struct user found;
    struct bh_error err;
    int64_t count = 0;

    api_key_hash("bh_another-key", key_hash);
    assert_int_equal(store_user_create(fx->store, &fx->user, key_hash, &err), BH_ERR_CONFLICT);

    /* The user insert failed, so its API key was not kept either. */
    assert_int_equal(store_user_by_key(fx->store, key_hash, &found, &err), BH_ERR_NOT_FOUND);
    assert_int_equal(store_user_count(fx->store, &count, &err), 0);
    assert_int_equal(count, 2);
}

static void user_create_in_transaction_undoes_own(void **state)
{
    struct fixture *fx = *state;
    char key_hash[SHA256_HEX_LEN + 1];
    struct user taken;
    struct user added;
    struct bh_error err;
    int64_t count = 0;
    char *text = NULL;

    create_user(fx->store, &taken, key_hash);
    memset(&added, 0, sizeof(added));
    id_generate(added.id);
    snprintf(added.name, sizeof(added.name), "second owner of one key");

    /* The user row is written before the key fails, and only that row is undone. */
    assert_int_equal(store_begin(fx->store, &err), 0);
    assert_int_equal(store_record_put(fx->store, RECORD_LEAD, fx->user.id, "lead-9",
                                      "{\"id\":\"lead-9\"}", &err),
                     0);
    assert_int_equal(store_user_create(fx->store, &added, key_hash, &err), BH_ERR_CONFLICT);
    assert_int_equal(store_commit(fx->store, &err), 0);

    assert_int_equal(store_user_count(fx->store, &count, &err), 0);
    assert_int_equal(count, 3);
    assert_int_equal(store_record_get(fx->store, RECORD_LEAD, fx->user.id, "lead-9", &text, &err),
                     0);
    free(text);
}

/* ---- Integrations ---- */

static void integration_round_trip(void **state)
{
    struct fixture *fx = *state;
    struct integration created;
    struct integration loaded;
    struct bh_error err;

    create_integration(fx, fx->user.id, EVENT_MASK(EVENT_MESSAGE_SENT), &created);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, created.id, &loaded, &err), 0);

    assert_string_equal(loaded.id, created.id);
    assert_string_equal(loaded.user_id, fx->user.id);
    assert_string_equal(loaded.name, "CRM sync");
    assert_string_equal(loaded.url, created.url);
    assert_string_equal(loaded.provider, "zapier");
    assert_true(loaded.signing);
    assert_string_equal(loaded.secret, created.secret);
    assert_int_equal(loaded.events, EVENT_MASK(EVENT_MESSAGE_SENT));
    assert_int_equal(loaded.header_count, 2);
    assert_string_equal(loaded.headers[0].name, "X-Api-Key");
    assert_string_equal(loaded.headers[0].value, "key \"with\" quotes");
    assert_string_equal(loaded.headers[1].name, "X-Team");
    assert_string_equal(loaded.headers[1].value, "growth");
    assert_int_equal(loaded.max_retries, 4);
    assert_int_equal(loaded.timeout_ms, 12000);
    assert_int_equal(loaded.created_ms, created.created_ms);
    assert_int_equal(loaded.status, INTEGRATION_ACTIVE);
    assert_int_equal(loaded.delivered, 0);
    assert_int_equal(loaded.failed, 0);
    assert_int_equal(loaded.last_delivery_ms, 0);
    assert_null(loaded.last_error);

    integration_release(&loaded);
    integration_release(&created);
}

static void integration_other_user_not_found(void **state)
{
    struct fixture *fx = *state;
    struct integration created;
    struct integration loaded;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &created);
    assert_int_equal(store_integration_get(fx->store, fx->other.id, created.id, &loaded, &err),
                     BH_ERR_NOT_FOUND);
    assert_int_equal(store_integration_delete(fx->store, fx->other.id, created.id, &err),
                     BH_ERR_NOT_FOUND);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, created.id, &loaded, &err), 0);

    integration_release(&loaded);
    integration_release(&created);
}

static void integration_list_and_delete(void **state)
{
    struct fixture *fx = *state;
    struct integration first;
    struct integration second;
    struct integration theirs;
    struct integration loaded;
    struct integration *items = NULL;
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &first);
    create_integration(fx, fx->user.id, ALL_EVENTS, &second);
    create_integration(fx, fx->other.id, ALL_EVENTS, &theirs);

    assert_int_equal(store_integration_list(fx->store, fx->user.id, &items, &count, &err), 0);
    assert_int_equal(count, 2);
    assert_string_equal(items[0].id, first.id);
    assert_string_equal(items[1].id, second.id);
    assert_int_equal(items[1].header_count, 2);
    integration_list_free(items, count);

    assert_int_equal(store_integration_delete(fx->store, fx->user.id, first.id, &err), 0);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, first.id, &loaded, &err),
                     BH_ERR_NOT_FOUND);
    assert_int_equal(store_integration_list(fx->store, fx->user.id, &items, &count, &err), 0);
    assert_int_equal(count, 1);
    assert_string_equal(items[0].id, second.id);
    integration_list_free(items, count);

    integration_release(&first);
    integration_release(&second);
    integration_release(&theirs);
}

static void integration_duplicate_is_conflict(void **state)
{
    struct fixture *fx = *state;
    struct integration created;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &created);
    assert_int_equal(store_integration_insert(fx->store, &created, &err), BH_ERR_CONFLICT);
    assert_non_null(strstr(err.message, "integration"));
    integration_release(&created);
}

/* ---- Records ---- */

static void record_put_get_replace(void **state)
{
    struct fixture *fx = *state;
    struct bh_error err;
    char *text = NULL;

    assert_int_equal(store_record_put(fx->store, RECORD_LEAD, fx->user.id, "lead-1",
                                      "{\"id\":\"lead-1\",\"firstName\":\"Ada\"}", &err),
                     0);
    assert_int_equal(store_record_put(fx->store, RECORD_LEAD, fx->user.id, "lead-1",
                                      "{\"id\":\"lead-1\",\"firstName\":\"Grace\"}", &err),
                     0);
    assert_int_equal(store_record_get(fx->store, RECORD_LEAD, fx->user.id, "lead-1", &text, &err),
                     0);
    assert_string_equal(text, "{\"id\":\"lead-1\",\"firstName\":\"Grace\"}");
    free(text);

    /* Kinds and users are separate name spaces. */
    assert_int_equal(
        store_record_get(fx->store, RECORD_CAMPAIGN, fx->user.id, "lead-1", &text, &err),
        BH_ERR_NOT_FOUND);
    assert_int_equal(store_record_get(fx->store, RECORD_LEAD, fx->other.id, "lead-1", &text, &err),
                     BH_ERR_NOT_FOUND);
    assert_null(text);
}

static void record_list_pages(void **state)
{
    struct fixture *fx = *state;
    struct bh_error err;
    char **texts = NULL;
    size_t count = 0;

    /* Inserted out of order: the list is by id. */
    static const char *const ids[] = {"c", "a", "e", "b", "d"};
    for (size_t i = 0; i < 5; i++) {
        char json[64];

        snprintf(json, sizeof(json), "{\"id\":\"%s\"}", ids[i]);
        assert_int_equal(
            store_record_put(fx->store, RECORD_CAMPAIGN, fx->user.id, ids[i], json, &err), 0);
    }
    assert_int_equal(
        store_record_put(fx->store, RECORD_CAMPAIGN, fx->other.id, "aa", "{\"id\":\"aa\"}", &err),
        0);

    assert_int_equal(
        store_record_list(fx->store, RECORD_CAMPAIGN, fx->user.id, NULL, 2, &texts, &count, &err),
        0);
    assert_int_equal(count, 2);
    assert_string_equal(texts[0], "{\"id\":\"a\"}");
    assert_string_equal(texts[1], "{\"id\":\"b\"}");
    record_list_free(texts, count);

    assert_int_equal(
        store_record_list(fx->store, RECORD_CAMPAIGN, fx->user.id, "b", 2, &texts, &count, &err),
        0);
    assert_int_equal(count, 2);
    assert_string_equal(texts[0], "{\"id\":\"c\"}");
    assert_string_equal(texts[1], "{\"id\":\"d\"}");
    record_list_free(texts, count);

    assert_int_equal(
        store_record_list(fx->store, RECORD_CAMPAIGN, fx->user.id, "d", 2, &texts, &count, &err),
        0);
    assert_int_equal(count, 1);
    assert_string_equal(texts[0], "{\"id\":\"e\"}");
    record_list_free(texts, count);

    assert_int_equal(
        store_record_list(fx->store, RECORD_LEAD, fx->user.id, NULL, 10, &texts, &count, &err), 0);
    assert_int_equal(count, 0);
    record_list_free(texts, count);
}

/* ---- Mappings and routes ---- */

static void put_mapping(struct fixture *fx, const char *user_id, const char *campaign_id,
                        const char *integration_id, uint32_t events, bool active, int64_t time_ms)
{
    struct mapping m = {.events = events, .active = active};
    struct bh_error err;

    snprintf(m.campaign_id, sizeof(m.campaign_id), "%s", campaign_id);
    snprintf(m.integration_id, sizeof(m.integration_id), "%s", integration_id);
    m.created_ms = time_ms;
    m.updated_ms = time_ms;
    assert_int_equal(store_mapping_put(fx->store, user_id, &m, &err), 0);
}

static void mapping_put_replaces(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct mapping *items = NULL;
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    put_mapping(fx, fx->user.id, "campaign-1", integration.id, ALL_EVENTS, true, T0);
    put_mapping(fx, fx->user.id, "campaign-1", integration.id,
                EVENT_MASK(EVENT_CONNECTION_REQUEST_SENT), false, T0 + 500);

    assert_int_equal(store_mapping_list(fx->store, fx->user.id, "campaign-1", &items, &count, &err),
                     0);
    assert_int_equal(count, 1);
    assert_string_equal(items[0].campaign_id, "campaign-1");
    assert_string_equal(items[0].integration_id, integration.id);
    assert_int_equal(items[0].events, EVENT_MASK(EVENT_CONNECTION_REQUEST_SENT));
    assert_false(items[0].active);
    assert_int_equal(items[0].created_ms, T0);
    assert_int_equal(items[0].updated_ms, T0 + 500);
    free(items);

    assert_int_equal(store_mapping_list(fx->store, fx->user.id, "campaign-2", &items, &count, &err),
                     0);
    assert_int_equal(count, 0);
    free(items);
    integration_release(&integration);
}

static void mapping_foreign_integration_not_found(void **state)
{
    struct fixture *fx = *state;
    struct integration theirs;
    struct mapping m = {.events = ALL_EVENTS, .active = true, .created_ms = T0, .updated_ms = T0};
    struct bh_error err;

    create_integration(fx, fx->other.id, ALL_EVENTS, &theirs);
    snprintf(m.campaign_id, sizeof(m.campaign_id), "campaign-1");
    snprintf(m.integration_id, sizeof(m.integration_id), "%s", theirs.id);
    assert_int_equal(store_mapping_put(fx->store, fx->user.id, &m, &err), BH_ERR_NOT_FOUND);

    id_generate(m.integration_id);
    assert_int_equal(store_mapping_put(fx->store, fx->user.id, &m, &err), BH_ERR_NOT_FOUND);
    integration_release(&theirs);
}

static bool ids_contain(char (*ids)[ID_LEN + 1], size_t count, const char *id)
{
    for (size_t i = 0; i < count; i++) {
        if (strcmp(ids[i], id) == 0)
            return true;
    }
    return false;
}

static void routes_filter_mappings(void **state)
{
    struct fixture *fx = *state;
    struct integration all;       /* active, every event */
    struct integration narrowed;  /* the integration itself no longer allows message_replied */
    struct integration paused;    /* mapping paused */
    struct integration no_bit;    /* mapping without message_replied */
    struct integration elsewhere; /* mapped on another campaign */
    struct integration theirs;    /* another user's, on a campaign with the same id */
    char(*ids)[ID_LEN + 1] = NULL;
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &all);
    create_integration(fx, fx->user.id, EVENT_MASK(EVENT_MESSAGE_SENT), &narrowed);
    create_integration(fx, fx->user.id, ALL_EVENTS, &paused);
    create_integration(fx, fx->user.id, ALL_EVENTS, &no_bit);
    create_integration(fx, fx->user.id, ALL_EVENTS, &elsewhere);
    create_integration(fx, fx->other.id, ALL_EVENTS, &theirs);

    put_mapping(fx, fx->user.id, "campaign-1", all.id, ALL_EVENTS, true, T0);
    put_mapping(fx, fx->user.id, "campaign-1", narrowed.id, ALL_EVENTS, true, T0 + 1);
    put_mapping(fx, fx->user.id, "campaign-1", paused.id, ALL_EVENTS, false, T0 + 2);
    put_mapping(fx, fx->user.id, "campaign-1", no_bit.id, EVENT_MASK(EVENT_MESSAGE_SENT), true,
                T0 + 3);
    put_mapping(fx, fx->user.id, "campaign-2", elsewhere.id, ALL_EVENTS, true, T0 + 4);
    put_mapping(fx, fx->other.id, "campaign-1", theirs.id, ALL_EVENTS, true, T0 + 5);

    assert_int_equal(store_routes(fx->store, fx->user.id, "campaign-1", EVENT_MESSAGE_REPLIED, &ids,
                                  &count, &err),
                     0);
    assert_int_equal(count, 1);
    assert_string_equal(ids[0], all.id);
    free(ids);

    assert_int_equal(
        store_routes(fx->store, fx->user.id, "campaign-1", EVENT_MESSAGE_SENT, &ids, &count, &err),
        0);
    assert_int_equal(count, 3);
    assert_true(ids_contain(ids, count, all.id));
    assert_true(ids_contain(ids, count, narrowed.id));
    assert_true(ids_contain(ids, count, no_bit.id));
    assert_false(ids_contain(ids, count, paused.id));
    free(ids);

    assert_int_equal(store_routes(fx->store, fx->other.id, "campaign-1", EVENT_MESSAGE_REPLIED,
                                  &ids, &count, &err),
                     0);
    assert_int_equal(count, 1);
    assert_string_equal(ids[0], theirs.id);
    free(ids);

    integration_release(&all);
    integration_release(&narrowed);
    integration_release(&paused);
    integration_release(&no_bit);
    integration_release(&elsewhere);
    integration_release(&theirs);
}

/* ---- Events and deliveries ---- */

static void delivery_commit_and_rollback(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct event_record event;
    struct delivery kept;
    struct delivery dropped;
    struct delivery loaded;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);

    assert_int_equal(store_begin(fx->store, &err), 0);
    create_event(fx, fx->user.id, "campaign-1", &event);
    fill_delivery(&event, &integration, T0, &dropped);
    assert_int_equal(store_delivery_insert(fx->store, &dropped, &err), 0);
    store_rollback(fx->store);
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, dropped.id, &loaded, &err),
                     BH_ERR_NOT_FOUND);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM events"), 0);

    assert_int_equal(store_begin(fx->store, &err), 0);
    create_event(fx, fx->user.id, "campaign-1", &event);
    fill_delivery(&event, &integration, T0, &kept);
    assert_int_equal(store_delivery_insert(fx->store, &kept, &err), 0);
    assert_int_equal(store_commit(fx->store, &err), 0);

    assert_int_equal(store_delivery_get(fx->store, fx->user.id, kept.id, &loaded, &err), 0);
    assert_string_equal(loaded.event_id, event.id);
    assert_string_equal(loaded.integration_id, integration.id);
    assert_int_equal(loaded.event_type, EVENT_MESSAGE_REPLIED);
    assert_int_equal(loaded.body_len, kept.body_len);
    assert_memory_equal(loaded.body, kept.body, kept.body_len);
    assert_int_equal(loaded.state, DELIVERY_PENDING);
    assert_int_equal(loaded.attempts, 0);
    assert_int_equal(loaded.next_attempt_ms, T0);
    assert_null(loaded.last_error);
    delivery_release(&loaded);

    assert_int_equal(store_delivery_get(fx->store, fx->other.id, kept.id, &loaded, &err),
                     BH_ERR_NOT_FOUND);
    integration_release(&integration);
}

/*
 * Deliveries inserted with shared_body store the event's payload prefix once, and every read
 * returns the whole body: the prefix finished with the delivery's integration id.
 */
static void delivery_shared_body_round_trip(void **state)
{
    struct fixture *fx = *state;
    static const char prefix[] = "{\"event\":\"message_replied\",\"metadata\":{\"integrationId\":";
    struct integration first;
    struct integration second;
    struct event_record event;
    struct delivery inserted[2];
    struct delivery loaded;
    struct delivery_job *jobs = NULL;
    struct bh_error err;
    size_t count = 0;

    create_integration(fx, fx->user.id, ALL_EVENTS, &first);
    create_integration(fx, fx->user.id, ALL_EVENTS, &second);
    memset(&event, 0, sizeof(event));
    event_id_generate(event.id);
    snprintf(event.user_id, sizeof(event.user_id), "%s", fx->user.id);
    event.type = EVENT_MESSAGE_REPLIED;
    event.lead_id = "lead-1";
    event.campaign_id = "campaign-1";
    event.occurred_ms = T0;
    event.created_ms = T0;
    event.payload_prefix = prefix;
    event.payload_prefix_len = sizeof(prefix) - 1;
    assert_int_equal(store_event_insert(fx->store, &event, &err), 0);
    for (int i = 0; i < 2; i++) {
        fill_delivery(&event, i == 0 ? &first : &second, T0, &inserted[i]);
        inserted[i].body = NULL;
        inserted[i].body_len = 0;
        inserted[i].shared_body = true;
        assert_int_equal(store_delivery_insert(fx->store, &inserted[i], &err), 0);
    }

    for (int i = 0; i < 2; i++) {
        size_t expected_len = 0;
        char *expected =
            payload_finish(prefix, sizeof(prefix) - 1, inserted[i].integration_id, &expected_len);

        assert_int_equal(store_delivery_get(fx->store, fx->user.id, inserted[i].id, &loaded, &err),
                         0);
        assert_int_equal(loaded.body_len, expected_len);
        assert_memory_equal(loaded.body, expected, expected_len);
        assert_false(loaded.shared_body);
        delivery_release(&loaded);
        free(expected);
    }

    claim(fx, "worker-1", T0, 10, &jobs, &count);
    assert_int_equal(count, 2);
    for (size_t i = 0; i < count; i++) {
        size_t expected_len = 0;
        char *expected =
            payload_finish(prefix, sizeof(prefix) - 1, jobs[i].integration_id, &expected_len);

        assert_int_equal(jobs[i].body_len, expected_len);
        assert_memory_equal(jobs[i].body, expected, expected_len);
        free(expected);
    }
    delivery_job_list_free(jobs, count);
    integration_release(&first);
    integration_release(&second);
}

/* A shared body whose event has no stored prefix is an error, not an empty body. */
static void delivery_shared_body_missing_prefix(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct event_record event;
    struct delivery inserted;
    struct delivery loaded;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_event(fx, fx->user.id, "campaign-1", &event);
    fill_delivery(&event, &integration, T0, &inserted);
    inserted.shared_body = true;
    assert_int_equal(store_delivery_insert(fx->store, &inserted, &err), 0);

    assert_int_equal(store_delivery_get(fx->store, fx->user.id, inserted.id, &loaded, &err),
                     BH_ERR_STORE);
    assert_non_null(strstr(err.message, event.id));
    integration_release(&integration);
}

static void delivery_foreign_integration_not_found(void **state)
{
    struct fixture *fx = *state;
    struct integration theirs;
    struct event_record event;
    struct delivery d;
    struct bh_error err;

    create_integration(fx, fx->other.id, ALL_EVENTS, &theirs);
    create_event(fx, fx->user.id, "campaign-1", &event);
    fill_delivery(&event, &theirs, T0, &d);
    snprintf(d.user_id, sizeof(d.user_id), "%s", fx->user.id);
    assert_int_equal(store_delivery_insert(fx->store, &d, &err), BH_ERR_NOT_FOUND);
    integration_release(&theirs);
}

/* ---- Claims ---- */

static void claim_takes_due_only(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery due;
    struct delivery later;
    struct delivery_job *jobs = NULL;
    size_t count = 0;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &due);
    create_delivery(fx, &integration, T0 + 10000, &later);

    claim(fx, "worker-a", T0 + 5000, 10, &jobs, &count);
    assert_int_equal(count, 1);
    assert_string_equal(jobs[0].delivery_id, due.id);
    assert_string_equal(jobs[0].event_id, due.event_id);
    assert_string_equal(jobs[0].integration_id, integration.id);
    assert_string_equal(jobs[0].user_id, fx->user.id);
    assert_string_equal(jobs[0].url, integration.url);
    assert_true(jobs[0].signing);
    assert_string_equal(jobs[0].secret, integration.secret);
    assert_int_equal(jobs[0].header_count, 2);
    assert_string_equal(jobs[0].headers[1].name, "X-Team");
    assert_int_equal(jobs[0].timeout_ms, 12000);
    assert_int_equal(jobs[0].max_retries, 4);
    assert_int_equal(jobs[0].body_len, due.body_len);
    assert_memory_equal(jobs[0].body, due.body, due.body_len);
    assert_int_equal(jobs[0].attempts_before, 0);
    delivery_job_list_free(jobs, count);

    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM deliveries "
                                         "WHERE lease_owner = 'worker-a'"),
                     1);
    integration_release(&integration);
}

static void claim_respects_leases(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct delivery_job *jobs = NULL;
    size_t count = 0;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d);

    claim(fx, "worker-a", T0, 10, &jobs, &count);
    assert_int_equal(count, 1);
    delivery_job_list_free(jobs, count);

    /* Live until T0 + LEASE_MS inclusive. */
    claim(fx, "worker-b", T0 + LEASE_MS, 10, &jobs, &count);
    assert_int_equal(count, 0);
    delivery_job_list_free(jobs, count);

    claim(fx, "worker-b", T0 + LEASE_MS + 1, 10, &jobs, &count);
    assert_int_equal(count, 1);
    assert_string_equal(jobs[0].delivery_id, d.id);
    delivery_job_list_free(jobs, count);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM deliveries "
                                         "WHERE lease_owner = 'worker-b'"),
                     1);
    integration_release(&integration);
}

static void claim_honours_limit(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d[5];
    struct delivery_job *jobs = NULL;
    size_t count = 0;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    /* Inserted newest due first, so the order below comes from next_attempt_ms. */
    for (int i = 0; i < 5; i++)
        create_delivery(fx, &integration, T0 - 100 * i, &d[i]);

    claim(fx, "worker-a", T0, 2, &jobs, &count);
    assert_int_equal(count, 2);
    assert_string_equal(jobs[0].delivery_id, d[4].id);
    assert_string_equal(jobs[1].delivery_id, d[3].id);
    delivery_job_list_free(jobs, count);

    claim(fx, "worker-a", T0, 2, &jobs, &count);
    assert_int_equal(count, 2);
    assert_string_equal(jobs[0].delivery_id, d[2].id);
    assert_string_equal(jobs[1].delivery_id, d[1].id);
    delivery_job_list_free(jobs, count);

    claim(fx, "worker-a", T0, 2, &jobs, &count);
    assert_int_equal(count, 1);
    assert_string_equal(jobs[0].delivery_id, d[0].id);
    delivery_job_list_free(jobs, count);
    integration_release(&integration);
}

static void claim_unsigned_has_no_secret(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct delivery_job *jobs = NULL;
    size_t count = 0;
    struct bh_error err;

    integration_init(&integration);
    id_generate(integration.id);
    snprintf(integration.user_id, sizeof(integration.user_id), "%s", fx->user.id);
    integration.name = xstrdup("Unsigned");
    integration.url = xstrdup("https://hooks.example.com/plain");
    snprintf(integration.provider, sizeof(integration.provider), "webhook");
    integration.signing = false;
    integration.events = ALL_EVENTS;
    integration.max_retries = MAX_RETRIES_DEFAULT;
    integration.timeout_ms = TIMEOUT_MS_DEFAULT;
    integration.created_ms = T0;
    integration.updated_ms = T0;
    assert_int_equal(store_integration_insert(fx->store, &integration, &err), 0);
    create_delivery(fx, &integration, T0, &d);

    claim(fx, "worker-a", T0, 1, &jobs, &count);
    assert_int_equal(count, 1);
    assert_false(jobs[0].signing);
    assert_null(jobs[0].secret);
    assert_int_equal(jobs[0].header_count, 0);
    assert_int_equal(jobs[0].timeout_ms, TIMEOUT_MS_DEFAULT);
    delivery_job_list_free(jobs, count);
    integration_release(&integration);
}

/* ---- Outcomes ---- */

static void finish_success_updates_stats(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration loaded;
    struct delivery d;
    struct delivery after;
    struct delivery_job *jobs = NULL;
    struct attempt *attempts = NULL;
    struct attempt_outcome o;
    char long_excerpt[RESPONSE_EXCERPT_MAX + 100];
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d);
    claim(fx, "worker-a", T0, 1, &jobs, &count);
    delivery_job_list_free(jobs, count);

    o = outcome_for(&d, "worker-a", DELIVERY_SUCCEEDED);
    memset(long_excerpt, 'x', sizeof(long_excerpt));
    o.response_excerpt = long_excerpt;
    o.response_excerpt_len = sizeof(long_excerpt);
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);

    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d.id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_SUCCEEDED);
    assert_int_equal(after.attempts, 1);
    assert_int_equal(after.last_http_status, 200);
    assert_null(after.last_error);
    delivery_release(&after);

    assert_int_equal(store_attempt_list(fx->store, d.id, &attempts, &count, &err), 0);
    assert_int_equal(count, 1);
    assert_int_equal(attempts[0].number, 1);
    assert_int_equal(attempts[0].started_ms, T0 + 1000);
    assert_int_equal(attempts[0].duration_ms, 250);
    assert_int_equal(attempts[0].http_status, 200);
    assert_null(attempts[0].error);
    assert_int_equal(attempts[0].response_excerpt_len, RESPONSE_EXCERPT_MAX);
    attempt_list_free(attempts, count);

    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.delivered, 1);
    assert_int_equal(loaded.failed, 0);
    assert_int_equal(loaded.status, INTEGRATION_ACTIVE);
    assert_int_equal(loaded.last_delivery_ms, T0 + 1250);
    assert_null(loaded.last_error);
    integration_release(&loaded);
    integration_release(&integration);
}

static void finish_retry_then_failure(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration loaded;
    struct delivery d;
    struct delivery after;
    struct delivery_job *jobs = NULL;
    struct attempt *attempts = NULL;
    struct attempt_outcome o;
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d);
    claim(fx, "worker-a", T0, 1, &jobs, &count);
    delivery_job_list_free(jobs, count);

    o = outcome_for(&d, "worker-a", DELIVERY_PENDING);
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d.id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_PENDING);
    assert_int_equal(after.attempts, 1);
    assert_int_equal(after.next_attempt_ms, T0 + 30000);
    assert_int_equal(after.last_http_status, 503);
    assert_string_equal(after.last_error, "HTTP 503 Service Unavailable");
    delivery_release(&after);

    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.failed, 0);
    assert_int_equal(loaded.status, INTEGRATION_ACTIVE);
    assert_string_equal(loaded.last_error, "HTTP 503 Service Unavailable");
    assert_int_equal(loaded.last_error_ms, T0 + 1250);
    integration_release(&loaded);

    /* The lease ended with the attempt: the retry is claimable when due, by another worker. */
    claim(fx, "worker-b", T0 + 29999, 1, &jobs, &count);
    assert_int_equal(count, 0);
    delivery_job_list_free(jobs, count);
    claim(fx, "worker-b", T0 + 30000, 1, &jobs, &count);
    assert_int_equal(count, 1);
    assert_int_equal(jobs[0].attempts_before, 1);
    delivery_job_list_free(jobs, count);

    o = outcome_for(&d, "worker-b", DELIVERY_FAILED);
    o.started_ms = T0 + 30000;
    o.http_status = 0;
    o.error = "connection refused";
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);

    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d.id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_FAILED);
    assert_int_equal(after.attempts, 2);
    assert_string_equal(after.last_error, "connection refused");
    delivery_release(&after);

    assert_int_equal(store_attempt_list(fx->store, d.id, &attempts, &count, &err), 0);
    assert_int_equal(count, 2);
    assert_int_equal(attempts[0].number, 1);
    assert_int_equal(attempts[0].http_status, 503);
    assert_int_equal(attempts[1].number, 2);
    assert_int_equal(attempts[1].http_status, 0);
    assert_string_equal(attempts[1].error, "connection refused");
    assert_null(attempts[1].response_excerpt);
    attempt_list_free(attempts, count);

    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.failed, 1);
    assert_int_equal(loaded.delivered, 0);
    assert_int_equal(loaded.status, INTEGRATION_ERROR);
    assert_string_equal(loaded.last_error, "connection refused");
    assert_int_equal(loaded.last_delivery_ms, T0 + 30250);
    integration_release(&loaded);
    integration_release(&integration);
}

static void finish_success_after_failure(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration loaded;
    struct delivery failed;
    struct delivery succeeded;
    struct delivery_job *jobs = NULL;
    struct attempt_outcome o;
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &failed);
    create_delivery(fx, &integration, T0 + 1, &succeeded);
    claim(fx, "worker-a", T0 + 1, 2, &jobs, &count);
    assert_int_equal(count, 2);
    delivery_job_list_free(jobs, count);

    o = outcome_for(&failed, "worker-a", DELIVERY_FAILED);
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.status, INTEGRATION_ERROR);
    integration_release(&loaded);

    o = outcome_for(&succeeded, "worker-a", DELIVERY_SUCCEEDED);
    o.started_ms = T0 + 2000;
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.status, INTEGRATION_ACTIVE);
    assert_int_equal(loaded.delivered, 1);
    assert_int_equal(loaded.failed, 1);
    assert_int_equal(loaded.last_delivery_ms, T0 + 2250);
    /* The last error stays on show after a success, with its time. */
    assert_string_equal(loaded.last_error, "HTTP 503 Service Unavailable");
    assert_int_equal(loaded.last_error_ms, T0 + 1250);
    integration_release(&loaded);
    integration_release(&integration);
}

static void finish_wrong_owner_not_found(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration loaded;
    struct delivery d;
    struct delivery after;
    struct delivery_job *jobs = NULL;
    struct attempt *attempts = NULL;
    struct attempt_outcome o;
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d);
    claim(fx, "worker-a", T0, 1, &jobs, &count);
    delivery_job_list_free(jobs, count);

    o = outcome_for(&d, "worker-b", DELIVERY_FAILED);
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), BH_ERR_NOT_FOUND);

    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d.id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_PENDING);
    assert_int_equal(after.attempts, 0);
    delivery_release(&after);
    assert_int_equal(store_attempt_list(fx->store, d.id, &attempts, &count, &err), 0);
    assert_int_equal(count, 0);
    attempt_list_free(attempts, count);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.failed, 0);
    assert_int_equal(loaded.last_delivery_ms, 0);
    assert_null(loaded.last_error);
    integration_release(&loaded);
    integration_release(&integration);
}

static void finish_row_ref_checked(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d[2];
    struct delivery after;
    struct delivery_job *jobs = NULL;
    struct attempt_outcome o;
    int64_t refs[2] = {0, 0};
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d[0]);
    create_delivery(fx, &integration, T0 + 1, &d[1]);
    claim(fx, "worker-a", T0 + 1, 2, &jobs, &count);
    assert_int_equal(count, 2);
    for (size_t i = 0; i < count; i++) {
        assert_true(jobs[i].row_ref > 0);
        refs[strcmp(jobs[i].delivery_id, d[0].id) == 0 ? 0 : 1] = jobs[i].row_ref;
    }
    assert_int_not_equal(refs[0], refs[1]);
    delivery_job_list_free(jobs, count);

    /* A row_ref of another delivery finds nothing: the id must match too. */
    o = outcome_for(&d[0], "worker-a", DELIVERY_SUCCEEDED);
    o.row_ref = refs[1];
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), BH_ERR_NOT_FOUND);
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d[1].id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_PENDING);
    delivery_release(&after);

    o.row_ref = refs[0];
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d[0].id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_SUCCEEDED);
    assert_int_equal(after.attempts, 1);
    delivery_release(&after);
    integration_release(&integration);
}

static void finish_in_transaction_keeps_caller(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct delivery_job *jobs = NULL;
    struct attempt_outcome o;
    size_t count = 0;
    struct bh_error err;
    char *text = NULL;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d);
    claim(fx, "worker-a", T0, 1, &jobs, &count);
    delivery_job_list_free(jobs, count);

    /* A failed finish undoes only its own writes inside the caller's transaction. */
    assert_int_equal(store_begin(fx->store, &err), 0);
    assert_int_equal(store_record_put(fx->store, RECORD_LEAD, fx->user.id, "lead-9",
                                      "{\"id\":\"lead-9\"}", &err),
                     0);
    o = outcome_for(&d, "worker-b", DELIVERY_SUCCEEDED);
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), BH_ERR_NOT_FOUND);
    o.lease_owner = "worker-a";
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);
    assert_int_equal(store_commit(fx->store, &err), 0);

    assert_int_equal(store_record_get(fx->store, RECORD_LEAD, fx->user.id, "lead-9", &text, &err),
                     0);
    free(text);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM attempts"), 1);
    integration_release(&integration);
}

static void integration_delete_cascades(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct delivery loaded;
    struct delivery_job *jobs = NULL;
    struct attempt *attempts = NULL;
    struct mapping *mappings = NULL;
    struct attempt_outcome o;
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    put_mapping(fx, fx->user.id, "campaign-1", integration.id, ALL_EVENTS, true, T0);
    create_delivery(fx, &integration, T0, &d);
    claim(fx, "worker-a", T0, 1, &jobs, &count);
    delivery_job_list_free(jobs, count);
    o = outcome_for(&d, "worker-a", DELIVERY_PENDING);
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM attempts"), 1);

    assert_int_equal(store_integration_delete(fx->store, fx->user.id, integration.id, &err), 0);

    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d.id, &loaded, &err),
                     BH_ERR_NOT_FOUND);
    assert_int_equal(store_attempt_list(fx->store, d.id, &attempts, &count, &err), 0);
    assert_int_equal(count, 0);
    attempt_list_free(attempts, count);
    assert_int_equal(
        store_mapping_list(fx->store, fx->user.id, "campaign-1", &mappings, &count, &err), 0);
    assert_int_equal(count, 0);
    free(mappings);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM attempts"), 0);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM deliveries"), 0);
    integration_release(&integration);
}

static void next_due_reports_earliest(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery early;
    struct delivery late;
    struct delivery_job *jobs = NULL;
    struct attempt_outcome o;
    size_t count = 0;
    int64_t due = 0;
    struct bh_error err;

    assert_int_equal(store_delivery_next_due(fx->store, &due, &err), 0);
    assert_int_equal(due, -1);

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0 + 5000, &early);
    create_delivery(fx, &integration, T0 + 90000, &late);
    assert_int_equal(store_delivery_next_due(fx->store, &due, &err), 0);
    assert_int_equal(due, T0 + 5000);

    /* A leased delivery is due again when its lease ends. */
    claim(fx, "worker-a", T0 + 5000, 1, &jobs, &count);
    assert_int_equal(count, 1);
    delivery_job_list_free(jobs, count);
    assert_int_equal(store_delivery_next_due(fx->store, &due, &err), 0);
    assert_int_equal(due, T0 + 5000 + LEASE_MS + 1);

    o = outcome_for(&early, "worker-a", DELIVERY_SUCCEEDED);
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);
    assert_int_equal(store_delivery_next_due(fx->store, &due, &err), 0);
    assert_int_equal(due, T0 + 90000);
    integration_release(&integration);
}

static void release_all_leases_frees_claims(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct delivery_job *jobs = NULL;
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d);
    claim(fx, "worker-a", T0, 1, &jobs, &count);
    delivery_job_list_free(jobs, count);

    assert_int_equal(store_release_all_leases(fx->store, &err), 0);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM deliveries "
                                         "WHERE lease_owner IS NOT NULL"),
                     0);
    claim(fx, "worker-b", T0, 1, &jobs, &count);
    assert_int_equal(count, 1);
    assert_string_equal(jobs[0].delivery_id, d.id);
    delivery_job_list_free(jobs, count);
    integration_release(&integration);
}

/* ---- Capped claims ---- */

/* Creates an integration with an id chosen so that integrations sort in creation order. */
static void create_integration_with_id(struct fixture *fx, const char *id, struct integration *out)
{
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, out);
    /* Replace the random id by deleting and inserting again under the chosen one. */
    assert_int_equal(store_integration_delete(fx->store, fx->user.id, out->id, &err), 0);
    snprintf(out->id, sizeof(out->id), "%s", id);
    assert_int_equal(store_integration_insert(fx->store, out, &err), 0);
}

static void claim_capped(struct fixture *fx, const struct claim_request *request,
                         char cursor[ID_LEN + 1], struct delivery_job **jobs, size_t *count)
{
    struct bh_error err;

    assert_int_equal(store_delivery_claim_capped(fx->store, request, cursor, jobs, count, &err), 0);
}

static size_t count_jobs_of(const struct delivery_job *jobs, size_t count,
                            const char *integration_id)
{
    size_t n = 0;

    for (size_t i = 0; i < count; i++)
        n += strcmp(jobs[i].integration_id, integration_id) == 0;
    return n;
}

static void claim_capped_limits_integration(void **state)
{
    struct fixture *fx = *state;
    struct integration busy;
    struct integration quiet;
    struct delivery d;
    struct delivery_job *jobs = NULL;
    size_t count = 0;
    char cursor[ID_LEN + 1] = "";
    struct integration_load loads[1];
    struct claim_request request = {
        .owner = "worker-a",
        .now_ms = T0,
        .lease_ms = LEASE_MS,
        .limit = 100,
        .per_integration_limit = 3,
        .loads = loads,
        .load_count = 1,
    };

    create_integration(fx, fx->user.id, ALL_EVENTS, &busy);
    create_integration(fx, fx->user.id, ALL_EVENTS, &quiet);
    for (int i = 0; i < 10; i++) {
        create_delivery(fx, &busy, T0 - i, &d);
        create_delivery(fx, &quiet, T0 - i, &d);
    }
    snprintf(loads[0].integration_id, sizeof(loads[0].integration_id), "%s", busy.id);
    loads[0].claimed = 2;

    /* busy already runs 2 of its 3, so it gets 1; quiet gets its full 3. */
    claim_capped(fx, &request, cursor, &jobs, &count);
    assert_int_equal(count, 4);
    assert_int_equal(count_jobs_of(jobs, count, busy.id), 1);
    assert_int_equal(count_jobs_of(jobs, count, quiet.id), 3);
    delivery_job_list_free(jobs, count);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM deliveries "
                                         "WHERE lease_owner = 'worker-a'"),
                     4);

    /* An integration at its cap gets nothing; the others still get theirs. */
    loads[0].claimed = 3;
    claim_capped(fx, &request, cursor, &jobs, &count);
    assert_int_equal(count, 3);
    assert_int_equal(count_jobs_of(jobs, count, busy.id), 0);
    delivery_job_list_free(jobs, count);
    integration_release(&busy);
    integration_release(&quiet);
}

static void claim_capped_oldest_first(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d[4];
    struct delivery_job *jobs = NULL;
    size_t count = 0;
    char cursor[ID_LEN + 1] = "";
    struct claim_request request = {
        .owner = "worker-a",
        .now_ms = T0,
        .lease_ms = LEASE_MS,
        .limit = 10,
        .per_integration_limit = 2,
    };

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0 - 10, &d[0]);
    create_delivery(fx, &integration, T0 - 30, &d[1]);
    create_delivery(fx, &integration, T0 - 20, &d[2]);
    create_delivery(fx, &integration, T0 + 10, &d[3]);

    claim_capped(fx, &request, cursor, &jobs, &count);
    assert_int_equal(count, 2);
    assert_string_equal(jobs[0].delivery_id, d[1].id);
    assert_string_equal(jobs[1].delivery_id, d[2].id);
    assert_string_equal(cursor, integration.id);
    delivery_job_list_free(jobs, count);
    integration_release(&integration);
}

static void claim_capped_takes_turns(void **state)
{
    struct fixture *fx = *state;
    static const char *const ids[] = {"aaaaaaaaaaaaaaaaaaaaaaa1", "aaaaaaaaaaaaaaaaaaaaaaa2",
                                      "aaaaaaaaaaaaaaaaaaaaaaa3"};
    static const int expected[] = {0, 1, 2, 0, 1, 2};
    struct integration integrations[3];
    struct delivery d;
    char cursor[ID_LEN + 1] = "";
    struct claim_request request = {
        .owner = "worker-a",
        .now_ms = T0,
        .lease_ms = LEASE_MS,
        .limit = 1,
    };

    for (int i = 0; i < 3; i++) {
        create_integration_with_id(fx, ids[i], &integrations[i]);
        create_delivery(fx, &integrations[i], T0, &d);
        create_delivery(fx, &integrations[i], T0 + 1, &d);
    }

    /* One job per call: the integrations take turns and the round wraps around. */
    for (size_t call = 0; call < sizeof(expected) / sizeof(expected[0]); call++) {
        struct delivery_job *jobs = NULL;
        size_t count = 0;

        request.now_ms = T0 + 1;
        claim_capped(fx, &request, cursor, &jobs, &count);
        assert_int_equal(count, 1);
        assert_string_equal(jobs[0].integration_id, ids[expected[call]]);
        assert_string_equal(cursor, ids[expected[call]]);
        delivery_job_list_free(jobs, count);
    }
    for (int i = 0; i < 3; i++)
        integration_release(&integrations[i]);
}

static void claim_capped_expired_lease(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct delivery_job *jobs = NULL;
    size_t count = 0;
    char cursor[ID_LEN + 1] = "";
    struct integration_load load;
    struct claim_request request = {
        .owner = "worker-b",
        .now_ms = T0 + LEASE_MS + 1,
        .lease_ms = LEASE_MS,
        .limit = 10,
        .per_integration_limit = 1,
        .loads = &load,
        .load_count = 1,
    };

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d);
    claim(fx, "worker-a", T0, 1, &jobs, &count);
    assert_int_equal(count, 1);
    delivery_job_list_free(jobs, count);

    /* The expired lease counts against the cap like any other job. */
    snprintf(load.integration_id, sizeof(load.integration_id), "%s", integration.id);
    load.claimed = 1;
    claim_capped(fx, &request, cursor, &jobs, &count);
    assert_int_equal(count, 0);
    delivery_job_list_free(jobs, count);

    load.claimed = 0;
    claim_capped(fx, &request, cursor, &jobs, &count);
    assert_int_equal(count, 1);
    assert_string_equal(jobs[0].delivery_id, d.id);
    delivery_job_list_free(jobs, count);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM deliveries "
                                         "WHERE lease_owner = 'worker-b'"),
                     1);
    integration_release(&integration);
}

static void next_due_across_integrations(void **state)
{
    struct fixture *fx = *state;
    struct integration first;
    struct integration second;
    struct delivery d;
    int64_t due = 0;
    struct bh_error err;

    create_integration_with_id(fx, "aaaaaaaaaaaaaaaaaaaaaaa1", &first);
    create_integration_with_id(fx, "aaaaaaaaaaaaaaaaaaaaaaa2", &second);
    create_delivery(fx, &first, T0 + 9000, &d);
    create_delivery(fx, &second, T0 + 7000, &d);
    create_delivery(fx, &second, T0 + 8000, &d);

    assert_int_equal(store_delivery_next_due(fx->store, &due, &err), 0);
    assert_int_equal(due, T0 + 7000);
    integration_release(&first);
    integration_release(&second);
}

/* ---- Batched outcomes ---- */

/* The outcomes of one sequence, applied to deliveries d[0..3] of one integration. */
static void fill_sequence(const struct delivery d[4], const char *owner,
                          struct attempt_outcome out[4])
{
    out[0] = outcome_for(&d[0], owner, DELIVERY_FAILED);
    out[0].error = "HTTP 500";
    out[0].http_status = 500;
    out[1] = outcome_for(&d[1], owner, DELIVERY_SUCCEEDED);
    out[1].started_ms = T0 + 3000;
    out[2] = outcome_for(&d[2], owner, DELIVERY_PENDING);
    out[2].started_ms = T0 + 2000;
    out[3] = outcome_for(&d[3], owner, DELIVERY_SUCCEEDED);
    out[3].started_ms = T0 + 500;
    out[3].response_excerpt = NULL;
    out[3].response_excerpt_len = 0;
}

static void assert_same_delivery(struct fixture *fx, const char *batched_id, const char *single_id)
{
    struct delivery a;
    struct delivery b;
    struct attempt *attempts_a = NULL;
    struct attempt *attempts_b = NULL;
    size_t count_a = 0;
    size_t count_b = 0;
    struct bh_error err;

    assert_int_equal(store_delivery_get(fx->store, fx->user.id, batched_id, &a, &err), 0);
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, single_id, &b, &err), 0);
    assert_int_equal(a.state, b.state);
    assert_int_equal(a.attempts, b.attempts);
    assert_int_equal(a.next_attempt_ms, b.next_attempt_ms);
    assert_int_equal(a.last_http_status, b.last_http_status);
    assert_int_equal(a.updated_ms, b.updated_ms);
    if (b.last_error == NULL)
        assert_null(a.last_error);
    else
        assert_string_equal(a.last_error, b.last_error);
    delivery_release(&a);
    delivery_release(&b);

    assert_int_equal(store_attempt_list(fx->store, batched_id, &attempts_a, &count_a, &err), 0);
    assert_int_equal(store_attempt_list(fx->store, single_id, &attempts_b, &count_b, &err), 0);
    assert_int_equal(count_a, 1);
    assert_int_equal(count_b, 1);
    assert_int_equal(attempts_a[0].number, attempts_b[0].number);
    assert_int_equal(attempts_a[0].started_ms, attempts_b[0].started_ms);
    assert_int_equal(attempts_a[0].duration_ms, attempts_b[0].duration_ms);
    assert_int_equal(attempts_a[0].http_status, attempts_b[0].http_status);
    assert_int_equal(attempts_a[0].response_excerpt_len, attempts_b[0].response_excerpt_len);
    attempt_list_free(attempts_a, count_a);
    attempt_list_free(attempts_b, count_b);
}

static void finish_batch_matches_single(void **state)
{
    struct fixture *fx = *state;
    struct integration batched;
    struct integration single;
    struct integration loaded_batched;
    struct integration loaded_single;
    struct delivery db[4];
    struct delivery ds[4];
    struct attempt_outcome ob[4];
    struct attempt_outcome os[4];
    struct delivery_job *jobs = NULL;
    size_t count = 0;
    int results[4] = {1, 1, 1, 1};
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &batched);
    create_integration(fx, fx->user.id, ALL_EVENTS, &single);
    for (int i = 0; i < 4; i++) {
        create_delivery(fx, &batched, T0, &db[i]);
        create_delivery(fx, &single, T0, &ds[i]);
    }
    claim(fx, "worker-a", T0, 8, &jobs, &count);
    assert_int_equal(count, 8);
    delivery_job_list_free(jobs, count);

    fill_sequence(db, "worker-a", ob);
    fill_sequence(ds, "worker-a", os);
    assert_int_equal(store_delivery_finish_batch(fx->store, ob, 4, results, &err), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(results[i], 0);
        assert_int_equal(store_delivery_finish(fx->store, &os[i], &err), 0);
    }

    for (int i = 0; i < 4; i++)
        assert_same_delivery(fx, db[i].id, ds[i].id);

    assert_int_equal(
        store_integration_get(fx->store, fx->user.id, batched.id, &loaded_batched, &err), 0);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, single.id, &loaded_single, &err),
                     0);
    assert_int_equal(loaded_batched.delivered, 2);
    assert_int_equal(loaded_batched.delivered, loaded_single.delivered);
    assert_int_equal(loaded_batched.failed, 1);
    assert_int_equal(loaded_batched.failed, loaded_single.failed);
    assert_int_equal(loaded_batched.status, loaded_single.status);
    assert_int_equal(loaded_batched.status, INTEGRATION_ACTIVE);
    assert_int_equal(loaded_batched.last_delivery_ms, T0 + 3250);
    assert_int_equal(loaded_batched.last_delivery_ms, loaded_single.last_delivery_ms);
    /* The last failed attempt in order is the retry, not the earlier failure. */
    assert_string_equal(loaded_batched.last_error, "HTTP 503 Service Unavailable");
    assert_string_equal(loaded_batched.last_error, loaded_single.last_error);
    assert_int_equal(loaded_batched.last_error_ms, T0 + 2250);
    assert_int_equal(loaded_batched.last_error_ms, loaded_single.last_error_ms);
    integration_release(&loaded_batched);
    integration_release(&loaded_single);
    integration_release(&batched);
    integration_release(&single);
}

static void finish_batch_lost_lease_isolated(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration loaded;
    struct delivery d[3];
    struct delivery after;
    struct attempt_outcome o[3];
    struct delivery_job *jobs = NULL;
    struct attempt *attempts = NULL;
    size_t count = 0;
    int results[3];
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    for (int i = 0; i < 3; i++)
        create_delivery(fx, &integration, T0, &d[i]);
    claim(fx, "worker-a", T0, 3, &jobs, &count);
    assert_int_equal(count, 3);
    delivery_job_list_free(jobs, count);

    for (int i = 0; i < 3; i++)
        o[i] = outcome_for(&d[i], "worker-a", DELIVERY_SUCCEEDED);
    o[1].lease_owner = "worker-b";
    assert_int_equal(store_delivery_finish_batch(fx->store, o, 3, results, &err), 0);
    assert_int_equal(results[0], 0);
    assert_int_equal(results[1], BH_ERR_NOT_FOUND);
    assert_int_equal(results[2], 0);

    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d[1].id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_PENDING);
    assert_int_equal(after.attempts, 0);
    delivery_release(&after);
    assert_int_equal(store_attempt_list(fx->store, d[1].id, &attempts, &count, &err), 0);
    assert_int_equal(count, 0);
    attempt_list_free(attempts, count);
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d[2].id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_SUCCEEDED);
    delivery_release(&after);

    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.delivered, 2);
    integration_release(&loaded);
    integration_release(&integration);
}

static void finish_batch_failed_row_isolated(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration loaded;
    struct delivery d[3];
    struct delivery after;
    struct attempt_outcome o[3];
    struct delivery_job *jobs = NULL;
    size_t count = 0;
    int results[3];
    char sql[256];
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    for (int i = 0; i < 3; i++)
        create_delivery(fx, &integration, T0, &d[i]);
    claim(fx, "worker-a", T0, 3, &jobs, &count);
    delivery_job_list_free(jobs, count);

    /* An attempt row already numbered 1 makes the middle outcome's insert fail. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO attempts (delivery_id, number, started_ms, duration_ms, http_status) "
             "VALUES ('%s', 1, 0, 0, 0)",
             d[1].id);
    exec_raw(fx->path, sql);

    for (int i = 0; i < 3; i++)
        o[i] = outcome_for(&d[i], "worker-a", DELIVERY_SUCCEEDED);
    assert_int_equal(store_delivery_finish_batch(fx->store, o, 3, results, &err), 0);
    assert_int_equal(results[0], 0);
    assert_int_equal(results[1], BH_ERR_CONFLICT);
    assert_int_equal(results[2], 0);

    /* Only the failed outcome is undone, its delivery update included. */
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d[1].id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_PENDING);
    assert_int_equal(after.attempts, 0);
    delivery_release(&after);
    for (int i = 0; i < 3; i += 2) {
        assert_int_equal(store_delivery_get(fx->store, fx->user.id, d[i].id, &after, &err), 0);
        assert_int_equal(after.state, DELIVERY_SUCCEEDED);
        delivery_release(&after);
    }
    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.delivered, 2);
    integration_release(&loaded);
    integration_release(&integration);
}

static void finish_batch_in_transaction(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct attempt_outcome o;
    struct delivery_job *jobs = NULL;
    size_t count = 0;
    int result = 1;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d);
    claim(fx, "worker-a", T0, 1, &jobs, &count);
    delivery_job_list_free(jobs, count);

    /* Inside the caller's transaction, the batch commits or rolls back with it. */
    o = outcome_for(&d, "worker-a", DELIVERY_SUCCEEDED);
    assert_int_equal(store_begin(fx->store, &err), 0);
    assert_int_equal(store_delivery_finish_batch(fx->store, &o, 1, &result, &err), 0);
    assert_int_equal(result, 0);
    store_rollback(fx->store);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM attempts"), 0);

    assert_int_equal(store_begin(fx->store, &err), 0);
    assert_int_equal(store_delivery_finish_batch(fx->store, &o, 1, &result, &err), 0);
    assert_int_equal(store_commit(fx->store, &err), 0);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM attempts"), 1);
    integration_release(&integration);
}

/* ---- Two connections ---- */

#define CONCURRENT_DELIVERIES 40

struct inserter {
    const char *path;
    const struct integration *integration;
    char ids[CONCURRENT_DELIVERIES][DELIVERY_ID_LEN + 1];
    int inserted;
};

/* Inserts events and deliveries on a second connection, one transaction each. */
static void *insert_deliveries(void *arg)
{
    struct inserter *in = arg;
    struct bh_error err;
    struct store *store = store_open(in->path, &err);

    for (int i = 0; store && i < CONCURRENT_DELIVERIES; i++) {
        struct event_record event = {.type = EVENT_MESSAGE_SENT, .lead_id = "lead-1"};
        struct delivery d;

        event_id_generate(event.id);
        snprintf(event.user_id, sizeof(event.user_id), "%s", in->integration->user_id);
        fill_delivery(&event, in->integration, 0, &d);
        if (store_begin(store, &err) != 0)
            break;
        if (store_event_insert(store, &event, &err) != 0 ||
            store_delivery_insert(store, &d, &err) != 0 || store_commit(store, &err) != 0) {
            store_rollback(store);
            break;
        }
        memcpy(in->ids[in->inserted++], d.id, sizeof(d.id));
    }
    store_close(store);
    return NULL;
}

static bool claimed_before(char (*ids)[DELIVERY_ID_LEN + 1], int count, const char *id)
{
    for (int i = 0; i < count; i++) {
        if (strcmp(ids[i], id) == 0)
            return true;
    }
    return false;
}

static void two_connections_claim_and_insert(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct inserter in = {.path = fx->path, .integration = &integration};
    char claimed[CONCURRENT_DELIVERIES][DELIVERY_ID_LEN + 1];
    int claimed_count = 0;
    int duplicates = 0;
    int64_t deadline = clock_monotonic_ms() + 20000;
    pthread_t thread;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    assert_int_equal(pthread_create(&thread, NULL, insert_deliveries, &in), 0);

    /* Claims on this connection while the other thread inserts; each delivery once. */
    while (claimed_count < CONCURRENT_DELIVERIES && clock_monotonic_ms() < deadline) {
        struct delivery_job *jobs = NULL;
        size_t count = 0;

        claim(fx, "worker-a", T0, 5, &jobs, &count);
        for (size_t i = 0; i < count; i++) {
            if (claimed_before(claimed, claimed_count, jobs[i].delivery_id) ||
                claimed_count == CONCURRENT_DELIVERIES)
                duplicates++;
            else
                memcpy(claimed[claimed_count++], jobs[i].delivery_id, DELIVERY_ID_LEN + 1);
        }
        delivery_job_list_free(jobs, count);
        if (count == 0)
            usleep(1000);
    }
    assert_int_equal(pthread_join(thread, NULL), 0);

    assert_int_equal(in.inserted, CONCURRENT_DELIVERIES);
    assert_int_equal(claimed_count, CONCURRENT_DELIVERIES);
    assert_int_equal(duplicates, 0);
    for (int i = 0; i < in.inserted; i++)
        assert_true(claimed_before(claimed, claimed_count, in.ids[i]));
    integration_release(&integration);
}

/* ---- Idempotency keys and retention ---- */

static void idempotency_put_and_get(void **state)
{
    struct fixture *fx = *state;
    struct bh_error err;
    char *hash = NULL;
    char *answer = NULL;

    assert_int_equal(store_idempotency_put(fx->store, fx->user.id, "crm-42", "abc123",
                                           "{\"eventId\":\"evt_1\"}", T0, &err),
                     0);
    assert_int_equal(store_idempotency_get(fx->store, fx->user.id, "crm-42", &hash, &answer, &err),
                     0);
    assert_string_equal(hash, "abc123");
    assert_string_equal(answer, "{\"eventId\":\"evt_1\"}");
    free(hash);
    free(answer);

    assert_int_equal(store_idempotency_get(fx->store, fx->other.id, "crm-42", &hash, &answer, &err),
                     BH_ERR_NOT_FOUND);
    assert_null(hash);
    assert_null(answer);
    assert_int_equal(
        store_idempotency_put(fx->store, fx->user.id, "crm-42", "def456", "{}", T0 + 1, &err),
        BH_ERR_CONFLICT);
    assert_int_equal(
        store_idempotency_put(fx->store, fx->other.id, "crm-42", "def456", "{}", T0 + 1, &err), 0);
}

/* Inserts a delivery in state, last updated at updated_ms, with attempt_count attempts. */
static void create_aged_delivery(struct fixture *fx, const struct integration *integration,
                                 enum delivery_state state, int64_t updated_ms, int attempt_count,
                                 struct delivery *out)
{
    struct event_record event;
    struct bh_error err;
    char sql[256];

    create_event(fx, integration->user_id, "campaign-1", &event);
    fill_delivery(&event, integration, T0, out);
    out->state = state;
    out->updated_ms = updated_ms;
    out->attempts = attempt_count;
    assert_int_equal(store_delivery_insert(fx->store, out, &err), 0);
    for (int number = 1; number <= attempt_count; number++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO attempts (delivery_id, number, started_ms, duration_ms, "
                 "http_status, error) VALUES ('%s', %d, %lld, 10, 500, 'HTTP 500')",
                 out->id, number, (long long)T0);
        exec_raw(fx->path, sql);
    }
}

static int64_t count_rows(struct fixture *fx, const char *table, const char *delivery_id)
{
    char sql[160];

    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s WHERE %s = '%s'", table,
             strcmp(table, "deliveries") == 0 ? "id" : "delivery_id", delivery_id);
    return query_int(fx->path, sql);
}

static void purge_finished_keeps_pending(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery succeeded, failed, cancelled, pending, recent;
    size_t deliveries = 99, attempts = 99;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_aged_delivery(fx, &integration, DELIVERY_SUCCEEDED, T0, 1, &succeeded);
    create_aged_delivery(fx, &integration, DELIVERY_FAILED, T0 + 1, 3, &failed);
    create_aged_delivery(fx, &integration, DELIVERY_CANCELLED, T0 + 2, 0, &cancelled);
    create_aged_delivery(fx, &integration, DELIVERY_PENDING, T0, 2, &pending);
    create_aged_delivery(fx, &integration, DELIVERY_SUCCEEDED, T0 + 5000, 1, &recent);

    /* The limit holds, and the oldest goes first. */
    assert_int_equal(store_purge_finished(fx->store, T0 + 1000, 1, &deliveries, &attempts, &err),
                     0);
    assert_int_equal(deliveries, 1);
    assert_int_equal(attempts, 1);
    assert_int_equal(count_rows(fx, "deliveries", succeeded.id), 0);
    assert_int_equal(count_rows(fx, "attempts", succeeded.id), 0);
    assert_int_equal(count_rows(fx, "deliveries", failed.id), 1);

    assert_int_equal(store_purge_finished(fx->store, T0 + 1000, 10, &deliveries, &attempts, &err),
                     0);
    assert_int_equal(deliveries, 2);
    assert_int_equal(attempts, 3);
    assert_int_equal(count_rows(fx, "deliveries", failed.id), 0);
    assert_int_equal(count_rows(fx, "attempts", failed.id), 0);
    assert_int_equal(count_rows(fx, "deliveries", cancelled.id), 0);
    assert_int_equal(count_rows(fx, "deliveries", pending.id), 1);
    assert_int_equal(count_rows(fx, "attempts", pending.id), 2);
    assert_int_equal(count_rows(fx, "deliveries", recent.id), 1);

    assert_int_equal(store_purge_finished(fx->store, T0 + 1000, 10, &deliveries, &attempts, &err),
                     0);
    assert_int_equal(deliveries, 0);
    assert_int_equal(attempts, 0);
    integration_release(&integration);
}

static void purge_idempotency_by_age(void **state)
{
    struct fixture *fx = *state;
    struct bh_error err;
    size_t purged = 99;
    char *hash = NULL;
    char *answer = NULL;

    assert_int_equal(store_idempotency_put(fx->store, fx->user.id, "old-1", "h", "{}", T0, &err),
                     0);
    assert_int_equal(
        store_idempotency_put(fx->store, fx->other.id, "old-2", "h", "{}", T0 + 1, &err), 0);
    assert_int_equal(
        store_idempotency_put(fx->store, fx->user.id, "new-1", "h", "{}", T0 + 5000, &err), 0);

    assert_int_equal(store_purge_idempotency(fx->store, T0 + 1000, 1, &purged, &err), 0);
    assert_int_equal(purged, 1);
    assert_int_equal(store_idempotency_get(fx->store, fx->user.id, "old-1", &hash, &answer, &err),
                     BH_ERR_NOT_FOUND);
    assert_int_equal(store_purge_idempotency(fx->store, T0 + 1000, 10, &purged, &err), 0);
    assert_int_equal(purged, 1);
    assert_int_equal(store_idempotency_get(fx->store, fx->user.id, "new-1", &hash, &answer, &err),
                     0);
    free(hash);
    free(answer);
}

/* ---- Integration updates, mappings by id and the latest campaign of a lead ---- */

/* Replaces every setting of integration with new values, for store_integration_update. */
static void change_settings(struct integration *integration, uint32_t events, int64_t updated_ms)
{
    free(integration->name);
    integration->name = xstrdup("Renamed sync");
    free(integration->url);
    integration->url = xstrdup("https://hooks.example.com/renamed");
    snprintf(integration->provider, sizeof(integration->provider), "make");
    integration->signing = false;
    custom_headers_free(integration->headers, integration->header_count);
    integration->header_count = 1;
    integration->headers = xcalloc(1, sizeof(*integration->headers));
    integration->headers[0].name = xstrdup("X-Region");
    integration->headers[0].value = xstrdup("eu-west");
    integration->events = events;
    integration->max_retries = 2;
    integration->timeout_ms = 20000;
    integration->updated_ms = updated_ms;
}

static void integration_update_writes_settings(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration loaded;
    struct mapping *changed = NULL;
    size_t changed_count = 99;
    int64_t created_ms;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    created_ms = integration.created_ms;
    change_settings(&integration, EVENT_MASK(EVENT_MESSAGE_SENT), T0 + 500);
    integration.created_ms = T0 + 999; /* created_ms is not a setting, so it is not written */
    assert_int_equal(
        store_integration_update(fx->store, &integration, &changed, &changed_count, &err), 0);
    assert_null(changed);
    assert_int_equal(changed_count, 0);

    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_string_equal(loaded.name, "Renamed sync");
    assert_string_equal(loaded.url, "https://hooks.example.com/renamed");
    assert_string_equal(loaded.provider, "make");
    assert_false(loaded.signing);
    assert_null(loaded.secret);
    assert_int_equal(loaded.events, EVENT_MASK(EVENT_MESSAGE_SENT));
    assert_int_equal(loaded.header_count, 1);
    assert_string_equal(loaded.headers[0].name, "X-Region");
    assert_string_equal(loaded.headers[0].value, "eu-west");
    assert_int_equal(loaded.max_retries, 2);
    assert_int_equal(loaded.timeout_ms, 20000);
    assert_int_equal(loaded.updated_ms, T0 + 500);
    assert_int_equal(loaded.created_ms, created_ms);
    assert_int_equal(loaded.status, INTEGRATION_ACTIVE);
    assert_int_equal(loaded.delivered, 0);
    assert_int_equal(loaded.failed, 0);
    integration_release(&loaded);
    integration_release(&integration);
}

static void integration_update_shrinks_mappings(void **state)
{
    struct fixture *fx = *state;
    const uint32_t kept = EVENT_MASK(EVENT_MESSAGE_SENT) | EVENT_MASK(EVENT_MESSAGE_REPLIED);
    struct integration integration;
    struct integration sibling;
    struct mapping *changed = NULL;
    struct mapping m;
    size_t changed_count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_integration(fx, fx->user.id, ALL_EVENTS, &sibling);
    /* Inserted out of campaign id order: the changed list is by campaign id. */
    put_mapping(fx, fx->user.id, "campaign-c", integration.id,
                EVENT_MASK(EVENT_CONNECTION_REQUEST_SENT), true, T0);
    put_mapping(fx, fx->user.id, "campaign-a", integration.id, EVENT_MASK(EVENT_MESSAGE_SENT), true,
                T0);
    put_mapping(fx, fx->user.id, "campaign-b", integration.id, ALL_EVENTS, false, T0);
    put_mapping(fx, fx->user.id, "campaign-a", sibling.id, ALL_EVENTS, true, T0);

    change_settings(&integration, kept, T0 + 700);
    assert_int_equal(
        store_integration_update(fx->store, &integration, &changed, &changed_count, &err), 0);

    /* Exactly the two mappings that enabled a removed event, as they are now. */
    assert_int_equal(changed_count, 2);
    assert_string_equal(changed[0].campaign_id, "campaign-b");
    assert_string_equal(changed[0].integration_id, integration.id);
    assert_int_equal(changed[0].events, kept);
    assert_false(changed[0].active);
    assert_int_equal(changed[0].created_ms, T0);
    assert_int_equal(changed[0].updated_ms, T0 + 700);
    assert_string_equal(changed[1].campaign_id, "campaign-c");
    assert_int_equal(changed[1].events, 0);
    assert_true(changed[1].active);
    free(changed);

    /* The stored rows match, and a mapping left with no events stays. */
    assert_int_equal(
        store_mapping_get(fx->store, fx->user.id, "campaign-b", integration.id, &m, &err), 0);
    assert_int_equal(m.events, kept);
    assert_int_equal(m.updated_ms, T0 + 700);
    assert_int_equal(
        store_mapping_get(fx->store, fx->user.id, "campaign-c", integration.id, &m, &err), 0);
    assert_int_equal(m.events, 0);
    assert_int_equal(
        store_mapping_get(fx->store, fx->user.id, "campaign-a", integration.id, &m, &err), 0);
    assert_int_equal(m.events, EVENT_MASK(EVENT_MESSAGE_SENT));
    assert_int_equal(m.updated_ms, T0);

    /* Another integration's mapping on the same campaign keeps its events. */
    assert_int_equal(store_mapping_get(fx->store, fx->user.id, "campaign-a", sibling.id, &m, &err),
                     0);
    assert_int_equal(m.events, ALL_EVENTS);
    assert_int_equal(m.updated_ms, T0);
    integration_release(&sibling);
    integration_release(&integration);
}

static void integration_update_other_user_not_found(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration loaded;
    struct mapping *changed = NULL;
    struct mapping m;
    size_t changed_count = 99;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    put_mapping(fx, fx->user.id, "campaign-1", integration.id, ALL_EVENTS, true, T0);

    change_settings(&integration, EVENT_MASK(EVENT_MESSAGE_SENT), T0 + 500);
    snprintf(integration.user_id, sizeof(integration.user_id), "%s", fx->other.id);
    assert_int_equal(
        store_integration_update(fx->store, &integration, &changed, &changed_count, &err),
        BH_ERR_NOT_FOUND);
    assert_null(changed);
    assert_int_equal(changed_count, 0);

    /* Neither the settings nor the mapping changed. */
    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_string_equal(loaded.name, "CRM sync");
    assert_true(loaded.signing);
    assert_int_equal(loaded.events, ALL_EVENTS);
    assert_int_equal(loaded.updated_ms, loaded.created_ms);
    integration_release(&loaded);
    assert_int_equal(
        store_mapping_get(fx->store, fx->user.id, "campaign-1", integration.id, &m, &err), 0);
    assert_int_equal(m.events, ALL_EVENTS);
    assert_int_equal(m.updated_ms, T0);
    integration_release(&integration);
}

static void mapping_get_and_delete(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration other_integration;
    struct mapping m;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_integration(fx, fx->user.id, ALL_EVENTS, &other_integration);
    put_mapping(fx, fx->user.id, "campaign-1", integration.id, EVENT_MASK(EVENT_MESSAGE_SENT),
                false, T0 + 3);
    put_mapping(fx, fx->user.id, "campaign-1", other_integration.id, ALL_EVENTS, true, T0);

    assert_int_equal(
        store_mapping_get(fx->store, fx->user.id, "campaign-1", integration.id, &m, &err), 0);
    assert_string_equal(m.campaign_id, "campaign-1");
    assert_string_equal(m.integration_id, integration.id);
    assert_int_equal(m.events, EVENT_MASK(EVENT_MESSAGE_SENT));
    assert_false(m.active);
    assert_int_equal(m.created_ms, T0 + 3);

    assert_int_equal(
        store_mapping_get(fx->store, fx->user.id, "campaign-2", integration.id, &m, &err),
        BH_ERR_NOT_FOUND);
    assert_int_equal(
        store_mapping_get(fx->store, fx->other.id, "campaign-1", integration.id, &m, &err),
        BH_ERR_NOT_FOUND);
    assert_int_equal(
        store_mapping_delete(fx->store, fx->other.id, "campaign-1", integration.id, &err),
        BH_ERR_NOT_FOUND);

    assert_int_equal(
        store_mapping_delete(fx->store, fx->user.id, "campaign-1", integration.id, &err), 0);
    assert_int_equal(
        store_mapping_get(fx->store, fx->user.id, "campaign-1", integration.id, &m, &err),
        BH_ERR_NOT_FOUND);
    assert_int_equal(
        store_mapping_delete(fx->store, fx->user.id, "campaign-1", integration.id, &err),
        BH_ERR_NOT_FOUND);

    /* Only that mapping is deleted, so the other integration's mapping on the campaign stays. */
    assert_int_equal(
        store_mapping_get(fx->store, fx->user.id, "campaign-1", other_integration.id, &m, &err), 0);
    integration_release(&other_integration);
    integration_release(&integration);
}

/* Inserts an event of lead_id, accepted at created_ms. campaign_id may be NULL. */
static void insert_lead_event(struct fixture *fx, const char *user_id, const char *lead_id,
                              const char *campaign_id, int64_t created_ms)
{
    struct event_record event = {.type = EVENT_MESSAGE_SENT};
    struct bh_error err;

    event_id_generate(event.id);
    snprintf(event.user_id, sizeof(event.user_id), "%s", user_id);
    event.lead_id = (char *)lead_id;
    event.campaign_id = (char *)campaign_id;
    event.occurred_ms = created_ms;
    event.created_ms = created_ms;
    assert_int_equal(store_event_insert(fx->store, &event, &err), 0);
}

static void lead_latest_campaign_picks_newest(void **state)
{
    struct fixture *fx = *state;
    char campaign_id[EXTERNAL_ID_MAX + 1];
    struct bh_error err;

    /* Inserted out of acceptance order, so the order comes from created_ms. */
    insert_lead_event(fx, fx->user.id, "lead-1", "campaign-new", T0 + 20);
    insert_lead_event(fx, fx->user.id, "lead-1", "campaign-old", T0 + 10);
    insert_lead_event(fx, fx->user.id, "lead-1", NULL, T0 + 30);
    insert_lead_event(fx, fx->user.id, "lead-2", "campaign-lead-2", T0 + 40);
    insert_lead_event(fx, fx->other.id, "lead-1", "campaign-theirs", T0 + 50);
    insert_lead_event(fx, fx->user.id, "lead-3", NULL, T0 + 60);

    memset(campaign_id, 'x', sizeof(campaign_id));
    assert_int_equal(
        store_lead_latest_campaign(fx->store, fx->user.id, "lead-1", campaign_id, &err), 0);
    assert_string_equal(campaign_id, "campaign-new");

    assert_int_equal(
        store_lead_latest_campaign(fx->store, fx->other.id, "lead-1", campaign_id, &err), 0);
    assert_string_equal(campaign_id, "campaign-theirs");

    /* A lead whose events name no campaign, and a lead with no events at all. */
    assert_int_equal(
        store_lead_latest_campaign(fx->store, fx->user.id, "lead-3", campaign_id, &err), 0);
    assert_string_equal(campaign_id, "");
    memset(campaign_id, 'x', sizeof(campaign_id));
    assert_int_equal(
        store_lead_latest_campaign(fx->store, fx->user.id, "lead-9", campaign_id, &err), 0);
    assert_string_equal(campaign_id, "");
}

/* ---- The delivery log ---- */

/* Inserts an event of type and its delivery to integration in state, created at created_ms. */
static void create_listed_delivery(struct fixture *fx, const struct integration *integration,
                                   int type, enum delivery_state state, int64_t created_ms,
                                   struct delivery *out)
{
    struct event_record event;
    struct bh_error err;

    memset(&event, 0, sizeof(event));
    event_id_generate(event.id);
    snprintf(event.user_id, sizeof(event.user_id), "%s", integration->user_id);
    event.type = type;
    event.lead_id = "lead-1";
    event.occurred_ms = created_ms;
    event.created_ms = created_ms;
    assert_int_equal(store_event_insert(fx->store, &event, &err), 0);

    fill_delivery(&event, integration, created_ms, out);
    out->state = state;
    out->created_ms = created_ms;
    out->updated_ms = created_ms;
    assert_int_equal(store_delivery_insert(fx->store, out, &err), 0);
}

static struct delivery_filter filter_all(const char *integration_id, size_t limit)
{
    struct delivery_filter filter = {
        .integration_id = integration_id,
        .state = -1,
        .event_type = -1,
        .since_ms = INT64_MIN,
        .until_ms = INT64_MAX,
        .limit = limit,
    };

    return filter;
}

static void delivery_list_filters_and_pages(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration sibling;
    struct delivery d[5];
    struct delivery elsewhere;
    struct delivery *items = NULL;
    struct delivery_filter filter;
    const char *newer_tie;
    const char *older_tie;
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_integration(fx, fx->user.id, ALL_EVENTS, &sibling);
    create_listed_delivery(fx, &integration, EVENT_MESSAGE_SENT, DELIVERY_PENDING, T0 + 1, &d[0]);
    create_listed_delivery(fx, &integration, EVENT_MESSAGE_REPLIED, DELIVERY_FAILED, T0 + 2, &d[1]);
    create_listed_delivery(fx, &integration, EVENT_MESSAGE_SENT, DELIVERY_SUCCEEDED, T0 + 3, &d[2]);
    create_listed_delivery(fx, &integration, EVENT_MESSAGE_REPLIED, DELIVERY_SUCCEEDED, T0 + 3,
                           &d[3]);
    create_listed_delivery(fx, &integration, EVENT_MESSAGE_SENT, DELIVERY_FAILED, T0 + 5, &d[4]);
    create_listed_delivery(fx, &sibling, EVENT_MESSAGE_SENT, DELIVERY_FAILED, T0 + 4, &elsewhere);

    /* d[2] and d[3] share created_ms, so the larger id comes first. */
    newer_tie = strcmp(d[2].id, d[3].id) > 0 ? d[2].id : d[3].id;
    older_tie = strcmp(d[2].id, d[3].id) > 0 ? d[3].id : d[2].id;

    /* Newest first, without bodies, and only this integration's. */
    filter = filter_all(integration.id, 10);
    assert_int_equal(store_delivery_list(fx->store, fx->user.id, &filter, &items, &count, &err), 0);
    assert_int_equal(count, 5);
    assert_string_equal(items[0].id, d[4].id);
    assert_string_equal(items[1].id, newer_tie);
    assert_string_equal(items[2].id, older_tie);
    assert_string_equal(items[3].id, d[1].id);
    assert_string_equal(items[4].id, d[0].id);
    assert_null(items[0].body);
    assert_int_equal(items[0].state, DELIVERY_FAILED);
    assert_int_equal(items[0].event_type, EVENT_MESSAGE_SENT);
    assert_int_equal(items[0].created_ms, T0 + 5);
    delivery_list_free(items, count);

    /* Another user sees none of them. */
    assert_int_equal(store_delivery_list(fx->store, fx->other.id, &filter, &items, &count, &err),
                     0);
    assert_int_equal(count, 0);
    delivery_list_free(items, count);

    filter.state = DELIVERY_FAILED;
    assert_int_equal(store_delivery_list(fx->store, fx->user.id, &filter, &items, &count, &err), 0);
    assert_int_equal(count, 2);
    assert_string_equal(items[0].id, d[4].id);
    assert_string_equal(items[1].id, d[1].id);
    delivery_list_free(items, count);

    filter = filter_all(integration.id, 10);
    filter.event_type = EVENT_MESSAGE_REPLIED;
    assert_int_equal(store_delivery_list(fx->store, fx->user.id, &filter, &items, &count, &err), 0);
    assert_int_equal(count, 2);
    assert_string_equal(items[0].id, d[3].id);
    assert_string_equal(items[1].id, d[1].id);
    delivery_list_free(items, count);

    /* Both time bounds are inclusive. */
    filter = filter_all(integration.id, 10);
    filter.since_ms = T0 + 2;
    filter.until_ms = T0 + 3;
    assert_int_equal(store_delivery_list(fx->store, fx->user.id, &filter, &items, &count, &err), 0);
    assert_int_equal(count, 3);
    assert_string_equal(items[0].id, newer_tie);
    assert_string_equal(items[1].id, older_tie);
    assert_string_equal(items[2].id, d[1].id);
    delivery_list_free(items, count);

    /* Pages of two continue from the last row, across the tie, with no overlap. */
    filter = filter_all(integration.id, 2);
    assert_int_equal(store_delivery_list(fx->store, fx->user.id, &filter, &items, &count, &err), 0);
    assert_int_equal(count, 2);
    assert_string_equal(items[0].id, d[4].id);
    assert_string_equal(items[1].id, newer_tie);
    delivery_list_free(items, count);

    filter.before_id = newer_tie;
    filter.before_ms = T0 + 3;
    assert_int_equal(store_delivery_list(fx->store, fx->user.id, &filter, &items, &count, &err), 0);
    assert_int_equal(count, 2);
    assert_string_equal(items[0].id, older_tie);
    assert_string_equal(items[1].id, d[1].id);
    delivery_list_free(items, count);

    filter.before_id = d[1].id;
    filter.before_ms = T0 + 2;
    assert_int_equal(store_delivery_list(fx->store, fx->user.id, &filter, &items, &count, &err), 0);
    assert_int_equal(count, 1);
    assert_string_equal(items[0].id, d[0].id);
    delivery_list_free(items, count);

    filter.before_id = d[0].id;
    filter.before_ms = T0 + 1;
    assert_int_equal(store_delivery_list(fx->store, fx->user.id, &filter, &items, &count, &err), 0);
    assert_int_equal(count, 0);
    delivery_list_free(items, count);
    integration_release(&sibling);
    integration_release(&integration);
}

/* Claims the one due delivery as worker-a and finishes it in new_state. */
static void finish_claimed(struct fixture *fx, const struct delivery *d,
                           enum delivery_state new_state)
{
    struct delivery_job *jobs = NULL;
    struct attempt_outcome o;
    size_t count = 0;
    struct bh_error err;

    claim(fx, "worker-a", T0, 1, &jobs, &count);
    assert_int_equal(count, 1);
    assert_string_equal(jobs[0].delivery_id, d->id);
    o = outcome_for(d, "worker-a", new_state);
    o.test = jobs[0].test;
    assert_int_equal(store_delivery_finish(fx->store, &o, &err), 0);
    delivery_job_list_free(jobs, count);
}

static void redeliver_failed_becomes_pending(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct integration loaded;
    struct delivery d;
    struct delivery out;
    struct delivery after;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_delivery(fx, &integration, T0, &d);
    finish_claimed(fx, &d, DELIVERY_FAILED);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.failed, 1);
    integration_release(&loaded);

    assert_int_equal(store_delivery_redeliver(fx->store, fx->other.id, d.id, T0 + 5000, &out, &err),
                     BH_ERR_NOT_FOUND);
    assert_int_equal(store_delivery_redeliver(fx->store, fx->user.id, d.id, T0 + 5000, &out, &err),
                     0);
    assert_int_equal(out.state, DELIVERY_PENDING);
    assert_int_equal(out.next_attempt_ms, T0 + 5000);
    delivery_release(&out);

    /* Pending and due again, keeping its attempt. */
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d.id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_PENDING);
    assert_int_equal(after.next_attempt_ms, T0 + 5000);
    assert_int_equal(after.attempts, 1);
    delivery_release(&after);
    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration.id, &loaded, &err),
                     0);
    assert_int_equal(loaded.failed, 0);
    assert_int_equal(loaded.delivered, 0);
    integration_release(&loaded);

    /* Now pending, it cannot be sent again. */
    assert_int_equal(store_delivery_redeliver(fx->store, fx->user.id, d.id, T0 + 6000, &out, &err),
                     BH_ERR_CONFLICT);
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d.id, &after, &err), 0);
    assert_int_equal(after.next_attempt_ms, T0 + 5000);
    delivery_release(&after);
    integration_release(&integration);
}

static void redeliver_test_is_conflict(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct delivery out;
    struct delivery after;
    struct event_record event;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_event(fx, fx->user.id, "campaign-1", &event);
    fill_delivery(&event, &integration, T0, &d);
    d.state = DELIVERY_FAILED;
    d.test = true;
    assert_int_equal(store_delivery_insert(fx->store, &d, &err), 0);

    assert_int_equal(store_delivery_redeliver(fx->store, fx->user.id, d.id, T0 + 5000, &out, &err),
                     BH_ERR_CONFLICT);
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d.id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_FAILED);
    assert_true(after.test);
    delivery_release(&after);
    integration_release(&integration);
}

/* Inserts a pending test delivery to integration, due at T0. */
static void create_test_delivery(struct fixture *fx, const struct integration *integration,
                                 struct delivery *out)
{
    struct event_record event;
    struct bh_error err;

    create_event(fx, integration->user_id, "campaign-1", &event);
    fill_delivery(&event, integration, T0, out);
    out->test = true;
    assert_int_equal(store_delivery_insert(fx->store, out, &err), 0);
}

static void assert_statistics_untouched(struct fixture *fx, const struct integration *integration)
{
    struct integration loaded;
    struct bh_error err;

    assert_int_equal(store_integration_get(fx->store, fx->user.id, integration->id, &loaded, &err),
                     0);
    assert_int_equal(loaded.delivered, 0);
    assert_int_equal(loaded.failed, 0);
    assert_int_equal(loaded.status, INTEGRATION_ACTIVE);
    assert_int_equal(loaded.last_delivery_ms, 0);
    assert_null(loaded.last_error);
    assert_int_equal(loaded.last_error_ms, 0);
    integration_release(&loaded);
}

static void test_delivery_claim_no_retries(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct delivery_job *jobs = NULL;
    size_t count = 0;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_test_delivery(fx, &integration, &d);

    claim(fx, "worker-a", T0, 1, &jobs, &count);
    assert_int_equal(count, 1);
    assert_string_equal(jobs[0].delivery_id, d.id);
    assert_true(jobs[0].test);
    assert_int_equal(jobs[0].max_retries, 0);
    delivery_job_list_free(jobs, count);
    integration_release(&integration);
}

static void test_delivery_finish_keeps_stats(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d;
    struct delivery after;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_test_delivery(fx, &integration, &d);
    finish_claimed(fx, &d, DELIVERY_FAILED);

    /* The attempt is recorded on the delivery, but not in the integration's statistics. */
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, d.id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_FAILED);
    assert_int_equal(after.attempts, 1);
    assert_int_equal(after.last_http_status, 503);
    delivery_release(&after);
    assert_statistics_untouched(fx, &integration);
    integration_release(&integration);
}

static void test_delivery_batch_keeps_stats(void **state)
{
    struct fixture *fx = *state;
    struct integration integration;
    struct delivery d[2];
    struct delivery after;
    struct delivery_job *jobs = NULL;
    struct attempt_outcome o[2];
    int results[2] = {1, 1};
    size_t count = 0;
    struct bh_error err;

    create_integration(fx, fx->user.id, ALL_EVENTS, &integration);
    create_test_delivery(fx, &integration, &d[0]);
    create_test_delivery(fx, &integration, &d[1]);
    claim(fx, "worker-a", T0, 2, &jobs, &count);
    assert_int_equal(count, 2);

    /* Outcomes follow the jobs' order, each carrying its job's test flag. */
    for (size_t i = 0; i < 2; i++) {
        const struct delivery *source = strcmp(jobs[i].delivery_id, d[0].id) == 0 ? &d[0] : &d[1];

        o[i] = outcome_for(source, "worker-a", i == 0 ? DELIVERY_SUCCEEDED : DELIVERY_FAILED);
        o[i].test = jobs[i].test;
        assert_true(o[i].test);
    }
    assert_int_equal(store_delivery_finish_batch(fx->store, o, 2, results, &err), 0);
    assert_int_equal(results[0], 0);
    assert_int_equal(results[1], 0);
    delivery_job_list_free(jobs, count);

    assert_int_equal(store_delivery_get(fx->store, fx->user.id, o[0].delivery_id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_SUCCEEDED);
    delivery_release(&after);
    assert_int_equal(store_delivery_get(fx->store, fx->user.id, o[1].delivery_id, &after, &err), 0);
    assert_int_equal(after.state, DELIVERY_FAILED);
    delivery_release(&after);
    assert_statistics_untouched(fx, &integration);
    integration_release(&integration);
}

#define STORE_TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        STORE_TEST(store_open_creates_schema),
        STORE_TEST(store_open_uses_wal),
        STORE_TEST(store_reopen_keeps_data),
        STORE_TEST(store_sync_confirms_commits),
        STORE_TEST(checkpoint_copies_wal_while_open),
        STORE_TEST(wal_starts_over_under_steady_commits),
        STORE_TEST(store_newer_schema_rejected),
        STORE_TEST(store_postgres_not_built),
        STORE_TEST(user_create_and_find),
        STORE_TEST(user_duplicate_is_conflict),
        STORE_TEST(user_create_in_transaction_undoes_own),
        STORE_TEST(integration_round_trip),
        STORE_TEST(integration_other_user_not_found),
        STORE_TEST(integration_list_and_delete),
        STORE_TEST(integration_duplicate_is_conflict),
        STORE_TEST(record_put_get_replace),
        STORE_TEST(record_list_pages),
        STORE_TEST(mapping_put_replaces),
        STORE_TEST(mapping_foreign_integration_not_found),
        STORE_TEST(routes_filter_mappings),
        STORE_TEST(delivery_commit_and_rollback),
        STORE_TEST(delivery_shared_body_round_trip),
        STORE_TEST(delivery_shared_body_missing_prefix),
        STORE_TEST(delivery_foreign_integration_not_found),
        STORE_TEST(claim_takes_due_only),
        STORE_TEST(claim_respects_leases),
        STORE_TEST(claim_honours_limit),
        STORE_TEST(claim_unsigned_has_no_secret),
        STORE_TEST(finish_success_updates_stats),
        STORE_TEST(finish_retry_then_failure),
        STORE_TEST(finish_success_after_failure),
        STORE_TEST(finish_wrong_owner_not_found),
        STORE_TEST(finish_row_ref_checked),
        STORE_TEST(finish_in_transaction_keeps_caller),
        STORE_TEST(integration_delete_cascades),
        STORE_TEST(next_due_reports_earliest),
        STORE_TEST(release_all_leases_frees_claims),
        STORE_TEST(claim_capped_limits_integration),
        STORE_TEST(claim_capped_oldest_first),
        STORE_TEST(claim_capped_takes_turns),
        STORE_TEST(claim_capped_expired_lease),
        STORE_TEST(next_due_across_integrations),
        STORE_TEST(finish_batch_matches_single),
        STORE_TEST(finish_batch_lost_lease_isolated),
        STORE_TEST(finish_batch_failed_row_isolated),
        STORE_TEST(finish_batch_in_transaction),
        STORE_TEST(two_connections_claim_and_insert),
        STORE_TEST(idempotency_put_and_get),
        STORE_TEST(purge_finished_keeps_pending),
        STORE_TEST(purge_idempotency_by_age),
        STORE_TEST(integration_update_writes_settings),
        STORE_TEST(integration_update_shrinks_mappings),
        STORE_TEST(integration_update_other_user_not_found),
        STORE_TEST(mapping_get_and_delete),
        STORE_TEST(lead_latest_campaign_picks_newest),
        STORE_TEST(delivery_list_filters_and_pages),
        STORE_TEST(redeliver_failed_becomes_pending),
        STORE_TEST(redeliver_test_is_conflict),
        STORE_TEST(test_delivery_claim_no_retries),
        STORE_TEST(test_delivery_finish_keeps_stats),
        STORE_TEST(test_delivery_batch_keeps_stats),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
