//! `dingbridge undo` on the DingTalk Mail side of a mailbox route: the Outlook mails the
//! bridge `APPEND`ed into DingTalk Mail, the mails `dingtalk.send_mail` sent, and the
//! read flags the read-state relay changed (on either side) of the mails whose copy undo
//! removes.
//!
//! An appended mail is found through its `mailbox.appended` audit entry (`how` =
//! `appended`: a copy that was there already is the user's, never removed) and kept only
//! while its id pair is still stored; the pair names its place (folder, `UIDVALIDITY`,
//! UID). In that folder under that `UIDVALIDITY` the UID is the message (its `Message-ID`
//! must still be the audited one); under another `UIDVALIDITY` it is found by
//! `Message-ID`, and only when exactly one message there carries it and no other pair
//! claims it. Removal is `\Deleted` + `UID EXPUNGE` of exactly that UID; then the pair is
//! forgotten and `undo.removed` (side `dingtalk`) audited. A store key
//! ([`state::undone_key`]) written before the expunge keeps a running sync from
//! appending the Outlook original again.
//!
//! Read flags: the relay audits each change with the state recorded before it
//! (`previous`). A flag is restored only when the bridge changed it since the time, the
//! first such change recorded its previous value, nobody changed that side's flag after
//! it (no relay the other way) and it still holds what the bridge last wrote.
//!
//! Mails `dingtalk.send_mail` sent (`mail.sent`) are listed, never removed: SMTP cannot
//! call a mail back, and the Sent copy is the mailbox's record that it went out (and
//! what a retry with the same `Idempotency-Key` is checked against).

use std::collections::HashSet;

use serde_json::json;

use super::{outlook, state};
use crate::{
    graph::GraphClient,
    mail::{ImapClient, ImapError, ImapSettings, MailboxName, message},
    store::{AuditEntry, Side, Store, StoreError},
};

/// An Outlook mail the bridge appended into DingTalk Mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// When it was appended (Unix ms).
    pub at_ms: i64,
    /// The Outlook original's id.
    pub graph_id: String,
    /// Its `Message-ID`, when it has one.
    pub message_id: Option<String>,
    /// Its place as the id pair stores it ([`state::pair_left`]).
    pub left: String,
}

/// A mail `dingtalk.send_mail` sent from the route's mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMail {
    /// When it was sent (Unix ms).
    pub at_ms: i64,
    /// Its `Message-ID`.
    pub message_id: String,
    /// The Sent folder its copy went to, when one was saved.
    pub sent_folder: Option<String>,
}

/// What the audit trail says the bridge wrote in DingTalk Mail.
#[derive(Debug, Default)]
pub struct Found {
    /// Appended mails still paired, oldest first.
    pub appended: Vec<Appended>,
    /// Sent mails, oldest first.
    pub sent: Vec<SentMail>,
    /// Appended mails undone before, or whose pair the sync forgot since.
    pub already: usize,
}

/// The appended mail an audit entry records for `route`, as (Graph id, Message-ID).
fn appended_by(e: &AuditEntry, route: &str) -> Option<(String, Option<String>)> {
    let d = &e.detail;
    if e.action != "mailbox.appended"
        || d["route"].as_str() != Some(route)
        || d["how"].as_str() != Some("appended")
    {
        return None;
    }
    Some((
        d["graph_id"].as_str()?.to_string(),
        d["message_id"].as_str().map(str::to_string),
    ))
}

/// Finds what `route` wrote in DingTalk Mail since `since_ms` in `entries` (the audit
/// trail, newest first).
pub async fn find(
    store: &dyn Store,
    entries: &[AuditEntry],
    route: &str,
    since_ms: i64,
) -> Result<Found, StoreError> {
    let undone: HashSet<&str> = entries
        .iter()
        .filter(|e| {
            e.action == "undo.removed"
                && e.detail["route"] == route
                && e.detail["side"] == "dingtalk"
        })
        .filter_map(|e| e.detail["graph_id"].as_str())
        .collect();
    let mut found = Found::default();
    let mut seen = HashSet::new();
    let ns = state::pair_ns(route);
    for e in entries.iter().rev().filter(|e| e.at_ms >= since_ms) {
        if e.action == "mail.sent" && e.detail["route"] == route {
            if let Some(mid) = e.detail["message_id"].as_str() {
                found.sent.push(SentMail {
                    at_ms: e.at_ms,
                    message_id: mid.to_string(),
                    sent_folder: e.detail["sent_folder"].as_str().map(str::to_string),
                });
            }
            continue;
        }
        let Some((graph_id, message_id)) = appended_by(e, route) else {
            continue;
        };
        if !seen.insert(graph_id.clone()) {
            continue;
        }
        let pair = store.map_get(&ns, Side::Right, &graph_id).await?;
        match pair {
            Some(left) if !undone.contains(graph_id.as_str()) => found.appended.push(Appended {
                at_ms: e.at_ms,
                graph_id,
                message_id,
                left,
            }),
            _ => found.already += 1,
        }
    }
    Ok(found)
}

