"""End to end: `bearhook listen` and `bearhook verify` as a user runs them, and the Node.js and
Python receivers that verify signatures with the code bearhook documents for receivers.

The binary comes from BEARHOOK_BIN (default build-test/bearhook, relative to the repository).
Every process is started by a fixture that stops it by pid, and every wait is bounded.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECEIVERS = os.path.join(ROOT, "tests", "e2e", "receivers")
BEARHOOK_BIN = os.environ.get("BEARHOOK_BIN", "build-test/bearhook")
if not os.path.isabs(BEARHOOK_BIN):
    BEARHOOK_BIN = os.path.join(ROOT, BEARHOOK_BIN)

SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLWxpc3Rlbi1hbmQtdmVyaWZ5LXRlc3Rz"
WAIT_SECONDS = 10.0

PAYLOAD = {
    "event": "connection_request_accepted",
    "timestamp": "2026-02-13T10:30:00.000Z",
    "data": {
        "lead": {
            "id": "65abc123def4567890ghij01",
            "firstName": "Jane",
            "lastName": None,
            "connectionCount": 500,
            "isPremium": True,
            "score": 0.1,
            "tags": [],
        },
        "campaign": {"id": "65abc123def4567890ghij02", "name": "Q1 Outreach"},
    },
    "metadata": {"eventId": "evt_abc123def456", "integrationId": "65abc123def4567890ghij05"},
}
UNICODE_PAYLOAD = {
    "event": "message_replied",
    "data": {"lead": {"id": "lead-1", "firstName": "Zoë", "lastName": "Çelik-Müller",
                      "note": "Thanks 🎉😀", "location": "תל אביב"}},
}


def compact(value):
    """Serializes as bearhook does: no spaces, keys in order, UTF-8 unescaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret, body):
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def indented(value):
    """The two-space indented form that `bearhook listen` prints, as bytes."""
    return json.dumps(value, indent=2, ensure_ascii=False).encode("utf-8")


class Process:
    """A subprocess whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, args, **options):
        self.args = args
        self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, **options)
        self.stdout_lines = []
        self.stderr_lines = []
        self.condition = threading.Condition()
        self.readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.stdout_lines),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.stderr_lines),
                             daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, lines):
        for line in iter(stream.readline, b""):
            with self.condition:
                lines.append(line)
                self.condition.notify_all()
        with self.condition:
            self.condition.notify_all()

    @property
    def pid(self):
        return self.popen.pid

    def line_count(self):
        with self.condition:
            return len(self.stdout_lines)

    def wait_line(self, pattern, start=0, timeout=WAIT_SECONDS):
        """Returns the index of the first stdout line from start matching the bytes regex."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                for index in range(start, len(self.stdout_lines)):
                    if regex.search(self.stdout_lines[index]):
                        return index
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.popen.poll() is not None
                                      and not self.readers[0].is_alive()):
                    raise AssertionError(
                        f"no stdout line matched {pattern!r} within {timeout} s; "
                        f"stdout: {b''.join(self.stdout_lines)!r}; "
                        f"stderr: {b''.join(self.stderr_lines)!r}")
                self.condition.wait(min(remaining, 0.1))

    def lines(self, start, end):
        with self.condition:
            return list(self.stdout_lines[start:end])

    def stdout(self):
        with self.condition:
            return b"".join(self.stdout_lines)

    def stderr(self):
        with self.condition:
            return b"".join(self.stderr_lines)

    def finish(self, timeout=WAIT_SECONDS):
        """Waits for exit and for the readers to drain; returns the exit code."""
        code = self.popen.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=timeout)
        return code

    def stop(self):
        """Ends the process by pid: SIGTERM, then SIGKILL when it has not exited in time.

        Returns the exit code after SIGTERM, None when SIGKILL was needed, or the code it had
        already exited with.
        """
        code = self.popen.poll()
        if code is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                code = self.popen.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=WAIT_SECONDS)
        for reader in self.readers:
            reader.join(timeout=WAIT_SECONDS)
        return code


