//! DingTalk Stream mode: a long-lived outbound WebSocket through which DingTalk pushes
//! events and robot callbacks, so no public URL is needed. Protocol:
//! <https://open.dingtalk.com/document/direction/stream-mode-protocol-access-description>,
//! with DingTalk's supplement
//! <https://open-dingtalk.github.io/developerpedia/docs/learn/stream/protocol>.
//!
//! One connection goes through these steps, forever, until cancelled:
//!
//! 1. **Register**: `POST {api_base_url}/v1.0/gateway/connections/open` with the client
//!    id/secret and subscriptions returns `{endpoint, ticket}`. The ticket is single use and
//!    valid for 90 s, so every (re)connection registers again.
//! 2. **Connect** to `endpoint?ticket=<ticket>`.
//! 3. **Read frames** one at a time (which keeps DingTalk's order):
//!    - SYSTEM `ping` is answered by echoing its `data` under the same `messageId`;
//!    - SYSTEM `disconnect` means "reconnect now, with a new ticket";
//!    - EVENT and CALLBACK frames go to the [`FrameSink`]; only once it says the event is
//!      durably queued is the frame ACKed. An EVENT that could not be queued is answered
//!      `LATER` so DingTalk pushes it again; DingTalk may also push an event twice on its
//!      own, so the sink must dedupe by `eventId` / `messageId`.
//! 4. A closed, failed or silent socket (no frame and no pong for
//!    [`StreamSettings::idle_timeout`]) ends the connection; the client waits an
//!    exponential backoff with jitter and starts again at step 1.
//!
//! # Wiring
//!
//! ```ignore
//! use std::sync::Arc;
//! use dingbridge::dingtalk::stream::{self, StreamSettings};
//!
//! // app_key is the Stream client id, app_secret the client secret.
//! let settings = StreamSettings::new(app_key.clone(), app_secret.clone());
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let task = stream::spawn(settings, http.clone(), Arc::new(MySink { /* store, … */ }), cancel.clone());
//! // … on shutdown:
//! cancel.cancel();
//! let _ = task.await;
//! ```
//!
//! where `MySink` implements [`FrameSink`] by normalising the frame and calling
//! `ingest::accept`, its error mapped to a [`SinkError`] (a store outage then becomes
//! `LATER`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};
use tokio_util::sync::CancellationToken;

/// Topic of robot messages delivered as CALLBACK frames.
pub const ROBOT_MESSAGE_TOPIC: &str = "/v1.0/im/bot/messages/get";

/// Path of the registration call, appended to [`StreamSettings::api_base_url`].
pub const REGISTER_PATH: &str = "/v1.0/gateway/connections/open";

/// How to reach and keep the Stream gateway. Build it with [`StreamSettings::new`] and
/// override fields as needed; the timing fields exist mainly so tests can run fast.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Base URL of the DingTalk API (no trailing slash needed), e.g. [`crate::config::DINGTALK_API_BASE_URL`].
    pub api_base_url: String,
    /// The app's Client ID (AppKey).
    pub client_id: String,
    /// The app's Client Secret (AppSecret); sent only in the registration body, never logged.
    pub client_secret: SecretString,
    /// `(type, topic)` pairs to subscribe to; EVENT accepts only the topic `*` (the events
    /// themselves are chosen in the developer console).
    pub subscriptions: Vec<(String, String)>,
    /// Client identification sent at registration (`name/version`).
    pub ua: String,
    /// First reconnect delay; doubles per failed attempt (with jitter).
    pub backoff_base: Duration,
    /// Upper bound of the reconnect delay.
    pub backoff_max: Duration,
    /// Interval of the WebSocket pings this client sends.
    pub ping_interval: Duration,
    /// A connection that receives nothing (no frame, no pong) for this long is dropped.
    pub idle_timeout: Duration,
    /// Time limit for the registration call and for the WebSocket handshake each.
    pub connect_timeout: Duration,
    /// Time limit for one [`FrameSink::deliver`]; past it the frame counts as failed.
    pub deliver_timeout: Duration,
}

