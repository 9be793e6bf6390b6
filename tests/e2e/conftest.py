"""Fixtures for the end-to-end tests: the real bearhook binary, a real SQLite file in a
temporary folder, and real HTTP receivers on loopback."""
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEARHOOK_BIN = os.environ.get("BEARHOOK_BIN", os.path.join(ROOT, "build-test", "bearhook"))

# Retries in seconds, not minutes: every test server runs with a tiny schedule.
FAST_RETRY_ARGS = ["--retry-base-ms", "100", "--retry-max-ms", "400"]
LOCAL_TARGET_ARGS = ["--allow-http", "--allow-networks", "127.0.0.0/8,::1/128"]


def wait_for(condition, timeout=15.0, interval=0.05, message="condition"):
    """Polls condition() until it returns a true value, for at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


class Server:
    """One `bearhook serve` process on a free loopback port, with its own database."""

    def __init__(self, folder, args):
        self.folder = folder
        self.db = os.path.join(folder, "bearhook.db")
        self.args = args
        self.process = None
        self.port = None
        self.stdout_path = os.path.join(folder, "serve.stdout")
        self.stderr_path = os.path.join(folder, "serve.stderr")
        self.api_key = None

    def start(self):
        self.log_offset = os.path.getsize(self.stderr_path) if os.path.exists(
            self.stderr_path) else 0
        stdout = open(self.stdout_path, "ab")
        stderr = open(self.stderr_path, "ab")
        self.process = subprocess.Popen(
            [BEARHOOK_BIN, "serve", "--port", "0", "--db", self.db] + self.args,
            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
        stdout.close()
        stderr.close()
        self.port = int(wait_for(self._listening_port, message="the server to listen"))
        with open(os.path.join(self.folder, "api-key")) as key_file:
            self.api_key = key_file.read().strip()
        return self

    def _listening_port(self):
        if self.process.poll() is not None:
            raise AssertionError(f"bearhook serve exited with {self.process.returncode}:\n"
                                 + self.log())
        match = re.search(r"listening on http://[^:]+:(\d+)/", self.log()[self.log_offset:])
        return match and match.group(1)

    def log(self):
        with open(self.stderr_path, errors="replace") as log:
            return log.read()

    def stop(self):
        """Stops with SIGTERM and checks a clean exit (the sanitizers report leaks here)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            code = self.process.wait(timeout=30)
            assert code == 0, f"bearhook serve exited with {code}:\n{self.log()[-4000:]}"
        self.process = None

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def request(self, method, path, body=None, key=None, raw=None, headers=None):
        """Returns (status, parsed JSON or None, raw response bytes)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        all_headers = {"Authorization": f"Bearer {key or self.api_key}"}
        if body is not None:
            raw = json.dumps(body).encode()
        if raw is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        connection.request(method, path, body=raw, headers=all_headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        parsed = json.loads(data) if data else None
        return response.status, parsed, data

    def ok(self, method, path, body=None, expect=(200, 201, 202, 204)):
        status, parsed, data = self.request(method, path, body)
        assert status in expect, f"{method} {path} answered {status}: {data!r}"
        return parsed

    def delivery(self, delivery_id):
        return self.ok("GET", f"/v1/deliveries/{delivery_id}")

    def wait_delivery(self, delivery_id, states=("succeeded", "failed"), timeout=20):
        def finished():
            found = self.delivery(delivery_id)
            return found if found["status"] in states else None
        return wait_for(finished, timeout=timeout, message=f"delivery {delivery_id} to finish")


@pytest.fixture
def start_server(tmp_path):
    servers = []

    def start(args=None, folder=None):
        server = Server(str(folder or tmp_path), args if args is not None else
                        LOCAL_TARGET_ARGS + FAST_RETRY_ARGS)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server):
    return start_server()


class Recorder:
    """A loopback HTTP receiver that records every request and responds from a script.

    script is a list of (status, delay_seconds, extra_headers) used in order; the last entry
    repeats. Each record contains the method, path, headers (names as sent), raw body and time.
    """

    def __init__(self, script=None):
        self.script = script or [(200, 0, {})]
        self.requests = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with recorder.lock:
                    index = len(recorder.requests)
                    recorder.requests.append({
                        "method": self.command, "path": self.path,
                        "headers": list(self.headers.items()), "body": body,
                        "time": time.time()})
                    status, delay, extra = recorder.script[min(index, len(recorder.script) - 1)]
                if delay:
                    time.sleep(delay)
                answer = b'{"received": true}'
                try:
                    self.send_response(status)
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def count(self):
        with self.lock:
            return len(self.requests)

    def wait_count(self, count, timeout=15):
        return wait_for(lambda: self.count() >= count, timeout=timeout,
                        message=f"{count} requests at {self.url}")

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def make_recorder():
    recorders = []

    def make(script=None):
        recorder = Recorder(script)
        recorders.append(recorder)
        return recorder

    yield make
    for recorder in recorders:
        recorder.close()
