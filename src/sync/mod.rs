//! What the bridge does with the normalised events ([`SyncEvent`], defined in
//! [`crate::event`] and re-exported here): the translations between DingTalk and Graph
//! objects, routes and relays.

pub mod keys;
pub mod mail_import;
pub mod mailbox;
pub mod mapping;
pub mod outlook_triggers;
pub mod routes;
pub mod to_dingtalk;
pub mod to_outlook;
pub mod todo_sync;
pub mod undo;

// The event model sits below the platform modules that produce it (crate::event).
pub use crate::event::{Action, EventKind, Source, SyncEvent};
