//! Backup and restore of the Redis store: every key under the prefix (id pairs,
//! subscriptions, delta links, hooks, API key hashes, the queue with its consumer group,
//! dead letters, the audit trail, counters…) except leases, as JSON lines that hold each
//! key's Redis `DUMP` and its absolute expiry. Restoring a backup after rolling the
//! binary back is the rollback path; restoring into another Redis moves a deployment.
//!
//! Format (version 1): a header line, one line per key, a trailer with the key count. A
//! file without its trailer (a cut-off copy) is refused before anything is written. Keys
//! are stored without the prefix and by their logical names (see [`super::redis::keys`]),
//! so a backup can be restored under another prefix, and from a single Redis into a Redis
//! Cluster or back.

use std::collections::HashSet;

use ::redis::AsyncCommands;
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use super::{
    StoreError, StoreResult, now_ms,
    redis::{RedisStore, glob_escape},
};

/// `format` of the header line.
pub const FORMAT: &str = "dingbridge-backup";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;

/// Keys never backed up: leases belong to running instances.
fn excluded(relative: &str) -> bool {
    relative.starts_with("lease:")
}

/// First line of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version.
    pub version: u32,
    /// The prefix the keys were read under.
    pub prefix: String,
    /// When the backup was taken (RFC 3339).
    pub created_at: String,
    /// The dingbridge version that wrote it.
    pub written_by: String,
}

/// One key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Key without the prefix.
    pub key: String,
    /// Absolute expiry (Unix ms), or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// base64 of Redis' `DUMP` of the key.
    pub dump: String,
}

/// Last line of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trailer {
    /// Always `true`.
    pub end: bool,
    /// How many [`Entry`] lines precede it.
    pub keys: usize,
}

/// A parsed, complete backup.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    /// Its header.
    pub header: Header,
    /// Its keys.
    pub entries: Vec<Entry>,
}

/// Parses a backup and checks that it is whole (header, every line, trailer count).
pub fn parse(text: &str) -> Result<Backup, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Header = lines.next().ok_or("the file is empty").and_then(|l| {
        serde_json::from_str(l).map_err(|_| "the first line is not a backup header")
    })?;
    if header.format != FORMAT {
        return Err(format!("not a {FORMAT} file (format {:?})", header.format));
    }
    if header.version != VERSION {
        return Err(format!(
            "backup format version {} cannot be read by this build (reads version {VERSION})",
            header.version
        ));
    }
    let mut entries = Vec::new();
    let mut trailer = None;
    for (n, line) in lines.enumerate() {
        if trailer.is_some() {
            return Err("lines after the trailer".into());
        }
        if let Ok(t) = serde_json::from_str::<Trailer>(line) {
            trailer = Some(t);
            continue;
        }
        let entry: Entry = serde_json::from_str(line)
            .map_err(|e| format!("line {} is not a backup entry: {e}", n + 2))?;
        entries.push(entry);
    }
    match trailer {
        None => Err("the backup has no trailer: it was cut off; nothing restored".into()),
        Some(t) if !t.end || t.keys != entries.len() => Err(format!(
            "the trailer counts {} keys but the file holds {}: nothing restored",
            t.keys,
            entries.len()
        )),
        Some(_) => Ok(Backup { header, entries }),
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Keys written.
    pub keys: usize,
}

/// How a restore treats keys already in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreMode {
    /// Overwrite keys that exist (otherwise they are kept and counted).
    pub replace: bool,
    /// Also delete keys under the prefix that the backup does not hold (a full rollback).
    pub exact: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreSummary {
    /// Keys written.
    pub restored: usize,
    /// Keys left as they were because they exist (without `replace`).
    pub kept: usize,
    /// Keys skipped because they expired since the backup.
    pub expired: usize,
    /// Keys deleted because the backup does not hold them (`exact`).
    pub deleted: usize,
}

