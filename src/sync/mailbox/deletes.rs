//! DingTalk Mail → Outlook: mails that leave a mapped DingTalk folder (expunged, or
//! moved out, which IMAP does as copy + expunge), relayed only with `allow_deletes`.
//!
//! Detection, each cycle after the new mail of every folder is imported, per folder:
//! the folder is opened again and its `EXISTS` and `UIDNEXT` compared with those of the
//! last look ([`Presence`]): UIDs only grow, so `removed = exists_before + arrived −
//! exists_now`, where `arrived` is one `UID SEARCH UID <old UIDNEXT>:*`. When nothing was
//! removed (the usual case) that is all: two cheap commands whatever the folder's size.
//! Only when something was removed is the folder's UID list read (`UID SEARCH UID
//! <floor>:*`, from the lowest UID the route can have mapped: above the start for `new`,
//! the first one of the start day for `days:N`) and diffed with the stored one. An
//! `EXPUNGE` the server sends while the connection idles ends the wait, so the next cycle
//! runs at once.
//!
//! A gone UID with an id pair whose Outlook item this route wrote (its origin marker) is
//! looked for, by `Message-ID`, in every mapped folder (a move is a copy + expunge):
//! - found in a mapped folder (imported there already, or not yet): the Outlook item
//!   moves to that folder's Outlook folder (when it is elsewhere) and stays mapped to the
//!   copy — no duplicate and no delete (the copy's import matches the item by its
//!   origin marker, which is derived from the `Message-ID`);
//! - found nowhere (expunged, or moved to a folder the route does not map): the item
//!   moves to Deleted Items (recoverable), `mailbox.deleted` is audited.
//!
//! Either way the gone UID's id pair is removed. An Outlook item the bridge did not write
//! (mapped because both mailboxes received the mail) is never moved. A mail without a
//! `Message-ID` cannot be followed: moved to another mapped folder, it arrives there as a
//! new item and the old one goes to Deleted Items.
//!
//! Without `allow_deletes` nothing is looked at and nothing removed (one debug line per
//! connection). Turning it on relays the removals from then on, not earlier ones.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{DIRECTION, FolderRun, RouteSync, SyncError, state};
use crate::{
    graph::FoundMessage,
    mail::{FolderState, ImapClient, imap::uid_set},
    metrics,
    store::{Side, StoreError},
};
use std::collections::HashMap;

/// The well-known Outlook folder removed mail goes to.
const DELETED_ITEMS: &str = "deleteditems";

/// Store key of what [`Presence`] the last look at `folder` of `route` found.
pub fn presence_key(route: &str, folder: &str) -> String {
    format!("mailbox-present:{route}:{folder}")
}

/// A folder as the last removal check saw it, for one `UIDVALIDITY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The `UIDVALIDITY` of the UIDs below.
    pub uid_validity: u32,
    /// `EXISTS`: every message of the folder then, tracked or not.
    pub exists: u32,
    /// `UIDNEXT` then: every UID below it was accounted for.
    pub uid_next: u32,
    /// The lowest UID tracked (those below cannot be mapped).
    pub floor: u32,
    /// The UIDs from `floor` below `uid_next` present then (IMAP set syntax, `1:40,42`).
    pub present: String,
}

/// What the counts say since the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Nothing was removed: the presence with the arrivals added.
    Unchanged(Presence),
    /// Something was removed (or the counts do not add up): read the UID list.
    Search,
}

impl Presence {
    /// Compares the last look with the folder now: `exists` and `uid_next` from opening
    /// it, `arrived` the UIDs at or above the old `uid_next` (any order).
    pub fn check(&self, exists: u32, uid_next: u32, arrived: &[u32]) -> Check {
        let arrived: Vec<u32> = arrived
            .iter()
            .copied()
            .filter(|&u| u >= self.uid_next && u < uid_next)
            .collect();
        if uid_next < self.uid_next
            || u64::from(self.exists) + arrived.len() as u64 != u64::from(exists)
        {
            return Check::Search;
        }
        let mut uids = parse_uid_set(&self.present);
        uids.extend(arrived.iter().filter(|&&u| u >= self.floor));
        Check::Unchanged(Presence {
            uid_validity: self.uid_validity,
            exists,
            uid_next,
            floor: self.floor,
            present: uid_set(&uids),
        })
    }

