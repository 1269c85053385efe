//! DingTalk Mail → Outlook, the pure half: a raw RFC 822 message (what IMAP's
//! `BODY.PEEK[]` returns) becomes the [`ReceivedMail`] that
//! [`GraphClient::import_mail`](crate::graph::GraphClient::import_mail) creates as a
//! received Outlook item, plus the origin marker value that finds it again.
//!
//! Kept: subject, `From`, `Sender`, `To`, `Cc`, `Bcc`, `Reply-To` (names decoded from
//! RFC 2047 in any charset the `mail-parser` crate knows, GB18030/GBK/Big5 included, and
//! 8-bit GB18030 subjects that skipped RFC 2047), the sent date (`Date`) and the receipt
//! time (the IMAP internal date), one body (HTML when the mail has any; text parts and
//! inline images of a mixed body are merged into it), inline images with their
//! `Content-ID`, every other part as a file with its original bytes (nested messages as
//! `.eml`), `Message-ID`, importance (`Importance`, `X-Priority`, `X-MSMail-Priority`,
//! `Priority`) and the read flag. Not kept, because Graph cannot create them on a
//! message: other headers (`Received`, `List-*`, `References`, DKIM…; Graph takes only
//! custom `x-` headers, and only on sending), the alternative text part when there is an
//! HTML one, and attachments above Outlook's 150 MB (replaced by a note). A part whose
//! transfer encoding is broken is kept undecoded as `<name>.undecoded.txt` and reported in
//! [`Rendered::problems`]; the rest of the message is imported as usual.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use mail_parser::{
    Address, Encoding, HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType,
    decoders::{
        base64::base64_decode,
        html::{html_to_text, text_to_html},
        quoted_printable::quoted_printable_decode,
    },
};
use sha2::{Digest, Sha256};

use crate::graph::{
    Importance, MailAddress, MailAttachment, MailBody, ReceivedMail, client::UPLOAD_SESSION_MAX,
};

/// What the IMAP side knows of a message besides its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportContext {
    /// `\Seen` in DingTalk Mail.
    pub is_read: bool,
    /// The IMAP `INTERNALDATE` (when the server received it).
    pub internal_date: Option<DateTime<Utc>>,
}

/// A parsed mail, ready for Graph, and what could not be kept as it was.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The mail to create.
    pub mail: ReceivedMail,
    /// One line per part that was broken, replaced or too large (for logs and audit).
    pub problems: Vec<String>,
}

/// The origin marker value of a DingTalk mail of `route`. From its `Message-ID` when it
/// has one (`dingtalk-mail:<route>:mid:<32 hex of SHA-256>`): stable across a
/// `UIDVALIDITY` change, a move between folders and a re-run, and the same key Graph's
/// `internetMessageId` lookup uses. Otherwise from its place
/// (`dingtalk-mail:<route>:uid:<uidvalidity>:<uid>:<folder>`).
pub fn mail_origin(
    route: &str,
    message_id: Option<&str>,
    folder: &str,
    uid_validity: u32,
    uid: u32,
) -> String {
    match message_id.map(clean_id).filter(|m| !m.is_empty()) {
        Some(mid) => {
            let digest = Sha256::digest(mid.as_bytes());
            format!("dingtalk-mail:{route}:mid:{}", hex::encode(&digest[..16]))
        }
        None => format!("dingtalk-mail:{route}:uid:{uid_validity}:{uid}:{folder}"),
    }
}

/// The `Message-ID` of a raw message, without angle brackets (for [`mail_origin`]).
pub fn message_id(raw: &[u8]) -> Option<String> {
    let msg = MessageParser::default().parse_headers(raw)?;
    msg.message_id()
        .map(clean_id)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// Parses `raw` into the mail Graph creates. Never fails: what cannot be parsed is
/// attached as it came and named in [`Rendered::problems`].
pub fn render(raw: &[u8], ctx: &ImportContext) -> Rendered {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return unreadable(raw, ctx);
    };
    let mut problems = Vec::new();
    let from = first_address(msg.from());
    let sender = first_address(msg.sender()).filter(|s| {
        from.as_ref()
            .is_none_or(|f| !f.address.eq_ignore_ascii_case(&s.address))
    });
    let sent_at = msg
        .date()
        .filter(|d| d.is_valid())
        .and_then(|d| Utc.timestamp_opt(d.to_timestamp(), 0).single());
    let (body, generated_cids) = body(&msg);
    let attachments = attachments(&msg, &body, &generated_cids, &mut problems);
    for (i, part) in msg.parts.iter().enumerate() {
        let in_body = msg.html_body.contains(&(i as u32)) || msg.text_body.contains(&(i as u32));
        if part.is_encoding_problem && in_body {
            problems.push(format!(
                "part {i}: the body's {} encoding is broken; shown as received",
                transfer_encoding(part)
            ));
        }
    }
    let mail = ReceivedMail {
        subject: subject(&msg),
        from,
        sender,
        to: addresses(msg.to()),
        cc: addresses(msg.cc()),
        bcc: addresses(msg.bcc()),
        reply_to: addresses(msg.reply_to()),
        body,
        sent_at,
        received_at: ctx.internal_date.or(sent_at),
        internet_message_id: msg
            .message_id()
            .map(clean_id)
            .filter(|m| !m.is_empty())
            .map(|m| format!("<{m}>")),
        importance: importance(&msg),
        is_read: ctx.is_read,
        attachments,
    };
    Rendered { mail, problems }
}

