//! `POST /webhooks/dingtalk/events`: DingTalk's encrypted HTTP push. Verifies the SHA-1
//! signature, the timestamp window and the owner key, decrypts, normalises, and builds
//! the encrypted `success` reply DingTalk requires (answered only after the enqueue).

use serde_json::Value;

use super::{
    crypto::{self, CallbackCrypto, CryptoError},
    events,
};
use crate::{
    error::{ApiError, ErrorCode},
    ingest::{InboundRequest, Verified, VerifiedEvent, Verifier},
    store::now_ms,
};

/// Verifier of encrypted pushes for one app.
pub struct PushVerifier {
    crypto: CallbackCrypto,
    /// Accepted distance of the push timestamp from now, in ms; 0 disables the check.
    window_ms: i64,
}

impl PushVerifier {
    /// A verifier with this crypto and timestamp window (seconds; 0 = no check).
    pub fn new(crypto: CallbackCrypto, window_secs: u64) -> Self {
        Self {
            crypto,
            window_ms: i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        }
    }
}

/// First query parameter among `names` (in that order of preference).
fn query_param(pairs: &[(String, String)], names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        pairs
            .iter()
            .find(|(k, v)| k == n && !v.is_empty())
            .map(|(_, v)| v.clone())
    })
}

fn missing(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::MissingParameter,
        format!("query parameter `{what}` is required"),
    )
}

/// Maps a crypto failure to the public error contract.
pub fn crypto_error(e: CryptoError) -> ApiError {
    match e {
        CryptoError::SignatureMismatch => ApiError::new(
            ErrorCode::InvalidSignature,
            "msg_signature does not match; check dingtalk.callback_token (DINGBRIDGE_DINGTALK_CALLBACK_TOKEN)",
        ),
        CryptoError::Stale => ApiError::new(
            ErrorCode::StaleTimestamp,
            "timestamp is outside the accepted window (dingtalk.timestamp_window_secs)",
        ),
        CryptoError::BadTimestamp => ApiError::new(
            ErrorCode::InvalidInput,
            "timestamp must be a decimal number of seconds or milliseconds",
        ),
        CryptoError::OwnerKeyMismatch => ApiError::new(
            ErrorCode::OwnerKeyMismatch,
            "the event was encrypted for another app; check dingtalk.app_key (DINGBRIDGE_DINGTALK_APP_KEY)",
        ),
        CryptoError::InvalidAesKey(_) => ApiError::internal(e),
        other => ApiError::new(
            ErrorCode::InvalidCiphertext,
            format!(
                "cannot decrypt `encrypt` ({}); check dingtalk.aes_key (DINGBRIDGE_DINGTALK_AES_KEY)",
                other
            ),
        ),
    }
}

impl Verifier for PushVerifier {
    fn verify(&self, req: &InboundRequest<'_>) -> Result<Vec<VerifiedEvent>, ApiError> {
        self.verify_with_reply(req).map(|v| v.events)
    }

