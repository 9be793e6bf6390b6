"""End to end: pausing, editing and removing campaign mappings, and exporting a lead to one
webhook. A real server on a temporary SQLite file delivers to real loopback receivers."""
import hashlib
import hmac
import json
import subprocess
import time

from conftest import BEARHOOK_BIN

ALL_EVENTS = ["connection_request_sent", "connection_request_accepted", "message_sent",
              "message_replied"]
LEAD = {"id": "lead-1", "firstName": "Jane", "lastName": "Smith",
        "email": "jane.smith@example.com"}
CAMPAIGN = {"id": "q1", "name": "Q1 Outreach", "status": "running"}
OTHER_CAMPAIGN = {"id": "q2", "name": "Q2 Outreach", "status": "draft"}


def create_integration(server, url, events=ALL_EVENTS, **fields):
    body = {"name": "CRM Sync", "url": url, "events": events}
    body.update(fields)
    return server.ok("POST", "/v1/integrations", body)


def put_campaign(server, campaign=CAMPAIGN):
    server.ok("PUT", f"/v1/campaigns/{campaign['id']}",
              {key: value for key, value in campaign.items() if key != "id"})


def put_lead(server, lead=LEAD):
    server.ok("PUT", f"/v1/leads/{lead['id']}",
              {key: value for key, value in lead.items() if key != "id"})


def connect(server, campaign_id, integration_id, **fields):
    body = {"integrationId": integration_id}
    body.update(fields)
    return server.ok("POST", f"/v1/campaigns/{campaign_id}/integrations", body)


def post_event(server, event_type="connection_request_accepted", campaign_id=CAMPAIGN["id"]):
    body = {"type": event_type, "leadId": LEAD["id"]}
    if campaign_id:
        body["campaignId"] = campaign_id
    return server.ok("POST", "/v1/events", body, expect=(202,))


def mapping_path(campaign_id, integration_id):
    return f"/v1/campaigns/{campaign_id}/integrations/{integration_id}"


def second_user_key(server):
    output = subprocess.run([BEARHOOK_BIN, "user", "create", "second", "--db", server.db],
                            capture_output=True, text=True, check=True).stdout
    return output.strip().splitlines()[-1]


def setup_mapped(server, recorder, events=ALL_EVENTS):
    integration = create_integration(server, recorder.url, events=events)
    put_campaign(server)
    put_lead(server)
    connect(server, CAMPAIGN["id"], integration["id"])
    return integration


def event_ids_received(recorder):
    return [json.loads(record["body"])["metadata"]["eventId"] for record in recorder.requests]


def headers_of(record):
    return {name.lower(): value for name, value in record["headers"]}


def test_mapping_pause_and_resume(server, make_recorder):
    recorder = make_recorder()
    integration = setup_mapped(server, recorder)
    path = mapping_path(CAMPAIGN["id"], integration["id"])

    paused = server.ok("PATCH", path, {"active": False})
    assert paused["active"] is False
    assert paused["events"] == ALL_EVENTS
    assert paused["integrationId"] == integration["id"]
    assert paused["campaignId"] == CAMPAIGN["id"]
    listed = server.ok("GET", f"/v1/campaigns/{CAMPAIGN['id']}/integrations")["data"]
    assert [mapping["active"] for mapping in listed] == [False]

    while_paused = post_event(server)
    assert while_paused["deliveries"] == []

    resumed = server.ok("PATCH", path, {"active": True})
    assert resumed["active"] is True
    after_resume = post_event(server)
    assert len(after_resume["deliveries"]) == 1
    recorder.wait_count(1)
    server.wait_delivery(after_resume["deliveries"][0]["id"])
    assert event_ids_received(recorder) == [after_resume["eventId"]]


def test_mapping_edit_events(server, make_recorder):
    recorder = make_recorder()
    integration = setup_mapped(server, recorder,
                               events=["connection_request_accepted", "message_replied"])
    path = mapping_path(CAMPAIGN["id"], integration["id"])

    edited = server.ok("PATCH", path, {"events": ["message_replied"]})
    assert edited["events"] == ["message_replied"]
    assert edited["active"] is True
    assert post_event(server, "connection_request_accepted")["deliveries"] == []
    replied = post_event(server, "message_replied")
    assert len(replied["deliveries"]) == 1
    recorder.wait_count(1)
    assert event_ids_received(recorder) == [replied["eventId"]]

    status, body, _ = server.request("PATCH", path, {"events": ["message_sent"]})
    assert status == 422
    assert body["error"]["field"] == "events"
    message = body["error"]["message"]
    assert "message_sent" in message
    assert "connection_request_accepted" in message
    assert "message_replied" in message
    listed = server.ok("GET", f"/v1/campaigns/{CAMPAIGN['id']}/integrations")["data"]
    assert listed[0]["events"] == ["message_replied"]


