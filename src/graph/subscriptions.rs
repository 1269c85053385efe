//! Graph subscriptions as the store remembers them (which mailbox and route a
//! subscription serves and the random `clientState` it was created with), and the
//! [`SubscriptionManager`] that keeps one subscription alive per route and watched
//! collection: created at start-up, renewed well before expiry, recreated when Graph says
//! it is gone. Graph's pages: the subscription resource
//! (<https://learn.microsoft.com/graph/api/resources/subscription>), lifecycle
//! notifications (<https://learn.microsoft.com/graph/change-notifications-lifecycle-events>)
//! and lifetimes
//! (<https://learn.microsoft.com/graph/change-notifications-overview#subscription-lifetime>).

use std::{sync::Arc, time::Duration};

use rand::{Rng, distributions::Alphanumeric};
use serde_json::json;

use super::{
    GraphClient, GraphError, ORIGIN_PROPERTY_ID as ORIGIN_PROPERTY,
    notifications::EncryptionCertificate,
};
use crate::{
    config::{Config, MailboxRouteConfig, RouteConfig, RouteKind},
    store::{SharedStore, Store, StoreResult},
};

// Graph jobs carry the record, so it is defined with them, below this layer.
pub use crate::jobs::{SubscriptionRecord, Watched};

const KV_PREFIX: &str = "graph:sub:";
/// The store set indexing every subscription id (listing must not scan the keyspace).
pub const INDEX: &str = "graph-subscriptions";

fn key(id: &str) -> String {
    format!("{KV_PREFIX}{id}")
}

/// Indexes records written by versions that kept no index (once per store).
pub async fn index_existing(store: &dyn Store) -> StoreResult<()> {
    crate::store::index_once(store, INDEX, KV_PREFIX).await
}

/// Loads a subscription record by Graph id.
pub async fn load(store: &dyn Store, id: &str) -> StoreResult<Option<SubscriptionRecord>> {
    Ok(store
        .kv_get(&key(id))
        .await?
        .and_then(|raw| serde_json::from_str(&raw).ok()))
}

/// Saves (or replaces) a subscription record.
pub async fn save(store: &dyn Store, record: &SubscriptionRecord) -> StoreResult<()> {
    let raw = serde_json::to_string(record).unwrap_or_default();
    store.kv_put(&key(&record.id), &raw, None).await?;
    store.set_add(INDEX, &record.id).await
}

/// Forgets a subscription.
pub async fn forget(store: &dyn Store, id: &str) -> StoreResult<()> {
    store.kv_delete(&key(id)).await?;
    store.set_remove(INDEX, id).await
}

/// Every remembered subscription.
pub async fn all(store: &dyn Store) -> StoreResult<Vec<SubscriptionRecord>> {
    let mut out = Vec::new();
    for id in store.set_members(INDEX).await? {
        if let Some(raw) = store.kv_get(&key(&id)).await?
            && let Ok(r) = serde_json::from_str(&raw)
        {
            out.push(r);
        }
    }
    Ok(out)
}

// ----- the manager ----------------------------------------------------------------------

/// Well-known folder names usable as ids
/// (<https://learn.microsoft.com/en-us/graph/api/resources/mailfolder>).
const WELL_KNOWN_FOLDERS: &[&str] = &[
    "inbox",
    "drafts",
    "sentitems",
    "deleteditems",
    "archive",
    "junkemail",
];

/// Store lease held by the one instance that creates and renews subscriptions.
pub const LEASE: &str = "graph-subscriptions";

/// One subscription the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Route name.
    pub route: String,
    /// Mailbox.
    pub mailbox: String,
    /// What to watch.
    pub watched: Watched,
    /// Messages: folder to watch (well-known name or display name).
    pub folder: Option<String>,
    /// Messages: ask for rich notifications (the route's `rich_notifications`).
    pub rich: bool,
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    /// `{public_url}/webhooks/graph`.
    pub notification_url: String,
    /// `{public_url}/webhooks/graph/lifecycle`.
    pub lifecycle_url: String,
    /// Lifetime asked for on create and renew.
    pub lifetime: Duration,
    /// Renew when less than this remains.
    pub renew_before: Duration,
    /// Check interval.
    pub interval: Duration,
    /// The certificate rich subscriptions are created with; without it, every
    /// subscription is a plain one.
    pub encryption: Option<EncryptionCertificate>,
}

