'use strict';
// The Zapier app against a running dingbridge (the binary cargo built, on its embedded
// store) and small local fakes: authentication, every trigger's polling, a REST hook the
// app subscribes that receives a real delivery, fields read from the service's OpenAPI
// document, dropdowns, and an action sent once per idempotency key. Zapier's runtime is
// stood in for by `z` below (z.request with beforeRequest, throwing on 4xx/5xx, as
// zapier-platform-core does), so no npm install is needed.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const app = require('..');
const { fake, eventually, startService, failRelay } = require('../../testkit');

const ECHO_TOKEN = 'echo-token-zapier-test';

let service;
let baseUrl;
let apiKey;
let robot;
let failing;
let bundle;

/** Zapier's `z` for one bundle, enough of it: requests go through the app's beforeRequest. */
const zOf = (b) => {
  const z = {
    request: async (options) => {
      let req = typeof options === 'string' ? { url: options } : { ...options };
      req.method = req.method || 'GET';
      req.headers = { ...(req.headers || {}) };
      for (const f of app.beforeRequest) req = f(req, z, b);
      const init = { method: req.method, headers: req.headers };
      if (req.body !== undefined) {
        init.body = JSON.stringify(req.body);
        init.headers['content-type'] = 'application/json';
      }
      const res = await fetch(req.url, init);
      const content = await res.text();
      const data = content ? JSON.parse(content) : null;
      if (res.status >= 400) {
        throw new Error(`${res.status} ${content}`);
      }
      return { status: res.status, data, json: data, content, headers: res.headers };
    },
  };
  return z;
};
let z;

before(async () => {
  robot = await fake(() => [200, { errcode: 0, errmsg: 'ok' }]);
  failing = await fake(() => [400, { error: 'no such recipient' }]);
  service = await startService({
    DINGBRIDGE_API_MAILBOXES: 'ops@contoso.com|Operations',
    DINGBRIDGE_ECHO_TARGET_URL: `${failing.url}/relay`,
    DINGBRIDGE_ECHO_TOKEN: ECHO_TOKEN,
    DINGBRIDGE_DINGTALK_OAPI_BASE_URL: robot.url,
  });
  ({ baseUrl, apiKey } = service);
  bundle = { authData: { baseUrl: `${baseUrl}/`, apiKey }, inputData: {} };
  z = zOf(bundle);
});

after(() => {
  if (service) service.stop();
  robot.close();
  failing.close();
});

test('the authentication test answers the key, labelled by its name', async () => {
  const me = await app.authentication.test(z, bundle);
  assert.equal(me.name, 'zapier');
  assert.equal(app.authentication.connectionLabel, '{{bundle.inputData.name}}');
  const wrong = { ...bundle, authData: { baseUrl, apiKey: 'dbk_wrong' } };
  await assert.rejects(app.authentication.test(zOf(wrong), wrong), /401/);
});

test('every event trigger polls the service for sample data', async () => {
  const hooks = Object.values(app.triggers).filter((t) => t.operation.type === 'hook');
  assert.equal(hooks.length, 11);
  for (const t of hooks) {
    const items = await t.operation.performList(z, bundle);
    assert.ok(Array.isArray(items), t.key);
  }
});

test('a REST hook the app subscribes receives a real delivery and unsubscribes cleanly', async () => {
  const target = await fake(() => [200, {}]);
  try {
    const trigger = app.triggers.sync_failed.operation;
    const hook = await trigger.performSubscribe(z, { ...bundle, targetUrl: `${target.url}/hooks/catch/1` });
    assert.match(hook.id, /^hook_/);
    // A relay that fails for good publishes sync.failed.
    await failRelay(baseUrl, ECHO_TOKEN, 'zap-1');
    const delivery = await eventually('the delivery', () => target.seen[0]);
    const items = trigger.perform(z, { ...bundle, cleanedRequest: delivery.body });
    assert.equal(items.length, 1);
    assert.equal(items[0].event, 'sync.failed');
    const polled = await trigger.performList(z, bundle);
    assert.equal(polled[0].id, items[0].id, 'polling shows the same event, same id');
    await trigger.performUnsubscribe(z, { ...bundle, subscribeData: hook });
    const left = (await z.request({ url: `${baseUrl}/v1/hooks` })).data;
    assert.deepEqual(left, []);
  } finally {
    target.close();
  }
});

