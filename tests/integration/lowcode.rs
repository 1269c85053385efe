//! The Zapier / n8n surface through the running binary on a real Redis: API keys and
//! scopes, REST hooks with Standard Webhooks signatures, 410 / n8n-404 handling, polling,
//! Idempotency-Key, SSRF refusal, and the DingTalk robot action against a fake.

use crate::common;

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{
    FakeReply, FakeServer, RedisServer, TestApp,
    env::{ECHO_TOKEN, Env},
    error_code, eventually,
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// `dingbridge keys create` against the Redis store; answers the printed key.
pub(crate) fn create_key(redis: &RedisServer, name: &str, scopes: &str) -> String {
    let out = Env::new()
        .redis(redis)
        .run(&["keys", "create", "--name", name, "--scopes", scopes]);
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert!(key.starts_with("dbk_"), "{key}");
    key
}

fn keys_cli(redis: &RedisServer, args: &[&str]) -> (bool, String) {
    let out = Env::new().redis(redis).run(&[&["keys"], args].concat());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The service on `redis`, echo relay to `echo_target`, hooks to loopback allowed.
fn spawn(redis: &RedisServer, echo_target: &str, extra: &[(&str, &str)]) -> TestApp {
    Env::new()
        .redis(redis)
        .echo(echo_target)
        .loopback_hooks()
        .backoff_ms(100, 200)
        .set("DINGBRIDGE_WORKERS_MAX_ATTEMPTS", "50")
        .set_all(extra)
        .spawn()
}

async fn get(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    app.http
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
}

async fn subscribe(app: &TestApp, key: &str, target: &str, event: &str) -> Value {
    let resp = app
        .http
        .post(app.url("/v1/hooks"))
        .header("X-API-Key", key)
        .json(&json!({ "target_url": target, "event": event }))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(resp.status(), 201);
    resp.json().await.expect("json")
}

/// Makes a relay fail for good: an echo event whose target answers 400 is dead-lettered,
/// which publishes `sync.failed`.
async fn fail_a_relay(app: &TestApp, event_id: &str) {
    let resp = app
        .http
        .post(app.url("/webhooks/echo"))
        .header("X-Echo-Token", ECHO_TOKEN)
        .json(&json!({ "event_id": event_id }))
        .send()
        .await
        .expect("echo");
    assert_eq!(resp.status(), 202);
}

fn failing_echo_target() -> FakeServer {
    FakeServer::start(|_| FakeReply {
        body: r#"{"error":"no such recipient"}"#.into(),
        ..FakeReply::status(400)
    })
}

/// Standard Webhooks verification written from the specification (not the crate's
/// signer): HMAC-SHA256 keyed with base64-decode(secret without `whsec_`) over
/// `{webhook-id}.{webhook-timestamp}.{raw body}`; the header lists space-separated
/// `v1,<base64>` signatures; the timestamp must be recent.
fn verify_standard_webhook(secret: &str, headers: &common::Recorded) -> Result<(), String> {
    let id = headers.header("webhook-id").ok_or("no webhook-id")?;
    let ts = headers
        .header("webhook-timestamp")
        .ok_or("no webhook-timestamp")?;
    let sigs = headers
        .header("webhook-signature")
        .ok_or("no webhook-signature")?;
    let ts_num: i64 = ts.parse().map_err(|_| "timestamp not an integer")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    if (now - ts_num).abs() > 300 {
        return Err("timestamp outside tolerance".into());
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("secret prefix")?)
        .map_err(|_| "secret not base64")?;
    let mut signed = Vec::new();
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(ts.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(&headers.body);
    for sig in sigs.split(' ') {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        let Ok(given) = STANDARD.decode(b64) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
        mac.update(&signed);
        if mac.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err("no matching v1 signature".into())
}

async fn audit_actions(app: &TestApp, admin: &str) -> Vec<Value> {
    get(app, admin, "/v1/audit?limit=100")
        .await
        .json::<Vec<Value>>()
        .await
        .expect("audit json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_key_is_401_and_a_missing_scope_is_403() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "triggers");
    let app = spawn(&redis, "http://127.0.0.1:9/", &[]);

    let resp = app.http.get(app.url("/v1/me")).send().await.expect("me");
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let wrong = format!("{}0", &key[..key.len() - 1]);
    let wrong = if wrong == key {
        format!("{}1", &key[..key.len() - 1])
    } else {
        wrong
    };
    let (status, code, _) = error_code(get(&app, &wrong, "/v1/me").await).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));

    let me: Value = app
        .http
        .get(app.url("/v1/me"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["name"], "zapier");
    assert_eq!(me["scopes"], json!(["triggers"]));
    assert_eq!(me["routes"], json!([]));
    assert_eq!(me["id"].as_str().map(str::len), Some(12));

    let resp = app
        .http
        .post(app.url("/v1/actions/dingtalk.send_message"))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .expect("action");
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let (status, code, _) = error_code(get(&app, &key, "/v1/audit").await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));

    let (ok, listing) = keys_cli(&redis, &["list"]);
    assert!(ok && listing.contains("zapier"), "{listing}");
    let id = me["id"].as_str().expect("id");
    assert!(keys_cli(&redis, &["revoke", id]).0);
    let (status, code, _) = error_code(get(&app, &key, "/v1/me").await).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "unauthorized"),
        "a revoked key stops working at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_hook_receives_one_correctly_signed_delivery_per_event() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "n8n", "triggers");
    let echo = failing_echo_target();
    let target = FakeServer::ok();
    let app = spawn(&redis, &echo.url("/relay"), &[]);

    let hook = subscribe(
        &app,
        &key,
        &target.url("/webhook/abc/webhook"),
        "sync.failed",
    )
    .await;
    let secret = hook["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"));
    assert!(hook["id"].as_str().expect("id").starts_with("hook_"));
    let listed: Vec<Value> = get(&app, &key, "/v1/hooks")
        .await
        .json()
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["target_url"], hook["target_url"]);
    assert_eq!(listed[0]["event"], "sync.failed");
    assert!(
        listed[0].get("secret").is_none(),
        "secrets are never listed"
    );

    fail_a_relay(&app, "evt-signed").await;
    let delivery = eventually(Duration::from_secs(15), || async {
        target.requests().into_iter().next()
    })
    .await
    .expect("a delivery arrives");
    verify_standard_webhook(secret, &delivery).expect("signature verifies");
    let mut tampered = delivery.clone();
    tampered.body.push(b' ');
    assert!(verify_standard_webhook(secret, &tampered).is_err());

    let body = delivery.json();
    assert!(body.is_object(), "one JSON object per event");
    assert_eq!(body["event"], "sync.failed");
    assert_eq!(body["job_kind"], "echo");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("no such recipient")
    );
    chrono::DateTime::parse_from_rfc3339(body["occurred_at"].as_str().expect("time"))
        .expect("RFC 3339 with offset");

    // The same event is what polling shows, with the same id.
    let polled: Vec<Value> = get(&app, &key, "/v1/triggers/sync.failed")
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(polled.len(), 1);
    assert_eq!(polled[0]["id"], body["id"]);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.requests().len(), 1, "delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_from_the_target_deletes_the_subscription_with_an_audit_entry() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "triggers,admin");
    let echo = failing_echo_target();
    let target = FakeServer::start(|_| FakeReply::status(410));
    let app = spawn(&redis, &echo.url("/relay"), &[]);
    let hook = subscribe(
        &app,
        &key,
        &target.url("/hooks/standard/1/x"),
        "sync.failed",
    )
    .await;

    fail_a_relay(&app, "evt-410").await;
    let gone = eventually(Duration::from_secs(15), || async {
        let list: Vec<Value> = get(&app, &key, "/v1/hooks").await.json().await.ok()?;
        list.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the hook is removed after a 410");
    assert_eq!(target.requests().len(), 1, "no retry after 410");
    let audit = audit_actions(&app, &key).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "hook.removed" && e["detail"]["hook_id"] == hook["id"]),
        "{audit:?}"
    );

    fail_a_relay(&app, "evt-410-b").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(target.requests().len(), 1, "nothing goes to a removed hook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_n8n_404_past_the_grace_period_disables_the_hook_with_an_audit_entry() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "n8n", "triggers,admin");
    let echo = failing_echo_target();
    let target = FakeServer::start(|_| FakeReply {
        body: r#"{"code":404,"message":"The requested webhook \"POST x\" is not registered."}"#
            .into(),
        ..FakeReply::status(404)
    });
    let app = spawn(
        &redis,
        &echo.url("/relay"),
        &[("DINGBRIDGE_HOOKS_GONE_GRACE_SECS", "1")],
    );
    let hook = subscribe(&app, &key, &target.url("/webhook/x/webhook"), "sync.failed").await;

    fail_a_relay(&app, "evt-404").await;
    let disabled = eventually(Duration::from_secs(20), || async {
        let list: Vec<Value> = get(&app, &key, "/v1/hooks").await.json().await.ok()?;
        list.is_empty().then_some(())
    })
    .await;
    assert!(disabled.is_some(), "the hook is disabled after the grace");
    let requests = target.requests();
    assert!(requests.len() >= 2, "404s are retried within the grace");
    let first = requests.first().expect("first").at;
    let last = requests.last().expect("last").at;
    assert!(
        last.duration_since(first) >= Duration::from_secs(1),
        "not disabled before the grace"
    );
    let audit = audit_actions(&app, &key).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "hook.disabled" && e["detail"]["hook_id"] == hook["id"]),
        "{audit:?}"
    );
    let n = target.requests().len();
    fail_a_relay(&app, "evt-404-b").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(target.requests().len(), n, "a disabled hook gets nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_deleted_while_a_delivery_is_in_flight_stays_deleted() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "n8n", "triggers,admin");
    let echo = failing_echo_target();
    // An inactive n8n workflow answering 404, slowly: the DELETE lands mid-delivery.
    let target = FakeServer::start(|_| FakeReply::status(404).delayed(Duration::from_millis(1500)));
    let app = spawn(&redis, &echo.url("/relay"), &[]);
    let hook = subscribe(&app, &key, &target.url("/webhook/x/webhook"), "sync.failed").await;
    let path = format!("/v1/hooks/{}", hook["id"].as_str().expect("id"));

    fail_a_relay(&app, "evt-in-flight").await;
    let in_flight = eventually(Duration::from_secs(20), || async {
        (!target.requests().is_empty()).then_some(())
    })
    .await;
    assert!(in_flight.is_some(), "a delivery started");
    let resp = app
        .http
        .delete(app.url(&path))
        .bearer_auth(&key)
        .send()
        .await
        .expect("delete");
    assert!(resp.status().is_success(), "{}", resp.status());

    // The delivery's 404 answer arrives after the delete, and its retries would follow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list: Vec<Value> = get(&app, &key, "/v1/hooks")
        .await
        .json()
        .await
        .expect("list");
    assert!(list.is_empty(), "the deleted hook came back: {list:?}");
    let resp = get(&app, &key, &path).await;
    assert_eq!(resp.status(), 404);
    let n = target.requests().len();
    assert_eq!(n, 1, "no retry to a deleted hook");
    fail_a_relay(&app, "evt-after-delete").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(target.requests().len(), n, "nothing goes to a deleted hook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_hook_answers_2xx_even_when_it_is_already_gone() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "triggers");
    let target = FakeServer::ok();
    let app = spawn(&redis, "http://127.0.0.1:9/", &[]);
    let hook = subscribe(&app, &key, &target.url("/h"), "outlook.mail.received").await;
    let path = format!("/v1/hooks/{}", hook["id"].as_str().expect("id"));
    for _ in 0..2 {
        let resp = app
            .http
            .delete(app.url(&path))
            .bearer_auth(&key)
            .send()
            .await
            .expect("delete");
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    let list: Vec<Value> = get(&app, &key, "/v1/hooks")
        .await
        .json()
        .await
        .expect("list");
    assert!(list.is_empty());
    let resp = app
        .http
        .delete(app.url("/v1/hooks/hook_never_existed"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("delete");
    assert!(resp.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_lists_newest_first_with_stable_ids() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "triggers");
    let echo = failing_echo_target();
    let app = spawn(&redis, &echo.url("/relay"), &[]);

    let empty: Vec<Value> = get(&app, &key, "/v1/triggers/outlook.mail.received")
        .await
        .json()
        .await
        .expect("poll");
    assert!(empty.is_empty(), "a bare (empty) array");

    for i in 0..3 {
        fail_a_relay(&app, &format!("evt-poll-{i}")).await;
        // One at a time so that the order is known.
        eventually(Duration::from_secs(15), || async {
            let v: Vec<Value> = get(&app, &key, "/v1/triggers/sync.failed")
                .await
                .json()
                .await
                .ok()?;
            (v.len() == i + 1).then_some(())
        })
        .await
        .expect("event recorded");
    }
    let first: Vec<Value> = get(&app, &key, "/v1/triggers/sync.failed")
        .await
        .json()
        .await
        .expect("poll");
    let second: Vec<Value> = get(&app, &key, "/v1/triggers/sync.failed")
        .await
        .json()
        .await
        .expect("poll");
    let ids = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|e| e["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(first.len(), 3);
    assert_eq!(ids(&first), ids(&second), "ids are stable across polls");
    let times: Vec<String> = first
        .iter()
        .map(|e| e["occurred_at"].as_str().expect("t").to_string())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    let limited: Vec<Value> = get(&app, &key, "/v1/triggers/sync.failed?limit=2")
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(ids(&limited), ids(&first)[..2].to_vec());

    let (status, code, body) = error_code(get(&app, &key, "/v1/triggers/nope.event").await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("dingtalk.message.received")
    );
    let (status, code, _) =
        error_code(get(&app, &key, "/v1/triggers/sync.failed?limit=0").await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_targets_are_refused_with_a_field_message() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "triggers");
    // No allow-list here.
    let app = Env::new().redis(&redis).spawn();
    for target in [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.5/hook",
        "http://[::1]:5678/webhook/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:5678/webhook/x",
        "ftp://example.com/x",
        "https://user:pass@example.com/x",
    ] {
        let resp = app
            .http
            .post(app.url("/v1/hooks"))
            .bearer_auth(&key)
            .json(&json!({ "target_url": target, "event": "sync.failed" }))
            .send()
            .await
            .expect("subscribe");
        let (status, code, body) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (400, "invalid_input"), "{target}");
        assert!(
            body["error"]["details"]["fields"]["target_url"].is_string(),
            "{target}: {body}"
        );
    }
    let list: Vec<Value> = get(&app, &key, "/v1/hooks")
        .await
        .json()
        .await
        .expect("list");
    assert!(list.is_empty());
}

/// `sign` DingTalk expects: url-encoded base64 HMAC-SHA256(secret, "{ts}\n{secret}").
fn dingtalk_sign(secret: &str, ts: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{ts}\n{secret}").as_bytes());
    let b64 = STANDARD.encode(mac.finalize().into_bytes());
    b64.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

fn robot_fake(delay: Duration) -> FakeServer {
    FakeServer::start(move |_| {
        FakeReply::json(json!({"errcode": 0, "errmsg": "ok"})).delayed(delay)
    })
}

fn robot_input(text: &str) -> Value {
    json!({
        "target": "robot",
        "webhook_url": "https://oapi.dingtalk.com/robot/send?access_token=tok123",
        "secret": "SECtestsecret",
        "text": text,
    })
}

async fn send_robot(
    app: &TestApp,
    key: &str,
    idem: Option<&str>,
    input: &Value,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url("/v1/actions/dingtalk.send_message"))
        .bearer_auth(key)
        .json(input);
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.expect("action")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_robot_action_posts_a_signed_message_to_dingtalk() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "actions");
    let dingtalk = robot_fake(Duration::ZERO);
    let base = dingtalk.url("");
    let app = spawn(
        &redis,
        "http://127.0.0.1:9/",
        &[("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &base)],
    );
    let resp = send_robot(
        &app,
        &key,
        Some("evt_42"),
        &robot_input("hello from a test"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.expect("json");
    assert!(out.is_object());
    assert_eq!(out["ok"], true);

    let got = dingtalk.requests();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/robot/send");
    let q: std::collections::HashMap<&str, &str> = r
        .query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .collect();
    assert_eq!(q["access_token"], "tok123");
    let ts: i64 = q["timestamp"].parse().expect("ms timestamp");
    let now = chrono::Utc::now().timestamp_millis();
    assert!((now - ts).abs() < 60_000, "timestamp is now, in ms");
    assert_eq!(q["sign"], dingtalk_sign("SECtestsecret", q["timestamp"]));
    let body = r.json();
    assert_eq!(body["msgtype"], "text");
    assert_eq!(body["text"]["content"], "hello from a test");
    assert_eq!(body["msgUuid"], out["msg_uuid"]);
    assert!(!body["msgUuid"].as_str().expect("uuid").is_empty());

    // Field-level validation.
    let resp = send_robot(
        &app,
        &key,
        None,
        &json!({"target": "robot", "webhook_url": "https://x.example/nope", "subjekt": 1}),
    )
    .await;
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    let fields = &body["error"]["details"]["fields"];
    assert!(fields["text"].is_string(), "{body}");
    assert!(fields["webhook_url"].is_string(), "{body}");
    assert!(fields["subjekt"].is_string(), "{body}");

    // Outlook actions need the Graph connection.
    let resp = app
        .http
        .post(app.url("/v1/actions/outlook.send_mail"))
        .bearer_auth(&key)
        .json(&json!({"to": "a@example.com", "subject": "s", "body": "b", "mailbox": "m@example.com"}))
        .send()
        .await
        .expect("action");
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (404, "not_configured"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_dingtalk_throttled_waits_out_its_ten_minute_block_without_calling_again() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "actions");
    let dingtalk = FakeServer::start(|_| {
        FakeReply::json(json!({"errcode": 410100, "errmsg": "send too fast"}))
    });
    let base = dingtalk.url("");
    let app = spawn(
        &redis,
        "http://127.0.0.1:9/",
        &[("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &base)],
    );
    for (attempt, idem) in ["evt_fast_1", "evt_fast_2"].into_iter().enumerate() {
        let resp = send_robot(&app, &key, Some(idem), &robot_input("too fast")).await;
        let after: u64 = resp.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        let (status, code, body) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (429, "rate_limited"), "{body}");
        // DingTalk blocks the robot for 10 minutes (`custom_robot::BLOCKED_FOR`).
        assert!(
            (590..=600).contains(&after),
            "attempt {attempt}: Retry-After {after}"
        );
    }
    assert_eq!(
        dingtalk.requests().len(),
        1,
        "the blocked robot is not called again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_response_without_running_again() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "actions");
    let dingtalk = robot_fake(Duration::ZERO);
    let base = dingtalk.url("");
    let app = spawn(
        &redis,
        "http://127.0.0.1:9/",
        &[("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &base)],
    );
    let input = robot_input("once");
    let first = send_robot(&app, &key, Some("evt_replay"), &input).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.text().await.expect("body");
    // Same body re-serialised with another key order: still the same request.
    let reordered = json!({
        "text": "once", "secret": "SECtestsecret", "target": "robot",
        "webhook_url": "https://oapi.dingtalk.com/robot/send?access_token=tok123",
    });
    let again = send_robot(&app, &key, Some("evt_replay"), &reordered).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.expect("body"), first_body);
    assert_eq!(dingtalk.requests().len(), 1, "DingTalk got one message");

    // A stored error is replayed too.
    let bad = json!({"target": "robot"});
    let e1 = send_robot(&app, &key, Some("evt_bad"), &bad).await;
    assert_eq!(e1.status(), 400);
    let e2 = send_robot(&app, &key, Some("evt_bad"), &bad).await;
    assert_eq!(e2.status(), 400);
    assert_eq!(e2.headers()["idempotent-replayed"], "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_with_another_body_is_422() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "actions");
    let dingtalk = robot_fake(Duration::ZERO);
    let base = dingtalk.url("");
    let app = spawn(
        &redis,
        "http://127.0.0.1:9/",
        &[("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &base)],
    );
    let first = send_robot(&app, &key, Some("evt_reuse"), &robot_input("one")).await;
    assert_eq!(first.status(), 200);
    let other = send_robot(&app, &key, Some("evt_reuse"), &robot_input("two")).await;
    let (status, code, _) = error_code(other).await;
    assert_eq!((status, code.as_str()), (422, "idempotency_key_reused"));
    assert_eq!(dingtalk.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_while_the_first_with_its_key_runs_is_409() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "actions");
    let dingtalk = robot_fake(Duration::from_millis(1500));
    let base = dingtalk.url("");
    let app = spawn(
        &redis,
        "http://127.0.0.1:9/",
        &[("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &base)],
    );
    let input = robot_input("slow");
    let slow = send_robot(&app, &key, Some("evt_inflight"), &input);
    let racer = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        send_robot(&app, &key, Some("evt_inflight"), &input).await
    };
    let (first, second) = tokio::join!(slow, racer);
    assert_eq!(first.status(), 200);
    let (status, code, _) = error_code(second).await;
    assert_eq!((status, code.as_str()), (409, "idempotency_key_in_flight"));
    assert_eq!(dingtalk.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_expires_after_its_ttl() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "actions");
    let dingtalk = robot_fake(Duration::ZERO);
    let base = dingtalk.url("");
    let app = spawn(
        &redis,
        "http://127.0.0.1:9/",
        &[
            ("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &base),
            ("DINGBRIDGE_IDEMPOTENCY_TTL_SECS", "1"),
        ],
    );
    let first = send_robot(&app, &key, Some("evt_ttl"), &robot_input("before")).await;
    assert_eq!(first.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = send_robot(&app, &key, Some("evt_ttl"), &robot_input("after")).await;
    assert_eq!(later.status(), 200, "an expired key is free again");
    assert!(later.headers().get("idempotent-replayed").is_none());
    assert_eq!(dingtalk.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropdowns_list_configured_choices_and_the_document_is_served() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "actions");
    let app = spawn(
        &redis,
        "http://127.0.0.1:9/",
        &[(
            "DINGBRIDGE_API_MAILBOXES",
            "sales@example.com|Sales,ops@example.com",
        )],
    );
    let boxes: Value = get(&app, &key, "/v1/options/mailboxes")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        boxes,
        json!([{"id": "sales@example.com", "label": "Sales"},
               {"id": "ops@example.com", "label": "ops@example.com"}])
    );
    let convs: Value = get(&app, &key, "/v1/options/dingtalk-conversations")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(convs, json!([]));
    let unknown = get(&app, &key, "/v1/options/nope").await;
    assert_eq!(unknown.status(), 404);
    let unknown: Value = unknown.json().await.expect("json");
    assert_eq!(
        unknown["error"]["message"],
        "no option list `nope`; valid: mailboxes, dingtalk-conversations, calendars, todo-lists, mail-routes, dingtalk-calendars"
    );
    let dt_calendars: Value = get(&app, &key, "/v1/options/dingtalk-calendars")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        dt_calendars,
        json!([{"id": "primary", "label": "Primary calendar"}]),
        "DingTalk's own calendar, not Outlook's"
    );
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let page = app
        .http
        .get(app.url("/docs"))
        .send()
        .await
        .expect("docs")
        .text()
        .await
        .expect("html");
    assert!(page.contains("/openapi.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_after_the_fix_runs_again_once_and_is_audited() {
    let redis = RedisServer::start();
    let admin = create_key(&redis, "ops", "admin");
    let reader = create_key(&redis, "zapier", "triggers");
    let echo = failing_echo_target();
    let app = spawn(&redis, &echo.url("/relay"), &[]);
    fail_a_relay(&app, "evt-replay").await;
    let dead = eventually(Duration::from_secs(15), || async {
        let v: Vec<Value> = get(&app, &admin, "/v1/deliveries")
            .await
            .json()
            .await
            .ok()?;
        v.into_iter().next()
    })
    .await
    .expect("a dead letter");
    let job_id = dead["job_id"].as_str().expect("job id").to_string();
    let replay = |key: String| {
        let url = app.url(&format!("/v1/deliveries/{job_id}/replay"));
        let http = app.http.clone();
        async move {
            http.post(url)
                .bearer_auth(key)
                .send()
                .await
                .expect("replay")
        }
    };
    let forbidden = replay(reader.clone()).await;
    assert_eq!(forbidden.status(), 403);

    // The cause is fixed; the replay runs the job again, once.
    echo.respond_with(|_| FakeReply::json(json!({"ok": true})));
    let tried = echo.requests().len();
    let resp = replay(admin.clone()).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!({"job_id": job_id, "status": "queued"}));
    eventually(Duration::from_secs(15), || async {
        (echo.requests().len() > tried).then_some(())
    })
    .await
    .expect("the job ran again");
    let left: Vec<Value> = get(&app, &admin, "/v1/deliveries")
        .await
        .json()
        .await
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
    let (status, code, _) = error_code(replay(admin.clone()).await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(echo.requests().len(), tried + 1, "ran exactly once more");
    let audit: Vec<Value> = get(&app, &admin, "/v1/audit")
        .await
        .json()
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "delivery.replayed" && e["detail"]["job_id"] == job_id.as_str()),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_events_never_scans_the_keyspace_and_old_hooks_are_still_found() {
    let redis = RedisServer::start();
    let key = create_key(&redis, "zapier", "triggers,admin");
    // A hook as versions without the hook index stored it: only its record.
    let legacy = json!({"id": "hook_legacy1", "target_url": "http://127.0.0.1:9/old",
        "event": "sync.failed", "secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTIzNA==",
        "created_at": "2026-01-01T00:00:00Z", "status": "active", "created_by": "old"});
    let _: () = redis::cmd("SET")
        .arg("dingbridge:kv:hook:hook_legacy1")
        .arg(legacy.to_string())
        .query(&mut redis.client())
        .expect("set");
    let echo = failing_echo_target();
    let app = spawn(&redis, &echo.url("/relay"), &[]);
    let listed: Vec<Value> = get(&app, &key, "/v1/hooks")
        .await
        .json()
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], "hook_legacy1");

    // Each failed relay publishes `sync.failed` and looks up its hooks: by the index.
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.client())
        .expect("resetstat");
    for i in 0..5 {
        fail_a_relay(&app, &format!("evt-scan-{i}")).await;
    }
    eventually(Duration::from_secs(15), || async {
        let polled: Vec<Value> = get(&app, &key, "/v1/triggers/sync.failed")
            .await
            .json()
            .await
            .ok()?;
        (polled.len() == 5).then_some(())
    })
    .await
    .expect("five sync.failed events");
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.client())
        .expect("info");
    assert!(
        !stats.contains("cmdstat_scan:"),
        "no SCAN while publishing: {stats}"
    );
}
