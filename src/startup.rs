//! The parts [`crate::Application::build`] assembles: HTTP clients, the Graph and
//! DingTalk clients, the inbound verifiers, the job handlers, the actions and the
//! background tasks. Each function builds one thing from the validated configuration.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::{App, HttpServer, dev::Server, middleware::from_fn, web};
use tokio_util::sync::CancellationToken;

use crate::{
    USER_AGENT, actions,
    api::{self, AppState},
    config::Config,
    dingtalk::{
        self,
        client::{DingTalkClient, DingTalkSettings},
        crypto::CallbackCrypto,
        stream::StreamSettings,
    },
    echo, graph, hooks, ingest, jobs, leader, limits, outbound,
    store::{self, SharedStore},
    sync, telemetry,
    worker::Registry,
};

/// Connections beyond the cap wait in the kernel's listen queue, this long at most.
const LISTEN_BACKLOG: u32 = 1024;

/// The outbound HTTP clients and the two platform clients built on them.
pub struct Clients {
    /// For Graph, DingTalk and the echo target.
    pub http: reqwest::Client,
    /// For actions: never follows a redirect (Zapier refuses one to loopback anyway).
    pub action_http: reqwest::Client,
    /// Microsoft Graph, when its credentials are configured.
    pub graph: Option<Arc<graph::GraphClient>>,
    /// DingTalk's APIs, when an app key and secret are configured.
    pub dingtalk: Option<Arc<DingTalkClient>>,
}

/// Builds the clients; with Graph configured, fetches a token at once so that bad
/// credentials show in the log and `/readyz` before the first relay.
pub fn clients(config: &Config, store: &SharedStore) -> anyhow::Result<Clients> {
    let http = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let action_http = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let dingtalk = DingTalkSettings::from_config(&config.dingtalk)
        .map(|s| Arc::new(DingTalkClient::new(http.clone(), s, store.clone())));
    let graph = graph::GraphClient::from_config(&config.graph, http.clone())?.map(Arc::new);
    if let Some(g) = &graph {
        let auth = g.auth().clone();
        tokio::spawn(async move {
            if let Err(e) = auth.token().await {
                tracing::error!(error = %e, "Microsoft Graph authentication failed");
            }
        });
    }
    Ok(Clients {
        http,
        action_http,
        graph,
        dingtalk,
    })
}

/// How inbound requests are verified, per webhook.
pub struct Verifiers {
    /// `POST /webhooks/echo`, when an echo target and token are set.
    pub echo: Option<Box<dyn ingest::Verifier>>,
    /// DingTalk's HTTP push (AES callback crypto).
    pub dingtalk_push: Option<Box<dyn ingest::Verifier>>,
    /// DingTalk robot callbacks (HMAC signature).
    pub dingtalk_robot: Option<Box<dyn ingest::Verifier>>,
    /// The push crypto itself, which the failed-push backfill also needs.
    pub push_crypto: Option<CallbackCrypto>,
}

/// The verifiers of the configured webhooks.
pub fn verifiers(config: &Config) -> Verifiers {
    let dt = &config.dingtalk;
    let push_crypto = CallbackCrypto::from_config(dt);
    let echo = match (&config.echo.target_url, &config.echo.token) {
        (Some(_), Some(token)) => {
            Some(Box::new(echo::EchoVerifier::new(token.clone())) as Box<dyn ingest::Verifier>)
        }
        _ => None,
    };
    let dingtalk_push = push_crypto.clone().map(|c| {
        Box::new(dingtalk::push::PushVerifier::new(
            c,
            dt.timestamp_window_secs,
        )) as Box<dyn ingest::Verifier>
    });
    let dingtalk_robot = dt.robot_secret().map(|s| {
        Box::new(dingtalk::robot::RobotVerifier::new(s.clone())) as Box<dyn ingest::Verifier>
    });
    Verifiers {
        echo,
        dingtalk_push,
        dingtalk_robot,
        push_crypto,
    }
}

