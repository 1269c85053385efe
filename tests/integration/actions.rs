//! The Outlook and DingTalk actions through the running binary against the Graph fake
//! and a DingTalk fake: each action, the dropdowns read from the routes and from Graph,
//! Idempotency-Key replay reaching the upstream once, the mailbox allow-list (403) and
//! upstream throttling (429 with an integer `Retry-After`).

use crate::common;

use common::{
    FakeReply, FakeServer, TestApp,
    env::Env,
    error_code,
    graph_fake::{Failure, GraphFake, GraphFakeConfig},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A well-formed API key given to the service as a bootstrap key (memory store).
const KEY: &str =
    "dbk_0123456789ab_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

const ALICE: &str = "alice@contoso.com";
const OPS: &str = "ops@contoso.com";

fn bootstrap_entry() -> String {
    format!(
        "zapier:actions+triggers:{}",
        hex::encode(Sha256::digest(KEY.as_bytes()))
    )
}

const ROUTES: &str = r#"
[[routes]]
name = "customs"
mailbox = "ops@contoso.com"
kinds = ["message", "event", "todo"]
direction = "to_outlook"
[routes.dingtalk]
conversation_id = "cidCustoms"
robot_code = "dingrobotcustoms"
union_id = "union-ops"
"#;

/// The service with the routes above, `api.mailboxes = alice`, and the given fakes.
fn spawn(graph: Option<&GraphFake>, dingtalk: Option<&FakeServer>) -> TestApp {
    let mut env = Env::new()
        .config_toml(ROUTES)
        .bootstrap_keys(&bootstrap_entry())
        .set("DINGBRIDGE_API_MAILBOXES", &format!("{ALICE}|Alice"));
    if let Some(g) = graph {
        env = env.graph(g);
    }
    if let Some(d) = dingtalk {
        env = env
            .dingtalk_api(&d.url(""))
            .set("DINGBRIDGE_DINGTALK_APP_KEY", "dingappkey")
            .set("DINGBRIDGE_DINGTALK_APP_SECRET", "dingappsecret");
    }
    env.spawn()
}

async fn act(app: &TestApp, action: &str, key: Option<&str>, input: &Value) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(&format!("/v1/actions/{action}")))
        .bearer_auth(KEY)
        .json(input);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.expect("action request")
}

async fn ok(app: &TestApp, action: &str, input: Value) -> Value {
    let resp = act(app, action, None, &input).await;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 200, "{action}: {body}");
    body
}

async fn get(app: &TestApp, path: &str) -> Value {
    let resp = app
        .http
        .get(app.url(path))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.expect("JSON")
}

