//! Outlook calendar events → the route user's DingTalk calendar: created, updated (once
//! per Graph `changeKey`) and, where the route allows deletes, cancelled.

use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::{
    OutlookRelay, carries_origin_marker,
    render::{client_token, dingtalk_event_from_graph},
};
use crate::{
    config::RouteConfig,
    dingtalk::client::DingTalkClient,
    store::Side,
    sync::{keys::EVENT_NS, mapping::ORIGIN_PROPERTY, outlook_triggers},
    worker::JobFailure,
};

/// How long the last relayed changeKey of an Outlook event is remembered.
const EVENT_VERSION_TTL: Duration = Duration::from_secs(180 * 24 * 3600);

impl OutlookRelay {
    /// Outlook event created/updated/cancelled/deleted → the route user's DingTalk calendar.
    pub(super) async fn relay_event(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        change: &str,
    ) -> Result<(), JobFailure> {
        let (Some(union_id), Some(client)) = (&route.dingtalk.union_id, &self.dingtalk) else {
            tracing::warn!(route = %route.name, "route relays events but has no dingtalk.union_id or DingTalk app credentials");
            return Ok(());
        };
        self.claimed(
            id,
            self.relay_event_claimed(route, mailbox, id, change, union_id, client),
        )
        .await
    }

    async fn relay_event_claimed(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        change: &str,
        union_id: &str,
        client: &DingTalkClient,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        let skip = |reason: &'static str| {
            metrics::counter!("graph_relay_skipped_total", "reason" => reason).increment(1);
            tracing::debug!(item = id, reason, "Outlook event not relayed");
            Ok(())
        };
        let mapped = self
            .store
            .map_get(EVENT_NS, Side::Right, id)
            .await
            .map_err(transient)?;
        let event = if change == "deleted" {
            None
        } else {
            match self.fetch_item(mailbox, "events", id).await {
                Ok(v) => Some(v),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(ev) = &event
            && carries_origin_marker(ev)
        {
            return skip("origin_marker");
        }
        // Graph's changeKey changes with every edit: the same one was relayed already
        // (a repeated notification, or a job taken over from a slow instance).
        let version_key = format!("outlook-event-version:{}:{id}", route.name);
        let version = event
            .as_ref()
            .and_then(|ev| {
                ev.get("changeKey")
                    .or_else(|| ev.get("lastModifiedDateTime"))
            })
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if mapped.is_some()
            && !version.is_empty()
            && self
                .store
                .kv_get(&version_key)
                .await
                .map_err(transient)?
                .as_deref()
                == Some(version.as_str())
        {
            return skip("same_version");
        }
        outlook_triggers::publish(
            self.store.as_ref(),
            Some(outlook_triggers::event_changed(
                &route.name,
                mailbox,
                id,
                event.as_ref(),
                change,
            )),
        )
        .await?;
        let cancelled = event
            .as_ref()
            .is_none_or(|e| e.get("isCancelled").and_then(Value::as_bool) == Some(true));
        if cancelled {
            let Some(dt_id) = mapped else {
                return skip("cancel_of_unrelayed_event");
            };
            if !route.allow_deletes {
                return skip("deletes_not_allowed");
            }
            client.delete_calendar_event(union_id, &dt_id).await?;
            self.store
                .map_delete(EVENT_NS, Side::Right, id)
                .await
                .map_err(transient)?;
            metrics::counter!("graph_relayed_total", "kind" => "event_delete").increment(1);
            tracing::info!(route = %route.name, item = id, dingtalk = %dt_id, "Outlook event cancellation relayed to DingTalk");
            return Ok(());
        }
        let ev = event.expect("not cancelled");
        let Some(body) = dingtalk_event_from_graph(&ev, &route.time_zone) else {
            return Err(JobFailure::permanent("Outlook event without start/end"));
        };
        match mapped {
            Some(dt_id) => {
                let mut update = body;
                update["id"] = json!(dt_id);
                let token = client_token(&format!("outlook-event-update:{id}:{version}"));
                client
                    .update_calendar_event(union_id, &dt_id, &update, &token)
                    .await?;
                self.record_pair(None, &dt_id, id, "event_update").await?;
                tracing::info!(route = %route.name, item = id, dingtalk = %dt_id, "Outlook event update relayed to DingTalk");
            }
            None => {
                let token = client_token(&format!("outlook-event:{id}"));
                let created = client
                    .create_calendar_event(union_id, &body, &token)
                    .await?;
                let Some(dt_id) = created.get("id").and_then(Value::as_str) else {
                    return Err(JobFailure::transient(
                        "DingTalk created an event without an id",
                    ));
                };
                self.record_pair(Some(EVENT_NS), dt_id, id, "event").await?;
                tracing::info!(route = %route.name, item = id, dingtalk = %dt_id, "Outlook event relayed to DingTalk");
            }
        }
        self.store
            .kv_put(&version_key, &version, Some(EVENT_VERSION_TTL))
            .await
            .map_err(transient)?;
        Ok(())
    }

    async fn fetch_item(
        &self,
        mailbox: &str,
        collection: &str,
        id: &str,
    ) -> Result<Value, crate::graph::GraphError> {
        let expand = format!("singleValueExtendedProperties($filter=id eq '{ORIGIN_PROPERTY}')");
        let path = format!(
            "{collection}/{}?$expand={}",
            utf8_percent_encode(id, NON_ALPHANUMERIC),
            utf8_percent_encode(&expand, NON_ALPHANUMERIC)
        );
        self.graph.get(mailbox, &path).await
    }
}
