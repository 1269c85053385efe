//! Read state of the mapped mails, both ways, once per change.
//!
//! Each cycle, per folder, after the new mail is imported:
//! 1. DingTalk Mail → Outlook. With CONDSTORE, `UID FETCH 1:* (FLAGS) (CHANGEDSINCE m)`
//!    from the folder's stored `HIGHESTMODSEQ` ([`FolderMark::modseq`]) finds every
//!    message whose flags changed; without it, the [`state::RECENT_PAIRS`] most recently
//!    mapped messages, plus those the server reported changed while idling, are
//!    re-read. A mapped message whose `\Seen` differs from the pair's recorded read state
//!    ([`state::read_key`]) gets `isRead` set in Outlook, then the new state is recorded.
//! 2. Outlook → DingTalk Mail, only on routes that write to DingTalk (`both`): the
//!    [`state::RECENT_PAIRS`] most recently mapped Outlook items are read (one `GET`
//!    each; Graph's change notifications are not used for this yet) and one whose
//!    `isRead` differs from the recorded state gets `\Seen` stored or removed, then the
//!    new state is recorded.
//!
//! Because every relay records the state it wrote, the other side's echo of it (the
//! next `CHANGEDSINCE`, the next Outlook read) matches the record and goes nowhere. When
//! both sides changed within one cycle, DingTalk Mail wins (it is looked at first).

use std::collections::HashSet;

use serde_json::json;

use super::{FolderRun, RouteSync, SyncError, state};
use crate::{
    mail::{FolderState, ImapClient, MessageMeta},
    metrics,
    store::{Side, StoreError},
};

use self::state::{FolderMark, RecentPairs};

impl RouteSync {
    /// Relays the read-state changes of the folder's mapped mails (see the module doc).
    /// `flagged`: UIDs the server reported changed flags for on its own.
    pub(super) async fn sync_read(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        key: &str,
        mark: &mut FolderMark,
        opened: &FolderState,
        flagged: &HashSet<u32>,
    ) -> Result<(), SyncError> {
        let recent = self.recent_pairs(f, mark.uid_validity).await?;
        let condstore = match opened.highest_modseq {
            Some(highest) if client.capabilities().condstore => Some(highest),
            _ => None,
        };
        let metas: Vec<MessageMeta> = match condstore {
            Some(highest) => match mark.modseq {
                Some(m) if m < highest => client.fetch_meta_changed_since(m).await?,
                // Nothing changed; or the first look: changes count from now on.
                _ => Vec::new(),
            },
            None => {
                let mut uids: Vec<u32> = recent.pairs.iter().map(|(u, _)| *u).collect();
                uids.extend(flagged.iter().copied());
                uids.sort_unstable();
                uids.dedup();
                client.fetch_meta(&uids).await?
            }
        };
        let ns = state::pair_ns(self.name());
        for meta in metas.iter().filter(|m| m.uid <= mark.mark) {
            let left = state::pair_left(&f.label, mark.uid_validity, meta.uid);
            let Some(graph_id) = self.store.map_get(&ns, Side::Left, &left).await? else {
                continue;
            };
            let read = meta.seen();
            let previous = self.recorded_read(&left).await?;
            if previous == Some(read) {
                continue;
            }
            match self
                .graph
                .set_read(&self.route.mailbox, &graph_id, read)
                .await
            {
                Ok(()) => {}
                // Gone from Outlook: nothing to mark; recorded so it is not retried.
                Err(e) if e.is_not_found() => {
                    tracing::info!(route = %self.name(), folder = %f.label, uid = meta.uid, "read change not relayed: the Outlook item is gone");
                }
                Err(e) => return Err(e.into()),
            }
            self.record_read(
                f,
                &left,
                meta.uid,
                &graph_id,
                read,
                previous,
                super::DIRECTION,
            )
            .await?;
            self.publish_read(f, mark.uid_validity, meta.uid, read, &graph_id)
                .await?;
        }
        if let Some(highest) = condstore
            && mark.modseq != Some(highest)
        {
            mark.modseq = Some(highest);
            self.save_mark(key, mark).await?;
        }

        if !self.route.direction.to_dingtalk() || opened.read_only {
            return Ok(());
        }
        for (uid, graph_id) in &recent.pairs {
            let left = state::pair_left(&f.label, mark.uid_validity, *uid);
            // Unknown (written before read states were kept): DingTalk Mail's next change
            // sets it; nothing is guessed here.
            let Some(recorded) = self.recorded_read(&left).await? else {
                continue;
            };
            let found = match self
                .graph
                .message_state(&self.route.mailbox, graph_id)
                .await
            {
                Ok(found) => found,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            if found.is_read == recorded {
                continue;
            }
            client
                .store_flags(&[*uid], found.is_read, &["\\Seen"])
                .await?;
            self.record_read(
                f,
                &left,
                *uid,
                graph_id,
                found.is_read,
                Some(recorded),
                "to_dingtalk",
            )
            .await?;
        }
        Ok(())
    }

    /// The folder's most recently mapped mails (empty for another `UIDVALIDITY`).
    pub(super) async fn recent_pairs(
        &self,
        f: &FolderRun,
        uid_validity: u32,
    ) -> Result<RecentPairs, StoreError> {
        let key = state::recent_key(self.name(), &f.label);
        let recent: RecentPairs = match self.store.kv_get(&key).await? {
            // A list that cannot be read only costs re-checks: start it again.
            Some(text) => serde_json::from_str(&text).unwrap_or_default(),
            None => RecentPairs::default(),
        };
        Ok(match recent.uid_validity == uid_validity {
            true => recent,
            false => RecentPairs {
                uid_validity,
                pairs: Vec::new(),
            },
        })
    }

    /// Stores the list of recently mapped mails.
    pub(super) async fn save_recent(
        &self,
        f: &FolderRun,
        recent: &RecentPairs,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(recent).unwrap_or_default();
        self.store
            .kv_put(&state::recent_key(self.name(), &f.label), &text, None)
            .await
    }

    pub(super) async fn recorded_read(&self, left: &str) -> Result<Option<bool>, StoreError> {
        Ok(self
            .store
            .kv_get(&state::read_key(self.name(), left))
            .await?
            .as_deref()
            .and_then(state::parse_read))
    }

    /// Records the read state of a pair as synced (no relay).
    pub(super) async fn put_read(&self, left: &str, read: bool) -> Result<(), StoreError> {
        self.store
            .kv_put(
                &state::read_key(self.name(), left),
                state::read_value(read),
                None,
            )
            .await
    }

    /// Records a relayed change: the state, the audit entry, the metric. `previous`: the
    /// state recorded before (what the side written to had, unless it changed there too),
    /// audited so that `dingbridge undo` can put it back.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_read(
        &self,
        f: &FolderRun,
        left: &str,
        uid: u32,
        graph_id: &str,
        read: bool,
        previous: Option<bool>,
        direction: &'static str,
    ) -> Result<(), SyncError> {
        self.put_read(left, read).await?;
        let uid_validity = super::outlook::parse_left(left).map(|(_, v, _)| v);
        self.audit(
            "mailbox.read_synced",
            json!({
                "route": self.name(), "direction": direction, "folder": f.label,
                "uid_validity": uid_validity, "uid": uid, "graph_id": graph_id,
                "read": read, "previous": previous,
            }),
        )
        .await?;
        metrics::record_mail_read_synced(self.name(), direction, read);
        tracing::info!(route = %self.name(), folder = %f.label, uid, read, direction, "read state synced");
        Ok(())
    }
}
