//! Actions (`POST /v1/actions/{action}`): a registry of named handlers, each with typed
//! input parsed from flat JSON ([`Action::validate`], field-level messages) and a `run`.
//! Creates answer one JSON object, searches an array. Outlook and DingTalk API work is
//! delegated to an [`ActionBackend`] set by the application once the Graph and DingTalk
//! clients exist; without one the action answers 404 `not_configured` naming the settings
//! to add. `dingtalk.send_message` to a custom robot and `dingtalk.send_mail` (a mailbox
//! route's SMTP submission) need no backend and are built in.
//!
//! Inside, the arrows run one way: `registry` ([`Actions`]) lists the actions of
//! [`catalog`], which read their [`call`] inputs with [`input`]; the actions, the
//! custom-robot sender ([`robot`]), the DingTalk Mail sender ([`mail`]) and the backends
//! ([`outlook`], [`dingtalk`]) use this file's contract ([`Action`], [`ActionContext`],
//! [`ActionBackend`]) and nothing above it.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::{
    apikeys::Principal,
    config::Config,
    error::{ApiError, ErrorCode},
    store::SharedStore,
};

pub mod call;
pub mod catalog;
pub mod dingtalk;
pub mod idempotency;
pub mod input;
pub mod mail;
pub mod outlook;
mod registry;
pub mod robot;

use call::BackendCall;
pub use input::{FieldErrors, Fields};
pub use registry::Actions;

/// What an action answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Creates or changes something; answers one object.
    Create,
    /// Finds things; answers an array, best match first.
    Search,
}

/// Which remote system an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Microsoft Graph (Outlook mail, calendar, contacts, To Do).
    Outlook,
    /// DingTalk open platform.
    DingTalk,
}

impl Family {
    /// Settings that turn the backend on (named in `not_configured` errors).
    pub fn config_keys(self) -> &'static str {
        match self {
            Family::Outlook => {
                "graph.tenant_id, graph.client_id and graph.client_secret (DINGBRIDGE_GRAPH_TENANT_ID, DINGBRIDGE_GRAPH_CLIENT_ID, DINGBRIDGE_GRAPH_CLIENT_SECRET)"
            }
            Family::DingTalk => {
                "dingtalk.app_key and dingtalk.app_secret (DINGBRIDGE_DINGTALK_APP_KEY, DINGBRIDGE_DINGTALK_APP_SECRET)"
            }
        }
    }
}

/// Everything an action run may use.
pub struct ActionContext<'a> {
    /// Validated configuration.
    pub config: &'a Config,
    /// Outbound HTTP client (no redirects).
    pub http: &'a reqwest::Client,
    /// The API key calling.
    pub caller: &'a Principal,
    /// The request's `Idempotency-Key`, when given (pass it on as the upstream
    /// idempotency handle: Graph `transactionId`, DingTalk `msgUuid`, …).
    pub idempotency_key: Option<&'a str>,
    /// The store (shared budgets such as a custom robot's 20 messages a minute).
    pub store: &'a SharedStore,
    backends: &'a Backends,
}

