//! The `dingbridge` command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use dingbridge::{
    Application, apikeys,
    config::{Config, StoreKind},
    mail::{self, backup},
    store, telemetry,
};

/// Bridges DingTalk and Microsoft Outlook, for Zapier and n8n.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); `DINGBRIDGE_*` variables override it.
    #[arg(long, global = true, env = "DINGBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the HTTP service and its workers.
    Serve,
    /// Prints a ready-to-run `curl` command with a correctly signed sample request.
    Sign {
        #[command(subcommand)]
        what: SignCommand,
    },
    /// Manages API keys of the low-code API (`/v1`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Checks the configuration, the store, Graph (token and every route's mailbox), the
    /// DingTalk app, and each mailbox route's IMAP server (reachable, TLS, login,
    /// extensions, folders) and backup; exits 1 when a check fails.
    Doctor,
    /// Writes a backup of the Redis store (every key but leases) as JSON lines.
    Export {
        /// Where to write it; `-` for standard output.
        #[arg(long)]
        out: PathBuf,
    },
    /// DingTalk Mail (IMAP) of the mailbox routes.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Lists (dry run) or, with `--apply`, removes the Outlook items the bridge itself
    /// wrote for one route since a time: found through the audit trail and the stored id
    /// pairs, each confirmed by its origin marker before anything is removed. Exits 1
    /// naming any item that could not be read or removed.
    Undo {
        /// The route (`[[routes]]` or `[[mailbox_routes]]` name).
        #[arg(long)]
        route: String,
        /// From when: an RFC 3339 time, or back from now (`90m`, `24h`, `7d`).
        #[arg(long)]
        since: String,
        /// Remove the items (default: only list them).
        #[arg(long)]
        apply: bool,
    },
    /// Restores a backup made by `export` (the rollback path: stop every instance, start
    /// the previous version, restore the backup taken before the upgrade).
    Import {
        /// The backup file.
        #[arg(long)]
        file: PathBuf,
        /// Overwrite keys that exist (otherwise they are kept).
        #[arg(long)]
        replace: bool,
        /// Also delete keys the backup does not hold: the store becomes the backup.
        #[arg(long)]
        exact: bool,
    },
}

#[derive(Subcommand)]
enum MailCommand {
    /// Downloads every message of every folder of a mailbox route's DingTalk mailbox:
    /// one `.eml` per message and a manifest (folder, UID, UIDVALIDITY, Message-ID,
    /// size, SHA-256, internal date, flags). Read-only (EXAMINE, BODY.PEEK); run it again
    /// to resume an interrupted backup.
    Backup {
        /// The mailbox route (`[[mailbox_routes]]` name).
        #[arg(long)]
        route: String,
        /// Where to write; default the route's `backup_dir` (where `doctor` looks).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Instead of backing up: re-read every file and compare size and SHA-256 with
        /// the manifest; exits 1 naming each mismatch. Needs no connection.
        #[arg(long)]
        verify: bool,
        /// Stops after saving this many messages, as if interrupted (tests of resuming).
        #[arg(long, hide = true)]
        stop_after: Option<u64>,
    },
}

