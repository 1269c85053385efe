//! A real IMAP server per test: Debian's Dovecot (installed when missing), started in
//! the foreground with its own configuration, users, Maildirs and a throwaway TLS
//! certificate in a temp dir, listening on two free loopback ports (plain IMAP and
//! IMAPS). Dropping it kills it; [`Dovecot::restart`] kills and starts it again on the
//! same ports, which drops every connection.
//!
//! Facts of Dovecot 2.3 this relies on: run as root, a userdb uid of 0 is refused, so
//! mail is owned by `nobody:nogroup`; as another user every account is that user.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Once,
    time::{Duration, Instant, SystemTime},
};

use dingbridge::{
    config::TlsMode,
    mail::{ImapClient, ImapSettings, MailboxName, utf7},
};
use secrecy::SecretString;

use super::{ensure_program, free_port};

/// The mailbox every [`Dovecot::start`] has.
pub const USER: &str = "ops@corp.example";
/// Its client password.
pub const PASSWORD: &str = "client-pw-Ω-1";

/// Makes sure `dovecot` exists, installing Debian's `dovecot-imapd` when it is missing.
pub fn ensure_dovecot() {
    static ONCE: Once = Once::new();
    // `dovecot --version` prints the version and exits 0.
    ONCE.call_once(|| ensure_program("dovecot", "dovecot-imapd"));
}

/// Who owns the mail: `nobody:nogroup` as root (Dovecot refuses uid 0), else the
/// current user.
struct Owner {
    user: String,
    group: String,
    uid: u32,
    gid: u32,
    internal_user: String,
    login_user: String,
}

fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn owner() -> Owner {
    let number = |args: &[&str]| id(args).parse::<u32>().expect("numeric id");
    if number(&["-u"]) == 0 {
        Owner {
            user: "nobody".into(),
            group: "nogroup".into(),
            uid: number(&["-u", "nobody"]),
            gid: number(&["-g", "nobody"]),
            internal_user: "dovecot".into(),
            login_user: "dovenull".into(),
        }
    } else {
        let me = id(&["-un"]);
        Owner {
            user: me.clone(),
            group: id(&["-gn"]),
            uid: number(&["-u"]),
            gid: number(&["-g"]),
            internal_user: me.clone(),
            login_user: me,
        }
    }
}

/// One message to seed into a Maildir.
pub struct Seed {
    /// The raw message.
    pub raw: Vec<u8>,
    /// Maildir flag letters, sorted (`S` = \Seen, `F` = \Flagged, `R` = \Answered).
    pub flags: &'static str,
    /// Its internal date (the file's modification time).
    pub received: SystemTime,
}

/// A running Dovecot.
pub struct Dovecot {
    /// Plain IMAP port (STARTTLS offered).
    pub imap_port: u16,
    /// IMAPS port (implicit TLS).
    pub imaps_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    owner: Owner,
    seeded: u64,
    /// Lines appended to `dovecot.conf` (see [`Dovecot::reconfigure`]).
    extra_conf: String,
}

impl Dovecot {
    /// Starts a server with one user, [`USER`] / [`PASSWORD`].
    pub fn start() -> Dovecot {
        Self::start_with(|_| {})
    }

    /// Starts a server after `seed` has filled its Maildirs (seeding before the start is
    /// the fastest way to a large mailbox).
    pub fn start_with(seed: impl FnOnce(&mut Dovecot)) -> Dovecot {
        Self::start_configured("", seed)
    }

