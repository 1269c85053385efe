//! Backup and rollback through the binary against real Redis: `dingbridge export` writes
//! every key but leases (with their expiry), `dingbridge import` restores it into another
//! Redis where the service then serves the same hooks and API keys, `--exact` rolls a
//! store back, a cut-off backup restores nothing, and a backup moves a single Redis into a
//! Redis Cluster and back.

use crate::{common, lowcode::create_key};

use std::{path::Path, time::Duration};

use common::{RedisCluster, RedisServer, TestApp, env::Env};
use dingbridge::store::{Dedupe, EnqueueOutcome, Job, Side, Store, redis::RedisStore};
use serde_json::{Value, json};

/// Runs `dingbridge <args>` on `redis`; (success, stdout, stderr).
fn cli(redis: &RedisServer, args: &[&str]) -> (bool, String, String) {
    cli_with(&Env::new().redis(redis), args)
}

/// Runs `dingbridge <args>` with these settings; (success, stdout, stderr).
fn cli_with(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = env.run(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn export(redis: &RedisServer, file: &Path) {
    let (ok, _, err) = cli(redis, &["export", "--out", file.to_str().expect("path")]);
    assert!(ok, "export failed: {err}");
}

fn redis_cmd<T: redis::FromRedisValue>(redis: &RedisServer, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut redis.client()).expect("redis command")
}

fn spawn(redis: &RedisServer) -> TestApp {
    Env::new().redis(redis).loopback_hooks().spawn()
}

async fn hooks(app: &TestApp, key: &str) -> Vec<Value> {
    let resp = app
        .http
        .get(app.url("/v1/hooks"))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_an_empty_redis_serves_the_same_hooks_and_keys() {
    let source = RedisServer::start();
    let key = create_key(&source, "zapier", "triggers,actions");
    let app = spawn(&source);
    let created = app
        .http
        .post(app.url("/v1/hooks"))
        .bearer_auth(&key)
        .json(&json!({"target_url": "http://127.0.0.1:9/hook", "event": "outlook.mail.received"}))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(
        created.status(),
        201,
        "{}",
        created.text().await.unwrap_or_default()
    );
    let before = hooks(&app, &key).await;
    drop(app);
    // A delta link that expires, and a lease an instance holds.
    let _: () = redis_cmd(
        &source,
        &[
            "SET",
            "dingbridge:kv:graph:delta:r:inbox",
            "link",
            "PX",
            "600000",
        ],
    );
    let _: () = redis_cmd(
        &source,
        &["SET", "dingbridge:lease:graph-subscriptions", "tok"],
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.jsonl");
    export(&source, &file);
    let text = std::fs::read_to_string(&file).expect("read backup");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines[0]["format"], "dingbridge-backup");
    assert_eq!(lines[0]["version"], 1);
    let last = lines.last().expect("trailer");
    assert_eq!(last["end"], true);
    assert_eq!(last["keys"].as_u64(), Some(lines.len() as u64 - 2));
    assert!(
        !text.contains("lease:"),
        "leases belong to running instances"
    );

    let target = RedisServer::start();
    let (ok, _, err) = cli(&target, &["import", "--file", file.to_str().expect("path")]);
    assert!(ok, "import failed: {err}");
    assert!(err.contains("restored"), "{err}");
    let ttl: i64 = redis_cmd(&target, &["PTTL", "dingbridge:kv:graph:delta:r:inbox"]);
    assert!(ttl > 0 && ttl <= 600_000, "expiry kept: {ttl}");
    let lease: i64 = redis_cmd(&target, &["EXISTS", "dingbridge:lease:graph-subscriptions"]);
    assert_eq!(lease, 0);

    let restored = spawn(&target);
    assert_eq!(hooks(&restored, &key).await, before, "same hooks, same key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_exact_rolls_the_store_back_and_a_cut_off_backup_restores_nothing() {
    let redis = RedisServer::start();
    create_key(&redis, "before-upgrade", "triggers");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.jsonl");
    export(&redis, &file);
    create_key(&redis, "after-upgrade", "triggers");
    let listed = || cli(&redis, &["keys", "list"]).1;
    assert!(listed().contains("after-upgrade"));

    // A copy cut off before its trailer is refused, and nothing changes.
    let text = std::fs::read_to_string(&file).expect("read");
    let cut: Vec<&str> = text.lines().collect();
    let cut_file = dir.path().join("cut.jsonl");
    std::fs::write(&cut_file, cut[..cut.len() - 1].join("\n")).expect("write");
    let (ok, _, err) = cli(
        &redis,
        &[
            "import",
            "--exact",
            "--file",
            cut_file.to_str().expect("path"),
        ],
    );
    assert!(!ok, "a cut-off backup must fail");
    assert!(err.contains("cut off"), "{err}");
    assert!(listed().contains("after-upgrade"), "nothing changed");

    // Without --exact nothing is deleted and existing keys are kept.
    let path = file.to_str().expect("path");
    let (ok, _, err) = cli(&redis, &["import", "--file", path]);
    assert!(ok, "{err}");
    assert!(err.contains("0 deleted") && err.contains("kept"), "{err}");
    assert!(listed().contains("after-upgrade"));

    // The rollback: the store becomes the backup.
    let (ok, _, err) = cli(&redis, &["import", "--exact", "--replace", "--file", path]);
    assert!(ok, "{err}");
    let keys = listed();
    assert!(keys.contains("before-upgrade"), "{keys}");
    assert!(!keys.contains("after-upgrade"), "{keys}");

    // The memory store has nothing to back up.
    let out = Env::new().run(&["export", "--out", "-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory store"));
}

fn all_keys(redis: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = redis_cmd(redis, &["KEYS", "*"]);
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_moves_a_single_redis_into_a_cluster_and_back_key_for_key() {
    let single = RedisServer::start();
    let store = RedisStore::connect(&single.url(), "dingbridge:", 1000)
        .await
        .expect("store");
    let job = Job::new("echo", json!({ "n": 1 }));
    let mark = Dedupe {
        source: "dingtalk",
        event_id: "evt-1",
        ttl: Duration::from_secs(600),
    };
    let queued = store.enqueue(&job, Some(mark)).await.expect("enqueue");
    assert_eq!(queued, EnqueueOutcome::Enqueued);
    store
        .map_put("relay:message:sales", "dt-1", "graph-1")
        .await
        .expect("map");
    store
        .feed_put("trigger:outlook.mail.received", "i1", "v1", 10)
        .await
        .expect("feed");
    store.kv_put("hook:h1", "{}", None).await.expect("kv");
    drop(store);

    let dir = tempfile::tempdir().expect("tempdir");
    let from_single = dir.path().join("single.jsonl");
    export(&single, &from_single);
    let cluster = RedisCluster::start();
    let cluster_env = Env::new()
        .store(&cluster.url())
        .set("DINGBRIDGE_STORE_CLUSTER", "true");
    let path = from_single.to_str().expect("path");
    let (ok, _, err) = cli_with(&cluster_env, &["import", "--file", path]);
    assert!(ok, "import into the cluster failed: {err}");

    // Back again, from the cluster (scanned master by master) into an empty Redis.
    let from_cluster = dir.path().join("cluster.jsonl");
    let path = from_cluster.to_str().expect("path");
    let (ok, _, err) = cli_with(&cluster_env, &["export", "--out", path]);
    assert!(ok, "export from the cluster failed: {err}");
    let again = RedisServer::start();
    let (ok, _, err) = cli(&again, &["import", "--file", path]);
    assert!(ok, "import failed: {err}");
    assert_eq!(
        all_keys(&again),
        all_keys(&single),
        "the same keys, untagged"
    );

    // The cluster serves what the single Redis held: the queued job (with its consumer
    // group), its dedupe mark, the id pair both ways, the feed and the record.
    let store = RedisStore::connect_cluster(&cluster.urls(), "dingbridge:", 1000)
        .await
        .expect("cluster store");
    let again = store
        .enqueue(&Job::new("echo", json!({ "n": 2 })), Some(mark))
        .await
        .expect("enqueue");
    assert_eq!(
        again,
        EnqueueOutcome::Duplicate,
        "the dedupe mark came along"
    );
    let got = store
        .fetch(
            "c1",
            10,
            Duration::from_millis(200),
            Duration::from_secs(60),
        )
        .await
        .expect("fetch");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job.id, job.id);
    let ns = "relay:message:sales";
    assert_eq!(
        store
            .map_get(ns, Side::Left, "dt-1")
            .await
            .expect("map")
            .as_deref(),
        Some("graph-1")
    );
    store
        .map_delete(ns, Side::Right, "graph-1")
        .await
        .expect("delete");
    assert_eq!(
        store.map_get(ns, Side::Left, "dt-1").await.expect("map"),
        None
    );
    assert_eq!(
        store
            .feed_recent("trigger:outlook.mail.received", 10)
            .await
            .expect("feed"),
        vec!["v1".to_string()]
    );
    assert_eq!(store.kv_keys("hook:").await.expect("keys"), vec!["hook:h1"]);
}
