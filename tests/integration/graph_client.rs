//! The Graph client against small local fakes: token caching and sharing, secret and
//! certificate credentials, readable AADSTS errors, throttling, upload sessions and the
//! headers every request carries.

use crate::common;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{FakeReply, FakeServer, Recorded};
use dingbridge::{
    graph::{
        AssertionAlg, AuthErrorKind, Collection, Created, Credential, GraphClient, GraphError,
        LinkedResource, ORIGIN_PROPERTY_ID, RetryPolicy, TokenProvider,
        auth::CertificateCredential, event_transaction_id, origin_marker,
    },
    worker::JobFailure,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const TENANT: &str = "tenant-1";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "super-secret-value-xyz";
const CERT: &[u8] = include_bytes!("../fixtures/graph/cert.pem");
const KEY: &[u8] = include_bytes!("../fixtures/graph/key.pem");
const MAILBOX: &str = "ops@contoso.com";

fn is_token(r: &Recorded) -> bool {
    r.path.ends_with("/oauth2/v2.0/token")
}

fn form(r: &Recorded) -> HashMap<String, String> {
    url::form_urlencoded::parse(&r.body).into_owned().collect()
}

fn token_reply(n: usize, expires_in: u64) -> FakeReply {
    FakeReply::json(json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "access_token": format!("token-{n}"),
    }))
}

fn secret() -> Credential {
    Credential::Secret(SecretString::from(SECRET.to_string()))
}

fn provider(fake: &FakeServer, credential: Credential) -> Arc<TokenProvider> {
    Arc::new(TokenProvider::new(
        reqwest::Client::new(),
        &fake.url(""),
        TENANT,
        CLIENT,
        credential,
    ))
}

fn client(fake: &FakeServer) -> GraphClient {
    client_with(fake, RetryPolicy::default())
}

fn client_with(fake: &FakeServer, policy: RetryPolicy) -> GraphClient {
    GraphClient::with_policy(
        reqwest::Client::new(),
        &fake.url("/v1.0"),
        provider(fake, secret()),
        policy,
    )
}

/// A fake whose token endpoint always succeeds and whose Graph side answers `graph`.
fn graph_fake(graph: impl Fn(&Recorded) -> FakeReply + Send + Sync + 'static) -> FakeServer {
    let tokens = AtomicUsize::new(0);
    FakeServer::start(move |r| {
        if is_token(r) {
            token_reply(tokens.fetch_add(1, Ordering::SeqCst), 3599)
        } else {
            graph(r)
        }
    })
}

fn graph_requests(fake: &FakeServer) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| !is_token(r))
        .collect()
}

