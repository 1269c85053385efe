//! In-process store: one instance, nothing survives a restart. Every operation takes one
//! mutex, which makes each of them atomic exactly like the Redis scripts.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::*;

/// Store kept in this process's memory.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    notify: Notify,
    audit_cap: usize,
    /// Most jobs held at once (ready, delayed and running); more are refused with 503.
    queue_max: usize,
    /// Most dedupe marks kept; past it the oldest are forgotten.
    dedupe_max: usize,
}

/// Default of [`MemoryStore::bounded`]'s queue bound.
pub const DEFAULT_QUEUE_MAX: u64 = 10_000;
/// Default of [`MemoryStore::bounded`]'s dedupe-mark bound.
pub const DEFAULT_DEDUPE_MAX: u64 = 100_000;

#[derive(Default)]
struct Inner {
    /// Keyed values with an optional expiry (idempotency, seen marks, leases, kv, maps).
    values: HashMap<String, (String, Option<Instant>)>,
    ready: VecDeque<(u64, Job)>,
    in_flight: HashMap<u64, (Job, Instant)>,
    delayed: BTreeMap<(Instant, u64), Job>,
    dead: VecDeque<DeadLetter>,
    audit: VecDeque<AuditEntry>,
    feeds: HashMap<String, Feed>,
    sets: HashMap<String, std::collections::BTreeSet<String>>,
    /// Dedupe mark keys, oldest first, to forget the oldest past the bound.
    seen_order: VecDeque<String>,
    next_id: u64,
    writes: u64,
}

const DEAD_CAP: usize = 10_000;

/// One capped feed: insertion sequence → id, and id → (sequence, value).
#[derive(Default)]
struct Feed {
    seq: u64,
    order: BTreeMap<u64, String>,
    items: HashMap<String, (u64, String)>,
}

impl Inner {
    fn get(&mut self, key: &str) -> Option<String> {
        let now = Instant::now();
        match self.values.get(key) {
            Some((_, Some(exp))) if *exp <= now => {
                self.values.remove(key);
                None
            }
            Some((v, _)) => Some(v.clone()),
            None => None,
        }
    }

    fn set(&mut self, key: &str, value: String, ttl: Option<Duration>) {
        self.writes += 1;
        if self.writes.is_multiple_of(4096) {
            // Expired entries are otherwise only dropped when read; sweep now and then.
            let now = Instant::now();
            self.values
                .retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
        }
        self.values
            .insert(key.to_string(), (value, ttl.map(|t| Instant::now() + t)));
    }

    fn set_nx(&mut self, key: &str, value: String, ttl: Option<Duration>) -> bool {
        if self.get(key).is_some() {
            return false;
        }
        self.set(key, value, ttl);
        true
    }

    /// Sets a dedupe mark unless one exists; keeps at most `max` marks.
    fn mark_seen(&mut self, key: String, ttl: Duration, max: usize) -> bool {
        if !self.set_nx(&key, "1".into(), Some(ttl)) {
            return false;
        }
        self.seen_order.push_back(key);
        while self.seen_order.len() > max {
            if let Some(old) = self.seen_order.pop_front() {
                self.values.remove(&old);
            }
        }
        true
    }

    fn jobs_held(&self) -> usize {
        self.ready.len() + self.delayed.len() + self.in_flight.len()
    }

    fn push_ready(&mut self, job: Job) {
        self.next_id += 1;
        let id = self.next_id;
        self.ready.push_back((id, job));
    }

    fn promote_due(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.push_ready(job);
        }
    }
}

impl MemoryStore {
    /// An empty store whose audit trail keeps at most `audit_cap` entries.
    pub fn new(audit_cap: u64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            audit_cap: usize::try_from(audit_cap).unwrap_or(usize::MAX).max(1),
            queue_max: usize::try_from(DEFAULT_QUEUE_MAX).unwrap_or(usize::MAX),
            dedupe_max: usize::try_from(DEFAULT_DEDUPE_MAX).unwrap_or(usize::MAX),
        }
    }

    /// Bounds what the store holds in memory: at most `queue_max` jobs (new events are
    /// then refused with 503 and `Retry-After`, nothing accepted is dropped) and
    /// `dedupe_max` dedupe marks (the oldest are forgotten first).
    pub fn bounded(mut self, queue_max: u64, dedupe_max: u64) -> Self {
        self.queue_max = usize::try_from(queue_max).unwrap_or(usize::MAX).max(1);
        self.dedupe_max = usize::try_from(dedupe_max).unwrap_or(usize::MAX).max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters more than stopping the whole service, so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, max: usize, visibility: Duration) -> Vec<Delivery> {
        let mut inner = self.lock();
        inner.promote_due();
        let now = Instant::now();
        let mut out = Vec::new();
        // Jobs held longer than the visibility timeout belong to a consumer that is gone.
        let stale: Vec<u64> = inner
            .in_flight
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= visibility)
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        for id in stale {
            if let Some((job, at)) = inner.in_flight.get_mut(&id) {
                *at = now;
                out.push(Delivery {
                    receipt: id.to_string(),
                    job: job.clone(),
                });
            }
        }
        while out.len() < max {
            let Some((id, job)) = inner.ready.pop_front() else {
                break;
            };
            inner.in_flight.insert(id, (job.clone(), now));
            out.push(Delivery {
                receipt: id.to_string(),
                job,
            });
        }
        out
    }

    fn settle(&self, delivery: &Delivery) -> Option<Job> {
        let id: u64 = delivery.receipt.parse().ok()?;
        self.lock().in_flight.remove(&id).map(|(job, _)| job)
    }
}

