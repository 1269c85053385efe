//! The one error type of the HTTP surface: a stable code, a status, a message a person
//! can act on, and the request id, rendered as `{"error":{"code","message","request_id"}}`.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde::Serialize;
use serde_json::Value;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, when called inside one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// Runs `fut` as request `id`: every [`ApiError`] rendered inside it carries that id.
// The id lives here, not in telemetry, so the error type needs nothing above layer 1.
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// Stable machine-readable error codes; the table in [`ErrorCode::status`] and
/// [`ErrorCode::as_str`] is the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not valid JSON or not the expected shape.
    InvalidJson,
    /// A field or parameter has an invalid value.
    InvalidInput,
    /// A required query parameter or header is absent.
    MissingParameter,
    /// The Content-Type is not one this endpoint accepts.
    UnsupportedMediaType,
    /// A signature does not verify.
    InvalidSignature,
    /// A signed timestamp is outside the accepted window.
    StaleTimestamp,
    /// The encrypted payload cannot be decrypted or has a bad layout.
    InvalidCiphertext,
    /// The payload was encrypted for another app or organisation.
    OwnerKeyMismatch,
    /// No or invalid credentials.
    Unauthorized,
    /// Credentials are valid but do not allow this.
    Forbidden,
    /// No such resource or route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// A request with this idempotency key is still running.
    IdempotencyKeyInFlight,
    /// The body exceeds the configured limit.
    PayloadTooLarge,
    /// The body did not arrive in full within the configured deadline.
    RequestTimeout,
    /// This idempotency key was used with another request body.
    IdempotencyKeyReused,
    /// Too many requests (here or upstream); retry after the given delay.
    RateLimited,
    /// The store cannot be reached; nothing was accepted, retry later.
    StoreUnavailable,
    /// An upstream API failed.
    UpstreamError,
    /// An upstream API is temporarily unavailable; retry after the given delay.
    UpstreamUnavailable,
    /// The endpoint's feature is not configured on this deployment.
    NotConfigured,
    /// An unexpected failure; details are in the log under the request id.
    Internal,
}

impl ErrorCode {
    /// The snake_case name clients match on.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::MissingParameter => "missing_parameter",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::StaleTimestamp => "stale_timestamp",
            ErrorCode::InvalidCiphertext => "invalid_ciphertext",
            ErrorCode::OwnerKeyMismatch => "owner_key_mismatch",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::NotConfigured => "not_configured",
            ErrorCode::Internal => "internal_error",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidJson | ErrorCode::InvalidInput | ErrorCode::MissingParameter => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::InvalidCiphertext | ErrorCode::OwnerKeyMismatch => StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidSignature | ErrorCode::StaleTimestamp | ErrorCode::Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound | ErrorCode::NotConfigured => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::IdempotencyKeyInFlight => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::UpstreamError => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// Stable code (and so the status).
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds after which a retry makes sense (429 / 503).
    pub retry_after: Option<u64>,
    /// Optional structured detail, e.g. field-level validation messages.
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    /// Adds a `Retry-After` in whole seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// Adds structured detail.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Field-level validation failure: 400 `invalid_input` with
    /// `details: {"fields": {name: message}}` and a message naming every field.
    pub fn invalid_fields(fields: std::collections::BTreeMap<String, String>) -> Self {
        let summary: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        Self::new(ErrorCode::InvalidInput, summary.join("; "))
            .with_details(serde_json::json!({ "fields": fields }))
    }

