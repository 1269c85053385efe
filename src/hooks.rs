//! REST hook subscriptions (Zapier "REST hooks", n8n webhook triggers): stored in the
//! key/value space as `hook:<id>` JSON records, each with its own `whsec_` signing secret.

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, StoreResult};

const KV_PREFIX: &str = "hook:";
/// The store set indexing every hook id: finding the hooks of an event (on every
/// published trigger) must not scan the keyspace.
pub const INDEX: &str = "hooks";

/// Indexes hooks written by versions that kept no index (once per store).
pub async fn index_existing(store: &dyn Store) -> StoreResult<()> {
    crate::store::index_once(store, INDEX, KV_PREFIX).await
}

/// Whether deliveries go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookStatus {
    /// Deliveries are made.
    Active,
    /// The target kept answering 404 past the grace period; nothing is delivered.
    Disabled,
}

/// One subscription.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hook {
    /// `hook_<32 hex>`.
    pub id: String,
    /// Where deliveries are POSTed.
    pub target_url: String,
    /// The subscribed event name.
    pub event: String,
    /// `whsec_<base64 of 32 random bytes>`.
    pub secret: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Active or disabled.
    pub status: HookStatus,
    /// Start (Unix ms) of the current run of 404 answers, if one is going on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found_since_ms: Option<i64>,
    /// Key id that created it.
    #[serde(default)]
    pub created_by: String,
}

impl Hook {
    /// A new active subscription with a fresh id and secret.
    pub fn new(target_url: &str, event: &str, created_by: &str) -> Hook {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        Hook {
            id: format!("hook_{}", uuid::Uuid::new_v4().simple()),
            target_url: target_url.to_string(),
            event: event.to_string(),
            secret: format!("whsec_{}", STANDARD.encode(secret)),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            status: HookStatus::Active,
            not_found_since_ms: None,
            created_by: created_by.to_string(),
        }
    }
}

/// Writes (creates or updates) a hook.
pub async fn save(store: &dyn Store, hook: &Hook) -> StoreResult<()> {
    let json = serde_json::to_string(hook).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store
        .kv_put(&format!("{KV_PREFIX}{}", hook.id), &json, None)
        .await?;
    store.set_add(INDEX, &hook.id).await
}

/// Reads one hook.
pub async fn get(store: &dyn Store, id: &str) -> StoreResult<Option<Hook>> {
    match store.kv_get(&format!("{KV_PREFIX}{id}")).await? {
        Some(raw) => serde_json::from_str(&raw)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
        None => Ok(None),
    }
}

/// Deletes a hook; `true` when it existed.
pub async fn delete(store: &dyn Store, id: &str) -> StoreResult<bool> {
    let existed = store.kv_delete(&format!("{KV_PREFIX}{id}")).await?;
    store.set_remove(INDEX, id).await?;
    Ok(existed)
}

/// Every hook, oldest id order (ids are random, so effectively unordered but stable).
pub async fn all(store: &dyn Store) -> StoreResult<Vec<Hook>> {
    let mut out = Vec::new();
    for id in store.set_members(INDEX).await? {
        let key = format!("{KV_PREFIX}{id}");
        if let Some(raw) = store.kv_get(&key).await? {
            match serde_json::from_str::<Hook>(&raw) {
                Ok(h) => out.push(h),
                Err(e) => tracing::warn!(key = %key, error = %e, "unreadable hook record skipped"),
            }
        }
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Active hooks subscribed to `event`.
pub async fn active_for(store: &dyn Store, event: &str) -> StoreResult<Vec<Hook>> {
    Ok(all(store)
        .await?
        .into_iter()
        .filter(|h| h.event == event && h.status == HookStatus::Active)
        .collect())
}
