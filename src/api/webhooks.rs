//! Inbound webhooks, authenticated by their own signatures.

use actix_web::{HttpRequest, HttpResponse, web};

use actix_web::http::Method;

use super::{AppState, LimitedBody, RouteEntry, accepted, on};
use crate::{
    error::{ApiError, ErrorCode},
    ingest::{InboundRequest, ingest},
};

/// Adds the webhook routes.
pub fn routes(t: &mut Vec<RouteEntry>) {
    t.push(RouteEntry {
        path: "/webhooks/echo",
        methods: vec![on(Method::POST, echo)],
    });
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