/// The route's IMAP connection, opened on first use (a route with nothing to do in
/// DingTalk Mail never connects).
pub struct LazyImap {
    settings: ImapSettings,
    client: Option<ImapClient>,
}

impl LazyImap {
    /// Connects with `settings` when first needed.
    pub fn new(settings: ImapSettings) -> LazyImap {
        LazyImap {
            settings,
            client: None,
        }
    }

    async fn get(&mut self) -> Result<&mut ImapClient, ImapError> {
        if self.client.is_none() {
            self.client = Some(ImapClient::connect(&self.settings).await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| ImapError::Usage("no IMAP connection".into()))
    }

    /// Logs out, when connected.
    pub async fn close(self) {
        if let Some(c) = self.client {
            c.logout().await;
        }
    }
}

/// What became of one appended mail.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Dry run: found where the pair says, would be removed.
    WouldRemove,
    /// Removed (and its pair forgotten).
    Removed,
    /// No longer in DingTalk Mail; its pair is forgotten (when applying).
    Gone,
    /// Kept, for this reason (it cannot be told apart from the user's mail).
    Kept(String),
    /// Reading or removing it failed.
    Failed(String),
}

/// How an appended mail shows in the listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shown {
    /// The folder.
    pub folder: String,
    /// Its UID, when found.
    pub uid: Option<u32>,
    /// Its `Subject`, decoded.
    pub subject: Option<String>,
    /// Its `Message-ID`.
    pub message_id: Option<String>,
}

/// Where `a` is in DingTalk Mail now, or why it is not removed.
enum Located {
    At(u32, Vec<u8>),
    Gone,
    Kept(String),
}

fn same_message_id(a: &str, b: &str) -> bool {
    let bare = |s: &str| {
        s.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    };
    bare(a) == bare(b)
}

/// Finds `a` in DingTalk Mail and (with `apply`) removes it, forgets its pair and audits.
pub async fn undo_appended(
    store: &dyn Store,
    imap: &mut LazyImap,
    route: &str,
    a: &Appended,
    apply: bool,
) -> (Outcome, Shown) {
    let mut shown = Shown {
        message_id: a.message_id.clone(),
        ..Shown::default()
    };
    let Some((folder, validity, uid)) = outlook::parse_left(&a.left) else {
        return (
            Outcome::Failed(format!("unreadable pair `{}`", a.left)),
            shown,
        );
    };
    shown.folder = folder.to_string();
    let client = match imap.get().await {
        Ok(c) => c,
        Err(e) => return (Outcome::Failed(format!("DingTalk Mail: {e}")), shown),
    };
    let located = match locate(store, client, route, a, folder, validity, uid).await {
        Ok(l) => l,
        Err(e) => return (Outcome::Failed(e), shown),
    };
    let (uid, header) = match located {
        Located::At(uid, header) => (uid, header),
        Located::Gone => {
            if apply && let Err(e) = forget(store, route, a, None, "already_gone").await {
                return (Outcome::Failed(format!("store: {e}")), shown);
            }
            return (Outcome::Gone, shown);
        }
        Located::Kept(why) => return (Outcome::Kept(why), shown),
    };
    shown.uid = Some(uid);
    shown.subject = subject_of(&header);
    if shown.message_id.is_none() {
        shown.message_id = message::message_id(&header);
    }
    if !apply {
        return (Outcome::WouldRemove, shown);
    }
    if let Err(e) = store
        .kv_put(&state::undone_key(route, &a.graph_id), "undo", None)
        .await
    {
        return (Outcome::Failed(format!("store: {e}")), shown);
    }
    if let Err(e) = client.store_flags(&[uid], true, &["\\Deleted"]).await {
        return (
            Outcome::Failed(format!("flagging it \\Deleted: {e}")),
            shown,
        );
    }
    match client.expunge_uids(&[uid]).await {
        Ok(true) => {}
        Ok(false) => {
            // Without UID EXPUNGE a plain EXPUNGE would take the user's other \Deleted
            // mail too: left as it was.
            let _ = client.store_flags(&[uid], false, &["\\Deleted"]).await;
            return (
                Outcome::Failed(
                    "not expunged: the server has no UID EXPUNGE and other messages of the folder are marked \\Deleted".into(),
                ),
                shown,
            );
        }
        Err(e) => return (Outcome::Failed(format!("expunging it: {e}")), shown),
    }
    match forget(store, route, a, Some(uid), "removed").await {
        Ok(()) => (Outcome::Removed, shown),
        Err(e) => (
            Outcome::Failed(format!("removed, but the store failed: {e}")),
            shown,
        ),
    }
}

