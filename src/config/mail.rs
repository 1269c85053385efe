//! `[[mailbox_routes]]`: one DingTalk mailbox (IMAP) paired with one Outlook mailbox.
//!
//! DingTalk enterprise mailboxes speak IMAP to third-party clients once the organisation's
//! admin allows it (admin console → 通讯录 → 邮箱管理 → 安全策略 → 第三方客户端管理), with a
//! client password per account. Server names are not hard-coded: host, port and TLS mode
//! are settings, copied from that console page.
//!
//! The same console switch opens SMTP submission, which `dingtalk.send_mail` uses: the
//! optional `[mailbox_routes.smtp]` part names the SMTP server (shown next to the IMAP
//! server in the DingTalk Mail client settings / the admin console's third-party client
//! page), and reuses the IMAP login and client password unless it names its own.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{ConfigError, Direction};

/// One mailbox route: a DingTalk mailbox reached over IMAP, an Outlook mailbox, which
/// folders pair up, and which way mail goes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxRouteConfig {
    /// Unique name (among `routes` and `mailbox_routes`), used by `--route` and in logs.
    pub name: String,
    /// The Outlook mailbox (UPN/e-mail or user id).
    pub mailbox: String,
    /// Which way mail goes; default `to_outlook`.
    #[serde(default)]
    pub direction: Direction,
    /// Where the first sync starts: `new` (mail arriving from now on) or `days:N`.
    #[serde(default)]
    pub start: SyncStart,
    /// Deletes and moves are relayed only when this is on.
    #[serde(default)]
    pub allow_deletes: bool,
    /// DingTalk folder ⇄ Outlook folder pairs; default `INBOX` ⇄ `DingTalk Mail`.
    #[serde(default = "default_folders")]
    pub folders: Vec<FolderPair>,
    /// Where `dingbridge mail backup` writes by default, and where `doctor` looks for
    /// the route's backup.
    #[serde(default)]
    pub backup_dir: Option<PathBuf>,
    /// Without IDLE on the server: how often the sync looks for new mail, in seconds.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// With IDLE: how often the wait is re-issued, in seconds (RFC 2177 asks for less
    /// than 29 minutes; default 25).
    #[serde(default = "default_idle_interval_secs")]
    pub idle_interval_secs: u64,
    /// Lifetime of the store lease that gives one instance the route's IMAP connection,
    /// in seconds: another instance takes over this long after the holder died.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// How to reach the DingTalk mailbox.
    pub imap: ImapConfig,
    /// SMTP submission for `dingtalk.send_mail`; without it the route cannot send.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
}

fn default_poll_interval_secs() -> u64 {
    60
}

/// Longest IDLE before it is re-issued (RFC 2177: servers may drop a client after 30
/// minutes of inactivity).
pub const MAX_IDLE_INTERVAL_SECS: u64 = 29 * 60;

fn default_idle_interval_secs() -> u64 {
    25 * 60
}

fn default_lease_secs() -> u64 {
    30
}

/// A DingTalk folder and the Outlook folder it pairs with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FolderPair {
    /// The DingTalk (IMAP) folder as the server lists it, in UTF-8 (`INBOX`, `已发送`),
    /// sub-folders joined with the server's hierarchy delimiter.
    pub dingtalk: String,
    /// The Outlook folder: `inbox` (the Outlook Inbox itself) or the display name of a
    /// top-level folder, created on first use.
    pub outlook: String,
}

/// The default folder pair.
pub const DEFAULT_DINGTALK_FOLDER: &str = "INBOX";
/// The Outlook folder DingTalk mail lands in by default.
pub const DEFAULT_OUTLOOK_FOLDER: &str = "DingTalk Mail";

fn default_folders() -> Vec<FolderPair> {
    vec![FolderPair {
        dingtalk: DEFAULT_DINGTALK_FOLDER.into(),
        outlook: DEFAULT_OUTLOOK_FOLDER.into(),
    }]
}

