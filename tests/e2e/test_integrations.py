"""End to end: editing webhooks, revealing and rotating their secrets, over real sockets."""
import hashlib
import hmac
import subprocess

import pytest

from conftest import BEARHOOK_BIN, LOCAL_TARGET_ARGS

ALL_EVENTS = ["connection_request_sent", "connection_request_accepted", "message_sent",
              "message_replied"]
LEAD = {"id": "lead-1", "firstName": "Jane", "lastName": "Smith"}
DISABLED = "Signature verification is disabled."


def sign(secret, body):
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def create(server, url="https://hooks.example.com/bearconnect", **fields):
    body = {"name": "CRM Sync", "url": url, "events": ALL_EVENTS}
    body.update(fields)
    return server.ok("POST", "/v1/integrations", body)


def connect(server, campaign_id, integration_id, events=None):
    server.ok("PUT", f"/v1/campaigns/{campaign_id}", {"name": f"Campaign {campaign_id}"})
    body = {"integrationId": integration_id}
    if events is not None:
        body["events"] = events
    return server.ok("POST", f"/v1/campaigns/{campaign_id}/integrations", body)


def mapping_events(server, campaign_id, integration_id):
    mappings = server.ok("GET", f"/v1/campaigns/{campaign_id}/integrations")["data"]
    return [m["events"] for m in mappings if m["integrationId"] == integration_id][0]


def post_event(server, campaign_id, event_type="connection_request_accepted"):
    return server.ok("POST", "/v1/events",
                     {"type": event_type, "campaignId": campaign_id, "lead": LEAD},
                     expect=(202,))


def header(request, name):
    values = [value for key, value in request["headers"] if key.lower() == name.lower()]
    return values[0] if values else None


def second_user_key(server):
    output = subprocess.run([BEARHOOK_BIN, "user", "create", "second", "--db", server.db],
                            capture_output=True, text=True, check=True).stdout
    return output.strip().splitlines()[-1]


def test_patch_edits_settings(server):
    created = create(server)
    changes = {"name": "CRM Sync v2", "url": "https://crm.example.com/hooks/v2",
               "events": ["message_replied"], "headers": {"X-Token": "abc"},
               "maxRetries": 5, "timeoutMs": 10000}
    updated = server.ok("PATCH", f"/v1/integrations/{created['id']}", changes)
    for key, value in changes.items():
        assert updated[key] == value, key
    assert updated["signing"] is True
    assert "secret" not in updated
    assert updated["mappingsChanged"] == []
    assert updated["createdAt"] == created["createdAt"]
    assert updated["updatedAt"] > created["updatedAt"]

    fetched = server.ok("GET", f"/v1/integrations/{created['id']}")
    for key, value in changes.items():
        assert fetched[key] == value, key
    assert fetched["updatedAt"] == updated["updatedAt"]
    assert server.ok("GET", f"/v1/integrations/{created['id']}/secret")["secret"] == \
        created["secret"]


@pytest.mark.parametrize("changes, field", [
    ({"maxRetries": 0}, "maxRetries"),
    ({"maxRetries": 6}, "maxRetries"),
    ({"timeoutMs": 4999}, "timeoutMs"),
    ({"name": ""}, "name"),
    ({"url": "not a url"}, "url"),
    ({"url": "https://10.1.2.3/hook"}, "url"),
    ({"events": []}, "events"),
    ({"events": ["lead_exploded"]}, "events"),
    ({"headers": {"X-Bearconnect-Signature": "forged"}}, "headers"),
    ({"name": "Renamed", "nickname": "extra"}, "nickname"),
    ({"signing": False, "maxRetries": 9}, "maxRetries"),
])
def test_patch_invalid_changes_nothing(server, changes, field):
    created = create(server)
    before = server.ok("GET", f"/v1/integrations/{created['id']}")
    status, body, _ = server.request("PATCH", f"/v1/integrations/{created['id']}", changes)
    assert status == 422, body
    assert body["error"]["field"].startswith(field)
    assert body["error"]["message"]
    assert server.ok("GET", f"/v1/integrations/{created['id']}") == before


def test_patch_wrong_type_and_unknown_id(server):
    created = create(server)
    status, body, _ = server.request("PATCH", f"/v1/integrations/{created['id']}",
                                     {"signing": "no"})
    assert status == 400, body
    assert body["error"]["field"] == "signing"
    status, body, _ = server.request("PATCH", "/v1/integrations/0123456789abcdef01234567",
                                     {"name": "x"})
    assert status == 404, body


def test_shrinking_events_edits_mappings(server):
    created = create(server)
    connect(server, "c1", created["id"])
    connect(server, "c2", created["id"], ["message_sent"])
    connect(server, "c3", created["id"], ["connection_request_accepted"])

    updated = server.ok("PATCH", f"/v1/integrations/{created['id']}",
                        {"events": ["connection_request_accepted", "message_replied"]})
    assert updated["events"] == ["connection_request_accepted", "message_replied"]
    assert updated["mappingsChanged"] == [
        {"campaignId": "c1", "events": ["connection_request_accepted", "message_replied"]},
        {"campaignId": "c2", "events": []},
    ]
    assert mapping_events(server, "c1", created["id"]) == \
        ["connection_request_accepted", "message_replied"]
    assert mapping_events(server, "c2", created["id"]) == []
    assert mapping_events(server, "c3", created["id"]) == ["connection_request_accepted"]

    # A mapping left with no events stays and delivers nothing.
    assert post_event(server, "c2", "message_sent")["deliveries"] == []
    assert post_event(server, "c2", "message_replied")["deliveries"] == []
    assert len(post_event(server, "c1", "message_replied")["deliveries"]) == 1

    # Growing the events again does not give mappings back what they lost.
    again = server.ok("PATCH", f"/v1/integrations/{created['id']}", {"events": ALL_EVENTS})
    assert again["mappingsChanged"] == []
    assert mapping_events(server, "c2", created["id"]) == []


