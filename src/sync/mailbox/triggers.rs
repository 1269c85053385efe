//! Zapier/n8n triggers of the DingTalk Mail sync: `dingtalk.mail.received` once a new
//! DingTalk mail has been written to Outlook, `dingtalk.mail.read` once its `\Seen` set
//! in DingTalk Mail has been relayed. Flat payloads like the Outlook mail triggers'.
//!
//! The event's `resource_id` is the mail's origin marker value
//! ([`mail_import::mail_origin`]: from its `Message-ID`, else its place), so a folder
//! read again after a `UIDVALIDITY` change publishes nothing new. A read change only
//! knows flags, so the received mail's fields are kept in the store
//! ([`summary_key`], for [`SUMMARY_TTL`]) for it; a read change of an older mail carries
//! its place and Outlook id only.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::{FolderRun, RouteSync, state};
use crate::{
    graph::{MailAddress, MailBody, ReceivedMail},
    store::StoreError,
    sync::mail_import,
    triggers::{self, TriggerEvent},
};

/// How long a received mail's fields are kept for its `dingtalk.mail.read`.
pub const SUMMARY_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest `preview`, in characters.
pub const PREVIEW_CHARS: usize = 255;

/// Store key of the trigger fields of the mail whose DingTalk side is `left`.
pub fn summary_key(route: &str, left: &str) -> String {
    format!("mailbox-trigger:{route}:{left}")
}

fn addresses(list: &[MailAddress]) -> String {
    list.iter()
        .map(|a| a.address.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::from(t.to_rfc3339_opts(SecondsFormat::Millis, false)))
        .unwrap_or(Value::Null)
}

/// The first [`PREVIEW_CHARS`] characters of the body as text, whitespace collapsed.
pub fn preview(body: &MailBody) -> String {
    let text = match body {
        MailBody::Html(h) => mail_parser::decoders::html::html_to_text(h),
        MailBody::Text(t) => t.clone(),
    };
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(PREVIEW_CHARS)
        .collect()
}

/// Where a mail is, in DingTalk Mail and in Outlook.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The mailbox route.
    pub route: &'a str,
    /// The DingTalk mailbox's address.
    pub mailbox: &'a str,
    /// The DingTalk folder (as configured).
    pub folder: &'a str,
    /// The folder's `UIDVALIDITY`.
    pub uid_validity: u32,
    /// The message's UID.
    pub uid: u32,
    /// The Outlook item it is synced to.
    pub outlook_id: &'a str,
}

/// The flat fields of a DingTalk mail's triggers.
pub fn mail_fields(place: &Place<'_>, mail: &ReceivedMail) -> Map<String, Value> {
    let mut m = place_fields(place);
    let from = mail.from.as_ref();
    m.insert(
        "from".into(),
        from.map(|a| a.address.clone()).unwrap_or_default().into(),
    );
    m.insert(
        "from_name".into(),
        from.and_then(|a| a.name.clone()).unwrap_or_default().into(),
    );
    m.insert("to".into(), addresses(&mail.to).into());
    m.insert("cc".into(), addresses(&mail.cc).into());
    m.insert("subject".into(), mail.subject.clone().into());
    m.insert(
        "message_id".into(),
        mail.internet_message_id.clone().unwrap_or_default().into(),
    );
    m.insert("received_at".into(), time(mail.received_at));
    m.insert("sent_at".into(), time(mail.sent_at));
    m.insert(
        "has_attachments".into(),
        mail.attachments.iter().any(|a| !a.is_inline).into(),
    );
    m.insert("preview".into(), preview(&mail.body).into());
    m
}

fn place_fields(place: &Place<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("route".into(), place.route.into());
    m.insert("mailbox".into(), place.mailbox.into());
    m.insert("folder".into(), place.folder.into());
    m.insert("uid".into(), place.uid.into());
    m.insert("outlook_id".into(), place.outlook_id.into());
    m
}

fn event(
    name: &str,
    id: &str,
    resource_id: &str,
    at: DateTime<Utc>,
    fields: Map<String, Value>,
) -> TriggerEvent {
    let mut e = TriggerEvent::with_id(name, id, resource_id, at);
    e.fields = fields;
    e
}

/// `dingtalk.mail.received` of a mail (its id: the resource id, so stable).
pub fn received_event(resource_id: &str, mail: &ReceivedMail, place: &Place<'_>) -> TriggerEvent {
    let at = mail.received_at.unwrap_or_else(Utc::now);
    event(
        triggers::DINGTALK_MAIL_RECEIVED,
        resource_id,
        resource_id,
        at,
        mail_fields(place, mail),
    )
}

/// `dingtalk.mail.read` of a mail with these fields (a new id per change).
pub fn read_event(
    resource_id: &str,
    mut fields: Map<String, Value>,
    at: DateTime<Utc>,
) -> TriggerEvent {
    fields.insert("is_read".into(), true.into());
    let id = format!("{resource_id}-{}", at.timestamp_millis());
    event(triggers::DINGTALK_MAIL_READ, &id, resource_id, at, fields)
}

fn resource_id(route: &str, message_id: Option<&str>, place: &Place<'_>) -> String {
    mail_import::mail_origin(
        route,
        message_id,
        place.folder,
        place.uid_validity,
        place.uid,
    )
}

