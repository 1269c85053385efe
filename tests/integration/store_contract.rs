//! The store contract against a real `redis-server` and a real Redis Cluster of three
//! masters (the memory store runs the same clauses as unit tests).

use crate::common;

use std::time::Duration;

use dingbridge::store::{Store, contract, redis::RedisStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_meets_the_contract() {
    let redis = common::RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "contract:", 1000)
        .await
        .expect("store");
    contract::all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_meets_the_contract() {
    let cluster = common::RedisCluster::start();
    let store = RedisStore::connect_cluster(&cluster.urls(), "contract:", 1000)
        .await
        .expect("store");
    contract::all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keys_live_under_the_configured_prefix() {
    let redis = common::RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "tenant-a:", 1000)
        .await
        .expect("store");
    store.kv_put("x", "1", None).await.expect("put");
    store
        .seen("dingtalk", "e1", Duration::from_secs(60))
        .await
        .expect("seen");
    let mut c = redis.client();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).expect("keys");
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.starts_with("tenant-a:")), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_reports_an_outage_and_recovers_without_a_restart() {
    let mut redis = common::RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "outage:", 1000)
        .await
        .expect("store");
    store.ping().await.expect("up");
    redis.stop();
    assert!(store.ping().await.is_err(), "an outage must be reported");
    redis.start_again();
    let mut recovered = false;
    for _ in 0..100 {
        if store.ping().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store reconnects by itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_fails_fast_while_the_cluster_is_down_and_recovers_without_a_restart() {
    let mut cluster = common::RedisCluster::start();
    let store = RedisStore::connect_cluster(&cluster.urls(), "outage:", 1000)
        .await
        .expect("store");
    store.kv_put("k", "v", None).await.expect("up");
    cluster.stop();
    assert!(store.ping().await.is_err(), "an outage must be reported");
    // Once known down, every command fails at once instead of waiting for an answer.
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert!(store.kv_get("k").await.is_err());
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    cluster.start_again();
    let mut recovered = false;
    for _ in 0..150 {
        if store.kv_get("k").await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store reconnects by itself");
    assert_eq!(store.kv_get("k").await.expect("get").as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_setting_that_does_not_match_the_server_is_named_in_the_error() {
    let single = common::RedisServer::start();
    let store = RedisStore::connect_cluster(&[single.url()], "m:", 1000)
        .await
        .expect("store");
    let err = store.ping().await.expect_err("not a cluster").to_string();
    assert!(err.contains("store_cluster = false"), "{err}");

    let cluster = common::RedisCluster::start();
    let store = RedisStore::connect(&cluster.urls()[0], "m:", 1000)
        .await
        .expect("store");
    // Some of these keys hash to slots of other masters, which answer MOVED.
    let mut errors = Vec::new();
    for i in 0..20 {
        if let Err(e) = store.kv_put(&format!("k{i}"), "v", None).await {
            errors.push(e.to_string());
        }
    }
    assert!(
        errors.iter().any(|e| e.contains("store_cluster = true")),
        "{errors:?}"
    );
}

/// Writes `args` with a plain client, as the previous version laid keys out.
fn raw(redis: &common::RedisServer, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query(&mut redis.client()).expect("redis command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_redis_reads_the_keys_the_previous_version_wrote() {
    use dingbridge::store::{DeadLetter, Dedupe, EnqueueOutcome, Job, Side};
    use serde_json::json;

    let redis = common::RedisServer::start();
    let queued = Job::new("echo", json!({ "n": 1 }));
    let delayed = Job::new("echo", json!({ "n": 2 }));
    let dead = DeadLetter {
        job: Job::new("echo", json!({ "n": 3 })),
        failed_at_ms: 1,
    };
    let (queued_json, delayed_json) = (
        serde_json::to_string(&queued).expect("json"),
        serde_json::to_string(&delayed).expect("json"),
    );
    let dead_json = serde_json::to_string(&dead).expect("json");
    raw(
        &redis,
        &[
            "XGROUP",
            "CREATE",
            "dingbridge:queue",
            "workers",
            "0",
            "MKSTREAM",
        ],
    );
    raw(
        &redis,
        &["XADD", "dingbridge:queue", "*", "job", &queued_json],
    );
    raw(
        &redis,
        &["ZADD", "dingbridge:queue:delayed", "1", &delayed_json],
    );
    raw(
        &redis,
        &["XADD", "dingbridge:queue:dead", "*", "letter", &dead_json],
    );
    raw(
        &redis,
        &["SET", "dingbridge:seen:dingtalk:evt-1", "1", "PX", "600000"],
    );
    raw(
        &redis,
        &["SET", "dingbridge:map:relay:todo:r1:l:dt-1", "graph-1"],
    );
    raw(
        &redis,
        &["SET", "dingbridge:map:relay:todo:r1:r:graph-1", "dt-1"],
    );
    raw(
        &redis,
        &["HSET", "dingbridge:feed:trigger:t:items", "i1", "v1"],
    );
    raw(
        &redis,
        &["ZADD", "dingbridge:feed:trigger:t:order", "1", "i1"],
    );
    raw(&redis, &["SET", "dingbridge:feed:trigger:t:seq", "1"]);
    raw(&redis, &["SET", "dingbridge:kv:hook:h1", "{}"]);

    let store = RedisStore::connect(&redis.url(), "dingbridge:", 1000)
        .await
        .expect("store");
    let mut ids = Vec::new();
    for _ in 0..20 {
        for d in store
            .fetch(
                "c1",
                10,
                Duration::from_millis(100),
                Duration::from_secs(60),
            )
            .await
            .expect("fetch")
        {
            ids.push(d.job.id.clone());
            store.ack(&d).await.expect("ack");
        }
        if ids.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ids.sort();
    let mut want = vec![queued.id.clone(), delayed.id.clone()];
    want.sort();
    assert_eq!(ids, want, "the queued job and the due retry both run");
    let letters = store.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters, vec![dead]);
    let mark = Dedupe {
        source: "dingtalk",
        event_id: "evt-1",
        ttl: Duration::from_secs(60),
    };
    let again = store
        .enqueue(&Job::new("echo", json!({})), Some(mark))
        .await
        .expect("enqueue");
    assert_eq!(
        again,
        EnqueueOutcome::Duplicate,
        "the old mark still dedupes"
    );
    let ns = "relay:todo:r1";
    assert_eq!(
        store
            .map_get(ns, Side::Right, "graph-1")
            .await
            .expect("map")
            .as_deref(),
        Some("dt-1")
    );
    store
        .map_delete(ns, Side::Left, "dt-1")
        .await
        .expect("delete");
    assert_eq!(
        store
            .map_get(ns, Side::Right, "graph-1")
            .await
            .expect("map"),
        None
    );
    assert_eq!(
        store.feed_recent("trigger:t", 10).await.expect("feed"),
        vec!["v1".to_string()]
    );
    assert_eq!(store.kv_keys("hook:").await.expect("keys"), vec!["hook:h1"]);
}
