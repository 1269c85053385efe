//! Outlook → DingTalk: the `graph.notification` and `graph.lifecycle` job handlers, the
//! delta resync of a watched mail folder, and the lease-guarded task that keeps the
//! Graph subscriptions alive.
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
//! [`mail_todo_ns`]); reading the mail in Outlook then marks that todo done, once
//! (skipped when it is done already; an echo guard `echo:dingtalk:<todo id>` with the
//! value `read:<graph id>` lets the DingTalk → Outlook side ignore the resulting todo
//! event). The other way is in [`super::relay`].

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rsa::RsaPrivateKey;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    config::{RouteConfig, RouteKind},
    dingtalk::{client::DingTalkClient, custom_robot},
    graph::{
        GraphClient,
        jwks::JwksValidator,
        notifications::{ChangeNotification, decrypt_content},
        subscriptions::{self, Outcome, SubscriptionManager, SubscriptionRecord, Watched},
    },
    jobs::{GraphResync, Task},
    leader::LeaderTask,
    store::{SharedStore, Side},
    sync::{
        mapping::{ORIGIN_PROPERTY, fixed_offset_minutes, text_preview},
        outlook_triggers,
    },
    worker::{JobFailure, JobHandler},
};

/// Id-pair namespace of relayed mail: left = DingTalk message id, right = Graph id.
pub const MAIL_NS: &str = "outlook-mail";
/// Prefix of the id-pair namespaces of read-state todos (see [`mail_todo_ns`]).
pub const MAIL_TODO_NS: &str = "outlook-mail-todo";
/// Prefix of the `sourceId` of every DingTalk todo the bridge makes for a mail.
pub const TODO_SOURCE_PREFIX: &str = "outlook-mail-";

/// Id-pair namespace of the DingTalk todos made for relayed mail on `route`: left =
/// DingTalk task id, right = Graph message id.
pub fn mail_todo_ns(route: &str) -> String {
    format!("{MAIL_TODO_NS}:{route}")
}

/// The stable DingTalk `sourceId` of the todo for Graph message `id` on `route`.
pub fn todo_source_id(route: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("todo\n{route}\n{id}").as_bytes());
    format!("{TODO_SOURCE_PREFIX}{}", hex::encode(&digest[..16]))
}

/// True when `route` carries read state: Outlook mail relayed to DingTalk (kinds `mail`
/// and `todo`, direction `to_dingtalk` or `both`) for a DingTalk user (`union_id`).
pub fn carries_read_state(route: &RouteConfig) -> bool {
    route.direction.to_dingtalk()
        && route.kinds.contains(&RouteKind::Mail)
        && route.kinds.contains(&RouteKind::Todo)
        && route.dingtalk.union_id.is_some()
}
/// Characters of mail text shown in the DingTalk message.
pub const PREVIEW_CHARS: usize = 300;
/// How long the echo guard of a DingTalk message the bridge posted lives.
const ECHO_TTL: Duration = Duration::from_secs(600);
/// How long the last relayed changeKey of an Outlook event is remembered.
const EVENT_VERSION_TTL: Duration = Duration::from_secs(180 * 24 * 3600);
/// How long one relay claims an item.
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// Most mails merged into one robot digest.
const DIGEST_MAX: usize = 20;
/// Queued mails remembered per robot.
const DIGEST_FEED_CAP: usize = 500;
/// Delta-state name of the primary calendar.
const CALENDAR_DELTA: &str = "calendar";
/// calendarView/delta window: this far back…
const EVENT_WINDOW_PAST_DAYS: i64 = 30;
/// …and this far ahead.
const EVENT_WINDOW_FUTURE_DAYS: i64 = 365;
/// Safety bound on delta pages per resync.
const MAX_DELTA_PAGES: usize = 1000;

/// Delta state of one route's watched folder: the link to follow next and the time the
/// baseline was taken (older mail is never relayed as new).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct DeltaState {
    link: String,
    since: String,
}

