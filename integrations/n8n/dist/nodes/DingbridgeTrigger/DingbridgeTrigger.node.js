'use strict';
// Starts a workflow on a dingbridge event: activating the workflow subscribes this node's
// webhook URL (POST /v1/hooks), deactivating it unsubscribes. Deliveries are checked
// against the hook's Standard Webhooks signature; a forged or stale one gets 401.

const crypto = require('node:crypto');
const { request } = require('../shared');

const EVENTS = [
  ['dingtalk.message.received', 'New DingTalk Message'],
  ['dingtalk.calendar.changed', 'DingTalk Calendar Event Changed'],
  ['dingtalk.todo.changed', 'DingTalk To-do Changed'],
  ['dingtalk.mail.received', 'New DingTalk Mail'],
  ['dingtalk.mail.read', 'DingTalk Mail Read'],
  ['outlook.mail.received', 'New Outlook Mail'],
  ['outlook.mail.read', 'Outlook Mail Read'],
  ['outlook.event.changed', 'Outlook Event Changed'],
  ['outlook.contact.changed', 'Outlook Contact Changed'],
  ['outlook.task.changed', 'Microsoft To Do Task Changed'],
  ['sync.failed', 'Relay Failed'],
];

/** How far a delivery's timestamp may be from now (Standard Webhooks' tolerance). */
const TOLERANCE_SECS = 300;

/** Checks a Standard Webhooks signature: HMAC-SHA256 over `id.timestamp.body`. */
const verify = (secret, headers, rawBody, nowSecs = Math.floor(Date.now() / 1000)) => {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const sigs = headers['webhook-signature'];
  if (!secret || !id || !ts || !sigs) return false;
  if (!/^\d+$/.test(ts) || Math.abs(nowSecs - Number(ts)) > TOLERANCE_SECS) return false;
  const key = Buffer.from(String(secret).replace(/^whsec_/, ''), 'base64');
  const expected = crypto
    .createHmac('sha256', key)
    .update(`${id}.${ts}.`)
    .update(rawBody)
    .digest();
  return String(sigs)
    .split(' ')
    .some((s) => {
      const [version, value] = s.split(',');
      if (version !== 'v1' || !value) return false;
      const got = Buffer.from(value, 'base64');
      return got.length === expected.length && crypto.timingSafeEqual(got, expected);
    });
};

class DingbridgeTrigger {
  description = {
    displayName: 'dingbridge Trigger',
    name: 'dingbridgeTrigger',
    group: ['trigger'],
    version: 1,
    subtitle: '={{$parameter["event"]}}',
    description: 'Starts the workflow on a DingTalk or Outlook event relayed by dingbridge',
    defaults: { name: 'dingbridge Trigger' },
    inputs: [],
    outputs: ['main'],
    credentials: [{ name: 'dingbridgeApi', required: true }],
    webhooks: [{ name: 'default', httpMethod: 'POST', responseMode: 'onReceived', path: 'webhook' }],
    properties: [
      {
        displayName: 'Event',
        name: 'event',
        type: 'options',
        options: EVENTS.map(([value, name]) => ({ name, value })),
        default: 'outlook.mail.received',
      },
    ],
  };
  webhookMethods = {
    default: {
      async checkExists() {
        const data = this.getWorkflowStaticData('node');
        if (!data.hookId) return false;
        const hooks = await request(this, { method: 'GET', path: '/v1/hooks' });
        const url = this.getNodeWebhookUrl('default');
        const event = this.getNodeParameter('event');
        if (hooks.some((h) => h.id === data.hookId && h.target_url === url && h.event === event)) return true;
        delete data.hookId;
        delete data.secret;
        return false;
      },
      // A refused subscription (e.g. the webhook URL is on a host dingbridge's SSRF
      // guard refuses) throws dingbridge's message, so activation fails visibly.
      async create() {
        const hook = await request(this, {
          method: 'POST',
          path: '/v1/hooks',
          body: { target_url: this.getNodeWebhookUrl('default'), event: this.getNodeParameter('event') },
        });
        const data = this.getWorkflowStaticData('node');
        data.hookId = hook.id;
        data.secret = hook.secret;
        return true;
      },
      async delete() {
        const data = this.getWorkflowStaticData('node');
        if (data.hookId) {
          // 204 also when the hook is already gone.
          await request(this, { method: 'DELETE', path: `/v1/hooks/${encodeURIComponent(data.hookId)}` });
        }
        delete data.hookId;
        delete data.secret;
        return true;
      },
    },
  };

  async webhook() {
    const req = this.getRequestObject();
    const { secret } = this.getWorkflowStaticData('node');
    const raw = req.rawBody || Buffer.from(JSON.stringify(this.getBodyData()));
    if (!verify(secret, this.getHeaderData(), raw)) {
      this.getResponseObject().status(401).json({ error: 'invalid webhook signature' });
      return { noWebhookResponse: true };
    }
    return { workflowData: [this.helpers.returnJsonArray([this.getBodyData()])] };
  }
}

module.exports = { DingbridgeTrigger, EVENTS, verify };
