//! The behaviour every [`Store`] must have. Each function is one clause of the contract;
//! the memory store runs them as unit tests, the Redis store in `tests/integration/store_contract.rs`
//! against a real `redis-server`. They panic (assert) on a violation.

#![allow(clippy::missing_panics_doc)]

use std::time::Duration;

use serde_json::json;

use super::*;

const VIS: Duration = Duration::from_secs(30);

/// Runs every clause.
pub async fn all(store: &dyn Store) {
    ping_answers(store).await;
    idempotency_reserve_is_first_writer_wins(store).await;
    idempotency_record_replays_and_expires(store).await;
    seen_is_first_writer_wins_per_source(store).await;
    enqueue_with_dedupe_queues_once(store).await;
    fetched_job_is_not_handed_out_twice(store).await;
    unacknowledged_job_is_taken_over_after_visibility_timeout(store).await;
    retry_later_redelivers_after_the_delay(store).await;
    dead_letter_keeps_job_attempts_and_error(store).await;
    a_dead_letter_replays_once_with_its_attempts_reset(store).await;
    lease_is_exclusive_and_released_only_by_holder(store).await;
    mapping_works_both_ways(store).await;
    audit_is_newest_first_and_capped(store).await;
    kv_roundtrip_and_prefix_listing(store).await;
    sets_add_remove_and_list_sorted(store).await;
    counters_add_atomically_and_expire(store).await;
    feed_is_newest_first_capped_and_idempotent(store).await;
}

fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn drain(store: &dyn Store) {
    // Leftovers of earlier clauses must not confuse later ones.
    loop {
        let got = store
            .fetch("drain", 100, Duration::ZERO, Duration::from_millis(1))
            .await
            .expect("fetch");
        if got.is_empty() {
            break;
        }
        for d in got {
            store.ack(&d).await.expect("ack");
        }
    }
}

/// `ping` succeeds on a healthy backend.
pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.expect("ping");
}

/// Only the first reservation of a key wins; later ones see the in-flight record.
pub async fn idempotency_reserve_is_first_writer_wins(store: &dyn Store) {
    let key = uid();
    let ttl = Duration::from_secs(60);
    let first = store
        .idempotency_reserve(&key, "fp1", ttl)
        .await
        .expect("reserve");
    assert_eq!(first, Reservation::Reserved);
    let second = store
        .idempotency_reserve(&key, "fp2", ttl)
        .await
        .expect("reserve");
    assert_eq!(
        second,
        Reservation::Existing(IdempotencyRecord {
            fingerprint: "fp1".into(),
            response: None
        }),
        "an unfinished key must be distinguishable and keep the first fingerprint"
    );
    store.idempotency_release(&key).await.expect("release");
    let third = store
        .idempotency_reserve(&key, "fp3", ttl)
        .await
        .expect("reserve");
    assert_eq!(third, Reservation::Reserved, "a released key is free again");
}

/// A completed key returns its stored response until it expires.
pub async fn idempotency_record_replays_and_expires(store: &dyn Store) {
    let key = uid();
    store
        .idempotency_reserve(&key, "fp", Duration::from_secs(60))
        .await
        .expect("reserve");
    let record = IdempotencyRecord {
        fingerprint: "fp".into(),
        response: Some(StoredResponse {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: "{\"ok\":true}".into(),
        }),
    };
    store
        .idempotency_complete(&key, &record, Duration::from_millis(300))
        .await
        .expect("complete");
    let again = store
        .idempotency_reserve(&key, "fp", Duration::from_secs(60))
        .await
        .expect("reserve");
    assert_eq!(again, Reservation::Existing(record));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let later = store
        .idempotency_reserve(&key, "fp", Duration::from_secs(60))
        .await
        .expect("reserve");
    assert_eq!(
        later,
        Reservation::Reserved,
        "records expire with their ttl"
    );
}

/// `seen` is true only for the first mark of an event per source, under concurrency too.
pub async fn seen_is_first_writer_wins_per_source(store: &dyn Store) {
    let id = uid();
    let ttl = Duration::from_secs(60);
    let results =
        futures::future::join_all((0..20).map(|_| store.seen("dingtalk", &id, ttl))).await;
    let firsts = results
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    assert_eq!(firsts, 1);
    assert!(
        store.seen("graph", &id, ttl).await.expect("seen"),
        "sources are separate"
    );
}

