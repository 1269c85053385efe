//! The normalised model every platform's input is turned into ([`SyncEvent`]), the
//! translations between DingTalk and Graph objects, routes and relays.

pub mod keys;
pub mod mapping;
pub mod outbound_relay;
pub mod outlook_triggers;
pub mod relay;
pub mod routes;
pub mod todo_sync;

// The event model sits below the platform modules that produce it (crate::event).
pub use crate::event::{Action, EventKind, Source, SyncEvent};
