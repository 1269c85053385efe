'use strict';
// Zapier input fields derived from the service's own OpenAPI document (GET /openapi.json),
// so an action's fields always match the deployment the Zap talks to, and an action the
// service adds shows up with sensible fields without touching this app. The rules below
// are generic (order, labels, types, dropdowns); the tables only refine wording.

/** Dropdowns: the hidden option trigger feeding a field, by field key. A function gets
 * the action's name (DingTalk and Outlook calendars are different things). */
const DROPDOWNS = {
  mailbox: () => 'option_mailboxes.id.label',
  calendar_id: (action) =>
    action.startsWith('dingtalk.') ? 'option_dingtalk_calendars.id.label' : 'option_calendars.id.label',
  list_id: () => 'option_todo_lists.id.label',
  open_conversation_id: () => 'option_dingtalk_conversations.id.label',
  route: () => 'option_mail_routes.id.label',
};

/** Fields whose choice changes what other dropdowns offer. */
const DRIVERS = new Set(['mailbox']);

/** Fields that pick where an action acts from: shown first among the optional ones. */
const PLACES = new Set(['mailbox', 'route']);

/** Words written another way in a label than capitalised. */
const WORDS = { id: 'ID', ids: 'IDs', url: 'URL', urls: 'URLs', cc: 'CC', bcc: 'BCC', html: 'HTML', msgtype: 'Message Type' };
const SMALL = new Set(['a', 'an', 'and', 'as', 'at', 'by', 'for', 'in', 'of', 'on', 'or', 'the', 'to']);

/** Labels that read better than the key's words. */
const LABELS = {
  open_conversation_id: 'DingTalk Group',
  user_ids: 'Recipient User IDs',
  at_all: '@ Everyone',
  at_mobiles: '@ Mobile Numbers',
  at_user_ids: '@ User IDs',
  is_all_day: 'All-Day Event',
  save_to_sent_items: 'Save to Sent Items',
  unread_only: 'Unread Mail Only',
  calendar_id: 'Calendar',
  list_id: 'To Do List',
  route: 'Send From',
  reply_to: 'Reply To',
  query: 'Search Text',
  start_after: 'Starts After',
  start_before: 'Starts Before',
  limit: 'Maximum Results',
  user_id: 'DingTalk User ID',
  executor_user_ids: 'Assignee User IDs',
  attendee_user_ids: 'Attendee User IDs',
  due: 'Due Date',
  body_type: 'Body Format',
  is_read: 'Read',
  target: 'Send To',
  to: 'To',
};

/** Help in the user's words, where the document's text speaks of the API or says
 * nothing; `action.field` entries win over `field` ones. */
