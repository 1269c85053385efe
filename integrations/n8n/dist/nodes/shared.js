'use strict';
// What both nodes share: authenticated JSON requests to the deployment, and its errors
// turned into n8n errors that show dingbridge's own message (which names the field or
// setting to fix) instead of n8n's generic text for the status code.

/** n8n's error classes. n8n makes its own `n8n-workflow` resolvable to the nodes it
 * loads; outside n8n (the package's own tests) plain errors carry the same text. */
const workflow = (() => {
  try {
    return require('n8n-workflow');
  } catch {
    return null;
  }
})();

const base = (credentials) => String(credentials.baseUrl || '').replace(/\/+$/, '');

/** The text a person acts on, from dingbridge's `{"error": {"code", "message",
 * "request_id"}}` body (or whatever else answered). */
const describe = (status, body) => {
  const err = body && typeof body === 'object' ? body.error : undefined;
  if (err && typeof err === 'object' && err.message) {
    const details = [err.code && `code ${err.code}`, `HTTP ${status}`, err.request_id && `request ${err.request_id}`]
      .filter(Boolean)
      .join(', ');
    // n8n shows an API error's description where only one line fits (a failed
    // activation shows nothing else), so it repeats the message.
    return { message: `dingbridge: ${err.message}`, description: `${err.message} (${details})`, code: err.code };
  }
  const text = typeof body === 'string' ? body.slice(0, 300) : JSON.stringify(body ?? '').slice(0, 300);
  const message = `dingbridge answered HTTP ${status}: ${text}`;
  return { message, description: message, code: undefined };
};

/** The error to throw for a failed answer: n8n's `NodeApiError` with dingbridge's message. */
const apiError = (ctx, status, body, itemIndex) => {
  const { message, description, code } = describe(status, body);
  if (workflow && typeof ctx.getNode === 'function') {
    const response = body && typeof body === 'object' ? body : { body: String(body ?? '') };
    return new workflow.NodeApiError(ctx.getNode(), response, {
      message,
      description,
      httpCode: String(status),
      itemIndex,
    });
  }
  const error = new Error(message);
  error.description = description;
  error.httpCode = String(status);
  error.code = code;
  return error;
};

/** An error in what the user entered (not from dingbridge): n8n's `NodeOperationError`. */
const operationError = (ctx, message, itemIndex) => {
  if (workflow && typeof ctx.getNode === 'function') {
    return new workflow.NodeOperationError(ctx.getNode(), message, { itemIndex });
  }
  return new Error(message);
};

/** An authenticated JSON request to `path` on the deployment (for input item
 * `itemIndex`, if any); answers the body, or throws `apiError` for any status from 400 on. Network failures (nothing answered)
 * keep n8n's own error, which names the address. */
const request = async (ctx, { path, headers = {}, itemIndex, ...options }) => {
  const credentials = await ctx.getCredentials('dingbridgeApi');
  const response = await ctx.helpers.httpRequestWithAuthentication.call(ctx, 'dingbridgeApi', {
    json: true,
    ...options,
    headers: { accept: 'application/json', ...headers },
    url: `${base(credentials)}${path}`,
    // Read the status and body ourselves: n8n's error for a status shows only a generic
    // sentence ("Bad request - please check your parameters").
    ignoreHttpStatusErrors: true,
    returnFullResponse: true,
  });
  const status = Number(response.statusCode);
  let body = response.body;
  if (typeof body === 'string' && body.trim().startsWith('{')) {
    try {
      body = JSON.parse(body);
    } catch {
      // Not JSON after all: shown as text.
    }
  }
  if (!(status >= 200 && status < 400)) throw apiError(ctx, status, body, itemIndex);
  return body === '' || body === undefined ? {} : body;
};

module.exports = { request, operationError, describe };
