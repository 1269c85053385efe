//! `dingbridge doctor`: what a consultant runs after filling in the configuration. Every
//! check says what it found and, when it failed, what to change; nothing is written
//! anywhere (the DingTalk token call counts against the monthly budget like any call).

use std::{collections::BTreeSet, fmt, sync::Arc, time::Duration};

use crate::{
    config::{Config, MailboxRouteConfig, TlsMode},
    dingtalk::client::{DingTalkClient, DingTalkSettings},
    graph::{GraphClient, GraphError},
    mail::{ImapClient, ImapSettings, backup},
    store::{self, SharedStore},
    sync::mailbox::state::{FolderMark, folder_label, mark_key},
};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Does not work; the detail says what to change.
    Fail,
    /// Not configured, so not checked.
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that width and alignment apply.
        f.pad(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        })
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. `graph mailbox ops@contoso.com`.
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// What was found (never a secret).
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<5} {:<40} {}", self.status, self.name, self.detail)
    }
}

/// What a mailbox probe's error means for the person setting the bridge up.
pub fn explain_mailbox_error(e: &GraphError) -> String {
    match (e.status(), e.code()) {
        (_, Some("MailboxNotEnabledForRESTAPI" | "ResourceNotFound" | "ErrorInvalidUser")) => {
            format!(
                "{e} — the mailbox does not exist, has no Exchange Online licence, or is on-premises"
            )
        }
        (Some(403), _) => format!(
            "{e} — the app may not read this mailbox: grant the Mail/Calendars/Contacts/Tasks application permissions with admin consent, and include the mailbox in the application access policy or RBAC scope if one limits the app"
        ),
        _ => e.to_string(),
    }
}

/// Runs every check the configuration calls for.
pub async fn run(config: &Config) -> Vec<Check> {
    let mut checks = vec![Check::new(
        "configuration",
        Status::Ok,
        format!(
            "valid; {} route(s), {} mailbox route(s), listening on {}",
            config.routes.len(),
            config.mailbox_routes.len(),
            config.listen
        ),
    )];
    let opened = match config.store_settings() {
        Ok(settings) => store::open(&settings).await,
        Err(e) => Err(store::StoreError::Unavailable(e.to_string())),
    };
    let store = match opened {
        Ok(s) => s,
        Err(e) => {
            checks.push(Check::new("store", Status::Fail, e.to_string()));
            return checks;
        }
    };
    checks.push(match (store.backend(), store.ping().await) {
        ("memory", _) => Check::new(
            "store",
            Status::Warn,
            "embedded memory store: one instance only, nothing survives a restart (set DINGBRIDGE_STORE_URL=redis://… for production)",
        ),
        (_, Ok(())) => Check::new("store", Status::Ok, "Redis answers"),
        (_, Err(e)) => Check::new("store", Status::Fail, e.to_string()),
    });
    let http = match reqwest::Client::builder()
        .user_agent(crate::USER_AGENT)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            checks.push(Check::new("http client", Status::Fail, e.to_string()));
            return checks;
        }
    };
    checks.extend(graph_checks(config, http.clone()).await);
    for route in &config.mailbox_routes {
        let first_sync = first_sync_ms(&store, route).await;
        checks.extend(mailbox_route_checks(route, first_sync).await);
    }
    let dingtalk = DingTalkSettings::from_config(&config.dingtalk)
        .map(|s| Arc::new(DingTalkClient::new(http, s, store.clone())));
    checks.push(match dingtalk {
        None => Check::new(
            "dingtalk app",
            Status::Skip,
            "no app_key/app_secret: DingTalk server API calls (calendar, todo, app robot) are off",
        ),
        Some(client) => match client.access_token().await {
            Ok(_) => Check::new("dingtalk app", Status::Ok, "access token obtained"),
            Err(e) => Check::new(
                "dingtalk app",
                Status::Fail,
                format!("{e} — check dingtalk.app_key and dingtalk.app_secret"),
            ),
        },
    });
    checks
}

async fn graph_checks(config: &Config, http: reqwest::Client) -> Vec<Check> {
    let graph = match GraphClient::from_config(&config.graph, http) {
        Ok(Some(g)) => g,
        Ok(None) => {
            return vec![Check::new(
                "graph",
                Status::Skip,
                "no tenant_id/client_id and credential: nothing is relayed to or from Outlook",
            )];
        }
        Err(e) => return vec![Check::new("graph", Status::Fail, e.to_string())],
    };
    if let Err(e) = graph.auth().token().await {
        return vec![Check::new("graph token", Status::Fail, e.to_string())];
    }
    let mut checks = vec![Check::new(
        "graph token",
        Status::Ok,
        "client credentials accepted by Entra ID",
    )];
    // Mailbox routes too: their Outlook side must be an Exchange Online mailbox.
    let mailboxes: BTreeSet<String> = config
        .routes
        .iter()
        .map(|r| r.mailbox.to_ascii_lowercase())
        .chain(
            config
                .mailbox_routes
                .iter()
                .map(|r| r.mailbox.to_ascii_lowercase()),
        )
        .collect();
    for mailbox in mailboxes {
        let name = format!("graph mailbox {mailbox}");
        checks.push(
            match graph.get(&mailbox, "mailFolders/inbox?$select=id").await {
                Ok(_) => Check::new(name, Status::Ok, "the app can read it"),
                Err(e) => Check::new(name, Status::Fail, explain_mailbox_error(&e)),
            },
        );
    }
    checks
}

