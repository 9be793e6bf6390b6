"""End to end: POST /v1/integrations/{id}/test sends the sample payload and reports the outcome."""
import http.server
import json
import socket
import ssl
import subprocess
import threading

from conftest import BEARHOOK_BIN
from test_api import make_certificate
from test_delivery import create_integration, headers_of, sign


def closed_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_success_reports_status(server, make_recorder):
    recorder = make_recorder([(201, 0, {})])
    integration = create_integration(server, recorder.url)

    outcome = server.ok("POST", f"/v1/integrations/{integration['id']}/test")

    assert outcome["success"] is True
    assert outcome["message"] == "Test successful"
    assert outcome["httpStatus"] == 201
    assert outcome["failure"] is None
    record = recorder.requests[0]
    payload = json.loads(record["body"])
    assert payload["event"] == "connection_request_accepted"
    assert payload["data"]["lead"]["firstName"] == "Jane"
    assert payload["data"]["lead"]["email"] == "jane.smith@example.com"
    assert payload["data"]["campaign"]["name"] == "Q1 Outreach"
    assert payload["metadata"]["integrationId"] == integration["id"]
    assert headers_of(record)["x-bearconnect-signature"] == sign(integration["secret"],
                                                                 record["body"])


def test_does_not_change_statistics(server, make_recorder):
    recorder = make_recorder([(500, 0, {})])
    integration = create_integration(server, recorder.url, maxRetries=3)

    outcome = server.ok("POST", f"/v1/integrations/{integration['id']}/test")

    assert outcome["success"] is False
    assert outcome["failure"] == "http_status"
    assert outcome["httpStatus"] == 500
    assert recorder.count() == 1  # one attempt, no retries
    detail = server.ok("GET", f"/v1/integrations/{integration['id']}")
    assert detail["stats"]["delivered"] == 0
    assert detail["stats"]["failed"] == 0
    assert detail["status"] == "active"
    delivery = server.delivery(outcome["deliveryId"])
    assert delivery["test"] is True
    assert delivery["status"] == "failed"
    status, body, _ = server.request("POST", f"/v1/deliveries/{outcome['deliveryId']}/redeliver")
    assert status == 409
    assert "test" in body["error"]["message"]


def test_connection_refused_named(server):
    integration = create_integration(server, f"http://127.0.0.1:{closed_port()}/hook",
                                     events=["message_sent"])

    outcome = server.ok("POST", f"/v1/integrations/{integration['id']}/test")

    assert outcome["success"] is False
    assert outcome["failure"] == "connection_refused"
    assert outcome["httpStatus"] is None


def test_timeout_named(server, make_recorder):
    recorder = make_recorder([(200, 7, {})])
    integration = create_integration(server, recorder.url, timeoutMs=5000)

    outcome = server.ok("POST", f"/v1/integrations/{integration['id']}/test")

    assert outcome["success"] is False
    assert outcome["failure"] == "timeout"
    assert "timed out" in outcome["message"]


def test_unknown_integration_not_found(server):
    status, body, _ = server.request("POST", "/v1/integrations/6b1300000000000000000000/test")
    assert status == 404
    assert body["error"]["field"] == "id"


def test_sample_uses_an_allowed_event(server, make_recorder):
    recorder = make_recorder()
    integration = create_integration(server, recorder.url, events=["message_replied"])

    outcome = server.ok("POST", f"/v1/integrations/{integration['id']}/test")

    assert outcome["success"] is True
    assert json.loads(recorder.requests[0]["body"])["event"] == "message_replied"


def test_other_users_integration_not_found(server, make_recorder):
    recorder = make_recorder()
    integration = create_integration(server, recorder.url)
    output = subprocess.run([BEARHOOK_BIN, "user", "create", "other", "--db", server.db],
                            capture_output=True, text=True, check=True).stdout
    other_key = output.strip().splitlines()[-1]

    status, _, _ = server.request("POST", f"/v1/integrations/{integration['id']}/test",
                                  key=other_key)

    assert status == 404
    assert recorder.count() == 0


def test_tls_failure_named(start_server, tmp_path):
    cert, key = make_certificate(str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        # No --tls-ca-file: the receiver's self-signed certificate is not trusted.
        server = start_server(["--allow-networks", "127.0.0.0/8"])
        integration = create_integration(server, f"https://127.0.0.1:{httpd.server_address[1]}/h")

        outcome = server.ok("POST", f"/v1/integrations/{integration['id']}/test")
    finally:
        httpd.shutdown()
        httpd.server_close()

    assert outcome["success"] is False
    assert outcome["failure"] == "tls_failure"