/// Opens the pair's folder and finds the message (see the module doc).
async fn locate(
    store: &dyn Store,
    client: &mut ImapClient,
    route: &str,
    a: &Appended,
    folder: &str,
    validity: u32,
    uid: u32,
) -> Result<Located, String> {
    let opened = client
        .select(&MailboxName::from_display(folder))
        .await
        .map_err(|e| format!("opening {folder}: {e}"))?;
    if opened.uid_validity == validity {
        let headers = client
            .fetch_headers(&[uid])
            .await
            .map_err(|e| format!("reading it: {e}"))?;
        let Some((_, header)) = headers.into_iter().next() else {
            return Ok(Located::Gone);
        };
        if let Some(want) = &a.message_id {
            match message::message_id(&header) {
                Some(have) if same_message_id(&have, want) => {}
                have => {
                    return Ok(Located::Kept(format!(
                        "UID {uid} carries Message-ID {}, not {want}",
                        have.as_deref().unwrap_or("(none)")
                    )));
                }
            }
        }
        return Ok(Located::At(uid, header));
    }
    let Some(want) = &a.message_id else {
        return Ok(Located::Kept(format!(
            "{folder}'s UIDVALIDITY changed and the mail has no Message-ID to find it by"
        )));
    };
    let found = client
        .search_message_id(want)
        .await
        .map_err(|e| format!("searching it: {e}"))?;
    let [only] = found.as_slice() else {
        return Ok(match found.len() {
            0 => Located::Gone,
            n => Located::Kept(format!(
                "{folder}'s UIDVALIDITY changed and {n} messages carry its Message-ID"
            )),
        });
    };
    let left = state::pair_left(folder, opened.uid_validity, *only);
    let other = store
        .map_get(&state::pair_ns(route), Side::Left, &left)
        .await
        .map_err(|e| format!("store: {e}"))?;
    if other.as_deref().is_some_and(|g| g != a.graph_id) {
        return Ok(Located::Kept(format!(
            "{folder}'s UIDVALIDITY changed and UID {only} is paired with another Outlook item"
        )));
    }
    let headers = client
        .fetch_headers(&[*only])
        .await
        .map_err(|e| format!("reading it: {e}"))?;
    Ok(match headers.into_iter().next() {
        Some((uid, header)) => Located::At(uid, header),
        None => Located::Gone,
    })
}

/// The decoded `Subject` of a header block.
fn subject_of(header: &[u8]) -> Option<String> {
    let mut raw = header.to_vec();
    raw.extend_from_slice(b"\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(&raw)
        .and_then(|m| m.subject().map(str::to_string))
}

/// Audits the removal and forgets the pair (and its read state).
async fn forget(
    store: &dyn Store,
    route: &str,
    a: &Appended,
    uid: Option<u32>,
    result: &str,
) -> Result<(), StoreError> {
    let (folder, validity, pair_uid) = outlook::parse_left(&a.left).unwrap_or(("", 0, 0));
    store
        .audit_append(&AuditEntry::now(
            "undo.removed",
            json!({
                "route": route, "side": "dingtalk", "kind": "appended_mail",
                "folder": folder, "uid_validity": validity, "uid": uid.unwrap_or(pair_uid),
                "graph_id": a.graph_id, "message_id": a.message_id,
                "written_at_ms": a.at_ms, "result": result,
            }),
        ))
        .await?;
    store
        .map_delete(&state::pair_ns(route), Side::Left, &a.left)
        .await?;
    store.kv_delete(&state::read_key(route, &a.left)).await?;
    Ok(())
}

/// The side whose read flag the bridge wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagSide {
    /// `\Seen` of the DingTalk message (relays `to_dingtalk`).
    DingTalk,
    /// `isRead` of the Outlook item (relays `to_outlook`).
    Outlook,
}

