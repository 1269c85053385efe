//! Inbound webhooks, authenticated by their own signatures.

use actix_web::{HttpRequest, HttpResponse, web};

use actix_web::http::Method;

use super::{AppState, JsonBody, LimitedBody, RouteEntry, accepted, on, require_json};
use crate::{
    dingtalk,
    error::{ApiError, ErrorCode},
    graph::{self, notifications::handshake_token},
    ingest::{InboundRequest, accept, ingest, ingest_with_reply},
};

/// Adds the webhook routes.
pub fn routes(t: &mut Vec<RouteEntry>) {
    for (path, handler) in [
        ("/webhooks/echo", on(Method::POST, echo)),
        (
            "/webhooks/dingtalk/events",
            on(Method::POST, dingtalk_events),
        ),
        ("/webhooks/dingtalk/robot", on(Method::POST, dingtalk_robot)),
        ("/webhooks/graph", on(Method::POST, graph_notifications)),
        (
            "/webhooks/graph/lifecycle",
            on(Method::POST, graph_lifecycle),
        ),
    ] {
        t.push(RouteEntry {
            path,
            methods: vec![handler],
        });
    }
}

/// DingTalk HTTP push: answered with the encrypted `success` once queued.
async fn dingtalk_events(
    req: HttpRequest,
    body: JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let verifier = state.dingtalk_push.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotConfigured,
            "DingTalk HTTP push is off; set dingtalk.app_key, dingtalk.callback_token and dingtalk.aes_key (DINGBRIDGE_DINGTALK_APP_KEY, DINGBRIDGE_DINGTALK_CALLBACK_TOKEN, DINGBRIDGE_DINGTALK_AES_KEY)",
        )
    })?;
    let inbound = inbound(&req, &body);
    let (_, reply) = ingest_with_reply(
        state.store.as_ref(),
        state.dedupe_ttl(),
        verifier,
        &inbound,
        dingtalk::events::accept_boxed,
    )
    .await?;
    Ok(HttpResponse::Ok().json(reply))
}

/// DingTalk robot callback: answered with "no reply" once queued.
async fn dingtalk_robot(
    req: HttpRequest,
    body: JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let verifier = state.dingtalk_robot.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotConfigured,
            "DingTalk robot callbacks are off; set dingtalk.robot_app_secret or dingtalk.app_secret (DINGBRIDGE_DINGTALK_ROBOT_APP_SECRET, DINGBRIDGE_DINGTALK_APP_SECRET)",
        )
    })?;
    let inbound = inbound(&req, &body);
    ingest_with_reply(
        state.store.as_ref(),
        state.dedupe_ttl(),
        verifier,
        &inbound,
        dingtalk::events::accept_boxed,
    )
    .await?;
    Ok(HttpResponse::Ok().json(dingtalk::robot::empty_reply()))
}

async fn graph_notifications(
    req: HttpRequest,
    body: LimitedBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    graph(req, body, state, false).await
}

async fn graph_lifecycle(
    req: HttpRequest,
    body: LimitedBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    graph(req, body, state, true).await
}

/// Graph's handshake comes first (before any JSON parsing; Graph sends it as
/// `text/plain`); then notifications, which must be JSON, are checked, queued and
/// acknowledged with 202.
async fn graph(
    req: HttpRequest,
    body: LimitedBody,
    state: web::Data<AppState>,
    lifecycle: bool,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = handshake_token(req.query_string()) {
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(token));
    }
    require_json(&req)?;
    let checked = graph::inbound::check(state.store.as_ref(), &body.0, lifecycle).await?;
    let report = accept(state.store.as_ref(), state.dedupe_ttl(), checked.events).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "accepted": report.enqueued,
        "duplicates": report.duplicates,
        "ignored": checked.ignored,
    })))
}

fn inbound<'a>(req: &'a HttpRequest, body: &'a JsonBody) -> InboundRequest<'a> {
    InboundRequest {
        headers: req.headers(),
        query: req.query_string(),
        body: &body.0,
    }
}

async fn echo(
    req: HttpRequest,
    body: JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let verifier = state.echo.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotConfigured,
            "the echo relay is off; set echo.target_url and echo.token to enable it",
        )
    })?;
    let inbound = inbound(&req, &body);
    let report = ingest(state.store.as_ref(), state.dedupe_ttl(), verifier, &inbound).await?;
    Ok(accepted(report))
}
