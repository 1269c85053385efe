//! All state of the service lives behind [`Store`]: idempotency records, inbound dedupe
//! marks, the job queue with its dead letters, leases, id mappings, the audit trail and a
//! small key/value space. Two implementations pass the same contract suite
//! ([`contract`]): [`memory::MemoryStore`] for one instance and [`redis::RedisStore`].

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod backup;
pub mod contract;
pub mod memory;
pub mod redis;

/// A store operation failed; the caller must not claim success.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with data this version cannot read.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The store holds all it may (the embedded store's bounds); retry later.
    #[error("{0}")]
    Full(String),
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Job kind of the dead letters that stand for unreadable queue entries.
pub const UNREADABLE_KIND: &str = "unreadable";

/// A unit of background work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    /// Unique id, also the idempotency handle handlers pass downstream.
    pub id: String,
    /// Which handler runs it.
    pub kind: String,
    /// Handler input.
    pub payload: Value,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Error of the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was first enqueued (Unix ms).
    pub enqueued_at_ms: i64,
}

impl Job {
    /// The job as a replay queues it: attempts from zero, the last error kept for reference.
    pub fn replayed(mut self) -> Self {
        self.attempts = 0;
        self
    }

    /// A fresh job with a random id.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.into(),
            payload,
            attempts: 0,
            last_error: None,
            enqueued_at_ms: now_ms(),
        }
    }

    /// Stands in, in the dead letters, for a queue entry this version cannot read (too
    /// deep, written by a newer version, damaged): the raw text and the reason are kept
    /// so a person can act on them; its kind has no handler, so it never runs.
    pub fn unreadable(entry: &str, raw: Option<String>, reason: String) -> Self {
        Self {
            id: format!("unreadable-{entry}"),
            kind: UNREADABLE_KIND.into(),
            payload: serde_json::json!({ "entry": entry, "raw": raw }),
            attempts: 0,
            last_error: Some(reason),
            enqueued_at_ms: now_ms(),
        }
    }

    pub(crate) fn to_json(&self) -> String {
        // Serializing a struct of strings, numbers and a Value cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn from_json(s: &str) -> StoreResult<Job> {
        serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("job: {e}")))
    }
}

/// A job handed to one consumer; `receipt` identifies the hand-over for ack/retry.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Backend handle of this delivery (a stream entry id on Redis).
    pub receipt: String,
    /// The job.
    pub job: Job,
}

/// A job that exhausted its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// The job as it was last tried (attempts and last error included).
    pub job: Job,
    /// When it was dead-lettered (Unix ms).
    pub failed_at_ms: i64,
}

/// Inbound-event dedupe mark written atomically with an enqueue.
#[derive(Debug, Clone, Copy)]
pub struct Dedupe<'a> {
    /// Event source, e.g. `dingtalk`.
    pub source: &'a str,
    /// The platform's own event id.
    pub event_id: &'a str,
    /// How long the mark lives.
    pub ttl: Duration,
}

/// Result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Durably queued.
    Enqueued,
    /// The dedupe mark already existed; nothing was queued.
    Duplicate,
}

/// Counts describing the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Waiting to be picked up (in-flight included on Redis, where they stay in the stream).
    pub ready: u64,
    /// Waiting for a retry time.
    pub delayed: u64,
    /// Held by a consumer and not yet acknowledged.
    pub in_flight: u64,
    /// In the dead-letter stream.
    pub dead: u64,
}

/// What an idempotency key currently holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdempotencyRecord {
    /// Hash of the request the key was first used with.
    pub fingerprint: String,
    /// The stored final response; `None` while the first request still runs.
    pub response: Option<StoredResponse>,
}

/// A response kept for replay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers that matter for a replay (content type, Retry-After, Location...).
    pub headers: Vec<(String, String)>,
    /// Body bytes as UTF-8 text.
    pub body: String,
}

/// Result of reserving an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// The key was free and is now reserved for this caller.
    Reserved,
    /// The key already exists (in flight or finished).
    Existing(IdempotencyRecord),
}

/// Which side of an id pair a lookup starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source-side id (for example DingTalk's).
    Left,
    /// The target-side id (for example Graph's).
    Right,
}

