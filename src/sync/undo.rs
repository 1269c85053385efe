//! `dingbridge undo`: finds the Outlook items the bridge itself wrote for one route since a
//! time and (with `apply`) removes them — the rollback plan of a route. The DingTalk Mail
//! side of a mailbox route (mails appended there, sent mails, read flags) is in
//! [`super::mailbox::undo`].
//!
//! Items are found through the audit trail (it carries the time of each write, the route,
//! the Graph id and the DingTalk id) and kept only while their id pair is still stored;
//! before anything is listed or removed the item is read from Graph and its origin marker
//! ([`ORIGIN_PROPERTY`]) must hold the value the bridge wrote. An item without it is never
//! removed, only reported. Each removal is audited (`undo.removed`, side `outlook`) and
//! its id pair forgotten, so a second run finds nothing to do.
//!
//! Covered: mails imported by a mailbox route (`mailbox.imported`, created by the bridge),
//! and relayed DingTalk chat messages, calendar events and contacts (`relay.*` entries
//! whose result is a creation). Not covered yet: To Do tasks (the pair does not keep
//! the list id; they are listed and left), updates to items created before the time (no
//! previous content is recorded), and deletes the bridge relayed.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::{
    keys::{graph_echo_key, map_namespace},
    mailbox::state,
    mapping::{ORIGIN_PROPERTY, origin},
    to_outlook::ECHO_TTL,
};
use crate::{
    graph::GraphClient,
    store::{AuditEntry, Side, Store, StoreError},
};

/// What undo covers and what not, printed with every run (and in the README).
pub const COVERAGE: &str = "covers: mails imported from DingTalk Mail, Outlook mails appended into DingTalk Mail, relayed DingTalk chat messages, calendar events and contacts, and the read flags the mailbox sync changed on the mails whose copy is removed (where it recorded the previous value); listed, never removed: mails sent with dingtalk.send_mail (SMTP cannot call a mail back; the Sent copy is its record) and To Do tasks; not covered: updates to items created before --since and relayed deletes";

/// The kind of a written item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A DingTalk Mail message imported by a mailbox route.
    Mail,
    /// A DingTalk chat message relayed as a mail item.
    Message,
    /// A calendar event.
    Event,
    /// A contact.
    Contact,
    /// A To Do task (not removable yet).
    Todo,
}

impl Kind {
    /// Its name in the output and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mail => "mail",
            Kind::Message => "message",
            Kind::Event => "event",
            Kind::Contact => "contact",
            Kind::Todo => "todo",
        }
    }

    /// The Graph collection the item lives in (`None`: not covered).
    fn collection(self) -> Option<&'static str> {
        match self {
            Kind::Mail | Kind::Message => Some("messages"),
            Kind::Event => Some("events"),
            Kind::Contact => Some("contacts"),
            Kind::Todo => None,
        }
    }

    /// The property that names the item, cheap to read with the marker.
    fn title_field(self) -> &'static str {
        match self {
            Kind::Contact => "displayName",
            _ => "subject",
        }
    }
}

/// One item the bridge wrote for the route since the time.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Its kind.
    pub kind: Kind,
    /// When it was written (Unix ms, from the audit trail).
    pub at_ms: i64,
    /// The Outlook (Graph) id.
    pub graph_id: String,
    /// The id-pair namespace.
    pub pair_ns: String,
    /// The DingTalk side of the pair.
    pub left: String,
    /// The origin marker value the bridge wrote on it.
    pub origin: String,
}

/// What was found in the audit trail.
#[derive(Debug, Default)]
pub struct Found {
    /// Items to undo, oldest first.
    pub items: Vec<Written>,
    /// Time of the oldest audit entry read, when the trail may not reach back to `since`.
    pub trail_starts_ms: Option<i64>,
    /// Items already undone, or whose pair the relay forgot since (nothing to do).
    pub already: usize,
}

/// Finds the items route `route` wrote since `since_ms` in the last `cap` audit entries.
pub async fn find(
    store: &dyn Store,
    route: &str,
    since_ms: i64,
    cap: usize,
) -> Result<Found, StoreError> {
    let entries = store.audit_recent(cap).await?;
    find_in(store, &entries, route, since_ms, cap).await
}

