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
pub mod metrics;
pub mod outbound;
pub mod retry_after;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod triggers;
pub mod worker;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::{App, HttpServer, dev::Server, middleware::from_fn, web};

use tokio_util::sync::CancellationToken;

use crate::{
    api::AppState,
    config::Config,
    dingtalk::{
        client::{DingTalkClient, DingTalkSettings},
        stream::StreamSettings,
    },
    store::SharedStore,
    worker::{Registry, WorkerPool},
};

/// Product name and version, sent as `User-Agent` upstream.
pub const USER_AGENT: &str = concat!("dingbridge/", env!("CARGO_PKG_VERSION"));

/// Connections beyond the cap wait in the kernel's listen queue, this long at most.
const LISTEN_BACKLOG: u32 = 1024;

/// The HTTP server: the routes behind the request context and the body deadline, serving
/// at most `max_connections` clients at once (lowered to fit the open-file limit).
fn http_server(
    config: &Config,
    state: web::Data<AppState>,
) -> anyhow::Result<(Server, SocketAddr)> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let open_files = limits::open_files_soft_limit();
    let cap = limits::connection_cap(config.max_connections, open_files);
    if cap < config.max_connections {
        tracing::warn!(
            configured = config.max_connections,
            cap,
            open_files,
            "max_connections lowered to {cap} to fit the open-file limit with room for the store and upstream calls; raise the limit (ulimit -n, LimitNOFILE) to serve more"
        );
    }
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(api::body::deadline))
            .wrap(from_fn(telemetry::request_context))
            .configure(api::configure)
            .default_service(web::to(api::not_found))
    })
    .workers(workers)
    // actix counts per worker.
    .max_connections((cap / workers).max(1))
    .backlog(LISTEN_BACKLOG)
    .shutdown_timeout(config.shutdown_timeout_secs)
    .bind(config.listen_addr()?)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("the HTTP server bound no address"))?;
    Ok((server.run(), addr))
}

/// Indexes hooks and Graph subscriptions written by versions that kept no index, before
/// anything lists them; while the store is unreachable, keeps trying in the background.
async fn index_existing_records(store: SharedStore) {
    async fn once(store: &SharedStore) -> Result<(), store::StoreError> {
        hooks::index_existing(store.as_ref()).await?;
        graph::subscriptions::index_existing(store.as_ref()).await
    }
    if once(&store).await.is_ok() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            match once(&store).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot index stored hooks and subscriptions yet")
                }
            }
        }
    });
}

