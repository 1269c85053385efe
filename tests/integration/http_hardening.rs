//! Hostile HTTP against the running binary: trickled bodies, more slow clients than open
//! files, bodies of another media type, malformed requests and made-up methods.

use crate::common;

use std::time::{Duration, Instant};

use common::{env::Env, error_code, eventually};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

/// Writes `head` and then one byte of body every 2 s (at most `bytes` of them) until the
/// server closes the connection.
async fn trickle(
    mut stream: impl tokio::io::AsyncWrite + Unpin,
    head: String,
    bytes: usize,
    chunked: bool,
) {
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for _ in 0..bytes {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let piece: &[u8] = if chunked { b"1\r\n \r\n" } else { b" " };
        if stream.write_all(piece).await.is_err() {
            return;
        }
    }
}

/// Reads until the server closes the connection or `within` passes; returns what came
/// and whether the connection was closed.
async fn read_until_closed(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    within: Duration,
) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_one_byte_every_two_seconds_is_answered_408_within_the_deadline() {
    let app = Env::new().set("DINGBRIDGE_BODY_TIMEOUT_MS", "1000").spawn();
    for chunked in [false, true] {
        let framing = if chunked {
            "Transfer-Encoding: chunked"
        } else {
            "Content-Length: 20"
        };
        let head = format!(
            "POST /webhooks/graph HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
        );
        let stream = TcpStream::connect(app.addr).await.expect("connect");
        let (mut read, write) = stream.into_split();
        let started = Instant::now();
        let writer = tokio::spawn(trickle(write, head, 10, chunked));
        let (answer, closed) = read_until_closed(&mut read, Duration::from_secs(5)).await;
        let elapsed = started.elapsed();
        writer.abort();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "chunked={chunked}: no 408 within {elapsed:?}, got {answer:?}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON error body");
        assert_eq!(json["error"]["code"], "request_timeout", "{json}");
        assert!(json["error"]["request_id"].is_string(), "{json}");
        // Answered at the 1 s deadline, and the connection is not kept (nor drained).
        assert!(
            closed,
            "chunked={chunked}: connection still open after the 408"
        );
        assert!(
            elapsed < Duration::from_secs(4),
            "chunked={chunked}: {elapsed:?}"
        );
    }
    let healthy = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthy.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_slow_clients_outnumber_the_open_file_limit() {
    // 300 trickling clients against 256 open files: without a body deadline and a
    // connection cap, the process runs out of descriptors and nothing gets in for as long
    // as they trickle (40 s). With them, at most 128 are served at once and each is cut
    // after 1 s (plus actix's 1 s linger), so /healthz gets in behind two such waves.
    let app = Env::new()
        .set("DINGBRIDGE_BODY_TIMEOUT_MS", "1000")
        .spawn_with_open_files(256);
    let mut clients = JoinSet::new();
    let mut connected = 0;
    for _ in 0..300 {
        let Ok(stream) = TcpStream::connect(app.addr).await else {
            continue;
        };
        connected += 1;
        let head = "POST /webhooks/graph HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{".to_string();
        clients.spawn(trickle(stream, head, 20, false));
    }
    assert_eq!(connected, 300, "the listen queue takes every client");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let healthy = http.get(app.url("/healthz")).send().await;
    let elapsed = started.elapsed();
    clients.abort_all();
    let healthy = healthy.unwrap_or_else(|e| panic!("/healthz unanswered after {elapsed:?}: {e}"));
    assert_eq!(healthy.status(), 200);
    assert!(
        elapsed < Duration::from_secs(8),
        "/healthz took {elapsed:?}"
    );
    let logs = app.logs().join("\n");
    assert!(
        logs.contains("max_connections lowered to 128"),
        "the cap is said at start-up"
    );
    assert!(
        !logs.contains("Too many open files"),
        "ran out of descriptors"
    );
}

