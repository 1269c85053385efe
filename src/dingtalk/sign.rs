//! HMAC-SHA256 signatures of DingTalk robots: custom-robot send (加签) and the
//! `timestamp`/`sign` headers of app-robot HTTP callbacks.
//!
//! Both use `Base64(HmacSHA256(key = secret, msg = timestamp + "\n" + secret))`; only the
//! send side URL-encodes the result. Send side:
//! <https://help.dingtalk.io/open/dingstart/customize-robot-security-settings>; both sides,
//! with DingTalk's pages named, in the vectors the tests check (`tests/vectors/dingtalk.json`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// Skew DingTalk allows between sender and receiver clocks for robot signatures (1 hour).
pub const ROBOT_SIGN_WINDOW_MS: i64 = 3_600_000;

/// Errors of robot callback verification; `code()` gives a stable machine-readable name.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum SignError {
    /// The `timestamp` header is absent or empty.
    #[error("timestamp header is missing")]
    MissingTimestamp,
    /// The `timestamp` header is not a plain decimal millisecond count.
    #[error("timestamp header is not a decimal millisecond count")]
    MalformedTimestamp,
    /// The timestamp lies outside the accepted window around now.
    #[error("timestamp header is outside the accepted window")]
    Stale,
    /// The `sign` header is absent or empty.
    #[error("sign header is missing")]
    MissingSignature,
    /// The `sign` header does not match the computed signature.
    #[error("sign header does not match")]
    SignatureMismatch,
}

impl SignError {
    /// Stable snake_case code for logs, metrics and API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            SignError::MissingTimestamp => "missing_timestamp",
            SignError::MalformedTimestamp => "malformed_timestamp",
            SignError::Stale => "stale_timestamp",
            SignError::MissingSignature => "missing_signature",
            SignError::SignatureMismatch => "invalid_signature",
        }
    }
}

/// Base64 HMAC-SHA256 over `timestamp + "\n" + secret`, keyed with the secret.
fn hmac_sign(secret: &str, timestamp: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(secret.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// URL-encodes Base64 output: only `+`, `/` and `=` need escaping (as Java's
/// `URLEncoder` and Python's `quote_plus` do); the rest of the alphabet is unreserved.
fn url_encode_base64(b64: &str) -> String {
    let mut out = String::with_capacity(b64.len() + 8);
    for c in b64.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            _ => out.push(c),
        }
    }
    out
}

/// Custom-robot send signature: Base64 HMAC, not yet URL-encoded.
pub fn robot_send_sign(secret: &str, timestamp_ms: i64) -> String {
    hmac_sign(secret, &timestamp_ms.to_string())
}

/// Query suffix `timestamp=<ms>&sign=<url-encoded sign>` to append to the webhook URL.
pub fn robot_send_query(secret: &str, timestamp_ms: i64) -> String {
    let sign = url_encode_base64(&robot_send_sign(secret, timestamp_ms));
    format!("timestamp={timestamp_ms}&sign={sign}")
}

/// Expected `sign` header of a robot callback, over the timestamp string as received.
pub fn robot_callback_sign(app_secret: &str, timestamp: &str) -> String {
    hmac_sign(app_secret, timestamp)
}