def test_mapping_patch_rejects_bad_input(server, make_recorder):
    integration = setup_mapped(server, make_recorder())
    path = mapping_path(CAMPAIGN["id"], integration["id"])

    status, body, _ = server.request("PATCH", path, {"active": False, "paused": True})
    assert status == 422
    assert body["error"]["field"] == "paused"
    assert "paused" in body["error"]["message"]
    status, body, _ = server.request("PATCH", path, {"active": "no"})
    assert status == 400
    assert body["error"]["field"] == "active"
    status, body, _ = server.request("PATCH", path, {"events": []})
    assert status == 422
    status, body, _ = server.request("PATCH", path, raw=b"{not json")
    assert status == 400

    listed = server.ok("GET", f"/v1/campaigns/{CAMPAIGN['id']}/integrations")["data"]
    assert listed[0]["active"] is True
    assert listed[0]["events"] == ALL_EVENTS


def test_mapping_missing_answers_404(server, make_recorder):
    recorder = make_recorder()
    mapped = setup_mapped(server, recorder)
    unmapped = create_integration(server, recorder.url)

    cases = [
        (mapping_path("no-such-campaign", mapped["id"]), "no-such-campaign"),
        (mapping_path(CAMPAIGN["id"], "0123456789abcdef01234567"), "0123456789abcdef01234567"),
        (mapping_path(CAMPAIGN["id"], unmapped["id"]), unmapped["id"]),
    ]
    for path, named in cases:
        for method, body in (("PATCH", {"active": False}), ("DELETE", None)):
            status, answer, _ = server.request(method, path, body)
            assert status == 404, (method, path)
            assert answer["error"]["code"] == "not_found"
            assert named in answer["error"]["message"], (method, path)


def test_mapping_delete_keeps_integration(server, make_recorder):
    removed_recorder = make_recorder()
    mapped_recorder = make_recorder()
    removed = setup_mapped(server, removed_recorder)
    still_mapped = create_integration(server, mapped_recorder.url)
    connect(server, CAMPAIGN["id"], still_mapped["id"])
    path = mapping_path(CAMPAIGN["id"], removed["id"])

    status, body, data = server.request("DELETE", path)
    assert status == 204
    assert data == b""
    assert server.ok("GET", f"/v1/integrations/{removed['id']}")["id"] == removed["id"]
    listed = server.ok("GET", f"/v1/campaigns/{CAMPAIGN['id']}/integrations")["data"]
    assert [mapping["integrationId"] for mapping in listed] == [still_mapped["id"]]

    accepted = post_event(server)
    assert [delivery["integrationId"] for delivery in accepted["deliveries"]] == [still_mapped["id"]]
    mapped_recorder.wait_count(1)
    server.wait_delivery(accepted["deliveries"][0]["id"])
    assert removed_recorder.count() == 0

    status, _, _ = server.request("DELETE", path)
    assert status == 404
    connect(server, CAMPAIGN["id"], removed["id"])


def export(server, lead_id, body, expect=(202,)):
    return server.ok("POST", f"/v1/leads/{lead_id}/export", body, expect=expect)


def test_export_sends_lead_with_campaign(server, make_recorder):
    recorder = make_recorder()
    # Not mapped to any campaign, and lead_added_to_campaign is never an allowed event.
    integration = create_integration(server, recorder.url, events=["message_replied"])
    put_campaign(server)
    put_lead(server)

    accepted = export(server, LEAD["id"], {"integrationId": integration["id"],
                                           "campaignId": CAMPAIGN["id"]})
    assert accepted["status"] == "pending"
    assert accepted["eventId"].startswith("evt_")
    assert accepted["deliveryId"].startswith("dlv_")
    assert accepted["deliveryUrl"] == f"/v1/deliveries/{accepted['deliveryId']}"

    recorder.wait_count(1)
    record = recorder.requests[0]
    payload = json.loads(record["body"])
    assert payload["event"] == "lead_added_to_campaign"
    assert payload["data"]["lead"]["id"] == LEAD["id"]
    assert payload["data"]["lead"]["email"] == LEAD["email"]
    assert payload["data"]["campaign"] == CAMPAIGN
    assert "linkedInAccount" not in payload["data"]
    assert payload["metadata"]["eventId"] == accepted["eventId"]
    assert payload["metadata"]["integrationId"] == integration["id"]
    headers = headers_of(record)
    assert headers["x-webhook-id"] == integration["id"]
    expected = hmac.new(integration["secret"].encode(), record["body"], hashlib.sha256)
    assert headers["x-bearconnect-signature"] == expected.hexdigest()

    delivery = server.wait_delivery(accepted["deliveryId"])
    assert delivery["status"] == "succeeded"
    assert delivery["payload"] == payload
    stats = server.ok("GET", f"/v1/integrations/{integration['id']}")["stats"]
    assert stats["delivered"] == 1