def test_signing_off_and_on(server, make_recorder):
    recorder = make_recorder()
    created = create(server, recorder.url)
    connect(server, "c1", created["id"])

    off = server.ok("PATCH", f"/v1/integrations/{created['id']}", {"signing": False})
    assert off["signing"] is False
    assert off["signatureVerification"] == DISABLED
    assert "secret" not in off
    detail = server.ok("GET", f"/v1/integrations/{created['id']}")
    assert detail["signatureVerification"] == DISABLED
    for method, path in (("GET", "secret"), ("POST", "secret/rotate")):
        status, body, _ = server.request(method, f"/v1/integrations/{created['id']}/{path}")
        assert status == 409, body
        assert "signing" in body["error"]["message"]

    delivery_id = post_event(server, "c1")["deliveries"][0]["id"]
    server.wait_delivery(delivery_id, ("succeeded",))
    unsigned = recorder.requests[0]
    assert not [key for key, _ in unsigned["headers"] if key.lower().startswith("x-bearconnect-")]
    assert header(unsigned, "X-Webhook-Id") == created["id"]

    on = server.ok("PATCH", f"/v1/integrations/{created['id']}", {"signing": True})
    assert on["signatureVerification"] is None
    assert on["secret"].startswith("whsec_")
    assert on["secret"] != created["secret"]
    assert on["updatedAt"] > off["updatedAt"]
    assert "secret" not in server.ok("GET", f"/v1/integrations/{created['id']}")

    delivery_id = post_event(server, "c1")["deliveries"][0]["id"]
    server.wait_delivery(delivery_id, ("succeeded",))
    signed = recorder.requests[1]
    assert header(signed, "X-Bearconnect-Signature") == sign(on["secret"], signed["body"])
    assert header(signed, "X-Bearconnect-Timestamp")


def test_secret_reveal_and_rotate(server):
    created = create(server)
    path = f"/v1/integrations/{created['id']}/secret"
    assert server.ok("GET", path) == {"secret": created["secret"]}

    rotated = server.ok("POST", f"{path}/rotate")
    assert set(rotated) == {"secret"}
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    assert server.ok("GET", path) == rotated
    assert rotated["secret"] not in server.log()
    detail = server.ok("GET", f"/v1/integrations/{created['id']}")
    assert detail["updatedAt"] > created["updatedAt"]


def test_rotation_signs_pending_retry(start_server, make_recorder):
    # The first retry waits 1.2 to 1.8 s: time enough to rotate while it is pending.
    server = start_server(LOCAL_TARGET_ARGS + ["--retry-base-ms", "1500",
                                               "--retry-max-ms", "3000"])
    recorder = make_recorder([(500, 0, {}), (200, 0, {})])
    created = create(server, recorder.url)
    connect(server, "c1", created["id"])

    delivery_id = post_event(server, "c1")["deliveries"][0]["id"]
    recorder.wait_count(1)
    rotated = server.ok("POST", f"/v1/integrations/{created['id']}/secret/rotate")
    assert server.delivery(delivery_id)["status"] == "pending"
    recorder.wait_count(2)
    server.wait_delivery(delivery_id, ("succeeded",))

    first, retry = recorder.requests[0], recorder.requests[1]
    assert first["body"] == retry["body"]
    assert header(first, "X-Bearconnect-Signature") == sign(created["secret"], first["body"])
    signature = header(retry, "X-Bearconnect-Signature")
    assert signature == sign(rotated["secret"], retry["body"])
    assert signature != sign(created["secret"], retry["body"])


def test_detail_groups_events_by_category(server):
    created = create(server, events=["message_replied", "connection_request_sent",
                                     "message_sent"])
    labels = {t["type"]: t["label"] for t in server.ok("GET", "/v1/event-types")["data"]}
    detail = server.ok("GET", f"/v1/integrations/{created['id']}")
    assert detail["eventsByCategory"] == [
        {"category": "Connection Events",
         "events": [{"type": "connection_request_sent",
                     "label": labels["connection_request_sent"]}]},
        {"category": "Message Events",
         "events": [{"type": "message_sent", "label": labels["message_sent"]},
                    {"type": "message_replied", "label": labels["message_replied"]}]},
    ]
    keys = list(detail)
    assert keys[keys.index("events") + 1] == "eventsByCategory"

    updated = server.ok("PATCH", f"/v1/integrations/{created['id']}",
                        {"events": ["connection_request_accepted"]})
    assert updated["eventsByCategory"] == [
        {"category": "Connection Events",
         "events": [{"type": "connection_request_accepted",
                     "label": labels["connection_request_accepted"]}]}]


def test_other_users_integrations_answer_404(server):
    other_key = second_user_key(server)
    created = create(server)
    before = server.ok("GET", f"/v1/integrations/{created['id']}")
    for method, suffix, body in (("PATCH", "", {"name": "Taken"}), ("GET", "/secret", None),
                                 ("POST", "/secret/rotate", None)):
        status, answer, _ = server.request(method, f"/v1/integrations/{created['id']}{suffix}",
                                           body, key=other_key)
        assert status == 404, (method, suffix, answer)
        assert answer["error"]["code"] == "not_found"
    assert server.ok("GET", f"/v1/integrations/{created['id']}") == before
    assert server.ok("GET", f"/v1/integrations/{created['id']}/secret")["secret"] == \
        created["secret"]
