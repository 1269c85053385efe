//! Inbound Graph notifications: parse, check each item's `clientState` against the
//! subscription it names, and turn the valid ones into events for the queue. Nothing
//! slow happens here (Graph allows 3 s): rich-token validation, decryption and fetching
//! the changed item are the worker's job.

use std::collections::{BTreeMap, HashMap};

use super::{
    notifications::{NotificationCollection, client_state_matches},
    subscriptions,
};
use crate::{
    error::{ApiError, ErrorCode},
    ingest::VerifiedEvent,
    jobs::{GraphNotification, Task},
    store::Store,
};

/// Items accepted and ignored in one POST.
#[derive(Debug, Default)]
pub struct Checked {
    /// Events to enqueue.
    pub events: Vec<VerifiedEvent>,
    /// Items ignored (unknown subscription or wrong clientState); still acknowledged.
    pub ignored: usize,
}

/// Most notifications one POST may carry. Graph batches a few dozen at most; the cap
/// keeps an unauthenticated request from costing thousands of store reads.
pub const MAX_NOTIFICATIONS: usize = 1_000;
/// Most distinct subscriptions one POST may name: Graph only batches notifications of our
/// own subscriptions, a handful per route.
pub const MAX_SUBSCRIPTIONS: usize = 64;

/// Parses a notification POST and keeps the items whose `clientState` matches. Each
/// subscription is looked up once per request and ignored items make one summary log
/// line, so a forged batch costs little.
pub async fn check(store: &dyn Store, body: &[u8], lifecycle: bool) -> Result<Checked, ApiError> {
    let collection: NotificationCollection = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("not a Graph notification collection: {e}"),
        )
    })?;
    if collection.value.len() > MAX_NOTIFICATIONS {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!(
                "{} notifications in one request; at most {MAX_NOTIFICATIONS} are accepted",
                collection.value.len()
            ),
        ));
    }
    let mut names: Vec<&str> = collection
        .value
        .iter()
        .map(|n| n.subscription_id.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.len() > MAX_SUBSCRIPTIONS {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!(
                "{} subscriptions named in one request; at most {MAX_SUBSCRIPTIONS} are accepted",
                names.len()
            ),
        ));
    }
    let mut records = HashMap::with_capacity(names.len());
    for name in names {
        records.insert(name.to_string(), subscriptions::load(store, name).await?);
    }
    let mut checked = Checked::default();
    let mut ignored: BTreeMap<&'static str, usize> = BTreeMap::new();
    let tokens = collection.validation_tokens.clone().unwrap_or_default();
    for item in collection.value {
        let record = match records.get(&item.subscription_id).cloned().flatten() {
            None => Err("unknown_subscription"),
            Some(r) if !client_state_matches(&r.client_state, item.client_state.as_deref()) => {
                Err("client_state_mismatch")
            }
            Some(r) => Ok(r),
        };
        let record = match record {
            Ok(r) => r,
            Err(reason) => {
                *ignored.entry(reason).or_default() += 1;
                checked.ignored += 1;
                continue;
            }
        };
        let is_lifecycle = lifecycle || item.lifecycle_event.is_some();
        let event_id = item.dedupe_id();
        let payload = GraphNotification {
            // A struct of strings and Values always serialises.
            notification: serde_json::to_value(item).unwrap_or_default(),
            subscription: record,
            validation_tokens: tokens.clone(),
        };
        checked.events.push(VerifiedEvent {
            source: "graph",
            event_id,
            task: if is_lifecycle {
                Task::GraphLifecycle(payload)
            } else {
                Task::GraphNotification(payload)
            },
        });
    }
    for (reason, n) in &ignored {
        metrics::counter!("graph_notifications_ignored_total", "reason" => *reason)
            .increment(*n as u64);
    }
    if !ignored.is_empty() {
        tracing::warn!(
            ?ignored,
            accepted = checked.events.len(),
            "graph notifications ignored"
        );
    }
    Ok(checked)
}