fn decoded_query(r: &Recorded) -> HashMap<String, String> {
    url::form_urlencoded::parse(r.query.as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn token_is_cached_and_refreshed_before_it_expires() {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    // expires_in = 2 s: refreshed at half-life, after 1 s.
    let fake = FakeServer::start(move |_| token_reply(counter.fetch_add(1, Ordering::SeqCst), 2));
    let auth = provider(&fake, secret());
    let a = auth.token().await.expect("token");
    let b = auth.token().await.expect("cached");
    assert_eq!(a.expose_secret(), "token-0");
    assert_eq!(b.expose_secret(), "token-0");
    assert_eq!(fake.requests().len(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c = auth.token().await.expect("refreshed");
    assert_eq!(c.expose_secret(), "token-1");
    assert_eq!(fake.requests().len(), 2);

    let r = &fake.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/{TENANT}/oauth2/v2.0/token"));
    let f = form(r);
    assert_eq!(f["client_id"], CLIENT);
    assert_eq!(f["scope"], "https://graph.microsoft.com/.default");
    assert_eq!(f["grant_type"], "client_credentials");
    assert_eq!(f["client_secret"], SECRET);
    assert!(!f.contains_key("client_assertion"));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    );
}

#[tokio::test]
async fn twenty_concurrent_callers_share_one_token_request() {
    let fake = FakeServer::start(|_| token_reply(0, 3599).delayed(Duration::from_millis(300)));
    let auth = provider(&fake, secret());
    let calls = (0..20).map(|_| {
        let auth = auth.clone();
        tokio::spawn(async move { auth.token().await })
    });
    for c in futures::future::join_all(calls).await {
        assert_eq!(c.expect("task").expect("token").expose_secret(), "token-0");
    }
    assert_eq!(fake.requests().len(), 1);
}

/// A token endpoint that accepts only assertions signed by the fixture certificate's
/// key, with the documented header and claims.
fn assertion_checking_fake(alg: Algorithm) -> FakeServer {
    FakeServer::start(move |r| {
        let f = form(r);
        let token_url = format!("http://{}{}", r.headers["host"], r.path);
        let refuse = |why: &str| {
            FakeReply {
            status: 401,
            headers: vec![],
            body: json!({"error": "invalid_client", "error_description": format!("AADSTS700027: {why}"), "error_codes": [700027]}).to_string(),
            delay: Duration::ZERO,
        }
        };
        if f.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            || f.contains_key("client_secret")
        {
            return refuse("no assertion");
        }
        let key = DecodingKey::from_rsa_pem(CERT).expect("certificate public key");
        let mut v = Validation::new(alg);
        v.set_audience(&[token_url.as_str()]);
        v.set_issuer(&[CLIENT]);
        v.sub = Some(CLIENT.into());
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        match jsonwebtoken::decode::<Value>(&f["client_assertion"], &key, &v) {
            Ok(data) => {
                let thumbprint_ok = match alg {
                    Algorithm::PS256 => data.header.x5t_s256.is_some() && data.header.x5t.is_none(),
                    _ => data.header.x5t.is_some() && data.header.x5t_s256.is_none(),
                };
                let jti_ok = data.claims["jti"]
                    .as_str()
                    .is_some_and(|j| uuid::Uuid::parse_str(j).is_ok());
                if thumbprint_ok && jti_ok && f["client_id"] == CLIENT {
                    token_reply(7, 3599)
                } else {
                    refuse("bad header or claims")
                }
            }
            Err(e) => refuse(&e.to_string()),
        }
    })
}

#[tokio::test]
async fn certificate_credentials_sign_an_assertion_the_token_endpoint_verifies() {
    for (alg, jwt_alg) in [
        (AssertionAlg::Ps256, Algorithm::PS256),
        (AssertionAlg::Rs256, Algorithm::RS256),
    ] {
        let fake = assertion_checking_fake(jwt_alg);
        let cert = CertificateCredential::from_pem(CERT, KEY, alg).expect("credential");
        let auth = provider(&fake, Credential::Certificate(cert));
        let token = auth
            .token()
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(token.expose_secret(), "token-7");
    }
}

#[tokio::test]
async fn a_refused_assertion_is_explained() {
    // The fake expects RS256 while the client sends PS256: signature refused.
    let fake = assertion_checking_fake(Algorithm::RS256);
    let cert = CertificateCredential::from_pem(CERT, KEY, AssertionAlg::Ps256).expect("credential");
    let auth = provider(&fake, Credential::Certificate(cert));
    let err = auth.token().await.expect_err("refused");
    assert_eq!(err.kind, AuthErrorKind::AssertionInvalid);
    assert_eq!(err.aadsts, Some(700027));
    assert!(err.to_string().contains("Upload the certificate"), "{err}");
}

#[tokio::test]
async fn an_expired_secret_gives_a_readable_error_without_the_secret() {
    let fake = FakeServer::start(|_| {
        FakeReply {
        status: 401,
        headers: vec![],
        body: json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000222: The provided client secret keys for app '11111111-2222-3333-4444-555555555555' are expired. Trace ID: a Correlation ID: b Timestamp: 2026-01-05 10:00:00Z",
            "error_codes": [7000222],
            "trace_id": "a", "correlation_id": "b",
        })
        .to_string(),
        delay: Duration::ZERO,
    }
    });
    let graph = GraphClient::new(
        reqwest::Client::new(),
        &fake.url("/v1.0"),
        provider(&fake, secret()),
    );
    assert!(graph.auth().last_error().is_none());
    let err = graph
        .set_read(MAILBOX, "msg-1", true)
        .await
        .expect_err("no token");
    let expected = "Graph rejected the client secret: it has expired (AADSTS7000222). Create a new secret in Entra ID and set DINGBRIDGE_GRAPH_CLIENT_SECRET.";
    assert_eq!(err.to_string(), expected);
    assert!(matches!(&err, GraphError::Auth(e) if e.kind == AuthErrorKind::SecretExpired));
    let last = graph.auth().last_error().expect("kept for readiness");
    assert_eq!(last.to_string(), expected);
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{graph:?}"),
        JobFailure::from(err).message,
    ] {
        assert!(!text.contains(SECRET), "{text}");
    }
    // Nothing reached Graph.
    assert!(fake.requests().iter().all(is_token));
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let calls = AtomicUsize::new(0);
    let fake = graph_fake(move |_| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            FakeReply {
                status: 429,
                headers: vec![("Retry-After".into(), "1.2".into())],
                body: json!({"error": {"code": "ApplicationThrottled", "message": "MailboxConcurrency limit"}}).to_string(),
                delay: Duration::ZERO,
            }
        } else {
            FakeReply::json(json!({"id": "msg-1", "isRead": true}))
        }
    });
    let graph = client(&fake);
    let started = Instant::now();
    graph
        .set_read(MAILBOX, "msg-1", true)
        .await
        .expect("retried");
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    let reqs = graph_requests(&fake);
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].at.duration_since(reqs[0].at) >= Duration::from_millis(1200));
    // One logical request: the same client-request-id on the retry.
    assert_eq!(
        reqs[0].header("client-request-id"),
        reqs[1].header("client-request-id")
    );
}

