//! The n8n community nodes (`integrations/n8n`) in a real n8n 2.x, against this build's
//! binary on a real Redis: the packed package installed as n8n's docs say (`npm install`
//! into `~/.n8n/nodes`), workflows made through n8n's API, and a DingTalk message pushed
//! to dingbridge running them. The README's paste-able HTTP Request node runs as pasted.
//! First run installs n8n into a cache folder (minutes); later runs reuse it.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    FakeReply, FakeServer, RedisServer, TestApp,
    dingtalk_fake::{DingTalk, group_message, push},
    env::{CONVERSATION, Env},
    eventually, free_port,
    n8n::{N8n, ensure_n8n, run},
};
use serde_json::{Value, json};

const PACKAGE: &str = "n8n-nodes-dingbridge";
/// The robot webhook the workflows post to (dingbridge sends it to the robot fake).
const ROBOT_URL: &str = "https://oapi.dingtalk.com/robot/send?access_token=n8n-e2e";

/// `npm pack` of `integrations/n8n` into `dir`; answers the tarball.
fn pack(dir: &Path) -> PathBuf {
    let src = format!("{}/integrations/n8n", env!("CARGO_MANIFEST_DIR"));
    let name = run(
        Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(dir)
            .current_dir(&src),
        "npm pack",
    );
    dir.join(name.trim().lines().last().expect("tarball name"))
}

/// The README's install: `npm install <tarball>` in `~/.n8n/nodes`. No network: the
/// package has no dependencies, and n8n itself provides `n8n-workflow` (its peer).
fn install_package(nodes: &Path, tarball: &Path) {
    std::fs::create_dir_all(nodes).expect("nodes dir");
    std::fs::write(
        nodes.join("package.json"),
        json!({"name": "installed-nodes", "private": true, "dependencies": {}}).to_string(),
    )
    .expect("package.json");
    run(
        Command::new("npm")
            .args([
                "install",
                "--offline",
                "--no-audit",
                "--no-fund",
                "--legacy-peer-deps",
            ])
            .arg(tarball)
            .current_dir(nodes),
        "npm install the packed nodes",
    );
    assert!(
        nodes
            .join("node_modules")
            .join(PACKAGE)
            .join("package.json")
            .exists()
    );
}

/// The README's paste-able HTTP Request node (the JSON block with `n8n-nodes-base.httpRequest`).
fn readme_http_node() -> Value {
    let readme = std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR")))
        .expect("README");
    let block = readme
        .split("```json")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("n8n-nodes-base.httpRequest"))
        .expect("the README has a paste-able HTTP Request node");
    let pasted: Value = serde_json::from_str(block).expect("the pasted node is JSON");
    pasted["nodes"][0].clone()
}

