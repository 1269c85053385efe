//! Calendar: the default calendar, events (a repeated `transactionId` answers the existing
//! event), `calendarView/delta`, and the test-side helpers that add and change events.

use serde_json::{Value, json};

use super::{
    GraphFake,
    delta::delta_reply,
    http::{Ctx, Reply, graph_error},
    mail::web_link,
    query::{list_reply, present},
    state::{Mailbox, Shared, merge, random_string, stamp},
    validation::{json_body, record_violation},
};

impl GraphFake {
    pub fn events(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.events.clone())
            .unwrap_or_default()
    }

    /// Adds an event to the mailbox's calendar (as a user in Outlook would); returns its id.
    pub fn put_event(&self, mailbox: &str, event: Value) -> String {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .entry(mailbox.to_lowercase())
            .or_insert_with(Mailbox::fresh);
        let mut ev = stamp(event, "AAMkE");
        let id = ev["id"].as_str().unwrap_or_default().to_string();
        ev["webLink"] = json!(web_link(&id));
        if ev.get("isCancelled").is_none() {
            ev["isCancelled"] = json!(false);
        }
        mb.log_change(&id, CALENDAR, false);
        mb.events.push(ev);
        id
    }

    /// Changes an event in place (a new `changeKey`, as Graph gives on every change).
    pub fn update_event(&self, mailbox: &str, id: &str, patch: Value) {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        let ev = mb.events.iter_mut().find(|e| e["id"] == id).expect("event");
        merge(ev, &patch);
        ev["changeKey"] = json!(random_string(16));
        mb.log_change(id, CALENDAR, false);
    }
}

/// Change-log "folder" of calendar events.
pub(super) const CALENDAR: &str = "x-fake-calendar";

/// `GET calendars`: one default calendar per mailbox.
pub(super) fn list_calendars(ctx: &Ctx, mailbox: &str) -> Reply {
    list_reply(
        ctx,
        vec![json!({
            "id": format!("AAMkCal-{}", mailbox.replace(['@', '.'], "-")),
            "name": "Calendar",
            "isDefaultCalendar": true,
            "canEdit": true,
            "owner": { "address": mailbox, "name": mailbox },
        })],
    )
}

/// `POST events`; a `transactionId` already used answers the existing event.
pub(super) fn create_event(ctx: &Ctx, shared: &Shared, mailbox: &str) -> Reply {
    let body = match json_body(ctx, shared, "microsoft.graph.event", "event", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    if let Some(tx) = body["transactionId"].as_str()
        && let Some(existing) = mb.events.iter().find(|e| e["transactionId"] == tx)
    {
        // The fake's assumption (undocumented by Graph): the existing event.
        return Reply::json(201, present(ctx, existing));
    }
    let ev = stamp(body, "AAMkE");
    mb.log_change(ev["id"].as_str().unwrap_or_default(), CALENDAR, false);
    mb.events.push(ev.clone());
    Reply::json(201, present(ctx, &ev))
}

/// `calendarView/delta`: like [`message_delta`] over the primary calendar (the window
/// `startDateTime`/`endDateTime` is required on the first call, as on Graph, but the fake
/// returns every event regardless of its dates).
pub(super) fn event_delta(ctx: &Ctx, shared: &Shared, mailbox: &str) -> Reply {
    let first = ctx.q("$skiptoken").is_none() && ctx.q("$deltatoken").is_none();
    if first && (ctx.q("startDateTime").is_none() || ctx.q("endDateTime").is_none()) {
        record_violation(
            shared,
            ctx,
            "calendarView/delta",
            vec![
                "startDateTime and endDateTime are required (Graph: calendarView needs both)"
                    .into(),
            ],
        );
        return graph_error(
            ctx,
            400,
            "ErrorInvalidParameter",
            "startDateTime and endDateTime are required.",
        );
    }
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    let link = format!(
        "{}/v1.0/users/{}/calendarView/delta",
        shared.base(),
        url::form_urlencoded::byte_serialize(mailbox.as_bytes()).collect::<String>()
    );
    delta_reply(ctx, shared, mb, CALENDAR, &mb.events, link, |e| {
        present(ctx, e)
    })
}