impl StreamSettings {
    /// Production defaults: DingTalk's API, EVENT `*` plus robot messages, 1 s → 60 s
    /// backoff, a ping every 30 s, a connection dropped after 90 s of silence.
    pub fn new(client_id: impl Into<String>, client_secret: SecretString) -> Self {
        Self {
            api_base_url: crate::config::DINGTALK_API_BASE_URL.to_string(),
            client_id: client_id.into(),
            client_secret,
            subscriptions: vec![
                ("EVENT".to_string(), "*".to_string()),
                ("CALLBACK".to_string(), ROBOT_MESSAGE_TOPIC.to_string()),
            ],
            ua: crate::USER_AGENT.to_string(),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            // Below DingTalk's ~60 s redelivery so a stuck store does not hold the socket.
            deliver_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a [`FrameSink`] did not take a frame. The frame is then answered `LATER` (EVENT)
/// or 500 (CALLBACK), with [`SinkError::code`] as the answer's message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SinkError {
    /// The event could not be durably queued (the store is down, full or too slow).
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The event was refused for another reason, named by a stable error code.
    #[error("{code}: {message}")]
    Refused {
        /// Stable code, e.g. `invalid_input`.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
}

impl SinkError {
    /// The stable code sent back to DingTalk and logged.
    pub fn code(&self) -> &'static str {
        match self {
            SinkError::StoreUnavailable(_) => "store_unavailable",
            SinkError::Refused { code, .. } => code,
        }
    }
}

/// Where EVENT and CALLBACK frames go; the real implementation normalises and enqueues.
#[async_trait]
pub trait FrameSink: Send + Sync {
    /// Takes one frame: `frame_type` is `"EVENT"` or `"CALLBACK"`, `headers` are the
    /// frame's headers (`messageId`, `topic`, `eventId`, `eventType`, …) and `data` is the
    /// frame's `data` string already decoded as JSON.
    ///
    /// Return `Ok` only once the event is durably queued: the frame is then ACKed and
    /// DingTalk will not push it again. `Err` answers an EVENT with `LATER` (DingTalk
    /// pushes it again) and a CALLBACK with code 500. The same frame can arrive more than
    /// once, so implementations dedupe by `eventId` / `messageId`.
    async fn deliver(
        &self,
        frame_type: &str,
        headers: &Map<String, Value>,
        data: &Value,
    ) -> Result<(), SinkError>;
}

/// Starts the Stream client; it reconnects on its own until `cancel` fires, then closes
/// the socket and the task ends.
pub fn spawn(
    settings: StreamSettings,
    http: reqwest::Client,
    sink: Arc<dyn FrameSink>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(settings, http, sink, cancel))
}

// ---------------------------------------------------------------------------------------
// Frames and ACKs (pure)
// ---------------------------------------------------------------------------------------

/// The `type` of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    System,
    Event,
    Callback,
}

impl FrameKind {
    fn as_str(self) -> &'static str {
        match self {
            FrameKind::System => "SYSTEM",
            FrameKind::Event => "EVENT",
            FrameKind::Callback => "CALLBACK",
        }
    }
}

/// One frame from DingTalk, validated: it has a type we know, a `messageId`, and `data`
/// that is JSON.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    kind: FrameKind,
    headers: Map<String, Value>,
    message_id: String,
    /// `data` decoded (it arrives as a JSON string holding JSON).
    data: Value,
    /// `data` exactly as received, for the ping echo.
    raw_data: String,
}

