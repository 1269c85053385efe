//! Fault and abuse suite: the running binary under crashes, outages, leaks and hostile
//! input, each part asserting what a user relies on. Every part prints its figures as one
//! `chaos-report` JSON line; RELIABILITY.md records the last run's:
//!
//! ```text
//! cargo test --release --test chaos -- --nocapture --test-threads 1 | grep chaos-report
//! ```
//!
//! Sizes can be raised through `CHAOS_EVENTS`, `CHAOS_SOAK_EVENTS` and `CHAOS_SOAK_BURSTS`;
//! the defaults keep the suite to a few minutes on two cores in a debug build.

#[path = "../integration/common/mod.rs"]
mod common;

mod exactly_once;
mod hostile_http;
mod redis_outage;
mod soak;

use std::time::Duration;

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints one line of figures for RELIABILITY.md.
pub fn report(part: &str, figures: serde_json::Value) {
    println!(
        "chaos-report {}",
        serde_json::json!({ "part": part, "figures": figures })
    );
}

/// The echo relay's settings for a test instance posting to `target`.
pub fn echo_env(store: &str, target: &str) -> Vec<(String, String)> {
    [
        ("DINGBRIDGE_STORE_URL", store),
        ("DINGBRIDGE_ECHO_TARGET_URL", target),
        ("DINGBRIDGE_ECHO_TOKEN", ECHO_TOKEN),
        (
            "DINGBRIDGE_LOG_LEVEL",
            "warn,dingbridge=info,dingbridge::telemetry=warn",
        ),
        ("DINGBRIDGE_WORKERS_BACKOFF_BASE_MS", "50"),
        ("DINGBRIDGE_WORKERS_BACKOFF_MAX_MS", "500"),
        ("DINGBRIDGE_WORKERS_MAX_ATTEMPTS", "50"),
        ("DINGBRIDGE_WORKERS_VISIBILITY_TIMEOUT_MS", "3000"),
        ("DINGBRIDGE_WORKERS_JOB_TIMEOUT_MS", "2500"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Token of the echo relay in these tests.
pub const ECHO_TOKEN: &str = "chaos-echo-token";

/// Starts an instance with `env`.
pub fn spawn(env: &[(String, String)]) -> common::TestApp {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    common::TestApp::spawn(&pairs)
}

/// Posts one echo event; the status, or `None` when the request failed.
pub async fn post_echo(http: &reqwest::Client, base: &str, event_id: &str) -> Option<u16> {
    http.post(format!("{base}/webhooks/echo"))
        .header("X-Echo-Token", ECHO_TOKEN)
        .json(&serde_json::json!({ "event_id": event_id, "note": "chaos" }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}
