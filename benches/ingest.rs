//! Ingest benchmark: `cargo bench --bench ingest` (see BENCHMARKS.md).
//!
//! Starts, as separate processes:
//! - a throwaway `redis-server` on a free port (no persistence),
//! - a sink answering `200` to every POST: the echo relay's target, so workers drain
//!   the queue while the load runs, as in production,
//! - a bare actix-web server answering `200 OK` to POST (this binary re-executed with
//!   `--bare-server`),
//! - the release `dingbridge serve` with the Redis store, the echo relay and DingTalk HTTP
//!   push (callback token, AES key, app key; backfill and Stream mode off).
//!
//! Then drives three targets the same way: a closed-loop tokio + reqwest client with
//! keep-alive, a fixed number of connections, unique event ids, for `BENCH_SECS` after a
//! short warm-up:
//! - the bare endpoint and `POST /webhooks/echo`, with a ~1 KB JSON chat-event body;
//! - `POST /webhooks/dingtalk/events`, DingTalk's encrypted HTTP push: a
//!   `calendar_event_change` event (unique `eventId`), AES-encrypted and SHA-1-signed with
//!   a current ms timestamp. These requests are built before the run (outside the CPU
//!   and latency figures); only 200 with the encrypted reply counts as success.
//!
//! Prints requests/s, p50/p99 latency, errors, peak RSS (VmHWM) and CPU time of each
//! server process, the ratios to the bare endpoint, and for each dingbridge target how
//! fast the workers completed its jobs during the load and drained the rest afterwards
//! (the queue is drained before the next target starts).
//!
//! Environment (all optional): `BENCH_SECS` (10), `BENCH_WARMUP_SECS` (1),
//! `BENCH_CONCURRENCY` (32), `BENCH_BODY_BYTES` (1024, echo ingest and bare),
//! `BENCH_ROUNDS` (1: one run per target; more alternate them), `BENCH_CLIENT_THREADS` (2),
//! `BENCH_DRAIN_TIMEOUT_SECS` (120), `BENCH_DINGTALK_PREBUILT` (pre-built DingTalk
//! requests per run; default 1.5 times what the echo ingest run of the same round
//! needed), `DINGBRIDGE_BIN` (path of the binary to measure).

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use dingbridge::dingtalk::crypto::{self, CallbackCrypto};

const ECHO_TOKEN: &str = "bench-echo-token";
/// DingTalk HTTP-push secrets of the bench instance (the test vectors' shapes).
const DT_TOKEN: &str = "benchCallbackToken";
const DT_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const DT_APP_KEY: &str = "dingbenchappkey0001";
const QUEUE: &str = "dingbridge:queue";
const GROUP: &str = "workers";
/// Target of the issue: ingest reaches at least this share of the bare endpoint's rps.
const TARGET_RATIO: f64 = 0.30;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--bare-server") => return serve_child(ChildKind::Bare),
        Some("--sink-server") => return serve_child(ChildKind::Sink),
        _ => {}
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (CI) runs this binary
    // without it, in the debug profile: a 20-second load there would only slow CI down.
    if !args.iter().any(|a| a == "--bench") {
        println!("bench ingest: skipped (run it with `cargo bench --bench ingest`)");
        return;
    }
    if let Err(e) = run() {
        eprintln!("bench_ingest: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Child servers (this binary re-executed)
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum ChildKind {
    Bare,
    Sink,
}

/// Runs one of the helper servers on a free port and announces its address on stdout in
/// the same JSON shape as `dingbridge serve`.
fn serve_child(kind: ChildKind) {
    let received = web::Data::new(AtomicU64::new(0));
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let app = App::new().app_data(received.clone());
            match kind {
                // The bare endpoint reads the whole body, like ingest, and answers 200.
                ChildKind::Bare => app.route(
                    "/{tail:.*}",
                    web::post().to(|_body: web::Bytes| async { HttpResponse::Ok().body("OK") }),
                ),
                // The echo target: counts deliveries; `GET /count` reads the counter.
                ChildKind::Sink => app
                    .route(
                        "/count",
                        web::get().to(|n: web::Data<AtomicU64>| async move {
                            HttpResponse::Ok().body(n.load(Ordering::SeqCst).to_string())
                        }),
                    )
                    .route(
                        "/{tail:.*}",
                        web::post().to(|_body: web::Bytes, n: web::Data<AtomicU64>| async move {
                            n.fetch_add(1, Ordering::SeqCst);
                            HttpResponse::Ok().finish()
                        }),
                    ),
            }
        });
        let server = match kind {
            // Same worker count as dingbridge's HTTP server (actix's default).
            ChildKind::Bare => server,
            // The sink is not measured; keep its footprint small.
            ChildKind::Sink => server.workers(1),
        };
        let server = server
            .bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .shutdown_timeout(1);
        let addr = server.addrs()[0];
        println!(r#"{{"message":"listening on {addr}","addr":"{addr}"}}"#);
        let _ = std::io::stdout().flush();
        server.run().await.expect("server runs");
    });
}

