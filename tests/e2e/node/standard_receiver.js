// A webhook receiver for the end-to-end tests that verifies the Standard Webhooks headers
// (webhook-id, webhook-timestamp, webhook-signature) with the standardwebhooks package.
//
//   node standard_receiver.js --port 0 --secret SECRET --out FILE [--fail-first N]
//
// Binds 127.0.0.1 and prints "PORT <n>" as its first stdout line. For each POST it appends one
// JSON line to FILE: {"headers": {...}, "bodyBase64": "...", "valid": true|false, "error": ...},
// with header names in lowercase and error null when valid. It responds 401 when the request
// does not verify, 500 to the first N requests that verify (default 0), and 200 after that.
'use strict';

const fs = require('fs');
const http = require('http');
const { Webhook } = require('standardwebhooks');

// Larger bodies get a 413 response. bearhook's payloads are a few kilobytes.
const MAX_BODY_BYTES = 16 * 1024 * 1024;

function parseArgs(argv) {
    const options = { port: null, secret: null, out: null, failFirst: 0 };
    for (let i = 0; i < argv.length; i += 2) {
        const name = argv[i];
        const value = argv[i + 1];
        if (value === undefined) {
            throw new Error(`option ${name} needs a value`);
        }
        if (name === '--port') {
            options.port = Number.parseInt(value, 10);
        } else if (name === '--secret') {
            options.secret = value;
        } else if (name === '--out') {
            options.out = value;
        } else if (name === '--fail-first') {
            options.failFirst = Number.parseInt(value, 10);
        } else {
            throw new Error(`unknown option ${name}`);
        }
    }
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
        throw new Error('--port must be a number from 0 to 65535');
    }
    if (options.secret === null || options.out === null) {
        throw new Error('--secret and --out are required');
    }
    if (!Number.isInteger(options.failFirst) || options.failFirst < 0) {
        throw new Error('--fail-first must be a number of requests, 0 or more');
    }
    return options;
}

function sendJson(res, status, body) {
    const text = JSON.stringify(body);
    res.writeHead(status, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
}

function main() {
    let options;
    try {
        options = parseArgs(process.argv.slice(2));
    } catch (error) {
        process.stderr.write(`standard_receiver: ${error.message}\n`);
        process.exit(2);
    }

    const webhook = new Webhook(options.secret);
    let verifiedCount = 0;

    const server = http.createServer((req, res) => {
        if (req.method !== 'POST') {
            sendJson(res, 405, { error: 'Only POST is accepted' });
            return;
        }

        const chunks = [];
        let size = 0;
        let tooLarge = false;
        req.on('data', (chunk) => {
            size += chunk.length;
            if (size > MAX_BODY_BYTES) {
                tooLarge = true;
                return;
            }
            chunks.push(chunk);
        });
        req.on('end', () => {
            if (tooLarge) {
                sendJson(res, 413, { error: 'Body too large' });
                return;
            }
            const rawBody = Buffer.concat(chunks);
            let error = null;
            try {
                // verify takes the raw bytes and the headers with lowercase names, as Node.js
                // gives them.
                webhook.verify(rawBody, req.headers);
            } catch (caught) {
                error = caught.message;
            }

            const record = {
                headers: req.headers,
                bodyBase64: rawBody.toString('base64'),
                valid: error === null,
                error: error,
            };
            fs.appendFileSync(options.out, JSON.stringify(record) + '\n');

            if (error !== null) {
                sendJson(res, 401, { error: 'Invalid signature' });
                return;
            }
            verifiedCount++;
            if (verifiedCount <= options.failFirst) {
                sendJson(res, 500, { error: 'Failing on purpose' });
                return;
            }
            sendJson(res, 200, { received: true });
        });
    });

    server.listen(options.port, '127.0.0.1', () => {
        process.stdout.write(`PORT ${server.address().port}\n`);
    });

    // server.close waits for requests in progress; the timer bounds that wait.
    const stop = () => {
        server.close(() => process.exit(0));
        setTimeout(() => process.exit(0), 2000).unref();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

main();