/// A built, bound, not yet running service.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    workers: WorkerPool,
    backfill: Option<dingtalk::backfill::Backfill>,
    subscriptions: Option<leader::LeaderTask>,
    todo_poll: Option<leader::LeaderTask>,
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
        index_existing_records(store.clone()).await;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(5))
            .build()?;

        let mut registry = Registry::default();
        let mut echo_verifier: Option<Box<dyn ingest::Verifier>> = None;
        if let (Some(target), Some(token)) = (&config.echo.target_url, &config.echo.token) {
            registry.register(
                jobs::ECHO,
                Arc::new(echo::EchoHandler::new(http.clone(), target.clone())),
            );
            echo_verifier = Some(Box::new(echo::EchoVerifier::new(token.clone())));
        }

        let dt = &config.dingtalk;
        let push_crypto = dt.push_crypto();
        let dingtalk_client = DingTalkSettings::from_config(dt)
            .map(|s| Arc::new(DingTalkClient::new(http.clone(), s, store.clone())));
        let graph = graph::GraphClient::from_config(&config.graph, http.clone())?.map(Arc::new);
        if let Some(g) = &graph {
            // Fetch a token now so that bad credentials show in the log and /readyz at once.
            let auth = g.auth().clone();
            tokio::spawn(async move {
                if let Err(e) = auth.token().await {
                    tracing::error!(error = %e, "Microsoft Graph authentication failed");
                }
            });
        }
        // DingTalk → Outlook relays along the configured routes (audits and publishes
        // the DingTalk triggers for every event, routed or not).
        registry.register(
            jobs::DINGTALK_EVENT,
            Arc::new(sync::to_outlook::RelayHandler::new(
                store.clone(),
                sync::routes::Routes::new(config.routes.clone()),
                graph.clone(),
                dingtalk_client.clone(),
                http.clone(),
            )),
        );
        // Outlook → DingTalk: notification/lifecycle handlers and the subscription manager.
        let mut subscription_parts = None;
        let outbound_routes: Vec<_> = config
            .routes
            .iter()
            .filter(|r| r.direction.to_dingtalk())
            .cloned()
            .collect();
        if let Some(g) = &graph
            && !outbound_routes.is_empty()
        {
            let encryption = match (
                &config.graph.notification_certificate_path,
                &config.graph.notification_private_key_path,
            ) {
                (Some(cert), Some(key)) => Some(
                    graph::notifications::load_private_key(key)
                        .and_then(|k| graph::notifications::load_certificate(cert, &k))
                        .map_err(anyhow::Error::msg)?,
                ),
                _ => None,
            };
            let manager =
                graph::subscriptions::ManagerSettings::from_config(&config).map(|mut s| {
                    s.encryption = encryption;
                    Arc::new(graph::subscriptions::SubscriptionManager::new(
                        store.clone(),
                        g.clone(),
                        s,
                        graph::subscriptions::wanted(&outbound_routes),
                    ))
                });
            let mut relay = sync::to_dingtalk::OutlookRelay::new(
                store.clone(),
                g.clone(),
                http.clone(),
                dingtalk_client.clone(),
                outbound_routes,
                manager.clone(),
            );
            if let (Some(path), Ok(Some(id))) = (
                &config.graph.notification_private_key_path,
                config.graph.credentials(),
            ) {
                let key =
                    graph::notifications::load_private_key(path).map_err(anyhow::Error::msg)?;
                let jwks_url = format!(
                    "{}{}",
                    config
                        .graph
                        .authority_url
                        .as_deref()
                        .unwrap_or(graph::DEFAULT_AUTHORITY_URL)
                        .trim_end_matches('/'),
                    graph::jwks::DEFAULT_JWKS_PATH
                );
                relay = relay.with_rich(
                    graph::jwks::JwksValidator::new(http.clone(), jwks_url, id.client_id),
                    key,
                );
            }
            let relay = Arc::new(relay);
            registry.register(jobs::GRAPH_NOTIFICATION, relay.clone());
            registry.register(jobs::GRAPH_LIFECYCLE, relay.clone());
            registry.register(jobs::GRAPH_RESYNC, relay);
            subscription_parts = manager;
        }
        let dingtalk_push = push_crypto.clone().map(|c| {
            Box::new(dingtalk::push::PushVerifier::new(
                c,
                dt.timestamp_window_secs,
            )) as Box<dyn ingest::Verifier>
        });
        let dingtalk_robot = dt.robot_secret().map(|s| {
            Box::new(dingtalk::robot::RobotVerifier::new(s.clone())) as Box<dyn ingest::Verifier>
        });
        // REST hook deliveries: guarded DNS, no redirects.
        let hook_policy = Arc::new(
            outbound::target::TargetPolicy::new(&config.hooks.allow_private_targets)
                .map_err(anyhow::Error::msg)?,
        );
        let hook_client = outbound::client(
            hook_policy.clone(),
            Duration::from_secs(config.hooks.timeout_secs),
        )?;
        registry.register(
            jobs::HOOK_DELIVERY,
            Arc::new(outbound::HookDeliverer::new(
                store.clone(),
                hook_client,
                hook_policy.clone(),
                Duration::from_secs(config.hooks.gone_grace_secs),
            )),
        );
        // Actions: never follow a redirect (Zapier refuses one to loopback anyway).
        let action_http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        // The Graph and DingTalk clients run the actions; without them the actions
        // answer 404 `not_configured`.
        let mut actions = actions::Actions::standard();
        actions.set_store(store.clone());
        if let Some(g) = &graph {
            actions.set_backend(
                actions::Family::Outlook,
                Arc::new(actions::outlook::OutlookBackend::new(g.clone())),
            );
        }
        if let Some(d) = &dingtalk_client {
            actions.set_backend(
                actions::Family::DingTalk,
                Arc::new(actions::dingtalk::DingTalkBackend::new(d.clone())),
            );
        }
        let bootstrap_keys = config
            .api
            .bootstrap_keys
            .iter()
            .map(|e| apikeys::BootstrapKey::parse(e).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let openapi_json = Arc::new(api::docs::openapi_json().map_err(anyhow::Error::msg)?);

        let _ = metrics::handle();
        let state = web::Data::new(AppState {
            store: store.clone(),
            config: config.clone(),
            echo: echo_verifier,
            dingtalk_push,
            dingtalk_robot,
            bootstrap_keys,
            actions,
            http: action_http,
            hook_policy,
            openapi_json,
            graph: graph.clone(),
            dingtalk: dingtalk_client.clone(),
        });
        let (server, addr) = http_server(&config, state)?;

        let backfill = match (&dingtalk_client, &push_crypto) {
            (Some(client), Some(_)) if dt.backfill_interval_secs > 0 => {
                Some(dingtalk::backfill::Backfill::start(
                    store.clone(),
                    client.clone(),
                    config.dedupe_ttl(),
                    Duration::from_secs(dt.backfill_interval_secs),
                ))
            }
            _ => None,
        };
        let stream_cancel = CancellationToken::new();
        let stream = match (dt.stream_enabled, &dt.app_key, &dt.app_secret) {
            (true, Some(app_key), Some(app_secret)) => {
                let mut settings = StreamSettings::new(app_key.clone(), app_secret.clone());
                settings.api_base_url = dt.api_base_url().to_string();
                let sink = Arc::new(dingtalk::events::PipelineSink::new(
                    store.clone(),
                    config.dedupe_ttl(),
                ));
                Some(dingtalk::stream::spawn(
                    settings,
                    http.clone(),
                    sink,
                    stream_cancel.clone(),
                ))
            }
            _ => None,
        };
        let workers = WorkerPool::start(store.clone(), registry, config.workers.clone());
        // After the server is bound: Graph validates the notification URL on create.
        let subscriptions = subscription_parts
            .map(|manager| sync::to_dingtalk::start_subscription_task(store.clone(), manager));
        let todo_poll = match (
            &graph,
            &dingtalk_client,
            config.graph.todo_poll_interval_secs,
        ) {
            (Some(g), Some(d), secs) if secs > 0 => sync::todo_sync::TodoPoller::new(
                store.clone(),
                g.clone(),
                d.clone(),
                &config.routes,
            )
            .map(|poller| {
                let poller = Arc::new(poller);
                leader::LeaderTask::start(
                    store.clone(),
                    sync::todo_sync::LEASE,
                    "To Do polling",
                    Duration::from_secs(secs),
                    move || {
                        let poller = poller.clone();
                        async move { poller.poll_all().await }
                    },
                )
            }),
            _ => None,
        };
        Ok(Application {
            addr,
            server,
            workers,
            backfill,
            subscriptions,
            todo_poll,
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
        if let Some(backfill) = self.backfill {
            backfill.shutdown(self.shutdown_timeout).await;
        }
        self.workers.shutdown(self.shutdown_timeout).await;
        tracing::info!("shutdown complete");
        served
    }
}
