//! DingTalk protocol code: callback crypto and signatures (pure), event normalisation,
//! the HTTP push and robot verifiers, the API client and the failed-push backfill.

pub mod backfill;
pub mod client;
pub mod crypto;
pub mod custom_robot;
pub mod events;
pub mod push;
pub mod robot;
pub mod sample;
pub mod sign;
pub mod stream;