def assert_no_sanitizer_report(stderr):
    """Fails on an AddressSanitizer or UndefinedBehaviorSanitizer report in stderr."""
    assert b"Sanitizer" not in stderr, stderr.decode(errors="replace")
    assert b"runtime error:" not in stderr, stderr.decode(errors="replace")


@pytest.fixture
def spawn():
    """Starts processes and stops each of them, by pid, when the test ends."""
    if not os.access(BEARHOOK_BIN, os.X_OK):
        pytest.fail(f"{BEARHOOK_BIN} is not an executable; build it, or set BEARHOOK_BIN")
    started = []

    def start(args, **options):
        process = Process(args, **options)
        started.append(process)
        return process

    yield start
    # Every process is stopped before any check fails, so none outlives the test.
    codes = [process.stop() for process in started]
    for process, code in zip(started, codes):
        assert code in (0, 2), f"{process.args} exited with {code}: {process.stderr()!r}"
        assert_no_sanitizer_report(process.stderr())


class Listener:
    """A running `bearhook listen` and the port it printed."""

    def __init__(self, process):
        self.process = process
        index = process.wait_line(rb"^Listening on http://(127\.\d+\.\d+\.\d+|\[::1\]):\d+/$")
        line = process.lines(index, index + 1)[0]
        match = re.search(rb"http://\[?([^\]/]+?)\]?:(\d+)/$", line.strip())
        self.start_line = line
        self.host = match.group(1).decode()
        self.port = int(match.group(2))

    def post(self, body, headers=None, path="/webhook", timeout=WAIT_SECONDS):
        """Sends a POST; returns (status, response body, seconds until the response)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        started = time.monotonic()
        try:
            connection.request("POST", path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        return response.status, data, time.monotonic() - started

    def post_and_read_block(self, body, headers=None, path="/webhook"):
        """Sends a POST and returns its status, response body and printed block (lines)."""
        start = self.process.line_count()
        status, data, _ = self.post(body, headers, path)
        end = self.process.wait_line(rb"^Signature: ", start)
        return status, data, self.process.lines(start, end + 1)


@pytest.fixture
def listen(spawn):
    def start(*args):
        return Listener(spawn([BEARHOOK_BIN, "listen", "--port", "0"] + list(args)))

    return start


def bearhook_headers(body, secret=SECRET, signature=None):
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Bearconnect-Webhook/1.0",
        "X-Webhook-Id": "65abc123def4567890ghij05",
        "X-Bearconnect-Timestamp": "1770978600",
    }
    if secret is not None or signature is not None:
        headers["X-Bearconnect-Signature"] = signature or sign(secret, body)
    return headers


def printed_body(block):
    """Returns the bytes between the blank line after the headers and the verdict's blank line."""
    separator = block.index(b"\n")
    return b"".join(block[separator + 1:-2]).rstrip(b"\n")


# ---- bearhook listen ----


def test_listen_prints_valid_delivery(listen):
    listener = listen("--secret", SECRET)
    body = compact(PAYLOAD)
    headers = bearhook_headers(body)
    headers["X-Custom-Trace"] = "trace-42"

    status, data, block = listener.post_and_read_block(body, headers, path="/hooks/crm?a=1")

    assert status == 200
    assert json.loads(data)["received"] is True
    assert re.match(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z POST /hooks/crm\?a=1 "
                    + str(len(body)).encode() + rb" bytes\n$", block[0]), block[0]
    for name, value in headers.items():
        assert f"{name}: {value}\n".encode() in block, name
    assert printed_body(block) == indented(PAYLOAD)
    assert block[-1] == b"Signature: valid\n"


