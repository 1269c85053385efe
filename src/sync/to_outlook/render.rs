//! Pure rendering of DingTalk events for Outlook and for the triggers: what a relayed
//! chat message shows, which files it carries, and the trigger each event publishes. The
//! Graph request bodies themselves are built in [`crate::sync::mapping`].

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    sync::{EventKind, SyncEvent, mapping::ChatMessage},
    triggers::{self, TriggerEvent},
};

/// One file a DingTalk message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFile {
    /// The code to exchange for a download URL.
    pub download_code: String,
    /// File name for the attachment.
    pub name: String,
}

/// The `content` object of a robot message (an object, or JSON in a string).
fn content(raw: &Value) -> Value {
    match raw.get("content") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}

/// The files of a robot message: `file`, `picture`, `video`, `audio` carry one
/// `downloadCode`; `richText` one per picture.
pub fn message_files(raw: &Value) -> Vec<MessageFile> {
    let msgtype = raw.get("msgtype").and_then(Value::as_str).unwrap_or("");
    let c = content(raw);
    let code = |v: &Value| {
        v.get("downloadCode")
            .or_else(|| v.get("pictureDownloadCode"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match msgtype {
        "file" | "picture" | "video" | "audio" => {
            let Some(download_code) = code(&c) else {
                return Vec::new();
            };
            let name = c
                .get("fileName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| match msgtype {
                    "picture" => "picture.png".into(),
                    "video" => format!(
                        "video.{}",
                        c.get("videoType").and_then(Value::as_str).unwrap_or("mp4")
                    ),
                    "audio" => "audio.amr".into(),
                    _ => "file".into(),
                });
            vec![MessageFile {
                download_code,
                name,
            }]
        }
        "richText" => c
            .get("richText")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(code)
            .enumerate()
            .map(|(i, download_code)| MessageFile {
                download_code,
                name: format!("picture-{}.png", i + 1),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What a relayed message shows: sender, conversation, time, text and a link back.
pub fn chat_message(event: &SyncEvent, fallback_ms: i64) -> ChatMessage {
    let raw = &event.raw;
    let s = |k: &str| {
        raw.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let c = content(raw);
    let text = event.text.clone().unwrap_or_else(|| {
        match raw.get("msgtype").and_then(Value::as_str).unwrap_or("") {
            "richText" => c
                .get("richText")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            "file" => format!(
                "[file] {}",
                c.get("fileName").and_then(Value::as_str).unwrap_or("")
            ),
            "picture" => "[picture]".into(),
            "audio" => c
                .get("recognition")
                .and_then(Value::as_str)
                .map(|r| format!("[voice] {r}"))
                .unwrap_or_else(|| "[voice]".into()),
            "video" => "[video]".into(),
            other => format!("[{other}]"),
        }
    });
    let conversation_id = event.ids.get("conversation_id").cloned();
    let group = event.ids.get("conversation_type").map(String::as_str) == Some("2");
    ChatMessage {
        sender: s("senderNick")
            .or_else(|| event.ids.get("sender_staff_id").cloned())
            .unwrap_or_else(|| "DingTalk user".into()),
        conversation: s("conversationTitle").unwrap_or_else(|| {
            if group {
                "DingTalk group".into()
            } else {
                "1:1 chat".into()
            }
        }),
        sent_at_ms: event.occurred_at_ms.unwrap_or(fallback_ms),
        text,
        // DingTalk documents no deep link to one message; this opens the conversation in
        // the DingTalk client (scheme as used by DingTalk's own share links, unverified).
        link: conversation_id.map(|cid| {
            format!(
                "dingtalk://dingtalkclient/action/chat?conversationId={}",
                percent_encoding::utf8_percent_encode(&cid, percent_encoding::NON_ALPHANUMERIC)
            )
        }),
    }
}

/// The trigger a DingTalk event publishes, when its kind has one. Ids are stable for the
/// same event, so publishing again (a retry) records and delivers nothing new.
pub fn trigger_of(event: &SyncEvent, fallback_ms: i64) -> Option<TriggerEvent> {
    let at_ms = event.occurred_at_ms.unwrap_or(fallback_ms);
    let at: DateTime<Utc> = DateTime::from_timestamp_millis(at_ms).unwrap_or_else(Utc::now);
    let id = |k: &str| event.ids.get(k).cloned().unwrap_or_default();
    match event.kind {
        EventKind::Message => {
            let msg_id = event.ids.get("message_id")?;
            let m = chat_message(event, fallback_ms);
            Some(
                TriggerEvent::created(triggers::DINGTALK_MESSAGE_RECEIVED, msg_id, at)
                    .field("conversation_id", id("conversation_id"))
                    .field("conversation_title", m.conversation)
                    .field("conversation_type", id("conversation_type"))
                    .field("sender_name", m.sender)
                    .field("sender_staff_id", id("sender_staff_id"))
                    .field("msgtype", id("msgtype"))
                    .field("text", m.text),
            )
        }
        EventKind::CalendarEvent => {
            let eid = event.ids.get("calendar_event_id")?;
            Some(
                TriggerEvent::changed(triggers::DINGTALK_CALENDAR_CHANGED, eid, at)
                    .field("change", event.action.as_str())
                    .field("calendar_id", id("calendar_id"))
                    .field("union_ids", id("union_ids")),
            )
        }
        EventKind::Todo => {
            let tid = event.ids.get("task_id")?;
            Some(
                TriggerEvent::changed(triggers::DINGTALK_TODO_CHANGED, tid, at)
                    .field("change", event.action.as_str())
                    .field("union_ids", id("union_ids")),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sync::{Action, Source};

    #[test]
    fn robot_files_and_rich_text_pictures_are_found() {
        let file = json!({"msgtype": "file", "content": {"downloadCode": "dc1", "fileName": "報關單.pdf"}});
        assert_eq!(
            message_files(&file),
            [MessageFile {
                download_code: "dc1".into(),
                name: "報關單.pdf".into()
            }]
        );
        let pic = json!({"msgtype": "picture", "content": "{\"downloadCode\":\"dc2\"}"});
        assert_eq!(message_files(&pic)[0].name, "picture.png");
        let rich = json!({"msgtype": "richText", "content": {"richText": [
            {"text": "see"}, {"downloadCode": "a", "type": "picture"}, {"downloadCode": "b", "type": "picture"}]}});
        let files = message_files(&rich);
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].download_code, "b");
        assert!(message_files(&json!({"msgtype": "text", "text": {"content": "hi"}})).is_empty());
    }

    #[test]
    fn chat_messages_show_sender_conversation_and_a_link() {
        let mut e = SyncEvent::new(Source::Dingtalk, EventKind::Message, Action::Created);
        e.ids.insert("conversation_id".into(), "cid+1".into());
        e.ids.insert("conversation_type".into(), "2".into());
        e.raw = json!({"msgtype": "file", "senderNick": "王五", "conversationTitle": "报关",
            "content": {"downloadCode": "x", "fileName": "a.pdf"}});
        let m = chat_message(&e, 5);
        assert_eq!(m.sender, "王五");
        assert_eq!(m.conversation, "报关");
        assert_eq!(m.text, "[file] a.pdf");
        assert_eq!(m.sent_at_ms, 5);
        assert!(m.link.expect("link").ends_with("conversationId=cid%2B1"));
    }

    #[test]
    fn triggers_have_stable_ids() {
        let mut e = SyncEvent::new(Source::Dingtalk, EventKind::Todo, Action::Updated);
        e.ids.insert("task_id".into(), "t1".into());
        e.occurred_at_ms = Some(1_700_000_000_000);
        let a = trigger_of(&e, 1).expect("trigger");
        let b = trigger_of(&e, 2).expect("trigger");
        assert_eq!(a.id, b.id);
        assert_eq!(a.event, triggers::DINGTALK_TODO_CHANGED);
        let c = SyncEvent::new(Source::Dingtalk, EventKind::Contact, Action::Created);
        assert!(trigger_of(&c, 1).is_none());
    }

    #[test]
    fn files_without_a_name_get_one_by_type_and_those_without_a_code_are_skipped() {
        let video =
            json!({"msgtype": "video", "content": {"downloadCode": "v", "videoType": "mov"}});
        assert_eq!(message_files(&video)[0].name, "video.mov");
        let video = json!({"msgtype": "video", "content": {"downloadCode": "v"}});
        assert_eq!(message_files(&video)[0].name, "video.mp4");
        let audio = json!({"msgtype": "audio", "content": {"downloadCode": "a", "fileName": ""}});
        assert_eq!(message_files(&audio)[0].name, "audio.amr");
        let file = json!({"msgtype": "file", "content": {"downloadCode": "f"}});
        assert_eq!(message_files(&file)[0].name, "file");
        let picture = json!({"msgtype": "picture", "content": {"pictureDownloadCode": "p"}});
        assert_eq!(message_files(&picture)[0].download_code, "p");
        let no_code =
            json!({"msgtype": "file", "content": {"downloadCode": "", "fileName": "a.pdf"}});
        assert!(message_files(&no_code).is_empty());
        assert!(message_files(&json!({"msgtype": "file", "content": "not json"})).is_empty());
    }

    #[test]
    fn a_message_without_text_shows_what_it_carries() {
        let shown = |raw: Value| {
            let mut e = SyncEvent::new(Source::Dingtalk, EventKind::Message, Action::Created);
            e.raw = raw;
            chat_message(&e, 0).text
        };
        assert_eq!(
            shown(json!({"msgtype": "richText", "content": {"richText": [
                {"text": "line 1"}, {"downloadCode": "a"}, {"text": "line 2"}]}})),
            "line 1\nline 2"
        );
        assert_eq!(shown(json!({"msgtype": "picture"})), "[picture]");
        assert_eq!(shown(json!({"msgtype": "video"})), "[video]");
        assert_eq!(
            shown(json!({"msgtype": "audio", "content": {"recognition": "hello"}})),
            "[voice] hello"
        );
        assert_eq!(shown(json!({"msgtype": "audio"})), "[voice]");
        assert_eq!(shown(json!({"msgtype": "sticker"})), "[sticker]");
    }

    #[test]
    fn a_one_to_one_message_falls_back_on_ids_and_the_event_text() {
        let mut e = SyncEvent::new(Source::Dingtalk, EventKind::Message, Action::Created);
        e.ids.insert("conversation_type".into(), "1".into());
        e.ids.insert("sender_staff_id".into(), "staff-7".into());
        e.text = Some("hi there".into());
        e.occurred_at_ms = Some(42);
        e.raw = json!({"msgtype": "text", "senderNick": "", "text": {"content": "ignored"}});
        let m = chat_message(&e, 5);
        assert_eq!(m.sender, "staff-7");
        assert_eq!(m.conversation, "1:1 chat");
        assert_eq!(m.text, "hi there");
        assert_eq!(m.sent_at_ms, 42);
        assert_eq!(m.link, None);
        e.ids.remove("sender_staff_id");
        e.ids.insert("conversation_type".into(), "2".into());
        let m = chat_message(&e, 5);
        assert_eq!(m.sender, "DingTalk user");
        assert_eq!(m.conversation, "DingTalk group");
    }

    #[test]
    fn message_and_calendar_triggers_carry_their_fields() {
        let mut m = SyncEvent::new(Source::Dingtalk, EventKind::Message, Action::Created);
        m.ids.insert("conversation_id".into(), "cid1".into());
        m.ids.insert("conversation_type".into(), "2".into());
        m.ids.insert("msgtype".into(), "text".into());
        m.text = Some("hello".into());
        m.raw = json!({"senderNick": "Li", "conversationTitle": "Ops"});
        assert!(trigger_of(&m, 1).is_none(), "no message id, no trigger");
        m.ids.insert("message_id".into(), "msg-1".into());
        let t = trigger_of(&m, 1_700_000_000_000).expect("trigger");
        assert_eq!(t.event, triggers::DINGTALK_MESSAGE_RECEIVED);
        assert_eq!((t.id.as_str(), t.resource_id.as_str()), ("msg-1", "msg-1"));
        assert_eq!(t.fields["conversation_title"], "Ops");
        assert_eq!(t.fields["sender_name"], "Li");
        assert_eq!(t.fields["text"], "hello");
        assert_eq!(t.fields["msgtype"], "text");
        assert!(t.occurred_at.starts_with("2023-11-14T22:13:20.000"));

        let mut c = SyncEvent::new(Source::Dingtalk, EventKind::CalendarEvent, Action::Deleted);
        c.ids.insert("calendar_event_id".into(), "ev1".into());
        c.occurred_at_ms = Some(1_700_000_000_123);
        let t = trigger_of(&c, 1).expect("trigger");
        assert_eq!(t.event, triggers::DINGTALK_CALENDAR_CHANGED);
        assert_eq!(t.id, "ev1-1700000000123");
        assert_eq!(t.fields["change"], "deleted");
        assert_eq!(t.fields["calendar_id"], "");
    }
}