/// [`find`] in `entries`, the last `cap` audit entries (newest first) read already.
pub async fn find_in(
    store: &dyn Store,
    entries: &[AuditEntry],
    route: &str,
    since_ms: i64,
    cap: usize,
) -> Result<Found, StoreError> {
    let mut found = Found::default();
    if entries.len() >= cap
        && let Some(oldest) = entries.last()
        && oldest.at_ms > since_ms
    {
        found.trail_starts_ms = Some(oldest.at_ms);
    }
    let undone: HashSet<&str> = entries
        .iter()
        .filter(|e| {
            e.action == "undo.removed"
                && e.detail["route"] == route
                && e.detail["side"] != "dingtalk"
        })
        .filter_map(|e| e.detail["graph_id"].as_str())
        .collect();
    // Newest first in the trail; the earliest write of an item is its time.
    let mut by_id: HashMap<String, Written> = HashMap::new();
    for e in entries.iter().rev().filter(|e| e.at_ms >= since_ms) {
        let Some(w) = written(e, route) else { continue };
        by_id.entry(w.graph_id.clone()).or_insert(w);
    }
    let mut items: Vec<Written> = by_id.into_values().collect();
    items.sort_by(|a, b| (a.at_ms, &a.graph_id).cmp(&(b.at_ms, &b.graph_id)));
    for w in items {
        let paired = store.map_get(&w.pair_ns, Side::Right, &w.graph_id).await?;
        if undone.contains(w.graph_id.as_str()) || paired.is_none() {
            found.already += 1;
        } else {
            found.items.push(w);
        }
    }
    Ok(found)
}

/// The item an audit entry says the bridge created for `route`, if it is one.
fn written(e: &AuditEntry, route: &str) -> Option<Written> {
    let d = &e.detail;
    if d["route"].as_str() != Some(route) {
        return None;
    }
    if e.action == "mailbox.imported" {
        // `matched`: the mail was in Outlook already (the user's own copy), not written.
        if !matches!(d["how"].as_str(), Some("created" | "completed")) {
            return None;
        }
        let folder = d["folder"].as_str()?;
        let uv = u32::try_from(d["uid_validity"].as_u64()?).ok()?;
        let uid = u32::try_from(d["uid"].as_u64()?).ok()?;
        return Some(Written {
            kind: Kind::Mail,
            at_ms: e.at_ms,
            graph_id: d["graph_id"].as_str()?.to_string(),
            pair_ns: state::pair_ns(route),
            left: state::pair_left(folder, uv, uid),
            origin: d["origin"].as_str()?.to_string(),
        });
    }
    let mut parts = e.action.split('.');
    if parts.next() != Some("relay") {
        return None;
    }
    let (kind, short) = match parts.next()? {
        "message" => (Kind::Message, "message"),
        "calendar_event" => (Kind::Event, "event"),
        "contact" => (Kind::Contact, "contact"),
        "todo" => (Kind::Todo, "todo"),
        _ => return None,
    };
    // Only creations: an update of an item created earlier is not the bridge's since then.
    if !matches!(
        d["result"].as_str(),
        Some("created" | "existed" | "resumed")
    ) {
        return None;
    }
    let item = d["item"].as_str().filter(|s| !s.is_empty())?;
    Some(Written {
        kind,
        at_ms: e.at_ms,
        graph_id: d["target_id"].as_str()?.to_string(),
        pair_ns: map_namespace(short, route),
        left: item.to_string(),
        origin: origin(short, item),
    })
}

/// What became of one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Dry run: it carries the marker and would be removed.
    WouldRemove,
    /// Removed (and its pair forgotten).
    Removed,
    /// Already gone from Outlook; its pair is forgotten (when applying).
    Gone,
    /// Kept: it does not carry the bridge's marker for it (the value found, if any).
    NotMarked(Option<String>),
    /// Kept: undo cannot remove this kind yet.
    NotCovered,
    /// Reading or removing it failed.
    Failed(String),
}

/// Reads `w` from Graph, confirms its marker and, when `apply`, removes it, audits the
/// removal and forgets its pair. Returns the outcome and the item's subject or name.
pub async fn undo_one(
    store: &dyn Store,
    graph: &GraphClient,
    route: &str,
    mailbox: &str,
    w: &Written,
    apply: bool,
) -> (Outcome, Option<String>) {
    let Some(collection) = w.kind.collection() else {
        return (Outcome::NotCovered, None);
    };
    let expand = format!(
        "singleValueExtendedProperties($filter=id eq '{}')",
        ORIGIN_PROPERTY
    );
    let item = match graph
        .get_query(
            mailbox,
            &[collection, &w.graph_id],
            &[("$select", w.kind.title_field()), ("$expand", &expand)],
        )
        .await
    {
        Ok(v) => v,
        Err(e) if e.is_not_found() => {
            if !apply {
                return (Outcome::Gone, None);
            }
            return match forget(store, route, w, "already_gone").await {
                Ok(()) => (Outcome::Gone, None),
                Err(e) => (Outcome::Failed(format!("store: {e}")), None),
            };
        }
        Err(e) => return (Outcome::Failed(format!("reading it: {e}")), None),
    };
    let title = item[w.kind.title_field()].as_str().map(str::to_string);
    let marker = marker_of(&item);
    if marker.as_deref() != Some(w.origin.as_str()) {
        return (Outcome::NotMarked(marker), title);
    }
    if !apply {
        return (Outcome::WouldRemove, title);
    }
    // The Outlook → DingTalk direction ignores the deletion, as it does the bridge's writes.
    if let Err(e) = store
        .kv_put(&graph_echo_key(&w.graph_id), "undo", Some(ECHO_TTL))
        .await
    {
        return (Outcome::Failed(format!("store: {e}")), title);
    }
    let deleted = match w.kind {
        Kind::Event => graph.delete_event(mailbox, &w.graph_id).await,
        Kind::Contact => graph.delete_contact(mailbox, &w.graph_id).await,
        _ => graph.delete_message(mailbox, &w.graph_id).await,
    };
    if let Err(e) = deleted {
        return (Outcome::Failed(format!("deleting it: {e}")), title);
    }
    match forget(store, route, w, "removed").await {
        Ok(()) => (Outcome::Removed, title),
        Err(e) => (
            Outcome::Failed(format!("removed, but the store failed: {e}")),
            title,
        ),
    }
}

