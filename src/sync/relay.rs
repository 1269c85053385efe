//! The `dingtalk.event` job handler: moves one normalised DingTalk event into the Outlook
//! mailbox of every route that wants it ([`super::routes`]), touching no other mailbox.
//!
//! On arrival (once per job) the event is audited as `dingtalk.<kind>.<action>` and the
//! matching Zapier/n8n trigger is published (`dingtalk.message.received`,
//! `dingtalk.calendar.changed`, `dingtalk.todo.changed`) whether or not a route takes it:
//! trigger users want DingTalk's events, not the bridge's relays. Publishing is idempotent
//! (stable trigger ids), so a retried job does not publish twice.
//!
//! Then, per matching route:
//! - message → a received mail item in the route's folder (created on first use), with
//!   the sender, conversation, time, text, a link back and the attachments (robot file and
//!   picture messages carry a `downloadCode`, exchanged through DingTalk's API), marked
//!   unread once complete;
//! - calendar event → the DingTalk event fetched and written as an Outlook event (wall
//!   time and zone kept, `transactionId` from the DingTalk id); updates patch it;
//! - todo → a Microsoft To Do task in the route's list, linked back with
//!   `linkedResources.externalId`; updates patch it;
//! - contact → the DingTalk user as an Outlook contact; updates patch it.
//!
//! Deletes happen only where the route has `allow_deletes`; otherwise they are audited as
//! `delete_skipped`. Every item carries the bridge's origin marker and is created with the
//! client's `create_*_once`, so a retry (even after a crash mid-write) finds it instead of
//! creating a second one. The id pair goes into the store's mapping (namespace
//! `relay:<kind>:<route>`, both directions) and a short-lived echo guard
//! (`echo:graph:<graph id>`) lets the Outlook → DingTalk direction ignore the bridge's own
//! writes. A todo event for a DingTalk todo the Outlook → DingTalk relay made for a mail
//! (read state, `mail` + `todo` routes) is not relayed as a task: a todo done marks the
//! mail read, once. Every step is audited as `relay.<kind>.<action>` with the route, ids and target
//! id, never message text or secrets.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{
    Action, EventKind, SyncEvent,
    keys::{TASK_SOURCE_PREFIX, map_namespace, version_key},
    mapping::{self, ChatMessage},
    routes::{Routes, route_kind},
};
use crate::{
    config::RouteConfig,
    dingtalk::client::DingTalkClient,
    graph::{
        GraphClient, GraphError,
        client::{Created, LinkedResource, UPLOAD_SESSION_MAX},
    },
    jobs::Task,
    store::{AuditEntry, Job, SharedStore, Side, StoreError},
    sync::outbound_relay,
    triggers::{self, TriggerEvent},
    worker::{JobFailure, JobHandler},
};

/// How long the echo guard of a written Graph item lives.
pub const ECHO_TTL: Duration = Duration::from_secs(10 * 60);
/// How long per-item progress marks (attachments done, message complete) live.
const PROGRESS_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long the "arrival handled" mark of a job lives.
const ARRIVAL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// DingTalk API that exchanges a robot message's `downloadCode` for a URL.
pub const MESSAGE_FILE_DOWNLOAD_PATH: &str = "/v1.0/robot/messageFiles/download";

/// Store key of the echo guard for a Graph item the bridge just wrote.
pub fn echo_key(graph_id: &str) -> String {
    format!("echo:graph:{graph_id}")
}

fn store_failure(e: StoreError) -> JobFailure {
    JobFailure::transient(format!("store: {e}"))
}

/// What one relay step did, for the audit trail.
#[derive(Debug, Clone)]
struct Outcome {
    /// The DingTalk item (message, event, task or user id).
    item: String,
    /// The Graph item written or found.
    target_id: Option<String>,
    /// `created`, `existed`, `updated`, `deleted`, `delete_skipped`, …
    result: &'static str,
}

impl Outcome {
    fn new(item: &str, target_id: Option<String>, result: &'static str) -> Self {
        Self {
            item: item.to_string(),
            target_id,
            result,
        }
    }
}

/// One file a DingTalk message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFile {
    /// The code to exchange for a download URL.
    pub download_code: String,
    /// File name for the attachment.
    pub name: String,
}

/// The `content` object of a robot message (an object, or JSON in a string).
fn content(raw: &Value) -> Value {
    match raw.get("content") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}

