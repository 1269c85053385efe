//! Pure rendering for DingTalk: an Outlook mail as markdown (alone or in a digest), an
//! Outlook event as a DingTalk calendar body, a mail's read-state todo, and the stable
//! ids (`msgUuid`, `x-client-token`, todo `sourceId`) that make retried writes idempotent.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::sync::{
    keys::TODO_SOURCE_PREFIX,
    mapping::{body_preview, fixed_offset_minutes, iana_time_zone, text_preview, title_or},
};

/// Characters of mail text shown in the DingTalk message.
pub const PREVIEW_CHARS: usize = 300;

/// The stable DingTalk `sourceId` of the todo for Graph message `id` on `route`.
pub fn todo_source_id(route: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("todo\n{route}\n{id}").as_bytes());
    format!("{TODO_SOURCE_PREFIX}{}", hex::encode(&digest[..16]))
}

/// DingTalk's `x-client-token` for a write (same input, same token: a retry within a
/// day is the same request).
pub fn client_token(input: &str) -> String {
    hex::encode(&Sha256::digest(input.as_bytes())[..16])
}

/// A DingTalk `start`/`end` from a Graph `dateTimeTimeZone` (Graph answers in UTC unless
/// asked otherwise): all-day → `{date}`; otherwise ISO-8601 with the offset of `zone`
/// (the route's zone when it has a fixed offset, else UTC).
fn dingtalk_time(dt: &Value, all_day: bool, zone: &str) -> Option<Value> {
    let raw = dt.get("dateTime").and_then(Value::as_str)?;
    let naive_text = raw.split('.').next().unwrap_or(raw);
    let naive = chrono::NaiveDateTime::parse_from_str(naive_text, "%Y-%m-%dT%H:%M:%S").ok()?;
    if all_day {
        return Some(json!({ "date": naive.format("%Y-%m-%d").to_string() }));
    }
    let src_zone = iana_time_zone(dt.get("timeZone").and_then(Value::as_str).unwrap_or("UTC"));
    let src_offset = fixed_offset_minutes(src_zone).unwrap_or(0);
    let utc = naive - chrono::Duration::minutes(src_offset.into());
    let target = iana_time_zone(zone);
    let (name, offset) = match fixed_offset_minutes(target) {
        Some(o) => (target, o),
        None => ("UTC", 0),
    };
    let fixed = chrono::FixedOffset::east_opt(offset * 60)?;
    let local = chrono::TimeZone::from_utc_datetime(&fixed, &utc);
    Some(json!({
        "dateTime": local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        "timeZone": name,
    }))
}

/// The DingTalk calendar body of an Outlook event.
pub fn dingtalk_event_from_graph(ev: &Value, zone: &str) -> Option<Value> {
    let all_day = ev.get("isAllDay").and_then(Value::as_bool).unwrap_or(false);
    let start = dingtalk_time(ev.get("start")?, all_day, zone)?;
    let end = dingtalk_time(ev.get("end")?, all_day, zone)?;
    let summary = title_or(ev, "subject", "(Outlook event)", 2048);
    let description = body_preview(ev, 4900);
    let mut body = json!({
        "summary": summary,
        "description": description,
        "start": start,
        "end": end,
        "isAllDay": all_day,
    });
    if let Some(place) = ev
        .pointer("/location/displayName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        body["location"] = json!({ "displayName": place });
    }
    Some(body)
}

/// A stable `msgUuid` for the relay of Graph item `id` on `route`.
pub fn msg_uuid(route: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("{route}\n{id}").as_bytes());
    format!("outlook-{}", hex::encode(&digest[..16]))
}

fn md_inline(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
        .replace('[', "\\[")
        .replace(']', "\\]")
        .trim()
        .to_string()
}

