//! DingTalk Mail over IMAP and SMTP: the client of a mailbox route's DingTalk side, the
//! local backup of a DingTalk mailbox (`dingbridge mail backup`), and sending through
//! the mailbox's SMTP submission (`dingtalk.send_mail`: [`compose`], [`smtp`], [`sent`]).
//!
//! DingTalk's own mail API has no bodies, attachments or read flag (see
//! `shared/protocols/dingtalk.md` §5.4); its enterprise mailboxes speak IMAP to
//! third-party clients once the admin allows it, so this is the DingTalk side of
//! the mailbox sync.

pub mod backup;
pub mod compose;
pub mod error;
pub mod imap;
pub mod message;
pub mod sent;
pub mod smtp;
pub mod transport;
pub mod types;
pub mod utf7;

pub use error::{ImapError, LOGIN_HELP};
pub use imap::{
    AppendUid, Capabilities, FetchedMessage, Folder, FolderState, IdleOutcome, ImapClient,
    ImapSettings, MailboxName, MessageMeta, ServerEvent,
};

use crate::config::{Config, ConfigError};

/// Reads the extra CA files the mailbox routes name, so that a bad file fails at
/// start-up rather than at the first connection.
pub fn check_ca_files(config: &Config) -> Result<(), ConfigError> {
    for (i, route) in config.mailbox_routes.iter().enumerate() {
        let files = [
            ("imap", route.imap.tls_ca_file.as_ref()),
            (
                "smtp",
                route.smtp.as_ref().and_then(|s| s.tls_ca_file.as_ref()),
            ),
        ];
        for (part, path) in files {
            if let Some(path) = path {
                transport::read_ca_file(path).map_err(|reason| {
                    ConfigError::new(format!("mailbox_routes[{i}].{part}.tls_ca_file"), reason)
                })?;
            }
        }
    }
    Ok(())
}
