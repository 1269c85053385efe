//! Redis store: Streams with a consumer group for the queue (XADD / XREADGROUP / XACK,
//! XAUTOCLAIM for jobs of crashed instances), a sorted set for delayed retries, Lua
//! scripts wherever two writes must happen as one. Connections reconnect by themselves.
//! Runs on a single Redis or a Redis Cluster ([`keys`] says how keys are laid out there).

use std::time::Duration;

use ::redis::{
    AsyncCommands, Script,
    streams::{StreamId, StreamReadOptions, StreamReadReply},
};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use tokio::sync::{Notify, OnceCell};

use super::*;

mod conn;
pub mod keys;

pub(crate) use conn::Conn;
use conn::Target;
use keys::Layout;

const GROUP: &str = "workers";
const DEAD_CAP: usize = 10_000;
/// How long one short command may wait for its answer: a hung Redis (stopped, swapping,
/// behind a black-holing firewall) must turn into a prompt 503, not a request that
/// waits for the client's own timeout.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(900);
/// Commands of backups and restores, which move whole values.
const BULK_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a down Redis is probed while it is down.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Most `XAUTOCLAIM` rounds one fetch makes while it finds only unreadable entries.
const RECLAIM_ROUNDS: usize = 16;

/// The shared connection and what is known of its health. While Redis is down every
/// command fails at once with the cause, and one background task probes until it is back:
/// requests never queue up behind a dead connection.
struct Link {
    target: Target,
    conn: OnceLock<Conn>,
    down: AtomicBool,
    cause: std::sync::Mutex<String>,
    wake: Notify,
}

impl Link {
    fn mark_down(&self, cause: String) {
        *self.cause.lock().unwrap_or_else(|p| p.into_inner()) = cause;
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(cause = %self.cause(), "redis is down; commands fail fast until it answers again");
            self.wake.notify_one();
        }
    }

    fn cause(&self) -> String {
        self.cause.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn down_error(&self) -> StoreError {
        StoreError::Unavailable(format!("redis: {}", self.cause()))
    }

    /// Turns a command error into a store error, and marks the link down when the error
    /// says the server, not the command, is the problem.
    fn fail(&self, e: ::redis::RedisError) -> StoreError {
        let cause = describe(&e);
        if server_level(&e) {
            self.mark_down(cause.clone());
        }
        StoreError::Unavailable(format!("redis: {cause}"))
    }
}

