//! `dingbridge mail backup`: every message of every folder of a DingTalk mailbox, one
//! `.eml` file each, plus a manifest — the first pre-flight step before a sync is
//! switched on.
//!
//! Layout of the backup directory:
//! - `dingbridge-backup.json`: which mailbox, when, whether the last run completed, and
//!   which directory each folder went to ([`BackupState`]; `doctor` reads it);
//! - `manifest.jsonl`: one [`ManifestEntry`] per message (folder, UID, UIDVALIDITY,
//!   Message-ID, size, SHA-256, internal date, flags, file);
//! - `<folder>/<uidvalidity>-<uid>.eml`: the message exactly as the server stores it.
//!
//! It never changes the mailbox: folders are opened with `EXAMINE` (read-only) and
//! messages fetched with `BODY.PEEK[]`. A run that was interrupted resumes: what the
//! manifest lists (with its file present at the right size) is not fetched again. Each
//! file is written to a `.part` file and renamed before its manifest line is appended,
//! so the manifest never lists a file that is not complete.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    ImapError,
    imap::{ImapClient, ImapSettings, MailboxName, MessageMeta},
    message,
};

/// The state file's name.
pub const STATE_FILE: &str = "dingbridge-backup.json";
/// The manifest's name.
pub const MANIFEST_FILE: &str = "manifest.jsonl";
/// Version of the layout.
pub const FORMAT: u32 = 1;

/// Most messages fetched in one `UID FETCH`.
const BATCH_MESSAGES: usize = 50;
/// Most bytes asked for in one `UID FETCH` (a larger message goes alone).
const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// A backup failure.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Talking to the mailbox failed.
    #[error(transparent)]
    Imap(#[from] ImapError),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory cannot take this backup.
    #[error("{0}")]
    Refused(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `dingbridge-backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupState {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// The mailbox route backed up.
    pub route: String,
    /// IMAP server host.
    pub host: String,
    /// IMAP login.
    pub user: String,
    /// When the first run started (RFC 3339).
    pub started_at: String,
    /// When the last complete run ended (RFC 3339); `None` while none has.
    pub finished_at: Option<String>,
    /// Whether the last run went through every folder.
    pub complete: bool,
    /// Messages the manifest lists.
    pub messages: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Each folder seen, and where its files are.
    pub folders: Vec<FolderRecord>,
}

/// One folder of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRecord {
    /// Its name in UTF-8.
    pub name: String,
    /// Its name on the wire (modified UTF-7).
    pub wire: String,
    /// Its directory, relative to the backup directory, `/`-separated.
    pub dir: String,
    /// Its `UIDVALIDITY` at the last run.
    pub uid_validity: u32,
    /// Messages it held at the last run.
    pub messages: u64,
}

/// One line of `manifest.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Folder name in UTF-8.
    pub folder: String,
    /// Folder name on the wire.
    pub folder_wire: String,
    /// `UIDVALIDITY` of the folder when the message was saved.
    pub uid_validity: u32,
    /// The message's UID.
    pub uid: u32,
    /// Its `Message-ID` header, if it has one.
    pub message_id: Option<String>,
    /// Size of the file in bytes.
    pub size: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// `INTERNALDATE` (when the server received it), RFC 3339.
    pub internal_date: Option<String>,
    /// Its flags at the time of the backup (`\Seen`, `\Flagged`, keywords).
    pub flags: Vec<String>,
    /// The file, relative to the backup directory, `/`-separated.
    pub path: String,
}

type Key = (String, u32, u32);

impl ManifestEntry {
    fn key(&self) -> Key {
        (self.folder_wire.clone(), self.uid_validity, self.uid)
    }
}

/// What a run reports as it goes (for a progress bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The mailbox holds `messages` messages, `already` of them in the backup.
    Start {
        /// Messages in every folder.
        messages: u64,
        /// Of them, already saved by an earlier run.
        already: u64,
    },
    /// One message was saved.
    Saved {
        /// Its size.
        bytes: u64,
    },
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Folders backed up.
    pub folders: usize,
    /// Messages the mailbox held.
    pub messages: u64,
    /// Saved by this run.
    pub downloaded: u64,
    /// Bytes saved by this run.
    pub bytes: u64,
    /// Already saved by an earlier run.
    pub skipped: u64,
    /// Listed at the start but gone before they could be fetched.
    pub vanished: u64,
    /// `false` when the run stopped early ([`Options::stop_after`]).
    pub complete: bool,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stop (as if interrupted) after saving this many messages: for tests of resuming.
    pub stop_after: Option<u64>,
}

