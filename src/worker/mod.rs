//! The worker pool: takes jobs from the store, reads each as a [`Task`] once, runs the
//! handler of its kind, retries failures with exponential backoff and jitter (or the
//! handler's `retry_after`), and dead-letters a job after the configured number of
//! attempts (at once when its payload cannot be read).

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use rand::Rng;
use tokio::{sync::Semaphore, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    config::WorkerConfig,
    jobs::Task,
    store::{AuditEntry, Delivery, Job, SharedStore},
};

/// Why a job attempt failed.
#[derive(Debug, Clone)]
pub struct JobFailure {
    /// What went wrong (kept with the job and in the dead letters; never secrets).
    pub message: String,
    /// Upstream asked to wait this long (e.g. `Retry-After` on 429/503).
    pub retry_after: Option<Duration>,
    /// Retrying cannot help (e.g. the target refused the content).
    pub permanent: bool,
}

impl JobFailure {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
            permanent: false,
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
            permanent: true,
        }
    }

    /// A handler was given a task of a kind it does not run (a registration mistake).
    pub fn wrong_kind(task: &Task) -> Self {
        Self::permanent(format!("this handler does not run `{}` jobs", task.kind()))
    }

    /// Asks for the next attempt no sooner than `after`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

/// Runs jobs of one kind.
#[async_trait]
pub trait JobHandler: Send + Sync {
    /// Performs the job, given its payload already read as a [`Task`] of the kind the
    /// handler is registered for; must be safe to run again for the same job
    /// (at-least-once).
    async fn handle(&self, job: &Job, task: Task) -> Result<(), JobFailure>;

    /// Whether a dead-lettered job of this kind publishes `sync.failed`. Deliveries to
    /// hooks say no: a failed `sync.failed` delivery must not publish another.
    fn publishes_failures(&self) -> bool {
        true
    }
}

/// Handlers by job kind.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl Registry {
    /// Registers the handler of `kind`.
    pub fn register(&mut self, kind: impl Into<String>, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind.into(), handler);
    }

    fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.handlers.get(kind)
    }
}

/// Delay before attempt `attempts + 1`: doubling from `base`, capped, with "equal
/// jitter" (half fixed, half random) so that instances do not retry in lockstep.
pub fn backoff(config: &WorkerConfig, attempts: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        // Upstream said when; add up to 10 % so a burst of throttled jobs spreads out.
        let extra = rand::thread_rng().gen_range(0..=after.as_millis() as u64 / 10);
        return after + Duration::from_millis(extra);
    }
    let exp = attempts.saturating_sub(1).min(30);
    let full = config
        .backoff_base_ms
        .saturating_mul(1u64 << exp)
        .min(config.backoff_max_ms);
    let half = full / 2;
    Duration::from_millis(half + rand::thread_rng().gen_range(0..=full - half))
}

/// A running pool; [`WorkerPool::shutdown`] stops fetching and waits for running jobs.
pub struct WorkerPool {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl WorkerPool {
    /// Starts fetching and running jobs.
    pub fn start(store: SharedStore, registry: Registry, config: WorkerConfig) -> Self {
        let cancel = CancellationToken::new();
        let consumer = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let task = tokio::spawn(run(
            store,
            Arc::new(registry),
            config,
            consumer,
            cancel.clone(),
        ));
        Self { cancel, task }
    }

    /// Stops taking new jobs and waits for running ones (bounded by `timeout`).
    pub async fn shutdown(self, timeout: Duration) {
        self.cancel.cancel();
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::warn!(
                "jobs still running at shutdown; the store hands them to another instance"
            );
        }
    }
}

