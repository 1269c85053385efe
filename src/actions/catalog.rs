//! The product's actions: how each reads its typed input (defined in [`super::call`])
//! and where it runs. Outlook and DingTalk API actions go to the [`ActionBackend`] as a
//! [`BackendCall`]; `dingtalk.send_message` with `target: robot` goes to the custom-robot
//! sender ([`super::robot`]) directly, and `dingtalk.send_mail` to the mailbox route's
//! SMTP submission ([`super::mail`]).

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use serde_json::Value;

use super::{
    Action, ActionBackend, ActionContext, ActionKind, Family, FieldErrors, Fields,
    call::{
        BackendCall, ContactInput, DingTalkEventInput, DingTalkMailInput, DingTalkMessageInput,
        DingTalkTodoInput, FindEventInput, FindMailInput, MarkReadInput, OutlookEventInput,
        SendMailInput, TaskInput,
    },
    mail, robot,
};
use crate::error::ApiError;

async fn via_backend(
    ctx: &ActionContext<'_>,
    family: Family,
    name: &str,
    call: BackendCall,
) -> Result<Value, ApiError> {
    let backend: &dyn ActionBackend = ctx.backend(family, name)?;
    backend.call(ctx, call).await
}

/// The mailbox to use; a missing Graph connection is reported first (404
/// `not_configured`), as no mailbox can be used without it.
fn checked_mailbox(
    ctx: &ActionContext<'_>,
    name: &str,
    given: &Option<String>,
) -> Result<String, ApiError> {
    ctx.backend(Family::Outlook, name)?;
    ctx.mailbox(given.as_deref())
}

// ---- outlook.send_mail ----

/// `outlook.send_mail`.
pub struct SendMail;

#[async_trait]
impl Action for SendMail {
    type Input = SendMailInput;
    const NAME: &'static str = "outlook.send_mail";
    const KIND: ActionKind = ActionKind::Create;

    fn validate(&self, input: &Value) -> Result<SendMailInput, FieldErrors> {
        let mut f = Fields::new(input);
        let v = SendMailInput {
            mailbox: f.opt_str("mailbox", 320),
            to: f.emails("to", true),
            cc: f.emails("cc", false),
            bcc: f.emails("bcc", false),
            subject: f.req_str("subject", 255),
            body: f.req_str("body", 1_000_000),
            body_type: f.one_of("body_type", &["text", "html"], Some("text")),
            save_to_sent_items: f.bool("save_to_sent_items", true),
        };
        f.finish().map(|_| v)
    }

    async fn run(&self, ctx: &ActionContext<'_>, mut i: SendMailInput) -> Result<Value, ApiError> {
        i.mailbox = Some(checked_mailbox(ctx, Self::NAME, &i.mailbox)?);
        via_backend(ctx, Family::Outlook, Self::NAME, BackendCall::SendMail(i)).await
    }
}

// ---- outlook.create_event ----

/// `outlook.create_event`.
pub struct CreateOutlookEvent;

fn start_end(f: &mut Fields<'_>) -> Option<(DateTime<FixedOffset>, DateTime<FixedOffset>)> {
    let start = f.datetime("start", true);
    let end = f.datetime("end", true);
    match (start, end) {
        (Some(s), Some(e)) if e > s => Some((s, e)),
        (Some(_), Some(_)) => {
            f.error("end", "must be after start");
            None
        }
        _ => None,
    }
}

#[async_trait]
impl Action for CreateOutlookEvent {
    type Input = OutlookEventInput;
    const NAME: &'static str = "outlook.create_event";
    const KIND: ActionKind = ActionKind::Create;

    fn validate(&self, input: &Value) -> Result<OutlookEventInput, FieldErrors> {
        let mut f = Fields::new(input);
        let mailbox = f.opt_str("mailbox", 320);
        let calendar_id = f.opt_str("calendar_id", 512);
        let subject = f.req_str("subject", 255);
        let times = start_end(&mut f);
        let location = f.opt_str("location", 255);
        let body = f.opt_str("body", 100_000);
        let attendees = f.emails("attendees", false);
        let is_all_day = f.bool("is_all_day", false);
        f.finish()?;
        let (start, end) = times.ok_or_else(FieldErrors::new)?;
        Ok(OutlookEventInput {
            mailbox,
            calendar_id,
            subject,
            start,
            end,
            location,
            body,
            attendees,
            is_all_day,
        })
    }

