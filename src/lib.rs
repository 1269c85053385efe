//! dingbridge: keeps DingTalk and Microsoft Outlook (Graph) in step and serves Zapier
//! and n8n. [`Application::build`] assembles the service; `main.rs` only parses the CLI.

pub mod api;
pub mod config;
pub mod dingtalk;
pub mod echo;
pub mod error;
pub mod graph;
pub mod ingest;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod worker;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::{App, HttpServer, dev::Server, middleware::from_fn, web};

use crate::{
    api::AppState,
    config::Config,
    store::SharedStore,
    worker::{Registry, WorkerPool},
};

/// Product name and version, sent as `User-Agent` upstream.
pub const USER_AGENT: &str = concat!("dingbridge/", env!("CARGO_PKG_VERSION"));

/// A built, bound, not yet running service.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    workers: WorkerPool,
    shutdown_timeout: Duration,
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free port) and starts workers.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let config = Arc::new(config);
        let store: SharedStore = store::open(&config).await?;
        if store.backend() == "memory" {
            tracing::warn!(
                "using the embedded in-memory store: one instance only, nothing survives a restart; set DINGBRIDGE_STORE_URL=redis://… for production"
            );
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(5))
            .build()?;

        let mut registry = Registry::default();
        let mut echo_verifier: Option<Box<dyn ingest::Verifier>> = None;
        if let (Some(target), Some(token)) = (&config.echo.target_url, &config.echo.token) {
            registry.register(
                echo::KIND,
                Arc::new(echo::EchoHandler::new(http.clone(), target.clone())),
            );
            echo_verifier = Some(Box::new(echo::EchoVerifier::new(token.clone())));
        }

        let _ = metrics::handle();
        let state = web::Data::new(AppState {
            store: store.clone(),
            config: config.clone(),
            echo: echo_verifier,
        });
        let listener = std::net::TcpListener::bind(config.listen_addr()?)?;
        let addr = listener.local_addr()?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(telemetry::request_context))
                .configure(api::configure)
                .default_service(web::to(api::not_found))
        })
        .shutdown_timeout(config.shutdown_timeout_secs)
        .listen(listener)?
        .run();

        let workers = WorkerPool::start(store, registry, config.workers.clone());
        Ok(Application {
            addr,
            server,
            workers,
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
        self.workers.shutdown(self.shutdown_timeout).await;
        tracing::info!("shutdown complete");
        served
    }
}
