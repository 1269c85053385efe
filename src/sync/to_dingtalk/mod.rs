//! Outlook → DingTalk: the `graph.notification`, `graph.lifecycle` and `graph.resync`
//! job handler, the delta resync of a watched mail folder, and the lease-guarded task
//! that keeps the Graph subscriptions alive.
//!
//! Mail: a new Outlook message becomes one markdown message in the route's DingTalk
//! conversation (sender, subject, a bounded text preview, attachment names, a link to
//! Outlook on the web), through the route's custom robot webhook (`msgUuid` derived from
//! the Graph id, so a retried send is not posted twice) or the app robot. Loop
//! prevention: an item carrying the bridge's origin marker, one with an echo guard
//! (`echo:graph:<id>`, written by the DingTalk → Outlook relay) or one already mapped is
//! not relayed; a per-item claim keeps concurrent notifications for one item from
//! relaying it twice.
//!
//! Read state: DingTalk chat messages have no read state an app can write. Where the
//! route's kinds include both `mail` and `todo`, a relayed mail also becomes a DingTalk
//! todo of the route's `union_id` (`sourceId` derived from the Graph id, pair kept in
//! [`super::keys::mail_todo_ns`]); reading the mail in Outlook then marks that todo done,
//! once (skipped when it is done already; an echo guard `echo:dingtalk:<todo id>` with
//! the value `read:<graph id>` lets the DingTalk → Outlook side ignore the resulting todo
//! event). The other way is in [`super::to_outlook`].
//!
//! Files: this one holds the handler, the notification and lifecycle steps, the per-item
//! claim and the subscription task; [`delta`] (resyncs), [`mail`] (mail → a chat message,
//! the robot's digest), [`read_state`] (mail read → its DingTalk todo done), [`events`]
//! (Outlook events → the DingTalk calendar) and [`render`] (the pure rendering: markdown,
//! DingTalk event and todo bodies, stable ids).

mod delta;
mod events;
mod mail;
mod read_state;
pub mod render;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use rsa::RsaPrivateKey;
use serde_json::Value;

pub use render::{
    PREVIEW_CHARS, client_token, dingtalk_event_from_graph, mail_markdown, msg_uuid, todo_source_id,
};

use crate::{
    config::RouteConfig,
    dingtalk::client::DingTalkClient,
    graph::{
        GraphClient,
        jwks::JwksValidator,
        notifications::{ChangeNotification, decrypt_content},
        subscriptions::{self, Outcome, SubscriptionManager, SubscriptionRecord, Watched},
    },
    jobs::{GraphResync, Task},
    leader::LeaderTask,
    store::SharedStore,
    sync::{
        keys::{dingtalk_echo_key, graph_echo_key, graph_item_claim},
        mailbox,
        mapping::ORIGIN_PROPERTY,
        outlook_triggers,
    },
    worker::{JobFailure, JobHandler},
};

/// How long the echo guard of a DingTalk message the bridge posted lives.
const ECHO_TTL: Duration = Duration::from_secs(600);
/// How long one relay claims an item.
const CLAIM_TTL: Duration = Duration::from_secs(60);

/// Where a message relay was triggered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A `created` notification.
    Created,
    /// An `updated` notification (read state and edits).
    Updated,
    /// A delta resync: relay unmapped mail received at or after the baseline.
    Delta,
}

/// The Outlook → DingTalk relay.
pub struct OutlookRelay {
    store: SharedStore,
    graph: Arc<GraphClient>,
    http: reqwest::Client,
    dingtalk: Option<Arc<DingTalkClient>>,
    routes: Vec<RouteConfig>,
    manager: Option<Arc<SubscriptionManager>>,
    jwks: Option<JwksValidator>,
    private_key: Option<RsaPrivateKey>,
    /// Mailbox routes writing to DingTalk Mail: their notifications only wake the route's
    /// sync loop ([`crate::sync::mailbox`]), which reads the Outlook folder's delta.
    mailbox_routes: Vec<String>,
}