/// Backs up every folder of the mailbox `settings` reaches into `out`, resuming what an
/// earlier run there left.
pub async fn run(
    route: &str,
    settings: &ImapSettings,
    out: &Path,
    options: &Options,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, BackupError> {
    fs::create_dir_all(out).map_err(io_err(out))?;
    // One run per directory at a time; the lock goes with the process.
    let lock_path = out.join(".lock");
    let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
    if lock.try_lock().is_err() {
        return Err(BackupError::Refused(format!(
            "another backup is running into {}",
            out.display()
        )));
    }
    let mut state = match read_state(out)? {
        Some(s) if s.host != settings.host || s.user != settings.user => {
            return Err(BackupError::Refused(format!(
                "{} holds a backup of {} on {}, not of {} on {}: choose another directory",
                out.display(),
                s.user,
                s.host,
                settings.user,
                settings.host
            )));
        }
        Some(s) => s,
        None => BackupState {
            format: FORMAT,
            route: route.to_string(),
            host: settings.host.clone(),
            user: settings.user.clone(),
            started_at: now(),
            finished_at: None,
            complete: false,
            messages: 0,
            bytes: 0,
            folders: Vec::new(),
        },
    };
    let mut manifest = Manifest::open(out)?;
    state.complete = false;
    write_state(out, &state)?;

    let mut client = ImapClient::connect(settings).await?;
    let mut folders: Vec<_> = client
        .list_folders()
        .await?
        .into_iter()
        .filter(|f| f.selectable())
        .collect();
    folders.sort_by(|a, b| a.name.wire.cmp(&b.name.wire));

    // First pass: how much there is, for the progress bar.
    let mut plan = Vec::new();
    let (mut total, mut already) = (0u64, 0u64);
    for f in &folders {
        let opened = client.examine(&f.name).await?;
        let messages = match opened.exists {
            0 => Vec::new(),
            _ => client.fetch_meta_all().await?,
        };
        total += messages.len() as u64;
        already += messages
            .iter()
            .filter(|m| manifest.has(&(f.name.wire.clone(), opened.uid_validity, m.uid)))
            .count() as u64;
        plan.push((f.clone(), opened.uid_validity, messages));
    }
    progress(Progress::Start {
        messages: total,
        already,
    });

    let mut summary = Summary {
        folders: plan.len(),
        messages: total,
        skipped: already,
        complete: true,
        ..Summary::default()
    };
    'folders: for (folder, uid_validity, messages) in plan {
        let dir = folder_dir(&mut state, &folder.name, folder.delimiter.as_deref());
        let record = state
            .folders
            .iter_mut()
            .find(|r| r.wire == folder.name.wire)
            .ok_or_else(|| BackupError::Refused("folder record lost".into()))?;
        record.uid_validity = uid_validity;
        record.messages = messages.len() as u64;
        let abs_dir = out.join(&dir);
        fs::create_dir_all(&abs_dir).map_err(io_err(&abs_dir))?;
        remove_parts(&abs_dir)?;
        let todo: Vec<&MessageMeta> = messages
            .iter()
            .filter(|m| !manifest.has(&(folder.name.wire.clone(), uid_validity, m.uid)))
            .collect();
        if todo.is_empty() {
            continue;
        }
        let opened = client.examine(&folder.name).await?;
        if opened.uid_validity != uid_validity {
            return Err(BackupError::Refused(format!(
                "the UIDVALIDITY of {} changed during the backup; run it again",
                folder.name
            )));
        }
        for batch in batches(&todo) {
            let uids: Vec<u32> = batch.iter().map(|m| m.uid).collect();
            let hint: u64 = batch.iter().map(|m| m.size).sum();
            let fetched = client.fetch(&uids, hint).await?;
            summary.vanished += (uids.len() - fetched.len()) as u64;
            for m in fetched {
                let name = format!("{uid_validity}-{}.eml", m.meta.uid);
                let rel = format!("{dir}/{name}");
                let path = abs_dir.join(&name);
                write_atomically(&path, &m.raw)?;
                let entry = ManifestEntry {
                    folder: folder.name.display.clone(),
                    folder_wire: folder.name.wire.clone(),
                    uid_validity,
                    uid: m.meta.uid,
                    message_id: message::message_id(&m.raw),
                    size: m.raw.len() as u64,
                    sha256: hex::encode(Sha256::digest(&m.raw)),
                    internal_date: m.meta.internal_date.map(|d| d.to_rfc3339()),
                    // `\Recent` is a session flag, nothing to keep.
                    flags: m
                        .meta
                        .flags
                        .iter()
                        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                        .cloned()
                        .collect(),
                    path: rel,
                };
                manifest.append(&entry)?;
                summary.downloaded += 1;
                summary.bytes += entry.size;
                progress(Progress::Saved { bytes: entry.size });
                if options.stop_after == Some(summary.downloaded) {
                    summary.complete = false;
                    break 'folders;
                }
            }
        }
    }
    client.logout().await;
    manifest.sync()?;
    state.messages = manifest.entries.len() as u64;
    state.bytes = manifest.entries.values().map(|e| e.size).sum();
    if summary.complete {
        state.complete = true;
        state.finished_at = Some(now());
    }
    write_state(out, &state)?;
    Ok(summary)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Groups messages into fetches of at most [`BATCH_MESSAGES`] and [`BATCH_BYTES`].
fn batches<'a>(todo: &[&'a MessageMeta]) -> Vec<Vec<&'a MessageMeta>> {
    let mut out: Vec<Vec<&MessageMeta>> = Vec::new();
    let mut bytes = 0;
    for m in todo {
        let full = out.last().is_none_or(|b| {
            b.len() >= BATCH_MESSAGES || (bytes + m.size > BATCH_BYTES && !b.is_empty())
        });
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += m.size;
        if let Some(b) = out.last_mut() {
            b.push(m);
        }
    }
    out
}