/// A message `mail-parser` cannot read at all: kept whole as `message.eml`.
fn unreadable(raw: &[u8], ctx: &ImportContext) -> Rendered {
    let mail = ReceivedMail {
        subject: "(unreadable message)".into(),
        body: MailBody::Text(
            "DingBridge could not read this message; the original is attached as message.eml."
                .into(),
        ),
        received_at: ctx.internal_date,
        is_read: ctx.is_read,
        attachments: vec![MailAttachment {
            name: "message.eml".into(),
            content_type: "message/rfc822".into(),
            content_id: None,
            is_inline: false,
            content: Bytes::copy_from_slice(raw),
        }],
        ..ReceivedMail::default()
    };
    Rendered {
        mail,
        problems: vec![format!(
            "the message ({} bytes) is not RFC 822; attached whole as message.eml",
            raw.len()
        )],
    }
}

/// `<id>` or ` id ` → `id`.
fn clean_id(id: &str) -> &str {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
}

fn to_address(a: &mail_parser::Addr<'_>) -> Option<MailAddress> {
    let address = a.address()?.trim();
    if address.is_empty() {
        return None;
    }
    Some(MailAddress {
        name: a
            .name()
            .map(|n| n.trim().trim_matches('"').trim().to_string())
            .filter(|n| !n.is_empty() && n != address),
        address: address.to_string(),
    })
}

fn addresses(a: Option<&Address<'_>>) -> Vec<MailAddress> {
    a.into_iter()
        .flat_map(|a| a.iter())
        .filter_map(to_address)
        .collect()
}

fn first_address(a: Option<&Address<'_>>) -> Option<MailAddress> {
    addresses(a).into_iter().next()
}

/// The raw bytes of a top-level header's value.
fn raw_header<'a>(msg: &'a Message<'_>, name: &HeaderName<'_>) -> Option<&'a [u8]> {
    let h = msg.root_part().headers.iter().find(|h| &h.name == name)?;
    msg.raw_message()
        .get(h.offset_start as usize..h.offset_end as usize)
}

/// The subject, decoded. An 8-bit subject without RFC 2047 (sent by some Chinese clients)
/// is read in the message's charset, or GB18030 (which covers GBK and GB2312).
fn subject(msg: &Message<'_>) -> String {
    if let Some(raw) = raw_header(msg, &HeaderName::Subject)
        && std::str::from_utf8(raw).is_err()
    {
        let label = msg
            .content_type()
            .and_then(|c| c.attribute("charset"))
            .unwrap_or("gb18030");
        let enc = encoding_rs::Encoding::for_label(label.as_bytes())
            .filter(|e| *e != encoding_rs::UTF_8)
            .unwrap_or(encoding_rs::GB18030);
        let (text, _, _) = enc.decode(raw);
        return unfold(&text);
    }
    msg.subject().map(unfold).unwrap_or_default()
}

