//! Test harness: the real `dingbridge` binary on a random port, a throwaway
//! `redis-server` per test, and small local HTTP fakes that record what they receive.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, Once},
    time::{Duration, Instant},
};

pub mod dingtalk_fake;
pub mod dovecot;
pub mod env;
pub mod fake;
pub mod graph_fake;
pub mod inspect;
pub mod n8n;
pub mod smtp;
pub mod stream_gateway;

#[allow(unused_imports)]
pub use fake::{FakeReply, FakeServer, Recorded};

/// Makes sure `redis-server` exists, installing Debian's package when it is missing.
pub fn ensure_redis_server() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| ensure_program("redis-server", "redis-server"));
}

/// Makes sure `node` (18 or later, for `node --test` and `fetch`) exists, installing
/// Debian's package when it is missing.
pub fn ensure_node() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| ensure_program("node", "nodejs"));
}

/// Runs `program --version`; when that fails, installs Debian's `package`.
pub fn ensure_program(program: &str, package: &str) {
    let present = Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        return;
    }
    eprintln!("{program} missing: installing Debian's {package} package");
    let ok = Command::new("sh")
        .args([
            "-c",
            &format!(
                "(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}"
            ),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "could not install {package}");
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `redis-server` owned by one test; it can be stopped and started again on the same port.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a fresh server on a random port.
    pub fn start() -> RedisServer {
        ensure_redis_server();
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        server.start_again();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, with append-only persistence in a temp dir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                self.dir.path().to_str().expect("utf-8 path"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills the server (as an outage would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the server keeps its connections open but answers nothing (a hung Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// A synchronous client connection for inspecting state.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("redis connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters (no replicas) owned by one test: three
/// `redis-server`s in cluster mode on free ports, each with its own temp dir, joined by
/// `redis-cli --cluster create`. Dropping it stops them.
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
}

struct ClusterNode {
    port: u16,
    bus_port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl ClusterNode {
    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--cluster-port",
                &self.bus_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                self.dir.path().to_str().expect("utf-8 path"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl RedisCluster {
    /// Starts three masters and creates the cluster; returns once every node reports
    /// `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        ensure_redis_server();
        let mut nodes: Vec<ClusterNode> = (0..3)
            .map(|_| ClusterNode {
                port: free_port(),
                bus_port: free_port(),
                child: None,
                dir: tempfile::tempdir().expect("tempdir"),
            })
            .collect();
        for n in &mut nodes {
            n.start();
        }
        for n in &nodes {
            n.wait_listening();
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// The nodes' URLs, comma-separated (the form `DINGBRIDGE_STORE_URL` takes).
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// One `redis://127.0.0.1:<port>` per node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Kills every node (as an outage would); their cluster config stays in their dirs.
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }

    /// Starts every node again on its port; they rejoin from their saved cluster config.
    pub fn start_again(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
        for n in &self.nodes {
            n.wait_listening();
        }
        self.wait_ok();
    }

    /// A cluster-aware synchronous client for inspecting state.
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .and_then(|c| c.get_connection())
            .expect("cluster connection")
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let all_ok = self.nodes.iter().all(|n| {
                redis::Client::open(format!("redis://127.0.0.1:{}", n.port))
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .map(|info| info.contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if all_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One running `dingbridge serve` process.
pub struct TestApp {
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
    /// Files its [`env::Env`] wrote (the configuration), kept while the process may read them.
    files: Option<Arc<tempfile::TempDir>>,
}

impl TestApp {
    /// Starts the binary with these extra environment variables and waits until it listens
    /// (integration tests build the variables with [`env::Env`]).
    pub fn spawn(env: &[(&str, &str)]) -> TestApp {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dingbridge"));
        cmd.arg("serve");
        Self::spawn_command(cmd, env)
    }

    /// Same as [`TestApp::spawn`] under an open-file limit of `limit` (soft and hard, so
    /// that the service cannot raise it).
    pub fn spawn_with_open_files(env: &[(&str, &str)], limit: u64) -> TestApp {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" serve"),
            env!("CARGO_BIN_EXE_dingbridge"),
        ]);
        Self::spawn_command(cmd, env)
    }

    fn spawn_command(mut cmd: Command, env: &[(&str, &str)]) -> TestApp {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DINGBRIDGE_LISTEN", "127.0.0.1:0")
            .env("DINGBRIDGE_LOG_LEVEL", "info")
            .env("DINGBRIDGE_SHUTDOWN_TIMEOUT_SECS", "10")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("dingbridge starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = tx.send(addr);
                    }
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "dingbridge did not report its address; output:\n{}",
                    logs.lock().expect("logs").join("\n")
                );
            }
        };
        TestApp {
            addr,
            child,
            logs,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                // Well under the server's 5 s keep-alive: never reuse a connection the
                // server may be closing at that moment (a request would fail in flight).
                .pool_idle_timeout(Duration::from_secs(1))
                .build()
                .expect("client"),
            files: None,
        }
    }

    /// The process id (for its RSS, signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, from `/proc/<pid>/status` (KiB).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// SIGKILL: no cleanup at all, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit; returns its exit status success.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Reads one metric sample (exact label text) from `/metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l[series.len()..].trim().parse().ok())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()?.starts_with("listening on") {
        return v.get("addr")?.as_str()?.parse().ok();
    }
    None
}

/// Polls `check` until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the JSON error shape and returns the code.
pub async fn error_code(resp: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("error body is JSON");
    let err = &body["error"];
    assert!(err["code"].is_string(), "no code in {body}");
    assert!(err["message"].is_string(), "no message in {body}");
    assert!(err["request_id"].is_string(), "no request_id in {body}");
    (
        status,
        err["code"].as_str().unwrap_or_default().to_string(),
        body,
    )
}
