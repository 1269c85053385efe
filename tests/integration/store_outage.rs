//! Redis outages through the running binary: the answer (503 + `Retry-After`, with the
//! cause) comes at once whatever Redis does — refuse, hang, reject the password — and the
//! service recovers without a restart.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    FakeServer, RedisServer, TestApp,
    env::{ECHO_TOKEN, Env},
    error_code, eventually, free_port,
};
use serde_json::json;

/// Generous bound that still tells the fixed behaviour (well under 1 s on an idle
/// machine) from the old one (5–54 s).
const PROMPT: Duration = Duration::from_secs(2);

async fn post_echo(app: &TestApp, event_id: &str) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let resp = app
        .http
        .post(app.url("/webhooks/echo"))
        .header("X-Echo-Token", ECHO_TOKEN)
        .json(&json!({ "event_id": event_id }))
        .send()
        .await
        .expect("request");
    (resp, started.elapsed())
}

async fn readyz_error(app: &TestApp) -> String {
    let resp = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert!(resp.headers().contains_key("retry-after"));
    let (status, _, body) = error_code(resp).await;
    assert_eq!(status, 503, "{body}");
    body["error"]["details"]["checks"]["store"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_while_redis_is_down_the_port_opens_at_once_and_every_request_gets_a_prompt_503() {
    let mut redis = RedisServer::start();
    redis.stop();
    let target = FakeServer::ok();
    let (url, target_url) = (redis.url(), target.url("/sink"));
    let started = Instant::now();
    let app = Env::new().echo(&target_url).store(&url).spawn();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the port opened after {:?}",
        started.elapsed()
    );
    let cause = readyz_error(&app).await;
    assert!(
        cause.contains("refused"),
        "/readyz names the cause: {cause}"
    );

    let answers = futures::future::join_all((0..8).map(|i| {
        let app = &app;
        async move { post_echo(app, &format!("cold-{i}")).await }
    }))
    .await;
    for (resp, took) in answers {
        assert!(took < PROMPT, "503 after {took:?}");
        assert!(resp.headers().contains_key("retry-after"));
        let (status, code, _) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    }

    redis.start_again();
    let accepted = eventually(Duration::from_secs(15), || async {
        let (resp, _) = post_echo(&app, "cold-0").await;
        (resp.status() == 202).then_some(())
    })
    .await;
    assert!(accepted.is_some(), "recovers without a restart");
    eventually(Duration::from_secs(15), || async {
        (!target.requests().is_empty()).then_some(())
    })
    .await
    .expect("and the event is delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_gets_a_prompt_503_and_the_service_recovers_when_it_answers_again() {
    let redis = RedisServer::start();
    let target = FakeServer::ok();
    let (url, target_url) = (redis.url(), target.url("/sink"));
    let app = Env::new().echo(&target_url).store(&url).spawn();
    let (resp, _) = post_echo(&app, "before").await;
    assert_eq!(resp.status(), 202);

    redis.pause();
    for i in 0..3 {
        let (resp, took) = post_echo(&app, &format!("hung-{i}")).await;
        assert!(took < PROMPT, "503 after {took:?}");
        let (status, code, _) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    }
    let started = Instant::now();
    let _ = readyz_error(&app).await;
    assert!(
        started.elapsed() < PROMPT,
        "/readyz after {:?}",
        started.elapsed()
    );

    redis.resume();
    let accepted = eventually(Duration::from_secs(15), || async {
        let (resp, _) = post_echo(&app, "hung-0").await;
        (resp.status() == 202).then_some(())
    })
    .await;
    assert!(accepted.is_some(), "recovers without a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_reads_as_an_authentication_failure_in_readyz() {
    common::ensure_redis_server();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--requirepass", "right-password", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts");
    eventually(Duration::from_secs(10), || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    })
    .await
    .expect("redis listens");
    let url = format!("redis://:wrong-password@127.0.0.1:{port}");
    let app = Env::new().store(&url).spawn();
    let cause = readyz_error(&app).await;
    assert!(cause.contains("authentication failed"), "{cause}");
    assert!(
        !cause.contains("wrong-password"),
        "no secret in the answer: {cause}"
    );
    assert!(
        app.logs().iter().all(|l| !l.contains("wrong-password")),
        "no secret in the log"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// The embedded store holds a bounded queue: past it, new events get a prompt 503 with
/// `Retry-After`, and nothing accepted before is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_refuses_events_past_its_bound_with_503_and_loses_none_it_took() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let target = FakeServer::start(move |_| {
        if gate.load(Ordering::SeqCst) {
            common::FakeReply::status(200)
        } else {
            common::FakeReply::status(503)
        }
    });
    let target_url = target.url("/sink");
    let app = Env::new()
        .echo(&target_url)
        .set("DINGBRIDGE_MEMORY_QUEUE_MAX", "5")
        .backoff_ms(200, 500)
        .set("DINGBRIDGE_WORKERS_MAX_ATTEMPTS", "100")
        .spawn();
    for i in 0..5 {
        let (resp, _) = post_echo(&app, &format!("held-{i}")).await;
        assert_eq!(resp.status(), 202);
    }
    let (resp, took) = post_echo(&app, "one-too-many").await;
    assert!(took < PROMPT, "503 after {took:?}");
    assert!(resp.headers().contains_key("retry-after"));
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("maximum of 5 jobs"),
        "{body}"
    );
    open.store(true, Ordering::SeqCst);
    let delivered = eventually(Duration::from_secs(20), || async {
        let ids: std::collections::HashSet<String> = target
            .requests()
            .iter()
            .filter(|r| !r.body.is_empty())
            .filter_map(|r| r.json()["event_id"].as_str().map(str::to_string))
            .collect();
        (ids.len() == 5).then_some(ids)
    })
    .await
    .expect("all five held events delivered");
    assert!(!delivered.contains("one-too-many"));
    // Room comes back as the delivered jobs are acknowledged; the refused event was not
    // marked seen, so it is taken then, not called a duplicate.
    let taken = eventually(Duration::from_secs(10), || async {
        let (resp, _) = post_echo(&app, "one-too-many").await;
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        (body["accepted"] == 1).then_some(())
    })
    .await;
    assert!(taken.is_some(), "taken once there is room");
}