    /// Like [`Dovecot::start_with`], with extra lines for `dovecot.conf` (for example
    /// `imap_capability = IMAP4rev1 ID` to take extensions away).
    pub fn start_configured(extra_conf: &str, seed: impl FnOnce(&mut Dovecot)) -> Dovecot {
        ensure_dovecot();
        let mut d = Dovecot {
            imap_port: free_port(),
            imaps_port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            owner: owner(),
            seeded: 0,
            extra_conf: extra_conf.to_string(),
        };
        d.write_files();
        seed(&mut d);
        d.chown_mail();
        d.start_again();
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn conf(&self) -> PathBuf {
        self.path("dovecot.conf")
    }

    /// The throwaway certificate's PEM file (for `tls_ca_file`).
    pub fn ca_file(&self) -> PathBuf {
        self.path("cert.pem")
    }

    /// The throwaway certificate's private key (PEM), for other test servers on
    /// `localhost` (the SMTP server of `common::smtp`).
    pub fn key_file(&self) -> PathBuf {
        self.path("key.pem")
    }

    /// A file holding [`PASSWORD`] (for `password_file`).
    pub fn password_file(&self) -> PathBuf {
        self.path("client-password")
    }

    /// The Maildir of `user`'s folder (`None` = INBOX).
    pub fn maildir(&self, user: &str, folder: Option<&str>) -> PathBuf {
        let root = self.path("mail").join(user);
        match folder {
            None => root,
            Some(name) => root.join(format!(".{}", utf7::encode(name))),
        }
    }

    fn write_files(&self) {
        for sub in ["mail", "run", "state"] {
            std::fs::create_dir_all(self.path(sub)).expect("dir");
        }
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("certificate");
        std::fs::write(self.path("cert.pem"), cert.cert.pem()).expect("cert");
        std::fs::write(self.path("key.pem"), cert.signing_key.serialize_pem()).expect("key");
        std::fs::write(self.password_file(), format!("{PASSWORD}\n")).expect("password");
        std::fs::write(
            self.path("passwd"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"),
        )
        .expect("passwd");
        self.write_conf();
    }

    fn write_conf(&self) {
        let d = self.dir.path().display();
        let o = &self.owner;
        let conf = format!(
            r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
# Refused logins answer at once (the default waits 2 s).
auth_failure_delay = 0
mail_location = maildir:{d}/mail/%u
mail_uid = {user}
mail_gid = {group}
first_valid_uid = 1
first_valid_gid = 0
default_internal_user = {internal}
default_login_user = {login}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={d}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  # No growing delay for logins from an address that failed once (tests log in with
  # wrong passwords on purpose).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
{extra}
"#,
            extra = self.extra_conf,
            user = o.user,
            group = o.group,
            internal = o.internal_user,
            login = o.login_user,
            imap = self.imap_port,
            imaps = self.imaps_port,
        );
        std::fs::write(self.conf(), conf).expect("dovecot.conf");
    }

    /// Writes messages straight into `user`'s Maildir folder (`None` = INBOX), creating
    /// the folder. Before the start, or into a folder the server already lists.
    pub fn seed(&mut self, user: &str, folder: Option<&str>, messages: &[Seed]) {
        let dir = self.maildir(user, folder);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("maildir");
        }
        if folder.is_some() {
            std::fs::write(dir.join("maildirfolder"), "").expect("maildirfolder");
        }
        for m in messages {
            self.seeded += 1;
            let name = format!(
                "{}.M{}P{}.dingbridge,S={}:2,{}",
                1_700_000_000 + self.seeded,
                self.seeded,
                std::process::id(),
                m.raw.len(),
                m.flags
            );
            let tmp = dir.join("tmp").join(&name);
            std::fs::write(&tmp, &m.raw).expect("seed message");
            let file = std::fs::File::options()
                .write(true)
                .open(&tmp)
                .expect("open seed");
            file.set_modified(m.received).expect("mtime");
            drop(file);
            let target = dir.join("cur").join(&name);
            std::fs::rename(&tmp, &target).expect("into cur");
            let _ = std::os::unix::fs::chown(&target, Some(self.owner.uid), Some(self.owner.gid));
        }
        self.chown_mail();
    }

    fn chown_mail(&self) {
        fn walk(p: &Path, uid: u32, gid: u32) {
            let _ = std::os::unix::fs::chown(p, Some(uid), Some(gid));
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walk(&e.path(), uid, gid);
                    } else {
                        let _ = std::os::unix::fs::chown(e.path(), Some(uid), Some(gid));
                    }
                }
            }
        }
        walk(&self.path("mail"), self.owner.uid, self.owner.gid);
    }

    /// Starts (again) on the same ports and waits for a full greeting.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Its own process group: the `imap` processes serving connections outlive a
            // killed master; stop() kills the group.
            let mut child = Command::new("dovecot")
                .process_group(0)
                .args(["-F", "-c"])
                .arg(self.conf())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("dovecot starts");
            std::thread::sleep(Duration::from_millis(30));
            match child.try_wait() {
                Ok(None) => {
                    self.child = Some(child);
                    break;
                }
                // Exited at once: the ports of a killed instance may still be held by
                // its last children for a moment.
                _ => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    assert!(
                        Instant::now() < deadline,
                        "dovecot did not start: {err}\n{}",
                        self.log()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        self.wait_ready(deadline);
    }

    /// Waits until the plain port greets with `ready` (the auth process is up).
    fn wait_ready(&self, deadline: Instant) {
        while Instant::now() < deadline {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", self.imap_port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut lines = BufReader::new(s).lines();
                for _ in 0..3 {
                    match lines.next() {
                        Some(Ok(l)) if l.contains("ready") => return,
                        Some(Ok(_)) => continue,
                        _ => break,
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("dovecot did not become ready:\n{}", self.log());
    }

    /// Kills the server and the processes serving its connections (every connection
    /// drops at once).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops, appends `extra` to the configuration (e.g. `imap_capability = …`) and
    /// starts again on the same ports.
    pub fn reconfigure(&mut self, extra: &str) {
        self.stop();
        self.extra_conf = extra.to_string();
        self.write_conf();
        self.start_again();
    }

    /// Kills and starts again: every open connection is dropped, the mail stays.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Disconnects every session of `user` (`doveadm kick`), the server stays up.
    pub fn kick(&self, user: &str) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(self.conf())
            .args(["kick", user])
            .output();
    }

    /// Runs `doveadm` on this server as a mail client would act (`expunge`, `move`);
    /// panics with its output when it fails.
    pub fn doveadm(&self, args: &[&str]) {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.conf())
            .args(args)
            .output()
            .expect("doveadm runs");
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("dovecot.log")).unwrap_or_default()
    }

    /// Client settings for [`USER`] in this TLS mode (the certificate trusted through
    /// `ca_file`).
    pub fn settings(&self, tls: TlsMode) -> ImapSettings {
        ImapSettings {
            host: "localhost".into(),
            port: match tls {
                TlsMode::Implicit => self.imaps_port,
                TlsMode::Starttls | TlsMode::None => self.imap_port,
            },
            tls,
            user: USER.into(),
            password: SecretString::from(PASSWORD),
            ca_file: match tls {
                TlsMode::None => None,
                _ => Some(self.ca_file()),
            },
            timeout: Duration::from_secs(10),
        }
    }

    /// A logged-in client (implicit TLS).
    pub async fn client(&self) -> ImapClient {
        ImapClient::connect(&self.settings(TlsMode::Implicit))
            .await
            .expect("IMAP login")
    }

    /// Appends one message to `folder` of [`USER`] through IMAP.
    pub async fn append(&self, folder: &str, raw: &[u8], flags: &[&str]) {
        let mut c = self.client().await;
        c.append(&MailboxName::from_display(folder), flags, None, raw)
            .await
            .expect("APPEND");
        c.logout().await;
    }

    /// A `[[mailbox_routes]]` entry for [`USER`] over implicit TLS, trusting the
    /// throwaway certificate, password from [`Dovecot::password_file`].
    pub fn route_toml(&self, name: &str, extra: &str) -> String {
        format!(
            r#"
[[mailbox_routes]]
name = "{name}"
mailbox = "ops@contoso.com"
{extra}
[mailbox_routes.imap]
host = "localhost"
port = {port}
user = "{USER}"
password_file = "{pw}"
tls_ca_file = "{ca}"
timeout_secs = 10
"#,
            port = self.imaps_port,
            pw = self.password_file().display(),
            ca = self.ca_file().display(),
        )
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small plain-text message with a unique `Message-ID` (`<n.tag@dingbridge.test>`)
/// and a body of about `body_bytes`.
pub fn sample_mail(tag: &str, n: usize, body_bytes: usize) -> Vec<u8> {
    let line = format!("Line of message {n} in {tag}, filler text for the body.\r\n");
    let mut body = String::new();
    while body.len() < body_bytes {
        body.push_str(&line);
    }
    format!(
        "From: Customs <notice@customs.example>\r\nTo: ops@corp.example\r\nSubject: Notice {n} ({tag})\r\nDate: Mon, 5 Jan 2026 10:00:00 +0800\r\nMessage-ID: <{n}.{tag}@dingbridge.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
    .into_bytes()
}