/// One audit-trail entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// When (Unix ms).
    pub at_ms: i64,
    /// What happened, e.g. `event.accepted`, `job.dead_lettered`.
    pub action: String,
    /// Free-form structured detail (never secrets).
    pub detail: Value,
}

impl AuditEntry {
    /// An entry stamped now.
    pub fn now(action: impl Into<String>, detail: Value) -> Self {
        Self {
            at_ms: now_ms(),
            action: action.into(),
            detail,
        }
    }
}

/// The service's state, shared by every instance through one backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `memory` or `redis`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the backend answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Atomically reserves `key` for a request with `fingerprint`, or returns what it holds.
    async fn idempotency_reserve(
        &self,
        key: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> StoreResult<Reservation>;
    /// Stores the final response of a reserved key.
    async fn idempotency_complete(
        &self,
        key: &str,
        record: &IdempotencyRecord,
        ttl: Duration,
    ) -> StoreResult<()>;
    /// Frees a reserved key so that a retry can run (used when no response may be stored).
    async fn idempotency_release(&self, key: &str) -> StoreResult<()>;

    /// Marks an inbound event; `true` only for the first caller within `ttl`.
    async fn seen(&self, source: &str, event_id: &str, ttl: Duration) -> StoreResult<bool>;

    /// Durably queues a job; with `dedupe`, only if the mark was not set (atomically).
    async fn enqueue(&self, job: &Job, dedupe: Option<Dedupe<'_>>) -> StoreResult<EnqueueOutcome>;
    /// Hands up to `max` jobs to `consumer`, waiting up to `wait` for one; jobs another
    /// consumer held longer than `visibility` without acknowledging are taken over.
    async fn fetch(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> StoreResult<Vec<Delivery>>;
    /// Completes a delivery.
    async fn ack(&self, delivery: &Delivery) -> StoreResult<()>;
    /// Completes a delivery and re-queues `job` (with its new attempt count) after `delay`.
    async fn retry_later(&self, delivery: &Delivery, job: &Job, delay: Duration)
    -> StoreResult<()>;
    /// Completes a delivery and moves `job` to the dead letters.
    async fn dead_letter(&self, delivery: &Delivery, job: &Job) -> StoreResult<()>;
    /// Most recent dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>>;
    /// Moves the dead letter of job `job_id` back to the queue with its attempts reset
    /// (a replay after the cause was fixed); `false` when there is no such dead letter.
    /// Two concurrent replays of one letter queue it once.
    async fn requeue_dead(&self, job_id: &str) -> StoreResult<bool>;
    /// Queue counts.
    async fn queue_depth(&self) -> StoreResult<QueueDepth>;

    /// Takes the lease `name` for `ttl` if free; `true` when this caller holds it now.
    async fn lease_acquire(&self, name: &str, token: &str, ttl: Duration) -> StoreResult<bool>;
    /// Extends the lease if `token` still holds it.
    async fn lease_renew(&self, name: &str, token: &str, ttl: Duration) -> StoreResult<bool>;
    /// Frees the lease if `token` holds it.
    async fn lease_release(&self, name: &str, token: &str) -> StoreResult<bool>;

    /// Records the id pair `left` ⇄ `right` in namespace `ns` (both directions).
    async fn map_put(&self, ns: &str, left: &str, right: &str) -> StoreResult<()>;
    /// Looks up the other id of a pair.
    async fn map_get(&self, ns: &str, from: Side, id: &str) -> StoreResult<Option<String>>;
    /// Forgets a pair, given either side.
    async fn map_delete(&self, ns: &str, from: Side, id: &str) -> StoreResult<()>;

    /// Appends to the audit trail (oldest entries beyond the cap are trimmed).
    async fn audit_append(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Most recent audit entries, newest first.
    async fn audit_recent(&self, limit: usize) -> StoreResult<Vec<AuditEntry>>;

    /// Records `value` under `id` at the head of the capped feed `feed` (entries beyond
    /// `cap` are dropped, oldest first). Idempotent: `false` when `id` is already in the
    /// feed, which then stays unchanged (its position and value included).
    async fn feed_put(&self, feed: &str, id: &str, value: &str, cap: usize) -> StoreResult<bool>;
    /// Up to `limit` values of `feed`, newest first.
    async fn feed_recent(&self, feed: &str, limit: usize) -> StoreResult<Vec<String>>;

    /// Reads a value.
    async fn kv_get(&self, key: &str) -> StoreResult<Option<String>>;
    /// Writes a value, optionally expiring.
    async fn kv_put(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<()>;
    /// Overwrites a value only if it still exists (keeping no expiry); `false` when it was
    /// gone, so a concurrent delete is never undone by a late write.
    async fn kv_replace(&self, key: &str, value: &str) -> StoreResult<bool>;
    /// Deletes a value; `true` when it existed.
    async fn kv_delete(&self, key: &str) -> StoreResult<bool>;
    /// Keys under `prefix`. On Redis this scans the whole keyspace (every dedupe mark
    /// included): for admin commands and migrations only, never per event — keep an
    /// index with the `set_*` operations instead.
    async fn kv_keys(&self, prefix: &str) -> StoreResult<Vec<String>>;

    /// Adds `member` to the set `name` (an index of records kept in the kv space).
    async fn set_add(&self, name: &str, member: &str) -> StoreResult<()>;
    /// Removes `member` from the set `name`.
    async fn set_remove(&self, name: &str, member: &str) -> StoreResult<()>;
    /// The members of the set `name`, sorted.
    async fn set_members(&self, name: &str) -> StoreResult<Vec<String>>;

    /// Atomically adds `by` to a counter and returns the new value; `ttl` is set when the
    /// counter is created (rate windows, monthly budgets).
    async fn incr(&self, key: &str, by: u64, ttl: Option<Duration>) -> StoreResult<u64>;
}

/// A shared handle to the configured store.
pub type SharedStore = Arc<dyn Store>;

/// Which store backend the settings select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In-process store for a single instance.
    Memory,
    /// Redis at this URL.
    Redis(String),
    /// A Redis Cluster reached through any of these node URLs.
    RedisCluster(Vec<String>),
}

/// The settings a store is opened with (from `Config::store_settings`).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Backend and where it is.
    pub kind: StoreKind,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Audit trail cap.
    pub audit_max_entries: u64,
    /// Embedded store: most jobs held.
    pub memory_queue_max: u64,
    /// Embedded store: most dedupe marks kept.
    pub memory_dedupe_max: u64,
}

/// Opens the store the settings name.
pub async fn open(settings: &StoreSettings) -> Result<SharedStore, StoreError> {
    let s = settings;
    Ok(match &s.kind {
        StoreKind::Memory => Arc::new(
            memory::MemoryStore::new(s.audit_max_entries)
                .bounded(s.memory_queue_max, s.memory_dedupe_max),
        ),
        StoreKind::Redis(url) => {
            Arc::new(redis::RedisStore::connect(url, &s.key_prefix, s.audit_max_entries).await?)
        }
        StoreKind::RedisCluster(nodes) => Arc::new(
            redis::RedisStore::connect_cluster(nodes, &s.key_prefix, s.audit_max_entries).await?,
        ),
    })
}

/// Adds the id of every kv record under `prefix` to the set `name`, once per store (a
/// marker remembers it): records written before that set was kept, by older versions.
pub async fn index_once(store: &dyn Store, name: &str, prefix: &str) -> StoreResult<()> {
    let marker = format!("indexed:{name}");
    if store.kv_get(&marker).await?.is_some() {
        return Ok(());
    }
    for key in store.kv_keys(prefix).await? {
        store.set_add(name, &key[prefix.len()..]).await?;
    }
    store.kv_put(&marker, "1", None).await
}

/// Takes the lease `name` for `ttl`, waiting up to `max_wait` for it (polling every
/// 50 ms); the holder's token, or `None` when it stayed taken.
pub async fn lease_wait(
    store: &dyn Store,
    name: &str,
    ttl: Duration,
    max_wait: Duration,
) -> StoreResult<Option<String>> {
    let token = uuid::Uuid::new_v4().to_string();
    let deadline = tokio::time::Instant::now() + max_wait;
    loop {
        if store.lease_acquire(name, &token, ttl).await? {
            return Ok(Some(token));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
