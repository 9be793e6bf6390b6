"""A webhook receiver for the end-to-end tests, on the standard library, that verifies
signatures with the Python code that bearhook documents for receivers: the hex HMAC-SHA256 of
the raw body from hmac.new, compared with hmac.compare_digest.

    python3 python_receiver.py --port 0 --secret SECRET --out FILE [--status CODE]

Binds 127.0.0.1 and prints "PORT <n>" as its first stdout line. For each POST it appends one
JSON line to FILE: {"headers": {...}, "bodyBase64": "...", "valid": true|false}, with header
names in lowercase. It responds --status (default 200) {"received": true} when the signature
is valid, and 401 {"error": "Invalid signature"} otherwise.
"""

import argparse
import base64
import hashlib
import hmac
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Larger bodies get a 413 response. bearhook's payloads are a few kilobytes.
MAX_BODY_BYTES = 16 * 1024 * 1024


def verify_webhook_signature(raw_body: bytes, signature: str, secret: str) -> bool:
    """The documented verification function, unchanged."""
    expected = hmac.new(
        secret.encode('utf-8'),
        raw_body,
        hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(signature, expected)


def parse_args(argv):
    parser = argparse.ArgumentParser(description='Webhook receiver for end-to-end tests.')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--secret', required=True)
    parser.add_argument('--out', required=True)
    parser.add_argument('--status', type=int, default=200)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error('--port must be a number from 0 to 65535')
    if not 100 <= args.status <= 599:
        parser.error('--status must be a number from 100 to 599')
    return args


class Receiver(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, as a production receiver would.
    protocol_version = 'HTTP/1.1'
    secret = ''
    out_path = ''
    status = 200
    out_lock = threading.Lock()

    def send_json(self, status, body):
        text = json.dumps(body).encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_POST(self):
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            self.close_connection = True
            self.send_json(411, {'error': 'Content-Length is required'})
            return
        try:
            length = int(self.headers.get('Content-Length', '0'))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self.send_json(413, {'error': 'Body too large'})
            return
        raw_body = self.rfile.read(length)

        signature = self.headers.get('X-Bearconnect-Signature')
        # compare_digest raises TypeError for non-ASCII text, and a missing header is None.
        try:
            valid = signature is not None and verify_webhook_signature(
                raw_body, signature, self.secret)
        except TypeError:
            valid = False

        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = headers[key] + ', ' + value if key in headers else value
        record = {
            'headers': headers,
            'bodyBase64': base64.b64encode(raw_body).decode('ascii'),
            'valid': valid,
        }
        with self.out_lock:
            with open(self.out_path, 'a', encoding='utf-8') as out:
                out.write(json.dumps(record) + '\n')

        if not valid:
            self.send_json(401, {'error': 'Invalid signature'})
            return
        self.send_json(self.status, {'received': True})

    def log_message(self, format, *args):
        sys.stderr.write('python_receiver: %s\n' % (format % args))


def main(argv):
    args = parse_args(argv)
    Receiver.secret = args.secret
    Receiver.out_path = args.out
    Receiver.status = args.status

    server = ThreadingHTTPServer(('127.0.0.1', args.port), Receiver)
    server.daemon_threads = True

    def stop(signum, frame):
        # shutdown() blocks until serve_forever returns, so it runs on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print('PORT %d' % server.server_address[1], flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
