//! The DingTalk Mail IMAP client against a real Dovecot: every TLS mode, the
//! capabilities the sync reads, folders (non-ASCII names too), APPEND with APPENDUID,
//! fetching without setting `\Seen`, flags, IDLE, and errors that say what is wrong
//! (login, TLS, connection).

use crate::common;

use std::time::{Duration, SystemTime};

use chrono::{DateTime, FixedOffset};
use common::dovecot::{Dovecot, PASSWORD, Seed, USER, sample_mail};
use dingbridge::{
    config::TlsMode,
    mail::{IdleOutcome, ImapClient, MailboxName, ServerEvent},
};
use secrecy::SecretString;

fn inbox() -> MailboxName {
    MailboxName::from_display("INBOX")
}

#[tokio::test]
async fn every_tls_mode_logs_in_and_reads_the_capabilities_the_sync_needs() {
    let dovecot = Dovecot::start();
    for mode in [TlsMode::Implicit, TlsMode::Starttls, TlsMode::None] {
        let mut c = ImapClient::connect(&dovecot.settings(mode))
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let caps = c.capabilities().clone();
        assert!(
            caps.idle && caps.uidplus && caps.condstore && caps.r#move,
            "{mode:?}: {caps:?}"
        );
        let folders = c.list_folders().await.expect("LIST");
        assert!(
            folders.iter().any(|f| f.name.wire == "INBOX"),
            "{folders:?}"
        );
        let state = c.examine(&inbox()).await.expect("EXAMINE");
        assert!(state.read_only && state.uid_validity > 0 && state.uid_next == Some(1));
        assert_eq!(state.exists, 0);
        c.logout().await;
    }
}

#[tokio::test]
async fn append_fetch_and_flags_round_trip_and_fetching_never_marks_read() {
    let dovecot = Dovecot::start();
    let mut c = dovecot.client().await;
    let raw = sample_mail("rt", 1, 2_000);
    let received: DateTime<FixedOffset> =
        DateTime::parse_from_rfc3339("2026-01-05T10:00:00+08:00").expect("date");
    let placed = c
        .append(&inbox(), &["\\Flagged"], Some(&received), &raw)
        .await
        .expect("APPEND")
        .expect("UIDPLUS gives the UID");
    let state = c.select(&inbox()).await.expect("SELECT");
    assert_eq!(placed.uid_validity, state.uid_validity);
    assert!(!state.read_only && state.highest_modseq.is_some());

    let fetched = c
        .fetch(&[placed.uid], raw.len() as u64)
        .await
        .expect("FETCH");
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].raw, raw, "the message comes back byte for byte");
    assert_eq!(fetched[0].meta.internal_date, Some(received));
    assert_eq!(fetched[0].meta.size, raw.len() as u64);
    assert!(fetched[0].meta.flags.iter().any(|f| f == "\\Flagged"));
    let meta = c.fetch_meta(&[placed.uid]).await.expect("meta");
    assert!(!meta[0].seen(), "BODY.PEEK[] left \\Seen alone: {meta:?}");

    assert_eq!(
        c.search_message_id("<1.rt@dingbridge.test>")
            .await
            .expect("SEARCH"),
        vec![placed.uid]
    );
    c.store_flags(&[placed.uid], true, &["\\Seen"])
        .await
        .expect("+FLAGS");
    assert!(c.fetch_meta(&[placed.uid]).await.expect("meta")[0].seen());
    c.store_flags(&[placed.uid], false, &["\\Seen"])
        .await
        .expect("-FLAGS");
    assert!(!c.fetch_meta_all().await.expect("meta")[0].seen());
    // `N:*` names the last message even when its UID is below N: it is filtered out.
    assert!(
        c.fetch_meta_from(placed.uid + 1)
            .await
            .expect("meta")
            .is_empty()
    );
    assert_eq!(c.fetch(&[placed.uid + 50], 0).await.expect("gone"), vec![]);
    c.logout().await;
}

