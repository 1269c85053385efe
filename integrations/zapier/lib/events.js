'use strict';
// The service's trigger events (GET /v1/triggers/{event}, POST /v1/hooks). Keep in step
// with src/triggers.rs; the tests check every one against the running service.
module.exports = [
  ['dingtalk.message.received', 'New DingTalk Message', 'a message arrives in a DingTalk group the bridge follows'],
  ['dingtalk.calendar.changed', 'DingTalk Calendar Event Changed', 'a DingTalk calendar event is created, changed or cancelled'],
  ['dingtalk.todo.changed', 'DingTalk To-do Changed', 'a DingTalk to-do is created, changed or completed'],
  ['dingtalk.mail.received', 'New DingTalk Mail', 'a mail arrives in a synced DingTalk mailbox'],
  ['dingtalk.mail.read', 'DingTalk Mail Read', 'a mail in a synced DingTalk mailbox is marked read there'],
  ['outlook.mail.received', 'New Outlook Mail', 'a mail arrives in a watched Outlook mailbox'],
  ['outlook.mail.read', 'Outlook Mail Read', 'a mail in a watched mailbox is marked read'],
  ['outlook.event.changed', 'Outlook Event Changed', 'an Outlook calendar event is created, changed or cancelled'],
  ['outlook.contact.changed', 'Outlook Contact Changed', 'an Outlook contact is created or changed'],
  ['outlook.task.changed', 'Microsoft To Do Task Changed', 'a To Do task is created, changed, completed or deleted'],
  ['sync.failed', 'Relay Failed', 'a relay exhausted its retries (it is in the dead letters)'],
];