impl Frame {
    fn topic(&self) -> &str {
        self.headers
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Why a text frame was not usable.
#[derive(Debug, thiserror::Error, PartialEq)]
enum FrameError {
    #[error("not a JSON object")]
    NotJson,
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    #[error("no headers.messageId")]
    NoMessageId,
    #[error("data is not JSON")]
    BadData,
}

/// Parses a text frame. `data` is documented as a JSON string holding JSON; an object in
/// its place is accepted too (nothing is lost by being lenient there), and a missing
/// `data` decodes as `null`.
fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
        return Err(FrameError::NotJson);
    };
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some("SYSTEM") => FrameKind::System,
        Some("EVENT") => FrameKind::Event,
        Some("CALLBACK") => FrameKind::Callback,
        other => return Err(FrameError::UnknownType(other.unwrap_or("").to_string())),
    };
    let headers = match obj.remove("headers") {
        Some(Value::Object(h)) => h,
        _ => return Err(FrameError::NoMessageId),
    };
    let message_id = match headers.get("messageId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => return Err(FrameError::NoMessageId),
    };
    let (data, raw_data) = match obj.remove("data") {
        Some(Value::String(s)) => (
            serde_json::from_str(&s).map_err(|_| FrameError::BadData)?,
            s,
        ),
        None | Some(Value::Null) => (Value::Null, String::new()),
        Some(v @ Value::Object(_)) => {
            let raw = v.to_string();
            (v, raw)
        }
        Some(_) => return Err(FrameError::BadData),
    };
    Ok(Frame {
        kind,
        headers,
        message_id,
        data,
        raw_data,
    })
}

/// What to do with a parsed frame.
#[derive(Debug, PartialEq)]
enum Action {
    /// Send this reply (a SYSTEM ping echo).
    Reply(String),
    /// DingTalk asked us to reconnect (with a new ticket).
    Reconnect { reason: String },
    /// Hand to the sink, then ACK.
    Deliver,
    /// A SYSTEM topic we have no use for.
    Ignore,
}

fn plan(frame: &Frame) -> Action {
    match frame.kind {
        FrameKind::Event | FrameKind::Callback => Action::Deliver,
        FrameKind::System => match frame.topic() {
            "ping" => Action::Reply(ping_reply(frame)),
            "disconnect" => Action::Reconnect {
                reason: frame
                    .data
                    .get("reason")
                    .map(|r| match r {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default(),
            },
            _ => Action::Ignore,
        },
    }
}

fn response(code: u16, message_id: &str, message: &str, data: String) -> String {
    json!({
        "code": code,
        "headers": {"messageId": message_id, "contentType": "application/json"},
        "message": message,
        "data": data,
    })
    .to_string()
}

/// The answer to a SYSTEM ping: its `data` echoed under the same `messageId`.
fn ping_reply(frame: &Frame) -> String {
    response(200, &frame.message_id, "OK", frame.raw_data.clone())
}

/// The ACK of an EVENT or CALLBACK frame after delivery; `failure` is the error code of a
/// failed delivery.
fn ack(kind: FrameKind, message_id: &str, failure: Option<&str>) -> String {
    let callback = kind == FrameKind::Callback;
    match failure {
        None if callback => response(200, message_id, "OK", json!({"response": null}).to_string()),
        None => response(
            200,
            message_id,
            "OK",
            json!({"status": "SUCCESS", "message": "success"}).to_string(),
        ),
        // Robot messages are not pushed again whatever we answer; 500 at least tells
        // DingTalk (and its console statistics) that this one was not taken.
        Some(code) if callback => {
            response(500, message_id, code, json!({"response": null}).to_string())
        }
        // Code 200 with LATER: the frame was received, its consumption failed, push again.
        Some(code) => response(
            200,
            message_id,
            "OK",
            json!({"status": "LATER", "message": code}).to_string(),
        ),
    }
}

/// Reconnect delay after `attempt` consecutive failures: doubling from `base`, capped at
/// `max`, with "equal jitter" (half fixed, half random) so that many instances cut off
/// together do not all register in the same second.
fn backoff_delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let full = base
        .saturating_mul(1u32 << attempt.min(20))
        .min(max)
        .as_millis() as u64;
    let half = full / 2;
    Duration::from_millis(half + rand::thread_rng().gen_range(0..=full - half))
}

/// `endpoint?ticket=<ticket>` (keeping any query the endpoint already has).
fn connect_url(endpoint: &str, ticket: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(endpoint).map_err(|e| format!("bad endpoint: {e}"))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(format!("endpoint scheme {:?} is not ws/wss", url.scheme()));
    }
    url.query_pairs_mut().append_pair("ticket", ticket);
    Ok(url)
}

