"""End to end: events reported over the API reach real receivers, signed, with retries."""
import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import BEARHOOK_BIN, ROOT, wait_for

FULL_LEAD = {
    "id": "65abc123def4567890ghij01",
    "firstName": "Jane",
    "lastName": "Smith",
    "email": "jane.smith@example.com",
    "phone": "+1-555-0123",
    "profileUrl": "https://www.linkedin.com/in/janesmith",
    "profileHeadline": "VP of Sales at Acme Corp",
    "profileImageUrl": "https://media.licdn.com/...",
    "position": "VP of Sales",
    "companyName": "Acme Corp",
    "location": "San Francisco, CA",
    "website": "https://acme.com",
    "education": "Stanford University",
    "publicIdentifier": "janesmith",
    "connectionCount": 500,
    "followerCount": 1200,
    "isPremium": True,
    "memberUrn": "urn:li:member:123456789",
    "stage": "connected",
    "createdAt": "2026-01-15T08:00:00.000Z",
}
CAMPAIGN = {"id": "65abc123def4567890ghij02", "name": "Q1 Outreach", "status": "running"}
ACCOUNT = {"id": "65abc123def4567890ghij03", "name": "Sales Team Account",
           "email": "john.smith@example.com"}
ALL_EVENTS = ["connection_request_sent", "connection_request_accepted", "message_sent",
              "message_replied"]


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret, body):
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def create_integration(server, url, **fields):
    body = {"name": "CRM Sync", "url": url, "events": ALL_EVENTS}
    body.update(fields)
    return server.ok("POST", "/v1/integrations", body)


def connect(server, campaign_id, integration_id, events=None):
    body = {"integrationId": integration_id}
    if events is not None:
        body["events"] = events
    return server.ok("POST", f"/v1/campaigns/{campaign_id}/integrations", body)


def setup_campaign(server, campaign=CAMPAIGN):
    server.ok("PUT", f"/v1/campaigns/{campaign['id']}",
              {key: value for key, value in campaign.items() if key != "id"})


def post_event(server, event_type="connection_request_accepted", lead=FULL_LEAD,
               campaign_id=CAMPAIGN["id"], account=ACCOUNT, **extra):
    body = {"type": event_type, "lead": lead}
    if campaign_id:
        body["campaignId"] = campaign_id
    if account:
        body["linkedInAccount"] = account
    body.update(extra)
    return server.ok("POST", "/v1/events", body, expect=(202,))


def headers_of(record):
    return {name.lower(): value for name, value in record["headers"]}


def test_event_reaches_receiver_exactly(server, make_recorder):
    recorder = make_recorder()
    integration = create_integration(server, recorder.url,
                                     headers={"Authorization": "Bearer crm-token"})
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])

    accepted = post_event(server, occurredAt="2026-02-13T10:30:00.000Z")
    recorder.wait_count(1)
    record = recorder.requests[0]
    headers = headers_of(record)

    expected = compact({
        "event": "connection_request_accepted",
        "timestamp": "2026-02-13T10:30:00.000Z",
        "data": {"lead": FULL_LEAD, "campaign": CAMPAIGN, "linkedInAccount": ACCOUNT},
        "metadata": {"eventId": accepted["eventId"], "userId": record_user(server),
                     "integrationId": integration["id"]},
    })
    assert record["body"] == expected
    assert record["path"] == "/hook"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Bearconnect-Webhook/1.0"
    assert headers["x-webhook-id"] == integration["id"]
    assert headers["authorization"] == "Bearer crm-token"
    assert int(headers["content-length"]) == len(record["body"])
    assert abs(int(headers["x-bearconnect-timestamp"]) - time.time()) < 30
    assert headers["x-bearconnect-signature"] == sign(integration["secret"], record["body"])
    assert accepted["eventId"].startswith("evt_")

    delivery = server.wait_delivery(accepted["deliveries"][0]["id"])
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"][0]["httpStatus"] == 200
    detail = server.ok("GET", f"/v1/integrations/{integration['id']}")
    assert detail["stats"]["delivered"] == 1
    assert detail["stats"]["failed"] == 0
    assert detail["status"] == "active"
    assert detail["stats"]["lastDeliveryAt"] is not None


def record_user(server):
    """Returns the id of the server's first user, read from its start-up output."""
    with open(server.stdout_path) as output:
        text = output.read()
    return text.split("(id ")[1].split(")")[0]