/// Registers the echo relay, when configured.
pub fn register_echo(registry: &mut Registry, config: &Config, clients: &Clients) {
    if let (Some(target), Some(_)) = (&config.echo.target_url, &config.echo.token) {
        registry.register(
            jobs::ECHO,
            Arc::new(echo::EchoHandler::new(clients.http.clone(), target.clone())),
        );
    }
}

/// Registers the DingTalk → Outlook relay (it audits and publishes the DingTalk triggers
/// for every event, routed or not).
pub fn register_dingtalk_relay(
    registry: &mut Registry,
    config: &Config,
    store: &SharedStore,
    clients: &Clients,
) {
    registry.register(
        jobs::DINGTALK_EVENT,
        Arc::new(sync::to_outlook::RelayHandler::new(
            store.clone(),
            sync::routes::Routes::new(config.routes.clone()),
            clients.graph.clone(),
            clients.dingtalk.clone(),
            clients.http.clone(),
        )),
    );
}

/// Registers the Outlook → DingTalk handlers (notifications, lifecycle events, resyncs)
/// when Graph is configured and a route goes that way; answers the subscription manager
/// to start once the server is bound.
pub fn register_outlook_relay(
    registry: &mut Registry,
    config: &Config,
    store: &SharedStore,
    clients: &Clients,
) -> anyhow::Result<Option<Arc<graph::subscriptions::SubscriptionManager>>> {
    let routes: Vec<_> = config
        .routes
        .iter()
        .filter(|r| r.direction.to_dingtalk())
        .cloned()
        .collect();
    let Some(g) = &clients.graph else {
        return Ok(None);
    };
    // Mailbox routes writing to DingTalk Mail subscribe too: a notification wakes them.
    let mailbox_wanted = graph::subscriptions::mailbox_wanted(&config.mailbox_routes);
    if routes.is_empty() && mailbox_wanted.is_empty() {
        return Ok(None);
    }
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
    let manager = graph::subscriptions::ManagerSettings::from_config(config).map(|mut s| {
        s.encryption = encryption;
        Arc::new(graph::subscriptions::SubscriptionManager::new(
            store.clone(),
            g.clone(),
            s,
            graph::subscriptions::wanted(&routes)
                .into_iter()
                .chain(mailbox_wanted.iter().cloned())
                .collect(),
        ))
    });
    let mut relay = sync::to_dingtalk::OutlookRelay::new(
        store.clone(),
        g.clone(),
        clients.http.clone(),
        clients.dingtalk.clone(),
        routes,
        manager.clone(),
    )
    .with_mailbox_routes(mailbox_wanted.iter().map(|w| w.route.clone()).collect());
    if let (Some(path), Ok(Some(id))) = (
        &config.graph.notification_private_key_path,
        config.graph.credentials(),
    ) {
        let key = graph::notifications::load_private_key(path).map_err(anyhow::Error::msg)?;
        let jwks_url = format!(
            "{}{}",
            config.graph.authority_url().trim_end_matches('/'),
            graph::jwks::DEFAULT_JWKS_PATH
        );
        relay = relay.with_rich(
            graph::jwks::JwksValidator::new(clients.http.clone(), jwks_url, id.client_id),
            key,
        );
    }
    let relay = Arc::new(relay);
    registry.register(jobs::GRAPH_NOTIFICATION, relay.clone());
    registry.register(jobs::GRAPH_LIFECYCLE, relay.clone());
    registry.register(jobs::GRAPH_RESYNC, relay);
    Ok(manager)
}

/// Registers REST hook deliveries (guarded DNS, no redirects); answers the target policy
/// the hook endpoints check new targets against.
pub fn register_hook_delivery(
    registry: &mut Registry,
    config: &Config,
    store: &SharedStore,
) -> anyhow::Result<Arc<outbound::target::TargetPolicy>> {
    let policy = Arc::new(outbound::target::TargetPolicy::new(
        &config.hooks.allow_private_targets,
    ));
    let client = outbound::client(
        policy.clone(),
        Duration::from_secs(config.hooks.timeout_secs),
    )?;
    registry.register(
        jobs::HOOK_DELIVERY,
        Arc::new(outbound::HookDeliverer::new(
            store.clone(),
            client,
            policy.clone(),
            Duration::from_secs(config.hooks.gone_grace_secs),
        )),
    );
    Ok(policy)
}

