//! SMTP submission to the DingTalk mailbox's server (`[mailbox_routes.smtp]`), on
//! `lettre`'s async connection: TLS from the first byte (port 465) or `STARTTLS` (587),
//! certificates always verified (public roots plus an optional CA file), `AUTH PLAIN` or
//! `LOGIN` always, then `MAIL FROM`, one `RCPT TO` per recipient and `DATA`. The steps are
//! run one by one (not through lettre's transport) so that an error says which step
//! failed: a refused login, a refused recipient and a full mailbox call for different
//! answers. Every step has a timeout.

use std::{path::PathBuf, time::Duration};

use lettre::{
    Address,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters},
        commands::{Data, Mail, Rcpt},
        extension::{ClientId, Extension, MailBodyParameter, MailParameter},
    },
};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{MailboxRouteConfig, TlsMode};

/// The SMTP side of a refused login, and what to change (the IMAP login's advice, for
/// SMTP).
pub const SMTP_LOGIN_HELP: &str = "DingTalk Mail accepts SMTP clients only when the organisation's admin has switched on third-party clients for this account (admin console → 通讯录 → 邮箱管理 → 安全策略 → 第三方客户端管理), and only with the account's client password (客户端专用密码 / authorisation code), not the DingTalk login password; smtp.user (default imap.user) must be the full mailbox address";

/// What it takes to submit (from a route's `[mailbox_routes.smtp]`).
#[derive(Clone)]
pub struct SmtpSettings {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// How the connection is protected.
    pub tls: TlsMode,
    /// Login name (and `From` address).
    pub user: String,
    /// Client password.
    pub password: SecretString,
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Timeout of each step.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SmtpSettings {
    /// The settings of a validated route's SMTP part (`None` without one).
    pub fn from_route(route: &MailboxRouteConfig) -> Option<SmtpSettings> {
        let smtp = route.smtp.as_ref()?;
        Some(SmtpSettings {
            host: smtp.host.trim().to_string(),
            port: smtp.port(),
            tls: smtp.tls,
            user: route.smtp_user()?.to_string(),
            password: smtp.password.clone()?,
            ca_file: smtp.tls_ca_file.clone(),
            timeout: smtp.timeout(),
        })
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The protocol step an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpStep {
    /// TCP, implicit TLS and the greeting.
    Connect,
    /// `STARTTLS`.
    Starttls,
    /// `AUTH`.
    Auth,
    /// `MAIL FROM`.
    MailFrom,
    /// `RCPT TO`.
    RcptTo,
    /// `DATA` and the message.
    Data,
}

impl std::fmt::Display for SmtpStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SmtpStep::Connect => "connect",
            SmtpStep::Starttls => "STARTTLS",
            SmtpStep::Auth => "AUTH",
            SmtpStep::MailFrom => "MAIL FROM",
            SmtpStep::RcptTo => "RCPT TO",
            SmtpStep::Data => "DATA",
        })
    }
}

/// A recipient the server refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRecipient {
    /// The address.
    pub address: String,
    /// The server's answer (`550 …`).
    pub reply: String,
}

/// An SMTP failure; nothing was sent unless [`SmtpError::maybe_sent`] says so.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// No connection to the server.
    #[error("cannot connect to the SMTP server {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// TLS could not be set up.
    #[error("TLS with the SMTP server {host} failed: {reason}")]
    Tls {
        /// Server host name.
        host: String,
        /// Why.
        reason: String,
    },
    /// The server refused the user name and password.
    #[error("the SMTP server refused the login of {user} ({server}) — {SMTP_LOGIN_HELP}")]
    Login {
        /// Login name.
        user: String,
        /// What the server said.
        server: String,
    },
    /// The server asked to try again later (a 4xx reply).
    #[error("{step}: the SMTP server asks to try again later: {reply}")]
    Transient {
        /// Which step.
        step: SmtpStep,
        /// The server's answer.
        reply: String,
    },
    /// The server refused these recipients for good (5xx to `RCPT TO`); nothing was sent.
    #[error("the SMTP server refused {}", describe_refused(.0))]
    RecipientsRefused(Vec<RefusedRecipient>),
    /// The server refused the sender or the message for good (5xx).
    #[error("{step}: the SMTP server refused the mail: {reply}")]
    Rejected {
        /// Which step.
        step: SmtpStep,
        /// The server's answer.
        reply: String,
    },
    /// A step got no answer in time, or the connection broke.
    #[error("{step}: the SMTP connection failed: {reason}")]
    Connection {
        /// Which step.
        step: SmtpStep,
        /// Why.
        reason: String,
    },
    /// The server cannot take this submission (no `AUTH` offered, no `STARTTLS`, no
    /// 8-bit support) or the server's answer made no sense.
    #[error("{step}: {reason}")]
    Protocol {
        /// Which step.
        step: SmtpStep,
        /// What was wrong.
        reason: String,
    },
}

