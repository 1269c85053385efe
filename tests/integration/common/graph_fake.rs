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
//!   `tests/oracles/graph-openapi-subset.yaml` (with the relaxations of graph.md §6.4) and
//!   records every mismatch as a violation (tests assert `violations()` is empty);
//! - throttles like Graph: at most 4 requests in flight per mailbox (429
//!   `ApplicationThrottled`/`MailboxConcurrency`) and an optional request budget per window
//!   (429 `TooManyRequests`), both with `Retry-After`;
//! - lets tests inject one-off failures and inspect everything it received.
//!
//! Assumptions of the fake where Graph's behaviour is not documented (graph.md §5, §7):
//! - event `transactionId`: a second `POST /events` with a `transactionId` already used in
//!   that mailbox answers `201` with the EXISTING event (no duplicate is created), for the
//!   fake's whole lifetime. Real Graph's window and duplicate response are unverified.
//! - a message created with the extended property `Integer 0x0E07` (PR_MESSAGE_FLAGS)
//!   whose value has bit 1 set is stored as a non-draft (`isDraft: false`) item; without it
//!   messages created by POST are drafts, as Graph documents.
//! - `move` keeps the id when the request carries `Prefer: IdType="ImmutableId"`, and gives
//!   a new id otherwise.
//! - `linkedResources` of a task (a navigation property) are returned only with
//!   `$expand=linkedResources`; `singleValueExtendedProperties` only with
//!   `$expand=singleValueExtendedProperties(...)`.
//! - the replay of a client-assertion `jti` is refused with `invalid_client`; the AADSTS
//!   number Entra uses for that is not known, the description says so.
//! - `$batch` is not implemented (answers 501 and records a violation).
//! - subscriptions: `POST /subscriptions` validates the body against the oracle (plus
//!   the required fields of graph.md §6.4.4), refuses lifetimes beyond 4 230 minutes and
//!   `clientState` over 128 characters, and runs Graph's validation handshake against
//!   `notificationUrl` and `lifecycleNotificationUrl` (both; http allowed here, Graph
//!   requires https) before answering `201`. An expired subscription disappears (later
//!   PATCH/GET: 404), as Graph deletes subscriptions not renewed in time; the fake keeps
//!   the ids of those that expired for tests to assert none did.
//! - notifications and lifecycle events are sent only when the test asks
//!   ([`GraphFake::notify`], [`GraphFake::lifecycle`]); the fake knows each
//!   subscription's `clientState`.
//! - message delta (`mailFolders/{id}/messages/delta`): tokens are the mailbox's change
//!   sequence number; pages hold `delta_page_size` items (or `Prefer:
//!   odata.maxpagesize`), chained by `@odata.nextLink` (`$skiptoken`) up to a page with
//!   `@odata.deltaLink` (`$deltatoken`). A change lists the item's current state once,
//!   however often it changed; items deleted or moved out come as `@removed`. An
//!   unknown token answers 410 `syncStateNotFound`. `calendarView/delta` works the same
//!   way over the calendar (it requires the window on the first call but ignores dates).

#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, http::StatusCode, web};
use base64::Engine;
use rand::{Rng, distributions::Alphanumeric};
use serde_json::{Value, json};
use sha2::Digest;

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

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// How `Retry-After` values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfterFormat {
    /// Whole seconds, rounded up, at least 1 (what Graph usually sends).
    Integer,
    /// Fractional seconds such as `0.5` or `2.128` (Graph sometimes sends these).
    Fractional,
}

/// Settings of a [`GraphFake`]; build with `GraphFakeConfig::default()` and the `with_*`
/// methods.
#[derive(Debug, Clone)]
pub struct GraphFakeConfig {
    /// Tenant in the token path (`/{tenant}/oauth2/v2.0/token`); others get AADSTS90002.
    pub tenant: String,
    /// Expected `client_id` (and assertion `iss`/`sub`).
    pub client_id: String,
    /// Accepted client secret; `None` refuses secrets (AADSTS7000215).
    pub client_secret: Option<String>,
    /// The configured secret is expired: answers 401 `invalid_client` AADSTS7000222.
    pub secret_expired: bool,
    /// PEM certificate whose key must sign client assertions; `None` refuses assertions.
    pub certificate_pem: Option<String>,
    /// Extra accepted assertion `aud` values besides the fake's own token URL and
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub extra_audiences: Vec<String>,
    /// `expires_in` of issued tokens (seconds); tokens stop working after it.
    pub token_expires_in: u64,
    /// Requests in flight per mailbox before 429 `ApplicationThrottled` (Graph: 4).
    pub concurrency_limit: usize,
    /// `Retry-After` of the concurrency 429.
    pub concurrency_retry_after: Duration,
    /// Request budget per mailbox: at most `.0` requests per window `.1` (every request
    /// counts, throttled ones too, as on Graph). `None`: no budget.
    pub budget: Option<(u32, Duration)>,
    /// Format of every `Retry-After` the fake writes.
    pub retry_after_format: RetryAfterFormat,
    /// Time each admitted resource request is held (in flight) before it is answered.
    pub latency: Duration,
    /// When set, only these mailboxes exist (others: 404 `MailboxNotEnabledForRESTAPI`).
    pub mailboxes: Option<Vec<String>>,
    /// Items per message delta page when the client sends no `odata.maxpagesize`.
    pub delta_page_size: usize,
}

impl Default for GraphFakeConfig {
    fn default() -> Self {
        Self {
            tenant: "11111111-2222-3333-4444-555555555555".into(),
            client_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
            client_secret: Some("fake-client-secret~value".into()),
            secret_expired: false,
            certificate_pem: None,
            extra_audiences: vec![],
            token_expires_in: 3599,
            concurrency_limit: 4,
            concurrency_retry_after: Duration::from_secs(1),
            budget: None,
            retry_after_format: RetryAfterFormat::Integer,
            latency: Duration::ZERO,
            mailboxes: None,
            delta_page_size: 3,
        }
    }
}

impl GraphFakeConfig {
    pub fn with_tenant(mut self, t: &str) -> Self {
        self.tenant = t.into();
        self
    }
    pub fn with_client_id(mut self, id: &str) -> Self {
        self.client_id = id.into();
        self
    }
    pub fn with_secret(mut self, s: &str) -> Self {
        self.client_secret = Some(s.into());
        self
    }
    pub fn with_expired_secret(mut self) -> Self {
        self.secret_expired = true;
        self
    }
    pub fn with_certificate_pem(mut self, pem: &str) -> Self {
        self.certificate_pem = Some(pem.into());
        self
    }
    pub fn with_audience(mut self, aud: &str) -> Self {
        self.extra_audiences.push(aud.into());
        self
    }
    pub fn with_token_expires_in(mut self, secs: u64) -> Self {
        self.token_expires_in = secs;
        self
    }
    pub fn with_concurrency_limit(mut self, n: usize, retry_after: Duration) -> Self {
        self.concurrency_limit = n;
        self.concurrency_retry_after = retry_after;
        self
    }
    pub fn with_budget(mut self, requests: u32, window: Duration) -> Self {
        self.budget = Some((requests, window));
        self
    }
    pub fn with_fractional_retry_after(mut self) -> Self {
        self.retry_after_format = RetryAfterFormat::Fractional;
        self
    }
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
    pub fn with_mailboxes(mut self, mailboxes: &[&str]) -> Self {
        self.mailboxes = Some(mailboxes.iter().map(|m| m.to_lowercase()).collect());
        self
    }
}

// ---------------------------------------------------------------------------------------
// Injected failures, violations
// ---------------------------------------------------------------------------------------

/// A one-off failure for the next matching requests.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Answer at once with this status, Graph error `code` and optional `Retry-After`.
    Status {
        status: u16,
        code: String,
        retry_after: Option<String>,
    },
    /// Hold the request for `delay` (counted in flight), then answer `status` without
    /// applying it (for crash tests: kill the client while it waits).
    HangThenFail { delay: Duration, status: u16 },
    /// Apply the request normally, then hold the answer for `delay` (the write happened,
    /// the client may never learn it).
    ApplyThenHang { delay: Duration },
    /// Apply the request normally, then answer `status` instead (a gateway that timed
    /// out after Graph stored the item).
    ApplyThenStatus { status: u16 },
    /// Apply the request normally, then break the connection in the middle of the answer.
    ApplyThenDrop,
}

impl Failure {
    /// `503 serviceNotAvailable` with `Retry-After: secs`.
    pub fn unavailable(retry_after: &str) -> Self {
        Failure::Status {
            status: 503,
            code: "serviceNotAvailable".into(),
            retry_after: Some(retry_after.into()),
        }
    }
    /// `504 gatewayTimeout` without `Retry-After`.
    pub fn gateway_timeout() -> Self {
        Failure::Status {
            status: 504,
            code: "UnknownError".into(),
            retry_after: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Injected {
    method: Option<String>,
    path_contains: String,
    remaining: usize,
    failure: Failure,
}

/// A request body (or request) that did not match Graph's schema or rules.
#[derive(Debug, Clone)]
pub struct Violation {
    pub method: String,
    pub path: String,
    /// Which schema/rule was applied (e.g. `microsoft.graph.message`).
    pub schema: String,
    /// Validator messages, `"<instance path>: <message>"`.
    pub messages: Vec<String>,
    pub body: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} against {}: {}",
            self.method,
            self.path,
            self.schema,
            self.messages.join("; ")
        )
    }
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct StoredMessage {
    folder_id: String,
    json: Value,
}

#[derive(Debug, Default)]
struct Mailbox {
    folders: Vec<Value>,
    messages: Vec<StoredMessage>,
    attachment_bytes: HashMap<String, Vec<u8>>,
    events: Vec<Value>,
    contacts: Vec<Value>,
    lists: Vec<Value>,
    tasks: HashMap<String, Vec<Value>>,
    sent: Vec<Value>,
    in_flight: usize,
    max_in_flight: usize,
    window_start: Option<Instant>,
    window_count: u32,
    throttled: usize,
    /// Change log for delta: (sequence, message id, folder id, removed from that folder).
    changes: Vec<(u64, String, String, bool)>,
    seq: u64,
}

impl Mailbox {
    fn log_change(&mut self, id: &str, folder_id: &str, removed: bool) {
        self.seq += 1;
        self.changes
            .push((self.seq, id.to_string(), folder_id.to_string(), removed));
    }
}

const WELL_KNOWN: &[(&str, &str)] = &[
    ("inbox", "Inbox"),
    ("drafts", "Drafts"),
    ("sentitems", "Sent Items"),
    ("deleteditems", "Deleted Items"),
    ("archive", "Archive"),
    ("junkemail", "Junk Email"),
];

impl Mailbox {
    fn fresh() -> Self {
        let mut mb = Mailbox::default();
        for (wk, name) in WELL_KNOWN {
            mb.folders.push(json!({
                "id": opaque_id("AQMk"),
                "displayName": name,
                "parentFolderId": "msgfolderroot",
                "childFolderCount": 0,
                "unreadItemCount": 0,
                "totalItemCount": 0,
                "isHidden": false,
                "x-fake-wellKnownName": wk,
            }));
        }
        let list_id = opaque_id("AAMkL");
        mb.lists.push(json!({
            "id": list_id,
            "displayName": "Tasks",
            "isOwner": true,
            "isShared": false,
            "wellknownListName": "defaultList",
        }));
        mb.tasks.insert(list_id, vec![]);
        mb
    }

    /// Resolves a folder id, a well-known name, or (for inspection) a display name.
    fn folder_id(&self, key: &str, by_name: bool) -> Option<String> {
        self.folders
            .iter()
            .find(|f| {
                f["id"] == key
                    || f["x-fake-wellKnownName"]
                        .as_str()
                        .is_some_and(|w| w.eq_ignore_ascii_case(key))
                    || (by_name
                        && f["displayName"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(key)))
            })
            .and_then(|f| f["id"].as_str().map(str::to_string))
    }
}

#[derive(Debug)]
struct UploadSession {
    mailbox: String,
    message_id: String,
    name: String,
    content_type: String,
    size: usize,
    data: Vec<u8>,
    expires: chrono::DateTime<chrono::Utc>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Instant>,
    token_requests: usize,
    seen_jti: HashSet<String>,
    mailboxes: HashMap<String, Mailbox>,
    uploads: HashMap<String, UploadSession>,
    requests: Vec<Recorded>,
    violations: Vec<Violation>,
    failures: Vec<Injected>,
    throttled_concurrency: usize,
    throttled_budget: usize,
    subscriptions: HashMap<String, FakeSubscription>,
    expired_subscriptions: Vec<String>,
    jwks: Option<Value>,
}

/// A subscription as the fake keeps it.
#[derive(Debug, Clone)]
struct FakeSubscription {
    json: Value,
    client_state: String,
    notification_url: String,
    lifecycle_url: Option<String>,
    expires: chrono::DateTime<chrono::Utc>,
    mailbox: String,
    /// `messages`, `events` or `contacts`.
    collection: String,
    /// Messages of one folder (as named in the resource), or of the whole mailbox.
    folder: Option<String>,
}

struct Shared {
    addr: SocketAddr,
    config: Mutex<GraphFakeConfig>,
    state: Mutex<State>,
}

impl Shared {
    fn config(&self) -> GraphFakeConfig {
        self.config.lock().expect("config").clone()
    }
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("state")
    }
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

// ---------------------------------------------------------------------------------------
// The public handle
// ---------------------------------------------------------------------------------------

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
    /// Invalidates every issued token (the next resource call gets 401).
    pub fn revoke_tokens(&self) {
        self.shared.state().tokens.clear();
    }
    /// Issues a token directly (for tests that do not exercise the token endpoint).
    pub fn issue_token(&self) -> String {
        let token = random_string(64);
        let exp = Instant::now() + Duration::from_secs(self.shared.config().token_expires_in);
        self.shared.state().tokens.insert(token.clone(), exp);
        token
    }
    /// The next `n` requests whose path contains `path_contains` (and whose method is
    /// `method`, when given) fail as `failure`. Applies to token, upload and resource
    /// requests alike.
    pub fn fail_next(&self, method: Option<&str>, path_contains: &str, n: usize, failure: Failure) {
        self.shared.state().failures.push(Injected {
            method: method.map(str::to_uppercase),
            path_contains: path_contains.into(),
            remaining: n,
            failure,
        });
    }

