//! REST hook subscriptions (Zapier "REST hooks", n8n webhook triggers): stored in the
//! key/value space as `hook:<id>` JSON records, each with its own `whsec_` signing secret.
//!
//! A hook belongs to the API key that made it (its target URL is a secret: whoever has a
//! Zapier or n8n catch-hook URL can start the workflow). A key sees and deletes only its
//! own hooks; an administrator sees and deletes all. Ownership is the key's id, not its
//! name, which is a free label that several keys may share. Records of versions that
//! kept no owner belong to no key: only an administrator sees or deletes them.

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
    /// Id of the API key that created it (its owner); empty on records of versions that
    /// kept no owner.
    #[serde(default)]
    pub created_by: String,
    /// Name of that key when the hook was made, for people reading the list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by_name: String,
}

/// Who asks for hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer<'a> {
    /// One API key, by id: its own hooks only.
    Key(&'a str),
    /// An administrator: every hook.
    Admin,
}

impl Hook {
    /// A new active subscription with a fresh id and secret.
    pub fn new(target_url: &str, event: &str, owner_id: &str, owner_name: &str) -> Hook {
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
            created_by: owner_id.to_string(),
            created_by_name: owner_name.to_string(),
        }
    }

    /// Whether `viewer` may see and delete it (an ownerless hook: administrators only).
    pub fn visible_to(&self, viewer: Viewer<'_>) -> bool {
        match viewer {
            Viewer::Admin => true,
            Viewer::Key(id) => !self.created_by.is_empty() && self.created_by == id,
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

/// Rewrites a hook that still exists (a delivery recording its 404 run or disabling
/// it); `false` when it was deleted meanwhile, which then stays so.
pub async fn update(store: &dyn Store, hook: &Hook) -> StoreResult<bool> {
    let json = serde_json::to_string(hook).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store
        .kv_replace(&format!("{KV_PREFIX}{}", hook.id), &json)
        .await
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

/// One hook as `viewer` sees it: another key's hook reads as absent, so that ids do not
/// reveal which hooks exist.
pub async fn get_for(store: &dyn Store, id: &str, viewer: Viewer<'_>) -> StoreResult<Option<Hook>> {
    Ok(get(store, id).await?.filter(|h| h.visible_to(viewer)))
}

/// Deletes a hook `viewer` may see; `true` when it did. Another key's hook is left alone,
/// as if it did not exist.
pub async fn delete_for(store: &dyn Store, id: &str, viewer: Viewer<'_>) -> StoreResult<bool> {
    if viewer == Viewer::Admin {
        // Without reading it first: an unreadable record can still be removed.
        return delete(store, id).await;
    }
    match get_for(store, id, viewer).await? {
        Some(_) => delete(store, id).await,
        None => Ok(false),
    }
}

/// Every hook `viewer` may see.
pub async fn all_for(store: &dyn Store, viewer: Viewer<'_>) -> StoreResult<Vec<Hook>> {
    let mut hooks = all(store).await?;
    hooks.retain(|h| h.visible_to(viewer));
    Ok(hooks)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn a_key_reaches_only_its_own_hooks_and_an_ownerless_one_only_admin_reaches() {
        let store = MemoryStore::new(10);
        let mine = Hook::new(
            "https://hooks.example/1",
            "sync.failed",
            "aaaaaaaaaaaa",
            "zapier",
        );
        let theirs = Hook::new(
            "https://hooks.example/2",
            "sync.failed",
            "bbbbbbbbbbbb",
            "zapier",
        );
        // As versions that recorded no owner left it.
        let ownerless = Hook::new("https://hooks.example/3", "sync.failed", "", "");
        for h in [&mine, &theirs, &ownerless] {
            save(&store, h).await.expect("save");
        }
        let me = Viewer::Key("aaaaaaaaaaaa");
        let ids = |hooks: Vec<Hook>| hooks.into_iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(
            ids(all_for(&store, me).await.expect("list")),
            std::slice::from_ref(&mine.id)
        );
        assert_eq!(all_for(&store, Viewer::Admin).await.expect("list").len(), 3);
        assert!(
            get_for(&store, &theirs.id, me)
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            get_for(&store, &ownerless.id, Viewer::Key(""))
                .await
                .expect("get")
                .is_none()
        );

        assert!(!delete_for(&store, &theirs.id, me).await.expect("delete"));
        assert!(
            get(&store, &theirs.id).await.expect("get").is_some(),
            "left in place"
        );
        assert!(delete_for(&store, &mine.id, me).await.expect("delete"));
        assert!(
            delete_for(&store, &ownerless.id, Viewer::Admin)
                .await
                .expect("delete")
        );
        assert_eq!(
            ids(all_for(&store, Viewer::Admin).await.expect("list")),
            [theirs.id]
        );
    }
}