/// First characters of an upstream body for a log line, with the secret masked in case a
/// gateway echoes the request.
fn log_excerpt(body: &str, secret: &str) -> String {
    let masked = if secret.is_empty() {
        body.to_string()
    } else {
        body.replace(secret, "[REDACTED]")
    };
    masked.chars().take(300).collect()
}

// ---------------------------------------------------------------------------------------
// Connection loop
// ---------------------------------------------------------------------------------------

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How one connection ended.
enum End {
    /// `cancel` fired; stop.
    Cancelled,
    /// Registration or connect failed, or the socket dropped before anything arrived.
    Failed,
    /// The connection worked for a while (received at least one frame) and then ended.
    AfterHealthy,
}

async fn run(
    settings: StreamSettings,
    http: reqwest::Client,
    sink: Arc<dyn FrameSink>,
    cancel: CancellationToken,
) {
    tracing::info!(client_id = %settings.client_id, "dingtalk stream client started");
    let mut failures: u32 = 0;
    loop {
        match connect_once(&settings, &http, sink.as_ref(), &cancel).await {
            End::Cancelled => break,
            End::AfterHealthy => failures = 0,
            End::Failed => failures = failures.saturating_add(1),
        }
        let delay = backoff_delay(
            settings.backoff_base,
            settings.backoff_max,
            failures.saturating_sub(1),
        );
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            failures,
            "dingtalk stream reconnecting"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => break,
        }
    }
    tracing::info!("dingtalk stream client stopped");
}

/// Registers, connects and serves one connection.
async fn connect_once(
    settings: &StreamSettings,
    http: &reqwest::Client,
    sink: &dyn FrameSink,
    cancel: &CancellationToken,
) -> End {
    let registered = tokio::select! {
        r = register(settings, http) => r,
        _ = cancel.cancelled() => return End::Cancelled,
    };
    let Some((endpoint, ticket)) = registered else {
        return End::Failed;
    };
    let url = match connect_url(&endpoint, &ticket) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "dingtalk stream registration returned an unusable endpoint");
            return End::Failed;
        }
    };
    let connect = tokio::time::timeout(
        settings.connect_timeout,
        tokio_tungstenite::connect_async(url.as_str()),
    );
    let socket = tokio::select! {
        r = connect => r,
        _ = cancel.cancelled() => return End::Cancelled,
    };
    let socket = match socket {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, endpoint = %endpoint, "dingtalk stream websocket connect failed");
            return End::Failed;
        }
        Err(_) => {
            tracing::warn!(endpoint = %endpoint, "dingtalk stream websocket connect timed out");
            return End::Failed;
        }
    };
    tracing::info!(endpoint = %endpoint, "dingtalk stream connected");
    serve(settings, socket, sink, cancel).await
}

