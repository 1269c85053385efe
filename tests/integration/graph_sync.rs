//! Outlook → DingTalk through the running binary: subscriptions created (with Graph's
//! validation handshake) and renewed by one instance, change notifications relayed as
//! exactly one DingTalk robot message, lifecycle events leading to recreation and a delta
//! resync of exactly the gap, and no echo of items the bridge wrote.

use crate::common;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use common::{
    FakeReply, FakeServer, RedisServer, TestApp,
    env::Env,
    eventually, free_port,
    graph_fake::{GraphFake, GraphFakeConfig},
};
use serde_json::{Value, json};

const MAILBOX: &str = "ops@contoso.com";
const ORIGIN: &str = "String {6c1f3e0a-8d2b-4b7e-9a51-2f4d8c9e7b13} Name DingBridgeOrigin";

struct World {
    redis: RedisServer,
    graph: GraphFake,
    robot: FakeServer,
    dingtalk: FakeServer,
    env: Env,
    /// The configuration file's path.
    config: String,
    port: u16,
}

impl World {
    fn new(extra_graph: &str) -> World {
        Self::build(extra_graph, "kinds = [\"mail\"]")
    }

    /// `route` holds the route's `kinds` (and any other top-level route keys).
    fn build(extra_graph: &str, route: &str) -> World {
        Self::build_with(
            extra_graph,
            route,
            "robot_webhook = \"{robot}\"\nrobot_secret = \"SECtest-robot-secret\"\nunion_id = \"union-ops\"\n",
        )
    }

    /// Like [`World::build`] with the route's `[routes.dingtalk]` keys given (`{robot}`
    /// stands for the robot fake's webhook URL).
    fn build_with(extra_graph: &str, route: &str, dingtalk_keys: &str) -> World {
        let redis = RedisServer::start();
        let graph = GraphFake::start(GraphFakeConfig::default());
        let robot = FakeServer::start(|_| FakeReply::json(json!({"errcode": 0, "errmsg": "ok"})));
        // DingTalk's server API: token, calendar writes (ids derived from x-client-token,
        // so a repeated create answers the same event, as DingTalk does within a day).
        let dingtalk = FakeServer::start(|r| {
            if r.path == "/gettoken" {
                return FakeReply::json(
                    json!({"errcode": 0, "errmsg": "ok", "access_token": "dt-token", "expires_in": 7200}),
                );
            }
            if r.path == "/v1.0/oauth2/accessToken" {
                return FakeReply::json(json!({"accessToken": "dt-token", "expireIn": 7200}));
            }
            if r.method == "POST" && r.path.ends_with("/calendars/primary/events") {
                let token = r.header("x-client-token").unwrap_or("none");
                return FakeReply::json(
                    json!({"id": format!("dtev-{}", &token[..token.len().min(12)])}),
                );
            }
            FakeReply::json(json!({}))
        });
        let port = free_port();
        let cfg = graph.config();
        let text = format!(
            r#"public_url = "http://127.0.0.1:{port}"
[graph]
tenant_id = "{tenant}"
client_id = "{client}"
client_secret = "{secret}"
base_url = "{base}"
authority_url = "{authority}"
allow_http_public_url = true
{extra_graph}

[dingtalk]
app_key = "ding-app-key"
app_secret = "ding-app-secret"
api_base_url = "{dingtalk_api}"
oapi_base_url = "{dingtalk_api}"

[[routes]]
name = "ops"
mailbox = "{MAILBOX}"
direction = "to_dingtalk"
{route}
[routes.dingtalk]
{dingtalk_keys}"#,
            tenant = cfg.tenant,
            client = cfg.client_id,
            secret = cfg.client_secret.clone().expect("secret"),
            base = graph.graph_base(),
            authority = graph.authority(),
            dingtalk_keys = dingtalk_keys.replace(
                "{robot}",
                &robot.url("/robot/send?access_token=robot-token"),
            ),
            dingtalk_api = dingtalk.url(""),
        );
        let env = Env::new()
            .config_toml(&text)
            .redis(&redis)
            .backoff_ms(100, 1000);
        let config = env.get("DINGBRIDGE_CONFIG").expect("config").to_string();
        World {
            redis,
            graph,
            robot,
            dingtalk,
            env,
            config,
            port,
        }
    }

    /// An instance; the first one listens on the port `public_url` names.
    fn spawn(&self, first: bool) -> TestApp {
        self.spawn_with(first, &[])
    }

    /// Like [`World::spawn`], with more `DINGBRIDGE_*` variables.
    fn spawn_with(&self, first: bool, extra: &[(&str, &str)]) -> TestApp {
        let listen = if first {
            format!("127.0.0.1:{}", self.port)
        } else {
            "127.0.0.1:0".into()
        };
        self.env.clone().listen(&listen).set_all(extra).spawn()
    }