impl FlagSide {
    fn direction(self) -> &'static str {
        match self {
            FlagSide::DingTalk => "to_dingtalk",
            FlagSide::Outlook => "to_outlook",
        }
    }

    /// Its name in the output and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagSide::DingTalk => "dingtalk",
            FlagSide::Outlook => "outlook",
        }
    }
}

/// What to do about the read flag of one pair's remaining mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagPlan {
    /// The bridge did not change it since the time (or changed it back).
    Unchanged,
    /// Put `to` back, if it still holds `written` (what the bridge last wrote).
    Restore {
        /// The value before the bridge's first change.
        to: bool,
        /// The value the bridge wrote last.
        written: bool,
    },
    /// Changed by the bridge, but the value before was not recorded (a change relayed
    /// by an older version): not restored.
    NotRecorded,
    /// Changed on that side since, by someone else (relayed the other way): theirs.
    ChangedSince,
}

/// The plan for the read flag on `side` of the pair (`graph_id`, `left`) from the audit
/// trail `entries` (newest first) since `since_ms`.
pub fn flag_plan(
    entries: &[AuditEntry],
    route: &str,
    since_ms: i64,
    graph_id: &str,
    left: &str,
    side: FlagSide,
) -> FlagPlan {
    let Some((folder, validity, uid)) = outlook::parse_left(left) else {
        return FlagPlan::Unchanged;
    };
    let changes: Vec<&AuditEntry> = entries
        .iter()
        .rev()
        .filter(|e| e.at_ms >= since_ms && e.action == "mailbox.read_synced")
        .filter(|e| {
            let d = &e.detail;
            d["route"] == route
                && d["graph_id"] == graph_id
                && d["folder"] == folder
                && d["uid"] == uid
                && (d["uid_validity"].is_null() || d["uid_validity"] == validity)
        })
        .collect();
    let ours = |e: &&AuditEntry| e.detail["direction"] == side.direction();
    let Some(first) = changes.iter().position(ours) else {
        return FlagPlan::Unchanged;
    };
    if changes[first..].iter().any(|e| !ours(e)) {
        return FlagPlan::ChangedSince;
    }
    let Some(to) = changes[first].detail["previous"].as_bool() else {
        return FlagPlan::NotRecorded;
    };
    let written = changes
        .last()
        .and_then(|e| e.detail["read"].as_bool())
        .unwrap_or(to);
    if written == to {
        FlagPlan::Unchanged
    } else {
        FlagPlan::Restore { to, written }
    }
}

/// The listing's words for a plan (`None`: nothing to say).
pub fn describe(plan: FlagPlan, side: FlagSide, apply: bool) -> Option<String> {
    let on = match side {
        FlagSide::DingTalk => "the DingTalk original's \\Seen",
        FlagSide::Outlook => "the Outlook original's isRead",
    };
    let state = |read: bool| if read { "read" } else { "unread" };
    match plan {
        FlagPlan::Unchanged => None,
        FlagPlan::Restore { to, .. } if apply => {
            Some(format!("read flag: {on} restored to {}", state(to)))
        }
        FlagPlan::Restore { to, .. } => Some(format!(
            "read flag: {on} would be restored to {}",
            state(to)
        )),
        FlagPlan::NotRecorded => Some(format!(
            "read flag: {on} was changed by the bridge before previous values were recorded: not restored"
        )),
        FlagPlan::ChangedSince => {
            Some(format!("read flag: {on} changed there since: not restored"))
        }
    }
}