def test_minimal_lead_defaults_and_optional_parts(server, make_recorder):
    recorder = make_recorder()
    integration = create_integration(server, recorder.url)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])

    post_event(server, lead={"id": "lead-min", "firstName": "Ana"}, account=None)
    recorder.wait_count(1)
    payload = json.loads(recorder.requests[0]["body"])
    lead = payload["data"]["lead"]
    assert list(lead) == list(FULL_LEAD)
    assert lead["id"] == "lead-min"
    assert lead["firstName"] == "Ana"
    assert lead["connectionCount"] == 0
    assert lead["isPremium"] is False
    for key in FULL_LEAD:
        if key not in ("id", "firstName", "connectionCount", "isPremium"):
            assert lead[key] is None, key
    assert "linkedInAccount" not in payload["data"]
    assert list(payload) == ["event", "timestamp", "data", "metadata"]


def test_inline_lead_merges_over_stored(server, make_recorder):
    """A new inline lead is sent as given. A partial one merges over the stored lead, even
    without the firstName a new lead needs. One equal to the stored lead is sent as stored."""
    recorder = make_recorder()
    integration = create_integration(server, recorder.url)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])

    events = [
        post_event(server, lead={"id": "lead-m", "firstName": "Ana", "email": "ana@example.com"}),
        post_event(server, lead={"id": "lead-m", "lastName": "Lima"}),
        post_event(server, lead={"id": "lead-m", "firstName": "Ana", "lastName": "Lima",
                                 "email": "ana@example.com"}),
    ]
    recorder.wait_count(3)
    payloads = [json.loads(record["body"]) for record in recorder.requests]
    by_event = {payload["metadata"]["eventId"]: payload["data"]["lead"] for payload in payloads}
    leads = [by_event[event["eventId"]] for event in events]
    assert [lead["lastName"] for lead in leads] == [None, "Lima", "Lima"]
    assert [lead["firstName"] for lead in leads] == ["Ana", "Ana", "Ana"]
    assert [lead["email"] for lead in leads] == ["ana@example.com"] * 3
    assert leads[1] == leads[2]
    assert list(leads[2]) == list(FULL_LEAD)
    assert server.ok("GET", "/v1/leads/lead-m") == leads[2]

    status, answer, _ = server.request("POST", "/v1/events",
                                       {"type": "message_sent", "lead": {"id": "lead-new"}})
    assert status == 422
    assert answer["error"]["field"] == "lead.firstName"


def test_unicode_arrives_byte_for_byte(server, make_recorder):
    recorder = make_recorder()
    integration = create_integration(server, recorder.url)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])
    lead = {"id": "lead-utf8", "firstName": "Zoë 🚀", "lastName": "שלום عالم",
            "companyName": "Café Ñandú"}

    post_event(server, lead=lead, account={"id": "acct-1", "email": "a@example.com"})
    recorder.wait_count(1)
    record = recorder.requests[0]
    headers = headers_of(record)
    assert "Zoë 🚀".encode() in record["body"]
    assert "שלום عالم".encode() in record["body"]
    assert int(headers["content-length"]) == len(record["body"])
    assert headers["x-bearconnect-signature"] == sign(integration["secret"], record["body"])
    account = json.loads(record["body"])["data"]["linkedInAccount"]
    assert account == {"id": "acct-1", "name": "LinkedIn Account", "email": "a@example.com"}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", [["node", "node_receiver.js"],
                                     ["/usr/bin/python3", "python_receiver.py"]],
                         ids=["node", "python"])
def test_guide_receiver_verifies_delivery(server, tmp_path, command):
    port = free_port()
    integration = create_integration(server, f"http://127.0.0.1:{port}/webhook")
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])
    out = tmp_path / "received.jsonl"
    process = subprocess.Popen(
        command + ["--port", str(port), "--secret", integration["secret"], "--out", str(out)],
        cwd=os.path.join(ROOT, "tests", "e2e", "receivers"), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().split() == ["PORT", str(port)]
        accepted = post_event(server)
        delivery = server.wait_delivery(accepted["deliveries"][0]["id"])
        lines = [json.loads(line) for line in out.read_text().splitlines()]
    finally:
        process.kill()
        process.wait()
    assert delivery["status"] == "succeeded", delivery
    assert len(lines) == 1
    assert lines[0]["valid"] is True
    assert base64.b64decode(lines[0]["bodyBase64"]) == compact(delivery["payload"])


def test_fan_out_and_routing(server, make_recorder):
    recorders = [make_recorder() for _ in range(3)]
    setup_campaign(server)
    other = {"id": "camp-unmapped", "name": "Unmapped"}
    setup_campaign(server, other)
    ids = []
    for index, recorder in enumerate(recorders):
        integration = create_integration(server, recorder.url, name=f"hook {index}")
        connect(server, CAMPAIGN["id"], integration["id"],
                events=["connection_request_accepted", "message_sent"])
        ids.append(integration["id"])

    accepted = post_event(server)
    assert sorted(d["integrationId"] for d in accepted["deliveries"]) == sorted(ids)
    for recorder in recorders:
        recorder.wait_count(1)

    unmapped = post_event(server, campaign_id=other["id"])
    not_enabled = post_event(server, event_type="message_replied")
    no_campaign = post_event(server, campaign_id=None)
    assert unmapped["deliveries"] == []
    assert not_enabled["deliveries"] == []
    assert no_campaign["deliveries"] == []
    time.sleep(0.5)
    assert [recorder.count() for recorder in recorders] == [1, 1, 1]


def test_retries_until_success(server, make_recorder):
    recorder = make_recorder([(500, 0, {}), (500, 0, {}), (200, 0, {})])
    integration = create_integration(server, recorder.url)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])

    accepted = post_event(server)
    delivery = server.wait_delivery(accepted["deliveries"][0]["id"])
    assert delivery["status"] == "succeeded"
    assert [a["httpStatus"] for a in delivery["attempts"]] == [500, 500, 200]
    assert recorder.count() == 3
    bodies = {record["body"] for record in recorder.requests}
    assert len(bodies) == 1
    stats = server.ok("GET", f"/v1/integrations/{integration['id']}")["stats"]
    assert stats["delivered"] == 1
    assert stats["failed"] == 0


