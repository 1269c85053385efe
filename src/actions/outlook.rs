//! The Outlook [`ActionBackend`]: runs `outlook.*` actions with the [`GraphClient`].
//!
//! Idempotency upstream: an event carries a Graph `transactionId` and a task a
//! `linkedResources` external id derived from the caller and the request's
//! `Idempotency-Key`, so a retry that slips past the key store (a crash between the
//! Graph call and storing the answer) still creates one item; a contact is created with
//! the bridge's origin marker for the same handle. `sendMail` has no upstream handle
//! (Graph returns no id); the `Idempotency-Key` layer is what prevents a second send.
//! Every answer is one flat object (searches: an array of them) with ISO-8601 times.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    ActionBackend, ActionContext,
    call::{
        BackendCall, ContactInput, FindEventInput, FindMailInput, MarkReadInput, OutlookEventInput,
        SendMailInput, TaskInput,
    },
};
use crate::{
    error::ApiError,
    graph::{GraphClient, GraphError, LinkedResource, event_transaction_id},
};

/// Runs Outlook actions on Microsoft Graph.
pub struct OutlookBackend {
    graph: Arc<GraphClient>,
}

impl OutlookBackend {
    /// A backend on this client.
    pub fn new(graph: Arc<GraphClient>) -> Self {
        Self { graph }
    }
}

/// The upstream idempotency handle of one action call: derived from the caller and the
/// `Idempotency-Key` (stable across retries), random without a key.
pub fn upstream_handle(ctx: &ActionContext<'_>, action: &str) -> String {
    match ctx.idempotency_key {
        Some(k) => {
            let d = Sha256::digest(format!("{}:{action}:{k}", ctx.caller.id).as_bytes());
            format!("action-{}", hex::encode(&d[..16]))
        }
        None => format!("action-{}", uuid::Uuid::new_v4().simple()),
    }
}

fn name(call: &BackendCall) -> &'static str {
    match call {
        BackendCall::SendMail(_) => "outlook.send_mail",
        BackendCall::CreateOutlookEvent(_) => "outlook.create_event",
        BackendCall::CreateContact(_) => "outlook.create_contact",
        BackendCall::CreateTask(_) => "outlook.create_task",
        BackendCall::MarkRead(_) => "outlook.mark_read",
        BackendCall::FindMail(_) => "outlook.find_mail",
        BackendCall::FindEvent(_) => "outlook.find_event",
        BackendCall::SendDingTalkMessage(_) => "dingtalk.send_message",
        BackendCall::CreateDingTalkEvent(_) => "dingtalk.create_event",
        BackendCall::CreateDingTalkTodo(_) => "dingtalk.create_todo",
    }
}