def test_listen_saves_raw_body_for_verify(listen, tmp_path):
    listener = listen("--secret", SECRET, "--save-dir", str(tmp_path))
    body = compact({"name": "Zoë 🚀", "lead": {"id": "l1"}})

    start = listener.process.line_count()
    status, _, _ = listener.post(body, bearhook_headers(body))
    end = listener.process.wait_line(rb"^Saved the raw body to ", start)
    saved_line = listener.process.lines(end, end + 1)[0]

    assert status == 200
    path = saved_line.decode().split("Saved the raw body to ", 1)[1].strip()
    assert path == str(tmp_path / "000001.body")
    with open(path, "rb") as saved:
        assert saved.read() == body
    result = run_verify(["--secret", SECRET, "--signature", sign(SECRET, body), path])
    assert result.returncode == 0, result.stdout


def test_listen_creates_save_dir(listen, tmp_path):
    folder = tmp_path / "new" / "bodies"
    listener = listen("--secret", SECRET, "--save-dir", str(folder))
    body = compact({"lead": {"id": "l1"}})

    status, _, _ = listener.post(body, bearhook_headers(body))

    assert status == 200
    assert folder.is_dir()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    with open(folder / "000001.body", "rb") as saved:
        assert saved.read() == body


def test_listen_rejects_unusable_save_dir(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")

    result = subprocess.run([BEARHOOK_BIN, "listen", "--port", "0", "--save-dir",
                             str(not_a_folder / "bodies")],
                            capture_output=True, timeout=WAIT_SECONDS)

    assert result.returncode == 2
    assert f'could not use --save-dir "{not_a_folder / "bodies"}": Not a directory'.encode() \
        in result.stderr
    assert b"Listening" not in result.stdout


def test_listen_reports_invalid_signature(listen):
    listener = listen("--secret", SECRET)
    body = compact(PAYLOAD)
    headers = bearhook_headers(body, secret="whsec_someoneelse")

    status, _, block = listener.post_and_read_block(body, headers)

    assert status == 200
    assert block[-1] == f"Signature: INVALID (expected {sign(SECRET, body)})\n".encode()


def test_listen_reports_missing_signature(listen):
    listener = listen("--secret", SECRET)
    body = compact(PAYLOAD)

    _, _, block = listener.post_and_read_block(body, bearhook_headers(body, secret=None))

    assert block[-1] == b"Signature: missing (no X-Bearconnect-Signature header)\n"


def test_listen_without_secret_not_checked(listen):
    listener = listen()
    body = compact(PAYLOAD)

    status, _, block = listener.post_and_read_block(body, bearhook_headers(body))

    assert status == 200
    assert block[-1] == b"Signature: not checked (start with --secret to check)\n"


def test_listen_prints_text_body(listen):
    listener = listen("--secret", SECRET)
    body = b"name=Jane&stage=connected"
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Bearconnect-Signature": sign(SECRET, body)}

    _, _, block = listener.post_and_read_block(body, headers)

    assert body + b"\n" in block
    assert any(line.startswith(b"(not JSON") for line in block)
    assert block[-1] == b"Signature: valid\n"


def test_listen_prints_utf8_as_is(listen):
    listener = listen("--secret", SECRET)
    body = compact(UNICODE_PAYLOAD)

    _, _, block = listener.post_and_read_block(body, bearhook_headers(body))

    printed = printed_body(block)
    assert printed == indented(UNICODE_PAYLOAD)
    for text in ["Zoë", "Çelik-Müller", "Thanks 🎉😀", "תל אביב"]:
        assert text.encode("utf-8") in printed, text
    assert b"\\u" not in printed
    assert block[-1] == b"Signature: valid\n"


def test_listen_responds_with_status(listen):
    listener = listen("--status", "503")
    body = compact(PAYLOAD)

    status, data, _ = listener.post_and_read_block(body, bearhook_headers(body))

    assert status == 503
    assert json.loads(data)["received"] is True


def test_listen_delays_response(listen):
    listener = listen("--delay-ms", "300")
    body = compact(PAYLOAD)

    status, _, elapsed = listener.post(body, bearhook_headers(body))

    assert status == 200
    assert elapsed >= 0.29


def test_listen_delays_requests_concurrently(listen):
    listener = listen("--delay-ms", "600", "--quiet")
    body = compact(PAYLOAD)
    results = []

    def send():
        results.append(listener.post(body, bearhook_headers(body)))

    started = time.monotonic()
    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_SECONDS)
    elapsed = time.monotonic() - started

    assert [result[0] for result in results] == [200, 200, 200]
    # One at a time would take at least 1.8 s.
    assert elapsed < 1.5


