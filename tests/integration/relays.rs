//! DingTalk → Outlook relays through the running binary: encrypted DingTalk events posted
//! to `/webhooks/dingtalk/events`, a DingTalk API fake, and the Graph fake (OpenAPI
//! validation of every request, Graph-like throttling, crash injection).

use crate::common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{
    RedisServer, TestApp,
    dingtalk_fake::{
        AES_KEY, APP_KEY, APP_SECRET, DT_ACCESS_TOKEN, DingTalk, TOKEN, group_message, push,
    },
    env::{CONVERSATION, Env, GRAPH_SECRET, MAILBOX, Route, UNION, default_routes},
    eventually,
    graph_fake::{Failure, GraphFake, GraphFakeConfig, TestCert},
    inspect::{audit, origin_of, relay_results, wait_for},
};
use dingbridge::{
    dingtalk::crypto::{self, CallbackCrypto},
    graph::client::event_transaction_id,
};
use serde_json::{Value, json};

const SECOND: &str = "mirror@contoso.com";
const UNROUTED: &str = "unrouted-boss@contoso.com";

fn now_ms() -> i64 {
    dingbridge::store::now_ms()
}

fn dead_letters(redis: &RedisServer) -> i64 {
    redis::cmd("XLEN")
        .arg("dingbridge:queue:dead")
        .query(&mut redis.client())
        .unwrap_or(0)
}

/// No secret, token or key appears in any log line of the process.
fn assert_no_secrets(app: &TestApp, graph: &GraphFake) {
    let mut secrets: Vec<String> = [APP_SECRET, DT_ACCESS_TOKEN, GRAPH_SECRET, AES_KEY, TOKEN]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for r in graph.requests() {
        if let Some(bearer) = r
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
        {
            secrets.push(bearer.to_string());
        }
    }
    secrets.sort();
    secrets.dedup();
    for line in app.logs() {
        for s in &secrets {
            assert!(!line.contains(s.as_str()), "a secret is in the log: {line}");
        }
    }
}

