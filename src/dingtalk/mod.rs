//! DingTalk protocol code: callback crypto and signatures (pure), event normalisation,
//! the HTTP push and robot verifiers, the API client and the failed-push backfill.

pub mod backfill;
pub mod client;
pub mod crypto;
pub mod custom_robot;
pub mod events;
pub mod push;
pub mod robot;
pub mod sample;
pub mod sign;
pub mod stream;

impl From<client::DingTalkError> for crate::error::ApiError {
    /// DingTalk throttling (a `Retry-After`, HTTP 429 or a QPS/quota code) →
    /// `rate_limited` with whole seconds; refused input or permission (a permanent 4xx or
    /// `errcode`) → 400 `invalid_input`; DingTalk unreachable or failing (5xx) →
    /// `upstream_unavailable`; anything else → `upstream_error`. DingTalk's status, code
    /// and request id stay in `details`.
    fn from(e: client::DingTalkError) -> Self {
        use crate::error::{ApiError, ErrorCode};
        let details = serde_json::json!({
            "upstream": "dingtalk",
            "status": e.status,
            "dingtalk_code": e.code,
            "request_id": e.request_id,
        });
        if e.retry_after.is_some() || e.status == 429 {
            let secs = e
                .retry_after
                .map(crate::retry_after::whole_seconds)
                .unwrap_or(1)
                .max(1);
            return ApiError::rate_limited(format!("DingTalk is throttling: {e}"), secs)
                .with_details(details);
        }
        if e.permanent {
            return ApiError::new(
                ErrorCode::InvalidInput,
                format!("DingTalk refused the request: {e}"),
            )
            .with_details(details);
        }
        if e.status == 0 || e.status >= 500 {
            return ApiError::new(
                ErrorCode::UpstreamUnavailable,
                format!("DingTalk is unavailable: {e}"),
            )
            .with_retry_after(5)
            .with_details(details);
        }
        ApiError::new(ErrorCode::UpstreamError, e.to_string()).with_details(details)
    }
}
