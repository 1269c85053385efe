//! The outgoing mail of `dingtalk.send_mail`, the pure half: its `Message-ID` (derived
//! from the request's `Idempotency-Key`, so a retried request names the same mail) and
//! its MIME bytes, built with `lettre`'s message builder: one copy to submit (no `Bcc`
//! header: blind copies travel only in the envelope) and one for the Sent folder (with
//! `Bcc`, as mail clients keep it), both with the same headers otherwise.

use std::time::SystemTime;

use lettre::message::{Mailbox, Message, MultiPart, SinglePart, header::ContentType};
use sha2::{Digest, Sha256};

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    /// The sending mailbox's address (`From`).
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Copy.
    pub cc: Vec<String>,
    /// Blind copy (envelope only, and the Sent copy).
    pub bcc: Vec<String>,
    /// Where replies go (`Reply-To`), when not to `from`.
    pub reply_to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
}

/// A built message.
#[derive(Debug, Clone)]
pub struct Composed {
    /// The bytes submitted over SMTP (no `Bcc` header).
    pub raw: Vec<u8>,
    /// The bytes appended to the Sent folder (with `Bcc`).
    pub sent_copy: Vec<u8>,
    /// The envelope recipients: to, cc and bcc, each once.
    pub recipients: Vec<String>,
}

/// A value the builder refused, by input field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ComposeError {
    /// The input field (`to`, `cc`, `bcc`, `reply_to`, `from`).
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

/// The domain part of an address (`corp.example` of `ops@corp.example`).
pub fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim())
        .filter(|d| !d.is_empty())
}

/// The `Message-ID` of a send under an `Idempotency-Key`: `<hash@domain>`, the hash
/// (128 bits of SHA-256, hex) over who sent (`scope`: the API key and the route) and the
/// key, so the same request retried names the same mail and another caller's key never
/// collides with it.
pub fn message_id_for_key(scope: &str, key: &str, domain: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"dingbridge.send_mail\n");
    h.update(scope.as_bytes());
    h.update(b"\n");
    h.update(key.as_bytes());
    format!("<{}@{domain}>", hex::encode(&h.finalize()[..16]))
}

/// A fresh `Message-ID` for a send without a key.
pub fn random_message_id(domain: &str) -> String {
    format!("<{}@{domain}>", uuid::Uuid::new_v4().simple())
}

fn mailbox(field: &'static str, address: &str) -> Result<Mailbox, ComposeError> {
    address.trim().parse::<Mailbox>().map_err(|e| ComposeError {
        field,
        reason: format!("`{address}` is not a usable e-mail address ({e})"),
    })
}

