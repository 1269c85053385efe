//! DingTalk Mail → Outlook, Graph half, against the Graph fake: raw mails (the fixtures
//! of `tests/fixtures/mail/` and generated ones with large files) imported with
//! `GraphClient::import_mail` land once, as received items, with their content intact
//! (read back from the fake and through `$value`); a second import or a mail already in
//! the mailbox maps to the existing item; an ambiguous answer leaves one item; each mail
//! costs one request (plus an upload session per large file). Also the Graph calls of
//! the way back: folders, read flags (with their `updated` notification) and MIME.

use crate::common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{
    FakeReply, FakeServer, Recorded, eventually,
    graph_fake::{Failure, GraphFake, GraphFakeConfig},
};
use dingbridge::{
    graph::{
        Credential, GraphClient, ImportedAs, MailAttachment, MailBody, Precheck, RetryPolicy,
        TokenProvider, client::UPLOAD_CHUNK_UNIT,
    },
    sync::mail_import::{ImportContext, Rendered, mail_origin, message_id, render},
};
use secrecy::SecretString;
use serde_json::{Value, json};

const MB: &str = "ops@contoso.com";
const FOLDER: &str = "DingTalk Mail";
const ROUTE: &str = "ops";
const FIXTURES: &[&str] = &[
    "plain.eml",
    "html_inline_image.eml",
    "gb18030.eml",
    "big5.eml",
    "broken_part.eml",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/mail/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn client(fake: &GraphFake) -> GraphClient {
    let cfg = fake.config();
    let auth = TokenProvider::new(
        reqwest::Client::new(),
        &fake.authority(),
        &cfg.tenant,
        &cfg.client_id,
        Credential::Secret(SecretString::from(cfg.client_secret.expect("secret"))),
    );
    GraphClient::with_policy(
        reqwest::Client::new(),
        &fake.graph_base(),
        Arc::new(auth),
        RetryPolicy {
            backoff_base: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
    )
}

/// Requests to Graph itself (mailbox resources and upload URLs), not to the token endpoint.
fn graph_requests(fake: &GraphFake) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1.0/users/") || r.path.starts_with("/upload/"))
        .collect()
}

/// Deterministic bytes that are not all alike, so a misplaced chunk shows.
fn pattern(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

/// A mail with an HTML body and files of the given sizes.
fn mail_with_files(id: &str, subject: &str, files: &[(&str, usize)]) -> Vec<u8> {
    let mut raw = format!(
        "From: =?UTF-8?B?{}?= <sender@example.cn>\r\nTo: {MB}\r\nSubject: {subject}\r\n\
         Date: Thu, 5 Mar 2026 09:00:00 +0800\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"files\"\r\n\r\n\
         --files\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>files attached</p>\r\n",
        STANDARD.encode("发件人".as_bytes())
    );
    for (i, (name, size)) in files.iter().enumerate() {
        let body = STANDARD.encode(pattern(*size, i as u8));
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        raw.push_str(&format!(
            "--files\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            lines.join("\r\n")
        ));
    }
    raw.push_str("--files--\r\n");
    raw.into_bytes()
}

fn origin_of(raw: &[u8], uid: u32) -> String {
    mail_origin(ROUTE, message_id(raw).as_deref(), "INBOX", 1, uid)
}

fn unread() -> ImportContext {
    ImportContext {
        is_read: false,
        internal_date: chrono::DateTime::parse_from_rfc3339("2026-03-05T01:00:07Z")
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc)),
    }
}

/// Name, content type, content id, inline, bytes: what must survive an import.
type FileKey = (String, String, Option<String>, bool, Vec<u8>);

fn file_keys(files: &[MailAttachment]) -> Vec<FileKey> {
    let mut keys: Vec<FileKey> = files
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                a.content_type.clone(),
                a.content_id.clone(),
                a.is_inline,
                a.content.to_vec(),
            )
        })
        .collect();
    keys.sort();
    keys
}

fn stored_message(fake: &GraphFake, id: &str) -> Value {
    fake.all_messages(MB)
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("message {id} is in the mailbox"))
}