fn describe_refused(r: &[RefusedRecipient]) -> String {
    r.iter()
        .map(|x| format!("{} ({})", x.address, x.reply))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SmtpError {
    /// Worth retrying as it is, later: a 4xx answer, an unreachable or broken connection.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SmtpError::Transient { .. } | SmtpError::Connect { .. } | SmtpError::Connection { .. }
        )
    }

    /// The message may have been accepted all the same: the connection broke after the
    /// message was handed over, before the server's answer.
    pub fn maybe_sent(&self) -> bool {
        matches!(
            self,
            SmtpError::Connection {
                step: SmtpStep::Data,
                ..
            }
        )
    }
}

/// The first `rustls` error in `e`'s chain, explained, if the failure was TLS.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<tokio_rustls::rustls::Error>() {
            return Some(match tls {
                tokio_rustls::rustls::Error::InvalidCertificate(why) => format!(
                    "the server's certificate is not valid ({why:?}); if the server uses a private CA, name its PEM file in smtp.tls_ca_file"
                ),
                other => other.to_string(),
            });
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            cur = Some(inner);
            continue;
        }
        cur = err.source();
    }
    None
}

/// The server's reply in an error (`550 5.1.1 no such user`).
fn reply(e: &lettre::transport::smtp::Error) -> String {
    let text = e.to_string();
    match e.status() {
        Some(code) => {
            let text = text.split_once("): ").map(|(_, t)| t).unwrap_or(&text);
            format!("{} {text}", u16::from(code))
        }
        None => text,
    }
}

/// Maps an error of `step`.
fn classify(s: &SmtpSettings, step: SmtpStep, e: lettre::transport::smtp::Error) -> SmtpError {
    if let Some(reason) = tls_cause(&e) {
        return SmtpError::Tls {
            host: s.host.clone(),
            reason,
        };
    }
    if e.is_transient() {
        return SmtpError::Transient {
            step,
            reply: reply(&e),
        };
    }
    if e.is_permanent() {
        return match step {
            SmtpStep::Auth => SmtpError::Login {
                user: s.user.clone(),
                server: reply(&e),
            },
            _ => SmtpError::Rejected {
                step,
                reply: reply(&e),
            },
        };
    }
    if e.is_client() || e.is_response() {
        return SmtpError::Protocol {
            step,
            reason: e.to_string(),
        };
    }
    match step {
        SmtpStep::Connect => SmtpError::Connect {
            addr: s.address(),
            reason: format!(
                "{e} (does the port speak this TLS mode? implicit TLS is usually port 465, STARTTLS port 587)"
            ),
        },
        _ => SmtpError::Connection {
            step,
            reason: e.to_string(),
        },
    }
}

/// Runs one step within the timeout.
async fn within<T>(
    s: &SmtpSettings,
    step: SmtpStep,
    limit: Duration,
    fut: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, SmtpError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(s, step, e)),
        Err(_) => Err(match step {
            SmtpStep::Connect => SmtpError::Connect {
                addr: s.address(),
                reason: format!("no answer within {} s", limit.as_secs().max(1)),
            },
            _ => SmtpError::Connection {
                step,
                reason: format!("no answer within {} s", limit.as_secs().max(1)),
            },
        }),
    }
}

fn tls_parameters(s: &SmtpSettings) -> Result<TlsParameters, SmtpError> {
    let tls_error = |reason: String| SmtpError::Tls {
        host: s.host.clone(),
        reason,
    };
    let mut b =
        TlsParameters::builder(s.host.clone()).certificate_store(CertificateStore::WebpkiRoots);
    if let Some(path) = &s.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| tls_error(format!("cannot read {}: {e}", path.display())))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
        b = b.add_root_certificate(cert);
    }
    b.build_rustls().map_err(|e| tls_error(e.to_string()))
}

