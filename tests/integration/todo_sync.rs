//! Microsoft To Do ⇄ DingTalk todo on a `both` route, through two running instances that
//! share one Redis: the To Do list is polled with delta (one instance at a time), new and
//! edited Outlook tasks reach DingTalk once, DingTalk todos reach To Do once, and neither
//! side's writes come back — also with duplicate DingTalk events sent to both instances.

use crate::{common, lowcode::create_key};

use std::time::Duration;

use common::{
    RedisServer, TestApp,
    dingtalk_fake::{DingTalk, push},
    env::{Env, MAILBOX, UNION},
    graph_fake::{GraphFake, GraphFakeConfig},
    inspect::{relay_results, wait_for},
};
use serde_json::{Value, json};

const LIST: &str = "DingTalk";

struct World {
    redis: RedisServer,
    graph: GraphFake,
    dt: DingTalk,
    env: Env,
}

impl World {
    fn new() -> World {
        let redis = RedisServer::start();
        let graph = GraphFake::start(GraphFakeConfig::default());
        let dt = DingTalk::start();
        let text = format!(
            r#"[[routes]]
name = "tasks"
mailbox = "{MAILBOX}"
kinds = ["todo"]
direction = "both"
todo_list = "{LIST}"
allow_deletes = true
[routes.dingtalk]
union_id = "{UNION}"
"#
        );
        let env = Env::relays(&redis, &graph, &dt)
            .config_toml(&text)
            .set("DINGBRIDGE_GRAPH_TODO_POLL_INTERVAL_SECS", "1");
        World {
            redis,
            graph,
            dt,
            env,
        }
    }

    fn spawn(&self) -> TestApp {
        self.env.spawn()
    }

    /// Waits until the first poll took its baseline (the delta link is stored).
    async fn baseline(&self, app: &TestApp) {
        wait_for(app, "the To Do baseline", Duration::from_secs(20), || {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("dingbridge:kv:graph:delta:tasks:todo:*")
                .query(&mut self.redis.client())
                .unwrap_or_default();
            (!keys.is_empty()).then_some(())
        })
        .await;
    }

    /// Waits for a few more poll rounds (each round re-stores the delta link).
    async fn rounds(&self) {
        tokio::time::sleep(Duration::from_secs(4)).await;
    }

    fn todos(&self) -> Vec<Value> {
        self.dt.all_todos()
    }

    fn todo(&self, id: &str) -> Option<Value> {
        self.dt.todos.lock().expect("todos").get(id).cloned()
    }

    /// DingTalk API calls on todos with this method.
    fn todo_calls(&self, method: &str) -> usize {
        self.dt
            .server
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with("/v1.0/todo/users/"))
            .filter(|r| !r.path.contains("/sources/"))
            .count()
    }

    /// Graph writes (method) on To Do tasks.
    fn task_writes(&self, method: &str) -> usize {
        self.graph
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains("/tasks"))
            .count()
    }

    fn tasks(&self) -> Vec<Value> {
        self.graph.tasks(MAILBOX, LIST)
    }
}

fn todo_event(event_type: &str, event_id: &str, task_id: &str) -> Value {
    json!({"EventType": event_type, "eventId": event_id, "taskId": task_id,
        "UnionIdList": [UNION], "EventTime": dingbridge::store::now_ms()})
}

