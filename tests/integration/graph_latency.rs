//! Latency from a Graph change notification reaching the service to the DingTalk fake
//! receiving the message, under a steady load (app robot group send, so the custom
//! robot's 20/min budget does not dominate). Ignored by default (it takes ~25 s):
//! `cargo test --test integration -- --ignored --nocapture graph_latency`. Knobs: `LAT_RATE` (per
//! second, default 10), `LAT_SECS` (default 20).

use crate::common;

use std::time::{Duration, Instant};

use common::{
    FakeReply, FakeServer, RedisServer,
    env::Env,
    eventually, free_port,
    graph_fake::{GraphFake, GraphFakeConfig},
};
use serde_json::json;

const MAILBOX: &str = "ops@contoso.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn notification_to_dingtalk_latency_under_steady_load() {
    let rate: u64 = std::env::var("LAT_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let secs: u64 = std::env::var("LAT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let redis = RedisServer::start();
    let graph = GraphFake::start(GraphFakeConfig::default());
    let dingtalk = FakeServer::start(|r| {
        if r.path == "/gettoken" {
            return FakeReply::json(json!({"errcode": 0, "access_token": "t", "expires_in": 7200}));
        }
        FakeReply::json(json!({"processQueryKey": uuid::Uuid::new_v4().to_string()}))
    });
    let port = free_port();
    let cfg = graph.config();
    let config = format!(
        r#"public_url = "http://127.0.0.1:{port}"
[graph]
tenant_id = "{}"
client_id = "{}"
client_secret = "{}"
base_url = "{}"
authority_url = "{}"
allow_http_public_url = true
[dingtalk]
app_key = "k"
app_secret = "s"
api_base_url = "{dt}"
oapi_base_url = "{dt}"
[[routes]]
name = "ops"
mailbox = "{MAILBOX}"
kinds = ["mail"]
direction = "to_dingtalk"
[routes.dingtalk]
robot_code = "ding-robot"
conversation_id = "cid-ops"
"#,
        cfg.tenant,
        cfg.client_id,
        cfg.client_secret.clone().expect("secret"),
        graph.graph_base(),
        graph.authority(),
        dt = dingtalk.url(""),
    );
    let _app = Env::new()
        .config_toml(&config)
        .listen(&format!("127.0.0.1:{port}"))
        .redis(&redis)
        .spawn();
    let sub = eventually(Duration::from_secs(20), || async {
        graph.subscription_for(MAILBOX, "messages")
    })
    .await
    .expect("subscribed");
    let sub_id = sub["id"].as_str().expect("id").to_string();
    let total = rate * secs;
    let mut sent: Vec<(String, Instant)> = Vec::new();
    let start = Instant::now();
    for i in 0..total {
        let due = start + Duration::from_micros(i * 1_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let id = graph.put_message(
            MAILBOX,
            "inbox",
            json!({"subject": format!("load {i}"), "from": {"emailAddress": {"address": "a@b.c"}},
                   "body": {"contentType": "text", "content": "x"}}),
        );
        let body = graph.notification_body(&sub_id, "created", &id, None);
        let t0 = Instant::now();
        assert_eq!(graph.deliver(&sub_id, &body).await, 202);
        sent.push((format!("load {i}"), t0));
    }
    let sends = |d: &FakeServer| {
        d.requests()
            .into_iter()
            .filter(|r| r.path == "/v1.0/robot/groupMessages/send")
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(60), || async {
        (sends(&dingtalk).len() as u64 >= total).then_some(())
    })
    .await
    .expect("every message arrives");
    let mut lat: Vec<f64> = Vec::new();
    for r in sends(&dingtalk) {
        let param: serde_json::Value =
            serde_json::from_str(r.json()["msgParam"].as_str().expect("msgParam")).expect("json");
        let title = param["title"]
            .as_str()
            .expect("title")
            .trim_start_matches("📧 ");
        let (_, t0) = sent.iter().find(|(s, _)| s == title).expect("sent");
        lat.push(r.at.duration_since(*t0).as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "notification → DingTalk fake: n={} rate={rate}/s p50={:.1} ms p99={:.1} ms max={:.1} ms",
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
    assert_eq!(lat.len() as u64, total, "exactly one message per mail");
}