fn delta_key(route: &str, folder: &str) -> String {
    format!("graph:delta:{route}:{folder}")
}

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
        }
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

    // ----- notifications ----------------------------------------------------------------

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

    // ----- delta ------------------------------------------------------------------------

    /// Relays the changes in the watched folder since the stored delta link (exactly the
    /// gap); without a link, takes the baseline and relays nothing.
    pub async fn resync(&self, record: &SubscriptionRecord) -> Result<(), JobFailure> {
        let Some(route) = self.route(&record.route) else {
            return Ok(());
        };
        let folder = match record.watched {
            Watched::Messages => record.folder.clone().unwrap_or_else(|| "inbox".into()),
            Watched::Events => CALENDAR_DELTA.to_string(),
            // Contacts are not relayed, so there is nothing to resync.
            Watched::Contacts => return Ok(()),
        };
        let lock = format!("graph-delta:{}:{folder}", record.route);
        let token = uuid::Uuid::new_v4().to_string();
        let store_err = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        if !self
            .store
            .lease_acquire(&lock, &token, Duration::from_secs(300))
            .await
            .map_err(store_err)?
        {
            return Err(JobFailure::transient("a resync of this folder is running")
                .retry_after(Duration::from_secs(2)));
        }
        let result = self.follow_delta(route, record, &folder).await;
        let _ = self.store.lease_release(&lock, &token).await;
        result
    }

    async fn follow_delta(
        &self,
        route: &RouteConfig,
        record: &SubscriptionRecord,
        folder: &str,
    ) -> Result<(), JobFailure> {
        let key = delta_key(&route.name, folder);
        let stored: Option<DeltaState> = self
            .store
            .kv_get(&key)
            .await
            .map_err(|e| JobFailure::transient(e.to_string()))?
            .and_then(|raw| serde_json::from_str(&raw).ok());
        let baseline = stored.is_none();
        let since = stored.as_ref().map(|s| s.since.clone()).unwrap_or_else(|| {
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        let mailbox = &record.mailbox;
        let mut page = match &stored {
            Some(s) => self.graph.get_url(mailbox, &s.link).await,
            None if record.watched == Watched::Events => {
                // calendarView/delta needs a window; the primary calendar only (graph.md §3).
                let now = chrono::Utc::now();
                let fmt = |t: chrono::DateTime<chrono::Utc>| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                };
                self.graph
                    .get(
                        mailbox,
                        &format!(
                            "calendarView/delta?startDateTime={}&endDateTime={}",
                            utf8_percent_encode(
                                &fmt(now - chrono::Duration::days(EVENT_WINDOW_PAST_DAYS)),
                                NON_ALPHANUMERIC
                            ),
                            utf8_percent_encode(
                                &fmt(now + chrono::Duration::days(EVENT_WINDOW_FUTURE_DAYS)),
                                NON_ALPHANUMERIC
                            ),
                        ),
                    )
                    .await
            }
            None => {
                self.graph
                    .get(
                        mailbox,
                        &format!(
                            "mailFolders/{}/messages/delta?$select=id,receivedDateTime,isRead",
                            utf8_percent_encode(folder, NON_ALPHANUMERIC)
                        ),
                    )
                    .await
            }
        };
        if let Err(e) = &page
            && stored.is_some()
            && (e.status() == Some(410)
                || matches!(e.code(), Some("syncStateNotFound" | "resyncRequired")))
        {
            // The token expired: take a new baseline (mail in the gap is lost to delta).
            tracing::warn!(route = %route.name, error = %e, "delta token no longer valid; new baseline");
            let _ = self.store.kv_delete(&key).await;
            return Box::pin(self.follow_delta(route, record, folder)).await;
        }
        let mut relayed = 0usize;
        for _ in 0..MAX_DELTA_PAGES {
            let body = page?;
            for item in body
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if baseline {
                    continue;
                }
                let Some(id) = item.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let removed = item.get("@removed").is_some();
                match record.watched {
                    Watched::Events => {
                        let change = if removed { "deleted" } else { "updated" };
                        self.relay_event(route, mailbox, id, change).await?;
                    }
                    _ if removed => continue,
                    _ => {
                        self.relay_message(route, mailbox, id, Trigger::Delta, Some(&since), None)
                            .await?
                    }
                }
                relayed += 1;
            }
            if let Some(next) = body.get("@odata.nextLink").and_then(Value::as_str) {
                page = self.graph.get_url(mailbox, next).await;
                continue;
            }
            let Some(link) = body.get("@odata.deltaLink").and_then(Value::as_str) else {
                return Err(JobFailure::transient(
                    "delta page with neither nextLink nor deltaLink",
                ));
            };
            let state = DeltaState {
                link: link.to_string(),
                since: since.clone(),
            };
            self.store
                .kv_put(
                    &key,
                    &serde_json::to_string(&state).unwrap_or_default(),
                    None,
                )
                .await
                .map_err(|e| JobFailure::transient(e.to_string()))?;
            tracing::info!(route = %route.name, folder, baseline, changed = relayed, "delta resync finished");
            return Ok(());
        }
        Err(JobFailure::transient(
            "delta did not end within the page bound",
        ))
    }

    // ----- mail -------------------------------------------------------------------------

    async fn relay_message(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        trigger: Trigger,
        since: Option<&str>,
        rich: Option<Value>,
    ) -> Result<(), JobFailure> {
        self.claimed(
            id,
            self.relay_message_claimed(route, mailbox, id, trigger, since, rich),
        )
        .await
    }

    /// Runs `work` holding the per-item claim, so that two jobs (or instances) never relay
    /// the same Outlook item at once (a held claim makes this job retry shortly), unless
    /// the item has an echo guard.
    async fn claimed(
        &self,
        id: &str,
        work: impl std::future::Future<Output = Result<(), JobFailure>>,
    ) -> Result<(), JobFailure> {
        let claim = format!("relay:graph:{id}");
        let Some(token) = self.acquire_wait(&claim, Duration::from_secs(5)).await? else {
            return Err(
                JobFailure::transient("item is being relayed by another job")
                    .retry_after(Duration::from_secs(1)),
            );
        };
        // Written by the DingTalk → Outlook relay moments ago (before its origin marker
        // is visible): not relayed back.
        let result = match self.store.kv_get(&format!("echo:graph:{id}")).await {
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

    async fn relay_message_claimed(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        trigger: Trigger,
        since: Option<&str>,
        rich: Option<Value>,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        let skip = |reason: &'static str| {
            metrics::counter!("graph_relay_skipped_total", "reason" => reason).increment(1);
            tracing::debug!(item = id, reason, "Outlook item not relayed");
            Ok(())
        };
        if self
            .store
            .map_get(MAIL_NS, Side::Right, id)
            .await
            .map_err(transient)?
            .is_some()
        {
            // Already relayed. Its chat message has no read state an app can write; the
            // read-state todo (when the route has one) follows the mail's read state.
            if carries_read_state(route) {
                return self.read_to_todo(route, mailbox, id, rich).await;
            }
            return skip("already_relayed");
        }
        if trigger == Trigger::Updated {
            return skip("update_of_unrelayed_item");
        }
        let message = match rich {
            Some(v) => v,
            None => match self.fetch_message(mailbox, id).await {
                Ok(v) => v,
                Err(e) if e.is_not_found() => return skip("gone"),
                Err(e) => return Err(e.into()),
            },
        };
        if carries_origin_marker(&message) {
            return skip("origin_marker");
        }
        if message.get("isDraft").and_then(Value::as_bool) == Some(true) {
            return skip("draft");
        }
        if trigger == Trigger::Delta
            && let (Some(since), Some(received)) = (
                since.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()),
                message
                    .get("receivedDateTime")
                    .and_then(Value::as_str)
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()),
            )
            && received < since
        {
            return skip("before_baseline");
        }
        outlook_triggers::publish(
            self.store.as_ref(),
            outlook_triggers::mail_received(&route.name, mailbox, &message),
        )
        .await?;
        if carries_read_state(route) {
            self.ensure_mail_todo(route, id, &message).await?;
        }
        let (title, text) = mail_markdown(&message);
        if route.dingtalk.robot_webhook.is_some() {
            return self.send_via_robot(route, id, &title, &text).await;
        }
        let uuid = msg_uuid(&route.name, id);
        let dingtalk_id = self.post_markdown(route, &title, &text, &uuid).await?;
        self.record_relayed(route, &dingtalk_id, &[id.to_string()])
            .await
    }

    /// The DingTalk todo for a mail about to be relayed: created once (`sourceId` makes a
    /// retried create find the first one), the id pair kept in [`mail_todo_ns`].
    async fn ensure_mail_todo(
        &self,
        route: &RouteConfig,
        id: &str,
        message: &Value,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        let ns = mail_todo_ns(&route.name);
        if self
            .store
            .map_get(&ns, Side::Right, id)
            .await
            .map_err(transient)?
            .is_some()
        {
            return Ok(());
        }
        let (Some(union_id), Some(client)) = (&route.dingtalk.union_id, &self.dingtalk) else {
            tracing::warn!(route = %route.name, "route carries read state but DingTalk app credentials are not configured");
            return Ok(());
        };
        let subject: String = message
            .get("subject")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .unwrap_or("(no subject)")
            .chars()
            .take(1024)
            .collect();
        let mut task = json!({
            "sourceId": todo_source_id(&route.name, id),
            "subject": subject,
        });
        if let Some(link) = message.get("webLink").and_then(Value::as_str) {
            task["detailUrl"] = json!({ "appUrl": link, "pcUrl": link });
        }
        let created = client.create_todo(union_id, &task).await?;
        let Some(todo_id) = created.get("id").and_then(Value::as_str) else {
            return Err(JobFailure::transient(
                "DingTalk created a todo without an id",
            ));
        };
        self.record_pair(Some(&ns), todo_id, id, "mail_todo")
            .await?;
        tracing::info!(route = %route.name, item = id, dingtalk = %todo_id, "DingTalk todo created for an Outlook mail");
        Ok(())
    }

    /// A relayed mail read in Outlook → its DingTalk todo done, once: nothing when the
    /// mail is unread or the todo already done.
    async fn read_to_todo(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        rich: Option<Value>,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        let skip = |reason: &'static str| {
            metrics::counter!("graph_relay_skipped_total", "reason" => reason).increment(1);
            tracing::debug!(item = id, reason, "Outlook read state not relayed");
            Ok(())
        };
        let Some(todo_id) = self
            .store
            .map_get(&mail_todo_ns(&route.name), Side::Right, id)
            .await
            .map_err(transient)?
        else {
            return skip("already_relayed");
        };
        let (Some(union_id), Some(client)) = (&route.dingtalk.union_id, &self.dingtalk) else {
            return skip("no_dingtalk_client");
        };
        let read = match rich.as_ref().and_then(|m| m.get("isRead")) {
            Some(v) => v.as_bool() == Some(true),
            None => {
                let path = format!(
                    "messages/{}?$select=id,isRead",
                    utf8_percent_encode(id, NON_ALPHANUMERIC)
                );
                match self.graph.get(mailbox, &path).await {
                    Ok(m) => m.get("isRead").and_then(Value::as_bool) == Some(true),
                    Err(e) if e.is_not_found() => return skip("gone"),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if !read {
            return skip("unread");
        }
        let task = match client.get_todo(union_id, &todo_id).await {
            Ok(t) => t,
            Err(e) if e.status == 404 => return skip("todo_gone"),
            Err(e) => return Err(e.into()),
        };
        if task.get("done").and_then(Value::as_bool) == Some(true) {
            return skip("todo_already_done");
        }
        // The guard first: the todo event DingTalk sends for this update must find it.
        self.store
            .kv_put(
                &format!("echo:dingtalk:{todo_id}"),
                &format!("read:{id}"),
                Some(ECHO_TTL),
            )
            .await
            .map_err(transient)?;
        client
            .update_todo(union_id, &todo_id, &json!({ "done": true }))
            .await?;
        metrics::counter!("graph_relayed_total", "kind" => "read_state").increment(1);
        tracing::info!(route = %route.name, item = id, dingtalk = %todo_id, "Outlook read state relayed: DingTalk todo done");
        Ok(())
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
            .kv_put(&format!("echo:dingtalk:{dingtalk_id}"), id, Some(ECHO_TTL))
            .await
            .map_err(transient)?;
        metrics::counter!("graph_relayed_total", "kind" => kind).increment(1);
        Ok(())
    }

    async fn record_relayed(
        &self,
        route: &RouteConfig,
        dingtalk_id: &str,
        ids: &[String],
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        for id in ids {
            self.store
                .map_put(MAIL_NS, dingtalk_id, id)
                .await
                .map_err(transient)?;
            metrics::counter!("graph_relayed_total", "kind" => "mail").increment(1);
            tracing::info!(route = %route.name, item = %id, dingtalk = %dingtalk_id, "Outlook mail relayed to DingTalk");
        }
        self.store
            .kv_put(
                &format!("echo:dingtalk:{dingtalk_id}"),
                ids.first().map(String::as_str).unwrap_or(""),
                Some(ECHO_TTL),
            )
            .await
            .map_err(transient)
    }

    /// Sends through the route's custom robot, at most 20 a minute: sends to one robot
    /// are serialised (a store lease); a mail that finds the minute's budget used is
    /// queued in the robot's digest feed and its job waits for the next minute, when the
    /// first waiting job posts ONE digest of every queued mail (the others then find
    /// theirs relayed). Nothing is dropped.
    async fn send_via_robot(
        &self,
        route: &RouteConfig,
        id: &str,
        title: &str,
        text: &str,
    ) -> Result<(), JobFailure> {
        let webhook = route
            .dingtalk
            .robot_webhook
            .as_ref()
            .expect("checked")
            .expose_secret();
        let robot = hex::encode(&Sha256::digest(webhook.as_bytes())[..8]);
        let lock = format!("robot-send:{robot}");
        let Some(token) = self.acquire_wait(&lock, Duration::from_secs(30)).await? else {
            return Err(JobFailure::transient("robot busy").retry_after(Duration::from_secs(1)));
        };
        let result = self
            .send_via_robot_locked(route, &robot, id, title, text)
            .await;
        let _ = self.store.lease_release(&lock, &token).await;
        result
    }

    async fn send_via_robot_locked(
        &self,
        route: &RouteConfig,
        robot: &str,
        id: &str,
        title: &str,
        text: &str,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        if self
            .store
            .map_get(MAIL_NS, Side::Right, id)
            .await
            .map_err(transient)?
            .is_some()
        {
            return Ok(()); // posted in a digest meanwhile
        }
        let feed = format!("robot-digest:{robot}");
        // Mails queued for this robot and not relayed yet (oldest first), then this one.
        let mut queued: Vec<Value> = Vec::new();
        for raw in self
            .store
            .feed_recent(&feed, DIGEST_FEED_CAP)
            .await
            .map_err(transient)?
            .into_iter()
            .rev()
        {
            let Ok(v) = serde_json::from_str::<Value>(&raw) else {
                continue;
            };
            let Some(qid) = v.get("id").and_then(Value::as_str) else {
                continue;
            };
            if qid == id
                || self
                    .store
                    .map_get(MAIL_NS, Side::Right, qid)
                    .await
                    .map_err(transient)?
                    .is_some()
            {
                continue;
            }
            queued.push(v);
        }
        queued.truncate(DIGEST_MAX - 1);
        queued.push(json!({"id": id, "title": title, "text": text}));
        let ids: Vec<String> = queued
            .iter()
            .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let (d_title, d_text, uuid) = if queued.len() == 1 {
            (
                title.to_string(),
                text.to_string(),
                msg_uuid(&route.name, id),
            )
        } else {
            let mut t = format!(
                "#### 📬 {} new Outlook mails

",
                queued.len()
            );
            for v in &queued {
                t.push_str(v.get("text").and_then(Value::as_str).unwrap_or(""));
                t.push_str(
                    "

---

",
                );
            }
            (
                format!("📬 {} new Outlook mails", queued.len()),
                t,
                msg_uuid(&route.name, &ids.join(",")),
            )
        };
        match self.post_markdown(route, &d_title, &d_text, &uuid).await {
            Ok(dingtalk_id) => {
                if ids.len() > 1 {
                    metrics::counter!("dingtalk_robot_digests_total").increment(1);
                    tracing::info!(route = %route.name, mails = ids.len(), "queued Outlook mails posted as one digest");
                }
                self.record_relayed(route, &dingtalk_id, &ids).await
            }
            Err(e) if e.retry_after.is_some() && !e.permanent => {
                // Over the robot's budget: queue this mail for the next digest and wait.
                let entry = json!({"id": id, "title": title, "text": text}).to_string();
                self.store
                    .feed_put(&feed, id, &entry, DIGEST_FEED_CAP)
                    .await
                    .map_err(transient)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
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

    /// `outlook.mail.read` for an updated message that is now read.
    async fn publish_read(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        rich: Option<&Value>,
    ) -> Result<(), JobFailure> {
        let message = match rich {
            Some(v) => v.clone(),
            None => match self.fetch_message(mailbox, id).await {
                Ok(v) => v,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            },
        };
        outlook_triggers::publish(
            self.store.as_ref(),
            outlook_triggers::mail_read(&route.name, mailbox, &message),
        )
        .await
    }

    async fn fetch_message(
        &self,
        mailbox: &str,
        id: &str,
    ) -> Result<Value, crate::graph::GraphError> {
        let expand = format!(
            "singleValueExtendedProperties($filter=id eq '{ORIGIN_PROPERTY}'),attachments($select=name)"
        );
        let path = format!(
            "messages/{}?$select={}&$expand={}",
            utf8_percent_encode(id, NON_ALPHANUMERIC),
            utf8_percent_encode(
                "id,subject,from,sender,body,bodyPreview,webLink,hasAttachments,receivedDateTime,lastModifiedDateTime,isRead,isDraft",
                NON_ALPHANUMERIC
            ),
            utf8_percent_encode(&expand, NON_ALPHANUMERIC)
        );
        self.graph.get(mailbox, &path).await
    }

    /// Posts markdown to the route's conversation; returns the DingTalk-side id.
    async fn post_markdown(
        &self,
        route: &RouteConfig,
        title: &str,
        text: &str,
        uuid: &str,
    ) -> Result<String, JobFailure> {
        let d = &route.dingtalk;
        if let Some(webhook) = &d.robot_webhook {
            let body = json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}});
            custom_robot::send(
                &self.http,
                &self.store,
                webhook.expose_secret(),
                d.robot_secret.as_ref().map(|s| s.expose_secret()),
                &body,
                uuid,
            )
            .await?;
            return Ok(format!("robot:{uuid}"));
        }
        if let (Some(robot), Some(conversation), Some(client)) =
            (&d.robot_code, &d.conversation_id, &self.dingtalk)
        {
            let answer = client
                .send_group_message(
                    robot,
                    conversation,
                    "sampleMarkdown",
                    &json!({"title": title, "text": text}),
                )
                .await?;
            let key = answer
                .get("processQueryKey")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("robot:{uuid}"));
            return Ok(key);
        }
        // Last resort: reply through the session webhook a robot callback left for the
        // conversation (valid about 90 minutes after the last @-mention of the robot).
        if let Some(conversation) = &d.conversation_id
            && let Some(url) =
                crate::dingtalk::events::session_webhook_for(self.store.as_ref(), conversation)
                    .await
                    .map_err(|e| JobFailure::transient(e.to_string()))?
        {
            let body = json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}});
            custom_robot::send(&self.http, &self.store, &url, None, &body, uuid).await?;
            return Ok(format!("session:{uuid}"));
        }
        Err(JobFailure::permanent(format!(
            "route {} has no DingTalk target for mail: set dingtalk.robot_webhook, or robot_code + conversation_id with DingTalk app credentials (or @-mention the app robot in the group so its session webhook can be used)",
            route.name
        )))
    }
}