/// The files of a robot message: `file`, `picture`, `video`, `audio` carry one
/// `downloadCode`; `richText` one per picture.
pub fn message_files(raw: &Value) -> Vec<MessageFile> {
    let msgtype = raw.get("msgtype").and_then(Value::as_str).unwrap_or("");
    let c = content(raw);
    let code = |v: &Value| {
        v.get("downloadCode")
            .or_else(|| v.get("pictureDownloadCode"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match msgtype {
        "file" | "picture" | "video" | "audio" => {
            let Some(download_code) = code(&c) else {
                return Vec::new();
            };
            let name = c
                .get("fileName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| match msgtype {
                    "picture" => "picture.png".into(),
                    "video" => format!(
                        "video.{}",
                        c.get("videoType").and_then(Value::as_str).unwrap_or("mp4")
                    ),
                    "audio" => "audio.amr".into(),
                    _ => "file".into(),
                });
            vec![MessageFile {
                download_code,
                name,
            }]
        }
        "richText" => c
            .get("richText")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(code)
            .enumerate()
            .map(|(i, download_code)| MessageFile {
                download_code,
                name: format!("picture-{}.png", i + 1),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What a relayed message shows: sender, conversation, time, text and a link back.
pub fn chat_message(event: &SyncEvent, fallback_ms: i64) -> ChatMessage {
    let raw = &event.raw;
    let s = |k: &str| {
        raw.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let c = content(raw);
    let text = event.text.clone().unwrap_or_else(|| {
        match raw.get("msgtype").and_then(Value::as_str).unwrap_or("") {
            "richText" => c
                .get("richText")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            "file" => format!(
                "[file] {}",
                c.get("fileName").and_then(Value::as_str).unwrap_or("")
            ),
            "picture" => "[picture]".into(),
            "audio" => c
                .get("recognition")
                .and_then(Value::as_str)
                .map(|r| format!("[voice] {r}"))
                .unwrap_or_else(|| "[voice]".into()),
            "video" => "[video]".into(),
            other => format!("[{other}]"),
        }
    });
    let conversation_id = event.ids.get("conversation_id").cloned();
    let group = event.ids.get("conversation_type").map(String::as_str) == Some("2");
    ChatMessage {
        sender: s("senderNick")
            .or_else(|| event.ids.get("sender_staff_id").cloned())
            .unwrap_or_else(|| "DingTalk user".into()),
        conversation: s("conversationTitle").unwrap_or_else(|| {
            if group {
                "DingTalk group".into()
            } else {
                "1:1 chat".into()
            }
        }),
        sent_at_ms: event.occurred_at_ms.unwrap_or(fallback_ms),
        text,
        // DingTalk documents no deep link to one message; this opens the conversation in
        // the DingTalk client (scheme as used by DingTalk's own share links, unverified).
        link: conversation_id.map(|cid| {
            format!(
                "dingtalk://dingtalkclient/action/chat?conversationId={}",
                percent_encoding::utf8_percent_encode(&cid, percent_encoding::NON_ALPHANUMERIC)
            )
        }),
    }
}

/// The `dingtalk.event` handler.
pub struct RelayHandler {
    store: SharedStore,
    routes: Routes,
    graph: Option<Arc<GraphClient>>,
    dingtalk: Option<Arc<DingTalkClient>>,
    http: reqwest::Client,
}

impl RelayHandler {
    /// A handler relaying along `routes` with these clients (`None` when not configured).
    pub fn new(
        store: SharedStore,
        routes: Routes,
        graph: Option<Arc<GraphClient>>,
        dingtalk: Option<Arc<DingTalkClient>>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            store,
            routes,
            graph,
            dingtalk,
            http,
        }
    }

    fn dingtalk(&self) -> Result<&DingTalkClient, JobFailure> {
        self.dingtalk.as_deref().ok_or_else(|| {
            JobFailure::permanent(
                "a route needs DingTalk's API but the app credentials are not configured; set DINGBRIDGE_DINGTALK_APP_KEY and DINGBRIDGE_DINGTALK_APP_SECRET",
            )
        })
    }

    async fn audit(&self, action: String, detail: Value) -> Result<(), JobFailure> {
        self.store
            .audit_append(&AuditEntry::now(action, detail))
            .await
            .map_err(store_failure)
    }

    async fn audit_outcome(
        &self,
        event: &SyncEvent,
        route: &RouteConfig,
        job: &Job,
        o: &Outcome,
    ) -> Result<(), JobFailure> {
        tracing::info!(
            route = %route.name,
            kind = event.kind.as_str(),
            action = event.action.as_str(),
            result = o.result,
            target_id = o.target_id.as_deref().unwrap_or(""),
            "relayed DingTalk event"
        );
        self.audit(
            format!("relay.{}.{}", event.kind.as_str(), event.action.as_str()),
            json!({
                "job_id": job.id,
                "route": route.name,
                "mailbox": route.mailbox,
                "item": o.item,
                "ids": event.ids,
                "target_id": o.target_id,
                "result": o.result,
            }),
        )
        .await
    }

    /// Once per job: the arrival audit entry and the trigger.
    async fn on_arrival(&self, job: &Job, event: &SyncEvent) -> Result<(), JobFailure> {
        let first = self
            .store
            .seen("relay.arrival", &job.id, ARRIVAL_TTL)
            .await
            .map_err(store_failure)?;
        if first {
            self.audit(
                event.audit_action(),
                json!({
                    "job_id": job.id,
                    "ids": event.ids,
                    "occurred_at_ms": event.occurred_at_ms,
                }),
            )
            .await?;
        }
        // Idempotent (stable ids), so it is safe on every attempt and makes sure a crash
        // between the mark and the publish loses nothing.
        if let Some(t) = trigger_of(event, job.enqueued_at_ms) {
            triggers::publish(self.store.as_ref(), &t)
                .await
                .map_err(store_failure)?;
        }
        Ok(())
    }

    async fn guard_echo(&self, graph_id: &str, source: &str) -> Result<(), JobFailure> {
        self.store
            .kv_put(&echo_key(graph_id), source, Some(ECHO_TTL))
            .await
            .map_err(store_failure)
    }

    // ----- messages ------------------------------------------------------------------

    async fn relay_message(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
        job: &Job,
    ) -> Result<Outcome, JobFailure> {
        let Some(msg_id) = event.ids.get("message_id") else {
            return Ok(Outcome::new("", None, "skipped_without_message_id"));
        };
        let mailbox = route.mailbox.as_str();
        let ns = map_namespace("message", &route.name);
        let done_key = format!("{ns}:done:{msg_id}");
        let store = &self.store;
        if let Some(id) = store.kv_get(&done_key).await.map_err(store_failure)? {
            return Ok(Outcome::new(msg_id, Some(id), "already_relayed"));
        }
        let source = mapping::origin("message", msg_id);
        let mapped = store
            .map_get(&ns, Side::Left, msg_id)
            .await
            .map_err(store_failure)?;
        let (graph_id, result) = match mapped {
            Some(id) => (id, "resumed"),
            None => {
                let folder = graph.ensure_mail_folder(mailbox, &route.folder).await?;
                let body = mapping::mail_from_chat(
                    &chat_message(event, job.enqueued_at_ms),
                    mailbox,
                    &source,
                    &route.time_zone,
                );
                let created = match graph
                    .create_message_once(mailbox, &folder, body, &source)
                    .await
                {
                    Ok(c) => c,
                    Err(e) if e.is_not_found() => {
                        // The folder was deleted in Outlook: find or create it again next time.
                        graph.forget_cached_ids(mailbox);
                        return Err(JobFailure::transient(format!(
                            "folder `{}` is gone: {e}",
                            route.folder
                        )));
                    }
                    Err(e) => return Err(e.into()),
                };
                store
                    .map_put(&ns, msg_id, &created.id)
                    .await
                    .map_err(store_failure)?;
                self.guard_echo(&created.id, &source).await?;
                let result = if created.existed {
                    "existed"
                } else {
                    "created"
                };
                (created.id, result)
            }
        };
        let files = message_files(&event.raw);
        let attachment_key = |i: usize| format!("{ns}:attachment:{msg_id}:{i}");
        // The item was deleted in Outlook before the relay finished: forget it (and its
        // attachments) and write it again on the next attempt.
        let (ns_ref, n_files, key_of) = (&ns, files.len(), &attachment_key);
        let gone = |e: GraphError| async move {
            if !e.is_not_found() {
                return JobFailure::from(e);
            }
            if let Err(s) = store.map_delete(ns_ref, Side::Left, msg_id).await {
                return store_failure(s);
            }
            for i in 0..n_files {
                if let Err(s) = store.kv_delete(&key_of(i)).await {
                    return store_failure(s);
                }
            }
            JobFailure::transient(format!(
                "the relayed message is gone ({e}); writing it again"
            ))
        };
        for (i, file) in files.iter().enumerate() {
            let key = attachment_key(i);
            if store.kv_get(&key).await.map_err(store_failure)?.is_some() {
                continue;
            }
            let (bytes, content_type) = self.download(route, event, file).await?;
            let attachment = match graph
                .add_attachment(mailbox, &graph_id, &file.name, &content_type, bytes)
                .await
            {
                Ok(a) => a,
                Err(e) => return Err(gone(e).await),
            };
            store
                .kv_put(
                    &key,
                    attachment.as_deref().unwrap_or("done"),
                    Some(PROGRESS_TTL),
                )
                .await
                .map_err(store_failure)?;
        }
        // Created as a received item, which Graph stores read; new chat shows unread.
        if let Err(e) = graph.set_read(mailbox, &graph_id, false).await {
            return Err(gone(e).await);
        }
        store
            .kv_put(&done_key, &graph_id, Some(PROGRESS_TTL))
            .await
            .map_err(store_failure)?;
        Ok(Outcome::new(msg_id, Some(graph_id), result))
    }

    /// Exchanges a `downloadCode` for a URL and fetches the bytes.
    async fn download(
        &self,
        route: &RouteConfig,
        event: &SyncEvent,
        file: &MessageFile,
    ) -> Result<(Bytes, String), JobFailure> {
        let dingtalk = self.dingtalk()?;
        let robot_code = event
            .ids
            .get("robot_code")
            .cloned()
            .or_else(|| route.dingtalk.robot_code.clone())
            .ok_or_else(|| {
                JobFailure::permanent(format!(
                    "message file without robotCode; set routes.dingtalk.robot_code of route `{}`",
                    route.name
                ))
            })?;
        let answer = dingtalk
            .api(
                reqwest::Method::POST,
                "robot.messageFiles.download",
                MESSAGE_FILE_DOWNLOAD_PATH,
                Some(&json!({ "downloadCode": file.download_code, "robotCode": robot_code })),
                None,
            )
            .await?;
        let url = answer
            .get("downloadUrl")
            .and_then(Value::as_str)
            .ok_or_else(|| JobFailure::transient("DingTalk gave no downloadUrl"))?;
        let resp = self
            .http
            .get(url)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| JobFailure::transient(format!("file download: {}", e.without_url())))?;
        let status = resp.status();
        if !status.is_success() {
            // The URL is short-lived; the next attempt asks for a new one.
            return Err(JobFailure::transient(format!(
                "file download answered {status}"
            )));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > UPLOAD_SESSION_MAX)
        {
            return Err(JobFailure::permanent(format!(
                "attachment `{}` is larger than Outlook's {} MB",
                file.name,
                UPLOAD_SESSION_MAX / (1024 * 1024)
            )));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .unwrap_or("application/octet-stream")
            .to_string();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| JobFailure::transient(format!("file download: {}", e.without_url())))?;
        Ok((bytes, content_type))
    }

    // ----- calendar ------------------------------------------------------------------

    async fn relay_calendar(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
    ) -> Result<Outcome, JobFailure> {
        let Some(id) = event.ids.get("calendar_event_id") else {
            return Ok(Outcome::new("", None, "skipped_without_event_id"));
        };
        let mailbox = route.mailbox.as_str();
        let ns = map_namespace("event", &route.name);
        let source = mapping::origin("event", id);
        let mapped = self
            .store
            .map_get(&ns, Side::Left, id)
            .await
            .map_err(store_failure)?;
        if event.action == Action::Deleted {
            return self
                .delete_mapped(route, &ns, id, mapped, |gid| async move {
                    graph.delete_event(mailbox, &gid).await
                })
                .await;
        }
        let union = route.dingtalk.union_id.as_deref().unwrap_or_default();
        let calendar = event
            .ids
            .get("calendar_id")
            .map(String::as_str)
            .unwrap_or("primary");
        let ding = match self
            .dingtalk()?
            .get_calendar_event(union, calendar, id)
            .await
        {
            Ok(v) => v,
            Err(e) if e.status == 404 => return Ok(Outcome::new(id, mapped, "source_gone")),
            Err(e) => return Err(e.into()),
        };
        let body = mapping::event_from_dingtalk(&ding, &source, &route.time_zone)
            .ok_or_else(|| JobFailure::permanent("DingTalk event has no start or end"))?;
        self.upsert(
            &ns,
            id,
            mapped,
            &source,
            |gid| {
                let body = body.clone();
                async move { graph.update_event(mailbox, &gid, body).await }
            },
            || graph.create_event_once(mailbox, body.clone(), &source),
        )
        .await
    }

    /// Writes a DingTalk object's Graph counterpart: PATCHes the paired item; when there
    /// is none (or it was deleted in Outlook meanwhile) creates it once — `create` finds
    /// an earlier attempt's item by its origin, which is then patched — and records the
    /// pair. Either way the item gets an echo guard for `source`.
    async fn upsert<U, UF, C, CF>(
        &self,
        ns: &str,
        id: &str,
        mapped: Option<String>,
        source: &str,
        update: U,
        create: C,
    ) -> Result<Outcome, JobFailure>
    where
        U: Fn(String) -> UF,
        UF: std::future::Future<Output = Result<(), GraphError>>,
        C: FnOnce() -> CF,
        CF: std::future::Future<Output = Result<Created, GraphError>>,
    {
        if let Some(gid) = mapped {
            match update(gid.clone()).await {
                Ok(()) => {
                    self.guard_echo(&gid, source).await?;
                    return Ok(Outcome::new(id, Some(gid), "updated"));
                }
                // Deleted in Outlook meanwhile: write it again below.
                Err(e) if e.is_not_found() => {
                    self.store
                        .map_delete(ns, Side::Left, id)
                        .await
                        .map_err(store_failure)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let created = create().await?;
        if created.existed {
            // A previous attempt created it; make sure it carries this change.
            update(created.id.clone()).await?;
        }
        self.store
            .map_put(ns, id, &created.id)
            .await
            .map_err(store_failure)?;
        self.guard_echo(&created.id, source).await?;
        let result = if created.existed {
            "updated"
        } else {
            "created"
        };
        Ok(Outcome::new(id, Some(created.id), result))
    }

    /// Deletes the mapped Graph item when the route allows deletes.
    async fn delete_mapped<F, Fut>(
        &self,
        route: &RouteConfig,
        ns: &str,
        id: &str,
        mapped: Option<String>,
        delete: F,
    ) -> Result<Outcome, JobFailure>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), GraphError>>,
    {
        let Some(gid) = mapped else {
            return Ok(Outcome::new(id, None, "delete_unmapped"));
        };
        if !route.allow_deletes {
            return Ok(Outcome::new(id, Some(gid), "delete_skipped"));
        }
        delete(gid.clone()).await?;
        self.store
            .map_delete(ns, Side::Left, id)
            .await
            .map_err(store_failure)?;
        Ok(Outcome::new(id, Some(gid), "deleted"))
    }

    // ----- todo ------------------------------------------------------------------------

    async fn relay_todo(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
    ) -> Result<Outcome, JobFailure> {
        let Some(id) = event.ids.get("task_id") else {
            return Ok(Outcome::new("", None, "skipped_without_task_id"));
        };
        let mailbox = route.mailbox.as_str();
        let ns = map_namespace("todo", &route.name);
        let mapped = self
            .store
            .map_get(&ns, Side::Left, id)
            .await
            .map_err(store_failure)?;
        if event.action == Action::Deleted {
            if mapped.is_some() && route.allow_deletes {
                let list = graph.ensure_todo_list(mailbox, &route.todo_list).await?;
                return self
                    .delete_mapped(route, &ns, id, mapped, |gid| async move {
                        graph.delete_task(mailbox, &list, &gid).await
                    })
                    .await;
            }
            return self
                .delete_mapped(route, &ns, id, mapped, |_| async { Ok(()) })
                .await;
        }
        let union = route.dingtalk.union_id.as_deref().unwrap_or_default();
        let task = match self.dingtalk()?.get_todo(union, id).await {
            Ok(v) => v,
            Err(e) if e.status == 404 => return Ok(Outcome::new(id, mapped, "source_gone")),
            Err(e) => return Err(e.into()),
        };
        let source = task.get("sourceId").and_then(Value::as_str).unwrap_or("");
        if source.starts_with(outbound_relay::TODO_SOURCE_PREFIX) {
            // A todo the Outlook → DingTalk relay made for a mail (before its id pair
            // was visible): it is the mail's read state, not a To Do task.
            return Ok(Outcome::new(id, mapped, "echo_skipped"));
        }
        if mapped.is_none() && source.starts_with(TASK_SOURCE_PREFIX) {
            // Made for an Outlook task by the To Do poller, whose id pair is not visible
            // yet: the task exists already.
            return Ok(Outcome::new(id, mapped, "echo_skipped"));
        }
        let mut body = mapping::task_from_dingtalk(&task, id);
        let version = mapping::task_version(&body);
        let version_key = |gid: &str| version_key(&route.name, gid);
        if let Some(gid) = &mapped
            && self
                .store
                .kv_get(&version_key(gid))
                .await
                .map_err(store_failure)?
                .as_deref()
                == Some(version.as_str())
        {
            // The task holds this content already (often the poller's own write).
            return Ok(Outcome::new(id, mapped, "unchanged"));
        }
        // The client adds the link itself; a PATCH must not add a second one.
        let link = body
            .as_object_mut()
            .and_then(|o| o.remove("linkedResources"))
            .and_then(|l| l.get(0).cloned())
            .unwrap_or_default();
        let link = LinkedResource {
            application_name: mapping::LINKED_APP_NAME.to_string(),
            external_id: id.clone(),
            display_name: link
                .get("displayName")
                .and_then(Value::as_str)
                .map(str::to_string),
            web_url: link
                .get("webUrl")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let list = graph.ensure_todo_list(mailbox, &route.todo_list).await?;
        let outcome = self
            .upsert(
                &ns,
                id,
                mapped,
                &mapping::origin("todo", id),
                |gid| {
                    let (body, list) = (body.clone(), list.as_str());
                    async move { graph.update_task(mailbox, list, &gid, body).await }
                },
                || graph.create_task_once(mailbox, &list, body.clone(), &link),
            )
            .await?;
        if let Some(gid) = &outcome.target_id {
            self.store
                .kv_put(&version_key(gid), &version, None)
                .await
                .map_err(store_failure)?;
        }
        Ok(outcome)
    }

    // ----- contacts ----------------------------------------------------------------------

    async fn relay_contact(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
        user_id: &str,
    ) -> Result<Outcome, JobFailure> {
        let mailbox = route.mailbox.as_str();
        let ns = map_namespace("contact", &route.name);
        let source = mapping::origin("contact", user_id);
        let mapped = self
            .store
            .map_get(&ns, Side::Left, user_id)
            .await
            .map_err(store_failure)?;
        if event.action == Action::Deleted {
            return self
                .delete_mapped(route, &ns, user_id, mapped, |gid| async move {
                    graph.delete_contact(mailbox, &gid).await
                })
                .await;
        }
        let user = self.dingtalk()?.get_user(user_id).await?;
        let body = mapping::contact_from_dingtalk(&user, &source);
        self.upsert(
            &ns,
            user_id,
            mapped,
            &source,
            |gid| {
                let body = body.clone();
                async move { graph.update_contact(mailbox, &gid, body).await }
            },
            || graph.create_contact_once(mailbox, body.clone(), &source),
        )
        .await
    }

    async fn relay_route(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
        job: &Job,
    ) -> Result<(), JobFailure> {
        // Two events for one calendar event or todo (create and update, or redeliveries
        // with new event ids) may run at once on two instances: one at a time per item,
        // so the second finds the first's id pair instead of writing again.
        let item = match event.kind {
            EventKind::CalendarEvent => event.ids.get("calendar_event_id"),
            EventKind::Todo => event.ids.get("task_id"),
            _ => None,
        };
        let Some(item) = item else {
            return self.relay_route_now(graph, route, event, job).await;
        };
        let claim = format!(
            "relay:dingtalk:{}:{}:{item}",
            route.name,
            event.kind.as_str()
        );
        let token = crate::store::lease_wait(
            self.store.as_ref(),
            &claim,
            Duration::from_secs(60),
            Duration::from_secs(5),
        )
        .await
        .map_err(store_failure)?
        .ok_or_else(|| {
            JobFailure::transient("item is being relayed by another job")
                .retry_after(Duration::from_secs(1))
        })?;
        let result = self.relay_route_now(graph, route, event, job).await;
        let _ = self.store.lease_release(&claim, &token).await;
        result
    }

    async fn relay_route_now(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
        job: &Job,
    ) -> Result<(), JobFailure> {
        let outcomes = match event.kind {
            EventKind::Message => vec![self.relay_message(graph, route, event, job).await?],
            EventKind::CalendarEvent => vec![self.relay_calendar(graph, route, event).await?],
            EventKind::Todo => vec![self.relay_todo(graph, route, event).await?],
            EventKind::Contact => {
                let users = event.ids.get("user_ids").cloned().unwrap_or_default();
                for user in users.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                    let o = self.relay_contact(graph, route, event, user).await?;
                    self.audit_outcome(event, route, job, &o).await?;
                }
                return Ok(());
            }
            _ => Vec::new(),
        };
        for o in &outcomes {
            self.audit_outcome(event, route, job, o).await?;
        }
        Ok(())
    }
}

/// The trigger a DingTalk event publishes, when its kind has one. Ids are stable for the
/// same event, so publishing again (a retry) records and delivers nothing new.
pub fn trigger_of(event: &SyncEvent, fallback_ms: i64) -> Option<TriggerEvent> {
    let at_ms = event.occurred_at_ms.unwrap_or(fallback_ms);
    let at: DateTime<Utc> = DateTime::from_timestamp_millis(at_ms).unwrap_or_else(Utc::now);
    let id = |k: &str| event.ids.get(k).cloned().unwrap_or_default();
    match event.kind {
        EventKind::Message => {
            let msg_id = event.ids.get("message_id")?;
            let m = chat_message(event, fallback_ms);
            Some(
                TriggerEvent::created(triggers::DINGTALK_MESSAGE_RECEIVED, msg_id, at)
                    .field("conversation_id", id("conversation_id"))
                    .field("conversation_title", m.conversation)
                    .field("conversation_type", id("conversation_type"))
                    .field("sender_name", m.sender)
                    .field("sender_staff_id", id("sender_staff_id"))
                    .field("msgtype", id("msgtype"))
                    .field("text", m.text),
            )
        }
        EventKind::CalendarEvent => {
            let eid = event.ids.get("calendar_event_id")?;
            Some(
                TriggerEvent::changed(triggers::DINGTALK_CALENDAR_CHANGED, eid, at)
                    .field("change", event.action.as_str())
                    .field("calendar_id", id("calendar_id"))
                    .field("union_ids", id("union_ids")),
            )
        }
        EventKind::Todo => {
            let tid = event.ids.get("task_id")?;
            Some(
                TriggerEvent::changed(triggers::DINGTALK_TODO_CHANGED, tid, at)
                    .field("change", event.action.as_str())
                    .field("union_ids", id("union_ids")),
            )
        }
        _ => None,
    }
}

#[async_trait]
impl JobHandler for RelayHandler {
    async fn handle(&self, job: &Job, task: Task) -> Result<(), JobFailure> {
        let Task::DingtalkEvent(event) = task else {
            return Err(JobFailure::wrong_kind(&task));
        };
        self.on_arrival(job, &event).await?;
        if self.todo_read_state(&event, job).await? {
            return Ok(());
        }
        let routes = self.routes.matching(&event);
        if routes.is_empty() {
            let why = if route_kind(event.kind).is_none() {
                "not_relayed"
            } else {
                "unrouted"
            };
            return self
                .audit(
                    format!("relay.{}.{}", event.kind.as_str(), event.action.as_str()),
                    json!({ "job_id": job.id, "ids": event.ids, "result": why }),
                )
                .await;
        }
        let graph = self.graph.as_deref().ok_or_else(|| {
            JobFailure::permanent(
                "a route matches but Microsoft Graph is not configured; set DINGBRIDGE_GRAPH_TENANT_ID, DINGBRIDGE_GRAPH_CLIENT_ID and a credential",
            )
        })?;
        if let Some(origin) = self.written_by_bridge(&event).await? {
            // Loop prevention: the Outlook → DingTalk relay wrote this DingTalk object.
            return self
                .audit(
                    format!("relay.{}.{}", event.kind.as_str(), event.action.as_str()),
                    json!({ "job_id": job.id, "ids": event.ids, "result": "echo_skipped", "outlook_id": origin }),
                )
                .await;
        }
        for route in routes {
            self.relay_route(graph, route, &event, job).await?;
        }
        Ok(())
    }
}

impl RelayHandler {
    /// Read state, DingTalk → Outlook: an event for a DingTalk todo the Outlook → DingTalk
    /// relay made for a mail (see [`outbound_relay::carries_read_state`]) is never
    /// relayed as a To Do task; when the todo is done, the mail is marked read, once.
    /// `true` when the event was such a todo's.
    async fn todo_read_state(&self, event: &SyncEvent, job: &Job) -> Result<bool, JobFailure> {
        if event.kind != EventKind::Todo {
            return Ok(false);
        }
        let Some(task_id) = event.ids.get("task_id") else {
            return Ok(false);
        };
        for route in self
            .routes
            .all()
            .iter()
            .filter(|r| outbound_relay::carries_read_state(r))
        {
            let Some(gid) = self
                .store
                .map_get(
                    &outbound_relay::mail_todo_ns(&route.name),
                    Side::Left,
                    task_id,
                )
                .await
                .map_err(store_failure)?
            else {
                continue;
            };
            let result = self.todo_done_to_read(route, event, task_id, &gid).await?;
            let o = Outcome::new(task_id, Some(gid), result);
            self.audit_outcome(event, route, job, &o).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn todo_done_to_read(
        &self,
        route: &RouteConfig,
        event: &SyncEvent,
        task_id: &str,
        gid: &str,
    ) -> Result<&'static str, JobFailure> {
        if event.action != Action::Updated {
            return Ok("read_state_unchanged");
        }
        if self
            .store
            .kv_get(&format!("echo:dingtalk:{task_id}"))
            .await
            .map_err(store_failure)?
            .is_some_and(|v| v.starts_with("read:"))
        {
            // The bridge itself marked it done (the mail was read in Outlook).
            return Ok("echo_skipped");
        }
        let union = route.dingtalk.union_id.as_deref().unwrap_or_default();
        let task = match self.dingtalk()?.get_todo(union, task_id).await {
            Ok(v) => v,
            Err(e) if e.status == 404 => return Ok("source_gone"),
            Err(e) => return Err(e.into()),
        };
        if task.get("done").and_then(Value::as_bool) != Some(true) {
            return Ok("not_done");
        }
        let graph = self.graph.as_deref().ok_or_else(|| {
            JobFailure::permanent("read state needs Microsoft Graph, which is not configured")
        })?;
        // One writer per mail at a time (the Outlook → DingTalk relay claims the same).
        let claim = format!("relay:graph:{gid}");
        let token = uuid::Uuid::new_v4().to_string();
        if !self
            .store
            .lease_acquire(&claim, &token, Duration::from_secs(60))
            .await
            .map_err(store_failure)?
        {
            return Err(
                JobFailure::transient("mail is being relayed by another job")
                    .retry_after(Duration::from_secs(1)),
            );
        }
        let result = self.mark_read(graph, route, task_id, gid).await;
        let _ = self.store.lease_release(&claim, &token).await;
        result
    }

    async fn mark_read(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        task_id: &str,
        gid: &str,
    ) -> Result<&'static str, JobFailure> {
        let mailbox = route.mailbox.as_str();
        let path = format!(
            "messages/{}?$select=id,isRead",
            percent_encoding::utf8_percent_encode(gid, percent_encoding::NON_ALPHANUMERIC)
        );
        match graph.get(mailbox, &path).await {
            Ok(m) if m.get("isRead").and_then(Value::as_bool) == Some(true) => {
                return Ok("already_read");
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok("target_gone"),
            Err(e) => return Err(e.into()),
        }
        // The guard first: the `updated` notification for this write must find it.
        self.store
            .kv_put(&echo_key(gid), &format!("done:{task_id}"), Some(ECHO_TTL))
            .await
            .map_err(store_failure)?;
        graph.set_read(mailbox, gid, true).await?;
        Ok("marked_read")
    }

    /// The Outlook item a DingTalk object was written for, when the bridge itself wrote
    /// it (a live echo guard, or an id pair of the Outlook → DingTalk relay).
    async fn written_by_bridge(&self, event: &SyncEvent) -> Result<Option<String>, JobFailure> {
        let (key, ns) = match event.kind {
            EventKind::CalendarEvent => (
                "calendar_event_id",
                Some(crate::sync::outbound_relay::EVENT_NS),
            ),
            EventKind::Message => ("message_id", Some(crate::sync::outbound_relay::MAIL_NS)),
            EventKind::Todo => ("task_id", None),
            _ => return Ok(None),
        };
        let Some(id) = event.ids.get(key) else {
            return Ok(None);
        };
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        if let Some(origin) = self
            .store
            .kv_get(&format!("echo:dingtalk:{id}"))
            .await
            .map_err(transient)?
        {
            return Ok(Some(origin));
        }
        match ns {
            Some(ns) => self
                .store
                .map_get(ns, crate::store::Side::Left, id)
                .await
                .map_err(transient),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Source;

    #[test]
    fn robot_files_and_rich_text_pictures_are_found() {
        let file = json!({"msgtype": "file", "content": {"downloadCode": "dc1", "fileName": "報關單.pdf"}});
        assert_eq!(
            message_files(&file),
            [MessageFile {
                download_code: "dc1".into(),
                name: "報關單.pdf".into()
            }]
        );
        let pic = json!({"msgtype": "picture", "content": "{\"downloadCode\":\"dc2\"}"});
        assert_eq!(message_files(&pic)[0].name, "picture.png");
        let rich = json!({"msgtype": "richText", "content": {"richText": [
            {"text": "see"}, {"downloadCode": "a", "type": "picture"}, {"downloadCode": "b", "type": "picture"}]}});
        let files = message_files(&rich);
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].download_code, "b");
        assert!(message_files(&json!({"msgtype": "text", "text": {"content": "hi"}})).is_empty());
    }

    #[test]
    fn chat_messages_show_sender_conversation_and_a_link() {
        let mut e = SyncEvent::new(Source::Dingtalk, EventKind::Message, Action::Created);
        e.ids.insert("conversation_id".into(), "cid+1".into());
        e.ids.insert("conversation_type".into(), "2".into());
        e.raw = json!({"msgtype": "file", "senderNick": "王五", "conversationTitle": "报关",
            "content": {"downloadCode": "x", "fileName": "a.pdf"}});
        let m = chat_message(&e, 5);
        assert_eq!(m.sender, "王五");
        assert_eq!(m.conversation, "报关");
        assert_eq!(m.text, "[file] a.pdf");
        assert_eq!(m.sent_at_ms, 5);
        assert!(m.link.expect("link").ends_with("conversationId=cid%2B1"));
    }

    #[test]
    fn triggers_have_stable_ids() {
        let mut e = SyncEvent::new(Source::Dingtalk, EventKind::Todo, Action::Updated);
        e.ids.insert("task_id".into(), "t1".into());
        e.occurred_at_ms = Some(1_700_000_000_000);
        let a = trigger_of(&e, 1).expect("trigger");
        let b = trigger_of(&e, 2).expect("trigger");
        assert_eq!(a.id, b.id);
        assert_eq!(a.event, triggers::DINGTALK_TODO_CHANGED);
        let c = SyncEvent::new(Source::Dingtalk, EventKind::Contact, Action::Created);
        assert!(trigger_of(&c, 1).is_none());
    }
}