    async fn message_subscription(&self) -> Value {
        eventually(Duration::from_secs(20), || async {
            self.graph.subscription_for(MAILBOX, "messages")
        })
        .await
        .expect("the bridge subscribed to the inbox")
    }

    /// Robot messages received so far.
    fn robot_messages(&self) -> Vec<Value> {
        self.robot
            .requests()
            .into_iter()
            .filter(|r| r.path == "/robot/send")
            .map(|r| r.json())
            .collect()
    }

    async fn wait_for_robot(&self, n: usize) -> Vec<Value> {
        eventually(Duration::from_secs(20), || async {
            let m = self.robot_messages();
            (m.len() >= n).then_some(m)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "expected {n} DingTalk messages, got {:?}",
                self.robot_messages()
            )
        })
    }

    fn set_echo_guard(&self, graph_id: &str) {
        let mut c = self.redis.client();
        let _: () = redis::cmd("SET")
            .arg(format!("dingbridge:kv:echo:graph:{graph_id}"))
            .arg("dingtalk:msg:1")
            .query(&mut c)
            .expect("set echo guard");
    }
}

fn mail(subject: &str) -> Value {
    json!({
        "subject": subject,
        "from": {"emailAddress": {"name": "Li Lei", "address": "li.lei@fabrikam.com"}},
        "body": {"contentType": "html", "content": format!("<p>Body of {subject}</p>")},
    })
}

