//! Graph change notifications at the door: handshake, clientState, dedupe, errors.

use crate::common;

use common::{RedisServer, env::Env, error_code};
use serde_json::json;

fn seed_subscription(redis: &RedisServer, id: &str, client_state: &str) {
    let record = json!({
        "id": id, "route": "ops", "mailbox": "ops@contoso.com", "watched": "messages",
        "resource": "users/ops@contoso.com/mailFolders('inbox')/messages",
        "client_state": client_state, "expires_at": "2026-11-28T00:00:00Z",
    });
    let mut c = redis.client();
    let _: () = redis::cmd("SET")
        .arg(format!("dingbridge:kv:graph:sub:{id}"))
        .arg(record.to_string())
        .query(&mut c)
        .expect("seed");
}

fn notification(sub: &str, client_state: &str, id: &str) -> serde_json::Value {
    json!({"value": [{
        "id": id, "subscriptionId": sub, "clientState": client_state,
        "changeType": "created", "tenantId": "t1",
        "resource": "Users/u1/Messages/AAMk1",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": "AAMk1"},
        "subscriptionExpirationDateTime": "2026-11-28T00:00:00Z"
    }]})
}

fn queued(redis: &RedisServer) -> u64 {
    let mut c = redis.client();
    let ready: u64 = redis::cmd("XLEN")
        .arg("dingbridge:queue")
        .query(&mut c)
        .unwrap_or(0);
    let dead: u64 = redis::cmd("XLEN")
        .arg("dingbridge:queue:dead")
        .query(&mut c)
        .unwrap_or(0);
    let delayed: u64 = redis::cmd("ZCARD")
        .arg("dingbridge:queue:delayed")
        .query(&mut c)
        .unwrap_or(0);
    ready + dead + delayed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validation_handshake_echoes_the_decoded_token_as_plain_text() {
    let app = Env::new().spawn();
    for path in ["/webhooks/graph", "/webhooks/graph/lifecycle"] {
        let resp = app
            .http
            .post(app.url(&format!(
                "{path}?validationToken=Validation%3A%20Testing%20client%20application"
            )))
            .header("Content-Type", "text/plain; charset=utf-8")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .expect("ct")
                .starts_with("text/plain")
        );
        assert_eq!(
            resp.text().await.expect("body"),
            "Validation: Testing client application"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_with_the_right_client_state_are_queued_once_and_others_ignored() {
    let redis = RedisServer::start();
    let app = Env::new()
        .redis(&redis)
        .set("DINGBRIDGE_WORKERS_CONCURRENCY", "1")
        .spawn();
    seed_subscription(&redis, "sub-1", "state-secret");
    let post =
        |body: serde_json::Value| app.http.post(app.url("/webhooks/graph")).json(&body).send();
    let r = post(notification("sub-1", "state-secret", "n-1"))
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["accepted"],
        1
    );
    let r = post(notification("sub-1", "state-secret", "n-1"))
        .await
        .expect("post");
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["duplicates"],
        1
    );
    let r = post(notification("sub-1", "wrong-state", "n-2"))
        .await
        .expect("post");
    assert_eq!(r.status(), 202, "a mismatch is still acknowledged");
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["ignored"],
        1
    );
    let r = post(notification("sub-unknown", "state-secret", "n-3"))
        .await
        .expect("post");
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["ignored"],
        1
    );
    assert_eq!(
        queued(&redis),
        1,
        "only the genuine notification was queued"
    );
    let ignored = app
        .metric("graph_notifications_ignored_total{reason=\"client_state_mismatch\"}")
        .await;
    assert_eq!(ignored, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_notifications_get_400_and_a_store_outage_gets_503() {
    let mut redis = RedisServer::start();
    let app = Env::new().redis(&redis).spawn();
    let resp = app
        .http
        .post(app.url("/webhooks/graph"))
        .body("{nope")
        .send()
        .await
        .expect("post");
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "invalid_json"));
    redis.stop();
    let resp = app
        .http
        .post(app.url("/webhooks/graph"))
        .json(&notification("sub-1", "s", "n-9"))
        .send()
        .await
        .expect("post");
    assert!(resp.headers().contains_key("retry-after"));
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
}

fn get_calls(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.client())
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Anyone can POST to the notification URL: a forged batch must cost one store read per
/// subscription it names, one log line, and nothing at all past a cap no Graph batch nears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_notification_batch_costs_one_read_per_subscription_and_one_log_line() {
    let redis = RedisServer::start();
    let app = Env::new().redis(&redis).spawn();
    seed_subscription(&redis, "sub-1", "state-secret");
    let item = |sub: &str, n: usize| {
        let mut v = notification(sub, "made-up", &format!("forged-{n}"))["value"][0].clone();
        v["resourceData"]["id"] = json!(format!("AAMk{n}"));
        v
    };
    let post = |value: Vec<serde_json::Value>| {
        app.http
            .post(app.url("/webhooks/graph"))
            .json(&json!({ "value": value }))
            .send()
    };

    let before = get_calls(&redis);
    let batch: Vec<_> = (0..600)
        .map(|n| item(["sub-1", "sub-x", "sub-y"][n % 3], n))
        .collect();
    let r = post(batch).await.expect("post");
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["ignored"],
        600
    );
    let reads = get_calls(&redis) - before;
    assert!(reads <= 10, "{reads} store reads for 3 subscriptions");
    let lines = app
        .logs()
        .iter()
        .filter(|l| l.contains("graph notification"))
        .count();
    assert_eq!(lines, 1, "one summary line");

    let too_many: Vec<_> = (0..1_001).map(|n| item("sub-1", n)).collect();
    let (status, code, _) = error_code(post(too_many).await.expect("post")).await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    let made_up: Vec<_> = (0..100).map(|n| item(&format!("sub-{n}"), n)).collect();
    let before = get_calls(&redis);
    let (status, code, _) = error_code(post(made_up).await.expect("post")).await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    assert!(get_calls(&redis) - before <= 5, "refused before any read");
}
