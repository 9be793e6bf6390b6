"""End to end: the delivery log lists an integration's deliveries page by page, and sends
finished deliveries again, one at a time or every failed one since a time."""
import base64
import datetime
import sqlite3
import subprocess
import time
import urllib.parse

import pytest

from conftest import BEARHOOK_BIN, wait_for

LEAD = {"id": "lead-1", "firstName": "Jane", "lastName": "Smith"}
CAMPAIGN_ID = "q1"
ALL_EVENTS = ["connection_request_sent", "connection_request_accepted", "message_sent",
              "message_replied"]
SUMMARY_KEYS = {"id", "eventId", "eventType", "status", "attemptCount", "lastHttpStatus", "test",
                "lastError", "createdAt", "updatedAt", "nextAttemptAt"}
FAIL = (500, 0, {})
OK = (200, 0, {})


def setup_webhook(server, url, max_retries=1):
    """Creates a webhook on url connected to campaign q1; returns its id."""
    integration = server.ok("POST", "/v1/integrations", {
        "name": "Log", "url": url, "events": ALL_EVENTS, "maxRetries": max_retries})
    server.ok("PUT", f"/v1/campaigns/{CAMPAIGN_ID}", {"name": "Q1"})
    server.ok("POST", f"/v1/campaigns/{CAMPAIGN_ID}/integrations",
              {"integrationId": integration["id"]})
    return integration["id"]


def post_event(server, event_type="connection_request_accepted"):
    """Reports an event on campaign q1; returns the id of its one delivery."""
    accepted = server.ok("POST", "/v1/events",
                         {"type": event_type, "lead": LEAD, "campaignId": CAMPAIGN_ID},
                         expect=(202,))
    return accepted["deliveries"][0]["id"]


def log_path(integration_id, **query):
    path = f"/v1/integrations/{integration_id}/deliveries"
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def log_ids(server, integration_id, **query):
    return [item["id"] for item in server.ok("GET", log_path(integration_id, **query))["data"]]


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


