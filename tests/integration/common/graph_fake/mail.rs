//! Mail: folders, messages (create, read, update, delete, move, send), `sendMail`, message
//! delta per folder, and the test-side helpers that deliver and change mail.

use base64::Engine;
use serde_json::{Value, json};

use super::{
    GraphFake,
    delta::delta_reply,
    http::{Ctx, Reply, graph_error, not_found},
    query::{get_ci, list_reply, matches, parse_filter, present},
    state::{Mailbox, Shared, StoredMessage, merge, now_iso, opaque_id, random_string, stamp},
    subscriptions::notify_message_change,
    validation::{json_body, record_violation},
};

impl GraphFake {
    /// Puts a message straight into `folder` (well-known name or id) of `mailbox`, as if
    /// it had been received; server fields are added. Answers its id.
    pub fn seed_message(&self, mailbox: &str, folder: &str, message: Value) -> String {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .entry(mailbox.to_lowercase())
            .or_insert_with(Mailbox::fresh);
        let fid = mb.folder_id(folder, false).expect("folder exists");
        let mut msg = stamp(message, "AAMkM");
        msg["parentFolderId"] = json!(fid);
        msg["isDraft"] = json!(false);
        if msg.get("isRead").is_none() {
            msg["isRead"] = json!(false);
        }
        if msg.get("receivedDateTime").is_none() {
            msg["receivedDateTime"] = json!(now_iso());
        }
        let id = msg["id"].as_str().unwrap_or_default().to_string();
        mb.messages.push(StoredMessage {
            folder_id: fid,
            json: msg,
        });
        id
    }

    /// Puts a received message into a folder (as mail delivery would, without any
    /// notification) and returns its id. `message` may carry
    /// `singleValueExtendedProperties` and `attachments` (metadata).
    pub fn put_message(&self, mailbox: &str, folder: &str, message: Value) -> String {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .entry(mailbox.to_lowercase())
            .or_insert_with(Mailbox::fresh);
        let fid = mb.folder_id(folder, true).expect("folder exists");
        let mut msg = stamp(message, "AAMkM");
        let id = msg["id"].as_str().unwrap_or_default().to_string();
        msg["parentFolderId"] = json!(fid);
        msg["isDraft"] = json!(false);
        for (k, v) in [
            ("isRead", json!(false)),
            ("receivedDateTime", json!(now_iso())),
            ("webLink", json!(web_link(&id))),
            (
                "internetMessageId",
                json!(format!("<{}@fake.graph>", random_string(20))),
            ),
            ("hasAttachments", json!(msg.get("attachments").is_some())),
        ] {
            if msg.get(k).is_none() {
                msg[k] = v;
            }
        }
        mb.log_change(&id, &fid, false);
        mb.messages.push(StoredMessage {
            folder_id: fid,
            json: msg,
        });
        id
    }

    /// Changes a message in place (as a user in Outlook would), logging it for delta.
    pub fn update_message(&self, mailbox: &str, id: &str, patch: Value) {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        let m = mb
            .messages
            .iter_mut()
            .find(|m| m.json["id"] == id)
            .expect("message");
        merge(&mut m.json, &patch);
        let fid = m.folder_id.clone();
        mb.log_change(id, &fid, false);
        drop(st);
        notify_message_change(&self.shared, &mailbox.to_lowercase(), id, &fid, "updated");
    }

    /// Deletes a message (as a user in Outlook would), logging it for delta.
    pub fn delete_message(&self, mailbox: &str, id: &str) {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        let pos = mb
            .messages
            .iter()
            .position(|m| m.json["id"] == id)
            .expect("message");
        let removed = mb.messages.remove(pos);
        mb.log_change(id, &removed.folder_id, true);
    }

    /// Folders of a mailbox (id, displayName, …).
    pub fn folders(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.folders.clone())
            .unwrap_or_default()
    }

    /// Id of a folder given its id, well-known name or display name.
    pub fn folder_id(&self, mailbox: &str, folder: &str) -> Option<String> {
        self.with_mailbox(mailbox, |m| m.folder_id(folder, true))
            .flatten()
    }

    /// Messages in a folder (id, well-known name or display name), with their
    /// `singleValueExtendedProperties` and `attachments` (metadata).
    pub fn messages(&self, mailbox: &str, folder: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| {
            let Some(fid) = m.folder_id(folder, true) else {
                return vec![];
            };
            m.messages
                .iter()
                .filter(|s| s.folder_id == fid)
                .map(|s| s.json.clone())
                .collect()
        })
        .unwrap_or_default()
    }

    /// Every message of the mailbox, whatever the folder.
    pub fn all_messages(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| {
            m.messages.iter().map(|s| s.json.clone()).collect()
        })
        .unwrap_or_default()
    }

    /// Messages sent with `sendMail` or `…/send` (`message` plus `saveToSentItems`).
    pub fn sent_mails(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.sent.clone())
            .unwrap_or_default()
    }
}

