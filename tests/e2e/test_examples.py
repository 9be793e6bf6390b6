"""The signature verification example in docs/ compiles and verifies a real delivery."""
import os
import subprocess

from conftest import ROOT
from test_delivery import CAMPAIGN, connect, create_integration, post_event, setup_campaign


def test_c_example_verifies_delivery(server, make_recorder, tmp_path):
    program = tmp_path / "verify_signature"
    subprocess.run(["cc", "-Wall", "-Wextra", "-Werror", "-o", str(program),
                    os.path.join(ROOT, "docs", "examples", "verify_signature.c"), "-lcrypto"],
                   check=True)
    recorder = make_recorder()
    integration = create_integration(server, recorder.url)
    setup_campaign(server)
    connect(server, CAMPAIGN["id"], integration["id"])

    post_event(server, lead={"id": "lead-c", "firstName": "Zoë 🚀"})
    recorder.wait_count(1)
    record = recorder.requests[0]
    signature = dict((k.lower(), v) for k, v in record["headers"])["x-bearconnect-signature"]
    body = tmp_path / "body.json"
    body.write_bytes(record["body"])

    valid = subprocess.run([str(program), integration["secret"], signature, str(body)],
                           capture_output=True, text=True)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout == "valid\n"

    body.write_bytes(record["body"] + b"\n")
    invalid = subprocess.run([str(program), integration["secret"], signature, str(body)],
                             capture_output=True, text=True)
    assert invalid.returncode == 1
    assert invalid.stdout == "invalid\n"
