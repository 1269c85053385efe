//! Delta resyncs: the changes in a watched folder (or the primary calendar) since the
//! stored delta link, exactly the gap; without a link, a new baseline that relays nothing.

use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::{OutlookRelay, Trigger};
use crate::{
    config::RouteConfig,
    graph::subscriptions::{SubscriptionRecord, Watched},
    worker::JobFailure,
};

/// Delta-state name of the primary calendar.
const CALENDAR_DELTA: &str = "calendar";
/// calendarView/delta window: this far back…
const EVENT_WINDOW_PAST_DAYS: i64 = 30;
/// …and this far ahead.
const EVENT_WINDOW_FUTURE_DAYS: i64 = 365;
/// Safety bound on delta pages per resync.
const MAX_DELTA_PAGES: usize = 1000;

/// Delta state of one route's watched folder: the link to follow next and the time the
/// baseline was taken (older mail is never relayed as new).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct DeltaState {
    link: String,
    since: String,
}

fn delta_key(route: &str, folder: &str) -> String {
    format!("graph:delta:{route}:{folder}")
}

impl OutlookRelay {
    /// Relays the changes in the watched folder since the stored delta link (exactly the
    /// gap); without a link, takes the baseline and relays nothing.
    pub async fn resync(&self, record: &SubscriptionRecord) -> Result<(), JobFailure> {
        let Some(route) = self.route(&record.route) else {
            return Ok(());
        };
        let folder = match record.watched {
            Watched::Messages => record.folder.clone().unwrap_or_else(|| "inbox".into()),
            Watched::Events => CALENDAR_DELTA.to_string(),
            // Contacts are not relayed, so there is nothing to resync.
            Watched::Contacts => return Ok(()),
        };
        let lock = format!("graph-delta:{}:{folder}", record.route);
        let token = uuid::Uuid::new_v4().to_string();
        let store_err = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        if !self
            .store
            .lease_acquire(&lock, &token, Duration::from_secs(300))
            .await
            .map_err(store_err)?
        {
            return Err(JobFailure::transient("a resync of this folder is running")
                .retry_after(Duration::from_secs(2)));
        }
        let result = self.follow_delta(route, record, &folder).await;
        let _ = self.store.lease_release(&lock, &token).await;
        result
    }

    async fn follow_delta(
        &self,
        route: &RouteConfig,
        record: &SubscriptionRecord,
        folder: &str,
    ) -> Result<(), JobFailure> {
        let key = delta_key(&route.name, folder);
        let stored: Option<DeltaState> = self
            .store
            .kv_get(&key)
            .await
            .map_err(|e| JobFailure::transient(e.to_string()))?
            .and_then(|raw| serde_json::from_str(&raw).ok());
        let baseline = stored.is_none();
        let since = stored.as_ref().map(|s| s.since.clone()).unwrap_or_else(|| {
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        let mailbox = &record.mailbox;
        let mut page = match &stored {
            Some(s) => self.graph.get_url(mailbox, &s.link).await,
            None if record.watched == Watched::Events => {
                // calendarView/delta needs a window and covers the primary calendar only
                // (<https://learn.microsoft.com/en-us/graph/api/event-delta>).
                let now = chrono::Utc::now();
                let fmt = |t: chrono::DateTime<chrono::Utc>| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                };
                self.graph
                    .get(
                        mailbox,
                        &format!(
                            "calendarView/delta?startDateTime={}&endDateTime={}",
                            utf8_percent_encode(
                                &fmt(now - chrono::Duration::days(EVENT_WINDOW_PAST_DAYS)),
                                NON_ALPHANUMERIC
                            ),
                            utf8_percent_encode(
                                &fmt(now + chrono::Duration::days(EVENT_WINDOW_FUTURE_DAYS)),
                                NON_ALPHANUMERIC
                            ),
                        ),
                    )
                    .await
            }
            None => {
                self.graph
                    .get(
                        mailbox,
                        &format!(
                            "mailFolders/{}/messages/delta?$select=id,receivedDateTime,isRead",
                            utf8_percent_encode(folder, NON_ALPHANUMERIC)
                        ),
                    )
                    .await
            }
        };
        if let Err(e) = &page
            && stored.is_some()
            && (e.status() == Some(410)
                || matches!(e.code(), Some("syncStateNotFound" | "resyncRequired")))
        {
            // The token expired: take a new baseline (mail in the gap is lost to delta).
            tracing::warn!(route = %route.name, error = %e, "delta token no longer valid; new baseline");
            let _ = self.store.kv_delete(&key).await;
            return Box::pin(self.follow_delta(route, record, folder)).await;
        }
        let mut relayed = 0usize;
        for _ in 0..MAX_DELTA_PAGES {
            let body = page?;
            for item in body
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if baseline {
                    continue;
                }
                let Some(id) = item.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let removed = item.get("@removed").is_some();
                match record.watched {
                    Watched::Events => {
                        let change = if removed { "deleted" } else { "updated" };
                        self.relay_event(route, mailbox, id, change).await?;
                    }
                    _ if removed => continue,
                    _ => {
                        self.relay_message(route, mailbox, id, Trigger::Delta, Some(&since), None)
                            .await?
                    }
                }
                relayed += 1;
            }
            if let Some(next) = body.get("@odata.nextLink").and_then(Value::as_str) {
                page = self.graph.get_url(mailbox, next).await;
                continue;
            }
            let Some(link) = body.get("@odata.deltaLink").and_then(Value::as_str) else {
                return Err(JobFailure::transient(
                    "delta page with neither nextLink nor deltaLink",
                ));
            };
            let state = DeltaState {
                link: link.to_string(),
                since: since.clone(),
            };
            self.store
                .kv_put(
                    &key,
                    &serde_json::to_string(&state).unwrap_or_default(),
                    None,
                )
                .await
                .map_err(|e| JobFailure::transient(e.to_string()))?;
            tracing::info!(route = %route.name, folder, baseline, changed = relayed, "delta resync finished");
            return Ok(());
        }
        Err(JobFailure::transient(
            "delta did not end within the page bound",
        ))
    }
}