def test_listen_rejects_large_body(listen):
    listener = listen("--max-body-bytes", "1000")
    small = b"x" * 1000
    large = b"x" * 1001

    large_status, large_data, _ = listener.post(large, {"Content-Type": "text/plain"})
    small_status, _, _ = listener.post(small, {"Content-Type": "text/plain"})

    assert large_status == 413
    assert b"max-body-bytes" in large_data
    assert small_status == 200
    listener.process.wait_line(rb"1001 bytes: over --max-body-bytes 1000, responded 413")


def test_listen_rejects_announced_large_body(listen):
    listener = listen("--max-body-bytes", "1000")
    request = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n")

    with socket.create_connection(("127.0.0.1", listener.port), timeout=WAIT_SECONDS) as client:
        client.sendall(request)
        response = client.recv(4096)

    assert response.startswith(b"HTTP/1.1 413 ")


def test_listen_rejects_chunked_large_body(listen):
    listener = listen("--max-body-bytes", "1000")
    chunks = iter([b"x" * 600, b"y" * 600])

    connection = http.client.HTTPConnection("127.0.0.1", listener.port, timeout=WAIT_SECONDS)
    try:
        connection.request("POST", "/webhook", body=chunks, encode_chunked=True,
                           headers={"Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()

    assert response.status == 413


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host, printed", [("127.0.0.2", "127.0.0.2"),
                                           ("localhost", "127.0.0.1"),
                                           ("::1", "[::1]"), ("[::1]", "[::1]")])
def test_listen_accepts_loopback_host(listen, host, printed):
    if ":" in host and not ipv6_loopback_available():
        pytest.skip("this machine has no IPv6 loopback")
    listener = listen("--host", host, "--secret", SECRET)
    body = compact(PAYLOAD)

    status, _, block = listener.post_and_read_block(body, bearhook_headers(body))

    assert listener.start_line.startswith(f"Listening on http://{printed}:".encode())
    assert status == 200
    assert block[-1] == b"Signature: valid\n"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "[::]"])
def test_listen_rejects_non_loopback_host(spawn, host):
    process = spawn([BEARHOOK_BIN, "listen", "--port", "0", "--host", host])

    code = process.finish()

    assert code == 2
    assert b"Listening" not in process.stdout()
    assert b"not a loopback address" in process.stderr()


def test_listen_rejects_host_name(spawn):
    process = spawn([BEARHOOK_BIN, "listen", "--port", "0", "--host", "example.com"])

    code = process.finish()

    assert code == 2
    assert b"not an IP address" in process.stderr()
    assert b"Listening" not in process.stdout()


@pytest.mark.parametrize("args", [[], ["--port", "0", "--status", "99"],
                                  ["--port", "0", "--delay-ms", "120001"],
                                  ["--port", "70000"], ["--port", "0", "extra"]],
                         ids=["no-port", "status", "delay", "port-range", "positional"])
def test_listen_usage_errors(spawn, args):
    process = spawn([BEARHOOK_BIN, "listen"] + args)

    code = process.finish()

    assert code == 2
    assert process.stderr().startswith(b"bearhook listen: ")
    assert process.stdout() == b""


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_listen_quiet_prints_summary(listen, signal_number):
    listener = listen("--secret", SECRET, "--quiet")
    body = compact(PAYLOAD)

    valid_status, _, _ = listener.post(body, bearhook_headers(body))
    invalid_status, _, _ = listener.post(body, bearhook_headers(body, secret="whsec_other"))
    missing_status, _, _ = listener.post(body, bearhook_headers(body, secret=None))
    os.kill(listener.process.pid, signal_number)
    code = listener.process.finish()

    assert [valid_status, invalid_status, missing_status] == [200, 200, 200]
    assert code == 0
    assert listener.process.stdout() == (
        listener.start_line + b"Received 3 deliveries (1 with valid signatures)\n")


