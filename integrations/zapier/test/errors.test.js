'use strict';
// dingbridge's error answers as Zapier errors: the service's message (not its JSON) in
// z.errors.Error with its code and status, and the answers worth retrying later (a
// request with the same Idempotency-Key still running, 429, 503 with Retry-After) as
// z.errors.ThrottledError with the delay, so Zapier retries them.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const zapier = require('zapier-platform-core');

const App = require('..');
const { fake, details } = require('./helpers');
const { retryAfterSeconds } = require('../lib/http');

const appTester = zapier.createAppTester(App);

/** What the stand-in answers next: [status, body, headers]. */
let next;
let service;

before(async () => {
  service = await fake(() => next);
});
after(() => service.close());

const send = () =>
  appTester(App.creates.dingtalk_send_message.operation.perform, {
    authData: { baseUrl: service.url, apiKey: 'dbk_test' },
    inputData: { target: 'robot', access_token: 't', text: 'hi', idempotency_key: 'k-1' },
  }).catch((e) => e);

const errorBody = (code, message) => ({ error: { code, message, request_id: 'req-1' } });

test('an error answer becomes z.errors.Error with the service message, code and status', async () => {
  next = [400, errorBody('invalid_input', 'webhook_url: is required for target robot')];
  const err = await send();
  assert.equal(err.name, 'AppError');
  assert.deepEqual(details(err), { message: 'webhook_url: is required for target robot', code: 'invalid_input', status: 400 });
  assert.equal(service.seen.at(-1).headers['idempotency-key'], 'k-1');
  assert.equal(service.seen.at(-1).headers.authorization, 'Bearer dbk_test');
});

test('a request with the same key still in flight is retried later', async () => {
  next = [409, errorBody('idempotency_key_in_flight', 'a request with this Idempotency-Key is still running'), { 'retry-after': '2' }];
  const err = await send();
  assert.equal(err.name, 'ThrottledError');
  assert.deepEqual(details(err), { message: 'a request with this Idempotency-Key is still running', delay: 2 });
  next = [409, errorBody('idempotency_key_in_flight', 'still running')];
  assert.equal(details(await send()).delay, 5, 'a default delay without Retry-After');
});

test('throttling and an outage with Retry-After are retried after that delay', async () => {
  next = [429, errorBody('rate_limited', 'DingTalk throttles this app; try again in 7 s'), { 'retry-after': '7' }];
  let err = await send();
  assert.equal(err.name, 'ThrottledError');
  assert.deepEqual(details(err), { message: 'DingTalk throttles this app; try again in 7 s', delay: 7 });
  next = [503, errorBody('upstream_unavailable', 'Microsoft Graph is unavailable'), { 'retry-after': '30' }];
  err = await send();
  assert.equal(err.name, 'ThrottledError');
  assert.equal(details(err).delay, 30);
});

test('a 503 without Retry-After and a body that is not dingbridge\'s still read well', async () => {
  next = [503, errorBody('store_unavailable', 'the store is unavailable')];
  let err = await send();
  assert.equal(err.name, 'AppError');
  assert.deepEqual(details(err), { message: 'the store is unavailable', code: 'store_unavailable', status: 503 });
  next = [502, undefined];
  err = await send();
  assert.equal(details(err).code, 'http_502');
  assert.match(details(err).message, /HTTP 502/);
});

test('Retry-After is read as seconds or as an HTTP date', () => {
  assert.equal(retryAfterSeconds('12'), 12);
  assert.equal(retryAfterSeconds(new Date(Date.UTC(2026, 0, 1, 0, 1)).toUTCString(), Date.UTC(2026, 0, 1)), 60);
  assert.equal(retryAfterSeconds(undefined), undefined);
  assert.equal(retryAfterSeconds('soon'), undefined);
});
