//! The connection to Redis — one server or a Redis Cluster — and the key
//! layout each one gets.
//!
//! On a cluster every request must stay in one hash slot (the async cluster
//! client refuses a pipeline that spans two), so the store sends each
//! partition its own request; on one server the same requests share the
//! multiplexed connection, written together.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::cluster::Cluster;
use super::rows::redis_error;
use crate::StoreError;

/// Redis answers in microseconds; 2 s means it is in trouble. (The client's
/// own default of 500 ms trips on a busy two-core machine.)
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the cluster client retries a request that met a moved slot,
/// a failover in progress or a lost node, backing off up to
/// [`CLUSTER_MAX_RETRY_WAIT_MS`] between tries — long enough together to
/// ride out a replica's promotion (the cluster's node timeout plus an
/// election) before the error reaches the caller.
const CLUSTER_RETRIES: u32 = 6;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 1_000;

/// Partitions on one server: the layout webhookd has always had.
pub(super) const SERVER_PARTITIONS: u32 = 16;
/// Partitions on a cluster. Their hash tags are chosen so their slots are
/// evenly spaced over the 16,384 (see [`cluster_tag`]): a cluster whose
/// slots are split evenly over M primaries gives each ⌊48/M⌋ or ⌈48/M⌉
/// partitions — 16 each on 3, 12 on 4, 8 on 6, 3 on 16 — and up to 48
/// primaries all take a share. More would cost every claim's probe one
/// command per partition for no gain on the clusters webhookd is sized for
/// (docs/operations.md).
pub(super) const CLUSTER_PARTITIONS: u32 = 48;
const SLOTS: u32 = 16_384;

/// A Redis connection of either kind; cheap to clone.
#[derive(Clone)]
pub(super) enum Connection {
    Server(ConnectionManager),
    /// Replaced when it stops recovering by itself (see `cluster.rs`).
    Cluster(Arc<Cluster>),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(cluster) => Box::pin(cluster.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(cluster) => Box::pin(cluster.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(connection) => connection.get_db(),
            Connection::Cluster(cluster) => cluster.connection().get_db(),
        }
    }
}

impl Connection {
    /// Runs `commands` — each within one slot — and answers each in their
    /// order: as one pipeline on one server (one write, one round trip; it
    /// answers or fails as a whole), and on a cluster as one request each,
    /// sent together (a cluster pipeline must stay in one slot), each
    /// answering for itself — one primary failing over fails only its own.
    pub(super) async fn each<T: redis::FromRedisValue>(
        &self,
        commands: Vec<Cmd>,
    ) -> Vec<redis::RedisResult<T>> {
        match self {
            Connection::Server(connection) => {
                let count = commands.len();
                let mut pipeline = redis::pipe();
                for command in commands {
                    pipeline.add_command(command);
                }
                let answers: redis::RedisResult<Vec<T>> =
                    pipeline.query_async(&mut connection.clone()).await;
                match answers {
                    Ok(answers) => answers.into_iter().map(Ok).collect(),
                    Err(error) => (0..count).map(|_| Err(error.clone())).collect(),
                }
            }
            Connection::Cluster(cluster) => {
                futures_util::future::join_all(commands.into_iter().map(|command| {
                    let mut connection = Connection::Cluster(Arc::clone(cluster));
                    async move { command.query_async(&mut connection).await }
                }))
                .await
            }
        }
    }
}

/// Where a store URL points: the connection, the clients the change
/// subscription may use (any node hears a cluster's `PUBLISH`), and the
/// hash tags of the partitions.
pub(super) struct Connected {
    pub connection: Connection,
    pub subscribers: Vec<redis::Client>,
    pub partition_tags: Vec<String>,
}