/// Verifies robot callback headers; pass `""` for an absent header.
///
/// The timestamp must be a decimal millisecond count within `window_ms` of `now_ms`
/// (DingTalk says one hour: [`ROBOT_SIGN_WINDOW_MS`]); the sign is compared in constant time.
pub fn verify_robot_callback(
    app_secret: &str,
    timestamp_header: &str,
    sign_header: &str,
    now_ms: i64,
    window_ms: i64,
) -> Result<(), SignError> {
    if timestamp_header.is_empty() {
        return Err(SignError::MissingTimestamp);
    }
    // Digits only: `i64::from_str` would also take a sign or overflow-free garbage like "+1".
    if !timestamp_header.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignError::MalformedTimestamp);
    }
    let ts: i64 = timestamp_header
        .parse()
        .map_err(|_| SignError::MalformedTimestamp)?;
    // abs_diff cannot overflow; a negative window accepts nothing.
    match u64::try_from(window_ms) {
        Ok(window) if now_ms.abs_diff(ts) <= window => {}
        _ => return Err(SignError::Stale),
    }
    if sign_header.is_empty() {
        return Err(SignError::MissingSignature);
    }
    // Sign the header string itself, not the parsed number, exactly as DingTalk did.
    let expected = robot_callback_sign(app_secret, timestamp_header);
    if bool::from(expected.as_bytes().ct_eq(sign_header.as_bytes())) {
        Ok(())
    } else {
        Err(SignError::SignatureMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/dingtalk.json"
    ));

    fn vectors() -> Value {
        serde_json::from_str(VECTORS).expect("vector file is valid JSON")
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("vector field {key} is a string"))
    }

    fn list(v: &Value) -> &Vec<Value> {
        v["vectors"].as_array().expect("vectors is an array")
    }

    fn ts(v: &Value, key: &str) -> i64 {
        s(v, key).parse().expect("vector timestamp is an integer")
    }

    #[test]
    fn robot_send_sign_matches_documented_java_and_python_samples() {
        let v = vectors();
        let vecs = list(&v["robot_send_sign"]);
        assert_eq!(vecs.len(), 3);
        for vec in vecs {
            let secret = s(vec, "secret");
            let t = ts(vec, "timestamp");
            assert_eq!(
                format!("{t}\n{secret}"),
                s(vec, "string_to_sign"),
                "string to sign"
            );
            assert_eq!(robot_send_sign(secret, t), s(vec, "sign_base64"));
            assert_eq!(
                url_encode_base64(&robot_send_sign(secret, t)),
                s(vec, "sign_urlencoded")
            );
            assert_eq!(robot_send_query(secret, t), s(vec, "url_query"));
        }
    }

    #[test]
    fn robot_callback_sign_matches_documented_samples() {
        let v = vectors();
        let vecs = list(&v["robot_callback_sign"]);
        assert_eq!(vecs.len(), 3);
        for vec in vecs {
            let sign = robot_callback_sign(s(vec, "app_secret"), s(vec, "timestamp_header"));
            assert_eq!(sign, s(vec, "sign_header"));
        }
    }

    #[test]
    fn accepts_every_callback_vector_within_the_window() {
        let v = vectors();
        for vec in list(&v["robot_callback_sign"]) {
            let secret = s(vec, "app_secret");
            let header = s(vec, "timestamp_header");
            let sign = s(vec, "sign_header");
            let t = ts(vec, "timestamp_header");
            for now in [t, t - ROBOT_SIGN_WINDOW_MS, t + ROBOT_SIGN_WINDOW_MS] {
                assert_eq!(
                    verify_robot_callback(secret, header, sign, now, ROBOT_SIGN_WINDOW_MS),
                    Ok(()),
                    "{header} at {now}"
                );
            }
        }
    }

    #[test]
    fn rejects_callback_just_outside_the_window_in_either_direction() {
        let (secret, header, sign) = (
            "appSecretXYZ",
            "1700000000000",
            "g3cgPusvUchJ81qMOuQ5yimBZInFz7xT3hLwduvR9c4=",
        );
        let t = 1_700_000_000_000_i64;
        for now in [
            t - ROBOT_SIGN_WINDOW_MS - 1,
            t + ROBOT_SIGN_WINDOW_MS + 1,
            i64::MAX,
            i64::MIN,
        ] {
            let err = verify_robot_callback(secret, header, sign, now, ROBOT_SIGN_WINDOW_MS)
                .expect_err("stale");
            assert_eq!(err, SignError::Stale);
            assert_eq!(err.code(), "stale_timestamp");
        }
        assert_eq!(
            verify_robot_callback(secret, header, sign, t, -1),
            Err(SignError::Stale)
        );
    }

    #[test]
    fn rejects_seconds_timestamp_because_callbacks_use_milliseconds() {
        let secret = "appSecretXYZ";
        let header = "1700000000";
        let sign = robot_callback_sign(secret, header);
        let err = verify_robot_callback(
            secret,
            header,
            &sign,
            1_700_000_000_000,
            ROBOT_SIGN_WINDOW_MS,
        );
        assert_eq!(err, Err(SignError::Stale));
    }

    #[test]
    fn rejects_tampered_sign_wrong_secret_and_other_timestamp() {
        let (secret, header, sign) = (
            "appSecretXYZ",
            "1700000000000",
            "g3cgPusvUchJ81qMOuQ5yimBZInFz7xT3hLwduvR9c4=",
        );
        let now = 1_700_000_000_000_i64;
        let tampered = sign.replacen('g', "h", 1);
        let url_encoded = url_encode_base64(sign);
        for bad in [tampered.as_str(), url_encoded.as_str(), &sign[..43], "x"] {
            let err = verify_robot_callback(secret, header, bad, now, ROBOT_SIGN_WINDOW_MS)
                .expect_err("mismatch");
            assert_eq!(err, SignError::SignatureMismatch, "{bad}");
            assert_eq!(err.code(), "invalid_signature");
        }
        assert_eq!(
            verify_robot_callback("appSecretXYz", header, sign, now, ROBOT_SIGN_WINDOW_MS),
            Err(SignError::SignatureMismatch)
        );
        assert_eq!(
            verify_robot_callback(secret, "1700000000001", sign, now, ROBOT_SIGN_WINDOW_MS),
            Err(SignError::SignatureMismatch)
        );
        // Leading zeros change the signed string even though the number is the same.
        assert_eq!(
            verify_robot_callback(secret, "01700000000000", sign, now, ROBOT_SIGN_WINDOW_MS),
            Err(SignError::SignatureMismatch)
        );
    }

    #[test]
    fn rejects_missing_headers() {
        let now = 1_700_000_000_000_i64;
        let err = verify_robot_callback("s", "", "sig", now, ROBOT_SIGN_WINDOW_MS)
            .expect_err("missing ts");
        assert_eq!(err, SignError::MissingTimestamp);
        assert_eq!(err.code(), "missing_timestamp");
        let err = verify_robot_callback("s", "1700000000000", "", now, ROBOT_SIGN_WINDOW_MS)
            .expect_err("missing sign");
        assert_eq!(err, SignError::MissingSignature);
        assert_eq!(err.code(), "missing_signature");
    }

    #[test]
    fn rejects_malformed_timestamps() {
        let now = 1_700_000_000_000_i64;
        for bad in [
            "-1700000000000",
            "+1700000000000",
            " 1700000000000",
            "1700000000000 ",
            "1.7e12",
            "0x1",
            "abc",
            "１７００",
            "99999999999999999999999",
        ] {
            let err =
                verify_robot_callback("s", bad, "sig", now, ROBOT_SIGN_WINDOW_MS).expect_err(bad);
            assert_eq!(err, SignError::MalformedTimestamp, "{bad:?}");
            assert_eq!(err.code(), "malformed_timestamp");
        }
    }

    #[test]
    fn url_encoding_escapes_only_plus_slash_and_equals() {
        let all = "ABCXYZabcxyz0189+/=";
        assert_eq!(url_encode_base64(all), "ABCXYZabcxyz0189%2B%2F%3D");
    }

    #[test]
    fn send_signature_differs_by_timestamp_and_secret() {
        let a = robot_send_sign("SECa", 1);
        assert_ne!(a, robot_send_sign("SECa", 2));
        assert_ne!(a, robot_send_sign("SECb", 1));
        assert_eq!(STANDARD.decode(&a).expect("base64").len(), 32);
    }

    #[test]
    fn error_codes_are_distinct_and_messages_non_empty() {
        let all = [
            SignError::MissingTimestamp,
            SignError::MalformedTimestamp,
            SignError::Stale,
            SignError::MissingSignature,
            SignError::SignatureMismatch,
        ];
        let mut codes: Vec<&str> = all.iter().map(SignError::code).collect();
        assert!(all.iter().all(|e| !e.to_string().is_empty()));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