    /// The UIDs tracked then and missing from `now` (the folder's UIDs from the floor).
    pub fn gone(&self, now: &[u32]) -> Vec<u32> {
        let now: std::collections::HashSet<u32> = now.iter().copied().collect();
        parse_uid_set(&self.present)
            .into_iter()
            .filter(|u| !now.contains(u))
            .collect()
    }
}

/// The UIDs of an IMAP set written by [`uid_set`] (`1:3,7`); anything unreadable is left
/// out (the next removal check then sees fewer UIDs, never more).
pub fn parse_uid_set(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once(':') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a.min(b)..=a.max(b));
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether the Outlook item was written by mailbox route `route` (its origin marker).
pub fn written_by(route: &str, found: &FoundMessage) -> bool {
    let prefix = format!("{}:", state::pair_ns(route));
    found
        .origin
        .as_deref()
        .is_some_and(|o| o.starts_with(&prefix))
}

/// A mapped DingTalk message that left its folder.
struct Gone<'a> {
    folder: &'a FolderRun,
    uid_validity: u32,
    uid: u32,
    left: String,
    graph_id: String,
}

/// Where another copy of a gone message is.
struct Copy {
    folder: usize,
    left: String,
    /// The Outlook item that copy is mapped to (`None`: not imported yet).
    mapped: Option<String>,
}

impl RouteSync {
    /// Relays the removals of every mapped folder (see the module doc). Called once per
    /// cycle after the imports; `folder_ids`: Outlook folder ids by configured name.
    pub(super) async fn relay_removals(
        &self,
        client: &mut ImapClient,
        folders: &[FolderRun],
        folder_ids: &HashMap<String, String>,
        logged: &mut bool,
    ) -> Result<(), SyncError> {
        if !self.route.allow_deletes {
            if !*logged {
                tracing::debug!(route = %self.name(), "allow_deletes is off: mail removed from DingTalk Mail stays in Outlook");
                *logged = true;
            }
            return Ok(());
        }
        let mut moved_away = false;
        for f in folders {
            let opened = self.open(client, &f.name).await?;
            moved_away |= self
                .check_folder(client, f, &opened, folders, folder_ids)
                .await?;
        }
        // The wait that follows (and its flag events) expects the last folder open.
        if moved_away && let Some(last) = folders.last() {
            self.open(client, &last.name).await?;
        }
        Ok(())
    }

