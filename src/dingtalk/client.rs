//! DingTalk server API client: one cached app access token, DingTalk's idempotency handles
//! on every write (`x-client-token` for calendar, `sourceId` for todos, `msgUuid` for
//! robot sends), and its limits respected by waiting rather than dropping: 20 calls/s per
//! app per API, plus a monthly call budget counted for Standard-edition organisations.
//! Custom (webhook) robots have their own sender and budget: [`super::custom_robot`].

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::{
    store::{SharedStore, now_ms},
    worker::JobFailure,
};

/// A failed DingTalk call, with what a retry needs to know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("DingTalk {status} {code}: {message}")]
pub struct DingTalkError {
    /// HTTP status (200 for old-style APIs reporting an `errcode`).
    pub status: u16,
    /// DingTalk's error code (`code` or `errcode`).
    pub code: String,
    /// DingTalk's message.
    pub message: String,
    /// DingTalk's request id, for support.
    pub request_id: Option<String>,
    /// Wait this long before retrying (throttling).
    pub retry_after: Option<Duration>,
    /// Retrying cannot help (bad input, permission, security check).
    pub permanent: bool,
}

impl DingTalkError {
    /// The call did not get an answer.
    pub(crate) fn transport(e: reqwest::Error) -> Self {
        Self {
            status: 0,
            code: "transport".into(),
            message: e.without_url().to_string(),
            request_id: None,
            retry_after: None,
            permanent: false,
        }
    }
}

impl From<DingTalkError> for JobFailure {
    fn from(e: DingTalkError) -> Self {
        let mut f = if e.permanent {
            JobFailure::permanent(e.to_string())
        } else {
            JobFailure::transient(e.to_string())
        };
        f.retry_after = e.retry_after;
        f
    }
}

/// Maps an error answer (new-style `{code,message,requestid}` with a 4xx/5xx, or
/// old-style `{errcode,errmsg}`) to a [`DingTalkError`]; `None` when it is a success.
pub fn classify(status: u16, body: &Value) -> Option<DingTalkError> {
    let errcode = body.get("errcode").and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    });
    if (200..300).contains(&status) && errcode.is_none_or(|c| c == 0) {
        return None;
    }
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| body.get(*n).and_then(Value::as_str))
            .map(str::to_string)
    };
    let code = match errcode {
        Some(c) if c != 0 => c.to_string(),
        _ => field(&["code", "Code"]).unwrap_or_else(|| format!("http_{status}")),
    };
    let message = field(&["message", "Message", "errmsg"]).unwrap_or_default();
    let request_id = field(&["requestid", "RequestId", "requestId", "request_id"]);
    let (retry_after, permanent) = match code.as_str() {
        // Per-app-per-API QPS: DingTalk advises waiting about a second.
        "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi" | "90018" => {
            (Some(Duration::from_secs(1)), false)
        }
        "Forbidden.AccessDenied.QpmLimitForAppkeyAndApi" => (Some(Duration::from_secs(60)), false),
        "Forbidden.AccessDenied.QpsLimitForApi" | "90002" => (Some(Duration::from_secs(2)), false),
        // Monthly quota: nothing helps until the quota resets; retry slowly.
        "Forbidden.AccessDenied.ApiCountLimitForOrg" | "90020" => {
            (Some(Duration::from_secs(3600)), false)
        }
        // Custom robot over 20/min is blocked for 10 minutes.
        "410100" | "send.too.fast" | "send.byToken.tooFast" => {
            (Some(Duration::from_secs(600)), false)
        }
        "-1" => (Some(Duration::from_secs(2)), false),
        // Security check (keyword, sign, IP) and bad input never pass on retry.
        "310000" | "40035" | "43004" | "400013" | "400101" | "400102" | "400105" | "400106" => {
            (None, true)
        }
        _ => (
            None,
            (400..500).contains(&status) && !crate::upstream::is_retryable(status),
        ),
    };
    Some(DingTalkError {
        status,
        code,
        message,
        request_id,
        retry_after,
        permanent,
    })
}

fn is_auth_failure(e: &DingTalkError) -> bool {
    matches!(
        e.code.as_str(),
        "InvalidAuthentication" | "40014" | "42001" | "40001"
    ) || e.status == 401
}

/// Limits and identity of one DingTalk app.
#[derive(Debug, Clone)]
pub struct DingTalkSettings {
    /// New-style API base URL.
    pub api_base_url: String,
    /// Old-style API base URL.
    pub oapi_base_url: String,
    /// App key (Client ID).
    pub app_key: String,
    /// App secret (Client Secret).
    pub app_secret: SecretString,
    /// Calls per second per API for this app.
    pub qps_per_api: u64,
    /// Calls per calendar month counted against the organisation's quota.
    pub monthly_budget: u64,
}

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

