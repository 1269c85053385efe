//! The Graph side of the mailbox sync (DingTalk Mail ⇄ Outlook): a mail imported as a
//! *received* Outlook item, found again by `internetMessageId` or by the origin marker,
//! folders named by display name or well-known name, and a message's MIME for the way
//! back to DingTalk.
//!
//! One import is one `POST /users/{m}/mailFolders/{id}/messages`
//! (<https://learn.microsoft.com/graph/api/mailfolder-post-messages>) carrying:
//! the message; `PR_MESSAGE_FLAGS` (`Integer 0x0E07`) without `MSGFLAG_UNSENT` (8), so the
//! item is not a draft, and with `MSGFLAG_READ` (1) as the caller says (Exchange lets a
//! client set both bits only before an item's first save, hence in the create itself);
//! the delivery and submit times (`SystemTime 0x0E06`, `SystemTime 0x0039`); the
//! bridge's origin marker; and every attachment that fits Graph's 4 MB
//! request. An attachment of 3 MB or more goes through an upload session (one POST, then
//! one PUT per chunk); a small one that no longer fits the create is POSTed on its own.
//! Graph's pages do not document the flags trick (the flags are Exchange's
//! `PidTagMessageFlags`, see [`MESSAGE_FLAGS_PROPERTY_ID`]): a mailbox that ignored it would
//! show the item as a draft.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Call, GraphClient, INLINE_ATTACHMENT_MAX, MESSAGE_FLAGS_PROPERTY_ID, UPLOAD_SESSION_MAX,
    encode, odata_string,
};
use crate::graph::{GraphError, ORIGIN_PROPERTY_ID, origin_marker};

/// Largest request body Graph accepts (4 MB,
/// <https://learn.microsoft.com/graph/outlook-large-attachments>), read as decimal
/// megabytes: the smaller reading is the safe one.
pub const REQUEST_BODY_MAX: usize = 4_000_000;
/// Room kept free in a create request for what the size estimate does not count.
const REQUEST_BODY_MARGIN: usize = 16 * 1024;
/// `PR_MESSAGE_DELIVERY_TIME`: when the item arrived (Outlook's "Received").
const DELIVERY_TIME_PROPERTY_ID: &str = "SystemTime 0x0E06";
/// `PR_CLIENT_SUBMIT_TIME`: when the sender sent it (Outlook's "Sent").
const SUBMIT_TIME_PROPERTY_ID: &str = "SystemTime 0x0039";
/// `MSGFLAG_READ` of `PR_MESSAGE_FLAGS`; `MSGFLAG_UNSENT` (8, a draft) is never set here.
const MSGFLAG_READ: u32 = 1;
/// Ids Graph accepts in place of a folder id
/// (<https://learn.microsoft.com/graph/api/resources/mailfolder>); a route may name them.
const WELL_KNOWN_FOLDERS: &[&str] = &[
    "inbox",
    "archive",
    "junkemail",
    "deleteditems",
    "sentitems",
    "drafts",
];
/// Message-IDs per lookup request: keeps the URL short and one answer page enough.
const LOOKUP_BATCH: usize = 10;
/// What a lookup reads of each message.
const FOUND_SELECT: &str = "id,internetMessageId,parentFolderId,isRead,isDraft,receivedDateTime";

/// A mailbox address with its display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAddress {
    /// Display name, decoded.
    pub name: Option<String>,
    /// The address itself.
    pub address: String,
}

/// The one body Graph keeps for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailBody {
    /// HTML (preferred when the mail has one).
    Html(String),
    /// Plain text.
    Text(String),
}

impl Default for MailBody {
    fn default() -> Self {
        MailBody::Text(String::new())
    }
}

/// A message's importance (Graph's `importance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Importance {
    /// `low`.
    Low,
    /// `normal`.
    #[default]
    Normal,
    /// `high`.
    High,
}

impl Importance {
    fn as_str(self) -> &'static str {
        match self {
            Importance::Low => "low",
            Importance::Normal => "normal",
            Importance::High => "high",
        }
    }
}

