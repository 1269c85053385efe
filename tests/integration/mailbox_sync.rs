//! DingTalk Mail → Outlook through the running binary: a real Dovecot, the Graph fake
//! and `dingbridge serve` with a `[[mailbox_routes]]` entry. Mail seeded before the start
//! (`days:30`) lands once with its content, nothing is marked read in DingTalk Mail, new
//! mail arrives through IDLE, a dropped connection or a `UIDVALIDITY` reset doubles
//! nothing, two instances share one IMAP connection and the survivor takes over, and a
//! refused login shows in `/readyz`.

use crate::common;

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{
    RedisServer,
    dovecot::{Dovecot, Seed, USER, sample_mail},
    env::{Env, MAILBOX},
    eventually,
    graph_fake::GraphFake,
};
use dingbridge::{
    graph::MailBody,
    mail::MailboxName,
    sync::mail_import::{ImportContext, render},
};
use serde_json::Value;

const FOLDER: &str = "DingTalk Mail";
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

/// A mail with an HTML body and one attached file.
fn mail_with_file(id: &str) -> Vec<u8> {
    let file = STANDARD.encode((0..30_000).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let lines: Vec<&str> = file
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "From: Forwarder <fwd@example.cn>\r\nTo: {USER}\r\nSubject: Invoice attached\r\n\
         Date: Thu, 5 Mar 2026 09:00:00 +0800\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"files\"\r\n\r\n\
         --files\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>invoice attached</p>\r\n\
         --files\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--files--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

fn minutes_ago(n: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(60 * n)
}

/// The Outlook items of the route's folder, by `internetMessageId`.
fn outlook_items(fake: &GraphFake) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for m in fake.messages(MAILBOX, FOLDER) {
        let id = m["internetMessageId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.entry(id).or_default().push(m);
    }
    out
}

/// Items with this `internetMessageId` anywhere in the mailbox.
fn copies(fake: &GraphFake, imid: &str) -> usize {
    fake.all_messages(MAILBOX)
        .iter()
        .filter(|m| m["internetMessageId"] == imid)
        .count()
}

async fn wait_for_items(fake: &GraphFake, n: usize, within: Duration) -> bool {
    eventually(within, || async {
        (fake.messages(MAILBOX, FOLDER).len() >= n).then_some(())
    })
    .await
    .is_some()
}

/// Every mail of `raws` is in Outlook exactly once.
fn assert_each_once(fake: &GraphFake, raws: &[Vec<u8>]) {
    let items = fake.all_messages(MAILBOX);
    for raw in raws {
        let imid = render(raw, &ImportContext::default())
            .mail
            .internet_message_id
            .expect("Message-ID");
        let n = items
            .iter()
            .filter(|m| m["internetMessageId"] == imid.as_str())
            .count();
        assert_eq!(n, 1, "{imid}: {n} copies");
    }
}

/// Successful IMAP logins Dovecot logged for [`USER`].
fn logins(dovecot: &Dovecot) -> usize {
    dovecot
        .log()
        .lines()
        .filter(|l| l.contains("Login: user=<ops@corp.example>"))
        .count()
}

/// Reads `/readyz`.
async fn readyz(app: &common::TestApp) -> Value {
    app.http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn mail_of_the_last_30_days_lands_once_intact_unread_stays_unread_and_new_mail_follows() {
    let mut raws: Vec<Vec<u8>> = FIXTURES.iter().map(|f| fixture(f)).collect();
    raws.push(mail_with_file("invoice-1@example.cn"));
    for n in 0..24 {
        raws.push(sample_mail("seed", n, 300 + n * 40));
    }
    let old = sample_mail("old", 1, 200);
    let dovecot = Dovecot::start_with(|d| {
        // One mail from before the start window stays out.
        d.seed(
            USER,
            None,
            &[Seed {
                raw: old.clone(),
                flags: "",
                received: SystemTime::now() - Duration::from_secs(40 * 86_400),
            }],
        );
        let seeds: Vec<Seed> = raws
            .iter()
            .enumerate()
            .map(|(i, raw)| Seed {
                raw: raw.clone(),
                // Every third one was read in DingTalk Mail.
                flags: if i % 3 == 0 { "S" } else { "" },
                received: minutes_ago(60 - i as u64),
            })
            .collect();
        d.seed(USER, None, &seeds);
    });
    let fake = GraphFake::start_default();
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(&dovecot, "ops-mail", "start = \"days:30\"")
        .spawn();

    assert!(
        wait_for_items(&fake, raws.len(), Duration::from_secs(30)).await,
        "{} of {} arrived; logs:\n{}",
        fake.messages(MAILBOX, FOLDER).len(),
        raws.len(),
        app.logs().join("\n")
    );
    // Give a doubled import the time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let items = outlook_items(&fake);
    assert_eq!(items.values().map(Vec::len).sum::<usize>(), raws.len());
    assert_each_once(&fake, &raws);
    let old_id = render(&old, &ImportContext::default())
        .mail
        .internet_message_id
        .expect("id");
    assert_eq!(copies(&fake, &old_id), 0, "older than days:30");
    for (i, raw) in raws.iter().enumerate() {
        let want = render(raw, &ImportContext::default()).mail;
        let imid = want.internet_message_id.clone().expect("Message-ID");
        let m = &items[&imid][0];
        assert_eq!(m["subject"], want.subject.as_str(), "{imid}");
        assert_eq!(
            m["from"]["emailAddress"]["address"].as_str(),
            want.from.as_ref().map(|f| f.address.as_str()),
            "{imid}"
        );
        let body = match &want.body {
            MailBody::Html(h) | MailBody::Text(h) => h,
        };
        assert_eq!(m["body"]["content"], body.as_str(), "{imid}");
        assert_eq!(m["isDraft"], false, "{imid}");
        assert_eq!(m["isRead"], i % 3 == 0, "{imid}: read as in DingTalk Mail");
    }
    let subjects: Vec<&str> = items
        .values()
        .filter_map(|v| v[0]["subject"].as_str())
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains('关')) || subjects.iter().any(|s| !s.is_ascii()),
        "non-ASCII subjects kept: {subjects:?}"
    );

    // Nothing was marked read by the sync.
    let mut c = dovecot.client().await;
    c.examine(&MailboxName::from_display("INBOX"))
        .await
        .expect("EXAMINE");
    let metas = c.fetch_meta_all().await.expect("meta");
    assert_eq!(metas.len(), raws.len() + 1);
    let seen = metas.iter().filter(|m| m.seen()).count();
    assert_eq!(seen, raws.len().div_ceil(3), "only those seeded read");
    c.logout().await;

    // New mail arrives within seconds (IDLE).
    let fresh = sample_mail("fresh", 1, 500);
    let started = std::time::Instant::now();
    dovecot.append("INBOX", &fresh, &[]).await;
    assert!(
        wait_for_items(&fake, raws.len() + 1, Duration::from_secs(5)).await,
        "the new mail did not arrive; logs:\n{}",
        app.logs().join("\n")
    );
    eprintln!("new mail took {:?}", started.elapsed());
    assert_eq!(copies(&fake, "<1.fresh@dingbridge.test>"), 1);
    let idle = app
        .metric("mailbox_idle_connected{route=\"ops-mail\"}")
        .await;
    assert_eq!(idle, Some(1.0), "IDLE gauge");
    let synced = app
        .metric(
            "mailbox_messages_synced_total{route=\"ops-mail\",direction=\"to_outlook\",result=\"created\"}",
        )
        .await;
    assert_eq!(synced, Some((raws.len() + 1) as f64));
    let ready = readyz(&app).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["mailbox_routes"]["ops-mail"]["ok"], true);
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_dropped_connection_or_a_restarted_server_loses_and_doubles_nothing() {
    let raws: Vec<Vec<u8>> = (0..40).map(|n| sample_mail("drop", n, 400)).collect();
    let mut dovecot = Dovecot::start_with(|d| {
        let seeds: Vec<Seed> = raws
            .iter()
            .enumerate()
            .map(|(i, raw)| Seed {
                raw: raw.clone(),
                flags: "",
                received: minutes_ago(100 - i as u64),
            })
            .collect();
        d.seed(USER, None, &seeds);
    });
    let fake = GraphFake::start_default();
    // Slow enough that the drops land mid-sync.
    fake.set_latency(Duration::from_millis(60));
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(&dovecot, "ops-mail", "start = \"days:1\"")
        .spawn();
    assert!(wait_for_items(&fake, 8, Duration::from_secs(20)).await);
    dovecot.kick(USER);
    assert!(wait_for_items(&fake, 20, Duration::from_secs(20)).await);
    dovecot.restart();
    assert!(
        wait_for_items(&fake, raws.len(), Duration::from_secs(30)).await,
        "{} arrived; logs:\n{}",
        fake.messages(MAILBOX, FOLDER).len(),
        app.logs().join("\n")
    );
    fake.set_latency(Duration::ZERO);
    // New mail after the restart still comes.
    let fresh = sample_mail("drop-fresh", 1, 300);
    dovecot.append("INBOX", &fresh, &[]).await;
    assert!(wait_for_items(&fake, raws.len() + 1, Duration::from_secs(15)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), raws.len() + 1);
    assert_each_once(&fake, &raws);
    assert!(
        logins(&dovecot) >= 3,
        "reconnected after each drop: {}",
        logins(&dovecot)
    );
}

/// Gives the INBOX of [`USER`] a new `UIDVALIDITY` (Dovecot stopped): the index is
/// dropped and the UID list rewritten, as a restored or rebuilt mailbox would be.
pub(crate) fn reset_uidvalidity(dovecot: &mut Dovecot) {
    dovecot.stop();
    let dir = dovecot.maildir(USER, None);
    for e in std::fs::read_dir(&dir).expect("maildir").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("dovecot.index") {
            std::fs::remove_file(e.path()).expect("remove index");
        }
    }
    let list = dir.join("dovecot-uidlist");
    let text = std::fs::read_to_string(&list).expect("uidlist");
    let (head, rest) = text.split_once('\n').expect("header line");
    let header: Vec<String> = head
        .split(' ')
        .map(
            |f| match f.strip_prefix('V').and_then(|v| v.parse::<u64>().ok()) {
                Some(v) => format!("V{}", v + 1000),
                None => f.to_string(),
            },
        )
        .collect();
    std::fs::write(&list, format!("{}\n{rest}", header.join(" "))).expect("rewrite uidlist");
    dovecot.start_again();
}

