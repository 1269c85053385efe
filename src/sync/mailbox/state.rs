//! What the DingTalk Mail → Outlook sync keeps in the store, and the pure decisions made
//! from it: the high-water mark of each folder, where a first start begins, and what a
//! changed `UIDVALIDITY` resets. Every key here is stored: never change one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::SyncStart;

/// The lease giving one instance the IMAP connection of mailbox route `route`.
pub fn lease_name(route: &str) -> String {
    format!("mailbox-imap:{route}")
}

/// Store key of the mark of `folder` (as configured, `INBOX` normalised) on `route`.
pub fn mark_key(route: &str, folder: &str) -> String {
    format!("mailbox-sync:{route}:{folder}")
}

/// Store key of the route's last reported health (read by `/readyz` on every instance).
pub fn health_key(route: &str) -> String {
    format!("mailbox-health:{route}")
}

/// Id-pair namespace of the mails of `route`: left = [`pair_left`], right = Graph id.
pub fn pair_ns(route: &str) -> String {
    format!("dingtalk-mail:{route}")
}

/// The DingTalk side of an id pair: the message's place.
pub fn pair_left(folder: &str, uid_validity: u32, uid: u32) -> String {
    format!("{folder}:{uid_validity}:{uid}")
}

/// Store key of the read state last synced for the pair whose DingTalk side is `left`
/// ([`pair_left`]) on `route`: `1` read, `0` unread. A change on either side is relayed
/// only when it differs from this, and this is written right after the relay, so each
/// change crosses once and the other side's echo of it is recognised.
pub fn read_key(route: &str, left: &str) -> String {
    format!("mailbox-read:{route}:{left}")
}

/// Store key set by `dingbridge undo` for an Outlook message whose copy it removed from
/// DingTalk Mail: the Outlook → DingTalk direction never appends that message again
/// (its id pair is gone, and its next change in Outlook would otherwise look new).
pub fn undone_key(route: &str, graph_id: &str) -> String {
    format!("mailbox-undone:{route}:{graph_id}")
}

/// Store key of the folder's most recently mapped messages ([`RecentPairs`]).
pub fn recent_key(route: &str, folder: &str) -> String {
    format!("mailbox-recent:{route}:{folder}")
}

/// The stored form of a read state.
pub fn read_value(read: bool) -> &'static str {
    if read { "1" } else { "0" }
}

/// A stored read state (anything unreadable counts as unknown).
pub fn parse_read(text: &str) -> Option<bool> {
    match text.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// How many recently mapped messages per folder have their read state re-checked each
/// cycle: in DingTalk Mail when the server lacks CONDSTORE, and in Outlook (one `GET`
/// each) for routes that write to DingTalk. Older messages are not re-checked that way.
pub const RECENT_PAIRS: usize = 50;

/// The most recently mapped messages of a folder (UID and Outlook id), newest last, at
/// most [`RECENT_PAIRS`], for one `UIDVALIDITY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentPairs {
    /// The `UIDVALIDITY` the UIDs belong to.
    pub uid_validity: u32,
    /// `(uid, graph id)`, oldest first.
    pub pairs: Vec<(u32, String)>,
}

impl RecentPairs {
    /// Adds a mapped message, dropping the oldest beyond [`RECENT_PAIRS`]; a list of
    /// another `UIDVALIDITY` starts over.
    pub fn push(&mut self, uid_validity: u32, uid: u32, graph_id: &str) {
        if self.uid_validity != uid_validity {
            *self = RecentPairs {
                uid_validity,
                pairs: Vec::new(),
            };
        }
        self.pairs.retain(|(u, _)| *u != uid);
        self.pairs.push((uid, graph_id.to_string()));
        let extra = self.pairs.len().saturating_sub(RECENT_PAIRS);
        self.pairs.drain(..extra);
    }
}

