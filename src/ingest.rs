//! The one path every inbound event takes: verify → dedupe → enqueue → answer. The
//! answer is a success only once the job is durably in the store; remote calls happen
//! later, in workers.

use std::time::Duration;

use actix_web::http::header::HeaderMap;
use serde_json::Value;

use crate::{
    error::ApiError,
    jobs::Task,
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
    /// The job to queue.
    pub task: Task,
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

/// Deepest nesting an event payload may have. A queued job wraps its payload (and a
/// dead letter wraps the job), and serde_json refuses to read past 128 levels: anything
/// much deeper would be acknowledged yet could never be read back and run. No DingTalk
/// or Graph event comes near this.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Nesting depth of a JSON value (a scalar is 0, `[]` and `{}` are 1), without recursion.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// Refuses a batch any of whose payloads could not be read back from the queue.
fn check_readable<'a>(mut jobs: impl Iterator<Item = &'a Job>) -> Result<(), ApiError> {
    match jobs.find(|j| json_depth(&j.payload) > MAX_PAYLOAD_DEPTH) {
        Some(_) => Err(ApiError::new(
            crate::error::ErrorCode::InvalidInput,
            format!("the event is nested deeper than {MAX_PAYLOAD_DEPTH} levels"),
        )),
        None => Ok(()),
    }
}

/// Longest wait for the store per event: a sender (Graph allows 3 s) must get its 503 and
/// `Retry-After` promptly whatever the store does. An enqueue cut off here may still land;
/// the sender's retry is then a duplicate, which the dedupe marker catches.
pub const STORE_DEADLINE: Duration = Duration::from_millis(500);

/// Dedupes and durably enqueues already-verified events.
pub async fn accept(
    store: &dyn Store,
    dedupe_ttl: Duration,
    events: Vec<VerifiedEvent>,
) -> Result<IngestReport, ApiError> {
    let batch: Vec<(&'static str, Option<String>, Job)> = events
        .into_iter()
        .map(|e| (e.source, e.event_id, e.task.into_job()))
        .collect();
    // Before anything is queued: a batch is taken whole or not at all.
    check_readable(batch.iter().map(|(_, _, job)| job))?;
    let mut report = IngestReport::default();
    for (source, event_id, job) in batch {
        let dedupe = event_id.as_deref().map(|id| Dedupe {
            source,
            event_id: id,
            ttl: dedupe_ttl,
        });
        let outcome = tokio::time::timeout(STORE_DEADLINE, store.enqueue(&job, dedupe))
            .await
            .unwrap_or_else(|_| {
                Err(crate::store::StoreError::Unavailable(format!(
                    "the store did not answer within {} ms",
                    STORE_DEADLINE.as_millis()
                )))
            });
        match outcome {
            Ok(EnqueueOutcome::Enqueued) => {
                report.enqueued += 1;
                crate::metrics::record_ingest(source, "enqueued", 1);
            }
            Ok(EnqueueOutcome::Duplicate) => {
                report.duplicates += 1;
                crate::metrics::record_ingest(source, "duplicate", 1);
            }
            Err(e) => {
                crate::metrics::record_ingest(source, "store_unavailable", 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(Value::Null, |inner, _| serde_json::json!({ "a": inner }))
    }

    #[test]
    fn json_depth_counts_containers() {
        assert_eq!(json_depth(&serde_json::json!(1)), 0);
        assert_eq!(json_depth(&serde_json::json!([])), 1);
        assert_eq!(
            json_depth(&serde_json::json!({"a": [1, {"b": 2}], "c": 3})),
            3
        );
        assert_eq!(json_depth(&nested(126)), 126);
    }

    #[test]
    fn every_payload_ingest_accepts_can_be_read_back_from_the_queue() {
        let event = |payload| VerifiedEvent {
            source: "echo",
            event_id: None,
            task: Task::Echo(payload),
        };
        let deepest = event(nested(MAX_PAYLOAD_DEPTH)).task.into_job();
        assert!(check_readable(std::iter::once(&deepest)).is_ok());
        // A dead letter wraps the job, which wraps the payload: the deepest form stored.
        let letter = crate::store::DeadLetter {
            job: deepest.clone(),
            failed_at_ms: 0,
        };
        let text = serde_json::to_string(&letter).expect("serialises");
        assert!(serde_json::from_str::<crate::store::DeadLetter>(&text).is_ok());

        let too_deep = event(nested(126)).task.into_job();
        let err = check_readable([deepest, too_deep].iter()).expect_err("refused");
        assert_eq!(err.code.as_str(), "invalid_input");
    }
}
