//! Outlook → DingTalk Mail through the running binary: a real Dovecot, the Graph fake
//! (message delta, `$value`, subscriptions) and `dingbridge serve` on Redis. New Outlook
//! mail lands in DingTalk Mail once, MIME intact, with its read flag and receipt time,
//! and never comes back; a `both` round trip leaves one copy per side; `start = "new"`
//! leaves older mail alone; a copy already in DingTalk Mail is mapped, not appended again;
//! a notification ends the wait at once; deletes cross only with `allow_deletes`.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::{
    RedisServer, TestApp,
    dovecot::{Dovecot, sample_mail},
    env::{Env, MAILBOX},
    eventually, free_port,
    graph_fake::GraphFake,
    inspect::audit,
};
use dingbridge::mail::{FetchedMessage, MailboxName};
use serde_json::{Value, json};

const FOLDER: &str = "DingTalk Mail";

/// A mail as Outlook would hand it out with `$value`.
fn outlook_mime(imid: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Client <client@partner.example>\r\nTo: ops@contoso.com\r\nSubject: {subject}\r\nDate: Tue, 6 Jan 2026 09:00:00 +0000\r\nMessage-ID: {imid}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nUrgent change from the client, 紧急变更.\r\n"
    )
    .into_bytes()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Delivers a mail into Outlook folder `folder` (no notification); answers its id.
fn deliver(
    fake: &GraphFake,
    folder: &str,
    imid: &str,
    read: bool,
    received: DateTime<Utc>,
) -> (String, Vec<u8>) {
    let raw = outlook_mime(imid, &format!("Change {imid}"));
    let id = fake.put_mime_message(
        MAILBOX,
        folder,
        json!({
            "subject": format!("Change {imid}"),
            "internetMessageId": imid,
            "isRead": read,
            "receivedDateTime": iso(received),
            "from": {"emailAddress": {"address": "client@partner.example"}},
        }),
        &raw,
    );
    (id, raw)
}

/// The INBOX messages with this `Message-ID`.
async fn dingtalk(dovecot: &Dovecot, imid: &str) -> Vec<FetchedMessage> {
    let mut c = dovecot.client().await;
    c.examine(&MailboxName::from_display("INBOX"))
        .await
        .expect("EXAMINE");
    let uids = c.search_message_id(imid).await.expect("SEARCH");
    let found = c.fetch(&uids, 0).await.expect("FETCH");
    c.logout().await;
    found
}

/// Outlook items of folder `folder` with this `internetMessageId`.
fn outlook(fake: &GraphFake, folder: &str, imid: &str) -> usize {
    fake.messages(MAILBOX, folder)
        .iter()
        .filter(|m| m["internetMessageId"] == imid)
        .count()
}

async fn arrives(dovecot: &Dovecot, imid: &str, within: Duration) -> bool {
    eventually(within, || async {
        (!dingtalk(dovecot, imid).await.is_empty()).then_some(())
    })
    .await
    .is_some()
}

