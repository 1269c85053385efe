//! API keys of the low-code surface (`/v1`).
//!
//! A key reads `dbk_<id>_<secret>`: the 12-character `id` finds the record, the 64-hex
//! `secret` carries 256 random bits. Only the SHA-256 of the whole key is kept (a fast
//! hash is enough for a secret of that entropy: there is nothing to brute-force), and it
//! is compared in constant time. Keys are made with `dingbridge keys create` (shown once),
//! listed with `keys list` and revoked with `keys revoke <id>`. With the embedded memory
//! store the command line cannot reach the running process, so keys can also be given in
//! the configuration as `api.bootstrap_keys` entries `name:scope+scope:sha256hex` (made by
//! `dingbridge keys hash`), which hold no usable secret either.

use std::collections::BTreeSet;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError, StoreResult};

/// Store key prefix of key records.
const KV_PREFIX: &str = "apikey:";
/// Prefix of every key.
pub const KEY_PREFIX: &str = "dbk_";

// Scopes and configured keys are setting values, parsed with the configuration.
pub use crate::config::{BootstrapKey, Scope, parse_scopes};

/// A stored key: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// Public id (part of the key).
    pub id: String,
    /// Human label, e.g. `zapier`; shown by `GET /v1/me` (Zapier's connection label).
    pub name: String,
    /// What the key may do.
    pub scopes: BTreeSet<Scope>,
    /// Hex SHA-256 of the whole key.
    pub hash: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// The caller of a `/v1` request, proven by its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// Key id.
    pub id: String,
    /// Key label.
    pub name: String,
    /// Granted scopes.
    pub scopes: BTreeSet<Scope>,
}

/// A freshly made key: the secret exists only here.
pub struct NewKey {
    /// The whole key, to show once.
    pub key: String,
    /// Its record.
    pub record: KeyRecord,
}

/// Makes a new random key (not stored).
pub fn generate(name: &str, scopes: BTreeSet<Scope>) -> NewKey {
    let mut rng = rand::thread_rng();
    let mut id = [0u8; 6];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let key = format!("{KEY_PREFIX}{id}_{}", hex::encode(secret));
    NewKey {
        record: KeyRecord {
            id,
            name: name.to_string(),
            scopes,
            hash: hex::encode(hash_key(&key)),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
        key,
    }
}

/// SHA-256 of the whole key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The id part of a well-formed key.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == 12
        && secret.len() == 64
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then_some(id)
}

/// Stores a key record.
pub async fn save(store: &dyn Store, record: &KeyRecord) -> StoreResult<()> {
    let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store
        .kv_put(&format!("{KV_PREFIX}{}", record.id), &json, None)
        .await
}

/// Every stored key, by id.
pub async fn list(store: &dyn Store) -> StoreResult<Vec<KeyRecord>> {
    let mut out = Vec::new();
    for k in store.kv_keys(KV_PREFIX).await? {
        if let Some(raw) = store.kv_get(&k).await? {
            let record: KeyRecord =
                serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push(record);
        }
    }
    Ok(out)
}

/// Deletes a stored key; `true` when it existed.
pub async fn revoke(store: &dyn Store, id: &str) -> StoreResult<bool> {
    store.kv_delete(&format!("{KV_PREFIX}{id}")).await
}

/// Finds who `key` belongs to: a stored key first, then the bootstrap keys.
pub async fn authenticate(
    store: &dyn Store,
    bootstrap: &[BootstrapKey],
    key: &str,
) -> StoreResult<Option<Principal>> {
    let Some(id) = key_id(key) else {
        return Ok(None);
    };
    let presented = hash_key(key);
    if let Some(raw) = store.kv_get(&format!("{KV_PREFIX}{id}")).await? {
        let record: KeyRecord =
            serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let stored = hex::decode(&record.hash).unwrap_or_default();
        if bool::from(stored.as_slice().ct_eq(&presented[..])) {
            return Ok(Some(Principal {
                id: record.id,
                name: record.name,
                scopes: record.scopes,
            }));
        }
        return Ok(None);
    }
    // Compare against every entry so that timing does not tell which one matched.
    let mut found = None;
    for b in bootstrap {
        if bool::from(b.hash[..].ct_eq(&presented[..])) {
            found = Some(Principal {
                id: id.to_string(),
                name: b.name.clone(),
                scopes: b.scopes.clone(),
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn a_stored_key_authenticates_and_a_revoked_or_altered_one_does_not() {
        let store = MemoryStore::new(10);
        let new = generate("zapier", parse_scopes("triggers,actions").expect("scopes"));
        save(&store, &new.record).await.expect("save");
        let p = authenticate(&store, &[], &new.key)
            .await
            .expect("auth")
            .expect("known");
        assert_eq!(p.name, "zapier");
        assert!(p.scopes.contains(&Scope::Actions) && !p.scopes.contains(&Scope::Admin));
        let mut altered = new.key.clone();
        let last = altered.pop().expect("char");
        altered.push(if last == '0' { '1' } else { '0' });
        assert!(
            authenticate(&store, &[], &altered)
                .await
                .expect("auth")
                .is_none()
        );
        assert!(
            !list(&store).await.expect("list")[0]
                .hash
                .contains(&new.key[17..])
        );
        assert!(revoke(&store, &new.record.id).await.expect("revoke"));
        assert!(
            authenticate(&store, &[], &new.key)
                .await
                .expect("auth")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_bootstrap_key_authenticates_by_its_hash() {
        let store = MemoryStore::new(10);
        let new = generate("n8n", parse_scopes("admin").expect("scopes"));
        let entry = format!("n8n:admin:{}", new.record.hash);
        let boot = BootstrapKey::parse(&entry).expect("parse");
        let p = authenticate(&store, &[boot], &new.key)
            .await
            .expect("auth")
            .expect("known");
        assert_eq!(p.id, new.record.id);
        assert!(BootstrapKey::parse("x:admin:abc").is_err());
        assert!(BootstrapKey::parse("x:root:").is_err());
    }

    #[test]
    fn malformed_keys_have_no_id() {
        assert_eq!(key_id("nope"), None);
        assert_eq!(key_id("dbk_short_abc"), None);
    }
}
