//! Read state between DingTalk Mail and Outlook through the running binary: a real
//! Dovecot, the Graph fake (sending `updated` notifications on changes) and
//! `dingbridge serve`. Reading in either mailbox marks the other within one cycle, unread
//! goes back the same way, and nothing flips back: one Graph PATCH and one IMAP STORE per
//! change.

use crate::common;

use std::time::Duration;

use common::{
    dovecot::{Dovecot, sample_mail},
    env::{Env, MAILBOX},
    eventually,
    graph_fake::{GraphFake, GraphFakeConfig},
};
use dingbridge::mail::MailboxName;
use serde_json::json;

const FOLDER: &str = "DingTalk Mail";

/// The Outlook item with this `internetMessageId`: (id, isRead).
fn outlook(fake: &GraphFake, imid: &str) -> Option<(String, bool)> {
    fake.messages(MAILBOX, FOLDER)
        .into_iter()
        .find(|m| m["internetMessageId"] == imid)
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_string(),
                m["isRead"] == true,
            )
        })
}

/// Whether the INBOX message with this `Message-ID` has `\Seen`.
async fn seen(dovecot: &Dovecot, imid: &str) -> bool {
    let mut c = dovecot.client().await;
    c.examine(&MailboxName::from_display("INBOX"))
        .await
        .expect("EXAMINE");
    let uids = c.search_message_id(imid).await.expect("SEARCH");
    let metas = c.fetch_meta(&uids).await.expect("FETCH");
    c.logout().await;
    assert_eq!(metas.len(), 1, "{imid}");
    metas[0].seen()
}

/// Sets or clears `\Seen` in DingTalk Mail, as a mail client would.
async fn set_seen(dovecot: &Dovecot, imid: &str, read: bool) {
    let mut c = dovecot.client().await;
    c.select(&MailboxName::from_display("INBOX"))
        .await
        .expect("SELECT");
    let uids = c.search_message_id(imid).await.expect("SEARCH");
    assert_eq!(uids.len(), 1, "{imid}");
    c.store_flags(&uids, read, &["\\Seen"])
        .await
        .expect("STORE");
    c.logout().await;
}

/// Graph PATCHes of messages the bridge sent.
fn patches(fake: &GraphFake) -> usize {
    fake.requests_to("/messages/")
        .iter()
        .filter(|r| r.method == "PATCH")
        .count()
}

