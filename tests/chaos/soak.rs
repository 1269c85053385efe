//! Soak: bursts of events, each drained to an empty queue before the next. Memory must
//! come back to where it was after the first burst: nothing may be kept per event.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    common::{FakeReply, FakeServer, RedisServer, eventually},
    echo_env, env_or, post_echo, report, spawn,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_after_ten_drained_bursts_stays_within_ten_percent_of_the_first() {
    let per_burst = env_or("CHAOS_SOAK_EVENTS", 15_000);
    let bursts = env_or("CHAOS_SOAK_BURSTS", 10);
    let redis = RedisServer::start();
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = delivered.clone();
    let sink = FakeServer::start(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        FakeReply::status(200)
    });
    let app = spawn(&echo_env(&redis.url(), &sink.url("/sink")));
    let http = reqwest::Client::new();
    let base = app.url("");
    let mut rss = Vec::new();
    for burst in 0..bursts {
        let next = Arc::new(AtomicU64::new(0));
        let senders: Vec<_> = (0..16)
            .map(|_| {
                let (http, base, next) = (http.clone(), base.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= per_burst {
                            return;
                        }
                        let id = format!("soak-{burst}-{n}");
                        while post_echo(&http, &base, &id).await != Some(202) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        for s in senders {
            s.await.expect("sender");
        }
        let want = per_burst * (burst + 1);
        eventually(Duration::from_secs(120), || {
            std::future::ready((delivered.load(Ordering::Relaxed) >= want).then_some(()))
        })
        .await
        .expect("the burst drains");
        // Let the metrics upkeep (every 5 s) and the allocator settle.
        tokio::time::sleep(Duration::from_secs(6)).await;
        rss.push(app.rss_kib().expect("rss"));
    }
    let (first, last) = (rss[0], rss[rss.len() - 1]);
    let growth = last as f64 / first as f64 - 1.0;
    report(
        "soak",
        serde_json::json!({
            "bursts": bursts,
            "events_per_burst": per_burst,
            "rss_kib_after_each_burst": rss,
            "growth_first_to_last_percent": (growth * 1000.0).round() / 10.0,
        }),
    );
    assert!(
        growth <= 0.10,
        "RSS grew {:.1} % from the first burst to the last: {rss:?}",
        growth * 100.0
    );
}
