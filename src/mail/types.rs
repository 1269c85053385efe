//! What the IMAP client ([`super::imap`]) reports: the server's extensions, folders and their names,
//! the state of an open folder, messages, and changes the server announces.

use std::ops::RangeInclusive;

use async_imap::imap_proto::{self, NameAttribute};
use chrono::{DateTime, FixedOffset};

use super::utf7;

/// The extensions the sync cares about, read after login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `IDLE` (RFC 2177): the server pushes changes; without it the sync polls.
    pub idle: bool,
    /// `UIDPLUS` (RFC 4315): `APPEND` reports the new UID.
    pub uidplus: bool,
    /// `CONDSTORE` (RFC 7162): flag changes since a mod-sequence.
    pub condstore: bool,
    /// `QRESYNC` (RFC 7162): expunges since a mod-sequence.
    pub qresync: bool,
    /// `MOVE` (RFC 6851): atomic moves.
    pub r#move: bool,
    /// `ID` (RFC 2971): the client identifies itself (some hosted servers expect it).
    pub id: bool,
    /// Every capability as the server wrote it.
    pub all: Vec<String>,
}

impl Capabilities {
    pub(super) fn from_names(names: Vec<String>) -> Capabilities {
        let has = |n: &str| names.iter().any(|c| c.eq_ignore_ascii_case(n));
        Capabilities {
            idle: has("IDLE"),
            uidplus: has("UIDPLUS"),
            condstore: has("CONDSTORE") || has("QRESYNC"),
            qresync: has("QRESYNC"),
            r#move: has("MOVE"),
            id: has("ID"),
            all: names,
        }
    }
}

impl Capabilities {
    /// The extensions the sync uses that the server lacks, each with what the sync
    /// does without it.
    pub fn missing(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if !self.idle {
            out.push((
                "IDLE",
                "new mail and read flags are found by polling, not pushed: they arrive later",
            ));
        }
        if !self.uidplus {
            out.push((
                "UIDPLUS",
                "mail written into DingTalk is recognised by a Message-ID search instead of by the UID APPEND reports",
            ));
        }
        if !self.condstore {
            out.push((
                "CONDSTORE",
                "read-flag changes are found by re-checking recently synced mails instead of asking for changes since the last check",
            ));
        }
        if !self.r#move {
            out.push((
                "MOVE",
                "moves (with allow_deletes) are done as COPY, \\Deleted and EXPUNGE",
            ));
        }
        out
    }
}

pub(super) fn capability_name(c: &imap_proto::Capability<'_>) -> String {
    match c {
        imap_proto::Capability::Imap4rev1 => "IMAP4rev1".into(),
        imap_proto::Capability::Auth(a) => format!("AUTH={a}"),
        imap_proto::Capability::Atom(a) => a.to_string(),
    }
}

/// A folder name in both forms: as the server sends it (modified UTF-7, RFC 3501
/// §5.1.3) and readable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName {
    /// The name on the wire.
    pub wire: String,
    /// The name in UTF-8 (the wire name itself when it is not valid modified UTF-7).
    pub display: String,
}

impl MailboxName {
    /// A name as the server listed it.
    pub fn from_wire(wire: &str) -> MailboxName {
        MailboxName {
            wire: wire.to_string(),
            display: utf7::decode(wire).unwrap_or_else(|| wire.to_string()),
        }
    }

    /// A name as a person writes it (`已发送`), encoded for the wire.
    pub fn from_display(display: &str) -> MailboxName {
        MailboxName {
            wire: utf7::encode(display),
            display: display.to_string(),
        }
    }
}

impl std::fmt::Display for MailboxName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// One folder of `LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// Its name.
    pub name: MailboxName,
    /// The hierarchy delimiter (`/` or `.`), if the server has a hierarchy.
    pub delimiter: Option<String>,
    /// Its attributes as the server wrote them (`\HasNoChildren`, `\Sent`, …).
    pub attributes: Vec<String>,
}

