//! A fake DingTalk Stream gateway: a registration endpoint issuing single-use tickets
//! and a WebSocket server speaking the documented frames.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::{
    WebSocketStream, accept_hdr_async,
    tungstenite::{
        Message,
        handshake::server::{ErrorResponse, Request, Response},
        http,
    },
};

use super::{FakeReply, FakeServer};

pub const CLIENT_ID: &str = "ding-test-client";
pub const CLIENT_SECRET: &str = "the-real-secret-0123456789";

#[derive(Default)]
pub struct Tickets {
    pub issued: HashSet<String>,
    pub used: HashSet<String>,
    /// Connection attempts refused for a reused or unknown ticket.
    pub refused: usize,
}

/// One accepted WebSocket connection, as the gateway sees it.
pub struct Conn {
    pub ticket: String,
    pub ws: WebSocketStream<tokio::net::TcpStream>,
}

pub struct Gateway {
    pub registration: FakeServer,
    pub ws_addr: SocketAddr,
    pub tickets: Arc<Mutex<Tickets>>,
    pub conns: mpsc::UnboundedReceiver<Conn>,
}

impl Gateway {
    /// Starts both halves; registration answers 401 `invalidClientIdOrSecret` to wrong
    /// credentials, as DingTalk does.
    pub async fn start() -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
        let ws_addr = listener.local_addr().expect("ws addr");
        let tickets = Arc::new(Mutex::new(Tickets::default()));

        let book = tickets.clone();
        let registration = FakeServer::start(move |req| {
            if req.method != "POST" || req.path != "/v1.0/gateway/connections/open" {
                return FakeReply::status(404);
            }
            let body = req.json();
            if body["clientId"] != CLIENT_ID || body["clientSecret"] != CLIENT_SECRET {
                return FakeReply {
                    body: json!({
                        "code": "invalidClientIdOrSecret",
                        "message": "无效的clientId或者clientSecret",
                        "requestid": "r-1"
                    })
                    .to_string(),
                    ..FakeReply::status(401)
                };
            }
            let mut book = book.lock().expect("tickets");
            // Characters that must be URL-encoded, to prove the client encodes the ticket.
            let ticket = format!("t+{}/{}=", book.issued.len() + 1, uuid::Uuid::new_v4());
            book.issued.insert(ticket.clone());
            FakeReply::json(json!({
                "endpoint": format!("ws://{ws_addr}/connect"),
                "ticket": ticket,
            }))
        });

        let (tx, conns) = mpsc::unbounded_channel();
        let book = tickets.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let book = book.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let slot = Arc::new(Mutex::new(None::<String>));
                    let seen = slot.clone();
                    // The error type is fixed by tungstenite's handshake callback.
                    #[allow(clippy::result_large_err)]
                    let check = move |req: &Request,
                                      resp: Response|
                          -> Result<Response, ErrorResponse> {
                        let ticket =
                            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                                .find(|(k, _)| k == "ticket")
                                .map(|(_, v)| v.into_owned());
                        let mut book = book.lock().expect("tickets");
                        match ticket {
                            Some(t) if book.issued.contains(&t) && book.used.insert(t.clone()) => {
                                *seen.lock().expect("slot") = Some(t);
                                Ok(resp)
                            }
                            _ => {
                                book.refused += 1;
                                Err(http::Response::builder()
                                    .status(401)
                                    .body(Some("unknown or used ticket".to_string()))
                                    .expect("response"))
                            }
                        }
                    };
                    if let Ok(ws) = accept_hdr_async(tcp, check).await {
                        let ticket = slot.lock().expect("slot").clone().expect("ticket checked");
                        let _ = tx.send(Conn { ticket, ws });
                    }
                });
            }
        });
        Gateway {
            registration,
            ws_addr,
            tickets,
            conns,
        }
    }

    pub fn api_base(&self) -> String {
        self.registration.url("")
    }

    pub async fn next_conn(&mut self) -> Conn {
        tokio::time::timeout(Duration::from_secs(5), self.conns.recv())
            .await
            .expect("the client connects within 5 s")
            .expect("gateway running")
    }

    pub fn registrations(&self) -> Vec<Value> {
        self.registration
            .requests()
            .iter()
            .map(|r| r.json())
            .collect()
    }
}

impl Conn {
    pub async fn send(&mut self, kind: &str, headers: Value, data: Value) {
        let frame = json!({
            "specVersion": "1.0",
            "type": kind,
            "headers": headers,
            "data": data.to_string(),
        });
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("gateway sends");
    }

    pub async fn send_event(&mut self, message_id: &str, event_id: &str) {
        let headers = json!({
            "topic": "*",
            "messageId": message_id,
            "contentType": "application/json",
            "time": "1764000000000",
            "eventType": "calendar_event_change",
            "eventId": event_id,
            "eventCorpId": "ding-corp",
            "eventBornTime": "1764000000000",
            "eventUnifiedAppId": "app-1",
        });
        let data = json!({
            "eventType": "calendar_event_change",
            "eventId": event_id,
            "data": {"calendarEventId": format!("cal-{event_id}"), "changeType": "update"},
        });
        self.send("EVENT", headers, data).await;
    }

    /// The next text frame from the client, as JSON.
    pub async fn reply(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .expect("the client answers within 5 s")
                .expect("socket open")
                .expect("socket healthy");
            if let Message::Text(t) = msg {
                return serde_json::from_str(t.as_str()).expect("reply is JSON");
            }
        }
    }

    /// Waits until the client closes the socket; returns the control frames seen before.
    pub async fn closed_by_client(&mut self) -> Vec<Message> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next())
                .await
                .expect("the client closes within 5 s")
            {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return seen,
                Some(Ok(Message::Text(t))) => panic!("unexpected frame before close: {t}"),
                Some(Ok(m)) => seen.push(m),
            }
        }
    }
}

pub fn data_of(reply: &Value) -> Value {
    serde_json::from_str(reply["data"].as_str().expect("data is a string")).expect("data is JSON")
}
