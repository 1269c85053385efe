'use strict';
// Test helpers shared by the Zapier and n8n packages' tests: local fakes and the
// dingbridge binary cargo built (`DINGBRIDGE_BIN`), on its embedded store, with a
// bootstrap API key.

const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');

const BIN =
  process.env.DINGBRIDGE_BIN || path.join(__dirname, '..', 'target', 'debug', 'dingbridge');

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

/** A local HTTP server recording requests (raw and JSON bodies); `answer(req, body)`
 * gives `[status, json]`. */
const fake = async (answer) => {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks);
      const body = rawBody.length ? JSON.parse(rawBody.toString('utf8')) : null;
      seen.push({ method: req.method, url: req.url, headers: req.headers, rawBody, body });
      const [status, json] = answer(req, body);
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(json));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { seen, url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
};

const eventually = async (what, f, ms = 15000) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

/** Starts `dingbridge serve` with a bootstrap key of all scopes and `env`; resolves to
 * `{ baseUrl, apiKey, stop }` once it answers /healthz. */
const startService = async (env) => {
  // `keys hash` prints the key on stdout and its configuration entry on stderr.
  const minted = spawnSync(BIN, ['keys', 'hash', '--name', 'zapier', '--scopes', 'triggers,actions,admin'], {
    env: {},
    encoding: 'utf8',
  });
  if (minted.status !== 0) throw new Error(`dingbridge keys hash failed: ${minted.stderr}`);
  const bootstrap = minted.stderr.split('\n').find((l) => l.startsWith('zapier:'));
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const child = spawn(BIN, ['serve'], {
    env: {
      DINGBRIDGE_LISTEN: `127.0.0.1:${port}`,
      DINGBRIDGE_API_BOOTSTRAP_KEYS: bootstrap.trim(),
      DINGBRIDGE_HOOKS_ALLOW_PRIVATE_TARGETS: '127.0.0.1',
      DINGBRIDGE_LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await eventually('the service', async () => {
    try {
      return (await fetch(`${baseUrl}/healthz`)).ok;
    } catch {
      return false;
    }
  });
  return { baseUrl, apiKey: minted.stdout.trim(), stop: () => child.kill('SIGTERM') };
};

/** Makes a relay fail for good (the echo relay against a target that answers 400), which
 * publishes `sync.failed`. */
const failRelay = async (baseUrl, token, eventId) => {
  const r = await fetch(`${baseUrl}/webhooks/echo`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-echo-token': token },
    body: JSON.stringify({ event_id: eventId }),
  });
  if (r.status !== 202) throw new Error(`echo answered ${r.status}`);
};

module.exports = { fake, eventually, startService, failRelay };
