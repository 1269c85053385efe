//! What can go wrong talking IMAP, in terms a person setting up a route can act on.

use std::{fmt, time::Duration};

/// The DingTalk side of a refused login, and what to change.
pub const LOGIN_HELP: &str = "DingTalk Mail lets IMAP clients in only when the organisation's admin has switched on third-party clients for this account (admin console → 通讯录 → 邮箱管理 → 安全策略 → 第三方客户端管理), and only with the account's client password (客户端专用密码 / authorisation code), not the DingTalk login password; imap.user must be the full mailbox address";

/// The protocol step an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The server's first line.
    Greeting,
    /// `STARTTLS`.
    Starttls,
    /// `LOGIN`.
    Login,
    /// `CAPABILITY`.
    Capability,
    /// `ID`.
    Id,
    /// `LIST`.
    List,
    /// `EXAMINE`.
    Examine,
    /// `SELECT`.
    Select,
    /// `UID SEARCH`.
    Search,
    /// `UID FETCH`.
    Fetch,
    /// `APPEND`.
    Append,
    /// `UID STORE`.
    Store,
    /// `EXPUNGE` / `UID EXPUNGE`.
    Expunge,
    /// `NOOP`.
    Noop,
    /// `IDLE`.
    Idle,
    /// `LOGOUT`.
    Logout,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Greeting => "greeting",
            Step::Starttls => "STARTTLS",
            Step::Login => "LOGIN",
            Step::Capability => "CAPABILITY",
            Step::Id => "ID",
            Step::List => "LIST",
            Step::Examine => "EXAMINE",
            Step::Select => "SELECT",
            Step::Search => "UID SEARCH",
            Step::Fetch => "UID FETCH",
            Step::Append => "APPEND",
            Step::Store => "UID STORE",
            Step::Expunge => "EXPUNGE",
            Step::Noop => "NOOP",
            Step::Idle => "IDLE",
            Step::Logout => "LOGOUT",
        })
    }
}

/// An IMAP failure. [`ImapError::is_login`], [`ImapError::is_tls`] and
/// [`ImapError::is_connection`] say which kind it is.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// No TCP connection to the server.
    #[error("cannot connect to the IMAP server {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (certificate, protocol, or a port that does not speak TLS).
    #[error("TLS with {host} failed: {reason}")]
    Tls {
        /// Server host name.
        host: String,
        /// Why.
        reason: String,
    },
    /// The server refused the user name and password.
    #[error("the IMAP server refused the login of {user} ({server}) — {LOGIN_HELP}")]
    Login {
        /// Login name.
        user: String,
        /// What the server said.
        server: String,
    },
    /// A step got no answer in time (the connection is then closed).
    #[error("{step}: no answer from the IMAP server within {secs} s")]
    Timeout {
        /// Which step.
        step: Step,
        /// The limit, in seconds.
        secs: u64,
    },
    /// The connection broke during a step.
    #[error("{step}: connection to the IMAP server lost: {reason}")]
    Connection {
        /// Which step.
        step: Step,
        /// Why.
        reason: String,
    },
    /// The server answered `NO` or `BAD` (the connection stays usable).
    #[error("{step}: the IMAP server answered {status} {text}")]
    Refused {
        /// Which step.
        step: Step,
        /// `NO`, `BAD` or `BYE`.
        status: &'static str,
        /// The server's text.
        text: String,
    },
    /// The server's answer made no sense.
    #[error("{step}: unexpected answer from the IMAP server: {reason}")]
    Protocol {
        /// Which step.
        step: Step,
        /// What was wrong.
        reason: String,
    },
    /// The call cannot be made (an argument IMAP cannot carry, a missing extension).
    #[error("{0}")]
    Usage(String),
}

impl ImapError {
    pub(super) fn timeout(step: Step, limit: Duration) -> ImapError {
        ImapError::Timeout {
            step,
            secs: limit.as_secs().max(1),
        }
    }

    /// The server refused the credentials.
    pub fn is_login(&self) -> bool {
        matches!(self, ImapError::Login { .. })
    }

    /// TLS could not be set up (a certificate problem, or the wrong TLS mode for the port).
    pub fn is_tls(&self) -> bool {
        matches!(self, ImapError::Tls { .. })
    }

    /// The server could not be reached, stopped answering or dropped the connection:
    /// worth retrying with back-off.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            ImapError::Connect { .. } | ImapError::Connection { .. } | ImapError::Timeout { .. }
        )
    }
}
