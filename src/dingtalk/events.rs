//! Normalisation of every DingTalk input (HTTP push, robot callback, Stream frame,
//! failed-push backfill) into [`SyncEvent`]s and queueable [`VerifiedEvent`]s. Pure,
//! except [`accept`], which also remembers robot session webhooks.
//!
//! Field casing differs between delivery modes (`EventType`/`eventType`,
//! `UnionIdList`/`unionIdList`, `UserId`/`userId`), so every lookup is case-insensitive.

use std::time::Duration;

use serde_json::{Map, Value};

use super::stream::{FrameSink, SinkError};
use crate::{
    error::{ApiError, ErrorCode},
    event::{Action, EventKind, Source, SyncEvent},
    ingest::{self, IngestReport, VerifiedEvent},
    jobs::Task,
    store::{Store, now_ms},
};
/// Source name of dedupe marks and metrics.
pub const SOURCE: &str = "dingtalk";
/// Stream topic of robot messages.
pub const ROBOT_TOPIC: &str = "/v1.0/im/bot/messages/get";
/// Store key prefix of remembered robot session webhooks (`<prefix><conversationId>`).
pub const SESSION_WEBHOOK_KEY: &str = "dingtalk:session_webhook:";
/// Event types answered but never queued (URL checks of the console).
pub const CHECK_EVENTS: &[&str] = &[
    "check_url",
    "check_create_suite_url",
    "check_update_suite_url",
];

/// A push payload that cannot be an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NormalizeError {
    /// The decrypted payload is not a JSON object.
    #[error("the event payload is not a JSON object")]
    NotAnObject,
}

/// Case-insensitive field lookup (first match in key order).
pub fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A string or number field as text (empty strings count as absent).
fn text(obj: &Map<String, Value>, name: &str) -> Option<String> {
    match field(obj, name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A list (or single value) field as comma-separated text.
fn list(obj: &Map<String, Value>, name: &str) -> Option<String> {
    match field(obj, name)? {
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join(","))
        }
        _ => text(obj, name),
    }
}

/// A time field in seconds or milliseconds (number or digit string) as Unix ms.
fn time_ms(obj: &Map<String, Value>, name: &str) -> Option<i64> {
    let t = text(obj, name)?;
    super::crypto::parse_timestamp_ms(&t).ok()
}

/// Kind and action of a DingTalk event type.
pub fn classify(event_type: &str, obj: &Map<String, Value>) -> (EventKind, Action) {
    match event_type {
        "calendar_event_change" => {
            let action = match text(obj, "changeType").as_deref() {
                Some("create") => Action::Created,
                Some("delete") => Action::Deleted,
                _ => Action::Updated,
            };
            (EventKind::CalendarEvent, action)
        }
        "todo_task_create" => (EventKind::Todo, Action::Created),
        "todo_task_update" => (EventKind::Todo, Action::Updated),
        "todo_task_delete" => (EventKind::Todo, Action::Deleted),
        "user_add_org" => (EventKind::Contact, Action::Created),
        "user_modify_org" | "user_active_org" => (EventKind::Contact, Action::Updated),
        "user_leave_org" => (EventKind::Contact, Action::Deleted),
        _ => (EventKind::Unknown, Action::Unknown),
    }
}

/// Ids every business event may carry, as (our name, DingTalk field, is a list).
const EVENT_IDS: &[(&str, &str, bool)] = &[
    ("event_id", "eventId", false),
    ("corp_id", "CorpId", false),
    ("biz_id", "BizId", false),
    ("calendar_event_id", "calendarEventId", false),
    ("calendar_id", "calendarId", false),
    ("legacy_calendar_event_id", "legacyCalendarEventId", false),
    ("task_id", "taskId", false),
    ("union_ids", "unionIdList", true),
    ("user_ids", "userId", true),
    ("dept_ids", "deptId", true),
    ("chat_id", "ChatId", false),
    ("open_conversation_id", "OpenConversationId", false),
    ("process_instance_id", "processInstanceId", false),
];