impl ManagerSettings {
    /// The settings of `config`, or `None` without a `public_url`.
    pub fn from_config(config: &Config) -> Option<Self> {
        let base = config.public_url.as_deref()?.trim_end_matches('/');
        let g = &config.graph;
        Some(Self {
            notification_url: format!("{base}/webhooks/graph"),
            lifecycle_url: format!("{base}/webhooks/graph/lifecycle"),
            lifetime: Duration::from_secs(g.subscription_lifetime_secs),
            renew_before: Duration::from_secs(g.subscription_renew_before_secs),
            interval: Duration::from_secs(g.subscription_check_interval_secs),
            encryption: None,
        })
    }
}

/// What a check did to one wanted subscription.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A new subscription where there was none.
    Created(SubscriptionRecord),
    /// A subscription Graph had dropped was replaced: changes in the gap need a resync.
    Recreated(SubscriptionRecord),
    /// Renewed in time.
    Renewed(SubscriptionRecord),
}

/// Keeps the wanted subscriptions alive.
pub struct SubscriptionManager {
    store: SharedStore,
    graph: Arc<GraphClient>,
    settings: ManagerSettings,
    wanted: Vec<Wanted>,
}

/// The subscriptions `routes` ask for: Outlook → DingTalk routes watch messages (kind
/// `mail`, or `message` on a `both` route), events (`event`) and contacts (`contact`).
pub fn wanted(routes: &[RouteConfig]) -> Vec<Wanted> {
    let mut out = Vec::new();
    for r in routes.iter().filter(|r| r.direction.to_dingtalk()) {
        let mut push = |watched, folder: Option<String>| {
            if !out
                .iter()
                .any(|w: &Wanted| w.route == r.name && w.watched == watched)
            {
                out.push(Wanted {
                    route: r.name.clone(),
                    mailbox: r.mailbox.clone(),
                    watched,
                    folder,
                    rich: r.rich_notifications && watched == Watched::Messages,
                });
            }
        };
        for kind in &r.kinds {
            match kind {
                RouteKind::Mail | RouteKind::Message => push(
                    Watched::Messages,
                    Some(r.watch_folder.clone().unwrap_or_else(|| "inbox".into())),
                ),
                RouteKind::Event => push(Watched::Events, None),
                RouteKind::Contact => push(Watched::Contacts, None),
                RouteKind::Todo => {}
            }
        }
    }
    out
}

/// The subscriptions the mailbox routes that write to DingTalk Mail ask for: the messages
/// of the route's Outlook folder (its one mapped folder; the whole mailbox when it maps
/// several), so that a new mail wakes the route's loop.
pub fn mailbox_wanted(routes: &[MailboxRouteConfig]) -> Vec<Wanted> {
    routes
        .iter()
        .filter(|r| r.direction.to_dingtalk())
        .map(|r| Wanted {
            route: r.name.clone(),
            mailbox: r.mailbox.clone(),
            watched: Watched::Messages,
            folder: match r.folders.as_slice() {
                [one] => Some(one.outlook.trim().to_string()),
                _ => None,
            },
            rich: false,
        })
        .collect()
}

/// A random `clientState`: 64 alphanumerics (Graph allows 128).
pub fn new_client_state() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn entry_lock(route: &str, watched: Watched) -> String {
    format!("graph-sub:{route}:{watched:?}")
}

/// Longest lifetime asked for on a rich subscription: Outlook allowed 1 day for
/// subscriptions with resource data (an earlier version of
/// <https://learn.microsoft.com/en-us/graph/outlook-change-notifications-overview>; the
/// lifetime table of
/// <https://learn.microsoft.com/graph/change-notifications-overview#subscription-lifetime>
/// now gives Outlook resources 4,230 minutes either way), less a margin for clock skew.
pub const RICH_MAX_LIFETIME: Duration = Duration::from_secs(1440 * 60 - 600);

/// Properties a rich mail notification carries (Outlook requires `$select`; `body` may
/// not be selected, so the preview is `bodyPreview`), and the origin marker, the only
/// `$expand` Outlook allows there
/// (<https://learn.microsoft.com/en-us/graph/outlook-change-notifications-overview>).
pub const RICH_MESSAGE_SELECT: &str = "id,subject,from,sender,bodyPreview,webLink,hasAttachments,receivedDateTime,lastModifiedDateTime,isRead,isDraft";

