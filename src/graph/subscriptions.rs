//! Graph subscriptions as the store remembers them: which mailbox and route a
//! subscription serves and the random `clientState` it was created with.

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreResult};

/// What a subscription watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Watched {
    /// Messages of a folder (or the whole mailbox).
    Messages,
    /// Calendar events.
    Events,
    /// Contacts.
    Contacts,
}

/// One live subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Graph's subscription id.
    pub id: String,
    /// Route name.
    pub route: String,
    /// Mailbox watched.
    pub mailbox: String,
    /// What it watches.
    pub watched: Watched,
    /// The `resource` it was created with.
    pub resource: String,
    /// Secret echoed in every notification.
    pub client_state: String,
    /// Expiry (RFC 3339).
    pub expires_at: String,
    /// Created with `includeResourceData`.
    #[serde(default)]
    pub rich: bool,
}

fn key(id: &str) -> String {
    format!("graph:sub:{id}")
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
    store.kv_put(&key(&record.id), &raw, None).await
}

/// Forgets a subscription.
pub async fn forget(store: &dyn Store, id: &str) -> StoreResult<()> {
    store.kv_delete(&key(id)).await.map(|_| ())
}

/// Every remembered subscription.
pub async fn all(store: &dyn Store) -> StoreResult<Vec<SubscriptionRecord>> {
    let mut out = Vec::new();
    for k in store.kv_keys("graph:sub:").await? {
        if let Some(raw) = store.kv_get(&k).await?
            && let Ok(r) = serde_json::from_str(&raw)
        {
            out.push(r);
        }
    }
    Ok(out)
}
