//! Contacts: created by POST; read, changed and deleted through the generic item handlers.

use serde_json::Value;

use super::{
    GraphFake,
    http::{Ctx, Reply},
    query::present,
    state::{Shared, stamp},
    validation::json_body,
};

impl GraphFake {
    pub fn contacts(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.contacts.clone())
            .unwrap_or_default()
    }
}

/// `POST contacts`.
pub(super) fn create_contact(ctx: &Ctx, shared: &Shared, mailbox: &str) -> Reply {
    let body = match json_body(ctx, shared, "microsoft.graph.contact", "contact", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let c = stamp(body, "AAMkC");
    shared
        .state()
        .mailboxes
        .get_mut(mailbox)
        .expect("mailbox")
        .contacts
        .push(c.clone());
    Reply::json(201, present(ctx, &c))
}
