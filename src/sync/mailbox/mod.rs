//! DingTalk Mail → Outlook: the sync loop of the `[[mailbox_routes]]` that go
//! `to_outlook` (or `both`).
//!
//! One IMAP connection per route across all instances: the instance holding the route's
//! store lease ([`state::lease_name`], renewed while it runs) connects; the others wait
//! and take over when the holder stops renewing. Per mapped folder the connection opens
//! it read-only (`EXAMINE`: nothing, `\Seen` included, changes), reads `UIDVALIDITY` and
//! imports every message above the folder's stored mark ([`state::FolderMark`]), in UID
//! order: fetched with `BODY.PEEK[]`, rendered by [`super::mail_import`], written with
//! [`GraphClient::import_mail`] after one `internetMessageId` lookup per batch (so a mail
//! already in the mailbox, or written before a crash, is mapped and not doubled), its id
//! pair stored, and only then the mark moved. Then it waits: `IDLE` when the server has
//! it (re-issued every `idle_interval_secs`), otherwise a poll every
//! `poll_interval_secs`. Any IMAP error closes the connection and opens a new one after a
//! growing pause. A changed `UIDVALIDITY` starts the folder again from the route's start
//! date, matching by `Message-ID`.
//!
//! Read state goes both ways once per change ([`read`]): a route that writes to
//! DingTalk Mail (`both`) opens its folders with `SELECT` instead, to store `\Seen`.
//!
//! Outlook → DingTalk Mail ([`to_dingtalk`], routes going `to_dingtalk` or `both`) runs
//! in the same loop, on the same connection, after each folder's DingTalk side; a Graph
//! notification for the route's Outlook folder sets [`outlook::wake_key`], which ends
//! the wait early. A `to_dingtalk` route imports nothing to Outlook.

mod deletes;
pub mod outlook;
mod read;
pub mod state;
mod to_dingtalk;
mod triggers;
pub mod undo;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::state::{FolderMark, RouteHealth};
use super::mail_import::{self, ImportContext};
use crate::{
    config::MailboxRouteConfig,
    graph::{GraphClient, GraphError, ImportedAs, Precheck},
    mail::{
        FolderState, IdleOutcome, ImapClient, ImapError, ImapSettings, MailboxName, ServerEvent,
    },
    metrics,
    store::{AuditEntry, SharedStore, Side, StoreError},
};

/// Messages fetched and looked up in Outlook together.
const BATCH: usize = 10;
/// Largest total size fetched in one `UID FETCH` (larger messages come one by one).
const FETCH_BYTES: u64 = 8 * 1024 * 1024;
/// First pause after a failed connection; doubled each time up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest pause between two connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The metric label of this direction.
const DIRECTION: &str = "to_outlook";

/// The running sync loops; [`MailboxSync::shutdown`] stops them and gives the leases back.
pub struct MailboxSync {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl MailboxSync {
    /// Starts one loop per mailbox route (whichever its direction). A route that cannot
    /// run (no Graph credentials, no password) is logged and reported as unhealthy.
    pub async fn start(
        store: SharedStore,
        graph: Option<Arc<GraphClient>>,
        routes: &[MailboxRouteConfig],
    ) -> Option<MailboxSync> {
        let routes: Vec<&MailboxRouteConfig> = routes.iter().collect();
        if routes.is_empty() {
            return None;
        }
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        for route in routes {
            let problem = match (&graph, ImapSettings::from_config(&route.imap)) {
                (None, _) => Some(
                    "Microsoft Graph is not configured (set DINGBRIDGE_GRAPH_TENANT_ID, DINGBRIDGE_GRAPH_CLIENT_ID and a credential): DingTalk Mail cannot be written to Outlook"
                        .to_string(),
                ),
                (_, Err(e)) => Some(e.to_string()),
                (Some(g), Ok(settings)) => {
                    let sync = Arc::new(RouteSync {
                        store: store.clone(),
                        graph: g.clone(),
                        route: route.clone(),
                        settings,
                    });
                    tasks.push(tokio::spawn(sync.run(cancel.clone())));
                    None
                }
            };
            if let Some(problem) = problem {
                tracing::error!(route = %route.name, error = %problem, "mailbox route not synced");
                let health = RouteHealth {
                    ok: false,
                    kind: Some("config".into()),
                    error: Some(problem),
                    at_ms: crate::store::now_ms(),
                };
                let _ = put_health(&store, &route.name, &health, None).await;
            }
        }
        Some(MailboxSync { cancel, tasks })
    }