/// Every hook dingbridge has, through an `admin` key.
async fn hooks(app: &TestApp, admin: &str) -> Vec<Value> {
    let resp = app
        .http
        .get(app.url("/v1/hooks"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("hooks");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// The executions of `workflow`, newest first, with their data.
async fn executions(n8n: &N8n, workflow: &str) -> Vec<Value> {
    let (status, body) = n8n
        .api(
            "GET",
            &format!("/executions?workflowId={workflow}&includeData=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

/// Waits for `workflow`'s `n`th execution to end; answers it.
async fn nth_execution(n8n: &N8n, workflow: &str, n: usize) -> Value {
    eventually(Duration::from_secs(30), || async {
        let list = executions(n8n, workflow).await;
        (list.len() >= n
            && list
                .iter()
                .all(|e| e["finished"] == true || e["stoppedAt"].is_string()))
        .then(|| list[list.len() - n].clone())
    })
    .await
    .unwrap_or_else(|| panic!("no execution {n} of {workflow}:\n{}", n8n.log_tail()))
}

/// The JSON items node `name` output in an execution.
fn node_output(execution: &Value, name: &str) -> Vec<Value> {
    execution["data"]["resultData"]["runData"][name][0]["data"]["main"][0]
        .as_array()
        .map(|items| items.iter().map(|i| i["json"].clone()).collect())
        .unwrap_or_default()
}

/// What the robot fake received, as (Idempotency-free) message texts.
fn robot_texts(robot: &FakeServer) -> Vec<String> {
    robot
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/robot/send"))
        .map(|r| {
            r.json()["text"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn create_workflow(n8n: &N8n, workflow: Value) -> String {
    let (status, body) = n8n.api("POST", "/workflows", Some(workflow)).await;
    assert_eq!(status, 200, "create workflow: {body}");
    body["id"].as_str().expect("workflow id").to_string()
}

async fn activate(n8n: &N8n, id: &str) -> (u16, Value) {
    n8n.api(
        "POST",
        &format!("/workflows/{id}/activate"),
        Some(json!({})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_community_nodes_run_in_a_real_n8n() {
    let begun = Instant::now();
    let bin = ensure_n8n();
    let installed = begun.elapsed();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n8n = N8n::new(bin, dir.path());
    install_package(&n8n.nodes_dir(), &pack(dir.path()));

    // dingbridge on a fixed port (restarted below), DingTalk's robot on a fake.
    let redis = RedisServer::start();
    let dt = DingTalk::start();
    let robot = FakeServer::start(|_| FakeReply::json(json!({"errcode": 0, "errmsg": "ok"})));
    let port = free_port();
    let env = Env::new()
        .redis(&redis)
        .dingtalk(&dt)
        .set("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &robot.url(""))
        .listen(&format!("127.0.0.1:{port}"));
    // As shipped for a LAN: only 127.0.0.1 allowed, so n8n's `localhost` (also ::1) is refused.
    let mut app = env
        .clone()
        .set("DINGBRIDGE_HOOKS_ALLOW_PRIVATE_TARGETS", "127.0.0.1")
        .spawn();
    let key = crate::lowcode::create_key(&redis, "n8n", "triggers,actions");
    let snippet_key = crate::lowcode::create_key(&redis, "n8n-http-node", "actions");
    let admin = crate::lowcode::create_key(&redis, "admin", "admin");
    let bridge = format!("http://127.0.0.1:{port}");

    n8n.start().await;
    n8n.setup_owner().await;

    // The credential: n8n's own credential test, passing with the key and failing without.
    let cred_data = json!({"baseUrl": format!("{bridge}/"), "apiKey": key});
    // Made as the editor makes them (the public API's schema check trips over the
    // domain-restriction fields n8n adds to every credential with `authenticate`).
    let cred = n8n
        .rest(
            "POST",
            "/credentials",
            Some(json!({"name": "dingbridge", "type": "dingbridgeApi", "data": cred_data})),
        )
        .await;
    let cred_id = cred["data"]["id"]
        .as_str()
        .expect("credential id")
        .to_string();
    let tested = |data: Value| {
        let n8n = &n8n;
        let cred_id = cred_id.clone();
        async move {
            n8n.rest(
                "POST",
                "/credentials/test",
                Some(json!({"credentials": {"id": cred_id, "name": "dingbridge", "type": "dingbridgeApi", "data": data}})),
            )
            .await
        }
    };
    let ok = tested(cred_data.clone()).await;
    assert_eq!(ok["data"]["status"], "OK", "{ok}");
    let wrong = tested(json!({"baseUrl": bridge, "apiKey": "dbk_000000000000_wrong"})).await;
    assert_eq!(wrong["data"]["status"], "Error", "{wrong}");
    let header_cred = n8n
        .rest(
            "POST",
            "/credentials",
            Some(json!({"name": "dingbridge key", "type": "httpHeaderAuth",
                "data": {"name": "X-API-Key", "value": snippet_key}})),
        )
        .await;
    let header_cred_id = header_cred["data"]["id"]
        .as_str()
        .expect("credential id")
        .to_string();

    // Trigger → the action node, and → the README's HTTP Request node as pasted (its
    // deployment URL swapped for this one, the credential picked).
    let mut pasted = readme_http_node();
    let url = pasted["parameters"]["url"]
        .as_str()
        .expect("url")
        .replace("https://bridge.example.com", &bridge);
    pasted["parameters"]["url"] = json!(url);
    pasted["parameters"]["jsonBody"] = json!(
        pasted["parameters"]["jsonBody"]
            .as_str()
            .expect("jsonBody")
            .replace(
                "https://oapi.dingtalk.com/robot/send?access_token=…",
                ROBOT_URL
            )
    );
    pasted["credentials"] =
        json!({"httpHeaderAuth": {"id": header_cred_id, "name": "dingbridge key"}});
    let pasted_name = pasted["name"].as_str().expect("name").to_string();
    let credentials = json!({"dingbridgeApi": {"id": cred_id, "name": "dingbridge"}});
    let relay = create_workflow(
        &n8n,
        json!({
            "name": "DingTalk message to robot",
            "settings": {"executionOrder": "v1"},
            "nodes": [
                {"name": "On DingTalk message", "type": format!("{PACKAGE}.dingbridgeTrigger"),
                 "typeVersion": 1, "position": [0, 0], "webhookId": "5d0f4a8e-3c3e-4d59-9a53-6a6c1f0d2b11",
                 "parameters": {"event": "dingtalk.message.received"}, "credentials": credentials},
                {"name": "Send via dingbridge", "type": format!("{PACKAGE}.dingbridge"),
                 "typeVersion": 1, "position": [300, 0],
                 "parameters": {
                    "action": "dingtalk.send_message",
                    "input": format!("={{{{ JSON.stringify({{ target: 'robot', webhook_url: '{ROBOT_URL}', text: $json.sender_name + ': ' + $json.text }}) }}}}"),
                    "idempotencyKey": "={{ $json.id }}"},
                 "credentials": credentials},
                pasted,
            ],
            "connections": {"On DingTalk message": {"main": [[
                {"node": "Send via dingbridge", "type": "main", "index": 0},
                {"node": pasted_name, "type": "main", "index": 0},
            ]]}},
        }),
    )
    .await;

    // Refused by the SSRF guard: the activation fails and says which setting to change.
    let (status, refused) = activate(&n8n, &relay).await;
    assert_eq!(status, 400, "activation must fail: {refused}");
    let why = refused["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("hooks.allow_private_targets"),
        "n8n shows: {refused}"
    );
    assert!(hooks(&app, &admin).await.is_empty());
    let (_, workflow) = n8n.api("GET", &format!("/workflows/{relay}"), None).await;
    assert_eq!(
        workflow["active"], false,
        "a refused workflow does not read as active"
    );

    // With both loopback addresses allowed: one hook, also after n8n restarts.
    assert!(app.terminate(Duration::from_secs(10)));
    app = env
        .clone()
        .set("DINGBRIDGE_HOOKS_ALLOW_PRIVATE_TARGETS", "127.0.0.1,::1")
        .spawn();
    let (status, active) = activate(&n8n, &relay).await;
    assert_eq!(status, 200, "activation: {active}");
    let subscribed = hooks(&app, &admin).await;
    assert_eq!(subscribed.len(), 1, "{subscribed:?}");
    let hook = subscribed[0].clone();
    assert_eq!(hook["event"], "dingtalk.message.received");
    let target = hook["target_url"].as_str().expect("target").to_string();
    assert!(
        target.starts_with(&format!("{}/webhook/", n8n.base())),
        "{target}"
    );
    let restarted = Instant::now();
    n8n.stop();
    n8n.start().await;
    let n8n_restart = restarted.elapsed();
    n8n.login().await;
    let after = hooks(&app, &admin).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        after[0]["id"], hook["id"],
        "the same hook, not a second one"
    );

    // A DingTalk message runs the workflow once with the event's fields; both nodes post.
    let sent_at = Instant::now();
    push(
        &app,
        &group_message("msg-n8n-1", CONVERSATION, "Container 7 cleared"),
    )
    .await;
    let run = nth_execution(&n8n, &relay, 1).await;
    let to_n8n = sent_at.elapsed();
    assert_eq!(
        run["status"], "success",
        "{}",
        run["data"]["resultData"]["error"]
    );
    let event = &node_output(&run, "On DingTalk message")[0];
    assert_eq!(event["event"], "dingtalk.message.received");
    assert_eq!(event["text"], "Container 7 cleared");
    assert_eq!(event["sender_name"], "王五");
    assert!(
        event["subject"].is_null(),
        "the message event has no subject"
    );
    let sent = node_output(&run, "Send via dingbridge");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["target"], "robot", "{sent:?}");
    assert_eq!(
        node_output(&run, &pasted_name).len(),
        1,
        "the README node ran"
    );
    let mut texts = robot_texts(&robot);
    texts.sort();
    assert_eq!(
        texts,
        vec![
            "Container 7 cleared".to_string(),
            "王五: Container 7 cleared".to_string()
        ],
        "the action node and the README node each posted once"
    );

    // A forged delivery (right URL, wrong signature) is refused and runs nothing.
    let forged = reqwest::Client::new()
        .post(&target)
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            (dingbridge::store::now_ms() / 1000).to_string(),
        )
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .json(event)
        .send()
        .await
        .expect("forged delivery");
    assert_eq!(forged.status(), 401);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        executions(&n8n, &relay).await.len(),
        1,
        "the forged delivery ran nothing"
    );

    // Deactivating removes the hook.
    let (status, body) = n8n
        .api(
            "POST",
            &format!("/workflows/{relay}/deactivate"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(hooks(&app, &admin).await.is_empty());

    // The action node: once per Idempotency-Key, and dingbridge's own error text.
    let action = create_workflow(
        &n8n,
        json!({
            "name": "Robot message from a webhook",
            "settings": {"executionOrder": "v1"},
            "nodes": [
                {"name": "Webhook", "type": "n8n-nodes-base.webhook", "typeVersion": 2,
                 "position": [0, 0], "webhookId": "0e7c1a52-95a4-4c57-a7a5-0d3c9b8f6e21",
                 "parameters": {"httpMethod": "POST", "path": "dingbridge-action", "responseMode": "onReceived"}},
                {"name": "Send via dingbridge", "type": format!("{PACKAGE}.dingbridge"),
                 "typeVersion": 1, "position": [300, 0],
                 "parameters": {
                    "action": "dingtalk.send_message",
                    "input": format!("={{{{ JSON.stringify({{ target: 'robot', webhook_url: '{ROBOT_URL}', text: $json.body.text }}) }}}}"),
                    "idempotencyKey": "={{ $json.body.key }}"},
                 "credentials": credentials},
            ],
            "connections": {"Webhook": {"main": [[{"node": "Send via dingbridge", "type": "main", "index": 0}]]}},
        }),
    )
    .await;
    let (status, body) = activate(&n8n, &action).await;
    assert_eq!(status, 200, "{body}");
    let call = |body: Value| {
        let url = format!("{}/webhook/dingbridge-action", n8n.base());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("webhook");
            assert_eq!(resp.status(), 200);
        }
    };
    call(json!({"key": "order-42", "text": "Invoice 42 paid"})).await;
    nth_execution(&n8n, &action, 1).await;
    call(json!({"key": "order-42", "text": "Invoice 42 paid"})).await;
    let again = nth_execution(&n8n, &action, 2).await;
    assert_eq!(again["status"], "success");
    let paid = robot_texts(&robot)
        .iter()
        .filter(|t| *t == "Invoice 42 paid")
        .count();
    assert_eq!(paid, 1, "one post for one Idempotency-Key");
    call(json!({"key": "order-43"})).await;
    let failed = nth_execution(&n8n, &action, 3).await;
    assert_eq!(failed["status"], "error");
    let error = &failed["data"]["resultData"]["error"];
    let shown = error["message"].as_str().unwrap_or_default();
    assert!(
        shown.starts_with("dingbridge: ") && shown.contains("text: is required"),
        "n8n shows: {error}"
    );
    assert!(
        !shown.contains("Bad request - please check your parameters"),
        "{error}"
    );

    eprintln!(
        "real n8n test: install {installed:?}, n8n restart {n8n_restart:?}, DingTalk push to n8n execution {to_n8n:?}, total {:?}",
        begun.elapsed()
    );
}

#[test]
fn the_n8n_package_passes_n8ns_community_linter_and_scanner() {
    common::ensure_node();
    let dir = format!("{}/integrations/n8n", env!("CARGO_MANIFEST_DIR"));
    // The pinned dev tools (package-lock.json, left as it is); install scripts off (.npmrc).
    run(
        Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund"])
            .current_dir(&dir),
        "npm install (dev tools)",
    );
    run(
        Command::new("npm").args(["run", "lint"]).current_dir(&dir),
        "eslint with n8n's community rules",
    );
    let scan = run(
        Command::new("npm").args(["run", "scan"]).current_dir(&dir),
        "n8n's scanner",
    );
    assert!(scan.contains("n8n community-package scan passed"), "{scan}");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/package.json")).expect("package.json"),
    )
    .expect("json");
    assert!(
        manifest["keywords"]
            .as_array()
            .expect("keywords")
            .contains(&json!("n8n-community-node-package"))
    );
    assert!(
        manifest.get("dependencies").is_none(),
        "no runtime dependencies"
    );
    assert_eq!(manifest["peerDependencies"], json!({"n8n-workflow": "*"}));
    for path in manifest["n8n"]["nodes"]
        .as_array()
        .into_iter()
        .chain(manifest["n8n"]["credentials"].as_array())
        .flatten()
    {
        let path = path.as_str().expect("path");
        assert!(
            path.starts_with("dist/") && std::path::Path::new(&dir).join(path).exists(),
            "{path}"
        );
    }
}