    /// One folder; `true` when it opened other folders on the way.
    async fn check_folder(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        opened: &FolderState,
        folders: &[FolderRun],
        folder_ids: &HashMap<String, String>,
    ) -> Result<bool, SyncError> {
        let key = presence_key(self.name(), &f.label);
        let stored: Option<Presence> = match self.store.kv_get(&key).await? {
            // Unreadable: a new baseline (a removal in between is then not relayed).
            Some(text) => serde_json::from_str(&text).ok(),
            None => None,
        };
        let uid_next = match opened.uid_next {
            Some(n) => n,
            None => client
                .uid_search("ALL")
                .await?
                .last()
                .map_or(1, |u| u.saturating_add(1)),
        };
        let (prev, now) = match stored {
            Some(p) if p.uid_validity == opened.uid_validity => {
                let arrived = match uid_next > p.uid_next {
                    true => client.uid_search(&format!("UID {}:*", p.uid_next)).await?,
                    false => Vec::new(),
                };
                if let Check::Unchanged(next) = p.check(opened.exists, uid_next, &arrived) {
                    if next != p {
                        self.save_presence(&key, &next).await?;
                    }
                    return Ok(false);
                }
                let now = self.present_from(client, p.floor, uid_next).await?;
                (p, now)
            }
            // First look, or a new UIDVALIDITY (its mail is matched again by the import):
            // the folder as it is now is the baseline, plus the mail mapped most recently
            // — a mail imported this cycle and moved away before this first look is
            // still followed.
            _ => {
                let floor = self.floor(client, f, opened, uid_next).await?;
                let now = self.present_from(client, floor, uid_next).await?;
                let recent = self.recent_pairs(f, opened.uid_validity).await?;
                let mut tracked = now.clone();
                tracked.extend(
                    recent
                        .pairs
                        .iter()
                        .map(|(u, _)| *u)
                        .filter(|&u| u >= floor && u < uid_next),
                );
                tracked.sort_unstable();
                tracked.dedup();
                let p = Presence {
                    uid_validity: opened.uid_validity,
                    exists: opened.exists,
                    uid_next,
                    floor,
                    present: uid_set(&tracked),
                };
                if tracked.len() == now.len() {
                    self.save_presence(&key, &p).await?;
                    return Ok(false);
                }
                (p, now)
            }
        };
        let ns = state::pair_ns(self.name());
        let mut gone = Vec::new();
        for uid in prev.gone(&now) {
            let left = state::pair_left(&f.label, opened.uid_validity, uid);
            if let Some(graph_id) = self.store.map_get(&ns, Side::Left, &left).await? {
                gone.push(Gone {
                    folder: f,
                    uid_validity: opened.uid_validity,
                    uid,
                    left,
                    graph_id,
                });
            }
        }
        let mut moved_away = false;
        for g in &gone {
            if self.relay_gone(client, g, folders, folder_ids).await? {
                // Other folders were searched: this one is open again for the next.
                moved_away = true;
                self.open(client, &f.name).await?;
            }
        }
        // Stored only now: an error above leaves the old list, and the next check finds
        // the same UIDs gone (those already relayed have no pair left).
        let p = Presence {
            uid_validity: opened.uid_validity,
            exists: opened.exists,
            uid_next,
            floor: prev.floor,
            present: uid_set(&now),
        };
        self.save_presence(&key, &p).await?;
        Ok(moved_away)
    }

    /// The lowest UID the route can have mapped in the open folder: above the start for
    /// `new`, the first one of the start day for `days:N` and after a `UIDVALIDITY` reset.
    async fn floor(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        opened: &FolderState,
        uid_next: u32,
    ) -> Result<u32, SyncError> {
        let key = state::mark_key(self.name(), &f.label);
        let mark: Option<state::FolderMark> = self
            .store
            .kv_get(&key)
            .await?
            .and_then(|t| serde_json::from_str(&t).ok())
            .filter(|m: &state::FolderMark| m.uid_validity == opened.uid_validity);
        Ok(match mark {
            // Unknown: track the whole folder.
            None => 1,
            Some(m) => match m.since_ms {
                None => m.initial_top.saturating_add(1),
                Some(since) => client
                    .uid_search(&format!("SINCE {}", state::imap_since(since)))
                    .await?
                    .first()
                    .copied()
                    .unwrap_or(uid_next)
                    .min(m.initial_top.saturating_add(1)),
            },
        })
    }

    /// The UIDs of the open folder from `floor` below `uid_next`.
    async fn present_from(
        &self,
        client: &mut ImapClient,
        floor: u32,
        uid_next: u32,
    ) -> Result<Vec<u32>, SyncError> {
        if floor >= uid_next {
            return Ok(Vec::new());
        }
        Ok(client
            .uid_search(&format!("UID {floor}:*"))
            .await?
            .into_iter()
            .filter(|&u| u >= floor && u < uid_next)
            .collect())
    }

    async fn save_presence(&self, key: &str, p: &Presence) -> Result<(), StoreError> {
        let text = serde_json::to_string(p).unwrap_or_default();
        self.store.kv_put(key, &text, None).await
    }

