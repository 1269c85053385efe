'use strict';
// Triggers: a REST hook per event (POST /v1/hooks) with GET /v1/triggers/{event} for
// samples, and hidden triggers that feed the dropdowns (GET /v1/options/{kind}).

const { base } = require('./http');
const { outputFieldsOf } = require('./fields');
const { triggerSample } = require('./samples');
const { whyNotSigned } = require('./signature');

const triggerKey = (event) => event.replace(/\./g, '_');

/** The noun of a trigger label: "New Outlook Mail" → "Outlook Mail". */
const nounOf = (label) =>
  label
    .replace(/^(New|Updated)\s+/, '')
    .replace(/\s+(Changed|Read|Received|Failed|Updated)$/, '')
    .replace(/^Relay$/, 'Failed Relay');

/** How many recent items a test of the trigger asks for (Zapier shows a few). */
const PERFORM_LIST_LIMIT = 3;

const hookTrigger = ([event, label, description]) => {
  const sample = triggerSample(event);
  return {
    key: triggerKey(event),
    noun: nounOf(label),
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
      // One delivery is one event object with a stable `id`, signed with the hook's secret.
      perform: (z, bundle) => {
        const raw = bundle.rawRequest || {};
        const why = whyNotSigned((bundle.subscribeData || {}).secret, raw.headers, raw.content);
        if (why) throw new z.errors.Error(`Delivery refused: ${why}.`, 'invalid_signature', 401);
        return [bundle.cleanedRequest];
      },
      performList: async (z, bundle) => {
        const asked = Number((bundle.meta || {}).limit);
        const limit = asked > 0 ? Math.min(asked, 100) : PERFORM_LIST_LIMIT;
        return (
          await z.request({ url: `${base(bundle)}/v1/triggers/${event}`, params: { limit } })
        ).data;
      },
      sample,
      outputFields: outputFieldsOf(sample),
    },
  };
};

/** Hidden triggers that feed the dropdowns; calendars and To Do lists follow the mailbox
 * chosen in the same form (Zapier passes the form's values as inputData). */
const OPTIONS = [
  ['mailboxes', 'Mailbox', { id: 'ops@contoso.com', label: 'Operations' }],
  ['calendars', 'Calendar', { id: 'AAMkAGI2TGCalAAA=', label: 'Calendar' }],
  ['todo-lists', 'To Do List', { id: 'AAMkAGI2TTasksAAA=', label: 'Tasks' }],
  ['dingtalk-conversations', 'DingTalk Group', { id: 'cidnVqGmd0QmXuhwRHnuy7xOQ==', label: 'Customs' }],
  ['dingtalk-calendars', 'DingTalk Calendar', { id: 'primary', label: 'Primary calendar' }],
  ['mail-routes', 'Mail Route', { id: 'customs-mail', label: 'customs-mail (ops@contoso.cn)' }],
];
const FOLLOWS_MAILBOX = new Set(['calendars', 'todo-lists']);

const optionTrigger = ([kind, noun, sample]) => ({
  key: `option_${kind.replace(/-/g, '_')}`,
  noun,
  display: { label: `List ${noun} Choices`, description: `Lists the ${noun} choices for a dropdown.`, hidden: true },
  operation: {
    perform: async (z, bundle) => {
      const mailbox = (bundle.inputData || {}).mailbox;
      const params = FOLLOWS_MAILBOX.has(kind) && mailbox ? { mailbox } : {};
      return (await z.request({ url: `${base(bundle)}/v1/options/${kind}`, params })).data;
    },
    sample,
  },
});

module.exports = {
  hooks: require('./events').map(hookTrigger),
  options: OPTIONS.map(optionTrigger),
  triggerKey,
  nounOf,
};