/// Enqueueing the same event many times concurrently queues exactly one job.
pub async fn enqueue_with_dedupe_queues_once(store: &dyn Store) {
    drain(store).await;
    let event = uid();
    let ttl = Duration::from_secs(60);
    let results = futures::future::join_all((0..30).map(|i| {
        let job = Job::new("contract", json!({ "n": i }));
        let event = event.clone();
        async move {
            store
                .enqueue(
                    &job,
                    Some(Dedupe {
                        source: "test",
                        event_id: &event,
                        ttl,
                    }),
                )
                .await
        }
    }))
    .await;
    let enqueued = results
        .iter()
        .filter(|r| matches!(r, Ok(EnqueueOutcome::Enqueued)))
        .count();
    assert_eq!(enqueued, 1);
    let got = store
        .fetch("c1", 100, Duration::from_millis(200), VIS)
        .await
        .expect("fetch");
    assert_eq!(got.len(), 1);
    store.ack(&got[0]).await.expect("ack");
}

/// A fetched job is invisible to other consumers until acked or timed out.
pub async fn fetched_job_is_not_handed_out_twice(store: &dyn Store) {
    drain(store).await;
    let job = Job::new("contract", json!({ "x": 1 }));
    store.enqueue(&job, None).await.expect("enqueue");
    let a = store
        .fetch("a", 10, Duration::from_millis(500), VIS)
        .await
        .expect("fetch");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].job, job);
    let b = store
        .fetch("b", 10, Duration::from_millis(100), VIS)
        .await
        .expect("fetch");
    assert!(
        b.is_empty(),
        "a held job must not be handed to a second consumer"
    );
    let depth = store.queue_depth().await.expect("depth");
    assert_eq!(depth.in_flight, 1);
    store.ack(&a[0]).await.expect("ack");
    let depth = store.queue_depth().await.expect("depth");
    assert_eq!((depth.ready, depth.in_flight), (0, 0));
}

/// A job whose consumer vanished is handed to another after the visibility timeout.
pub async fn unacknowledged_job_is_taken_over_after_visibility_timeout(store: &dyn Store) {
    drain(store).await;
    let job = Job::new("contract", json!({ "crash": true }));
    store.enqueue(&job, None).await.expect("enqueue");
    let short = Duration::from_millis(200);
    let a = store
        .fetch("crashed", 1, Duration::from_millis(500), short)
        .await
        .expect("fetch");
    assert_eq!(a.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = store
        .fetch("survivor", 1, Duration::from_millis(100), short)
        .await
        .expect("fetch");
    assert_eq!(b.len(), 1, "the stale job must be taken over");
    assert_eq!(b[0].job.id, job.id);
    store.ack(&b[0]).await.expect("ack");
    let c = store
        .fetch("third", 1, Duration::from_millis(100), short)
        .await
        .expect("fetch");
    assert!(c.is_empty(), "an acked job is gone");
}

/// A job put back with a delay comes back only after it.
pub async fn retry_later_redelivers_after_the_delay(store: &dyn Store) {
    drain(store).await;
    let job = Job::new("contract", json!({ "retry": true }));
    store.enqueue(&job, None).await.expect("enqueue");
    let d = store
        .fetch("r", 1, Duration::from_millis(500), VIS)
        .await
        .expect("fetch")
        .pop()
        .expect("one job");
    let mut next = d.job.clone();
    next.attempts = 1;
    next.last_error = Some("boom".into());
    store
        .retry_later(&d, &next, Duration::from_millis(400))
        .await
        .expect("retry");
    assert_eq!(store.queue_depth().await.expect("depth").delayed, 1);
    let early = store
        .fetch("r", 1, Duration::ZERO, VIS)
        .await
        .expect("fetch");
    assert!(early.is_empty(), "not before its time");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Promotion of due jobs is housekeeping that may run up to a second late.
    let mut late = Vec::new();
    for _ in 0..20 {
        late = store
            .fetch("r", 1, Duration::from_millis(100), VIS)
            .await
            .expect("fetch");
        if !late.is_empty() {
            break;
        }
    }
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].job.attempts, 1);
    assert_eq!(late[0].job.last_error.as_deref(), Some("boom"));
    store.ack(&late[0]).await.expect("ack");
}

/// Queues `job`, takes it and dead-letters it after `attempts` with `error`; the job as
/// dead-lettered.
async fn dead_lettered(store: &dyn Store, job: &Job, attempts: u32, error: &str) -> Job {
    store.enqueue(job, None).await.expect("enqueue");
    let d = store
        .fetch("d", 1, Duration::from_millis(500), VIS)
        .await
        .expect("fetch")
        .pop()
        .expect("one job");
    let mut last = d.job.clone();
    last.attempts = attempts;
    last.last_error = Some(error.into());
    store.dead_letter(&d, &last).await.expect("dead letter");
    last
}

