//! `dingbridge undo` through the binary against real Redis and the Graph fake: after
//! DingTalk → Outlook relays (and a DingTalk Mail import from a real Dovecot) it lists
//! exactly the items the bridge wrote for the route since the time, `--apply` removes
//! exactly those that carry its origin marker (the user's own item in the same folder,
//! an item whose marker is not the bridge's and the other route's items stay), a second
//! `--apply` removes nothing, and a time after the writes lists nothing.

use crate::common;

use std::time::{Duration, SystemTime};

use common::{
    RedisServer,
    dingtalk_fake::{DingTalk, group_message, push},
    dovecot::{Dovecot, Seed, USER, sample_mail},
    env::{CONVERSATION, Env, MAILBOX, Route, UNION},
    eventually,
    graph_fake::{GraphFake, GraphFakeConfig},
    inspect::{audit, relay_results, wait_for},
};
use serde_json::{Value, json};

const SECOND: &str = "mirror@contoso.com";

/// Runs `dingbridge <args>`; (success, stdout, stderr).
fn cli(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = env.run(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Now, as `--since` takes it.
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The item lines of an `undo` output (neither notes nor the summary).
fn item_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| !l.starts_with("note:") && !l.starts_with("route "))
        .collect()
}

fn summary(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("route "))
        .unwrap_or_default()
}

