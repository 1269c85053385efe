//! Old-style (`oapi.dingtalk.com`) API client with a cached access token.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;

/// Refresh the token this long before DingTalk says it expires.
const REFRESH_EARLY: Duration = Duration::from_secs(5 * 60);

/// A failed API call; never contains the app secret or the access token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request did not get an answer.
    #[error("request to {path} failed: {message}")]
    Transport {
        /// API path.
        path: String,
        /// Cause, without the URL (which may hold credentials).
        message: String,
    },
    /// DingTalk answered with an error code.
    #[error("{path} answered errcode {errcode}: {errmsg}")]
    Api {
        /// API path.
        path: String,
        /// DingTalk's `errcode` (or the HTTP status when the body has none).
        errcode: i64,
        /// DingTalk's `errmsg`.
        errmsg: String,
    },
}

/// Client of the old-style API for one app.
pub struct OapiClient {
    http: reqwest::Client,
    base_url: String,
    app_key: String,
    app_secret: SecretString,
    token: Mutex<Option<(String, Instant)>>,
}

impl OapiClient {
    /// A client for this base URL (e.g. `https://oapi.dingtalk.com`) and app.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        app_key: String,
        app_secret: SecretString,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            app_key,
            app_secret,
            token: Mutex::new(None),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        let transport = |e: reqwest::Error| ClientError::Transport {
            path: path.to_string(),
            message: e.without_url().to_string(),
        };
        let resp = self
            .http
            .get(format!("{}{path}", self.base_url))
            .query(query)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(transport)?;
        let errcode = body.get("errcode").and_then(Value::as_i64).unwrap_or(0);
        if !status.is_success() || errcode != 0 {
            return Err(ClientError::Api {
                path: path.to_string(),
                errcode: if errcode != 0 {
                    errcode
                } else {
                    i64::from(status.as_u16())
                },
                errmsg: body
                    .get("errmsg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        Ok(body)
    }

    /// A valid access token, fetched with `GET /gettoken` and cached until 5 min before expiry.
    pub async fn access_token(&self) -> Result<String, ClientError> {
        let mut cached = self.token.lock().await;
        if let Some((token, valid_until)) = cached.as_ref()
            && Instant::now() < *valid_until
        {
            return Ok(token.clone());
        }
        let body = self
            .get(
                "/gettoken",
                &[
                    ("appkey", self.app_key.as_str()),
                    ("appsecret", self.app_secret.expose_secret()),
                ],
            )
            .await?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ClientError::Api {
                path: "/gettoken".into(),
                errcode: -1,
                errmsg: "no access_token in the answer".into(),
            })?
            .to_string();
        let expires_in = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(7200);
        let valid_for = Duration::from_secs(expires_in).saturating_sub(REFRESH_EARLY);
        *cached = Some((token.clone(), Instant::now() + valid_for));
        Ok(token)
    }

    /// Forgets the cached token (after DingTalk rejected it).
    pub async fn invalidate_token(&self) {
        *self.token.lock().await = None;
    }

    /// `GET <path>?access_token=…&<query>`; a rejected token is refreshed once.
    pub async fn get_authed(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let token = self.access_token().await?;
        match self.get(path, &with_token(&token, query)).await {
            // 40014 invalid token, 42001 expired token.
            Err(ClientError::Api { errcode, .. }) if errcode == 40014 || errcode == 42001 => {
                self.invalidate_token().await;
                let token = self.access_token().await?;
                self.get(path, &with_token(&token, query)).await
            }
            other => other,
        }
    }
}

fn with_token<'a>(token: &'a str, query: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut q = vec![("access_token", token)];
    q.extend_from_slice(query);
    q
}
