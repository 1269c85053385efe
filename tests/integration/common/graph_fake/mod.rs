//! A stateful fake of Microsoft Graph (the Outlook mail, calendar, contacts and To Do
//! endpoints the bridge uses) and of the Entra ID token endpoint, for integration tests.
//!
//! It runs an actix server on a random loopback port in its own thread (the pattern of
//! [`super::fake::FakeServer`]) and:
//! - issues tokens for `client_credentials` with a client secret or a signed
//!   `client_assertion` (PS256/RS256, checked against a configured certificate);
//! - keeps per-mailbox state (folders, messages with extended properties and attachments,
//!   upload sessions, events, contacts, To Do lists and tasks, sent mail);
//! - validates every JSON request body against the schema of its operation in
//!   `tests/oracles/graph-openapi-subset.yaml` (with the relaxations of tests/oracles/README.md) and
//!   records every mismatch as a violation (tests assert `violations()` is empty);
//! - throttles like Graph: at most 4 requests in flight per mailbox (429
//!   `ApplicationThrottled`/`MailboxConcurrency`) and an optional request budget per window
//!   (429 `TooManyRequests`), both with `Retry-After`;
//! - lets tests inject one-off failures and inspect everything it received.
//!
//! Assumptions of the fake where Graph's behaviour is not documented:
//! - event `transactionId`: a second `POST /events` with a `transactionId` already used in
//!   that mailbox answers `201` with the EXISTING event (no duplicate is created), for the
//!   fake's whole lifetime. Real Graph's window and duplicate response are unverified.
//! - a message created with the extended property `Integer 0x0E07` (PR_MESSAGE_FLAGS)
//!   without `MSGFLAG_UNSENT` (8) is stored as a non-draft (`isDraft: false`) item, read
//!   when `MSGFLAG_READ` (1) is set and unread otherwise (the flags win over `isRead`);
//!   without the property, messages created by POST are drafts, as Graph documents.
//!   `SystemTime 0x0E06` / `SystemTime 0x0039` set `receivedDateTime` / `sentDateTime`.
//! - a JSON request body above 4 MB, or a file of 3 MB or more inline in a message
//!   create, is refused (413) and recorded as a violation
//!   (<https://learn.microsoft.com/graph/outlook-large-attachments>).
//! - `$filter` takes `internetMessageId eq '…'` (quotes doubled) and `… or …` of the
//!   simple clauses; comparisons of strings ignore case.
//! - `messages/{id}/$value` answers the MIME a test delivered with
//!   [`GraphFake::put_mime_message`], or renders one from the item (see `mime`).
//! - with [`GraphFakeConfig::notify_changes`] the fake notifies by itself: `created` for a
//!   message POSTed into a watched folder, `updated` for a message PATCH or
//!   [`GraphFake::update_message`]; otherwise only when the test asks.
//! - `move` keeps the id when the request carries `Prefer: IdType="ImmutableId"`, and gives
//!   a new id otherwise.
//! - `linkedResources` of a task (a navigation property) are returned only with
//!   `$expand=linkedResources`; `singleValueExtendedProperties` only with
//!   `$expand=singleValueExtendedProperties(...)`.
//! - the replay of a client-assertion `jti` is refused with `invalid_client`; the AADSTS
//!   number Entra uses for that is not known, the description says so.
//! - `$batch` is not implemented (answers 501 and records a violation).
//! - subscriptions: `POST /subscriptions` validates the body against the oracle (plus
//!   the required fields of tests/oracles/README.md, rule 4), refuses lifetimes beyond 4 230 minutes and
//!   `clientState` over 128 characters, and runs Graph's validation handshake against
//!   `notificationUrl` and `lifecycleNotificationUrl` (both; http allowed here, Graph
//!   requires https) before answering `201`. An expired subscription disappears (later
//!   PATCH/GET: 404), as Graph deletes subscriptions not renewed in time; the fake keeps
//!   the ids of those that expired for tests to assert none did.
//! - notifications (unless `notify_changes`) and lifecycle events are sent only when the
//!   test asks ([`GraphFake::notify`], [`GraphFake::lifecycle`]); the fake knows each
//!   subscription's `clientState`.
//! - message delta (`mailFolders/{id}/messages/delta`): tokens are the mailbox's change
//!   sequence number; pages hold `delta_page_size` items (or `Prefer:
//!   odata.maxpagesize`), chained by `@odata.nextLink` (`$skiptoken`) up to a page with
//!   `@odata.deltaLink` (`$deltatoken`). A change lists the item's current state once,
//!   however often it changed; items deleted or moved out come as `@removed`. An
//!   unknown token answers 410 `syncStateNotFound`. `$filter=receivedDateTime ge|gt …`
//!   (the one filter Graph allows there) limits the first round's listing and is carried
//!   in the links; later changes are listed whatever their receipt time (undocumented). `calendarView/delta` works the same
//!   way over the calendar (it requires the window on the first call but ignores dates).
//!
//! Layout: this file holds the handle ([`GraphFake`]) and its start-up; `http` receives,
//! records and routes requests; `auth`, `throttling`, `failures` and `validation` apply to
//! every request; `resources` routes mailbox paths to `mail`, `attachments`, `events`,
//! `contacts` and `todo` (each with the test-side helpers of its kind; `mime` renders a
//! message's `$value`), `subscriptions`
//! serves `/subscriptions` and sends notifications; `query` and `delta` serve collections;
//! `state` and `config` hold the data.

