'use strict';
// The Zapier app in Zapier's own runtime (zapier-platform-core's createAppTester) against
// a running dingbridge on Redis, with Microsoft Graph and DingTalk stood in for by the
// Rust test that started it: authentication, REST hook subscribe → signed delivery →
// perform → unsubscribe, polling, every action and search, and the dropdowns.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const zapier = require('zapier-platform-core');

const App = require('..');
const { deployment, fake, eventually, details } = require('./helpers');

const appTester = zapier.createAppTester(App);
const ALICE = 'alice@contoso.com';
const OPS = 'ops@contoso.com';

let live;
let bundle;
/** A bundle with these input values. */
const withInput = (inputData, extra = {}) => ({ ...bundle, inputData, ...extra });

before(() => {
  live = deployment();
  bundle = { authData: { baseUrl: `${live.baseUrl}/`, apiKey: live.apiKey }, inputData: {} };
});

/** Makes a relay fail for good (the echo relay's target answers 400): `sync.failed`. */
const failRelay = async (eventId) => {
  const r = await fetch(`${live.baseUrl}/webhooks/echo`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-echo-token': live.echoToken },
    body: JSON.stringify({ event_id: eventId }),
  });
  assert.equal(r.status, 202, 'the echo relay took the event');
};

/** Headers the way Zapier hands them to a hook's perform (`Http-Webhook-Id`, …). */
const zapierHeaders = (headers) =>
  Object.fromEntries(
    Object.entries(headers).map(([k, v]) => [
      `Http-${k.split('-').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('-')}`,
      v,
    ]),
  );

/** The input fields of a create or search, as Zapier computes them. */
const fieldsOf = async (key) => {
  const op = (App.creates[key] || App.searches[key]).operation;
  const lists = await Promise.all(
    op.inputFields.map((f) => (typeof f === 'function' ? appTester(f, bundle) : [f])),
  );
  return lists.flat();
};

