//! The shared event model, below every module that produces or consumes it:
//! [`SyncEvent`], one change on one platform in the project's own terms (with the
//! platform's ids and the raw payload kept for the audit trail), and [`TriggerEvent`],
//! the flat object Zapier and n8n receive (published by [`crate::triggers`]).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which platform an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// DingTalk (HTTP push, robot callback, Stream mode, backfill).
    Dingtalk,
    /// Microsoft Graph change notifications.
    Graph,
}

/// What kind of item changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A chat message.
    Message,
    /// A mail message.
    Mail,
    /// A calendar event.
    CalendarEvent,
    /// A todo / task.
    Todo,
    /// A person in the directory.
    Contact,
    /// Read state of a message.
    ReadState,
    /// Anything the bridge does not (yet) understand; kept and audited, never dropped.
    #[serde(other)]
    Unknown,
}

/// What happened to the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// It was created.
    Created,
    /// It was changed.
    Updated,
    /// It was deleted (or the person left).
    Deleted,
    /// It was read.
    Read,
    /// Not known.
    #[serde(other)]
    Unknown,
}

/// One normalised change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncEvent {
    /// Where it came from.
    pub source: Source,
    /// What changed.
    pub kind: EventKind,
    /// How it changed.
    pub action: Action,
    /// The platform's own ids (`event_id`, `message_id`, `conversation_id`, ...), and the
    /// platform's `event_type`.
    #[serde(default)]
    pub ids: BTreeMap<String, String>,
    /// When it happened on the platform (Unix ms), when the platform says so.
    #[serde(default)]
    pub occurred_at_ms: Option<i64>,
    /// Plain text of a message, when there is one (never written to the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The payload as received (after decryption), kept for audit and later relays.
    #[serde(default)]
    pub raw: Value,
}

impl Source {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Dingtalk => "dingtalk",
            Source::Graph => "graph",
        }
    }
}

impl EventKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Mail => "mail",
            EventKind::CalendarEvent => "calendar_event",
            EventKind::Todo => "todo",
            EventKind::Contact => "contact",
            EventKind::ReadState => "read_state",
            EventKind::Unknown => "unknown",
        }
    }
}

impl Action {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
            Action::Read => "read",
            Action::Unknown => "unknown",
        }
    }
}

impl SyncEvent {
    /// An event with no ids, no time and a null raw payload.
    pub fn new(source: Source, kind: EventKind, action: Action) -> Self {
        Self {
            source,
            kind,
            action,
            ids: BTreeMap::new(),
            occurred_at_ms: None,
            text: None,
            raw: Value::Null,
        }
    }

    /// `<source>.<kind>.<action>`, e.g. `dingtalk.calendar_event.updated` (audit action).
    pub fn audit_action(&self) -> String {
        format!(
            "{}.{}.{}",
            self.source.as_str(),
            self.kind.as_str(),
            self.action.as_str()
        )
    }
}

/// One trigger event, serialised flat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TriggerEvent {
    /// Unique, stable id (Zapier's dedupe key; map it into `Idempotency-Key`).
    pub id: String,
    /// Event name, one of [`crate::triggers::EVENTS`].
    pub event: String,
    /// When it happened, RFC 3339 with offset.
    pub occurred_at: String,
    /// Id of the resource (message, event, contact…) the event is about.
    pub resource_id: String,
    /// The event's own flat fields (strings, numbers, booleans; no nesting).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl TriggerEvent {
    /// A "new item" event: its id is the resource id.
    pub fn created(event: &str, resource_id: &str, occurred_at: DateTime<Utc>) -> Self {
        Self::with_id(event, resource_id, resource_id, occurred_at)
    }

    /// A "changed item" event: a new id per change, `{resource_id}-{updated_at_ms}`.
    pub fn changed(event: &str, resource_id: &str, updated_at: DateTime<Utc>) -> Self {
        let id = format!("{resource_id}-{}", updated_at.timestamp_millis());
        Self::with_id(event, &id, resource_id, updated_at)
    }

    /// An event with an explicit id.
    pub fn with_id(event: &str, id: &str, resource_id: &str, occurred_at: DateTime<Utc>) -> Self {
        Self {
            id: id.to_string(),
            event: event.to_string(),
            occurred_at: occurred_at.to_rfc3339_opts(SecondsFormat::Millis, false),
            resource_id: resource_id.to_string(),
            fields: Map::new(),
        }
    }

    /// Adds a flat field (nested values are flattened by the caller, `parent_child`).
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_string(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_in_snake_case_and_round_trips() {
        let mut e = SyncEvent::new(Source::Dingtalk, EventKind::CalendarEvent, Action::Updated);
        e.ids.insert("event_id".into(), "e1".into());
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(v["source"], "dingtalk");
        assert_eq!(v["kind"], "calendar_event");
        assert_eq!(v["action"], "updated");
        let back: SyncEvent = serde_json::from_value(v).expect("parse");
        assert_eq!(back, e);
        assert_eq!(e.audit_action(), "dingtalk.calendar_event.updated");
    }

    #[test]
    fn unknown_names_read_as_unknown() {
        let v = serde_json::json!({"source":"graph","kind":"sticker","action":"pinned"});
        let e: SyncEvent = serde_json::from_value(v).expect("parse");
        assert_eq!(e.kind, EventKind::Unknown);
        assert_eq!(e.action, Action::Unknown);
    }
}
