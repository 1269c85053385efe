//! `dingbridge mail backup` through the binary against a real Dovecot: 1 000 mails are
//! saved and verified; nothing in the mailbox changes (flags, counts, `\Seen`); a
//! damaged file fails `--verify` by name; an interrupted backup resumes without fetching
//! again what it saved and without duplicates.

use crate::common;

use std::{
    collections::{BTreeMap, HashSet},
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use common::{
    dovecot::{Dovecot, Seed, USER, sample_mail},
    env::Env,
};
use dingbridge::mail::backup::ManifestEntry;

/// (success, stdout, stderr) of `dingbridge <args>` with this configuration.
fn run(config: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Env::new().config_toml(config).run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn backup(config: &str, dir: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let dir = dir.to_str().expect("utf-8 path");
    let mut args = vec!["mail", "backup", "--route", "dt", "--out", dir];
    args.extend_from_slice(extra);
    run(config, &args)
}

fn seeds(tag: &str, n: usize) -> Vec<Seed> {
    let day = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_000_000);
    (0..n)
        .map(|i| Seed {
            raw: sample_mail(tag, i, 1_500),
            flags: match i % 6 {
                0 => "S",
                3 => "FS",
                5 => "F",
                _ => "",
            },
            received: day + Duration::from_secs(i as u64 * 60),
        })
        .collect()
}

fn manifest(dir: &Path) -> Vec<ManifestEntry> {
    std::fs::read_to_string(dir.join("manifest.jsonl"))
        .expect("manifest")
        .lines()
        .map(|l| serde_json::from_str(l).expect("manifest line"))
        .collect()
}

/// Every folder's messages and their flags, as the server sees them.
async fn snapshot(dovecot: &Dovecot) -> BTreeMap<(String, u32), Vec<String>> {
    let mut c = dovecot.client().await;
    let mut out = BTreeMap::new();
    for f in c.list_folders().await.expect("LIST") {
        c.examine(&f.name).await.expect("EXAMINE");
        for m in c.fetch_meta_all().await.expect("meta") {
            let mut flags = m.flags.clone();
            flags.sort();
            out.insert((f.name.display.clone(), m.uid), flags);
        }
    }
    c.logout().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mails_are_backed_up_verified_and_the_mailbox_is_left_as_it_was() {
    let started = Instant::now();
    let dovecot = Dovecot::start_with(|d| {
        d.seed(USER, None, &seeds("inbox", 1_000));
        d.seed(USER, Some("已发送"), &seeds("sent", 5));
        d.seed(USER, Some("Archive"), &[]);
    });
    let seeded = started.elapsed();
    let before = snapshot(&dovecot).await;
    assert_eq!(before.len(), 1_005);
    let config = dovecot.route_toml("dt", "");
    let dir = tempfile::tempdir().expect("tempdir");

    let t = Instant::now();
    let (code, _, err) = backup(&config, dir.path(), &[]);
    let took = t.elapsed();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("backed up 3 folder(s): 1005 messages, 1005 saved now"),
        "{err}"
    );

    let entries = manifest(dir.path());
    assert_eq!(entries.len(), 1_005);
    let sent: Vec<&ManifestEntry> = entries.iter().filter(|e| e.folder == "已发送").collect();
    assert_eq!(sent.len(), 5);
    assert!(sent[0].path.starts_with("已发送/"), "{}", sent[0].path);
    let first = entries
        .iter()
        .find(|e| e.message_id.as_deref() == Some("<0.inbox@dingbridge.test>"))
        .expect("the first mail is listed");
    assert_eq!(
        std::fs::read(dir.path().join(&first.path)).expect("file"),
        sample_mail("inbox", 0, 1_500)
    );
    assert_eq!(first.flags, vec!["\\Seen"]);
    assert!(
        first
            .internal_date
            .as_deref()
            .is_some_and(|d| d.starts_with("2025-12-29"))
    );
    assert!(
        dir.path().join("Archive").is_dir(),
        "empty folders are kept"
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("dingbridge-backup.json")).expect("state"),
    )
    .expect("json");
    assert_eq!(state["complete"], true);
    assert_eq!(state["messages"], 1005);

    let t = Instant::now();
    let (code, out, err) = backup(&config, dir.path(), &["--verify"]);
    let verified = t.elapsed();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("ok: 1005 messages"), "{out}");

    assert_eq!(snapshot(&dovecot).await, before, "the mailbox is unchanged");
    eprintln!("timings: seed+start {seeded:?}, backup of 1005 mails {took:?}, verify {verified:?}");
}

