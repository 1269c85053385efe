//! A `both` route end to end, through two running instances sharing one Redis: a DingTalk
//! message lands in Outlook once and the notifications for the item the bridge wrote relay
//! nothing back; an Outlook mail reaches DingTalk once and nothing comes back into
//! Outlook — with duplicate deliveries everywhere. Then read state both ways on a route
//! with kinds `mail` + `todo`: the relayed mail's DingTalk todo and the Outlook mail's
//! read flag follow each other, each change propagating exactly once and never echoing.

use crate::common;

use std::time::Duration;

use common::{
    FakeReply, FakeServer, RedisServer, TestApp,
    dingtalk_fake::{DingTalk, group_message, push},
    env::{CONVERSATION, Env, MAILBOX, UNION},
    free_port,
    graph_fake::{GraphFake, GraphFakeConfig},
    inspect::{origin_of, relay_results, wait_for},
};
use serde_json::{Value, json};

struct World {
    redis: RedisServer,
    graph: GraphFake,
    dt: DingTalk,
    robot: FakeServer,
    env: Env,
    port: u16,
}

impl World {
    /// One `both` route with these `kinds` (TOML array), a custom robot for Outlook →
    /// DingTalk and the app robot's conversation for DingTalk → Outlook.
    fn new(kinds: &str) -> World {
        let redis = RedisServer::start();
        let graph = GraphFake::start(GraphFakeConfig::default());
        let dt = DingTalk::start();
        let robot = FakeServer::start(|_| FakeReply::json(json!({"errcode": 0, "errmsg": "ok"})));
        let port = free_port();
        let text = format!(
            r#"public_url = "http://127.0.0.1:{port}"
[graph]
allow_http_public_url = true

[[routes]]
name = "roundtrip"
mailbox = "{MAILBOX}"
kinds = {kinds}
direction = "both"
[routes.dingtalk]
conversation_id = "{CONVERSATION}"
union_id = "{UNION}"
robot_code = "robot-code-1"
robot_webhook = "{robot}"
robot_secret = "SECtest-robot-secret"
"#,
            robot = robot.url("/robot/send?access_token=robot-token"),
        );
        let env = Env::relays(&redis, &graph, &dt).config_toml(&text);
        World {
            redis,
            graph,
            dt,
            robot,
            env,
            port,
        }
    }

    /// An instance; the first listens on the port `public_url` names.
    fn spawn(&self, first: bool) -> TestApp {
        let listen = if first {
            format!("127.0.0.1:{}", self.port)
        } else {
            "127.0.0.1:0".into()
        };
        self.env.clone().listen(&listen).spawn()
    }

    async fn message_subscription(&self, app: &TestApp) -> String {
        wait_for(
            app,
            "the inbox subscription",
            Duration::from_secs(20),
            || self.graph.subscription_for(MAILBOX, "messages"),
        )
        .await["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    fn robot_messages(&self) -> Vec<Value> {
        self.robot
            .requests()
            .into_iter()
            .filter(|r| r.path == "/robot/send")
            .map(|r| r.json())
            .collect()
    }

    /// Delivers the same notification (one id) to both instances, then another
    /// notification for the same change (a second id) to both again.
    async fn notify_twice_to_both(
        &self,
        apps: [&TestApp; 2],
        sub_id: &str,
        change: &str,
        id: &str,
    ) {
        let client = reqwest::Client::new();
        let body = self.graph.notification_body(sub_id, change, id, None);
        let again = self.graph.notification_body(sub_id, change, id, None);
        for b in [&body, &again] {
            for app in apps {
                let r = client
                    .post(app.url("/webhooks/graph"))
                    .json(b)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status(), 202);
            }
        }
    }

    /// An Outlook mail delivered to the inbox and notified (twice, to both instances);
    /// returns its id once DingTalk got the message and, when the route has `todo`, the
    /// read-state todo.
    async fn outlook_mail(&self, apps: [&TestApp; 2], sub_id: &str, subject: &str) -> String {
        let id = self.graph.put_message(MAILBOX, "inbox", mail(subject));
        self.notify_twice_to_both(apps, sub_id, "created", &id)
            .await;
        wait_for(
            apps[0],
            "the DingTalk message",
            Duration::from_secs(20),
            || (!self.robot_messages().is_empty()).then_some(()),
        )
        .await;
        id
    }