    async fn run(
        &self,
        ctx: &ActionContext<'_>,
        mut i: OutlookEventInput,
    ) -> Result<Value, ApiError> {
        i.mailbox = Some(checked_mailbox(ctx, Self::NAME, &i.mailbox)?);
        via_backend(
            ctx,
            Family::Outlook,
            Self::NAME,
            BackendCall::CreateOutlookEvent(i),
        )
        .await
    }
}

// ---- outlook.create_contact ----

/// `outlook.create_contact`.
pub struct CreateContact;

#[async_trait]
impl Action for CreateContact {
    type Input = ContactInput;
    const NAME: &'static str = "outlook.create_contact";
    const KIND: ActionKind = ActionKind::Create;

    fn validate(&self, input: &Value) -> Result<ContactInput, FieldErrors> {
        let mut f = Fields::new(input);
        let v = ContactInput {
            mailbox: f.opt_str("mailbox", 320),
            given_name: f.opt_str("given_name", 255),
            surname: f.opt_str("surname", 255),
            email: f.opt_str("email", 254),
            mobile_phone: f.opt_str("mobile_phone", 64),
            company_name: f.opt_str("company_name", 255),
            job_title: f.opt_str("job_title", 255),
        };
        if let Some(e) = &v.email
            && !super::input::looks_like_email(e)
        {
            f.error("email", format!("`{e}` is not an e-mail address"));
        }
        if v.given_name.is_none() && v.surname.is_none() && v.email.is_none() {
            f.error(
                "given_name",
                "give at least one of given_name, surname or email",
            );
        }
        f.finish().map(|_| v)
    }

    async fn run(&self, ctx: &ActionContext<'_>, mut i: ContactInput) -> Result<Value, ApiError> {
        i.mailbox = Some(checked_mailbox(ctx, Self::NAME, &i.mailbox)?);
        via_backend(
            ctx,
            Family::Outlook,
            Self::NAME,
            BackendCall::CreateContact(i),
        )
        .await
    }
}

// ---- outlook.create_task ----

/// `outlook.create_task`.
pub struct CreateTask;

#[async_trait]
impl Action for CreateTask {
    type Input = TaskInput;
    const NAME: &'static str = "outlook.create_task";
    const KIND: ActionKind = ActionKind::Create;

    fn validate(&self, input: &Value) -> Result<TaskInput, FieldErrors> {
        let mut f = Fields::new(input);
        let v = TaskInput {
            mailbox: f.opt_str("mailbox", 320),
            list_id: f.opt_str("list_id", 512),
            title: f.req_str("title", 255),
            body: f.opt_str("body", 100_000),
            due: f.datetime("due", false),
            importance: f.one_of("importance", &["low", "normal", "high"], Some("normal")),
        };
        f.finish().map(|_| v)
    }

    async fn run(&self, ctx: &ActionContext<'_>, mut i: TaskInput) -> Result<Value, ApiError> {
        i.mailbox = Some(checked_mailbox(ctx, Self::NAME, &i.mailbox)?);
        via_backend(ctx, Family::Outlook, Self::NAME, BackendCall::CreateTask(i)).await
    }
}

// ---- outlook.mark_read ----

/// `outlook.mark_read`.
pub struct MarkRead;

#[async_trait]
impl Action for MarkRead {
    type Input = MarkReadInput;
    const NAME: &'static str = "outlook.mark_read";
    const KIND: ActionKind = ActionKind::Create;

    fn validate(&self, input: &Value) -> Result<MarkReadInput, FieldErrors> {
        let mut f = Fields::new(input);
        let v = MarkReadInput {
            mailbox: f.opt_str("mailbox", 320),
            message_id: f.req_str("message_id", 1024),
            is_read: f.bool("is_read", true),
        };
        f.finish().map(|_| v)
    }

    async fn run(&self, ctx: &ActionContext<'_>, mut i: MarkReadInput) -> Result<Value, ApiError> {
        i.mailbox = Some(checked_mailbox(ctx, Self::NAME, &i.mailbox)?);
        via_backend(ctx, Family::Outlook, Self::NAME, BackendCall::MarkRead(i)).await
    }
}

// ---- outlook.find_mail ----

/// `outlook.find_mail`.
pub struct FindMail;

#[async_trait]
impl Action for FindMail {
    type Input = FindMailInput;
    const NAME: &'static str = "outlook.find_mail";
    const KIND: ActionKind = ActionKind::Search;