/// The folder's directory: the one an earlier run chose, or a new one from its name
/// (hierarchy as sub-directories, characters a file name cannot hold replaced), never
/// one another folder already has.
fn folder_dir(state: &mut BackupState, name: &MailboxName, delimiter: Option<&str>) -> String {
    if let Some(r) = state.folders.iter().find(|r| r.wire == name.wire) {
        return r.dir.clone();
    }
    let parts: Vec<String> = match delimiter {
        Some(d) if !d.is_empty() => name.display.split(d).map(safe_component).collect(),
        _ => vec![safe_component(&name.display)],
    };
    let base = parts.join("/");
    let taken: HashSet<&str> = state.folders.iter().map(|r| r.dir.as_str()).collect();
    let mut dir = base.clone();
    let mut n = 2;
    while taken.contains(dir.as_str()) {
        dir = format!("{base}~{n}");
        n += 1;
    }
    state.folders.push(FolderRecord {
        name: name.display.clone(),
        wire: name.wire.clone(),
        dir: dir.clone(),
        uid_validity: 0,
        messages: 0,
    });
    dir
}

fn safe_component(part: &str) -> String {
    let cleaned: String = part
        .chars()
        .map(|c| match c {
            '/' | '\\' | '\0' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned.trim();
    match trimmed {
        "" | "." | ".." => format!("_{trimmed}"),
        // Leading dots would hide the directory (and `.part`/`.lock` are ours).
        t if t.starts_with('.') => format!("_{t}"),
        t => t.to_string(),
    }
}

/// Removes `.part` files an interrupted run left in `dir`.
fn remove_parts(dir: &Path) -> Result<(), BackupError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "part") && path.is_file() {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    fs::write(&part, bytes).map_err(io_err(&part))?;
    fs::rename(&part, path).map_err(io_err(path))
}

/// Reads the state file, if there is one.
pub fn read_state(dir: &Path) -> Result<Option<BackupState>, BackupError> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let state: BackupState = serde_json::from_str(&text)
        .map_err(|e| BackupError::Refused(format!("{}: {e}", path.display())))?;
    if state.format != FORMAT {
        return Err(BackupError::Refused(format!(
            "{}: layout version {} is not {FORMAT}",
            path.display(),
            state.format
        )));
    }
    Ok(Some(state))
}