#[tokio::test]
async fn a_long_retry_after_blocks_the_mailbox_and_goes_back_to_the_worker() {
    let fake = graph_fake(|_| {
        FakeReply {
        status: 429,
        headers: vec![("Retry-After".into(), "30".into())],
        body: json!({"error": {"code": "TooManyRequests", "message": "slow down", "innerError": {"request-id": "rid-429", "date": "2026-01-05T10:00:00"}}}).to_string(),
        delay: Duration::ZERO,
    }
    });
    let graph = client(&fake);
    let err = graph
        .set_read(MAILBOX, "msg-1", true)
        .await
        .expect_err("throttled");
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(graph_requests(&fake).len(), 1, "no immediate retries");
    let failure = JobFailure::from(err);
    assert!(!failure.permanent);
    assert_eq!(failure.retry_after, Some(Duration::from_secs(30)));
    assert!(failure.message.contains("rid-429"), "{}", failure.message);

    // Another mailbox is not blocked; this one is.
    let other = tokio::time::timeout(
        Duration::from_secs(2),
        graph.set_read("other@contoso.com", "m", true),
    )
    .await
    .expect("other mailbox answers at once");
    assert!(other.is_err());
    // This one is blocked: the call is not sent and the wait goes back to the job.
    let before = graph_requests(&fake).len();
    let blocked = tokio::time::timeout(
        Duration::from_millis(500),
        graph.set_read(MAILBOX, "m", true),
    )
    .await
    .expect("answers at once")
    .expect_err("blocked");
    assert_eq!(blocked.status(), Some(429));
    assert!(
        blocked
            .retry_after()
            .is_some_and(|d| d > Duration::from_secs(25)),
        "{blocked:?}"
    );
    assert_eq!(
        graph_requests(&fake).len(),
        before,
        "nothing sent while blocked"
    );
}

#[tokio::test]
async fn throttling_without_retry_after_backs_off_and_503_is_retried() {
    let calls = AtomicUsize::new(0);
    let fake = graph_fake(move |_| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => FakeReply::status(503),
        1 => FakeReply::status(504),
        _ => FakeReply::json(json!({"id": "c1"})),
    });
    let graph = client_with(
        &fake,
        RetryPolicy {
            backoff_base: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
    );
    let started = Instant::now();
    graph
        .update_contact(MAILBOX, "c1", json!({"givenName": "Li"}))
        .await
        .expect("third try");
    // 50..100 ms then 100..200 ms.
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(graph_requests(&fake).len(), 3);
}