/// Every `outlook.task.changed` event, as Zapier polls them.
async fn task_triggers(w: &World, app: &TestApp) -> Vec<Value> {
    let key = create_key(&w.redis, "zapier", "triggers");
    app.http
        .get(app.url("/v1/triggers/outlook.task.changed"))
        .bearer_auth(key)
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlook_tasks_reach_dingtalk_once_and_their_edits_and_deletes_follow_without_echo() {
    let w = World::new();
    let old = w
        .graph
        .put_task(MAILBOX, LIST, json!({"title": "Before the bridge"}));
    let first = w.spawn();
    let second = w.spawn();
    w.baseline(&first).await;

    let id = w.graph.put_task(
        MAILBOX,
        LIST,
        json!({"title": "Ship customs papers",
            "body": {"contentType": "text", "content": "Form 3 for Li"},
            "dueDateTime": {"dateTime": "2026-12-01T00:00:00.0000000", "timeZone": "UTC"}}),
    );
    let todo = wait_for(&first, "the DingTalk todo", Duration::from_secs(20), || {
        w.todos().into_iter().next()
    })
    .await;
    assert_eq!(todo["subject"], "Ship customs papers");
    assert_eq!(todo["description"], "Form 3 for Li");
    assert_eq!(todo["dueTime"], 1_796_083_200_000i64);
    assert!(
        todo["sourceId"]
            .as_str()
            .is_some_and(|s| s.starts_with("outlook-task-")),
        "{todo:?}"
    );
    let todo_id = todo["id"].as_str().expect("id").to_string();
    // DingTalk reports the todo the bridge made, twice to both instances: no To Do task.
    for (app, ev) in [(&first, "ts-c1"), (&second, "ts-c1"), (&second, "ts-c2")] {
        push(app, &todo_event("todo_task_create", ev, &todo_id)).await;
    }
    w.rounds().await;
    assert_eq!(
        w.todos().len(),
        1,
        "the old task stays out: {:?}",
        w.todos()
    );
    assert_eq!(w.todo_calls("POST"), 1, "one todo created");
    assert_eq!(w.tasks().len(), 2, "no task written back: {:?}", w.tasks());
    assert_eq!(w.task_writes("POST"), 0);
    assert_eq!(w.task_writes("PATCH"), 0);

    // Completed in Outlook → done in DingTalk, once; DingTalk's events for it echo nothing.
    w.graph
        .update_task(MAILBOX, &id, json!({"status": "completed"}));
    wait_for(&first, "the todo done", Duration::from_secs(20), || {
        (w.todo(&todo_id)?["done"] == true).then_some(())
    })
    .await;
    for (app, ev) in [(&first, "ts-u1"), (&second, "ts-u1"), (&first, "ts-u2")] {
        push(app, &todo_event("todo_task_update", ev, &todo_id)).await;
    }
    w.rounds().await;
    assert_eq!(w.todo_calls("PUT"), 1, "the todo updated once");
    assert_eq!(w.task_writes("PATCH"), 0, "nothing written back to To Do");

    // A notes-only edit is not DingTalk's business; a deleted task deletes the todo.
    w.graph.update_task(
        MAILBOX,
        &id,
        json!({"body": {"contentType": "text", "content": "Form 3 for Li, signed"}}),
    );
    w.rounds().await;
    assert_eq!(w.todo_calls("PUT"), 1, "same version, nothing to relay");
    w.graph.delete_task(MAILBOX, &id);
    wait_for(&first, "the todo deleted", Duration::from_secs(20), || {
        w.todo(&todo_id).is_none().then_some(())
    })
    .await;
    assert_eq!(w.todo_calls("DELETE"), 1);
    assert_eq!(w.tasks().len(), 1, "only the old task is left");
    assert_eq!(w.tasks()[0]["id"], old.as_str());

    // Zapier sees what happened in To Do, and nothing of the bridge's own writes.
    let changes: Vec<String> = task_triggers(&w, &first)
        .await
        .iter()
        .map(|e| e["change"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(changes, ["deleted", "updated", "created"], "newest first");
    let audited = relay_results(&w.redis, "relay.outlook_task.created");
    assert_eq!(audited.len(), 1, "{audited:?}");
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dingtalk_todo_lands_in_to_do_once_and_is_not_polled_back() {
    let w = World::new();
    let first = w.spawn();
    let second = w.spawn();
    w.baseline(&first).await;
    w.dt.todos.lock().expect("todos").insert(
        "dt-7".into(),
        json!({"id": "dt-7", "subject": "Book the truck", "done": false,
            "dueTime": 1_796_083_200_000i64}),
    );
    for (app, ev) in [(&first, "dt-c1"), (&second, "dt-c1"), (&second, "dt-c2")] {
        push(app, &todo_event("todo_task_create", ev, "dt-7")).await;
    }
    let task = wait_for(&first, "the To Do task", Duration::from_secs(20), || {
        w.tasks().into_iter().next()
    })
    .await;
    assert_eq!(task["title"], "Book the truck");
    let task_id = task["id"].as_str().expect("id").to_string();
    w.rounds().await;
    assert_eq!(w.tasks().len(), 1);
    assert_eq!(
        w.todo_calls("POST"),
        0,
        "no todo made from the bridge's task"
    );
    assert_eq!(w.todo_calls("PUT"), 0, "nor updated");
    // Two create events on two instances: one write (the second finds the pair).
    let patches = w.task_writes("PATCH");
    assert_eq!(patches, 0, "the task was written once");

    // Done in DingTalk → completed in To Do; the poll sees that write and relays nothing.
    w.dt.todos
        .lock()
        .expect("todos")
        .get_mut("dt-7")
        .expect("todo")["done"] = json!(true);
    push(&second, &todo_event("todo_task_update", "dt-u1", "dt-7")).await;
    wait_for(
        &first,
        "the task completed",
        Duration::from_secs(20),
        || {
            w.tasks()
                .into_iter()
                .any(|t| t["status"] == "completed")
                .then_some(())
        },
    )
    .await;
    w.rounds().await;
    assert_eq!(w.todo_calls("PUT"), 0, "nothing written back to DingTalk");
    assert_eq!(
        w.task_writes("PATCH"),
        patches + 1,
        "the task completed once"
    );

    // Renamed in Outlook → the todo follows once, and that write is not relayed back.
    w.graph.update_task(
        MAILBOX,
        &task_id,
        json!({"title": "Book the truck for Friday"}),
    );
    wait_for(&first, "the todo renamed", Duration::from_secs(20), || {
        (w.todo("dt-7")?["subject"] == "Book the truck for Friday").then_some(())
    })
    .await;
    push(&first, &todo_event("todo_task_update", "dt-u2", "dt-7")).await;
    w.rounds().await;
    assert_eq!(w.todo_calls("PUT"), 1);
    assert_eq!(
        w.task_writes("PATCH"),
        patches + 1,
        "the rename is not echoed into To Do"
    );
    assert_eq!(w.todo("dt-7").expect("todo")["done"], true);
    w.graph.assert_no_violations();
}