/// The query a rich messages resource ends with.
fn rich_query() -> String {
    format!(
        "?$select={RICH_MESSAGE_SELECT}&$expand=singleValueExtendedProperties($filter=id eq '{ORIGIN_PROPERTY}')"
    )
}

/// How long an entry lock lives (one create with its validation handshake).
const ENTRY_LOCK_TTL: Duration = Duration::from_secs(60);

impl SubscriptionManager {
    /// A manager for `wanted` subscriptions.
    pub fn new(
        store: SharedStore,
        graph: Arc<GraphClient>,
        settings: ManagerSettings,
        wanted: Vec<Wanted>,
    ) -> Self {
        Self {
            store,
            graph,
            settings,
            wanted,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ManagerSettings {
        &self.settings
    }

    /// The wanted subscriptions.
    pub fn wanted(&self) -> &[Wanted] {
        &self.wanted
    }

    /// The record currently serving `route`/`watched`.
    pub async fn current(
        &self,
        route: &str,
        watched: Watched,
    ) -> StoreResult<Option<SubscriptionRecord>> {
        Ok(all(self.store.as_ref())
            .await?
            .into_iter()
            .find(|r| r.route == route && r.watched == watched))
    }

    /// Runs `f` holding the entry lock of `route`/`watched`; `Ok(None)` when another
    /// instance or job holds it.
    pub async fn locked<T, F, Fut>(
        &self,
        route: &str,
        watched: Watched,
        f: F,
    ) -> anyhow::Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let name = entry_lock(route, watched);
        let token = uuid::Uuid::new_v4().to_string();
        if !self
            .store
            .lease_acquire(&name, &token, ENTRY_LOCK_TTL)
            .await?
        {
            return Ok(None);
        }
        let result = f().await;
        let _ = self.store.lease_release(&name, &token).await;
        result.map(Some)
    }

    async fn resource(&self, w: &Wanted) -> Result<(String, Option<String>), GraphError> {
        let m = &w.mailbox;
        Ok(match w.watched {
            // No folder: every message of the mailbox.
            Watched::Messages if w.folder.is_none() => (format!("users/{m}/messages"), None),
            Watched::Messages => {
                let wanted = w.folder.clone().unwrap_or_else(|| "inbox".into());
                let folder = if WELL_KNOWN_FOLDERS.contains(&wanted.to_ascii_lowercase().as_str()) {
                    wanted.to_ascii_lowercase()
                } else {
                    self.graph.ensure_mail_folder(m, &wanted).await?
                };
                (
                    format!("users/{m}/mailFolders('{folder}')/messages"),
                    Some(folder),
                )
            }
            Watched::Events => (format!("users/{m}/events"), None),
            Watched::Contacts => (format!("users/{m}/contacts"), None),
        })
    }

    /// The lifetime asked for: the configured one, at most [`RICH_MAX_LIFETIME`] for
    /// rich subscriptions.
    fn lifetime(&self, rich: bool) -> Duration {
        if rich {
            self.settings.lifetime.min(RICH_MAX_LIFETIME)
        } else {
            self.settings.lifetime
        }
    }

    fn expiry(&self, rich: bool) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
            + chrono::Duration::from_std(self.lifetime(rich)).unwrap_or(chrono::Duration::zero())
    }

