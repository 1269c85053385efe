//! Outlook → DingTalk Mail, for routes going `to_dingtalk` or `both`: each cycle, per
//! mapped folder, after the DingTalk side is synced, one round of the Outlook folder's
//! message delta ([`outlook::OutlookDelta`]) on the route's one IMAP connection.
//!
//! - A new message ([`outlook::verdict`]) that does not carry the bridge's origin marker
//!   (mail the bridge wrote into Outlook never goes back) is looked for in the DingTalk
//!   folder by `Message-ID` first: a copy there without a pair (an APPEND before a
//!   crash, or both mailboxes got the mail) is mapped, not appended again. Otherwise its
//!   MIME (`$value`) is `APPEND`ed with `\Seen` as in Outlook and the receipt time as
//!   internal date, and its UID recognised (`APPENDUID`, or the newest unmapped UID
//!   with its `Message-ID`). The id pair and the read state are stored right after:
//!   the DingTalk → Outlook side finds the pair and skips the UID; had the process died
//!   before, it finds the Outlook original by `internetMessageId` and maps it (no copy).
//! - A mapped message whose `isRead` differs from the recorded read state gets `\Seen`
//!   stored or removed.
//! - `@removed` (deleted, or moved out of the folder) for a mapped message: with
//!   `allow_deletes`, that one message is flagged `\Deleted` and expunged, audited, its
//!   pair forgotten; without, nothing happens.
//!
//! The round's `@odata.deltaLink` is stored when the round is over; a round cut short is
//! read again (everything in it is mapped by then). A delta link Graph no longer knows
//! (410) starts a new round from the route's start.

use std::collections::HashSet;

use chrono::Utc;
use serde_json::json;

use super::{FolderRun, RouteSync, SyncError, outlook, state};
use crate::{
    graph::{DeltaItem, DeltaMessage},
    mail::{FolderState, ImapClient, ImapError},
    metrics,
    store::{Side, StoreError},
};

/// The metric label of this direction.
const DIRECTION: &str = "to_dingtalk";
/// Safety bound on the pages of one round.
const MAX_PAGES: usize = 10_000;