// ----- tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_lands_once_in_the_folder_despite_ten_deliveries_and_a_crash_mid_write() {
    let redis = RedisServer::start();
    let graph = GraphFake::start_default();
    let dt = DingTalk::start();
    let env = Env::relays(&redis, &graph, &dt)
        .routes(&default_routes())
        .set("DINGBRIDGE_WORKERS_VISIBILITY_TIMEOUT_MS", "2000")
        .set("DINGBRIDGE_WORKERS_JOB_TIMEOUT_MS", "1500");
    // The create is applied by Graph, but its answer never reaches the first instance.
    graph.fail_next(
        Some("POST"),
        "/messages",
        1,
        Failure::ApplyThenHang {
            delay: Duration::from_secs(20),
        },
    );
    let mut first = env.spawn();
    let msg = group_message("msg-crash-1", CONVERSATION, "Papers <ready> for 报关");
    for _ in 0..5 {
        push(&first, &msg).await;
    }
    wait_for(
        &first,
        "the create to reach Graph",
        Duration::from_secs(20),
        || (!graph.messages(MAILBOX, "DingTalk").is_empty()).then_some(()),
    )
    .await;
    first.kill9();
    let second = env.spawn();
    for _ in 0..5 {
        push(&second, &msg).await;
    }
    // Complete once the second instance audited the relay (after marking it unread).
    wait_for(
        &second,
        "the relay to complete",
        Duration::from_secs(30),
        || (!relay_results(&redis, "relay.message.created").is_empty()).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = graph.messages(MAILBOX, "DingTalk");
    assert_eq!(messages.len(), 1, "exactly one message: {messages:?}");
    assert_eq!(graph.all_messages(MAILBOX).len(), 1);
    let m = &messages[0];
    assert_eq!(m["isRead"], false, "marked unread");
    assert!(
        graph
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.body == br#"{"isRead":false}"#),
        "the relay marked it unread"
    );
    assert_eq!(
        origin_of(m).as_deref(),
        Some("dingtalk:message:msg-crash-1")
    );
    assert_eq!(m["isDraft"], false, "a received item, not a draft");
    assert!(
        m["subject"]
            .as_str()
            .expect("subject")
            .starts_with("[DingTalk] 报关 Customs: Papers"),
        "{m}"
    );
    let html = m["body"]["content"].as_str().expect("body");
    assert!(
        html.contains("王五") && html.contains("Papers &lt;ready&gt;"),
        "{html}"
    );
    assert!(html.contains("dingtalk://"), "a link back: {html}");
    assert_eq!(m["receivedDateTime"], "2025-12-01T00:00:00Z");
    // The DingTalk trigger and the audit trail, without the message text.
    let relayed = relay_results(&redis, "relay.message.created");
    assert_eq!(relayed.len(), 1, "one relay: {relayed:?}");
    assert_eq!(
        relayed[0]["detail"]["result"], "existed",
        "the retry found the item the killed instance had written"
    );
    assert!(relayed.iter().all(|e| e["detail"]["route"] == "customs"));
    let all = serde_json::to_string(&audit(&redis)).expect("json");
    assert!(!all.contains("Papers"), "no message text in the audit");
    assert_eq!(dead_letters(&redis), 0);
    graph.assert_no_violations();
    assert_no_secrets(&second, &graph);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_megabyte_file_goes_through_an_upload_session_small_ones_inline_and_a_retry_attaches_nothing_twice()
 {
    let redis = RedisServer::start();
    let graph = GraphFake::start_default();
    let dt = DingTalk::start();
    let size = 5 * 1024 * 1024;
    let content: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    dt.files
        .lock()
        .expect("files")
        .insert("dc-big".into(), Arc::new(content.clone()));
    let app = Env::relays(&redis, &graph, &dt)
        .routes(&default_routes())
        .spawn();
    let mut msg = group_message("msg-file-1", CONVERSATION, "");
    msg["msgtype"] = json!("file");
    msg.as_object_mut().expect("obj").remove("text");
    msg["content"] = json!({"downloadCode": "dc-big", "fileName": "manifest.pdf"});
    // The unread mark fails beyond the client's own retries: the job is retried, and the
    // attachment already added is not added again.
    graph.fail_next(Some("PATCH"), "/messages/", 4, Failure::unavailable("0.1"));
    push(&app, &msg).await;
    // Complete once audited (after the attachment and the unread mark).
    wait_for(
        &app,
        "the relayed file message",
        Duration::from_secs(30),
        || (!relay_results(&redis, "relay.message.created").is_empty()).then_some(()),
    )
    .await;
    assert!(
        app.logs()
            .iter()
            .any(|l| l.contains("job failed; will retry")),
        "the job was retried"
    );
    let messages = graph.messages(MAILBOX, "DingTalk");
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m["isRead"], false);
    assert_eq!(graph.requests_to("/createUploadSession").len(), 1);
    let atts = m["attachments"].as_array().expect("attachments");
    assert_eq!(atts.len(), 1, "{atts:?}");
    assert_eq!(atts[0]["name"], "manifest.pdf");
    let id = atts[0]["id"].as_str().expect("attachment id");
    let bytes = graph.attachment_bytes(MAILBOX, id).expect("bytes");
    assert_eq!(bytes.len(), size);
    assert!(bytes == content.as_bytes(), "the bytes DingTalk served");
    let downloads: Vec<_> = dt
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1.0/robot/messageFiles/download")
        .collect();
    assert_eq!(downloads.len(), 1);
    assert_eq!(
        downloads[0].json(),
        json!({"downloadCode": "dc-big", "robotCode": "robot-code-1"})
    );
    assert_eq!(
        downloads[0].header("x-acs-dingtalk-access-token"),
        Some(DT_ACCESS_TOKEN)
    );
    assert!(
        m["body"]["content"]
            .as_str()
            .expect("html")
            .contains("manifest.pdf")
    );
    // A picture below 3 MB is attached inline.
    dt.files
        .lock()
        .expect("files")
        .insert("dc-small".into(), Arc::new("p".repeat(100 * 1024)));
    let mut pic = group_message("msg-pic-1", CONVERSATION, "");
    pic["msgtype"] = json!("picture");
    pic.as_object_mut().expect("obj").remove("text");
    pic["content"] = json!({"downloadCode": "dc-small"});
    push(&app, &pic).await;
    wait_for(&app, "the picture message", Duration::from_secs(30), || {
        (relay_results(&redis, "relay.message.created").len() == 2).then_some(())
    })
    .await;
    let inline: Vec<_> = graph
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/attachments"))
        .collect();
    assert_eq!(inline.len(), 1);
    let body = inline[0].json();
    assert_eq!(body["@odata.type"], "#microsoft.graph.fileAttachment");
    assert_eq!(body["name"], "picture.png");
    assert_eq!(graph.requests_to("/createUploadSession").len(), 1);
    graph.assert_no_violations();
    assert_no_secrets(&app, &graph);
}