fn write_state(dir: &Path, state: &BackupState) -> Result<(), BackupError> {
    let path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| BackupError::Refused(format!("cannot write the state: {e}")))?;
    write_atomically(&path, text.as_bytes())
}

/// Reads `manifest.jsonl`: every complete line, the last one per message winning; a
/// line cut off by an interruption is left out (`true` in the second place).
fn read_manifest(dir: &Path) -> Result<(BTreeMap<Key, ManifestEntry>, bool), BackupError> {
    let path = dir.join(MANIFEST_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((BTreeMap::new(), false)),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut entries = BTreeMap::new();
    let mut torn = false;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io_err(&path))?;
        if n == 0 {
            break;
        }
        match (
            line.ends_with('\n'),
            serde_json::from_str::<ManifestEntry>(line.trim_end()),
        ) {
            (true, Ok(e)) => {
                entries.insert(e.key(), e);
            }
            _ => torn = true,
        }
    }
    Ok((entries, torn))
}

/// The manifest of a run: what it holds, and the file new lines go to.
struct Manifest {
    path: PathBuf,
    entries: BTreeMap<Key, ManifestEntry>,
    file: File,
}

impl Manifest {
    /// Opens the manifest for appending, after dropping what cannot be trusted: a torn
    /// last line, and entries whose file is missing or has another size (those messages
    /// are fetched again).
    fn open(dir: &Path) -> Result<Manifest, BackupError> {
        let path = dir.join(MANIFEST_FILE);
        let (mut entries, torn) = read_manifest(dir)?;
        let before = entries.len();
        entries.retain(|_, e| {
            fs::metadata(dir.join(&e.path)).is_ok_and(|m| m.is_file() && m.len() == e.size)
        });
        if torn || entries.len() != before {
            let mut text = String::new();
            for e in entries.values() {
                text.push_str(&line_of(e)?);
            }
            write_atomically(&path, text.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Manifest {
            path,
            entries,
            file,
        })
    }

    fn has(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    fn append(&mut self, entry: &ManifestEntry) -> Result<(), BackupError> {
        // One write per line: an interruption leaves at most one torn line.
        self.file
            .write_all(line_of(entry)?.as_bytes())
            .map_err(io_err(&self.path))?;
        self.entries.insert(entry.key(), entry.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), BackupError> {
        self.file.sync_all().map_err(io_err(&self.path))
    }
}

fn line_of(e: &ManifestEntry) -> Result<String, BackupError> {
    let mut line = serde_json::to_string(e)
        .map_err(|e| BackupError::Refused(format!("cannot write the manifest: {e}")))?;
    line.push('\n');
    Ok(line)
}

/// What `--verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Messages the manifest lists.
    pub checked: u64,
    /// Their total size.
    pub bytes: u64,
    /// One sentence per problem, naming the file.
    pub problems: Vec<String>,
}

/// Re-reads every file the manifest lists and compares its size and SHA-256; a backup
/// whose last run did not complete is a problem too.
pub fn verify(dir: &Path) -> Result<Verification, BackupError> {
    let state = read_state(dir)?.ok_or_else(|| {
        BackupError::Refused(format!(
            "{} holds no backup ({STATE_FILE} missing)",
            dir.display()
        ))
    })?;
    let (entries, torn) = read_manifest(dir)?;
    let mut v = Verification::default();
    if !state.complete {
        v.problems.push(
            "the backup is incomplete (its last run was interrupted): run `dingbridge mail backup` again to finish it".into(),
        );
    }
    if torn {
        v.problems.push(format!(
            "{MANIFEST_FILE}: a line is cut off (an interrupted run)"
        ));
    }
    let mut seen_paths: HashMap<&str, &Key> = HashMap::new();
    for (key, e) in &entries {
        v.checked += 1;
        v.bytes += e.size;
        if let Some(other) = seen_paths.insert(e.path.as_str(), key) {
            v.problems.push(format!(
                "{}: listed for two messages ({other:?} and {key:?})",
                e.path
            ));
        }
        let path = dir.join(&e.path);
        match hash_file(&path) {
            Err(err) => v.problems.push(format!("{}: cannot read: {err}", e.path)),
            Ok((size, _)) if size != e.size => v.problems.push(format!(
                "{}: size {size} bytes, the manifest says {}",
                e.path, e.size
            )),
            Ok((_, sha)) if sha != e.sha256 => v.problems.push(format!(
                "{}: SHA-256 {sha} differs from the manifest's {}",
                e.path, e.sha256
            )),
            Ok(_) => {}
        }
    }
    Ok(v)
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, size: u64) -> MessageMeta {
        MessageMeta {
            uid,
            size,
            flags: Vec::new(),
            internal_date: None,
            modseq: None,
        }
    }

    #[test]
    fn batches_stay_under_their_count_and_byte_limits_and_a_large_message_goes_alone() {
        let small: Vec<MessageMeta> = (1..=120).map(|u| meta(u, 1_000)).collect();
        let refs: Vec<&MessageMeta> = small.iter().collect();
        let sizes: Vec<usize> = batches(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![50, 50, 20]);
        let mixed = [meta(1, 10), meta(2, 20 * 1024 * 1024), meta(3, 10)];
        let refs: Vec<&MessageMeta> = mixed.iter().collect();
        let uids: Vec<Vec<u32>> = batches(&refs)
            .iter()
            .map(|b| b.iter().map(|m| m.uid).collect())
            .collect();
        assert_eq!(uids, vec![vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn folder_directories_are_safe_stable_and_never_shared() {
        let mut state = BackupState {
            format: FORMAT,
            route: "r".into(),
            host: "h".into(),
            user: "u".into(),
            started_at: now(),
            finished_at: None,
            complete: false,
            messages: 0,
            bytes: 0,
            folders: Vec::new(),
        };
        let dir = |state: &mut BackupState, wire: &str, delim: Option<&str>| {
            folder_dir(state, &MailboxName::from_wire(wire), delim)
        };
        assert_eq!(dir(&mut state, "INBOX", Some(".")), "INBOX");
        assert_eq!(dir(&mut state, "Archive.2024", Some(".")), "Archive/2024");
        assert_eq!(dir(&mut state, "&XfJT0ZAB-", Some("/")), "已发送");
        assert_eq!(dir(&mut state, "../etc", None), "_.._etc");
        assert_eq!(dir(&mut state, "a/b", Some(".")), "a_b");
        assert_eq!(dir(&mut state, "a\\b", Some(".")), "a_b~2");
        assert_eq!(dir(&mut state, ".hidden", Some("/")), "_.hidden");
        // The same folder keeps its directory on the next run.
        assert_eq!(dir(&mut state, "a\\b", Some(".")), "a_b~2");
    }
}