impl OutlookRelay {
    /// A relay for the Outlook → DingTalk `routes`.
    pub fn new(
        store: SharedStore,
        graph: Arc<GraphClient>,
        http: reqwest::Client,
        dingtalk: Option<Arc<DingTalkClient>>,
        routes: Vec<RouteConfig>,
        manager: Option<Arc<SubscriptionManager>>,
    ) -> Self {
        Self {
            store,
            graph,
            http,
            dingtalk,
            routes,
            manager,
            jwks: None,
            private_key: None,
            mailbox_routes: Vec::new(),
        }
    }

    /// Names the mailbox routes whose subscriptions wake their sync loop.
    pub fn with_mailbox_routes(mut self, names: Vec<String>) -> Self {
        self.mailbox_routes = names;
        self
    }

    /// Wakes the sync loop of mailbox route `route`, on whichever instance holds it.
    async fn wake_mailbox(&self, route: &str) -> Result<(), JobFailure> {
        self.store
            .kv_put(
                &mailbox::outlook::wake_key(route),
                "1",
                Some(Duration::from_secs(600)),
            )
            .await
            .map_err(|e| JobFailure::transient(e.to_string()))
    }

    /// Enables rich notifications: `validationTokens` checked with `jwks`, content
    /// decrypted with `key`.
    pub fn with_rich(mut self, jwks: JwksValidator, key: RsaPrivateKey) -> Self {
        self.jwks = Some(jwks);
        self.private_key = Some(key);
        self
    }

    fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes
            .iter()
            .find(|r| r.name == name && r.direction.to_dingtalk())
    }

    async fn on_notification(
        &self,
        n: &ChangeNotification,
        record: &SubscriptionRecord,
        tokens: &[String],
    ) -> Result<(), JobFailure> {
        let Some(route) = self.route(&record.route) else {
            tracing::debug!(route = %record.route, "notification for a route that no longer relays to DingTalk");
            return Ok(());
        };
        let Some(item_id) = n.item_id() else {
            return Ok(());
        };
        match record.watched {
            Watched::Messages => {
                let trigger = match n.change_type.as_deref() {
                    Some("created") => Trigger::Created,
                    Some("updated") => Trigger::Updated,
                    // A deleted mail stays in the DingTalk chat.
                    _ => return Ok(()),
                };
                let rich = match (&n.encrypted_content, &self.private_key) {
                    (Some(content), Some(key)) => {
                        if let Some(jwks) = &self.jwks
                            && let Err(why) = jwks.validate_all(tokens).await
                        {
                            // Acknowledged at the door already; suspicious, so drop it.
                            metrics::counter!("graph_notifications_ignored_total", "reason" => "validation_token").increment(1);
                            tracing::warn!(subscription = %n.subscription_id, reason = %why, "rich notification with invalid validation tokens dropped");
                            return Ok(());
                        }
                        match decrypt_content(key, content) {
                            // Attachment names cannot be selected in a rich resource:
                            // such mail is fetched whole.
                            Ok(v)
                                if v.get("hasAttachments").and_then(Value::as_bool)
                                    == Some(true) =>
                            {
                                None
                            }
                            Ok(v) => Some(v),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot decrypt rich notification; fetching the item");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                if trigger == Trigger::Updated {
                    self.publish_read(route, &record.mailbox, &item_id, rich.as_ref())
                        .await?;
                }
                self.relay_message(route, &record.mailbox, &item_id, trigger, None, rich)
                    .await
            }
            Watched::Events => {
                let change = n.change_type.as_deref().unwrap_or("updated");
                self.relay_event(route, &record.mailbox, &item_id, change)
                    .await
            }
            Watched::Contacts => {
                // DingTalk's address book is the organisation's directory: an app cannot
                // keep personal contacts there, so Outlook contacts are not relayed; they
                // only publish the trigger.
                let change = n.change_type.as_deref().unwrap_or("updated");
                outlook_triggers::publish(
                    self.store.as_ref(),
                    Some(outlook_triggers::contact_changed(
                        &route.name,
                        &record.mailbox,
                        &item_id,
                        change,
                    )),
                )
                .await
            }
        }
    }

    async fn on_lifecycle(
        &self,
        n: &ChangeNotification,
        record: &SubscriptionRecord,
    ) -> Result<(), JobFailure> {
        let event = n.lifecycle_event.as_deref().unwrap_or_default();
        let Some(manager) = &self.manager else {
            tracing::warn!(
                event,
                "lifecycle event but no subscription manager (public_url unset)"
            );
            return Ok(());
        };
        let busy =
            || JobFailure::transient("subscription busy").retry_after(Duration::from_secs(1));
        match event {
            "reauthorizationRequired" | "subscriptionRemoved" => {
                let removed = event == "subscriptionRemoved";
                let outcome = manager
                    .locked(&record.route, record.watched, || async {
                        let current = manager.current(&record.route, record.watched).await?;
                        match current {
                            // Someone already replaced it: only the resync is left.
                            Some(c) if c.id != record.id => Ok(Some(c)),
                            Some(c) if !removed => match manager.renew(&c).await? {
                                Some(_) => Ok(None),
                                None => Ok(Some(manager.recreate(&c).await?)),
                            },
                            Some(c) => Ok(Some(manager.recreate(&c).await?)),
                            None => Ok(Some(manager.recreate(record).await?)),
                        }
                    })
                    .await
                    .map_err(|e| JobFailure::transient(e.to_string()))?;
                match outcome {
                    None => Err(busy()),
                    Some(None) => Ok(()),
                    Some(Some(new)) => self.resync(&new).await,
                }
            }
            "missed" => {
                let current = manager
                    .current(&record.route, record.watched)
                    .await
                    .map_err(|e| JobFailure::transient(e.to_string()))?
                    .unwrap_or_else(|| record.clone());
                self.resync(&current).await
            }
            other => {
                tracing::warn!(event = other, "unknown Graph lifecycle event ignored");
                Ok(())
            }
        }
    }

    /// Runs `work` holding the per-item claim, so that two jobs (or instances) never relay
    /// the same Outlook item at once (a held claim makes this job retry shortly), unless
    /// the item has an echo guard.
    async fn claimed(
        &self,
        id: &str,
        work: impl std::future::Future<Output = Result<(), JobFailure>>,
    ) -> Result<(), JobFailure> {
        let claim = graph_item_claim(id);
        let Some(token) = self.acquire_wait(&claim, Duration::from_secs(5)).await? else {
            return Err(
                JobFailure::transient("item is being relayed by another job")
                    .retry_after(Duration::from_secs(1)),
            );
        };
        // Written by the DingTalk → Outlook relay moments ago (before its origin marker
        // is visible): not relayed back.
        let result = match self.store.kv_get(&graph_echo_key(id)).await {
            Ok(Some(_)) => {
                metrics::counter!("graph_relay_skipped_total", "reason" => "echo_guard")
                    .increment(1);
                tracing::debug!(item = id, "Outlook item not relayed: echo guard");
                Ok(())
            }
            Ok(None) => work.await,
            Err(e) => Err(JobFailure::transient(e.to_string())),
        };
        let _ = self.store.lease_release(&claim, &token).await;
        result
    }

    /// Takes a store lease, waiting up to `max_wait` for it; the token, or `None`.
    async fn acquire_wait(
        &self,
        name: &str,
        max_wait: Duration,
    ) -> Result<Option<String>, JobFailure> {
        crate::store::lease_wait(self.store.as_ref(), name, CLAIM_TTL, max_wait)
            .await
            .map_err(|e| JobFailure::transient(e.to_string()))
    }

    /// Records that DingTalk object `dingtalk_id` now mirrors Graph item `id` (the id
    /// pair in `ns`, when given) and guards it against the echo DingTalk sends back.
    async fn record_pair(
        &self,
        ns: Option<&str>,
        dingtalk_id: &str,
        id: &str,
        kind: &'static str,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        if let Some(ns) = ns {
            self.store
                .map_put(ns, dingtalk_id, id)
                .await
                .map_err(transient)?;
        }
        self.store
            .kv_put(&dingtalk_echo_key(dingtalk_id), id, Some(ECHO_TTL))
            .await
            .map_err(transient)?;
        metrics::counter!("graph_relayed_total", "kind" => kind).increment(1);
        Ok(())
    }
}

