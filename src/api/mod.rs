//! HTTP handlers, thin: parse, call one function, map the result. Each module registers
//! its routes with `configure`.

use std::{sync::Arc, time::Duration};

use actix_web::{
    FromRequest, Handler, HttpRequest, HttpResponse, Responder, Route, http::Method, web,
};

use crate::{
    actions::Actions,
    apikeys::BootstrapKey,
    config::Config,
    error::{ApiError, ErrorCode},
    ingest::Verifier,
    outbound::target::TargetPolicy,
    store::SharedStore,
};

pub mod actions;
pub mod auth;
pub mod body;
pub mod docs;
pub mod health;
pub mod lowcode;
pub mod webhooks;

pub use body::{JsonBody, LimitedBody, require_json};

/// Everything handlers share.
pub struct AppState {
    /// The store.
    pub store: SharedStore,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Verifier of `/webhooks/echo`, when the echo relay is configured.
    pub echo: Option<Box<dyn Verifier>>,
    /// Verifier of `/webhooks/dingtalk/events`, when HTTP push is configured.
    pub dingtalk_push: Option<Box<dyn Verifier>>,
    /// Verifier of `/webhooks/dingtalk/robot`, when a robot secret is configured.
    pub dingtalk_robot: Option<Box<dyn Verifier>>,
    /// API keys from `api.bootstrap_keys`.
    pub bootstrap_keys: Vec<BootstrapKey>,
    /// The action registry (with its Graph / DingTalk backends, when connected).
    pub actions: Actions,
    /// HTTP client of actions (no redirects).
    pub http: reqwest::Client,
    /// Where REST hooks may point.
    pub hook_policy: Arc<TargetPolicy>,
    /// The OpenAPI document as JSON.
    pub openapi_json: Arc<String>,
    /// The Graph client, when Graph credentials are configured.
    pub graph: Option<Arc<crate::graph::GraphClient>>,
    /// The DingTalk API client, when app key and secret are configured.
    pub dingtalk: Option<Arc<crate::dingtalk::client::DingTalkClient>>,
}

/// One path and the methods it answers; [`table`] is the single list every route is
/// registered from (and that the OpenAPI test compares with the document).
pub struct RouteEntry {
    /// Path pattern, `{name}` for parameters (as in OpenAPI).
    pub path: &'static str,
    /// Methods and their handlers.
    pub methods: Vec<(Method, Route)>,
}

/// A handler for `method`.
pub fn on<F, Args>(method: Method, handler: F) -> (Method, Route)
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    (method.clone(), web::route().method(method).to(handler))
}

/// Every route of the service.
pub fn table() -> Vec<RouteEntry> {
    let mut t = Vec::new();
    health::routes(&mut t);
    webhooks::routes(&mut t);
    lowcode::routes(&mut t);
    actions::routes(&mut t);
    docs::routes(&mut t);
    t
}

/// `(METHOD, path)` of every route, sorted.
pub fn route_list() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = table()
        .into_iter()
        .flat_map(|e| {
            e.methods
                .into_iter()
                .map(move |(m, _)| (m.to_string(), e.path.to_string()))
        })
        .collect();
    v.sort();
    v
}

impl AppState {
    /// How long inbound dedupe marks live.
    pub fn dedupe_ttl(&self) -> Duration {
        self.config.dedupe_ttl()
    }
}

/// Registers every route, the JSON 404 for unknown paths and the error handlers of
/// actix's own extractors.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .error_handler(|e, _| ApiError::new(ErrorCode::InvalidJson, e.to_string()).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::new(ErrorCode::InvalidInput, e.to_string()).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::new(ErrorCode::InvalidInput, e.to_string()).into()),
    );
    for entry in table() {
        let mut r = resource(entry.path);
        for (_, route) in entry.methods {
            r = r.route(route);
        }
        cfg.service(r);
    }
}

/// Answer of unknown routes.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// Answer of known routes called with another method.
pub async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.path()),
    ))
}

/// A resource whose other methods answer 405 in the error shape.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// `202 Accepted` with the ingest report.
pub fn accepted(report: crate::ingest::IngestReport) -> HttpResponse {
    HttpResponse::Accepted().json(serde_json::json!({
        "accepted": report.enqueued,
        "duplicates": report.duplicates,
    }))
}