    fn validate(&self, input: &Value) -> Result<FindMailInput, FieldErrors> {
        let mut f = Fields::new(input);
        let v = FindMailInput {
            mailbox: f.opt_str("mailbox", 320),
            query: f.opt_str("query", 255),
            from: f.opt_str("from", 254),
            unread_only: f.bool("unread_only", false),
            limit: f.int("limit", 10, 1, 50),
        };
        if let Some(e) = &v.from
            && !super::input::looks_like_email(e)
        {
            f.error("from", format!("`{e}` is not an e-mail address"));
        }
        f.finish().map(|_| v)
    }

    async fn run(&self, ctx: &ActionContext<'_>, mut i: FindMailInput) -> Result<Value, ApiError> {
        i.mailbox = Some(checked_mailbox(ctx, Self::NAME, &i.mailbox)?);
        via_backend(ctx, Family::Outlook, Self::NAME, BackendCall::FindMail(i)).await
    }
}

// ---- outlook.find_event ----

/// `outlook.find_event`.
pub struct FindEvent;

#[async_trait]
impl Action for FindEvent {
    type Input = FindEventInput;
    const NAME: &'static str = "outlook.find_event";
    const KIND: ActionKind = ActionKind::Search;

    fn validate(&self, input: &Value) -> Result<FindEventInput, FieldErrors> {
        let mut f = Fields::new(input);
        let v = FindEventInput {
            mailbox: f.opt_str("mailbox", 320),
            query: f.opt_str("query", 255),
            start_after: f.datetime("start_after", false),
            start_before: f.datetime("start_before", false),
            limit: f.int("limit", 10, 1, 50),
        };
        if let (Some(a), Some(b)) = (v.start_after, v.start_before)
            && b <= a
        {
            f.error("start_before", "must be after start_after");
        }
        f.finish().map(|_| v)
    }

    async fn run(&self, ctx: &ActionContext<'_>, mut i: FindEventInput) -> Result<Value, ApiError> {
        i.mailbox = Some(checked_mailbox(ctx, Self::NAME, &i.mailbox)?);
        via_backend(ctx, Family::Outlook, Self::NAME, BackendCall::FindEvent(i)).await
    }
}

// ---- dingtalk.send_message ----

/// `dingtalk.send_message`.
pub struct SendDingTalkMessage;

/// The `access_token` of a custom robot webhook URL.
fn robot_token(url: &str) -> Result<String, String> {
    let u = url::Url::parse(url).map_err(|_| {
        "must be the robot's webhook URL, https://oapi.dingtalk.com/robot/send?access_token=…"
            .to_string()
    })?;
    if !u.path().ends_with("/robot/send") {
        return Err(
            "must be a custom robot webhook URL ending in /robot/send?access_token=…".into(),
        );
    }
    u.query_pairs()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.to_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "has no access_token parameter".to_string())
}

#[async_trait]
impl Action for SendDingTalkMessage {
    type Input = DingTalkMessageInput;
    const NAME: &'static str = "dingtalk.send_message";
    const KIND: ActionKind = ActionKind::Create;

    fn validate(&self, input: &Value) -> Result<DingTalkMessageInput, FieldErrors> {
        let mut f = Fields::new(input);
        let target = f.one_of("target", &["robot", "group", "user"], None);
        let msgtype = f.one_of("msgtype", &["text", "markdown"], Some("text"));
        let text = f.req_str("text", 20_000);
        let title = f.opt_str("title", 255);
        let webhook_url = f.opt_str("webhook_url", 2048);
        let mut access_token = f.opt_str("access_token", 512);
        let secret = f.opt_str("secret", 512);
        let open_conversation_id = f.opt_str("open_conversation_id", 512);
        let user_ids = f.list("user_ids", 20);
        let robot_code = f.opt_str("robot_code", 255);
        let at_mobiles = f.list("at_mobiles", 50);
        let at_user_ids = f.list("at_user_ids", 50);
        let at_all = f.bool("at_all", false);
        if msgtype == "markdown" && title.is_none() {
            f.error("title", "is required for markdown messages");
        }
        match target.as_str() {
            "robot" => {
                if let Some(url) = &webhook_url {
                    match robot_token(url) {
                        Ok(t) => access_token = Some(t),
                        Err(why) => f.error("webhook_url", why),
                    }
                } else if access_token.is_none() {
                    f.error(
                        "webhook_url",
                        "is required for target robot (or give access_token)",
                    );
                }
                if let Some(s) = &secret
                    && !s.starts_with("SEC")
                {
                    f.error("secret", "must be the robot's SEC… signing secret");
                }
            }
            "group" if open_conversation_id.is_none() => {
                f.error("open_conversation_id", "is required for target group");
            }
            "user" if user_ids.is_empty() => {
                f.error("user_ids", "is required for target user");
            }
            _ => {}
        }
        f.finish().map(|_| DingTalkMessageInput {
            target,
            msgtype,
            text,
            title,
            access_token,
            secret,
            open_conversation_id,
            user_ids,
            robot_code,
            at_mobiles,
            at_user_ids,
            at_all,
        })
    }