impl Folder {
    /// `false` for `\Noselect` / `\NonExistent` placeholders of the hierarchy.
    pub fn selectable(&self) -> bool {
        !self.attributes.iter().any(|a| {
            a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
        })
    }

    /// The RFC 6154 special use (`\Sent`, `\Drafts`, `\Trash`, `\Junk`, `\Archive`,
    /// `\All`, `\Flagged`), when the server marks one.
    pub fn special_use(&self) -> Option<&str> {
        const USES: [&str; 7] = [
            "\\Sent",
            "\\Drafts",
            "\\Trash",
            "\\Junk",
            "\\Archive",
            "\\All",
            "\\Flagged",
        ];
        self.attributes
            .iter()
            .find(|a| USES.iter().any(|u| u.eq_ignore_ascii_case(a)))
            .map(String::as_str)
    }
}

pub(super) fn attribute_name(a: &NameAttribute<'_>) -> String {
    match a {
        NameAttribute::NoInferiors => "\\Noinferiors".into(),
        NameAttribute::NoSelect => "\\Noselect".into(),
        NameAttribute::Marked => "\\Marked".into(),
        NameAttribute::Unmarked => "\\Unmarked".into(),
        NameAttribute::All => "\\All".into(),
        NameAttribute::Archive => "\\Archive".into(),
        NameAttribute::Drafts => "\\Drafts".into(),
        NameAttribute::Flagged => "\\Flagged".into(),
        NameAttribute::Junk => "\\Junk".into(),
        NameAttribute::Sent => "\\Sent".into(),
        NameAttribute::Trash => "\\Trash".into(),
        NameAttribute::Extension(e) => e.to_string(),
        // The enum is non-exhaustive upstream.
        #[allow(unreachable_patterns)]
        _ => String::new(),
    }
}

/// What opening a folder reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderState {
    /// `UIDVALIDITY`: UIDs are only comparable while this stays the same.
    pub uid_validity: u32,
    /// `UIDNEXT`: the UID the next message will get at least (absent on some servers).
    pub uid_next: Option<u32>,
    /// Messages in the folder.
    pub exists: u32,
    /// `HIGHESTMODSEQ`, when the server has CONDSTORE.
    pub highest_modseq: Option<u64>,
    /// Opened read-only (always after `EXAMINE`).
    pub read_only: bool,
}

/// A message's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Its UID in the open folder.
    pub uid: u32,
    /// `RFC822.SIZE` in bytes.
    pub size: u64,
    /// Its flags (`\Seen`, `\Flagged`, keywords), as the server wrote them.
    pub flags: Vec<String>,
    /// `INTERNALDATE`: when the server received it.
    pub internal_date: Option<DateTime<FixedOffset>>,
    /// Its mod-sequence, when the server has CONDSTORE.
    pub modseq: Option<u64>,
}

impl MessageMeta {
    /// Whether `\Seen` (read) is set.
    pub fn seen(&self) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen"))
    }
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    /// Its metadata, from the same `FETCH` as the body.
    pub meta: MessageMeta,
    /// The message exactly as stored (RFC 5322 bytes).
    pub raw: Vec<u8>,
}

/// Where an `APPEND` put the message (`UIDPLUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendUid {
    /// `UIDVALIDITY` of the target folder.
    pub uid_validity: u32,
    /// UID of the new message.
    pub uid: u32,
}

/// Something the server reported about the open folder on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The folder now holds this many messages (new mail arrived).
    Exists(u32),
    /// The message with this sequence number was removed.
    Expunge(u32),
    /// These UIDs were removed (QRESYNC).
    Vanished(Vec<RangeInclusive<u32>>),
    /// A message's flags changed.
    Flags {
        /// Sequence number.
        seq: u32,
        /// UID, when the server included it.
        uid: Option<u32>,
        /// The flags now.
        flags: Vec<String>,
        /// Mod-sequence, with CONDSTORE.
        modseq: Option<u64>,
    },
}

/// How a wait in `IDLE` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdleOutcome {
    /// The server reported changes.
    Changed(Vec<ServerEvent>),
    /// Nothing happened within the wait.
    Timeout,
}