/// Submits `raw` from `from` to `recipients`. Every recipient is tried before giving
/// up, so that a refusal names all refused addresses; then nothing is sent.
pub async fn submit(
    s: &SmtpSettings,
    from: &str,
    recipients: &[String],
    raw: &[u8],
) -> Result<(), SmtpError> {
    let usage = |step, reason: String| SmtpError::Protocol { step, reason };
    let sender: Address = from
        .parse()
        .map_err(|e| usage(SmtpStep::MailFrom, format!("`{from}`: {e}")))?;
    let hello = ClientId::default();
    let params = match s.tls {
        TlsMode::None => None,
        _ => Some(tls_parameters(s)?),
    };
    let implicit = match s.tls {
        TlsMode::Implicit => params.clone(),
        _ => None,
    };
    let mut conn = within(
        s,
        SmtpStep::Connect,
        s.timeout,
        AsyncSmtpConnection::connect_tokio1(
            (s.host.as_str(), s.port),
            Some(s.timeout),
            &hello,
            implicit,
            None,
        ),
    )
    .await?;
    let result = exchange(s, &mut conn, &hello, params, sender, recipients, raw).await;
    match &result {
        // A polite goodbye; its failure changes nothing.
        Ok(()) => {
            let _ = tokio::time::timeout(s.timeout, conn.quit()).await;
        }
        Err(_) => {
            let _ = tokio::time::timeout(s.timeout, conn.abort()).await;
        }
    }
    result
}

async fn exchange(
    s: &SmtpSettings,
    conn: &mut AsyncSmtpConnection,
    hello: &ClientId,
    params: Option<TlsParameters>,
    sender: Address,
    recipients: &[String],
    raw: &[u8],
) -> Result<(), SmtpError> {
    let t = s.timeout;
    if let (TlsMode::Starttls, Some(params)) = (s.tls, params) {
        if !conn.can_starttls() {
            return Err(SmtpError::Protocol {
                step: SmtpStep::Starttls,
                reason: format!(
                    "the SMTP server {} offers no STARTTLS; use tls = \"implicit\" (usually port 465) if it speaks TLS from the first byte",
                    s.address()
                ),
            });
        }
        within(s, SmtpStep::Starttls, t, conn.starttls(params, hello)).await?;
    }
    let credentials = Credentials::new(s.user.clone(), s.password.expose_secret().to_string());
    within(
        s,
        SmtpStep::Auth,
        t,
        conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials),
    )
    .await?;
    let mut options = Vec::new();
    if !raw.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(SmtpError::Protocol {
                step: SmtpStep::MailFrom,
                reason: "the message has 8-bit content and the server offers no 8BITMIME".into(),
            });
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    within(
        s,
        SmtpStep::MailFrom,
        t,
        conn.command(Mail::new(Some(sender), options)),
    )
    .await?;
    let mut refused = Vec::new();
    for r in recipients {
        let to: Address = r.parse().map_err(|e| SmtpError::Protocol {
            step: SmtpStep::RcptTo,
            reason: format!("`{r}`: {e}"),
        })?;
        match within(s, SmtpStep::RcptTo, t, conn.command(Rcpt::new(to, vec![]))).await {
            Ok(_) => {}
            Err(SmtpError::Rejected { reply, .. }) => refused.push(RefusedRecipient {
                address: r.clone(),
                reply,
            }),
            Err(e) => return Err(e),
        }
    }
    if !refused.is_empty() {
        return Err(SmtpError::RecipientsRefused(refused));
    }
    within(s, SmtpStep::Data, t, conn.command(Data)).await?;
    // The message itself may be large: a minute more per 10 MB.
    let limit = t + Duration::from_secs(raw.len() as u64 / (10 * 1024 * 1024 / 60) + 1);
    within(s, SmtpStep::Data, limit, conn.message(raw)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temporary_failures_are_retryable_and_a_break_after_data_may_have_sent() {
        let transient = SmtpError::Transient {
            step: SmtpStep::RcptTo,
            reply: "451 try later".into(),
        };
        assert!(transient.is_retryable() && !transient.maybe_sent());
        let login = SmtpError::Login {
            user: "u".into(),
            server: "535 no".into(),
        };
        assert!(!login.is_retryable());
        assert!(login.to_string().contains("第三方客户端管理"), "{login}");
        let refused = SmtpError::RecipientsRefused(vec![RefusedRecipient {
            address: "x@y.z".into(),
            reply: "550 no such user".into(),
        }]);
        assert!(!refused.is_retryable());
        assert!(refused.to_string().contains("x@y.z (550 no such user)"));
        let lost = SmtpError::Connection {
            step: SmtpStep::Data,
            reason: "reset".into(),
        };
        assert!(lost.is_retryable() && lost.maybe_sent());
    }
}
