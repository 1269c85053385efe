//! DingTalk protocol code: callback crypto and signatures (pure), events, API client.

pub mod client;
pub mod crypto;
pub mod sign;
pub mod stream;