#[tokio::test]
async fn a_create_answered_504_is_not_repeated_blindly_but_handed_back_as_ambiguous() {
    let fake = graph_fake(|_| FakeReply::status(504));
    let graph = client_with(
        &fake,
        RetryPolicy {
            backoff_base: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
    );
    let err = graph
        .create_contact(MAILBOX, json!({"givenName": "Li"}))
        .await
        .expect_err("504");
    assert!(err.is_ambiguous(), "{err:?}");
    assert_eq!(graph_requests(&fake).len(), 1, "sent once");
}

#[tokio::test]
async fn never_more_than_four_requests_in_flight_per_mailbox() {
    const DELAY: Duration = Duration::from_millis(60);
    let fake = graph_fake(|_| FakeReply::json(json!({"id": "x"})).delayed(DELAY));
    let graph = client(&fake);
    let calls = (0..50).map(|i| {
        let graph = graph.clone();
        tokio::spawn(async move { graph.set_read(MAILBOX, &format!("m{i}"), true).await })
    });
    for c in futures::future::join_all(calls).await {
        c.expect("task").expect("ok");
    }
    let reqs = graph_requests(&fake);
    assert_eq!(reqs.len(), 50);
    // Each request occupies [at, at + DELAY]; the next one in the same slot can only
    // arrive after its answer, so overlapping intervals are requests in flight together.
    let mut events: Vec<(Instant, i32)> = reqs
        .iter()
        .flat_map(|r| [(r.at, 1), (r.at + DELAY, -1)])
        .collect();
    events.sort_by_key(|(t, d)| (*t, *d));
    let (mut now, mut max) = (0, 0);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    assert!(max <= 4, "max in flight {max}");
    assert!(max >= 3, "the limit should be used, got {max}");
}

#[tokio::test]
async fn upload_session_chunks_have_no_authorization_and_correct_content_range() {
    let total = 5 * 1024 * 1024;
    let content: Bytes = (0..total)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let upload_url_base = Arc::new(std::sync::Mutex::new(String::new()));
    let base = upload_url_base.clone();
    let fake = graph_fake(move |r| {
        if r.path.ends_with("/createUploadSession") {
            let url = format!(
                "{}/upload/session-1?authtoken=abc",
                base.lock().expect("base")
            );
            return FakeReply {
                status: 201,
                ..FakeReply::json(json!({
                    "uploadUrl": url,
                    "expirationDateTime": "2026-01-05T10:00:00Z",
                    "nextExpectedRanges": ["0-"],
                }))
            };
        }
        if r.path == "/upload/session-1" {
            let range = r.header("content-range").unwrap_or("");
            if range.ends_with(&format!("-{}/{}", 5 * 1024 * 1024 - 1, 5 * 1024 * 1024)) {
                return FakeReply {
                    status: 201,
                    headers: vec![(
                        "Location".into(),
                        "https://outlook.office.com/api/v2.0/Users('a')/Messages('m')/Attachments('att-1')".into(),
                    )],
                    body: String::new(),
                    delay: Duration::ZERO,
                };
            }
            let end: usize = range
                .trim_start_matches("bytes ")
                .split(['-', '/'])
                .nth(1)
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            return FakeReply::json(json!({"nextExpectedRanges": [format!("{}-", end + 1)]}));
        }
        FakeReply::status(404)
    });
    *upload_url_base.lock().expect("base") = fake.url("");
    let graph = client(&fake);
    let id = graph
        .add_attachment(
            MAILBOX,
            "msg-1",
            "report.pdf",
            "application/pdf",
            content.clone(),
        )
        .await
        .expect("uploaded");
    assert_eq!(id.as_deref(), Some("att-1"));

    let reqs = graph_requests(&fake);
    let session = &reqs[0];
    assert!(
        session
            .path
            .ends_with("/users/ops%40contoso.com/messages/msg-1/attachments/createUploadSession")
            || session
                .path
                .ends_with("/users/ops@contoso.com/messages/msg-1/attachments/createUploadSession"),
        "{}",
        session.path
    );
    assert_eq!(
        session.json(),
        json!({"AttachmentItem": {"attachmentType": "file", "name": "report.pdf", "size": total, "contentType": "application/pdf"}})
    );
    assert!(session.header("authorization").is_some());
    let puts: Vec<&Recorded> = reqs.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 2);
    let chunk = 12 * 320 * 1024;
    assert_eq!(
        puts[0].header("content-range"),
        Some(format!("bytes 0-{}/{total}", chunk - 1).as_str())
    );
    assert_eq!(
        puts[1].header("content-range"),
        Some(format!("bytes {chunk}-{}/{total}", total - 1).as_str())
    );
    let mut uploaded = Vec::new();
    for p in &puts {
        assert_eq!(
            p.header("authorization"),
            None,
            "upload PUTs are pre-authenticated"
        );
        assert_eq!(p.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            p.header("content-length"),
            Some(p.body.len().to_string().as_str())
        );
        assert_eq!(p.query, "authtoken=abc");
        uploaded.extend_from_slice(&p.body);
    }
    assert_eq!(uploaded, content.to_vec());
}

