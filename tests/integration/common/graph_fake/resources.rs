//! Routing of `/v1.0/users/{mailbox}/…` to the handlers of each resource, and the generic
//! item handlers (GET / PATCH / DELETE) shared by events, contacts and To Do.

use serde_json::{Value, json};

use super::{
    attachments::{add_attachment, create_upload_session, list_attachments},
    contacts::create_contact,
    events::{CALENDAR, create_event, event_delta, list_calendars},
    http::{Ctx, Reply, graph_error, not_found},
    mail::{
        create_folder, create_message, get_folder, list_folders, list_messages, message_delta,
        message_item, move_message, send_draft, send_mail,
    },
    mime::message_value,
    query::{list_reply, matches, parse_filter, present},
    state::{Mailbox, Shared, merge, now_iso_millis, random_string},
    todo::{
        add_linked_resource, create_list, create_task, linked_resources, task_delta, todo_changes,
    },
    validation::{json_body, record_violation},
};

pub(super) fn resource(ctx: &Ctx, shared: &Shared, mailbox: &str, rest: &[&str]) -> Reply {
    let m = ctx.method.as_str();
    match (m, rest) {
        // --- mail folders
        ("GET", ["mailFolders"]) => list_folders(ctx, shared, mailbox),
        ("POST", ["mailFolders"]) => create_folder(ctx, shared, mailbox),
        ("GET", ["mailFolders", fid]) => get_folder(ctx, shared, mailbox, fid),
        // --- messages
        ("GET", ["messages"]) => list_messages(ctx, shared, mailbox, None),
        ("GET", ["mailFolders", fid, "messages"]) => list_messages(ctx, shared, mailbox, Some(fid)),
        ("POST", ["messages"]) => create_message(ctx, shared, mailbox, "drafts"),
        ("POST", ["mailFolders", fid, "messages"]) => create_message(ctx, shared, mailbox, fid),
        ("GET", ["mailFolders", fid, "messages", d]) if *d == "delta" || *d == "delta()" => {
            message_delta(ctx, shared, mailbox, fid)
        }
        ("GET", ["messages", id, v]) if *v == "$value" || *v == "%24value" => {
            message_value(ctx, shared, mailbox, id)
        }
        (_, ["messages", id]) | (_, ["mailFolders", _, "messages", id]) => {
            message_item(ctx, shared, mailbox, id)
        }
        ("POST", ["messages", id, "move"]) => move_message(ctx, shared, mailbox, id),
        ("POST", ["messages", id, "send"]) => send_draft(ctx, shared, mailbox, id),
        ("POST", ["sendMail"]) => send_mail(ctx, shared, mailbox),
        // --- attachments
        ("POST", ["messages", id, "attachments"]) => add_attachment(ctx, shared, mailbox, id),
        ("GET", ["messages", id, "attachments"]) => list_attachments(ctx, shared, mailbox, id),
        ("POST", ["messages", id, "attachments", "createUploadSession"]) => {
            create_upload_session(ctx, shared, mailbox, id)
        }
        // --- calendars (one default calendar per mailbox)
        ("GET", ["calendars"]) => list_calendars(ctx, mailbox),
        // --- events
        ("GET", ["calendarView", d]) if *d == "delta" || *d == "delta()" => {
            event_delta(ctx, shared, mailbox)
        }
        ("GET", ["events"]) => collection_list(ctx, shared, mailbox, Coll::Events),
        ("POST", ["events"]) => create_event(ctx, shared, mailbox),
        (_, ["events", id]) => collection_item(ctx, shared, mailbox, Coll::Events, id),
        // --- contacts
        ("GET", ["contacts"]) => collection_list(ctx, shared, mailbox, Coll::Contacts),
        ("POST", ["contacts"]) => create_contact(ctx, shared, mailbox),
        (_, ["contacts", id]) => collection_item(ctx, shared, mailbox, Coll::Contacts, id),
        // --- To Do
        ("GET", ["todo", "lists"]) => collection_list(ctx, shared, mailbox, Coll::Lists),
        ("POST", ["todo", "lists"]) => create_list(ctx, shared, mailbox),
        (_, ["todo", "lists", id]) => collection_item(ctx, shared, mailbox, Coll::Lists, id),
        ("GET", ["todo", "lists", lid, "tasks"]) => {
            collection_list(ctx, shared, mailbox, Coll::Tasks(lid.to_string()))
        }
        ("POST", ["todo", "lists", lid, "tasks"]) => create_task(ctx, shared, mailbox, lid),
        ("GET", ["todo", "lists", lid, "tasks", d]) if *d == "delta" || *d == "delta()" => {
            task_delta(ctx, shared, mailbox, lid)
        }
        (_, ["todo", "lists", lid, "tasks", tid]) => {
            collection_item(ctx, shared, mailbox, Coll::Tasks(lid.to_string()), tid)
        }
        ("POST", ["todo", "lists", lid, "tasks", tid, "linkedResources"]) => {
            add_linked_resource(ctx, shared, mailbox, lid, tid)
        }
        ("GET", ["todo", "lists", lid, "tasks", tid, "linkedResources"]) => {
            linked_resources(ctx, shared, mailbox, lid, tid)
        }
        _ => graph_error(
            ctx,
            400,
            "BadRequest",
            &format!("Unsupported operation {m} {} (fake).", ctx.path),
        ),
    }
}

