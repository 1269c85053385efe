//! What a validated action carries: each action's typed input, and the [`BackendCall`]
//! that takes it to the Outlook or DingTalk backend. The actions ([`super::catalog`]),
//! the backends and the custom-robot sender ([`super::robot`]) all read these types, and
//! this file reads none of them.

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

/// A validated call for a backend.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", content = "input")]
pub enum BackendCall {
    /// `outlook.send_mail`.
    #[serde(rename = "outlook.send_mail")]
    SendMail(SendMailInput),
    /// `outlook.create_event`.
    #[serde(rename = "outlook.create_event")]
    CreateOutlookEvent(OutlookEventInput),
    /// `outlook.create_contact`.
    #[serde(rename = "outlook.create_contact")]
    CreateContact(ContactInput),
    /// `outlook.create_task`.
    #[serde(rename = "outlook.create_task")]
    CreateTask(TaskInput),
    /// `outlook.mark_read`.
    #[serde(rename = "outlook.mark_read")]
    MarkRead(MarkReadInput),
    /// `outlook.find_mail`.
    #[serde(rename = "outlook.find_mail")]
    FindMail(FindMailInput),
    /// `outlook.find_event`.
    #[serde(rename = "outlook.find_event")]
    FindEvent(FindEventInput),
    /// `dingtalk.send_message` to a group or users (robot targets are built in).
    #[serde(rename = "dingtalk.send_message")]
    SendDingTalkMessage(DingTalkMessageInput),
    /// `dingtalk.create_event`.
    #[serde(rename = "dingtalk.create_event")]
    CreateDingTalkEvent(DingTalkEventInput),
    /// `dingtalk.create_todo`.
    #[serde(rename = "dingtalk.create_todo")]
    CreateDingTalkTodo(DingTalkTodoInput),
}

/// Input of `outlook.send_mail`.
#[derive(Debug, Clone, Serialize)]
pub struct SendMailInput {
    /// Sending mailbox (one of `api.mailboxes`); filled in before the backend runs.
    pub mailbox: Option<String>,
    /// Recipients.
    pub to: Vec<String>,
    /// Copy.
    pub cc: Vec<String>,
    /// Blind copy.
    pub bcc: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// `text` or `html`.
    pub body_type: String,
    /// Keep a copy in Sent Items.
    pub save_to_sent_items: bool,
}

/// Input of `outlook.create_event`.
#[derive(Debug, Clone, Serialize)]
pub struct OutlookEventInput {
    /// Mailbox whose calendar gets the event.
    pub mailbox: Option<String>,
    /// Calendar id (default calendar when absent).
    pub calendar_id: Option<String>,
    /// Title.
    pub subject: String,
    /// Start.
    pub start: DateTime<FixedOffset>,
    /// End (after start).
    pub end: DateTime<FixedOffset>,
    /// Location.
    pub location: Option<String>,
    /// Description.
    pub body: Option<String>,
    /// Attendee addresses.
    pub attendees: Vec<String>,
    /// Whole day.
    pub is_all_day: bool,
}

/// Input of `outlook.create_contact`.
#[derive(Debug, Clone, Serialize)]
pub struct ContactInput {
    /// Mailbox whose contacts get it.
    pub mailbox: Option<String>,
    /// First name.
    pub given_name: Option<String>,
    /// Last name.
    pub surname: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Mobile number.
    pub mobile_phone: Option<String>,
    /// Company.
    pub company_name: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
}

/// Input of `outlook.create_task` (Microsoft To Do).
#[derive(Debug, Clone, Serialize)]
pub struct TaskInput {
    /// Mailbox (user) owning the list.
    pub mailbox: Option<String>,
    /// To Do list id (default list when absent).
    pub list_id: Option<String>,
    /// Title.
    pub title: String,
    /// Notes.
    pub body: Option<String>,
    /// Due date-time.
    pub due: Option<DateTime<FixedOffset>>,
    /// `low`, `normal` or `high`.
    pub importance: String,
}