#[tokio::test]
async fn folders_with_chinese_names_are_listed_readable_and_open_by_that_name() {
    let dovecot = Dovecot::start_with(|d| {
        d.seed(
            USER,
            Some("已发送"),
            &[Seed {
                raw: sample_mail("sent", 1, 100),
                flags: "S",
                received: SystemTime::now(),
            }],
        );
    });
    let mut c = dovecot.client().await;
    let folders = c.list_folders().await.expect("LIST");
    let sent = folders
        .iter()
        .find(|f| f.name.display == "已发送")
        .unwrap_or_else(|| panic!("{folders:?}"));
    assert_eq!(sent.name.wire, "&XfJT0ZAB-");
    let state = c
        .examine(&MailboxName::from_display("已发送"))
        .await
        .expect("EXAMINE by readable name");
    assert_eq!(state.exists, 1);
    let meta = c.fetch_meta_all().await.expect("meta");
    assert!(meta[0].seen(), "the seeded S flag is \\Seen");
}

#[tokio::test]
async fn idle_wakes_on_new_mail_and_a_quiet_wait_times_out() {
    let dovecot = Dovecot::start();
    let mut c = dovecot.client().await;
    c.select(&inbox()).await.expect("SELECT");
    assert_eq!(
        c.idle(Duration::from_millis(300)).await.expect("IDLE"),
        IdleOutcome::Timeout
    );
    let started = std::time::Instant::now();
    let (outcome, ()) = tokio::join!(c.idle(Duration::from_secs(20)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        dovecot
            .append("INBOX", &sample_mail("idle", 1, 100), &[])
            .await;
    });
    match outcome.expect("IDLE") {
        IdleOutcome::Changed(events) => assert!(
            events.iter().any(|e| matches!(e, ServerEvent::Exists(1))),
            "{events:?}"
        ),
        other => panic!("no wake-up: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The connection is usable after IDLE.
    assert_eq!(c.fetch_meta_all().await.expect("meta").len(), 1);
}

#[tokio::test]
async fn a_refused_login_says_how_to_switch_third_party_clients_on() {
    let dovecot = Dovecot::start();
    let mut s = dovecot.settings(TlsMode::Implicit);
    s.password = SecretString::from("the-dingtalk-login-password");
    let err = ImapClient::connect(&s).await.expect_err("refused");
    assert!(err.is_login(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("第三方客户端管理") && text.contains("client password"),
        "{text}"
    );
    assert!(!text.contains("the-dingtalk-login-password") && !text.contains(PASSWORD));
}

#[tokio::test]
async fn an_untrusted_certificate_or_a_port_without_tls_is_a_tls_error() {
    let dovecot = Dovecot::start();
    let mut s = dovecot.settings(TlsMode::Implicit);
    s.ca_file = None;
    let err = ImapClient::connect(&s).await.expect_err("not trusted");
    assert!(err.is_tls(), "{err:?}");
    assert!(err.to_string().contains("tls_ca_file"), "{err}");
    let mut s = dovecot.settings(TlsMode::Implicit);
    s.port = dovecot.imap_port;
    let err = ImapClient::connect(&s).await.expect_err("plain port");
    assert!(err.is_tls(), "{err:?}");
}

#[tokio::test]
async fn a_closed_port_or_a_dropped_connection_is_a_connection_error() {
    let mut dovecot = Dovecot::start();
    let mut s = dovecot.settings(TlsMode::Implicit);
    s.port = common::free_port();
    let err = ImapClient::connect(&s).await.expect_err("closed");
    assert!(err.is_connection() && !err.is_login(), "{err:?}");

    let mut c = dovecot.client().await;
    c.select(&inbox()).await.expect("SELECT");
    dovecot.restart();
    let err = c.noop().await.expect_err("dropped");
    assert!(err.is_connection(), "{err:?}");
    let again = c.noop().await.expect_err("still broken");
    assert!(again.is_connection(), "{again:?}");
    // A new connection works, until the server kicks it out.
    let mut fresh = dovecot.client().await;
    fresh.noop().await.expect("NOOP");
    dovecot.kick(USER);
    let err = fresh.noop().await.expect_err("kicked");
    assert!(err.is_connection(), "{err:?}");
}