/// Obtains a fresh `(endpoint, ticket)`; failures are logged here.
async fn register(settings: &StreamSettings, http: &reqwest::Client) -> Option<(String, String)> {
    let url = format!(
        "{}{}",
        settings.api_base_url.trim_end_matches('/'),
        REGISTER_PATH
    );
    let subscriptions: Vec<Value> = settings
        .subscriptions
        .iter()
        .map(|(kind, topic)| json!({"type": kind, "topic": topic}))
        .collect();
    let body = json!({
        "clientId": settings.client_id,
        "clientSecret": settings.client_secret.expose_secret(),
        "subscriptions": subscriptions,
        "ua": settings.ua,
    });
    let resp = match http
        .post(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&body)
        .timeout(settings.connect_timeout)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // reqwest errors carry the URL, never the body, so the secret cannot leak here.
            tracing::warn!(error = %e, url = %url, "dingtalk stream registration request failed");
            return None;
        }
    };
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let secret = settings.client_secret.expose_secret();
    if !status.is_success() {
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = parsed.get("code").and_then(Value::as_str).unwrap_or("");
        let message = parsed.get("message").and_then(Value::as_str).unwrap_or("");
        if status.is_client_error() {
            // Usually wrong credentials (invalidClientIdOrSecret) or Stream mode not
            // enabled for the app: retrying will not help until someone fixes the config,
            // so say so loudly; the backoff keeps the retries cheap.
            tracing::error!(
                status = status.as_u16(),
                code,
                reason = %log_excerpt(message, secret),
                client_id = %settings.client_id,
                "dingtalk stream registration refused; check the app key/secret and that Stream mode is enabled for the app"
            );
        } else {
            tracing::warn!(
                status = status.as_u16(),
                body = %log_excerpt(&text, secret),
                "dingtalk stream registration failed"
            );
        }
        return None;
    }
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match (
        parsed.get("endpoint").and_then(Value::as_str),
        parsed.get("ticket").and_then(Value::as_str),
    ) {
        (Some(endpoint), Some(ticket)) if !endpoint.is_empty() && !ticket.is_empty() => {
            Some((endpoint.to_string(), ticket.to_string()))
        }
        _ => {
            tracing::warn!(
                body = %log_excerpt(&text, secret),
                "dingtalk stream registration answer has no endpoint/ticket"
            );
            None
        }
    }
}

/// Reads and answers frames until the connection ends.
async fn serve(
    settings: &StreamSettings,
    mut socket: Socket,
    sink: &dyn FrameSink,
    cancel: &CancellationToken,
) -> End {
    let mut healthy = false;
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval(settings.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate; the socket has just shown it is alive
    let end = |healthy: bool| {
        if healthy {
            End::AfterHealthy
        } else {
            End::Failed
        }
    };
    loop {
        // A frame may have been handled after cancel fired; stop before reading another.
        if cancel.is_cancelled() {
            close(&mut socket).await;
            return End::Cancelled;
        }
        let idle_deadline = tokio::time::Instant::from_std(last_seen + settings.idle_timeout);
        let msg = tokio::select! {
            m = socket.next() => m,
            _ = ping.tick() => {
                if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                    tracing::warn!(error = %e, "dingtalk stream ping failed; reconnecting");
                    return end(healthy);
                }
                continue;
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                tracing::warn!(
                    idle_secs = settings.idle_timeout.as_secs(),
                    "dingtalk stream silent for too long; reconnecting"
                );
                close(&mut socket).await;
                return end(healthy);
            }
            _ = cancel.cancelled() => {
                close(&mut socket).await;
                return End::Cancelled;
            }
        };
        let text = match msg {
            None => {
                tracing::warn!("dingtalk stream socket ended; reconnecting");
                return end(healthy);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "dingtalk stream socket failed; reconnecting");
                return end(healthy);
            }
            Some(Ok(Message::Close(frame))) => {
                tracing::info!(close = ?frame, "dingtalk stream socket closed by the gateway; reconnecting");
                return end(healthy);
            }
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
                Ok(t) => t,
                Err(_) => {
                    tracing::warn!(len = b.len(), "ignoring non-UTF-8 binary stream frame");
                    last_seen = Instant::now();
                    continue;
                }
            },
            // Pings are answered by tungstenite itself; both show the peer is alive.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                last_seen = Instant::now();
                continue;
            }
        };
        healthy = true;
        // Not raced against `cancel`: an interrupted delivery could leave the event queued
        // but unanswered. Delivery is bounded by `deliver_timeout`, so shutdown still ends.
        match handle_text(&text, sink, settings.deliver_timeout).await {
            Step::Continue => {}
            Step::Send(reply) => {
                if let Err(e) = socket.send(Message::text(reply)).await {
                    tracing::warn!(error = %e, "dingtalk stream reply failed; reconnecting (unacked events are pushed again)");
                    return End::AfterHealthy;
                }
            }
            Step::Reconnect => {
                close(&mut socket).await;
                return End::AfterHealthy;
            }
        }
        // A slow delivery must not count as silence.
        last_seen = Instant::now();
    }
}

