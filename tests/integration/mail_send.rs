//! `dingtalk.send_mail` through the running binary: a real SMTP submission server
//! (aiosmtpd with TLS and AUTH, `common::smtp`) and a real Dovecot for the Sent folder.
//! The mail arrives with its headers, body and recipients (Bcc only in the envelope), a
//! copy lands in Sent, one Idempotency-Key sends once even when the stored answer was
//! lost, and refusals say what to fix. Also the DingTalk Mail triggers,
//! `dingtalk.mail.received` and `dingtalk.mail.read`, from the sync loop.

use crate::common;

use std::time::Duration;

use common::{
    FakeServer, TestApp,
    dovecot::{Dovecot, PASSWORD, USER, sample_mail},
    env::Env,
    error_code, eventually,
    graph_fake::{GraphFake, GraphFakeConfig},
    smtp::SmtpSink,
};
use dingbridge::mail::{MailboxName, message::header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A well-formed API key given to the service as a bootstrap key.
const KEY: &str =
    "dbk_0123456789ab_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Dovecot with a `Sent` folder marked `\Sent` (RFC 6154), as LIST shows it.
const SENT_CONF: &str = r#"
namespace inbox {
  inbox = yes
  mailbox Sent {
    special_use = \Sent
    auto = create
  }
}
"#;

fn bootstrap_entry() -> String {
    format!(
        "zapier:actions+triggers:{}",
        hex::encode(Sha256::digest(KEY.as_bytes()))
    )
}

/// Dovecot, an SMTP server in `mode` sharing its certificate and login, and the
/// configuration of route `ops-mail` with both (`smtp_extra`: more SMTP settings).
fn servers(mode: &'static str, smtp_extra: &str) -> (Dovecot, SmtpSink, String) {
    let dovecot = Dovecot::start_configured(SENT_CONF, |_| {});
    let smtp = SmtpSink::start(
        mode,
        &dovecot.ca_file(),
        &dovecot.key_file(),
        USER,
        PASSWORD,
    );
    let toml = format!(
        "{}{}",
        dovecot.route_toml("ops-mail", ""),
        smtp.route_toml(&dovecot.ca_file(), smtp_extra)
    );
    (dovecot, smtp, toml)
}

fn spawn(toml: &str) -> TestApp {
    Env::new()
        .config_toml(toml)
        .bootstrap_keys(&bootstrap_entry())
        .spawn()
}

async fn send(app: &TestApp, key: Option<&str>, input: &Value) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url("/v1/actions/dingtalk.send_mail"))
        .bearer_auth(KEY)
        .json(input);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.expect("action request")
}

/// The raw messages of DingTalk's Sent folder with this `Message-ID`, and their flags.
async fn in_sent(dovecot: &Dovecot, message_id: &str) -> Vec<(Vec<u8>, Vec<String>)> {
    let mut c = dovecot.client().await;
    c.examine(&MailboxName::from_display("Sent"))
        .await
        .expect("EXAMINE Sent");
    let uids = c.search_message_id(message_id).await.expect("SEARCH");
    let metas = c.fetch_meta(&uids).await.expect("FETCH meta");
    let size: u64 = metas.iter().map(|m| m.size).sum();
    let fetched = c.fetch(&uids, size).await.expect("FETCH");
    c.logout().await;
    fetched.into_iter().map(|m| (m.raw, m.meta.flags)).collect()
}