#[tokio::test]
async fn small_attachments_are_inline_and_oversized_ones_are_refused() {
    let fake = graph_fake(|_| FakeReply::json(json!({"id": "att-9"})));
    let graph = client(&fake);
    let id = graph
        .add_attachment(
            MAILBOX,
            "msg-1",
            "a.txt",
            "text/plain",
            Bytes::from_static(b"hello"),
        )
        .await
        .expect("inline");
    assert_eq!(id.as_deref(), Some("att-9"));
    let r = &graph_requests(&fake)[0];
    assert!(
        r.path.ends_with("/messages/msg-1/attachments"),
        "{}",
        r.path
    );
    assert_eq!(
        r.json(),
        json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt", "contentType": "text/plain", "contentBytes": "aGVsbG8="})
    );
    let huge = Bytes::from(vec![0u8; 150 * 1024 * 1024 + 1]);
    let err = graph
        .add_attachment(
            MAILBOX,
            "msg-1",
            "big.iso",
            "application/octet-stream",
            huge,
        )
        .await
        .expect_err("too large");
    assert!(matches!(err, GraphError::AttachmentTooLarge { .. }));
    assert!(err.to_string().contains("big.iso"), "{err}");
    assert!(JobFailure::from(err).permanent);
    assert_eq!(graph_requests(&fake).len(), 1);
}

#[tokio::test]
async fn delete_of_a_missing_item_is_success_other_errors_are_not() {
    let fake = graph_fake(|r| {
        if r.path.ends_with("/gone") {
            FakeReply {
                status: 404,
                headers: vec![],
                body: json!({"error": {"code": "ErrorItemNotFound", "message": "The specified object was not found in the store."}}).to_string(),
                delay: Duration::ZERO,
            }
        } else {
            FakeReply {
                status: 403,
                headers: vec![("request-id".into(), "rid-403".into())],
                body: json!({"error": {"code": "ErrorAccessDenied", "message": "Access to OData is disabled."}}).to_string(),
                delay: Duration::ZERO,
            }
        }
    });
    let graph = client(&fake);
    graph
        .delete_event(MAILBOX, "gone")
        .await
        .expect("404 is deleted");
    graph
        .delete_contact(MAILBOX, "gone")
        .await
        .expect("404 is deleted");
    graph
        .delete_task(MAILBOX, "list", "gone")
        .await
        .expect("404 is deleted");
    let err = graph
        .delete_event(MAILBOX, "denied")
        .await
        .expect_err("403");
    assert_eq!(err.code(), Some("ErrorAccessDenied"));
    assert!(matches!(&err, GraphError::Api { request_id: Some(r), .. } if r == "rid-403"));
    assert!(JobFailure::from(err).permanent);
    assert!(graph_requests(&fake).iter().all(|r| r.method == "DELETE"));
}