/// Carries out a [`FlagPlan::Restore`] on the pair's remaining mail (its pair is
/// forgotten by then, so nothing relays the restored flag), and audits it. Answers the
/// plan as it turned out ([`FlagPlan::ChangedSince`] when the flag no longer holds what
/// the bridge wrote).
#[allow(clippy::too_many_arguments)]
pub async fn restore_flag(
    store: &dyn Store,
    imap: &mut LazyImap,
    graph: &GraphClient,
    mailbox: &str,
    route: &str,
    graph_id: &str,
    left: &str,
    side: FlagSide,
    plan: FlagPlan,
) -> Result<FlagPlan, String> {
    let FlagPlan::Restore { to, written } = plan else {
        return Ok(plan);
    };
    let (folder, validity, uid) =
        outlook::parse_left(left).ok_or_else(|| format!("unreadable pair `{left}`"))?;
    match side {
        FlagSide::DingTalk => {
            let client = imap
                .get()
                .await
                .map_err(|e| format!("DingTalk Mail: {e}"))?;
            let opened = client
                .select(&MailboxName::from_display(folder))
                .await
                .map_err(|e| format!("opening {folder}: {e}"))?;
            if opened.uid_validity != validity {
                return Ok(FlagPlan::ChangedSince);
            }
            let meta = client
                .fetch_meta(&[uid])
                .await
                .map_err(|e| format!("reading its flags: {e}"))?;
            match meta.first() {
                Some(m) if m.seen() == written => {}
                _ => return Ok(FlagPlan::ChangedSince),
            }
            client
                .store_flags(&[uid], to, &["\\Seen"])
                .await
                .map_err(|e| format!("storing \\Seen: {e}"))?;
        }
        FlagSide::Outlook => {
            match graph.message_state(mailbox, graph_id).await {
                Ok(m) if m.is_read == written => {}
                Ok(_) => return Ok(FlagPlan::ChangedSince),
                Err(e) if e.is_not_found() => return Ok(FlagPlan::ChangedSince),
                Err(e) => return Err(format!("reading it: {e}")),
            }
            graph
                .set_read(mailbox, graph_id, to)
                .await
                .map_err(|e| format!("setting isRead: {e}"))?;
        }
    }
    store
        .audit_append(&AuditEntry::now(
            "undo.flag_restored",
            json!({
                "route": route, "side": side.as_str(), "folder": folder,
                "uid_validity": validity, "uid": uid, "graph_id": graph_id, "read": to,
            }),
        ))
        .await
        .map_err(|e| format!("store: {e}"))?;
    store
        .kv_delete(&state::read_key(route, left))
        .await
        .map_err(|e| format!("store: {e}"))?;
    Ok(plan)
}

/// What undo needs to settle the read flags of one run.
pub struct Flags<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// Graph.
    pub graph: &'a GraphClient,
    /// The route's Outlook mailbox.
    pub mailbox: &'a str,
    /// The route.
    pub route: &'a str,
    /// The audit trail, newest first.
    pub entries: &'a [AuditEntry],
    /// `--since`.
    pub since_ms: i64,
    /// Whether to change anything.
    pub apply: bool,
}