fn assert_iso(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outlook_action_works_against_the_graph_fake() {
    let graph = GraphFake::start(GraphFakeConfig::default());
    let app = &spawn(Some(&graph), None);

    let sent = ok(
        app,
        "outlook.send_mail",
        json!({"mailbox": ALICE, "to": "bob@example.com", "subject": "Hello", "body": "<b>hi</b>", "body_type": "html"}),
    )
    .await;
    assert!(sent["id"].is_string());
    assert_iso(&sent["sent_at"]);
    let mails = graph.sent_mails(ALICE);
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["message"]["subject"], "Hello");

    // The route's mailbox may be used too; the mailbox is matched case-insensitively.
    let event = ok(
        app,
        "outlook.create_event",
        json!({"mailbox": "OPS@contoso.com", "subject": "Customs review", "start": "2026-03-02T10:00:00+08:00",
               "end": "2026-03-02T11:00:00+08:00", "location": "Room 1", "attendees": ["bob@example.com"]}),
    )
    .await;
    let event_id = event["id"].as_str().expect("event id").to_string();
    assert_eq!(event["mailbox"], OPS);
    assert_iso(&event["start"]);
    let stored = graph.events(OPS);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["start"]["dateTime"], "2026-03-02T02:00:00");
    assert!(stored[0]["transactionId"].is_string());

    let contact = ok(
        app,
        "outlook.create_contact",
        json!({"mailbox": ALICE, "given_name": "Li", "surname": "Wei", "email": "li.wei@example.com", "company_name": "ACME"}),
    )
    .await;
    assert!(contact["id"].is_string());
    assert_eq!(contact["display_name"], "Li Wei");
    assert_eq!(graph.contacts(ALICE).len(), 1);

    let task = ok(
        app,
        "outlook.create_task",
        json!({"mailbox": ALICE, "title": "File the declaration", "due": "2026-03-05T17:00:00+08:00", "importance": "high"}),
    )
    .await;
    assert!(task["id"].is_string());
    assert_iso(&task["due"]);
    let tasks = graph.all_tasks(ALICE);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["title"], "File the declaration");

    let msg_id = graph.seed_message(
        ALICE,
        "inbox",
        json!({"subject": "Invoice 42", "isRead": false,
               "from": {"emailAddress": {"address": "vendor@example.com", "name": "Vendor"}},
               "body": {"contentType": "text", "content": "pay"}}),
    );
    graph.seed_message(
        ALICE,
        "inbox",
        json!({"subject": "Lunch?", "isRead": false,
               "from": {"emailAddress": {"address": "friend@example.com", "name": "Friend"}}}),
    );
    let found = ok(
        app,
        "outlook.find_mail",
        json!({"mailbox": ALICE, "query": "invoice", "from": "vendor@example.com", "unread_only": true}),
    )
    .await;
    let found = found.as_array().expect("array");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["id"], msg_id.as_str());
    assert_eq!(found[0]["from"], "vendor@example.com");
    assert_iso(&found[0]["received_at"]);

    let marked = ok(
        app,
        "outlook.mark_read",
        json!({"mailbox": ALICE, "message_id": msg_id}),
    )
    .await;
    assert_eq!(marked["is_read"], true);
    let m = graph
        .all_messages(ALICE)
        .into_iter()
        .find(|m| m["id"] == msg_id.as_str())
        .expect("message");
    assert_eq!(m["isRead"], true);
    let unread = ok(
        app,
        "outlook.find_mail",
        json!({"mailbox": ALICE, "unread_only": true}),
    )
    .await;
    assert_eq!(unread.as_array().map(Vec::len), Some(1), "{unread}");

    // A message that does not exist is the field's fault, not a gateway error.
    let resp = act(
        app,
        "outlook.mark_read",
        None,
        &json!({"mailbox": ALICE, "message_id": "AAMkNope"}),
    )
    .await;
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"), "{body}");
    assert!(body["error"]["details"]["fields"]["message_id"].is_string());

    let events = ok(
        app,
        "outlook.find_event",
        json!({"mailbox": OPS, "query": "customs", "start_after": "2026-03-01T00:00:00Z", "start_before": "2026-03-03T00:00:00Z"}),
    )
    .await;
    let events = events.as_array().expect("array");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["id"], event_id.as_str());
    assert_eq!(events[0]["start"], "2026-03-02T02:00:00Z");
    let none = ok(
        app,
        "outlook.find_event",
        json!({"mailbox": OPS, "start_after": "2026-04-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(none, json!([]));

    // Dropdowns: configured and route mailboxes; calendars and lists read from Graph.
    let boxes = get(app, "/v1/options/mailboxes").await;
    assert_eq!(
        boxes,
        json!([{"id": ALICE, "label": "Alice"}, {"id": OPS, "label": "ops@contoso.com (route customs)"}])
    );
    let convs = get(app, "/v1/options/dingtalk-conversations").await;
    assert_eq!(convs, json!([{"id": "cidCustoms", "label": "customs"}]));
    let cals = get(app, &format!("/v1/options/calendars?mailbox={OPS}")).await;
    assert_eq!(cals.as_array().map(Vec::len), Some(1), "{cals}");
    assert_eq!(cals[0]["label"], "Calendar");
    let lists = get(app, &format!("/v1/options/todo-lists?mailbox={ALICE}")).await;
    assert!(
        lists
            .as_array()
            .expect("array")
            .iter()
            .any(|l| l["id"] == task["list_id"]),
        "{lists} / {task}"
    );
    let me = get(app, "/v1/me").await;
    assert_eq!(me["routes"], json!(["customs"]));

    graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_key_reaches_graph_once_and_other_mailboxes_are_forbidden() {
    let graph = GraphFake::start(GraphFakeConfig::default());
    let app = &spawn(Some(&graph), None);
    let input = json!({"mailbox": ALICE, "subject": "Once", "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T10:30:00Z"});
    let first = act(app, "outlook.create_event", Some("trigger-item-7"), &input).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("JSON");
    let again = act(app, "outlook.create_event", Some("trigger-item-7"), &input).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("JSON");
    assert_eq!(first, again);
    let posts = graph
        .requests_to("/events")
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(
        posts,
        1,
        "Graph saw one create: {:?}",
        graph
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    assert_eq!(graph.events(ALICE).len(), 1);

    for (action, input) in [
        (
            "outlook.send_mail",
            json!({"mailbox": "ceo@contoso.com", "to": "x@example.com", "subject": "s", "body": "b"}),
        ),
        ("outlook.find_mail", json!({"mailbox": "ceo@contoso.com"})),
    ] {
        let resp = act(app, action, None, &input).await;
        let (status, code, body) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (403, "forbidden"), "{body}");
        assert!(
            body["error"]["details"]["fields"]["mailbox"]
                .as_str()
                .is_some_and(|m| m.contains("ceo@contoso.com")),
            "{body}"
        );
    }
    let resp = app
        .http
        .get(app.url("/v1/options/calendars?mailbox=ceo@contoso.com"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    assert!(graph.requests_to("ceo").is_empty(), "nothing touched ceo@");
    graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_throttling_is_a_429_with_integer_retry_after() {
    let graph = GraphFake::start(GraphFakeConfig::default());
    let app = spawn(Some(&graph), None);
    graph.fail_next(
        Some("POST"),
        "/users/",
        5,
        Failure::Status {
            status: 429,
            code: "ApplicationThrottled".into(),
            retry_after: Some("30".into()),
        },
    );
    let resp = act(
        &app,
        "outlook.send_mail",
        Some("throttled-1"),
        &json!({"mailbox": ALICE, "to": "bob@example.com", "subject": "s", "body": "b"}),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let after = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(after.parse::<u64>().ok(), Some(30), "{after}");
    let (_, code, _) = error_code(resp).await;
    assert_eq!(code, "rate_limited");
    assert!(graph.sent_mails(ALICE).is_empty());
}

/// A DingTalk fake: token, app robot sends, calendar and todo; `throttle` makes the
/// todo create answer 429.
fn dingtalk_fake() -> FakeServer {
    FakeServer::start(|r| {
        let p = r.path.as_str();
        match (r.method.as_str(), p) {
            ("GET", "/gettoken") => FakeReply::json(
                json!({"errcode": 0, "errmsg": "ok", "access_token": "dt-token", "expires_in": 7200}),
            ),
            ("POST", "/v1.0/robot/groupMessages/send") => {
                FakeReply::json(json!({"processQueryKey": "pqk-group-1"}))
            }
            ("POST", "/v1.0/robot/oToMessages/batchSend") => FakeReply::json(
                json!({"processQueryKey": "pqk-user-1", "invalidStaffIdList": ["ghost"], "flowControlledStaffIdList": []}),
            ),
            ("POST", "/robot/send") => FakeReply::json(json!({"errcode": 0, "errmsg": "ok"})),
            ("POST", p) if p.ends_with("/calendars/primary/events") => {
                let body = r.json();
                FakeReply::json(
                    json!({"id": "dt-event-1", "summary": body["summary"], "start": body["start"], "end": body["end"]}),
                )
            }
            ("GET", p) if p.contains("/tasks/sources/") => FakeReply {
                body: json!({"code": "notFound", "message": "no task", "requestid": "rq-1"})
                    .to_string(),
                ..FakeReply::status(404)
            },
            ("POST", p) if p.ends_with("/tasks") => {
                let body = r.json();
                if body["subject"] == "throttle me" {
                    return FakeReply {
                        body: json!({"code": "Throttling.Api", "message": "slow down", "requestid": "rq-2"})
                            .to_string(),
                        ..FakeReply::status(429)
                    };
                }
                FakeReply::json(
                    json!({"id": "dt-todo-1", "subject": body["subject"], "createdTime": 1772420400000i64}),
                )
            }
            _ => FakeReply::status(404),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dingtalk_action_works_against_a_fake() {
    let dt = dingtalk_fake();
    let app = &spawn(None, Some(&dt));

    let group = ok(
        app,
        "dingtalk.send_message",
        json!({"target": "group", "open_conversation_id": "cidCustoms", "text": "Shipment cleared"}),
    )
    .await;
    assert_eq!(group["id"], "pqk-group-1");
    assert_iso(&group["sent_at"]);
    let elsewhere = act(
        app,
        "dingtalk.send_message",
        None,
        &json!({"target": "group", "open_conversation_id": "cidSomeoneElse", "text": "x"}),
    )
    .await;
    let (status, code, body) = common::error_code(elsewhere).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{body}");
    assert!(body["error"]["details"]["fields"]["open_conversation_id"].is_string());
    let sent = dt
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1.0/robot/groupMessages/send")
        .expect("group send");
    assert_eq!(sent.header("x-acs-dingtalk-access-token"), Some("dt-token"));
    let body = sent.json();
    assert_eq!(body["robotCode"], "dingrobotcustoms", "the route's robot");
    assert_eq!(body["openConversationId"], "cidCustoms");
    assert_eq!(body["msgKey"], "sampleText");
    let param: Value =
        serde_json::from_str(body["msgParam"].as_str().expect("string")).expect("json");
    assert_eq!(param["content"], "Shipment cleared");

    let user = ok(
        app,
        "dingtalk.send_message",
        json!({"target": "user", "user_ids": ["u1", "ghost"], "msgtype": "markdown", "title": "T", "text": "**hi**"}),
    )
    .await;
    assert_eq!(user["id"], "pqk-user-1");
    assert_eq!(user["invalid_user_ids"], "ghost");
    let body = dt
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1.0/robot/oToMessages/batchSend")
        .expect("user send")
        .json();
    assert_eq!(body["msgKey"], "sampleMarkdown");
    assert_eq!(body["userIds"], json!(["u1", "ghost"]));

    let robot = ok(
        app,
        "dingtalk.send_message",
        json!({"target": "robot", "webhook_url": "https://oapi.dingtalk.com/robot/send?access_token=tok9", "text": "ping"}),
    )
    .await;
    assert_eq!(robot["target"], "robot");
    assert!(dt.requests().iter().any(|r| r.path == "/robot/send"));

    let resp = act(
        app,
        "dingtalk.create_event",
        Some("evt-key-1"),
        &json!({"summary": "Customs call", "start": "2026-03-02T10:00:00+08:00", "end": "2026-03-02T11:00:00+08:00", "attendee_user_ids": ["union-b"]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let event: Value = resp.json().await.expect("JSON");
    assert_eq!(event["id"], "dt-event-1");
    assert_eq!(event["user_id"], "union-ops", "the route's user");
    assert_iso(&event["start"]);
    let create = dt
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/calendars/primary/events"))
        .expect("calendar create");
    assert_eq!(
        create.path,
        "/v1.0/calendar/users/union-ops/calendars/primary/events"
    );
    let token = create
        .header("x-client-token")
        .expect("x-client-token")
        .to_string();
    assert!(!token.is_empty());
    assert_eq!(create.json()["attendees"][0]["id"], "union-b");

    let todo_input = json!({"subject": "Sign the form", "due": "2026-03-05T18:00:00+08:00", "executor_user_ids": ["union-ops"]});
    let todo = act(app, "dingtalk.create_todo", Some("todo-key-1"), &todo_input).await;
    assert_eq!(todo.status(), 200);
    let todo: Value = todo.json().await.expect("JSON");
    assert_eq!(todo["id"], "dt-todo-1");
    assert_iso(&todo["created_at"]);
    let again = act(app, "dingtalk.create_todo", Some("todo-key-1"), &todo_input).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("JSON");
    assert_eq!(again, todo);
    let creates: Vec<_> = dt
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1.0/todo/users/union-ops/tasks")
        .collect();
    assert_eq!(creates.len(), 1, "DingTalk saw one todo create");
    let task = creates[0].json();
    assert_eq!(task["sourceId"], todo["source_id"]);
    assert_eq!(task["dueTime"], 1772704800000i64);

    // Throttled upstream: 429 with an integer Retry-After.
    let resp = act(
        app,
        "dingtalk.create_todo",
        None,
        &json!({"subject": "throttle me"}),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let after = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(after.parse::<u64>().is_ok_and(|s| s >= 1), "{after}");
    let (_, code, body) = error_code(resp).await;
    assert_eq!(code, "rate_limited");
    assert_eq!(body["error"]["details"]["dingtalk_code"], "Throttling.Api");

    // Without Graph, Outlook actions still answer not_configured.
    let resp = act(app, "outlook.find_mail", None, &json!({"mailbox": ALICE})).await;
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (404, "not_configured"));
}

/// Runs `action` the way Zapier retries a failed step: the same Idempotency-Key, up to
/// four tries, until it answers 200; the statuses seen.
async fn retried_like_a_zap(app: &TestApp, action: &str, input: &Value) -> Vec<u16> {
    let key = format!("zap-{action}");
    let mut answers = Vec::new();
    for _ in 0..4 {
        let resp = act(app, action, Some(&key), input).await;
        answers.push(resp.status().as_u16());
        if resp.status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    answers
}

/// A Zap step whose create was stored by Graph but answered 504 (or cut off) is retried
/// by Zapier under the same Idempotency-Key: each action leaves exactly one item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_retried_after_a_stored_then_lost_answer_leaves_exactly_one_item() {
    let cases = [
        (
            "outlook.send_mail",
            json!({"mailbox": ALICE, "to": "bob@example.com", "subject": "Once", "body": "b"}),
        ),
        (
            "outlook.create_event",
            json!({"mailbox": ALICE, "subject": "Once", "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T10:30:00Z"}),
        ),
        (
            "outlook.create_contact",
            json!({"mailbox": ALICE, "given_name": "Li", "email": "li@example.com"}),
        ),
        (
            "outlook.create_task",
            json!({"mailbox": ALICE, "title": "Once"}),
        ),
    ];
    for failure in [
        Failure::ApplyThenStatus { status: 504 },
        Failure::ApplyThenDrop,
    ] {
        let graph = GraphFake::start(GraphFakeConfig::default());
        let app = spawn(Some(&graph), None);
        for (action, input) in &cases {
            // Every create POST of this action fails once after being applied.
            for path in [
                "/messages",
                "/send",
                "/sendMail",
                "/events",
                "/contacts",
                "/tasks",
            ] {
                graph.fail_next(Some("POST"), path, 1, failure.clone());
            }
            let answers = retried_like_a_zap(&app, action, input).await;
            assert_eq!(
                answers.last(),
                Some(&200),
                "{action} {failure:?}: {answers:?}"
            );
        }
        assert_eq!(graph.sent_mails(ALICE).len(), 1, "{failure:?}: mails");
        assert_eq!(graph.events(ALICE).len(), 1, "{failure:?}: events");
        assert_eq!(graph.contacts(ALICE).len(), 1, "{failure:?}: contacts");
        assert_eq!(graph.all_tasks(ALICE).len(), 1, "{failure:?}: tasks");
        graph.assert_no_violations();
    }
}

/// DingTalk's side of the same promise: a todo create stored then answered 504 is found
/// by its `sourceId` on the retry, and a calendar create repeated with the same
/// `x-client-token` is the same request for DingTalk (its documented idempotency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dingtalk_actions_retried_after_a_stored_then_lost_answer_leave_one_item() {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
    };
    let todos: Arc<Mutex<Vec<Value>>> = Arc::default();
    let events: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let lost: Arc<Mutex<Vec<&'static str>>> = Arc::new(Mutex::new(vec!["todo", "event"]));
    let (t, e, l) = (todos.clone(), events.clone(), lost.clone());
    let lose = move |what: &str| {
        let mut l = l.lock().expect("lost");
        let hit = l.iter().position(|w| *w == what);
        hit.map(|i| l.remove(i)).is_some()
    };
    let dt = FakeServer::start(move |r| {
        let p = r.path.as_str();
        match (r.method.as_str(), p) {
            ("GET", "/gettoken") => FakeReply::json(
                json!({"errcode": 0, "errmsg": "ok", "access_token": "dt-token", "expires_in": 7200}),
            ),
            ("GET", p) if p.contains("/tasks/sources/") => {
                let source = p.rsplit('/').next().unwrap_or_default();
                match t
                    .lock()
                    .expect("todos")
                    .iter()
                    .find(|x| x["sourceId"] == source)
                {
                    Some(found) => FakeReply::json(found.clone()),
                    None => FakeReply {
                        body: json!({"code": "notFound", "message": "no task"}).to_string(),
                        ..FakeReply::status(404)
                    },
                }
            }
            ("POST", p) if p.ends_with("/tasks") => {
                let mut task = r.json();
                let mut todos = t.lock().expect("todos");
                task["id"] = json!(format!("dt-todo-{}", todos.len() + 1));
                task["createdTime"] = json!(1772420400000i64);
                todos.push(task.clone());
                if lose("todo") {
                    return FakeReply::status(504);
                }
                FakeReply::json(task)
            }
            ("POST", p) if p.ends_with("/calendars/primary/events") => {
                let token = r.header("x-client-token").unwrap_or_default().to_string();
                let mut events = e.lock().expect("events");
                let n = events.len() + 1;
                let event = events
                    .entry(token)
                    .or_insert_with(|| {
                        let b = r.json();
                        json!({"id": format!("dt-event-{n}"), "summary": b["summary"], "start": b["start"], "end": b["end"]})
                    })
                    .clone();
                if lose("event") {
                    return FakeReply::status(504);
                }
                FakeReply::json(event)
            }
            _ => FakeReply::status(404),
        }
    });
    let app = spawn(None, Some(&dt));
    let cases = [
        (
            "dingtalk.create_todo",
            json!({"subject": "Sign the form", "executor_user_ids": ["union-ops"]}),
        ),
        (
            "dingtalk.create_event",
            json!({"summary": "Customs call", "start": "2026-03-02T10:00:00+08:00", "end": "2026-03-02T11:00:00+08:00"}),
        ),
    ];
    for (action, input) in &cases {
        let answers = retried_like_a_zap(&app, action, input).await;
        assert_eq!(answers.last(), Some(&200), "{action}: {answers:?}");
    }
    assert!(
        lost.lock().expect("lost").is_empty(),
        "both answers were lost once"
    );
    assert_eq!(todos.lock().expect("todos").len(), 1, "one todo");
    assert_eq!(events.lock().expect("events").len(), 1, "one event");
}

/// Without an `Idempotency-Key` two identical to-do requests are two requests (a weekly
/// Zap creating the same to-do gets one each week); with a key, the repeat is a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_todos_without_a_key_each_create_one_and_with_a_key_only_once() {
    let dt = common::dingtalk_fake::DingTalk::start();
    let app = Env::new()
        .config_toml(ROUTES)
        .bootstrap_keys(&bootstrap_entry())
        .dingtalk(&dt)
        .spawn();
    let input = json!({"subject": "Weekly customs report", "executor_user_ids": ["union-ops"]});
    let mut sources = Vec::new();
    for _ in 0..2 {
        let done = ok(&app, "dingtalk.create_todo", input.clone()).await;
        sources.push(done["source_id"].clone());
    }
    assert_ne!(sources[0], sources[1], "each request its own sourceId");
    assert_eq!(dt.all_todos().len(), 2, "two to-dos without a key");

    let first = act(&app, "dingtalk.create_todo", Some("week-12"), &input).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("JSON");
    let again = act(&app, "dingtalk.create_todo", Some("week-12"), &input).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("JSON");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        dt.all_todos().len(),
        3,
        "one more with the key, whatever the repeats"
    );
}