fn entries(redis: &RedisServer, action: &str) -> Vec<Value> {
    audit(redis)
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

/// Starts the app and waits for the route's first Outlook delta round: what arrives
/// in Outlook from then on is new.
async fn start(redis: &RedisServer, fake: &GraphFake, dovecot: &Dovecot, extra: &str) -> TestApp {
    start_with(
        redis,
        fake,
        Env::new().mailbox_route(dovecot, "ops-mail", extra),
    )
    .await
}

async fn start_with(redis: &RedisServer, fake: &GraphFake, env: Env) -> TestApp {
    let app = env.redis(redis).graph(fake).spawn();
    let first_round = eventually(Duration::from_secs(15), || async {
        (!fake.requests_to("/messages/delta").is_empty()).then_some(())
    })
    .await;
    assert!(first_round.is_some(), "logs:\n{}", app.logs().join("\n"));
    app
}

#[tokio::test]
async fn a_both_route_round_trip_leaves_one_copy_per_side_and_outlook_mail_arrives_intact() {
    let dovecot = Dovecot::start();
    let fake = GraphFake::start_default();
    let redis = RedisServer::start();
    let app = start(
        &redis,
        &fake,
        &dovecot,
        "direction = \"both\"\npoll_interval_secs = 1",
    )
    .await;

    // Started in Outlook (read), and in DingTalk Mail.
    let from_outlook = "<urgent.1@partner.example>";
    let received = Utc::now();
    let (graph_id, raw) = deliver(&fake, FOLDER, from_outlook, true, received);
    dovecot
        .append("INBOX", &sample_mail("trip", 1, 300), &[])
        .await;
    let from_dingtalk = "<1.trip@dingbridge.test>";

    assert!(
        arrives(&dovecot, from_outlook, Duration::from_secs(15)).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            (outlook(&fake, FOLDER, from_dingtalk) == 1).then_some(())
        })
        .await
        .is_some(),
        "logs:\n{}",
        app.logs().join("\n")
    );
    // Several cycles later: one copy of each on each side.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let copies = dingtalk(&dovecot, from_outlook).await;
    assert_eq!(copies.len(), 1, "one copy in DingTalk Mail");
    assert_eq!(dingtalk(&dovecot, from_dingtalk).await.len(), 1);
    assert_eq!(outlook(&fake, FOLDER, from_outlook), 1, "never came back");
    assert_eq!(outlook(&fake, FOLDER, from_dingtalk), 1);

    let m = &copies[0];
    assert_eq!(m.raw, raw, "MIME as Outlook gave it");
    assert!(m.meta.seen(), "read in Outlook: \\Seen");
    assert_eq!(
        m.meta.internal_date.map(|d| d.timestamp()),
        Some(received.timestamp()),
        "internal date = receivedDateTime"
    );
    let appended = entries(&redis, "mailbox.appended");
    assert_eq!(appended.len(), 1, "{appended:?}");
    assert_eq!(appended[0]["detail"]["graph_id"], graph_id.as_str());
    assert_eq!(appended[0]["detail"]["uid"], m.meta.uid);
    assert_eq!(appended[0]["detail"]["how"], "appended");
    assert_eq!(
        app.metric(
            "mailbox_messages_synced_total{route=\"ops-mail\",direction=\"to_dingtalk\",result=\"appended\"}"
        )
        .await,
        Some(1.0)
    );
    // The MIME was read once; the bridge's own import was never read back.
    assert_eq!(fake.requests_to("/$value").len(), 1);
    fake.assert_no_violations();
}

