//! Self-tests of the Graph + Entra fake (tests/common/graph_fake.rs) with plain reqwest.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::graph_fake::{Failure, GraphFake, GraphFakeConfig, JWT_BEARER, TestCert};
use serde_json::{Value, json};

const MB: &str = "relay@contoso.example";
const XP_ID: &str = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name DingTalkId";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn secret_token(fake: &GraphFake, secret: &str) -> reqwest::Response {
    let cfg = fake.config();
    http()
        .post(fake.token_url())
        .form(&[
            ("client_id", cfg.client_id.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("token request")
}

async fn assertion_token(fake: &GraphFake, assertion: &str) -> reqwest::Response {
    let cfg = fake.config();
    http()
        .post(fake.token_url())
        .form(&[
            ("client_id", cfg.client_id.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("token request")
}

/// A tiny Graph client over the fake.
struct G {
    fake: GraphFake,
    token: String,
    http: reqwest::Client,
}

impl G {
    fn new(config: GraphFakeConfig) -> G {
        let fake = GraphFake::start(config);
        let token = fake.issue_token();
        G {
            fake,
            token,
            http: http(),
        }
    }
    fn url(&self, rel: &str) -> String {
        format!("{}/users/{MB}{rel}", self.fake.graph_base())
    }
    async fn send(
        &self,
        method: reqwest::Method,
        rel: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut rb = self
            .http
            .request(method, self.url(rel))
            .bearer_auth(&self.token)
            .header("client-request-id", uuid::Uuid::new_v4().to_string());
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("graph request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, headers, v)
    }
    async fn post(&self, rel: &str, body: Value) -> (u16, Value) {
        let (s, _, v) = self.send(reqwest::Method::POST, rel, Some(body)).await;
        (s, v)
    }
    async fn patch(&self, rel: &str, body: Value) -> (u16, Value) {
        let (s, _, v) = self.send(reqwest::Method::PATCH, rel, Some(body)).await;
        (s, v)
    }
    async fn get(&self, rel: &str) -> (u16, Value) {
        let (s, _, v) = self.send(reqwest::Method::GET, rel, None).await;
        (s, v)
    }
}

#[tokio::test]
async fn token_with_client_secret() {
    let fake = GraphFake::start(GraphFakeConfig::default().with_secret("s3cret"));
    let wrong = secret_token(&fake, "nope").await;
    assert_eq!(wrong.status().as_u16(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000215);

    let ok = secret_token(&fake, "s3cret").await;
    assert_eq!(ok.status().as_u16(), 200);
    let t: Value = ok.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3599);
    let token = t["access_token"].as_str().unwrap().to_string();

    // Resource calls need the issued bearer token.
    let url = format!("{}/users/{MB}/mailFolders", fake.graph_base());
    let no = http().get(&url).send().await.unwrap();
    assert_eq!(no.status().as_u16(), 401);
    assert!(no.headers().contains_key("request-id"));
    let e: Value = no.json().await.unwrap();
    assert_eq!(e["error"]["code"], "InvalidAuthenticationToken");
    assert!(e["error"]["innerError"]["request-id"].is_string());
    let bad = http().get(&url).bearer_auth("forged").send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let yes = http().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(yes.status().as_u16(), 200);
    let folders: Value = yes.json().await.unwrap();
    assert!(folders["value"].as_array().unwrap().len() >= 4);

    // Expired secret, then wrong tenant.
    fake.set_secret_expired(true);
    let exp = secret_token(&fake, "s3cret").await;
    assert_eq!(exp.status().as_u16(), 401);
    let body: Value = exp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000222);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000222: The provided client secret keys for app")
    );
    let wrong_tenant = http()
        .post(fake.url("/contoso.example/oauth2/v2.0/token"))
        .form(&[("client_id", "x"), ("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_tenant.status().as_u16(), 400);
    let body: Value = wrong_tenant.json().await.unwrap();
    assert_eq!(body["error_codes"][0], 90002);
    assert_eq!(fake.token_requests(), 4);

    // Short-lived tokens stop working after expires_in.
    let short = GraphFake::start(
        GraphFakeConfig::default()
            .with_secret("s")
            .with_token_expires_in(1),
    );
    let t: Value = secret_token(&short, "s").await.json().await.unwrap();
    assert_eq!(t["expires_in"], 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let url = format!("{}/users/{MB}/events", short.graph_base());
    let late = http()
        .get(&url)
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(late.status().as_u16(), 401);
}

#[tokio::test]
async fn token_with_certificate_assertion() {
    let started = Instant::now();
    let cert = TestCert::generate();
    eprintln!("throwaway RSA key + certificate in {:?}", started.elapsed());
    let fake = GraphFake::start(GraphFakeConfig::default().with_certificate_pem(&cert.cert_pem));
    let cfg = fake.config();
    let aud = fake.token_url();

    // PS256 + x5t#S256 (the current recommendation).
    let a = cert.assertion(true, &aud, &cfg.client_id, json!({}));
    let ok = assertion_token(&fake, &a).await;
    assert_eq!(ok.status().as_u16(), 200);
    let t: Value = ok.json().await.unwrap();
    assert!(t["access_token"].is_string());
    // The same assertion again: jti replay.
    let replay = assertion_token(&fake, &a).await;
    assert_eq!(replay.status().as_u16(), 401);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");

    // RS256 + x5t (older docs, MSAL) and the login.microsoftonline.com audience.
    let ms_aud = format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        cfg.tenant
    );
    let a = cert.assertion(false, &ms_aud, &cfg.client_id, json!({}));
    assert_eq!(assertion_token(&fake, &a).await.status().as_u16(), 200);

    // Wrong audience, wrong issuer, expired, other key.
    let cases: Vec<(String, u64)> = vec![
        (
            cert.assertion(true, "https://example.invalid/token", &cfg.client_id, json!({})),
            700023,
        ),
        (
            cert.assertion(true, &aud, &cfg.client_id, json!({"iss": "someone-else"})),
            700021,
        ),
        (
            cert.assertion(
                true,
                &aud,
                &cfg.client_id,
                json!({"exp": chrono::Utc::now().timestamp() - 600, "nbf": chrono::Utc::now().timestamp() - 900}),
            ),
            700024,
        ),
    ];
    for (a, code) in cases {
        let r = assertion_token(&fake, &a).await;
        assert_eq!(r.status().as_u16(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error_codes"][0], code, "{body}");
    }
    // Signed by another key but claiming this certificate's thumbprint.
    let other = TestCert::generate();
    let forged = TestCert {
        x5t_s256: cert.x5t_s256.clone(),
        x5t: cert.x5t.clone(),
        ..other.clone()
    };
    let a = forged.assertion(true, &aud, &cfg.client_id, json!({}));
    let r = assertion_token(&fake, &a).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_codes"][0], 700027, "{body}");
    // Another certificate's thumbprint: key not found.
    let a = other.assertion(true, &aud, &cfg.client_id, json!({}));
    let body: Value = assertion_token(&fake, &a).await.json().await.unwrap();
    assert_eq!(body["error_codes"][0], 700027, "{body}");
    assert_eq!(fake.token_requests(), 8);
}

#[tokio::test]
async fn doc_style_bodies_pass_and_state_is_kept() {
    let g = G::new(GraphFakeConfig::default());
    // A folder, found again by $filter.
    let (s, folder) = g
        .post("/mailFolders", json!({"displayName": "DingTalk"}))
        .await;
    assert_eq!(s, 201);
    let fid = folder["id"].as_str().unwrap().to_string();
    let (s, _) = g
        .post("/mailFolders", json!({"displayName": "DingTalk"}))
        .await;
    assert_eq!(s, 409);
    let (s, found) = g
        .get("/mailFolders?$filter=displayName%20eq%20'DingTalk'")
        .await;
    assert_eq!(s, 200);
    assert_eq!(found["value"][0]["id"], fid.as_str());

    // A received (non-draft) message with the origin marker, then found by it.
    let msg = json!({
        "subject": "Group chat: hello",
        "body": {"contentType": "html", "content": "<p>hello</p>"},
        "from": {"emailAddress": {"name": "Zhang San", "address": "zhangsan@dingtalk.invalid"}},
        "toRecipients": [{"emailAddress": {"address": MB}}],
        "receivedDateTime": "2026-01-05T10:00:00Z",
        "isRead": false,
        "singleValueExtendedProperties": [
            {"id": XP_ID, "value": "msg-1"},
            {"id": "Integer 0x0E07", "value": "1"}
        ],
        "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt",
            "contentType": "text/plain", "contentBytes": "aGVsbG8="}]
    });
    let (s, created) = g.post(&format!("/mailFolders/{fid}/messages"), msg).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["isDraft"], false);
    assert!(created.get("singleValueExtendedProperties").is_none());
    let mid = created["id"].as_str().unwrap().to_string();
    let filter = format!(
        "$filter=singleValueExtendedProperties/Any(ep:%20ep/id%20eq%20'{}'%20and%20ep/value%20eq%20'msg-1')&$expand=singleValueExtendedProperties($filter=id%20eq%20'{}')",
        urlencode(XP_ID),
        urlencode(XP_ID)
    );
    let (s, hits) = g
        .get(&format!("/mailFolders/{fid}/messages?{filter}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(hits["value"].as_array().unwrap().len(), 1, "{hits}");
    assert_eq!(
        hits["value"][0]["singleValueExtendedProperties"][0]["value"],
        "msg-1"
    );
    let stored = g.fake.messages(MB, "DingTalk");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["singleValueExtendedProperties"][0]["id"], XP_ID);
    assert_eq!(stored[0]["attachments"][0]["size"], 5);

    // Read state, move (new id without immutable ids), delete twice.
    let (s, patched) = g
        .patch(&format!("/messages/{mid}"), json!({"isRead": true}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(patched["isRead"], true);
    let (s, moved) = g
        .post(
            &format!("/messages/{mid}/move"),
            json!({"destinationId": "archive"}),
        )
        .await;
    assert_eq!(s, 201);
    let new_id = moved["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, mid);
    assert_eq!(g.fake.messages(MB, "archive").len(), 1);
    let (s, h, _) = g
        .send(
            reqwest::Method::DELETE,
            &format!("/messages/{new_id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert!(h.contains_key("request-id"));
    let (s, h, e) = g
        .send(
            reqwest::Method::DELETE,
            &format!("/messages/{new_id}"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["code"], "ErrorItemNotFound");
    assert_eq!(
        e["error"]["innerError"]["request-id"],
        h["request-id"].to_str().unwrap()
    );

    // sendMail (camelCase, as the docs and the service use it).
    let (s, _) = g
        .post(
            "/sendMail",
            json!({"message": {"subject": "Hi", "body": {"contentType": "text", "content": "x"},
                "toRecipients": [{"emailAddress": {"address": "a@contoso.example"}}]},
                "saveToSentItems": true}),
        )
        .await;
    assert_eq!(s, 202);
    assert_eq!(g.fake.sent_mails(MB).len(), 1);
    assert_eq!(g.fake.messages(MB, "sentitems").len(), 1);

    // Event, contact, task with linked resource.
    let ev = json!({
        "subject": "Standup",
        "body": {"contentType": "html", "content": "daily"},
        "start": {"dateTime": "2026-01-05T10:00:00", "timeZone": "China Standard Time"},
        "end": {"dateTime": "2026-01-05T10:30:00", "timeZone": "China Standard Time"},
        "location": {"displayName": "Room 1"},
        "attendees": [{"emailAddress": {"address": "a@contoso.example", "name": "A"}, "type": "required"}],
        "transactionId": "dt-evt-7",
        "singleValueExtendedProperties": [{"id": XP_ID, "value": "evt-7"}]
    });
    let (s, e) = g.post("/events", ev.clone()).await;
    assert_eq!(s, 201, "{e}");
    let eid = e["id"].as_str().unwrap().to_string();
    let (s, p) = g
        .patch(
            &format!("/events/{eid}"),
            json!({"subject": "Standup (moved)"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["subject"], "Standup (moved)");
    let (s, c) = g
        .post(
            "/contacts",
            json!({"givenName": "San", "surname": "Zhang", "displayName": "Zhang San",
                "emailAddresses": [{"address": "zs@contoso.example", "name": "Zhang San"}],
                "businessPhones": ["+86 10 0000 0000"], "mobilePhone": "+86 138 0000 0000",
                "companyName": "Contoso", "jobTitle": "Engineer"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let (s, lists) = g.get("/todo/lists").await;
    assert_eq!(s, 200);
    assert_eq!(lists["value"][0]["wellknownListName"], "defaultList");
    let (s, list) = g
        .post("/todo/lists", json!({"displayName": "DingTalk"}))
        .await;
    assert_eq!(s, 201);
    let lid = list["id"].as_str().unwrap().to_string();
    let (s, task) = g
        .post(
            &format!("/todo/lists/{lid}/tasks"),
            json!({"title": "Review", "status": "inProgress", "importance": "high",
                "body": {"content": "please", "contentType": "text"},
                "dueDateTime": {"dateTime": "2026-01-06T09:00:00", "timeZone": "China Standard Time"},
                "linkedResources": [{"webUrl": "https://dingtalk.invalid/todo/1",
                    "applicationName": "DingTalk", "displayName": "DingTalk todo", "externalId": "todo-1"}]}),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let tid = task["id"].as_str().unwrap().to_string();
    let (s, _) = g
        .patch(
            &format!("/todo/lists/{lid}/tasks/{tid}"),
            json!({"status": "completed"}),
        )
        .await;
    assert_eq!(s, 200);
    let tasks = g.fake.tasks(MB, "DingTalk");
    assert_eq!(tasks[0]["status"], "completed");
    assert_eq!(tasks[0]["linkedResources"][0]["externalId"], "todo-1");
    assert!(tasks[0]["linkedResources"][0]["id"].is_string());
    assert_eq!(g.fake.contacts(MB).len(), 1);
    assert_eq!(g.fake.events(MB).len(), 1);

    g.fake.assert_no_violations();
    // Every response carried a request-id; every request was recorded with its headers.
    let reqs = g.fake.requests();
    assert!(reqs.iter().all(|r| r.header("authorization").is_some()));
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[tokio::test]
async fn invalid_bodies_are_violations() {
    let g = G::new(GraphFakeConfig::default());
    let (_, m) = g
        .post(
            "/messages",
            json!({"subject": "draft", "body": {"contentType": "text", "content": "x"}}),
        )
        .await;
    let mid = m["id"].as_str().unwrap().to_string();
    assert_eq!(m["isDraft"], true);
    let (_, list) = g.get("/todo/lists").await;
    let lid = list["value"][0]["id"].as_str().unwrap().to_string();

    let (s, e) = g
        .patch(&format!("/messages/{mid}"), json!({"isRead": "yes"}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["code"], "BadRequest");
    let (s, _) = g
        .post(
            &format!("/todo/lists/{lid}/tasks"),
            json!({"title": "t", "status": "done"}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = g
        .post(
            "/events",
            json!({"subject": "x", "start": {"dateTime": "2026-01-05T10:00:00"},
                "end": {"dateTime": "2026-01-05T11:00:00", "timeZone": "UTC"}}),
        )
        .await;
    assert_eq!(s, 400);
    // Enum values are case-sensitive in the oracle's schema (Graph itself accepts either).
    let (s, _) = g
        .post(
            "/messages",
            json!({"body": {"contentType": "HTML", "content": "x"}}),
        )
        .await;
    assert_eq!(s, 400);
    // Action: sendMail with a wrong inner type, move with a number.
    let (s, _) = g
        .post("/sendMail", json!({"message": {"isRead": "no"}}))
        .await;
    assert_eq!(s, 400);
    let (s, _) = g
        .post(
            &format!("/messages/{mid}/move"),
            json!({"destinationId": 5}),
        )
        .await;
    assert_eq!(s, 400);
    // Attachment without @odata.type.
    let (s, _) = g
        .post(
            &format!("/messages/{mid}/attachments"),
            json!({"name": "a", "contentBytes": "aGk="}),
        )
        .await;
    assert_eq!(s, 400);

    let v = g.fake.violations();
    assert_eq!(v.len(), 7, "{v:#?}");
    assert!(
        v[0].messages.iter().any(|m| m.contains("/isRead")),
        "{:?}",
        v[0]
    );
    assert_eq!(v[0].schema, "microsoft.graph.message");
    assert!(
        v[1].messages.iter().any(|m| m.contains("/status")),
        "{:?}",
        v[1]
    );
    assert!(
        v[2].messages.iter().any(|m| m.contains("/start/timeZone")),
        "{:?}",
        v[2]
    );
    assert!(
        v[3].messages.iter().any(|m| m.starts_with("/body")),
        "{:?}",
        v[3]
    );
    assert!(
        v[4].messages.iter().any(|m| m.contains("/Message/isRead")),
        "{:?}",
        v[4]
    );
    assert!(
        v[5].messages.iter().any(|m| m.contains("/DestinationId")),
        "{:?}",
        v[5]
    );
    assert!(v[6].path.ends_with("/attachments"));
}

#[tokio::test]
async fn fifth_concurrent_request_gets_429() {
    let g = G::new(GraphFakeConfig::default().with_latency(Duration::from_millis(400)));
    let g = std::sync::Arc::new(g);
    let mut tasks = vec![];
    for _ in 0..4 {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            g.send(reqwest::Method::GET, "/events", None).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (s, h, e) = g.send(reqwest::Method::GET, "/events", None).await;
    assert_eq!(s, 429);
    assert_eq!(e["error"]["code"], "ApplicationThrottled");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MailboxConcurrency")
    );
    assert_eq!(h["retry-after"], "1");
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    assert_eq!(g.fake.max_in_flight(MB), 4);
    assert_eq!(g.fake.throttled_for(MB), 1);
    assert_eq!(g.fake.throttled(), (1, 0));
    // Another mailbox is not affected.
    assert_eq!(g.fake.max_in_flight("other@contoso.example"), 0);
}

#[tokio::test]
async fn budget_429_carries_retry_after() {
    let g = G::new(GraphFakeConfig::default().with_budget(3, Duration::from_secs(2)));
    for _ in 0..3 {
        assert_eq!(g.get("/contacts").await.0, 200);
    }
    let (s, h, e) = g.send(reqwest::Method::GET, "/contacts", None).await;
    assert_eq!(s, 429);
    assert_eq!(e["error"]["code"], "TooManyRequests");
    let ra: u64 = h["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("integer seconds");
    assert!((1..=2).contains(&ra));
    tokio::time::sleep(Duration::from_secs(ra)).await;
    assert_eq!(g.get("/contacts").await.0, 200);

    let f = G::new(
        GraphFakeConfig::default()
            .with_budget(1, Duration::from_millis(500))
            .with_fractional_retry_after(),
    );
    assert_eq!(f.get("/contacts").await.0, 200);
    let (s, h, _) = f.send(reqwest::Method::GET, "/contacts", None).await;
    assert_eq!(s, 429);
    let ra: f64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(ra > 0.0 && ra <= 0.5, "{ra}");
    assert!(h["retry-after"].to_str().unwrap().contains('.'));
}

#[tokio::test]
async fn upload_session_rejects_authorization_and_reassembles_5mb() {
    let g = G::new(GraphFakeConfig::default());
    let (_, m) = g
        .post(
            "/messages",
            json!({"subject": "with a big file", "body": {"contentType": "text", "content": "x"}}),
        )
        .await;
    let mid = m["id"].as_str().unwrap().to_string();
    let data: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let (s, sess) = g
        .post(
            &format!("/messages/{mid}/attachments/createUploadSession"),
            json!({"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": data.len()}}),
        )
        .await;
    assert_eq!(s, 201, "{sess}");
    assert_eq!(sess["nextExpectedRanges"][0], "0-");
    let upload = sess["uploadUrl"].as_str().unwrap().to_string();
    assert!(upload.starts_with(&g.fake.authority()));

    let put = |from: usize, to: usize, auth: bool| {
        let mut rb = g
            .http
            .put(&upload)
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("bytes {from}-{}/{}", to - 1, data.len()),
            )
            .body(data[from..to].to_vec());
        if auth {
            rb = rb.bearer_auth(&g.token);
        }
        rb.send()
    };
    let r = put(0, 4 * 1024 * 1024, true).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(g.fake.violations().len(), 1);

    let chunk = 4 * 1024 * 1024;
    let r = put(0, chunk, false).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["nextExpectedRanges"][0], format!("{chunk}-"));
    let r = put(chunk, data.len(), false).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.contains(&mid), "{loc}");

    let msg = &g.fake.all_messages(MB)[0];
    let att = &msg["attachments"][0];
    assert_eq!(att["size"], data.len());
    assert_eq!(att["name"], "big.bin");
    let bytes = g
        .fake
        .attachment_bytes(MB, att["id"].as_str().unwrap())
        .unwrap();
    assert!(bytes == data, "reassembled bytes differ");
    assert!(loc.contains(att["id"].as_str().unwrap()));
    assert_eq!(g.fake.violations().len(), 1, "only the Authorization PUT");
}

#[tokio::test]
async fn transaction_id_dedupes_event_creation() {
    let g = G::new(GraphFakeConfig::default());
    let ev = json!({
        "subject": "Review",
        "start": {"dateTime": "2026-01-05T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-01-05T11:00:00", "timeZone": "UTC"},
        "transactionId": "5b1f3a7e-0000-4000-8000-000000000001"
    });
    let (s1, e1) = g.post("/events", ev.clone()).await;
    let (s2, e2) = g.post("/events", ev).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(e1["id"], e2["id"]);
    assert_eq!(g.fake.events(MB).len(), 1);
    let id = e1["id"].as_str().unwrap();
    assert_eq!(
        g.send(reqwest::Method::DELETE, &format!("/events/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        g.send(reqwest::Method::DELETE, &format!("/events/{id}"), None)
            .await
            .0,
        404
    );
    g.fake.assert_no_violations();
}

#[tokio::test]
async fn injected_failures_and_unknown_mailboxes() {
    let g = G::new(GraphFakeConfig::default().with_mailboxes(&[MB]));
    g.fake
        .fail_next(Some("POST"), "/contacts", 2, Failure::unavailable("1"));
    for _ in 0..2 {
        let (s, h, e) = g
            .send(
                reqwest::Method::POST,
                "/contacts",
                Some(json!({"displayName": "A"})),
            )
            .await;
        assert_eq!(s, 503);
        assert_eq!(h["retry-after"], "1");
        assert_eq!(e["error"]["code"], "serviceNotAvailable");
    }
    assert_eq!(
        g.post("/contacts", json!({"displayName": "A"})).await.0,
        201
    );

    g.fake.fail_next(
        None,
        "/contacts",
        1,
        Failure::HangThenFail {
            delay: Duration::from_millis(300),
            status: 500,
        },
    );
    let t = Instant::now();
    assert_eq!(g.get("/contacts").await.0, 500);
    assert!(t.elapsed() >= Duration::from_millis(300));

    let url = format!(
        "{}/users/stranger@contoso.example/messages",
        g.fake.graph_base()
    );
    let r = g.http.get(url).bearer_auth(&g.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "MailboxNotEnabledForRESTAPI");
    // Recorded requests keep method, path, headers and body.
    let posts: Vec<_> = g
        .fake
        .requests_to("/contacts")
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[0].json()["displayName"], "A");
    assert!(posts[0].header("client-request-id").is_some());
    let _ = base64::engine::general_purpose::STANDARD.encode(b"");
}

#[test]
fn oracle_compiles_once_per_process() {
    let t = Instant::now();
    let doc = common::graph_fake::oracle_document();
    // §6.4 rule 1: no `required` array keeps "@odata.type".
    let text = doc.to_string();
    assert!(!text.contains(r#""required":["@odata.type"]"#));
    let errs =
        common::graph_fake::schema_errors("microsoft.graph.todoTask", &json!({"status": "done"}));
    assert!(!errs.is_empty());
    eprintln!("oracle loaded and compiled in {:?}", t.elapsed());
    let t = Instant::now();
    let _fake = GraphFake::start_default();
    eprintln!("a second fake started in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(2));
}
