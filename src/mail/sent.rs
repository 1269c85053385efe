//! Finding the DingTalk mailbox's Sent folder: the folder `LIST` marks `\Sent`
//! (RFC 6154) when the server marks one, else the configured name, else the usual names
//! (`已发送` is what Alibaba Mail-based mailboxes show; `Sent`, `Sent Messages`, `Sent
//! Items` elsewhere).

use super::{Folder, ImapClient, ImapError};

/// Folder names taken for Sent when nothing is marked `\Sent`, best first (compared
/// case-insensitively with the last part of the name).
pub const SENT_NAMES: &[&str] = &[
    "已发送",
    "Sent",
    "Sent Messages",
    "Sent Items",
    "已发送邮件",
];

/// The Sent folder among `folders`: the configured name when given (exactly as listed,
/// `INBOX`-insensitive), else the one marked `\Sent`, else the first of [`SENT_NAMES`].
pub fn pick_sent<'a>(folders: &'a [Folder], configured: Option<&str>) -> Option<&'a Folder> {
    let usable = || folders.iter().filter(|f| f.selectable());
    if let Some(name) = configured.map(str::trim) {
        return usable().find(|f| f.name.display == name);
    }
    if let Some(f) = usable().find(|f| {
        f.special_use()
            .is_some_and(|u| u.eq_ignore_ascii_case("\\Sent"))
    }) {
        return Some(f);
    }
    let last = |f: &Folder| -> String {
        let name = f.name.display.as_str();
        let part = match f.delimiter.as_deref().filter(|d| !d.is_empty()) {
            Some(d) => name.rsplit(d).next().unwrap_or(name),
            None => name,
        };
        part.to_lowercase()
    };
    SENT_NAMES.iter().find_map(|want| {
        let want = want.to_lowercase();
        usable().find(|f| last(f) == want)
    })
}

/// Lists the folders and picks the Sent folder ([`pick_sent`]).
pub async fn find_sent(
    client: &mut ImapClient,
    configured: Option<&str>,
) -> Result<Option<Folder>, ImapError> {
    let folders = client.list_folders().await?;
    Ok(pick_sent(&folders, configured).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::MailboxName;

    fn folder(name: &str, attrs: &[&str]) -> Folder {
        Folder {
            name: MailboxName::from_display(name),
            delimiter: Some(".".into()),
            attributes: attrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn the_sent_mark_wins_then_the_usual_names_and_a_configured_name_overrides_both() {
        let folders = vec![
            folder("INBOX", &[]),
            folder("Sent", &[]),
            folder("发件箱", &["\\Sent"]),
            folder("Archive.已发送", &["\\Noselect"]),
        ];
        assert_eq!(
            pick_sent(&folders, None).map(|f| f.name.display.as_str()),
            Some("发件箱")
        );
        let unmarked = vec![folder("INBOX", &[]), folder("INBOX.sent items", &[])];
        assert_eq!(
            pick_sent(&unmarked, None).map(|f| f.name.display.as_str()),
            Some("INBOX.sent items")
        );
        assert_eq!(
            pick_sent(&folders, Some("Sent")).map(|f| f.name.display.as_str()),
            Some("Sent")
        );
        assert!(pick_sent(&folders, Some("Nope")).is_none());
        assert!(pick_sent(&[folder("INBOX", &[])], None).is_none());
    }
}
