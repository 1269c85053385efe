//! A real SMTP submission server per test: `aiosmtpd` (Debian's `python3-aiosmtpd`,
//! installed when missing) run by `smtp_sink.py` beside this file, on a free loopback
//! port, with TLS (implicit or STARTTLS, the throwaway certificate Dovecot made) and
//! `AUTH` against one user; every accepted message lands in a temp folder the test reads
//! ([`SmtpSink::received`]). Dropping it kills it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Once,
    time::{Duration, Instant},
};

use super::free_port;

/// Debian's Python, where `python3-aiosmtpd` installs (a `python3` earlier on PATH may
/// be another one).
const PYTHON: &str = "/usr/bin/python3";

/// Makes sure `aiosmtpd` imports, installing Debian's `python3-aiosmtpd` when it does not.
pub fn ensure_aiosmtpd() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let present = || {
            Command::new(PYTHON)
                .args(["-c", "import aiosmtpd"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if present() {
            return;
        }
        eprintln!("aiosmtpd missing: installing Debian's python3-aiosmtpd package");
        let ok = Command::new("sh")
            .args([
                "-c",
                "(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-aiosmtpd",
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok && present(), "could not install python3-aiosmtpd");
    });
}

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The bytes as submitted.
    pub raw: Vec<u8>,
    /// `MAIL FROM`.
    pub mail_from: String,
    /// `RCPT TO`, in order.
    pub rcpt_tos: Vec<String>,
    /// The client had logged in.
    pub authenticated: bool,
    /// The connection was encrypted.
    pub tls: bool,
}

/// A running SMTP server.
pub struct SmtpSink {
    /// Its port.
    pub port: u16,
    /// `implicit` or `starttls`.
    pub mode: &'static str,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpSink {
    /// Starts a server in `mode` (`implicit` or `starttls`) with `cert`/`key` (PEM),
    /// accepting `user` / `password`.
    pub fn start(
        mode: &'static str,
        cert: &Path,
        key: &Path,
        user: &str,
        password: &str,
    ) -> SmtpSink {
        ensure_aiosmtpd();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).expect("out dir");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/integration/common/smtp_sink.py");
        let port = free_port();
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .arg(port.to_string())
            .arg(mode)
            .arg(cert)
            .arg(key)
            .arg(user)
            .arg(password)
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("smtp_sink.py starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the ready line");
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        SmtpSink {
            port,
            mode,
            dir,
            child,
        }
    }

    /// Every message accepted so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let out = self.dir.path().join("out");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&out)
            .expect("out dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|eml| {
                let meta: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(eml.with_extension("json")).expect("envelope"),
                )
                .expect("envelope JSON");
                Received {
                    raw: std::fs::read(&eml).expect("message"),
                    mail_from: meta["mail_from"].as_str().unwrap_or_default().into(),
                    rcpt_tos: meta["rcpt_tos"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    authenticated: meta["authenticated"] == true,
                    tls: meta["tls"] == true,
                }
            })
            .collect()
    }

    /// Waits up to `within` for `n` accepted messages.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n || start.elapsed() > within {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `[mailbox_routes.smtp]` section for this server (host `localhost`, the
    /// certificate trusted through `ca`), `extra` lines appended.
    pub fn route_toml(&self, ca: &Path, extra: &str) -> String {
        format!(
            "[mailbox_routes.smtp]\nhost = \"localhost\"\nport = {}\ntls = \"{}\"\ntls_ca_file = \"{}\"\ntimeout_secs = 10\n{extra}\n",
            self.port,
            self.mode,
            ca.display()
        )
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