/// `GET mailFolders` (with `$filter`).
pub(super) fn list_folders(ctx: &Ctx, shared: &Shared, mailbox: &str) -> Reply {
    let filter = match parse_filter(ctx, shared) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    let items = mb
        .folders
        .iter()
        .filter(|f| matches(&filter, f))
        .cloned()
        .collect();
    list_reply(ctx, items)
}

/// `POST mailFolders`: a new folder; a display name already used answers 409.
pub(super) fn create_folder(ctx: &Ctx, shared: &Shared, mailbox: &str) -> Reply {
    let body = match json_body(
        ctx,
        shared,
        "microsoft.graph.mailFolder",
        "mailFolder",
        true,
    ) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(name) = body["displayName"].as_str() else {
        record_violation(
            shared,
            ctx,
            "mailFolder",
            vec!["/displayName: required".into()],
        );
        return graph_error(ctx, 400, "ErrorInvalidRequest", "displayName is required.");
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    if mb.folders.iter().any(|f| {
        f["displayName"]
            .as_str()
            .is_some_and(|d| d.eq_ignore_ascii_case(name))
    }) {
        return graph_error(
            ctx,
            409,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        );
    }
    let folder = json!({
        "id": opaque_id("AAMkF"),
        "displayName": name,
        "parentFolderId": "msgfolderroot",
        "childFolderCount": 0, "unreadItemCount": 0, "totalItemCount": 0,
        "isHidden": body["isHidden"].as_bool().unwrap_or(false),
    });
    mb.folders.push(folder.clone());
    Reply::json(201, folder)
}

/// `GET mailFolders/{id}` (an id or a well-known name).
pub(super) fn get_folder(ctx: &Ctx, shared: &Shared, mailbox: &str, fid: &str) -> Reply {
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    match mb
        .folder_id(fid, false)
        .and_then(|id| mb.folders.iter().find(|f| f["id"] == id.as_str()))
    {
        Some(f) => Reply::json(200, present(ctx, f)),
        None => not_found(ctx),
    }
}

/// `POST messages/{id}/send`: the draft moves to Sent Items and is recorded as sent.
pub(super) fn send_draft(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let sent = mb.folder_id("sentitems", false).expect("sentitems");
    let Some(msg) = mb.messages.iter_mut().find(|s| s.json["id"] == id) else {
        return not_found(ctx);
    };
    msg.folder_id = sent.clone();
    msg.json["parentFolderId"] = json!(sent);
    msg.json["isDraft"] = json!(false);
    let copy = msg.json.clone();
    mb.sent
        .push(json!({"message": copy, "saveToSentItems": true}));
    Reply::empty(202)
}

/// `POST sendMail`: recorded as sent, and saved to Sent Items unless told not to.
pub(super) fn send_mail(ctx: &Ctx, shared: &Shared, mailbox: &str) -> Reply {
    let body = match json_body(ctx, shared, "action:sendMail", "sendMail", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(message) = get_ci(&body, "message").cloned() else {
        record_violation(
            shared,
            ctx,
            "action:sendMail",
            vec!["/message: required".into()],
        );
        return graph_error(ctx, 400, "ErrorInvalidRequest", "message is required.");
    };
    let save = get_ci(&body, "saveToSentItems")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    if save {
        let sent = mb.folder_id("sentitems", false).expect("sentitems");
        let mut json = message.clone();
        json["id"] = json!(opaque_id("AAMkS"));
        json["isDraft"] = json!(false);
        json["parentFolderId"] = json!(sent);
        json["sentDateTime"] = json!(now_iso());
        mb.messages.push(StoredMessage {
            folder_id: sent,
            json,
        });
    }
    mb.sent
        .push(json!({"message": message, "saveToSentItems": save}));
    Reply::empty(202)
}

pub(super) fn list_messages(
    ctx: &Ctx,
    shared: &Shared,
    mailbox: &str,
    folder: Option<&str>,
) -> Reply {
    let filter = match parse_filter(ctx, shared) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    let fid = match folder {
        Some(f) => match mb.folder_id(f, false) {
            Some(id) => Some(id),
            None => return not_found(ctx),
        },
        None => None,
    };
    let items = mb
        .messages
        .iter()
        .filter(|s| fid.as_ref().is_none_or(|f| *f == s.folder_id))
        .filter(|s| matches(&filter, &s.json))
        .map(|s| s.json.clone())
        .collect();
    list_reply(ctx, items)
}

pub(super) fn create_message(ctx: &Ctx, shared: &Shared, mailbox: &str, folder: &str) -> Reply {
    let body = match json_body(ctx, shared, "microsoft.graph.message", "message", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let big_inline: Vec<String> = body["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let len = a["contentBytes"].as_str()?.len() / 4 * 3;
            (len >= 3 * 1024 * 1024).then(|| {
                format!(
                    "/attachments: `{}` ({len} bytes) is 3 MB or more; Graph wants an upload session (https://learn.microsoft.com/graph/outlook-large-attachments)",
                    a["name"].as_str().unwrap_or_default()
                )
            })
        })
        .collect();
    if !big_inline.is_empty() {
        record_violation(shared, ctx, "microsoft.graph.message", big_inline.clone());
        return graph_error(
            ctx,
            413,
            "ErrorRequestEntityTooLarge",
            &big_inline.join("; "),
        );
    }
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(fid) = mb.folder_id(folder, false) else {
        return not_found(ctx);
    };
    let property = |id: &str| {
        body["singleValueExtendedProperties"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
            .and_then(|p| p["value"].as_str())
            .map(str::to_string)
    };
    // PR_MESSAGE_FLAGS (Integer 0x0E07) set at creation: without MSGFLAG_UNSENT (8) not a
    // draft; MSGFLAG_READ (1) is the read state.
    let flags = property("Integer 0x0E07").and_then(|v| v.parse::<i64>().ok());
    let delivered = property("SystemTime 0x0E06");
    let submitted = property("SystemTime 0x0039");
    let mut msg = stamp(body, "AAMkM");
    msg["parentFolderId"] = json!(fid);
    match flags {
        Some(f) => {
            msg["isDraft"] = json!(f & 8 != 0);
            msg["isRead"] = json!(f & 1 != 0);
        }
        None => {
            msg["isDraft"] = json!(true);
            if msg.get("isRead").is_none() {
                msg["isRead"] = json!(true);
            }
        }
    }
    if let Some(t) = delivered {
        msg["receivedDateTime"] = json!(t);
    }
    if let Some(t) = submitted {
        msg["sentDateTime"] = json!(t);
    }
    msg["receivedDateTime"] = msg
        .get("receivedDateTime")
        .cloned()
        .unwrap_or(json!(now_iso()));
    msg["internetMessageId"] = msg
        .get("internetMessageId")
        .cloned()
        .unwrap_or(json!(format!("<{}@fake.graph>", random_string(20))));
    let mut inline_bytes = vec![];
    if let Some(atts) = msg.get_mut("attachments").and_then(Value::as_array_mut) {
        for a in atts {
            let id = opaque_id("AAMkA");
            a["id"] = json!(id);
            if let Some(b) = a["contentBytes"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            {
                a["size"] = json!(b.len());
                inline_bytes.push((id, b));
            }
            if let Some(o) = a.as_object_mut() {
                o.remove("contentBytes");
            }
        }
        msg["hasAttachments"] = json!(true);
    }
    mb.attachment_bytes.extend(inline_bytes);
    msg["webLink"] = json!(web_link(msg["id"].as_str().unwrap_or_default()));
    let id = msg["id"].as_str().unwrap_or_default().to_string();
    mb.log_change(&id, &fid, false);
    mb.messages.push(StoredMessage {
        folder_id: fid.clone(),
        json: msg.clone(),
    });
    drop(st);
    notify_message_change(shared, mailbox, &id, &fid, "created");
    Reply::json(201, present(ctx, &msg))
}

pub(super) fn message_item(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let patch = if ctx.method == "PATCH" {
        match json_body(ctx, shared, "microsoft.graph.message", "message", false) {
            Ok(b) => Some(b),
            Err(r) => return r,
        }
    } else {
        None
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(pos) = mb.messages.iter().position(|s| s.json["id"] == id) else {
        return not_found(ctx);
    };
    match ctx.method.as_str() {
        "GET" => Reply::json(200, present(ctx, &mb.messages[pos].json)),
        "PATCH" => {
            merge(&mut mb.messages[pos].json, &patch.unwrap_or_default());
            let fid = mb.messages[pos].folder_id.clone();
            mb.log_change(id, &fid, false);
            let reply = Reply::json(200, present(ctx, &mb.messages[pos].json));
            drop(st);
            notify_message_change(shared, mailbox, id, &fid, "updated");
            reply
        }
        "DELETE" => {
            let removed = mb.messages.remove(pos);
            mb.log_change(id, &removed.folder_id, true);
            Reply::empty(204)
        }
        _ => graph_error(ctx, 405, "MethodNotAllowed", "Method not allowed (fake)."),
    }
}

pub(super) fn move_message(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let body = match json_body(ctx, shared, "action:move", "move", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(dest) = get_ci(&body, "destinationId").and_then(Value::as_str) else {
        record_violation(
            shared,
            ctx,
            "action:move",
            vec!["/destinationId: required string".into()],
        );
        return graph_error(
            ctx,
            400,
            "ErrorInvalidRequest",
            "destinationId is required.",
        );
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(dest_id) = mb.folder_id(dest, false) else {
        return not_found(ctx);
    };
    let Some(pos) = mb.messages.iter().position(|s| s.json["id"] == id) else {
        return not_found(ctx);
    };
    let old_folder = mb.messages[pos].folder_id.clone();
    let msg = &mut mb.messages[pos];
    msg.folder_id = dest_id.clone();
    msg.json["parentFolderId"] = json!(dest_id);
    if !ctx.immutable_ids() {
        msg.json["id"] = json!(opaque_id("AAMkM"));
    }
    let new_id = msg.json["id"].as_str().unwrap_or_default().to_string();
    let out = present(ctx, &msg.json);
    mb.log_change(id, &old_folder, true);
    mb.log_change(&new_id, &dest_id, false);
    Reply::json(201, out)
}

/// The one `$filter` message delta takes (<https://learn.microsoft.com/graph/delta-query-messages>):
/// `receivedDateTime ge|gt <time>`; answers the time and whether it is included.
fn received_filter(filter: &str) -> Option<(chrono::DateTime<chrono::Utc>, bool)> {
    let mut words = filter.split_whitespace();
    let (field, op, value) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || !field.eq_ignore_ascii_case("receivedDateTime") {
        return None;
    }
    let t = chrono::DateTime::parse_from_rfc3339(value.trim_matches('\''))
        .ok()?
        .with_timezone(&chrono::Utc);
    match op.to_ascii_lowercase().as_str() {
        "ge" => Some((t, true)),
        "gt" => Some((t, false)),
        _ => None,
    }
}

/// `mailFolders/{id}/messages/delta`. A `$filter` (`receivedDateTime ge|gt …`) limits the
/// first round's listing; like Graph, the fake carries it in the links it gives. Changes
/// after the first round are listed whatever their receipt time (an assumption: Graph
/// does not document how the filter applies to them).
pub(super) fn message_delta(ctx: &Ctx, shared: &Shared, mailbox: &str, folder: &str) -> Reply {
    let filter = match ctx.q("$filter") {
        None => None,
        Some(f) => match received_filter(f) {
            Some(since) => Some((f.to_string(), since)),
            None => {
                return graph_error(
                    ctx,
                    400,
                    "ErrorInvalidUrlQueryFilter",
                    "Message delta only filters on receivedDateTime ge|gt (fake).",
                );
            }
        },
    };
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    let Some(fid) = mb.folder_id(folder, false) else {
        return not_found(ctx);
    };
    let first_round =
        ctx.q("$deltatoken").is_none() && ctx.q("$skiptoken").is_none_or(|t| t.starts_with("i."));
    let in_folder: Vec<Value> = mb
        .messages
        .iter()
        .filter(|m| m.folder_id == fid)
        .filter(|m| match (&filter, first_round) {
            (Some((_, (since, inclusive))), true) => m.json["receivedDateTime"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| if *inclusive { t >= *since } else { t > *since }),
            _ => true,
        })
        .map(|m| m.json.clone())
        .collect();
    let mut link = format!(
        "{}/v1.0/users/{}/mailFolders/{folder}/messages/delta",
        shared.base(),
        url::form_urlencoded::byte_serialize(mailbox.as_bytes()).collect::<String>()
    );
    if let Some((f, _)) = &filter {
        link.push_str("?$filter=");
        link.push_str(&url::form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>());
    }
    delta_reply(ctx, shared, mb, &fid, &in_folder, link, |m| present(ctx, m))
}

pub(super) fn web_link(id: &str) -> String {
    format!(
        "https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem",
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    )
}
