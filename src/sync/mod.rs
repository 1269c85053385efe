//! The sync core: translations, routes, relays.

pub mod mapping;
