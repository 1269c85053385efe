//! The one path every inbound event takes: verify → dedupe → enqueue → answer. The
//! answer is a success only once the job is durably in the store; remote calls happen
//! later, in workers.

use std::time::Duration;

use actix_web::http::header::HeaderMap;
use serde_json::Value;

use crate::{
    error::ApiError,
    store::{Dedupe, EnqueueOutcome, Job, Store},
};

/// What a verifier sees of an inbound HTTP request.
pub struct InboundRequest<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Raw query string.
    pub query: &'a str,
    /// Raw body (already size-limited).
    pub body: &'a [u8],
}

/// One authenticated event ready to queue.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    /// Source name used for dedupe marks and metrics, e.g. `dingtalk`.
    pub source: &'static str,
    /// The platform's own event id; events without one are not deduplicated.
    pub event_id: Option<String>,
    /// Job kind the worker dispatches on.
    pub kind: String,
    /// Job payload.
    pub payload: Value,
}

/// What a verifier made of a request: events to queue and, for protocols that require
/// one (DingTalk's encrypted push), the body to answer with once they are queued.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    /// Events to dedupe and enqueue (may be empty, e.g. a URL check).
    pub events: Vec<VerifiedEvent>,
    /// JSON answered with 200 after a successful enqueue; `None` for the default answer.
    pub reply: Option<Value>,
}

/// Authenticates a request and turns it into events; each webhook source implements it.
pub trait Verifier: Send + Sync {
    /// Checks signatures (and decrypts); bad input is a 4xx [`ApiError`].
    fn verify(&self, req: &InboundRequest<'_>) -> Result<Vec<VerifiedEvent>, ApiError>;

    /// Like [`Verifier::verify`], plus the protocol's reply body; override when the
    /// sender expects a specific answer.
    fn verify_with_reply(&self, req: &InboundRequest<'_>) -> Result<Verified, ApiError> {
        Ok(Verified {
            events: self.verify(req)?,
            reply: None,
        })
    }
}

/// How an accepted batch was handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Newly queued events.
    pub enqueued: usize,
    /// Events already seen (absorbed retries).
    pub duplicates: usize,
}

/// Dedupes and durably enqueues already-verified events.
pub async fn accept(
    store: &dyn Store,
    dedupe_ttl: Duration,
    events: Vec<VerifiedEvent>,
) -> Result<IngestReport, ApiError> {
    let mut report = IngestReport::default();
    for event in events {
        let job = Job::new(event.kind, event.payload);
        let dedupe = event.event_id.as_deref().map(|id| Dedupe {
            source: event.source,
            event_id: id,
            ttl: dedupe_ttl,
        });
        match store.enqueue(&job, dedupe).await {
            Ok(EnqueueOutcome::Enqueued) => {
                report.enqueued += 1;
                crate::metrics::record_ingest(event.source, "enqueued", 1);
            }
            Ok(EnqueueOutcome::Duplicate) => {
                report.duplicates += 1;
                crate::metrics::record_ingest(event.source, "duplicate", 1);
            }
            Err(e) => {
                crate::metrics::record_ingest(event.source, "store_unavailable", 1);
                return Err(e.into());
            }
        }
    }
    Ok(report)
}

/// Verifies, then accepts.
pub async fn ingest(
    store: &dyn Store,
    dedupe_ttl: Duration,
    verifier: &dyn Verifier,
    req: &InboundRequest<'_>,
) -> Result<IngestReport, ApiError> {
    let (report, _) = ingest_with_reply(store, dedupe_ttl, verifier, req, accept_boxed).await?;
    Ok(report)
}

/// The accept step of [`ingest_with_reply`]: the plain [`accept`] or a source's variant
/// that does more around it (e.g. remembering DingTalk session webhooks).
pub type AcceptFn = for<'a> fn(
    &'a dyn Store,
    Duration,
    Vec<VerifiedEvent>,
) -> futures::future::BoxFuture<'a, Result<IngestReport, ApiError>>;

/// [`accept`] as an [`AcceptFn`].
pub fn accept_boxed(
    store: &dyn Store,
    dedupe_ttl: Duration,
    events: Vec<VerifiedEvent>,
) -> futures::future::BoxFuture<'_, Result<IngestReport, ApiError>> {
    Box::pin(accept(store, dedupe_ttl, events))
}

/// Verifies, accepts with `accept_fn`, and returns the report with the verifier's reply
/// (answered only now, after the enqueue succeeded).
pub async fn ingest_with_reply(
    store: &dyn Store,
    dedupe_ttl: Duration,
    verifier: &dyn Verifier,
    req: &InboundRequest<'_>,
    accept_fn: AcceptFn,
) -> Result<(IngestReport, Option<Value>), ApiError> {
    let verified = verifier.verify_with_reply(req).inspect_err(|e| {
        tracing::info!(code = e.code.as_str(), reason = %e.message, "inbound request rejected");
    })?;
    let report = accept_fn(store, dedupe_ttl, verified.events).await?;
    Ok((report, verified.reply))
}