def test_export_campaign_from_latest_event(server, make_recorder):
    recorder = make_recorder()
    integration = create_integration(server, recorder.url)
    put_campaign(server)
    put_campaign(server, OTHER_CAMPAIGN)
    put_lead(server)
    put_lead(server, {"id": "lead-2", "firstName": "Max"})
    post_event(server, campaign_id=CAMPAIGN["id"])
    post_event(server, campaign_id=OTHER_CAMPAIGN["id"])
    post_event(server, campaign_id=None)

    from_events = export(server, LEAD["id"], {"integrationId": integration["id"]})
    no_events = export(server, "lead-2", {"integrationId": integration["id"], "campaignId": None})
    recorder.wait_count(2)
    by_event = {json.loads(record["body"])["metadata"]["eventId"]: json.loads(record["body"])
                for record in recorder.requests}
    assert by_event[from_events["eventId"]]["data"]["campaign"] == OTHER_CAMPAIGN
    assert "campaign" not in by_event[no_events["eventId"]]["data"]
    assert by_event[no_events["eventId"]]["data"]["lead"]["firstName"] == "Max"


def test_export_is_retried(server, make_recorder):
    recorder = make_recorder([(500, 0, {}), (200, 0, {})])
    integration = create_integration(server, recorder.url, signing=False)
    put_lead(server)

    accepted = export(server, LEAD["id"], {"integrationId": integration["id"]})
    delivery = server.wait_delivery(accepted["deliveryId"], states=("succeeded",))
    assert [attempt["httpStatus"] for attempt in delivery["attempts"]] == [500, 200]
    assert recorder.requests[0]["body"] == recorder.requests[1]["body"]
    assert "x-bearconnect-signature" not in headers_of(recorder.requests[1])


def test_export_survives_kill(server, make_recorder):
    # The first attempt is still waiting for its response when the server is killed.
    recorder = make_recorder([(200, 2, {}), (200, 0, {})])
    integration = create_integration(server, recorder.url)
    put_lead(server)

    accepted = export(server, LEAD["id"], {"integrationId": integration["id"]})
    recorder.wait_count(1)
    server.kill()
    server.start()
    delivery = server.wait_delivery(accepted["deliveryId"], timeout=30)
    assert delivery["status"] == "succeeded"
    event_ids = event_ids_received(recorder)
    assert event_ids[-1] == accepted["eventId"]
    assert len(event_ids) >= 2


def test_export_errors(server, make_recorder):
    put_lead(server)
    status, body, _ = server.request("POST", f"/v1/leads/{LEAD['id']}/export",
                                     {"integrationId": "0123456789abcdef01234567"})
    assert status == 404
    assert "No connected integrations found" in body["error"]["message"]
    assert "POST /v1/integrations" in body["error"]["message"]

    integration = create_integration(server, make_recorder().url)
    cases = [
        ("lead-1", {"integrationId": "0123456789abcdef01234567"}, 404,
         "0123456789abcdef01234567"),
        ("no-such-lead", {"integrationId": integration["id"]}, 404, "no-such-lead"),
        ("lead-1", {"integrationId": integration["id"], "campaignId": "no-such-campaign"}, 404,
         "no-such-campaign"),
        ("lead-1", {}, 422, "integrationId"),
        ("lead-1", {"integrationId": integration["id"], "priority": 1}, 422, "priority"),
        ("lead-1", {"integrationId": 7}, 400, "integrationId"),
    ]
    for lead_id, request, expected_status, named in cases:
        status, body, _ = server.request("POST", f"/v1/leads/{lead_id}/export", request)
        assert status == expected_status, (lead_id, request, body)
        assert named in body["error"]["message"], (lead_id, request, body)
    stats = server.ok("GET", f"/v1/integrations/{integration['id']}")["stats"]
    assert stats["delivered"] == 0
    assert stats["failed"] == 0


def test_other_users_ids_answer_404(server, make_recorder):
    recorder = make_recorder()
    integration = setup_mapped(server, recorder)
    other_key = second_user_key(server)
    status, other_integration, _ = server.request(
        "POST", "/v1/integrations", {"name": "Theirs", "url": recorder.url, "events": ALL_EVENTS},
        key=other_key)
    assert status == 201
    path = mapping_path(CAMPAIGN["id"], integration["id"])

    for method, url, body in (
            ("PATCH", path, {"active": False}),
            ("DELETE", path, None),
            ("POST", f"/v1/leads/{LEAD['id']}/export", {"integrationId": integration["id"]}),
            ("POST", f"/v1/leads/{LEAD['id']}/export",
             {"integrationId": other_integration["id"]})):
        status, answer, _ = server.request(method, url, body, key=other_key)
        assert status == 404, (method, url, body)
        assert answer["error"]["code"] == "not_found"

    # The owner's lead with the other user's integration: not found either.
    status, answer, _ = server.request("POST", f"/v1/leads/{LEAD['id']}/export",
                                       {"integrationId": other_integration["id"]})
    assert status == 404
    assert other_integration["id"] in answer["error"]["message"]
    listed = server.ok("GET", f"/v1/campaigns/{CAMPAIGN['id']}/integrations")["data"]
    assert listed[0]["active"] is True
    time.sleep(0.2)
    assert recorder.count() == 0
