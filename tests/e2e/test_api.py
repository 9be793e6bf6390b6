"""End to end: API input checks, authentication, users and start-up, over real sockets."""
import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import threading
import http.server

import pytest

from conftest import BEARHOOK_BIN, FAST_RETRY_ARGS, LOCAL_TARGET_ARGS

VALID = {"name": "CRM Sync", "url": "https://hooks.example.com/bearconnect",
         "events": ["connection_request_accepted"]}


def with_fields(**changes):
    body = dict(VALID)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def integration_count(server):
    return len(server.ok("GET", "/v1/integrations")["data"])


def test_first_start_creates_user_once(start_server, tmp_path):
    server = start_server()
    key_path = tmp_path / "api-key"
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    key = key_path.read_text().strip()
    assert key.startswith("bh_")
    output = open(server.stdout_path).read()
    assert output.count(key) == 1
    assert key not in server.log()
    # Only the key's hash is stored.
    for name in os.listdir(tmp_path):
        if name.startswith("bearhook.db"):
            assert key.encode() not in (tmp_path / name).read_bytes(), name
    server.stop()
    server.start()
    assert open(server.stdout_path).read().count("API key") == 1
    assert server.ok("GET", "/v1/event-types")["data"]


def test_integration_defaults_and_secret_shown_once(server):
    created = server.ok("POST", "/v1/integrations", with_fields())
    assert created["maxRetries"] == 3
    assert created["timeoutMs"] == 30000
    assert created["provider"] == "webhook"
    assert created["signing"] is True
    assert created["secret"].startswith("whsec_")
    assert created["status"] == "active"
    fetched = server.ok("GET", f"/v1/integrations/{created['id']}")
    assert "secret" not in fetched
    listed = server.ok("GET", "/v1/integrations")["data"]
    assert "secret" not in listed[0]
    assert created["secret"] not in server.log()


def test_signing_off_has_no_secret(server):
    created = server.ok("POST", "/v1/integrations", with_fields(signing=False))
    assert created["signing"] is False
    assert "secret" not in created or created["secret"] is None
    assert created["signatureVerification"] == "Signature verification is disabled."


@pytest.mark.parametrize("changes, field", [
    ({"maxRetries": 0}, "maxRetries"),
    ({"maxRetries": 6}, "maxRetries"),
    ({"timeoutMs": 4999}, "timeoutMs"),
    ({"timeoutMs": 60001}, "timeoutMs"),
    ({"name": ""}, "name"),
    ({"name": None}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"url": "not a url"}, "url"),
    ({"url": None}, "url"),
    ({"events": []}, "events"),
    ({"events": ["lead_exploded"]}, "events"),
    ({"provider": "hubspot"}, "provider"),
    ({"headers": {"X-Bad\nName": "v"}}, "headers"),
    ({"headers": {"X-Token": "a\r\nInjected: yes"}}, "headers"),
    ({"headers": {"X-Bearconnect-Signature": "forged"}}, "headers"),
    ({"headers": {"content-type": "text/plain"}}, "headers"),
    ({"nickname": "extra"}, "nickname"),
])
def test_invalid_integration_rejected(server, changes, field):
    status, body, _ = server.request("POST", "/v1/integrations", with_fields(**changes))
    assert status == 422, body
    assert body["error"]["code"] == "validation_failed"
    assert body["error"]["field"].startswith(field)
    assert body["error"]["message"]
    assert integration_count(server) == 0


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "https://2130706433/hook", "https://0x7f.1/hook",
    "https://10.1.2.3/hook", "https://169.254.169.254/latest", "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook", "https://100.64.0.1/hook",
])
def test_special_addresses_refused_by_default(start_server, url):
    server = start_server(FAST_RETRY_ARGS)
    status, body, _ = server.request("POST", "/v1/integrations", with_fields(url=url))
    assert status == 422, body
    assert body["error"]["field"] == "url"


def test_plain_http_needs_allow_http(start_server):
    server = start_server(["--allow-networks", "127.0.0.0/8"])
    status, body, _ = server.request("POST", "/v1/integrations",
                                     with_fields(url="http://127.0.0.1:9/hook"))
    assert status == 422
    assert "https://" in body["error"]["message"]


