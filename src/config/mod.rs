//! Typed configuration: an optional TOML file overridden by `DINGBRIDGE_*` variables,
//! validated once at start-up so that handlers only ever see valid settings.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

mod mail;
mod values;

pub use mail::{
    DEFAULT_DINGTALK_FOLDER, DEFAULT_OUTLOOK_FOLDER, FolderPair, ImapConfig, MAX_START_DAYS,
    MailboxRouteConfig, SmtpConfig, SyncStart, TlsMode,
};
pub use values::{
    AES_KEY_CHARS, AesKey, AllowedNet, AssertionAlg, BootstrapKey, OptionItem, Scope, parse_scopes,
};

/// Prefix of every environment variable the service reads.
pub const ENV_PREFIX: &str = "DINGBRIDGE_";

/// Sections of the TOML file that `DINGBRIDGE_<SECTION>_<KEY>` variables address.
const SECTIONS: &[&str] = &["dingtalk", "graph", "workers", "echo", "api", "hooks"];

/// Whole service configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds to.
    pub listen: String,
    /// `memory` or a `redis://` / `rediss://` URL; with `store_cluster`, one or more
    /// comma-separated URLs of Redis Cluster nodes.
    pub store_url: String,
    /// The Redis at `store_url` is a Redis Cluster.
    pub store_cluster: bool,
    /// Prefix for every key the store writes.
    pub key_prefix: String,
    /// Public base URL through which Graph and DingTalk reach this service.
    pub public_url: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// A request body not received in full within this many milliseconds is answered
    /// 408 (the header phase has its own 5 s limit in actix).
    pub body_timeout_ms: u64,
    /// Client connections served at once by this instance; further ones wait in the
    /// listen queue. Lowered at start-up to fit the open-file limit.
    pub max_connections: usize,
    /// How long idempotency records live, in seconds.
    pub idempotency_ttl_secs: u64,
    /// How long inbound-event dedupe marks live, in seconds.
    pub dedupe_ttl_secs: u64,
    /// Maximum number of entries kept in the audit stream.
    pub audit_max_entries: u64,
    /// Embedded store only: most jobs held at once; further events get 503.
    pub memory_queue_max: u64,
    /// Embedded store only: most dedupe marks kept (the oldest are forgotten first).
    pub memory_dedupe_max: u64,
    /// Seconds graceful shutdown waits for in-flight requests and jobs.
    pub shutdown_timeout_secs: u64,
    /// Log format: `json` (default) or `pretty`.
    pub log_format: String,
    /// Log filter, e.g. `info` or `dingbridge=debug,actix_server=warn` (`RUST_LOG` wins).
    pub log_level: String,
    /// Background job processing.
    pub workers: WorkerConfig,
    /// DingTalk credentials and endpoints.
    pub dingtalk: DingTalkConfig,
    /// Microsoft Graph credentials and endpoints.
    pub graph: GraphConfig,
    /// Built-in diagnostic relay (`POST /webhooks/echo`), off unless a target is set.
    pub echo: EchoConfig,
    /// Built-in sync routes: which DingTalk source pairs with which Outlook mailbox.
    pub routes: Vec<RouteConfig>,
    /// DingTalk Mail (IMAP) ⇄ Outlook mailbox routes.
    pub mailbox_routes: Vec<MailboxRouteConfig>,
    /// The low-code API (`/v1`): bootstrap keys and dropdown contents.
    pub api: ApiConfig,
    /// REST hook deliveries to Zapier / n8n.
    pub hooks: HooksConfig,
}

/// What a route relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// DingTalk chat/robot messages ⇄ Outlook mail items.
    Message,
    /// Outlook mail → DingTalk messages.
    Mail,
    /// Calendar events.
    Event,
    /// DingTalk todos ⇄ Microsoft To Do tasks.
    Todo,
    /// Contacts.
    Contact,
}

/// Which way a route relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// DingTalk → Outlook only.
    #[default]
    ToOutlook,
    /// Outlook → DingTalk only.
    ToDingtalk,
    /// Both ways, with loop prevention.
    Both,
}

impl Direction {
    /// Relays DingTalk changes into Outlook.
    pub fn to_outlook(self) -> bool {
        matches!(self, Direction::ToOutlook | Direction::Both)
    }

    /// Relays Outlook changes into DingTalk.
    pub fn to_dingtalk(self) -> bool {
        matches!(self, Direction::ToDingtalk | Direction::Both)
    }
}

/// One route: a DingTalk source, an Outlook mailbox, the kinds and the direction.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, shown to Zapier/n8n users.
    pub name: String,
    /// The Outlook mailbox (UPN/e-mail or user id); the only mailboxes ever touched.
    pub mailbox: String,
    /// Kinds relayed.
    pub kinds: Vec<RouteKind>,
    /// Direction.
    #[serde(default)]
    pub direction: Direction,
    /// Mail folder for relayed DingTalk messages (created on first use).
    #[serde(default = "default_folder")]
    pub folder: String,
    /// Microsoft To Do list for relayed todos (created on first use).
    #[serde(default = "default_folder")]
    pub todo_list: String,
    /// Outlook mail folder watched for Outlook → DingTalk mail (well-known name such as
    /// `inbox`, or a top-level folder's display name). Default: `inbox`.
    #[serde(default)]
    pub watch_folder: Option<String>,
    /// Deletes are relayed only when this is on.
    #[serde(default)]
    pub allow_deletes: bool,
    /// Outlook → DingTalk mail arrives as rich notifications (`includeResourceData`,
    /// encrypted with `graph.notification_certificate_path`): no fetch per mail.
    #[serde(default)]
    pub rich_notifications: bool,
    /// Windows or IANA time zone of relayed all-day/floating times.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The DingTalk side.
    pub dingtalk: RouteDingTalk,
}

impl RouteConfig {
    /// `true` when the route relays Outlook items Graph notifies about (mail, events,
    /// contacts) to DingTalk; To Do is polled instead.
    pub fn wants_notifications(&self) -> bool {
        self.direction.to_dingtalk() && self.kinds.iter().any(|k| !matches!(k, RouteKind::Todo))
    }
}

fn default_folder() -> String {
    "DingTalk".into()
}

fn default_time_zone() -> String {
    "China Standard Time".into()
}

/// DingTalk sources and targets of a route (at least one must be set).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RouteDingTalk {
    /// Group conversation id (`conversationId` / `openConversationId`).
    pub conversation_id: Option<String>,
    /// App robot code used to post into the conversation.
    pub robot_code: Option<String>,
    /// Custom robot webhook URL (`…/robot/send?access_token=…`).
    #[serde(serialize_with = "ser_secret_opt")]
    pub robot_webhook: Option<SecretString>,
    /// Custom robot `SEC…` signing secret.
    #[serde(serialize_with = "ser_secret_opt")]
    pub robot_secret: Option<SecretString>,
    /// A DingTalk user (userId/staffId) whose events and todos the route follows.
    pub user_id: Option<String>,
    /// The same user's unionId (calendar and todo APIs speak unionId).
    pub union_id: Option<String>,
}