/// A file of an imported mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAttachment {
    /// File name shown in Outlook.
    pub name: String,
    /// MIME type, e.g. `image/png`.
    pub content_type: String,
    /// `Content-ID` without angle brackets, for images the HTML body shows (`cid:`).
    pub content_id: Option<String>,
    /// Shown inside the body rather than in the attachment list.
    pub is_inline: bool,
    /// The bytes.
    pub content: Bytes,
}

/// A mail to create in Outlook as a received item (built from MIME by the sync layer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Subject, decoded.
    pub subject: String,
    /// `From`.
    pub from: Option<MailAddress>,
    /// `Sender`, when it differs from `From`.
    pub sender: Option<MailAddress>,
    /// `To`.
    pub to: Vec<MailAddress>,
    /// `Cc`.
    pub cc: Vec<MailAddress>,
    /// `Bcc` (only in the sender's own copy).
    pub bcc: Vec<MailAddress>,
    /// `Reply-To`.
    pub reply_to: Vec<MailAddress>,
    /// The body.
    pub body: MailBody,
    /// When it was sent (`Date`).
    pub sent_at: Option<DateTime<Utc>>,
    /// When it arrived (the IMAP internal date).
    pub received_at: Option<DateTime<Utc>>,
    /// `Message-ID` with its angle brackets, e.g. `<abc@example.com>`.
    pub internet_message_id: Option<String>,
    /// Importance.
    pub importance: Importance,
    /// Read (IMAP `\Seen`).
    pub is_read: bool,
    /// Files, inline images first or not: the order is kept.
    pub attachments: Vec<MailAttachment>,
}

/// What [`plan_import`] decided: the create request's body, and the attachments (indexes
/// into [`ReceivedMail::attachments`], or [`ImportPlan::body_file`]) sent afterwards.
#[derive(Debug, Clone)]
pub struct ImportPlan {
    /// The `POST …/messages` body.
    pub body: Value,
    /// Attachments that did not fit the create: 3 MB or more, or past the 4 MB request.
    pub deferred: Vec<usize>,
    /// The original body as a file, when it alone was too large for the create request.
    pub body_file: Option<MailAttachment>,
}

/// A message found in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMessage {
    /// Its (immutable) id.
    pub id: String,
    /// Its `internetMessageId`.
    pub internet_message_id: Option<String>,
    /// The folder it is in.
    pub parent_folder_id: Option<String>,
    /// Read or not.
    pub is_read: bool,
    /// A draft (never relayed).
    pub is_draft: bool,
    /// When it arrived.
    pub received_at: Option<DateTime<Utc>>,
    /// The bridge's origin marker on it, when the bridge wrote it.
    pub origin: Option<String>,
}

/// What the caller already knows before [`GraphClient::import_mail`].
#[derive(Debug, Clone)]
pub enum Precheck {
    /// Nothing: look the mail up first (by `internetMessageId`, or by the origin marker
    /// when the mail has none). One request more.
    LookUp,
    /// The answer of [`GraphClient::find_messages_by_internet_ids`] for this mail (empty:
    /// not in the mailbox), e.g. for a batch of new mails.
    Known(Vec<FoundMessage>),
}

/// How an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportedAs {
    /// Written now (including when found after an answer that left it open).
    Created,
    /// Written by an earlier attempt for this origin; missing attachments were added.
    Completed,
    /// A message with the same `internetMessageId` the bridge did not write for this
    /// origin (e.g. both mailboxes were recipients): mapped to it, nothing written.
    Matched,
}

/// The Outlook item of an imported mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Its id.
    pub id: String,
    /// How it came to be.
    pub how: ImportedAs,
}

fn graph_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn recipient(a: &MailAddress) -> Value {
    let mut address = json!({ "address": a.address });
    if let Some(name) = a.name.as_deref().filter(|n| !n.is_empty()) {
        address["name"] = json!(name);
    }
    json!({ "emailAddress": address })
}

fn single_property(id: &str, value: String) -> Value {
    json!({ "id": id, "value": value })
}

