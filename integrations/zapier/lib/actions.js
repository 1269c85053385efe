'use strict';
// Creates and searches: each posts to POST /v1/actions/{action}, its fields read from the
// deployment's OpenAPI document. Adding an action the service offers is one row below
// (a sample in samples.js makes its output fields richer, but is optional).

const { base } = require('./http');
const { fieldsFromDoc, outputFieldsOf } = require('./fields');
const { actionSample } = require('./samples');

/** [action, label, description, noun] */
const CREATES = [
  ['outlook.send_mail', 'Send Outlook Mail', 'Sends a mail from a configured Outlook mailbox.', 'Mail'],
  ['outlook.create_event', 'Create Outlook Event', 'Creates an event in an Outlook calendar.', 'Event'],
  ['outlook.create_contact', 'Create Outlook Contact', 'Creates a contact in an Outlook mailbox.', 'Contact'],
  ['outlook.create_task', 'Create To Do Task', 'Creates a task in a Microsoft To Do list.', 'Task'],
  ['outlook.mark_read', 'Mark Outlook Mail Read', 'Marks an Outlook mail read or unread.', 'Mail'],
  ['dingtalk.send_message', 'Send DingTalk Message', 'Posts a message to a robot webhook, a DingTalk group or users.', 'Message'],
  ['dingtalk.create_event', 'Create DingTalk Event', 'Creates an event in a DingTalk calendar.', 'Event'],
  ['dingtalk.create_todo', 'Create DingTalk To-do', 'Creates a DingTalk to-do.', 'To-do'],
  ['dingtalk.send_mail', 'Send DingTalk Mail', 'Sends a mail from a DingTalk mailbox (its SMTP), a copy kept in Sent.', 'Mail'],
];

const SEARCHES = [
  ['outlook.find_mail', 'Find Outlook Mail', 'Finds mail by subject text, sender or read state.', 'Mail'],
  ['outlook.find_event', 'Find Outlook Event', 'Finds calendar events by text and time.', 'Event'],
];

// Zapier may send these as text; the service wants booleans or integers.
const BOOLEANS = new Set(['save_to_sent_items', 'is_all_day', 'is_read', 'unread_only', 'at_all']);
const INTEGERS = new Set(['limit']);

/** The action's input as the service takes it (the Idempotency-Key goes into a header). */
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
  label: 'Idempotency Key',
  required: false,
  type: 'string',
  helpText:
    "Map the trigger item's ID here. If Zapier runs this step again for the same item, the action is not done twice. Leave empty to act on every run.",
};

const documentedFields = (action) => async (z, bundle) =>
  fieldsFromDoc((await z.request({ url: `${base(bundle)}/openapi.json` })).data, action);

/** The Zapier key of an action: `dingtalk.send_message` → `dingtalk_send_message`. */
const actionKey = (action) => action.replace(/\./g, '_');

const operation = (action, isSearch) => {
  const sample = actionSample(action);
  return {
    // Searches only read: replaying one is harmless, so no idempotency field.
    inputFields: isSearch ? [documentedFields(action)] : [documentedFields(action), idempotencyField],
    perform: async (z, bundle) => (await z.request(actionRequest(action, bundle))).data,
    sample,
    outputFields: outputFieldsOf(sample),
  };
};

const definition = (isSearch) => ([action, label, description, noun]) => ({
  key: actionKey(action),
  noun,
  display: { label, description },
  operation: operation(action, isSearch),
});

module.exports = {
  creates: CREATES.map(definition(false)),
  searches: SEARCHES.map(definition(true)),
  actionRequest,
  actionKey,
};