/// Low-code API settings.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// API keys accepted without being in the store, each `name:scope+scope:sha256hex`
    /// (the SHA-256 of the whole `dbk_…` key, as printed by `dingbridge keys hash`).
    /// For the embedded memory store, which the `keys create` command cannot reach.
    /// As a variable: `DINGBRIDGE_API_BOOTSTRAP_KEYS`, entries separated by commas.
    pub bootstrap_keys: Vec<BootstrapKey>,
    /// Mailboxes offered by `GET /v1/options/mailboxes`, each `id` or `id|label`.
    pub mailboxes: Vec<OptionItem>,
    /// DingTalk conversations offered by `GET /v1/options/dingtalk-conversations`.
    pub dingtalk_conversations: Vec<OptionItem>,
    /// Calendars offered by `GET /v1/options/calendars`.
    pub calendars: Vec<OptionItem>,
    /// To-do lists offered by `GET /v1/options/todo-lists`.
    pub todo_lists: Vec<OptionItem>,
}

/// REST hook delivery settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// Private, loopback or link-local targets allowed anyway: IP addresses or CIDR
    /// ranges (e.g. `["10.1.2.0/24"]` for an n8n on the company LAN). Empty by default:
    /// such targets are refused, which blocks server-side request forgery.
    pub allow_private_targets: Vec<AllowedNet>,
    /// A target answering 404 (n8n's answer for an inactive workflow) for longer than
    /// this many seconds without a success in between is disabled.
    pub gone_grace_secs: u64,
    /// Timeout of one delivery, in seconds.
    pub timeout_secs: u64,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: Vec::new(),
            gone_grace_secs: 86_400,
            timeout_secs: 10,
        }
    }
}

/// Worker pool and retry policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Concurrent jobs per instance.
    pub concurrency: usize,
    /// Attempts before a job is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay, in milliseconds; doubles per attempt.
    pub backoff_base_ms: u64,
    /// Upper bound of a retry delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// A job held this long by an instance that stopped answering is taken over.
    pub visibility_timeout_ms: u64,
    /// Timeout of one handler run, in milliseconds (kept below the visibility timeout).
    pub job_timeout_ms: u64,
}

/// DingTalk settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DingTalkConfig {
    /// App key (Client ID); also the owner key of encrypted pushes.
    pub app_key: Option<String>,
    /// App secret (Client Secret).
    #[serde(serialize_with = "ser_secret_opt")]
    pub app_secret: Option<SecretString>,
    /// Token of the HTTP-push callback signature.
    #[serde(serialize_with = "ser_secret_opt")]
    pub callback_token: Option<SecretString>,
    /// The 43-character EncodingAESKey, decoded.
    pub aes_key: Option<AesKey>,
    /// Base URL of the new-style API.
    pub api_base_url: Option<String>,
    /// Base URL of the old-style API.
    pub oapi_base_url: Option<String>,
    /// Calls per second per API allowed for this app (DingTalk's standard limit is 20).
    pub qps_per_api: u64,
    /// API calls per month counted for the organisation (Standard edition: 5000);
    /// exposed in /metrics with a warning in the log at 80 %.
    pub monthly_call_budget: u64,
    /// App secret of the robot whose callbacks arrive at `/webhooks/dingtalk/robot`
    /// (defaults to `app_secret`).
    #[serde(serialize_with = "ser_secret_opt")]
    pub robot_app_secret: Option<SecretString>,
    /// Open a DingTalk Stream-mode connection (needs `app_key` and `app_secret`).
    pub stream_enabled: bool,
    /// Accepted distance of an HTTP push timestamp from now, in seconds (0 = no check).
    pub timestamp_window_secs: u64,
    /// Seconds between fetches of DingTalk's failed-push list (0 = no backfill).
    pub backfill_interval_secs: u64,
}

// The real hosts, in one place: every client takes its base URL from the accessors
// below, and tests point the settings at local fakes.
/// Default of `dingtalk.api_base_url` (new-style API, also where Stream mode registers).
pub const DINGTALK_API_BASE_URL: &str = "https://api.dingtalk.com";
/// Default of `dingtalk.oapi_base_url` (old-style API, custom robots, access tokens).
pub const DINGTALK_OAPI_BASE_URL: &str = "https://oapi.dingtalk.com";
/// Default of `graph.base_url`.
pub const GRAPH_BASE_URL: &str = "https://graph.microsoft.com/v1.0";
/// Default of `graph.authority_url` (Microsoft Entra ID).
pub const GRAPH_AUTHORITY_URL: &str = "https://login.microsoftonline.com";

impl Default for DingTalkConfig {
    fn default() -> Self {
        Self {
            app_key: None,
            app_secret: None,
            callback_token: None,
            aes_key: None,
            api_base_url: None,
            oapi_base_url: None,
            robot_app_secret: None,
            stream_enabled: false,
            timestamp_window_secs: 3600,
            backfill_interval_secs: 300,
            qps_per_api: 20,
            monthly_call_budget: 5_000,
        }
    }
}

impl DingTalkConfig {
    /// The secret robot callbacks are signed with: `robot_app_secret`, else `app_secret`.
    pub fn robot_secret(&self) -> Option<&SecretString> {
        self.robot_app_secret.as_ref().or(self.app_secret.as_ref())
    }

    /// Base URL of the new-style API (default [`DINGTALK_API_BASE_URL`]).
    pub fn api_base_url(&self) -> &str {
        self.api_base_url
            .as_deref()
            .unwrap_or(DINGTALK_API_BASE_URL)
    }

    /// Base URL of the old-style API (default [`DINGTALK_OAPI_BASE_URL`]).
    pub fn oapi_base_url(&self) -> &str {
        self.oapi_base_url
            .as_deref()
            .unwrap_or(DINGTALK_OAPI_BASE_URL)
    }