def test_listen_stops_during_delay(listen):
    listener = listen("--delay-ms", "120000")
    body = compact(PAYLOAD)
    results = []

    sender = threading.Thread(target=lambda: results.append(
        listener.post(body, bearhook_headers(body), timeout=30)))
    sender.start()
    listener.process.wait_line(rb"^Signature: ")
    stopped = time.monotonic()
    os.kill(listener.process.pid, signal.SIGTERM)
    code = listener.process.finish(timeout=WAIT_SECONDS)
    sender.join(timeout=WAIT_SECONDS)

    assert code == 0
    assert time.monotonic() - stopped < 5
    assert results and results[0][0] == 200
    listener.process.wait_line(rb"^Received 1 deliveries \(0 with valid signatures\)$")


def test_listen_stops_with_idle_connection(listen):
    listener = listen()
    body = compact(PAYLOAD)

    connection = http.client.HTTPConnection("127.0.0.1", listener.port, timeout=WAIT_SECONDS)
    try:
        connection.request("POST", "/webhook", body=body, headers=bearhook_headers(body))
        response = connection.getresponse()
        response.read()
        stopped = time.monotonic()
        os.kill(listener.process.pid, signal.SIGTERM)
        code = listener.process.finish(timeout=WAIT_SECONDS)
    finally:
        connection.close()

    assert response.status == 200
    assert code == 0
    assert time.monotonic() - stopped < 5


# ---- bearhook verify ----


def run_verify(args, stdin=None, timeout=WAIT_SECONDS):
    if not os.access(BEARHOOK_BIN, os.X_OK):
        pytest.fail(f"{BEARHOOK_BIN} is not an executable; build it, or set BEARHOOK_BIN")
    result = subprocess.run([BEARHOOK_BIN, "verify"] + args, input=stdin, capture_output=True,
                            timeout=timeout)
    assert_no_sanitizer_report(result.stderr)
    return result


@pytest.fixture
def body_file(tmp_path):
    def write(content, name="body.json"):
        path = tmp_path / name
        path.write_bytes(content)
        return str(path)

    return write


def test_verify_valid_body(body_file):
    body = compact(PAYLOAD)

    result = run_verify(["--secret", SECRET, "--signature", sign(SECRET, body), body_file(body)])

    assert result.returncode == 0
    assert result.stdout == b"Signature valid.\n"


def test_verify_valid_unicode_body(body_file):
    body = compact(UNICODE_PAYLOAD)

    result = run_verify(["--secret", SECRET, "--signature", sign(SECRET, body), body_file(body)])

    assert result.returncode == 0
    assert result.stdout == b"Signature valid.\n"


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\n\n"], ids=["LF", "CRLF", "two-LF"])
def test_verify_trailing_newline(body_file, ending):
    body = compact(PAYLOAD)

    result = run_verify(["--secret", SECRET, "--signature", sign(SECRET, body),
                         body_file(body + ending)])

    assert result.returncode == 1
    assert b"the file ends with a newline that is not part of the signed body" in result.stdout
    assert b"save the raw request body exactly as received" in result.stdout


def test_verify_reformatted_json(body_file):
    body = compact(UNICODE_PAYLOAD)
    reformatted = json.dumps(UNICODE_PAYLOAD, indent=4).encode()

    result = run_verify(["--secret", SECRET, "--signature", sign(SECRET, body),
                         body_file(reformatted)])

    assert result.returncode == 1
    assert b"the body was reformatted; verify against the raw bytes" in result.stdout


def test_verify_wrong_secret(body_file):
    body = compact(PAYLOAD)

    result = run_verify(["--secret", "whsec_regenerated", "--signature", sign(SECRET, body),
                         body_file(body)])

    assert result.returncode == 1
    assert b"the body or the secret differs from what was signed" in result.stdout
    assert b"a regenerated secret invalidates the old one" in result.stdout
    assert sign("whsec_regenerated", body).encode() in result.stdout