fn unfold(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn header_text(msg: &Message<'_>, name: &str) -> Option<String> {
    msg.header_raw(name).map(|v| v.trim().to_ascii_lowercase())
}

/// `Importance`, else `X-Priority` (1–2 high, 4–5 low), `X-MSMail-Priority`, `Priority`.
fn importance(msg: &Message<'_>) -> Importance {
    if let Some(v) = header_text(msg, "Importance") {
        match v.as_str() {
            "high" => return Importance::High,
            "low" => return Importance::Low,
            "normal" => return Importance::Normal,
            _ => {}
        }
    }
    if let Some(v) = header_text(msg, "X-Priority") {
        match v.chars().next() {
            Some('1' | '2') => return Importance::High,
            Some('4' | '5') => return Importance::Low,
            Some('3') => return Importance::Normal,
            _ => {}
        }
    }
    if let Some(v) = header_text(msg, "X-MSMail-Priority") {
        match v.as_str() {
            "high" => return Importance::High,
            "low" => return Importance::Low,
            _ => {}
        }
    }
    match header_text(msg, "Priority").as_deref() {
        Some("urgent") => Importance::High,
        Some("non-urgent") => Importance::Low,
        _ => Importance::Normal,
    }
}

fn is_image(part: &MessagePart<'_>) -> bool {
    part.content_type()
        .is_some_and(|c| c.ctype().eq_ignore_ascii_case("image"))
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The one body Graph keeps: HTML when the mail has an HTML part or shows images inline
/// between its text parts (text parts converted, images as `cid:` references; the ids
/// made up for images that had none are returned by part), text otherwise.
fn body(msg: &Message<'_>) -> (MailBody, HashMap<u32, String>) {
    let part = |i: &u32| msg.parts.get(*i as usize);
    let html_mode = msg.html_body.iter().filter_map(part).any(|p| {
        matches!(p.body, PartType::Html(_))
            || matches!(p.body, PartType::InlineBinary(_)) && is_image(p)
    });
    let mut generated = HashMap::new();
    if !html_mode {
        let text = msg
            .text_body
            .iter()
            .filter_map(part)
            .filter_map(|p| match &p.body {
                PartType::Text(t) => Some(t.to_string()),
                PartType::Html(h) => Some(html_to_text(h)),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        return (MailBody::Text(text), generated);
    }
    let mut html = String::new();
    for i in &msg.html_body {
        let Some(p) = part(i) else { continue };
        match &p.body {
            PartType::Html(h) => html.push_str(h),
            PartType::Text(t) => html.push_str(&text_to_html(t)),
            PartType::InlineBinary(_) if is_image(p) => {
                let cid = p
                    .content_id()
                    .map(clean_id)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("part{i}@dingbridge"));
                html.push_str(&format!(r#"<img src="cid:{}">"#, escape_attr(&cid)));
                generated.insert(*i, cid);
            }
            _ => {}
        }
    }
    (MailBody::Html(html), generated)
}

fn transfer_encoding(part: &MessagePart<'_>) -> String {
    part.content_transfer_encoding()
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".into())
}

/// `type/subtype`, with the charset of text parts (their bytes are kept as they came).
fn content_type(part: &MessagePart<'_>) -> String {
    let Some(c) = part.content_type() else {
        return "text/plain".into();
    };
    let mut s = match c.subtype() {
        Some(sub) => format!("{}/{}", c.ctype(), sub),
        None => c.ctype().to_string(),
    }
    .to_ascii_lowercase();
    if c.ctype().eq_ignore_ascii_case("text")
        && let Some(cs) = c.attribute("charset")
    {
        s.push_str("; charset=");
        s.push_str(cs);
    }
    s
}

/// A file name Outlook can show: no line breaks or path separators, not empty.
fn clean_name(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .map(|c| match c {
            '/' | '\\' => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect::<String>()
        .trim()
        .chars()
        .take(255)
        .collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

fn extension(content_type: &str) -> &'static str {
    let essence = content_type.split(';').next().unwrap_or_default();
    match essence {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpg",
        "image/gif" => "gif",
        "image/bmp" => "bmp",
        "image/webp" => "webp",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        "text/html" => "html",
        "text/calendar" => "ics",
        "message/rfc822" => "eml",
        _ => "bin",
    }
}

/// The name of a part: its own, a nested message's subject, or `part-<n>.<ext>`.
fn part_name(i: usize, part: &MessagePart<'_>, content_type: &str) -> String {
    if let Some(n) = part.attachment_name().and_then(clean_name) {
        return n;
    }
    if let PartType::Message(m) = &part.body
        && let Some(s) = m.subject().and_then(clean_name)
    {
        return format!("{s}.eml");
    }
    format!("part-{i}.{}", extension(content_type))
}

/// The part's bytes after its transfer encoding, before any charset conversion.
fn original_bytes(raw: &[u8], part: &MessagePart<'_>) -> Option<Vec<u8>> {
    let encoded = raw.get(part.offset_body as usize..part.offset_end as usize)?;
    match part.encoding {
        Encoding::Base64 => base64_decode(encoded),
        Encoding::QuotedPrintable => quoted_printable_decode(encoded),
        Encoding::None => Some(encoded.to_vec()),
    }
}

fn attachments(
    msg: &Message<'_>,
    body: &MailBody,
    generated_cids: &HashMap<u32, String>,
    problems: &mut Vec<String>,
) -> Vec<MailAttachment> {
    let html = match body {
        MailBody::Html(h) => h.to_ascii_lowercase(),
        MailBody::Text(_) => String::new(),
    };
    let mut out = Vec::new();
    for &i in &msg.attachments {
        let Some(part) = msg.parts.get(i as usize) else {
            continue;
        };
        let declared = content_type(part);
        let name = part_name(i as usize, part, &declared);
        if part.is_encoding_problem {
            let raw = msg
                .raw_message()
                .get(part.offset_body as usize..part.offset_end as usize)
                .unwrap_or_default();
            let kept = format!("{name}.undecoded.txt");
            problems.push(format!(
                "part {i} (`{name}`, {declared}): its {} encoding is broken; kept undecoded as `{kept}`",
                transfer_encoding(part)
            ));
            out.push(MailAttachment {
                name: kept,
                content_type: "text/plain".into(),
                content_id: None,
                is_inline: false,
                content: Bytes::copy_from_slice(raw),
            });
            continue;
        }
        let content = match &part.body {
            PartType::Text(_) | PartType::Html(_) => {
                original_bytes(msg.raw_message(), part).unwrap_or_else(|| part.contents().to_vec())
            }
            PartType::Binary(b) | PartType::InlineBinary(b) => b.to_vec(),
            PartType::Message(m) => m.raw_message().to_vec(),
            PartType::Multipart(_) => continue,
        };
        if content.len() as u64 > UPLOAD_SESSION_MAX {
            problems.push(format!(
                "part {i} (`{name}`, {} bytes) is larger than Outlook's 150 MB per attachment; replaced by a note",
                content.len()
            ));
            out.push(MailAttachment {
                name: format!("{name}.too-large.txt"),
                content_type: "text/plain; charset=utf-8".into(),
                content_id: None,
                is_inline: false,
                content: Bytes::from(format!(
                    "`{name}` ({} bytes) is larger than Outlook accepts (150 MB); it is only in DingTalk Mail.",
                    content.len()
                )),
            });
            continue;
        }
        let content_id = generated_cids.get(&i).cloned().or_else(|| {
            part.content_id()
                .map(clean_id)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
        });
        let is_inline = generated_cids.contains_key(&i)
            || content_id
                .as_ref()
                .is_some_and(|c| html.contains(&format!("cid:{}", c.to_ascii_lowercase())));
        out.push(MailAttachment {
            name,
            content_type: declared,
            content_id,
            is_inline,
            content: Bytes::from(content),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::STANDARD};

    fn ctx() -> ImportContext {
        ImportContext {
            is_read: false,
            internal_date: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 5).single(),
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/mail/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// RFC 2047 `B` encoding of `text` in `charset`.
    fn encoded_word(charset: &'static encoding_rs::Encoding, text: &str) -> String {
        let (bytes, _, bad) = charset.encode(text);
        assert!(!bad, "{text} fits {}", charset.name());
        format!("=?{}?B?{}?=", charset.name(), STANDARD.encode(&bytes))
    }

    #[test]
    fn plain_text_keeps_headers_dates_and_the_read_flag() {
        let r = render(
            &fixture("plain.eml"),
            &ImportContext {
                is_read: true,
                ..ctx()
            },
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let m = r.mail;
        assert_eq!(m.subject, "Customs notice 2026-0301");
        assert_eq!(
            m.from,
            Some(MailAddress {
                name: Some("Li Wei".into()),
                address: "li.wei@customs.example.cn".into()
            })
        );
        assert_eq!(m.sender, None, "Sender equal to From is not repeated");
        assert_eq!(m.to.len(), 2);
        assert_eq!(m.to[1].address, "ops@contoso.com");
        assert_eq!(m.cc[0].address, "boss@contoso.com");
        assert_eq!(m.reply_to[0].address, "noreply@customs.example.cn");
        assert_eq!(
            m.body,
            MailBody::Text("Your shipment cleared customs.\r\nRegards\r\n".into())
        );
        assert_eq!(
            m.internet_message_id.as_deref(),
            Some("<notice-0301@customs.example.cn>")
        );
        assert_eq!(
            m.sent_at,
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).single(),
            "Date: Sun, 1 Mar 2026 08:00:00 +0800"
        );
        assert_eq!(m.received_at, ctx().internal_date);
        assert_eq!(m.importance, Importance::High, "X-Priority: 1");
        assert!(m.is_read);
        assert!(m.attachments.is_empty());
    }

    #[test]
    fn html_with_an_inline_image_and_a_file() {
        let r = render(&fixture("html_inline_image.eml"), &ctx());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let m = r.mail;
        let MailBody::Html(html) = &m.body else {
            panic!("html body expected: {:?}", m.body)
        };
        assert!(
            html.contains(r#"<img src="cid:logo@dingtalk" alt="logo">"#),
            "{html}"
        );
        assert!(!m.is_read);
        assert_eq!(m.attachments.len(), 2);
        let logo = &m.attachments[0];
        assert_eq!(logo.name, "logo.png");
        assert_eq!(logo.content_type, "image/png");
        assert_eq!(logo.content_id.as_deref(), Some("logo@dingtalk"));
        assert!(logo.is_inline);
        assert_eq!(&logo.content[..4], b"\x89PNG");
        let pdf = &m.attachments[1];
        assert_eq!(pdf.name, "报关单.pdf", "RFC 2231 UTF-8 file name");
        assert_eq!(pdf.content_type, "application/pdf");
        assert!(!pdf.is_inline);
        assert_eq!(&pdf.content[..], b"%PDF-1.4 fake");
        assert_eq!(m.importance, Importance::Low, "Importance: low");
    }

    #[test]
    fn chinese_charsets_in_subjects_names_and_bodies() {
        for (charset, subject, name, body) in [
            (
                encoding_rs::GB18030,
                "关于海关申报的通知",
                "王小明",
                "货物已清关。",
            ),
            (encoding_rs::GBK, "报关资料补充", "张三", "请补充发票。"),
            (
                encoding_rs::BIG5,
                "關於報關的通知",
                "陳大文",
                "貨物已清關。",
            ),
            (
                encoding_rs::UTF_8,
                "紧急：客户变更 ✓",
                "李四",
                "客户变更了交货日期。",
            ),
        ] {
            let (body_bytes, _, _) = charset.encode(body);
            let mut raw = format!(
                "From: {} <sender@example.cn>\r\nTo: ops@contoso.com\r\nSubject: {}\r\n\
                 Message-ID: <cs-{}@example.cn>\r\nMIME-Version: 1.0\r\n\
                 Content-Type: text/plain; charset={}\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                encoded_word(charset, name),
                encoded_word(charset, subject),
                charset.name(),
                charset.name(),
            )
            .into_bytes();
            raw.extend_from_slice(STANDARD.encode(&body_bytes).as_bytes());
            raw.extend_from_slice(b"\r\n");
            let r = render(&raw, &ctx());
            assert!(
                r.problems.is_empty(),
                "{}: {:?}",
                charset.name(),
                r.problems
            );
            assert_eq!(r.mail.subject, subject, "{}", charset.name());
            assert_eq!(
                r.mail.from.as_ref().and_then(|f| f.name.as_deref()),
                Some(name),
                "{}",
                charset.name()
            );
            assert_eq!(
                r.mail.body,
                MailBody::Text(body.into()),
                "{}",
                charset.name()
            );
        }
    }

    #[test]
    fn fixtures_in_gb18030_and_big5_decode() {
        let r = render(&fixture("gb18030.eml"), &ctx());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.mail.subject, "关于海关申报的通知");
        assert_eq!(r.mail.from.and_then(|f| f.name).as_deref(), Some("王小明"));
        let MailBody::Html(html) = &r.mail.body else {
            panic!("{:?}", r.mail.body)
        };
        assert!(html.contains("货物已清关"), "{html}");
        assert_eq!(r.mail.attachments.len(), 1);
        assert_eq!(
            r.mail.attachments[0].name, "发票.txt",
            "GB18030 RFC 2047 file name"
        );
        assert_eq!(
            r.mail.attachments[0].content_type,
            "text/plain; charset=gb18030"
        );
        let (original, _, _) = encoding_rs::GB18030.encode("发票号码 12345");
        assert_eq!(
            &r.mail.attachments[0].content[..],
            &original[..],
            "bytes as sent"
        );

        let r = render(&fixture("big5.eml"), &ctx());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.mail.subject, "關於報關的通知");
        assert_eq!(r.mail.to[0].name.as_deref(), Some("陳大文"));
        assert_eq!(r.mail.body, MailBody::Text("貨物已清關。\r\n".into()));
    }

    #[test]
    fn an_eight_bit_gbk_subject_is_read_as_gb18030() {
        let (subject, _, _) = encoding_rs::GBK.encode("未编码的主题");
        let mut raw = b"From: a@example.cn\r\nSubject: ".to_vec();
        raw.extend_from_slice(&subject);
        raw.extend_from_slice(b"\r\nContent-Type: text/plain; charset=gbk\r\n\r\nhi\r\n");
        assert_eq!(render(&raw, &ctx()).mail.subject, "未编码的主题");
    }

    #[test]
    fn a_broken_part_is_kept_undecoded_and_the_rest_is_imported() {
        let r = render(&fixture("broken_part.eml"), &ctx());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("report.pdf"), "{:?}", r.problems);
        let m = r.mail;
        assert_eq!(m.subject, "Partly broken");
        assert_eq!(m.body, MailBody::Text("The body is fine.".into()));
        let names: Vec<&str> = m.attachments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["report.pdf.undecoded.txt", "ok.txt"]);
        assert!(m.attachments[0].content.starts_with(b"JVBERi0xLjQK!!!"));
        assert_eq!(&m.attachments[1].content[..], b"still here");
    }

    #[test]
    fn mixed_text_and_images_become_one_html_body() {
        let png = STANDARD.encode(b"\x89PNG\r\n\x1a\nfake");
        let raw = format!(
            "From: a@example.cn\r\nSubject: photos\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=b\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nbefore\r\n\
             --b\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{png}\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nafter\r\n--b--\r\n"
        );
        let r = render(raw.as_bytes(), &ctx());
        let MailBody::Html(html) = &r.mail.body else {
            panic!("{:?}", r.mail.body)
        };
        let img = html
            .find("<img src=\"cid:part2@dingbridge\">")
            .expect("image");
        assert!(html.find("before").is_some_and(|b| b < img));
        assert!(html.find("after").is_some_and(|a| a > img));
        assert_eq!(r.mail.attachments.len(), 1);
        assert!(r.mail.attachments[0].is_inline);
        assert_eq!(
            r.mail.attachments[0].content_id.as_deref(),
            Some("part2@dingbridge")
        );
    }

    #[test]
    fn nested_messages_become_eml_files() {
        let raw = "From: a@example.cn\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n\
                   Content-Type: multipart/mixed; boundary=b\r\n\r\n\
                   --b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n\
                   --b\r\nContent-Type: message/rfc822\r\n\r\n\
                   From: c@example.cn\r\nSubject: original\r\n\r\noriginal body\r\n--b--\r\n";
        let r = render(raw.as_bytes(), &ctx());
        assert_eq!(r.mail.attachments.len(), 1);
        let eml = &r.mail.attachments[0];
        assert_eq!(eml.name, "original.eml");
        assert_eq!(eml.content_type, "message/rfc822");
        assert!(eml.content.starts_with(b"From: c@example.cn"));
    }

    #[test]
    fn importance_headers() {
        for (header, want) in [
            ("Importance: High", Importance::High),
            ("X-Priority: 5 (Lowest)", Importance::Low),
            ("X-MSMail-Priority: High", Importance::High),
            ("Priority: non-urgent", Importance::Low),
            ("X-Priority: 3", Importance::Normal),
        ] {
            let raw = format!("From: a@b.c\r\n{header}\r\nSubject: s\r\n\r\nx\r\n");
            assert_eq!(
                render(raw.as_bytes(), &ctx()).mail.importance,
                want,
                "{header}"
            );
        }
    }

    #[test]
    fn garbage_is_kept_whole() {
        let r = render(b"", &ctx());
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.mail.attachments[0].name, "message.eml");
    }

    #[test]
    fn origins_follow_the_message_id_or_the_uid() {
        let a = mail_origin("ops", Some("<x@y>"), "INBOX", 7, 42);
        assert_eq!(
            a,
            mail_origin("ops", Some("x@y"), "Archive", 9, 1),
            "place-independent"
        );
        assert!(
            a.starts_with("dingtalk-mail:ops:mid:")
                && a.len() == "dingtalk-mail:ops:mid:".len() + 32
        );
        assert_ne!(a, mail_origin("other", Some("x@y"), "INBOX", 7, 42));
        assert_eq!(
            mail_origin("ops", None, "INBOX", 7, 42),
            "dingtalk-mail:ops:uid:7:42:INBOX"
        );
        assert_eq!(
            message_id(b"Message-ID: <m1@example.cn>\r\nSubject: s\r\n\r\nx").as_deref(),
            Some("m1@example.cn")
        );
    }
}