/// What the connection does after one text frame.
enum Step {
    Continue,
    Send(String),
    Reconnect,
}

/// Parses one text frame, delivers it if it carries an event, and says what to send.
async fn handle_text(text: &str, sink: &dyn FrameSink, deliver_timeout: Duration) -> Step {
    let frame = match parse_frame(text) {
        Ok(f) => f,
        Err(e) => {
            // The content may hold personal data, so log only its shape.
            tracing::warn!(error = %e, len = text.len(), "ignoring malformed dingtalk stream frame");
            return Step::Continue;
        }
    };
    match plan(&frame) {
        Action::Reply(reply) => Step::Send(reply),
        Action::Ignore => {
            tracing::debug!(
                topic = frame.topic(),
                "ignoring dingtalk stream system frame"
            );
            Step::Continue
        }
        Action::Reconnect { reason } => {
            tracing::info!(reason = %reason, "dingtalk stream asked to reconnect");
            Step::Reconnect
        }
        Action::Deliver => {
            let delivered = tokio::time::timeout(
                deliver_timeout,
                sink.deliver(frame.kind.as_str(), &frame.headers, &frame.data),
            )
            .await;
            let failure = match &delivered {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::warn!(
                        code = e.code(),
                        message_id = %frame.message_id,
                        topic = frame.topic(),
                        "dingtalk stream frame not queued; asking for redelivery"
                    );
                    Some(e.code())
                }
                Err(_) => {
                    tracing::warn!(
                        message_id = %frame.message_id,
                        "dingtalk stream frame delivery timed out; asking for redelivery"
                    );
                    Some("timeout")
                }
            };
            Step::Send(ack(frame.kind, &frame.message_id, failure))
        }
    }
}