const HELP = {
  'dingtalk.send_message.title': 'The title shown in the notification; needed for Markdown messages.',
  'dingtalk.send_message.text': 'The message. For Markdown messages, DingTalk Markdown.',
  'outlook.create_task.title': 'What the task is, as shown in To Do.',
  'outlook.create_task.body': 'Notes shown with the task.',
  'outlook.create_event.body': 'The event\'s description.',
  'dingtalk.create_todo.user_id': 'The DingTalk user (unionId) creating the to-do. Leave empty when the deployment serves one user.',
  'dingtalk.create_todo.description': 'Notes shown with the to-do.',
  'outlook.find_mail.from': 'Only mail from this address.',
  subject: 'The subject line.',
  summary: 'The event\'s title.',
  body: 'The text of the mail.',
  body_type: 'Plain text, or HTML for formatted mail.',
  cc: 'Email addresses to copy.',
  bcc: 'Email addresses to copy without showing them to the others.',
  save_to_sent_items: 'Keep a copy in Sent Items (default yes).',
  location: 'Where it takes place.',
  attendees: 'Email addresses of the people to invite.',
  attendee_user_ids: 'DingTalk user IDs (unionId) of the people to invite.',
  executor_user_ids: 'DingTalk user IDs (unionId) of the people who should do it.',
  is_all_day: 'Yes for an all-day event.',
  due: 'When it is due.',
  importance: 'Low, normal or high.',
  is_read: 'Yes marks the mail read, No marks it unread.',
  unread_only: 'Yes to find unread mail only.',
  start_after: 'Only events that start after this time.',
  start_before: 'Only events that start before this time.',
  msgtype: 'Plain text, or Markdown (needs a title).',
  at_mobiles: 'Mobile numbers of group members to @mention (custom robots).',
  at_user_ids: 'User IDs of group members to @mention.',
  at_all: 'Yes to @mention everyone in the group.',
  description: 'More details.',
  given_name: 'First name.',
  surname: 'Last name.',
  email: 'Their email address.',
  mobile_phone: 'Their mobile number.',
  company_name: 'The company they work for.',
  job_title: 'Their job title.',
  mailbox:
    'The Outlook mailbox to use. Leave empty when the deployment has only one mailbox.',
  calendar_id: 'The calendar to put the event in. Leave empty for the default calendar.',
  list_id: 'The To Do list to add the task to. Leave empty for the default list.',
  open_conversation_id: 'The DingTalk group the message goes to (when sending to a group).',
  route: 'The DingTalk mailbox to send from. Leave empty when only one can send.',
  reply_to: 'Addresses replies should go to, when not the sender.',
  'dingtalk.send_mail.text': 'The mail as plain text.',
  'dingtalk.send_mail.html': 'The mail as HTML (with or instead of the plain text).',
  target:
    'Where the message goes: a custom robot webhook, a DingTalk group through the app robot, or individual users.',
  webhook_url:
    "For a custom robot: the robot's webhook URL, as DingTalk shows it (https://oapi.dingtalk.com/robot/send?access_token=…).",
  access_token: 'For a custom robot: its access token, instead of the webhook URL.',
  secret: "For a custom robot with signing on: its secret, starting with SEC.",
  robot_code: "Advanced: the app robot's code. Leave empty to use the group's robot.",
  user_ids: 'When sending to users: their DingTalk user IDs.',
  user_id: "The DingTalk user (unionId) acting. Leave empty when the deployment serves one user.",
  start: 'When it starts, e.g. 2026-03-02 10:00 (with a time zone, or UTC).',
  end: 'When it ends.',
  query: 'Text the subject contains.',
  limit: 'At most this many results.',
  message_id: 'The ID of the mail, e.g. from a New Outlook Mail trigger.',
  to: 'One or more email addresses.',
};

/** Optional fields shown last: rarely needed, or only for one kind of target. */
const ADVANCED = new Set(['robot_code', 'access_token', 'at_mobiles', 'at_user_ids', 'at_all', 'user_id']);

/** "message_id" → "Message ID", "webhook_url" → "Webhook URL". */
const label = (key) =>
  LABELS[key] ||
  key
    .split('_')
    .filter(Boolean)
    .map((w, i) => WORDS[w] || (i > 0 && SMALL.has(w) ? w : w.charAt(0).toUpperCase() + w.slice(1)))
    .join(' ');