    /// Checks the DingTalk keys belong together and have valid values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        if let Some(token) = &self.callback_token {
            let t = token.expose_secret();
            let len = t.chars().count();
            if !(3..=32).contains(&len) || !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ConfigError::new(
                    "dingtalk.callback_token (DINGBRIDGE_DINGTALK_CALLBACK_TOKEN)",
                    format!("must be 3 to 32 letters or digits ({len} characters given)"),
                ));
            }
        }
        if self.callback_token.is_some() || self.aes_key.is_some() {
            for (set, key) in [
                (
                    self.app_key.is_some(),
                    "dingtalk.app_key (DINGBRIDGE_DINGTALK_APP_KEY)",
                ),
                (
                    self.callback_token.is_some(),
                    "dingtalk.callback_token (DINGBRIDGE_DINGTALK_CALLBACK_TOKEN)",
                ),
                (
                    self.aes_key.is_some(),
                    "dingtalk.aes_key (DINGBRIDGE_DINGTALK_AES_KEY)",
                ),
            ] {
                if !set {
                    return Err(ConfigError::new(
                        key,
                        "HTTP push needs dingtalk.app_key, dingtalk.callback_token and dingtalk.aes_key together",
                    ));
                }
            }
        }
        if self.stream_enabled {
            for (set, key) in [
                (
                    self.app_key.is_some(),
                    "dingtalk.app_key (DINGBRIDGE_DINGTALK_APP_KEY)",
                ),
                (
                    self.app_secret.is_some(),
                    "dingtalk.app_secret (DINGBRIDGE_DINGTALK_APP_SECRET)",
                ),
            ] {
                if !set {
                    return Err(ConfigError::new(
                        key,
                        "required when dingtalk.stream_enabled is true",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Microsoft Graph settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphConfig {
    /// Directory (tenant) id.
    pub tenant_id: Option<String>,
    /// Application (client) id.
    pub client_id: Option<String>,
    /// Client secret, when not using a certificate.
    #[serde(serialize_with = "ser_secret_opt")]
    pub client_secret: Option<SecretString>,
    /// PEM certificate for certificate credentials.
    pub certificate_path: Option<String>,
    /// PEM private key for certificate credentials.
    pub private_key_path: Option<String>,
    /// Graph API base URL.
    pub base_url: Option<String>,
    /// Entra ID authority.
    pub authority_url: Option<String>,
    /// Signature of the certificate assertion: `PS256` (default, header `x5t#S256`) or
    /// `RS256` (header `x5t`).
    pub assertion_alg: AssertionAlg,
    /// PEM (PKCS#8 or PKCS#1) RSA private key that decrypts rich notifications
    /// (`encryptedContent`); without it rich payloads are not decrypted and the changed
    /// item is fetched instead.
    pub notification_private_key_path: Option<String>,
    /// PEM certificate of that key, sent as `encryptionCertificate` when a route asks for
    /// rich notifications (`rich_notifications = true`).
    pub notification_certificate_path: Option<String>,
    /// Lifetime asked for on every subscription create/renew, in seconds (Outlook's
    /// maximum is 4 230 minutes = 253 800 s).
    pub subscription_lifetime_secs: u64,
    /// A subscription is renewed once less than this remains before it expires.
    pub subscription_renew_before_secs: u64,
    /// How often the subscription manager checks (and the lease holder renews).
    pub subscription_check_interval_secs: u64,
    /// How often the To Do lists of `todo` routes towards DingTalk are polled with delta
    /// (app-only To Do change notifications are not documented); 0 turns polling off.
    pub todo_poll_interval_secs: u64,
    /// Accept an `http://` `public_url` for subscriptions (tests and local development
    /// only: Graph itself only ever calls HTTPS notification URLs).
    pub allow_http_public_url: bool,
}

/// Outlook's longest subscription lifetime for messages, events and contacts
/// (<https://learn.microsoft.com/graph/change-notifications-overview#subscription-lifetime>).
pub const MAX_SUBSCRIPTION_LIFETIME_SECS: u64 = 4230 * 60;

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            tenant_id: None,
            client_id: None,
            client_secret: None,
            certificate_path: None,
            private_key_path: None,
            base_url: None,
            authority_url: None,
            assertion_alg: Default::default(),
            notification_private_key_path: None,
            notification_certificate_path: None,
            // A little under the maximum, so clock skew never makes Graph refuse it.
            subscription_lifetime_secs: 4200 * 60,
            subscription_renew_before_secs: 24 * 3600,
            subscription_check_interval_secs: 300,
            todo_poll_interval_secs: 60,
            allow_http_public_url: false,
        }
    }
}

/// The identity part of a configured Graph section.
#[derive(Debug, Clone)]
pub struct GraphIdentity {
    /// Directory (tenant) id or verified domain.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
}

impl GraphConfig {
    /// Base URL of the Graph API (default [`GRAPH_BASE_URL`]).
    pub fn base_url(&self) -> &str {
        self.base_url.as_deref().unwrap_or(GRAPH_BASE_URL)
    }

    /// The Entra ID authority tokens come from (default [`GRAPH_AUTHORITY_URL`]).
    pub fn authority_url(&self) -> &str {
        self.authority_url.as_deref().unwrap_or(GRAPH_AUTHORITY_URL)
    }

    /// `None` when no Graph setting is given at all; otherwise the tenant and client id,
    /// after checking that exactly one credential (a secret, or a certificate and its
    /// key) is configured. Does not read the files (see [`Config::validate`]).
    pub fn credentials(&self) -> Result<Option<GraphIdentity>, ConfigError> {
        let any = self.tenant_id.is_some()
            || self.client_id.is_some()
            || self.client_secret.is_some()
            || self.certificate_path.is_some()
            || self.private_key_path.is_some();
        if !any {
            return Ok(None);
        }
        let required = |key: &str, var: &str, v: &Option<String>| -> Result<String, ConfigError> {
            match v.as_deref().map(str::trim) {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(ConfigError::new(
                    format!("graph.{key} ({var})"),
                    "required when Microsoft Graph is configured",
                )),
            }
        };
        let tenant_id = required("tenant_id", "DINGBRIDGE_GRAPH_TENANT_ID", &self.tenant_id)?;
        if matches!(
            tenant_id.to_ascii_lowercase().as_str(),
            "common" | "organizations" | "consumers"
        ) {
            return Err(ConfigError::new(
                "graph.tenant_id (DINGBRIDGE_GRAPH_TENANT_ID)",
                "app-only tokens need the customer's tenant id or verified domain, not `common`/`organizations`/`consumers`",
            ));
        }
        let client_id = required("client_id", "DINGBRIDGE_GRAPH_CLIENT_ID", &self.client_id)?;
        let secret = self
            .client_secret
            .as_ref()
            .is_some_and(|s| !secrecy::ExposeSecret::expose_secret(s).is_empty());
        match (secret, &self.certificate_path, &self.private_key_path) {
            (true, None, None) => {}
            (false, Some(_), Some(_)) => {}
            (true, _, _) => {
                return Err(ConfigError::new(
                    "graph.client_secret (DINGBRIDGE_GRAPH_CLIENT_SECRET)",
                    "set either a client secret or graph.certificate_path + graph.private_key_path, not both",
                ));
            }
            (false, Some(_), None) => {
                return Err(ConfigError::new(
                    "graph.private_key_path (DINGBRIDGE_GRAPH_PRIVATE_KEY_PATH)",
                    "required with graph.certificate_path: the PEM private key of the certificate",
                ));
            }
            (false, None, Some(_)) => {
                return Err(ConfigError::new(
                    "graph.certificate_path (DINGBRIDGE_GRAPH_CERTIFICATE_PATH)",
                    "required with graph.private_key_path: the PEM certificate uploaded to the app registration",
                ));
            }
            (false, None, None) => {
                return Err(ConfigError::new(
                    "graph.client_secret (DINGBRIDGE_GRAPH_CLIENT_SECRET)",
                    "a credential is required: a client secret, or graph.certificate_path + graph.private_key_path",
                ));
            }
        }
        Ok(Some(GraphIdentity {
            tenant_id,
            client_id,
        }))
    }
}

/// Diagnostic relay: verified posts to `/webhooks/echo` are forwarded to `target_url` by a worker.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EchoConfig {
    /// Where the worker posts each accepted echo event.
    pub target_url: Option<String>,
    /// Shared token callers send in `X-Echo-Token`.
    #[serde(serialize_with = "ser_secret_opt")]
    pub token: Option<SecretString>,
}

fn ser_secret_opt<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    // Only used to discover field types for env overrides; never reveals the value.
    match v {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            store_url: "memory".into(),
            store_cluster: false,
            key_prefix: "dingbridge:".into(),
            public_url: None,
            body_limit_bytes: 1024 * 1024,
            body_timeout_ms: 10_000,
            max_connections: 4_096,
            idempotency_ttl_secs: 24 * 3600,
            dedupe_ttl_secs: 7 * 24 * 3600,
            audit_max_entries: 100_000,
            memory_queue_max: crate::store::memory::DEFAULT_QUEUE_MAX,
            memory_dedupe_max: crate::store::memory::DEFAULT_DEDUPE_MAX,
            shutdown_timeout_secs: 30,
            log_format: "json".into(),
            log_level: "info".into(),
            workers: WorkerConfig::default(),
            dingtalk: DingTalkConfig::default(),
            graph: GraphConfig::default(),
            echo: EchoConfig::default(),
            routes: Vec::new(),
            mailbox_routes: Vec::new(),
            api: ApiConfig::default(),
            hooks: HooksConfig::default(),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_attempts: 8,
            backoff_base_ms: 1_000,
            backoff_max_ms: 10 * 60 * 1_000,
            visibility_timeout_ms: 60_000,
            job_timeout_ms: 45_000,
        }
    }
}