/// Normalises a business event given as one flat object (HTTP push form; Stream `data`
/// merged with its headers), with `raw` kept as given.
fn normalize_object(obj: &Map<String, Value>, raw: Value) -> SyncEvent {
    let event_type = text(obj, "EventType").unwrap_or_default();
    let (kind, action) = classify(&event_type, obj);
    let mut event = SyncEvent::new(Source::Dingtalk, kind, action);
    if !event_type.is_empty() {
        event.ids.insert("event_type".into(), event_type);
    }
    for (ours, theirs, is_list) in EVENT_IDS {
        let value = if *is_list {
            list(obj, theirs)
        } else {
            text(obj, theirs)
        };
        if let Some(v) = value {
            event.ids.insert((*ours).into(), v);
        }
    }
    if !event.ids.contains_key("corp_id")
        && let Some(corp) = text(obj, "eventCorpId").or_else(|| text(obj, "corpid"))
    {
        event.ids.insert("corp_id".into(), corp);
    }
    event.occurred_at_ms = time_ms(obj, "EventTime")
        .or_else(|| time_ms(obj, "eventBornTime"))
        .or_else(|| time_ms(obj, "calendarEventUpdateTime"))
        .or_else(|| time_ms(obj, "TimeStamp"));
    event.raw = raw;
    event
}

/// Normalises a decrypted HTTP-push payload (`{"EventType": …, flat fields}`).
pub fn normalize_push(plaintext_json: &Value) -> Result<SyncEvent, NormalizeError> {
    let obj = plaintext_json
        .as_object()
        .ok_or(NormalizeError::NotAnObject)?;
    Ok(normalize_object(obj, plaintext_json.clone()))
}

/// The event type of a push payload (`EventType`, any casing).
pub fn event_type(payload: &Value) -> Option<String> {
    payload.as_object().and_then(|o| text(o, "EventType"))
}

/// `true` for a robot message body (`msgtype` and `conversationId`, no `EventType`),
/// which may also arrive through the encrypted HTTP push channel.
pub fn is_robot_message(payload: &Value) -> bool {
    payload.as_object().is_some_and(|o| {
        text(o, "EventType").is_none()
            && text(o, "msgtype").is_some()
            && text(o, "conversationId").is_some()
    })
}

/// Normalises a robot message (HTTP callback body or Stream robot `data`).
pub fn normalize_robot(body: &Value) -> SyncEvent {
    let mut event = SyncEvent::new(Source::Dingtalk, EventKind::Message, Action::Created);
    event.raw = body.clone();
    let Some(obj) = body.as_object() else {
        return event;
    };
    for (ours, theirs) in [
        ("message_id", "msgId"),
        ("conversation_id", "conversationId"),
        ("conversation_type", "conversationType"),
        ("sender_staff_id", "senderStaffId"),
        ("sender_union_id", "senderUnionId"),
        ("sender_corp_id", "senderCorpId"),
        ("chatbot_corp_id", "chatbotCorpId"),
        ("chatbot_user_id", "chatbotUserId"),
        ("robot_code", "robotCode"),
        ("msgtype", "msgtype"),
        ("session_webhook_expires_at_ms", "sessionWebhookExpiredTime"),
    ] {
        if let Some(v) = text(obj, theirs) {
            event.ids.insert(ours.into(), v);
        }
    }
    if !event.ids.contains_key("message_id")
        && let Some(v) = text(obj, "messageId")
    {
        event.ids.insert("message_id".into(), v);
    }
    event.occurred_at_ms = time_ms(obj, "createAt");
    event.text = field(obj, "text")
        .and_then(Value::as_object)
        .and_then(|t| text(t, "content"))
        .or_else(|| text(obj, "content"));
    event
}

/// A normalised event ready for [`ingest::accept`], deduplicated by `dedupe_id`.
pub fn to_verified(event: SyncEvent, dedupe_id: Option<String>) -> VerifiedEvent {
    VerifiedEvent {
        source: SOURCE,
        event_id: dedupe_id,
        task: Task::DingtalkEvent(event),
    }
}

