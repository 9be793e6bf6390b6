"""End to end: deliveries carry Standard Webhooks headers that the standardwebhooks npm package
verifies, with a webhook-id that stays the same across retries."""
import base64
import http.client
import json
import os
import subprocess

import pytest

from conftest import ROOT, wait_for
from test_delivery import (CAMPAIGN, compact, connect, create_integration, free_port,
                           post_event, setup_campaign)

NODE_DIR = os.path.join(ROOT, "tests", "e2e", "node")


@pytest.fixture
def start_receiver(tmp_path):
    """Starts standard_receiver.js on the given loopback port; returns its verdict file."""
    processes = []
    module = os.path.join(NODE_DIR, "node_modules", "standardwebhooks")
    assert os.path.isdir(module), (
        "the standardwebhooks package is missing: run `npm ci --no-audit --no-fund` in "
        "tests/e2e/node (scripts/run-tests does this)")

    def start(port, secret, fail_first=0):
        out = tmp_path / f"verdicts-{port}.jsonl"
        process = subprocess.Popen(
            ["node", "standard_receiver.js", "--port", str(port), "--secret", secret,
             "--out", str(out), "--fail-first", str(fail_first)],
            cwd=NODE_DIR, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().split() == ["PORT", str(port)]
        return out

    yield start
    for process in processes:
        process.kill()
        process.wait()


def read_verdicts(out):
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines()]


def post_raw(url, body, headers):
    """Sends one POST to a loopback receiver and returns the status."""
    host_port = url.split("/")[2]
    host, port = host_port.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("POST", "/webhook", body=body, headers=headers)
    status = connection.getresponse().status
    connection.close()
    return status


def connected_integration(server, url, **fields):
    integration = create_integration(server, url, **fields)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])
    return integration


def verified_setup(server, start_receiver, fail_first=0):
    """Creates an integration and then its receiver, which needs the integration's secret."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhook"
    integration = connected_integration(server, url)
    out = start_receiver(port, integration["secret"], fail_first)
    return url, out


def test_delivery_verifies_with_library(server, start_receiver):
    url, out = verified_setup(server, start_receiver)

    accepted = post_event(server)
    delivery_id = accepted["deliveries"][0]["id"]
    delivery = server.wait_delivery(delivery_id)
    verdicts = read_verdicts(out)

    assert delivery["status"] == "succeeded", delivery
    assert len(verdicts) == 1
    verdict = verdicts[0]
    assert verdict["valid"] is True, verdict["error"]
    headers = verdict["headers"]
    assert headers["webhook-id"] == delivery_id
    assert headers["webhook-timestamp"] == headers["x-bearconnect-timestamp"]
    assert headers["webhook-signature"].startswith("v1,")
    assert base64.b64decode(verdict["bodyBase64"]) == compact(delivery["payload"])


def test_webhook_id_stable_across_retries(server, start_receiver):
    url, out = verified_setup(server, start_receiver, fail_first=1)

    accepted = post_event(server)
    delivery_id = accepted["deliveries"][0]["id"]
    delivery = server.wait_delivery(delivery_id)
    verdicts = read_verdicts(out)

    assert delivery["status"] == "succeeded", delivery
    assert [attempt["httpStatus"] for attempt in delivery["attempts"]] == [500, 200]
    assert len(verdicts) == 2
    for verdict in verdicts:
        assert verdict["valid"] is True, verdict["error"]
        assert verdict["headers"]["webhook-id"] == delivery_id
    assert verdicts[0]["bodyBase64"] == verdicts[1]["bodyBase64"]


def test_tampered_request_fails_verification(server, start_receiver):
    url, out = verified_setup(server, start_receiver)

    accepted = post_event(server)
    delivery = server.wait_delivery(accepted["deliveries"][0]["id"])
    assert delivery["status"] == "succeeded", delivery
    original = read_verdicts(out)[0]
    assert original["valid"] is True, original["error"]
    body = base64.b64decode(original["bodyBase64"])
    standard = {name: original["headers"][name]
                for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    standard["Content-Type"] = "application/json"

    # The same headers on the same bytes verify again; one changed byte or id does not.
    assert post_raw(url, body, standard) == 200
    tampered_body = body.replace(b'"connection_request_accepted"', b'"connection_request_sent"')
    assert tampered_body != body
    assert post_raw(url, tampered_body, standard) == 401
    other_id = dict(standard, **{"webhook-id": "dlv_000000000000000000000000"})
    assert post_raw(url, body, other_id) == 401

    verdicts = wait_for(lambda: len(read_verdicts(out)) == 4 and read_verdicts(out),
                        message="4 verdicts")
    assert [verdict["valid"] for verdict in verdicts] == [True, True, False, False]
    assert verdicts[2]["error"] == "No matching signature found"
    assert verdicts[3]["error"] == "No matching signature found"


def test_unsigned_delivery_has_id_and_timestamp(server, make_recorder):
    recorder = make_recorder()
    integration = connected_integration(server, recorder.url, signing=False)

    accepted = post_event(server)
    delivery_id = accepted["deliveries"][0]["id"]
    delivery = server.wait_delivery(delivery_id)
    assert delivery["status"] == "succeeded", delivery
    assert integration["signing"] is False

    headers = {name.lower(): value for name, value in recorder.requests[0]["headers"]}
    assert headers["webhook-id"] == delivery_id
    assert abs(int(headers["webhook-timestamp"]) - int(recorder.requests[0]["time"])) <= 5
    assert "webhook-signature" not in headers
    assert "x-bearconnect-signature" not in headers