    /// Relays one gone message; `true` when it opened other folders on the way.
    async fn relay_gone(
        &self,
        client: &mut ImapClient,
        g: &Gone<'_>,
        folders: &[FolderRun],
        folder_ids: &HashMap<String, String>,
    ) -> Result<bool, SyncError> {
        let ns = state::pair_ns(self.name());
        let mailbox = &self.route.mailbox;
        let found = match self.graph.message_state(mailbox, &g.graph_id).await {
            Ok(found) => found,
            Err(e) if e.is_not_found() => {
                tracing::info!(route = %self.name(), folder = %g.folder.label, uid = g.uid, "gone from DingTalk Mail and from Outlook already");
                self.forget(g).await?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        if !written_by(self.name(), &found) {
            // The user's own mail (both mailboxes received it): theirs to keep or remove.
            tracing::info!(route = %self.name(), folder = %g.folder.label, uid = g.uid, graph_id = %g.graph_id, "gone from DingTalk Mail; the Outlook item was not written by the bridge and stays");
            self.audit(
                "mailbox.delete_skipped",
                json!({
                    "route": self.name(), "direction": DIRECTION, "folder": g.folder.label,
                    "uid_validity": g.uid_validity, "uid": g.uid, "graph_id": g.graph_id,
                    "reason": "not written by the bridge",
                }),
            )
            .await?;
            self.forget(g).await?;
            return Ok(false);
        }
        let mut opened_others = false;
        let copy = match found.internet_message_id.as_deref() {
            Some(imid) => {
                let (copy, others) = self.find_copy(client, g, imid, folders).await?;
                opened_others = others;
                copy
            }
            None => None,
        };
        let deleted_items = self.graph.mail_folder(mailbox, DELETED_ITEMS).await?;
        match copy {
            Some(copy) => {
                let to = &folders[copy.folder];
                let target = match folder_ids.get(&to.outlook) {
                    Some(id) => id.clone(),
                    None => self.graph.mail_folder(mailbox, &to.outlook).await?,
                };
                let mut id = g.graph_id.clone();
                if found.parent_folder_id.as_deref() != Some(target.as_str()) {
                    id = self
                        .graph
                        .move_message(mailbox, &g.graph_id, &target)
                        .await?;
                    self.audit(
                        "mailbox.moved",
                        json!({
                            "route": self.name(), "direction": DIRECTION,
                            "folder": g.folder.label, "to_folder": to.label,
                            "uid_validity": g.uid_validity, "uid": g.uid,
                            "graph_id": g.graph_id, "new_graph_id": id,
                            "outlook_folder": to.outlook,
                        }),
                    )
                    .await?;
                    metrics::record_mail_synced(self.name(), DIRECTION, "moved");
                    tracing::info!(route = %self.name(), folder = %g.folder.label, to = %to.label, uid = g.uid, graph_id = %id, "DingTalk mail moved: Outlook item moved too");
                }
                self.forget(g).await?;
                // The copy keeps (or gets, when imported later) the item.
                if copy.mapped.is_some() {
                    self.store.map_put(&ns, &copy.left, &id).await?;
                }
            }
            None if found.parent_folder_id.as_deref() == Some(deleted_items.as_str()) => {
                self.forget(g).await?;
            }
            None => {
                self.graph
                    .move_message(mailbox, &g.graph_id, DELETED_ITEMS)
                    .await?;
                self.audit(
                    "mailbox.deleted",
                    json!({
                        "route": self.name(), "direction": DIRECTION, "folder": g.folder.label,
                        "uid_validity": g.uid_validity, "uid": g.uid, "graph_id": g.graph_id,
                        "message_id": found.internet_message_id, "to": DELETED_ITEMS,
                    }),
                )
                .await?;
                self.forget(g).await?;
                metrics::record_mail_synced(self.name(), DIRECTION, "deleted");
                tracing::info!(route = %self.name(), folder = %g.folder.label, uid = g.uid, graph_id = %g.graph_id, "DingTalk mail removed: Outlook item moved to Deleted Items");
            }
        }
        Ok(opened_others)
    }

    /// Another copy of the message in a mapped folder that still backs the item (mapped
    /// to it, or not mapped yet); the flag says whether other folders were opened.
    async fn find_copy(
        &self,
        client: &mut ImapClient,
        g: &Gone<'_>,
        imid: &str,
        folders: &[FolderRun],
    ) -> Result<(Option<Copy>, bool), SyncError> {
        let ns = state::pair_ns(self.name());
        let mut others = false;
        for (i, f) in folders.iter().enumerate() {
            let same = f.label == g.folder.label;
            // The gone message's own folder is open already (see `check_folder`).
            let uid_validity = match same {
                true => g.uid_validity,
                false => {
                    others = true;
                    self.open(client, &f.name).await?.uid_validity
                }
            };
            for uid in client.search_message_id(imid).await? {
                if same && uid == g.uid {
                    continue;
                }
                let left = state::pair_left(&f.label, uid_validity, uid);
                let mapped = self.store.map_get(&ns, Side::Left, &left).await?;
                if mapped.as_deref().is_none_or(|m| m == g.graph_id) {
                    return Ok((
                        Some(Copy {
                            folder: i,
                            left,
                            mapped,
                        }),
                        others,
                    ));
                }
            }
        }
        Ok((None, others))
    }

    /// Removes the gone message's id pair and its recorded read state.
    async fn forget(&self, g: &Gone<'_>) -> Result<(), StoreError> {
        let ns = state::pair_ns(self.name());
        self.store.map_delete(&ns, Side::Left, &g.left).await?;
        self.store
            .kv_delete(&state::read_key(self.name(), &g.left))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(present: &str, exists: u32, uid_next: u32) -> Presence {
        Presence {
            uid_validity: 7,
            exists,
            uid_next,
            floor: 3,
            present: present.into(),
        }
    }

    #[test]
    fn stored_key_keeps_its_format() {
        assert_eq!(presence_key("r", "INBOX"), "mailbox-present:r:INBOX");
    }

    #[test]
    fn uid_sets_read_back_what_uid_set_wrote() {
        let uids = vec![3, 4, 5, 9, 11, 12];
        assert_eq!(parse_uid_set(&uid_set(&uids)), uids);
        assert_eq!(parse_uid_set(""), Vec::<u32>::new());
        assert_eq!(parse_uid_set("5:3,x,8"), vec![3, 4, 5, 8]);
    }

    #[test]
    fn counts_that_add_up_need_no_search_and_take_the_arrivals_in() {
        // 10 messages, 3..=9 tracked (1 and 2 below the floor), UIDNEXT 10.
        let p = presence("3:9", 10, 10);
        // Two arrived (10, 11); 12 came after the folder was opened and is left out.
        match p.check(12, 12, &[11, 10, 12]) {
            Check::Unchanged(n) => {
                assert_eq!((n.exists, n.uid_next), (12, 12));
                assert_eq!(n.present, "3:11");
            }
            Check::Search => panic!("nothing was removed"),
        }
        assert_eq!(p.check(10, 10, &[]), Check::Unchanged(p.clone()));
    }

    #[test]
    fn a_removal_anywhere_in_the_folder_asks_for_the_uid_list() {
        let p = presence("3:9", 10, 10);
        // One removed, one arrived: the count stays but the arithmetic sees it.
        assert_eq!(p.check(10, 11, &[10]), Check::Search);
        // One removed below the floor: a search, which then finds nothing tracked gone.
        assert_eq!(p.check(9, 10, &[]), Check::Search);
        assert_eq!(p.gone(&[3, 4, 5, 6, 7, 8, 9]), Vec::<u32>::new());
        // A UIDNEXT going back is not trusted either.
        assert_eq!(p.check(10, 9, &[]), Check::Search);
    }

    #[test]
    fn gone_lists_the_tracked_uids_missing_now() {
        let p = presence("3:9", 10, 10);
        assert_eq!(p.gone(&[3, 4, 6, 9, 10]), vec![5, 7, 8]);
    }

    #[test]
    fn only_items_this_route_wrote_are_touched() {
        let mut m = FoundMessage {
            id: "G".into(),
            internet_message_id: None,
            parent_folder_id: None,
            is_read: false,
            is_draft: false,
            received_at: None,
            origin: Some("dingtalk-mail:ops:mid:00".into()),
        };
        assert!(written_by("ops", &m));
        assert!(!written_by("op", &m), "another route's prefix");
        m.origin = Some("dingtalk-mail:other:mid:00".into());
        assert!(!written_by("ops", &m));
        m.origin = None;
        assert!(!written_by("ops", &m), "the user's own mail");
    }
}