#[tokio::test]
async fn every_request_carries_the_required_headers() {
    let fake = graph_fake(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", p) if p.ends_with("/mailFolders") => FakeReply::json(json!({"value": []})),
        ("GET", p) if p.ends_with("/todo/lists") => {
            FakeReply::json(json!({"value": [{"id": "l0", "displayName": "Other"}]}))
        }
        ("GET", _) => FakeReply::json(json!({"value": [{"id": "found-1"}]})),
        ("POST", p) if p.ends_with("/sendMail") => FakeReply::status(202),
        _ => FakeReply::json(json!({"id": "new-1"})),
    });
    let graph = client(&fake);
    let marker = origin_marker("dt:msg:1");
    graph
        .send_mail(
            MAILBOX,
            json!({"subject": "hi", "body": {"contentType": "text", "content": "x"}}),
            false,
        )
        .await
        .expect("send");
    let folder = graph
        .ensure_mail_folder(MAILBOX, "DingTalk")
        .await
        .expect("folder");
    assert_eq!(folder, "new-1");
    // Cached: no more requests for the same folder.
    let before = graph_requests(&fake).len();
    assert_eq!(
        graph
            .ensure_mail_folder(MAILBOX, "DingTalk")
            .await
            .expect("cached"),
        "new-1"
    );
    assert_eq!(graph_requests(&fake).len(), before);
    graph.forget_cached_ids("OPS@contoso.com");
    assert_eq!(
        graph
            .ensure_mail_folder(MAILBOX, "DingTalk")
            .await
            .expect("again"),
        "new-1"
    );
    assert_eq!(
        graph_requests(&fake).len(),
        before + 2,
        "looked up and created again"
    );
    let msg = graph
        .create_message_in_folder(
            MAILBOX,
            &folder,
            json!({"subject": "s", "singleValueExtendedProperties": [marker]}),
        )
        .await
        .expect("message");
    graph.set_read(MAILBOX, &msg, false).await.expect("read");
    graph
        .move_message(MAILBOX, &msg, "archive")
        .await
        .expect("move");
    graph
        .create_event(MAILBOX, json!({"subject": "e"}), "dt-evt-1")
        .await
        .expect("event");
    graph
        .update_event(MAILBOX, "e1", json!({"subject": "e2"}))
        .await
        .expect("patch");
    graph
        .create_contact(MAILBOX, json!({"givenName": "Li"}))
        .await
        .expect("contact");
    graph
        .update_contact(MAILBOX, "c1", json!({"surname": "Wei"}))
        .await
        .expect("contact patch");
    let list = graph
        .ensure_todo_list(MAILBOX, "DingTalk")
        .await
        .expect("list");
    assert_eq!(list, "new-1");
    let link = LinkedResource {
        application_name: "DingTalk".into(),
        external_id: "dt:todo:1".into(),
        display_name: Some("Open in DingTalk".into()),
        web_url: Some("https://example.invalid/todo/1".into()),
    };
    graph
        .create_task(
            MAILBOX,
            &list,
            json!({"title": "t", "status": "notStarted"}),
            &link,
        )
        .await
        .expect("task");
    graph
        .update_task(MAILBOX, &list, "t1", json!({"status": "completed"}))
        .await
        .expect("task patch");
    let found = graph
        .find_by_origin(MAILBOX, Collection::Events, "String {x} Name Y", "it's")
        .await
        .expect("find");
    assert_eq!(found.as_deref(), Some("found-1"));
    graph
        .get(MAILBOX, "mailFolders/inbox/messages?$top=1")
        .await
        .expect("get");

    let reqs = graph_requests(&fake);
    let mut ids = std::collections::HashSet::new();
    for r in &reqs {
        let crid = r.header("client-request-id").expect("client-request-id");
        assert!(uuid::Uuid::parse_str(crid).is_ok(), "{crid}");
        assert!(ids.insert(crid.to_string()), "one id per logical request");
        assert!(
            r.header("user-agent")
                .is_some_and(|u| u.starts_with("dingbridge/")),
            "{:?}",
            r.header("user-agent")
        );
        assert_eq!(r.header("authorization"), Some("Bearer token-0"));
        let outlook_item = ["/messages", "/events", "/contacts", "/attachments"]
            .iter()
            .any(|s| r.path.contains(s));
        if outlook_item {
            assert_eq!(
                r.header("prefer"),
                Some("IdType=\"ImmutableId\""),
                "{} {}",
                r.method,
                r.path
            );
        }
        if r.path.contains("/todo/") {
            assert_eq!(r.header("prefer"), None, "{}", r.path);
        }
        if !r.body.is_empty() {
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
    }
    let by = |m: &str, suffix: &str| {
        reqs.iter()
            .find(|r| r.method == m && r.path.ends_with(suffix))
            .unwrap_or_else(|| panic!("{m} {suffix}"))
            .clone()
    };
    assert_eq!(
        by("POST", "/sendMail").json(),
        json!({"message": {"subject": "hi", "body": {"contentType": "text", "content": "x"}}, "saveToSentItems": false})
    );
    let folders = by("GET", "/mailFolders");
    assert_eq!(
        decoded_query(&folders)["$filter"],
        "displayName eq 'DingTalk'"
    );
    assert!(
        !folders.query.contains('+') && !folders.query.contains(' '),
        "{}",
        folders.query
    );
    assert_eq!(
        by("POST", "/mailFolders").json(),
        json!({"displayName": "DingTalk"})
    );
    assert_eq!(
        by("POST", "/mailFolders/new-1/messages").json()["singleValueExtendedProperties"],
        json!([origin_marker("dt:msg:1"), {"id": "Integer 0x0E07", "value": "1"}])
    );
    assert_eq!(
        by("PATCH", "/messages/new-1").json(),
        json!({"isRead": false})
    );
    assert_eq!(
        by("POST", "/messages/new-1/move").json(),
        json!({"destinationId": "archive"})
    );
    assert_eq!(
        by("POST", "/events").json(),
        json!({"subject": "e", "transactionId": "dt-evt-1"})
    );
    assert_eq!(by("PATCH", "/events/e1").json(), json!({"subject": "e2"}));
    assert_eq!(by("POST", "/contacts").json(), json!({"givenName": "Li"}));
    assert_eq!(
        by("POST", "/todo/lists").json(),
        json!({"displayName": "DingTalk"})
    );
    assert_eq!(
        by("POST", "/todo/lists/new-1/tasks").json(),
        json!({"title": "t", "status": "notStarted", "linkedResources": [{
            "applicationName": "DingTalk", "externalId": "dt:todo:1",
            "displayName": "Open in DingTalk", "webUrl": "https://example.invalid/todo/1"
        }]})
    );
    let find = by("GET", "/events");
    let q = decoded_query(&find);
    assert_eq!(
        q["$filter"],
        "singleValueExtendedProperties/Any(ep: ep/id eq 'String {x} Name Y' and ep/value eq 'it''s')"
    );
    assert_eq!(q["$select"], "id");
    let get = by("GET", "/mailFolders/inbox/messages");
    assert_eq!(get.query, "$top=1");
}

