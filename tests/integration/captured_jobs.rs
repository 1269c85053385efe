//! Jobs queued in Redis by the version before `jobs::Task` still run. The files under
//! `tests/fixtures/jobs/` are jobs that version wrote while its integration tests ran
//! (`src/jobs.rs` names the test each one came from); here they are put into the queue
//! stream byte for byte as it stored them, and the current handlers run every one.

use crate::common::{self, FakeReply, FakeServer};

use std::{sync::Arc, time::Duration};

use dingbridge::{
    config::WorkerConfig,
    echo::EchoHandler,
    graph::{Credential, GraphClient, TokenProvider},
    hooks::{self, Hook},
    jobs,
    outbound::{self, HookDeliverer, target::TargetPolicy},
    store::{SharedStore, redis::RedisStore},
    sync::{routes::Routes, to_dingtalk::OutlookRelay, to_outlook::RelayHandler},
    worker::{Registry, WorkerPool},
};
use serde_json::Value;

const QUEUE: &str = "dingbridge:queue";
/// Nothing listens here: no handler may call Graph for these jobs (their routes are not
/// configured), and a call would fail the job.
const NOWHERE: &str = "http://127.0.0.1:9";

/// Every captured job: (file name, the stored text, the job as JSON).
fn captured() -> Vec<(String, String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jobs");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(e.path()).expect("readable");
            let text = text.trim_end().to_string();
            let json = serde_json::from_str(&text).expect("a job");
            (name, text, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn of_kind<'a>(all: &'a [(String, String, Value)], kind: &str) -> Vec<&'a Value> {
    all.iter()
        .map(|(_, _, j)| j)
        .filter(|j| j["kind"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_by_the_previous_version_run_to_completion() {
    let all = captured();
    for kind in [
        jobs::DINGTALK_EVENT,
        jobs::GRAPH_NOTIFICATION,
        jobs::GRAPH_LIFECYCLE,
        jobs::GRAPH_RESYNC,
        jobs::HOOK_DELIVERY,
        jobs::ECHO,
    ] {
        assert!(!of_kind(&all, kind).is_empty(), "no captured `{kind}` job");
    }
    let redis = common::RedisServer::start();
    let mut conn = redis.client();
    for (_, text, _) in &all {
        let _: String = redis::cmd("XADD")
            .arg(&[QUEUE, "*", "job", text])
            .query(&mut conn)
            .expect("xadd");
    }
    let store: SharedStore = Arc::new(
        RedisStore::connect(&redis.url(), "dingbridge:", 1000)
            .await
            .expect("store"),
    );

    // The hook the captured delivery names, pointing at a local receiver.
    let receiver = FakeServer::start(|_| FakeReply::status(204));
    let delivery = of_kind(&all, jobs::HOOK_DELIVERY)[0];
    let mut hook = Hook::new(&receiver.url("/hook"), "sync.failed", "key-1", "tests");
    hook.id = delivery["payload"]["hook_id"]
        .as_str()
        .expect("hook id")
        .to_string();
    hooks::save(store.as_ref(), &hook).await.expect("hook");
    let echo_target = FakeServer::start(|_| FakeReply::status(200));

    let http = reqwest::Client::new();
    let loopback = dingbridge::config::AllowedNet::parse("127.0.0.1").expect("an address");
    let policy = Arc::new(TargetPolicy::new(&[loopback]));
    let auth = TokenProvider::new(
        http.clone(),
        NOWHERE,
        "tenant",
        "client",
        Credential::Secret("secret".to_string().into()),
    );
    let graph = Arc::new(GraphClient::new(http.clone(), NOWHERE, Arc::new(auth)));
    let outlook = Arc::new(OutlookRelay::new(
        store.clone(),
        graph,
        http.clone(),
        None,
        Vec::new(),
        None,
    ));
    let mut registry = Registry::default();
    registry.register(
        jobs::DINGTALK_EVENT,
        Arc::new(RelayHandler::new(
            store.clone(),
            Routes::new(Vec::new()),
            None,
            None,
            http.clone(),
        )),
    );
    registry.register(jobs::GRAPH_NOTIFICATION, outlook.clone());
    registry.register(jobs::GRAPH_LIFECYCLE, outlook.clone());
    registry.register(jobs::GRAPH_RESYNC, outlook);
    registry.register(
        jobs::HOOK_DELIVERY,
        Arc::new(HookDeliverer::new(
            store.clone(),
            outbound::client(policy.clone(), Duration::from_secs(5)).expect("client"),
            policy,
            Duration::from_secs(3600),
        )),
    );
    registry.register(
        jobs::ECHO,
        Arc::new(EchoHandler::new(http.clone(), echo_target.url("/echo"))),
    );
    let pool = WorkerPool::start(store.clone(), registry, WorkerConfig::default());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let depth = store.queue_depth().await.expect("depth");
        if depth.ready + depth.delayed + depth.in_flight == 0 || depth.dead > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs still queued: {depth:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.shutdown(Duration::from_secs(5)).await;
    let dead = store.dead_letters(100).await.expect("dead letters");
    assert!(dead.is_empty(), "dead-lettered: {dead:#?}");
    let depth = store.queue_depth().await.expect("depth");
    assert_eq!(
        depth.ready + depth.delayed + depth.in_flight,
        0,
        "{depth:?}"
    );

    // Echo: each payload posted as it was received, keyed by the job id.
    let echoes = echo_target.requests();
    let echo_jobs = of_kind(&all, jobs::ECHO);
    assert_eq!(echoes.len(), echo_jobs.len());
    for job in echo_jobs {
        let id = job["id"].as_str().expect("id");
        let got = echoes
            .iter()
            .find(|r| r.header("idempotency-key") == Some(id))
            .unwrap_or_else(|| panic!("echo of {id} not posted"));
        assert_eq!(got.json(), job["payload"]);
    }

    // The hook delivery: the event, signed, byte for byte as the previous version sent it.
    let posted = receiver.requests();
    assert_eq!(posted.len(), 1, "one delivery");
    let event = &delivery["payload"]["event"];
    assert_eq!(posted[0].body, event.to_string().into_bytes());
    assert_eq!(
        posted[0].header("webhook-id"),
        Some(outbound::message_id(&hook.id, event["id"].as_str().expect("event id")).as_str())
    );

    // Every DingTalk event reached the relay: each is in the audit trail under its job id.
    let audit = store.audit_recent(1000).await.expect("audit");
    for job in of_kind(&all, jobs::DINGTALK_EVENT) {
        assert!(
            audit.iter().any(|a| a.detail["job_id"] == job["id"]),
            "no audit entry for {}",
            job["id"]
        );
    }
}
