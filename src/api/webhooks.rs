//! Inbound webhooks, authenticated by their own signatures.

use actix_web::{HttpRequest, HttpResponse, web};

use super::{AppState, LimitedBody, accepted, resource};
use crate::{
    error::{ApiError, ErrorCode},
    ingest::{InboundRequest, ingest},
};

/// Registers the webhook routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/webhooks/echo").route(web::post().to(echo)));
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
