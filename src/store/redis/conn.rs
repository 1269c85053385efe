//! One connection type for a single Redis and a Redis Cluster, so that the store's logic
//! is written once: [`Conn`] implements redis' `aio::ConnectionLike`, and every command,
//! script and pipeline of the store runs on either.

use std::time::Duration;

use ::redis::{
    Cmd, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};
use futures::FutureExt;

use super::keys::Layout;

/// How long a connection attempt may take before Redis counts as down.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts after the first that the cluster client makes for one command (following a
/// `MOVED` after a resharding, say); every command stays within its response timeout.
const CLUSTER_RETRIES: u32 = 2;

/// Where the store's data lives.
pub(super) enum Target {
    /// One Redis server (or a managed Redis with one endpoint).
    Single(::redis::Client),
    /// Seed nodes of a Redis Cluster; the client learns the others from them.
    Cluster(Vec<ConnectionInfo>),
}

impl Target {
    /// A single Redis at `url`.
    pub(super) fn single(url: &str) -> RedisResult<Target> {
        ::redis::Client::open(url).map(Target::Single)
    }

    /// A Redis Cluster reached through any of `nodes`.
    pub(super) fn cluster(nodes: &[String]) -> RedisResult<Target> {
        if nodes.is_empty() {
            return Err((ErrorKind::InvalidClientConfig, "no cluster node given").into());
        }
        let nodes = nodes
            .iter()
            .map(|n| n.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        // Checks now what the builder would refuse later (nodes with other credentials).
        ClusterClientBuilder::new(nodes.clone()).build()?;
        Ok(Target::Cluster(nodes))
    }

    /// How key names are laid out on this target.
    pub(super) fn layout(&self) -> Layout {
        match self {
            Target::Single(_) => Layout::Plain,
            Target::Cluster(_) => Layout::Tagged,
        }
    }

    /// Opens a connection whose commands wait at most `response_timeout` for an answer.
    pub(super) async fn connect(&self, response_timeout: Duration) -> RedisResult<Conn> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(response_timeout)
                    // One attempt per reconnect: commands wait on it, and the link's own
                    // probe keeps trying while Redis is down.
                    .set_number_of_retries(0);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Conn::Single)
            }
            Target::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()?;
                // Learning the topology takes a round trip to a seed node, then one
                // connection per master.
                let conn = within(2 * CONNECT_TIMEOUT, client.get_async_connection()).await?;
                Ok(Conn::Cluster {
                    conn,
                    timeout: response_timeout,
                })
            }
        }
    }
}

/// A connection to a single Redis or to a cluster; cheap to clone (clones share it).
// Unboxed: a few live at a time and one is cloned per command, which a box would turn
// into an allocation per command.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Conn {
    /// Reconnects by itself; bounds every command by its response timeout.
    Single(ConnectionManager),
    /// Routes each command to the master of its key's slot and follows redirections;
    /// `timeout` bounds a command with its retries.
    Cluster {
        conn: ClusterConnection,
        timeout: Duration,
    },
}

/// Runs `fut`, failing with a timeout error after `limit`.
async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer in time",
        ))),
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster { conn, timeout } => {
                let limit = *timeout;
                within(limit, conn.req_packed_command(cmd)).boxed()
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster { conn, timeout } => {
                let limit = *timeout;
                within(limit, conn.req_packed_commands(pipeline, offset, count)).boxed()
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster { conn, .. } => conn.get_db(),
        }
    }
}

impl Conn {
    /// Every key matching `pattern`, unsorted. A cluster is scanned master by master
    /// (a `SCAN` cursor belongs to one node).
    pub(crate) async fn scan(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        match self {
            Conn::Single(_) => self.scan_node(None, pattern, &mut keys).await?,
            Conn::Cluster { .. } => {
                for slot in self.master_slots().await? {
                    self.scan_node(Some(slot), pattern, &mut keys).await?;
                }
            }
        }
        Ok(keys)
    }

    /// Runs `SCAN` to its end on this server, or on the master that serves `slot`.
    async fn scan_node(
        &mut self,
        slot: Option<u16>,
        pattern: &str,
        keys: &mut Vec<String>,
    ) -> RedisResult<()> {
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = ::redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, batch): (u64, Vec<String>) = match (&mut *self, slot) {
                (Conn::Cluster { conn, timeout }, Some(slot)) => {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        Route::new(slot, SlotAddr::Master),
                    ));
                    let value = within(*timeout, conn.route_command(&cmd, route)).await?;
                    FromRedisValue::from_owned_redis_value(value)?
                }
                (c, _) => cmd.query_async(c).await?,
            };
            keys.extend(batch);
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// One slot of each master, from `CLUSTER SLOTS`: routing a command by it reaches
    /// that master.
    async fn master_slots(&mut self) -> RedisResult<Vec<u16>> {
        let ranges: Vec<Value> = ::redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(self)
            .await?;
        let mut seen = std::collections::HashSet::new();
        let mut slots = Vec::new();
        for range in ranges {
            // [start, end, [host, port, id…] of the master, replicas…]
            let Value::Array(parts) = range else { continue };
            let (Some(Value::Int(start)), Some(Value::Array(master))) =
                (parts.first(), parts.get(2))
            else {
                continue;
            };
            // The node id where the server gives one (Redis 4 and later), else host:port.
            let node = match (master.get(2), master.first(), master.get(1)) {
                (Some(Value::BulkString(id)), _, _) => id.clone(),
                (_, Some(Value::BulkString(host)), Some(Value::Int(port))) => {
                    [host.as_slice(), b":", port.to_string().as_bytes()].concat()
                }
                _ => continue,
            };
            if seen.insert(node) {
                slots.push(*start as u16);
            }
        }
        if slots.is_empty() {
            return Err((ErrorKind::ClusterDown, "the cluster serves no slots").into());
        }
        Ok(slots)
    }
}
