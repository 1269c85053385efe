'use strict';
// The dingbridge app for Zapier (Zapier CLI, private): `zapier push` from this folder.
// Every trigger is a REST hook on POST /v1/hooks with GET /v1/triggers/{event} for
// sample data; every action posts to POST /v1/actions/{action}, its fields read from the
// deployment's own OpenAPI document.

const events = require('./lib/events');
const { fieldsFromDoc } = require('./lib/fields');
const pkg = require('./package.json');

const base = (bundle) => String(bundle.authData.baseUrl || '').replace(/\/+$/, '');

const authentication = {
  type: 'custom',
  fields: [
    {
      key: 'baseUrl',
      label: 'dingbridge URL',
      required: true,
      type: 'string',
      helpText: 'Where this client\'s dingbridge runs, e.g. `https://bridge.example.com`.',
    },
    {
      key: 'apiKey',
      label: 'API key',
      required: true,
      type: 'password',
      helpText: 'A `dbk_…` key from `dingbridge keys create --name zapier --scopes triggers,actions`.',
    },
  ],
  test: async (z, bundle) => (await z.request({ url: `${base(bundle)}/v1/me` })).data,
  connectionLabel: '{{bundle.inputData.name}}',
};

/** Sends the API key with every request. */
const addApiKey = (request, z, bundle) => {
  request.headers = request.headers || {};
  if (bundle.authData && bundle.authData.apiKey) {
    request.headers.Authorization = `Bearer ${bundle.authData.apiKey}`;
  }
  return request;
};

const triggerKey = (event) => event.replace(/\./g, '_');

const hookTrigger = ([event, label, description]) => ({
  key: triggerKey(event),
  noun: label.replace(/^(New |)/, ''),
  display: { label, description: `Triggers when ${description}.` },
  operation: {
    type: 'hook',
    performSubscribe: async (z, bundle) =>
      (
        await z.request({
          method: 'POST',
          url: `${base(bundle)}/v1/hooks`,
          body: { target_url: bundle.targetUrl, event },
        })
      ).data,
    performUnsubscribe: async (z, bundle) => {
      // The service answers 204 even for a hook that is already gone.
      await z.request({
        method: 'DELETE',
        url: `${base(bundle)}/v1/hooks/${encodeURIComponent(bundle.subscribeData.id)}`,
      });
      return {};
    },
    // One delivery is one event object with a stable `id`.
    perform: (z, bundle) => [bundle.cleanedRequest],
    performList: async (z, bundle) =>
      (await z.request({ url: `${base(bundle)}/v1/triggers/${event}` })).data,
    sample: { id: 'sample-1', event, occurred_at: '2026-11-25T08:00:00.000+00:00' },
  },
});

/** Hidden triggers that feed the dropdowns (GET /v1/options/{kind}). */
const optionTrigger = (kind) => ({
  key: `option_${kind.replace(/-/g, '_')}`,
  noun: 'Option',
  display: { label: `Options: ${kind}`, description: 'Feeds a dropdown.', hidden: true },
  operation: {
    perform: async (z, bundle) =>
      (await z.request({ url: `${base(bundle)}/v1/options/${kind}` })).data,
    sample: { id: 'ops@contoso.com', label: 'Operations' },
  },
});

// Zapier sends every value as text; these fields are booleans or integers on the service.
const BOOLEANS = new Set(['save_to_sent_items', 'is_all_day', 'is_read', 'unread_only', 'at_all']);
const INTEGERS = new Set(['limit']);

/** The action's input as the service takes it (Idempotency-Key goes into a header). */
const actionRequest = (action, bundle) => {
  const body = {};
  let key;
  for (const [k, v] of Object.entries(bundle.inputData || {})) {
    if (v === undefined || v === null || v === '') continue;
    if (k === 'idempotency_key') key = String(v);
    else if (BOOLEANS.has(k) && typeof v === 'string') body[k] = v.toLowerCase() === 'true';
    else if (INTEGERS.has(k) && typeof v === 'string') body[k] = Number.parseInt(v, 10);
    else body[k] = v;
  }
  return {
    method: 'POST',
    url: `${base(bundle)}/v1/actions/${action}`,
    headers: key ? { 'Idempotency-Key': key } : {},
    body,
  };
};

const idempotencyField = {
  key: 'idempotency_key',
  label: 'Idempotency key',
  required: false,
  type: 'string',
  helpText: 'Map the trigger item\'s `id` here: a replayed Zap run then does not act twice.',
};

const documentedFields = (action) => async (z, bundle) =>
  fieldsFromDoc((await z.request({ url: `${base(bundle)}/openapi.json` })).data, action);

const action = (name, label, description, sample) => ({
  key: name.replace(/\./g, '_'),
  noun: label.split(' ').slice(1).join(' '),
  display: { label, description },
  operation: {
    inputFields: [idempotencyField, documentedFields(name)],
    perform: async (z, bundle) => (await z.request(actionRequest(name, bundle))).data,
    sample,
  },
});

const creates = [
  ['outlook.send_mail', 'Send Outlook Mail', 'Sends a mail from a configured mailbox.'],
  ['outlook.create_event', 'Create Outlook Event', 'Creates a calendar event.'],
  ['outlook.create_contact', 'Create Outlook Contact', 'Creates a contact.'],
  ['outlook.create_task', 'Create To Do Task', 'Creates a Microsoft To Do task.'],
  ['outlook.mark_read', 'Mark Outlook Mail Read', 'Marks a mail read or unread.'],
  ['dingtalk.send_message', 'Send DingTalk Message', 'Posts to a robot, a group or users.'],
  ['dingtalk.create_event', 'Create DingTalk Event', 'Creates a DingTalk calendar event.'],
  ['dingtalk.create_todo', 'Create DingTalk To-do', 'Creates a DingTalk to-do.'],
  ['dingtalk.send_mail', 'Send DingTalk Mail', 'Sends a mail from a DingTalk mailbox (its SMTP), a copy kept in Sent.'],
].map(([name, label, description]) => action(name, label, description, { id: 'sample-1' }));

const searches = [
  ['outlook.find_mail', 'Find Outlook Mail', 'Finds mail by subject text, sender or read state.'],
  ['outlook.find_event', 'Find Outlook Event', 'Finds calendar events by text and time.'],
].map(([name, label, description]) => action(name, label, description, { id: 'sample-1' }));

const byKey = (list) => Object.fromEntries(list.map((x) => [x.key, x]));

module.exports = {
  version: pkg.version,
  platformVersion: pkg.dependencies['zapier-platform-core'],
  authentication,
  beforeRequest: [addApiKey],
  triggers: byKey([
    ...events.map(hookTrigger),
    ...['mailboxes', 'calendars', 'todo-lists', 'dingtalk-conversations', 'mail-routes'].map(optionTrigger),
  ]),
  creates: byKey(creates),
  searches: byKey(searches),
  // Exposed for the tests.
  _internal: { actionRequest },
};