test('the connection test names the key and the deployment, and refuses what cannot work', async () => {
  const me = await appTester(App.authentication.test, bundle);
  assert.equal(me.name, 'zapier');
  assert.equal(me.host, new URL(live.baseUrl).host);
  assert.equal(App.authentication.connectionLabel, '{{bundle.inputData.name}} @ {{bundle.inputData.host}}');

  const wrong = { ...bundle, authData: { ...bundle.authData, apiKey: 'dbk_wrong' } };
  const refused = await appTester(App.authentication.test, wrong).catch((e) => e);
  assert.equal(refused.name, 'AppError');
  const why = details(refused);
  assert.equal(why.status, 401);
  assert.equal(why.code, 'unauthorized');
  assert.doesNotMatch(why.message, /\{"error"/, 'the message, not the JSON answer');

  const narrow = { ...bundle, authData: { ...bundle.authData, apiKey: live.triggersKey } };
  const lacking = await appTester(App.authentication.test, narrow).catch((e) => e);
  assert.equal(lacking.name, 'AppError');
  assert.match(details(lacking).message, /lacks the scope actions/);
  assert.equal(details(lacking).code, 'missing_scopes');
});

test('a REST hook receives a signed delivery, perform checks it, and unsubscribing removes it', async () => {
  const target = await fake(() => [200, {}]);
  try {
    const hook = await appTester(App.triggers.sync_failed.operation.performSubscribe, {
      ...bundle,
      targetUrl: `${target.url}/hooks/catch/1`,
    });
    assert.match(hook.id, /^hook_/);
    assert.match(hook.secret, /^whsec_/);

    await failRelay('zap-1');
    const delivery = await eventually('the delivery', () => target.seen[0]);
    const signed = {
      ...bundle,
      subscribeData: hook,
      cleanedRequest: JSON.parse(delivery.raw),
      rawRequest: { method: 'POST', headers: zapierHeaders(delivery.headers), content: delivery.raw },
    };
    const items = await appTester(App.triggers.sync_failed.operation.perform, signed);
    assert.equal(items.length, 1);
    assert.equal(items[0].event, 'sync.failed');
    for (const key of Object.keys(App.triggers.sync_failed.operation.sample)) {
      assert.ok(key in items[0], `the sample's ${key} is in the live event`);
    }

    // Forged: another body under the same headers, or the right body under another secret.
    const forgedBody = delivery.raw.replace('"sync.failed"', '"sync.failed" ');
    const forged = { ...signed, rawRequest: { ...signed.rawRequest, content: forgedBody } };
    const refused = await appTester(App.triggers.sync_failed.operation.perform, forged).catch((e) => e);
    assert.match(details(refused).message, /signature does not match/);
    const otherSecret = { ...signed, subscribeData: { ...hook, secret: 'whsec_c2VjcmV0LW9mLWFub3RoZXItaG9vaw==' } };
    await assert.rejects(appTester(App.triggers.sync_failed.operation.perform, otherSecret), /signature/);
    const unsigned = { ...signed, rawRequest: { ...signed.rawRequest, headers: {} } };
    await assert.rejects(appTester(App.triggers.sync_failed.operation.perform, unsigned), /webhook-signature/);

    const polled = await appTester(App.triggers.sync_failed.operation.performList, bundle);
    assert.equal(polled[0].id, items[0].id, 'polling shows the same event, same id');

    await appTester(App.triggers.sync_failed.operation.performUnsubscribe, { ...bundle, subscribeData: hook });
    const left = await fetch(`${live.baseUrl}/v1/hooks`, {
      headers: { authorization: `Bearer ${live.apiKey}` },
    }).then((r) => r.json());
    assert.deepEqual(left, []);
  } finally {
    target.close();
  }
});

test('every event trigger polls the service, a few recent items at a time', async () => {
  const hooks = Object.values(App.triggers).filter((t) => t.operation.type === 'hook');
  assert.equal(hooks.length, 11);
  for (const t of hooks) {
    const items = await appTester(t.operation.performList, bundle);
    assert.ok(Array.isArray(items), t.key);
    assert.equal(t.operation.sample.event, t.key.replace(/_/g, '.').replace('sync.failed', 'sync.failed'));
    assert.ok(t.operation.outputFields.some((f) => f.key === 'id' && f.label === 'ID'), t.key);
    assert.doesNotMatch(t.noun, /(Changed|Read|Failed)$/, `${t.key}: a noun`);
  }
  for (const n of ['zap-2', 'zap-3', 'zap-4', 'zap-5']) await failRelay(n);
  const op = App.triggers.sync_failed.operation;
  await eventually('five failed relays', async () => (await appTester(op.performList, { ...bundle, meta: { limit: 10 } })).length >= 5);
  assert.equal((await appTester(op.performList, bundle)).length, 3, 'a test asks for a few');
  assert.equal((await appTester(op.performList, { ...bundle, meta: { limit: 2 } })).length, 2);
});

test('forms list required fields first, in Zapier wording, with no idempotency field on searches', async () => {
  const send = await fieldsOf('dingtalk_send_message');
  const keys = send.map((f) => f.key);
  assert.deepEqual(keys.slice(0, 2), ['target', 'text'], 'required first');
  assert.equal(keys[keys.length - 1], 'idempotency_key');
  const firstOptional = send.findIndex((f) => !f.required);
  assert.ok(send.slice(firstOptional).every((f) => !f.required), 'no required field after an optional one');
  assert.ok(keys.indexOf('robot_code') > keys.indexOf('user_ids'), 'advanced settings last');
  const byKey = Object.fromEntries(send.map((f) => [f.key, f]));
  assert.equal(byKey.webhook_url.label, 'Webhook URL');
  assert.equal(byKey.secret.type, 'password');
  assert.equal(byKey.user_ids.list, true);
  assert.deepEqual(byKey.target.choices, ['robot', 'group', 'user']);
  assert.equal(byKey.open_conversation_id.dynamic, 'option_dingtalk_conversations.id.label');

  const mark = await fieldsOf('outlook_mark_read');
  assert.equal(mark[0].key, 'message_id');
  assert.equal(mark[0].label, 'Message ID');
  assert.equal(mark[1].key, 'mailbox', 'the mailbox leads the optional fields');

  const mail = await fieldsOf('outlook_send_mail');
  assert.deepEqual(mail.slice(0, 4).map((f) => f.key), ['to', 'subject', 'body', 'mailbox']);
  assert.equal(mail.find((f) => f.key === 'save_to_sent_items').type, 'boolean');

  for (const key of Object.keys(App.searches)) {
    const fields = await fieldsOf(key);
    assert.ok(!fields.some((f) => f.key === 'idempotency_key'), `${key}: a search has no idempotency key`);
  }
  for (const key of [...Object.keys(App.creates), ...Object.keys(App.searches)]) {
    const fields = await fieldsOf(key);
    assert.ok(fields.length > 0, key);
    for (const f of fields) {
      assert.doesNotMatch(f.helpText || '', /\/v1\/|GET |POST /, `${key}.${f.key}: help in the user's words`);
      assert.match(f.label, /^[A-Z@]/, `${key}.${f.key}: ${f.label}`);
      assert.doesNotMatch(f.label, /\b(Id|Url)\b/, `${key}.${f.key}: ${f.label}`);
    }
    const op = (App.creates[key] || App.searches[key]).operation;
    assert.ok(op.sample.id, `${key}: a sample`);
    assert.ok(op.outputFields.length >= 3, `${key}: output fields`);
  }
});

test('the app has a trigger for every documented event and an operation for every action', async () => {
  const doc = await fetch(`${live.baseUrl}/openapi.json`).then((r) => r.json());
  const schemas = doc.components.schemas;
  const hookEvents = Object.values(App.triggers)
    .filter((t) => t.operation.type === 'hook')
    .map((t) => t.operation.sample.event);
  assert.deepEqual([...hookEvents].sort(), [...schemas.EventName.enum].sort());
  const keys = [...Object.keys(App.creates), ...Object.keys(App.searches)].sort();
  assert.deepEqual(keys, schemas.ActionName.enum.map((a) => a.replace(/\./g, '_')).sort());
  const mail = await fieldsOf('dingtalk_send_mail');
  assert.deepEqual(mail.slice(0, 3).map((f) => f.key), ['to', 'subject', 'route']);
  assert.equal(mail.find((f) => f.key === 'route').dynamic, 'option_mail_routes.id.label');
  assert.equal(mail.find((f) => f.key === 'bcc').list, true);
  assert.equal(mail.find((f) => f.key === 'html').label, 'HTML');
  assert.ok(App.triggers.dingtalk_mail_received && App.triggers.dingtalk_mail_read);
  assert.deepEqual(await appTester(App.triggers.option_mail_routes.operation.perform, bundle), []);
});

test('the mailbox drives the calendar and To Do list dropdowns; DingTalk events offer DingTalk calendars', async () => {
  const boxes = await appTester(App.triggers.option_mailboxes.operation.perform, bundle);
  assert.deepEqual(
    boxes.map((b) => b.id),
    [ALICE, OPS],
  );
  assert.equal(App.triggers.option_mailboxes.display.hidden, true);

  const task = await appTester(App.creates.outlook_create_task.operation.perform, withInput({ mailbox: ALICE, title: 'Check the lists' }));
  const lists = await appTester(App.triggers.option_todo_lists.operation.perform, withInput({ mailbox: ALICE }));
  assert.ok(lists.some((l) => l.id === task.list_id), `${JSON.stringify(lists)} has ${task.list_id}`);
  const calendars = await appTester(App.triggers.option_calendars.operation.perform, withInput({ mailbox: OPS }));
  assert.ok(calendars.length >= 1, 'the mailbox\'s calendars, read live');

  const event = await fieldsOf('outlook_create_event');
  const mailbox = event.find((f) => f.key === 'mailbox');
  assert.equal(mailbox.altersDynamicFields, true);
  assert.equal(event.find((f) => f.key === 'calendar_id').dynamic, 'option_calendars.id.label');
  const taskFields = await fieldsOf('outlook_create_task');
  assert.equal(taskFields.find((f) => f.key === 'list_id').dynamic, 'option_todo_lists.id.label');

  const dt = await fieldsOf('dingtalk_create_event');
  assert.equal(dt.find((f) => f.key === 'calendar_id').dynamic, 'option_dingtalk_calendars.id.label');
  const dtCalendars = await appTester(App.triggers.option_dingtalk_calendars.operation.perform, bundle);
  assert.deepEqual(dtCalendars.map((c) => c.id), ['primary']);
});

test('every Outlook create and search runs against the service', async () => {
  const run = (key, input) => appTester((App.creates[key] || App.searches[key]).operation.perform, withInput(input));
  const sent = await run('outlook_send_mail', { mailbox: ALICE, to: ['anna@fabrikam.com'], subject: 'Shipment 4711', body: 'Cleared.' });
  assert.equal(sent.subject, 'Shipment 4711');
  const event = await run('outlook_create_event', { mailbox: OPS, subject: 'Customs call', start: '2026-03-02T10:00:00+08:00', end: '2026-03-02T11:00:00+08:00' });
  assert.equal(event.subject, 'Customs call');
  const contact = await run('outlook_create_contact', { mailbox: ALICE, given_name: 'Anna', surname: 'Schmidt', email: 'anna@fabrikam.com' });
  assert.equal(contact.display_name, 'Anna Schmidt');
  const task = await run('outlook_create_task', { mailbox: ALICE, title: 'Sign the form', importance: 'high' });
  assert.equal(task.title, 'Sign the form');

  // The Rust test seeded one unread "Invoice 42" in Alice's inbox.
  const found = await run('outlook_find_mail', { mailbox: ALICE, query: 'Invoice', unread_only: 'true', limit: '5' });
  assert.equal(found.length, 1, JSON.stringify(found));
  const read = await run('outlook_mark_read', { mailbox: ALICE, message_id: found[0].id, is_read: 'true' });
  assert.equal(read.is_read, true);
  const events = await run('outlook_find_event', { mailbox: OPS, query: 'Customs' });
  assert.equal(events[0].id, event.id);

  for (const [key, result] of [['outlook_send_mail', sent], ['outlook_create_event', event], ['outlook_find_mail', found[0]]]) {
    const { sample } = (App.creates[key] || App.searches[key]).operation;
    for (const k of Object.keys(result)) assert.ok(k in sample, `${key}: ${k} in the sample`);
  }

  // A mailbox the deployment does not serve: dingbridge's own words, not a JSON dump.
  const refused = await run('outlook_send_mail', { mailbox: 'eve@example.com', to: ['x@example.com'], subject: 's', body: 'b' }).catch((e) => e);
  assert.equal(refused.name, 'AppError');
  const why = details(refused);
  assert.deepEqual([why.status, why.code], [403, 'forbidden']);
  assert.match(why.message, /is not a configured mailbox/);
});

test('every DingTalk create runs against the service; a key acts once, no key acts every time', async () => {
  const run = (key, input) => appTester(App.creates[key].operation.perform, withInput(input));
  const robot = {
    target: 'robot',
    webhook_url: 'https://oapi.dingtalk.com/robot/send?access_token=tok-zap',
    text: 'Customs papers arrived',
    at_all: 'false',
    idempotency_key: 'zap-run-42',
  };
  const first = await run('dingtalk_send_message', robot);
  const again = await run('dingtalk_send_message', robot);
  assert.equal(first.target, 'robot');
  assert.deepEqual(again, first, 'the replayed answer (the Rust test checks one robot post)');

  const group = await run('dingtalk_send_message', { target: 'group', open_conversation_id: 'cidCustoms', text: 'Shipment cleared' });
  assert.equal(group.open_conversation_id, 'cidCustoms');

  const event = await run('dingtalk_create_event', { summary: 'Customs call', start: '2026-03-02T10:00:00+08:00', end: '2026-03-02T11:00:00+08:00', calendar_id: 'primary' });
  assert.equal(event.calendar_id, 'primary');
  assert.ok(event.id);

  const todo = { subject: 'Weekly customs report', executor_user_ids: ['union-ops'] };
  const a = await run('dingtalk_create_todo', todo);
  const b = await run('dingtalk_create_todo', todo);
  assert.notEqual(a.id, b.id, 'without a key, each run creates its to-do');
  const keyed = { ...todo, idempotency_key: 'zap-run-43' };
  const c = await run('dingtalk_create_todo', keyed);
  const d = await run('dingtalk_create_todo', keyed);
  assert.equal(c.id, d.id, 'with a key, once');
});
