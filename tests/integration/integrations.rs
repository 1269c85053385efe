//! The Zapier app and the n8n nodes in `integrations/` against this build's binary.
//!
//! The Zapier app runs in Zapier's own runtime (`zapier-platform-core`, installed with
//! `npm ci` from the app's lockfile when missing): this test starts Redis, the Graph fake,
//! a DingTalk stand-in and the service, hands its URL and keys to `npm test` through the
//! environment, checks what reached DingTalk, and runs `zapier-platform validate` and
//! `build`. The n8n
//! nodes' own Node tests start the service themselves against stand-ins for n8n.

use crate::common;

use std::{
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
};

use common::{
    FakeReply, FakeServer, RedisServer,
    env::Env,
    graph_fake::{GraphFake, GraphFakeConfig},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Runs `node --test test/` in `integrations/<package>` and fails with its report.
fn node_tests(package: &str) {
    common::ensure_node();
    let dir = format!("{}/integrations/{package}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .args(["--test", "test/"])
        .current_dir(&dir)
        .env("DINGBRIDGE_BIN", env!("CARGO_BIN_EXE_dingbridge"))
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("# fail 0"),
        "the {package} tests failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Zapier app's key (scopes triggers and actions) and a triggers-only key.
const KEY: &str =
    "dbk_0123456789ab_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const TRIGGERS_KEY: &str =
    "dbk_ba9876543210_ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const ECHO_TOKEN: &str = "echo-token-zapier-test";
const ALICE: &str = "alice@contoso.com";

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

fn entry(name: &str, scopes: &str, key: &str) -> String {
    format!(
        "{name}:{scopes}:{}",
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

/// DingTalk's server API, enough for the actions: robot and app-robot sends, calendar
/// creates (one event per `x-client-token`, as DingTalk promises) and to-dos (found again
/// by `sourceId`).
fn dingtalk_stand_in() -> FakeServer {
    let todos: Arc<Mutex<Vec<Value>>> = Arc::default();
    let events: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    FakeServer::start(move |r| {
        let p = r.path.as_str();
        match (r.method.as_str(), p) {
            ("GET", "/gettoken") => FakeReply::json(
                json!({"errcode": 0, "errmsg": "ok", "access_token": "dt-token", "expires_in": 7200}),
            ),
            ("POST", "/robot/send") => FakeReply::json(json!({"errcode": 0, "errmsg": "ok"})),
            ("POST", "/v1.0/robot/groupMessages/send") => {
                FakeReply::json(json!({"processQueryKey": "pqk-group-1"}))
            }
            ("POST", p) if p.ends_with("/calendars/primary/events") => {
                let token = r.header("x-client-token").unwrap_or_default().to_string();
                let mut events = events.lock().expect("events");
                if let Some((_, e)) = events.iter().find(|(t, _)| *t == token) {
                    return FakeReply::json(e.clone());
                }
                let mut e = r.json();
                e["id"] = json!(format!("dt-event-{}", events.len() + 1));
                events.push((token, e.clone()));
                FakeReply::json(e)
            }
            ("GET", p) if p.contains("/tasks/sources/") => {
                let source = p.rsplit('/').next().unwrap_or_default();
                match todos
                    .lock()
                    .expect("todos")
                    .iter()
                    .find(|t| t["sourceId"] == source)
                {
                    Some(t) => FakeReply::json(t.clone()),
                    None => FakeReply {
                        body: json!({"code": "notFound", "message": "no task"}).to_string(),
                        ..FakeReply::status(404)
                    },
                }
            }
            ("POST", p) if p.ends_with("/tasks") => {
                let mut todos = todos.lock().expect("todos");
                let mut task = r.json();
                task["id"] = json!(format!("dt-todo-{}", todos.len() + 1));
                task["createdTime"] = json!(1772420400000i64);
                todos.push(task.clone());
                FakeReply::json(task)
            }
            _ => FakeReply::status(404),
        }
    })
}

/// Runs `program <args>` in `dir` with these variables; fails with its output.
fn run(dir: &Path, program: &str, args: &[&str], vars: &[(&str, String)]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{report}");
    report
}

/// Runs the app's tests (`program <args>` in its folder) against a fresh deployment:
/// Redis, the Graph fake, the DingTalk stand-in and the service, the URL and keys passed
/// through the environment; then checks what the runs did upstream.
async fn app_tests_on_a_fresh_deployment(dir: &Path, program: &'static str, args: Vec<String>) {
    let redis = RedisServer::start();
    let graph = GraphFake::start(GraphFakeConfig::default());
    let dt = dingtalk_stand_in();
    // The echo relay's target refuses everything, so each echo becomes `sync.failed`.
    let refusing = FakeServer::start(|_| FakeReply::status(400));
    let app = Env::new()
        .redis(&redis)
        .graph(&graph)
        .config_toml(ROUTES)
        .dingtalk_api(&dt.url(""))
        .set("DINGBRIDGE_DINGTALK_APP_KEY", "dingappkey")
        .set("DINGBRIDGE_DINGTALK_APP_SECRET", "dingappsecret")
        .bootstrap_keys(&format!(
            "{},{}",
            entry("zapier", "actions+triggers", KEY),
            entry("zapier-triggers", "triggers", TRIGGERS_KEY)
        ))
        .set("DINGBRIDGE_API_MAILBOXES", &format!("{ALICE}|Alice"))
        .set("DINGBRIDGE_ECHO_TARGET_URL", &refusing.url("/relay"))
        .set("DINGBRIDGE_ECHO_TOKEN", ECHO_TOKEN)
        .set("DINGBRIDGE_HOOKS_ALLOW_PRIVATE_TARGETS", "127.0.0.1")
        .spawn();
    graph.seed_message(
        ALICE,
        "inbox",
        json!({"subject": "Invoice 42", "isRead": false,
               "from": {"emailAddress": {"address": "vendor@example.com", "name": "Vendor"}},
               "body": {"contentType": "text", "content": "pay"}}),
    );

    let vars = vec![
        ("DINGBRIDGE_URL", app.url("")),
        ("DINGBRIDGE_API_KEY", KEY.to_string()),
        ("DINGBRIDGE_TRIGGERS_KEY", TRIGGERS_KEY.to_string()),
        ("DINGBRIDGE_ECHO_TOKEN", ECHO_TOKEN.to_string()),
    ];
    let d = dir.to_path_buf();
    let report = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&d, program, &args, &vars)
    })
    .await
    .expect("the app's tests");
    assert!(
        report.contains("# fail 0") && report.contains("# skipped 0"),
        "{report}"
    );
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("# tests") || l.starts_with("# pass"))
        .collect();
    eprintln!("{program}: {}", summary.join(", "));

    // What the app's runs did upstream: the keyed robot message once, each unkeyed to-do.
    let robot_posts = dt
        .requests()
        .into_iter()
        .filter(|r| r.path == "/robot/send")
        .count();
    assert_eq!(robot_posts, 1, "one robot post for one Idempotency-Key");
    let todo_creates = dt
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/tasks"))
        .count();
    assert_eq!(todo_creates, 3, "two unkeyed to-dos and one keyed");
    let marked = graph
        .all_messages(ALICE)
        .into_iter()
        .find(|m| m["subject"] == "Invoice 42")
        .expect("the seeded mail");
    assert_eq!(marked["isRead"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zapier_app_works_in_zapier_platform_core_against_the_running_service() {
    common::ensure_node();
    common::ensure_program("npm", "npm");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/zapier");
    if !dir.join("node_modules/zapier-platform-core").exists()
        || !dir.join("node_modules/.bin/zapier-platform").exists()
    {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || {
            run(&d, "npm", &["ci", "--no-audit", "--no-fund"], &[])
        })
        .await
        .expect("npm ci");
    }

    // `npm test` runs on the Node 22 the app's dev dependencies bring (what the CLI and
    // Zapier's runtime use); the same files also run on the machine's own Node.
    app_tests_on_a_fresh_deployment(&dir, "npm", vec!["test".into()]).await;
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .expect("test folder")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".test.js"))
        .map(|n| format!("test/{n}"))
        .collect();
    files.sort();
    files.insert(0, "--test".into());
    app_tests_on_a_fresh_deployment(&dir, "node", files).await;

    // The definition Zapier would take: `zapier-platform validate`, offline.
    let d = dir.clone();
    let report = tokio::task::spawn_blocking(move || run(&d, "npm", &["run", "validate"], &[]))
        .await
        .expect("validate");
    assert!(report.contains("structurally sound"), "{report}");
    // And the zip `push` uploads, smoke-tested by the CLI (Zapier's own style check needs
    // its servers, so it is skipped here; `validate` above is the offline part of it).
    let d = dir.clone();
    let report = tokio::task::spawn_blocking(move || {
        run(&d, "npm", &["run", "build", "--", "--skip-validation"], &[])
    })
    .await
    .expect("build");
    assert!(report.contains("Build complete"), "{report}");
}

#[test]
fn the_n8n_nodes_work_against_the_running_service() {
    node_tests("n8n");
}
