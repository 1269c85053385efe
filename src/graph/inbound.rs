//! Inbound Graph notifications: parse, check each item's `clientState` against the
//! subscription it names, and turn the valid ones into events for the queue. Nothing
//! slow happens here (Graph allows 3 s): rich-token validation, decryption and fetching
//! the changed item are the worker's job.

use serde_json::json;

use super::{
    notifications::{NotificationCollection, client_state_matches},
    subscriptions,
};
use crate::{
    error::{ApiError, ErrorCode},
    ingest::VerifiedEvent,
    store::Store,
};

/// Job kind of change notifications.
pub const NOTIFICATION_KIND: &str = "graph.notification";
/// Job kind of lifecycle notifications.
pub const LIFECYCLE_KIND: &str = "graph.lifecycle";

/// Items accepted and ignored in one POST.
#[derive(Debug, Default)]
pub struct Checked {
    /// Events to enqueue.
    pub events: Vec<VerifiedEvent>,
    /// Items ignored (unknown subscription or wrong clientState); still acknowledged.
    pub ignored: usize,
}

/// Parses a notification POST and keeps the items whose `clientState` matches.
pub async fn check(store: &dyn Store, body: &[u8], lifecycle: bool) -> Result<Checked, ApiError> {
    let collection: NotificationCollection = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("not a Graph notification collection: {e}"),
        )
    })?;
    let mut checked = Checked::default();
    let tokens = collection.validation_tokens.clone().unwrap_or_default();
    for item in collection.value {
        let record = subscriptions::load(store, &item.subscription_id).await?;
        let reason = match &record {
            None => Some("unknown_subscription"),
            Some(r) if !client_state_matches(&r.client_state, item.client_state.as_deref()) => {
                Some("client_state_mismatch")
            }
            Some(_) => None,
        };
        if let Some(reason) = reason {
            metrics::counter!("graph_notifications_ignored_total", "reason" => reason).increment(1);
            tracing::warn!(subscription = %item.subscription_id, reason, "graph notification ignored");
            checked.ignored += 1;
            continue;
        }
        let kind = if lifecycle || item.lifecycle_event.is_some() {
            LIFECYCLE_KIND
        } else {
            NOTIFICATION_KIND
        };
        checked.events.push(VerifiedEvent {
            source: "graph",
            event_id: Some(item.dedupe_id()),
            kind: kind.to_string(),
            payload: json!({
                "notification": item,
                "subscription": record,
                "validation_tokens": tokens,
            }),
        });
    }
    Ok(checked)
}