impl ReceivedMail {
    /// The `microsoft.graph.message` of this mail without attachments: received (not a
    /// draft), read as [`ReceivedMail::is_read`] says, marked with `origin`.
    pub fn message_json(&self, origin: &str) -> Value {
        let (content_type, content) = match &self.body {
            MailBody::Html(h) => ("html", h.as_str()),
            MailBody::Text(t) => ("text", t.as_str()),
        };
        let mut m = json!({
            "subject": self.subject,
            "body": { "contentType": content_type, "content": content },
            "importance": self.importance.as_str(),
            "isRead": self.is_read,
        });
        let flags = if self.is_read { MSGFLAG_READ } else { 0 };
        let mut props = vec![single_property(
            MESSAGE_FLAGS_PROPERTY_ID,
            flags.to_string(),
        )];
        if let Some(a) = &self.from {
            m["from"] = recipient(a);
        }
        if let Some(a) = self.sender.as_ref().or(self.from.as_ref()) {
            m["sender"] = recipient(a);
        }
        for (key, list) in [
            ("toRecipients", &self.to),
            ("ccRecipients", &self.cc),
            ("bccRecipients", &self.bcc),
            ("replyTo", &self.reply_to),
        ] {
            if !list.is_empty() {
                m[key] = Value::Array(list.iter().map(recipient).collect());
            }
        }
        if let Some(id) = &self.internet_message_id {
            m["internetMessageId"] = json!(id);
        }
        if let Some(t) = self.received_at {
            m["receivedDateTime"] = json!(graph_time(t));
            props.push(single_property(DELIVERY_TIME_PROPERTY_ID, graph_time(t)));
        }
        if let Some(t) = self.sent_at {
            m["sentDateTime"] = json!(graph_time(t));
            props.push(single_property(SUBMIT_TIME_PROPERTY_ID, graph_time(t)));
        }
        props.push(origin_marker(origin));
        m["singleValueExtendedProperties"] = Value::Array(props);
        m
    }
}

/// A `#microsoft.graph.fileAttachment` with its bytes (for a create or an attachment POST);
/// `contentId` and `isInline` only when set, so plain files look as they always did.
pub(super) fn file_attachment_json(a: &MailAttachment) -> Value {
    let mut v = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": a.name,
        "contentType": a.content_type,
        "contentBytes": STANDARD.encode(&a.content),
    });
    if let Some(cid) = &a.content_id {
        v["contentId"] = json!(cid);
    }
    if a.is_inline {
        v["isInline"] = json!(true);
    }
    v
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX)
}

/// Splits an import into the create request and what follows it: attachments below 3 MB
/// ride in the create while the body stays under 4 MB (in the mail's order, so inline
/// images, usually first, come with the message); the rest are deferred. A body too large
/// for any request is replaced by a short note and attached as `body.html`/`body.txt`.
pub fn plan_import(mail: &ReceivedMail, origin: &str) -> ImportPlan {
    let limit = REQUEST_BODY_MAX - REQUEST_BODY_MARGIN;
    let mut body = mail.message_json(origin);
    let mut body_file = None;
    if json_len(&body) > limit {
        let (name, content_type, content) = match &mail.body {
            MailBody::Html(h) => ("body.html", "text/html; charset=utf-8", h.clone()),
            MailBody::Text(t) => ("body.txt", "text/plain; charset=utf-8", t.clone()),
        };
        body["body"] = json!({
            "contentType": "text",
            "content": format!("This message's body is too large for Outlook's import; it is attached as {name}."),
        });
        body_file = Some(MailAttachment {
            name: name.into(),
            content_type: content_type.into(),
            content_id: None,
            is_inline: false,
            content: Bytes::from(content),
        });
    }
    // `,"attachments":[` and `]`.
    let mut size = json_len(&body) + 18;
    let mut inline = Vec::new();
    let mut deferred = Vec::new();
    for (i, a) in mail.attachments.iter().enumerate() {
        if a.content.len() >= INLINE_ATTACHMENT_MAX {
            deferred.push(i);
            continue;
        }
        let json = file_attachment_json(a);
        let len = json_len(&json) + 1;
        if size + len <= limit {
            size += len;
            inline.push(json);
        } else {
            deferred.push(i);
        }
    }
    if !inline.is_empty() {
        body["attachments"] = Value::Array(inline);
    }
    ImportPlan {
        body,
        deferred,
        body_file,
    }
}