#![allow(dead_code)]

mod attachments;
mod auth;
mod config;
mod contacts;
mod delta;
mod events;
mod failures;
mod http;
mod mail;
mod mime;
mod query;
mod resources;
mod state;
mod subscriptions;
mod throttling;
mod todo;
mod validation;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpServer, web};

// The public API, as callers name it (`graph_fake::GraphFake`, `graph_fake::Failure`, …);
// the chaos suite, which compiles this harness too, uses only part of it.
#[allow(unused_imports)]
pub use self::{
    auth::{TestCert, cert_thumbprints},
    config::{GraphFakeConfig, RetryAfterFormat},
    failures::Failure,
    subscriptions::MAX_SUBSCRIPTION_MINUTES,
    validation::{Violation, oracle_document, schema_errors},
};
use self::{
    http::handle,
    state::{Shared, State},
    validation::validators,
};
use super::fake::Recorded;

/// The scope a daemon asks for.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";

/// `client_assertion_type` for certificate credentials.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The oracle, copied into the repository so CI on a clean clone has it.
pub const ORACLE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/oracles/graph-openapi-subset.yaml"
);

/// A running Graph + Entra fake.
pub struct GraphFake {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl GraphFake {
    /// Starts a fake with default settings (secret auth, 4 in flight, no budget).
    pub fn start_default() -> GraphFake {
        Self::start(GraphFakeConfig::default())
    }

    /// Starts a fake on a random loopback port.
    pub fn start(config: GraphFakeConfig) -> GraphFake {
        validators(); // compile the oracle once per process, before the first request
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind graph fake");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            addr,
            config: Mutex::new(config),
            state: Mutex::new(State::default()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(s);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(256 * 1024 * 1024))
                        .default_service(web::to(handle))
                })
                .workers(2)
                .disable_signals()
                .listen(listener)
                .expect("listen")
                .run();
                let _ = tx.send(server.handle());
                let _ = server.await;
            });
        });
        let handle = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("graph fake starts");
        GraphFake {
            addr,
            shared,
            handle,
        }
    }

    /// `http://127.0.0.1:<port>`: the authority to configure instead of
    /// `https://login.microsoftonline.com`.
    pub fn authority(&self) -> String {
        self.shared.base()
    }

    /// `http://127.0.0.1:<port>/v1.0`: the Graph base URL.
    pub fn graph_base(&self) -> String {
        format!("{}/v1.0", self.shared.base())
    }

    /// The token endpoint for the configured tenant (also the assertion `aud`).
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.shared.base(),
            self.shared.config().tenant
        )
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.shared.base(), path)
    }

    pub fn config(&self) -> GraphFakeConfig {
        self.shared.config()
    }

    // --- runtime switches -------------------------------------------------------------

    /// Changes the settings of the running fake.
    pub fn update_config(&self, f: impl FnOnce(&mut GraphFakeConfig)) {
        f(&mut self.shared.config.lock().expect("config"));
    }

    /// Marks the configured secret expired (or not).
    pub fn set_secret_expired(&self, expired: bool) {
        self.update_config(|c| c.secret_expired = expired);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.update_config(|c| c.latency = latency);
    }

    // --- inspection -----------------------------------------------------------------

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }

    /// Requests whose path contains `part`.
    pub fn requests_to(&self, part: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(part))
            .collect()
    }
}

impl Drop for GraphFake {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}