/// The IMAP side of a mailbox route.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// Server host name, as the DingTalk admin console shows it for third-party clients.
    pub host: String,
    /// Port; default 993 for `implicit`, 143 for `starttls` and `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `implicit` (TLS from the first byte, default), `starttls`, or `none` (tests only).
    #[serde(default)]
    pub tls: TlsMode,
    /// Must be `true` for `tls = "none"`: the password then travels in clear text.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Login name: the mailbox address.
    pub user: String,
    /// Name of the environment variable holding the client password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the client password (one line; the trailing newline is dropped).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Extra PEM certificate authorities trusted besides the public roots (a private CA,
    /// or a test server's throwaway certificate). Certificates are always verified.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Timeout of each network step (connect, TLS, login, one command), in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// The client password, read from `password_env` or `password_file` when the
    /// configuration is loaded.
    #[serde(skip)]
    pub password: Option<SecretString>,
}

fn default_timeout_secs() -> u64 {
    30
}

impl fmt::Debug for ImapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is a SecretString (redacted by its own Debug); listed explicitly
        // so that a new field cannot leak by accident.
        f.debug_struct("ImapConfig")
            .field("host", &self.host)
            .field("port", &self.port())
            .field("tls", &self.tls)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("user", &self.user)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("timeout_secs", &self.timeout_secs)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ImapConfig {
    /// The port to connect to: the configured one, else the TLS mode's usual port.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::None => 143,
        })
    }

    /// Timeout of each network step.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// How the IMAP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS, port 993).
    #[default]
    Implicit,
    /// Plain connection upgraded with `STARTTLS` before login (port 143).
    Starttls,
    /// No TLS at all: only with `allow_plaintext = true`, for tests.
    None,
}

/// The SMTP submission side of a mailbox route (`[mailbox_routes.smtp]`), used by the
/// `dingtalk.send_mail` action.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name, as the DingTalk admin console / mail client settings show it.
    pub host: String,
    /// Port; default 465 for `implicit`, 587 for `starttls` and `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `implicit` (TLS from the first byte, default), `starttls`, or `none` (tests only).
    #[serde(default)]
    pub tls: TlsMode,
    /// Must be `true` for `tls = "none"`: the password then travels in clear text.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Login name, also the `From` address; default `imap.user`.
    #[serde(default)]
    pub user: Option<String>,
    /// Environment variable holding the client password; default: the IMAP password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the client password; default: the IMAP password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Extra PEM certificate authorities trusted besides the public roots (as for IMAP).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Timeout of each network step, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Append a copy of each sent mail to the DingTalk Sent folder over IMAP. Turn it off
    /// only when the server files submitted mail in Sent by itself (whether Alibaba
    /// Mail, behind DingTalk Mail, does is not documented: check once, then decide).
    #[serde(default = "default_true")]
    pub save_sent_copy: bool,
    /// The Sent folder when the server marks none with `\Sent` (RFC 6154); otherwise
    /// it is found by that mark, then by the usual names (`Sent`, `已发送`, …).
    #[serde(default)]
    pub sent_folder: Option<String>,
    /// The client password: `password_env`/`password_file`, else the IMAP one.
    #[serde(skip)]
    pub password: Option<SecretString>,
}

fn default_true() -> bool {
    true
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port())
            .field("tls", &self.tls)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("user", &self.user)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("timeout_secs", &self.timeout_secs)
            .field("save_sent_copy", &self.save_sent_copy)
            .field("sent_folder", &self.sent_folder)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SmtpConfig {
    /// The port to connect to: the configured one, else the TLS mode's usual port.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 465,
            TlsMode::Starttls | TlsMode::None => 587,
        })
    }

    /// Timeout of each network step.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Where a route's first sync starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum SyncStart {
    /// Only mail arriving after the route is first switched on.
    #[default]
    New,
    /// Mail received in the last N days, then everything new.
    Days(u32),
}

/// Longest `days:N` accepted (ten years).
pub const MAX_START_DAYS: u32 = 3650;