pub(crate) fn iso(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn now_iso() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Graph's answer as an action error: Graph refusing a field's value (400) or not
/// finding the item a field names (404) is that field's fault (400 `invalid_input`);
/// everything else keeps the general mapping (429 with `Retry-After`, 502/503).
fn graph_error(e: GraphError, field: Option<&str>) -> ApiError {
    let status = e.status();
    if !matches!(status, Some(400 | 404)) {
        return ApiError::from(e);
    }
    let code = e.code().unwrap_or_default().to_string();
    let upstream = json!({ "service": "graph", "status": status, "graph_code": code });
    // The mailbox itself is unknown to Graph (or has no Exchange Online mailbox).
    let field = if matches!(
        code.as_str(),
        "MailboxNotEnabledForRESTAPI"
            | "ErrorInvalidUser"
            | "ResourceNotFound"
            | "Request_ResourceNotFound"
    ) {
        Some("mailbox")
    } else {
        field
    };
    match (status, field) {
        (Some(404), Some(field)) => {
            let mut api = ApiError::invalid_field(
                field,
                format!("Microsoft Graph found no such item ({code})"),
            );
            if let Some(d) = api.details.as_mut() {
                d["upstream"] = upstream;
            }
            api
        }
        (Some(400), Some(field)) => {
            let mut api =
                ApiError::invalid_field(field, format!("Microsoft Graph refused the value: {e}"));
            if let Some(d) = api.details.as_mut() {
                d["upstream"] = upstream;
            }
            api
        }
        (Some(400), None) => ApiError::new(
            crate::error::ErrorCode::InvalidInput,
            format!("Microsoft Graph refused the request: {e}"),
        )
        .with_details(json!({ "upstream": upstream })),
        _ => ApiError::from(e),
    }
}

fn recipients(addresses: &[String]) -> Value {
    Value::Array(
        addresses
            .iter()
            .map(|a| json!({ "emailAddress": { "address": a } }))
            .collect(),
    )
}

/// A Graph `dateTimeTimeZone` in UTC.
fn graph_time(t: &DateTime<FixedOffset>) -> Value {
    json!({
        "dateTime": t.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%S").to_string(),
        "timeZone": "UTC",
    })
}

/// A Graph `dateTimeTimeZone` as ISO-8601: UTC times get `Z`; other zones are given as
/// Graph wrote them (the zone is in the item's `time_zone`).
fn from_graph_time(v: &Value) -> Value {
    let Some(dt) = v["dateTime"].as_str() else {
        return Value::Null;
    };
    let utc = v["timeZone"]
        .as_str()
        .is_none_or(|z| z.eq_ignore_ascii_case("UTC"));
    let parsed = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f");
    match parsed {
        Ok(n) if utc => json!(n.and_utc().to_rfc3339_opts(SecondsFormat::Secs, true)),
        Ok(n) => json!(n.format("%Y-%m-%dT%H:%M:%S").to_string()),
        Err(_) => json!(dt),
    }
}

fn odata(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl OutlookBackend {
    async fn send_mail(
        &self,
        ctx: &ActionContext<'_>,
        i: SendMailInput,
    ) -> Result<Value, ApiError> {
        let mailbox = i.mailbox.clone().unwrap_or_default();
        let message = json!({
            "subject": i.subject,
            "body": {
                "contentType": if i.body_type == "html" { "html" } else { "text" },
                "content": i.body,
            },
            "toRecipients": recipients(&i.to),
            "ccRecipients": recipients(&i.cc),
            "bccRecipients": recipients(&i.bcc),
        });
        // With a key (a Zap's retries reuse it) and a copy in Sent Items, send through a
        // marked draft that a retry can find; otherwise `sendMail`, which cannot be found.
        let sent = match ctx.idempotency_key {
            Some(_) if i.save_to_sent_items => {
                self.graph
                    .send_mail_once(
                        &mailbox,
                        message,
                        &upstream_handle(ctx, "outlook.send_mail"),
                    )
                    .await
            }
            _ => {
                self.graph
                    .send_mail(&mailbox, message, i.save_to_sent_items)
                    .await
            }
        };
        sent.map_err(|e| graph_error(e, None))?;
        Ok(json!({
            "id": upstream_handle(ctx, "outlook.send_mail"),
            "mailbox": mailbox,
            "to": i.to.join(", "),
            "cc": i.cc.join(", "),
            "subject": i.subject,
            "sent_at": now_iso(),
        }))
    }

    async fn create_event(
        &self,
        ctx: &ActionContext<'_>,
        i: OutlookEventInput,
    ) -> Result<Value, ApiError> {
        let mailbox = i.mailbox.clone().unwrap_or_default();
        let (start, end) = if i.is_all_day {
            // All-day events run midnight to midnight in their zone.
            let s = i.start.date_naive();
            let mut e = i.end.date_naive();
            if e <= s {
                e = s.succ_opt().unwrap_or(s);
            }
            let day = |d: chrono::NaiveDate| json!({ "dateTime": format!("{}T00:00:00", d.format("%Y-%m-%d")), "timeZone": "UTC" });
            (day(s), day(e))
        } else {
            (graph_time(&i.start), graph_time(&i.end))
        };
        let mut event = json!({
            "subject": i.subject,
            "start": start,
            "end": end,
            "isAllDay": i.is_all_day,
            "attendees": i.attendees.iter().map(|a| json!({
                "emailAddress": { "address": a }, "type": "required",
            })).collect::<Vec<_>>(),
        });
        if let Some(l) = &i.location {
            event["location"] = json!({ "displayName": l });
        }
        if let Some(b) = &i.body {
            event["body"] = json!({ "contentType": "text", "content": b });
        }
        event["transactionId"] = json!(event_transaction_id(&upstream_handle(
            ctx,
            "outlook.create_event"
        )));
        let segments: Vec<&str> = match &i.calendar_id {
            Some(c) => vec!["calendars", c.as_str(), "events"],
            None => vec!["events"],
        };
        let field = i.calendar_id.as_ref().map(|_| "calendar_id");
        let created = self
            .graph
            .post_json(&mailbox, &segments, &event, true)
            .await
            .map_err(|e| graph_error(e, field))?;
        Ok(json!({
            "id": created["id"],
            "mailbox": mailbox,
            "calendar_id": i.calendar_id,
            "subject": i.subject,
            "start": iso(&i.start),
            "end": iso(&i.end),
            "is_all_day": i.is_all_day,
            "location": i.location,
            "attendees": i.attendees.join(", "),
            "web_link": created.get("webLink").cloned().unwrap_or(Value::Null),
            "created_at": now_iso(),
        }))
    }

    async fn create_contact(
        &self,
        ctx: &ActionContext<'_>,
        i: ContactInput,
    ) -> Result<Value, ApiError> {
        let mailbox = i.mailbox.clone().unwrap_or_default();
        let mut contact = json!({});
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                contact[k] = json!(v);
            }
        };
        set("givenName", &i.given_name);
        set("surname", &i.surname);
        set("companyName", &i.company_name);
        set("jobTitle", &i.job_title);
        set("mobilePhone", &i.mobile_phone);
        if let Some(e) = &i.email {
            contact["emailAddresses"] = json!([{ "address": e, "name": display(&i) }]);
        }
        let display_name = display(&i);
        if !display_name.is_empty() {
            contact["displayName"] = json!(display_name);
        }
        let created = match ctx.idempotency_key {
            Some(_) => {
                self.graph
                    .create_contact_once(
                        &mailbox,
                        contact,
                        &upstream_handle(ctx, "outlook.create_contact"),
                    )
                    .await
            }
            None => self
                .graph
                .create_contact(&mailbox, contact)
                .await
                .map(|id| crate::graph::Created { id, existed: false }),
        }
        .map_err(|e| graph_error(e, None))?;
        Ok(json!({
            "id": created.id,
            "mailbox": mailbox,
            "display_name": display_name,
            "given_name": i.given_name,
            "surname": i.surname,
            "email": i.email,
            "mobile_phone": i.mobile_phone,
            "company_name": i.company_name,
            "job_title": i.job_title,
            "created_at": now_iso(),
        }))
    }

    /// The list of `i.list_id`, else the user's default To Do list (well-known name
    /// `defaultList`), else a list named `Tasks` (created on first use).
    async fn todo_list(&self, mailbox: &str, given: &Option<String>) -> Result<String, ApiError> {
        if let Some(id) = given {
            return Ok(id.clone());
        }
        let lists = self
            .graph
            .get_query(mailbox, &["todo", "lists"], &[])
            .await
            .map_err(ApiError::from)?;
        let default = lists["value"].as_array().and_then(|ls| {
            ls.iter()
                .find(|l| l["wellknownListName"] == "defaultList")
                .and_then(|l| l["id"].as_str())
                .map(str::to_string)
        });
        match default {
            Some(id) => Ok(id),
            None => self
                .graph
                .ensure_todo_list(mailbox, "Tasks")
                .await
                .map_err(ApiError::from),
        }
    }

    async fn create_task(&self, ctx: &ActionContext<'_>, i: TaskInput) -> Result<Value, ApiError> {
        let mailbox = i.mailbox.clone().unwrap_or_default();
        let list_id = self.todo_list(&mailbox, &i.list_id).await?;
        let mut task = json!({ "title": i.title, "importance": i.importance });
        if let Some(b) = &i.body {
            task["body"] = json!({ "content": b, "contentType": "text" });
        }
        if let Some(d) = &i.due {
            task["dueDateTime"] = graph_time(d);
        }
        let link = LinkedResource {
            application_name: "dingbridge".into(),
            external_id: upstream_handle(ctx, "outlook.create_task"),
            display_name: Some("Created by a dingbridge action".into()),
            web_url: None,
        };
        let field = if i.list_id.is_some() {
            Some("list_id")
        } else {
            None
        };
        let created = self
            .graph
            .create_task_once(&mailbox, &list_id, task, &link)
            .await
            .map_err(|e| graph_error(e, field))?;
        Ok(json!({
            "id": created.id,
            "mailbox": mailbox,
            "list_id": list_id,
            "title": i.title,
            "due": i.due.as_ref().map(iso),
            "importance": i.importance,
            "created_at": now_iso(),
        }))
    }

    async fn mark_read(&self, i: MarkReadInput) -> Result<Value, ApiError> {
        let mailbox = i.mailbox.clone().unwrap_or_default();
        self.graph
            .set_read(&mailbox, &i.message_id, i.is_read)
            .await
            .map_err(|e| graph_error(e, Some("message_id")))?;
        Ok(json!({
            "id": i.message_id,
            "mailbox": mailbox,
            "is_read": i.is_read,
            "updated_at": now_iso(),
        }))
    }

    async fn find_mail(&self, i: FindMailInput) -> Result<Value, ApiError> {
        let mailbox = i.mailbox.clone().unwrap_or_default();
        let mut clauses = Vec::new();
        if i.unread_only {
            clauses.push("isRead eq false".to_string());
        }
        if let Some(f) = &i.from {
            clauses.push(format!("from/emailAddress/address eq {}", odata(f)));
        }
        if let Some(q) = &i.query {
            clauses.push(format!("contains(subject,{})", odata(q)));
        }
        let filter = clauses.join(" and ");
        let top = i.limit.to_string();
        let mut query = vec![
            ("$top", top.as_str()),
            (
                "$select",
                "id,subject,from,receivedDateTime,isRead,bodyPreview,webLink,conversationId",
            ),
        ];
        if !filter.is_empty() {
            query.push(("$filter", filter.as_str()));
        }
        let page = self
            .graph
            .get_query(&mailbox, &["messages"], &query)
            .await
            .map_err(|e| graph_error(e, Some("query")))?;
        let items = page["value"].as_array().cloned().unwrap_or_default();
        Ok(Value::Array(
            items
                .iter()
                .take(i.limit as usize)
                .map(|m| {
                    json!({
                        "id": m["id"],
                        "mailbox": mailbox,
                        "subject": m["subject"],
                        "from": m["from"]["emailAddress"]["address"],
                        "from_name": m["from"]["emailAddress"]["name"],
                        "received_at": m["receivedDateTime"],
                        "is_read": m["isRead"],
                        "preview": m["bodyPreview"],
                        "conversation_id": m["conversationId"],
                        "web_link": m.get("webLink").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect(),
        ))
    }

    async fn find_event(&self, i: FindEventInput) -> Result<Value, ApiError> {
        let mailbox = i.mailbox.clone().unwrap_or_default();
        let mut clauses = Vec::new();
        let utc = |t: &DateTime<FixedOffset>| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
        };
        if let Some(a) = &i.start_after {
            clauses.push(format!("start/dateTime ge {}", odata(&utc(a))));
        }
        if let Some(b) = &i.start_before {
            clauses.push(format!("start/dateTime lt {}", odata(&utc(b))));
        }
        if let Some(q) = &i.query {
            clauses.push(format!("contains(subject,{})", odata(q)));
        }
        let filter = clauses.join(" and ");
        let top = i.limit.to_string();
        let mut query = vec![
            ("$top", top.as_str()),
            ("$orderby", "start/dateTime"),
            (
                "$select",
                "id,subject,start,end,location,organizer,isAllDay,webLink",
            ),
        ];
        if !filter.is_empty() {
            query.push(("$filter", filter.as_str()));
        }
        let page = self
            .graph
            .get_query(&mailbox, &["events"], &query)
            .await
            .map_err(|e| graph_error(e, Some("query")))?;
        let items = page["value"].as_array().cloned().unwrap_or_default();
        Ok(Value::Array(
            items
                .iter()
                .take(i.limit as usize)
                .map(|e| {
                    json!({
                        "id": e["id"],
                        "mailbox": mailbox,
                        "subject": e["subject"],
                        "start": from_graph_time(&e["start"]),
                        "end": from_graph_time(&e["end"]),
                        "time_zone": e["start"]["timeZone"],
                        "is_all_day": e["isAllDay"],
                        "location": e["location"]["displayName"],
                        "organizer": e["organizer"]["emailAddress"]["address"],
                        "web_link": e.get("webLink").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect(),
        ))
    }
}

fn display(i: &ContactInput) -> String {
    let parts: Vec<&str> = [i.given_name.as_deref(), i.surname.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        i.email.clone().unwrap_or_default()
    } else {
        parts.join(" ")
    }
}

#[async_trait]
impl ActionBackend for OutlookBackend {
    async fn call(&self, ctx: &ActionContext<'_>, call: BackendCall) -> Result<Value, ApiError> {
        match call {
            BackendCall::SendMail(i) => self.send_mail(ctx, i).await,
            BackendCall::CreateOutlookEvent(i) => self.create_event(ctx, i).await,
            BackendCall::CreateContact(i) => self.create_contact(ctx, i).await,
            BackendCall::CreateTask(i) => self.create_task(ctx, i).await,
            BackendCall::MarkRead(i) => self.mark_read(i).await,
            BackendCall::FindMail(i) => self.find_mail(i).await,
            BackendCall::FindEvent(i) => self.find_event(i).await,
            other => Err(ApiError::internal(format!(
                "{} sent to the Outlook backend",
                name(&other)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_times_become_iso_8601() {
        assert_eq!(
            from_graph_time(&json!({"dateTime": "2026-03-01T09:00:00.0000000", "timeZone": "UTC"})),
            json!("2026-03-01T09:00:00Z")
        );
        let t = DateTime::parse_from_rfc3339("2026-03-01T17:00:00+08:00").expect("t");
        assert_eq!(graph_time(&t)["dateTime"], "2026-03-01T09:00:00");
        assert_eq!(odata("O'Brien"), "'O''Brien'");
    }

    fn api(status: u16, code: &str) -> GraphError {
        GraphError::Api {
            status,
            code: code.into(),
            message: "m".into(),
            request_id: None,
            client_request_id: "c".into(),
            retry_after: None,
        }
    }

    #[test]
    fn graph_refusals_name_the_field_and_outages_stay_upstream_errors() {
        let e = graph_error(api(404, "ErrorItemNotFound"), Some("message_id"));
        assert_eq!(e.code.as_str(), "invalid_input");
        assert!(e.details.as_ref().expect("d")["fields"]["message_id"].is_string());
        let e = graph_error(api(404, "MailboxNotEnabledForRESTAPI"), Some("message_id"));
        assert!(e.details.as_ref().expect("d")["fields"]["mailbox"].is_string());
        let e = graph_error(api(400, "ErrorInvalidRecipients"), None);
        assert_eq!(e.code.as_str(), "invalid_input");
        assert_eq!(
            e.details.as_ref().expect("d")["upstream"]["graph_code"],
            "ErrorInvalidRecipients"
        );
        assert_eq!(
            graph_error(api(503, "x"), None).code.as_str(),
            "upstream_unavailable"
        );
        assert_eq!(
            graph_error(api(403, "ErrorAccessDenied"), None)
                .code
                .as_str(),
            "upstream_error"
        );
    }
}
