'use strict';
// What every request to dingbridge shares: the base URL, the API key, and turning the
// service's error answers into errors a Zap's user can read (and Zapier can retry).

/** The deployment's base URL, without a trailing slash. */
const base = (bundle) => String((bundle.authData || {}).baseUrl || '').replace(/\/+$/, '');

/** Sends the API key with every request (beforeRequest). */
const addApiKey = (request, z, bundle) => {
  request.headers = request.headers || {};
  if (bundle.authData && bundle.authData.apiKey) {
    request.headers.Authorization = `Bearer ${bundle.authData.apiKey}`;
  }
  return request;
};

/** Lets `handleErrors` see 429 answers: the platform would otherwise throw its own
 * "The server returned 429" first, losing dingbridge's message (beforeRequest). */
const ownThrottling = (request) => {
  request.throwForThrottlingEarly = false;
  return request;
};

/** Whole seconds from a `Retry-After` header (seconds or an HTTP date), else undefined. */
const retryAfterSeconds = (value, now = Date.now()) => {
  if (value === undefined || value === null || value === '') return undefined;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number.parseInt(text, 10);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
};

/** dingbridge's `{error: {code, message}}`, or a stand-in for a body that is not one. */
const errorOf = (response) => {
  let body = response.data;
  if (body === undefined || typeof body === 'string') {
    try {
      body = JSON.parse(response.content);
    } catch {
      body = undefined;
    }
  }
  const e = body && typeof body === 'object' && body.error;
  if (e && typeof e === 'object' && e.message) {
    return { code: String(e.code || `http_${response.status}`), message: String(e.message) };
  }
  return {
    code: `http_${response.status}`,
    message: `dingbridge answered HTTP ${response.status}${response.content ? `: ${String(response.content).slice(0, 200)}` : ''}`,
  };
};

// Answers worth trying again later rather than failing the Zap run: a request with the
// same Idempotency-Key still running, throttling, and a passing outage.
const THROTTLED = new Set([429, 503]);

/** afterResponse: dingbridge's error message as the Zap's error, retryable ones throttled. */
const handleErrors = (response, z) => {
  if (response.status < 400 || (response.request && response.request.skipThrowForStatus)) {
    return response;
  }
  const { code, message } = errorOf(response);
  const delay = retryAfterSeconds(response.headers && response.headers.get('retry-after'));
  if (code === 'idempotency_key_in_flight') {
    // The first run of this step is still working: Zapier retries, then replays its answer.
    throw new z.errors.ThrottledError(message, delay === undefined ? 5 : delay);
  }
  if (THROTTLED.has(response.status) && delay !== undefined) {
    throw new z.errors.ThrottledError(message, delay);
  }
  throw new z.errors.Error(message, code, response.status);
};

module.exports = { base, addApiKey, ownThrottling, handleErrors, retryAfterSeconds, errorOf };
