//! Backfill after an outage (HTTP push mode): DingTalk retries a failed push only twice,
//! then keeps it in its failed-events list. On start-up and every
//! `dingtalk.backfill_interval_secs`, one instance (the holder of the store lease
//! `dingtalk-backfill`) reads that list with `get_call_back_failed_result` and feeds every
//! item through the same normalise → dedupe → enqueue path as the pushes.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{client::DingTalkClient, events};
use crate::store::SharedStore;

/// Store lease held while a run is in progress.
pub const LEASE: &str = "dingtalk-backfill";
/// Lease time-to-live; renewed after every page, so it only has to outlast one page.
const LEASE_TTL: Duration = Duration::from_secs(120);
/// Safety bound on pages per run (200 items each).
const MAX_PAGES: usize = 500;
/// API path of the failed-events list.
pub const FAILED_PATH: &str = "/call_back/get_call_back_failed_result";

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Pages fetched.
    pub pages: usize,
    /// Items newly queued.
    pub enqueued: usize,
    /// Items already seen.
    pub duplicates: usize,
}

/// A running backfill task; [`Backfill::shutdown`] stops it.
pub struct Backfill {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Backfill {
    /// Starts the schedule: a run now, then one every `interval`.
    pub fn start(
        store: SharedStore,
        client: Arc<DingTalkClient>,
        dedupe_ttl: Duration,
        interval: Duration,
    ) -> Backfill {
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let task = tokio::spawn(async move {
            tracing::info!(
                interval_secs = interval.as_secs(),
                "DingTalk backfill scheduled"
            );
            loop {
                tokio::select! {
                    r = run_once(&store, &client, dedupe_ttl) => match r {
                        Ok(Some(report)) => tracing::info!(
                            pages = report.pages, enqueued = report.enqueued,
                            duplicates = report.duplicates, "DingTalk backfill run finished"),
                        Ok(None) => tracing::debug!("DingTalk backfill lease held elsewhere"),
                        Err(e) => tracing::warn!(error = %e, "DingTalk backfill run failed"),
                    },
                    _ = token.cancelled() => break,
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {},
                    _ = token.cancelled() => break,
                }
            }
            tracing::info!("DingTalk backfill stopped");
        });
        Backfill { cancel, task }
    }

    /// Stops the schedule (an in-flight run is abandoned; its lease expires).
    pub async fn shutdown(self, timeout: Duration) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}

/// One run: takes the lease, drains the failed list, releases the lease. `Ok(None)` when
/// another instance holds the lease.
pub async fn run_once(
    store: &SharedStore,
    client: &DingTalkClient,
    dedupe_ttl: Duration,
) -> anyhow::Result<Option<RunReport>> {
    let token = uuid::Uuid::new_v4().to_string();
    if !store.lease_acquire(LEASE, &token, LEASE_TTL).await? {
        return Ok(None);
    }
    let result = drain(store, client, dedupe_ttl, &token).await;
    if let Err(e) = store.lease_release(LEASE, &token).await {
        tracing::warn!(error = %e, "cannot release the backfill lease; it expires by itself");
    }
    result.map(Some)
}

async fn drain(
    store: &SharedStore,
    client: &DingTalkClient,
    dedupe_ttl: Duration,
    lease_token: &str,
) -> anyhow::Result<RunReport> {
    let mut report = RunReport::default();
    while report.pages < MAX_PAGES {
        let page = client
            .oapi_get("callback.failed_list", FAILED_PATH, &[])
            .await?;
        report.pages += 1;
        let items = page
            .get("failed_list")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let verified: Vec<_> = items.iter().map(events::from_failed_item).collect();
        let accepted = events::accept(store.as_ref(), dedupe_ttl, verified)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        report.enqueued += accepted.enqueued;
        report.duplicates += accepted.duplicates;
        let has_more = page
            .get("has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !has_more || items.is_empty() {
            break;
        }
        if !store.lease_renew(LEASE, lease_token, LEASE_TTL).await? {
            anyhow::bail!("lost the backfill lease mid-run");
        }
    }
    Ok(report)
}
