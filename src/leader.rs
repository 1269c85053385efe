//! Periodic work that exactly one instance does at a time: the holder of a store lease
//! runs it every interval; the others keep trying to take the lease, so one takes over
//! within a lease lifetime when the holder dies.

use std::{future::Future, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::SharedStore;

/// A running leader loop; [`LeaderTask::shutdown`] stops it and gives the lease back.
pub struct LeaderTask {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl LeaderTask {
    /// Starts the loop: every `interval`, takes or keeps `lease` and, while holding it,
    /// runs `work` (an error is logged; the next round tries again). `what` names the
    /// work in the log.
    pub fn start<F, Fut>(
        store: SharedStore,
        lease: &'static str,
        what: &'static str,
        interval: Duration,
        mut work: F,
    ) -> LeaderTask
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send,
    {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        // Long enough to survive a slow round, short enough for a quick takeover.
        let ttl = (interval * 3).clamp(Duration::from_secs(10), Duration::from_secs(900));
        let task = tokio::spawn(async move {
            let token = uuid::Uuid::new_v4().to_string();
            let mut leader = false;
            loop {
                let held = if leader {
                    store.lease_renew(lease, &token, ttl).await
                } else {
                    store.lease_acquire(lease, &token, ttl).await
                };
                match held {
                    Ok(h) => {
                        if h && !leader {
                            tracing::info!(work = what, "this instance now runs it");
                        }
                        leader = h;
                    }
                    Err(e) => {
                        tracing::warn!(work = what, error = %e, "cannot reach the store for the lease");
                        leader = false;
                    }
                }
                if leader {
                    tokio::select! {
                        r = work() => if let Err(e) = r {
                            tracing::warn!(work = what, error = %e, "round failed; retried next round");
                        },
                        _ = stop.cancelled() => break,
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {},
                    _ = stop.cancelled() => break,
                }
            }
            if leader {
                let _ = store.lease_release(lease, &token).await;
            }
            tracing::info!(work = what, "stopped");
        });
        LeaderTask { cancel, task }
    }

    /// Stops the loop (a running round is dropped at its next await) and gives the lease
    /// back.
    pub async fn shutdown(self, timeout: Duration) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}
