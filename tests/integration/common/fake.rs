//! A programmable local HTTP server: records every request and answers with what the
//! test's responder returns. Graph and DingTalk fakes grow out of it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// One received request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    /// The body as JSON (panics in the test when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    /// A header value (names are lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub struct FakeReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl FakeReply {
    /// `status` with an empty JSON object.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: "{}".into(),
            delay: Duration::ZERO,
        }
    }

    /// 200 with this JSON body.
    pub fn json(body: serde_json::Value) -> Self {
        Self {
            body: body.to_string(),
            ..Self::status(200)
        }
    }

    /// Answers only after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> FakeReply + Send + Sync>;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    responder: Mutex<Responder>,
}

/// A running fake.
pub struct FakeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeServer {
    /// Starts a fake answering every request with `responder`.
    pub fn start(responder: impl Fn(&Recorded) -> FakeReply + Send + Sync + 'static) -> FakeServer {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            responder: Mutex::new(Arc::new(responder)),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake");
                let addr = listener.local_addr().expect("addr");
                let data = web::Data::from(s);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(256 * 1024 * 1024))
                        .default_service(web::to(handle))
                })
                .workers(2)
                .disable_signals()
                .listen(listener)
                .expect("listen")
                .run();
                let _ = tx.send((addr, server.handle()));
                let _ = server.await;
            });
        });
        let (addr, handle) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake starts");
        FakeServer {
            addr,
            shared,
            handle,
        }
    }

    /// A fake that answers 200 `{}` to everything.
    pub fn ok() -> FakeServer {
        Self::start(|_| FakeReply::status(200))
    }

    /// Base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// Replaces the responder.
    pub fn respond_with(&self, responder: impl Fn(&Recorded) -> FakeReply + Send + Sync + 'static) {
        *self.shared.responder.lock().expect("responder") = Arc::new(responder);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        // The stop command is sent at once; its completion future is not needed.
        drop(self.handle.stop(false));
    }
}

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let recorded = Recorded {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    shared
        .requests
        .lock()
        .expect("requests")
        .push(recorded.clone());
    let responder = shared.responder.lock().expect("responder").clone();
    let reply = responder(&recorded);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut builder = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(reply.status).expect("valid status"),
    );
    builder.content_type("application/json");
    for (k, v) in &reply.headers {
        builder.insert_header((k.as_str(), v.as_str()));
    }
    builder.body(reply.body)
}
