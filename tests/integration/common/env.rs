//! The environment a test starts the service with: the configuration file with its
//! routes, and the `DINGBRIDGE_*` variables that point it at Redis and the fakes.

use super::{
    RedisServer, TestApp,
    dingtalk_fake::{AES_KEY, APP_KEY, APP_SECRET, DingTalk, TOKEN},
    graph_fake::GraphFake,
};

/// The mailbox of the default route.
pub const MAILBOX: &str = "ops@contoso.com";
/// The DingTalk group of the default route.
pub const CONVERSATION: &str = "cid-customs==";
/// The DingTalk user (union id) of every route.
pub const UNION: &str = "union-1";
/// The client secret the Graph fake accepts by default.
pub const GRAPH_SECRET: &str = "fake-client-secret~value";

/// One `[[routes]]` entry of the configuration file [`config_file`] writes.
pub struct Route<'a> {
    /// Route name.
    pub name: &'a str,
    /// Outlook mailbox.
    pub mailbox: &'a str,
    /// DingTalk group (`conversation_id`).
    pub conversation: &'a str,
    /// Whether deletes are relayed.
    pub allow_deletes: bool,
}

/// Writes `dingbridge.toml` with these routes into `dir`; answers its path.
pub fn config_file(dir: &tempfile::TempDir, routes: &[Route<'_>]) -> String {
    let mut toml = String::new();
    for r in routes {
        toml.push_str(&format!(
            r#"
[[routes]]
name = "{}"
mailbox = "{}"
kinds = ["message", "event", "todo", "contact"]
allow_deletes = {}
[routes.dingtalk]
conversation_id = "{}"
union_id = "{UNION}"
robot_code = "robot-code-1"
"#,
            r.name, r.mailbox, r.allow_deletes, r.conversation
        ));
    }
    let path = dir.path().join("dingbridge.toml");
    std::fs::write(&path, toml).expect("write config");
    path.to_str().expect("utf-8").to_string()
}

/// One route, `customs`: [`MAILBOX`] and [`CONVERSATION`], no deletes.
pub fn default_routes() -> Vec<Route<'static>> {
    vec![Route {
        name: "customs",
        mailbox: MAILBOX,
        conversation: CONVERSATION,
        allow_deletes: false,
    }]
}

/// The environment of a `dingbridge` process wired to Redis, the Graph fake and the
/// DingTalk fake.
pub struct Env(Vec<(String, String)>);

impl Env {
    /// Every setting a relay needs: store, configuration file, DingTalk app and Graph.
    pub fn new(redis: &RedisServer, graph: &GraphFake, dt: &DingTalk, config: &str) -> Env {
        let c = graph.config();
        let mut v: Vec<(String, String)> = vec![
            ("DINGBRIDGE_STORE_URL".into(), redis.url()),
            ("DINGBRIDGE_CONFIG".into(), config.into()),
            ("DINGBRIDGE_DINGTALK_APP_KEY".into(), APP_KEY.into()),
            ("DINGBRIDGE_DINGTALK_APP_SECRET".into(), APP_SECRET.into()),
            ("DINGBRIDGE_DINGTALK_CALLBACK_TOKEN".into(), TOKEN.into()),
            ("DINGBRIDGE_DINGTALK_AES_KEY".into(), AES_KEY.into()),
            ("DINGBRIDGE_DINGTALK_API_BASE_URL".into(), dt.base()),
            ("DINGBRIDGE_DINGTALK_OAPI_BASE_URL".into(), dt.base()),
            (
                "DINGBRIDGE_DINGTALK_BACKFILL_INTERVAL_SECS".into(),
                "0".into(),
            ),
            ("DINGBRIDGE_GRAPH_TENANT_ID".into(), c.tenant.clone()),
            ("DINGBRIDGE_GRAPH_CLIENT_ID".into(), c.client_id.clone()),
            ("DINGBRIDGE_GRAPH_BASE_URL".into(), graph.graph_base()),
            ("DINGBRIDGE_GRAPH_AUTHORITY_URL".into(), graph.authority()),
            ("DINGBRIDGE_WORKERS_BACKOFF_BASE_MS".into(), "100".into()),
            ("DINGBRIDGE_WORKERS_BACKOFF_MAX_MS".into(), "1000".into()),
            ("DINGBRIDGE_WORKERS_MAX_ATTEMPTS".into(), "30".into()),
        ];
        if c.certificate_pem.is_none() {
            v.push(("DINGBRIDGE_GRAPH_CLIENT_SECRET".into(), GRAPH_SECRET.into()));
        }
        Env(v)
    }

    /// Sets (or replaces) one variable.
    pub fn set(mut self, k: &str, v: &str) -> Env {
        self.0.retain(|(key, _)| key != k);
        self.0.push((k.into(), v.into()));
        self
    }

    /// Runs `dingbridge <args>` with these variables only.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_dingbridge"))
            .args(args)
            .env_clear()
            .envs(self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("dingbridge runs")
    }

    /// Starts `dingbridge serve` with these variables.
    pub fn spawn(&self) -> TestApp {
        let pairs: Vec<(&str, &str)> = self
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        TestApp::spawn(&pairs)
    }
}
