//! Signed sample requests for humans (`dingbridge sign dingtalk-event|dingtalk-robot`):
//! a ready-to-run `curl` command that a deployment accepts, made with the configured
//! secrets, so a consultant can test without DingTalk.

use secrecy::ExposeSecret;
use serde_json::Value;

use super::{crypto, sign};
use crate::config::DingTalkConfig;

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Full URL, query included.
    pub url: String,
    /// Headers besides `Content-Type: application/json`.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: String,
}

/// Why no sample could be made.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The input file is not JSON.
    #[error("the input is not valid JSON: {0}")]
    NotJson(String),
    /// The secrets the request needs are not configured.
    #[error("{0}")]
    NotConfigured(String),
}

fn compact(json_text: &str) -> Result<String, SampleError> {
    let v: Value =
        serde_json::from_str(json_text).map_err(|e| SampleError::NotJson(e.to_string()))?;
    Ok(v.to_string())
}

/// An encrypted, signed HTTP push of `event_json` to `<base_url>/webhooks/dingtalk/events`.
pub fn event_request(
    config: &DingTalkConfig,
    base_url: &str,
    event_json: &str,
    now_ms: i64,
) -> Result<SignedRequest, SampleError> {
    let crypto = super::crypto::CallbackCrypto::from_config(config).ok_or_else(|| {
        SampleError::NotConfigured(
            "set dingtalk.app_key, dingtalk.callback_token and dingtalk.aes_key (DINGBRIDGE_DINGTALK_APP_KEY, DINGBRIDGE_DINGTALK_CALLBACK_TOKEN, DINGBRIDGE_DINGTALK_AES_KEY)".into(),
        )
    })?;
    let plaintext = compact(event_json)?;
    let encrypt = crypto.encrypt(&plaintext);
    let timestamp = now_ms.to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let token = config
        .callback_token
        .as_ref()
        .map(|t| t.expose_secret().to_string())
        .unwrap_or_default();
    let msg_signature = crypto::signature(&token, &timestamp, &nonce, &encrypt);
    Ok(SignedRequest {
        url: format!(
            "{}/webhooks/dingtalk/events?msg_signature={msg_signature}&timestamp={timestamp}&nonce={nonce}",
            base_url.trim_end_matches('/')
        ),
        headers: vec![],
        body: serde_json::json!({ "encrypt": encrypt }).to_string(),
    })
}

/// A signed robot callback carrying `message_json` to `<base_url>/webhooks/dingtalk/robot`.
pub fn robot_request(
    config: &DingTalkConfig,
    base_url: &str,
    message_json: &str,
    now_ms: i64,
) -> Result<SignedRequest, SampleError> {
    let secret = config.robot_secret().ok_or_else(|| {
        SampleError::NotConfigured(
            "set dingtalk.robot_app_secret or dingtalk.app_secret (DINGBRIDGE_DINGTALK_ROBOT_APP_SECRET)".into(),
        )
    })?;
    let body = compact(message_json)?;
    let timestamp = now_ms.to_string();
    let sign = sign::robot_callback_sign(secret.expose_secret(), &timestamp);
    Ok(SignedRequest {
        url: format!("{}/webhooks/dingtalk/robot", base_url.trim_end_matches('/')),
        headers: vec![("timestamp".into(), timestamp), ("sign".into(), sign)],
        body,
    })
}

/// POSIX shell single-quoting.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl SignedRequest {
    /// The request as a `curl` command line.
    pub fn to_curl(&self) -> String {
        let mut parts = vec![
            "curl -sS -i -X POST".to_string(),
            shell_quote(&self.url),
            "-H".into(),
            shell_quote("Content-Type: application/json"),
        ];
        for (k, v) in &self.headers {
            parts.push("-H".into());
            parts.push(shell_quote(&format!("{k}: {v}")));
        }
        parts.push("--data-raw".into());
        parts.push(shell_quote(&self.body));
        parts.join(" ")
    }
}

/// Default target of the samples: `http://<listen>`, with a wildcard address replaced by loopback.
pub fn default_base_url(listen: &str) -> String {
    let listen = listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("http://{listen}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn config() -> DingTalkConfig {
        DingTalkConfig {
            app_key: Some("dingxxxxxxxxxxxx".into()),
            callback_token: Some(SecretString::from("tokenABC123")),
            aes_key: crate::config::AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
                .ok(),
            robot_app_secret: Some(SecretString::from("appSecretXYZ")),
            ..DingTalkConfig::default()
        }
    }

    /// Splits a command line of bare words and single-quoted words (what `to_curl` emits).
    fn shell_words(s: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    in_word = true;
                    for q in chars.by_ref() {
                        if q == '\'' {
                            break;
                        }
                        cur.push(q);
                    }
                }
                '\\' => {
                    in_word = true;
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ' ' => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                other => {
                    in_word = true;
                    cur.push(other);
                }
            }
        }
        if in_word {
            words.push(cur);
        }
        words
    }

    fn parse_curl(cmd: &str) -> (String, Vec<String>, String) {
        let words = shell_words(cmd);
        let url = words
            .iter()
            .find(|w| w.starts_with("http"))
            .expect("url")
            .clone();
        let headers = words
            .windows(2)
            .filter(|w| w[0] == "-H")
            .map(|w| w[1].clone())
            .collect();
        let body = words.last().expect("body").clone();
        (url, headers, body)
    }

    #[test]
    fn the_printed_event_command_decrypts_and_verifies() {
        let now = crate::store::now_ms();
        let event = "{\"EventType\": \"todo_task_create\", \"eventId\": \"it's-1\"}";
        let cmd = event_request(&config(), "http://127.0.0.1:8080/", event, now)
            .expect("sample")
            .to_curl();
        let (url, _, body) = parse_curl(&cmd);
        let url = url::Url::parse(&url).expect("url");
        assert_eq!(url.path(), "/webhooks/dingtalk/events");
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["timestamp"], now.to_string());
        let body: Value = serde_json::from_str(&body).expect("json body");
        let crypto =
            crate::dingtalk::crypto::CallbackCrypto::from_config(&config()).expect("crypto");
        let plain = crypto
            .decrypt_verified(
                &q["msg_signature"],
                &q["timestamp"],
                &q["nonce"],
                body["encrypt"].as_str().expect("encrypt"),
            )
            .expect("verifies");
        let v: Value = serde_json::from_str(&plain).expect("json");
        assert_eq!(v["eventId"], "it's-1");
    }

    #[test]
    fn the_printed_robot_command_carries_a_valid_sign() {
        let now = crate::store::now_ms();
        let message = "{\"msgId\":\"m1\",\"text\":{\"content\":\"it's\"}}";
        let cmd = robot_request(&config(), "http://h:1", message, now)
            .expect("sample")
            .to_curl();
        let (url, headers, body) = parse_curl(&cmd);
        assert_eq!(url, "http://h:1/webhooks/dingtalk/robot");
        let get = |name: &str| {
            headers
                .iter()
                .find_map(|h| h.strip_prefix(&format!("{name}: ")).map(str::to_string))
                .expect("header")
        };
        sign::verify_robot_callback("appSecretXYZ", &get("timestamp"), &get("sign"), now, 1000)
            .expect("sign verifies");
        assert_eq!(body, message);
    }

    #[test]
    fn missing_secrets_are_named() {
        let err = event_request(&DingTalkConfig::default(), "http://x", "{}", 0).expect_err("no");
        assert!(err.to_string().contains("dingtalk.aes_key"));
        assert!(default_base_url("0.0.0.0:8080").ends_with("127.0.0.1:8080"));
    }
}
