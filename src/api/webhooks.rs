//! Inbound webhooks, authenticated by their own signatures.

use actix_web::{HttpRequest, HttpResponse, web};

use super::{AppState, LimitedBody, accepted, resource};
use crate::{
    error::{ApiError, ErrorCode},
    graph::{self, notifications::handshake_token},
    ingest::{InboundRequest, accept, ingest},
};

/// Registers the webhook routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/webhooks/echo").route(web::post().to(echo)))
        .service(resource("/webhooks/graph").route(web::post().to(graph_notifications)))
        .service(resource("/webhooks/graph/lifecycle").route(web::post().to(graph_lifecycle)));
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

/// Graph's handshake comes first (before any JSON parsing); then notifications are
/// checked, queued and acknowledged with 202.
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
    let checked = graph::inbound::check(state.store.as_ref(), &body.0, lifecycle).await?;
    let report = accept(state.store.as_ref(), state.dedupe_ttl(), checked.events).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "accepted": report.enqueued,
        "duplicates": report.duplicates,
        "ignored": checked.ignored,
    })))
}

async fn echo(
    req: HttpRequest,
    body: LimitedBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let verifier = state.echo.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotConfigured,
            "the echo relay is off; set echo.target_url and echo.token to enable it",
        )
    })?;
    let inbound = InboundRequest {
        headers: req.headers(),
        query: req.query_string(),
        body: &body.0,
    };
    let report = ingest(state.store.as_ref(), state.dedupe_ttl(), verifier, &inbound).await?;
    Ok(accepted(report))
}
