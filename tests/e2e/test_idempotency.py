"""End to end: a client eventId makes POST /v1/events safe to repeat."""
import http.client
import json
import threading
import time

from test_delivery import CAMPAIGN, connect, create_integration, setup_campaign

LEAD = {"id": "lead-idem-1", "firstName": "Jane", "lastName": "Smith"}


def event_body(event_id, **extra):
    body = {"type": "message_replied", "campaignId": CAMPAIGN["id"], "lead": LEAD,
            "eventId": event_id}
    body.update(extra)
    return body


def connected_receiver(server, make_recorder):
    recorder = make_recorder()
    integration = create_integration(server, recorder.url)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])
    return recorder, integration


def post_raw(server, raw):
    return server.request("POST", "/v1/events", raw=raw)


def test_repeat_returns_first_answer(server, make_recorder):
    recorder, _ = connected_receiver(server, make_recorder)

    status, first, _ = server.request("POST", "/v1/events", event_body("crm-42"))
    assert status == 202
    assert len(first["deliveries"]) == 1
    status, second, _ = server.request("POST", "/v1/events", event_body("crm-42"))
    assert status == 202
    assert second == first

    recorder.wait_count(1)
    server.wait_delivery(first["deliveries"][0]["id"])
    time.sleep(0.5)
    assert recorder.count() == 1
    body = json.loads(recorder.requests[0]["body"])
    assert body["metadata"]["eventId"] == first["eventId"]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/metrics")
    metrics = connection.getresponse().read().decode()
    assert "bearhook_events_accepted_total 1\n" in metrics


def test_different_body_conflicts(server, make_recorder):
    connected_receiver(server, make_recorder)
    server.ok("POST", "/v1/events", event_body("crm-43"), expect=(202,))

    status, answer, _ = server.request("POST", "/v1/events",
                                       event_body("crm-43", type="message_sent"))
    assert status == 409
    assert answer["error"]["code"] == "conflict"
    assert answer["error"]["field"] == "eventId"
    assert "crm-43" in answer["error"]["message"]


def test_new_event_id_makes_new_event(server, make_recorder):
    connected_receiver(server, make_recorder)
    first = server.ok("POST", "/v1/events", event_body("crm-44"), expect=(202,))
    second = server.ok("POST", "/v1/events", event_body("crm-45"), expect=(202,))
    without = server.ok("POST", "/v1/events", {k: v for k, v in event_body("x").items()
                                               if k != "eventId"}, expect=(202,))
    assert len({first["eventId"], second["eventId"], without["eventId"]}) == 3


def test_whitespace_and_key_order_are_same_body(server, make_recorder):
    connected_receiver(server, make_recorder)
    compact = json.dumps(event_body("crm-46"), separators=(",", ":")).encode()
    status, first, _ = post_raw(server, compact)
    assert status == 202

    reordered = dict(reversed(list(event_body("crm-46").items())))
    spaced = json.dumps(reordered, indent=4, sort_keys=False).encode()
    assert spaced != compact
    status, second, _ = post_raw(server, spaced)
    assert status == 202
    assert second == first


def test_invalid_event_ids(server):
    setup_campaign(server)
    for bad in ["", "x" * 129, "has space", "slash/no", "caf\u00e9"]:
        status, answer, _ = server.request("POST", "/v1/events", event_body(bad))
        assert status == 422, bad
        assert answer["error"]["field"] == "eventId"
    status, answer, _ = server.request("POST", "/v1/events", event_body(7))
    assert status == 400
    assert answer["error"]["field"] == "eventId"
    status, _, _ = server.request("POST", "/v1/events", event_body("x" * 128))
    assert status == 202


def test_invalid_event_is_not_remembered(server, make_recorder):
    connected_receiver(server, make_recorder)
    missing_lead = event_body("crm-47", leadId="missing")
    del missing_lead["lead"]
    status, _, _ = server.request("POST", "/v1/events", missing_lead)
    assert status == 404
    status, answer, _ = server.request("POST", "/v1/events", event_body("crm-47"))
    assert status == 202
    assert len(answer["deliveries"]) == 1


def test_concurrent_repeats_make_one_event(server, make_recorder):
    recorder, _ = connected_receiver(server, make_recorder)
    answers = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def post():
        start.wait(timeout=10)
        status, answer, _ = server.request("POST", "/v1/events", event_body("crm-48"))
        with lock:
            answers.append((status, answer))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(answers) == 8
    assert all(status == 202 for status, _ in answers)
    assert len({json.dumps(answer, sort_keys=True) for _, answer in answers}) == 1
    recorder.wait_count(1)
    time.sleep(0.5)
    assert recorder.count() == 1
    first_event_id = answers[0][1]["eventId"]
    assert json.loads(recorder.requests[0]["body"])["metadata"]["eventId"] == first_event_id
    assert server.log().count("event accepted event=") == 1
