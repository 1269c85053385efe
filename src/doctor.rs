//! `dingbridge doctor`: what a consultant runs after filling in the configuration. Every
//! check says what it found and, when it failed, what to change; nothing is written
//! anywhere (the DingTalk token call counts against the monthly budget like any call).

use std::{collections::BTreeSet, fmt, sync::Arc, time::Duration};

use crate::{
    config::Config,
    dingtalk::client::{DingTalkClient, DingTalkSettings},
    graph::{GraphClient, GraphError},
    store,
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
            "valid; {} route(s), listening on {}",
            config.routes.len(),
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
    let mailboxes: BTreeSet<String> = config
        .routes
        .iter()
        .map(|r| r.mailbox.to_ascii_lowercase())
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
}
