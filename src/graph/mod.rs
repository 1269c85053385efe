//! Microsoft Graph: notifications (and, on merge, auth and client).

pub mod jwks;
pub mod notifications;
