//! Malformed and hostile HTTP on every endpoint: random bytes, invalid UTF-8, deep
//! nesting, lying `Content-Length`, header floods, slow bodies, made-up methods. No
//! answer may be a 5xx, the process must live, `/healthz` must keep answering and
//! `/metrics` must stay small.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use rand::{Rng, distributions::Alphanumeric};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{ECHO_TOKEN, common::TestApp, report};

const PATHS: &[&str] = &[
    "/webhooks/echo",
    "/webhooks/dingtalk/events",
    "/webhooks/dingtalk/robot",
    "/webhooks/graph",
    "/webhooks/graph/lifecycle",
    "/v1/hooks",
    "/v1/actions/outlook.send_mail",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/no/such/route",
];

/// Sends `bytes` on a fresh connection; the status of the answer, if one came in time.
async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    // The server may answer and close before reading everything: not an error here.
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(wait, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nX-Echo-Token: {ECHO_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[derive(Default)]
struct Class {
    tried: u64,
    statuses: BTreeMap<String, u64>,
}

impl Class {
    fn record(&mut self, status: Option<u16>) {
        self.tried += 1;
        let key = status.map_or("no answer".to_string(), |s| s.to_string());
        *self.statuses.entry(key).or_default() += 1;
    }

    fn server_errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(k, _)| k.starts_with('5'))
            .map(|(_, n)| n)
            .sum()
    }
}

async fn healthz(app: &TestApp) -> bool {
    app.http
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

fn random_token(rng: &mut impl Rng, len: usize) -> String {
    rng.sample_iter(&Alphanumeric)
        .take(len)
        .map(|c| char::from(c).to_ascii_uppercase())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_on_every_endpoint_gets_no_5xx_and_the_service_keeps_answering() {
    let app = TestApp::spawn(&[
        ("DINGBRIDGE_ECHO_TARGET_URL", "http://127.0.0.1:9/unused"),
        ("DINGBRIDGE_ECHO_TOKEN", ECHO_TOKEN),
        ("DINGBRIDGE_BODY_TIMEOUT_MS", "1000"),
        (
            "DINGBRIDGE_LOG_LEVEL",
            "warn,dingbridge=info,dingbridge::telemetry=warn",
        ),
    ]);
    let addr = app.addr;
    let wait = Duration::from_secs(5);
    let mut rng = rand::thread_rng();
    let mut classes: BTreeMap<&str, Class> = BTreeMap::new();
    let mut unhealthy = Vec::new();

    for path in PATHS {
        for _ in 0..20 {
            let len = rng.gen_range(1..4096);
            let junk: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            classes
                .entry("random bytes on the socket")
                .or_default()
                .record(raw(addr, &junk, wait).await);
            let body: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            classes
                .entry("random body")
                .or_default()
                .record(raw(addr, &request("POST", path, "", &body), wait).await);
        }
        let invalid_utf8 = b"{\"event_id\": \"\xff\xfe\xc3\x28\", \"text\": \"\xed\xa0\x80\"}";
        classes
            .entry("invalid UTF-8")
            .or_default()
            .record(raw(addr, &request("POST", path, "", invalid_utf8), wait).await);
        for depth in [65, 130, 10_000] {
            let nested = format!(
                "{}{{\"event_id\":\"deep-{depth}\"}}{}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            classes
                .entry("deep nesting")
                .or_default()
                .record(raw(addr, &request("POST", path, "", nested.as_bytes()), wait).await);
        }
        // Claims more than it sends, then less than it sends.
        let short = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"event_id\":\"x\"}}"
        );
        classes
            .entry("lying Content-Length")
            .or_default()
            .record(raw(addr, short.as_bytes(), wait).await);
        let long = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{{\"event_id\":\"x\"}}GARBAGE /x HTTP/9\r\n\r\n"
        );
        classes
            .entry("lying Content-Length")
            .or_default()
            .record(raw(addr, long.as_bytes(), wait).await);
        let conflicting = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        classes
            .entry("lying Content-Length")
            .or_default()
            .record(raw(addr, conflicting.as_bytes(), wait).await);
        let many: String = (0..2_000)
            .map(|i| format!("X-Flood-{i}: {i}\r\n"))
            .collect();
        let huge = format!("X-Huge: {}\r\n", "a".repeat(200_000));
        for flood in [many, huge] {
            classes
                .entry("header floods")
                .or_default()
                .record(raw(addr, &request("POST", path, &flood, b"{}"), wait).await);
        }
        for _ in 0..20 {
            let len = rng.gen_range(1..12);
            let method = random_token(&mut rng, len);
            classes
                .entry("random methods")
                .or_default()
                .record(raw(addr, &request(&method, path, "", b"{}"), wait).await);
        }
        if !healthz(&app).await {
            unhealthy.push(path.to_string());
        }
    }

    // Slow bodies: one byte a second, more than the deadline allows.
    let slow: Vec<_> = PATHS
        .iter()
        .map(|path| {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n"
            );
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.ok()?;
                s.write_all(head.as_bytes()).await.ok()?;
                let mut buf = vec![0u8; 64];
                for _ in 0..10 {
                    let _ = s.write_all(b" ").await;
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await
                    {
                        let head = String::from_utf8_lossy(&buf[..n]).to_string();
                        return head.get(9..12).and_then(|c| c.parse::<u16>().ok());
                    }
                }
                None
            })
        })
        .collect();
    for s in slow {
        let status = s.await.expect("slow client");
        classes.entry("slow bodies").or_default().record(status);
    }

    let healthy_at_end = healthz(&app).await;
    let metrics_bytes = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .bytes()
        .await
        .expect("metrics body")
        .len();
    let figures: BTreeMap<&str, serde_json::Value> = classes
        .iter()
        .map(|(k, c)| {
            (
                *k,
                serde_json::json!({ "tried": c.tried, "answers": c.statuses, "5xx": c.server_errors() }),
            )
        })
        .collect();
    report(
        "hostile_http",
        serde_json::json!({
            "classes": figures,
            "metrics_bytes_after": metrics_bytes,
            "healthz_failed_after": unhealthy,
        }),
    );
    for (name, class) in &classes {
        assert_eq!(class.server_errors(), 0, "{name}: {:?}", class.statuses);
    }
    assert!(
        unhealthy.is_empty() && healthy_at_end,
        "/healthz stopped answering: {unhealthy:?}"
    );
    assert!(
        metrics_bytes < 256 * 1024,
        "/metrics grew to {metrics_bytes} bytes"
    );
    assert!(
        !app.logs().iter().any(|l| l.contains("\"level\":\"ERROR\"")),
        "hostile input logged as an error"
    );
}