/// Sends a close frame, without waiting long for a peer that may be gone.
async fn close(socket: &mut Socket) {
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_text(kind: &str, headers: Value, data: &str) -> String {
        json!({"specVersion": "1.0", "type": kind, "headers": headers, "data": data}).to_string()
    }

    fn decode(reply: &str) -> Value {
        serde_json::from_str(reply).expect("reply is JSON")
    }

    fn data_of(reply: &Value) -> Value {
        serde_json::from_str(reply["data"].as_str().expect("data is a string"))
            .expect("data holds JSON")
    }

    #[test]
    fn event_frame_is_parsed_with_its_data_decoded_a_second_time() {
        let text = frame_text(
            "EVENT",
            json!({"messageId": "m1", "topic": "*", "eventId": "e1", "eventType": "calendar_event_change"}),
            r#"{"calendarEventId":"c1","changeType":"update"}"#,
        );
        let f = parse_frame(&text).expect("parses");
        assert_eq!(f.kind, FrameKind::Event);
        assert_eq!(f.message_id, "m1");
        assert_eq!(f.headers["eventId"], "e1");
        assert_eq!(f.data["calendarEventId"], "c1");
        assert_eq!(plan(&f), Action::Deliver);
    }

    #[test]
    fn callback_frame_is_delivered() {
        let text = frame_text(
            "CALLBACK",
            json!({"messageId": "m2", "topic": ROBOT_MESSAGE_TOPIC}),
            r#"{"text":{"content":"hi"}}"#,
        );
        let f = parse_frame(&text).expect("parses");
        assert_eq!(f.kind, FrameKind::Callback);
        assert_eq!(f.data["text"]["content"], "hi");
        assert_eq!(plan(&f), Action::Deliver);
    }

    #[test]
    fn data_sent_as_an_object_or_missing_is_accepted() {
        let text =
            json!({"type": "EVENT", "headers": {"messageId": "m"}, "data": {"a": 1}}).to_string();
        assert_eq!(parse_frame(&text).expect("object data").data["a"], 1);
        let text =
            json!({"type": "SYSTEM", "headers": {"messageId": "m", "topic": "x"}}).to_string();
        assert_eq!(parse_frame(&text).expect("no data").data, Value::Null);
    }

    #[test]
    fn ping_is_answered_with_the_same_message_id_and_the_data_echoed() {
        let text = frame_text(
            "SYSTEM",
            json!({"messageId": "p1", "topic": "ping", "contentType": "application/json"}),
            r#"{"opaque":"abc-123"}"#,
        );
        let f = parse_frame(&text).expect("parses");
        let Action::Reply(reply) = plan(&f) else {
            panic!("ping must be answered");
        };
        let reply = decode(&reply);
        assert_eq!(reply["code"], 200);
        assert_eq!(reply["headers"]["messageId"], "p1");
        assert_eq!(reply["headers"]["contentType"], "application/json");
        assert_eq!(reply["data"], r#"{"opaque":"abc-123"}"#);
    }

    #[test]
    fn disconnect_asks_for_a_reconnect_and_gets_no_reply() {
        let text = frame_text(
            "SYSTEM",
            json!({"messageId": "d1", "topic": "disconnect"}),
            r#"{"reason":"rebalance"}"#,
        );
        let f = parse_frame(&text).expect("parses");
        assert_eq!(
            plan(&f),
            Action::Reconnect {
                reason: "rebalance".into()
            }
        );
    }

    #[test]
    fn unknown_system_topic_is_ignored() {
        let text = frame_text(
            "SYSTEM",
            json!({"messageId": "k", "topic": "KEEPALIVE"}),
            "{}",
        );
        assert_eq!(plan(&parse_frame(&text).expect("parses")), Action::Ignore);
    }

    #[test]
    fn queued_event_is_acked_success_with_the_same_message_id() {
        let a = decode(&ack(FrameKind::Event, "m1", None));
        assert_eq!(a["code"], 200);
        assert_eq!(a["message"], "OK");
        assert_eq!(a["headers"]["messageId"], "m1");
        assert_eq!(a["headers"]["contentType"], "application/json");
        assert_eq!(data_of(&a)["status"], "SUCCESS");
    }

    #[test]
    fn event_that_could_not_be_queued_is_acked_later_for_redelivery() {
        let a = decode(&ack(FrameKind::Event, "m1", Some("store_unavailable")));
        assert_eq!(a["code"], 200);
        assert_eq!(a["headers"]["messageId"], "m1");
        let data = data_of(&a);
        assert_eq!(data["status"], "LATER");
        assert_eq!(data["message"], "store_unavailable");
    }

    #[test]
    fn queued_callback_is_acked_with_a_null_response() {
        let a = decode(&ack(FrameKind::Callback, "c1", None));
        assert_eq!(a["code"], 200);
        assert_eq!(a["headers"]["messageId"], "c1");
        assert_eq!(data_of(&a), json!({"response": null}));
    }

    #[test]
    fn callback_that_could_not_be_queued_is_answered_500() {
        let a = decode(&ack(FrameKind::Callback, "c1", Some("store_unavailable")));
        assert_eq!(a["code"], 500);
        assert_eq!(a["headers"]["messageId"], "c1");
    }

    #[test]
    fn malformed_frames_are_rejected_without_panicking() {
        let cases = [
            ("", FrameError::NotJson),
            ("not json", FrameError::NotJson),
            ("[1,2]", FrameError::NotJson),
            (r#"{"type":"EVENT"}"#, FrameError::NoMessageId),
            (r#"{"type":"EVENT","headers":[]}"#, FrameError::NoMessageId),
            (
                r#"{"type":"EVENT","headers":{"messageId":""}}"#,
                FrameError::NoMessageId,
            ),
            (
                r#"{"type":"EVENT","headers":{"messageId":5}}"#,
                FrameError::NoMessageId,
            ),
            (
                r#"{"type":"NOPE","headers":{"messageId":"m"}}"#,
                FrameError::UnknownType("NOPE".into()),
            ),
            (
                r#"{"headers":{"messageId":"m"}}"#,
                FrameError::UnknownType(String::new()),
            ),
            (
                r#"{"type":"EVENT","headers":{"messageId":"m"},"data":"{oops"}"#,
                FrameError::BadData,
            ),
            (
                r#"{"type":"EVENT","headers":{"messageId":"m"},"data":42}"#,
                FrameError::BadData,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_frame(text), Err(want), "{text:?}");
        }
    }

    #[tokio::test]
    async fn malformed_frame_is_neither_delivered_nor_answered() {
        struct Never;
        #[async_trait]
        impl FrameSink for Never {
            async fn deliver(
                &self,
                _: &str,
                _: &Map<String, Value>,
                _: &Value,
            ) -> Result<(), SinkError> {
                panic!("a malformed frame reached the sink");
            }
        }
        let step = handle_text("{\"type\":", &Never, Duration::from_secs(1)).await;
        assert!(matches!(step, Step::Continue));
    }

    #[tokio::test]
    async fn failed_delivery_is_acked_later_and_a_slow_one_times_out() {
        struct Failing;
        #[async_trait]
        impl FrameSink for Failing {
            async fn deliver(
                &self,
                _: &str,
                h: &Map<String, Value>,
                _: &Value,
            ) -> Result<(), SinkError> {
                if h["messageId"] == "slow" {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    return Ok(());
                }
                Err(SinkError::StoreUnavailable("down".into()))
            }
        }
        let text = frame_text("EVENT", json!({"messageId": "m"}), "{}");
        let Step::Send(reply) = handle_text(&text, &Failing, Duration::from_secs(1)).await else {
            panic!("an event is always answered");
        };
        assert_eq!(data_of(&decode(&reply))["status"], "LATER");

        let text = frame_text("EVENT", json!({"messageId": "slow"}), "{}");
        let Step::Send(reply) = handle_text(&text, &Failing, Duration::from_millis(20)).await
        else {
            panic!("an event is always answered");
        };
        assert_eq!(data_of(&decode(&reply))["status"], "LATER");
    }

    #[test]
    fn backoff_doubles_stays_within_jitter_bounds_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for attempt in 0..40 {
            let full = (1000u64 << attempt.min(20)).min(60_000);
            let d = backoff_delay(base, max, attempt).as_millis() as u64;
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} ms");
        }
    }

    #[test]
    fn connect_url_appends_the_url_encoded_ticket() {
        let u = connect_url("wss://gw.example/connect", "a+b/c=").expect("valid");
        assert_eq!(u.as_str(), "wss://gw.example/connect?ticket=a%2Bb%2Fc%3D");
        let u = connect_url("ws://gw.example/connect?x=1", "t").expect("valid");
        assert_eq!(u.as_str(), "ws://gw.example/connect?x=1&ticket=t");
        assert!(connect_url("https://gw.example/", "t").is_err());
        assert!(connect_url("not a url", "t").is_err());
    }

    #[test]
    fn secret_is_masked_in_logged_upstream_bodies() {
        let out = log_excerpt(r#"{"clientSecret":"s3cr3t"}"#, "s3cr3t");
        assert!(!out.contains("s3cr3t"));
        assert!(out.contains("[REDACTED]"));
    }

    #[test]
    fn default_settings_subscribe_to_all_events_and_robot_messages() {
        let s = StreamSettings::new("id", SecretString::from("hunter2".to_string()));
        assert_eq!(
            s.subscriptions,
            vec![
                ("EVENT".to_string(), "*".to_string()),
                ("CALLBACK".to_string(), ROBOT_MESSAGE_TOPIC.to_string())
            ]
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