fn found_message(v: &Value) -> Option<FoundMessage> {
    let origin = v
        .get("singleValueExtendedProperties")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| {
            p.get("id")
                .and_then(Value::as_str)
                .is_some_and(|i| i.eq_ignore_ascii_case(ORIGIN_PROPERTY_ID))
        })
        .and_then(|p| p.get("value").and_then(Value::as_str))
        .map(str::to_string);
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(FoundMessage {
        id: text("id")?,
        internet_message_id: text("internetMessageId"),
        parent_folder_id: text("parentFolderId"),
        is_read: v.get("isRead").and_then(Value::as_bool).unwrap_or(false),
        is_draft: v.get("isDraft").and_then(Value::as_bool).unwrap_or(false),
        received_at: v
            .get("receivedDateTime")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        origin,
    })
}

fn origin_expand() -> String {
    format!(
        "singleValueExtendedProperties($filter=id eq {})",
        odata_string(ORIGIN_PROPERTY_ID)
    )
}

/// How many of each attachment name a message already has.
fn name_counts<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for n in names {
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

impl GraphClient {
    /// The id of the mail folder a route names: a well-known name (`inbox`, `archive`,
    /// `junkemail`, `deleteditems`, `sentitems`, `drafts`; any case) is the folder Outlook
    /// means by it, whatever its display name in the mailbox's language; any other name is
    /// a top-level folder found or created by display name
    /// ([`GraphClient::ensure_mail_folder`]). Cached for the life of the client.
    pub async fn mail_folder(&self, mailbox: &str, name: &str) -> Result<String, GraphError> {
        let Some(well_known) = WELL_KNOWN_FOLDERS
            .iter()
            .find(|w| w.eq_ignore_ascii_case(name))
        else {
            return self.ensure_mail_folder(mailbox, name).await;
        };
        // NUL never appears in a display name, so this key cannot collide with one.
        let key = (mailbox.to_ascii_lowercase(), format!("\0{well_known}"));
        if let Some(id) = self.inner.folders.lock().expect("folders").get(&key) {
            return Ok(id.clone());
        }
        let id = self
            .call_json(
                mailbox,
                Method::GET,
                &["mailFolders", well_known],
                &[("$select", "id")],
                None,
                false,
            )
            .await?
            .id()?;
        self.inner
            .folders
            .lock()
            .expect("folders")
            .insert(key, id.clone());
        Ok(id)
    }

    /// The messages of `mailbox` (any folder) whose `internetMessageId` is one of `ids`
    /// (with their angle brackets), by id; a few ids per request (`… eq '…' or …`, quotes
    /// doubled per OData). Several messages may share one id (both were recipients, or a
    /// copy in another folder).
    pub async fn find_messages_by_internet_ids(
        &self,
        mailbox: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<FoundMessage>>, GraphError> {
        let mut out: HashMap<String, Vec<FoundMessage>> = HashMap::new();
        let expand = origin_expand();
        for chunk in ids.chunks(LOOKUP_BATCH) {
            let filter = chunk
                .iter()
                .map(|id| format!("internetMessageId eq {}", odata_string(id)))
                .collect::<Vec<_>>()
                .join(" or ");
            let mut page = self
                .call_json(
                    mailbox,
                    Method::GET,
                    &["messages"],
                    &[
                        ("$filter", &filter),
                        ("$select", FOUND_SELECT),
                        ("$expand", &expand),
                        ("$top", "50"),
                    ],
                    None,
                    true,
                )
                .await?
                .json()?;
            // A handful of pages at most: each id matches a few copies, not hundreds.
            for _ in 0..10 {
                for m in page
                    .get("value")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(found_message)
                {
                    // Graph compares case-insensitively; file under the id asked for.
                    let asked = m.internet_message_id.as_deref().and_then(|got| {
                        chunk
                            .iter()
                            .find(|id| id.eq_ignore_ascii_case(got))
                            .map(|id| id.to_string())
                    });
                    if let Some(asked) = asked {
                        out.entry(asked).or_default().push(m);
                    }
                }
                match page.get("@odata.nextLink").and_then(Value::as_str) {
                    Some(next) => page = self.get_url(mailbox, next).await?,
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// [`GraphClient::find_messages_by_internet_ids`] for one id.
    pub async fn find_messages_by_internet_id(
        &self,
        mailbox: &str,
        id: &str,
    ) -> Result<Vec<FoundMessage>, GraphError> {
        Ok(self
            .find_messages_by_internet_ids(mailbox, &[id])
            .await?
            .remove(id)
            .unwrap_or_default())
    }

    /// What the mailbox sync needs to know of one message (read, draft, receipt time,
    /// origin marker), e.g. after a change notification.
    pub async fn message_state(&self, mailbox: &str, id: &str) -> Result<FoundMessage, GraphError> {
        let expand = origin_expand();
        let v = self
            .call_json(
                mailbox,
                Method::GET,
                &["messages", id],
                &[("$select", FOUND_SELECT), ("$expand", &expand)],
                None,
                true,
            )
            .await?
            .json()?;
        found_message(&v).ok_or_else(|| GraphError::Unexpected("message has no `id`".into()))
    }

    /// The message's MIME (`GET …/messages/{id}/$value`), as Outlook stores it.
    pub async fn message_mime(&self, mailbox: &str, id: &str) -> Result<Bytes, GraphError> {
        // `$value` is a literal segment: not percent-encoded like the id.
        let url = format!(
            "{}/users/{}/messages/{}/$value",
            self.inner.base_url,
            encode(mailbox),
            encode(id)
        );
        let call = Call {
            method: Method::GET,
            url,
            body: None,
            immutable_ids: true,
            bearer: true,
            content_range: None,
        };
        Ok(self.execute(mailbox, call).await?.body)
    }

    /// Creates `mail` in `folder_id` as a received item marked `origin`, unless the
    /// mailbox has it already: one with the same `internetMessageId` is mapped, not
    /// duplicated; one this origin wrote before is completed (missing attachments).
    /// Requests: the lookup unless `precheck` brings it, one create, and per deferred
    /// attachment one POST (below 3 MB) or an upload session (one POST and one PUT per
    /// chunk). After an answer that leaves the create open (502/503/504, a broken
    /// connection) the item is looked up by its origin marker before trying again.
    pub async fn import_mail(
        &self,
        mailbox: &str,
        folder_id: &str,
        mail: &ReceivedMail,
        origin: &str,
        precheck: Precheck,
    ) -> Result<Imported, GraphError> {
        let plan = plan_import(mail, origin);
        let found = match precheck {
            Precheck::Known(found) => found,
            Precheck::LookUp => match &mail.internet_message_id {
                Some(imid) => self.find_messages_by_internet_id(mailbox, imid).await?,
                None => self
                    .find_by_bridge_origin(mailbox, super::Collection::Messages, origin)
                    .await?
                    .map(|id| FoundMessage {
                        id,
                        internet_message_id: None,
                        parent_folder_id: None,
                        is_read: mail.is_read,
                        is_draft: false,
                        received_at: None,
                        origin: Some(origin.to_string()),
                    })
                    .into_iter()
                    .collect(),
            },
        };
        if let Some(ours) = found.iter().find(|m| m.origin.as_deref() == Some(origin)) {
            self.complete_attachments(mailbox, &ours.id, mail, &plan)
                .await?;
            return Ok(Imported {
                id: ours.id.clone(),
                how: ImportedAs::Completed,
            });
        }
        if let Some(other) = found.into_iter().find(|m| !m.is_draft) {
            return Ok(Imported {
                id: other.id,
                how: ImportedAs::Matched,
            });
        }
        let (id, found_after_doubt) = self
            .create_looking_up_on_doubt(
                || self.find_by_bridge_origin(mailbox, super::Collection::Messages, origin),
                || async {
                    self.call_json(
                        mailbox,
                        Method::POST,
                        &["mailFolders", folder_id, "messages"],
                        &[],
                        Some(&plan.body),
                        true,
                    )
                    .await?
                    .id()
                },
            )
            .await?;
        if found_after_doubt {
            // Normally nothing is missing yet, but an earlier attempt may have added some.
            self.complete_attachments(mailbox, &id, mail, &plan).await?;
        } else {
            for a in deferred(mail, &plan) {
                self.attach_file(mailbox, &id, a).await?;
            }
        }
        Ok(Imported {
            id,
            how: ImportedAs::Created,
        })
    }

    /// Adds the deferred attachments of `plan` that the message does not have yet
    /// (matched by name; Graph's attachment `size` is not the file's).
    async fn complete_attachments(
        &self,
        mailbox: &str,
        message_id: &str,
        mail: &ReceivedMail,
        plan: &ImportPlan,
    ) -> Result<(), GraphError> {
        let wanted: Vec<&MailAttachment> = deferred(mail, plan).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let present = self
            .call_json(
                mailbox,
                Method::GET,
                &["messages", message_id, "attachments"],
                &[("$select", "id,name")],
                None,
                true,
            )
            .await?
            .json()?;
        let mut have = name_counts(
            present
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.get("name").and_then(Value::as_str)),
        );
        for a in wanted {
            match have.get_mut(a.name.as_str()) {
                Some(n) if *n > 0 => *n -= 1,
                _ => {
                    self.attach_file(mailbox, message_id, a).await?;
                }
            }
        }
        Ok(())
    }

    /// Attaches one file: a POST below 3 MB, an upload session up to 150 MB (keeping
    /// `contentId` and `isInline`), refused above. Returns the attachment id when Graph
    /// tells it.
    pub(super) async fn attach_file(
        &self,
        mailbox: &str,
        message_id: &str,
        a: &MailAttachment,
    ) -> Result<Option<String>, GraphError> {
        let size = a.content.len() as u64;
        if size > UPLOAD_SESSION_MAX {
            return Err(GraphError::AttachmentTooLarge {
                name: a.name.clone(),
                size,
                max: UPLOAD_SESSION_MAX,
            });
        }
        if a.content.len() < INLINE_ATTACHMENT_MAX {
            let answer = self
                .call_json(
                    mailbox,
                    Method::POST,
                    &["messages", message_id, "attachments"],
                    &[],
                    Some(&file_attachment_json(a)),
                    true,
                )
                .await?;
            return Ok(answer.id().ok());
        }
        let mut item = json!({
            "attachmentType": "file",
            "name": a.name,
            "size": size,
            "contentType": a.content_type,
        });
        if let Some(cid) = &a.content_id {
            item["contentId"] = json!(cid);
        }
        if a.is_inline {
            item["isInline"] = json!(true);
        }
        let session = self
            .call_json(
                mailbox,
                Method::POST,
                &["messages", message_id, "attachments", "createUploadSession"],
                &[],
                Some(&json!({ "AttachmentItem": item })),
                true,
            )
            .await?
            .json()?;
        let upload_url = session
            .get("uploadUrl")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::Unexpected("upload session has no uploadUrl".into()))?
            .to_string();
        self.upload(mailbox, &upload_url, a.content.clone()).await
    }
}

/// The attachments a plan sends after the create, in order.
fn deferred<'a>(
    mail: &'a ReceivedMail,
    plan: &'a ImportPlan,
) -> impl Iterator<Item = &'a MailAttachment> {
    plan.deferred
        .iter()
        .filter_map(|i| mail.attachments.get(*i))
        .chain(plan.body_file.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: usize) -> MailAttachment {
        MailAttachment {
            name: name.into(),
            content_type: "application/octet-stream".into(),
            content_id: None,
            is_inline: false,
            content: Bytes::from(vec![b'x'; size]),
        }
    }

    fn mail() -> ReceivedMail {
        ReceivedMail {
            subject: "报关单 / customs".into(),
            from: Some(MailAddress {
                name: Some("张三".into()),
                address: "zhang@example.cn".into(),
            }),
            to: vec![MailAddress {
                name: None,
                address: "ops@contoso.com".into(),
            }],
            body: MailBody::Html("<p>hi</p>".into()),
            sent_at: DateTime::parse_from_rfc3339("2026-03-01T08:00:00+08:00")
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            received_at: DateTime::parse_from_rfc3339("2026-03-01T00:00:05Z")
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            internet_message_id: Some("<a@b>".into()),
            importance: Importance::High,
            ..ReceivedMail::default()
        }
    }

    fn prop<'a>(m: &'a Value, id: &str) -> Option<&'a str> {
        m["singleValueExtendedProperties"]
            .as_array()?
            .iter()
            .find(|p| p["id"] == id)?["value"]
            .as_str()
    }

    #[test]
    fn a_received_mail_is_not_a_draft_and_reads_as_told() {
        let mut m = mail();
        let unread = m.message_json("dingtalk-mail:r:x");
        assert_eq!(prop(&unread, "Integer 0x0E07"), Some("0"));
        assert_eq!(unread["isRead"], false);
        m.is_read = true;
        let read = m.message_json("dingtalk-mail:r:x");
        assert_eq!(prop(&read, "Integer 0x0E07"), Some("1"));
        assert_eq!(read["isRead"], true);
        assert_eq!(prop(&read, ORIGIN_PROPERTY_ID), Some("dingtalk-mail:r:x"));
        assert_eq!(
            prop(&read, "SystemTime 0x0E06"),
            Some("2026-03-01T00:00:05Z")
        );
        assert_eq!(
            prop(&read, "SystemTime 0x0039"),
            Some("2026-03-01T00:00:00Z")
        );
        assert_eq!(read["receivedDateTime"], "2026-03-01T00:00:05Z");
        assert_eq!(read["sentDateTime"], "2026-03-01T00:00:00Z");
        assert_eq!(read["importance"], "high");
        assert_eq!(read["internetMessageId"], "<a@b>");
        assert_eq!(read["from"]["emailAddress"]["name"], "张三");
        assert_eq!(read["sender"], read["from"]);
        assert_eq!(
            read["toRecipients"],
            json!([{"emailAddress": {"address": "ops@contoso.com"}}])
        );
        assert!(
            read.get("ccRecipients").is_none(),
            "empty lists are left out"
        );
        assert_eq!(
            read["body"],
            json!({"contentType": "html", "content": "<p>hi</p>"})
        );
    }

    #[test]
    fn small_files_ride_in_the_create_large_ones_are_deferred() {
        let mut m = mail();
        let mut image = file("logo.png", 10);
        image.content_id = Some("logo@x".into());
        image.is_inline = true;
        m.attachments = vec![
            image,
            file("big.bin", INLINE_ATTACHMENT_MAX),
            file("a.pdf", 1024 * 1024),
        ];
        let plan = plan_import(&m, "o");
        assert_eq!(plan.deferred, vec![1]);
        let atts = plan.body["attachments"].as_array().expect("attachments");
        assert_eq!(atts.len(), 2);
        assert_eq!(atts[0]["contentId"], "logo@x");
        assert_eq!(atts[0]["isInline"], true);
        assert_eq!(atts[0]["@odata.type"], "#microsoft.graph.fileAttachment");
        assert!(atts[1].get("isInline").is_none());
        assert!(json_len(&plan.body) <= REQUEST_BODY_MAX);
    }

    #[test]
    fn the_create_stays_under_four_megabytes() {
        let mut m = mail();
        // Each 2 MB file is ~2.7 MB in base64: only one fits a request.
        m.attachments = (0..3)
            .map(|i| file(&format!("f{i}"), 2 * 1024 * 1024))
            .collect();
        let plan = plan_import(&m, "o");
        assert_eq!(plan.deferred, vec![1, 2]);
        assert!(json_len(&plan.body) <= REQUEST_BODY_MAX);
        assert!(plan.body_file.is_none());
    }

    #[test]
    fn a_body_too_large_for_a_request_becomes_a_file() {
        let mut m = mail();
        m.body = MailBody::Html("x".repeat(REQUEST_BODY_MAX));
        let plan = plan_import(&m, "o");
        let f = plan.body_file.as_ref().expect("body as a file");
        assert_eq!(f.name, "body.html");
        assert_eq!(f.content.len(), REQUEST_BODY_MAX);
        assert!(json_len(&plan.body) < 64 * 1024);
        assert_eq!(deferred(&m, &plan).count(), 1);
    }

    #[test]
    fn found_messages_carry_the_origin_marker() {
        let v = json!({"id": "AAMk1", "internetMessageId": "<a@b>", "isRead": true,
            "isDraft": false, "parentFolderId": "F1", "receivedDateTime": "2026-03-01T00:00:05Z",
            "singleValueExtendedProperties": [{"id": ORIGIN_PROPERTY_ID.to_lowercase(), "value": "o"}]});
        let f = found_message(&v).expect("found");
        assert_eq!(f.origin.as_deref(), Some("o"));
        assert!(f.is_read);
        assert_eq!(
            f.received_at.map(graph_time).as_deref(),
            Some("2026-03-01T00:00:05Z")
        );
        assert_eq!(found_message(&json!({"internetMessageId": "<a@b>"})), None);
    }
}
