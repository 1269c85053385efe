'use strict';
// Standard Webhooks verification of a delivery: `webhook-signature: v1,<base64>` (one or
// more, space-separated) is HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`,
// keyed with the base64 part of the hook's `whsec_…` secret (returned at subscribe).

const crypto = require('node:crypto');

/** A header of Zapier's raw request: Zapier gives them as `Http-Webhook-Id`. */
const header = (headers, name) => {
  const want = name.toLowerCase();
  for (const [k, v] of Object.entries(headers || {})) {
    const key = k.toLowerCase();
    if (key === want || key === `http-${want}`) return Array.isArray(v) ? v[0] : v;
  }
  return undefined;
};

/** Why the delivery is not signed by `secret`, or null when it is. */
const whyNotSigned = (secret, headers, body) => {
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  if (!id || !timestamp || !signatures) return 'it has no webhook-id, webhook-timestamp and webhook-signature headers';
  if (typeof body !== 'string') return 'its raw body is missing';
  if (!secret || !String(secret).startsWith('whsec_')) return 'the subscription has no signing secret (subscribe again)';
  const key = Buffer.from(String(secret).slice('whsec_'.length), 'base64');
  const expected = crypto.createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
  const match = String(signatures)
    .split(' ')
    .map((s) => s.split(','))
    .some(([version, b64]) => {
      if (version !== 'v1' || !b64) return false;
      const given = Buffer.from(b64, 'base64');
      return given.length === expected.length && crypto.timingSafeEqual(given, expected);
    });
  return match ? null : 'its signature does not match the subscription secret';
};

module.exports = { whyNotSigned, header };