fn stored_files(fake: &GraphFake, m: &Value) -> Vec<FileKey> {
    let mut keys: Vec<FileKey> = m["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let id = a["id"].as_str().expect("attachment id");
            (
                a["name"].as_str().unwrap_or_default().to_string(),
                a["contentType"].as_str().unwrap_or_default().to_string(),
                a["contentId"].as_str().map(str::to_string),
                a["isInline"].as_bool().unwrap_or(false),
                fake.attachment_bytes(MB, id).expect("attachment bytes"),
            )
        })
        .collect();
    keys.sort();
    keys
}

fn with_internet_id(fake: &GraphFake, imid: &str) -> usize {
    fake.all_messages(MB)
        .iter()
        .filter(|m| m["internetMessageId"] == imid)
        .count()
}

/// The item of `rendered` in the fake and its MIME read back through `$value` carry the
/// mail's content: headers, body, files (bytes, content ids), read flag, origin marker.
async fn assert_intact(
    fake: &GraphFake,
    graph: &GraphClient,
    id: &str,
    r: &Rendered,
    origin: &str,
) {
    let mail = &r.mail;
    let m = stored_message(fake, id);
    assert_eq!(m["isDraft"], false, "a received item, not a draft");
    assert_eq!(m["isRead"], mail.is_read);
    assert_eq!(m["subject"], mail.subject.as_str());
    assert_eq!(
        m["internetMessageId"].as_str(),
        mail.internet_message_id.as_deref()
    );
    assert_eq!(
        m["from"]["emailAddress"]["address"].as_str(),
        mail.from.as_ref().map(|f| f.address.as_str())
    );
    assert_eq!(
        m["from"]["emailAddress"]["name"].as_str(),
        mail.from.as_ref().and_then(|f| f.name.as_deref())
    );
    let to: Vec<&str> = m["toRecipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["emailAddress"]["address"].as_str())
        .collect();
    let want: Vec<&str> = mail.to.iter().map(|a| a.address.as_str()).collect();
    assert_eq!(to, want);
    if let Some(t) = mail.received_at {
        assert_eq!(
            m["receivedDateTime"],
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        );
    }
    let (kind, content) = match &mail.body {
        MailBody::Html(h) => ("html", h),
        MailBody::Text(t) => ("text", t),
    };
    assert_eq!(m["body"]["contentType"], kind);
    assert_eq!(m["body"]["content"], content.as_str());
    assert_eq!(stored_files(fake, &m), file_keys(&mail.attachments));
    assert_eq!(
        m["hasAttachments"].as_bool().unwrap_or(false),
        !mail.attachments.is_empty()
    );

    let state = graph.message_state(MB, id).await.expect("message state");
    assert_eq!(state.origin.as_deref(), Some(origin));
    assert!(!state.is_draft);

    // The way back: the item's MIME parses to the same mail.
    let mime = graph.message_mime(MB, id).await.expect("$value");
    let back = render(&mime, &ImportContext::default());
    assert!(back.problems.is_empty(), "{:?}", back.problems);
    assert_eq!(back.mail.subject, mail.subject);
    assert_eq!(back.mail.body, mail.body);
    assert_eq!(back.mail.from, mail.from);
    assert_eq!(back.mail.to, mail.to);
    assert_eq!(back.mail.internet_message_id, mail.internet_message_id);
    assert_eq!(
        file_keys(&back.mail.attachments),
        file_keys(&mail.attachments)
    );
}

#[tokio::test]
async fn every_kind_of_mail_lands_once_with_its_content_intact() {
    let fake = GraphFake::start_default();
    let graph = client(&fake);
    let folder = graph.mail_folder(MB, FOLDER).await.expect("folder");
    assert_eq!(fake.folder_id(MB, FOLDER).as_deref(), Some(folder.as_str()));

    let mut mails: Vec<(String, Vec<u8>)> = FIXTURES
        .iter()
        .map(|f| (f.to_string(), fixture(f)))
        .collect();
    mails.push((
        "files".into(),
        mail_with_files(
            "files-1@example.cn",
            "=?GB18030?B?tPPOxLz+uL28/g==?=",
            &[("small.bin", 100 * 1024), ("big.bin", 5 * 1024 * 1024)],
        ),
    ));
    for (uid, (name, raw)) in mails.iter().enumerate() {
        let rendered = render(raw, &unread());
        let origin = origin_of(raw, uid as u32 + 1);
        let imported = graph
            .import_mail(MB, &folder, &rendered.mail, &origin, Precheck::LookUp)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(imported.how, ImportedAs::Created, "{name}");
        assert_intact(&fake, &graph, &imported.id, &rendered, &origin).await;
        let imid = rendered.mail.internet_message_id.expect("Message-ID");
        assert_eq!(
            with_internet_id(&fake, &imid),
            1,
            "{name}: exactly one item"
        );
    }
    assert_eq!(fake.messages(MB, FOLDER).len(), mails.len());
    let files = render(&mails[5].1, &unread());
    assert_eq!(
        files.mail.subject, "大文件附件",
        "GB18030 subject of the generated mail"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn one_request_per_mail_plus_the_upload_sessions_of_large_files() {
    let fake = GraphFake::start_default();
    let graph = client(&fake);
    let folder = graph.mail_folder(MB, FOLDER).await.expect("folder");
    let raws: Vec<Vec<u8>> = FIXTURES.iter().map(|f| fixture(f)).collect();
    let rendered: Vec<Rendered> = raws.iter().map(|r| render(r, &unread())).collect();
    let ids: Vec<String> = rendered
        .iter()
        .filter_map(|r| r.mail.internet_message_id.clone())
        .collect();

    // A batch of new mails: one lookup for all of them, then one create each.
    let before = graph_requests(&fake).len();
    let mut found = graph
        .find_messages_by_internet_ids(MB, &ids.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .expect("lookup");
    assert!(found.is_empty());
    assert_eq!(
        graph_requests(&fake).len() - before,
        1,
        "one lookup for the batch"
    );
    for (i, r) in rendered.iter().enumerate() {
        let imid = r.mail.internet_message_id.clone().expect("Message-ID");
        let before = graph_requests(&fake).len();
        let precheck = Precheck::Known(found.remove(&imid).unwrap_or_default());
        graph
            .import_mail(
                MB,
                &folder,
                &r.mail,
                &origin_of(&raws[i], i as u32),
                precheck,
            )
            .await
            .expect("import");
        let sent: Vec<Recorded> = graph_requests(&fake).split_off(before);
        assert_eq!(
            sent.len(),
            1,
            "{}: {:?}",
            FIXTURES[i],
            sent.iter().map(|r| &r.path).collect::<Vec<_>>()
        );
        assert_eq!(sent[0].method, "POST");
        assert!(
            sent[0]
                .path
                .ends_with(&format!("/mailFolders/{folder}/messages"))
        );
    }

    // A 5 MB file: the create, then its upload session and one PUT per chunk.
    let size = 5 * 1024 * 1024;
    let raw = mail_with_files("large-1@example.cn", "large", &[("big.bin", size)]);
    let r = render(&raw, &unread());
    let before = graph_requests(&fake).len();
    let imported = graph
        .import_mail(
            MB,
            &folder,
            &r.mail,
            &origin_of(&raw, 99),
            Precheck::Known(vec![]),
        )
        .await
        .expect("import");
    let sent: Vec<Recorded> = graph_requests(&fake).split_off(before);
    let chunk = RetryPolicy::default().upload_chunk;
    assert_eq!(chunk % UPLOAD_CHUNK_UNIT, 0);
    let puts = size.div_ceil(chunk);
    let shape: Vec<(String, bool)> = sent
        .iter()
        .map(|r| (r.method.clone(), r.path.ends_with("createUploadSession")))
        .collect();
    let mut want = vec![("POST".to_string(), false), ("POST".to_string(), true)];
    want.extend((0..puts).map(|_| ("PUT".to_string(), false)));
    assert_eq!(shape, want, "create, session, {puts} chunks");
    assert!(sent.iter().all(|r| r.body.len() <= 4_000_000));
    let m = stored_message(&fake, &imported.id);
    assert_eq!(stored_files(&fake, &m), file_keys(&r.mail.attachments));
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_second_import_and_a_mail_already_in_outlook_are_mapped_not_duplicated() {
    let fake = GraphFake::start_default();
    let graph = client(&fake);
    let folder = graph.mail_folder(MB, FOLDER).await.expect("folder");
    let raw = fixture("html_inline_image.eml");
    let r = render(&raw, &unread());
    let origin = origin_of(&raw, 7);
    let first = graph
        .import_mail(MB, &folder, &r.mail, &origin, Precheck::LookUp)
        .await
        .expect("first");
    assert_eq!(first.how, ImportedAs::Created);
    // The same mail again (a retried job, a new UIDVALIDITY): found by its Message-ID.
    let again = graph
        .import_mail(
            MB,
            &folder,
            &r.mail,
            &origin_of(&raw, 1234),
            Precheck::LookUp,
        )
        .await
        .expect("again");
    assert_eq!(again.id, first.id);
    assert_eq!(again.how, ImportedAs::Completed);
    let imid = r.mail.internet_message_id.clone().expect("Message-ID");
    assert_eq!(with_internet_id(&fake, &imid), 1);

    // Both mailboxes were recipients: Outlook already has its own copy in the Inbox.
    let plain = fixture("plain.eml");
    let p = render(&plain, &unread());
    let imid = p.mail.internet_message_id.clone().expect("Message-ID");
    let outlook_copy = fake.put_message(
        MB,
        "inbox",
        json!({"subject": p.mail.subject, "internetMessageId": imid}),
    );
    let mapped = graph
        .import_mail(
            MB,
            &folder,
            &p.mail,
            &origin_of(&plain, 8),
            Precheck::LookUp,
        )
        .await
        .expect("mapped");
    assert_eq!(mapped.id, outlook_copy);
    assert_eq!(mapped.how, ImportedAs::Matched);
    assert_eq!(with_internet_id(&fake, &imid), 1);
    assert_eq!(fake.messages(MB, FOLDER).len(), 1, "nothing written for it");

    // A quote in a Message-ID is doubled in the filter, and still found.
    let quoted = "<o'brien.1@example.ie>";
    let id = fake.put_message(
        MB,
        "inbox",
        json!({"subject": "q", "internetMessageId": quoted}),
    );
    let found = graph
        .find_messages_by_internet_id(MB, quoted)
        .await
        .expect("lookup");
    assert_eq!(
        found.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn ambiguous_answers_leave_exactly_one_item() {
    let fake = GraphFake::start_default();
    let graph = client(&fake);
    let folder = graph.mail_folder(MB, FOLDER).await.expect("folder");
    let failures = [
        Failure::ApplyThenStatus { status: 504 },
        Failure::ApplyThenStatus { status: 502 },
        Failure::ApplyThenDrop,
    ];
    for (i, failure) in failures.into_iter().enumerate() {
        let raw = mail_with_files(
            &format!("doubt-{i}@example.cn"),
            &format!("doubt {i}"),
            &[("a.txt", 10), ("large.bin", 4 * 1024 * 1024)],
        );
        let r = render(&raw, &unread());
        // Only the create (the POST into the folder) is answered ambiguously.
        fake.fail_next(Some("POST"), "/mailFolders/", 1, failure.clone());
        let before = graph_requests(&fake).len();
        let imported = graph
            .import_mail(
                MB,
                &folder,
                &r.mail,
                &origin_of(&raw, i as u32),
                Precheck::Known(vec![]),
            )
            .await
            .unwrap_or_else(|e| panic!("{failure:?}: {e}"));
        assert_eq!(imported.how, ImportedAs::Created);
        // The create was answered ambiguously, then looked up by the origin marker.
        let sent = graph_requests(&fake).split_off(before);
        assert_eq!(sent[0].method, "POST", "{failure:?}");
        let filter = url::form_urlencoded::parse(sent[1].query.as_bytes())
            .find(|(k, _)| k == "$filter")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        assert!(
            sent[1].method == "GET" && filter.starts_with("singleValueExtendedProperties/Any("),
            "{failure:?}: {} {filter}",
            sent[1].method
        );
        let imid = r.mail.internet_message_id.clone().expect("Message-ID");
        assert_eq!(with_internet_id(&fake, &imid), 1, "{failure:?}");
        let m = stored_message(&fake, &imported.id);
        assert_eq!(
            stored_files(&fake, &m),
            file_keys(&r.mail.attachments),
            "{failure:?}"
        );
    }

    // The upload session fails after the create: the job gives up; its retry finds the
    // item by its Message-ID and adds only the missing file.
    let raw = mail_with_files(
        "partial@example.cn",
        "partial",
        &[("a.txt", 10), ("large.bin", 4 * 1024 * 1024)],
    );
    let r = render(&raw, &unread());
    let origin = origin_of(&raw, 50);
    fake.fail_next(
        Some("POST"),
        "createUploadSession",
        1,
        Failure::Status {
            status: 500,
            code: "generalException".into(),
            retry_after: None,
        },
    );
    let err = graph
        .import_mail(MB, &folder, &r.mail, &origin, Precheck::LookUp)
        .await
        .expect_err("the session fails");
    assert_eq!(err.status(), Some(500));
    let again = graph
        .import_mail(MB, &folder, &r.mail, &origin, Precheck::LookUp)
        .await
        .expect("retry");
    assert_eq!(again.how, ImportedAs::Completed);
    assert_eq!(with_internet_id(&fake, "<partial@example.cn>"), 1);
    let m = stored_message(&fake, &again.id);
    assert_eq!(stored_files(&fake, &m), file_keys(&r.mail.attachments));
    // A third run changes nothing.
    let before = fake.attachment_count(MB);
    graph
        .import_mail(MB, &folder, &r.mail, &origin, Precheck::LookUp)
        .await
        .expect("third");
    assert_eq!(fake.attachment_count(MB), before);
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_mail_without_message_id_is_found_again_by_its_origin_marker() {
    let fake = GraphFake::start_default();
    let graph = client(&fake);
    let folder = graph.mail_folder(MB, FOLDER).await.expect("folder");
    let raw = b"From: a@example.cn\r\nTo: ops@contoso.com\r\nSubject: no id\r\n\r\nbody\r\n";
    let r = render(raw, &unread());
    assert_eq!(r.mail.internet_message_id, None);
    let origin = origin_of(raw, 77);
    assert_eq!(origin, "dingtalk-mail:ops:uid:1:77:INBOX");
    fake.fail_next(
        Some("POST"),
        "/mailFolders/",
        1,
        Failure::ApplyThenStatus { status: 504 },
    );
    let first = graph
        .import_mail(MB, &folder, &r.mail, &origin, Precheck::LookUp)
        .await
        .expect("first");
    let again = graph
        .import_mail(MB, &folder, &r.mail, &origin, Precheck::LookUp)
        .await
        .expect("again");
    assert_eq!(again.id, first.id);
    assert_eq!(fake.messages(MB, FOLDER).len(), 1);
    fake.assert_no_violations();
}

/// A webhook receiver that answers Graph's validation handshake and records the rest.
fn receiver() -> FakeServer {
    FakeServer::start(|r| {
        let token = url::form_urlencoded::parse(r.query.as_bytes())
            .find(|(k, _)| k == "validationToken")
            .map(|(_, v)| v.into_owned());
        match token {
            Some(t) => FakeReply {
                body: t,
                ..FakeReply::status(200)
            }
            .header("content-type", "text/plain"),
            None => FakeReply::status(202),
        }
    })
}

#[tokio::test]
async fn folders_read_flags_and_mime_for_the_way_back() {
    let fake = GraphFake::start(GraphFakeConfig::default().with_change_notifications());
    let graph = client(&fake);
    // Well-known names are Outlook's own folders, whatever their display name.
    let inbox = graph.mail_folder(MB, "inbox").await.expect("inbox");
    assert_eq!(fake.folder_id(MB, "inbox").as_deref(), Some(inbox.as_str()));
    assert_eq!(graph.mail_folder(MB, "Inbox").await.expect("cached"), inbox);
    let folder = graph.mail_folder(MB, FOLDER).await.expect("folder");
    assert_eq!(graph.mail_folder(MB, FOLDER).await.expect("again"), folder);
    let names: Vec<String> = fake
        .folders(MB)
        .iter()
        .filter_map(|f| f["displayName"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names.iter().filter(|n| n.as_str() == FOLDER).count(), 1);
    assert!(
        !names.iter().any(|n| n == "inbox"),
        "no folder named `inbox`"
    );

    // Read in DingTalk → created read; unread → created unread; both non-drafts.
    let raw = fixture("gb18030.eml");
    for is_read in [true, false] {
        let r = render(
            &raw,
            &ImportContext {
                is_read,
                ..unread()
            },
        );
        let origin = format!("{}:{is_read}", origin_of(&raw, 1));
        let imported = graph
            .import_mail(MB, &inbox, &r.mail, &origin, Precheck::Known(vec![]))
            .await
            .expect("import");
        let m = stored_message(&fake, &imported.id);
        assert_eq!(
            (m["isRead"].as_bool(), m["isDraft"].as_bool()),
            (Some(is_read), Some(false))
        );
    }

    // Reading in DingTalk marks the Outlook item read, and Graph tells the subscription.
    let hook = receiver();
    let sub = graph
        .create_subscription(
            MB,
            &json!({
                "changeType": "created,updated",
                "notificationUrl": hook.url("/notify"),
                "resource": format!("users/{MB}/mailFolders('{folder}')/messages"),
                "expirationDateTime": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "clientState": "s3cret",
            }),
        )
        .await
        .expect("subscription");
    let r = render(&fixture("plain.eml"), &unread());
    let imported = graph
        .import_mail(
            MB,
            &folder,
            &r.mail,
            &origin_of(&raw, 2),
            Precheck::Known(vec![]),
        )
        .await
        .expect("import");
    graph
        .set_read(MB, &imported.id, true)
        .await
        .expect("set read");
    assert_eq!(stored_message(&fake, &imported.id)["isRead"], true);
    let notes = eventually(Duration::from_secs(5), || async {
        let changes: Vec<(String, String)> = hook
            .requests()
            .iter()
            .filter(|r| r.query.is_empty())
            .flat_map(|r| r.json()["value"].as_array().cloned().unwrap_or_default())
            .map(|n| {
                assert_eq!(n["subscriptionId"], sub["id"]);
                assert_eq!(n["clientState"], "s3cret");
                (
                    n["changeType"].as_str().unwrap_or_default().to_string(),
                    n["resourceData"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        (changes.len() >= 2).then_some(changes)
    })
    .await
    .expect("created and updated notifications");
    // Graph promises no order between notifications (the fake posts them concurrently).
    let mut notes = notes;
    notes.sort();
    assert_eq!(
        notes,
        [
            ("created".to_string(), imported.id.clone()),
            ("updated".to_string(), imported.id.clone())
        ]
    );
    // Reading it in Outlook: the user's change is notified too.
    fake.update_message(MB, &imported.id, json!({"isRead": false}));
    let state = graph.message_state(MB, &imported.id).await.expect("state");
    assert!(!state.is_read);
    assert!(
        eventually(Duration::from_secs(5), || async {
            (hook
                .requests()
                .iter()
                .filter(|r| r.query.is_empty())
                .count()
                >= 3)
                .then_some(())
        })
        .await
        .is_some(),
        "updated notification for the user's change"
    );

    // Mail that arrived in Outlook: its MIME exactly as delivered, and what the way back
    // needs to decide (no origin marker: not the bridge's own).
    let mime = fixture("big5.eml");
    let arrived = fake.put_mime_message(
        MB,
        "inbox",
        json!({"subject": "關於報關的通知", "internetMessageId": "<big5-1@example.tw>",
               "receivedDateTime": "2026-03-04T03:00:01Z"}),
        &mime,
    );
    assert_eq!(
        graph.message_mime(MB, &arrived).await.expect("$value"),
        mime
    );
    let state = graph.message_state(MB, &arrived).await.expect("state");
    assert_eq!(state.origin, None);
    assert_eq!(
        state.internet_message_id.as_deref(),
        Some("<big5-1@example.tw>")
    );
    assert_eq!(
        state.received_at.map(|t| t.to_rfc3339()),
        Some("2026-03-04T03:00:01+00:00".into())
    );
    assert!(!state.is_read && !state.is_draft);
    fake.assert_no_violations();
}

#[test]
fn fixture_ids_are_distinct() {
    let ids: HashMap<String, &str> = FIXTURES
        .iter()
        .filter_map(|f| message_id(&fixture(f)).map(|id| (id, *f)))
        .collect();
    assert_eq!(ids.len(), FIXTURES.len());
}
