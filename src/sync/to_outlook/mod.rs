//! DingTalk → Outlook: the `dingtalk.event` job handler moves one normalised DingTalk
//! event into the Outlook mailbox of every route that wants it ([`super::routes`]),
//! touching no other mailbox. The other way is in [`super::to_dingtalk`].
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
//! mail read, once. Every step is audited as `relay.<kind>.<action>` with the route, ids
//! and target id, never message text or secrets.
//!
//! Files: this one holds the handler, its arrival step, the route dispatch and the write
//! helpers; [`messages`] (chat messages and their files), [`items`] (calendar events,
//! todos, contacts), [`read_state`] (a read-state todo done → its mail read) and
//! [`render`] (the pure rendering of DingTalk events: mail text, files, triggers).

mod items;
mod messages;
mod read_state;
pub mod render;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::{Value, json};

pub use render::{MessageFile, chat_message, message_files, trigger_of};

use super::{
    EventKind, SyncEvent,
    keys::{EVENT_NS, MAIL_NS, dingtalk_echo_key, graph_echo_key},
    routes::{Routes, route_kind},
};
use crate::{
    config::RouteConfig,
    dingtalk::client::DingTalkClient,
    graph::{GraphClient, GraphError, client::Created},
    jobs::Task,
    store::{AuditEntry, Job, SharedStore, Side, StoreError},
    triggers,
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
            .kv_put(&graph_echo_key(graph_id), source, Some(ECHO_TTL))
            .await
            .map_err(store_failure)
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

    /// The Outlook item a DingTalk object was written for, when the bridge itself wrote
    /// it (a live echo guard, or an id pair of the Outlook → DingTalk relay).
    async fn written_by_bridge(&self, event: &SyncEvent) -> Result<Option<String>, JobFailure> {
        let (key, ns) = match event.kind {
            EventKind::CalendarEvent => ("calendar_event_id", Some(EVENT_NS)),
            EventKind::Message => ("message_id", Some(MAIL_NS)),
            EventKind::Todo => ("task_id", None),
            _ => return Ok(None),
        };
        let Some(id) = event.ids.get(key) else {
            return Ok(None);
        };
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        if let Some(origin) = self
            .store
            .kv_get(&dingtalk_echo_key(id))
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