fn removed_entries(redis: &RedisServer) -> Vec<Value> {
    relay_results(redis, "undo.removed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_removes_exactly_the_relayed_items_of_the_route_since_the_time() {
    let redis = RedisServer::start();
    let graph = GraphFake::start(GraphFakeConfig::default().with_mailboxes(&[MAILBOX, SECOND]));
    let dt = DingTalk::start();
    let routes = [
        Route {
            name: "customs",
            mailbox: MAILBOX,
            conversation: CONVERSATION,
            allow_deletes: false,
        },
        Route {
            name: "mirror",
            mailbox: SECOND,
            conversation: "cid-mirror",
            allow_deletes: false,
        },
    ];
    let env = Env::relays(&redis, &graph, &dt).routes(&routes);
    let before = now_rfc3339();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let app = env.spawn();
    dt.events.lock().expect("events").insert(
        "cal-1".into(),
        json!({"id": "cal-1", "summary": "Customs inspection",
            "start": {"dateTime": "2026-12-01T10:00:00+08:00", "timeZone": "Asia/Shanghai"},
            "end": {"dateTime": "2026-12-01T11:00:00+08:00", "timeZone": "Asia/Shanghai"}}),
    );
    push(&app, &group_message("msg-u1", CONVERSATION, "Papers ready")).await;
    push(&app, &group_message("msg-u2", CONVERSATION, "Truck left")).await;
    push(&app, &group_message("msg-m1", "cid-mirror", "Mirror only")).await;
    push(
        &app,
        &json!({"EventType": "calendar_event_change", "eventId": "ev-u1", "CorpId": "ding1",
            "calendarEventId": "cal-1", "calendarId": "primary", "unionIdList": [UNION],
            "changeType": "create", "EventTime": dingbridge::store::now_ms()}),
    )
    .await;
    let created = |kind: &str, route: &str| {
        relay_results(&redis, &format!("relay.{kind}.created"))
            .iter()
            .filter(|e| e["detail"]["route"] == route)
            .count()
    };
    wait_for(&app, "the relays", Duration::from_secs(40), || {
        (created("message", "customs") == 2
            && created("message", "mirror") == 1
            && created("calendar_event", "customs") == 1
            && created("calendar_event", "mirror") == 1)
            .then_some(())
    })
    .await;
    drop(app);
    let after = now_rfc3339();
    // The user's own mail in the same folder, and one bridge item whose marker was
    // changed since (it no longer says the bridge wrote it for this message).
    let own = graph.put_message(MAILBOX, "DingTalk", json!({"subject": "my own note"}));
    let mails = graph.messages(MAILBOX, "DingTalk");
    assert_eq!(mails.len(), 3);
    let tampered = mails
        .iter()
        .find(|m| m["subject"].as_str().unwrap_or("").contains("Truck left"))
        .or_else(|| mails.iter().find(|m| m["id"] != own.as_str()))
        .and_then(|m| m["id"].as_str())
        .expect("a relayed mail")
        .to_string();
    graph.update_message(
        MAILBOX,
        &tampered,
        json!({"singleValueExtendedProperties": [{"id": dingbridge::graph::ORIGIN_PROPERTY_ID,
            "value": "someone-else"}]}),
    );
    let mirror_before = (
        graph.messages(SECOND, "DingTalk").len(),
        graph.events(SECOND).len(),
    );
    assert_eq!(mirror_before, (1, 1));

    // Dry run: lists the route's three items (two mails, one event), removes nothing.
    let (ok, out, err) = cli(&env, &["undo", "--route", "customs", "--since", &before]);
    assert!(ok, "dry run failed: {err}\n{out}");
    let lines = item_lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("would remove")).count(),
        2,
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&tampered) && l.contains("KEPT")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.starts_with("event")), "{out}");
    assert!(
        !out.contains(&own),
        "the user's own mail is not listed: {out}"
    );
    assert!(out.contains("note: undo covers"), "{out}");
    assert!(summary(&out).contains("dry run"), "{out}");
    assert_eq!(graph.messages(MAILBOX, "DingTalk").len(), 3);
    assert_eq!(graph.events(MAILBOX).len(), 1);
    assert!(removed_entries(&redis).is_empty());

    // Apply: exactly the two marked items go.
    let (ok, out, err) = cli(
        &env,
        &["undo", "--route", "customs", "--since", &before, "--apply"],
    );
    assert!(ok, "apply failed: {err}\n{out}");
    assert_eq!(
        item_lines(&out)
            .iter()
            .filter(|l| l.ends_with("removed"))
            .count(),
        2,
        "{out}"
    );
    let left: Vec<String> = graph
        .messages(MAILBOX, "DingTalk")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    left.iter()
        .for_each(|id| assert!(*id == own || *id == tampered, "{id} left"));
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(graph.events(MAILBOX).is_empty());
    assert_eq!(
        (
            graph.messages(SECOND, "DingTalk").len(),
            graph.events(SECOND).len()
        ),
        mirror_before,
        "the other route's items stay"
    );
    let removed = removed_entries(&redis);
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed.iter().all(|e| e["detail"]["route"] == "customs"
        && e["detail"]["kind"].is_string()
        && e["detail"]["graph_id"].is_string()));

    // Twice: nothing more is removed, and it exits 0.
    let (ok, out, err) = cli(
        &env,
        &["undo", "--route", "customs", "--since", &before, "--apply"],
    );
    assert!(ok, "second apply failed: {err}\n{out}");
    assert!(
        item_lines(&out)
            .iter()
            .all(|l| !l.ends_with("removed") && l.contains(&tampered)),
        "{out}"
    );
    assert!(summary(&out).contains("0 removed"), "{out}");
    assert!(summary(&out).contains("2 undone before"), "{out}");
    assert_eq!(removed_entries(&redis).len(), 2);
    assert_eq!(graph.messages(MAILBOX, "DingTalk").len(), 2);

    // After the writes: nothing.
    let (ok, out, _) = cli(&env, &["undo", "--route", "mirror", "--since", &after]);
    assert!(ok);
    assert!(item_lines(&out).is_empty(), "{out}");
    // The other route still lists its own two.
    let (ok, out, _) = cli(&env, &["undo", "--route", "mirror", "--since", &before]);
    assert!(ok);
    assert_eq!(item_lines(&out).len(), 2, "{out}");
    graph.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_of_a_mailbox_route_removes_the_imported_mails_and_keeps_the_users_own() {
    let raws: Vec<Vec<u8>> = (0..3).map(|n| sample_mail("undo", n, 300)).collect();
    let dovecot = Dovecot::start_with(|d| {
        let seeds: Vec<Seed> = raws
            .iter()
            .map(|raw| Seed {
                raw: raw.clone(),
                flags: "",
                received: SystemTime::now() - Duration::from_secs(600),
            })
            .collect();
        d.seed(USER, None, &seeds);
    });
    let redis = RedisServer::start();
    let fake = GraphFake::start_default();
    let env = Env::new().redis(&redis).graph(&fake).mailbox_route(
        &dovecot,
        "ops-mail",
        "start = \"days:1\"",
    );
    let before = now_rfc3339();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let app = env.spawn();
    let imported = eventually(Duration::from_secs(30), || async {
        (relay_results(&redis, "mailbox.imported").len() == raws.len()).then_some(())
    })
    .await;
    assert!(imported.is_some(), "{}", app.logs().join("\n"));
    drop(app);
    let own = fake.put_message(MAILBOX, "DingTalk Mail", json!({"subject": "typed by me"}));
    assert_eq!(fake.messages(MAILBOX, "DingTalk Mail").len(), 4);

    let (ok, out, err) = cli(&env, &["undo", "--route", "ops-mail", "--since", &before]);
    assert!(ok, "{err}\n{out}");
    let lines = item_lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("mail") && l.contains("would remove"))
    );

    let (ok, out, err) = cli(
        &env,
        &["undo", "--route", "ops-mail", "--since", &before, "--apply"],
    );
    assert!(ok, "{err}\n{out}");
    let left = fake.messages(MAILBOX, "DingTalk Mail");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["id"], own.as_str());
    assert_eq!(
        audit(&redis)
            .iter()
            .filter(|e| e["action"] == "undo.removed" && e["detail"]["kind"] == "mail")
            .count(),
        3
    );
    let (ok, out, _) = cli(
        &env,
        &["undo", "--route", "ops-mail", "--since", &before, "--apply"],
    );
    assert!(ok);
    assert!(item_lines(&out).is_empty(), "{out}");
    fake.assert_no_violations();
}

#[test]
fn undo_needs_redis_and_names_the_routes() {
    let (ok, _, err) = cli(
        &Env::new(),
        &["undo", "--route", "customs", "--since", "24h"],
    );
    assert!(!ok);
    assert!(err.contains("no route named `customs`"), "{err}");
    let env = Env::new().routes(&common::env::default_routes());
    let (ok, _, err) = cli(&env, &["undo", "--route", "customs", "--since", "24h"]);
    assert!(!ok);
    assert!(err.contains("memory store"), "{err}");
    let (ok, _, err) = cli(&env, &["undo", "--route", "customs", "--since", "soon"]);
    assert!(!ok);
    assert!(err.contains("--since"), "{err}");
}