    // --- inspection -----------------------------------------------------------------

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }
    /// Puts a message straight into `folder` (well-known name or id) of `mailbox`, as if
    /// it had been received; server fields are added. Answers its id.
    pub fn seed_message(&self, mailbox: &str, folder: &str, message: Value) -> String {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .entry(mailbox.to_lowercase())
            .or_insert_with(Mailbox::fresh);
        let fid = mb.folder_id(folder, false).expect("folder exists");
        let mut msg = stamp(message, "AAMkM");
        msg["parentFolderId"] = json!(fid);
        msg["isDraft"] = json!(false);
        if msg.get("isRead").is_none() {
            msg["isRead"] = json!(false);
        }
        if msg.get("receivedDateTime").is_none() {
            msg["receivedDateTime"] = json!(now_iso());
        }
        let id = msg["id"].as_str().unwrap_or_default().to_string();
        mb.messages.push(StoredMessage {
            folder_id: fid,
            json: msg,
        });
        id
    }
    /// Requests whose path contains `part`.
    pub fn requests_to(&self, part: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(part))
            .collect()
    }
    /// Token endpoint calls (successful or not).
    pub fn token_requests(&self) -> usize {
        self.shared.state().token_requests
    }
    /// Bodies and requests that broke Graph's schema or rules.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.state().violations.clone()
    }
    /// Panics listing the violations, if any.
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "Graph fake recorded {} violation(s):\n{}",
            v.len(),
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    /// Highest number of requests in flight at once for `mailbox`.
    pub fn max_in_flight(&self, mailbox: &str) -> usize {
        self.with_mailbox(mailbox, |m| m.max_in_flight).unwrap_or(0)
    }
    /// 429s answered for `mailbox` (both kinds).
    pub fn throttled_for(&self, mailbox: &str) -> usize {
        self.with_mailbox(mailbox, |m| m.throttled).unwrap_or(0)
    }
    /// All 429s answered: (concurrency, budget).
    pub fn throttled(&self) -> (usize, usize) {
        let s = self.shared.state();
        (s.throttled_concurrency, s.throttled_budget)
    }
    /// Folders of a mailbox (id, displayName, …).
    pub fn folders(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.folders.clone())
            .unwrap_or_default()
    }
    /// Id of a folder given its id, well-known name or display name.
    pub fn folder_id(&self, mailbox: &str, folder: &str) -> Option<String> {
        self.with_mailbox(mailbox, |m| m.folder_id(folder, true))
            .flatten()
    }
    /// Messages in a folder (id, well-known name or display name), with their
    /// `singleValueExtendedProperties` and `attachments` (metadata).
    pub fn messages(&self, mailbox: &str, folder: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| {
            let Some(fid) = m.folder_id(folder, true) else {
                return vec![];
            };
            m.messages
                .iter()
                .filter(|s| s.folder_id == fid)
                .map(|s| s.json.clone())
                .collect()
        })
        .unwrap_or_default()
    }
    /// Every message of the mailbox, whatever the folder.
    pub fn all_messages(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| {
            m.messages.iter().map(|s| s.json.clone()).collect()
        })
        .unwrap_or_default()
    }
    /// The bytes of an attachment (inline or uploaded).
    pub fn attachment_bytes(&self, mailbox: &str, attachment_id: &str) -> Option<Vec<u8>> {
        self.with_mailbox(mailbox, |m| m.attachment_bytes.get(attachment_id).cloned())
            .flatten()
    }
    pub fn events(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.events.clone())
            .unwrap_or_default()
    }
    pub fn contacts(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.contacts.clone())
            .unwrap_or_default()
    }
    pub fn todo_lists(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.lists.clone())
            .unwrap_or_default()
    }
    /// Tasks (with `linkedResources`) of the list with this id or display name.
    pub fn tasks(&self, mailbox: &str, list: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| {
            let id = m
                .lists
                .iter()
                .find(|l| l["id"] == list || l["displayName"] == list)
                .and_then(|l| l["id"].as_str())?;
            m.tasks.get(id).cloned()
        })
        .flatten()
        .unwrap_or_default()
    }
    /// Every task of every list.
    pub fn all_tasks(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.tasks.values().flatten().cloned().collect())
            .unwrap_or_default()
    }
    /// Messages sent with `sendMail` or `…/send` (`message` plus `saveToSentItems`).
    pub fn sent_mails(&self, mailbox: &str) -> Vec<Value> {
        self.with_mailbox(mailbox, |m| m.sent.clone())
            .unwrap_or_default()
    }

    fn with_mailbox<T>(&self, mailbox: &str, f: impl FnOnce(&Mailbox) -> T) -> Option<T> {
        self.shared
            .state()
            .mailboxes
            .get(&mailbox.to_lowercase())
            .map(f)
    }
}

impl Drop for GraphFake {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

// ---------------------------------------------------------------------------------------
// Schema validation (oracle loaded and compiled once per process)
// ---------------------------------------------------------------------------------------

struct Validators {
    by_name: HashMap<String, jsonschema::Validator>,
    /// Action parameter names in CSDL casing, per action (`sendMail` -> Message, …).
    action_params: HashMap<&'static str, Vec<String>>,
}

/// Component schemas that request bodies are validated against.
const SCHEMAS: &[&str] = &[
    "microsoft.graph.message",
    "microsoft.graph.mailFolder",
    "microsoft.graph.event",
    "microsoft.graph.contact",
    "microsoft.graph.todoTask",
    "microsoft.graph.todoTaskList",
    "microsoft.graph.linkedResource",
    "microsoft.graph.fileAttachment",
    "microsoft.graph.itemAttachment",
    "microsoft.graph.referenceAttachment",
    "microsoft.graph.attachmentItem",
    "microsoft.graph.subscription",
];

/// Actions: (key, oracle path) whose inline request schema is compiled as `action:<key>`.
const ACTIONS: &[(&str, &str)] = &[
    ("sendMail", "/users/{user-id}/sendMail"),
    ("move", "/users/{user-id}/messages/{message-id}/move"),
    (
        "createUploadSession",
        "/users/{user-id}/messages/{message-id}/attachments/createUploadSession",
    ),
];

fn strip_odata_type_required(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(req)) = map.get_mut("required") {
                req.retain(|r| r != "@odata.type");
            }
            for (_, child) in map.iter_mut() {
                strip_odata_type_required(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_odata_type_required),
        _ => {}
    }
}

/// The oracle as JSON, with `@odata.type` stripped from every `required` (graph.md §6.4.1).
pub fn oracle_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = std::fs::read_to_string(ORACLE_PATH).expect("read the Graph oracle");
        let mut doc: Value = serde_norway::from_str(&text).expect("oracle YAML parses");
        strip_odata_type_required(&mut doc);
        doc
    })
}

/// A validator whose root is the whole oracle document plus `schema`'s keywords, so that
/// `#/components/schemas/…` references resolve inside the document.
fn compile(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = doc.clone();
    let obj = root.as_object_mut().expect("document is an object");
    for (k, v) in schema.as_object().expect("schema is an object") {
        obj.insert(k.clone(), v.clone());
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("oracle schema compiles: {e}"))
}

fn validators() -> &'static Validators {
    static V: OnceLock<Validators> = OnceLock::new();
    V.get_or_init(|| {
        let doc = oracle_document();
        let mut by_name = HashMap::new();
        for name in SCHEMAS {
            assert!(
                doc["components"]["schemas"].get(*name).is_some(),
                "oracle lacks {name}"
            );
            let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
            by_name.insert(name.to_string(), compile(doc, &schema));
        }
        let mut action_params = HashMap::new();
        for (key, path) in ACTIONS {
            let schema = &doc["paths"][*path]["post"]["requestBody"]["content"]["application/json"]
                ["schema"];
            assert!(schema.is_object(), "oracle lacks the body of {path}");
            by_name.insert(format!("action:{key}"), compile(doc, schema));
            let params = schema["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            action_params.insert(*key, params);
        }
        Validators {
            by_name,
            action_params,
        }
    })
}

/// Validates `body` against a compiled schema; returns the messages.
pub fn schema_errors(name: &str, body: &Value) -> Vec<String> {
    let v = validators()
        .by_name
        .get(name)
        .unwrap_or_else(|| panic!("no validator {name}"));
    v.iter_errors(body)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect()
}

/// Renames an action body's top-level keys to the CSDL casing (Graph matches parameter
/// names case-insensitively, graph.md §6.4.3); unknown names are reported.
fn normalise_action(action: &str, body: &Value) -> (Value, Vec<String>) {
    let params = &validators().action_params[action];
    let mut out = serde_json::Map::new();
    let mut errors = vec![];
    if let Some(obj) = body.as_object() {
        for (k, v) in obj {
            match params.iter().find(|p| p.eq_ignore_ascii_case(k)) {
                Some(p) => {
                    out.insert(p.clone(), v.clone());
                }
                None => errors.push(format!("/{k}: unknown parameter of {action}")),
            }
        }
    } else {
        errors.push(format!("body of {action} is not an object"));
    }
    (Value::Object(out), errors)
}

/// Separate required-field checks (graph.md §6.4.4).
fn rule_errors(kind: &str, body: &Value, creating: bool) -> Vec<String> {
    let mut errs = vec![];
    match kind {
        "event" => {
            for key in ["start", "end"] {
                match body.get(key) {
                    None if creating => errs.push(format!("/{key}: required on event creation")),
                    None => {}
                    Some(v) => {
                        for f in ["dateTime", "timeZone"] {
                            if !v.get(f).is_some_and(Value::is_string) {
                                errs.push(format!("/{key}/{f}: required string"));
                            }
                        }
                    }
                }
            }
        }
        "subscription" if creating => {
            for f in [
                "changeType",
                "notificationUrl",
                "resource",
                "expirationDateTime",
            ] {
                if body.get(f).is_none() {
                    errs.push(format!("/{f}: required"));
                }
            }
        }
        "todoTask" if creating && !body.get("title").is_some_and(Value::is_string) => {
            errs.push("/title: required on task creation".into());
        }
        _ => {}
    }
    errs
}

// ---------------------------------------------------------------------------------------
// HTTP handling
// ---------------------------------------------------------------------------------------

struct Ctx {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    request_id: String,
}

impl Ctx {
    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    fn immutable_ids(&self) -> bool {
        self.header("prefer")
            .is_some_and(|p| p.contains("IdType=\"ImmutableId\""))
    }
}

/// A reply before the common headers are added.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    /// Break the connection after the status line instead of sending the body.
    dropped: bool,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            headers: vec![],
            body: Some(body),
            dropped: false,
        }
    }
    fn empty(status: u16) -> Self {
        Reply {
            status,
            headers: vec![],
            body: None,
            dropped: false,
        }
    }
    fn header(mut self, k: &str, v: String) -> Self {
        self.headers.push((k.into(), v));
        self
    }
}

fn graph_error(ctx: &Ctx, status: u16, code: &str, message: &str) -> Reply {
    let mut inner = json!({
        "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
        "request-id": ctx.request_id,
    });
    if let Some(c) = ctx.header("client-request-id") {
        inner["client-request-id"] = json!(c);
    }
    Reply::json(
        status,
        json!({"error": {"code": code, "message": message, "innerError": inner}}),
    )
}

