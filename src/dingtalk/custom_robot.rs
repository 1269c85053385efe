//! The one sender to DingTalk custom group robots (a `robot/send?access_token=…` webhook or
//! a conversation's session webhook), used by the `dingtalk.send_message` action and the
//! Outlook → DingTalk relay alike: signed when given the robot's `SEC…` secret, with
//! `msgUuid` so a retried send is not posted twice, and held to DingTalk's limit of 20
//! messages a minute per robot, after which DingTalk blocks the robot for 10 minutes
//! (`410100`). The budget and the block live in the store, so every instance sharing it,
//! and both paths, count against the same robot.
//!
//! The budget is 20 *slots* per robot, each a store lease taken for a minute and never
//! released early: a send needs a free slot, so no 60 s window ever holds more than 20
//! sends (a fixed per-minute counter lets 40 through across a minute boundary).

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{client::DingTalkError, client::classify, sign};
use crate::store::{SharedStore, now_ms};

/// Messages a custom robot accepts in any minute.
pub const PER_MINUTE: u64 = 20;
/// How long DingTalk blocks a robot that went over [`PER_MINUTE`] (`410100`).
pub const BLOCKED_FOR: Duration = Duration::from_secs(600);
/// How long a send holds its slot: a minute, plus a margin for the time between taking
/// the slot and the message reaching DingTalk.
const SLOT_TTL: Duration = Duration::from_millis(60_500);
/// Per-send timeout.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Code of the error when this robot's minute budget is used up (nothing was sent).
pub const BUDGET_USED: &str = "robot_minute_budget";
/// Code of the error while DingTalk blocks this robot after a `410100` (nothing was sent).
pub const BLOCKED: &str = "robot_blocked";

/// The store name of a robot: its access token when the URL has one (the action and a
/// route may spell the same robot's URL differently), else the whole URL; hashed, so no
/// token is written to the store.
pub fn robot_id(webhook_url: &str) -> String {
    let token = url::Url::parse(webhook_url).ok().and_then(|u| {
        u.query_pairs()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    });
    let basis = match token {
        Some(t) => format!("access_token:{t}"),
        None => format!("url:{webhook_url}"),
    };
    hex::encode(&Sha256::digest(basis.as_bytes())[..8])
}

/// Posts `message` (a webhook body without `msgUuid`) to the robot at `webhook_url`.
///
/// `Err` with code [`BUDGET_USED`] or [`BLOCKED`] and a `retry_after` when the robot may
/// not send now; otherwise DingTalk's answer classified by [`classify`] (a `429` without
/// `Retry-After` waits a minute).
pub async fn send(
    http: &reqwest::Client,
    store: &SharedStore,
    webhook_url: &str,
    secret: Option<&str>,
    message: &Value,
    msg_uuid: &str,
) -> Result<Value, DingTalkError> {
    let robot = robot_id(webhook_url);
    if let Some(wait) = blocked_for(store, &robot).await {
        return Err(refusal(
            BLOCKED,
            "DingTalk blocks this robot for 10 minutes after it sent too fast",
            wait,
        ));
    }
    if let Some(wait) = take_slot(store, &robot).await {
        return Err(refusal(
            BUDGET_USED,
            "this robot already sent 20 messages in the last minute",
            wait,
        ));
    }
    let now = now_ms();
    let mut url = webhook_url.to_string();
    if let Some(secret) = secret {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&sign::robot_send_query(secret, now));
    }
    let mut body = message.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("msgUuid".into(), Value::String(msg_uuid.to_string()));
    }
    let resp = http
        .post(&url)
        .timeout(SEND_TIMEOUT)
        .json(&body)
        .send()
        .await
        .map_err(DingTalkError::transport)?;
    let status = resp.status().as_u16();
    let header_wait = crate::retry_after::of(resp.headers());
    let bytes = resp.bytes().await.map_err(DingTalkError::transport)?;
    let Ok(answer) = serde_json::from_slice::<Value>(&bytes) else {
        let mut e = classify(status, &Value::Null).unwrap_or_else(|| DingTalkError {
            status,
            code: "not_json".into(),
            message: "DingTalk answered something that is not JSON".into(),
            request_id: None,
            retry_after: None,
            permanent: false,
        });
        fill_wait(&mut e, header_wait);
        return Err(e);
    };
    match classify(status, &answer) {
        None => Ok(answer),
        Some(mut e) => {
            if e.code == "410100" {
                block(store, &robot).await;
            }
            fill_wait(&mut e, header_wait);
            Err(e)
        }
    }
}