/// The folder name used in keys and origins: `INBOX` in any case is `INBOX`.
pub fn folder_label(name: &str) -> String {
    let name = name.trim();
    if name.eq_ignore_ascii_case("inbox") {
        "INBOX".into()
    } else {
        name.to_string()
    }
}

/// How far one folder is synced, for one `UIDVALIDITY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderMark {
    /// The `UIDVALIDITY` the UIDs below belong to.
    pub uid_validity: u32,
    /// Every UID up to this one is done (imported, mapped or deliberately left out).
    pub mark: u32,
    /// The highest UID the folder had when this mark began: those up to it are imported
    /// only when they arrived at or after `since_ms`.
    pub initial_top: u32,
    /// Earliest internal date of the messages up to `initial_top` that are imported
    /// (Unix ms); `None`: none of them.
    pub since_ms: Option<i64>,
    /// When the route first synced this folder (Unix ms): after a `UIDVALIDITY` change,
    /// the messages from then on are matched again.
    pub started_ms: i64,
    /// The folder's `HIGHESTMODSEQ` up to which flag changes were looked at (CONDSTORE
    /// servers); `None`: not yet, the next cycle starts from the folder's current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modseq: Option<u64>,
}

impl FolderMark {
    /// The mark of a folder synced for the first time: `new` starts above everything
    /// there, `days:N` takes the messages of the last N days.
    pub fn first(start: SyncStart, uid_validity: u32, top: u32, now: DateTime<Utc>) -> FolderMark {
        let now_ms = now.timestamp_millis();
        match start {
            SyncStart::New => FolderMark {
                uid_validity,
                mark: top,
                initial_top: top,
                since_ms: None,
                started_ms: now_ms,
                modseq: None,
            },
            SyncStart::Days(n) => FolderMark {
                uid_validity,
                mark: 0,
                initial_top: top,
                since_ms: Some(now_ms - i64::from(n) * 86_400_000),
                started_ms: now_ms,
                modseq: None,
            },
        }
    }

    /// The mark after the folder's `UIDVALIDITY` changed: every UID is new, and the
    /// messages the route covered before (since its start, or its first `days:N`) are
    /// imported again — matched to their Outlook items by `Message-ID`, so none doubles.
    pub fn after_reset(&self, uid_validity: u32, top: u32) -> FolderMark {
        FolderMark {
            uid_validity,
            mark: 0,
            initial_top: top,
            since_ms: Some(self.since_ms.unwrap_or(self.started_ms)),
            started_ms: self.started_ms,
            modseq: None,
        }
    }

    /// Whether UIDs up to `initial_top` are still to be looked at.
    pub fn initial_pending(&self) -> bool {
        self.mark < self.initial_top && self.since_ms.is_some()
    }

    /// Whether message `uid` with this internal date is imported.
    pub fn wants(&self, uid: u32, internal_date: Option<DateTime<Utc>>) -> bool {
        if uid <= self.mark {
            return false;
        }
        if uid > self.initial_top {
            return true;
        }
        match (self.since_ms, internal_date) {
            (None, _) => false,
            (Some(since), Some(d)) => d.timestamp_millis() >= since,
            // No internal date: imported (losing mail is worse than an extra one).
            (Some(_), None) => true,
        }
    }
}

/// `SINCE` argument of an IMAP search: the day of `ms` (`5-Mar-2026`); IMAP compares
/// dates only, so the caller filters by the exact time afterwards.
pub fn imap_since(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%-d-%b-%Y")
        .to_string()
}

