//! Read state, DingTalk → Outlook: the DingTalk todo the Outlook → DingTalk relay made
//! for a mail (routes with `mail` and `todo`) stands for the mail's read state; when it
//! is done, the mail is marked read, once.

use std::time::Duration;

use serde_json::Value;

use super::{ECHO_TTL, Outcome, RelayHandler, store_failure};
use crate::{
    config::RouteConfig,
    graph::GraphClient,
    store::{Job, Side},
    sync::{
        Action, EventKind, SyncEvent,
        keys::{dingtalk_echo_key, graph_echo_key, graph_item_claim, mail_todo_ns},
        routes::carries_read_state,
    },
    worker::JobFailure,
};

impl RelayHandler {
    /// Read state, DingTalk → Outlook: an event for a DingTalk todo the Outlook → DingTalk
    /// relay made for a mail (see [`carries_read_state`]) is never
    /// relayed as a To Do task; when the todo is done, the mail is marked read, once.
    /// `true` when the event was such a todo's.
    pub(super) async fn todo_read_state(
        &self,
        event: &SyncEvent,
        job: &Job,
    ) -> Result<bool, JobFailure> {
        if event.kind != EventKind::Todo {
            return Ok(false);
        }
        let Some(task_id) = event.ids.get("task_id") else {
            return Ok(false);
        };
        for route in self.routes.all().iter().filter(|r| carries_read_state(r)) {
            let Some(gid) = self
                .store
                .map_get(&mail_todo_ns(&route.name), Side::Left, task_id)
                .await
                .map_err(store_failure)?
            else {
                continue;
            };
            let result = self.todo_done_to_read(route, event, task_id, &gid).await?;
            let o = Outcome::new(task_id, Some(gid), result);
            self.audit_outcome(event, route, job, &o).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn todo_done_to_read(
        &self,
        route: &RouteConfig,
        event: &SyncEvent,
        task_id: &str,
        gid: &str,
    ) -> Result<&'static str, JobFailure> {
        if event.action != Action::Updated {
            return Ok("read_state_unchanged");
        }
        if self
            .store
            .kv_get(&dingtalk_echo_key(task_id))
            .await
            .map_err(store_failure)?
            .is_some_and(|v| v.starts_with("read:"))
        {
            // The bridge itself marked it done (the mail was read in Outlook).
            return Ok("echo_skipped");
        }
        let union = route.dingtalk.union_id.as_deref().unwrap_or_default();
        let task = match self.dingtalk()?.get_todo(union, task_id).await {
            Ok(v) => v,
            Err(e) if e.status == 404 => return Ok("source_gone"),
            Err(e) => return Err(e.into()),
        };
        if task.get("done").and_then(Value::as_bool) != Some(true) {
            return Ok("not_done");
        }
        let graph = self.graph.as_deref().ok_or_else(|| {
            JobFailure::permanent("read state needs Microsoft Graph, which is not configured")
        })?;
        // One writer per mail at a time (the Outlook → DingTalk relay claims the same).
        let claim = graph_item_claim(gid);
        let token = uuid::Uuid::new_v4().to_string();
        if !self
            .store
            .lease_acquire(&claim, &token, Duration::from_secs(60))
            .await
            .map_err(store_failure)?
        {
            return Err(
                JobFailure::transient("mail is being relayed by another job")
                    .retry_after(Duration::from_secs(1)),
            );
        }
        let result = self.mark_read(graph, route, task_id, gid).await;
        let _ = self.store.lease_release(&claim, &token).await;
        result
    }

    async fn mark_read(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        task_id: &str,
        gid: &str,
    ) -> Result<&'static str, JobFailure> {
        let mailbox = route.mailbox.as_str();
        let path = format!(
            "messages/{}?$select=id,isRead",
            percent_encoding::utf8_percent_encode(gid, percent_encoding::NON_ALPHANUMERIC)
        );
        match graph.get(mailbox, &path).await {
            Ok(m) if m.get("isRead").and_then(Value::as_bool) == Some(true) => {
                return Ok("already_read");
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok("target_gone"),
            Err(e) => return Err(e.into()),
        }
        // The guard first: the `updated` notification for this write must find it.
        self.store
            .kv_put(
                &graph_echo_key(gid),
                &format!("done:{task_id}"),
                Some(ECHO_TTL),
            )
            .await
            .map_err(store_failure)?;
        graph.set_read(mailbox, gid, true).await?;
        Ok("marked_read")
    }
}
