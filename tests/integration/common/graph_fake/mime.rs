//! `GET messages/{id}/$value`: a message's MIME. A message delivered with its own MIME
//! ([`GraphFake::put_mime_message`]) answers those bytes; one created through the API is
//! rendered as a plausible RFC 822 message (UTF-8, base64 parts; inline images in a
//! `multipart/related`, files in a `multipart/mixed`), as Exchange renders its items.

use base64::Engine;
use serde_json::Value;

use super::{
    GraphFake,
    http::{Ctx, Reply, not_found},
    state::{Mailbox, Shared, StoredMessage, random_string},
};

impl GraphFake {
    /// Puts a received message with the given MIME into `folder` (as mail delivery
    /// would, without any notification): `$value` answers `raw`, the JSON view is
    /// `message` (subject, from, …, which the test keeps consistent with `raw`).
    pub fn put_mime_message(
        &self,
        mailbox: &str,
        folder: &str,
        message: Value,
        raw: &[u8],
    ) -> String {
        let id = self.put_message(mailbox, folder, message);
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        mb.mime.insert(id.clone(), raw.to_vec());
        id
    }
}

/// `GET messages/{id}/$value`.
pub(super) fn message_value(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    if let Some(raw) = mb.mime.get(id) {
        return Reply::bytes(200, "message/rfc822", raw.clone());
    }
    match mb.messages.iter().find(|m| m.json["id"] == id) {
        Some(m) => Reply::bytes(200, "message/rfc822", render(mb, m)),
        None => not_found(ctx),
    }
}

fn b64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// RFC 2047 for a header value that is not plain ASCII.
fn encode_word(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    // Encoded words of at most 45 bytes of text, cut at character boundaries.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

fn address(r: &Value) -> Option<String> {
    let a = r["emailAddress"]["address"].as_str()?;
    Some(
        match r["emailAddress"]["name"].as_str().filter(|n| !n.is_empty()) {
            Some(n) if n.is_ascii() => format!("\"{}\" <{a}>", n.replace('"', "")),
            Some(n) => format!("{} <{a}>", encode_word(n)),
            None => a.to_string(),
        },
    )
}

fn address_list(v: &Value) -> Option<String> {
    let list: Vec<String> = v.as_array()?.iter().filter_map(address).collect();
    (!list.is_empty()).then(|| list.join(",\r\n "))
}

fn filename_param(name: &str) -> String {
    if name.is_ascii() && !name.contains('"') {
        format!("filename=\"{name}\"")
    } else {
        let enc: String =
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        format!("filename*=UTF-8''{enc}")
    }
}

fn part(content_type: &str, extra: &[String], body: &[u8]) -> String {
    let mut s = format!("Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n");
    for h in extra {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(&b64_lines(body));
    s.push_str("\r\n");
    s
}

fn multipart(subtype: &str, parts: &[String]) -> String {
    let boundary = format!("=_fake_{}", random_string(16));
    let mut s = format!("Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n");
    for p in parts {
        s.push_str(&format!("--{boundary}\r\n{p}"));
    }
    s.push_str(&format!("--{boundary}--\r\n"));
    s
}

fn rfc2822(t: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.to_rfc2822())
}

/// A message's MIME from its JSON and its attachments' bytes.
fn render(mb: &Mailbox, m: &StoredMessage) -> Vec<u8> {
    let j = &m.json;
    let mut head = String::new();
    let mut header = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    };
    header("From", j.get("from").and_then(address));
    if j.get("sender") != j.get("from") {
        header("Sender", j.get("sender").and_then(address));
    }
    header("To", address_list(&j["toRecipients"]));
    header("Cc", address_list(&j["ccRecipients"]));
    header("Bcc", address_list(&j["bccRecipients"]));
    header("Reply-To", address_list(&j["replyTo"]));
    header("Subject", j["subject"].as_str().map(encode_word));
    header(
        "Date",
        j["sentDateTime"]
            .as_str()
            .or(j["receivedDateTime"].as_str())
            .and_then(rfc2822),
    );
    header(
        "Message-ID",
        j["internetMessageId"].as_str().map(str::to_string),
    );
    header(
        "Importance",
        j["importance"]
            .as_str()
            .filter(|i| *i != "normal")
            .map(str::to_string),
    );
    header("MIME-Version", Some("1.0".into()));
    let html = j["body"]["contentType"]
        .as_str()
        .is_some_and(|c| c.eq_ignore_ascii_case("html"));
    let body = part(
        if html {
            "text/html; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
        },
        &[],
        j["body"]["content"].as_str().unwrap_or("").as_bytes(),
    );
    let mut inline = vec![];
    let mut files = vec![];
    for a in j["attachments"].as_array().into_iter().flatten() {
        let bytes = a["id"]
            .as_str()
            .and_then(|id| mb.attachment_bytes.get(id))
            .cloned()
            .unwrap_or_default();
        let name = a["name"].as_str().unwrap_or("attachment");
        let ct = a["contentType"]
            .as_str()
            .unwrap_or("application/octet-stream");
        let is_inline = a["isInline"].as_bool().unwrap_or(false);
        let mut extra = vec![format!(
            "Content-Disposition: {}; {}",
            if is_inline { "inline" } else { "attachment" },
            filename_param(name)
        )];
        if let Some(cid) = a["contentId"].as_str() {
            extra.push(format!("Content-ID: <{cid}>"));
        }
        let p = part(ct, &extra, &bytes);
        if is_inline {
            inline.push(p)
        } else {
            files.push(p)
        }
    }
    let mut content = if inline.is_empty() {
        body
    } else {
        let mut related = vec![body];
        related.extend(inline);
        multipart("related", &related)
    };
    if !files.is_empty() {
        let mut mixed = vec![content];
        mixed.extend(files);
        content = multipart("mixed", &mixed);
    }
    let mut out = head.into_bytes();
    out.extend_from_slice(content.as_bytes());
    out
}
