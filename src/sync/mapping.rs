//! Pure translations between DingTalk objects and Graph request bodies (shapes checked
//! against Graph's OpenAPI schemas by the Graph fake), plus the bridge's origin marker.

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde_json::{Value, json};

/// The single-value extended property every item the bridge writes carries; its value is
/// the source id (`dingtalk:<kind>:<id>`), so retries find the item and echoes are seen.
pub use crate::graph::ORIGIN_PROPERTY_ID as ORIGIN_PROPERTY;

/// `applicationName` on To Do linked resources written by the bridge.
pub const LINKED_APP_NAME: &str = "DingTalk";

/// The origin value for a DingTalk object.
pub fn origin(kind: &str, id: &str) -> String {
    format!("dingtalk:{kind}:{id}")
}

/// Windows time-zone name for the IANA zones our users live in (Graph prefers Windows
/// names; others are passed through, which Graph reportedly also accepts).
pub fn windows_time_zone(iana: &str) -> &str {
    match iana {
        "Asia/Shanghai" | "Asia/Chongqing" | "Asia/Harbin" | "Asia/Urumqi" | "Asia/Hong_Kong"
        | "Asia/Macau" | "PRC" => "China Standard Time",
        "Asia/Taipei" => "Taipei Standard Time",
        "Asia/Singapore" | "Asia/Kuala_Lumpur" => "Singapore Standard Time",
        "Asia/Tokyo" => "Tokyo Standard Time",
        "Asia/Seoul" => "Korea Standard Time",
        "Europe/London" => "GMT Standard Time",
        "Europe/Berlin" | "Europe/Amsterdam" | "Europe/Vienna" | "Europe/Zurich" => {
            "W. Europe Standard Time"
        }
        "Europe/Paris" | "Europe/Brussels" | "Europe/Madrid" => "Romance Standard Time",
        "America/New_York" => "Eastern Standard Time",
        "America/Chicago" => "Central Standard Time",
        "America/Los_Angeles" => "Pacific Standard Time",
        "Australia/Sydney" => "AUS Eastern Standard Time",
        "UTC" | "Etc/UTC" | "GMT" => "UTC",
        other => other,
    }
}

/// IANA name for a Windows zone (the inverse for the zones above).
pub fn iana_time_zone(windows: &str) -> &str {
    match windows {
        "China Standard Time" => "Asia/Shanghai",
        "Taipei Standard Time" => "Asia/Taipei",
        "Singapore Standard Time" => "Asia/Singapore",
        "Tokyo Standard Time" => "Asia/Tokyo",
        "Korea Standard Time" => "Asia/Seoul",
        "GMT Standard Time" => "Europe/London",
        "W. Europe Standard Time" => "Europe/Berlin",
        "Romance Standard Time" => "Europe/Paris",
        "Eastern Standard Time" => "America/New_York",
        "Central Standard Time" => "America/Chicago",
        "Pacific Standard Time" => "America/Los_Angeles",
        "AUS Eastern Standard Time" => "Australia/Sydney",
        other => other,
    }
}

/// UTC offset in minutes of zones without daylight saving time (others stay in UTC).
pub fn fixed_offset_minutes(iana: &str) -> Option<i32> {
    Some(match iana {
        "Asia/Shanghai" | "Asia/Taipei" | "Asia/Singapore" | "Asia/Hong_Kong" | "Asia/Macau"
        | "Asia/Kuala_Lumpur" => 8 * 60,
        "Asia/Tokyo" | "Asia/Seoul" => 9 * 60,
        "UTC" | "Etc/UTC" => 0,
        _ => return None,
    })
}

/// Graph `dateTimeTimeZone` from a DingTalk `{dateTime, timeZone}` or `{date}`: the wall
/// time in its own zone, so the zone survives the trip.
fn graph_time(dt: &Value, all_day_fallback_zone: &str) -> Option<Value> {
    if let Some(date) = dt.get("date").and_then(Value::as_str) {
        return Some(json!({
            "dateTime": format!("{date}T00:00:00"),
            "timeZone": windows_time_zone(all_day_fallback_zone),
        }));
    }
    let raw = dt.get("dateTime").and_then(Value::as_str)?;
    let zone = dt
        .get("timeZone")
        .and_then(Value::as_str)
        .unwrap_or(all_day_fallback_zone);
    // DingTalk sends ISO-8601 with an offset; Graph wants the local wall time plus a zone.
    let wall = match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => t.naive_local().format("%Y-%m-%dT%H:%M:%S").to_string(),
        Err(_) => raw.to_string(),
    };
    Some(json!({ "dateTime": wall, "timeZone": windows_time_zone(zone) }))
}