async fn read_changes(app: &common::TestApp, direction: &str, read: bool) -> f64 {
    app.metric(&format!(
        "mailbox_read_changes_total{{route=\"ops-mail\",direction=\"{direction}\",read=\"{read}\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

async fn outlook_read_is(fake: &GraphFake, imid: &str, want: bool) -> bool {
    eventually(Duration::from_secs(5), || async {
        (outlook(fake, imid)?.1 == want).then_some(())
    })
    .await
    .is_some()
}

async fn dingtalk_seen_is(dovecot: &Dovecot, imid: &str, want: bool) -> bool {
    eventually(Duration::from_secs(5), || async {
        (seen(dovecot, imid).await == want).then_some(())
    })
    .await
    .is_some()
}

/// Waits for the route to have written `imids` to Outlook.
async fn arrived(fake: &GraphFake, imids: &[&str]) -> bool {
    eventually(Duration::from_secs(15), || async {
        imids
            .iter()
            .all(|i| outlook(fake, i).is_some())
            .then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
async fn reading_in_either_mailbox_marks_the_other_once_and_nothing_flips_back() {
    let dovecot = Dovecot::start();
    assert!(dovecot.client().await.capabilities().condstore, "CONDSTORE");
    let fake = GraphFake::start(GraphFakeConfig::default().with_change_notifications());
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(
            &dovecot,
            "ops-mail",
            "direction = \"both\"\npoll_interval_secs = 1",
        )
        .spawn();
    assert!(
        eventually(Duration::from_secs(10), || async {
            fake.folder_id(MAILBOX, FOLDER)
        })
        .await
        .is_some(),
        "logs:\n{}",
        app.logs().join("\n")
    );
    let (a, b) = ("<1.read@dingbridge.test>", "<2.read@dingbridge.test>");
    dovecot
        .append("INBOX", &sample_mail("read", 1, 300), &[])
        .await;
    dovecot
        .append("INBOX", &sample_mail("read", 2, 300), &[])
        .await;
    assert!(
        arrived(&fake, &[a, b]).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    assert_eq!(outlook(&fake, a).map(|o| o.1), Some(false));
    let before = patches(&fake);

    // Read in DingTalk Mail → read in Outlook.
    set_seen(&dovecot, a, true).await;
    assert!(
        outlook_read_is(&fake, a, true).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    // Read in Outlook → \Seen in DingTalk Mail.
    let b_id = outlook(&fake, b).expect("b").0;
    fake.update_message(MAILBOX, &b_id, json!({ "isRead": true }));
    assert!(
        dingtalk_seen_is(&dovecot, b, true).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    // And unread again, both ways.
    set_seen(&dovecot, a, false).await;
    assert!(outlook_read_is(&fake, a, false).await);
    fake.update_message(MAILBOX, &b_id, json!({ "isRead": false }));
    assert!(dingtalk_seen_is(&dovecot, b, false).await);

    // Several cycles later nothing flipped back, and each change crossed once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(outlook(&fake, a).map(|o| o.1), Some(false));
    assert_eq!(outlook(&fake, b).map(|o| o.1), Some(false));
    assert!(!seen(&dovecot, a).await);
    assert!(!seen(&dovecot, b).await);
    assert_eq!(patches(&fake) - before, 2, "one PATCH per DingTalk change");
    assert_eq!(read_changes(&app, "to_outlook", true).await, 1.0);
    assert_eq!(read_changes(&app, "to_outlook", false).await, 1.0);
    // One `UID STORE` per Outlook change.
    assert_eq!(read_changes(&app, "to_dingtalk", true).await, 1.0);
    assert_eq!(read_changes(&app, "to_dingtalk", false).await, 1.0);
    fake.assert_no_violations();
}

#[tokio::test]
async fn without_condstore_recent_mail_is_rechecked_and_a_to_outlook_route_writes_no_flags() {
    let mut dovecot = Dovecot::start();
    let c = dovecot.client().await;
    let caps: Vec<String> = c
        .capabilities()
        .all
        .iter()
        .filter(|n| {
            !["CONDSTORE", "QRESYNC"].contains(&n.to_ascii_uppercase().as_str())
                && !n.starts_with("AUTH=")
        })
        .cloned()
        .collect();
    c.logout().await;
    dovecot.reconfigure(&format!("imap_capability = {}", caps.join(" ")));
    assert!(!dovecot.client().await.capabilities().condstore);

    let fake = GraphFake::start(GraphFakeConfig::default().with_change_notifications());
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(&dovecot, "ops-mail", "poll_interval_secs = 1")
        .spawn();
    assert!(
        eventually(Duration::from_secs(10), || async {
            fake.folder_id(MAILBOX, FOLDER)
        })
        .await
        .is_some(),
        "logs:\n{}",
        app.logs().join("\n")
    );
    let a = "<1.plain@dingbridge.test>";
    dovecot
        .append("INBOX", &sample_mail("plain", 1, 300), &[])
        .await;
    assert!(
        arrived(&fake, &[a]).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    let before = patches(&fake);
    set_seen(&dovecot, a, true).await;
    assert!(
        outlook_read_is(&fake, a, true).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    // `to_outlook`: an Outlook change is not written to DingTalk Mail, and nothing
    // bounces.
    let id = outlook(&fake, a).expect("a").0;
    fake.update_message(MAILBOX, &id, json!({ "isRead": false }));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(seen(&dovecot, a).await);
    assert_eq!(outlook(&fake, a).map(|o| o.1), Some(false));
    assert_eq!(patches(&fake) - before, 1);
    assert_eq!(read_changes(&app, "to_dingtalk", false).await, 0.0);
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_read_flag_set_while_the_route_idles_reaches_outlook_at_once() {
    let dovecot = Dovecot::start();
    assert!(dovecot.client().await.capabilities().idle, "IDLE");
    let fake = GraphFake::start_default();
    // `to_outlook` with IDLE: the loop waits up to idle_interval_secs (25 minutes), so
    // only the server's untagged FETCH (FLAGS) can wake it in time.
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(&dovecot, "ops-mail", "")
        .spawn();
    assert!(
        eventually(Duration::from_secs(10), || async {
            fake.folder_id(MAILBOX, FOLDER)
        })
        .await
        .is_some(),
        "logs:\n{}",
        app.logs().join("\n")
    );
    let a = "<1.idle@dingbridge.test>";
    dovecot
        .append("INBOX", &sample_mail("idle", 1, 300), &[])
        .await;
    assert!(
        arrived(&fake, &[a]).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_seen(&dovecot, a, true).await;
    assert!(
        outlook_read_is(&fake, a, true).await,
        "logs:\n{}",
        app.logs().join("\n")
    );
    assert_eq!(read_changes(&app, "to_outlook", true).await, 1.0);
    fake.assert_no_violations();
}