/// A throttled answer waits for its `Retry-After`, or a minute.
fn fill_wait(e: &mut DingTalkError, header_wait: Option<Duration>) {
    if e.status == 429 && e.retry_after.is_none() {
        e.retry_after = Some(header_wait.unwrap_or(Duration::from_secs(60)));
    }
}

fn refusal(code: &str, message: &str, wait: Duration) -> DingTalkError {
    DingTalkError {
        status: 429,
        code: code.into(),
        message: message.into(),
        request_id: None,
        retry_after: Some(wait),
        permanent: false,
    }
}

fn blocked_key(robot: &str) -> String {
    format!("dingtalk:robot:{robot}:blocked")
}

fn slot_key(robot: &str, slot: u64) -> String {
    format!("dingtalk:robot:{robot}:slot:{slot}")
}

/// The rest of DingTalk's block on this robot, if any.
async fn blocked_for(store: &SharedStore, robot: &str) -> Option<Duration> {
    let until: i64 = store
        .kv_get(&blocked_key(robot))
        .await
        .ok()
        .flatten()?
        .parse()
        .ok()?;
    let left = until - now_ms();
    (left > 0).then(|| Duration::from_millis(left as u64))
}

/// Records DingTalk's block, so that both paths and every instance hold off.
async fn block(store: &SharedStore, robot: &str) {
    let until = now_ms() + BLOCKED_FOR.as_millis() as i64;
    if let Err(e) = store
        .kv_put(&blocked_key(robot), &until.to_string(), Some(BLOCKED_FOR))
        .await
    {
        tracing::warn!(error = %e, "could not record the robot's 410100 block");
    }
    metrics::counter!("dingtalk_robot_blocked_total").increment(1);
}

/// Takes one of the robot's slots for a minute: `None` when taken (send now), else how
/// long until the oldest slot frees. A store failure lets the send through, as before:
/// DingTalk's own limit still applies and its `410100` is honoured.
async fn take_slot(store: &SharedStore, robot: &str) -> Option<Duration> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    // Start at a random slot so that concurrent senders rarely contend for the same one.
    let start = u64::from(uuid::Uuid::new_v4().as_fields().1);
    for i in 0..PER_MINUTE {
        let slot = (start + i) % PER_MINUTE;
        match store
            .lease_acquire(&slot_key(robot, slot), &token, SLOT_TTL)
            .await
        {
            Ok(true) => {
                // When the slot frees, for the wait told to refused senders.
                let frees = now_ms() + SLOT_TTL.as_millis() as i64;
                let _ = store
                    .kv_put(&slot_key(robot, slot), &frees.to_string(), Some(SLOT_TTL))
                    .await;
                return None;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "robot budget unavailable; sending unmetered");
                return None;
            }
        }
    }
    let now = now_ms();
    let mut soonest: Option<i64> = None;
    for slot in 0..PER_MINUTE {
        if let Ok(Some(v)) = store.kv_get(&slot_key(robot, slot)).await
            && let Ok(frees) = v.parse::<i64>()
        {
            soonest = Some(soonest.map_or(frees, |s| s.min(frees)));
        }
    }
    // Without a note (lost in a crash), wait out a whole slot: a shorter guess would
    // spend the caller's retries.
    let wait = soonest.map_or(SLOT_TTL.as_millis() as i64, |s| (s - now).max(0)) + 250;
    Some(Duration::from_millis(wait as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_robot_is_named_by_its_access_token_whatever_the_host() {
        assert_eq!(
            robot_id("https://oapi.dingtalk.com/robot/send?access_token=abc"),
            robot_id("http://127.0.0.1:9/robot/send?access_token=abc&x=1")
        );
        assert_ne!(
            robot_id("https://oapi.dingtalk.com/robot/send?access_token=abc"),
            robot_id("https://oapi.dingtalk.com/robot/send?access_token=abd")
        );
        let session = "https://oapi.dingtalk.com/robot/sendBySession?session=s1";
        assert_eq!(robot_id(session), robot_id(session));
        assert!(!robot_id(session).contains("s1"));
    }
}