impl Flags<'_> {
    /// The read flag on `side` of the pair (`graph_id`, `left`) whose other mail undo
    /// removed (`done`): restored when applying and the plan says so. Answers the
    /// listing's note and, on failure, the error.
    pub async fn settle(
        &self,
        imap: Option<&mut LazyImap>,
        graph_id: &str,
        left: &str,
        side: FlagSide,
        done: bool,
    ) -> (Option<String>, Option<String>) {
        let plan = flag_plan(
            self.entries,
            self.route,
            self.since_ms,
            graph_id,
            left,
            side,
        );
        let plan = match imap {
            Some(imap) if self.apply && done => {
                match restore_flag(
                    self.store,
                    imap,
                    self.graph,
                    self.mailbox,
                    self.route,
                    graph_id,
                    left,
                    side,
                    plan,
                )
                .await
                {
                    Ok(p) => p,
                    Err(e) => return (Some(format!("read flag NOT restored ({e})")), Some(e)),
                }
            }
            _ => plan,
        };
        (describe(plan, side, self.apply), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn entry(at_ms: i64, action: &str, detail: Value) -> AuditEntry {
        AuditEntry {
            at_ms,
            action: action.into(),
            detail,
        }
    }

    fn read(at: i64, direction: &str, read: bool, previous: Option<bool>) -> AuditEntry {
        entry(
            at,
            "mailbox.read_synced",
            json!({"route": "r", "direction": direction, "folder": "INBOX",
                "uid_validity": 7, "uid": 3, "graph_id": "G", "read": read,
                "previous": previous}),
        )
    }

    /// Entries oldest first in, newest first out (as the trail answers).
    fn trail(mut v: Vec<AuditEntry>) -> Vec<AuditEntry> {
        v.reverse();
        v
    }

    #[test]
    fn only_mails_the_bridge_appended_count_not_copies_it_mapped() {
        let appended = entry(
            1,
            "mailbox.appended",
            json!({"route": "r", "how": "appended", "graph_id": "G", "message_id": "<m@x>"}),
        );
        assert_eq!(
            appended_by(&appended, "r"),
            Some(("G".into(), Some("<m@x>".into())))
        );
        assert_eq!(appended_by(&appended, "other"), None);
        let mut matched = appended.clone();
        matched.detail["how"] = json!("matched");
        assert_eq!(appended_by(&matched, "r"), None);
    }

    #[test]
    fn a_flag_is_restored_to_the_value_before_the_bridges_first_change() {
        let left = "INBOX:7:3";
        let plan = |v: Vec<AuditEntry>, side| flag_plan(&trail(v), "r", 0, "G", left, side);
        assert_eq!(
            plan(
                vec![read(1, "to_dingtalk", true, Some(false))],
                FlagSide::DingTalk
            ),
            FlagPlan::Restore {
                to: false,
                written: true
            }
        );
        assert_eq!(
            plan(
                vec![read(1, "to_dingtalk", true, Some(false))],
                FlagSide::Outlook
            ),
            FlagPlan::Unchanged,
            "the other side was not written"
        );
        assert_eq!(
            plan(
                vec![
                    read(1, "to_dingtalk", true, Some(false)),
                    read(2, "to_dingtalk", false, Some(true)),
                ],
                FlagSide::DingTalk
            ),
            FlagPlan::Unchanged,
            "changed back"
        );
        assert_eq!(
            plan(
                vec![
                    read(1, "to_dingtalk", true, Some(false)),
                    read(2, "to_outlook", false, Some(true)),
                ],
                FlagSide::DingTalk
            ),
            FlagPlan::ChangedSince,
            "the user changed it in DingTalk Mail afterwards"
        );
        assert_eq!(
            plan(vec![read(1, "to_dingtalk", true, None)], FlagSide::DingTalk),
            FlagPlan::NotRecorded
        );
        let before = flag_plan(
            &[read(1, "to_dingtalk", true, Some(false))],
            "r",
            2,
            "G",
            left,
            FlagSide::DingTalk,
        );
        assert_eq!(before, FlagPlan::Unchanged, "before --since");
        let elsewhere = flag_plan(
            &[read(1, "to_dingtalk", true, Some(false))],
            "r",
            0,
            "G",
            "INBOX:8:3",
            FlagSide::DingTalk,
        );
        assert_eq!(elsewhere, FlagPlan::Unchanged, "another UIDVALIDITY");
    }

    #[tokio::test]
    async fn sent_mails_are_listed_and_appended_ones_only_while_paired_and_not_undone() {
        let store = crate::store::memory::MemoryStore::new(0);
        let ns = state::pair_ns("r");
        store.map_put(&ns, "INBOX:7:1", "G1").await.expect("pair");
        store.map_put(&ns, "INBOX:7:3", "G3").await.expect("pair");
        let appended = |at, g: &str| {
            entry(
                at,
                "mailbox.appended",
                json!({"route": "r", "how": "appended", "graph_id": g, "message_id": "<m@x>"}),
            )
        };
        let entries = trail(vec![
            appended(1, "G0"),
            appended(5, "G1"),
            appended(6, "G2"),
            appended(7, "G3"),
            entry(
                8,
                "mail.sent",
                json!({"route": "r", "message_id": "<s@x>", "sent_folder": "Sent"}),
            ),
            entry(
                9,
                "mail.sent",
                json!({"route": "other", "message_id": "<o@x>"}),
            ),
            entry(
                10,
                "undo.removed",
                json!({"route": "r", "side": "dingtalk", "graph_id": "G3"}),
            ),
        ]);
        let found = find(&store, &entries, "r", 2).await.expect("find");
        let ids: Vec<&str> = found.appended.iter().map(|a| a.graph_id.as_str()).collect();
        assert_eq!(ids, vec!["G1"], "G0 before --since, G2 unpaired, G3 undone");
        assert_eq!(found.appended[0].left, "INBOX:7:1");
        assert_eq!(found.already, 2);
        assert_eq!(found.sent.len(), 1);
        assert_eq!(found.sent[0].message_id, "<s@x>");
    }

    #[test]
    fn message_ids_compare_with_or_without_brackets() {
        assert!(same_message_id("<a@b>", " a@b "));
        assert!(!same_message_id("<a@b>", "<a@c>"));
    }

    #[test]
    fn subjects_are_decoded() {
        let h = b"Subject: =?UTF-8?B?57Sn5oCl5Y+Y5pu0?=\r\nMessage-ID: <a@b>\r\n";
        assert_eq!(subject_of(h).as_deref(), Some("紧急变更"));
        assert_eq!(subject_of(b"Message-ID: <a@b>\r\n"), None);
    }
}
