//! Removals DingTalk Mail → Outlook through the running binary (real Dovecot, the Graph
//! fake, Redis for the audit): without `allow_deletes` a mail expunged in DingTalk Mail
//! stays in Outlook; with it, exactly that mail's Outlook item goes to Deleted Items,
//! audited, and a `UIDVALIDITY` reset does not bring it back; the user's own Outlook mail
//! is never touched; a mail moved to another mapped folder moves in Outlook too.

use crate::common;

use std::time::{Duration, SystemTime};

use common::{
    RedisServer,
    dovecot::{Dovecot, Seed, USER, sample_mail},
    env::{Env, MAILBOX},
    eventually,
    graph_fake::GraphFake,
    inspect::relay_results,
};
use serde_json::{Value, json};

use crate::mailbox_sync::reset_uidvalidity;

const FOLDER: &str = "DingTalk Mail";

fn seeds(raws: &[Vec<u8>]) -> Vec<Seed> {
    raws.iter()
        .map(|raw| Seed {
            raw: raw.clone(),
            flags: "",
            received: SystemTime::now() - Duration::from_secs(300),
        })
        .collect()
}

/// The Outlook items with this `internetMessageId`, wherever they are.
fn items(fake: &GraphFake, imid: &str) -> Vec<Value> {
    fake.all_messages(MAILBOX)
        .into_iter()
        .filter(|m| m["internetMessageId"] == imid)
        .collect()
}

async fn wait_for(fake: &GraphFake, folder: &str, n: usize, within: Duration) -> bool {
    eventually(within, || async {
        (fake.messages(MAILBOX, folder).len() >= n).then_some(())
    })
    .await
    .is_some()
}

/// Expunges the mail with this `Message-ID` from `folder`, as a mail client deleting it.
fn expunge(dovecot: &Dovecot, folder: &str, imid: &str) {
    dovecot.doveadm(&[
        "expunge",
        "-u",
        USER,
        "mailbox",
        folder,
        "header",
        "Message-ID",
        imid,
    ]);
}

#[tokio::test]
async fn without_allow_deletes_a_mail_expunged_in_dingtalk_stays_in_outlook() {
    let raws: Vec<Vec<u8>> = (0..3).map(|n| sample_mail("keep", n, 300)).collect();
    let dovecot = Dovecot::start_with(|d| d.seed(USER, None, &seeds(&raws)));
    let fake = GraphFake::start_default();
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(&dovecot, "ops-mail", "start = \"days:1\"")
        .spawn();
    assert!(wait_for(&fake, FOLDER, 3, Duration::from_secs(20)).await);

    expunge(&dovecot, "INBOX", "<1.keep@dingbridge.test>");
    // A new mail makes sure a whole cycle ran after the expunge.
    dovecot
        .append("INBOX", &sample_mail("keep-fresh", 1, 300), &[])
        .await;
    assert!(
        wait_for(&fake, FOLDER, 4, Duration::from_secs(10)).await,
        "{}",
        app.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), 4);
    assert_eq!(items(&fake, "<1.keep@dingbridge.test>").len(), 1);
    assert!(fake.messages(MAILBOX, "deleteditems").is_empty());
    fake.assert_no_violations();
}

