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

/// A mail as Outlook hands it out with `$value`.
fn outlook_mime(imid: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Client <client@partner.example>\r\nTo: ops@contoso.com\r\nSubject: {subject}\r\nDate: Tue, 6 Jan 2026 09:00:00 +0000\r\nMessage-ID: {imid}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nA change from the client.\r\n"
    )
    .into_bytes()
}

/// Delivers a mail into the route's Outlook folder; answers its id.
fn deliver(fake: &GraphFake, imid: &str, received: chrono::DateTime<chrono::Utc>) -> String {
    let subject = format!("Change {imid}");
    fake.put_mime_message(
        MAILBOX,
        "DingTalk Mail",
        json!({
            "subject": subject, "internetMessageId": imid, "isRead": false,
            "receivedDateTime": received.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "from": {"emailAddress": {"address": "client@partner.example"}},
        }),
        &outlook_mime(imid, &subject),
    )
}

/// The DingTalk INBOX now: (Message-ID, read) of every message, sorted.
async fn dingtalk_inbox(dovecot: &Dovecot) -> Vec<(String, bool)> {
    let mut c = dovecot.client().await;
    c.examine(&dingbridge::mail::MailboxName::from_display("INBOX"))
        .await
        .expect("EXAMINE");
    let uids = c.uid_search("ALL").await.expect("SEARCH");
    let headers = c.fetch_headers(&uids).await.expect("FETCH headers");
    let metas = c.fetch_meta(&uids).await.expect("FETCH flags");
    c.logout().await;
    let mut out: Vec<(String, bool)> = headers
        .iter()
        .map(|(uid, h)| {
            let mid = dingbridge::mail::message::message_id(h).unwrap_or_default();
            let seen = metas.iter().any(|m| m.uid == *uid && m.seen());
            (mid, seen)
        })
        .collect();
    out.sort();
    out
}