def format_time(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def second_user_key(server):
    output = subprocess.run([BEARHOOK_BIN, "user", "create", "second", "--db", server.db],
                            capture_output=True, text=True, check=True).stdout
    return output.strip().splitlines()[-1]


def test_list_filters_and_redeliver(server, make_recorder):
    # Two failed responses use up the first delivery's attempts; every later one succeeds.
    recorder = make_recorder([FAIL, FAIL, OK])
    integration_id = setup_webhook(server, recorder.url)
    failed_id = post_event(server, "connection_request_accepted")
    failed = server.wait_delivery(failed_id)
    assert failed["status"] == "failed"
    middle = format_time(parse_time(failed["createdAt"]) + datetime.timedelta(milliseconds=1))
    time.sleep(0.01)
    succeeded_id = post_event(server, "message_replied")
    assert server.wait_delivery(succeeded_id)["status"] == "succeeded"

    page = server.ok("GET", log_path(integration_id))
    assert [item["id"] for item in page["data"]] == [succeeded_id, failed_id]
    assert page["nextCursor"] is None
    listed = page["data"][1]
    assert set(listed) == SUMMARY_KEYS
    assert listed["status"] == "failed"
    assert listed["eventType"] == "connection_request_accepted"
    assert listed["attemptCount"] == 2
    assert listed["lastHttpStatus"] == 500
    assert listed["lastError"]
    assert listed["nextAttemptAt"] is None
    assert listed["createdAt"] == failed["createdAt"]

    assert log_ids(server, integration_id, status="failed") == [failed_id]
    assert log_ids(server, integration_id, status="succeeded") == [succeeded_id]
    assert log_ids(server, integration_id, status="pending") == []
    assert log_ids(server, integration_id, eventType="message_replied") == [succeeded_id]
    assert log_ids(server, integration_id, eventType="connection_request_accepted") == [failed_id]
    assert log_ids(server, integration_id, eventType="message_sent") == []
    assert log_ids(server, integration_id, since=middle) == [succeeded_id]
    assert log_ids(server, integration_id, until=middle) == [failed_id]
    assert log_ids(server, integration_id, since=failed["createdAt"],
                   until=failed["createdAt"]) == [failed_id]
    assert log_ids(server, integration_id, status="failed", since=middle) == []

    # Sending the failed delivery again: same body, a third attempt, and a fresh budget.
    answer = server.ok("POST", f"/v1/deliveries/{failed_id}/redeliver", expect=(202,))
    assert answer["id"] == failed_id
    assert answer["status"] == "pending"
    assert answer["attemptCount"] == 2
    assert answer["nextAttemptAt"] is not None
    recorder.wait_count(4)
    assert recorder.requests[3]["body"] == recorder.requests[0]["body"]
    resent = server.wait_delivery(failed_id)
    assert resent["status"] == "succeeded"
    assert [attempt["number"] for attempt in resent["attempts"]] == [1, 2, 3]
    assert [attempt["httpStatus"] for attempt in resent["attempts"]] == [500, 500, 200]
    assert resent["attemptCount"] == 3
    stats = server.ok("GET", f"/v1/integrations/{integration_id}")["stats"]
    assert (stats["delivered"], stats["failed"]) == (2, 0)
    assert log_ids(server, integration_id, status="failed") == []


def test_redeliver_keeps_a_fresh_retry_budget(server, make_recorder):
    # The first delivery fails twice (maxRetries 1); sent again, it fails once more and then
    # still gets its one retry, which succeeds.
    recorder = make_recorder([FAIL, FAIL, FAIL, OK])
    integration_id = setup_webhook(server, recorder.url)
    delivery_id = post_event(server)
    assert server.wait_delivery(delivery_id)["status"] == "failed"

    server.ok("POST", f"/v1/deliveries/{delivery_id}/redeliver", expect=(202,))
    resent = server.wait_delivery(delivery_id)
    assert resent["status"] == "succeeded"
    assert [attempt["httpStatus"] for attempt in resent["attempts"]] == [500, 500, 500, 200]
    assert recorder.count() == 4
    stats = server.ok("GET", f"/v1/integrations/{integration_id}")["stats"]
    assert (stats["delivered"], stats["failed"]) == (1, 0)


def test_redeliver_pending_conflicts(server, make_recorder):
    # The receiver delays its response to the first attempt by two seconds, so the delivery stays pending.
    recorder = make_recorder([(200, 2, {})])
    setup_webhook(server, recorder.url)
    delivery_id = post_event(server)
    recorder.wait_count(1)
    status, body, _ = server.request("POST", f"/v1/deliveries/{delivery_id}/redeliver")
    assert status == 409
    assert body["error"]["code"] == "conflict"
    assert "not finished" in body["error"]["message"]
    assert server.wait_delivery(delivery_id)["status"] == "succeeded"

    # A succeeded delivery may be sent again too.
    server.ok("POST", f"/v1/deliveries/{delivery_id}/redeliver", expect=(202,))
    recorder.wait_count(2)
    assert recorder.requests[1]["body"] == recorder.requests[0]["body"]
    assert server.wait_delivery(delivery_id)["attemptCount"] == 2


def test_pages_without_duplicates_or_gaps(server, make_recorder):
    recorder = make_recorder()
    integration_id = setup_webhook(server, recorder.url)
    first = {post_event(server) for _ in range(23)}

    seen = []
    cursor = None
    for page_number in range(20):
        query = {"limit": 5}
        if cursor:
            query["cursor"] = cursor
        page = server.ok("GET", log_path(integration_id, **query))
        assert len(page["data"]) <= 5
        seen.extend(page["data"])
        if page_number < 3:
            post_event(server, "message_sent")
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert cursor is None

    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids))
    assert first <= set(ids)
    keys = [(item["createdAt"], item["id"]) for item in seen]
    assert keys == sorted(keys, reverse=True)
    # Deliveries that arrived during paging come before the first page's cursor, and so are
    # left for a fresh first page.
    assert len(log_ids(server, integration_id, limit=100)) == 26


@pytest.mark.parametrize("query, field, hint", [
    ({"status": "done"}, "status", "pending, succeeded or failed"),
    ({"status": "cancelled"}, "status", "pending, succeeded or failed"),
    ({"eventType": "lead_replied"}, "eventType", "message_replied"),
    ({"since": "yesterday"}, "since", "ISO-8601"),
    ({"until": "2026-02-13T10:30:00"}, "until", "zone"),
    ({"since": "2026-02-14T00:00:00Z", "until": "2026-02-13T00:00:00Z"}, "until", "before"),
    ({"limit": "0"}, "limit", "1 to 100"),
    ({"limit": "101"}, "limit", "1 to 100"),
    ({"limit": "ten"}, "limit", "1 to 100"),
    ({"cursor": "not a cursor"}, "cursor", "nextCursor"),
    ({"cursor": base64.urlsafe_b64encode(b"12:dlv_x").decode().rstrip("=")}, "cursor",
     "nextCursor"),
    ({"status": ""}, "status", "no value"),
    ({"order": "asc"}, "order", "status, eventType, since, until, limit or cursor"),
])
def test_bad_list_parameters(server, query, field, hint):
    integration_id = setup_webhook(server, "http://127.0.0.1:9/hook")
    status, body, raw = server.request("GET", log_path(integration_id, **query))
    assert status == 422, raw
    assert body["error"]["code"] == "validation_failed"
    assert body["error"]["field"] == field
    assert hint in body["error"]["message"]


