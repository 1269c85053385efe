//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`.

use std::{sync::OnceLock, time::Duration};

use actix_web::http::Method;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::QueueDepth;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first use and returns its handle.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("job_duration_seconds".into()),
                        &[0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0],
                    )
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(h) => {
                    spawn_upkeep(h.clone());
                    Some(h)
                }
                Err(e) => {
                    tracing::error!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Histogram samples wait in a buffer until they are folded into buckets, which
/// `install_recorder` leaves to whoever renders `/metrics`: unscraped, every request and
/// job kept its sample for ever (about 40 bytes per event). A plain thread folds them in,
/// whatever runtime is running or not.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "metrics upkeep thread not started");
    }
}

/// The `method` label of a request: a standard method's name, or `other` for any
/// extension token (a client can send any token, and each would be a new series kept for
/// the life of the process).
pub fn method_label(method: &Method) -> &'static str {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ]
    .iter()
    .find(|m| *m == method)
    .map_or("other", |m| m.as_str())
}

/// Counts one served request and its latency; `method` comes from [`method_label`].
pub fn record_request(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

/// Counts a connection actix closed on an error: a malformed request, a head too large,
/// a timeout or a broken connection (`reason`).
pub fn record_connection_error(reason: &'static str) {
    metrics::counter!("http_connection_errors_total", "reason" => reason).increment(1);
}

/// Counts a job outcome (`completed`, `retried`, `dead_lettered`) for its kind.
pub fn record_job(kind: &str, outcome: &'static str, elapsed: Duration) {
    let labels = [("kind", kind.to_string()), ("outcome", outcome.to_string())];
    metrics::counter!("jobs_total", &labels).increment(1);
    match outcome {
        "retried" => {
            metrics::counter!("jobs_retried_total", "kind" => kind.to_string()).increment(1)
        }
        "dead_lettered" => {
            metrics::counter!("jobs_dead_lettered_total", "kind" => kind.to_string()).increment(1)
        }
        _ => {}
    }
    metrics::histogram!("job_duration_seconds", "kind" => kind.to_string())
        .record(elapsed.as_secs_f64());
}

/// Counts inbound events by source and result (`enqueued`, `duplicate`, `rejected`).
pub fn record_ingest(source: &str, result: &'static str, n: usize) {
    metrics::counter!("ingest_events_total", "source" => source.to_string(), "result" => result)
        .increment(n as u64);
}

/// Counts one mail of mailbox route `route` written (or mapped: `result`) the way
/// `direction` says (`to_outlook`, `to_dingtalk`).
pub fn record_mail_synced(route: &str, direction: &'static str, result: &'static str) {
    metrics::counter!(
        "mailbox_messages_synced_total",
        "route" => route.to_string(),
        "direction" => direction,
        "result" => result
    )
    .increment(1);
}

/// Counts one read-state change of mailbox route `route` relayed the way `direction`
/// says (`to_outlook`: `isRead` set in Outlook; `to_dingtalk`: `\\Seen` stored).
pub fn record_mail_read_synced(route: &str, direction: &'static str, read: bool) {
    metrics::counter!(
        "mailbox_read_changes_total",
        "route" => route.to_string(),
        "direction" => direction,
        "read" => if read { "true" } else { "false" }
    )
    .increment(1);
}

/// Marks now as the last successful sync of mailbox route `route` in `direction`.
pub fn set_mailbox_synced_at(route: &str, direction: &'static str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    metrics::gauge!(
        "mailbox_last_sync_timestamp_seconds",
        "route" => route.to_string(),
        "direction" => direction
    )
    .set(now);
}

/// Whether mailbox route `route`'s IMAP connection is waiting in `IDLE` now.
pub fn set_mailbox_idle(route: &str, connected: bool) {
    metrics::gauge!("mailbox_idle_connected", "route" => route.to_string()).set(if connected {
        1.0
    } else {
        0.0
    });
}

/// Messages of mailbox route `route` found but not yet synced.
pub fn set_mailbox_backlog(route: &str, n: usize) {
    metrics::gauge!("mailbox_backlog", "route" => route.to_string()).set(n as f64);
}

/// Counts a problem of mailbox route `route` (`login`, `connection`, `graph`,
/// `import_refused`…).
pub fn record_mailbox_error(route: &str, kind: &'static str) {
    metrics::counter!(
        "mailbox_errors_total",
        "route" => route.to_string(),
        "kind" => kind
    )
    .increment(1);
}

/// Publishes the queue counts as gauges (called at scrape time).
pub fn set_queue_depth(depth: &QueueDepth) {
    for (state, v) in [
        ("ready", depth.ready),
        ("delayed", depth.delayed),
        ("in_flight", depth.in_flight),
        ("dead", depth.dead),
    ] {
        metrics::gauge!("queue_depth", "state" => state).set(v as f64);
    }
}

/// Prometheus text exposition of everything recorded.
pub fn render() -> String {
    handle().map(|h| h.render()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_are_metric_labels() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::CONNECT), "CONNECT");
        let custom = Method::from_bytes(b"X7QZ").expect("a token");
        assert_eq!(method_label(&custom), "other");
        let lower = Method::from_bytes(b"get").expect("a token");
        assert_eq!(method_label(&lower), "other");
    }
}
