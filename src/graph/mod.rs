//! Microsoft Graph: notifications (and, on merge, auth and client).

pub mod inbound;
pub mod jwks;
pub mod notifications;
pub mod subscriptions;
