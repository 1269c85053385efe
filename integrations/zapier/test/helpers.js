'use strict';
// What the tests share: the deployment under test (started by the Rust integration test,
// `cargo test --test integration zapier`, which passes it in through the environment),
// a local HTTP server that records requests, and polling until something holds.

const http = require('node:http');
const zapier = require('zapier-platform-core');

// Zapier's documented way to read settings (a `.env` file, when there is one).
zapier.tools.env.inject();

/** The running dingbridge: `DINGBRIDGE_URL`, `DINGBRIDGE_API_KEY` (scopes triggers and
 * actions), `DINGBRIDGE_TRIGGERS_KEY` (triggers only) and `DINGBRIDGE_ECHO_TOKEN`. */
const deployment = () => {
  const need = ['DINGBRIDGE_URL', 'DINGBRIDGE_API_KEY', 'DINGBRIDGE_TRIGGERS_KEY', 'DINGBRIDGE_ECHO_TOKEN'];
  const missing = need.filter((k) => !process.env[k]);
  if (missing.length) {
    throw new Error(
      `${missing.join(', ')} not set: these tests run against a live dingbridge, started by ` +
        '`cargo test --test integration the_zapier_app` (or set them yourself)',
    );
  }
  return {
    baseUrl: process.env.DINGBRIDGE_URL,
    apiKey: process.env.DINGBRIDGE_API_KEY,
    triggersKey: process.env.DINGBRIDGE_TRIGGERS_KEY,
    echoToken: process.env.DINGBRIDGE_ECHO_TOKEN,
  };
};

/** A local HTTP server recording requests (raw body and headers); `answer(req, body)`
 * gives `[status, json, headers]`. */
const fake = async (answer) => {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method, url: req.url, headers: req.headers, raw });
      const [status, json, headers] = answer(req, raw);
      res.writeHead(status, { 'content-type': 'application/json', ...(headers || {}) });
      res.end(json === undefined ? '' : JSON.stringify(json));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { seen, url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
};

/** Polls `f` every 100 ms until it gives something truthy. */
const eventually = async (what, f, ms = 20000) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

/** The message of a `z.errors.*` error (they carry JSON: message, code, status, delay). */
const details = (err) => {
  try {
    return JSON.parse(err.message);
  } catch {
    return { message: err.message };
  }
};

module.exports = { deployment, fake, eventually, details };