// ---------------------------------------------------------------------------------------
// Process management
// ---------------------------------------------------------------------------------------

/// A child process killed on drop; keeps the last lines it printed for diagnostics.
struct Proc {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command) -> anyhow::Result<(Proc, Option<SocketAddr>)> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(stderr), None),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some(addr)) = (&tx, listening_addr(&line)) {
                        let _ = tx.send(addr);
                    }
                    let mut out = output.lock().expect("output lock");
                    if out.len() == 200 {
                        out.pop_front();
                    }
                    out.push_back(line);
                }
            });
        }
        let proc = Proc {
            name,
            child,
            output,
        };
        Ok((proc, rx.recv_timeout(Duration::from_secs(30)).ok()))
    }

    /// Spawns and waits for the "listening on" line.
    fn spawn_server(name: &'static str, cmd: Command) -> anyhow::Result<(Proc, SocketAddr)> {
        let (proc, addr) = Proc::spawn(name, cmd)?;
        match addr {
            Some(addr) => Ok((proc, addr)),
            None => anyhow::bail!(
                "{name} did not report its address; output:\n{}",
                proc.output()
            ),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        let out = self.output.lock().expect("output lock");
        out.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Fails when the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            anyhow::bail!(
                "{} exited ({status}); output:\n{}",
                self.name,
                self.output()
            );
        }
        Ok(())
    }
}