/// A configuration problem, naming the key and why it is wrong.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `{key}`: {reason}")]
pub struct ConfigError {
    /// Dotted TOML key (and its environment variable where one applies).
    pub key: String,
    /// What is wrong and what is expected.
    pub reason: String,
}

impl ConfigError {
    /// An error about the setting `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Reads a deserialisation message: the typed values of [`values`] start theirs with
    /// the setting's name (`api.bootstrap_keys: …`); anything else concerns the file.
    fn from_value_error(message: &str) -> Self {
        let dotted = |k: &str| {
            let name = k.split(" (").next().unwrap_or(k);
            name.contains('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b"._".contains(&b))
        };
        match message.split_once(": ") {
            Some((key, reason)) if dotted(key) => Self::new(key, reason),
            _ => Self::new("config", message),
        }
    }
}

pub use crate::store::StoreKind;

impl Config {
    /// What [`crate::store::open`] needs, from the validated settings.
    pub fn store_settings(&self) -> Result<crate::store::StoreSettings, ConfigError> {
        Ok(crate::store::StoreSettings {
            kind: self.store_kind()?,
            key_prefix: self.key_prefix.clone(),
            audit_max_entries: self.audit_max_entries,
            memory_queue_max: self.memory_queue_max,
            memory_dedupe_max: self.memory_dedupe_max,
        })
    }

    /// Loads the file (if any) and the process environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(path, std::env::vars())
    }

