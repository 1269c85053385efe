//! Reading what the service did: its audit stream in Redis, the origin stamp on the
//! Graph items it wrote, and waiting for a condition with the service's log on timeout.

use std::time::Duration;

use dingbridge::sync::mapping::ORIGIN_PROPERTY;
use serde_json::Value;

use super::{RedisServer, TestApp, eventually};

/// Every audit entry in the store, oldest first.
pub fn audit(redis: &RedisServer) -> Vec<Value> {
    let mut c = redis.client();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("dingbridge:audit")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("xrange");
    reply
        .ids
        .iter()
        .filter_map(|id| id.get::<String>("entry"))
        .filter_map(|s| serde_json::from_str::<Value>(&s).ok())
        .collect()
}

/// The audit entries of `action` (e.g. `relay.message.created`).
pub fn relay_results(redis: &RedisServer, action: &str) -> Vec<Value> {
    audit(redis)
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

/// The bridge's origin stamp (`dingtalk:<kind>:<id>`) on a Graph item, if any.
pub fn origin_of(item: &Value) -> Option<String> {
    item["singleValueExtendedProperties"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == ORIGIN_PROPERTY)
        .and_then(|p| p["value"].as_str())
        .map(str::to_string)
}

/// Polls `f` until it answers `Some`; on timeout, panics with `what` and the service's log.
pub async fn wait_for<T>(
    app: &TestApp,
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    eventually(within, || std::future::ready(f()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "timed out waiting for {what}; dingbridge printed:\n{}",
                app.logs().join("\n")
            )
        })
}