fn unavailable(e: ::redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Every Redis key under the prefix (on every master of a cluster), sorted.
    async fn keys_under_prefix(&self) -> StoreResult<Vec<String>> {
        let mut c = self.connection().await?;
        let pattern = format!("{}*", glob_escape(self.prefix()));
        let mut keys = c.scan(&pattern).await.map_err(unavailable)?;
        keys.sort();
        Ok(keys)
    }

    /// The logical name (without the prefix) of a Redis key under the prefix.
    fn relative<'a>(&self, full: &'a str) -> &'a str {
        self.layout().logical(&full[self.prefix().len()..])
    }

    /// The Redis key of a logical name from a backup.
    fn full(&self, relative: &str) -> String {
        format!("{}{}", self.prefix(), self.layout().physical(relative))
    }

    /// Writes a backup of every key under the prefix (leases excepted) to `out`. Keys
    /// are read one by one while the service may run: each key is consistent, the set is
    /// as of the moment each was read (stop the instances for a point-in-time copy).
    pub async fn export(&self, out: &mut dyn std::io::Write) -> anyhow::Result<ExportSummary> {
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            prefix: self.prefix().to_string(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            written_by: crate::USER_AGENT.into(),
        };
        writeln!(out, "{}", serde_json::to_string(&header)?)?;
        let mut c = self.connection().await?;
        let mut keys = 0usize;
        for full in self.keys_under_prefix().await? {
            let relative = self.relative(&full);
            if excluded(relative) {
                continue;
            }
            let dump: Option<Vec<u8>> = ::redis::cmd("DUMP")
                .arg(&full)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            let pttl: i64 = c.pttl(&full).await.map_err(unavailable)?;
            // Gone (expired or deleted) since the scan saw it.
            let (Some(dump), false) = (dump, pttl == -2) else {
                continue;
            };
            let entry = Entry {
                key: relative.to_string(),
                expires_at_ms: (pttl >= 0).then(|| now_ms() + pttl),
                dump: STANDARD.encode(dump),
            };
            writeln!(out, "{}", serde_json::to_string(&entry)?)?;
            keys += 1;
        }
        writeln!(
            out,
            "{}",
            serde_json::to_string(&Trailer { end: true, keys })?
        )?;
        out.flush()?;
        Ok(ExportSummary { keys })
    }

    /// Restores `backup` under this store's prefix.
    pub async fn restore(
        &self,
        backup: &Backup,
        mode: RestoreMode,
    ) -> anyhow::Result<RestoreSummary> {
        let mut c = self.connection().await?;
        let mut summary = RestoreSummary::default();
        let now = now_ms();
        for e in &backup.entries {
            let full = self.full(&e.key);
            let ttl = match e.expires_at_ms {
                Some(at) if at <= now => {
                    summary.expired += 1;
                    continue;
                }
                Some(at) => at,
                None => 0,
            };
            let dump = STANDARD
                .decode(&e.dump)
                .map_err(|err| anyhow::anyhow!("key {}: bad dump: {err}", e.key))?;
            let mut cmd = ::redis::cmd("RESTORE");
            cmd.arg(&full).arg(ttl).arg(dump);
            if mode.replace {
                cmd.arg("REPLACE");
            }
            if ttl > 0 {
                cmd.arg("ABSTTL");
            }
            match cmd.query_async::<()>(&mut c).await {
                Ok(()) => summary.restored += 1,
                Err(err) if err.code() == Some("BUSYKEY") => summary.kept += 1,
                Err(err) => return Err(anyhow::anyhow!("restoring {}: {err}", e.key)),
            }
        }
        if mode.exact {
            let wanted: HashSet<String> =
                backup.entries.iter().map(|e| self.full(&e.key)).collect();
            for full in self.keys_under_prefix().await? {
                if !wanted.contains(&full) && !excluded(self.relative(&full)) {
                    let _: i64 = c.del(&full).await.map_err(unavailable)?;
                    summary.deleted += 1;
                }
            }
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(entries: usize, trailer: Option<usize>) -> String {
        let mut t = serde_json::to_string(&Header {
            format: FORMAT.into(),
            version: VERSION,
            prefix: "dingbridge:".into(),
            created_at: "2026-11-25T00:00:00Z".into(),
            written_by: "test".into(),
        })
        .expect("json");
        for i in 0..entries {
            t.push('\n');
            t.push_str(
                &serde_json::to_string(&Entry {
                    key: format!("kv:k{i}"),
                    expires_at_ms: None,
                    dump: "AAAA".into(),
                })
                .expect("json"),
            );
        }
        if let Some(n) = trailer {
            t.push_str(&format!("\n{{\"end\":true,\"keys\":{n}}}\n"));
        }
        t
    }

    #[test]
    fn a_whole_backup_parses() {
        let b = parse(&text(2, Some(2))).expect("whole");
        assert_eq!(b.entries.len(), 2);
        assert_eq!(b.header.prefix, "dingbridge:");
    }

    #[test]
    fn cut_off_or_foreign_files_are_refused() {
        assert!(parse(&text(2, None)).unwrap_err().contains("cut off"));
        assert!(parse(&text(2, Some(3))).unwrap_err().contains("counts 3"));
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("{\"format\":\"other\",\"version\":1,\"prefix\":\"\",\"created_at\":\"\",\"written_by\":\"\"}\n{\"end\":true,\"keys\":0}").unwrap_err().contains("not a dingbridge-backup"));
        let newer = text(0, Some(0)).replacen("\"version\":1", "\"version\":9", 1);
        assert!(parse(&newer).unwrap_err().contains("version 9"));
    }

    #[test]
    fn leases_are_never_backed_up() {
        assert!(excluded("lease:graph-subscriptions"));
        assert!(!excluded("kv:graph:sub:1"));
    }
}
