//! Outlook mail → one markdown message in the route's DingTalk conversation (the custom
//! robot within its 20-a-minute budget, merging a backlog into one digest; else the app
//! robot; else the conversation's session webhook), each mail relayed once.

use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    ECHO_TTL, OutlookRelay, Trigger, carries_origin_marker,
    render::{digest_markdown, mail_markdown, msg_uuid},
};
use crate::{
    config::RouteConfig,
    dingtalk::custom_robot,
    store::Side,
    sync::{
        keys::{MAIL_NS, dingtalk_echo_key},
        mapping::ORIGIN_PROPERTY,
        outlook_triggers,
        routes::carries_read_state,
    },
    worker::JobFailure,
};

/// Most mails merged into one robot digest.
const DIGEST_MAX: usize = 20;
/// Queued mails remembered per robot.
const DIGEST_FEED_CAP: usize = 500;

impl OutlookRelay {
    pub(super) async fn relay_message(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        trigger: Trigger,
        since: Option<&str>,
        rich: Option<Value>,
    ) -> Result<(), JobFailure> {
        self.claimed(
            id,
            self.relay_message_claimed(route, mailbox, id, trigger, since, rich),
        )
        .await
    }

    async fn relay_message_claimed(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        trigger: Trigger,
        since: Option<&str>,
        rich: Option<Value>,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        let skip = |reason: &'static str| {
            metrics::counter!("graph_relay_skipped_total", "reason" => reason).increment(1);
            tracing::debug!(item = id, reason, "Outlook item not relayed");
            Ok(())
        };
        if self
            .store
            .map_get(MAIL_NS, Side::Right, id)
            .await
            .map_err(transient)?
            .is_some()
        {
            // Already relayed. Its chat message has no read state an app can write; the
            // read-state todo (when the route has one) follows the mail's read state.
            if carries_read_state(route) {
                return self.read_to_todo(route, mailbox, id, rich).await;
            }
            return skip("already_relayed");
        }
        if trigger == Trigger::Updated {
            return skip("update_of_unrelayed_item");
        }
        let message = match rich {
            Some(v) => v,
            None => match self.fetch_message(mailbox, id).await {
                Ok(v) => v,
                Err(e) if e.is_not_found() => return skip("gone"),
                Err(e) => return Err(e.into()),
            },
        };
        if carries_origin_marker(&message) {
            return skip("origin_marker");
        }
        if message.get("isDraft").and_then(Value::as_bool) == Some(true) {
            return skip("draft");
        }
        if trigger == Trigger::Delta
            && let (Some(since), Some(received)) = (
                since.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()),
                message
                    .get("receivedDateTime")
                    .and_then(Value::as_str)
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()),
            )
            && received < since
        {
            return skip("before_baseline");
        }
        outlook_triggers::publish(
            self.store.as_ref(),
            outlook_triggers::mail_received(&route.name, mailbox, &message),
        )
        .await?;
        if carries_read_state(route) {
            self.ensure_mail_todo(route, id, &message).await?;
        }
        let (title, text) = mail_markdown(&message);
        if route.dingtalk.robot_webhook.is_some() {
            return self.send_via_robot(route, id, &title, &text).await;
        }
        let uuid = msg_uuid(&route.name, id);
        let dingtalk_id = self.post_markdown(route, &title, &text, &uuid).await?;
        self.record_relayed(route, &dingtalk_id, &[id.to_string()])
            .await
    }

    async fn record_relayed(
        &self,
        route: &RouteConfig,
        dingtalk_id: &str,
        ids: &[String],
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        for id in ids {
            self.store
                .map_put(MAIL_NS, dingtalk_id, id)
                .await
                .map_err(transient)?;
            metrics::counter!("graph_relayed_total", "kind" => "mail").increment(1);
            tracing::info!(route = %route.name, item = %id, dingtalk = %dingtalk_id, "Outlook mail relayed to DingTalk");
        }
        self.store
            .kv_put(
                &dingtalk_echo_key(dingtalk_id),
                ids.first().map(String::as_str).unwrap_or(""),
                Some(ECHO_TTL),
            )
            .await
            .map_err(transient)
    }

    /// Sends through the route's custom robot, at most 20 a minute: sends to one robot
    /// are serialised (a store lease); a mail that finds the minute's budget used is
    /// queued in the robot's digest feed and its job waits for the next minute, when the
    /// first waiting job posts ONE digest of every queued mail (the others then find
    /// theirs relayed). Nothing is dropped.
    async fn send_via_robot(
        &self,
        route: &RouteConfig,
        id: &str,
        title: &str,
        text: &str,
    ) -> Result<(), JobFailure> {
        let webhook = route
            .dingtalk
            .robot_webhook
            .as_ref()
            .expect("checked")
            .expose_secret();
        let robot = hex::encode(&Sha256::digest(webhook.as_bytes())[..8]);
        let lock = format!("robot-send:{robot}");
        let Some(token) = self.acquire_wait(&lock, Duration::from_secs(30)).await? else {
            return Err(JobFailure::transient("robot busy").retry_after(Duration::from_secs(1)));
        };
        let result = self
            .send_via_robot_locked(route, &robot, id, title, text)
            .await;
        let _ = self.store.lease_release(&lock, &token).await;
        result
    }

    async fn send_via_robot_locked(
        &self,
        route: &RouteConfig,
        robot: &str,
        id: &str,
        title: &str,
        text: &str,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        if self
            .store
            .map_get(MAIL_NS, Side::Right, id)
            .await
            .map_err(transient)?
            .is_some()
        {
            return Ok(()); // posted in a digest meanwhile
        }
        let feed = format!("robot-digest:{robot}");
        // Mails queued for this robot and not relayed yet (oldest first), then this one.
        let mut queued: Vec<Value> = Vec::new();
        for raw in self
            .store
            .feed_recent(&feed, DIGEST_FEED_CAP)
            .await
            .map_err(transient)?
            .into_iter()
            .rev()
        {
            let Ok(v) = serde_json::from_str::<Value>(&raw) else {
                continue;
            };
            let Some(qid) = v.get("id").and_then(Value::as_str) else {
                continue;
            };
            if qid == id
                || self
                    .store
                    .map_get(MAIL_NS, Side::Right, qid)
                    .await
                    .map_err(transient)?
                    .is_some()
            {
                continue;
            }
            queued.push(v);
        }
        queued.truncate(DIGEST_MAX - 1);
        queued.push(json!({"id": id, "title": title, "text": text}));
        let ids: Vec<String> = queued
            .iter()
            .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let (d_title, d_text, uuid) = if queued.len() == 1 {
            (
                title.to_string(),
                text.to_string(),
                msg_uuid(&route.name, id),
            )
        } else {
            let (title, text) = digest_markdown(&queued);
            (title, text, msg_uuid(&route.name, &ids.join(",")))
        };
        match self.post_markdown(route, &d_title, &d_text, &uuid).await {
            Ok(dingtalk_id) => {
                if ids.len() > 1 {
                    metrics::counter!("dingtalk_robot_digests_total").increment(1);
                    tracing::info!(route = %route.name, mails = ids.len(), "queued Outlook mails posted as one digest");
                }
                self.record_relayed(route, &dingtalk_id, &ids).await
            }
            Err(e) if e.retry_after.is_some() && !e.permanent => {
                // Over the robot's budget: queue this mail for the next digest and wait.
                let entry = json!({"id": id, "title": title, "text": text}).to_string();
                self.store
                    .feed_put(&feed, id, &entry, DIGEST_FEED_CAP)
                    .await
                    .map_err(transient)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// `outlook.mail.read` for an updated message that is now read.
    pub(super) async fn publish_read(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        rich: Option<&Value>,
    ) -> Result<(), JobFailure> {
        let message = match rich {
            Some(v) => v.clone(),
            None => match self.fetch_message(mailbox, id).await {
                Ok(v) => v,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            },
        };
        outlook_triggers::publish(
            self.store.as_ref(),
            outlook_triggers::mail_read(&route.name, mailbox, &message),
        )
        .await
    }

    async fn fetch_message(
        &self,
        mailbox: &str,
        id: &str,
    ) -> Result<Value, crate::graph::GraphError> {
        let expand = format!(
            "singleValueExtendedProperties($filter=id eq '{ORIGIN_PROPERTY}'),attachments($select=name)"
        );
        let path = format!(
            "messages/{}?$select={}&$expand={}",
            utf8_percent_encode(id, NON_ALPHANUMERIC),
            utf8_percent_encode(
                "id,subject,from,sender,body,bodyPreview,webLink,hasAttachments,receivedDateTime,lastModifiedDateTime,isRead,isDraft",
                NON_ALPHANUMERIC
            ),
            utf8_percent_encode(&expand, NON_ALPHANUMERIC)
        );
        self.graph.get(mailbox, &path).await
    }

    /// Posts markdown to the route's conversation; returns the DingTalk-side id.
    async fn post_markdown(
        &self,
        route: &RouteConfig,
        title: &str,
        text: &str,
        uuid: &str,
    ) -> Result<String, JobFailure> {
        let d = &route.dingtalk;
        if let Some(webhook) = &d.robot_webhook {
            let body = json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}});
            custom_robot::send(
                &self.http,
                &self.store,
                webhook.expose_secret(),
                d.robot_secret.as_ref().map(|s| s.expose_secret()),
                &body,
                uuid,
            )
            .await?;
            return Ok(format!("robot:{uuid}"));
        }
        if let (Some(robot), Some(conversation), Some(client)) =
            (&d.robot_code, &d.conversation_id, &self.dingtalk)
        {
            let answer = client
                .send_group_message(
                    robot,
                    conversation,
                    "sampleMarkdown",
                    &json!({"title": title, "text": text}),
                )
                .await?;
            let key = answer
                .get("processQueryKey")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("robot:{uuid}"));
            return Ok(key);
        }
        // Last resort: reply through the session webhook a robot callback left for the
        // conversation (valid about 90 minutes after the last @-mention of the robot).
        if let Some(conversation) = &d.conversation_id
            && let Some(url) =
                crate::dingtalk::events::session_webhook_for(self.store.as_ref(), conversation)
                    .await
                    .map_err(|e| JobFailure::transient(e.to_string()))?
        {
            let body = json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}});
            custom_robot::send(&self.http, &self.store, &url, None, &body, uuid).await?;
            return Ok(format!("session:{uuid}"));
        }
        Err(JobFailure::permanent(format!(
            "route {} has no DingTalk target for mail: set dingtalk.robot_webhook, or robot_code + conversation_id with DingTalk app credentials (or @-mention the app robot in the group so its session webhook can be used)",
            route.name
        )))
    }
}
