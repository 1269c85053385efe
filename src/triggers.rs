//! Trigger events for Zapier and n8n: their names, their flat payload, and the one
//! function every relay calls, [`publish`], which records the event for polling
//! (`GET /v1/triggers/{event}`) and queues one signed delivery per REST hook.
//!
//! Payloads are flat JSON objects (what Zapier's field mapper shows well): `id` (unique
//! and stable: the same event keeps its id, a *changed* resource gets a new id per
//! change, `{resource_id}-{updated_at_ms}`), `event`, `occurred_at` (RFC 3339 with
//! offset), `resource_id`, then the event's own fields.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

pub use crate::event::TriggerEvent;
use crate::{
    hooks,
    jobs::{HookDelivery, Task},
    store::{Dedupe, Job, Store, StoreError, StoreResult},
};

/// A DingTalk message reached a group or user the bridge watches.
pub const DINGTALK_MESSAGE_RECEIVED: &str = "dingtalk.message.received";
/// A DingTalk calendar event was created, changed or cancelled.
pub const DINGTALK_CALENDAR_CHANGED: &str = "dingtalk.calendar.changed";
/// A DingTalk to-do was created, changed or completed.
pub const DINGTALK_TODO_CHANGED: &str = "dingtalk.todo.changed";
/// A mail arrived in a synced DingTalk mailbox (found by the DingTalk Mail sync).
pub const DINGTALK_MAIL_RECEIVED: &str = "dingtalk.mail.received";
/// A mail in a synced DingTalk mailbox was marked read there.
pub const DINGTALK_MAIL_READ: &str = "dingtalk.mail.read";
/// A mail arrived in a watched Outlook mailbox.
pub const OUTLOOK_MAIL_RECEIVED: &str = "outlook.mail.received";
/// A mail in a watched mailbox was marked read.
pub const OUTLOOK_MAIL_READ: &str = "outlook.mail.read";
/// An Outlook calendar event was created, changed or cancelled.
pub const OUTLOOK_EVENT_CHANGED: &str = "outlook.event.changed";
/// An Outlook contact was created or changed.
pub const OUTLOOK_CONTACT_CHANGED: &str = "outlook.contact.changed";
/// A Microsoft To Do task was created, changed or completed.
pub const OUTLOOK_TASK_CHANGED: &str = "outlook.task.changed";
/// A relay exhausted its retries and went to the dead letters.
pub const SYNC_FAILED: &str = "sync.failed";

/// Every event name with a one-line description (the OpenAPI document lists the same).
pub const EVENTS: &[(&str, &str)] = &[
    (
        DINGTALK_MESSAGE_RECEIVED,
        "a DingTalk message reached a watched group or user",
    ),
    (
        DINGTALK_CALENDAR_CHANGED,
        "a DingTalk calendar event was created, changed or cancelled",
    ),
    (
        DINGTALK_TODO_CHANGED,
        "a DingTalk to-do was created, changed or completed",
    ),
    (
        DINGTALK_MAIL_RECEIVED,
        "a mail arrived in a synced DingTalk mailbox",
    ),
    (
        DINGTALK_MAIL_READ,
        "a mail in a synced DingTalk mailbox was marked read there",
    ),
    (
        OUTLOOK_MAIL_RECEIVED,
        "a mail arrived in a watched Outlook mailbox",
    ),
    (
        OUTLOOK_MAIL_READ,
        "a mail in a watched mailbox was marked read",
    ),
    (
        OUTLOOK_EVENT_CHANGED,
        "an Outlook calendar event was created, changed or cancelled",
    ),
    (
        OUTLOOK_CONTACT_CHANGED,
        "an Outlook contact was created or changed",
    ),
    (
        OUTLOOK_TASK_CHANGED,
        "a Microsoft To Do task was created, changed or completed",
    ),
    (
        SYNC_FAILED,
        "a relay exhausted its retries and went to the dead letters",
    ),
];

/// How many events of each kind are kept for polling.
pub const FEED_CAP: usize = 500;

/// `true` for a known event name.
pub fn is_event(name: &str) -> bool {
    EVENTS.iter().any(|(n, _)| *n == name)
}

