//! The Graph client: the Outlook operations the relays need (mail, folders, attachments,
//! events, contacts, To Do), each request with `client-request-id`, `User-Agent`, a
//! bearer token and, for Outlook items, `Prefer: IdType="ImmutableId"`.
//!
//! Throttling (<https://learn.microsoft.com/graph/throttling>): at most
//! [`RetryPolicy::per_mailbox_concurrency`] requests in flight per mailbox; a 429/503/504
//! blocks the whole mailbox until its `Retry-After` has passed; short waits are retried
//! here, longer ones come back as a [`GraphError::Api`] with `retry_after` so the worker
//! retries the job later.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::Rng;
use reqwest::{Method, StatusCode, header::HeaderMap};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{
    GraphError, ORIGIN_PROPERTY_ID,
    auth::{CertificateCredential, Credential, TokenProvider},
};
use crate::{
    config::{ConfigError, GraphConfig},
    upstream,
};

mod mail_delta;
mod mail_sync;

pub use mail_delta::{DeltaItem, DeltaMessage, DeltaPage, parse_delta_page, received_since_filter};
pub use mail_sync::{
    FoundMessage, ImportPlan, Importance, Imported, ImportedAs, MailAddress, MailAttachment,
    MailBody, Precheck, REQUEST_BODY_MAX, ReceivedMail, plan_import,
};

/// Attachments below this size are posted inline; larger ones use an upload session.
pub const INLINE_ATTACHMENT_MAX: usize = 3 * 1024 * 1024;
/// Largest attachment Outlook accepts through an upload session.
pub const UPLOAD_SESSION_MAX: u64 = 150 * 1024 * 1024;
/// Upload chunks must be multiples of this size.
pub const UPLOAD_CHUNK_UNIT: usize = 320 * 1024;
/// PR_MESSAGE_FLAGS, set to `1` (MSGFLAG_READ, with MSGFLAG_UNSENT clear) at creation so
/// the item is a received message, not a draft. Widely used, but undocumented on Graph's
/// pages; the flags are Exchange's `PidTagMessageFlags`, read-only once the item is saved
/// (<https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-oxcmsg/a0c52fe2-3014-43a7-942d-f43f6f91c366>).
/// The item starts read; [`GraphClient::set_read`] can mark it unread.
const MESSAGE_FLAGS_PROPERTY_ID: &str = "Integer 0x0E07";

/// Characters left as they are in a path segment or query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How hard the client tries before handing a throttled request back to the worker.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Requests in flight per mailbox (Outlook allows 4 per app and mailbox).
    pub per_mailbox_concurrency: usize,
    /// Retries of one request after 429/503/504 or a connection failure.
    pub max_retries: u32,
    /// A longer `Retry-After` is not waited for here; the error carries it instead.
    pub max_wait: Duration,
    /// First back-off when Graph sends no `Retry-After`; doubles per retry, with jitter.
    pub backoff_base: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Upload-session chunk size; a multiple of 320 KiB, at most 4 MB.
    pub upload_chunk: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            per_mailbox_concurrency: 4,
            max_retries: 3,
            max_wait: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            request_timeout: Duration::from_secs(60),
            // 12 × 320 KiB = 3,932,160 bytes, the largest multiple below 4 MB.
            upload_chunk: 12 * UPLOAD_CHUNK_UNIT,
        }
    }
}

/// Outlook collections that carry the origin marker and support immutable ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `/users/{m}/messages` (every folder).
    Messages,
    /// `/users/{m}/events`.
    Events,
    /// `/users/{m}/contacts`.
    Contacts,
}

impl Collection {
    fn segment(self) -> &'static str {
        match self {
            Collection::Messages => "messages",
            Collection::Events => "events",
            Collection::Contacts => "contacts",
        }
    }
}

/// A To Do task's link back to its source (`linkedResources`,
/// <https://learn.microsoft.com/en-us/graph/api/resources/linkedresource>).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkedResource {
    /// Shown as the source app, e.g. `DingTalk`.
    pub application_name: String,
    /// The source id (the bridge's origin marker for tasks).
    pub external_id: String,
    /// Link text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Deep link back to the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
}

/// The id of an item an idempotent create made or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The Graph id (immutable for messages, events and contacts).
    pub id: String,
    /// True when an item with the same origin existed already and nothing was created.
    pub existed: bool,
}

/// The `transactionId` the bridge uses for the event of `source_id`: stable across
/// retries and instances.
pub fn event_transaction_id(source_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(source_id.as_bytes());
    format!("dingbridge-{}", hex::encode(&digest[..16]))
}

/// Per-mailbox gate: a concurrency limit and a "blocked until" set by throttling.
struct Gate {
    permits: Arc<Semaphore>,
    blocked_until: Mutex<Option<Instant>>,
}

impl Gate {
    fn blocked_for(&self) -> Option<Duration> {
        let until = (*self.blocked_until.lock().expect("gate"))?;
        until.checked_duration_since(Instant::now())
    }

    fn block(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut b = self.blocked_until.lock().expect("gate");
        if b.is_none_or(|old| old < until) {
            *b = Some(until);
        }
    }
}

/// One logical request (kept so that retries resend it unchanged).
struct Call {
    method: Method,
    url: String,
    body: Option<(&'static str, Bytes)>,
    immutable_ids: bool,
    bearer: bool,
    content_range: Option<String>,
}

/// A successful answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Result<Value, GraphError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| GraphError::Unexpected(format!("answer is not JSON: {e}")))
    }

    fn id(&self) -> Result<String, GraphError> {
        let v = self.json()?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| GraphError::Unexpected("answer has no `id`".into()))
    }
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    auth: Arc<TokenProvider>,
    policy: RetryPolicy,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    folders: Mutex<HashMap<(String, String), String>>,
    todo_lists: Mutex<HashMap<(String, String), String>>,
    /// Serialises find-or-create of folders and lists so two jobs do not create twins.
    ensure: tokio::sync::Mutex<()>,
}

