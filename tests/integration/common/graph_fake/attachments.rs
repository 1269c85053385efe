//! Attachments: inline (up to 3 MB) and through upload sessions, whose pre-authenticated
//! URL takes the bytes in `Content-Range` chunks.

use base64::Engine;
use serde_json::{Value, json};

use super::{
    GraphFake,
    http::{Ctx, Reply, graph_error, not_found},
    query::get_ci,
    state::{Shared, opaque_id, random_string},
    validation::{json_body, record_violation},
};

impl GraphFake {
    /// The bytes of an attachment (inline or uploaded).
    pub fn attachment_bytes(&self, mailbox: &str, attachment_id: &str) -> Option<Vec<u8>> {
        self.with_mailbox(mailbox, |m| m.attachment_bytes.get(attachment_id).cloned())
            .flatten()
    }

    /// How many attachments (with bytes) the mailbox holds, across its messages.
    pub fn attachment_count(&self, mailbox: &str) -> usize {
        self.with_mailbox(mailbox, |m| m.attachment_bytes.len())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub(super) struct UploadSession {
    pub(super) mailbox: String,
    pub(super) message_id: String,
    pub(super) name: String,
    pub(super) content_type: String,
    pub(super) content_id: Option<String>,
    pub(super) is_inline: bool,
    pub(super) size: usize,
    pub(super) data: Vec<u8>,
    pub(super) expires: chrono::DateTime<chrono::Utc>,
}

pub(super) fn add_attachment(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let odata = serde_json::from_slice::<Value>(&ctx.body)
        .ok()
        .and_then(|b| b["@odata.type"].as_str().map(str::to_string));
    let schema = match odata.as_deref() {
        Some("#microsoft.graph.fileAttachment") => "microsoft.graph.fileAttachment",
        Some("#microsoft.graph.itemAttachment") => "microsoft.graph.itemAttachment",
        Some("#microsoft.graph.referenceAttachment") => "microsoft.graph.referenceAttachment",
        other => {
            record_violation(
                shared,
                ctx,
                "microsoft.graph.attachment",
                vec![format!(
                    "/@odata.type: Graph requires a concrete attachment type, got {other:?}"
                )],
            );
            return graph_error(
                ctx,
                400,
                "ErrorInvalidRequest",
                "The @odata.type of an attachment is required.",
            );
        }
    };
    let body = match json_body(ctx, shared, schema, "attachment", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let bytes = body["contentBytes"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    if schema == "microsoft.graph.fileAttachment" && bytes.is_none() {
        record_violation(
            shared,
            ctx,
            schema,
            vec!["/contentBytes: required base64".into()],
        );
        return graph_error(ctx, 400, "ErrorInvalidRequest", "contentBytes is required.");
    }
    if bytes.as_ref().is_some_and(|b| b.len() > 3 * 1024 * 1024) {
        record_violation(
            shared,
            ctx,
            schema,
            vec!["inline attachment above 3 MB (use an upload session: https://learn.microsoft.com/graph/outlook-large-attachments)".into()],
        );
        return graph_error(
            ctx,
            413,
            "ErrorRequestEntityTooLarge",
            "The request exceeds the 3 MB limit for inline attachments.",
        );
    }
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(msg) = mb.messages.iter_mut().find(|s| s.json["id"] == id) else {
        return not_found(ctx);
    };
    let att_id = opaque_id("AAMkA");
    let mut att = body.clone();
    att["id"] = json!(att_id);
    if let Some(b) = &bytes {
        att["size"] = json!(b.len());
    }
    let mut meta = att.clone();
    if let Some(o) = meta.as_object_mut() {
        o.remove("contentBytes");
    }
    push_attachment(&mut msg.json, meta);
    if let Some(b) = bytes {
        mb.attachment_bytes.insert(att_id, b);
    }
    Reply::json(201, att)
}

/// `GET messages/{id}/attachments` (metadata).
pub(super) fn list_attachments(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let st = shared.state();
    match st.mailboxes[mailbox]
        .messages
        .iter()
        .find(|s| s.json["id"] == id)
    {
        Some(s) => {
            let atts = s.json["attachments"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            Reply::json(200, json!({"value": atts}))
        }
        None => not_found(ctx),
    }
}

pub(super) fn create_upload_session(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let body = match json_body(
        ctx,
        shared,
        "action:createUploadSession",
        "createUploadSession",
        true,
    ) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let item = get_ci(&body, "AttachmentItem")
        .cloned()
        .unwrap_or(Value::Null);
    let mut errs = vec![];
    if item["attachmentType"] != "file" {
        errs.push("/AttachmentItem/attachmentType: must be \"file\"".to_string());
    }
    let name = item["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        errs.push("/AttachmentItem/name: required".into());
    }
    let size = item["size"].as_u64().unwrap_or(0) as usize;
    if size == 0 {
        errs.push("/AttachmentItem/size: required positive number".into());
    } else if size > 150 * 1024 * 1024 {
        errs.push("/AttachmentItem/size: above 150 MB".into());
    }
    if !errs.is_empty() {
        record_violation(shared, ctx, "action:createUploadSession", errs.clone());
        return graph_error(ctx, 400, "ErrorInvalidRequest", &errs.join("; "));
    }
    let mut st = shared.state();
    if !st.mailboxes[mailbox]
        .messages
        .iter()
        .any(|s| s.json["id"] == id)
    {
        return not_found(ctx);
    }
    let token = random_string(48);
    let expires = chrono::Utc::now() + chrono::Duration::minutes(15);
    st.uploads.insert(
        token.clone(),
        UploadSession {
            mailbox: mailbox.into(),
            message_id: id.into(),
            name,
            content_type: item["contentType"]
                .as_str()
                .unwrap_or("application/octet-stream")
                .into(),
            content_id: item["contentId"].as_str().map(str::to_string),
            is_inline: item["isInline"].as_bool().unwrap_or(false),
            size,
            data: Vec::with_capacity(size),
            expires,
        },
    );
    Reply::json(
        201,
        json!({
            "@odata.context": format!("{}/v1.0/$metadata#microsoft.graph.uploadSession", shared.base()),
            "uploadUrl": format!("{}/upload/{token}", shared.base()),
            "expirationDateTime": expires.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "nextExpectedRanges": ["0-"],
        }),
    )
}

pub(super) fn upload_put(ctx: &Ctx, shared: &Shared, token: &str) -> Reply {
    if ctx.header("authorization").is_some() {
        record_violation(shared, ctx, "upload session", vec!["PUT to an upload URL carried an Authorization header (the URL is pre-authenticated; send none)".into()]);
        return graph_error(
            ctx,
            401,
            "InvalidAudienceForResource",
            "The audience claim value is invalid for current resource (fake: upload URLs take no Authorization header).",
        );
    }
    if ctx.method == "DELETE" {
        return if shared.state().uploads.remove(token).is_some() {
            Reply::empty(204)
        } else {
            not_found(ctx)
        };
    }
    if ctx.method != "PUT" {
        return graph_error(ctx, 405, "MethodNotAllowed", "Upload URLs take PUT (fake).");
    }
    let mut st = shared.state();
    let Some(sess) = st.uploads.get_mut(token) else {
        return not_found(ctx);
    };
    let range = ctx.header("content-range").and_then(parse_content_range);
    let Some((start, end, total)) = range else {
        drop(st);
        record_violation(
            shared,
            ctx,
            "upload session",
            vec![format!(
                "bad Content-Range {:?}",
                ctx.header("content-range")
            )],
        );
        return graph_error(
            ctx,
            400,
            "invalidRange",
            "Content-Range missing or malformed.",
        );
    };
    let next = sess.data.len();
    let problem = if total != sess.size {
        Some(format!(
            "Content-Range total {total} != session size {}",
            sess.size
        ))
    } else if start != next {
        Some(format!("Content-Range starts at {start}, expected {next}"))
    } else if end < start || end >= total || end - start + 1 != ctx.body.len() {
        Some(format!(
            "Content-Range {start}-{end} does not match a body of {} bytes",
            ctx.body.len()
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        drop(st);
        record_violation(shared, ctx, "upload session", vec![p.clone()]);
        return graph_error(ctx, 416, "invalidRange", &p);
    }
    sess.data.extend_from_slice(&ctx.body);
    let expires = sess.expires.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    if sess.data.len() < sess.size {
        let next = sess.data.len();
        return Reply::json(
            200,
            json!({"expirationDateTime": expires, "nextExpectedRanges": [format!("{next}-")]}),
        );
    }
    let sess = st.uploads.remove(token).expect("session");
    let att_id = opaque_id("AAMkA");
    let mb = st.mailboxes.get_mut(&sess.mailbox).expect("mailbox");
    let Some(msg) = mb
        .messages
        .iter_mut()
        .find(|m| m.json["id"] == sess.message_id.as_str())
    else {
        return not_found(ctx);
    };
    let mut meta = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": att_id,
        "name": sess.name,
        "contentType": sess.content_type,
        "size": sess.size,
        "isInline": sess.is_inline,
    });
    if let Some(cid) = &sess.content_id {
        meta["contentId"] = json!(cid);
    }
    push_attachment(&mut msg.json, meta);
    mb.attachment_bytes.insert(att_id.clone(), sess.data);
    let location = format!(
        "{}/api/v2.0/Users('{}')/Messages('{}')/Attachments('{}')",
        shared.base(),
        sess.mailbox,
        sess.message_id,
        att_id
    );
    Reply::empty(201).header("Location", location)
}

fn parse_content_range(v: &str) -> Option<(usize, usize, usize)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (s, e) = range.split_once('-')?;
    Some((
        s.trim().parse().ok()?,
        e.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

fn push_attachment(msg: &mut Value, att: Value) {
    match msg.get_mut("attachments").and_then(Value::as_array_mut) {
        Some(a) => a.push(att),
        None => msg["attachments"] = json!([att]),
    }
    msg["hasAttachments"] = json!(true);
}
