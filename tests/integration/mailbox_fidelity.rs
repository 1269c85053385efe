//! The fidelity test of issue 12, through the running binary (real Dovecot, the Graph
//! fake): 100 mails in one DingTalk mailbox — plain, HTML with inline images, 20
//! attachments of which one is 20 MB (an upload session), subjects, names and file
//! names in GB18030, Big5 and UTF-8, a mail with a broken MIME part — land in Outlook
//! exactly once with their content intact: subject, from/to/cc, body, every attachment's
//! bytes as the fake stored them, the inline images' content ids.

use crate::common;

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{
    dovecot::{Dovecot, Seed, USER},
    env::{Env, MAILBOX},
    eventually,
    graph_fake::GraphFake,
};
use dingbridge::{
    graph::MailBody,
    sync::mail_import::{ImportContext, render},
};
use serde_json::Value;

const FOLDER: &str = "DingTalk Mail";
const TOTAL: usize = 100;
const FILES: usize = 20;
const LARGE: usize = 20 * 1024 * 1024;
const CHARSETS: [&str; 3] = ["GB18030", "Big5", "UTF-8"];
const FIXTURES: &[&str] = &[
    "plain.eml",
    "html_inline_image.eml",
    "gb18030.eml",
    "big5.eml",
    "broken_part.eml",
];

/// `text` in `charset`.
fn encode(text: &str, charset: &str) -> Vec<u8> {
    let enc = encoding_rs::Encoding::for_label(charset.as_bytes()).expect("charset");
    let (bytes, _, unmappable) = enc.encode(text);
    assert!(!unmappable, "{text:?} fits {charset}");
    bytes.into_owned()
}

/// An RFC 2047 encoded word of `text` in `charset`.
fn word(text: &str, charset: &str) -> String {
    format!("=?{charset}?B?{}?=", STANDARD.encode(encode(text, charset)))
}

/// Base64 in lines of 76.
fn b64_lines(bytes: &[u8]) -> String {
    let text = STANDARD.encode(bytes);
    let mut out = String::with_capacity(text.len() + text.len() / 38);
    for chunk in text.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("ASCII"));
        out.push_str("\r\n");
    }
    out
}

/// What one generated mail is, to compare Outlook's item with.
struct Want {
    imid: String,
    subject: String,
    from: (String, String),
    cc: Option<(String, String)>,
    body: String,
    /// (name, bytes, content id) of each file.
    files: Vec<(String, Vec<u8>, Option<String>)>,
}

fn file_bytes(n: usize, size: usize) -> Vec<u8> {
    (0..size).map(|i| ((i * 31 + n) % 251) as u8).collect()
}