fn calendar_push(event_id: &str, change: &str) -> Value {
    json!({"EventType": "calendar_event_change", "eventId": event_id, "CorpId": "ding1",
        "calendarEventId": "cal-1", "calendarId": "primary", "unionIdList": [UNION],
        "changeType": change, "EventTime": now_ms()})
}

fn todo_push(event_type: &str, event_id: &str) -> Value {
    json!({"EventType": event_type, "eventId": event_id, "taskId": "task-1",
        "UnionIdList": [UNION], "EventTime": now_ms()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_events_and_todos_relay_with_their_fields_updates_patch_and_deletes_need_allow_deletes()
 {
    let redis = RedisServer::start();
    let graph = GraphFake::start_default();
    let dt = DingTalk::start();
    let routes = vec![
        Route {
            name: "keep",
            mailbox: MAILBOX,
            conversation: CONVERSATION,
            allow_deletes: false,
        },
        Route {
            name: "mirror",
            mailbox: SECOND,
            conversation: "cid-mirror",
            allow_deletes: true,
        },
    ];
    let app = Env::relays(&redis, &graph, &dt).routes(&routes).spawn();
    dt.events.lock().expect("events").insert(
        "cal-1".into(),
        json!({"id": "cal-1", "summary": "Customs inspection", "description": "Bring papers",
            "start": {"dateTime": "2026-12-01T10:00:00+08:00", "timeZone": "Asia/Shanghai"},
            "end": {"dateTime": "2026-12-01T11:30:00+08:00", "timeZone": "Asia/Shanghai"},
            "location": {"displayName": "Lok Ma Chau"}}),
    );
    dt.todos.lock().expect("todos").insert(
        "task-1".into(),
        json!({"id": "task-1", "subject": "Send invoice", "done": false,
            "dueTime": 1_764_547_200_000i64, "priority": 40,
            "detailUrl": {"pcUrl": "https://todo.dingtalk.com/task-1"}}),
    );
    push(&app, &calendar_push("ev-1", "create")).await;
    push(&app, &todo_push("todo_task_create", "tev-1")).await;
    let ready = || {
        let e = graph.events(MAILBOX).len() + graph.events(SECOND).len();
        let t = graph.all_tasks(MAILBOX).len() + graph.all_tasks(SECOND).len();
        (e == 2 && t == 2).then_some(())
    };
    wait_for(
        &app,
        "event and task in both mailboxes",
        Duration::from_secs(30),
        ready,
    )
    .await;
    for mb in [MAILBOX, SECOND] {
        let e = &graph.events(mb)[0];
        assert_eq!(e["subject"], "Customs inspection");
        assert_eq!(
            e["start"],
            json!({"dateTime": "2026-12-01T10:00:00", "timeZone": "China Standard Time"})
        );
        assert_eq!(e["end"]["dateTime"], "2026-12-01T11:30:00");
        assert_eq!(
            e["transactionId"],
            event_transaction_id("dingtalk:event:cal-1")
        );
        assert_eq!(origin_of(e).as_deref(), Some("dingtalk:event:cal-1"));
        let tasks = graph.tasks(mb, "DingTalk");
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        let t = &tasks[0];
        assert_eq!(t["title"], "Send invoice");
        assert_eq!(t["status"], "notStarted");
        assert_eq!(t["importance"], "high");
        let links = t["linkedResources"].as_array().expect("links");
        assert_eq!(links.len(), 1, "one link back: {links:?}");
        assert_eq!(links[0]["externalId"], "task-1");
        assert_eq!(links[0]["applicationName"], "DingTalk");
    }
    // Updates patch the mapped items.
    dt.events
        .lock()
        .expect("events")
        .get_mut("cal-1")
        .expect("ev")["summary"] = json!("Customs inspection (moved)");
    dt.todos
        .lock()
        .expect("todos")
        .get_mut("task-1")
        .expect("t")["done"] = json!(true);
    push(&app, &calendar_push("ev-2", "update")).await;
    push(&app, &todo_push("todo_task_update", "tev-2")).await;
    wait_for(&app, "the updates", Duration::from_secs(30), || {
        [MAILBOX, SECOND]
            .iter()
            .all(|mb| {
                graph.events(mb).first().map(|e| e["subject"].clone())
                    == Some(json!("Customs inspection (moved)"))
                    && graph.all_tasks(mb).first().map(|t| t["status"].clone())
                        == Some(json!("completed"))
            })
            .then_some(())
    })
    .await;
    for mb in [MAILBOX, SECOND] {
        assert_eq!(graph.events(mb).len(), 1, "patched, not duplicated");
        assert_eq!(graph.all_tasks(mb).len(), 1);
    }
    let patches = graph
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/events/"))
        .count();
    assert_eq!(patches, 2, "one PATCH per mailbox");
    // Deletes: only the route with allow_deletes deletes.
    push(&app, &calendar_push("ev-3", "delete")).await;
    push(&app, &todo_push("todo_task_delete", "tev-3")).await;
    wait_for(&app, "the deletes", Duration::from_secs(30), || {
        (graph.events(SECOND).is_empty() && graph.all_tasks(SECOND).is_empty()).then_some(())
    })
    .await;
    let skipped = wait_for(&app, "the skipped deletes", Duration::from_secs(10), || {
        let s: Vec<Value> = audit(&redis)
            .into_iter()
            .filter(|e| e["detail"]["result"] == "delete_skipped")
            .collect();
        (s.len() == 2).then_some(s)
    })
    .await;
    assert!(skipped.iter().all(|e| e["detail"]["route"] == "keep"));
    assert_eq!(graph.events(MAILBOX).len(), 1, "kept without allow_deletes");
    assert_eq!(graph.all_tasks(MAILBOX).len(), 1);
    assert_eq!(dead_letters(&redis), 0);
    graph.assert_no_violations();
    assert_no_secrets(&app, &graph);
}

/// A gateway can store a create and still answer 504, or the connection can break after
/// the request went out: the bridge cannot know, so it looks the item up before trying
/// again. One item per source, for every kind, whichever way the answer was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_stored_then_answered_504_or_cut_off_makes_exactly_one_item_of_every_kind() {
    for failure in [
        Failure::ApplyThenStatus { status: 504 },
        Failure::ApplyThenDrop,
    ] {
        let redis = RedisServer::start();
        let graph = GraphFake::start_default();
        let dt = DingTalk::start();
        let app = Env::relays(&redis, &graph, &dt)
            .routes(&default_routes())
            .spawn();
        for path in ["/messages", "/events", "/contacts", "/tasks"] {
            graph.fail_next(Some("POST"), path, 1, failure.clone());
        }
        dt.events.lock().expect("events").insert(
            "cal-1".into(),
            json!({"id": "cal-1", "summary": "Customs inspection",
                "start": {"dateTime": "2026-12-01T10:00:00+08:00", "timeZone": "Asia/Shanghai"},
                "end": {"dateTime": "2026-12-01T11:00:00+08:00", "timeZone": "Asia/Shanghai"}}),
        );
        dt.todos.lock().expect("todos").insert(
            "task-1".into(),
            json!({"id": "task-1", "subject": "Send invoice", "done": false}),
        );
        push(
            &app,
            &group_message("msg-amb-1", CONVERSATION, "Papers ready"),
        )
        .await;
        push(&app, &calendar_push("ev-amb-1", "create")).await;
        push(&app, &todo_push("todo_task_create", "tev-amb-1")).await;
        push(
            &app,
            &json!({"EventType": "user_add_org", "eventId": "u-amb-1", "userId": ["user-7"]}),
        )
        .await;
        let done = |action: &str| !relay_results(&redis, action).is_empty();
        wait_for(&app, "every kind relayed", Duration::from_secs(30), || {
            (done("relay.message.created")
                && done("relay.calendar_event.created")
                && done("relay.todo.created")
                && done("relay.contact.created"))
            .then_some(())
        })
        .await;
        let posts = |part: &str| {
            graph
                .requests()
                .iter()
                .filter(|r| r.method == "POST" && r.path.ends_with(part))
                .count()
        };
        assert!(
            posts("/messages") >= 1 && posts("/contacts") >= 1,
            "{failure:?}"
        );
        assert_eq!(
            graph.messages(MAILBOX, "DingTalk").len(),
            1,
            "{failure:?}: mail"
        );
        assert_eq!(graph.events(MAILBOX).len(), 1, "{failure:?}: event");
        assert_eq!(graph.all_tasks(MAILBOX).len(), 1, "{failure:?}: task");
        assert_eq!(graph.contacts(MAILBOX).len(), 1, "{failure:?}: contact");
        assert_eq!(dead_letters(&redis), 0, "{failure:?}");
        graph.assert_no_violations();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_relays_to_one_mailbox_wait_out_throttling_and_never_exceed_four_in_flight() {
    let redis = RedisServer::start();
    let graph = GraphFake::start(
        GraphFakeConfig::default()
            // 100 requests a second over 3 s windows: far below what the relay reaches
            // even on a loaded machine, so the budget is always hit and waited out.
            .with_budget(300, Duration::from_secs(3))
            .with_fractional_retry_after(),
    );
    let dt = DingTalk::start();
    let app = Env::relays(&redis, &graph, &dt)
        .routes(&default_routes())
        .set("DINGBRIDGE_WORKERS_CONCURRENCY", "16")
        .spawn();
    let n = 500;
    let started = Instant::now();
    for i in 0..n {
        push(
            &app,
            &group_message(&format!("bulk-{i}"), CONVERSATION, &format!("line {i}")),
        )
        .await;
    }
    wait_for(
        &app,
        "500 relayed messages",
        Duration::from_secs(60),
        || (relay_results(&redis, "relay.message.created").len() == n).then_some(()),
    )
    .await;
    let elapsed = started.elapsed();
    let (_, budget_429) = graph.throttled();
    eprintln!(
        "500 relays in {elapsed:?}; max in flight {}; budget 429s {budget_429}",
        graph.max_in_flight(MAILBOX)
    );
    assert!(graph.max_in_flight(MAILBOX) <= 4);
    assert!(
        budget_429 > 0,
        "the budget was hit, so 429s were waited out"
    );
    assert_eq!(dead_letters(&redis), 0, "nothing failed");
    let origins: std::collections::HashSet<String> = graph
        .messages(MAILBOX, "DingTalk")
        .iter()
        .filter_map(origin_of)
        .collect();
    assert_eq!(origins.len(), n, "one message per DingTalk message");
    graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_credentials_made_in_the_test_authenticate_against_the_fake() {
    let cert = TestCert::generate();
    let redis = RedisServer::start();
    let mut config = GraphFakeConfig::default().with_certificate_pem(&cert.cert_pem);
    config.client_secret = None;
    let graph = GraphFake::start(config);
    let dt = DingTalk::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (key_path, cert_path) = cert.write_to(dir.path());
    let app = Env::relays(&redis, &graph, &dt)
        .routes(&default_routes())
        .set(
            "DINGBRIDGE_GRAPH_CERTIFICATE_PATH",
            cert_path.to_str().expect("utf-8"),
        )
        .set(
            "DINGBRIDGE_GRAPH_PRIVATE_KEY_PATH",
            key_path.to_str().expect("utf-8"),
        )
        .spawn();
    push(&app, &group_message("msg-cert", CONVERSATION, "signed in")).await;
    wait_for(
        &app,
        "a message written with a certificate token",
        Duration::from_secs(30),
        || (graph.messages(MAILBOX, "DingTalk").len() == 1).then_some(()),
    )
    .await;
    assert!(graph.token_requests() >= 1);
    let ready: Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["graph"]["ok"], true);
    graph.assert_no_violations();
    assert_no_secrets(&app, &graph);
    for line in app.logs() {
        assert!(!line.contains("PRIVATE KEY"), "key material in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_secret_is_explained_in_readyz_and_the_log_and_no_secret_is_logged() {
    let redis = RedisServer::start();
    let graph = GraphFake::start(GraphFakeConfig::default().with_expired_secret());
    let dt = DingTalk::start();
    dt.events.lock().expect("events").insert(
        "cal-1".into(),
        json!({"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00+08:00"},
            "end": {"dateTime": "2026-12-01T11:00:00+08:00"}}),
    );
    let app = Env::relays(&redis, &graph, &dt)
        .routes(&default_routes())
        .spawn();
    let ready = eventually(Duration::from_secs(15), || async {
        let v: Value = app
            .http
            .get(app.url("/readyz"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["status"] == "degraded").then_some(v)
    })
    .await
    .expect("readyz shows the Graph failure");
    let error = ready["checks"]["graph"]["error"].as_str().expect("error");
    assert!(error.contains("expired"), "{error}");
    assert!(error.contains("AADSTS7000222"), "{error}");
    assert!(error.contains("DINGBRIDGE_GRAPH_CLIENT_SECRET"), "{error}");
    // A relay runs into the same error: it is kept for later, not dead-lettered.
    push(&app, &calendar_push("ev-exp", "create")).await;
    push(&app, &group_message("msg-exp", CONVERSATION, "hello")).await;
    wait_for(&app, "the relay attempt", Duration::from_secs(15), || {
        app.logs()
            .iter()
            .any(|l| l.contains("job failed; will retry") && l.contains("AADSTS7000222"))
            .then_some(())
    })
    .await;
    assert!(
        app.logs()
            .iter()
            .any(|l| l.contains("Microsoft Graph authentication failed")
                && l.contains("AADSTS7000222")),
        "start-up log explains the failure"
    );
    assert_eq!(dead_letters(&redis), 0);
    assert!(graph.events(MAILBOX).is_empty());
    graph.assert_no_violations();
    assert_no_secrets(&app, &graph);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_routed_mailbox_is_touched_and_unrouted_events_are_only_audited() {
    let redis = RedisServer::start();
    let graph = GraphFake::start(GraphFakeConfig::default().with_mailboxes(&[MAILBOX, UNROUTED]));
    let dt = DingTalk::start();
    let app = Env::relays(&redis, &graph, &dt)
        .routes(&default_routes())
        .spawn();
    push(&app, &group_message("msg-routed", CONVERSATION, "to ops")).await;
    // The production path of group messages: a signed robot callback (not encrypted).
    let ts = now_ms().to_string();
    let resp = app
        .http
        .post(app.url("/webhooks/dingtalk/robot"))
        .header("timestamp", &ts)
        .header(
            "sign",
            dingbridge::dingtalk::sign::robot_callback_sign(APP_SECRET, &ts),
        )
        .json(&group_message(
            "msg-robot-callback",
            CONVERSATION,
            "via callback",
        ))
        .send()
        .await
        .expect("robot callback");
    assert_eq!(resp.status(), 200);
    push(
        &app,
        &group_message("msg-stray", "cid-elsewhere", "to nobody"),
    )
    .await;
    push(
        &app,
        &json!({"EventType": "user_add_org", "eventId": "u-ev-1", "userId": ["user-7"]}),
    )
    .await;
    push(
        &app,
        &json!({"EventType": "chat_update_title", "eventId": "chat-ev-1", "ChatId": "c1"}),
    )
    .await;
    wait_for(
        &app,
        "message and contact relayed",
        Duration::from_secs(30),
        || {
            (graph.messages(MAILBOX, "DingTalk").len() == 2 && graph.contacts(MAILBOX).len() == 1)
                .then_some(())
        },
    )
    .await;
    let contact = &graph.contacts(MAILBOX)[0];
    assert_eq!(contact["displayName"], "User user-7");
    assert_eq!(
        origin_of(contact).as_deref(),
        Some("dingtalk:contact:user-7")
    );
    // A change patches the contact; leaving the org is not relayed without allow_deletes.
    push(
        &app,
        &json!({"EventType": "user_modify_org", "eventId": "u-ev-2", "userId": ["user-7"]}),
    )
    .await;
    push(
        &app,
        &json!({"EventType": "user_leave_org", "eventId": "u-ev-3", "userId": ["user-7"]}),
    )
    .await;
    wait_for(
        &app,
        "the contact update and delete",
        Duration::from_secs(30),
        || {
            let updated = relay_results(&redis, "relay.contact.updated");
            let deleted = relay_results(&redis, "relay.contact.deleted");
            (updated.len() == 1 && deleted.len() == 1).then_some((updated, deleted))
        },
    )
    .await;
    assert_eq!(
        relay_results(&redis, "relay.contact.updated")[0]["detail"]["result"],
        "updated"
    );
    assert_eq!(
        relay_results(&redis, "relay.contact.deleted")[0]["detail"]["result"],
        "delete_skipped"
    );
    assert_eq!(graph.contacts(MAILBOX).len(), 1, "kept");
    assert!(
        graph
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains("/contacts/"))
    );
    wait_for(
        &app,
        "the unrouted audit entries",
        Duration::from_secs(10),
        || {
            let a = audit(&redis);
            let unrouted = a
                .iter()
                .filter(|e| {
                    e["detail"]["result"] == "unrouted" || e["detail"]["result"] == "not_relayed"
                })
                .count();
            (unrouted == 2).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stray: Vec<_> = graph
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("unrouted-boss"))
        .collect();
    assert!(
        stray.is_empty(),
        "the unrouted mailbox got requests: {stray:?}"
    );
    assert!(
        graph
            .requests()
            .iter()
            .filter(|r| r.path.contains("/users/"))
            .all(|r| r.path.contains("ops@contoso.com") || r.path.contains("ops%40contoso.com")),
        "every Graph call is for the routed mailbox"
    );
    assert_eq!(graph.all_messages(MAILBOX).len(), 2);
    // DingTalk triggers are published for every message that arrives, routed or not.
    let out = Env::new()
        .redis(&redis)
        .run(&["keys", "create", "--name", "zapier", "--scopes", "triggers"]);
    let key = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let polled: Vec<Value> = app
        .http
        .get(app.url("/v1/triggers/dingtalk.message.received"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("json");
    let mut ids: Vec<&str> = polled.iter().filter_map(|t| t["id"].as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["msg-robot-callback", "msg-routed", "msg-stray"],
        "{polled:?}"
    );
    let routed = polled
        .iter()
        .find(|t| t["id"] == "msg-routed")
        .expect("routed");
    assert_eq!(routed["conversation_id"], CONVERSATION);
    assert_eq!(routed["sender_name"], "王五");
    assert_eq!(routed["text"], "to ops");
    graph.assert_no_violations();
    assert_no_secrets(&app, &graph);
}

// ----- benchmark ----------------------------------------------------------------------------

/// Sends `events` with `parallel` concurrent posters.
async fn push_all(app: &TestApp, events: Arc<Mutex<Vec<Value>>>, parallel: usize) {
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let events = events.clone();
        let url = app.url("");
        let http = app.http.clone();
        tasks.push(tokio::spawn(async move {
            let c = CallbackCrypto::new(TOKEN, AES_KEY, APP_KEY).expect("crypto");
            loop {
                let Some(e) = events.lock().expect("events").pop() else {
                    return;
                };
                let encrypt = c.encrypt(&e.to_string());
                let ts = now_ms().to_string();
                let sig = crypto::signature(TOKEN, &ts, "n", &encrypt);
                let resp = http
                    .post(format!(
                        "{url}/webhooks/dingtalk/events?msg_signature={sig}&timestamp={ts}&nonce=n"
                    ))
                    .json(&json!({ "encrypt": encrypt }))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("poster");
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One benchmark run: `mailboxes` routes (one conversation each), a per-mailbox budget of
/// `budget` requests per `window`, more relays than `windows` windows can carry. Returns
/// (admitted Graph requests per second, limit per second, relays per second, 429s).
async fn relay_bench(
    mailboxes: usize,
    budget: u32,
    window: Duration,
    windows: u32,
) -> (f64, f64, f64, usize) {
    let redis = RedisServer::start();
    let mut fake = GraphFakeConfig::default().with_budget(budget, window);
    if env_or("RELAY_BENCH_INTEGER_RETRY_AFTER", 0) == 0 {
        fake = fake.with_fractional_retry_after();
    }
    let graph = GraphFake::start(fake);
    let dt = DingTalk::start();
    let names: Vec<(String, String, String)> = (0..mailboxes)
        .map(|i| {
            (
                format!("r{i}"),
                format!("mb{i}@contoso.com"),
                format!("cid-{i}"),
            )
        })
        .collect();
    let routes: Vec<Route<'_>> = names
        .iter()
        .map(|(n, m, c)| Route {
            name: n,
            mailbox: m,
            conversation: c,
            allow_deletes: false,
        })
        .collect();
    let app = Env::relays(&redis, &graph, &dt).routes(&routes)
        .set(
            "DINGBRIDGE_WORKERS_CONCURRENCY",
            &(8 * mailboxes).max(16).to_string(),
        )
        .set(
            "DINGBRIDGE_LOG_LEVEL",
            "warn,dingbridge=info,dingbridge::worker=warn,dingbridge::telemetry=warn,dingbridge::sync=warn,dingbridge::graph=warn",
        )
        .spawn();
    // About 3 Graph requests per relay; 50 % more relays than the measured windows carry.
    let per_mailbox = (budget as u64 * windows as u64 / 3) * 3 / 2 + 50;
    let mut events = Vec::new();
    for i in 0..per_mailbox {
        for (_, _, cid) in &names {
            events.push(group_message(
                &format!("{cid}-{i}"),
                cid,
                &format!("line {i}"),
            ));
        }
    }
    events.reverse();
    let total_events = events.len();
    let events = Arc::new(Mutex::new(events));
    let posting = push_all(&app, events.clone(), 8);
    let measure = async {
        let first = wait_for(
            &app,
            "the first Graph request",
            Duration::from_secs(60),
            || {
                graph
                    .requests()
                    .into_iter()
                    .find(|r| r.path.contains("/users/"))
                    .map(|r| r.at)
            },
        )
        .await;
        let end = first + window * windows;
        tokio::time::sleep_until(end.into()).await;
        let requests = graph
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/users/") && r.at < end)
            .count();
        let throttled: usize = names.iter().map(|(_, m, _)| graph.throttled_for(m)).sum();
        let posted = total_events - events.lock().expect("events").len();
        let per_mailbox: Vec<usize> = names
            .iter()
            .map(|(_, m, _)| {
                let mb = m.replace('@', "%40");
                graph
                    .requests()
                    .iter()
                    .filter(|r| r.path.contains(&mb) && r.at < end)
                    .count()
                    .saturating_sub(graph.throttled_for(m))
            })
            .collect();
        eprintln!(
            "relay bench: events posted by the end: {posted}; admitted per mailbox: {per_mailbox:?}"
        );
        let relayed: usize = names
            .iter()
            .map(|(_, m, _)| graph.messages(m, "DingTalk").len())
            .sum();
        for (_, m, _) in &names {
            assert!(graph.max_in_flight(m) <= 4);
        }
        (requests, throttled, relayed)
    };
    let ((), (requests, throttled, relayed)) = tokio::join!(posting, measure);
    let secs = (window * windows).as_secs_f64();
    let admitted = requests.saturating_sub(throttled) as f64 / secs;
    let limit = mailboxes as f64 * budget as f64 / window.as_secs_f64();
    graph.assert_no_violations();
    (admitted, limit, relayed as f64 / secs, throttled)
}

/// `cargo test --test integration -- --ignored --nocapture relay_throughput` (BENCHMARKS.md).
/// Knobs: `RELAY_BENCH_BUDGET` (requests per window for the one-mailbox run, 150),
/// `RELAY_BENCH_BUDGET_10` (per mailbox in the ten-mailbox run, 30),
/// `RELAY_BENCH_WINDOW_MS` (1000), `RELAY_BENCH_WINDOWS` (measured windows, 10),
/// `RELAY_BENCH_INTEGER_RETRY_AFTER` (1: whole-second `Retry-After`; default fractional).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn relay_throughput_benchmark() {
    let window = Duration::from_millis(env_or("RELAY_BENCH_WINDOW_MS", 1000));
    let windows = env_or("RELAY_BENCH_WINDOWS", 10) as u32;
    for (mailboxes, budget) in [
        (1, env_or("RELAY_BENCH_BUDGET", 150) as u32),
        (10, env_or("RELAY_BENCH_BUDGET_10", 30) as u32),
    ] {
        let (admitted, limit, relays, throttled) =
            relay_bench(mailboxes, budget, window, windows).await;
        println!(
            "relay bench: {mailboxes} mailbox(es), budget {budget}/{} ms each, {windows} windows: {admitted:.1} admitted Graph requests/s of {limit:.1} allowed ({:.1} %), {relays:.1} relays/s, {throttled} answers 429",
            window.as_millis(),
            100.0 * admitted / limit
        );
    }
}