    async fn run(
        &self,
        ctx: &ActionContext<'_>,
        i: DingTalkMessageInput,
    ) -> Result<Value, ApiError> {
        if i.target == "robot" {
            return robot::send(ctx, &i).await;
        }
        via_backend(
            ctx,
            Family::DingTalk,
            Self::NAME,
            BackendCall::SendDingTalkMessage(i),
        )
        .await
    }
}

// ---- dingtalk.create_event ----

/// `dingtalk.create_event`.
pub struct CreateDingTalkEvent;

#[async_trait]
impl Action for CreateDingTalkEvent {
    type Input = DingTalkEventInput;
    const NAME: &'static str = "dingtalk.create_event";
    const KIND: ActionKind = ActionKind::Create;

    fn validate(&self, input: &Value) -> Result<DingTalkEventInput, FieldErrors> {
        let mut f = Fields::new(input);
        let user_id = f.opt_str("user_id", 255);
        let calendar_id = f
            .opt_str("calendar_id", 512)
            .unwrap_or_else(|| "primary".into());
        let summary = f.req_str("summary", 255);
        let times = start_end(&mut f);
        let description = f.opt_str("description", 100_000);
        let location = f.opt_str("location", 255);
        let attendee_user_ids = f.list("attendee_user_ids", 500);
        f.finish()?;
        let (start, end) = times.ok_or_else(FieldErrors::new)?;
        Ok(DingTalkEventInput {
            user_id,
            calendar_id,
            summary,
            start,
            end,
            description,
            location,
            attendee_user_ids,
        })
    }

    async fn run(&self, ctx: &ActionContext<'_>, i: DingTalkEventInput) -> Result<Value, ApiError> {
        via_backend(
            ctx,
            Family::DingTalk,
            Self::NAME,
            BackendCall::CreateDingTalkEvent(i),
        )
        .await
    }
}

// ---- dingtalk.create_todo ----

/// `dingtalk.create_todo`.
pub struct CreateDingTalkTodo;

#[async_trait]
impl Action for CreateDingTalkTodo {
    type Input = DingTalkTodoInput;
    const NAME: &'static str = "dingtalk.create_todo";
    const KIND: ActionKind = ActionKind::Create;

    fn validate(&self, input: &Value) -> Result<DingTalkTodoInput, FieldErrors> {
        let mut f = Fields::new(input);
        let v = DingTalkTodoInput {
            user_id: f.opt_str("user_id", 255),
            subject: f.req_str("subject", 1024),
            description: f.opt_str("description", 100_000),
            due: f.datetime("due", false),
            executor_user_ids: f.list("executor_user_ids", 500),
        };
        f.finish().map(|_| v)
    }

    async fn run(&self, ctx: &ActionContext<'_>, i: DingTalkTodoInput) -> Result<Value, ApiError> {
        via_backend(
            ctx,
            Family::DingTalk,
            Self::NAME,
            BackendCall::CreateDingTalkTodo(i),
        )
        .await
    }
}

// ---- dingtalk.send_mail ----

/// `dingtalk.send_mail`.
pub struct SendDingTalkMail;

#[async_trait]
impl Action for SendDingTalkMail {
    type Input = DingTalkMailInput;
    const NAME: &'static str = "dingtalk.send_mail";
    const KIND: ActionKind = ActionKind::Create;

    fn validate(&self, input: &Value) -> Result<DingTalkMailInput, FieldErrors> {
        let mut f = Fields::new(input);
        let v = DingTalkMailInput {
            route: f.opt_str("route", 255),
            to: f.emails("to", true),
            cc: f.emails("cc", false),
            bcc: f.emails("bcc", false),
            reply_to: f.emails("reply_to", false),
            subject: f.req_str("subject", 255),
            text: f.opt_str("text", 1_000_000),
            html: f.opt_str("html", 1_000_000),
        };
        if v.subject.chars().any(char::is_control) {
            f.error("subject", "must be one line without control characters");
        }
        if v.text.is_none() && v.html.is_none() {
            f.error("text", "give text, html or both");
        }
        f.finish().map(|_| v)
    }

    async fn run(&self, ctx: &ActionContext<'_>, i: DingTalkMailInput) -> Result<Value, ApiError> {
        mail::send(ctx, &i).await
    }
}