#[tokio::test]
async fn with_allow_deletes_an_expunged_mail_goes_to_deleted_items_once_and_stays_gone() {
    let raws: Vec<Vec<u8>> = (0..4).map(|n| sample_mail("del", n, 300)).collect();
    let own_raw = sample_mail("own", 1, 300);
    let mut all = raws.clone();
    all.push(own_raw);
    let mut dovecot = Dovecot::start_with(|d| d.seed(USER, None, &seeds(&all)));
    let redis = RedisServer::start();
    let fake = GraphFake::start_default();
    // Both mailboxes received this one: the user's own Outlook copy is mapped, not written.
    let own = fake.seed_message(
        MAILBOX,
        "inbox",
        json!({"subject": "Notice 1 (own)", "internetMessageId": "<1.own@dingbridge.test>"}),
    );
    // And one the bridge has nothing to do with.
    let unrelated = fake.seed_message(MAILBOX, "inbox", json!({"subject": "typed by me"}));
    let app = Env::new()
        .redis(&redis)
        .graph(&fake)
        .mailbox_route(
            &dovecot,
            "ops-mail",
            "start = \"days:1\"\nallow_deletes = true",
        )
        .spawn();
    let imported = eventually(Duration::from_secs(20), || async {
        (relay_results(&redis, "mailbox.imported").len() == all.len()).then_some(())
    })
    .await;
    assert!(imported.is_some(), "{}", app.logs().join("\n"));
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), raws.len());
    let gone_id = items(&fake, "<1.del@dingbridge.test>")[0]["id"]
        .as_str()
        .expect("id")
        .to_string();

    expunge(&dovecot, "INBOX", "<1.del@dingbridge.test>");
    expunge(&dovecot, "INBOX", "<1.own@dingbridge.test>");
    assert!(
        wait_for(&fake, "deleteditems", 1, Duration::from_secs(10)).await,
        "{}",
        app.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let deleted = fake.messages(MAILBOX, "deleteditems");
    assert_eq!(deleted.len(), 1, "exactly that one: {deleted:?}");
    assert_eq!(deleted[0]["id"], gone_id.as_str(), "moved, not copied");
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), raws.len() - 1);
    let inbox: Vec<Value> = fake.messages(MAILBOX, "inbox");
    assert!(
        inbox.iter().any(|m| m["id"] == own.as_str())
            && inbox.iter().any(|m| m["id"] == unrelated.as_str()),
        "the user's own mail stays where it was: {inbox:?}"
    );
    let audited = relay_results(&redis, "mailbox.deleted");
    assert_eq!(audited.len(), 1, "{audited:?}");
    let d = &audited[0]["detail"];
    assert_eq!(d["route"], "ops-mail");
    assert_eq!(d["folder"], "INBOX");
    assert_eq!(d["direction"], "to_outlook");
    assert_eq!(d["graph_id"], gone_id.as_str());
    assert!(d["uid"].as_u64().is_some(), "{d}");
    assert_eq!(relay_results(&redis, "mailbox.delete_skipped").len(), 1);
    let counted = app
        .metric("mailbox_messages_synced_total{route=\"ops-mail\",direction=\"to_outlook\",result=\"deleted\"}")
        .await;
    assert_eq!(counted, Some(1.0));

    // A rebuilt mailbox (new UIDVALIDITY) and the reconnection bring nothing back.
    reset_uidvalidity(&mut dovecot);
    dovecot
        .append("INBOX", &sample_mail("del-fresh", 1, 300), &[])
        .await;
    assert!(
        wait_for(&fake, FOLDER, raws.len(), Duration::from_secs(20)).await,
        "{}",
        app.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), raws.len());
    let again = items(&fake, "<1.del@dingbridge.test>");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        again[0]["id"],
        gone_id.as_str(),
        "still the one in Deleted Items"
    );
    for n in [0, 2, 3] {
        assert_eq!(items(&fake, &format!("<{n}.del@dingbridge.test>")).len(), 1);
    }
    assert_eq!(relay_results(&redis, "mailbox.deleted").len(), 1);
    assert_eq!(fake.messages(MAILBOX, "deleteditems").len(), 1);
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_mail_moved_to_another_mapped_folder_moves_in_outlook_without_a_copy_or_a_delete() {
    let dovecot = Dovecot::start_with(|d| {
        let inbox: Vec<Vec<u8>> = (0..2).map(|n| sample_mail("mv", n, 300)).collect();
        d.seed(USER, None, &seeds(&inbox));
        d.seed(
            USER,
            Some("Projects"),
            &seeds(&[sample_mail("proj", 1, 300)]),
        );
    });
    let redis = RedisServer::start();
    let fake = GraphFake::start_default();
    let app = Env::new()
        .redis(&redis)
        .graph(&fake)
        .mailbox_route(
            &dovecot,
            "ops-mail",
            "start = \"days:1\"\nallow_deletes = true\npoll_interval_secs = 1\nfolders = [{ dingtalk = \"INBOX\", outlook = \"DingTalk Mail\" }, { dingtalk = \"Projects\", outlook = \"DingTalk Projects\" }]",
        )
        .spawn();
    assert!(
        wait_for(&fake, FOLDER, 2, Duration::from_secs(20)).await
            && wait_for(&fake, "DingTalk Projects", 1, Duration::from_secs(5)).await,
        "{}",
        app.logs().join("\n")
    );
    let id = items(&fake, "<0.mv@dingbridge.test>")[0]["id"]
        .as_str()
        .expect("id")
        .to_string();

    dovecot.doveadm(&[
        "move",
        "-u",
        USER,
        "Projects",
        "mailbox",
        "INBOX",
        "header",
        "Message-ID",
        "<0.mv@dingbridge.test>",
    ]);
    assert!(
        wait_for(&fake, "DingTalk Projects", 2, Duration::from_secs(10)).await,
        "{}",
        app.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let moved = items(&fake, "<0.mv@dingbridge.test>");
    assert_eq!(moved.len(), 1, "no copy: {moved:?}");
    assert_eq!(moved[0]["id"], id.as_str(), "the same item");
    assert_eq!(
        fake.messages(MAILBOX, "DingTalk Projects")
            .iter()
            .filter(|m| m["id"] == id.as_str())
            .count(),
        1
    );
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), 1);
    assert!(fake.messages(MAILBOX, "deleteditems").is_empty());
    assert_eq!(relay_results(&redis, "mailbox.moved").len(), 1);
    assert!(relay_results(&redis, "mailbox.deleted").is_empty());
    // Still followed in its new folder: removed there, it goes to Deleted Items.
    expunge(&dovecot, "Projects", "<0.mv@dingbridge.test>");
    assert!(
        wait_for(&fake, "deleteditems", 1, Duration::from_secs(10)).await,
        "{}",
        app.logs().join("\n")
    );
    assert_eq!(fake.messages(MAILBOX, "deleteditems")[0]["id"], id.as_str());
    fake.assert_no_violations();
}