/// The actions, run by the Graph and DingTalk clients; without them an action answers
/// 404 `not_configured`.
pub fn actions(store: &SharedStore, clients: &Clients) -> actions::Actions {
    let mut actions = actions::Actions::standard();
    actions.set_store(store.clone());
    if let Some(g) = &clients.graph {
        actions.set_backend(
            actions::Family::Outlook,
            Arc::new(actions::outlook::OutlookBackend::new(g.clone())),
        );
    }
    if let Some(d) = &clients.dingtalk {
        actions.set_backend(
            actions::Family::DingTalk,
            Arc::new(actions::dingtalk::DingTalkBackend::new(d.clone())),
        );
    }
    actions
}

/// The failed-push backfill, when DingTalk's API and the push crypto are configured.
pub fn backfill(
    config: &Config,
    store: &SharedStore,
    clients: &Clients,
    push_crypto: &Option<CallbackCrypto>,
) -> Option<dingtalk::backfill::Backfill> {
    let dt = &config.dingtalk;
    match (&clients.dingtalk, push_crypto) {
        (Some(client), Some(_)) if dt.backfill_interval_secs > 0 => {
            Some(dingtalk::backfill::Backfill::start(
                store.clone(),
                client.clone(),
                config.dedupe_ttl(),
                Duration::from_secs(dt.backfill_interval_secs),
            ))
        }
        _ => None,
    }
}

/// The Stream-mode connection, when enabled with an app key and secret.
pub fn stream(
    config: &Config,
    store: &SharedStore,
    clients: &Clients,
    cancel: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let dt = &config.dingtalk;
    let (true, Some(app_key), Some(app_secret)) = (dt.stream_enabled, &dt.app_key, &dt.app_secret)
    else {
        return None;
    };
    let mut settings = StreamSettings::new(app_key.clone(), app_secret.clone());
    settings.api_base_url = dt.api_base_url().to_string();
    let sink = Arc::new(dingtalk::events::PipelineSink::new(
        store.clone(),
        config.dedupe_ttl(),
    ));
    Some(dingtalk::stream::spawn(
        settings,
        clients.http.clone(),
        sink,
        cancel.clone(),
    ))
}

/// To Do polling under a store lease, when Graph and DingTalk are configured and a route
/// relays to-dos.
pub fn todo_poll(
    config: &Config,
    store: &SharedStore,
    clients: &Clients,
) -> Option<leader::LeaderTask> {
    let (Some(g), Some(d), secs) = (
        &clients.graph,
        &clients.dingtalk,
        config.graph.todo_poll_interval_secs,
    ) else {
        return None;
    };
    if secs == 0 {
        return None;
    }
    let poller = Arc::new(sync::todo_sync::TodoPoller::new(
        store.clone(),
        g.clone(),
        d.clone(),
        &config.routes,
    )?);
    Some(leader::LeaderTask::start(
        store.clone(),
        sync::todo_sync::LEASE,
        "To Do polling",
        Duration::from_secs(secs),
        move || {
            let poller = poller.clone();
            async move { poller.poll_all().await }
        },
    ))
}

/// The DingTalk Mail ⇄ Outlook sync of the mailbox routes, each way as the route says
/// (one IMAP connection per route across all instances, under a store lease).
pub async fn mailbox_sync(
    config: &Config,
    store: &SharedStore,
    clients: &Clients,
) -> Option<sync::mailbox::MailboxSync> {
    sync::mailbox::MailboxSync::start(store.clone(), clients.graph.clone(), &config.mailbox_routes)
        .await
}

/// The HTTP server: the routes behind the request context and the body deadline, serving
/// at most `max_connections` clients at once (lowered to fit the open-file limit).
pub fn http_server(
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
pub async fn index_existing_records(store: SharedStore) {
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