fn not_found(ctx: &Ctx) -> Reply {
    graph_error(
        ctx,
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn format_retry_after(d: Duration, format: RetryAfterFormat) -> String {
    match format {
        RetryAfterFormat::Integer => d.as_secs_f64().ceil().max(1.0).to_string(),
        RetryAfterFormat::Fractional => {
            let s = format!("{:.3}", d.as_secs_f64().max(0.001));
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

fn random_string(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn opaque_id(prefix: &str) -> String {
    format!("{prefix}{}", random_string(40))
}

fn now_iso() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn now_iso_millis() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let recorded = Recorded {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: headers.clone(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    shared.state().requests.push(recorded);
    let ctx = Ctx {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect(),
        headers,
        body: body.to_vec(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let reply = dispatch(&ctx, &shared).await;
    let mut builder =
        HttpResponse::build(StatusCode::from_u16(reply.status).expect("valid status"));
    builder.insert_header(("request-id", ctx.request_id.as_str()));
    if let Some(c) = ctx.header("client-request-id") {
        builder.insert_header(("client-request-id", c));
    }
    for (k, v) in &reply.headers {
        builder.insert_header((k.as_str(), v.as_str()));
    }
    if reply.dropped {
        // A body stream that fails makes actix abort the connection mid-answer.
        let broken = futures::stream::once(async {
            Err::<web::Bytes, std::io::Error>(std::io::Error::other("dropped (fake)"))
        });
        return builder.content_type("application/json").streaming(broken);
    }
    match reply.body {
        Some(b) => builder.content_type("application/json").body(b.to_string()),
        None => builder.finish(),
    }
}

/// Takes the injected failure matching this request, if any.
fn take_failure(shared: &Shared, ctx: &Ctx) -> Option<Failure> {
    let mut st = shared.state();
    let pos = st.failures.iter().position(|f| {
        f.remaining > 0
            && ctx.path.contains(&f.path_contains)
            && f.method.as_deref().is_none_or(|m| m == ctx.method)
    })?;
    let f = &mut st.failures[pos];
    f.remaining -= 1;
    let failure = f.failure.clone();
    if f.remaining == 0 {
        st.failures.remove(pos);
    }
    Some(failure)
}

/// Applies an injected failure; `None` means "go on" (possibly with a delay after).
async fn apply_failure(ctx: &Ctx, failure: &Failure) -> Option<Reply> {
    match failure {
        Failure::Status {
            status,
            code,
            retry_after,
        } => {
            let mut r = graph_error(ctx, *status, code, "Injected failure (fake).");
            if let Some(ra) = retry_after {
                r = r.header("Retry-After", ra.clone());
            }
            Some(r)
        }
        Failure::HangThenFail { delay, status } => {
            tokio::time::sleep(*delay).await;
            Some(graph_error(
                ctx,
                *status,
                "UnknownError",
                "Injected failure after a hang (fake).",
            ))
        }
        Failure::ApplyThenHang { .. }
        | Failure::ApplyThenStatus { .. }
        | Failure::ApplyThenDrop => None,
    }
}

async fn dispatch(ctx: &Ctx, shared: &Shared) -> Reply {
    let segs: Vec<&str> = ctx.path.trim_matches('/').split('/').collect();
    // Token endpoint: /{tenant}/oauth2/v2.0/token
    if segs.len() == 4 && segs[1] == "oauth2" && segs[2] == "v2.0" && segs[3] == "token" {
        shared.state().token_requests += 1;
        if let Some(f) = take_failure(shared, ctx)
            && let Some(r) = apply_failure(ctx, &f).await
        {
            return r;
        }
        return token_endpoint(ctx, shared, segs[0]);
    }
    if segs.first() == Some(&"upload") && segs.len() == 2 {
        if let Some(f) = take_failure(shared, ctx)
            && let Some(r) = apply_failure(ctx, &f).await
        {
            return r;
        }
        return upload_put(ctx, shared, segs[1]);
    }
    // Microsoft identity's signing keys (validation tokens of rich notifications).
    if ctx.path == "/common/discovery/v2.0/keys" || ctx.path == "/common/discovery/keys" {
        return match shared.state().jwks.clone() {
            Some(j) => Reply::json(200, j),
            None => graph_error(ctx, 404, "NotFound", "No JWKS configured (fake)."),
        };
    }
    if segs.first() != Some(&"v1.0") {
        return graph_error(ctx, 404, "BadRequest", "Unknown path (fake).");
    }
    // Authentication.
    let token_ok = {
        let st = shared.state();
        ctx.header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|t| st.tokens.get(t))
            .is_some_and(|exp| *exp > Instant::now())
    };
    if !token_ok {
        return graph_error(
            ctx,
            401,
            "InvalidAuthenticationToken",
            "Access token is empty, invalid or expired.",
        );
    }
    if segs.get(1) == Some(&"$batch") {
        record_violation(
            shared,
            ctx,
            "$batch",
            vec!["$batch is not implemented by the fake".into()],
        );
        return graph_error(
            ctx,
            501,
            "NotImplemented",
            "$batch is not implemented by the fake.",
        );
    }
    if segs.get(1) == Some(&"subscriptions") {
        return subscriptions_endpoint(ctx, shared, &segs[2..]).await;
    }
    if segs.get(1) != Some(&"users") || segs.len() < 4 {
        return graph_error(ctx, 400, "BadRequest", "Unsupported path (fake).");
    }
    // Clients encode `@` as `%40`; the state is kept under the decoded address.
    let mailbox = percent_encoding::percent_decode_str(segs[2])
        .decode_utf8_lossy()
        .to_lowercase();
    let config = shared.config();
    if let Some(allowed) = &config.mailboxes
        && !allowed.contains(&mailbox)
    {
        return graph_error(
            ctx,
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        );
    }
    // Throttling: budget first (every request counts), then concurrency.
    {
        let mut guard = shared.state();
        let st = &mut *guard;
        let mb = st
            .mailboxes
            .entry(mailbox.clone())
            .or_insert_with(Mailbox::fresh);
        if let Some((limit, window)) = config.budget {
            let now = Instant::now();
            let start = *mb.window_start.get_or_insert(now);
            if now.duration_since(start) >= window {
                mb.window_start = Some(now);
                mb.window_count = 0;
            }
            mb.window_count += 1;
            if mb.window_count > limit {
                let wait =
                    window.saturating_sub(now.duration_since(mb.window_start.unwrap_or(now)));
                mb.throttled += 1;
                st.throttled_budget += 1;
                return graph_error(
                    ctx,
                    429,
                    "TooManyRequests",
                    "Application is over its MailboxConcurrency limit or its request budget for this mailbox.",
                )
                .header("Retry-After", format_retry_after(wait, config.retry_after_format));
            }
        }
        if mb.in_flight >= config.concurrency_limit {
            mb.throttled += 1;
            st.throttled_concurrency += 1;
            return graph_error(
                ctx,
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            )
            .header(
                "Retry-After",
                format_retry_after(config.concurrency_retry_after, config.retry_after_format),
            );
        }
        mb.in_flight += 1;
        mb.max_in_flight = mb.max_in_flight.max(mb.in_flight);
    }
    let _guard = InFlight {
        shared,
        mailbox: mailbox.clone(),
    };
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    let failure = take_failure(shared, ctx);
    if let Some(f) = &failure
        && let Some(r) = apply_failure(ctx, f).await
    {
        return r;
    }
    let reply = resource(ctx, shared, &mailbox, &segs[3..]);
    match failure {
        Some(Failure::ApplyThenHang { delay }) => tokio::time::sleep(delay).await,
        Some(Failure::ApplyThenStatus { status }) => {
            return graph_error(
                ctx,
                status,
                "UnknownError",
                "Injected failure after the write (fake).",
            );
        }
        Some(Failure::ApplyThenDrop) => {
            return Reply {
                dropped: true,
                ..reply
            };
        }
        _ => {}
    }
    reply
}

/// Decrements the mailbox's in-flight count when the request ends (or is dropped).
struct InFlight<'a> {
    shared: &'a Shared,
    mailbox: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(mb) = self.shared.state().mailboxes.get_mut(&self.mailbox) {
            mb.in_flight = mb.in_flight.saturating_sub(1);
        }
    }
}

fn record_violation(shared: &Shared, ctx: &Ctx, schema: &str, messages: Vec<String>) {
    shared.state().violations.push(Violation {
        method: ctx.method.clone(),
        path: ctx.path.clone(),
        schema: schema.into(),
        messages,
        body: String::from_utf8_lossy(&ctx.body)
            .chars()
            .take(4000)
            .collect(),
    });
}

// ---------------------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------------------

fn entra_error(status: u16, error: &str, code: u32, text: &str) -> Reply {
    let trace = uuid::Uuid::new_v4();
    let corr = uuid::Uuid::new_v4();
    let ts = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ");
    Reply::json(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"),
            "error_codes": [code],
            "timestamp": ts.to_string(),
            "trace_id": trace.to_string(),
            "correlation_id": corr.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn token_endpoint(ctx: &Ctx, shared: &Shared, tenant: &str) -> Reply {
    let cfg = shared.config();
    if ctx.method != "POST" {
        return entra_error(
            405,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    if !ctx
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return entra_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&ctx.body)
        .into_owned()
        .collect();
    if tenant != cfg.tenant {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    // HTTP Basic (RFC 6749 §2.3.1) is accepted as well as form fields.
    let basic = ctx
        .header("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':').map(|(u, p)| {
                let dec = |x: &str| {
                    url::form_urlencoded::parse(format!("a={x}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (dec(u), dec(p))
            })
        });
    let client_id = form
        .get("client_id")
        .cloned()
        .or_else(|| basic.as_ref().map(|b| b.0.clone()))
        .unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if client_id != cfg.client_id {
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        );
    }
    if form.get("scope").map(String::as_str) != Some(GRAPH_DEFAULT_SCOPE) {
        return entra_error(
            400,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.",
                form.get("scope").cloned().unwrap_or_default()
            ),
        );
    }
    let secret = form
        .get("client_secret")
        .cloned()
        .or_else(|| basic.map(|b| b.1));
    if let Some(secret) = secret {
        let Some(expected) = cfg.client_secret.as_deref() else {
            return entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
            );
        };
        if secret != expected {
            return entra_error(
                401,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    cfg.client_id
                ),
            );
        }
        if cfg.secret_expired {
            return entra_error(
                401,
                "invalid_client",
                7000222,
                &format!(
                    "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
                    cfg.client_id
                ),
            );
        }
        return issue(shared, &cfg);
    }
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return entra_error(
                400,
                "invalid_request",
                700025,
                "Client assertion type is invalid (fake: expected urn:ietf:params:oauth:client-assertion-type:jwt-bearer).",
            );
        }
        return match verify_assertion(shared, &cfg, tenant, assertion) {
            Ok(()) => issue(shared, &cfg),
            Err((code, text)) => entra_error(401, "invalid_client", code, &text),
        };
    }
    entra_error(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

fn issue(shared: &Shared, cfg: &GraphFakeConfig) -> Reply {
    let token = format!("eyJ0eXAiOiJKV1QiLCJmYWtlIjp0cnVlfQ.{}", random_string(80));
    shared.state().tokens.insert(
        token.clone(),
        Instant::now() + Duration::from_secs(cfg.token_expires_in),
    );
    Reply::json(
        200,
        json!({"token_type": "Bearer", "expires_in": cfg.token_expires_in, "ext_expires_in": cfg.token_expires_in, "access_token": token}),
    )
}

/// base64url (no padding) of the SHA-256 and SHA-1 thumbprints of the certificate DER.
pub fn cert_thumbprints(cert_pem: &str) -> (String, String) {
    let der = pem_der(cert_pem);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    (
        b64.encode(sha2::Sha256::digest(&der)),
        b64.encode(sha1::Sha1::digest(&der)),
    )
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("certificate PEM is base64")
}

fn verify_assertion(
    shared: &Shared,
    cfg: &GraphFakeConfig,
    tenant: &str,
    assertion: &str,
) -> Result<(), (u32, String)> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
    let Some(cert) = cfg.certificate_pem.as_deref() else {
        return Err((700027, "Client assertion contains an invalid signature. [Reason - The key was not found.] (fake: no certificate configured)".into()));
    };
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| (700025, format!("Client assertion is not a valid JWT: {e}")))?;
    if !matches!(header.alg, Algorithm::PS256 | Algorithm::RS256) {
        return Err((
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - unsupported alg {:?}]",
                header.alg
            ),
        ));
    }
    let (s256, s1) = cert_thumbprints(cert);
    let thumb_ok = header.x5t_s256.as_deref() == Some(s256.as_str())
        || header.x5t.as_deref() == Some(s1.as_str());
    if !thumb_ok {
        return Err((
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: x5t#S256={:?} x5t={:?}, Found key 'Start=…', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                header.x5t_s256, header.x5t, cfg.client_id
            ),
        ));
    }
    let key = DecodingKey::from_rsa_pem(cert.as_bytes())
        .map_err(|e| (700027, format!("fake: certificate key unusable: {e}")))?;
    let mut auds = vec![
        format!("{}/{tenant}/oauth2/v2.0/token", shared.base()),
        format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
    ];
    auds.extend(cfg.extra_audiences.iter().cloned());
    let mut v = Validation::new(header.alg);
    v.set_audience(&auds);
    v.set_issuer(&[cfg.client_id.as_str()]);
    v.sub = Some(cfg.client_id.clone());
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    v.validate_nbf = true;
    v.leeway = 60;
    let data = jsonwebtoken::decode::<Value>(assertion, &key, &v).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => (700027, "Client assertion contains an invalid signature.".to_string()),
        ErrorKind::InvalidAudience => (700023, format!("Client assertion audience claim does not match Realm issuer. Expected one of {auds:?}.")),
        ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => (700021, "Client assertion application identifier doesn't match 'client_id' parameter.".to_string()),
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => (700024, "Client assertion is not within its valid time range.".to_string()),
        ErrorKind::MissingRequiredClaim(c) => (700025, format!("Client assertion lacks the claim '{c}' (fake).")),
        other => (700027, format!("Client assertion failed validation: {other:?}")),
    })?;
    let jti = data.claims["jti"].as_str().unwrap_or_default().to_string();
    if jti.is_empty() {
        return Err((
            700025,
            "Client assertion lacks the claim 'jti' (fake).".into(),
        ));
    }
    if !shared.state().seen_jti.insert(jti.clone()) {
        return Err((
            700025,
            format!(
                "(fake; Entra's own code for this is not known) The client assertion jti '{jti}' was already used."
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Upload sessions (the pre-authenticated URL)
// ---------------------------------------------------------------------------------------

fn upload_put(ctx: &Ctx, shared: &Shared, token: &str) -> Reply {
    if ctx.header("authorization").is_some() {
        record_violation(shared, ctx, "upload session", vec!["PUT to an upload URL carried an Authorization header (graph.md §3: the URL is pre-authenticated; send none)".into()]);
        return graph_error(
            ctx,
            401,
            "InvalidAudienceForResource",
            "The audience claim value is invalid for current resource (fake: upload URLs take no Authorization header).",
        );
    }
    if ctx.method == "DELETE" {
        return if shared.state().uploads.remove(token).is_some() {
            Reply::empty(204)
        } else {
            not_found(ctx)
        };
    }
    if ctx.method != "PUT" {
        return graph_error(ctx, 405, "MethodNotAllowed", "Upload URLs take PUT (fake).");
    }
    let mut st = shared.state();
    let Some(sess) = st.uploads.get_mut(token) else {
        return not_found(ctx);
    };
    let range = ctx.header("content-range").and_then(parse_content_range);
    let Some((start, end, total)) = range else {
        drop(st);
        record_violation(
            shared,
            ctx,
            "upload session",
            vec![format!(
                "bad Content-Range {:?}",
                ctx.header("content-range")
            )],
        );
        return graph_error(
            ctx,
            400,
            "invalidRange",
            "Content-Range missing or malformed.",
        );
    };
    let next = sess.data.len();
    let problem = if total != sess.size {
        Some(format!(
            "Content-Range total {total} != session size {}",
            sess.size
        ))
    } else if start != next {
        Some(format!("Content-Range starts at {start}, expected {next}"))
    } else if end < start || end >= total || end - start + 1 != ctx.body.len() {
        Some(format!(
            "Content-Range {start}-{end} does not match a body of {} bytes",
            ctx.body.len()
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        drop(st);
        record_violation(shared, ctx, "upload session", vec![p.clone()]);
        return graph_error(ctx, 416, "invalidRange", &p);
    }
    sess.data.extend_from_slice(&ctx.body);
    let expires = sess.expires.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    if sess.data.len() < sess.size {
        let next = sess.data.len();
        return Reply::json(
            200,
            json!({"expirationDateTime": expires, "nextExpectedRanges": [format!("{next}-")]}),
        );
    }
    let sess = st.uploads.remove(token).expect("session");
    let att_id = opaque_id("AAMkA");
    let mb = st.mailboxes.get_mut(&sess.mailbox).expect("mailbox");
    let Some(msg) = mb
        .messages
        .iter_mut()
        .find(|m| m.json["id"] == sess.message_id.as_str())
    else {
        return not_found(ctx);
    };
    push_attachment(
        &mut msg.json,
        json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "id": att_id,
            "name": sess.name,
            "contentType": sess.content_type,
            "size": sess.size,
            "isInline": false,
        }),
    );
    mb.attachment_bytes.insert(att_id.clone(), sess.data);
    let location = format!(
        "{}/api/v2.0/Users('{}')/Messages('{}')/Attachments('{}')",
        shared.base(),
        sess.mailbox,
        sess.message_id,
        att_id
    );
    Reply::empty(201).header("Location", location)
}

fn parse_content_range(v: &str) -> Option<(usize, usize, usize)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (s, e) = range.split_once('-')?;
    Some((
        s.trim().parse().ok()?,
        e.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

fn push_attachment(msg: &mut Value, att: Value) {
    match msg.get_mut("attachments").and_then(Value::as_array_mut) {
        Some(a) => a.push(att),
        None => msg["attachments"] = json!([att]),
    }
    msg["hasAttachments"] = json!(true);
}

// ---------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------

/// Parses and validates a JSON body; `Err` is the 4xx reply (already recorded).
fn json_body(
    ctx: &Ctx,
    shared: &Shared,
    schema: &str,
    kind: &str,
    creating: bool,
) -> Result<Value, Reply> {
    if ctx.body.is_empty() {
        record_violation(shared, ctx, schema, vec!["empty request body".into()]);
        return Err(graph_error(
            ctx,
            400,
            "BadRequest",
            "Empty Payload. JSON content expected.",
        ));
    }
    if !ctx
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        record_violation(
            shared,
            ctx,
            schema,
            vec![format!(
                "Content-Type {:?} is not application/json",
                ctx.header("content-type")
            )],
        );
        return Err(graph_error(
            ctx,
            415,
            "UnsupportedMediaType",
            "Content-Type must be application/json.",
        ));
    }
    let body: Value = match serde_json::from_slice(&ctx.body) {
        Ok(v) => v,
        Err(e) => {
            record_violation(shared, ctx, schema, vec![format!("not JSON: {e}")]);
            return Err(graph_error(
                ctx,
                400,
                "BadRequest",
                "Unable to read JSON request payload.",
            ));
        }
    };
    let (checked, mut errs) = if let Some(action) = schema.strip_prefix("action:") {
        normalise_action(action, &body)
    } else {
        (body.clone(), vec![])
    };
    errs.extend(schema_errors(schema, &checked));
    errs.extend(rule_errors(kind, &body, creating));
    if errs.is_empty() {
        Ok(body)
    } else {
        record_violation(shared, ctx, schema, errs.clone());
        Err(graph_error(
            ctx,
            400,
            "BadRequest",
            &format!(
                "Invalid request body (fake schema check): {}",
                errs.join("; ")
            ),
        ))
    }
}

/// Case-insensitive lookup of a top-level key.
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Reads a quoted OData literal after `marker` (`''` is an escaped quote).
fn quoted_after(s: &str, marker: &str) -> Option<String> {
    let i = s.find(marker)? + marker.len();
    let rest = &s[i..];
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                out.push('\'');
                chars.next();
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

enum Filter {
    All,
    ExtProp {
        id: String,
        value: String,
    },
    DisplayName(String),
    /// `clause and clause …` of the simple forms the action searches use.
    Clauses(Vec<Clause>),
}

/// One simple `$filter` clause: `path eq 'text'|true|false`, `path ge|lt 'text'`
/// (string comparison, as Graph compares `start/dateTime`), `contains(path,'text')`
/// (case-insensitive).
enum Clause {
    Eq(String, Value),
    Ge(String, String),
    Lt(String, String),
    Contains(String, String),
}

fn at_path<'a>(item: &'a Value, path: &str) -> &'a Value {
    path.split('/').fold(item, |v, k| {
        v.as_object()
            .and_then(|o| {
                o.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v)
            })
            .unwrap_or(&Value::Null)
    })
}

fn parse_clauses(f: &str) -> Option<Vec<Clause>> {
    let mut out = Vec::new();
    for part in f.split(" and ") {
        let part = part.trim();
        if let Some(inner) = part
            .strip_prefix("contains(")
            .and_then(|r| r.strip_suffix(')'))
        {
            let (path, lit) = inner.split_once(',')?;
            let text = quoted_after(lit.trim(), "'")?;
            out.push(Clause::Contains(path.trim().to_string(), text));
            continue;
        }
        let mut words = part.splitn(3, ' ');
        let (path, op, lit) = (words.next()?, words.next()?, words.next()?.trim());
        let value = match lit {
            "true" => json!(true),
            "false" => json!(false),
            _ => json!(quoted_after(lit, "'")?),
        };
        out.push(match (op, value) {
            ("eq", v) => Clause::Eq(path.to_string(), v),
            ("ge", Value::String(v)) => Clause::Ge(path.to_string(), v),
            ("lt", Value::String(v)) => Clause::Lt(path.to_string(), v),
            _ => return None,
        });
    }
    Some(out)
}

fn parse_filter(ctx: &Ctx, shared: &Shared) -> Result<Filter, Reply> {
    let Some(f) = ctx.q("$filter") else {
        return Ok(Filter::All);
    };
    let lower = f.to_lowercase();
    if lower.starts_with("singlevalueextendedproperties/any(") {
        let id = quoted_after(f, "/id eq '");
        let value = quoted_after(f, "/value eq '");
        if let (Some(id), Some(value)) = (id, value) {
            return Ok(Filter::ExtProp { id, value });
        }
    }
    if lower.starts_with("displayname eq '")
        && let Some(n) = quoted_after(f, "eq '")
    {
        return Ok(Filter::DisplayName(n));
    }
    if let Some(clauses) = parse_clauses(f) {
        return Ok(Filter::Clauses(clauses));
    }
    record_violation(
        shared,
        ctx,
        "$filter",
        vec![format!("$filter not supported by the fake: {f}")],
    );
    Err(graph_error(
        ctx,
        400,
        "BadRequest",
        "Invalid filter clause (fake supports singleValueExtendedProperties/Any and displayName eq).",
    ))
}

fn matches(filter: &Filter, item: &Value) -> bool {
    match filter {
        Filter::All => true,
        Filter::ExtProp { id, value } => item["singleValueExtendedProperties"]
            .as_array()
            .is_some_and(|ps| {
                ps.iter().any(|p| {
                    p["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id))
                        && p["value"] == value.as_str()
                })
            }),
        Filter::DisplayName(n) => item["displayName"]
            .as_str()
            .is_some_and(|d| d.eq_ignore_ascii_case(n)),
        Filter::Clauses(cs) => cs.iter().all(|c| match c {
            Clause::Eq(p, v) => match (at_path(item, p), v) {
                (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
                (a, b) => a == b,
            },
            Clause::Ge(p, v) => at_path(item, p).as_str().is_some_and(|a| a >= v.as_str()),
            Clause::Lt(p, v) => at_path(item, p).as_str().is_some_and(|a| a < v.as_str()),
            Clause::Contains(p, v) => at_path(item, p)
                .as_str()
                .is_some_and(|a| a.to_lowercase().contains(&v.to_lowercase())),
        }),
    }
}

/// Shapes an item for output: navigation properties only when `$expand`ed.
fn present(ctx: &Ctx, item: &Value) -> Value {
    let mut out = item.clone();
    let expand = ctx.q("$expand").unwrap_or("").to_string();
    if let Some(obj) = out.as_object_mut() {
        obj.retain(|k, _| !k.starts_with("x-fake-"));
        if !expand
            .to_lowercase()
            .contains("singlevalueextendedproperties")
        {
            obj.remove("singleValueExtendedProperties");
        } else if let Some(id) = quoted_after(&expand, "id eq '")
            && let Some(Value::Array(ps)) = obj.get_mut("singleValueExtendedProperties")
        {
            ps.retain(|p| {
                p["id"]
                    .as_str()
                    .is_some_and(|i| i.eq_ignore_ascii_case(&id))
            });
        }
        if !expand.to_lowercase().contains("linkedresources") {
            obj.remove("linkedResources");
        }
        if !expand.to_lowercase().contains("attachments") {
            obj.remove("attachments");
        }
    }
    out
}

fn list_reply(ctx: &Ctx, items: Vec<Value>) -> Reply {
    let mut values: Vec<Value> = items.iter().map(|i| present(ctx, i)).collect();
    if let Some(order) = ctx.q("$orderby") {
        let mut words = order.split_whitespace();
        let path = words.next().unwrap_or_default().to_string();
        let desc = words.next().is_some_and(|w| w.eq_ignore_ascii_case("desc"));
        values.sort_by(|a, b| {
            let (a, b) = (at_path(a, &path).to_string(), at_path(b, &path).to_string());
            if desc { b.cmp(&a) } else { a.cmp(&b) }
        });
    }
    if let Some(top) = ctx.q("$top").and_then(|t| t.parse::<usize>().ok()) {
        values.truncate(top);
    }
    Reply::json(200, json!({ "value": values }))
}

fn merge(target: &mut Value, patch: &Value) {
    let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
        return;
    };
    for (k, v) in p {
        if k == "id" {
            continue;
        }
        if k == "singleValueExtendedProperties"
            && let (Some(existing), Some(new)) =
                (t.get(k).and_then(Value::as_array).cloned(), v.as_array())
        {
            let mut merged = existing;
            for np in new {
                match merged.iter_mut().find(|e| e["id"] == np["id"]) {
                    Some(e) => *e = np.clone(),
                    None => merged.push(np.clone()),
                }
            }
            t.insert(k.clone(), Value::Array(merged));
            continue;
        }
        t.insert(k.clone(), v.clone());
    }
    t.insert("lastModifiedDateTime".into(), json!(now_iso()));
}

fn resource(ctx: &Ctx, shared: &Shared, mailbox: &str, rest: &[&str]) -> Reply {
    let m = ctx.method.as_str();
    match (m, rest) {
        // --- mail folders
        ("GET", ["mailFolders"]) => {
            let filter = match parse_filter(ctx, shared) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let st = shared.state();
            let mb = &st.mailboxes[mailbox];
            let items = mb
                .folders
                .iter()
                .filter(|f| matches(&filter, f))
                .cloned()
                .collect();
            list_reply(ctx, items)
        }
        ("POST", ["mailFolders"]) => {
            let body = match json_body(
                ctx,
                shared,
                "microsoft.graph.mailFolder",
                "mailFolder",
                true,
            ) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(name) = body["displayName"].as_str() else {
                record_violation(
                    shared,
                    ctx,
                    "mailFolder",
                    vec!["/displayName: required".into()],
                );
                return graph_error(ctx, 400, "ErrorInvalidRequest", "displayName is required.");
            };
            let mut st = shared.state();
            let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
            if mb.folders.iter().any(|f| {
                f["displayName"]
                    .as_str()
                    .is_some_and(|d| d.eq_ignore_ascii_case(name))
            }) {
                return graph_error(
                    ctx,
                    409,
                    "ErrorFolderExists",
                    "A folder with the specified name already exists.",
                );
            }
            let folder = json!({
                "id": opaque_id("AAMkF"),
                "displayName": name,
                "parentFolderId": "msgfolderroot",
                "childFolderCount": 0, "unreadItemCount": 0, "totalItemCount": 0,
                "isHidden": body["isHidden"].as_bool().unwrap_or(false),
            });
            mb.folders.push(folder.clone());
            Reply::json(201, folder)
        }
        ("GET", ["mailFolders", fid]) => {
            let st = shared.state();
            let mb = &st.mailboxes[mailbox];
            match mb
                .folder_id(fid, false)
                .and_then(|id| mb.folders.iter().find(|f| f["id"] == id.as_str()))
            {
                Some(f) => Reply::json(200, present(ctx, f)),
                None => not_found(ctx),
            }
        }
        // --- messages
        ("GET", ["messages"]) => list_messages(ctx, shared, mailbox, None),
        ("GET", ["mailFolders", fid, "messages"]) => list_messages(ctx, shared, mailbox, Some(fid)),
        ("POST", ["messages"]) => create_message(ctx, shared, mailbox, "drafts"),
        ("POST", ["mailFolders", fid, "messages"]) => create_message(ctx, shared, mailbox, fid),
        ("GET", ["mailFolders", fid, "messages", d]) if *d == "delta" || *d == "delta()" => {
            message_delta(ctx, shared, mailbox, fid)
        }
        (_, ["messages", id]) | (_, ["mailFolders", _, "messages", id]) => {
            message_item(ctx, shared, mailbox, id)
        }
        ("POST", ["messages", id, "move"]) => move_message(ctx, shared, mailbox, id),
        ("POST", ["messages", id, "send"]) => {
            let mut st = shared.state();
            let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
            let sent = mb.folder_id("sentitems", false).expect("sentitems");
            let Some(msg) = mb.messages.iter_mut().find(|s| s.json["id"] == *id) else {
                return not_found(ctx);
            };
            msg.folder_id = sent.clone();
            msg.json["parentFolderId"] = json!(sent);
            msg.json["isDraft"] = json!(false);
            let copy = msg.json.clone();
            mb.sent
                .push(json!({"message": copy, "saveToSentItems": true}));
            Reply::empty(202)
        }
        ("POST", ["sendMail"]) => {
            let body = match json_body(ctx, shared, "action:sendMail", "sendMail", true) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(message) = get_ci(&body, "message").cloned() else {
                record_violation(
                    shared,
                    ctx,
                    "action:sendMail",
                    vec!["/message: required".into()],
                );
                return graph_error(ctx, 400, "ErrorInvalidRequest", "message is required.");
            };
            let save = get_ci(&body, "saveToSentItems")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let mut st = shared.state();
            let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
            if save {
                let sent = mb.folder_id("sentitems", false).expect("sentitems");
                let mut json = message.clone();
                json["id"] = json!(opaque_id("AAMkS"));
                json["isDraft"] = json!(false);
                json["parentFolderId"] = json!(sent);
                json["sentDateTime"] = json!(now_iso());
                mb.messages.push(StoredMessage {
                    folder_id: sent,
                    json,
                });
            }
            mb.sent
                .push(json!({"message": message, "saveToSentItems": save}));
            Reply::empty(202)
        }
        // --- attachments
        ("POST", ["messages", id, "attachments"]) => add_attachment(ctx, shared, mailbox, id),
        ("GET", ["messages", id, "attachments"]) => {
            let st = shared.state();
            match st.mailboxes[mailbox]
                .messages
                .iter()
                .find(|s| s.json["id"] == *id)
            {
                Some(s) => {
                    let atts = s.json["attachments"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    Reply::json(200, json!({"value": atts}))
                }
                None => not_found(ctx),
            }
        }
        ("POST", ["messages", id, "attachments", "createUploadSession"]) => {
            create_upload_session(ctx, shared, mailbox, id)
        }
        // --- calendars (one default calendar per mailbox)
        ("GET", ["calendars"]) => list_reply(
            ctx,
            vec![json!({
                "id": format!("AAMkCal-{}", mailbox.replace(['@', '.'], "-")),
                "name": "Calendar",
                "isDefaultCalendar": true,
                "canEdit": true,
                "owner": { "address": mailbox, "name": mailbox },
            })],
        ),
        // --- events
        ("GET", ["calendarView", d]) if *d == "delta" || *d == "delta()" => {
            event_delta(ctx, shared, mailbox)
        }
        ("GET", ["events"]) => collection_list(ctx, shared, mailbox, Coll::Events),
        ("POST", ["events"]) => {
            let body = match json_body(ctx, shared, "microsoft.graph.event", "event", true) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut st = shared.state();
            let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
            if let Some(tx) = body["transactionId"].as_str()
                && let Some(existing) = mb.events.iter().find(|e| e["transactionId"] == tx)
            {
                // The fake's assumption (graph.md §5: unverified): the existing event.
                return Reply::json(201, present(ctx, existing));
            }
            let ev = stamp(body, "AAMkE");
            mb.log_change(ev["id"].as_str().unwrap_or_default(), CALENDAR, false);
            mb.events.push(ev.clone());
            Reply::json(201, present(ctx, &ev))
        }
        (_, ["events", id]) => collection_item(ctx, shared, mailbox, Coll::Events, id),
        // --- contacts
        ("GET", ["contacts"]) => collection_list(ctx, shared, mailbox, Coll::Contacts),
        ("POST", ["contacts"]) => {
            let body = match json_body(ctx, shared, "microsoft.graph.contact", "contact", true) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let c = stamp(body, "AAMkC");
            shared
                .state()
                .mailboxes
                .get_mut(mailbox)
                .expect("mailbox")
                .contacts
                .push(c.clone());
            Reply::json(201, present(ctx, &c))
        }
        (_, ["contacts", id]) => collection_item(ctx, shared, mailbox, Coll::Contacts, id),
        // --- To Do
        ("GET", ["todo", "lists"]) => collection_list(ctx, shared, mailbox, Coll::Lists),
        ("POST", ["todo", "lists"]) => {
            let body = match json_body(
                ctx,
                shared,
                "microsoft.graph.todoTaskList",
                "todoTaskList",
                true,
            ) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut list = stamp(body, "AAMkL");
            list["isOwner"] = json!(true);
            list["isShared"] = json!(false);
            list["wellknownListName"] = json!("none");
            let id = list["id"].as_str().unwrap_or_default().to_string();
            let mut st = shared.state();
            let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
            mb.lists.push(list.clone());
            mb.tasks.insert(id, vec![]);
            Reply::json(201, list)
        }
        (_, ["todo", "lists", id]) => collection_item(ctx, shared, mailbox, Coll::Lists, id),
        ("GET", ["todo", "lists", lid, "tasks"]) => {
            collection_list(ctx, shared, mailbox, Coll::Tasks(lid.to_string()))
        }
        ("POST", ["todo", "lists", lid, "tasks"]) => {
            let body = match json_body(ctx, shared, "microsoft.graph.todoTask", "todoTask", true) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut task = stamp(body, "AAMkT");
            if task.get("status").is_none() {
                task["status"] = json!("notStarted");
            }
            if task.get("importance").is_none() {
                task["importance"] = json!("normal");
            }
            if let Some(lrs) = task
                .get_mut("linkedResources")
                .and_then(Value::as_array_mut)
            {
                for lr in lrs {
                    lr["id"] = json!(uuid::Uuid::new_v4().to_string());
                }
            }
            let mut st = shared.state();
            let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
            let Some(tasks) = mb.tasks.get_mut(*lid) else {
                return not_found(ctx);
            };
            tasks.push(task.clone());
            mb.log_change(
                task["id"].as_str().unwrap_or_default(),
                &todo_changes(lid),
                false,
            );
            Reply::json(201, task)
        }
        ("GET", ["todo", "lists", lid, "tasks", d]) if *d == "delta" || *d == "delta()" => {
            task_delta(ctx, shared, mailbox, lid)
        }
        (_, ["todo", "lists", lid, "tasks", tid]) => {
            collection_item(ctx, shared, mailbox, Coll::Tasks(lid.to_string()), tid)
        }
        ("POST", ["todo", "lists", lid, "tasks", tid, "linkedResources"]) => {
            let body = match json_body(
                ctx,
                shared,
                "microsoft.graph.linkedResource",
                "linkedResource",
                true,
            ) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut lr = body;
            lr["id"] = json!(uuid::Uuid::new_v4().to_string());
            let mut st = shared.state();
            let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
            let Some(task) = mb
                .tasks
                .get_mut(*lid)
                .and_then(|ts| ts.iter_mut().find(|t| t["id"] == *tid))
            else {
                return not_found(ctx);
            };
            match task["linkedResources"].as_array_mut() {
                Some(a) => a.push(lr.clone()),
                None => task["linkedResources"] = json!([lr.clone()]),
            }
            Reply::json(201, lr)
        }
        ("GET", ["todo", "lists", lid, "tasks", tid, "linkedResources"]) => {
            let st = shared.state();
            match st.mailboxes[mailbox]
                .tasks
                .get(*lid)
                .and_then(|ts| ts.iter().find(|t| t["id"] == *tid))
            {
                Some(t) => Reply::json(
                    200,
                    json!({"value": t["linkedResources"].as_array().cloned().unwrap_or_default()}),
                ),
                None => not_found(ctx),
            }
        }
        _ => graph_error(
            ctx,
            400,
            "BadRequest",
            &format!("Unsupported operation {m} {} (fake).", ctx.path),
        ),
    }
}

/// Adds server fields to a created item.
fn stamp(mut body: Value, prefix: &str) -> Value {
    let now = now_iso();
    body["id"] = json!(opaque_id(prefix));
    body["createdDateTime"] = json!(now);
    body["lastModifiedDateTime"] = json!(now);
    body["changeKey"] = json!(random_string(16));
    body
}

fn list_messages(ctx: &Ctx, shared: &Shared, mailbox: &str, folder: Option<&str>) -> Reply {
    let filter = match parse_filter(ctx, shared) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    let fid = match folder {
        Some(f) => match mb.folder_id(f, false) {
            Some(id) => Some(id),
            None => return not_found(ctx),
        },
        None => None,
    };
    let items = mb
        .messages
        .iter()
        .filter(|s| fid.as_ref().is_none_or(|f| *f == s.folder_id))
        .filter(|s| matches(&filter, &s.json))
        .map(|s| s.json.clone())
        .collect();
    list_reply(ctx, items)
}

fn create_message(ctx: &Ctx, shared: &Shared, mailbox: &str, folder: &str) -> Reply {
    let body = match json_body(ctx, shared, "microsoft.graph.message", "message", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(fid) = mb.folder_id(folder, false) else {
        return not_found(ctx);
    };
    // PR_MESSAGE_FLAGS (Integer 0x0E07) with MSGFLAG_READ|… set at creation: not a draft.
    let non_draft = body["singleValueExtendedProperties"]
        .as_array()
        .is_some_and(|ps| {
            ps.iter().any(|p| {
                p["id"]
                    .as_str()
                    .is_some_and(|i| i.eq_ignore_ascii_case("Integer 0x0E07"))
                    && p["value"]
                        .as_str()
                        .and_then(|v| v.parse::<i64>().ok())
                        .is_some_and(|v| v & 1 == 1)
            })
        });
    let mut msg = stamp(body, "AAMkM");
    msg["parentFolderId"] = json!(fid);
    msg["isDraft"] = json!(!non_draft);
    if msg.get("isRead").is_none() {
        msg["isRead"] = json!(!non_draft);
    }
    msg["receivedDateTime"] = msg
        .get("receivedDateTime")
        .cloned()
        .unwrap_or(json!(now_iso()));
    msg["internetMessageId"] = msg
        .get("internetMessageId")
        .cloned()
        .unwrap_or(json!(format!("<{}@fake.graph>", random_string(20))));
    let mut inline_bytes = vec![];
    if let Some(atts) = msg.get_mut("attachments").and_then(Value::as_array_mut) {
        for a in atts {
            let id = opaque_id("AAMkA");
            a["id"] = json!(id);
            if let Some(b) = a["contentBytes"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            {
                a["size"] = json!(b.len());
                inline_bytes.push((id, b));
            }
            if let Some(o) = a.as_object_mut() {
                o.remove("contentBytes");
            }
        }
        msg["hasAttachments"] = json!(true);
    }
    mb.attachment_bytes.extend(inline_bytes);
    msg["webLink"] = json!(web_link(msg["id"].as_str().unwrap_or_default()));
    let id = msg["id"].as_str().unwrap_or_default().to_string();
    mb.log_change(&id, &fid, false);
    mb.messages.push(StoredMessage {
        folder_id: fid,
        json: msg.clone(),
    });
    Reply::json(201, present(ctx, &msg))
}

fn message_item(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let patch = if ctx.method == "PATCH" {
        match json_body(ctx, shared, "microsoft.graph.message", "message", false) {
            Ok(b) => Some(b),
            Err(r) => return r,
        }
    } else {
        None
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(pos) = mb.messages.iter().position(|s| s.json["id"] == id) else {
        return not_found(ctx);
    };
    match ctx.method.as_str() {
        "GET" => Reply::json(200, present(ctx, &mb.messages[pos].json)),
        "PATCH" => {
            merge(&mut mb.messages[pos].json, &patch.unwrap_or_default());
            let fid = mb.messages[pos].folder_id.clone();
            mb.log_change(id, &fid, false);
            Reply::json(200, present(ctx, &mb.messages[pos].json))
        }
        "DELETE" => {
            let removed = mb.messages.remove(pos);
            mb.log_change(id, &removed.folder_id, true);
            Reply::empty(204)
        }
        _ => graph_error(ctx, 405, "MethodNotAllowed", "Method not allowed (fake)."),
    }
}

fn move_message(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let body = match json_body(ctx, shared, "action:move", "move", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(dest) = get_ci(&body, "destinationId").and_then(Value::as_str) else {
        record_violation(
            shared,
            ctx,
            "action:move",
            vec!["/destinationId: required string".into()],
        );
        return graph_error(
            ctx,
            400,
            "ErrorInvalidRequest",
            "destinationId is required.",
        );
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(dest_id) = mb.folder_id(dest, false) else {
        return not_found(ctx);
    };
    let Some(pos) = mb.messages.iter().position(|s| s.json["id"] == id) else {
        return not_found(ctx);
    };
    let old_folder = mb.messages[pos].folder_id.clone();
    let msg = &mut mb.messages[pos];
    msg.folder_id = dest_id.clone();
    msg.json["parentFolderId"] = json!(dest_id);
    if !ctx.immutable_ids() {
        msg.json["id"] = json!(opaque_id("AAMkM"));
    }
    let new_id = msg.json["id"].as_str().unwrap_or_default().to_string();
    let out = present(ctx, &msg.json);
    mb.log_change(id, &old_folder, true);
    mb.log_change(&new_id, &dest_id, false);
    Reply::json(201, out)
}

fn add_attachment(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let odata = serde_json::from_slice::<Value>(&ctx.body)
        .ok()
        .and_then(|b| b["@odata.type"].as_str().map(str::to_string));
    let schema = match odata.as_deref() {
        Some("#microsoft.graph.fileAttachment") => "microsoft.graph.fileAttachment",
        Some("#microsoft.graph.itemAttachment") => "microsoft.graph.itemAttachment",
        Some("#microsoft.graph.referenceAttachment") => "microsoft.graph.referenceAttachment",
        other => {
            record_violation(
                shared,
                ctx,
                "microsoft.graph.attachment",
                vec![format!(
                    "/@odata.type: Graph requires a concrete attachment type, got {other:?}"
                )],
            );
            return graph_error(
                ctx,
                400,
                "ErrorInvalidRequest",
                "The @odata.type of an attachment is required.",
            );
        }
    };
    let body = match json_body(ctx, shared, schema, "attachment", true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let bytes = body["contentBytes"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    if schema == "microsoft.graph.fileAttachment" && bytes.is_none() {
        record_violation(
            shared,
            ctx,
            schema,
            vec!["/contentBytes: required base64".into()],
        );
        return graph_error(ctx, 400, "ErrorInvalidRequest", "contentBytes is required.");
    }
    if bytes.as_ref().is_some_and(|b| b.len() > 3 * 1024 * 1024) {
        record_violation(
            shared,
            ctx,
            schema,
            vec!["inline attachment above 3 MB (graph.md §3: use an upload session)".into()],
        );
        return graph_error(
            ctx,
            413,
            "ErrorRequestEntityTooLarge",
            "The request exceeds the 3 MB limit for inline attachments.",
        );
    }
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(msg) = mb.messages.iter_mut().find(|s| s.json["id"] == id) else {
        return not_found(ctx);
    };
    let att_id = opaque_id("AAMkA");
    let mut att = body.clone();
    att["id"] = json!(att_id);
    if let Some(b) = &bytes {
        att["size"] = json!(b.len());
    }
    let mut meta = att.clone();
    if let Some(o) = meta.as_object_mut() {
        o.remove("contentBytes");
    }
    push_attachment(&mut msg.json, meta);
    if let Some(b) = bytes {
        mb.attachment_bytes.insert(att_id, b);
    }
    Reply::json(201, att)
}

fn create_upload_session(ctx: &Ctx, shared: &Shared, mailbox: &str, id: &str) -> Reply {
    let body = match json_body(
        ctx,
        shared,
        "action:createUploadSession",
        "createUploadSession",
        true,
    ) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let item = get_ci(&body, "AttachmentItem")
        .cloned()
        .unwrap_or(Value::Null);
    let mut errs = vec![];
    if item["attachmentType"] != "file" {
        errs.push("/AttachmentItem/attachmentType: must be \"file\"".to_string());
    }
    let name = item["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        errs.push("/AttachmentItem/name: required".into());
    }
    let size = item["size"].as_u64().unwrap_or(0) as usize;
    if size == 0 {
        errs.push("/AttachmentItem/size: required positive number".into());
    } else if size > 150 * 1024 * 1024 {
        errs.push("/AttachmentItem/size: above 150 MB".into());
    }
    if !errs.is_empty() {
        record_violation(shared, ctx, "action:createUploadSession", errs.clone());
        return graph_error(ctx, 400, "ErrorInvalidRequest", &errs.join("; "));
    }
    let mut st = shared.state();
    if !st.mailboxes[mailbox]
        .messages
        .iter()
        .any(|s| s.json["id"] == id)
    {
        return not_found(ctx);
    }
    let token = random_string(48);
    let expires = chrono::Utc::now() + chrono::Duration::minutes(15);
    st.uploads.insert(
        token.clone(),
        UploadSession {
            mailbox: mailbox.into(),
            message_id: id.into(),
            name,
            content_type: item["contentType"]
                .as_str()
                .unwrap_or("application/octet-stream")
                .into(),
            size,
            data: Vec::with_capacity(size),
            expires,
        },
    );
    Reply::json(
        201,
        json!({
            "@odata.context": format!("{}/v1.0/$metadata#microsoft.graph.uploadSession", shared.base()),
            "uploadUrl": format!("{}/upload/{token}", shared.base()),
            "expirationDateTime": expires.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "nextExpectedRanges": ["0-"],
        }),
    )
}

#[derive(Clone)]
enum Coll {
    Events,
    Contacts,
    Lists,
    Tasks(String),
}

impl Coll {
    fn schema(&self) -> (&'static str, &'static str) {
        match self {
            Coll::Events => ("microsoft.graph.event", "event"),
            Coll::Contacts => ("microsoft.graph.contact", "contact"),
            Coll::Lists => ("microsoft.graph.todoTaskList", "todoTaskList"),
            Coll::Tasks(_) => ("microsoft.graph.todoTask", "todoTask"),
        }
    }
    /// The change-log "folder" delta reads for this collection, when it has delta.
    fn change_log(&self) -> Option<String> {
        match self {
            Coll::Events => Some(CALENDAR.to_string()),
            Coll::Tasks(l) => Some(todo_changes(l)),
            Coll::Contacts | Coll::Lists => None,
        }
    }
    fn items<'a>(&self, mb: &'a mut Mailbox) -> Option<&'a mut Vec<Value>> {
        match self {
            Coll::Events => Some(&mut mb.events),
            Coll::Contacts => Some(&mut mb.contacts),
            Coll::Lists => Some(&mut mb.lists),
            Coll::Tasks(l) => mb.tasks.get_mut(l),
        }
    }
}

fn collection_list(ctx: &Ctx, shared: &Shared, mailbox: &str, coll: Coll) -> Reply {
    let filter = match parse_filter(ctx, shared) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    match coll.items(mb) {
        Some(items) => {
            let v = items
                .iter()
                .filter(|i| matches(&filter, i))
                .cloned()
                .collect();
            list_reply(ctx, v)
        }
        None => not_found(ctx),
    }
}

fn collection_item(ctx: &Ctx, shared: &Shared, mailbox: &str, coll: Coll, id: &str) -> Reply {
    let (schema, kind) = coll.schema();
    let patch = if ctx.method == "PATCH" {
        match json_body(ctx, shared, schema, kind, false) {
            Ok(b) => Some(b),
            Err(r) => return r,
        }
    } else {
        None
    };
    let mut st = shared.state();
    let mb = st.mailboxes.get_mut(mailbox).expect("mailbox");
    let Some(items) = coll.items(mb) else {
        return not_found(ctx);
    };
    let Some(pos) = items.iter().position(|i| i["id"] == id) else {
        return not_found(ctx);
    };
    match ctx.method.as_str() {
        "GET" => Reply::json(200, present(ctx, &items[pos])),
        "PATCH" => {
            let patch = patch.unwrap_or_default();
            if matches!(coll, Coll::Events)
                && patch
                    .get("transactionId")
                    .is_some_and(|t| *t != items[pos]["transactionId"])
            {
                drop(st);
                record_violation(
                    shared,
                    ctx,
                    schema,
                    vec!["/transactionId: immutable after create (graph.md §3)".into()],
                );
                return graph_error(
                    ctx,
                    400,
                    "ErrorInvalidRequest",
                    "transactionId cannot be changed.",
                );
            }
            merge(&mut items[pos], &patch);
            items[pos]["changeKey"] = json!(random_string(16));
            items[pos]["lastModifiedDateTime"] = json!(now_iso_millis());
            let out = present(ctx, &items[pos]);
            if let Some(log) = coll.change_log() {
                mb.log_change(id, &log, false);
            }
            Reply::json(200, out)
        }
        "DELETE" => {
            let removed = items.remove(pos);
            if let Some(log) = coll.change_log() {
                mb.log_change(id, &log, true);
            }
            if let Coll::Lists = coll
                && let Some(lid) = removed["id"].as_str()
            {
                mb.tasks.remove(lid);
            }
            Reply::empty(204)
        }
        _ => graph_error(ctx, 405, "MethodNotAllowed", "Method not allowed (fake)."),
    }
}

// ---------------------------------------------------------------------------------------
// Certificate credentials for tests
// ---------------------------------------------------------------------------------------

/// A throwaway RSA key pair and self-signed certificate, made at run time (no file is
/// committed): `rsa` generates the 2048-bit key, `rcgen` signs the certificate.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// PKCS#8 `-----BEGIN PRIVATE KEY-----`.
    pub key_pem: String,
    /// `-----BEGIN CERTIFICATE-----`.
    pub cert_pem: String,
    /// base64url SHA-256 of the certificate DER (`x5t#S256`).
    pub x5t_s256: String,
    /// base64url SHA-1 of the certificate DER (`x5t`).
    pub x5t: String,
}

impl TestCert {
    /// Generates a fresh key pair and certificate.
    pub fn generate() -> TestCert {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
        let key_pem = key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .expect("PKCS#8 PEM")
            .to_string();
        let key_pair =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)
                .expect("rcgen key pair");
        let params = rcgen::CertificateParams::new(vec!["dingbridge-test.invalid".to_string()])
            .expect("certificate params");
        let cert = params
            .self_signed(&key_pair)
            .expect("self-signed certificate");
        let cert_pem = cert.pem();
        let (x5t_s256, x5t) = cert_thumbprints(&cert_pem);
        TestCert {
            key_pem,
            cert_pem,
            x5t_s256,
            x5t,
        }
    }

    /// Writes the key and certificate to `dir` as `key.pem` and `cert.pem`.
    pub fn write_to(&self, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let k = dir.join("key.pem");
        let c = dir.join("cert.pem");
        std::fs::write(&k, &self.key_pem).expect("write key");
        std::fs::write(&c, &self.cert_pem).expect("write cert");
        (k, c)
    }

    /// A client assertion as graph.md §1 describes: PS256 + `x5t#S256` when `pss`,
    /// else RS256 + `x5t`; `claims` overrides/extends the standard claims.
    pub fn assertion(&self, pss: bool, aud: &str, client_id: &str, claims: Value) -> String {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let now = chrono::Utc::now().timestamp();
        let mut c = json!({
            "aud": aud, "iss": client_id, "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now, "iat": now, "exp": now + 300,
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), claims.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        let mut header = Header::new(if pss {
            Algorithm::PS256
        } else {
            Algorithm::RS256
        });
        if pss {
            header.x5t_s256 = Some(self.x5t_s256.clone());
        } else {
            header.x5t = Some(self.x5t.clone());
        }
        let key = EncodingKey::from_rsa_pem(self.key_pem.as_bytes()).expect("encoding key");
        jsonwebtoken::encode(&header, &c, &key).expect("sign assertion")
    }
}

// ---------------------------------------------------------------------------------------
// Subscriptions, notifications, lifecycle events, delta
// ---------------------------------------------------------------------------------------

/// Outlook's longest subscription lifetime (graph.md §2.6).
pub const MAX_SUBSCRIPTION_MINUTES: i64 = 4230;

fn web_link(id: &str) -> String {
    format!(
        "https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem",
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    )
}

/// `(mailbox, collection, folder)` of a subscription resource such as
/// `users/{m}/mailFolders('inbox')/messages`, `users/{m}/messages`, `users/{m}/events`.
fn parse_resource(resource: &str) -> Option<(String, String, Option<String>)> {
    let path = resource.split('?').next()?.trim_matches('/');
    let segs: Vec<&str> = path.split('/').collect();
    if !segs.first()?.eq_ignore_ascii_case("users") {
        return None;
    }
    let mailbox = segs.get(1)?.to_lowercase();
    match &segs[2..] {
        [c] if ["messages", "events", "contacts"].contains(&c.to_lowercase().as_str()) => {
            Some((mailbox, c.to_lowercase(), None))
        }
        [f, c] if c.eq_ignore_ascii_case("messages") => {
            let lower = f.to_lowercase();
            let folder = lower
                .strip_prefix("mailfolders('")
                .and_then(|_| f.get(13..f.len() - 2))?;
            Some((mailbox, "messages".into(), Some(folder.to_string())))
        }
        [mf, f, c]
            if mf.eq_ignore_ascii_case("mailFolders") && c.eq_ignore_ascii_case("messages") =>
        {
            Some((mailbox, "messages".into(), Some(f.to_string())))
        }
        _ => None,
    }
}

/// What Graph requires of a rich (`includeResourceData`) Outlook subscription (graph.md
/// §2.1, §2.6, §2.7): a base64 X.509 certificate and its id, `$select` in the resource,
/// no `$expand` but extended properties, and at most one day of lifetime.
fn rich_problems(body: &Value, resource: &str) -> Vec<String> {
    use base64::Engine;
    let mut problems = vec![];
    let der = body["encryptionCertificate"]
        .as_str()
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
    if der.is_none_or(|d| d.first() != Some(&0x30)) {
        problems
            .push("/encryptionCertificate: required, base64 X.509 DER, with resource data".into());
    }
    let id = body["encryptionCertificateId"].as_str().unwrap_or_default();
    if id.is_empty() || id.chars().count() > 128 {
        problems.push("/encryptionCertificateId: required, at most 128 characters".into());
    }
    let query = resource.split_once('?').map(|(_, q)| q).unwrap_or("");
    if !query.contains("$select=") {
        problems.push("/resource: Outlook rich subscriptions require $select".into());
    }
    if let Some((_, expand)) = query.split_once("$expand=")
        && !expand
            .to_lowercase()
            .starts_with("singlevalueextendedproperties")
        && !expand
            .to_lowercase()
            .starts_with("multivalueextendedproperties")
    {
        problems.push("/resource: only extended properties may be expanded".into());
    }
    let expires = body["expirationDateTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    if expires.is_some_and(|t| {
        t.with_timezone(&chrono::Utc) > chrono::Utc::now() + chrono::Duration::minutes(1440)
    }) {
        problems.push("/expirationDateTime: rich Outlook subscriptions live at most 1 day".into());
    }
    problems
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let enc: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!(
        "{url}{}{key}={}",
        if url.contains('?') { '&' } else { '?' },
        enc.replace('+', "%20")
    )
}

/// Graph's validation handshake: POST `?validationToken=…`; the answer must be 200,
/// `text/plain`, and the decoded token, within 10 s.
async fn validate_endpoint(url: &str) -> Result<(), String> {
    let token = format!(
        "Validation: Testing client application {}",
        random_string(16)
    );
    let resp = reqwest::Client::new()
        .post(with_query(url, "validationToken", &token))
        .header("Content-Type", "text/plain; charset=utf-8")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.unwrap_or_default();
    if status != 200 || !ct.starts_with("text/plain") || body != token {
        return Err(format!(
            "{url} answered {status} {ct:?} {body:?} to the validation request"
        ));
    }
    Ok(())
}

fn purge_expired(st: &mut State) {
    let now = chrono::Utc::now();
    let expired: Vec<String> = st
        .subscriptions
        .iter()
        .filter(|(_, s)| s.expires <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        st.subscriptions.remove(&id);
        st.expired_subscriptions.push(id);
    }
}

fn expiration(ctx: &Ctx, body: &Value) -> Result<chrono::DateTime<chrono::Utc>, Reply> {
    let raw = body["expirationDateTime"].as_str().unwrap_or_default();
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) else {
        return Err(graph_error(
            ctx,
            400,
            "InvalidRequest",
            "expirationDateTime is not a valid date-time.",
        ));
    };
    let t = t.with_timezone(&chrono::Utc);
    let now = chrono::Utc::now();
    if t <= now {
        return Err(graph_error(
            ctx,
            400,
            "InvalidRequest",
            "Subscription expiration can only be in the future.",
        ));
    }
    if t > now + chrono::Duration::minutes(MAX_SUBSCRIPTION_MINUTES) + chrono::Duration::seconds(5)
    {
        return Err(graph_error(
            ctx,
            400,
            "InvalidRequest",
            "Subscription expiration can only be 4230 minutes in the future.",
        ));
    }
    Ok(t)
}

async fn subscriptions_endpoint(ctx: &Ctx, shared: &Shared, rest: &[&str]) -> Reply {
    purge_expired(&mut shared.state());
    match (ctx.method.as_str(), rest) {
        ("POST", []) => {
            let body = match json_body(
                ctx,
                shared,
                "microsoft.graph.subscription",
                "subscription",
                true,
            ) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut problems = vec![];
            let client_state = body["clientState"].as_str().unwrap_or_default().to_string();
            if client_state.is_empty() {
                problems.push(
                    "/clientState: graph.md §2.1 — always set a secret clientState".to_string(),
                );
            }
            if client_state.chars().count() > 128 {
                problems.push("/clientState: longer than 128 characters".into());
            }
            let resource = body["resource"].as_str().unwrap_or_default().to_string();
            let parsed = parse_resource(&resource);
            if parsed.is_none() {
                problems.push(format!(
                    "/resource: {resource:?} is not an Outlook resource the fake knows"
                ));
            }
            if body["includeResourceData"] == json!(true) {
                problems.extend(rich_problems(&body, &resource));
            }
            for ct in body["changeType"].as_str().unwrap_or_default().split(',') {
                if !["created", "updated", "deleted"].contains(&ct.trim()) {
                    problems.push(format!(
                        "/changeType: {ct:?} is not created/updated/deleted"
                    ));
                }
            }
            if !problems.is_empty() {
                record_violation(shared, ctx, "subscription", problems.clone());
                return graph_error(ctx, 400, "InvalidRequest", &problems.join("; "));
            }
            let expires = match expiration(ctx, &body) {
                Ok(t) => t,
                Err(r) => {
                    record_violation(
                        shared,
                        ctx,
                        "subscription",
                        vec!["/expirationDateTime out of range".into()],
                    );
                    return r;
                }
            };
            let notification_url = body["notificationUrl"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let lifecycle_url = body["lifecycleNotificationUrl"]
                .as_str()
                .map(str::to_string);
            for url in std::iter::once(&notification_url).chain(lifecycle_url.iter()) {
                if let Err(why) = validate_endpoint(url).await {
                    return graph_error(
                        ctx,
                        400,
                        "ValidationError",
                        &format!(
                            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request. ({why})"
                        ),
                    );
                }
            }
            let (mailbox, collection, folder) = parsed.expect("checked");
            let id = uuid::Uuid::new_v4().to_string();
            let mut json = body.clone();
            json["id"] = json!(id);
            json["applicationId"] = json!(shared.config().client_id);
            json["creatorId"] = json!(uuid::Uuid::new_v4().to_string());
            json["expirationDateTime"] =
                json!(expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            shared.state().subscriptions.insert(
                id,
                FakeSubscription {
                    json: json.clone(),
                    client_state,
                    notification_url,
                    lifecycle_url,
                    expires,
                    mailbox,
                    collection,
                    folder,
                },
            );
            Reply::json(201, json)
        }
        ("GET", []) => {
            let st = shared.state();
            let values: Vec<Value> = st.subscriptions.values().map(|s| s.json.clone()).collect();
            Reply::json(200, json!({ "value": values }))
        }
        ("GET", [id]) => match shared.state().subscriptions.get(*id) {
            Some(s) => Reply::json(200, s.json.clone()),
            None => not_found(ctx),
        },
        ("PATCH", [id]) => {
            let body = match json_body(
                ctx,
                shared,
                "microsoft.graph.subscription",
                "subscription",
                false,
            ) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let expires = match expiration(ctx, &body) {
                Ok(t) => t,
                Err(r) => return r,
            };
            let mut st = shared.state();
            match st.subscriptions.get_mut(*id) {
                Some(s) => {
                    s.expires = expires;
                    s.json["expirationDateTime"] =
                        json!(expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    Reply::json(200, s.json.clone())
                }
                None => not_found(ctx),
            }
        }
        ("DELETE", [id]) => match shared.state().subscriptions.remove(*id) {
            Some(_) => Reply::empty(204),
            None => not_found(ctx),
        },
        ("POST", [id, "reauthorize"]) => match shared.state().subscriptions.get(*id) {
            Some(_) => Reply::empty(204),
            None => not_found(ctx),
        },
        _ => graph_error(
            ctx,
            405,
            "MethodNotAllowed",
            "Unsupported subscriptions call (fake).",
        ),
    }
}

fn message_delta(ctx: &Ctx, shared: &Shared, mailbox: &str, folder: &str) -> Reply {
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    let Some(fid) = mb.folder_id(folder, false) else {
        return not_found(ctx);
    };
    let in_folder: Vec<Value> = mb
        .messages
        .iter()
        .filter(|m| m.folder_id == fid)
        .map(|m| m.json.clone())
        .collect();
    let link = format!(
        "{}/v1.0/users/{}/mailFolders/{folder}/messages/delta",
        shared.base(),
        url::form_urlencoded::byte_serialize(mailbox.as_bytes()).collect::<String>()
    );
    delta_reply(ctx, shared, mb, &fid, &in_folder, link, |m| present(ctx, m))
}

impl GraphFake {
    /// Puts a received message into a folder (as mail delivery would, without any
    /// notification) and returns its id. `message` may carry
    /// `singleValueExtendedProperties` and `attachments` (metadata).
    pub fn put_message(&self, mailbox: &str, folder: &str, message: Value) -> String {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .entry(mailbox.to_lowercase())
            .or_insert_with(Mailbox::fresh);
        let fid = mb.folder_id(folder, true).expect("folder exists");
        let mut msg = stamp(message, "AAMkM");
        let id = msg["id"].as_str().unwrap_or_default().to_string();
        msg["parentFolderId"] = json!(fid);
        msg["isDraft"] = json!(false);
        for (k, v) in [
            ("isRead", json!(false)),
            ("receivedDateTime", json!(now_iso())),
            ("webLink", json!(web_link(&id))),
            (
                "internetMessageId",
                json!(format!("<{}@fake.graph>", random_string(20))),
            ),
            ("hasAttachments", json!(msg.get("attachments").is_some())),
        ] {
            if msg.get(k).is_none() {
                msg[k] = v;
            }
        }
        mb.log_change(&id, &fid, false);
        mb.messages.push(StoredMessage {
            folder_id: fid,
            json: msg,
        });
        id
    }

    /// Changes a message in place (as a user in Outlook would), logging it for delta.
    pub fn update_message(&self, mailbox: &str, id: &str, patch: Value) {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        let m = mb
            .messages
            .iter_mut()
            .find(|m| m.json["id"] == id)
            .expect("message");
        merge(&mut m.json, &patch);
        let fid = m.folder_id.clone();
        mb.log_change(id, &fid, false);
    }

    /// Live subscriptions (expired ones are dropped first).
    pub fn subscriptions(&self) -> Vec<Value> {
        let mut st = self.shared.state();
        purge_expired(&mut st);
        st.subscriptions.values().map(|s| s.json.clone()).collect()
    }

    /// Ids of subscriptions that expired without being renewed.
    pub fn expired_subscriptions(&self) -> Vec<String> {
        let mut st = self.shared.state();
        purge_expired(&mut st);
        st.expired_subscriptions.clone()
    }

    /// Graph drops a subscription on its own (before sending `subscriptionRemoved`).
    pub fn drop_subscription(&self, id: &str) {
        self.shared.state().subscriptions.remove(id);
    }

    /// The subscription watching `collection` (`messages`, `events`, `contacts`) of
    /// `mailbox`.
    pub fn subscription_for(&self, mailbox: &str, collection: &str) -> Option<Value> {
        let st = self.shared.state();
        st.subscriptions
            .values()
            .find(|s| s.mailbox == mailbox.to_lowercase() && s.collection == collection)
            .map(|s| s.json.clone())
    }

    /// A change notification collection for `item_id` on subscription `sub_id`, with the
    /// subscription's clientState unless `client_state` overrides it.
    pub fn notification_body(
        &self,
        sub_id: &str,
        change_type: &str,
        item_id: &str,
        client_state: Option<&str>,
    ) -> Value {
        let st = self.shared.state();
        let s = st.subscriptions.get(sub_id).expect("live subscription");
        let (kind, seg) = match s.collection.as_str() {
            "events" => ("#Microsoft.Graph.Event", "Events"),
            "contacts" => ("#Microsoft.Graph.Contact", "Contacts"),
            _ => ("#Microsoft.Graph.Message", "Messages"),
        };
        let resource = format!("Users/{}/{seg}/{item_id}", s.mailbox);
        json!({"value": [{
            "id": uuid::Uuid::new_v4().to_string(),
            "subscriptionId": sub_id,
            "subscriptionExpirationDateTime": s.json["expirationDateTime"],
            "clientState": client_state.unwrap_or(&s.client_state),
            "changeType": change_type,
            "resource": resource,
            "tenantId": self.shared.config().tenant,
            "resourceData": {
                "@odata.type": kind,
                "@odata.id": resource,
                "@odata.etag": format!("W/\"{}\"", random_string(12)),
                "id": item_id,
            }
        }]})
    }

    /// POSTs `body` to the subscription's notificationUrl; returns the HTTP status.
    pub async fn deliver(&self, sub_id: &str, body: &Value) -> u16 {
        let url = {
            let st = self.shared.state();
            st.subscriptions
                .get(sub_id)
                .expect("live subscription")
                .notification_url
                .clone()
        };
        post_json(&url, body).await
    }

    /// Sends one change notification for `item_id`; returns the HTTP status.
    pub async fn notify(&self, sub_id: &str, change_type: &str, item_id: &str) -> u16 {
        let body = self.notification_body(sub_id, change_type, item_id, None);
        self.deliver(sub_id, &body).await
    }

    /// Sends a lifecycle event (`reauthorizationRequired`, `subscriptionRemoved`,
    /// `missed`) to the subscription's lifecycleNotificationUrl. Works for a subscription
    /// already dropped with [`GraphFake::drop_subscription`] when `known` is given.
    pub async fn lifecycle(&self, sub: &Value, event: &str, client_state: &str) -> u16 {
        let url = sub["lifecycleNotificationUrl"]
            .as_str()
            .expect("subscription has a lifecycleNotificationUrl")
            .to_string();
        let body = json!({"value": [{
            "subscriptionId": sub["id"],
            "subscriptionExpirationDateTime": sub["expirationDateTime"],
            "tenantId": self.shared.config().tenant,
            "clientState": client_state,
            "lifecycleEvent": event,
        }]});
        post_json(&url, &body).await
    }

    /// The clientState a subscription was created with.
    pub fn client_state(&self, sub_id: &str) -> Option<String> {
        self.shared
            .state()
            .subscriptions
            .get(sub_id)
            .map(|s| s.client_state.clone())
    }
}

async fn post_json(url: &str, body: &Value) -> u16 {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

impl GraphFake {
    /// Adds an event to the mailbox's calendar (as a user in Outlook would); returns its id.
    pub fn put_event(&self, mailbox: &str, event: Value) -> String {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .entry(mailbox.to_lowercase())
            .or_insert_with(Mailbox::fresh);
        let mut ev = stamp(event, "AAMkE");
        let id = ev["id"].as_str().unwrap_or_default().to_string();
        ev["webLink"] = json!(web_link(&id));
        if ev.get("isCancelled").is_none() {
            ev["isCancelled"] = json!(false);
        }
        mb.log_change(&id, CALENDAR, false);
        mb.events.push(ev);
        id
    }

    /// Changes an event in place (a new `changeKey`, as Graph gives on every change).
    pub fn update_event(&self, mailbox: &str, id: &str, patch: Value) {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        let ev = mb.events.iter_mut().find(|e| e["id"] == id).expect("event");
        merge(ev, &patch);
        ev["changeKey"] = json!(random_string(16));
        mb.log_change(id, CALENDAR, false);
    }
}

impl GraphFake {
    /// Adds a task to the To Do list with this id or display name (as a user in Outlook
    /// would; the list is created when missing); returns its id.
    pub fn put_task(&self, mailbox: &str, list: &str, task: Value) -> String {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .entry(mailbox.to_lowercase())
            .or_insert_with(Mailbox::fresh);
        let lid = match mb
            .lists
            .iter()
            .find(|l| l["id"] == list || l["displayName"] == list)
        {
            Some(l) => l["id"].as_str().unwrap_or_default().to_string(),
            None => {
                let l = stamp(
                    json!({"displayName": list, "isOwner": true, "isShared": false, "wellknownListName": "none"}),
                    "AAMkL",
                );
                let lid = l["id"].as_str().unwrap_or_default().to_string();
                mb.lists.push(l);
                mb.tasks.insert(lid.clone(), vec![]);
                lid
            }
        };
        let mut t = stamp(task, "AAMkT");
        t["lastModifiedDateTime"] = json!(now_iso_millis());
        for (k, v) in [
            ("status", json!("notStarted")),
            ("importance", json!("normal")),
        ] {
            if t.get(k).is_none() {
                t[k] = v;
            }
        }
        let id = t["id"].as_str().unwrap_or_default().to_string();
        mb.tasks.get_mut(&lid).expect("list").push(t);
        mb.log_change(&id, &todo_changes(&lid), false);
        id
    }

    /// Changes a task in place (as a user in Outlook would), logging it for delta.
    pub fn update_task(&self, mailbox: &str, id: &str, patch: Value) {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        let (lid, task) = mb
            .tasks
            .iter_mut()
            .find_map(|(lid, ts)| {
                ts.iter_mut()
                    .find(|t| t["id"] == id)
                    .map(|t| (lid.clone(), t))
            })
            .expect("task");
        merge(task, &patch);
        task["changeKey"] = json!(random_string(16));
        task["lastModifiedDateTime"] = json!(now_iso_millis());
        mb.log_change(id, &todo_changes(&lid), false);
    }

    /// Deletes a task (as a user in Outlook would), logging it for delta.
    pub fn delete_task(&self, mailbox: &str, id: &str) {
        let mut st = self.shared.state();
        let mb = st
            .mailboxes
            .get_mut(&mailbox.to_lowercase())
            .expect("mailbox");
        let lid = mb
            .tasks
            .iter_mut()
            .find_map(|(lid, ts)| {
                let pos = ts.iter().position(|t| t["id"] == id)?;
                ts.remove(pos);
                Some(lid.clone())
            })
            .expect("task");
        mb.log_change(id, &todo_changes(&lid), true);
    }
}

impl GraphFake {
    /// Serves `jwks` at `/common/discovery/v2.0/keys` (and `/common/discovery/keys`).
    pub fn set_jwks(&self, jwks: Value) {
        self.shared.state().jwks = Some(jwks);
    }
}

/// Change-log "folder" of calendar events.
const CALENDAR: &str = "x-fake-calendar";

/// `calendarView/delta`: like [`message_delta`] over the primary calendar (the window
/// `startDateTime`/`endDateTime` is required on the first call, as on Graph, but the fake
/// returns every event regardless of its dates).
fn event_delta(ctx: &Ctx, shared: &Shared, mailbox: &str) -> Reply {
    let first = ctx.q("$skiptoken").is_none() && ctx.q("$deltatoken").is_none();
    if first && (ctx.q("startDateTime").is_none() || ctx.q("endDateTime").is_none()) {
        record_violation(
            shared,
            ctx,
            "calendarView/delta",
            vec!["startDateTime and endDateTime are required (graph.md §3)".into()],
        );
        return graph_error(
            ctx,
            400,
            "ErrorInvalidParameter",
            "startDateTime and endDateTime are required.",
        );
    }
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    let link = format!(
        "{}/v1.0/users/{}/calendarView/delta",
        shared.base(),
        url::form_urlencoded::byte_serialize(mailbox.as_bytes()).collect::<String>()
    );
    delta_reply(ctx, shared, mb, CALENDAR, &mb.events, link, |e| {
        present(ctx, e)
    })
}

/// Change-log "folder" of the tasks of To Do list `list`.
fn todo_changes(list: &str) -> String {
    format!("x-fake-todo:{list}")
}

/// `todo/lists/{id}/tasks/delta`: like [`message_delta`] over one list. Tasks come without
/// `linkedResources` (a navigation property Graph returns only when expanded).
fn task_delta(ctx: &Ctx, shared: &Shared, mailbox: &str, list: &str) -> Reply {
    let st = shared.state();
    let mb = &st.mailboxes[mailbox];
    let Some(tasks) = mb.tasks.get(list) else {
        return not_found(ctx);
    };
    let link = format!(
        "{}/v1.0/users/{}/todo/lists/{list}/tasks/delta",
        shared.base(),
        url::form_urlencoded::byte_serialize(mailbox.as_bytes()).collect::<String>()
    );
    delta_reply(ctx, shared, mb, &todo_changes(list), tasks, link, |t| {
        let mut t = present(ctx, t);
        if let Some(o) = t.as_object_mut() {
            o.remove("linkedResources");
        }
        t
    })
}

/// One delta page over `items`, whose changes are logged under `log`: the first call
/// lists every item, a `$deltatoken` (the mailbox's change sequence) lists the items
/// changed since (current state, or `@removed`), `$skiptoken` pages either.
fn delta_reply(
    ctx: &Ctx,
    shared: &Shared,
    mb: &Mailbox,
    log: &str,
    items: &[Value],
    link: String,
    show: impl Fn(&Value) -> Value,
) -> Reply {
    let page_size = ctx
        .header("prefer")
        .and_then(|p| {
            p.split(',')
                .find_map(|x| x.trim().strip_prefix("odata.maxpagesize="))
        })
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(shared.config().delta_page_size)
        .max(1);
    let gone = || {
        graph_error(
            ctx,
            410,
            "syncStateNotFound",
            "The sync state is not found (fake).",
        )
    };
    let (since, offset, snapshot) = if let Some(sk) = ctx.q("$skiptoken") {
        let parts: Vec<&str> = sk.split('.').collect();
        let [a, b, c] = parts[..] else { return gone() };
        let since = if a == "i" {
            None
        } else {
            match a.parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => return gone(),
            }
        };
        match (b.parse::<usize>(), c.parse::<u64>()) {
            (Ok(o), Ok(snap)) if snap <= mb.seq => (since, o, snap),
            _ => return gone(),
        }
    } else if let Some(dt) = ctx.q("$deltatoken") {
        match dt.parse::<u64>() {
            Ok(v) if v <= mb.seq => (Some(v), 0, mb.seq),
            _ => return gone(),
        }
    } else {
        (None, 0, mb.seq)
    };
    let listed: Vec<Value> = match since {
        None => items.iter().map(&show).collect(),
        Some(since) => {
            let mut ids: Vec<String> = vec![];
            for (seq, id, f, _) in &mb.changes {
                if *seq > since && *seq <= snapshot && f == log && !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
            ids.iter()
                .map(|id| match items.iter().find(|i| i["id"] == id.as_str()) {
                    Some(i) => show(i),
                    None => json!({"id": id, "@removed": {"reason": "deleted"}}),
                })
                .collect()
        }
    };
    let page: Vec<Value> = listed
        .iter()
        .skip(offset)
        .take(page_size)
        .cloned()
        .collect();
    let mut body = json!({ "value": page });
    if offset + page_size < listed.len() {
        let since = since.map(|s| s.to_string()).unwrap_or_else(|| "i".into());
        body["@odata.nextLink"] = json!(format!(
            "{link}?$skiptoken={since}.{}.{snapshot}",
            offset + page_size
        ));
    } else {
        body["@odata.deltaLink"] = json!(format!("{link}?$deltatoken={snapshot}"));
    }
    Reply::json(200, body)
}
