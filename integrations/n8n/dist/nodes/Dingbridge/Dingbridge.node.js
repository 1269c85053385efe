'use strict';
// Runs a dingbridge action or search per input item (POST /v1/actions/{action}), with the
// Idempotency-Key the user maps (usually the trigger item's id).

const { request, operationError } = require('../shared');

const ACTIONS = [
  ['outlook.send_mail', 'Send Outlook Mail'],
  ['outlook.create_event', 'Create Outlook Event'],
  ['outlook.create_contact', 'Create Outlook Contact'],
  ['outlook.create_task', 'Create To Do Task'],
  ['outlook.mark_read', 'Mark Outlook Mail Read'],
  ['outlook.find_mail', 'Find Outlook Mail (search)'],
  ['outlook.find_event', 'Find Outlook Event (search)'],
  ['dingtalk.send_message', 'Send DingTalk Message'],
  ['dingtalk.create_event', 'Create DingTalk Event'],
  ['dingtalk.create_todo', 'Create DingTalk To-do'],
  ['dingtalk.send_mail', 'Send DingTalk Mail'],
];

class Dingbridge {
  description = {
    displayName: 'dingbridge',
    name: 'dingbridge',
    group: ['transform'],
    version: 1,
    subtitle: '={{$parameter["action"]}}',
    description: 'DingTalk and Outlook actions through dingbridge',
    defaults: { name: 'dingbridge' },
    inputs: ['main'],
    outputs: ['main'],
    credentials: [{ name: 'dingbridgeApi', required: true }],
    properties: [
      {
        displayName: 'Action',
        name: 'action',
        type: 'options',
        options: ACTIONS.map(([value, name]) => ({ name, value })),
        default: 'dingtalk.send_message',
      },
      {
        displayName: 'Input',
        name: 'input',
        type: 'json',
        default: '{\n  "target": "robot",\n  "text": ""\n}',
        description: "The action's flat input; see the deployment's /docs for each action's fields",
      },
      {
        displayName: 'Idempotency Key',
        name: 'idempotencyKey',
        type: 'string',
        default: '={{ $json.id }}',
        description: 'The same key never acts twice (24 h): map the trigger item\'s ID',
      },
    ],
  };

  async execute() {
    const items = this.getInputData();
    const out = [];
    for (let i = 0; i < items.length; i++) {
      try {
        const action = this.getNodeParameter('action', i);
        const raw = this.getNodeParameter('input', i);
        let body = raw;
        if (typeof raw === 'string') {
          try {
            body = JSON.parse(raw || '{}');
          } catch (error) {
            throw operationError(this, `Input is not valid JSON: ${error.message}`, i);
          }
        }
        const key = String(this.getNodeParameter('idempotencyKey', i, '') || '');
        const answer = await request(this, {
          method: 'POST',
          path: `/v1/actions/${action}`,
          headers: key ? { 'Idempotency-Key': key } : {},
          body,
          itemIndex: i,
        });
        // Searches answer an array: one item per result.
        for (const json of Array.isArray(answer) ? answer : [answer]) {
          out.push({ json, pairedItem: { item: i } });
        }
      } catch (error) {
        if (!this.continueOnFail()) throw error;
        out.push({ json: { error: error.message, description: error.description }, pairedItem: { item: i } });
      }
    }
    return [out];
  }
}

module.exports = { Dingbridge, ACTIONS };
