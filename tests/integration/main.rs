//! Integration tests, one binary (one link step on CI): the real service on random
//! ports, real Redis, local fakes of Graph and DingTalk. `common/` is the harness.

mod common;

mod actions;
mod backup;
mod captured_jobs;
mod dingtalk_client;
mod dingtalk_in;
mod dingtalk_stream;
mod doctor;
mod graph_client;
mod graph_fake;
mod graph_in;
mod graph_latency;
mod graph_mail_import;
mod graph_sync;
mod graph_validation_tokens;
mod hook_owners;
mod http_hardening;
mod integrations;
mod lowcode;
mod mail_backup;
mod mail_doctor;
mod mail_imap;
mod mail_send;
mod mailbox_deletes;
mod mailbox_fidelity;
mod mailbox_outlook;
mod mailbox_read;
mod mailbox_sync;
mod n8n_real;
mod openapi;
mod queue_faults;
mod relays;
mod roundtrip;
mod spine;
mod store_contract;
mod store_outage;
mod todo_sync;
mod undo;