impl RouteSync {
    fn place<'a>(
        &'a self,
        f: &'a FolderRun,
        uid_validity: u32,
        uid: u32,
        outlook_id: &'a str,
    ) -> Place<'a> {
        Place {
            route: self.name(),
            mailbox: self.settings.user.as_str(),
            folder: &f.label,
            uid_validity,
            uid,
            outlook_id,
        }
    }

    /// Publishes `dingtalk.mail.received` for a mail just synced to Outlook, and keeps
    /// its fields for its `dingtalk.mail.read`.
    pub(super) async fn publish_received(
        &self,
        f: &FolderRun,
        uid_validity: u32,
        uid: u32,
        mail: &ReceivedMail,
        outlook_id: &str,
    ) -> Result<(), StoreError> {
        let place = self.place(f, uid_validity, uid, outlook_id);
        let rid = resource_id(self.name(), mail.internet_message_id.as_deref(), &place);
        let e = received_event(&rid, mail, &place);
        let mut kept = e.fields.clone();
        kept.insert("resource_id".into(), rid.into());
        let left = state::pair_left(&f.label, uid_validity, uid);
        self.store
            .kv_put(
                &summary_key(self.name(), &left),
                &Value::Object(kept).to_string(),
                Some(SUMMARY_TTL),
            )
            .await?;
        triggers::publish(self.store.as_ref(), &e).await?;
        Ok(())
    }

    /// Publishes `dingtalk.mail.read` when a `\Seen` set in DingTalk Mail was relayed
    /// (`read`; clearing it publishes nothing).
    pub(super) async fn publish_read(
        &self,
        f: &FolderRun,
        uid_validity: u32,
        uid: u32,
        read: bool,
        outlook_id: &str,
    ) -> Result<(), StoreError> {
        if !read {
            return Ok(());
        }
        let left = state::pair_left(&f.label, uid_validity, uid);
        let kept: Option<Map<String, Value>> = self
            .store
            .kv_get(&summary_key(self.name(), &left))
            .await?
            .and_then(|text| serde_json::from_str(&text).ok());
        let place = self.place(f, uid_validity, uid, outlook_id);
        let (rid, fields) = match kept {
            Some(mut fields) => {
                let rid = fields
                    .remove("resource_id")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| resource_id(self.name(), None, &place));
                (rid, fields)
            }
            None => (resource_id(self.name(), None, &place), place_fields(&place)),
        };
        triggers::publish(self.store.as_ref(), &read_event(&rid, fields, Utc::now())).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::MailAttachment;

    fn mail() -> ReceivedMail {
        ReceivedMail {
            subject: "报关 notice".into(),
            from: Some(MailAddress {
                name: Some("Customs".into()),
                address: "notice@customs.example".into(),
            }),
            to: vec![
                MailAddress {
                    name: None,
                    address: "ops@corp.example".into(),
                },
                MailAddress {
                    name: None,
                    address: "b@corp.example".into(),
                },
            ],
            body: MailBody::Html("<p>Your   shipment <b>cleared</b>.</p>".into()),
            received_at: DateTime::from_timestamp(1_767_600_000, 0),
            internet_message_id: Some("<1.t@dingbridge.test>".into()),
            attachments: vec![MailAttachment {
                name: "logo.png".into(),
                content_type: "image/png".into(),
                content_id: Some("logo".into()),
                is_inline: true,
                content: Default::default(),
            }],
            ..Default::default()
        }
    }

    const PLACE: Place<'static> = Place {
        route: "ops-mail",
        mailbox: "ops@corp.example",
        folder: "INBOX",
        uid_validity: 7,
        uid: 42,
        outlook_id: "AAMk1",
    };

    #[test]
    fn the_received_trigger_is_flat_and_keeps_its_id_across_a_uidvalidity_change() {
        let m = mail();
        let rid = resource_id("ops-mail", m.internet_message_id.as_deref(), &PLACE);
        let e = received_event(&rid, &m, &PLACE);
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["event"], "dingtalk.mail.received");
        assert_eq!(json["id"], json["resource_id"]);
        assert_eq!(json["from"], "notice@customs.example");
        assert_eq!(json["from_name"], "Customs");
        assert_eq!(json["to"], "ops@corp.example, b@corp.example");
        assert_eq!(json["subject"], "报关 notice");
        assert_eq!(json["message_id"], "<1.t@dingbridge.test>");
        assert_eq!(json["preview"], "Your shipment cleared.");
        assert_eq!(
            json["has_attachments"], false,
            "an inline image is no attachment"
        );
        assert_eq!(json["outlook_id"], "AAMk1");
        assert_eq!(json["uid"], 42);
        assert!(
            json.as_object()
                .expect("obj")
                .values()
                .all(|v| !v.is_object() && !v.is_array())
        );
        let moved = Place {
            uid_validity: 8,
            uid: 3,
            ..PLACE
        };
        let again = resource_id("ops-mail", m.internet_message_id.as_deref(), &moved);
        assert_eq!(again, rid, "the same mail, read again after a reset");
        let no_id = resource_id("ops-mail", None, &PLACE);
        assert_ne!(no_id, resource_id("ops-mail", None, &moved));
    }

    #[test]
    fn a_read_change_gets_a_new_id_and_keeps_the_received_fields() {
        let m = mail();
        let rid = resource_id("ops-mail", m.internet_message_id.as_deref(), &PLACE);
        let t1 = DateTime::from_timestamp(1_767_700_000, 0).expect("t");
        let t2 = DateTime::from_timestamp(1_767_800_000, 0).expect("t");
        let a = read_event(&rid, mail_fields(&PLACE, &m), t1);
        let b = read_event(&rid, mail_fields(&PLACE, &m), t2);
        assert_ne!(a.id, b.id);
        assert_eq!(a.resource_id, rid);
        assert_eq!(a.fields["subject"], "报关 notice");
        assert_eq!(a.fields["is_read"], true);
        let long = MailBody::Text("x ".repeat(1000));
        assert_eq!(preview(&long).chars().count(), PREVIEW_CHARS);
    }
}
