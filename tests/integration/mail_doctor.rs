//! `dingbridge doctor` on mailbox routes against a real Dovecot: a working route passes
//! and warns until its mailbox is backed up; a wrong password, an untrusted certificate,
//! a wrong port and a missing folder each fail saying what to change; a server without
//! IDLE/UIDPLUS/CONDSTORE/MOVE is a warning that says what the sync does instead; an
//! Outlook side that is no Exchange Online mailbox fails.

use crate::common;

use std::time::{Duration, SystemTime};

use common::{
    RedisServer,
    dovecot::{Dovecot, PASSWORD, Seed, USER, sample_mail},
    env::{Env, MAILBOX},
    eventually,
    graph_fake::{GraphFake, GraphFakeConfig},
};

/// (exit code, report) of `dingbridge doctor` with this configuration.
fn doctor(config: &str) -> (Option<i32>, String) {
    let out = Env::new().config_toml(config).run(&["doctor"]);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The report's line for `check` (e.g. `mail dt login`).
fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{report}"))
}

#[test]
fn a_working_mailbox_route_passes_and_warns_until_it_is_backed_up() {
    let dovecot = Dovecot::start_with(|d| {
        let seeds: Vec<Seed> = (0..3)
            .map(|i| Seed {
                raw: sample_mail("doc", i, 200),
                flags: "",
                received: SystemTime::now(),
            })
            .collect();
        d.seed(USER, None, &seeds);
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let backup_dir = dir.path().join("ops-mail");
    let config = dovecot.route_toml("dt", &format!("backup_dir = \"{}\"", backup_dir.display()));

    let (code, report) = doctor(&config);
    assert_eq!(code, Some(0), "{report}");
    for check in [
        "mail dt reachable",
        "mail dt tls",
        "mail dt login",
        "mail dt capabilities",
        "mail dt folders",
    ] {
        assert!(line(&report, check).starts_with("ok "), "{report}");
    }
    assert!(line(&report, "mail dt capabilities").contains("IDLE, UIDPLUS, CONDSTORE, MOVE"));
    let backup = line(&report, "mail dt backup");
    assert!(
        backup.starts_with("warn") && backup.contains("dingbridge mail backup --route dt"),
        "{backup}"
    );

    let out = Env::new()
        .config_toml(&config)
        .run(&["mail", "backup", "--route", "dt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("note:"),
        "backup_dir is where doctor looks: {err}"
    );

    let (code, report) = doctor(&config);
    assert_eq!(code, Some(0), "{report}");
    let backup = line(&report, "mail dt backup");
    assert!(
        backup.starts_with("ok ") && backup.contains("3 messages"),
        "{backup}"
    );
}

#[tokio::test]
async fn a_backup_older_than_the_routes_first_sync_is_a_warning_until_it_is_run_again() {
    let dovecot = Dovecot::start_with(|d| {
        let seeds: Vec<Seed> = (0..3)
            .map(|i| Seed {
                raw: sample_mail("first", i, 200),
                flags: "",
                received: SystemTime::now(),
            })
            .collect();
        d.seed(USER, None, &seeds);
    });
    let redis = RedisServer::start();
    let fake = GraphFake::start_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let backup_dir = dir.path().join("ops-mail");
    let env = Env::new()
        .redis(&redis)
        .graph(&fake)
        .config_toml(&dovecot.route_toml(
            "dt",
            &format!(
                "start = \"days:1\"\nbackup_dir = \"{}\"",
                backup_dir.display()
            ),
        ));
    let doctor = |env: &Env| {
        let out = env.run(&["doctor"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let backup = |env: &Env| {
        let out = env.run(&["mail", "backup", "--route", "dt"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    backup(&env);
    let report = doctor(&env);
    assert!(
        line(&report, "mail dt backup").starts_with("ok "),
        "not synced yet:\n{report}"
    );

    // The backup's end time has whole seconds: the sync starts in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let app = env.spawn();
    let synced = eventually(Duration::from_secs(20), || async {
        (fake.messages(MAILBOX, "DingTalk Mail").len() == 3).then_some(())
    })
    .await;
    assert!(synced.is_some(), "{}", app.logs().join("\n"));
    drop(app);
    let report = doctor(&env);
    let stale = line(&report, "mail dt backup");
    assert!(
        stale.starts_with("warn")
            && stale.contains("older than the route's first sync")
            && stale.contains("dingbridge mail backup --route dt"),
        "{report}"
    );

    // Run again after the first sync, it covers what the sync saw.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    backup(&env);
    let report = doctor(&env);
    assert!(
        line(&report, "mail dt backup").starts_with("ok "),
        "{report}"
    );
}

#[test]
fn each_broken_mailbox_setting_fails_with_what_to_change() {
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dovecot.route_toml("dt", "");

    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "my-dingtalk-login-password\n").expect("write");
    let config = good.replace(
        &dovecot.password_file().display().to_string(),
        &wrong.display().to_string(),
    );
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(1), "{report}");
    let login = line(&report, "mail dt login");
    assert!(
        login.starts_with("FAIL")
            && login.contains("第三方客户端管理")
            && login.contains("client password"),
        "{login}"
    );
    assert!(
        line(&report, "mail dt backup").starts_with("warn"),
        "{report}"
    );
    assert!(!report.contains("my-dingtalk-login-password") && !report.contains(PASSWORD));

    let untrusted: String = good
        .lines()
        .filter(|l| !l.starts_with("tls_ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (code, report) = doctor(&untrusted);
    assert_eq!(code, Some(1), "{report}");
    let tls = line(&report, "mail dt tls");
    assert!(
        tls.starts_with("FAIL") && tls.contains("tls_ca_file"),
        "{tls}"
    );

    let closed = good.replace(
        &format!("port = {}", dovecot.imaps_port),
        &format!("port = {}", common::free_port()),
    );
    let (code, report) = doctor(&closed);
    assert_eq!(code, Some(1), "{report}");
    let reachable = line(&report, "mail dt reachable");
    assert!(
        reachable.starts_with("FAIL") && reachable.contains("imap.port"),
        "{reachable}"
    );

    let missing = dovecot.route_toml(
        "dt",
        r#"folders = [{ dingtalk = "INBOX", outlook = "DingTalk Mail" }, { dingtalk = "归档", outlook = "Archive" }]"#,
    );
    let (code, report) = doctor(&missing);
    assert_eq!(code, Some(1), "{report}");
    let folders = line(&report, "mail dt folders");
    assert!(
        folders.starts_with("FAIL") && folders.contains("归档"),
        "{folders}"
    );
}

#[test]
fn a_server_without_the_sync_extensions_is_a_warning_that_says_what_changes() {
    let dovecot = Dovecot::start_configured("imap_capability = IMAP4rev1 LITERAL+ ID", |_| {});
    let (code, report) = doctor(&dovecot.route_toml("dt", ""));
    assert_eq!(code, Some(0), "{report}");
    let caps = line(&report, "mail dt capabilities");
    assert!(caps.starts_with("warn"), "{caps}");
    for (cap, consequence) in [
        ("IDLE", "polling"),
        ("UIDPLUS", "Message-ID search"),
        ("CONDSTORE", "re-checking"),
        ("MOVE", "COPY"),
    ] {
        assert!(
            caps.contains(&format!("no {cap}: ")) && caps.contains(consequence),
            "{cap}: {caps}"
        );
    }
    assert!(
        line(&report, "mail dt login").starts_with("ok "),
        "{report}"
    );
}

#[test]
fn the_outlook_side_of_a_mailbox_route_must_be_an_exchange_online_mailbox() {
    let dovecot = Dovecot::start();
    let graph = GraphFake::start(GraphFakeConfig {
        mailboxes: Some(vec![MAILBOX.to_string()]),
        ..GraphFakeConfig::default()
    });
    let onprem = dovecot.route_toml("dt", "").replace(
        "mailbox = \"ops@contoso.com\"",
        "mailbox = \"onprem@contoso.com\"",
    );
    let out = Env::new()
        .graph(&graph)
        .config_toml(&onprem)
        .run(&["doctor"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    let mailbox = line(&report, "graph mailbox onprem@contoso.com");
    assert!(
        mailbox.starts_with("FAIL") && mailbox.contains("on-premises"),
        "{mailbox}"
    );
    assert!(
        line(&report, "mail dt login").starts_with("ok "),
        "{report}"
    );
}