/// Dedupe id of a business event: its `eventId`. Shared by HTTP push, Stream and backfill,
/// so one event delivered through several of them is queued once.
pub fn event_dedupe_id(event: &SyncEvent) -> Option<String> {
    event.ids.get("event_id").map(|id| format!("event:{id}"))
}

/// Dedupe id of a robot message: its `msgId`.
pub fn message_dedupe_id(event: &SyncEvent) -> Option<String> {
    event.ids.get("message_id").map(|id| format!("msg:{id}"))
}

/// Queueable event of a business push payload.
pub fn verified_push(event: SyncEvent) -> VerifiedEvent {
    let id = event_dedupe_id(&event);
    to_verified(event, id)
}

/// Queueable `unknown` event of an authenticated push whose payload is not a JSON object,
/// deduplicated by a hash of its plaintext.
pub fn verified_unreadable(payload: Value, plaintext: &str) -> VerifiedEvent {
    use sha2::{Digest as _, Sha256};
    let mut event = SyncEvent::new(Source::Dingtalk, EventKind::Unknown, Action::Unknown);
    event.raw = payload;
    let id = format!("push:{}", hex::encode(Sha256::digest(plaintext.as_bytes())));
    to_verified(event, Some(id))
}

/// Queueable event of a robot message.
pub fn verified_robot(body: &Value) -> VerifiedEvent {
    let event = normalize_robot(body);
    let id = message_dedupe_id(&event);
    to_verified(event, id)
}

/// Events of one Stream frame: `frame_type` is `EVENT`, `CALLBACK` or `SYSTEM`, `headers`
/// the frame's headers and `data` its (already JSON-decoded) `data`. SYSTEM frames yield
/// nothing; every EVENT and CALLBACK yields one event (unknown ones as `unknown`). Queue
/// the result with [`accept`] and ACK the frame only after it succeeded.
pub fn from_stream(
    frame_type: &str,
    headers: &Map<String, Value>,
    data: &Value,
) -> Vec<VerifiedEvent> {
    match frame_type {
        "EVENT" => {
            // SDKs hand out the inner business data; accept the documented envelope too.
            let inner = match data.as_object() {
                Some(o) if field(o, "eventType").is_some() => field(o, "data").unwrap_or(data),
                _ => data,
            };
            let mut merged = inner.as_object().cloned().unwrap_or_default();
            let envelope = data.as_object().filter(|o| field(o, "eventType").is_some());
            for (ours, theirs) in [
                ("EventType", "eventType"),
                ("eventId", "eventId"),
                ("eventCorpId", "eventCorpId"),
                ("eventBornTime", "eventBornTime"),
            ] {
                let value = field(headers, theirs)
                    .or_else(|| envelope.and_then(|o| field(o, theirs)))
                    .cloned();
                if let Some(v) = value {
                    merged.insert(ours.to_string(), v);
                }
            }
            let raw = serde_json::json!({"headers": headers, "data": data});
            let event = normalize_object(&merged, raw);
            let id = event_dedupe_id(&event)
                .or_else(|| text(headers, "messageId").map(|m| format!("stream:{m}")));
            vec![to_verified(event, id)]
        }
        "CALLBACK" => {
            let topic = text(headers, "topic").unwrap_or_default();
            if topic == ROBOT_TOPIC {
                let event = normalize_robot(data);
                let id = message_dedupe_id(&event)
                    .or_else(|| text(headers, "messageId").map(|m| format!("stream:{m}")));
                vec![to_verified(event, id)]
            } else {
                let mut event =
                    SyncEvent::new(Source::Dingtalk, EventKind::Unknown, Action::Unknown);
                event.ids.insert("topic".into(), topic);
                event.raw = serde_json::json!({"headers": headers, "data": data});
                let id = text(headers, "messageId").map(|m| format!("stream:{m}"));
                if let Some(m) = &id {
                    event
                        .ids
                        .insert("stream_message_id".into(), m["stream:".len()..].to_string());
                }
                vec![to_verified(event, id)]
            }
        }
        _ => Vec::new(),
    }
}

