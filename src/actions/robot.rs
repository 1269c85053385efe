//! `dingtalk.send_message` to a custom group robot: `POST {dingtalk.oapi_base_url}/robot/send
//! ?access_token=…[&timestamp=…&sign=…]` with a `msgUuid` derived from the request's
//! Idempotency-Key, so a retried action cannot post twice. Only the access token of the
//! given webhook URL is used; the host is always the configured DingTalk base URL, so the
//! action cannot be aimed at another server.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ActionContext, call::DingTalkMessageInput};
use crate::{
    dingtalk::{client::DingTalkError, custom_robot},
    error::{ApiError, ErrorCode},
    retry_after::whole_seconds,
};

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

/// Sends the message through the one custom-robot sender (shared budget and back-off)
/// and maps DingTalk's answer.
pub async fn send(ctx: &ActionContext<'_>, i: &DingTalkMessageInput) -> Result<Value, ApiError> {
    let base = ctx.config.dingtalk.oapi_base_url().trim_end_matches('/');
    let token = i.access_token.as_deref().unwrap_or_default();
    let mut url = url::Url::parse(&format!("{base}/robot/send"))
        .map_err(|e| ApiError::internal(format!("oapi base url: {e}")))?;
    url.query_pairs_mut().append_pair("access_token", token);
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
    custom_robot::send(
        ctx.http,
        ctx.store,
        url.as_str(),
        i.secret.as_deref(),
        &body,
        &msg_uuid,
    )
    .await
    .map_err(api_error)?;
    Ok(json!({
        "ok": true,
        "target": "robot",
        "msg_uuid": msg_uuid,
        "msgtype": i.msgtype,
        "sent_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
}

/// The action's answer to a failed send: throttling is 429 with the sender's wait (the
/// caller retries; nothing is queued on its behalf), refusals name the input field.
fn api_error(e: DingTalkError) -> ApiError {
    let wait = |default: u64| e.retry_after.map_or(default, whole_seconds);
    let errmsg = &e.message;
    match e.code.as_str() {
        custom_robot::BUDGET_USED => ApiError::rate_limited(
            "this robot already sent 20 messages in the last minute (DingTalk's limit); retry after the wait",
            wait(60),
        ),
        custom_robot::BLOCKED | "410100" => ApiError::rate_limited(
            format!("DingTalk is throttling this robot ({errmsg}); it allows 20 messages a minute"),
            wait(custom_robot::BLOCKED_FOR.as_secs()),
        ),
        "transport" => {
            tracing::warn!(error = %errmsg, "dingtalk robot send failed");
            ApiError::new(
                ErrorCode::UpstreamError,
                "DingTalk could not be reached; retry later",
            )
        }
        _ if e.status == 429 => {
            ApiError::rate_limited("DingTalk is throttling this robot", wait(60))
        }
        _ if !(200..300).contains(&e.status) => ApiError::new(
            ErrorCode::UpstreamError,
            format!("DingTalk answered HTTP {}", e.status),
        ),
        "not_json" => ApiError::new(
            ErrorCode::UpstreamError,
            "DingTalk answered something that is not JSON",
        ),
        "-1" => ApiError::rate_limited(format!("DingTalk is busy ({errmsg})"), wait(10)),
        "310000" => ApiError::invalid_field(
            if errmsg.contains("keywords") {
                "text"
            } else {
                "secret"
            },
            format!("DingTalk refused the robot's security check: {errmsg}"),
        ),
        "400101" | "400102" | "400106" | "400013" => ApiError::invalid_field(
            "webhook_url",
            format!("DingTalk does not accept this robot ({}: {errmsg})", e.code),
        ),
        "430101" | "430102" | "430103" | "430104" => ApiError::invalid_field(
            "text",
            format!("DingTalk refused the content ({}: {errmsg})", e.code),
        ),
        code => ApiError::new(
            ErrorCode::UpstreamError,
            format!("DingTalk answered errcode {code}: {errmsg}"),
        ),
    }
}