/// Client of DingTalk's server APIs for one app.
pub struct DingTalkClient {
    http: reqwest::Client,
    settings: DingTalkSettings,
    store: SharedStore,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    warned_month: std::sync::Mutex<Option<String>>,
}

fn month_key() -> String {
    chrono::Utc::now().format("%Y-%m").to_string()
}

impl DingTalkSettings {
    /// Settings from the configuration; `None` unless app key and secret are both set.
    pub fn from_config(c: &crate::config::DingTalkConfig) -> Option<Self> {
        Some(Self {
            api_base_url: c.api_base_url().to_string(),
            oapi_base_url: c.oapi_base_url().to_string(),
            app_key: c.app_key.clone()?,
            app_secret: c.app_secret.clone()?,
            qps_per_api: c.qps_per_api.max(1),
            monthly_budget: c.monthly_call_budget,
        })
    }
}

impl DingTalkClient {
    /// A client for one app; the store carries the shared rate and budget counters.
    pub fn new(http: reqwest::Client, settings: DingTalkSettings, store: SharedStore) -> Self {
        Self {
            http,
            settings,
            store,
            token: tokio::sync::Mutex::new(None),
            warned_month: std::sync::Mutex::new(None),
        }
    }

    /// The app access token, fetched once and refreshed 10 minutes before it expires;
    /// concurrent callers share one refresh.
    pub async fn access_token(&self) -> Result<String, DingTalkError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        // The old-style token endpoint; its tokens also work on api.dingtalk.com.
        let url = format!("{}/gettoken", self.settings.oapi_base_url);
        let resp = self
            .http
            .get(&url)
            .query(&[
                ("appkey", self.settings.app_key.as_str()),
                ("appsecret", self.settings.app_secret.expose_secret()),
            ])
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .map_err(DingTalkError::transport)?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if let Some(mut e) = classify(status, &body) {
            if matches!(
                e.code.as_str(),
                "40089" | "40001" | "invalidClientIdOrSecret"
            ) {
                e.message = format!(
                    "{} — DingTalk rejected the app key/secret; check dingtalk.app_key and dingtalk.app_secret",
                    e.message
                );
            }
            return Err(e);
        }
        let value = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| DingTalkError {
                status,
                code: "bad_token_response".into(),
                message: "no access_token in DingTalk's answer".into(),
                request_id: None,
                retry_after: None,
                permanent: false,
            })?
            .to_string();
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(7200);
        // DingTalk suggests refreshing ~10 minutes early; short-lived tokens at half life.
        let early = Duration::from_secs((lifetime / 2).min(600));
        *guard = Some(CachedToken {
            value: value.clone(),
            refresh_at: Instant::now() + Duration::from_secs(lifetime).saturating_sub(early),
        });
        Ok(value)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// Counts one call against the monthly budget (metric + a warning at 80 %).
    async fn count_call(&self) {
        let month = month_key();
        let key = format!("dingtalk:calls:{}:{month}", self.settings.app_key);
        match self
            .store
            .incr(&key, 1, Some(Duration::from_secs(32 * 24 * 3600)))
            .await
        {
            Ok(n) => {
                metrics::gauge!("dingtalk_api_calls_this_month").set(n as f64);
                metrics::gauge!("dingtalk_api_monthly_budget")
                    .set(self.settings.monthly_budget as f64);
                let budget = self.settings.monthly_budget.max(1);
                if n * 100 >= budget * 80 {
                    let mut warned = self.warned_month.lock().unwrap_or_else(|p| p.into_inner());
                    if warned.as_deref() != Some(month.as_str()) {
                        *warned = Some(month.clone());
                        tracing::warn!(
                            calls = n,
                            budget,
                            "DingTalk API calls this month reached {}% of the budget",
                            n * 100 / budget
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count DingTalk call"),
        }
    }

    /// Waits for a slot in this second's per-API window (shared by all instances).
    async fn rate_slot(&self, api: &str) -> Result<(), DingTalkError> {
        for _ in 0..20 {
            let now = now_ms();
            let second = now / 1000;
            let key = format!("dingtalk:qps:{}:{api}:{second}", self.settings.app_key);
            match self.store.incr(&key, 1, Some(Duration::from_secs(3))).await {
                Ok(n) if n <= self.settings.qps_per_api => return Ok(()),
                Ok(_) => {
                    let wait = (1000 - now.rem_euclid(1000)) as u64 + rand::random::<u64>() % 50;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                // Without the store the limiter cannot coordinate; DingTalk's own limit
                // still answers with a retryable error.
                Err(_) => return Ok(()),
            }
        }
        Err(DingTalkError {
            status: 429,
            code: "local_rate_limit".into(),
            message: format!("no free slot for {api} within 20 s"),
            request_id: None,
            retry_after: Some(Duration::from_secs(1)),
            permanent: false,
        })
    }

    /// Sends one call built by `build` (given the access token): waits for a rate slot,
    /// counts it against the budget, maps errors, and retries once after a token refresh.
    async fn call(
        &self,
        api: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Value, DingTalkError> {
        let mut last = None;
        for _ in 0..2 {
            self.rate_slot(api).await?;
            self.count_call().await;
            let token = self.access_token().await?;
            let resp = build(&token)
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .map_err(DingTalkError::transport)?;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let value: Value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            match classify(status, &value) {
                None => return Ok(value),
                Some(e) if is_auth_failure(&e) && last.is_none() => {
                    self.forget_token().await;
                    last = Some(e);
                }
                Some(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| DingTalkError {
            status: 401,
            code: "InvalidAuthentication".into(),
            message: "token refused twice".into(),
            request_id: None,
            retry_after: None,
            permanent: false,
        }))
    }

    /// One new-style API call with the token header.
    pub async fn api(
        &self,
        method: reqwest::Method,
        api: &str,
        path: &str,
        body: Option<&Value>,
        client_token: Option<&str>,
    ) -> Result<Value, DingTalkError> {
        let url = format!("{}{path}", self.settings.api_base_url);
        self.call(api, |token| {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("x-acs-dingtalk-access-token", token);
            if let Some(t) = client_token {
                req = req.header("x-client-token", t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            req
        })
        .await
    }

    /// One old-style GET (`?access_token=…&query`).
    pub async fn oapi_get(
        &self,
        api: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, DingTalkError> {
        let url = format!("{}{path}", self.settings.oapi_base_url);
        self.call(api, |token| {
            self.http
                .get(&url)
                .query(&[("access_token", token)])
                .query(query)
        })
        .await
    }

    /// One old-style POST (`?access_token=`); errors are `errcode` in a 200.
    pub async fn oapi(&self, api: &str, path: &str, body: &Value) -> Result<Value, DingTalkError> {
        let url = format!("{}{path}", self.settings.oapi_base_url);
        self.call(api, |token| {
            self.http
                .post(&url)
                .query(&[("access_token", token)])
                .json(body)
        })
        .await
    }

    /// A calendar event (`userId` is a unionId; calendar `primary`).
    pub async fn get_calendar_event(
        &self,
        union_id: &str,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<Value, DingTalkError> {
        let path = format!(
            "/v1.0/calendar/users/{}/calendars/{}/events/{}",
            enc(union_id),
            enc(calendar_id),
            enc(event_id)
        );
        self.api(reqwest::Method::GET, "calendar.get", &path, None, None)
            .await
    }

    /// Creates a calendar event; the same `client_token` within a day is the same request.
    pub async fn create_calendar_event(
        &self,
        union_id: &str,
        event: &Value,
        client_token: &str,
    ) -> Result<Value, DingTalkError> {
        let path = format!(
            "/v1.0/calendar/users/{}/calendars/primary/events",
            enc(union_id)
        );
        self.api(
            reqwest::Method::POST,
            "calendar.create",
            &path,
            Some(event),
            Some(client_token),
        )
        .await
    }

    /// Updates a calendar event (organizer only; send only changed fields plus `id`).
    pub async fn update_calendar_event(
        &self,
        union_id: &str,
        event_id: &str,
        event: &Value,
        client_token: &str,
    ) -> Result<Value, DingTalkError> {
        let path = format!(
            "/v1.0/calendar/users/{}/calendars/primary/events/{}",
            enc(union_id),
            enc(event_id)
        );
        self.api(
            reqwest::Method::PUT,
            "calendar.update",
            &path,
            Some(event),
            Some(client_token),
        )
        .await
    }

    /// Deletes a calendar event; an already deleted one counts as success.
    pub async fn delete_calendar_event(
        &self,
        union_id: &str,
        event_id: &str,
    ) -> Result<(), DingTalkError> {
        let path = format!(
            "/v1.0/calendar/users/{}/calendars/primary/events/{}",
            enc(union_id),
            enc(event_id)
        );
        match self
            .api(
                reqwest::Method::DELETE,
                "calendar.delete",
                &path,
                None,
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == 404 || e.code.contains("NotExist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A todo task.
    pub async fn get_todo(&self, union_id: &str, task_id: &str) -> Result<Value, DingTalkError> {
        let path = format!("/v1.0/todo/users/{}/tasks/{}", enc(union_id), enc(task_id));
        self.api(reqwest::Method::GET, "todo.get", &path, None, None)
            .await
    }

    /// The task created for `source_id`, if any (DingTalk keeps one task per sourceId).
    pub async fn find_todo_by_source(
        &self,
        union_id: &str,
        source_id: &str,
    ) -> Result<Option<Value>, DingTalkError> {
        let path = format!(
            "/v1.0/todo/users/{}/tasks/sources/{}",
            enc(union_id),
            enc(source_id)
        );
        match self
            .api(reqwest::Method::GET, "todo.by_source", &path, None, None)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a todo; `task` must carry `sourceId` so a retry finds instead of duplicating.
    pub async fn create_todo(&self, union_id: &str, task: &Value) -> Result<Value, DingTalkError> {
        if let Some(source) = task.get("sourceId").and_then(Value::as_str)
            && let Some(existing) = self.find_todo_by_source(union_id, source).await?
        {
            return Ok(existing);
        }
        let path = format!("/v1.0/todo/users/{}/tasks", enc(union_id));
        self.api(
            reqwest::Method::POST,
            "todo.create",
            &path,
            Some(task),
            None,
        )
        .await
    }

    /// Updates a todo (subject, description, dueTime, done…).
    pub async fn update_todo(
        &self,
        union_id: &str,
        task_id: &str,
        changes: &Value,
    ) -> Result<Value, DingTalkError> {
        let path = format!("/v1.0/todo/users/{}/tasks/{}", enc(union_id), enc(task_id));
        self.api(
            reqwest::Method::PUT,
            "todo.update",
            &path,
            Some(changes),
            None,
        )
        .await
    }

    /// Deletes a todo; one already gone counts as deleted.
    pub async fn delete_todo(&self, union_id: &str, task_id: &str) -> Result<(), DingTalkError> {
        let path = format!("/v1.0/todo/users/{}/tasks/{}", enc(union_id), enc(task_id));
        match self
            .api(reqwest::Method::DELETE, "todo.delete", &path, None, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == 404 || e.code.contains("NotExist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A user's details (old-style API; on the quota-exempt list).
    pub async fn get_user(&self, user_id: &str) -> Result<Value, DingTalkError> {
        let v = self
            .oapi(
                "user.get",
                "/topapi/v2/user/get",
                &json!({ "userid": user_id, "language": "en_US" }),
            )
            .await?;
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    /// An app robot message to a group.
    pub async fn send_group_message(
        &self,
        robot_code: &str,
        open_conversation_id: &str,
        msg_key: &str,
        msg_param: &Value,
    ) -> Result<Value, DingTalkError> {
        let body = json!({
            "robotCode": robot_code,
            "openConversationId": open_conversation_id,
            "msgKey": msg_key,
            "msgParam": msg_param.to_string(),
        });
        self.api(
            reqwest::Method::POST,
            "robot.group_send",
            "/v1.0/robot/groupMessages/send",
            Some(&body),
            None,
        )
        .await
    }

    /// An app robot message to users (1:1).
    pub async fn send_user_messages(
        &self,
        robot_code: &str,
        user_ids: &[String],
        msg_key: &str,
        msg_param: &Value,
    ) -> Result<Value, DingTalkError> {
        let body = json!({
            "robotCode": robot_code,
            "userIds": user_ids,
            "msgKey": msg_key,
            "msgParam": msg_param.to_string(),
        });
        self.api(
            reqwest::Method::POST,
            "robot.oto_send",
            "/v1.0/robot/oToMessages/batchSend",
            Some(&body),
            None,
        )
        .await
    }
}

fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_answers_are_not_errors() {
        assert!(classify(200, &json!({"errcode": 0, "errmsg": "ok"})).is_none());
        assert!(classify(200, &json!({"errcode": "0", "errmsg": "ok"})).is_none());
        assert!(classify(200, &json!({"processQueryKey": "k"})).is_none());
    }

    #[test]
    fn throttling_codes_become_retries_with_a_wait() {
        let qps = classify(
            403,
            &json!({"code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "message": "x", "requestid": "r1"}),
        )
        .expect("error");
        assert_eq!(qps.retry_after, Some(Duration::from_secs(1)));
        assert!(!qps.permanent);
        assert_eq!(qps.request_id.as_deref(), Some("r1"));
        let robot =
            classify(200, &json!({"errcode": 410100, "errmsg": "send too fast"})).expect("error");
        assert_eq!(robot.retry_after, Some(Duration::from_secs(600)));
        let old = classify(200, &json!({"errcode": 90018, "errmsg": "qps"})).expect("error");
        assert_eq!(old.retry_after, Some(Duration::from_secs(1)));
    }

    #[test]
    fn security_and_input_errors_are_permanent() {
        let sign =
            classify(200, &json!({"errcode": 310000, "errmsg": "sign not match"})).expect("e");
        assert!(sign.permanent);
        let bad = classify(400, &json!({"code": "invalidParameter", "message": "x"})).expect("e");
        assert!(bad.permanent);
        let busy = classify(503, &json!({"code": "ServiceUnavailable"})).expect("e");
        assert!(!busy.permanent);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("a b/c+d"), "a%20b%2Fc%2Bd");
    }
}