/// Keeps the link up: connects the first time, then probes while it is marked down.
/// Ends when the store is dropped.
async fn maintain(link: Weak<Link>) {
    loop {
        let Some(l) = link.upgrade() else { return };
        match l.conn.get() {
            None => match l.target.connect(COMMAND_TIMEOUT).await {
                Ok(m) => {
                    let _ = l.conn.set(m);
                    l.down.store(false, Ordering::SeqCst);
                    tracing::info!("redis connected");
                }
                Err(e) => l.mark_down(describe(&e)),
            },
            Some(m) if l.down.load(Ordering::SeqCst) => {
                let mut m = m.clone();
                let pong: ::redis::RedisResult<String> =
                    ::redis::cmd("PING").query_async(&mut m).await;
                match pong {
                    Ok(_) => {
                        l.down.store(false, Ordering::SeqCst);
                        tracing::info!("redis answers again");
                    }
                    Err(e) => *l.cause.lock().unwrap_or_else(|p| p.into_inner()) = describe(&e),
                }
            }
            Some(_) => {
                // Holds the link for at most a second, so the task ends soon after the
                // store; `notify_one` keeps a wake-up that comes before this wait.
                let _ = tokio::time::timeout(Duration::from_secs(1), l.wake.notified()).await;
                continue;
            }
        }
        drop(l);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// A short, secret-free account of why Redis did not answer, for logs and `/readyz`.
fn describe(e: &::redis::RedisError) -> String {
    use ::redis::ErrorKind;
    if e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH") | Some("WRONGPASS"))
    {
        "authentication failed (check the password in the store URL)".into()
    } else if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_timeout() {
        "no answer in time".into()
    } else if e.kind() == ErrorKind::BusyLoadingError {
        "still loading its data set".into()
    } else if matches!(e.kind(), ErrorKind::Moved | ErrorKind::Ask) {
        "the server is a Redis Cluster node: set store_cluster = true".into()
    } else if e.to_string().contains("cluster support disabled") {
        "the server is not in cluster mode: set store_cluster = false".into()
    } else {
        e.to_string()
    }
}

/// Whether an error is about the server or the connection rather than one command.
fn server_level(e: &::redis::RedisError) -> bool {
    use ::redis::ErrorKind;
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::AuthenticationFailed
                | ErrorKind::BusyLoadingError
                | ErrorKind::MasterDown
                | ErrorKind::ClusterDown
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Moved
                | ErrorKind::Ask
        )
        || matches!(e.code(), Some("NOAUTH") | Some("WRONGPASS"))
}

/// Store on a Redis server (or a managed Redis).
pub struct RedisStore {
    link: Arc<Link>,
    prefix: String,
    /// Key names on this target (today's names on a single Redis, hash-tagged on a cluster).
    layout: Layout,
    audit_cap: u64,
    /// Blocking reads get their own connection so they never hold up other commands.
    blocking: OnceCell<Conn>,
    /// When delayed jobs were last promoted and stale ones reclaimed: that housekeeping
    /// runs on a timer, not on every fetch, to keep fetches to one round trip.
    housekeeping: std::sync::Mutex<Option<std::time::Instant>>,
    /// Where the next `XAUTOCLAIM` continues: each call scans on from where the last
    /// stopped, so entries at the head of the pending list cannot hide those behind them.
    claim_cursor: std::sync::Mutex<String>,
}

/// A queue entry this version cannot turn into a [`Job`].
struct Unreadable {
    receipt: String,
    raw: Option<String>,
    reason: String,
}

/// The time part (Unix ms) of a stream entry id `ms-seq`.
fn stream_id_ms(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

impl RedisStore {
    /// Prepares a store for `url` and tries to connect once; when Redis is down the
    /// service still starts, commands fail at once with the cause, and a background task
    /// keeps trying.
    pub async fn connect(url: &str, prefix: &str, audit_cap: u64) -> StoreResult<Self> {
        let target = Target::single(url).map_err(|e| StoreError::Unavailable(describe(&e)))?;
        Self::open(target, prefix, audit_cap).await
    }

    /// Like [`RedisStore::connect`], for a Redis Cluster reached through any of `nodes`
    /// (`redis://` or `rediss://` URLs). The prefix must hold no `{` or `}`: those would
    /// change the hash tags that keep each unit's keys in one slot.
    pub async fn connect_cluster(
        nodes: &[String],
        prefix: &str,
        audit_cap: u64,
    ) -> StoreResult<Self> {
        if prefix.contains(['{', '}']) {
            return Err(StoreError::Unavailable(
                "on a Redis Cluster the key prefix must not contain `{` or `}`".into(),
            ));
        }
        let target = Target::cluster(nodes).map_err(|e| StoreError::Unavailable(describe(&e)))?;
        Self::open(target, prefix, audit_cap).await
    }

    async fn open(target: Target, prefix: &str, audit_cap: u64) -> StoreResult<Self> {
        let layout = target.layout();
        let link = Arc::new(Link {
            target,
            conn: OnceLock::new(),
            down: AtomicBool::new(true),
            cause: std::sync::Mutex::new("not connected yet".into()),
            wake: Notify::new(),
        });
        match link.target.connect(COMMAND_TIMEOUT).await {
            Ok(m) => {
                let _ = link.conn.set(m);
                link.down.store(false, Ordering::SeqCst);
            }
            Err(e) => {
                let cause = describe(&e);
                tracing::warn!(cause = %cause, "redis not reachable yet; will keep trying");
                *link.cause.lock().unwrap_or_else(|p| p.into_inner()) = cause;
            }
        }
        tokio::spawn(maintain(Arc::downgrade(&link)));
        Ok(Self {
            link,
            prefix: prefix.to_string(),
            layout,
            audit_cap: audit_cap.max(1),
            blocking: OnceCell::new(),
            housekeeping: std::sync::Mutex::new(None),
            claim_cursor: std::sync::Mutex::new("0-0".into()),
        })
    }

    async fn conn(&self) -> StoreResult<Conn> {
        match self.link.conn.get() {
            Some(c) if !self.link.down.load(Ordering::SeqCst) => Ok(c.clone()),
            _ => Err(self.link.down_error()),
        }
    }

    async fn blocking_conn(&self) -> StoreResult<Conn> {
        if self.link.down.load(Ordering::SeqCst) {
            return Err(self.link.down_error());
        }
        // Blocking reads wait at most one second (see fetch), plus the usual margin.
        self.blocking
            .get_or_try_init(|| {
                self.link
                    .target
                    .connect(COMMAND_TIMEOUT + Duration::from_secs(1))
            })
            .await
            .cloned()
            .map_err(|e| self.fail(e))
    }

    /// See [`Link::fail`].
    fn fail(&self, e: ::redis::RedisError) -> StoreError {
        self.link.fail(e)
    }

    /// The Redis key of a logical name (see [`keys`]).
    fn key(&self, logical: &str) -> String {
        format!("{}{}", self.prefix, self.layout.physical(logical))
    }

    /// The prefix every key of this store starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How this store names its keys.
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// A connection of its own for commands outside the [`Store`] trait (backups), with
    /// room for commands that move whole values.
    pub(crate) async fn connection(&self) -> StoreResult<Conn> {
        self.link
            .target
            .connect(BULK_TIMEOUT)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {}", describe(&e))))
    }

    fn queue(&self) -> String {
        self.key("queue")
    }

    fn delayed(&self) -> String {
        self.key("queue:delayed")
    }

    fn dead(&self) -> String {
        self.key("queue:dead")
    }

    fn map_key(&self, ns: &str, side: Side, id: &str) -> String {
        match side {
            Side::Left => self.key(&format!("map:{ns}:l:{id}")),
            Side::Right => self.key(&format!("map:{ns}:r:{id}")),
        }
    }

    async fn ensure_group(&self, conn: &mut Conn) -> StoreResult<()> {
        let res: ::redis::RedisResult<()> =
            conn.xgroup_create_mkstream(self.queue(), GROUP, "0").await;
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn housekeeping_due(&self, visibility: Duration) -> bool {
        let every = (visibility / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut last = self.housekeeping.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(t) if t.elapsed() < every => false,
            _ => {
                *last = Some(std::time::Instant::now());
                true
            }
        }
    }

    /// Splits stream entries into jobs and entries that cannot be read back.
    fn deliveries(ids: Vec<StreamId>) -> (Vec<Delivery>, Vec<Unreadable>) {
        let mut jobs = Vec::with_capacity(ids.len());
        let mut unreadable = Vec::new();
        for sid in ids {
            let raw: Option<String> = sid.get("job");
            match raw.as_deref().map(Job::from_json) {
                Some(Ok(job)) => jobs.push(Delivery {
                    receipt: sid.id,
                    job,
                }),
                Some(Err(e)) => unreadable.push(Unreadable {
                    receipt: sid.id,
                    raw,
                    reason: e.to_string(),
                }),
                None => unreadable.push(Unreadable {
                    receipt: sid.id,
                    raw: None,
                    reason: "queue entry has no `job` field".into(),
                }),
            }
        }
        (jobs, unreadable)
    }

    /// Moves entries that can never run to the dead letters (raw text and reason kept)
    /// instead of leaving them pending, where they would be claimed again for ever.
    async fn bury(&self, conn: &mut Conn, entries: Vec<Unreadable>) -> StoreResult<()> {
        for entry in entries {
            tracing::error!(entry = %entry.receipt, reason = %entry.reason, "unreadable queue entry dead-lettered");
            let job = Job::unreadable(&entry.receipt, entry.raw, entry.reason);
            let delivery = Delivery {
                receipt: entry.receipt,
                job,
            };
            self.dead_letter_with(conn, &delivery, &delivery.job)
                .await?;
        }
        Ok(())
    }

    /// Hands over readable entries and dead-letters the others.
    async fn sort_out(&self, conn: &mut Conn, ids: Vec<StreamId>) -> StoreResult<Vec<Delivery>> {
        let (jobs, unreadable) = Self::deliveries(ids);
        if !unreadable.is_empty() {
            self.bury(conn, unreadable).await?;
        }
        Ok(jobs)
    }

    async fn promote_due(&self, conn: &mut Conn) -> StoreResult<()> {
        static PROMOTE: &str = r"
            local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
            for _, m in ipairs(due) do
                redis.call('XADD', KEYS[2], '*', 'job', m)
                redis.call('ZREM', KEYS[1], m)
            end
            return #due";
        let _: i64 = Script::new(PROMOTE)
            .key(self.delayed())
            .key(self.queue())
            .arg(now_ms())
            .invoke_async(conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn reclaim(
        &self,
        conn: &mut Conn,
        consumer: &str,
        max: usize,
        visibility: Duration,
    ) -> ::redis::RedisResult<(Vec<StreamId>, bool)> {
        let start = self
            .claim_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let reply: ::redis::streams::StreamAutoClaimReply = ::redis::cmd("XAUTOCLAIM")
            .arg(self.queue())
            .arg(GROUP)
            .arg(consumer)
            .arg(visibility.as_millis() as u64)
            .arg(&start)
            .arg("COUNT")
            .arg(max)
            .query_async(conn)
            .await?;
        // "0-0" means the scan reached the end; the next one starts over.
        let more = reply.next_stream_id != "0-0";
        *self.claim_cursor.lock().unwrap_or_else(|p| p.into_inner()) = reply.next_stream_id;
        Ok((reply.claimed, more))
    }

    async fn dead_letter_with(
        &self,
        c: &mut Conn,
        delivery: &Delivery,
        job: &Job,
    ) -> StoreResult<()> {
        let q = self.queue();
        let letter = DeadLetter {
            job: job.clone(),
            failed_at_ms: now_ms(),
        };
        let json =
            serde_json::to_string(&letter).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: () = ::redis::pipe()
            .atomic()
            .xadd_maxlen(
                self.dead(),
                ::redis::streams::StreamMaxlen::Approx(DEAD_CAP),
                "*",
                &[("letter", json)],
            )
            .ignore()
            .xack(&q, GROUP, &[&delivery.receipt])
            .ignore()
            .xdel(&q, &[&delivery.receipt])
            .ignore()
            .query_async(c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let _: String = ::redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn idempotency_reserve(
        &self,
        key: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> StoreResult<Reservation> {
        let mut c = self.conn().await?;
        let k = self.key(&format!("idem:{key}"));
        let record = IdempotencyRecord {
            fingerprint: fingerprint.to_string(),
            response: None,
        };
        let json =
            serde_json::to_string(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The existing record can expire between SET and GET; then the key is free again.
        for _ in 0..3 {
            let set: Option<String> = ::redis::cmd("SET")
                .arg(&k)
                .arg(&json)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .query_async(&mut c)
                .await
                .map_err(|e| self.fail(e))?;
            if set.is_some() {
                return Ok(Reservation::Reserved);
            }
            let existing: Option<String> = c.get(&k).await.map_err(|e| self.fail(e))?;
            if let Some(existing) = existing {
                let record = serde_json::from_str(&existing)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                return Ok(Reservation::Existing(record));
            }
        }
        Err(StoreError::Unavailable(
            "idempotency key kept flapping".into(),
        ))
    }

    async fn idempotency_complete(
        &self,
        key: &str,
        record: &IdempotencyRecord,
        ttl: Duration,
    ) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: () = c
            .pset_ex(
                self.key(&format!("idem:{key}")),
                json,
                ttl.as_millis() as u64,
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn idempotency_release(&self, key: &str) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let _: i64 = c
            .del(self.key(&format!("idem:{key}")))
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn seen(&self, source: &str, event_id: &str, ttl: Duration) -> StoreResult<bool> {
        let mut c = self.conn().await?;
        let set: Option<String> = ::redis::cmd("SET")
            .arg(self.key(&format!("seen:{source}:{event_id}")))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(set.is_some())
    }

    async fn enqueue(&self, job: &Job, dedupe: Option<Dedupe<'_>>) -> StoreResult<EnqueueOutcome> {
        let mut c = self.conn().await?;
        let json = job.to_json();
        match dedupe {
            None => {
                let _: String = c
                    .xadd(self.queue(), "*", &[("job", json)])
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(EnqueueOutcome::Enqueued)
            }
            Some(d) => {
                // Mark and enqueue in one step: a mark without its job would lose the event.
                // (On a cluster the marks share the queue's hash slot for this; see keys.)
                static ENQUEUE_ONCE: &str = r"
                    if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
                        redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
                        return 1
                    end
                    return 0";
                let added: i64 = Script::new(ENQUEUE_ONCE)
                    .key(self.key(&format!("seen:{}:{}", d.source, d.event_id)))
                    .key(self.queue())
                    .arg(d.ttl.as_millis() as u64)
                    .arg(json)
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(if added == 1 {
                    EnqueueOutcome::Enqueued
                } else {
                    EnqueueOutcome::Duplicate
                })
            }
        }
    }

    async fn fetch(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> StoreResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let mut out = Vec::new();
        if self.housekeeping_due(visibility) {
            self.promote_due(&mut c).await?;
            // Entries that turn out unreadable are dead-lettered, not handed out; claim
            // on (a bounded number of rounds) so that a run of them does not delay the
            // jobs behind it by a housekeeping tick per batch.
            for _ in 0..RECLAIM_ROUNDS {
                match self.reclaim(&mut c, consumer, max, visibility).await {
                    Ok((ids, more)) => {
                        let claimed = ids.len();
                        out = self.sort_out(&mut c, ids).await?;
                        if !out.is_empty() || claimed == 0 || !more {
                            break;
                        }
                    }
                    Err(e) if e.code() == Some("NOGROUP") => {
                        // A Redis that lost its data (restart without persistence) lost the group too.
                        self.ensure_group(&mut c).await?;
                        break;
                    }
                    Err(e) => return Err(self.fail(e)),
                }
            }
        }
        if out.len() >= max {
            return Ok(out);
        }
        let mut opts = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(max - out.len());
        let wait = wait.min(Duration::from_secs(1));
        if !wait.is_zero() && out.is_empty() {
            opts = opts.block(wait.as_millis() as usize);
        }
        let mut b = self.blocking_conn().await?;
        let reply: ::redis::RedisResult<Option<StreamReadReply>> =
            b.xread_options(&[self.queue()], &[">"], &opts).await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group(&mut c).await?;
                None
            }
            Err(e) => return Err(self.fail(e)),
        };
        if let Some(reply) = reply {
            for key in reply.keys {
                out.extend(self.sort_out(&mut c, key.ids).await?);
            }
        }
        Ok(out)
    }

    async fn ack(&self, delivery: &Delivery) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let q = self.queue();
        let _: () = ::redis::pipe()
            .atomic()
            .xack(&q, GROUP, &[&delivery.receipt])
            .ignore()
            .xdel(&q, &[&delivery.receipt])
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn retry_later(
        &self,
        delivery: &Delivery,
        job: &Job,
        delay: Duration,
    ) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let q = self.queue();
        let due = now_ms() + delay.as_millis() as i64;
        let _: () = ::redis::pipe()
            .atomic()
            .zadd(self.delayed(), job.to_json(), due)
            .ignore()
            .xack(&q, GROUP, &[&delivery.receipt])
            .ignore()
            .xdel(&q, &[&delivery.receipt])
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, job: &Job) -> StoreResult<()> {
        let mut c = self.conn().await?;
        self.dead_letter_with(&mut c, delivery, job).await
    }

    async fn requeue_dead(&self, job_id: &str) -> StoreResult<bool> {
        let mut c = self.conn().await?;
        // The dead stream is capped (DEAD_CAP), so one bounded scan finds the letter.
        let reply: ::redis::streams::StreamRangeReply = c
            .xrevrange_count(self.dead(), "+", "-", DEAD_CAP)
            .await
            .map_err(|e| self.fail(e))?;
        for sid in reply.ids {
            let raw: String = sid.get("letter").unwrap_or_default();
            let Ok(letter) = serde_json::from_str::<DeadLetter>(&raw) else {
                continue;
            };
            if letter.job.id != job_id {
                continue;
            }
            // Delete and queue as one step; only the caller whose XDEL removed the entry
            // queues the job, so concurrent replays queue it once.
            static REQUEUE: &str = r"
                if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
                    redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
                    return 1
                end
                return 0";
            let moved: i64 = Script::new(REQUEUE)
                .key(self.dead())
                .key(self.queue())
                .arg(&sid.id)
                .arg(letter.job.replayed().to_json())
                .invoke_async(&mut c)
                .await
                .map_err(|e| self.fail(e))?;
            return Ok(moved == 1);
        }
        Ok(false)
    }

    async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        let mut c = self.conn().await?;
        let reply: ::redis::streams::StreamRangeReply = c
            .xrevrange_count(self.dead(), "+", "-", limit)
            .await
            .map_err(|e| self.fail(e))?;
        reply
            .ids
            .into_iter()
            .map(|sid| {
                let raw: String = sid.get("letter").unwrap_or_default();
                // A letter this version cannot read (written by a newer one) is still listed.
                Ok(serde_json::from_str(&raw).unwrap_or_else(|e| DeadLetter {
                    failed_at_ms: stream_id_ms(&sid.id),
                    job: Job::unreadable(&sid.id, Some(raw), format!("dead letter: {e}")),
                }))
            })
            .collect()
    }

    async fn queue_depth(&self) -> StoreResult<QueueDepth> {
        let mut c = self.conn().await?;
        let (len, delayed, dead): (u64, u64, u64) = ::redis::pipe()
            .xlen(self.queue())
            .zcard(self.delayed())
            .xlen(self.dead())
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        let pending: ::redis::RedisResult<::redis::streams::StreamPendingReply> =
            c.xpending(self.queue(), GROUP).await;
        let in_flight = match pending {
            Ok(p) => p.count() as u64,
            Err(e) if e.code() == Some("NOGROUP") => 0,
            Err(e) => return Err(self.fail(e)),
        };
        Ok(QueueDepth {
            ready: len.saturating_sub(in_flight),
            delayed,
            in_flight,
            dead,
        })
    }

    async fn lease_acquire(&self, name: &str, token: &str, ttl: Duration) -> StoreResult<bool> {
        let mut c = self.conn().await?;
        let set: Option<String> = ::redis::cmd("SET")
            .arg(self.key(&format!("lease:{name}")))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(set.is_some())
    }

    async fn lease_renew(&self, name: &str, token: &str, ttl: Duration) -> StoreResult<bool> {
        static RENEW: &str = r"
            if redis.call('GET', KEYS[1]) == ARGV[1] then
                return redis.call('PEXPIRE', KEYS[1], ARGV[2])
            end
            return 0";
        let mut c = self.conn().await?;
        let ok: i64 = Script::new(RENEW)
            .key(self.key(&format!("lease:{name}")))
            .arg(token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(ok == 1)
    }

    async fn lease_release(&self, name: &str, token: &str) -> StoreResult<bool> {
        static RELEASE: &str = r"
            if redis.call('GET', KEYS[1]) == ARGV[1] then
                return redis.call('DEL', KEYS[1])
            end
            return 0";
        let mut c = self.conn().await?;
        let ok: i64 = Script::new(RELEASE)
            .key(self.key(&format!("lease:{name}")))
            .arg(token)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(ok == 1)
    }

    async fn map_put(&self, ns: &str, left: &str, right: &str) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let _: () = ::redis::pipe()
            .atomic()
            .set(self.map_key(ns, Side::Left, left), right)
            .ignore()
            .set(self.map_key(ns, Side::Right, right), left)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn map_get(&self, ns: &str, from: Side, id: &str) -> StoreResult<Option<String>> {
        let mut c = self.conn().await?;
        c.get(self.map_key(ns, from, id))
            .await
            .map_err(|e| self.fail(e))
    }

    async fn map_delete(&self, ns: &str, from: Side, id: &str) -> StoreResult<()> {
        // The other key is built in the script from the value; on a cluster it shares
        // the first key's slot (one tag per namespace, see keys), so it may be touched.
        static DELETE_PAIR: &str = r"
            local other = redis.call('GET', KEYS[1])
            redis.call('DEL', KEYS[1])
            if other then redis.call('DEL', ARGV[1] .. other) end
            return 1";
        let other_prefix = match from {
            Side::Left => self.key(&format!("map:{ns}:r:")),
            Side::Right => self.key(&format!("map:{ns}:l:")),
        };
        let mut c = self.conn().await?;
        let _: i64 = Script::new(DELETE_PAIR)
            .key(self.map_key(ns, from, id))
            .arg(other_prefix)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn audit_append(&self, entry: &AuditEntry) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let json = serde_json::to_string(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: String = c
            .xadd_maxlen(
                self.key("audit"),
                ::redis::streams::StreamMaxlen::Approx(self.audit_cap as usize),
                "*",
                &[("entry", json)],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn audit_recent(&self, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let mut c = self.conn().await?;
        let reply: ::redis::streams::StreamRangeReply = c
            .xrevrange_count(self.key("audit"), "+", "-", limit)
            .await
            .map_err(|e| self.fail(e))?;
        reply
            .ids
            .into_iter()
            .map(|sid| {
                let raw: String = sid.get("entry").unwrap_or_default();
                serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    async fn feed_put(&self, feed: &str, id: &str, value: &str, cap: usize) -> StoreResult<bool> {
        // Hash id → value, sorted set id by insertion sequence; one script so that a
        // concurrent publish of the same id cannot insert it twice.
        const SCRIPT: &str = r"
            if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
            local seq = redis.call('INCR', KEYS[3])
            redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
            redis.call('ZADD', KEYS[2], seq, ARGV[1])
            local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
            if over > 0 then
                local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
                for _, o in ipairs(old) do redis.call('HDEL', KEYS[1], o) end
                redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
            end
            return 1";
        let mut c = self.conn().await?;
        let added: i64 = Script::new(SCRIPT)
            .key(self.key(&format!("feed:{feed}:items")))
            .key(self.key(&format!("feed:{feed}:order")))
            .key(self.key(&format!("feed:{feed}:seq")))
            .arg(id)
            .arg(value)
            .arg(cap.max(1))
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(added == 1)
    }

    async fn feed_recent(&self, feed: &str, limit: usize) -> StoreResult<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let ids: Vec<String> = c
            .zrevrange(
                self.key(&format!("feed:{feed}:order")),
                0,
                limit as isize - 1,
            )
            .await
            .map_err(|e| self.fail(e))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = ::redis::cmd("HMGET")
            .arg(self.key(&format!("feed:{feed}:items")))
            .arg(&ids)
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(values.into_iter().flatten().collect())
    }

    async fn kv_get(&self, key: &str) -> StoreResult<Option<String>> {
        let mut c = self.conn().await?;
        c.get(self.key(&format!("kv:{key}")))
            .await
            .map_err(|e| self.fail(e))
    }

    async fn kv_put(&self, key: &str, value: &str, ttl: Option<Duration>) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let k = self.key(&format!("kv:{key}"));
        let _: () = match ttl {
            Some(t) => c.pset_ex(k, value, t.as_millis() as u64).await,
            None => c.set(k, value).await,
        }
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn kv_replace(&self, key: &str, value: &str) -> StoreResult<bool> {
        let mut c = self.conn().await?;
        // SET … XX: one atomic step, so a DEL between a read and this write wins.
        let done: Option<String> = ::redis::cmd("SET")
            .arg(self.key(&format!("kv:{key}")))
            .arg(value)
            .arg("XX")
            .query_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(done.is_some())
    }

    async fn kv_delete(&self, key: &str) -> StoreResult<bool> {
        let mut c = self.conn().await?;
        let n: i64 = c
            .del(self.key(&format!("kv:{key}")))
            .await
            .map_err(|e| self.fail(e))?;
        Ok(n > 0)
    }

    async fn kv_keys(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let mut c = self.conn().await?;
        let full = self.key(&format!("kv:{prefix}"));
        let pattern = format!("{}*", glob_escape(&full));
        let strip = self.key("kv:").len();
        let mut keys: Vec<String> = c
            .scan(&pattern)
            .await
            .map_err(|e| self.fail(e))?
            .into_iter()
            .map(|k| k[strip..].to_string())
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn set_add(&self, name: &str, member: &str) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let _: i64 = c
            .sadd(self.key(&format!("set:{name}")), member)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn set_remove(&self, name: &str, member: &str) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let _: i64 = c
            .srem(self.key(&format!("set:{name}")), member)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn set_members(&self, name: &str) -> StoreResult<Vec<String>> {
        let mut c = self.conn().await?;
        let mut members: Vec<String> = c
            .smembers(self.key(&format!("set:{name}")))
            .await
            .map_err(|e| self.fail(e))?;
        members.sort();
        Ok(members)
    }

    async fn incr(&self, key: &str, by: u64, ttl: Option<Duration>) -> StoreResult<u64> {
        // INCRBY and the first PEXPIRE in one script, so a crash cannot leave an
        // immortal counter behind.
        static INCR: &str = r"
            local v = redis.call('INCRBY', KEYS[1], ARGV[1])
            if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) < 0 then
                redis.call('PEXPIRE', KEYS[1], ARGV[2])
            end
            return v";
        let mut c = self.conn().await?;
        let v: i64 = ::redis::Script::new(INCR)
            .key(self.key(&format!("ctr:{key}")))
            .arg(by)
            .arg(ttl.map_or(0, |t| t.as_millis() as u64))
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(v.max(0) as u64)
    }
}

pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