/// A route's health as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHealth {
    /// Syncing (or waiting for mail) without a problem.
    pub ok: bool,
    /// What is wrong: `login`, `tls`, `connection`, `imap`, `graph`, `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The reason, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When this was reported (Unix ms).
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("date")
            .with_timezone(&Utc)
    }

    #[test]
    fn stored_keys_keep_their_format() {
        assert_eq!(lease_name("r"), "mailbox-imap:r");
        assert_eq!(mark_key("r", "INBOX"), "mailbox-sync:r:INBOX");
        assert_eq!(health_key("r"), "mailbox-health:r");
        assert_eq!(pair_ns("r"), "dingtalk-mail:r");
        assert_eq!(pair_left("已发送", 7, 42), "已发送:7:42");
        assert_eq!(folder_label(" inbox "), "INBOX");
        assert_eq!(folder_label("已发送"), "已发送");
        assert_eq!(read_key("r", "INBOX:7:42"), "mailbox-read:r:INBOX:7:42");
        assert_eq!(recent_key("r", "INBOX"), "mailbox-recent:r:INBOX");
        assert_eq!(undone_key("r", "AAk="), "mailbox-undone:r:AAk=");
        assert_eq!(parse_read(read_value(true)), Some(true));
        assert_eq!(parse_read(read_value(false)), Some(false));
        assert_eq!(parse_read("x"), None);
    }

    #[test]
    fn a_mark_stored_before_modseqs_were_kept_still_reads() {
        let old = r#"{"uid_validity":9,"mark":30,"initial_top":30,"since_ms":null,"started_ms":1}"#;
        let m: FolderMark = serde_json::from_str(old).expect("mark");
        assert_eq!(m.modseq, None);
        assert!(!serde_json::to_string(&m).expect("json").contains("modseq"));
    }

    #[test]
    fn recent_pairs_keep_the_newest_and_start_over_on_a_new_uidvalidity() {
        let mut r = RecentPairs::default();
        for uid in 1..=(RECENT_PAIRS as u32 + 5) {
            r.push(7, uid, &format!("g{uid}"));
        }
        assert_eq!(r.pairs.len(), RECENT_PAIRS);
        assert_eq!(r.pairs[0].0, 6);
        r.push(7, 6, "again");
        assert_eq!(r.pairs.len(), RECENT_PAIRS);
        assert_eq!(r.pairs.last(), Some(&(6, "again".to_string())));
        r.push(8, 1, "new");
        assert_eq!(r.pairs, vec![(1, "new".to_string())]);
    }

    #[test]
    fn a_new_route_starts_above_what_is_there_and_days_takes_the_recent_ones() {
        let now = at("2026-03-10T12:00:00Z");
        let new = FolderMark::first(SyncStart::New, 9, 30, now);
        assert_eq!(new.mark, 30);
        assert!(!new.initial_pending());
        assert!(!new.wants(30, Some(now)));
        assert!(new.wants(31, None));

        let days = FolderMark::first(SyncStart::Days(2), 9, 30, now);
        assert_eq!(days.mark, 0);
        assert!(days.initial_pending());
        assert!(days.wants(5, Some(at("2026-03-09T00:00:00Z"))));
        assert!(!days.wants(5, Some(at("2026-03-07T00:00:00Z"))));
        assert!(days.wants(31, Some(at("2020-01-01T00:00:00Z"))), "new mail");
        assert_eq!(imap_since(days.since_ms.expect("since")), "8-Mar-2026");
    }

    #[test]
    fn a_uidvalidity_reset_takes_everything_since_the_route_started_again() {
        let now = at("2026-03-10T12:00:00Z");
        let mut m = FolderMark::first(SyncStart::New, 9, 30, now);
        m.mark = 40;
        let reset = m.after_reset(10, 12);
        assert_eq!(
            (reset.uid_validity, reset.mark, reset.initial_top),
            (10, 0, 12)
        );
        assert_eq!(reset.since_ms, Some(now.timestamp_millis()));
        assert!(reset.wants(3, Some(at("2026-03-10T13:00:00Z"))));
        assert!(!reset.wants(3, Some(at("2026-03-10T11:00:00Z"))));
        let days = FolderMark::first(SyncStart::Days(3), 9, 30, now).after_reset(11, 5);
        assert_eq!(days.since_ms, Some(now.timestamp_millis() - 3 * 86_400_000));
    }
}
