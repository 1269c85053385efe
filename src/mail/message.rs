//! The little the mailbox side reads from a raw message itself: header values such as
//! `Message-ID` (full MIME parsing belongs to the Outlook side).

/// The first value of header `name` (case-insensitive), unfolded and trimmed; only the
/// header block (up to the first empty line) is read.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            // A continuation of the previous header.
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(text.trim());
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((field, rest)) = text.split_once(':')
            && field.trim_end().eq_ignore_ascii_case(name)
        {
            value = Some(rest.trim().to_string());
        }
    }
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The `Message-ID` of a raw message, as written (with its angle brackets).
pub fn message_id(raw: &[u8]) -> Option<String> {
    header(raw, "Message-ID")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_case_insensitively_unfolded_and_only_in_the_header_block() {
        let raw = b"From: a@b.c\r\nmessage-id:\r\n <x.1@host>\r\nSubject: hi\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(message_id(raw).as_deref(), Some("<x.1@host>"));
        assert_eq!(header(raw, "subject").as_deref(), Some("hi"));
        assert_eq!(header(b"Subject: a\n\nX-Late: 1\n", "X-Late"), None);
        assert_eq!(message_id(b"Subject: none\r\n\r\n"), None);
    }
}
