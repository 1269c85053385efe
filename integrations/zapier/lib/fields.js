'use strict';
// Zapier input fields derived from the service's own OpenAPI document (GET /openapi.json),
// so an action's fields always match the deployment the Zap talks to.

/** Fields whose values come from GET /v1/options/{kind} (hidden triggers in index.js). */
const DROPDOWNS = {
  mailbox: 'option_mailboxes.id.label',
  calendar_id: 'option_calendars.id.label',
  list_id: 'option_todo_lists.id.label',
  open_conversation_id: 'option_dingtalk_conversations.id.label',
  route: 'option_mail_routes.id.label',
};

const label = (key) =>
  key
    .split('_')
    .map((w, i) => (i === 0 ? w.charAt(0).toUpperCase() + w.slice(1) : w))
    .join(' ');

/** The schema in `doc` whose `title` is the action name, or undefined. */
const actionSchema = (doc, action) =>
  Object.values((doc.components || {}).schemas || {}).find((s) => s.title === action);

/** One OpenAPI property as a Zapier input field. */
const field = (key, prop, required) => {
  const f = { key, label: label(key), required };
  const ref = prop.$ref || '';
  if (ref.endsWith('/StringList')) {
    f.type = 'string';
    f.list = true;
  } else if (prop.type === 'boolean') {
    f.type = 'boolean';
  } else if (prop.type === 'integer') {
    f.type = 'integer';
  } else if (prop.format === 'date-time') {
    f.type = 'datetime';
  } else {
    f.type = 'string';
  }
  if (Array.isArray(prop.enum)) f.choices = prop.enum;
  if (prop.default !== undefined) f.default = String(prop.default);
  if (prop.description) f.helpText = prop.description;
  if (DROPDOWNS[key]) f.dynamic = DROPDOWNS[key];
  if (key === 'secret') f.type = 'password';
  return f;
};

/** The input fields of `action` as `doc` describes it (throws when it does not). */
const fieldsFromDoc = (doc, action) => {
  const schema = actionSchema(doc, action);
  if (!schema) throw new Error(`the service does not document the action ${action}`);
  const required = new Set(schema.required || []);
  return Object.entries(schema.properties || {}).map(([k, p]) => field(k, p, required.has(k)));
};

module.exports = { fieldsFromDoc, DROPDOWNS };
