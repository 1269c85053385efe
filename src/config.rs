//! Typed configuration: an optional TOML file overridden by `DINGBRIDGE_*` variables,
//! validated once at start-up so that handlers only ever see valid settings.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Prefix of every environment variable the service reads.
pub const ENV_PREFIX: &str = "DINGBRIDGE_";

/// Sections of the TOML file that `DINGBRIDGE_<SECTION>_<KEY>` variables address.
const SECTIONS: &[&str] = &["dingtalk", "graph", "workers", "echo"];

/// Whole service configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds to.
    pub listen: String,
    /// `memory` or a `redis://` / `rediss://` URL.
    pub store_url: String,
    /// Prefix for every key the store writes.
    pub key_prefix: String,
    /// Public base URL through which Graph and DingTalk reach this service.
    pub public_url: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// How long idempotency records live, in seconds.
    pub idempotency_ttl_secs: u64,
    /// How long inbound-event dedupe marks live, in seconds.
    pub dedupe_ttl_secs: u64,
    /// Maximum number of entries kept in the audit stream.
    pub audit_max_entries: u64,
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
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
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
    /// The 43-character EncodingAESKey.
    #[serde(serialize_with = "ser_secret_opt")]
    pub aes_key: Option<SecretString>,
    /// Base URL of the new-style API.
    pub api_base_url: Option<String>,
    /// Base URL of the old-style API.
    pub oapi_base_url: Option<String>,
}

/// Microsoft Graph settings.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
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
    pub assertion_alg: crate::graph::AssertionAlg,
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
            key_prefix: "dingbridge:".into(),
            public_url: None,
            body_limit_bytes: 1024 * 1024,
            idempotency_ttl_secs: 24 * 3600,
            dedupe_ttl_secs: 7 * 24 * 3600,
            audit_max_entries: 100_000,
            shutdown_timeout_secs: 30,
            log_format: "json".into(),
            log_level: "info".into(),
            workers: WorkerConfig::default(),
            dingtalk: DingTalkConfig::default(),
            graph: GraphConfig::default(),
            echo: EchoConfig::default(),
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
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Which store backend the URL selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In-process store for a single instance.
    Memory,
    /// Redis at this URL.
    Redis(String),
}

impl Config {
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
        for (name, value) in &env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
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
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::new("config", e.message().to_string()))?;
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
        if self.graph.credentials()?.is_some()
            && let (Some(cert), Some(key)) =
                (&self.graph.certificate_path, &self.graph.private_key_path)
        {
            // Readable, PEM, RSA, and the key belongs to the certificate: fail at start-up,
            // not at the first relay.
            crate::graph::auth::CertificateCredential::load(cert, key, self.graph.assertion_alg)
                .map_err(|reason| {
                    ConfigError::new(
                        "graph.certificate_path (DINGBRIDGE_GRAPH_CERTIFICATE_PATH)",
                        reason,
                    )
                })?;
        }
        Ok(())
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
            return Ok(StoreKind::Memory);
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            url::Url::parse(url).map_err(|e| ConfigError::new("store_url", e.to_string()))?;
            return Ok(StoreKind::Redis(url.to_string()));
        }
        Err(ConfigError::new(
            "store_url",
            "must be `memory` or a redis:// / rediss:// URL",
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
    use secrecy::ExposeSecret;

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
    fn unknown_variables_are_refused() {
        let err = Config::load_from(None, env(&[("DINGBRIDGE_LISTNE", "127.0.0.1:1")]))
            .expect_err("typo must fail");
        assert!(err.reason.contains("listne"), "{err}");
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
