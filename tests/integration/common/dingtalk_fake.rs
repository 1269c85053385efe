//! A stateful fake of DingTalk's server API (access tokens, calendar events, todos, users,
//! robot message files) and the app credentials it accepts, plus helpers that post
//! DingTalk events to the service the way DingTalk does.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use dingbridge::dingtalk::crypto::{self, CallbackCrypto};
use serde_json::{Value, json};

use super::{FakeReply, FakeServer, TestApp};

/// Callback token of the app's encrypted HTTP push.
pub const TOKEN: &str = "tokenABC123";
/// Callback AES key of the app's encrypted HTTP push.
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// The app key (also the owner id in encrypted pushes).
pub const APP_KEY: &str = "dingxxxxxxxxxxxx";
/// The app secret the fake's token endpoint accepts.
pub const APP_SECRET: &str = "dt-app-secret-QWERTY-0987";
/// The access token the fake issues.
pub const DT_ACCESS_TOKEN: &str = "dt-access-token-ZXCV-5678";

/// DingTalk's API: tokens, calendar events, todos, users, robot message files.
pub struct DingTalk {
    /// The HTTP server (what it received).
    pub server: FakeServer,
    /// Calendar events by id, as `GET …/events/{id}` answers them.
    pub events: Arc<Mutex<HashMap<String, Value>>>,
    /// Todos by id.
    pub todos: Arc<Mutex<HashMap<String, Value>>>,
    /// Robot message files by download code, served at `/files/{code}`.
    pub files: Arc<Mutex<HashMap<String, Arc<String>>>>,
    /// Todo creates still to store and then answer 504 (a gateway timing out late).
    pub lose_todo_answers: Arc<std::sync::atomic::AtomicUsize>,
}