/** A document description with its API references taken out (they mean nothing in a Zap). */
const helpFromDoc = (text) => {
  if (!text) return undefined;
  const cleaned = String(text)
    .replace(/[^.;]*\bGET \/v1\/[^.;]*[.;]?/g, '')
    .replace(/\b(robot|group|user|group\/user):\s*/g, '')
    .replace(/`/g, '')
    .replace(/\s+/g, ' ')
    .trim();
  return cleaned ? cleaned.charAt(0).toUpperCase() + cleaned.slice(1) : undefined;
};

/** The schema in `doc` whose `title` is the action name, or undefined. */
const actionSchema = (doc, action) =>
  Object.values((doc.components || {}).schemas || {}).find((s) => s.title === action);

/** One OpenAPI property as a Zapier input field. */
const field = (action, key, prop, required) => {
  const f = { key, label: label(key), required };
  const ref = prop.$ref || '';
  if (ref.endsWith('/StringList')) {
    f.type = 'string';
    f.list = true;
  } else if (prop.type === 'boolean') {
    f.type = 'boolean';
  } else if (prop.type === 'integer') {
    f.type = 'integer';
  } else if (prop.format === 'date-time' || /^(start|end|due)(_|$)/.test(key)) {
    f.type = 'datetime';
  } else if (['body', 'description', 'text', 'html'].includes(key)) {
    f.type = 'text';
  } else {
    f.type = 'string';
  }
  if (Array.isArray(prop.enum)) f.choices = prop.enum;
  if (prop.default !== undefined) f.default = String(prop.default);
  const help = HELP[`${action}.${key}`] || HELP[key] || helpFromDoc(prop.description);
  if (help) f.helpText = help;
  if (DROPDOWNS[key]) f.dynamic = DROPDOWNS[key](action);
  if (DRIVERS.has(key)) f.altersDynamicFields = true;
  if (key === 'secret') f.type = 'password';
  return f;
};

/** Where optional fields go when a form is read top to bottom: what the item is, then
 * where it goes, then its details, then options. (The served document's properties come
 * in alphabetical order, so the order is decided here.) Keys not listed follow these, in
 * alphabetical order; ADVANCED ones come last. */
const ORDER = [
  'calendar_id', 'list_id', 'open_conversation_id', 'user_ids', 'webhook_url', 'secret',
  'msgtype', 'title', 'query', 'from', 'cc', 'bcc', 'reply_to', 'given_name', 'surname', 'email',
  'mobile_phone', 'company_name', 'job_title', 'location', 'body', 'text', 'html', 'description',
  'attendees', 'attendee_user_ids', 'executor_user_ids', 'due', 'importance', 'start_after',
  'start_before', 'unread_only', 'is_read', 'is_all_day', 'body_type', 'save_to_sent_items', 'limit',
];

/** Sort key: required fields first (in the order the document lists them as required),
 * then the mailbox (other dropdowns follow it), then ORDER, then the rest, advanced last. */
const rank = (f, required) => {
  if (f.required) return [0, required.indexOf(f.key), ''];
  if (PLACES.has(f.key)) return [1, 0, ''];
  if (ADVANCED.has(f.key)) return [4, 0, f.key];
  const i = ORDER.indexOf(f.key);
  return i >= 0 ? [2, i, ''] : [3, 0, f.key];
};

const compare = (a, b) => {
  for (let i = 0; i < a.length; i += 1) {
    if (a[i] < b[i]) return -1;
    if (a[i] > b[i]) return 1;
  }
  return 0;
};

/** The input fields of `action` as `doc` describes it (throws when it does not). */
const fieldsFromDoc = (doc, action) => {
  const schema = actionSchema(doc, action);
  if (!schema) throw new Error(`This dingbridge deployment does not offer ${action}; update it.`);
  const required = schema.required || [];
  return Object.entries(schema.properties || {})
    .map(([k, p]) => field(action, k, p, required.includes(k)))
    .map((f) => ({ f, r: rank(f, required) }))
    .sort((a, b) => compare(a.r, b.r))
    .map(({ f }) => f);
};

/** Output fields from a sample: every key, labelled like an input field. */
const outputFieldsOf = (sample) =>
  Object.entries(sample).map(([key, v]) => {
    const f = { key, label: label(key) };
    if (typeof v === 'number') f.type = Number.isInteger(v) ? 'integer' : 'number';
    else if (typeof v === 'boolean') f.type = 'boolean';
    else if (typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v)) f.type = 'datetime';
    else f.type = 'string';
    return f;
  });

module.exports = { fieldsFromDoc, outputFieldsOf, label, helpFromDoc, DROPDOWNS };