/// A `get_call_back_failed_result` item (`{call_back_tag, event_time, <payload>}`) as a
/// queueable event. Items carry no signature (they came over an authenticated API call)
/// and may lack an `eventId`; those are deduplicated by a hash of tag, time and payload.
pub fn from_failed_item(item: &Value) -> VerifiedEvent {
    let empty = Map::new();
    let obj = item.as_object().unwrap_or(&empty);
    let tag = text(obj, "call_back_tag").unwrap_or_default();
    let payload = [
        tag.as_str(),
        "callbackData",
        "bpmsCallBackData",
        "roleLabelChange",
    ]
    .iter()
    .filter(|k| !k.is_empty())
    .find_map(|k| field(obj, k))
    .map(|v| match v {
        // Some payloads arrive as a JSON string.
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    });
    let mut merged = payload
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if field(&merged, "EventType").is_none() && !tag.is_empty() {
        merged.insert("EventType".into(), Value::String(tag.clone()));
    }
    if field(&merged, "EventTime").is_none()
        && let Some(t) = field(obj, "event_time")
    {
        merged.insert("EventTime".into(), t.clone());
    }
    let mut event = normalize_object(&merged, item.clone());
    event.ids.insert("delivery".into(), "backfill".into());
    let id = event_dedupe_id(&event).or_else(|| {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        h.update(tag.as_bytes());
        h.update(b"\n");
        h.update(
            field(obj, "event_time")
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
        h.update(b"\n");
        h.update(payload.map(|p| p.to_string()).unwrap_or_default());
        Some(format!("failed:{}", hex::encode(h.finalize())))
    });
    to_verified(event, id)
}

/// Robot session webhook of a queued event: (conversation id, webhook URL, expiry ms).
fn session_webhook(task: &Task) -> Option<(String, String, Option<i64>)> {
    let Task::DingtalkEvent(event) = task else {
        return None;
    };
    let raw = event.raw.as_object()?;
    let url = text(raw, "sessionWebhook")?;
    let conversation = text(raw, "conversationId")?;
    Some((conversation, url, time_ms(raw, "sessionWebhookExpiredTime")))
}

/// Remembers the session webhooks of robot messages (so later relays can reply in the
/// conversation until it expires), then dedupes and durably queues the events. The one
/// entry point of every DingTalk delivery mode.
pub async fn accept(
    store: &dyn Store,
    dedupe_ttl: Duration,
    events: Vec<VerifiedEvent>,
) -> Result<IngestReport, ApiError> {
    let now = now_ms();
    for e in &events {
        let Some((conversation, url, expires)) = session_webhook(&e.task) else {
            continue;
        };
        // DingTalk's session webhooks live about 90 minutes when no expiry is given.
        let expires = expires.unwrap_or(now + 90 * 60 * 1000);
        let Ok(ttl_ms) = u64::try_from(expires - now) else {
            continue;
        };
        if ttl_ms == 0 {
            continue;
        }
        let value = serde_json::json!({"url": url, "expires_at_ms": expires}).to_string();
        store
            .kv_put(
                &format!("{SESSION_WEBHOOK_KEY}{conversation}"),
                &value,
                Some(Duration::from_millis(ttl_ms)),
            )
            .await?;
    }
    ingest::accept(store, dedupe_ttl, events).await
}

/// The live session webhook of a conversation, if a robot callback left one that has
/// not expired (the store drops it at expiry).
pub async fn session_webhook_for(
    store: &dyn Store,
    conversation: &str,
) -> Result<Option<String>, crate::store::StoreError> {
    let raw = store
        .kv_get(&format!("{SESSION_WEBHOOK_KEY}{conversation}"))
        .await?;
    Ok(raw
        .and_then(|r| serde_json::from_str::<Value>(&r).ok())
        .filter(|v| v["expires_at_ms"].as_i64().is_none_or(|t| t > now_ms()))
        .and_then(|v| v["url"].as_str().map(str::to_string)))
}

/// [`accept`] as an [`ingest::AcceptFn`].
pub fn accept_boxed(
    store: &dyn Store,
    dedupe_ttl: Duration,
    events: Vec<VerifiedEvent>,
) -> futures::future::BoxFuture<'_, Result<IngestReport, ApiError>> {
    Box::pin(accept(store, dedupe_ttl, events))
}