#[tokio::test]
async fn a_damaged_file_fails_verify_naming_it() {
    let dovecot = Dovecot::start_with(|d| d.seed(USER, None, &seeds("v", 20)));
    let config = dovecot.route_toml("dt", "");
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = backup(&config, dir.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    let entries = manifest(dir.path());
    let (flipped, cut, gone) = (&entries[3].path, &entries[7].path, &entries[11].path);
    let path = dir.path().join(flipped);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[100] ^= 0x20;
    std::fs::write(&path, bytes).expect("write");
    let path = dir.path().join(cut);
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    std::fs::remove_file(dir.path().join(gone)).expect("remove");

    let (code, out, err) = backup(&config, dir.path(), &["--verify"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with("MISMATCH") && l.contains(name))
            .unwrap_or_else(|| panic!("{name} not named in:\n{out}"))
            .to_string()
    };
    assert!(line(flipped).contains("SHA-256"));
    assert!(line(cut).contains("size"));
    assert!(line(gone).contains("cannot read"));
    assert_eq!(out.lines().filter(|l| l.starts_with("MISMATCH")).count(), 3);
    assert!(err.contains("3 problem(s)"), "{err}");
}

#[tokio::test]
async fn an_interrupted_backup_resumes_without_fetching_again_or_duplicating() {
    let dovecot = Dovecot::start_with(|d| d.seed(USER, None, &seeds("r", 300)));
    let config = dovecot.route_toml("dt", "");
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = backup(&config, dir.path(), &["--stop-after", "120"]);
    assert_eq!(code, Some(1), "{err}");
    let first_run = manifest(dir.path());
    assert_eq!(first_run.len(), 120);
    let (code, out, _) = backup(&config, dir.path(), &["--verify"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("incomplete"), "{out}");

    // What a kill leaves behind: a manifest line cut off, a half-written file.
    let early = dir.path().join(&first_run[0].path);
    let inode = std::fs::metadata(&early).expect("meta").ino();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("manifest.jsonl"))
        .expect("manifest");
    std::io::Write::write_all(&mut f, br#"{"folder":"INBOX","folder_wi"#).expect("torn");
    drop(f);
    let half = dir
        .path()
        .join("INBOX")
        .join(format!("{}-9999.eml.part", first_run[0].uid_validity));
    std::fs::write(&half, b"From: half").expect("part");

    let (code, _, err) = backup(&config, dir.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("300 messages, 180 saved now") && err.contains("120 already there"),
        "{err}"
    );
    let entries = manifest(dir.path());
    assert_eq!(entries.len(), 300, "no duplicate lines");
    let keys: HashSet<(u32, u32)> = entries.iter().map(|e| (e.uid_validity, e.uid)).collect();
    assert_eq!(keys.len(), 300);
    assert_eq!(
        std::fs::metadata(&early).expect("meta").ino(),
        inode,
        "a saved file is not written again"
    );
    assert!(!half.exists(), "left-over .part files are removed");
    let (code, out, err) = backup(&config, dir.path(), &["--verify"]);
    assert_eq!(code, Some(0), "{out}{err}");

    // A third run finds nothing to do.
    let (code, _, err) = backup(&config, dir.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("0 saved now") && err.contains("300 already there"),
        "{err}"
    );
}

#[test]
fn backup_needs_a_known_route_and_a_directory() {
    let dovecot = Dovecot::start();
    let config = dovecot.route_toml("dt", "");
    let (code, _, err) = run(
        &config,
        &["mail", "backup", "--route", "nope", "--out", "/tmp/x"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no mailbox route named `nope`") && err.contains("dt"),
        "{err}"
    );
    let (code, _, err) = run(&config, &["mail", "backup", "--route", "dt"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("backup_dir"), "{err}");
}
