//! The IMAP client of a mailbox route: connect (implicit TLS, STARTTLS, or plain when a
//! test allows it), log in, read the capabilities, list folders, open one read-only
//! (`EXAMINE`) or read-write (`SELECT`), search and fetch by UID without ever setting
//! `\Seen` (`BODY.PEEK[]`), append with flags and internal date, change flags, wait in
//! `IDLE`, log out. Every network step has a timeout; a connection that timed out or broke
//! refuses further commands (open a new one).
//!
//! `async-imap` frames and parses the protocol; commands are run here on its primitives
//! so that every tagged `NO`/`BAD` and every lost connection is an error (its own fetch
//! and list streams end quietly on both) and `APPENDUID` is kept.

use std::time::Duration;

use async_imap::imap_proto::{
    self, AttributeValue, MailboxDatum, Response, ResponseCode, Status, rfc4315::UidSetMember,
};
use chrono::{DateTime, FixedOffset};
use secrecy::{ExposeSecret, SecretString};
use tokio::{io::AsyncWriteExt, net::TcpStream};

pub use super::types::{
    AppendUid, Capabilities, FetchedMessage, Folder, FolderState, IdleOutcome, MailboxName,
    MessageMeta, ServerEvent,
};
use super::{
    error::{ImapError, Step},
    transport::{self, Transport},
    types::{attribute_name, capability_name},
};
use crate::config::{ImapConfig, TlsMode};

type Session = async_imap::Session<Transport>;

/// What it takes to open a connection (from a route's `[mailbox_routes.imap]`).
#[derive(Clone)]
pub struct ImapSettings {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// How the connection is protected.
    pub tls: TlsMode,
    /// Login name.
    pub user: String,
    /// Client password.
    pub password: SecretString,
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<std::path::PathBuf>,
    /// Timeout of each network step.
    pub timeout: Duration,
}