/// Input of `outlook.mark_read`.
#[derive(Debug, Clone, Serialize)]
pub struct MarkReadInput {
    /// Mailbox holding the message.
    pub mailbox: Option<String>,
    /// Graph message id.
    pub message_id: String,
    /// `false` marks it unread.
    pub is_read: bool,
}

/// Input of `outlook.find_mail`.
#[derive(Debug, Clone, Serialize)]
pub struct FindMailInput {
    /// Mailbox to search.
    pub mailbox: Option<String>,
    /// Free-text search.
    pub query: Option<String>,
    /// Sender address.
    pub from: Option<String>,
    /// Only unread mail.
    pub unread_only: bool,
    /// Most results (1–50).
    pub limit: i64,
}

/// Input of `outlook.find_event`.
#[derive(Debug, Clone, Serialize)]
pub struct FindEventInput {
    /// Mailbox whose calendar is searched.
    pub mailbox: Option<String>,
    /// Free-text search in subjects.
    pub query: Option<String>,
    /// Events starting at or after.
    pub start_after: Option<DateTime<FixedOffset>>,
    /// Events starting before.
    pub start_before: Option<DateTime<FixedOffset>>,
    /// Most results (1–50).
    pub limit: i64,
}

/// Input of `dingtalk.send_message`.
#[derive(Debug, Clone, Serialize)]
pub struct DingTalkMessageInput {
    /// `robot` (custom group robot webhook), `group` or `user` (app robot).
    pub target: String,
    /// `text` or `markdown`.
    pub msgtype: String,
    /// Message text (markdown source for `markdown`).
    pub text: String,
    /// Preview title of a markdown message.
    pub title: Option<String>,
    /// Robot: the `access_token` of the webhook (from `webhook_url` or given alone).
    pub access_token: Option<String>,
    /// Robot: the `SEC…` signing secret, when 加签 is on.
    #[serde(skip_serializing)]
    pub secret: Option<String>,
    /// Group: `openConversationId`.
    pub open_conversation_id: Option<String>,
    /// User: DingTalk user ids.
    pub user_ids: Vec<String>,
    /// App robot code (group/user), default from configuration.
    pub robot_code: Option<String>,
    /// Mentioned mobiles (robot/group).
    pub at_mobiles: Vec<String>,
    /// Mentioned user ids (robot/group).
    pub at_user_ids: Vec<String>,
    /// Mention everyone.
    pub at_all: bool,
}

/// Input of `dingtalk.create_event`.
#[derive(Debug, Clone, Serialize)]
pub struct DingTalkEventInput {
    /// Organiser's DingTalk user id (unionId), default from the route.
    pub user_id: Option<String>,
    /// Calendar id, default `primary`.
    pub calendar_id: String,
    /// Title.
    pub summary: String,
    /// Start.
    pub start: DateTime<FixedOffset>,
    /// End.
    pub end: DateTime<FixedOffset>,
    /// Description.
    pub description: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// Attendees' user ids.
    pub attendee_user_ids: Vec<String>,
}

/// Input of `dingtalk.create_todo`.
#[derive(Debug, Clone, Serialize)]
pub struct DingTalkTodoInput {
    /// Creator's user id (unionId), default from the route.
    pub user_id: Option<String>,
    /// Title.
    pub subject: String,
    /// Details.
    pub description: Option<String>,
    /// Due date-time.
    pub due: Option<DateTime<FixedOffset>>,
    /// Executors' user ids.
    pub executor_user_ids: Vec<String>,
}

/// Input of `dingtalk.send_mail` (sent through a mailbox route's SMTP submission; no
/// backend call).
#[derive(Debug, Clone, Serialize)]
pub struct DingTalkMailInput {
    /// The mailbox route to send from (`GET /v1/options/mail-routes`); optional when only
    /// one route can send.
    pub route: Option<String>,
    /// Recipients.
    pub to: Vec<String>,
    /// Copy.
    pub cc: Vec<String>,
    /// Blind copy.
    pub bcc: Vec<String>,
    /// Where replies go.
    pub reply_to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
}
