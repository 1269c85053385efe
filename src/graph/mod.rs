//! Microsoft Graph: app-only authentication ([`auth`]) and a careful client for the
//! Outlook resources the bridge writes ([`client`]): per-mailbox concurrency limit,
//! `Retry-After` honoured, immutable ids, `client-request-id` on every request.
//!
//! Facts and limits come from Graph's documentation on Microsoft Learn, cited where they
//! are used; request bodies follow Graph's schemas (camelCase names, lower-case enums), a
//! subset of which ships as `tests/oracles/graph-openapi-subset.yaml` for the tests' Graph
//! fake to check every body against.

pub mod auth;
pub mod client;
pub mod inbound;
pub mod jwks;
pub mod notifications;
pub mod subscriptions;

use std::time::Duration;

use crate::worker::JobFailure;

pub use auth::{AssertionAlg, AuthError, AuthErrorKind, Credential, TokenProvider};
pub use client::{
    Collection, Created, DeltaItem, DeltaMessage, DeltaPage, FoundMessage, GraphClient, ImportPlan,
    Importance, Imported, ImportedAs, LinkedResource, MailAddress, MailAttachment, MailBody,
    Precheck, ReceivedMail, RetryPolicy, event_transaction_id, plan_import,
};

/// Reads the certificate and key files the Graph settings name — readable, PEM, RSA, and
/// each key belongs to its certificate — so a bad file fails at start-up, not at the
/// first relay.
pub fn check_key_files(config: &crate::config::Config) -> Result<(), crate::config::ConfigError> {
    use crate::config::ConfigError;
    let g = &config.graph;
    if g.credentials()?.is_some()
        && let (Some(cert), Some(key)) = (&g.certificate_path, &g.private_key_path)
    {
        auth::CertificateCredential::load(cert, key, g.assertion_alg).map_err(|reason| {
            ConfigError::new(
                "graph.certificate_path (DINGBRIDGE_GRAPH_CERTIFICATE_PATH)",
                reason,
            )
        })?;
    }
    if let Some(p) = &g.notification_private_key_path {
        let key = notifications::load_private_key(p)
            .map_err(|reason| ConfigError::new("graph.notification_private_key_path", reason))?;
        if let Some(c) = &g.notification_certificate_path {
            notifications::load_certificate(c, &key).map_err(|reason| {
                ConfigError::new("graph.notification_certificate_path", reason)
            })?;
        }
    }
    Ok(())
}

/// The scope of an app-only token for Graph: every admin-consented application permission.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Id of the single-value extended property that marks items the bridge wrote; its
/// value is the DingTalk source id (see [`origin_marker`]). Never change it: items
/// already written carry it and echo detection looks for it.
pub const ORIGIN_PROPERTY_ID: &str =
    "String {6c1f3e0a-8d2b-4b7e-9a51-2f4d8c9e7b13} Name DingBridgeOrigin";

/// The `singleValueExtendedProperties` entry marking an item as written by the bridge
/// for `source_id` (put it in the create body; find it with
/// [`GraphClient::find_by_origin`]).
pub fn origin_marker(source_id: &str) -> serde_json::Value {
    serde_json::json!({ "id": ORIGIN_PROPERTY_ID, "value": source_id })
}

/// A failed Graph call.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// No access token could be obtained.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Graph answered with an error status.
    #[error("{}", api_message(*status, code, message, request_id.as_deref()))]
    Api {
        /// HTTP status.
        status: u16,
        /// Graph's `error.code` (e.g. `ErrorItemNotFound`, `TooManyRequests`).
        code: String,
        /// Graph's `error.message` (not stable; never branch on it).
        message: String,
        /// Graph's `request-id` (response header or `innerError`), for Microsoft support.
        request_id: Option<String>,
        /// The `client-request-id` this client sent.
        client_request_id: String,
        /// How long Graph asked to wait (429/503/504), or the back-off this client chose
        /// when it gave up retrying.
        retry_after: Option<Duration>,
    },
    /// Graph could not be reached, or the connection broke.
    #[error("cannot reach Microsoft Graph: {0}")]
    Transport(String),
    /// An attachment larger than Graph accepts.
    #[error(
        "attachment `{name}` is {size} bytes; Outlook accepts at most {max} bytes (150 MB) per attachment"
    )]
    AttachmentTooLarge {
        /// File name.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Graph answered success with a body this client cannot use.
    #[error("unexpected answer from Microsoft Graph: {0}")]
    Unexpected(String),
}