#[tokio::test]
async fn start_new_relays_none_of_the_outlook_mail_already_there() {
    let dovecot = Dovecot::start();
    let fake = GraphFake::start_default();
    let redis = RedisServer::start();
    let old = "<old.1@partner.example>";
    let recent = "<old.2@partner.example>";
    deliver(
        &fake,
        "inbox",
        old,
        false,
        Utc::now() - chrono::Duration::hours(3),
    );
    deliver(
        &fake,
        "inbox",
        recent,
        false,
        Utc::now() - chrono::Duration::seconds(2),
    );
    let app = start(
        &redis,
        &fake,
        &dovecot,
        "direction = \"both\"\npoll_interval_secs = 1\nfolders = [{ dingtalk = \"INBOX\", outlook = \"inbox\" }]",
    )
    .await;
    let new = "<new.1@partner.example>";
    deliver(&fake, "inbox", new, false, Utc::now());
    assert!(
        arrives(&dovecot, new, Duration::from_secs(15)).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(dingtalk(&dovecot, old).await.is_empty());
    assert!(dingtalk(&dovecot, recent).await.is_empty());
    assert_eq!(entries(&redis, "mailbox.appended").len(), 1);
    // The first round asked Graph only for mail received from the start on.
    let first = &fake.requests_to("/messages/delta")[0];
    assert!(
        first.query.contains("receivedDateTime"),
        "first round filtered: {}",
        first.query
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_copy_already_in_dingtalk_mail_is_mapped_not_appended_again_and_a_to_dingtalk_route_imports_nothing()
 {
    let dovecot = Dovecot::start();
    let fake = GraphFake::start_default();
    let redis = RedisServer::start();
    let app = start(
        &redis,
        &fake,
        &dovecot,
        "direction = \"to_dingtalk\"\npoll_interval_secs = 1\nfolders = [{ dingtalk = \"INBOX\", outlook = \"inbox\" }]",
    )
    .await;
    // As if an APPEND had happened and the process died before it stored the pair.
    let imid = "<crash.1@partner.example>";
    dovecot
        .append("INBOX", &outlook_mime(imid, "Change"), &[])
        .await;
    // Mail only in DingTalk Mail: a to_dingtalk route leaves it there.
    dovecot
        .append("INBOX", &sample_mail("local", 1, 200), &[])
        .await;
    let (graph_id, _) = deliver(&fake, "inbox", imid, false, Utc::now());
    let mapped = eventually(Duration::from_secs(15), || async {
        let e = entries(&redis, "mailbox.appended");
        (!e.is_empty()).then_some(e)
    })
    .await
    .unwrap_or_else(|| panic!("logs:\n{}", app.logs().join("\n")));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(dingtalk(&dovecot, imid).await.len(), 1, "no second copy");
    assert_eq!(mapped[0]["detail"]["how"], "matched");
    assert_eq!(mapped[0]["detail"]["graph_id"], graph_id.as_str());
    assert_eq!(entries(&redis, "mailbox.appended").len(), 1);
    assert!(
        fake.requests_to("/$value").is_empty(),
        "nothing to download"
    );
    assert_eq!(outlook(&fake, "inbox", "<1.local@dingbridge.test>"), 0);
    assert!(entries(&redis, "mailbox.imported").is_empty());
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_graph_notification_ends_the_wait_at_once() {
    let dovecot = Dovecot::start();
    let fake = GraphFake::start_default();
    let redis = RedisServer::start();
    let port = free_port();
    // Polls only every 10 minutes: what arrives sooner was woken.
    let toml = format!(
        "public_url = \"http://127.0.0.1:{port}\"\n[graph]\nallow_http_public_url = true\n{}",
        dovecot.route_toml("ops-mail", "direction = \"both\"\npoll_interval_secs = 600")
    );
    let app = start_with(
        &redis,
        &fake,
        Env::new()
            .config_toml(&toml)
            .listen(&format!("127.0.0.1:{port}")),
    )
    .await;
    let sub = eventually(Duration::from_secs(15), || async {
        fake.subscription_for(MAILBOX, "messages")
    })
    .await
    .unwrap_or_else(|| panic!("no subscription; logs:\n{}", app.logs().join("\n")));
    let folder_id = fake.folder_id(MAILBOX, FOLDER).expect("folder");
    assert!(
        sub["resource"]
            .as_str()
            .is_some_and(|r| r.contains(&folder_id)),
        "watches the route's Outlook folder: {sub}"
    );
    // Let the loop settle into its wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let imid = "<woken.1@partner.example>";
    let (id, _) = deliver(&fake, FOLDER, imid, false, Utc::now());
    let sent = std::time::Instant::now();
    let status = fake
        .notify(sub["id"].as_str().expect("id"), "created", &id)
        .await;
    assert_eq!(status, 202);
    assert!(
        arrives(&dovecot, imid, Duration::from_secs(10)).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    assert!(sent.elapsed() < Duration::from_secs(10));
    fake.assert_no_violations();
}

async fn delete_case(allow_deletes: bool) {
    let dovecot = Dovecot::start();
    let fake = GraphFake::start_default();
    let redis = RedisServer::start();
    let app = start(
        &redis,
        &fake,
        &dovecot,
        &format!("direction = \"both\"\npoll_interval_secs = 1\nallow_deletes = {allow_deletes}"),
    )
    .await;
    let (gone, kept) = ("<del.1@partner.example>", "<del.2@partner.example>");
    let (gone_id, _) = deliver(&fake, FOLDER, gone, false, Utc::now());
    deliver(&fake, FOLDER, kept, false, Utc::now());
    for imid in [gone, kept] {
        assert!(
            arrives(&dovecot, imid, Duration::from_secs(15)).await,
            "logs:\n{}",
            app.logs().join("\n")
        );
    }
    let uid = dingtalk(&dovecot, gone).await[0].meta.uid;
    fake.delete_message(MAILBOX, &gone_id);
    if allow_deletes {
        assert!(
            eventually(Duration::from_secs(10), || async {
                dingtalk(&dovecot, gone).await.is_empty().then_some(())
            })
            .await
            .is_some(),
            "logs:\n{}",
            app.logs().join("\n")
        );
        let deleted = entries(&redis, "mailbox.deleted");
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        assert_eq!(deleted[0]["detail"]["uid"], uid);
        assert_eq!(deleted[0]["detail"]["graph_id"], gone_id.as_str());
        assert_eq!(deleted[0]["detail"]["expunged"], true);
    } else {
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(dingtalk(&dovecot, gone).await.len(), 1, "left alone");
        assert!(entries(&redis, "mailbox.deleted").is_empty());
    }
    // The other message is untouched either way, and nothing came back to Outlook.
    let other = dingtalk(&dovecot, kept).await;
    assert_eq!(other.len(), 1);
    assert!(!other[0].meta.flags.iter().any(|f| f == "\\Deleted"));
    assert_eq!(outlook(&fake, FOLDER, kept), 1);
    fake.assert_no_violations();
}

#[tokio::test]
async fn without_allow_deletes_an_outlook_delete_changes_nothing_in_dingtalk_mail() {
    delete_case(false).await;
}

#[tokio::test]
async fn with_allow_deletes_an_outlook_delete_removes_exactly_that_message_audited() {
    delete_case(true).await;
}
