//! The normalised model every platform's input is turned into ([`SyncEvent`]); routes,
//! loop guard and id mapping grow here.

pub mod event;

pub use event::{Action, EventKind, Source, SyncEvent};
