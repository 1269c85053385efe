//! DingTalk inbound through the running binary: encrypted HTTP push, robot callbacks and
//! the failed-push backfill, each verified, deduplicated and queued exactly once.

use crate::common;

use std::time::Duration;

use common::{FakeReply, FakeServer, RedisServer, TestApp, env::Env, error_code, eventually};
use dingbridge::dingtalk::{
    crypto::{self, CallbackCrypto},
    sign,
};
use serde_json::{Value, json};

const TOKEN: &str = "tokenABC123";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_KEY: &str = "dingxxxxxxxxxxxx";
const ROBOT_SECRET: &str = "appSecretXYZ";

fn crypto_for(owner: &str) -> CallbackCrypto {
    CallbackCrypto::new(TOKEN, AES_KEY, owner).expect("vector crypto")
}

fn now_ms() -> i64 {
    dingbridge::store::now_ms()
}

/// Environment of an instance with HTTP push and robot callbacks on, sharing `redis`.
fn env(redis: &RedisServer) -> Env {
    // No app secret here: backfill stays off unless a test turns it on.
    Env::new()
        .redis(redis)
        .set("DINGBRIDGE_DINGTALK_APP_KEY", APP_KEY)
        .set("DINGBRIDGE_DINGTALK_CALLBACK_TOKEN", TOKEN)
        .set("DINGBRIDGE_DINGTALK_AES_KEY", AES_KEY)
        .set("DINGBRIDGE_DINGTALK_ROBOT_APP_SECRET", ROBOT_SECRET)
}

/// An encrypted push: (query string, body) signed with the vector token.
fn push(crypto: &CallbackCrypto, plaintext: &str, timestamp: &str) -> (String, String) {
    let encrypt = crypto.encrypt(plaintext);
    let sig = crypto::signature(TOKEN, timestamp, "nonce42", &encrypt);
    (
        format!("msg_signature={sig}&timestamp={timestamp}&nonce=nonce42"),
        json!({ "encrypt": encrypt }).to_string(),
    )
}

async fn post_push(app: &TestApp, query: &str, body: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/webhooks/dingtalk/events?{query}")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

/// Asserts a 200 reply that decrypts to `success`.
async fn assert_success_reply(resp: reqwest::Response) {
    assert_eq!(resp.status(), 200);
    let reply: Value = resp.json().await.expect("json reply");
    let plain = crypto_for(APP_KEY)
        .decrypt_verified(
            reply["msg_signature"].as_str().expect("msg_signature"),
            reply["timeStamp"].as_str().expect("timeStamp"),
            reply["nonce"].as_str().expect("nonce"),
            reply["encrypt"].as_str().expect("encrypt"),
        )
        .expect("the reply verifies and decrypts");
    assert_eq!(plain, "success");
}

/// Audit entries (oldest first) whose action starts with `dingtalk.`.
fn dingtalk_audit(redis: &RedisServer) -> Vec<Value> {
    let mut c = redis.client();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("dingbridge:audit")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("xrange");
    reply
        .ids
        .iter()
        .filter_map(|id| id.get::<String>("entry"))
        .filter_map(|s| serde_json::from_str::<Value>(&s).ok())
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("dingtalk."))
        })
        .collect()
}

/// Jobs ever queued: what the queue and dead letters hold plus what the audit shows done.
fn queue_len(redis: &RedisServer) -> i64 {
    let mut c = redis.client();
    let q: i64 = redis::cmd("XLEN")
        .arg("dingbridge:queue")
        .query(&mut c)
        .unwrap_or(0);
    let d: i64 = redis::cmd("XLEN")
        .arg("dingbridge:queue:dead")
        .query(&mut c)
        .unwrap_or(0);
    q + d
}

/// Waits until the audit has at least `n` DingTalk entries, then a little longer so that
/// extra (duplicate) entries would show up too.
async fn audit_settles(redis: &RedisServer, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(15), || async {
        (dingtalk_audit(redis).len() >= n).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "expected {n} audit entries, got {:?}",
            dingtalk_audit(redis)
        )
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    dingtalk_audit(redis)
}