/// A Graph event body from a DingTalk calendar event (`get event` answer).
pub fn event_from_dingtalk(ev: &Value, origin_value: &str, default_zone: &str) -> Option<Value> {
    let start = graph_time(ev.get("start")?, default_zone)?;
    let end = graph_time(ev.get("end")?, default_zone)?;
    let mut body = json!({
        "subject": ev.get("summary").and_then(Value::as_str).unwrap_or("(DingTalk event)"),
        "body": {
            "contentType": "text",
            "content": ev.get("description").and_then(Value::as_str).unwrap_or(""),
        },
        "start": start,
        "end": end,
        "isAllDay": ev.get("isAllDay").and_then(Value::as_bool).unwrap_or(false),
        "singleValueExtendedProperties": [{ "id": ORIGIN_PROPERTY, "value": origin_value }],
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

/// A Graph `dateTimeTimeZone` in UTC from Unix milliseconds.
pub fn utc_time(ms: i64) -> Option<Value> {
    let t = Utc.timestamp_millis_opt(ms).single()?;
    Some(json!({
        "dateTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        "timeZone": "UTC",
    }))
}

/// A To Do task body from a DingTalk todo (`get task` answer), linked back to DingTalk.
pub fn task_from_dingtalk(task: &Value, task_id: &str) -> Value {
    let done = task.get("done").and_then(Value::as_bool).unwrap_or(false);
    let mut body = json!({
        "title": task.get("subject").and_then(Value::as_str).unwrap_or("(DingTalk todo)"),
        "body": {
            "contentType": "text",
            "content": task.get("description").and_then(Value::as_str).unwrap_or(""),
        },
        "status": if done { "completed" } else { "notStarted" },
        "linkedResources": [linked_resource(task, task_id)],
    });
    if let Some(due) = task
        .get("dueTime")
        .and_then(Value::as_i64)
        .and_then(utc_time)
    {
        body["dueDateTime"] = due;
    }
    if let Some(p) = task.get("priority").and_then(Value::as_i64) {
        body["importance"] = json!(match p {
            p if p >= 30 => "high",
            p if p <= 10 => "low",
            _ => "normal",
        });
    }
    body
}

/// The content version of a To Do task as both sides carry it: title, done, due day.
/// Equal versions mean there is nothing to relay (a write of the bridge coming back, or
/// an edit of a field DingTalk does not hold). Takes a Graph task or request body.
pub fn task_version(task: &Value) -> String {
    use sha2::{Digest, Sha256};
    let title = task
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    let done = task.get("status").and_then(Value::as_str) == Some("completed");
    let due: String = task
        .pointer("/dueDateTime/dateTime")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(10)
        .collect();
    let digest = Sha256::digest(format!("{title}\n{done}\n{due}").as_bytes());
    hex::encode(&digest[..12])
}

/// A DingTalk todo body (create or update) from a Graph To Do task; `source_id` is set on
/// creates so that a retried create finds the first todo.
pub fn todo_from_task(task: &Value, source_id: Option<&str>) -> Value {
    let subject = title_or(task, "title", "(Outlook task)", 1024);
    let description = body_preview(task, 4096);
    let mut body = json!({
        "subject": subject,
        "description": description,
        "done": task.get("status").and_then(Value::as_str) == Some("completed"),
    });
    if let Some(ms) = task.get("dueDateTime").and_then(graph_time_ms) {
        body["dueTime"] = json!(ms);
    }
    if let Some(source) = source_id {
        body["sourceId"] = json!(source);
        // DingTalk creates todos open; `done` goes with the update that may follow.
        if let Some(o) = body.as_object_mut() {
            o.remove("done");
        }
    }
    body
}

/// Unix milliseconds of a Graph `dateTimeTimeZone` (zones without a known fixed offset
/// are read as UTC, as Graph answers by default).
fn graph_time_ms(dt: &Value) -> Option<i64> {
    let raw = dt.get("dateTime").and_then(Value::as_str)?;
    let naive = chrono::NaiveDateTime::parse_from_str(
        raw.split('.').next().unwrap_or(raw),
        "%Y-%m-%dT%H:%M:%S",
    )
    .ok()?;
    let zone = iana_time_zone(dt.get("timeZone").and_then(Value::as_str).unwrap_or("UTC"));
    let offset_secs = i64::from(fixed_offset_minutes(zone).unwrap_or(0)) * 60;
    Some((naive.and_utc().timestamp() - offset_secs) * 1000)
}

fn linked_resource(task: &Value, task_id: &str) -> Value {
    let mut link = json!({
        "applicationName": LINKED_APP_NAME,
        "displayName": task.get("subject").and_then(Value::as_str).unwrap_or("DingTalk todo"),
        "externalId": task_id,
    });
    if let Some(url) = task
        .pointer("/detailUrl/pcUrl")
        .or_else(|| task.pointer("/detailUrl/appUrl"))
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("http"))
    {
        link["webUrl"] = json!(url);
    }
    link
}

/// A Graph contact body from a DingTalk user (`topapi/v2/user/get` result).
pub fn contact_from_dingtalk(user: &Value, origin_value: &str) -> Value {
    let name = user.get("name").and_then(Value::as_str).unwrap_or("");
    let mut body = json!({
        "displayName": name,
        "givenName": name,
        "singleValueExtendedProperties": [{ "id": ORIGIN_PROPERTY, "value": origin_value }],
    });
    // DingTalk often has the same address as `email` and `org_email`; mail addresses
    // compare without case in practice, so the first spelling is kept, once.
    let mut seen: Vec<String> = Vec::new();
    let mut emails: Vec<Value> = Vec::new();
    for e in ["email", "org_email"]
        .iter()
        .filter_map(|k| user.get(*k).and_then(Value::as_str))
        .map(str::trim)
        .filter(|e| e.contains('@'))
    {
        let folded = e.to_lowercase();
        if !seen.contains(&folded) {
            seen.push(folded);
            emails.push(json!({ "address": e, "name": name }));
        }
    }
    if !emails.is_empty() {
        body["emailAddresses"] = Value::Array(emails);
    }
    if let Some(m) = user
        .get("mobile")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    {
        body["mobilePhone"] = json!(m);
    }
    if let Some(t) = user
        .get("title")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        body["jobTitle"] = json!(t);
    }
    body
}

/// `t` as wall time in `zone` (Windows or IANA name) and the zone's name to print beside
/// it: `zone` when its offset is fixed, otherwise UTC and `"UTC"` (zones with daylight
/// saving time are not converted, as everywhere in this module).
pub fn in_zone(t: DateTime<Utc>, zone: &str) -> (DateTime<FixedOffset>, &str) {
    match fixed_offset_minutes(iana_time_zone(zone)).and_then(|m| FixedOffset::east_opt(m * 60)) {
        Some(offset) => (t.with_timezone(&offset), zone),
        None => (t.fixed_offset(), "UTC"),
    }
}

/// What a relayed DingTalk message needs.
#[derive(Debug, Clone, Default)]
pub struct ChatMessage {
    /// Sender display name.
    pub sender: String,
    /// Group title (or "1:1 chat").
    pub conversation: String,
    /// When it was sent (Unix ms).
    pub sent_at_ms: i64,
    /// Text content.
    pub text: String,
    /// Where a person can open it.
    pub link: Option<String>,
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A Graph message body (created in a folder as a received item) for a DingTalk message.
pub fn mail_from_chat(msg: &ChatMessage, mailbox: &str, origin_value: &str, zone: &str) -> Value {
    let first_line: String = msg
        .text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(60)
        .collect();
    let sent: DateTime<Utc> = Utc
        .timestamp_millis_opt(msg.sent_at_ms)
        .single()
        .unwrap_or_else(Utc::now);
    let (local, zone) = in_zone(sent, zone);
    let link = msg
        .link
        .as_deref()
        .map(|l| {
            format!(
                r#"<p><a href="{0}">Open in DingTalk</a></p>"#,
                escape_html(l)
            )
        })
        .unwrap_or_default();
    let html = format!(
        "<p><b>{}</b> in <b>{}</b> at {} ({zone})</p><p>{}</p>{link}",
        escape_html(&msg.sender),
        escape_html(&msg.conversation),
        local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        escape_html(&msg.text).replace('\n', "<br>"),
    );
    json!({
        "subject": format!("[DingTalk] {}: {}", msg.conversation, first_line),
        "body": { "contentType": "html", "content": html },
        "from": { "emailAddress": { "name": format!("{} (DingTalk)", msg.sender), "address": mailbox } },
        "toRecipients": [{ "emailAddress": { "address": mailbox } }],
        "receivedDateTime": sent.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "sentDateTime": sent.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "singleValueExtendedProperties": [{ "id": ORIGIN_PROPERTY, "value": origin_value }],
    })
}

/// `field` of a Graph item when it holds more than whitespace, else `placeholder`; at
/// most `max` characters (DingTalk's length limits).
pub fn title_or(item: &Value, field: &str, placeholder: &str, max: usize) -> String {
    item.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(placeholder)
        .chars()
        .take(max)
        .collect()
}

/// The plain-text preview of a Graph item's body (`/body/content`), at most `max`
/// characters.
pub fn body_preview(item: &Value, max: usize) -> String {
    text_preview(
        item.pointer("/body/content")
            .and_then(Value::as_str)
            .unwrap_or(""),
        max,
    )
}

/// Plain text of an HTML body, for previews.
pub fn text_preview(html_or_text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in html_or_text.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let collapsed = out
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if collapsed.chars().count() > max_chars {
        let cut: String = collapsed.chars().take(max_chars).collect();
        format!("{cut}…")
    } else {
        collapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_version_covers_title_done_and_due_day_only() {
        let graph = json!({"id": "AAMkT1", "title": " Ship papers ", "status": "completed",
            "dueDateTime": {"dateTime": "2026-01-05T00:00:00.0000000", "timeZone": "UTC"},
            "body": {"content": "notes", "contentType": "text"}, "changeKey": "x"});
        // The body the DingTalk → Outlook relay writes for the same content.
        let written = task_from_dingtalk(
            &json!({"subject": "Ship papers", "done": true, "dueTime": 1_767_571_200_000i64}),
            "dt-1",
        );
        assert_eq!(task_version(&graph), task_version(&written));
        let mut edited = graph.clone();
        edited["status"] = json!("notStarted");
        assert_ne!(task_version(&graph), task_version(&edited));
        let mut notes = graph.clone();
        notes["body"]["content"] = json!("other notes");
        assert_eq!(task_version(&graph), task_version(&notes));
    }

    #[test]
    fn outlook_tasks_become_dingtalk_todos() {
        let task = json!({"title": "Ship papers", "status": "completed",
            "body": {"contentType": "html", "content": "<p>Call&nbsp;Li</p>"},
            "dueDateTime": {"dateTime": "2026-01-05T00:00:00.0000000", "timeZone": "China Standard Time"}});
        let create = todo_from_task(&task, Some("outlook-task-1"));
        assert_eq!(create["subject"], "Ship papers");
        assert_eq!(create["description"], "Call Li");
        assert_eq!(create["sourceId"], "outlook-task-1");
        // Midnight in Shanghai is 16:00 UTC the day before.
        assert_eq!(create["dueTime"], 1_767_542_400_000i64);
        assert!(
            create.get("done").is_none(),
            "creates are open; done is an update"
        );
        let update = todo_from_task(&task, None);
        assert_eq!(update["done"], true);
        assert!(update.get("sourceId").is_none());
        let bare = todo_from_task(&json!({"title": "  "}), None);
        assert_eq!(bare["subject"], "(Outlook task)");
        assert!(bare.get("dueTime").is_none());
    }

    #[test]
    fn dingtalk_event_times_keep_their_wall_time_and_zone() {
        let ev = json!({
            "summary": "Customs inspection",
            "start": {"dateTime": "2026-12-01T10:00:00+08:00", "timeZone": "Asia/Shanghai"},
            "end": {"dateTime": "2026-12-01T11:30:00+08:00", "timeZone": "Asia/Shanghai"},
            "location": {"displayName": "Lok Ma Chau"},
        });
        let body = event_from_dingtalk(&ev, "dingtalk:event:e1", "Asia/Hong_Kong").expect("event");
        assert_eq!(
            body["start"],
            json!({"dateTime": "2026-12-01T10:00:00", "timeZone": "China Standard Time"})
        );
        assert_eq!(body["end"]["dateTime"], "2026-12-01T11:30:00");
        assert_eq!(body["location"]["displayName"], "Lok Ma Chau");
        assert_eq!(
            body["singleValueExtendedProperties"][0]["value"],
            "dingtalk:event:e1"
        );
    }

    #[test]
    fn all_day_events_use_dates() {
        let ev = json!({"summary": "Holiday", "isAllDay": true,
            "start": {"date": "2026-12-25"}, "end": {"date": "2026-12-26"}});
        let body = event_from_dingtalk(&ev, "o", "Asia/Shanghai").expect("event");
        assert_eq!(body["isAllDay"], true);
        assert_eq!(body["start"]["dateTime"], "2026-12-25T00:00:00");
    }

    #[test]
    fn todos_become_tasks_linked_back_to_dingtalk() {
        let t = json!({"subject": "Send invoice", "done": true, "dueTime": 1764547200000i64,
            "priority": 40, "detailUrl": {"pcUrl": "https://example.com/t/1"}});
        let body = task_from_dingtalk(&t, "task-1");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["importance"], "high");
        assert_eq!(body["linkedResources"][0]["externalId"], "task-1");
        assert_eq!(
            body["linkedResources"][0]["webUrl"],
            "https://example.com/t/1"
        );
        assert_eq!(body["dueDateTime"]["timeZone"], "UTC");
    }

    #[test]
    fn chat_messages_become_received_mail_with_escaped_text() {
        let m = ChatMessage {
            sender: "王五".into(),
            conversation: "报关 <group>".into(),
            sent_at_ms: 1_764_547_200_000,
            text: "Papers ready <b>now</b>\nline 2".into(),
            link: None,
        };
        let body = mail_from_chat(
            &m,
            "ops@contoso.com",
            "dingtalk:message:m1",
            "Asia/Shanghai",
        );
        let html = body["body"]["content"].as_str().expect("html");
        assert!(html.contains("&lt;b&gt;now&lt;/b&gt;<br>line 2"));
        assert!(
            body["subject"]
                .as_str()
                .expect("s")
                .starts_with("[DingTalk] 报关 <group>: Papers")
        );
        assert_eq!(body["receivedDateTime"], "2025-12-01T00:00:00Z");
        assert_eq!(
            body["singleValueExtendedProperties"][0]["value"],
            "dingtalk:message:m1"
        );
    }

    #[test]
    fn previews_strip_markup_and_are_bounded() {
        assert_eq!(
            text_preview("<p>Hello&nbsp;<b>world</b></p>", 100),
            "Hello world"
        );
        assert_eq!(text_preview("abcdef", 3), "abc…");
    }

    #[test]
    fn a_chat_message_time_is_printed_in_the_routes_zone() {
        let m = ChatMessage {
            sender: "王五".into(),
            conversation: "报关".into(),
            sent_at_ms: 1_764_547_200_000, // 2025-12-01T00:00:00Z
            text: "hi".into(),
            link: None,
        };
        let html = |zone: &str| {
            let body = mail_from_chat(&m, "ops@contoso.com", "o", zone);
            assert_eq!(body["receivedDateTime"], "2025-12-01T00:00:00Z");
            body["body"]["content"].as_str().expect("html").to_string()
        };
        assert!(
            html("Asia/Shanghai").contains("at 2025-12-01T08:00:00+08:00 (Asia/Shanghai)"),
            "{}",
            html("Asia/Shanghai")
        );
        // Routes name their zone the Windows way by default.
        assert!(
            html("China Standard Time")
                .contains("at 2025-12-01T08:00:00+08:00 (China Standard Time)")
        );
        assert!(
            html("Tokyo Standard Time")
                .contains("at 2025-12-01T09:00:00+09:00 (Tokyo Standard Time)")
        );
        // A zone with daylight saving time has no fixed offset here: the time stays in
        // UTC and says so, rather than wearing the route's name.
        let berlin = html("Europe/Berlin");
        assert!(
            berlin.contains("at 2025-12-01T00:00:00+00:00 (UTC)"),
            "{berlin}"
        );
        assert!(!berlin.contains("Europe/Berlin"), "{berlin}");
    }

    #[test]
    fn a_contact_lists_an_address_once_when_email_and_org_email_match() {
        let same = json!({"name": "李四", "email": "Li.Si@Example.com", "org_email": " li.si@example.COM"});
        let c = contact_from_dingtalk(&same, "dingtalk:contact:u1");
        assert_eq!(
            c["emailAddresses"],
            json!([{"address": "Li.Si@Example.com", "name": "李四"}])
        );
        let two =
            json!({"name": "李四", "email": "li@home.example", "org_email": "li@corp.example"});
        let c = contact_from_dingtalk(&two, "dingtalk:contact:u1");
        let addresses: Vec<&str> = c["emailAddresses"]
            .as_array()
            .expect("addresses")
            .iter()
            .filter_map(|a| a["address"].as_str())
            .collect();
        assert_eq!(
            addresses,
            ["li@home.example", "li@corp.example"],
            "in order"
        );
    }

    #[test]
    fn contacts_carry_mail_phone_and_the_origin() {
        let u = json!({"name": "李四", "email": "li@example.com", "mobile": "+86-1380000", "title": "Broker"});
        let c = contact_from_dingtalk(&u, "dingtalk:contact:u1");
        assert_eq!(c["emailAddresses"][0]["address"], "li@example.com");
        assert_eq!(c["mobilePhone"], "+86-1380000");
        assert_eq!(c["jobTitle"], "Broker");
    }
}
