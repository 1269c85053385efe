//! What the fake holds: per-mailbox folders, messages, events, contacts, To Do lists and
//! their change log, plus tokens, uploads, subscriptions and everything received; and the
//! helpers that stamp server fields on items.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Mutex,
    time::Instant,
};

use rand::{Rng, distributions::Alphanumeric};
use serde_json::{Value, json};

use super::{
    GraphFake, GraphFakeConfig, Recorded, Violation, attachments::UploadSession,
    failures::Injected, subscriptions::FakeSubscription,
};

#[derive(Debug, Clone)]
pub(super) struct StoredMessage {
    pub(super) folder_id: String,
    pub(super) json: Value,
}

#[derive(Debug, Default)]
pub(super) struct Mailbox {
    pub(super) folders: Vec<Value>,
    pub(super) messages: Vec<StoredMessage>,
    pub(super) attachment_bytes: HashMap<String, Vec<u8>>,
    /// MIME of messages delivered with their own (`$value` renders the others).
    pub(super) mime: HashMap<String, Vec<u8>>,
    pub(super) events: Vec<Value>,
    pub(super) contacts: Vec<Value>,
    pub(super) lists: Vec<Value>,
    pub(super) tasks: HashMap<String, Vec<Value>>,
    pub(super) sent: Vec<Value>,
    pub(super) in_flight: usize,
    pub(super) max_in_flight: usize,
    pub(super) window_start: Option<Instant>,
    pub(super) window_count: u32,
    pub(super) throttled: usize,
    /// Change log for delta: (sequence, message id, folder id, removed from that folder).
    pub(super) changes: Vec<(u64, String, String, bool)>,
    pub(super) seq: u64,
}

impl Mailbox {
    pub(super) fn log_change(&mut self, id: &str, folder_id: &str, removed: bool) {
        self.seq += 1;
        self.changes
            .push((self.seq, id.to_string(), folder_id.to_string(), removed));
    }
}

const WELL_KNOWN: &[(&str, &str)] = &[
    ("inbox", "Inbox"),
    ("drafts", "Drafts"),
    ("sentitems", "Sent Items"),
    ("deleteditems", "Deleted Items"),
    ("archive", "Archive"),
    ("junkemail", "Junk Email"),
];

impl Mailbox {
    pub(super) fn fresh() -> Self {
        let mut mb = Mailbox::default();
        for (wk, name) in WELL_KNOWN {
            mb.folders.push(json!({
                "id": opaque_id("AQMk"),
                "displayName": name,
                "parentFolderId": "msgfolderroot",
                "childFolderCount": 0,
                "unreadItemCount": 0,
                "totalItemCount": 0,
                "isHidden": false,
                "x-fake-wellKnownName": wk,
            }));
        }
        let list_id = opaque_id("AAMkL");
        mb.lists.push(json!({
            "id": list_id,
            "displayName": "Tasks",
            "isOwner": true,
            "isShared": false,
            "wellknownListName": "defaultList",
        }));
        mb.tasks.insert(list_id, vec![]);
        mb
    }

    /// Resolves a folder id, a well-known name, or (for inspection) a display name.
    pub(super) fn folder_id(&self, key: &str, by_name: bool) -> Option<String> {
        self.folders
            .iter()
            .find(|f| {
                f["id"] == key
                    || f["x-fake-wellKnownName"]
                        .as_str()
                        .is_some_and(|w| w.eq_ignore_ascii_case(key))
                    || (by_name
                        && f["displayName"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(key)))
            })
            .and_then(|f| f["id"].as_str().map(str::to_string))
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) tokens: HashMap<String, Instant>,
    pub(super) token_requests: usize,
    pub(super) seen_jti: HashSet<String>,
    pub(super) mailboxes: HashMap<String, Mailbox>,
    pub(super) uploads: HashMap<String, UploadSession>,
    pub(super) requests: Vec<Recorded>,
    pub(super) violations: Vec<Violation>,
    pub(super) failures: Vec<Injected>,
    pub(super) throttled_concurrency: usize,
    pub(super) throttled_budget: usize,
    pub(super) subscriptions: HashMap<String, FakeSubscription>,
    pub(super) expired_subscriptions: Vec<String>,
    pub(super) jwks: Option<Value>,
}

pub(super) struct Shared {
    pub(super) addr: SocketAddr,
    pub(super) config: Mutex<GraphFakeConfig>,
    pub(super) state: Mutex<State>,
}

impl Shared {
    pub(super) fn config(&self) -> GraphFakeConfig {
        self.config.lock().expect("config").clone()
    }
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("state")
    }
    pub(super) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl GraphFake {
    pub(super) fn with_mailbox<T>(
        &self,
        mailbox: &str,
        f: impl FnOnce(&Mailbox) -> T,
    ) -> Option<T> {
        self.shared
            .state()
            .mailboxes
            .get(&mailbox.to_lowercase())
            .map(f)
    }
}

pub(super) fn random_string(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

pub(super) fn opaque_id(prefix: &str) -> String {
    format!("{prefix}{}", random_string(40))
}

pub(super) fn now_iso() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) fn now_iso_millis() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Adds server fields to a created item.
pub(super) fn stamp(mut body: Value, prefix: &str) -> Value {
    let now = now_iso();
    body["id"] = json!(opaque_id(prefix));
    body["createdDateTime"] = json!(now);
    body["lastModifiedDateTime"] = json!(now);
    body["changeKey"] = json!(random_string(16));
    body
}

pub(super) fn merge(target: &mut Value, patch: &Value) {
    let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
        return;
    };
    for (k, v) in p {
        if k == "id" {
            continue;
        }
        if k == "singleValueExtendedProperties"
            && let (Some(existing), Some(new)) =
                (t.get(k).and_then(Value::as_array).cloned(), v.as_array())
        {
            let mut merged = existing;
            for np in new {
                match merged.iter_mut().find(|e| e["id"] == np["id"]) {
                    Some(e) => *e = np.clone(),
                    None => merged.push(np.clone()),
                }
            }
            t.insert(k.clone(), Value::Array(merged));
            continue;
        }
        t.insert(k.clone(), v.clone());
    }
    t.insert("lastModifiedDateTime".into(), json!(now_iso()));
}
