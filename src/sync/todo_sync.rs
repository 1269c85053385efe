//! Outlook To Do → DingTalk todo, by delta polling: Graph documents no app-only change
//! notifications for To Do (the supported resources are listed at
//! <https://learn.microsoft.com/graph/change-notifications-overview>), so one instance
//! (a store lease) follows
//! `todo/lists/{list}/tasks/delta` of each route's To Do list every interval.
//!
//! The list is the route's `todo_list`, the same one the DingTalk → Outlook relay writes
//! into, so one list is bridged both ways. Pairs share that relay's id-pair namespace
//! (left = DingTalk todo id, right = To Do task id). Loop prevention:
//! - every relayed pair keeps its content version ([`task_version`]: title, done, due
//!   day) under [`version_key`], written by both directions; a task whose version is the
//!   stored one is not relayed (the bridge's own write coming back);
//! - an unmapped task that links to DingTalk (`linkedResources`) is one the other relay
//!   is writing right now, so it is skipped;
//! - the DingTalk todos made here carry a `sourceId` starting with
//!   [`TASK_SOURCE_PREFIX`] and an echo guard `echo:dingtalk:<id>`, which the DingTalk →
//!   Outlook relay honours.
//!
//! The delta link is stored only after every change of a round is relayed, so a crash or
//! an error repeats the round (each step is idempotent) rather than losing a change. The
//! first round takes the baseline: tasks already in the list are not relayed.

use std::{sync::Arc, time::Duration};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    config::{RouteConfig, RouteKind},
    dingtalk::client::DingTalkClient,
    graph::GraphClient,
    store::{AuditEntry, SharedStore, Side},
    sync::{
        keys::{TASK_SOURCE_PREFIX, dingtalk_echo_key, map_namespace, version_key},
        mapping::{task_version, todo_from_task},
        outlook_triggers,
    },
};

/// Lease held by the instance that polls.
pub const LEASE: &str = "graph-todo-poll";
/// How long the echo guard of a DingTalk todo written here lives.
const ECHO_TTL: Duration = Duration::from_secs(600);
/// Safety bound on delta pages per round.
const MAX_PAGES: usize = 1000;

/// True when `route` relays Outlook To Do tasks to a DingTalk user's todos.
pub fn polled(route: &RouteConfig) -> bool {
    route.direction.to_dingtalk()
        && route.kinds.contains(&RouteKind::Todo)
        && route.dingtalk.union_id.is_some()
}

/// The stable DingTalk `sourceId` of the todo for To Do task `id` on `route`.
pub fn task_source_id(route: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("task\n{route}\n{id}").as_bytes());
    format!("{TASK_SOURCE_PREFIX}{}", hex::encode(&digest[..16]))
}

fn delta_key(route: &str, list: &str) -> String {
    format!("graph:delta:{route}:todo:{list}")
}

type Result<T> = anyhow::Result<T>;

/// Polls the To Do lists of the routes that relay tasks to DingTalk.
pub struct TodoPoller {
    store: SharedStore,
    graph: Arc<GraphClient>,
    dingtalk: Arc<DingTalkClient>,
    routes: Vec<RouteConfig>,
}

impl TodoPoller {
    /// A poller for the routes among `routes` that relay tasks; `None` when there are none.
    pub fn new(
        store: SharedStore,
        graph: Arc<GraphClient>,
        dingtalk: Arc<DingTalkClient>,
        routes: &[RouteConfig],
    ) -> Option<TodoPoller> {
        let routes: Vec<RouteConfig> = routes.iter().filter(|r| polled(r)).cloned().collect();
        (!routes.is_empty()).then_some(TodoPoller {
            store,
            graph,
            dingtalk,
            routes,
        })
    }

    /// One round over every route; a failing route does not stop the others.
    pub async fn poll_all(&self) -> Result<()> {
        let mut failed = 0usize;
        for route in &self.routes {
            if let Err(e) = self.poll_route(route).await {
                failed += 1;
                tracing::warn!(route = %route.name, error = %e, "To Do poll failed; retried next round");
            }
        }
        if failed > 0 {
            anyhow::bail!("{failed} route(s) failed");
        }
        Ok(())
    }