fn input() -> Value {
    json!({
        "route": "ops-mail",
        "to": "alice@example.com",
        "cc": ["bob@example.com"],
        "bcc": "audit@example.com",
        "reply_to": "desk@corp.example",
        "subject": "报关单 ready",
        "text": "Hello Alice,\nthe customs form is ready.",
        "html": "<p>Hello <b>Alice</b>, the customs form is ready.</p>",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_mail_arrives_with_its_headers_a_copy_lands_in_sent_and_one_key_sends_once() {
    let (dovecot, smtp, toml) = servers("implicit", "");
    let app = spawn(&toml);
    let resp = send(&app, Some("zap-run-1"), &input()).await;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(status, 200, "{answer}\nlogs:\n{}", app.logs().join("\n"));
    let message_id = answer["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    assert!(message_id.ends_with("@corp.example>"), "{message_id}");
    assert_eq!(answer["id"], answer["message_id"]);
    assert_eq!(answer["from"], USER);
    assert_eq!(answer["saved_to_sent"], true);
    assert_eq!(answer["sent_folder"], "Sent");
    assert_eq!(answer["already_sent"], false);

    // At the SMTP server: authenticated over TLS, every recipient in the envelope, Bcc
    // nowhere in the headers.
    let got = smtp.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(m.authenticated && m.tls);
    assert_eq!(m.mail_from, USER);
    assert_eq!(
        m.rcpt_tos,
        ["alice@example.com", "bob@example.com", "audit@example.com"]
    );
    assert_eq!(
        header(&m.raw, "Message-ID").as_deref(),
        Some(message_id.as_str())
    );
    assert_eq!(header(&m.raw, "Bcc"), None);
    assert!(!String::from_utf8_lossy(&m.raw).contains("audit@example.com"));
    assert_eq!(header(&m.raw, "To").as_deref(), Some("alice@example.com"));
    assert_eq!(header(&m.raw, "Cc").as_deref(), Some("bob@example.com"));
    assert_eq!(
        header(&m.raw, "Reply-To").as_deref(),
        Some("desk@corp.example")
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&m.raw)
        .expect("parses");
    assert_eq!(parsed.subject(), Some("报关单 ready"));
    assert!(
        parsed
            .body_text(0)
            .expect("text")
            .contains("customs form is ready")
    );
    assert!(parsed.body_html(0).expect("html").contains("<b>Alice</b>"));

    // In DingTalk's Sent folder: one copy, read, with its Bcc.
    let copies = in_sent(&dovecot, &message_id).await;
    assert_eq!(copies.len(), 1);
    assert_eq!(
        header(&copies[0].0, "Bcc").as_deref(),
        Some("audit@example.com")
    );
    assert!(
        copies[0].1.iter().any(|f| f == "\\Seen"),
        "{:?}",
        copies[0].1
    );

    // The same key again: the stored answer, nothing sent.
    let again = send(&app, Some("zap-run-1"), &input()).await;
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let replayed: Value = again.json().await.expect("json");
    assert_eq!(replayed, answer);
    // The stored answer lost (a crash after SMTP accepted, before it was kept; here the
    // in-memory store goes with the process): the key's Message-ID is found in Sent.
    drop(app);
    let app = spawn(&toml);
    let resp = send(&app, Some("zap-run-1"), &input()).await;
    assert_eq!(resp.status(), 200);
    let found: Value = resp.json().await.expect("json");
    assert_eq!(found["message_id"], message_id.as_str());
    assert_eq!(found["already_sent"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.received().len(), 1, "sent once in all");
    assert_eq!(in_sent(&dovecot, &message_id).await.len(), 1);

    // Another key is another mail.
    let other = send(&app, Some("zap-run-2"), &input()).await;
    let other: Value = other.json().await.expect("json");
    assert_ne!(other["message_id"], message_id.as_str());
    assert_eq!(smtp.wait_for(2, Duration::from_secs(5)).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_works_and_refused_recipients_send_nothing_and_say_which_field() {
    let (dovecot, smtp, toml) = servers("starttls", "save_sent_copy = false");
    let app = spawn(&toml);
    let mut one = input();
    one["bcc"] = json!([]);
    let resp = send(&app, None, &one).await;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(status, 200, "{answer}\nlogs:\n{}", app.logs().join("\n"));
    assert_eq!(answer["saved_to_sent"], false, "the route keeps no copy");
    let got = smtp.wait_for(1, Duration::from_secs(5));
    assert!(got[0].tls && got[0].authenticated, "STARTTLS then AUTH");
    let id = answer["message_id"].as_str().expect("id");
    assert!(in_sent(&dovecot, id).await.is_empty());

    // A recipient refused for good: 400 naming the field, nothing sent.
    let mut refused = input();
    refused["cc"] = json!("refused-1@example.com");
    let (status, code, body) = error_code(send(&app, None, &refused).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"), "{body}");
    let why = body["error"]["details"]["fields"]["cc"]
        .as_str()
        .expect("cc");
    assert!(
        why.contains("refused-1@example.com") && why.contains("550"),
        "{why}"
    );
    // Refused for now: 503 with Retry-After, nothing sent.
    let mut later = input();
    later["to"] = json!("later@example.com");
    let resp = send(&app, None, &later).await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (503, "upstream_unavailable"));
    assert_eq!(smtp.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_smtp_password_explains_the_third_party_client_switch() {
    let wrong = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(wrong.path(), "not-the-client-password\n").expect("write");
    let (_dovecot, smtp, toml) = servers(
        "implicit",
        &format!("password_file = \"{}\"", wrong.path().display()),
    );
    let app = spawn(&toml);
    let (status, code, body) = error_code(send(&app, Some("k-1"), &input()).await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"), "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("第三方客户端管理"), "{message}");
    assert!(message.contains("client password"), "{message}");
    assert!(!message.contains("not-the-client-password"));
    assert!(smtp.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_configured_routes_with_an_smtp_part_can_send() {
    let (dovecot, smtp, toml) = servers("implicit", "");
    let toml = format!("{toml}{}", dovecot.route_toml("no-smtp", ""));
    let app = spawn(&toml);
    let mut other = input();
    other["route"] = json!("somebody-else");
    let (status, code, body) = error_code(send(&app, None, &other).await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{body}");
    assert!(body["error"]["details"]["fields"]["route"].is_string());
    other["route"] = json!("no-smtp");
    let (status, code, body) = error_code(send(&app, None, &other).await).await;
    assert_eq!((status, code.as_str()), (404, "not_configured"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("m")
            .contains("mailbox_routes.smtp")
    );
    let (status, code, body) = error_code(
        send(
            &app,
            None,
            &json!({ "route": "ops-mail", "to": "a@b.example" }),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"), "{body}");
    assert!(body["error"]["details"]["fields"]["subject"].is_string());
    // Without `route`, the only route that can send is used.
    let mut only = input();
    only.as_object_mut().expect("obj").remove("route");
    let resp = send(&app, None, &only).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(smtp.wait_for(1, Duration::from_secs(5)).len(), 1);
    let routes: Value = app
        .http
        .get(app.url("/v1/options/mail-routes"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("options")
        .json()
        .await
        .expect("json");
    assert_eq!(
        routes,
        json!([{ "id": "ops-mail", "label": format!("ops-mail ({USER})") }])
    );
}

/// The polled events of `event`.
async fn polled(app: &TestApp, event: &str) -> Vec<Value> {
    app.http
        .get(app.url(&format!("/v1/triggers/{event}")))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_dingtalk_mail_triggers_received_and_reading_it_there_triggers_read() {
    let dovecot = Dovecot::start();
    let fake = GraphFake::start(GraphFakeConfig::default());
    let target = FakeServer::ok();
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(&dovecot, "ops-mail", "poll_interval_secs = 1")
        .bootstrap_keys(&bootstrap_entry())
        .loopback_hooks()
        .spawn();
    let hook = app
        .http
        .post(app.url("/v1/hooks"))
        .bearer_auth(KEY)
        .json(&json!({ "target_url": target.url("/hooks/catch/1"), "event": "dingtalk.mail.received" }))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(hook.status(), 201);
    assert!(
        eventually(Duration::from_secs(10), || async {
            fake.folder_id(common::env::MAILBOX, "DingTalk Mail")
        })
        .await
        .is_some(),
        "logs:\n{}",
        app.logs().join("\n")
    );
    let imid = "<1.trig@dingbridge.test>";
    dovecot
        .append("INBOX", &sample_mail("trig", 1, 300), &[])
        .await;
    let received = eventually(Duration::from_secs(15), || async {
        polled(&app, "dingtalk.mail.received")
            .await
            .into_iter()
            .next()
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no dingtalk.mail.received; logs:\n{}",
            app.logs().join("\n")
        )
    });
    assert_eq!(received["event"], "dingtalk.mail.received");
    assert_eq!(received["message_id"], imid);
    assert_eq!(received["subject"], "Notice 1 (trig)");
    assert_eq!(received["from"], "notice@customs.example");
    assert_eq!(received["to"], "ops@corp.example");
    assert_eq!(received["route"], "ops-mail");
    assert_eq!(received["folder"], "INBOX");
    assert_eq!(received["has_attachments"], false);
    assert!(
        received["preview"]
            .as_str()
            .expect("preview")
            .starts_with("Line of message 1")
    );
    assert!(
        received["outlook_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    // The REST hook got the same event.
    let delivery = eventually(Duration::from_secs(10), || async {
        target.requests().into_iter().next()
    })
    .await
    .expect("a delivery");
    assert_eq!(delivery.json()["id"], received["id"]);

    // Read in DingTalk Mail.
    let mut c = dovecot.client().await;
    c.select(&MailboxName::from_display("INBOX"))
        .await
        .expect("SELECT");
    let uids = c.search_message_id(imid).await.expect("SEARCH");
    c.store_flags(&uids, true, &["\\Seen"])
        .await
        .expect("STORE");
    c.logout().await;
    let read = eventually(Duration::from_secs(15), || async {
        polled(&app, "dingtalk.mail.read").await.into_iter().next()
    })
    .await
    .unwrap_or_else(|| panic!("no dingtalk.mail.read; logs:\n{}", app.logs().join("\n")));
    assert_eq!(read["resource_id"], received["resource_id"]);
    assert_ne!(read["id"], received["id"]);
    assert_eq!(read["subject"], "Notice 1 (trig)");
    assert_eq!(read["is_read"], true);
    assert_eq!(read["outlook_id"], received["outlook_id"]);
    // One event each, however many cycles ran.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(polled(&app, "dingtalk.mail.received").await.len(), 1);
    assert_eq!(polled(&app, "dingtalk.mail.read").await.len(), 1);
}