def test_verify_secret_without_prefix(body_file):
    body = compact(PAYLOAD)
    bare = SECRET[len("whsec_"):]

    result = run_verify(["--secret", bare, "--signature", sign(SECRET, body), body_file(body)])

    assert result.returncode == 1
    assert b"use the whole secret, including its whsec_ prefix" in result.stdout


def test_verify_secret_with_whitespace(body_file):
    body = compact(PAYLOAD)

    result = run_verify(["--secret", SECRET + "\n", "--signature", sign(SECRET, body),
                         body_file(body)])

    assert result.returncode == 1
    assert b"the secret has whitespace around it" in result.stdout


def test_verify_newline_and_missing_prefix(body_file):
    body = compact(PAYLOAD)
    bare = SECRET[len("whsec_"):]

    result = run_verify(["--secret", bare, "--signature", sign(SECRET, body),
                         body_file(body + b"\n")])

    assert result.returncode == 1
    assert b"the file ends with a newline" in result.stdout
    assert b"including its whsec_ prefix" in result.stdout


def test_verify_uppercase_signature(body_file):
    body = compact(PAYLOAD)

    result = run_verify(["--secret", SECRET, "--signature", sign(SECRET, body).upper(),
                         body_file(body)])

    assert result.returncode == 0
    assert result.stdout.startswith(b"Signature valid.\n")
    assert b"bearhook sends lowercase" in result.stdout


@pytest.mark.parametrize("signature, explanation", [
    ("abc123", b"it is 6 characters long"),
    ("g" * 64, b"character 1 ('g') is not a hex digit"),
    ("0" * 63 + "z", b"character 64 ('z') is not a hex digit"),
    (base64.b64encode(bytes(32)).decode(), b"It looks like base64"),
], ids=["short", "non-hex", "last-non-hex", "base64"])
def test_verify_malformed_signature(body_file, signature, explanation):
    result = run_verify(["--secret", SECRET, "--signature", signature,
                         body_file(compact(PAYLOAD))])

    assert result.returncode == 1
    assert result.stdout.startswith(b"Signature invalid: ")
    assert explanation in result.stdout


@pytest.mark.parametrize("prefix", ["sha256=", "v1,"])
def test_verify_prefixed_signature(body_file, prefix):
    body = compact(PAYLOAD)

    result = run_verify(["--secret", SECRET, "--signature", prefix + sign(SECRET, body),
                         body_file(body)])

    assert result.returncode == 1
    assert f'it starts with "{prefix}"'.encode() in result.stdout
    assert b"Without the prefix, the signature matches" in result.stdout


def test_verify_reads_stdin():
    body = compact(UNICODE_PAYLOAD)

    valid = run_verify(["--secret", SECRET, "--signature", sign(SECRET, body), "-"], stdin=body)
    newline = run_verify(["--secret", SECRET, "--signature", sign(SECRET, body), "-"],
                         stdin=body + b"\n")

    assert valid.returncode == 0
    assert valid.stdout == b"Signature valid.\n"
    assert newline.returncode == 1
    assert b"the file ends with a newline" in newline.stdout


def test_verify_empty_body(body_file):
    result = run_verify(["--secret", SECRET, "--signature", sign(SECRET, b""), body_file(b"")])

    assert result.returncode == 0
    assert result.stdout == b"Signature valid.\n"


@pytest.mark.parametrize("args", [
    [],
    ["--secret", SECRET, "FILE"],
    ["--signature", "0" * 64, "FILE"],
    ["--secret", SECRET, "--signature", "0" * 64],
    ["--secret", SECRET, "--signature", "0" * 64, "FILE", "OTHER"],
    ["--secret", SECRET, "--signature", "0" * 64, "--colour", "FILE"],
], ids=["nothing", "no-signature", "no-secret", "no-file", "two-files", "unknown-option"])
def test_verify_usage_errors(args):
    result = run_verify(args)

    assert result.returncode == 2
    assert result.stderr.startswith(b"bearhook verify: ")
    assert result.stdout == b""


