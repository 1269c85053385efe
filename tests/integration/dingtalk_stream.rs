//! DingTalk Stream client against a local fake Stream gateway: a registration endpoint
//! issuing single-use tickets and a WebSocket server that speaks the documented frames,
//! pushes events again until they are ACKed with SUCCESS, and drops the socket once.

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use dingbridge::dingtalk::stream::{self, FrameSink, SinkError, StreamSettings};
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use common::stream_gateway::{CLIENT_ID, CLIENT_SECRET, Conn, Gateway, data_of};

// ---------------------------------------------------------------------------------------
// Recording sink
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct SinkState {
    /// `messageId` of every deliver call, in order.
    attempts: Vec<String>,
    /// Dedupe keys newly queued, in order (what the real pipeline would enqueue).
    queued: Vec<String>,
    /// `messageId`s for which deliver returned Ok.
    ok: HashSet<String>,
    /// `messageId`s that fail on their first delivery (a store outage).
    fail_once: HashSet<String>,
    /// Per-`messageId` processing time.
    delay: HashMap<String, Duration>,
    /// Frame types seen per `messageId`.
    types: HashMap<String, String>,
}

/// Dedupes like the real pipeline: by `eventId`, else `messageId`.
#[derive(Default)]
struct RecordingSink {
    state: Mutex<SinkState>,
}

impl RecordingSink {
    fn with<T>(&self, f: impl FnOnce(&mut SinkState) -> T) -> T {
        f(&mut self.state.lock().expect("sink"))
    }
}

#[async_trait]
impl FrameSink for RecordingSink {
    async fn deliver(
        &self,
        frame_type: &str,
        headers: &Map<String, Value>,
        data: &Value,
    ) -> Result<(), SinkError> {
        assert!(data.is_object(), "data arrives decoded: {data}");
        let message_id = headers["messageId"]
            .as_str()
            .expect("messageId")
            .to_string();
        let delay = self.with(|s| {
            s.attempts.push(message_id.clone());
            s.types.insert(message_id.clone(), frame_type.to_string());
            s.delay.get(&message_id).copied()
        });
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        self.with(|s| {
            if s.fail_once.remove(&message_id) {
                return Err(SinkError::StoreUnavailable("store down".into()));
            }
            let key = headers
                .get("eventId")
                .and_then(Value::as_str)
                .unwrap_or(&message_id)
                .to_string();
            if !s.queued.contains(&key) {
                s.queued.push(key);
            }
            s.ok.insert(message_id.clone());
            Ok(())
        })
    }
}

fn fast_settings(api_base: String) -> StreamSettings {
    let mut s = StreamSettings::new(CLIENT_ID, SecretString::from(CLIENT_SECRET.to_string()));
    s.api_base_url = api_base;
    s.backoff_base = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(200);
    s.ping_interval = Duration::from_millis(200);
    s.idle_timeout = Duration::from_secs(3);
    s.connect_timeout = Duration::from_secs(2);
    s
}

