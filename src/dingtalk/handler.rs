//! Worker of `dingtalk.event` jobs. Until the Outlook relays exist it records every
//! event in the audit trail as `dingtalk.<kind>.<action>` (ids only, never message text
//! or session webhooks), which also makes unknown event types visible.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    store::{AuditEntry, Job, Store},
    sync::SyncEvent,
    worker::{JobFailure, JobHandler},
};

/// Audits each DingTalk event.
pub struct AuditingHandler {
    store: Arc<dyn Store>,
}

impl AuditingHandler {
    /// A handler writing to this store's audit trail.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl JobHandler for AuditingHandler {
    async fn handle(&self, job: &Job) -> Result<(), JobFailure> {
        let event: SyncEvent = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobFailure::permanent(format!("not a SyncEvent: {e}")))?;
        let entry = AuditEntry::now(
            event.audit_action(),
            serde_json::json!({
                "job_id": job.id,
                "ids": event.ids,
                "occurred_at_ms": event.occurred_at_ms,
            }),
        );
        self.store
            .audit_append(&entry)
            .await
            .map_err(|e| JobFailure::transient(format!("audit: {e}")))
    }
}