impl Drop for Proc {
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

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Peak resident set size (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of a process (all its threads), in seconds.
fn cpu_secs(pid: u32, ticks_per_sec: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------

struct Settings {
    secs: u64,
    warmup_secs: u64,
    concurrency: usize,
    body_bytes: usize,
    rounds: usize,
    client_threads: usize,
    drain_timeout: Duration,
    /// Pre-built DingTalk requests per run; `None`: sized from the echo ingest run.
    dingtalk_prebuilt: Option<usize>,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let s = Settings {
            secs: env_num("BENCH_SECS", 10)?,
            warmup_secs: env_num("BENCH_WARMUP_SECS", 1)?,
            concurrency: env_num("BENCH_CONCURRENCY", 32)?,
            body_bytes: env_num("BENCH_BODY_BYTES", 1024)?,
            rounds: env_num("BENCH_ROUNDS", 1)?,
            client_threads: env_num("BENCH_CLIENT_THREADS", 2)?,
            drain_timeout: Duration::from_secs(env_num("BENCH_DRAIN_TIMEOUT_SECS", 120)?),
            dingtalk_prebuilt: match std::env::var("BENCH_DINGTALK_PREBUILT") {
                Ok(_) => Some(env_num("BENCH_DINGTALK_PREBUILT", 0)?),
                Err(_) => None,
            },
        };
        anyhow::ensure!(s.secs > 0, "BENCH_SECS must be at least 1");
        anyhow::ensure!(s.concurrency > 0, "BENCH_CONCURRENCY must be at least 1");
        anyhow::ensure!(s.rounds > 0, "BENCH_ROUNDS must be at least 1");
        anyhow::ensure!(
            s.client_threads > 0,
            "BENCH_CLIENT_THREADS must be at least 1"
        );
        Ok(s)
    }
}

/// The release `dingbridge` binary: `DINGBRIDGE_BIN`, the one cargo built for this bench,
/// or `<target dir>/release/dingbridge`, built with `cargo build --release` if missing.
fn dingbridge_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("DINGBRIDGE_BIN") {
        return Ok(PathBuf::from(p));
    }
    // Cargo sets this for benchmarks and builds the binary with the same profile.
    if let Some(p) = option_env!("CARGO_BIN_EXE_dingbridge")
        && Path::new(p).exists()
    {
        return Ok(PathBuf::from(p));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"));
    let bin = target.join("release").join("dingbridge");
    if !bin.exists() {
        eprintln!("building {} ...", bin.display());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--release", "--bin", "dingbridge"])
            .current_dir(manifest)
            .status()?
            .success();
        anyhow::ensure!(ok && bin.exists(), "cargo build --release failed");
    }
    Ok(bin)
}

fn start_redis(dir: &Path) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ])
    .arg(dir);
    let (mut proc, _) = Proc::spawn("redis-server", cmd)
        .map_err(|e| anyhow::anyhow!("{e} (install it with `apt-get install redis-server`)"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        proc.check_alive()?;
        anyhow::ensure!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((proc, port))
}

// ---------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------

/// How the requests of one target are made.
enum Requests {
    /// A `make_body` chat event of `body_bytes`, built per request, with these headers.
    Json {
        url: String,
        headers: Vec<(&'static str, &'static str)>,
        tag: String,
        body_bytes: usize,
    },
    /// DingTalk encrypted HTTP pushes, built before the run.
    DingTalk(DingTalkRequests),
}

/// One ready-to-send request.
#[derive(Clone)]
struct Prepared {
    url: String,
    body: bytes::Bytes,
}

/// Encrypted, signed `calendar_event_change` pushes, each with a unique `eventId`.
struct DingTalkRequests {
    crypto: CallbackCrypto,
    /// `http://<addr>/webhooks/dingtalk/events`.
    endpoint: String,
    tag: String,
    /// Requests built before the run, used in order; request `n` beyond them is built
    /// when needed (outside its latency) and counted in `LoadResult::built_inline`.
    prebuilt: Vec<Prepared>,
}

impl DingTalkRequests {
    fn new(endpoint: String, tag: String, count: usize) -> anyhow::Result<DingTalkRequests> {
        let mut r = DingTalkRequests {
            crypto: CallbackCrypto::new(DT_TOKEN, DT_AES_KEY, DT_APP_KEY)
                .map_err(|e| anyhow::anyhow!("bench DingTalk crypto: {e}"))?,
            endpoint,
            tag,
            prebuilt: Vec::new(),
        };
        let now = now_ms()?;
        r.prebuilt = (0..count as u64).map(|n| r.prepare(n, now)).collect();
        Ok(r)
    }

    /// Request `n`, timestamped `now_ms`, as DingTalk sends it: `{"encrypt": ...}` with
    /// `msg_signature`, `timestamp` (ms) and `nonce` in the query.
    fn prepare(&self, n: u64, now_ms: u64) -> Prepared {
        let encrypt = self.crypto.encrypt(&calendar_event(&self.tag, n, now_ms));
        let timestamp = now_ms.to_string();
        let nonce = format!("{:08x}{:08x}", n, mix(n) as u32);
        let signature = crypto::signature(DT_TOKEN, &timestamp, &nonce, &encrypt);
        Prepared {
            url: format!(
                "{}?msg_signature={signature}&timestamp={timestamp}&nonce={nonce}",
                self.endpoint
            ),
            body: bytes::Bytes::from(format!(r#"{{"encrypt":"{encrypt}"}}"#)),
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> anyhow::Result<u64> {
    Ok(u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?)
}

/// A cheap 64-bit mix (splitmix64's finaliser), for ids that look random but are stable.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The plaintext of a DingTalk `calendar_event_change` push (about 600 bytes: ids only, as
/// DingTalk sends them; the event's content is fetched later through the API).
fn calendar_event(tag: &str, n: u64, now_ms: u64) -> String {
    let union_id = |i: u64| format!("iPiS{:024x}", u128::from(mix(n ^ (i << 48))) << 32);
    let attendees: Vec<String> = (1..=6).map(|i| format!(r#""{}""#, union_id(i))).collect();
    let change = match n % 5 {
        0 => "create",
        4 => "delete",
        _ => "update",
    };
    format!(
        r#"{{"EventType":"calendar_event_change","eventId":"{tag}-{n}","CorpId":"ding9f50b15bccd16741","TimeStamp":"{now_ms}","EventTime":{now_ms},"changeType":"{change}","calendarId":"primary","calendarEventId":"{cal:032x}","legacyCalendarEventId":"{legacy}","organizerUnionId":"{org}","unionIdList":[{attendees}],"operatorUnionId":"{org}","bizId":"calendar.{n}"}}"#,
        cal = u128::from(mix(n)) << 64 | u128::from(mix(!n)),
        legacy = mix(n) % 10_000_000_000_000,
        org = union_id(0),
        attendees = attendees.join(","),
    )
}

impl Requests {
    /// Request number `n`, and whether it had to be built now (DingTalk only).
    fn request(&self, client: &reqwest::Client, n: u64) -> (reqwest::RequestBuilder, bool) {
        match self {
            Requests::Json {
                url,
                headers,
                tag,
                body_bytes,
            } => {
                let mut req = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(make_body(tag, n, *body_bytes));
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                (req, false)
            }
            Requests::DingTalk(d) => {
                let (p, inline) = match usize::try_from(n).ok().and_then(|i| d.prebuilt.get(i)) {
                    Some(p) => (p.clone(), false),
                    None => (d.prepare(n, now_ms().unwrap_or(0)), true),
                };
                let req = client
                    .post(p.url)
                    .header("content-type", "application/json")
                    .body(p.body);
                (req, inline)
            }
        }
    }

    /// Whether an answer counts as success. Echo and bare: any 2xx. DingTalk: exactly 200
    /// with an encrypted reply; the first reply on each connection (`verified` false) is
    /// also verified and decrypted, which must give `success`.
    fn check(
        &self,
        status: reqwest::StatusCode,
        body: &[u8],
        verified: &mut bool,
    ) -> Result<(), String> {
        let failed = || {
            format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        };
        match self {
            Requests::Json { .. } if status.is_success() => Ok(()),
            Requests::Json { .. } => Err(failed()),
            Requests::DingTalk(_) if status != reqwest::StatusCode::OK => Err(failed()),
            Requests::DingTalk(d) => {
                let has = |field: &[u8]| body.windows(field.len()).any(|w| w == field);
                if !has(b"\"encrypt\"") || !has(b"\"msg_signature\"") {
                    return Err(format!("200 without an encrypted reply: {}", failed()));
                }
                if !*verified {
                    let reply: serde_json::Value =
                        serde_json::from_slice(body).map_err(|e| format!("reply: {e}"))?;
                    let field = |k: &str| reply[k].as_str().unwrap_or_default().to_string();
                    let plain = d
                        .crypto
                        .decrypt_verified(
                            &field("msg_signature"),
                            &field("timeStamp"),
                            &field("nonce"),
                            &field("encrypt"),
                        )
                        .map_err(|e| format!("reply does not verify: {e}"))?;
                    if plain != "success" {
                        return Err(format!("reply decrypts to {plain:?}, not \"success\""));
                    }
                    *verified = true;
                }
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct LoadResult {
    /// Requests started after the warm-up and answered (any status).
    measured: u64,
    elapsed: Duration,
    /// Wall time of the whole run, warm-up included.
    total: Duration,
    /// Sorted latencies of measured requests, in microseconds.
    latencies_us: Vec<u32>,
    /// Failed answers (see `Requests::check`) and transport errors, warm-up included.
    errors: u64,
    /// Successful answers, warm-up included.
    ok_total: u64,
    /// DingTalk requests built during the run because the pre-built ones ran out.
    built_inline: u64,
    first_error: Option<String>,
}

impl LoadResult {
    fn rps(&self) -> f64 {
        self.measured as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        let idx = rank.clamp(1, self.latencies_us.len()) - 1;
        f64::from(self.latencies_us[idx]) / 1000.0
    }
}

const FILLER: &str = "Quarterly roadmap sync moved to Thursday; please review the attached \
agenda, add your items and confirm the meeting room. ";

/// A realistic chat-event JSON body of about `size` bytes with a unique `event_id`.
fn make_body(tag: &str, n: u64, size: usize) -> String {
    let mut s = format!(
        r#"{{"event_id":"{tag}-{n}","event_type":"chat.message.created","source":"bench","corp_id":"ding-corp-0001","created_at":"2025-01-01T00:00:00Z","sender":{{"user_id":"user-{u}","name":"Bench User {u}","dept":"engineering"}},"conversation":{{"id":"cid-{c}","type":"group","title":"Project {c}"}},"message":{{"msg_type":"text","text":""#,
        u = n % 997,
        c = n % 89,
    );
    const CLOSING: &str = r#""}}"#;
    let mut filler = FILLER.chars().cycle();
    while s.len() + CLOSING.len() < size {
        s.push(filler.next().unwrap_or(' '));
    }
    s.push_str(CLOSING);
    s
}

/// Drives one target. The request is built before its latency clock starts.
async fn drive(requests: Arc<Requests>, settings: &Settings) -> anyhow::Result<LoadResult> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(settings.warmup_secs);
    let stop_at = measure_from + Duration::from_secs(settings.secs);
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(settings.concurrency);
    for _ in 0..settings.concurrency {
        let client = client.clone();
        let counter = counter.clone();
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = LoadResult {
                latencies_us: Vec::with_capacity(64 * 1024),
                ..LoadResult::default()
            };
            let mut verified = false;
            while Instant::now() < stop_at {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let (req, inline) = requests.request(&client, n);
                r.built_inline += u64::from(inline);
                let t0 = Instant::now();
                let outcome = match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.bytes().await {
                            Ok(b) => requests.check(status, &b, &mut verified),
                            Err(e) => Err(format!("reading body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("transport: {e}")),
                };
                let latency = t0.elapsed();
                match outcome {
                    Ok(()) => r.ok_total += 1,
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert(e);
                    }
                }
                if t0 >= measure_from {
                    r.measured += 1;
                    r.latencies_us
                        .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                }
            }
            r
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        let r = t.await?;
        total.measured += r.measured;
        total.errors += r.errors;
        total.ok_total += r.ok_total;
        total.built_inline += r.built_inline;
        total.latencies_us.extend(r.latencies_us);
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    total.elapsed = measure_from.elapsed();
    total.total = started.elapsed();
    total.latencies_us.sort_unstable();
    Ok(total)
}

// ---------------------------------------------------------------------------------------
// Redis inspection
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
struct QueueState {
    len: i64,
    pending: i64,
    delayed: i64,
    dead: i64,
}

impl QueueState {
    fn empty(&self) -> bool {
        self.len == 0 && self.pending == 0 && self.delayed == 0
    }
}

fn queue_state(con: &mut redis::Connection) -> anyhow::Result<QueueState> {
    let len: i64 = redis::cmd("XLEN").arg(QUEUE).query(con)?;
    // XPENDING summary: [count, smallest id, greatest id, consumers]; no group yet = 0.
    let pending = match redis::cmd("XPENDING")
        .arg(QUEUE)
        .arg(GROUP)
        .query::<redis::Value>(con)
    {
        Ok(redis::Value::Array(items)) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        Ok(_) => 0,
        Err(e) if e.code() == Some("NOGROUP") => 0,
        Err(e) => return Err(e.into()),
    };
    let delayed: i64 = redis::cmd("ZCARD")
        .arg(format!("{QUEUE}:delayed"))
        .query(con)?;
    let dead: i64 = redis::cmd("XLEN").arg(format!("{QUEUE}:dead")).query(con)?;
    Ok(QueueState {
        len,
        pending,
        delayed,
        dead,
    })
}

async fn sink_count(client: &reqwest::Client, sink: SocketAddr) -> anyhow::Result<u64> {
    let text = client
        .get(format!("http://{sink}/count"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text.trim().parse()?)
}

// ---------------------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bare,
    Ingest,
    DingTalk,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Bare, Kind::Ingest, Kind::DingTalk];

    fn name(self) -> &'static str {
        match self {
            Kind::Bare => "bare actix-web 200",
            Kind::Ingest => "ingest (redis)",
            Kind::DingTalk => "dingtalk push",
        }
    }
}

struct Row {
    round: usize,
    kind: Kind,
    result: LoadResult,
    peak_rss_kib: Option<u64>,
    server_cpu_s: Option<f64>,
    redis_cpu_s: Option<f64>,
    client_cpu_s: Option<f64>,
}

/// What the workers did with the jobs of one dingbridge run (the queue was empty at its
/// start: every run is drained before the next target).
struct Flow {
    round: usize,
    kind: Kind,
    /// Requests answered with success, warm-up included: one job each.
    accepted: u64,
    /// Wall time of the run, warm-up included.
    load: Duration,
    /// Queue state when the load stopped.
    at_end: QueueState,
    /// Echo only: events the sink received during the run.
    delivered: Option<u64>,
    /// Time from the end of the load until the queue was empty, if it emptied.
    drain: Option<Duration>,
    /// Queue state when the drain wait ended.
    after: QueueState,
}

impl Flow {
    /// Jobs still queued when the load stopped.
    fn backlog(&self) -> u64 {
        u64::try_from(self.at_end.len + self.at_end.delayed).unwrap_or(0)
    }

    /// Jobs completed while the load ran.
    fn completed_during_load(&self) -> u64 {
        self.accepted.saturating_sub(self.backlog())
    }
}

fn fmt_mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

fn fmt_secs(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.1}")).unwrap_or_else(|| "n/a".into())
}

/// Polls until the queue is empty and the sink received `echo_expected` events in all;
/// returns how long that took and the last state seen (None: not within `timeout`).
fn wait_drained(
    redis_con: &mut redis::Connection,
    runtime: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    sink: SocketAddr,
    echo_expected: u64,
    timeout: Duration,
) -> anyhow::Result<(Option<Duration>, QueueState, u64)> {
    let from = Instant::now();
    loop {
        let state = queue_state(redis_con)?;
        let delivered = runtime.block_on(sink_count(http, sink))?;
        if state.empty() && delivered >= echo_expected {
            return Ok((Some(from.elapsed()), state, delivered));
        }
        if from.elapsed() > timeout {
            eprintln!(
                "queue not drained after {timeout:?}: {state:?}, delivered {delivered} of {echo_expected} echo events"
            );
            return Ok((None, state, delivered));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let ticks = clock_ticks();
    let me = std::env::current_exe()?;
    let bin = dingbridge_bin()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "bench ingest: {}s (+{}s warm-up) per run, {} connections, {}-byte bodies, {} round(s), {} client threads, {} cores",
        settings.secs,
        settings.warmup_secs,
        settings.concurrency,
        settings.body_bytes,
        settings.rounds,
        settings.client_threads,
        cores
    );
    println!("dingbridge binary: {}", bin.display());

    let redis_dir = tempfile::tempdir()?;
    let (mut redis_proc, redis_port) = start_redis(redis_dir.path())?;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");

    let mut sink_cmd = Command::new(&me);
    sink_cmd.arg("--sink-server");
    let (_sink, sink_addr) = Proc::spawn_server("sink", sink_cmd)?;

    let mut bare_cmd = Command::new(&me);
    bare_cmd.arg("--bare-server");
    let (mut bare, bare_addr) = Proc::spawn_server("bare server", bare_cmd)?;

    let mut ding_cmd = Command::new(&bin);
    ding_cmd
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DINGBRIDGE_LISTEN", "127.0.0.1:0")
        .env("DINGBRIDGE_STORE_URL", &redis_url)
        // Warnings only, except the start-up line that carries the address. Through
        // RUST_LOG, telemetry's fallback: the config loader rejects DINGBRIDGE_LOG as an
        // unknown key (`unknown field `log``), although telemetry reads it.
        .env(
            "RUST_LOG",
            "warn,dingbridge=info,dingbridge::telemetry=warn,dingbridge::worker=warn,dingbridge::ingest=warn,dingbridge::dingtalk=warn",
        )
        .env(
            "DINGBRIDGE_ECHO_TARGET_URL",
            format!("http://{sink_addr}/echo"),
        )
        .env("DINGBRIDGE_ECHO_TOKEN", ECHO_TOKEN)
        // DingTalk HTTP push on; no app secret, so no API client, Stream or backfill.
        .env("DINGBRIDGE_DINGTALK_APP_KEY", DT_APP_KEY)
        .env("DINGBRIDGE_DINGTALK_CALLBACK_TOKEN", DT_TOKEN)
        .env("DINGBRIDGE_DINGTALK_AES_KEY", DT_AES_KEY)
        .env("DINGBRIDGE_DINGTALK_BACKFILL_INTERVAL_SECS", "0");
    let (mut ding, ding_addr) = Proc::spawn_server("dingbridge", ding_cmd)?;

    let mut redis_con = redis::Client::open(redis_url.as_str())?.get_connection()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .enable_all()
        .build()?;
    let tag = format!(
        "bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let http = reqwest::Client::new();
    let run_secs = (settings.warmup_secs + settings.secs) as f64;

    let mut rows: Vec<Row> = Vec::new();
    let mut flows: Vec<Flow> = Vec::new();
    let mut echo_accepted = 0u64;
    let mut built_inline = 0u64;
    for round in 1..=settings.rounds {
        for kind in Kind::ALL {
            let round_tag = format!("{tag}-{round}");
            let (requests, server_pid) = match kind {
                Kind::Bare => (
                    Requests::Json {
                        url: format!("http://{bare_addr}/bare"),
                        headers: vec![],
                        tag: round_tag,
                        body_bytes: settings.body_bytes,
                    },
                    bare.pid(),
                ),
                Kind::Ingest => (
                    Requests::Json {
                        url: format!("http://{ding_addr}/webhooks/echo"),
                        headers: vec![("x-echo-token", ECHO_TOKEN)],
                        tag: round_tag,
                        body_bytes: settings.body_bytes,
                    },
                    ding.pid(),
                ),
                Kind::DingTalk => {
                    // Enough for 1.5 times the echo ingest rate of this round (the push
                    // path does more per request); more are built during the run if
                    // needed (counted, outside the latency).
                    let count = settings.dingtalk_prebuilt.unwrap_or_else(|| {
                        let ingest_rps = rows
                            .iter()
                            .find(|r| r.round == round && r.kind == Kind::Ingest)
                            .map_or(0.0, |r| r.result.rps());
                        ((1.5 * ingest_rps).max(1000.0) * run_secs) as usize
                    });
                    let t = Instant::now();
                    let d = DingTalkRequests::new(
                        format!("http://{ding_addr}/webhooks/dingtalk/events"),
                        round_tag,
                        count,
                    )?;
                    let sample = d.prepare(0, now_ms()?);
                    eprintln!(
                        "round {round}: built {count} DingTalk pushes in {:.1} s (plaintext {} bytes, body {} bytes, URL {} bytes)",
                        t.elapsed().as_secs_f64(),
                        calendar_event(&d.tag, 0, now_ms()?).len(),
                        sample.body.len(),
                        sample.url.len(),
                    );
                    (Requests::DingTalk(d), ding.pid())
                }
            };
            let sink_before = if kind == Kind::Ingest {
                Some(runtime.block_on(sink_count(&http, sink_addr))?)
            } else {
                None
            };
            let cpu_before = (
                cpu_secs(server_pid, ticks),
                cpu_secs(redis_proc.pid(), ticks),
                cpu_secs(std::process::id(), ticks),
            );
            eprintln!("round {round}: driving {} ...", kind.name());
            let requests = Arc::new(requests);
            let result = runtime.block_on(drive(requests.clone(), &settings))?;
            let cpu = |before: Option<f64>, pid: u32| Some(cpu_secs(pid, ticks)? - before?);
            let row = Row {
                round,
                kind,
                peak_rss_kib: peak_rss_kib(server_pid),
                server_cpu_s: cpu(cpu_before.0, server_pid),
                redis_cpu_s: cpu(cpu_before.1, redis_proc.pid()),
                client_cpu_s: cpu(cpu_before.2, std::process::id()),
                result,
            };
            // Free the pre-built requests before the drain wait and the next target.
            drop(requests);
            if let Some(e) = &row.result.first_error {
                eprintln!("  first error: {e}");
            }
            built_inline += row.result.built_inline;
            if kind != Kind::Bare {
                let at_end = queue_state(&mut redis_con)?;
                let delivered = match sink_before {
                    Some(before) => {
                        echo_accepted += row.result.ok_total;
                        Some(runtime.block_on(sink_count(&http, sink_addr))? - before)
                    }
                    None => None,
                };
                // Drain before the next target, so that each starts with an empty queue
                // and the drain rate is measured with the cores otherwise idle.
                let (drain, after, _) = wait_drained(
                    &mut redis_con,
                    &runtime,
                    &http,
                    sink_addr,
                    echo_accepted,
                    settings.drain_timeout,
                )?;
                flows.push(Flow {
                    round,
                    kind,
                    accepted: row.result.ok_total,
                    load: row.result.total,
                    at_end,
                    delivered,
                    drain,
                    after,
                });
            }
            rows.push(row);
            bare.check_alive()?;
            ding.check_alive()?;
            redis_proc.check_alive()?;
        }
    }
    let redis_rss = peak_rss_kib(redis_proc.pid());

    println!();
    println!(
        "| round | target             |    req/s | p50 ms | p99 ms | max ms | errors | peak RSS (VmHWM) | server CPU s | redis CPU s | client CPU s |"
    );
    println!(
        "|------:|--------------------|---------:|-------:|-------:|-------:|-------:|-----------------:|-------------:|------------:|-------------:|"
    );
    for r in &rows {
        println!(
            "| {:>5} | {:<18} | {:>8.0} | {:>6.2} | {:>6.2} | {:>6.1} | {:>6} | {:>16} | {:>12} | {:>11} | {:>12} |",
            r.round,
            r.kind.name(),
            r.result.rps(),
            r.result.percentile_ms(50.0),
            r.result.percentile_ms(99.0),
            r.result.percentile_ms(100.0),
            r.result.errors,
            fmt_mib(r.peak_rss_kib),
            fmt_secs(r.server_cpu_s),
            fmt_secs(r.redis_cpu_s),
            fmt_secs(r.client_cpu_s),
        );
    }
    println!();
    let mut ratios: Vec<(Kind, f64)> = Vec::new();
    for round in 1..=settings.rounds {
        let of = |kind: Kind| {
            rows.iter()
                .find(|r| r.round == round && r.kind == kind)
                .map(|r| &r.result)
        };
        let Some(bare_result) = of(Kind::Bare) else {
            continue;
        };
        let bare_rps = bare_result.rps();
        for kind in [Kind::Ingest, Kind::DingTalk] {
            let Some(result) = of(kind) else { continue };
            let ratio = result.rps() / bare_rps;
            ratios.push((kind, ratio));
            println!(
                "round {round}: {} / bare = {:.0} / {bare_rps:.0} req/s = {:.1} % (target >= {:.0} %: {}); p99 {:.2} ms vs bare {:.2} ms",
                kind.name(),
                result.rps(),
                ratio * 100.0,
                TARGET_RATIO * 100.0,
                if ratio >= TARGET_RATIO {
                    "met"
                } else {
                    "NOT met"
                },
                result.percentile_ms(99.0),
                bare_result.percentile_ms(99.0),
            );
        }
        if let (Some(ingest), Some(dt)) = (of(Kind::Ingest), of(Kind::DingTalk)) {
            println!(
                "round {round}: dingtalk push / ingest = {:.1} % of the rps; p99 {:.2} ms vs {:.2} ms",
                dt.rps() / ingest.rps() * 100.0,
                dt.percentile_ms(99.0),
                ingest.percentile_ms(99.0),
            );
        }
    }
    if settings.rounds > 1 {
        for kind in [Kind::Ingest, Kind::DingTalk] {
            let mut sorted: Vec<f64> = ratios
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, r)| *r)
                .collect();
            sorted.sort_by(f64::total_cmp);
            if !sorted.is_empty() {
                println!(
                    "median {} / bare over {} rounds: {:.1} %",
                    kind.name(),
                    sorted.len(),
                    sorted[sorted.len() / 2] * 100.0
                );
            }
        }
    }
    for f in &flows {
        let load = f.load.as_secs_f64();
        let delivered = f
            .delivered
            .map(|d| format!("; the sink received {d} during the load"))
            .unwrap_or_default();
        println!(
            "round {} {}: {} jobs accepted in {load:.1} s; workers completed {} during the load ({:.0}/s{delivered}); at its end XLEN {}, XPENDING {}, delayed {}, dead {}",
            f.round,
            f.kind.name(),
            f.accepted,
            f.completed_during_load(),
            f.completed_during_load() as f64 / load,
            f.at_end.len,
            f.at_end.pending,
            f.at_end.delayed,
            f.at_end.dead,
        );
        match f.drain {
            Some(d) => println!(
                "round {} {}: backlog of {} drained in {:.1} s after the load ({:.0}/s; XLEN {}, XPENDING {}, delayed {}, dead-lettered {})",
                f.round,
                f.kind.name(),
                f.backlog(),
                d.as_secs_f64(),
                f.backlog() as f64 / d.as_secs_f64().max(0.001),
                f.after.len,
                f.after.pending,
                f.after.delayed,
                f.after.dead,
            ),
            None => println!(
                "round {} {}: backlog of {} NOT drained within {:?}",
                f.round,
                f.kind.name(),
                f.backlog(),
                settings.drain_timeout
            ),
        }
    }
    let delivered = runtime.block_on(sink_count(&http, sink_addr))?;
    println!("echo target received {delivered} of {echo_accepted} accepted echo events");
    if built_inline > 0 {
        println!(
            "note: {built_inline} DingTalk requests were built during the runs (the pre-built ones ran out; set BENCH_DINGTALK_PREBUILT higher)"
        );
    }
    println!("redis-server peak RSS: {}", fmt_mib(redis_rss));

    let errors: u64 = rows.iter().map(|r| r.result.errors).sum();
    anyhow::ensure!(
        errors == 0,
        "{errors} requests failed (non-2xx, DingTalk without 200 and encrypted reply, or transport)"
    );
    anyhow::ensure!(
        flows.iter().all(|f| f.drain.is_some()),
        "the workers did not drain the queue"
    );
    let dead = flows.last().map_or(0, |f| f.after.dead);
    anyhow::ensure!(dead == 0, "{dead} jobs were dead-lettered");
    anyhow::ensure!(
        delivered >= echo_accepted,
        "the echo target received {delivered} of {echo_accepted} events"
    );
    Ok(())
}
