//! `POST /webhooks/dingtalk/robot`: app-robot HTTP callbacks, authenticated by the
//! `timestamp`/`sign` headers (HMAC-SHA256 with the robot's app secret, ±1 h).

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{
    events,
    sign::{self, SignError},
};
use crate::{
    error::{ApiError, ErrorCode},
    ingest::{InboundRequest, VerifiedEvent, Verifier},
    store::now_ms,
};

/// The answer meaning "no synchronous reply".
pub fn empty_reply() -> Value {
    serde_json::json!({"msgtype": "empty"})
}

/// Verifier of robot callbacks.
pub struct RobotVerifier {
    secret: SecretString,
}

impl RobotVerifier {
    /// A verifier for this app secret.
    pub fn new(secret: SecretString) -> Self {
        Self { secret }
    }
}

/// Maps a signature failure to the public error contract.
pub fn sign_error(e: SignError) -> ApiError {
    match e {
        SignError::MissingTimestamp => ApiError::new(
            ErrorCode::MissingParameter,
            "header `timestamp` is required",
        ),
        SignError::MissingSignature => {
            ApiError::new(ErrorCode::MissingParameter, "header `sign` is required")
        }
        SignError::MalformedTimestamp => ApiError::new(
            ErrorCode::InvalidInput,
            "header `timestamp` must be a decimal millisecond count",
        ),
        SignError::Stale => ApiError::new(
            ErrorCode::StaleTimestamp,
            "header `timestamp` is more than one hour from now",
        ),
        SignError::SignatureMismatch => ApiError::new(
            ErrorCode::InvalidSignature,
            "header `sign` does not match; check dingtalk.robot_app_secret (DINGBRIDGE_DINGTALK_ROBOT_APP_SECRET)",
        ),
    }
}

impl Verifier for RobotVerifier {
    fn verify(&self, req: &InboundRequest<'_>) -> Result<Vec<VerifiedEvent>, ApiError> {
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        sign::verify_robot_callback(
            self.secret.expose_secret(),
            &header("timestamp"),
            &header("sign"),
            now_ms(),
            sign::ROBOT_SIGN_WINDOW_MS,
        )
        .map_err(sign_error)?;
        let body: Value = serde_json::from_slice(req.body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("body is not valid JSON: {e}"),
            )
        })?;
        if !body.is_object() {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                "body must be a JSON object (a robot message)",
            ));
        }
        Ok(vec![events::verified_robot(&body)])
    }
}