#[tokio::test]
async fn a_uidvalidity_reset_creates_no_duplicates() {
    let raws: Vec<Vec<u8>> = (0..6).map(|n| sample_mail("reset", n, 300)).collect();
    let mut dovecot = Dovecot::start_with(|d| {
        let seeds: Vec<Seed> = raws
            .iter()
            .map(|raw| Seed {
                raw: raw.clone(),
                flags: "",
                received: minutes_ago(5),
            })
            .collect();
        d.seed(USER, None, &seeds);
    });
    let fake = GraphFake::start_default();
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(&dovecot, "ops-mail", "start = \"days:2\"")
        .spawn();
    assert!(wait_for_items(&fake, raws.len(), Duration::from_secs(20)).await);

    let before = {
        let mut c = dovecot.client().await;
        let s = c
            .examine(&MailboxName::from_display("INBOX"))
            .await
            .expect("EXAMINE");
        c.logout().await;
        s.uid_validity
    };
    reset_uidvalidity(&mut dovecot);
    let mut c = dovecot.client().await;
    let after = c
        .examine(&MailboxName::from_display("INBOX"))
        .await
        .expect("EXAMINE");
    c.logout().await;
    assert_ne!(after.uid_validity, before, "the reset took");

    let fresh = sample_mail("reset-fresh", 1, 300);
    dovecot.append("INBOX", &fresh, &[]).await;
    assert!(
        wait_for_items(&fake, raws.len() + 1, Duration::from_secs(20)).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    // The resync has matched the old ones by then (it runs before the new UID).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), raws.len() + 1);
    assert_each_once(&fake, &raws);
    assert!(
        app.logs().iter().any(|l| l.contains("UIDVALIDITY changed")),
        "the reset was noticed"
    );
}

#[tokio::test]
async fn two_instances_share_one_imap_connection_and_the_survivor_takes_over() {
    let redis = RedisServer::start();
    let dovecot = Dovecot::start();
    let fake = GraphFake::start_default();
    let env =
        Env::new()
            .redis(&redis)
            .graph(&fake)
            .mailbox_route(&dovecot, "ops-mail", "lease_secs = 4");
    let first = env.spawn();
    let second = env.spawn();
    // Both run; one of them holds the connection.
    assert!(
        eventually(Duration::from_secs(10), || async {
            (logins(&dovecot) >= 1).then_some(())
        })
        .await
        .is_some(),
        "nobody connected; logs:\n{}\n{}",
        first.logs().join("\n"),
        second.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        logins(&dovecot),
        1,
        "one IMAP connection between two instances"
    );
    let holder_is_first = first
        .logs()
        .iter()
        .any(|l| l.contains("now holds the route's IMAP connection"));
    let mut test_logins = 0;
    dovecot
        .append("INBOX", &sample_mail("pair", 1, 300), &[])
        .await;
    test_logins += 1;
    assert!(wait_for_items(&fake, 1, Duration::from_secs(5)).await);

    // The holder dies; the other takes over within the lease's lifetime.
    let (mut holder, survivor) = if holder_is_first {
        (first, second)
    } else {
        (second, first)
    };
    holder.kill9();
    dovecot
        .append("INBOX", &sample_mail("pair", 2, 300), &[])
        .await;
    test_logins += 1;
    assert!(
        wait_for_items(&fake, 2, Duration::from_secs(20)).await,
        "no takeover; logs:\n{}",
        survivor.logs().join("\n")
    );
    assert_eq!(
        logins(&dovecot) - test_logins,
        2,
        "one connection each, in turn"
    );
    assert_eq!(copies(&fake, "<1.pair@dingbridge.test>"), 1);
    assert_eq!(copies(&fake, "<2.pair@dingbridge.test>"), 1);
}

#[tokio::test]
async fn a_refused_login_shows_in_readyz_with_the_reason() {
    let dovecot = Dovecot::start();
    let fake = GraphFake::start_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let toml = dovecot.route_toml("ops-mail", "").replace(
        &dovecot.password_file().display().to_string(),
        &wrong.display().to_string(),
    );
    let app = Env::new().graph(&fake).config_toml(&toml).spawn();
    let ready = eventually(Duration::from_secs(15), || async {
        let r = readyz(&app).await;
        (r["checks"]["mailbox_routes"]["ops-mail"]["ok"] == false).then_some(r)
    })
    .await
    .expect("the route reports its login problem");
    assert_eq!(ready["status"], "degraded");
    let route = &ready["checks"]["mailbox_routes"]["ops-mail"];
    assert_eq!(route["kind"], "login", "{ready}");
    let error = route["error"].as_str().unwrap_or_default();
    assert!(error.contains("第三方客户端管理"), "{error}");
    assert!(!error.contains("not-the-password"), "{error}");
}

#[tokio::test]
async fn without_idle_the_route_polls_and_start_new_skips_what_was_there() {
    let mut dovecot = Dovecot::start_with(|d| {
        d.seed(
            USER,
            None,
            &[Seed {
                raw: sample_mail("before", 1, 300),
                flags: "",
                received: minutes_ago(1),
            }],
        );
    });
    // The same server without IDLE.
    let c = dovecot.client().await;
    let caps: Vec<String> = c
        .capabilities()
        .all
        .iter()
        .filter(|n| !n.eq_ignore_ascii_case("IDLE") && !n.starts_with("AUTH="))
        .cloned()
        .collect();
    c.logout().await;
    dovecot.reconfigure(&format!("imap_capability = {}", caps.join(" ")));
    let c = dovecot.client().await;
    assert!(!c.capabilities().idle, "{:?}", c.capabilities());
    c.logout().await;

    let fake = GraphFake::start_default();
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(&dovecot, "ops-mail", "poll_interval_secs = 1")
        .spawn();
    // The route has started when its folder exists in Outlook.
    assert!(
        eventually(Duration::from_secs(10), || async {
            fake.folder_id(MAILBOX, FOLDER)
        })
        .await
        .is_some(),
        "logs:\n{}",
        app.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    dovecot
        .append("INBOX", &sample_mail("polled", 1, 300), &[])
        .await;
    assert!(
        wait_for_items(&fake, 1, Duration::from_secs(5)).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(copies(&fake, "<1.polled@dingbridge.test>"), 1);
    assert_eq!(
        copies(&fake, "<1.before@dingbridge.test>"),
        0,
        "start = new: mail already there stays out"
    );
    assert_eq!(
        app.metric("mailbox_idle_connected{route=\"ops-mail\"}")
            .await,
        Some(0.0)
    );
    // SIGTERM stops the loop and gives the lease back.
    let mut app = app;
    assert!(app.terminate(Duration::from_secs(15)), "clean exit");
    assert!(
        app.logs()
            .iter()
            .any(|l| l.contains("mailbox sync stopped")),
        "logs:\n{}",
        app.logs().join("\n")
    );
}

#[tokio::test]
async fn every_mapped_folder_is_synced_into_its_own_outlook_folder() {
    let dovecot = Dovecot::start_with(|d| {
        d.seed(
            USER,
            None,
            &[Seed {
                raw: sample_mail("in", 1, 300),
                flags: "",
                received: minutes_ago(3),
            }],
        );
        d.seed(
            USER,
            Some("已发送"),
            &[Seed {
                raw: sample_mail("sent", 1, 300),
                flags: "S",
                received: minutes_ago(2),
            }],
        );
    });
    let fake = GraphFake::start_default();
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(
            &dovecot,
            "ops-mail",
            "start = \"days:1\"\npoll_interval_secs = 1\nfolders = [{ dingtalk = \"INBOX\", outlook = \"DingTalk Mail\" }, { dingtalk = \"已发送\", outlook = \"DingTalk Sent\" }]",
        )
        .spawn();
    let sent_folder = |n: usize| {
        let fake = &fake;
        async move { (fake.messages(MAILBOX, "DingTalk Sent").len() >= n).then_some(()) }
    };
    assert!(
        wait_for_items(&fake, 1, Duration::from_secs(15)).await
            && eventually(Duration::from_secs(5), || sent_folder(1))
                .await
                .is_some(),
        "logs:\n{}",
        app.logs().join("\n")
    );
    // New mail in the folder the connection does not wait on comes within a poll.
    dovecot
        .append("已发送", &sample_mail("sent", 2, 300), &["\\Seen"])
        .await;
    assert!(
        eventually(Duration::from_secs(6), || sent_folder(2))
            .await
            .is_some()
    );
    dovecot
        .append("INBOX", &sample_mail("in", 2, 300), &[])
        .await;
    assert!(wait_for_items(&fake, 2, Duration::from_secs(6)).await);
    let sent = fake.messages(MAILBOX, "DingTalk Sent");
    assert!(sent.iter().all(|m| m["isRead"] == true), "{sent:?}");
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), 2);
    assert_eq!(copies(&fake, "<2.sent@dingbridge.test>"), 1);
}

#[tokio::test]
async fn a_route_without_graph_is_reported_not_synced() {
    let dovecot = Dovecot::start();
    let app = Env::new().mailbox_route(&dovecot, "ops-mail", "").spawn();
    let ready = eventually(Duration::from_secs(10), || async {
        let r = readyz(&app).await;
        (r["checks"]["mailbox_routes"]["ops-mail"]["ok"] == false).then_some(r)
    })
    .await
    .expect("the route reports why it does not run");
    assert_eq!(ready["status"], "degraded");
    assert_eq!(
        ready["checks"]["mailbox_routes"]["ops-mail"]["kind"],
        "config"
    );
    assert!(
        app.logs()
            .iter()
            .any(|l| l.contains("mailbox route not synced") && l.contains("Graph")),
        "logged clearly"
    );
    assert_eq!(
        logins(&dovecot),
        0,
        "no IMAP connection without a place to write"
    );
}

#[tokio::test]
async fn an_instance_killed_mid_import_resumes_without_doubling_a_mail() {
    let redis = RedisServer::start();
    let raws: Vec<Vec<u8>> = (0..30).map(|n| sample_mail("crash", n, 400)).collect();
    let dovecot = Dovecot::start_with(|d| {
        let seeds: Vec<Seed> = raws
            .iter()
            .enumerate()
            .map(|(i, raw)| Seed {
                raw: raw.clone(),
                flags: "",
                received: minutes_ago(50 - i as u64),
            })
            .collect();
        d.seed(USER, None, &seeds);
    });
    let fake = GraphFake::start_default();
    fake.set_latency(Duration::from_millis(80));
    let env = Env::new().redis(&redis).graph(&fake).mailbox_route(
        &dovecot,
        "ops-mail",
        "start = \"days:1\"\nlease_secs = 3",
    );
    let mut app = env.spawn();
    assert!(wait_for_items(&fake, 10, Duration::from_secs(20)).await);
    // Killed while a create may be in flight: the next one finds it by Message-ID.
    app.kill9();
    let again = env.spawn();
    assert!(
        wait_for_items(&fake, raws.len(), Duration::from_secs(30)).await,
        "logs:\n{}",
        again.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), raws.len());
    assert_each_once(&fake, &raws);
}