/// Pushes one event and asserts it is ACKed with `want` ("SUCCESS"/"LATER"); a SUCCESS
/// ACK must only arrive once the sink has returned Ok for that very frame.
async fn push_event(
    conn: &mut Conn,
    sink: &RecordingSink,
    message_id: &str,
    event_id: &str,
    want: &str,
) {
    conn.send_event(message_id, event_id).await;
    let ack = conn.reply().await;
    assert_eq!(ack["code"], 200, "{ack}");
    assert_eq!(ack["headers"]["messageId"], message_id, "{ack}");
    assert_eq!(data_of(&ack)["status"], want, "{ack}");
    let queued = sink.with(|s| s.ok.contains(message_id));
    assert_eq!(
        queued,
        want == "SUCCESS",
        "ack {want} for {message_id} but sink Ok = {queued}"
    );
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn stream_survives_a_dropped_socket_and_a_disconnect_without_losing_or_duplicating_events() {
    let mut gw = Gateway::start().await;
    let sink = Arc::new(RecordingSink::default());
    sink.with(|s| {
        s.fail_once.insert("m-e2".into());
        s.delay.insert("m-e3".into(), Duration::from_millis(300));
    });
    let cancel = CancellationToken::new();
    let task = stream::spawn(
        fast_settings(gw.api_base()),
        reqwest::Client::new(),
        sink.clone(),
        cancel.clone(),
    );

    // Connection 1: ping, events (one fails once), a robot callback, then a drop.
    let mut c1 = gw.next_conn().await;
    c1.send(
        "SYSTEM",
        json!({"topic": "ping", "messageId": "ping-1", "contentType": "application/json"}),
        json!({"opaque": "opaque-1"}),
    )
    .await;
    let pong = c1.reply().await;
    assert_eq!(pong["code"], 200);
    assert_eq!(pong["headers"]["messageId"], "ping-1");
    assert_eq!(data_of(&pong), json!({"opaque": "opaque-1"}));

    // The fake refuses a reused or an unknown ticket, as DingTalk does.
    let reused = format!(
        "ws://{}/connect?{}",
        gw.ws_addr,
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("ticket", &c1.ticket)
            .finish()
    );
    assert!(tokio_tungstenite::connect_async(reused).await.is_err());
    let unknown = format!("ws://{}/connect?ticket=nope", gw.ws_addr);
    assert!(tokio_tungstenite::connect_async(unknown).await.is_err());

    push_event(&mut c1, &sink, "m-e1", "e1", "SUCCESS").await;
    push_event(&mut c1, &sink, "m-e2", "e2", "LATER").await;

    c1.send(
        "CALLBACK",
        json!({"topic": "/v1.0/im/bot/messages/get", "messageId": "m-cb1", "contentType": "application/json"}),
        json!({"msgtype": "text", "text": {"content": "hello"}, "conversationId": "cid-1"}),
    )
    .await;
    let ack = c1.reply().await;
    assert_eq!(ack["code"], 200);
    assert_eq!(ack["headers"]["messageId"], "m-cb1");
    assert_eq!(data_of(&ack), json!({"response": null}));
    assert!(sink.with(|s| s.ok.contains("m-cb1")));

    // e3 is being processed (300 ms) when the gateway drops the socket: its ACK is lost.
    c1.send_event("m-e3", "e3").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(c1);

    // Connection 2, new ticket: DingTalk pushes again what was not ACKed SUCCESS (e2, e3),
    // under new message ids, then a new event, then asks to reconnect.
    let mut c2 = gw.next_conn().await;
    push_event(&mut c2, &sink, "m-e2-again", "e2", "SUCCESS").await;
    push_event(&mut c2, &sink, "m-e3-again", "e3", "SUCCESS").await;
    push_event(&mut c2, &sink, "m-e4", "e4", "SUCCESS").await;
    c2.send(
        "SYSTEM",
        json!({"topic": "disconnect", "messageId": "disc-1", "contentType": "application/json"}),
        json!({"reason": "load balancing"}),
    )
    .await;
    // No reply to disconnect: the client just closes and comes back with a new ticket.
    c2.closed_by_client().await;

    let mut c3 = gw.next_conn().await;
    c3.send(
        "SYSTEM",
        json!({"topic": "ping", "messageId": "ping-2"}),
        json!({"opaque": "opaque-2"}),
    )
    .await;
    let pong = c3.reply().await;
    assert_eq!(pong["headers"]["messageId"], "ping-2");
    assert_eq!(data_of(&pong), json!({"opaque": "opaque-2"}));
    push_event(&mut c3, &sink, "m-e5", "e5", "SUCCESS").await;

    // Cancellation closes the socket and ends the task promptly.
    cancel.cancel();
    c3.closed_by_client().await;
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the client stops within 2 s of cancel")
        .expect("the client task does not panic");

    // Every event reached the sink, and the deduped queue has each exactly once.
    let (queued, attempts, types) =
        sink.with(|s| (s.queued.clone(), s.attempts.clone(), s.types.clone()));
    assert_eq!(queued, ["e1", "m-cb1", "e3", "e2", "e4", "e5"]);
    assert_eq!(
        attempts,
        [
            "m-e1",
            "m-e2",
            "m-cb1",
            "m-e3",
            "m-e2-again",
            "m-e3-again",
            "m-e4",
            "m-e5"
        ],
        "e2 retried after LATER, e3 redelivered after the lost ACK"
    );
    assert_eq!(types["m-cb1"], "CALLBACK");
    assert_eq!(types["m-e1"], "EVENT");

    // One registration per connection, each with a ticket of its own, each used once.
    let regs = gw.registrations();
    assert_eq!(regs.len(), 3, "registered for each connection: {regs:?}");
    for r in &regs {
        assert_eq!(r["clientId"], CLIENT_ID);
        assert_eq!(r["clientSecret"], CLIENT_SECRET);
        assert_eq!(
            r["subscriptions"],
            json!([
                {"type": "EVENT", "topic": "*"},
                {"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}
            ])
        );
        assert!(
            r["ua"]
                .as_str()
                .is_some_and(|ua| ua.starts_with("dingbridge/"))
        );
    }
    let book = gw.tickets.lock().expect("tickets");
    assert_eq!(book.used.len(), 3);
    assert_eq!(book.used, book.issued);
    assert_eq!(
        book.refused, 2,
        "only the test's own reused/unknown attempts were refused"
    );
}

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn refused_registration_is_logged_without_the_secret_and_retried_with_growing_delays() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Current-thread runtime: the client task logs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut gw = Gateway::start().await;
    let wrong_secret = "wrong-secret-do-not-log-me";
    let mut settings = fast_settings(gw.api_base());
    settings.client_secret = SecretString::from(wrong_secret.to_string());
    settings.backoff_base = Duration::from_millis(40);
    settings.backoff_max = Duration::from_secs(1);
    let cancel = CancellationToken::new();
    let task = stream::spawn(
        settings,
        reqwest::Client::new(),
        Arc::new(RecordingSink::default()),
        cancel.clone(),
    );

    let start = Instant::now();
    let registration = &gw.registration;
    let four = common::eventually(Duration::from_secs(5), || async move {
        (registration.requests().len() >= 4).then_some(())
    })
    .await;
    assert!(
        four.is_some(),
        "the client keeps retrying a refused registration"
    );
    // Jittered delays after failures 1..3 are at least 20 + 40 + 80 ms.
    let reqs = gw.registration.requests();
    assert!(reqs[3].at.duration_since(reqs[0].at) >= Duration::from_millis(140));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        gw.conns.try_recv().is_err(),
        "no connection without a ticket"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops within 2 s of cancel")
        .expect("no panic");

    let text = String::from_utf8(logs.0.lock().expect("log").clone()).expect("utf-8 logs");
    assert!(text.contains("invalidClientIdOrSecret"), "logs: {text}");
    assert!(text.contains("registration refused"), "logs: {text}");
    assert!(
        !text.contains(wrong_secret),
        "the secret leaked into the logs: {text}"
    );
}

#[tokio::test]
async fn silent_socket_is_pinged_then_dropped_and_replaced_with_a_new_ticket() {
    let mut gw = Gateway::start().await;
    let mut settings = fast_settings(gw.api_base());
    settings.ping_interval = Duration::from_millis(100);
    settings.idle_timeout = Duration::from_millis(500);
    let cancel = CancellationToken::new();
    let task = stream::spawn(
        settings,
        reqwest::Client::new(),
        Arc::new(RecordingSink::default()),
        cancel.clone(),
    );

    // The gateway goes silent: it never reads, so the client's pings get no pong.
    let mut c1 = gw.next_conn().await;
    let c2 = gw.next_conn().await;
    assert_ne!(c1.ticket, c2.ticket);
    let before_close = c1.closed_by_client().await;
    assert!(
        before_close.iter().any(|m| matches!(m, Message::Ping(_))),
        "the client pinged the silent socket: {before_close:?}"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops within 2 s of cancel")
        .expect("no panic");
}

// ---------------------------------------------------------------------------------------
// Through the running binary
// ---------------------------------------------------------------------------------------

fn ingest_count(metrics: &str, result: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("ingest_events_total{")
                && l.contains("source=\"dingtalk\"")
                && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_in_stream_mode_queues_each_event_once_across_a_dropped_socket() {
    let redis = common::RedisServer::start();
    let mut gateway = Gateway::start().await;
    let app = common::env::Env::new()
        .redis(&redis)
        .set("DINGBRIDGE_DINGTALK_STREAM_ENABLED", "true")
        .set("DINGBRIDGE_DINGTALK_APP_KEY", CLIENT_ID)
        .set("DINGBRIDGE_DINGTALK_APP_SECRET", CLIENT_SECRET)
        .set("DINGBRIDGE_DINGTALK_API_BASE_URL", &gateway.api_base())
        .spawn();

    let mut first = gateway.next_conn().await;
    first.send_event("m-1", "s-e1").await;
    let ack = first.reply().await;
    assert_eq!(ack["headers"]["messageId"], "m-1");
    assert_eq!(data_of(&ack)["status"], "SUCCESS", "acked once queued");
    // e2 is sent, then the socket drops before its ACK can be read.
    first.send_event("m-2", "s-e2").await;
    drop(first);

    // The client registers again with a fresh ticket; DingTalk redelivers e2.
    let mut second = gateway.next_conn().await;
    second.send_event("m-2b", "s-e2").await;
    assert_eq!(data_of(&second.reply().await)["status"], "SUCCESS");
    second.send_event("m-3", "s-e3").await;
    assert_eq!(data_of(&second.reply().await)["status"], "SUCCESS");

    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(ingest_count(&metrics, "enqueued"), 3.0, "{metrics}");
    // e2 was either queued before the drop (then its redelivery is a duplicate) or not.
    let duplicates = ingest_count(&metrics, "duplicate");
    assert!(duplicates <= 1.0, "{metrics}");
    let mut c = redis.client();
    for e in ["s-e1", "s-e2", "s-e3"] {
        let key = format!("dingbridge:seen:dingtalk:event:{e}");
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut c)
            .expect("exists");
        assert!(exists, "{key} marked");
    }
    let registrations = gateway.registrations();
    assert!(registrations.len() >= 2, "re-registered after the drop");
    assert!(
        !app.logs().join("\n").contains(CLIENT_SECRET),
        "the app secret never reaches the log"
    );
}
