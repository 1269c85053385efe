//! Redis unreachable at start, killed mid-run and hung mid-run: every request is answered
//! 503 with `Retry-After` within a second, and the service recovers without a restart.

use std::time::{Duration, Instant};

use crate::{
    common::{FakeReply, FakeServer, RedisServer, eventually},
    echo_env, post_echo, report, spawn,
};

/// Sends `n` events at once; the slowest answer and how many were not 503 + Retry-After.
async fn burst(http: &reqwest::Client, base: &str, tag: &str, n: usize) -> (Duration, usize) {
    let answers = futures::future::join_all((0..n).map(|i| {
        let (http, base) = (http.clone(), base.to_string());
        let id = format!("{tag}-{i}");
        async move {
            let started = Instant::now();
            let resp = http
                .post(format!("{base}/webhooks/echo"))
                .header("X-Echo-Token", crate::ECHO_TOKEN)
                .json(&serde_json::json!({ "event_id": id }))
                .send()
                .await;
            let ok =
                resp.is_ok_and(|r| r.status() == 503 && r.headers().contains_key("retry-after"));
            (started.elapsed(), ok)
        }
    }))
    .await;
    let slowest = answers.iter().map(|(d, _)| *d).max().unwrap_or_default();
    (slowest, answers.iter().filter(|(_, ok)| !ok).count())
}

async fn recovers(http: &reqwest::Client, base: &str, tag: &str) -> Option<Duration> {
    let started = Instant::now();
    eventually(Duration::from_secs(20), || async {
        (post_echo(http, base, tag).await == Some(202)).then_some(())
    })
    .await
    .map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_hung_or_killed_every_request_gets_503_within_a_second_and_recovers() {
    let mut redis = RedisServer::start();
    redis.stop();
    let sink = FakeServer::start(|_| FakeReply::status(200));
    let started = Instant::now();
    let app = spawn(&echo_env(&redis.url(), &sink.url("/sink")));
    let port_open = started.elapsed();
    let http = reqwest::Client::new();
    let base = app.url("");

    let (cold, cold_wrong) = burst(&http, &base, "cold", 32).await;
    redis.start_again();
    let cold_recovery = recovers(&http, &base, "cold-after").await;

    redis.stop();
    let (killed, killed_wrong) = burst(&http, &base, "killed", 32).await;
    redis.start_again();
    let killed_recovery = recovers(&http, &base, "killed-after").await;

    redis.pause();
    let (hung, hung_wrong) = burst(&http, &base, "hung", 32).await;
    redis.resume();
    let hung_recovery = recovers(&http, &base, "hung-after").await;

    let ms = |d: Duration| d.as_millis() as u64;
    report(
        "redis_outage",
        serde_json::json!({
            "port_open_ms_with_redis_down": ms(port_open),
            "requests_per_phase": 32,
            "slowest_503_ms": {"down_at_start": ms(cold), "killed_mid_run": ms(killed), "hung_mid_run": ms(hung)},
            "answers_not_503_with_retry_after": cold_wrong + killed_wrong + hung_wrong,
            "recovery_ms": {
                "down_at_start": cold_recovery.map(ms),
                "killed_mid_run": killed_recovery.map(ms),
                "hung_mid_run": hung_recovery.map(ms),
            },
        }),
    );
    assert_eq!(
        cold_wrong + killed_wrong + hung_wrong,
        0,
        "every answer a 503 with Retry-After"
    );
    for (phase, slowest) in [("at start", cold), ("killed", killed), ("hung", hung)] {
        assert!(
            slowest < Duration::from_secs(1),
            "{phase}: a 503 took {slowest:?}"
        );
    }
    assert!(
        cold_recovery.is_some() && killed_recovery.is_some() && hung_recovery.is_some(),
        "recovers without a restart"
    );
}