#[async_trait]
impl JobHandler for OutlookRelay {
    async fn handle(&self, _job: &crate::store::Job, task: Task) -> Result<(), JobFailure> {
        let (payload, lifecycle) = match task {
            Task::GraphResync(GraphResync { subscription })
                if self.mailbox_routes.contains(&subscription.route) =>
            {
                return self.wake_mailbox(&subscription.route).await;
            }
            Task::GraphResync(GraphResync { subscription }) => {
                return self.resync(&subscription).await;
            }
            Task::GraphNotification(p) => (p, false),
            Task::GraphLifecycle(p) => (p, true),
            other => return Err(JobFailure::wrong_kind(&other)),
        };
        let n: ChangeNotification = serde_json::from_value(payload.notification)
            .map_err(|e| JobFailure::permanent(format!("bad notification payload: {e}")))?;
        let record = &payload.subscription;
        if self.mailbox_routes.contains(&record.route) {
            // Lifecycle events keep the subscription alive as for any route; whatever
            // happened, the route's next delta round covers it.
            if lifecycle || n.lifecycle_event.is_some() {
                self.on_lifecycle(&n, record).await?;
            }
            return self.wake_mailbox(&record.route).await;
        }
        if lifecycle || n.lifecycle_event.is_some() {
            self.on_lifecycle(&n, record).await
        } else {
            self.on_notification(&n, record, &payload.validation_tokens)
                .await
        }
    }
}

/// True when the item has the bridge's origin marker among its extended properties.
pub fn carries_origin_marker(item: &Value) -> bool {
    item.get("singleValueExtendedProperties")
        .and_then(Value::as_array)
        .is_some_and(|ps| {
            ps.iter().any(|p| {
                p.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|i| i.eq_ignore_ascii_case(ORIGIN_PROPERTY))
            })
        })
}

// ----- the subscription task --------------------------------------------------------------

/// Starts the lease-guarded subscription loop: every interval, the holder of
/// [`subscriptions::LEASE`] creates, renews and recreates subscriptions; new ones get a
/// delta resync job ([`Task::GraphResync`]).
pub fn start_subscription_task(
    store: SharedStore,
    manager: Arc<SubscriptionManager>,
) -> LeaderTask {
    let interval = manager.settings().interval;
    LeaderTask::start(
        store.clone(),
        subscriptions::LEASE,
        "graph subscriptions",
        interval,
        move || {
            let (store, manager) = (store.clone(), manager.clone());
            async move { run_check(&store, &manager).await }
        },
    )
}

/// One check; a new or replaced subscription gets a delta resync as a job (the baseline
/// for a first subscription, the gap otherwise), retried by the workers until it works.
async fn run_check(store: &SharedStore, manager: &SubscriptionManager) -> anyhow::Result<()> {
    for outcome in manager.check().await? {
        if let Outcome::Created(r) | Outcome::Recreated(r) = &outcome {
            let job = Task::GraphResync(GraphResync {
                subscription: r.clone(),
            })
            .into_job();
            store.enqueue(&job, None).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_origin_marker_is_recognised() {
        assert!(carries_origin_marker(
            &json!({"singleValueExtendedProperties": [
                {"id": ORIGIN_PROPERTY, "value": "dingtalk:msg:1"}
            ]})
        ));
        assert!(!carries_origin_marker(
            &json!({"singleValueExtendedProperties": []})
        ));
        assert!(!carries_origin_marker(&json!({})));
    }
}