    /// One invalid field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(field.to_string(), message.into());
        Self::invalid_fields(fields)
    }

    /// Throttled (here or upstream): 429 with `Retry-After` in whole seconds.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(ErrorCode::RateLimited, message).with_retry_after(retry_after_secs)
    }

    /// The store cannot take the request: the caller must retry, nothing was accepted.
    pub fn store_unavailable() -> Self {
        Self::new(
            ErrorCode::StoreUnavailable,
            "the store is unreachable; nothing was accepted, retry later",
        )
        .with_retry_after(5)
    }

    /// An unexpected failure whose cause is logged, never shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            ErrorCode::Internal,
            "unexpected error; the log has details under this request id",
        )
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Value>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after {
            builder.insert_header(("Retry-After", secs.to_string()));
        }
        builder.json(Body {
            error: Inner {
                code: self.code.as_str(),
                message: &self.message,
                request_id: current_request_id(),
                details: self.details.as_ref(),
            },
        })
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %e, "store error");
        match e {
            crate::store::StoreError::Full(message) => {
                Self::new(ErrorCode::StoreUnavailable, message).with_retry_after(5)
            }
            _ => ApiError::store_unavailable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_snake_case_and_bad_input_is_never_a_server_error() {
        let all = [
            ErrorCode::InvalidJson,
            ErrorCode::InvalidInput,
            ErrorCode::MissingParameter,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::InvalidSignature,
            ErrorCode::StaleTimestamp,
            ErrorCode::InvalidCiphertext,
            ErrorCode::OwnerKeyMismatch,
            ErrorCode::PayloadTooLarge,
            ErrorCode::RequestTimeout,
        ];
        for c in all {
            assert!(c.status().is_client_error(), "{c:?}");
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_')
            );
        }
    }

    #[test]
    fn graph_errors_keep_code_request_id_and_an_integer_retry_after() {
        use crate::graph::GraphError;
        use std::time::Duration;
        let e = ApiError::from(GraphError::Api {
            status: 429,
            code: "ApplicationThrottled".into(),
            message: "MailboxConcurrency".into(),
            request_id: Some("rid-1".into()),
            client_request_id: "crid-1".into(),
            retry_after: Some(Duration::from_millis(2128)),
        });
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.retry_after, Some(3));
        let d = e.details.as_ref().expect("details");
        assert_eq!(d["graph_code"], "ApplicationThrottled");
        assert_eq!(d["request_id"], "rid-1");
        assert_eq!(d["status"], 429);
        let resp = e.error_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers().get("retry-after").expect("header"), "3");

        let e = ApiError::from(GraphError::Api {
            status: 503,
            code: "serviceNotAvailable".into(),
            message: String::new(),
            request_id: None,
            client_request_id: "c".into(),
            retry_after: None,
        });
        assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
        assert_eq!(e.code.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.retry_after.is_some());

        let e = ApiError::from(GraphError::Api {
            status: 403,
            code: "ErrorAccessDenied".into(),
            message: "Access to OData is disabled.".into(),
            request_id: Some("rid-3".into()),
            client_request_id: "c".into(),
            retry_after: None,
        });
        assert_eq!(e.code, ErrorCode::UpstreamError);
        assert_eq!(
            e.details.as_ref().expect("d")["graph_code"],
            "ErrorAccessDenied"
        );
        assert_eq!(e.code.as_str(), "upstream_error");
    }

    #[test]
    fn dingtalk_errors_map_to_429_400_503_and_502() {
        use crate::dingtalk::client::classify;
        let throttled = classify(
            403,
            &serde_json::json!({"code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "message": "qps", "requestid": "r1"}),
        )
        .expect("error");
        let e = ApiError::from(throttled);
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.retry_after, Some(1));
        assert_eq!(e.details.as_ref().expect("d")["request_id"], "r1");
        let e = ApiError::from(
            classify(
                400,
                &serde_json::json!({"code": "invalidParameter", "message": "bad"}),
            )
            .expect("error"),
        );
        assert_eq!(e.code.status(), StatusCode::BAD_REQUEST);
        let e = ApiError::from(
            classify(500, &serde_json::json!({"code": "ServiceUnavailable"})).expect("error"),
        );
        assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
        assert!(e.retry_after.is_some());
        let e = ApiError::from(
            classify(
                200,
                &serde_json::json!({"errcode": 40014, "errmsg": "token"}),
            )
            .expect("e"),
        );
        assert_eq!(e.code, ErrorCode::UpstreamError);
    }

    #[test]
    fn unavailable_store_asks_for_a_retry() {
        let e = ApiError::store_unavailable();
        assert_eq!(e.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        let resp = e.error_response();
        assert!(resp.headers().contains_key("retry-after"));
    }
}
