//! Key names. The store speaks in *logical* names (`queue`, `queue:dead`,
//! `seen:{source}:{id}`, `map:{ns}:l:{id}`, `feed:{name}:items`, `kv:{key}`…, under the
//! prefix), which are also the Redis keys on a single Redis. On a Redis Cluster the keys
//! that one script or transaction touches together carry a hash tag naming their unit, so
//! that they hash to one slot:
//!
//! | unit | logical names | cluster key (after the prefix) |
//! |---|---|---|
//! | the queue and its intake dedupe marks | `queue`, `queue:delayed`, `queue:dead`, `seen:…` | `{queue}` + logical |
//! | an id-pair namespace | `map:{ns}:l:…`, `map:{ns}:r:…` | `{map:{ns}}` + logical |
//! | a feed | `feed:{name}:items`, `:order`, `:seq` | `{feed:{name}}` + logical |
//!
//! Every other key (idempotency records, leases, kv, sets, counters, the audit stream) is
//! used alone and keeps its logical name, spreading over the cluster by its full name.
//!
//! A single Redis keeps today's names rather than migrating them: during a rolling upgrade
//! the previous version keeps writing the old names (queueing jobs, marking events), and a
//! one-time rename at start-up would strand whatever it wrote afterwards. The previous
//! version could not run on a cluster, so a cluster holds no old layout; data moves from a
//! single Redis to a cluster with `dingbridge export` / `import`, whose files hold logical
//! names and are translated on the way in.

use std::borrow::Cow;

/// How logical names become Redis keys (after the prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A single Redis: keys are the logical names.
    Plain,
    /// A Redis Cluster: keys of one unit share a hash tag.
    Tagged,
}

/// The unit (hash-slot group) a logical key belongs to, when it has one.
///
/// Computed from the key alone, so the store and a restore agree on it. For id pairs the
/// unit ends before the first `:l:` or `:r:`; that point is the same in both keys of a
/// pair whatever the namespace holds, so a pair always shares a slot.
fn unit(logical: &str) -> Option<&str> {
    if logical == "queue" || logical.starts_with("queue:") || logical.starts_with("seen:") {
        return Some("queue");
    }
    if let Some(rest) = logical.strip_prefix("map:") {
        let end = [rest.find(":l:"), rest.find(":r:")]
            .into_iter()
            .flatten()
            .min()?;
        return Some(&logical[..4 + end]);
    }
    if logical.starts_with("feed:") {
        return logical.rsplit_once(':').map(|(unit, _)| unit);
    }
    None
}

impl Layout {
    /// The Redis key (without the prefix) of a logical name.
    pub fn physical(self, logical: &str) -> Cow<'_, str> {
        match (self, unit(logical)) {
            (Layout::Tagged, Some(unit)) => {
                // Braces inside the tag would end it early (or make it empty, which
                // hashes the whole key); the tag only has to be equal within a unit.
                let tag: String = unit.chars().filter(|c| !matches!(c, '{' | '}')).collect();
                Cow::Owned(format!("{{{tag}}}{logical}"))
            }
            _ => Cow::Borrowed(logical),
        }
    }

    /// The logical name of a Redis key (without the prefix).
    pub fn logical(self, physical: &str) -> &str {
        match self {
            Layout::Plain => physical,
            // Logical names never start with `{`, so a leading `{…}` is a tag.
            Layout::Tagged => physical
                .strip_prefix('{')
                .and_then(|rest| rest.split_once('}'))
                .map_or(physical, |(_, logical)| logical),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's key slot, as the redis client routes it.
    fn slot(key: &str) -> u16 {
        ::redis::cluster_routing::get_slot(key.as_bytes())
    }

    fn key(logical: &str) -> String {
        format!("dingbridge:{}", Layout::Tagged.physical(logical))
    }

    #[test]
    fn a_single_redis_keeps_todays_names() {
        for k in [
            "queue",
            "queue:dead",
            "seen:dingtalk:e1",
            "map:ns:l:1",
            "kv:x",
        ] {
            assert_eq!(Layout::Plain.physical(k), k);
            assert_eq!(Layout::Plain.logical(k), k);
        }
    }

    #[test]
    fn the_queue_its_retries_dead_letters_and_dedupe_marks_share_a_slot() {
        let s = slot(&key("queue"));
        for k in [
            "queue:delayed",
            "queue:dead",
            "seen:dingtalk:evt-1",
            "seen:x:{y}",
        ] {
            assert_eq!(slot(&key(k)), s, "{k}");
        }
        assert_eq!(key("queue:dead"), "dingbridge:{queue}queue:dead");
    }

    #[test]
    fn both_keys_of_an_id_pair_share_a_slot_whatever_the_namespace_holds() {
        for ns in [
            "relay:message:sales",
            "a:l:b",
            "x:r",
            "braces}{in:l:it",
            "{}",
            "n:",
        ] {
            for (l, r) in [("1", "2"), ("a:r:b", "c:l:d"), ("}", "{")] {
                let left = format!("map:{ns}:l:{l}");
                let right = format!("map:{ns}:r:{r}");
                assert_eq!(slot(&key(&left)), slot(&key(&right)), "{left} / {right}");
                // The delete script builds the other key from this prefix and the value.
                let other = format!(
                    "dingbridge:{}{r}",
                    Layout::Tagged.physical(&format!("map:{ns}:r:"))
                );
                assert_eq!(other, key(&right));
            }
        }
    }

    #[test]
    fn a_feeds_keys_share_a_slot() {
        let s = slot(&key("feed:trigger:outlook.mail.received:items"));
        for part in ["order", "seq"] {
            assert_eq!(
                slot(&key(&format!("feed:trigger:outlook.mail.received:{part}"))),
                s
            );
        }
    }

    #[test]
    fn lone_keys_keep_their_names_and_spread() {
        for k in [
            "kv:hook:1",
            "idem:abc",
            "lease:graph-subscriptions",
            "set:hooks",
            "ctr:x",
            "audit",
        ] {
            assert_eq!(Layout::Tagged.physical(k), k);
        }
        assert_ne!(slot(&key("kv:a")), slot(&key("kv:b")));
    }

    #[test]
    fn logical_names_come_back_from_cluster_keys() {
        for k in [
            "queue",
            "queue:delayed",
            "seen:dingtalk:{weird}",
            "map:a}b:l:x",
            "map:{}:r:}",
            "feed:f:{x}:seq",
            "kv:{not-a-tag}",
            "audit",
        ] {
            let physical = Layout::Tagged.physical(k);
            assert_eq!(Layout::Tagged.logical(&physical), k, "{physical}");
        }
    }
}