impl OutlookRelay {
    // ----- events -----------------------------------------------------------------------

    /// Outlook event created/updated/cancelled/deleted → the route user's DingTalk calendar.
    async fn relay_event(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        change: &str,
    ) -> Result<(), JobFailure> {
        let (Some(union_id), Some(client)) = (&route.dingtalk.union_id, &self.dingtalk) else {
            tracing::warn!(route = %route.name, "route relays events but has no dingtalk.union_id or DingTalk app credentials");
            return Ok(());
        };
        self.claimed(
            id,
            self.relay_event_claimed(route, mailbox, id, change, union_id, client),
        )
        .await
    }

    async fn relay_event_claimed(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        change: &str,
        union_id: &str,
        client: &DingTalkClient,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        let skip = |reason: &'static str| {
            metrics::counter!("graph_relay_skipped_total", "reason" => reason).increment(1);
            tracing::debug!(item = id, reason, "Outlook event not relayed");
            Ok(())
        };
        let mapped = self
            .store
            .map_get(EVENT_NS, Side::Right, id)
            .await
            .map_err(transient)?;
        let event = if change == "deleted" {
            None
        } else {
            match self.fetch_item(mailbox, "events", id).await {
                Ok(v) => Some(v),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(ev) = &event
            && carries_origin_marker(ev)
        {
            return skip("origin_marker");
        }
        // Graph's changeKey changes with every edit: the same one was relayed already
        // (a repeated notification, or a job taken over from a slow instance).
        let version_key = format!("outlook-event-version:{}:{id}", route.name);
        let version = event
            .as_ref()
            .and_then(|ev| {
                ev.get("changeKey")
                    .or_else(|| ev.get("lastModifiedDateTime"))
            })
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if mapped.is_some()
            && !version.is_empty()
            && self
                .store
                .kv_get(&version_key)
                .await
                .map_err(transient)?
                .as_deref()
                == Some(version.as_str())
        {
            return skip("same_version");
        }
        outlook_triggers::publish(
            self.store.as_ref(),
            Some(outlook_triggers::event_changed(
                &route.name,
                mailbox,
                id,
                event.as_ref(),
                change,
            )),
        )
        .await?;
        let cancelled = event
            .as_ref()
            .is_none_or(|e| e.get("isCancelled").and_then(Value::as_bool) == Some(true));
        if cancelled {
            let Some(dt_id) = mapped else {
                return skip("cancel_of_unrelayed_event");
            };
            if !route.allow_deletes {
                return skip("deletes_not_allowed");
            }
            client.delete_calendar_event(union_id, &dt_id).await?;
            self.store
                .map_delete(EVENT_NS, Side::Right, id)
                .await
                .map_err(transient)?;
            metrics::counter!("graph_relayed_total", "kind" => "event_delete").increment(1);
            tracing::info!(route = %route.name, item = id, dingtalk = %dt_id, "Outlook event cancellation relayed to DingTalk");
            return Ok(());
        }
        let ev = event.expect("not cancelled");
        let Some(body) = dingtalk_event_from_graph(&ev, &route.time_zone) else {
            return Err(JobFailure::permanent("Outlook event without start/end"));
        };
        match mapped {
            Some(dt_id) => {
                let mut update = body;
                update["id"] = json!(dt_id);
                let token = client_token(&format!("outlook-event-update:{id}:{version}"));
                client
                    .update_calendar_event(union_id, &dt_id, &update, &token)
                    .await?;
                self.record_pair(None, &dt_id, id, "event_update").await?;
                tracing::info!(route = %route.name, item = id, dingtalk = %dt_id, "Outlook event update relayed to DingTalk");
            }
            None => {
                let token = client_token(&format!("outlook-event:{id}"));
                let created = client
                    .create_calendar_event(union_id, &body, &token)
                    .await?;
                let Some(dt_id) = created.get("id").and_then(Value::as_str) else {
                    return Err(JobFailure::transient(
                        "DingTalk created an event without an id",
                    ));
                };
                self.record_pair(Some(EVENT_NS), dt_id, id, "event").await?;
                tracing::info!(route = %route.name, item = id, dingtalk = %dt_id, "Outlook event relayed to DingTalk");
            }
        }
        self.store
            .kv_put(&version_key, &version, Some(EVENT_VERSION_TTL))
            .await
            .map_err(transient)?;
        Ok(())
    }

    async fn fetch_item(
        &self,
        mailbox: &str,
        collection: &str,
        id: &str,
    ) -> Result<Value, crate::graph::GraphError> {
        let expand = format!("singleValueExtendedProperties($filter=id eq '{ORIGIN_PROPERTY}')");
        let path = format!(
            "{collection}/{}?$expand={}",
            utf8_percent_encode(id, NON_ALPHANUMERIC),
            utf8_percent_encode(&expand, NON_ALPHANUMERIC)
        );
        self.graph.get(mailbox, &path).await
    }
}

/// Id-pair namespace of relayed events: left = DingTalk event id, right = Graph id.
pub const EVENT_NS: &str = "outlook-event";

/// DingTalk's `x-client-token` for a write (same input, same token: a retry within a
/// day is the same request).
pub fn client_token(input: &str) -> String {
    hex::encode(&Sha256::digest(input.as_bytes())[..16])
}

/// A DingTalk `start`/`end` from a Graph `dateTimeTimeZone` (Graph answers in UTC unless
/// asked otherwise): all-day → `{date}`; otherwise ISO-8601 with the offset of `zone`
/// (the route's zone when it has a fixed offset, else UTC).
fn dingtalk_time(dt: &Value, all_day: bool, zone: &str) -> Option<Value> {
    let raw = dt.get("dateTime").and_then(Value::as_str)?;
    let naive_text = raw.split('.').next().unwrap_or(raw);
    let naive = chrono::NaiveDateTime::parse_from_str(naive_text, "%Y-%m-%dT%H:%M:%S").ok()?;
    if all_day {
        return Some(json!({ "date": naive.format("%Y-%m-%d").to_string() }));
    }
    let src_zone = crate::sync::mapping::iana_time_zone(
        dt.get("timeZone").and_then(Value::as_str).unwrap_or("UTC"),
    );
    let src_offset = fixed_offset_minutes(src_zone).unwrap_or(0);
    let utc = naive - chrono::Duration::minutes(src_offset.into());
    let target = crate::sync::mapping::iana_time_zone(zone);
    let (name, offset) = match fixed_offset_minutes(target) {
        Some(o) => (target, o),
        None => ("UTC", 0),
    };
    let fixed = chrono::FixedOffset::east_opt(offset * 60)?;
    let local = chrono::TimeZone::from_utc_datetime(&fixed, &utc);
    Some(json!({
        "dateTime": local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        "timeZone": name,
    }))
}

/// The DingTalk calendar body of an Outlook event.
pub fn dingtalk_event_from_graph(ev: &Value, zone: &str) -> Option<Value> {
    let all_day = ev.get("isAllDay").and_then(Value::as_bool).unwrap_or(false);
    let start = dingtalk_time(ev.get("start")?, all_day, zone)?;
    let end = dingtalk_time(ev.get("end")?, all_day, zone)?;
    let summary: String = ev
        .get("subject")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or("(Outlook event)")
        .chars()
        .take(2048)
        .collect();
    let description = text_preview(
        ev.pointer("/body/content")
            .and_then(Value::as_str)
            .unwrap_or(""),
        4900,
    );
    let mut body = json!({
        "summary": summary,
        "description": description,
        "start": start,
        "end": end,
        "isAllDay": all_day,
    });
    if let Some(place) = ev
        .pointer("/location/displayName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        body["location"] = json!({ "displayName": place });
    }
    Some(body)
}

/// A stable `msgUuid` for the relay of Graph item `id` on `route`.
pub fn msg_uuid(route: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("{route}\n{id}").as_bytes());
    format!("outlook-{}", hex::encode(&digest[..16]))
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

fn md_inline(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
        .replace('[', "\\[")
        .replace(']', "\\]")
        .trim()
        .to_string()
}

/// Title and markdown text of the DingTalk message for an Outlook mail.
pub fn mail_markdown(message: &Value) -> (String, String) {
    let subject = message
        .get("subject")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(md_inline)
        .unwrap_or_else(|| "(no subject)".into());
    let from = message
        .get("from")
        .or_else(|| message.get("sender"))
        .and_then(|f| f.get("emailAddress"));
    let name = from
        .and_then(|e| e.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let address = from
        .and_then(|e| e.get("address"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let sender = match (name.is_empty(), address.is_empty()) {
        (false, false) => format!("{} <{}>", md_inline(name), md_inline(address)),
        (false, true) => md_inline(name),
        (true, false) => md_inline(address),
        (true, true) => "(unknown sender)".into(),
    };
    let body = message
        .get("body")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_str)
        .or_else(|| message.get("bodyPreview").and_then(Value::as_str))
        .unwrap_or("");
    let preview = text_preview(body, PREVIEW_CHARS);
    let mut text = format!("#### 📧 {subject}\n\n**From:** {sender}\n\n");
    if !preview.is_empty() {
        text.push_str(&format!("> {preview}\n\n"));
    }
    let names: Vec<String> = message
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("name").and_then(Value::as_str))
        .map(md_inline)
        .collect();
    if !names.is_empty() {
        text.push_str(&format!("**Attachments:** {}\n\n", names.join(", ")));
    }
    if let Some(link) = message.get("webLink").and_then(Value::as_str) {
        text.push_str(&format!("[Open in Outlook]({link})\n"));
    }
    (format!("📧 {subject}"), text)
}

#[async_trait]
impl JobHandler for OutlookRelay {
    async fn handle(&self, _job: &crate::store::Job, task: Task) -> Result<(), JobFailure> {
        let (payload, lifecycle) = match task {
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
        if lifecycle || n.lifecycle_event.is_some() {
            self.on_lifecycle(&n, record).await
        } else {
            self.on_notification(&n, record, &payload.validation_tokens)
                .await
        }
    }
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
    use super::*;

    #[test]
    fn markdown_names_sender_subject_preview_attachments_and_link() {
        let m = json!({
            "subject": "Q3 [draft]\nplan",
            "from": {"emailAddress": {"name": "Li Lei", "address": "li@contoso.com"}},
            "body": {"contentType": "html", "content": "<p>Hello&nbsp;team</p>"},
            "attachments": [{"name": "plan.xlsx"}, {"name": "memo.pdf"}],
            "webLink": "https://outlook.office365.com/owa/?ItemID=AAMk1",
        });
        let (title, text) = mail_markdown(&m);
        assert_eq!(title, "📧 Q3 \\[draft\\] plan");
        assert!(text.contains("**From:** Li Lei <li@contoso.com>"), "{text}");
        assert!(text.contains("> Hello team"), "{text}");
        assert!(
            text.contains("**Attachments:** plan.xlsx, memo.pdf"),
            "{text}"
        );
        assert!(
            text.contains("[Open in Outlook](https://outlook.office365.com/owa/?ItemID=AAMk1)")
        );
    }

    #[test]
    fn previews_are_bounded_and_uuids_stable() {
        let long = "x".repeat(5000);
        let (_, text) = mail_markdown(&json!({"subject": "s", "bodyPreview": long}));
        assert!(text.len() < 1000);
        assert_eq!(msg_uuid("r", "AAMk1"), msg_uuid("r", "AAMk1"));
        assert_ne!(msg_uuid("r", "AAMk1"), msg_uuid("r", "AAMk2"));
        assert!(msg_uuid("r", "a").len() <= 64);
    }

    #[test]
    fn outlook_events_become_dingtalk_events_in_the_route_zone() {
        let ev = json!({
            "subject": "Review", "body": {"contentType": "html", "content": "<b>Agenda</b>"},
            "start": {"dateTime": "2026-01-05T02:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-01-05T03:30:00.0000000", "timeZone": "UTC"},
            "location": {"displayName": "Room 1"},
        });
        let b = dingtalk_event_from_graph(&ev, "China Standard Time").expect("body");
        assert_eq!(b["start"]["dateTime"], "2026-01-05T10:00:00+08:00");
        assert_eq!(b["start"]["timeZone"], "Asia/Shanghai");
        assert_eq!(b["end"]["dateTime"], "2026-01-05T11:30:00+08:00");
        assert_eq!(b["description"], "Agenda");
        assert_eq!(b["location"]["displayName"], "Room 1");
        let b = dingtalk_event_from_graph(&ev, "Europe/Berlin").expect("body");
        assert_eq!(b["start"]["dateTime"], "2026-01-05T02:00:00+00:00");
        assert_eq!(b["start"]["timeZone"], "UTC");
        let all_day = json!({"isAllDay": true, "subject": "Holiday",
            "start": {"dateTime": "2026-01-05T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-01-06T00:00:00.0000000", "timeZone": "UTC"}});
        let b = dingtalk_event_from_graph(&all_day, "China Standard Time").expect("body");
        assert_eq!(b["start"], json!({"date": "2026-01-05"}));
        assert_eq!(b["end"], json!({"date": "2026-01-06"}));
    }

    #[test]
    fn read_state_needs_mail_and_todo_towards_dingtalk_and_a_user() {
        let mut r: RouteConfig = toml::from_str(
            "name = \"r\"\nmailbox = \"a@x\"\nkinds = [\"mail\", \"todo\"]\ndirection = \"both\"\n[dingtalk]\nunion_id = \"u\"\n",
        )
        .expect("route");
        assert!(carries_read_state(&r));
        r.direction = crate::config::Direction::ToOutlook;
        assert!(!carries_read_state(&r));
        r.direction = crate::config::Direction::ToDingtalk;
        r.kinds = vec![RouteKind::Mail];
        assert!(!carries_read_state(&r));
        r.kinds = vec![RouteKind::Mail, RouteKind::Todo];
        r.dingtalk.union_id = None;
        assert!(!carries_read_state(&r));
        let s = todo_source_id("r", "AAMk1");
        assert_eq!(s, todo_source_id("r", "AAMk1"));
        assert_ne!(s, todo_source_id("r2", "AAMk1"));
        assert!(s.starts_with(TODO_SOURCE_PREFIX) && s.len() <= 64);
    }

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
