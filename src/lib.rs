//! dingbridge: keeps DingTalk and Microsoft Outlook (Graph) in step and serves Zapier
//! and n8n. [`Application::build`] assembles the service; `main.rs` only parses the CLI.

pub mod actions;
pub mod api;
pub mod apikeys;
pub mod config;
pub mod dingtalk;
pub mod doctor;
pub mod echo;
pub mod error;
pub mod event;
pub mod graph;
pub mod hooks;
pub mod ingest;
pub mod jobs;
pub mod leader;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod outbound;
pub mod retry_after;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod triggers;
pub mod upstream;
pub mod worker;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::{dev::Server, web};

use tokio_util::sync::CancellationToken;

use crate::{
    api::AppState,
    config::Config,
    store::SharedStore,
    worker::{Registry, WorkerPool},
};

/// Product name and version, sent as `User-Agent` upstream.
pub const USER_AGENT: &str = concat!("dingbridge/", env!("CARGO_PKG_VERSION"));

/// Reads and validates the configuration (file, then `DINGBRIDGE_*` variables), then the
/// certificate and key files it names, so that every setting fails at start-up.
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config, config::ConfigError> {
    let config = Config::load(path)?;
    graph::check_key_files(&config)?;
    mail::check_ca_files(&config)?;
    Ok(config)
}

/// A built, bound, not yet running service.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    workers: WorkerPool,
    backfill: Option<dingtalk::backfill::Backfill>,
    subscriptions: Option<leader::LeaderTask>,
    todo_poll: Option<leader::LeaderTask>,
    mailbox_sync: Option<sync::mailbox::MailboxSync>,
    stream: Option<tokio::task::JoinHandle<()>>,
    stream_cancel: CancellationToken,
    shutdown_timeout: Duration,
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free port) and starts workers.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let config = Arc::new(config);
        let store: SharedStore = store::open(&config.store_settings()?).await?;
        if store.backend() == "memory" {
            tracing::warn!(
                "using the embedded in-memory store: one instance only, nothing survives a restart; set DINGBRIDGE_STORE_URL=redis://… for production"
            );
        }
        startup::index_existing_records(store.clone()).await;
        let clients = startup::clients(&config, &store)?;
        let verifiers = startup::verifiers(&config);

        let mut registry = Registry::default();
        startup::register_echo(&mut registry, &config, &clients);
        startup::register_dingtalk_relay(&mut registry, &config, &store, &clients);
        let subscription_manager =
            startup::register_outlook_relay(&mut registry, &config, &store, &clients)?;
        let hook_policy = startup::register_hook_delivery(&mut registry, &config, &store)?;

        let _ = metrics::handle();
        let state = web::Data::new(AppState {
            store: store.clone(),
            config: config.clone(),
            echo: verifiers.echo,
            dingtalk_push: verifiers.dingtalk_push,
            dingtalk_robot: verifiers.dingtalk_robot,
            bootstrap_keys: config.api.bootstrap_keys.clone(),
            actions: startup::actions(&store, &clients),
            http: clients.action_http.clone(),
            hook_policy,
            openapi_json: Arc::new(api::docs::openapi_json().map_err(anyhow::Error::msg)?),
            graph: clients.graph.clone(),
            dingtalk: clients.dingtalk.clone(),
        });
        let (server, addr) = startup::http_server(&config, state)?;

        let backfill = startup::backfill(&config, &store, &clients, &verifiers.push_crypto);

        let stream_cancel = CancellationToken::new();
        let stream = startup::stream(&config, &store, &clients, &stream_cancel);
        let workers = WorkerPool::start(store.clone(), registry, config.workers.clone());
        // After the server is bound: Graph validates the notification URL on create.
        let subscriptions = subscription_manager
            .map(|manager| sync::to_dingtalk::start_subscription_task(store.clone(), manager));
        let todo_poll = startup::todo_poll(&config, &store, &clients);
        let mailbox_sync = startup::mailbox_sync(&config, &store, &clients).await;
        Ok(Application {
            addr,
            server,
            workers,
            backfill,
            subscriptions,
            todo_poll,
            mailbox_sync,
            stream,
            stream_cancel,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGTERM/SIGINT, then finishes in-flight requests and jobs.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        tracing::info!("http server stopped; finishing running jobs");
        // Stop taking Stream frames first: an unacknowledged frame is redelivered.
        self.stream_cancel.cancel();
        if let Some(stream) = self.stream {
            let _ = tokio::time::timeout(self.shutdown_timeout, stream).await;
        }
        for task in [self.subscriptions, self.todo_poll].into_iter().flatten() {
            task.shutdown(self.shutdown_timeout).await;
        }
        if let Some(mailbox_sync) = self.mailbox_sync {
            mailbox_sync.shutdown(self.shutdown_timeout).await;
        }
        if let Some(backfill) = self.backfill {
            backfill.shutdown(self.shutdown_timeout).await;
        }
        self.workers.shutdown(self.shutdown_timeout).await;
        tracing::info!("shutdown complete");
        served
    }
}