/// Title and markdown text of the DingTalk message for an Outlook mail.
pub fn mail_markdown(message: &Value) -> (String, String) {
    let subject = message
        .get("subject")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(md_inline)
        .unwrap_or_else(|| "(no subject)".into());
    let from = message
        .get("from")
        .or_else(|| message.get("sender"))
        .and_then(|f| f.get("emailAddress"));
    let name = from
        .and_then(|e| e.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let address = from
        .and_then(|e| e.get("address"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let sender = match (name.is_empty(), address.is_empty()) {
        (false, false) => format!("{} <{}>", md_inline(name), md_inline(address)),
        (false, true) => md_inline(name),
        (true, false) => md_inline(address),
        (true, true) => "(unknown sender)".into(),
    };
    let body = message
        .get("body")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_str)
        .or_else(|| message.get("bodyPreview").and_then(Value::as_str))
        .unwrap_or("");
    let preview = text_preview(body, PREVIEW_CHARS);
    let mut text = format!("#### 📧 {subject}\n\n**From:** {sender}\n\n");
    if !preview.is_empty() {
        text.push_str(&format!("> {preview}\n\n"));
    }
    let names: Vec<String> = message
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("name").and_then(Value::as_str))
        .map(md_inline)
        .collect();
    if !names.is_empty() {
        text.push_str(&format!("**Attachments:** {}\n\n", names.join(", ")));
    }
    if let Some(link) = message.get("webLink").and_then(Value::as_str) {
        text.push_str(&format!("[Open in Outlook]({link})\n"));
    }
    (format!("📧 {subject}"), text)
}

/// Title and markdown of one robot message carrying several queued mails, oldest first
/// (each entry's `text` is that mail's [`mail_markdown`] text).
pub fn digest_markdown(queued: &[Value]) -> (String, String) {
    let mut text = format!("#### 📬 {} new Outlook mails\n\n", queued.len());
    for v in queued {
        text.push_str(v.get("text").and_then(Value::as_str).unwrap_or(""));
        text.push_str("\n\n---\n\n");
    }
    (format!("📬 {} new Outlook mails", queued.len()), text)
}

/// The DingTalk todo standing for the read state of Outlook mail `id` on `route`: its
/// subject (bounded) and link, and the `sourceId` that makes a retried create find it.
pub fn mail_todo(route: &str, id: &str, message: &Value) -> Value {
    let subject: String = message
        .get("subject")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or("(no subject)")
        .chars()
        .take(1024)
        .collect();
    let mut task = json!({
        "sourceId": todo_source_id(route, id),
        "subject": subject,
    });
    if let Some(link) = message.get("webLink").and_then(Value::as_str) {
        task["detailUrl"] = json!({ "appUrl": link, "pcUrl": link });
    }
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_names_sender_subject_preview_attachments_and_link() {
        let m = json!({
            "subject": "Q3 [draft]\nplan",
            "from": {"emailAddress": {"name": "Li Lei", "address": "li@contoso.com"}},
            "body": {"contentType": "html", "content": "<p>Hello&nbsp;team</p>"},
            "attachments": [{"name": "plan.xlsx"}, {"name": "memo.pdf"}],
            "webLink": "https://outlook.office365.com/owa/?ItemID=AAMk1",
        });
        let (title, text) = mail_markdown(&m);
        assert_eq!(title, "📧 Q3 \\[draft\\] plan");
        assert!(text.contains("**From:** Li Lei <li@contoso.com>"), "{text}");
        assert!(text.contains("> Hello team"), "{text}");
        assert!(
            text.contains("**Attachments:** plan.xlsx, memo.pdf"),
            "{text}"
        );
        assert!(
            text.contains("[Open in Outlook](https://outlook.office365.com/owa/?ItemID=AAMk1)")
        );
    }

    #[test]
    fn previews_are_bounded_and_uuids_stable() {
        let long = "x".repeat(5000);
        let (_, text) = mail_markdown(&json!({"subject": "s", "bodyPreview": long}));
        assert!(text.len() < 1000);
        assert_eq!(msg_uuid("r", "AAMk1"), msg_uuid("r", "AAMk1"));
        assert_ne!(msg_uuid("r", "AAMk1"), msg_uuid("r", "AAMk2"));
        assert!(msg_uuid("r", "a").len() <= 64);
    }

    #[test]
    fn outlook_events_become_dingtalk_events_in_the_route_zone() {
        let ev = json!({
            "subject": "Review", "body": {"contentType": "html", "content": "<b>Agenda</b>"},
            "start": {"dateTime": "2026-01-05T02:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-01-05T03:30:00.0000000", "timeZone": "UTC"},
            "location": {"displayName": "Room 1"},
        });
        let b = dingtalk_event_from_graph(&ev, "China Standard Time").expect("body");
        assert_eq!(b["start"]["dateTime"], "2026-01-05T10:00:00+08:00");
        assert_eq!(b["start"]["timeZone"], "Asia/Shanghai");
        assert_eq!(b["end"]["dateTime"], "2026-01-05T11:30:00+08:00");
        assert_eq!(b["description"], "Agenda");
        assert_eq!(b["location"]["displayName"], "Room 1");
        let b = dingtalk_event_from_graph(&ev, "Europe/Berlin").expect("body");
        assert_eq!(b["start"]["dateTime"], "2026-01-05T02:00:00+00:00");
        assert_eq!(b["start"]["timeZone"], "UTC");
        let all_day = json!({"isAllDay": true, "subject": "Holiday",
            "start": {"dateTime": "2026-01-05T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-01-06T00:00:00.0000000", "timeZone": "UTC"}});
        let b = dingtalk_event_from_graph(&all_day, "China Standard Time").expect("body");
        assert_eq!(b["start"], json!({"date": "2026-01-05"}));
        assert_eq!(b["end"], json!({"date": "2026-01-06"}));
    }

    #[test]
    fn read_state_todo_source_ids_are_stable_per_route_and_mail() {
        let s = todo_source_id("r", "AAMk1");
        assert_eq!(s, todo_source_id("r", "AAMk1"));
        assert_ne!(s, todo_source_id("r2", "AAMk1"));
        assert!(s.starts_with(TODO_SOURCE_PREFIX) && s.len() <= 64);
    }

    #[test]
    fn the_sender_and_subject_fall_back_and_markdown_is_kept_inline() {
        let (title, text) = mail_markdown(&json!({
            "subject": "  ",
            "sender": {"emailAddress": {"address": "a@x.com"}},
            "bodyPreview": "short",
        }));
        assert_eq!(title, "📧 (no subject)");
        assert!(text.contains("**From:** a@x.com"), "{text}");
        assert!(text.contains("> short"), "{text}");
        let (_, text) = mail_markdown(&json!({"from": {"emailAddress": {"name": "Li\nLei"}}}));
        assert!(text.contains("**From:** Li Lei\n"), "{text}");
        assert!(!text.contains("> "), "no preview without a body: {text}");
        let (_, text) = mail_markdown(&json!({}));
        assert!(text.contains("**From:** (unknown sender)"), "{text}");
        assert!(!text.contains("Open in Outlook"), "{text}");
    }

    #[test]
    fn a_digest_lists_every_queued_mail_oldest_first() {
        let queued = [
            json!({"id": "a", "title": "📧 A", "text": "#### 📧 A"}),
            json!({"id": "b", "title": "📧 B", "text": "#### 📧 B"}),
        ];
        let (title, text) = digest_markdown(&queued);
        assert_eq!(title, "📬 2 new Outlook mails");
        assert_eq!(
            text,
            "#### 📬 2 new Outlook mails\n\n#### 📧 A\n\n---\n\n#### 📧 B\n\n---\n\n"
        );
    }

    #[test]
    fn a_mail_todo_has_a_bounded_subject_the_link_and_a_stable_source_id() {
        let long = "s".repeat(2000);
        let t = mail_todo(
            "r",
            "AAMk1",
            &json!({"subject": long, "webLink": "https://outlook.office365.com/owa/?ItemID=AAMk1"}),
        );
        assert_eq!(t["sourceId"], todo_source_id("r", "AAMk1"));
        assert_eq!(t["subject"].as_str().map(|s| s.chars().count()), Some(1024));
        assert_eq!(
            t["detailUrl"],
            json!({"appUrl": "https://outlook.office365.com/owa/?ItemID=AAMk1",
                   "pcUrl": "https://outlook.office365.com/owa/?ItemID=AAMk1"})
        );
        let t = mail_todo("r", "AAMk1", &json!({"subject": " "}));
        assert_eq!(t["subject"], "(no subject)");
        assert!(t.get("detailUrl").is_none());
    }

    #[test]
    fn client_tokens_are_stable_per_input() {
        let a = client_token("outlook-event:AAMk1");
        assert_eq!(a, client_token("outlook-event:AAMk1"));
        assert_ne!(a, client_token("outlook-event:AAMk2"));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn event_times_in_a_fixed_zone_are_read_in_it_and_events_need_start_and_end() {
        let ev = json!({
            "subject": " ",
            "start": {"dateTime": "2026-01-05T10:00:00", "timeZone": "China Standard Time"},
            "end": {"dateTime": "2026-01-05T11:00:00", "timeZone": "China Standard Time"},
        });
        let b = dingtalk_event_from_graph(&ev, "Tokyo Standard Time").expect("body");
        assert_eq!(b["start"]["dateTime"], "2026-01-05T11:00:00+09:00");
        assert_eq!(b["start"]["timeZone"], "Asia/Tokyo");
        assert_eq!(b["summary"], "(Outlook event)");
        assert_eq!(b["isAllDay"], false);
        assert!(b.get("location").is_none());
        assert!(dingtalk_event_from_graph(&json!({"end": ev["end"]}), "UTC").is_none());
        let bad = json!({"start": {"dateTime": "soon"}, "end": ev["end"]});
        assert!(dingtalk_event_from_graph(&bad, "UTC").is_none());
    }
}