/// Nothing was queued and nothing was audited.
async fn assert_nothing_queued(redis: &RedisServer) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        dingtalk_audit(redis).is_empty(),
        "{:?}",
        dingtalk_audit(redis)
    );
    assert_eq!(queue_len(redis), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_url_is_answered_with_encrypted_success_and_nothing_is_queued() {
    let redis = RedisServer::start();
    let app = env(&redis).spawn();
    let (q, b) = push(
        &crypto_for(APP_KEY),
        r#"{"EventType":"check_url"}"#,
        &now_ms().to_string(),
    );
    assert_success_reply(post_push(&app, &q, &b).await).await;
    assert_nothing_queued(&redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_20_times_to_two_instances_is_queued_once_and_acknowledged() {
    let redis = RedisServer::start();
    let a = env(&redis).spawn();
    let b = env(&redis).spawn();
    let event = json!({"EventType":"calendar_event_change","eventId":"evt-20x","CorpId":"ding1",
        "calendarEventId":"cal-1","unionIdList":["u1"],"changeType":"update",
        "EventTime": now_ms()});
    let (q, body) = push(
        &crypto_for(APP_KEY),
        &event.to_string(),
        &now_ms().to_string(),
    );
    let sends = (0..20).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        post_push(app, &q, &body)
    });
    for resp in futures::future::join_all(sends).await {
        assert_success_reply(resp).await;
    }
    let audit = audit_settles(&redis, 1).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["action"], "dingtalk.calendar_event.updated");
    assert_eq!(audit[0]["detail"]["ids"]["event_id"], "evt-20x");
    assert_eq!(audit[0]["detail"]["ids"]["calendar_event_id"], "cal-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_event_type_is_queued_and_visible_in_the_audit() {
    let redis = RedisServer::start();
    let app = env(&redis).spawn();
    let event = json!({"EventType":"bpms_instance_change","eventId":"evt-unknown"});
    let (q, body) = push(
        &crypto_for(APP_KEY),
        &event.to_string(),
        &now_ms().to_string(),
    );
    assert_success_reply(post_push(&app, &q, &body).await).await;
    let audit = audit_settles(&redis, 1).await;
    assert_eq!(audit[0]["action"], "dingtalk.unknown.unknown");
    assert_eq!(
        audit[0]["detail"]["ids"]["event_type"],
        "bpms_instance_change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_get_a_4xx_in_the_error_shape_and_nothing_is_queued() {
    let redis = RedisServer::start();
    let app = env(&redis).spawn();
    let event = r#"{"EventType":"todo_task_create","eventId":"evt-bad","taskId":"t1"}"#;
    let now = now_ms().to_string();
    let good = crypto_for(APP_KEY);

    // Forged signature: one hex digit changed.
    let (_, b) = push(&good, event, &now);
    let encrypt = serde_json::from_str::<Value>(&b).expect("json")["encrypt"]
        .as_str()
        .expect("encrypt")
        .to_string();
    let mut sig = crypto::signature(TOKEN, &now, "nonce42", &encrypt);
    let last = if sig.ends_with('0') { "1" } else { "0" };
    sig.replace_range(39.., last);
    let forged = format!("msg_signature={sig}&timestamp={now}&nonce=nonce42");
    let (s, code, _) = error_code(post_push(&app, &forged, &b).await).await;
    assert_eq!((s, code.as_str()), (401, "invalid_signature"));

    // Encrypted for another app (owner key).
    let (q, b) = push(&crypto_for("dingyyyyyyyyyyyy"), event, &now);
    let (s, code, body) = error_code(post_push(&app, &q, &b).await).await;
    assert_eq!((s, code.as_str()), (400, "owner_key_mismatch"));
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("dingtalk.app_key")
    );

    // Bad padding: flipping the last byte of the second-to-last block flips the same
    // byte of the last plaintext block (CBC), turning the pad byte into 0; re-signed.
    let enc = good.encrypt(event);
    let mut raw = base64_decode(&enc);
    let n = raw.len();
    let unpadded = 16 + 4 + event.len() + APP_KEY.len();
    let pad = 32 - unpadded % 32;
    raw[n - 17] ^= pad as u8;
    let bad = base64_encode(&raw);
    let sig = crypto::signature(TOKEN, &now, "nonce42", &bad);
    let q = format!("msg_signature={sig}&timestamp={now}&nonce=nonce42");
    let (s, code, _) =
        error_code(post_push(&app, &q, &json!({"encrypt": bad}).to_string()).await).await;
    assert_eq!((s, code.as_str()), (400, "invalid_ciphertext"));

    // Stale timestamp (two hours old, correctly signed), in ms and in seconds.
    let old = now_ms() - 2 * 3600 * 1000;
    for ts in [old.to_string(), (old / 1000).to_string()] {
        let (q, b) = push(&good, event, &ts);
        let (s, code, _) = error_code(post_push(&app, &q, &b).await).await;
        assert_eq!((s, code.as_str()), (401, "stale_timestamp"), "{ts}");
    }

    // Missing parameter.
    let (q, b) = push(&good, event, &now);
    let without_nonce = q.replace("&nonce=nonce42", "");
    let (s, code, _) = error_code(post_push(&app, &without_nonce, &b).await).await;
    assert_eq!((s, code.as_str()), (400, "missing_parameter"));

    // Non-JSON body.
    let (s, code, _) = error_code(post_push(&app, &q, "encrypt=abc").await).await;
    assert_eq!((s, code.as_str()), (400, "invalid_json"));

    assert_nothing_queued(&redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_gets_503_with_retry_after_so_dingtalk_retries() {
    let mut redis = RedisServer::start();
    let app = env(&redis).spawn();
    redis.stop();
    let event = r#"{"EventType":"todo_task_update","eventId":"evt-outage"}"#;
    let (q, b) = push(&crypto_for(APP_KEY), event, &now_ms().to_string());
    let resp = post_push(&app, &q, &b).await;
    assert!(resp.headers().contains_key("retry-after"));
    let (s, code, _) = error_code(resp).await;
    assert_eq!((s, code.as_str()), (503, "store_unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_endpoints_answer_not_configured_naming_the_keys() {
    let app = Env::new().spawn();
    let resp = app
        .http
        .post(app.url("/webhooks/dingtalk/events?msg_signature=a&timestamp=1&nonce=n"))
        .body("{}")
        .send()
        .await
        .expect("request");
    let (s, code, body) = error_code(resp).await;
    assert_eq!((s, code.as_str()), (404, "not_configured"));
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("m")
            .contains("dingtalk.aes_key")
    );
    let resp = app
        .http
        .post(app.url("/webhooks/dingtalk/robot"))
        .body("{}")
        .send()
        .await
        .expect("request");
    let (s, code, body) = error_code(resp).await;
    assert_eq!((s, code.as_str()), (404, "not_configured"));
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("m")
            .contains("robot_app_secret")
    );
}

fn robot_message(msg_id: &str) -> Value {
    json!({
        "msgtype": "text", "text": {"content": "hello bridge"}, "msgId": msg_id,
        "createAt": now_ms(), "conversationType": "2", "conversationId": "cidGroup1",
        "conversationTitle": "Ops", "senderStaffId": "staff1", "senderNick": "Li",
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=abc",
        "sessionWebhookExpiredTime": now_ms() + 90 * 60 * 1000,
    })
}

async fn post_robot(app: &TestApp, ts: &str, sign: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/webhooks/dingtalk/robot"))
        .header("timestamp", ts)
        .header("sign", sign)
        .json(body)
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_robot_callback_is_queued_once_and_its_session_webhook_kept() {
    let redis = RedisServer::start();
    let app = env(&redis).spawn();
    let body = robot_message("msg-1");
    for _ in 0..3 {
        let ts = now_ms().to_string();
        let resp = post_robot(
            &app,
            &ts,
            &sign::robot_callback_sign(ROBOT_SECRET, &ts),
            &body,
        )
        .await;
        assert_eq!(resp.status(), 200);
        let reply: Value = resp.json().await.expect("json");
        assert_eq!(reply, json!({"msgtype": "empty"}));
    }
    let audit = audit_settles(&redis, 1).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["action"], "dingtalk.message.created");
    assert_eq!(audit[0]["detail"]["ids"]["message_id"], "msg-1");
    let text = audit[0].to_string();
    assert!(
        !text.contains("hello bridge") && !text.contains("session=abc"),
        "{text}"
    );

    let mut c = redis.client();
    let key = "dingbridge:kv:dingtalk:session_webhook:cidGroup1";
    let stored: String = redis::cmd("GET")
        .arg(key)
        .query(&mut c)
        .expect("session webhook kept");
    let stored: Value = serde_json::from_str(&stored).expect("json");
    assert_eq!(stored["url"], body["sessionWebhook"]);
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut c).expect("pttl");
    assert!(ttl > 80 * 60 * 1000 && ttl <= 90 * 60 * 1000, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_stale_robot_callbacks_get_401_and_nothing_is_queued() {
    let redis = RedisServer::start();
    let app = env(&redis).spawn();
    let body = robot_message("msg-bad");
    let ts = now_ms().to_string();
    let forged = sign::robot_callback_sign("someOtherSecret", &ts);
    let (s, code, _) = error_code(post_robot(&app, &ts, &forged, &body).await).await;
    assert_eq!((s, code.as_str()), (401, "invalid_signature"));
    let old = (now_ms() - 2 * 3600 * 1000).to_string();
    let stale = sign::robot_callback_sign(ROBOT_SECRET, &old);
    let (s, code, _) = error_code(post_robot(&app, &old, &stale, &body).await).await;
    assert_eq!((s, code.as_str()), (401, "stale_timestamp"));
    assert_nothing_queued(&redis).await;
}

/// A DingTalk fake: `gettoken` and a two-page failed list (the same on every call).
fn dingtalk_fake() -> FakeServer {
    FakeServer::start(|r| match r.path.as_str() {
        "/gettoken" => {
            if r.query.contains("appsecret=backfillSecret") {
                FakeReply::json(
                    json!({"errcode":0,"errmsg":"ok","access_token":"tok-1","expires_in":7200}),
                )
            } else {
                FakeReply::json(json!({"errcode":40089,"errmsg":"invalid appsecret"}))
            }
        }
        "/call_back/get_call_back_failed_result" => {
            if !r.query.contains("access_token=tok-1") {
                return FakeReply::json(json!({"errcode":40014,"errmsg":"invalid token"}));
            }
            // Page by how often the list was read: odd calls page 1, even calls page 2.
            FakeReply::json(
                json!({"errcode":0,"errmsg":"ok","has_more":true,"failed_list":[
                    {"call_back_tag":"user_add_org","event_time":1700000000000i64,
                     "user_add_org":{"userid":["u1"],"corpid":"ding1"}},
                    {"call_back_tag":"calendar_event_change","event_time":1700000001000i64,
                     "callbackData":{"eventId":"bf-cal-1","calendarEventId":"c1","changeType":"create"}}
                ]}),
            )
        }
        _ => FakeReply::status(404),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_queues_every_failed_event_once_even_with_two_instances() {
    let redis = RedisServer::start();
    let fake = dingtalk_fake();
    // Two pages: the first says has_more, the second (every other call) does not.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    fake.respond_with(move |r| match r.path.as_str() {
        "/gettoken" => FakeReply::json(
            json!({"errcode":0,"errmsg":"ok","access_token":"tok-1","expires_in":7200}),
        ),
        "/call_back/get_call_back_failed_result" => {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n.is_multiple_of(2) {
                FakeReply::json(json!({"errcode":0,"errmsg":"ok","has_more":true,"failed_list":[
                    {"call_back_tag":"user_add_org","event_time":1700000000000i64,
                     "user_add_org":{"userid":["u1"],"corpid":"ding1"}},
                    {"call_back_tag":"calendar_event_change","event_time":1700000001000i64,
                     "callbackData":{"eventId":"bf-cal-1","calendarEventId":"c1","changeType":"create"}}
                ]}))
            } else {
                FakeReply::json(json!({"errcode":0,"errmsg":"ok","has_more":false,"failed_list":[
                    {"call_back_tag":"todo_task_delete","event_time":1700000002000i64,
                     "callbackData":{"eventId":"bf-todo-1","taskId":"t1"}}
                ]}))
            }
        }
        _ => FakeReply::status(404),
    });
    let e = env(&redis)
        .set("DINGBRIDGE_DINGTALK_APP_SECRET", "backfillSecret")
        .set("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &fake.url(""))
        .set("DINGBRIDGE_DINGTALK_BACKFILL_INTERVAL_SECS", "1");
    let _a = e.spawn();
    let _b = e.spawn();
    // Several runs on both instances.
    eventually(Duration::from_secs(15), || async {
        (calls.load(std::sync::atomic::Ordering::SeqCst) >= 8).then_some(())
    })
    .await
    .expect("the failed list is read repeatedly");
    let audit = audit_settles(&redis, 3).await;
    let mut actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        vec![
            "dingtalk.calendar_event.created",
            "dingtalk.contact.created",
            "dingtalk.todo.deleted"
        ],
        "{audit:?}"
    );
    let tokens = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/gettoken")
        .count();
    assert!(
        tokens <= 2,
        "the token is cached per instance: {tokens} fetches"
    );
    let logs = _a.logs().join("\n") + &_b.logs().join("\n");
    assert!(
        !logs.contains("backfillSecret") && !logs.contains("tok-1"),
        "secrets in logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_errors_are_logged_the_service_keeps_running_and_stops_cleanly() {
    let redis = RedisServer::start();
    let fake = dingtalk_fake();
    let mut app = env(&redis)
        .set("DINGBRIDGE_DINGTALK_APP_SECRET", "wrongSecret")
        .set("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &fake.url(""))
        .spawn();
    let logged = eventually(Duration::from_secs(10), || async {
        app.logs().iter().any(|l| l.contains("40089")).then_some(())
    })
    .await;
    assert!(logged.is_some(), "{:?}", app.logs());
    assert!(!app.logs().join("\n").contains("wrongSecret"));
    let resp = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);
    assert!(
        app.terminate(Duration::from_secs(15)),
        "SIGTERM stops the service, backfill included"
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Runs `dingbridge sign <what> --file <json> --url <app>` with `env`; returns its stdout.
fn sign_command(env: &Env, what: &str, json: &Value, url: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("input.json");
    std::fs::write(&file, json.to_string()).expect("write input");
    let file = file.to_str().expect("utf-8 path");
    let out = env
        .clone()
        .set("PATH", &std::env::var("PATH").unwrap_or_default())
        .run(&["sign", what, "--file", file, "--url", url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs a printed command line with `sh` and returns what it printed.
fn run_shell(command: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .output()
        .expect("sh runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_curl_commands_are_accepted_by_the_service() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl not installed; skipping");
        return;
    }
    let redis = RedisServer::start();
    let e = env(&redis);
    let app = e.spawn();
    let base = app.url("");

    let event = json!({"EventType":"todo_task_create","eventId":"signed-1","taskId":"t'1"});
    let cmd = sign_command(&e, "dingtalk-event", &event, &base);
    assert!(cmd.starts_with("curl "), "{cmd}");
    let answer = run_shell(&cmd);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("msg_signature"), "{answer}");

    let message = robot_message("signed-msg-1");
    let cmd = sign_command(&e, "dingtalk-robot", &message, &base);
    let answer = run_shell(&cmd);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"msgtype\":\"empty\""), "{answer}");

    let audit = audit_settles(&redis, 2).await;
    let mut actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        vec!["dingtalk.message.created", "dingtalk.todo.created"]
    );
}
