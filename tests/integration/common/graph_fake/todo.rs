//! Microsoft To Do: lists, tasks with their `linkedResources`, task delta per list, and the
//! test-side helpers that add, change and delete tasks.

use serde_json::{Value, json};

use super::{
    GraphFake,
    delta::delta_reply,
    http::{Ctx, Reply, not_found},
    query::present,
    state::{Mailbox, Shared, merge, now_iso_millis, random_string, stamp},
    validation::json_body,
};

impl GraphFake {
    pub fn todo_lists(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.lists.clone())
            .unwrap_or_default()
    }

    /// Tasks (with `linkedResources`) of the list with this id or display name.
    pub fn tasks(&self, mailbox: &str, list: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| {
            let id = m
                .lists
                .iter()
                .find(|l| l["id"] == list || l["displayName"] == list)
                .and_then(|l| l["id"].as_str())?;
            m.tasks.get(id).cloned()
        })
        .flatten()
        .unwrap_or_default()
    }

    /// Every task of every list.
    pub fn all_tasks(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.tasks.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds a task to the To Do list with this id or display name (as a user in Outlook
    /// would; the list is created when missing); returns its id.
    pub fn put_task(&self, mailbox: &str, list: &str, task: Value) -> String {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .entry(mailbox.to_lowercase())
            .or_insert_with(Mailbox::fresh);
        let lid = match mb
            .lists
            .iter()
            .find(|l| l["id"] == list || l["displayName"] == list)
        {
            Some(l) => l["id"].as_str().unwrap_or_default().to_string(),
            None => {
                let l = stamp(
                    json!({"displayName": list, "isOwner": true, "isShared": false, "wellknownListName": "none"}),
                    "AAMkL",
                );
                let lid = l["id"].as_str().unwrap_or_default().to_string();
                mb.lists.push(l);
                mb.tasks.insert(lid.clone(), vec![]);
                lid
            }
        };
        let mut t = stamp(task, "AAMkT");
        t["lastModifiedDateTime"] = json!(now_iso_millis());
        for (k, v) in [
            ("status", json!("notStarted")),
            ("importance", json!("normal")),
        ] {
            if t.get(k).is_none() {
                t[k] = v;
            }
        }
        let id = t["id"].as_str().unwrap_or_default().to_string();
        mb.tasks.get_mut(&lid).expect("list").push(t);
        mb.log_change(&id, &todo_changes(&lid), false);
        id
    }

    /// Changes a task in place (as a user in Outlook would), logging it for delta.
    pub fn update_task(&self, mailbox: &str, id: &str, patch: Value) {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        let (lid, task) = mb
            .tasks
            .iter_mut()
            .find_map(|(lid, ts)| {
                ts.iter_mut()
                    .find(|t| t["id"] == id)
                    .map(|t| (lid.clone(), t))
            })
            .expect("task");
        merge(task, &patch);
        task["changeKey"] = json!(random_string(16));
        task["lastModifiedDateTime"] = json!(now_iso_millis());
        mb.log_change(id, &todo_changes(&lid), false);
    }

    /// Deletes a task (as a user in Outlook would), logging it for delta.
    pub fn delete_task(&self, mailbox: &str, id: &str) {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        let lid = mb
            .tasks
            .iter_mut()
            .find_map(|(lid, ts)| {
                let pos = ts.iter().position(|t| t["id"] == id)?;
                ts.remove(pos);
                Some(lid.clone())
            })
            .expect("task");
        mb.log_change(id, &todo_changes(&lid), true);
    }
}

/// `POST todo/lists`: a new, empty list.
pub(super) fn create_list(ctx: &Ctx, shared: &Shared, mailbox: &str) -> Reply {
    let body = match json_body(
        ctx,
        shared,
        "microsoft.graph.todoTaskList",
        "todoTaskList",
        true,
    ) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut list = stamp(body, "AAMkL");
    list["isOwner"] = json!(true);
    list["isShared"] = json!(false);
    list["wellknownListName"] = json!("none");
    let id = list["id"].as_str().unwrap_or_default().to_string();
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    mb.lists.push(list.clone());
    mb.tasks.insert(id, vec![]);
    Reply::json(201, list)
}

/// `POST todo/lists/{id}/tasks`, with Graph's defaults for status and importance.
pub(super) fn create_task(ctx: &Ctx, shared: &Shared, mailbox: &str, lid: &str) -> Reply {
    let body = match json_body(ctx, shared, "microsoft.graph.todoTask", "todoTask", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut task = stamp(body, "AAMkT");
    if task.get("status").is_none() {
        task["status"] = json!("notStarted");
    }
    if task.get("importance").is_none() {
        task["importance"] = json!("normal");
    }
    if let Some(lrs) = task
        .get_mut("linkedResources")
        .and_then(Value::as_array_mut)
    {
        for lr in lrs {
            lr["id"] = json!(uuid::Uuid::new_v4().to_string());
        }
    }
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(tasks) = mb.tasks.get_mut(lid) else {
        return not_found(ctx);
    };
    tasks.push(task.clone());
    mb.log_change(
        task["id"].as_str().unwrap_or_default(),
        &todo_changes(lid),
        false,
    );
    Reply::json(201, task)
}

/// `POST todo/lists/{id}/tasks/{id}/linkedResources`.
pub(super) fn add_linked_resource(
    ctx: &Ctx,
    shared: &Shared,
    mailbox: &str,
    lid: &str,
    tid: &str,
) -> Reply {
    let body = match json_body(
        ctx,
        shared,
        "microsoft.graph.linkedResource",
        "linkedResource",
        true,
    ) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut lr = body;
    lr["id"] = json!(uuid::Uuid::new_v4().to_string());
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(task) = mb
        .tasks
        .get_mut(lid)
        .and_then(|ts| ts.iter_mut().find(|t| t["id"] == tid))
    else {
        return not_found(ctx);
    };
    match task["linkedResources"].as_array_mut() {
        Some(a) => a.push(lr.clone()),
        None => task["linkedResources"] = json!([lr.clone()]),
    }
    Reply::json(201, lr)
}

/// `GET todo/lists/{id}/tasks/{id}/linkedResources`.
pub(super) fn linked_resources(
    ctx: &Ctx,
    shared: &Shared,
    mailbox: &str,
    lid: &str,
    tid: &str,
) -> Reply {
    let st = shared.state();
    match st.mailboxes[mailbox]
        .tasks
        .get(lid)
        .and_then(|ts| ts.iter().find(|t| t["id"] == tid))
    {
        Some(t) => Reply::json(
            200,
            json!({"value": t["linkedResources"].as_array().cloned().unwrap_or_default()}),
        ),
        None => not_found(ctx),
    }
}

/// Change-log "folder" of the tasks of To Do list `list`.
pub(super) fn todo_changes(list: &str) -> String {
    format!("x-fake-todo:{list}")
}

/// `todo/lists/{id}/tasks/delta`: like [`message_delta`] over one list. Tasks come without
/// `linkedResources` (a navigation property Graph returns only when expanded).
pub(super) fn task_delta(ctx: &Ctx, shared: &Shared, mailbox: &str, list: &str) -> Reply {
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    let Some(tasks) = mb.tasks.get(list) else {
        return not_found(ctx);
    };
    let link = format!(
        "{}/v1.0/users/{}/todo/lists/{list}/tasks/delta",
        shared.base(),
        url::form_urlencoded::byte_serialize(mailbox.as_bytes()).collect::<String>()
    );
    delta_reply(ctx, shared, mb, &todo_changes(list), tasks, link, |t| {
        let mut t = present(ctx, t);
        if let Some(o) = t.as_object_mut() {
            o.remove("linkedResources");
        }
        t
    })
}