#[tokio::test]
async fn a_rejected_token_is_renewed_once() {
    let tokens = AtomicUsize::new(0);
    let fake = FakeServer::start(move |r| {
        if is_token(r) {
            return token_reply(tokens.fetch_add(1, Ordering::SeqCst), 3599);
        }
        if r.header("authorization") == Some("Bearer token-0") {
            FakeReply {
                status: 401,
                headers: vec![],
                body: json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired or is not yet valid."}}).to_string(),
                delay: Duration::ZERO,
            }
        } else {
            FakeReply::json(json!({"id": "ok"}))
        }
    });
    let graph = client(&fake);
    graph
        .set_read(MAILBOX, "m", true)
        .await
        .expect("after renewal");
    let token_requests = fake.requests().iter().filter(|r| is_token(r)).count();
    assert_eq!(token_requests, 2);
}

#[tokio::test]
async fn graph_is_not_built_without_configuration_and_is_built_with_it() {
    let none = GraphClient::from_config(&Default::default(), reqwest::Client::new()).expect("ok");
    assert!(none.is_none());
    let fake = graph_fake(|_| FakeReply::json(json!({"id": "x"})));
    let config = dingbridge::config::GraphConfig {
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT.into()),
        certificate_path: Some(format!(
            "{}/tests/fixtures/graph/cert.pem",
            env!("CARGO_MANIFEST_DIR")
        )),
        private_key_path: Some(format!(
            "{}/tests/fixtures/graph/key.pem",
            env!("CARGO_MANIFEST_DIR")
        )),
        base_url: Some(fake.url("/v1.0")),
        authority_url: Some(fake.url("")),
        ..Default::default()
    };
    let graph = GraphClient::from_config(&config, reqwest::Client::new())
        .expect("valid")
        .expect("configured");
    graph.set_read(MAILBOX, "m", true).await.expect("works");
    let token = fake
        .requests()
        .into_iter()
        .find(is_token)
        .expect("token request");
    assert!(form(&token).contains_key("client_assertion"));
    assert_eq!(
        graph.auth().token_url(),
        format!("{}/{TENANT}/oauth2/v2.0/token", fake.url(""))
    );
}

