//! Diagnostic relay: `POST /webhooks/echo` with a shared token is queued like any other
//! inbound event and a worker posts it to a configured URL. It exercises the whole
//! ingest → queue → worker → target path, for tests and for checking a deployment.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::{
    error::{ApiError, ErrorCode},
    ingest::{InboundRequest, VerifiedEvent, Verifier},
    jobs::Task,
    store::Job,
    worker::{JobFailure, JobHandler},
};

/// Checks `X-Echo-Token` and reads `{"event_id": "...", ...}`.
pub struct EchoVerifier {
    token: SecretString,
}

impl EchoVerifier {
    /// A verifier accepting this token.
    pub fn new(token: SecretString) -> Self {
        Self { token }
    }
}

impl Verifier for EchoVerifier {
    fn verify(&self, req: &InboundRequest<'_>) -> Result<Vec<VerifiedEvent>, ApiError> {
        let given = req
            .headers
            .get("x-echo-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let expected = self.token.expose_secret().as_bytes();
        if given.is_empty() || !bool::from(given.ct_eq(expected)) {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "missing or wrong X-Echo-Token header",
            ));
        }
        let body: Value = serde_json::from_slice(req.body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("body is not valid JSON: {e}"),
            )
        })?;
        let event_id = match body.get("event_id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && id.len() <= 256 => id.to_string(),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidInput,
                    "`event_id` must be a non-empty string of at most 256 characters",
                ));
            }
        };
        Ok(vec![VerifiedEvent {
            source: "echo",
            event_id: Some(event_id),
            task: Task::Echo(body),
        }])
    }
}

/// Posts each echo job's payload to the target with `Idempotency-Key: <job id>`, so the
/// target can tell a redelivery (after a crash) from a new event.
pub struct EchoHandler {
    client: reqwest::Client,
    target: String,
}

impl EchoHandler {
    /// A handler posting to `target`.
    pub fn new(client: reqwest::Client, target: String) -> Self {
        Self { client, target }
    }
}

#[async_trait]
impl JobHandler for EchoHandler {
    async fn handle(&self, job: &Job, task: Task) -> Result<(), JobFailure> {
        let Task::Echo(body) = task else {
            return Err(JobFailure::wrong_kind(&task));
        };
        let resp = self
            .client
            .post(&self.target)
            .header("Idempotency-Key", &job.id)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await
            .map_err(|e| JobFailure::transient(format!("target unreachable: {e}")))?;
        classify(resp).await
    }
}

/// Maps a target's answer to success, a retry (honouring `Retry-After`) or a permanent failure.
pub async fn classify(resp: reqwest::Response) -> Result<(), JobFailure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = crate::retry_after::of(resp.headers());
    let body = resp.text().await.unwrap_or_default();
    let snippet: String = body.chars().take(200).collect();
    let message = format!("target answered {}: {snippet}", status.as_u16());
    let mut failure = if crate::upstream::is_retryable(status.as_u16()) {
        JobFailure::transient(message)
    } else {
        JobFailure::permanent(message)
    };
    failure.retry_after = retry_after;
    Err(failure)
}