test("action fields come from the service's OpenAPI document", async () => {
  const fieldsOf = async (key) => {
    const op = (app.creates[key] || app.searches[key]).operation;
    assert.equal(op.inputFields[0].key, 'idempotency_key');
    return op.inputFields[1](z, bundle);
  };
  const send = await fieldsOf('dingtalk_send_message');
  const target = send.find((f) => f.key === 'target');
  assert.equal(target.required, true);
  assert.deepEqual(target.choices, ['robot', 'group', 'user']);
  assert.equal(send.find((f) => f.key === 'secret').type, 'password');
  assert.equal(send.find((f) => f.key === 'user_ids').list, true);
  assert.equal(
    send.find((f) => f.key === 'open_conversation_id').dynamic,
    'option_dingtalk_conversations.id.label',
  );
  const mail = await fieldsOf('outlook_send_mail');
  assert.equal(mail.find((f) => f.key === 'mailbox').dynamic, 'option_mailboxes.id.label');
  assert.equal(mail.find((f) => f.key === 'save_to_sent_items').type, 'boolean');
  const find = await fieldsOf('outlook_find_event');
  assert.equal(find.find((f) => f.key === 'start_after').type, 'datetime');
  for (const key of [...Object.keys(app.creates), ...Object.keys(app.searches)]) {
    assert.ok((await fieldsOf(key)).length > 0, key);
  }
});

test('the app has a trigger for every documented event and an operation for every action', async () => {
  const doc = (await z.request({ url: `${baseUrl}/openapi.json` })).data;
  const schemas = doc.components.schemas;
  const hookEvents = Object.values(app.triggers)
    .filter((t) => t.operation.type === 'hook')
    .map((t) => t.operation.sample.event);
  assert.deepEqual([...hookEvents].sort(), [...schemas.EventName.enum].sort());
  const keys = [...Object.keys(app.creates), ...Object.keys(app.searches)].sort();
  assert.deepEqual(keys, schemas.ActionName.enum.map((a) => a.replace(/\./g, '_')).sort());
  const mail = await app.creates.dingtalk_send_mail.operation.inputFields[1](z, bundle);
  assert.equal(mail.find((f) => f.key === 'route').dynamic, 'option_mail_routes.id.label');
  assert.equal(mail.find((f) => f.key === 'bcc').list, true);
  assert.equal(mail.find((f) => f.key === 'to').required, true);
  assert.ok(mail.find((f) => f.key === 'html'));
  assert.ok(app.triggers.dingtalk_mail_received && app.triggers.dingtalk_mail_read);
  assert.deepEqual(await app.triggers.option_mail_routes.operation.perform(z, bundle), []);
});

test('dropdowns list what the deployment offers', async () => {
  const boxes = await app.triggers.option_mailboxes.operation.perform(z, bundle);
  assert.deepEqual(boxes, [{ id: 'ops@contoso.com', label: 'Operations' }]);
  assert.equal(app.triggers.option_mailboxes.display.hidden, true);
});

test('a DingTalk robot message is sent once per idempotency key', async () => {
  const op = app.creates.dingtalk_send_message.operation;
  const input = {
    target: 'robot',
    access_token: 'tok-zap',
    text: 'Customs papers arrived',
    at_all: 'false',
    idempotency_key: 'zap-run-42',
  };
  const first = await op.perform(z, { ...bundle, inputData: input });
  const again = await op.perform(z, { ...bundle, inputData: input });
  assert.equal(first.target, 'robot');
  assert.deepEqual(again, first, 'the replayed answer');
  const sends = robot.seen.filter((r) => r.url.startsWith('/robot/send'));
  assert.equal(sends.length, 1, 'posted once');
  assert.equal(sends[0].body.text.content, 'Customs papers arrived');
  assert.equal(sends[0].body.at.isAtAll, false);
  const req = app._internal.actionRequest('dingtalk.send_message', { ...bundle, inputData: input });
  assert.equal(req.headers['Idempotency-Key'], 'zap-run-42');
  assert.equal(req.body.idempotency_key, undefined);
  assert.equal(req.body.at_all, false);
});