fn text_of(m: &Value) -> String {
    m["markdown"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_outlook_mail_arrives_as_exactly_one_dingtalk_message() {
    let w = World::new("");
    let app = w.spawn(true);
    let sub = w.message_subscription().await;
    let sub_id = sub["id"].as_str().expect("id");
    assert_eq!(
        sub["notificationUrl"],
        format!("http://127.0.0.1:{}/webhooks/graph", w.port)
    );
    assert_eq!(
        sub["lifecycleNotificationUrl"],
        format!("http://127.0.0.1:{}/webhooks/graph/lifecycle", w.port)
    );
    let cs = w.graph.client_state(sub_id).expect("client state");
    assert!(cs.len() >= 32 && cs.len() <= 128);

    let mut m = mail("Quarterly plan");
    m["attachments"] = json!([{"@odata.type": "#microsoft.graph.fileAttachment", "name": "plan.xlsx", "size": 10}]);
    let id = w.graph.put_message(MAILBOX, "inbox", m);
    // The same notification delivered twice, another one for the same item, an update.
    let body = w.graph.notification_body(sub_id, "created", &id, None);
    assert_eq!(w.graph.deliver(sub_id, &body).await, 202);
    assert_eq!(w.graph.deliver(sub_id, &body).await, 202);
    assert_eq!(w.graph.notify(sub_id, "created", &id).await, 202);
    assert_eq!(w.graph.notify(sub_id, "updated", &id).await, 202);

    let got = w.wait_for_robot(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_after = w.robot_messages();
    assert_eq!(
        got_after.len(),
        1,
        "exactly one DingTalk message: {got_after:?}"
    );
    let msg = &got[0];
    assert_eq!(msg["msgtype"], "markdown");
    let text = text_of(msg);
    assert!(text.contains("Quarterly plan"), "{text}");
    assert!(text.contains("Li Lei <li.lei@fabrikam.com>"), "{text}");
    assert!(text.contains("Body of Quarterly plan"), "{text}");
    assert!(text.contains("plan.xlsx"), "{text}");
    assert!(
        text.contains("[Open in Outlook](https://outlook.office365.com/owa/"),
        "{text}"
    );
    assert!(msg["msgUuid"].as_str().is_some_and(|u| !u.is_empty()));
    let req = &w.robot.requests()[0];
    assert!(req.query.contains("sign=") && req.query.contains("timestamp="));

    // A wrong clientState is acknowledged and relays nothing.
    let other = w.graph.put_message(MAILBOX, "inbox", mail("Forged"));
    let forged = w
        .graph
        .notification_body(sub_id, "created", &other, Some("not-the-secret"));
    assert_eq!(w.graph.deliver(sub_id, &forged).await, 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        w.robot_messages().len(),
        1,
        "the forged notification relayed nothing"
    );
    assert_eq!(
        app.metric("graph_notifications_ignored_total{reason=\"client_state_mismatch\"}")
            .await,
        Some(1.0)
    );
    // The Zapier/n8n trigger feed got the mail once, under its Graph id.
    let mut c = w.redis.client();
    let feed: Vec<String> = redis::cmd("HVALS")
        .arg("dingbridge:feed:trigger:outlook.mail.received:items")
        .query(&mut c)
        .expect("feed");
    assert_eq!(feed.len(), 1, "{feed:?}");
    let item: serde_json::Value = serde_json::from_str(&feed[0]).expect("json");
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["subject"], "Quarterly plan");
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_the_bridge_wrote_or_guarded_are_not_relayed_back() {
    let w = World::new("");
    let _app = w.spawn(true);
    let sub = w.message_subscription().await;
    let sub_id = sub["id"].as_str().expect("id");
    let mut marked = mail("Written by the bridge");
    marked["singleValueExtendedProperties"] = json!([{"id": ORIGIN, "value": "dingtalk:msg:42"}]);
    let marked_id = w.graph.put_message(MAILBOX, "inbox", marked);
    let guarded_id = w
        .graph
        .put_message(MAILBOX, "inbox", mail("Marker not visible yet"));
    w.set_echo_guard(&guarded_id);
    assert_eq!(w.graph.notify(sub_id, "created", &marked_id).await, 202);
    assert_eq!(w.graph.notify(sub_id, "created", &guarded_id).await, 202);
    // A genuine mail afterwards proves the pipeline runs.
    let real = w.graph.put_message(MAILBOX, "inbox", mail("Genuine"));
    assert_eq!(w.graph.notify(sub_id, "created", &real).await, 202);
    let got = w.wait_for_robot(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.robot_messages().len(), 1, "{got:?}");
    assert!(text_of(&got[0]).contains("Genuine"));
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_removed_and_missed_recreate_and_resync_exactly_the_gap() {
    let w = World::new("");
    // Mail that was there before the bridge started is never relayed.
    w.graph.put_message(MAILBOX, "inbox", mail("Old mail"));
    let _app = w.spawn(true);
    let sub = w.message_subscription().await;
    let sub_id = sub["id"].as_str().expect("id").to_string();
    let cs = w.graph.client_state(&sub_id).expect("cs");
    // Give the start-up baseline a moment (it runs right after the create).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = w
        .graph
        .put_message(MAILBOX, "inbox", mail("Before the gap"));
    assert_eq!(w.graph.notify(&sub_id, "created", &first).await, 202);
    w.wait_for_robot(1).await;

    // Graph drops the subscription; mail arrives meanwhile; the relayed one is read.
    w.graph.drop_subscription(&sub_id);
    w.graph.put_message(MAILBOX, "inbox", mail("Gap one"));
    w.graph.put_message(MAILBOX, "inbox", mail("Gap two"));
    w.graph
        .update_message(MAILBOX, &first, json!({"isRead": true}));
    assert_eq!(
        w.graph.lifecycle(&sub, "subscriptionRemoved", &cs).await,
        202
    );

    let new_sub = eventually(Duration::from_secs(20), || async {
        w.graph
            .subscription_for(MAILBOX, "messages")
            .filter(|s| s["id"] != sub_id.as_str())
    })
    .await
    .expect("a new subscription");
    let got = w.wait_for_robot(3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let texts: Vec<String> = w.robot_messages().iter().map(text_of).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("Gap one")));
    assert!(texts.iter().any(|t| t.contains("Gap two")));
    assert!(!texts.iter().any(|t| t.contains("Old mail")));
    drop(got);

    // Reauthorization: answered with a renewal of the live subscription (no new one).
    let new_id = new_sub["id"].as_str().expect("id").to_string();
    let new_cs = w.graph.client_state(&new_id).expect("cs");
    let patches_before = w
        .graph
        .requests_to(&format!("/subscriptions/{new_id}"))
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(
        w.graph
            .lifecycle(&new_sub, "reauthorizationRequired", &new_cs)
            .await,
        202
    );
    eventually(Duration::from_secs(10), || async {
        let n = w
            .graph
            .requests_to(&format!("/subscriptions/{new_id}"))
            .iter()
            .filter(|r| r.method == "PATCH")
            .count();
        (n > patches_before).then_some(())
    })
    .await
    .expect("reauthorizationRequired renews the subscription");
    assert_eq!(w.graph.subscriptions().len(), 1);

    // Missed notifications: the next resync relays exactly what changed since.
    w.graph.put_message(MAILBOX, "inbox", mail("Missed one"));
    w.graph.put_message(MAILBOX, "inbox", mail("Missed two"));
    w.graph.put_message(MAILBOX, "inbox", mail("Missed three"));
    assert_eq!(w.graph.lifecycle(&new_sub, "missed", &new_cs).await, 202);
    w.wait_for_robot(6).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let texts: Vec<String> = w.robot_messages().iter().map(text_of).collect();
    assert_eq!(texts.len(), 6, "{texts:?}");
    for s in ["Missed one", "Missed two", "Missed three"] {
        assert_eq!(texts.iter().filter(|t| t.contains(s)).count(), 1, "{s}");
    }
    assert_eq!(
        w.graph.subscriptions().len(),
        1,
        "the old subscription is gone"
    );
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_happen_before_expiry_by_one_instance_of_three() {
    let w = World::new(
        "subscription_lifetime_secs = 6\nsubscription_renew_before_secs = 4\nsubscription_check_interval_secs = 1",
    );
    let apps: Vec<TestApp> = (0..3).map(|i| w.spawn(i == 0)).collect();
    let sub = w.message_subscription().await;
    let sub_id = sub["id"].as_str().expect("id").to_string();
    // Three lifetimes on the compressed clock.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(
        w.graph.expired_subscriptions().is_empty(),
        "a subscription expired before renewal"
    );
    let subs = w.graph.subscriptions();
    assert_eq!(
        subs.len(),
        1,
        "one subscription, not one per instance: {subs:?}"
    );
    assert_eq!(subs[0]["id"], sub_id.as_str(), "renewed, not recreated");
    let creates = w
        .graph
        .requests_to("/subscriptions")
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(creates, 1);
    let renewals: Vec<_> = w
        .graph
        .requests_to("/subscriptions/")
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(renewals.len() >= 4, "renewed {} times", renewals.len());
    // Every subscription call came from one instance (one bearer token).
    let tokens: std::collections::HashSet<_> = w
        .graph
        .requests_to("/subscriptions")
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "subscription calls came from several instances"
    );
    let count = AtomicUsize::new(0);
    for r in &renewals {
        let body = r.json();
        assert!(body["expirationDateTime"].is_string());
        count.fetch_add(1, Ordering::Relaxed);
    }
    assert!(count.load(Ordering::Relaxed) >= 4);
    w.graph.assert_no_violations();
    drop(apps);
}

fn event(subject: &str) -> Value {
    json!({
        "subject": subject,
        "body": {"contentType": "html", "content": "<p>Agenda</p>"},
        "start": {"dateTime": "2026-12-01T02:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-01T03:00:00.0000000", "timeZone": "UTC"},
        "location": {"displayName": "Room 7"},
        "isAllDay": false,
    })
}

impl World {
    fn calendar_calls(&self) -> Vec<common::Recorded> {
        self.dingtalk
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/v1.0/calendar/"))
            .collect()
    }

    async fn wait_for_calendar(&self, n: usize) -> Vec<common::Recorded> {
        eventually(Duration::from_secs(20), || async {
            let c = self.calendar_calls();
            (c.len() >= n).then_some(c)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "expected {n} DingTalk calendar calls, got {:?}",
                self.calendar_calls()
            )
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlook_events_reach_the_dingtalk_calendar_and_bridge_written_ones_do_not() {
    let w = World::build("", "kinds = [\"event\"]\nallow_deletes = true");
    let _app = w.spawn(true);
    let sub = eventually(Duration::from_secs(20), || async {
        w.graph.subscription_for(MAILBOX, "events")
    })
    .await
    .expect("the bridge subscribed to events");
    assert_eq!(sub["resource"], format!("users/{MAILBOX}/events"));
    assert!(w.graph.subscription_for(MAILBOX, "messages").is_none());
    let sub_id = sub["id"].as_str().expect("id").to_string();

    // Created (notified twice): one DingTalk event, with an x-client-token.
    let id = w.graph.put_event(MAILBOX, event("Design review"));
    assert_eq!(w.graph.notify(&sub_id, "created", &id).await, 202);
    assert_eq!(w.graph.notify(&sub_id, "created", &id).await, 202);
    let calls = w.wait_for_calendar(1).await;
    let create = &calls[0];
    assert_eq!(create.method, "POST");
    assert!(
        create
            .path
            .ends_with("/v1.0/calendar/users/union-ops/calendars/primary/events")
    );
    assert!(
        create
            .header("x-client-token")
            .is_some_and(|t| !t.is_empty())
    );
    let body = create.json();
    assert_eq!(body["summary"], "Design review");
    assert_eq!(body["start"]["dateTime"], "2026-12-01T10:00:00+08:00");
    assert_eq!(body["start"]["timeZone"], "Asia/Shanghai");
    assert_eq!(body["location"]["displayName"], "Room 7");

    // Updated: a PUT of the mapped event.
    w.graph
        .update_event(MAILBOX, &id, json!({"subject": "Design review (moved)"}));
    assert_eq!(w.graph.notify(&sub_id, "updated", &id).await, 202);
    let calls = w.wait_for_calendar(2).await;
    assert_eq!(calls[1].method, "PUT");
    assert_eq!(calls[1].json()["summary"], "Design review (moved)");
    let dt_id = calls[1].path.rsplit('/').next().expect("id").to_string();
    assert!(dt_id.starts_with("dtev-"));
    // The same change notified again (same changeKey): nothing more to write.
    assert_eq!(w.graph.notify(&sub_id, "updated", &id).await, 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.calendar_calls().len(), 2, "one write per change");

    // Cancelled: a DELETE (the route allows deletes).
    w.graph
        .update_event(MAILBOX, &id, json!({"isCancelled": true}));
    assert_eq!(w.graph.notify(&sub_id, "updated", &id).await, 202);
    let calls = w.wait_for_calendar(3).await;
    let seen: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str()))
        .collect();
    assert_eq!(calls[2].method, "DELETE", "{seen:?}");
    assert!(calls[2].path.ends_with(&format!("/events/{dt_id}")));

    // An event the bridge wrote (origin marker) is not relayed back.
    let mut mine = event("From DingTalk");
    mine["singleValueExtendedProperties"] = json!([{"id": ORIGIN, "value": "dingtalk:event:7"}]);
    let mine_id = w.graph.put_event(MAILBOX, mine);
    assert_eq!(w.graph.notify(&sub_id, "created", &mine_id).await, 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.calendar_calls().len(), 3, "{:?}", w.calendar_calls());
    assert!(w.robot_messages().is_empty());

    // Missed notifications: the calendar delta relays exactly the event made in the gap
    // (the bridge-written one changed too, and stays skipped).
    let gap = w.graph.put_event(MAILBOX, event("Made in the gap"));
    w.graph.update_event(
        MAILBOX,
        &mine_id,
        json!({"subject": "From DingTalk (edited)"}),
    );
    let cs = w.graph.client_state(&sub_id).expect("cs");
    assert_eq!(w.graph.lifecycle(&sub, "missed", &cs).await, 202);
    let calls = w.wait_for_calendar(4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.calendar_calls().len(), 4, "{:?}", w.calendar_calls());
    assert_eq!(calls[3].method, "POST");
    assert_eq!(calls[3].json()["summary"], "Made in the gap");
    assert!(!gap.is_empty());
    w.graph.assert_no_violations();
}

// ----- rich notifications --------------------------------------------------------------

fn b64(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `encryptedContent` as Graph makes it
/// (<https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data>):
/// a fresh AES-256 key wrapped with RSA-OAEP (SHA-1), HMAC-SHA256 over the ciphertext,
/// AES-CBC/PKCS7 with IV = key[..16].
fn encrypt_like_graph(public: &rsa::RsaPublicKey, resource: &Value) -> Value {
    use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
    use hmac::Mac;
    let sym: [u8; 32] = rand::random();
    let data = cbc::Encryptor::<aes::Aes256>::new_from_slices(&sym, &sym[..16])
        .expect("key")
        .encrypt_padded_vec_mut::<Pkcs7>(resource.to_string().as_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&sym).expect("key");
    mac.update(&data);
    let wrapped = public
        .encrypt(
            &mut rand::thread_rng(),
            rsa::Oaep::new::<sha1::Sha1>(),
            &sym,
        )
        .expect("wrap");
    json!({
        "data": b64(&data),
        "dataKey": b64(wrapped),
        "dataSignature": b64(mac.finalize().into_bytes()),
        "encryptionCertificateId": "cert-1",
        "encryptionCertificateThumbprint": "00112233445566778899AABBCCDDEEFF00112233",
    })
}

struct TokenSigner {
    key: jsonwebtoken::EncodingKey,
}

impl TokenSigner {
    fn new() -> (TokenSigner, Value) {
        use base64::Engine;
        use rsa::{pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key");
        let public = private.to_public_key();
        let b64u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwks = json!({"keys": [{
            "kty": "RSA", "use": "sig", "kid": "graph-key-1",
            "n": b64u.encode(public.n().to_bytes_be()),
            "e": b64u.encode(public.e().to_bytes_be()),
        }]});
        let pem = private
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .expect("pem");
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).expect("key");
        (TokenSigner { key }, jwks)
    }

    fn token(&self, aud: &str, appid: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("graph-key-1".into());
        jsonwebtoken::encode(
            &header,
            &json!({"aud": aud, "appid": appid, "iss": "https://sts.windows.net/tenant-1/",
                "iat": now, "nbf": now - 10, "exp": now + 3600, "ver": "1.0"}),
            &self.key,
        )
        .expect("sign")
    }
}

const GRAPH_PUBLISHER: &str = "0bf30f3b-4a52-48df-9a82-234910c4a086";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rich_notifications_are_decrypted_and_bad_validation_tokens_relay_nothing() {
    use rsa::pkcs8::EncodePrivateKey;
    let key_dir = tempfile::tempdir().expect("tempdir");
    let key_path = key_dir.path().join("notifications.pem");
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key");
    std::fs::write(
        &key_path,
        private
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pem")
            .as_bytes(),
    )
    .expect("write key");
    let w = World::new(&format!(
        "notification_private_key_path = \"{}\"",
        key_path.display()
    ));
    let (signer, jwks) = TokenSigner::new();
    w.graph.set_jwks(jwks);
    let client_id = w.graph.config().client_id;
    let _app = w.spawn(true);
    let sub = w.message_subscription().await;
    let sub_id = sub["id"].as_str().expect("id");

    let rich = |item: &str, subject: &str, token: String| {
        let mut body = w.graph.notification_body(sub_id, "created", item, None);
        body["value"][0]["encryptedContent"] = encrypt_like_graph(
            &private.to_public_key(),
            &json!({
                "@odata.type": "#Microsoft.Graph.Message", "id": item, "subject": subject,
                "from": {"emailAddress": {"name": "Han Meimei", "address": "han@fabrikam.com"}},
                "bodyPreview": "Decrypted, not fetched",
                "receivedDateTime": "2026-11-25T08:00:00Z",
                "receivedDateTime@odata.type": "#DateTimeOffset",
            }),
        );
        body["validationTokens"] = json!([token]);
        body
    };
    // Items that do not exist at Graph: only the decrypted content can be relayed.
    let forged_app = rich(
        "AAMk-rich-2",
        "Wrong appid",
        signer.token(&client_id, "11111111-1111-1111-1111-111111111111"),
    );
    assert_eq!(w.graph.deliver(sub_id, &forged_app).await, 202);
    let forged_aud = rich(
        "AAMk-rich-3",
        "Wrong aud",
        signer.token("someone-else", GRAPH_PUBLISHER),
    );
    assert_eq!(w.graph.deliver(sub_id, &forged_aud).await, 202);
    let good = rich(
        "AAMk-rich-1",
        "Rich hello",
        signer.token(&client_id, GRAPH_PUBLISHER),
    );
    assert_eq!(w.graph.deliver(sub_id, &good).await, 202);

    let got = w.wait_for_robot(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.robot_messages().len(), 1, "{:?}", w.robot_messages());
    let text = text_of(&got[0]);
    assert!(
        text.contains("Rich hello") && text.contains("Decrypted, not fetched"),
        "{text}"
    );
    assert!(
        w.graph.requests_to("/messages/AAMk-rich").is_empty(),
        "rich content is not fetched"
    );
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rich_route_subscribes_with_its_certificate_and_relays_decrypted_mail_unfetched() {
    use rsa::pkcs8::DecodePrivateKey;
    let cert = common::graph_fake::TestCert::generate();
    let key_dir = tempfile::tempdir().expect("tempdir");
    let (key_path, cert_path) = cert.write_to(key_dir.path());
    let w = World::build(
        &format!(
            "notification_private_key_path = \"{}\"\nnotification_certificate_path = \"{}\"",
            key_path.display(),
            cert_path.display()
        ),
        "kinds = [\"mail\"]\nrich_notifications = true",
    );
    let (signer, jwks) = TokenSigner::new();
    w.graph.set_jwks(jwks);
    let client_id = w.graph.config().client_id;
    let _app = w.spawn(true);
    let sub = w.message_subscription().await;
    assert_eq!(sub["includeResourceData"], true, "{sub}");
    let der = pem::parse(&cert.cert_pem).expect("pem").into_contents();
    assert_eq!(sub["encryptionCertificate"], b64(&der));
    assert!(
        sub["encryptionCertificateId"]
            .as_str()
            .is_some_and(|id| id.starts_with("dingbridge-")),
        "{sub}"
    );
    let resource = sub["resource"].as_str().expect("resource");
    assert!(
        resource.contains("$select=") && resource.contains("singleValueExtendedProperties"),
        "{resource}"
    );
    let expires =
        chrono::DateTime::parse_from_rfc3339(sub["expirationDateTime"].as_str().expect("expiry"))
            .expect("date");
    assert!(expires < chrono::Utc::now() + chrono::Duration::minutes(1440));

    // Graph encrypts with the certificate's key; the item does not exist at Graph, so
    // only the decrypted content can be relayed.
    let public = rsa::RsaPrivateKey::from_pkcs8_pem(&cert.key_pem)
        .expect("key")
        .to_public_key();
    let sub_id = sub["id"].as_str().expect("id");
    let mut body = w
        .graph
        .notification_body(sub_id, "created", "AAMk-rich-9", None);
    body["value"][0]["encryptedContent"] = encrypt_like_graph(
        &public,
        &json!({"@odata.type": "#Microsoft.Graph.Message", "id": "AAMk-rich-9",
            "subject": "Rich by certificate", "bodyPreview": "Sealed for dingbridge",
            "from": {"emailAddress": {"name": "Han Meimei", "address": "han@fabrikam.com"}},
            "hasAttachments": false, "receivedDateTime": "2026-11-25T08:00:00Z"}),
    );
    body["validationTokens"] = json!([signer.token(&client_id, GRAPH_PUBLISHER)]);
    assert_eq!(w.graph.deliver(sub_id, &body).await, 202);
    let got = w.wait_for_robot(1).await;
    let text = text_of(&got[0]);
    assert!(
        text.contains("Rich by certificate") && text.contains("Sealed for dingbridge"),
        "{text}"
    );
    assert!(w.graph.requests_to("/messages/AAMk-rich").is_empty());
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_robots_minute_budget_waits_and_arrives_as_one_digest() {
    let w = World::new("");
    let _app = w.spawn(true);
    let sub = w.message_subscription().await;
    let sub_id = sub["id"].as_str().expect("id");
    // Use up the robot's budget: its 20 one-minute slots taken just now.
    let webhook = w.robot.url("/robot/send?access_token=robot-token");
    let robot = dingbridge::dingtalk::custom_robot::robot_id(&webhook);
    let mut c = w.redis.client();
    for slot in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!(
                "dingbridge:lease:dingtalk:robot:{robot}:slot:{slot}"
            ))
            .arg("test")
            .arg("PX")
            .arg(60_000)
            .query(&mut c)
            .expect("use up the budget");
    }
    let subjects: Vec<String> = (1..=5).map(|i| format!("Burst mail {i}")).collect();
    for s in &subjects {
        let id = w.graph.put_message(MAILBOX, "inbox", mail(s));
        assert_eq!(w.graph.notify(sub_id, "created", &id).await, 202);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        w.robot_messages().is_empty(),
        "nothing beyond the budget this minute"
    );
    let got = eventually(Duration::from_secs(80), || async {
        let m = w.robot_messages();
        (!m.is_empty()).then_some(m)
    })
    .await
    .expect("the queued mails arrive next minute");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.robot_messages().len(),
        1,
        "one digest: {:?}",
        w.robot_messages()
    );
    let text = text_of(&got[0]);
    assert!(text.contains("5 new Outlook mails"), "{text}");
    for s in &subjects {
        let heading = format!("#### 📧 {s}\n");
        assert_eq!(text.matches(heading.as_str()).count(), 1, "{s} in {text}");
    }
}

/// Actions answered 429 are sent again after their `Retry-After`, as Zapier and n8n do.
async fn send_robot_action_until_accepted(
    http: reqwest::Client,
    url: String,
    key: String,
    text: String,
) -> Vec<u64> {
    let mut waits = Vec::new();
    for _ in 0..5 {
        let resp = http
            .post(&url)
            .bearer_auth(&key)
            .header("Idempotency-Key", format!("burst-{text}"))
            .json(&json!({
                "target": "robot",
                "webhook_url": "https://oapi.dingtalk.com/robot/send?access_token=shared-robot",
                "text": text,
            }))
            .send()
            .await
            .expect("action");
        match resp.status().as_u16() {
            200 => return waits,
            429 => {
                let after: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("whole seconds");
                let body: Value = resp.json().await.expect("json");
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                assert!(after <= 61, "waits at most a minute: {after}");
                waits.push(after);
                tokio::time::sleep(Duration::from_secs(after)).await;
            }
            s => panic!("{text}: {s} {}", resp.text().await.unwrap_or_default()),
        }
    }
    panic!("{text} was never accepted: waited {waits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_and_relayed_mails_to_one_robot_share_its_20_a_minute_and_none_is_dropped() {
    // One DingTalk for both paths: the route's robot webhook and the action's oapi base.
    let dingtalk = FakeServer::start(|r| match r.path.as_str() {
        "/robot/send" => FakeReply::json(json!({"errcode": 0, "errmsg": "ok"})),
        "/gettoken" => FakeReply::json(
            json!({"errcode": 0, "errmsg": "ok", "access_token": "dt-token", "expires_in": 7200}),
        ),
        _ => FakeReply::json(json!({})),
    });
    let webhook = dingtalk.url("/robot/send?access_token=shared-robot");
    let w = World::build_with(
        "",
        "kinds = [\"mail\"]",
        &format!("robot_webhook = \"{webhook}\"\nunion_id = \"union-ops\"\n"),
    );
    let base = dingtalk.url("");
    let app = w.spawn_with(true, &[("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", &base)]);
    let key = crate::lowcode::create_key(&w.redis, "zapier", "actions");
    let sub = w.message_subscription().await;
    let sub_id = sub["id"].as_str().expect("id").to_string();

    // 12 actions and 12 relayed mails, all at once: 24 for a robot allowed 20 a minute.
    let actions: Vec<_> = (1..=12)
        .map(|i| {
            tokio::spawn(send_robot_action_until_accepted(
                app.http.clone(),
                app.url("/v1/actions/dingtalk.send_message"),
                key.clone(),
                format!("Burst action {i}"),
            ))
        })
        .collect();
    let subjects: Vec<String> = (1..=12).map(|i| format!("Burst mail {i}")).collect();
    for s in &subjects {
        let id = w.graph.put_message(MAILBOX, "inbox", mail(s));
        assert_eq!(w.graph.notify(&sub_id, "created", &id).await, 202);
    }
    for a in actions {
        a.await.expect("action task");
    }
    let sends = || {
        dingtalk
            .requests()
            .into_iter()
            .filter(|r| r.path == "/robot/send")
            .collect::<Vec<_>>()
    };
    // Every mail arrived (alone or in a digest), every action once.
    let texts = eventually(Duration::from_secs(90), || async {
        let texts: Vec<String> = sends()
            .iter()
            .map(|r| {
                let m = r.json();
                m["markdown"]["text"]
                    .as_str()
                    .or(m["text"]["content"].as_str())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        subjects
            .iter()
            .all(|s| texts.iter().any(|t| t.contains(&format!("#### 📧 {s}\n"))))
            .then_some(texts)
    })
    .await
    .unwrap_or_else(|| panic!("not every mail arrived: {:?}", sends().len()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = sends();
    for i in 1..=12 {
        let t = format!("Burst action {i}");
        assert_eq!(
            texts.iter().filter(|x| **x == t).count(),
            1,
            "{t} exactly once"
        );
    }
    for s in &subjects {
        let heading = format!("#### 📧 {s}\n");
        let n: usize = texts
            .iter()
            .map(|t| t.matches(heading.as_str()).count())
            .sum();
        assert_eq!(n, 1, "{s} exactly once");
    }
    // Never more than 20 in any 60 s.
    let mut at: Vec<std::time::Instant> = all.iter().map(|r| r.at).collect();
    at.sort();
    for (i, w21) in at.windows(21).enumerate() {
        let span = w21[20].duration_since(w21[0]);
        assert!(
            span >= Duration::from_secs(60),
            "sends {i}..={} arrived within {span:?}",
            i + 20
        );
    }
    assert!(
        at.len() > 20 && at[at.len() - 1].duration_since(at[0]) >= Duration::from_secs(60),
        "the sends beyond 20 waited for the next minute"
    );
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_notifications_to_two_instances_relay_once() {
    let w = World::new("");
    let first = w.spawn(true);
    let second = w.spawn(false);
    let sub = w.message_subscription().await;
    let sub_id = sub["id"].as_str().expect("id");
    let id = w
        .graph
        .put_message(MAILBOX, "inbox", mail("Twice delivered"));
    let body = w.graph.notification_body(sub_id, "created", &id, None);
    let again = w.graph.notification_body(sub_id, "created", &id, None); // another notification id
    let client = reqwest::Client::new();
    for (app, b) in [
        (&first, &body),
        (&second, &body),
        (&second, &again),
        (&first, &again),
    ] {
        let r = client
            .post(app.url("/webhooks/graph"))
            .json(b)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 202);
    }
    w.wait_for_robot(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.robot_messages().len(), 1, "{:?}", w.robot_messages());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_public_url_replaces_the_subscription() {
    let w = World::new("");
    let mut app = w.spawn(true);
    let old = w.message_subscription().await;
    assert!(app.terminate(Duration::from_secs(15)));
    // Same store, new public address.
    let port = free_port();
    let text = std::fs::read_to_string(&w.config).expect("config");
    std::fs::write(
        &w.config,
        text.replace(
            &format!("http://127.0.0.1:{}", w.port),
            &format!("http://127.0.0.1:{port}"),
        ),
    )
    .expect("rewrite");
    let _app = Env::new()
        .config(&w.config)
        .listen(&format!("127.0.0.1:{port}"))
        .redis(&w.redis)
        .spawn();
    let new = eventually(Duration::from_secs(20), || async {
        w.graph
            .subscription_for(MAILBOX, "messages")
            .filter(|s| s["id"] != old["id"])
    })
    .await
    .expect("a new subscription");
    assert_eq!(
        new["notificationUrl"],
        format!("http://127.0.0.1:{port}/webhooks/graph")
    );
    // The old one is deleted after the new one exists: wait for it rather than race it.
    let only_new = eventually(Duration::from_secs(20), || async {
        (w.graph.subscriptions().len() == 1).then_some(())
    })
    .await;
    assert!(only_new.is_some(), "the old one was deleted");
    w.graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_robot_the_mail_goes_through_the_conversations_session_webhook() {
    let w = World::build_with(
        "",
        "kinds = [\"mail\"]",
        "conversation_id = \"cidSession\"\nunion_id = \"union-ops\"\n",
    );
    // A robot callback left its session webhook for the conversation (see dingtalk_in).
    let hook = w.robot.url("/robot/sendBySession?session=s-1");
    let expires = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let mut c = w.redis.client();
    let _: () = redis::cmd("SET")
        .arg("dingbridge:kv:dingtalk:session_webhook:cidSession")
        .arg(json!({"url": hook, "expires_at_ms": expires}).to_string())
        .query(&mut c)
        .expect("seed");
    let _app = w.spawn(true);
    let sub = w.message_subscription().await;
    let sub_id = sub["id"].as_str().expect("id");
    let id = w.graph.put_message(MAILBOX, "inbox", mail("Via session"));
    assert_eq!(w.graph.notify(sub_id, "created", &id).await, 202);
    let sent = eventually(Duration::from_secs(15), || async {
        w.robot
            .requests()
            .into_iter()
            .find(|r| r.path == "/robot/sendBySession")
    })
    .await
    .expect("posted through the session webhook");
    let body = sent.json();
    assert_eq!(body["msgtype"], "markdown");
    assert!(text_of(&body).contains("Via session"));
    assert!(body["msgUuid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        !sent.query.contains("sign="),
        "session webhooks are not signed"
    );
    w.graph.assert_no_violations();
}
