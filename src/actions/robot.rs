//! `dingtalk.send_message` to a custom group robot: `POST {dingtalk.oapi_base_url}/robot/send
//! ?access_token=…[&timestamp=…&sign=…]` with a `msgUuid` derived from the request's
//! Idempotency-Key, so a retried action cannot post twice. Only the access token of the
//! given webhook URL is used; the host is always the configured DingTalk base URL, so the
//! action cannot be aimed at another server.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ActionContext, DingTalkMessageInput};
use crate::error::{ApiError, ErrorCode};

/// Default of `dingtalk.oapi_base_url`.
pub const DEFAULT_OAPI_BASE_URL: &str = "https://oapi.dingtalk.com";

/// The `msgUuid` of a send: stable for one caller and Idempotency-Key, random otherwise.
pub fn msg_uuid(caller_id: &str, idempotency_key: Option<&str>) -> String {
    match idempotency_key {
        Some(k) => {
            let d = Sha256::digest(format!("{caller_id}:{k}").as_bytes());
            hex::encode(&d[..16])
        }
        None => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// Sends the message and maps DingTalk's answer.
pub async fn send(ctx: &ActionContext<'_>, i: &DingTalkMessageInput) -> Result<Value, ApiError> {
    let base = ctx
        .config
        .dingtalk
        .oapi_base_url
        .as_deref()
        .unwrap_or(DEFAULT_OAPI_BASE_URL)
        .trim_end_matches('/');
    let token = i.access_token.as_deref().unwrap_or_default();
    let mut url = url::Url::parse(&format!("{base}/robot/send"))
        .map_err(|e| ApiError::internal(format!("oapi base url: {e}")))?;
    url.query_pairs_mut().append_pair("access_token", token);
    let mut url = url.to_string();
    if let Some(secret) = &i.secret {
        let now = chrono::Utc::now().timestamp_millis();
        url.push('&');
        url.push_str(&crate::dingtalk::sign::robot_send_query(secret, now));
    }
    let msg_uuid = msg_uuid(&ctx.caller.id, ctx.idempotency_key);
    let mut body = match i.msgtype.as_str() {
        "markdown" => json!({
            "msgtype": "markdown",
            "markdown": { "title": i.title.clone().unwrap_or_default(), "text": i.text },
        }),
        _ => json!({ "msgtype": "text", "text": { "content": i.text } }),
    };
    body["at"] = json!({
        "atMobiles": i.at_mobiles, "atUserIds": i.at_user_ids, "isAtAll": i.at_all,
    });
    body["msgUuid"] = json!(msg_uuid);
    let resp = ctx
        .http
        .post(&url)
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e.without_url(), "dingtalk robot send failed");
            ApiError::new(
                ErrorCode::UpstreamError,
                "DingTalk could not be reached; retry later",
            )
        })?;
    let status = resp.status();
    if status.as_u16() == 429 {
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(60);
        return Err(ApiError::rate_limited(
            "DingTalk is throttling this robot",
            after,
        ));
    }
    if !status.is_success() {
        return Err(ApiError::new(
            ErrorCode::UpstreamError,
            format!("DingTalk answered HTTP {}", status.as_u16()),
        ));
    }
    let answer: Value = resp.json().await.map_err(|_| {
        ApiError::new(
            ErrorCode::UpstreamError,
            "DingTalk answered something that is not JSON",
        )
    })?;
    let errcode = match &answer["errcode"] {
        Value::Number(n) => n.as_i64().unwrap_or(-1),
        Value::String(s) => s.parse().unwrap_or(-1),
        _ => -1,
    };
    let errmsg = answer["errmsg"].as_str().unwrap_or_default().to_string();
    match errcode {
        0 => Ok(json!({
            "ok": true,
            "target": "robot",
            "msg_uuid": msg_uuid,
            "msgtype": i.msgtype,
            "sent_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })),
        // 20 messages a minute per robot, then throttled for 10 minutes.
        410100 => Err(ApiError::rate_limited(
            format!("DingTalk is throttling this robot ({errmsg}); it allows 20 messages a minute"),
            60,
        )),
        -1 => Err(ApiError::rate_limited(
            format!("DingTalk is busy ({errmsg})"),
            10,
        )),
        310000 => Err(ApiError::invalid_field(
            if errmsg.contains("keywords") {
                "text"
            } else {
                "secret"
            },
            format!("DingTalk refused the robot's security check: {errmsg}"),
        )),
        400101 | 400102 | 400106 | 400013 => Err(ApiError::invalid_field(
            "webhook_url",
            format!("DingTalk does not accept this robot ({errcode}: {errmsg})"),
        )),
        430101..=430104 => Err(ApiError::invalid_field(
            "text",
            format!("DingTalk refused the content ({errcode}: {errmsg})"),
        )),
        _ => Err(ApiError::new(
            ErrorCode::UpstreamError,
            format!("DingTalk answered errcode {errcode}: {errmsg}"),
        )),
    }
}
