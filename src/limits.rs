//! Open files and the connection cap that fits in them: every client connection holds a
//! file descriptor, and a process out of descriptors can no longer reach Redis, Graph or
//! DingTalk, nor accept `/healthz`.

/// Descriptors kept for everything that is not a client connection (store, upstream
/// calls, the runtime's own), when the limit leaves room for them.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Soft limit asked for when the hard limit is unlimited (Linux refuses an unlimited soft
/// limit for open files; this is its default `fs.nr_open`).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// What raising the open-file limit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raise {
    /// The soft limit went from `from` to `to`.
    Raised {
        /// Soft limit before.
        from: u64,
        /// Soft limit after.
        to: u64,
    },
    /// The soft limit already was the hard limit.
    AtHardLimit(u64),
    /// The limit cannot be read or changed here; the soft limit stays as it was.
    Unchanged(Option<u64>, String),
}

/// Raises the soft `NOFILE` limit to the hard limit, where allowed.
pub fn raise_open_files() -> Raise {
    use rlimit::Resource;
    let (soft, hard) = match Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => return Raise::Unchanged(None, e.to_string()),
    };
    let target = if hard == rlimit::INFINITY {
        UNLIMITED_TARGET.max(soft)
    } else {
        hard
    };
    if soft >= target {
        return Raise::AtHardLimit(soft);
    }
    match Resource::NOFILE.set(target, hard) {
        Ok(()) => Raise::Raised {
            from: soft,
            to: target,
        },
        Err(e) => Raise::Unchanged(Some(soft), e.to_string()),
    }
}

/// Raises the open-file limit and says so in the log.
pub fn raise_open_files_and_log() {
    match raise_open_files() {
        Raise::Raised { from, to } => {
            tracing::info!(from, to, "open-file limit raised from {from} to {to}")
        }
        Raise::AtHardLimit(limit) => {
            tracing::info!(limit, "open-file limit {limit} (already the hard limit)")
        }
        Raise::Unchanged(limit, why) => {
            tracing::warn!(limit, error = %why, "open-file limit not raised")
        }
    }
}

/// The current soft open-file limit, if the platform has one.
pub fn open_files_soft_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// Client connections to serve at once: the configured number, lowered so that the
/// connections never take the descriptors the rest of the process needs (at most the
/// limit less [`RESERVED_DESCRIPTORS`], and at most half of a small limit).
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return configured;
    };
    let room = limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(limit / 2)
        .max(1);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_descriptors_for_the_rest_of_the_process() {
        assert_eq!(connection_cap(4096, Some(1_048_576)), 4096);
        assert_eq!(connection_cap(4096, Some(1024)), 768);
        assert_eq!(connection_cap(4096, Some(256)), 128);
        assert_eq!(connection_cap(100, Some(1024)), 100);
        assert_eq!(connection_cap(4096, None), 4096);
        assert_eq!(connection_cap(4096, Some(1)), 1);
    }
}