#[derive(Subcommand)]
enum SignCommand {
    /// An encrypted, signed DingTalk HTTP push (`POST /webhooks/dingtalk/events`).
    DingtalkEvent {
        /// The decrypted event as JSON, e.g. `{"EventType":"check_url"}`.
        #[arg(long)]
        file: PathBuf,
        /// Base URL of the deployment (default `http://<listen>`).
        #[arg(long)]
        url: Option<String>,
    },
    /// A signed DingTalk robot callback (`POST /webhooks/dingtalk/robot`).
    DingtalkRobot {
        /// The robot message as JSON (`msgId`, `conversationId`, `text.content`, ...).
        #[arg(long)]
        file: PathBuf,
        /// Base URL of the deployment (default `http://<listen>`).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Creates a key in the configured (Redis) store and prints it once on stdout.
    Create {
        /// Label shown by `GET /v1/me`, e.g. `zapier`.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: triggers, actions, admin.
        #[arg(long, default_value = "triggers,actions")]
        scopes: String,
    },
    /// Lists keys (store and `api.bootstrap_keys`); never prints secrets.
    List,
    /// Revokes a stored key by id.
    Revoke {
        /// Key id (the part after `dbk_`, 12 characters).
        id: String,
    },
    /// Makes a key for `api.bootstrap_keys` without any store: prints the key on stdout
    /// and the configuration entry (which holds only its hash) on stderr.
    Hash {
        /// Label.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: triggers, actions, admin.
        #[arg(long, default_value = "triggers,actions")]
        scopes: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match dingbridge::load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dingbridge: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve => {
            telemetry::init(&config.log_format, &config.log_level);
            dingbridge::limits::raise_open_files_and_log();
            serve(config)
        }
        Command::Sign { what } => sign(&config, what),
        Command::Keys { command } => keys(config, command),
        Command::Doctor => doctor(&config),
        Command::Mail { command } => mail(&config, command),
        Command::Undo {
            route,
            since,
            apply,
        } => undo(&config, &route, &since, apply),
        Command::Export { out } => backup(&config, |store| async move {
            let summary = if out.as_os_str() == "-" {
                store.export(&mut std::io::stdout().lock()).await?
            } else {
                let file = std::fs::File::create(&out)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
                store.export(&mut std::io::BufWriter::new(file)).await?
            };
            eprintln!("exported {} keys under {}", summary.keys, store.prefix());
            Ok(())
        }),
        Command::Import {
            file,
            replace,
            exact,
        } => backup(&config, |store| async move {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let parsed = store::backup::parse(&text).map_err(anyhow::Error::msg)?;
            let s = store
                .restore(&parsed, store::backup::RestoreMode { replace, exact })
                .await?;
            eprintln!(
                "restored {} keys from the backup of {} ({} kept as they were, {} expired since, {} deleted)",
                s.restored, parsed.header.created_at, s.kept, s.expired, s.deleted
            );
            Ok(())
        }),
    }
}

fn doctor(config: &Config) -> ExitCode {
    let checks = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(dingbridge::doctor::run(config)),
        Err(e) => {
            eprintln!("dingbridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    for c in &checks {
        println!("{c}");
    }
    ExitCode::from(dingbridge::doctor::exit_code(&checks))
}

fn mail(config: &Config, command: MailCommand) -> ExitCode {
    let MailCommand::Backup {
        route,
        out,
        verify,
        stop_after,
    } = command;
    let Some(r) = config.mailbox_route(&route) else {
        let names: Vec<&str> = config
            .mailbox_routes
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        eprintln!(
            "dingbridge: no mailbox route named `{route}` (configured: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        return ExitCode::from(2);
    };
    let Some(out) = out.or_else(|| r.backup_dir.clone()) else {
        eprintln!(
            "dingbridge: --out DIR is needed (or set backup_dir in the mailbox route `{route}`)"
        );
        return ExitCode::from(2);
    };
    if verify {
        return verify_backup(&out);
    }
    let settings = match mail::ImapSettings::from_config(&r.imap) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dingbridge: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} messages, {msg} ({elapsed}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut bytes = 0u64;
    let mut on_progress = |p: backup::Progress| match p {
        backup::Progress::Start { messages, already } => {
            eprintln!(
                "backing up {messages} messages of {} on {} into {} ({already} already there)",
                settings.user,
                settings.host,
                out.display()
            );
            bar.set_length(messages);
            bar.set_position(already);
        }
        backup::Progress::Saved { bytes: b } => {
            bytes += b;
            bar.set_message(indicatif::HumanBytes(bytes).to_string());
            bar.inc(1);
        }
    };
    let options = backup::Options { stop_after };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| backup::BackupError::Refused(e.to_string()))
        .and_then(|rt| {
            rt.block_on(backup::run(
                &r.name,
                &settings,
                &out,
                &options,
                &mut on_progress,
            ))
        });
    bar.finish_and_clear();
    match result {
        Ok(s) => {
            eprintln!(
                "backed up {} folder(s): {} messages, {} saved now ({}), {} already there{}",
                s.folders,
                s.messages,
                s.downloaded,
                indicatif::HumanBytes(s.bytes),
                s.skipped,
                match s.vanished {
                    0 => String::new(),
                    n => format!(", {n} deleted on the server during the backup"),
                }
            );
            if !s.complete {
                eprintln!("dingbridge: stopped early (--stop-after): run again to resume");
                return ExitCode::FAILURE;
            }
            if r.backup_dir.as_deref() != Some(out.as_path()) {
                eprintln!(
                    "note: `dingbridge doctor` looks for this route's backup in its backup_dir; set backup_dir = \"{}\" in the mailbox route `{}`",
                    out.display(),
                    r.name
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dingbridge: {e}");
            ExitCode::FAILURE
        }
    }
}

fn undo(config: &Config, route: &str, since: &str, apply: bool) -> ExitCode {
    use dingbridge::sync::undo::{self, Outcome};
    let mailbox = match (
        config.routes.iter().find(|r| r.name == route),
        config.mailbox_route(route),
    ) {
        (Some(r), _) => r.mailbox.clone(),
        (None, Some(r)) => r.mailbox.clone(),
        (None, None) => {
            let names: Vec<&str> = (config.routes.iter().map(|r| r.name.as_str()))
                .chain(config.mailbox_routes.iter().map(|r| r.name.as_str()))
                .collect();
            eprintln!(
                "dingbridge: no route named `{route}` (configured: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
            return ExitCode::from(2);
        }
    };
    let since_ms = match undo::parse_since(since, dingbridge::store::now_ms()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("dingbridge: --since {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(config.store_kind(), Ok(StoreKind::Memory)) {
        eprintln!(
            "dingbridge: the embedded memory store lives inside the running service and cannot be reached from here; undo needs the id pairs and the audit trail in Redis (set DINGBRIDGE_STORE_URL=redis://…)"
        );
        return ExitCode::from(2);
    }
    let http = match reqwest::Client::builder()
        .user_agent(dingbridge::USER_AGENT)
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("dingbridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let graph = match dingbridge::graph::GraphClient::from_config(&config.graph, http) {
        Ok(Some(g)) => g,
        Ok(None) => {
            eprintln!(
                "dingbridge: Graph is not configured (graph.tenant_id, graph.client_id and a credential): undo reads and removes the items in Outlook"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("dingbridge: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dingbridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async {
        use dingbridge::sync::mailbox::undo::{self as dt, FlagSide};
        let store = store::open(&config.store_settings()?).await?;
        let cap = usize::try_from(config.audit_max_entries).unwrap_or(usize::MAX);
        let entries = store.audit_recent(cap).await?;
        let found = undo::find_in(store.as_ref(), &entries, route, since_ms, cap).await?;
        let mailbox_route = config.mailbox_route(route);
        let dingtalk = match mailbox_route {
            Some(_) => dt::find(store.as_ref(), &entries, route, since_ms).await?,
            None => dt::Found::default(),
        };
        // Connected only when something in DingTalk Mail is to be read or changed.
        let mut imap = match mailbox_route {
            Some(r) => Some(dt::LazyImap::new(mail::ImapSettings::from_config(&r.imap)?)),
            None => None,
        };
        println!("note: undo {}", undo::COVERAGE);
        if let Some(oldest) = found.trail_starts_ms {
            println!(
                "note: the audit trail (audit_max_entries = {}) reaches back only to {}; items written before then are not found",
                config.audit_max_entries,
                when(oldest)
            );
        }
        let (mut removed, mut would, mut gone, mut kept, mut uncovered) = (0, 0, 0, 0, 0);
        let mut failures = Vec::new();
        // The read flag of the mail that stays, once its pair is gone.
        let flags = dt::Flags {
            store: store.as_ref(),
            graph: &graph,
            mailbox: &mailbox,
            route,
            entries: &entries,
            since_ms,
            apply,
        };
        for w in &found.items {
            let (outcome, title) =
                undo::undo_one(store.as_ref(), &graph, route, &mailbox, w, apply).await;
            let what = match &outcome {
                Outcome::WouldRemove => {
                    would += 1;
                    "would remove".to_string()
                }
                Outcome::Removed => {
                    removed += 1;
                    "removed".to_string()
                }
                Outcome::Gone => {
                    gone += 1;
                    "already gone".to_string()
                }
                Outcome::NotMarked(found) => {
                    kept += 1;
                    match found {
                        Some(v) => format!("KEPT (its origin marker is `{v}`, not the bridge's for it)"),
                        None => "KEPT (no bridge origin marker)".to_string(),
                    }
                }
                Outcome::NotCovered => {
                    uncovered += 1;
                    "KEPT (undo cannot remove this kind yet)".to_string()
                }
                Outcome::Failed(e) => {
                    failures.push(format!("{} {}: {e}", w.kind.as_str(), w.graph_id));
                    format!("FAILED ({e})")
                }
            };
            let what = match w.kind {
                undo::Kind::Mail => {
                    let done = matches!(outcome, Outcome::Removed | Outcome::Gone | Outcome::WouldRemove);
                    let (note, err) = flags
                        .settle(imap.as_mut(), &w.graph_id, &w.left, FlagSide::DingTalk, done)
                        .await;
                    failures.extend(err.map(|e| format!("read flag of {}: {e}", w.left)));
                    match note {
                        Some(note) if done => format!("{what}; {note}"),
                        _ => what,
                    }
                }
                _ => what,
            };
            println!(
                "{:<8} {}  {}  {}  {what}",
                w.kind.as_str(),
                when(w.at_ms),
                w.graph_id,
                title.as_deref().unwrap_or("-")
            );
        }
        for a in &dingtalk.appended {
            let (outcome, shown) = match &mut imap {
                Some(imap) => dt::undo_appended(store.as_ref(), imap, route, a, apply).await,
                None => continue,
            };
            let what = match &outcome {
                dt::Outcome::WouldRemove => {
                    would += 1;
                    "would remove".to_string()
                }
                dt::Outcome::Removed => {
                    removed += 1;
                    "removed".to_string()
                }
                dt::Outcome::Gone => {
                    gone += 1;
                    "already gone".to_string()
                }
                dt::Outcome::Kept(why) => {
                    kept += 1;
                    format!("KEPT ({why})")
                }
                dt::Outcome::Failed(e) => {
                    failures.push(format!("appended mail {}: {e}", a.left));
                    format!("FAILED ({e})")
                }
            };
            let done = matches!(outcome, dt::Outcome::Removed | dt::Outcome::Gone | dt::Outcome::WouldRemove);
            let (note, err) = flags
                .settle(imap.as_mut(), &a.graph_id, &a.left, FlagSide::Outlook, done)
                .await;
            failures.extend(err.map(|e| format!("read flag of {}: {e}", a.graph_id)));
            let what = match note {
                Some(note) if done => format!("{what}; {note}"),
                _ => what,
            };
            println!(
                "appended {}  DingTalk Mail {} UID {}  {}  {}  {what}",
                when(a.at_ms),
                shown.folder,
                shown.uid.map_or("-".to_string(), |u| u.to_string()),
                shown.message_id.as_deref().unwrap_or("-"),
                shown.subject.as_deref().unwrap_or("-"),
            );
        }
        for s in &dingtalk.sent {
            println!(
                "sent     {}  DingTalk Mail {}  {}  KEPT (sent over SMTP: a sent mail cannot be called back; its Sent copy stays as the record that it went out)",
                when(s.at_ms),
                s.sent_folder.as_deref().unwrap_or("(no Sent copy)"),
                s.message_id,
            );
        }
        let total = found.items.len() + dingtalk.appended.len();
        let before = found.already + dingtalk.already;
        if total == 0 && dingtalk.sent.is_empty() {
            println!(
                "note: nothing to undo for route {route} since {}{}",
                when(since_ms),
                match before {
                    0 => String::new(),
                    n => format!(" ({n} item(s) undone before)"),
                }
            );
        }
        if let Some(imap) = imap {
            imap.close().await;
        }
        println!(
            "route {route} since {}: {total} item(s) written by the bridge ({} in Outlook, {} in DingTalk Mail); {} {}, {gone} already gone, {kept} kept (not the bridge's, or not found safely), {uncovered} of kinds not covered, {} failed{}{}",
            when(since_ms),
            found.items.len(),
            dingtalk.appended.len(),
            if apply { removed } else { would },
            if apply { "removed" } else { "would be removed (dry run: add --apply)" },
            failures.len(),
            match dingtalk.sent.len() {
                0 => String::new(),
                n => format!(", {n} sent mail(s) kept"),
            },
            match before {
                0 => String::new(),
                n => format!(", {n} undone before"),
            }
        );
        if failures.is_empty() {
            Ok(ExitCode::SUCCESS)
        } else {
            for f in &failures {
                eprintln!("dingbridge: undo failed for {f}");
            }
            Ok(ExitCode::FAILURE)
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dingbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Unix ms as an RFC 3339 time (UTC, seconds).
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

fn verify_backup(dir: &std::path::Path) -> ExitCode {
    match backup::verify(dir) {
        Ok(v) if v.problems.is_empty() => {
            println!(
                "ok: {} messages ({}) match the manifest in {}",
                v.checked,
                indicatif::HumanBytes(v.bytes),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(v) => {
            for p in &v.problems {
                println!("MISMATCH {p}");
            }
            eprintln!(
                "dingbridge: {} problem(s) in the backup in {} ({} messages checked)",
                v.problems.len(),
                dir.display(),
                v.checked
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("dingbridge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a backup command against the configured Redis store.
fn backup<F, Fut>(config: &Config, f: F) -> ExitCode
where
    F: FnOnce(store::redis::RedisStore) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let kind = match config.store_kind() {
        Ok(kind @ (StoreKind::Redis(_) | StoreKind::RedisCluster(_))) => kind,
        Ok(StoreKind::Memory) => {
            eprintln!(
                "dingbridge: the embedded memory store lives inside the running service and keeps nothing; there is nothing to back up or restore (set DINGBRIDGE_STORE_URL=redis://…)"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("dingbridge: {e}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let (prefix, cap) = (&config.key_prefix, config.audit_max_entries);
                let store = match &kind {
                    StoreKind::RedisCluster(nodes) => {
                        store::redis::RedisStore::connect_cluster(nodes, prefix, cap).await?
                    }
                    StoreKind::Redis(url) => {
                        store::redis::RedisStore::connect(url, prefix, cap).await?
                    }
                    StoreKind::Memory => anyhow::bail!("no Redis is configured"),
                };
                dingbridge::store::Store::ping(&store).await?;
                f(store).await
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dingbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sign(config: &Config, what: SignCommand) -> ExitCode {
    use dingbridge::dingtalk::sample;
    let (file, url, robot) = match what {
        SignCommand::DingtalkEvent { file, url } => (file, url, false),
        SignCommand::DingtalkRobot { file, url } => (file, url, true),
    };
    let input = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("dingbridge: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let base = url.unwrap_or_else(|| sample::default_base_url(&config.listen));
    let now = dingbridge::store::now_ms();
    let request = if robot {
        sample::robot_request(&config.dingtalk, &base, &input, now)
    } else {
        sample::event_request(&config.dingtalk, &base, &input, now)
    };
    match request {
        Ok(r) => {
            println!("{}", r.to_curl());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dingbridge: {e}");
            ExitCode::from(2)
        }
    }
}

fn keys(config: Config, command: KeysCommand) -> ExitCode {
    if let KeysCommand::Hash { name, scopes } = &command {
        return match apikeys::parse_scopes(scopes) {
            Ok(scopes) => {
                let new = apikeys::generate(name, scopes.clone());
                let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
                println!("{}", new.key);
                eprintln!(
                    "add to the configuration (api.bootstrap_keys, or DINGBRIDGE_API_BOOTSTRAP_KEYS):\n{}:{}:{}\nthe key above is shown once; only its hash is in that entry",
                    name,
                    scopes.join("+"),
                    new.record.hash
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dingbridge: --scopes: {e}");
                ExitCode::from(2)
            }
        };
    }
    if matches!(config.store_kind(), Ok(StoreKind::Memory)) && !matches!(command, KeysCommand::List)
    {
        eprintln!(
            "dingbridge: the embedded memory store lives inside the running service and cannot be reached from here; set DINGBRIDGE_STORE_URL=redis://… or use `dingbridge keys hash` and api.bootstrap_keys"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dingbridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async {
        let store = store::open(&config.store_settings()?).await?;
        match command {
            KeysCommand::Create { name, scopes } => {
                let scopes =
                    apikeys::parse_scopes(&scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
                let new = apikeys::generate(&name, scopes);
                apikeys::save(store.as_ref(), &new.record).await?;
                println!("{}", new.key);
                eprintln!(
                    "created API key {} ({}) with scopes {}; it is shown once, store it now",
                    new.record.id,
                    new.record.name,
                    new.record
                        .scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                );
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::List => {
                let stored = if store.backend() == "memory" {
                    Vec::new()
                } else {
                    apikeys::list(store.as_ref()).await?
                };
                println!("ID             NAME                 SCOPES                   SOURCE");
                for k in stored {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    println!(
                        "{:<14} {:<20} {:<24} store (created {})",
                        k.id,
                        k.name,
                        scopes.join(","),
                        k.created_at
                    );
                }
                for b in &config.api.bootstrap_keys {
                    {
                        let scopes: Vec<&str> = b.scopes.iter().map(|s| s.as_str()).collect();
                        println!(
                            "-              {:<20} {:<24} config",
                            b.name,
                            scopes.join(",")
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::Revoke { id } => {
                if apikeys::revoke(store.as_ref(), &id).await? {
                    eprintln!("revoked API key {id}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("dingbridge: no stored API key {id}");
                    Ok(ExitCode::from(1))
                }
            }
            KeysCommand::Hash { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dingbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    // Workers run on a multi-threaded runtime; actix's own threads serve HTTP.
    let result = actix_web::rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the tokio runtime must start")
    })
    .block_on(async move {
        let app = Application::build(config).await?;
        tracing::info!(addr = %app.addr(), "listening on {}", app.addr());
        app.run_until_stopped().await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "dingbridge stopped with an error");
            eprintln!("dingbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