    /// Same as [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError::new("config", format!("cannot read {}: {e}", p.display()))
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::new("config", format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::new("config", e.to_string()))?;
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let passwords = mail::password_variables(&table);
        for (name, value) in &env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            // A mailbox route's password variable may carry the prefix; it is no setting.
            if passwords.contains(name) {
                continue;
            }
            // CONFIG names the file; LOG is the tracing filter read by telemetry.
            if rest == "CONFIG" || rest.is_empty() {
                continue;
            }
            apply_env(
                &mut table,
                &defaults,
                name,
                &rest.to_ascii_lowercase(),
                value,
            )?;
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::from_value_error(e.message()))?;
        for (i, route) in config.mailbox_routes.iter_mut().enumerate() {
            route.resolve_password(i, &env)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that could make the service misbehave later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.store_kind()?;
        if self.key_prefix.is_empty() {
            return Err(ConfigError::new("key_prefix", "must not be empty"));
        }
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::new(
                "body_limit_bytes",
                "must be at least 1024",
            ));
        }
        if !(100..=600_000).contains(&self.body_timeout_ms) {
            return Err(ConfigError::new(
                "body_timeout_ms",
                "must be 100..=600000 (a body that takes longer is a slow-client attack or a broken link)",
            ));
        }
        for (name, value) in [
            ("memory_queue_max", self.memory_queue_max),
            ("memory_dedupe_max", self.memory_dedupe_max),
        ] {
            if !(1..=100_000_000).contains(&value) {
                return Err(ConfigError::new(name, "must be 1..=100000000"));
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(ConfigError::new("max_connections", "must be 1..=1000000"));
        }
        if !matches!(self.log_format.as_str(), "json" | "pretty") {
            return Err(ConfigError::new("log_format", "must be `json` or `pretty`"));
        }
        let w = &self.workers;
        if w.concurrency == 0 || w.concurrency > 1024 {
            return Err(ConfigError::new("workers.concurrency", "must be 1..=1024"));
        }
        if w.max_attempts == 0 {
            return Err(ConfigError::new(
                "workers.max_attempts",
                "must be at least 1",
            ));
        }
        if w.backoff_base_ms == 0 || w.backoff_max_ms < w.backoff_base_ms {
            return Err(ConfigError::new(
                "workers.backoff_max_ms",
                "backoff_base_ms must be > 0 and backoff_max_ms >= backoff_base_ms",
            ));
        }
        if w.job_timeout_ms == 0 || w.job_timeout_ms >= w.visibility_timeout_ms {
            return Err(ConfigError::new(
                "workers.job_timeout_ms",
                "must be > 0 and below workers.visibility_timeout_ms, or a slow job would be run twice",
            ));
        }
        if let Some(url) = &self.public_url {
            check_http_url("public_url", url)?;
        }
        if let Some(url) = &self.echo.target_url {
            check_http_url("echo.target_url", url)?;
            if self.echo.token.is_none() {
                return Err(ConfigError::new(
                    "echo.token",
                    "required when echo.target_url is set (DINGBRIDGE_ECHO_TOKEN)",
                ));
            }
        }
        self.validate_routes()?;
        self.validate_subscriptions()?;
        self.dingtalk.validate()?;
        if self.hooks.timeout_secs == 0 || self.hooks.timeout_secs > 60 {
            return Err(ConfigError::new("hooks.timeout_secs", "must be 1..=60"));
        }
        if self.idempotency_ttl_secs == 0 {
            return Err(ConfigError::new(
                "idempotency_ttl_secs",
                "must be at least 1",
            ));
        }
        for (key, url) in [
            ("dingtalk.api_base_url", &self.dingtalk.api_base_url),
            ("dingtalk.oapi_base_url", &self.dingtalk.oapi_base_url),
            ("graph.base_url", &self.graph.base_url),
            ("graph.authority_url", &self.graph.authority_url),
        ] {
            if let Some(url) = url {
                check_http_url(key, url)?;
            }
        }
        // Exactly one credential, with tenant and client id. The certificate and key files
        // themselves are read by `graph::check_key_files` (see `dingbridge::load_config`):
        // reading PEM is Graph's business, not the configuration's.
        self.graph.credentials()?;
        Ok(())
    }

    /// Subscriptions (Outlook → DingTalk) need a public HTTPS URL Graph can call and a
    /// lifetime within Outlook's limit.
    fn validate_subscriptions(&self) -> Result<(), ConfigError> {
        let g = &self.graph;
        if g.subscription_lifetime_secs == 0
            || g.subscription_lifetime_secs > MAX_SUBSCRIPTION_LIFETIME_SECS
        {
            return Err(ConfigError::new(
                "graph.subscription_lifetime_secs",
                format!(
                    "must be 1..={MAX_SUBSCRIPTION_LIFETIME_SECS} (Outlook allows 4 230 minutes)"
                ),
            ));
        }
        if g.subscription_renew_before_secs == 0
            || g.subscription_renew_before_secs >= g.subscription_lifetime_secs
        {
            return Err(ConfigError::new(
                "graph.subscription_renew_before_secs",
                "must be > 0 and below graph.subscription_lifetime_secs",
            ));
        }
        if g.subscription_check_interval_secs == 0
            || g.subscription_check_interval_secs >= g.subscription_renew_before_secs
        {
            return Err(ConfigError::new(
                "graph.subscription_check_interval_secs",
                "must be > 0 and below graph.subscription_renew_before_secs, or a renewal could be late",
            ));
        }
        if self.routes.iter().any(|r| r.rich_notifications)
            && (g.notification_certificate_path.is_none()
                || g.notification_private_key_path.is_none())
        {
            return Err(ConfigError::new(
                "graph.notification_certificate_path",
                "a route has rich_notifications = true: set graph.notification_certificate_path and graph.notification_private_key_path (the certificate Graph encrypts with and its key)",
            ));
        }
        // To Do is polled, not notified: a todo-only route needs no public URL.
        let wants = self.routes.iter().any(RouteConfig::wants_notifications);
        if wants && g.credentials()?.is_some() {
            let Some(url) = &self.public_url else {
                return Err(ConfigError::new(
                    "public_url (DINGBRIDGE_PUBLIC_URL)",
                    "required for Outlook → DingTalk routes: Graph posts change notifications to {public_url}/webhooks/graph",
                ));
            };
            let https = url::Url::parse(url).is_ok_and(|u| u.scheme() == "https");
            if !https && !g.allow_http_public_url {
                return Err(ConfigError::new(
                    "public_url (DINGBRIDGE_PUBLIC_URL)",
                    "must be https:// (Graph only calls HTTPS notification URLs); graph.allow_http_public_url = true allows http:// for tests",
                ));
            }
        }
        if g.notification_private_key_path.is_none() && g.notification_certificate_path.is_some() {
            return Err(ConfigError::new(
                "graph.notification_certificate_path",
                "needs graph.notification_private_key_path (the key that decrypts what Graph encrypts with it)",
            ));
        }
        Ok(())
    }

    fn validate_routes(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            if r.name.trim().is_empty() || !names.insert(r.name.as_str()) {
                return Err(ConfigError::new(
                    key("name"),
                    "must be non-empty and unique",
                ));
            }
            if r.mailbox.trim().is_empty() || r.mailbox.contains('/') {
                return Err(ConfigError::new(
                    key("mailbox"),
                    "must be a mailbox address or user id",
                ));
            }
            if r.kinds.is_empty() {
                return Err(ConfigError::new(
                    key("kinds"),
                    "name at least one of message, mail, event, todo, contact",
                ));
            }
            let d = &r.dingtalk;
            if d.conversation_id.is_none()
                && d.robot_webhook.is_none()
                && d.user_id.is_none()
                && d.union_id.is_none()
            {
                return Err(ConfigError::new(
                    key("dingtalk"),
                    "set conversation_id, robot_webhook, user_id or union_id",
                ));
            }
            if let Some(url) = &d.robot_webhook {
                check_http_url(&key("dingtalk.robot_webhook"), url.expose_secret())?;
            }
        }
        // `--route NAME` (backup, undo) addresses both kinds: one name space.
        for (i, r) in self.mailbox_routes.iter().enumerate() {
            r.validate(i)?;
            if !names.insert(r.name.as_str()) {
                return Err(ConfigError::new(
                    format!("mailbox_routes[{i}].name"),
                    format!(
                        "`{}` is already the name of another route or mailbox route",
                        r.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The mailbox route called `name`.
    pub fn mailbox_route(&self, name: &str) -> Option<&MailboxRouteConfig> {
        self.mailbox_routes.iter().find(|r| r.name == name)
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::new(
                "listen",
                format!("`{}` is not a host:port socket address", self.listen),
            )
        })
    }

    /// The store backend the URL selects.
    pub fn store_kind(&self) -> Result<StoreKind, ConfigError> {
        let url = self.store_url.trim();
        if url == "memory" {
            return match self.store_cluster {
                false => Ok(StoreKind::Memory),
                true => Err(ConfigError::new(
                    "store_cluster",
                    "needs store_url to name the cluster's nodes (redis://host:port, comma-separated)",
                )),
            };
        }
        let urls: Vec<&str> = url.split(',').map(str::trim).collect();
        for u in &urls {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    "store_url",
                    "must be `memory` or a redis:// / rediss:// URL",
                ));
            }
            url::Url::parse(u).map_err(|e| ConfigError::new("store_url", e.to_string()))?;
        }
        if !self.store_cluster {
            return match urls.as_slice() {
                [one] => Ok(StoreKind::Redis(one.to_string())),
                _ => Err(ConfigError::new(
                    "store_url",
                    "several URLs name the nodes of a Redis Cluster: set store_cluster = true",
                )),
            };
        }
        // Braces in the prefix would change the hash tags that keep the keys of one
        // script in one slot (see store::redis::keys).
        if self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                "key_prefix",
                "must not contain `{` or `}` on a Redis Cluster",
            ));
        }
        Ok(StoreKind::RedisCluster(
            urls.into_iter().map(str::to_string).collect(),
        ))
    }

    /// Retention of idempotency records.
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }

    /// Retention of dedupe marks.
    pub fn dedupe_ttl(&self) -> Duration {
        Duration::from_secs(self.dedupe_ttl_secs)
    }

    /// Deadline of reading one request body.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}

fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(ConfigError::new(key, "must be an http:// or https:// URL")),
        Err(e) => Err(ConfigError::new(key, format!("not a URL: {e}"))),
    }
}

/// Writes one `DINGBRIDGE_*` value into the table, typed like the field it overrides.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    var: &str,
    rest: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let (section, key) = match SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) {
        Some(s) => (Some(*s), &rest[s.len() + 1..]),
        None => (None, rest),
    };
    let template = match section {
        Some(s) => defaults
            .get(s)
            .and_then(|t| t.as_table())
            .and_then(|t| t.get(key)),
        None => defaults.get(key),
    };
    let dotted = match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    };
    let typed = match template {
        Some(toml::Value::Integer(_)) => value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| ConfigError::new(format!("{dotted} ({var})"), "must be an integer"))?,
        Some(toml::Value::Boolean(_)) => value
            .trim()
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|_| {
                ConfigError::new(format!("{dotted} ({var})"), "must be `true` or `false`")
            })?,
        Some(toml::Value::Array(_)) => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(value.to_string()),
    };
    match section {
        Some(s) => {
            let entry = table
                .entry(s.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry.as_table_mut() {
                Some(t) => {
                    t.insert(key.to_string(), typed);
                }
                None => return Err(ConfigError::new(s, "must be a table")),
            }
        }
        None => {
            table.insert(key.to_string(), typed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_use_the_memory_store() {
        let c = Config::load_from(None, env(&[])).expect("defaults load");
        assert_eq!(c.store_kind().expect("kind"), StoreKind::Memory);
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.key_prefix, "dingbridge:");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dingbridge.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\n[workers]\nconcurrency = 2\n",
        )
        .expect("write");
        let c = Config::load_from(
            Some(&path),
            env(&[
                ("DINGBRIDGE_WORKERS_CONCURRENCY", "5"),
                ("DINGBRIDGE_STORE_URL", "redis://127.0.0.1:6379"),
                ("DINGBRIDGE_DINGTALK_APP_SECRET", "s3cret"),
            ]),
        )
        .expect("load");
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.workers.concurrency, 5);
        assert_eq!(
            c.store_kind().expect("kind"),
            StoreKind::Redis("redis://127.0.0.1:6379".into())
        );
        let secret = c.dingtalk.app_secret.as_ref().expect("secret");
        assert_eq!(secret.expose_secret(), "s3cret");
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let c = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_DINGTALK_APP_SECRET", "very-secret-value"),
                ("DINGBRIDGE_GRAPH_TENANT_ID", "contoso.onmicrosoft.com"),
                ("DINGBRIDGE_GRAPH_CLIENT_ID", "client-1"),
                ("DINGBRIDGE_GRAPH_CLIENT_SECRET", "graph-secret-value"),
            ]),
        )
        .expect("load");
        let printed = format!("{c:?}");
        assert!(!printed.contains("very-secret-value"));
        assert!(!printed.contains("graph-secret-value"));
    }

    #[test]
    fn a_cluster_is_named_by_its_nodes_and_the_cluster_flag() {
        let c = Config::load_from(
            None,
            env(&[
                (
                    "DINGBRIDGE_STORE_URL",
                    "redis://10.0.0.1:7000, redis://10.0.0.2:7000",
                ),
                ("DINGBRIDGE_STORE_CLUSTER", "true"),
            ]),
        )
        .expect("load");
        assert_eq!(
            c.store_kind().expect("kind"),
            StoreKind::RedisCluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ])
        );
        let one_seed = env(&[
            ("DINGBRIDGE_STORE_URL", "rediss://cluster.example:6379"),
            ("DINGBRIDGE_STORE_CLUSTER", "1"),
        ]);
        let err = Config::load_from(None, one_seed).expect_err("not a boolean");
        assert!(err.key.contains("store_cluster"), "{err}");
    }

    #[test]
    fn cluster_settings_that_cannot_work_are_refused_at_start_up() {
        let several = env(&[(
            "DINGBRIDGE_STORE_URL",
            "redis://10.0.0.1:7000,redis://10.0.0.2:7000",
        )]);
        let err = Config::load_from(None, several).expect_err("several urls need the flag");
        assert_eq!(err.key, "store_url");
        assert!(err.reason.contains("store_cluster = true"), "{err}");
        let memory = env(&[("DINGBRIDGE_STORE_CLUSTER", "true")]);
        let err = Config::load_from(None, memory).expect_err("a cluster needs nodes");
        assert_eq!(err.key, "store_cluster");
        let braces = env(&[
            ("DINGBRIDGE_STORE_URL", "redis://10.0.0.1:7000"),
            ("DINGBRIDGE_STORE_CLUSTER", "true"),
            ("DINGBRIDGE_KEY_PREFIX", "{tenant}:"),
        ]);
        let err = Config::load_from(None, braces).expect_err("braces change hash tags");
        assert_eq!(err.key, "key_prefix");
        let bad_node = env(&[
            ("DINGBRIDGE_STORE_URL", "redis://10.0.0.1:7000,http://x"),
            ("DINGBRIDGE_STORE_CLUSTER", "true"),
        ]);
        let err = Config::load_from(None, bad_node).expect_err("every node is a redis url");
        assert_eq!(err.key, "store_url");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = Config::load_from(None, env(&[("DINGBRIDGE_WORKERS_CONCURRENCY", "many")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("workers.concurrency"), "{err}");
        let err = Config::load_from(None, env(&[("DINGBRIDGE_STORE_URL", "postgres://x")]))
            .expect_err("must fail");
        assert_eq!(err.key, "store_url");
        let err = Config::load_from(None, env(&[("DINGBRIDGE_LISTEN", "nowhere")]))
            .expect_err("must fail");
        assert_eq!(err.key, "listen");
    }

    #[test]
    fn a_42_character_aes_key_is_refused_saying_43_are_needed() {
        let err = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_DINGTALK_APP_KEY", "dingxxxxxxxxxxxx"),
                ("DINGBRIDGE_DINGTALK_CALLBACK_TOKEN", "tokenABC123"),
                (
                    "DINGBRIDGE_DINGTALK_AES_KEY",
                    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF",
                ),
            ]),
        )
        .expect_err("42 chars must fail");
        assert!(err.key.contains("dingtalk.aes_key"), "{err}");
        assert!(err.reason.contains("43"), "{err}");
        assert!(
            !err.to_string().contains("abcdefghij"),
            "never echo the key: {err}"
        );
    }

    #[test]
    fn push_keys_must_come_together_and_the_missing_one_is_named() {
        let err = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_DINGTALK_APP_KEY", "dingxxxxxxxxxxxx"),
                (
                    "DINGBRIDGE_DINGTALK_AES_KEY",
                    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                ),
            ]),
        )
        .expect_err("token missing");
        assert!(err.key.contains("dingtalk.callback_token"), "{err}");
        let err = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_DINGTALK_CALLBACK_TOKEN", "tokenABC123"),
                (
                    "DINGBRIDGE_DINGTALK_AES_KEY",
                    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                ),
            ]),
        )
        .expect_err("app key missing");
        assert!(err.key.contains("dingtalk.app_key"), "{err}");
        let ok = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_DINGTALK_APP_KEY", "dingxxxxxxxxxxxx"),
                ("DINGBRIDGE_DINGTALK_CALLBACK_TOKEN", "tokenABC123"),
                (
                    "DINGBRIDGE_DINGTALK_AES_KEY",
                    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                ),
                ("DINGBRIDGE_DINGTALK_TIMESTAMP_WINDOW_SECS", "60"),
            ]),
        )
        .expect("complete push config");
        assert!(crate::dingtalk::crypto::CallbackCrypto::from_config(&ok.dingtalk).is_some());
        assert_eq!(ok.dingtalk.timestamp_window_secs, 60);
        assert_eq!(ok.dingtalk.backfill_interval_secs, 300);
    }

    #[test]
    fn callback_token_must_be_3_to_32_letters_or_digits() {
        for bad in ["ab", "has space", "x".repeat(33).as_str()] {
            let err = Config::load_from(
                None,
                env(&[
                    ("DINGBRIDGE_DINGTALK_APP_KEY", "k"),
                    ("DINGBRIDGE_DINGTALK_CALLBACK_TOKEN", bad),
                    (
                        "DINGBRIDGE_DINGTALK_AES_KEY",
                        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                    ),
                ]),
            )
            .expect_err("bad token");
            assert!(err.key.contains("callback_token"), "{err}");
        }
    }

    #[test]
    fn stream_mode_needs_app_key_and_secret() {
        let err = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_DINGTALK_STREAM_ENABLED", "true"),
                ("DINGBRIDGE_DINGTALK_APP_KEY", "k"),
            ]),
        )
        .expect_err("secret missing");
        assert!(err.key.contains("dingtalk.app_secret"), "{err}");
        let c = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_DINGTALK_STREAM_ENABLED", "true"),
                ("DINGBRIDGE_DINGTALK_APP_KEY", "k"),
                ("DINGBRIDGE_DINGTALK_APP_SECRET", "s"),
            ]),
        )
        .expect("stream config");
        assert!(c.dingtalk.stream_enabled);
        assert!(c.dingtalk.robot_secret().is_some());
    }

    #[test]
    fn list_variables_are_split_on_commas() {
        let c = Config::load_from(
            None,
            env(&[
                (
                    "DINGBRIDGE_HOOKS_ALLOW_PRIVATE_TARGETS",
                    "127.0.0.1, 10.0.0.0/8",
                ),
                (
                    "DINGBRIDGE_API_MAILBOXES",
                    "a@example.com|Sales,b@example.com",
                ),
            ]),
        )
        .expect("load");
        let allowed: Vec<String> = c
            .hooks
            .allow_private_targets
            .iter()
            .map(|n| n.0.to_string())
            .collect();
        assert_eq!(allowed, vec!["127.0.0.1/32", "10.0.0.0/8"]);
        assert_eq!(c.api.mailboxes.len(), 2);
        let err = Config::load_from(
            None,
            env(&[("DINGBRIDGE_HOOKS_ALLOW_PRIVATE_TARGETS", "not-an-ip")]),
        )
        .expect_err("must fail");
        assert_eq!(err.key, "hooks.allow_private_targets");
    }

    #[test]
    fn unknown_variables_are_refused() {
        let err = Config::load_from(None, env(&[("DINGBRIDGE_LISTNE", "127.0.0.1:1")]))
            .expect_err("typo must fail");
        assert!(err.reason.contains("listne"), "{err}");
    }

    #[test]
    fn routes_load_from_the_file_and_are_validated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"
