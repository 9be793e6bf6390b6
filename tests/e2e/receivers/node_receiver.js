// A webhook receiver for the end-to-end tests, in plain Node.js, that verifies signatures with
// the Node.js code that bearhook documents for receivers: the hex HMAC-SHA256 of the raw body
// from crypto.createHmac, compared with crypto.timingSafeEqual.
//
//   node node_receiver.js --port 0 --secret SECRET --out FILE [--status CODE]
//
// Binds 127.0.0.1 and prints "PORT <n>" as its first stdout line. For each POST it appends one
// JSON line to FILE: {"headers": {...}, "bodyBase64": "...", "valid": true|false}, with header
// names in lowercase. It responds --status (default 200) {"received": true} when the signature
// is valid, and 401 {"error": "Invalid signature"} otherwise.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');

// Larger bodies get a 413 response. bearhook's payloads are a few kilobytes.
const MAX_BODY_BYTES = 16 * 1024 * 1024;

function parseArgs(argv) {
    const options = { port: null, secret: null, out: null, status: 200 };
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
        } else if (name === '--status') {
            options.status = Number.parseInt(value, 10);
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
    if (!Number.isInteger(options.status) || options.status < 100 || options.status > 599) {
        throw new Error('--status must be a number from 100 to 599');
    }
    return options;
}

// The documented verifyWebhookSignature. crypto.timingSafeEqual throws on buffers of unequal
// length, and a missing header would make Buffer.from throw, so both are checked first.
function verifyWebhookSignature(rawBody, signature, secret) {
    const expectedSignature = crypto.createHmac('sha256', secret).update(rawBody).digest('hex');

    if (typeof signature !== 'string') {
        return false;
    }
    const signatureBytes = Buffer.from(signature);
    const expectedBytes = Buffer.from(expectedSignature);
    if (signatureBytes.length !== expectedBytes.length) {
        return false;
    }
    return crypto.timingSafeEqual(signatureBytes, expectedBytes);
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
        process.stderr.write(`node_receiver: ${error.message}\n`);
        process.exit(2);
    }

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
            const signature = req.headers['x-bearconnect-signature'];
            const isValid = verifyWebhookSignature(rawBody, signature, options.secret);

            // Node.js gives header names in lowercase already.
            const record = {
                headers: req.headers,
                bodyBase64: rawBody.toString('base64'),
                valid: isValid,
            };
            fs.appendFileSync(options.out, JSON.stringify(record) + '\n');

            if (!isValid) {
                sendJson(res, 401, { error: 'Invalid signature' });
                return;
            }
            sendJson(res, options.status, { received: true });
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
