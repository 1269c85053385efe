//! Zapier/n8n triggers for what the notification worker sees in Outlook: flat payloads
//! with stable ids (a change gets `{id}-{lastModifiedDateTime}`), published once the
//! item has been fetched. Items the bridge wrote itself publish nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    store::Store,
    triggers::{self, TriggerEvent},
    worker::JobFailure,
};

fn time(v: &Value, key: &str) -> DateTime<Utc> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn mail_fields(t: TriggerEvent, route: &str, mailbox: &str, m: &Value) -> TriggerEvent {
    t.field("route", route)
        .field("mailbox", mailbox)
        .field("subject", text(m, "/subject"))
        .field("from_name", text(m, "/from/emailAddress/name"))
        .field("from_address", text(m, "/from/emailAddress/address"))
        .field("preview", text(m, "/bodyPreview"))
        .field("received_at", text(m, "/receivedDateTime"))
        .field(
            "has_attachments",
            m.get("hasAttachments")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        )
        .field("web_link", text(m, "/webLink"))
}

/// `outlook.mail.received` for a new message.
pub fn mail_received(route: &str, mailbox: &str, m: &Value) -> Option<TriggerEvent> {
    let id = m.get("id")?.as_str()?;
    let at = time(m, "receivedDateTime");
    Some(mail_fields(
        TriggerEvent::created(triggers::OUTLOOK_MAIL_RECEIVED, id, at),
        route,
        mailbox,
        m,
    ))
}

/// `outlook.mail.read` when a message is now read.
pub fn mail_read(route: &str, mailbox: &str, m: &Value) -> Option<TriggerEvent> {
    if m.get("isRead").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let id = m.get("id")?.as_str()?;
    let at = time(m, "lastModifiedDateTime");
    Some(mail_fields(
        TriggerEvent::changed(triggers::OUTLOOK_MAIL_READ, id, at),
        route,
        mailbox,
        m,
    ))
}

/// `outlook.event.changed` for a created, updated or cancelled event.
pub fn event_changed(
    route: &str,
    mailbox: &str,
    id: &str,
    ev: Option<&Value>,
    change: &str,
) -> TriggerEvent {
    let empty = Value::Null;
    let ev = ev.unwrap_or(&empty);
    TriggerEvent::changed(
        triggers::OUTLOOK_EVENT_CHANGED,
        id,
        time(ev, "lastModifiedDateTime"),
    )
    .field("route", route)
    .field("mailbox", mailbox)
    .field("change", change)
    .field("subject", text(ev, "/subject"))
    .field("start", text(ev, "/start/dateTime"))
    .field("start_time_zone", text(ev, "/start/timeZone"))
    .field("end", text(ev, "/end/dateTime"))
    .field(
        "is_cancelled",
        ev.get("isCancelled")
            .and_then(Value::as_bool)
            .unwrap_or(change == "deleted"),
    )
    .field("web_link", text(ev, "/webLink"))
}

/// `outlook.contact.changed` (contacts are watched for triggers; DingTalk has no place
/// for personal contacts, so they are not relayed).
pub fn contact_changed(route: &str, mailbox: &str, id: &str, change: &str) -> TriggerEvent {
    TriggerEvent::changed(triggers::OUTLOOK_CONTACT_CHANGED, id, Utc::now())
        .field("route", route)
        .field("mailbox", mailbox)
        .field("change", change)
}

/// `outlook.task.changed` for a To Do task found changed by delta polling (`change`:
/// `created`, `updated` or `deleted`).
pub fn task_changed(
    route: &str,
    mailbox: &str,
    id: &str,
    task: &Value,
    change: &str,
) -> TriggerEvent {
    TriggerEvent::changed(
        triggers::OUTLOOK_TASK_CHANGED,
        id,
        time(task, "lastModifiedDateTime"),
    )
    .field("route", route)
    .field("mailbox", mailbox)
    .field("change", change)
    .field("title", text(task, "/title"))
    .field("status", text(task, "/status"))
    .field(
        "completed",
        task.get("status").and_then(Value::as_str) == Some("completed"),
    )
    .field("importance", text(task, "/importance"))
    .field("due", text(task, "/dueDateTime/dateTime"))
    .field("due_time_zone", text(task, "/dueDateTime/timeZone"))
}

/// Publishes; a store failure makes the job retry (publishing again is harmless).
pub async fn publish(store: &dyn Store, event: Option<TriggerEvent>) -> Result<(), JobFailure> {
    if let Some(e) = event {
        triggers::publish(store, &e)
            .await
            .map_err(|e| JobFailure::transient(format!("publishing a trigger: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mail_triggers_are_flat_with_stable_ids() {
        let m = json!({"id": "AAMk1", "subject": "Customs", "isRead": true,
            "from": {"emailAddress": {"name": "Client", "address": "c@example.com"}},
            "receivedDateTime": "2026-11-25T08:00:00Z", "lastModifiedDateTime": "2026-11-25T09:00:00Z"});
        let received = mail_received("r", "ops@contoso.com", &m).expect("received");
        let again = mail_received("r", "ops@contoso.com", &m).expect("received");
        assert_eq!(received.id, again.id);
        let read = mail_read("r", "ops@contoso.com", &m).expect("read");
        assert_ne!(read.id, received.id, "a change gets its own id");
        let unread = json!({"id": "AAMk1", "isRead": false});
        assert!(mail_read("r", "m", &unread).is_none());
    }
}
