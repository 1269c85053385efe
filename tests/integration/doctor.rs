//! `dingbridge doctor` through the binary against Redis and the fakes: a working setup
//! passes every check; a wrong Graph secret, a mailbox the app cannot reach and a wrong
//! DingTalk secret each fail with a sentence that says what to change, and exit 1.

use crate::common;

use common::{
    RedisServer,
    dingtalk_fake::DingTalk,
    env::{Env, MAILBOX},
    graph_fake::{GraphFake, GraphFakeConfig},
};

const ONPREM: &str = "onprem@contoso.com";

/// A configuration with one message route per mailbox.
fn config(mailboxes: &[&str]) -> String {
    let mut text = String::new();
    for (i, m) in mailboxes.iter().enumerate() {
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nmailbox = \"{m}\"\nkinds = [\"message\"]\n[routes.dingtalk]\nconversation_id = \"cid-{i}\"\n"
        ));
    }
    text
}

fn report(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_working_setup_passes_every_check() {
    let redis = RedisServer::start();
    let graph = GraphFake::start_default();
    let dt = DingTalk::start();
    let out = Env::relays(&redis, &graph, &dt)
        .config_toml(&config(&[MAILBOX]))
        .run(&["doctor"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    for line in [
        "ok    configuration",
        "ok    store",
        "ok    graph token",
        "ok    graph mailbox ops@contoso.com",
        "ok    dingtalk app",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
}

#[test]
fn each_broken_part_fails_with_what_to_change() {
    let redis = RedisServer::start();
    let graph = GraphFake::start(GraphFakeConfig {
        mailboxes: Some(vec![MAILBOX.to_string()]),
        ..GraphFakeConfig::default()
    });
    let dt = DingTalk::start();
    let env = Env::relays(&redis, &graph, &dt).config_toml(&config(&[MAILBOX, ONPREM]));

    let out = env.run(&["doctor"]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ok    graph mailbox ops@contoso.com"),
        "{text}"
    );
    let onprem = text
        .lines()
        .find(|l| l.contains(ONPREM))
        .expect("a line for the mailbox");
    assert!(
        onprem.starts_with("FAIL") && onprem.contains("on-premises"),
        "{onprem}"
    );

    let wrong = "not-the-secret-value";
    let out = env
        .set("DINGBRIDGE_GRAPH_CLIENT_SECRET", wrong)
        .set("DINGBRIDGE_DINGTALK_APP_SECRET", "not-the-app-secret")
        .run(&["doctor"]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let token = text
        .lines()
        .find(|l| l.contains("graph token"))
        .expect("token line");
    assert!(
        token.starts_with("FAIL") && token.contains("AADSTS7000215"),
        "{token}"
    );
    let app = text
        .lines()
        .find(|l| l.contains("dingtalk app"))
        .expect("app line");
    assert!(
        app.starts_with("FAIL") && app.contains("app_secret"),
        "{app}"
    );
    assert!(!text.contains(wrong), "no secret in the report");
}