def test_recover_failed_deliveries_since(server, make_recorder):
    count = 4
    # Every attempt of the first 1 + count deliveries fails (two each), then all succeed.
    recorder = make_recorder([FAIL] * (2 * (count + 1)) + [OK])
    integration_id = setup_webhook(server, recorder.url)
    old_id = post_event(server)
    old = server.wait_delivery(old_id)
    since = format_time(parse_time(old["createdAt"]) + datetime.timedelta(milliseconds=1))
    time.sleep(0.01)
    recent = [post_event(server) for _ in range(count)]
    for delivery_id in recent:
        assert server.wait_delivery(delivery_id)["status"] == "failed"
    assert server.ok("GET", f"/v1/integrations/{integration_id}")["stats"]["failed"] == count + 1

    answer = server.ok("POST", f"/v1/integrations/{integration_id}/recover", {"since": since},
                       expect=(202,))
    assert answer == {"recovered": count}
    for delivery_id in recent:
        delivery = server.wait_delivery(delivery_id)
        assert delivery["status"] == "succeeded"
        assert len(delivery["attempts"]) == 3
    assert server.delivery(old_id)["status"] == "failed"
    assert recorder.count() == 2 * (count + 1) + count
    stats = server.ok("GET", f"/v1/integrations/{integration_id}")["stats"]
    assert (stats["delivered"], stats["failed"]) == (count, 1)

    again = server.ok("POST", f"/v1/integrations/{integration_id}/recover", {"since": since},
                      expect=(202,))
    assert again == {"recovered": 0}


@pytest.mark.parametrize("body, status, field", [
    ({}, 422, "since"),
    ({"since": None}, 422, "since"),
    ({"since": 5}, 400, "since"),
    ({"since": "last week"}, 422, "since"),
    ({"since": "2999-01-01T00:00:00.000Z"}, 422, "since"),
    ({"since": "2026-01-01T00:00:00Z", "state": "failed"}, 422, "state"),
])
def test_bad_recover_requests(server, body, status, field):
    integration_id = setup_webhook(server, "http://127.0.0.1:9/hook")
    answer, parsed, raw = server.request("POST", f"/v1/integrations/{integration_id}/recover",
                                         body)
    assert answer == status, raw
    assert parsed["error"]["field"] == field


def test_unknown_ids_and_other_users_answer_404(server, make_recorder):
    recorder = make_recorder()
    integration_id = setup_webhook(server, recorder.url)
    delivery_id = post_event(server)
    server.wait_delivery(delivery_id)
    other_key = second_user_key(server)
    since = {"since": "2026-01-01T00:00:00Z"}

    for key in (other_key, None):
        mine = key is None
        requests = [
            ("GET", log_path("6b131bdd546b8ba86403b445" if mine else integration_id), None),
            ("POST", f"/v1/deliveries/{'dlv_' + '0' * 24 if mine else delivery_id}/redeliver",
             None),
            ("POST", f"/v1/integrations/{'0' * 24 if mine else integration_id}/recover", since),
        ]
        for method, path, body in requests:
            status, parsed, raw = server.request(method, path, body, key=key)
            assert status == 404, (path, raw)
            assert parsed["error"]["code"] == "not_found"

    # The owner still sees the delivery, unchanged by the other user's attempts.
    assert log_ids(server, integration_id) == [delivery_id]
    assert wait_for(lambda: recorder.count() == 1)


def test_log_queries_read_an_index_in_order(server):
    """The log's queries, as the store runs them, read an index backwards: no scan, no sort."""
    list_query = ("SELECT id FROM deliveries WHERE integration_id = ?1 AND user_id = ?2 "
                  "AND created_ms >= ?3 AND created_ms <= ?4 AND (created_ms < ?4 OR id < ?5) "
                  "AND (?6 < 0 OR event_type = ?6) {} ORDER BY created_ms DESC, id DESC LIMIT ?7")
    cases = [(list_query.format(""), "deliveries_log"),
             (list_query.format("AND state = ?8"), "deliveries_log_state")]
    with sqlite3.connect(server.db) as db:
        for query, index in cases:
            values = tuple(range(8 if "?8" in query else 7))
            plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + query, values))
            assert f"USING INDEX {index}" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
