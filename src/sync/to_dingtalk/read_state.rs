//! Read state, Outlook → DingTalk: where a route carries it (kinds `mail` and `todo`, a
//! DingTalk user), a relayed mail also becomes a DingTalk todo, and reading the mail in
//! Outlook marks that todo done, once.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::{ECHO_TTL, OutlookRelay, render::mail_todo};
use crate::{
    config::RouteConfig,
    store::Side,
    sync::keys::{dingtalk_echo_key, mail_todo_ns},
    worker::JobFailure,
};

impl OutlookRelay {
    /// The DingTalk todo for a mail about to be relayed: created once (`sourceId` makes a
    /// retried create find the first one), the id pair kept in [`mail_todo_ns`].
    pub(super) async fn ensure_mail_todo(
        &self,
        route: &RouteConfig,
        id: &str,
        message: &Value,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        let ns = mail_todo_ns(&route.name);
        if self
            .store
            .map_get(&ns, Side::Right, id)
            .await
            .map_err(transient)?
            .is_some()
        {
            return Ok(());
        }
        let (Some(union_id), Some(client)) = (&route.dingtalk.union_id, &self.dingtalk) else {
            tracing::warn!(route = %route.name, "route carries read state but DingTalk app credentials are not configured");
            return Ok(());
        };
        let task = mail_todo(&route.name, id, message);
        let created = client.create_todo(union_id, &task).await?;
        let Some(todo_id) = created.get("id").and_then(Value::as_str) else {
            return Err(JobFailure::transient(
                "DingTalk created a todo without an id",
            ));
        };
        self.record_pair(Some(&ns), todo_id, id, "mail_todo")
            .await?;
        tracing::info!(route = %route.name, item = id, dingtalk = %todo_id, "DingTalk todo created for an Outlook mail");
        Ok(())
    }

    /// A relayed mail read in Outlook → its DingTalk todo done, once: nothing when the
    /// mail is unread or the todo already done.
    pub(super) async fn read_to_todo(
        &self,
        route: &RouteConfig,
        mailbox: &str,
        id: &str,
        rich: Option<Value>,
    ) -> Result<(), JobFailure> {
        let transient = |e: crate::store::StoreError| JobFailure::transient(e.to_string());
        let skip = |reason: &'static str| {
            metrics::counter!("graph_relay_skipped_total", "reason" => reason).increment(1);
            tracing::debug!(item = id, reason, "Outlook read state not relayed");
            Ok(())
        };
        let Some(todo_id) = self
            .store
            .map_get(&mail_todo_ns(&route.name), Side::Right, id)
            .await
            .map_err(transient)?
        else {
            return skip("already_relayed");
        };
        let (Some(union_id), Some(client)) = (&route.dingtalk.union_id, &self.dingtalk) else {
            return skip("no_dingtalk_client");
        };
        let read = match rich.as_ref().and_then(|m| m.get("isRead")) {
            Some(v) => v.as_bool() == Some(true),
            None => {
                let path = format!(
                    "messages/{}?$select=id,isRead",
                    utf8_percent_encode(id, NON_ALPHANUMERIC)
                );
                match self.graph.get(mailbox, &path).await {
                    Ok(m) => m.get("isRead").and_then(Value::as_bool) == Some(true),
                    Err(e) if e.is_not_found() => return skip("gone"),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if !read {
            return skip("unread");
        }
        let task = match client.get_todo(union_id, &todo_id).await {
            Ok(t) => t,
            Err(e) if e.status == 404 => return skip("todo_gone"),
            Err(e) => return Err(e.into()),
        };
        if task.get("done").and_then(Value::as_bool) == Some(true) {
            return skip("todo_already_done");
        }
        // The guard first: the todo event DingTalk sends for this update must find it.
        self.store
            .kv_put(
                &dingtalk_echo_key(&todo_id),
                &format!("read:{id}"),
                Some(ECHO_TTL),
            )
            .await
            .map_err(transient)?;
        client
            .update_todo(union_id, &todo_id, &json!({ "done": true }))
            .await?;
        metrics::counter!("graph_relayed_total", "kind" => "read_state").increment(1);
        tracing::info!(route = %route.name, item = id, dingtalk = %todo_id, "Outlook read state relayed: DingTalk todo done");
        Ok(())
    }
}