[[routes]]
name = "customs"
mailbox = "ops@contoso.com"
kinds = ["message", "event", "todo"]
direction = "both"
[routes.dingtalk]
conversation_id = "cidABC"
union_id = "union-1"
"#,
        )
        .expect("write");
        let c = Config::load_from(Some(&path), env(&[])).expect("load");
        assert_eq!(c.routes[0].folder, "DingTalk");
        assert!(c.routes[0].direction.to_dingtalk());
        std::fs::write(
            &path,
            "[[routes]]\nname = \"x\"\nmailbox = \"a@b.c\"\nkinds = []\n[routes.dingtalk]\nuser_id = \"u\"\n",
        )
        .expect("write");
        let err = Config::load_from(Some(&path), env(&[])).expect_err("no kinds");
        assert_eq!(err.key, "routes[0].kinds");
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/dingbridge.example.toml");
        let c = Config::load_from(
            Some(&path),
            env(&[
                ("DINGBRIDGE_GRAPH_CLIENT_SECRET", "s"),
                ("DINGBRIDGE_DINGTALK_APP_SECRET", "s"),
                ("DINGTALK_MAIL_PASSWORD", "s"),
            ]),
        )
        .expect("deploy/dingbridge.example.toml loads");
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.mailbox_routes.len(), 1);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let err = Config::load_from(Some(&path), env(&[])).expect_err("must fail");
        assert!(err.reason.contains("lisen"), "{err}");
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn outlook_to_dingtalk_routes_need_an_https_public_url_and_a_valid_lifetime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let write = |top: &str, graph: &str| {
            std::fs::write(
                &path,
                format!(
                    "{top}\n[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n{graph}\n[[routes]]\nname = \"r\"\nmailbox = \"a@b.c\"\nkinds = [\"mail\"]\ndirection = \"to_dingtalk\"\n[routes.dingtalk]\nconversation_id = \"cid\"\n"
                ),
            )
            .expect("write");
        };
        write("", "");
        let err = Config::load_from(Some(&path), env(&[])).expect_err("no public_url");
        assert!(err.key.starts_with("public_url"), "{err}");
        write("public_url = \"http://bridge.example\"", "");
        let err = Config::load_from(Some(&path), env(&[])).expect_err("http");
        assert!(err.reason.contains("https"), "{err}");
        write(
            "public_url = \"http://127.0.0.1:9\"",
            "allow_http_public_url = true",
        );
        Config::load_from(Some(&path), env(&[])).expect("http allowed for tests");
        write("public_url = \"https://bridge.example\"", "");
        let c = Config::load_from(Some(&path), env(&[])).expect("https");
        assert_eq!(c.graph.subscription_lifetime_secs, 4200 * 60);
        write(
            "public_url = \"https://bridge.example\"",
            "subscription_lifetime_secs = 253801",
        );
        let err = Config::load_from(Some(&path), env(&[])).expect_err("too long");
        assert_eq!(err.key, "graph.subscription_lifetime_secs");
        write(
            "public_url = \"https://bridge.example\"",
            "subscription_lifetime_secs = 600\nsubscription_renew_before_secs = 600",
        );
        let err = Config::load_from(Some(&path), env(&[])).expect_err("renew too late");
        assert_eq!(err.key, "graph.subscription_renew_before_secs");
    }

    #[test]
    fn rich_routes_need_a_certificate_that_holds_the_notification_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let write = |graph: &str, route: &str| {
            std::fs::write(
                &path,
                format!(
                    "public_url = \"https://bridge.example\"\n[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n{graph}\n[[routes]]\nname = \"r\"\nmailbox = \"a@b.c\"\nkinds = [\"mail\"]\ndirection = \"to_dingtalk\"\n{route}\n[routes.dingtalk]\nconversation_id = \"cid\"\n"
                ),
            )
            .expect("write");
        };
        write("", "rich_notifications = true");
        // As at start-up: the settings, then the files they name.
        let load = || {
            Config::load_from(Some(&path), env(&[]))
                .and_then(|c| crate::graph::check_key_files(&c).map(|()| c))
        };
        let err = load().expect_err("no certificate");
        assert_eq!(err.key, "graph.notification_certificate_path");
        let (key, cert, other) = (
            fixture("key.pem"),
            fixture("cert.pem"),
            fixture("other-key.pem"),
        );
        write(
            &format!(
                "notification_private_key_path = \"{other}\"\nnotification_certificate_path = \"{cert}\""
            ),
            "rich_notifications = true",
        );
        let err = load().expect_err("another key");
        assert_eq!(err.key, "graph.notification_certificate_path");
        write(
            &format!(
                "notification_private_key_path = \"{key}\"\nnotification_certificate_path = \"{cert}\""
            ),
            "rich_notifications = true",
        );
        let c = load().expect("matching pair");
        assert!(c.routes[0].rich_notifications);
        let wanted = crate::graph::subscriptions::wanted(&c.routes);
        assert!(wanted[0].rich);
    }

    #[test]
    fn graph_is_optional_and_a_secret_configures_it() {
        let c = Config::load_from(None, env(&[])).expect("load");
        assert!(c.graph.credentials().expect("ok").is_none());
        let c = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_GRAPH_TENANT_ID", "contoso.onmicrosoft.com"),
                ("DINGBRIDGE_GRAPH_CLIENT_ID", "client-1"),
                ("DINGBRIDGE_GRAPH_CLIENT_SECRET", "s"),
            ]),
        )
        .expect("load");
        let id = c.graph.credentials().expect("ok").expect("configured");
        assert_eq!(id.tenant_id, "contoso.onmicrosoft.com");
        assert_eq!(c.graph.assertion_alg, crate::graph::AssertionAlg::Ps256);
    }

    #[test]
    fn graph_missing_tenant_or_client_id_names_the_key() {
        let err = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_GRAPH_CLIENT_ID", "client-1"),
                ("DINGBRIDGE_GRAPH_CLIENT_SECRET", "s"),
            ]),
        )
        .expect_err("no tenant");
        assert!(err.key.contains("graph.tenant_id"), "{err}");
        assert!(err.key.contains("DINGBRIDGE_GRAPH_TENANT_ID"), "{err}");
        let err = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_GRAPH_TENANT_ID", "t"),
                ("DINGBRIDGE_GRAPH_CLIENT_SECRET", "s"),
            ]),
        )
        .expect_err("no client");
        assert!(err.key.contains("graph.client_id"), "{err}");
        let err = Config::load_from(
            None,
            env(&[
                ("DINGBRIDGE_GRAPH_TENANT_ID", "common"),
                ("DINGBRIDGE_GRAPH_CLIENT_ID", "c"),
                ("DINGBRIDGE_GRAPH_CLIENT_SECRET", "s"),
            ]),
        )
        .expect_err("common tenant");
        assert!(err.key.contains("graph.tenant_id"), "{err}");
    }

    #[test]
    fn graph_needs_a_secret_xor_a_certificate_pair() {
        let base = [
            ("DINGBRIDGE_GRAPH_TENANT_ID", "t"),
            ("DINGBRIDGE_GRAPH_CLIENT_ID", "c"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            Config::load_from(None, env(&all))
        };
        let cert = fixture("cert.pem");
        let key = fixture("key.pem");
        let err = with(&[]).expect_err("no credential");
        assert!(err.key.contains("graph.client_secret"), "{err}");
        let err = with(&[
            ("DINGBRIDGE_GRAPH_CLIENT_SECRET", "s"),
            ("DINGBRIDGE_GRAPH_CERTIFICATE_PATH", &cert),
            ("DINGBRIDGE_GRAPH_PRIVATE_KEY_PATH", &key),
        ])
        .expect_err("both");
        assert!(err.reason.contains("not both"), "{err}");
        let err = with(&[("DINGBRIDGE_GRAPH_CERTIFICATE_PATH", &cert)]).expect_err("no key");
        assert!(err.key.contains("graph.private_key_path"), "{err}");
        let err = with(&[("DINGBRIDGE_GRAPH_PRIVATE_KEY_PATH", &key)]).expect_err("no cert");
        assert!(err.key.contains("graph.certificate_path"), "{err}");
        let c = with(&[
            ("DINGBRIDGE_GRAPH_CERTIFICATE_PATH", &cert),
            ("DINGBRIDGE_GRAPH_PRIVATE_KEY_PATH", &key),
            ("DINGBRIDGE_GRAPH_ASSERTION_ALG", "RS256"),
        ])
        .expect("certificate pair");
        assert_eq!(c.graph.assertion_alg, crate::graph::AssertionAlg::Rs256);
    }

    #[test]
    fn graph_certificate_files_are_checked_at_start_up() {
        let base = [
            ("DINGBRIDGE_GRAPH_TENANT_ID", "t"),
            ("DINGBRIDGE_GRAPH_CLIENT_ID", "c"),
        ];
        let with = |cert: &str, key: &str| {
            let mut all = base.to_vec();
            all.push(("DINGBRIDGE_GRAPH_CERTIFICATE_PATH", cert));
            all.push(("DINGBRIDGE_GRAPH_PRIVATE_KEY_PATH", key));
            Config::load_from(None, env(&all))
                .and_then(|c| crate::graph::check_key_files(&c).map(|()| c))
        };
        let err = with("/nonexistent/cert.pem", &fixture("key.pem")).expect_err("unreadable");
        assert!(err.reason.contains("cannot read certificate file"), "{err}");
        let err = with(&fixture("key.pem"), &fixture("key.pem")).expect_err("not a cert");
        assert!(err.reason.contains("CERTIFICATE"), "{err}");
        let err = with(&fixture("cert.pem"), &fixture("other-key.pem")).expect_err("mismatch");
        assert!(err.reason.contains("does not belong"), "{err}");
        let err = Config::load_from(None, env(&[("DINGBRIDGE_GRAPH_ASSERTION_ALG", "HS256")]))
            .expect_err("bad alg");
        assert!(
            err.reason.contains("HS256") || err.reason.contains("variant"),
            "{err}"
        );
    }
}