    /// Stops every loop (an import in flight is dropped at its next await; its mark was
    /// not moved, so it is looked up again next time) and gives the leases back.
    pub async fn shutdown(self, timeout: Duration) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(timeout, futures::future::join_all(self.tasks)).await;
    }
}

/// The health each mailbox route last reported (`None`: nothing known yet, e.g. no
/// instance holds its connection), for `/readyz`.
pub async fn route_health(
    store: &SharedStore,
    routes: &[MailboxRouteConfig],
) -> Vec<(String, Option<RouteHealth>)> {
    let mut out = Vec::new();
    for r in routes {
        let health = match store.kv_get(&state::health_key(&r.name)).await {
            Ok(Some(text)) => serde_json::from_str(&text).ok(),
            _ => None,
        };
        out.push((r.name.clone(), health));
    }
    out
}

async fn put_health(
    store: &SharedStore,
    route: &str,
    health: &RouteHealth,
    ttl: Option<Duration>,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(health).unwrap_or_default();
    store.kv_put(&state::health_key(route), &text, ttl).await
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl SyncError {
    fn kind(&self) -> &'static str {
        match self {
            SyncError::Imap(e) if e.is_login() => "login",
            SyncError::Imap(e) if e.is_tls() => "tls",
            SyncError::Imap(e) if e.is_connection() => "connection",
            SyncError::Imap(_) => "imap",
            SyncError::Graph(_) => "graph",
            SyncError::Store(_) => "store",
        }
    }
}

/// One route's loop.
struct RouteSync {
    store: SharedStore,
    graph: Arc<GraphClient>,
    route: MailboxRouteConfig,
    settings: ImapSettings,
}

/// One mapped folder during a connection.
struct FolderRun {
    /// As configured (`INBOX` normalised): in keys, origins and logs.
    label: String,
    name: MailboxName,
    outlook: String,
}

impl RouteSync {
    fn name(&self) -> &str {
        &self.route.name
    }

    /// Opens a folder: read-only unless the route writes `\Seen` to DingTalk Mail.
    async fn open(
        &self,
        client: &mut ImapClient,
        folder: &MailboxName,
    ) -> Result<FolderState, ImapError> {
        match self.route.direction.to_dingtalk() {
            true => client.select(folder).await,
            false => client.examine(folder).await,
        }
    }

