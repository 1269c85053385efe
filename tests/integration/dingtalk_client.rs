//! The DingTalk API client against a local fake of DingTalk's endpoints.

use crate::common;

use std::{sync::Arc, time::Duration};

use common::{FakeReply, FakeServer};
use dingbridge::{
    dingtalk::{
        client::{DingTalkClient, DingTalkSettings},
        custom_robot,
    },
    store::{SharedStore, memory::MemoryStore},
};
use serde_json::json;

fn fake_dingtalk() -> FakeServer {
    FakeServer::start(|r| match r.path.as_str() {
        "/gettoken" => FakeReply::json(
            json!({"errcode": 0, "errmsg": "ok", "access_token": "tok-1", "expires_in": 7200}),
        )
        .delayed(Duration::from_millis(100)),
        p if p.ends_with("/tasks/sources/src-1") => FakeReply {
            body: json!({"code": "taskNotExist", "message": "no"}).to_string(),
            ..FakeReply::status(404)
        },
        p if p.ends_with("/events") || p.ends_with("/tasks") => {
            FakeReply::json(json!({"id": "created-1"}))
        }
        "/robot/send" => FakeReply::json(json!({"errcode": 0, "errmsg": "ok"})),
        _ => FakeReply::json(json!({})),
    })
}

fn client(fake: &FakeServer, store: SharedStore, budget: u64) -> DingTalkClient {
    DingTalkClient::new(
        reqwest::Client::new(),
        DingTalkSettings {
            api_base_url: fake.url(""),
            oapi_base_url: fake.url(""),
            app_key: "dingappkey".into(),
            app_secret: "app-secret".to_string().into(),
            qps_per_api: 20,
            monthly_budget: budget,
        },
        store,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_token_fetch() {
    let fake = fake_dingtalk();
    let c = Arc::new(client(&fake, Arc::new(MemoryStore::new(10)), 5000));
    let tokens = futures::future::join_all((0..20).map(|_| {
        let c = c.clone();
        async move { c.access_token().await.expect("token") }
    }))
    .await;
    assert!(tokens.iter().all(|t| t == "tok-1"));
    let fetches = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/gettoken")
        .count();
    assert_eq!(fetches, 1);
    assert!(fake.requests()[0].query.contains("appkey=dingappkey"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_writes_carry_the_client_token_and_todos_look_up_their_source_first() {
    let fake = fake_dingtalk();
    let c = client(&fake, Arc::new(MemoryStore::new(10)), 5000);
    c.create_calendar_event("union-1", &json!({"summary": "Customs"}), "ct-42")
        .await
        .expect("create event");
    c.create_todo(
        "union-1",
        &json!({"subject": "Papers", "sourceId": "src-1"}),
    )
    .await
    .expect("create todo");
    let reqs = fake.requests();
    let ev = reqs
        .iter()
        .find(|r| r.path == "/v1.0/calendar/users/union-1/calendars/primary/events")
        .expect("event call");
    assert_eq!(ev.header("x-client-token"), Some("ct-42"));
    assert_eq!(ev.header("x-acs-dingtalk-access-token"), Some("tok-1"));
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    let lookup = paths
        .iter()
        .position(|p| p.ends_with("/tasks/sources/src-1"))
        .expect("lookup by sourceId");
    let create = paths
        .iter()
        .position(|p| *p == "/v1.0/todo/users/union-1/tasks")
        .expect("create");
    assert!(lookup < create);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_robot_sends_are_signed_idempotent_and_held_to_20_a_minute() {
    let fake = fake_dingtalk();
    let store: SharedStore = Arc::new(MemoryStore::new(10));
    let http = reqwest::Client::new();
    let url = fake.url("/robot/send?access_token=abc");
    let secret = "SEC0123456789abcdef";
    let mut throttled = None;
    for i in 0..21 {
        let r = custom_robot::send(
            &http,
            &store,
            &url,
            Some(secret),
            &json!({"msgtype": "text", "text": {"content": format!("m{i}")}}),
            &format!("uuid-{i}"),
        )
        .await;
        if let Err(e) = r {
            throttled = Some((i, e));
            break;
        }
    }
    let (index, err) = throttled.expect("the 21st message in a minute waits");
    // A minute boundary may fall inside the loop; then the limit applies one message later.
    assert!(index >= 20, "sent {index} before throttling");
    assert!(
        err.retry_after
            .is_some_and(|d| d <= Duration::from_secs(61))
    );
    let first = &fake.requests()[0];
    assert_eq!(first.json()["msgUuid"], "uuid-0");
    let query: Vec<(String, String)> = url::form_urlencoded::parse(first.query.as_bytes())
        .into_owned()
        .collect();
    let ts = &query
        .iter()
        .find(|(k, _)| k == "timestamp")
        .expect("timestamp")
        .1;
    let sign = &query.iter().find(|(k, _)| k == "sign").expect("sign").1;
    let expected = dingbridge::dingtalk::sign::robot_send_sign(secret, ts.parse().expect("ms"));
    assert_eq!(sign, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_are_counted_against_the_monthly_budget() {
    let fake = fake_dingtalk();
    let store: SharedStore = Arc::new(MemoryStore::new(10));
    let c = client(&fake, store.clone(), 5);
    for _ in 0..4 {
        c.get_todo("u", "t").await.expect("get");
    }
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let n = store
        .incr(&format!("dingtalk:calls:dingappkey:{month}"), 0, None)
        .await
        .expect("counter");
    assert_eq!(n, 4, "token fetches are not counted, API calls are");
}
