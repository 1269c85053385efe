//! DingTalk calendar events, todos and contacts → Outlook events, To Do tasks and
//! contacts: fetched from DingTalk, written once, patched on updates, deleted where the
//! route allows it.

use serde_json::Value;

use super::{Outcome, RelayHandler, store_failure};
use crate::{
    config::RouteConfig,
    graph::{GraphClient, client::LinkedResource},
    store::Side,
    sync::{
        Action, SyncEvent,
        keys::{TASK_SOURCE_PREFIX, TODO_SOURCE_PREFIX, map_namespace, version_key},
        mapping,
    },
    worker::JobFailure,
};

impl RelayHandler {
    pub(super) async fn relay_calendar(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
    ) -> Result<Outcome, JobFailure> {
        let Some(id) = event.ids.get("calendar_event_id") else {
            return Ok(Outcome::new("", None, "skipped_without_event_id"));
        };
        let mailbox = route.mailbox.as_str();
        let ns = map_namespace("event", &route.name);
        let source = mapping::origin("event", id);
        let mapped = self
            .store
            .map_get(&ns, Side::Left, id)
            .await
            .map_err(store_failure)?;
        if event.action == Action::Deleted {
            return self
                .delete_mapped(route, &ns, id, mapped, |gid| async move {
                    graph.delete_event(mailbox, &gid).await
                })
                .await;
        }
        let union = route.dingtalk.union_id.as_deref().unwrap_or_default();
        let calendar = event
            .ids
            .get("calendar_id")
            .map(String::as_str)
            .unwrap_or("primary");
        let ding = match self
            .dingtalk()?
            .get_calendar_event(union, calendar, id)
            .await
        {
            Ok(v) => v,
            Err(e) if e.status == 404 => return Ok(Outcome::new(id, mapped, "source_gone")),
            Err(e) => return Err(e.into()),
        };
        let body = mapping::event_from_dingtalk(&ding, &source, &route.time_zone)
            .ok_or_else(|| JobFailure::permanent("DingTalk event has no start or end"))?;
        self.upsert(
            &ns,
            id,
            mapped,
            &source,
            |gid| {
                let body = body.clone();
                async move { graph.update_event(mailbox, &gid, body).await }
            },
            || graph.create_event_once(mailbox, body.clone(), &source),
        )
        .await
    }

    pub(super) async fn relay_todo(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
    ) -> Result<Outcome, JobFailure> {
        let Some(id) = event.ids.get("task_id") else {
            return Ok(Outcome::new("", None, "skipped_without_task_id"));
        };
        let mailbox = route.mailbox.as_str();
        let ns = map_namespace("todo", &route.name);
        let mapped = self
            .store
            .map_get(&ns, Side::Left, id)
            .await
            .map_err(store_failure)?;
        if event.action == Action::Deleted {
            if mapped.is_some() && route.allow_deletes {
                let list = graph.ensure_todo_list(mailbox, &route.todo_list).await?;
                return self
                    .delete_mapped(route, &ns, id, mapped, |gid| async move {
                        graph.delete_task(mailbox, &list, &gid).await
                    })
                    .await;
            }
            return self
                .delete_mapped(route, &ns, id, mapped, |_| async { Ok(()) })
                .await;
        }
        let union = route.dingtalk.union_id.as_deref().unwrap_or_default();
        let task = match self.dingtalk()?.get_todo(union, id).await {
            Ok(v) => v,
            Err(e) if e.status == 404 => return Ok(Outcome::new(id, mapped, "source_gone")),
            Err(e) => return Err(e.into()),
        };
        let source = task.get("sourceId").and_then(Value::as_str).unwrap_or("");
        if source.starts_with(TODO_SOURCE_PREFIX) {
            // A todo the Outlook → DingTalk relay made for a mail (before its id pair
            // was visible): it is the mail's read state, not a To Do task.
            return Ok(Outcome::new(id, mapped, "echo_skipped"));
        }
        if mapped.is_none() && source.starts_with(TASK_SOURCE_PREFIX) {
            // Made for an Outlook task by the To Do poller, whose id pair is not visible
            // yet: the task exists already.
            return Ok(Outcome::new(id, mapped, "echo_skipped"));
        }
        let mut body = mapping::task_from_dingtalk(&task, id);
        let version = mapping::task_version(&body);
        let version_key = |gid: &str| version_key(&route.name, gid);
        if let Some(gid) = &mapped
            && self
                .store
                .kv_get(&version_key(gid))
                .await
                .map_err(store_failure)?
                .as_deref()
                == Some(version.as_str())
        {
            // The task holds this content already (often the poller's own write).
            return Ok(Outcome::new(id, mapped, "unchanged"));
        }
        // The client adds the link itself; a PATCH must not add a second one.
        let link = body
            .as_object_mut()
            .and_then(|o| o.remove("linkedResources"))
            .and_then(|l| l.get(0).cloned())
            .unwrap_or_default();
        let link = LinkedResource {
            application_name: mapping::LINKED_APP_NAME.to_string(),
            external_id: id.clone(),
            display_name: link
                .get("displayName")
                .and_then(Value::as_str)
                .map(str::to_string),
            web_url: link
                .get("webUrl")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let list = graph.ensure_todo_list(mailbox, &route.todo_list).await?;
        let outcome = self
            .upsert(
                &ns,
                id,
                mapped,
                &mapping::origin("todo", id),
                |gid| {
                    let (body, list) = (body.clone(), list.as_str());
                    async move { graph.update_task(mailbox, list, &gid, body).await }
                },
                || graph.create_task_once(mailbox, &list, body.clone(), &link),
            )
            .await?;
        if let Some(gid) = &outcome.target_id {
            self.store
                .kv_put(&version_key(gid), &version, None)
                .await
                .map_err(store_failure)?;
        }
        Ok(outcome)
    }

    pub(super) async fn relay_contact(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
        user_id: &str,
    ) -> Result<Outcome, JobFailure> {
        let mailbox = route.mailbox.as_str();
        let ns = map_namespace("contact", &route.name);
        let source = mapping::origin("contact", user_id);
        let mapped = self
            .store
            .map_get(&ns, Side::Left, user_id)
            .await
            .map_err(store_failure)?;
        if event.action == Action::Deleted {
            return self
                .delete_mapped(route, &ns, user_id, mapped, |gid| async move {
                    graph.delete_contact(mailbox, &gid).await
                })
                .await;
        }
        let user = self.dingtalk()?.get_user(user_id).await?;
        let body = mapping::contact_from_dingtalk(&user, &source);
        self.upsert(
            &ns,
            user_id,
            mapped,
            &source,
            |gid| {
                let body = body.clone();
                async move { graph.update_contact(mailbox, &gid, body).await }
            },
            || graph.create_contact_once(mailbox, body.clone(), &source),
        )
        .await
    }
}