    /// Holds the lease while it can and syncs under it; waits for it otherwise.
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let lease = state::lease_name(self.name());
        let ttl = self.route.lease_ttl();
        let renew_every = ttl / 3;
        let retry_every = renew_every.min(Duration::from_secs(2));
        let token = uuid::Uuid::new_v4().to_string();
        loop {
            let held = tokio::select! {
                r = self.store.lease_acquire(&lease, &token, ttl) => r,
                _ = stop.cancelled() => break,
            };
            match held {
                Ok(true) => {}
                Ok(false) => {
                    tokio::select! {
                        _ = tokio::time::sleep(retry_every) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
                Err(e) => {
                    tracing::warn!(route = %self.name(), error = %e, "cannot reach the store for the mailbox lease");
                    tokio::select! {
                        _ = tokio::time::sleep(retry_every) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            }
            tracing::info!(route = %self.name(), "this instance now holds the route's IMAP connection");
            let lost = CancellationToken::new();
            let renewal = tokio::spawn(renew(
                self.store.clone(),
                lease.clone(),
                token.clone(),
                ttl,
                renew_every,
                lost.clone(),
            ));
            tokio::select! {
                _ = self.clone().connections() => {}
                _ = lost.cancelled() => {
                    tracing::warn!(route = %self.name(), "lost the mailbox lease; another instance takes over");
                }
                _ = stop.cancelled() => {}
            }
            renewal.abort();
            metrics::set_mailbox_idle(self.name(), false);
            if stop.is_cancelled() {
                break;
            }
        }
        let _ = self.store.lease_release(&lease, &token).await;
        metrics::set_mailbox_idle(self.name(), false);
        tracing::info!(route = %self.name(), "mailbox sync stopped");
    }

    /// Connects, syncs and waits, again and again; pauses longer after each failure.
    async fn connections(self: Arc<Self>) {
        let mut failures: u32 = 0;
        loop {
            let started = Instant::now();
            let err = self.connection().await;
            metrics::set_mailbox_idle(self.name(), false);
            metrics::record_mailbox_error(self.name(), err.kind());
            // A connection that synced for a while was a success: start the pauses over.
            if started.elapsed() > Duration::from_secs(60) {
                failures = 0;
            }
            let pause = BACKOFF_BASE
                .saturating_mul(2u32.saturating_pow(failures.min(16)))
                .min(BACKOFF_MAX);
            failures = failures.saturating_add(1);
            tracing::warn!(
                route = %self.name(),
                kind = err.kind(),
                error = %err,
                retry_in_ms = pause.as_millis() as u64,
                "DingTalk Mail sync interrupted; reconnecting"
            );
            self.report(RouteHealth {
                ok: false,
                kind: Some(err.kind().into()),
                error: Some(err.to_string()),
                at_ms: crate::store::now_ms(),
            })
            .await;
            tokio::time::sleep(pause).await;
        }
    }

    async fn report(&self, health: RouteHealth) {
        // Kept a while after the holder stops reporting (it died): then nothing is known.
        let ttl = self.route.lease_ttl() * 3 + self.route.idle_interval();
        if let Err(e) = put_health(&self.store, self.name(), &health, Some(ttl)).await {
            tracing::debug!(route = %self.name(), error = %e, "mailbox health not stored");
        }
    }

    /// One connection: log in, then sync every folder and wait for more, until an error.
    async fn connection(&self) -> SyncError {
        let mut client = match ImapClient::connect(&self.settings).await {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let idle = client.capabilities().idle;
        metrics::set_mailbox_idle(self.name(), false);
        tracing::info!(route = %self.name(), idle, server = %self.settings.address(), "connected to DingTalk Mail");
        self.report(RouteHealth {
            ok: true,
            kind: None,
            error: None,
            at_ms: crate::store::now_ms(),
        })
        .await;
        let folders: Vec<FolderRun> = self
            .route
            .folders
            .iter()
            .map(|p| {
                let label = state::folder_label(&p.dingtalk);
                FolderRun {
                    name: MailboxName::from_display(&label),
                    label,
                    outlook: p.outlook.trim().to_string(),
                }
            })
            .collect();
        // After a (re)connection the first message may be one a dropped connection was
        // writing: look it up even without a Message-ID.
        let mut fresh = true;
        let mut folder_ids: HashMap<String, String> = HashMap::new();
        let mut reported = Instant::now();
        // UIDs whose flags the server reported changed on its own, per folder index.
        let mut flagged: Vec<HashSet<u32>> = vec![HashSet::new(); folders.len()];
        let mut deletes_logged = false;
        loop {
            // The stored health expires unless renewed (its holder may die).
            if reported.elapsed() >= self.route.lease_ttl() {
                self.report(RouteHealth {
                    ok: true,
                    kind: None,
                    error: None,
                    at_ms: crate::store::now_ms(),
                })
                .await;
                reported = Instant::now();
            }
            for (i, f) in folders.iter().enumerate() {
                let folder_id = match folder_ids.get(&f.outlook) {
                    Some(id) => id.clone(),
                    None => match self
                        .graph
                        .mail_folder(&self.route.mailbox, &f.outlook)
                        .await
                    {
                        Ok(id) => {
                            folder_ids.insert(f.outlook.clone(), id.clone());
                            id
                        }
                        Err(e) => return e.into(),
                    },
                };
                let changed = std::mem::take(&mut flagged[i]);
                if self.route.direction.to_outlook()
                    && let Err(e) = self
                        .sync_folder(&mut client, f, &folder_id, &mut fresh, &changed)
                        .await
                {
                    return e;
                }
                if self.route.direction.to_dingtalk()
                    && let Err(e) = self.relay_outlook(&mut client, f, &folder_id).await
                {
                    return e;
                }
            }
            if self.route.direction.to_outlook() {
                let removals =
                    self.relay_removals(&mut client, &folders, &folder_ids, &mut deletes_logged);
                if let Err(e) = removals.await {
                    return e;
                }
            }
            metrics::set_mailbox_backlog(self.name(), 0);
            if self.route.direction.to_outlook() {
                metrics::set_mailbox_synced_at(self.name(), DIRECTION);
            }
            // Wait on the first folder; with several, come back for the others in time.
            // Outlook's read states are polled (routes writing to DingTalk Mail): in time too.
            let wait = if folders.len() > 1 || !idle || self.route.direction.to_dingtalk() {
                self.route.poll_interval().min(self.route.idle_interval())
            } else {
                self.route.idle_interval()
            };
            if idle {
                if folders.len() > 1
                    && let Err(e) = self.open(&mut client, &folders[0].name).await
                {
                    return e.into();
                }
                metrics::set_mailbox_idle(self.name(), true);
                let waited = client.idle_until(wait, self.woken()).await;
                metrics::set_mailbox_idle(self.name(), false);
                match waited {
                    Err(e) => return e.into(),
                    Ok(IdleOutcome::Changed(events)) => flagged[0].extend(flag_uids(&events)),
                    Ok(IdleOutcome::Timeout) => {}
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.woken() => {}
                }
                match client.noop().await {
                    Err(e) => return e.into(),
                    // The last folder synced is the one open.
                    Ok(events) => {
                        if let Some(last) = flagged.last_mut() {
                            last.extend(flag_uids(&events));
                        }
                    }
                }
            }
        }
    }

    /// Imports the new messages of one folder.
    async fn sync_folder(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        folder_id: &str,
        fresh: &mut bool,
        flagged: &HashSet<u32>,
    ) -> Result<(), SyncError> {
        let opened = self.open(client, &f.name).await?;
        let key = state::mark_key(self.name(), &f.label);
        let stored: Option<FolderMark> = match self.store.kv_get(&key).await? {
            // An unreadable mark must not restart the folder from scratch (`new` would
            // skip mail): the route stops and says why.
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("mailbox mark {key}: {e}")))?,
            ),
            None => None,
        };
        let top = match opened.uid_next {
            Some(next) => next.saturating_sub(1),
            None => client.uid_search("ALL").await?.last().copied().unwrap_or(0),
        };
        let mut mark = match stored {
            Some(m) if m.uid_validity == opened.uid_validity => m,
            Some(old) => {
                let reset = old.after_reset(opened.uid_validity, top);
                tracing::warn!(
                    route = %self.name(),
                    folder = %f.label,
                    old = old.uid_validity,
                    new = opened.uid_validity,
                    "UIDVALIDITY changed: matching the folder's mail again by Message-ID"
                );
                self.audit(
                    "mailbox.uidvalidity_reset",
                    json!({
                        "route": self.name(), "folder": f.label,
                        "old_uid_validity": old.uid_validity,
                        "new_uid_validity": opened.uid_validity,
                    }),
                )
                .await?;
                self.save_mark(&key, &reset).await?;
                reset
            }
            None => {
                let first =
                    FolderMark::first(self.route.start, opened.uid_validity, top, Utc::now());
                self.save_mark(&key, &first).await?;
                first
            }
        };
        let mut uids = Vec::new();
        if mark.initial_pending()
            && let Some(since) = mark.since_ms
        {
            uids = client
                .uid_search(&format!(
                    "UID {}:{} SINCE {}",
                    mark.mark + 1,
                    mark.initial_top,
                    state::imap_since(since)
                ))
                .await?;
        }
        let above = mark.mark.max(mark.initial_top) + 1;
        uids.extend(
            client
                .uid_search(&format!("UID {above}:*"))
                .await?
                .into_iter()
                // `N:*` also names the last message when every UID is below N.
                .filter(|&u| u >= above),
        );
        uids.retain(|&u| u > mark.mark);
        uids.sort_unstable();
        uids.dedup();
        let mut left = uids.len();
        metrics::set_mailbox_backlog(self.name(), left);
        for batch in uids.chunks(BATCH) {
            self.import_batch(client, f, folder_id, &key, &mut mark, batch, fresh)
                .await?;
            left -= batch.len();
            metrics::set_mailbox_backlog(self.name(), left);
        }
        if mark.mark < mark.initial_top {
            // The first pass is done; what it left out (older than the start) stays out.
            mark.mark = mark.initial_top;
            self.save_mark(&key, &mark).await?;
        }
        self.sync_read(client, f, &key, &mut mark, &opened, flagged)
            .await
    }

    async fn save_mark(&self, key: &str, mark: &FolderMark) -> Result<(), StoreError> {
        let text = serde_json::to_string(mark).unwrap_or_default();
        self.store.kv_put(key, &text, None).await
    }

    async fn audit(&self, action: &str, detail: serde_json::Value) -> Result<(), StoreError> {
        self.store
            .audit_append(&AuditEntry::now(action, detail))
            .await
    }

    /// Fetches, looks up and imports a few messages, moving the mark after each.
    #[allow(clippy::too_many_arguments)]
    async fn import_batch(
        &self,
        client: &mut ImapClient,
        f: &FolderRun,
        folder_id: &str,
        key: &str,
        mark: &mut FolderMark,
        batch: &[u32],
        fresh: &mut bool,
    ) -> Result<(), SyncError> {
        let metas = client.fetch_meta(batch).await?;
        let wanted: Vec<_> = metas
            .iter()
            .filter(|m| mark.wants(m.uid, m.internal_date.map(|d| d.with_timezone(&Utc))))
            .collect();
        // Fetched in groups of a bounded size; a large message alone.
        let mut messages = Vec::new();
        let mut group: Vec<u32> = Vec::new();
        let mut size = 0u64;
        for m in &wanted {
            if !group.is_empty() && size + m.size > FETCH_BYTES {
                messages.extend(client.fetch(&group, size).await?);
                group.clear();
                size = 0;
            }
            group.push(m.uid);
            size += m.size;
        }
        if !group.is_empty() {
            messages.extend(client.fetch(&group, size).await?);
        }
        let seen: HashMap<u32, bool> = messages
            .iter()
            .map(|m| (m.meta.uid, m.meta.seen()))
            .collect();
        let mut recent = self.recent_pairs(f, mark.uid_validity).await?;
        let rendered: Vec<_> = messages
            .iter()
            .map(|m| {
                let ctx = ImportContext {
                    is_read: m.meta.seen(),
                    internal_date: m.meta.internal_date.map(|d| d.with_timezone(&Utc)),
                };
                (m.meta.uid, mail_import::render(&m.raw, &ctx))
            })
            .collect();
        let ns = state::pair_ns(self.name());
        // Already imported (a crash between the pair and the mark): only the mark moves.
        let mut done = HashMap::new();
        for (uid, _) in &rendered {
            let left = state::pair_left(&f.label, mark.uid_validity, *uid);
            if let Some(id) = self.store.map_get(&ns, Side::Left, &left).await? {
                done.insert(*uid, id);
            }
        }
        let ids: Vec<&str> = rendered
            .iter()
            .filter(|(uid, _)| !done.contains_key(uid))
            .filter_map(|(_, r)| r.mail.internet_message_id.as_deref())
            .collect();
        let mut found = if ids.is_empty() {
            HashMap::new()
        } else {
            self.graph
                .find_messages_by_internet_ids(&self.route.mailbox, &ids)
                .await?
        };
        let mut by_uid: HashMap<u32, _> = rendered.into_iter().collect();
        for &uid in batch {
            if uid <= mark.mark {
                continue;
            }
            let Some(r) = by_uid.remove(&uid) else {
                // Left out (before the start) or gone since the search.
                mark.mark = uid;
                self.save_mark(key, mark).await?;
                continue;
            };
            if done.contains_key(&uid) {
                mark.mark = uid;
                self.save_mark(key, mark).await?;
                continue;
            }
            let origin = mail_import::mail_origin(
                self.name(),
                r.mail.internet_message_id.as_deref(),
                &f.label,
                mark.uid_validity,
                uid,
            );
            let precheck = match &r.mail.internet_message_id {
                Some(imid) => Precheck::Known(found.remove(imid.as_str()).unwrap_or_default()),
                None if *fresh => Precheck::LookUp,
                None => Precheck::Known(Vec::new()),
            };
            *fresh = false;
            let imported = match self
                .graph
                .import_mail(&self.route.mailbox, folder_id, &r.mail, &origin, precheck)
                .await
            {
                Ok(i) => i,
                Err(e) if !refused_mail(&e) => return Err(e.into()),
                Err(e) => {
                    // This message cannot be written (Graph refuses it): recorded, skipped,
                    // so that the rest of the folder still arrives.
                    tracing::error!(route = %self.name(), folder = %f.label, uid, error = %e, "mail not imported");
                    metrics::record_mailbox_error(self.name(), "import_refused");
                    self.audit(
                        "mailbox.import_failed",
                        json!({
                            "route": self.name(), "folder": f.label,
                            "uid_validity": mark.uid_validity, "uid": uid,
                            "message_id": r.mail.internet_message_id,
                            "error": e.to_string(),
                        }),
                    )
                    .await?;
                    mark.mark = uid;
                    self.save_mark(key, mark).await?;
                    continue;
                }
            };
            let left = state::pair_left(&f.label, mark.uid_validity, uid);
            self.store.map_put(&ns, &left, &imported.id).await?;
            // The state written with the mail: later changes are relayed from it.
            if let Some(&read) = seen.get(&uid) {
                self.put_read(&left, read).await?;
            }
            recent.push(mark.uid_validity, uid, &imported.id);
            self.save_recent(f, &recent).await?;
            let how = match imported.how {
                ImportedAs::Created => "created",
                ImportedAs::Completed => "completed",
                ImportedAs::Matched => "matched",
            };
            self.audit(
                "mailbox.imported",
                json!({
                    "route": self.name(), "direction": DIRECTION, "folder": f.label,
                    "uid_validity": mark.uid_validity, "uid": uid,
                    "graph_id": imported.id, "how": how,
                    "message_id": r.mail.internet_message_id,
                    "origin": origin, "problems": r.problems,
                }),
            )
            .await?;
            self.publish_received(f, mark.uid_validity, uid, &r.mail, &imported.id)
                .await?;
            mark.mark = uid;
            self.save_mark(key, mark).await?;
            metrics::record_mail_synced(self.name(), DIRECTION, how);
            metrics::set_mailbox_synced_at(self.name(), DIRECTION);
            tracing::info!(route = %self.name(), folder = %f.label, uid, how, graph_id = %imported.id, "DingTalk mail synced to Outlook");
        }
        Ok(())
    }
}

/// The UIDs whose flags changed among events the server sent on its own (a server that
/// leaves the UID out is covered by the next re-check or `CHANGEDSINCE`).
fn flag_uids(events: &[ServerEvent]) -> impl Iterator<Item = u32> + '_ {
    events.iter().filter_map(|e| match e {
        ServerEvent::Flags { uid, .. } => *uid,
        _ => None,
    })
}