#[tokio::test]
async fn creates_are_idempotent_through_the_origin_marker() {
    // The fake remembers what was created and answers the origin lookups from it.
    let store: Arc<std::sync::Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = store.clone();
    let fake = graph_fake(move |r| {
        let mut items = seen.lock().expect("items");
        if r.method == "POST" {
            let id = format!("id-{}", items.len());
            items.push((r.path.clone(), r.json()));
            return FakeReply {
                status: 201,
                ..FakeReply::json(json!({ "id": id }))
            };
        }
        if r.method == "GET" && r.path.ends_with("/tasks") {
            let value: Vec<Value> = items
                .iter()
                .enumerate()
                .filter(|(_, (p, _))| p.ends_with("/tasks"))
                .map(|(i, (_, b))| json!({"id": format!("id-{i}"), "linkedResources": b["linkedResources"]}))
                .collect();
            return FakeReply::json(json!({ "value": value }));
        }
        let filter = decoded_query(r).get("$filter").cloned().unwrap_or_default();
        let kind = r.path.rsplit('/').next().unwrap_or("").to_string();
        let value: Vec<Value> = items
            .iter()
            .enumerate()
            .filter(|(_, (p, b))| {
                let same_kind = p.ends_with(&format!("/{kind}"));
                let marked = b["singleValueExtendedProperties"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|ep| {
                        ep["id"] == ORIGIN_PROPERTY_ID
                            && filter.contains(&format!(
                                "ep/value eq '{}'",
                                ep["value"].as_str().unwrap_or("")
                            ))
                    });
                same_kind && marked
            })
            .map(|(i, _)| json!({"id": format!("id-{i}")}))
            .collect();
        FakeReply::json(json!({ "value": value }))
    });
    let graph = client(&fake);
    let link = LinkedResource {
        application_name: "DingTalk".into(),
        external_id: "dt:todo:1".into(),
        display_name: None,
        web_url: None,
    };
    for round in 0..2 {
        let existed = round == 1;
        let m = graph
            .create_message_once(MAILBOX, "folder-1", json!({"subject": "s"}), "dt:msg:1")
            .await
            .expect("message");
        assert_eq!(
            m,
            Created {
                id: "id-0".into(),
                existed
            }
        );
        let e = graph
            .create_event_once(MAILBOX, json!({"subject": "e"}), "dt:evt:1")
            .await
            .expect("event");
        assert_eq!(
            e,
            Created {
                id: "id-1".into(),
                existed
            }
        );
        let c = graph
            .create_contact_once(MAILBOX, json!({"givenName": "Li"}), "dt:user:1")
            .await
            .expect("contact");
        assert_eq!(
            c,
            Created {
                id: "id-2".into(),
                existed
            }
        );
        let t = graph
            .create_task_once(MAILBOX, "list-1", json!({"title": "t"}), &link)
            .await
            .expect("task");
        assert_eq!(
            t,
            Created {
                id: "id-3".into(),
                existed
            }
        );
    }
    let items = store.lock().expect("items");
    assert_eq!(items.len(), 4, "the second round created nothing");
    assert_eq!(
        items[1].1["transactionId"],
        event_transaction_id("dt:evt:1")
    );
    assert_eq!(
        event_transaction_id("dt:evt:1"),
        event_transaction_id("dt:evt:1")
    );
    assert_ne!(
        event_transaction_id("dt:evt:1"),
        event_transaction_id("dt:evt:2")
    );
    assert!(
        items[0].1["singleValueExtendedProperties"]
            .as_array()
            .expect("props")
            .contains(&origin_marker("dt:msg:1"))
    );
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_handed_to_the_worker() {
    let fake = graph_fake(|_| FakeReply {
        status: 429,
        headers: vec![("Retry-After".into(), "0.2".into())],
        body: json!({"error": {"code": "TooManyRequests", "message": "x"}}).to_string(),
        delay: Duration::ZERO,
    });
    let graph = client(&fake);
    let started = Instant::now();
    let err = graph
        .update_contact(MAILBOX, "c1", json!({"surname": "Wei"}))
        .await
        .expect_err("still throttled");
    // 1 try + 3 retries, each after the 200 ms Retry-After.
    assert_eq!(graph_requests(&fake).len(), 4);
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(err.retry_after(), Some(Duration::from_millis(200)));
    let failure = JobFailure::from(err);
    assert!(!failure.permanent);
    assert_eq!(failure.retry_after, Some(Duration::from_millis(200)));
}

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_explain_auth_failures_and_never_contain_secrets_or_tokens() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let expired = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = expired.clone();
    let fake = FakeServer::start(move |r| {
        if is_token(r) {
            if flag.load(Ordering::SeqCst) {
                return FakeReply {
                    status: 401,
                    headers: vec![],
                    body: json!({"error": "invalid_client", "error_description": "AADSTS7000222: expired", "error_codes": [7000222]}).to_string(),
                    delay: Duration::ZERO,
                };
            }
            return FakeReply::json(
                json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "eyJ-secret-access-token"}),
            );
        }
        FakeReply::json(json!({"id": "m"}))
    });
    let graph = client(&fake);
    graph
        .set_read(MAILBOX, "m", true)
        .await
        .expect_err("expired secret");
    expired.store(false, Ordering::SeqCst);
    graph
        .set_read(MAILBOX, "m", true)
        .await
        .expect("new secret works");
    assert!(
        graph.auth().last_error().is_none(),
        "cleared by the success"
    );

    let text = String::from_utf8(logs.0.lock().expect("log").clone()).expect("utf8");
    assert!(text.contains("AADSTS7000222"), "{text}");
    assert!(text.contains("DINGBRIDGE_GRAPH_CLIENT_SECRET"), "{text}");
    assert!(!text.contains(SECRET), "secret in the log");
    assert!(
        !text.contains("eyJ-secret-access-token"),
        "token in the log"
    );
}
