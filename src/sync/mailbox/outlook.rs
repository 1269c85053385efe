//! Outlook → DingTalk Mail: what that direction keeps in the store, and its pure
//! decisions. Every key here is stored: never change one.
//!
//! Per route and mapped folder, the Graph message delta of the Outlook folder
//! ([`OutlookDelta`]): the time its first round started from (the route's `start`) and
//! the `@odata.deltaLink` of the last finished round. A new Outlook message is relayed
//! ([`verdict`]) unless it is a draft, arrived before that time, or is mapped already
//! (imported from DingTalk Mail, or appended before); one the bridge wrote (its origin
//! marker) is recognised by the caller and never goes back either.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{config::SyncStart, graph::DeltaMessage};

/// Store key of the Outlook delta state of `folder` (as configured, `INBOX` normalised)
/// on `route`.
pub fn delta_key(route: &str, folder: &str) -> String {
    format!("mailbox-outlook-delta:{route}:{folder}")
}

/// Store key that wakes the route's loop (whichever instance holds its connection): set
/// by a Graph notification for the route's Outlook folder, taken by the loop.
pub fn wake_key(route: &str) -> String {
    format!("mailbox-wake:{route}")
}

/// How far the Outlook side of one folder is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlookDelta {
    /// Mail received before this (Unix ms) is never relayed: the route's start.
    pub since_ms: i64,
    /// The `@odata.deltaLink` of the last finished round; `None`: the first round (from
    /// `since_ms`) is still to finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl OutlookDelta {
    /// The state of a folder read for the first time: `new` relays mail received from
    /// now on, `days:N` that of the last N days.
    pub fn first(start: SyncStart, now: DateTime<Utc>) -> OutlookDelta {
        // Whole seconds: Graph's receipt times and the delta filter have no more.
        let now_ms = now.timestamp() * 1000;
        OutlookDelta {
            since_ms: match start {
                SyncStart::New => now_ms,
                SyncStart::Days(n) => now_ms - i64::from(n) * 86_400_000,
            },
            link: None,
        }
    }

    /// [`OutlookDelta::since_ms`] as a time.
    pub fn since(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(self.since_ms).unwrap_or_default()
    }
}

/// What to do with a message a delta round lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New to DingTalk Mail: relay it (after the origin check).
    Relay,
    /// Mapped already: only its read state may have changed.
    Mapped,
    /// Left alone, for this reason (a metric and log label).
    Skip(&'static str),
}

/// The verdict on `m`; `mapped`: its id has a stored pair.
pub fn verdict(m: &DeltaMessage, mapped: bool, since_ms: i64) -> Verdict {
    if mapped {
        return Verdict::Mapped;
    }
    if m.is_draft {
        return Verdict::Skip("draft");
    }
    match m.received_at {
        Some(t) if t.timestamp_millis() < since_ms => Verdict::Skip("before_start"),
        _ => Verdict::Relay,
    }
}

/// The parts of a pair's DingTalk side ([`super::state::pair_left`]): folder,
/// `UIDVALIDITY`, UID.
pub fn parse_left(left: &str) -> Option<(&str, u32, u32)> {
    let mut parts = left.rsplitn(3, ':');
    let uid = parts.next()?.parse().ok()?;
    let validity = parts.next()?.parse().ok()?;
    Some((parts.next()?, validity, uid))
}

/// The UID to map an Outlook message to among those in the folder with its
/// `Message-ID` (`found`, ascending) whose pair is not stored yet (`free`): the newest
/// (the APPEND just made, or one before a crash).
pub fn pick_uid(found: &[u32], free: impl Fn(u32) -> bool) -> Option<u32> {
    found.iter().rev().copied().find(|&u| free(u))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::mailbox::state::pair_left;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("date")
            .with_timezone(&Utc)
    }

    fn msg(received: &str, draft: bool) -> DeltaMessage {
        DeltaMessage {
            id: "A".into(),
            internet_message_id: Some("<a@x>".into()),
            is_read: false,
            is_draft: draft,
            received_at: Some(at(received)),
        }
    }

    #[test]
    fn stored_keys_keep_their_format() {
        assert_eq!(delta_key("r", "INBOX"), "mailbox-outlook-delta:r:INBOX");
        assert_eq!(wake_key("r"), "mailbox-wake:r");
        let s = OutlookDelta {
            since_ms: 5,
            link: None,
        };
        assert_eq!(
            serde_json::to_string(&s).expect("json"),
            r#"{"since_ms":5}"#
        );
    }

    #[test]
    fn new_starts_now_and_days_reaches_back() {
        let now = at("2026-03-10T12:00:00Z");
        assert_eq!(OutlookDelta::first(SyncStart::New, now).since(), now);
        assert_eq!(
            OutlookDelta::first(SyncStart::Days(2), now).since(),
            at("2026-03-08T12:00:00Z")
        );
    }

    #[test]
    fn only_new_unmapped_received_mail_is_relayed() {
        let since = at("2026-03-10T12:00:00Z").timestamp_millis();
        assert_eq!(
            verdict(&msg("2026-03-10T12:00:01Z", false), false, since),
            Verdict::Relay
        );
        assert_eq!(
            verdict(&msg("2026-03-10T12:00:01Z", false), true, since),
            Verdict::Mapped,
            "imported from DingTalk Mail or appended before"
        );
        assert_eq!(
            verdict(&msg("2026-03-10T11:59:59Z", false), false, since),
            Verdict::Skip("before_start")
        );
        assert_eq!(
            verdict(&msg("2026-03-10T12:00:01Z", true), false, since),
            Verdict::Skip("draft")
        );
    }

    #[test]
    fn pair_lefts_parse_back_even_with_colons_in_the_folder() {
        assert_eq!(
            parse_left(&pair_left("INBOX", 7, 42)),
            Some(("INBOX", 7, 42))
        );
        assert_eq!(parse_left(&pair_left("a:b", 1, 2)), Some(("a:b", 1, 2)));
        assert_eq!(parse_left("INBOX:x:1"), None);
        assert_eq!(parse_left("1"), None);
    }

    #[test]
    fn the_newest_unmapped_copy_is_taken() {
        assert_eq!(pick_uid(&[3, 5, 9], |u| u != 9), Some(5));
        assert_eq!(pick_uid(&[3, 5, 9], |_| true), Some(9));
        assert_eq!(pick_uid(&[3], |_| false), None);
        assert_eq!(pick_uid(&[], |_| true), None);
    }
}