    /// Creates the subscription of `w` and remembers it (Graph validates both URLs first).
    pub async fn create(&self, w: &Wanted) -> anyhow::Result<SubscriptionRecord> {
        let (mut resource, folder) = self.resource(w).await?;
        let client_state = new_client_state();
        let rich = self.settings.encryption.as_ref().filter(|_| w.rich);
        if rich.is_some() {
            resource.push_str(&rich_query());
        }
        let expires = rfc3339(self.expiry(rich.is_some()));
        let mut body = json!({
            "changeType": "created,updated,deleted",
            "notificationUrl": self.settings.notification_url,
            "lifecycleNotificationUrl": self.settings.lifecycle_url,
            "resource": resource,
            "expirationDateTime": expires,
            "clientState": client_state,
            "latestSupportedTlsVersion": "v1_2",
        });
        if let Some(cert) = rich {
            body["includeResourceData"] = json!(true);
            body["encryptionCertificate"] = json!(cert.base64_der);
            body["encryptionCertificateId"] = json!(cert.id);
        }
        let created = self.graph.create_subscription(&w.mailbox, &body).await?;
        let id = created
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow::anyhow!("Graph created a subscription without an id"))?;
        let record = SubscriptionRecord {
            id: id.to_string(),
            route: w.route.clone(),
            mailbox: w.mailbox.clone(),
            watched: w.watched,
            resource,
            client_state,
            expires_at: created
                .get("expirationDateTime")
                .and_then(|v| v.as_str())
                .unwrap_or(&expires)
                .to_string(),
            rich: rich.is_some(),
            folder,
            notification_url: Some(self.settings.notification_url.clone()),
        };
        save(self.store.as_ref(), &record).await?;
        metrics::counter!("graph_subscriptions_total", "action" => "created").increment(1);
        tracing::info!(subscription = %record.id, route = %record.route, watched = ?record.watched, expires = %record.expires_at, "Graph subscription created");
        Ok(record)
    }

    /// Renews `record` (PATCH expirationDateTime). `Ok(None)` when Graph no longer has it.
    pub async fn renew(
        &self,
        record: &SubscriptionRecord,
    ) -> anyhow::Result<Option<SubscriptionRecord>> {
        let expires = rfc3339(self.expiry(record.rich));
        match self
            .graph
            .renew_subscription(&record.mailbox, &record.id, &expires)
            .await
        {
            Ok(answer) => {
                let mut r = record.clone();
                r.expires_at = answer
                    .get("expirationDateTime")
                    .and_then(|v| v.as_str())
                    .unwrap_or(&expires)
                    .to_string();
                save(self.store.as_ref(), &r).await?;
                metrics::counter!("graph_subscriptions_total", "action" => "renewed").increment(1);
                tracing::info!(subscription = %r.id, expires = %r.expires_at, "Graph subscription renewed");
                Ok(Some(r))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces `old` (gone at Graph) with a new subscription for the same route/watched.
    pub async fn recreate(&self, old: &SubscriptionRecord) -> anyhow::Result<SubscriptionRecord> {
        let w = self
            .wanted
            .iter()
            .find(|w| w.route == old.route && w.watched == old.watched)
            .cloned()
            .unwrap_or(Wanted {
                route: old.route.clone(),
                mailbox: old.mailbox.clone(),
                watched: old.watched,
                folder: old.folder.clone(),
                rich: old.rich,
            });
        let record = self.create(&w).await?;
        forget(self.store.as_ref(), &old.id).await?;
        metrics::counter!("graph_subscriptions_total", "action" => "recreated").increment(1);
        tracing::warn!(old = %old.id, new = %record.id, route = %record.route, "Graph subscription recreated");
        Ok(record)
    }

    fn due(&self, record: &SubscriptionRecord) -> bool {
        let Ok(expires) = chrono::DateTime::parse_from_rfc3339(&record.expires_at) else {
            return true;
        };
        let left = expires.with_timezone(&chrono::Utc) - chrono::Utc::now();
        // A shorter (rich) lifetime is renewed at half-time at the latest.
        let margin = self
            .settings
            .renew_before
            .min(self.lifetime(record.rich) / 2);
        left.to_std().unwrap_or(Duration::ZERO) < margin
    }

    /// One pass over the wanted subscriptions (call only while holding [`LEASE`]):
    /// create what is missing, renew what is due, recreate what Graph dropped, delete
    /// subscriptions no route wants any more.
    pub async fn check(&self) -> anyhow::Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        for w in &self.wanted {
            let done = self
                .locked(&w.route, w.watched, || async {
                    match self.current(&w.route, w.watched).await? {
                        None => Ok(Some(Outcome::Created(self.create(w).await?))),
                        Some(r)
                            if r.notification_url.as_deref().is_some_and(|u| {
                                u != self.settings.notification_url
                            }) =>
                        {
                            // public_url changed: a new subscription, then the old one goes.
                            let new = self.recreate(&r).await?;
                            if let Err(e) = self.graph.delete_subscription(&r.mailbox, &r.id).await {
                                tracing::warn!(subscription = %r.id, error = %e, "cannot delete the subscription with the old notificationUrl; it expires by itself");
                            }
                            Ok(Some(Outcome::Recreated(new)))
                        }
                        Some(r)
                            if r.rich
                                != (w.rich && self.settings.encryption.is_some()) =>
                        {
                            // rich_notifications was switched: Graph cannot change that in
                            // place, so a new subscription replaces the old one.
                            let new = self.recreate(&r).await?;
                            if let Err(e) = self.graph.delete_subscription(&r.mailbox, &r.id).await {
                                tracing::warn!(subscription = %r.id, error = %e, "cannot delete the replaced subscription; it expires by itself");
                            }
                            Ok(Some(Outcome::Recreated(new)))
                        }
                        Some(r) if self.due(&r) => match self.renew(&r).await? {
                            Some(r) => Ok(Some(Outcome::Renewed(r))),
                            None => Ok(Some(Outcome::Recreated(self.recreate(&r).await?))),
                        },
                        Some(_) => Ok(None),
                    }
                })
                .await;
            match done {
                Ok(Some(Some(o))) => outcomes.push(o),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(route = %w.route, watched = ?w.watched, error = %e, "Graph subscription check failed; next check retries")
                }
            }
        }
        for r in all(self.store.as_ref()).await? {
            if !self
                .wanted
                .iter()
                .any(|w| w.route == r.route && w.watched == r.watched)
            {
                if let Err(e) = self.graph.delete_subscription(&r.mailbox, &r.id).await {
                    tracing::warn!(subscription = %r.id, error = %e, "cannot delete an unwanted Graph subscription");
                    continue;
                }
                forget(self.store.as_ref(), &r.id).await?;
                tracing::info!(subscription = %r.id, route = %r.route, "unwanted Graph subscription deleted");
            }
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(toml_text: &str) -> RouteConfig {
        toml::from_str(toml_text).expect("route")
    }

    #[test]
    fn only_outlook_to_dingtalk_routes_want_subscriptions() {
        let routes = vec![
            route(
                "name = \"a\"\nmailbox = \"a@x\"\nkinds = [\"mail\", \"event\", \"contact\", \"todo\"]\ndirection = \"to_dingtalk\"\n[dingtalk]\nconversation_id = \"c\"\n",
            ),
            route(
                "name = \"b\"\nmailbox = \"b@x\"\nkinds = [\"mail\"]\n[dingtalk]\nconversation_id = \"c\"\n",
            ),
            route(
                "name = \"c\"\nmailbox = \"c@x\"\nkinds = [\"message\", \"mail\"]\ndirection = \"both\"\nwatch_folder = \"Projects\"\n[dingtalk]\nconversation_id = \"c\"\n",
            ),
        ];
        let w = wanted(&routes);
        let names: Vec<_> = w.iter().map(|w| (w.route.as_str(), w.watched)).collect();
        assert_eq!(
            names,
            vec![
                ("a", Watched::Messages),
                ("a", Watched::Events),
                ("a", Watched::Contacts),
                ("c", Watched::Messages)
            ]
        );
        assert_eq!(w[0].folder.as_deref(), Some("inbox"));
        assert_eq!(w[3].folder.as_deref(), Some("Projects"));
    }

    #[test]
    fn mailbox_routes_writing_to_dingtalk_watch_their_outlook_folder() {
        let route = |name: &str, extra: &str| -> MailboxRouteConfig {
            toml::from_str(&format!(
                "name = \"{name}\"\nmailbox = \"{name}@x\"\n{extra}\n[imap]\nhost = \"h\"\nuser = \"u\"\n"
            ))
            .expect("mailbox route")
        };
        let routes = vec![
            route("in", ""),
            route("out", "direction = \"to_dingtalk\""),
            route(
                "two",
                "direction = \"both\"\nfolders = [{ dingtalk = \"INBOX\", outlook = \"inbox\" }, { dingtalk = \"Sent\", outlook = \"Sent DT\" }]",
            ),
        ];
        let w = mailbox_wanted(&routes);
        let got: Vec<_> = w
            .iter()
            .map(|w| (w.route.as_str(), w.watched, w.folder.as_deref(), w.rich))
            .collect();
        assert_eq!(
            got,
            vec![
                ("out", Watched::Messages, Some("DingTalk Mail"), false),
                ("two", Watched::Messages, None, false),
            ]
        );
    }

    #[test]
    fn client_states_are_random_and_within_graphs_limit() {
        let a = new_client_state();
        assert!(a.len() <= 128);
        assert_ne!(a, new_client_state());
    }
}