/// The `internetMessageId`s in the route's Outlook folder, sorted.
fn outlook_folder(fake: &GraphFake) -> Vec<String> {
    let mut ids: Vec<String> = fake
        .messages(MAILBOX, "DingTalk Mail")
        .iter()
        .filter_map(|m| m["internetMessageId"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_of_a_both_route_removes_what_the_bridge_wrote_on_either_side_and_nothing_else() {
    let own_dingtalk = "<1.own@dingbridge.test>";
    let dovecot = Dovecot::start_with(|d| {
        d.seed(
            USER,
            None,
            &[Seed {
                raw: sample_mail("own", 1, 200),
                flags: "",
                received: SystemTime::now() - Duration::from_secs(600),
            }],
        );
    });
    let redis = RedisServer::start();
    let fake = GraphFake::start_default();
    let env = Env::new().redis(&redis).graph(&fake).mailbox_route(
        &dovecot,
        "ops-mail",
        "direction = \"both\"\npoll_interval_secs = 1\nallow_deletes = true",
    );
    let before = now_rfc3339();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let app = env.spawn();
    let first_round = eventually(Duration::from_secs(15), || async {
        (!fake.requests_to("/messages/delta").is_empty()).then_some(())
    })
    .await;
    assert!(first_round.is_some(), "{}", app.logs().join("\n"));

    // The user's own Outlook mail, received before the route started: never relayed.
    let own_outlook = "<own.outlook@partner.example>";
    deliver(
        &fake,
        own_outlook,
        chrono::Utc::now() - chrono::Duration::hours(1),
    );
    let from_outlook: Vec<String> = (0..3)
        .map(|n| format!("<out.{n}@partner.example>"))
        .collect();
    let originals: Vec<String> = from_outlook
        .iter()
        .map(|imid| deliver(&fake, imid, chrono::Utc::now()))
        .collect();
    for n in 0..2 {
        dovecot
            .append("INBOX", &sample_mail("dt", n, 300), &[])
            .await;
    }
    let from_dingtalk = ["<0.dt@dingbridge.test>", "<1.dt@dingbridge.test>"];
    let count = |action: &str, how: &[&str]| {
        relay_results(&redis, action)
            .iter()
            .filter(|e| how.contains(&e["detail"]["how"].as_str().unwrap_or("")))
            .count()
    };
    let synced = eventually(Duration::from_secs(30), || async {
        (count("mailbox.appended", &["appended"]) == 3
            && count("mailbox.imported", &["created", "completed"]) == 2)
            .then_some(())
    })
    .await;
    assert!(synced.is_some(), "{}", app.logs().join("\n"));

    // Reading the first DingTalk mail's copy in Outlook marks the original read.
    let copy = fake
        .messages(MAILBOX, "DingTalk Mail")
        .into_iter()
        .find(|m| m["internetMessageId"] == from_dingtalk[0])
        .and_then(|m| m["id"].as_str().map(str::to_string))
        .expect("the imported copy");
    fake.update_message(MAILBOX, &copy, json!({"isRead": true}));
    let seen = eventually(Duration::from_secs(20), || async {
        dingtalk_inbox(&dovecot)
            .await
            .contains(&(from_dingtalk[0].to_string(), true))
            .then_some(())
    })
    .await;
    assert!(seen.is_some(), "{}", app.logs().join("\n"));
    let mut dingtalk_before: Vec<String> = from_outlook.clone();
    dingtalk_before.extend([own_dingtalk.to_string()]);
    dingtalk_before.extend(from_dingtalk.iter().map(|s| s.to_string()));
    dingtalk_before.sort();
    let mut expected_left: Vec<(String, bool)> = [own_dingtalk, from_dingtalk[0], from_dingtalk[1]]
        .iter()
        .map(|m| (m.to_string(), false))
        .collect();
    expected_left.sort();
    let mut outlook_left: Vec<String> = from_outlook.clone();
    outlook_left.push(own_outlook.to_string());
    outlook_left.sort();

    // Dry run, with the sync still running: the five items, both sides, nothing changed.
    let (ok, out, err) = cli(&env, &["undo", "--route", "ops-mail", "--since", &before]);
    assert!(ok, "{err}\n{out}");
    let lines = item_lines(&out);
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines.iter().all(|l| l.contains("would remove")), "{out}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("mail ")).count(),
        2,
        "{out}"
    );
    for imid in &from_outlook {
        assert!(
            lines.iter().any(|l| l.starts_with("appended")
                && l.contains("DingTalk Mail INBOX UID")
                && l.contains(imid.as_str())
                && l.contains(&format!("Change {imid}"))),
            "{imid}: {out}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Notice 0 (dt)") && l.contains("would be restored to unread")),
        "{out}"
    );
    assert!(
        !out.contains("own"),
        "the user's own mail is not listed: {out}"
    );
    assert!(
        summary(&out).contains("(2 in Outlook, 3 in DingTalk Mail)"),
        "{out}"
    );
    let names: Vec<String> = dingtalk_inbox(&dovecot)
        .await
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(names, dingtalk_before);
    assert_eq!(fake.messages(MAILBOX, "DingTalk Mail").len(), 6);

    // Apply: exactly those go, on both sides; the read flag goes back.
    let (ok, out, err) = cli(
        &env,
        &["undo", "--route", "ops-mail", "--since", &before, "--apply"],
    );
    assert!(ok, "{err}\n{out}");
    assert_eq!(
        item_lines(&out)
            .iter()
            .filter(|l| l.contains("  removed"))
            .count(),
        5,
        "{out}"
    );
    assert_eq!(dingtalk_inbox(&dovecot).await, expected_left, "{out}");
    assert_eq!(outlook_folder(&fake), outlook_left, "{out}");
    let removed = removed_entries(&redis);
    assert_eq!(removed.len(), 5, "{removed:?}");
    let side = |s: &str| removed.iter().filter(|e| e["detail"]["side"] == s).count();
    assert_eq!((side("dingtalk"), side("outlook")), (3, 2), "{removed:?}");
    assert_eq!(relay_results(&redis, "undo.flag_restored").len(), 1);

    // The sync keeps running and does not fight it: an Outlook original that changes is
    // not appended again, the expunged copies delete no Outlook original, the restored
    // flag stays.
    fake.update_message(MAILBOX, &originals[1], json!({"isRead": true}));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        dingtalk_inbox(&dovecot).await,
        expected_left,
        "{}",
        app.logs().join("\n")
    );
    assert_eq!(outlook_folder(&fake), outlook_left);
    assert_eq!(count("mailbox.appended", &["appended"]), 3);

    // Twice: nothing to do, and it says so.
    let (ok, out, err) = cli(
        &env,
        &["undo", "--route", "ops-mail", "--since", &before, "--apply"],
    );
    assert!(ok, "{err}\n{out}");
    assert!(item_lines(&out).is_empty(), "{out}");
    assert!(out.contains("note: nothing to undo"), "{out}");
    assert!(summary(&out).contains("0 removed"), "{out}");
    assert!(summary(&out).contains("5 undone before"), "{out}");
    assert_eq!(removed_entries(&redis).len(), 5);

    // After the writes: nothing.
    let (ok, out, _) = cli(
        &env,
        &["undo", "--route", "ops-mail", "--since", &now_rfc3339()],
    );
    assert!(ok);
    assert!(item_lines(&out).is_empty(), "{out}");
    assert!(summary(&out).contains(": 0 item(s)"), "{out}");
    drop(app);
    fake.assert_no_violations();
}
