//! The store contract against a real `redis-server` (the memory store runs the same
//! clauses as unit tests).

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