/// Builds the message: `From`, `To`, `Cc`, `Reply-To`, `Subject`, `Date`, `Message-ID`
/// and the body (text, HTML, or both as `multipart/alternative`; an HTML-only body gets
/// a text alternative derived from it, for clients that show no HTML).
pub fn compose(
    mail: &OutgoingMail,
    message_id: &str,
    date: SystemTime,
) -> Result<Composed, ComposeError> {
    let build = |keep_bcc: bool| -> Result<Vec<u8>, ComposeError> {
        let mut b = Message::builder()
            .from(mailbox("from", &mail.from)?)
            .subject(mail.subject.clone())
            .date(date)
            .message_id(Some(message_id.to_string()));
        for a in &mail.to {
            b = b.to(mailbox("to", a)?);
        }
        for a in &mail.cc {
            b = b.cc(mailbox("cc", a)?);
        }
        for a in &mail.bcc {
            b = b.bcc(mailbox("bcc", a)?);
        }
        for a in &mail.reply_to {
            b = b.reply_to(mailbox("reply_to", a)?);
        }
        if keep_bcc {
            b = b.keep_bcc();
        }
        let text = mail.text.clone().or_else(|| {
            mail.html
                .as_deref()
                .map(mail_parser::decoders::html::html_to_text)
        });
        let built = match (text, mail.html.clone()) {
            (Some(t), Some(h)) => b.multipart(MultiPart::alternative_plain_html(t, h)),
            (Some(t), None) => b.singlepart(SinglePart::plain(t)),
            (None, Some(h)) => {
                b.singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(h))
            }
            (None, None) => b.singlepart(SinglePart::plain(String::new())),
        };
        built.map(|m| m.formatted()).map_err(|e| ComposeError {
            field: "to",
            reason: e.to_string(),
        })
    };
    let mut recipients: Vec<String> = Vec::new();
    for a in mail.to.iter().chain(&mail.cc).chain(&mail.bcc) {
        let a = a.trim().to_string();
        if !recipients.iter().any(|r| r.eq_ignore_ascii_case(&a)) {
            recipients.push(a);
        }
    }
    Ok(Composed {
        raw: build(false)?,
        sent_copy: build(true)?,
        recipients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::message::header;

    fn sample() -> OutgoingMail {
        OutgoingMail {
            from: "ops@corp.example".into(),
            to: vec!["alice@example.com".into()],
            cc: vec!["bob@example.com".into()],
            bcc: vec!["audit@example.com".into()],
            reply_to: vec!["desk@corp.example".into()],
            subject: "报关单 customs form".into(),
            text: Some("Hello Alice,\nthe form is ready.".into()),
            html: Some("<p>Hello <b>Alice</b>, the form is ready.</p>".into()),
        }
    }

    #[test]
    fn the_message_id_is_stable_per_key_and_scope_and_uses_the_route_domain() {
        let a = message_id_for_key("key1:route", "zap-42", "corp.example");
        assert_eq!(
            a,
            message_id_for_key("key1:route", "zap-42", "corp.example")
        );
        assert!(a.starts_with('<') && a.ends_with("@corp.example>"), "{a}");
        assert_eq!(a.len(), "<@corp.example>".len() + 32);
        assert_ne!(
            a,
            message_id_for_key("key2:route", "zap-42", "corp.example")
        );
        assert_ne!(
            a,
            message_id_for_key("key1:route", "zap-43", "corp.example")
        );
        assert_ne!(
            random_message_id("x.example"),
            random_message_id("x.example")
        );
        assert_eq!(domain_of("ops@corp.example"), Some("corp.example"));
        assert_eq!(domain_of("nobody"), None);
    }

    #[test]
    fn the_submitted_copy_has_no_bcc_header_and_the_sent_copy_keeps_it() {
        let id = "<abc@corp.example>";
        let c = compose(&sample(), id, SystemTime::UNIX_EPOCH).expect("builds");
        assert_eq!(header(&c.raw, "Message-ID").as_deref(), Some(id));
        assert_eq!(header(&c.raw, "Bcc"), None);
        assert_eq!(
            header(&c.sent_copy, "Bcc").as_deref(),
            Some("audit@example.com")
        );
        assert_eq!(
            header(&c.sent_copy, "Message-ID"),
            header(&c.raw, "Message-ID")
        );
        assert_eq!(header(&c.raw, "To").as_deref(), Some("alice@example.com"));
        assert_eq!(header(&c.raw, "Cc").as_deref(), Some("bob@example.com"));
        assert_eq!(
            header(&c.raw, "Reply-To").as_deref(),
            Some("desk@corp.example")
        );
        assert_eq!(
            c.recipients,
            ["alice@example.com", "bob@example.com", "audit@example.com"]
        );
        // The non-ASCII subject is encoded, the message itself is 7-bit.
        assert!(c.raw.is_ascii());
        let parsed = mail_parser::MessageParser::default()
            .parse(&c.raw)
            .expect("parses");
        assert_eq!(parsed.subject(), Some("报关单 customs form"));
        // Line ends travel as CRLF.
        assert_eq!(
            parsed.body_text(0).as_deref().map(str::trim_end),
            Some("Hello Alice,\r\nthe form is ready.")
        );
        assert!(parsed.body_html(0).expect("html").contains("<b>Alice</b>"));
    }

    #[test]
    fn an_html_only_body_gets_a_text_alternative_and_text_only_stays_plain() {
        let mut m = sample();
        m.text = None;
        let c = compose(&m, "<a@b.c>", SystemTime::now()).expect("builds");
        let parsed = mail_parser::MessageParser::default()
            .parse(&c.raw)
            .expect("parses");
        assert!(
            parsed
                .body_text(0)
                .expect("text")
                .contains("the form is ready")
        );
        assert!(
            header(&c.raw, "Content-Type")
                .expect("ct")
                .starts_with("multipart/alternative")
        );
        m.text = Some("only text".into());
        m.html = None;
        let c = compose(&m, "<a@b.c>", SystemTime::now()).expect("builds");
        assert!(
            header(&c.raw, "Content-Type")
                .expect("ct")
                .starts_with("text/plain")
        );
    }

    #[test]
    fn a_bad_address_names_its_field_and_duplicates_are_one_recipient() {
        let mut m = sample();
        m.cc = vec!["not an address".into()];
        let err = compose(&m, "<a@b.c>", SystemTime::now()).expect_err("bad cc");
        assert_eq!(err.field, "cc");
        let mut m = sample();
        m.cc = vec!["ALICE@example.com".into()];
        let c = compose(&m, "<a@b.c>", SystemTime::now()).expect("builds");
        assert_eq!(c.recipients, ["alice@example.com", "audit@example.com"]);
    }
}