impl ActionContext<'_> {
    /// The backend of `family`, or 404 `not_configured`.
    pub fn backend(&self, family: Family, action: &str) -> Result<&dyn ActionBackend, ApiError> {
        let b = match family {
            Family::Outlook => self.backends.outlook.as_deref(),
            Family::DingTalk => self.backends.dingtalk.as_deref(),
        };
        b.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotConfigured,
                format!(
                    "`{action}` needs the {} connection, which is not configured on this deployment; set {}",
                    match family {
                        Family::Outlook => "Microsoft Graph",
                        Family::DingTalk => "DingTalk app",
                    },
                    family.config_keys()
                ),
            )
        })
    }

    /// The mailbox to act on: the given one if configured (least privilege: only the
    /// mailboxes of `api.mailboxes` and of the sync routes are ever touched; any other is
    /// 403 `forbidden` naming the field), else the only configured one.
    pub fn mailbox(&self, given: Option<&str>) -> Result<String, ApiError> {
        let configured = configured_mailboxes(self.config);
        match given {
            Some(m) => match configured.iter().find(|c| c.eq_ignore_ascii_case(m)) {
                Some(c) => Ok(c.clone()),
                None => {
                    let why = format!(
                        "`{m}` is not a configured mailbox (api.mailboxes or a route's mailbox); choose one from GET /v1/options/mailboxes"
                    );
                    Err(
                        ApiError::new(ErrorCode::Forbidden, format!("mailbox: {why}"))
                            .with_details(serde_json::json!({ "fields": { "mailbox": why } })),
                    )
                }
            },
            None if configured.len() == 1 => Ok(configured[0].clone()),
            None => Err(ApiError::invalid_field(
                "mailbox",
                "is required; choose one from GET /v1/options/mailboxes",
            )),
        }
    }

    /// The DingTalk group to post to: only configured conversations (least privilege,
    /// like mailboxes); any other is 403 `forbidden` naming the field.
    pub fn conversation(&self, given: Option<&str>) -> Result<String, ApiError> {
        let configured = configured_conversations(self.config);
        match given.map(str::trim).filter(|g| !g.is_empty()) {
            Some(c) if configured.iter().any(|k| k == c) => Ok(c.to_string()),
            Some(c) => {
                let why = format!(
                    "`{c}` is not a configured conversation (api.dingtalk_conversations or a route's conversation_id); choose one from GET /v1/options/dingtalk-conversations"
                );
                Err(
                    ApiError::new(ErrorCode::Forbidden, format!("open_conversation_id: {why}"))
                        .with_details(
                            serde_json::json!({ "fields": { "open_conversation_id": why } }),
                        ),
                )
            }
            None if configured.len() == 1 => Ok(configured[0].clone()),
            None => Err(ApiError::invalid_field(
                "open_conversation_id",
                "is required; choose one from GET /v1/options/dingtalk-conversations",
            )),
        }
    }
}

/// Every DingTalk group actions may post to: the ids of `api.dingtalk_conversations`,
/// then the sync routes' conversations.
pub fn configured_conversations(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let ids = config
        .api
        .dingtalk_conversations
        .iter()
        .map(|c| c.id.clone())
        .chain(
            config
                .routes
                .iter()
                .filter_map(|r| r.dingtalk.conversation_id.clone()),
        );
    for id in ids {
        if !id.is_empty() && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Every mailbox actions may touch: the ids of `api.mailboxes`, then the sync routes'
/// mailboxes, without duplicates (case-insensitive).
pub fn configured_mailboxes(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let ids = config
        .api
        .mailboxes
        .iter()
        .map(|m| m.id.clone())
        .chain(config.routes.iter().map(|r| r.mailbox.trim().to_string()));
    for id in ids {
        if !id.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&id)) {
            out.push(id);
        }
    }
    out
}

/// Runs Outlook or DingTalk actions against the real APIs. Implemented by the Graph
/// and DingTalk clients; set with [`Actions::set_backend`].
#[async_trait]
pub trait ActionBackend: Send + Sync {
    /// Performs one validated call. Answer one JSON object for creates and an array for
    /// searches. Map upstream throttling to [`ApiError::rate_limited`] (integer seconds),
    /// rejected input to [`ApiError::invalid_field`], other upstream failures to
    /// `ErrorCode::UpstreamError`. `ctx.idempotency_key` is the handle to pass upstream.
    async fn call(&self, ctx: &ActionContext<'_>, call: BackendCall) -> Result<Value, ApiError>;
}

/// One action with typed input.
#[async_trait]
pub trait Action: Send + Sync + 'static {
    /// Parsed input.
    type Input: Send + 'static;
    /// Name, e.g. `outlook.send_mail`.
    const NAME: &'static str;
    /// Create or search.
    const KIND: ActionKind;
    /// Parses the flat JSON input; every problem is reported by field.
    fn validate(&self, input: &Value) -> Result<Self::Input, FieldErrors>;
    /// Runs it.
    async fn run(&self, ctx: &ActionContext<'_>, input: Self::Input) -> Result<Value, ApiError>;
}

/// The backends actions run on, set by [`Actions::set_backend`] once the clients exist.
#[derive(Default)]
struct Backends {
    outlook: Option<Arc<dyn ActionBackend>>,
    dingtalk: Option<Arc<dyn ActionBackend>>,
}