impl FromStr for SyncStart {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "new" {
            return Ok(SyncStart::New);
        }
        let days = s
            .strip_prefix("days:")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("`{s}` is neither `new` nor `days:N`"))?;
        if !(1..=MAX_START_DAYS).contains(&days) {
            return Err(format!("days:N needs N in 1..={MAX_START_DAYS}"));
        }
        Ok(SyncStart::Days(days))
    }
}

impl TryFrom<String> for SyncStart {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
            .map_err(|why| format!("mailbox_routes.start: {why}"))
    }
}

impl From<SyncStart> for String {
    fn from(s: SyncStart) -> String {
        match s {
            SyncStart::New => "new".into(),
            SyncStart::Days(n) => format!("days:{n}"),
        }
    }
}

/// Environment variables named by `mailbox_routes[*].{imap,smtp}.password_env` in a parsed
/// configuration file: they hold passwords, not settings, even when their names start
/// with `DINGBRIDGE_`.
pub(super) fn password_variables(table: &toml::Table) -> Vec<String> {
    let Some(routes) = table.get("mailbox_routes").and_then(|v| v.as_array()) else {
        return Vec::new();
    };
    routes
        .iter()
        .flat_map(|r| {
            ["imap", "smtp"]
                .into_iter()
                .filter_map(move |part| r.get(part)?.get("password_env")?.as_str())
        })
        .map(str::to_string)
        .collect()
}

/// The password named by a variable or a file (`None` when neither is set); `key` names
/// the setting in errors.
fn read_password(
    key: &dyn Fn(&str) -> String,
    var: Option<&str>,
    file: Option<&std::path::Path>,
    env: &BTreeMap<String, String>,
) -> Result<Option<String>, ConfigError> {
    match (var, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key("password_env"),
            "set password_env or password_file, not both",
        )),
        (None, None) => Ok(None),
        (Some(var), None) => {
            let value = env.get(var).map(String::as_str).unwrap_or_default();
            if value.is_empty() {
                return Err(ConfigError::new(
                    key("password_env"),
                    format!("the environment variable {var} is not set or empty"),
                ));
            }
            Ok(Some(value.to_string()))
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    key("password_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let line = text.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                return Err(ConfigError::new(
                    key("password_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(line.to_string()))
        }
    }
}

impl MailboxRouteConfig {
    /// Reads the client password from the variable or file the route names (for SMTP:
    /// its own, else the IMAP one).
    pub(super) fn resolve_password(
        &mut self,
        index: usize,
        env: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("mailbox_routes[{index}].imap.{field}");
        let imap = &mut self.imap;
        let password = read_password(
            &key,
            imap.password_env.as_deref(),
            imap.password_file.as_deref(),
            env,
        )?
        .ok_or_else(|| {
            ConfigError::new(
                key("password_env"),
                "the client password is required: name an environment variable (password_env) or a file (password_file) holding it",
            )
        })?;
        if let Some(smtp) = &mut self.smtp {
            let key = |field: &str| format!("mailbox_routes[{index}].smtp.{field}");
            let own = read_password(
                &key,
                smtp.password_env.as_deref(),
                smtp.password_file.as_deref(),
                env,
            )?;
            smtp.password = Some(SecretString::from(own.unwrap_or_else(|| password.clone())));
        }
        imap.password = Some(SecretString::from(password));
        Ok(())
    }