/// Dead letters keep the job with its attempts and last error, newest first.
pub async fn dead_letter_keeps_job_attempts_and_error(store: &dyn Store) {
    drain(store).await;
    let before = store.queue_depth().await.expect("depth").dead;
    let job = Job::new("contract", json!({ "dead": true }));
    let last = dead_lettered(store, &job, 5, "target answered 500").await;
    let letters = store.dead_letters(1).await.expect("list");
    assert_eq!(letters[0].job, last);
    let depth = store.queue_depth().await.expect("depth");
    assert_eq!(depth.dead, before + 1);
    assert_eq!(depth.in_flight, 0);
}

/// A replayed dead letter leaves the dead letters and is handed out again from zero
/// attempts; replaying it again finds nothing.
pub async fn a_dead_letter_replays_once_with_its_attempts_reset(store: &dyn Store) {
    drain(store).await;
    let job = Job::new("contract", json!({ "replay": uid() }));
    dead_lettered(store, &job, 7, "Graph answered 403").await;
    let dead_before = store.queue_depth().await.expect("depth").dead;
    assert!(store.requeue_dead(&job.id).await.expect("replay"));
    assert!(!store.requeue_dead(&job.id).await.expect("replay again"));
    assert!(!store.requeue_dead("no-such-job").await.expect("unknown"));
    assert_eq!(
        store.queue_depth().await.expect("depth").dead,
        dead_before - 1
    );
    let again = store
        .fetch("r", 1, Duration::from_millis(500), VIS)
        .await
        .expect("fetch")
        .pop()
        .expect("the replayed job");
    assert_eq!(again.job.id, job.id);
    assert_eq!(again.job.attempts, 0);
    assert_eq!(again.job.payload, job.payload);
    store.ack(&again).await.expect("ack");
}

/// A set holds each member once, forgets removed ones and lists them sorted.
pub async fn sets_add_remove_and_list_sorted(store: &dyn Store) {
    let name = uid();
    assert!(store.set_members(&name).await.expect("empty").is_empty());
    for m in ["b", "a", "b", "c"] {
        store.set_add(&name, m).await.expect("add");
    }
    store.set_remove(&name, "c").await.expect("remove");
    store
        .set_remove(&name, "zz")
        .await
        .expect("remove a non-member");
    assert_eq!(store.set_members(&name).await.expect("members"), ["a", "b"]);
    assert!(store.set_members(&uid()).await.expect("other").is_empty());
}