fn api_message(status: u16, code: &str, message: &str, request_id: Option<&str>) -> String {
    let mut s = format!("Microsoft Graph answered {status} {code}");
    if !message.is_empty() {
        s.push_str(": ");
        s.push_str(message);
    }
    if let Some(id) = request_id {
        s.push_str(&format!(" (request-id {id})"));
    }
    s
}

impl GraphError {
    /// HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Graph's error code of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The wait Graph asked for (or this client chose) before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GraphError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True for a 404 (the item or mailbox does not exist).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when a write may have been applied although it failed: a gateway's 502/503/504,
    /// or a connection that broke (this client cannot tell before from after sending).
    /// Repeat such a create only after looking the item up.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            GraphError::Api { status, .. } => crate::upstream::may_have_been_applied(*status),
            GraphError::Transport(_) => true,
            _ => false,
        }
    }

    /// True when trying again later can succeed (throttling, outages, network, token).
    pub fn is_transient(&self) -> bool {
        match self {
            GraphError::Auth(e) => e.is_transient(),
            // Besides the shared retryable statuses, Graph's 401 (an expired token, fetched
            // anew), 409/412 (a concurrent change) and 423 (a locked item) pass later.
            GraphError::Api { status, .. } => {
                crate::upstream::is_retryable(*status) || matches!(status, 401 | 409 | 412 | 423)
            }
            GraphError::Transport(_) => true,
            GraphError::AttachmentTooLarge { .. } | GraphError::Unexpected(_) => false,
        }
    }
}

/// How long a job waits when Graph refuses the bridge's credentials: long enough not to
/// hammer Entra ID, short enough that jobs survive until someone fixes the configuration.
const AUTH_CONFIG_RETRY: Duration = Duration::from_secs(5 * 60);

impl From<GraphError> for JobFailure {
    fn from(e: GraphError) -> Self {
        let message = e.to_string();
        match &e {
            // A credential problem hits every job alike; keep them queued (not dead-lettered
            // within minutes) while the configuration is fixed.
            GraphError::Auth(a) if !a.is_transient() => {
                JobFailure::transient(message).retry_after(AUTH_CONFIG_RETRY)
            }
            _ if e.is_transient() => {
                let failure = JobFailure::transient(message);
                match e.retry_after() {
                    Some(after) => failure.retry_after(after),
                    None => failure,
                }
            }
            _ => JobFailure::permanent(message),
        }
    }
}

impl From<GraphError> for crate::error::ApiError {
    /// Graph throttling → `rate_limited` with a whole-second `Retry-After`; Graph outages
    /// and timeouts → `upstream_unavailable`; anything else → `upstream_error`. Graph's
    /// status, `code` and `request-id` stay in `details` for support.
    fn from(e: GraphError) -> Self {
        use crate::{
            error::{ApiError, ErrorCode},
            retry_after::whole_seconds,
        };
        let message = e.to_string();
        match &e {
            GraphError::Api {
                status,
                code,
                request_id,
                client_request_id,
                retry_after,
                ..
            } => {
                let (error_code, default_wait) = match status {
                    429 => (ErrorCode::RateLimited, Some(5)),
                    503 | 504 => (ErrorCode::UpstreamUnavailable, Some(5)),
                    _ => (ErrorCode::UpstreamError, None),
                };
                let mut api = ApiError::new(error_code, message).with_details(serde_json::json!({
                    "upstream": "graph",
                    "status": status,
                    "graph_code": code,
                    "request_id": request_id,
                    "client_request_id": client_request_id,
                }));
                if let Some(secs) = retry_after.map(whole_seconds).or(default_wait) {
                    api = api.with_retry_after(secs);
                }
                api
            }
            GraphError::Auth(a) => {
                ApiError::new(ErrorCode::UpstreamError, message).with_details(serde_json::json!({
                    "upstream": "entra_id",
                    "kind": a.kind.as_str(),
                    "aadsts": a.aadsts,
                }))
            }
            GraphError::Transport(_) => {
                ApiError::new(ErrorCode::UpstreamUnavailable, message).with_retry_after(5)
            }
            GraphError::AttachmentTooLarge { .. } => {
                ApiError::new(ErrorCode::PayloadTooLarge, message)
            }
            GraphError::Unexpected(_) => ApiError::new(ErrorCode::UpstreamError, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_marker_is_a_named_string_property() {
        let m = origin_marker("dt:msg:42");
        assert_eq!(m["value"], "dt:msg:42");
        let id = m["id"].as_str().expect("id");
        assert!(id.starts_with("String {") && id.ends_with("} Name DingBridgeOrigin"));
    }
}
