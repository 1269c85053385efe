//! A real n8n for the end-to-end test of the community nodes: a pinned n8n 2.x installed
//! with npm into a cache folder reused between runs, started headless on loopback with
//! telemetry off, and a small client for its REST API (owner session and public API).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Once,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// The newest n8n 2.x whose `engines` accepts Node 20 (`>=20.19 <= 24.x`); from 2.10 on
/// n8n asks for Node 22.16 or later, and this machine's Node is 20.
pub const N8N_VERSION: &str = "2.8.4";

/// Where downloaded test tools are kept between runs: `$DINGBRIDGE_TEST_CACHE`, else
/// `~/.cache/dingbridge-tests`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DINGBRIDGE_TEST_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/dingbridge-tests")
}

/// `node --version` as (major, minor), when node runs.
fn node_version() -> Option<(u32, u32)> {
    let out = Command::new("node").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.trim().trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Runs a command to completion and panics with its output when it fails.
pub fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The n8n entry script, installed into `cache_dir()/n8n-<version>` on first use (several
/// minutes: about 2 000 packages and sqlite3 compiled from source), reused afterwards.
pub fn ensure_n8n() -> PathBuf {
    static ONCE: Once = Once::new();
    let dir = cache_dir().join(format!("n8n-{N8N_VERSION}"));
    let bin = dir.join("node_modules/n8n/bin/n8n");
    ONCE.call_once(|| {
        super::ensure_node();
        let (major, minor) = node_version().expect("node --version");
        assert!(
            (major, minor) >= (20, 19),
            "n8n {N8N_VERSION} needs Node >= 20.19; this machine has {major}.{minor}"
        );
        if dir.join(".complete").exists() && bin.exists() {
            return;
        }
        let started = Instant::now();
        eprintln!(
            "installing n8n {N8N_VERSION} into {} (first run only; takes minutes)",
            dir.display()
        );
        let partial = cache_dir().join(format!("n8n-{N8N_VERSION}.partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).expect("cache dir");
        // n8n names its spreadsheet library by a URL outside the npm registry (which is
        // all this machine reaches); the registry's own `xlsx` stands in for it.
        fs::write(
            partial.join("package.json"),
            json!({"name": "n8n-test-install", "private": true, "overrides": {"xlsx": "0.18.5"}})
                .to_string(),
        )
        .expect("package.json");
        let mut npm = Command::new("npm");
        npm.args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg(format!("n8n@{N8N_VERSION}"))
            .current_dir(&partial);
        // sqlite3's prebuilt binary comes from outside the registry: it is compiled, against
        // the headers Node's package installs (node-gyp would download them otherwise).
        if Path::new("/usr/include/node/node.h").exists() {
            npm.env("npm_config_nodedir", "/usr");
        }
        run(&mut npm, "npm install n8n");
        fs::write(partial.join(".complete"), N8N_VERSION).expect("marker");
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&partial, &dir).expect("move the n8n install into place");
        eprintln!("n8n installed in {:?}", started.elapsed());
    });
    assert!(bin.exists(), "no n8n at {}", bin.display());
    bin
}

/// One n8n process over a user folder that outlives it (restarts keep its database).
pub struct N8n {
    pub port: u16,
    pub user_folder: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    http: reqwest::Client,
    /// The owner's session: `n8n-auth` cookie and the browser id it is bound to.
    cookie: Option<String>,
    browser_id: String,
    /// A public-API key of the owner.
    api_key: Option<String>,
}

impl N8n {
    /// An n8n (not yet started) on a free loopback port with its user folder in `dir`.
    pub fn new(bin: PathBuf, dir: &Path) -> N8n {
        N8n {
            port: super::free_port(),
            user_folder: dir.to_path_buf(),
            bin,
            child: None,
            log: dir.join("n8n.log"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            cookie: None,
            browser_id: format!("dingbridge-test-{}", std::process::id()),
            api_key: None,
        }
    }

    /// `http://localhost:<port>`: n8n's own default address, which resolves to `::1` and
    /// `127.0.0.1`.
    pub fn base(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// Where community packages go: `<user folder>/.n8n/nodes`.
    pub fn nodes_dir(&self) -> PathBuf {
        self.user_folder.join(".n8n/nodes")
    }

    /// Starts n8n headless and waits until its REST API answers (`/healthz/readiness`
    /// answers earlier, once the database is ready but before the routes are).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new("node")
            .arg(&self.bin)
            .arg("start")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.user_folder)
            .env("N8N_USER_FOLDER", &self.user_folder)
            .env("N8N_PORT", self.port.to_string())
            .env("N8N_LISTEN_ADDRESS", "127.0.0.1")
            .env("N8N_HOST", "localhost")
            .env("N8N_PROTOCOL", "http")
            // Nothing leaves the machine: no telemetry, update checks, templates or banners.
            .env("N8N_DIAGNOSTICS_ENABLED", "false")
            .env("N8N_VERSION_NOTIFICATIONS_ENABLED", "false")
            .env("N8N_TEMPLATES_ENABLED", "false")
            .env("N8N_PERSONALIZATION_ENABLED", "false")
            .env("N8N_HIRING_BANNER_ENABLED", "false")
            .env("N8N_AI_ENABLED", "false")
            .env("N8N_DISABLE_UI", "true")
            .env("N8N_SECURE_COOKIE", "false")
            .env("N8N_ENCRYPTION_KEY", "dingbridge-test-encryption-key")
            .env("N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS", "false")
            // The JavaScript task runner in a child process, its broker on a free port.
            .env("N8N_RUNNERS_MODE", "internal")
            .env("N8N_RUNNERS_BROKER_PORT", super::free_port().to_string())
            .env("N8N_LOG_LEVEL", "info")
            .env("N8N_LOG_OUTPUT", "console")
            .env("DB_SQLITE_POOL_SIZE", "2")
            .env("EXECUTIONS_DATA_SAVE_ON_SUCCESS", "all")
            .env("N8N_REINSTALL_MISSING_PACKAGES", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("n8n starts");
        self.child = Some(child);
        let started = Instant::now();
        let ready = self.base() + "/rest/login";
        while started.elapsed() < Duration::from_secs(120) {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("n8n exited ({status}):\n{}", self.log_tail());
            }
            // While it starts, n8n answers every path 200 "n8n is starting up" (text/html);
            // once up, `/rest/login` answers JSON (401 without a session).
            if let Ok(r) = self.http.get(&ready).send().await
                && r.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.starts_with("application/json"))
            {
                eprintln!("n8n ready in {:?}", started.elapsed());
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("n8n's API not up after 120 s:\n{}", self.log_tail());
    }

    /// Stops n8n (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last 60 lines of n8n's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Sets up the owner account (a fresh n8n) and mints a public-API key.
    pub async fn setup_owner(&mut self) {
        let resp = self
            .http
            .post(self.base() + "/rest/owner/setup")
            .header("browser-id", &self.browser_id)
            .json(&json!({
                "email": "owner@example.com", "firstName": "Test", "lastName": "Owner",
                "password": "Dingbridge-Test-1",
            }))
            .send()
            .await
            .expect("owner setup");
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("n8n-auth="))
            .and_then(|c| c.split(';').next())
            .map(str::to_string);
        let status = resp.status();
        let headers = format!("{:?}", resp.headers());
        let body = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "owner setup: {status} {body}");
        self.cookie =
            Some(cookie.unwrap_or_else(|| panic!("no n8n-auth cookie: {headers} {body}")));
        let key = self
            .rest("POST", "/api-keys", Some(json!({"label": "dingbridge-test", "expiresAt": null, "scopes": ["workflow:read"]})))
            .await;
        self.api_key = Some(
            key["data"]["rawApiKey"]
                .as_str()
                .unwrap_or_else(|| panic!("no rawApiKey in {key}"))
                .to_string(),
        );
    }

    /// Logs the owner in again (after a restart the session cookie still works, but a
    /// fresh one costs nothing).
    pub async fn login(&mut self) {
        let resp = self
            .http
            .post(self.base() + "/rest/login")
            .header("browser-id", &self.browser_id)
            .json(&json!({"emailOrLdapLoginId": "owner@example.com", "password": "Dingbridge-Test-1"}))
            .send()
            .await
            .expect("login");
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("n8n-auth="))
            .and_then(|c| c.split(';').next())
            .map(str::to_string);
        assert!(resp.status().is_success(), "login: {}", resp.status());
        self.cookie = cookie;
    }

    /// A request to n8n's internal REST API (`/rest…`) as the owner; panics unless 2xx.
    pub async fn rest(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.rest_raw(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} /rest{path}: {status} {value}"
        );
        value
    }

    /// Like [`N8n::rest`], answering the status too.
    pub async fn rest_raw(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                self.base() + "/rest" + path,
            )
            .header("browser-id", &self.browser_id)
            .header("cookie", self.cookie.as_deref().expect("logged in"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::answer(req).await
    }

    /// A request to n8n's public API (`/api/v1…`) with the owner's API key.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                self.base() + "/api/v1" + path,
            )
            .header("X-N8N-API-KEY", self.api_key.as_deref().expect("api key"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::answer(req).await
    }

    async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("n8n answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Drop for N8n {
    fn drop(&mut self) {
        self.stop();
    }
}
