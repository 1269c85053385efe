//! The spine through the running binary: error contract, health, durable ingest,
//! workers, retries, dead letters, crashes, Redis outages, shutdown, a Redis Cluster.

use crate::common;

use std::{collections::HashSet, time::Duration};

use common::{
    FakeReply, FakeServer, RedisCluster, RedisServer, TestApp,
    env::{ECHO_TOKEN, Env},
    error_code, eventually,
};
use serde_json::json;

async fn post_echo(app: &TestApp, body: &serde_json::Value) -> reqwest::Response {
    app.http
        .post(app.url("/webhooks/echo"))
        .header("X-Echo-Token", ECHO_TOKEN)
        .json(body)
        .send()
        .await
        .expect("request")
}

fn distinct_keys(target: &FakeServer) -> HashSet<String> {
    target
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_answer_on_the_embedded_store() {
    let app = Env::new().spawn();
    let health = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["checks"]["store"]["backend"], "memory");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("queue_depth{state=\"ready\"}"),
        "{metrics}"
    );
    assert!(
        app.logs().iter().any(|l| l.contains("in-memory store")),
        "the embedded store is announced at start-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_answer_in_the_error_shape_with_the_request_id() {
    let app = Env::new().spawn();
    let resp = app
        .http
        .get(app.url("/nope"))
        .header("X-Request-Id", "trace-123")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-request-id"], "trace-123");
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert_eq!(body["error"]["request_id"], "trace-123");

    let resp = app
        .http
        .delete(app.url("/healthz"))
        .send()
        .await
        .expect("request");
    let generated = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    assert_eq!(
        body["error"]["request_id"],
        generated.as_str(),
        "a request id is made up when none is sent"
    );
    assert!(
        app.logs().iter().any(|l| l.contains("trace-123")),
        "the request id appears in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_malformed_json_gets_400_without_queueing() {
    let target = FakeServer::ok();
    let target_url = target.url("/sink");
    let app = Env::new()
        .echo(&target_url)
        .set("DINGBRIDGE_BODY_LIMIT_BYTES", "2048")
        .spawn();
    let big = json!({ "event_id": "big", "blob": "x".repeat(4096) });
    let (status, code, _) = error_code(post_echo(&app, &big).await).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    let resp = app
        .http
        .post(app.url("/webhooks/echo"))
        .header("X-Echo-Token", ECHO_TOKEN)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "invalid_json"));

    let resp = app
        .http
        .post(app.url("/webhooks/echo"))
        .header("X-Echo-Token", "wrong")
        .json(&json!({ "event_id": "e" }))
        .send()
        .await
        .expect("request");
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        target.requests().is_empty(),
        "rejected input must queue nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_event_reaches_the_target_through_the_worker() {
    let target = FakeServer::ok();
    let target_url = target.url("/sink");
    let app = Env::new().echo(&target_url).store("memory").spawn();
    let resp = post_echo(&app, &json!({ "event_id": "e-1", "text": "你好" })).await;
    assert_eq!(resp.status(), 202);
    let got = eventually(Duration::from_secs(10), || async {
        target.requests().first().cloned()
    })
    .await
    .expect("delivered");
    assert_eq!(got.json()["text"], "你好");
    assert!(got.header("idempotency-key").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_sent_50_times_to_3_instances_is_processed_once() {
    let redis = RedisServer::start();
    let target = FakeServer::ok();
    let target_url = target.url("/sink");
    let url = redis.url();
    let apps: Vec<TestApp> = (0..3)
        .map(|_| Env::new().echo(&target_url).store(&url).spawn())
        .collect();
    let event = json!({ "event_id": "dup-1", "n": 1 });
    let sends = (0..50).map(|i| post_echo(&apps[i % 3], &event));
    let statuses: Vec<u16> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    eventually(Duration::from_secs(10), || async {
        (!target.requests().is_empty()).then_some(())
    })
    .await
    .expect("delivered");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(target.requests().len(), 1, "processed exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_events_are_accepted_deduplicated_and_delivered_once() {
    let cluster = RedisCluster::start();
    let target = FakeServer::ok();
    let target_url = target.url("/sink");
    let url = cluster.url();
    let env = Env::new()
        .echo(&target_url)
        .store(&url)
        .set("DINGBRIDGE_STORE_CLUSTER", "true");
    let apps: Vec<TestApp> = (0..2).map(|_| env.spawn()).collect();
    let ready = apps[0]
        .http
        .get(apps[0].url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let apps = &apps;
    let sends = (0..10).map(|i| {
        let event = json!({ "event_id": format!("cluster-{}", i % 2), "n": i % 2 });
        async move { post_echo(&apps[i % 2], &event).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    eventually(Duration::from_secs(10), || async {
        (target.requests().len() >= 2).then_some(())
    })
    .await
    .expect("delivered");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut delivered: Vec<i64> = target
        .requests()
        .iter()
        .map(|r| r.json()["n"].as_i64().unwrap_or(-1))
        .collect();
    delivered.sort();
    assert_eq!(delivered, vec![0, 1], "each event delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_by_a_killed_instance_is_completed_by_another_exactly_once() {
    let redis = RedisServer::start();
    // The first delivery hangs long enough for the instance to be killed mid-job.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let target = FakeServer::start(move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            FakeReply::status(200).delayed(Duration::from_secs(3))
        } else {
            FakeReply::status(200)
        }
    });
    let target_url = target.url("/sink");
    let url = redis.url();
    let env = Env::new()
        .echo(&target_url)
        .store(&url)
        .set("DINGBRIDGE_WORKERS_VISIBILITY_TIMEOUT_MS", "2000")
        .set("DINGBRIDGE_WORKERS_JOB_TIMEOUT_MS", "1500");
    let mut first = env.spawn();
    assert_eq!(
        post_echo(&first, &json!({ "event_id": "crash-1" }))
            .await
            .status(),
        202
    );
    eventually(Duration::from_secs(10), || async {
        (!target.requests().is_empty()).then_some(())
    })
    .await
    .expect("the first instance started the job");
    first.kill9();
    // The fake completes the first request anyway (the effect happened); the job is
    // still pending in Redis because nobody acknowledged it.
    let second = env.spawn();
    eventually(Duration::from_secs(15), || async {
        (target.requests().len() >= 2).then_some(())
    })
    .await
    .expect("the surviving instance took the job over");
    let done = eventually(Duration::from_secs(10), || async {
        let ready = second.metric("queue_depth{state=\"ready\"}").await?;
        let in_flight = second.metric("queue_depth{state=\"in_flight\"}").await?;
        (ready == 0.0 && in_flight == 0.0).then_some(())
    })
    .await;
    assert!(done.is_some(), "the job is acknowledged");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        distinct_keys(&target).len(),
        1,
        "both attempts carry the same idempotency key: one effect"
    );
    assert_eq!(
        target.requests().len(),
        2,
        "no further redelivery after completion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_ingest_and_readiness_answer_503_and_recover_by_themselves() {
    let mut redis = RedisServer::start();
    let target = FakeServer::ok();
    let target_url = target.url("/sink");
    let url = redis.url();
    let app = Env::new().echo(&target_url).store(&url).spawn();
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("r")
            .status(),
        200
    );

    redis.stop();
    let resp = post_echo(&app, &json!({ "event_id": "outage-1" })).await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    let resp = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert!(resp.headers().contains_key("retry-after"));
    let (status, _, body) = error_code(resp).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["details"]["checks"]["store"]["ok"], false);

    redis.start_again();
    eventually(Duration::from_secs(20), || async {
        let r = app.http.get(app.url("/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await
    .expect("ready again without a restart");
    let resp = post_echo(&app, &json!({ "event_id": "outage-1" })).await;
    assert_eq!(resp.status(), 202, "the refused event is accepted on retry");
    eventually(Duration::from_secs(15), || async {
        (!target.requests().is_empty()).then_some(())
    })
    .await
    .expect("and delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_retried_with_backoff_then_dead_lettered_with_its_error() {
    let redis = RedisServer::start();
    let target = FakeServer::start(|_| FakeReply {
        body: "{\"error\":\"kaputt\"}".into(),
        ..FakeReply::status(500)
    });
    let target_url = target.url("/sink");
    let url = redis.url();
    let app = Env::new()
        .echo(&target_url)
        .store(&url)
        .set("DINGBRIDGE_WORKERS_MAX_ATTEMPTS", "4")
        .backoff_ms(200, 2000)
        .spawn();
    assert_eq!(
        post_echo(&app, &json!({ "event_id": "fail-1" }))
            .await
            .status(),
        202
    );

    let mut conn = redis.client();
    let letters = eventually(Duration::from_secs(20), || {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("dingbridge:queue:dead")
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap_or_default();
        async move { (!entries.is_empty()).then_some(entries) }
    })
    .await
    .expect("dead-lettered");
    let letter: serde_json::Value =
        serde_json::from_str(&letters[0].1[0].1).expect("letter is JSON");
    assert_eq!(letter["job"]["attempts"], 4);
    assert!(
        letter["job"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500") && e.contains("kaputt")),
        "{letter}"
    );
    let times: Vec<_> = target.requests().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 4, "exactly max_attempts tries");
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // Equal jitter: attempt n waits between half and all of base·2^(n-1).
    assert!(gaps[0] >= 100, "{gaps:?}");
    assert!(gaps[2] >= 400, "backoff grows: {gaps:?}");
    let dead = app.metric("jobs_dead_lettered_total{kind=\"echo\"}").await;
    assert_eq!(dead, Some(1.0));
    let retried = app.metric("jobs_retried_total{kind=\"echo\"}").await;
    assert_eq!(retried, Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_job_finish_before_exiting() {
    let redis = RedisServer::start();
    let target = FakeServer::start(|_| FakeReply::status(200).delayed(Duration::from_millis(1500)));
    let target_url = target.url("/sink");
    let url = redis.url();
    let mut app = Env::new().echo(&target_url).store(&url).spawn();
    assert_eq!(
        post_echo(&app, &json!({ "event_id": "term-1" }))
            .await
            .status(),
        202
    );
    eventually(Duration::from_secs(10), || async {
        (!target.requests().is_empty()).then_some(())
    })
    .await
    .expect("job started");
    assert!(app.terminate(Duration::from_secs(15)), "clean exit");
    let mut conn = redis.client();
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg("dingbridge:queue")
        .arg("workers")
        .query(&mut conn)
        .expect("xpending");
    let pending_count: u64 = redis::from_redis_value(&pending[0]).expect("count");
    assert_eq!(
        pending_count, 0,
        "the running job was finished and acknowledged"
    );
    let len: u64 = redis::cmd("XLEN")
        .arg("dingbridge:queue")
        .query(&mut conn)
        .expect("xlen");
    assert_eq!(len, 0);
    assert!(app.logs().iter().any(|l| l.contains("shutdown complete")));
}