def test_permanent_failure_sets_error_status(server, make_recorder):
    recorder = make_recorder([(503, 0, {})])
    integration = create_integration(server, recorder.url, maxRetries=2)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])

    accepted = post_event(server)
    delivery = server.wait_delivery(accepted["deliveries"][0]["id"])
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 3
    assert recorder.count() == 3
    detail = server.ok("GET", f"/v1/integrations/{integration['id']}")
    assert detail["status"] == "error"
    assert detail["stats"]["failed"] == 1
    assert detail["stats"]["delivered"] == 0
    assert "503" in detail["stats"]["lastError"]


def test_receiver_that_never_answers_times_out(server, make_recorder):
    recorder = make_recorder([(200, 8, {})])
    integration = create_integration(server, recorder.url, maxRetries=1, timeoutMs=5000)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])

    accepted = post_event(server)
    delivery = server.wait_delivery(accepted["deliveries"][0]["id"], timeout=30)
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 2
    for attempt in delivery["attempts"]:
        assert "timed out" in attempt["error"]
        assert attempt["httpStatus"] is None
        assert 4500 <= attempt["durationMs"] < 8000


def test_redirect_is_not_followed(server, make_recorder):
    recorder = make_recorder([(302, 0, {"Location": "https://elsewhere.example/hook"})])
    integration = create_integration(server, recorder.url, maxRetries=1)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])

    accepted = post_event(server)
    delivery = server.wait_delivery(accepted["deliveries"][0]["id"])
    assert delivery["status"] == "failed"
    assert "https://elsewhere.example/hook" in delivery["attempts"][0]["error"]
    assert recorder.count() == 2


def test_kill_during_delivery_loses_nothing(start_server, make_recorder):
    recorder = make_recorder([(200, 0.05, {})])
    args = ["--allow-http", "--allow-networks", "127.0.0.0/8", "--max-in-flight", "2",
            "--lease-margin-ms", "1000"]
    server = start_server(args)
    integration = create_integration(server, recorder.url)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])

    delivery_ids = []
    for index in range(60):
        lead = {"id": f"lead-{index}", "firstName": f"Lead {index}"}
        accepted = post_event(server, lead=lead)
        delivery_ids.append(accepted["deliveries"][0]["id"])
    recorder.wait_count(3)
    server.kill()
    received_at_kill = recorder.count()
    assert received_at_kill < len(delivery_ids), "the kill came after every delivery"

    server.start()
    for delivery_id in delivery_ids:
        assert server.wait_delivery(delivery_id, timeout=60)["status"] == "succeeded"
    received = {json.loads(r["body"])["data"]["lead"]["id"] for r in recorder.requests}
    assert received == {f"lead-{index}" for index in range(60)}


def test_automation_providers_get_same_payload(server, make_recorder):
    setup_campaign(server)
    received = {}
    for provider in ("webhook", "zapier", "make", "n8n"):
        recorder = make_recorder()
        integration = create_integration(server, recorder.url, name=provider, provider=provider)
        assert integration["provider"] == provider
        connect(server, CAMPAIGN["id"], integration["id"])
        received[provider] = (recorder, integration)

    post_event(server)
    bodies = {}
    for provider, (recorder, integration) in received.items():
        recorder.wait_count(1)
        record = recorder.requests[0]
        headers = headers_of(record)
        assert headers["x-bearconnect-signature"] == sign(integration["secret"], record["body"])
        payload = json.loads(record["body"])
        assert payload["metadata"]["integrationId"] == integration["id"]
        payload["metadata"]["integrationId"] = None
        bodies[provider] = payload
    assert bodies["zapier"] == bodies["webhook"]
    assert bodies["make"] == bodies["webhook"]
    assert bodies["n8n"] == bodies["webhook"]