async fn run(
    store: SharedStore,
    registry: Arc<Registry>,
    config: WorkerConfig,
    consumer: String,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let visibility = Duration::from_millis(config.visibility_timeout_ms);
    let mut failures: u32 = 0;
    tracing::info!(consumer = %consumer, concurrency = config.concurrency, "workers started");
    while !cancel.is_cancelled() {
        // Take only as many jobs as there are free slots: a fetched job's visibility
        // timeout is already running.
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = cancel.cancelled() => break,
        };
        let free = 1 + slots.available_permits();
        let fetched = store
            .fetch(&consumer, free, Duration::from_secs(1), visibility)
            .await;
        let deliveries = match fetched {
            Ok(d) => {
                failures = 0;
                d
            }
            Err(e) => {
                drop(first);
                failures = failures.saturating_add(1);
                let wait = Duration::from_millis(200u64 << failures.min(5));
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot fetch jobs");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {},
                    _ = cancel.cancelled() => break,
                }
                continue;
            }
        };
        let mut first = Some(first);
        for delivery in deliveries {
            let permit = match first.take() {
                Some(p) => p,
                None => match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let store = store.clone();
            let registry = registry.clone();
            let config = config.clone();
            let span =
                tracing::info_span!("job", job_id = %delivery.job.id, kind = %delivery.job.kind);
            tokio::spawn(
                async move {
                    run_one(&store, &registry, &config, delivery).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
    // Wait for every running job to finish before reporting the pool stopped.
    let _ = slots.acquire_many(config.concurrency as u32).await;
    tracing::info!("workers stopped");
}

async fn run_one(
    store: &SharedStore,
    registry: &Registry,
    config: &WorkerConfig,
    delivery: Delivery,
) {
    let started = std::time::Instant::now();
    let job = &delivery.job;
    let result = match registry.get(&job.kind) {
        Some(handler) => match Task::from_job(job) {
            Ok(task) => {
                let timeout = Duration::from_millis(config.job_timeout_ms);
                match tokio::time::timeout(timeout, handler.handle(job, task)).await {
                    Ok(r) => r,
                    Err(_) => Err(JobFailure::transient(format!(
                        "timed out after {} ms",
                        config.job_timeout_ms
                    ))),
                }
            }
            // No attempt can read it any better.
            Err(e) => Err(JobFailure::permanent(format!(
                "unreadable `{}` payload: {e}",
                job.kind
            ))),
        },
        None => Err(JobFailure::permanent(format!(
            "no handler for job kind `{}`",
            job.kind
        ))),
    };
    let elapsed = started.elapsed();
    let settled = match result {
        Ok(()) => {
            crate::metrics::record_job(&job.kind, "completed", elapsed);
            tracing::info!(elapsed_ms = elapsed.as_millis() as u64, "job completed");
            store.ack(&delivery).await
        }
        Err(failure) => {
            let mut next = job.clone();
            next.attempts += 1;
            next.last_error = Some(failure.message.clone());
            if failure.permanent || next.attempts >= config.max_attempts {
                crate::metrics::record_job(&job.kind, "dead_lettered", elapsed);
                tracing::warn!(attempts = next.attempts, error = %failure.message, "job dead-lettered");
                let audit = AuditEntry::now(
                    "job.dead_lettered",
                    serde_json::json!({
                        "job_id": next.id, "kind": next.kind,
                        "attempts": next.attempts, "error": failure.message,
                    }),
                );
                match store.dead_letter(&delivery, &next).await {
                    Ok(()) => {
                        if registry
                            .get(&next.kind)
                            .is_none_or(|h| h.publishes_failures())
                        {
                            let event = crate::triggers::sync_failed(&next);
                            if let Err(e) = crate::triggers::publish(store.as_ref(), &event).await {
                                tracing::warn!(error = %e, "could not publish sync.failed");
                            }
                        }
                        store.audit_append(&audit).await
                    }
                    Err(e) => Err(e),
                }
            } else {
                let delay = backoff(config, next.attempts, failure.retry_after);
                crate::metrics::record_job(&job.kind, "retried", elapsed);
                tracing::info!(
                    attempts = next.attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %failure.message,
                    "job failed; will retry"
                );
                store.retry_later(&delivery, &next, delay).await
            }
        }
    };
    if let Err(e) = settled {
        // The job stays held; after the visibility timeout another consumer takes it.
        tracing::warn!(error = %e, "could not record job outcome; it will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_stays_within_jitter_bounds_and_is_capped() {
        let c = WorkerConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..WorkerConfig::default()
        };
        for _ in 0..100 {
            let d1 = backoff(&c, 1, None).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            let d3 = backoff(&c, 3, None).as_millis();
            assert!((200..=400).contains(&d3), "{d3}");
            let d20 = backoff(&c, 20, None).as_millis();
            assert!((500..=1_000).contains(&d20), "{d20}");
        }
    }

    #[test]
    fn graph_errors_become_retries_or_permanent_failures() {
        use crate::graph::{AuthError, AuthErrorKind, GraphError};
        let api = |status: u16, retry_after: Option<Duration>| GraphError::Api {
            status,
            code: "X".into(),
            message: "m".into(),
            request_id: Some("rid".into()),
            client_request_id: "c".into(),
            retry_after,
        };
        let f = JobFailure::from(api(429, Some(Duration::from_millis(2128))));
        assert!(!f.permanent);
        assert_eq!(f.retry_after, Some(Duration::from_millis(2128)));
        for s in [500, 502, 503, 504, 401, 408] {
            assert!(!JobFailure::from(api(s, None)).permanent, "{s}");
        }
        for s in [400, 403, 404, 413] {
            assert!(JobFailure::from(api(s, None)).permanent, "{s}");
        }
        assert!(!JobFailure::from(GraphError::Transport("x".into())).permanent);
        let expired = GraphError::Auth(AuthError {
            kind: AuthErrorKind::SecretExpired,
            aadsts: Some(7000222),
            message: "expired".into(),
        });
        let f = JobFailure::from(expired);
        assert!(!f.permanent);
        assert_eq!(f.retry_after, Some(Duration::from_secs(300)));
    }

    #[test]
    fn backoff_honours_retry_after() {
        let c = WorkerConfig::default();
        for _ in 0..100 {
            let d = backoff(&c, 1, Some(Duration::from_secs(7))).as_millis();
            assert!((7_000..=7_700).contains(&d), "{d}");
        }
    }
}
