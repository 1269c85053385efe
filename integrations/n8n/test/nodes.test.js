'use strict';
// The n8n nodes against a running dingbridge and local fakes, through a stand-in for the
// n8n runtime's `this` (parameters, credentials with the credential's own authenticate
// rule, static data, webhook request/response): activating the trigger subscribes its
// URL, a real delivery passes the signature check and a forged one gets 401,
// deactivating unsubscribes; the action node sends once per idempotency key.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { DingbridgeApi, Dingbridge, DingbridgeTrigger, verify, EVENTS, ACTIONS } = require('..');
const { fake, eventually, startService, failRelay } = require('../../testkit');

const ECHO_TOKEN = 'echo-token-n8n-test';
let service;
let robot;
let failing;

/** n8n's `this` for one node: `params` by name, the credential, workflow static data. */
const context = ({ params = {}, items = [{ json: {} }], webhookUrl, staticData = {}, request }) => {
  const credentials = { baseUrl: `${service.baseUrl}/`, apiKey: service.apiKey };
  const cred = new DingbridgeApi();
  const ctx = {
    getNodeParameter: (name, _i, fallback) => (name in params ? params[name] : fallback),
    getInputData: () => items,
    getCredentials: async (name) => {
      assert.equal(name, cred.name);
      return credentials;
    },
    getNodeWebhookUrl: () => webhookUrl,
    getWorkflowStaticData: () => staticData,
    continueOnFail: () => false,
    getRequestObject: () => request,
    getHeaderData: () => request.headers,
    getBodyData: () => request.body,
    getResponseObject: () => ({
      status(code) {
        this.code = code;
        ctx.responded = { status: code };
        return this;
      },
      json(body) {
        ctx.responded.body = body;
        return this;
      },
    }),
    helpers: {
      returnJsonArray: (list) => list.map((json) => ({ json })),
      // Applies the credential's `authenticate` rule as n8n does, then sends.
      async httpRequestWithAuthentication(name, options) {
        assert.equal(name, cred.name);
        // The rule is an n8n expression: `=Bearer {{$credentials.apiKey}}`.
        const auth = cred.authenticate.properties.headers.Authorization.replace(/^=/, '').replace(
          '{{$credentials.apiKey}}',
          credentials.apiKey,
        );
        const headers = { ...(options.headers || {}), Authorization: auth };
        const init = { method: options.method || 'GET', headers };
        if (options.body !== undefined) {
          init.body = JSON.stringify(options.body);
          headers['content-type'] = 'application/json';
        }
        const res = await fetch(options.url, init);
        const text = await res.text();
        const body = text ? JSON.parse(text) : '';
        // n8n's options: without `ignoreHttpStatusErrors` a 4xx/5xx throws n8n's generic
        // error; `returnFullResponse` answers status, headers and body.
        if (res.status >= 400 && !options.ignoreHttpStatusErrors) throw new Error(`Request failed with status code ${res.status}`);
        return options.returnFullResponse ? { statusCode: res.status, headers: res.headers, body } : body;
      },
    },
  };
  return ctx;
};

before(async () => {
  robot = await fake(() => [200, { errcode: 0, errmsg: 'ok' }]);
  failing = await fake(() => [400, { error: 'no such recipient' }]);
  service = await startService({
    DINGBRIDGE_ECHO_TARGET_URL: `${failing.url}/relay`,
    DINGBRIDGE_ECHO_TOKEN: ECHO_TOKEN,
    DINGBRIDGE_DINGTALK_OAPI_BASE_URL: robot.url,
  });
});

after(() => {
  service.stop();
  robot.close();
  failing.close();
});

test('the credential authenticates with a bearer key and tests against /v1/me', async () => {
  const cred = new DingbridgeApi();
  assert.equal(cred.authenticate.properties.headers.Authorization, '=Bearer {{$credentials.apiKey}}');
  assert.equal(cred.test.request.url, '/v1/me');
  const me = await context({}).helpers.httpRequestWithAuthentication('dingbridgeApi', {
    url: `${service.baseUrl}/v1/me`,
  });
  assert.equal(me.name, 'zapier');
});