impl std::fmt::Debug for ImapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ImapSettings {
    /// The settings of a validated `[mailbox_routes.imap]` section.
    pub fn from_config(c: &ImapConfig) -> Result<ImapSettings, ImapError> {
        let password = c
            .password
            .clone()
            .ok_or_else(|| ImapError::Usage("no client password is configured".into()))?;
        Ok(ImapSettings {
            host: c.host.trim().to_string(),
            port: c.port(),
            tls: c.tls,
            user: c.user.trim().to_string(),
            password,
            ca_file: c.tls_ca_file.clone(),
            timeout: c.timeout(),
        })
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The tagged completion of a command.
#[derive(Default)]
struct Tagged {
    append_uid: Option<AppendUid>,
    read_only: bool,
}

/// The UID set syntax of a list of UIDs, ranges collapsed (`1:3,7`).
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// An IMAP quoted string; `None` for text no quoted string can hold (CR, LF, NUL).
fn quoted(s: &str) -> Option<String> {
    if s.contains(['\r', '\n', '\0']) {
        return None;
    }
    Some(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

fn quoted_or_usage(s: &str, what: &str) -> Result<String, ImapError> {
    quoted(s).ok_or_else(|| ImapError::Usage(format!("{what} contains a line break")))
}

/// A flag or keyword as `APPEND`/`STORE` take it (`\Seen`, `$Forwarded`).
fn check_flag(flag: &str) -> Result<&str, ImapError> {
    let body = flag.strip_prefix('\\').unwrap_or(flag);
    let atom = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
    if atom && !flag.eq_ignore_ascii_case("\\Recent") {
        Ok(flag)
    } else {
        Err(ImapError::Usage(format!(
            "`{flag}` is not a flag IMAP can set"
        )))
    }
}

/// `INTERNALDATE` as `APPEND` writes it: `"02-Jan-2026 15:04:05 +0800"`.
pub fn internal_date_arg(date: &DateTime<FixedOffset>) -> String {
    date.format("\"%d-%b-%Y %H:%M:%S %z\"").to_string()
}

fn parse_internal_date(s: &str) -> Option<DateTime<FixedOffset>> {
    // Servers may pad the day with a space (" 2-Jan-2026 …").
    DateTime::parse_from_str(s.trim(), "%d-%b-%Y %H:%M:%S %z").ok()
}

fn flags_of(raw: &[std::borrow::Cow<'_, str>]) -> Vec<String> {
    raw.iter().map(|f| f.to_string()).collect()
}

/// A fetch response's parts.
#[derive(Default)]
struct FetchParts {
    uid: Option<u32>,
    size: Option<u64>,
    flags: Option<Vec<String>>,
    internal_date: Option<DateTime<FixedOffset>>,
    modseq: Option<u64>,
    body: Option<Vec<u8>>,
    header: Option<Vec<u8>>,
}

fn fetch_parts(attrs: &[AttributeValue<'_>], want_body: bool) -> FetchParts {
    let mut p = FetchParts::default();
    for a in attrs {
        match a {
            AttributeValue::Uid(u) => p.uid = Some(*u),
            AttributeValue::Rfc822Size(s) => p.size = Some(u64::from(*s)),
            AttributeValue::Flags(f) => p.flags = Some(flags_of(f)),
            AttributeValue::InternalDate(d) => p.internal_date = parse_internal_date(d),
            AttributeValue::ModSeq(m) => p.modseq = Some(*m),
            AttributeValue::BodySection {
                section: None,
                data,
                ..
            } if want_body => p.body = Some(data.as_deref().unwrap_or_default().to_vec()),
            AttributeValue::Rfc822(data) if want_body => {
                p.body = Some(data.as_deref().unwrap_or_default().to_vec())
            }
            AttributeValue::BodySection {
                section: Some(imap_proto::SectionPath::Full(imap_proto::MessageSection::Header)),
                data,
                ..
            } => p.header = Some(data.as_deref().unwrap_or_default().to_vec()),
            _ => {}
        }
    }
    p
}

/// Maps an untagged response nobody asked for to an event worth keeping.
fn server_event(r: &Response<'_>) -> Option<ServerEvent> {
    match r {
        Response::MailboxData(MailboxDatum::Exists(n)) => Some(ServerEvent::Exists(*n)),
        Response::Expunge(n) => Some(ServerEvent::Expunge(*n)),
        Response::Vanished { uids, .. } => Some(ServerEvent::Vanished(uids.clone())),
        Response::Fetch(seq, attrs) => {
            let p = fetch_parts(attrs, false);
            p.flags.map(|flags| ServerEvent::Flags {
                seq: *seq,
                uid: p.uid,
                flags,
                modseq: p.modseq,
            })
        }
        _ => None,
    }
}

fn tagged_outcome(
    step: Step,
    status: &Status,
    code: Option<&ResponseCode<'_>>,
    text: Option<&str>,
) -> Result<Tagged, ImapError> {
    match status {
        Status::Ok => {
            let mut t = Tagged::default();
            match code {
                Some(ResponseCode::AppendUid(validity, uids)) => {
                    t.append_uid = uids
                        .iter()
                        .map(|m| match m {
                            UidSetMember::Uid(u) => AppendUid {
                                uid_validity: *validity,
                                uid: *u,
                            },
                            UidSetMember::UidRange(r) => AppendUid {
                                uid_validity: *validity,
                                uid: *r.start(),
                            },
                        })
                        .next();
                }
                Some(ResponseCode::ReadOnly) => t.read_only = true,
                _ => {}
            }
            Ok(t)
        }
        Status::No | Status::Bad | Status::Bye | Status::PreAuth => Err(ImapError::Refused {
            step,
            status: match status {
                Status::No => "NO",
                Status::Bad => "BAD",
                _ => "BYE",
            },
            text: text.unwrap_or_default().to_string(),
        }),
    }
}

fn lost(step: Step, e: impl std::fmt::Display) -> ImapError {
    ImapError::Connection {
        step,
        reason: e.to_string(),
    }
}

fn from_imap(step: Step, e: async_imap::error::Error) -> ImapError {
    use async_imap::error::Error as E;
    match e {
        E::No(text) => ImapError::Refused {
            step,
            status: "NO",
            text,
        },
        E::Bad(text) => ImapError::Refused {
            step,
            status: "BAD",
            text,
        },
        E::Io(e) => lost(step, e),
        E::ConnectionLost => lost(step, "the server closed the connection"),
        other => ImapError::Protocol {
            step,
            reason: other.to_string(),
        },
    }
}

/// The lowest sustained download rate a fetch is given time for (256 KiB/s).
const MIN_FETCH_BYTES_PER_SEC: u64 = 256 * 1024;

/// One logged-in IMAP connection.
pub struct ImapClient {
    session: Session,
    caps: Capabilities,
    timeout: Duration,
    /// Set after a timeout or a lost connection: the protocol state is unknown.
    broken: bool,
    /// Untagged changes the server reported during commands, for the caller to take.
    events: Vec<ServerEvent>,
}

impl std::fmt::Debug for ImapClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapClient")
            .field("capabilities", &self.caps.all)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl ImapClient {
    /// Connects, protects the connection as configured, logs in, reads the
    /// capabilities and identifies itself (`ID`) where the server offers it.
    pub async fn connect(s: &ImapSettings) -> Result<ImapClient, ImapError> {
        let tls = match s.tls {
            TlsMode::None => None,
            TlsMode::Implicit | TlsMode::Starttls => Some(
                transport::connector(s.ca_file.as_deref()).map_err(|reason| ImapError::Tls {
                    host: s.host.clone(),
                    reason,
                })?,
            ),
        };
        let tcp = tokio::time::timeout(s.timeout, TcpStream::connect((s.host.as_str(), s.port)))
            .await
            .map_err(|_| ImapError::Connect {
                addr: s.address(),
                reason: format!("no connection within {} s", s.timeout.as_secs()),
            })?
            .map_err(|e| ImapError::Connect {
                addr: s.address(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let stream = match (&tls, s.tls) {
            (Some(connector), TlsMode::Implicit) => Self::tls(connector, s, tcp).await?,
            _ => Transport::Plain(tcp),
        };
        let mut client = async_imap::Client::new(stream);
        Self::greeting(&mut client, s).await?;
        if let (Some(connector), TlsMode::Starttls) = (&tls, s.tls) {
            let step = Step::Starttls;
            tokio::time::timeout(s.timeout, client.run_command_and_check_ok("STARTTLS", None))
                .await
                .map_err(|_| ImapError::timeout(step, s.timeout))?
                .map_err(|e| match from_imap(step, e) {
                    ImapError::Refused { text, .. } => ImapError::Tls {
                        host: s.host.clone(),
                        reason: format!(
                            "the server refused STARTTLS ({text}); try tls = \"implicit\" on port 993"
                        ),
                    },
                    other => other,
                })?;
            let tcp = match client.into_inner() {
                Transport::Plain(tcp) => tcp,
                Transport::Tls(_) => {
                    return Err(ImapError::Protocol {
                        step,
                        reason: "already TLS".into(),
                    });
                }
            };
            client = async_imap::Client::new(Self::tls(connector, s, tcp).await?);
        }
        let login = tokio::time::timeout(
            s.timeout,
            client.login_with_capabilities(&s.user, s.password.expose_secret()),
        )
        .await
        .map_err(|_| ImapError::timeout(Step::Login, s.timeout))?;
        let (session, caps) = match login {
            Ok(ok) => ok,
            Err((async_imap::error::Error::No(text) | async_imap::error::Error::Bad(text), _)) => {
                return Err(ImapError::Login {
                    user: s.user.clone(),
                    server: text,
                });
            }
            Err((e, _)) => return Err(from_imap(Step::Login, e)),
        };
        let mut client = ImapClient {
            session,
            caps: Capabilities::default(),
            timeout: s.timeout,
            broken: false,
            events: Vec::new(),
        };
        client.caps = match caps {
            // Servers that list their capabilities in the login answer list the
            // post-login set there.
            Some(c) if !c.is_empty() => Capabilities::from_names(
                c.iter()
                    .map(|c| match c {
                        async_imap::types::Capability::Imap4rev1 => "IMAP4rev1".to_string(),
                        async_imap::types::Capability::Auth(a) => format!("AUTH={a}"),
                        async_imap::types::Capability::Atom(a) => a.clone(),
                    })
                    .collect(),
            ),
            _ => client.capability().await?,
        };
        if client.caps.id {
            client.identify().await?;
        }
        Ok(client)
    }

    async fn tls(
        connector: &tokio_rustls::TlsConnector,
        s: &ImapSettings,
        tcp: TcpStream,
    ) -> Result<Transport, ImapError> {
        tokio::time::timeout(s.timeout, transport::handshake(connector, &s.host, tcp))
            .await
            .map_err(|_| ImapError::Tls {
                host: s.host.clone(),
                reason: format!(
                    "no TLS handshake within {} s (does the port speak TLS?)",
                    s.timeout.as_secs()
                ),
            })?
            .map_err(|reason| ImapError::Tls {
                host: s.host.clone(),
                reason,
            })
    }

    async fn greeting(
        client: &mut async_imap::Client<Transport>,
        s: &ImapSettings,
    ) -> Result<(), ImapError> {
        let step = Step::Greeting;
        let greeting = tokio::time::timeout(s.timeout, client.read_response())
            .await
            .map_err(|_| ImapError::timeout(step, s.timeout))?
            .map_err(|e| lost(step, e))?
            .ok_or_else(|| lost(step, "closed before greeting"))?;
        match greeting.parsed() {
            Response::Data {
                status: Status::Ok | Status::PreAuth,
                ..
            } => Ok(()),
            Response::Data {
                status: Status::Bye,
                outcome,
            } => Err(ImapError::Refused {
                step,
                status: "BYE",
                text: outcome.information.as_deref().unwrap_or_default().into(),
            }),
            other => Err(ImapError::Protocol {
                step,
                reason: format!("not an IMAP greeting: {other:?}"),
            }),
        }
    }

    /// The server's capabilities (read at login).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Takes the changes the server reported on its own since the last call.
    pub fn take_events(&mut self) -> Vec<ServerEvent> {
        std::mem::take(&mut self.events)
    }

    /// Runs one command and reads until its tagged answer, giving each untagged
    /// response to `on` (which returns `false` for those it does not want: they are kept
    /// as [`ServerEvent`]s where they are one).
    async fn run(
        &mut self,
        step: Step,
        line: &str,
        limit: Duration,
        on: &mut (dyn FnMut(&Response<'_>) -> bool + Send),
    ) -> Result<Tagged, ImapError> {
        self.usable(step)?;
        let session = &mut self.session;
        let events = &mut self.events;
        let exchange = async {
            let tag = session
                .run_command(line)
                .await
                .map_err(|e| from_imap(step, e))?;
            read_until_tagged(session, events, step, &tag, on).await
        };
        finish(&mut self.broken, step, limit, exchange).await
    }

    fn usable(&self, step: Step) -> Result<(), ImapError> {
        match self.broken {
            false => Ok(()),
            true => Err(lost(
                step,
                "an earlier step on this connection failed; connect again",
            )),
        }
    }

    /// `CAPABILITY`.
    pub async fn capability(&mut self) -> Result<Capabilities, ImapError> {
        let mut names = Vec::new();
        self.run(Step::Capability, "CAPABILITY", self.timeout, &mut |r| {
            match r {
                Response::Capabilities(list) => names.extend(list.iter().map(capability_name)),
                _ => return false,
            }
            true
        })
        .await?;
        Ok(Capabilities::from_names(names))
    }

    async fn identify(&mut self) -> Result<(), ImapError> {
        let line = format!(
            "ID (\"name\" \"dingbridge\" \"version\" \"{}\")",
            env!("CARGO_PKG_VERSION")
        );
        match self
            .run(Step::Id, &line, self.timeout, &mut |r| {
                matches!(r, Response::Id(_))
            })
            .await
        {
            // A server that advertises ID but refuses ours is no reason to stop.
            Ok(_) | Err(ImapError::Refused { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `LIST "" "*"`: every folder.
    pub async fn list_folders(&mut self) -> Result<Vec<Folder>, ImapError> {
        let mut folders = Vec::new();
        self.run(Step::List, "LIST \"\" \"*\"", self.timeout, &mut |r| {
            match r {
                Response::MailboxData(MailboxDatum::List(l)) => folders.push(Folder {
                    name: MailboxName::from_wire(&l.name),
                    delimiter: l.delimiter.as_ref().map(|d| d.to_string()),
                    attributes: l.name_attributes.iter().map(attribute_name).collect(),
                }),
                _ => return false,
            }
            true
        })
        .await?;
        Ok(folders)
    }

    /// `EXAMINE`: opens a folder read-only (nothing about it can change, not even
    /// `\Recent`).
    pub async fn examine(&mut self, folder: &MailboxName) -> Result<FolderState, ImapError> {
        self.open("EXAMINE", Step::Examine, folder).await
    }

    /// `SELECT`: opens a folder read-write.
    pub async fn select(&mut self, folder: &MailboxName) -> Result<FolderState, ImapError> {
        self.open("SELECT", Step::Select, folder).await
    }

    async fn open(
        &mut self,
        verb: &str,
        step: Step,
        folder: &MailboxName,
    ) -> Result<FolderState, ImapError> {
        let name = quoted_or_usage(&folder.wire, "the folder name")?;
        // With CONDSTORE, ask for HIGHESTMODSEQ.
        let condstore = if self.caps.condstore {
            " (CONDSTORE)"
        } else {
            ""
        };
        let line = format!("{verb} {name}{condstore}");
        let (mut validity, mut next, mut exists, mut modseq) = (None, None, 0, None);
        let tagged = self
            .run(step, &line, self.timeout, &mut |r| {
                match r {
                    Response::MailboxData(MailboxDatum::Exists(n)) => exists = *n,
                    Response::Data {
                        status: Status::Ok,
                        outcome,
                    } => match &outcome.code {
                        Some(ResponseCode::UidValidity(v)) => validity = Some(*v),
                        Some(ResponseCode::UidNext(n)) => next = Some(*n),
                        Some(ResponseCode::HighestModSeq(m)) => modseq = Some(*m),
                        _ => {}
                    },
                    _ => {}
                }
                true
            })
            .await?;
        let uid_validity = validity.ok_or_else(|| ImapError::Protocol {
            step,
            reason: format!("no UIDVALIDITY for {folder}"),
        })?;
        Ok(FolderState {
            uid_validity,
            uid_next: next,
            exists,
            highest_modseq: modseq,
            read_only: tagged.read_only || verb == "EXAMINE",
        })
    }

    /// `UID SEARCH <criteria>` in the open folder; `criteria` is IMAP search syntax
    /// (`ALL`, `UID 100:*`, `SINCE 1-Jan-2026`), built by the caller.
    pub async fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, ImapError> {
        if criteria.contains(['\r', '\n']) {
            return Err(ImapError::Usage(
                "search criteria contain a line break".into(),
            ));
        }
        let mut uids = Vec::new();
        self.run(
            Step::Search,
            &format!("UID SEARCH {criteria}"),
            self.timeout,
            &mut |r| {
                match r {
                    Response::MailboxData(MailboxDatum::Search(ids)) => uids.extend(ids),
                    _ => return false,
                }
                true
            },
        )
        .await?;
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// The UIDs of messages whose `Message-ID` header is `message_id`.
    pub async fn search_message_id(&mut self, message_id: &str) -> Result<Vec<u32>, ImapError> {
        let q = quoted_or_usage(message_id, "the Message-ID")?;
        self.uid_search(&format!("HEADER Message-ID {q}")).await
    }

    /// Metadata of every message in the open folder.
    pub async fn fetch_meta_all(&mut self) -> Result<Vec<MessageMeta>, ImapError> {
        self.fetch_meta_set("1:*", &|_| true).await
    }

    /// Metadata of the messages with a UID of `first` or more.
    pub async fn fetch_meta_from(&mut self, first: u32) -> Result<Vec<MessageMeta>, ImapError> {
        // `N:*` also names the last message when every UID is below N: filter.
        self.fetch_meta_set(&format!("{}:*", first.max(1)), &|uid| uid >= first)
            .await
    }

    /// Metadata of these messages (those that no longer exist are left out).
    pub async fn fetch_meta(&mut self, uids: &[u32]) -> Result<Vec<MessageMeta>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        self.fetch_meta_set(&uid_set(uids), &|uid| uids.contains(&uid))
            .await
    }

    /// Metadata of the messages whose flags changed after mod-sequence `modseq`
    /// (`UID FETCH 1:* (…) (CHANGEDSINCE modseq)`, RFC 7162); needs CONDSTORE.
    pub async fn fetch_meta_changed_since(
        &mut self,
        modseq: u64,
    ) -> Result<Vec<MessageMeta>, ImapError> {
        if !self.caps.condstore {
            return Err(ImapError::Usage(
                "the server does not offer CONDSTORE; re-check the flags instead".into(),
            ));
        }
        self.fetch_meta_modified("1:*", &format!(" (CHANGEDSINCE {modseq})"), &|_| true)
            .await
    }

    async fn fetch_meta_set(
        &mut self,
        set: &str,
        wanted: &(dyn Fn(u32) -> bool + Sync),
    ) -> Result<Vec<MessageMeta>, ImapError> {
        self.fetch_meta_modified(set, "", wanted).await
    }

    /// `UID FETCH set (…) modifiers`: the metadata of the messages `wanted` keeps.
    async fn fetch_meta_modified(
        &mut self,
        set: &str,
        modifiers: &str,
        wanted: &(dyn Fn(u32) -> bool + Sync),
    ) -> Result<Vec<MessageMeta>, ImapError> {
        let modseq = if self.caps.condstore { " MODSEQ" } else { "" };
        let line =
            format!("UID FETCH {set} (UID RFC822.SIZE FLAGS INTERNALDATE{modseq}){modifiers}");
        let mut out = Vec::new();
        self.run(Step::Fetch, &line, self.timeout, &mut |r| {
            let Response::Fetch(_, attrs) = r else {
                return false;
            };
            let p = fetch_parts(attrs, false);
            match (p.uid, p.size) {
                (Some(uid), Some(size)) if wanted(uid) => out.push(MessageMeta {
                    uid,
                    size,
                    flags: p.flags.unwrap_or_default(),
                    internal_date: p.internal_date,
                    modseq: p.modseq,
                }),
                _ => return false,
            }
            true
        })
        .await?;
        out.sort_by_key(|m| m.uid);
        Ok(out)
    }

    /// The whole messages with these UIDs (`BODY.PEEK[]`: `\Seen` is left as it is),
    /// with their flags, size and internal date; those that no longer exist are left
    /// out. `size_hint` (their total size, from [`ImapClient::fetch_meta`]) extends the
    /// timeout for large downloads.
    pub async fn fetch(
        &mut self,
        uids: &[u32],
        size_hint: u64,
    ) -> Result<Vec<FetchedMessage>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let modseq = if self.caps.condstore { " MODSEQ" } else { "" };
        let line = format!(
            "UID FETCH {} (UID RFC822.SIZE FLAGS INTERNALDATE{modseq} BODY.PEEK[])",
            uid_set(uids)
        );
        let limit = self.timeout + Duration::from_secs(size_hint / MIN_FETCH_BYTES_PER_SEC);
        let mut out = Vec::new();
        self.run(Step::Fetch, &line, limit, &mut |r| {
            let Response::Fetch(_, attrs) = r else {
                return false;
            };
            let p = fetch_parts(attrs, true);
            match (p.uid, p.body) {
                (Some(uid), Some(raw)) if uids.contains(&uid) => out.push(FetchedMessage {
                    meta: MessageMeta {
                        uid,
                        size: p.size.unwrap_or(raw.len() as u64),
                        flags: p.flags.unwrap_or_default(),
                        internal_date: p.internal_date,
                        modseq: p.modseq,
                    },
                    raw,
                }),
                _ => return false,
            }
            true
        })
        .await?;
        out.sort_by_key(|m| m.meta.uid);
        Ok(out)
    }

    /// The `Message-ID` and `Subject` header lines of these messages
    /// (`BODY.PEEK[HEADER.FIELDS (…)]`: small, and `\Seen` is left as it is), by UID;
    /// those that no longer exist are left out.
    pub async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let line = format!(
            "UID FETCH {} (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])",
            uid_set(uids)
        );
        let mut out = Vec::new();
        self.run(Step::Fetch, &line, self.timeout, &mut |r| {
            let Response::Fetch(_, attrs) = r else {
                return false;
            };
            let p = fetch_parts(attrs, false);
            match (p.uid, p.header) {
                (Some(uid), Some(header)) if uids.contains(&uid) => out.push((uid, header)),
                _ => return false,
            }
            true
        })
        .await?;
        out.sort_by_key(|(uid, _)| *uid);
        Ok(out)
    }

    /// `APPEND`s a message to `folder` with these flags and internal date (the original
    /// receipt time); returns its UID when the server has UIDPLUS.
    pub async fn append(
        &mut self,
        folder: &MailboxName,
        flags: &[&str],
        internal_date: Option<&DateTime<FixedOffset>>,
        raw: &[u8],
    ) -> Result<Option<AppendUid>, ImapError> {
        let step = Step::Append;
        self.usable(step)?;
        let name = quoted_or_usage(&folder.wire, "the folder name")?;
        let flags = flags
            .iter()
            .map(|f| check_flag(f))
            .collect::<Result<Vec<_>, _>>()?
            .join(" ");
        let date = internal_date
            .map(|d| format!(" {}", internal_date_arg(d)))
            .unwrap_or_default();
        let line = format!("APPEND {name} ({flags}){date} {{{}}}", raw.len());
        let limit = self.timeout + Duration::from_secs(raw.len() as u64 / MIN_FETCH_BYTES_PER_SEC);
        let session = &mut self.session;
        let events = &mut self.events;
        let exchange = async {
            let tag = session
                .run_command(&line)
                .await
                .map_err(|e| from_imap(step, e))?;
            // Wait for the continuation before sending the literal.
            loop {
                match next_item(session, step, &tag).await? {
                    Item::Continue => break,
                    Item::Tagged(done) => {
                        done?;
                        return Err(ImapError::Protocol {
                            step,
                            reason: "the server completed APPEND without taking the message".into(),
                        });
                    }
                    Item::Untagged(e) => events.extend(e),
                }
            }
            let stream = session.get_mut();
            stream.write_all(raw).await.map_err(|e| lost(step, e))?;
            stream.write_all(b"\r\n").await.map_err(|e| lost(step, e))?;
            stream.flush().await.map_err(|e| lost(step, e))?;
            read_until_tagged(session, events, step, &tag, &mut |_| false).await
        };
        let tagged = finish(&mut self.broken, step, limit, exchange).await?;
        Ok(tagged.append_uid)
    }

    /// Adds (`add`) or removes flags on these messages of the open folder
    /// (`UID STORE ±FLAGS.SILENT`).
    pub async fn store_flags(
        &mut self,
        uids: &[u32],
        add: bool,
        flags: &[&str],
    ) -> Result<(), ImapError> {
        if uids.is_empty() || flags.is_empty() {
            return Ok(());
        }
        let flags = flags
            .iter()
            .map(|f| check_flag(f))
            .collect::<Result<Vec<_>, _>>()?
            .join(" ");
        let sign = if add { '+' } else { '-' };
        let line = format!("UID STORE {} {sign}FLAGS.SILENT ({flags})", uid_set(uids));
        self.run(Step::Store, &line, self.timeout, &mut |_| false)
            .await?;
        Ok(())
    }

    /// Removes exactly these messages of the open folder for good: `UID EXPUNGE` with
    /// UIDPLUS (RFC 4315); without it a plain `EXPUNGE`, and only when no other message
    /// of the folder is marked `\Deleted` (it would go too). Answers whether it expunged.
    /// The messages must be marked `\Deleted` first ([`ImapClient::store_flags`]).
    pub async fn expunge_uids(&mut self, uids: &[u32]) -> Result<bool, ImapError> {
        if uids.is_empty() {
            return Ok(true);
        }
        if self.caps.uidplus {
            let line = format!("UID EXPUNGE {}", uid_set(uids));
            self.run(Step::Expunge, &line, self.timeout, &mut |_| false)
                .await?;
            return Ok(true);
        }
        let deleted = self.uid_search("DELETED").await?;
        if deleted.iter().any(|u| !uids.contains(u)) {
            return Ok(false);
        }
        self.run(Step::Expunge, "EXPUNGE", self.timeout, &mut |_| false)
            .await?;
        Ok(true)
    }

    /// `NOOP`: lets the server report changes (for servers without IDLE); returns them.
    pub async fn noop(&mut self) -> Result<Vec<ServerEvent>, ImapError> {
        self.run(Step::Noop, "NOOP", self.timeout, &mut |_| false)
            .await?;
        Ok(self.take_events())
    }

    /// Waits in `IDLE` up to `wait` for the server to report a change in the open
    /// folder (RFC 2177 asks clients to re-issue IDLE at least every 29 minutes).
    pub async fn idle(&mut self, wait: Duration) -> Result<IdleOutcome, ImapError> {
        self.idle_until(wait, std::future::pending()).await
    }

    /// [`ImapClient::idle`] that also ends (with `DONE`, as a timeout does) as soon as
    /// `wake` completes: something outside IMAP wants the loop to run now.
    pub async fn idle_until(
        &mut self,
        wait: Duration,
        wake: impl Future<Output = ()> + Send,
    ) -> Result<IdleOutcome, ImapError> {
        let step = Step::Idle;
        if !self.caps.idle {
            return Err(ImapError::Usage(
                "the server does not offer IDLE; poll with noop() instead".into(),
            ));
        }
        self.usable(step)?;
        let pending = self.take_events();
        if !pending.is_empty() {
            return Ok(IdleOutcome::Changed(pending));
        }
        let timeout = self.timeout;
        let session = &mut self.session;
        let events = &mut self.events;
        let exchange = async {
            let tag = session
                .run_command("IDLE")
                .await
                .map_err(|e| from_imap(step, e))?;
            // The continuation, within the usual step timeout.
            let started = tokio::time::timeout(timeout, async {
                loop {
                    match next_item(session, step, &tag).await? {
                        Item::Continue => return Ok(()),
                        Item::Tagged(done) => {
                            done?;
                            return Err(ImapError::Protocol {
                                step,
                                reason: "IDLE ended before it started".into(),
                            });
                        }
                        Item::Untagged(e) => events.extend(e),
                    }
                }
            })
            .await
            .map_err(|_| ImapError::timeout(step, timeout))?;
            started?;
            // Then the wait itself: the first change, the end of the wait, or a wake-up.
            let deadline = tokio::time::Instant::now() + wait;
            let mut wake = std::pin::pin!(wake);
            loop {
                let item = tokio::select! {
                    item = tokio::time::timeout_at(deadline, next_item(session, step, &tag)) => item,
                    _ = &mut wake => break,
                };
                match item {
                    Err(_) => break,
                    Ok(item) => match item? {
                        Item::Untagged(Some(e)) => {
                            events.push(e);
                            break;
                        }
                        // "* OK Still here" and the like: keep waiting.
                        Item::Untagged(None) | Item::Continue => {}
                        Item::Tagged(done) => {
                            done?;
                            return Err(ImapError::Protocol {
                                step,
                                reason: "the server ended IDLE on its own".into(),
                            });
                        }
                    },
                }
            }
            session
                .run_command_untagged("DONE")
                .await
                .map_err(|e| from_imap(step, e))?;
            tokio::time::timeout(
                timeout,
                read_until_tagged(session, events, step, &tag, &mut |_| false),
            )
            .await
            .map_err(|_| ImapError::timeout(step, timeout))??;
            Ok(())
        };
        // The outer limit only guards against a bug: each phase has its own timeout.
        finish(&mut self.broken, step, wait + timeout * 3, exchange).await?;
        let events = self.take_events();
        Ok(match events.is_empty() {
            true => IdleOutcome::Timeout,
            false => IdleOutcome::Changed(events),
        })
    }

    /// `LOGOUT`, then closes the connection; errors are ignored (the server may already
    /// have gone).
    pub async fn logout(mut self) {
        if self.broken {
            return;
        }
        let timeout = self.timeout.min(Duration::from_secs(5));
        let _ = self
            .run(Step::Logout, "LOGOUT", timeout, &mut |_| true)
            .await;
    }
}

/// One response, read into what the caller needs to know.
enum Item {
    /// `+ …`: the server waits for more from the client.
    Continue,
    /// The tagged answer to the command.
    Tagged(Result<Tagged, ImapError>),
    /// Anything else, as an event where it is one.
    Untagged(Option<ServerEvent>),
}

async fn next_item(
    session: &mut Session,
    step: Step,
    tag: &imap_proto::RequestId,
) -> Result<Item, ImapError> {
    let resp = session
        .read_response()
        .await
        .map_err(|e| lost(step, e))?
        .ok_or_else(|| lost(step, "the server closed the connection"))?;
    Ok(match resp.parsed() {
        Response::Continue { .. } => Item::Continue,
        Response::Done {
            tag: t,
            status,
            outcome,
        } if t == tag => Item::Tagged(tagged_outcome(
            step,
            status,
            outcome.code.as_ref(),
            outcome.information.as_deref(),
        )),
        other => Item::Untagged(server_event(other)),
    })
}

/// Awaits one exchange within `limit`; a timeout or a transport failure marks the
/// connection `broken` (its protocol state is unknown).
async fn finish<T>(
    broken: &mut bool,
    step: Step,
    limit: Duration,
    exchange: impl Future<Output = Result<T, ImapError>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            if !matches!(e, ImapError::Refused { .. } | ImapError::Usage(_)) {
                *broken = true;
            }
            Err(e)
        }
        Err(_) => {
            *broken = true;
            Err(ImapError::timeout(step, limit))
        }
    }
}

/// Reads responses until the tagged answer to `tag`; see [`ImapClient::run`].
async fn read_until_tagged(
    session: &mut Session,
    events: &mut Vec<ServerEvent>,
    step: Step,
    tag: &imap_proto::RequestId,
    on: &mut (dyn FnMut(&Response<'_>) -> bool + Send),
) -> Result<Tagged, ImapError> {
    loop {
        let resp = session
            .read_response()
            .await
            .map_err(|e| lost(step, e))?
            .ok_or_else(|| lost(step, "the server closed the connection"))?;
        match resp.parsed() {
            Response::Done {
                tag: t,
                status,
                outcome,
            } if t == tag => {
                return tagged_outcome(
                    step,
                    status,
                    outcome.code.as_ref(),
                    outcome.information.as_deref(),
                );
            }
            other => {
                if !on(other)
                    && let Some(e) = server_event(other)
                {
                    events.push(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_collapse_runs() {
        assert_eq!(uid_set(&[3, 1, 2, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn flags_and_strings_are_checked_before_they_reach_the_wire() {
        assert!(check_flag("\\Seen").is_ok());
        assert!(check_flag("$Forwarded").is_ok());
        assert!(check_flag("\\Recent").is_err());
        assert!(check_flag("two words").is_err());
        assert!(check_flag("a)b").is_err());
        assert_eq!(quoted(r#"a "b" \c"#).as_deref(), Some(r#""a \"b\" \\c""#));
        assert_eq!(quoted("a\r\nLOGOUT"), None);
    }

    #[test]
    fn internal_dates_round_trip_in_the_append_form() {
        let d = parse_internal_date(" 2-Jan-2026 15:04:05 +0800").expect("space-padded day");
        assert_eq!(internal_date_arg(&d), "\"02-Jan-2026 15:04:05 +0800\"");
        assert_eq!(parse_internal_date("02-Jan-2026 15:04:05 +0800"), Some(d));
    }

    #[test]
    fn capabilities_are_read_case_insensitively_and_qresync_implies_condstore() {
        let c = Capabilities::from_names(
            ["IMAP4rev1", "idle", "UIDPLUS", "QRESYNC", "ID"]
                .map(String::from)
                .to_vec(),
        );
        assert!(c.idle && c.uidplus && c.condstore && c.qresync && c.id && !c.r#move);
    }

    #[test]
    fn folders_know_their_special_use_and_whether_they_open() {
        let f = Folder {
            name: MailboxName::from_wire("&XfJT0ZAB-"),
            delimiter: Some("/".into()),
            attributes: vec!["\\HasNoChildren".into(), "\\Sent".into()],
        };
        assert_eq!(f.name.display, "已发送");
        assert_eq!(f.special_use(), Some("\\Sent"));
        assert!(f.selectable());
        let placeholder = Folder {
            attributes: vec!["\\NoSelect".into()],
            ..f
        };
        assert!(!placeholder.selectable());
    }
}