/// The DingTalk side of a mailbox route: the IMAP server is reachable, TLS is valid, the
/// login works, which extensions it offers, the folders exist, and a backup was made.
/// `first_sync`: when the route first synced (Unix ms), if it has.
async fn mailbox_route_checks(route: &MailboxRouteConfig, first_sync: Option<i64>) -> Vec<Check> {
    let name = |what: &str| format!("mail {} {what}", route.name);
    let mut checks = Vec::new();
    let settings = match ImapSettings::from_config(&route.imap) {
        Ok(s) => s,
        Err(e) => return vec![Check::new(name("imap"), Status::Fail, e.to_string())],
    };
    let addr = settings.address();
    let reachable = Check::new(name("reachable"), Status::Ok, format!("{addr} answers"));
    let tls_ok = match settings.tls {
        TlsMode::None => Check::new(
            name("tls"),
            Status::Warn,
            "no TLS (tls = \"none\", for tests): the client password travels in clear text",
        ),
        TlsMode::Implicit | TlsMode::Starttls => Check::new(
            name("tls"),
            Status::Ok,
            format!(
                "{} with a valid certificate for {}",
                if settings.tls == TlsMode::Implicit {
                    "implicit TLS"
                } else {
                    "STARTTLS"
                },
                settings.host
            ),
        ),
    };
    let mut client = match ImapClient::connect(&settings).await {
        Ok(c) => c,
        Err(e) if e.is_tls() => {
            checks.push(reachable);
            checks.push(Check::new(name("tls"), Status::Fail, e.to_string()));
            checks.push(backup_check(route, first_sync));
            return checks;
        }
        Err(e) if e.is_login() => {
            checks.extend([reachable, tls_ok]);
            checks.push(Check::new(name("login"), Status::Fail, e.to_string()));
            checks.push(backup_check(route, first_sync));
            return checks;
        }
        Err(e) => {
            checks.push(Check::new(
                name("reachable"),
                Status::Fail,
                format!(
                    "{e} — check imap.host, imap.port and imap.tls against the admin console (通讯录 → 邮箱管理 → 安全策略 → 第三方客户端管理)"
                ),
            ));
            checks.push(backup_check(route, first_sync));
            return checks;
        }
    };
    checks.extend([
        reachable,
        tls_ok,
        Check::new(
            name("login"),
            Status::Ok,
            format!("logged in as {}", settings.user),
        ),
    ]);
    let caps = client.capabilities().clone();
    let missing = caps.missing();
    checks.push(match missing.is_empty() {
        true => Check::new(
            name("capabilities"),
            Status::Ok,
            "IDLE, UIDPLUS, CONDSTORE, MOVE",
        ),
        false => Check::new(
            name("capabilities"),
            Status::Warn,
            missing
                .iter()
                .map(|(cap, without)| format!("no {cap}: {without}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    });
    checks.push(match client.list_folders().await {
        Err(e) => Check::new(name("folders"), Status::Fail, e.to_string()),
        Ok(folders) => {
            let absent: Vec<&str> = route
                .folders
                .iter()
                .map(|p| p.dingtalk.trim())
                .filter(|want| {
                    !folders.iter().any(|f| {
                        f.name.display == *want
                            || f.name.wire == *want
                            || (want.eq_ignore_ascii_case("INBOX")
                                && f.name.wire.eq_ignore_ascii_case("INBOX"))
                    })
                })
                .collect();
            if absent.is_empty() {
                Check::new(
                    name("folders"),
                    Status::Ok,
                    format!(
                        "{} paired, {} on the server",
                        route.folders.len(),
                        folders.len()
                    ),
                )
            } else {
                let listed: Vec<&str> = folders.iter().map(|f| f.name.display.as_str()).collect();
                Check::new(
                    name("folders"),
                    Status::Fail,
                    format!(
                        "not on the server: {}; it has: {}",
                        absent.join(", "),
                        listed.join(", ")
                    ),
                )
            }
        }
    });
    client.logout().await;
    checks.push(backup_check(route, first_sync));
    checks
}

/// When mailbox route `route` first synced (Unix ms): the earliest start its folders'
/// marks record (kept across a `UIDVALIDITY` reset); `None` before any sync, or when the
/// store cannot say.
async fn first_sync_ms(store: &SharedStore, route: &MailboxRouteConfig) -> Option<i64> {
    let mut first: Option<i64> = None;
    for pair in &route.folders {
        let key = mark_key(&route.name, &folder_label(&pair.dingtalk));
        let Ok(Some(text)) = store.kv_get(&key).await else {
            continue;
        };
        if let Ok(mark) = serde_json::from_str::<FolderMark>(&text) {
            first = Some(first.map_or(mark.started_ms, |f| f.min(mark.started_ms)));
        }
    }
    first
}

/// Whether the route's `backup_dir` holds a complete backup of its mailbox, made after
/// the route first synced (`first_sync`, Unix ms) when it has.
fn backup_check(route: &MailboxRouteConfig, first_sync: Option<i64>) -> Check {
    let name = format!("mail {} backup", route.name);
    let run = format!("dingbridge mail backup --route {}", route.name);
    let Some(dir) = &route.backup_dir else {
        return Check::new(
            name,
            Status::Warn,
            format!(
                "no backup_dir: back the DingTalk mailbox up before the first sync (`{run} --out DIR`) and set backup_dir = DIR so this check finds it"
            ),
        );
    };
    match backup::read_state(dir) {
        Ok(None) => Check::new(
            name,
            Status::Warn,
            format!(
                "no backup in {} yet: run `{run}` before the first sync",
                dir.display()
            ),
        ),
        Err(e) => Check::new(name, Status::Warn, e.to_string()),
        Ok(Some(s)) if !s.user.eq_ignore_ascii_case(route.imap.user.trim()) => Check::new(
            name,
            Status::Warn,
            format!(
                "{} holds a backup of {}, not of {}",
                dir.display(),
                s.user,
                route.imap.user
            ),
        ),
        Ok(Some(s)) if !s.complete => Check::new(
            name,
            Status::Warn,
            format!(
                "the last backup run into {} did not finish ({} messages so far): run `{run}` again",
                dir.display(),
                s.messages
            ),
        ),
        Ok(Some(s)) if let Some(stale) = older_than_first_sync(&s, first_sync) => Check::new(
            name,
            Status::Warn,
            format!(
                "the backup in {} is older than the route's first sync ({stale}): mail since then is not in it; run `{run}` again (it fetches only what is new)",
                dir.display()
            ),
        ),
        Ok(Some(s)) => Check::new(
            name,
            Status::Ok,
            format!(
                "{} messages in {}, finished {}",
                s.messages,
                dir.display(),
                s.finished_at.as_deref().unwrap_or("?")
            ),
        ),
    }
}

/// `finished …, first sync …` when the backup's last complete run ended before the
/// route first synced (`first_sync`, Unix ms); a backup without a readable end time
/// counts as older.
fn older_than_first_sync(s: &backup::BackupState, first_sync: Option<i64>) -> Option<String> {
    let first = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(first_sync?)?;
    let finished = s
        .finished_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match finished {
        Some(f) if f >= first => None,
        _ => Some(format!(
            "backup finished {}, first sync {}",
            s.finished_at.as_deref().unwrap_or("never"),
            first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
    }
}

/// The exit status of a report: 0 when nothing failed, 1 otherwise.
pub fn exit_code(checks: &[Check]) -> u8 {
    u8::from(checks.iter().any(|c| c.status == Status::Fail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_fails_the_report_and_lines_are_aligned() {
        let ok = Check::new("store", Status::Ok, "Redis answers");
        let warn = Check::new("store", Status::Warn, "memory");
        assert_eq!(exit_code(&[ok.clone(), warn]), 0);
        let fail = Check::new("graph token", Status::Fail, "AADSTS7000215");
        assert_eq!(exit_code(&[ok.clone(), fail.clone()]), 1);
        assert!(ok.to_string().starts_with("ok    store"));
        assert!(fail.to_string().starts_with("FAIL  graph token"));
    }

    #[test]
    fn a_backup_that_ended_before_the_first_sync_is_older() {
        let mut s = backup::BackupState {
            format: 1,
            route: "dt".into(),
            host: "h".into(),
            user: "u".into(),
            started_at: "2026-03-01T08:00:00Z".into(),
            finished_at: Some("2026-03-01T09:00:00Z".into()),
            complete: true,
            messages: 3,
            bytes: 9,
            folders: Vec::new(),
        };
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .expect("time")
                .timestamp_millis()
        };
        assert_eq!(older_than_first_sync(&s, None), None, "never synced");
        assert_eq!(
            older_than_first_sync(&s, Some(at("2026-03-01T08:30:00Z"))),
            None
        );
        let stale = older_than_first_sync(&s, Some(at("2026-03-02T00:00:00Z")));
        assert_eq!(
            stale.as_deref(),
            Some("backup finished 2026-03-01T09:00:00Z, first sync 2026-03-02T00:00:00Z")
        );
        s.finished_at = None;
        assert!(older_than_first_sync(&s, Some(at("2026-03-02T00:00:00Z"))).is_some());
    }
}