def test_deleted_integration_gets_nothing_more(server, make_recorder):
    slow = make_recorder([(500, 0, {})])
    kept = make_recorder()
    setup_campaign(server)
    deleted = create_integration(server, slow.url, name="deleted")
    other = create_integration(server, kept.url, name="kept")
    connect(server, CAMPAIGN["id"], deleted["id"])
    connect(server, CAMPAIGN["id"], other["id"])
    first = post_event(server)
    slow.wait_count(1)
    pending = [d["id"] for d in first["deliveries"] if d["integrationId"] == deleted["id"]][0]

    server.ok("DELETE", f"/v1/integrations/{deleted['id']}")

    mappings = server.ok("GET", f"/v1/campaigns/{CAMPAIGN['id']}/integrations")["data"]
    assert [m["integrationId"] for m in mappings] == [other["id"]]
    status, _, _ = server.request("GET", f"/v1/deliveries/{pending}")
    assert status == 404
    later = post_event(server)
    assert [d["integrationId"] for d in later["deliveries"]] == [other["id"]]
    kept.wait_count(2)
    attempts_at_delete = slow.count()
    time.sleep(1.0)
    assert slow.count() == attempts_at_delete


def metric(server, name):
    """Reads one counter from GET /metrics."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in /metrics:\n{text}")


def test_events_are_synced_before_their_answer(server, make_recorder):
    """Event commits skip the disk sync and a group sync confirms them, in a process that
    delivers too (ingest shares the dispatcher's transactions)."""
    recorder = make_recorder()
    integration = create_integration(server, recorder.url)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])
    assert metric(server, "bearhook_store_syncs_total") == 0

    for index in range(5):
        post_event(server, lead={"id": f"lead-{index}", "firstName": "Jane"})
    syncs = metric(server, "bearhook_store_syncs_total")
    assert 1 <= syncs <= 5
    recorder.wait_count(5)
    # Attempt results are not synced: only events wait for the disk.
    time.sleep(0.3)
    assert metric(server, "bearhook_store_syncs_total") == syncs


def test_events_with_many_deliveries_commit_apart(server, make_recorder):
    """One transaction takes events until they have created 64 deliveries, so that new
    deliveries cannot crowd out those already waiting. Eight events sent at once, with 70
    deliveries each, take a transaction and a sync each, where they could share fewer."""
    recorder = make_recorder()
    setup_campaign(server)
    for index in range(70):
        integration = create_integration(server, recorder.url, name=f"CRM {index}")
        connect(server, CAMPAIGN["id"], integration["id"])
    before = metric(server, "bearhook_store_syncs_total")

    def send(index):
        return post_event(server, lead={"id": f"lead-{index}", "firstName": "Jane"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        accepted = list(pool.map(send, range(8)))
    assert [len(answer["deliveries"]) for answer in accepted] == [70] * 8
    assert metric(server, "bearhook_store_syncs_total") - before == 8


def test_api_and_worker_processes_split_the_work(start_server, make_recorder, tmp_path):
    """serve --role api accepts events on a committer thread of its own, with synced commits,
    and a separate serve --role worker on the same database delivers them."""
    recorder = make_recorder()
    server = start_server(["--role", "api", "--allow-http", "--allow-networks", "127.0.0.0/8"])
    integration = create_integration(server, recorder.url)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])
    accepted = [post_event(server, lead={"id": f"lead-{index}", "firstName": "Jane"})
                for index in range(5)]
    # Another process delivers, so each commit syncs itself and no group sync follows.
    assert metric(server, "bearhook_store_syncs_total") == 0
    time.sleep(0.3)
    assert recorder.count() == 0, "an api-only process delivered"

    log_path = tmp_path / "worker.stderr"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [BEARHOOK_BIN, "serve", "--role", "worker", "--db", server.db, "--allow-http",
             "--allow-networks", "127.0.0.0/8", "--retry-base-ms", "50"],
            stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    try:
        recorder.wait_count(5)
        for event in accepted:
            delivery_id = event["deliveries"][0]["id"]
            assert server.wait_delivery(delivery_id)["status"] == "succeeded"
    finally:
        worker.send_signal(signal.SIGTERM)
        returncode = worker.wait(timeout=20)
    assert returncode == 0, log_path.read_text(errors="replace")
    received = sorted(json.loads(r["body"])["data"]["lead"]["id"] for r in recorder.requests)
    assert received == [f"lead-{index}" for index in range(5)]