    /// How often to look for new mail without IDLE.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs)
    }

    /// How long one IDLE waits before it is re-issued.
    pub fn idle_interval(&self) -> Duration {
        Duration::from_secs(self.idle_interval_secs)
    }

    /// Lifetime of the route's connection lease.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// Checks one route's values (the password was resolved before).
    pub(super) fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |field: &str| format!("mailbox_routes[{index}].{field}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::new(key("name"), "must not be empty"));
        }
        if !(1..=3600).contains(&self.poll_interval_secs) {
            return Err(ConfigError::new(
                key("poll_interval_secs"),
                "must be 1..=3600",
            ));
        }
        if !(1..=MAX_IDLE_INTERVAL_SECS).contains(&self.idle_interval_secs) {
            return Err(ConfigError::new(
                key("idle_interval_secs"),
                format!(
                    "must be 1..={MAX_IDLE_INTERVAL_SECS} (servers may drop an IDLE client after 30 minutes)"
                ),
            ));
        }
        if !(3..=600).contains(&self.lease_secs) {
            return Err(ConfigError::new(key("lease_secs"), "must be 3..=600"));
        }
        if self.mailbox.trim().is_empty() || self.mailbox.contains('/') {
            return Err(ConfigError::new(
                key("mailbox"),
                "must be the Outlook mailbox's address or user id",
            ));
        }
        let imap = &self.imap;
        let host = imap.host.trim();
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains("://") {
            return Err(ConfigError::new(
                key("imap.host"),
                "must be a host name or IP address (no scheme, no port): copy it from the DingTalk admin console (通讯录 → 邮箱管理 → 安全策略 → 第三方客户端管理)",
            ));
        }
        if imap.port == Some(0) {
            return Err(ConfigError::new(key("imap.port"), "must be 1..=65535"));
        }
        if imap.user.trim().is_empty() {
            return Err(ConfigError::new(
                key("imap.user"),
                "must be the mailbox address the client logs in with",
            ));
        }
        if imap.tls == TlsMode::None && !imap.allow_plaintext {
            return Err(ConfigError::new(
                key("imap.tls"),
                "`none` sends the client password and every mail in clear text; it is for tests only and needs allow_plaintext = true",
            ));
        }
        if imap.tls == TlsMode::None && imap.tls_ca_file.is_some() {
            return Err(ConfigError::new(
                key("imap.tls_ca_file"),
                "has no effect with tls = \"none\": remove it or use implicit/starttls",
            ));
        }
        if !(1..=600).contains(&imap.timeout_secs) {
            return Err(ConfigError::new(
                key("imap.timeout_secs"),
                "must be 1..=600",
            ));
        }
        // Resolved by `resolve_password` on load; a configuration built in code must set it.
        if imap
            .password
            .as_ref()
            .is_none_or(|p| p.expose_secret().is_empty())
        {
            return Err(ConfigError::new(
                key("imap.password_env"),
                "the client password is required (password_env or password_file)",
            ));
        }
        if let Some(smtp) = &self.smtp {
            self.validate_smtp(index, smtp)?;
        }
        self.validate_folders(index)
    }

    /// The address mail is sent from: `smtp.user`, else `imap.user`.
    pub fn smtp_user(&self) -> Option<&str> {
        let smtp = self.smtp.as_ref()?;
        Some(smtp.user.as_deref().unwrap_or(&self.imap.user).trim())
    }

    fn validate_smtp(&self, index: usize, smtp: &SmtpConfig) -> Result<(), ConfigError> {
        let key = |field: &str| format!("mailbox_routes[{index}].smtp.{field}");
        let host = smtp.host.trim();
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains("://") {
            return Err(ConfigError::new(
                key("host"),
                "must be a host name or IP address (no scheme, no port): copy the SMTP server from the DingTalk Mail client settings (third-party clients must be allowed in the admin console: 通讯录 → 邮箱管理 → 安全策略 → 第三方客户端管理)",
            ));
        }
        if smtp.port == Some(0) {
            return Err(ConfigError::new(key("port"), "must be 1..=65535"));
        }
        let user = self.smtp_user().unwrap_or_default();
        match user.rsplit_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && !domain.is_empty()
                    && !user.contains(char::is_whitespace) => {}
            _ => {
                return Err(ConfigError::new(
                    key("user"),
                    "must be the full mailbox address (it is the From address and names the Message-ID domain); set smtp.user or make imap.user the address",
                ));
            }
        }
        if smtp.tls == TlsMode::None && !smtp.allow_plaintext {
            return Err(ConfigError::new(
                key("tls"),
                "`none` sends the client password and every mail in clear text; it is for tests only and needs allow_plaintext = true",
            ));
        }
        if smtp.tls == TlsMode::None && smtp.tls_ca_file.is_some() {
            return Err(ConfigError::new(
                key("tls_ca_file"),
                "has no effect with tls = \"none\": remove it or use implicit/starttls",
            ));
        }
        if !(1..=600).contains(&smtp.timeout_secs) {
            return Err(ConfigError::new(key("timeout_secs"), "must be 1..=600"));
        }
        if let Some(folder) = &smtp.sent_folder
            && (folder.trim().is_empty() || folder.contains(['\r', '\n', '\0']))
        {
            return Err(ConfigError::new(
                key("sent_folder"),
                "must be a folder name on one line",
            ));
        }
        if smtp
            .password
            .as_ref()
            .is_none_or(|p| p.expose_secret().is_empty())
        {
            return Err(ConfigError::new(
                key("password_env"),
                "the client password is required (its own password_env/password_file, or the IMAP one)",
            ));
        }
        Ok(())
    }

    fn validate_folders(&self, index: usize) -> Result<(), ConfigError> {
        let key = format!("mailbox_routes[{index}].folders");
        if self.folders.is_empty() {
            return Err(ConfigError::new(
                key,
                "name at least one folder pair (default: INBOX ⇄ \"DingTalk Mail\")",
            ));
        }
        let mut dingtalk = std::collections::HashSet::new();
        let mut outlook = std::collections::HashSet::new();
        for (j, pair) in self.folders.iter().enumerate() {
            let d = pair.dingtalk.trim();
            let o = pair.outlook.trim();
            if d.is_empty() || d.contains(['\r', '\n', '\0']) {
                return Err(ConfigError::new(
                    format!("{key}[{j}].dingtalk"),
                    "must be a folder name on one line",
                ));
            }
            if o.is_empty() || o.contains(['\r', '\n', '\0']) {
                return Err(ConfigError::new(
                    format!("{key}[{j}].outlook"),
                    "must be `inbox` or a folder's display name",
                ));
            }
            // INBOX is case-insensitive in IMAP; other names are compared as written.
            let d_norm = if d.eq_ignore_ascii_case("inbox") {
                "INBOX".to_string()
            } else {
                d.to_string()
            };
            if !dingtalk.insert(d_norm) {
                return Err(ConfigError::new(
                    format!("{key}[{j}].dingtalk"),
                    format!("`{d}` is paired twice"),
                ));
            }
            // Outlook folder names are case-insensitive.
            if !outlook.insert(o.to_lowercase()) {
                return Err(ConfigError::new(
                    format!("{key}[{j}].outlook"),
                    format!("`{o}` is paired twice"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const ROUTE: &str = r#"
[[mailbox_routes]]
name = "ops-mail"
mailbox = "ops@contoso.com"
[mailbox_routes.imap]
host = "imap.example.net"
user = "ops@corp.example"
password_env = "OPS_MAIL_PASSWORD"
"#;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).expect("write");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_from(Some(&path), env)
    }

    fn with_password(toml: &str) -> Result<Config, ConfigError> {
        load(toml, &[("OPS_MAIL_PASSWORD", "client-pw-123")])
    }

    #[test]
    fn a_minimal_route_gets_safe_defaults() {
        let c = with_password(ROUTE).expect("loads");
        let r = &c.mailbox_routes[0];
        assert_eq!(r.imap.tls, TlsMode::Implicit);
        assert_eq!(r.imap.port(), 993);
        assert_eq!(r.direction, Direction::ToOutlook);
        assert_eq!(r.start, SyncStart::New);
        assert!(!r.allow_deletes);
        assert_eq!(
            r.folders,
            vec![FolderPair {
                dingtalk: "INBOX".into(),
                outlook: "DingTalk Mail".into()
            }]
        );
        let password = r.imap.password.as_ref().expect("resolved");
        assert_eq!(password.expose_secret(), "client-pw-123");
        assert_eq!(r.imap.timeout(), Duration::from_secs(30));
        assert_eq!(r.poll_interval(), Duration::from_secs(60));
        assert_eq!(r.idle_interval(), Duration::from_secs(25 * 60));
        assert_eq!(r.lease_ttl(), Duration::from_secs(30));
    }

    #[test]
    fn sync_intervals_stay_in_range() {
        let with = |line: &str| {
            ROUTE.replace(
                "[mailbox_routes.imap]",
                &format!("{line}\n[mailbox_routes.imap]"),
            )
        };
        let c = with_password(&with(
            "poll_interval_secs = 2\nidle_interval_secs = 5\nlease_secs = 4",
        ))
        .expect("short intervals for tests");
        assert_eq!(c.mailbox_routes[0].poll_interval(), Duration::from_secs(2));
        for (line, field) in [
            ("poll_interval_secs = 0", "poll_interval_secs"),
            ("idle_interval_secs = 1800", "idle_interval_secs"),
            ("lease_secs = 1", "lease_secs"),
        ] {
            let err = with_password(&with(line)).expect_err(line);
            assert_eq!(err.key, format!("mailbox_routes[0].{field}"), "{err}");
        }
    }

    #[test]
    fn starttls_defaults_to_143_and_a_port_can_be_given() {
        let c = with_password(&ROUTE.replace("user =", "tls = \"starttls\"\nuser =")).expect("ok");
        assert_eq!(c.mailbox_routes[0].imap.port(), 143);
        let c = with_password(&ROUTE.replace("user =", "port = 10993\nuser =")).expect("ok");
        assert_eq!(c.mailbox_routes[0].imap.port(), 10993);
        let err = with_password(&ROUTE.replace("user =", "port = 0\nuser =")).expect_err("0");
        assert_eq!(err.key, "mailbox_routes[0].imap.port");
    }

    #[test]
    fn plaintext_needs_an_explicit_allow_and_takes_no_ca_file() {
        let none = ROUTE.replace("user =", "tls = \"none\"\nuser =");
        let err = with_password(&none).expect_err("not allowed");
        assert_eq!(err.key, "mailbox_routes[0].imap.tls");
        assert!(err.reason.contains("allow_plaintext"), "{err}");
        let allowed = none.replace("user =", "allow_plaintext = true\nuser =");
        let c = with_password(&allowed).expect("allowed for tests");
        assert_eq!(c.mailbox_routes[0].imap.tls, TlsMode::None);
        let err = with_password(&allowed.replace("user =", "tls_ca_file = \"/x.pem\"\nuser ="))
            .expect_err("ca without tls");
        assert_eq!(err.key, "mailbox_routes[0].imap.tls_ca_file");
        let err = with_password(&ROUTE.replace("user =", "tls = \"ssl\"\nuser ="))
            .expect_err("unknown mode");
        assert!(err.reason.contains("ssl"), "{err}");
    }

    #[test]
    fn the_password_comes_from_one_variable_or_one_file() {
        let err = load(ROUTE, &[]).expect_err("variable missing");
        assert_eq!(err.key, "mailbox_routes[0].imap.password_env");
        assert!(err.reason.contains("OPS_MAIL_PASSWORD"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file-pw\n").expect("write");
        let by_file = ROUTE.replace(
            "password_env = \"OPS_MAIL_PASSWORD\"",
            &format!("password_file = \"{}\"", file.display()),
        );
        let c = load(&by_file, &[]).expect("file");
        let pw = c.mailbox_routes[0].imap.password.as_ref().expect("pw");
        assert_eq!(pw.expose_secret(), "from-file-pw");
        let both = by_file.replace("password_file", "password_env = \"X\"\npassword_file");
        let err = with_password(&both).expect_err("both");
        assert!(err.reason.contains("not both"), "{err}");
        let neither = ROUTE.replace("password_env = \"OPS_MAIL_PASSWORD\"", "");
        let err = load(&neither, &[]).expect_err("neither");
        assert_eq!(err.key, "mailbox_routes[0].imap.password_env");
        let missing = by_file.replace("/pw", "/nope");
        let err = load(&missing, &[]).expect_err("no file");
        assert_eq!(err.key, "mailbox_routes[0].imap.password_file");
        std::fs::write(&file, "\n").expect("write");
        let err = load(&by_file, &[]).expect_err("empty file");
        assert!(err.reason.contains("empty"), "{err}");
    }

    #[test]
    fn a_password_variable_may_carry_the_service_prefix() {
        let toml = ROUTE.replace("OPS_MAIL_PASSWORD", "DINGBRIDGE_OPS_MAIL_PASSWORD");
        let c = load(&toml, &[("DINGBRIDGE_OPS_MAIL_PASSWORD", "pw")]).expect("not a setting");
        assert!(c.mailbox_routes[0].imap.password.is_some());
        // Any other unknown DINGBRIDGE_ variable is still refused.
        let err = load(
            &toml,
            &[
                ("DINGBRIDGE_OPS_MAIL_PASSWORD", "pw"),
                ("DINGBRIDGE_X", "1"),
            ],
        )
        .expect_err("unknown");
        assert!(err.reason.contains('x'), "{err}");
    }

    #[test]
    fn the_password_is_never_printed_or_serialised() {
        let c = with_password(ROUTE).expect("loads");
        let printed = format!("{c:?}");
        assert!(!printed.contains("client-pw-123"), "{printed}");
        let serialised = toml::to_string(&c).expect("serialise");
        assert!(!serialised.contains("client-pw-123"), "{serialised}");
    }

    #[test]
    fn start_is_new_or_a_number_of_days() {
        let c = with_password(&ROUTE.replace(
            "[mailbox_routes.imap]",
            "start = \"days:30\"\n[mailbox_routes.imap]",
        ))
        .expect("days");
        assert_eq!(c.mailbox_routes[0].start, SyncStart::Days(30));
        for bad in ["days:0", "yesterday", "days:99999"] {
            let toml = ROUTE.replace(
                "[mailbox_routes.imap]",
                &format!("start = \"{bad}\"\n[mailbox_routes.imap]"),
            );
            let err = with_password(&toml).expect_err(bad);
            assert_eq!(err.key, "mailbox_routes.start", "{err}");
        }
    }

    #[test]
    fn folders_pair_once_each_and_the_outlook_inbox_is_allowed() {
        let pairs = |body: &str| {
            ROUTE.replace(
                "[mailbox_routes.imap]",
                &format!("folders = [{body}]\n[mailbox_routes.imap]"),
            )
        };
        let c = with_password(&pairs(
            r#"{ dingtalk = "INBOX", outlook = "inbox" }, { dingtalk = "已发送", outlook = "DingTalk Sent" }"#,
        ))
        .expect("inbox and a second pair");
        assert_eq!(c.mailbox_routes[0].folders.len(), 2);
        let err = with_password(&pairs(
            r#"{ dingtalk = "INBOX", outlook = "a" }, { dingtalk = "inbox", outlook = "b" }"#,
        ))
        .expect_err("INBOX twice");
        assert_eq!(err.key, "mailbox_routes[0].folders[1].dingtalk");
        let err = with_password(&pairs(
            r#"{ dingtalk = "INBOX", outlook = "Mail" }, { dingtalk = "Sent", outlook = "mail" }"#,
        ))
        .expect_err("Outlook folder twice");
        assert_eq!(err.key, "mailbox_routes[0].folders[1].outlook");
        let err = with_password(&pairs("")).expect_err("none");
        assert_eq!(err.key, "mailbox_routes[0].folders");
    }

    #[test]
    fn names_are_unique_across_both_kinds_of_route_and_hosts_are_bare() {
        let twice = format!("{ROUTE}{ROUTE}");
        let err = with_password(&twice).expect_err("twice");
        assert_eq!(err.key, "mailbox_routes[1].name");
        let clash = format!(
            "[[routes]]\nname = \"ops-mail\"\nmailbox = \"a@b.c\"\nkinds = [\"message\"]\n[routes.dingtalk]\nconversation_id = \"cid\"\n{ROUTE}"
        );
        let err = with_password(&clash).expect_err("clash with a route");
        assert_eq!(err.key, "mailbox_routes[0].name");
        let err = with_password(&ROUTE.replace("imap.example.net", "imaps://imap.example.net"))
            .expect_err("scheme");
        assert_eq!(err.key, "mailbox_routes[0].imap.host");
        assert!(err.reason.contains("第三方客户端管理"), "{err}");
    }

    const SMTP: &str = "[mailbox_routes.smtp]\nhost = \"smtp.example.net\"\n";

    #[test]
    fn smtp_is_optional_and_defaults_to_implicit_tls_and_the_imap_login() {
        let c = with_password(ROUTE).expect("loads");
        assert!(c.mailbox_routes[0].smtp.is_none());
        let c = with_password(&format!("{ROUTE}{SMTP}")).expect("smtp");
        let r = &c.mailbox_routes[0];
        let smtp = r.smtp.as_ref().expect("smtp");
        assert_eq!(smtp.tls, TlsMode::Implicit);
        assert_eq!(smtp.port(), 465);
        assert!(smtp.save_sent_copy);
        assert_eq!(r.smtp_user(), Some("ops@corp.example"));
        let pw = smtp.password.as_ref().expect("pw");
        assert_eq!(pw.expose_secret(), "client-pw-123");
        let c = with_password(&format!("{ROUTE}{SMTP}tls = \"starttls\"\n")).expect("587");
        assert_eq!(c.mailbox_routes[0].smtp.as_ref().expect("s").port(), 587);
    }

    #[test]
    fn smtp_may_have_its_own_password_and_never_prints_it() {
        let toml = format!("{ROUTE}{SMTP}password_env = \"OPS_SMTP_PW\"\n");
        let c = load(
            &toml,
            &[
                ("OPS_MAIL_PASSWORD", "imap-pw-1"),
                ("OPS_SMTP_PW", "smtp-pw-2"),
            ],
        )
        .expect("own password");
        let smtp = c.mailbox_routes[0].smtp.as_ref().expect("smtp");
        assert_eq!(
            smtp.password.as_ref().expect("pw").expose_secret(),
            "smtp-pw-2"
        );
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("smtp-pw-2") && !printed.contains("imap-pw-1"),
            "{printed}"
        );
        let err = load(&toml, &[("OPS_MAIL_PASSWORD", "imap-pw-1")]).expect_err("unset");
        assert_eq!(err.key, "mailbox_routes[0].smtp.password_env");
        // The SMTP variable may carry the service prefix, like the IMAP one.
        let prefixed = toml.replace("OPS_SMTP_PW", "DINGBRIDGE_OPS_SMTP_PW");
        load(
            &prefixed,
            &[("OPS_MAIL_PASSWORD", "a"), ("DINGBRIDGE_OPS_SMTP_PW", "b")],
        )
        .expect("not a setting");
    }

    #[test]
    fn smtp_settings_are_checked_at_start_up() {
        for (extra, field) in [
            ("tls = \"none\"\n", "tls"),
            ("port = 0\n", "port"),
            ("user = \"not-an-address\"\n", "user"),
            ("timeout_secs = 0\n", "timeout_secs"),
            ("sent_folder = \" \"\n", "sent_folder"),
        ] {
            let err = with_password(&format!("{ROUTE}{SMTP}{extra}")).expect_err(extra);
            assert_eq!(err.key, format!("mailbox_routes[0].smtp.{field}"), "{err}");
        }
        let err = with_password(&format!(
            "{ROUTE}{}",
            SMTP.replace("smtp.example.net", "smtps://smtp.example.net")
        ))
        .expect_err("scheme");
        assert!(err.reason.contains("第三方客户端管理"), "{err}");
        let plain = format!("{ROUTE}{SMTP}tls = \"none\"\nallow_plaintext = true\n");
        let c = with_password(&plain).expect("allowed for tests");
        assert_eq!(c.mailbox_routes[0].smtp.as_ref().expect("s").port(), 587);
    }
}