def test_verify_missing_file(tmp_path):
    missing = str(tmp_path / "absent.json")

    result = run_verify(["--secret", SECRET, "--signature", "0" * 64, missing])

    assert result.returncode == 2
    assert b"cannot open" in result.stderr
    assert missing.encode() in result.stderr


def test_verify_rejects_huge_file(body_file):
    path = body_file(b"x" * (16 * 1024 * 1024 + 1), name="huge.bin")

    result = run_verify(["--secret", SECRET, "--signature", "0" * 64, path])

    assert result.returncode == 2
    assert b"larger than 16777216 bytes" in result.stderr


# ---- receivers with the documented verification code ----


RECEIVER_COMMANDS = {
    "node": ["node", "node_receiver.js"],
    "python": [sys.executable, "python_receiver.py"],
}


@pytest.fixture(params=sorted(RECEIVER_COMMANDS))
def receiver_command(request):
    command = RECEIVER_COMMANDS[request.param]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    return command


def start_receiver(spawn, command, out, *args):
    process = spawn(command + ["--port", "0", "--secret", SECRET, "--out", str(out)] + list(args),
                    cwd=RECEIVERS)
    index = process.wait_line(rb"^PORT \d+$")
    assert index == 0, process.stdout()
    return int(process.lines(0, 1)[0].split()[1])


def post(port, body, headers):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_SECONDS)
    try:
        connection.request("POST", "/webhook", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_receiver_verifies_signatures(spawn, tmp_path, receiver_command):
    out = tmp_path / "received.jsonl"
    port = start_receiver(spawn, receiver_command, out)
    body = compact(UNICODE_PAYLOAD)

    valid = post(port, body, bearhook_headers(body))
    wrong = post(port, body, bearhook_headers(body, secret="whsec_other"))
    short = post(port, body, bearhook_headers(body, signature="abc"))
    missing = post(port, body, bearhook_headers(body, secret=None))
    records = [json.loads(line) for line in out.read_text().splitlines()]

    assert valid == (200, {"received": True})
    assert wrong == (401, {"error": "Invalid signature"})
    assert short == (401, {"error": "Invalid signature"})
    assert missing == (401, {"error": "Invalid signature"})
    assert [record["valid"] for record in records] == [True, False, False, False]
    for record in records:
        assert base64.b64decode(record["bodyBase64"]) == body
        assert record["headers"]["x-webhook-id"] == "65abc123def4567890ghij05"
        assert record["headers"]["user-agent"] == "Bearconnect-Webhook/1.0"
        assert all(name == name.lower() for name in record["headers"])
    assert records[0]["headers"]["x-bearconnect-signature"] == sign(SECRET, body)
    assert "x-bearconnect-signature" not in records[3]["headers"]


def test_receiver_responds_with_status(spawn, tmp_path, receiver_command):
    out = tmp_path / "received.jsonl"
    port = start_receiver(spawn, receiver_command, out, "--status", "202")
    body = compact(PAYLOAD)

    valid = post(port, body, bearhook_headers(body))
    invalid = post(port, body, bearhook_headers(body, secret="whsec_other"))

    assert valid == (202, {"received": True})
    assert invalid == (401, {"error": "Invalid signature"})
    assert len(out.read_text().splitlines()) == 2


def test_receiver_agrees_with_listen(spawn, listen, tmp_path, receiver_command):
    out = tmp_path / "received.jsonl"
    port = start_receiver(spawn, receiver_command, out)
    listener = listen("--secret", SECRET)
    body = compact(UNICODE_PAYLOAD)
    headers = bearhook_headers(body)

    receiver_status, _ = post(port, body, headers)
    _, _, block = listener.post_and_read_block(body, headers)

    assert receiver_status == 200
    assert block[-1] == b"Signature: valid\n"