#[derive(Clone)]
enum Coll {
    Events,
    Contacts,
    Lists,
    Tasks(String),
}

impl Coll {
    fn schema(&self) -> (&'static str, &'static str) {
        match self {
            Coll::Events => ("microsoft.graph.event", "event"),
            Coll::Contacts => ("microsoft.graph.contact", "contact"),
            Coll::Lists => ("microsoft.graph.todoTaskList", "todoTaskList"),
            Coll::Tasks(_) => ("microsoft.graph.todoTask", "todoTask"),
        }
    }
    /// The change-log "folder" delta reads for this collection, when it has delta.
    fn change_log(&self) -> Option<String> {
        match self {
            Coll::Events => Some(CALENDAR.to_string()),
            Coll::Tasks(l) => Some(todo_changes(l)),
            Coll::Contacts | Coll::Lists => None,
        }
    }
    fn items<'a>(&self, mb: &'a mut Mailbox) -> Option<&'a mut Vec<Value>> {
        match self {
            Coll::Events => Some(&mut mb.events),
            Coll::Contacts => Some(&mut mb.contacts),
            Coll::Lists => Some(&mut mb.lists),
            Coll::Tasks(l) => mb.tasks.get_mut(l),
        }
    }
}

fn collection_list(ctx: &Ctx, shared: &Shared, mailbox: &str, coll: Coll) -> Reply {
    let filter = match parse_filter(ctx, shared) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    match coll.items(mb) {
        Some(items) => {
            let v = items
                .iter()
                .filter(|i| matches(&filter, i))
                .cloned()
                .collect();
            list_reply(ctx, v)
        }
        None => not_found(ctx),
    }
}

fn collection_item(ctx: &Ctx, shared: &Shared, mailbox: &str, coll: Coll, id: &str) -> Reply {
    let (schema, kind) = coll.schema();
    let patch = if ctx.method == "PATCH" {
        match json_body(ctx, shared, schema, kind, false) {
            Ok(b) => Some(b),
            Err(r) => return r,
        }
    } else {
        None
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(items) = coll.items(mb) else {
        return not_found(ctx);
    };
    let Some(pos) = items.iter().position(|i| i["id"] == id) else {
        return not_found(ctx);
    };
    match ctx.method.as_str() {
        "GET" => Reply::json(200, present(ctx, &items[pos])),
        "PATCH" => {
            let patch = patch.unwrap_or_default();
            if matches!(coll, Coll::Events)
                && patch
                    .get("transactionId")
                    .is_some_and(|t| *t != items[pos]["transactionId"])
            {
                drop(st);
                record_violation(
                    shared,
                    ctx,
                    schema,
                    vec!["/transactionId: immutable after create (Graph: transactionId cannot change)".into()],
                );
                return graph_error(
                    ctx,
                    400,
                    "ErrorInvalidRequest",
                    "transactionId cannot be changed.",
                );
            }
            merge(&mut items[pos], &patch);
            items[pos]["changeKey"] = json!(random_string(16));
            items[pos]["lastModifiedDateTime"] = json!(now_iso_millis());
            let out = present(ctx, &items[pos]);
            if let Some(log) = coll.change_log() {
                mb.log_change(id, &log, false);
            }
            Reply::json(200, out)
        }
        "DELETE" => {
            let removed = items.remove(pos);
            if let Some(log) = coll.change_log() {
                mb.log_change(id, &log, true);
            }
            if let Coll::Lists = coll
                && let Some(lid) = removed["id"].as_str()
            {
                mb.tasks.remove(lid);
            }
            Reply::empty(204)
        }
        _ => graph_error(ctx, 405, "MethodNotAllowed", "Method not allowed (fake)."),
    }
}