/// Connects to `redis://…` (one server) or `redis+cluster://host:port,…`
/// (a cluster, reached through any of the listed nodes).
pub(super) async fn connect(url: &str) -> Result<Connected, StoreError> {
    let invalid = |e: redis::RedisError| StoreError::Failed(Box::new(e));
    if let Some(nodes) = cluster_nodes(url) {
        let subscribers = nodes
            .iter()
            .map(|node| redis::Client::open(node.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(CONNECTION_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(CLUSTER_RETRIES)
            .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
            .build()
            .map_err(invalid)?;
        let connection = client.get_async_connection().await.map_err(redis_error)?;
        return Ok(Connected {
            connection: Connection::Cluster(Arc::new(Cluster::new(client, connection))),
            subscribers,
            partition_tags: (0..CLUSTER_PARTITIONS)
                .map(|partition| cluster_tag(partition, CLUSTER_PARTITIONS))
                .collect(),
        });
    }
    let client = redis::Client::open(url).map_err(invalid)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let connection = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(redis_error)?;
    Ok(Connected {
        connection: Connection::Server(connection),
        subscribers: vec![client],
        partition_tags: (0..SERVER_PARTITIONS).map(|n| format!("p:{n}")).collect(),
    })
}

/// The node URLs of `redis+cluster://[user:password@]host:port,host:port…`
/// (`rediss+cluster://` for TLS), each carrying the credentials; `None`
/// for any other URL.
pub(super) fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.strip_suffix("+cluster")?;
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    Some(
        hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| format!("{scheme}://{credentials}{host}"))
            .collect(),
    )
}

/// The hash tag of cluster partition `n` of `partitions`: `c:<n>:<k>` for
/// the smallest `k` whose slot falls in the middle of the partition's
/// equal share of the slot space, so the partitions spread evenly over any
/// evenly split cluster. Derived, not random: every process computes the
/// same tags, and they are part of the key layout (a test pins them).
pub(super) fn cluster_tag(n: u32, partitions: u32) -> String {
    let share = SLOTS / partitions;
    let (low, high) = (n * share + share / 4, n * share + share * 3 / 4);
    // CRC16 spreads uniformly: a window of ~1/100 of the slots is hit
    // within a few hundred tries; 10^6 is never reached.
    (0_u32..1_000_000)
        .map(|k| format!("c:{n}:{k}"))
        .find(|tag| (low..high).contains(&key_slot(tag)))
        .unwrap_or_else(|| unreachable!("some k lands in every window of the slot space"))
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag, or of the
/// whole key when it has none, modulo 16,384 — as Redis computes it.
pub(super) fn key_slot(key: &str) -> u32 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let tail = &bytes[open + 1..];
            let close = tail.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &tail[..close])
        })
        .unwrap_or(bytes);
    let crc = hashed.iter().fold(0_u16, |mut crc, &byte| {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
        crc
    });
    u32::from(crc) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_computed_as_redis_computes_them() {
        // Read off a real cluster with CLUSTER KEYSLOT.
        assert_eq!(key_slot("x{p:0}y"), 1029);
        assert_eq!(key_slot("x{p:15}y"), 4163);
        assert_eq!(key_slot("x{keys}"), 2915);
        assert_eq!(key_slot("foo"), 12182);
        // An empty tag hashes the whole key.
        assert_eq!(key_slot("{}foo"), key_slot("{}foo"));
        assert_ne!(key_slot("{}foo"), key_slot("foo"));
    }

    #[test]
    fn cluster_partitions_spread_evenly_and_never_change() {
        let tags: Vec<String> = (0..CLUSTER_PARTITIONS)
            .map(|n| cluster_tag(n, CLUSTER_PARTITIONS))
            .collect();
        // Pinned: changing a tag strands the data stored under it.
        assert_eq!(&tags[..3], ["c:0:22", "c:1:102", "c:2:144"]);
        for primaries in [3_u32, 4, 5, 6, 8, 16] {
            let per = SLOTS.div_ceil(primaries);
            let mut counts = vec![0_u32; primaries as usize];
            for tag in &tags {
                counts[(key_slot(tag) / per) as usize] += 1;
            }
            let (least, most) = (counts.iter().min(), counts.iter().max());
            assert!(
                most.zip(least)
                    .is_some_and(|(most, least)| most - least <= 1),
                "{primaries} primaries get {counts:?}"
            );
        }
    }

    #[test]
    fn cluster_urls_name_every_node_with_its_credentials() {
        assert_eq!(
            cluster_nodes("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000/"),
            Some(vec![
                "redis://:pw@10.0.0.1:7000".to_owned(),
                "redis://:pw@10.0.0.2:7000".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://h:1"),
            Some(vec!["rediss://h:1".to_owned()])
        );
        assert_eq!(cluster_nodes("redis://h:1/0"), None);
    }
}
