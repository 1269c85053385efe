//! One builder for the environment a test starts the service (or runs a CLI command)
//! with: the `DINGBRIDGE_*` variables that point it at Redis and the fakes, and the
//! configuration file with its routes.

use std::sync::Arc;

use super::{
    RedisServer, TestApp,
    dingtalk_fake::{AES_KEY, APP_KEY, APP_SECRET, DingTalk, TOKEN},
    dovecot::Dovecot,
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
/// The echo relay's token in these tests.
pub const ECHO_TOKEN: &str = "echo-token-for-tests";

/// One `[[routes]]` entry of the configuration file [`Env::routes`] writes.
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

/// One route, `customs`: [`MAILBOX`] and [`CONVERSATION`], no deletes.
pub fn default_routes() -> Vec<Route<'static>> {
    vec![Route {
        name: "customs",
        mailbox: MAILBOX,
        conversation: CONVERSATION,
        allow_deletes: false,
    }]
}

/// The configuration file of these routes, each relaying every DingTalk kind to Outlook.
fn routes_toml(routes: &[Route<'_>]) -> String {
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
    toml
}

/// The environment of a `dingbridge` process, built up by the test: `Env::new()` (nothing
/// but the harness defaults: memory store, no configuration file) and then the parts it
/// needs. Variables set later replace earlier ones.
#[derive(Clone, Default)]
pub struct Env {
    vars: Vec<(String, String)>,
    /// Holds the configuration file [`Env::config_toml`] wrote; every app started from
    /// this environment keeps it too, so it outlives them all.
    dir: Option<Arc<tempfile::TempDir>>,
}

impl Env {
    /// An empty environment.
    pub fn new() -> Env {
        Env::default()
    }

    /// Everything a relay test needs: the store on `redis`, the DingTalk app on its fake,
    /// Graph on its fake, and quick retries.
    pub fn relays(redis: &RedisServer, graph: &GraphFake, dt: &DingTalk) -> Env {
        Env::new()
            .redis(redis)
            .dingtalk(dt)
            .graph(graph)
            .backoff_ms(100, 1000)
            .set("DINGBRIDGE_WORKERS_MAX_ATTEMPTS", "30")
    }

    /// Sets (or replaces) one variable.
    pub fn set(mut self, k: &str, v: &str) -> Env {
        self.vars.retain(|(key, _)| key != k);
        self.vars.push((k.into(), v.into()));
        self
    }

    /// The value of one variable, if set.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) these variables, in order.
    pub fn set_all(self, vars: &[(&str, &str)]) -> Env {
        vars.iter().fold(self, |env, (k, v)| env.set(k, v))
    }

    /// The store: a Redis URL (several, comma-separated, for a cluster) or `memory`.
    pub fn store(self, url: &str) -> Env {
        self.set("DINGBRIDGE_STORE_URL", url)
    }

    /// The store is this Redis.
    pub fn redis(self, redis: &RedisServer) -> Env {
        self.store(&redis.url())
    }

    /// The configuration file at `path`.
    pub fn config(self, path: &str) -> Env {
        self.set("DINGBRIDGE_CONFIG", path)
    }

    /// Writes `text` as the configuration file and uses it.
    pub fn config_toml(mut self, text: &str) -> Env {
        let dir = self
            .dir
            .get_or_insert_with(|| Arc::new(tempfile::tempdir().expect("tempdir")))
            .clone();
        let path = dir.path().join("dingbridge.toml");
        std::fs::write(&path, text).expect("write config");
        self.config(path.to_str().expect("utf-8 path"))
    }

    /// Writes a configuration file with these routes (every DingTalk kind to Outlook).
    pub fn routes(self, routes: &[Route<'_>]) -> Env {
        self.config_toml(&routes_toml(routes))
    }

    /// A configuration file with one `[[mailbox_routes]]` entry `name` for the mailbox of
    /// `dovecot` (implicit TLS, its throwaway certificate trusted) and [`MAILBOX`] in
    /// Outlook; `extra` holds further route settings (`start = "days:30"`,
    /// `poll_interval_secs = 1`…), one per line.
    pub fn mailbox_route(self, dovecot: &Dovecot, name: &str, extra: &str) -> Env {
        self.config_toml(&dovecot.route_toml(name, extra))
    }

    /// The listening address (the harness default is `127.0.0.1:0`).
    pub fn listen(self, addr: &str) -> Env {
        self.set("DINGBRIDGE_LISTEN", addr)
    }

    /// Microsoft Graph on the fake: tenant, client, both URLs, and the client secret
    /// unless the fake wants a certificate.
    pub fn graph(self, graph: &GraphFake) -> Env {
        let c = graph.config();
        let env = self
            .set("DINGBRIDGE_GRAPH_TENANT_ID", &c.tenant)
            .set("DINGBRIDGE_GRAPH_CLIENT_ID", &c.client_id)
            .set("DINGBRIDGE_GRAPH_BASE_URL", &graph.graph_base())
            .set("DINGBRIDGE_GRAPH_AUTHORITY_URL", &graph.authority());
        match (&c.certificate_pem, &c.client_secret) {
            (None, Some(secret)) => env.set("DINGBRIDGE_GRAPH_CLIENT_SECRET", secret),
            _ => env,
        }
    }

    /// The DingTalk app on the DingTalk fake: its keys, the HTTP push credentials and
    /// both API base URLs; the failed-push backfill off.
    pub fn dingtalk(self, dt: &DingTalk) -> Env {
        self.set("DINGBRIDGE_DINGTALK_APP_KEY", APP_KEY)
            .set("DINGBRIDGE_DINGTALK_APP_SECRET", APP_SECRET)
            .set("DINGBRIDGE_DINGTALK_CALLBACK_TOKEN", TOKEN)
            .set("DINGBRIDGE_DINGTALK_AES_KEY", AES_KEY)
            .dingtalk_api(&dt.base())
            .set("DINGBRIDGE_DINGTALK_BACKFILL_INTERVAL_SECS", "0")
    }

    /// Both DingTalk API base URLs (`api` and `oapi`).
    pub fn dingtalk_api(self, base: &str) -> Env {
        self.set("DINGBRIDGE_DINGTALK_API_BASE_URL", base)
            .set("DINGBRIDGE_DINGTALK_OAPI_BASE_URL", base)
    }

    /// The echo relay, posting to `target`, with [`ECHO_TOKEN`].
    pub fn echo(self, target: &str) -> Env {
        self.set("DINGBRIDGE_ECHO_TARGET_URL", target)
            .set("DINGBRIDGE_ECHO_TOKEN", ECHO_TOKEN)
    }

    /// The workers' retry back-off: first and longest delay in milliseconds.
    pub fn backoff_ms(self, base: u64, max: u64) -> Env {
        self.set("DINGBRIDGE_WORKERS_BACKOFF_BASE_MS", &base.to_string())
            .set("DINGBRIDGE_WORKERS_BACKOFF_MAX_MS", &max.to_string())
    }

    /// REST hooks may target loopback (where the tests' receivers listen).
    pub fn loopback_hooks(self) -> Env {
        self.set("DINGBRIDGE_HOOKS_ALLOW_PRIVATE_TARGETS", "127.0.0.1")
    }

    /// API keys given as configuration entries (`name:scopes:sha256`).
    pub fn bootstrap_keys(self, entries: &str) -> Env {
        self.set("DINGBRIDGE_API_BOOTSTRAP_KEYS", entries)
    }

    /// Runs `dingbridge <args>` with these variables only.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_dingbridge"))
            .args(args)
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("dingbridge runs")
    }

    /// Starts `dingbridge serve` with these variables and waits until it listens.
    pub fn spawn(&self) -> TestApp {
        self.keep_files(TestApp::spawn(&self.pairs()))
    }

    /// Like [`Env::spawn`], under an open-file limit of `limit`.
    pub fn spawn_with_open_files(&self, limit: u64) -> TestApp {
        self.keep_files(TestApp::spawn_with_open_files(&self.pairs(), limit))
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn keep_files(&self, mut app: TestApp) -> TestApp {
        app.files = self.dir.clone();
        app
    }
}