    fn todos(&self) -> Vec<Value> {
        self.dt.all_todos()
    }

    /// DingTalk API writes to todos (method, path).
    fn todo_writes(&self, method: &str) -> usize {
        self.dt
            .server
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains("/todo/users/"))
            .count()
    }

    /// Graph PATCHes of message `id` that set `isRead: true`.
    fn read_patches(&self, id: &str) -> usize {
        self.graph
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.contains(id))
            .filter(|r| {
                serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["isRead"] == json!(true))
            })
            .count()
    }

    fn is_read(&self, id: &str) -> bool {
        self.graph
            .all_messages(MAILBOX)
            .iter()
            .any(|m| m["id"] == id && m["isRead"] == json!(true))
    }
}

fn mail(subject: &str) -> Value {
    json!({
        "subject": subject,
        "from": {"emailAddress": {"name": "Li Lei", "address": "li.lei@fabrikam.com"}},
        "body": {"contentType": "html", "content": format!("<p>Body of {subject}</p>")},
    })
}

fn todo_event(event_type: &str, event_id: &str, task_id: &str) -> Value {
    json!({"EventType": event_type, "eventId": event_id, "taskId": task_id,
        "UnionIdList": [UNION], "EventTime": dingbridge::store::now_ms()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_both_route_round_trips_once_each_way_with_duplicates_and_two_instances() {
    let w = World::new(r#"["message", "mail"]"#);
    let first = w.spawn(true);
    let second = w.spawn(false);
    let apps = [&first, &second];
    let sub_id = w.message_subscription(&first).await;

    // DingTalk → Outlook, delivered twice to each instance.
    let msg = group_message("rt-msg-1", CONVERSATION, "From DingTalk, once");
    for app in [&first, &second, &second, &first] {
        push(app, &msg).await;
    }
    let written = wait_for(
        &first,
        "the relayed DingTalk message in Outlook",
        Duration::from_secs(30),
        || {
            (!relay_results(&w.redis, "relay.message.created").is_empty())
                .then(|| w.graph.messages(MAILBOX, "DingTalk"))
        },
    )
    .await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(origin_of(&written[0]).is_some(), "origin marker");
    let written_id = written[0]["id"].as_str().expect("id").to_string();
    // Graph notifies about the item the bridge wrote (created, then the unread flag),
    // twice and to both instances, while the echo guard is live…
    w.notify_twice_to_both(apps, &sub_id, "created", &written_id)
        .await;
    w.notify_twice_to_both(apps, &sub_id, "updated", &written_id)
        .await;
    // …and once more after it expired: the origin marker alone stops it.
    let _: () = redis::cmd("DEL")
        .arg(format!("dingbridge:kv:echo:graph:{written_id}"))
        .query(&mut w.redis.client())
        .expect("del echo guard");
    w.notify_twice_to_both(apps, &sub_id, "created", &written_id)
        .await;

    // Outlook → DingTalk, notified twice to each instance, then updated (read).
    let id = w.outlook_mail(apps, &sub_id, "From Outlook, once").await;
    w.graph
        .update_message(MAILBOX, &id, json!({"isRead": true}));
    w.notify_twice_to_both(apps, &sub_id, "updated", &id).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let robot = w.robot_messages();
    assert_eq!(robot.len(), 1, "exactly one DingTalk message: {robot:?}");
    let text = robot[0]["markdown"]["text"].as_str().unwrap_or_default();
    assert!(text.contains("From Outlook, once"), "{text}");
    assert!(!text.contains("From DingTalk"), "{text}");
    // Outlook holds the bridge's one item and the one delivered mail, nothing more.
    assert_eq!(w.graph.messages(MAILBOX, "DingTalk").len(), 1);
    assert_eq!(w.graph.all_messages(MAILBOX).len(), 2);
    assert_eq!(relay_results(&w.redis, "relay.message.created").len(), 1);
    assert!(w.todos().is_empty(), "no todo without the todo kind");
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_the_relayed_outlook_mail_read_marks_the_dingtalk_todo_done_once() {
    let w = World::new(r#"["message", "mail", "todo"]"#);
    let first = w.spawn(true);
    let second = w.spawn(false);
    let apps = [&first, &second];
    let sub_id = w.message_subscription(&first).await;
    let id = w.outlook_mail(apps, &sub_id, "Customs papers").await;
    let todo = wait_for(
        &first,
        "the read-state todo",
        Duration::from_secs(20),
        || w.todos().into_iter().next(),
    )
    .await;
    let web_link = w
        .graph
        .all_messages(MAILBOX)
        .into_iter()
        .find(|m| m["id"] == id)
        .expect("mail")["webLink"]
        .clone();
    assert_eq!(todo["subject"], "Customs papers");
    assert_eq!(todo["detailUrl"]["pcUrl"], web_link);
    assert!(
        todo["sourceId"]
            .as_str()
            .is_some_and(|s| s.starts_with("outlook-mail-")),
        "{todo:?}"
    );
    assert_eq!(todo["done"], false);
    let task_id = todo["id"].as_str().expect("id").to_string();
    // DingTalk reports the todo the bridge created: not a To Do task, no read change.
    push(&first, &todo_event("todo_task_create", "rs-c1", &task_id)).await;

    // Read in Outlook: Graph notifies twice, to both instances.
    w.graph
        .update_message(MAILBOX, &id, json!({"isRead": true}));
    w.notify_twice_to_both(apps, &sub_id, "updated", &id).await;
    wait_for(&first, "the todo done", Duration::from_secs(20), || {
        (w.dt.todos.lock().expect("todos")[&task_id]["done"] == true).then_some(())
    })
    .await;
    // DingTalk reports the bridge's own update (twice, to both instances): no echo.
    for (app, ev) in [(&first, "rs-u1"), (&second, "rs-u1"), (&second, "rs-u2")] {
        push(app, &todo_event("todo_task_update", ev, &task_id)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.todo_writes("PUT"), 1, "the todo updated once");
    assert_eq!(w.todo_writes("POST"), 1, "one todo");
    assert_eq!(w.todos().len(), 1);
    assert_eq!(w.read_patches(&id), 0, "nothing written back to Outlook");
    assert!(w.graph.all_tasks(MAILBOX).is_empty(), "no To Do task");
    assert_eq!(w.robot_messages().len(), 1);
    let result = |action: &str| -> Vec<Value> {
        relay_results(&w.redis, action)
            .into_iter()
            .map(|e| e["detail"]["result"].clone())
            .collect()
    };
    assert_eq!(
        result("relay.todo.created"),
        [json!("read_state_unchanged")]
    );
    let updated = result("relay.todo.updated");
    assert!(
        !updated.is_empty() && updated.iter().all(|r| r == "echo_skipped"),
        "{updated:?}"
    );
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_the_dingtalk_todo_marks_the_outlook_mail_read_once() {
    let w = World::new(r#"["message", "mail", "todo"]"#);
    let first = w.spawn(true);
    let second = w.spawn(false);
    let apps = [&first, &second];
    let sub_id = w.message_subscription(&first).await;
    let id = w.outlook_mail(apps, &sub_id, "Invoice 42").await;
    let task_id = wait_for(
        &first,
        "the read-state todo",
        Duration::from_secs(20),
        || {
            w.todos()
                .into_iter()
                .next()
                .and_then(|t| t["id"].as_str().map(str::to_string))
        },
    )
    .await;
    assert!(!w.is_read(&id));

    // The user completes the todo in DingTalk; the event arrives twice at both instances.
    w.dt.todos
        .lock()
        .expect("todos")
        .get_mut(&task_id)
        .expect("todo")["done"] = json!(true);
    for (app, ev) in [
        (&first, "rs-d1"),
        (&second, "rs-d1"),
        (&second, "rs-d2"),
        (&first, "rs-d2"),
    ] {
        push(app, &todo_event("todo_task_update", ev, &task_id)).await;
    }
    wait_for(&first, "the mail read", Duration::from_secs(20), || {
        w.is_read(&id).then_some(())
    })
    .await;
    // Graph notifies about the bridge's own write, twice to both instances: no echo.
    w.notify_twice_to_both(apps, &sub_id, "updated", &id).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.read_patches(&id), 1, "the mail marked read once");
    assert_eq!(w.todo_writes("PUT"), 0, "nothing written back to DingTalk");
    assert_eq!(w.todos().len(), 1);
    assert!(w.graph.all_tasks(MAILBOX).is_empty(), "no To Do task");
    assert_eq!(w.robot_messages().len(), 1);
    let results: Vec<Value> = relay_results(&w.redis, "relay.todo.updated")
        .into_iter()
        .map(|e| e["detail"]["result"].clone())
        .collect();
    assert!(results.contains(&json!("marked_read")), "{results:?}");
    w.graph.assert_no_violations();
}

/// Graph marks a notification's `id` optional. Without one, each change of an item is
/// told apart by the item's version (`@odata.etag`), so a mail changed on arrival and
/// read later still has its read state relayed; a redelivery of a version is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_changed_three_times_under_notifications_without_ids_still_has_its_reading_relayed()
{
    let w = World::new(r#"["message", "mail", "todo"]"#);
    let app = w.spawn(true);
    let sub_id = w.message_subscription(&app).await;
    let notify = |change: &str, id: &str, version: &str| {
        let mut body = w.graph.notification_body(&sub_id, change, id, None);
        let item = &mut body["value"][0];
        item.as_object_mut().expect("object").remove("id");
        item["resourceData"]["@odata.etag"] = json!(format!("W/\"{version}\""));
        let (app, body) = (&app, body);
        async move {
            let r = app
                .http
                .post(app.url("/webhooks/graph"))
                .json(&body)
                .send()
                .await
                .expect("post");
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.expect("json")
        }
    };
    let id = w.graph.put_message(MAILBOX, "inbox", mail("Urgent change"));
    assert_eq!(notify("created", &id, "v1").await["accepted"], 1);
    let todo = wait_for(&app, "the read-state todo", Duration::from_secs(20), || {
        w.todos().into_iter().next()
    })
    .await;
    let task_id = todo["id"].as_str().expect("id").to_string();

    // Categorised on arrival (still unread), then read hours later.
    w.graph
        .update_message(MAILBOX, &id, json!({"categories": ["Customs"]}));
    assert_eq!(notify("updated", &id, "v2").await["accepted"], 1);
    w.graph
        .update_message(MAILBOX, &id, json!({"isRead": true}));
    assert_eq!(
        notify("updated", &id, "v3").await["accepted"],
        1,
        "a later version is a new change"
    );
    assert_eq!(
        notify("updated", &id, "v3").await["duplicates"],
        1,
        "a redelivered version is not"
    );
    wait_for(&app, "the todo done", Duration::from_secs(20), || {
        (w.dt.todos.lock().expect("todos")[&task_id]["done"] == true).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.todo_writes("PUT"), 1, "the todo updated once");
    w.graph.assert_no_violations();
}

/// DingTalk stores a todo and its gateway answers 504: the retried job finds the todo by
/// its `sourceId` instead of creating a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dingtalk_todo_stored_then_answered_504_is_found_not_created_twice() {
    use std::sync::atomic::Ordering;
    let w = World::new(r#"["message", "mail", "todo"]"#);
    w.dt.lose_todo_answers.store(1, Ordering::SeqCst);
    let first = w.spawn(true);
    let second = w.spawn(false);
    let sub_id = w.message_subscription(&first).await;
    w.outlook_mail([&first, &second], &sub_id, "Customs papers")
        .await;
    let created = |app: &TestApp| {
        app.logs()
            .iter()
            .any(|l| l.contains("DingTalk todo created for an Outlook mail"))
    };
    wait_for(
        &first,
        "the read-state todo",
        Duration::from_secs(30),
        || (created(&first) || created(&second)).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.dt.lose_todo_answers.load(Ordering::SeqCst),
        0,
        "the 504 was given"
    );
    assert_eq!(w.todo_writes("POST"), 1, "one create reached DingTalk");
    assert_eq!(w.todos().len(), 1, "one todo");
}