/// The bridge's origin marker on a Graph item read with it expanded.
fn marker_of(item: &Value) -> Option<String> {
    item["singleValueExtendedProperties"]
        .as_array()?
        .iter()
        .find(|p| {
            p["id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(ORIGIN_PROPERTY))
        })
        .and_then(|p| p["value"].as_str())
        .map(str::to_string)
}

/// Audits the removal and forgets the id pair.
async fn forget(
    store: &dyn Store,
    route: &str,
    w: &Written,
    result: &str,
) -> Result<(), StoreError> {
    store
        .audit_append(&AuditEntry::now(
            "undo.removed",
            json!({
                "route": route, "side": "outlook", "kind": w.kind.as_str(), "graph_id": w.graph_id,
                "dingtalk_id": w.left, "written_at_ms": w.at_ms, "result": result,
            }),
        ))
        .await?;
    store.map_delete(&w.pair_ns, Side::Right, &w.graph_id).await
}

/// Parses `--since`: an RFC 3339 time, or a duration back from `now_ms` (`90m`, `24h`,
/// `7d`). Answers Unix ms.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(at.timestamp_millis());
    }
    let unit_ms: i64 = match t.chars().last() {
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}`: expected an RFC 3339 time or 90m, 24h, 7d"
            ));
        }
    };
    let n: i64 = t[..t.len() - 1]
        .parse()
        .map_err(|_| format!("`{text}`: expected an RFC 3339 time or 90m, 24h, 7d"))?;
    n.checked_mul(unit_ms)
        .map(|back| now_ms - back)
        .ok_or_else(|| format!("`{text}`: too far back"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: i64, action: &str, detail: Value) -> AuditEntry {
        AuditEntry {
            at_ms,
            action: action.into(),
            detail,
        }
    }

    #[test]
    fn since_is_rfc3339_or_relative() {
        let now = 1_000_000_000_000;
        assert_eq!(
            parse_since("2026-12-02T16:00:00Z", now),
            Ok(1_796_227_200_000)
        );
        assert_eq!(parse_since("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_since("90m", now), Ok(now - 90 * 60_000));
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("h", now).is_err());
    }

    #[test]
    fn only_creations_of_the_route_are_written_items() {
        let created = entry(
            5,
            "relay.calendar_event.created",
            json!({"route": "r", "item": "ev1", "target_id": "G1", "result": "created"}),
        );
        let w = written(&created, "r").expect("an item");
        assert_eq!(
            (w.kind, w.graph_id.as_str(), w.pair_ns.as_str()),
            (Kind::Event, "G1", "relay:event:r")
        );
        assert_eq!(w.origin, "dingtalk:event:ev1");
        assert!(written(&created, "other").is_none());
        let updated = entry(
            6,
            "relay.contact.updated",
            json!({"route": "r", "item": "u1", "target_id": "G2", "result": "updated"}),
        );
        assert!(written(&updated, "r").is_none());
        let matched = entry(
            7,
            "mailbox.imported",
            json!({"route": "r", "folder": "INBOX", "uid_validity": 3, "uid": 9,
                "graph_id": "G3", "how": "matched", "origin": "dingtalk-mail:r:mid:x"}),
        );
        assert!(written(&matched, "r").is_none());
        let mut imported = matched.clone();
        imported.detail["how"] = json!("created");
        let w = written(&imported, "r").expect("an imported mail");
        assert_eq!(
            (w.kind, w.left.as_str(), w.pair_ns.as_str()),
            (Kind::Mail, "INBOX:3:9", "dingtalk-mail:r")
        );
    }

    #[test]
    fn the_marker_is_read_case_insensitively() {
        let item = json!({"singleValueExtendedProperties": [
            {"id": ORIGIN_PROPERTY.to_lowercase(), "value": "dingtalk:message:m1"}]});
        assert_eq!(marker_of(&item).as_deref(), Some("dingtalk:message:m1"));
        assert_eq!(marker_of(&json!({"subject": "mine"})), None);
    }
}