impl DingTalk {
    /// Starts the fake on a random loopback port.
    pub fn start() -> DingTalk {
        let events: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let todos: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let files: Arc<Mutex<HashMap<String, Arc<String>>>> = Arc::default();
        let (e, t, f) = (events.clone(), todos.clone(), files.clone());
        let lose_todo_answers: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let lose = lose_todo_answers.clone();
        let server = FakeServer::start(move |r| {
            let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
            match (r.method.as_str(), segs.as_slice()) {
                ("GET", ["gettoken"]) if !r.query.contains(&format!("appsecret={APP_SECRET}")) => {
                    FakeReply::json(
                        json!({"errcode": 40089, "errmsg": "不合法的appkey或appSecret"}),
                    )
                }
                ("GET", ["gettoken"]) => FakeReply::json(
                    json!({"errcode": 0, "access_token": DT_ACCESS_TOKEN, "expires_in": 7200}),
                ),
                ("GET", ["v1.0", "calendar", "users", _, "calendars", _, "events", id]) => {
                    match e.lock().expect("events").get(*id) {
                        Some(v) => FakeReply::json(v.clone()),
                        None => FakeReply::status(404),
                    }
                }
                ("GET", ["v1.0", "todo", "users", _, "tasks", "sources", source]) => {
                    let todos = t.lock().expect("todos");
                    match todos.values().find(|v| v["sourceId"] == *source) {
                        Some(v) => FakeReply::json(v.clone()),
                        None => FakeReply::status(404),
                    }
                }
                ("POST", ["v1.0", "todo", "users", _, "tasks"]) => {
                    let mut todos = t.lock().expect("todos");
                    // Never reused, also after deletes.
                    let id = format!("dttask-{}", uuid::Uuid::new_v4().simple());
                    let mut task = r.json();
                    task["id"] = json!(id);
                    task["done"] = json!(false);
                    todos.insert(id, task.clone());
                    let lost = lose
                        .fetch_update(
                            std::sync::atomic::Ordering::SeqCst,
                            std::sync::atomic::Ordering::SeqCst,
                            |n| n.checked_sub(1),
                        )
                        .is_ok();
                    if lost {
                        return FakeReply::status(504);
                    }
                    FakeReply::json(task)
                }
                ("PUT", ["v1.0", "todo", "users", _, "tasks", id]) => {
                    let mut todos = t.lock().expect("todos");
                    match todos.get_mut(*id) {
                        Some(v) => {
                            if let (Some(o), Some(changes)) =
                                (v.as_object_mut(), r.json().as_object())
                            {
                                for (k, c) in changes {
                                    o.insert(k.clone(), c.clone());
                                }
                            }
                            FakeReply::json(json!({"result": true}))
                        }
                        None => FakeReply::status(404),
                    }
                }
                ("DELETE", ["v1.0", "todo", "users", _, "tasks", id]) => {
                    match t.lock().expect("todos").remove(*id) {
                        Some(_) => FakeReply::json(json!({"result": true})),
                        None => FakeReply::status(404),
                    }
                }
                ("GET", ["v1.0", "todo", "users", _, "tasks", id]) => {
                    match t.lock().expect("todos").get(*id) {
                        Some(v) => FakeReply::json(v.clone()),
                        None => FakeReply::status(404),
                    }
                }
                ("POST", ["topapi", "v2", "user", "get"]) => {
                    let uid = r.json()["userid"].as_str().unwrap_or("").to_string();
                    FakeReply::json(json!({"errcode": 0, "result": {
                        "userid": uid, "name": format!("User {uid}"),
                        "email": format!("{uid}@example.com"), "title": "Broker"}}))
                }
                ("POST", ["v1.0", "robot", "messageFiles", "download"]) => {
                    let code = r.json()["downloadCode"].as_str().unwrap_or("").to_string();
                    let host = r.header("host").unwrap_or("").to_string();
                    FakeReply::json(json!({"downloadUrl": format!("http://{host}/files/{code}")}))
                }
                ("GET", ["files", code]) => match f.lock().expect("files").get(*code) {
                    Some(body) => FakeReply {
                        status: 200,
                        headers: vec![],
                        body: body.as_ref().clone(),
                        delay: Duration::ZERO,
                    }
                    .header("content-type", "application/pdf"),
                    None => FakeReply::status(404),
                },
                _ => FakeReply::status(404),
            }
        });
        DingTalk {
            server,
            events,
            todos,
            files,
            lose_todo_answers,
        }
    }

    /// The base URL of both DingTalk APIs (`api` and `oapi`).
    pub fn base(&self) -> String {
        self.server.url("")
    }

    /// Every todo DingTalk holds.
    pub fn all_todos(&self) -> Vec<Value> {
        self.todos
            .lock()
            .expect("todos")
            .values()
            .cloned()
            .collect()
    }
}

/// Posts one encrypted HTTP push and expects DingTalk's `success` answer.
pub async fn push(app: &TestApp, plaintext: &Value) {
    let c = CallbackCrypto::new(TOKEN, AES_KEY, APP_KEY).expect("crypto");
    let encrypt = c.encrypt(&plaintext.to_string());
    let ts = dingbridge::store::now_ms().to_string();
    let sig = crypto::signature(TOKEN, &ts, "nonce7", &encrypt);
    let resp = app
        .http
        .post(app.url(&format!(
            "/webhooks/dingtalk/events?msg_signature={sig}&timestamp={ts}&nonce=nonce7"
        )))
        .json(&json!({ "encrypt": encrypt }))
        .send()
        .await
        .expect("post");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

/// A group message as the app robot receives it in `conversation`.
pub fn group_message(msg_id: &str, conversation: &str, text: &str) -> Value {
    json!({
        "msgtype": "text", "text": {"content": text}, "msgId": msg_id,
        "createAt": 1_764_547_200_000i64, "conversationType": "2",
        "conversationId": conversation, "conversationTitle": "报关 Customs",
        "senderNick": "王五", "senderStaffId": "staff-9", "robotCode": "robot-code-1",
        "chatbotUserId": "bot-1",
    })
}
