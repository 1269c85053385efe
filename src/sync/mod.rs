//! What the bridge does with the normalised events ([`SyncEvent`], defined in
//! [`crate::event`] and re-exported here): the translations between DingTalk and Graph
//! objects, routes and relays.

pub mod keys;
pub mod mapping;
pub mod outbound_relay;
pub mod outlook_triggers;
pub mod relay;
pub mod routes;
pub mod todo_sync;

pub use crate::event::{Action, EventKind, Source, SyncEvent};