fn map_key(ns: &str, side: Side, id: &str) -> String {
    match side {
        Side::Left => format!("map:{ns}:l:{id}"),
        Side::Right => format!("map:{ns}:r:{id}"),
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn idempotency_reserve(
        &self,
        key: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> StoreResult<Reservation> {
        let k = format!("idem:{key}");
        let mut inner = self.lock();
        if let Some(existing) = inner.get(&k) {
            let record: IdempotencyRecord =
                serde_json::from_str(&existing).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            return Ok(Reservation::Existing(record));
        }
        let record = IdempotencyRecord {
            fingerprint: fingerprint.to_string(),
            response: None,
        };
        let json =
            serde_json::to_string(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        inner.set(&k, json, Some(ttl));
        Ok(Reservation::Reserved)
    }

    async fn idempotency_complete(
        &self,
        key: &str,
        record: &IdempotencyRecord,
        ttl: Duration,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.lock().set(&format!("idem:{key}"), json, Some(ttl));
        Ok(())
    }

    async fn idempotency_release(&self, key: &str) -> StoreResult<()> {
        self.lock().values.remove(&format!("idem:{key}"));
        Ok(())
    }

    async fn seen(&self, source: &str, event_id: &str, ttl: Duration) -> StoreResult<bool> {
        let max = self.dedupe_max;
        Ok(self
            .lock()
            .mark_seen(format!("seen:{source}:{event_id}"), ttl, max))
    }

    async fn enqueue(&self, job: &Job, dedupe: Option<Dedupe<'_>>) -> StoreResult<EnqueueOutcome> {
        {
            let mut inner = self.lock();
            if let Some(d) = dedupe {
                let key = format!("seen:{}:{}", d.source, d.event_id);
                if inner.get(&key).is_some() {
                    return Ok(EnqueueOutcome::Duplicate);
                }
            }
            if inner.jobs_held() >= self.queue_max {
                return Err(StoreError::Full(format!(
                    "the embedded store holds its maximum of {} jobs (memory_queue_max); nothing was accepted, retry later, or use Redis for a larger queue",
                    self.queue_max
                )));
            }
            if let Some(d) = dedupe {
                let key = format!("seen:{}:{}", d.source, d.event_id);
                inner.mark_seen(key, d.ttl, self.dedupe_max);
            }
            inner.push_ready(job.clone());
        }
        self.notify.notify_one();
        Ok(EnqueueOutcome::Enqueued)
    }

    async fn fetch(
        &self,
        _consumer: &str,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> StoreResult<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let got = self.take(max, visibility);
            if !got.is_empty() {
                return Ok(got);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(got);
            }
            // Wake on a new job, or poll again soon for delayed jobs falling due.
            let nap = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn ack(&self, delivery: &Delivery) -> StoreResult<()> {
        self.settle(delivery);
        Ok(())
    }

    async fn retry_later(
        &self,
        delivery: &Delivery,
        job: &Job,
        delay: Duration,
    ) -> StoreResult<()> {
        self.settle(delivery);
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner
            .delayed
            .insert((Instant::now() + delay, id), job.clone());
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, job: &Job) -> StoreResult<()> {
        self.settle(delivery);
        let mut inner = self.lock();
        inner.dead.push_back(DeadLetter {
            job: job.clone(),
            failed_at_ms: now_ms(),
        });
        while inner.dead.len() > DEAD_CAP {
            inner.dead.pop_front();
        }
        Ok(())
    }

    async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        Ok(self.lock().dead.iter().rev().take(limit).cloned().collect())
    }

    async fn requeue_dead(&self, job_id: &str) -> StoreResult<bool> {
        {
            let mut inner = self.lock();
            let Some(pos) = inner.dead.iter().position(|d| d.job.id == job_id) else {
                return Ok(false);
            };
            let letter = inner.dead.remove(pos).expect("position is in range");
            inner.push_ready(letter.job.replayed());
        }
        self.notify.notify_one();
        Ok(true)
    }

    async fn queue_depth(&self) -> StoreResult<QueueDepth> {
        let inner = self.lock();
        Ok(QueueDepth {
            ready: inner.ready.len() as u64,
            delayed: inner.delayed.len() as u64,
            in_flight: inner.in_flight.len() as u64,
            dead: inner.dead.len() as u64,
        })
    }

    async fn lease_acquire(&self, name: &str, token: &str, ttl: Duration) -> StoreResult<bool> {
        Ok(self
            .lock()
            .set_nx(&format!("lease:{name}"), token.into(), Some(ttl)))
    }

    async fn lease_renew(&self, name: &str, token: &str, ttl: Duration) -> StoreResult<bool> {
        let key = format!("lease:{name}");
        let mut inner = self.lock();
        if inner.get(&key).as_deref() == Some(token) {
            inner.set(&key, token.into(), Some(ttl));
            return Ok(true);
        }
        Ok(false)
    }

    async fn lease_release(&self, name: &str, token: &str) -> StoreResult<bool> {
        let key = format!("lease:{name}");
        let mut inner = self.lock();
        if inner.get(&key).as_deref() == Some(token) {
            inner.values.remove(&key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn map_put(&self, ns: &str, left: &str, right: &str) -> StoreResult<()> {
        let mut inner = self.lock();
        inner.set(&map_key(ns, Side::Left, left), right.into(), None);
        inner.set(&map_key(ns, Side::Right, right), left.into(), None);
        Ok(())
    }

    async fn map_get(&self, ns: &str, from: Side, id: &str) -> StoreResult<Option<String>> {
        Ok(self.lock().get(&map_key(ns, from, id)))
    }

    async fn map_delete(&self, ns: &str, from: Side, id: &str) -> StoreResult<()> {
        let mut inner = self.lock();
        if let Some(other) = inner.get(&map_key(ns, from, id)) {
            let other_side = match from {
                Side::Left => Side::Right,
                Side::Right => Side::Left,
            };
            inner.values.remove(&map_key(ns, other_side, &other));
        }
        inner.values.remove(&map_key(ns, from, id));
        Ok(())
    }

    async fn audit_append(&self, entry: &AuditEntry) -> StoreResult<()> {
        let mut inner = self.lock();
        inner.audit.push_back(entry.clone());
        while inner.audit.len() > self.audit_cap {
            inner.audit.pop_front();
        }
        Ok(())
    }

    async fn audit_recent(&self, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        Ok(self
            .lock()
            .audit
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn feed_put(&self, feed: &str, id: &str, value: &str, cap: usize) -> StoreResult<bool> {
        let mut inner = self.lock();
        let f = inner.feeds.entry(feed.to_string()).or_default();
        if f.items.contains_key(id) {
            return Ok(false);
        }
        f.seq += 1;
        let seq = f.seq;
        f.order.insert(seq, id.to_string());
        f.items.insert(id.to_string(), (seq, value.to_string()));
        while f.order.len() > cap.max(1) {
            if let Some((_, old)) = f.order.pop_first() {
                f.items.remove(&old);
            }
        }
        Ok(true)
    }

    async fn feed_recent(&self, feed: &str, limit: usize) -> StoreResult<Vec<String>> {
        let inner = self.lock();
        let Some(f) = inner.feeds.get(feed) else {
            return Ok(Vec::new());
        };
        Ok(f.order
            .values()
            .rev()
            .take(limit)
            .filter_map(|id| f.items.get(id).map(|(_, v)| v.clone()))
            .collect())
    }

    async fn kv_get(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self.lock().get(&format!("kv:{key}")))
    }

    async fn kv_put(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<()> {
        self.lock().set(&format!("kv:{key}"), value.into(), ttl);
        Ok(())
    }

    async fn kv_replace(&self, key: &str, value: &str) -> StoreResult<bool> {
        let k = format!("kv:{key}");
        let mut inner = self.lock();
        if inner.get(&k).is_none() {
            return Ok(false);
        }
        inner.set(&k, value.into(), None);
        Ok(true)
    }

    async fn kv_delete(&self, key: &str) -> StoreResult<bool> {
        let k = format!("kv:{key}");
        let mut inner = self.lock();
        let existed = inner.get(&k).is_some();
        inner.values.remove(&k);
        Ok(existed)
    }

    async fn kv_keys(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let full = format!("kv:{prefix}");
        let now = Instant::now();
        let inner = self.lock();
        let mut keys: Vec<String> = inner
            .values
            .iter()
            .filter(|(k, (_, exp))| k.starts_with(&full) && exp.is_none_or(|e| e > now))
            .map(|(k, _)| k["kv:".len()..].to_string())
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn set_add(&self, name: &str, member: &str) -> StoreResult<()> {
        self.lock()
            .sets
            .entry(name.to_string())
            .or_default()
            .insert(member.to_string());
        Ok(())
    }

    async fn set_remove(&self, name: &str, member: &str) -> StoreResult<()> {
        if let Some(set) = self.lock().sets.get_mut(name) {
            set.remove(member);
        }
        Ok(())
    }

    async fn set_members(&self, name: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .lock()
            .sets
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn incr(&self, key: &str, by: u64, ttl: Option<Duration>) -> StoreResult<u64> {
        let k = format!("ctr:{key}");
        let mut inner = self.lock();
        let now = Instant::now();
        let (current, expiry) = match inner.values.get(&k) {
            Some((v, exp)) if exp.is_none_or(|e| e > now) => (v.parse::<u64>().unwrap_or(0), *exp),
            _ => (0, ttl.map(|t| now + t)),
        };
        let next = current.saturating_add(by);
        inner.values.insert(k, (next.to_string(), expiry));
        Ok(next)
    }
}
