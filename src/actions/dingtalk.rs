//! The DingTalk [`ActionBackend`]: app robot messages to a group or to users, calendar
//! events and todos with the [`DingTalkClient`].
//!
//! Idempotency upstream: a calendar event is created with `x-client-token` and a todo
//! with `sourceId`, both derived from the caller and the `Idempotency-Key`, so a retry
//! that slips past the key store still creates one item; without a key they are random,
//! so that every request acts (a weekly Zap creating the same to-do gets one each week). Defaults come from the sync routes: the group's app robot code from
//! the route of that conversation (else `dingtalk.app_key`, which is the robot code of an
//! internal app's robot), the user of events and todos from the only route naming one.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    ActionBackend, ActionContext,
    call::{BackendCall, DingTalkEventInput, DingTalkMessageInput, DingTalkTodoInput},
    outlook::{iso, now_iso},
};
use crate::{dingtalk::client::DingTalkClient, error::ApiError};

/// Runs DingTalk actions on DingTalk's server API.
pub struct DingTalkBackend {
    client: Arc<DingTalkClient>,
}

impl DingTalkBackend {
    /// A backend on this client.
    pub fn new(client: Arc<DingTalkClient>) -> Self {
        Self { client }
    }
}

/// The upstream idempotency handle (`x-client-token`, `sourceId`): from the caller and
/// the `Idempotency-Key`, random when there is no key (identical inputs without a key are
/// two requests, each of which must act).
pub fn client_token(ctx: &ActionContext<'_>, action: &str) -> String {
    match ctx.idempotency_key {
        Some(k) => {
            let seed = format!("{}:{action}:key:{k}", ctx.caller.id);
            hex::encode(&Sha256::digest(seed.as_bytes())[..16])
        }
        None => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// The unionId to act for: the given one, else the only one the routes name.
fn union_id(ctx: &ActionContext<'_>, given: &Option<String>) -> Result<String, ApiError> {
    if let Some(u) = given {
        return Ok(u.clone());
    }
    let mut ids: Vec<&str> = ctx
        .config
        .routes
        .iter()
        .filter_map(|r| r.dingtalk.union_id.as_deref())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    match ids.as_slice() {
        [one] => Ok(one.to_string()),
        _ => Err(ApiError::invalid_field(
            "user_id",
            "is required: the DingTalk unionId of the user (no single route names one)",
        )),
    }
}

fn robot_code(ctx: &ActionContext<'_>, i: &DingTalkMessageInput) -> Result<String, ApiError> {
    if let Some(c) = &i.robot_code {
        return Ok(c.clone());
    }
    let from_route = ctx
        .config
        .routes
        .iter()
        .filter(|r| {
            i.open_conversation_id.is_some() && r.dingtalk.conversation_id == i.open_conversation_id
        })
        .chain(ctx.config.routes.iter())
        .find_map(|r| r.dingtalk.robot_code.clone());
    from_route
        .or_else(|| ctx.config.dingtalk.app_key.clone())
        .ok_or_else(|| ApiError::invalid_field("robot_code", "is required"))
}

fn ms(v: &Value) -> Value {
    v.as_i64()
        .and_then(chrono::DateTime::<Utc>::from_timestamp_millis)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

impl DingTalkBackend {
    async fn send_message(
        &self,
        ctx: &ActionContext<'_>,
        i: DingTalkMessageInput,
    ) -> Result<Value, ApiError> {
        let code = robot_code(ctx, &i)?;
        let (msg_key, param) = match i.msgtype.as_str() {
            "markdown" => (
                "sampleMarkdown",
                json!({ "title": i.title.clone().unwrap_or_default(), "text": i.text }),
            ),
            _ => ("sampleText", json!({ "content": i.text })),
        };
        match i.target.as_str() {
            "group" => {
                let conversation = ctx.conversation(i.open_conversation_id.as_deref())?;
                let answer = self
                    .client
                    .send_group_message(&code, &conversation, msg_key, &param)
                    .await?;
                Ok(json!({
                    "id": answer["processQueryKey"],
                    "target": "group",
                    "open_conversation_id": conversation,
                    "robot_code": code,
                    "msgtype": i.msgtype,
                    "sent_at": now_iso(),
                }))
            }
            _ => {
                let answer = self
                    .client
                    .send_user_messages(&code, &i.user_ids, msg_key, &param)
                    .await?;
                let list = |k: &str| {
                    answer[k]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                };
                Ok(json!({
                    "id": answer["processQueryKey"],
                    "target": "user",
                    "user_ids": i.user_ids.join(","),
                    "invalid_user_ids": list("invalidStaffIdList"),
                    "flow_controlled_user_ids": list("flowControlledStaffIdList"),
                    "robot_code": code,
                    "msgtype": i.msgtype,
                    "sent_at": now_iso(),
                }))
            }
        }
    }

    async fn create_event(
        &self,
        ctx: &ActionContext<'_>,
        i: DingTalkEventInput,
    ) -> Result<Value, ApiError> {
        let union = union_id(ctx, &i.user_id)?;
        let time = |t: &chrono::DateTime<chrono::FixedOffset>| json!({ "dateTime": iso(t), "timeZone": "UTC" });
        let mut event = json!({
            "summary": i.summary,
            "start": time(&i.start),
            "end": time(&i.end),
            "isAllDay": false,
        });
        if let Some(d) = &i.description {
            event["description"] = json!(d);
        }
        if let Some(l) = &i.location {
            event["location"] = json!({ "displayName": l });
        }
        if !i.attendee_user_ids.is_empty() {
            event["attendees"] = Value::Array(
                i.attendee_user_ids
                    .iter()
                    .map(|u| json!({ "id": u, "isOptional": false }))
                    .collect(),
            );
        }
        let token = client_token(ctx, "dingtalk.create_event");
        let answer = if i.calendar_id == "primary" {
            self.client
                .create_calendar_event(&union, &event, &token)
                .await?
        } else {
            let path = format!(
                "/v1.0/calendar/users/{}/calendars/{}/events",
                urlencoding(&union),
                urlencoding(&i.calendar_id)
            );
            self.client
                .api(
                    reqwest::Method::POST,
                    "calendar.create",
                    &path,
                    Some(&event),
                    Some(&token),
                )
                .await?
        };
        Ok(json!({
            "id": answer["id"],
            "user_id": union,
            "calendar_id": i.calendar_id,
            "summary": i.summary,
            "start": iso(&i.start),
            "end": iso(&i.end),
            "location": i.location,
            "attendee_user_ids": i.attendee_user_ids.join(","),
            "created_at": now_iso(),
        }))
    }

    async fn create_todo(
        &self,
        ctx: &ActionContext<'_>,
        i: DingTalkTodoInput,
    ) -> Result<Value, ApiError> {
        let union = union_id(ctx, &i.user_id)?;
        let mut task = json!({ "subject": i.subject });
        if let Some(d) = &i.description {
            task["description"] = json!(d);
        }
        if let Some(d) = &i.due {
            task["dueTime"] = json!(d.timestamp_millis());
        }
        if !i.executor_user_ids.is_empty() {
            task["executorIds"] = json!(i.executor_user_ids);
        }
        let source_id = client_token(ctx, "dingtalk.create_todo");
        task["sourceId"] = json!(source_id);
        let answer = self.client.create_todo(&union, &task).await?;
        Ok(json!({
            "id": answer["id"],
            "user_id": union,
            "subject": i.subject,
            "due": i.due.as_ref().map(iso),
            "executor_user_ids": i.executor_user_ids.join(","),
            "source_id": source_id,
            "created_at": match ms(&answer["createdTime"]) {
                Value::Null => json!(now_iso()),
                t => t,
            },
        }))
    }
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[async_trait]
impl ActionBackend for DingTalkBackend {
    async fn call(&self, ctx: &ActionContext<'_>, call: BackendCall) -> Result<Value, ApiError> {
        match call {
            BackendCall::SendDingTalkMessage(i) => self.send_message(ctx, i).await,
            BackendCall::CreateDingTalkEvent(i) => self.create_event(ctx, i).await,
            BackendCall::CreateDingTalkTodo(i) => self.create_todo(ctx, i).await,
            _ => Err(ApiError::internal(
                "an Outlook action was sent to the DingTalk backend",
            )),
        }
    }
}