/// A bootstrap entry with every scope and its key.
fn all_scopes_key() -> (String, String) {
    let out = Env::new().run(&[
        "keys",
        "hash",
        "--name",
        "ops",
        "--scopes",
        "triggers,actions,admin",
    ]);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let entry = String::from_utf8(out.stderr)
        .expect("utf-8")
        .lines()
        .find(|l| l.starts_with("ops:"))
        .expect("the configuration entry")
        .to_string();
    (entry, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_endpoints_answer_415_to_text_form_and_multipart_bodies() {
    let (entry, key) = all_scopes_key();
    let app = Env::new()
        .bootstrap_keys(&entry)
        .echo("http://127.0.0.1:9/")
        .spawn();
    let endpoints = [
        "/webhooks/echo",
        "/webhooks/dingtalk/events",
        "/webhooks/dingtalk/robot",
        "/webhooks/graph",
        "/webhooks/graph/lifecycle",
        "/v1/hooks",
        "/v1/actions/dingtalk.send_robot_message",
    ];
    let bodies = [
        ("text/plain; charset=utf-8", "{\"value\":[]}"),
        ("application/x-www-form-urlencoded", "value=1"),
        (
            "multipart/form-data; boundary=b",
            "--b\r\nContent-Disposition: form-data; name=\"value\"\r\n\r\n1\r\n--b--\r\n",
        ),
    ];
    for path in endpoints {
        for (content_type, body) in bodies {
            let resp = app
                .http
                .post(app.url(path))
                .bearer_auth(&key)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("request");
            let (status, code, _) = error_code(resp).await;
            assert_eq!(
                (status, code.as_str()),
                (415, "unsupported_media_type"),
                "{path} with {content_type}"
            );
        }
    }
    // JSON with or without parameters, structured `+json` and no declaration are JSON.
    for content_type in [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/cloudevents+json"),
        None,
    ] {
        let mut req = app
            .http
            .post(app.url("/webhooks/graph"))
            .body("{\"value\":[]}");
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), 202, "{content_type:?}");
    }
    // Graph's validation handshake is text/plain, and still answered.
    let resp = app
        .http
        .post(app.url("/webhooks/graph?validationToken=abc%20def"))
        .header("content-type", "text/plain; charset=utf-8")
        .send()
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("token"), "abc def");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_is_counted_and_not_logged_as_an_error() {
    let app = Env::new().spawn();
    let huge_head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(140_000)
    );
    for raw in [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(),
        b"\x00\x01\x02 garbage\r\n\r\n".to_vec(),
        huge_head.into_bytes(),
    ] {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        let _ = stream.write_all(&raw).await;
        let (mut read, _write) = stream.into_split();
        let (answer, _) = read_until_closed(&mut read, Duration::from_secs(5)).await;
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 431"),
            "{answer:?}"
        );
    }
    let counted = eventually(Duration::from_secs(5), || async {
        let malformed = app
            .metric("http_connection_errors_total{reason=\"malformed\"}")
            .await?;
        let too_large = app
            .metric("http_connection_errors_total{reason=\"head_too_large\"}")
            .await?;
        (malformed >= 2.0 && too_large >= 1.0).then_some(())
    })
    .await;
    assert!(counted.is_some(), "malformed requests are counted");
    let errors: Vec<String> = app
        .logs()
        .into_iter()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(errors.is_empty(), "logged as errors: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_http_methods_add_no_metric_series() {
    use rand::Rng;
    let app = Env::new().spawn();
    let mut rng = rand::thread_rng();
    let tokens: Vec<String> = (0..50)
        .map(|_| {
            (0..12)
                .map(|_| rng.gen_range(b'A'..=b'Z') as char)
                .collect()
        })
        .collect();
    for (i, token) in tokens.iter().enumerate() {
        let method = reqwest::Method::from_bytes(token.as_bytes()).expect("a method token");
        let path = if i % 2 == 0 {
            "/healthz"
        } else {
            "/no/such/path"
        };
        let resp = app
            .http
            .request(method, app.url(path))
            .send()
            .await
            .expect("request");
        assert!(
            resp.status().is_client_error(),
            "{token}: {}",
            resp.status()
        );
    }
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for token in &tokens {
        assert!(!metrics.contains(token.as_str()), "{token} became a label");
    }
    let other = app
        .metric("http_requests_total{route=\"/healthz\",method=\"other\",status=\"405\"}")
        .await;
    assert_eq!(other, Some(25.0));
}