/// Feeds Stream-mode frames into the same normalise → dedupe → enqueue path; `Ok` only
/// once queued, so the Stream client ACKs SUCCESS only then (LATER otherwise).
pub struct PipelineSink {
    store: crate::store::SharedStore,
    dedupe_ttl: Duration,
}

impl PipelineSink {
    /// A sink queuing into `store`.
    pub fn new(store: crate::store::SharedStore, dedupe_ttl: Duration) -> Self {
        Self { store, dedupe_ttl }
    }
}

#[async_trait::async_trait]
impl FrameSink for PipelineSink {
    async fn deliver(
        &self,
        frame_type: &str,
        headers: &serde_json::Map<String, Value>,
        data: &Value,
    ) -> Result<(), SinkError> {
        let events = from_stream(frame_type, headers, data);
        accept(self.store.as_ref(), self.dedupe_ttl, events)
            .await
            .map(|_| ())
            .map_err(sink_error)
    }
}

/// The Stream client's view of an [`accept`] failure: a store outage is worth a
/// redelivery, anything else is a refusal under its own code.
fn sink_error(e: ApiError) -> SinkError {
    match e.code {
        ErrorCode::StoreUnavailable => SinkError::StoreUnavailable(e.message),
        code => SinkError::Refused {
            code: code.as_str(),
            message: e.message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_store_outage_asks_for_redelivery_and_other_failures_keep_their_code() {
        let down = sink_error(ApiError::store_unavailable());
        assert!(matches!(down, SinkError::StoreUnavailable(_)));
        assert_eq!(down.code(), ErrorCode::StoreUnavailable.as_str());
        let deep = sink_error(ApiError::new(ErrorCode::InvalidInput, "too deep"));
        assert_eq!(deep.code(), "invalid_input");
        assert_eq!(deep.to_string(), "invalid_input: too deep");
    }

    fn payload(v: &VerifiedEvent) -> SyncEvent {
        match &v.task {
            Task::DingtalkEvent(e) => e.clone(),
            other => panic!("not a DingTalk event: {other:?}"),
        }
    }

    #[test]
    fn calendar_push_maps_change_type_to_action_and_keeps_ids() {
        let v = json!({"EventType":"calendar_event_change","eventId":"e1","CorpId":"ding1",
            "calendarEventId":"c1","unionIdList":["u1","u2"],"changeType":"delete","EventTime":1700000000000i64});
        let e = normalize_push(&v).expect("event");
        assert_eq!(
            (e.kind, e.action),
            (EventKind::CalendarEvent, Action::Deleted)
        );
        assert_eq!(e.ids["event_id"], "e1");
        assert_eq!(e.ids["calendar_event_id"], "c1");
        assert_eq!(e.ids["union_ids"], "u1,u2");
        assert_eq!(e.ids["corp_id"], "ding1");
        assert_eq!(e.occurred_at_ms, Some(1_700_000_000_000));
        assert_eq!(e.raw, v);
        let v = json!({"EventType":"calendar_event_change","changeType":"create"});
        assert_eq!(normalize_push(&v).expect("e").action, Action::Created);
        let v = json!({"EventType":"calendar_event_change"});
        assert_eq!(normalize_push(&v).expect("e").action, Action::Updated);
    }

    #[test]
    fn field_names_are_matched_case_insensitively() {
        let v = json!({"eventtype":"todo_task_create","taskId":"t1","UnionIdList":["u9"]});
        let e = normalize_push(&v).expect("event");
        assert_eq!((e.kind, e.action), (EventKind::Todo, Action::Created));
        assert_eq!(e.ids["union_ids"], "u9");
        let v = json!({"EventType":"user_leave_org","UserId":["a","b"],"TimeStamp":"1700000000"});
        let e = normalize_push(&v).expect("event");
        assert_eq!((e.kind, e.action), (EventKind::Contact, Action::Deleted));
        assert_eq!(e.ids["user_ids"], "a,b");
        assert_eq!(e.occurred_at_ms, Some(1_700_000_000_000));
        let v = json!({"EventType":"user_add_org","userId":["x"]});
        assert_eq!(normalize_push(&v).expect("e").kind, EventKind::Contact);
    }

    #[test]
    fn unknown_event_types_are_kept_as_unknown() {
        let v = json!({"EventType":"bpms_task_change","eventId":"e7"});
        let e = normalize_push(&v).expect("event");
        assert_eq!((e.kind, e.action), (EventKind::Unknown, Action::Unknown));
        assert_eq!(e.ids["event_type"], "bpms_task_change");
        assert_eq!(verified_push(e).event_id.as_deref(), Some("event:e7"));
        assert_eq!(
            normalize_push(&json!([1])),
            Err(NormalizeError::NotAnObject)
        );
    }

    #[test]
    fn robot_messages_read_text_from_either_place() {
        let body = json!({"msgId":"m1","conversationId":"cid","senderStaffId":"s1",
            "text":{"content":"hi"},"createAt":1700000000000i64,
            "sessionWebhook":"https://oapi.dingtalk.com/robot/sendBySession?session=x",
            "sessionWebhookExpiredTime":1700005400000i64});
        let e = normalize_robot(&body);
        assert_eq!((e.kind, e.action), (EventKind::Message, Action::Created));
        assert_eq!(e.text.as_deref(), Some("hi"));
        assert_eq!(e.ids["message_id"], "m1");
        assert_eq!(e.ids["conversation_id"], "cid");
        assert_eq!(e.ids["session_webhook_expires_at_ms"], "1700005400000");
        assert!(!e.ids.values().any(|v| v.contains("session=")));
        assert_eq!(e.raw["sessionWebhook"], body["sessionWebhook"]);
        let e = normalize_robot(&json!({"msgId":"m2","content":"top"}));
        assert_eq!(e.text.as_deref(), Some("top"));
        assert_eq!(verified_robot(&body).event_id.as_deref(), Some("msg:m1"));
    }

    #[test]
    fn stream_event_frames_take_type_and_id_from_headers() {
        let headers = json!({"topic":"*","messageId":"sm1","eventType":"todo_task_delete",
            "eventId":"ev1","eventBornTime":"1700000000000","eventCorpId":"ding9"});
        let data = json!({"taskId":"t1","unionIdList":["u1"]});
        let out = from_stream("EVENT", headers.as_object().expect("obj"), &data);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].event_id.as_deref(), Some("event:ev1"));
        assert_eq!(out[0].task.kind(), crate::jobs::DINGTALK_EVENT);
        let e = payload(&out[0]);
        assert_eq!((e.kind, e.action), (EventKind::Todo, Action::Deleted));
        assert_eq!(e.ids["task_id"], "t1");
        assert_eq!(e.ids["corp_id"], "ding9");
        assert_eq!(e.occurred_at_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn stream_event_in_the_documented_envelope_is_unwrapped() {
        let data = json!({"eventType":"calendar_event_change","eventId":"ev2","eventBornTime":1700000000000i64,
            "data":{"calendarEventId":"c2","changeType":"update"}});
        let out = from_stream("EVENT", &Map::new(), &data);
        let e = payload(&out[0]);
        assert_eq!(
            (e.kind, e.action),
            (EventKind::CalendarEvent, Action::Updated)
        );
        assert_eq!(e.ids["calendar_event_id"], "c2");
        assert_eq!(out[0].event_id.as_deref(), Some("event:ev2"));
    }

    #[test]
    fn stream_callbacks_are_robot_messages_or_unknown_and_system_frames_nothing() {
        let headers = json!({"topic":ROBOT_TOPIC,"messageId":"sm2"});
        let data = json!({"msgId":"m5","conversationId":"c","text":{"content":"x"}});
        let out = from_stream("CALLBACK", headers.as_object().expect("obj"), &data);
        assert_eq!(out[0].event_id.as_deref(), Some("msg:m5"));
        assert_eq!(payload(&out[0]).kind, EventKind::Message);
        let headers = json!({"topic":"/v1.0/card/instances/callback","messageId":"sm3"});
        let out = from_stream("CALLBACK", headers.as_object().expect("obj"), &json!({}));
        assert_eq!(payload(&out[0]).kind, EventKind::Unknown);
        assert_eq!(out[0].event_id.as_deref(), Some("stream:sm3"));
        assert!(from_stream("SYSTEM", &Map::new(), &json!({"opaque":"x"})).is_empty());
    }

    #[tokio::test]
    async fn accept_keeps_live_session_webhooks_and_queues_once() {
        let store = crate::store::memory::MemoryStore::new(100);
        let now = now_ms();
        let live = json!({"msgId":"m1","conversationId":"c1","sessionWebhook":"https://x/s?session=1",
            "sessionWebhookExpiredTime": now + 60_000});
        let expired = json!({"msgId":"m2","conversationId":"c2","sessionWebhook":"https://x/s?session=2",
            "sessionWebhookExpiredTime": now - 1});
        let events = vec![
            verified_robot(&live),
            verified_robot(&expired),
            verified_robot(&live),
        ];
        let report = accept(&store, Duration::from_secs(60), events)
            .await
            .expect("accepted");
        assert_eq!((report.enqueued, report.duplicates), (2, 1));
        let kept = store
            .kv_get(&format!("{SESSION_WEBHOOK_KEY}c1"))
            .await
            .expect("get")
            .expect("kept");
        assert!(kept.contains("session=1"));
        let gone = store
            .kv_get(&format!("{SESSION_WEBHOOK_KEY}c2"))
            .await
            .expect("get");
        assert!(gone.is_none());
    }

    #[tokio::test]
    async fn one_event_delivered_by_push_stream_and_backfill_is_queued_once() {
        let store = crate::store::memory::MemoryStore::new(100);
        let push = json!({"EventType":"todo_task_update","eventId":"same-1","taskId":"t1"});
        let headers = json!({"eventType":"todo_task_update","eventId":"same-1","messageId":"sm"});
        let mut events = vec![verified_push(normalize_push(&push).expect("event"))];
        events.extend(from_stream(
            "EVENT",
            headers.as_object().expect("obj"),
            &json!({"taskId":"t1"}),
        ));
        events.push(from_failed_item(
            &json!({"call_back_tag":"todo_task_update",
            "event_time":1,"callbackData":{"eventId":"same-1","taskId":"t1"}}),
        ));
        let report = accept(&store, Duration::from_secs(60), events)
            .await
            .expect("accepted");
        assert_eq!((report.enqueued, report.duplicates), (1, 2));
    }

    #[test]
    fn failed_items_use_the_payload_under_their_tag_and_a_stable_dedupe_id() {
        let item = json!({"call_back_tag":"user_add_org","event_time":1700000000000i64,
            "user_add_org":{"userid":["u1"],"corpid":"ding1"}});
        let a = from_failed_item(&item);
        let b = from_failed_item(&item);
        assert_eq!(a.event_id, b.event_id);
        assert!(a.event_id.as_deref().expect("id").starts_with("failed:"));
        let e = payload(&a);
        assert_eq!((e.kind, e.action), (EventKind::Contact, Action::Created));
        assert_eq!(e.ids["user_ids"], "u1");
        assert_eq!(e.ids["corp_id"], "ding1");
        let item = json!({"call_back_tag":"calendar_event_change","event_time":1,
            "callbackData":"{\"eventId\":\"e5\",\"calendarEventId\":\"c\"}"});
        let v = from_failed_item(&item);
        assert_eq!(v.event_id.as_deref(), Some("event:e5"));
        assert_eq!(payload(&v).kind, EventKind::CalendarEvent);
    }
}