    /// Follows the route list's delta from the stored link (or takes the baseline).
    async fn poll_route(&self, route: &RouteConfig) -> Result<()> {
        let mailbox = route.mailbox.as_str();
        let list = self
            .graph
            .ensure_todo_list(mailbox, &route.todo_list)
            .await?;
        let key = delta_key(&route.name, &list);
        let stored = self.store.kv_get(&key).await?;
        let baseline = stored.is_none();
        let mut page = match &stored {
            Some(link) => self.graph.get_url(mailbox, link).await,
            None => {
                let path = format!(
                    "todo/lists/{}/tasks/delta",
                    utf8_percent_encode(&list, NON_ALPHANUMERIC)
                );
                self.graph.get(mailbox, &path).await
            }
        };
        if let Err(e) = &page
            && !baseline
            && (e.status() == Some(410)
                || matches!(e.code(), Some("syncStateNotFound" | "resyncRequired")))
        {
            // The token expired: a new baseline still relays edits of paired tasks.
            tracing::warn!(route = %route.name, error = %e, "To Do delta token no longer valid; new baseline");
            self.store.kv_delete(&key).await?;
            return Box::pin(self.poll_route(route)).await;
        }
        let mut changed = 0usize;
        for _ in 0..MAX_PAGES {
            let body = page?;
            for task in body
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if self.on_task(route, &list, task, baseline).await? {
                    changed += 1;
                }
            }
            if let Some(next) = body.get("@odata.nextLink").and_then(Value::as_str) {
                page = self.graph.get_url(mailbox, next).await;
                continue;
            }
            let Some(link) = body.get("@odata.deltaLink").and_then(Value::as_str) else {
                anyhow::bail!("To Do delta page with neither nextLink nor deltaLink");
            };
            self.store.kv_put(&key, link, None).await?;
            if baseline || changed > 0 {
                tracing::info!(route = %route.name, baseline, changed, "To Do delta round finished");
            }
            return Ok(());
        }
        anyhow::bail!("To Do delta did not end within the page bound")
    }

    /// Relays one task of a delta page; `true` when DingTalk was written.
    async fn on_task(
        &self,
        route: &RouteConfig,
        list: &str,
        task: &Value,
        baseline: bool,
    ) -> Result<bool> {
        let Some(id) = task.get("id").and_then(Value::as_str) else {
            return Ok(false);
        };
        let ns = map_namespace("todo", &route.name);
        let mapped = self.store.map_get(&ns, Side::Right, id).await?;
        let result = if task.get("@removed").is_some() {
            self.removed(route, &ns, id, mapped, baseline).await?
        } else {
            match mapped {
                Some(todo) => self.changed(route, &ns, id, task, &todo).await?,
                None if baseline => "baseline",
                None => self.created(route, &ns, list, id, task).await?,
            }
        };
        metrics::counter!("todo_poll_tasks_total", "result" => result).increment(1);
        let wrote = matches!(result, "created" | "updated" | "deleted");
        if wrote {
            self.store
                .audit_append(&AuditEntry::now(
                    format!("relay.outlook_task.{result}"),
                    json!({ "route": route.name, "outlook_id": id, "result": result }),
                ))
                .await?;
            tracing::info!(route = %route.name, item = id, result, "Outlook task relayed to DingTalk");
        } else {
            tracing::debug!(route = %route.name, item = id, result, "Outlook task not relayed");
        }
        Ok(wrote)
    }

    /// Marks DingTalk todo `todo` as written for task `id`, so that the todo event
    /// DingTalk sends for the write is not relayed back.
    async fn guard_echo(&self, todo: &str, id: &str) -> Result<()> {
        self.store
            .kv_put(
                &dingtalk_echo_key(todo),
                &format!("task:{id}"),
                Some(ECHO_TTL),
            )
            .await?;
        Ok(())
    }

    fn union_id<'r>(&self, route: &'r RouteConfig) -> &'r str {
        route.dingtalk.union_id.as_deref().unwrap_or_default()
    }

    async fn publish(
        &self,
        route: &RouteConfig,
        id: &str,
        task: &Value,
        change: &str,
    ) -> Result<()> {
        outlook_triggers::publish(
            self.store.as_ref(),
            Some(outlook_triggers::task_changed(
                &route.name,
                &route.mailbox,
                id,
                task,
                change,
            )),
        )
        .await
        .map_err(|e| anyhow::anyhow!(e.message))
    }

    async fn removed(
        &self,
        route: &RouteConfig,
        ns: &str,
        id: &str,
        mapped: Option<String>,
        baseline: bool,
    ) -> Result<&'static str> {
        if !baseline {
            self.publish(route, id, &json!({ "id": id }), "deleted")
                .await?;
        }
        let Some(todo) = mapped else {
            return Ok("removed_unpaired");
        };
        if !route.allow_deletes {
            // The pair stays, so the todo is never taken for a new task.
            return Ok("deletes_not_allowed");
        }
        self.guard_echo(&todo, id).await?;
        self.dingtalk
            .delete_todo(self.union_id(route), &todo)
            .await?;
        self.store.map_delete(ns, Side::Right, id).await?;
        self.store.kv_delete(&version_key(&route.name, id)).await?;
        Ok("deleted")
    }

    async fn changed(
        &self,
        route: &RouteConfig,
        ns: &str,
        id: &str,
        task: &Value,
        todo: &str,
    ) -> Result<&'static str> {
        let version = task_version(task);
        let vkey = version_key(&route.name, id);
        if self.store.kv_get(&vkey).await?.as_deref() == Some(version.as_str()) {
            return Ok("same_version");
        }
        self.publish(route, id, task, "updated").await?;
        // The guard first: the todo event DingTalk sends for this update must find it.
        self.guard_echo(todo, id).await?;
        match self
            .dingtalk
            .update_todo(self.union_id(route), todo, &todo_from_task(task, None))
            .await
        {
            Ok(_) => {}
            Err(e) if e.status == 404 => {
                // Deleted in DingTalk meanwhile: the task no longer has a counterpart.
                self.store.map_delete(ns, Side::Right, id).await?;
                self.store.kv_put(&vkey, &version, None).await?;
                return Ok("todo_gone");
            }
            Err(e) => return Err(e.into()),
        }
        self.store.kv_put(&vkey, &version, None).await?;
        Ok("updated")
    }

    async fn created(
        &self,
        route: &RouteConfig,
        ns: &str,
        list: &str,
        id: &str,
        task: &Value,
    ) -> Result<&'static str> {
        if self.links_to_dingtalk(route, list, id, task).await? {
            // Written by the DingTalk → Outlook relay, whose id pair is not visible yet.
            return Ok("dingtalk_linked");
        }
        self.publish(route, id, task, "created").await?;
        let union = self.union_id(route);
        let source = task_source_id(&route.name, id);
        // `sourceId` makes a repeated round find this todo instead of adding another.
        let created = self
            .dingtalk
            .create_todo(union, &todo_from_task(task, Some(&source)))
            .await?;
        let Some(todo) = created.get("id").and_then(Value::as_str) else {
            anyhow::bail!("DingTalk created a todo without an id");
        };
        self.guard_echo(todo, id).await?;
        if task.get("status").and_then(Value::as_str) == Some("completed")
            && created.get("done").and_then(Value::as_bool) != Some(true)
        {
            self.dingtalk
                .update_todo(union, todo, &json!({ "done": true }))
                .await?;
        }
        self.store.map_put(ns, todo, id).await?;
        self.store
            .kv_put(&version_key(&route.name, id), &task_version(task), None)
            .await?;
        Ok("created")
    }

    /// True when the task links to a DingTalk todo (its `linkedResources`, read from the
    /// delta item when present, else fetched).
    async fn links_to_dingtalk(
        &self,
        route: &RouteConfig,
        list: &str,
        id: &str,
        task: &Value,
    ) -> Result<bool> {
        let is_ours = |links: &Value| {
            links.as_array().is_some_and(|ls| {
                ls.iter().any(|l| {
                    l.get("applicationName").and_then(Value::as_str)
                        == Some(crate::sync::mapping::LINKED_APP_NAME)
                })
            })
        };
        if let Some(links) = task.get("linkedResources") {
            return Ok(is_ours(links));
        }
        let path = format!(
            "todo/lists/{}/tasks/{}/linkedResources",
            utf8_percent_encode(list, NON_ALPHANUMERIC),
            utf8_percent_encode(id, NON_ALPHANUMERIC)
        );
        match self.graph.get(&route.mailbox, &path).await {
            Ok(page) => Ok(page.get("value").is_some_and(is_ours)),
            // Deleted since the delta page was made: a later round reports the removal.
            Err(e) if e.is_not_found() => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_polled_on_todo_routes_towards_dingtalk_with_a_user() {
        let mut r: RouteConfig = toml::from_str(
            "name = \"r\"\nmailbox = \"a@x\"\nkinds = [\"todo\"]\ndirection = \"both\"\n[dingtalk]\nunion_id = \"u\"\n",
        )
        .expect("route");
        assert!(polled(&r));
        r.direction = crate::config::Direction::ToOutlook;
        assert!(!polled(&r));
        r.direction = crate::config::Direction::ToDingtalk;
        r.dingtalk.union_id = None;
        assert!(!polled(&r));
        let s = task_source_id("r", "AAMkT1");
        assert_eq!(s, task_source_id("r", "AAMkT1"));
        assert_ne!(s, task_source_id("r", "AAMkT2"));
        assert!(s.starts_with(TASK_SOURCE_PREFIX) && s.len() <= 64);
        assert!(!s.starts_with(crate::sync::keys::TODO_SOURCE_PREFIX));
    }
}