/// Generated mail `n`: its charset is `CHARSETS[n % 3]`; the first `files` carry one
/// attachment each, the next ten an inline image, the rest are plain or alternative.
fn generated(n: usize, files: usize) -> (Vec<u8>, Want) {
    let cs = CHARSETS[n % 3];
    let (subject, name, cc_name, body, file) = match cs {
        "GB18030" => (
            "海关通知 第",
            "王小明",
            "李华",
            "请查收报关单，正文",
            "报关单",
        ),
        "Big5" => (
            "關於報關的通知 第",
            "陳大文",
            "林美玲",
            "請查收報關單，正文",
            "報關單",
        ),
        _ => (
            "Zoll 通知 ✓ Nr.",
            "Jörg 李",
            "Zoë 陈",
            "Bitte prüfen 正文 🚢",
            "Zollbescheid-ü",
        ),
    };
    let subject = format!("{subject} {n}");
    let body = format!("{body} {n}");
    let imid = format!("<fid-{n}@dingbridge.test>");
    let from = (name.to_string(), format!("sender{n}@example.cn"));
    let cc = n
        .is_multiple_of(2)
        .then(|| (cc_name.to_string(), format!("cc{n}@example.tw")));
    let mut head = format!(
        "From: {} <{}>\r\nTo: ops <{USER}>\r\n",
        word(&from.0, cs),
        from.1
    );
    if let Some((cn, ca)) = &cc {
        head.push_str(&format!("Cc: {} <{ca}>\r\n", word(cn, cs)));
    }
    head.push_str(&format!(
        "Subject: {}\r\nDate: Thu, 5 Mar 2026 09:00:00 +0800\r\nMessage-ID: {imid}\r\nMIME-Version: 1.0\r\n",
        word(&subject, cs)
    ));
    let text_part = format!(
        "Content-Type: text/plain; charset={cs}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64_lines(&encode(&body, cs))
    );
    let mut want = Want {
        imid,
        subject,
        from,
        cc,
        body: body.clone(),
        files: Vec::new(),
    };
    let rest = if n < files {
        let size = match n {
            0 => LARGE,
            1 => 4 * 1024 * 1024,
            _ => 1000 + n * 3000,
        };
        let bytes = file_bytes(n, size);
        let fname = format!("{file}-{n}.bin");
        // File names as Chinese mailers write them: RFC 2231 or an encoded word.
        let disposition = match cs {
            "Big5" => format!("attachment; filename=\"{}\"", word(&fname, cs)),
            _ => format!(
                "attachment; filename*={cs}''{}",
                percent_encoding::percent_encode(
                    &encode(&fname, cs),
                    percent_encoding::NON_ALPHANUMERIC
                )
            ),
        };
        let part = format!(
            "--m\r\n{text_part}--m\r\nContent-Type: application/octet-stream\r\nContent-Disposition: {disposition}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--m--\r\n",
            b64_lines(&bytes)
        );
        want.files.push((fname, bytes, None));
        format!("Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n{part}")
    } else if n < files + 10 {
        let cid = format!("img{n}@fid");
        let png = file_bytes(n, 600 + n);
        let html = format!("<html><body><p>{body}</p><img src=\"cid:{cid}\"></body></html>");
        want.files
            .push((format!("image{n}.png"), png.clone(), Some(cid.clone())));
        format!(
            "Content-Type: multipart/related; boundary=\"r\"\r\n\r\n--r\r\nContent-Type: text/html; charset={cs}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--r\r\nContent-Type: image/png; name=\"image{n}.png\"\r\nContent-ID: <{cid}>\r\nContent-Disposition: inline; filename=\"image{n}.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--r--\r\n",
            b64_lines(&encode(&html, cs)),
            b64_lines(&png)
        )
    } else if n % 2 == 1 {
        let html = format!("<html><body><p><b>{body}</b></p></body></html>");
        format!(
            "Content-Type: multipart/alternative; boundary=\"a\"\r\n\r\n--a\r\n{text_part}--a\r\nContent-Type: text/html; charset={cs}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--a--\r\n",
            b64_lines(&encode(&html, cs))
        )
    } else {
        text_part
    };
    let mut raw = head.into_bytes();
    raw.extend_from_slice(rest.as_bytes());
    (raw, want)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/mail/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn address(v: &Value) -> (String, String) {
    (
        v["emailAddress"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        v["emailAddress"]["address"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The item's files: name → (bytes as the fake stored them, content id, inline).
fn stored_files(fake: &GraphFake, m: &Value) -> HashMap<String, (Vec<u8>, Option<String>, bool)> {
    m["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let id = a["id"].as_str().expect("attachment id");
            (
                a["name"].as_str().unwrap_or_default().to_string(),
                (
                    fake.attachment_bytes(MAILBOX, id)
                        .expect("attachment bytes"),
                    a["contentId"].as_str().map(str::to_string),
                    a["isInline"].as_bool().unwrap_or(false),
                ),
            )
        })
        .collect()
}

fn body_of(m: &Value) -> &str {
    m["body"]["content"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_hundred_mails_of_every_kind_land_in_outlook_exactly_once_and_intact() {
    let fixtures: Vec<Vec<u8>> = FIXTURES.iter().map(|f| fixture(f)).collect();
    // The fixtures' own files (not inline images) count towards the twenty.
    let fixture_files: usize = fixtures
        .iter()
        .map(|raw| {
            render(raw, &ImportContext::default())
                .mail
                .attachments
                .iter()
                .filter(|a| !a.is_inline)
                .count()
        })
        .sum();
    let files = FILES - fixture_files;
    let (mut raws, wants): (Vec<Vec<u8>>, Vec<Want>) = (0..TOTAL - fixtures.len())
        .map(|n| generated(n, files))
        .unzip();
    raws.extend(fixtures.iter().cloned());
    assert_eq!(raws.len(), TOTAL);
    let all_files: usize = raws
        .iter()
        .map(|raw| {
            let r = render(raw, &ImportContext::default());
            r.mail.attachments.iter().filter(|a| !a.is_inline).count()
        })
        .sum();
    assert_eq!(all_files, FILES, "the issue's twenty attachments");

    let dovecot = Dovecot::start_with(|d| {
        let seeds: Vec<Seed> = raws
            .iter()
            .enumerate()
            .map(|(i, raw)| Seed {
                raw: raw.clone(),
                flags: if i.is_multiple_of(4) { "S" } else { "" },
                received: SystemTime::now() - Duration::from_secs(3600 - i as u64 * 10),
            })
            .collect();
        d.seed(USER, None, &seeds);
    });
    let fake = GraphFake::start_default();
    let app = Env::new()
        .graph(&fake)
        .mailbox_route(&dovecot, "ops-mail", "start = \"days:1\"")
        .spawn();
    // Counted once each mail is written completely (its files included).
    let created = "mailbox_messages_synced_total{route=\"ops-mail\",direction=\"to_outlook\",result=\"created\"}";
    let done = eventually(Duration::from_secs(50), || async {
        (app.metric(created).await == Some(TOTAL as f64)).then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "{} of {TOTAL} in Outlook; logs:\n{}",
        fake.messages(MAILBOX, FOLDER).len(),
        app.logs().join("\n")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let items = fake.all_messages(MAILBOX);
    assert_eq!(items.len(), TOTAL, "nothing doubled, nothing elsewhere");
    assert_eq!(fake.messages(MAILBOX, FOLDER).len(), TOTAL);
    let by_imid = |imid: &str| -> &Value {
        let found: Vec<&Value> = items
            .iter()
            .filter(|m| m["internetMessageId"] == imid)
            .collect();
        assert_eq!(found.len(), 1, "{imid}: exactly once");
        found[0]
    };

    // The generated mails, against what was written into them.
    for (n, w) in wants.iter().enumerate() {
        let m = by_imid(&w.imid);
        assert_eq!(m["subject"], w.subject.as_str(), "{}", w.imid);
        assert_eq!(address(&m["from"]), w.from, "{}", w.imid);
        let to: Vec<(String, String)> = m["toRecipients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(address)
            .collect();
        assert_eq!(
            to,
            vec![("ops".to_string(), USER.to_string())],
            "{}",
            w.imid
        );
        let cc: Vec<(String, String)> = m["ccRecipients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(address)
            .collect();
        assert_eq!(
            cc,
            w.cc.clone().into_iter().collect::<Vec<_>>(),
            "{}",
            w.imid
        );
        assert!(body_of(m).contains(&w.body), "{}: {}", w.imid, body_of(m));
        assert_eq!(m["isRead"], n.is_multiple_of(4), "{}", w.imid);
        assert_eq!(m["isDraft"], false);
        let stored = stored_files(&fake, m);
        assert_eq!(
            stored.len(),
            w.files.len(),
            "{}: {:?}",
            w.imid,
            stored.keys()
        );
        for (name, bytes, cid) in &w.files {
            let (got, got_cid, inline) = stored
                .get(name)
                .unwrap_or_else(|| panic!("{}: no file {name:?} in {:?}", w.imid, stored.keys()));
            assert!(
                got == bytes,
                "{}: {name} differs ({} bytes, want {})",
                w.imid,
                got.len(),
                bytes.len()
            );
            assert_eq!(got_cid, cid, "{}: {name}", w.imid);
            assert_eq!(*inline, cid.is_some(), "{}: {name}", w.imid);
            if let Some(cid) = cid {
                assert!(body_of(m).contains(&format!("cid:{cid}")), "{}", w.imid);
            }
        }
    }
    // The 20 MB file went through an upload session.
    assert!(
        !fake.requests_to("createUploadSession").is_empty(),
        "the large file used an upload session"
    );

    // The fixtures (the parser's reading of them is checked in its own tests): once each,
    // with what they are known to hold.
    for raw in &fixtures {
        let want = render(raw, &ImportContext::default()).mail;
        let imid = want.internet_message_id.clone().expect("Message-ID");
        let m = by_imid(&imid);
        assert_eq!(m["subject"], want.subject.as_str(), "{imid}");
        let body = match &want.body {
            MailBody::Html(h) | MailBody::Text(h) => h,
        };
        assert_eq!(body_of(m), body.as_str(), "{imid}");
        let stored = stored_files(&fake, m);
        for a in &want.attachments {
            let (got, cid, _) = stored
                .get(&a.name)
                .unwrap_or_else(|| panic!("{imid}: no file {:?}", a.name));
            assert_eq!(got.as_slice(), a.content.as_ref(), "{imid}: {}", a.name);
            assert_eq!(cid, &a.content_id, "{imid}: {}", a.name);
        }
    }
    let weekly = by_imid("<weekly-1@dingtalk.example>");
    let files = stored_files(&fake, weekly);
    assert_eq!(files["报关单.pdf"].0, b"%PDF-1.4 fake");
    assert_eq!(files["logo.png"].1.as_deref(), Some("logo@dingtalk"));
    let broken = by_imid("<broken-1@example.cn>");
    assert!(body_of(broken).contains("The body is fine."));
    assert_eq!(stored_files(&fake, broken)["ok.txt"].0, b"still here");
    fake.assert_no_violations();
}