    fn verify_with_reply(&self, req: &InboundRequest<'_>) -> Result<Verified, ApiError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(req.query.as_bytes())
            .into_owned()
            .collect();
        let signature = query_param(&pairs, &["msg_signature", "signature"])
            .ok_or_else(|| missing("msg_signature"))?;
        let timestamp =
            query_param(&pairs, &["timestamp", "timeStamp"]).ok_or_else(|| missing("timestamp"))?;
        let nonce = query_param(&pairs, &["nonce"]).ok_or_else(|| missing("nonce"))?;
        let body: Value = serde_json::from_slice(req.body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("body is not valid JSON: {e}"),
            )
        })?;
        let encrypt = body
            .get("encrypt")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MissingParameter,
                    "body must be {\"encrypt\": \"<base64>\"}",
                )
            })?;
        let ts_ms = crypto::parse_timestamp_ms(&timestamp).map_err(crypto_error)?;
        self.crypto
            .verify_signature(&signature, &timestamp, &nonce, encrypt)
            .map_err(crypto_error)?;
        let now = now_ms();
        if self.window_ms > 0 {
            crypto::check_freshness(ts_ms, now, self.window_ms).map_err(crypto_error)?;
        }
        let plaintext = self.crypto.decrypt(encrypt).map_err(crypto_error)?;
        // Authenticated content is never refused: what cannot be read is queued as unknown.
        let payload: Value =
            serde_json::from_str(&plaintext).unwrap_or_else(|_| Value::String(plaintext.clone()));
        let event_type = events::event_type(&payload).unwrap_or_default();
        let events = if events::CHECK_EVENTS.contains(&event_type.as_str()) {
            tracing::info!(event_type = %event_type, "DingTalk URL check answered");
            Vec::new()
        } else if events::is_robot_message(&payload) {
            // A group/robot message delivered through the encrypted channel (the same body
            // as a robot callback): normalised and deduplicated as a robot message.
            vec![events::verified_robot(&payload)]
        } else {
            match events::normalize_push(&payload) {
                Ok(event) => vec![events::verified_push(event)],
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable DingTalk push queued as unknown");
                    vec![events::verified_unreadable(payload, &plaintext)]
                }
            }
        };
        let reply = self.crypto.reply_success(u64::try_from(now).unwrap_or(0));
        Ok(Verified {
            events,
            reply: Some(serde_json::to_value(reply).unwrap_or(Value::Null)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderMap;

    const TOKEN: &str = "tokenABC123";
    const AES: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const OWNER: &str = "dingxxxxxxxxxxxx";

    fn verifier() -> PushVerifier {
        PushVerifier::new(
            CallbackCrypto::new(TOKEN, AES, OWNER).expect("crypto"),
            3600,
        )
    }

    fn request(plaintext: &str, ts: &str) -> (String, String) {
        let c = CallbackCrypto::new(TOKEN, AES, OWNER).expect("crypto");
        let enc = c.encrypt(plaintext);
        let sig = crypto::signature(TOKEN, ts, "n1", &enc);
        (
            format!("signature={sig}&timeStamp={ts}&nonce=n1"),
            serde_json::json!({"encrypt": enc}).to_string(),
        )
    }

    fn run(query: &str, body: &str) -> Result<Verified, ApiError> {
        let headers = HeaderMap::new();
        verifier().verify_with_reply(&InboundRequest {
            headers: &headers,
            query,
            body: body.as_bytes(),
        })
    }

    #[test]
    fn legacy_parameter_names_and_second_timestamps_are_accepted() {
        let ts = (now_ms() / 1000).to_string();
        let (q, b) = request(r#"{"EventType":"todo_task_create","eventId":"e1"}"#, &ts);
        let v = run(&q, &b).expect("verified");
        assert_eq!(v.events.len(), 1);
        assert_eq!(v.events[0].event_id.as_deref(), Some("event:e1"));
        let reply = v.reply.expect("reply");
        let c = CallbackCrypto::new(TOKEN, AES, OWNER).expect("crypto");
        let plain = c
            .decrypt_verified(
                reply["msg_signature"].as_str().expect("sig"),
                reply["timeStamp"].as_str().expect("ts"),
                reply["nonce"].as_str().expect("nonce"),
                reply["encrypt"].as_str().expect("enc"),
            )
            .expect("reply decrypts");
        assert_eq!(plain, "success");
    }

    /// The queued payload as the store will hold it.
    fn payload(event: &VerifiedEvent) -> serde_json::Value {
        serde_json::to_value(&event.task).expect("json")["payload"].clone()
    }

    #[test]
    fn an_encrypted_robot_message_is_queued_as_a_message() {
        let body = r#"{"msgtype":"text","text":{"content":"hi"},"msgId":"m1","conversationId":"cid1","conversationType":"2"}"#;
        let (q, b) = request(body, &now_ms().to_string());
        let v = run(&q, &b).expect("verified");
        assert_eq!(v.events.len(), 1);
        assert_eq!(v.events[0].event_id.as_deref(), Some("msg:m1"));
        assert_eq!(payload(&v.events[0])["kind"], "message");
        assert_eq!(payload(&v.events[0])["ids"]["conversation_id"], "cid1");
    }

    #[test]
    fn check_url_is_answered_without_events() {
        let (q, b) = request(r#"{"EventType":"check_url"}"#, &now_ms().to_string());
        let v = run(&q, &b).expect("verified");
        assert!(v.events.is_empty());
        assert!(v.reply.is_some());
    }

    #[test]
    fn stale_and_garbled_requests_get_their_codes() {
        let (q, b) = request(r#"{"EventType":"x"}"#, "1700000000000");
        assert_eq!(
            run(&q, &b).expect_err("stale").code,
            ErrorCode::StaleTimestamp
        );
        assert_eq!(
            run("nonce=1", &b).expect_err("missing").code,
            ErrorCode::MissingParameter
        );
        let (q, _) = request(r#"{"EventType":"x"}"#, &now_ms().to_string());
        assert_eq!(
            run(&q, "nope").expect_err("json").code,
            ErrorCode::InvalidJson
        );
    }

    #[test]
    fn an_authenticated_payload_that_is_not_an_object_is_queued_as_unknown() {
        let (q, b) = request("not json at all", &now_ms().to_string());
        let v = run(&q, &b).expect("verified");
        assert_eq!(v.events.len(), 1);
        assert_eq!(payload(&v.events[0])["kind"], "unknown");
        assert!(
            v.events[0]
                .event_id
                .as_deref()
                .expect("id")
                .starts_with("push:")
        );
        assert!(v.reply.is_some());
    }
}
