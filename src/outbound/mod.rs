//! REST hook deliveries (job kind `hook.deliver`): one signed JSON object per event and
//! hook, POSTed by a worker, never inline. 2xx: done. 410: the subscription is deleted
//! (Zapier's unsubscribe signal). 404 (n8n's answer for an inactive workflow, which never
//! sends 410): retried, and once the target has answered nothing but 404 for longer than
//! `hooks.gone_grace_secs`, the hook is disabled. Both are audit entries. Anything else
//! goes through the worker's backoff and, at the end, the dead letters. Redirects are not
//! followed and every address is checked by [`target::GuardedResolver`].

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    hooks::{self, HookStatus},
    jobs::{HookDelivery, Task},
    store::{AuditEntry, Job, SharedStore, now_ms},
    worker::{JobFailure, JobHandler},
};

pub mod sign;
pub mod target;

/// The delivery client: no redirects, guarded DNS, bounded time.
pub fn client(
    policy: Arc<target::TargetPolicy>,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(crate::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(target::GuardedResolver::new(policy)))
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .build()
}

/// `webhook-id` of one event for one hook: the same on every retry.
pub fn message_id(hook_id: &str, event_id: &str) -> String {
    let digest = Sha256::digest(format!("{hook_id}:{event_id}").as_bytes());
    format!("msg_{}", &hex::encode(digest)[..32])
}

/// Runs `hook.deliver` jobs.
pub struct HookDeliverer {
    store: SharedStore,
    client: reqwest::Client,
    policy: Arc<target::TargetPolicy>,
    gone_grace: Duration,
}

impl HookDeliverer {
    /// A deliverer using `client` (see [`client`]).
    pub fn new(
        store: SharedStore,
        client: reqwest::Client,
        policy: Arc<target::TargetPolicy>,
        gone_grace: Duration,
    ) -> Self {
        Self {
            store,
            client,
            policy,
            gone_grace,
        }
    }

    async fn audit(&self, action: &str, detail: Value) {
        if let Err(e) = self
            .store
            .audit_append(&AuditEntry::now(action, detail))
            .await
        {
            tracing::warn!(error = %e, action, "could not write audit entry");
        }
    }
}

fn store_failure(e: crate::store::StoreError) -> JobFailure {
    JobFailure::transient(format!("store: {e}"))
}

#[async_trait]
impl JobHandler for HookDeliverer {
    /// A hook delivery is not a relay: its failure must not publish `sync.failed`
    /// (which would be delivered, and could fail, in turn).
    fn publishes_failures(&self) -> bool {
        false
    }

    async fn handle(&self, _job: &Job, task: Task) -> Result<(), JobFailure> {
        let Task::HookDelivery(HookDelivery { hook_id, event }) = task else {
            return Err(JobFailure::wrong_kind(&task));
        };
        let hook_id = hook_id.as_str();
        let event_id = event.id.as_str();
        let Some(mut hook) = hooks::get(self.store.as_ref(), hook_id)
            .await
            .map_err(store_failure)?
        else {
            tracing::info!(hook_id, "hook was deleted; delivery dropped");
            return Ok(());
        };
        if hook.status != HookStatus::Active {
            tracing::info!(hook_id, "hook is disabled; delivery dropped");
            return Ok(());
        }
        let url = self
            .policy
            .validate(&hook.target_url)
            .await
            .map_err(|why| {
                JobFailure::permanent(format!("target_url refused at delivery time: {why}"))
            })?;
        // Through a Value, as every version has sent it: keys sorted, as in the poll feed.
        let body = serde_json::to_value(&event)
            .and_then(|v| serde_json::to_vec(&v))
            .unwrap_or_default();
        let msg_id = message_id(hook_id, event_id);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign::signature(&hook.secret, &msg_id, timestamp, &body)
            .map_err(JobFailure::permanent)?;
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| JobFailure::transient(format!("target unreachable: {e}")))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {
                if hook.not_found_since_ms.take().is_some() {
                    hooks::update(self.store.as_ref(), &hook)
                        .await
                        .map_err(store_failure)?;
                }
                Ok(())
            }
            410 => {
                hooks::delete(self.store.as_ref(), &hook.id)
                    .await
                    .map_err(store_failure)?;
                tracing::info!(hook_id, "target answered 410 Gone; subscription deleted");
                self.audit(
                    "hook.removed",
                    json!({ "hook_id": hook.id, "event": hook.event, "target_url": hook.target_url,
                            "reason": "target answered 410 Gone" }),
                )
                .await;
                Ok(())
            }
            404 => {
                let now = now_ms();
                let since = *hook.not_found_since_ms.get_or_insert(now);
                let for_ms = now.saturating_sub(since);
                if for_ms >= self.gone_grace.as_millis() as i64 {
                    hook.status = HookStatus::Disabled;
                    if !hooks::update(self.store.as_ref(), &hook)
                        .await
                        .map_err(store_failure)?
                    {
                        tracing::info!(hook_id, "hook was deleted during the delivery");
                        return Ok(());
                    }
                    tracing::warn!(hook_id, "target kept answering 404; hook disabled");
                    self.audit(
                        "hook.disabled",
                        json!({ "hook_id": hook.id, "event": hook.event, "target_url": hook.target_url,
                                "reason": format!("target answered 404 for {} s (grace {} s)",
                                                  for_ms / 1000, self.gone_grace.as_secs()) }),
                    )
                    .await;
                    return Ok(());
                }
                if since == now
                    && !hooks::update(self.store.as_ref(), &hook)
                        .await
                        .map_err(store_failure)?
                {
                    // Deleted while this delivery ran: no retry, and it stays deleted.
                    tracing::info!(hook_id, "hook was deleted during the delivery");
                    return Ok(());
                }
                Err(JobFailure::transient(format!(
                    "target answered 404 (an inactive n8n workflow answers so); the hook is disabled if this lasts {} s",
                    self.gone_grace.as_secs()
                )))
            }
            _ => crate::echo::classify(resp).await,
        }
    }
}
