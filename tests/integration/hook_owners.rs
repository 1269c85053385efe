//! REST hooks belong to the API key that made them: through the running binary with
//! several keys, a key lists, reads and deletes only its own hooks (another key's hook
//! reads as absent), `admin` sees and deletes all, and hooks of older versions that
//! recorded no owner are left to `admin`.

use crate::{common, lowcode::create_key};

use common::{FakeServer, RedisServer, TestApp, env::Env, error_code};
use serde_json::{Value, json};

fn spawn(redis: &RedisServer) -> TestApp {
    Env::new().redis(redis).loopback_hooks().spawn()
}

async fn subscribe(app: &TestApp, key: &str, target: &str) -> Value {
    let resp = app
        .http
        .post(app.url("/v1/hooks"))
        .bearer_auth(key)
        .json(&json!({ "target_url": target, "event": "outlook.mail.received" }))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(resp.status(), 201);
    resp.json().await.expect("json")
}

async fn call(app: &TestApp, method: reqwest::Method, key: &str, path: &str) -> reqwest::Response {
    app.http
        .request(method, app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
}

/// The ids `key` lists, sorted.
async fn listed_ids(app: &TestApp, key: &str) -> Vec<String> {
    let resp = call(app, reqwest::Method::GET, key, "/v1/hooks").await;
    assert_eq!(resp.status(), 200);
    let list: Vec<Value> = resp.json().await.expect("list");
    let mut ids: Vec<String> = list
        .iter()
        .filter_map(|h| h["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn id(hook: &Value) -> String {
    hook["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lists_reads_and_deletes_only_its_own_hooks_and_admin_all() {
    let redis = RedisServer::start();
    let alice = create_key(&redis, "zapier-alice", "triggers");
    let bob = create_key(&redis, "n8n-bob", "triggers");
    let ops = create_key(&redis, "ops", "admin");
    let target = FakeServer::ok();
    let app = spawn(&redis);
    let a = subscribe(&app, &alice, &target.url("/hooks/catch/1/alice")).await;
    let b = subscribe(&app, &bob, &target.url("/hooks/catch/2/bob")).await;
    let (a_path, b_path) = (
        format!("/v1/hooks/{}", id(&a)),
        format!("/v1/hooks/{}", id(&b)),
    );

    // Listing: each key its own; admin every hook, with its owner.
    assert_eq!(listed_ids(&app, &alice).await, vec![id(&a)]);
    assert_eq!(listed_ids(&app, &bob).await, vec![id(&b)]);
    let mut both = vec![id(&a), id(&b)];
    both.sort();
    assert_eq!(listed_ids(&app, &ops).await, both);

    // Reading: one's own hook (never its secret); another key's reads exactly as a
    // hook that does not exist, so ids do not reveal existence.
    let own = call(&app, reqwest::Method::GET, &alice, &a_path).await;
    assert_eq!(own.status(), 200);
    let own: Value = own.json().await.expect("json");
    assert_eq!(own["target_url"], a["target_url"]);
    assert!(
        own.get("secret").is_none(),
        "secrets are shown only at creation"
    );
    let foreign = call(&app, reqwest::Method::GET, &bob, &a_path).await;
    let (status, code, _) = error_code(foreign).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let absent = call(
        &app,
        reqwest::Method::GET,
        &bob,
        "/v1/hooks/hook_never_existed",
    )
    .await;
    let (status, code, _) = error_code(absent).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let by_admin = call(&app, reqwest::Method::GET, &ops, &b_path).await;
    assert_eq!(by_admin.status(), 200);

    // Deleting another key's hook answers as for an absent one (2xx, Zapier and n8n need
    // it) and leaves the hook in place.
    let resp = call(&app, reqwest::Method::DELETE, &bob, &a_path).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(listed_ids(&app, &alice).await, vec![id(&a)], "still there");

    // Admin deletes anyone's; an owner its own.
    let resp = call(&app, reqwest::Method::DELETE, &ops, &b_path).await;
    assert_eq!(resp.status(), 204);
    assert!(listed_ids(&app, &bob).await.is_empty());
    let resp = call(&app, reqwest::Method::DELETE, &alice, &a_path).await;
    assert_eq!(resp.status(), 204);
    assert!(listed_ids(&app, &ops).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_belong_to_the_key_not_its_name_and_ownerless_old_hooks_to_admin_only() {
    let redis = RedisServer::start();
    // A hook as versions that recorded no owner stored it.
    let legacy = json!({"id": "hook_legacy2", "target_url": "http://127.0.0.1:9/old",
        "event": "sync.failed", "secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTIzNA==",
        "created_at": "2026-01-01T00:00:00Z", "status": "active"});
    let _: () = redis::cmd("SET")
        .arg("dingbridge:kv:hook:hook_legacy2")
        .arg(legacy.to_string())
        .query(&mut redis.client())
        .expect("set");
    let first = create_key(&redis, "zapier", "triggers");
    let second = create_key(&redis, "zapier", "triggers");
    let ops = create_key(&redis, "ops", "admin");
    let target = FakeServer::ok();
    let app = spawn(&redis);
    let hook = subscribe(&app, &first, &target.url("/hooks/catch/3/x")).await;

    assert_eq!(listed_ids(&app, &first).await, vec![id(&hook)]);
    assert!(
        listed_ids(&app, &second).await.is_empty(),
        "a second key with the same name is someone else"
    );
    let resp = call(&app, reqwest::Method::GET, &first, "/v1/hooks/hook_legacy2").await;
    assert_eq!(resp.status(), 404, "an ownerless hook is admin-only");
    let resp = call(
        &app,
        reqwest::Method::DELETE,
        &first,
        "/v1/hooks/hook_legacy2",
    )
    .await;
    assert_eq!(resp.status(), 204);

    let mut all = vec![id(&hook), "hook_legacy2".to_string()];
    all.sort();
    assert_eq!(listed_ids(&app, &ops).await, all, "not deleted by a key");
    let resp = call(
        &app,
        reqwest::Method::DELETE,
        &ops,
        "/v1/hooks/hook_legacy2",
    )
    .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(listed_ids(&app, &ops).await, vec![id(&hook)]);
}