/// A Microsoft Graph client; cheap to clone.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base_url", &self.inner.base_url)
            .field("auth", &self.inner.auth)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// A client for `base_url` (e.g. [`DEFAULT_BASE_URL`]) using `auth` for tokens.
    pub fn new(http: reqwest::Client, base_url: &str, auth: Arc<TokenProvider>) -> Self {
        Self::with_policy(http, base_url, auth, RetryPolicy::default())
    }

    /// Same as [`GraphClient::new`] with an explicit retry policy.
    pub fn with_policy(
        http: reqwest::Client,
        base_url: &str,
        auth: Arc<TokenProvider>,
        policy: RetryPolicy,
    ) -> Self {
        assert!(
            policy.upload_chunk > 0
                && policy.upload_chunk.is_multiple_of(UPLOAD_CHUNK_UNIT)
                && policy.upload_chunk <= 4 * 1024 * 1024,
            "upload_chunk must be a multiple of 320 KiB up to 4 MB"
        );
        assert!(policy.per_mailbox_concurrency > 0);
        Self {
            inner: Arc::new(Inner {
                http,
                base_url: base_url.trim_end_matches('/').to_string(),
                auth,
                policy,
                gates: Mutex::new(HashMap::new()),
                folders: Mutex::new(HashMap::new()),
                todo_lists: Mutex::new(HashMap::new()),
                ensure: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The client the configuration describes, or `None` when Graph is not configured
    /// (no tenant, client id or credential set). Reads and checks the certificate files.
    pub fn from_config(
        config: &GraphConfig,
        http: reqwest::Client,
    ) -> Result<Option<GraphClient>, ConfigError> {
        let Some(settings) = config.credentials()? else {
            return Ok(None);
        };
        let credential = match (&config.client_secret, &config.certificate_path) {
            (Some(secret), _) => Credential::Secret(secret.clone()),
            (None, Some(cert)) => {
                let key = config.private_key_path.as_deref().unwrap_or_default();
                Credential::Certificate(
                    CertificateCredential::load(cert, key, config.assertion_alg).map_err(
                        |reason| ConfigError {
                            key: "graph.certificate_path".into(),
                            reason,
                        },
                    )?,
                )
            }
            (None, None) => unreachable!("credentials() checked a credential is set"),
        };
        let auth = TokenProvider::new(
            http.clone(),
            config.authority_url(),
            &settings.tenant_id,
            &settings.client_id,
            credential,
        );
        Ok(Some(Self::new(http, config.base_url(), Arc::new(auth))))
    }

    /// Forgets the cached folder and To Do list ids of `mailbox` (e.g. after a 404 on a
    /// folder the user deleted), so the next `ensure_*` looks them up or recreates them.
    pub fn forget_cached_ids(&self, mailbox: &str) {
        let m = mailbox.to_ascii_lowercase();
        self.inner
            .folders
            .lock()
            .expect("folders")
            .retain(|(mb, _), _| *mb != m);
        self.inner
            .todo_lists
            .lock()
            .expect("lists")
            .retain(|(mb, _), _| *mb != m);
    }

    /// The token provider (for readiness: [`TokenProvider::last_error`]).
    pub fn auth(&self) -> &Arc<TokenProvider> {
        &self.inner.auth
    }

    // ----- mail -------------------------------------------------------------------

    /// Sends `message` (a `microsoft.graph.message`) from `mailbox`. Not idempotent: Graph
    /// answers 202 with no id (<https://learn.microsoft.com/en-us/graph/api/user-sendmail>).
    pub async fn send_mail(
        &self,
        mailbox: &str,
        message: Value,
        save_to_sent_items: bool,
    ) -> Result<(), GraphError> {
        let body = json!({ "message": message, "saveToSentItems": save_to_sent_items });
        self.call_json(
            mailbox,
            Method::POST,
            &["sendMail"],
            &[],
            Some(&body),
            false,
        )
        .await?;
        Ok(())
    }

    /// The id of the top-level mail folder named `display_name`, created on first use;
    /// ids are cached for the life of the client.
    pub async fn ensure_mail_folder(
        &self,
        mailbox: &str,
        display_name: &str,
    ) -> Result<String, GraphError> {
        let key = (mailbox.to_ascii_lowercase(), display_name.to_string());
        if let Some(id) = self.inner.folders.lock().expect("folders").get(&key) {
            return Ok(id.clone());
        }
        let _one_at_a_time = self.inner.ensure.lock().await;
        if let Some(id) = self.inner.folders.lock().expect("folders").get(&key) {
            return Ok(id.clone());
        }
        let filter = format!("displayName eq {}", odata_string(display_name));
        let id = match self.find_folder(mailbox, &filter).await? {
            Some(id) => id,
            None => {
                let body = json!({ "displayName": display_name });
                match self
                    .call_json(
                        mailbox,
                        Method::POST,
                        &["mailFolders"],
                        &[],
                        Some(&body),
                        false,
                    )
                    .await
                {
                    Ok(a) => a.id()?,
                    // Created meanwhile by another instance.
                    Err(e) if e.status() == Some(409) => {
                        self.find_folder(mailbox, &filter).await?.ok_or_else(|| {
                            GraphError::Unexpected(format!(
                                "folder `{display_name}` exists (409) but cannot be found"
                            ))
                        })?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.inner
            .folders
            .lock()
            .expect("folders")
            .insert(key, id.clone());
        Ok(id)
    }

    async fn find_folder(&self, mailbox: &str, filter: &str) -> Result<Option<String>, GraphError> {
        let answer = self
            .call_json(
                mailbox,
                Method::GET,
                &["mailFolders"],
                &[("$filter", filter), ("$select", "id,displayName")],
                None,
                false,
            )
            .await?;
        Ok(first_id(&answer.json()?))
    }

    /// Creates `message` in `folder_id` as a received (non-draft) item and returns its
    /// immutable id. Put [`super::origin_marker`] in its `singleValueExtendedProperties`
    /// and check [`GraphClient::find_by_origin`] first to stay idempotent.
    pub async fn create_message_in_folder(
        &self,
        mailbox: &str,
        folder_id: &str,
        mut message: Value,
    ) -> Result<String, GraphError> {
        push_extended_property(&mut message, MESSAGE_FLAGS_PROPERTY_ID, "1")?;
        self.call_json(
            mailbox,
            Method::POST,
            &["mailFolders", folder_id, "messages"],
            &[],
            Some(&message),
            true,
        )
        .await?
        .id()
    }

    /// Marks a message read or unread.
    pub async fn set_read(&self, mailbox: &str, id: &str, read: bool) -> Result<(), GraphError> {
        let body = json!({ "isRead": read });
        self.call_json(
            mailbox,
            Method::PATCH,
            &["messages", id],
            &[],
            Some(&body),
            true,
        )
        .await?;
        Ok(())
    }

    /// Moves a message to a folder (id or well-known name); returns its id afterwards
    /// (unchanged with immutable ids).
    pub async fn move_message(
        &self,
        mailbox: &str,
        id: &str,
        destination_id: &str,
    ) -> Result<String, GraphError> {
        let body = json!({ "destinationId": destination_id });
        self.call_json(
            mailbox,
            Method::POST,
            &["messages", id, "move"],
            &[],
            Some(&body),
            true,
        )
        .await?
        .id()
    }

    /// Attaches a file to a message: inline below 3 MB, through an upload session up to
    /// 150 MB, refused above. Returns the attachment id when Graph tells it.
    pub async fn add_attachment(
        &self,
        mailbox: &str,
        message_id: &str,
        name: &str,
        content_type: &str,
        content: Bytes,
    ) -> Result<Option<String>, GraphError> {
        let file = MailAttachment {
            name: name.to_string(),
            content_type: content_type.to_string(),
            content_id: None,
            is_inline: false,
            content,
        };
        self.attach_file(mailbox, message_id, &file).await
    }

    /// Sequential PUTs of the content to a pre-authenticated upload URL (no bearer token).
    async fn upload(
        &self,
        mailbox: &str,
        upload_url: &str,
        content: Bytes,
    ) -> Result<Option<String>, GraphError> {
        let total = content.len();
        let mut offset = 0usize;
        let mut puts = 0usize;
        // Bound the loop even if the server keeps asking for the same range.
        let max_puts = total / self.inner.policy.upload_chunk + 8;
        while offset < total {
            puts += 1;
            if puts > max_puts {
                return Err(GraphError::Unexpected(
                    "upload session does not advance".into(),
                ));
            }
            let end = (offset + self.inner.policy.upload_chunk).min(total);
            let call = Call {
                method: Method::PUT,
                url: upload_url.to_string(),
                body: Some(("application/octet-stream", content.slice(offset..end))),
                immutable_ids: false,
                bearer: false,
                content_range: Some(format!("bytes {}-{}/{}", offset, end - 1, total)),
            };
            let answer = self.execute(mailbox, call).await?;
            if answer.status == StatusCode::CREATED || end == total {
                let from_location = answer
                    .headers
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(attachment_id_from_location);
                return Ok(from_location.or_else(|| answer.id().ok()));
            }
            // Follow the server's `nextExpectedRanges` (e.g. ["3932160-"]).
            offset = answer
                .json()
                .ok()
                .and_then(|v| {
                    v.get("nextExpectedRanges")?
                        .as_array()?
                        .first()?
                        .as_str()?
                        .split('-')
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .filter(|next| *next <= total)
                .unwrap_or(end);
        }
        Ok(None)
    }

    // ----- calendar ------------------------------------------------------------------

    /// Creates `event` (a `microsoft.graph.event`) with `transactionId` so that Graph
    /// drops a retried duplicate; returns its immutable id.
    pub async fn create_event(
        &self,
        mailbox: &str,
        mut event: Value,
        transaction_id: &str,
    ) -> Result<String, GraphError> {
        object_mut(&mut event)?.insert("transactionId".into(), transaction_id.into());
        self.call_json(mailbox, Method::POST, &["events"], &[], Some(&event), true)
            .await?
            .id()
    }

    /// Patches an event.
    pub async fn update_event(
        &self,
        mailbox: &str,
        id: &str,
        patch: Value,
    ) -> Result<(), GraphError> {
        self.call_json(
            mailbox,
            Method::PATCH,
            &["events", id],
            &[],
            Some(&patch),
            true,
        )
        .await?;
        Ok(())
    }

    /// Deletes a mail item (to Graph's recoverable items, not Deleted Items); one already
    /// gone counts as deleted.
    pub async fn delete_message(&self, mailbox: &str, id: &str) -> Result<(), GraphError> {
        self.delete(mailbox, &["messages", id], true).await
    }

    /// Deletes an event; an event that is already gone counts as deleted.
    pub async fn delete_event(&self, mailbox: &str, id: &str) -> Result<(), GraphError> {
        self.delete(mailbox, &["events", id], true).await
    }

    // ----- contacts ------------------------------------------------------------------

    /// Creates a contact; returns its immutable id.
    pub async fn create_contact(
        &self,
        mailbox: &str,
        contact: Value,
    ) -> Result<String, GraphError> {
        self.call_json(
            mailbox,
            Method::POST,
            &["contacts"],
            &[],
            Some(&contact),
            true,
        )
        .await?
        .id()
    }

    /// Patches a contact.
    pub async fn update_contact(
        &self,
        mailbox: &str,
        id: &str,
        patch: Value,
    ) -> Result<(), GraphError> {
        self.call_json(
            mailbox,
            Method::PATCH,
            &["contacts", id],
            &[],
            Some(&patch),
            true,
        )
        .await?;
        Ok(())
    }

    /// Deletes a contact; a contact that is already gone counts as deleted.
    pub async fn delete_contact(&self, mailbox: &str, id: &str) -> Result<(), GraphError> {
        self.delete(mailbox, &["contacts", id], true).await
    }

    // ----- To Do -----------------------------------------------------------------------

    /// The id of the To Do list named `name`, created on first use (cached).
    pub async fn ensure_todo_list(&self, mailbox: &str, name: &str) -> Result<String, GraphError> {
        let key = (mailbox.to_ascii_lowercase(), name.to_string());
        if let Some(id) = self.inner.todo_lists.lock().expect("lists").get(&key) {
            return Ok(id.clone());
        }
        let _one_at_a_time = self.inner.ensure.lock().await;
        if let Some(id) = self.inner.todo_lists.lock().expect("lists").get(&key) {
            return Ok(id.clone());
        }
        // Lists are few; match on the client rather than rely on $filter support.
        let mut found = None;
        let mut page = self
            .call_json(mailbox, Method::GET, &["todo", "lists"], &[], None, false)
            .await?
            .json()?;
        for _ in 0..50 {
            found = page
                .get("value")
                .and_then(Value::as_array)
                .and_then(|lists| {
                    lists
                        .iter()
                        .find(|l| l.get("displayName").and_then(Value::as_str) == Some(name))
                })
                .and_then(|l| l.get("id").and_then(Value::as_str))
                .map(str::to_string);
            let next = page.get("@odata.nextLink").and_then(Value::as_str);
            match (found.is_some(), next) {
                (false, Some(next)) => page = self.get_url(mailbox, next).await?,
                _ => break,
            }
        }
        let id = match found {
            Some(id) => id,
            None => {
                let body = json!({ "displayName": name });
                self.call_json(
                    mailbox,
                    Method::POST,
                    &["todo", "lists"],
                    &[],
                    Some(&body),
                    false,
                )
                .await?
                .id()?
            }
        };
        self.inner
            .todo_lists
            .lock()
            .expect("lists")
            .insert(key, id.clone());
        Ok(id)
    }

    /// Creates a task (a `microsoft.graph.todoTask`) linked back to its source through
    /// `linkedResources`; returns its id.
    pub async fn create_task(
        &self,
        mailbox: &str,
        list_id: &str,
        mut task: Value,
        link: &LinkedResource,
    ) -> Result<String, GraphError> {
        let link = serde_json::to_value(link).map_err(|e| GraphError::Unexpected(e.to_string()))?;
        let obj = object_mut(&mut task)?;
        match obj.get_mut("linkedResources").and_then(Value::as_array_mut) {
            Some(list) => list.push(link),
            None => {
                obj.insert("linkedResources".into(), Value::Array(vec![link]));
            }
        }
        self.call_json(
            mailbox,
            Method::POST,
            &["todo", "lists", list_id, "tasks"],
            &[],
            Some(&task),
            false,
        )
        .await?
        .id()
    }

    /// The id of the task in `list_id` whose linked resource has `external_id` (scans the
    /// list with `$expand=linkedResources`; Graph cannot filter on it server-side).
    pub async fn find_task_by_external_id(
        &self,
        mailbox: &str,
        list_id: &str,
        external_id: &str,
    ) -> Result<Option<String>, GraphError> {
        let mut page = self
            .call_json(
                mailbox,
                Method::GET,
                &["todo", "lists", list_id, "tasks"],
                &[("$expand", "linkedResources"), ("$top", "100")],
                None,
                false,
            )
            .await?
            .json()?;
        for _ in 0..1000 {
            let hit = page
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|t| {
                    t.get("linkedResources")
                        .and_then(Value::as_array)
                        .is_some_and(|l| {
                            l.iter().any(|r| {
                                r.get("externalId").and_then(Value::as_str) == Some(external_id)
                            })
                        })
                })
                .and_then(|t| t.get("id").and_then(Value::as_str))
                .map(str::to_string);
            if hit.is_some() {
                return Ok(hit);
            }
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) => page = self.get_url(mailbox, next).await?,
                None => break,
            }
        }
        Ok(None)
    }

    /// Patches a task.
    pub async fn update_task(
        &self,
        mailbox: &str,
        list_id: &str,
        task_id: &str,
        patch: Value,
    ) -> Result<(), GraphError> {
        self.call_json(
            mailbox,
            Method::PATCH,
            &["todo", "lists", list_id, "tasks", task_id],
            &[],
            Some(&patch),
            false,
        )
        .await?;
        Ok(())
    }

    /// Deletes a task; a task that is already gone counts as deleted.
    pub async fn delete_task(
        &self,
        mailbox: &str,
        list_id: &str,
        task_id: &str,
    ) -> Result<(), GraphError> {
        self.delete(
            mailbox,
            &["todo", "lists", list_id, "tasks", task_id],
            false,
        )
        .await
    }

    // ----- idempotent creates ------------------------------------------------------------

    /// Creates the message of `source_id` in `folder_id` unless an item carrying the
    /// bridge's origin marker for it exists (a retried job); adds the marker.
    pub async fn create_message_once(
        &self,
        mailbox: &str,
        folder_id: &str,
        mut message: Value,
        source_id: &str,
    ) -> Result<Created, GraphError> {
        push_extended_property(&mut message, ORIGIN_PROPERTY_ID, source_id)?;
        self.create_once(
            || self.find_by_bridge_origin(mailbox, Collection::Messages, source_id),
            || self.create_message_in_folder(mailbox, folder_id, message.clone()),
        )
        .await
    }

    /// Sends `message` from `mailbox` once for `source_id`: a draft carrying the origin
    /// marker, then its `send`. `sendMail` cannot be looked up, so a repeat after a lost
    /// answer could send twice; here a repeat finds the draft (and sends it) or the sent
    /// copy (and stops). Two requests instead of one, and the copy lands in Sent Items.
    pub async fn send_mail_once(
        &self,
        mailbox: &str,
        mut message: Value,
        source_id: &str,
    ) -> Result<(), GraphError> {
        let id = match self.message_by_origin(mailbox, source_id).await? {
            Some((_, false)) => return Ok(()),
            Some((id, true)) => id,
            None => {
                push_extended_property(&mut message, ORIGIN_PROPERTY_ID, source_id)?;
                self.create_once(
                    || self.find_by_bridge_origin(mailbox, Collection::Messages, source_id),
                    || self.create_draft(mailbox, message.clone()),
                )
                .await?
                .id
            }
        };
        let mut attempt = 0u32;
        loop {
            let error = match self.send_draft(mailbox, &id).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_ambiguous() => e,
                Err(e) => return Err(e),
            };
            attempt += 1;
            let Some(wait) = self.wait_before_looking(&error, attempt) else {
                return Err(error);
            };
            tokio::time::sleep(wait).await;
            if let Some((_, false)) = self.message_by_origin(mailbox, source_id).await? {
                return Ok(());
            }
        }
    }

    /// The message carrying the bridge's origin marker `source_id`, and whether it is
    /// still a draft.
    async fn message_by_origin(
        &self,
        mailbox: &str,
        source_id: &str,
    ) -> Result<Option<(String, bool)>, GraphError> {
        let filter = format!(
            "singleValueExtendedProperties/Any(ep: ep/id eq {} and ep/value eq {})",
            odata_string(ORIGIN_PROPERTY_ID),
            odata_string(source_id)
        );
        let answer = self
            .call_json(
                mailbox,
                Method::GET,
                &["messages"],
                &[
                    ("$filter", &filter),
                    ("$select", "id,isDraft"),
                    ("$top", "1"),
                ],
                None,
                true,
            )
            .await?
            .json()?;
        let first = answer
            .get("value")
            .and_then(Value::as_array)
            .and_then(|v| v.first());
        Ok(first.and_then(|m| {
            let id = m.get("id")?.as_str()?.to_string();
            Some((
                id,
                m.get("isDraft").and_then(Value::as_bool).unwrap_or(true),
            ))
        }))
    }

    /// Creates a draft in Drafts; returns its immutable id.
    async fn create_draft(&self, mailbox: &str, message: Value) -> Result<String, GraphError> {
        self.call_json(
            mailbox,
            Method::POST,
            &["messages"],
            &[],
            Some(&message),
            true,
        )
        .await?
        .id()
    }

    /// Sends a draft.
    async fn send_draft(&self, mailbox: &str, id: &str) -> Result<(), GraphError> {
        self.call_json(
            mailbox,
            Method::POST,
            &["messages", id, "send"],
            &[],
            None,
            true,
        )
        .await?;
        Ok(())
    }

    /// Creates the event of `source_id` unless it exists; adds the origin marker and a
    /// `transactionId` derived from `source_id` ([`event_transaction_id`]).
    pub async fn create_event_once(
        &self,
        mailbox: &str,
        mut event: Value,
        source_id: &str,
    ) -> Result<Created, GraphError> {
        push_extended_property(&mut event, ORIGIN_PROPERTY_ID, source_id)?;
        let transaction = event_transaction_id(source_id);
        self.create_once(
            || self.find_by_bridge_origin(mailbox, Collection::Events, source_id),
            || self.create_event(mailbox, event.clone(), &transaction),
        )
        .await
    }

    /// Creates the contact of `source_id` unless it exists; adds the origin marker.
    pub async fn create_contact_once(
        &self,
        mailbox: &str,
        mut contact: Value,
        source_id: &str,
    ) -> Result<Created, GraphError> {
        push_extended_property(&mut contact, ORIGIN_PROPERTY_ID, source_id)?;
        self.create_once(
            || self.find_by_bridge_origin(mailbox, Collection::Contacts, source_id),
            || self.create_contact(mailbox, contact.clone()),
        )
        .await
    }

    /// Creates the task unless one in the list already links `link.external_id`.
    pub async fn create_task_once(
        &self,
        mailbox: &str,
        list_id: &str,
        task: Value,
        link: &LinkedResource,
    ) -> Result<Created, GraphError> {
        self.create_once(
            || self.find_task_by_external_id(mailbox, list_id, &link.external_id),
            || self.create_task(mailbox, list_id, task.clone(), link),
        )
        .await
    }

    /// How long to wait after the `attempt`-th ambiguous failure before looking the item
    /// up again, or `None` when the policy says to give the job back instead.
    fn wait_before_looking(&self, error: &GraphError, attempt: u32) -> Option<Duration> {
        let policy = &self.inner.policy;
        let wait = error
            .retry_after()
            .unwrap_or_else(|| backoff(policy.backoff_base, attempt));
        (attempt <= policy.max_retries && wait <= policy.max_wait).then_some(wait)
    }

    /// Looks the item up, creates it when absent, and after an answer that leaves open
    /// whether the create was applied (503/504, a connection broken after sending) looks
    /// it up again before creating again: never a second item for one source.
    async fn create_once<L, LF, C, CF>(&self, lookup: L, create: C) -> Result<Created, GraphError>
    where
        L: Fn() -> LF,
        LF: std::future::Future<Output = Result<Option<String>, GraphError>>,
        C: Fn() -> CF,
        CF: std::future::Future<Output = Result<String, GraphError>>,
    {
        if let Some(id) = lookup().await? {
            return Ok(Created { id, existed: true });
        }
        let (id, _) = self.create_looking_up_on_doubt(lookup, create).await?;
        Ok(Created { id, existed: false })
    }

    /// Creates, and after an answer that leaves open whether the create was applied looks
    /// the item up before creating again. Answers the id and whether it was found by that
    /// lookup (rather than answered by the create).
    async fn create_looking_up_on_doubt<L, LF, C, CF>(
        &self,
        lookup: L,
        create: C,
    ) -> Result<(String, bool), GraphError>
    where
        L: Fn() -> LF,
        LF: std::future::Future<Output = Result<Option<String>, GraphError>>,
        C: Fn() -> CF,
        CF: std::future::Future<Output = Result<String, GraphError>>,
    {
        let mut attempt = 0u32;
        loop {
            let error = match create().await {
                Ok(id) => return Ok((id, false)),
                Err(e) if e.is_ambiguous() => e,
                Err(e) => return Err(e),
            };
            attempt += 1;
            let Some(wait) = self.wait_before_looking(&error, attempt) else {
                // The job retries later, and its first step is the lookup.
                return Err(error);
            };
            tracing::info!(error = %error, wait_ms = wait.as_millis() as u64, "a create may have been applied; looking it up before trying again");
            tokio::time::sleep(wait).await;
            if let Some(id) = lookup().await? {
                return Ok((id, true));
            }
        }
    }

    // ----- lookups -----------------------------------------------------------------------

    /// The id of the item in `collection` whose single-value extended property `prop_id`
    /// equals `value` (e.g. [`ORIGIN_PROPERTY_ID`] and the DingTalk id): check before
    /// creating, so a retried job does not create a second item.
    pub async fn find_by_origin(
        &self,
        mailbox: &str,
        collection: Collection,
        prop_id: &str,
        value: &str,
    ) -> Result<Option<String>, GraphError> {
        let filter = format!(
            "singleValueExtendedProperties/Any(ep: ep/id eq {} and ep/value eq {})",
            odata_string(prop_id),
            odata_string(value)
        );
        let answer = self
            .call_json(
                mailbox,
                Method::GET,
                &[collection.segment()],
                &[("$filter", &filter), ("$select", "id"), ("$top", "1")],
                None,
                true,
            )
            .await?;
        Ok(first_id(&answer.json()?))
    }

    /// [`GraphClient::find_by_origin`] with the bridge's own [`ORIGIN_PROPERTY_ID`].
    pub async fn find_by_bridge_origin(
        &self,
        mailbox: &str,
        collection: Collection,
        source_id: &str,
    ) -> Result<Option<String>, GraphError> {
        self.find_by_origin(mailbox, collection, ORIGIN_PROPERTY_ID, source_id)
            .await
    }

    /// `GET {base}/users/{mailbox}/{path}`; `path` may carry a query string, already
    /// encoded (e.g. `mailFolders/inbox/messages?$top=10`). Asks for immutable ids.
    pub async fn get(&self, mailbox: &str, path: &str) -> Result<Value, GraphError> {
        let url = format!(
            "{}/users/{}/{}",
            self.inner.base_url,
            encode(mailbox),
            path.trim_start_matches('/')
        );
        self.get_url(mailbox, &url).await
    }

    /// `GET {base}/users/{mailbox}/{segments…}?{query}` with every segment and query
    /// value encoded here (immutable ids asked for).
    pub async fn get_query(
        &self,
        mailbox: &str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Value, GraphError> {
        self.call_json(mailbox, Method::GET, segments, query, None, true)
            .await?
            .json()
    }

    /// `POST {base}/users/{mailbox}/{segments…}` with a JSON body; answers Graph's JSON
    /// (the created item, with its `webLink` where Graph has one).
    pub async fn post_json(
        &self,
        mailbox: &str,
        segments: &[&str],
        body: &Value,
        immutable_ids: bool,
    ) -> Result<Value, GraphError> {
        self.call_json(
            mailbox,
            Method::POST,
            segments,
            &[],
            Some(body),
            immutable_ids,
        )
        .await?
        .json()
    }

    /// `GET` of an absolute URL Graph gave (`@odata.nextLink`, `@odata.deltaLink`).
    pub async fn get_url(&self, mailbox: &str, url: &str) -> Result<Value, GraphError> {
        let call = Call {
            method: Method::GET,
            url: url.to_string(),
            body: None,
            immutable_ids: true,
            bearer: true,
            content_range: None,
        };
        self.execute(mailbox, call).await?.json()
    }

    // ----- subscriptions (https://learn.microsoft.com/graph/api/resources/subscription) ---

    /// `POST /subscriptions` (body: a `microsoft.graph.subscription` with `changeType`,
    /// `notificationUrl`, `resource`, `expirationDateTime`, and here also `clientState` and
    /// `lifecycleNotificationUrl`). Sent with `Prefer: IdType="ImmutableId"` so that the
    /// notifications name immutable ids (only settable at creation). Graph validates both
    /// URLs before answering `201`. `mailbox` only selects the throttling gate.
    pub async fn create_subscription(
        &self,
        mailbox: &str,
        subscription: &Value,
    ) -> Result<Value, GraphError> {
        self.call_root(
            mailbox,
            Method::POST,
            "subscriptions",
            Some(subscription),
            true,
        )
        .await?
        .json()
    }

    /// `PATCH /subscriptions/{id}` with a new `expirationDateTime` (renews and
    /// reauthorizes). A 404 means Graph deleted the subscription: create a new one.
    pub async fn renew_subscription(
        &self,
        mailbox: &str,
        id: &str,
        expiration: &str,
    ) -> Result<Value, GraphError> {
        let body = json!({ "expirationDateTime": expiration });
        self.call_root(
            mailbox,
            Method::PATCH,
            &format!("subscriptions/{}", encode(id)),
            Some(&body),
            false,
        )
        .await?
        .json()
    }

    /// `DELETE /subscriptions/{id}`; one already gone counts as deleted.
    pub async fn delete_subscription(&self, mailbox: &str, id: &str) -> Result<(), GraphError> {
        match self
            .call_root(
                mailbox,
                Method::DELETE,
                &format!("subscriptions/{}", encode(id)),
                None,
                false,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST /subscriptions/{id}/reauthorize` (no body, `204`): answers a
    /// `reauthorizationRequired` lifecycle event without changing the expiry.
    pub async fn reauthorize_subscription(
        &self,
        mailbox: &str,
        id: &str,
    ) -> Result<(), GraphError> {
        self.call_root(
            mailbox,
            Method::POST,
            &format!("subscriptions/{}/reauthorize", encode(id)),
            None,
            false,
        )
        .await
        .map(|_| ())
    }

    // ----- plumbing ------------------------------------------------------------------------

    /// A call to `{base}/{path}` (not under `/users/{mailbox}`), gated as `mailbox`.
    async fn call_root(
        &self,
        mailbox: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        immutable_ids: bool,
    ) -> Result<Answer, GraphError> {
        let body = match body {
            Some(v) => Some((
                "application/json",
                Bytes::from(
                    serde_json::to_vec(v).map_err(|e| GraphError::Unexpected(e.to_string()))?,
                ),
            )),
            None => None,
        };
        let call = Call {
            method,
            url: format!("{}/{}", self.inner.base_url, path),
            body,
            immutable_ids,
            bearer: true,
            content_range: None,
        };
        self.execute(mailbox, call).await
    }

    async fn delete(
        &self,
        mailbox: &str,
        segments: &[&str],
        immutable: bool,
    ) -> Result<(), GraphError> {
        match self
            .call_json(mailbox, Method::DELETE, segments, &[], None, immutable)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => {
                tracing::debug!(code = e.code(), "delete of an item already gone");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn call_json(
        &self,
        mailbox: &str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        immutable_ids: bool,
    ) -> Result<Answer, GraphError> {
        let mut url = format!("{}/users/{}", self.inner.base_url, encode(mailbox));
        for s in segments {
            url.push('/');
            url.push_str(&encode(s));
        }
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&encode(v));
        }
        let body = match body {
            Some(v) => Some((
                "application/json",
                Bytes::from(
                    serde_json::to_vec(v).map_err(|e| GraphError::Unexpected(e.to_string()))?,
                ),
            )),
            None => None,
        };
        let call = Call {
            method,
            url,
            body,
            immutable_ids,
            bearer: true,
            content_range: None,
        };
        self.execute(mailbox, call).await
    }

    fn gate(&self, mailbox: &str) -> Arc<Gate> {
        let mut gates = self.inner.gates.lock().expect("gates");
        gates
            .entry(mailbox.to_ascii_lowercase())
            .or_insert_with(|| {
                Arc::new(Gate {
                    permits: Arc::new(Semaphore::new(self.inner.policy.per_mailbox_concurrency)),
                    blocked_until: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Sends `call` through the mailbox's gate, retrying throttling and connection
    /// failures within the policy.
    async fn execute(&self, mailbox: &str, call: Call) -> Result<Answer, GraphError> {
        let policy = &self.inner.policy;
        let gate = self.gate(mailbox);
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut retries = 0u32;
        let mut token_renewed = false;
        loop {
            // Wait out a throttling block, then take a slot (and re-check the block: it
            // may have been set while this call waited for the slot).
            let permit = loop {
                if let Some(wait) = gate.blocked_for() {
                    if wait > policy.max_wait {
                        // Not worth holding a worker slot: hand the wait to the job.
                        return Err(GraphError::Api {
                            status: 429,
                            code: "TooManyRequests".into(),
                            message: "this mailbox is throttled; waiting for Graph's Retry-After"
                                .into(),
                            request_id: None,
                            client_request_id: client_request_id.clone(),
                            retry_after: Some(wait),
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
                let permit = gate
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("gate open");
                if gate.blocked_for().is_none() {
                    break permit;
                }
            };
            let token = if call.bearer {
                Some(self.inner.auth.token().await?)
            } else {
                None
            };
            let mut req = self
                .inner
                .http
                .request(call.method.clone(), &call.url)
                .timeout(policy.request_timeout)
                .header(reqwest::header::USER_AGENT, crate::USER_AGENT)
                .header("client-request-id", &client_request_id)
                .header("return-client-request-id", "true");
            if let Some(t) = &token {
                req = req.bearer_auth(t.expose_secret());
            }
            if call.immutable_ids {
                req = req.header("Prefer", "IdType=\"ImmutableId\"");
            }
            if let Some(range) = &call.content_range {
                req = req.header(reqwest::header::CONTENT_RANGE, range);
            }
            if let Some((content_type, bytes)) = &call.body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            let started = Instant::now();
            let sent = req.send().await;
            let result = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    resp.bytes().await.map(|body| (status, headers, body))
                }
                Err(e) => Err(e),
            };
            drop(permit);
            let (status, headers, body) = match result {
                Ok(r) => r,
                Err(e) => {
                    // Only failures before anything was sent are safe to repeat here;
                    // others go back to the job, whose lookups keep it idempotent.
                    let message = transport_message(&e);
                    if e.is_connect() && retries < policy.max_retries {
                        retries += 1;
                        let wait = backoff(policy.backoff_base, retries);
                        tracing::debug!(error = %message, retry_in_ms = wait.as_millis() as u64, "Graph unreachable; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    tracing::warn!(method = %call.method, error = %message, %client_request_id, "Graph request failed");
                    return Err(GraphError::Transport(message));
                }
            };
            let request_id = headers
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            tracing::debug!(
                method = %call.method,
                status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                request_id = request_id.as_deref(),
                %client_request_id,
                "Graph request"
            );
            if status.is_success() {
                return Ok(Answer {
                    status,
                    headers,
                    body,
                });
            }
            let mut error = parse_error(status.as_u16(), &body, request_id, &client_request_id);
            // A POST answered 503/504 may have been applied (a gateway that timed out
            // after Graph stored the item): repeating it here could create a second
            // item, so the caller decides (the `*_once` creates look the item up first).
            // 429 is Graph refusing before doing anything, safe to repeat.
            let repeatable =
                call.method != Method::POST || upstream::refused_before_applying(status.as_u16());
            if upstream::asks_to_wait(status.as_u16()) {
                let said = crate::retry_after::of(&headers);
                let wait = said.unwrap_or_else(|| backoff(policy.backoff_base, retries + 1));
                if said.is_some() {
                    // Everyone using this mailbox waits, not just this call.
                    gate.block(wait);
                }
                if repeatable && retries < policy.max_retries && wait <= policy.max_wait {
                    retries += 1;
                    tracing::info!(
                        status = status.as_u16(),
                        wait_ms = wait.as_millis() as u64,
                        retry = retries,
                        "Graph throttled the request; waiting"
                    );
                    if said.is_none() {
                        tokio::time::sleep(wait).await;
                    }
                    continue;
                }
                if let GraphError::Api { retry_after, .. } = &mut error {
                    *retry_after = Some(wait);
                }
                if repeatable {
                    tracing::warn!(error = %error, retry_after_ms = wait.as_millis() as u64, "Graph still throttling; giving the job back");
                }
                return Err(error);
            }
            if status == StatusCode::UNAUTHORIZED && call.bearer && !token_renewed {
                // The token may have been revoked or expired early: get a new one once.
                token_renewed = true;
                if let Some(t) = &token {
                    self.inner.auth.invalidate(t);
                }
                continue;
            }
            if status.is_client_error() {
                tracing::info!(error = %error, %client_request_id, "Graph refused the request");
            } else {
                tracing::warn!(error = %error, %client_request_id, "Graph request failed");
            }
            return Err(error);
        }
    }
}

/// Doubling back-off with "equal jitter" (half fixed, half random).
fn backoff(base: Duration, attempt: u32) -> Duration {
    let full = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
    let half = full / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// Parses Graph's `{"error":{"code","message","innerError":{"request-id",…}}}`.
fn parse_error(
    status: u16,
    body: &[u8],
    header_request_id: Option<String>,
    client_request_id: &str,
) -> GraphError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error");
    let code = e
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("http_{status}"));
    let message = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(500)
        .collect();
    let inner = e.and_then(|e| e.get("innerError").or_else(|| e.get("innererror")));
    let request_id = header_request_id.or_else(|| {
        inner
            .and_then(|i| i.get("request-id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    GraphError::Api {
        status,
        code,
        message,
        request_id,
        client_request_id: client_request_id.to_string(),
        retry_after: None,
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    // Not reqwest's Display: it carries the URL, which names mailboxes and item ids.
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "the answer broke off".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// An OData string literal: single quotes, inner quotes doubled.
fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn first_id(v: &Value) -> Option<String> {
    v.get("value")?
        .as_array()?
        .first()?
        .get("id")?
        .as_str()
        .map(str::to_string)
}

fn object_mut(v: &mut Value) -> Result<&mut serde_json::Map<String, Value>, GraphError> {
    v.as_object_mut()
        .ok_or_else(|| GraphError::Unexpected("the body to send must be a JSON object".into()))
}

fn push_extended_property(v: &mut Value, id: &str, value: &str) -> Result<(), GraphError> {
    let prop = json!({ "id": id, "value": value });
    let obj = object_mut(v)?;
    match obj
        .get_mut("singleValueExtendedProperties")
        .and_then(Value::as_array_mut)
    {
        Some(list) => {
            list.retain(|p| p.get("id").and_then(Value::as_str) != Some(id));
            list.push(prop);
        }
        None => {
            obj.insert(
                "singleValueExtendedProperties".into(),
                Value::Array(vec![prop]),
            );
        }
    }
    Ok(())
}

/// The attachment id in an upload session's final `Location`, e.g.
/// `https://outlook.office.com/api/v2.0/Users('…')/Messages('…')/Attachments('AAMk…')`.
fn attachment_id_from_location(location: &str) -> Option<String> {
    let start = location.rfind("Attachments('")? + "Attachments('".len();
    let rest = &location[start..];
    let end = rest.find("')")?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_strings_double_quotes_and_components_are_encoded() {
        assert_eq!(odata_string("O'Brien"), "'O''Brien'");
        assert_eq!(encode("a b/c'd@e.com"), "a%20b%2Fc%27d%40e.com");
    }

    #[test]
    fn graph_errors_keep_code_and_request_id() {
        let body = br#"{"error":{"code":"ErrorItemNotFound","message":"The specified object was not found in the store.","innerError":{"date":"2026-01-05T10:00:00","request-id":"rid-1","client-request-id":"c1"}}}"#;
        let e = parse_error(404, body, None, "c1");
        assert_eq!(e.code(), Some("ErrorItemNotFound"));
        assert!(e.is_not_found());
        match &e {
            GraphError::Api { request_id, .. } => assert_eq!(request_id.as_deref(), Some("rid-1")),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("rid-1"), "{e}");
        let e = parse_error(502, b"<html>bad gateway</html>", Some("h".into()), "c1");
        assert_eq!(e.code(), Some("http_502"));
        assert!(e.is_transient());
    }

    #[test]
    fn extended_property_is_added_once() {
        let mut m = json!({"subject": "s", "singleValueExtendedProperties": [{"id": "Integer 0x0E07", "value": "4"}]});
        push_extended_property(&mut m, MESSAGE_FLAGS_PROPERTY_ID, "1").expect("object");
        assert_eq!(
            m["singleValueExtendedProperties"],
            json!([{"id": "Integer 0x0E07", "value": "1"}])
        );
    }

    #[test]
    fn location_gives_the_attachment_id() {
        assert_eq!(
            attachment_id_from_location(
                "https://outlook.office.com/api/v2.0/Users('a@b')/Messages('AAM=')/Attachments('AAMkAtt=')"
            )
            .as_deref(),
            Some("AAMkAtt=")
        );
        assert_eq!(attachment_id_from_location("https://x/y"), None);
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        for _ in 0..50 {
            let d = backoff(Duration::from_millis(100), 1).as_millis();
            assert!((50..=100).contains(&d), "{d}");
            let d = backoff(Duration::from_millis(100), 3).as_millis();
            assert!((200..=400).contains(&d), "{d}");
        }
    }

    #[test]
    fn default_chunk_is_a_multiple_of_320_kib_below_4_mb() {
        let c = RetryPolicy::default().upload_chunk;
        assert!(c.is_multiple_of(UPLOAD_CHUNK_UNIT));
        assert!(c <= 4 * 1024 * 1024);
    }
}