/// Whether Graph refused this one mail (its content), rather than the mailbox, the
/// folder, the credentials or the connection: only then is the mail skipped (audited) so
/// that the rest of the folder still arrives; anything else is retried later.
fn refused_mail(e: &GraphError) -> bool {
    match e {
        GraphError::AttachmentTooLarge { .. } => true,
        GraphError::Api { status, .. } => matches!(status, 400 | 413 | 415 | 422),
        _ => false,
    }
}

/// Renews the lease every `every`; cancels `lost` when another instance holds it or the
/// store stayed unreachable for the lease's lifetime.
async fn renew(
    store: SharedStore,
    lease: String,
    token: String,
    ttl: Duration,
    every: Duration,
    lost: CancellationToken,
) {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match store.lease_renew(&lease, &token, ttl).await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(lease = %lease, error = %e, "cannot renew the mailbox lease");
                if last_ok.elapsed() >= ttl {
                    break;
                }
            }
        }
    }
    lost.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> GraphError {
        GraphError::Api {
            status,
            code: "x".into(),
            message: String::new(),
            request_id: None,
            client_request_id: "c".into(),
            retry_after: None,
        }
    }

    #[test]
    fn only_a_mail_graph_refuses_is_skipped_everything_else_is_retried() {
        assert!(refused_mail(&api(400)));
        assert!(refused_mail(&GraphError::AttachmentTooLarge {
            name: "a".into(),
            size: 1,
            max: 0
        }));
        for status in [401, 403, 404, 429, 500, 503] {
            assert!(!refused_mail(&api(status)), "{status}");
        }
        assert!(!refused_mail(&GraphError::Transport("reset".into())));
    }

    #[test]
    fn errors_say_what_kind_of_problem_readyz_shows() {
        let login = SyncError::Imap(ImapError::Login {
            user: "u".into(),
            server: "NO".into(),
        });
        assert_eq!(login.kind(), "login");
        let gone = SyncError::Imap(ImapError::Connect {
            addr: "h:993".into(),
            reason: "refused".into(),
        });
        assert_eq!(gone.kind(), "connection");
        assert_eq!(SyncError::Graph(api(404)).kind(), "graph");
    }
}