/// A lease has one holder; only that holder renews or releases it.
pub async fn lease_is_exclusive_and_released_only_by_holder(store: &dyn Store) {
    let name = uid();
    let ttl = Duration::from_millis(400);
    assert!(store.lease_acquire(&name, "a", ttl).await.expect("acquire"));
    assert!(!store.lease_acquire(&name, "b", ttl).await.expect("acquire"));
    assert!(!store.lease_renew(&name, "b", ttl).await.expect("renew"));
    assert!(!store.lease_release(&name, "b").await.expect("release"));
    assert!(store.lease_renew(&name, "a", ttl).await.expect("renew"));
    assert!(store.lease_release(&name, "a").await.expect("release"));
    assert!(store.lease_acquire(&name, "b", ttl).await.expect("acquire"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        store.lease_acquire(&name, "c", ttl).await.expect("acquire"),
        "an expired lease is free"
    );
}

/// An id pair can be looked up from either side and deleted from either side.
pub async fn mapping_works_both_ways(store: &dyn Store) {
    let ns = uid();
    store.map_put(&ns, "ding-1", "graph-1").await.expect("put");
    assert_eq!(
        store
            .map_get(&ns, Side::Left, "ding-1")
            .await
            .expect("get")
            .as_deref(),
        Some("graph-1")
    );
    assert_eq!(
        store
            .map_get(&ns, Side::Right, "graph-1")
            .await
            .expect("get")
            .as_deref(),
        Some("ding-1")
    );
    store
        .map_delete(&ns, Side::Right, "graph-1")
        .await
        .expect("delete");
    assert_eq!(
        store.map_get(&ns, Side::Left, "ding-1").await.expect("get"),
        None
    );
    assert_eq!(
        store
            .map_get(&ns, Side::Right, "graph-1")
            .await
            .expect("get"),
        None
    );
}

/// The audit trail lists newest first and never grows past its cap (Redis trims
/// approximately, so the bound checked is generous).
pub async fn audit_is_newest_first_and_capped(store: &dyn Store) {
    let tag = uid();
    for i in 0..5 {
        store
            .audit_append(&AuditEntry::now(
                "contract.test",
                json!({ "tag": tag, "i": i }),
            ))
            .await
            .expect("append");
    }
    let recent = store.audit_recent(5).await.expect("recent");
    let order: Vec<i64> = recent
        .iter()
        .filter(|e| e.detail["tag"] == tag)
        .filter_map(|e| e.detail["i"].as_i64())
        .collect();
    assert_eq!(order, vec![4, 3, 2, 1, 0]);
}

/// Values round-trip, expire, and list by prefix.
pub async fn kv_roundtrip_and_prefix_listing(store: &dyn Store) {
    let p = format!("t{}:", uid());
    store
        .kv_put(&format!("{p}a"), "1", None)
        .await
        .expect("put");
    store
        .kv_put(&format!("{p}b"), "2", None)
        .await
        .expect("put");
    store
        .kv_put(&format!("{p}c"), "3", Some(Duration::from_millis(100)))
        .await
        .expect("put");
    assert_eq!(
        store
            .kv_get(&format!("{p}a"))
            .await
            .expect("get")
            .as_deref(),
        Some("1")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let keys = store.kv_keys(&p).await.expect("keys");
    assert_eq!(keys, vec![format!("{p}a"), format!("{p}b")]);
    assert!(store.kv_delete(&format!("{p}a")).await.expect("delete"));
    assert!(!store.kv_delete(&format!("{p}a")).await.expect("delete"));
    // A replace never brings a deleted value back; an existing one is overwritten.
    assert!(
        !store
            .kv_replace(&format!("{p}a"), "late")
            .await
            .expect("replace")
    );
    assert_eq!(store.kv_get(&format!("{p}a")).await.expect("get"), None);
    assert!(
        store
            .kv_replace(&format!("{p}b"), "2b")
            .await
            .expect("replace")
    );
    assert_eq!(
        store
            .kv_get(&format!("{p}b"))
            .await
            .expect("get")
            .as_deref(),
        Some("2b")
    );
}

/// Counters add atomically under concurrency and start again after their ttl.
pub async fn counters_add_atomically_and_expire(store: &dyn Store) {
    let key = uid();
    let ttl = Some(Duration::from_millis(300));
    let results = futures::future::join_all((0..25).map(|_| store.incr(&key, 2, ttl))).await;
    let mut values: Vec<u64> = results.into_iter().map(|r| r.expect("incr")).collect();
    values.sort_unstable();
    assert_eq!(values, (1..=25).map(|i| i * 2).collect::<Vec<u64>>());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.incr(&key, 1, ttl).await.expect("incr"),
        1,
        "expired counters restart"
    );
}

/// A feed lists newest first, drops the oldest beyond its cap, and ignores a repeated id.
pub async fn feed_is_newest_first_capped_and_idempotent(store: &dyn Store) {
    let feed = format!("contract-{}", uid());
    assert!(
        store
            .feed_recent(&feed, 10)
            .await
            .expect("empty")
            .is_empty()
    );
    for i in 0..5 {
        let added = store
            .feed_put(&feed, &format!("id{i}"), &format!("v{i}"), 3)
            .await
            .expect("put");
        assert!(added);
    }
    let again = store
        .feed_put(&feed, "id4", "changed", 3)
        .await
        .expect("put again");
    assert!(!again, "a repeated id is not added twice");
    let recent = store.feed_recent(&feed, 10).await.expect("recent");
    assert_eq!(recent, vec!["v4", "v3", "v2"], "newest first, capped at 3");
    let one = store.feed_recent(&feed, 1).await.expect("recent");
    assert_eq!(one, vec!["v4"]);
    assert!(
        store
            .feed_put(&feed, "id0", "v0-again", 3)
            .await
            .expect("put"),
        "an id trimmed away may be recorded again"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_meets_the_contract() {
        let store = memory::MemoryStore::new(1000);
        all(&store).await;
    }

    #[tokio::test]
    async fn memory_audit_is_capped_exactly() {
        let store = memory::MemoryStore::new(3);
        for i in 0..10 {
            store
                .audit_append(&AuditEntry::now("x", json!({ "i": i })))
                .await
                .expect("append");
        }
        assert_eq!(store.audit_recent(100).await.expect("recent").len(), 3);
    }
}