test('activating the trigger subscribes, deliveries are verified, deactivating unsubscribes', async () => {
  const n8n = await fake(() => [200, {}]);
  try {
    const node = new DingbridgeTrigger();
    const hooks = node.webhookMethods.default;
    const staticData = {};
    const webhookUrl = `${n8n.url}/webhook/abc/dingbridgetrigger/webhook`;
    const lifecycle = context({ params: { event: 'sync.failed' }, webhookUrl, staticData });
    assert.equal(await hooks.checkExists.call(lifecycle), false);
    assert.equal(await hooks.create.call(lifecycle), true);
    assert.match(staticData.hookId, /^hook_/);
    assert.match(staticData.secret, /^whsec_/);
    assert.equal(await hooks.checkExists.call(lifecycle), true);

    await failRelay(service.baseUrl, ECHO_TOKEN, 'n8n-1');
    const delivery = await eventually('the delivery', () => n8n.seen[0]);
    const received = context({ staticData, request: delivery });
    const out = await node.webhook.call(received);
    assert.equal(out.workflowData[0][0].json.event, 'sync.failed');

    const forged = { ...delivery, rawBody: Buffer.concat([delivery.rawBody, Buffer.from(' ')]) };
    const rejected = context({ staticData, request: forged });
    assert.deepEqual(await node.webhook.call(rejected), { noWebhookResponse: true });
    assert.equal(rejected.responded.status, 401);

    assert.equal(await hooks.delete.call(lifecycle), true);
    assert.equal(staticData.hookId, undefined);
    const left = await lifecycle.helpers.httpRequestWithAuthentication('dingbridgeApi', {
      url: `${service.baseUrl}/v1/hooks`,
    });
    assert.deepEqual(left, []);
  } finally {
    n8n.close();
  }
});

test('the nodes offer every event and action the service documents', async () => {
  const doc = await (await fetch(`${service.baseUrl}/openapi.json`)).json();
  const schemas = doc.components.schemas;
  assert.deepEqual(EVENTS.map(([e]) => e).sort(), [...schemas.EventName.enum].sort());
  assert.deepEqual(ACTIONS.map(([a]) => a).sort(), [...schemas.ActionName.enum].sort());
  const trigger = new DingbridgeTrigger().description.properties.find((p) => p.name === 'event');
  assert.ok(trigger.options.some((o) => o.value === 'dingtalk.mail.read'));
});

test('signatures older than five minutes or without v1 are refused', () => {
  const secret = `whsec_${Buffer.from('0123456789abcdef0123456789abcdef').toString('base64')}`;
  const body = Buffer.from('{"id":"e1"}');
  const sign = (ts) =>
    require('node:crypto')
      .createHmac('sha256', Buffer.from(secret.slice(6), 'base64'))
      .update(`msg_1.${ts}.`)
      .update(body)
      .digest('base64');
  const now = 1_800_000_000;
  const headers = (ts, sig) => ({ 'webhook-id': 'msg_1', 'webhook-timestamp': String(ts), 'webhook-signature': sig });
  assert.equal(verify(secret, headers(now, `v1,${sign(now)}`), body, now), true);
  assert.equal(verify(secret, headers(now - 301, `v1,${sign(now - 301)}`), body, now), false);
  assert.equal(verify(secret, headers(now, `v2,${sign(now)}`), body, now), false);
  assert.equal(verify(undefined, headers(now, `v1,${sign(now)}`), body, now), false);
});

test('the action node sends a DingTalk robot message once per idempotency key', async () => {
  const node = new Dingbridge();
  const params = {
    action: 'dingtalk.send_message',
    input: JSON.stringify({ target: 'robot', access_token: 'tok-n8n', text: 'Invoice 42 paid' }),
    idempotencyKey: 'n8n-item-7',
  };
  const [first] = await node.execute.call(context({ params }));
  const [again] = await node.execute.call(context({ params }));
  assert.equal(first.length, 1);
  assert.equal(first[0].json.target, 'robot');
  assert.deepEqual(again, first);
  const sends = robot.seen.filter((r) => r.url.startsWith('/robot/send'));
  assert.equal(sends.length, 1, 'posted once');
  assert.equal(sends[0].body.text.content, 'Invoice 42 paid');
});

test("the action node's errors carry dingbridge's message, not a generic one", async () => {
  const node = new Dingbridge();
  const bad = { action: 'dingtalk.send_message', input: JSON.stringify({ target: 'robot' }), idempotencyKey: '' };
  await assert.rejects(node.execute.call(context({ params: bad })), (error) => {
    assert.match(error.message, /^dingbridge: .*text: is required/);
    assert.match(error.description, /text: is required.*\(code invalid_input, HTTP 400, request /);
    return true;
  });
  const notJson = { ...bad, input: '{"target": robot}' };
  await assert.rejects(node.execute.call(context({ params: notJson })), /^Error: Input is not valid JSON/);
  const failing = context({ params: bad });
  failing.continueOnFail = () => true;
  const [out] = await node.execute.call(failing);
  assert.match(out[0].json.error, /text: is required/);
});

test('a refused subscription fails the activation with the setting to change', async () => {
  const hooks = new DingbridgeTrigger().webhookMethods.default;
  const staticData = {};
  // n8n's default webhook URL on the same host: localhost, which is also ::1.
  const webhookUrl = 'http://[::1]:5678/webhook/abc/dingbridgetrigger/webhook';
  const lifecycle = context({ params: { event: 'sync.failed' }, webhookUrl, staticData });
  await assert.rejects(hooks.create.call(lifecycle), /^Error: dingbridge: .*hooks\.allow_private_targets/);
  assert.equal(staticData.hookId, undefined);
});