def test_malformed_json_names_position(server):
    status, body, _ = server.request("POST", "/v1/integrations", raw=b'{"name": "x",,}')
    assert status == 400
    assert body["error"]["code"] == "malformed_request"
    assert "line 1" in body["error"]["message"]
    assert "column" in body["error"]["message"]


def raw_exchange(server, head, body_parts):
    """Sends a raw request and returns the response's status line and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(head)
        try:
            for part in body_parts:
                connection.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may respond and close before the whole body is sent
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    return status_line.decode(), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_body_too_large_by_content_length(server):
    head = (f"POST /v1/integrations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.api_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2 << 20}\r\n\r\n").encode()
    status_line, body = raw_exchange(server, head, [b"x" * 65536])
    assert " 413 " in status_line
    assert body["error"]["code"] == "payload_too_large"
    assert integration_count(server) == 0


def test_body_too_large_when_chunked(server):
    head = (f"POST /v1/integrations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.api_key}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"x" * 65536
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 20 + [b"0\r\n\r\n"]
    status_line, body = raw_exchange(server, head, parts)
    assert " 413 " in status_line
    assert "1048576 bytes" in body["error"]["message"]
    assert integration_count(server) == 0


def test_missing_or_wrong_key(server):
    status, body, _ = server.request("GET", "/v1/integrations", key="bh_wrong")
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    status, _, _ = server.request("GET", "/healthz", key="bh_wrong")
    assert status == 200


def test_unknown_route_and_method(server):
    status, body, _ = server.request("GET", "/v1/nothing")
    assert status == 404
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("PATCH", "/v1/events", headers={"Authorization": f"Bearer {server.api_key}"})
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 405
    assert response.getheader("Allow") == "POST"
    assert body["error"]["code"] == "method_not_allowed"


def test_users_see_only_their_own(server):
    output = subprocess.run([BEARHOOK_BIN, "user", "create", "second", "--db", server.db],
                            capture_output=True, text=True, check=True).stdout
    other_key = output.strip().splitlines()[-1]
    assert other_key.startswith("bh_")
    created = server.ok("POST", "/v1/integrations", with_fields())
    server.ok("PUT", "/v1/campaigns/c1", {"name": "Mine"})
    server.ok("PUT", "/v1/leads/l1", {"firstName": "Mine"})
    server.ok("PUT", "/v1/linkedin-accounts/a1", {"email": "me@example.com"})

    for path in (f"/v1/integrations/{created['id']}", "/v1/campaigns/c1", "/v1/leads/l1",
                 "/v1/linkedin-accounts/a1", "/v1/campaigns/c1/integrations"):
        status, body, _ = server.request("GET", path, key=other_key)
        assert status == 404, path
    for field, value in (("leadId", "l1"), ("campaignId", "c1"), ("linkedInAccountId", "a1")):
        event = {"type": "message_sent", "lead": {"id": "theirs", "firstName": "B"}, field: value}
        if field == "leadId":
            del event["lead"]
        status, body, _ = server.request("POST", "/v1/events", event, key=other_key)
        assert status == 404, field
        assert body["error"]["field"] == field
    status, _, _ = server.request("DELETE", f"/v1/integrations/{created['id']}", key=other_key)
    assert status == 404
    status, body, _ = server.request("GET", "/v1/integrations", key=other_key)
    assert body["data"] == []
    assert integration_count(server) == 1


def test_mapping_events_must_be_allowed(server):
    created = server.ok("POST", "/v1/integrations",
                        with_fields(url="http://127.0.0.1:9/hook",
                                    events=["message_sent", "message_replied"]))
    server.ok("PUT", "/v1/campaigns/c1", {"name": "Q1"})
    status, body, _ = server.request("POST", "/v1/campaigns/c1/integrations",
                                     {"integrationId": created["id"],
                                      "events": ["connection_request_sent"]})
    assert status == 422
    assert body["error"]["field"].startswith("events")
    status, body, _ = server.request("POST", "/v1/campaigns/nope/integrations",
                                     {"integrationId": created["id"]})
    assert status == 404
    mapping = server.ok("POST", "/v1/campaigns/c1/integrations",
                        {"integrationId": created["id"]})
    assert mapping["events"] == ["message_sent", "message_replied"]
    status, _, _ = server.request("POST", "/v1/campaigns/c1/integrations",
                                  {"integrationId": created["id"]})
    assert status == 409


def test_event_input_checked_and_nothing_saved(server):
    cases = [
        ({"lead": {"id": "l1", "firstName": "A"}}, "type"),
        ({"type": "nope", "lead": {"id": "l1", "firstName": "A"}}, "type"),
        ({"type": "message_sent"}, "lead"),
        ({"type": "message_sent", "lead": {"id": "l1"}}, "lead.firstName"),
        ({"type": "message_sent", "lead": {"id": "l1", "firstName": "A", "age": 3}}, "lead.age"),
        ({"type": "message_sent", "leadId": "missing"}, "leadId"),
        ({"type": "message_sent", "lead": {"id": "l1", "firstName": "A"},
          "campaignId": "missing"}, "campaignId"),
        ({"type": "message_sent", "lead": {"id": "l1", "firstName": "A"},
          "occurredAt": "yesterday"}, "occurredAt"),
    ]
    for body, field in cases:
        status, answer, _ = server.request("POST", "/v1/events", body)
        assert status in (400, 404, 422), (body, answer)
        assert answer["error"]["field"] == field, (body, answer)
    assert server.ok("GET", "/v1/leads")["data"] == []


def test_record_upsert_merges(server):
    status, created, _ = server.request("PUT", "/v1/leads/l1",
                                        {"firstName": "Ana", "email": "ana@example.com"})
    assert status == 201
    updated = server.ok("PUT", "/v1/leads/l1", {"lastName": "Lima"})
    assert updated["email"] == "ana@example.com"
    assert updated["lastName"] == "Lima"
    cleared = server.ok("PUT", "/v1/leads/l1", {"email": None})
    assert cleared["email"] is None
    status, body, _ = server.request("PUT", "/v1/leads/l1", {"id": "other", "firstName": "B"})
    assert status == 422


def make_certificate(folder):
    key = os.path.join(folder, "key.pem")
    cert = os.path.join(folder, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    return cert, key


def test_https_receiver(start_server, tmp_path):
    cert, key = make_certificate(str(tmp_path))
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        server = start_server(["--allow-networks", "127.0.0.0/8", "--tls-ca-file", cert]
                              + FAST_RETRY_ARGS)
        url = f"https://127.0.0.1:{httpd.server_address[1]}/hook"
        created = server.ok("POST", "/v1/integrations", with_fields(url=url))
        server.ok("PUT", "/v1/campaigns/c1", {"name": "Q1"})
        server.ok("POST", "/v1/campaigns/c1/integrations", {"integrationId": created["id"]})
        accepted = server.ok("POST", "/v1/events", {
            "type": "connection_request_accepted", "campaignId": "c1",
            "lead": {"id": "l1", "firstName": "Ana"}}, expect=(202,))
        delivery = server.wait_delivery(accepted["deliveries"][0]["id"])
        assert delivery["status"] == "succeeded", delivery
        assert json.loads(received[0])["metadata"]["integrationId"] == created["id"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_record_list_pages(server):
    for name in ("a", "b", "c"):
        server.ok("PUT", f"/v1/campaigns/{name}", {"name": name.upper()})
    first = server.ok("GET", "/v1/campaigns?limit=2")
    assert [c["id"] for c in first["data"]] == ["a", "b"]
    assert first["nextAfter"] == "b"
    last = server.ok("GET", "/v1/campaigns?limit=2&after=b")
    assert [c["id"] for c in last["data"]] == ["c"]
    assert last["nextAfter"] is None
    exact = server.ok("GET", "/v1/campaigns?limit=3")
    assert exact["nextAfter"] is None
    status, body, _ = server.request("GET", "/v1/campaigns?limit=0")
    assert status == 422
    assert body["error"]["field"] == "limit"


def test_authorization_without_bearer_explained(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/v1/integrations", headers={"Authorization": server.api_key})
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 401
    assert "Bearer <API key>" in body["error"]["message"]


def test_openapi_document_served(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/openapi.json")
    response = connection.getresponse()
    document = json.loads(response.read())
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert document["openapi"] == "3.1.0"
    assert "/v1/events" in document["paths"]
