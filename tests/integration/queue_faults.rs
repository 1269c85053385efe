//! Queue faults through the running binary: entries that can never run, and a killed
//! instance's jobs behind them.

use crate::common;

use std::time::Duration;

use common::{
    FakeServer, RedisServer,
    env::{ECHO_TOKEN, Env},
    error_code, eventually,
};
use serde_json::{Value, json};

const QUEUE: &str = "dingbridge:queue";

/// The echo relay on `store`, with short visibility and job timeouts and an admin key.
fn echo_env(target: &str, store: &str, bootstrap: &str) -> Env {
    Env::new()
        .echo(target)
        .store(store)
        .set("DINGBRIDGE_WORKERS_VISIBILITY_TIMEOUT_MS", "1000")
        .set("DINGBRIDGE_WORKERS_JOB_TIMEOUT_MS", "900")
        .bootstrap_keys(bootstrap)
}

/// JSON nested `depth` objects deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("leaf"), |inner, _| json!({ "a": inner }))
}

/// An admin bootstrap entry (`dingbridge keys hash`) and its key.
fn admin_key() -> (String, String) {
    let out = Env::new().run(&["keys", "hash", "--name", "ops", "--scopes", "admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let entry = String::from_utf8(out.stderr)
        .expect("utf-8")
        .lines()
        .find(|l| l.starts_with("ops:admin:"))
        .expect("the configuration entry")
        .to_string();
    (entry, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_deep_to_read_back_is_refused_not_acknowledged() {
    let redis = RedisServer::start();
    let target = FakeServer::ok();
    let (bootstrap, _) = admin_key();
    let url = redis.url();
    let target_url = target.url("/sink");
    let app = echo_env(&target_url, &url, &bootstrap).spawn();
    let mut body = nested(126);
    body["event_id"] = json!("evt-deep");
    let resp = app
        .http
        .post(app.url("/webhooks/echo"))
        .header("X-Echo-Token", ECHO_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    let len: u64 = redis::cmd("XLEN")
        .arg(QUEUE)
        .query(&mut redis.client())
        .unwrap_or(0);
    assert_eq!(len, 0, "nothing was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_are_dead_lettered_and_a_killed_instances_jobs_behind_them_are_taken_over() {
    let redis = RedisServer::start();
    let mut conn = redis.client();
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", QUEUE, "workers", "0", "MKSTREAM"])
        .query(&mut conn)
        .expect("group");
    // 100 entries no version can read (a job too deep for serde_json, as an older
    // version acknowledged; text from a newer one), then 8 good jobs; all held by a
    // consumer that died, as after a kill -9.
    let deep = format!(
        r#"{{"id":"deep","kind":"echo","payload":{},"attempts":0,"enqueued_at_ms":0}}"#,
        nested(200)
    );
    for i in 0..100 {
        let raw = if i % 2 == 0 {
            deep.clone()
        } else {
            format!("v9-job-{i}")
        };
        let _: String = redis::cmd("XADD")
            .arg(&[QUEUE, "*", "job", &raw])
            .query(&mut conn)
            .expect("xadd");
    }
    for i in 0..8 {
        let job = json!({
            "id": format!("job-{i}"), "kind": "echo",
            "payload": {"event_id": format!("evt-{i}")}, "attempts": 0, "enqueued_at_ms": 0,
        });
        let _: String = redis::cmd("XADD")
            .arg(&[QUEUE, "*", "job", &job.to_string()])
            .query(&mut conn)
            .expect("xadd");
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&[
            "GROUP",
            "workers",
            "dead-instance",
            "COUNT",
            "1000",
            "STREAMS",
            QUEUE,
            ">",
        ])
        .query(&mut conn)
        .expect("claimed by the dead consumer");

    let target = FakeServer::ok();
    let (bootstrap, admin) = admin_key();
    let url = redis.url();
    let target_url = target.url("/sink");
    let app = echo_env(&target_url, &url, &bootstrap).spawn();
    let delivered = eventually(Duration::from_secs(20), || async {
        let keys: std::collections::HashSet<String> = target
            .requests()
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_string))
            .collect();
        (keys.len() == 8).then_some(keys)
    })
    .await;
    assert!(
        delivered.is_some(),
        "all 8 jobs behind the poison entries were taken over; got {:?}",
        target
            .requests()
            .iter()
            .map(|r| r.header("idempotency-key").map(str::to_string))
            .collect::<Vec<_>>()
    );
    let dead = eventually(Duration::from_secs(10), || async {
        let v: Vec<Value> = app
            .http
            .get(app.url("/v1/deliveries?limit=1000"))
            .bearer_auth(&admin)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v.len() == 100).then_some(v)
    })
    .await;
    let dead = dead.unwrap_or_else(|| {
        panic!(
            "every poison entry is in the dead letters; logs: {:?}",
            app.logs().iter().rev().take(5).collect::<Vec<_>>()
        )
    });
    assert!(dead.iter().all(|d| d["kind"] == "unreadable"));
    let newer = dead
        .iter()
        .find(|d| d["payload"]["raw"] == "v9-job-1")
        .expect("the raw text is kept");
    assert!(
        newer["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "with the reason: {newer}"
    );
    assert!(
        dead.iter()
            .filter_map(|d| d["payload"]["raw"].as_str())
            .any(|raw| raw.contains("\"id\":\"deep\"")),
        "the deep job's text too"
    );
    let pending = eventually(Duration::from_secs(10), || async {
        let reply: redis::Value = redis::cmd("XPENDING")
            .arg(&[QUEUE, "workers"])
            .query(&mut redis.client())
            .ok()?;
        match reply {
            redis::Value::Array(items) => {
                matches!(items.first(), Some(redis::Value::Int(0))).then_some(())
            }
            _ => None,
        }
    })
    .await;
    assert!(pending.is_some(), "nothing stays pending for ever");
}