/// Names of every event.
pub fn event_names() -> Vec<&'static str> {
    EVENTS.iter().map(|(n, _)| *n).collect()
}

/// What [`publish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// `false` when this event id had been published before (nothing new recorded).
    pub recorded: bool,
    /// Deliveries queued (a repeated publish queues none twice for the same hook).
    pub deliveries: usize,
}

/// Publishes an event: queues one `hook.deliver` job per active REST hook subscribed to
/// `event.event` (deduplicated per hook and event id, so a relay retried after a crash
/// cannot deliver twice), then records the event for polling. Safe to call again with
/// the same event; call it after the relay's own effect succeeded.
pub async fn publish(store: &dyn Store, event: &TriggerEvent) -> StoreResult<PublishReport> {
    if !is_event(&event.event) {
        return Err(StoreError::Corrupt(format!(
            "unknown trigger event `{}`",
            event.event
        )));
    }
    let payload = serde_json::to_value(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut report = PublishReport::default();
    for hook in hooks::active_for(store, &event.event).await? {
        let dedupe_id = format!("{}:{}", hook.id, event.id);
        let job = Task::HookDelivery(HookDelivery {
            hook_id: hook.id.clone(),
            event: event.clone(),
        })
        .into_job();
        let outcome = store
            .enqueue(
                &job,
                Some(Dedupe {
                    source: "hook",
                    event_id: &dedupe_id,
                    ttl: std::time::Duration::from_secs(7 * 24 * 3600),
                }),
            )
            .await?;
        if outcome == crate::store::EnqueueOutcome::Enqueued {
            report.deliveries += 1;
        }
    }
    report.recorded = store
        .feed_put(
            &feed_name(&event.event),
            &event.id,
            &payload.to_string(),
            FEED_CAP,
        )
        .await?;
    Ok(report)
}

/// Most recent events of one kind, newest first.
pub async fn recent(store: &dyn Store, event: &str, limit: usize) -> StoreResult<Vec<Value>> {
    store
        .feed_recent(&feed_name(event), limit)
        .await?
        .into_iter()
        .map(|raw| serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

fn feed_name(event: &str) -> String {
    format!("trigger:{event}")
}

/// The `sync.failed` event of a dead-lettered job.
pub fn sync_failed(job: &Job) -> TriggerEvent {
    TriggerEvent::with_id(
        SYNC_FAILED,
        &format!("{}-{}", job.id, job.attempts),
        &job.id,
        Utc::now(),
    )
    .field("job_kind", job.kind.clone())
    .field("attempts", job.attempts)
    .field("error", job.last_error.clone().unwrap_or_default())
    .field(
        "enqueued_at",
        DateTime::<Utc>::from_timestamp_millis(job.enqueued_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, false),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn a_changed_event_gets_a_new_id_per_change_and_keeps_the_resource_id() {
        let t1 = DateTime::from_timestamp_millis(1_700_000_000_000).expect("t");
        let t2 = DateTime::from_timestamp_millis(1_700_000_001_000).expect("t");
        let a = TriggerEvent::changed(OUTLOOK_EVENT_CHANGED, "AAMk1", t1);
        let b = TriggerEvent::changed(OUTLOOK_EVENT_CHANGED, "AAMk1", t2);
        assert_ne!(a.id, b.id);
        assert_eq!(a.resource_id, b.resource_id);
        let json = serde_json::to_value(a.field("subject", "x")).expect("json");
        assert_eq!(json["subject"], "x", "fields are flat");
        assert!(
            json["occurred_at"]
                .as_str()
                .expect("str")
                .ends_with("+00:00")
        );
    }

    #[tokio::test]
    async fn publishing_twice_records_once() {
        let store = MemoryStore::new(10);
        let e = TriggerEvent::created(SYNC_FAILED, "job-1", Utc::now());
        assert!(publish(&store, &e).await.expect("publish").recorded);
        assert!(!publish(&store, &e).await.expect("publish").recorded);
        assert_eq!(
            recent(&store, SYNC_FAILED, 10).await.expect("recent").len(),
            1
        );
        let bad = TriggerEvent::created("nope", "x", Utc::now());
        assert!(publish(&store, &bad).await.is_err());
    }
}