impl RouteSync {
    /// One delta round of folder `f`'s Outlook folder (`folder_id`) into DingTalk Mail.
    pub(super) async fn relay_outlook(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        folder_id: &str,
    ) -> Result<(), SyncError> {
        let opened = self.open(client, &f.name).await?;
        let key = outlook::delta_key(self.name(), &f.label);
        let mut delta: outlook::OutlookDelta = match self.store.kv_get(&key).await? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("mailbox delta {key}: {e}")))?,
            None => {
                let first = outlook::OutlookDelta::first(self.route.start, Utc::now());
                // Stored before the first round, so a round cut short starts from the
                // same time again (`new` must not skip what arrived meanwhile).
                self.save_delta(&key, &first).await?;
                first
            }
        };
        let mailbox = &self.route.mailbox;
        let mut page = match &delta.link {
            Some(link) => match self.graph.message_delta_page(mailbox, link).await {
                Err(e) if e.status() == Some(410) => {
                    tracing::warn!(route = %self.name(), folder = %f.label, "Graph forgot the delta state: reading the Outlook folder again from the route's start");
                    delta.link = None;
                    self.save_delta(&key, &delta).await?;
                    self.graph
                        .message_delta_first(mailbox, folder_id, Some(delta.since()))
                        .await?
                }
                other => other?,
            },
            None => {
                self.graph
                    .message_delta_first(mailbox, folder_id, Some(delta.since()))
                    .await?
            }
        };
        for _ in 0..MAX_PAGES {
            for item in &page.items {
                match item {
                    DeltaItem::Changed(m) => {
                        self.outlook_changed(client, f, &opened, delta.since_ms, m)
                            .await?
                    }
                    DeltaItem::Removed { id } => {
                        self.outlook_removed(client, f, &opened, id).await?
                    }
                }
            }
            if let Some(next) = &page.next_link {
                page = self.graph.message_delta_page(mailbox, next).await?;
                continue;
            }
            if let Some(link) = &page.delta_link {
                delta.link = Some(link.clone());
                self.save_delta(&key, &delta).await?;
            }
            break;
        }
        metrics::set_mailbox_synced_at(self.name(), DIRECTION);
        Ok(())
    }

    async fn save_delta(&self, key: &str, d: &outlook::OutlookDelta) -> Result<(), StoreError> {
        let text = serde_json::to_string(d).unwrap_or_default();
        self.store.kv_put(key, &text, None).await
    }

    /// The UID of a pair's DingTalk side when it is a message of this folder as it is now
    /// open (another `UIDVALIDITY`: not this message any more).
    fn uid_here(f: &FolderRun, opened: &FolderState, left: &str) -> Option<u32> {
        match outlook::parse_left(left) {
            Some((folder, validity, uid))
                if folder == f.label && validity == opened.uid_validity =>
            {
                Some(uid)
            }
            _ => None,
        }
    }

    async fn outlook_changed(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        opened: &FolderState,
        since_ms: i64,
        m: &DeltaMessage,
    ) -> Result<(), SyncError> {
        let ns = state::pair_ns(self.name());
        let left = self.store.map_get(&ns, Side::Right, &m.id).await?;
        match outlook::verdict(m, left.is_some(), since_ms) {
            outlook::Verdict::Skip(why) => {
                tracing::debug!(route = %self.name(), folder = %f.label, graph_id = %m.id, why, "Outlook message not relayed");
                Ok(())
            }
            outlook::Verdict::Mapped => {
                let Some(left) = left else { return Ok(()) };
                self.outlook_read(client, f, opened, &left, m).await
            }
            outlook::Verdict::Relay => self.append_from_outlook(client, f, opened, m).await,
        }
    }

    /// Relays the read state of a mapped message when it differs from the recorded one.
    async fn outlook_read(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        opened: &FolderState,
        left: &str,
        m: &DeltaMessage,
    ) -> Result<(), SyncError> {
        let Some(uid) = Self::uid_here(f, opened, left) else {
            return Ok(());
        };
        // Unknown: nothing is guessed (as in the re-check of recent pairs).
        let previous = match self.recorded_read(left).await? {
            Some(recorded) if recorded != m.is_read => recorded,
            _ => return Ok(()),
        };
        client.store_flags(&[uid], m.is_read, &["\\Seen"]).await?;
        self.record_read(f, left, uid, &m.id, m.is_read, Some(previous), DIRECTION)
            .await
    }

    /// Appends (or maps) one new Outlook message.
    async fn append_from_outlook(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        opened: &FolderState,
        m: &DeltaMessage,
    ) -> Result<(), SyncError> {
        if self
            .store
            .kv_get(&state::undone_key(self.name(), &m.id))
            .await?
            .is_some()
        {
            tracing::debug!(route = %self.name(), folder = %f.label, graph_id = %m.id, "Outlook message not relayed: `dingbridge undo` removed its copy");
            return Ok(());
        }
        let mailbox = &self.route.mailbox;
        let found = match self.graph.message_state(mailbox, &m.id).await {
            Ok(found) => found,
            // Gone since the delta was read: its `@removed` comes next round.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if found.origin.is_some() {
            tracing::debug!(route = %self.name(), folder = %f.label, graph_id = %m.id, "Outlook message not relayed: the bridge wrote it");
            return Ok(());
        }
        if found.is_draft {
            return Ok(());
        }
        let ns = state::pair_ns(self.name());
        let validity = opened.uid_validity;
        let imid = found
            .internet_message_id
            .clone()
            .or_else(|| m.internet_message_id.clone());
        let mut how = "matched";
        let (present, mut uid) = match &imid {
            Some(imid) => self.copies(client, f, validity, imid).await?,
            None => (false, None),
        };
        if uid.is_none() && present {
            // Every copy there is mapped to another Outlook item already (both mailboxes
            // got the mail, and DingTalk's copy went to Outlook first): nothing to add.
            tracing::debug!(route = %self.name(), folder = %f.label, graph_id = %m.id, "Outlook message not relayed: DingTalk Mail has it");
            return Ok(());
        }
        let received = found.received_at.or(m.received_at);
        if uid.is_none() {
            how = "appended";
            let raw = self.graph.message_mime(mailbox, &m.id).await?;
            let flags: &[&str] = if found.is_read { &["\\Seen"] } else { &[] };
            let date = received.map(|t| t.fixed_offset());
            let appended = match client.append(&f.name, flags, date.as_ref(), &raw).await {
                Ok(a) => a,
                Err(e @ ImapError::Refused { .. }) => {
                    // This message cannot be stored (too large, refused content): recorded
                    // and skipped so that the rest still arrives.
                    tracing::error!(route = %self.name(), folder = %f.label, graph_id = %m.id, error = %e, "mail not appended to DingTalk Mail");
                    metrics::record_mailbox_error(self.name(), "append_refused");
                    self.audit(
                        "mailbox.append_failed",
                        json!({
                            "route": self.name(), "direction": DIRECTION, "folder": f.label,
                            "graph_id": m.id, "message_id": imid, "error": e.to_string(),
                        }),
                    )
                    .await?;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            uid = match appended {
                Some(a) if a.uid_validity == validity => Some(a.uid),
                // No UIDPLUS: the newest unmapped copy with its Message-ID is the one.
                _ => match &imid {
                    Some(imid) => self.copies(client, f, validity, imid).await?.1,
                    None => None,
                },
            };
        }
        let Some(uid) = uid else {
            // Not recognised (no UIDPLUS and no Message-ID): the DingTalk → Outlook side
            // will meet it and map it to this Outlook item by `internetMessageId`.
            tracing::warn!(route = %self.name(), folder = %f.label, graph_id = %m.id, "appended mail not recognised in DingTalk Mail");
            self.audit(
                "mailbox.appended",
                json!({
                    "route": self.name(), "direction": DIRECTION, "folder": f.label,
                    "uid_validity": validity, "uid": null, "graph_id": m.id,
                    "how": how, "message_id": imid,
                }),
            )
            .await?;
            return Ok(());
        };
        let left = state::pair_left(&f.label, validity, uid);
        self.store.map_put(&ns, &left, &m.id).await?;
        self.put_read(&left, found.is_read).await?;
        let mut recent = self.recent_pairs(f, validity).await?;
        recent.push(validity, uid, &m.id);
        self.save_recent(f, &recent).await?;
        self.audit(
            "mailbox.appended",
            json!({
                "route": self.name(), "direction": DIRECTION, "folder": f.label,
                "uid_validity": validity, "uid": uid, "graph_id": m.id, "how": how,
                "message_id": imid, "read": found.is_read,
                "received_at": received.map(|t| t.to_rfc3339()),
            }),
        )
        .await?;
        metrics::record_mail_synced(self.name(), DIRECTION, how);
        metrics::set_mailbox_synced_at(self.name(), DIRECTION);
        tracing::info!(route = %self.name(), folder = %f.label, uid, how, graph_id = %m.id, "Outlook mail synced to DingTalk Mail");
        Ok(())
    }

    /// Whether the open folder has a message with this `Message-ID`, and the newest such
    /// message that has no pair.
    async fn copies(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        validity: u32,
        imid: &str,
    ) -> Result<(bool, Option<u32>), SyncError> {
        let found = client.search_message_id(imid).await?;
        let ns = state::pair_ns(self.name());
        let mut free = HashSet::new();
        for &u in &found {
            let left = state::pair_left(&f.label, validity, u);
            if self.store.map_get(&ns, Side::Left, &left).await?.is_none() {
                free.insert(u);
            }
        }
        Ok((
            !found.is_empty(),
            outlook::pick_uid(&found, |u| free.contains(&u)),
        ))
    }

    /// A message gone from the Outlook folder: removed from DingTalk Mail too, only with
    /// `allow_deletes`.
    async fn outlook_removed(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        opened: &FolderState,
        graph_id: &str,
    ) -> Result<(), SyncError> {
        let ns = state::pair_ns(self.name());
        let Some(left) = self.store.map_get(&ns, Side::Right, graph_id).await? else {
            return Ok(());
        };
        let Some(uid) = Self::uid_here(f, opened, &left) else {
            return Ok(());
        };
        if !self.route.allow_deletes {
            tracing::debug!(route = %self.name(), folder = %f.label, uid, graph_id, "Outlook delete not relayed: allow_deletes is off");
            return Ok(());
        }
        client.store_flags(&[uid], true, &["\\Deleted"]).await?;
        let expunged = client.expunge_uids(&[uid]).await?;
        if !expunged {
            tracing::warn!(route = %self.name(), folder = %f.label, uid, "message flagged \\Deleted but not expunged: other messages of the folder are flagged too and the server has no UID EXPUNGE");
        }
        self.store.map_delete(&ns, Side::Left, &left).await?;
        self.store
            .kv_delete(&state::read_key(self.name(), &left))
            .await?;
        self.audit(
            "mailbox.deleted",
            json!({
                "route": self.name(), "direction": DIRECTION, "folder": f.label,
                "uid_validity": opened.uid_validity, "uid": uid, "graph_id": graph_id,
                "expunged": expunged,
            }),
        )
        .await?;
        metrics::record_mail_synced(self.name(), DIRECTION, "deleted");
        tracing::info!(route = %self.name(), folder = %f.label, uid, graph_id, "Outlook delete synced to DingTalk Mail");
        Ok(())
    }

    /// Completes when the route's wake key is set (a Graph notification for its Outlook
    /// folder, taken by whichever instance holds the connection), and takes it; never,
    /// for a route that does not write to DingTalk Mail.
    pub(super) async fn woken(&self) {
        if !self.route.direction.to_dingtalk() {
            return std::future::pending().await;
        }
        let key = outlook::wake_key(self.name());
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            match self.store.kv_get(&key).await {
                Ok(Some(_)) => {
                    let _ = self.store.kv_delete(&key).await;
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(route = %self.name(), error = %e, "wake key not read");
                }
            }
        }
    }
}
